//! The service under a hostile client (HOSTILE.md 10, 22, 23): slow bodies,
//! one address hoarding connections, token guessing, webhook replays,
//! replays and uploads past the server's slots.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{ALICE, chain, config, spin_spec, submit, tokens};
use crate::harness::Sandbox;
use crate::http::{Response, Server, read_response};

const SECRET: &str = "It's a Secret to Everybody";

/// A config with one hook `main` on a one-step chain.
fn hook_config(sb: &Sandbox, extra: &str) -> std::path::PathBuf {
    let spec = chain(sb, 1, "h");
    sb.write(
        "hooked.toml",
        &spec.replace("tag = \"h\"", "tag = \"h\"\ncommit = \"none\""),
    );
    config(
        sb,
        &format!(
            "{extra}[hooks.main]\nsecret = \"{SECRET}\"\npipeline = \"hooked.toml\"\ncommit_param = \"commit\"\nbranches = [\"main\"]\n"
        ),
    )
}

fn push_body(commit: &str) -> Vec<u8> {
    format!(r#"{{"ref":"refs/heads/main","after":"{commit}","repository":{{"full_name":"o/r"}}}}"#)
        .into_bytes()
}

/// Sends a request head announcing a `length`-byte body, then `sent` of it.
fn start_body(server: &Server, s: &mut TcpStream, path: &str, length: usize, sent: &[u8]) {
    let sig = sluice_engine::hook::sign(SECRET.as_bytes(), b"whatever");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nX-Hub-Signature-256: {sig}\r\nX-GitHub-Delivery: slow\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        server.addr
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(sent).unwrap();
}

/// Reads the answer to a cut-off request, then asserts the server closed
/// the connection.
fn cut_off(s: TcpStream) -> Response {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s);
    let response = read_response(&mut r);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("the server closes the connection");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    response
}

#[test]
fn slow_bodies_are_cut_off_on_every_route_while_healthz_answers() {
    let sb = Sandbox::new();
    let cfg = hook_config(
        &sb,
        "body_idle_timeout_ms = 2000\nbody_read_timeout_ms = 4000\nmax_connections_per_peer = 400\n",
    );
    let server = Server::start(&sb.home(), Some(&cfg), sb.path());
    // 300 clients announce a body and send one byte of it: half at the
    // unauthenticated hook (well-formed headers, so it reads), half at
    // run submission (no tokens: anonymous admin).
    let mut idle: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut s = server.connect();
            let path = if i % 2 == 0 {
                "/v1/hooks/git?hook=main"
            } else {
                "/v1/runs"
            };
            start_body(&server, &mut s, path, 1000, b"{");
            s
        })
        .collect();
    // Others are served while they hang.
    let health = server.get("/healthz", None);
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "ok");
    // Three more trickle a byte every 200 ms: never idle, but over the
    // total budget.
    let mut trickling: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = server.connect();
            start_body(&server, &mut s, "/v1/runs", 1000, b"{");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answered = Vec::new();
    while !trickling.is_empty() {
        assert!(
            Instant::now() < deadline,
            "trickling bodies were never cut off"
        );
        let mut still = Vec::new();
        for mut s in trickling {
            let mut first = [0u8; 1];
            match s.read(&mut first) {
                // Nothing yet after 200 ms: send the next byte.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    s.write_all(b" ").unwrap();
                    still.push(s);
                }
                Ok(1) => {
                    assert_eq!(first[0], b'H');
                    let mut rest = TcpStream::try_clone(&s).unwrap();
                    rest.set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    let mut text = vec![b'H'];
                    rest.read_to_end(&mut text).unwrap();
                    answered.push(String::from_utf8_lossy(&text).to_string());
                }
                // Cut off while a byte was in flight: the close raced it.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("unexpected read: {other:?}"),
            }
        }
        trickling = still;
    }
    for text in &answered {
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(
            text.contains(r#""code":"timeout""#)
                && text.contains("the request body did not arrive within 4000 ms"),
            "{text}"
        );
    }
    // Every idle one is answered 408 and closed.
    for s in idle.drain(..) {
        let msg = cut_off(s).error(408, "timeout");
        assert_eq!(msg, "no request body bytes arrived for 2000 ms");
    }
    assert_eq!(server.get("/healthz", None).status, 200);
    // No run was started by any of them.
    assert_eq!(server.get("/v1/runs", None).json()["runs"], json!([]));
}

