//! The reference CPU worker of the Sluice worker protocol, version 1
//! (`workers/PROTOCOL.md`): a long-lived process that the engine
//! hands `train-mlp` jobs over JSON lines, and that trains them natively
//! and deterministically with [`sluice_tabular::mlp::train`].
//!
//! It is the worker a machine without a GPU uses, and the oracle the
//! PyTorch worker (`workers/torch`) is compared with: same op,
//! same params, same model document. It is not a scheduler (jobs run one
//! at a time, in the order they arrive) and knows nothing of the engine's
//! store beyond the input paths and digests a `run` names.
//!
//! Start at [`serve`]; the engine's binary runs it on stdin/stdout as
//! `sluice worker cpu` (the built-in command of worker kind `cpu`):
//!
//! ```no_run
//! use std::io::{self, BufReader};
//! sluice_cpu_worker::serve(BufReader::new(io::stdin()), io::stdout().lock())?;
//! # Ok::<(), io::Error>(())
//! ```
//!
//! Modules: `protocol` (the wire messages and bounded line reading) and
//! `job` (the op `train-mlp`); this file is the loop that ties them
//! together and the thread that reads the engine's lines while a job runs,
//! so a `cancel` reaches it.

#![warn(missing_docs)]

mod job;
mod protocol;

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

pub use protocol::{LINE_BYTES_MAX, PROTOCOL_VERSION};

use job::{Control, Outcome};
use protocol::{Device, Incoming, Line, Outgoing, RunRequest, Status};

/// The worker kind this crate announces in `hello`.
pub const WORKER_KIND: &str = "cpu";

/// The crate version, announced in `hello` under `sluice-cpu-worker`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Most messages read ahead of the job loop. The engine sends one job at a
/// time, so this only bounds memory against a misbehaving sender; when it
/// is full the reader stops reading until a job finishes.
const QUEUED_MESSAGES_MAX: usize = 64;

/// What the reader thread hands the job loop.
enum Queued {
    /// A job, and when its line was read (its deadline counts from there).
    Run(Box<RunRequest>, Instant),
    /// A `run` that cannot be started; answered with a failed result.
    BadRun { id: String, message: String },
    /// `shutdown`, or the end of input.
    Shutdown,
}

/// Jobs queued or running, by id, with their cancel flags. Bounded by
/// [`QUEUED_MESSAGES_MAX`] + 2: an id enters when its `run` is queued and
/// leaves when its result is sent.
type Live = Arc<Mutex<BTreeMap<String, Arc<AtomicBool>>>>;

/// Serves protocol v1: writes `hello` to `output`, then runs the jobs that
/// `run` lines on `input` describe, one at a time, answering each with
/// `progress` lines (at most ten per job) and exactly one `result`.
///
/// A thread reads `input` while a job runs, so a `cancel` stops it at its
/// next mini-batch (result `cancelled`). Malformed lines, unknown ops, bad
/// params and unreadable inputs never end the loop: a `run` with an id is
/// answered with a `failed` result naming the problem, anything else is
/// logged to stderr (the job log). Returns `Ok` after `shutdown` or the end
/// of `input`, once the job in progress has finished; an error only when
/// `output` cannot be written.
pub fn serve(input: impl BufRead + Send + 'static, mut output: impl Write) -> io::Result<()> {
    protocol::send(&mut output, &hello())?;
    let live: Live = Arc::default();
    let (queue, jobs) = mpsc::sync_channel(QUEUED_MESSAGES_MAX);
    let reader = {
        let live = Arc::clone(&live);
        thread::Builder::new()
            .name("sluice-worker-input".into())
            .spawn(move || read_messages(input, &queue, &live))?
    };
    while let Ok(queued) = jobs.recv() {
        match queued {
            Queued::Run(req, received) => {
                let cancel = live
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&req.id)
                    .cloned()
                    .unwrap_or_default();
                let outcome = run_job(&req, received, &cancel, &mut output);
                live.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&req.id);
                send_result(&mut output, &req.id, outcome?)?;
            }
            Queued::BadRun { id, message } => {
                send_result(&mut output, &id, Outcome::Failed(message))?;
            }
            Queued::Shutdown => break,
        }
    }
    // The reader returns right after queuing `Shutdown`.
    reader
        .join()
        .map_err(|_| io::Error::other("the input reader thread panicked"))
}

