//! `transform`: fits feature scaling and encoding on the train examples
//! and applies it to train and eval, streaming (memory independent of the
//! row count). With a `statistics` input (the `stats` step's output for
//! `train`) it fits from those and reads `train` and `eval` once each;
//! without, it reads `train` twice (fit, then apply).
//!
//! - **Inputs:** `train`, `eval` — examples
//!   (`application/vnd.apache.arrow.stream`); optional `statistics`
//!   (`application/json`) — the statistics of `train`, refused if they
//!   describe other columns or another label.
//! - **Outputs:** `train`, `eval` — datasets
//!   (`application/vnd.apache.arrow.stream`): one `Float64` column per
//!   feature, then the label `y`, the classes in the schema metadata;
//!   `transform` (`application/json`) — the fitted parameters.
//! - **Params:** none.
//! - **Metrics:** `features` — the number of features; `rows_train`,
//!   `rows_eval` — rows written; `fit_passes` — passes over `train` to fit
//!   (0 with statistics, else 1).
//!
//! Numbers are standardised with the train mean and standard deviation;
//! strings are one-hot encoded over the train categories (free-text
//! columns, of more than 1000 distinct values, are left out). The logic
//! lives in [`sluice_tabular::transform`].

use sluice_guest::{Ctx, Result};
use sluice_tabular::JSON_MEDIA_TYPE;
use sluice_tabular::table::ARROW_STREAM_MEDIA_TYPE;
use sluice_tabular::transform::Transform;

fn run(ctx: &mut Ctx) -> Result<()> {
    let with_statistics = ctx.inputs().iter().any(|a| a.name == "statistics");
    let mut out = ctx.output("train", ARROW_STREAM_MEDIA_TYPE)?;
    let (transform, train_counts) = if with_statistics {
        Transform::fit_statistics_and_apply(
            ctx.input("statistics")?,
            ctx.input("train")?,
            &mut out,
        )?
    } else {
        let transform = Transform::fit_stream(ctx.input("train")?)?;
        let counts = transform.apply_stream(ctx.input("train")?, &mut out)?;
        (transform, counts)
    };
    out.finish()?;
    let mut out = ctx.output("eval", ARROW_STREAM_MEDIA_TYPE)?;
    let eval_counts = transform.apply_stream(ctx.input("eval")?, &mut out)?;
    out.finish()?;
    let mut out = ctx.output("transform", JSON_MEDIA_TYPE)?;
    transform.write(&mut out)?;
    out.finish()?;

    ctx.metric("features", transform.features.len() as f64);
    ctx.metric("fit_passes", if with_statistics { 0.0 } else { 1.0 });
    ctx.metric("rows_train", train_counts.rows as f64);
    ctx.metric("rows_eval", eval_counts.rows as f64);
    Ok(())
}

sluice_guest::export_step!(run);
