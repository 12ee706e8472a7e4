//! `validate`: infers a data schema from the train examples and checks the
//! eval examples against it, streaming each once (memory independent of
//! the row count).
//!
//! - **Inputs:** `train`, `eval` — examples
//!   (`application/vnd.apache.arrow.stream`).
//! - **Outputs:** `schema` (`application/json`) — per column its type, the
//!   training range (numbers) or categories (strings; `null` for free text,
//!   a column of more than 1000 distinct values, which is not checked), and
//!   whether missing values were seen; `anomalies` (`application/json`) —
//!   an array of `{column, kind, count, detail, examples, rows}`, `kind` one of
//!   `missing_column`, `type_mismatch`, `missing`, `out_of_range`,
//!   `unseen_category`.
//! - **Params:** `fail_on_anomalies` (bool, default `false`) — fail the
//!   step, naming the first anomaly, when there is any.
//! - **Metrics:** `anomalies` — the number of anomaly entries.
//!
//! Both outputs are written before the step fails, so the anomalies of a
//! failed run can be inspected. The logic lives in
//! [`sluice_tabular::validation`].

use sluice_guest::{Ctx, Result, bail};
use sluice_tabular::JSON_MEDIA_TYPE;
use sluice_tabular::validation::{DataSchema, find_anomalies, write_anomalies};

fn run(ctx: &mut Ctx) -> Result<()> {
    let fail_on_anomalies: bool = ctx.param_or("fail_on_anomalies", false)?;
    let schema = DataSchema::read(ctx.input("train")?)?;
    let anomalies = find_anomalies(&schema, ctx.input("eval")?)?;

    let mut out = ctx.output("schema", JSON_MEDIA_TYPE)?;
    schema.write(&mut out)?;
    out.finish()?;
    let mut out = ctx.output("anomalies", JSON_MEDIA_TYPE)?;
    write_anomalies(&anomalies, &mut out)?;
    out.finish()?;
    ctx.metric("anomalies", anomalies.len() as f64);

    if fail_on_anomalies && let Some(first) = anomalies.first() {
        let n = anomalies.len();
        let noun = if n == 1 { "anomaly" } else { "anomalies" };
        bail!("{n} {noun} in eval; first: {first}");
    }
    Ok(())
}

sluice_guest::export_step!(run);
