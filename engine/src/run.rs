//! One run of a validated pipeline: components resolved, sources stored,
//! steps scheduled through the cache and the sandbox, events recorded,
//! summary written.
//!
//! Invariant: every step of a started run ends with exactly one report
//! (succeeded, cached, failed or skipped), and the summary and record are
//! durable before [`execute`] returns.
//! Boundary: the only module that ties store, cache, sandbox, scheduler
//! and record together; prints nothing (progress goes to an [`Observer`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_host_api::{ArtifactPort, InputArtifact, NoGpuGrant, OutputSink, PortError, WitError};

use crate::artifact::OutputRef;
use crate::build;
use crate::cache::{self, Cache, Entry};
use crate::digest::Digest;
use crate::failure::{Failure, FailureClass};
use crate::record::{self, Record};
use crate::sandbox::{self, AttemptSpec, Prepared, Sandbox};
use crate::scheduler::{self, Verdict};
use crate::spec::{ComponentSource, InputRef, Pipeline};
use crate::store::{BlobWriter, Store, StoreError};

/// A run id: `YYYYMMDD-HHMMSS-xxxxxxxx`, sortable by start time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    pub(crate) fn generate() -> RunId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let ms = record::now_ms();
        let stamp = record::rfc3339(ms);
        let mut seed = Vec::new();
        seed.extend_from_slice(
            &std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
                .to_le_bytes(),
        );
        seed.extend_from_slice(&std::process::id().to_le_bytes());
        seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let suffix = &Digest::of(&seed).hex()[..8];
        // 2026-11-26T15:36:31.000Z -> 20261126-153631
        let compact: String = stamp[..19].chars().filter(|c| c.is_ascii_digit()).collect();
        RunId(format!("{}-{}-{suffix}", &compact[..8], &compact[8..14]))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text that cannot be a run id (run ids name directories, so the charset
/// is strict).
#[derive(Debug, thiserror::Error)]
#[error("invalid run id {0:?}: expected letters, digits and `-` only")]
pub struct BadRunId(String);

impl FromStr for RunId {
    type Err = BadRunId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty()
            || s.len() > 64
            || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(BadRunId(s.chars().take(80).collect()));
        }
        Ok(RunId(s.to_string()))
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every step succeeded or was cached.
    Succeeded,
    /// At least one step failed.
    Failed,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Executed and succeeded.
    Succeeded,
    /// Answered from the step cache; nothing executed.
    Cached,
    /// Its last attempt failed.
    Failed,
    /// Not run because a dependency failed.
    Skipped,
}

/// The report of one step, as `sluice run --json` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// Final status.
    pub status: StepStatus,
    /// Answered from the cache.
    pub cached: bool,
    /// Attempts executed (0 when cached or skipped).
    pub attempts: u32,
    /// Wall time across attempts, ms.
    pub wall_ms: u64,
    /// Fuel consumed by the last attempt.
    pub fuel_used: u64,
    /// Peak linear memory of the last attempt, bytes.
    pub memory_peak_bytes: u64,
    /// Bytes read from inputs.
    pub bytes_in: u64,
    /// Bytes written to outputs.
    pub bytes_out: u64,
    /// Outputs by name.
    pub outputs: BTreeMap<String, OutputRef>,
    /// Final metric values (a series' last point when no final value was set).
    pub metrics: BTreeMap<String, f64>,
    /// Metric series.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub series: BTreeMap<String, Vec<(u64, f64)>>,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Why it failed.
    pub error: Option<Failure>,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The step's component digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<Digest>,
    /// The step's cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<Digest>,
    /// Captured stdout blob of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<Digest>,
    /// Captured stderr blob of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<Digest>,
    /// Instantiation time of the last attempt, µs.
    #[serde(default)]
    pub instantiate_us: u64,
    /// For a step fanned out by `[sweep]`: its combination's params.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sweep: BTreeMap<String, String>,
    /// For a step with a gpu grant that executed: telemetry availability
    /// and its last attempt's gpu jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<crate::gpu::GpuReport>,
}

impl StepReport {
    fn new(name: &str, status: StepStatus) -> Self {
        StepReport {
            name: name.to_string(),
            status,
            cached: status == StepStatus::Cached,
            attempts: 0,
            wall_ms: 0,
            fuel_used: 0,
            memory_peak_bytes: 0,
            bytes_in: 0,
            bytes_out: 0,
            outputs: BTreeMap::new(),
            metrics: BTreeMap::new(),
            series: BTreeMap::new(),
            tags: BTreeMap::new(),
            error: None,
            reason: None,
            component: None,
            cache_key: None,
            stdout: None,
            stderr: None,
            instantiate_us: 0,
            sweep: BTreeMap::new(),
            gpu: None,
        }
    }
}

/// One combination of a sweep and what its fanned-out steps reported.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRow {
    /// Combination index (`STEP[index]`).
    pub index: usize,
    /// The swept params' values.
    pub params: BTreeMap<String, String>,
    /// `STEP.METRIC` → value, over this combination's steps.
    pub metrics: BTreeMap<String, f64>,
    /// Whether every step of this combination succeeded.
    pub succeeded: bool,
}

