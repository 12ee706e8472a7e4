//! CLI surface: scaffolding, show/runs/logs, usage errors.

use expect_test::expect_file;

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

/// `--lang python` and `--lang js` scaffold steps that run as they are and
/// write exactly what the Rust scaffold writes; each records the sources
/// its component was built from.
#[test]
fn new_step_scaffolds_in_python_and_javascript_run_as_is() {
    let sb = Sandbox::new();
    for (lang, name, language, toolchain) in [
        ("python", "shout-py", "python", "componentize-py 0.25.1"),
        ("js", "shout-js", "javascript", "componentize-js 0.23.0"),
    ] {
        let made = sb.sluice_raw(&["new", "step", name, "--lang", lang]);
        assert_eq!(made.code, 0, "{}", made.stderr);
        let spec = sb.path().join(name).join("pipeline.toml");
        let (run, json) = sb.run_json(&spec, &[]);
        assert_eq!(run.code, 0, "{lang}: {json:#}\n{}", run.stderr);
        let s = step(&json, &name.replace('-', "_"));
        assert_eq!(s["status"], "succeeded", "{s:#}");
        assert_eq!(s["metrics"]["lines"], 2.0);
        assert_eq!(s["built_from"]["language"], language, "{s:#}");
        assert_eq!(s["built_from"]["toolchain"], toolchain, "{s:#}");
        let digest = s["outputs"]["shouted"]["digest"].as_str().unwrap();
        let cat = sb.sluice(&["artifact", "cat", digest]);
        assert_eq!(
            cat.stdout,
            format!("hello from {name}\nSLUICE STEPS ARE COMPONENTS\nTHEY RUN ANYWHERE\n")
        );
    }
    let bad = sb.sluice_raw(&["new", "step", "x", "--lang", "cobol"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("invalid value 'cobol'"),
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
    let words = |prefix: &str| -> Vec<String> {
        let line = run.stdout.lines().find(|l| l.starts_with(prefix));
        let line = line.unwrap_or_else(|| panic!("no line {prefix:?}: {}", run.stdout));
        line.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(
        words("STEP "),
        [
            "STEP", "STATUS", "CACHED", "ATTEMPTS", "WALL", "ms", "FUEL", "MEM", "PEAK", "IN",
            "OUT"
        ]
    );
    assert_eq!(words("a ")[..4], ["a", "succeeded", "no", "1"]);
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

/// A home with one sealed run of a one-step pipeline; returns the run id.
fn one_step_run(sb: &Sandbox) -> (crate::harness::Run, String) {
    sb.write("in.txt", "x\n");
    let append = crate::harness::toml_path(&crate::harness::component("append"));
    let spec = sb.write(
        "p.toml",
        &format!("name = \"demo\"\n[sources]\nt = \"in.txt\"\n[steps.a]\ncomponent = {append}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"y\" }}\noutputs = [\"out\"]\n[steps.b]\ncomponent = {append}\ninputs = {{ in = \"a.out\" }}\nparams = {{ line = \"z\" }}\noutputs = [\"out\"]\n"),
    );
    let run = sb.sluice(&["run", spec.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let id = run.stdout.split_whitespace().nth(1).unwrap().to_string();
    (run, id)
}

/// Text with what differs between runs replaced: the temp dir by `[TMP]`,
/// run ids by `[RUN]`, timestamps by `[TIME]`, key ids by `[KEY]`,
/// durations by `[N]`. Runs of two or more spaces become two: column
/// widths follow those values, so a golden pins each cell and its order,
/// not the padding.
fn normalise(sb: &Sandbox, text: &str) -> String {
    let mut text = text.to_string();
    for dir in [sb.path().canonicalize().unwrap(), sb.path().to_path_buf()] {
        text = text.replace(dir.to_str().unwrap(), "[TMP]");
    }
    let is_run_id = |t: &str| {
        let b = t.as_bytes();
        b.len() == 24
            && b[8] == b'-'
            && b[15] == b'-'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
            && b[16..]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let is_time = |t: &str| t.len() >= 20 && t.as_bytes()[4] == b'-' && t.as_bytes()[10] == b'T';
    let is_status = |t: &str| matches!(t, "succeeded" | "cached" | "failed" | "skipped");
    let mut lines = Vec::new();
    for line in text.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        // Cells are separated by two or more spaces, words by one.
        let cells: Vec<&str> = line
            .trim()
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let mut out_cells = Vec::new();
        for (i, cell) in cells.iter().enumerate() {
            let words: Vec<&str> = cell.split(' ').collect();
            let mut out_words = Vec::new();
            for (j, w) in words.iter().enumerate() {
                let bare = w.trim_matches(|c: char| "()`:,".contains(c));
                let next = words.get(j + 1).map(|n| n.trim_end_matches(')'));
                let replaced = if is_run_id(bare) {
                    w.replace(bare, "[RUN]")
                } else if is_time(bare) {
                    w.replace(bare, "[TIME]")
                } else if j > 0
                    && words[j - 1] == "by"
                    && bare.chars().all(|c| c.is_ascii_hexdigit())
                {
                    w.replace(bare, "[KEY]")
                } else if next == Some("ms") && bare.chars().all(|c| c.is_ascii_digit()) {
                    w.replace(bare, "[N]")
                } else {
                    w.to_string()
                };
                out_words.push(replaced);
            }
            // The wall-time column of a step row: STEP STATUS CACHED ATTEMPTS WALL.
            if i == 4 && cells.len() >= 9 && is_status(cells[1]) {
                out_words = vec!["[N]".to_string()];
            }
            out_cells.push(out_words.join(" "));
        }
        lines.push(format!("{indent}{}", out_cells.join("  ")));
    }
    lines.join("\n") + "\n"
}

#[test]
fn the_step_table_matches_its_golden_file() {
    let sb = Sandbox::new();
    let (run, id) = one_step_run(&sb);
    expect_file!["golden/run.txt"].assert_eq(&normalise(&sb, &run.stdout));
    let show = sb.sluice(&["show", &id]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert_eq!(show.stdout, run.stdout);
}

#[test]
fn the_runs_table_matches_its_golden_file() {
    let sb = Sandbox::new();
    one_step_run(&sb);
    std::fs::create_dir_all(sb.home().join("runs/20000101-000000-0000beef")).unwrap();
    let corrupt = sb.home().join("runs/20000101-000000-0badf00d");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("summary.json"), b"{ not json").unwrap();
    let runs = sb.sluice(&["runs"]);
    assert_eq!(runs.code, 0, "{}", runs.stderr);
    expect_file!["golden/runs.txt"].assert_eq(&normalise(&sb, &runs.stdout));
}

#[test]
fn spec_errors_match_their_golden_file() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "bad.toml",
        "name = \"bad\"\n[steps.a]\ncomponent = \"missing.wasm\"\ninputs = { in = \"b.out\" }\noutputs = [\"out\"]\n[steps.b]\ncomponent = \"missing.wasm\"\ninputs = { in = \"a.out\" }\noutputs = [\"out\"]\nretries = \"twice\"\n",
    );
    let validate = sb.sluice(&["validate", spec.to_str().unwrap()]);
    assert_eq!(validate.code, 2, "{}", validate.stderr);
    assert_eq!(validate.stdout, "");
    expect_file!["golden/spec-errors.txt"].assert_eq(&normalise(&sb, &validate.stderr));
}

#[test]
fn the_verify_and_replay_reports_match_their_golden_files() {
    let sb = Sandbox::new();
    let (_, id) = one_step_run(&sb);
    let replay = sb.sluice(&["replay", &id]);
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    expect_file!["golden/replay.txt"].assert_eq(&normalise(&sb, &replay.stdout));

    let intact = sb.sluice(&["verify", &id]);
    assert_eq!(intact.code, 0, "{}", intact.stderr);
    let record = sb.home().join("runs").join(&id).join("record.jsonl");
    let text = std::fs::read_to_string(&record).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(1);
    std::fs::write(&record, lines.join("\n") + "\n").unwrap();
    let tampered = sb.sluice(&["verify", &id]);
    assert_eq!(tampered.code, 1, "{}", tampered.stderr);
    expect_file!["golden/verify.txt"].assert_eq(&normalise(
        &sb,
        &format!("{}{}", intact.stdout, tampered.stdout),
    ));
}
