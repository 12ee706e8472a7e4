//! Record-batch I/O through the real engine: the guest SDK's `arrow`
//! feature (`tests/components/table-io`) on tables written by the example
//! `ingest` step.

use crate::harness::{Sandbox, component, repo, step, toml_path};

/// A pipeline: `ingest` the CSV at `csv`, then `table-io` in `mode` on its
/// train output (or on the source `table` when given).
fn spec(
    sb: &Sandbox,
    csv: &str,
    mode: &str,
    extra_params: &str,
    table: Option<&str>,
) -> std::path::PathBuf {
    sb.write("data.csv", csv);
    let (sources, input) = match table {
        Some(t) => (format!("t = \"{t}\"\n"), "sources.t"),
        None => (String::new(), "ingest.train"),
    };
    sb.write(
        "table.toml",
        &format!(
            r#"name = "table"
[sources]
csv = "data.csv"
{sources}
[steps.ingest]
component = {ingest}
inputs = {{ csv = "sources.csv" }}
params = {{ label = "label", eval_fraction = "0.0" }}
outputs = ["train", "eval"]

[steps.io]
component = {io}
inputs = {{ in = "{input}" }}
params = {{ mode = "{mode}"{extra_params} }}
outputs = ["out"]
limits = {{ memory_mib = 32 }}
"#,
            ingest = toml_path(&repo().join("examples/steps/ingest")),
            io = toml_path(&component("table-io")),
        ),
    )
}

