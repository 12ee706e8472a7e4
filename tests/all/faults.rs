//! Faults at the write boundaries (HOSTILE.md group 14), injected with
//! `SLUICE_FAULTS` (see `engine/src/fault.rs`): a full disk (ENOSPC), a
//! failing disk (EIO) and a crash (abort, like `kill -9`) at the store's
//! blob writes and publication, the record, the transparency log and the
//! run's files. Each ends in a clear error naming what failed, no
//! half-written blob visible, a record chain that verifies, and a run that
//! is resumable or failed with the reason.

use std::path::Path;

use serde_json::Value;

use crate::harness::{Run, Sandbox, component, repo, step, toml_path};
use crate::http::Server;

/// A two-step chain: `first` appends to the source, `second` to `first`.
fn chain(sb: &Sandbox) -> std::path::PathBuf {
    sb.write("in.txt", "input\n");
    let append = toml_path(&component("append"));
    sb.write(
        "chain.toml",
        &format!(
            "name = \"chain\"\n[sources]\nt = \"in.txt\"\n\
             [steps.first]\ncomponent = {append}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"one\" }}\noutputs = [\"out\"]\n\
             [steps.second]\ncomponent = {append}\ninputs = {{ in = \"first.out\" }}\nparams = {{ line = \"two\" }}\noutputs = [\"out\"]\n"
        ),
    )
}

fn run_with_faults(sb: &Sandbox, spec: &Path, faults: &str) -> Run {
    let home = sb.home();
    sb.sluice_env(
        &[
            "run",
            spec.to_str().unwrap(),
            "--json",
            "--jobs",
            "1",
            "--home",
            home.to_str().unwrap(),
        ],
        &[("SLUICE_FAULTS", faults)],
    )
}

/// Every blob in the store hashes to its name, and no temp file of a
/// dead writer is visible under a blob's name.
fn assert_store_sound(home: &Path) {
    use sha2::Digest as _;
    let root = home.join("store").join("sha256");
    let Ok(shards) = std::fs::read_dir(&root) else {
        return; // nothing published yet
    };
    for shard in shards {
        for blob in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let path = blob.unwrap().path();
            let name = format!(
                "{}{}",
                path.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap(),
                path.file_name().unwrap().to_str().unwrap()
            );
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&bytes)),
                name,
                "blob {} does not hash to its name",
                path.display()
            );
        }
    }
}

/// The only run's id.
fn only_run(home: &Path) -> String {
    let mut ids: Vec<String> = std::fs::read_dir(home.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.pop().unwrap()
}

/// `sluice resume ID --json` then `sluice verify ID`: the run completes
/// and its record verifies.
fn resume_and_verify(sb: &Sandbox, id: &str) -> Value {
    let resumed = sb.sluice(&["resume", id, "--json"]);
    assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
    let json = resumed.json();
    assert_eq!(json["status"], "succeeded", "{json:#}");
    let verified = sb.sluice(&["verify", id]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, verified.stderr);
    json
}

#[test]
fn a_full_disk_while_a_step_writes_its_output_fails_that_step_as_an_engine_error() {
    let sb = Sandbox::new();
    let spec = chain(&sb);
    let run = run_with_faults(&sb, &spec, "store.output@1=enospc");
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let json = run.json();
    let first = step(&json, "first");
    assert_eq!(first["status"], "failed", "{json:#}");
    assert_eq!(first["error"]["class"], "engine", "{first:#}");
    let message = first["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("No space left on device"),
        "{message:?} does not name the cause"
    );
    assert_eq!(step(&json, "second")["status"], "skipped");
    assert_store_sound(&sb.home());
    // The failure is the disk's, not the step's: with space, the same spec
    // succeeds, and the failed run's record verifies.
    let id = json["run_id"].as_str().unwrap();
    let verified = sb.sluice(&["verify", id]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, verified.stderr);
    let (again, json) = sb.run_json(&spec, &[]);
    assert_eq!(again.code, 0, "{json:#}");
}

#[test]
fn an_io_error_on_the_record_ends_the_run_unsealed_naming_the_record_and_resume_completes_it() {
    let sb = Sandbox::new();
    let spec = chain(&sb);
    // Record lines: run-started, then per step step-started,
    // attempt-sandbox, step-finished: the 5th is `second`'s step-started.
    let run = run_with_faults(&sb, &spec, "record@5=eio");
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("cannot append a `step-started` event to ")
            && run.stderr.contains("record.jsonl: Input/output error"),
        "{}",
        run.stderr
    );
    let id = only_run(&sb.home());
    assert!(
        run.stderr
            .contains(&format!("`sluice resume {id}` continues it")),
        "{}",
        run.stderr
    );
    assert!(
        !sb.home()
            .join("runs")
            .join(&id)
            .join("summary.json")
            .exists(),
        "an unrecorded run was acknowledged"
    );
    assert_store_sound(&sb.home());
    let json = resume_and_verify(&sb, &id);
    // It ran before the record failed; its result is in the cache.
    assert_eq!(step(&json, "second")["status"], "cached");
}

#[test]
fn a_full_disk_while_storing_the_sources_is_an_error_naming_the_store_file() {
    let sb = Sandbox::new();
    let spec = chain(&sb);
    let run = run_with_faults(&sb, &spec, "store.blob@1=enospc");
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.starts_with("error: store ")
            && run.stderr.contains("/store/tmp/")
            && run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    assert_store_sound(&sb.home());
}

