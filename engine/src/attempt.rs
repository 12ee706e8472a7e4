//! One step attempt as a self-contained unit: a serialisable [`Request`]
//! in, a serialisable [`Outcome`] out, run by [`run`] against a store.
//!
//! Invariant: the [`Description`] inside a request holds everything the
//! guest can observe during the attempt and everything that decides whether
//! it succeeds, and nothing else; the cache key is the sha256 of its
//! canonical JSON ([`Description::key`]). What the sandbox is handed is
//! derived from the description alone (plus the attempt number and the time
//! budget, which a guest cannot observe), so the key cannot drift from what
//! ran. The run, the replay and the service all execute steps through
//! [`run`]; a later `sluice exec-step` runs the same function in another
//! process from a request stored by digest.
//! Boundary: prepares nothing and records nothing — the caller resolves the
//! component, writes the record and the cache; this module reads inputs from
//! and writes outputs and logs to the store.
//!
//! # What is in the key, and why
//!
//! A guest reaches the world through `wit/step.wit` (via `StepHost`) and
//! WASI. Each field of [`Description`] answers one thing it can see:
//!
//! | field | what the guest observes through it |
//! | --- | --- |
//! | `version` | [`CACHE_VERSION`]: bumped when the meaning of the key changes |
//! | `engine` | sluice and wasmtime versions, the WIT world and [`DETERMINISM`]: host behaviour (messages, WASI semantics, float canonicalisation) |
//! | `host` | host constants a guest can detect: read chunk size, metric text cap (media types longer are refused), and the caps that end an attempt (metric points, host calls, handles, stack, table elements) |
//! | `component` | the code itself |
//! | `step` | the step name: `argv[0]`, the seeds, and the text of every host error message |
//! | `args` | `std::env::args()` exactly as the sandbox passes them |
//! | `answers` | the virtual clocks' start and step and the random seeds (derived from run seed + step name), as the record keeps them |
//! | `params` | `params.get`/`params.all` |
//! | `inputs` | `artifacts.inputs()`: name, digest, size and media type of each input (and so its bytes) |
//! | `outputs` | `artifacts.outputs()` and which `create` calls are refused |
//! | `limits` | memory, fuel and output bytes decide success (past them the attempt traps, so a hit must not report success where execution fails); the log cap is visible (a write past it fails and the guest can go on); the time limit is kept out (a success under it is the same bytes, and it depends on the machine) except for steps with a gpu grant, where it bounds each job's deadline and a guest sees a `timed-out` job |
//! | `gpu` | the grant: which worker, how many jobs (`quota` answers) |
//!
//! Not in the key, because a guest cannot observe it: the attempt number
//! (seeds deliberately exclude it), the run id, the wall-clock time, stdin
//! (always empty), the environment (always empty), the working directory
//! (none) and preopened directories (none). What a gpu worker answers and
//! `gpu.devices()` depend on the machine; a grant in the key is the
//! step's request to cache such results anyway (and the cache entry keeps
//! the job records so the run stays replayable).
//!
//! Anything that changes what a guest sees must land here: add a field to
//! [`Description`] (which bumps every key) or bump [`CACHE_VERSION`].

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_host_api::{
    ArtifactPort, GpuPort, InputArtifact, InputBytes, NoGpuGrant, OutputSink, PortError, WitError,
};

use crate::artifact::OutputRef;
use crate::digest::Digest;
use crate::failure::{Failure, FailureClass};
use crate::gpu;
use crate::limits::{self, Limits};
use crate::sandbox::{self, AttemptSpec, HostAnswers, Prepared, Sandbox, Seeds};
use crate::spec::Grant;
use crate::store::{BlobWriter, PositionalReader, Store, StoreError};

/// Bumped whenever the meaning of a key or cache entry changes. 2: the key
/// became the digest of a [`Description`] (step name, args, seeds, input
/// sizes and media types, the log cap and host constants added).
pub const CACHE_VERSION: u32 = 2;

/// Names the determinism settings a cached result was produced under.
pub const DETERMINISM: &str = "nan-canonicalization,relaxed-simd-deterministic,no-threads,virtual-clocks-v1,chacha20-random-v1";

