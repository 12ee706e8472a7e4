//! GPU jobs: the engine side of the WIT `gpu` interface.
//!
//! A step with a `gpu = { worker = "…" }` grant submits jobs through
//! [`AttemptGpu`] (the host-api `GpuPort`); a long-lived [`Dispatcher`]
//! (shared by every run of a process: a warm pool) runs each job on a
//! native worker process of that kind, speaking the JSON-lines protocol of
//! `examples/workers/PROTOCOL.md` ([`protocol`]), with workers kept in
//! per-kind pools ([`pool`]) started from the engine config ([`config`])
//! and watched by NVML ([`telemetry`]). Replays answer jobs from the record
//! instead ([`Backend::Recorded`]).
//!
//! Invariant: inputs and outputs cross only as paths into the store — every
//! input blob is verified before a worker sees its path, every reported
//! output is re-hashed (no symlinks, no path outside the job's output
//! directory) before it is ingested, and a mismatch fails the job. Every
//! job ends in exactly one final state with a message naming the offender;
//! a crashed, hung or misbehaving worker is killed and its slot respawned
//! lazily, and never takes the engine or another job down. Dropping an
//! unfinished job cancels it.
//! Boundary: runs worker processes and reads/writes the store; knows
//! nothing of the sandbox, the scheduler or the record (the runner records
//! the [`JobReport`]s).

pub mod config;
pub mod pool;
pub mod protocol;
pub mod telemetry;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_host_api::{
    Artifact, GpuJob, GpuPort, GpuUsage, JobResult, JobSpec, JobState, PortError, WitError,
};

use crate::artifact::OutputRef;
use crate::digest::Digest;
use crate::spec::{Grant, is_kind_name};
use crate::store::{Store, StoreError};

pub use config::{ConfigError, WorkerConfig};
pub use protocol::Hello;
pub use telemetry::{DeviceInfo, Usage};

/// The most GPUs one job may ask for (one `CUDA_VISIBLE_DEVICES` UUID).
pub const GPUS_PER_JOB_MAX: u32 = 1;
/// Largest `params-json` of a job spec.
pub const PARAMS_JSON_BYTES_MAX: usize = 64 * 1024;
/// Most inputs of one job.
pub const JOB_INPUTS_MAX: usize = 64;
/// Longest op name.
pub const OP_BYTES_MAX: usize = 64;
/// How long a worker has to answer a `cancel` before it is killed.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// Relative tolerance of `final_loss` when a rerun's device/library
/// fingerprint differs from the recorded one.
pub const LOSS_RELATIVE_TOLERANCE: f64 = 1e-3;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A job's state (the WIT `job-state`, in reports and records).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waiting for a worker.
    Queued,
    /// On a worker.
    Running,
    /// Outputs verified and stored.
    Succeeded,
    /// The worker failed, crashed or misbehaved.
    Failed,
    /// Cancelled by the step.
    Cancelled,
    /// Past its deadline.
    TimedOut,
}

impl State {
    /// The WIT value.
    pub fn to_wit(self) -> JobState {
        match self {
            State::Queued => JobState::Queued,
            State::Running => JobState::Running,
            State::Succeeded => JobState::Succeeded,
            State::Failed => JobState::Failed,
            State::Cancelled => JobState::Cancelled,
            State::TimedOut => JobState::TimedOut,
        }
    }

    /// The report name: `succeeded`, `timed-out`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed-out",
        }
    }
}

/// A job spec as the guest sent it, parsed: what the spec digest covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpecRecord {
    /// Worker kind.
    pub worker: String,
    /// Operation.
    pub op: String,
    /// Parameters (a JSON object).
    pub params: Value,
    /// Inputs (name, digest), in the order given.
    pub inputs: Vec<(String, Digest)>,
    /// GPUs asked for.
    pub gpus: u32,
    /// Free framebuffer asked for, MiB.
    pub min_free_memory_mib: u64,
    /// Deadline asked for, ms.
    pub timeout_ms: Option<u64>,
    /// Seed.
    pub seed: u64,
    /// Deterministic kernels.
    pub deterministic: bool,
}

impl JobSpecRecord {
    /// Checks a guest's spec; `Err` is the WIT error to answer.
    pub fn from_wit(spec: &JobSpec) -> Result<JobSpecRecord, WitError> {
        let invalid = |m: String| Err(WitError::Invalid(m));
        if !is_kind_name(&spec.worker) {
            return invalid(format!(
                "gpu job: worker {:?} is not a worker kind name",
                crate::quoting::escape_controls(&spec.worker, 64)
            ));
        }
        if spec.op.is_empty()
            || spec.op.len() > OP_BYTES_MAX
            || spec
                .op
                .contains(|c: char| c.is_control() || c.is_whitespace())
        {
            return invalid(format!(
                "gpu job: op {:?} must be 1-{OP_BYTES_MAX} printable bytes without spaces",
                crate::quoting::escape_controls(&spec.op, 64)
            ));
        }
        if spec.params_json.len() > PARAMS_JSON_BYTES_MAX {
            return invalid(format!(
                "gpu job `{}`: params-json is {} bytes; the limit is {PARAMS_JSON_BYTES_MAX}",
                spec.op,
                spec.params_json.len()
            ));
        }
        let params: Value = if spec.params_json.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            match serde_json::from_str(&spec.params_json) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return invalid(format!(
                        "gpu job `{}`: params-json must be a JSON object",
                        spec.op
                    ));
                }
                Err(e) => {
                    return invalid(format!(
                        "gpu job `{}`: params-json is not JSON: {e}",
                        spec.op
                    ));
                }
            }
        };
        if spec.inputs.len() > JOB_INPUTS_MAX {
            return invalid(format!(
                "gpu job `{}`: {} inputs; the limit is {JOB_INPUTS_MAX}",
                spec.op,
                spec.inputs.len()
            ));
        }
        let mut inputs = Vec::with_capacity(spec.inputs.len());
        let mut seen = BTreeSet::new();
        for (name, digest) in &spec.inputs {
            if !is_kind_name(name) || !seen.insert(name.as_str()) {
                return invalid(format!(
                    "gpu job `{}`: input name {:?} is invalid or repeated",
                    spec.op,
                    crate::quoting::escape_controls(name, 64)
                ));
            }
            let Ok(d) = digest.parse::<Digest>() else {
                return invalid(format!(
                    "gpu job `{}`: input `{name}`: {:?} is not a sha256:<64 hex> digest",
                    spec.op,
                    crate::quoting::escape_controls(digest, 80)
                ));
            };
            inputs.push((name.clone(), d));
        }
        if spec.gpus > GPUS_PER_JOB_MAX {
            return invalid(format!(
                "gpu job `{}`: asks for {} GPUs; a job gets at most {GPUS_PER_JOB_MAX}",
                spec.op, spec.gpus
            ));
        }
        if spec.timeout_ms == Some(0) {
            return invalid(format!(
                "gpu job `{}`: timeout-ms must be positive",
                spec.op
            ));
        }
        Ok(JobSpecRecord {
            worker: spec.worker.clone(),
            op: spec.op.clone(),
            params,
            inputs,
            gpus: spec.gpus,
            min_free_memory_mib: spec.min_free_memory_mib,
            timeout_ms: spec.timeout_ms,
            seed: spec.seed,
            deterministic: spec.deterministic,
        })
    }

    /// sha256 of the canonical JSON (object keys sorted).
    pub fn digest(&self) -> Digest {
        Digest::of(&serde_json::to_vec(self).expect("job specs serialize"))
    }
}

