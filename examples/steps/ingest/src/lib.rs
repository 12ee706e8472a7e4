//! `ingest`: parses a CSV, infers each column's type and splits the rows
//! deterministically into train and eval examples.
//!
//! - **Inputs:** `csv` — a CSV with a header row; empty fields and `NA`
//!   are missing values.
//! - **Outputs:** `train`, `eval` — examples (`application/x-ndjson`): a
//!   schema line, then one JSON array per row.
//! - **Params:** `label` (required) — the label column; `eval_fraction`
//!   (default `0.2`) — share of rows sent to eval; `split_seed` (u64,
//!   default `0`) — seed of the split hash.
//! - **Metrics:** `rows_train`, `rows_eval`, `rows_dropped` (rows without a
//!   label).
//!
//! The logic lives in [`sluice_tabular::ingest`].

use sluice_guest::{Ctx, Result};
use sluice_tabular::NDJSON_MEDIA_TYPE;
use sluice_tabular::ingest::{IngestOptions, ingest};

fn run(ctx: &mut Ctx) -> Result<()> {
    let options = IngestOptions {
        label: ctx.param("label")?,
        eval_fraction: ctx.param_or("eval_fraction", 0.2)?,
        split_seed: ctx.param_or("split_seed", 0)?,
    };
    let csv = ctx.input("csv")?;
    let mut train = ctx.output("train", NDJSON_MEDIA_TYPE)?;
    let mut eval = ctx.output("eval", NDJSON_MEDIA_TYPE)?;
    let report = ingest(csv, &options, &mut train, &mut eval)?;
    train.finish()?;
    eval.finish()?;
    ctx.metric("rows_train", report.rows_train as f64);
    ctx.metric("rows_eval", report.rows_eval as f64);
    ctx.metric("rows_dropped", report.rows_dropped as f64);
    Ok(())
}

sluice_guest::export_step!(run);
