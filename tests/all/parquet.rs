//! Parquet through the real engine: `ingest` reads a Parquet source (with
//! seeks through the host's `reader.seek`), `export` writes one, and the
//! guest SDK's `Input` seeks (`tests/components/table-io`, mode `seek`).

use std::path::PathBuf;
use std::sync::Arc;

use sluice_tabular::example::Examples;
use sluice_tabular::parquet::{ParquetOptions, ParquetWriter, from_csv, read_batches};

use crate::harness::{Sandbox, component, repo, step, toml_path};

/// Penguins-shaped rows with missing values and rows without a label.
fn csv() -> String {
    let mut out = Vec::new();
    sluice_tabular::generate::write_penguins(&mut out, 20_000, 3).unwrap();
    String::from_utf8(out).unwrap()
}

fn parquet_of_csv(csv: &str) -> Vec<u8> {
    from_csv(
        || Ok(csv.as_bytes()),
        "species",
        Vec::new(),
        ParquetOptions::default(),
    )
    .unwrap()
}

/// A pipeline: `ingest` the source file `source`, then `export` its train
/// examples as Parquet.
fn spec(sb: &Sandbox, source: &str) -> PathBuf {
    sb.write(
        "parquet.toml",
        &format!(
            r#"name = "parquet"
[sources]
raw = "{source}"

[steps.ingest]
component = {ingest}
inputs = {{ csv = "sources.raw" }}
params = {{ label = "species", eval_fraction = "0.2", split_seed = "5" }}
outputs = ["train", "eval"]
limits = {{ memory_mib = 64 }}

[steps.export]
component = {export}
inputs = {{ table = "ingest.train" }}
params = {{ row_group_rows = "4000" }}
outputs = ["parquet"]
limits = {{ memory_mib = 64 }}
"#,
            ingest = toml_path(&repo().join("examples/steps/ingest")),
            export = toml_path(&repo().join("examples/steps/export")),
        ),
    )
}

