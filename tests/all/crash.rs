//! `kill -9` in the middle of a run (HOSTILE.md group 14): nothing
//! acknowledged is lost, no half-written blob is visible, the record's chain
//! holds up to the crash, and the next run resumes from the cache.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Sandbox, component, step, toml_path};

#[test]
fn kill_9_mid_run_loses_nothing_acknowledged_and_the_rerun_resumes() {
    let sb = Sandbox::new();
    sb.write("in.txt", "x\n");
    let spec = sb.write(
        "crash.toml",
        &format!(
            "name = \"crash\"\n[params]\nmode = \"spin\"\n[sources]\nt = \"in.txt\"\n\
             [steps.first]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"done\" }}\noutputs = [\"out\"]\n\
             [steps.second]\ncomponent = {}\ninputs = {{ in = \"first.out\" }}\nparams = {{ mode = \"${{params.mode}}\" }}\noutputs = [\"out\"]\nlimits = {{ timeout_s = 120, fuel = 20000000000 }}\n",
            toml_path(&component("append")),
            toml_path(&component("hostile"))
        ),
    );
    let home = sb.home();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "run",
            spec.to_str().unwrap(),
            "--json",
            "--home",
            home.to_str().unwrap(),
        ])
        .env(
            "SLUICE_COMPILE_CACHE",
            crate::harness::repo().join("target/sluice-test-compile-cache"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) until `second` has started: `first` is then finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let found = std::fs::read_dir(home.join("runs"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path().join("record.jsonl"));
        // `second` started, and `first`'s output is published in the store.
        if let Some(r) = found
            && let Ok(text) = std::fs::read_to_string(&r)
            && text.contains("\"step\":\"second\"")
            && published_output_of_first(&home, &text)
        {
            break r;
        }
        assert!(Instant::now() < deadline, "the run never reached `second`");
        std::thread::yield_now();
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "", "a killed run printed a result");
    let run_id = record
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    // The crashed run is listed as unfinished, never as succeeded.
    let show = sb.sluice(&["show", &run_id]);
    assert_eq!(show.code, 2);
    assert!(
        show.stderr.contains(&format!(
            "run `{run_id}` has no summary: it is still running or was interrupted"
        )),
        "{}",
        show.stderr
    );
    let runs = sb.sluice(&["runs", "--json"]).json();
    assert_eq!(runs[0]["status"], "unfinished");
    assert_eq!(runs[0]["hint"], format!("sluice resume {run_id}"));
    // Its record chain holds up to the crash; it was never sealed.
    let verify = sb.sluice(&["verify", &run_id, "--json"]).json();
    assert_eq!(verify["reason"], "unsealed", "{verify:#}");
    assert_eq!(verify["line"], serde_json::Value::Null);

    // A torn write at the crash: half a line at the end of the record.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&record)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":99,\"prev\":\"sha2").unwrap();
    drop(f);
    let torn = sb.sluice(&["verify", &run_id, "--json"]).json();
    assert_eq!(torn["reason"], "truncated", "{torn:#}");

    // Resume: the torn line is truncated and reported, `first` comes from
    // the cache, `second` runs again (and hits its fuel limit), the run is
    // sealed and verifies.
    let resumed = sb.sluice(&["resume", &run_id, "--json"]);
    assert_eq!(resumed.code, 1, "{}", resumed.stderr);
    let json = resumed.json();
    assert_eq!(json["run_id"], run_id.as_str());
    assert_eq!(step(&json, "first")["status"], "cached");
    assert_eq!(step(&json, "second")["status"], "failed");
    assert!(
        step(&json, "second")["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("limit: fuel:")
    );
    let text = std::fs::read_to_string(&record).unwrap();
    let resumed_event = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["type"] == "run-resumed")
        .expect("a run-resumed event");
    assert_eq!(resumed_event["torn_bytes_dropped"], 22);
    let verify = sb.sluice(&["verify", &run_id]);
    assert_eq!(verify.code, 0, "{}", verify.stdout);
    let again = sb.sluice(&["resume", &run_id]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("already finished"),
        "{}",
        again.stderr
    );

    // A new run (now without the spin): `first` comes from the cache.
    let (run, json) = sb.run_json(&spec, &["--param", "mode=read"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(step(&json, "first")["status"], "cached");
    assert_eq!(step(&json, "second")["status"], "succeeded");
    // No half-written blob survives: the killed store's temp files and
    // owner file were swept, and the rerun left nothing behind.
    let leftovers: Vec<_> = std::fs::read_dir(home.join("store/tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Whether the blob `first` produced (per its step-finished event) is in
/// place under its digest.
fn published_output_of_first(home: &std::path::Path, record: &str) -> bool {
    record
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["type"] == "step-finished" && e["step"] == "first")
        .and_then(|e| e["outputs"]["out"]["digest"].as_str().map(str::to_string))
        .is_some_and(|d| {
            let hex = d.trim_start_matches("sha256:");
            home.join("store/sha256")
                .join(&hex[..2])
                .join(&hex[2..])
                .is_file()
        })
}
