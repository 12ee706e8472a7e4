//! `table-io`: the guest SDK's record-batch I/O under test.
//!
//! - **Inputs:** `in` — a table (Arrow IPC stream).
//! - **Outputs:** `out` — a table.
//! - **Params:** `mode`:
//!   - `copy` (default): every batch of `in` to `out`, unchanged; reads
//!     `in` `passes` times (default 1) and writes only the last pass, to
//!     show an input can be re-read;
//!   - `bytes`: the bytes of `in` to `out` as the host hands them over,
//!     nothing decoded: what the host API alone moves (`bench/data.sh`);
//!   - `expect`: reads `in` declaring the schema `label: Utf8, x: Float64`
//!     (both nullable), so any other input is refused by the SDK;
//!   - `bad-batch`: creates `out` with one schema and writes a batch of
//!     another, which the SDK refuses;
//!   - `seek`: random access to `in` (any bytes): writes to `out` its last
//!     4 bytes (seek from the end), then `len` bytes from byte `at` (seek
//!     from the start), then the 2 bytes before where that read ended (a
//!     seek back inside the SDK's buffer); then, with `past`, seeks to
//!     byte `past`, which fails when it is past the end.
//! - **Metrics:** `rows`, `batches`, `bytes_out`; `position` (`seek`).

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use sluice_guest::arrow::array::{Float64Array, RecordBatch};
use sluice_guest::arrow::schema::{DataType, Field, Schema};
use sluice_guest::{Ctx, Result, bail};

fn run(ctx: &mut Ctx) -> Result<()> {
    let mode: String = ctx.param_or("mode", "copy".to_owned())?;
    match mode.as_str() {
        "copy" => copy(ctx),
        "bytes" => {
            let mut input = ctx.input("in")?;
            let mut out = ctx.output("out", "application/vnd.apache.arrow.stream")?;
            // Whole host chunks, no copy through a stack buffer.
            let mut copied = 0u64;
            loop {
                let chunk = input.fill_buf()?;
                if chunk.is_empty() {
                    break;
                }
                out.write_all(chunk)?;
                let n = chunk.len();
                copied += n as u64;
                input.consume(n);
            }
            out.finish()?;
            ctx.metric("bytes_out", copied as f64);
            Ok(())
        }
        "expect" => {
            let schema = Schema::new(vec![
                Field::new("label", DataType::Utf8, true),
                Field::new("x", DataType::Float64, true),
            ]);
            let input = ctx.read_table("in", Some(&schema))?;
            let mut out = ctx.write_table("out", input.schema())?;
            for batch in input {
                out.write(&batch?)?;
            }
            out.finish()?;
            Ok(())
        }
        "bad-batch" => {
            let declared = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
            let other = Arc::new(Schema::new(vec![Field::new("y", DataType::Float64, false)]));
            let mut out = ctx.write_table("out", declared)?;
            let batch = RecordBatch::try_new(other, vec![Arc::new(Float64Array::from(vec![1.0]))])?;
            out.write(&batch)?;
            out.finish()?;
            Ok(())
        }
        "seek" => seek(ctx),
        other => bail!("unknown mode `{other}`"),
    }
}

fn copy(ctx: &mut Ctx) -> Result<()> {
    let passes: u32 = ctx.param_or("passes", 1)?;
    if passes == 0 {
        bail!("passes must be at least 1");
    }
    for _ in 1..passes {
        // Earlier passes only count, proving the input reads again in full.
        let rows: usize = ctx
            .read_table("in", None)?
            .map(|b| b.map(|b| b.num_rows()))
            .sum::<Result<usize>>()?;
        ctx.metric("rows_per_pass", rows as f64);
    }
    let input = ctx.read_table("in", None)?;
    let mut out = ctx.write_table("out", input.schema())?;
    let mut batches = 0u64;
    for batch in input {
        out.write(&batch?)?;
        batches += 1;
    }
    let artifact = out.finish()?;
    ctx.metric("rows", artifact.rows as f64);
    ctx.metric("batches", batches as f64);
    ctx.metric("bytes_out", artifact.size as f64);
    Ok(())
}

fn seek(ctx: &mut Ctx) -> Result<()> {
    let at: u64 = ctx.param("at")?;
    let len: u64 = ctx.param("len")?;
    let mut input = ctx.input("in")?;
    let mut bytes = Vec::new();
    input.seek(SeekFrom::End(-4))?;
    input.by_ref().take(4).read_to_end(&mut bytes)?;
    input.seek(SeekFrom::Start(at))?;
    input.by_ref().take(len).read_to_end(&mut bytes)?;
    input.seek(SeekFrom::Current(-2))?;
    input.by_ref().take(2).read_to_end(&mut bytes)?;
    ctx.metric("position", input.stream_position()? as f64);
    if let Some(past) = ctx.param_opt::<u64>("past")? {
        input.seek(SeekFrom::Start(past))?;
    }
    let mut out = ctx.output("out", "application/octet-stream")?;
    out.write_all(&bytes)?;
    out.finish()?;
    Ok(())
}

sluice_guest::export_step!(run);
