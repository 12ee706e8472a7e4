//! Build tools run with a deadline: cargo for Rust steps, pip, npm,
//! componentize-py and node for Python and JavaScript steps. Code a step
//! author wrote runs inside them at build time (a crate's build script or
//! procedural macros, a module's top level), so a build that never ends
//! must not hang the run, nor a service worker, forever.
//!
//! Boundary: spawns the given command and kills its process group; knows
//! nothing of steps or languages.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How often a running tool is checked for exit.
const POLL: Duration = Duration::from_millis(20);

/// The build deadline: `SLUICE_BUILD_TIMEOUT_S` seconds (a positive
/// integer) when set, else `default` (the caller's, per kind of tool: a
/// cold cargo build of a step crate with heavy dependencies takes far
/// longer than a componentize-py run).
pub fn build_timeout(default: Duration) -> Duration {
    std::env::var("SLUICE_BUILD_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(default, Duration::from_secs)
}

/// Runs `cmd` (stdout and stderr captured) in a process group of its own
/// and returns its output whatever its exit status. Past `limit` the whole
/// group is killed (before the leader is reaped, so its id cannot have
/// been recycled) and the error is `"{what} did not finish within N s and
/// was stopped {why}"`; a tool that cannot start is `"cannot run {what}:
/// …"`.
pub fn run_within(
    mut cmd: Command,
    what: &str,
    limit: Duration,
    why: &str,
) -> Result<Output, String> {
    use std::os::unix::process::CommandExt as _;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    let stdout = Drain::start(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = Drain::start(child.stderr.take().map(|p| Box::new(p) as _));
    // A limit too far out to represent is no limit.
    let deadline = Instant::now().checked_add(limit);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                let pid = rustix::process::Pid::from_child(&child);
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "{what} did not finish within {} s and was stopped {why}",
                    limit.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => break Err(format!("{what}: {e}")),
        }
    };
    // The group is gone (exited or killed), but a process it started in
    // a session of its own may still hold the pipes open: wait for their
    // end only briefly, then keep what was read.
    let until = Instant::now() + OUTPUT_GRACE;
    let (stdout, stderr) = (stdout.finish(until), stderr.finish(until));
    Ok(Output {
        status: status?,
        stdout,
        stderr,
    })
}

/// How long a tool's pipes may stay open after the tool has exited or been
/// killed: what it wrote before its exit is read by then.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// One of a tool's pipes, read to its end on a thread of its own (a tool
/// writing more than a pipe holds must not block while we wait for its
/// exit).
struct Drain {
    bytes: Arc<Mutex<Vec<u8>>>,
    /// Disconnected when the thread has read the pipe to its end.
    ended: mpsc::Receiver<()>,
}

impl Drain {
    fn start(pipe: Option<Box<dyn Read + Send>>) -> Drain {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (ending, ended) = mpsc::channel::<()>();
        let sink = bytes.clone();
        std::thread::spawn(move || {
            let _ending = ending;
            let Some(mut pipe) = pipe else { return };
            let mut chunk = [0u8; 64 * 1024];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        });
        Drain { bytes, ended }
    }

    /// What was read once the pipe ended, or by `until` if it has not.
    fn finish(self, until: Instant) -> Vec<u8> {
        let _ = self
            .ended
            .recv_timeout(until.saturating_duration_since(Instant::now()));
        std::mem::take(&mut *self.bytes.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The last `lines` lines of a tool's stderr.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tool that runs past its limit is stopped with everything it
    /// started (its process group), and the error says so.
    #[test]
    fn a_tool_past_its_limit_is_stopped_with_its_children() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 60 & echo started >&2; sleep 60"]);
        let t0 = Instant::now();
        let err = run_within(cmd, "the build", Duration::from_millis(300), "(why)").unwrap_err();
        assert_eq!(
            err,
            "the build did not finish within 0.3 s and was stopped (why)"
        );
        // The background `sleep` held stderr open: returning at all means
        // the whole group was killed.
        assert!(t0.elapsed() < Duration::from_secs(30));
    }

    /// A process the tool started in a session of its own (out of reach of
    /// the group kill) that keeps the tool's pipes open does not hold up
    /// the build: neither after the tool exits nor after it is stopped.
    #[test]
    fn a_daemon_holding_the_pipes_does_not_hang_the_build() {
        let t0 = Instant::now();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "setsid sleep 60 & echo built; echo warned >&2; exit 0",
        ]);
        let out = run_within(cmd, "the build", Duration::from_secs(60), "").unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"built\n");
        assert_eq!(out.stderr, b"warned\n");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "setsid sleep 60 & sleep 60"]);
        let err = run_within(cmd, "the build", Duration::from_millis(300), "(why)").unwrap_err();
        assert_eq!(
            err,
            "the build did not finish within 0.3 s and was stopped (why)"
        );
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    }

    /// A limit too large to add to the clock is no limit, not a panic.
    #[test]
    fn an_unrepresentable_limit_waits_for_the_tool() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo done"]);
        let out = run_within(cmd, "the build", Duration::from_secs(u64::MAX), "").unwrap();
        assert_eq!(out.stdout, b"done\n");
    }

    /// A failing tool's output comes back with its status; a missing one
    /// is named.
    #[test]
    fn a_failing_tool_returns_its_output_and_a_missing_one_is_named() {
        let err = run_within(
            Command::new("/nonexistent/cargo"),
            "cargo",
            Duration::from_secs(60),
            "",
        )
        .unwrap_err();
        assert!(err.starts_with("cannot run cargo: "), "{err}");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo first >&2; echo second >&2; exit 3"]);
        let out = run_within(cmd, "the build", Duration::from_secs(60), "").unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(tail(&out.stderr, 1), "second");
        assert_eq!(tail(&out.stderr, 5), "first\nsecond");
    }
}
