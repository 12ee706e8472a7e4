//! `stats`: per-column descriptive statistics of an examples stream, in
//! one pass and memory independent of the row count.
//!
//! - **Inputs:** `examples` — examples (`application/vnd.apache.arrow.stream`).
//! - **Outputs:** `statistics` (`application/json`) — rows, and per column
//!   its count, missing count and distinct count (exact up to 1000 distinct
//!   values, else a HyperLogLog estimate, flagged `distinct_exact: false`),
//!   plus min/max/mean/std (exact) for numbers or the most frequent values
//!   for strings (`top_exact: false` when they come from a bounded
//!   heavy-hitters summary).
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