/// Everything one attempt of a step can observe, and everything that decides
/// whether it succeeds (see the module docs for why each field is here).
/// Its canonical JSON (fixed field order, maps sorted by key) is hashed into
/// the cache key; it is recorded as is in the run's `step-started` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    /// [`CACHE_VERSION`].
    pub version: u32,
    /// Versions and settings of the host.
    pub engine: EngineDescription,
    /// Host constants a guest can detect.
    pub host: HostConstants,
    /// Component digest.
    pub component: Digest,
    /// The step name.
    pub step: String,
    /// The guest's `argv`.
    pub args: Vec<String>,
    /// The virtual clocks and random seeds.
    pub answers: HostAnswers,
    /// Resolved params.
    pub params: BTreeMap<String, String>,
    /// Inputs by name.
    pub inputs: BTreeMap<String, InputDescription>,
    /// Declared outputs, sorted and deduplicated (as `outputs()` answers).
    pub outputs: Vec<String>,
    /// The limits that decide success or that a guest can detect.
    pub limits: LimitsDescription,
    /// The step's gpu grant.
    pub gpu: Option<Grant>,
}

/// The host's versions and settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineDescription {
    /// The engine's version.
    pub sluice: String,
    /// The wasmtime version.
    pub wasmtime: String,
    /// The WIT world.
    pub world: String,
    /// [`DETERMINISM`].
    pub determinism: String,
}

impl EngineDescription {
    /// This engine.
    pub fn current() -> EngineDescription {
        EngineDescription {
            sluice: env!("CARGO_PKG_VERSION").to_string(),
            wasmtime: sandbox::wasmtime_version().to_string(),
            world: sluice_host_api::WORLD.to_string(),
            determinism: DETERMINISM.to_string(),
        }
    }
}

/// Host constants a guest can detect (by a read's chunk size, a refused
/// media type, a truncated tag, or a trap that ends a success).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConstants {
    /// [`sluice_host_api::READ_CHUNK_BYTES_MAX`].
    pub read_chunk_bytes: u64,
    /// [`sluice_host_api::METRIC_TEXT_BYTES_MAX`].
    pub metric_text_bytes: usize,
    /// [`sluice_host_api::METRIC_POINTS_MAX`].
    pub metric_points: usize,
    /// `limits::HOST_CALLS_MAX`.
    pub host_calls: u64,
    /// `limits::HANDLES_MAX`.
    pub handles: usize,
    /// `limits::STACK_BYTES_MAX`.
    pub stack_bytes: usize,
    /// [`sandbox::TABLE_ELEMENTS_MAX`].
    pub table_elements: usize,
}

impl HostConstants {
    /// This host's.
    pub fn current() -> HostConstants {
        HostConstants {
            read_chunk_bytes: sluice_host_api::READ_CHUNK_BYTES_MAX,
            metric_text_bytes: sluice_host_api::METRIC_TEXT_BYTES_MAX,
            metric_points: sluice_host_api::METRIC_POINTS_MAX,
            host_calls: limits::HOST_CALLS_MAX,
            handles: limits::HANDLES_MAX,
            stack_bytes: limits::STACK_BYTES_MAX,
            table_elements: sandbox::TABLE_ELEMENTS_MAX,
        }
    }
}

/// One input as `artifacts.inputs()` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputDescription {
    /// `sha256:<hex>`.
    pub digest: Digest,
    /// Bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
}

/// The limits in a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsDescription {
    /// Linear memory, MiB (decides success).
    pub memory_mib: u64,
    /// Fuel (decides success).
    pub fuel: u64,
    /// All outputs together, MiB (decides success).
    pub output_mib: u64,
    /// Captured stdout/stderr, KiB each (a write past it fails visibly).
    pub log_kib: u64,
    /// Seconds; only for a step with a gpu grant (a job's deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

/// What a run or a replay knows about a step before an attempt: the input
/// to [`Plan::request`], the one place that decides what a key covers.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The component's digest.
    pub component: Digest,
    /// The step name.
    pub step: String,
    /// Wired inputs by name.
    pub inputs: BTreeMap<String, OutputRef>,
    /// Declared outputs.
    pub outputs: Vec<String>,
    /// Resolved params.
    pub params: BTreeMap<String, String>,
    /// Limits.
    pub limits: Limits,
    /// The run's seed.
    pub run_seed: u64,
    /// The gpu grant.
    pub gpu: Option<Grant>,
}

