//! `sluice replay` (HOSTILE.md groups 8 and 13): identical when nothing
//! changed; diverged or environment drift, with the step named, otherwise.

use serde_json::Value;

use crate::harness::{Sandbox, component, repo, step, toml_path};

fn replay(sb: &Sandbox, run_id: &str) -> (i32, Value) {
    let run = sb.sluice(&["replay", run_id, "--json"]);
    (run.code, run.json())
}

fn verdicts(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn replay_of_the_example_pipeline_is_identical_for_every_step() {
    let sb = Sandbox::new();
    let (run, json) = sb.run_json(&repo().join("examples/pipelines/tabular.toml"), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let id = json["run_id"].as_str().unwrap();
    let (code, report) = replay(&sb, id);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["verdict"], "identical");
    assert_eq!(report["replay_of"], id);
    let names: Vec<String> = verdicts(&report)
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(v, "identical", "{n}");
            n
        })
        .collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert_eq!(
        step(&report, "train")["found"]["model"],
        step(&json, "train")["outputs"]["model"]["digest"]
    );
}

/// A run of the hostile step in `mode` next to an `append` step.
fn recorded_run(sb: &Sandbox, mode: &str) -> (String, Value, std::path::PathBuf) {
    sb.write("in.txt", "in\n");
    let hostile = sb.path().join("hostile.wasm");
    std::fs::copy(component("hostile"), &hostile).unwrap();
    let spec = sb.write(
        "r.toml",
        &format!(
            "name = \"r\"\n[params]\nline = \"first\"\n[sources]\nt = \"in.txt\"\n\
             [steps.clocks]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ mode = \"{mode}\" }}\noutputs = [\"out\"]\n\
             [steps.tail]\ncomponent = {}\ninputs = {{ in = \"clocks.out\" }}\nparams = {{ line = \"${{params.line}}\" }}\noutputs = [\"out\"]\n",
            toml_path(&hostile),
            toml_path(&component("append"))
        ),
    );
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    (json["run_id"].as_str().unwrap().to_string(), json, hostile)
}

#[test]
fn clock_and_random_reading_step_replays_bit_identically() {
    let sb = Sandbox::new();
    let (id, _, _) = recorded_run(&sb, "nondeterminism");
    let (code, report) = replay(&sb, &id);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        verdicts(&report),
        [
            ("clocks".into(), "identical".into()),
            ("tail".into(), "identical".into())
        ]
    );
}

fn edit_record(sb: &Sandbox, id: &str, edit: impl Fn(&mut Value)) {
    let path = sb.home().join("runs").join(id).join("record.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            edit(&mut v);
            serde_json::to_string(&v).unwrap()
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn replay_after_changing_a_recorded_param_diverges_at_that_step() {
    let sb = Sandbox::new();
    let (id, _, _) = recorded_run(&sb, "nondeterminism");
    edit_record(&sb, &id, |v| {
        if v["type"] == "step-started" && v["step"] == "tail" {
            v["params"]["line"] = "forged".into();
        }
    });
    let (code, report) = replay(&sb, &id);
    assert_eq!(code, 1);
    assert_eq!(report["verdict"], "diverged");
    assert_eq!(report["first_divergence"]["step"], "tail");
    assert_eq!(report["first_divergence"]["output"], "out");
    assert_eq!(verdicts(&report)[0].1, "identical");
    assert_ne!(
        report["first_divergence"]["expected"],
        report["first_divergence"]["found"]
    );
}

#[test]
fn replay_after_altering_a_recorded_output_digest_diverges() {
    let sb = Sandbox::new();
    let (id, json, _) = recorded_run(&sb, "nondeterminism");
    let forged = format!("sha256:{}", "0".repeat(64));
    edit_record(&sb, &id, |v| {
        if v["type"] == "step-finished" && v["step"] == "clocks" {
            v["outputs"]["out"]["digest"] = forged.clone().into();
        }
    });
    let (code, report) = replay(&sb, &id);
    assert_eq!(code, 1);
    assert_eq!(report["verdict"], "diverged");
    let d = &report["first_divergence"];
    assert_eq!(
        (d["step"].as_str(), d["output"].as_str()),
        (Some("clocks"), Some("out"))
    );
    assert_eq!(d["expected"], forged.as_str());
    assert_eq!(
        d["found"],
        step(&json, "clocks")["outputs"]["out"]["digest"]
    );
}

#[test]
fn replay_after_replacing_a_component_reports_environment_drift() {
    let sb = Sandbox::new();
    let (id, _, hostile) = recorded_run(&sb, "nondeterminism");
    // Same behaviour, different bytes: a trailing custom section.
    let mut bytes = std::fs::read(&hostile).unwrap();
    bytes.extend_from_slice(&[0, 5, 4, b'n', b'o', b't', b'e']);
    std::fs::write(&hostile, bytes).unwrap();
    let (code, report) = replay(&sb, &id);
    assert_eq!(code, 1);
    assert_eq!(report["verdict"], "environment-drift", "{report:#}");
    let clocks = step(&report, "clocks");
    assert_eq!(clocks["verdict"], "identical");
    assert!(
        clocks["drift"]
            .as_str()
            .unwrap()
            .contains("hostile.wasm is now sha256:"),
        "{clocks:#}"
    );
}
