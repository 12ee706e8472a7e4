//! A hostile step for the sandbox tests (HOSTILE.md groups 1–8). The `mode`
//! parameter picks one attack; every mode that is not stopped by the engine
//! reports what it observed in its `out` output so tests can assert it.

use std::hint::black_box;
use std::io::{Read, Write};

use sluice_guest::{Ctx, Result, bail};

fn run(ctx: &mut Ctx) -> Result<()> {
    let mode: String = ctx.param("mode")?;
    match mode.as_str() {
        // Group 2: grow linear memory until the limit stops us.
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut block = vec![0u8; 1 << 20];
                block[0] = hoard.len() as u8;
                hoard.push(black_box(block));
            }
        }
        // Group 3: a tight loop with no host calls.
        "spin" => {
            let mut x: u64 = black_box(1);
            loop {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        // Group 3: a loop of bulk memory copies, one `memory.copy`
        // instruction each: unless it costs fuel by the byte, this burns
        // wall time ~10^7 times faster than fuel, and a deadline looked at
        // only every so much fuel would be reached hours late.
        "bulk-copy" => {
            let mut bytes = vec![0u8; 32 << 20];
            loop {
                bytes.copy_within(0..16 << 20, 16 << 20);
                bytes = black_box(bytes);
            }
        }
        // Group 3: a loop that keeps calling the host.
        "spin-host" => loop {
            black_box(ctx.params());
        },
        // Group 4: unbounded recursion.
        "recurse" => {
            #[allow(unconditional_recursion)]
            fn deep(n: u64) -> u64 {
                black_box(deep(black_box(n + 1)) + 1)
            }
            black_box(deep(0));
            Ok(())
        }
        // Group 5: an output larger than the output limit.
        "output-flood" => {
            let mut out = ctx.output("out", "application/octet-stream")?;
            let chunk = vec![b'x'; 1 << 20];
            loop {
                out.write_all(&chunk)?;
            }
        }
        // Group 5: unbounded stdout.
        "stdout-flood" => {
            let line = "\x1b[31mflood\x1b[0m ".repeat(64);
            loop {
                println!("{line}");
            }
        }
        // Group 1: escape attempts through WASI paths and artifact names.
        "escape" => {
            let mut report = String::new();
            for path in [
                "/etc/passwd",
                "../../../etc/passwd",
                ".",
                "/",
                "//etc//passwd",
            ] {
                let outcome = match std::fs::read(path) {
                    Ok(bytes) => format!("READ {} bytes", bytes.len()),
                    Err(_) => "denied".to_string(),
                };
                report.push_str(&format!("fs {path}: {outcome}\n"));
            }
            for name in ["../in", "/etc/passwd", "in/..", "in\0", "", "sources.raw"] {
                let outcome = match ctx.input(name) {
                    Ok(_) => "OPENED".to_string(),
                    Err(e) => format!("refused: {e}"),
                };
                report.push_str(&format!("input {name:?}: {outcome}\n"));
            }
            for name in ["../out", "/tmp/x", "undeclared"] {
                let outcome = match ctx.output(name, "text/plain") {
                    Ok(_) => "CREATED".to_string(),
                    Err(e) => format!("refused: {e}"),
                };
                report.push_str(&format!("output {name:?}: {outcome}\n"));
            }
            let env: Vec<(String, String)> = std::env::vars().collect();
            report.push_str(&format!("env vars: {}\n", env.len()));
            let mut out = ctx.output("out", "text/plain")?;
            out.write_all(report.as_bytes())?;
            out.finish()?;
            Ok(())
        }
        // Group 1: the network through `wasi:sockets` (Rust's std::net on
        // wasip2 imports it, as componentize-py's output does). Each use
        // must fail at run time; the step goes on and reports.
        "network" => {
            let port: u16 = ctx.param("port")?;
            let mut report = String::new();
            let outcome = |r: std::io::Result<String>| match r {
                Ok(what) => what,
                Err(e) => format!("refused ({:?})", e.kind()),
            };
            let connect =
                std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| "CONNECTED".to_string());
            report.push_str(&format!(
                "tcp connect 127.0.0.1:{port}: {}\n",
                outcome(connect)
            ));
            let listen = std::net::TcpListener::bind(("127.0.0.1", 0)).map(|_| "BOUND".to_string());
            report.push_str(&format!("tcp bind: {}\n", outcome(listen)));
            let udp = std::net::UdpSocket::bind(("127.0.0.1", 0)).and_then(|s| {
                s.send_to(b"x", ("127.0.0.1", port))
                    .map(|n| format!("SENT {n} bytes"))
            });
            report.push_str(&format!("udp send: {}\n", outcome(udp)));
            let lookup = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", port))
                .map(|a| format!("RESOLVED {} addresses", a.count()));
            report.push_str(&format!("dns localhost: {}\n", outcome(lookup)));
            let mut out = ctx.output("out", "text/plain")?;
            out.write_all(report.as_bytes())?;
            out.finish()?;
            Ok(())
        }
        // Group 6: host-call abuse on handles.
        "finish-twice" => {
            let mut out = ctx.output("out", "text/plain")?;
            out.write_all(b"once")?;
            out.finish()?;
            match ctx.output("out", "text/plain") {
                Ok(_) => bail!("created `out` twice"),
                Err(e) => bail!("second create refused: {e}"),
            }
        }
        // Group 8: reads clocks and random; the output must replay identically.
        "nondeterminism" => {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let start = std::time::Instant::now();
            let elapsed = start.elapsed().as_nanos();
            let mut random = [0u8; 16];
            getrandom_via_hashmap(&mut random);
            let mut out = ctx.output("out", "text/plain")?;
            writeln!(out, "wall={wall} elapsed={elapsed} random={random:?}")?;
            out.finish()?;
            Ok(())
        }
        // Group 2/6: raw host calls with hostile arguments, bypassing the SDK.
        "handle-abuse" => {
            use sluice_guest::bindings::sluice::step::artifacts;
            let mut report = String::new();
            let reader =
                artifacts::open("in").map_err(|e| sluice_guest::Error::msg(format!("{e:?}")))?;
            let chunk = reader.read(u64::MAX);
            report.push_str(&format!(
                "read(u64::MAX) -> {} bytes\n",
                chunk.map(|c| c.len()).unwrap_or(0)
            ));
            drop(reader);
            let writer = artifacts::create("out", "text/plain")
                .map_err(|e| sluice_guest::Error::msg(format!("{e:?}")))?;
            writer
                .write(b"x")
                .map_err(|e| sluice_guest::Error::msg(format!("{e:?}")))?;
            let first = writer.finish();
            let second = writer.finish();
            let after = writer.write(b"more");
            report.push_str(&format!("first finish ok: {}\n", first.is_ok()));
            report.push_str(&format!("second finish: {second:?}\n"));
            report.push_str(&format!("write after finish: {after:?}\n"));
            let mut log = ctx.output("log", "text/plain")?;
            log.write_all(report.as_bytes())?;
            Ok(())
        }
        // Group 6: millions of metric calls.
        "metric-flood" => {
            for i in 0u64.. {
                ctx.metric_at("flood", i, i as f64);
            }
            Ok(())
        }
        // Non-finite metrics, which JSON cannot carry.
        "nan-metrics" => {
            ctx.metric("loss", f64::NAN);
            ctx.metric_at("curve", 3, f64::INFINITY);
            ctx.metric("fine", 1.5);
            let mut out = ctx.output("out", "text/plain")?;
            out.write_all(b"ok")?;
            Ok(())
        }
        // Fan-in: lists the members of the `models` collection.
        "inputs" => {
            let mut out = ctx.output("out", "text/plain")?;
            for a in ctx.collection("models") {
                writeln!(out, "{} {} {}", a.name, a.digest, a.size)?;
            }
            Ok(())
        }
        // Group 17: sleeps `seconds` through WASI (monotonic-clock
        // subscribe-duration + pollable.block), then reads stdin, and reports
        // how far the clocks moved. The engine must not block a host thread.
        "sleep" => {
            let seconds: u64 = ctx.param("seconds")?;
            let wall = || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            };
            let wall_before = wall();
            let before = std::time::Instant::now();
            std::thread::sleep(std::time::Duration::from_secs(seconds));
            let slept = before.elapsed();
            let wall_after = wall();
            let mut stdin = Vec::new();
            let stdin_read = std::io::stdin().read_to_end(&mut stdin);
            let mut out = ctx.output("out", "text/plain")?;
            writeln!(
                out,
                "slept_s={} wall_advanced_s={} stdin={:?}",
                slept.as_secs(),
                wall_after - wall_before,
                stdin_read.map_err(|e| e.kind())
            )?;
            Ok(())
        }
        // Group 17: sleeps a day at a time, forever: only a deadline or a
        // cancellation can end it.
        "sleep-forever" => loop {
            std::thread::sleep(std::time::Duration::from_secs(86_400));
        },
        // A step that fails on its own terms.
        "fail" => bail!("hostile step failed on purpose"),
        // Reads its input fully (used to check inputs stay intact).
        "read" => {
            let mut bytes = Vec::new();
            ctx.input("in")?.read_to_end(&mut bytes)?;
            let mut out = ctx.output("out", "text/plain")?;
            out.write_all(&bytes)?;
            Ok(())
        }
        other => bail!("unknown mode `{other}`"),
    }
}

/// Std's `RandomState` draws its keys from WASI random; hashing a fixed value
/// exposes them without a dependency on a random crate.
fn getrandom_via_hashmap(out: &mut [u8; 16]) {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(0u64);
    let b = RandomState::new().hash_one(1u64);
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
}

sluice_guest::export_step!(run);