/// Everything known about one job: what the run record keeps and
/// `sluice run --json` prints under the step's `gpu.jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// Job id, unique within the run (`j1`, `j2`, ...).
    pub id: String,
    /// Worker kind.
    pub worker: String,
    /// Operation.
    pub op: String,
    /// Final state.
    pub state: State,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// sha256 of the canonical job spec.
    pub spec_digest: Digest,
    /// The job spec.
    pub spec: JobSpecRecord,
    /// From the `run` line to the `result`, ms.
    pub wall_ms: u64,
    /// From `submit` to the `run` line written to the worker, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_us: Option<u64>,
    /// Whether an idle (warm) worker took it.
    #[serde(default)]
    pub warm: bool,
    /// The worker process's spawn number in the engine process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_instance: Option<u64>,
    /// The worker's `hello` (versions, device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello: Option<Hello>,
    /// sha256 over the worker's device kind and name and its versions: equal
    /// fingerprints promise bitwise-equal deterministic results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Digest>,
    /// Where it ran, for people: `cpu: x86_64 (2 threads)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Verified outputs in the store, by name.
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputRef>,
    /// The worker's metrics (a JSON object).
    #[serde(default)]
    pub metrics: Value,
    /// `progress` lines received.
    #[serde(default)]
    pub progress_lines: u64,
    /// NVML telemetry of the job's GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Model FLOPs utilisation: `model_flops` / wall / device peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    /// The job's stderr log (capped) in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Digest>,
    /// Answered from a run record, not executed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl JobReport {
    fn new(id: &str, spec: &JobSpecRecord, spec_digest: Digest) -> JobReport {
        JobReport {
            id: id.to_string(),
            worker: spec.worker.clone(),
            op: spec.op.clone(),
            state: State::Queued,
            message: None,
            spec_digest,
            spec: spec.clone(),
            wall_ms: 0,
            dispatch_us: None,
            warm: false,
            worker_instance: None,
            hello: None,
            fingerprint: None,
            device: None,
            outputs: BTreeMap::new(),
            metrics: Value::Object(Default::default()),
            progress_lines: 0,
            usage: None,
            mfu: None,
            log: None,
            replayed: false,
        }
    }

    /// The record's copy: everything but the telemetry timeline.
    pub fn for_record(&self) -> JobReport {
        let mut r = self.clone();
        if let Some(u) = &mut r.usage {
            u.timeline.clear();
        }
        r
    }

    /// A scalar metric the worker reported.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).and_then(Value::as_f64)
    }

    /// The WIT result the guest gets.
    pub fn to_wit(&self) -> JobResult {
        JobResult {
            state: self.state.to_wit(),
            outputs: self
                .outputs
                .iter()
                .map(|(name, o)| Artifact {
                    name: name.clone(),
                    digest: o.digest.to_string(),
                    size: o.size,
                    media_type: o.media_type.clone(),
                })
                .collect(),
            metrics_json: if self.metrics.is_object() {
                self.metrics.to_string()
            } else {
                "{}".to_string()
            },
            usage: self.usage.as_ref().map(|u| GpuUsage {
                samples: u.samples,
                util_mean: u.util_mean,
                mem_util_mean: u.mem_util_mean,
                fb_used_max_bytes: u.fb_used_max_bytes,
                energy_mj: u.energy_mj,
                sm_active_mean: u.sm_active_mean,
            }),
            wall_ms: self.wall_ms,
            message: self.message.clone(),
        }
    }
}

/// The `gpu` part of a step report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    /// Whether NVML telemetry was available.
    pub available: bool,
    /// Why not (`gpu telemetry unavailable: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The attempt's jobs, in submission order.
    pub jobs: Vec<JobReport>,
}

impl GpuReport {
    /// A report over `jobs` with the process's telemetry availability.
    pub fn new(jobs: Vec<JobReport>) -> GpuReport {
        let availability = telemetry::availability();
        GpuReport {
            available: availability.is_ok(),
            reason: availability.err(),
            jobs,
        }
    }
}

/// The device/driver/library fingerprint of a worker (see
/// [`JobReport::fingerprint`]).
pub fn fingerprint(hello: &Hello) -> Digest {
    let canonical = serde_json::json!({
        "protocol": hello.protocol,
        "worker": hello.worker,
        "device_kind": hello.device.kind,
        "device_name": hello.device.name,
        "versions": hello.versions,
    });
    Digest::of(canonical.to_string().as_bytes())
}

fn describe_device(hello: &Hello) -> String {
    let d = &hello.device;
    let name = crate::quoting::escape_controls(&d.name, 120);
    match &d.uuid {
        Some(u) => format!(
            "{}: {name} ({})",
            crate::quoting::escape_controls(&d.kind, 16),
            crate::quoting::escape_controls(u, 64)
        ),
        None => format!("{}: {name}", crate::quoting::escape_controls(&d.kind, 16)),
    }
}

#[derive(Debug)]
struct JobStatus {
    state: State,
    cancel: bool,
    worker: Option<(Arc<pool::Inbox>, u64)>,
    report: Option<JobReport>,
}

/// One job's shared state: the job's thread writes it, handles read it.
#[derive(Debug)]
struct JobShared {
    id: String,
    status: Mutex<JobStatus>,
    done: Condvar,
}

impl JobShared {
    fn new(id: &str) -> JobShared {
        JobShared {
            id: id.to_string(),
            status: Mutex::new(JobStatus {
                state: State::Queued,
                cancel: false,
                worker: None,
                report: None,
            }),
            done: Condvar::new(),
        }
    }

