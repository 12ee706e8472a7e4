//! Where an attempt executes: in the coordinating process ([`ExecutorKind::Local`]),
//! or elsewhere through an [`Executor`] — a `sluice exec-step` child process
//! ([`ExecutorKind::Process`]), a Ray job ([`RayExecutor`]) or a Kubernetes
//! Job ([`KubernetesExecutor`]) — each of which runs one attempt from its
//! [`Submission`] (the run id and the [`Request`]) stored in the CAS by
//! digest.
//!
//! Invariant: every executor runs the same [`Request`] through
//! [`attempt::run`] against the same store, so outputs, metrics and cache
//! keys do not depend on where a step ran. An attempt's result is written
//! once under the digest of its submission (first writer wins,
//! atomically): a second execution of the same submission — a retried
//! submission, a restarted coordinator of the same run — finds it and never
//! produces a second, different answer. Another run (`--no-cache`, a
//! replay) is another submission and executes afresh.
//! The coordinator checks what an executor claims (the result answers the
//! request it submitted; every output is in the store and hashes to its
//! name) and stays the only writer of the run's record.
//! Boundary: runs attempts and child processes; records nothing (the runner
//! records what comes back).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::attempt::{self, Outcome, Request};
use crate::digest::Digest;
use crate::failure::{Failure, FailureClass};
use crate::sandbox::{CANCELLED_MESSAGE, Sandbox};
use crate::spec::ExecutorKind;
use crate::store::{Store, StoreError};

pub mod kubernetes;
mod ray;
pub use kubernetes::{KubernetesExecutor, KubernetesSettings};
pub use ray::RayExecutor;

/// An executor that runs attempts outside this process: it submits the
/// attempt (see [`submit`]) and returns the outcome that stands.
pub trait Executor {
    /// Runs `request` (an attempt of run `run`) against `store`; stops it
    /// when `cancel` is set.
    fn execute(
        &self,
        run: &str,
        request: &Request,
        store: &Store,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Outcome;
}

/// `sluice exec-step` exit code: the attempt succeeded.
pub const EXIT_SUCCEEDED: i32 = 0;
/// Exit code: the attempt failed by the step's fault (not retried by a
/// cluster's own retry policy: the run decides).
pub const EXIT_STEP: i32 = 10;
/// Exit code: a sandbox limit ended the attempt.
pub const EXIT_LIMIT: i32 = 11;
/// Exit code: the engine failed during the attempt (retriable).
pub const EXIT_ENGINE: i32 = 12;
/// Exit code: no result could be produced or written (the request is
/// missing or unreadable, the store failed); retriable.
pub const EXIT_NO_RESULT: i32 = 13;

/// The document namespace results are filed under in the store.
pub const RESULTS: &str = "results";

/// Most bytes of a stored request (its description lists inputs, params
/// and outputs, all bounded far below this).
const REQUEST_BYTES_MAX: u64 = 16 << 20;
/// Most bytes of a result document.
const RESULT_BYTES_MAX: u64 = 64 << 20;
/// How long a child may run past the attempt's own time budget (start,
/// loading the compiled component, syncing outputs) before it is killed.
pub const PROCESS_GRACE: Duration = Duration::from_secs(120);
/// How often a waiting coordinator looks at its child and the cancel flag.
const POLL: Duration = Duration::from_millis(2);
/// How much of a child's stderr is kept for messages.
const STDERR_TAIL_BYTES: usize = 4096;

/// What an executor is handed, stored in the CAS: one attempt of one run.
/// Its digest names the submission (and where its result is filed), so
/// the same attempt of the same run is one submission however often it is
/// sent. The run id is not part of what the guest sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The run the attempt belongs to.
    pub run: String,
    /// The attempt.
    pub request: Request,
}

/// An attempt's result as an executor files it: the submission it answers
/// (by digest) and the outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptResult {
    /// Digest of the stored [`Submission`] this result answers.
    pub request: Digest,
    /// Where it ran (`process`, `ray`, `kubernetes`).
    pub executor: String,
    /// What the attempt produced.
    pub outcome: Outcome,
}

/// The exit code `sluice exec-step` ends with for `outcome`.
pub fn exit_code(outcome: &Outcome) -> i32 {
    match outcome.failure.as_ref().map(|f| f.class) {
        None => EXIT_SUCCEEDED,
        Some(FailureClass::Step) => EXIT_STEP,
        Some(FailureClass::Limit) => EXIT_LIMIT,
        Some(FailureClass::Engine) => EXIT_ENGINE,
    }
}

