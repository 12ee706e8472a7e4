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

use crate::digest::Digest;

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

    /// Reopens an unfinished record to continue it (a resumed run). A torn
    /// last line — a write cut short by a crash — is truncated away and its
    /// size returned; a record whose chain is otherwise broken is refused.
    pub fn reopen(path: &Path) -> Result<(Record, Vec<Value>, u64), ReopenError> {
        let bytes = std::fs::read(path).map_err(ReopenError::Io)?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let torn = (bytes.len() - complete) as u64;
        let chain = check_chain(&bytes[..complete]).map_err(ReopenError::Chain)?;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(ReopenError::Io)?;
        if torn > 0 {
            file.set_len(complete as u64).map_err(ReopenError::Io)?;
            file.sync_all().map_err(ReopenError::Io)?;
            tracing::warn!(path = %path.display(), torn, "truncated a torn last line of the record");
        }
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(ReopenError::Io)?;
        let record = Record {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            seq: chain.events.len() as u64,
            prev: chain.head,
            last_sync: Instant::now(),
        };
        Ok((record, chain.events, torn))
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event: `kind` plus the fields of `fields` (an object).
    /// Returns whether this append was a group commit (fsync).
    pub fn append(&mut self, kind: &str, fields: Value) -> io::Result<bool> {
        crate::fault::point("record")?;
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

    /// Flushes and fsyncs the record and its directory; returns the number
    /// of lines and the sha256 of the last one (what a seal covers).
    ///
    /// The file and its directory are fsynced concurrently: the two are
    /// independent (the file's name was created when the record was), and
    /// the filesystem commits both in one journal transaction instead of two
    /// back to back.
    pub fn close(mut self) -> io::Result<(u64, Digest)> {
        self.out.flush()?;
        let file = self.out.get_ref();
        match self.path.parent() {
            Some(dir) => {
                let dir = File::open(dir)?;
                std::thread::scope(|s| {
                    let dir_sync = s.spawn(|| dir.sync_all());
                    let file_sync = file.sync_all();
                    let dir_sync = dir_sync
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("directory fsync panicked")));
                    file_sync.and(dir_sync)
                })?;
            }
            None => file.sync_all()?,
        }
        Ok((self.seq, self.prev))
    }
}

/// Why a record cannot be continued.
#[derive(Debug, thiserror::Error)]
pub enum ReopenError {
    /// IO failure.
    #[error("{0}")]
    Io(io::Error),
    /// The chain is broken before its last line: not a crash, tampering.
    #[error("record line {} is {}: {}", .0.line, .0.fault.as_str(), .0.detail)]
    Chain(ChainBreak),
}

/// Why a record's chain is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainFault {
    /// A line's bytes changed (its successor's `prev` no longer matches,
    /// it does not parse, or it is not what the seal covers).
    Edited,
    /// Lines are out of order.
    Reordered,
    /// A line is gone from the middle.
    Missing,
    /// The record ends early or mid-line.
    Truncated,
}

impl ChainFault {
    /// The lower-case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ChainFault::Edited => "edited",
            ChainFault::Reordered => "reordered",
            ChainFault::Missing => "missing",
            ChainFault::Truncated => "truncated",
        }
    }
}

/// The first bad line of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong.
    pub fault: ChainFault,
    /// Details for humans.
    pub detail: String,
}

/// A record whose chain holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The parsed lines, in order.
    pub events: Vec<Value>,
    /// sha256 of the last line (without its newline).
    pub head: Digest,
}

