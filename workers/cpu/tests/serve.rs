//! `serve` driven the way the engine drives it: JSON lines in, JSON lines
//! out, over in-memory pipes, with a small dataset in a temp dir.

use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_tabular::mlp::{Mlp, MlpParams};
use sluice_tabular::model::AnyModel;
use sluice_tabular::transform::DatasetWriter;

/// Long enough for any job here on a loaded machine; a hang becomes a
/// failure instead of a stuck test run.
const WAIT: Duration = Duration::from_secs(120);

/// The worker's stdin: lines the test sends, one chunk each. Before it
/// blocks for more it reports how many chunks the worker has consumed, so
/// a test can wait until a line has been fully handled by the reader.
struct Input {
    chunks: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    delivered: usize,
    consumed: Sender<usize>,
}

impl Read for Input {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.buf.len() {
            let _ = self.consumed.send(self.delivered);
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                    self.delivered += 1;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// The open end of the worker's input and how many chunks went into it.
type SinkState = Option<(Sender<Vec<u8>>, usize)>;

/// Sends lines to the worker, counting them.
#[derive(Clone)]
struct Sink(Arc<Mutex<SinkState>>);

impl Sink {
    /// Sends `bytes` as one chunk; returns how many chunks have been sent.
    fn send(&self, bytes: Vec<u8>) -> usize {
        let mut guard = self.0.lock().unwrap();
        let (tx, sent) = guard.as_mut().expect("input still open");
        tx.send(bytes).expect("worker input open");
        *sent += 1;
        *sent
    }

    fn close(&self) {
        self.0.lock().unwrap().take();
    }
}

/// Called on the worker's thread with each line it writes, before the test
/// sees it; returns a line to inject into the worker's input, which is
/// fully read before the worker continues.
type Hook = Box<dyn FnMut(&Value) -> Option<Value> + Send>;

/// The worker's stdout.
struct Output {
    partial: Vec<u8>,
    lines: Sender<Value>,
    hook: Hook,
    sink: Sink,
    consumed: Receiver<usize>,
}

impl Write for Output {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let value: Value = serde_json::from_slice(&line).expect("a JSON line");
            if let Some(inject) = (self.hook)(&value) {
                let sent = self.sink.send(line_of(&inject));
                // The reader has handled the line once it asks for the next.
                while self.consumed.recv_timeout(WAIT).expect("reader alive") < sent {}
            }
            let _ = self.lines.send(value);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn line_of(value: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).unwrap();
    line.push(b'\n');
    line
}

struct Worker {
    sink: Sink,
    lines: Receiver<Value>,
    serve: JoinHandle<io::Result<()>>,
}

impl Worker {
    fn start() -> Self {
        Self::start_with(Box::new(|_| None))
    }

    fn start_with(hook: Hook) -> Self {
        let (chunk_tx, chunks) = mpsc::channel();
        let (consumed_tx, consumed) = mpsc::channel();
        let (lines_tx, lines) = mpsc::channel();
        let sink = Sink(Arc::new(Mutex::new(Some((chunk_tx, 0)))));
        let input = Input {
            chunks,
            buf: Vec::new(),
            pos: 0,
            delivered: 0,
            consumed: consumed_tx,
        };
        let output = Output {
            partial: Vec::new(),
            lines: lines_tx,
            hook,
            sink: sink.clone(),
            consumed,
        };
        let serve = thread::spawn(move || sluice_cpu_worker::serve(input, output));
        let worker = Worker { sink, lines, serve };
        let hello = worker.recv();
        assert_eq!(hello["type"], "hello");
        worker
    }

    fn send(&self, message: Value) {
        self.sink.send(line_of(&message));
    }

    fn send_raw(&self, bytes: &[u8]) {
        self.sink.send(bytes.to_vec());
    }

    fn recv(&self) -> Value {
        self.lines
            .recv_timeout(WAIT)
            .expect("a line from the worker")
    }