/// Stores `submission` in the CAS and returns its digest (what `exec-step`
/// is given).
pub fn store_submission(store: &Store, submission: &Submission) -> Result<Digest, StoreError> {
    let bytes = serde_json::to_vec(submission).expect("submissions serialize");
    Ok(store.put_bytes(&bytes)?.0)
}

/// Reads a stored submission: verified by the store, bounded, every field
/// known.
pub fn load_submission(store: &Store, digest: &Digest) -> Result<Submission, String> {
    let file = store
        .open_verified(digest)
        .map_err(|e| format!("request {digest}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(REQUEST_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("request {digest}: {e}"))?;
    if bytes.len() as u64 > REQUEST_BYTES_MAX {
        return Err(format!(
            "request {digest} is larger than {REQUEST_BYTES_MAX} bytes"
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("request {digest} is not an attempt submission: {e}"))
}

/// The result filed for `request`, if any. A document that does not parse
/// or answers another request is an error, never a result.
pub fn read_result(store: &Store, request: &Digest) -> Result<Option<AttemptResult>, String> {
    let Some(bytes) = store
        .get_doc(RESULTS, request, RESULT_BYTES_MAX)
        .map_err(|e| format!("result of request {request}: {e}"))?
    else {
        return Ok(None);
    };
    let result: AttemptResult = serde_json::from_slice(&bytes)
        .map_err(|e| format!("result of request {request} is unreadable: {e}"))?;
    if result.request != *request {
        return Err(format!(
            "result filed under request {request} answers request {}",
            result.request
        ));
    }
    Ok(Some(result))
}

/// Files `result` under its request unless one is there already; returns
/// the result that stands (this one, or the first writer's).
pub fn write_result(store: &Store, result: &AttemptResult) -> Result<AttemptResult, String> {
    let bytes = serde_json::to_vec(result).expect("results serialize");
    let created = store
        .put_doc_once(RESULTS, &result.request, &bytes)
        .map_err(|e| format!("result of request {}: {e}", result.request))?;
    if created {
        return Ok(result.clone());
    }
    read_result(store, &result.request)?
        .ok_or_else(|| format!("result of request {} vanished", result.request))
}

/// What `sluice exec-step` runs an attempt with.
pub struct ExecStepEnv<'a> {
    /// Requests, components and inputs come from, outputs go to, this store.
    pub store: &'a Arc<Store>,
    /// The sandbox (its compile cache is shared with the coordinator).
    pub sandbox: &'a Sandbox,
    /// The gpu backend for a step with a grant (workers run next to the step).
    pub gpu: &'a dyn Fn() -> Arc<crate::gpu::Backend>,
    /// Set to stop the attempt.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Names this executor in the result.
    pub executor: ExecutorKind,
}

/// `sluice exec-step`: runs the attempt whose request is stored under
/// `request`, files its result once and returns the result that stands.
/// A request that already has a result is not run again. `Err` when no
/// result could be produced or filed.
pub fn exec_step(request: &Digest, env: &ExecStepEnv<'_>) -> Result<AttemptResult, String> {
    if let Some(done) = read_result(env.store, request)? {
        return Ok(done);
    }
    let req = load_submission(env.store, request)?.request;
    let component = req.description.component;
    let path = PathBuf::from(format!("component {component}"));
    let outcome = match attempt::prepare_from_store(env.sandbox, env.store, &component, &path) {
        Ok(prepared) => attempt::run(
            &req,
            &attempt::Env {
                sandbox: env.sandbox,
                component: &prepared,
                store: env.store,
                gpu: env.gpu,
                gpu_jobs: &Arc::new(AtomicU64::new(0)),
                cancel: env.cancel.clone(),
            },
        ),
        Err(failure) => Outcome::failed(failure),
    };
    // Outputs and logs are durable and visible before a result names them.
    env.store
        .sync()
        .map_err(|e| format!("request {request}: cannot sync the store: {e}"))?;
    // The boundary a killed executor dies at in the tests: the attempt ran
    // and wrote its outputs, but no result names them.
    crate::fault::point(&format!("exec.result:{}", req.attempt))
        .map_err(|e| format!("request {request}: cannot file the result: {e}"))?;
    write_result(
        env.store,
        &AttemptResult {
            request: *request,
            executor: env.executor.as_str().to_string(),
            outcome,
        },
    )
}

/// The `sluice exec-step` command line an executor starts: this binary (or
/// the one a cluster's nodes run) and the places it opens.
#[derive(Clone, Debug)]
pub struct ExecStepCommand {
    /// The `sluice` binary.
    pub exe: PathBuf,
    /// The engine home it opens (the same store and compile cache on this
    /// machine; a node-local cache in front of `store` elsewhere).
    pub home: PathBuf,
    /// The compile cache, when not the home's.
    pub compile_cache: Option<PathBuf>,
    /// The engine config (gpu worker kinds), when one was named.
    pub config: Option<PathBuf>,
    /// The shared store's URL, when the run has one.
    pub store: Option<String>,
}

impl ExecStepCommand {
    /// The command running this very binary.
    pub fn current(
        home: &Path,
        compile_cache: Option<PathBuf>,
        config: Option<PathBuf>,
        store: Option<String>,
    ) -> ExecStepCommand {
        ExecStepCommand {
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("sluice")),
            home: home.to_path_buf(),
            compile_cache,
            config,
            store,
        }
    }

    /// Its arguments for the submission `digest` (after the program).
    pub fn args(&self, digest: &Digest) -> Vec<String> {
        let mut args = vec![
            "exec-step".to_string(),
            "--home".into(),
            self.home.display().to_string(),
        ];
        if let Some(cache) = &self.compile_cache {
            args.extend(["--compile-cache".into(), cache.display().to_string()]);
        }
        if let Some(config) = &self.config {
            args.extend(["--config".into(), config.display().to_string()]);
        }
        if let Some(store) = &self.store {
            args.extend(["--store".into(), store.clone()]);
        }
        args.push(digest.to_string());
        args
    }
}

/// How a launched attempt ended, as its executor saw it.
pub(crate) enum Ended {
    /// It ended on its own; `what` names it and how (for a message when
    /// no result was filed), `log` is the tail of its output.
    Exited { what: String, log: Vec<u8> },
    /// The run was cancelled and the attempt stopped.
    Cancelled,
    /// Still running `grace` past the time limit; stopped.
    TimedOut { what: String },
}

/// The path every out-of-process executor shares: store the submission
/// (and sync, so wherever it runs finds everything), answer from a result
/// already filed for it, else `launch` it and check the result it filed.
/// A launch that ends without a result, or with one that does not hold up,
/// is an engine failure (retried as the step's `retries` allow).
pub(crate) fn submit(
    run: &str,
    request: &Request,
    store: &Store,
    launch: impl FnOnce(&Digest, Duration) -> Result<Ended, String>,
) -> Outcome {
    let step = crate::quoting::escape_controls(&request.description.step, 64);
    let submission = Submission {
        run: run.to_string(),
        request: request.clone(),
    };
    let stored = store_submission(store, &submission).and_then(|d| store.sync().map(|()| d));
    let digest = match stored {
        Ok(d) => d,
        Err(e) => {
            return Outcome::failed(Failure::engine(format!(
                "step `{step}`: cannot store the attempt request: {e}"
            )));
        }
    };
    // A result already filed (a previous coordinator's launch) is the
    // answer: the same submission never runs twice.
    match read_result(store, &digest) {
        Ok(Some(result)) => return checked(store, &step, result),
        Ok(None) => {}
        Err(e) => return Outcome::failed(Failure::engine(format!("step `{step}`: {e}"))),
    }
    let limit = Duration::from_secs(request.timeout_s) + PROCESS_GRACE;
    match launch(&digest, limit) {
        Ok(Ended::Cancelled) => Outcome::failed(Failure::step(CANCELLED_MESSAGE)),
        Ok(Ended::Exited { what, log }) => match read_result(store, &digest) {
            Ok(Some(result)) => checked(store, &step, result),
            Ok(None) => Outcome::failed(Failure::engine(format!(
                "step `{step}`: {what} without a result: {}",
                tail(&log)
            ))),
            Err(e) => Outcome::failed(Failure::engine(format!("step `{step}`: {e}"))),
        },
        Ok(Ended::TimedOut { what }) => Outcome::failed(Failure::engine(format!(
            "step `{step}`: {what} was still running {} s after its time limit and was stopped",
            PROCESS_GRACE.as_secs()
        ))),
        Err(e) => Outcome::failed(Failure::engine(format!("step `{step}`: {e}"))),
    }
}

/// Runs attempts in `sluice exec-step` child processes on this machine.
#[derive(Clone, Debug)]
pub struct ProcessExecutor {
    /// What it starts.
    pub command: ExecStepCommand,
}

impl Executor for ProcessExecutor {
    /// Runs `request` (of run `run`) in a child; see [`submit`].
    fn execute(
        &self,
        run: &str,
        request: &Request,
        store: &Store,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Outcome {
        submit(run, request, store, |digest, limit| {
            self.supervise(digest, limit, cancel)
        })
    }
}

impl ProcessExecutor {
    /// Starts the child and waits for it to end, be cancelled or run past
    /// `limit`; a cancelled or late child is killed with its process group.
    fn supervise(
        &self,
        request: &Digest,
        limit: Duration,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Result<Ended, String> {
        use std::os::unix::process::CommandExt as _;
        let exe = &self.command.exe;
        let what = format!("`sluice exec-step {request}`");
        let mut child = Command::new(exe)
            .args(self.command.args(request))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stderr = child.stderr.take();
        let drain = std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut pipe) = stderr {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * STDERR_TAIL_BYTES {
                        kept.drain(..kept.len() - STDERR_TAIL_BYTES);
                    }
                }
            }
            kept
        });
        let deadline = Instant::now() + limit;
        let kill = |child: &mut std::process::Child| {
            // The group first, before the leader is reaped (its id cannot
            // have been recycled yet): a gpu worker or compiler it started
            // goes too.
            let pid = rustix::process::Pid::from_child(child);
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = child.kill();
            let _ = child.wait();
        };
        let ended = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(format!("{what} exited ({status})")),
                Ok(None) => {}
                Err(e) => {
                    kill(&mut child);
                    return Err(format!("waiting for {what}: {e}"));
                }
            }
            if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
                kill(&mut child);
                break Err(Ended::Cancelled);
            }
            if Instant::now() >= deadline {
                kill(&mut child);
                break Err(Ended::TimedOut { what });
            }
            std::thread::sleep(POLL);
        };
        let log = drain.join().unwrap_or_default();
        Ok(match ended {
            Ok(what) => Ended::Exited { what, log },
            Err(other) => other,
        })
    }
}

