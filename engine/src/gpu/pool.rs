//! Worker processes and the per-kind pools that keep them warm.
//!
//! Invariant: a worker runs in its own process group and is killed as a
//! group, before it is reaped (so a recycled pid is never signalled); every
//! wait on a worker is bounded by a deadline; lines from its stdout are
//! bounded ([`protocol::LINE_BYTES_MAX`]) and queued with back-pressure
//! ([`INBOX_LINES_MAX`]); its stderr is kept up to [`JOB_LOG_BYTES_MAX`] per
//! job. At most [`WORKERS_PER_KIND_MAX`] processes of a kind exist at once.
//! Boundary: processes and pipes; the meaning of a job is `gpu::job`'s.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::config::WorkerCommand;
use super::protocol::{self, FromWorker, Hello};

/// Most worker processes of one kind alive at once (idle or busy); jobs
/// beyond that wait in state `queued`.
pub const WORKERS_PER_KIND_MAX: usize = 4;

/// Lines read from a worker but not yet consumed; the reader blocks (and
/// the worker with it) beyond this.
pub const INBOX_LINES_MAX: usize = 64;

/// Most bytes of a worker's stderr kept for one job's log.
pub const JOB_LOG_BYTES_MAX: usize = 1 << 20;

/// How long a worker may take to exit after `shutdown` before it is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why no worker of a kind could be had. Every variant names the kind; one
/// that had started says how it ended (`status`) and, where it wrote any,
/// the last line of its stderr (`log_tail`, empty or `; its stderr ends:
/// …`).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The directory of a built-in script could not be created.
    #[error("worker `{kind}`: {}: {error}", dir.display())]
    ScriptDir {
        /// Worker kind.
        kind: String,
        /// The directory.
        dir: std::path::PathBuf,
        /// The IO error.
        error: io::Error,
    },
    /// A built-in script could not be written.
    #[error("worker `{kind}`: {error}")]
    Script {
        /// Worker kind.
        kind: String,
        /// The write error.
        error: crate::durable::DurableError,
    },
    /// The process could not be started.
    #[error("worker `{kind}`: cannot start {}: {error}", command.display())]
    Start {
        /// Worker kind.
        kind: String,
        /// The program.
        command: std::path::PathBuf,
        /// The spawn error.
        error: io::Error,
    },
    /// The threads reading its pipes could not be started.
    #[error("worker `{kind}`: cannot start its reader threads: {error} ({status})")]
    ReaderThreads {
        /// Worker kind.
        kind: String,
        /// The thread error.
        error: io::Error,
        /// How it ended.
        status: String,
    },
    /// Its first message was not a `hello`.
    #[error("worker `{kind}` did not start with hello (first message: {first}); killed ({status})")]
    NotHello {
        /// Worker kind.
        kind: String,
        /// The type of its first message.
        first: &'static str,
        /// How it ended.
        status: String,
    },
    /// Its first line broke the protocol.
    #[error("worker `{kind}` sent a malformed first line: {problem}; killed ({status}){log_tail}")]
    MalformedHello {
        /// Worker kind.
        kind: String,
        /// What is wrong with the line.
        problem: String,
        /// How it ended.
        status: String,
        /// Its last stderr line.
        log_tail: String,
    },
    /// It exited before its `hello`.
    #[error("worker `{kind}` exited ({status}) before saying hello{log_tail}")]
    ExitedBeforeHello {
        /// Worker kind.
        kind: String,
        /// How it ended.
        status: String,
        /// Its last stderr line.
        log_tail: String,
    },
    /// No `hello` within the kind's `hello_timeout`.
    #[error("worker `{kind}` did not say hello within {timeout_s} s; killed ({status}){log_tail}")]
    HelloTimeout {
        /// Worker kind.
        kind: String,
        /// The timeout.
        timeout_s: u64,
        /// How it ended.
        status: String,
        /// Its last stderr line.
        log_tail: String,
    },
    /// It speaks another protocol version.
    #[error(
        "worker `{kind}` speaks protocol {protocol}; this engine speaks {}; killed ({status})",
        protocol::PROTOCOL_VERSION
    )]
    Protocol {
        /// Worker kind.
        kind: String,
        /// The version in its `hello`.
        protocol: u64,
        /// How it ended.
        status: String,
    },
    /// The pool is closed.
    #[error("worker `{kind}`: the dispatcher is shutting down")]
    ShuttingDown {
        /// Worker kind.
        kind: String,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the stdout reader hands over.
#[derive(Debug)]
enum Incoming {
    Line(Vec<u8>),
    TooLong(usize),
    ReadError(String),
}

#[derive(Debug, Default)]
struct InboxState {
    lines: VecDeque<Incoming>,
    /// stdout reached end of file.
    closed: bool,
    /// The worker is being killed: the reader must stop waiting for room.
    stopped: bool,
    /// A cancel request for this job key, not yet taken.
    cancel: Option<u64>,
}

/// Lines from one worker's stdout plus cancel requests, behind one
/// condition variable so a job waits on both at once.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    changed: Condvar,
}

