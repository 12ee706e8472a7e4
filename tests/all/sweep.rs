//! `[sweep]`: fan-out per combination, shared upstream steps, fan-in.

use crate::harness::{Sandbox, component, repo, step, toml_path};

#[test]
fn a_two_by_three_sweep_runs_six_trains_shares_upstream_and_fans_in() {
    let sb = Sandbox::new();
    sb.write("in.txt", "base\n");
    let append = toml_path(&component("append"));
    let hostile = toml_path(&component("hostile"));
    let spec = sb.write(
        "sweep.toml",
        &format!(
            r#"name = "grid"
[params]
lr = "0.1"
layers = "1"
[sweep]
lr = [0.01, 0.1]
layers = [1, 2, 3]
[sources]
t = "in.txt"
[steps.prepare]
component = {append}
inputs = {{ in = "sources.t" }}
params = {{ line = "prepared" }}
outputs = ["out"]
[steps.train]
component = {append}
inputs = {{ in = "prepare.out" }}
params = {{ line = "lr=${{params.lr}} layers=${{params.layers}}" }}
outputs = ["out"]
[steps.score]
component = {append}
inputs = {{ in = "train.out" }}
params = {{ line = "scored" }}
outputs = ["out"]
when = "train.status == 'succeeded'"
[steps.pick]
component = {hostile}
inputs = {{ models = "score[*].out" }}
params = {{ mode = "inputs" }}
outputs = ["out"]
"#
        ),
    );
    let (run, json) = sb.run_json(&spec, &["--max-parallel", "2"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let names: Vec<&str> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let trains: Vec<&&str> = names.iter().filter(|n| n.starts_with("train[")).collect();
    assert_eq!(trains.len(), 6, "{names:?}");
    assert_eq!(
        names.iter().filter(|n| **n == "prepare").count(),
        1,
        "shared upstream runs once"
    );
    assert_eq!(names.iter().filter(|n| n.starts_with("score[")).count(), 6);
    for i in 0..6 {
        assert_eq!(step(&json, &format!("train[{i}]"))["status"], "succeeded");
        assert_eq!(step(&json, &format!("train[{i}]"))["attempts"], 1);
    }
    // Each fanned-out step carries its combination; the grid is lr-major.
    assert_eq!(step(&json, "train[0]")["sweep"]["lr"], "0.01");
    assert_eq!(step(&json, "train[0]")["sweep"]["layers"], "1");
    assert_eq!(step(&json, "train[5]")["sweep"]["lr"], "0.1");
    assert_eq!(step(&json, "train[5]")["sweep"]["layers"], "3");
    let out5 = step(&json, "train[5]")["outputs"]["out"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        sb.sluice(&["artifact", "cat", &out5]).stdout,
        "base\nprepared\nlr=0.1 layers=3\n"
    );
    assert_eq!(json["sweep"].as_array().unwrap().len(), 6);
    assert_eq!(json["sweep"][4]["params"]["layers"], "2");

    // The fan-in step saw all six scored outputs, in combination order.
    let listing = step(&json, "pick")["outputs"]["out"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let listing = sb.sluice(&["artifact", "cat", &listing]).stdout;
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 6, "{listing}");
    for (i, line) in lines.iter().enumerate() {
        let digest = step(&json, &format!("score[{i}]"))["outputs"]["out"]["digest"]
            .as_str()
            .unwrap();
        assert!(line.starts_with(&format!("models.{i} {digest} ")), "{line}");
    }
}

#[test]
fn the_tabular_sweep_example_compares_combinations_sorted_by_accuracy() {
    let sb = Sandbox::new();
    let spec = repo().join("examples/pipelines/tabular-sweep.toml");
    let run = sb.sluice(&["run", spec.to_str().unwrap(), "--sort", "accuracy"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    assert!(
        run.stdout
            .contains("sweep: 6 combinations, sorted by accuracy (highest first)"),
        "{}",
        run.stdout
    );
    let table: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("sweep:"))
        .skip(2)
        .collect();
    assert_eq!(table.len(), 6, "{}", run.stdout);
    // 10 epochs at lr 0.05 is the weakest model: last after sorting.
    assert!(table[5].trim_start().starts_with("[0]"), "{}", run.stdout);
    let (_, json) = sb.run_json(&spec, &[]);
    let acc = |k: usize| {
        json["sweep"][k]["metrics"]["evaluate.accuracy"]
            .as_f64()
            .unwrap()
    };
    assert!(acc(5) >= 0.95, "lr 0.5 × 300 epochs: {}", acc(5));
    assert!(acc(0) < acc(5), "{} vs {}", acc(0), acc(5));
    assert_eq!(step(&json, "ingest")["status"], "cached");
}

#[test]
fn sweep_errors_are_reported_at_spec_time() {
    let sb = Sandbox::new();
    let append = toml_path(&component("append"));
    sb.write("in.txt", "x\n");
    let spec = sb.write(
        "bad.toml",
        &format!(
            "name = \"bad\"\n[params]\nlr = \"1\"\n[sweep]\nrate = [1, 2]\n[sources]\nt = \"in.txt\"\n[steps.a]\ncomponent = {append}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n[steps.b]\ncomponent = {append}\ninputs = {{ in = \"a[*].out\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n"
        ),
    );
    let run = sb.sluice_raw(&["validate", spec.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains(":5:1: sweep `rate`: the pipeline declares no param `rate` to sweep"),
        "{}",
        run.stderr
    );
}
