//! Python steps: a directory with `pyproject.toml` built by the engine
//! with componentize-py (pinned; `SLUICE_COMPONENTIZE_PY` or the engine's
//! own venv), run in the same sandbox as Rust steps, cached and replayed
//! by the digest of its memoized build.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

use crate::harness::{Run, Sandbox, component, repo, step, toml_path};

/// The Python step directory `tests/components-py/NAME`, built and
/// compiled once per test process before any test runs it. Tests run in
/// parallel: the engine serialises builds of one source state (a second
/// process waits for the first one's memo), but each process would still
/// compile the 18 MB component itself. One warm-up run per step, other
/// tests waiting for it, leaves one compile-cache entry for all.
fn python_step(name: &str) -> PathBuf {
    static WARM: Mutex<BTreeMap<String, Arc<OnceLock<()>>>> = Mutex::new(BTreeMap::new());
    let dir = repo().join("tests/components-py").join(name);
    let once = WARM
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .clone();
    once.get_or_init(|| {
        // No inputs, params or grant: the step fails at once, but only
        // after the engine built and compiled it.
        let sb = Sandbox::new();
        let spec = sb.write(
            "warm.toml",
            &format!(
                "name = \"warm\"\n[steps.warm]\ncomponent = {}\n",
                toml_path(&dir)
            ),
        );
        let (run, json) = sb.run_json(&spec, &[]);
        let warm = step(&json, "warm");
        assert!(
            warm["component"]
                .as_str()
                .is_some_and(|c| c.starts_with("sha256:")),
            "warming up {name}: {json:#}\n{}",
            run.stderr
        );
    });
    dir
}

/// NVML loaded from here fails like a machine without a driver (as in
/// `gpu.rs`), so gpu telemetry is unavailable on every machine.
const NO_NVML: (&str, &str) = ("SLUICE_NVML_LIB", "/nonexistent/libnvidia-ml.so.1");

/// `sluice ARGS --home HOME` without NVML.
fn sluice_no_nvml(sb: &Sandbox, args: &[&str]) -> Run {
    let home = sb.home();
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--home", home.to_str().unwrap()]);
    sb.sluice_env(&full, &[NO_NVML])
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
    assert_eq!(py["built_from"]["language"], "python", "{py:#}");
    assert_eq!(py["built_from"]["toolchain"], "componentize-py 0.25.1");
    assert_eq!(step(&again, "py")["built_from"], py["built_from"]);
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
    crate::harness::assert_spin_and_hoard_limited(&json);
}

/// The gpu jobs of a step's report.
fn jobs(step: &Value) -> &Vec<Value> {
    step["gpu"]["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no gpu jobs in {step:#}"))
}

/// The penguins data through the example `ingest` and `transform` steps,
/// then `train-gpu` (Rust) and `tests/components-py/gpu-job` (the same
/// step in Python, through the SDK's `ctx.gpu`), both training on the
/// engine's CPU worker (`sluice worker cpu`, the built-in `cpu` kind).
fn gpu_pipeline(extra_steps: &str) -> String {
    format!(
        r#"name = "py-gpu"
[params]
epochs = "20"
[sources]
raw = {raw}
[steps.ingest]
component = {ingest}
inputs = {{ csv = "sources.raw" }}
params = {{ label = "species", eval_fraction = "0.2" }}
outputs = ["train", "eval"]
[steps.transform]
component = {transform}
inputs = {{ train = "ingest.train", eval = "ingest.eval" }}
outputs = ["train", "eval", "transform"]
{extra_steps}"#,
        raw = toml_path(&repo().join("examples/data/penguins.csv")),
        ingest = toml_path(&repo().join("examples/steps/ingest")),
        transform = toml_path(&repo().join("examples/steps/transform")),
    )
}

