//! Apache Parquet: a source format for `ingest` and the export format of
//! `export`.
//!
//! **Reading** ([`ingest_parquet`]) turns a Parquet file into train / eval
//! *examples* exactly as [`crate::ingest`] does a CSV: the same split by
//! hashing `(split_seed, row index)`, the same batch boundaries and builders,
//! so a Parquet file of the same rows as a CSV gives byte-identical outputs.
//! Types are declared, not inferred: integer, float and decimal columns
//! become nullable `Float64` (NaN is missing, an infinity fails naming the
//! row and column); `Utf8`, `LargeUtf8`, `Utf8View` and dictionaries of
//! strings become `Utf8`, kept verbatim (only a null is missing; `""` and
//! `"NA"` are values, unlike in a CSV). The label column must be a string
//! or an integer column (integers become their decimal text, as a CSV label
//! always is a string). Any other type (boolean, temporal, binary, nested)
//! fails naming the column and its type. Rows whose label is null are
//! dropped and counted.
//!
//! Parquet keeps its metadata in a footer, so the reader needs random
//! access: [`SeekableChunks`] serves the crate's [`ChunkReader`] from one
//! `Read + Seek` handle (a guest `Input` seeks through the host). The
//! arrow reader reads page by page (a page header through `get_read`, the
//! page body through `get_bytes`), so memory is bounded by one decoded page
//! per column and one batch per output, never by the file size; one fetch
//! is capped at [`FETCH_BYTES_MAX`] so a corrupt header cannot size an
//! allocation.
//!
//! **Writing** ([`ParquetWriter`], [`export`]) streams record batches into
//! row groups of at most [`ParquetOptions::row_group_rows`] rows (the
//! writer buffers one row group). The bytes are a pure function of the
//! rows and options: no timestamps; the Arrow schema's metadata is written
//! as Parquet key/value metadata sorted by key (not as the embedded
//! `ARROW:schema` message, whose metadata map has no fixed order).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use ::parquet::arrow::ArrowWriter;
use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use ::parquet::arrow::arrow_writer::ArrowWriterOptions;
use ::parquet::errors::ParquetError;
use ::parquet::file::metadata::KeyValue;
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::reader::{ChunkReader, Length};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Schema as ArrowSchema};

use crate::example::{Column, ColumnType, ExampleWriter, Schema};
use crate::ingest::{IngestOptions, IngestReport, Side, check_options, is_eval};
use crate::table::{BATCH_ROWS, BatchReader};
use crate::{Error, Result};

/// Media type of a Parquet file.
pub const PARQUET_MEDIA_TYPE: &str = "application/vnd.apache.parquet";

/// The 4 bytes a Parquet file starts (and ends) with.
pub const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// Default [`ParquetOptions::row_group_rows`]: 65 536 rows of 100 `f64`
/// columns is 50 MiB before encoding, the most the writer buffers.
pub const ROW_GROUP_ROWS_DEFAULT: usize = 65_536;

/// Most bytes one read of the file may fetch (a footer, a page): pages are
/// ~1 MiB by default; a header claiming more is corrupt or hostile, and must
/// not size an allocation.
pub const FETCH_BYTES_MAX: usize = 64 << 20;

/// Whether `head` (the first bytes of a file) starts with the Parquet magic.
pub fn is_parquet(head: &[u8]) -> bool {
    head.starts_with(PARQUET_MAGIC)
}

fn parquet_error(e: ParquetError) -> Error {
    match e {
        ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(io) => Error::Io(*io),
            Err(other) => Error::invalid(format!("not a readable Parquet file: {other}")),
        },
        other => Error::invalid(format!("not a readable Parquet file: {other}")),
    }
}

/// A [`ChunkReader`] over one `Read + Seek` handle, shared by every reader
/// it hands out (each seeks to its own position before reading). One
/// handle, not one per fetch: opening a guest input makes the host verify
/// the whole artifact's digest, far more than a seek.
pub struct SeekableChunks<R> {
    len: u64,
    inner: Arc<Mutex<R>>,
}

