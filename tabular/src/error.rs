//! The crate's one error type. Every variant names what went wrong with
//! enough context (a line number, a column, a limit) to fix the input.

use std::fmt;
use std::io;

/// Why a function of this crate failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading an input or writing an output failed.
    Io(io::Error),
    /// A line of a line-oriented input (`what`: `CSV`, `examples`,
    /// `dataset`) is malformed; `line` is 1-based.
    Format {
        /// Which format.
        what: &'static str,
        /// The 1-based line number.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// A row of a table input (`what`: `examples`, `dataset`) is unusable;
    /// `row` is 1-based.
    Row {
        /// Which input.
        what: &'static str,
        /// The 1-based row number.
        row: u64,
        /// What is wrong with it.
        message: String,
    },
    /// A binary stream input (`what`: `examples`, `dataset`) is malformed
    /// or truncated; `offset` is the byte where reading stopped.
    Stream {
        /// Which input.
        what: &'static str,
        /// The byte offset.
        offset: u64,
        /// What is wrong with it.
        message: String,
    },
    /// A JSON document input (`what`: `model`, `blessing`) is malformed.
    Document {
        /// Which document.
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The input exceeds one of the crate's limits.
    Limit {
        /// What there is too much of.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The input is well-formed but unusable (no label column, an empty
    /// training set, a bad parameter value, …).
    Invalid(String),
    /// Training was stopped by its caller (cancelled, or out of time)
    /// before it finished.
    Stopped {
        /// The 0-based epoch it stopped in.
        epoch: u32,
        /// The epochs it was to run.
        epochs: u32,
    },
    /// The push gate: the evaluation did not bless the model.
    NotBlessed {
        /// The model's evaluation accuracy.
        accuracy: f64,
        /// The accuracy it needed.
        threshold: f64,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(message: impl fmt::Display) -> Self {
        Error::Invalid(message.to_string())
    }

    pub(crate) fn from_json_write(e: serde_json::Error) -> Self {
        Error::Io(e.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::Format {
                what,
                line,
                message,
            } => write!(f, "{what} line {line}: {message}"),
            Error::Row { what, row, message } => write!(f, "{what} row {row}: {message}"),
            Error::Stream {
                what,
                offset,
                message,
            } => write!(f, "{what} at byte {offset}: {message}"),
            Error::Document { what, message } => write!(f, "{what}: {message}"),
            Error::Limit { what, limit } => write!(f, "too many {what} (limit {limit})"),
            Error::Invalid(message) => f.write_str(message),
            Error::Stopped { epoch, epochs } => {
                write!(f, "training stopped in epoch {} of {epochs}", epoch + 1)
            }
            Error::NotBlessed {
                accuracy,
                threshold,
            } => write!(
                f,
                "model not blessed: accuracy {accuracy} < threshold {threshold}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl Error {
    /// A [`Error::Format`] error in `what` at 1-based `line`.
    pub fn format(what: &'static str, line: u64, message: impl Into<String>) -> Error {
        Error::Format {
            what,
            line,
            message: message.into(),
        }
    }
}
