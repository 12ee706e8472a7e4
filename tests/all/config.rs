//! The engine config file at the boundary users touch: one file, read once
//! by `sluice run` and `sluice serve`, every section checked, and a
//! misspelt table or key refused with `FILE:LINE:COLUMN` and its name.

use std::path::{Path, PathBuf};

use crate::harness::{Sandbox, component, repo, toml_path};
use crate::http::Server;

/// A config with every section: `[server]`, `[[tokens]]`, `[hooks.*]` and
/// `[workers.*]`.
const FULL: &str = r#"[server]
root = "."
max_concurrent_runs = 2

[[tokens]]
token_env = "SLUICE_TEST_CONFIG_TOKEN"
tenant = "a"
role = "admin"

[hooks.main]
secret = "a hook secret"
pipeline = "p.toml"
branches = ["main"]

[workers.fake]
command = "/bin/true"
args = ["-v"]
hello_timeout_s = 5
"#;

const TOKEN: &str = "a-token-of-sixteen-or-more";

/// A one-step pipeline that appends a line to a source.
fn pipeline(sb: &Sandbox) -> PathBuf {
    sb.write("data.txt", "data\n");
    sb.write(
        "p.toml",
        &format!(
            "name = \"p\"\n[sources]\nd = \"data.txt\"\n[steps.a]\ncomponent = {}\ninputs = {{ in = \"sources.d\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n",
            toml_path(&component("append"))
        ),
    )
}

/// Each section with one misspelt table or key, and the position and
/// message `sluice` must report.
fn misspellings() -> Vec<(&'static str, String)> {
    vec![
        (
            "top-level table",
            FULL.replace("[workers.fake]", "[worker.fake]"),
        ),
        (
            "[server] key",
            FULL.replace("max_concurrent_runs", "max_concurent_runs"),
        ),
        ("[[tokens]] key", FULL.replace("tenant = ", "tennant = ")),
        ("[hooks] key", FULL.replace("branches = ", "branch = ")),
        ("[workers] key", FULL.replace("args = ", "argz = ")),
    ]
}

fn expected(name: &str) -> &'static str {
    match name {
        "top-level table" => {
            "15:1: unknown table `worker`; expected one of: executor, hooks, kubernetes, server, store, tokens, workers"
        }
        "[server] key" => {
            "3:1: unknown key `max_concurent_runs` in [server]; expected one of: listen, root, allow_paths, max_body_bytes, max_artifact_bytes, max_concurrent_runs, max_running_steps, jobs_per_run, rate_limit_per_minute, scheduled, header_read_timeout_ms, max_connections, max_connections_per_peer, body_read_timeout_ms, body_idle_timeout_ms, auth_failures_per_minute, max_concurrent_uploads"
        }
        "[[tokens]] key" => {
            "7:1: unknown key `tennant` in tokens[0]; expected one of: token, token_env, tenant, role"
        }
        "[hooks] key" => {
            "13:1: unknown key `branch` in [hooks.main]; expected one of: secret, secret_env, pipeline, commit_param, branches, tenant"
        }
        "[workers] key" => {
            "17:1: unknown key `argz` in [workers.fake]; expected one of: command, args, env, hello_timeout_s"
        }
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn a_misspelt_table_or_key_in_any_section_fails_run_with_its_position() {
    let sb = Sandbox::new();
    let spec = pipeline(&sb);
    for (name, text) in misspellings() {
        let config = sb.write("config.toml", &text);
        let run = sb.sluice_env(
            &[
                "run",
                spec.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--home",
                sb.home().to_str().unwrap(),
            ],
            &[("SLUICE_TEST_CONFIG_TOKEN", TOKEN)],
        );
        assert_eq!(run.code, 2, "{name}: {run:?}");
        assert_eq!(
            run.stderr.trim(),
            format!("error: {}:{}", config.display(), expected(name)),
            "{name}"
        );
        assert!(!sb.home().join("runs").exists(), "{name}: nothing ran");
    }
}

#[test]
fn serve_refuses_a_bad_config_naming_file_line_and_column() {
    let sb = Sandbox::new();
    pipeline(&sb);
    let config = sb.write("config.toml", &FULL.replace("[server]", "[sever]"));
    let serve = sb.sluice_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
            "--home",
            sb.home().to_str().unwrap(),
        ],
        &[("SLUICE_TEST_CONFIG_TOKEN", TOKEN)],
    );
    assert_eq!(serve.code, 2, "{serve:?}");
    assert_eq!(
        serve.stderr.trim(),
        format!(
            "error: {}:1:1: unknown table `sever`; expected one of: executor, hooks, kubernetes, server, store, tokens, workers",
            config.display()
        )
    );
}

#[test]
fn an_unset_token_variable_is_named_with_its_position() {
    let sb = Sandbox::new();
    let spec = pipeline(&sb);
    let config = sb.write("config.toml", FULL);
    let run = sb.sluice(&[
        "run",
        spec.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        format!(
            "error: {}:6:13: tokens[0]: environment variable SLUICE_TEST_CONFIG_TOKEN is not set",
            config.display()
        )
    );
}

#[test]
fn a_full_config_serves_and_runs() {
    let sb = Sandbox::new();
    let spec = pipeline(&sb);
    // The server's root must reach the components under target/.
    let text = FULL.replace(
        "root = \".\"",
        &format!(
            "root = \".\"\nallow_paths = [\".\", {}]",
            toml_path(&repo().join("target"))
        ),
    );
    let config = sb.write("config.toml", &text);
    let run = sb.sluice_env(
        &[
            "run",
            spec.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--home",
            sb.home().to_str().unwrap(),
            "--json",
        ],
        &[("SLUICE_TEST_CONFIG_TOKEN", TOKEN)],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["status"], "succeeded");
    let server = Server::start_with_env(
        &sb.home(),
        Some(&config),
        sb.path(),
        &[("SLUICE_TEST_CONFIG_TOKEN", TOKEN)],
    );
    let tokens = server.get("/v1/admin/tokens", Some(TOKEN));
    assert_eq!(tokens.status, 200);
    assert_eq!(
        tokens.json(),
        serde_json::json!({"tokens": [{"label": "tokens[0]", "tenant": "a", "role": "admin"}]})
    );
}

/// Source files under `engine/src/` whose text (before any `mod tests`)
/// contains `needle`.
fn sources_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources_containing(&path, needle));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            if code.contains(needle) {
                let rel = path.strip_prefix(repo().join("engine/src")).unwrap();
                found.push(rel.display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn the_config_file_is_parsed_in_one_place() {
    let src = repo().join("engine/src");
    // One parse of the file, in `config`; the sections' owners read the
    // parsed tables they are handed.
    assert_eq!(sources_containing(&src, "Config::parse("), ["config.rs"]);
    for section_owner in ["hook.rs", "gpu/config.rs"] {
        let text = std::fs::read_to_string(src.join(section_owner)).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for reader in ["toml::from_str", "DeTable::parse", "Config::load("] {
            assert!(
                !code.contains(reader),
                "{section_owner} parses the config itself ({reader})"
            );
        }
    }
}

#[test]
fn the_spec_layer_imports_no_runtime_module() {
    const ALLOWED: &[&str] = &["spec", "expr", "limits", "policy", "digest", "position"];
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("engine/src/spec"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(repo().join("engine/src/expr.rs"));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let module: String = text[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                ALLOWED.contains(&module.as_str()),
                "{} imports crate::{module}",
                file.display()
            );
        }
    }
}
