//! `sluice replay`: re-executes a recorded run's steps from the record and
//! compares every output digest.
//!
//! Invariant: a replay never reads the step cache and never reports
//! `identical` unless every replayed output matches the record *and* the
//! environment (engine, wasmtime, determinism settings, component bytes on
//! disk) is the one the run recorded; otherwise it is `diverged` (bytes
//! differ) or `environment-drift`.
//! A record whose hash chain is broken is still replayed (to show what the
//! altered claims produce) but the break is reported as drift, so the
//! verdict is never `identical`.
//! GPU jobs are answered from the record by default (same job spec digest →
//! recorded result and outputs from the store; no worker starts); with
//! [`GpuReplay::Rerun`] they execute again and are compared with the record:
//! bitwise when the worker's device/driver/library fingerprint matches, by
//! metric tolerance otherwise (a tolerated difference is drift, not a pass).
//! Boundary: reads the record and the store, runs steps in the sandbox;
//! writes only blobs and `runs/<replay id>/replay.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde_json::Value;

use crate::artifact::OutputRef;
use crate::attempt;
use crate::digest::Digest;
use crate::failure::Failure;
use crate::gpu::{self, Dispatcher, JobReport};
use crate::limits::Limits;
use crate::record;
use crate::report::RunId;
use crate::sandbox::Sandbox;
use crate::scheduler;
use crate::store::Store;

/// The overall outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every output matched, in the recorded environment.
    Identical,
    /// At least one output differs (or a step could not be re-executed).
    Diverged,
    /// Outputs matched, but the environment is not the recorded one.
    EnvironmentDrift,
}

/// One step's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct StepReplay {
    /// Step name.
    pub name: String,
    /// `identical` or `diverged` (drift is reported separately).
    pub verdict: Verdict,
    /// Output digests the record holds.
    pub expected: BTreeMap<String, Digest>,
    /// Output digests the replay produced.
    pub found: BTreeMap<String, Digest>,
    /// Why the environment differs for this step, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    /// Why the step could not be re-executed, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The step's gpu jobs in this replay.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpu: Vec<GpuJobReplay>,
}

/// How one gpu job was replayed.
#[derive(Clone, Debug, Serialize)]
pub struct GpuJobReplay {
    /// The job id (the recorded one when answered from the record).
    pub job: String,
    /// Its spec digest.
    pub spec_digest: Digest,
    /// Its state in this replay.
    pub state: gpu::State,
    /// Answered from the record (no worker ran).
    pub from_record: bool,
    /// With `--rerun-gpu`: how it compares with the recorded job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<gpu::Comparison>,
}

/// How a replay treats gpu jobs.
#[derive(Clone, Debug)]
pub enum GpuReplay {
    /// Answer them from the record.
    Recorded,
    /// Execute them again on this dispatcher's workers and compare.
    Rerun(Arc<Dispatcher>),
}

/// The first output that differs.
#[derive(Clone, Debug, Serialize)]
pub struct Divergence {
    /// Step.
    pub step: String,
    /// Output name.
    pub output: String,
    /// Digest in the record.
    pub expected: Option<Digest>,
    /// Digest the replay produced.
    pub found: Option<Digest>,
}

/// What `sluice replay --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    /// This replay's own id.
    pub run_id: RunId,
    /// The run replayed.
    pub replay_of: RunId,
    /// Overall verdict.
    pub verdict: Verdict,
    /// Differences in the run-wide environment.
    pub environment: Vec<String>,
    /// The first divergence in record order.
    pub first_divergence: Option<Divergence>,
    /// Per step, in record order.
    pub steps: Vec<StepReplay>,
    /// `recorded` (gpu jobs answered from the record) or `rerun`.
    pub gpu_mode: &'static str,
    /// Worker processes started by this replay.
    pub workers_started: u64,
    /// Wall time of the replay, ms.
    pub wall_ms: u64,
}

/// Why a replay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The record is missing or unreadable.
    #[error("run `{run}`: cannot read its record {path}: {source}")]
    Record {
        /// Run.
        run: RunId,
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The record lacks something replay needs.
    #[error("run `{run}`: record has no {what}")]
    Incomplete {
        /// Run.
        run: RunId,
        /// What is missing.
        what: String,
    },
    /// Store or sandbox failure.
    #[error("{0}")]
    Engine(String),
}