#[test]
fn one_address_cannot_take_every_connection() {
    let sb = Sandbox::new();
    let cfg = config(
        &sb,
        "max_connections = 9\nmax_connections_per_peer = 8\nheader_read_timeout_ms = 60000\n",
    );
    let server = Server::start(&sb.home(), Some(&cfg), sb.path());
    let keep_alive = |s: &TcpStream| {
        let head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
        (&*s).write_all(head.as_bytes()).unwrap();
        read_response(BufReader::new(s)).status
    };
    // 8 open connections from 127.0.0.1, each known to be accepted (it was
    // answered) and kept alive.
    let mut held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let s = server.connect_from("127.0.0.1");
            assert_eq!(keep_alive(&s), 200);
            s
        })
        .collect();
    // A ninth from the same address is refused and closed...
    let msg = cut_off(server.connect_from("127.0.0.1")).error(429, "rate_limited");
    assert_eq!(
        msg,
        "too many connections from 127.0.0.1: at most 8 per address"
    );
    // ...while another address still gets the last connection.
    let other = server.request_via(
        server.connect_from("127.0.0.2"),
        "GET",
        "/healthz",
        None,
        None,
        &[],
    );
    assert_eq!(other.status, 200, "{}", other.text());
    // Closing one frees its place (the server notices the close shortly).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Send nothing until accepted: a refused connection is answered
        // at once, an accepted one waits for its request head.
        let s = server.connect_from("127.0.0.1");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut first = [0u8; 1];
        match (&s).read(&mut first) {
            Ok(1) => {
                assert!(
                    Instant::now() < deadline,
                    "the closed connection's place was never freed"
                );
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("unexpected read: {other:?}"),
        }
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(keep_alive(&s), 200);
        break;
    }
}

#[test]
fn wrong_token_guesses_are_limited_per_address() {
    let sb = Sandbox::new();
    let cfg = config(&sb, &format!("auth_failures_per_minute = 3\n{}", tokens()));
    let server = Server::start(&sb.home(), Some(&cfg), sb.path());
    let from = |ip: &str, token: &str| {
        server.request_via(
            server.connect_from(ip),
            "GET",
            "/v1/whoami",
            Some(token),
            None,
            &[],
        )
    };
    for i in 0..3 {
        let msg = from("127.0.0.1", &format!("guess-{i:016}")).error(401, "unauthorized");
        assert_eq!(msg, "unknown token");
    }
    // The address is out of failures: even a right token waits now.
    let r = from("127.0.0.1", ALICE);
    let msg = r.error(429, "rate_limited");
    assert_eq!(
        msg,
        "too many failed authentications from 127.0.0.1: at most 3 per minute"
    );
    // One failure comes back every 20 s.
    assert_eq!(r.header("retry-after"), Some("20"));
    // Another address is not affected.
    assert_eq!(from("127.0.0.2", ALICE).json()["tenant"], "a");
}

#[test]
fn a_signed_hook_payload_starts_one_run_whatever_its_delivery_id() {
    let sb = Sandbox::new();
    let server = Server::start(&sb.home(), Some(&hook_config(&sb, "")), sb.path());
    let post = |body: &[u8], delivery: &str| {
        let sig = sluice_engine::hook::sign(SECRET.as_bytes(), body);
        server.request_with(
            "POST",
            "/v1/hooks/git",
            None,
            Some(body),
            &[
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &sig),
                ("Content-Type", "application/json"),
            ],
        )
    };
    let runs = || {
        server.get("/v1/runs", None).json()["runs"]
            .as_array()
            .unwrap()
            .len()
    };
    let body = push_body("0123456789abcdef0123456789abcdef01234567");
    let first = post(&body, "d1");
    assert_eq!(first.status, 201, "{}", first.text());
    server.events(first.json()["id"].as_str().unwrap(), None);
    // The captured body replayed under a fresh delivery id.
    for delivery in ["d2", "d1"] {
        let msg = post(&body, delivery).error(409, "conflict");
        assert_eq!(
            msg,
            "hook `main`: this signed payload was already delivered (first as `d1`); a repeated payload starts no run, whatever its delivery id"
        );
    }
    assert_eq!(runs(), 1);
    // A different push runs.
    let other = post(&push_body("1123456789abcdef0123456789abcdef01234567"), "d3");
    assert_eq!(other.status, 201, "{}", other.text());
    assert_eq!(runs(), 2);
}

