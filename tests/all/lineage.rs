//! Artifact lineage (issue 15): from a pushed model back to the CSV it was
//! trained on, through every step, from the sealed records of the home's
//! runs (`sluice lineage`); a record that does not verify is skipped, never
//! used.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::harness::{Sandbox, repo, step};

fn file_digest(rel: &str) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(repo().join(rel)).unwrap();
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}

fn output(run: &Value, step_name: &str, out: &str) -> String {
    step(run, step_name)["outputs"][out]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("{step_name}.{out} in {run:#}"))
        .to_string()
}

fn lineage(sb: &Sandbox, digest: &str) -> (i32, Value) {
    let r = sb.sluice(&["lineage", digest, "--json"]);
    (
        r.code,
        serde_json::from_str(&r.stdout).unwrap_or(Value::Null),
    )
}

/// The steps whose productions make up the derivation.
fn derivation_steps(l: &Value) -> BTreeSet<String> {
    l["upstream"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|o| o["step"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_pushed_model_traces_back_to_its_csv_through_every_step_and_a_broken_record_is_skipped() {
    let sb = Sandbox::new();
    let (r, tabular) = sb.run_json(&repo().join("examples/pipelines/tabular.toml"), &[]);
    assert_eq!(r.code, 0, "{}", r.failure());
    let (r, drift) = sb.run_json(&repo().join("examples/pipelines/drift-retrain.toml"), &[]);
    assert_eq!(r.code, 0, "{}", r.failure());
    let tabular_id = tabular["run_id"].as_str().unwrap();
    let drift_id = drift["run_id"].as_str().unwrap();
    let csv = file_digest("examples/data/penguins.csv");
    let shifted = file_digest("examples/data/penguins-shifted.csv");

    // The tabular pipeline's pushed model: made from transform's table,
    // made from ingest's (with stats' statistics), made from the CSV.
    let pushed = output(&tabular, "push", "model");
    let (code, l) = lineage(&sb, &pushed);
    assert_eq!(code, 0, "{l:#}");
    assert_eq!(l["roots"], serde_json::json!([csv]), "{l:#}");
    let steps = derivation_steps(&l);
    for s in ["ingest", "stats", "transform", "train"] {
        assert!(steps.contains(s), "{s} missing from {steps:?}");
    }
    // Every production in the derivation is the tabular run's; the CSV
    // came in as its source `raw`.
    for origin in l["upstream"].as_object().unwrap().values() {
        assert_eq!(origin["run"], tabular_id, "{origin:#}");
    }
    assert_eq!(l["upstream"][&csv]["kind"], "source");
    assert_eq!(l["upstream"][&csv]["source"], "raw");
    assert!(
        l["produced_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["step"] == "push" && p["output"] == "model"),
        "{l:#}"
    );

    // The retrained model of the drift pipeline comes from the shifted
    // data, through its own ingest, transform and train.
    let retrained = output(&drift, "train", "model");
    let (code, l) = lineage(&sb, &retrained);
    assert_eq!(code, 0, "{l:#}");
    assert_eq!(l["roots"], serde_json::json!([shifted]), "{l:#}");
    let steps = derivation_steps(&l);
    for s in ["ingest_current", "transform", "train"] {
        assert!(steps.contains(s), "{s} missing from {steps:?}");
    }
    assert!(!steps.contains("ingest_reference"), "{steps:?}");

    // The CSV itself: a source of both runs, read by both ingests.
    let (code, l) = lineage(&sb, &csv);
    assert_eq!(code, 0);
    let sources: BTreeSet<(String, String)> = l["source_of"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["run"].as_str().unwrap().into(),
                s["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        BTreeSet::from([
            (tabular_id.to_string(), "raw".to_string()),
            (drift_id.to_string(), "reference".to_string())
        ])
    );
    let readers: BTreeSet<&str> = l["consumed_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_str().unwrap())
        .collect();
    assert_eq!(readers, BTreeSet::from(["ingest", "ingest_reference"]));

    // The human form: the tree down to the source.
    let text = sb.sluice(&["lineage", &pushed]).stdout;
    assert!(text.starts_with(&format!("artifact {pushed}\n")), "{text}");
    assert!(
        text.contains(&format!(
            "csv = {csv}: source `raw` of run {tabular_id} (tabular)"
        )),
        "{text}"
    );

    // Nothing made it: exit 1, said so.
    let unknown = format!("sha256:{}", "0".repeat(64));
    let r = sb.sluice(&["lineage", &unknown]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("made by no run in scope"), "{}", r.stdout);
    let r = sb.sluice(&["lineage", "model"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("\"model\" is not an artifact digest"),
        "{}",
        r.stderr
    );

    // A record edited after the seal is not evidence: that run is
    // skipped, naming it, and the model it alone made is unknown.
    let record = sb.home().join("runs").join(tabular_id).join("record.jsonl");
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, text.replacen("\"tabular\"", "\"tabulaR\"", 1)).unwrap();
    let (code, l) = lineage(&sb, &pushed);
    assert_eq!(code, 1, "{l:#}");
    assert_eq!(l["skipped"][0]["run"], tabular_id, "{l:#}");
    assert!(
        l["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("record line"),
        "{l:#}"
    );
}