impl<R: Read + Seek> SeekableChunks<R> {
    /// Opens the file once through `open` and learns its length.
    pub fn new(mut open: impl FnMut() -> io::Result<R>) -> Result<Self> {
        let mut inner = open()?;
        let len = inner.seek(SeekFrom::End(0))?;
        Ok(SeekableChunks {
            len,
            inner: Arc::new(Mutex::new(inner)),
        })
    }
}

impl<R> Length for SeekableChunks<R> {
    fn len(&self) -> u64 {
        self.len
    }
}

fn lock_error() -> ParquetError {
    ParquetError::General("the input handle was poisoned by a panic".into())
}

impl<R: Read + Seek + Send> ChunkReader for SeekableChunks<R> {
    type T = ChunkRead<R>;

    fn get_read(&self, start: u64) -> ::parquet::errors::Result<ChunkRead<R>> {
        Ok(ChunkRead {
            inner: self.inner.clone(),
            pos: start,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> ::parquet::errors::Result<bytes::Bytes> {
        if length > FETCH_BYTES_MAX {
            return Err(ParquetError::General(format!(
                "a read of {length} bytes at byte {start} is larger than {FETCH_BYTES_MAX} bytes; \
                 the file is corrupt or its pages are too large"
            )));
        }
        if start
            .checked_add(length as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(ParquetError::EOF(format!(
                "a read of {length} bytes at byte {start} runs past the end of the file ({} bytes); \
                 is it truncated?",
                self.len
            )));
        }
        let mut inner = self.inner.lock().map_err(|_| lock_error())?;
        inner.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0u8; length];
        inner.read_exact(&mut buf)?;
        Ok(buf.into())
    }
}

/// A reader from a position of a [`SeekableChunks`] handle.
pub struct ChunkRead<R> {
    inner: Arc<Mutex<R>>,
    pos: u64,
}

impl<R: Read + Seek> Read for ChunkRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("the input handle was poisoned by a panic"))?;
        inner.seek(SeekFrom::Start(self.pos))?;
        let n = inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// How one Parquet column becomes an examples column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Integer, float or decimal: cast to `Float64`.
    Number,
    /// A string type (or the integer label): cast to `Utf8`.
    Text,
}

fn is_string(ty: &DataType) -> bool {
    match ty {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, value) => is_string(value),
        _ => false,
    }
}

fn is_number(ty: &DataType) -> bool {
    ty.is_integer()
        || ty.is_floating()
        || matches!(
            ty,
            DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        )
}

/// The examples schema of a Parquet file's Arrow schema; fails naming the
/// first column whose type has no examples counterpart, or the missing label.
fn examples_schema(arrow: &ArrowSchema, label: &str) -> Result<(Schema, Vec<Source>)> {
    let names: Vec<&str> = arrow.fields().iter().map(|f| f.name().as_str()).collect();
    if !names.contains(&label) {
        return Err(Error::invalid(format!(
            "label column `{label}` is not in the Parquet schema ({})",
            names.join(", ")
        )));
    }
    let mut columns = Vec::with_capacity(names.len());
    let mut sources = Vec::with_capacity(names.len());
    for field in arrow.fields() {
        let ty = field.data_type();
        let (column, source) = if field.name() == label {
            if !(is_string(ty) || ty.is_integer()) {
                return Err(Error::invalid(format!(
                    "label column `{label}` has Parquet (Arrow) type {ty}; a label must be a string or an integer column"
                )));
            }
            (ColumnType::String, Source::Text)
        } else if is_string(ty) {
            (ColumnType::String, Source::Text)
        } else if is_number(ty) {
            (ColumnType::Number, Source::Number)
        } else {
            return Err(Error::invalid(format!(
                "column `{}` has Parquet (Arrow) type {ty}; examples hold numbers \
                 (integer, float, decimal) and strings",
                field.name()
            )));
        };
        columns.push(Column {
            name: field.name().clone(),
            ty: column,
        });
        sources.push(source);
    }
    let schema = Schema {
        label: label.to_owned(),
        columns,
    };
    schema.check()?;
    Ok((schema, sources))
}