/// What a job waiting on its worker gets next.
#[derive(Debug)]
pub(crate) enum Next {
    /// A parsed protocol message.
    Message(FromWorker),
    /// A line that is not one; the text names why.
    Malformed(String),
    /// The worker closed stdout (exited or crashed).
    Eof,
    /// Someone asked to cancel the job.
    Cancel,
    /// The deadline passed.
    Timeout,
}

impl Inbox {
    /// Asks the job with `key` to cancel; wakes it if it waits.
    pub(crate) fn request_cancel(&self, key: u64) {
        lock(&self.state).cancel = Some(key);
        self.changed.notify_all();
    }

    fn push(&self, item: Incoming) -> bool {
        let mut s = lock(&self.state);
        while s.lines.len() >= INBOX_LINES_MAX && !s.stopped {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.stopped {
            return false;
        }
        s.lines.push_back(item);
        self.changed.notify_all();
        true
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_all();
    }

    fn stop(&self) {
        lock(&self.state).stopped = true;
        self.changed.notify_all();
    }

    /// Waits for the next event of job `key` until `deadline`.
    pub(crate) fn next(&self, key: u64, deadline: Instant) -> Next {
        let mut s = lock(&self.state);
        loop {
            if s.cancel == Some(key) {
                s.cancel = None;
                return Next::Cancel;
            }
            if let Some(item) = s.lines.pop_front() {
                self.changed.notify_all();
                drop(s);
                return match item {
                    Incoming::Line(bytes) => match protocol::parse_line(&bytes) {
                        Ok(m) => Next::Message(m),
                        Err(e) => Next::Malformed(e.to_string()),
                    },
                    Incoming::TooLong(n) => Next::Malformed(format!(
                        "a line longer than {} bytes (at least {n})",
                        protocol::LINE_BYTES_MAX
                    )),
                    Incoming::ReadError(e) => Next::Malformed(format!("reading stdout: {e}")),
                };
            }
            if s.closed {
                return Next::Eof;
            }
            let now = Instant::now();
            if now >= deadline {
                return Next::Timeout;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until stdout closes or `deadline`; whether it closed.
    fn wait_closed(&self, deadline: Instant) -> bool {
        let mut s = lock(&self.state);
        loop {
            if s.closed {
                return true;
            }
            // Lines after shutdown are of no interest; keep the reader going.
            if !s.lines.is_empty() {
                s.lines.clear();
                self.changed.notify_all();
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Reads `\n`-terminated lines of at most `max` bytes.
enum LineRead {
    Line,
    TooLong(usize),
    Eof,
}

fn read_bounded_line(r: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<LineRead> {
    line.clear();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            // A last line without its newline still counts.
            return Ok(if line.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let body = if done { take - 1 } else { take };
        if line.len() + body > max {
            let n = line.len() + body;
            r.consume(take);
            return Ok(LineRead::TooLong(n));
        }
        line.extend_from_slice(&buf[..body]);
        r.consume(take);
        if done {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(LineRead::Line);
        }
    }
}

fn read_stdout(stdout: impl Read, inbox: &Inbox) {
    let mut r = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::new();
    loop {
        let item = match read_bounded_line(&mut r, &mut line, protocol::LINE_BYTES_MAX) {
            Ok(LineRead::Line) => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                Incoming::Line(std::mem::take(&mut line))
            }
            Ok(LineRead::TooLong(n)) => {
                // The rest of the stream cannot be framed any more: hand the
                // job the offence and stop reading (it kills the worker).
                inbox.push(Incoming::TooLong(n));
                return;
            }
            Ok(LineRead::Eof) => break,
            Err(e) => {
                inbox.push(Incoming::ReadError(e.to_string()));
                break;
            }
        };
        if !inbox.push(item) {
            break;
        }
    }
    inbox.close();
}

/// A worker's stderr, capped per job.
#[derive(Debug, Default)]
pub(crate) struct JobLog {
    bytes: Vec<u8>,
    dropped: u64,
    /// stderr reached end of file.
    closed: bool,
    /// The reader saw data and is reading it (not yet appended).
    reading: bool,
}

/// A worker's stderr: the pipe, the log read from it, and the signal that
/// the reader appended or reached end of file.
#[derive(Debug)]
pub(crate) struct Stderr {
    pipe: std::fs::File,
    log: Mutex<JobLog>,
    closed: Condvar,
}

/// How long a job waits for its worker's stderr to catch up with stdout.
const STDERR_CATCH_UP: Duration = Duration::from_millis(500);

impl Stderr {
    fn readable(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&self.pipe, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut fds, Some(&now)).unwrap_or(0) > 0
            && fds[0].revents().contains(PollFlags::IN)
    }

    /// Waits (bounded) until everything already in the pipe is in the log:
    /// a worker writes its stderr before its `result`, so once the result
    /// is read, the job's log is complete when the pipe is drained.
    fn catch_up(&self) {
        let deadline = Instant::now() + STDERR_CATCH_UP;
        let mut log = lock(&self.log);
        // Under the lock, `reading` is false and the pipe empty only when
        // every byte written so far has been appended; the reader notifies
        // after each append.
        while !log.closed && (log.reading || self.readable()) {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            log = self
                .closed
                .wait_timeout(log, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits (bounded) until stderr closes, so a dead worker's last words
    /// are in its log.
    fn wait_closed(&self, deadline: Instant) {
        let mut log = lock(&self.log);
        while !log.closed {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            log = self
                .closed
                .wait_timeout(log, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// How long a dead worker's stderr may take to drain into its log.
const STDERR_DRAIN: Duration = Duration::from_secs(1);

impl JobLog {
    fn append(&mut self, chunk: &[u8]) {
        let room = JOB_LOG_BYTES_MAX.saturating_sub(self.bytes.len());
        let keep = chunk.len().min(room);
        self.bytes.extend_from_slice(&chunk[..keep]);
        self.dropped += (chunk.len() - keep) as u64;
    }

    /// The log so far, with a note of what the cap dropped; resets it.
    fn take(&mut self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.bytes);
        if self.dropped > 0 {
            bytes.extend_from_slice(
                format!(
                    "\n[sluice: {} more bytes of stderr dropped; the job log keeps {JOB_LOG_BYTES_MAX}]\n",
                    self.dropped
                )
                .as_bytes(),
            );
            self.dropped = 0;
        }
        bytes
    }
}

fn read_stderr(sink: &Stderr) {
    use rustix::event::{PollFd, PollFlags};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Wait for data first, then announce the read, so a job can tell
        // "nothing pending" from "read but not yet appended".
        let mut fds = [PollFd::new(&sink.pipe, PollFlags::IN)];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
        lock(&sink.log).reading = true;
        let read = (&sink.pipe).read(&mut buf);
        let mut log = lock(&sink.log);
        log.reading = false;
        match read {
            Ok(0) => break,
            Ok(n) => log.append(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
        drop(log);
        sink.closed.notify_all();
    }
    lock(&sink.log).closed = true;
    sink.closed.notify_all();
}

/// Every worker process ever started by this process, for instance numbers.
static SPAWNED: AtomicU64 = AtomicU64::new(0);

/// A running worker process that said a valid `hello`.
pub(crate) struct Worker {
    /// Its kind (`[workers.KIND]`).
    pub kind: String,
    /// Its spawn number in this engine process (1, 2, ...): a respawned
    /// worker has a new one.
    pub instance: u64,
    /// The GPU it was started on (`CUDA_VISIBLE_DEVICES`).
    pub gpu: Option<String>,
    /// Its `hello`.
    pub hello: Hello,
    child: Child,
    stdin: Option<ChildStdin>,
    pub(crate) inbox: Arc<Inbox>,
    stderr: Arc<Stderr>,
    /// Jobs it ran (keys for cancel requests).
    jobs: u64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("kind", &self.kind)
            .field("instance", &self.instance)
            .field("pid", &self.child.id())
            .finish()
    }
}

/// How an exit status reads in messages: `status 3` or `signal 9`.
pub(crate) fn describe_exit(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("status {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => s.to_string(),
        },
        None => "status unknown".to_string(),
    }
}

impl Worker {
    /// Starts a worker of `kind` and waits (bounded) for a valid `hello`.
    pub(crate) fn spawn(
        kind: &str,
        cmd: &WorkerCommand,
        gpu: Option<&str>,
    ) -> Result<Worker, WorkerError> {
        if let Some(m) = &cmd.materialize
            && std::fs::read_to_string(&m.path).ok().as_deref() != Some(m.contents)
        {
            if let Some(dir) = m.path.parent() {
                std::fs::create_dir_all(dir).map_err(|error| WorkerError::ScriptDir {
                    kind: kind.to_string(),
                    dir: dir.to_path_buf(),
                    error,
                })?;
            }
            crate::durable::write_atomic(&m.path, m.contents.as_bytes(), false).map_err(
                |error| WorkerError::Script {
                    kind: kind.to_string(),
                    error,
                },
            )?;
        }
        let mut command = Command::new(&cmd.command);
        command
            .args(&cmd.args)
            .envs(&cmd.env)
            .env("CUDA_VISIBLE_DEVICES", gpu.unwrap_or(""))
            .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
            .env("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            .env("SLUICE_WORKER_KIND", kind)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: killing the worker kills what it started.
            .process_group(0);
        let mut child = command.spawn().map_err(|error| WorkerError::Start {
            kind: kind.to_string(),
            command: cmd.command.clone(),
            error,
        })?;
        let instance = SPAWNED.fetch_add(1, Ordering::Relaxed) + 1;
        let inbox = Arc::new(Inbox::default());
        let log = Arc::new(Stderr {
            pipe: std::fs::File::from(std::os::fd::OwnedFd::from(
                child.stderr.take().expect("piped stderr"),
            )),
            log: Mutex::default(),
            closed: Condvar::new(),
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let spawn_thread = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name).spawn(f).map(|_| ())
        };
        let reader_inbox = inbox.clone();
        let reader_log = log.clone();
        let started = spawn_thread(
            format!("sluice-worker-{kind}-out"),
            Box::new(move || read_stdout(stdout, &reader_inbox)),
        )
        .and_then(|()| {
            spawn_thread(
                format!("sluice-worker-{kind}-err"),
                Box::new(move || read_stderr(&reader_log)),
            )
        });
        let mut worker = Worker {
            kind: kind.to_string(),
            instance,
            gpu: gpu.map(str::to_string),
            hello: Hello {
                protocol: 0,
                worker: String::new(),
                ops: Vec::new(),
                versions: Default::default(),
                device: Default::default(),
            },
            stdin: child.stdin.take(),
            child,
            inbox,
            stderr: log,
            jobs: 0,
        };
        if let Err(error) = started {
            let status = worker.kill();
            return Err(WorkerError::ReaderThreads {
                kind: kind.to_string(),
                error,
                status,
            });
        }
        let deadline = Instant::now() + cmd.hello_timeout;
        let first = worker.inbox.next(u64::MAX, deadline);
        let hello = match first {
            Next::Message(FromWorker::Hello(h)) => h,
            Next::Message(other) => {
                let status = worker.kill();
                return Err(WorkerError::NotHello {
                    kind: kind.to_string(),
                    first: message_kind(&other),
                    status,
                });
            }
            Next::Malformed(problem) => {
                let status = worker.kill();
                return Err(WorkerError::MalformedHello {
                    kind: kind.to_string(),
                    problem,
                    status,
                    log_tail: worker.log_tail(),
                });
            }
            Next::Eof => {
                let status = worker.kill();
                return Err(WorkerError::ExitedBeforeHello {
                    kind: kind.to_string(),
                    status,
                    log_tail: worker.log_tail(),
                });
            }
            Next::Timeout | Next::Cancel => {
                let status = worker.kill();
                return Err(WorkerError::HelloTimeout {
                    kind: kind.to_string(),
                    timeout_s: cmd.hello_timeout.as_secs(),
                    status,
                    log_tail: worker.log_tail(),
                });
            }
        };
        if hello.protocol != protocol::PROTOCOL_VERSION {
            let status = worker.kill();
            return Err(WorkerError::Protocol {
                kind: kind.to_string(),
                protocol: hello.protocol,
                status,
            });
        }
        worker.hello = hello;
        Ok(worker)
    }

    /// A fresh key for the next job (cancel requests carry it, so a late
    /// request never hits a later job).
    pub(crate) fn next_job_key(&mut self) -> u64 {
        self.jobs += 1;
        self.jobs
    }

    /// Writes one line to the worker's stdin.
    pub(crate) fn send(&mut self, line: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stdin closed"))?;
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        stdin.write_all(&bytes)?;
        stdin.flush()
    }

    /// Takes the stderr captured since the last call, including whatever
    /// the worker wrote before the line just read.
    pub(crate) fn take_log(&self) -> Vec<u8> {
        self.stderr.catch_up();
        lock(&self.stderr.log).take()
    }

    /// The last stderr line, for messages about a worker that died (after
    /// letting its stderr drain, bounded).
    fn log_tail(&self) -> String {
        if self.stdin.is_none() {
            self.stderr.wait_closed(Instant::now() + STDERR_DRAIN);
        }
        let log = lock(&self.stderr.log);
        let text = String::from_utf8_lossy(&log.bytes);
        match text.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(l) => format!(
                "; its stderr ends: {}",
                crate::quoting::escape_controls(l.trim(), 300)
            ),
            None => String::new(),
        }
    }

    /// Kills the worker's process group and reaps it; returns how it ended.
    pub(crate) fn kill(&mut self) -> String {
        self.inbox.stop();
        drop(self.stdin.take());
        // The group is signalled before the leader is reaped, so its pid
        // cannot have been recycled.
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        let _ = self.child.kill();
        describe_exit(self.child.wait().ok())
    }

    /// How a worker whose stdout closed ended (it is killed if it lingers).
    pub(crate) fn reap_after_eof(&mut self) -> String {
        // The stdout pipe closes as the process exits; a process that closed
        // it and lives on is killed, which `kill` reports as a signal.
        if let Ok(Some(status)) = self.child.try_wait() {
            self.inbox.stop();
            drop(self.stdin.take());
            return describe_exit(Some(status));
        }
        self.kill()
    }

    /// `shutdown`, then end of stdin; killed if still running after
    /// [`SHUTDOWN_GRACE`].
    pub(crate) fn shutdown(mut self) {
        let _ = self.send(&protocol::shutdown_line());
        drop(self.stdin.take());
        if self.inbox.wait_closed(Instant::now() + SHUTDOWN_GRACE)
            && let Ok(Some(_)) = self.child.try_wait()
        {
            self.inbox.stop();
            return;
        }
        let _ = self.kill();
    }

    /// The stderr tail, for failure messages.
    pub(crate) fn stderr_tail(&self) -> String {
        self.log_tail()
    }

    /// Takes the log of a worker that was killed or exited, after its
    /// stderr drained (bounded).
    pub(crate) fn take_final_log(&self) -> Vec<u8> {
        self.stderr.wait_closed(Instant::now() + STDERR_DRAIN);
        self.take_log()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Never leave a process behind: a worker dropped without `kill` or
        // `shutdown` (a panic unwinding) is killed here.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.kill();
        }
    }
}

/// The name of a message's type, for messages.
pub(crate) fn message_kind(m: &FromWorker) -> &'static str {
    match m {
        FromWorker::Hello(_) => "hello",
        FromWorker::Progress { .. } => "progress",
        FromWorker::Result(_) => "result",
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    kind: String,
    gpu: Option<String>,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: HashMap<PoolKey, Vec<Worker>>,
    /// Busy workers (and spawns in progress) per kind.
    busy: HashMap<String, usize>,
    closed: bool,
}

impl PoolState {
    fn alive(&self, kind: &str) -> usize {
        self.busy.get(kind).copied().unwrap_or(0)
            + self
                .idle
                .iter()
                .filter(|(k, _)| k.kind == kind)
                .map(|(_, v)| v.len())
                .sum::<usize>()
    }
}

/// Idle workers per (kind, GPU), shared by every job of a dispatcher.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    state: Mutex<PoolState>,
    freed: Condvar,
    spawned: AtomicU64,
}

/// How a worker was obtained.
pub(crate) enum Acquired {
    /// An idle worker (warm).
    Warm(Worker),
    /// Freshly started.
    Spawned(Worker),
}

impl Pool {
    /// Worker processes this pool started.
    pub(crate) fn spawned(&self) -> u64 {
        self.spawned.load(Ordering::Relaxed)
    }

    /// Wakes jobs waiting for a worker (to notice a cancel). Taking the
    /// lock first means a waiter is either before its cancel check or
    /// already waiting: the wake-up cannot be lost.
    pub(crate) fn wake(&self) {
        drop(lock(&self.state));
        self.freed.notify_all();
    }

    /// A worker of `kind` on `gpu`: an idle one, a new one while fewer than
    /// [`WORKERS_PER_KIND_MAX`] exist, or the first to be freed. Returns
    /// `Ok(None)` when `cancelled()` turns true while waiting.
    pub(crate) fn acquire(
        &self,
        kind: &str,
        cmd: &WorkerCommand,
        gpu: Option<&str>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<Acquired>, WorkerError> {
        let key = PoolKey {
            kind: kind.to_string(),
            gpu: gpu.map(str::to_string),
        };
        let mut evict = None;
        {
            let mut s = lock(&self.state);
            loop {
                if cancelled() {
                    return Ok(None);
                }
                if s.closed {
                    return Err(WorkerError::ShuttingDown {
                        kind: kind.to_string(),
                    });
                }
                if let Some(w) = s.idle.get_mut(&key).and_then(Vec::pop) {
                    *s.busy.entry(kind.to_string()).or_default() += 1;
                    return Ok(Some(Acquired::Warm(w)));
                }
                if s.alive(kind) < WORKERS_PER_KIND_MAX {
                    *s.busy.entry(kind.to_string()).or_default() += 1;
                    break;
                }
                // At the limit: an idle worker of this kind on another GPU
                // makes room.
                if let Some(w) = s
                    .idle
                    .iter_mut()
                    .find(|(k, v)| k.kind == kind && !v.is_empty())
                    .and_then(|(_, v)| v.pop())
                {
                    evict = Some(w);
                    *s.busy.entry(kind.to_string()).or_default() += 1;
                    break;
                }
                s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        }
        if let Some(w) = evict {
            w.shutdown();
        }
        self.spawned.fetch_add(1, Ordering::Relaxed);
        match Worker::spawn(kind, cmd, gpu) {
            Ok(w) => Ok(Some(Acquired::Spawned(w))),
            Err(e) => {
                self.release_slot(kind);
                Err(e)
            }
        }
    }

    fn release_slot(&self, kind: &str) {
        let mut s = lock(&self.state);
        if let Some(n) = s.busy.get_mut(kind) {
            *n = n.saturating_sub(1);
        }
        drop(s);
        self.freed.notify_all();
    }

    /// Returns a healthy worker to the idle set.
    pub(crate) fn release(&self, worker: Worker) {
        let mut s = lock(&self.state);
        if let Some(n) = s.busy.get_mut(&worker.kind) {
            *n = n.saturating_sub(1);
        }
        if s.closed {
            drop(s);
            worker.shutdown();
        } else {
            let key = PoolKey {
                kind: worker.kind.clone(),
                gpu: worker.gpu.clone(),
            };
            s.idle.entry(key).or_default().push(worker);
            drop(s);
        }
        self.freed.notify_all();
    }

    /// Frees the slot of a worker that was killed.
    pub(crate) fn discard(&self, kind: &str) {
        self.release_slot(kind);
    }

    /// Shuts every idle worker down; later releases shut theirs down too.
    pub(crate) fn close(&self) {
        let idle: Vec<Worker> = {
            let mut s = lock(&self.state);
            s.closed = true;
            s.idle.drain().flat_map(|(_, v)| v).collect()
        };
        self.freed.notify_all();
        for w in idle {
            w.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut r = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_bounded_line(&mut r, &mut line, max).unwrap() {
                LineRead::Line => out.push(String::from_utf8_lossy(&line).into_owned()),
                LineRead::TooLong(n) => {
                    out.push(format!("<too long: {n}>"));
                    return out;
                }
                LineRead::Eof => return out,
            }
        }
    }

    #[test]
    fn lines_are_bounded_and_a_last_line_without_newline_counts() {
        assert_eq!(lines(b"ab\r\ncd\nef", 10), ["ab", "cd", "ef"]);
        assert_eq!(
            lines(b"ok\n0123456789abc\nok\n", 10),
            ["ok", "<too long: 13>"]
        );
    }

    #[test]
    fn job_log_keeps_its_cap_and_says_what_it_dropped() {
        let mut log = JobLog::default();
        log.append(&vec![b'a'; JOB_LOG_BYTES_MAX - 1]);
        log.append(b"bcd");
        let taken = log.take();
        assert!(taken.starts_with(&[b'a'; 10]));
        let tail = String::from_utf8_lossy(&taken[JOB_LOG_BYTES_MAX..]).into_owned();
        assert_eq!(
            tail,
            format!(
                "\n[sluice: 2 more bytes of stderr dropped; the job log keeps {JOB_LOG_BYTES_MAX}]\n"
            )
        );
        assert!(log.take().is_empty());
    }

    #[test]
    fn inbox_delivers_cancel_only_to_its_job_and_times_out() {
        let inbox = Inbox::default();
        inbox.request_cancel(1);
        let soon = Instant::now() + Duration::from_millis(1);
        assert!(matches!(inbox.next(2, soon), Next::Timeout));
        inbox.request_cancel(2);
        assert!(matches!(inbox.next(2, soon), Next::Cancel));
        assert!(inbox.push(Incoming::Line(
            b"{\"type\":\"progress\",\"id\":\"j1\"}".to_vec()
        )));
        assert!(matches!(
            inbox.next(2, soon),
            Next::Message(FromWorker::Progress { .. })
        ));
        assert!(inbox.push(Incoming::Line(b"nope".to_vec())));
        assert!(
            matches!(inbox.next(2, soon), Next::Malformed(m) if m.starts_with("not a JSON line"))
        );
        inbox.close();
        assert!(matches!(inbox.next(2, soon), Next::Eof));
    }
}