    fn finished(report: JobReport) -> JobShared {
        let s = JobShared::new(&report.id);
        {
            let mut st = lock(&s.status);
            st.state = report.state;
            st.report = Some(report);
        }
        s
    }

    fn cancel_requested(&self) -> bool {
        lock(&self.status).cancel
    }

    fn finish(&self, report: JobReport) {
        let mut st = lock(&self.status);
        st.state = report.state;
        st.worker = None;
        st.report = Some(report);
        drop(st);
        self.done.notify_all();
    }

    fn wait(&self) -> JobReport {
        let mut st = lock(&self.status);
        loop {
            if let Some(r) = &st.report {
                return r.clone();
            }
            st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The final report if the job ends within `within`.
    fn wait_for(&self, within: Duration) -> Option<JobReport> {
        let st = lock(&self.status);
        let (st, _) = self
            .done
            .wait_timeout_while(st, within, |st| st.report.is_none())
            .unwrap_or_else(|p| p.into_inner());
        st.report.clone()
    }
}

/// What a job needs besides its spec.
#[derive(Debug)]
pub struct JobRequest {
    /// Job id (`j1`).
    pub id: String,
    /// The checked spec.
    pub spec: JobSpecRecord,
    /// Effective free-memory floor (the job's and the grant's maximum), MiB.
    pub min_free_memory_mib: u64,
    /// The engine-enforced deadline, from the `run` line.
    pub deadline: Duration,
    /// Where inputs are read from and outputs go.
    pub store: Arc<Store>,
}

struct Inner {
    config: WorkerConfig,
    scratch: PathBuf,
    pool: pool::Pool,
    scratch_seq: AtomicU64,
}

/// Runs gpu jobs on pools of warm worker processes. Create one per process
/// (the CLI per command, a server once) and share it with `Arc`; dropping
/// the last handle shuts idle workers down.
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("kinds", &self.inner.config.kinds().collect::<Vec<_>>())
            .field("scratch", &self.inner.scratch)
            .field("workers_started", &self.inner.pool.spawned())
            .finish()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.inner.pool.close();
    }
}

impl Dispatcher {
    /// A dispatcher for the worker kinds of `config`; job output
    /// directories are created under `scratch`.
    pub fn new(config: WorkerConfig, scratch: PathBuf) -> Dispatcher {
        Dispatcher {
            inner: Arc::new(Inner {
                config,
                scratch,
                pool: pool::Pool::default(),
                scratch_seq: AtomicU64::new(0),
            }),
        }
    }

    /// Worker processes started so far (a replay answered from the record
    /// starts none).
    pub fn workers_started(&self) -> u64 {
        self.inner.pool.spawned()
    }

    /// Starts a job on its own thread and returns at once.
    pub fn submit(&self, request: JobRequest) -> JobHandle {
        let submitted = Instant::now();
        let shared = Arc::new(JobShared::new(&request.id));
        let mut fallback = JobReport::new(&request.id, &request.spec, request.spec.digest());
        let mut panicked = fallback.clone();
        let inner = self.inner.clone();
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("sluice-gpu-{}", request.id))
            .spawn(move || {
                // A bug here must not leave a waiter blocked forever.
                let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_job(&inner, &thread_shared, &request, submitted)
                }))
                .unwrap_or_else(|_| {
                    panicked.state = State::Failed;
                    panicked.message = Some(format!(
                        "job {}: engine bug: the job's thread panicked",
                        panicked.id
                    ));
                    panicked
                });
                thread_shared.finish(report);
            });
        if let Err(e) = spawned {
            fallback.state = State::Failed;
            fallback.message = Some(format!("job {}: cannot start its thread: {e}", fallback.id));
            shared.finish(fallback);
        }
        JobHandle {
            shared,
            inner: Some(self.inner.clone()),
        }
    }
}

/// A submitted job.
#[derive(Debug)]
pub struct JobHandle {
    shared: Arc<JobShared>,
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dispatcher")
    }
}

