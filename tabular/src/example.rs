//! The *examples* format: typed rows with a label, as an Arrow IPC stream.
//!
//! Every column is nullable (a null is a missing value) and is either
//! `Float64` (a [`ColumnType::Number`] column: finite numbers) or `Utf8`
//! (a [`ColumnType::String`] column); the schema's one metadata entry,
//! [`LABEL_KEY`], names the label column, one of the columns. Rows travel
//! in batches of at most [`BATCH_ROWS`](crate::table::BATCH_ROWS).
//! [`ExampleReader`] checks the schema when it opens a stream and each
//! batch's numbers as it reads it; errors name the row (1-based) and column.
//!
//! For tests and fixtures, [`Examples::from_json_lines`] reads a readable
//! text form: a `{"schema":{"label":…,"columns":[{"name":…,"type":"number"}]}}`
//! line, then one JSON array of values per row.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::table::{BATCH_ROWS, BatchReader, BatchWriter};
use crate::{COLUMNS_MAX, Error, ROWS_MAX, Result};

const WHAT: &str = "examples";

/// A column's type, inferred from its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Every non-missing value is a finite number.
    Number,
    /// Anything else.
    String,
}

impl ColumnType {
    /// `"number"` or `"string"`.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Number => "number",
            ColumnType::String => "string",
        }
    }
}

/// One column of a [`Schema`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// The column name (the CSV header).
    pub name: String,
    /// The column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

/// The header of an examples file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// The name of the label column.
    pub label: String,
    /// Every column, label included, in row order.
    pub columns: Vec<Column>,
}

impl Schema {
    /// The position of column `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The position of the label column.
    pub fn label_index(&self) -> Result<usize> {
        self.index_of(&self.label).ok_or_else(|| {
            Error::invalid(format!(
                "label column `{}` is not among the columns",
                self.label
            ))
        })
    }

    /// Checks the schema is usable: a bounded number of uniquely named
    /// columns, one of which is the label.
    pub fn check(&self) -> Result<()> {
        if self.columns.len() > COLUMNS_MAX {
            return Err(Error::Limit {
                what: "columns",
                limit: COLUMNS_MAX,
            });
        }
        let mut seen = BTreeSet::new();
        for column in &self.columns {
            if !seen.insert(column.name.as_str()) {
                return Err(Error::invalid(format!(
                    "column `{}` appears twice",
                    column.name
                )));
            }
        }
        self.label_index().map(drop)
    }
}

/// One cell: a number, a string, or missing. Serialises as a JSON number,
/// string or `null`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A missing value (`null`).
    Missing,
    /// A finite number.
    Number(f64),
    /// A string.
    Text(String),
}

impl Value {
    /// The type of the value; `None` when missing.
    pub fn ty(&self) -> Option<ColumnType> {
        match self {
            Value::Missing => None,
            Value::Number(_) => Some(ColumnType::Number),
            Value::Text(_) => Some(ColumnType::String),
        }
    }

    /// Whether the value is missing.
    pub fn is_missing(&self) -> bool {
        matches!(self, Value::Missing)
    }
}

impl fmt::Display for Value {
    /// Formats as JSON would: `null`, `39.1`, `"Adelie"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Value::Missing => s.serialize_unit(),
            Value::Number(x) => s.serialize_f64(*x),
            Value::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct ValueVisitor;

        impl Visitor<'_> for ValueVisitor {
            type Value = Value;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, a string or null")
            }

            fn visit_unit<E: de::Error>(self) -> std::result::Result<Value, E> {
                Ok(Value::Missing)
            }

            fn visit_none<E: de::Error>(self) -> std::result::Result<Value, E> {
                Ok(Value::Missing)
            }

            fn visit_f64<E: de::Error>(self, x: f64) -> std::result::Result<Value, E> {
                Ok(Value::Number(x))
            }

            fn visit_i64<E: de::Error>(self, x: i64) -> std::result::Result<Value, E> {
                Ok(Value::Number(x as f64))
            }

            fn visit_u64<E: de::Error>(self, x: u64) -> std::result::Result<Value, E> {
                Ok(Value::Number(x as f64))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Value, E> {
                Ok(Value::Text(s.to_owned()))
            }

            fn visit_string<E: de::Error>(self, s: String) -> std::result::Result<Value, E> {
                Ok(Value::Text(s))
            }
        }

        d.deserialize_any(ValueVisitor)
    }
}

