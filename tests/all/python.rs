//! Python steps: a directory with `pyproject.toml` built by the engine
//! with componentize-py (pinned; `SLUICE_COMPONENTIZE_PY` or the engine's
//! own venv), run in the same sandbox as Rust steps, cached and replayed
//! by the digest of its memoized build.

use crate::harness::{Sandbox, component, repo, step, toml_path};

fn python_step(name: &str) -> std::path::PathBuf {
    repo().join("tests/components-py").join(name)
}

/// A Python step between a source and a Rust step: it builds, runs with
/// the engine's virtual clock and seeded random, feeds the Rust step, is
/// a cache hit on the next run (its memoized build has the same digest),
/// and replays identically. A Python exception is a `step` failure whose
/// traceback is in the step's log.
#[test]
fn a_python_step_builds_runs_is_cached_replays_and_fails_with_its_traceback() {
    let sb = Sandbox::new();
    sb.write("in.txt", "payload\n");
    let spec = sb.write(
        "py.toml",
        &format!(
            "name = \"py\"\n[sources]\nt = \"in.txt\"\n\
             [steps.py]\ncomponent = {py}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"from python\" }}\noutputs = [\"out\"]\n\
             [steps.rust]\ncomponent = {rust}\ninputs = {{ in = \"py.out\" }}\nparams = {{ line = \"from rust\" }}\noutputs = [\"out\"]\n",
            py = toml_path(&python_step("append")),
            rust = toml_path(&component("append")),
        ),
    );
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{json:#}\n{}", run.stderr);
    let py = step(&json, "py");
    assert_eq!(py["metrics"]["bytes_copied"], 20.0, "{py:#}");
    // The engine's virtual wall clock starts at 2020-01-01T00:00:00Z.
    assert_eq!(py["tags"]["time"], "1577836800.0", "{py:#}");
    let out = step(&json, "rust")["outputs"]["out"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let cat = sb.sluice(&["artifact", "cat", &out]);
    assert_eq!(cat.stdout, "payload\nfrom python\nfrom rust\n");
    let log = sb.sluice(&["artifact", "cat", py["stdout"].as_str().unwrap()]);
    assert_eq!(log.stdout, "py-append wrote 20 bytes\n");

    // Same sources: the memoized build, so the same component and a hit.
    let (_, again) = sb.run_json(&spec, &[]);
    assert_eq!(step(&again, "py")["status"], "cached", "{again:#}");
    assert_eq!(step(&again, "py")["component"], py["component"]);
    assert_eq!(step(&again, "py")["tags"], py["tags"]);

    let id = json["run_id"].as_str().unwrap();
    let replay = sb.sluice(&["replay", id]);
    assert_eq!(replay.code, 0, "{}\n{}", replay.stdout, replay.stderr);
    assert!(replay.stdout.contains(": identical ("), "{}", replay.stdout);

    // An exception: class `step`, message its last line, traceback logged.
    let failing = sb.write(
        "fail.toml",
        &format!(
            "name = \"py-fail\"\n[sources]\nt = \"in.txt\"\n\
             [steps.py]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ fail = \"true\" }}\noutputs = [\"out\"]\n",
            toml_path(&python_step("append")),
        ),
    );
    let (run, json) = sb.run_json(&failing, &[]);
    assert_eq!(run.code, 1, "{json:#}");
    let py = step(&json, "py");
    assert_eq!(py["error"]["class"], "step", "{py:#}");
    assert_eq!(
        py["error"]["message"], "ValueError: asked to fail",
        "{py:#}"
    );
    let log = sb.sluice(&["artifact", "cat", py["stderr"].as_str().unwrap()]);
    assert!(
        log.stdout
            .starts_with("Traceback (most recent call last):\n")
            && log.stdout.contains("append.py\", line ")
            && log.stdout.ends_with("ValueError: asked to fail\n"),
        "{}",
        log.stdout
    );
}

/// A Python step that loops forever runs out of fuel, and one that
/// allocates without end hits its memory limit: the growth past the limit
/// traps, so CPython never gets to turn it into a `MemoryError` the SDK
/// would report as the step's own failure.
#[test]
fn a_python_step_is_bounded_by_fuel_and_memory() {
    let sb = Sandbox::new();
    sb.write("in.txt", "payload\n");
    let spec = sb.write(
        "bounded.toml",
        &format!(
            "name = \"py-bounded\"\n[sources]\nt = \"in.txt\"\n\
             [steps.spin]\ncomponent = {py}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ mode = \"spin\" }}\noutputs = [\"out\"]\nlimits = {{ fuel = 50000000 }}\n\
             [steps.hoard]\ncomponent = {py}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ mode = \"hoard\" }}\noutputs = [\"out\"]\nlimits = {{ memory_mib = 48 }}\n",
            py = toml_path(&python_step("append")),
        ),
    );
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 1, "{json:#}");
    let spin = step(&json, "spin");
    assert_eq!(spin["error"]["class"], "limit", "{spin:#}");
    assert_eq!(
        spin["error"]["message"], "limit: fuel: step `spin` used all 50000000 units of fuel",
        "{spin:#}"
    );
    let hoard = step(&json, "hoard");
    assert_eq!(hoard["error"]["class"], "limit", "{hoard:#}");
    let message = hoard["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("limit: memory: linear memory would grow to ")
            && message.ends_with(" bytes; the step's limit is 50331648 bytes"),
        "{message}"
    );
    let peak = hoard["memory_peak_bytes"].as_u64().unwrap();
    assert!(peak <= 48 << 20 && peak > 24 << 20, "peak {peak}");
}
