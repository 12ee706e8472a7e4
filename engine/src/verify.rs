//! `sluice verify`: is a run's record exactly what was sealed, for this
//! run, and is the seal in an untampered log?
//!
//! Invariant: `intact` only when the hash chain holds line by line, the
//! DSSE signature verifies with the trusted key (the one the home's
//! `keys/active` pins, or the `--pubkey` given), the sealed statement covers
//! exactly this record (line count and last-line digest), the statement's
//! invocation id and the record's run-started event both name the run id it
//! is verified under, the envelope is leaf `log_index` of the local Merkle
//! log with an inclusion proof against the tree head signed at sealing
//! (`seal.json`), that head is consistent (RFC 6962) with the log's newest
//! signed head and the log's leaves hash to that head, no later log entry
//! re-seals the same run id, and `summary.json`, if present, says what the
//! sealed record says. Otherwise it names the first bad line (or field) and
//! the reason. Never panics on any file content.
//! Boundary: reads files (the log is opened, which cuts a torn tail, as
//! every log open does); writes nothing else.
//!
//! What this does not prove: that the signing key was not stolen (whoever
//! holds `keys/<id>.key` can seal anything), that the home's pin was not
//! rewritten by someone with write access to the home (verify with
//! `--pubkey` and a key kept elsewhere for that), or anything about leaves
//! appended after the log's newest signed head. Metrics, series, tags, sweep
//! rows and gpu telemetry in `summary.json` are not in the record, so not
//! checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::record;
use crate::report::{PROVENANCE_FILE, RunId, SEAL_FILE};

