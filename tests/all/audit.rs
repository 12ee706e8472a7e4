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
    assert!(report["log_index"].is_u64());
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
    assert_rejected(&sb, &id, None, "not-in-log");
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
