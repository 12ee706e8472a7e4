//! The scope a step's `when` condition is evaluated in.
//!
//! Invariant: a condition sees params and the metrics, statuses and small
//! outputs of steps that have settled, nothing else.
//! Boundary: reads reports and small blobs; writes nothing.

use std::collections::BTreeMap;

use super::{StepReport, StepStatus};
use crate::expr::Unresolved;
use crate::spec::Pipeline;
use crate::store::Store;

/// Largest output a condition reads (`STEP.outputs.NAME`).
pub const CONDITION_OUTPUT_BYTES_MAX: u64 = 64 * 1024;

/// What a `when` condition sees: params, and metrics, statuses and small
/// outputs of the steps that have settled.
pub(crate) struct ConditionScope<'a> {
    pub(super) pipeline: &'a Pipeline,
    pub(super) store: &'a Store,
    pub(super) reports: &'a [Option<StepReport>],
    /// The step's own sweep combination, which overrides pipeline params.
    pub(super) sweep: &'a BTreeMap<String, String>,
}

impl crate::expr::Scope for ConditionScope<'_> {
    fn lookup(&self, r: &crate::expr::Ref) -> Result<crate::expr::Value, Unresolved> {
        use crate::expr::{Ref, Value};
        let report = |step: &str| {
            self.pipeline
                .step_index(step)
                .and_then(|i| self.reports[i].as_ref())
                .ok_or_else(|| Unresolved::NotRun(step.to_string()))
        };
        match r {
            Ref::Param(p) => self
                .sweep
                .get(p)
                .or_else(|| self.pipeline.params.get(p))
                .map(|v| Value::Str(v.clone()))
                .ok_or_else(|| Unresolved::NoParam(p.clone())),
            Ref::Metric { step, name } => report(step)?
                .metrics
                .get(name)
                .map(|v| Value::Num(*v))
                .ok_or_else(|| Unresolved::NoMetric {
                    step: step.clone(),
                    name: name.clone(),
                }),
            Ref::Output {
                step,
                output,
                field,
            } => {
                let o = report(step)?
                    .outputs
                    .get(output)
                    .ok_or_else(|| Unresolved::NoOutput {
                        step: step.clone(),
                        output: output.clone(),
                    })?;
                if o.size > CONDITION_OUTPUT_BYTES_MAX {
                    return Err(Unresolved::OutputTooLarge {
                        step: step.clone(),
                        output: output.clone(),
                        size: o.size,
                        max: CONDITION_OUTPUT_BYTES_MAX,
                    });
                }
                let bytes = self
                    .store
                    .read_bytes(&o.digest)
                    .map_err(|e| Unresolved::Unreadable(e.to_string()))?;
                let text = String::from_utf8_lossy(&bytes);
                let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
                let value = match field {
                    None => {
                        json.unwrap_or_else(|| serde_json::Value::String(text.trim().to_string()))
                    }
                    Some(f) => json
                        .as_ref()
                        .and_then(|j| j.get(f.as_str()))
                        .cloned()
                        .ok_or_else(|| Unresolved::NoField {
                            step: step.clone(),
                            output: output.clone(),
                            field: f.clone(),
                        })?,
                };
                match value {
                    serde_json::Value::Bool(b) => Ok(Value::Bool(b)),
                    serde_json::Value::Number(n) => Ok(Value::Num(n.as_f64().unwrap_or(f64::NAN))),
                    serde_json::Value::String(s) => Ok(Value::Str(s)),
                    other => Err(Unresolved::NotScalar {
                        reference: r.to_string(),
                        value: other.to_string(),
                    }),
                }
            }
            // A cached step succeeded (its result came from the cache).
            Ref::Status(step) => Ok(Value::Str(
                match report(step)?.status {
                    StepStatus::Succeeded | StepStatus::Cached => "succeeded",
                    StepStatus::Failed => "failed",
                    StepStatus::Skipped => "skipped",
                }
                .to_string(),
            )),
        }
    }
}
