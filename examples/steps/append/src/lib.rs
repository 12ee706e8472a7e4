//! `append`: copies input `in` to output `out` and appends the parameter
//! `line` plus a newline. Used by tests and the chain benchmark.

use std::io::{self, Write};

use sluice_guest::{Ctx, Result};

fn run(ctx: &mut Ctx) -> Result<()> {
    let line: String = ctx.param("line")?;
    let mut input = ctx.input("in")?;
    let mut out = ctx.output("out", "text/plain")?;
    let copied = io::copy(&mut input, &mut out)?;
    writeln!(out, "{line}")?;
    out.finish()?;
    ctx.metric("bytes_copied", copied as f64);
    Ok(())
}

sluice_guest::export_step!(run);
