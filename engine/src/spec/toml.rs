//! Typed reads of TOML values for the validator: every read that fails records a
//! [`SpecError`] naming what was expected and what was found.
//!
//! Invariant: a read either returns the value or records exactly one error
//! at the value's span; it never panics on any TOML.
//! Boundary: no IO except stat'ing a path that the [`PathPolicy`] admits
//! (`permitted` is checked first).

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::SpecError;
use crate::policy::PathPolicy;
use crate::position::LineIndex;

pub(super) type Table<'i> = DeTable<'i>;

pub(super) struct Validator {
    pub(super) policy: PathPolicy,
    /// Bytes of interpolated strings so far (bounded by [`PARAM_BYTES_MAX`]).
    pub(super) param_bytes: usize,
    pub(super) file: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) lines: LineIndex,
    pub(super) errors: Vec<SpecError>,
}

pub(super) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(super) const NAME_RULE: &str =
    "1-64 characters of [A-Za-z0-9_-], starting with a letter or digit";

impl Validator {
    pub(super) fn error(&mut self, span: &Range<usize>, message: String) {
        let (line, column) = self.lines.position(span.start);
        self.errors.push(SpecError {
            file: self.file.clone(),
            line,
            column,
            message,
            denied: false,
        });
    }

    /// Checks `path` (`rel` as written) against the policy before it is
    /// stat'ed; a refusal is reported at `span` naming `what` and `rel`
    /// only (never the resolved path).
    pub(super) fn permitted(
        &mut self,
        path: &Path,
        rel: &str,
        span: &Range<usize>,
        what: &str,
    ) -> bool {
        let Err(e) = self.policy.check(path) else {
            return true;
        };
        self.error(span, format!("{what} {rel:?} {e}"));
        if let Some(last) = self.errors.last_mut() {
            last.denied = true;
        }
        false
    }

    pub(super) fn unknown_key(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        place: &str,
        allowed: &[&str],
    ) {
        self.error(
            &key.span(),
            format!(
                "unknown field `{}` in {place}; expected one of: {}",
                key.get_ref(),
                allowed.join(", ")
            ),
        );
    }

    /// An executor name (`local`, `process`).
    pub(super) fn executor_kind(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        what: &str,
    ) -> Option<super::ExecutorKind> {
        let name = self.string(value, what)?;
        match name.parse() {
            Ok(kind) => Some(kind),
            Err(e) => {
                self.error(&value.span(), format!("{what}: {e}"));
                None
            }
        }
    }

    pub(super) fn string<'v>(
        &mut self,
        value: &'v Spanned<DeValue<'_>>,
        what: &str,
    ) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                self.error(
                    &value.span(),
                    format!("{what} must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn table<'v, 'i>(
        &mut self,
        value: &'v Spanned<DeValue<'i>>,
        what: &str,
    ) -> Option<&'v Table<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.error(
                    &value.span(),
                    format!("{what} must be a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn integer(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        what: &str,
        max: u64,
    ) -> Option<u64> {
        let parsed = match value.get_ref() {
            DeValue::Integer(i) => {
                let digits = i.as_str().replace('_', "");
                let digits = digits
                    .strip_prefix("0x")
                    .or_else(|| digits.strip_prefix("0o"))
                    .or_else(|| digits.strip_prefix("0b"))
                    .unwrap_or(&digits)
                    .to_string();
                i64::from_str_radix(&digits, i.radix()).ok()
            }
            _ => None,
        };
        match parsed {
            Some(n) if n >= 0 && (n as u64) <= max => Some(n as u64),
            Some(n) => {
                self.error(
                    &value.span(),
                    format!("{what} must be between 0 and {max}, found {n}"),
                );
                None
            }
            None => {
                self.error(
                    &value.span(),
                    format!(
                        "{what} must be an integer, found {}",
                        value.get_ref().type_str()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, value: &Spanned<DeValue<'_>>, what: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    &value.span(),
                    format!("{what} must be a boolean, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A param value: strings as is, numbers and booleans in their TOML text.
    pub(super) fn scalar(&mut self, value: &Spanned<DeValue<'_>>, what: &str) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            DeValue::Integer(i) => Some(i.as_str().replace('_', "")),
            DeValue::Float(f) => Some(f.as_str().replace('_', "")),
            DeValue::Boolean(b) => Some(b.to_string()),
            other => {
                self.error(
                    &value.span(),
                    format!(
                        "{what} must be a string, number or boolean, found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn name(&mut self, span: &Range<usize>, name: &str, what: &str) -> bool {
        if is_name(name) {
            return true;
        }
        self.error(
            span,
            format!("invalid {what} name {name:?}: use {NAME_RULE}"),
        );
        false
    }
}
