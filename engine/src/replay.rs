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
//! Boundary: reads the record and the store, runs steps in the sandbox;
//! writes only blobs and `runs/<replay id>/replay.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde_json::Value;
use sluice_host_api::{InputArtifact, NoGpuGrant};

use crate::cache::{self, OutputRef};
use crate::limits::Limits;
use crate::record;
use crate::run::{RunId, StoreArtifacts};
use crate::sandbox::{self, AttemptSpec, Sandbox};
use crate::scheduler;
use crate::store::{Digest, Store};

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
        ("wasmtime_version", sandbox::wasmtime_version()),
        ("determinism", cache::DETERMINISM),
    ];
    for (key, now) in current {
        let then = header[key].as_str().unwrap_or("(unrecorded)");
        if then != now {
            environment.push(format!("{key} was {then:?}, is {now:?}"));
        }
    }

    // The last attempt of each step that ended succeeded or cached.
    let mut started_events: BTreeMap<String, &Value> = BTreeMap::new();
    let mut steps = Vec::new();
    for event in &events {
        match event["type"].as_str() {
            Some("step-started") => {
                if let Some(name) = event["step"].as_str() {
                    started_events.insert(name.to_string(), event);
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
                    name,
                });
            }
            _ => {}
        }
    }

    let store = Arc::new(Store::open(home).map_err(|e| ReplayError::Engine(e.to_string()))?);
    let cache_dir = compile_cache.unwrap_or_else(|| home.join("components"));
    let replayer = Replayer {
        steps: &steps,
        store: store.clone(),
        cache_dir,
        sandbox: OnceLock::new(),
        results: Mutex::new(vec![None; steps.len()]),
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
    let report = ReplayReport {
        run_id: RunId::generate(),
        replay_of: run.clone(),
        verdict,
        environment,
        first_divergence,
        steps: results,
        wall_ms: started.elapsed().as_millis() as u64,
    };
    let out = home
        .join("runs")
        .join(report.run_id.as_str())
        .join("replay.json");
    let bytes = serde_json::to_vec_pretty(&report).expect("reports serialize");
    crate::store::write_atomic(&out, &bytes, true)
        .map_err(|e| ReplayError::Engine(e.to_string()))?;
    Ok(report)
}

struct Replayer<'a> {
    steps: &'a [Recorded],
    store: Arc<Store>,
    cache_dir: PathBuf,
    sandbox: OnceLock<Result<Sandbox, String>>,
    results: Mutex<Vec<Option<StepReplay>>>,
}

impl Replayer<'_> {
    fn execute(&self, step: &Recorded) -> Result<BTreeMap<String, Digest>, String> {
        let sandbox = self
            .sandbox
            .get_or_init(|| Sandbox::new(&self.cache_dir, 2).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)?;
        let wasm = self
            .store
            .read_bytes(&step.component)
            .map_err(|e| format!("component {}: {e}", step.component))?;
        let path = step
            .component_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(step.component.to_string()));
        let prepared = sandbox
            .prepare(&path, &wasm, &step.component)
            .map_err(|e| e.to_string())?;
        let spec = AttemptSpec {
            step: step.name.clone(),
            attempt: 1,
            inputs: step
                .inputs
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
            run_seed: step.run_seed,
            cancel: None,
        };
        let result = sandbox.run(
            &prepared,
            &spec,
            Box::new(StoreArtifacts {
                store: self.store.clone(),
            }),
            Box::new(NoGpuGrant {
                step: step.name.clone(),
            }),
        );
        let outcome = result.outcome.map_err(|f| f.message)?;
        outcome
            .outputs
            .into_iter()
            .map(|(k, o)| {
                o.digest
                    .parse::<Digest>()
                    .map(|d| (k, d))
                    .map_err(|e| e.to_string())
            })
            .collect()
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
        let (found, error) = match self.execute(step) {
            Ok(found) => (found, None),
            Err(e) => (BTreeMap::new(), Some(sandbox::sanitize(&e))),
        };
        let verdict = if error.is_none() && found == step.expected {
            Verdict::Identical
        } else {
            Verdict::Diverged
        };
        self.results.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(StepReplay {
            name: step.name.clone(),
            verdict,
            expected: step.expected.clone(),
            found,
            drift,
            error,
        });
        scheduler::Outcome::Succeeded
    }

    fn skipped(&self, _step: usize, _why: scheduler::Skip) {}
}
