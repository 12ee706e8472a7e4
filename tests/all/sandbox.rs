//! Hostile components (HOSTILE.md groups 1–7): each attack ends as a named
//! failure of that step only; siblings and other runs are unaffected.

use std::path::Path;

use serde_json::Value;

use crate::harness::{Sandbox, component, step, toml_path};

/// A pipeline with the hostile step in `mode` under `limits`, a dependant
/// that must be skipped, and an independent sibling that must succeed.
fn hostile_run(sb: &Sandbox, component_path: &Path, mode: &str, limits: &str) -> (i32, Value) {
    sb.write("in.txt", "input bytes\n");
    let append = toml_path(&component("append"));
    let spec = sb.write(
        &format!("{mode}.toml"),
        &format!(
            "name = \"hostile\"\n[sources]\ntext = \"in.txt\"\n\
             [steps.evil]\ncomponent = {}\ninputs = {{ in = \"sources.text\" }}\nparams = {{ mode = \"{mode}\" }}\noutputs = [\"out\"]\nlimits = {{ {limits} }}\n\
             [steps.downstream]\ncomponent = {append}\ninputs = {{ in = \"evil.out\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n\
             [steps.sibling]\ncomponent = {append}\ninputs = {{ in = \"sources.text\" }}\nparams = {{ line = \"fine\" }}\noutputs = [\"out\"]\n",
            toml_path(component_path)
        ),
    );
    let (run, json) = sb.run_json(&spec, &["--jobs", "2"]);
    (run.code, json)
}

fn assert_failed(json: &Value, class: &str, fragment: &str) {
    assert_eq!(json["status"], "failed", "{json:#}");
    let evil = step(json, "evil");
    assert_eq!(evil["status"], "failed", "{evil:#}");
    assert_eq!(evil["error"]["class"], class, "{evil:#}");
    let message = evil["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(fragment),
        "message {message:?} lacks {fragment:?}"
    );
    assert_eq!(step(json, "downstream")["status"], "skipped");
    let sibling = &step(json, "sibling")["status"];
    assert!(
        sibling == "succeeded" || sibling == "cached",
        "sibling affected: {json:#}"
    );
}

fn hostile(mode: &str, limits: &str) -> Value {
    let sb = Sandbox::new();
    let (code, json) = hostile_run(&sb, &component("hostile"), mode, limits);
    assert_eq!(code, 1);
    json
}

#[test]
fn memory_growth_past_the_limit_is_a_memory_limit_failure() {
    let json = hostile("memory", "memory_mib = 32");
    assert_failed(&json, "limit", "limit: memory:");
    let peak = step(&json, "evil")["memory_peak_bytes"].as_u64().unwrap();
    assert!(peak <= 32 << 20 && peak > 16 << 20, "peak {peak}");
}

#[test]
fn tight_loop_is_stopped_by_fuel() {
    let json = hostile("spin", "fuel = 50000000");
    assert_failed(
        &json,
        "limit",
        "limit: fuel: step `evil` used all 50000000 units of fuel",
    );
    assert_eq!(step(&json, "evil")["fuel_used"], 50_000_000);
}

#[test]
fn loop_through_host_calls_is_stopped_by_fuel() {
    let json = hostile("spin-host", "fuel = 20000000");
    assert_failed(&json, "limit", "limit: fuel:");
}

/// Runs hostile `mode` with ample fuel and a 1 s timeout: the timeout, not
/// fuel, must stop it, and soon after the second.
fn assert_stopped_by_the_timeout(mode: &str) {
    let json = hostile(mode, "timeout_s = 1, fuel = 10000000000000");
    assert_failed(
        &json,
        "limit",
        "limit: time: step `evil` ran past its 1 s timeout",
    );
    let wall = step(&json, "evil")["wall_ms"].as_u64().unwrap();
    assert!(
        (1000..10_000).contains(&wall),
        "{mode}: stopped after {wall} ms"
    );
}

