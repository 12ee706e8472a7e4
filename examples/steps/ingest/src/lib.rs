//! `ingest`: parses a CSV (or reads a Parquet file), types each column and
//! splits the rows deterministically into train and eval examples,
//! streaming: memory holds one batch per output (and, for Parquet, one
//! page per column), whatever the number of rows.
//!
//! - **Inputs:** `csv` — a CSV with a header row; empty fields and `NA`
//!   are missing values. Read twice: type inference, then conversion.
//!   Or a **Parquet** file: chosen when the input's media type is
//!   `application/vnd.apache.parquet` (a `.parquet` source) *or* its first
//!   4 bytes are the Parquet magic `PAR1`, whatever its name. Parquet
//!   columns keep their declared types (integer, float, decimal → number;
//!   string → string; other types fail naming the column); nulls are the
//!   missing values; the label must be a string or an integer column. Read
//!   with seeks (footer first, then page by page); the split is the CSV's,
//!   so the same rows give the same outputs.
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
//!   `infer_rows` and `malformed` do not apply to Parquet.
//! - **Metrics:** `rows_train`, `rows_eval`, `rows_dropped` (rows without a
//!   label), `rows_malformed` (rows dropped as malformed); tag `format`
//!   (`csv` or `parquet`).
//!
//! The logic lives in [`sluice_tabular::ingest`] and
//! [`sluice_tabular::parquet`].

use std::io::Read;

use sluice_guest::{Ctx, Error, Result};
use sluice_tabular::ingest::{INFER_ROWS_DEFAULT, IngestOptions, ingest};
use sluice_tabular::parquet::{PARQUET_MEDIA_TYPE, ingest_parquet, is_parquet};
use sluice_tabular::table::ARROW_STREAM_MEDIA_TYPE;

/// Whether the input is Parquet: by its media type, else by its magic.
fn parquet_input(ctx: &Ctx, name: &str) -> Result<bool> {
    if ctx
        .inputs()
        .iter()
        .any(|a| a.name == name && a.media_type == PARQUET_MEDIA_TYPE)
    {
        return Ok(true);
    }
    let mut head = Vec::with_capacity(4);
    ctx.input(name)?.take(4).read_to_end(&mut head)?;
    Ok(is_parquet(&head))
}

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
    let parquet = parquet_input(ctx, "csv")?;
    let report = if parquet {
        ingest_parquet(ctx.opener("csv"), &options, &mut train, &mut eval)
            .map_err(|e| Error::msg(format_args!("input `csv` (Parquet): {e}")))?
    } else {
        ingest(ctx.opener("csv"), &options, &mut train, &mut eval)?
    };
    ctx.tag("format", if parquet { "parquet" } else { "csv" });
    train.finish()?;
    eval.finish()?;
    ctx.metric("rows_train", report.rows_train as f64);
    ctx.metric("rows_eval", report.rows_eval as f64);
    ctx.metric("rows_dropped", report.rows_dropped as f64);
    ctx.metric("rows_malformed", report.rows_malformed as f64);
    Ok(())
}

sluice_guest::export_step!(run);