fn digest(json: &serde_json::Value, step_name: &str, output: &str) -> String {
    step(json, step_name)["outputs"][output]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no output {step_name}.{output}: {json:#}"))
        .to_owned()
}

fn cat(sb: &Sandbox, digest: &str) -> Vec<u8> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["artifact", "cat", digest, "--home"])
        .arg(sb.home())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ingest_error(json: &serde_json::Value) -> String {
    step(json, "ingest")["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("ingest did not fail: {json:#}"))
        .to_owned()
}

#[test]
fn a_parquet_source_gives_the_same_examples_as_the_csv_of_its_rows() {
    let csv = csv();
    let sb = Sandbox::new();
    sb.write("data.csv", &csv);
    let (run, from_csv) = sb.run_json(&spec(&sb, "data.csv"), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let pq = parquet_of_csv(&csv);
    std::fs::write(sb.path().join("data.parquet"), &pq).unwrap();
    // Chosen by media type (`.parquet`), and by the `PAR1` magic alone.
    std::fs::write(sb.path().join("data.bin"), &pq).unwrap();
    for source in ["data.parquet", "data.bin"] {
        let (run, json) = sb.run_json(&spec(&sb, source), &[]);
        assert_eq!(run.code, 0, "{source}: {}", run.stderr);
        let ingest = step(&json, "ingest");
        assert_eq!(ingest["tags"]["format"], "parquet", "{source}");
        for output in ["train", "eval"] {
            assert_eq!(
                digest(&json, "ingest", output),
                digest(&from_csv, "ingest", output),
                "{source}: {output}"
            );
        }
        for metric in ["rows_train", "rows_eval", "rows_dropped"] {
            assert_eq!(
                ingest["metrics"][metric],
                step(&from_csv, "ingest")["metrics"][metric],
                "{source}: {metric}"
            );
        }
    }
    assert_eq!(step(&from_csv, "ingest")["tags"]["format"], "csv");
}

#[test]
fn export_writes_the_rows_of_its_input_as_parquet() {
    let sb = Sandbox::new();
    sb.write("data.csv", &csv());
    let (run, json) = sb.run_json(&spec(&sb, "data.csv"), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let export = step(&json, "export");
    assert_eq!(
        export["outputs"]["parquet"]["media_type"],
        "application/vnd.apache.parquet"
    );
    let rows = step(&json, "ingest")["metrics"]["rows_train"].clone();
    assert_eq!(export["metrics"]["rows"], rows);
    assert_eq!(export["metrics"]["columns"], 8.0);
    let train = Examples::read(&cat(&sb, &digest(&json, "ingest", "train"))[..]).unwrap();
    let (schema, batches) = read_batches(cat(&sb, &digest(&json, "export", "parquet"))).unwrap();
    // Back to an Arrow stream, read as examples: the same rows and schema.
    let mut w = sluice_tabular::table::BatchWriter::new(Vec::new(), &schema).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    let back = Examples::read(&w.finish().unwrap()[..]).unwrap();
    assert_eq!(back.rows.len() as f64, rows.as_f64().unwrap());
    assert_eq!(back, train);
    // 4000 rows per row group, deterministic bytes: a rerun is a cache hit
    // with the same digest.
    let (_, again) = sb.run_json(&spec(&sb, "data.csv"), &[]);
    assert_eq!(
        digest(&again, "export", "parquet"),
        digest(&json, "export", "parquet")
    );
}

#[test]
fn a_parquet_source_without_the_label_or_with_an_unsupported_column_fails_naming_it() {
    use arrow_array::{BooleanArray, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("species", DataType::Utf8, true),
        Field::new("tagged", DataType::Boolean, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["Adelie"])),
            Arc::new(BooleanArray::from(vec![true])),
        ],
    )
    .unwrap();
    let mut w = ParquetWriter::new(Vec::new(), &schema, ParquetOptions::default()).unwrap();
    w.write(&batch).unwrap();
    let pq = w.finish().unwrap();
    let sb = Sandbox::new();
    std::fs::write(sb.path().join("data.parquet"), &pq).unwrap();
    let (run, json) = sb.run_json(&spec(&sb, "data.parquet"), &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(step(&json, "ingest")["status"], "failed");
    let error = ingest_error(&json);
    assert!(
        error.contains(
            "input `csv` (Parquet): column `tagged` has Parquet (Arrow) type Boolean; \
             examples hold numbers (integer, float, decimal) and strings"
        ),
        "{error}"
    );
    // The label is looked for first.
    let spec = spec(&sb, "data.parquet");
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("label = \"species\"", "label = \"island\"");
    std::fs::write(&spec, text).unwrap();
    let (_, json) = sb.run_json(&spec, &[]);
    let error = ingest_error(&json);
    assert!(
        error.contains(
            "input `csv` (Parquet): label column `island` is not in the Parquet schema (species, tagged)"
        ),
        "{error}"
    );
}

#[test]
fn a_truncated_parquet_source_fails_naming_the_input() {
    let pq = parquet_of_csv(&csv());
    let sb = Sandbox::new();
    std::fs::write(sb.path().join("data.parquet"), &pq[..pq.len() - 3]).unwrap();
    let (run, json) = sb.run_json(&spec(&sb, "data.parquet"), &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let error = ingest_error(&json);
    assert!(
        error.contains(
            "input `csv` (Parquet): not a readable Parquet file: Parquet error: Invalid Parquet file. Corrupt footer"
        ),
        "{error}"
    );
    // Cut in half (the magic at the start still says Parquet).
    std::fs::write(sb.path().join("half.bin"), &pq[..pq.len() / 2]).unwrap();
    let (_, json) = sb.run_json(&spec(&sb, "half.bin"), &[]);
    let error = ingest_error(&json);
    assert!(
        error.contains("input `csv` (Parquet): not a readable Parquet file: "),
        "{error}"
    );
}

/// A pipeline: `table-io` in mode `seek` on the source `data.bin`.
fn seek_spec(sb: &Sandbox, params: &str) -> PathBuf {
    sb.write(
        "seek.toml",
        &format!(
            r#"name = "seek"
[sources]
raw = "data.bin"

[steps.io]
component = {io}
inputs = {{ in = "sources.raw" }}
params = {{ mode = "seek"{params} }}
outputs = ["out"]
"#,
            io = toml_path(&component("table-io")),
        ),
    )
}

#[test]
fn a_guest_seeks_an_input_and_reads_the_bytes_there() {
    let sb = Sandbox::new();
    // 300 000 bytes: past the SDK's 64 KiB buffer, so seeks reach the host.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(sb.path().join("data.bin"), &data).unwrap();
    let (run, json) = sb.run_json(&seek_spec(&sb, ", at = \"100000\", len = \"70000\""), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let io = step(&json, "io");
    assert_eq!(io["metrics"]["position"], 170_000.0);
    let mut want = data[data.len() - 4..].to_vec();
    want.extend_from_slice(&data[100_000..170_000]);
    want.extend_from_slice(&data[169_998..170_000]);
    let got = cat(&sb, &digest(&json, "io", "out"));
    assert!(got == want, "seeked bytes differ ({} bytes)", got.len());

    // Seeking to the end is allowed; one byte past it is `invalid`.
    let (run, json) = sb.run_json(
        &seek_spec(&sb, ", at = \"0\", len = \"10\", past = \"300000\""),
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (run, json2) = sb.run_json(
        &seek_spec(&sb, ", at = \"0\", len = \"10\", past = \"300001\""),
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    let io = step(&json2, "io");
    assert_eq!(io["status"], "failed");
    assert_eq!(io["error"]["class"], "step", "{json2:#}");
    let error = io["error"]["message"].as_str().unwrap();
    assert!(
        error.contains("input `in`: cannot seek to byte 300001: the artifact has 300000 bytes"),
        "{error}"
    );
    drop(json);
}