/// The schema metadata key naming the label column.
pub const LABEL_KEY: &str = "sluice.label";

impl Schema {
    /// The Arrow schema of an examples stream: one nullable column per
    /// column, `Float64` for numbers and `Utf8` for strings, and the label's
    /// name under [`LABEL_KEY`].
    pub fn to_arrow(&self) -> Arc<ArrowSchema> {
        let fields = self
            .columns
            .iter()
            .map(|c| {
                let ty = match c.ty {
                    ColumnType::Number => DataType::Float64,
                    ColumnType::String => DataType::Utf8,
                };
                Field::new(&c.name, ty, true)
            })
            .collect();
        crate::table::schema_with(fields, LABEL_KEY, self.label.clone())
    }

    /// The examples schema of an Arrow schema, checked.
    pub fn from_arrow(schema: &ArrowSchema) -> Result<Self> {
        let label = schema.metadata().get(LABEL_KEY).ok_or_else(|| {
            Error::invalid(format!(
                "the Arrow schema has no `{LABEL_KEY}` metadata naming the label column; is it an examples stream?"
            ))
        })?;
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let ty = match f.data_type() {
                    DataType::Float64 => ColumnType::Number,
                    DataType::Utf8 => ColumnType::String,
                    other => {
                        return Err(Error::invalid(format!(
                            "column `{}` has Arrow type {other}; examples hold Float64 and Utf8 columns",
                            f.name()
                        )));
                    }
                };
                Ok(Column {
                    name: f.name().clone(),
                    ty,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = Schema {
            label: label.clone(),
            columns,
        };
        schema.check()?;
        Ok(schema)
    }
}

enum Builder {
    Number(Float64Builder),
    Text(StringBuilder),
}

/// Writes examples as an Arrow IPC stream, [`BATCH_ROWS`] rows per batch:
/// [`ExampleWriter::new`] writes the schema, [`ExampleWriter::row`] or
/// [`ExampleWriter::batch`] add rows, [`ExampleWriter::finish`] ends the
/// stream (without it the stream is truncated, and readers say so).
pub struct ExampleWriter<W: Write> {
    out: BatchWriter<W>,
    schema: Schema,
    arrow: Arc<ArrowSchema>,
    builders: Vec<Builder>,
    pending: usize,
    rows: u64,
}

impl<W: Write> ExampleWriter<W> {
    /// Writes the schema message.
    pub fn new(out: W, schema: &Schema) -> Result<Self> {
        schema.check()?;
        let arrow = schema.to_arrow();
        Ok(ExampleWriter {
            out: BatchWriter::new(out, &arrow)?,
            builders: new_builders(schema),
            schema: schema.clone(),
            arrow,
            pending: 0,
            rows: 0,
        })
    }

    /// Adds one row; it must have one value per column, each of its
    /// column's type or missing, numbers finite.
    pub fn row(&mut self, row: &[Value]) -> Result<()> {
        if row.len() != self.builders.len() {
            return Err(Error::invalid(format!(
                "row has {} values for {} columns",
                row.len(),
                self.builders.len()
            )));
        }
        for (i, (builder, value)) in self.builders.iter().zip(row).enumerate() {
            let fits = match (builder, value) {
                (_, Value::Missing) => true,
                (Builder::Number(_), Value::Number(x)) => x.is_finite(),
                (Builder::Text(_), Value::Text(_)) => true,
                _ => false,
            };
            if !fits {
                let column = &self.schema.columns[i];
                return Err(Error::invalid(format!(
                    "row {}: column `{}` is a {} column but holds {value}",
                    self.rows + 1,
                    column.name,
                    column.ty.name()
                )));
            }
        }
        for (builder, value) in self.builders.iter_mut().zip(row) {
            match (builder, value) {
                (Builder::Number(b), Value::Number(x)) => b.append_value(*x),
                (Builder::Number(b), _) => b.append_null(),
                (Builder::Text(b), Value::Text(t)) => b.append_value(t),
                (Builder::Text(b), _) => b.append_null(),
            }
        }
        self.pending += 1;
        self.rows += 1;
        if self.pending == BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Adds a batch of rows with the writer's schema (as built by
    /// [`Schema::to_arrow`]); numbers must be finite.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.arrow.fields() {
            return Err(Error::invalid(
                "batch columns differ from the examples schema",
            ));
        }
        check_finite(batch, &self.schema, self.rows)?;
        self.flush()?;
        self.rows += batch.num_rows() as u64;
        let batch = batch.clone().with_schema(self.arrow.clone()).map_err(|e| {
            Error::invalid(format!("batch does not fit the examples schema: {e}"))
        })?;
        self.out.write(&batch)
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| match b {
                Builder::Number(b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Text(b) => Arc::new(b.finish()) as ArrayRef,
            })
            .collect();
        self.pending = 0;
        let batch = RecordBatch::try_new(self.arrow.clone(), columns)
            .map_err(|e| Error::invalid(format!("building a batch of examples: {e}")))?;
        self.out.write(&batch)
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the last batch and the end-of-stream marker.
    pub fn finish(mut self) -> Result<W> {
        self.flush()?;
        self.out.finish()
    }
}

fn new_builders(schema: &Schema) -> Vec<Builder> {
    schema
        .columns
        .iter()
        .map(|c| match c.ty {
            ColumnType::Number => Builder::Number(Float64Builder::with_capacity(BATCH_ROWS)),
            ColumnType::String => Builder::Text(StringBuilder::new()),
        })
        .collect()
}

/// Fails on the first non-finite number, naming its row (1-based, counting
/// from `rows_before`) and column.
fn check_finite(batch: &RecordBatch, schema: &Schema, rows_before: u64) -> Result<()> {
    for (column, array) in schema.columns.iter().zip(batch.columns()) {
        if let Some(numbers) = array.as_any().downcast_ref::<Float64Array>()
            && let Some(i) = numbers
                .iter()
                .position(|x| x.is_some_and(|x| !x.is_finite()))
        {
            return Err(Error::Row {
                what: WHAT,
                row: rows_before + i as u64 + 1,
                message: format!(
                    "column `{}` holds {}; numbers must be finite",
                    column.name,
                    numbers.value(i)
                ),
            });
        }
    }
    Ok(())
}

/// One column of the current batch, downcast once per batch.
enum ColumnArray {
    Number(Float64Array),
    Text(StringArray),
}

/// Reads an examples stream one row (or one batch) at a time; holds one
/// batch in memory.
pub struct ExampleReader<R: Read> {
    batches: BatchReader<R>,
    schema: Schema,
    current: Vec<ColumnArray>,
    len: usize,
    next: usize,
    rows: u64,
}

impl<R: Read> ExampleReader<R> {
    /// Reads and checks the schema.
    pub fn new(reader: R) -> Result<Self> {
        let batches = BatchReader::new(reader, WHAT)?;
        let schema = Schema::from_arrow(&batches.schema()).map_err(|e| match e {
            Error::Invalid(message) => Error::Stream {
                what: WHAT,
                offset: 0,
                message,
            },
            other => other,
        })?;
        Ok(ExampleReader {
            batches,
            schema,
            current: Vec::new(),
            len: 0,
            next: 0,
            rows: 0,
        })
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The next whole batch, numbers checked finite; rows already handed
    /// out by [`ExampleReader::next_row`] from the current batch are not
    /// repeated.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.next < self.len {
            return Err(Error::invalid(
                "next_batch called in the middle of a batch read by rows",
            ));
        }
        let Some(batch) = self.batches.next_batch()? else {
            return Ok(None);
        };
        check_finite(&batch, &self.schema, self.rows)?;
        self.rows += batch.num_rows() as u64;
        Ok(Some(batch))
    }

    /// The next row and its 1-based row number; `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<(u64, Vec<Value>)>> {
        while self.next == self.len {
            let Some(batch) = self.next_batch()? else {
                return Ok(None);
            };
            // Rows of this batch are numbered from here.
            self.rows -= batch.num_rows() as u64;
            self.current = batch
                .columns()
                .iter()
                .map(|a| match a.data_type() {
                    DataType::Float64 => ColumnArray::Number(a.as_primitive().clone()),
                    _ => ColumnArray::Text(a.as_string::<i32>().clone()),
                })
                .collect();
            self.len = batch.num_rows();
            self.next = 0;
        }
        let i = self.next;
        self.next += 1;
        self.rows += 1;
        let row = self
            .current
            .iter()
            .map(|column| match column {
                ColumnArray::Number(a) if a.is_valid(i) => Value::Number(a.value(i)),
                ColumnArray::Text(a) if a.is_valid(i) => Value::Text(a.value(i).to_owned()),
                _ => Value::Missing,
            })
            .collect();
        Ok(Some((self.rows, row)))
    }

