//! The path policy (HOSTILE.md class 20): the engine home and the config
//! file are never a readable spec, source or component — over HTTP for
//! tenants, for the operator's schedules and hooks, and on the CLI — after
//! `..` and symlinks are resolved; and a refused path answers the same
//! whether or not it exists (no existence oracle).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::harness::{Sandbox, component, repo, toml_path};
use crate::http::Server;

const ALICE: &str = "alice-runner-token-0001";
const CAROL: &str = "carol-runner-token-003";
const HOOK_SECRET: &str = "It's a Secret to Everybody";
const ENGINE_STATE: &str =
    "is engine state (the engine home or its config file), never readable by a pipeline";

/// A server with the defaults that matter here: root = the temp dir,
/// `allow_paths = ["."]` (plus the built components), the home
/// (`<tmp>/home`) and the config file (`<tmp>/config.toml`) under the root.
fn serve(sb: &Sandbox, extra: &str) -> Server {
    let cfg = sb.write(
        "config.toml",
        &format!(
            "[server]\nroot = \".\"\nallow_paths = [\".\", {}]\n{extra}\n\
             [[tokens]]\ntoken = \"{ALICE}\"\ntenant = \"a\"\nrole = \"runner\"\n\
             [[tokens]]\ntoken = \"{CAROL}\"\ntenant = \"b\"\nrole = \"runner\"\n",
            toml_path(&repo().join("target"))
        ),
    );
    Server::start(&sb.home(), Some(&cfg), sb.path())
}

/// A one-step spec whose step copies source `s` (named `source`).
fn reading(source: &str) -> String {
    format!(
        "name = \"leak\"\n[sources]\ns = {source:?}\n[steps.a]\ncomponent = {}\ninputs = {{ in = \"sources.s\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n",
        toml_path(&component("append"))
    )
}