/// The `io` step's error message.
fn io_error(json: &serde_json::Value) -> String {
    step(json, "io")["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("io did not fail: {json:#}"))
        .to_owned()
}

fn csv(rows: usize) -> String {
    let mut csv = String::from("label,x\n");
    for i in 0..rows {
        csv.push_str(&format!("{},{}\n", ["a", "b", "c"][i % 3], i as f64 / 8.0));
    }
    csv
}

#[test]
fn a_table_copied_batch_by_batch_is_byte_identical_and_rereadable() {
    let sb = Sandbox::new();
    let spec = spec(&sb, &csv(20_000), "copy", ", passes = \"2\"", None);
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let ingest = step(&json, "ingest");
    let io = step(&json, "io");
    assert_eq!(ingest["metrics"]["rows_train"], 20_000.0);
    assert_eq!(
        ingest["outputs"]["train"]["media_type"],
        "application/vnd.apache.arrow.stream"
    );
    // Same batches re-encoded: the same bytes, so the same digest.
    assert_eq!(
        io["outputs"]["out"]["digest"],
        ingest["outputs"]["train"]["digest"]
    );
    assert_eq!(io["metrics"]["rows"], 20_000.0);
    assert_eq!(io["metrics"]["rows_per_pass"], 20_000.0);
    // 20 000 rows in batches of 8192.
    assert_eq!(io["metrics"]["batches"], 3.0);
}

#[test]
fn a_table_copied_as_host_chunks_is_the_same_artifact() {
    // `bytes`: `Input::fill_buf` chunks straight to `Output`, nothing
    // decoded (what bench/data.sh times as the host API alone); the table
    // spans many chunks.
    let sb = Sandbox::new();
    let spec = spec(&sb, &csv(40_000), "bytes", "", None);
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let train = &step(&json, "ingest")["outputs"]["train"];
    let io = step(&json, "io");
    assert_eq!(io["outputs"]["out"]["digest"], train["digest"]);
    assert_eq!(io["outputs"]["out"]["size"], train["size"]);
    let size = train["size"].as_u64().unwrap();
    assert!(size > 4 << 16, "{size} bytes: fewer than 4 host chunks");
    assert_eq!(io["metrics"]["bytes_out"], size as f64);
}

#[test]
fn a_declared_schema_refuses_a_table_with_other_columns() {
    let sb = Sandbox::new();
    let body = "label,x,extra\na,1,q\n";
    let spec = spec(&sb, body, "expect", "", None);
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let io = step(&json, "io");
    assert_eq!(io["status"], "failed");
    let error = io["error"]["message"].as_str().unwrap();
    assert!(
        error.contains("input `in`: unexpected column 3 `extra` (expected 2 columns)"),
        "{error}"
    );
    // And a type mismatch names the column and both types.
    let sb = Sandbox::new();
    let spec = self::spec(&sb, "label,x\na,text\n", "expect", "", None);
    let (_, json) = sb.run_json(&spec, &[]);
    let error = io_error(&json);
    assert!(
        error.contains(
            "input `in`: column 2 is `x` Utf8 (nullable), expected `x` Float64 (nullable)"
        ),
        "{error}"
    );
}

#[test]
fn a_batch_that_does_not_match_the_output_schema_is_refused() {
    let sb = Sandbox::new();
    let spec = spec(&sb, &csv(3), "bad-batch", "", None);
    let (_, json) = sb.run_json(&spec, &[]);
    let error = io_error(&json);
    assert!(
        error.contains("a batch for output `out`: column 1 is `y` Float64, expected `x` Float64"),
        "{error}"
    );
}

#[test]
fn a_truncated_or_foreign_table_fails_naming_the_offset() {
    // Produce a real table, then cut its end-of-stream marker off.
    let sb = Sandbox::new();
    let spec = spec(&sb, &csv(100), "copy", "", None);
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let digest = step(&json, "ingest")["outputs"]["train"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["artifact", "cat", &digest, "--home"])
        .arg(sb.home())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = out.stdout;
    let cut = full.len() - 8;
    std::fs::write(sb.path().join("cut.arrows"), &full[..cut]).unwrap();
    let spec = self::spec(&sb, &csv(100), "copy", "", Some("cut.arrows"));
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 1);
    let error = io_error(&json);
    assert!(
        error.contains(&format!(
            "input `in` at byte {cut}: the Arrow stream is truncated after 100 rows (no end-of-stream marker)"
        )),
        "{error}"
    );
    // A CSV source is not a table: refused by media type, before reading.
    let spec = self::spec(&sb, &csv(100), "copy", "", Some("data.csv"));
    let (_, json) = sb.run_json(&spec, &[]);
    let error = io_error(&json);
    assert!(
        error.contains("input `in` is `text/csv`, not an Arrow IPC stream"),
        "{error}"
    );
}

/// A pipeline of the example `ingest` step alone on `body`, with `params`.
fn ingest_only(sb: &Sandbox, body: &str, params: &str) -> std::path::PathBuf {
    sb.write("data.csv", body);
    sb.write(
        "ingest.toml",
        &format!(
            r#"name = "ingest-only"
[sources]
csv = "data.csv"

[steps.ingest]
component = {ingest}
inputs = {{ csv = "sources.csv" }}
params = {{ label = "label", eval_fraction = "0.0"{params} }}
outputs = ["train", "eval"]
"#,
            ingest = toml_path(&repo().join("examples/steps/ingest")),
        ),
    )
}

#[test]
fn malformed_csv_rows_fail_ingest_naming_line_and_column_or_are_counted_when_dropped() {
    // Line 4 is ragged; line 6 holds text past the inference rows.
    let body = "label,x\na,1\nb,2\nc,3,extra\na,4\nb,oops\nc,6\n";
    let sb = Sandbox::new();
    let spec = ingest_only(&sb, body, "");
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let ingest = step(&json, "ingest");
    assert_eq!(ingest["status"], "failed");
    let error = ingest["error"]["message"].as_str().unwrap();
    assert!(
        error.contains("CSV line 4: expected 2 fields (as in the header), found 3"),
        "{error}"
    );

    // Types are inferred from the first 2 rows, so `oops` on line 6 is a
    // wrong type in the number column `x`.
    let sb = Sandbox::new();
    let body_typed = "label,x\na,1\nb,2\nc,3\na,4\nb,oops\nc,6\n";
    let spec = ingest_only(&sb, body_typed, ", infer_rows = \"2\"");
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let error = step(&json, "ingest")["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains(
            "CSV line 6: column `x` is a number column (inferred from the first rows) but holds \"oops\""
        ),
        "{error}"
    );

    // Dropping: both bad rows are dropped and counted, never silently.
    let sb = Sandbox::new();
    let spec = ingest_only(&sb, body, ", infer_rows = \"2\", malformed = \"drop\"");
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let metrics = &step(&json, "ingest")["metrics"];
    assert_eq!(metrics["rows_train"], 4.0, "{metrics}");
    assert_eq!(metrics["rows_malformed"], 2.0, "{metrics}");
    assert_eq!(metrics["rows_dropped"], 0.0, "{metrics}");
}