/// The summary of a run: what `sluice run --json` and `sluice show` print.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run id.
    pub run_id: RunId,
    /// Final status.
    pub status: RunStatus,
    /// Pipeline name.
    pub pipeline: String,
    /// Spec file as given.
    pub spec_path: String,
    /// Digest of the spec's bytes (the spec itself is in the store).
    pub spec_digest: Digest,
    /// Resolved pipeline params.
    pub params: BTreeMap<String, String>,
    /// The run seed.
    pub seed: u64,
    /// Start, RFC 3339.
    pub started_at: String,
    /// End, RFC 3339.
    pub finished_at: String,
    /// Wall time, ms.
    pub wall_ms: u64,
    /// Steps in topological order.
    pub steps: Vec<StepReport>,
    /// The sweep's combinations, when the pipeline has a `[sweep]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<SweepRow>,
}

/// Progress events for displays.
#[derive(Debug)]
pub enum Event<'a> {
    /// The run started with these steps.
    RunStarted {
        /// Run id.
        run_id: &'a RunId,
        /// Step names, topological order.
        steps: Vec<&'a str>,
    },
    /// An attempt started.
    StepStarted {
        /// Step.
        step: &'a str,
        /// 1-based attempt.
        attempt: u32,
    },
    /// An attempt failed and the step will be retried.
    StepRetrying {
        /// Step.
        step: &'a str,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: &'a Failure,
    },
    /// A step reached its final state.
    StepFinished(&'a StepReport),
}

/// Receives [`Event`]s from scheduler threads.
pub trait Observer: Sync {
    /// One event.
    fn event(&self, event: Event<'_>);
}

/// Ignores every event.
#[derive(Debug)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event<'_>) {}
}

/// Run settings from the CLI or the service.
#[derive(Clone, Debug)]
pub struct Options {
    /// The home directory.
    pub home: PathBuf,
    /// Skip cache lookups (results are still cached).
    pub no_cache: bool,
    /// Attempts in flight at most.
    pub jobs: usize,
    /// Most fanned-out sweep steps in flight at once (`--max-parallel`).
    pub max_parallel: Option<usize>,
    /// Where compiled components are cached (default `<home>/components`);
    /// safe to share between homes, entries are keyed by digest.
    pub compile_cache: Option<PathBuf>,
    /// The id for a new run, when the caller acknowledged it before the run
    /// started (the service); generated otherwise.
    pub run_id: Option<RunId>,
    /// Set to stop the run: steps not yet started are skipped with the
    /// reason `run cancelled`; running attempts are stopped.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Attempts in flight across runs (the service's global step limit).
    pub step_slots: Option<Arc<StepSlots>>,
    /// Runs gpu jobs; shared between runs to keep workers warm. Without
    /// one, a run that needs it starts the built-in worker kinds.
    pub gpu: Option<Arc<crate::gpu::Dispatcher>>,
}