impl Plan {
    /// The request for attempt `attempt` (1-based).
    pub fn request(&self, attempt: u32) -> Request {
        let mut outputs = self.outputs.clone();
        outputs.sort_unstable();
        outputs.dedup();
        let description = Description {
            version: CACHE_VERSION,
            engine: EngineDescription::current(),
            host: HostConstants::current(),
            component: self.component,
            step: self.step.clone(),
            args: sandbox::guest_args(&self.step)
                .into_iter()
                .map(str::to_string)
                .collect(),
            answers: HostAnswers::of(&Seeds::derive(self.run_seed, &self.step)),
            params: self.params.clone(),
            inputs: self
                .inputs
                .iter()
                .map(|(name, o)| {
                    (
                        name.clone(),
                        InputDescription {
                            digest: o.digest,
                            size: o.size,
                            media_type: o.media_type.clone(),
                        },
                    )
                })
                .collect(),
            outputs,
            limits: LimitsDescription {
                memory_mib: self.limits.memory_mib,
                fuel: self.limits.fuel,
                output_mib: self.limits.output_mib,
                log_kib: self.limits.log_kib,
                timeout_s: self.gpu.as_ref().map(|_| self.limits.timeout_s),
            },
            gpu: self.gpu.clone(),
        };
        Request {
            description,
            attempt,
            timeout_s: self.limits.timeout_s,
        }
    }
}

impl Description {
    /// The canonical bytes: compact JSON of the description as a
    /// `serde_json::Value` (maps sorted by key), so equal descriptions give
    /// equal bytes and the copy in a run's `step-started` event,
    /// re-serialized, gives these same bytes — an auditor can recompute
    /// every recorded cache key.
    pub fn canonical_json(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("attempt descriptions serialize");
        serde_json::to_vec(&value).expect("values serialize")
    }

    /// The cache key: sha256 of [`Self::canonical_json`].
    pub fn key(&self) -> Digest {
        Digest::of(&self.canonical_json())
    }

    /// Input refs by name, as the record and the gpu port use them.
    pub fn input_refs(&self) -> BTreeMap<String, OutputRef> {
        self.inputs
            .iter()
            .map(|(name, i)| {
                (
                    name.clone(),
                    OutputRef {
                        digest: i.digest,
                        size: i.size,
                        media_type: i.media_type.clone(),
                    },
                )
            })
            .collect()
    }
}

/// One attempt to run: the description (what runs) plus what a guest cannot
/// observe (which attempt this is and how long it may take).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// What runs; its digest is the cache key.
    pub description: Description,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Wall-clock budget, seconds.
    pub timeout_s: u64,
}

/// A request this engine cannot run as described: running it anyway would
/// produce results under a key that does not describe them.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Another cache version, engine, WIT world, determinism settings or
    /// host constants.
    #[error("attempt description of step `{step}` is for another engine: {what}")]
    OtherEngine {
        /// The step.
        step: String,
        /// What differs.
        what: String,
    },
    /// The description contradicts itself.
    #[error("attempt description of step `{step}` is inconsistent: {what}")]
    Inconsistent {
        /// The step.
        step: String,
        /// The contradiction.
        what: String,
    },
}

