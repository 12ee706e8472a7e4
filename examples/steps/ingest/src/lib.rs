//! `ingest`: parses a CSV, infers each column's type and splits the rows
//! deterministically into train and eval examples, streaming: memory holds
//! one batch per output, whatever the number of rows.
//!
//! - **Inputs:** `csv` — a CSV with a header row; empty fields and `NA`
//!   are missing values. Read twice: type inference, then conversion.
//! - **Outputs:** `train`, `eval` — examples
//!   (`application/vnd.apache.arrow.stream`): Arrow IPC streams, one
//!   nullable `Float64` or `Utf8` column per CSV column, the label named in
//!   the schema metadata.
//! - **Params:** `label` (required) — the label column; `eval_fraction`
//!   (default `0.2`) — share of rows sent to eval; `split_seed` (u64,
//!   default `0`) — seed of the split hash; `infer_rows` (default
//!   `10000`) — labelled rows that decide the column types; `malformed`
//!   (`fail`, the default, or `drop`) — what a ragged row or a value that
//!   does not fit its column does.
//! - **Metrics:** `rows_train`, `rows_eval`, `rows_dropped` (rows without a
//!   label), `rows_malformed` (rows dropped as malformed).
//!
//! The logic lives in [`sluice_tabular::ingest`].

use sluice_guest::{Ctx, Result};
use sluice_tabular::ingest::{INFER_ROWS_DEFAULT, IngestOptions, ingest};
use sluice_tabular::table::ARROW_STREAM_MEDIA_TYPE;

fn run(ctx: &mut Ctx) -> Result<()> {
    let options = IngestOptions {
        label: ctx.param("label")?,
        eval_fraction: ctx.param_or("eval_fraction", 0.2)?,
        split_seed: ctx.param_or("split_seed", 0)?,
        infer_rows: ctx.param_or("infer_rows", INFER_ROWS_DEFAULT)?,
        malformed: ctx.param_or("malformed", "fail".to_owned())?.parse()?,
    };
    let mut train = ctx.output("train", ARROW_STREAM_MEDIA_TYPE)?;
    let mut eval = ctx.output("eval", ARROW_STREAM_MEDIA_TYPE)?;
    let report = ingest(ctx.opener("csv"), &options, &mut train, &mut eval)?;
    train.finish()?;
    eval.finish()?;
    ctx.metric("rows_train", report.rows_train as f64);
    ctx.metric("rows_eval", report.rows_eval as f64);
    ctx.metric("rows_dropped", report.rows_dropped as f64);
    ctx.metric("rows_malformed", report.rows_malformed as f64);
    Ok(())
}

sluice_guest::export_step!(run);
