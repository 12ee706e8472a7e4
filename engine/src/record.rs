//! The run record: `<home>/runs/<run_id>/record.jsonl`, one event per line.
//!
//! Invariant: line `n` carries `"seq": n` and `"prev"`, the sha256 of line
//! `n-1` (a fixed genesis digest for line 0), so the record is a hash chain
//! that a later `verify` can check. Lines are flushed as written and fsynced
//! on a group-commit cadence ([`GROUP_COMMIT`]) and when the record closes:
//! a crash loses at most the last moments of deterministic, re-executable
//! steps.
//! Boundary: knows JSON lines and files; not what the events mean.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::store::Digest;

/// Longest interval between fsyncs of an open record.
pub const GROUP_COMMIT: Duration = Duration::from_millis(100);

/// What line 0's `prev` is.
pub fn genesis() -> Digest {
    Digest::of(b"sluice-record-v1")
}

/// An open record being appended to.
pub struct Record {
    path: PathBuf,
    out: BufWriter<File>,
    seq: u64,
    prev: Digest,
    last_sync: Instant,
}

impl Record {
    /// Creates a new record file (failing if it exists).
    pub fn create(path: &Path) -> io::Result<Record> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Record {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            seq: 0,
            prev: genesis(),
            last_sync: Instant::now(),
        })
    }

    /// Appends one event: `kind` plus the fields of `fields` (an object).
    /// Returns whether this append was a group commit (fsync).
    pub fn append(&mut self, kind: &str, fields: Value) -> io::Result<bool> {
        let mut line = Map::new();
        line.insert("seq".into(), self.seq.into());
        line.insert("prev".into(), self.prev.to_string().into());
        line.insert("at".into(), rfc3339_now().into());
        line.insert("type".into(), kind.into());
        if let Value::Object(f) = fields {
            line.extend(f);
        }
        let mut text = serde_json::to_string(&Value::Object(line)).map_err(io::Error::other)?;
        self.prev = Digest::of(text.as_bytes());
        text.push('\n');
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        self.seq += 1;
        if self.last_sync.elapsed() >= GROUP_COMMIT {
            self.out.get_ref().sync_data()?;
            self.last_sync = Instant::now();
            return Ok(true);
        }
        Ok(false)
    }

    /// Flushes and fsyncs the record and its directory.
    pub fn close(mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn rfc3339_now() -> String {
    rfc3339(now_ms())
}

/// `ms` since the epoch as RFC 3339 UTC, e.g. `2026-11-26T15:36:31.000Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day); H. Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_707_391_000), "2026-11-26T15:36:31.000Z");
    }

    #[test]
    fn lines_chain_by_sha256_of_the_previous_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.jsonl");
        let mut r = Record::create(&path).unwrap();
        r.append("a", serde_json::json!({"x": 1})).unwrap();
        r.append("b", serde_json::json!({})).unwrap();
        r.close().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first: Value = serde_json::from_str(lines[0]).unwrap();
        let second: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(first["seq"], 0);
        assert_eq!(first["prev"], genesis().to_string());
        assert_eq!(first["x"], 1);
        assert_eq!(second["seq"], 1);
        assert_eq!(second["prev"], Digest::of(lines[0].as_bytes()).to_string());
        assert!(
            Record::create(&path).is_err(),
            "a record is never overwritten"
        );
    }
}