/// A step as the record describes its last attempt.
struct Recorded {
    name: String,
    component: Digest,
    component_path: Option<PathBuf>,
    inputs: BTreeMap<String, OutputRef>,
    params: BTreeMap<String, String>,
    outputs: Vec<String>,
    limits: Limits,
    run_seed: u64,
    expected: BTreeMap<String, Digest>,
    gpu: Option<crate::spec::Grant>,
    gpu_jobs: Vec<JobReport>,
}

fn field<T: serde::de::DeserializeOwned>(event: &Value, key: &str) -> Option<T> {
    serde_json::from_value(event.get(key)?.clone()).ok()
}

/// Replays run `run` in `home`.
pub fn replay(
    home: &Path,
    run: &RunId,
    jobs: usize,
    compile_cache: Option<PathBuf>,
    gpu_mode: GpuReplay,
    remote: Option<Arc<crate::remote::Remote>>,
) -> Result<ReplayReport, ReplayError> {
    let started = std::time::Instant::now();
    let path = home.join("runs").join(run.as_str()).join("record.jsonl");
    let bytes = std::fs::read(&path).map_err(|source| ReplayError::Record {
        run: run.clone(),
        path: path.clone(),
        source,
    })?;
    // A broken chain does not stop the replay (the auditor wants to know
    // what the altered claims produce) but it can never be `identical`.
    let mut environment = Vec::new();
    let events: Vec<Value> = match record::check_chain(&bytes) {
        Ok(chain) => chain.events,
        Err(b) => {
            environment.push(format!(
                "record line {} is {}: {}",
                b.line,
                b.fault.as_str(),
                b.detail
            ));
            bytes
                .split(|c| *c == b'\n')
                .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
                .collect()
        }
    };
    let incomplete = |what: &str| ReplayError::Incomplete {
        run: run.clone(),
        what: what.to_string(),
    };
    let header = events
        .iter()
        .find(|e| e["type"] == "run-started")
        .ok_or_else(|| incomplete("run-started event"))?;
    let current = [
        ("engine_version", env!("CARGO_PKG_VERSION")),
        ("wasmtime_version", crate::sandbox::wasmtime_version()),
        ("determinism", crate::attempt::DETERMINISM),
    ];
    for (key, now) in current {
        let then = header[key].as_str().unwrap_or("(unrecorded)");
        if then != now {
            environment.push(format!("{key} was {then:?}, is {now:?}"));
        }
    }

    // The last attempt of each step that ended succeeded or cached, and the
    // gpu jobs of that attempt.
    let mut started_events: BTreeMap<String, &Value> = BTreeMap::new();
    let mut gpu_jobs: BTreeMap<String, Vec<JobReport>> = BTreeMap::new();
    let mut steps = Vec::new();
    for event in &events {
        match event["type"].as_str() {
            Some("step-started") => {
                if let Some(name) = event["step"].as_str() {
                    started_events.insert(name.to_string(), event);
                    gpu_jobs.remove(name);
                }
            }
            Some("gpu-job") => {
                if let (Some(name), Some(job)) =
                    (event["step"].as_str(), field::<JobReport>(event, "job"))
                {
                    gpu_jobs.entry(name.to_string()).or_default().push(job);
                }
            }
            Some("step-finished") => {
                let status = event["status"].as_str().unwrap_or("");
                if status != "succeeded" && status != "cached" {
                    continue;
                }
                let name: String = field(event, "step").ok_or_else(|| incomplete("step name"))?;
                let start = started_events
                    .get(&name)
                    .ok_or_else(|| incomplete(&format!("step-started event for `{name}`")))?;
                let outputs: BTreeMap<String, OutputRef> =
                    field(event, "outputs").unwrap_or_default();
                steps.push(Recorded {
                    component: field(start, "component")
                        .ok_or_else(|| incomplete(&format!("component digest for `{name}`")))?,
                    component_path: field::<String>(start, "component_path").map(PathBuf::from),
                    inputs: field(start, "inputs").unwrap_or_default(),
                    params: field(start, "params").unwrap_or_default(),
                    outputs: field(start, "outputs")
                        .unwrap_or_else(|| outputs.keys().cloned().collect()),
                    limits: field(start, "limits").unwrap_or_default(),
                    run_seed: field(start, "run_seed").unwrap_or(0),
                    expected: outputs.into_iter().map(|(k, o)| (k, o.digest)).collect(),
                    gpu: field(start, "gpu"),
                    gpu_jobs: gpu_jobs.remove(&name).unwrap_or_default(),
                    name,
                });
            }
            _ => {}
        }
    }

    let store =
        Arc::new(Store::open_with(home, remote).map_err(|e| ReplayError::Engine(e.to_string()))?);
    let cache_dir = compile_cache.unwrap_or_else(|| home.join("components"));
    let replayer = Replayer {
        steps: &steps,
        store: store.clone(),
        cache_dir,
        sandbox: OnceLock::new(),
        results: Mutex::new(vec![None; steps.len()]),
        gpu: gpu_mode.clone(),
        gpu_jobs: Arc::new(AtomicU64::new(0)),
    };
    let plan = scheduler::Plan::new(vec![Vec::new(); steps.len()], vec![0; steps.len()]);
    scheduler::run(&plan, jobs, &replayer);
    store
        .sync()
        .map_err(|e| ReplayError::Engine(e.to_string()))?;
    let results: Vec<StepReplay> = replayer
        .results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every step replayed"))
        .collect();

    let first_divergence = results.iter().find_map(|r| {
        if r.verdict != Verdict::Diverged {
            return None;
        }
        let output = r
            .expected
            .iter()
            .find(|(k, d)| r.found.get(*k) != Some(*d))
            .map(|(k, _)| k.clone())
            .or_else(|| {
                r.found
                    .keys()
                    .find(|k| !r.expected.contains_key(*k))
                    .cloned()
            })
            .unwrap_or_default();
        Some(Divergence {
            step: r.name.clone(),
            expected: r.expected.get(&output).copied(),
            found: r.found.get(&output).copied(),
            output,
        })
    });
    let verdict =
        if first_divergence.is_some() || results.iter().any(|r| r.verdict == Verdict::Diverged) {
            Verdict::Diverged
        } else if !environment.is_empty() || results.iter().any(|r| r.drift.is_some()) {
            Verdict::EnvironmentDrift
        } else {
            Verdict::Identical
        };
    let (gpu_mode, workers_started) = match &gpu_mode {
        GpuReplay::Recorded => ("recorded", 0),
        GpuReplay::Rerun(d) => ("rerun", d.workers_started()),
    };
    let report = ReplayReport {
        run_id: RunId::generate(),
        replay_of: run.clone(),
        verdict,
        environment,
        first_divergence,
        steps: results,
        gpu_mode,
        workers_started,
        wall_ms: started.elapsed().as_millis() as u64,
    };
    let out = home
        .join("runs")
        .join(report.run_id.as_str())
        .join("replay.json");
    let bytes = serde_json::to_vec_pretty(&report).expect("reports serialize");
    crate::durable::write_atomic(&out, &bytes, true)
        .map_err(|e| ReplayError::Engine(e.to_string()))?;
    Ok(report)
}