/// One batch's columns, cast to what the examples hold.
enum Cast {
    Number(Float64Array),
    Text(StringArray),
}

fn cast_column(array: &ArrayRef, source: Source, name: &str) -> Result<Cast> {
    let to = match source {
        Source::Number => DataType::Float64,
        Source::Text => DataType::Utf8,
    };
    let cast = arrow_cast::cast(array, &to).map_err(|e| {
        Error::invalid(format!(
            "column `{name}`: cannot convert {} to {to}: {e}",
            array.data_type()
        ))
    })?;
    Ok(match source {
        Source::Number => Cast::Number(cast.as_primitive().clone()),
        Source::Text => Cast::Text(cast.as_string::<i32>().clone()),
    })
}

/// Reads the Parquet file (opened once by `open`, read with seeks), writes
/// the train and eval examples streams, reports the counts. The options
/// are [`crate::ingest::ingest`]'s; `infer_rows` and `malformed` do not
/// apply (types are declared; a value never fails to parse).
pub fn ingest_parquet<R: Read + Seek + Send + 'static, W: Write>(
    open: impl FnMut() -> io::Result<R>,
    options: &IngestOptions,
    train: W,
    eval: W,
) -> Result<IngestReport> {
    check_options(options)?;
    let chunks = SeekableChunks::new(open)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(chunks).map_err(parquet_error)?;
    let (schema, sources) = examples_schema(builder.schema(), &options.label)?;
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_error)?;
    let arrow = schema.to_arrow();
    let label = schema.label_index()?;
    let mut sides = [
        Side::new(&schema, &arrow, ExampleWriter::new(train, &schema)?),
        Side::new(&schema, &arrow, ExampleWriter::new(eval, &schema)?),
    ];
    let width = schema.columns.len();
    let mut numbers = vec![None; width];
    let (mut index, mut rows_dropped) = (0u64, 0u64);
    for batch in reader {
        let batch = batch.map_err(|e| {
            Error::invalid(format!(
                "not a readable Parquet file: reading the rows after row {index}: {e}"
            ))
        })?;
        let columns: Vec<Cast> = batch
            .columns()
            .iter()
            .zip(&sources)
            .zip(&schema.columns)
            .map(|((array, source), column)| cast_column(array, *source, &column.name))
            .collect::<Result<_>>()?;
        let mut texts: Vec<Option<&str>> = vec![None; width];
        for row in 0..batch.num_rows() {
            let this = index;
            index += 1;
            let Cast::Text(labels) = &columns[label] else {
                unreachable!("the label is a text column");
            };
            if labels.is_null(row) {
                rows_dropped += 1;
                continue;
            }
            for (i, column) in columns.iter().enumerate() {
                numbers[i] = None;
                texts[i] = None;
                match column {
                    Cast::Number(a) if a.is_valid(row) => {
                        let x = a.value(row);
                        if x.is_infinite() {
                            return Err(Error::Row {
                                what: "Parquet",
                                row: this + 1,
                                message: format!(
                                    "column `{}` holds {x}; numbers must be finite",
                                    schema.columns[i].name
                                ),
                            });
                        }
                        // NaN is how many writers spell a missing float.
                        numbers[i] = (!x.is_nan()).then_some(x);
                    }
                    Cast::Text(a) if a.is_valid(row) => texts[i] = Some(a.value(row)),
                    _ => {}
                }
            }
            let side =
                &mut sides[usize::from(is_eval(options.split_seed, this, options.eval_fraction))];
            side.push_values(&numbers, &texts)?;
        }
    }
    let [train, eval] = sides;
    let (rows_train, rows_eval) = (train.finish()?, eval.finish()?);
    Ok(IngestReport {
        schema,
        rows_train,
        rows_eval,
        rows_dropped,
        rows_malformed: 0,
    })
}

/// A compression codec for [`ParquetWriter`]: the pure-Rust ones this
/// build has (zstd and brotli are not built in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// Snappy (the default: fast, and what most readers expect).
    Snappy,
    /// LZ4 (`LZ4_RAW`).
    Lz4,
    /// Gzip at the default level.
    Gzip,
}

