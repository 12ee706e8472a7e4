//! Record-batch I/O (feature `arrow`): inputs and outputs as Apache Arrow
//! IPC streams, media type [`ARROW_STREAM_MEDIA_TYPE`].
//!
//! A step reads a table input as an iterator of [`RecordBatch`]es and
//! writes a table output from record batches; neither side ever holds more
//! than one batch, so a step can process tables far larger than its memory
//! limit. Opening an input again reads it again from the start (epochs).
//!
//! The schema is checked where the step declares one: [`Ctx::read_table`]
//! with an expected schema refuses an input whose columns differ (by name,
//! type or nullability), and [`TableWriter::write`] refuses a batch that
//! does not match the schema the output was created with. Reads are
//! strict: a stream that ends without its end-of-stream marker is a
//! truncated artifact and an error naming the byte offset, never a shorter
//! table.
//!
//! # A complete step
//!
//! Keeps the rows of `in` whose `score` is at least the parameter `min`:
//!
//! ```no_run
//! use std::sync::Arc;
//! use sluice_guest::arrow::array::cast::AsArray;
//! use sluice_guest::arrow::array::types::Float64Type;
//! use sluice_guest::arrow::select::filter::filter_record_batch;
//! use sluice_guest::arrow::schema::{DataType, Field, Schema};
//! use sluice_guest::{Ctx, Result};
//!
//! fn run(ctx: &mut Ctx) -> Result<()> {
//!     let min: f64 = ctx.param("min")?;
//!     let schema = Arc::new(Schema::new(vec![
//!         Field::new("id", DataType::Utf8, false),
//!         Field::new("score", DataType::Float64, false),
//!     ]));
//!     let input = ctx.read_table("in", Some(&schema))?;
//!     let mut out = ctx.write_table("out", schema.clone())?;
//!     for batch in input {
//!         let batch = batch?;
//!         let score = batch.column(1).as_primitive::<Float64Type>();
//!         let keep = score.iter().map(|s| Some(s? >= min)).collect();
//!         let kept = filter_record_batch(&batch, &keep)?;
//!         out.write(&kept)?;
//!     }
//!     let artifact = out.finish()?;
//!     ctx.metric("rows_out", artifact.rows as f64);
//!     Ok(())
//! }
//!
//! sluice_guest::export_step!(run);
//! ```
//!
//! with, in its `Cargo.toml`,
//! `sluice-guest = { version = "…", features = ["arrow"] }`.

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use std::io::{self, Read};

use crate::{Artifact, Ctx, Error, Input, Output, Result};

/// Media type of a table artifact: an Arrow IPC stream.
pub const ARROW_STREAM_MEDIA_TYPE: &str = "application/vnd.apache.arrow.stream";

/// The end-of-stream marker: a continuation token and a zero length.
const END_OF_STREAM: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];

impl Ctx {
    /// Opens the table input `name` as an iterator of record batches. The
    /// input must have been written as an Arrow IPC stream; with
    /// `expected`, its schema must have the same fields (names, types,
    /// nullability; metadata is not compared).
    pub fn read_table(&self, name: &str, expected: Option<&Schema>) -> Result<TableReader> {
        let media_type = self
            .inputs()
            .into_iter()
            .find(|a| a.name == name)
            .map(|a| a.media_type);
        if let Some(media_type) = media_type
            && media_type != ARROW_STREAM_MEDIA_TYPE
        {
            return Err(Error::msg(format_args!(
                "input `{name}` is `{media_type}`, not an Arrow IPC stream ({ARROW_STREAM_MEDIA_TYPE})"
            )));
        }
        let tracked = Tracked {
            inner: io::BufReader::with_capacity(1 << 20, self.input(name)?),
            offset: 0,
            tail: [0; 8],
        };
        let inner = StreamReader::try_new(tracked, None).map_err(|e| {
            Error::msg(format_args!(
                "input `{name}` at byte 0: not an Arrow IPC stream: {e}"
            ))
        })?;
        if let Some(expected) = expected {
            check_fields(&format!("input `{name}`"), expected, &inner.schema())?;
        }
        Ok(TableReader {
            name: name.to_owned(),
            inner,
            rows: 0,
            done: false,
        })
    }

    /// Starts the declared output `name` as an Arrow IPC stream of batches
    /// with `schema`.
    pub fn write_table(&self, name: &str, schema: SchemaRef) -> Result<TableWriter> {
        let output = self.output(name, ARROW_STREAM_MEDIA_TYPE)?;
        let inner = StreamWriter::try_new(output, &schema)
            .map_err(|e| Error::msg(format_args!("output `{name}`: {e}")))?;
        Ok(TableWriter {
            name: name.to_owned(),
            schema,
            inner,
            rows: 0,
        })
    }
}