impl Options {
    /// Options for `home` with defaults: cache on, one job per core.
    pub fn new(home: PathBuf) -> Options {
        Options {
            home,
            no_cache: false,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_parallel: None,
            compile_cache: None,
            run_id: None,
            cancel: None,
            step_slots: None,
            gpu: None,
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    }
}

/// Reason given to steps skipped because their run was cancelled.
pub const CANCELLED_REASON: &str = "run cancelled";

/// A counting semaphore over attempts, shared by runs: an attempt holds one
/// slot while it executes.
#[derive(Debug)]
pub struct StepSlots {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
    waiting: AtomicUsize,
}

impl StepSlots {
    /// At most `max` (at least 1) attempts at once.
    pub fn new(max: usize) -> StepSlots {
        StepSlots {
            max: max.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Attempts executing now.
    pub fn in_use(&self) -> usize {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attempts waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Waits for a slot; `None` when `cancelled` became true while waiting.
    fn acquire(&self, cancelled: &dyn Fn() -> bool) -> Option<SlotGuard<'_>> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_add(1, Ordering::SeqCst);
        while *used >= self.max {
            if cancelled() {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
            // Woken by a release; the timeout only bounds how late a
            // cancellation is noticed.
            used = self
                .freed
                .wait_timeout(used, std::time::Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        *used += 1;
        Some(SlotGuard(self))
    }

    /// Holds one slot for work outside a run's scheduler (a replay over
    /// HTTP), waiting like an attempt; `None` when `cancelled` became true.
    pub fn hold(&self, cancelled: &dyn Fn() -> bool) -> Option<HeldStepSlot<'_>> {
        self.acquire(cancelled).map(HeldStepSlot)
    }
}

/// A step slot held by [`StepSlots::hold`]; dropping it frees the slot.
#[derive(Debug)]
pub struct HeldStepSlot<'a>(#[allow(dead_code)] SlotGuard<'a>);

#[derive(Debug)]
struct SlotGuard<'a>(&'a StepSlots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.used.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}

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

/// A component compiled at most once per run, shared by every step using it.
type PreparedSlot = Arc<OnceLock<Result<Arc<Prepared>, String>>>;

/// A resolved component: where its bytes are, and its digest.
struct Resolved {
    path: PathBuf,
    digest: Digest,
    bytes: Arc<Vec<u8>>,
    prepared: PreparedSlot,
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
    let store = Store::open(&options.home)?;
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
            "determinism": cache::DETERMINISM,
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

/// Where a sealed run keeps its signed provenance (a DSSE envelope).
pub const PROVENANCE_FILE: &str = "provenance.json";
/// Where a sealed run keeps its transparency-log position.
pub const SEAL_FILE: &str = "seal.json";

/// Seals a finished run: an in-toto statement over its outputs, signed
/// with the home's Ed25519 key in a DSSE envelope, appended to the local
/// Merkle log; `seal.json` keeps the leaf index and the signed tree head
/// of the log just after the append.
pub(crate) fn seal_run(
    home: &Path,
    run_dir: &Path,
    params: &BTreeMap<String, String>,
    seed: u64,
    sources: &BTreeMap<String, OutputRef>,
    summary: &RunSummary,
    (record_lines, record_head): (u64, Digest),
) -> Result<(), RunError> {
    let seal_err = |e: String| RunError::Seal(e);
    let signer = crate::seal::load_or_create(home).map_err(|e| seal_err(e.to_string()))?;
    let mut subjects = Vec::new();
    let mut components = Vec::new();
    for step in &summary.steps {
        for (name, o) in &step.outputs {
            subjects.push((format!("{}/{name}", step.name), o.digest));
        }
        if let Some(c) = step.component {
            components.push((step.name.clone(), c));
        }
    }
    let steps: Vec<serde_json::Value> = summary
        .steps
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "status": s.status,
                "cached": s.cached,
                "cache_key": s.cache_key,
                "component": s.component,
                "outputs": s.outputs.iter().map(|(k, o)| (k.clone(), o.digest)).collect::<BTreeMap<_, _>>(),
            })
        })
        .collect();
    let record_inputs: Vec<(String, Digest)> =
        sources.iter().map(|(k, o)| (k.clone(), o.digest)).collect();
    let statement = crate::seal::statement(&crate::seal::ProvenanceInput {
        run_id: summary.run_id.as_str(),
        pipeline: &summary.pipeline,
        spec_path: &summary.spec_path,
        spec_digest: summary.spec_digest,
        params,
        seed,
        engine_version: env!("CARGO_PKG_VERSION"),
        wasmtime_version: sandbox::wasmtime_version(),
        determinism: cache::DETERMINISM,
        subjects,
        inputs: record_inputs,
        components,
        started_at: &summary.started_at,
        finished_at: &summary.finished_at,
        steps: serde_json::Value::Array(steps),
        record_digest: record_head,
        record_lines,
    });
    let payload = serde_json::to_vec(&statement).expect("statements serialize");
    let envelope = signer.sign(crate::seal::IN_TOTO_PAYLOAD_TYPE, &payload);
    let envelope_bytes = serde_json::to_vec_pretty(&envelope).expect("envelopes serialize");
    crate::durable::write_atomic(&run_dir.join(PROVENANCE_FILE), &envelope_bytes, true)?;
    let log = crate::transparency::Log::open(home).map_err(|e| seal_err(e.to_string()))?;
    // The tree head of the log right after this append, signed: `verify`
    // checks the run's inclusion against it and its consistency with the
    // log's newest signed head, so a log rewritten later is detected.
    let (index, tree_size, checkpoint) = log
        .append_signed(&envelope_bytes, |size, root| {
            let cp = crate::seal::Checkpoint { size, root: *root };
            serde_json::to_vec(&crate::seal::sign_checkpoint(&signer, cp))
                .expect("envelopes serialize")
        })
        .map_err(|e| seal_err(e.to_string()))?;
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&checkpoint).expect("a checkpoint we just serialized parses");
    let seal = json!({"log_index": index, "tree_size": tree_size, "checkpoint": checkpoint, "keyid": signer.keyid(), "record_lines": record_lines, "record_head": record_head});
    crate::durable::write_atomic(
        &run_dir.join(SEAL_FILE),
        &serde_json::to_vec_pretty(&seal).expect("seals serialize"),
        true,
    )?;
    Ok(())
}