impl JobHandle {
    fn answered(report: JobReport) -> JobHandle {
        JobHandle {
            shared: Arc::new(JobShared::finished(report)),
            inner: None,
        }
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The current state, without blocking.
    pub fn state(&self) -> State {
        lock(&self.shared.status).state
    }

    /// Blocks until the job ends.
    pub fn wait(&self) -> JobReport {
        self.shared.wait()
    }

    /// The final report, if the job ended.
    pub fn report(&self) -> Option<JobReport> {
        lock(&self.shared.status).report.clone()
    }

    /// Asks the job to stop and waits for it to end: a queued job ends
    /// without starting; a running one gets a `cancel` line and
    /// [`CANCEL_GRACE`] to answer before its worker is killed.
    pub fn cancel(&self) -> JobReport {
        {
            let mut st = lock(&self.shared.status);
            if let Some(r) = &st.report {
                return r.clone();
            }
            st.cancel = true;
            if let Some((inbox, key)) = &st.worker {
                inbox.request_cancel(*key);
            }
        }
        if let Some(inner) = &self.inner {
            inner.pool.wake();
        }
        self.shared.wait()
    }
}

/// How a job on a worker ended, before outputs are looked at.
enum Ending {
    Result(protocol::JobOutcome),
    Malformed(String),
    Crashed,
    Deadline,
    CancelIgnored,
}

fn run_job(inner: &Inner, shared: &JobShared, req: &JobRequest, submitted: Instant) -> JobReport {
    let spec = &req.spec;
    let mut report = JobReport::new(&req.id, spec, spec.digest());
    let fail = |mut report: JobReport, state: State, message: String| {
        report.state = state;
        report.message = Some(message);
        report
    };
    let kind = spec.worker.as_str();
    let Some(cmd) = inner.config.get(kind) else {
        let known: Vec<&str> = inner.config.kinds().collect();
        return fail(
            report,
            State::Failed,
            format!(
                "job {}: no worker kind `{kind}` is configured; known kinds: {} (add [workers.{kind}] to the engine config)",
                req.id,
                known.join(", ")
            ),
        );
    };
    let inputs = match resolve_inputs(&req.store, &spec.inputs) {
        Ok(i) => i,
        Err(m) => return fail(report, State::Failed, format!("job {}: {m}", req.id)),
    };
    let mut no_gpu_reason = None;
    let gpu = if spec.gpus > 0 {
        match telemetry::place(&telemetry::devices(), req.min_free_memory_mib) {
            telemetry::Placement::Gpu(d) => Some(d),
            telemetry::Placement::NoGpu(reason) => {
                no_gpu_reason = Some(reason);
                None
            }
            telemetry::Placement::NoneFits(devices) => {
                let free: Vec<String> = devices
                    .iter()
                    .map(|d| format!("{} has {} MiB free", d.uuid, d.memory_free_bytes >> 20))
                    .collect();
                return fail(
                    report,
                    State::Failed,
                    format!(
                        "job {}: no GPU has {} MiB free ({})",
                        req.id,
                        req.min_free_memory_mib,
                        free.join(", ")
                    ),
                );
            }
        }
    } else {
        None
    };
    let gpu_uuid = gpu.as_ref().map(|d| d.uuid.as_str());
    let acquired = inner
        .pool
        .acquire(kind, cmd, gpu_uuid, &|| shared.cancel_requested());
    let (mut worker, warm) = match acquired {
        Ok(Some(pool::Acquired::Warm(w))) => (w, true),
        Ok(Some(pool::Acquired::Spawned(w))) => (w, false),
        Ok(None) => {
            return fail(
                report,
                State::Cancelled,
                format!("job {} was cancelled before it started", req.id),
            );
        }
        Err(m) => return fail(report, State::Failed, format!("job {}: {m}", req.id)),
    };
    report.warm = warm;
    report.worker_instance = Some(worker.instance);
    report.fingerprint = Some(fingerprint(&worker.hello));
    report.device = Some(describe_device(&worker.hello));
    report.hello = Some(worker.hello.clone());
    if spec.gpus > 0 && gpu.is_none() && worker.hello.device.kind == "cuda" {
        inner.pool.release(worker);
        return fail(
            report,
            State::Failed,
            format!(
                "job {} asks for {} GPU but none is visible ({}); worker `{kind}` computes on CUDA",
                req.id,
                spec.gpus,
                no_gpu_reason.unwrap_or_default()
            ),
        );
    }
    if !worker.hello.ops.is_empty() && !worker.hello.ops.contains(&spec.op) {
        let ops = worker.hello.ops.join(", ");
        inner.pool.release(worker);
        return fail(
            report,
            State::Failed,
            format!(
                "job {}: worker `{kind}` does not implement op `{}`; it offers: {ops}",
                req.id, spec.op
            ),
        );
    }
    let out_dir = inner.scratch.join(format!(
        "{}-{}-{}",
        std::process::id(),
        inner.scratch_seq.fetch_add(1, Ordering::Relaxed),
        req.id
    ));
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        inner.pool.release(worker);
        return fail(
            report,
            State::Failed,
            format!("job {}: cannot create {}: {e}", req.id, out_dir.display()),
        );
    }
    let key = worker.next_job_key();
    {
        let mut st = lock(&shared.status);
        if st.cancel {
            drop(st);
            inner.pool.release(worker);
            let _ = std::fs::remove_dir_all(&out_dir);
            return fail(
                report,
                State::Cancelled,
                format!("job {} was cancelled before it started", req.id),
            );
        }
        st.worker = Some((worker.inbox.clone(), key));
        st.state = State::Running;
    }
    let deadline_ms = req.deadline.as_millis() as u64;
    let run = protocol::Run {
        kind: "run",
        id: &req.id,
        op: &spec.op,
        params: &spec.params,
        inputs: inputs
            .iter()
            .map(|(name, path, digest)| {
                (
                    name.as_str(),
                    protocol::RunInput {
                        path: path.display().to_string(),
                        digest: digest.to_string(),
                    },
                )
            })
            .collect(),
        output_dir: out_dir.display().to_string(),
        seed: spec.seed,
        deterministic: spec.deterministic,
        deadline_ms,
    };
    let line = serde_json::to_string(&run).expect("run lines serialize");
    let sent_at = Instant::now();
    if let Err(e) = worker.send(&line) {
        let status = worker.reap_after_eof();
        report.log = put_log(&req.store, &worker.take_final_log());
        inner.pool.discard(kind);
        let _ = std::fs::remove_dir_all(&out_dir);
        return fail(
            report,
            State::Failed,
            format!(
                "worker `{kind}` exited ({status}) before job {} started: {e}",
                req.id
            ),
        );
    }
    report.dispatch_us = Some(submitted.elapsed().as_micros() as u64);
    let deadline = sent_at + req.deadline;
    let sampler = gpu
        .as_ref()
        .and_then(|d| telemetry::Sampler::start(&d.uuid));
    let mut cancel_sent: Option<Instant> = None;
    let ending = loop {
        let until = cancel_sent.map_or(deadline, |t| deadline.min(t + CANCEL_GRACE));
        match worker.inbox.next(key, until) {
            pool::Next::Message(protocol::FromWorker::Progress { id, .. }) if id == req.id => {
                report.progress_lines += 1;
            }
            pool::Next::Message(protocol::FromWorker::Result(r)) if r.id == req.id => {
                break Ending::Result(r);
            }
            pool::Next::Message(other) => {
                let what = match &other {
                    protocol::FromWorker::Progress { id, .. }
                    | protocol::FromWorker::Result(protocol::JobOutcome { id, .. }) => format!(
                        "a {} line for job {}, not {}",
                        pool::message_kind(&other),
                        protocol::quote_line(id.as_bytes()),
                        req.id
                    ),
                    protocol::FromWorker::Hello(_) => "a second hello".to_string(),
                };
                break Ending::Malformed(what);
            }
            pool::Next::Malformed(m) => break Ending::Malformed(m),
            pool::Next::Eof => break Ending::Crashed,
            pool::Next::Cancel => {
                if cancel_sent.is_none() {
                    if worker.send(&protocol::cancel_line(&req.id)).is_err() {
                        break Ending::Crashed;
                    }
                    cancel_sent = Some(Instant::now());
                }
            }
            pool::Next::Timeout => {
                break if cancel_sent.is_some() && Instant::now() < deadline {
                    Ending::CancelIgnored
                } else {
                    Ending::Deadline
                };
            }
        }
    };
    report.wall_ms = sent_at.elapsed().as_millis() as u64;
    report.usage = sampler.and_then(telemetry::Sampler::finish);
    let id = &req.id;
    let report = match ending {
        Ending::Result(outcome) => {
            report.log = put_log(&req.store, &worker.take_log());
            let claimed = matches!(outcome.status, protocol::ResultStatus::Succeeded);
            let mut report = finish_outcome(report, outcome, &req.store, &out_dir, kind);
            if claimed && report.state != State::Succeeded {
                // It claimed outputs it did not write: not trusted again.
                worker.kill();
                inner.pool.discard(kind);
                if let Some(m) = &mut report.message {
                    m.push_str(&format!(
                        "; worker `{kind}` was killed and is respawned for the next job"
                    ));
                }
            } else {
                inner.pool.release(worker);
            }
            report
        }
        Ending::Malformed(m) => {
            // Its exit status says nothing: it may see its stdin close and
            // exit on its own just before the kill lands.
            worker.kill();
            report.log = put_log(&req.store, &worker.take_final_log());
            inner.pool.discard(kind);
            fail(
                report,
                State::Failed,
                format!(
                    "worker `{kind}` sent a malformed line during job {id}: {m}; the worker was killed and is respawned for the next job"
                ),
            )
        }
        Ending::Crashed => {
            let status = worker.reap_after_eof();
            let tail = worker.stderr_tail();
            report.log = put_log(&req.store, &worker.take_final_log());
            inner.pool.discard(kind);
            fail(
                report,
                State::Failed,
                format!("worker `{kind}` exited ({status}) during job {id}{tail}"),
            )
        }
        Ending::Deadline => {
            worker.kill();
            report.log = put_log(&req.store, &worker.take_final_log());
            inner.pool.discard(kind);
            fail(
                report,
                State::TimedOut,
                format!(
                    "job {id} ran past its deadline of {deadline_ms} ms; worker `{kind}` was killed and is respawned for the next job"
                ),
            )
        }
        Ending::CancelIgnored => {
            worker.kill();
            report.log = put_log(&req.store, &worker.take_final_log());
            inner.pool.discard(kind);
            fail(
                report,
                State::Cancelled,
                format!(
                    "job {id} was cancelled; worker `{kind}` did not answer the cancel within {} s and was killed",
                    CANCEL_GRACE.as_secs()
                ),
            )
        }
    };
    let _ = std::fs::remove_dir_all(&out_dir);
    report
}

