//! `sluice serve` over real HTTP on loopback (HOSTILE.md groups 10, 14,
//! 16): submit → events → succeeded, cancel, the auth and tenancy matrix,
//! body limits and unknown fields, 50 concurrent submissions, kill -9 and
//! restart, a corrupt index entry, `/metrics`, the OpenAPI document, git
//! hooks and component uploads.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Sandbox, component, repo, toml_path};
use crate::http::Server;

const ALICE: &str = "alice-runner-token-0001";
const BOB: &str = "bob-viewer-token-00002";
const CAROL: &str = "carol-runner-token-003";
const ADMIN: &str = "admin-token-000000004";

/// A config allowing the temp dir and the built test components.
fn config(sb: &Sandbox, extra: &str) -> std::path::PathBuf {
    let target = repo().join("target");
    sb.write(
        "config.toml",
        &format!(
            "[server]\nroot = \".\"\nallow_paths = [\".\", {}]\nmax_body_bytes = 65536\n{extra}",
            toml_path(&target)
        ),
    )
}

fn tokens() -> String {
    format!(
        "[[tokens]]\ntoken = \"{ALICE}\"\ntenant = \"a\"\nrole = \"runner\"\n\
         [[tokens]]\ntoken = \"{BOB}\"\ntenant = \"a\"\nrole = \"viewer\"\n\
         [[tokens]]\ntoken = \"{CAROL}\"\ntenant = \"b\"\nrole = \"runner\"\n\
         [[tokens]]\ntoken = \"{ADMIN}\"\ntenant = \"a\"\nrole = \"admin\"\n"
    )
}

/// An inline spec: a chain of `n` append steps over `in.txt`.
fn chain(sb: &Sandbox, n: usize, tag: &str) -> String {
    sb.write("in.txt", "start\n");
    let mut spec =
        format!("name = \"chain\"\n[params]\ntag = \"{tag}\"\n[sources]\ntext = \"in.txt\"\n");
    for i in 0..n {
        let input = if i == 0 {
            "sources.text".to_string()
        } else {
            format!("s{}.out", i - 1)
        };
        spec.push_str(&format!(
            "[steps.s{i}]\ncomponent = {}\ninputs = {{ in = \"{input}\" }}\nparams = {{ line = \"${{params.tag}} {i}\" }}\noutputs = [\"out\"]\n",
            toml_path(&component("append"))
        ));
    }
    spec
}

