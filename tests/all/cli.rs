//! CLI surface: scaffolding, show/runs/logs, usage errors.

use crate::harness::{Sandbox, step};

#[test]
fn new_step_scaffold_builds_and_runs_as_is() {
    let sb = Sandbox::new();
    let made = sb.sluice_raw(&["new", "step", "shout"]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let spec = sb.path().join("shout/pipeline.toml");
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = step(&json, "shout");
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["metrics"]["lines"], 2.0);
    let digest = s["outputs"]["shouted"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let cat = sb.sluice(&["artifact", "cat", &digest]);
    assert_eq!(
        cat.stdout,
        "hello from shout\nSLUICE STEPS ARE COMPONENTS\nTHEY RUN ANYWHERE\n"
    );

    let again = sb.sluice_raw(&["new", "step", "shout"]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("shout already exists"),
        "{}",
        again.stderr
    );
    let bad = sb.sluice_raw(&["new", "step", "../Evil"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("invalid step name \"../Evil\""),
        "{}",
        bad.stderr
    );
}

#[test]
fn show_runs_and_table_describe_a_finished_run() {
    let sb = Sandbox::new();
    sb.write("in.txt", "x\n");
    let append = crate::harness::toml_path(&crate::harness::component("append"));
    let spec = sb.write(
        "p.toml",
        &format!("name = \"demo\"\n[sources]\nt = \"in.txt\"\n[steps.a]\ncomponent = {append}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"y\" }}\noutputs = [\"out\"]\n"),
    );
    let run = sb.sluice(&["run", spec.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("STEP             STATUS     CACHED ATTEMPTS   WALL ms       FUEL   MEM PEAK         IN        OUT"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("a                succeeded  no            1"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("✓ a"),
        "no progress line: {}",
        run.stderr
    );
    let id = run.stdout.split_whitespace().nth(1).unwrap().to_string();

    let show = sb.sluice(&["show", &id, "--json"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    let json = show.json();
    assert_eq!(json["run_id"], id.as_str());
    assert_eq!(step(&json, "a")["bytes_in"], 2);
    assert_eq!(step(&json, "a")["bytes_out"], 4);

    let runs = sb.sluice(&["runs", "--json"]);
    let list = runs.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["run_id"], id.as_str());
    assert_eq!(list[0]["pipeline"], "demo");
    assert_eq!(list[0]["status"], "succeeded");

    // A corrupt summary makes that run unreadable, and only that run.
    let other = sb.home().join("runs/20000101-000000-0badf00d");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("summary.json"), b"{ not json").unwrap();
    let runs = sb.sluice(&["runs", "--json"]).json();
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert_eq!(runs[0]["run_id"], id.as_str());
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[1]["status"], "unreadable");
    assert!(
        runs[1]["error"].as_str().unwrap().contains("is corrupt"),
        "{runs:#}"
    );

    let missing = sb.sluice(&["show", "20990101-000000-deadbeef"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("no run `20990101-000000-deadbeef`"),
        "{}",
        missing.stderr
    );
    let evil = sb.sluice(&["show", "../../etc"]);
    assert_eq!(evil.code, 2);
    assert!(evil.stderr.contains("invalid run id"), "{}", evil.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let sb = Sandbox::new();
    let run = sb.sluice_raw(&["run"]);
    assert_eq!(run.code, 2);
    let run = sb.sluice_raw(&["run", "x.toml", "--jobs", "0", "--home", "h"]);
    assert_eq!(run.code, 2);
    let run = sb.sluice_raw(&["run", "nope.toml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("nope.toml:1:1: cannot read spec"),
        "{}",
        run.stderr
    );
}

/// Run directories enough that `sluice runs` writes more than a pipe
/// buffer (64 KiB on Linux) in either format.
const RUNS_OVER_A_PIPE_BUFFER: usize = 2000;

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_status_0() {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let sb = Sandbox::new();
    for i in 0..RUNS_OVER_A_PIPE_BUFFER {
        // No summary: each is listed as an unfinished run.
        std::fs::create_dir_all(sb.home().join(format!("runs/20000101-000000-{i:08x}"))).unwrap();
    }
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .arg("--home")
            .arg(sb.home())
            .current_dir(sb.path())
            .env_remove("SLUICE_HOME")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice")
    };
    // `sluice runs --json | head -c 100`: the reader leaves mid-document.
    let mut child = spawn(&["runs", "--json"]);
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).unwrap();
    assert!(
        first.starts_with(b"[{"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");

    // The reader is gone before the first write (the table).
    let mut child = spawn(&["runs"]);
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
}