/// Applies a worker's `result`: for `succeeded`, verifies and ingests every
/// output.
fn finish_outcome(
    mut report: JobReport,
    outcome: protocol::JobOutcome,
    store: &Store,
    out_dir: &Path,
    kind: &str,
) -> JobReport {
    let id = report.id.clone();
    if outcome.metrics.is_object() {
        report.metrics = outcome.metrics;
    }
    let worker_message = outcome
        .message
        .as_deref()
        .map(|m| crate::quoting::sanitize(m.trim()));
    match outcome.status {
        protocol::ResultStatus::Failed => {
            report.state = State::Failed;
            report.message = Some(format!(
                "worker `{kind}` failed job {id}: {}",
                worker_message.as_deref().unwrap_or("no message")
            ));
        }
        protocol::ResultStatus::Cancelled => {
            report.state = State::Cancelled;
            report.message = Some(match worker_message {
                Some(m) if !m.is_empty() => format!("job {id} was cancelled: {m}"),
                _ => format!("job {id} was cancelled"),
            });
        }
        protocol::ResultStatus::Succeeded => match ingest_outputs(store, out_dir, &outcome.outputs)
        {
            Ok(outputs) => {
                report.state = State::Succeeded;
                report.outputs = outputs;
                report.mfu = mfu(&report);
            }
            Err(m) => {
                report.state = State::Failed;
                report.message = Some(format!("job {id}: {m}; outputs rejected"));
            }
        },
    }
    report
}

fn mfu(report: &JobReport) -> Option<f64> {
    let hello = report.hello.as_ref()?;
    if hello.device.kind != "cuda" || report.wall_ms == 0 {
        return None;
    }
    let peak = telemetry::peak_flops(&hello.device.name)?;
    let flops = report.metric("model_flops").filter(|f| *f > 0.0)?;
    Some(flops / (report.wall_ms as f64 / 1000.0) / peak)
}

fn put_log(store: &Store, bytes: &[u8]) -> Option<Digest> {
    if bytes.is_empty() {
        return None;
    }
    match store.put_bytes(bytes) {
        Ok((d, _)) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "cannot store a gpu job log");
            None
        }
    }
}

/// Verifies each input blob and returns (name, path, digest).
fn resolve_inputs(
    store: &Store,
    inputs: &[(String, Digest)],
) -> Result<Vec<(String, PathBuf, Digest)>, String> {
    // A blob still pending publication is only a temp file; a worker needs
    // the final path, so wait for the publisher then (and only then).
    if inputs.iter().any(|(_, d)| !store.path_of(d).is_file()) {
        store.sync().map_err(|e| e.to_string())?;
    }
    inputs
        .iter()
        .map(|(name, digest)| {
            store.verify(digest).map_err(|e| match e {
                StoreError::NotFound(d) => {
                    format!("input `{name}`: artifact {d} is not in the store")
                }
                other => format!("input `{name}`: {other}"),
            })?;
            Ok((name.clone(), store.path_of(digest), *digest))
        })
        .collect()
}

/// Media type of an output: what the worker said if printable and short.
fn media_type(reported: Option<&str>) -> Result<String, String> {
    match reported {
        None => Ok("application/octet-stream".to_string()),
        Some(m)
            if !m.is_empty()
                && m.len() <= sluice_host_api::MAX_METRIC_TEXT_BYTES
                && !m.contains(char::is_control) =>
        {
            Ok(m.to_string())
        }
        Some(m) => Err(format!(
            "media type {} is not 1-{} printable bytes",
            protocol::quote_line(m.as_bytes()),
            sluice_host_api::MAX_METRIC_TEXT_BYTES
        )),
    }
}