#[test]
fn tight_loop_with_ample_fuel_hits_the_wall_clock_timeout() {
    assert_stopped_by_the_timeout("spin");
}

#[test]
fn loop_through_host_calls_with_ample_fuel_hits_the_wall_clock_timeout() {
    // No epoch checks in guest code: the deadline is looked at between fuel
    // slices and at every guest/host transition, so a guest living in host
    // calls is stopped as surely as one that computes.
    assert_stopped_by_the_timeout("spin-host");
}

#[test]
fn loop_of_bulk_memory_copies_hits_the_wall_clock_timeout() {
    // A 16 MiB `memory.copy` is one instruction: it must cost fuel by the
    // byte (wasmtime charges 1 a byte, in chunks), or the fuel slices
    // between deadline checks would stretch to hours of copying.
    assert_stopped_by_the_timeout("bulk-copy");
}

#[test]
fn deep_recursion_traps_on_the_stack_limit() {
    let json = hostile("recurse", "");
    assert_failed(&json, "limit", "limit: stack:");
}

#[test]
fn output_flood_is_an_output_limit_failure_and_leaves_no_partial_blob() {
    let sb = Sandbox::new();
    let (code, json) = hostile_run(&sb, &component("hostile"), "output-flood", "output_mib = 2");
    assert_eq!(code, 1);
    assert_failed(
        &json,
        "limit",
        "limit: output: step `evil` wrote more than 2097152 output bytes (output `out`)",
    );
    let tmp = sb.home().join("store/tmp");
    assert_eq!(
        std::fs::read_dir(tmp).unwrap().count(),
        0,
        "half-written blob left behind"
    );
}

