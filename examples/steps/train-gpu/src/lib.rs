//! `train-gpu`: trains a multi-layer perceptron classifier on a native
//! worker. The component never computes: it submits a `train-mlp` job
//! (`workers/PROTOCOL.md`) through the engine's gpu interface,
//! waits for it, and publishes the model the worker wrote as its own
//! output, without its bytes crossing the sandbox.
//!
//! - **Inputs:** `train` — a dataset (`application/vnd.apache.arrow.stream`)
//!   from `transform`; the worker reads it from the store by digest.
//! - **Outputs:** `model` (`application/json`) — the MLP document of
//!   [`sluice_tabular::mlp`], which `evaluate` scores.
//! - **Params:** `worker` (default `cpu`; `torch` for the PyTorch worker,
//!   which asks for one GPU), `hidden_layers` (default `2`), `width`
//!   (`32`), `learning_rate` (`0.01`), `epochs` (`50`), `batch_size`
//!   (`32`), `timeout_s` (`600`, at most a day), `deterministic` (`true`),
//!   `seed` (`0`, meaning the fixed seed 42).
//! - **Metrics:** `loss` — a series, the mean training loss of each epoch;
//!   `final_loss`, `train_accuracy`, `samples_per_s`, `model_flops`,
//!   `params`, `job_wall_ms`; and, where the engine sampled the GPU,
//!   `gpu_util_mean`, `gpu_mem_util_mean`, `gpu_fb_used_max_bytes`,
//!   `gpu_energy_mj`, `gpu_sm_active_mean`. Tags: `worker`, `job`.
//!
//! The step needs a `gpu` grant in the pipeline spec; without one the
//! submission is refused naming the missing grant.

use sluice_guest::{Ctx, Error, JobSpec, JobState, Result, bail};
use sluice_tabular::JSON_MEDIA_TYPE;
use sluice_tabular::mlp::{MlpParams, TrainMetrics};

const OP: &str = "train-mlp";
const INPUT: &str = "train";
const OUTPUT: &str = "model";
const DEFAULT_WORKER: &str = "cpu";
const DEFAULT_TIMEOUT_S: u64 = 600;
/// The seed used when the `seed` param is 0 (unset), so the default run is
/// reproducible.
const DEFAULT_SEED: u64 = 42;
/// Longest job timeout accepted: a day.
const TIMEOUT_S_MAX: u64 = 86_400;

fn run(ctx: &mut Ctx) -> Result<()> {
    let defaults = MlpParams::default();
    let params = MlpParams {
        hidden_layers: ctx.param_or("hidden_layers", defaults.hidden_layers)?,
        width: ctx.param_or("width", defaults.width)?,
        learning_rate: ctx.param_or("learning_rate", defaults.learning_rate)?,
        epochs: ctx.param_or("epochs", defaults.epochs)?,
        batch_size: ctx.param_or("batch_size", defaults.batch_size)?,
    };
    // The worker checks them too; failing here names them without a job.
    params.check()?;
    let worker: String = ctx.param_or("worker", DEFAULT_WORKER.to_owned())?;
    let timeout_s: u64 = ctx.param_or("timeout_s", DEFAULT_TIMEOUT_S)?;
    if !(1..=TIMEOUT_S_MAX).contains(&timeout_s) {
        bail!("timeout_s must be within 1..={TIMEOUT_S_MAX}, got {timeout_s}");
    }
    let deterministic: bool = ctx.param_or("deterministic", true)?;
    let seed = match ctx.param_or("seed", 0u64)? {
        0 => DEFAULT_SEED,
        seed => seed,
    };
    let train = ctx
        .inputs()
        .into_iter()
        .find(|a| a.name == INPUT)
        .ok_or_else(|| Error::msg(format_args!("missing input `{INPUT}`")))?;

    let spec = JobSpec {
        worker: worker.clone(),
        op: OP.to_owned(),
        params_json: params.to_json(),
        inputs: vec![(INPUT.to_owned(), train.digest)],
        gpus: if worker == DEFAULT_WORKER { 0 } else { 1 },
        min_free_memory_mib: 0,
        timeout_ms: Some(timeout_s * 1000),
        seed,
        deterministic,
    };
    let job = ctx.gpu().submit(&spec)?;
    let id = job.id();
    ctx.tag("worker", &worker);
    ctx.tag("job", &id);
    let result = job.wait();
    ctx.metric("job_wall_ms", result.wall_ms as f64);
    if result.state != JobState::Succeeded {
        bail!(
            "{OP} job {id} on the `{worker}` worker ended {:?}: {}",
            result.state,
            result.message.as_deref().unwrap_or("no message")
        );
    }

    let metrics = TrainMetrics::from_json(&result.metrics_json)?;
    for (epoch, loss) in (0u64..).zip(&metrics.loss) {
        ctx.metric_at("loss", epoch, *loss);
    }
    ctx.metric("final_loss", metrics.final_loss);
    ctx.metric("train_accuracy", metrics.train_accuracy);
    ctx.metric("samples_per_s", metrics.samples_per_s);
    ctx.metric("model_flops", metrics.model_flops);
    ctx.metric("params", metrics.params as f64);
    if let Some(usage) = &result.usage {
        ctx.metric("gpu_util_mean", f64::from(usage.util_mean));
        ctx.metric("gpu_mem_util_mean", f64::from(usage.mem_util_mean));
        ctx.metric("gpu_fb_used_max_bytes", usage.fb_used_max_bytes as f64);
        if let Some(energy) = usage.energy_mj {
            ctx.metric("gpu_energy_mj", energy as f64);
        }
        if let Some(active) = usage.sm_active_mean {
            ctx.metric("gpu_sm_active_mean", f64::from(active));
        }
    }

    let Some(model) = result.output(OUTPUT) else {
        bail!("{OP} job {id} succeeded without a `{OUTPUT}` output");
    };
    if model.media_type != JSON_MEDIA_TYPE {
        bail!(
            "{OP} job {id}: output `{OUTPUT}` is `{}`, expected `{JSON_MEDIA_TYPE}`",
            model.media_type
        );
    }
    ctx.publish(OUTPUT, model)?;
    Ok(())
}

sluice_guest::export_step!(run);
