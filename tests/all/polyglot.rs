//! The polyglot example, `examples/pipelines/tabular-polyglot.toml`: the
//! Rust steps of the tabular pipeline plus a Python step (`profile`,
//! `examples/steps-py/profile`) on the raw CSV and a JavaScript step
//! (`report`, `examples/steps-js/report`) over the other steps' JSON.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::harness::{Sandbox, repo, step};
use crate::pipeline::TABULAR_STEPS;

/// What the profile must say of one column, computed here from the CSV.
#[derive(Debug, Default)]
struct ColumnFacts {
    count: u64,
    missing: u64,
    /// Every non-missing value, parsed, in row order; `None` once one
    /// is not a number.
    numbers: Option<Vec<f64>>,
    distinct: std::collections::BTreeSet<String>,
}

/// The profile of `examples/data/penguins.csv`, by plain Rust: the file
/// has no quoted fields (checked), so a field is what lies between commas;
/// missing is an empty field or `NA`, as the step defines it.
struct CsvFacts {
    header: Vec<String>,
    rows: u64,
    columns: Vec<ColumnFacts>,
    classes: BTreeMap<String, u64>,
}

fn csv_facts(label: &str) -> CsvFacts {
    let text = std::fs::read_to_string(repo().join("examples/data/penguins.csv")).unwrap();
    assert!(
        !text.contains('"'),
        "the simple split below assumes no quoting"
    );
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let label_at = header.iter().position(|h| h == label).unwrap();
    let mut columns: Vec<ColumnFacts> = header
        .iter()
        .map(|_| ColumnFacts {
            numbers: Some(Vec::new()),
            ..ColumnFacts::default()
        })
        .collect();
    let mut classes = BTreeMap::new();
    let mut rows = 0;
    for line in lines {
        rows += 1;
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), header.len(), "row {rows}: {line}");
        for (c, field) in columns.iter_mut().zip(&fields) {
            if field.is_empty() || *field == "NA" {
                c.missing += 1;
                continue;
            }
            c.count += 1;
            c.distinct.insert(field.to_string());
            let parsed = field.parse::<f64>().ok();
            c.numbers = match (c.numbers.take(), parsed) {
                (Some(mut v), Some(x)) => {
                    v.push(x);
                    Some(v)
                }
                _ => None,
            };
        }
        let class = fields[label_at];
        if !class.is_empty() && class != "NA" {
            *classes.entry(class.to_string()).or_insert(0) += 1;
        }
    }
    CsvFacts {
        header,
        rows,
        columns,
        classes,
    }
}

