//! `train`: trains a multinomial softmax-regression classifier by minibatch
//! stochastic gradient descent, streaming the dataset once per epoch
//! through a bounded, seeded shuffle buffer. Memory is
//! `shuffle_buffer × features` values plus one read batch, whatever the
//! number of rows; the same input and params give the same model bytes.
//!
//! - **Inputs:** `train` — a dataset
//!   (`application/vnd.apache.arrow.stream`) from `transform`; read
//!   `epochs + 1` times (the last pass scores the trained model).
//! - **Outputs:** `model` (`application/json`) — classes, feature names,
//!   weights, bias, hyper-parameters and training scores.
//! - **Params:** `learning_rate` (default `0.1`), `epochs` (default `30`,
//!   at most 100 000), `l2` (default `0.0`), `batch_size` (rows per
//!   update, default `32`), `shuffle_buffer` (rows, default `8192`; `1`
//!   keeps file order), `seed` (of the shuffle, default `0`).
//! - **Metrics:** `loss` — a series, one point per epoch (the epoch's mean
//!   row loss, each row scored before its minibatch's update), and the
//!   final value (the trained model's mean loss over the training data);
//!   `train_accuracy`; `train_rows`.
//!
//! The logic lives in [`sluice_tabular::model`].

use std::io;

use sluice_guest::{Ctx, Result};
use sluice_tabular::JSON_MEDIA_TYPE;
use sluice_tabular::model::{HyperParams, train};

fn run(ctx: &mut Ctx) -> Result<()> {
    let defaults = HyperParams::default();
    let hyper = HyperParams {
        learning_rate: ctx.param_or("learning_rate", defaults.learning_rate)?,
        epochs: ctx.param_or("epochs", defaults.epochs)?,
        l2: ctx.param_or("l2", defaults.l2)?,
        batch_size: ctx.param_or("batch_size", defaults.batch_size)?,
        shuffle_buffer: ctx.param_or("shuffle_buffer", defaults.shuffle_buffer)?,
        seed: ctx.param_or("seed", defaults.seed)?,
    };
    let ctx = &*ctx;
    let open = || {
        ctx.input("train")
            .map_err(|e| sluice_tabular::Error::Io(io::Error::other(format!("input train: {e}"))))
    };
    let model = train(open, &hyper, |epoch, loss| {
        ctx.metric_at("loss", u64::from(epoch), loss);
    })?;

    let mut out = ctx.output("model", JSON_MEDIA_TYPE)?;
    model.write(&mut out)?;
    out.finish()?;
    ctx.metric("loss", model.train_loss);
    ctx.metric("train_accuracy", model.train_accuracy);
    ctx.metric("train_rows", model.train_rows as f64);
    Ok(())
}

sluice_guest::export_step!(run);
