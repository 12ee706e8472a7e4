//! The dispatcher: runs each submitted job on its own thread, on a warm (or
//! freshly started) worker of its kind, and turns how the worker behaved
//! into the job's one final [`JobReport`].
//!
//! Invariant: every job ends in exactly one final state with a message
//! naming the offender, even if its thread panics or cannot start. A
//! worker that crashed, hung, broke the protocol, ignored a cancel or
//! claimed outputs it did not write is killed and its pool slot freed (the
//! next job respawns it); only a worker that behaved goes back to the idle
//! set. A job's output directory is removed when the job ends. Every wait
//! on a worker is bounded by the job's deadline (plus [`CANCEL_GRACE`] once
//! cancelled).
//! Boundary: drives [`pool`] workers over [`protocol`] lines and hands the
//! store side to [`ingest`](super::ingest); knows nothing of steps, grants
//! or records.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::store::Store;

use super::config::{WorkerCommand, WorkerConfig};
use super::handle::{JobHandle, JobShared};
use super::ingest::{ingest_outputs, put_log, resolve_inputs};
use super::job::{JobReport, JobSpecRecord, State, describe_device, fingerprint};
use super::{pool, protocol, telemetry};

/// How long a worker has to answer a `cancel` before it is killed.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

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
    pool: Arc<pool::Pool>,
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
                pool: Arc::new(pool::Pool::default()),
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
        JobHandle::new(shared, self.inner.pool.clone())
    }
}

/// Why a job ended other than by its worker's `result`: the final state
/// and the message naming the offender.
struct Stop {
    state: State,
    message: String,
}

impl Stop {
    fn failed(message: String) -> Stop {
        Stop {
            state: State::Failed,
            message,
        }
    }

    fn cancelled_before_start(id: &str) -> Stop {
        Stop {
            state: State::Cancelled,
            message: format!("job {id} was cancelled before it started"),
        }
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

/// The GPU a job was placed on, or why it got none.
struct Placed {
    gpu: Option<telemetry::DeviceInfo>,
    no_gpu_reason: Option<String>,
}

/// One job on its thread: what every step of it needs.
struct Job<'a> {
    inner: &'a Inner,
    shared: &'a JobShared,
    req: &'a JobRequest,
    submitted: Instant,
}

/// Runs one job to its final report (on the job's own thread).
fn run_job(inner: &Inner, shared: &JobShared, req: &JobRequest, submitted: Instant) -> JobReport {
    let mut report = JobReport::new(&req.id, &req.spec, req.spec.digest());
    let job = Job {
        inner,
        shared,
        req,
        submitted,
    };
    if let Err(stop) = run_on_worker(&job, &mut report) {
        report.state = stop.state;
        report.message = Some(stop.message);
    }
    report
}

/// Every step of a job up to its output directory; the job proper runs in
/// [`run_in`], after which the directory is removed whatever happened.
fn run_on_worker(job: &Job<'_>, report: &mut JobReport) -> Result<(), Stop> {
    let (inner, req) = (job.inner, job.req);
    let cmd = worker_command(&inner.config, req)?;
    let inputs = resolve_inputs(&req.store, &req.spec.inputs)
        .map_err(|m| Stop::failed(format!("job {}: {m}", req.id)))?;
    let placed = place(req)?;
    let gpu_uuid = placed.gpu.as_ref().map(|d| d.uuid.as_str());
    let (worker, warm) = acquire(job, cmd, gpu_uuid)?;
    report.warm = warm;
    report.worker_instance = Some(worker.instance);
    report.fingerprint = Some(fingerprint(&worker.hello));
    report.device = Some(describe_device(&worker.hello));
    report.hello = Some(worker.hello.clone());
    let out_dir = check_worker(req, &worker, &placed).and_then(|()| create_out_dir(inner, req));
    let out_dir = match out_dir {
        Ok(d) => d,
        Err(stop) => {
            inner.pool.release(worker);
            return Err(stop);
        }
    };
    let ran = run_in(job, report, worker, &inputs, &out_dir, gpu_uuid);
    let _ = std::fs::remove_dir_all(&out_dir);
    ran
}

/// The configured command of the job's worker kind.
fn worker_command<'c>(
    config: &'c WorkerConfig,
    req: &JobRequest,
) -> Result<&'c WorkerCommand, Stop> {
    let kind = req.spec.worker.as_str();
    config.get(kind).ok_or_else(|| {
        let known: Vec<&str> = config.kinds().collect();
        Stop::failed(format!(
            "job {}: no worker kind `{kind}` is configured; known kinds: {} (add [workers.{kind}] to the engine config)",
            req.id,
            known.join(", ")
        ))
    })
}