/// `sluice artifact cat DIGEST`.
fn cat(sb: &Sandbox, digest: &Value) -> String {
    let out = sb.sluice(&["artifact", "cat", digest.as_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
}

/// The polyglot pipeline runs every step; its Rust steps give exactly the
/// artifacts tabular.toml gives. The Python profile matches the CSV (rows,
/// missing values, ranges, class counts), the JavaScript report carries
/// the evaluation's accuracy and the profile's rows, both record what they
/// were built from; a rerun is all cached and the run replays identically.
#[test]
fn the_polyglot_tabular_example_profiles_in_python_reports_in_javascript_and_replays() {
    let sb = Sandbox::new();
    let pipelines = repo().join("examples/pipelines");
    let (run, json) = sb.run_json(&pipelines.join("tabular-polyglot.toml"), &[]);
    assert_eq!(run.code, 0, "{json:#}\n{}", run.stderr);
    assert_eq!(json["status"], "succeeded", "{json:#}");
    let all: Vec<&str> = TABULAR_STEPS
        .iter()
        .copied()
        .chain(["profile", "report"])
        .collect();
    assert_eq!(json["steps"].as_array().unwrap().len(), all.len());
    for name in &all {
        let s = step(&json, name);
        assert_eq!(s["status"], "succeeded", "{name}: {s:#}");
        assert_eq!(s["attempts"], 1, "{name}");
    }

    // The same Rust steps in tabular.toml, executed again (not cache
    // hits): the script steps beside them change none of their artifacts.
    let (run, plain) = sb.run_json(&pipelines.join("tabular.toml"), &["--no-cache"]);
    assert_eq!(run.code, 0, "{plain:#}\n{}", run.stderr);
    for name in TABULAR_STEPS {
        let s = step(&plain, name);
        assert_eq!(s["status"], "succeeded", "{name}: {s:#}");
        assert_eq!(s["outputs"], step(&json, name)["outputs"], "{name}");
    }

    // What the script steps were built from.
    let profile = step(&json, "profile");
    let report = step(&json, "report");
    assert_eq!(profile["built_from"]["language"], "python", "{profile:#}");
    assert_eq!(report["built_from"]["language"], "javascript", "{report:#}");
    for s in [profile, report] {
        let d = s["built_from"]["digest"].as_str().unwrap_or_default();
        assert!(d.starts_with("sha256:") && d.len() == 71, "{s:#}");
    }

    // The profile against the CSV, counted here.
    let facts = csv_facts("species");
    let out = &profile["outputs"]["profile"];
    assert_eq!(out["media_type"], "application/json", "{profile:#}");
    let doc: Value = serde_json::from_str(&cat(&sb, &out["digest"])).unwrap();
    assert_eq!(doc["rows"], facts.rows, "{doc:#}");
    assert_eq!(doc["label"], "species");
    assert_eq!(doc["label_missing"], 0);
    assert_eq!(doc["ragged_rows"], 0);
    assert_eq!(doc["classes_exact"], true);
    let classes: BTreeMap<String, u64> = serde_json::from_value(doc["classes"].clone()).unwrap();
    assert_eq!(classes, facts.classes);
    let columns = doc["columns"].as_array().unwrap();
    let names: Vec<&str> = columns
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, facts.header);
    let mut missing_cells = 0;
    for (c, f) in columns.iter().zip(&facts.columns) {
        let name = &c["name"];
        assert_eq!(c["count"], f.count, "{name}");
        assert_eq!(c["missing"], f.missing, "{name}");
        missing_cells += f.missing;
        match &f.numbers {
            // serde_json reads floats exactly here (`float_roundtrip`, a
            // feature sluice-tabular turns on), and the step's mean is a
            // sum in row order, as this one is.
            Some(v) => {
                let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                assert_eq!(c["type"], "number", "{c:#}");
                assert_eq!(c["min"].as_f64(), Some(min), "{c:#}");
                assert_eq!(c["max"].as_f64(), Some(max), "{c:#}");
                assert_eq!(c["mean"].as_f64(), Some(mean), "{c:#}");
            }
            None => {
                assert_eq!(c["type"], "string", "{c:#}");
                assert_eq!(c["distinct"], f.distinct.len(), "{c:#}");
                assert_eq!(c["distinct_exact"], true, "{c:#}");
            }
        }
    }
    assert_eq!(doc["missing_cells"], missing_cells);
    assert_eq!(profile["metrics"]["rows"], facts.rows as f64);
    assert_eq!(profile["metrics"]["missing_cells"], missing_cells as f64);

    // The report: the evaluation's accuracy with the JS step's 4 decimals
    // (`toFixed(4)`), the profile's rows and classes.
    let evaluation: Value = serde_json::from_str(&cat(
        &sb,
        &step(&json, "evaluate")["outputs"]["evaluation"]["digest"],
    ))
    .unwrap();
    let accuracy = evaluation["accuracy"].as_f64().unwrap();
    assert_eq!(
        report["metrics"]["accuracy"].as_f64(),
        Some(accuracy),
        "{report:#}"
    );
    assert_eq!(
        step(&json, "evaluate")["metrics"]["accuracy"].as_f64(),
        Some(accuracy)
    );
    let anomalies: Vec<Value> = serde_json::from_str(&cat(
        &sb,
        &step(&json, "validate")["outputs"]["anomalies"]["digest"],
    ))
    .unwrap();
    let out = &report["outputs"]["report"];
    assert_eq!(out["media_type"], "text/markdown", "{report:#}");
    let md = cat(&sb, &out["digest"]);
    let missing_pct =
        100.0 * missing_cells as f64 / (facts.rows * facts.header.len() as u64) as f64;
    for line in [
        format!("| Source rows | {} |", facts.rows),
        format!("| Missing cells | {missing_cells} ({missing_pct:.2}%) |"),
        format!("| Accuracy | {accuracy:.4} |"),
        format!("| Evaluation rows | {} |", evaluation["rows"]),
        format!("| Anomalies | {} |", anomalies.len()),
    ] {
        assert!(md.lines().any(|l| l == line), "no `{line}` in\n{md}");
    }
    for (class, n) in &facts.classes {
        let row = format!("| `{class}` | {n} | ");
        assert!(
            md.lines().any(|l| l.starts_with(&row)),
            "no `{row}` in\n{md}"
        );
    }

    // Unchanged sources: the memoized builds, so every step is a hit.
    let (run, again) = sb.run_json(&pipelines.join("tabular-polyglot.toml"), &[]);
    assert_eq!(run.code, 0, "{again:#}\n{}", run.stderr);
    for name in &all {
        let s = step(&again, name);
        assert_eq!(s["status"], "cached", "{name}: {s:#}");
        assert_eq!(s["outputs"], step(&json, name)["outputs"], "{name}");
    }
    assert_eq!(step(&again, "profile")["component"], profile["component"]);
    assert_eq!(step(&again, "report")["component"], report["component"]);

    let id = json["run_id"].as_str().unwrap();
    let replay = sb.sluice(&["replay", id]);
    assert_eq!(replay.code, 0, "{}\n{}", replay.stdout, replay.stderr);
    assert!(replay.stdout.contains(": identical ("), "{}", replay.stdout);
    for name in &all {
        assert!(
            replay.stdout.lines().any(|l| {
                let mut words = l.split_whitespace();
                words.next() == Some(name) && words.next() == Some("identical")
            }),
            "{name} not identical in\n{}",
            replay.stdout
        );
    }
}
