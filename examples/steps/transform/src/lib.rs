//! `transform`: fits feature scaling and encoding on the train examples
//! and applies it to train and eval.
//!
//! - **Inputs:** `train`, `eval` — examples (`application/x-ndjson`).
//! - **Outputs:** `train`, `eval` — datasets (`application/x-ndjson`): a
//!   `{"features":[…],"classes":[…]}` line, then one `{"x":[…],"y":"…"}`
//!   per row; `transform` (`application/json`) — the fitted parameters.
//! - **Params:** none.
//! - **Metrics:** `features` — the number of features; `rows_train`,
//!   `rows_eval` — rows written.
//!
//! Numbers are standardised with the train mean and standard deviation;
//! strings are one-hot encoded over the train categories. The logic lives
//! in [`sluice_tabular::transform`].

use sluice_guest::{Ctx, Result};
use sluice_tabular::example::Examples;
use sluice_tabular::transform::Transform;
use sluice_tabular::{JSON_MEDIA_TYPE, NDJSON_MEDIA_TYPE};

fn run(ctx: &mut Ctx) -> Result<()> {
    let train = Examples::read(ctx.input("train")?)?;
    let transform = Transform::fit(&train)?;

    let mut out = ctx.output("train", NDJSON_MEDIA_TYPE)?;
    let train_counts = transform.apply(&train, &mut out)?;
    out.finish()?;
    let mut out = ctx.output("eval", NDJSON_MEDIA_TYPE)?;
    let eval_counts = transform.apply_stream(ctx.input("eval")?, &mut out)?;
    out.finish()?;
    let mut out = ctx.output("transform", JSON_MEDIA_TYPE)?;
    transform.write(&mut out)?;
    out.finish()?;

    ctx.metric("features", transform.features.len() as f64);
    ctx.metric("rows_train", train_counts.rows as f64);
    ctx.metric("rows_eval", eval_counts.rows as f64);
    Ok(())
}

sluice_guest::export_step!(run);
