//! Pipeline specs: TOML text → a validated DAG ([`Pipeline`]).
//!
//! Invariant: [`load`] either returns a pipeline whose every reference,
//! interpolation, limit and component path has been checked and whose steps
//! are in a topological order, or *all* problems found, each with file, line
//! and column. Nothing downstream re-validates.
//! Boundary: reads the spec file and stats the paths it names; builds and
//! runs nothing. Imports only the model's leaves (`expr`, `limits`,
//! `policy`, `digest`, `position`), never a runtime module.
//!
//! The stages, one module each: `model` (what a validated spec is),
//! `toml` (typed reads of TOML values), `pipeline` (the
//! top-level table), `step` (one `[steps.NAME]` table), `param`
//! (`${params.NAME}` interpolation), `link` (references, exit handlers and
//! topological order) and `sweep` (the grid and the fan-out).

mod link;
mod model;
mod param;
mod pipeline;
mod step;
mod sweep;
mod toml;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::path::Path;

use ::toml::de::DeTable;

use crate::policy::PathPolicy;
use crate::position::LineIndex;

pub use model::{
    ComponentSource, EXPANDED_EDGES_MAX, ExecutorKind, Finally, GRANT_KEYS, Grant,
    INTERPOLATED_BYTES_MAX, InputRef, JOBS_MAX_CEILING, JOBS_MAX_DEFAULT,
    MIN_FREE_MEMORY_MIB_CEILING, PARAM_BYTES_MAX, PORTS_PER_STEP_MAX, Pipeline, RETRIES_MAX,
    SPEC_BYTES_MAX, STEPS_MAX, SWEEP_COMBINATIONS_MAX, SpecError, Step, is_kind_name, parse_cron,
};
pub use param::InterpolateError;
use toml::Validator;

/// Reads and validates the spec at `path`, applying `--param` overrides,
/// with no path restriction (every file is the caller's own).
pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Pipeline, Vec<SpecError>> {
    load_with(path, overrides, &PathPolicy::anywhere())
}

/// Like [`load`], but the spec file, its sources and its components must
/// pass `policy` (checked before anything is read or stat'ed, so a refusal
/// says nothing about whether the path exists).
pub fn load_with(
    path: &Path,
    overrides: &[(String, String)],
    policy: &PathPolicy,
) -> Result<Pipeline, Vec<SpecError>> {
    let at_file = |message: String| {
        vec![SpecError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message,
            denied: false,
        }]
    };
    if let Err(e) = policy.check(path) {
        return Err(vec![SpecError {
            message: format!("spec {e}"),
            denied: true,
            ..at_file(String::new()).remove(0)
        }]);
    }
    match std::fs::metadata(path) {
        Ok(m) if m.len() > SPEC_BYTES_MAX => {
            return Err(at_file(format!(
                "spec is {} bytes; the limit is {SPEC_BYTES_MAX}",
                m.len()
            )));
        }
        Ok(_) => {}
        Err(e) => return Err(at_file(format!("cannot read spec: {e}"))),
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return Err(at_file(format!("cannot read spec: {e}"))),
    };
    parse_with(path, &text, overrides, policy)
}

/// Validates spec `text` as if read from `path` (paths resolve against its
/// directory), with no path restriction.
pub fn parse(
    path: &Path,
    text: &str,
    overrides: &[(String, String)],
) -> Result<Pipeline, Vec<SpecError>> {
    parse_with(path, text, overrides, &PathPolicy::anywhere())
}

/// Like [`parse`], but sources and components must pass `policy`.
pub fn parse_with(
    path: &Path,
    text: &str,
    overrides: &[(String, String)],
    policy: &PathPolicy,
) -> Result<Pipeline, Vec<SpecError>> {
    let mut v = Validator {
        policy: policy.clone(),
        param_bytes: 0,
        file: path.to_path_buf(),
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        lines: LineIndex::new(text),
        errors: Vec::new(),
    };
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            v.error(&span, format!("invalid TOML: {}", e.message().trim()));
            return Err(v.errors);
        }
    };
    let pipeline = v.pipeline(root.get_ref(), &root.span(), text, overrides);
    if v.errors.is_empty() {
        Ok(pipeline.expect("a pipeline when there are no errors"))
    } else {
        v.errors.sort_by_key(|e| (e.line, e.column));
        Err(v.errors)
    }
}
