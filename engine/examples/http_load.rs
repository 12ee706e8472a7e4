//! A small closed-loop HTTP/1.1 load generator for `bench/http.sh`:
//! `C` keep-alive connections each send `GET PATH` back to back for `S`
//! seconds; prints requests/s and latency percentiles as one JSON line.
//!
//! ```sh
//! cargo run --release --example http_load -- 127.0.0.1:7878 /v1/runs/ID 4 5 [TOKEN]
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: http_load ADDR PATH CONNECTIONS SECONDS [TOKEN]");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let path = args[2].clone();
    let connections: usize = args[3].parse().expect("CONNECTIONS");
    let seconds: f64 = args[4].parse().expect("SECONDS");
    let token = args.get(5).cloned();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let results: Vec<(Vec<u32>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections)
            .map(|_| {
                let (addr, path, token) = (addr.clone(), path.clone(), token.clone());
                s.spawn(move || worker(&addr, &path, token.as_deref(), until))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies: Vec<u32> = results
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    let errors: u64 = results.iter().map(|(_, e)| e).sum();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"path\":{:?},\"connections\":{connections},\"requests\":{},\"errors\":{errors},\"rps\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
        path,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
}

/// One connection's loop: latencies (µs) of 200 answers, and the count of
/// anything else.
fn worker(addr: &str, path: &str, token: Option<&str>, until: Instant) -> (Vec<u32>, u64) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n");
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut body = Vec::new();
    while Instant::now() < until {
        let t = Instant::now();
        writer.write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let ok = line.split_whitespace().nth(1) == Some("200");
        let mut length = 0usize;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        body.resize(length, 0);
        reader.read_exact(&mut body).unwrap();
        if ok {
            latencies.push(t.elapsed().as_micros() as u32);
        } else {
            errors += 1;
        }
    }
    (latencies, errors)
}