pub(crate) fn submit(server: &Server, token: Option<&str>, spec: &str) -> String {
    let r = server.post_json("/v1/runs", token, &json!({"spec": spec}));
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

/// `name=status` of each `step` event with a final status, in order.
fn finals(events: &[(String, Value)]) -> Vec<String> {
    events
        .iter()
        .filter(|(e, d)| e == "step" && d["status"] != "running")
        .map(|(_, d)| {
            format!(
                "{}={}",
                d["name"].as_str().unwrap(),
                d["status"].as_str().unwrap()
            )
        })
        .collect()
}

/// A spec whose one step `spin` loops until cancelled (600 s timeout).
fn spin_spec(sb: &Sandbox) -> String {
    sb.write("in.txt", "x\n");
    format!(
        "name = \"spin\"\n[sources]\nt = \"in.txt\"\n\
         [steps.spin]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ mode = \"spin\" }}\noutputs = [\"out\"]\nlimits = {{ timeout_s = 600, fuel = 10000000000000 }}\n",
        toml_path(&component("hostile")),
    )
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

#[test]
fn submit_streams_events_and_succeeds() {
    let sb = Sandbox::new();
    let server = Server::start(&sb.home(), Some(&config(&sb, "")), sb.path());
    let id = submit(&server, None, &chain(&sb, 3, "x"));

    let events = server.events(&id, None);
    assert_eq!(
        finals(&events),
        ["s0=succeeded", "s1=succeeded", "s2=succeeded"]
    );
    assert_eq!(
        events.iter().filter(|(e, _)| e == "metric").count(),
        3,
        "one bytes_copied metric per step"
    );
    assert_eq!(
        events.last().unwrap(),
        &("end".to_string(), json!({"status": "succeeded"}))
    );

    let run = server.get(&format!("/v1/runs/{id}"), None).json();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        run["counts"],
        json!({"total": 3, "done": 3, "failed": 0, "running": 0})
    );
    assert_eq!(step(&run, "s2")["deps"], json!(["s1"]));
    let out = &step(&run, "s2")["report"]["outputs"]["out"];
    let digest = out["digest"].as_str().unwrap();

    // The artifact streams back, byte for byte.
    let blob = server.get(&format!("/v1/artifacts/{digest}"), None);
    assert_eq!(blob.status, 200);
    assert_eq!(blob.text(), "start\nx 0\nx 1\nx 2\n");
    let logs = server.get(&format!("/v1/runs/{id}/logs/s1"), None);
    assert_eq!(logs.status, 200);
    assert_eq!(
        logs.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    server
        .get(&format!("/v1/runs/{id}/logs/nope"), None)
        .error(404, "not_found");

    // The finished run's stream replays its steps and ends.
    let again = server.events(&id, None);
    assert_eq!(again.last().unwrap().0, "end");
    assert_eq!(again.iter().filter(|(e, _)| e == "step").count(), 3);

    // Audit routes.
    let verify = server.get(&format!("/v1/runs/{id}/verify"), None).json();
    assert_eq!(verify["verdict"], "intact");
    let envelope = server
        .get(&format!("/v1/runs/{id}/provenance"), None)
        .json();
    assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
    let replay = server.request("POST", &format!("/v1/runs/{id}/replay"), None, None);
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(replay.json()["verdict"], "identical");
}

#[test]
fn cancel_stops_the_running_step_and_skips_the_rest() {
    let sb = Sandbox::new();
    let server = Server::start(&sb.home(), Some(&config(&sb, "")), sb.path());
    let spec = spin_spec(&sb)
        + &format!(
            "[steps.after]\ncomponent = {}\ninputs = {{ in = \"spin.out\" }}\nparams = {{ line = \"z\" }}\noutputs = [\"out\"]\n",
            toml_path(&component("append"))
        );
    let id = submit(&server, None, &spec);
    let mut cancelled = false;
    let mut finals = Vec::new();
    server.each_event(&id, None, |event, data| {
        if event == "step" && data["name"] == "spin" && data["status"] == "running" && !cancelled {
            let r = server.request("POST", &format!("/v1/runs/{id}/cancel"), None, None);
            assert_eq!(r.status, 202, "{}", r.text());
            cancelled = true;
        }
        if event == "step" && data["status"] != "running" {
            finals.push(format!(
                "{}={}",
                data["name"].as_str().unwrap(),
                data["status"].as_str().unwrap()
            ));
        }
        event != "end"
    });
    assert!(cancelled);
    assert_eq!(finals, ["spin=cancelled", "after=cancelled"]);
    let run = server.get(&format!("/v1/runs/{id}"), None).json();
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["error"]["code"], "cancelled");
    // Cancelling an ended run is a conflict.
    server
        .request("POST", &format!("/v1/runs/{id}/cancel"), None, None)
        .error(409, "conflict");
}

#[test]
fn auth_matrix_and_tenant_isolation() {
    let sb = Sandbox::new();
    let server = Server::start(&sb.home(), Some(&config(&sb, &tokens())), sb.path());
    server.get("/v1/runs", None).error(401, "unauthorized");
    server
        .get("/v1/runs", Some("wrong-token-000000000"))
        .error(401, "unauthorized");
    let r = server.request_with(
        "GET",
        "/v1/runs",
        None,
        None,
        &[("Authorization", "Basic abc")],
    );
    r.error(401, "unauthorized");
    // A viewer cannot submit.
    let msg = server
        .post_json("/v1/runs", Some(BOB), &json!({"spec": chain(&sb, 1, "v")}))
        .error(403, "forbidden");
    assert!(msg.contains("`runner` role"), "{msg}");
    // Nothing was started by refused requests.
    assert_eq!(
        server.get("/v1/runs", Some(ADMIN)).json()["runs"],
        json!([])
    );

    let id = submit(&server, Some(ALICE), &chain(&sb, 2, "a"));
    let events = server.events(&id, Some(BOB));
    assert_eq!(events.last().unwrap().1["status"], "succeeded");
    let run = server.get(&format!("/v1/runs/{id}"), Some(BOB)).json();
    let digest = step(&run, "s1")["report"]["outputs"]["out"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        server
            .get(&format!("/v1/artifacts/{digest}"), Some(BOB))
            .status,
        200
    );
    // Its lineage, from the tenant's sealed records: s1 made it from s0's.
    let lineage = server
        .get(&format!("/v1/artifacts/{digest}/lineage"), Some(BOB))
        .json();
    assert_eq!(lineage["produced_by"][0]["step"], "s1", "{lineage:#}");
    assert_eq!(lineage["produced_by"][0]["run"], id.as_str());
    let made: Vec<&str> = lineage["upstream"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|o| o["step"].as_str())
        .collect();
    assert_eq!(made.len(), 2, "{lineage:#}");
    assert!(made.contains(&"s0") && made.contains(&"s1"), "{lineage:#}");
    assert_eq!(lineage["skipped"], json!([]));

    // Tenant b sees none of it: 404 on every route, like an unknown id.
    for (method, path) in [
        ("GET", format!("/v1/runs/{id}")),
        ("GET", format!("/v1/runs/{id}/events")),
        ("GET", format!("/v1/runs/{id}/logs/s0")),
        ("GET", format!("/v1/runs/{id}/verify")),
        ("GET", format!("/v1/runs/{id}/provenance")),
        ("POST", format!("/v1/runs/{id}/cancel")),
        ("POST", format!("/v1/runs/{id}/replay")),
        ("GET", format!("/v1/artifacts/{digest}")),
        ("GET", format!("/v1/artifacts/{digest}/lineage")),
    ] {
        let r = server.request(method, &path, Some(CAROL), None);
        let msg = r.error(404, "not_found");
        assert!(!msg.contains("tenant"), "{method} {path}: {msg}");
    }
    assert_eq!(
        server.get("/v1/runs", Some(CAROL)).json()["runs"],
        json!([])
    );
    assert_eq!(
        server
            .get("/v1/runs/20990101-000000-00000000", Some(CAROL))
            .error(404, "not_found"),
        "no run `20990101-000000-00000000`"
    );

    // Admin-only route.
    server
        .get("/v1/admin/tokens", Some(BOB))
        .error(403, "forbidden");
    let tokens = server.get("/v1/admin/tokens", Some(ADMIN));
    assert_eq!(tokens.status, 200);
    assert!(
        !tokens.text().contains(ALICE),
        "secrets never leave the server"
    );
    assert_eq!(tokens.json()["tokens"].as_array().unwrap().len(), 4);
    assert_eq!(
        server.get("/v1/whoami", Some(CAROL)).json(),
        json!({"tenant": "b", "role": "runner", "auth": true})
    );
}

#[test]
fn bad_requests_get_named_errors_and_start_nothing() {
    let sb = Sandbox::new();
    let server = Server::start(&sb.home(), Some(&config(&sb, "")), sb.path());
    // Oversized body.
    let big = vec![b' '; 70_000];
    server
        .request("POST", "/v1/runs", None, Some(&big))
        .error(413, "too_large");
    // Unknown field, named.
    let msg = server
        .post_json("/v1/runs", None, &json!({"spec": "x", "priority": 1}))
        .error(400, "unknown_field");
    assert!(msg.contains("unknown field `priority`"), "{msg}");
    // Malformed UTF-8.
    server
        .request("POST", "/v1/runs", None, Some(b"{\"spec\": \"\xff\xfe\"}"))
        .error(400, "bad_request");
    // Neither or both of pipeline/spec.
    server
        .post_json("/v1/runs", None, &json!({"params": {}}))
        .error(400, "bad_request");
    // A spec with errors: all reported, positioned.
    let msg = server
        .post_json(
            "/v1/runs",
            None,
            &json!({"spec": "name = \"bad\"\n[steps.a]\ncomponent = \"missing.wasm\"\nbogus = 1\n"}),
        )
        .error(422, "invalid");
    assert!(
        msg.contains("inline.toml:4:1: unknown field `bogus` in [steps.a]"),
        "{msg}"
    );
    assert!(
        msg.contains("inline.toml:3:13: step `a`: component missing.wasm does not exist"),
        "{msg}"
    );
    assert!(
        !msg.contains(sb.path().to_str().unwrap()),
        "no server paths: {msg}"
    );
    // A path outside the allowed directories.
    let msg = server
        .post_json("/v1/runs", None, &json!({"pipeline": "/etc/passwd"}))
        .error(403, "path_not_allowed");
    assert!(msg.contains("\"/etc/passwd\""), "{msg}");
    let msg = server
        .post_json(
            "/v1/runs",
            None,
            &json!({"spec": format!("name = \"leak\"\n[sources]\ns = \"/etc/hostname\"\n[steps.a]\ncomponent = {}\ninputs = {{ in = \"sources.s\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n", toml_path(&component("append")))}),
        )
        .error(403, "path_not_allowed");
    assert!(msg.contains("source `s`"), "{msg}");
    // Bad list params.
    server
        .get("/v1/runs?status=done", None)
        .error(400, "bad_request");
    server
        .get("/v1/runs?colour=red", None)
        .error(400, "unknown_field");
    // Unknown routes and methods.
    server.get("/v1/nope", None).error(404, "no_route");
    server
        .request("DELETE", "/v1/runs", None, None)
        .error(405, "method_not_allowed");
    // Nothing was started.
    assert_eq!(server.get("/v1/runs", None).json()["runs"], json!([]));
}

#[test]
fn openapi_documents_exactly_the_served_routes() {
    let sb = Sandbox::new();
    let server = Server::start(&sb.home(), Some(&config(&sb, &tokens())), sb.path());
    let doc = server.get("/v1/openapi.json", None).json();
    assert_eq!(doc["openapi"], "3.0.3");
    let mut n = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let concrete = path
                .replace("{id}", "20990101-000000-00000000")
                .replace("{step}", "s")
                .replace("{digest}", "sha256:00");
            let r = server.request(&method.to_uppercase(), &concrete, Some(ADMIN), Some(b""));
            // Routed: whatever the answer, it is not "no such route".
            if r.status == 404 || r.status == 405 {
                let code = r.json()["error"]["code"].clone();
                assert!(
                    code != "no_route" && code != "method_not_allowed",
                    "{method} {path}: {code}"
                );
            }
            assert!(op["responses"].is_object());
            n += 1;
        }
    }
    assert_eq!(n, sluice_engine::server::ROUTES.len());
}