impl FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Compression::None),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "gzip" => Ok(Compression::Gzip),
            other => Err(Error::invalid(format!(
                "compression must be `snappy`, `lz4`, `gzip` or `none`, got `{other}`"
            ))),
        }
    }
}

impl Compression {
    fn codec(self) -> ::parquet::basic::Compression {
        use ::parquet::basic::Compression as C;
        match self {
            Compression::None => C::UNCOMPRESSED,
            Compression::Snappy => C::SNAPPY,
            Compression::Lz4 => C::LZ4_RAW,
            Compression::Gzip => C::GZIP(Default::default()),
        }
    }
}

/// How [`ParquetWriter`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParquetOptions {
    /// The codec of every column.
    pub compression: Compression,
    /// Most rows per row group: the writer holds one row group in memory.
    pub row_group_rows: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            compression: Compression::Snappy,
            row_group_rows: ROW_GROUP_ROWS_DEFAULT,
        }
    }
}

/// Writes record batches as a Parquet file, one row group at a time.
pub struct ParquetWriter<W: Write + Send> {
    inner: ArrowWriter<W>,
    rows: u64,
}

impl<W: Write + Send> ParquetWriter<W> {
    /// Starts a file of `schema`; nothing is written before the first row
    /// group fills or [`ParquetWriter::finish`].
    pub fn new(out: W, schema: &Arc<ArrowSchema>, options: ParquetOptions) -> Result<Self> {
        if options.row_group_rows == 0 {
            return Err(Error::invalid("row_group_rows must be at least 1"));
        }
        let mut metadata: Vec<KeyValue> = schema
            .metadata()
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        metadata.sort_by(|a, b| a.key.cmp(&b.key));
        let properties = WriterProperties::builder()
            .set_compression(options.compression.codec())
            .set_max_row_group_row_count(Some(options.row_group_rows))
            .set_key_value_metadata((!metadata.is_empty()).then_some(metadata))
            .build();
        let options = ArrowWriterOptions::new()
            .with_properties(properties)
            .with_skip_arrow_metadata(true);
        let inner = ArrowWriter::try_new_with_options(out, schema.clone(), options)
            .map_err(parquet_error)?;
        Ok(ParquetWriter { inner, rows: 0 })
    }

    /// Adds a batch (of the writer's schema).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.inner.write(batch).map_err(parquet_error)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the last row group and the footer.
    pub fn finish(self) -> Result<W> {
        self.inner.into_inner().map_err(parquet_error)
    }
}

/// What [`export`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportReport {
    /// Rows written.
    pub rows: u64,
    /// Columns of the table.
    pub columns: usize,
}

/// Copies an Arrow IPC stream (`what` names it in errors) into a Parquet
/// file, batch by batch.
pub fn export<R: Read, W: Write + Send>(
    input: R,
    what: &'static str,
    out: W,
    options: ParquetOptions,
) -> Result<ExportReport> {
    let mut reader = BatchReader::new(input, what)?;
    let schema = reader.schema();
    let mut writer = ParquetWriter::new(out, &schema, options)?;
    while let Some(batch) = reader.next_batch()? {
        writer.write(&batch)?;
    }
    let rows = writer.rows();
    writer.finish()?;
    Ok(ExportReport {
        rows,
        columns: schema.fields().len(),
    })
}

/// Reads a whole Parquet file into batches (tests and native tools; a step
/// streams with [`ingest_parquet`] instead).
pub fn read_batches(
    bytes: impl Into<bytes::Bytes>,
) -> Result<(Arc<ArrowSchema>, Vec<RecordBatch>)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.into()).map_err(parquet_error)?;
    let schema = builder.schema().clone();
    let batches = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_error)?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("not a readable Parquet file: {e}")))?;
    Ok((schema, batches))
}