/// Fails unless `found` has exactly the fields of `expected`, naming the
/// first difference.
fn check_fields(what: &str, expected: &Schema, found: &Schema) -> Result<()> {
    for (i, want) in expected.fields().iter().enumerate() {
        let Some(got) = found.fields().get(i) else {
            return Err(Error::msg(format_args!(
                "{what}: column {} `{}` is missing (the table has {} columns)",
                i + 1,
                want.name(),
                found.fields().len()
            )));
        };
        if got.name() != want.name()
            || got.data_type() != want.data_type()
            || got.is_nullable() != want.is_nullable()
        {
            let describe = |f: &arrow_schema::Field| {
                format!(
                    "`{}` {}{}",
                    f.name(),
                    f.data_type(),
                    if f.is_nullable() { " (nullable)" } else { "" }
                )
            };
            return Err(Error::msg(format_args!(
                "{what}: column {} is {}, expected {}",
                i + 1,
                describe(got),
                describe(want)
            )));
        }
    }
    if found.fields().len() > expected.fields().len() {
        let extra = &found.fields()[expected.fields().len()];
        return Err(Error::msg(format_args!(
            "{what}: unexpected column {} `{}` (expected {} columns)",
            expected.fields().len() + 1,
            extra.name(),
            expected.fields().len()
        )));
    }
    Ok(())
}

/// Counts the bytes the stream reader consumed and remembers the last 8,
/// to tell a finished stream from a truncated one.
struct Tracked<R> {
    inner: R,
    offset: u64,
    tail: [u8; 8],
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        if n >= 8 {
            self.tail.copy_from_slice(&buf[n - 8..n]);
        } else {
            self.tail.copy_within(n.., 0);
            self.tail[8 - n..].copy_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// A table input read batch by batch (see [`Ctx::read_table`]).
pub struct TableReader {
    name: String,
    inner: StreamReader<Tracked<io::BufReader<Input>>>,
    rows: u64,
    done: bool,
}

impl TableReader {
    /// The table's schema.
    pub fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    /// Rows read so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn offset(&self) -> u64 {
        self.inner.get_ref().offset
    }
}

impl Iterator for TableReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.inner.next() {
            Some(Ok(batch)) => {
                self.rows += batch.num_rows() as u64;
                Some(Ok(batch))
            }
            Some(Err(e)) => {
                self.done = true;
                Some(Err(Error::msg(format_args!(
                    "input `{}` at byte {}: malformed Arrow stream after {} rows: {e}",
                    self.name,
                    self.offset(),
                    self.rows
                ))))
            }
            None => {
                self.done = true;
                let tracked = self.inner.get_ref();
                (tracked.offset < 8 || tracked.tail != END_OF_STREAM).then(|| {
                    Err(Error::msg(format_args!(
                        "input `{}` at byte {}: the Arrow stream is truncated after {} rows (no end-of-stream marker)",
                        self.name, tracked.offset, self.rows
                    )))
                })
            }
        }
    }
}

/// A table output written batch by batch (see [`Ctx::write_table`]).
pub struct TableWriter {
    name: String,
    schema: SchemaRef,
    inner: StreamWriter<Output>,
    rows: u64,
}

/// What [`TableWriter::finish`] sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableArtifact {
    /// The artifact (digest, size, media type).
    pub artifact: Artifact,
    /// Rows written.
    pub rows: u64,
}

impl std::ops::Deref for TableArtifact {
    type Target = Artifact;

    fn deref(&self) -> &Artifact {
        &self.artifact
    }
}

impl TableWriter {
    /// Appends a batch; its columns must match the output's schema.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema_ref().fields() != self.schema.fields() {
            check_fields(
                &format!("a batch for output `{}`", self.name),
                &self.schema,
                batch.schema_ref(),
            )?;
        }
        self.inner.write(batch).map_err(|e| self.error(e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends the stream and seals the output.
    pub fn finish(mut self) -> Result<TableArtifact> {
        self.inner.finish().map_err(|e| self.error(e))?;
        let rows = self.rows;
        let name = self.name.clone();
        let output = self
            .inner
            .into_inner()
            .map_err(|e| Error::msg(format_args!("output `{name}`: {e}")))?;
        Ok(TableArtifact {
            artifact: output.finish()?,
            rows,
        })
    }

    fn error(&self, e: ArrowError) -> Error {
        Error::msg(format_args!("output `{}`: {e}", self.name))
    }
}