/// The GPU for a job that asks for one: the visible one with the most free
/// memory above the job's floor. No visible GPU is not (yet) an error: a
/// worker that does not compute on CUDA runs the job anyway.
fn place(req: &JobRequest) -> Result<Placed, Stop> {
    let mut placed = Placed {
        gpu: None,
        no_gpu_reason: None,
    };
    if req.spec.gpus == 0 {
        return Ok(placed);
    }
    match telemetry::place(&telemetry::devices(), req.min_free_memory_mib) {
        telemetry::Placement::Gpu(d) => placed.gpu = Some(d),
        telemetry::Placement::NoGpu(reason) => placed.no_gpu_reason = Some(reason),
        telemetry::Placement::NoneFits(devices) => {
            let free: Vec<String> = devices
                .iter()
                .map(|d| format!("{} has {} MiB free", d.uuid, d.memory_free_bytes >> 20))
                .collect();
            return Err(Stop::failed(format!(
                "job {}: no GPU has {} MiB free ({})",
                req.id,
                req.min_free_memory_mib,
                free.join(", ")
            )));
        }
    }
    Ok(placed)
}

/// A worker for the job and whether it was warm; waits for a pool slot
/// until the job is cancelled.
fn acquire(
    job: &Job<'_>,
    cmd: &WorkerCommand,
    gpu_uuid: Option<&str>,
) -> Result<(pool::Worker, bool), Stop> {
    let req = job.req;
    let acquired = job
        .inner
        .pool
        .acquire(&req.spec.worker, cmd, gpu_uuid, &|| {
            job.shared.cancel_requested()
        });
    match acquired {
        Ok(Some(pool::Acquired::Warm(w))) => Ok((w, true)),
        Ok(Some(pool::Acquired::Spawned(w))) => Ok((w, false)),
        Ok(None) => Err(Stop::cancelled_before_start(&req.id)),
        Err(m) => Err(Stop::failed(format!("job {}: {m}", req.id))),
    }
}

/// Refuses a worker that cannot run the job: one computing on CUDA for a
/// job that asked for a GPU when none is visible, or one whose `hello`
/// does not list the job's op.
fn check_worker(req: &JobRequest, worker: &pool::Worker, placed: &Placed) -> Result<(), Stop> {
    let spec = &req.spec;
    let kind = spec.worker.as_str();
    if spec.gpus > 0 && placed.gpu.is_none() && worker.hello.device.kind == "cuda" {
        return Err(Stop::failed(format!(
            "job {} asks for {} GPU but none is visible ({}); worker `{kind}` computes on CUDA",
            req.id,
            spec.gpus,
            placed.no_gpu_reason.as_deref().unwrap_or_default()
        )));
    }
    if !worker.hello.ops.is_empty() && !worker.hello.ops.contains(&spec.op) {
        return Err(Stop::failed(format!(
            "job {}: worker `{kind}` does not implement op `{}`; it offers: {}",
            req.id,
            spec.op,
            worker.hello.ops.join(", ")
        )));
    }
    Ok(())
}

/// A fresh output directory for the job under the dispatcher's scratch.
fn create_out_dir(inner: &Inner, req: &JobRequest) -> Result<PathBuf, Stop> {
    let out_dir = inner.scratch.join(format!(
        "{}-{}-{}",
        std::process::id(),
        inner.scratch_seq.fetch_add(1, Ordering::Relaxed),
        req.id
    ));
    std::fs::create_dir_all(&out_dir).map_err(|e| {
        Stop::failed(format!(
            "job {}: cannot create {}: {e}",
            req.id,
            out_dir.display()
        ))
    })?;
    Ok(out_dir)
}

/// Runs the job on `worker`: claims it (unless cancelled meanwhile), sends
/// the `run` line, waits for how it ends under telemetry, and settles the
/// worker's fate and the job's outcome.
fn run_in(
    job: &Job<'_>,
    report: &mut JobReport,
    mut worker: pool::Worker,
    inputs: &[(String, PathBuf, Digest)],
    out_dir: &Path,
    gpu_uuid: Option<&str>,
) -> Result<(), Stop> {
    let (inner, req) = (job.inner, job.req);
    let key = worker.next_job_key();
    if !job.shared.start_on(worker.inbox.clone(), key) {
        inner.pool.release(worker);
        return Err(Stop::cancelled_before_start(&req.id));
    }
    let sent_at = match send_run(req, &mut worker, inputs, out_dir) {
        Ok(t) => t,
        Err(e) => {
            let kind = req.spec.worker.as_str();
            let status = worker.reap_after_eof();
            report.log = put_log(&req.store, &worker.take_final_log());
            inner.pool.discard(kind);
            return Err(Stop::failed(format!(
                "worker `{kind}` exited ({status}) before job {} started: {e}",
                req.id
            )));
        }
    };
    report.dispatch_us = Some(job.submitted.elapsed().as_micros() as u64);
    let sampler = gpu_uuid.and_then(telemetry::Sampler::start);
    let ending = await_ending(req, &mut worker, key, sent_at + req.deadline, report);
    report.wall_ms = sent_at.elapsed().as_millis() as u64;
    report.usage = sampler.and_then(telemetry::Sampler::finish);
    settle(inner, req, report, worker, ending, out_dir)
}

