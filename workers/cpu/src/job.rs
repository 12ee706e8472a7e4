//! One job: the op `train-mlp`, from its `run` message to its outcome.
//!
//! Invariant: an input is used only after its bytes hash to the digest the
//! engine gave; every expected failure (unknown op, bad params, unreadable
//! or mismatched input, divergence, deadline) is a [`Outcome::Failed`] with
//! a message naming the offender, never a panic.
//! Boundary: reads its inputs and writes into its `output_dir`; talks to
//! the engine only through the progress callback.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sluice_tabular::mlp::{self, MlpParams, TrainMetrics};
use sluice_tabular::transform::Dataset;
use sluice_tabular::{Error, JSON_MEDIA_TYPE};

use crate::protocol::{OutputFile, RunRequest};

/// The ops this worker implements.
pub(crate) const OPS: &[&str] = &[TRAIN_MLP];

const TRAIN_MLP: &str = "train-mlp";

/// The input `train-mlp` reads and the output it writes.
const TRAIN_INPUT: &str = "train";
const MODEL_OUTPUT: &str = "model";
const MODEL_FILE: &str = "model.json";

/// Most `progress` messages per job: enough to watch, few enough not to
/// flood the engine's log on a job of 100 000 tiny epochs.
pub(crate) const PROGRESS_MESSAGES_MAX: u32 = 10;

/// How a job ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Succeeded {
        /// The output's name and file.
        output: (&'static str, OutputFile),
        metrics: TrainMetrics,
    },
    Failed(String),
    Cancelled(String),
}

/// What may stop a running job.
pub(crate) struct Control<'a> {
    /// Set by the reader thread when the engine cancels this job.
    pub cancel: &'a AtomicBool,
    /// When the job's `deadline_ms` runs out, counted from the moment its
    /// line was read.
    pub deadline: Option<(Instant, u64)>,
}

impl Control<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn past_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|(deadline, _)| Instant::now() >= deadline)
    }

    fn deadline_ms(&self) -> u64 {
        self.deadline.map_or(0, |(_, ms)| ms)
    }
}

/// A progress report: `(epoch, epochs, loss)` with `epoch` 1-based.
pub(crate) type Progress<'a> = dyn FnMut(u32, u32, f64) -> io::Result<()> + 'a;

/// Runs `req` to its outcome. The only error is a failure to report
/// progress (the engine is gone); everything else is an [`Outcome`].
pub(crate) fn run(
    req: &RunRequest,
    control: &Control<'_>,
    progress: &mut Progress<'_>,
) -> io::Result<Outcome> {
    if req.op != TRAIN_MLP {
        return Ok(Outcome::Failed(format!(
            "unknown op `{}`; this worker implements {}",
            req.op,
            OPS.join(", ")
        )));
    }
    train_mlp(req, control, progress)
}

