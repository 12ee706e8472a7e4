//! The data and model logic behind Sluice's example tabular pipeline
//! (`examples/pipelines/tabular.toml`): CSV ingest, column statistics,
//! schema validation, feature transform, softmax regression, a multi-layer
//! perceptron (trained by the `train-mlp` worker op) and evaluation;
//! and data drift between two examples files, behind the retraining loop of
//! `examples/pipelines/drift-retrain.toml`.
//!
//! Everything here is a pure function over [`std::io::Read`] /
//! [`std::io::Write`] and plain types, so it is unit-tested natively; the
//! step crates in `examples/steps/*` are thin wrappers that feed it the
//! step's inputs and parameters. It is not a general data-frame library, it
//! never touches the file system, and it knows nothing about Sluice itself.
//! It is a library at the repository root, not an example, because the
//! reference CPU worker (`workers/cpu`, linked by the engine) trains with
//! [`mlp`] too: one implementation of the model format for both.
//!
//! # The pipeline, module by module
//!
//! | step        | module         | reads                  | writes                        |
//! |-------------|----------------|------------------------|-------------------------------|
//! | `ingest`    | [`ingest`]     | CSV                    | train / eval *examples*       |
//! | `stats`     | [`stats`]      | examples               | statistics JSON               |
//! | `validate`  | [`validation`] | train + eval examples  | schema JSON, anomalies JSON   |
//! | `transform` | [`transform`]  | train + eval examples  | train / eval *datasets*, transform JSON |
//! | `train`     | [`model`]      | train dataset          | model JSON                    |
//! | `train-gpu` | [`mlp`] (in a worker) | train dataset   | MLP model JSON                |
//! | `evaluate`  | [`evaluation`] | model + eval dataset   | evaluation JSON, blessing JSON |
//! | `push`      | [`evaluation`] | model + blessing       | the model, if blessed         |
//! | `drift`     | [`drift`]      | reference + current examples | drift report JSON       |
//!
//! Two table formats connect the steps, both Apache Arrow IPC streams
//! ([`table`], media type `application/vnd.apache.arrow.stream`) read and
//! written a batch at a time, so every step's memory is independent of the
//! number of rows:
//!
//! - **Examples** ([`example`]): one nullable `Float64` (number) or `Utf8`
//!   (string) column per CSV column; the schema metadata `sluice.label`
//!   names the label column.
//! - **Datasets** ([`dataset`]): one `Float64` column per feature, then the
//!   label (`Utf8`); the schema metadata `sluice.classes` lists the classes.
//!
//! Every output is deterministic: no randomness outside the seeded
//! generator of [`mlp`], no hash-map iteration order, floats formatted by
//! `serde_json`. State is bounded by one of the limits below, never by the
//! number of rows (`ROWS_MAX` bounds only the in-memory [`example::Examples`]
//! and [`dataset::Dataset`] of tests and native workers).

#![warn(missing_docs)]

pub mod csv;
pub mod dataset;
pub mod distinct;
pub mod drift;
pub mod evaluation;
pub mod example;
pub mod generate;
pub mod ingest;
pub mod mlp;
pub mod model;
pub mod parquet;
pub mod profile;
pub mod quantile;
pub mod stats;
pub mod table;
pub mod transform;
pub mod validation;

mod error;

pub use error::{Error, Result};

/// Media type of the examples and dataset formats (JSON Lines).
pub const NDJSON_MEDIA_TYPE: &str = "application/x-ndjson";

/// Media type of every JSON document output.
pub const JSON_MEDIA_TYPE: &str = "application/json";

/// Most rows an in-memory [`example::Examples`] or [`dataset::Dataset`] may
/// hold (tests, native workers). Streaming steps have no row limit.
pub const ROWS_MAX: usize = 1_000_000;

/// Most columns a table may have; bounds per-column state and header size.
pub const COLUMNS_MAX: usize = 10_000;

/// Longest CSV record or JSON line, in bytes; bounds the read buffer so a
/// file without newlines cannot exhaust memory.
pub const LINE_BYTES_MAX: usize = 16 << 20;