    /// Reads the remaining rows into memory (at most [`ROWS_MAX`]).
    pub fn read_all(mut self) -> Result<Examples> {
        let mut rows = Vec::new();
        while let Some((_, row)) = self.next_row()? {
            if rows.len() == ROWS_MAX {
                return Err(Error::Limit {
                    what: "example rows in memory",
                    limit: ROWS_MAX,
                });
            }
            rows.push(row);
        }
        Ok(Examples {
            schema: self.schema,
            rows,
        })
    }
}

/// A whole examples table in memory (tests and small tables only: the
/// streaming steps read with [`ExampleReader`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Examples {
    /// The schema.
    pub schema: Schema,
    /// The rows, one value per column each.
    pub rows: Vec<Vec<Value>>,
}

impl Examples {
    /// Reads a whole examples stream.
    pub fn read(reader: impl Read) -> Result<Self> {
        ExampleReader::new(reader)?.read_all()
    }

    /// Checks every row has one value per column (rows built in code
    /// rather than read may not).
    pub fn check(&self) -> Result<()> {
        let width = self.schema.columns.len();
        match self.rows.iter().position(|row| row.len() != width) {
            Some(i) => Err(Error::invalid(format!(
                "row {i} has {} values for {width} columns",
                self.rows[i].len()
            ))),
            None => Ok(()),
        }
    }

