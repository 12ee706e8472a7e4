//! `sluice verify`: is a run's record exactly what was sealed?
//!
//! Invariant: `intact` only when the hash chain holds line by line, the
//! DSSE signature verifies with the trusted key (the home's own, or the
//! `--pubkey` given), the sealed statement covers exactly this record
//! (line count and last-line digest), and the envelope is included in the
//! local Merkle log under its current root.
//! Boundary: reads files; writes nothing.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::record;
use crate::run::{PROVENANCE_FILE, RunId};
use crate::seal;
use crate::store::Digest;
use crate::transparency;

/// Why verification failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// A line changed.
    Edited,
    /// Lines out of order.
    Reordered,
    /// The record ends early (or mid-line).
    Truncated,
    /// A line is gone.
    Missing,
    /// The envelope's signature does not verify with the trusted key.
    BadSignature,
    /// The envelope is not in the transparency log.
    NotInLog,
    /// The run was never sealed (no envelope).
    Unsealed,
}

impl Reason {
    /// The words used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Edited => "edited",
            Reason::Reordered => "reordered",
            Reason::Truncated => "truncated",
            Reason::Missing => "missing",
            Reason::BadSignature => "bad signature",
            Reason::NotInLog => "not in log",
            Reason::Unsealed => "not sealed",
        }
    }
}

impl From<record::ChainFault> for Reason {
    fn from(f: record::ChainFault) -> Self {
        match f {
            record::ChainFault::Edited => Reason::Edited,
            record::ChainFault::Reordered => Reason::Reordered,
            record::ChainFault::Missing => Reason::Missing,
            record::ChainFault::Truncated => Reason::Truncated,
        }
    }
}

/// What `sluice verify --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The run.
    pub run_id: RunId,
    /// `intact` or `tampered`.
    pub verdict: &'static str,
    /// The first bad record line (1-based), when the fault is in the record.
    pub line: Option<u64>,
    /// Why it is not intact.
    pub reason: Option<Reason>,
    /// Details for humans.
    pub detail: Option<String>,
    /// Lines in the record.
    pub lines: u64,
    /// The key that verified the signature.
    pub keyid: Option<String>,
    /// The envelope's index in the log.
    pub log_index: Option<u64>,
}

/// Errors that prevent verification from reaching a verdict.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No such run.
    #[error("no run `{0}` in this home")]
    NotFound(RunId),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The trusted key could not be loaded.
    #[error("public key: {0}")]
    Key(String),
    /// The transparency log could not be read.
    #[error("transparency log: {0}")]
    Log(String),
}

/// Verifies run `run` in `home` against `pubkey` (default: the home's key).
pub fn verify(
    home: &Path,
    run: &RunId,
    pubkey: Option<&Path>,
) -> Result<VerifyReport, VerifyError> {
    let dir = home.join("runs").join(run.as_str());
    if !dir.is_dir() {
        return Err(VerifyError::NotFound(run.clone()));
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| VerifyError::Io { path, source })
    };
    let mut report = VerifyReport {
        run_id: run.clone(),
        verdict: "tampered",
        line: None,
        reason: None,
        detail: None,
        lines: 0,
        keyid: None,
        log_index: None,
    };
    let fail = |mut r: VerifyReport, line: Option<u64>, reason: Reason, detail: String| {
        r.line = line;
        r.reason = Some(reason);
        r.detail = Some(detail);
        Ok(r)
    };
    let record_bytes = read("record.jsonl")?;
    report.lines = record_bytes.iter().filter(|b| **b == b'\n').count() as u64;
    let chain = match record::check_chain(&record_bytes) {
        Ok(c) => c,
        Err(b) => return fail(report, Some(b.line), b.fault.into(), b.detail),
    };
    let envelope_bytes = match read(PROVENANCE_FILE) {
        Ok(b) => b,
        Err(VerifyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return fail(
                report,
                None,
                Reason::Unsealed,
                "the run has no signed provenance".into(),
            );
        }
        Err(e) => return Err(e),
    };
    let key = match pubkey {
        Some(p) => seal::read_public_key(p).map_err(|e| VerifyError::Key(e.to_string()))?,
        None => home_public_key(home)?,
    };
    let envelope: seal::Envelope = match serde_json::from_slice(&envelope_bytes) {
        Ok(e) => e,
        Err(e) => {
            return fail(
                report,
                None,
                Reason::BadSignature,
                format!("envelope does not parse: {e}"),
            );
        }
    };
    let payload = match seal::verify(&envelope, &key) {
        Ok(p) => p,
        Err(e) => return fail(report, None, Reason::BadSignature, e.to_string()),
    };
    report.keyid = Some(key.keyid().to_string());
    let statement = match seal::parse_statement(&payload) {
        Ok(s) => s,
        Err(e) => return fail(report, None, Reason::BadSignature, e.to_string()),
    };
    let (sealed_lines, sealed_head) = sealed_record(&statement);
    let lines = chain.events.len() as u64;
    if let Some(sealed) = sealed_lines {
        if lines < sealed {
            return fail(
                report,
                Some(lines + 1),
                Reason::Truncated,
                format!("the record has {lines} lines; the seal covers {sealed}"),
            );
        }
        if lines > sealed {
            return fail(
                report,
                Some(sealed + 1),
                Reason::Edited,
                format!("lines after the sealed {sealed} were appended"),
            );
        }
    }
    if sealed_head != Some(chain.head) {
        return fail(
            report,
            Some(lines),
            Reason::Edited,
            "the last line is not the one the seal covers".into(),
        );
    }
    let log_err = |e: transparency::LogError| VerifyError::Log(e.to_string());
    let log = transparency::Log::open(home).map_err(log_err)?;
    let leaf = transparency::leaf_hash(&envelope_bytes);
    let Some(index) = log.find(&leaf).map_err(log_err)? else {
        return fail(
            report,
            None,
            Reason::NotInLog,
            "the envelope's leaf is not in the log".into(),
        );
    };
    let size = log.size().map_err(log_err)?;
    let proof = log.inclusion_proof(index, size).map_err(log_err)?;
    let root = log.root(size).map_err(log_err)?;
    let included = transparency::verify_inclusion(&leaf, index, size, &proof, &root);
    if !included {
        return fail(
            report,
            None,
            Reason::NotInLog,
            "the inclusion proof does not verify".into(),
        );
    }
    report.log_index = Some(index);
    report.verdict = "intact";
    Ok(report)
}

/// The home's own public key (the first `keys/*.pub`, as `seal` picks the
/// first key); verifying never creates a key.
fn home_public_key(home: &Path) -> Result<seal::PublicKey, VerifyError> {
    let dir = home.join("keys");
    let mut pubs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|_| {
            VerifyError::Key(format!(
                "no signing key in {}; pass --pubkey",
                dir.display()
            ))
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    pubs.sort();
    let first = pubs.first().ok_or_else(|| {
        VerifyError::Key(format!(
            "no signing key in {}; pass --pubkey",
            dir.display()
        ))
    })?;
    seal::read_public_key(first).map_err(|e| VerifyError::Key(e.to_string()))
}

/// The record line count and last-line digest the statement covers.
fn sealed_record(statement: &serde_json::Value) -> (Option<u64>, Option<Digest>) {
    let byproducts = statement["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let record = byproducts.iter().find(|b| b["name"] == "record");
    let lines = record.and_then(|r| r["annotations"]["lines"].as_u64());
    let head = record
        .and_then(|r| r["digest"]["sha256"].as_str())
        .and_then(|h| format!("sha256:{h}").parse().ok());
    (lines, head)
}
