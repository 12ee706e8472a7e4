//! Apache Arrow IPC streams: the format of every table passed between the
//! tabular steps.
//!
//! A table artifact is an Arrow IPC *stream* (media type
//! [`ARROW_STREAM_MEDIA_TYPE`]): a schema message, record batches of at most
//! [`BATCH_ROWS`] rows, and the end-of-stream marker. Writers never hold
//! more than one batch; readers never hold more than one batch plus the
//! row being handed out, so a step's memory does not depend on the number
//! of rows.
//!
//! The stream bytes are a pure function of the rows written: arrow-rs
//! writes flatbuffers deterministically, pads with zeros, and every schema
//! here carries at most one metadata key (a `HashMap` with two keys could
//! be written in either order).
//!
//! A reader is strict where arrow-rs is lenient: a stream that ends without
//! its end-of-stream marker is truncated, and is an error naming the byte
//! offset where it ends, not a silently shorter table.

use std::io::{self, Read, Write};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, Schema, SchemaRef};

use crate::{Error, Result};

/// Media type of a table artifact: an Arrow IPC stream.
pub const ARROW_STREAM_MEDIA_TYPE: &str = "application/vnd.apache.arrow.stream";

/// Most rows in one record batch a writer here emits: 8192 rows of 100
/// `f64` columns is 6.25 MiB, small next to a step's memory limit, large
/// enough that per-batch costs vanish.
pub const BATCH_ROWS: usize = 8192;

/// The end-of-stream marker: a continuation token and a zero length.
const END_OF_STREAM: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];

/// Writes record batches as an Arrow IPC stream.
pub struct BatchWriter<W: Write> {
    inner: StreamWriter<W>,
    rows: u64,
}

impl<W: Write> BatchWriter<W> {
    /// Writes the schema message.
    pub fn new(out: W, schema: &Schema) -> Result<Self> {
        let inner = StreamWriter::try_new(out, schema).map_err(arrow_write_error)?;
        Ok(BatchWriter { inner, rows: 0 })
    }

    /// Writes one batch (its schema must be the writer's).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.inner.write(batch).map_err(arrow_write_error)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the end-of-stream marker and returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.inner.finish().map_err(arrow_write_error)?;
        self.inner.into_inner().map_err(arrow_write_error)
    }
}

fn arrow_write_error(e: ArrowError) -> Error {
    match e {
        ArrowError::IoError(_, e) => Error::Io(e),
        other => Error::invalid(format!("writing an Arrow stream: {other}")),
    }
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
        let read = &buf[..n];
        if n >= 8 {
            self.tail.copy_from_slice(&read[n - 8..]);
        } else {
            self.tail.copy_within(n.., 0);
            self.tail[8 - n..].copy_from_slice(read);
        }
        Ok(n)
    }
}

/// Reads an Arrow IPC stream one record batch at a time.
pub struct BatchReader<R: Read> {
    inner: StreamReader<Tracked<io::BufReader<R>>>,
    what: &'static str,
    batches: u64,
    rows: u64,
    done: bool,
}

impl<R: Read> BatchReader<R> {
    /// Reads the schema message; `what` names the input in errors
    /// (`examples`, `dataset`).
    pub fn new(reader: R, what: &'static str) -> Result<Self> {
        let tracked = Tracked {
            inner: io::BufReader::with_capacity(1 << 20, reader),
            offset: 0,
            tail: [0; 8],
        };
        let inner = StreamReader::try_new(tracked, None)
            .map_err(|e| stream_error(what, 0, &format!("no Arrow IPC stream schema: {e}")))?;
        Ok(BatchReader {
            inner,
            what,
            batches: 0,
            rows: 0,
            done: false,
        })
    }

    /// The stream's schema.
    pub fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    /// Rows read so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes of the stream consumed so far.
    pub fn offset(&self) -> u64 {
        self.inner.get_ref().offset
    }