/// Converts a CSV into a Parquet file of the same rows, typed as
/// [`crate::ingest::ingest`] would type them (so ingesting either gives the
/// same examples): number columns `Float64`, string columns and the label
/// `Utf8`, missing values (empty, `NA`) null. For tests and benchmarks:
/// it reads the CSV twice (`open`), and fails on a malformed row.
pub fn from_csv<R: Read, W: Write + Send>(
    mut open: impl FnMut() -> io::Result<R>,
    label: &str,
    out: W,
    options: ParquetOptions,
) -> Result<W> {
    use arrow_array::builder::{Float64Builder, StringBuilder};

    use crate::csv::CsvReader;
    use crate::ingest::{ingest, is_missing, parse_number};

    let inferred = IngestOptions {
        eval_fraction: 0.0,
        infer_rows: u64::MAX,
        ..IngestOptions::new(label)
    };
    let schema = ingest(&mut open, &inferred, io::sink(), io::sink())?.schema;
    let mut arrow = (*schema.to_arrow()).clone();
    arrow.metadata.clear();
    let arrow = Arc::new(arrow);
    let mut writer = ParquetWriter::new(out, &arrow, options)?;
    let mut reader = CsvReader::new(io::BufReader::new(open()?));
    reader.read_record()?;
    let new_builders = || -> Vec<(Option<Float64Builder>, Option<StringBuilder>)> {
        schema
            .columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::Number => (Some(Float64Builder::new()), None),
                ColumnType::String => (None, Some(StringBuilder::new())),
            })
            .collect()
    };
    let mut builders = new_builders();
    let mut pending = 0;
    let flush = |builders: &mut Vec<(Option<Float64Builder>, Option<StringBuilder>)>,
                 writer: &mut ParquetWriter<W>|
     -> Result<()> {
        let columns: Vec<ArrayRef> = builders
            .iter_mut()
            .map(|(n, t)| match (n, t) {
                (Some(b), _) => Arc::new(b.finish()) as ArrayRef,
                (None, Some(b)) => Arc::new(b.finish()) as ArrayRef,
                (None, None) => unreachable!("every column has one builder"),
            })
            .collect();
        let batch = RecordBatch::try_new(arrow.clone(), columns)
            .map_err(|e| Error::invalid(format!("building a batch: {e}")))?;
        writer.write(&batch)
    };
    while let Some((line, record)) = reader.read_record()? {
        for (i, (number, text)) in builders.iter_mut().enumerate() {
            let field = record.get(i);
            let missing = is_missing(field);
            if let Some(b) = number {
                let x = (!missing)
                    .then(|| parse_number(field))
                    .flatten()
                    .ok_or_else(|| {
                        Error::format("CSV", line, format!("{field:?} is not a number"))
                    });
                b.append_option(if missing { None } else { Some(x?) });
            } else if let Some(b) = text {
                b.append_option((!missing).then_some(field));
            }
        }
        pending += 1;
        if pending == BATCH_ROWS {
            flush(&mut builders, &mut writer)?;
            pending = 0;
        }
    }
    if pending > 0 {
        flush(&mut builders, &mut writer)?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use arrow_array::{Int32Array, Int64Array, ListArray, StringArray};
    use arrow_schema::{Field, Schema as ArrowSchema};

    use super::*;
    use crate::example::{Examples, Value};
    use crate::ingest::ingest;

    fn parquet_of(batch: &RecordBatch, options: ParquetOptions) -> Vec<u8> {
        let mut w = ParquetWriter::new(Vec::new(), &batch.schema(), options).unwrap();
        w.write(batch).unwrap();
        w.finish().unwrap()
    }

    fn run(bytes: &[u8], options: &IngestOptions) -> Result<(IngestReport, Vec<u8>, Vec<u8>)> {
        let (mut train, mut eval) = (Vec::new(), Vec::new());
        let bytes = bytes.to_vec();
        let report = ingest_parquet(
            || Ok(Cursor::new(bytes.clone())),
            options,
            &mut train,
            &mut eval,
        )?;
        Ok((report, train, eval))
    }

    fn options(label: &str, eval_fraction: f64) -> IngestOptions {
        IngestOptions {
            eval_fraction,
            ..IngestOptions::new(label)
        }
    }

    #[test]
    fn parquet_and_csv_of_the_same_rows_give_identical_examples() {
        let mut csv = String::from("species,island,bill,year,sex\n");
        let rows = BATCH_ROWS * 2 + 101;
        for i in 0..rows {
            let label = if i % 97 == 5 {
                "NA"
            } else {
                ["a", "b", "c"][i % 3]
            };
            let bill = if i % 13 == 0 {
                String::new()
            } else {
                format!("{}.5", i % 50)
            };
            let sex = if i % 7 == 0 { "NA" } else { "f" };
            csv.push_str(&format!(
                "{label},isle{},{bill},{},{sex}\n",
                i % 4,
                2000 + i % 3
            ));
        }
        let open = || Ok(csv.as_bytes());
        for compression in [
            Compression::None,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Gzip,
        ] {
            let options_pq = ParquetOptions {
                compression,
                row_group_rows: 5000,
            };
            let pq = from_csv(open, "species", Vec::new(), options_pq).unwrap();
            assert!(is_parquet(&pq));
            let o = IngestOptions {
                split_seed: 3,
                ..options("species", 0.3)
            };
            let (mut train, mut eval) = (Vec::new(), Vec::new());
            let want = ingest(open, &o, &mut train, &mut eval).unwrap();
            let (got, ptrain, peval) = run(&pq, &o).unwrap();
            assert_eq!(got, want, "{compression:?}");
            assert_eq!(
                got.rows_dropped,
                (0..rows).filter(|i| i % 97 == 5).count() as u64
            );
            assert!(ptrain == train, "train differs ({compression:?})");
            assert!(peval == eval, "eval differs ({compression:?})");
        }
    }

    #[test]
    fn integer_labels_become_text_and_nan_is_missing() {
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("y", DataType::Int64, true),
            Field::new("x", DataType::Float32, true),
            Field::new("n", DataType::Int32, false),
            Field::new("s", DataType::LargeUtf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(7), None, Some(-1)])),
                Arc::new(arrow_array::Float32Array::from(vec![1.5, f32::NAN, 2.0])),
                Arc::new(Int32Array::from(vec![1, 2, 3])),
                Arc::new(arrow_array::LargeStringArray::from(vec![
                    Some(""),
                    Some("z"),
                    None,
                ])),
            ],
        )
        .unwrap();
        let pq = parquet_of(&batch, ParquetOptions::default());
        let (report, train, _) = run(&pq, &options("y", 0.0)).unwrap();
        assert_eq!((report.rows_train, report.rows_dropped), (2, 1));
        let train = Examples::read(&train[..]).unwrap();
        let types: Vec<ColumnType> = train.schema.columns.iter().map(|c| c.ty).collect();
        assert_eq!(
            types,
            [
                ColumnType::String,
                ColumnType::Number,
                ColumnType::Number,
                ColumnType::String
            ]
        );
        assert_eq!(
            train.rows,
            vec![
                vec![
                    Value::Text("7".into()),
                    Value::Number(1.5),
                    Value::Number(1.0),
                    Value::Text("".into())
                ],
                vec![
                    Value::Text("-1".into()),
                    Value::Number(2.0),
                    Value::Number(3.0),
                    Value::Missing
                ],
            ]
        );
    }

    #[test]
    fn missing_label_and_unsupported_types_fail_naming_the_column() {
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("y", DataType::Utf8, true),
            Field::new("flag", DataType::Boolean, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a"])),
                Arc::new(arrow_array::BooleanArray::from(vec![true])),
            ],
        )
        .unwrap();
        let pq = parquet_of(&batch, ParquetOptions::default());
        let err = run(&pq, &options("species", 0.2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "label column `species` is not in the Parquet schema (y, flag)"
        );
        let err = run(&pq, &options("y", 0.2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `flag` has Parquet (Arrow) type Boolean; examples hold numbers (integer, float, decimal) and strings"
        );
        let err = run(&pq, &options("flag", 0.2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "label column `flag` has Parquet (Arrow) type Boolean; a label must be a string or an integer column"
        );
        let list =
            ListArray::from_iter_primitive::<arrow_array::types::Int32Type, _, _>(vec![Some(
                vec![Some(1)],
            )]);
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("y", DataType::Utf8, true),
            Field::new("xs", list.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec!["a"])), Arc::new(list)],
        )
        .unwrap();
        let err = run(
            &parquet_of(&batch, ParquetOptions::default()),
            &options("y", 0.2),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("column `xs` has Parquet (Arrow) type List("),
            "{err}"
        );
    }

    #[test]
    fn truncated_and_foreign_files_fail_with_a_message() {
        let schema = Arc::new(ArrowSchema::new(vec![Field::new(
            "y",
            DataType::Utf8,
            true,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["a", "b"]))])
            .unwrap();
        let pq = parquet_of(&batch, ParquetOptions::default());
        let err = run(&pq[..pq.len() - 3], &options("y", 0.2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a readable Parquet file: Parquet error: Invalid Parquet file. Corrupt footer"
        );
        let err = run(&pq[..pq.len() / 2], &options("y", 0.2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a readable Parquet file: Parquet error: Invalid Parquet file. Corrupt footer"
        );
        let err = run(b"PAR1", &options("y", 0.2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a readable Parquet file: EOF: Parquet file too small. Size is 4 but need 8"
        );
        // The footer intact, the column chunk overwritten.
        let mut cut = pq.clone();
        cut[4..20].fill(0xFF);
        let err = run(&cut, &options("y", 0.2)).unwrap_err().to_string();
        assert!(
            err.starts_with("not a readable Parquet file: reading the rows after row 0: "),
            "{err}"
        );
    }

    #[test]
    fn export_round_trips_and_is_deterministic() {
        let examples = Examples::from_json_lines(
            "{\"schema\":{\"label\":\"y\",\"columns\":[{\"name\":\"y\",\"type\":\"string\"},{\"name\":\"x\",\"type\":\"number\"}]}}\n\
             [\"a\",1.5]\n[null,2]\n[\"b\",null]\n",
        )
        .unwrap();
        let stream = examples.write(Vec::new()).unwrap();
        let options = ParquetOptions {
            compression: Compression::Snappy,
            row_group_rows: 2,
        };
        let mut out = Vec::new();
        let report = export(&stream[..], "table", &mut out, options).unwrap();
        assert_eq!(
            report,
            ExportReport {
                rows: 3,
                columns: 2
            }
        );
        let mut again = Vec::new();
        export(&stream[..], "table", &mut again, options).unwrap();
        assert!(out == again, "export bytes differ between runs");
        let (schema, batches) = read_batches(out).unwrap();
        assert_eq!(
            schema
                .metadata()
                .get(crate::example::LABEL_KEY)
                .map(String::as_str),
            Some("y")
        );
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
        let batch = arrow_select::concat::concat_batches(&schema, &batches).unwrap();
        let back = Examples::read(
            &{
                let mut w = crate::table::BatchWriter::new(Vec::new(), &schema).unwrap();
                w.write(&batch).unwrap();
                w.finish().unwrap()
            }[..],
        )
        .unwrap();
        assert_eq!(back, examples);
        assert_eq!(
            "zstd".parse::<Compression>().unwrap_err().to_string(),
            "compression must be `snappy`, `lz4`, `gzip` or `none`, got `zstd`"
        );
    }

    #[test]
    fn seekable_chunks_refuse_oversized_and_out_of_range_reads() {
        let chunks = SeekableChunks::new(|| Ok(Cursor::new(vec![1u8, 2, 3, 4, 5]))).unwrap();
        assert_eq!(chunks.len(), 5);
        assert_eq!(&chunks.get_bytes(1, 3).unwrap()[..], &[2, 3, 4]);
        let mut r = chunks.get_read(3).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, [4, 5]);
        assert!(
            chunks
                .get_bytes(3, 3)
                .unwrap_err()
                .to_string()
                .contains("a read of 3 bytes at byte 3 runs past the end of the file (5 bytes)")
        );
        assert!(
            chunks
                .get_bytes(0, FETCH_BYTES_MAX + 1)
                .unwrap_err()
                .to_string()
                .contains("is larger than 67108864 bytes")
        );
    }
}
