//! Sealing a finished run: the in-toto statement over its outputs, signed
//! in a DSSE envelope and appended to the local transparency log.
//!
//! Invariant: a run is sealed at most once, after its record and summary
//! are durable; `seal.json` names the log leaf and the tree head just after
//! the append.
//! Boundary: writes `provenance.json` and `seal.json` of one run.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::{RunError, RunSummary};
use crate::artifact::OutputRef;
use crate::digest::Digest;
use crate::report::{PROVENANCE_FILE, SEAL_FILE};
use crate::sandbox::{self};

/// Seals a finished run: an in-toto statement over its outputs, signed
/// with the home's Ed25519 key in a DSSE envelope, appended to the local
/// Merkle log; `seal.json` keeps the leaf index and the signed tree head
/// of the log just after the append.
pub(crate) fn seal_run(
    home: &Path,
    run_dir: &Path,
    params: &BTreeMap<String, String>,
    seed: u64,
    sources: &BTreeMap<String, OutputRef>,
    summary: &RunSummary,
    (record_lines, record_head): (u64, Digest),
) -> Result<(), RunError> {
    let seal_err = |e: String| RunError::Seal(e);
    let signer = crate::seal::load_or_create(home).map_err(|e| seal_err(e.to_string()))?;
    let mut subjects = Vec::new();
    let mut components = Vec::new();
    let mut built_from = Vec::new();
    for step in &summary.steps {
        for (name, o) in &step.outputs {
            subjects.push((format!("{}/{name}", step.name), o.digest));
        }
        if let Some(c) = step.component {
            components.push((step.name.clone(), c));
        }
        if let Some(b) = &step.built_from {
            built_from.push(crate::seal::StepSource {
                step: step.name.clone(),
                digest: b.digest,
                language: b.language.as_str().to_owned(),
                toolchain: b.toolchain.clone(),
            });
        }
    }
    let steps: Vec<serde_json::Value> = summary
        .steps
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "status": s.status,
                "cached": s.cached,
                "cache_key": s.cache_key,
                "component": s.component,
                "built_from": s.built_from,
                "outputs": s.outputs.iter().map(|(k, o)| (k.clone(), o.digest)).collect::<BTreeMap<_, _>>(),
            })
        })
        .collect();
    let record_inputs: Vec<(String, Digest)> =
        sources.iter().map(|(k, o)| (k.clone(), o.digest)).collect();
    let statement = crate::seal::statement(&crate::seal::ProvenanceInput {
        run_id: summary.run_id.as_str(),
        pipeline: &summary.pipeline,
        spec_path: &summary.spec_path,
        spec_digest: summary.spec_digest,
        params,
        seed,
        engine_version: env!("CARGO_PKG_VERSION"),
        wasmtime_version: sandbox::wasmtime_version(),
        determinism: crate::attempt::DETERMINISM,
        subjects,
        inputs: record_inputs,
        components,
        built_from,
        started_at: &summary.started_at,
        finished_at: &summary.finished_at,
        steps: serde_json::Value::Array(steps),
        record_digest: record_head,
        record_lines,
    });
    let payload = serde_json::to_vec(&statement).expect("statements serialize");
    let envelope = signer.sign(crate::seal::IN_TOTO_PAYLOAD_TYPE, &payload);
    let envelope_bytes = serde_json::to_vec_pretty(&envelope).expect("envelopes serialize");
    crate::durable::write_atomic(&run_dir.join(PROVENANCE_FILE), &envelope_bytes, true)?;
    let log = crate::transparency::Log::open(home).map_err(|e| seal_err(e.to_string()))?;
    // The tree head of the log right after this append, signed: `verify`
    // checks the run's inclusion against it and its consistency with the
    // log's newest signed head, so a log rewritten later is detected.
    let (index, tree_size, checkpoint) = log
        .append_signed(&envelope_bytes, |size, root| {
            let cp = crate::seal::Checkpoint { size, root: *root };
            serde_json::to_vec(&crate::seal::sign_checkpoint(&signer, cp))
                .expect("envelopes serialize")
        })
        .map_err(|e| seal_err(e.to_string()))?;
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&checkpoint).expect("a checkpoint we just serialized parses");
    let seal = json!({"log_index": index, "tree_size": tree_size, "checkpoint": checkpoint, "keyid": signer.keyid(), "record_lines": record_lines, "record_head": record_head});
    crate::durable::write_atomic(
        &run_dir.join(SEAL_FILE),
        &serde_json::to_vec_pretty(&seal).expect("seals serialize"),
        true,
    )?;
    Ok(())
}