/// Re-hashes every reported output inside `out_dir` (regular files only,
/// never through a symlink) and ingests it into the store.
fn ingest_outputs(
    store: &Store,
    out_dir: &Path,
    outputs: &BTreeMap<String, protocol::ReportedOutput>,
) -> Result<BTreeMap<String, OutputRef>, String> {
    let mut ingested = BTreeMap::new();
    for (name, o) in outputs {
        if !is_kind_name(name) {
            return Err(format!(
                "output name {} is not 1-64 characters of [A-Za-z0-9_-]",
                protocol::quote_line(name.as_bytes())
            ));
        }
        let err = |m: String| format!("output `{name}`: {m}");
        if !protocol::is_plain_file_name(&o.file) {
            return Err(err(format!(
                "file {} is not a plain file name inside the job's output directory",
                protocol::quote_line(o.file.as_bytes())
            )));
        }
        let reported: Digest = o.digest.parse().map_err(|_| {
            err(format!(
                "reported digest {} is not sha256:<64 hex>",
                protocol::quote_line(o.digest.as_bytes())
            ))
        })?;
        let media_type = media_type(o.media_type.as_deref()).map_err(err)?;
        let path = out_dir.join(&o.file);
        let mut file = open_regular(&path)
            .map_err(|m| err(format!("{} {m}", protocol::quote_line(o.file.as_bytes()))))?;
        let found = crate::digest::hash_reader(&mut file)
            .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
        if found != reported {
            return Err(err(format!(
                "worker reported {reported} but the file hashes to {found}"
            )));
        }
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
        if let Some(claimed) = o.size
            && claimed != size
        {
            return Err(err(format!(
                "worker reported {claimed} bytes but the file has {size}"
            )));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
        let (stored, stored_size) = store
            .put_reader(&mut file)
            .map_err(|e| err(e.to_string()))?;
        if stored != reported {
            // The file changed between the check and the copy.
            return Err(err(format!(
                "worker reported {reported} but the file hashes to {stored}"
            )));
        }
        ingested.insert(
            name.clone(),
            OutputRef {
                digest: stored,
                size: stored_size,
                media_type,
            },
        );
    }
    Ok(ingested)
}

/// Opens `path` for reading only if it is a regular file, not through a
/// symlink.
fn open_regular(path: &Path) -> Result<File, String> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT => "does not exist in the output directory".to_string(),
        rustix::io::Errno::LOOP => "is a symlink, not a regular file".to_string(),
        e => format!("cannot be opened: {e}"),
    })?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_string());
    }
    Ok(file)
}

/// Jobs a run recorded for one step, by spec digest, in submission order.
#[derive(Debug, Default)]
pub struct RecordedJobs {
    by_spec: BTreeMap<Digest, VecDeque<JobReport>>,
}

impl RecordedJobs {
    /// From the recorded reports of one attempt.
    pub fn new(reports: impl IntoIterator<Item = JobReport>) -> RecordedJobs {
        let mut by_spec: BTreeMap<Digest, VecDeque<JobReport>> = BTreeMap::new();
        for r in reports {
            by_spec.entry(r.spec_digest).or_default().push_back(r);
        }
        RecordedJobs { by_spec }
    }

    /// The next recorded job with this spec digest.
    pub fn take(&mut self, spec: &Digest) -> Option<JobReport> {
        self.by_spec.get_mut(spec).and_then(VecDeque::pop_front)
    }
}

/// Where an attempt's jobs are answered.
pub enum Backend {
    /// Executed on workers.
    Live(Arc<Dispatcher>),
    /// Answered from a run record (replay); no worker is started.
    Recorded(Mutex<RecordedJobs>),
}

/// Jobs submitted during one attempt, in order.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    jobs: Arc<Mutex<Vec<Arc<JobShared>>>>,
}

impl Ledger {
    /// The final reports of every job (waiting for any still running —
    /// none is after the attempt's handles were dropped).
    pub fn reports(&self) -> Vec<JobReport> {
        let jobs = lock(&self.jobs).clone();
        jobs.iter().map(|j| j.wait()).collect()
    }

    fn push(&self, job: Arc<JobShared>) {
        lock(&self.jobs).push(job);
    }

    /// Digests of the outputs of jobs that succeeded so far.
    fn outputs(&self) -> BTreeSet<Digest> {
        lock(&self.jobs)
            .iter()
            .filter_map(|j| lock(&j.status).report.clone())
            .filter(|r| r.state == State::Succeeded)
            .flat_map(|r| r.outputs.into_values().map(|o| o.digest))
            .collect()
    }
}

/// The gpu port of one attempt of a step with a grant: checks the grant
/// and quota, then hands jobs to the backend.
pub struct AttemptGpu {
    /// Step name.
    pub step: String,
    /// Its grant.
    pub grant: Grant,
    /// The step's own timeout: a job's deadline never exceeds it.
    pub step_timeout: Duration,
    /// Digests of the step's inputs (the only blobs a job may read besides
    /// earlier jobs' outputs).
    pub inputs: BTreeSet<Digest>,
    /// Where jobs run.
    pub backend: Arc<Backend>,
    /// The store.
    pub store: Arc<Store>,
    /// Run-wide job counter, for ids.
    pub counter: Arc<AtomicU64>,
    /// Collects the attempt's jobs.
    pub ledger: Ledger,
    submitted: u32,
    /// The attempt's cancellation flag and deadline: a guest blocked in
    /// `job.wait` is released (its job cancelled) when either fires, so a
    /// wait never holds the attempt past its timeout, a cancel or shutdown.
    bound: AttemptBound,
}

/// When an attempt must stop waiting on its jobs.
#[derive(Clone, Debug)]
struct AttemptBound {
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    deadline: Option<Instant>,
}

impl AttemptBound {
    fn reached(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// How often a guest's `job.wait` looks at its attempt's cancellation flag
/// and deadline: the epoch tick's order of magnitude.
const WAIT_SLICE: Duration = Duration::from_millis(20);

impl AttemptGpu {
    /// A port for one attempt.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        step: &str,
        grant: Grant,
        step_timeout: Duration,
        inputs: BTreeSet<Digest>,
        backend: Arc<Backend>,
        store: Arc<Store>,
        counter: Arc<AtomicU64>,
        ledger: Ledger,
    ) -> AttemptGpu {
        AttemptGpu {
            step: step.to_string(),
            grant,
            step_timeout,
            inputs,
            backend,
            store,
            counter,
            ledger,
            submitted: 0,
            bound: AttemptBound {
                stop: None,
                deadline: None,
            },
        }
    }

    /// Releases the guest's job waits when `stop` is set or at `deadline`
    /// (the attempt's own timeout), cancelling the job waited on.
    pub fn bounded_by(
        mut self,
        stop: Option<Arc<std::sync::atomic::AtomicBool>>,
        deadline: Instant,
    ) -> AttemptGpu {
        self.bound = AttemptBound {
            stop,
            deadline: Some(deadline),
        };
        self
    }
}

/// A job handle as the host-api sees it.
struct PortJob {
    handle: JobHandle,
    done: bool,
    bound: AttemptBound,
}

impl GpuJob for PortJob {
    fn id(&self) -> String {
        self.handle.id().to_string()
    }

    fn state(&mut self) -> JobState {
        self.handle.state().to_wit()
    }

