//! `${params.NAME}` interpolation: resolves templates against the
//! pipeline's params (a sweep combination shadowing them), bounds what
//! they expand to, and reads references without resolving.
//!
//! Invariant: no interpolated string exceeds [`INTERPOLATED_BYTES_MAX`] and
//! a spec's interpolated bytes never exceed [`PARAM_BYTES_MAX`] in total;
//! both are refused before the string grows past them.
//! Boundary: pure string work.

use std::collections::BTreeMap;
use std::ops::Range;

use super::model::{INTERPOLATED_BYTES_MAX, PARAM_BYTES_MAX};
use super::toml::Validator;

impl Validator {
    /// Resolves `${params.NAME}` in `raw`, reporting problems at `span`.
    pub(super) fn interpolate(
        &mut self,
        raw: &str,
        span: &Range<usize>,
        what: &str,
        params: &BTreeMap<String, String>,
    ) -> Option<String> {
        match interpolate(raw, params) {
            Ok(s) => {
                let before = self.param_bytes;
                self.param_bytes = before.saturating_add(s.len());
                if self.param_bytes > PARAM_BYTES_MAX {
                    // Reported once, where the budget ran out.
                    if before <= PARAM_BYTES_MAX {
                        self.error(
                            span,
                            format!(
                                "{what}: the spec's interpolated values exceed {PARAM_BYTES_MAX} bytes in total"
                            ),
                        );
                    }
                    return None;
                }
                Some(s)
            }
            Err(errors) => {
                for e in errors {
                    self.error(span, format!("{what}: {e}"));
                }
                None
            }
        }
    }
}

/// Why a `${...}` template cannot be resolved; each names its offender.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    /// A `${` without its `}`.
    #[error("unterminated `${{` in {template:?}")]
    Unterminated {
        /// The template as written.
        template: String,
    },
    /// `${params.NAME}` where the pipeline declares no `NAME`.
    #[error("`${{{expr}}}` names unknown param `{param}`; declared: {}", declared_list(.declared))]
    UnknownParam {
        /// The text between the braces, trimmed.
        expr: String,
        /// The param named.
        param: String,
        /// The params the pipeline declares, sorted.
        declared: Vec<String>,
    },
    /// `${anything else}`.
    #[error("unsupported interpolation `${{{expr}}}`; only `${{params.NAME}}` is allowed")]
    Unsupported {
        /// The text between the braces, trimmed.
        expr: String,
    },
    /// The result would pass [`INTERPOLATED_BYTES_MAX`].
    #[error("expands to more than {INTERPOLATED_BYTES_MAX} bytes")]
    TooLong,
}

fn declared_list(declared: &[String]) -> String {
    if declared.is_empty() {
        "none".to_string()
    } else {
        declared.join(", ")
    }
}

/// Resolves `${params.NAME}` in `raw`, or lists every problem. The
/// result is at most [`INTERPOLATED_BYTES_MAX`] bytes: it is refused before
/// it grows past that.
pub(super) fn interpolate(
    raw: &str,
    params: &BTreeMap<String, String>,
) -> Result<String, Vec<InterpolateError>> {
    interpolate_over(raw, &BTreeMap::new(), params)
}

/// [`interpolate`] where `overlay` (a sweep combination) shadows `params`,
/// so a fanned-out copy needs no merged copy of all params.
fn interpolate_over(
    raw: &str,
    overlay: &BTreeMap<String, String>,
    params: &BTreeMap<String, String>,
) -> Result<String, Vec<InterpolateError>> {
    let mut out = String::new();
    let mut rest = raw;
    let mut errors = Vec::new();
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            errors.push(InterpolateError::Unterminated {
                template: raw.to_string(),
            });
            return Err(errors);
        };
        let expr = after[..end].trim();
        let value = expr
            .strip_prefix("params.")
            .map(|p| (p, overlay.get(p).or_else(|| params.get(p))));
        match value {
            Some((_, Some(v))) => {
                if out.len().saturating_add(v.len()) > INTERPOLATED_BYTES_MAX {
                    errors.push(InterpolateError::TooLong);
                    return Err(errors);
                }
                out.push_str(v);
            }
            Some((p, None)) => errors.push(InterpolateError::UnknownParam {
                expr: expr.to_string(),
                param: p.to_string(),
                declared: params.keys().cloned().collect(),
            }),
            None => errors.push(InterpolateError::Unsupported {
                expr: expr.to_string(),
            }),
        }
        rest = &after[end + 1..];
    }
    if out.len().saturating_add(rest.len()) > INTERPOLATED_BYTES_MAX {
        errors.push(InterpolateError::TooLong);
        return Err(errors);
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// `${params.NAME}` substitution of a template already validated against
/// these params, with a sweep combination shadowing them.
pub(super) fn substitute_over(
    template: &str,
    overlay: &BTreeMap<String, String>,
    params: &BTreeMap<String, String>,
) -> String {
    interpolate_over(template, overlay, params).unwrap_or_else(|_| template.to_string())
}

/// The param names a template references (`${params.NAME}`, trimmed).
pub(super) fn param_refs(template: &str) -> impl Iterator<Item = &str> {
    template.split("${").skip(1).filter_map(|part| {
        part.split_once('}')
            .and_then(|(expr, _)| expr.trim().strip_prefix("params."))
    })
}

/// An upper bound of the bytes `template` resolves to when each reference
/// is replaced by a value of at most `value_bytes_max` bytes (computed
/// without resolving it).
pub(super) fn resolved_bytes_max(template: &str, value_bytes_max: usize) -> usize {
    let refs = template.matches("${").count();
    template
        .len()
        .saturating_add(refs.saturating_mul(value_bytes_max))
        .min(INTERPOLATED_BYTES_MAX)
}