impl Request {
    /// The sandbox's view of this request, derived from the description
    /// alone (plus attempt number, time budget and the cancel flag).
    pub fn attempt_spec(
        &self,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<AttemptSpec, RequestError> {
        let d = &self.description;
        let other = |what: String| RequestError::OtherEngine {
            step: crate::quoting::escape_controls(&d.step, 64),
            what,
        };
        let inconsistent = |what: String| RequestError::Inconsistent {
            step: crate::quoting::escape_controls(&d.step, 64),
            what,
        };
        if d.version != CACHE_VERSION {
            return Err(other(format!(
                "cache version {} (this engine: {CACHE_VERSION})",
                d.version
            )));
        }
        if d.engine != EngineDescription::current() {
            return Err(other(format!(
                "{:?} (this engine: {:?})",
                d.engine,
                EngineDescription::current()
            )));
        }
        if d.host != HostConstants::current() {
            return Err(other("host constants differ".into()));
        }
        let seeds = d.answers.seeds().map_err(|e| other(e.to_string()))?;
        if d.args != sandbox::guest_args(&d.step) {
            return Err(inconsistent(format!("args {:?}", d.args)));
        }
        if d.gpu.is_some() != d.limits.timeout_s.is_some()
            || d.limits.timeout_s.is_some_and(|t| t != self.timeout_s)
        {
            return Err(inconsistent(
                "the time limit must be described exactly when a gpu grant is".into(),
            ));
        }
        if self.attempt == 0 {
            return Err(inconsistent("attempt 0 (attempts count from 1)".into()));
        }
        if let Some((key, value, ceiling)) = self.limits().out_of_bounds() {
            return Err(inconsistent(format!(
                "limit `{key}` is {value}, above its ceiling {ceiling}"
            )));
        }
        Ok(AttemptSpec {
            step: d.step.clone(),
            attempt: self.attempt,
            inputs: d
                .inputs
                .iter()
                .map(|(name, i)| InputArtifact {
                    name: name.clone(),
                    digest: i.digest.to_string(),
                    size: i.size,
                    media_type: i.media_type.clone(),
                })
                .collect(),
            outputs: d.outputs.clone(),
            params: d.params.clone(),
            limits: self.limits(),
            seeds,
            cancel,
        })
    }

    /// The limits the sandbox enforces.
    pub fn limits(&self) -> Limits {
        let l = &self.description.limits;
        Limits {
            memory_mib: l.memory_mib,
            fuel: l.fuel,
            timeout_s: self.timeout_s,
            output_mib: l.output_mib,
            log_kib: l.log_kib,
        }
    }
}

/// Where an attempt runs: the sandbox, the prepared component (whose digest
/// must be the description's), the store, and the gpu backend for a grant.
pub struct Env<'a> {
    /// The sandbox.
    pub sandbox: &'a Sandbox,
    /// The component, prepared by the caller.
    pub component: &'a Prepared,
    /// Inputs are read from and outputs and logs written to this store.
    pub store: &'a Arc<Store>,
    /// The gpu backend, asked for only when the step has a grant.
    pub gpu: &'a dyn Fn() -> Arc<gpu::Backend>,
    /// Counts gpu jobs across attempts (job ids).
    pub gpu_jobs: &'a Arc<AtomicU64>,
    /// Set to stop the attempt (its run was cancelled).
    pub cancel: Option<Arc<AtomicBool>>,
}

/// What an attempt produced, serialisable so another process can return it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Why it failed; `None` for a success.
    pub failure: Option<Failure>,
    /// Outputs by name (empty for a failure).
    pub outputs: BTreeMap<String, OutputRef>,
    /// Final scalar metrics (a series' last point when not set directly).
    pub metrics: BTreeMap<String, f64>,
    /// Metric series.
    pub series: BTreeMap<String, Vec<(u64, f64)>>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Bytes read from inputs.
    pub bytes_in: u64,
    /// Bytes written to outputs.
    pub bytes_out: u64,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Peak linear memory, bytes.
    pub memory_peak_bytes: u64,
    /// Wall time of instantiate + run, milliseconds.
    pub wall_ms: u64,
    /// Instantiation time, microseconds.
    pub instantiate_us: u64,
    /// Virtual time the guest slept, nanoseconds.
    pub slept_ns: u64,
    /// Captured stdout in the store, if any.
    pub stdout: Option<Digest>,
    /// Captured stderr in the store, if any.
    pub stderr: Option<Digest>,
    /// Digest of the native code that ran.
    pub compiled: Option<Digest>,
    /// How that native code was obtained.
    pub compiled_by: String,
    /// The gpu jobs of the attempt (empty without a grant).
    pub gpu_jobs: Vec<gpu::JobReport>,
}

impl Outcome {
    /// An attempt that could not start.
    pub fn failed(failure: Failure) -> Outcome {
        Outcome {
            failure: Some(failure),
            ..Outcome::default()
        }
    }
}

