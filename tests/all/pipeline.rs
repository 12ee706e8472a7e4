//! The example pipeline end to end, caching and change propagation.

use crate::harness::{Sandbox, component, repo, step, toml_path};

pub(crate) const TABULAR_STEPS: &[&str] = &[
    "ingest",
    "stats",
    "validate",
    "transform",
    "train",
    "evaluate",
    "push",
    "export",
];

#[test]
fn tabular_example_trains_a_blessed_model_and_reruns_fully_cached() {
    let sb = Sandbox::new();
    let spec = repo().join("examples/pipelines/tabular.toml");
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(json["status"], "succeeded");
    for name in TABULAR_STEPS {
        let s = step(&json, name);
        assert_eq!(s["status"], "succeeded", "{name}: {s:#}");
        assert_eq!(s["cached"], false);
        assert_eq!(s["attempts"], 1);
        assert!(s["fuel_used"].as_u64().unwrap() > 0, "{name} used no fuel");
        assert!(s["memory_peak_bytes"].as_u64().unwrap() > 0);
        for (out, o) in s["outputs"].as_object().unwrap() {
            let d = o["digest"].as_str().unwrap();
            assert!(
                d.starts_with("sha256:") && d.len() == 71,
                "{name}.{out}: {d}"
            );
        }
    }
    let accuracy = step(&json, "evaluate")["metrics"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!(accuracy >= 0.9, "accuracy {accuracy}");
    assert_eq!(step(&json, "evaluate")["metrics"]["blessed"], 1.0);
    // The pushed model is byte-identical to the trained one.
    assert_eq!(
        step(&json, "push")["outputs"]["model"]["digest"],
        step(&json, "train")["outputs"]["model"]["digest"]
    );

    let (rerun, again) = sb.run_json(&spec, &[]);
    assert_eq!(rerun.code, 0, "stderr: {}", rerun.stderr);
    for name in TABULAR_STEPS {
        let s = step(&again, name);
        assert_eq!(s["status"], "cached", "{name}");
        assert_eq!(s["attempts"], 0, "{name} executed on a cached rerun");
        assert_eq!(s["fuel_used"], 0);
        assert_eq!(s["outputs"], step(&json, name)["outputs"], "{name}");
    }
    assert_eq!(
        step(&again, "evaluate")["metrics"]["accuracy"].as_f64(),
        Some(accuracy),
        "cached steps report their metrics"
    );
}

fn chain_spec(sb: &Sandbox, n: usize, extra_step: &str) -> std::path::PathBuf {
    let append = component("append");
    sb.write("in.txt", "start\n");
    let mut spec = String::from(
        "name = \"chain\"\n[params]\nfirst = \"one\"\nlast = \"end\"\n[sources]\ntext = \"in.txt\"\n",
    );
    for i in 0..n {
        let input = if i == 0 {
            "sources.text".to_string()
        } else {
            format!("s{}.out", i - 1)
        };
        let line = match i {
            0 => "${params.first}".to_string(),
            i if i == n - 1 => "${params.last}".to_string(),
            i => format!("line {i}"),
        };
        spec.push_str(&format!(
            "[steps.s{i}]\ncomponent = {}\ninputs = {{ in = \"{input}\" }}\nparams = {{ line = \"{line}\" }}\noutputs = [\"out\"]\n",
            toml_path(&append)
        ));
    }
    spec.push_str(extra_step);
    sb.write("chain.toml", &spec)
}

#[test]
fn changed_param_reexecutes_exactly_the_affected_steps() {
    let sb = Sandbox::new();
    let spec = chain_spec(&sb, 4, "");
    let (_, first) = sb.run_json(&spec, &[]);
    assert_eq!(first["status"], "succeeded");
    // `last` only reaches s3.
    let (_, second) = sb.run_json(&spec, &["--param", "last=fin"]);
    let statuses: Vec<&str> = (0..4)
        .map(|i| step(&second, &format!("s{i}"))["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["cached", "cached", "cached", "succeeded"]);
    // `first` reaches s0, and through its changed output every later step.
    let (_, third) = sb.run_json(&spec, &["--param", "first=uno"]);
    for i in 0..4 {
        assert_eq!(
            step(&third, &format!("s{i}"))["status"],
            "succeeded",
            "s{i}"
        );
    }
    let out = step(&third, "s3")["outputs"]["out"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let cat = sb.sluice(&["artifact", "cat", &out]);
    assert_eq!(cat.code, 0, "{}", cat.stderr);
    assert_eq!(cat.stdout, "start\nuno\nline 1\nline 2\nend\n");
}

#[test]
fn no_cache_forces_execution_and_gives_identical_digests() {
    let sb = Sandbox::new();
    let spec = chain_spec(&sb, 2, "");
    let (_, first) = sb.run_json(&spec, &[]);
    let (_, forced) = sb.run_json(&spec, &["--no-cache"]);
    for name in ["s0", "s1"] {
        assert_eq!(step(&forced, name)["status"], "succeeded");
        assert_eq!(
            step(&forced, name)["outputs"],
            step(&first, name)["outputs"]
        );
    }
}

#[test]
fn failed_step_skips_its_dependants_and_fails_the_run_but_not_siblings() {
    let sb = Sandbox::new();
    let hostile = component("hostile");
    let extra = format!(
        "[steps.bad]\ncomponent = {}\nparams = {{ mode = \"fail\" }}\noutputs = [\"out\"]\nretries = 2\n\
         [steps.after_bad]\ncomponent = {}\ninputs = {{ in = \"bad.out\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n",
        toml_path(&hostile),
        toml_path(&component("append"))
    );
    let spec = chain_spec(&sb, 2, &extra);
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(json["status"], "failed");
    let bad = step(&json, "bad");
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["attempts"], 3, "retries = 2 gives three attempts");
    assert_eq!(bad["error"]["class"], "step");
    assert_eq!(bad["error"]["message"], "hostile step failed on purpose");
    let skipped = step(&json, "after_bad");
    assert_eq!(skipped["status"], "skipped");
    assert_eq!(skipped["reason"], "upstream step `bad` failed");
    assert_eq!(step(&json, "s1")["status"], "succeeded");
}

#[test]
fn inputs_larger_than_guest_memory_stream_through_a_step() {
    let sb = Sandbox::new();
    // 24 MiB of input through a step limited to 4 MiB of linear memory.
    let line = "0123456789abcdef".repeat(4) + "\n";
    let big = line.repeat((24 << 20) / line.len());
    sb.write("big.txt", &big);
    let spec = sb.write(
        "big.toml",
        &format!(
            "name = \"big\"\n[sources]\nt = \"big.txt\"\n[steps.a]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"end\" }}\noutputs = [\"out\"]\nlimits = {{ memory_mib = 4 }}\n",
            toml_path(&component("append"))
        ),
    );
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let a = step(&json, "a");
    assert_eq!(a["bytes_in"], big.len());
    assert_eq!(a["outputs"]["out"]["size"], big.len() + 4);
    assert!(a["memory_peak_bytes"].as_u64().unwrap() <= 4 << 20);
    let mut expected = big.into_bytes();
    expected.extend_from_slice(b"end\n");
    let digest = a["outputs"]["out"]["digest"].as_str().unwrap();
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&expected)));
}

fn sha256_hex(bytes: &[u8]) -> String {
    sluice_engine::digest::Digest::of(bytes).hex()
}

#[test]
fn drift_retrain_takes_the_retrain_branch_only_on_shifted_data() {
    let sb = Sandbox::new();
    let spec = repo().join("examples/pipelines/drift-retrain.toml");
    let (run, shifted) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(step(&shifted, "drift")["metrics"]["drifted"], 2.0);
    for name in ["transform", "train", "evaluate", "push"] {
        assert_eq!(step(&shifted, name)["status"], "succeeded", "{name}");
    }
    assert_eq!(step(&shifted, "evaluate")["metrics"]["blessed"], 1.0);

    let (run, same) = sb.run_json(&spec, &["--param", "current=../data/penguins.csv"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(same["status"], "succeeded");
    assert_eq!(step(&same, "drift")["metrics"]["drifted"], 0.0);
    assert_eq!(
        step(&same, "transform")["reason"],
        "condition `drift.metrics.drifted >= params.min_drifted` is false (drift.metrics.drifted = 0, params.min_drifted = \"1\")"
    );
    for name in ["transform", "train", "evaluate", "push"] {
        assert_eq!(step(&same, name)["status"], "skipped", "{name}");
    }
}