/// Builds crates, reads component bytes and digests them. A component that
/// cannot be resolved fails only the steps that use it.
fn resolve_components(pipeline: &Pipeline, store: &Store) -> Vec<Result<Arc<Resolved>, String>> {
    let crates: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = pipeline
            .steps
            .iter()
            .filter_map(|s| match &s.component {
                ComponentSource::Crate(dir) => Some(dir.clone()),
                ComponentSource::Wasm(_) | ComponentSource::Stored(_) => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let built = if crates.is_empty() {
        BTreeMap::new()
    } else {
        build::build_crates(&crates)
    };
    let mut by_path: HashMap<PathBuf, Result<Arc<Resolved>, String>> = HashMap::new();
    let mut by_digest: HashMap<Digest, PreparedSlot> = HashMap::new();
    pipeline
        .steps
        .iter()
        .map(|step| {
            let wasm = match &step.component {
                ComponentSource::Wasm(p) => Ok(p.clone()),
                ComponentSource::Stored(digest) => {
                    if !store.contains(digest) {
                        return Err(format!("component {digest} is not in the store"));
                    }
                    Ok(store.path_of(digest))
                }
                ComponentSource::Crate(dir) => match built.get(dir) {
                    Some(Ok(p)) => Ok(p.clone()),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err(format!("crate {} was not built", dir.display())),
                },
            }?;
            by_path
                .entry(wasm.clone())
                .or_insert_with(|| {
                    let meta = fs::metadata(&wasm)
                        .map_err(|e| format!("component {}: {e}", wasm.display()))?;
                    if meta.len() > sandbox::MAX_COMPONENT_BYTES {
                        return Err(format!(
                            "component {} is {} bytes; the limit is {}",
                            wasm.display(),
                            meta.len(),
                            sandbox::MAX_COMPONENT_BYTES
                        ));
                    }
                    let bytes = fs::read(&wasm)
                        .map_err(|e| format!("component {}: {e}", wasm.display()))?;
                    let digest = Digest::of(&bytes);
                    if let ComponentSource::Stored(want) = &step.component
                        && *want != digest
                    {
                        return Err(format!(
                            "component {want}: the stored bytes hash to {digest} (corrupt blob)"
                        ));
                    }
                    let prepared = by_digest.entry(digest).or_default().clone();
                    Ok(Arc::new(Resolved {
                        path: wasm.clone(),
                        digest,
                        bytes: Arc::new(bytes),
                        prepared,
                    }))
                })
                .clone()
        })
        .collect()
}

/// Largest output a condition reads (`STEP.outputs.NAME`).
pub const CONDITION_OUTPUT_BYTES_MAX: u64 = 64 * 1024;

/// What a `when` condition sees: params, and metrics, statuses and small
/// outputs of the steps that have settled.
struct ConditionScope<'a> {
    pipeline: &'a Pipeline,
    store: &'a Store,
    reports: &'a [Option<StepReport>],
    /// The step's own sweep combination, which overrides pipeline params.
    sweep: &'a BTreeMap<String, String>,
}

impl crate::expr::Scope for ConditionScope<'_> {
    fn lookup(&self, r: &crate::expr::Ref) -> Result<crate::expr::Value, String> {
        use crate::expr::{Ref, Value};
        let report = |step: &str| {
            self.pipeline
                .step_index(step)
                .and_then(|i| self.reports[i].as_ref())
                .ok_or_else(|| format!("step `{step}` has not run"))
        };
        match r {
            Ref::Param(p) => self
                .sweep
                .get(p)
                .or_else(|| self.pipeline.params.get(p))
                .map(|v| Value::Str(v.clone()))
                .ok_or_else(|| format!("no param `{p}`")),
            Ref::Metric { step, name } => report(step)?
                .metrics
                .get(name)
                .map(|v| Value::Num(*v))
                .ok_or_else(|| format!("step `{step}` reported no metric `{name}`")),
            Ref::Output {
                step,
                output,
                field,
            } => {
                let o = report(step)?
                    .outputs
                    .get(output)
                    .ok_or_else(|| format!("step `{step}` produced no output `{output}`"))?;
                if o.size > CONDITION_OUTPUT_BYTES_MAX {
                    return Err(format!(
                        "output `{step}.{output}` is {} bytes; conditions read outputs of at most {CONDITION_OUTPUT_BYTES_MAX}",
                        o.size
                    ));
                }
                let bytes = self
                    .store
                    .read_bytes(&o.digest)
                    .map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&bytes);
                let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
                let value = match field {
                    None => {
                        json.unwrap_or_else(|| serde_json::Value::String(text.trim().to_string()))
                    }
                    Some(f) => json
                        .as_ref()
                        .and_then(|j| j.get(f.as_str()))
                        .cloned()
                        .ok_or_else(|| {
                            format!("output `{step}.{output}` has no JSON field `{f}`")
                        })?,
                };
                match value {
                    serde_json::Value::Bool(b) => Ok(Value::Bool(b)),
                    serde_json::Value::Number(n) => Ok(Value::Num(n.as_f64().unwrap_or(f64::NAN))),
                    serde_json::Value::String(s) => Ok(Value::Str(s)),
                    other => Err(format!("`{r}` is {other}, not a number, string or boolean")),
                }
            }
            // A cached step succeeded (its result came from the cache).
            Ref::Status(step) => Ok(Value::Str(
                match report(step)?.status {
                    StepStatus::Succeeded | StepStatus::Cached => "succeeded",
                    StepStatus::Failed => "failed",
                    StepStatus::Skipped => "skipped",
                }
                .to_string(),
            )),
        }
    }
}

struct Runner<'a> {
    pipeline: &'a Pipeline,
    options: &'a Options,
    run_id: &'a RunId,
    store: Arc<Store>,
    cache: Cache,
    sources: BTreeMap<String, OutputRef>,
    components: Vec<Result<Arc<Resolved>, String>>,
    sandbox: OnceLock<Result<Sandbox, String>>,
    /// Where gpu jobs run (created on the first step with a grant).
    gpu: OnceLock<Arc<crate::gpu::Backend>>,
    /// Numbers the run's gpu jobs `j1`, `j2`, ...
    gpu_jobs: Arc<AtomicU64>,
    record: Mutex<Record>,
    /// The first failed record append: the record is not written to again
    /// (a torn line can only be its last, which resume truncates), and the
    /// run ends with this error instead of a seal over a broken record.
    record_failure: Mutex<Option<String>>,
    reports: Mutex<Vec<Option<StepReport>>>,
    observer: &'a dyn Observer,
}

