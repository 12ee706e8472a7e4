//! Unit tests of the spec validator: order, cycles, grants, names and the
//! expansion bounds.

use super::*;

fn with_component(text: &str, overrides: &[(String, String)]) -> Result<Pipeline, Vec<SpecError>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.wasm"), b"\0asm").unwrap();
    parse(&dir.path().join("p.toml"), text, overrides)
}

#[test]
fn steps_come_out_in_topological_order_with_interpolated_params() {
    let p = with_component(
        r#"name = "p"
seed = 7
[params]
lr = 0.5
epochs = 10
[steps.last]
component = "c.wasm"
inputs = { m = "first.out" }
params = { note = "lr=${params.lr} x${ params.epochs }", flag = true }
[steps.first]
component = "c.wasm"
outputs = ["out"]
"#,
        &[("epochs".to_string(), "20".to_string())],
    )
    .unwrap();
    let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["first", "last"]);
    assert_eq!(p.seed, 7);
    assert_eq!(p.steps[1].params["note"], "lr=0.5 x20");
    assert_eq!(p.steps[1].params["flag"], "true");
    assert_eq!(p.steps[1].deps, vec![0]);
    assert_eq!(
        p.steps[1].inputs["m"],
        InputRef::Step {
            step: 0,
            output: "out".into()
        }
    );
}

#[test]
fn a_three_step_cycle_is_named_in_order() {
    let errors = with_component(
        r#"name = "p"
[steps.a]
component = "c.wasm"
inputs = { x = "c.out" }
outputs = ["out"]
[steps.b]
component = "c.wasm"
inputs = { x = "a.out" }
outputs = ["out"]
[steps.c]
component = "c.wasm"
inputs = { x = "b.out" }
outputs = ["out"]
"#,
        &[],
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].message, "dependency cycle: a -> b -> c -> a");
    assert_eq!((errors[0].line, errors[0].column), (2, 8));
}

#[test]
fn gpu_grants_interpolate_params_and_follow_sweeps() {
    let p = with_component(
        r#"name = "p"
[params]
worker = "cpu"
[sweep]
worker = ["cpu", "torch"]
[steps.train]
component = "c.wasm"
gpu = { worker = "${params.worker}", max_jobs = 3, min_free_memory_mib = 1024 }
[steps.plain]
component = "c.wasm"
"#,
        &[],
    )
    .unwrap();
    let grants: Vec<(&str, Option<Grant>)> = p
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.gpu.clone()))
        .collect();
    let grant = |worker: &str| {
        Some(Grant {
            worker: worker.into(),
            max_jobs: 3,
            min_free_memory_mib: 1024,
        })
    };
    assert_eq!(
        grants,
        [
            ("train[0]", grant("cpu")),
            ("train[1]", grant("torch")),
            ("plain", None)
        ]
    );
    let one = with_component(
        "name = \"p\"\n[steps.t]\ncomponent = \"c.wasm\"\ngpu = { worker = \"cpu\" }\n",
        &[],
    )
    .unwrap();
    assert_eq!(one.steps[0].gpu.as_ref().unwrap().max_jobs, 1);
}

#[test]
fn names_must_be_plain_identifiers() {
    let errors = with_component(
        "name = \"p\"\n[steps.\"../x\"]\ncomponent = \"c.wasm\"\n",
        &[],
    )
    .unwrap_err();
    assert!(
        errors[0].message.starts_with("invalid step name \"../x\""),
        "{errors:?}"
    );
}

/// `[sweep] p = [0, ..., n-1]` over a declared `p`.
fn sweep_of(n: usize) -> String {
    let values: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!("[sweep]\np = [{}]\n", values.join(", "))
}

fn messages(result: Result<Pipeline, Vec<SpecError>>) -> Vec<String> {
    result
        .unwrap_err()
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
        .collect()
}

#[test]
fn fan_in_beyond_the_edge_budget_is_refused_before_expansion() {
    let mut text = format!("name = \"p\"\n[params]\np = \"0\"\n{}", sweep_of(1024));
    text.push_str(
        "[steps.t]\ncomponent = \"c.wasm\"\nparams = { v = \"${params.p}\" }\noutputs = [\"o\"]\n",
    );
    for i in 0..1000 {
        text.push_str(&format!(
            "[steps.c{i}]\ncomponent = \"c.wasm\"\ninputs = {{ all = \"t[*].o\" }}\n"
        ));
    }
    assert_eq!(
        messages(with_component(&text, &[])),
        [
            "5:1: the [sweep]'s 1024 combinations expand the pipeline to 2048000 inputs and dependencies; the limit is 1000000"
        ]
    );
}

#[test]
fn interpolation_is_bounded_per_string_and_in_total() {
    let big = "x".repeat(100_000);
    let refs = "${params.a}".repeat(11);
    let text = format!(
        "name = \"p\"\n[params]\na = \"{big}\"\n[steps.s]\ncomponent = \"c.wasm\"\nparams = {{ v = \"{refs}\" }}\n"
    );
    assert_eq!(
        messages(with_component(&text, &[])),
        ["6:16: step `s` param `v`: expands to more than 1048576 bytes"]
    );
    // 1 MB each is fine; 700 of them are not.
    let refs = "${params.a}".repeat(10);
    let mut text = format!(
        "name = \"p\"\n[params]\na = \"{big}\"\n[steps.s]\ncomponent = \"c.wasm\"\n[steps.s.params]\n"
    );
    for i in 0..700 {
        text.push_str(&format!("v{i} = \"{refs}\"\n"));
    }
    let errors = messages(with_component(&text, &[]));
    assert_eq!(
        errors,
        [
            "74:7: step `s` param `v67`: the spec's interpolated values exceed 67108864 bytes in total"
        ]
    );
}

#[test]
fn exit_handlers_times_steps_is_bounded() {
    let mut text = "name = \"p\"\n".to_string();
    for i in 0..1001 {
        text.push_str(&format!("[steps.s{i}]\ncomponent = \"c.wasm\"\n"));
    }
    for i in 0..1000 {
        text.push_str(&format!(
            "[steps.h{i}]\ncomponent = \"c.wasm\"\non = \"always\"\n"
        ));
    }
    let errors = messages(with_component(&text, &[]));
    assert_eq!(
        errors,
        [
            "2004:8: 1000 exit handlers each waiting for 1001 steps make 1001000 dependencies; the limit is 1000000"
        ]
    );
}
