//! Expansion bombs (HOSTILE.md class 21): a small spec whose `[sweep]`
//! would expand to millions of steps is refused with a positioned error,
//! quickly and in bounded memory, by `validate` and by `POST /v1/runs`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::Sandbox;
use crate::http::Server;

/// Steps that read the swept param: with 1024 combinations, 10 M copies.
const BOMB_STEPS: usize = 9_800;

/// A ~0.9 MB spec: `p` swept over 1024 values, read by every step.
fn bomb(sb: &Sandbox) -> String {
    sb.write("c.wasm", "\0asm");
    let values: Vec<String> = (0..1024).map(|i| i.to_string()).collect();
    let mut spec = format!(
        "name = \"bomb\"\n[params]\np = \"0\"\n[sweep]\np = [{}]\n",
        values.join(", ")
    );
    for i in 0..BOMB_STEPS {
        spec.push_str(&format!(
            "[steps.s{i}]\ncomponent = \"c.wasm\"\nparams = {{ v = \"${{params.p}}\" }}\n"
        ));
    }
    spec
}

const REFUSAL: &str = "5:1: the [sweep]'s 1024 combinations fan out 9800 steps into 10035200 steps; the limit is 10000";

#[test]
fn a_sweep_bomb_is_refused_by_validate_quickly_and_in_bounded_memory() {
    let sb = Sandbox::new();
    let path = sb.write("bomb.toml", &bomb(&sb));
    let started = Instant::now();
    // 1 GiB of address space: the unbounded expansion needed gigabytes.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" validate \"$1\"")
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .arg(&path)
        .current_dir(sb.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("bomb.toml:{REFUSAL}")), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_sweep_bomb_is_refused_over_http_with_422() {
    let sb = Sandbox::new();
    let server = Server::start(&sb.home(), None, sb.path());
    let r = server.post_json("/v1/runs", None, &json!({"spec": bomb(&sb)}));
    assert_eq!(r.error(422, "invalid"), format!("inline.toml:{REFUSAL}"));
    // The server is still there and started nothing.
    assert_eq!(server.get("/v1/runs", None).json()["runs"], json!([]));
}

#[test]
fn a_sweep_of_too_many_combinations_names_its_axes() {
    let sb = Sandbox::new();
    sb.write("c.wasm", "\0asm");
    let values: Vec<String> = (0..1024).map(|i| i.to_string()).collect();
    let spec = sb.write(
        "grid.toml",
        &format!(
            "name = \"grid\"\n[params]\np = \"0\"\nq = \"0\"\n[sweep]\np = [{0}]\nq = [{0}]\n\
             [steps.s]\ncomponent = \"c.wasm\"\nparams = {{ v = \"${{params.p}}${{params.q}}\" }}\n",
            values.join(", ")
        ),
    );
    let run = sb.sluice_raw(&["validate", spec.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "grid.toml:6:1: the [sweep] `p` (1024 values) x `q` (1024 values) has 1048576 combinations; the limit is 1024"
        ),
        "{}",
        run.stderr
    );
}