#[test]
fn a_crash_between_a_blobs_fsync_and_its_rename_exposes_nothing_and_the_run_resumes() {
    let sb = Sandbox::new();
    let spec = chain(&sb);
    // Publications: spec, source, component, then `first`'s output.
    let run = run_with_faults(&sb, &spec, "store.publish@4=crash");
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("injected crash at store.publish"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "", "a crashed run printed a result");
    assert_store_sound(&sb.home());
    let id = only_run(&sb.home());
    let json = resume_and_verify(&sb, &id);
    assert_eq!(step(&json, "second")["status"], "succeeded");
}

#[test]
fn a_crash_before_the_first_record_line_leaves_a_run_that_resume_refuses_with_the_reason() {
    let sb = Sandbox::new();
    let spec = chain(&sb);
    let run = run_with_faults(&sb, &spec, "record@1=crash");
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let id = only_run(&sb.home());
    let resumed = sb.sluice(&["resume", &id]);
    assert_eq!(resumed.code, 2, "{}", resumed.stdout);
    assert_eq!(
        resumed.stderr.trim(),
        format!("error: run `{id}`: cannot continue its record: no run-started event")
    );
    // Nothing was acknowledged; running the spec again is the way on.
    let (again, json) = sb.run_json(&spec, &[]);
    assert_eq!(again.code, 0, "{json:#}");
}

#[test]
fn a_crash_at_any_record_line_leaves_a_resumable_run_whose_record_verifies() {
    // Every boundary of a two-step run's record, the seal's log append and
    // its files included.
    for fault in [
        "record@2=crash",
        "record@3=crash",
        "record@4=crash",
        "record@7=crash",
        "record@8=crash",
        "log@1=crash",
        "file:provenance.json@1=crash",
        "file:seal.json@1=crash",
        "file:summary.json@1=crash",
    ] {
        let sb = Sandbox::new();
        let spec = chain(&sb);
        let run = run_with_faults(&sb, &spec, fault);
        assert_ne!(run.code, 0, "{fault}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("injected crash at "),
            "{fault}: {}",
            run.stderr
        );
        assert_store_sound(&sb.home());
        let id = only_run(&sb.home());
        let resumed = sb.sluice(&["resume", &id, "--json"]);
        assert_eq!(
            resumed.code, 0,
            "{fault}: {}\n{}",
            resumed.stdout, resumed.stderr
        );
        assert_eq!(resumed.json()["status"], "succeeded", "{fault}");
        let verified = sb.sluice(&["verify", &id]);
        assert_eq!(
            verified.code, 0,
            "{fault}: {}\n{}",
            verified.stdout, verified.stderr
        );
    }
}

#[test]
fn a_full_disk_for_cache_entries_costs_only_the_cache() {
    let sb = Sandbox::new();
    let spec = chain(&sb);
    let run = run_with_faults(&sb, &spec, "cache@1=enospc,cache@2=eio");
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("cannot write cache entry")
            && run.stderr.contains("No space left on device")
            && run.stderr.contains("Input/output error"),
        "{}",
        run.stderr
    );
    // Nothing half-written was taken for an entry: the next run executes
    // both steps again, with the same outputs.
    let first = run.json();
    let (again, json) = sb.run_json(&spec, &[]);
    assert_eq!(again.code, 0, "{json:#}");
    for name in ["first", "second"] {
        assert_eq!(step(&json, name)["status"], "succeeded", "{json:#}");
        assert_eq!(
            step(&json, name)["outputs"]["out"]["digest"],
            step(&first, name)["outputs"]["out"]["digest"]
        );
    }
    let (_, cached) = sb.run_json(&spec, &[]);
    assert_eq!(step(&cached, "second")["status"], "cached");
}

#[test]
fn a_failing_disk_under_the_run_index_refuses_the_submission_and_starts_nothing() {
    let sb = Sandbox::new();
    chain(&sb);
    let spec = std::fs::read_to_string(sb.path().join("chain.toml")).unwrap();
    let cfg = sb.write(
        "config.toml",
        &format!(
            "[server]\nroot = \".\"\nallow_paths = [\".\", {}]\n",
            toml_path(&repo().join("target"))
        ),
    );
    let server = Server::start_with_env(
        &sb.home(),
        Some(&cfg),
        sb.path(),
        &[("SLUICE_FAULTS", "index@1=eio")],
    );
    let body = serde_json::json!({ "spec": spec });
    let refused = server.post_json("/v1/runs", None, &body);
    let message = refused.error(500, "internal");
    assert!(
        message.starts_with("cannot record the run in the run index: ")
            && message.contains("Input/output error"),
        "{message}"
    );
    let runs = server.get("/v1/runs", None).json();
    assert_eq!(runs["runs"], serde_json::json!([]), "{runs:#}");
    // The disk recovers: the next submission is acknowledged and runs.
    let accepted = server.post_json("/v1/runs", None, &body);
    assert_eq!(accepted.status, 201, "{}", accepted.text());
    let id = accepted.json()["id"].as_str().unwrap().to_string();
    let mut ended = None;
    server.each_event(&id, None, |event, data| {
        if event == "end" {
            ended = Some(data["status"].clone());
        }
        event != "end"
    });
    assert_eq!(ended, Some(serde_json::json!("succeeded")));
}