    /// The job's progress lines and its result.
    fn job(&self, id: &str) -> (Vec<Value>, Value) {
        let mut progress = Vec::new();
        loop {
            let line = self.recv();
            assert_eq!(line["id"], id, "{line}");
            match line["type"].as_str() {
                Some("progress") => progress.push(line),
                Some("result") => return (progress, line),
                _ => panic!("unexpected line {line}"),
            }
        }
    }

    /// Ends the input (EOF) and checks `serve` returns `Ok` having written
    /// nothing more.
    fn finish(self) {
        self.sink.close();
        self.serve.join().unwrap().unwrap();
        let rest: Vec<Value> = self.lines.try_iter().collect();
        assert_eq!(rest, Vec::<Value>::new());
    }
}

/// A small dataset: three classes in two features, 24 rows.
struct Fixture {
    dir: tempfile::TempDir,
    train: PathBuf,
    digest: String,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let train = dir.path().join("train.arrows");
        let features = ["x".to_owned(), "y".to_owned()];
        let classes = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let mut writer = DatasetWriter::new(Vec::new(), &features, &classes).unwrap();
        let centres = [("a", 1.0, 0.0), ("b", 0.0, 1.0), ("c", -1.0, -1.0)];
        for i in 0..8 {
            let jitter = f64::from(i) / 20.0 - 0.2;
            for (label, x, y) in centres {
                writer.row(&[x + jitter, y - jitter / 2.0], label).unwrap();
            }
        }
        let bytes = writer.finish().unwrap();
        std::fs::write(&train, &bytes).unwrap();
        Fixture {
            train,
            digest: sha256(&bytes),
            dir,
        }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, id: &str, out: &Path, params: Value, seed: u64) -> Value {
        json!({
            "type": "run", "id": id, "op": "train-mlp", "params": params,
            "inputs": {"train": {"path": self.train, "digest": self.digest}},
            "output_dir": out, "seed": seed, "deterministic": true,
            "deadline_ms": 600_000, "unknown_field": "ignored",
        })
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn small_params() -> Value {
    json!({"hidden_layers": 1, "width": 8, "learning_rate": 0.05, "epochs": 25, "batch_size": 5})
}

#[test]
fn hello_announces_the_cpu_worker_its_op_and_version() {
    let mut out = Vec::new();
    sluice_cpu_worker::serve(io::empty(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let hello: Value = serde_json::from_str(&text).unwrap();
    let threads = thread::available_parallelism().unwrap().get();
    let plural = if threads == 1 { "thread" } else { "threads" };
    assert_eq!(
        hello,
        json!({
            "type": "hello", "protocol": 1, "worker": "cpu", "ops": ["train-mlp"],
            "versions": {"sluice-cpu-worker": env!("CARGO_PKG_VERSION")},
            "device": {"kind": "cpu",
                       "name": format!("{} ({threads} {plural})", std::env::consts::ARCH),
                       "uuid": null},
        })
    );
}

#[test]
fn train_mlp_writes_the_model_and_reports_its_digest_progress_and_metrics() {
    let fixture = Fixture::new();
    let worker = Worker::start();
    let out = fixture.out("j1");
    worker.send(fixture.run("j1", &out, small_params(), 42));
    let (progress, result) = worker.job("j1");

    // 25 epochs in strides of 3: epochs 3, 6, …, 24 and the last.
    let epochs: Vec<u64> = progress
        .iter()
        .map(|p| p["metrics"]["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [3, 6, 9, 12, 15, 18, 21, 24, 25]);
    assert_eq!(progress[0]["message"], "epoch 3/25");

    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["message"], Value::Null);
    let bytes = std::fs::read(out.join("model.json")).unwrap();
    assert_eq!(
        result["outputs"],
        json!({"model": {"file": "model.json", "digest": sha256(&bytes),
                         "size": bytes.len(), "media_type": "application/json"}})
    );
    let model = Mlp::read(&bytes[..]).unwrap();
    assert!(matches!(
        AnyModel::read(&bytes[..]).unwrap(),
        AnyModel::Mlp(_)
    ));
    assert_eq!(model.seed, 42);
    assert_eq!(
        model.hyper_params,
        MlpParams::from_json(&small_params()).unwrap()
    );

    let metrics = &result["metrics"];
    let losses: Vec<f64> = metrics["loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 25);
    assert_eq!(progress[0]["metrics"]["loss"].as_f64(), Some(losses[2]));
    assert!(losses[24] < losses[0], "{losses:?}");
    // (2 + 1) · 8 + (8 + 1) · 3
    assert_eq!(metrics["params"], 51);
    assert_eq!(metrics["model_flops"], 6.0 * 51.0 * 24.0 * 25.0);
    assert_eq!(metrics["final_loss"].as_f64(), Some(model.train_loss));
    assert_eq!(
        metrics["train_accuracy"].as_f64(),
        Some(model.train_accuracy)
    );
    assert_eq!(model.train_accuracy, 1.0);
    assert!(metrics["samples_per_s"].as_f64().unwrap() > 0.0);
    worker.finish();
}

#[test]
fn the_same_job_gives_identical_model_bytes_and_another_seed_does_not() {
    let fixture = Fixture::new();
    let worker = Worker::start();
    let digests: Vec<(Value, Vec<u8>)> = [("a", 7), ("b", 7), ("c", 8)]
        .into_iter()
        .map(|(id, seed)| {
            let out = fixture.out(id);
            worker.send(fixture.run(id, &out, small_params(), seed));
            let (_, result) = worker.job(id);
            assert_eq!(result["status"], "succeeded", "{result}");
            let bytes = std::fs::read(out.join("model.json")).unwrap();
            (result["outputs"]["model"]["digest"].clone(), bytes)
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    assert_ne!(digests[0].0, digests[2].0);
    // And in a fresh worker process state.
    let again = Worker::start();
    let out = fixture.out("d");
    again.send(fixture.run("d", &out, small_params(), 7));
    assert_eq!(again.job("d").1["outputs"]["model"]["digest"], digests[0].0);
    again.finish();
    worker.finish();
}

#[test]
fn cancel_mid_job_ends_it_cancelled_and_the_worker_serves_on() {
    let fixture = Fixture::new();
    // At the job's first progress line, cancel it; the hook returns only
    // once the worker's reader has handled the cancel.
    let worker = Worker::start_with(Box::new(|line| {
        (line["type"] == "progress" && line["metrics"]["epoch"] == 100)
            .then(|| json!({"type": "cancel", "id": "long"}))
    }));
    let out = fixture.out("long");
    let params = json!({"hidden_layers": 1, "width": 8, "epochs": 1000});
    worker.send(fixture.run("long", &out, params, 1));
    let (progress, result) = worker.job("long");
    assert_eq!(progress.len(), 1);
    assert_eq!(
        result,
        json!({"type": "result", "id": "long", "status": "cancelled", "outputs": {},
               "metrics": {}, "message": "cancelled in epoch 101 of 1000"})
    );
    assert!(!out.join("model.json").exists());

    // A cancel of a finished job changes nothing; the next job runs.
    worker.send(json!({"type": "cancel", "id": "long"}));
    let out = fixture.out("next");
    worker.send(fixture.run("next", &out, small_params(), 1));
    assert_eq!(worker.job("next").1["status"], "succeeded");
    worker.finish();
}

#[test]
fn unknown_op_fails_naming_it() {
    let fixture = Fixture::new();
    let worker = Worker::start();
    let mut run = fixture.run("j", &fixture.out("j"), json!({}), 0);
    run["op"] = json!("train-gpt");
    worker.send(run);
    let (progress, result) = worker.job("j");
    assert!(progress.is_empty());
    assert_eq!(
        result,
        json!({"type": "result", "id": "j", "status": "failed", "outputs": {}, "metrics": {},
               "message": "unknown op `train-gpt`; this worker implements train-mlp"})
    );
    worker.finish();
}

#[test]
fn an_input_that_does_not_match_its_digest_fails_naming_the_input() {
    let fixture = Fixture::new();
    let worker = Worker::start();
    let mut run = fixture.run("j", &fixture.out("j"), small_params(), 0);
    let wrong = sha256(b"something else");
    run["inputs"]["train"]["digest"] = json!(wrong);
    worker.send(run);
    let (_, result) = worker.job("j");
    assert_eq!(result["status"], "failed");
    assert_eq!(
        result["message"],
        format!(
            "input `train`: digest mismatch: expected {wrong}, {} has {}",
            fixture.train.display(),
            fixture.digest
        )
    );
    assert!(!fixture.out("j").exists());

    let mut run = fixture.run("k", &fixture.out("k"), small_params(), 0);
    run["inputs"]["train"]["digest"] = json!("md5:1234");
    worker.send(run);
    assert_eq!(
        worker.job("k").1["message"],
        "input `train`: digest `md5:1234` is not `sha256:` and 64 lowercase hex digits"
    );
    let mut run = fixture.run("m", &fixture.out("m"), small_params(), 0);
    run["inputs"] = json!({});
    worker.send(run);
    assert_eq!(worker.job("m").1["message"], "missing input `train`");
    worker.finish();
}

#[test]
fn bad_params_fail_naming_the_param() {
    let fixture = Fixture::new();
    let worker = Worker::start();
    for (id, params, message) in [
        (
            "w",
            json!({"width": 0}),
            "bad params: width must be within 1..=4096, got 0",
        ),
        (
            "h",
            json!({"hidden_layers": 9}),
            "bad params: hidden_layers must be within 0..=8, got 9",
        ),
        (
            "l",
            json!({"learning_rate": -1}),
            "bad params: learning_rate must be a positive finite number, got -1",
        ),
        (
            "d",
            json!({"dropout": 0.5}),
            "bad params: unknown param `dropout` (expected hidden_layers, width, learning_rate, epochs or batch_size)",
        ),
    ] {
        worker.send(fixture.run(id, &fixture.out(id), params, 0));
        let (_, result) = worker.job(id);
        assert_eq!(
            (result["status"].as_str(), result["message"].as_str()),
            (Some("failed"), Some(message))
        );
    }
    worker.finish();
}

#[test]
fn a_deadline_that_has_passed_fails_the_job() {
    let fixture = Fixture::new();
    let worker = Worker::start();
    let mut run = fixture.run("j", &fixture.out("j"), small_params(), 0);
    run["deadline_ms"] = json!(0);
    worker.send(run);
    let (_, result) = worker.job("j");
    assert_eq!(result["status"], "failed");
    assert_eq!(
        result["message"],
        "deadline of 0 ms exceeded before training started"
    );
    worker.finish();
}

#[test]
fn malformed_lines_are_skipped_and_a_malformed_run_fails_by_id() {
    let fixture = Fixture::new();
    let worker = Worker::start();
    worker.send_raw(b"this is not json\n");
    worker.send_raw(b"\n");
    worker.send_raw(&[b'x'; sluice_cpu_worker::LINE_BYTES_MAX + 1]);
    worker.send_raw(b"\n");
    worker.send(json!({"type": "dance", "id": "x"}));
    worker.send(json!({"type": "run", "id": "bad", "output_dir": "/nowhere"}));
    let (_, result) = worker.job("bad");
    assert_eq!(
        (result["status"].as_str(), result["message"].as_str()),
        (
            Some("failed"),
            Some("malformed run message: missing field `op`")
        )
    );
    let out = fixture.out("good");
    worker.send(fixture.run("good", &out, small_params(), 0));
    assert_eq!(worker.job("good").1["status"], "succeeded");
    worker.finish();
}

#[test]
fn shutdown_returns_after_the_job_in_progress() {
    let fixture = Fixture::new();
    let worker = Worker::start();
    let out = fixture.out("j");
    worker.send(fixture.run("j", &out, small_params(), 0));
    worker.send(json!({"type": "shutdown"}));
    assert_eq!(worker.job("j").1["status"], "succeeded");
    // `serve` returns without waiting for the end of input.
    worker.serve.join().unwrap().unwrap();
    assert_eq!(worker.lines.try_iter().count(), 0);
}