impl Runner<'_> {
    fn log(&self, kind: &str, fields: serde_json::Value) {
        let mut failure = self
            .record_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failure.is_some() {
            return;
        }
        let mut rec = self.record.lock().unwrap_or_else(|p| p.into_inner());
        match rec.append(kind, fields) {
            // Blob renames ride on the record's group commit.
            Ok(true) => {
                if let Err(e) = self.store.sync() {
                    tracing::error!(error = %e, "cannot sync the store");
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot append to the run record");
                *failure = Some(format!(
                    "cannot append a `{kind}` event to {}: {e}",
                    rec.path().display()
                ));
            }
        }
    }

    fn gpu_backend(&self) -> Arc<crate::gpu::Backend> {
        self.gpu
            .get_or_init(|| {
                let dispatcher = self.options.gpu.clone().unwrap_or_else(|| {
                    Arc::new(crate::gpu::Dispatcher::new(
                        crate::gpu::WorkerConfig::builtin(&self.options.home),
                        self.options.home.join("scratch").join("gpu"),
                    ))
                });
                Arc::new(crate::gpu::Backend::Live(dispatcher))
            })
            .clone()
    }

    /// The gpu port of one attempt: the grant's, or one that denies.
    fn gpu_port(
        &self,
        step: &crate::spec::Step,
        inputs: &BTreeMap<String, OutputRef>,
        ledger: &crate::gpu::Ledger,
    ) -> Box<dyn sluice_host_api::GpuPort> {
        match &step.gpu {
            None => Box::new(NoGpuGrant {
                step: step.name.clone(),
            }),
            Some(grant) => Box::new(
                crate::gpu::AttemptGpu::new(
                    &step.name,
                    grant.clone(),
                    std::time::Duration::from_secs(step.limits.timeout_s),
                    inputs.values().map(|o| o.digest).collect(),
                    self.gpu_backend(),
                    self.store.clone(),
                    self.gpu_jobs.clone(),
                    ledger.clone(),
                )
                .bounded_by(
                    self.options.cancel.clone(),
                    Instant::now() + std::time::Duration::from_secs(step.limits.timeout_s),
                ),
            ),
        }
    }

    /// Records an attempt's gpu jobs and returns the step's gpu report.
    fn gpu_report(
        &self,
        step: &crate::spec::Step,
        attempt: u32,
        ledger: &crate::gpu::Ledger,
    ) -> Option<crate::gpu::GpuReport> {
        step.gpu.as_ref()?;
        let jobs = ledger.reports();
        for job in &jobs {
            self.log(
                "gpu-job",
                json!({"step": step.name, "attempt": attempt, "job": job.for_record()}),
            );
        }
        Some(crate::gpu::GpuReport::new(jobs))
    }

    fn sandbox(&self) -> Result<&Sandbox, String> {
        self.sandbox
            .get_or_init(|| {
                let cache = self
                    .options
                    .compile_cache
                    .clone()
                    .unwrap_or_else(|| self.options.home.join("components"));
                Sandbox::new(&cache, self.options.jobs).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The step's inputs, or which one is unavailable (only exit handlers
    /// can run with a producer that did not succeed).
    fn inputs_of(&self, step: usize) -> Result<BTreeMap<String, OutputRef>, String> {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        self.pipeline.steps[step]
            .inputs
            .iter()
            .map(|(name, r)| {
                let o = match r {
                    InputRef::Source(s) => Some(self.sources[s].clone()),
                    InputRef::Step { step, output } => reports[*step]
                        .as_ref()
                        .and_then(|rep| rep.outputs.get(output))
                        .cloned(),
                    // Expanded into per-combination inputs by `spec`.
                    InputRef::Collection { .. } => None,
                };
                let producer = match r {
                    InputRef::Source(s) => format!("source `{s}`"),
                    InputRef::Step { step, .. } | InputRef::Collection { step, .. } => {
                        format!("step `{}`", self.pipeline.steps[*step].name)
                    }
                };
                o.map(|o| (name.clone(), o)).ok_or_else(|| {
                    format!("input `{name}` is unavailable: {producer} did not succeed")
                })
            })
            .collect()
    }

    /// Evaluates the step's `when`, if any: `Ok(None)` to run, `Ok(Some)`
    /// with the skip reason, `Err` when it cannot be evaluated.
    fn condition(&self, step: usize) -> Result<Option<String>, String> {
        let Some((text, expr)) = &self.pipeline.steps[step].when else {
            return Ok(None);
        };
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let scope = ConditionScope {
            pipeline: self.pipeline,
            store: &self.store,
            reports: &reports,
            sweep: &self.pipeline.steps[step].sweep,
        };
        match crate::expr::eval(expr, &scope) {
            Ok(true) => Ok(None),
            Ok(false) => {
                let values: Vec<String> = expr
                    .refs()
                    .iter()
                    .filter_map(|r| {
                        crate::expr::Scope::lookup(&scope, r)
                            .ok()
                            .map(|v| format!("{r} = {v}"))
                    })
                    .collect();
                Ok(Some(if values.is_empty() {
                    format!("condition `{text}` is false")
                } else {
                    format!("condition `{text}` is false ({})", values.join(", "))
                }))
            }
            Err(e) => Err(format!("condition `{text}`: {e}")),
        }
    }

    fn finish(&self, step: usize, mut report: StepReport) {
        report.sweep = self.pipeline.steps[step].sweep.clone();
        tracing::debug!(
            step = %report.name,
            status = ?report.status,
            wall_ms = report.wall_ms,
            fuel_used = report.fuel_used,
            "step finished"
        );
        self.log(
            "step-finished",
            json!({
                "step": report.name,
                "status": report.status,
                "cached": report.cached,
                "attempts": report.attempts,
                "cache_key": report.cache_key,
                "component": report.component,
                "outputs": report.outputs,
                "fuel_used": report.fuel_used,
                "memory_peak_bytes": report.memory_peak_bytes,
                "wall_ms": report.wall_ms,
                "stdout": report.stdout,
                "stderr": report.stderr,
                "error": report.error,
            }),
        );
        self.observer.event(Event::StepFinished(&report));
        self.reports.lock().unwrap_or_else(|p| p.into_inner())[step] = Some(report);
    }

    fn prepare(&self, resolved: &Resolved) -> Result<Arc<Prepared>, String> {
        resolved
            .prepared
            .get_or_init(|| {
                let sandbox = self.sandbox()?;
                sandbox
                    .prepare(&resolved.path, &resolved.bytes, &resolved.digest)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    fn store_log(&self, bytes: &[u8]) -> Option<Digest> {
        if bytes.is_empty() {
            return None;
        }
        match self.store.put_bytes(bytes) {
            Ok((d, _)) => Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "cannot store captured log");
                None
            }
        }
    }
}

impl scheduler::Executor for Runner<'_> {
    fn attempt(&self, index: usize, attempt: u32) -> scheduler::Outcome {
        let step = &self.pipeline.steps[index];
        let _span = tracing::info_span!(
            "attempt",
            run_id = %self.run_id,
            step = %step.name,
            attempt
        )
        .entered();
        let t0 = Instant::now();
        self.observer.event(Event::StepStarted {
            step: &step.name,
            attempt,
        });
        let mut report = {
            let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
            reports[index]
                .clone()
                .unwrap_or_else(|| StepReport::new(&step.name, StepStatus::Failed))
        };
        let fail = |mut report: StepReport, failure: Failure| {
            report.status = StepStatus::Failed;
            report.error = Some(failure);
            report
        };
        let skip = |reason: String| {
            let mut r = StepReport::new(&step.name, StepStatus::Skipped);
            r.reason = Some(reason);
            self.finish(index, r);
            scheduler::Outcome::Skipped
        };
        if self.options.cancelled() {
            return skip(CANCELLED_REASON.to_string());
        }
        match self.condition(index) {
            Ok(None) => {}
            Ok(Some(reason)) => return skip(reason),
            Err(message) => {
                report.attempts = attempt;
                let r = fail(
                    report,
                    Failure {
                        class: FailureClass::Step,
                        message,
                    },
                );
                return self.attempt_failed(index, attempt, r);
            }
        }
        let inputs = match self.inputs_of(index) {
            Ok(i) => i,
            Err(reason) => return skip(reason),
        };
        let _slot = match &self.options.step_slots {
            Some(slots) => match slots.acquire(&|| self.options.cancelled()) {
                Some(guard) => Some(guard),
                None => return skip(CANCELLED_REASON.to_string()),
            },
            None => None,
        };
        let resolved = match &self.components[index] {
            Ok(r) => r.clone(),
            Err(e) => {
                report.attempts = attempt;
                let r = fail(
                    report,
                    Failure {
                        class: FailureClass::Step,
                        message: e.clone(),
                    },
                );
                return self.attempt_failed(index, attempt, r);
            }
        };
        // The key describes the very spec the sandbox will be handed, so it
        // covers what the guest can observe and cannot drift from it.
        let spec = AttemptSpec {
            step: step.name.clone(),
            attempt,
            inputs: inputs
                .iter()
                .map(|(name, o)| InputArtifact {
                    name: name.clone(),
                    digest: o.digest.to_string(),
                    size: o.size,
                    media_type: o.media_type.clone(),
                })
                .collect(),
            outputs: step.outputs.clone(),
            params: step.params.clone(),
            limits: step.limits,
            run_seed: self.pipeline.seed,
            cancel: self.options.cancel.clone(),
        };
        let description = cache::AttemptDescription::of(resolved.digest, &spec, step.gpu.as_ref());
        let key = description.key();
        report.component = Some(resolved.digest);
        report.cache_key = Some(key);
        self.log(
            "step-started",
            json!({
                "step": step.name,
                "attempt": attempt,
                "component": resolved.digest,
                "component_path": resolved.path.display().to_string(),
                "cache_key": key,
                "inputs": inputs,
                "params": step.params,
                "outputs": step.outputs,
                "limits": step.limits,
                "run_seed": self.pipeline.seed,
                "host_answers": sandbox::host_answers(self.pipeline.seed, &step.name),
                "gpu": step.gpu,
                // What the cache key is the sha256 of (re-serialized
                // compactly): everything the attempt can observe.
                "attempt_description": description,
            }),
        );
        if attempt == 1
            && step.cache
            && !self.options.no_cache
            && let Some(hit) = self.cache.lookup(&key, &self.store)
        {
            let mut r = StepReport::new(&step.name, StepStatus::Cached);
            r.component = Some(resolved.digest);
            r.cache_key = Some(key);
            r.outputs = hit.outputs;
            r.metrics = hit.metrics;
            r.series = hit.series;
            r.tags = hit.tags;
            // Nothing executed, but the record keeps the jobs that made
            // these outputs, so a replay of this run can answer them.
            for job in &hit.gpu_jobs {
                self.log(
                    "gpu-job",
                    json!({"step": step.name, "attempt": attempt, "cached": true, "job": job}),
                );
            }
            r.wall_ms = t0.elapsed().as_millis() as u64;
            self.finish(index, r);
            return scheduler::Outcome::Succeeded;
        }
        report.attempts = attempt;
        let prepared = match self.prepare(&resolved) {
            Ok(p) => p,
            Err(e) => {
                let class = if e.starts_with("invalid component") {
                    FailureClass::Step
                } else {
                    FailureClass::Engine
                };
                let r = fail(report, Failure { class, message: e });
                return self.attempt_failed(index, attempt, r);
            }
        };
        let sandbox = match self.sandbox() {
            Ok(s) => s,
            Err(e) => {
                let r = fail(
                    report,
                    Failure {
                        class: FailureClass::Engine,
                        message: e,
                    },
                );
                return self.attempt_failed(index, attempt, r);
            }
        };
        let ledger = crate::gpu::Ledger::default();
        let result = sandbox.run(
            &prepared,
            &spec,
            Box::new(StoreArtifacts {
                store: self.store.clone(),
            }),
            self.gpu_port(step, &inputs, &ledger),
        );
        // Which native code ran (the compile cache is authenticated, and
        // the record says what it served) and how long the guest slept in
        // virtual time.
        self.log(
            "attempt-sandbox",
            json!({
                "step": step.name,
                "attempt": attempt,
                "compiled": prepared.compiled,
                "compiled_by": prepared.compiled_by.describe(),
                "slept_ns": result.slept_ns,
            }),
        );
        report.gpu = self.gpu_report(step, attempt, &ledger);
        report.wall_ms += result.wall_ms;
        report.fuel_used = result.fuel_used;
        report.memory_peak_bytes = result.memory_peak_bytes;
        report.instantiate_us = result.instantiate_us;
        report.stdout = self.store_log(&result.stdout);
        report.stderr = self.store_log(&result.stderr);
        let outcome = match result.outcome {
            Ok(o) => o,
            Err(failure) => {
                if let Some(p) = result.partial {
                    report.bytes_in = p.bytes_in;
                    report.bytes_out = p.bytes_out;
                    report.metrics = p.metrics.scalars;
                }
                let r = fail(report, failure);
                return self.attempt_failed(index, attempt, r);
            }
        };
        report.status = StepStatus::Succeeded;
        report.error = None;
        report.bytes_in = outcome.bytes_in;
        report.bytes_out = outcome.bytes_out;
        report.outputs = outcome
            .outputs
            .into_iter()
            .map(|(name, o)| {
                let digest = o
                    .digest
                    .parse()
                    .expect("the store names blobs with valid digests");
                (
                    name,
                    OutputRef {
                        digest,
                        size: o.size,
                        media_type: o.media_type,
                    },
                )
            })
            .collect();
        report.metrics = outcome.metrics.scalars;
        for (name, points) in &outcome.metrics.series {
            if let Some(last) = points.last() {
                report.metrics.entry(name.clone()).or_insert(last.1);
            }
        }
        report.series = outcome.metrics.series;
        report.tags = outcome.metrics.tags;
        if step.cache {
            let entry = Entry {
                key,
                step: step.name.clone(),
                run_id: self.run_id.to_string(),
                outputs: report.outputs.clone(),
                metrics: report.metrics.clone(),
                series: report.series.clone(),
                tags: report.tags.clone(),
                gpu_jobs: report
                    .gpu
                    .iter()
                    .flat_map(|g| g.jobs.iter().map(crate::gpu::JobReport::for_record))
                    .collect(),
            };
            if let Err(e) = self.cache.insert(&entry) {
                tracing::warn!(step = %step.name, error = %e, "cannot write cache entry");
            }
        }
        self.finish(index, report);
        scheduler::Outcome::Succeeded
    }

    fn skipped(&self, index: usize, why: scheduler::Skip) {
        use scheduler::Skip;
        let name = |i: usize| &self.pipeline.steps[i].name;
        let mut r = StepReport::new(name(index), StepStatus::Skipped);
        r.reason = Some(match why {
            _ if self.options.cancelled() => CANCELLED_REASON.to_string(),
            Skip::UpstreamFailed(s) => format!("upstream step `{}` failed", name(s)),
            Skip::UpstreamSkipped(s) => format!("upstream step `{}` was skipped", name(s)),
            Skip::NothingFailed => "exit handler on failure: no step failed".to_string(),
            Skip::SomethingFailed => "exit handler on success: a step failed".to_string(),
        });
        self.finish(index, r);
    }
}

impl Runner<'_> {
    /// Files a failed attempt: final if no retries remain, otherwise kept
    /// as the step's provisional report.
    fn attempt_failed(&self, index: usize, attempt: u32, report: StepReport) -> scheduler::Outcome {
        let step = &self.pipeline.steps[index];
        let error = report.error.clone().expect("failed reports carry an error");
        if attempt <= step.retries {
            self.log(
                "attempt-failed",
                json!({"step": step.name, "attempt": attempt, "error": error}),
            );
            self.observer.event(Event::StepRetrying {
                step: &step.name,
                attempt,
                error: &error,
            });
            self.reports.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(report);
        } else {
            self.finish(index, report);
        }
        scheduler::Outcome::Failed
    }
}

/// The artifact port over the content-addressed store.
pub(crate) struct StoreArtifacts {
    pub(crate) store: Arc<Store>,
}

impl ArtifactPort for StoreArtifacts {
    fn open(&mut self, input: &InputArtifact) -> Result<Box<dyn Read + Send>, PortError> {
        let digest: Digest = input
            .digest
            .parse()
            .map_err(|e: crate::digest::BadDigest| PortError::Engine(e.to_string()))?;
        match self.store.open_verified(&digest) {
            Ok(f) => Ok(Box::new(io::BufReader::with_capacity(64 * 1024, f))),
            Err(StoreError::NotFound(d)) => Err(PortError::Refused(WitError::NotFound(format!(
                "input `{}`: artifact {d} is not in the store",
                input.name
            )))),
            Err(e) => Err(PortError::Engine(format!("input `{}`: {e}", input.name))),
        }
    }

    fn create(&mut self, name: &str) -> Result<Box<dyn OutputSink>, PortError> {
        let writer = self
            .store
            .writer()
            .map_err(|e| PortError::Engine(format!("output `{name}`: {e}")))?;
        Ok(Box::new(BlobSink {
            name: name.to_string(),
            writer,
        }))
    }
}

struct BlobSink {
    name: String,
    writer: BlobWriter,
}

impl OutputSink for BlobSink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), PortError> {
        crate::fault::point("store.output")
            .and_then(|()| self.writer.write_all(bytes))
            .map_err(|e| PortError::Engine(format!("output `{}`: {e}", self.name)))
    }

    fn finish(self: Box<Self>) -> Result<(String, u64), PortError> {
        let name = self.name;
        let (digest, size) = self
            .writer
            .commit()
            .map_err(|e| PortError::Engine(format!("output `{name}`: {e}")))?;
        Ok((digest.to_string(), size))
    }
}

