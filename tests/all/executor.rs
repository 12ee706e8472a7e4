//! Executors (issue 14): the same attempt description runs in this process
//! (`local`) or in a `sluice exec-step` child (`process`) with identical
//! outputs and cache keys; results are filed once per submission; a killed
//! executor is retried without a second or partial output.

use std::path::Path;

use serde_json::Value;

use crate::harness::{Sandbox, component, repo, step, toml_path};

const NO_NVML: (&str, &str) = ("SLUICE_NVML_LIB", "/nonexistent/libnvidia-ml.so.1");

fn run(sb: &Sandbox, spec: &Path, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let home = sb.home();
    let mut args = vec!["run", spec.to_str().unwrap(), "--json"];
    args.extend(extra);
    args.extend(["--home", home.to_str().unwrap()]);
    let r = sb.sluice_env(&args, env);
    assert_eq!(r.code, 0, "{}", r.failure());
    r.json()
}

fn steps(json: &Value) -> &Vec<Value> {
    json["steps"].as_array().unwrap()
}

/// Runs `spec` locally, then in `exec-step` processes without the cache,
/// then on `process` with the cache: byte-identical outputs, identical
/// keys, all cache hits across executors; the process run verifies and
/// replays identically.
fn parity(spec: &str, env: &[(&str, &str)]) {
    let sb = Sandbox::new();
    let spec = repo().join(spec);
    let local = run(&sb, &spec, &["--executor", "local"], env);
    let process = run(&sb, &spec, &["--executor", "process", "--no-cache"], env);
    assert_eq!(steps(&local).len(), steps(&process).len());
    let mut executed = 0;
    for l in steps(&local) {
        let name = l["name"].as_str().unwrap();
        let p = step(&process, name);
        assert_eq!(p["status"], l["status"], "{name}: {p:#}");
        for field in ["cache_key", "outputs", "tags"] {
            assert_eq!(p[field], l[field], "{name}.{field}");
        }
        // A gpu job's wall time and throughput are the machine's, not the
        // step's; everything else the guest saw is the same.
        if l.get("gpu").is_none() {
            for field in ["metrics", "series", "fuel_used"] {
                assert_eq!(p[field], l[field], "{name}.{field}");
            }
        }
        if l["status"] == "succeeded" {
            executed += 1;
            assert_eq!(l["executor"], "local", "{name}");
            assert_eq!(p["executor"], "process", "{name}");
        }
    }
    assert!(executed >= 3, "{local:#}");
    // A run on one executor is a cache hit on another.
    let again = run(&sb, &spec, &["--executor", "process"], env);
    for l in steps(&local) {
        let name = l["name"].as_str().unwrap();
        let a = step(&again, name);
        if l["status"] == "succeeded" {
            assert_eq!(a["status"], "cached", "{name}: {a:#}");
            assert_eq!(a["outputs"], l["outputs"], "{name}");
            assert!(a.get("executor").is_none(), "{name}: {a:#}");
        }
    }
    let id = process["run_id"].as_str().unwrap();
    let verify = sb.sluice_env(&["verify", id, "--home", sb.home().to_str().unwrap()], env);
    assert_eq!(verify.code, 0, "{}", verify.failure());
    let replay = sb.sluice_env(
        &[
            "replay",
            id,
            "--json",
            "--home",
            sb.home().to_str().unwrap(),
        ],
        env,
    );
    assert_eq!(replay.code, 0, "{}", replay.failure());
    assert_eq!(replay.json()["verdict"], "identical");
}

#[test]
fn the_tabular_example_is_identical_on_the_local_and_process_executors() {
    parity("examples/pipelines/tabular.toml", &[]);
}

#[test]
fn the_sweep_example_is_identical_on_the_local_and_process_executors() {
    parity("examples/pipelines/tabular-sweep.toml", &[]);
}

#[test]
fn the_drift_example_is_identical_on_the_local_and_process_executors() {
    parity("examples/pipelines/drift-retrain.toml", &[]);
}

#[test]
fn the_gpu_example_is_identical_on_the_local_and_process_executors() {
    // Its gpu jobs run next to the step, in the exec-step process.
    parity("examples/pipelines/tabular-gpu.toml", &[NO_NVML]);
}