    fn wait(&mut self) -> Result<JobResult, PortError> {
        let r = loop {
            if let Some(r) = self.handle.shared.wait_for(WAIT_SLICE) {
                break r;
            }
            if self.bound.reached() {
                // The guest gets the cancelled job's report; the epoch
                // deadline (or the cancellation) traps it as soon as it runs
                // wasm again.
                break self.handle.cancel();
            }
        };
        self.done = true;
        Ok(r.to_wit())
    }

    fn cancel(&mut self) {
        self.handle.cancel();
        self.done = true;
    }
}

impl Drop for PortJob {
    fn drop(&mut self) {
        // The guest's store is torn down without dropping each handle when an
        // attempt traps or returns holding jobs: unfinished jobs are
        // cancelled here so none outlives its attempt.
        if !self.done {
            self.handle.cancel();
        }
    }
}

impl GpuPort for AttemptGpu {
    fn submit(&mut self, spec: JobSpec) -> Result<Box<dyn GpuJob>, PortError> {
        let refuse = |e: WitError| Err(PortError::Refused(e));
        if spec.worker != self.grant.worker {
            return refuse(WitError::Denied(format!(
                "step `{}` is granted gpu worker `{}`, not `{}`",
                self.step,
                self.grant.worker,
                crate::quoting::escape_controls(&spec.worker, 64)
            )));
        }
        if self.submitted >= self.grant.max_jobs {
            return refuse(WitError::Quota(format!(
                "step `{}` already submitted {} gpu job{}; its grant allows max_jobs = {} per attempt",
                self.step,
                self.submitted,
                if self.submitted == 1 { "" } else { "s" },
                self.grant.max_jobs
            )));
        }
        let record = match JobSpecRecord::from_wit(&spec) {
            Ok(r) => r,
            Err(e) => return refuse(e),
        };
        let produced = self.ledger.outputs();
        for (name, digest) in &record.inputs {
            if !self.inputs.contains(digest) && !produced.contains(digest) {
                return refuse(WitError::Denied(format!(
                    "step `{}`: gpu job input `{name}` ({digest}) is neither an input of the step nor an output of one of its gpu jobs",
                    self.step
                )));
            }
        }
        self.submitted += 1;
        let spec_digest = record.digest();
        let handle = match &*self.backend {
            Backend::Live(dispatcher) => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
                let timeout = record
                    .timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(self.step_timeout)
                    .min(self.step_timeout);
                dispatcher.submit(JobRequest {
                    id: format!("j{n}"),
                    min_free_memory_mib: record
                        .min_free_memory_mib
                        .max(self.grant.min_free_memory_mib),
                    spec: record,
                    deadline: timeout,
                    store: self.store.clone(),
                })
            }
            Backend::Recorded(recorded) => {
                let Some(mut report) = lock(recorded).take(&spec_digest) else {
                    return refuse(WitError::Invalid(format!(
                        "replay: step `{}` submitted a gpu job (spec {spec_digest}) that the record does not have: the job spec diverged from the recorded run (replay with --rerun-gpu to execute it)",
                        self.step
                    )));
                };
                report.replayed = true;
                if report.state == State::Succeeded
                    && let Some((name, missing)) = report
                        .outputs
                        .iter()
                        .find(|(_, o)| self.store.verify(&o.digest).is_err())
                {
                    report.state = State::Failed;
                    report.message = Some(format!(
                        "replay: recorded output `{name}` ({}) of job {} is missing or corrupt in the store",
                        missing.digest, report.id
                    ));
                    report.outputs.clear();
                }
                JobHandle::answered(report)
            }
        };
        self.ledger.push(handle.shared.clone());
        Ok(Box::new(PortJob {
            handle,
            done: false,
            bound: self.bound.clone(),
        }))
    }

    fn devices(&mut self) -> Vec<String> {
        telemetry::devices().iter().map(DeviceInfo::line).collect()
    }
}

/// How a rerun job compares with the recorded one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// Job id in the rerun.
    pub job: String,
    /// `bitwise` (same fingerprint) or `tolerance`.
    pub method: &'static str,
    /// Whether it matches by that method.
    pub matched: bool,
    /// What was compared, with numbers.
    pub detail: String,
}