    /// Writes the examples stream.
    pub fn write<W: Write>(&self, out: W) -> Result<W> {
        let mut writer = ExampleWriter::new(out, &self.schema)?;
        for row in &self.rows {
            writer.row(row)?;
        }
        writer.finish()
    }

    /// Parses examples from JSON Lines: a `{"schema":{…}}` line, then one
    /// JSON array of values per row. A readable way to write examples by
    /// hand (tests, fixtures); the artifacts themselves are Arrow streams.
    pub fn from_json_lines(text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Header {
            schema: Schema,
        }
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let Some((_, first)) = lines.next() else {
            return Err(Error::format("examples JSON", 1, "empty input: no schema line"));
        };
        let header: Header = serde_json::from_str(first)
            .map_err(|e| Error::format("examples JSON", 1, e.to_string()))?;
        header.schema.check()?;
        let mut rows = Vec::new();
        for (n, line) in lines {
            let row: Vec<Value> = serde_json::from_str(line)
                .map_err(|e| Error::format("examples JSON", n as u64 + 1, e.to_string()))?;
            rows.push(row);
        }
        let examples = Examples {
            schema: header.schema,
            rows,
        };
        examples.check()?;
        Ok(examples)
    }

    /// The Arrow stream bytes of [`Examples::from_json_lines`].
    pub fn arrow_from_json_lines(text: &str) -> Result<Vec<u8>> {
        Examples::from_json_lines(text)?.write(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema {
            label: "y".into(),
            columns: vec![
                Column {
                    name: "y".into(),
                    ty: ColumnType::String,
                },
                Column {
                    name: "x".into(),
                    ty: ColumnType::Number,
                },
            ],
        }
    }

    #[test]
    fn examples_round_trip_through_an_arrow_stream() {
        let examples = Examples {
            schema: schema(),
            rows: vec![
                vec![Value::Text("a".into()), Value::Number(39.1)],
                vec![Value::Text("b \"q\"".into()), Value::Missing],
                vec![Value::Missing, Value::Number(181.0)],
            ],
        };
        let bytes = examples.write(Vec::new()).unwrap();
        assert_eq!(Examples::read(&bytes[..]).unwrap(), examples);
        let arrow = ExampleReader::new(&bytes[..]).unwrap().batches.schema();
        assert_eq!(arrow.metadata()[LABEL_KEY], "y");
        assert_eq!(arrow.field(1).data_type(), &DataType::Float64);
    }

    #[test]
    fn rows_are_numbered_across_batches() {
        let rows = BATCH_ROWS * 2 + 3;
        let examples = Examples {
            schema: schema(),
            rows: (0..rows)
                .map(|i| vec![Value::Text(format!("{}", i % 3)), Value::Number(i as f64)])
                .collect(),
        };
        let bytes = examples.write(Vec::new()).unwrap();
        let mut reader = ExampleReader::new(&bytes[..]).unwrap();
        let mut seen = 0u64;
        while let Some((n, row)) = reader.next_row().unwrap() {
            seen += 1;
            assert_eq!(n, seen);
            assert_eq!(row[1], Value::Number((n - 1) as f64));
        }
        assert_eq!(seen, rows as u64);
        let mut batches = ExampleReader::new(&bytes[..]).unwrap();
        let sizes: Vec<usize> = std::iter::from_fn(|| batches.next_batch().unwrap())
            .map(|b| b.num_rows())
            .collect();
        assert_eq!(sizes, [BATCH_ROWS, BATCH_ROWS, 3]);
    }

    #[test]
    fn the_text_form_reads_integers_as_numbers() {
        let text = concat!(
            r#"{"schema":{"label":"y","columns":[{"name":"y","type":"string"},{"name":"x","type":"number"}]}}"#,
            "\n[\"a\",3]\n"
        );
        let examples = Examples::from_json_lines(text).unwrap();
        assert_eq!(examples.rows[0][1], Value::Number(3.0));
    }

    #[test]
    fn a_value_of_the_wrong_type_names_row_and_column() {
        let mut w = ExampleWriter::new(Vec::new(), &schema()).unwrap();
        w.row(&[Value::Text("a".into()), Value::Number(1.0)]).unwrap();
        let err = w
            .row(&[Value::Text("a".into()), Value::Text("1".into())])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 2: column `x` is a number column but holds \"1\""
        );
    }