#[test]
fn fifty_concurrent_submissions_all_complete() {
    let sb = Sandbox::new();
    let server = Server::start(&sb.home(), Some(&config(&sb, "")), sb.path());
    let spec = chain(&sb, 1, "c");
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let server = &server;
                let spec = spec.clone();
                s.spawn(move || {
                    let r = server.post_json(
                        "/v1/runs",
                        None,
                        &json!({"spec": spec, "params": {"tag": format!("t{i}")}}),
                    );
                    assert_eq!(r.status, 201, "{}", r.text());
                    r.json()["id"].as_str().unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 50);
    for id in &ids {
        let events = server.events(id, None);
        let run = server.get(&format!("/v1/runs/{id}"), None).json();
        assert_eq!(events.last().unwrap().1["status"], "succeeded", "{run:#}");
    }
    // Paginated listing: every run exactly once.
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = server
            .get(&format!("/v1/runs?limit=20&cursor={cursor}"), None)
            .json();
        for r in page["runs"].as_array().unwrap() {
            assert_eq!(r["status"], "succeeded");
            listed.push(r["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    listed.sort();
    assert_eq!(listed, unique);
    let metrics = server.get("/metrics", None).text();
    assert!(
        metrics.contains("sluice_runs{status=\"succeeded\"} 50\n"),
        "{metrics}"
    );
}

#[test]
fn kill_9_mid_run_then_restart_resumes_from_the_cache() {
    let sb = Sandbox::new();
    let cfg = config(&sb, "");
    let mut server = Server::start(&sb.home(), Some(&cfg), sb.path());
    sb.write("in.txt", "x\n");
    let spec = format!(
        "name = \"crash\"\n[sources]\nt = \"in.txt\"\n\
         [steps.first]\ncomponent = {a}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"done\" }}\noutputs = [\"out\"]\n\
         [steps.second]\ncomponent = {h}\ninputs = {{ in = \"first.out\" }}\nparams = {{ mode = \"spin\" }}\noutputs = [\"out\"]\nlimits = {{ timeout_s = 2, fuel = 10000000000000 }}\n",
        a = toml_path(&component("append")),
        h = toml_path(&component("hostile")),
    );
    let id = submit(&server, None, &spec);
    let mut first_out = String::new();
    server.each_event(&id, None, |event, data| {
        if event == "step" && data["name"] == "first" && data["status"] == "succeeded" {
            first_out = data["report"]["outputs"]["out"]["digest"]
                .as_str()
                .unwrap()
                .to_string();
        }
        !(event == "step" && data["name"] == "second" && data["status"] == "running")
    });
    // `first`'s blob is published (renamed into place) by the store's
    // publisher thread; kill only once it is, so its cache entry is usable.
    let hex = first_out.trim_start_matches("sha256:");
    let blob = sb
        .home()
        .join("store/sha256")
        .join(&hex[..2])
        .join(&hex[2..]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !blob.is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            blob.display()
        );
        std::thread::yield_now();
    }
    server.kill();

    let server = Server::start(&sb.home(), Some(&cfg), sb.path());
    let events = server.events(&id, None);
    assert_eq!(finals(&events), ["first=cached", "second=failed"]);
    let run = server.get(&format!("/v1/runs/{id}"), None).json();
    assert_eq!(run["status"], "failed");
    let message = run["error"]["message"].as_str().unwrap();
    assert!(
        message
            .contains("step `second` failed: limit: time: step `second` ran past its 2 s timeout"),
        "{message}"
    );
    // The resumed record verifies.
    assert_eq!(
        server.get(&format!("/v1/runs/{id}/verify"), None).json()["verdict"],
        "intact"
    );
}

#[test]
fn a_corrupt_index_entry_quarantines_only_that_run() {
    let sb = Sandbox::new();
    let cfg = config(&sb, "");
    let spec = chain(&sb, 1, "q");
    let (good, bad) = {
        let server = Server::start(&sb.home(), Some(&cfg), sb.path());
        let good = submit(&server, None, &spec);
        let bad = submit(&server, None, &spec);
        for id in [&good, &bad] {
            server.events(id, None);
        }
        (good, bad)
    };
    // Mark both unfinished, then corrupt one entry's request.
    let db = rusqlite::Connection::open(sb.home().join("server/index.sqlite")).unwrap();
    db.execute("UPDATE runs SET status = 'running'", [])
        .unwrap();
    db.execute(
        "UPDATE runs SET request = '{\"kind\": 7' WHERE id = ?1",
        [&bad],
    )
    .unwrap();
    drop(db);
    let server = Server::start(&sb.home(), Some(&cfg), sb.path());
    server.events(&good, None);
    let g = server.get(&format!("/v1/runs/{good}"), None).json();
    assert_eq!(g["status"], "succeeded");
    let b = server.get(&format!("/v1/runs/{bad}"), None).json();
    assert_eq!(b["status"], "failed");
    assert_eq!(b["error"]["code"], "quarantined");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("corrupt run entry: request:")
    );
    assert_eq!(server.get("/healthz", None).json()["status"], "ok");
}

/// Prometheus text format: comments, or `name{labels} value`.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(name.starts_with("sluice_"), "{line}");
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{line}"
        );
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            typed.contains(name) || typed.contains(base),
            "untyped sample {line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
        samples.push((
            series.to_string(),
            value.parse().unwrap_or_else(|_| panic!("{line}")),
        ));
    }
    samples
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let sb = Sandbox::new();
    let server = Server::start(&sb.home(), Some(&config(&sb, "")), sb.path());
    let id = submit(&server, None, &chain(&sb, 2, "m"));
    server.events(&id, None);
    let r = server.get("/metrics", None);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let samples = parse_prometheus(&r.text());
    let value = |s: &str| {
        samples
            .iter()
            .find(|(k, _)| k == s)
            .unwrap_or_else(|| panic!("no {s}"))
            .1
    };
    assert_eq!(value("sluice_runs{status=\"succeeded\"}"), 1.0);
    assert_eq!(value("sluice_steps_total{status=\"succeeded\"}"), 2.0);
    assert_eq!(value("sluice_step_duration_seconds_count"), 2.0);
    assert_eq!(
        value("sluice_step_duration_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );
    assert_eq!(value("sluice_run_queue_depth"), 0.0);
    assert!(value("sluice_store_bytes") > 0.0);
    // No NVML here: the availability gauge says so, and no device gauges.
    assert_eq!(value("sluice_gpu_telemetry_available"), 0.0);
    assert!(
        !samples
            .iter()
            .any(|(k, _)| k.starts_with("sluice_gpu_memory"))
    );
}

#[test]
fn a_service_configured_for_the_process_executor_runs_steps_there_and_counts_them() {
    let sb = Sandbox::new();
    let config = config(&sb, "[executor]\nkind = \"process\"\n");
    let server = Server::start(&sb.home(), Some(&config), sb.path());
    let id = submit(&server, None, &chain(&sb, 2, "x"));
    server.events(&id, None);
    let run = server.get(&format!("/v1/runs/{id}"), None).json();
    assert_eq!(run["status"], "succeeded", "{run:#}");
    for name in ["s0", "s1"] {
        let report = &step(&run, name)["report"];
        assert_eq!(report["status"], "succeeded", "{report:#}");
        assert_eq!(report["executor"], "process", "{report:#}");
    }
    let samples = parse_prometheus(&server.get("/metrics", None).text());
    let value = |k: &str| samples.iter().find(|(s, _)| s == k).map(|(_, v)| *v);
    assert_eq!(
        value("sluice_steps_executed_total{executor=\"process\"}"),
        Some(2.0)
    );
    assert_eq!(
        value("sluice_steps_executed_total{executor=\"local\"}"),
        Some(0.0)
    );
    assert_eq!(
        value("sluice_steps_executed_total{executor=\"ray\"}"),
        Some(0.0)
    );
    assert_eq!(
        value("sluice_steps_executed_total{executor=\"kubernetes\"}"),
        Some(0.0)
    );
}

#[test]
fn without_tokens_the_server_refuses_a_public_address() {
    let sb = Sandbox::new();
    let run = sb.sluice(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "refusing to listen on 0.0.0.0:0 without tokens: configure [[tokens]] in the config file, or listen on a loopback address"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn git_hook_route_verifies_signatures_and_dedupes_deliveries() {
    let sb = Sandbox::new();
    let spec = chain(&sb, 1, "h");
    sb.write(
        "hooked.toml",
        &spec.replace("tag = \"h\"", "tag = \"h\"\ncommit = \"none\""),
    );
    let cfg = config(
        &sb,
        "[hooks.main]\nsecret = \"It's a Secret to Everybody\"\npipeline = \"hooked.toml\"\ncommit_param = \"commit\"\nbranches = [\"main\"]\n",
    );
    let server = Server::start(&sb.home(), Some(&cfg), sb.path());
    let body = br#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":{"full_name":"o/r"}}"#;
    let good = sluice_engine::hook::sign(b"It's a Secret to Everybody", body);
    let post = |sig: Option<&str>, delivery: &str| {
        let mut headers = vec![
            ("X-GitHub-Delivery", delivery),
            ("Content-Type", "application/json"),
        ];
        if let Some(s) = sig {
            headers.push(("X-Hub-Signature-256", s));
        }
        server.request_with("POST", "/v1/hooks/git", None, Some(body), &headers)
    };
    post(None, "d1").error(401, "unauthorized");
    post(Some("sha256=00"), "d1").error(401, "unauthorized");
    assert_eq!(server.get("/v1/runs", None).json()["runs"], json!([]));
    let started = post(Some(&good), "d1");
    assert_eq!(started.status, 201, "{}", started.text());
    let id = started.json()["id"].as_str().unwrap().to_string();
    post(Some(&good), "d1").error(409, "conflict");
    server.events(&id, None);
    let runs = server.get("/v1/runs", None).json();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
    assert_eq!(runs["runs"][0]["trigger"], "hook:main");
    assert_eq!(
        runs["runs"][0]["params"]["commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
}

#[test]
fn uploaded_components_are_validated_and_private_to_their_tenant() {
    let sb = Sandbox::new();
    let server = Server::start(&sb.home(), Some(&config(&sb, &tokens())), sb.path());
    let msg = server
        .request("PUT", "/v1/components", Some(ALICE), Some(b"\0asm garbage"))
        .error(422, "invalid");
    assert!(msg.starts_with("not a sluice:step component"), "{msg}");
    let wasm = std::fs::read(component("append")).unwrap();
    // Over the 64 KiB test body limit.
    assert!(wasm.len() > 65536);
    server
        .request("PUT", "/v1/components", Some(ALICE), Some(&wasm))
        .error(413, "too_large");
}

#[test]
fn uploaded_component_runs_by_digest() {
    let sb = Sandbox::new();
    let cfg = config(&sb, &tokens()).to_str().unwrap().to_string();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max_body_bytes = 65536", "max_body_bytes = 16777216");
    std::fs::write(&cfg, text).unwrap();
    let server = Server::start(&sb.home(), Some(Path::new(&cfg)), sb.path());
    let wasm = std::fs::read(component("append")).unwrap();
    let up = server.request("PUT", "/v1/components", Some(ALICE), Some(&wasm));
    assert_eq!(up.status, 201, "{}", up.text());
    let digest = up.json()["digest"].as_str().unwrap().to_string();
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&wasm)));
    sb.write("in.txt", "start\n");
    let spec = format!(
        "name = \"up\"\n[sources]\nt = \"in.txt\"\n[steps.a]\ncomponent = \"{digest}\"\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"y\" }}\noutputs = [\"out\"]\n"
    );
    let id = submit(&server, Some(ALICE), &spec);
    assert_eq!(
        server.events(&id, Some(ALICE)).last().unwrap().1["status"],
        "succeeded"
    );
    // Another tenant cannot run it by digest.
    let msg = server
        .post_json("/v1/runs", Some(CAROL), &json!({"spec": spec}))
        .error(422, "invalid");
    assert!(msg.contains("no component sha256:"), "{msg}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn cron_schedules_fire_as_normal_runs() {
    let sb = Sandbox::new();
    let spec = chain(&sb, 1, "cron").replace(
        "name = \"chain\"\n",
        "name = \"nightly\"\n[schedule]\ncron = \"* * * * * *\"\n",
    );
    sb.write("nightly.toml", &spec);
    let cfg = config(&sb, "scheduled = [\"nightly.toml\"]\n");
    let server = Server::start(&sb.home(), Some(&cfg), sb.path());
    server.stderr_line(
        "scheduled nightly.toml at `* * * * * *`",
        Duration::from_secs(30),
    );
    let fired = server.stderr_line("schedule nightly.toml fired at", Duration::from_secs(30));
    let id = fired.rsplit("run ").next().unwrap().to_string();
    assert_eq!(
        server.events(&id, None).last().unwrap().1["status"],
        "succeeded"
    );
    let run = server.get(&format!("/v1/runs/{id}"), None).json();
    assert_eq!(run["trigger"], "schedule:nightly.toml");
    assert_eq!(run["pipeline"], "nightly");
}

#[test]
fn a_bad_cron_expression_is_a_positioned_spec_error() {
    let sb = Sandbox::new();
    let spec = chain(&sb, 1, "x").replace(
        "name = \"chain\"\n",
        "name = \"chain\"\n[schedule]\ncron = \"every night\"\nat = 3\n",
    );
    let path = sb.write("bad.toml", &spec);
    let run = sb.sluice_raw(&["validate", path.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("bad.toml:3:8: schedule `cron`: \"every night\" is not a cron expression"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("bad.toml:4:1: unknown field `at` in [schedule]; expected one of: cron"),
        "{}",
        run.stderr
    );
}

#[test]
fn sigterm_stops_cleanly_and_records_the_run_as_cancelled() {
    let sb = Sandbox::new();
    let cfg = config(&sb, "");
    let mut server = Server::start(&sb.home(), Some(&cfg), sb.path());
    let id = submit(&server, None, &spin_spec(&sb));
    let mut ended = None;
    server.each_event(&id, None, |event, data| {
        if event == "step" && data["status"] == "running" {
            let status = std::process::Command::new("kill")
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
    server.stderr_line("sluice: stopped", Duration::from_secs(30));

    let server = Server::start(&sb.home(), Some(&cfg), sb.path());
    let run = server.get(&format!("/v1/runs/{id}"), None).json();
    assert_eq!(run["status"], "cancelled");
    assert_eq!(
        run["error"]["message"],
        "the server shut down; steps not yet started were skipped"
    );
    assert_eq!(
        server.get(&format!("/v1/runs/{id}/verify"), None).json()["verdict"],
        "intact"
    );
}

#[test]
fn a_slow_client_is_dropped_and_blocks_no_one() {
    use std::io::{Read, Write};
    let sb = Sandbox::new();
    let server = Server::start(
        &sb.home(),
        Some(&config(&sb, "header_read_timeout_ms = 300\n")),
        sb.path(),
    );
    let mut slow = server.connect();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Others are served meanwhile.
    assert_eq!(server.get("/healthz", None).json()["status"], "ok");
    // The slow head is cut off: the server closes the connection.
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[test]
fn the_rate_limit_answers_429_per_token() {
    let sb = Sandbox::new();
    let server = Server::start(
        &sb.home(),
        Some(&config(
            &sb,
            &format!("rate_limit_per_minute = 3\n{}", tokens()),
        )),
        sb.path(),
    );
    for _ in 0..3 {
        assert_eq!(server.get("/v1/whoami", Some(ALICE)).status, 200);
    }
    let r = server.get("/v1/whoami", Some(ALICE));
    let msg = r.error(429, "rate_limited");
    assert_eq!(msg, "over the limit of 3 requests per minute");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Another token has its own budget.
    assert_eq!(server.get("/v1/whoami", Some(BOB)).status, 200);
}

#[test]
fn runs_beyond_the_concurrency_limit_wait_queued() {
    let sb = Sandbox::new();
    let server = Server::start(
        &sb.home(),
        Some(&config(&sb, "max_concurrent_runs = 1\n")),
        sb.path(),
    );
    let blocker = submit(&server, None, &spin_spec(&sb));
    server.each_event(&blocker, None, |event, data| {
        !(event == "step" && data["status"] == "running")
    });
    let queued: Vec<String> = (0..2)
        .map(|i| submit(&server, None, &chain(&sb, 1, &format!("q{i}"))))
        .collect();
    let listed = server.get("/v1/runs?status=queued", None).json();
    let mut ids: Vec<&str> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want: Vec<&str> = queued.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(ids, want);
    let metrics = server.get("/metrics", None).text();
    assert!(
        metrics.contains("\nsluice_run_queue_depth 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nsluice_runs{status=\"queued\"} 2\n"),
        "{metrics}"
    );
    // Freeing the slot lets them run.
    assert_eq!(
        server
            .request("POST", &format!("/v1/runs/{blocker}/cancel"), None, None)
            .status,
        202
    );
    for id in &queued {
        assert_eq!(
            server.events(id, None).last().unwrap().1["status"],
            "succeeded"
        );
    }
}

#[path = "server_hardening.rs"]
mod hardening;