struct Replayer<'a> {
    steps: &'a [Recorded],
    store: Arc<Store>,
    cache_dir: PathBuf,
    sandbox: OnceLock<Result<Sandbox, String>>,
    results: Mutex<Vec<Option<StepReplay>>>,
    gpu: GpuReplay,
    gpu_jobs: Arc<AtomicU64>,
}

/// What re-executing a step produced.
struct Executed {
    outputs: Result<BTreeMap<String, Digest>, String>,
    gpu: Vec<JobReport>,
}

impl Replayer<'_> {
    fn execute(&self, step: &Recorded) -> Executed {
        let outcome = match self.execute_with(step) {
            Ok(outcome) => outcome,
            Err(failure) => attempt::Outcome::failed(failure),
        };
        Executed {
            outputs: match outcome.failure {
                Some(f) => Err(f.message),
                None => Ok(outcome
                    .outputs
                    .into_iter()
                    .map(|(name, o)| (name, o.digest))
                    .collect()),
            },
            gpu: outcome.gpu_jobs,
        }
    }

    /// Re-executes `step` through the same seam as the run, from the same
    /// description (so under the same key).
    fn execute_with(&self, step: &Recorded) -> Result<attempt::Outcome, Failure> {
        let sandbox = self
            .sandbox
            .get_or_init(|| Sandbox::new(&self.cache_dir, 2).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Failure::engine(e.clone()))?;
        let path = step
            .component_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(step.component.to_string()));
        let prepared = attempt::prepare_from_store(sandbox, &self.store, &step.component, &path)?;
        let request = attempt::Plan {
            component: step.component,
            step: step.name.clone(),
            inputs: step.inputs.clone(),
            outputs: step.outputs.clone(),
            params: step.params.clone(),
            limits: step.limits,
            run_seed: step.run_seed,
            gpu: step.gpu.clone(),
        }
        .request(1);
        let backend = || {
            Arc::new(match &self.gpu {
                GpuReplay::Recorded => gpu::Backend::Recorded(Mutex::new(gpu::RecordedJobs::new(
                    step.gpu_jobs.clone(),
                ))),
                GpuReplay::Rerun(d) => gpu::Backend::Live(d.clone()),
            })
        };
        Ok(attempt::run(
            &request,
            &attempt::Env {
                sandbox,
                component: &prepared,
                store: &self.store,
                gpu: &backend,
                gpu_jobs: &self.gpu_jobs,
                cancel: None,
            },
        ))
    }
}

