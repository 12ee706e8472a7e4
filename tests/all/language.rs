//! The pipeline language beyond plain DAGs: conditions, exit handlers,
//! parameterised sources, and `sluice ci` with its JUnit report.

use std::path::PathBuf;

use crate::harness::{Sandbox, component, step, toml_path};

/// gate (hostile, mode from a param) → guarded (when on a param) → after;
/// an always-handler and a failure-handler.
fn spec(sb: &Sandbox, when: &str) -> PathBuf {
    sb.write("in.txt", "x\n");
    sb.write("other.txt", "y\n");
    let append = toml_path(&component("append"));
    let hostile = toml_path(&component("hostile"));
    sb.write(
        "lang.toml",
        &format!(
            r#"name = "lang"
[params]
mode = "read"
input = "in.txt"
go = "yes"
[sources]
t = "${{params.input}}"
[steps.gate]
component = {hostile}
inputs = {{ in = "sources.t" }}
params = {{ mode = "${{params.mode}}" }}
outputs = ["out"]
[steps.guarded]
component = {append}
inputs = {{ in = "gate.out" }}
params = {{ line = "guarded" }}
outputs = ["out"]
when = "{when}"
[steps.after]
component = {append}
inputs = {{ in = "guarded.out" }}
params = {{ line = "after" }}
outputs = ["out"]
[steps.report]
component = {append}
inputs = {{ in = "sources.t" }}
params = {{ line = "always" }}
outputs = ["out"]
on = "always"
[steps.alarm]
component = {append}
inputs = {{ in = "sources.t" }}
params = {{ line = "alarm" }}
outputs = ["out"]
on = "failure"
"#
        ),
    )
}

#[test]
fn a_false_condition_skips_the_step_and_its_dependants_with_the_reason() {
    let sb = Sandbox::new();
    let spec = spec(&sb, "params.go == 'yes' and gate.status == 'succeeded'");
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(step(&json, "guarded")["status"], "succeeded");
    assert_eq!(step(&json, "after")["status"], "succeeded");

    let (run, json) = sb.run_json(&spec, &["--param", "go=no"]);
    assert_eq!(
        run.code, 0,
        "a false condition is not a failure: {}",
        run.stderr
    );
    assert_eq!(json["status"], "succeeded");
    let guarded = step(&json, "guarded");
    assert_eq!(guarded["status"], "skipped");
    assert_eq!(
        guarded["reason"],
        "condition `params.go == 'yes' and gate.status == 'succeeded'` is false (params.go = \"no\", gate.status = \"succeeded\")"
    );
    assert_eq!(step(&json, "after")["status"], "skipped");
    assert_eq!(
        step(&json, "after")["reason"],
        "upstream step `guarded` was skipped"
    );
}

#[test]
fn a_condition_on_a_missing_metric_fails_the_step_by_name() {
    let sb = Sandbox::new();
    let spec = spec(&sb, "gate.metrics.accuracy > 0.5");
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 1);
    let guarded = step(&json, "guarded");
    assert_eq!(guarded["status"], "failed");
    assert_eq!(guarded["error"]["class"], "step");
    assert_eq!(
        guarded["error"]["message"],
        "condition `gate.metrics.accuracy > 0.5`: step `gate` reported no metric `accuracy`"
    );
}

