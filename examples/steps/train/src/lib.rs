//! `train`: trains a multinomial softmax-regression classifier by
//! full-batch gradient descent (zero initialisation, no randomness).
//!
//! - **Inputs:** `train` — a dataset (`application/x-ndjson`) from
//!   `transform`.
//! - **Outputs:** `model` (`application/json`) — classes, feature names,
//!   weights, bias, hyper-parameters and training scores.
//! - **Params:** `learning_rate` (default `0.1`), `epochs` (default `200`,
//!   at most 100 000), `l2` (default `0.0`).
//! - **Metrics:** `loss` — a series, one point per epoch (the loss at the
//!   start of that epoch), and the final value after training;
//!   `train_accuracy`.
//!
//! The logic lives in [`sluice_tabular::model`].

use sluice_guest::{Ctx, Result};
use sluice_tabular::JSON_MEDIA_TYPE;
use sluice_tabular::model::{HyperParams, train};
use sluice_tabular::transform::Dataset;

fn run(ctx: &mut Ctx) -> Result<()> {
    let defaults = HyperParams::default();
    let hyper = HyperParams {
        learning_rate: ctx.param_or("learning_rate", defaults.learning_rate)?,
        epochs: ctx.param_or("epochs", defaults.epochs)?,
        l2: ctx.param_or("l2", defaults.l2)?,
    };
    let data = Dataset::read(ctx.input("train")?)?;
    let model = train(&data, &hyper, |epoch, loss| {
        ctx.metric_at("loss", u64::from(epoch), loss);
    })?;

    let mut out = ctx.output("model", JSON_MEDIA_TYPE)?;
    model.write(&mut out)?;
    out.finish()?;
    ctx.metric("loss", model.train_loss);
    ctx.metric("train_accuracy", model.train_accuracy);
    Ok(())
}

sluice_guest::export_step!(run);