/// Runs one attempt: the seam every execution goes through.
pub fn run(request: &Request, env: &Env<'_>) -> Outcome {
    let spec = match request.attempt_spec(env.cancel.clone()) {
        Ok(spec) => spec,
        Err(e) => return Outcome::failed(Failure::engine(e.to_string())),
    };
    let d = &request.description;
    if env.component.digest != d.component {
        return Outcome::failed(Failure::engine(format!(
            "step `{}`: the prepared component is {}, the description names {}",
            spec.step, env.component.digest, d.component
        )));
    }
    let ledger = gpu::Ledger::default();
    let gpu_port: Box<dyn GpuPort> = match &d.gpu {
        None => Box::new(NoGpuGrant {
            step: spec.step.clone(),
        }),
        Some(grant) => {
            let budget = Duration::from_secs(request.timeout_s);
            Box::new(
                gpu::AttemptGpu::new(
                    &spec.step,
                    grant.clone(),
                    budget,
                    d.inputs.values().map(|i| i.digest).collect(),
                    (env.gpu)(),
                    env.store.clone(),
                    env.gpu_jobs.clone(),
                    ledger.clone(),
                )
                .bounded_by(env.cancel.clone(), Instant::now() + budget),
            )
        }
    };
    let result = env.sandbox.run(
        env.component,
        &spec,
        Box::new(StoreArtifacts::new(env.store.clone())),
        gpu_port,
    );
    let mut outcome = Outcome {
        fuel_used: result.fuel_used,
        memory_peak_bytes: result.memory_peak_bytes,
        wall_ms: result.wall_ms,
        instantiate_us: result.instantiate_us,
        slept_ns: result.slept_ns,
        stdout: store_log(env.store, &result.stdout),
        stderr: store_log(env.store, &result.stderr),
        compiled: Some(env.component.compiled),
        compiled_by: env.component.compiled_by.describe(),
        gpu_jobs: if d.gpu.is_some() {
            ledger.reports()
        } else {
            Vec::new()
        },
        ..Outcome::default()
    };
    match result.outcome {
        Ok(host) => {
            outcome.bytes_in = host.bytes_in;
            outcome.bytes_out = host.bytes_out;
            outcome.outputs = host
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
            outcome.metrics = host.metrics.scalars;
            for (name, points) in &host.metrics.series {
                if let Some(last) = points.last() {
                    outcome.metrics.entry(name.clone()).or_insert(last.1);
                }
            }
            outcome.series = host.metrics.series;
            outcome.tags = host.metrics.tags;
        }
        Err(failure) => {
            if let Some(p) = result.partial {
                outcome.bytes_in = p.bytes_in;
                outcome.bytes_out = p.bytes_out;
                outcome.metrics = p.metrics.scalars;
            }
            outcome.failure = Some(failure);
        }
    }
    outcome
}

/// Prepares the component a description names from the store's copy:
/// `path` is what messages call it.
pub fn prepare_from_store(
    sandbox: &Sandbox,
    store: &Store,
    component: &Digest,
    path: &std::path::Path,
) -> Result<Prepared, Failure> {
    let wasm = store
        .read_bytes(component)
        .map_err(|e| Failure::engine(format!("component {component}: {e}")))?;
    sandbox
        .prepare(path, &wasm, component)
        .map_err(|e| prepare_failure(e.to_string()))
}

/// The class of a failure to prepare a component: an invalid component is
/// the step's fault, anything else the engine's.
pub fn prepare_failure(message: String) -> Failure {
    let class = if message.starts_with("invalid component") {
        FailureClass::Step
    } else {
        FailureClass::Engine
    };
    Failure { class, message }
}

fn store_log(store: &Store, bytes: &[u8]) -> Option<Digest> {
    if bytes.is_empty() {
        return None;
    }
    match store.put_bytes(bytes) {
        Ok((d, _)) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "cannot store captured log");
            None
        }
    }
}

/// The artifact port over the content-addressed store.
///
/// The first open of a digest in an attempt verifies the blob
/// ([`Store::open_verified`]: hashed in full before its first byte is
/// served, unless this store hashed that very file recently) and keeps the
/// file open; later opens (a second pass, an epoch, a seek) read that same
/// file at their own offsets, so they serve the bytes that were verified
/// without hashing them again, even if the path is replaced.
pub(crate) struct StoreArtifacts {
    store: Arc<Store>,
    verified: BTreeMap<Digest, Arc<std::fs::File>>,
}

impl StoreArtifacts {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        StoreArtifacts {
            store,
            verified: BTreeMap::new(),
        }
    }
}

