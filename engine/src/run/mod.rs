//! One run of a validated pipeline: components resolved, sources stored,
//! steps scheduled through the cache and the sandbox, events recorded,
//! summary written.
//!
//! Invariant: every step of a started run ends with exactly one report
//! (succeeded, cached, failed or skipped), and the summary and record are
//! durable before [`execute`] returns.
//! Boundary: the only module that ties store, cache, sandbox, scheduler
//! and record together; prints nothing (progress goes to an [`Observer`]).

mod components;
mod condition;
mod options;
mod provenance;
mod runner;
mod summary;

pub use crate::report::{
    BadRunId, Event, Observer, PROVENANCE_FILE, Quiet, RunId, RunStatus, RunSummary, SEAL_FILE,
    StepReport, StepStatus, SweepRow,
};
pub use condition::CONDITION_OUTPUT_BYTES_MAX;
pub use options::{CANCELLED_REASON, HeldStepSlot, Options, StepSlots};
pub use summary::{LoadError, list_runs, load_summary};

use components::{Resolved, resolve_components};
use condition::ConditionScope;
pub(crate) use provenance::seal_run;
use runner::Runner;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde_json::json;

use crate::artifact::OutputRef;
use crate::cache::Cache;
use crate::digest::Digest;
use crate::record::{self, Record};
use crate::sandbox::{self};
use crate::scheduler::{self, Verdict};
use crate::spec::Pipeline;
use crate::store::{Store, StoreError};

/// Failures before any step ran.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The home directory is unusable.
    #[error("home {home}: {source}")]
    Home {
        /// The home.
        home: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A source file could not be stored.
    #[error("source `{name}` ({path}): {source}")]
    Source {
        /// Source name.
        name: String,
        /// File.
        path: PathBuf,
        /// The cause.
        source: StoreError,
    },
    /// The record could not be written.
    #[error("run record: {0}")]
    Record(io::Error),
    /// The run could not be sealed (signing key or log).
    #[error("sealing the run: {0}")]
    Seal(String),
}

impl From<crate::durable::DurableError> for RunError {
    fn from(e: crate::durable::DurableError) -> Self {
        StoreError::from(e).into()
    }
}

/// Media type of a source file, by extension.
fn media_type_of(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => "text/csv",
        Some("tsv") => "text/tab-separated-values",
        Some("json") => "application/json",
        Some("jsonl" | "ndjson") => "application/x-ndjson",
        Some("txt" | "md") => "text/plain",
        Some("parquet") => "application/vnd.apache.parquet",
        // `.arrows` is the IPC *stream* format; `.arrow` is the file
        // format (random access, a footer), which steps do not read.
        Some("arrows") => "application/vnd.apache.arrow.stream",
        _ => "application/octet-stream",
    }
}

/// Executes `pipeline`, reporting progress to `observer`.
pub fn execute(
    pipeline: &Pipeline,
    options: &Options,
    observer: &dyn Observer,
) -> Result<RunSummary, RunError> {
    execute_in(pipeline, options, observer, None)
}

/// An interrupted run to continue: its id, its reopened record and what the
/// record says about its start.
struct Resumed {
    run_id: RunId,
    record: Record,
    started_at: String,
    sources: BTreeMap<String, OutputRef>,
    torn_bytes: u64,
}

/// Continues run `run_id`, interrupted before it finished (a crash, a
/// kill): its record is reopened (a torn last line truncated and reported in
/// a `run-resumed` event), the spec and sources must be byte-identical to
/// the recorded ones, steps that finished come from the cache, and the run
/// is sealed as usual.
pub fn resume(
    run_id: &RunId,
    options: &Options,
    observer: &dyn Observer,
) -> Result<RunSummary, ResumeError> {
    resume_with(run_id, options, observer, &|path, overrides| {
        crate::spec::load(path, overrides)
    })
}

/// Loads a recorded spec for [`resume_with`]: `(recorded spec path,
/// recorded params)` to a pipeline.
pub type SpecLoader<'a> =
    dyn Fn(&Path, &[(String, String)]) -> Result<Pipeline, Vec<crate::spec::SpecError>> + 'a;

