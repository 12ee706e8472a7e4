//! Fault injection at the engine's write boundaries, for the crash and
//! disk-error tests (HOSTILE.md group 14).
//!
//! `SLUICE_FAULTS="POINT@N=ACTION,..."` makes the `N`th hit (1-based, per
//! process) of the write boundary `POINT` fail:
//! - `enospc` / `eio`: the write returns that OS error, as a full or failing
//!   disk would;
//! - `crash`: the process aborts on the spot, as `kill -9` or a power cut
//!   would, leaving whatever the previous writes left.
//!
//! Points: `store.blob` (a chunk of any blob being written), `store.output`
//! (a chunk of a step's output, on its way into a blob), `store.publish`
//! (after a blob's fsync, before the rename that names it), `record` (a
//! record line), `log` (a transparency-log append), `cache` (a step-cache
//! entry), `index` (the service's insert of a submitted run),
//! `exec.result:ATTEMPT` (an `exec-step` process about to file the result
//! of an attempt it ran: attempt-specific, since every child process counts
//! its own hits), and
//! `file:NAME` (the
//! durable replacement of a file named `NAME`: `summary.json`,
//! `provenance.json`, `seal.json`, cache entries by key, ...).
//!
//! Invariant: with the variable unset (always, outside tests) a point costs
//! one initialised-`OnceLock` read and never fails. Boundary: decides
//! whether a write fails; knows nothing of what is written.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms faults.
pub const FAULTS_ENV: &str = "SLUICE_FAULTS";

#[derive(Debug)]
enum Action {
    NoSpace,
    Io,
    Crash,
}

#[derive(Debug)]
struct Fault {
    point: String,
    nth: u64,
    action: Action,
    hits: AtomicU64,
}

fn armed() -> &'static [Fault] {
    static FAULTS: OnceLock<Vec<Fault>> = OnceLock::new();
    FAULTS.get_or_init(|| {
        std::env::var(FAULTS_ENV)
            .map(|spec| parse(&spec))
            .unwrap_or_default()
    })
}

/// Parses `POINT@N=ACTION,...`; a malformed entry is ignored with a warning
/// (faults are a test facility, never a reason to refuse to start).
fn parse(spec: &str) -> Vec<Fault> {
    spec.split(',')
        .filter(|e| !e.trim().is_empty())
        .filter_map(|entry| {
            let parsed = (|| {
                let (target, action) = entry.trim().split_once('=')?;
                let (point, nth) = target.rsplit_once('@')?;
                let action = match action {
                    "enospc" => Action::NoSpace,
                    "eio" => Action::Io,
                    "crash" => Action::Crash,
                    _ => return None,
                };
                Some(Fault {
                    point: point.to_string(),
                    nth: nth.parse().ok().filter(|n| *n > 0)?,
                    action,
                    hits: AtomicU64::new(0),
                })
            })();
            if parsed.is_none() {
                tracing::warn!(entry, "ignoring a malformed {FAULTS_ENV} entry");
            }
            parsed
        })
        .collect()
}

/// A write boundary named `point` is about to write: fails (or crashes) if
/// a fault is armed for this hit.
pub fn point(point: &str) -> io::Result<()> {
    // Every entry of this point counts every hit, so `p@1=…,p@2=…` arms
    // the first and the second hit.
    let mut fired = None;
    for fault in armed().iter().filter(|f| f.point == point) {
        if fault.hits.fetch_add(1, Ordering::SeqCst) + 1 == fault.nth && fired.is_none() {
            fired = Some(fault);
        }
    }
    if let Some(fault) = fired {
        return match fault.action {
            Action::NoSpace => Err(io::Error::from_raw_os_error(libc_enospc())),
            Action::Io => Err(io::Error::from_raw_os_error(libc_eio())),
            Action::Crash => {
                eprintln!("sluice: injected crash at {point} (hit {})", fault.nth);
                std::process::abort()
            }
        };
    }
    Ok(())
}

/// `point` for the durable replacement of the file at `path`.
pub fn file(path: &std::path::Path) -> io::Result<()> {
    if armed().is_empty() {
        return Ok(());
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    point(&format!("file:{name}"))
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

fn libc_eio() -> i32 {
    rustix::io::Errno::IO.raw_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_malformed_ones_are_dropped() {
        let faults = parse(
            "record@3=crash, store.blob@1=enospc,file:summary.json@2=eio,bad,x@0=eio,y@1=boom",
        );
        let got: Vec<String> = faults
            .iter()
            .map(|f| format!("{}@{}={:?}", f.point, f.nth, f.action))
            .collect();
        assert_eq!(
            got,
            [
                "record@3=Crash",
                "store.blob@1=NoSpace",
                "file:summary.json@2=Io"
            ]
        );
    }

    #[test]
    fn errors_carry_the_os_codes_a_real_disk_returns() {
        assert_eq!(
            io::Error::from_raw_os_error(libc_enospc()).kind(),
            io::ErrorKind::StorageFull
        );
        assert_eq!(libc_eio(), 5);
    }
}