/// Checks a record's hash chain: every line parses, `seq` counts up from 0
/// and `prev` is the sha256 of the previous line. Returns the first break.
pub fn check_chain(bytes: &[u8]) -> Result<Chain, ChainBreak> {
    let brk = |line: usize, fault, detail: String| ChainBreak {
        line: line as u64 + 1,
        fault,
        detail,
    };
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let torn = lines.pop().is_some_and(|last| !last.is_empty());
    if torn {
        return Err(brk(
            lines.len(),
            ChainFault::Truncated,
            "the last line is cut off (no newline): a torn write".to_string(),
        ));
    }
    let parsed: Vec<Option<Value>> = lines
        .iter()
        .map(|l| {
            serde_json::from_slice::<Value>(l)
                .ok()
                .filter(Value::is_object)
        })
        .collect();
    let seq_of = |i: usize| parsed[i].as_ref().and_then(|v| v["seq"].as_u64());
    let mut prev = genesis();
    for (i, line) in lines.iter().enumerate() {
        let Some(event) = &parsed[i] else {
            return Err(brk(i, ChainFault::Edited, "not a JSON object".to_string()));
        };
        match seq_of(i) {
            Some(seq) if seq == i as u64 => {}
            Some(seq) => {
                let later = (i + 1..lines.len()).any(|j| seq_of(j) == Some(i as u64));
                let fault = if seq < i as u64 || later {
                    ChainFault::Reordered
                } else {
                    ChainFault::Missing
                };
                let detail = match fault {
                    ChainFault::Missing => {
                        format!("expected seq {i}, found {seq}: line(s) removed")
                    }
                    _ => format!("expected seq {i}, found {seq}"),
                };
                return Err(brk(i, fault, detail));
            }
            None => return Err(brk(i, ChainFault::Edited, "no `seq`".to_string())),
        }
        if event["prev"].as_str() != Some(prev.to_string().as_str()) {
            // Line i-1 no longer hashes to what line i recorded.
            let at = i.saturating_sub(1);
            return Err(brk(
                at,
                ChainFault::Edited,
                format!("its sha256 is not the `prev` recorded by line {}", i + 1),
            ));
        }
        prev = Digest::of(line);
    }
    Ok(Chain {
        events: parsed.into_iter().flatten().collect(),
        head: prev,
    })
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

    fn sample(n: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut r = Record::create(&path).unwrap();
        for i in 0..n {
            r.append("e", serde_json::json!({ "i": i })).unwrap();
        }
        r.close().unwrap();
        std::fs::read(&path).unwrap()
    }

    fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn join(lines: &[Vec<u8>]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| l.iter().copied().chain([b'\n']))
            .collect()
    }

    #[test]
    fn intact_chain_passes_and_reports_its_head() {
        let bytes = sample(5);
        let chain = check_chain(&bytes).unwrap();
        assert_eq!(chain.events.len(), 5);
        assert_eq!(chain.head, Digest::of(&lines(&bytes)[4]));
    }

    #[test]
    fn each_kind_of_tampering_names_its_line() {
        let bytes = sample(6);
        let original = lines(&bytes);
        let mut edited = original.clone();
        let at = edited[2].iter().position(|b| *b == b'"').unwrap();
        edited[2][at + 1] ^= 0x20;
        let e = check_chain(&join(&edited)).unwrap_err();
        assert_eq!((e.line, e.fault), (3, ChainFault::Edited), "{e:?}");

        let mut deleted = original.clone();
        deleted.remove(3);
        let e = check_chain(&join(&deleted)).unwrap_err();
        assert_eq!((e.line, e.fault), (4, ChainFault::Missing), "{e:?}");

        let mut swapped = original.clone();
        swapped.swap(1, 2);
        let e = check_chain(&join(&swapped)).unwrap_err();
        assert_eq!((e.line, e.fault), (2, ChainFault::Reordered), "{e:?}");

        let mut torn = join(&original);
        torn.truncate(torn.len() - 7);
        let e = check_chain(&torn).unwrap_err();
        assert_eq!((e.line, e.fault), (6, ChainFault::Truncated), "{e:?}");
    }

    #[test]
    fn reopen_truncates_a_torn_tail_and_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut r = Record::create(&path).unwrap();
        r.append("a", serde_json::json!({})).unwrap();
        r.append("b", serde_json::json!({})).unwrap();
        r.close().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"pre").unwrap();
        drop(f);
        let (mut r, events, torn) = Record::reopen(&path).unwrap();
        assert_eq!((events.len(), torn), (2, 13));
        r.append("c", serde_json::json!({})).unwrap();
        let (lines, _) = r.close().unwrap();
        assert_eq!(lines, 3);
        let chain = check_chain(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(chain.events[2]["type"], "c");

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(Record::reopen(&path), Err(ReopenError::Chain(_))));
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
