//! `push`: the quality gate. Copies the model to its output only when the
//! evaluation blessed it.
//!
//! - **Inputs:** `model` — the model bytes; `blessing` (`application/json`)
//!   from `evaluate`.
//! - **Outputs:** `model` (`application/json`) — the input model,
//!   byte-for-byte.
//! - **Params:** none.
//! - **Metrics:** `pushed` — `1` when the model was pushed.
//!
//! Fails with `model not blessed: accuracy A < threshold T` when the
//! blessing says no; nothing is written then. The gate lives in
//! [`sluice_tabular::evaluation::Blessing::gate`].

use std::io;

use sluice_guest::{Ctx, Result};
use sluice_tabular::JSON_MEDIA_TYPE;
use sluice_tabular::evaluation::Blessing;

fn run(ctx: &mut Ctx) -> Result<()> {
    Blessing::read(ctx.input("blessing")?)?.gate()?;
    let mut model = ctx.input("model")?;
    let mut out = ctx.output("model", JSON_MEDIA_TYPE)?;
    io::copy(&mut model, &mut out)?;
    out.finish()?;
    ctx.metric("pushed", 1.0);
    Ok(())
}

sluice_guest::export_step!(run);
