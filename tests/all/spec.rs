//! Spec validation (HOSTILE.md group 9): every problem reported at once
//! with file:line:column, nothing executed.

use crate::harness::{Sandbox, component, toml_path};

#[test]
fn every_spec_error_is_reported_at_once_with_its_position() {
    let sb = Sandbox::new();
    let append = toml_path(&component("append"));
    let text = format!(
        r#"name = "broken"
colour = "blue"
[params]
lr = "0.1"
[sources]
raw = "data.csv"
[steps.a]
component = {append}
inputs = {{ in = "b.out" }}
outputs = ["out", "out"]
[steps.b]
component = {append}
inputs = {{ in = "a.out" }}
outputs = ["out"]
retry = 3
[steps.c]
component = "missing/step.wasm"
inputs = {{ x = "nowhere.out", y = "a.nothing", z = "sources.nope" }}
params = {{ rate = "${{params.learning_rate}}", bad = "${{params.lr" }}
outputs = ["out"]
limits = {{ memory_mib = 999999 }}
"#
    );
    sb.write("data.csv", "x\n1\n");
    let spec = sb.write("broken.toml", &text);
    let run = sb.sluice(&["run", spec.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 2);
    let json = run.json();
    assert_eq!(json["status"], "invalid");
    let got: Vec<String> = json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}: {}",
                e["line"],
                e["column"],
                e["message"].as_str().unwrap()
            )
        })
        .collect();
    let missing = sb.path().join("missing/step.wasm");
    let expected = vec![
        "2:1: unknown field `colour` in the pipeline; expected one of: name, description, seed, params, sources, sweep, schedule, executor, steps".to_string(),
        "7:8: dependency cycle: a -> b -> a".to_string(),
        "10:19: step `a` declares output `out` twice".to_string(),
        "15:1: unknown field `retry` in [steps.b]; expected one of: component, description, inputs, params, outputs, limits, retries, cache, after, when, on, gpu, executor".to_string(),
        format!("17:13: step `c`: component {} does not exist", missing.display()),
        "18:16: step `c` input `x`: unknown step `nowhere` in \"nowhere.out\"".to_string(),
        "18:35: step `c` input `y`: step `a` has no output `nothing`; its outputs: out".to_string(),
        "18:52: step `c` input `z`: unknown source `nope`".to_string(),
        "19:19: step `c` param `rate`: `${params.learning_rate}` names unknown param `learning_rate`; declared: lr".to_string(),
        "19:52: step `c` param `bad`: unterminated `${` in \"${params.lr\"".to_string(),
        "21:25: step `c` limit `memory_mib` must be between 0 and 4096, found 999999".to_string(),
    ];
    assert_eq!(got, expected);
    for e in json["errors"].as_array().unwrap() {
        assert_eq!(e["file"], spec.to_str().unwrap());
    }
    assert!(
        run.stderr
            .contains(&format!("{}:2:1: unknown field `colour`", spec.display())),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("the spec has 11 problems; nothing was run")
    );
    assert!(
        !sb.home().join("runs").exists(),
        "an invalid spec started a run"
    );
}

#[test]
fn toml_syntax_errors_and_self_loops_are_positioned() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "syntax.toml",
        "name = \"x\"\n[steps.a\ncomponent = \"a.wasm\"\n",
    );
    let run = sb.sluice_raw(&["validate", spec.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(&format!("{}:2:", spec.display())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("invalid TOML"), "{}", run.stderr);

    let append = toml_path(&component("append"));
    let spec = sb.write(
        "self.toml",
        &format!("name = \"x\"\n[steps.a]\ncomponent = {append}\ninputs = {{ in = \"a.out\" }}\noutputs = [\"out\"]\nafter = [\"ghost\"]\n"),
    );
    let run = sb.sluice_raw(&["validate", spec.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains(":4:17: step `a` input `in` consumes its own output `out`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(":6:10: step `a` after: unknown step `ghost`"),
        "{}",
        run.stderr
    );
}

#[test]
fn unknown_param_override_is_a_usage_error() {
    let sb = Sandbox::new();
    let append = toml_path(&component("append"));
    sb.write("in.txt", "x\n");
    let spec = sb.write(
        "p.toml",
        &format!("name = \"x\"\n[params]\nline = \"a\"\n[sources]\nt = \"in.txt\"\n[steps.a]\ncomponent = {append}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"${{params.line}}\" }}\noutputs = [\"out\"]\n"),
    );
    let run = sb.sluice(&["run", spec.to_str().unwrap(), "--param", "lines=b"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("--param lines: the pipeline declares no param `lines`; declared: line"),
        "{}",
        run.stderr
    );
    let ok = sb.sluice_raw(&["validate", spec.to_str().unwrap(), "--param", "line=b"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("pipeline `x` is valid (1 steps)"));
}
