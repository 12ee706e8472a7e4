//! `sluice verify` and `sluice provenance` (HOSTILE.md group 12): every
//! kind of tampering is rejected with its line and reason.

use std::path::PathBuf;

use serde_json::Value;

use crate::harness::{Sandbox, component, toml_path};

/// A sealed three-step run; returns its id.
fn sealed_run(sb: &Sandbox) -> String {
    sb.write("in.txt", "x\n");
    let append = toml_path(&component("append"));
    let mut spec = String::from("name = \"audit\"\n[sources]\nt = \"in.txt\"\n");
    for (i, input) in ["sources.t", "s0.out", "s1.out"].iter().enumerate() {
        spec.push_str(&format!(
            "[steps.s{i}]\ncomponent = {append}\ninputs = {{ in = \"{input}\" }}\nparams = {{ line = \"{i}\" }}\noutputs = [\"out\"]\n"
        ));
    }
    let (run, json) = sb.run_json(&sb.write("a.toml", &spec), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    json["run_id"].as_str().unwrap().to_string()
}

fn record_path(sb: &Sandbox, id: &str) -> PathBuf {
    sb.home().join("runs").join(id).join("record.jsonl")
}

fn verify(sb: &Sandbox, id: &str) -> (i32, Value) {
    let run = sb.sluice(&["verify", id, "--json"]);
    (run.code, run.json())
}

fn assert_rejected(sb: &Sandbox, id: &str, line: Option<u64>, reason: &str) {
    let (code, report) = verify(sb, id);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["verdict"], "tampered");
    assert_eq!(report["reason"], reason, "{report:#}");
    assert_eq!(report["line"].as_u64(), line, "{report:#}");
}

fn record_lines(sb: &Sandbox, id: &str) -> Vec<String> {
    std::fs::read_to_string(record_path(sb, id))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(sb: &Sandbox, id: &str, lines: &[String]) {
    std::fs::write(record_path(sb, id), lines.join("\n") + "\n").unwrap();
}

#[test]
fn an_untouched_run_verifies_intact() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let (code, report) = verify(&sb, &id);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["verdict"], "intact");
    assert_eq!(
        report["lines"], 11,
        "run-started, 3 × (started, attempt-sandbox, finished), run-finished"
    );
    assert_eq!(report["log_index"], 0);
    assert_eq!(report["tree_size"], 1, "{report:#}");
    assert_eq!(report["log_size"], 1, "{report:#}");
}

#[test]
fn one_edited_byte_in_a_middle_line_is_named() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let mut lines = record_lines(&sb, &id);
    lines[4] = lines[4].replacen("\"s1\"", "\"s9\"", 1);
    write_lines(&sb, &id, &lines);
    assert_rejected(&sb, &id, Some(5), "edited");
}

#[test]
fn a_deleted_line_is_named() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let mut lines = record_lines(&sb, &id);
    lines.remove(4);
    write_lines(&sb, &id, &lines);
    assert_rejected(&sb, &id, Some(5), "missing");
}

#[test]
fn swapped_lines_are_named() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let mut lines = record_lines(&sb, &id);
    lines.swap(2, 3);
    write_lines(&sb, &id, &lines);
    assert_rejected(&sb, &id, Some(3), "reordered");
}

#[test]
fn truncation_at_a_line_boundary_and_mid_line_are_named() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let lines = record_lines(&sb, &id);
    write_lines(&sb, &id, &lines[..6]);
    assert_rejected(&sb, &id, Some(7), "truncated");
    // A torn write: the last line cut off mid-way.
    let mut torn = lines[..7].join("\n") + "\n";
    torn.push_str(&lines[7][..20]);
    std::fs::write(record_path(&sb, &id), torn).unwrap();
    assert_rejected(&sb, &id, Some(8), "truncated");
}

#[test]
fn an_edited_last_line_is_caught_by_the_seal() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let mut lines = record_lines(&sb, &id);
    lines[10] = lines[10].replacen("\"succeeded\"", "\"failed\"", 1);
    write_lines(&sb, &id, &lines);
    assert_rejected(&sb, &id, Some(11), "edited");
}

fn envelope_path(sb: &Sandbox, id: &str) -> PathBuf {
    sb.home().join("runs").join(id).join("provenance.json")
}

#[test]
fn a_replaced_signature_is_rejected() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let path = envelope_path(&sb, &id);
    let mut env: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let sig = env["signatures"][0]["sig"].as_str().unwrap().to_string();
    let flipped = if sig.starts_with('A') {
        sig.replacen('A', "B", 1)
    } else {
        format!("A{}", &sig[1..])
    };
    env["signatures"][0]["sig"] = flipped.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&env).unwrap()).unwrap();
    assert_rejected(&sb, &id, None, "bad-signature");
}

