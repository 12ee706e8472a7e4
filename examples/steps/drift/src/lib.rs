//! `drift`: how far current examples have moved from reference examples,
//! feature by feature, and whether that is enough to call it drift.
//!
//! - **Inputs:** `reference`, `current` — examples (`application/x-ndjson`)
//!   with the same label; every reference column must be in `current`.
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
//! about it. The logic lives in [`sluice_tabular::drift`].

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
    let drift = Drift::read(ctx.input("reference")?, ctx.input("current")?, &options)?;
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