    #[test]
    fn a_stream_without_a_label_or_with_other_types_is_rejected() {
        use arrow_array::Int64Array;
        let write = |schema: Arc<ArrowSchema>, column: ArrayRef| {
            let mut w = BatchWriter::new(Vec::new(), &schema).unwrap();
            w.write(&RecordBatch::try_new(schema, vec![column]).unwrap())
                .unwrap();
            w.finish().unwrap()
        };
        let f64s: ArrayRef = Arc::new(Float64Array::from(vec![1.0]));
        let plain = Arc::new(ArrowSchema::new(vec![Field::new("x", DataType::Float64, true)]));
        let err = Examples::read(&write(plain, f64s.clone())[..]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("examples at byte 0: the Arrow schema has no `sluice.label` metadata"),
            "{err}"
        );
        let ints = crate::table::schema_with(
            vec![Field::new("x", DataType::Int64, true)],
            LABEL_KEY,
            "x".into(),
        );
        let err = Examples::read(&write(ints, Arc::new(Int64Array::from(vec![1])))[..])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "examples at byte 0: column `x` has Arrow type Int64; examples hold Float64 and Utf8 columns"
        );
        let no_label = crate::table::schema_with(
            vec![Field::new("x", DataType::Float64, true)],
            LABEL_KEY,
            "z".into(),
        );
        let err = Examples::read(&write(no_label, f64s)[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "examples at byte 0: label column `z` is not among the columns"
        );
    }

    #[test]
    fn a_non_finite_number_in_a_batch_names_row_and_column() {
        let arrow = schema().to_arrow();
        let batch = RecordBatch::try_new(
            arrow.clone(),
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Float64Array::from(vec![1.0, f64::NAN])),
            ],
        )
        .unwrap();
        let mut w = BatchWriter::new(Vec::new(), &arrow).unwrap();
        w.write(&batch).unwrap();
        let bytes = w.finish().unwrap();
        let err = Examples::read(&bytes[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "examples row 2: column `x` holds NaN; numbers must be finite"
        );
    }

    #[test]
    fn duplicate_columns_are_rejected() {
        let text = r#"{"schema":{"label":"x","columns":[{"name":"x","type":"number"},{"name":"x","type":"string"}]}}"#;
        let err = Examples::from_json_lines(text).unwrap_err();
        assert_eq!(err.to_string(), "column `x` appears twice");
    }

    #[test]
    fn check_finds_rows_of_the_wrong_width() {
        let examples = Examples {
            schema: schema(),
            rows: vec![vec![Value::Missing, Value::Missing], vec![Value::Missing]],
        };
        assert_eq!(
            examples.check().unwrap_err().to_string(),
            "row 1 has 1 values for 2 columns"
        );
    }

    #[test]
    fn empty_input_is_rejected() {
        let err = Examples::read(&b""[..]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("examples at byte 0: no Arrow IPC stream schema"),
            "{err}"
        );
    }
}