#[test]
fn an_envelope_signed_with_another_key_is_rejected() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let path = envelope_path(&sb, &id);
    let env: sluice_engine::seal::Envelope =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let payload = sluice_engine::seal::verify(
        &env,
        &sluice_engine::seal::load_or_create(&sb.home())
            .unwrap()
            .public_key()
            .clone(),
    )
    .unwrap();
    let intruder = tempfile::tempdir().unwrap();
    let forged = sluice_engine::seal::load_or_create(intruder.path())
        .unwrap()
        .sign(sluice_engine::seal::IN_TOTO_PAYLOAD_TYPE, &payload);
    std::fs::write(&path, serde_json::to_vec_pretty(&forged).unwrap()).unwrap();
    assert_rejected(&sb, &id, None, "bad-signature");
}

#[test]
fn a_run_missing_from_the_log_is_rejected() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    std::fs::remove_dir_all(sb.home().join("log")).unwrap();
    // An empty log has no signed head covering the run's sealed tree.
    assert_rejected(&sb, &id, None, "log-rewritten");
}

#[test]
fn provenance_verifies_with_the_public_key_alone_and_not_after_a_payload_change() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let out = sb.sluice(&["provenance", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let env: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    let file = sb.write("env.json", &out.stdout);
    // Only the public key travels to the auditor.
    let keys = sb.home().join("keys");
    let pubkey = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pub"))
        .unwrap();
    let auditor_key = sb.write("auditor.pub", &std::fs::read_to_string(&pubkey).unwrap());
    let ok = sb.sluice_raw(&[
        "provenance",
        "--verify",
        file.to_str().unwrap(),
        "--pubkey",
        auditor_key.to_str().unwrap(),
    ]);
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("valid signature"), "{}", ok.stdout);
    assert!(
        ok.stdout.contains("in-toto statement with 3 subjects"),
        "{}",
        ok.stdout
    );

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload = b64.decode(env["payload"].as_str().unwrap()).unwrap();
    let at = payload.len() / 2;
    payload[at] ^= 0x01;
    let mut tampered = env.clone();
    tampered["payload"] = b64.encode(&payload).into();
    let bad = sb.write("bad.json", &serde_json::to_string(&tampered).unwrap());
    let rejected = sb.sluice_raw(&[
        "provenance",
        "--verify",
        bad.to_str().unwrap(),
        "--pubkey",
        auditor_key.to_str().unwrap(),
    ]);
    assert_eq!(rejected.code, 1, "{}", rejected.stdout);
    assert!(rejected.stdout.contains("INVALID"), "{}", rejected.stdout);

    let statement: Value =
        serde_json::from_slice(&b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        statement["predicate"]["runDetails"]["metadata"]["invocationId"],
        id.as_str()
    );
}

fn detail(sb: &Sandbox, id: &str) -> String {
    verify(sb, id).1["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_sealed_run_copied_under_another_run_id_is_rejected_naming_both_ids() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let runs = sb.home().join("runs");
    copy_dir(&runs.join(&id), &runs.join("copied-run"));
    assert_rejected(&sb, "copied-run", None, "wrong-run");
    assert_eq!(
        detail(&sb, "copied-run"),
        format!(
            "the seal is of run {id}, verified as run copied-run: the run directory was copied or renamed"
        )
    );
    let text = sb.sluice(&["verify", "copied-run"]);
    assert_eq!(text.code, 1);
    assert!(
        text.stdout.starts_with(&format!(
            "run copied-run: TAMPERED: wrong run: the seal is of run {id}, verified as run copied-run"
        )),
        "{}",
        text.stdout
    );
    // The original is untouched.
    assert_eq!(verify(&sb, &id).1["verdict"], "intact");
}

/// The home's log leaves: 32-byte hashes back to back.
fn leaves_path(sb: &Sandbox) -> PathBuf {
    sb.home().join("log").join("leaves")
}

#[test]
fn a_log_whose_leaves_were_rewritten_after_sealing_is_detected() {
    let sb = Sandbox::new();
    let first = sealed_run(&sb);
    let second = sealed_run(&sb);
    assert_eq!(verify(&sb, &second).1["log_index"], 1);
    // Rewrite the first run's leaf (say, to drop or swap that run): the
    // proof for the second run, recomputed from the rewritten leaves, no
    // longer reaches the tree heads signed at sealing.
    let mut leaves = std::fs::read(leaves_path(&sb)).unwrap();
    assert_eq!(leaves.len(), 64);
    leaves[..32].copy_from_slice(&sluice_engine::transparency::leaf_hash(b"forged"));
    std::fs::write(leaves_path(&sb), &leaves).unwrap();
    for id in [&first, &second] {
        assert_rejected(&sb, id, None, "log-rewritten");
        assert_eq!(
            detail(&sb, id),
            "the log's first 2 leaves do not hash to its signed head: leaves were changed"
        );
    }
    // Rebuilding the whole log from the envelopes without the key: no
    // signed head covers it.
    std::fs::remove_dir_all(sb.home().join("log")).unwrap();
    let log = sluice_engine::transparency::Log::open(&sb.home()).unwrap();
    for id in [&first, &second] {
        log.append(&std::fs::read(envelope_path(&sb, id)).unwrap())
            .unwrap();
    }
    assert_rejected(&sb, &second, None, "log-rewritten");
    assert_eq!(
        detail(&sb, &second),
        "the log has no signed tree head: it was removed or replaced"
    );
}

#[test]
fn a_planted_first_key_with_a_re_signed_envelope_is_not_trusted() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let home_key = sluice_engine::seal::load_or_create(&sb.home()).unwrap();
    let path = envelope_path(&sb, &id);
    let env: sluice_engine::seal::Envelope =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let payload = sluice_engine::seal::verify(&env, home_key.public_key()).unwrap();
    // The attacker's key pair, its public half planted where a
    // "first `*.pub` by name" rule would pick it, the envelope re-signed
    // and appended to the log.
    let intruder = tempfile::tempdir().unwrap();
    let forger = sluice_engine::seal::load_or_create(intruder.path()).unwrap();
    let keys = sb.home().join("keys");
    let forged_pub = forger.public_key().to_hex();
    std::fs::write(keys.join("0000000000000000.pub"), &forged_pub).unwrap();
    std::fs::write(keys.join(format!("{}.pub", forger.keyid())), &forged_pub).unwrap();
    let forged = forger.sign(sluice_engine::seal::IN_TOTO_PAYLOAD_TYPE, &payload);
    let bytes = serde_json::to_vec_pretty(&forged).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    sluice_engine::transparency::Log::open(&sb.home())
        .unwrap()
        .append(&bytes)
        .unwrap();
    assert_rejected(&sb, &id, None, "bad-signature");
    assert_eq!(
        detail(&sb, &id),
        format!("envelope has no signature by key {}", home_key.keyid())
    );
}

