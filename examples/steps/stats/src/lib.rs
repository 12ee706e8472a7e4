//! `stats`: per-column descriptive statistics of an examples file.
//!
//! - **Inputs:** `examples` — examples (`application/x-ndjson`).
//! - **Outputs:** `statistics` (`application/json`) — rows, and per column
//!   its count and missing count, plus min/max/mean/std for numbers or the
//!   distinct count and most frequent values for strings.
//! - **Params:** none.
//! - **Metrics:** `rows`, `columns`.
//!
//! The logic lives in [`sluice_tabular::stats`].

use sluice_guest::{Ctx, Result};
use sluice_tabular::JSON_MEDIA_TYPE;
use sluice_tabular::stats::Statistics;

fn run(ctx: &mut Ctx) -> Result<()> {
    let statistics = Statistics::read(ctx.input("examples")?)?;
    let mut out = ctx.output("statistics", JSON_MEDIA_TYPE)?;
    statistics.write(&mut out)?;
    out.finish()?;
    ctx.metric("rows", statistics.rows as f64);
    ctx.metric("columns", statistics.columns.len() as f64);
    Ok(())
}

sluice_guest::export_step!(run);