fn hello() -> Outgoing<'static> {
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let plural = if threads == 1 { "thread" } else { "threads" };
    Outgoing::Hello {
        protocol: PROTOCOL_VERSION,
        worker: WORKER_KIND,
        ops: job::OPS,
        versions: BTreeMap::from([("sluice-cpu-worker", VERSION)]),
        device: Device {
            kind: "cpu",
            name: format!("{} ({threads} {plural})", std::env::consts::ARCH),
            uuid: None,
        },
    }
}

fn run_job(
    req: &RunRequest,
    received: Instant,
    cancel: &AtomicBool,
    output: &mut impl Write,
) -> io::Result<Outcome> {
    // A deadline too far to represent is no deadline.
    let deadline = req.deadline_ms.and_then(|ms| {
        received
            .checked_add(Duration::from_millis(ms))
            .map(|at| (at, ms))
    });
    let control = Control { cancel, deadline };
    job::run(req, &control, &mut |epoch, epochs, loss| {
        let metrics = serde_json::json!({"loss": loss, "epoch": epoch});
        protocol::send(
            output,
            &Outgoing::Progress {
                id: &req.id,
                message: format!("epoch {epoch}/{epochs}"),
                metrics,
            },
        )
    })
}

fn no_metrics() -> Value {
    Value::Object(Map::new())
}

fn send_result(output: &mut impl Write, id: &str, outcome: Outcome) -> io::Result<()> {
    let (status, outputs, metrics, message) = match outcome {
        Outcome::Succeeded {
            output: (name, file),
            metrics,
        } => {
            let metrics = serde_json::to_value(&metrics).map_err(io::Error::other)?;
            (
                Status::Succeeded,
                BTreeMap::from([(name, file)]),
                metrics,
                None,
            )
        }
        Outcome::Failed(message) => (Status::Failed, BTreeMap::new(), no_metrics(), Some(message)),
        Outcome::Cancelled(message) => (
            Status::Cancelled,
            BTreeMap::new(),
            no_metrics(),
            Some(message),
        ),
    };
    if let Some(message) = &message {
        eprintln!("job {id}: {}: {message}", status.as_str());
    }
    protocol::send(
        output,
        &Outgoing::Result {
            id,
            status,
            outputs,
            metrics,
            message,
        },
    )
}

/// The reader thread: parses lines, flags cancels itself (the job loop is
/// busy with the job), queues everything else. Ends after queuing
/// `Shutdown`, at `shutdown`, the end of input or a read error.
fn read_messages(mut input: impl BufRead, queue: &mpsc::SyncSender<Queued>, live: &Live) {
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        let line = match protocol::read_line(&mut input, &mut buf) {
            Ok(line) => line,
            Err(e) => {
                eprintln!("worker: reading input failed, shutting down: {e}");
                break;
            }
        };
        line_no += 1;
        let received = Instant::now();
        let queued = match line {
            Line::End => break,
            Line::TooLong => {
                eprintln!(
                    "worker: input line {line_no}: longer than {LINE_BYTES_MAX} bytes, skipped"
                );
                continue;
            }
            Line::Complete if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Complete => match Incoming::parse(&buf) {
                Incoming::Run(req) => {
                    let mut live = live.lock().unwrap_or_else(PoisonError::into_inner);
                    if live.contains_key(&req.id) {
                        eprintln!(
                            "worker: input line {line_no}: run `{}` ignored: a job with that id is queued or running",
                            req.id
                        );
                        continue;
                    }
                    live.insert(req.id.clone(), Arc::default());
                    Queued::Run(req, received)
                }
                Incoming::Cancel(id) => {
                    match live.lock().unwrap_or_else(PoisonError::into_inner).get(&id) {
                        Some(flag) => flag.store(true, Ordering::Relaxed),
                        None => eprintln!(
                            "worker: input line {line_no}: cancel of `{id}` ignored: no such job queued or running"
                        ),
                    }
                    continue;
                }
                Incoming::Shutdown => break,
                Incoming::BadRun { id, message } => {
                    if live
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .contains_key(&id)
                    {
                        eprintln!(
                            "worker: input line {line_no}: run `{id}` ignored: a job with that id is queued or running"
                        );
                        continue;
                    }
                    Queued::BadRun { id, message }
                }
                Incoming::Unusable(message) => {
                    eprintln!("worker: input line {line_no}: {message}; skipped");
                    continue;
                }
            },
        };
        if queue.send(queued).is_err() {
            // The job loop is gone (it failed to write); nothing to do.
            return;
        }
    }
    let _ = queue.send(Queued::Shutdown);
}
