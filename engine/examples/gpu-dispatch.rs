//! Gpu job dispatch latency on a warm CPU worker pool.
//!
//! Submits N tiny `train-mlp` jobs one after the other through the engine's
//! [`Dispatcher`] to the reference CPU worker (this binary re-executed as
//! `gpu-dispatch worker cpu`, like `sluice worker cpu`) and prints the
//! median and p90 of
//! - dispatch: `submit` → the `run` line written to an idle worker's stdin
//!   (thread hand-off, input verification, pool checkout, serialisation);
//! - round trip: `submit` → verified, ingested result (includes the job).
//!
//! The first job starts the worker (cold start) and is reported apart.
//! Run with `bench/gpu-dispatch.sh [N]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::gpu::{Dispatcher, JobRequest, JobSpecRecord, State, WorkerConfig};
use sluice_engine::store::Store;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        sluice_cpu_worker::serve(
            std::io::BufReader::new(std::io::stdin()),
            std::io::stdout().lock(),
        )?;
        return Ok(());
    }
    let n: usize = args.first().map_or(Ok(200), |s| s.parse())?;
    anyhow::ensure!(n >= 1, "N must be at least 1");
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let store = Arc::new(Store::open(&home)?);
    // A tiny dataset in the `transform` format: the job itself is cheap.
    let mut data = String::from("{\"features\":[\"a\",\"b\"],\"classes\":[\"x\",\"y\"]}\n");
    for i in 0..16 {
        let v = f64::from(i) / 16.0;
        let y = if i % 2 == 0 { "x" } else { "y" };
        data.push_str(&format!("{{\"x\":[{v},{}],\"y\":\"{y}\"}}\n", 1.0 - v));
    }
    let (digest, _) = store.put_bytes(data.as_bytes())?;
    let dispatcher = Dispatcher::new(WorkerConfig::builtin(&home), home.join("scratch/gpu"));
    let spec = JobSpecRecord {
        worker: "cpu".into(),
        op: "train-mlp".into(),
        params: serde_json::json!({"hidden_layers": 1, "width": 4, "epochs": 1, "batch_size": 8}),
        inputs: vec![("train".into(), digest)],
        gpus: 0,
        min_free_memory_mib: 0,
        timeout_ms: None,
        seed: 42,
        deterministic: true,
    };
    let mut dispatch = Vec::with_capacity(n);
    let mut round_trip = Vec::with_capacity(n);
    let mut cold = None;
    for i in 0..=n {
        let started = Instant::now();
        let job = dispatcher.submit(JobRequest {
            id: format!("j{}", i + 1),
            spec: spec.clone(),
            min_free_memory_mib: 0,
            deadline: Duration::from_secs(60),
            store: store.clone(),
        });
        let report = job.wait();
        let rtt = started.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(
            report.state == State::Succeeded,
            "job {} {}: {}",
            report.id,
            report.state.as_str(),
            report.message.unwrap_or_default()
        );
        let d = report.dispatch_us.unwrap_or(0) as f64 / 1e3;
        if i == 0 {
            cold = Some((d, rtt));
        } else {
            anyhow::ensure!(report.warm, "job {} did not get a warm worker", report.id);
            dispatch.push(d);
            round_trip.push(rtt);
        }
    }
    dispatch.sort_by(f64::total_cmp);
    round_trip.sort_by(f64::total_cmp);
    let (cold_dispatch, cold_rtt) = cold.expect("one cold job");
    println!("gpu dispatch on a warm CPU worker pool ({n} jobs, train-mlp on 16 rows, 1 epoch)");
    println!(
        "  dispatch   (submit -> run line delivered): median {:.3} ms  p90 {:.3} ms",
        percentile(&dispatch, 0.5),
        percentile(&dispatch, 0.9)
    );
    println!(
        "  round trip (submit -> verified result):    median {:.3} ms  p90 {:.3} ms",
        percentile(&round_trip, 0.5),
        percentile(&round_trip, 0.9)
    );
    println!(
        "  cold start (spawn + hello + dispatch):     {cold_dispatch:.3} ms (round trip {cold_rtt:.3} ms)"
    );
    println!(
        "  worker processes started: {}",
        dispatcher.workers_started()
    );
    Ok(())
}
