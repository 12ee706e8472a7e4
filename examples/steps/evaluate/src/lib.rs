//! `evaluate`: scores the model on the eval dataset and blesses it when its
//! accuracy reaches a threshold.
//!
//! - **Inputs:** `model` (`application/json`) from `train` (softmax
//!   regression) or `train-gpu` (an MLP) — either kind, told apart by its
//!   `kind`; `eval` — a dataset (`application/vnd.apache.arrow.stream`)
//!   from `transform`, streamed a batch at a time (memory is bounded by
//!   the classes, not the rows).
//! - **Outputs:** `evaluation` (`application/json`) — accuracy, macro F1,
//!   per-class precision/recall/F1/support and the confusion matrix;
//!   `blessing` (`application/json`) —
//!   `{"blessed": bool, "accuracy": x, "threshold": t}`.
//! - **Params:** `threshold` (default `0.8`) — the accuracy needed.
//! - **Metrics:** `accuracy`, `macro_f1`, `blessed` (`1` or `0`).
//!
//! An unblessed model is not an error here; `push` is the gate. The logic
//! lives in [`sluice_tabular::evaluation`]; the dispatch over model kinds
//! in [`sluice_tabular::model::AnyModel`].

use sluice_guest::{Ctx, Result};
use sluice_tabular::JSON_MEDIA_TYPE;
use sluice_tabular::evaluation::{Blessing, evaluate};
use sluice_tabular::model::AnyModel;

fn run(ctx: &mut Ctx) -> Result<()> {
    let threshold: f64 = ctx.param_or("threshold", 0.8)?;
    let model = AnyModel::read(ctx.input("model")?)?;
    let evaluation = evaluate(&model, ctx.input("eval")?)?;
    let blessing = Blessing::new(&evaluation, threshold)?;

    let mut out = ctx.output("evaluation", JSON_MEDIA_TYPE)?;
    evaluation.write(&mut out)?;
    out.finish()?;
    let mut out = ctx.output("blessing", JSON_MEDIA_TYPE)?;
    blessing.write(&mut out)?;
    out.finish()?;

    ctx.metric("accuracy", evaluation.accuracy);
    ctx.metric("macro_f1", evaluation.macro_f1);
    ctx.metric("blessed", if blessing.blessed { 1.0 } else { 0.0 });
    Ok(())
}

sluice_guest::export_step!(run);