/// [`resume`], with the caller reading the spec (the service keeps specs
/// submitted as text in its index rather than at the recorded path).
pub fn resume_with(
    run_id: &RunId,
    options: &Options,
    observer: &dyn Observer,
    load: &SpecLoader<'_>,
) -> Result<RunSummary, ResumeError> {
    let run_dir = options.home.join("runs").join(run_id.as_str());
    if run_dir.join("summary.json").is_file() {
        return Err(ResumeError::Finished(run_id.clone()));
    }
    let path = run_dir.join("record.jsonl");
    if !path.is_file() {
        return Err(ResumeError::NotFound(run_id.clone()));
    }
    let (record, events, torn_bytes) =
        Record::reopen(&path).map_err(|e| ResumeError::Record(run_id.clone(), e.to_string()))?;
    let header = events
        .iter()
        .find(|e| e["type"] == "run-started")
        .ok_or_else(|| ResumeError::Record(run_id.clone(), "no run-started event".into()))?;
    let field = |k: &str| header[k].as_str().unwrap_or_default().to_string();
    let spec_path = PathBuf::from(field("spec_path"));
    let params: BTreeMap<String, String> =
        serde_json::from_value(header["params"].clone()).unwrap_or_default();
    let overrides: Vec<(String, String)> = params.into_iter().collect();
    let pipeline = load(&spec_path, &overrides).map_err(|errors| {
        ResumeError::Changed(format!(
            "spec {}: {}",
            spec_path.display(),
            errors.first().map_or(String::new(), ToString::to_string)
        ))
    })?;
    if Digest::of(pipeline.text.as_bytes()).to_string() != field("spec_digest") {
        return Err(ResumeError::Changed(format!(
            "spec {} changed since the run started",
            spec_path.display()
        )));
    }
    if pipeline.seed != header["seed"].as_u64().unwrap_or(0) {
        return Err(ResumeError::Changed("the run seed differs".into()));
    }
    let sources: BTreeMap<String, OutputRef> =
        serde_json::from_value(header["sources"].clone()).unwrap_or_default();
    let started_at = events
        .first()
        .and_then(|e| e["at"].as_str())
        .unwrap_or_default()
        .to_string();
    let resumed = Resumed {
        run_id: run_id.clone(),
        record,
        started_at,
        sources,
        torn_bytes,
    };
    execute_in(&pipeline, options, observer, Some(resumed)).map_err(ResumeError::Run)
}

/// Why a run could not be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// No such run.
    #[error("no run `{0}` in this home")]
    NotFound(RunId),
    /// The run finished; nothing to resume.
    #[error("run `{0}` already finished")]
    Finished(RunId),
    /// The record cannot be continued.
    #[error("run `{0}`: cannot continue its record: {1}")]
    Record(RunId, String),
    /// Resuming would not be the same run.
    #[error("cannot resume: {0}")]
    Changed(String),
    /// The resumed run failed to execute.
    #[error(transparent)]
    Run(RunError),
}