    /// The next batch; `None` after the end-of-stream marker.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.done {
            return Ok(None);
        }
        match self.inner.next() {
            Some(Ok(batch)) => {
                self.batches += 1;
                self.rows += batch.num_rows() as u64;
                Ok(Some(batch))
            }
            Some(Err(ArrowError::IoError(_, e))) if e.kind() != io::ErrorKind::UnexpectedEof => {
                Err(Error::Io(e))
            }
            Some(Err(e)) => Err(stream_error(
                self.what,
                self.offset(),
                &format!("batch {} is malformed: {e}", self.batches + 1),
            )),
            None => {
                self.done = true;
                let tracked = self.inner.get_ref();
                if tracked.offset < 8 || tracked.tail != END_OF_STREAM {
                    return Err(stream_error(
                        self.what,
                        tracked.offset,
                        &format!(
                            "the Arrow stream is truncated: it ends after {} (batch {}) without its end-of-stream marker",
                            crate::count_of(self.rows, "row", "rows"),
                            self.batches
                        ),
                    ));
                }
                Ok(None)
            }
        }
    }
}

fn stream_error(what: &'static str, offset: u64, message: &str) -> Error {
    Error::Stream {
        what,
        offset,
        message: message.to_owned(),
    }
}

/// A schema with the single metadata entry `key = value`.
pub(crate) fn schema_with(
    fields: Vec<arrow_schema::Field>,
    key: &str,
    value: String,
) -> Arc<Schema> {
    let metadata: std::collections::HashMap<String, String> =
        [(key.to_owned(), value)].into_iter().collect();
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Float64Array;
    use arrow_schema::{DataType, Field};

    fn table(rows: usize) -> Vec<u8> {
        let schema = schema_with(
            vec![Field::new("x", DataType::Float64, false)],
            "k",
            "v".into(),
        );
        let mut w = BatchWriter::new(Vec::new(), &schema).unwrap();
        let x = Float64Array::from_iter_values((0..rows).map(|i| i as f64));
        w.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(x)]).unwrap())
            .unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn a_stream_reads_back_and_ends_at_its_marker() {
        let bytes = table(10);
        assert_eq!(bytes[bytes.len() - 8..], END_OF_STREAM);
        let mut r = BatchReader::new(&bytes[..], "examples").unwrap();
        assert_eq!(r.schema().metadata()["k"], "v");
        assert_eq!(r.next_batch().unwrap().unwrap().num_rows(), 10);
        assert!(r.next_batch().unwrap().is_none());
        assert_eq!((r.rows(), r.offset()), (10, bytes.len() as u64));
    }

    #[test]
    fn the_bytes_are_a_function_of_the_rows() {
        assert_eq!(table(100), table(100));
        assert_ne!(table(100), table(101));
    }

    #[test]
    fn a_truncated_stream_is_an_error_naming_the_offset() {
        let bytes = table(10);
        // Cut at the batch boundary (just the marker missing): arrow-rs
        // alone would call this a complete stream of 10 rows.
        let cut = bytes.len() - 8;
        let mut r = BatchReader::new(&bytes[..cut], "examples").unwrap();
        r.next_batch().unwrap();
        let e = r.next_batch().unwrap_err().to_string();
        assert!(
            e.contains(&format!("examples at byte {cut}"))
                && e.contains("truncated")
                && e.contains("after 10 rows (batch 1)"),
            "{e}"
        );
        // Cut inside the batch body.
        let cut = bytes.len() - 20;
        let mut r = BatchReader::new(&bytes[..cut], "examples").unwrap();
        let e = r.next_batch().unwrap_err().to_string();
        assert!(e.contains("batch 1 is malformed"), "{e}");
        assert!(e.contains(&format!("at byte {cut}")), "{e}");
        // Not a stream at all.
        let e = BatchReader::new(&b"species,bill\n"[..], "dataset")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("dataset at byte 0: no Arrow IPC stream schema"), "{e}");
    }
}