/// Loads the summary of a finished run, after checking it against the
/// run's sealed record ([`crate::verify::summary_agrees`]).
pub fn load_summary(home: &Path, run_id: &RunId) -> Result<RunSummary, LoadError> {
    let path = home.join("runs").join(run_id.as_str()).join("summary.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(if path.parent().is_some_and(Path::is_dir) {
                LoadError::Unfinished(run_id.clone())
            } else {
                LoadError::NotFound(run_id.clone())
            });
        }
        Err(e) => return Err(LoadError::Io { path, source: e }),
    };
    let summary = serde_json::from_slice(&bytes).map_err(|e| LoadError::Corrupt {
        path,
        reason: e.to_string(),
    })?;
    // The summary is written after the seal, so nothing signed covers its
    // bytes: what it shows is checked against the sealed record instead.
    crate::verify::summary_agrees(home, run_id, &bytes).map_err(|detail| LoadError::Mismatch {
        run: run_id.clone(),
        detail,
    })?;
    Ok(summary)
}

/// Why a run summary could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No such run.
    #[error("no run `{0}` in this home")]
    NotFound(RunId),
    /// The run started but never finished (crashed or still running).
    #[error("run `{0}` has no summary: it is still running or was interrupted")]
    Unfinished(RunId),
    /// The summary says something its sealed record does not (or there is
    /// no intact sealed record to check it against).
    #[error("run `{run}`: summary.json does not match the sealed record: {detail}")]
    Mismatch {
        /// The run.
        run: RunId,
        /// The first difference.
        detail: String,
    },
    /// The summary does not parse.
    #[error("run summary {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// IO failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Run ids in `home`, newest first.
pub fn list_runs(home: &Path) -> io::Result<Vec<RunId>> {
    let dir = home.join("runs");
    let mut ids = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                if let Some(name) = e.file_name().to_str()
                    && let Ok(id) = name.parse::<RunId>()
                {
                    ids.push(id);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    ids.sort();
    ids.reverse();
    Ok(ids)
}