fn train_mlp(
    req: &RunRequest,
    control: &Control<'_>,
    progress: &mut Progress<'_>,
) -> io::Result<Outcome> {
    let failed = |message: String| Ok(Outcome::Failed(message));
    let params = match MlpParams::from_json(&req.params) {
        Ok(params) => params,
        Err(e) => return failed(format!("bad params: {e}")),
    };
    if let Some(name) = req.inputs.keys().find(|name| *name != TRAIN_INPUT) {
        return failed(format!(
            "unknown input `{name}`; {TRAIN_MLP} reads only `{TRAIN_INPUT}`"
        ));
    }
    let Some(input) = req.inputs.get(TRAIN_INPUT) else {
        return failed(format!("missing input `{TRAIN_INPUT}`"));
    };
    if let Err(message) = verify_digest(&input.path, &input.digest) {
        return failed(format!("input `{TRAIN_INPUT}`: {message}"));
    }
    let data = match File::open(&input.path)
        .map_err(Error::from)
        .and_then(|f| Dataset::read(BufReader::new(f)))
    {
        Ok(data) => data,
        Err(e) => return failed(format!("input `{TRAIN_INPUT}`: {e}")),
    };
    if control.cancelled() {
        return Ok(Outcome::Cancelled(
            "cancelled before training started".into(),
        ));
    }
    if control.past_deadline() {
        return failed(format!(
            "deadline of {} ms exceeded before training started",
            control.deadline_ms()
        ));
    }
    eprintln!(
        "job {}: {TRAIN_MLP} on {} rows × {} features, {} classes, {} parameters, seed {}",
        req.id,
        data.rows(),
        data.features.len(),
        data.classes.len(),
        params.param_count(data.features.len(), data.classes.len()),
        req.seed
    );

    let stride = params.epochs.div_ceil(PROGRESS_MESSAGES_MAX);
    let mut losses = Vec::with_capacity(params.epochs as usize);
    let mut report_error: Option<io::Error> = None;
    let broken = std::cell::Cell::new(false);
    let started = Instant::now();
    let trained = mlp::train(
        &data,
        &params,
        req.seed,
        |epoch, loss| {
            losses.push(loss);
            let done = epoch + 1;
            if (done % stride == 0 || done == params.epochs)
                && report_error.is_none()
                && let Err(e) = progress(done, params.epochs, loss)
            {
                report_error = Some(e);
                broken.set(true);
            }
        },
        &|| broken.get() || control.cancelled() || control.past_deadline(),
    );
    let elapsed = started.elapsed();
    if let Some(e) = report_error {
        return Err(e);
    }
    let model = match trained {
        Ok(model) => model,
        Err(Error::Stopped { epoch, epochs }) if control.cancelled() => {
            return Ok(Outcome::Cancelled(format!(
                "cancelled in epoch {} of {epochs}",
                epoch + 1
            )));
        }
        Err(Error::Stopped { epoch, epochs }) => {
            return failed(format!(
                "deadline of {} ms exceeded in epoch {} of {epochs}",
                control.deadline_ms(),
                epoch + 1
            ));
        }
        Err(e) => return failed(format!("{TRAIN_MLP}: {e}")),
    };

    let mut bytes = Vec::new();
    if let Err(e) = model.write(&mut bytes) {
        return failed(format!("output `{MODEL_OUTPUT}`: {e}"));
    }
    let path = req.output_dir.join(MODEL_FILE);
    if let Err(e) = fs::create_dir_all(&req.output_dir).and_then(|()| fs::write(&path, &bytes)) {
        return failed(format!(
            "output `{MODEL_OUTPUT}`: cannot write {}: {e}",
            path.display()
        ));
    }
    let params_count = model.param_count();
    let rows = model.train_rows;
    let samples = rows as f64 * f64::from(params.epochs);
    Ok(Outcome::Succeeded {
        output: (
            MODEL_OUTPUT,
            OutputFile {
                file: MODEL_FILE.into(),
                digest: sha256_digest(&bytes),
                size: bytes.len() as u64,
                media_type: JSON_MEDIA_TYPE.into(),
            },
        ),
        metrics: TrainMetrics {
            loss: losses,
            final_loss: model.train_loss,
            train_accuracy: model.train_accuracy,
            samples_per_s: samples / elapsed.max(Duration::from_nanos(1)).as_secs_f64(),
            model_flops: mlp::model_flops(params_count, rows, params.epochs),
            params: params_count,
        },
    })
}

/// `"sha256:<hex>"` of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks the file at `path` hashes to `digest` (`sha256:<64 hex>`).
fn verify_digest(path: &Path, digest: &str) -> Result<(), String> {
    let well_formed = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if !well_formed {
        return Err(format!(
            "digest `{digest}` is not `sha256:` and 64 lowercase hex digits"
        ));
    }
    let mut file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        return Err(format!(
            "digest mismatch: expected {digest}, {} has {actual}",
            path.display()
        ));
    }
    Ok(())
}