/// The run's summary, written after the seal.
const SUMMARY_FILE: &str = "summary.json";
use crate::digest::Digest;
use crate::seal;
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
    /// The seal or record is of another run than the id verified (a run
    /// directory copied or renamed).
    WrongRun,
    /// The transparency log's leaves no longer hash to a tree head signed
    /// earlier, or its heads are missing or inconsistent.
    LogRewritten,
    /// The log holds the same run id again (a replayed append, or a later
    /// seal this directory does not hold).
    SealedTwice,
    /// `summary.json` says something the sealed record does not.
    SummaryMismatch,
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
            Reason::WrongRun => "wrong run",
            Reason::LogRewritten => "log rewritten",
            Reason::SealedTwice => "sealed twice",
            Reason::SummaryMismatch => "summary mismatch",
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
    /// Leaves in the log's tree head signed when the run was sealed.
    pub tree_size: Option<u64>,
    /// Leaves in the log's newest signed tree head.
    pub log_size: Option<u64>,
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
        tree_size: None,
        log_size: None,
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
        None => seal::trusted_public_key(home).map_err(|e| VerifyError::Key(e.to_string()))?,
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
    // Bind the run to the id it is verified under: the signed statement and
    // the (sealed) record both name their run.
    let sealed_id = statement["predicate"]["runDetails"]["metadata"]["invocationId"]
        .as_str()
        .unwrap_or("(none)");
    if sealed_id != run.as_str() {
        return fail(
            report,
            None,
            Reason::WrongRun,
            format!(
                "the seal is of run {sealed_id}, verified as run {run}: the run directory was copied or renamed"
            ),
        );
    }
    let recorded_id = chain
        .events
        .first()
        .filter(|e| e["type"] == "run-started")
        .and_then(|e| e["run_id"].as_str())
        .unwrap_or("(none)");
    if recorded_id != run.as_str() {
        return fail(
            report,
            Some(1),
            Reason::WrongRun,
            format!(
                "the record's run-started event is of run {recorded_id}, verified as run {run}"
            ),
        );
    }

    let seal_bytes = match read(SEAL_FILE) {
        Ok(b) => b,
        Err(VerifyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return fail(
                report,
                None,
                Reason::NotInLog,
                format!("the run has no {SEAL_FILE} (its log position)"),
            );
        }
        Err(e) => return Err(e),
    };
    let seal_json: serde_json::Value = match serde_json::from_slice(&seal_bytes) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                report,
                None,
                Reason::NotInLog,
                format!("{SEAL_FILE} does not parse: {e}"),
            );
        }
    };
    let Some(index) = seal_json["log_index"].as_u64() else {
        return fail(
            report,
            None,
            Reason::NotInLog,
            format!("{SEAL_FILE} has no log_index"),
        );
    };
    let Ok(sealed_head) = serde_json::from_value::<seal::Envelope>(seal_json["checkpoint"].clone())
    else {
        return fail(
            report,
            None,
            Reason::NotInLog,
            format!(
                "{SEAL_FILE} records no signed tree head (sealed by an older engine): log inclusion cannot be proven"
            ),
        );
    };
    let sealed_head = match seal::verify_checkpoint(&sealed_head, &key) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                report,
                None,
                Reason::LogRewritten,
                format!("the tree head in {SEAL_FILE}: {e}"),
            );
        }
    };
    report.tree_size = Some(sealed_head.size);

    let log_err = |e: transparency::LogError| VerifyError::Log(e.to_string());
    let log = transparency::Log::open(home).map_err(log_err)?;
    // The head first: leaves are only appended, so every leaf it covers is
    // there when they are read next.
    let newest = match log.head().map_err(log_err)? {
        None => {
            return fail(
                report,
                None,
                Reason::LogRewritten,
                "the log has no signed tree head: it was removed or replaced".into(),
            );
        }
        Some(bytes) => match serde_json::from_slice::<seal::Envelope>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|env| seal::verify_checkpoint(&env, &key).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                return fail(
                    report,
                    None,
                    Reason::LogRewritten,
                    format!("the log's signed tree head: {e}"),
                );
            }
        },
    };
    report.log_size = Some(newest.size);
    let log_size = log.size().map_err(log_err)?;
    if newest.size > log_size {
        return fail(
            report,
            None,
            Reason::LogRewritten,
            format!(
                "the log has {log_size} leaves, fewer than the {} its signed head covers: leaves were removed",
                newest.size
            ),
        );
    }
    if sealed_head.size > newest.size {
        return fail(
            report,
            None,
            Reason::LogRewritten,
            format!(
                "the run was sealed into a log of {} leaves, but the log's signed head covers only {}: the head was rolled back",
                sealed_head.size, newest.size
            ),
        );
    }
    let leaves = log.leaf_hashes(newest.size).map_err(log_err)?;
    if transparency::root_of(&leaves) != newest.root {
        return fail(
            report,
            None,
            Reason::LogRewritten,
            format!(
                "the log's first {} leaves do not hash to its signed head: leaves were changed",
                newest.size
            ),
        );
    }
    let leaf = transparency::leaf_hash(&envelope_bytes);
    let at = usize::try_from(index).ok();
    if index >= sealed_head.size || at.and_then(|i| leaves.get(i)) != Some(&leaf) {
        return fail(
            report,
            None,
            Reason::NotInLog,
            format!("log leaf {index} is not this run's envelope"),
        );
    }
    // `sealed_head.size <= newest.size = leaves.len()`, checked above.
    let sealed_leaves = &leaves[..sealed_head.size as usize];
    let proof = transparency::inclusion_path(sealed_leaves, index).unwrap_or_default();
    if !transparency::verify_inclusion(&leaf, index, sealed_head.size, &proof, &sealed_head.root) {
        return fail(
            report,
            None,
            Reason::LogRewritten,
            format!(
                "the inclusion proof of leaf {index} does not verify against the tree head signed at sealing ({} leaves): the log was rewritten",
                sealed_head.size
            ),
        );
    }
    let consistency = transparency::consistency_path(&leaves, sealed_head.size).unwrap_or_default();
    if !transparency::verify_consistency(
        sealed_head.size,
        newest.size,
        &sealed_head.root,
        &newest.root,
        &consistency,
    ) {
        return fail(
            report,
            None,
            Reason::LogRewritten,
            format!(
                "the log's signed head ({} leaves) is not consistent with the head signed at sealing ({} leaves): the log was rewritten",
                newest.size, sealed_head.size
            ),
        );
    }
    report.log_index = Some(index);

    // The same run id elsewhere in the (authenticated part of the) log. An
    // earlier, different seal is a run resumed after a crash between its
    // seal and its summary: superseded by this one, not a fault.
    let mut again: Option<(u64, bool)> = None;
    log.authentic_entries(&leaves, |i, entry| {
        if again.is_none() && i != index && invocation_id(entry).as_deref() == Some(run.as_str()) {
            let same = entry == envelope_bytes.as_slice();
            if same || i > index {
                again = Some((i, same));
            }
        }
    })
    .map_err(log_err)?;
    match again {
        Some((i, true)) => {
            return fail(
                report,
                None,
                Reason::SealedTwice,
                format!("this run's envelope is in the log again at index {i}: a replayed append"),
            );
        }
        Some((i, false)) => {
            return fail(
                report,
                None,
                Reason::SealedTwice,
                format!(
                    "run {run} was sealed again at log index {i}, after the seal at index {index} this directory holds: the directory was rolled back or replaced"
                ),
            );
        }
        None => {}
    }

    match read(SUMMARY_FILE) {
        Ok(bytes) => {
            if let Err(detail) = check_summary(&bytes, run, &statement, &chain.events) {
                return fail(report, None, Reason::SummaryMismatch, detail);
            }
        }
        // Sealed but not acknowledged (a crash just before the summary):
        // nothing shows it, so there is nothing to contradict the record.
        Err(VerifyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    report.verdict = "intact";
    Ok(report)
}

/// Whether `summary` (the bytes of run `run`'s `summary.json`) agrees with
/// the run's sealed record: the record's chain holds, the home's trusted
/// key signed a statement covering exactly that record, and every field the
/// summary shares with it matches ([`check_summary`]). What `sluice runs`,
/// `show` and the API display goes through this, so an edited summary is
/// flagged there, not only by `verify`. The log is not consulted (that is
/// `verify`'s job and costs a read of the whole log).
pub fn summary_agrees(home: &Path, run: &RunId, summary: &[u8]) -> Result<(), Disagreement> {
    let (statement, events) = sealed(home, run)?;
    check_summary(summary, run, &statement, &events).map_err(Disagreement::Summary)
}

/// The events of run `run`'s record, only if its chain holds and the
/// home's trusted key signed a statement covering exactly that record (what
/// lineage and other readers of a finished run's facts rely on).
pub fn sealed_events(home: &Path, run: &RunId) -> Result<Vec<serde_json::Value>, Disagreement> {
    Ok(sealed(home, run)?.1)
}

/// The verified statement and the record events it covers.
fn sealed(
    home: &Path,
    run: &RunId,
) -> Result<(serde_json::Value, Vec<serde_json::Value>), Disagreement> {
    let dir = home.join("runs").join(run.as_str());
    let unreadable = |file: &str, reason: String| Disagreement::Unreadable {
        file: file.to_string(),
        reason,
    };
    let read =
        |name: &str| std::fs::read(dir.join(name)).map_err(|e| unreadable(name, e.to_string()));
    let record_bytes = read("record.jsonl")?;
    let chain = record::check_chain(&record_bytes).map_err(|b| Disagreement::BrokenRecord {
        line: b.line,
        reason: Reason::from(b.fault).as_str(),
    })?;
    let envelope: seal::Envelope = serde_json::from_slice(&read(PROVENANCE_FILE)?)
        .map_err(|e| unreadable(PROVENANCE_FILE, e.to_string()))?;
    let key = seal::trusted_public_key(home).map_err(|e| Disagreement::Seal(e.to_string()))?;
    let statement =
        seal::verify_statement(&envelope, &key).map_err(|e| Disagreement::Seal(e.to_string()))?;
    let (lines, head) = sealed_record(&statement);
    if lines != Some(chain.events.len() as u64) || head != Some(chain.head) {
        return Err(Disagreement::NotSealed);
    }
    Ok((statement, chain.events))
}

/// Why a run's `summary.json` cannot be shown as what the run did.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Disagreement {
    /// A file of the run cannot be read or parsed.
    #[error("{file}: {reason}")]
    Unreadable {
        /// The file, relative to the run directory.
        file: String,
        /// Why.
        reason: String,
    },
    /// The record's hash chain is broken.
    #[error("record line {line}: {reason}")]
    BrokenRecord {
        /// The first bad line (1-based).
        line: u64,
        /// The verify reason code.
        reason: &'static str,
    },
    /// The trusted key or the statement's signature does not hold.
    #[error("{0}")]
    Seal(String),
    /// The record on disk is not the one the seal covers.
    #[error("the record is not the one the seal covers")]
    NotSealed,
    /// The summary shows something the sealed record does not say (the
    /// first difference, naming the field).
    #[error("{0}")]
    Summary(String),
}