impl ArtifactPort for StoreArtifacts {
    fn open(&mut self, input: &InputArtifact) -> Result<Box<dyn InputBytes>, PortError> {
        let digest: Digest = input
            .digest
            .parse()
            .map_err(|e: crate::digest::BadDigest| PortError::Engine(e.to_string()))?;
        let file = match self.verified.get(&digest) {
            Some(file) => file.clone(),
            None => match self.store.open_verified(&digest) {
                Ok(f) => self.verified.entry(digest).or_insert(Arc::new(f)).clone(),
                Err(StoreError::NotFound(d)) => {
                    return Err(PortError::Refused(WitError::NotFound(format!(
                        "input `{}`: artifact {d} is not in the store",
                        input.name
                    ))));
                }
                Err(e) => return Err(PortError::Engine(format!("input `{}`: {e}", input.name))),
            },
        };
        Ok(Box::new(io::BufReader::with_capacity(
            64 * 1024,
            PositionalReader { file, offset: 0 },
        )))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Plan {
        Plan {
            component: Digest::of(b"component"),
            step: "alpha".into(),
            inputs: BTreeMap::from([(
                "in".to_string(),
                OutputRef {
                    digest: Digest::of(b"data"),
                    size: 4,
                    media_type: "text/plain".into(),
                },
            )]),
            outputs: vec!["out".into()],
            params: BTreeMap::from([("lr".to_string(), "0.1".to_string())]),
            limits: Limits::default(),
            run_seed: 0,
            gpu: None,
        }
    }

    fn key(plan: &Plan) -> Digest {
        plan.request(1).description.key()
    }

    #[test]
    fn key_changes_with_each_observable_part_and_only_then() {
        let plan = base();
        let base_key = key(&plan);
        // Not observable by the guest: attempt number, timeout (without a
        // gpu grant), the order outputs are declared in.
        assert_eq!(base_key, plan.request(3).description.key());
        let same = [
            Plan {
                limits: Limits {
                    timeout_s: 1,
                    ..plan.limits
                },
                ..plan.clone()
            },
            Plan {
                outputs: vec!["out".into(), "out".into()],
                ..plan.clone()
            },
        ];
        for p in &same {
            assert_eq!(base_key, key(p), "{p:?}");
        }
        let input = |f: &dyn Fn(&mut String, &mut OutputRef)| {
            let mut p = plan.clone();
            let (mut name, mut o) = p.inputs.pop_first().unwrap();
            f(&mut name, &mut o);
            p.inputs.insert(name, o);
            p
        };
        let limits = |l: Limits| Plan {
            limits: l,
            ..plan.clone()
        };
        let grant = Grant {
            worker: "cpu".into(),
            max_jobs: 1,
            min_free_memory_mib: 0,
        };
        let changed = [
            Plan {
                step: "beta".into(),
                ..plan.clone()
            },
            Plan {
                run_seed: 1,
                ..plan.clone()
            },
            Plan {
                params: BTreeMap::from([("lr".to_string(), "0.2".to_string())]),
                ..plan.clone()
            },
            Plan {
                params: BTreeMap::new(),
                ..plan.clone()
            },
            Plan {
                outputs: vec!["out".into(), "extra".into()],
                ..plan.clone()
            },
            Plan {
                inputs: BTreeMap::new(),
                ..plan.clone()
            },
            Plan {
                component: Digest::of(b"c2"),
                ..plan.clone()
            },
            input(&|n, _| *n = "other".into()),
            input(&|_, o| o.digest = Digest::of(b"atad")),
            input(&|_, o| o.size = 5),
            input(&|_, o| o.media_type = "text/csv".into()),
            limits(Limits {
                memory_mib: 64,
                ..plan.limits
            }),
            limits(Limits {
                fuel: 5,
                ..plan.limits
            }),
            limits(Limits {
                output_mib: 1,
                ..plan.limits
            }),
            limits(Limits {
                log_kib: 1,
                ..plan.limits
            }),
            Plan {
                gpu: Some(grant.clone()),
                ..plan.clone()
            },
            Plan {
                gpu: Some(Grant {
                    max_jobs: 2,
                    ..grant.clone()
                }),
                ..plan.clone()
            },
            // With a grant the timeout bounds each job's deadline: observable.
            Plan {
                gpu: Some(grant.clone()),
                limits: Limits {
                    timeout_s: 1,
                    ..plan.limits
                },
                ..plan.clone()
            },
        ];
        let mut keys = vec![base_key];
        keys.extend(changed.iter().map(key));
        let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "every change changes the key");
    }