/// Writes the job's `run` line; returns when it was sent.
fn send_run(
    req: &JobRequest,
    worker: &mut pool::Worker,
    inputs: &[(String, PathBuf, Digest)],
    out_dir: &Path,
) -> std::io::Result<Instant> {
    let spec = &req.spec;
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
        deadline_ms: deadline_ms(req),
    };
    let line = serde_json::to_string(&run).expect("run lines serialize");
    let sent_at = Instant::now();
    worker.send(&line)?;
    Ok(sent_at)
}

fn deadline_ms(req: &JobRequest) -> u64 {
    req.deadline.as_millis() as u64
}

/// Reads the worker's lines for job `key` until its `result`, a protocol
/// violation, its exit, the deadline, or [`CANCEL_GRACE`] after a cancel
/// was passed on; counts `progress` lines.
fn await_ending(
    req: &JobRequest,
    worker: &mut pool::Worker,
    key: u64,
    deadline: Instant,
    report: &mut JobReport,
) -> Ending {
    let mut cancel_sent: Option<Instant> = None;
    loop {
        let until = cancel_sent.map_or(deadline, |t| deadline.min(t + CANCEL_GRACE));
        match worker.inbox.next(key, until) {
            pool::Next::Message(protocol::FromWorker::Progress { id, .. }) if id == req.id => {
                report.progress_lines += 1;
            }
            pool::Next::Message(protocol::FromWorker::Result(r)) if r.id == req.id => {
                return Ending::Result(r);
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
                return Ending::Malformed(what);
            }
            pool::Next::Malformed(m) => return Ending::Malformed(m),
            pool::Next::Eof => return Ending::Crashed,
            pool::Next::Cancel => {
                if cancel_sent.is_none() {
                    if worker.send(&protocol::cancel_line(&req.id)).is_err() {
                        return Ending::Crashed;
                    }
                    cancel_sent = Some(Instant::now());
                }
            }
            pool::Next::Timeout => {
                return if cancel_sent.is_some() && Instant::now() < deadline {
                    Ending::CancelIgnored
                } else {
                    Ending::Deadline
                };
            }
        }
    }
}

/// The job's outcome from how it ended, and the worker's fate: back to the
/// idle set if it behaved, otherwise killed and its slot freed.
fn settle(
    inner: &Inner,
    req: &JobRequest,
    report: &mut JobReport,
    mut worker: pool::Worker,
    ending: Ending,
    out_dir: &Path,
) -> Result<(), Stop> {
    let id = &req.id;
    let kind = req.spec.worker.as_str();
    let stop = match ending {
        Ending::Result(outcome) => {
            report.log = put_log(&req.store, &worker.take_log());
            let claimed = matches!(outcome.status, protocol::ResultStatus::Succeeded);
            apply_outcome(report, outcome, &req.store, out_dir, kind);
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
            return Ok(());
        }
        Ending::Malformed(m) => {
            // Its exit status says nothing: it may see its stdin close and
            // exit on its own just before the kill lands.
            worker.kill();
            Stop::failed(format!(
                "worker `{kind}` sent a malformed line during job {id}: {m}; the worker was killed and is respawned for the next job"
            ))
        }
        Ending::Crashed => {
            let status = worker.reap_after_eof();
            let tail = worker.stderr_tail();
            Stop::failed(format!(
                "worker `{kind}` exited ({status}) during job {id}{tail}"
            ))
        }
        Ending::Deadline => {
            worker.kill();
            Stop {
                state: State::TimedOut,
                message: format!(
                    "job {id} ran past its deadline of {} ms; worker `{kind}` was killed and is respawned for the next job",
                    deadline_ms(req)
                ),
            }
        }
        Ending::CancelIgnored => {
            worker.kill();
            Stop {
                state: State::Cancelled,
                message: format!(
                    "job {id} was cancelled; worker `{kind}` did not answer the cancel within {} s and was killed",
                    CANCEL_GRACE.as_secs()
                ),
            }
        }
    };
    report.log = put_log(&req.store, &worker.take_final_log());
    inner.pool.discard(kind);
    Err(stop)
}

/// Applies a worker's `result`: for `succeeded`, verifies and ingests every
/// output.
fn apply_outcome(
    report: &mut JobReport,
    outcome: protocol::JobOutcome,
    store: &Store,
    out_dir: &Path,
    kind: &str,
) {
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
                report.mfu = mfu(report);
            }
            Err(m) => {
                report.state = State::Failed;
                report.message = Some(format!("job {id}: {m}; outputs rejected"));
            }
        },
    }
}

/// Model FLOPs utilisation: `model_flops` / wall / the device's peak.
fn mfu(report: &JobReport) -> Option<f64> {
    let hello = report.hello.as_ref()?;
    if hello.device.kind != "cuda" || report.wall_ms == 0 {
        return None;
    }
    let peak = telemetry::peak_flops(&hello.device.name)?;
    let flops = report.metric("model_flops").filter(|f| *f > 0.0)?;
    Some(flops / (report.wall_ms as f64 / 1000.0) / peak)
}