/// Most distinct values a string column may have and still be treated as
/// categorical (schema categories, one-hot features). Beyond this the
/// column is free text: validation does not check its values and the
/// transform leaves it out.
pub const CATEGORIES_MAX: usize = 1_000;

/// Most distinct labels; a label with more is not a class label.
pub const CLASSES_MAX: usize = 1_000;

/// Most features after one-hot encoding.
pub const FEATURES_MAX: usize = 100_000;

/// Most feature values (rows × features) in a dataset held in memory:
/// 50 M `f64`s is 400 MB.
pub const DATASET_VALUES_MAX: usize = 50_000_000;

/// Most training epochs; each is a full pass over the data.
pub const EPOCHS_MAX: u32 = 100_000;

/// `"1 value"`, `"2 values"`: a count and a noun, plural unless 1.
pub(crate) fn count_of(count: u64, singular: &str, plural: &str) -> String {
    if count == 1 {
        format!("1 {singular}")
    } else {
        format!("{count} {plural}")
    }
}

/// Writes `value` as pretty-printed JSON followed by a newline.
pub(crate) fn write_json_document<T: serde::Serialize>(
    mut w: impl std::io::Write,
    value: &T,
) -> Result<()> {
    serde_json::to_writer_pretty(&mut w, value).map_err(Error::from_json_write)?;
    w.write_all(b"\n")?;
    Ok(())
}

/// Reads lines of at most [`LINE_BYTES_MAX`] each; `line` is 1-based.
///
/// Reads the input in blocks of [`LineReader::BLOCK`] bytes into one
/// buffer and hands out lines as slices of it, so a line is copied once
/// (from the input into the buffer) whatever its length; the buffer grows
/// past one block only for a line longer than that.
pub(crate) struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    /// The unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    line: u64,
    what: &'static str,
}

impl<R: std::io::Read> LineReader<R> {
    /// Bytes asked of the input per read.
    const BLOCK: usize = 256 * 1024;

    pub(crate) fn new(reader: R, what: &'static str) -> Self {
        LineReader {
            reader,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            line: 0,
            what,
        }
    }

    /// The next physical line without its `\n` / `\r\n` terminator, and its
    /// number; `None` at end of input.
    pub(crate) fn next_line(&mut self) -> Result<Option<(u64, &[u8])>> {
        let mut scanned = self.start;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[scanned..self.end]) {
                let (from, newline) = (self.start, scanned + i);
                self.start = newline + 1;
                self.check_length(newline - from)?;
                self.line += 1;
                let line = &self.buf[from..newline];
                return Ok(Some((self.line, line.strip_suffix(b"\r").unwrap_or(line))));
            }
            scanned = self.end;
            self.check_length(self.end - self.start)?;
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let from = std::mem::replace(&mut self.start, self.end);
                self.line += 1;
                return Ok(Some((self.line, &self.buf[from..self.end])));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                scanned -= self.start;
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() < self.end + Self::BLOCK {
                self.buf.resize(self.end + Self::BLOCK, 0);
            }
            let n = loop {
                match self.reader.read(&mut self.buf[self.end..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            };
            self.end += n;
            self.eof = n == 0;
        }
    }

    /// Fails if the line being read, `len` bytes so far, is too long.
    fn check_length(&self, len: usize) -> Result<()> {
        if len > LINE_BYTES_MAX {
            return Err(Error::Format {
                what: self.what,
                line: self.line + 1,
                message: format!("line longer than {LINE_BYTES_MAX} bytes"),
            });
        }
        Ok(())
    }
}

/// Fixtures shared by the unit tests.
#[cfg(test)]
mod test_support {
    use crate::transform::Dataset;

    /// A dataset of `y.len()` rows of `d` features `f0..`, classes sorted.
    pub fn dataset(x: &[f64], y: &[&str], d: usize) -> Dataset {
        let mut classes: Vec<String> = y.iter().map(|s| s.to_string()).collect();
        classes.sort();
        classes.dedup();
        Dataset {
            features: (0..d).map(|j| format!("f{j}")).collect(),
            classes,
            x: x.to_vec(),
            y: y.iter().map(|s| s.to_string()).collect(),
        }
    }
}