fn summary_path(sb: &Sandbox, id: &str) -> PathBuf {
    sb.home().join("runs").join(id).join("summary.json")
}

fn edit_summary(sb: &Sandbox, id: &str, edit: impl FnOnce(&mut Value)) {
    let path = summary_path(sb, id);
    let mut summary: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut summary);
    std::fs::write(&path, serde_json::to_vec_pretty(&summary).unwrap()).unwrap();
}

#[test]
fn an_edited_summary_is_reported_naming_the_field() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let original = std::fs::read(summary_path(&sb, &id)).unwrap();
    edit_summary(&sb, &id, |s| s["status"] = "failed".into());
    assert_rejected(&sb, &id, None, "summary-mismatch");
    assert_eq!(
        detail(&sb, &id),
        "summary.json `status` is \"failed\"; the sealed record says \"succeeded\""
    );
    // `sluice runs` flags it instead of showing the edited status.
    let runs = sb.sluice(&["runs", "--json"]).json();
    assert_eq!(runs[0]["run_id"], id.as_str());
    assert_eq!(runs[0]["status"], "tampered", "{runs:#}");
    assert_eq!(
        runs[0]["error"],
        format!(
            "run `{id}`: summary.json does not match the sealed record: summary.json `status` is \"failed\"; the sealed record says \"succeeded\""
        )
    );

    std::fs::write(summary_path(&sb, &id), &original).unwrap();
    let other = format!("sha256:{}", "0".repeat(64));
    let mut was = Value::Null;
    edit_summary(&sb, &id, |s| {
        was = s["steps"][1]["outputs"]["out"]["digest"].clone();
        s["steps"][1]["outputs"]["out"]["digest"] = other.clone().into();
    });
    assert!(was.is_string(), "{was}");
    assert_rejected(&sb, &id, None, "summary-mismatch");
    let d = detail(&sb, &id);
    assert!(
        d.starts_with("summary.json `steps[1].outputs` is {") && d.contains(&other),
        "{d}"
    );

    std::fs::write(summary_path(&sb, &id), &original).unwrap();
    edit_summary(&sb, &id, |s| {
        s["steps"].as_array_mut().unwrap().remove(2);
    });
    assert_rejected(&sb, &id, None, "summary-mismatch");
    assert_eq!(
        detail(&sb, &id),
        "summary.json does not show step s2, which the sealed record finished"
    );

    std::fs::write(summary_path(&sb, &id), &original).unwrap();
    assert_eq!(verify(&sb, &id).1["verdict"], "intact");
}

#[test]
fn the_same_run_sealed_twice_in_the_log_is_detected() {
    let sb = Sandbox::new();
    let id = sealed_run(&sb);
    let signer = sluice_engine::seal::load_or_create(&sb.home()).unwrap();
    let bytes = std::fs::read(envelope_path(&sb, &id)).unwrap();
    // Even with the home's key: the same envelope appended again.
    let (index, _, _) = sluice_engine::transparency::Log::open(&sb.home())
        .unwrap()
        .append_signed(&bytes, |size, root| {
            let cp = sluice_engine::seal::Checkpoint { size, root: *root };
            serde_json::to_vec(&sluice_engine::seal::sign_checkpoint(&signer, cp)).unwrap()
        })
        .unwrap();
    assert_eq!(index, 1);
    assert_rejected(&sb, &id, None, "sealed-twice");
    assert_eq!(
        detail(&sb, &id),
        "this run's envelope is in the log again at index 1: a replayed append"
    );
}