/// A Python step submits a `train-mlp` job through `ctx.gpu.submit`
/// (params as a dict, its input as `ctx.artifact("train")`), waits for it,
/// records the worker's metrics from `JobResult.metrics` and publishes the
/// job's `model` with `ctx.publish`. Its job spec is the Rust step's (same
/// spec digest: params serialised with sorted keys, the same types), so
/// the deterministic CPU worker produces the very same model blob. The run
/// replays from the record without starting a worker, and without a gpu
/// grant the submission is a `StepError` of kind `denied`.
#[test]
fn a_python_step_submits_a_gpu_job_and_publishes_the_model_the_rust_step_gets() {
    let sb = Sandbox::new();
    let grant = r#"gpu = { worker = "cpu", max_jobs = 1 }"#;
    let spec = sb.write(
        "gpu.toml",
        &gpu_pipeline(&format!(
            r#"[steps.rust]
component = {rust}
inputs = {{ train = "transform.train" }}
params = {{ epochs = "${{params.epochs}}" }}
outputs = ["model"]
{grant}
[steps.py]
component = {py}
inputs = {{ train = "transform.train" }}
params = {{ epochs = "${{params.epochs}}" }}
outputs = ["model"]
{grant}
# After the Rust step, so job ids (numbered per run) are deterministic.
after = ["rust"]
"#,
            rust = toml_path(&repo().join("examples/steps/train-gpu")),
            py = toml_path(&python_step("gpu-job")),
        )),
    );
    let run = sluice_no_nvml(&sb, &["run", spec.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let json = run.json();
    let rust = step(&json, "rust");
    let py = step(&json, "py");
    assert_eq!(py["status"], "succeeded", "{py:#}");
    assert_eq!(rust["status"], "succeeded", "{rust:#}");

    // The same job spec, so the same model bytes from the CPU worker.
    let (rust_job, py_job) = (&jobs(rust)[0], &jobs(py)[0]);
    assert_eq!(jobs(py).len(), 1, "{py:#}");
    assert_eq!(
        (&rust_job["id"], &py_job["id"]),
        (&json!("j1"), &json!("j2"))
    );
    assert_eq!(py_job["state"], "succeeded", "{py_job:#}");
    let train = step(&json, "transform")["outputs"]["train"]["digest"].clone();
    assert_eq!(
        py_job["spec"],
        json!({
            "worker": "cpu",
            "op": "train-mlp",
            "params": { "batch_size": 32, "epochs": 20, "hidden_layers": 2, "learning_rate": 0.01, "width": 32 },
            "inputs": [["train", train]],
            "gpus": 0,
            "min_free_memory_mib": 0,
            "timeout_ms": 600000,
            "seed": 42,
            "deterministic": true,
        })
    );
    assert_eq!(py_job["spec_digest"], rust_job["spec_digest"]);
    let model = &py["outputs"]["model"];
    assert!(
        model["digest"].as_str().unwrap().starts_with("sha256:"),
        "{model:#}"
    );
    assert_eq!(model, &rust["outputs"]["model"]);
    assert_eq!(model["media_type"], "application/json");
    // Published, not copied: the job's own blob, and no input bytes read.
    assert_eq!(&py_job["outputs"]["model"], model);
    assert_eq!(py["bytes_in"], 0, "{py:#}");

    // The worker's metrics reached the step through `JobResult.metrics`.
    let worker_metrics = &py_job["metrics"];
    for name in ["final_loss", "train_accuracy", "model_flops", "params"] {
        let reported = worker_metrics[name].as_f64();
        assert!(reported.is_some(), "{name}: {py_job:#}");
        assert_eq!(py["metrics"][name].as_f64(), reported, "{name}");
        assert_eq!(py["metrics"][name], rust["metrics"][name], "{name}");
    }
    assert!(
        py["metrics"]["train_accuracy"].as_f64().unwrap() > 0.9,
        "{py:#}"
    );
    assert_eq!(
        py["metrics"]["job_wall_ms"],
        py_job["wall_ms"].as_f64().unwrap()
    );
    let losses: Vec<&Value> = py["series"]["loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| &point[1])
        .collect();
    assert_eq!(losses.len(), 20, "{py:#}");
    assert_eq!(py["series"]["loss"], rust["series"]["loss"]);
    assert_eq!(
        losses,
        worker_metrics["loss"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>()
    );
    let digest = model["digest"].as_str().unwrap();
    assert_eq!(
        py["tags"],
        json!({
            "devices": "0",
            "job": "j2",
            "state": "succeeded",
            "worker": "cpu",
            "published": format!("model {digest}"),
        })
    );

    // Replay answers the job from the record: identical, no worker.
    let id = json["run_id"].as_str().unwrap();
    let replay = sluice_no_nvml(&sb, &["replay", id, "--json"]);
    assert_eq!(replay.code, 0, "{}\n{}", replay.stdout, replay.stderr);
    let report = replay.json();
    assert_eq!(report["verdict"], "identical", "{report:#}");
    assert_eq!(report["gpu_mode"], "recorded");
    assert_eq!(report["workers_started"], 0);
    let replayed = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "py")
        .unwrap();
    assert_eq!(replayed["verdict"], "identical", "{replayed:#}");
    assert_eq!(replayed["gpu"][0]["from_record"], true, "{replayed:#}");
    assert_eq!(replayed["gpu"][0]["spec_digest"], py_job["spec_digest"]);

    // Without a grant the host refuses; the SDK names the WIT error case.
    let denied = sb.write(
        "denied.toml",
        &gpu_pipeline(&format!(
            "[steps.py]\ncomponent = {}\ninputs = {{ train = \"transform.train\" }}\noutputs = [\"model\"]\n",
            toml_path(&python_step("gpu-job")),
        )),
    );
    let run = sluice_no_nvml(&sb, &["run", denied.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let json = run.json();
    let py = step(&json, "py");
    assert_eq!(py["error"]["class"], "step", "{py:#}");
    assert_eq!(
        py["error"]["message"],
        "StepError: denied: step `py` has no gpu grant; add `gpu = { worker = \"cpu\" }` to [steps.py] to submit `train-mlp` jobs",
        "{py:#}"
    );
    assert!(py.get("gpu").is_none(), "{py:#}");
}

/// A Python step that reads the clocks (`time.time`, `time.monotonic`,
/// `time.sleep`), `random` (`random`, `shuffle`, `getrandbits`),
/// `os.urandom`, `uuid4`, `hash()` of str and bytes and the iteration
/// order of a set of strings (mode `determinism` of the append step, so
/// no extra build) replays identically, and a fresh home (a new run, not
/// a cache hit) computes the very same output: the values are derived,
/// not recorded.
///
/// Where they come from, checked here by changing the run's `seed`:
/// - clocks: the engine's virtual clocks (wall from 2020-01-01T00:00:00Z,
///   1 µs per read, sleeps advance them without waiting): seed-independent.
/// - `random`, `os.urandom`, `uuid4`: componentize-py calls `random.seed()`
///   at the first export call, which reads `os.urandom`, i.e. WASI
///   `get-random-bytes`, which the engine seeds from (run seed, step
///   name): a new seed changes them all.
/// - `hash()` of str/bytes, and so set order: *not* from the run seed.
///   CPython keys SipHash once, in `Py_Initialize`, from `getentropy`
///   (no `PYTHONHASHSEED` reaches it), and componentize-py runs
///   `Py_Initialize` while pre-initialising the component at build time,
///   under a WASI context with the build machine's real randomness. The
///   key is baked into the component's memory snapshot: the same for
///   every run, seed and home of one build (here both homes use the
///   step's memoized build), but a rebuild of identical sources (a fresh
///   checkout, without `target/sluice-python`) is another component with
///   another `hash("sluice")` and set order (checked by hand).
#[test]
fn a_python_steps_clocks_random_and_hash_are_seeded_replayed_and_the_same_in_a_fresh_home() {
    let spec_text = |seed: &str| {
        format!(
            "name = \"py-det\"\n{seed}\n[steps.det]\ncomponent = {}\nparams = {{ mode = \"determinism\" }}\noutputs = [\"out\"]\n",
            toml_path(&python_step("append")),
        )
    };
    let first = Sandbox::new();
    let spec = first.write("det.toml", &spec_text(""));
    let (run, json) = first.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{json:#}\n{}", run.stderr);
    let det = step(&json, "det").clone();
    assert_eq!(det["status"], "succeeded", "{det:#}");
    let tags = &det["tags"];
    // The virtual clocks: the first reads, then 2.5 s of virtual sleep
    // (CPython's `sleep` reads the monotonic clock once for its deadline,
    // so the later reads are 1 µs apart from the whole 2.5 s).
    assert_eq!(tags["time"], "1577836800.0", "{tags:#}");
    assert_eq!(tags["monotonic"], "0.0", "{tags:#}");
    assert_eq!(tags["time_after_sleep"], "1577836802.5", "{tags:#}");
    assert_eq!(tags["monotonic_after_sleep"], "2.500001", "{tags:#}");
    // str and bytes hash alike (SipHash of the same bytes, one key); a
    // dict filled from the set iterates in the set's (hash) order.
    assert_eq!(tags["hash_str"], tags["hash_bytes"]);
    assert_eq!(tags["set_order"], tags["dict_of_set_order"]);
    let mut shuffled: Vec<u32> = tags["shuffle"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_ne!(shuffled, (0..16).collect::<Vec<_>>());
    shuffled.sort();
    assert_eq!(shuffled, (0..16).collect::<Vec<_>>());
    // The output holds every value the tags do, in the step's order.
    let digest = det["outputs"]["out"]["digest"].as_str().unwrap();
    let text = first.sluice(&["artifact", "cat", digest]).stdout;
    let keys = [
        "time",
        "time_after_sleep",
        "monotonic",
        "monotonic_after_sleep",
        "random",
        "shuffle",
        "getrandbits",
        "urandom",
        "uuid4",
        "hash_str",
        "hash_bytes",
        "set_order",
        "dict_of_set_order",
    ];
    let expected: String = keys
        .iter()
        .map(|k| format!("{k}={}\n", tags[*k].as_str().unwrap()))
        .collect();
    assert_eq!(text, expected);
    assert_eq!(tags.as_object().unwrap().len(), keys.len(), "{tags:#}");

    let id = json["run_id"].as_str().unwrap();
    let replay = first.sluice(&["replay", id]);
    assert_eq!(replay.code, 0, "{}\n{}", replay.stdout, replay.stderr);
    assert!(replay.stdout.contains(": identical ("), "{}", replay.stdout);

    // A fresh home: executed again (no cache there), the same bytes.
    let second = Sandbox::new();
    let spec = second.write("det.toml", &spec_text(""));
    let (run, again) = second.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{again:#}\n{}", run.stderr);
    let det2 = step(&again, "det");
    assert_eq!(
        (&det2["status"], &det2["cached"]),
        (&json!("succeeded"), &json!(false)),
        "{det2:#}"
    );
    assert_ne!(again["run_id"], json["run_id"]);
    assert_eq!(det2["component"], det["component"]);
    assert_eq!(det2["outputs"]["out"], det["outputs"]["out"]);
    assert_eq!(det2["tags"], det["tags"]);

    // Another run seed: random and urandom change; clocks and hash do not.
    let seeded = second.write("seeded.toml", &spec_text("seed = 7"));
    let (run, other) = second.run_json(&seeded, &[]);
    assert_eq!(run.code, 0, "{other:#}\n{}", run.stderr);
    assert_eq!(other["seed"], 7, "{other:#}");
    let det7 = step(&other, "det");
    assert_eq!(det7["cached"], false, "{det7:#}");
    for key in ["random", "shuffle", "getrandbits", "urandom", "uuid4"] {
        assert_ne!(det7["tags"][key], tags[key], "{key} follows the seed");
    }
    for key in [
        "time",
        "time_after_sleep",
        "monotonic",
        "monotonic_after_sleep",
        "hash_str",
        "hash_bytes",
        "set_order",
        "dict_of_set_order",
    ] {
        assert_eq!(
            det7["tags"][key], tags[key],
            "{key} does not follow the seed"
        );
    }
}

/// A Python step's module-level code runs when the component is built —
/// inside componentize-py's WebAssembly pre-initialiser, not on the host:
/// it sees no host file (`/etc/passwd`, `/`, the home directory) and no
/// host environment variable, only the three the tool sets. A step cannot
/// bake the building machine's files or secrets into its component.
#[test]
fn a_python_steps_build_time_code_sees_nothing_of_the_host() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "probe.toml",
        &format!(
            "name = \"probe\"\n[steps.probe]\ncomponent = {}\nparams = {{ mode = \"build-probe\" }}\noutputs = [\"out\"]\n",
            toml_path(&python_step("append")),
        ),
    );
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{json:#}\n{}", run.stderr);
    let tags = &step(&json, "probe")["tags"];
    assert_eq!(
        *tags,
        json!({
            "passwd": "refused: FileNotFoundError",
            "root": "refused: FileNotFoundError",
            "home": "refused: FileNotFoundError",
            "environ": "PYTHONHOME PYTHONPATH PYTHONUNBUFFERED",
        }),
        "{tags:#}"
    );
}

/// A module whose top level never returns hangs its build (componentize-py
/// runs it to snapshot the interpreter): the build is stopped at the
/// build timeout and the step fails naming why; the other steps run.
#[test]
fn a_python_step_whose_build_never_ends_is_stopped_at_the_build_timeout() {
    let sb = Sandbox::new();
    sb.write(
        "forever/pyproject.toml",
        "[tool.sluice]\nmodule = \"forever\"\n",
    );
    sb.write(
        "forever/forever.py",
        "from sluice_step import Ctx, step\n\nwhile True:\n    pass\n\n\n@step\ndef run(ctx: Ctx) -> None:\n    pass\n",
    );
    sb.write("in.txt", "payload\n");
    let spec = sb.write(
        "forever.toml",
        &format!(
            "name = \"forever\"\n[sources]\nt = \"in.txt\"\n\
             [steps.forever]\ncomponent = \"forever\"\n\
             [steps.rust]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n",
            toml_path(&component("append")),
        ),
    );
    let run = sb.sluice_env(
        &["run", spec.to_str().unwrap(), "--json"],
        &[("SLUICE_BUILD_TIMEOUT_S", "20")],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let json = run.json();
    let forever = step(&json, "forever");
    assert_eq!(forever["error"]["class"], "step", "{forever:#}");
    assert_eq!(
        forever["error"]["message"],
        format!(
            "cannot build Python step {}: componentize-py did not finish within 20 s and was stopped (a module's top level runs at build time: does it loop or wait?)",
            sb.path().join("forever").display()
        ),
        "{forever:#}"
    );
    assert_eq!(step(&json, "rust")["status"], "succeeded", "{json:#}");
}