/// The invocation id of a log entry that is an in-toto envelope, if any.
fn invocation_id(entry: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let env: seal::Envelope = serde_json::from_slice(entry).ok()?;
    if env.payload_type != seal::IN_TOTO_PAYLOAD_TYPE {
        return None;
    }
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&env.payload)
        .ok()?;
    let statement: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    statement["predicate"]["runDetails"]["metadata"]["invocationId"]
        .as_str()
        .map(str::to_owned)
}

/// The step fields `summary.json` shows that the record's `step-finished`
/// event also carries.
const RECORDED_STEP_FIELDS: [&str; 14] = [
    "status",
    "cached",
    "attempts",
    "cache_key",
    "executor",
    "component",
    "built_from",
    "outputs",
    "fuel_used",
    "memory_peak_bytes",
    "wall_ms",
    "stdout",
    "stderr",
    "error",
];

/// Whether `summary.json` says what the sealed record and statement say.
///
/// The summary is written after the seal (it is the acknowledgement), so it
/// cannot be inside it; instead every field it shares with the sealed
/// record is recomputed from the record and compared. Returns the first
/// difference, naming the field.
pub fn check_summary(
    bytes: &[u8],
    run: &RunId,
    statement: &serde_json::Value,
    events: &[serde_json::Value],
) -> Result<(), String> {
    use serde_json::Value;
    let summary: Value = serde_json::from_slice(bytes)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| format!("{SUMMARY_FILE} is not a JSON object"))?;
    let null = Value::Null;
    let differ = |field: &str, shown: &Value, sealed: &Value| {
        format!("{SUMMARY_FILE} `{field}` is {shown}; the sealed record says {sealed}")
    };
    let same = |field: &str, sealed: &Value| -> Result<(), String> {
        let shown = summary.get(field).unwrap_or(&null);
        if shown == sealed {
            Ok(())
        } else {
            Err(differ(field, shown, sealed))
        }
    };
    same("run_id", &Value::from(run.as_str()))?;
    let started = events
        .first()
        .filter(|e| e["type"] == "run-started")
        .unwrap_or(&null);
    for field in ["pipeline", "spec_path", "spec_digest", "params", "seed"] {
        same(field, started.get(field).unwrap_or(&null))?;
    }
    let meta = &statement["predicate"]["runDetails"]["metadata"];
    same("started_at", meta.get("startedOn").unwrap_or(&null))?;
    same("finished_at", meta.get("finishedOn").unwrap_or(&null))?;
    let finished = events
        .iter()
        .rev()
        .find(|e| e["type"] == "run-finished")
        .unwrap_or(&null);
    same("status", finished.get("status").unwrap_or(&null))?;
    same("wall_ms", finished.get("wall_ms").unwrap_or(&null))?;
    // The last `step-finished` of each step is its final report.
    let mut recorded: BTreeMap<&str, &Value> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "step-finished") {
        if let Some(step) = e["step"].as_str() {
            recorded.insert(step, e);
        }
    }
    let steps = summary
        .get("steps")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{SUMMARY_FILE} has no `steps` array"))?;
    let mut shown = BTreeSet::new();
    for (i, step) in steps.iter().enumerate() {
        let name = step["name"].as_str().unwrap_or("");
        shown.insert(name);
        match recorded.get(name) {
            Some(event) => {
                for field in RECORDED_STEP_FIELDS {
                    let s = step.get(field).unwrap_or(&null);
                    let r = event.get(field).unwrap_or(&null);
                    if s != r {
                        return Err(differ(&format!("steps[{i}].{field}"), s, r));
                    }
                }
            }
            // A step that never finished (skipped before it started) has no
            // event: it can only be shown as skipped, with no outputs.
            None => {
                let status = step.get("status").unwrap_or(&null);
                if status != "skipped" {
                    return Err(differ(
                        &format!("steps[{i}].status"),
                        status,
                        &Value::from("skipped"),
                    ));
                }
                if step["outputs"].as_object().is_some_and(|o| !o.is_empty()) {
                    return Err(format!(
                        "{SUMMARY_FILE} `steps[{i}].outputs` lists outputs of step {name}, which the sealed record never finished"
                    ));
                }
            }
        }
    }
    if let Some(missing) = recorded.keys().find(|name| !shown.contains(*name)) {
        return Err(format!(
            "{SUMMARY_FILE} does not show step {missing}, which the sealed record finished"
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::run::RunSummary;
    use proptest::prelude::*;
    use serde_json::json;

    /// Seals a two-step run through the engine's own record and seal code
    /// (no components: the record's events are written as the runner
    /// writes them), with its summary, as `run::execute` leaves it.
    fn sealed_run(home: &Path, id: &str) -> RunId {
        let run: RunId = id.parse().unwrap();
        let dir = home.join("runs").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let out = |s: &str| json!({"digest": Digest::of(s.as_bytes()), "size": s.len(), "media_type": "text/plain"});
        let step = |name: &str| {
            json!({
                "name": name, "status": "succeeded", "cached": false, "attempts": 1,
                "wall_ms": 3, "fuel_used": 1000, "memory_peak_bytes": 65536,
                "bytes_in": 1, "bytes_out": 2, "outputs": {"out": out(name)},
                "metrics": {"loss": 0.5}, "error": null,
                "component": Digest::of(b"wasm"), "cache_key": Digest::of(name.as_bytes()),
                "stdout": Digest::of(b""),
            })
        };
        let summary: RunSummary = serde_json::from_value(json!({
            "run_id": id, "status": "succeeded", "pipeline": "p", "spec_path": "p.toml",
            "spec_digest": Digest::of(b"spec"), "params": {"lr": "0.1"}, "seed": 7,
            "started_at": "2026-01-01T00:00:00.000Z", "finished_at": "2026-01-01T00:00:01.000Z",
            "wall_ms": 9, "steps": [step("a"), step("b")],
        }))
        .unwrap();
        let mut rec = Record::create(&dir.join("record.jsonl")).unwrap();
        rec.append(
            "run-started",
            json!({"run_id": id, "pipeline": "p", "spec_path": "p.toml",
                   "spec_digest": summary.spec_digest, "params": summary.params, "seed": 7}),
        )
        .unwrap();
        for r in &summary.steps {
            rec.append("step-started", json!({"step": r.name, "attempt": 1}))
                .unwrap();
            rec.append(
                "step-finished",
                json!({
                    "step": r.name, "status": r.status, "cached": r.cached,
                    "attempts": r.attempts, "cache_key": r.cache_key,
                    "component": r.component, "outputs": r.outputs,
                    "fuel_used": r.fuel_used, "memory_peak_bytes": r.memory_peak_bytes,
                    "wall_ms": r.wall_ms, "stdout": r.stdout, "stderr": r.stderr,
                    "error": r.error,
                }),
            )
            .unwrap();
        }
        rec.append(
            "run-finished",
            json!({"status": summary.status, "wall_ms": summary.wall_ms}),
        )
        .unwrap();
        let (lines, head) = rec.close().unwrap();
        crate::run::seal_run(
            home,
            &dir,
            &summary.params,
            summary.seed,
            &BTreeMap::new(),
            &summary,
            (lines, head),
        )
        .unwrap();
        std::fs::write(
            dir.join(SUMMARY_FILE),
            serde_json::to_vec_pretty(&summary).unwrap(),
        )
        .unwrap();
        run
    }

    fn check(home: &Path, run: &RunId) -> VerifyReport {
        verify(home, run, None).unwrap()
    }

    #[test]
    fn a_library_sealed_run_verifies_intact() {
        let home = tempfile::tempdir().unwrap();
        let a = sealed_run(home.path(), "run-a");
        let b = sealed_run(home.path(), "run-b");
        let r = check(home.path(), &a);
        assert_eq!((r.verdict, r.reason, r.lines), ("intact", None, 6));
        assert_eq!(
            (r.log_index, r.tree_size, r.log_size),
            (Some(0), Some(1), Some(2))
        );
        let r = check(home.path(), &b);
        assert_eq!(
            (r.verdict, r.log_index, r.tree_size),
            ("intact", Some(1), Some(2))
        );
    }

    #[test]
    fn a_run_verified_under_another_id_is_wrong_run_naming_both() {
        let home = tempfile::tempdir().unwrap();
        let a = sealed_run(home.path(), "run-a");
        let runs = home.path().join("runs");
        std::fs::create_dir_all(runs.join("run-b")).unwrap();
        for f in ["record.jsonl", PROVENANCE_FILE, SEAL_FILE, SUMMARY_FILE] {
            std::fs::copy(runs.join("run-a").join(f), runs.join("run-b").join(f)).unwrap();
        }
        let b: RunId = "run-b".parse().unwrap();
        let r = check(home.path(), &b);
        assert_eq!(
            (r.verdict, r.reason, r.line),
            ("tampered", Some(Reason::WrongRun), None)
        );
        assert_eq!(
            r.detail.as_deref(),
            Some(
                "the seal is of run run-a, verified as run run-b: the run directory was copied or renamed"
            )
        );
        assert_eq!(check(home.path(), &a).verdict, "intact");
    }

    #[test]
    fn summary_fields_are_compared_with_the_sealed_record() {
        let run: RunId = "r".parse().unwrap();
        let statement = json!({"predicate": {"runDetails": {"metadata": {
            "startedOn": "t0", "finishedOn": "t1"}}}});
        let events = vec![
            json!({"type": "run-started", "pipeline": "p", "spec_path": "s", "spec_digest": "d", "params": {}, "seed": 1}),
            json!({"type": "step-finished", "step": "a", "status": "succeeded", "cached": false, "outputs": {}}),
            json!({"type": "run-finished", "status": "succeeded", "wall_ms": 5}),
        ];
        let good = json!({"run_id": "r", "pipeline": "p", "spec_path": "s", "spec_digest": "d",
        "params": {}, "seed": 1, "started_at": "t0", "finished_at": "t1", "status": "succeeded",
        "wall_ms": 5, "steps": [
            {"name": "a", "status": "succeeded", "cached": false, "outputs": {}, "metrics": {"x": 1.0}},
            {"name": "b", "status": "skipped", "outputs": {}},
        ]});
        let bytes = |v: &serde_json::Value| serde_json::to_vec(v).unwrap();
        assert_eq!(
            check_summary(&bytes(&good), &run, &statement, &events),
            Ok(())
        );
        let mut v = good.clone();
        v["seed"] = json!(2);
        assert_eq!(
            check_summary(&bytes(&v), &run, &statement, &events).unwrap_err(),
            "summary.json `seed` is 2; the sealed record says 1"
        );
        let mut v = good.clone();
        v["steps"][0]["cached"] = json!(true);
        assert_eq!(
            check_summary(&bytes(&v), &run, &statement, &events).unwrap_err(),
            "summary.json `steps[0].cached` is true; the sealed record says false"
        );
        let mut v = good.clone();
        v["steps"][1]["status"] = json!("succeeded");
        assert_eq!(
            check_summary(&bytes(&v), &run, &statement, &events).unwrap_err(),
            "summary.json `steps[1].status` is \"succeeded\"; the sealed record says \"skipped\""
        );
        assert_eq!(
            check_summary(b"[1,2", &run, &statement, &events).unwrap_err(),
            "summary.json is not a JSON object"
        );
    }

    /// One way to damage a file of a sealed run.
    #[derive(Debug, Clone)]
    enum Damage {
        Flip(prop::sample::Index, u8),
        Truncate(prop::sample::Index),
        SwapLines(prop::sample::Index, prop::sample::Index),
        DeleteLine(prop::sample::Index),
        DuplicateLine(prop::sample::Index, prop::sample::Index),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        let ix = any::<prop::sample::Index>;
        prop_oneof![
            (ix(), 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
            ix().prop_map(Damage::Truncate),
            (ix(), ix()).prop_map(|(a, b)| Damage::SwapLines(a, b)),
            ix().prop_map(Damage::DeleteLine),
            (ix(), ix()).prop_map(|(a, b)| Damage::DuplicateLine(a, b)),
        ]
    }

    /// `bytes` damaged, or `None` when the damage changes nothing (swapping
    /// a line with itself or with an identical one).
    fn apply(bytes: &[u8], d: &Damage) -> Option<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = bytes
            .split_inclusive(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        let out = match d {
            Damage::Flip(i, x) => {
                let mut v = bytes.to_vec();
                let at = i.index(v.len());
                v[at] ^= x;
                v
            }
            Damage::Truncate(i) => bytes[..i.index(bytes.len())].to_vec(),
            Damage::SwapLines(a, b) => {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
                lines.concat()
            }
            Damage::DeleteLine(a) => {
                lines.remove(a.index(lines.len()));
                lines.concat()
            }
            Damage::DuplicateLine(a, at) => {
                let line = lines[a.index(lines.len())].clone();
                lines.insert(at.index(lines.len() + 1), line);
                lines.concat()
            }
        };
        (out != bytes).then_some(out)
    }

    /// Random damage to the record, the envelope, the log's signed head or
    /// its leaves of a real sealed run is never `intact`, and verify never panics or
    /// errors (every damage is a verdict). Cases: `PROPTEST_CASES`
    /// (default 256).
    #[test]
    fn damaged_record_envelope_or_log_is_never_intact() {
        let home = tempfile::tempdir().unwrap();
        // Another run first, so the log's leaves hold more than this run's.
        sealed_run(home.path(), "run-0");
        let run = sealed_run(home.path(), "run-a");
        let dir = home.path().join("runs").join("run-a");
        let files = [
            dir.join("record.jsonl"),
            dir.join(PROVENANCE_FILE),
            home.path().join("log").join("head"),
            home.path().join("log").join("leaves"),
        ];
        const LEAVES: usize = 3;
        let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        assert_eq!(check(home.path(), &run).verdict, "intact");
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::default());
        runner
            .run(&(0..files.len(), damage()), |(f, d)| {
                let Some(damaged) = apply(&originals[f], &d) else {
                    return Ok(());
                };
                // Leaves appended past the newest signed head are outside
                // every signed tree: they vouch for nothing and change
                // nothing this run's proofs cover (as after a crash between
                // a leaf and its head), so a pure append stays `intact`.
                if f == LEAVES && damaged.starts_with(&originals[f]) {
                    return Ok(());
                }
                std::fs::write(&files[f], &damaged).unwrap();
                let report = verify(home.path(), &run, None);
                std::fs::write(&files[f], &originals[f]).unwrap();
                let report = report.map_err(|e| {
                    TestCaseError::fail(format!(
                        "{}: {d:?}: error instead of a verdict: {e}",
                        files[f].display()
                    ))
                })?;
                prop_assert_eq!(
                    report.verdict,
                    "tampered",
                    "{}: {:?}: {:?}",
                    files[f].display(),
                    d,
                    report
                );
                prop_assert!(report.reason.is_some() && report.detail.is_some());
                Ok(())
            })
            .unwrap();
        assert_eq!(check(home.path(), &run).verdict, "intact");
    }
}
