//! Reading one section of the engine config file: typed reads of TOML
//! values that fail with a [`ConfigError`] naming the file, the line and
//! column of the offending key or value, and the key.
//!
//! Invariant: every error a read returns carries the config file's path
//! and, when it concerns a key or value, its position; an unknown key is
//! always an error, never ignored.
//! Boundary: pure; a leaf over `toml` and `position`. Which sections exist
//! is `config`'s business, what a section means is its owner's (`config`
//! for `[server]` and `[[tokens]]`, `hook` for `[hooks.*]`, `gpu::config`
//! for `[workers.*]`).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::position::LineIndex;

/// A TOML value with its byte span in the config file.
pub type Value<'i> = Spanned<DeValue<'i>>;

/// A config file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line and column of the offending key or value; `None` when
    /// the problem is the whole file (it cannot be read).
    pub at: Option<(usize, usize)>,
    /// What is wrong, naming the table and key.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// The config file being read: its path (for messages and for resolving
/// relative paths) and where its lines start.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    lines: LineIndex,
}

impl Source {
    /// `text`, read from `path`.
    pub fn new(path: &Path, text: &str) -> Source {
        Source {
            path: path.to_path_buf(),
            lines: LineIndex::new(text),
        }
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory relative paths in the file resolve against.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// An error about the whole file.
    pub fn file_error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            at: None,
            message: message.into(),
        }
    }

    /// An error at the start of `span`.
    pub fn error(&self, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            at: Some(self.lines.position(span.start)),
            message: message.into(),
        }
    }

    /// `value` as a table; otherwise `{place} must be a table, found ...`.
    pub fn table<'v, 'i>(
        &self,
        value: &'v Value<'i>,
        place: &str,
    ) -> Result<&'v DeTable<'i>, ConfigError> {
        value.get_ref().as_table().ok_or_else(|| {
            self.error(
                &value.span(),
                format!(
                    "{place} must be a table, found {}",
                    value.get_ref().type_str()
                ),
            )
        })
    }

    /// Refuses the first key of `table` not in `allowed`, at the key.
    pub fn check_keys(
        &self,
        table: &DeTable<'_>,
        place: &str,
        allowed: &[&str],
    ) -> Result<(), ConfigError> {
        match table
            .iter()
            .find(|(k, _)| !allowed.contains(&k.get_ref().as_ref()))
        {
            Some((key, _)) => Err(self.error(
                &key.span(),
                format!(
                    "unknown key `{}` in {place}; expected one of: {}",
                    key.get_ref(),
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// `value` deserialized as `T`; a mismatch is reported where toml
    /// found it (the value itself when it does not say), after `place`.
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        value: &Value<'_>,
        place: &str,
    ) -> Result<T, ConfigError> {
        T::deserialize(value.clone().into_deserializer()).map_err(|e| {
            let span = e.span().unwrap_or_else(|| value.span());
            self.error(&span, format!("{place}: {}", e.message().trim()))
        })
    }

    /// `value` as a string; otherwise `{what} must be a string, found ...`.
    pub fn string<'v>(&self, value: &'v Value<'_>, what: &str) -> Result<&'v str, ConfigError> {
        value
            .get_ref()
            .as_str()
            .ok_or_else(|| self.type_error(value, what, "a string"))
    }

    /// `{what} must be {expected}, found {the value's type}`, at `value`.
    pub fn type_error(&self, value: &Value<'_>, what: &str, expected: &str) -> ConfigError {
        self.error(
            &value.span(),
            format!(
                "{what} must be {expected}, found {}",
                value.get_ref().type_str()
            ),
        )
    }
}

/// The value of a TOML integer, if it fits an `i64`.
pub fn integer(value: &Value<'_>) -> Option<i64> {
    let i = value.get_ref().as_integer()?;
    let digits = i.as_str().replace('_', "");
    let digits = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0o"))
        .or_else(|| digits.strip_prefix("0b"))
        .unwrap_or(&digits);
    i64::from_str_radix(digits, i.radix()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Spanned<DeTable<'_>> {
        DeTable::parse(text).unwrap()
    }

    #[test]
    fn unknown_keys_are_refused_at_the_key() {
        let text = "[server]\nlisten = \"x\"\n  lisen = 1\n";
        let source = Source::new(Path::new("c.toml"), text);
        let root = root(text);
        let server = source
            .table(root.get_ref().get("server").unwrap(), "[server]")
            .unwrap();
        assert_eq!(
            source
                .check_keys(server, "[server]", &["listen"])
                .unwrap_err()
                .to_string(),
            "c.toml:3:3: unknown key `lisen` in [server]; expected one of: listen"
        );
    }

    #[test]
    fn deserialize_errors_point_at_the_value() {
        let text = "[server]\nmax = \"many\"\n";
        let source = Source::new(Path::new("c.toml"), text);
        let root = root(text);
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct S {
            max: u32,
        }
        let e = source
            .deserialize::<S>(root.get_ref().get("server").unwrap(), "[server]")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml:2:7: [server]: invalid type: string \"many\", expected u32"
        );
    }

    #[test]
    fn integers_read_every_radix() {
        let text = "a = 0x1f\nb = 1_000\nc = -3\nd = \"x\"\n";
        let root = root(text);
        let get = |k: &str| integer(root.get_ref().get(k).unwrap());
        assert_eq!(
            (get("a"), get("b"), get("c"), get("d")),
            (Some(31), Some(1000), Some(-3), None)
        );
    }
}
