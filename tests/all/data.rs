//! Massive datasets: the example pipeline streams a generated table many
//! times larger than every step's memory limit.

use std::io::Write;

use crate::harness::{Sandbox, repo, step};

/// Rows of the generated table: about 100 MB of CSV.
const ROWS: u64 = 2_300_000;

/// The memory limit every step runs under, in MiB.
const LIMIT_MIB: u64 = 64;

#[test]
fn the_example_pipeline_streams_a_table_larger_than_its_memory_limit() {
    let sb = Sandbox::new();
    let csv = sb.path().join("big.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
    sluice_tabular::generate::write_penguins(&mut out, ROWS, 11).unwrap();
    out.flush().unwrap();
    drop(out);
    let size = std::fs::metadata(&csv).unwrap().len();
    assert!(size > 96 << 20, "{size} bytes is not ~100 MB");

    // The example pipeline, its source swapped and every limit lowered.
    let example = std::fs::read_to_string(repo().join("examples/pipelines/tabular.toml")).unwrap();
    let steps = repo().join("examples/steps");
    let spec = example
        .replace("raw = \"../data/penguins.csv\"", "raw = \"big.csv\"")
        .replace("\"../steps/", &format!("\"{}/", steps.display()))
        .replace("memory_mib = 256", &format!("memory_mib = {LIMIT_MIB}"));
    assert_eq!(
        spec.matches(&format!("memory_mib = {LIMIT_MIB}")).count(),
        8,
        "every tabular step declares its memory limit"
    );
    let spec = sb.write("big.toml", &spec);
    let (run, json) = sb.run_json(&spec, &["--param", "epochs=1"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    for name in crate::pipeline::TABULAR_STEPS {
        let s = step(&json, name);
        assert_eq!(s["status"], "succeeded", "{name}: {s:#}");
        let peak = s["memory_peak_bytes"].as_u64().unwrap();
        println!(
            "{name:<10} {:>7} ms  peak {:>5.1} MiB  fuel {}",
            s["wall_ms"],
            peak as f64 / f64::from(1 << 20),
            s["fuel_used"]
        );
        assert!(
            peak <= (LIMIT_MIB << 20) / 2,
            "{name} peaked at {peak} bytes, not well under {LIMIT_MIB} MiB"
        );
    }
    let ingest = &step(&json, "ingest")["metrics"];
    let total = ["rows_train", "rows_eval", "rows_dropped"]
        .iter()
        .map(|m| ingest[m].as_f64().unwrap())
        .sum::<f64>();
    assert_eq!(total, ROWS as f64);
    assert_eq!(ingest["rows_malformed"], 0.0);
    assert!(step(&json, "ingest")["bytes_in"].as_u64().unwrap() >= size);
    let accuracy = step(&json, "evaluate")["metrics"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!(accuracy > 0.9, "accuracy {accuracy}");

    // An unchanged rerun is served from the cache, digest for digest.
    let (rerun, again) = sb.run_json(&spec, &["--param", "epochs=1"]);
    assert_eq!(rerun.code, 0, "{}\n{}", rerun.stderr, rerun.stdout);
    for name in crate::pipeline::TABULAR_STEPS {
        let (first, second) = (step(&json, name), step(&again, name));
        assert_eq!(second["cached"], true, "{name}: {second:#}");
        assert_eq!(first["outputs"], second["outputs"], "{name}");
    }
}