impl scheduler::Executor for Replayer<'_> {
    fn attempt(&self, index: usize, _attempt: u32) -> scheduler::Outcome {
        let step = &self.steps[index];
        let drift = step
            .component_path
            .as_ref()
            .and_then(|p| match std::fs::read(p) {
                Ok(bytes) if Digest::of(&bytes) == step.component => None,
                Ok(bytes) => Some(format!(
                    "component {} is now {}, the run used {}",
                    p.display(),
                    Digest::of(&bytes),
                    step.component
                )),
                Err(e) => Some(format!("component {} is gone: {e}", p.display())),
            });
        let executed = self.execute(step);
        let (found, error) = match executed.outputs {
            Ok(found) => (found, None),
            Err(e) => (BTreeMap::new(), Some(crate::quoting::sanitize(&e))),
        };
        let gpu = self.gpu_replays(step, &executed.gpu);
        let gpu_mismatch = gpu
            .iter()
            .filter_map(|g| g.comparison.as_ref())
            .find(|c| !c.matched);
        let tolerated: Vec<String> = gpu
            .iter()
            .filter_map(|g| g.comparison.as_ref())
            .filter(|c| c.matched && c.method == "tolerance")
            .map(|c| format!("gpu job {}: {}", c.job, c.detail))
            .collect();
        let mut drift = drift;
        let verdict = if error.is_none() && gpu_mismatch.is_none() && found == step.expected {
            Verdict::Identical
        } else if error.is_none() && gpu_mismatch.is_none() && !tolerated.is_empty() {
            // Another device or library: the bytes may differ, the metrics agree.
            drift = Some(
                drift
                    .into_iter()
                    .chain(tolerated)
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            Verdict::EnvironmentDrift
        } else {
            Verdict::Diverged
        };
        let error =
            error.or_else(|| gpu_mismatch.map(|c| format!("gpu job {}: {}", c.job, c.detail)));
        self.results.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(StepReplay {
            name: step.name.clone(),
            verdict,
            expected: step.expected.clone(),
            found,
            drift,
            error,
            gpu,
        });
        scheduler::Outcome::Succeeded
    }

    fn skipped(&self, _step: usize, _why: scheduler::Skip) {}
}

impl Replayer<'_> {
    /// Pairs the replay's gpu jobs with the recorded ones (by spec digest,
    /// in order) and, for a rerun, compares them.
    fn gpu_replays(&self, step: &Recorded, jobs: &[JobReport]) -> Vec<GpuJobReplay> {
        let mut recorded = gpu::RecordedJobs::new(step.gpu_jobs.clone());
        let rerun = matches!(self.gpu, GpuReplay::Rerun(_));
        jobs.iter()
            .map(|job| {
                let twin = recorded.take(&job.spec_digest);
                let comparison = rerun.then(|| match &twin {
                    Some(r) => gpu::compare(r, job),
                    None => gpu::Comparison {
                        job: job.id.clone(),
                        method: "bitwise",
                        matched: false,
                        detail: format!(
                            "the record has no job with spec {}: the job spec diverged",
                            job.spec_digest
                        ),
                    },
                });
                GpuJobReplay {
                    job: job.id.clone(),
                    spec_digest: job.spec_digest,
                    state: job.state,
                    from_record: job.replayed,
                    comparison,
                }
            })
            .collect()
    }
}
