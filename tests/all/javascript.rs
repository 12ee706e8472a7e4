//! JavaScript steps: a directory with `package.json` (`"sluice": {"entry"}`)
//! built by the engine with ComponentizeJS (pinned, installed with `npm ci`
//! from the engine's lockfile), run in the same sandbox as Rust steps,
//! cached and replayed by the digest of its memoized build, and recorded
//! with the digest of the sources it was built from.
//!
//! One test function, run in order: the component is built and compiled
//! once (a cold ComponentizeJS build plus a 12 MB compile cost ~40 s).

use serde_json::Value;

use crate::harness::{Sandbox, component, repo, step, toml_path};

fn js_step(name: &str) -> std::path::PathBuf {
    repo().join("tests/components-js").join(name)
}

/// The in-toto statement of a sealed run.
fn statement(sb: &Sandbox, id: &str) -> Value {
    use base64::Engine as _;
    let out = sb.sluice(&["provenance", id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let env: Value = serde_json::from_str(&out.stdout).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// A JavaScript step between a source and a Rust step: it builds, runs
/// with the engine's virtual clock and seeded random, feeds the Rust step,
/// is a cache hit on the next run, replays identically, verifies, and its
/// source digest is in the report, the record and the provenance. A
/// thrown error is a `step` failure with the stack in the step's log; a
/// spinning step runs out of fuel and a hoarding one hits its memory limit.
#[test]
fn a_javascript_step_builds_runs_is_cached_replays_records_its_sources_and_is_bounded() {
    let sb = Sandbox::new();
    sb.write("in.txt", "payload\n");
    let pipeline = |seed: u64| {
        format!(
            "name = \"js\"\nseed = {seed}\n[sources]\nt = \"in.txt\"\n\
             [steps.js]\ncomponent = {js}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"from js\" }}\noutputs = [\"out\"]\n\
             [steps.rust]\ncomponent = {rust}\ninputs = {{ in = \"js.out\" }}\nparams = {{ line = \"from rust\" }}\noutputs = [\"out\"]\n",
            js = toml_path(&js_step("append")),
            rust = toml_path(&component("append")),
        )
    };
    let spec = sb.write("js.toml", &pipeline(0));
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{json:#}\n{}", run.stderr);
    let js = step(&json, "js").clone();
    assert_eq!(js["status"], "succeeded", "{js:#}");
    assert_eq!(js["metrics"]["bytes_copied"], 16.0, "{js:#}");
    // The engine's virtual wall clock starts at 2020-01-01T00:00:00Z.
    assert_eq!(js["tags"]["time"], "1577836800000", "{js:#}");
    let built_from = &js["built_from"];
    assert_eq!(built_from["language"], "javascript", "{js:#}");
    assert_eq!(built_from["toolchain"], "componentize-js 0.23.0");
    let source = built_from["digest"].as_str().unwrap().to_string();
    assert!(source.starts_with("sha256:") && source != js["component"]);
    let out = step(&json, "rust")["outputs"]["out"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        sb.sluice(&["artifact", "cat", &out]).stdout,
        "payload\nfrom js\nfrom rust\n"
    );
    let log = sb.sluice(&["artifact", "cat", js["stdout"].as_str().unwrap()]);
    assert_eq!(log.stdout, "js-append wrote 16 bytes\n");

    // The record and the provenance name the sources; verify holds.
    let id = json["run_id"].as_str().unwrap().to_string();
    let record =
        std::fs::read_to_string(sb.home().join("runs").join(&id).join("record.jsonl")).unwrap();
    let started: Vec<Value> = record
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "step-started" && e["step"] == "js")
        .collect();
    assert_eq!(started.len(), 1, "{record}");
    assert_eq!(&started[0]["built_from"], built_from);
    let deps = statement(&sb, &id)["predicate"]["buildDefinition"]["resolvedDependencies"].clone();
    let dep = |name: &str| {
        deps.as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no dependency {name}: {deps:#}"))
            .clone()
    };
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_string();
    assert_eq!(
        dep("source:js"),
        serde_json::json!({
            "name": "source:js",
            "digest": { "sha256": hex(&source) },
            "annotations": { "language": "javascript", "toolchain": "componentize-js 0.23.0" },
        })
    );
    assert_eq!(
        dep("component:js")["digest"]["sha256"],
        hex(js["component"].as_str().unwrap())
    );
    assert!(
        deps.as_array()
            .unwrap()
            .iter()
            .all(|d| d["name"] != "source:rust"),
        "a Rust crate has no source dependency: {deps:#}"
    );
    let verified = sb.sluice(&["verify", &id]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, verified.stderr);

    // Same sources: the memoized build, so the same component and a hit.
    let (_, again) = sb.run_json(&spec, &[]);
    let hit = step(&again, "js");
    assert_eq!(hit["status"], "cached", "{again:#}");
    assert_eq!(hit["component"], js["component"]);
    assert_eq!(hit["built_from"], js["built_from"]);
    let replay = sb.sluice(&["replay", &id]);
    assert_eq!(replay.code, 0, "{}\n{}", replay.stdout, replay.stderr);
    assert!(replay.stdout.contains(": identical ("), "{}", replay.stdout);

    // Math.random() reads the engine's random, seeded by the run: another
    // seed, another value; the virtual clock does not move with it.
    let seeded = sb.write("js7.toml", &pipeline(7));
    let (_, seven) = sb.run_json(&seeded, &[]);
    let js7 = step(&seven, "js");
    assert_eq!(js7["status"], "succeeded", "{seven:#}");
    assert_ne!(js7["tags"]["random"], js["tags"]["random"]);
    assert_eq!(js7["tags"]["time"], js["tags"]["time"]);

    // Failures: a throw, a spin, a hoard.
    let failing = sb.write(
        "fail.toml",
        &format!(
            "name = \"js-fail\"\n[sources]\nt = \"in.txt\"\n\
             [steps.throw]\ncomponent = {js}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ fail = \"true\" }}\noutputs = [\"out\"]\n\
             [steps.spin]\ncomponent = {js}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ mode = \"spin\" }}\noutputs = [\"out\"]\nlimits = {{ fuel = 50000000 }}\n\
             [steps.hoard]\ncomponent = {js}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ mode = \"hoard\" }}\noutputs = [\"out\"]\nlimits = {{ memory_mib = 48 }}\n",
            js = toml_path(&js_step("append")),
        ),
    );
    let (run, json) = sb.run_json(&failing, &[]);
    assert_eq!(run.code, 1, "{json:#}");
    let throw = step(&json, "throw");
    assert_eq!(throw["error"]["class"], "step", "{throw:#}");
    assert_eq!(
        throw["error"]["message"], "Error: asked to fail",
        "{throw:#}"
    );
    let log = sb.sluice(&["artifact", "cat", throw["stderr"].as_str().unwrap()]);
    assert!(
        log.stdout.starts_with("Error: asked to fail\n") && log.stdout.contains("append.js:"),
        "{}",
        log.stdout
    );
    crate::harness::assert_spin_and_hoard_limited(&json);
}

/// Without the tools to install the build tools, a script step fails with
/// a message naming what is missing; no build is attempted, nothing else
/// in the run is affected.
#[test]
fn a_missing_node_or_python_is_named_and_fails_only_its_step() {
    let sb = Sandbox::new();
    sb.write("in.txt", "payload\n");
    let spec = sb.write(
        "tools.toml",
        &format!(
            "name = \"tools\"\n[sources]\nt = \"in.txt\"\n\
             [steps.js]\ncomponent = {js}\ninputs = {{ in = \"sources.t\" }}\noutputs = [\"out\"]\n\
             [steps.py]\ncomponent = {py}\ninputs = {{ in = \"sources.t\" }}\noutputs = [\"out\"]\n\
             [steps.rust]\ncomponent = {rust}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n",
            js = toml_path(&js_step("append")),
            py = toml_path(&repo().join("tests/components-py/append")),
            rust = toml_path(&component("append")),
        ),
    );
    let empty = sb.path().join("no-tools");
    let empty = empty.to_str().unwrap();
    // Fresh copies of the step directories: their memos must not answer.
    let copy = |from: &std::path::Path, to: &str| {
        let dest = sb.path().join(to);
        std::fs::create_dir_all(&dest).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dest.join(path.file_name().unwrap())).unwrap();
            }
        }
        dest
    };
    let js = copy(&js_step("append"), "js-copy");
    let py = copy(&repo().join("tests/components-py/append"), "py-copy");
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace(&toml_path(&js_step("append")), &toml_path(&js))
        .replace(
            &toml_path(&repo().join("tests/components-py/append")),
            &toml_path(&py),
        );
    std::fs::write(&spec, text).unwrap();
    let run = sb.sluice_env(
        &["run", spec.to_str().unwrap(), "--json"],
        &[
            ("SLUICE_JS_TOOLS", empty),
            ("SLUICE_NPM", "/nonexistent/npm"),
            ("SLUICE_PYTHON_TOOLS", empty),
            ("SLUICE_PYTHON", "/nonexistent/python3"),
        ],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let json = run.json();
    let message = |name: &str| {
        step(&json, name)["error"]["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let js_err = message("js");
    assert!(
        js_err.starts_with(&format!("cannot build JavaScript step {}: cannot run /nonexistent/npm ci (JavaScript steps need Node.js 20+ and npm to install componentize-js 0.23.0): ", js.display())),
        "{js_err}"
    );
    let py_err = message("py");
    assert!(
        py_err.starts_with(&format!("cannot build Python step {}: cannot run /nonexistent/python3 -m venv (Python steps need Python 3 with venv to install componentize-py): ", py.display())),
        "{py_err}"
    );
    assert_eq!(step(&json, "rust")["status"], "succeeded", "{json:#}");
    assert!(!js.join("target").exists() && !py.join("target").exists());
}