    #[test]
    fn description_names_every_observable_in_its_canonical_json() {
        let plan = base();
        let d = plan.request(1).description;
        let json: serde_json::Value = serde_json::from_slice(&d.canonical_json()).unwrap();
        assert_eq!(json["version"], CACHE_VERSION);
        assert_eq!(json["step"], "alpha");
        assert_eq!(json["args"], serde_json::json!(["alpha"]));
        assert_eq!(json["inputs"]["in"]["media_type"], "text/plain");
        assert_eq!(json["inputs"]["in"]["size"], 4);
        assert_eq!(json["limits"]["log_kib"], plan.limits.log_kib);
        assert!(json["limits"].get("timeout_s").is_none());
        assert_eq!(
            json["answers"]["secure_random_seed"],
            hex::encode(Seeds::derive(0, "alpha").secure)
        );
        assert_eq!(json["engine"]["world"], sluice_host_api::WORLD);
    }

    /// The key of a fixed description is pinned: a change to what keys
    /// cover must be deliberate (bump [`CACHE_VERSION`] and this value).
    /// When the description became this owned, deserialisable type, a
    /// two-step chain run by the engines before and after had equal keys
    /// and equal `step-started` events.
    #[test]
    fn keys_are_pinned() {
        assert_eq!(
            key(&base()).to_string(),
            "sha256:03b904e6b6f12a418648ce445539dd138560f258aa3a20533a053d9c202c020a"
        );
    }

    #[test]
    fn a_request_round_trips_through_json_and_keeps_its_key() {
        let mut plan = base();
        plan.gpu = Some(Grant {
            worker: "cpu".into(),
            max_jobs: 2,
            min_free_memory_mib: 0,
        });
        let request = plan.request(2);
        let json = serde_json::to_vec(&request).unwrap();
        let back: Request = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, request);
        assert_eq!(back.description.key(), request.description.key());
        let spec = back.attempt_spec(None).unwrap();
        assert_eq!(spec.seeds, Seeds::derive(0, "alpha"));
        assert_eq!(spec.limits, plan.limits);
        assert_eq!(spec.attempt, 2);
    }

    #[test]
    fn requests_for_another_engine_or_contradicting_themselves_are_refused() {
        let request = base().request(1);
        let refuse = |f: &dyn Fn(&mut Request)| {
            let mut r = request.clone();
            f(&mut r);
            r.attempt_spec(None).unwrap_err().to_string()
        };
        assert_eq!(
            refuse(&|r| r.description.version = 1),
            "attempt description of step `alpha` is for another engine: cache version 1 (this engine: 2)"
        );
        assert!(
            refuse(&|r| r.description.engine.wasmtime = "1.0.0".into())
                .starts_with("attempt description of step `alpha` is for another engine: ")
        );
        assert_eq!(
            refuse(&|r| r.description.answers.sleep = "real".into()),
            "attempt description of step `alpha` is for another engine: host answers: clocks or sleep differ from this sandbox's (virtual clocks from 2020-01-01, 1 µs per read, virtual sleep)"
        );
        assert_eq!(
            refuse(&|r| r.description.answers.secure_random_seed = "00".into()),
            "attempt description of step `alpha` is for another engine: host answers: `secure_random_seed` is not 32 bytes of hex"
        );
        assert_eq!(
            refuse(&|r| r.description.args = vec!["other".into()]),
            "attempt description of step `alpha` is inconsistent: args [\"other\"]"
        );
        assert_eq!(
            refuse(&|r| r.description.limits.timeout_s = Some(5)),
            "attempt description of step `alpha` is inconsistent: the time limit must be described exactly when a gpu grant is"
        );
        assert_eq!(
            refuse(&|r| r.attempt = 0),
            "attempt description of step `alpha` is inconsistent: attempt 0 (attempts count from 1)"
        );
        // Bounds a spec enforces hold for requests that did not come from
        // one (another process's, later): no unbounded memory or time.
        assert_eq!(
            refuse(&|r| r.description.limits.memory_mib = 1 << 30),
            "attempt description of step `alpha` is inconsistent: limit `memory_mib` is 1073741824, above its ceiling 4096"
        );
        assert_eq!(
            refuse(&|r| r.timeout_s = 86_401),
            "attempt description of step `alpha` is inconsistent: limit `timeout_s` is 86401, above its ceiling 86400"
        );
        let unknown = serde_json::to_string(&request).unwrap().replacen(
            "\"attempt\":1",
            "\"attempt\":1,\"extra\":true",
            1,
        );
        assert!(
            serde_json::from_str::<Request>(&unknown)
                .unwrap_err()
                .to_string()
                .contains("unknown field `extra`")
        );
    }
}