#[test]
fn the_polyglot_example_is_identical_on_the_local_and_process_executors() {
    parity("examples/pipelines/tabular-polyglot.toml", &[]);
}

fn one_step_spec(sb: &Sandbox, extra: &str) -> std::path::PathBuf {
    sb.write("in.txt", "in\n");
    sb.write(
        "k.toml",
        &format!(
            "name = \"k\"\n[sources]\nt = \"in.txt\"\n{extra}\n[steps.a]\ncomponent = {}\n\
             inputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\nretries = 1\n",
            toml_path(&component("append"))
        ),
    )
}

fn results(sb: &Sandbox) -> Vec<std::path::PathBuf> {
    let dir = sb.home().join("store/docs/results");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_killed_exec_step_process_is_retried_with_one_result_and_the_same_output() {
    let sb = Sandbox::new();
    let spec = one_step_spec(&sb, "");
    // The first attempt's child dies after writing its output, before it
    // files the result (as `kill -9` would); the second attempt's does not.
    let json = run(
        &sb,
        &spec,
        &["--executor", "process"],
        &[("SLUICE_FAULTS", "exec.result:1@1=crash")],
    );
    let a = step(&json, "a");
    assert_eq!(a["status"], "succeeded", "{a:#}");
    assert_eq!(a["attempts"], 2, "{a:#}");
    assert_eq!(a["executor"], "process");
    let reference = Sandbox::new();
    let local = run(
        &reference,
        &one_step_spec(&reference, ""),
        &["--executor", "local"],
        &[],
    );
    assert_eq!(a["outputs"], step(&local, "a")["outputs"]);
    assert_eq!(a["cache_key"], step(&local, "a")["cache_key"]);
    // The failed attempt is recorded as an engine failure naming the child.
    let id = json["run_id"].as_str().unwrap();
    let record =
        std::fs::read_to_string(sb.home().join("runs").join(id).join("record.jsonl")).unwrap();
    let failed: Vec<Value> = record
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "attempt-failed")
        .collect();
    assert_eq!(failed.len(), 1, "{record}");
    assert_eq!(failed[0]["error"]["class"], "engine");
    let message = failed[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("step `a`: `sluice exec-step sha256:")
            && message.contains("without a result"),
        "{message}"
    );
    // One result: the second attempt's; the store holds no torn blob.
    assert_eq!(results(&sb).len(), 1, "{:?}", results(&sb));
    let tmp: Vec<_> = std::fs::read_dir(sb.home().join("store/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    let verify = sb.sluice(&["verify", id]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
}

#[test]
fn exec_step_files_one_result_per_submission_and_never_reruns_it() {
    let sb = Sandbox::new();
    let spec = one_step_spec(&sb, "[executor]\nkind = \"process\"");
    let json = run(&sb, &spec, &[], &[]);
    assert_eq!(step(&json, "a")["executor"], "process", "{json:#}");
    let filed = results(&sb);
    assert_eq!(filed.len(), 1);
    let before = std::fs::read(&filed[0]).unwrap();
    let name = filed[0].file_stem().unwrap().to_str().unwrap();
    let digest = format!("sha256:{name}");
    // Sent again (a retried submission): answered from the filed result,
    // with the exit code of its class, and nothing is written.
    let again = sb.sluice(&["exec-step", &digest]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(std::fs::read(&filed[0]).unwrap(), before);
    assert_eq!(results(&sb).len(), 1);
    let result: Value = serde_json::from_slice(&before).unwrap();
    assert_eq!(result["request"], digest.as_str());
    assert_eq!(result["executor"], "process");
    assert_eq!(
        result["outcome"]["outputs"]["out"],
        step(&json, "a")["outputs"]["out"]
    );
    // A new run with --no-cache is a new submission: it executes.
    let fresh = run(&sb, &spec, &["--no-cache"], &[]);
    assert_eq!(step(&fresh, "a")["status"], "succeeded");
    assert_eq!(results(&sb).len(), 2);
}

#[test]
fn exec_step_refuses_what_is_not_a_stored_submission_naming_it() {
    let sb = Sandbox::new();
    let bad = sb.sluice(&["exec-step", "sha256:nope"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("request \"sha256:nope\""),
        "{}",
        bad.stderr
    );
    let absent = format!("sha256:{}", "ab".repeat(32));
    let missing = sb.sluice(&["exec-step", &absent]);
    assert_eq!(missing.code, 13, "{}", missing.stderr);
    assert!(
        missing.stderr.contains(&format!(
            "request {absent}: artifact {absent} is not in the store"
        )),
        "{}",
        missing.stderr
    );
    // A stored blob that is not a submission.
    let bytes = b"{\"run\": \"r\"}";
    let digest = sluice_engine::digest::Digest::of(bytes);
    let hex = digest.hex();
    let blob = sb
        .home()
        .join("store/sha256")
        .join(&hex[..2])
        .join(&hex[2..]);
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::write(&blob, bytes).unwrap();
    let junk = sb.sluice(&["exec-step", &digest.to_string()]);
    assert_eq!(junk.code, 13, "{}", junk.stderr);
    assert!(
        junk.stderr
            .contains("is not an attempt submission: missing field `request`"),
        "{}",
        junk.stderr
    );
    assert!(results(&sb).is_empty());
}

#[test]
fn executor_names_are_checked_in_specs_flags_and_config() {
    let sb = Sandbox::new();
    let spec = one_step_spec(&sb, "[executor]\nkind = \"slurm\"");
    let r = sb.sluice(&["validate", spec.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "[executor] kind: unknown executor \"slurm\"; expected one of: local, process, ray"
        ),
        "{}",
        r.stderr
    );
    let spec = one_step_spec(&sb, "[executor]\nkinds = \"local\"");
    let r = sb.sluice(&["validate", spec.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("unknown field `kinds` in [executor]; expected one of: kind"),
        "{}",
        r.stderr
    );
    let spec = one_step_spec(&sb, "");
    let r = sb.sluice(&["run", spec.to_str().unwrap(), "--executor", "k8s"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("unknown executor \"k8s\""),
        "{}",
        r.stderr
    );
    let config = sb.write("config.toml", "[executor]\nkind = \"cluster\"\n");
    let r = sb.sluice(&[
        "run",
        spec.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "[executor] kind: unknown executor \"cluster\"; expected one of: local, process, ray"
        ),
        "{}",
        r.stderr
    );
    // A step's own choice wins over the command line's.
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("retries = 1\n", "retries = 1\nexecutor = \"process\"\n");
    let spec = sb.write("k2.toml", &text);
    let json = run(&sb, &spec, &["--executor", "local"], &[]);
    assert_eq!(step(&json, "a")["executor"], "process", "{json:#}");
}

/// The only run in `sb`'s home.
fn only_run_id(sb: &Sandbox) -> String {
    let runs: Vec<_> = std::fs::read_dir(sb.home().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

#[test]
fn a_coordinator_killed_after_its_child_filed_the_result_resumes_without_running_it_again() {
    let sb = Sandbox::new();
    let spec = one_step_spec(&sb, "[executor]\nkind = \"process\"")
        .to_str()
        .unwrap()
        .to_string();
    let spec = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("retries = 1\n", "");
    let spec = sb.write("once.toml", &spec);
    // The coordinator dies appending the attempt's third record line (its
    // `attempt-sandbox` event), after the child filed the result.
    let crashed = sb.sluice_env(
        &[
            "run",
            spec.to_str().unwrap(),
            "--home",
            sb.home().to_str().unwrap(),
        ],
        &[("SLUICE_FAULTS", "record@3=crash")],
    );
    assert_ne!(crashed.code, 0, "{}", crashed.stderr);
    assert_eq!(results(&sb).len(), 1);
    let id = only_run_id(&sb);
    // Resumed: the same attempt of the same run is the same submission; its
    // filed result answers it. A child started now would die (and the step,
    // with no retries, fail).
    let resumed = sb.sluice_env(
        &[
            "resume",
            &id,
            "--json",
            "--home",
            sb.home().to_str().unwrap(),
        ],
        &[("SLUICE_FAULTS", "exec.result:1@1=crash")],
    );
    assert_eq!(resumed.code, 0, "{}", resumed.failure());
    let json = resumed.json();
    let a = step(&json, "a");
    assert_eq!(a["status"], "succeeded", "{a:#}");
    assert_eq!(a["attempts"], 1, "{a:#}");
    assert_eq!(a["executor"], "process", "{a:#}");
    assert_eq!(results(&sb).len(), 1);
    assert_eq!(sb.sluice(&["verify", &id]).code, 0);
}