#[test]
fn stdout_flood_is_capped_as_an_output_limit_and_logs_are_escaped() {
    let sb = Sandbox::new();
    let (code, json) = hostile_run(&sb, &component("hostile"), "stdout-flood", "log_kib = 64");
    assert_eq!(code, 1);
    assert_failed(
        &json,
        "limit",
        "limit: output: step `evil` wrote more than 65536 bytes to stdout or stderr",
    );
    let run_id = json["run_id"].as_str().unwrap();
    let logs = sb.sluice(&["logs", run_id, "evil"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(logs.stdout.len() <= 2 * 65536 && !logs.stdout.is_empty());
    assert!(
        !logs.stdout.contains('\u{1b}'),
        "raw ANSI escape reached the terminal"
    );
    assert!(logs.stdout.contains("\\u{1b}[31mflood"));
}

#[test]
fn escape_attempts_through_paths_and_artifact_names_are_all_refused() {
    let sb = Sandbox::new();
    let (code, json) = hostile_run(&sb, &component("hostile"), "escape", "");
    assert_eq!(code, 0, "{json:#}");
    let digest = step(&json, "evil")["outputs"]["out"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let report = sb.sluice(&["artifact", "cat", &digest]).stdout;
    for path in [
        "/etc/passwd",
        "../../../etc/passwd",
        ".",
        "/",
        "//etc//passwd",
    ] {
        assert!(
            report.contains(&format!("fs {path}: denied\n")),
            "{path} not denied:\n{report}"
        );
    }
    assert!(
        !report.contains("OPENED") && !report.contains("CREATED") && !report.contains("READ"),
        "{report}"
    );
    assert!(
        report.contains(
            "input \"../in\": refused: step `evil` has no input named \"../in\"; its inputs: in"
        ),
        "{report}"
    );
    assert!(report.contains("input \"in\\0\": refused"), "{report}");
    assert!(report.contains("output \"../out\": refused: step `evil` declares no output named \"../out\"; its outputs: out"), "{report}");
    assert!(report.contains("env vars: 0\n"), "{report}");
    // The input is intact.
    assert_eq!(
        std::fs::read_to_string(sb.path().join("in.txt")).unwrap(),
        "input bytes\n"
    );
}

#[test]
fn creating_an_output_twice_is_refused_with_a_named_error() {
    let json = hostile("finish-twice", "");
    assert_failed(
        &json,
        "step",
        "second create refused: output `out` of step `evil` was already created",
    );
}

#[test]
fn core_module_is_rejected_as_an_invalid_component() {
    let sb = Sandbox::new();
    let module = sb.path().join("core.wasm");
    std::fs::write(
        &module,
        wat::parse_str("(module (func (export \"run\")))").unwrap(),
    )
    .unwrap();
    let (code, json) = hostile_run(&sb, &module, "none", "");
    assert_eq!(code, 1);
    assert_failed(&json, "step", "a core wasm module, not a component");
}

#[test]
fn component_of_another_world_is_rejected() {
    let sb = Sandbox::new();
    let empty = sb.path().join("empty.wasm");
    std::fs::write(&empty, wat::parse_str("(component)").unwrap()).unwrap();
    let (_, json) = hostile_run(&sb, &empty, "none", "");
    assert_failed(&json, "step", "does not export the sluice:step world");

    let foreign = sb.path().join("foreign.wasm");
    std::fs::write(
        &foreign,
        wat::parse_str(
            "(component (import \"evil:net/socket\" (instance (export \"connect\" (func)))))",
        )
        .unwrap(),
    )
    .unwrap();
    let (_, json) = hostile_run(&sb, &foreign, "none", "");
    assert_failed(&json, "step", "does not fit the sluice:step world");

    let garbage = sb.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all").unwrap();
    let (_, json) = hostile_run(&sb, &garbage, "none", "");
    assert_failed(&json, "step", "not a WebAssembly binary");
}

#[test]
fn a_hostile_run_does_not_disturb_a_concurrent_run() {
    let good = Sandbox::new();
    good.write("in.txt", "a\n");
    let spec = good.write(
        "good.toml",
        &format!(
            "name = \"good\"\n[sources]\ntext = \"in.txt\"\n[steps.one]\ncomponent = {}\ninputs = {{ in = \"sources.text\" }}\nparams = {{ line = \"b\" }}\noutputs = [\"out\"]\n",
            toml_path(&component("append"))
        ),
    );
    let evil = std::thread::spawn(|| hostile("memory", "memory_mib = 64"));
    let (run, json) = good.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(step(&json, "one")["status"], "succeeded");
    let evil_json = evil.join().unwrap();
    assert_failed(&evil_json, "limit", "limit: memory:");
}

#[test]
fn clocks_and_random_are_virtual_and_reproducible() {
    let a = hostile_output("nondeterminism");
    let b = hostile_output("nondeterminism");
    assert_eq!(a, b, "two executions differ");
    // The virtual wall clock starts at 2020-01-01T00:00:00Z.
    assert!(a.starts_with("wall=1577836800"), "{a}");
}

fn hostile_output(mode: &str) -> String {
    let sb = Sandbox::new();
    let (code, json) = hostile_run(&sb, &component("hostile"), mode, "");
    assert_eq!(code, 0, "{json:#}");
    let digest = step(&json, "evil")["outputs"]["out"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    sb.sluice(&["artifact", "cat", &digest]).stdout
}

#[test]
fn raw_host_calls_with_hostile_arguments_get_bounded_answers() {
    let sb = Sandbox::new();
    // 3 MiB of input; one read(u64::MAX) must come back capped at 1 MiB.
    sb.write("big.txt", &"z".repeat(3 << 20));
    let spec = sb.write(
        "abuse.toml",
        &format!(
            "name = \"abuse\"\n[sources]\nt = \"big.txt\"\n[steps.evil]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ mode = \"handle-abuse\" }}\noutputs = [\"out\", \"log\"]\n",
            toml_path(&component("hostile"))
        ),
    );
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{json:#}");
    let evil = step(&json, "evil");
    assert_eq!(evil["outputs"]["out"]["size"], 1);
    let log = evil["outputs"]["log"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let report = sb.sluice(&["artifact", "cat", &log]).stdout;
    assert_eq!(
        report,
        "read(u64::MAX) -> 1048576 bytes\n\
         first finish ok: true\n\
         second finish: Err(Error::Invalid(\"output `out` is already finished\"))\n\
         write after finish: Err(Error::Invalid(\"output `out` is already finished\"))\n"
    );
}

#[test]
fn metric_flood_is_an_output_limit_failure() {
    let json = hostile("metric-flood", "");
    assert_failed(
        &json,
        "limit",
        "limit: output: step `evil` reported more than 100000 metric points (last: `flood`)",
    );
}

#[test]
fn non_finite_metrics_become_tags_and_the_run_stays_readable() {
    let sb = Sandbox::new();
    let (code, json) = hostile_run(&sb, &component("hostile"), "nan-metrics", "");
    assert_eq!(code, 0, "{json:#}");
    let evil = step(&json, "evil");
    assert_eq!(evil["metrics"], serde_json::json!({"fine": 1.5}));
    assert_eq!(evil["tags"]["non-finite.loss"], "NaN");
    assert_eq!(evil["tags"]["non-finite.curve"], "inf at step 3");
    let show = sb.sluice(&["show", json["run_id"].as_str().unwrap(), "--json"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
}

/// The `.cwasm` entry and its tag for the component at `wasm` in `cache`.
fn cache_entry(cache: &Path, wasm: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use sha2::Digest as _;
    let hex = hex::encode(sha2::Sha256::digest(std::fs::read(wasm).unwrap()));
    let dir = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("an engine directory in the compile cache");
    (
        dir.join(format!("{hex}.cwasm")),
        dir.join(format!("{hex}.cwasm.tag")),
    )
}

/// `attempt-sandbox` events of a run's record.
fn compiled_by(sb: &Sandbox, json: &Value) -> Vec<String> {
    let run_id = json["run_id"].as_str().unwrap();
    std::fs::read_to_string(sb.home().join("runs").join(run_id).join("record.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "attempt-sandbox")
        .map(|e| e["compiled_by"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_poisoned_compile_cache_entry_is_recompiled_and_the_honest_component_runs() {
    let sb = Sandbox::new();
    let cache = sb.path().join("cc");
    let env = [("SLUICE_COMPILE_CACHE", cache.to_str().unwrap())];
    sb.write("in.txt", "input\n");
    let append = component("append");
    let hostile = component("hostile");
    let spec = |name: &str, wasm: &Path, params: &str| {
        sb.write(
            &format!("{name}.toml"),
            &format!(
                "name = \"{name}\"\n[sources]\nt = \"in.txt\"\n[steps.s]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {params}\noutputs = [\"out\"]\n",
                toml_path(wasm)
            ),
        )
    };
    let honest = spec("honest", &append, "{ line = \"honest\" }");
    let evil = spec("evil", &hostile, "{ mode = \"fail\" }");
    let run = |spec: &Path| {
        let home = sb.home();
        let r = sb.sluice_env(
            &[
                "run",
                spec.to_str().unwrap(),
                "--json",
                "--no-cache",
                "--home",
                home.to_str().unwrap(),
            ],
            &env,
        );
        let json = r.json();
        (r.code, json)
    };
    let (code, first) = run(&honest);
    assert_eq!(code, 0, "{first:#}");
    assert_eq!(compiled_by(&sb, &first), ["compiled"]);
    let (code, json) = run(&evil);
    assert_eq!(code, 1, "{json:#}");
    let (code, again) = run(&honest);
    assert_eq!(code, 0, "{again:#}");
    assert_eq!(compiled_by(&sb, &again), ["cache-hit"]);

    // Someone who can write the cache swaps the honest entry for the evil
    // one, with the evil entry's (valid) tag and an old-style checksum.
    let (honest_cwasm, honest_tag) = cache_entry(&cache, &append);
    let (evil_cwasm, evil_tag) = cache_entry(&cache, &hostile);
    std::fs::copy(&evil_cwasm, &honest_cwasm).unwrap();
    std::fs::copy(&evil_tag, &honest_tag).unwrap();
    let (code, poisoned) = run(&honest);
    assert_eq!(code, 0, "the evil code ran: {poisoned:#}");
    assert_eq!(
        step(&poisoned, "s")["outputs"]["out"]["digest"],
        step(&first, "s")["outputs"]["out"]["digest"]
    );
    let by = compiled_by(&sb, &poisoned);
    assert_eq!(by.len(), 1);
    assert!(
        by[0].starts_with("recompiled: the cached entry ")
            && by[0].ends_with(" fails authentication"),
        "{by:?}"
    );
    // The entry was rewritten honestly: the next run is a hit again.
    let (_, healed) = run(&honest);
    assert_eq!(compiled_by(&sb, &healed), ["cache-hit"]);
}

/// A run of `append` with a compile cache of its own (so it compiles) and
/// the compiler process bounded by `env`.
fn compile_bounded(env: &[(&str, &str)]) -> String {
    let sb = Sandbox::new();
    sb.write("in.txt", "input\n");
    let spec = sb.write(
        "c.toml",
        &format!(
            "name = \"c\"\n[sources]\nt = \"in.txt\"\n[steps.s]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n",
            toml_path(&component("append"))
        ),
    );
    let cache = sb.path().join("cc");
    let home = sb.home();
    let mut all = vec![("SLUICE_COMPILE_CACHE", cache.to_str().unwrap())];
    all.extend_from_slice(env);
    let run = sb.sluice_env(
        &[
            "run",
            spec.to_str().unwrap(),
            "--json",
            "--home",
            home.to_str().unwrap(),
        ],
        &all,
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let json = run.json();
    let s = step(&json, "s");
    assert_eq!(s["error"]["class"], "step", "{s:#}");
    s["error"]["message"].as_str().unwrap().to_string()
}

#[test]
fn compiling_past_the_time_bound_kills_the_compiler_and_fails_the_step() {
    let message = compile_bounded(&[("SLUICE_COMPILE_TIMEOUT_MS", "1")]);
    assert!(
        message
            .contains("does not compile: compiling took longer than 1 ms; the compiler was killed"),
        "{message}"
    );
}

#[test]
fn compiling_past_the_memory_bound_fails_the_step_naming_the_bound() {
    let message = compile_bounded(&[("SLUICE_COMPILE_MEMORY_MIB", "8")]);
    assert!(
        message.contains("does not compile: the compiler process ended with ")
            && message.contains("(its bounds: 8 MiB of data, 120 s of CPU)"),
        "{message}"
    );
}

/// `wasi:sockets` is admitted (Rust's `std::net` on wasip2 and
/// componentize-py's CPython import it) but every use fails at run time:
/// no connection or datagram reaches the test's loopback sockets, nothing
/// binds, no name resolves, and the step goes on to report it.
#[test]
fn a_step_importing_sockets_runs_and_every_network_use_is_refused() {
    let sb = Sandbox::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let datagrams = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let spec = sb.write(
        "net.toml",
        &format!(
            "name = \"net\"\n[steps.evil]\ncomponent = {}\nparams = {{ mode = \"network\", port = \"{port}\" }}\noutputs = [\"out\"]\n",
            toml_path(&component("hostile"))
        ),
    );
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{json:#}");
    let digest = step(&json, "evil")["outputs"]["out"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let report = sb.sluice(&["artifact", "cat", &digest]).stdout;
    assert_eq!(
        report,
        format!(
            "tcp connect 127.0.0.1:{port}: refused (PermissionDenied)\n\
             tcp bind: refused (PermissionDenied)\n\
             udp send: refused (PermissionDenied)\n\
             dns localhost: refused (Uncategorized)\n"
        )
    );
    listener.set_nonblocking(true).unwrap();
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "a connection reached the listener"
    );
    datagrams.set_nonblocking(true).unwrap();
    assert_eq!(
        datagrams.recv(&mut [0u8; 8]).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "a datagram reached the socket"
    );
}
