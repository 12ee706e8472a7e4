//! `export`: writes a table as a Parquet file, for tools outside Sluice
//! (pandas, polars, DuckDB, Spark), streaming: memory holds one batch and
//! the row group being written, whatever the number of rows.
//!
//! - **Inputs:** `table` — any Arrow IPC stream (examples, a dataset).
//! - **Outputs:** `parquet` — the same rows and columns as a Parquet file
//!   (`application/vnd.apache.parquet`); the schema metadata (e.g. the
//!   label's name) becomes Parquet key/value metadata. The bytes are a pure
//!   function of the table and the params.
//! - **Params:** `compression` (`snappy`, the default; `lz4`, `gzip` or
//!   `none`); `row_group_rows` (default `65536`) — rows per row group,
//!   which bounds the writer's memory.
//! - **Metrics:** `rows`, `columns`.
//!
//! The logic lives in [`sluice_tabular::parquet`].

use sluice_guest::{Ctx, Error, Result};
use sluice_tabular::parquet::{PARQUET_MEDIA_TYPE, ParquetOptions, ROW_GROUP_ROWS_DEFAULT, export};

fn run(ctx: &mut Ctx) -> Result<()> {
    let options = ParquetOptions {
        compression: ctx.param_or("compression", "snappy".to_owned())?.parse()?,
        row_group_rows: ctx.param_or("row_group_rows", ROW_GROUP_ROWS_DEFAULT)?,
    };
    let mut out = ctx.output("parquet", PARQUET_MEDIA_TYPE)?;
    let report = export(ctx.input("table")?, "table", &mut out, options)
        .map_err(|e| Error::msg(format_args!("input `table`: {e}")))?;
    out.finish()?;
    ctx.metric("rows", report.rows as f64);
    ctx.metric("columns", report.columns as f64);
    Ok(())
}

sluice_guest::export_step!(run);