/// Compares a rerun job with its recorded twin: bitwise output digests when
/// the device/driver/library fingerprints are equal, otherwise
/// `final_loss` within [`LOSS_RELATIVE_TOLERANCE`].
pub fn compare(recorded: &JobReport, rerun: &JobReport) -> Comparison {
    let same_fingerprint =
        recorded.fingerprint.is_some() && recorded.fingerprint == rerun.fingerprint;
    let method = if same_fingerprint {
        "bitwise"
    } else {
        "tolerance"
    };
    let comparison = |matched, detail: String| Comparison {
        job: rerun.id.clone(),
        method,
        matched,
        detail,
    };
    if recorded.state != State::Succeeded || rerun.state != State::Succeeded {
        return comparison(
            recorded.state == rerun.state,
            format!(
                "recorded job {} {}, rerun {}",
                recorded.id,
                recorded.state.as_str(),
                rerun.state.as_str()
            ),
        );
    }
    if same_fingerprint {
        let differing: Vec<String> = recorded
            .outputs
            .iter()
            .filter(|(k, o)| rerun.outputs.get(*k).map(|r| r.digest) != Some(o.digest))
            .map(|(k, o)| {
                format!(
                    "output `{k}`: recorded {}, rerun {}",
                    o.digest,
                    rerun
                        .outputs
                        .get(k)
                        .map_or("(none)".to_string(), |r| r.digest.to_string())
                )
            })
            .collect();
        return if differing.is_empty() && recorded.outputs.len() == rerun.outputs.len() {
            comparison(
                true,
                "outputs bitwise identical (same device/driver/library fingerprint)".to_string(),
            )
        } else {
            comparison(
                false,
                format!(
                    "same fingerprint but {}",
                    if differing.is_empty() {
                        "a different set of outputs".to_string()
                    } else {
                        differing.join("; ")
                    }
                ),
            )
        };
    }
    match (recorded.metric("final_loss"), rerun.metric("final_loss")) {
        (Some(a), Some(b)) => {
            let rel = (a - b).abs() / a.abs().max(f64::MIN_POSITIVE);
            let matched = rel <= LOSS_RELATIVE_TOLERANCE;
            comparison(
                matched,
                format!(
                    "fingerprint differs ({} vs {}); final_loss recorded {a} rerun {b}: relative difference {rel:.2e} {} {LOSS_RELATIVE_TOLERANCE:e}",
                    recorded.device.as_deref().unwrap_or("?"),
                    rerun.device.as_deref().unwrap_or("?"),
                    if matched { "≤" } else { ">" }
                ),
            )
        }
        _ => comparison(
            false,
            "fingerprint differs and the job reported no final_loss to compare".to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            worker: "cpu".into(),
            op: "train-mlp".into(),
            params_json: r#"{"epochs":3,"width":8}"#.into(),
            inputs: vec![("train".into(), format!("sha256:{}", "ab".repeat(32)))],
            gpus: 0,
            min_free_memory_mib: 0,
            timeout_ms: None,
            seed: 7,
            deterministic: true,
        }
    }

    #[test]
    fn spec_digest_is_canonical_over_param_key_order() {
        let a = JobSpecRecord::from_wit(&spec()).unwrap();
        let mut s = spec();
        s.params_json = r#"{ "width": 8, "epochs": 3 }"#.into();
        let b = JobSpecRecord::from_wit(&s).unwrap();
        assert_eq!(a.digest(), b.digest());
        s.seed = 8;
        assert_ne!(a.digest(), JobSpecRecord::from_wit(&s).unwrap().digest());
    }

    #[test]
    fn bad_job_specs_are_invalid_with_the_offender_named() {
        let check = |f: &dyn Fn(&mut JobSpec), expected: &str| {
            let mut s = spec();
            f(&mut s);
            match JobSpecRecord::from_wit(&s) {
                Err(WitError::Invalid(m)) => assert!(m.contains(expected), "{m}"),
                other => panic!("{other:?}"),
            }
        };
        check(
            &|s| s.params_json = "[1]".into(),
            "params-json must be a JSON object",
        );
        check(&|s| s.params_json = "{".into(), "params-json is not JSON");
        check(&|s| s.gpus = 2, "asks for 2 GPUs; a job gets at most 1");
        check(&|s| s.op = "a b".into(), "op \"a b\" must be");
        check(
            &|s| s.inputs[0].1 = "md5:x".into(),
            "input `train`: \"md5:x\" is not a sha256",
        );
        check(
            &|s| s.inputs.push(s.inputs[0].clone()),
            "input name \"train\" is invalid or repeated",
        );
        check(&|s| s.timeout_ms = Some(0), "timeout-ms must be positive");
        check(
            &|s| s.worker = "../x".into(),
            "worker \"../x\" is not a worker kind name",
        );
    }

    fn report(outputs: &[(&str, &str)], loss: f64, device: &str) -> JobReport {
        let record = JobSpecRecord::from_wit(&spec()).unwrap();
        let mut r = JobReport::new("j1", &record, record.digest());
        r.state = State::Succeeded;
        r.metrics = serde_json::json!({"final_loss": loss});
        let hello = Hello {
            protocol: 1,
            worker: "torch".into(),
            ops: vec![],
            versions: BTreeMap::new(),
            device: protocol::Device {
                kind: "cuda".into(),
                name: device.into(),
                uuid: None,
            },
        };
        r.fingerprint = Some(fingerprint(&hello));
        r.device = Some(describe_device(&hello));
        for (k, hex) in outputs {
            r.outputs.insert(
                k.to_string(),
                OutputRef {
                    digest: format!("sha256:{}", hex.repeat(32)).parse().unwrap(),
                    size: 1,
                    media_type: "application/json".into(),
                },
            );
        }
        r
    }

    #[test]
    fn reruns_compare_bitwise_on_the_same_fingerprint_and_by_loss_otherwise() {
        let a = report(&[("model", "aa")], 0.30, "NVIDIA H100");
        let c = compare(&a, &report(&[("model", "aa")], 0.9, "NVIDIA H100"));
        assert_eq!((c.method, c.matched), ("bitwise", true));
        let c = compare(&a, &report(&[("model", "bb")], 0.30, "NVIDIA H100"));
        assert_eq!((c.method, c.matched), ("bitwise", false));
        assert!(
            c.detail.contains("output `model`: recorded sha256:aaaa"),
            "{}",
            c.detail
        );
        let c = compare(&a, &report(&[("model", "bb")], 0.30015, "NVIDIA A100"));
        assert_eq!((c.method, c.matched), ("tolerance", true), "{}", c.detail);
        assert!(
            c.detail.contains("relative difference 5.00e-4 ≤ 1e-3"),
            "{}",
            c.detail
        );
        let c = compare(&a, &report(&[("model", "bb")], 0.31, "NVIDIA A100"));
        assert_eq!((c.method, c.matched), ("tolerance", false));
    }

    #[test]
    fn media_types_must_be_short_and_printable() {
        assert_eq!(media_type(None).unwrap(), "application/octet-stream");
        assert_eq!(
            media_type(Some("application/json")).unwrap(),
            "application/json"
        );
        assert!(
            media_type(Some("a\u{1b}b"))
                .unwrap_err()
                .contains("\"a\\u{1b}b\"")
        );
    }

    #[test]
    fn outputs_are_rehashed_and_symlinks_and_escapes_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("home")).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("m.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("secret"), b"s3cret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), out.join("link")).unwrap();
        let good = Digest::of(b"{}").to_string();
        let one = |file: &str, digest: &str| {
            BTreeMap::from([(
                "model".to_string(),
                protocol::ReportedOutput {
                    file: file.into(),
                    digest: digest.into(),
                    size: None,
                    media_type: Some("application/json".into()),
                },
            )])
        };
        let ok = ingest_outputs(&store, &out, &one("m.json", &good)).unwrap();
        assert_eq!(ok["model"].digest.to_string(), good);
        assert_eq!(ok["model"].size, 2);
        assert!(store.contains(&ok["model"].digest));
        let wrong = Digest::of(b"other").to_string();
        assert_eq!(
            ingest_outputs(&store, &out, &one("m.json", &wrong)).unwrap_err(),
            format!("output `model`: worker reported {wrong} but the file hashes to {good}")
        );
        let secret = Digest::of(b"s3cret").to_string();
        assert_eq!(
            ingest_outputs(&store, &out, &one("link", &secret)).unwrap_err(),
            "output `model`: \"link\" is a symlink, not a regular file"
        );
        assert_eq!(
            ingest_outputs(&store, &out, &one("../secret", &secret)).unwrap_err(),
            "output `model`: file \"../secret\" is not a plain file name inside the job's output directory"
        );
        assert_eq!(
            ingest_outputs(&store, &out, &one("gone.json", &good)).unwrap_err(),
            "output `model`: \"gone.json\" does not exist in the output directory"
        );
    }
}