#[test]
fn condition_errors_are_positioned_at_spec_time() {
    let sb = Sandbox::new();
    let spec = spec(&sb, "gate.metrics.x >> 1 or ghost.status == 'ok'");
    let run = sb.sluice_raw(&["validate", spec.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    // Line 18 is `when = "..."`; the offending `>` is the 17th byte of the
    // condition, after `when = "`.
    assert!(
        run.stderr
            .contains(":18:25: step `guarded` when: expected a value before `>`"),
        "{}",
        run.stderr
    );

    let spec = spec_with(&sb, "ghost.status == 'ok' and params.nope == 1");
    let run = sb.sluice_raw(&["validate", spec.to_str().unwrap()]);
    assert!(
        run.stderr
            .contains(":18:8: step `guarded` when: unknown step `ghost` in `ghost.status`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(":18:8: step `guarded` when: unknown param `nope`"),
        "{}",
        run.stderr
    );
}

fn spec_with(sb: &Sandbox, when: &str) -> PathBuf {
    spec(sb, when)
}

#[test]
fn exit_handlers_run_after_everything_and_follow_their_rule() {
    let sb = Sandbox::new();
    let spec = spec(&sb, "true");
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(step(&json, "report")["status"], "succeeded");
    assert_eq!(step(&json, "alarm")["status"], "skipped");
    assert_eq!(
        step(&json, "alarm")["reason"],
        "exit handler on failure: no step failed"
    );
    // Handlers come last in the run's step order.
    let names: Vec<&str> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gate", "guarded", "after", "report", "alarm"]);

    let (run, json) = sb.run_json(&spec, &["--param", "mode=fail"]);
    assert_eq!(run.code, 1);
    assert_eq!(step(&json, "gate")["status"], "failed");
    assert_eq!(step(&json, "guarded")["status"], "skipped");
    let report = &step(&json, "report")["status"];
    assert!(
        report == "succeeded" || report == "cached",
        "always-handler must run on failure: {report}"
    );
    assert_eq!(
        step(&json, "alarm")["status"],
        "succeeded",
        "failure-handler must run on failure"
    );
}

#[test]
fn source_paths_interpolate_params() {
    let sb = Sandbox::new();
    let spec = spec(&sb, "true");
    let (_, json) = sb.run_json(&spec, &["--param", "input=other.txt"]);
    let d = step(&json, "gate")["outputs"]["out"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sb.sluice(&["artifact", "cat", &d]).stdout, "y\n");
    let run = sb.sluice(&[
        "run",
        spec.to_str().unwrap(),
        "--param",
        "input=nowhere.txt",
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("source `t`: file"), "{}", run.stderr);
    assert!(
        run.stderr.contains("nowhere.txt does not exist"),
        "{}",
        run.stderr
    );
}

#[test]
fn ci_writes_a_junit_report_that_marks_the_failed_step() {
    let sb = Sandbox::new();
    let spec = spec(&sb, "true");
    let junit = sb.path().join("report.xml");
    let run = sb.sluice(&[
        "ci",
        spec.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--param",
        "mode=fail",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed JUnit XML");
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("name"), Some("lang"));
    assert_eq!(suite.attribute("tests"), Some("5"));
    assert_eq!(suite.attribute("failures"), Some("1"));
    assert_eq!(suite.attribute("skipped"), Some("2"));
    let case = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
            .unwrap()
    };
    let failure = case("gate")
        .children()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert_eq!(failure.attribute("type"), Some("step"));
    assert_eq!(
        failure.attribute("message"),
        Some("hostile step failed on purpose")
    );
    assert!(case("after").children().any(|n| n.has_tag_name("skipped")));
    assert!(
        !case("report")
            .children()
            .any(|n| n.has_tag_name("failure") || n.has_tag_name("skipped"))
    );

    let ok = sb.sluice(&[
        "ci",
        spec.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("failures"), Some("0"));
}

#[test]
fn git_push_hook_runs_only_on_a_good_signature_and_once_per_delivery() {
    let sb = Sandbox::new();
    sb.write("in.txt", "x\n");
    sb.write(
        "push.toml",
        &format!(
            "name = \"on-push\"\n[params]\ncommit = \"none\"\n[sources]\nt = \"in.txt\"\n[steps.stamp]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"${{params.commit}}\" }}\noutputs = [\"out\"]\n",
            toml_path(&component("append"))
        ),
    );
    let config = sb.write(
        "sluice.toml",
        "[hooks.main]\nsecret = \"It's a Secret to Everybody\"\npipeline = \"push.toml\"\nbranches = [\"main\"]\n",
    );
    let body = r#"{"ref":"refs/heads/main","after":"3f786850e387550fdab836ed7e6dc881de23001b","repository":{"full_name":"ml/penguins"}}"#;
    let body_file = sb.write("body.json", body);
    let good = sluice_engine::hook::sign(b"It's a Secret to Everybody", body.as_bytes());
    let deliver = |sig: Option<&str>, id: &str| {
        let mut args = vec![
            "hook",
            "main",
            "--config",
            config.to_str().unwrap(),
            "--body",
            body_file.to_str().unwrap(),
            "--delivery",
            id,
        ];
        if let Some(s) = sig {
            args.extend(["--signature", s]);
        }
        sb.sluice(&args)
    };
    let runs = || {
        std::fs::read_dir(sb.home().join("runs"))
            .map(|d| d.count())
            .unwrap_or(0)
    };

    let forged = deliver(
        Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
        "d-1",
    );
    assert_eq!(forged.code, 2);
    assert!(
        forged
            .stderr
            .contains("hook `main`: signature does not match the body"),
        "{}",
        forged.stderr
    );
    let unsigned = deliver(None, "d-1");
    assert_eq!(unsigned.code, 2);
    assert!(
        unsigned.stderr.contains("no X-Hub-Signature-256 header"),
        "{}",
        unsigned.stderr
    );
    assert_eq!(runs(), 0, "a rejected delivery started a run");

    let ok = deliver(Some(&good), "d-1");
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let report: serde_json::Value = serde_json::from_str(ok.stdout.trim()).unwrap();
    assert_eq!(report["status"], "started");
    assert_eq!(
        report["push"]["commit"],
        "3f786850e387550fdab836ed7e6dc881de23001b"
    );
    let id = report["run_id"].as_str().unwrap();
    let show = sb.sluice(&["show", id, "--json"]).json();
    assert_eq!(
        show["params"]["commit"],
        "3f786850e387550fdab836ed7e6dc881de23001b"
    );
    assert_eq!(runs(), 1);

    let again = deliver(Some(&good), "d-1");
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("\"status\":\"duplicate\""),
        "{}",
        again.stdout
    );
    assert_eq!(runs(), 1, "a repeated delivery started a second run");
}

#[test]
fn conditions_read_small_outputs_and_their_json_fields() {
    let sb = Sandbox::new();
    // `gate` copies in.txt ("x\n"): its output, trimmed, is the string "x".
    let spec = spec(&sb, "gate.outputs.out == 'x'");
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(step(&json, "guarded")["status"], "succeeded");
    let spec = spec_with(&sb, "gate.outputs.out == 'y'");
    let (_, json) = sb.run_json(&spec, &[]);
    assert_eq!(
        step(&json, "guarded")["reason"],
        "condition `gate.outputs.out == 'y'` is false (gate.outputs.out = \"x\")"
    );
    let spec = spec_with(&sb, "gate.outputs.out.blessed == true");
    let (_, json) = sb.run_json(&spec, &[]);
    assert_eq!(
        step(&json, "guarded")["error"]["message"],
        "condition `gate.outputs.out.blessed == true`: output `gate.out` has no JSON field `blessed`"
    );
    let spec = spec_with(&sb, "gate.outputs.nope == 1");
    let run = sb.sluice_raw(&["validate", spec.to_str().unwrap()]);
    assert!(
        run.stderr
            .contains("step `guarded` when: step `gate` has no output `nope`"),
        "{}",
        run.stderr
    );
}
