//! `drift`: how far current examples have moved from reference examples,
//! feature by feature, and whether that is enough to call it drift.
//!
//! - **Inputs:** `reference`, `current` — examples (Arrow IPC streams,
//!   `application/vnd.apache.arrow.stream`) with the same label; every
//!   reference column must be in `current`. Both are streamed: `reference`
//!   is read twice and `current` once, and memory is bounded by the
//!   columns (two quantile sketches and the bins per number column, at most
//!   about 2,000 categories per string column), not by the rows. Bin edges
//!   and KS are exact up to 1,024 values per column and within about 0.3%
//!   of rank beyond; PSI and JS are computed from exact counts.
//! - **Outputs:** `report` (`application/json`) — per feature (every column
//!   but the label) its PSI, plus KS and the PSI bin edges for numbers or
//!   the Jensen–Shannon distance for strings, its counts and whether it
//!   drifted; then a summary `{features, drifted_features, max_psi, max_ks,
//!   max_js}`.
//! - **Params:** `psi_threshold` (default `0.2`), `ks_threshold` (default
//!   `0.3`), `js_threshold` (default `0.3`) — a feature has drifted when a
//!   statistic is strictly above its threshold; `bins` (default `10`) —
//!   quantile bins per number column for PSI.
//! - **Metrics:** `drifted` (number of drifted features), `max_psi`,
//!   `max_ks`, `max_js`.
//!
//! Drift is not an error: a condition such as
//! `when = "drift.metrics.drifted >= 1"` on a later step decides what to do
//! about it. The logic, and what happens past 1,000 categories, lives in
//! [`sluice_tabular::drift`].

use std::io;

use sluice_guest::{Ctx, Result};
use sluice_tabular::JSON_MEDIA_TYPE;
use sluice_tabular::drift::{DEFAULT_BINS, Drift, DriftOptions, Thresholds};

fn run(ctx: &mut Ctx) -> Result<()> {
    let defaults = Thresholds::default();
    let options = DriftOptions {
        thresholds: Thresholds {
            psi: ctx.param_or("psi_threshold", defaults.psi)?,
            ks: ctx.param_or("ks_threshold", defaults.ks)?,
            js: ctx.param_or("js_threshold", defaults.js)?,
        },
        bins: ctx.param_or("bins", DEFAULT_BINS)?,
    };
    // Each call opens the input afresh, from its first byte.
    let open = |name: &str| {
        ctx.input(name).map_err(|e| {
            sluice_tabular::Error::from(io::Error::other(format!("input {name}: {e}")))
        })
    };
    let drift = Drift::compute(|| open("reference"), || open("current"), &options)?;
    let mut out = ctx.output("report", JSON_MEDIA_TYPE)?;
    drift.write(&mut out)?;
    out.finish()?;
    let summary = &drift.summary;
    ctx.metric("drifted", summary.drifted_features.len() as f64);
    ctx.metric("max_psi", summary.max_psi);
    ctx.metric("max_ks", summary.max_ks);
    ctx.metric("max_js", summary.max_js);
    Ok(())
}

sluice_guest::export_step!(run);
