//! A step that drives the gpu interface for the engine's gpu tests
//! (HOSTILE.md group 6 and 15). The `mode` param picks what it does; what
//! it observed goes to its `out` output, one line per job, so tests can
//! assert it next to the engine's own gpu report.
//!
//! - `submit`: submits `jobs` jobs (default 1) one after the other to
//!   `worker` (default `cpu`) with op `op`, params `params`, input `train`
//!   when the step has one, optional `timeout_ms` and `gpus`; waits for
//!   each. With `publish = true` it publishes the first succeeded job's
//!   `model` output as its own output `model`.
//! - `burst`: submits `jobs` jobs without waiting (to hit the quota).
//! - `drop`: submits one job, waits until it runs, and drops the handle.
//! - `forge`: publishes its own input `train` as output `model`, which is
//!   not an output of any gpu job.
//! - `devices`: writes the visible GPUs.

use std::io::Write;

use sluice_guest::{Ctx, JobSpec, JobState, Result, bail};

/// Most `state()` polls while waiting for a job to start running.
const STATE_POLLS_MAX: u64 = 50_000_000;

fn state_word(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
        JobState::TimedOut => "timed-out",
    }
}

fn spec(ctx: &Ctx) -> Result<JobSpec> {
    let inputs = ctx
        .inputs()
        .into_iter()
        .filter(|a| a.name == "train")
        .map(|a| (a.name, a.digest))
        .collect();
    Ok(JobSpec {
        worker: ctx.param_or("worker", "cpu".to_string())?,
        op: ctx.param_or("op", "train-mlp".to_string())?,
        params_json: ctx.param_or("params", "{}".to_string())?,
        inputs,
        gpus: ctx.param_or("gpus", 0u32)?,
        min_free_memory_mib: 0,
        timeout_ms: ctx.param_opt("timeout_ms")?,
        seed: ctx.param_or("seed", 42u64)?,
        deterministic: true,
    })
}

fn run(ctx: &mut Ctx) -> Result<()> {
    let mode: String = ctx.param("mode")?;
    let mut report = String::new();
    match mode.as_str() {
        "submit" => {
            let jobs: u32 = ctx.param_or("jobs", 1)?;
            let publish: bool = ctx.param_or("publish", false)?;
            let spec = spec(ctx)?;
            let mut published = false;
            for _ in 0..jobs {
                let job = ctx.gpu().submit(&spec)?;
                let id = job.id();
                let result = job.wait();
                let outputs: Vec<String> = result
                    .outputs
                    .iter()
                    .map(|a| format!("{}={}", a.name, a.digest))
                    .collect();
                report.push_str(&format!(
                    "{id} {} outputs=[{}] message={}\n",
                    state_word(result.state),
                    outputs.join(","),
                    result.message.as_deref().unwrap_or("-")
                ));
                if publish
                    && !published
                    && let Some(model) = result.output("model")
                {
                    ctx.publish("model", model)?;
                    published = true;
                }
            }
        }
        "burst" => {
            let jobs: u32 = ctx.param_or("jobs", 2)?;
            let spec = spec(ctx)?;
            let mut held = Vec::new();
            for _ in 0..jobs {
                held.push(ctx.gpu().submit(&spec)?);
            }
            for job in held {
                report.push_str(&format!("{} {}\n", job.id(), state_word(job.wait().state)));
            }
        }
        "drop" => {
            let job = ctx.gpu().submit(&spec(ctx)?)?;
            let mut polls = 0u64;
            let mut state = job.state();
            while state == JobState::Queued {
                polls += 1;
                if polls > STATE_POLLS_MAX {
                    bail!("job {} never started", job.id());
                }
                state = job.state();
            }
            report.push_str(&format!("{} {} dropped\n", job.id(), state_word(state)));
            drop(job);
        }
        "forge" => {
            let Some(train) = ctx.inputs().into_iter().find(|a| a.name == "train") else {
                bail!("mode `forge` needs an input `train`");
            };
            ctx.publish("model", &train)?;
        }
        "devices" => {
            for line in ctx.gpu().devices() {
                report.push_str(&line);
                report.push('\n');
            }
            report.push_str("end of devices\n");
        }
        other => bail!("unknown mode `{other}`"),
    }
    if ctx.declared_outputs().iter().any(|o| o == "out") {
        let mut out = ctx.output("out", "text/plain")?;
        out.write_all(report.as_bytes())?;
        out.finish()?;
    }
    Ok(())
}

sluice_guest::export_step!(run);