/// Checks what an executor claims before the run believes it: every output
/// of a success is in the store, hashes to its name and has its size.
fn checked(store: &Store, step: &str, result: AttemptResult) -> Outcome {
    let outcome = result.outcome;
    if outcome.failure.is_none() {
        for (name, out) in &outcome.outputs {
            match store.verify(&out.digest) {
                Ok(size) if size == out.size => {}
                Ok(size) => {
                    return Outcome::failed(Failure::engine(format!(
                        "step `{step}`: the {} executor reported output `{name}` as {} bytes, the store holds {size}",
                        result.executor, out.size
                    )));
                }
                Err(e) => {
                    return Outcome::failed(Failure::engine(format!(
                        "step `{step}`: the {} executor reported output `{name}` = {}: {e}",
                        result.executor, out.digest
                    )));
                }
            }
        }
    }
    outcome
}

/// The last lines of a child's stderr, one line.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let shown = lines[lines.len().saturating_sub(5)..].join(" | ");
    if shown.is_empty() {
        "(no output)".to_string()
    } else {
        crate::quoting::escape_controls(&shown, 1024)
    }
}

/// A request of step `train` (300 MiB, output `model`) with a grant on
/// worker kind `gpu`, for the executors' tests.
#[cfg(test)]
pub(crate) fn test_request(gpu: Option<&str>, attempt: u32) -> Request {
    let limits = crate::limits::Limits {
        memory_mib: 300,
        ..Default::default()
    };
    crate::attempt::Plan {
        component: Digest::of(b"component"),
        step: "train".into(),
        inputs: Default::default(),
        outputs: vec!["model".into()],
        params: Default::default(),
        limits,
        run_seed: 0,
        gpu: gpu.map(|w| crate::spec::Grant {
            worker: w.into(),
            max_jobs: 1,
            min_free_memory_mib: 0,
        }),
    }
    .request(attempt)
}