/// A spec whose step's component is `path`.
fn running(path: &str) -> String {
    format!(
        "name = \"leak\"\n[steps.a]\ncomponent = {path:?}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n"
    )
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn tenants_cannot_read_the_home_or_the_config_through_spec_paths() {
    let sb = Sandbox::new();
    let server = serve(&sb, "");
    server.stderr_line(
        "sluice: warning: tokens[0] (tenant a): the token is written in the config file; prefer `token_env`",
        Duration::from_secs(10),
    );
    // Tenant b runs something: the home now has a signing key, store blobs
    // and an index WAL.
    sb.write("in.txt", "carol's private data\n");
    let r = server.post_json("/v1/runs", Some(CAROL), &json!({"spec": reading("in.txt")}));
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        server.events(&id, Some(CAROL)).last().unwrap().1["status"],
        "succeeded"
    );
    let home = sb.home();
    let key = files(&home.join("keys"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .expect("a signing key");
    let key_rel = format!("home/keys/{}", key.file_name().unwrap().to_str().unwrap());
    let blob = files(&home.join("store/sha256"))[0]
        .strip_prefix(sb.path())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    std::fs::create_dir_all(sb.path().join("data")).unwrap();
    std::os::unix::fs::symlink(&home, sb.path().join("data/link")).unwrap();
    std::os::unix::fs::symlink(&key, sb.path().join("data/key")).unwrap();

    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for rel in [
        key_rel.clone(),
        "home/server/index.sqlite-wal".to_string(),
        "home/server/index.sqlite".to_string(),
        blob,
        "config.toml".to_string(),
        format!("data/../{key_rel}"),
        format!("absent/../{key_rel}"),
        key_rel.replace("home/", "data/link/"),
        "data/key".to_string(),
        "home/keys/absent.key".to_string(),
    ] {
        let r = server.post_json("/v1/runs", Some(ALICE), &json!({"spec": reading(&rel)}));
        let msg = r.error(403, "path_not_allowed");
        assert_eq!(
            msg,
            format!("inline.toml:3:5: source `s`: {rel:?} {ENGINE_STATE}"),
            "{rel}"
        );
        bodies.push(r.body);
        let r = server.post_json("/v1/runs", Some(ALICE), &json!({"spec": running(&rel)}));
        let msg = r.error(403, "path_not_allowed");
        assert_eq!(
            msg,
            format!("inline.toml:3:13: step `a`: component {rel:?} {ENGINE_STATE}"),
            "{rel}"
        );
        bodies.push(r.body);
    }
    for pipeline in [
        "config.toml",
        "home/server/../../config.toml",
        "data/link/x.toml",
    ] {
        let r = server.post_json("/v1/runs", Some(ALICE), &json!({"pipeline": pipeline}));
        let msg = r.error(403, "path_not_allowed");
        assert_eq!(msg, format!("pipeline {pipeline:?} {ENGINE_STATE}"));
        bodies.push(r.body);
    }

    // Nothing ran for tenant a, and no secret left the server.
    assert_eq!(
        server.get("/v1/runs", Some(ALICE)).json()["runs"],
        json!([])
    );
    let key_bytes = std::fs::read(&key).unwrap();
    let log = server.stderr_so_far().join("\n");
    for secret in [&key_bytes[..], CAROL.as_bytes(), b"carol's private data"] {
        for body in &bodies {
            assert!(!contains(body, secret), "{}", String::from_utf8_lossy(body));
        }
        assert!(!contains(log.as_bytes(), secret), "{log}");
    }
}

#[test]
fn a_refused_path_answers_alike_whether_or_not_it_exists() {
    let sb = Sandbox::new();
    let server = serve(&sb, "");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("there.txt"), "x").unwrap();
    std::fs::create_dir_all(sb.home().join("keys")).unwrap();
    std::fs::write(sb.home().join("keys/k.key"), "x").unwrap();
    let out = |name: &str| outside.path().join(name).to_str().unwrap().to_string();
    // Both temp dirs share a parent: the outside file as `../<dir>/there.txt`.
    let sibling = outside.path().file_name().unwrap().to_str().unwrap();
    // (exists, does not exist), refused for the same reason.
    let pairs = [
        (
            "/etc/passwd".to_string(),
            "/etc/no-such-sluice-file".to_string(),
        ),
        (out("there.txt"), out("absent.txt")),
        (out("there.txt"), "/no/such/dir/at/all".to_string()),
        (
            format!("../{sibling}/there.txt"),
            "../no-such-sluice-dir/x".to_string(),
        ),
        (
            "home/keys/k.key".to_string(),
            "home/keys/absent.key".to_string(),
        ),
        (
            "home/keys/k.key".to_string(),
            "home/no-such-dir/x".to_string(),
        ),
    ];
    for (exists, missing) in &pairs {
        for spec in [reading as fn(&str) -> String, running] {
            let answer = |rel: &str| {
                let r = server.post_json("/v1/runs", Some(ALICE), &json!({"spec": spec(rel)}));
                let msg = r.error(403, "path_not_allowed");
                msg.replace(&format!("{rel:?}"), "PATH")
            };
            assert_eq!(answer(exists), answer(missing), "{exists} vs {missing}");
        }
        let answer = |rel: &str| {
            let r = server.post_json("/v1/runs", Some(ALICE), &json!({"pipeline": rel}));
            r.error(403, "path_not_allowed")
                .replace(&format!("{rel:?}"), "PATH")
        };
        assert_eq!(answer(exists), answer(missing), "{exists} vs {missing}");
    }
    // Outside the allowed paths: a different reason, but again the same for
    // both.
    let r = server.post_json(
        "/v1/runs",
        Some(ALICE),
        &json!({"spec": reading("/etc/no-such-sluice-file")}),
    );
    assert_eq!(
        r.error(403, "path_not_allowed"),
        "inline.toml:3:5: source `s`: \"/etc/no-such-sluice-file\" is not inside the server's allowed paths"
    );
    // Inside the allowed paths, a missing file is an ordinary spec error.
    let r = server.post_json(
        "/v1/runs",
        Some(ALICE),
        &json!({"spec": reading("absent.txt")}),
    );
    assert_eq!(
        r.error(422, "invalid"),
        "inline.toml:3:5: source `s`: file absent.txt does not exist"
    );
}

#[test]
fn schedules_and_hooks_get_the_same_path_policy() {
    let sb = Sandbox::new();
    sb.write(
        "sneaky.toml",
        &format!(
            "{}[schedule]\ncron = \"* * * * * *\"\n",
            reading("config.toml")
        ),
    );
    sb.write(
        "hooked.toml",
        &reading("home/../config.toml")
            .replace("[sources]", "[params]\ncommit = \"none\"\n[sources]"),
    );
    let server = serve(
        &sb,
        &format!(
            "scheduled = [\"sneaky.toml\"]\n[hooks.main]\nsecret = \"{HOOK_SECRET}\"\npipeline = \"hooked.toml\"\ncommit_param = \"commit\"\nbranches = [\"main\"]\ntenant = \"a\"\n"
        ),
    );
    let line = server.stderr_line("sluice: schedule sneaky.toml: ", Duration::from_secs(30));
    assert!(
        line.ends_with(&format!(
            "sneaky.toml:3:5: source `s`: \"config.toml\" {ENGINE_STATE}"
        )),
        "{line}"
    );
    let body = br#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":{"full_name":"o/r"}}"#;
    let sig = sluice_engine::hook::sign(HOOK_SECRET.as_bytes(), body);
    let r = server.request_with(
        "POST",
        "/v1/hooks/git",
        None,
        Some(body),
        &[
            ("X-GitHub-Delivery", "d1"),
            ("X-Hub-Signature-256", &sig),
            ("Content-Type", "application/json"),
        ],
    );
    assert_eq!(
        r.error(403, "path_not_allowed"),
        format!("hooked.toml:5:5: source `s`: \"home/../config.toml\" {ENGINE_STATE}")
    );
    assert_eq!(
        server.get("/v1/runs", Some(ALICE)).json()["runs"],
        json!([])
    );
}

#[test]
fn the_cli_refuses_specs_naming_its_own_home() {
    let sb = Sandbox::new();
    sb.write("home/keys/k.key", "secret key bytes");
    let spec = sb.write("spec.toml", &reading("home/keys/k.key"));
    for command in ["validate", "run"] {
        let run = sb.sluice(&[command, spec.to_str().unwrap()]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "spec.toml:3:5: source `s`: \"home/keys/k.key\" {ENGINE_STATE}"
            )),
            "{}",
            run.stderr
        );
        assert!(!run.stdout.contains("secret key bytes"), "{}", run.stdout);
    }
    // Elsewhere, the user's own files are fine.
    sb.write("in.txt", "mine\n");
    let ok = sb.write("ok.toml", &reading("in.txt"));
    let run = sb.sluice(&["validate", ok.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}
