//! Blocking WASI calls (HOSTILE.md group 17): a guest that sleeps or reads
//! stdin never holds a host thread past its deadline, a cancellation or a
//! shutdown. Sleeps advance the attempt's virtual clock instead, so they are
//! instant, recorded and replay bit-identically.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Sandbox, component, repo, step, toml_path};
use crate::http::Server;

/// Longest any test here may take. A regression (a real sleep on the host)
/// would otherwise hang for a day; with the watchdog it fails, naming it.
const WATCHDOG: Duration = Duration::from_secs(300);

/// A one-step pipeline: the hostile step in `mode` with extra params.
fn sleep_spec(sb: &Sandbox, mode: &str, params: &str, limits: &str) -> String {
    sb.write("in.txt", "x\n");
    format!(
        "name = \"sleepy\"\n[sources]\nt = \"in.txt\"\n\
         [steps.sleeper]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ mode = \"{mode}\"{params} }}\noutputs = [\"out\"]\nlimits = {{ {limits} }}\n",
        toml_path(&component("hostile")),
    )
}

/// `sluice ARGS --home HOME --json` in the sandbox, killed (and the test
/// failed) if it outlives [`WATCHDOG`].
fn sluice_json(sb: &Sandbox, args: &[&str]) -> (i32, Value) {
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .args(["--json", "--home"])
        .arg(sb.home())
        .current_dir(sb.path())
        .env_remove("SLUICE_HOME")
        .env_remove("SLUICE_CONFIG")
        .env(
            "SLUICE_COMPILE_CACHE",
            repo().join("target/sluice-test-compile-cache"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let pid = child.id();
    let (done, watchdog) = mpsc::channel::<()>();
    let guard = std::thread::spawn(move || {
        if watchdog.recv_timeout(WATCHDOG).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            return true;
        }
        false
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    let killed = guard.join().unwrap();
    assert!(
        !killed,
        "`sluice {}` was still running after {WATCHDOG:?}: a guest blocked a host thread",
        args.join(" ")
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn output_text(sb: &Sandbox, json: &Value, name: &str) -> String {
    let digest = step(json, name)["outputs"]["out"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no output: {json:#}"))
        .to_string();
    sb.sluice(&["artifact", "cat", &digest]).stdout
}

#[test]
fn a_day_long_sleep_under_a_two_second_timeout_advances_virtual_time_only() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "sleep.toml",
        &sleep_spec(&sb, "sleep", ", seconds = \"86400\"", "timeout_s = 2"),
    );
    let (code, json) = sluice_json(&sb, &["run", spec.to_str().unwrap()]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(step(&json, "sleeper")["status"], "succeeded");
    // Both virtual clocks moved by exactly the day slept; stdin is closed
    // (end of file at once), not a blocking read.
    assert_eq!(
        output_text(&sb, &json, "sleeper"),
        "slept_s=86400 wall_advanced_s=86400 stdin=Ok(0)\n"
    );
    // The record keeps how long the attempt slept in virtual time.
    let run_id = json["run_id"].as_str().unwrap();
    let record =
        std::fs::read_to_string(sb.home().join("runs").join(run_id).join("record.jsonl")).unwrap();
    let sandbox: Value = record
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == "attempt-sandbox")
        .unwrap_or_else(|| panic!("no attempt-sandbox event in\n{record}"));
    assert_eq!(sandbox["slept_ns"], json!(86_400_000_000_000u64));
}

#[test]
fn a_step_that_sleeps_forever_is_stopped_by_its_timeout() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "forever.toml",
        &sleep_spec(&sb, "sleep-forever", "", "timeout_s = 2"),
    );
    let (code, json) = sluice_json(&sb, &["run", spec.to_str().unwrap()]);
    assert_eq!(code, 1, "{json:#}");
    let sleeper = step(&json, "sleeper");
    assert_eq!(sleeper["error"]["class"], "limit", "{sleeper:#}");
    assert_eq!(
        sleeper["error"]["message"],
        "limit: time: step `sleeper` ran past its 2 s timeout"
    );
}

#[test]
fn replay_of_a_sleeping_step_is_identical() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "sleep.toml",
        &sleep_spec(&sb, "sleep", ", seconds = \"3600\"", ""),
    );
    let (code, json) = sluice_json(&sb, &["run", spec.to_str().unwrap()]);
    assert_eq!(code, 0, "{json:#}");
    let run_id = json["run_id"].as_str().unwrap();
    let (code, replay) = sluice_json(&sb, &["replay", run_id]);
    assert_eq!(code, 0, "{replay:#}");
    assert_eq!(replay["verdict"], "identical", "{replay:#}");
}

/// A server whose config allows the temp dir and the built components.
fn server(sb: &Sandbox) -> (Server, std::path::PathBuf) {
    let cfg = sb.write(
        "config.toml",
        &format!(
            "[server]\nroot = \".\"\nallow_paths = [\".\", {}]\n",
            toml_path(&repo().join("target"))
        ),
    );
    (Server::start(&sb.home(), Some(&cfg), sb.path()), cfg)
}

fn submit(server: &Server, spec: &str) -> String {
    crate::server::submit(server, None, spec)
}

#[test]
fn cancel_stops_a_step_sleeping_in_wasi() {
    let sb = Sandbox::new();
    let (server, _) = server(&sb);
    let id = submit(
        &server,
        &sleep_spec(&sb, "sleep-forever", "", "timeout_s = 3600"),
    );
    let mut cancelled = false;
    let mut finals = Vec::new();
    server.each_event(&id, None, |event, data| {
        if event == "step" && data["status"] == "running" && !cancelled {
            let r = server.request("POST", &format!("/v1/runs/{id}/cancel"), None, None);
            assert_eq!(r.status, 202, "{}", r.text());
            cancelled = true;
        }
        if event == "step" && data["status"] != "running" {
            finals.push(data["status"].as_str().unwrap().to_string());
        }
        event != "end"
    });
    assert_eq!(finals, ["cancelled"]);
    let run = server.get(&format!("/v1/runs/{id}"), None).json();
    assert_eq!(run["status"], "cancelled", "{run:#}");
}

#[test]
fn sigterm_stops_a_server_whose_step_sleeps_in_wasi() {
    let sb = Sandbox::new();
    let (mut server, _) = server(&sb);
    let id = submit(
        &server,
        &sleep_spec(&sb, "sleep-forever", "", "timeout_s = 3600"),
    );
    let mut ended = None;
    server.each_event(&id, None, |event, data| {
        if event == "step" && data["status"] == "running" {
            let status = Command::new("kill")
                .args(["-TERM", &server.child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
        if event == "end" {
            ended = Some(data["status"].clone());
        }
        true
    });
    assert_eq!(ended, Some(json!("cancelled")));
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// A worker that says hello, marks `$STATE/running` when a job arrives and
/// then never answers it; a `cancel` line is answered at once.
const HANGING_WORKER: &str = r#"#!/usr/bin/env bash
set -u
echo '{"type":"hello","protocol":1,"worker":"hang","ops":["train-mlp"],"versions":{"hang":"1.0"},"device":{"kind":"cpu","name":"bash","uuid":null}}'
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$2"; }
while IFS= read -r line; do
  case "$line" in
    *'"type":"run"'*) touch "$STATE/running" ;;
    *'"type":"cancel"'*)
      echo "{\"type\":\"result\",\"id\":\"$(field id "$line")\",\"status\":\"cancelled\",\"message\":\"stopped on request\"}" ;;
    *'"type":"shutdown"'*) exit 0 ;;
  esac
done
"#;

#[test]
fn cancel_releases_a_step_blocked_waiting_on_a_gpu_job() {
    let sb = Sandbox::new();
    let script = sb.write("worker.sh", HANGING_WORKER);
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    let state = sb.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let cfg = sb.write(
        "config.toml",
        &format!(
            "[server]\nroot = \".\"\nallow_paths = [\".\", {}]\n\
             [workers.hang]\ncommand = {}\nenv = {{ STATE = {} }}\nhello_timeout_s = 30\n",
            toml_path(&repo().join("target")),
            toml_path(&script),
            toml_path(&state),
        ),
    );
    let server = Server::start(&sb.home(), Some(&cfg), sb.path());
    sb.write("data.txt", "training data\n");
    let spec = format!(
        "name = \"gpu-wait\"\n[sources]\ndata = \"data.txt\"\n\
         [steps.train]\ncomponent = {}\ninputs = {{ train = \"sources.data\" }}\n\
         params = {{ mode = \"submit\", worker = \"hang\" }}\noutputs = [\"out\"]\n\
         gpu = {{ worker = \"hang\" }}\nlimits = {{ timeout_s = 3600 }}\n",
        toml_path(&component("gpu-abuse")),
    );
    let id = submit(&server, &spec);
    // Cancel only once the job is in the worker's hands, so the step is
    // blocked in `job.wait`, not running wasm.
    let running = state.join("running");
    let deadline = std::time::Instant::now() + WATCHDOG;
    while !running.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never got the job"
        );
        std::thread::yield_now();
    }
    let r = server.request("POST", &format!("/v1/runs/{id}/cancel"), None, None);
    assert_eq!(r.status, 202, "{}", r.text());
    let mut ended = None;
    server.each_event(&id, None, |event, data| {
        if event == "end" {
            ended = Some(data["status"].clone());
        }
        event != "end"
    });
    assert_eq!(ended, Some(json!("cancelled")));
    let run = server.get(&format!("/v1/runs/{id}"), None).json();
    assert_eq!(step(&run, "train")["status"], "cancelled", "{run:#}");
}