fn execute_in(
    pipeline: &Pipeline,
    options: &Options,
    observer: &dyn Observer,
    resumed: Option<Resumed>,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let home_err = |source| RunError::Home {
        home: options.home.clone(),
        source,
    };
    fs::create_dir_all(&options.home).map_err(home_err)?;
    let store = Store::open_with(&options.home, options.remote.clone())?;
    let cache = Cache::open(&options.home).map_err(home_err)?;
    let (run_id, rec, started_at, recorded_sources, torn_bytes) = match resumed {
        Some(r) => (
            r.run_id,
            Some(r.record),
            r.started_at,
            Some(r.sources),
            r.torn_bytes,
        ),
        None => (
            options.run_id.clone().unwrap_or_else(RunId::generate),
            None,
            record::rfc3339_now(),
            None,
            0,
        ),
    };
    let _span = tracing::info_span!("run", run_id = %run_id, pipeline = %pipeline.name).entered();
    let run_dir = options.home.join("runs").join(run_id.as_str());
    fs::create_dir_all(&run_dir).map_err(home_err)?;
    let resuming = rec.is_some();
    let mut rec = match rec {
        Some(r) => r,
        None => Record::create(&run_dir.join("record.jsonl")).map_err(RunError::Record)?,
    };

    let (spec_digest, _) = store.put_bytes(pipeline.text.as_bytes())?;
    let mut sources = BTreeMap::new();
    for (name, path) in &pipeline.sources {
        let (digest, size) = store.put_file(path).map_err(|source| RunError::Source {
            name: name.clone(),
            path: path.clone(),
            source,
        })?;
        sources.insert(
            name.clone(),
            OutputRef {
                digest,
                size,
                media_type: media_type_of(path).to_string(),
            },
        );
    }
    if let Some(recorded) = &recorded_sources
        && recorded != &sources
    {
        let changed: Vec<&String> = sources
            .keys()
            .filter(|k| recorded.get(*k) != sources.get(*k))
            .collect();
        return Err(RunError::Source {
            name: changed.first().map_or(String::new(), |s| s.to_string()),
            path: run_dir.clone(),
            source: StoreError::Io {
                path: run_dir.clone(),
                source: io::Error::other("the source changed since the run started; cannot resume"),
            },
        });
    }
    if resuming {
        rec.append(
            "run-resumed",
            json!({"torn_bytes_dropped": torn_bytes, "engine_version": env!("CARGO_PKG_VERSION")}),
        )
        .map_err(RunError::Record)?;
    } else {
        rec.append(
        "run-started",
        json!({
            "run_id": run_id,
            "pipeline": pipeline.name,
            "spec_path": pipeline.path.display().to_string(),
            "spec_digest": spec_digest,
            "params": pipeline.params,
            "seed": pipeline.seed,
            "sources": sources,
            "engine_version": env!("CARGO_PKG_VERSION"),
            "wasmtime_version": sandbox::wasmtime_version(),
            "determinism": crate::attempt::DETERMINISM,
            "limits": pipeline.steps.iter().map(|s| (s.name.as_str(), s.limits)).collect::<BTreeMap<_, _>>(),
        }),
    )
    .map_err(RunError::Record)?;
    }
    observer.event(Event::RunStarted {
        run_id: &run_id,
        steps: pipeline.steps.iter().map(|s| s.name.as_str()).collect(),
    });

    let components = resolve_components(pipeline, &store);
    // Components go into the store too, so a replay can run the exact bytes
    // a run used even after the files on disk change.
    for r in components.iter().flatten() {
        if !store.contains(&r.digest) {
            store.put_bytes(&r.bytes)?;
        }
    }
    let runner = Runner {
        pipeline,
        options,
        run_id: &run_id,
        store: Arc::new(store),
        cache,
        sources,
        components,
        sandbox: OnceLock::new(),
        gpu: OnceLock::new(),
        gpu_jobs: Arc::new(AtomicU64::new(0)),
        record: Mutex::new(rec),
        record_failure: Mutex::new(None),
        reports: Mutex::new(vec![None; pipeline.steps.len()]),
        observer,
    };
    let plan = scheduler::Plan {
        deps: pipeline.steps.iter().map(|s| s.deps.clone()).collect(),
        retries: pipeline.steps.iter().map(|s| s.retries).collect(),
        finally: pipeline.steps.iter().map(|s| s.finally).collect(),
        bounded: pipeline.steps.iter().map(|s| !s.sweep.is_empty()).collect(),
        bounded_max: options.max_parallel.unwrap_or(usize::MAX).max(1),
    };
    let verdicts = scheduler::run(&plan, options.jobs, &runner);
    // Skipped steps (false conditions, unmet exit rules) are not failures.
    let status = if verdicts.contains(&Verdict::Failed) {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    let Runner {
        reports,
        record,
        record_failure,
        store,
        sources,
        ..
    } = runner;
    store.sync()?;
    if let Some(failure) = record_failure
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        // Not sealed, not acknowledged: `sluice resume` continues it (the
        // steps that ran are cache hits).
        return Err(RunError::Record(io::Error::other(format!(
            "{failure}; the run `{run_id}` is unfinished: `sluice resume {run_id}` continues it"
        ))));
    }
    let steps: Vec<StepReport> = reports
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| StepReport::new(&pipeline.steps[i].name, StepStatus::Skipped))
        })
        .collect();
    let sweep = sweep_rows(pipeline, &steps);
    let summary = RunSummary {
        sweep,
        run_id: run_id.clone(),
        status,
        pipeline: pipeline.name.clone(),
        spec_path: pipeline.path.display().to_string(),
        spec_digest,
        params: pipeline.params.clone(),
        seed: pipeline.seed,
        started_at,
        finished_at: record::rfc3339_now(),
        wall_ms: started.elapsed().as_millis() as u64,
        steps,
    };
    let mut rec = record.into_inner().unwrap_or_else(|p| p.into_inner());
    rec.append(
        "run-finished",
        json!({"status": summary.status, "wall_ms": summary.wall_ms}),
    )
    .map_err(RunError::Record)?;
    let (record_lines, record_head) = rec.close().map_err(RunError::Record)?;
    seal_run(
        &options.home,
        &run_dir,
        &pipeline.params,
        pipeline.seed,
        &sources,
        &summary,
        (record_lines, record_head),
    )?;
    // The summary is the acknowledgement: written last, atomically, durably.
    let bytes = serde_json::to_vec_pretty(&summary).expect("summaries serialize");
    crate::durable::write_atomic(&run_dir.join("summary.json"), &bytes, true)?;
    Ok(summary)
}

/// Groups the fanned-out steps' metrics by sweep combination.
fn sweep_rows(pipeline: &Pipeline, steps: &[StepReport]) -> Vec<SweepRow> {
    pipeline
        .sweep
        .iter()
        .enumerate()
        .map(|(k, params)| {
            let suffix = format!("[{k}]");
            let mut row = SweepRow {
                index: k,
                params: params.clone(),
                metrics: BTreeMap::new(),
                succeeded: true,
            };
            for s in steps {
                if let Some(base) = s.name.strip_suffix(&suffix) {
                    row.succeeded &= matches!(s.status, StepStatus::Succeeded | StepStatus::Cached);
                    for (m, v) in &s.metrics {
                        row.metrics.insert(format!("{base}.{m}"), *v);
                    }
                }
            }
            row
        })
        .collect()
}