/// `transform` fitted from `stats`' statistics writes the same datasets as
/// `transform` fitting on its own pass (every row labelled), reads `train`
/// once, and refuses statistics of other examples naming the difference.
#[test]
fn transform_fits_from_statistics_as_from_the_rows_and_refuses_foreign_statistics() {
    let sb = Sandbox::new();
    let mut csv = String::from("label,colour,x\n");
    for i in 0..500 {
        let colour = ["red", "green", "blue", ""][i % 4];
        csv.push_str(&format!(
            "{},{colour},{}\n",
            ["a", "b", "c"][i % 3],
            i as f64 / 8.0
        ));
    }
    sb.write("data.csv", &csv);
    let ingest = toml_path(&repo().join("examples/steps/ingest"));
    let stats = toml_path(&repo().join("examples/steps/stats"));
    let transform = toml_path(&repo().join("examples/steps/transform"));
    let spec = sb.write(
        "fit.toml",
        &format!(
            r#"name = "fit"
[sources]
csv = "data.csv"

[steps.ingest]
component = {ingest}
inputs = {{ csv = "sources.csv" }}
params = {{ label = "label", eval_fraction = "0.2" }}
outputs = ["train", "eval"]

[steps.by_colour]
component = {ingest}
inputs = {{ csv = "sources.csv" }}
params = {{ label = "colour", eval_fraction = "0.2" }}
outputs = ["train", "eval"]

[steps.stats]
component = {stats}
inputs = {{ examples = "ingest.train" }}
outputs = ["statistics"]

[steps.colour_stats]
component = {stats}
inputs = {{ examples = "by_colour.train" }}
outputs = ["statistics"]

[steps.from_stats]
component = {transform}
inputs = {{ train = "ingest.train", eval = "ingest.eval", statistics = "stats.statistics" }}
outputs = ["train", "eval", "transform"]

[steps.from_rows]
component = {transform}
inputs = {{ train = "ingest.train", eval = "ingest.eval" }}
outputs = ["train", "eval", "transform"]

[steps.foreign]
component = {transform}
inputs = {{ train = "ingest.train", eval = "ingest.eval", statistics = "colour_stats.statistics" }}
outputs = ["train", "eval", "transform"]
"#
        ),
    );
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 1, "only `foreign` fails: {}", run.stdout);
    let (a, b) = (step(&json, "from_stats"), step(&json, "from_rows"));
    assert_eq!(a["status"], "succeeded", "{a:#}");
    for out in ["train", "eval", "transform"] {
        assert_eq!(
            a["outputs"][out]["digest"], b["outputs"][out]["digest"],
            "{out}"
        );
    }
    assert_eq!(a["metrics"]["fit_passes"], 0.0);
    assert_eq!(b["metrics"]["fit_passes"], 1.0);
    // One pass over train (apply) instead of two: the statistics are read
    // in place of the fitting pass.
    let size = |s: &str, out: &str| step(&json, s)["outputs"][out]["size"].as_u64().unwrap();
    let read = |s: &serde_json::Value| s["bytes_in"].as_u64().unwrap();
    assert_eq!(
        read(b) - read(a),
        size("ingest", "train") - size("stats", "statistics"),
        "{a:#}\n{b:#}"
    );
    let foreign = step(&json, "foreign");
    assert_eq!(foreign["status"], "failed");
    let message = foreign["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "the statistics do not describe the training examples: their label is `colour`, the examples' is `label`"
        ),
        "{message}"
    );
}