#[test]
fn the_hook_checks_its_headers_before_reading_a_body() {
    let sb = Sandbox::new();
    let server = Server::start(&sb.home(), Some(&hook_config(&sb, "")), sb.path());
    // Each announces a body it never sends: the answer cannot have waited
    // for it.
    let ask = |path: &str, headers: &str| {
        let mut s = server.connect();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: 1000\r\n\r\n",
            server.addr
        );
        s.write_all(head.as_bytes()).unwrap();
        cut_off(s)
    };
    let msg = ask("/v1/hooks/git?hook=nope", "").error(404, "not_found");
    assert_eq!(msg, "no hook `nope`");
    let bare = Sandbox::new();
    let no_hooks = Server::start(&bare.home(), Some(&config(&bare, "")), bare.path());
    let msg = no_hooks
        .request("POST", "/v1/hooks/git", None, Some(b"{}"))
        .error(404, "not_found");
    assert_eq!(msg, "no hooks are configured on this server");
    let msg = ask("/v1/hooks/git", "X-GitHub-Delivery: d\r\n").error(401, "unauthorized");
    assert_eq!(msg, "hook `main`: no X-Hub-Signature-256 header");
    let msg = ask(
        "/v1/hooks/git",
        "X-GitHub-Delivery: d\r\nX-Hub-Signature-256: sha256=00\r\n",
    )
    .error(401, "unauthorized");
    assert_eq!(
        msg,
        "hook `main`: signature must be `sha256=<64 hex digits>`"
    );
    let sig = sluice_engine::hook::sign(SECRET.as_bytes(), b"x");
    let msg =
        ask("/v1/hooks/git", &format!("X-Hub-Signature-256: {sig}\r\n")).error(400, "bad_request");
    assert_eq!(msg, "missing X-GitHub-Delivery or X-Gitea-Delivery header");
    // Over the 1 MiB hook limit by its declared length alone.
    let mut s = server.connect();
    let head = format!(
        "POST /v1/hooks/git HTTP/1.1\r\nHost: {}\r\nX-GitHub-Delivery: d\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        (1 << 20) + 1
    );
    s.write_all(head.as_bytes()).unwrap();
    let msg = cut_off(s).error(413, "too_large");
    assert_eq!(msg, "the request body is over the limit of 1048576 bytes");
}

#[test]
fn http_replays_take_a_run_slot_and_a_step_slot() {
    let sb = Sandbox::new();
    let cfg = config(
        &sb,
        "max_concurrent_runs = 2\nmax_running_steps = 1\n# The test polls /metrics.\nrate_limit_per_minute = 1000000\n",
    );
    let server = Server::start(&sb.home(), Some(&cfg), sb.path());
    let done = submit(&server, None, &chain(&sb, 1, "r"));
    assert_eq!(
        server.events(&done, None).last().unwrap().1["status"],
        "succeeded"
    );
    // A spinning run holds the one step slot (and one of two run slots).
    let blocker = submit(&server, None, &spin_spec(&sb));
    server.each_event(&blocker, None, |event, data| {
        !(event == "step" && data["status"] == "running")
    });
    let replay = format!("/v1/runs/{done}/replay");
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| server.request("POST", &replay, None, None));
        // The replay took the second run slot and waits for the step slot.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server
            .get("/metrics", None)
            .text()
            .contains("\nsluice_steps_waiting 1\n")
        {
            assert!(
                Instant::now() < deadline,
                "the replay never waited for a step slot"
            );
        }
        // No run slot is left for another replay.
        let r = server.request("POST", &replay, None, None);
        let msg = r.error(503, "busy");
        assert_eq!(
            msg,
            format!("all 2 run slots are taken; replay run `{done}` later")
        );
        assert_eq!(r.header("retry-after"), Some("1"));
        let cancel = server.request("POST", &format!("/v1/runs/{blocker}/cancel"), None, None);
        assert_eq!(cancel.status, 202, "{}", cancel.text());
        let answered = waiting.join().unwrap();
        assert_eq!(answered.status, 200, "{}", answered.text());
        assert_eq!(answered.json()["verdict"], "identical");
    });
}

#[test]
fn component_uploads_beyond_the_limit_are_busy() {
    let sb = Sandbox::new();
    let cfg = config(
        &sb,
        &format!(
            "max_concurrent_uploads = 1\n# The test polls /metrics.\nrate_limit_per_minute = 1000000\n{}",
            tokens()
        ),
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max_body_bytes = 65536", "max_body_bytes = 16777216");
    std::fs::write(&cfg, text).unwrap();
    let server = Server::start(&sb.home(), Some(&cfg), sb.path());
    let wasm = std::fs::read(crate::harness::component("append")).unwrap();
    // The first upload is in progress: half its body sent.
    let mut first = server.connect();
    let head = format!(
        "PUT /v1/components HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        wasm.len()
    );
    first.write_all(head.as_bytes()).unwrap();
    first.write_all(&wasm[..wasm.len() / 2]).unwrap();
    // Once its handler holds the one upload slot, another upload is refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server
        .get("/metrics", Some(ALICE))
        .text()
        .contains("\nsluice_uploads_in_progress 1\n")
    {
        assert!(Instant::now() < deadline, "the upload slot was never taken");
    }
    let r = server.request("PUT", "/v1/components", Some(ALICE), Some(b"\0asm junk"));
    let msg = r.error(503, "busy");
    assert_eq!(
        msg,
        "1 component uploads are in progress, the most this server takes at once; retry later"
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    first.write_all(&wasm[wasm.len() / 2..]).unwrap();
    let r = read_response(BufReader::new(first));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // The slot is free again.
    server
        .request("PUT", "/v1/components", Some(ALICE), Some(b"\0asm junk"))
        .error(422, "invalid");
}
