//! The *examples* format: typed rows, as JSON Lines.
//!
//! ```text
//! {"schema":{"label":"species","columns":[{"name":"species","type":"string"},{"name":"bill_length_mm","type":"number"}]}}
//! ["Adelie",39.1]
//! ["Gentoo",null]
//! ```
//!
//! Line 1 is the [`Schema`]: the label column's name and every column's
//! name and [`ColumnType`], in order; the label is one of the columns.
//! Each later line is one row: a JSON array with one [`Value`] per column.
//! A reader checks each row's length and that every value matches its
//! column's type (or is `null`).

use std::collections::BTreeSet;
use std::fmt;
use std::io::{BufRead, Write};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::{COLUMNS_MAX, Error, LineReader, ROWS_MAX, Result};

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

#[derive(Serialize, Deserialize)]
struct Header {
    schema: Schema,
}

/// Writes an examples file: [`ExampleWriter::new`] writes the header, then
/// one [`ExampleWriter::row`] per row.
pub struct ExampleWriter<W> {
    out: W,
    width: usize,
    rows: u64,
}

impl<W: Write> ExampleWriter<W> {
    /// Writes the header line.
    pub fn new(mut out: W, schema: &Schema) -> Result<Self> {
        crate::write_json_line(
            &mut out,
            &Header {
                schema: schema.clone(),
            },
        )?;
        Ok(ExampleWriter {
            out,
            width: schema.columns.len(),
            rows: 0,
        })
    }

    /// Writes one row; it must have one value per column.
    pub fn row(&mut self, row: &[Value]) -> Result<()> {
        if row.len() != self.width {
            return Err(Error::invalid(format!(
                "row has {} values for {} columns",
                row.len(),
                self.width
            )));
        }
        crate::write_json_line(&mut self.out, &row)?;
        self.rows += 1;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// Reads an examples file one row at a time.
pub struct ExampleReader<R> {
    lines: LineReader<R>,
    schema: Schema,
    rows: usize,
}

impl<R: BufRead> ExampleReader<R> {
    /// Reads and checks the header line.
    pub fn new(reader: R) -> Result<Self> {
        let mut lines = LineReader::new(reader, WHAT);
        let schema = loop {
            let Some((line, bytes)) = lines.next_line()? else {
                return Err(format_error(1, "empty input: no schema line"));
            };
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let header: Header = serde_json::from_slice(bytes)
                .map_err(|e| format_error(line, format!("expected {{\"schema\":{{…}}}}: {e}")))?;
            header.schema.check().map_err(|e| match e {
                Error::Invalid(message) => format_error(line, message),
                other => other,
            })?;
            break header.schema;
        };
        Ok(ExampleReader {
            lines,
            schema,
            rows: 0,
        })
    }

    /// The schema from the header line.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The next row and its 1-based line number; `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<(u64, Vec<Value>)>> {
        loop {
            let Some((line, bytes)) = self.lines.next_line()? else {
                return Ok(None);
            };
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if self.rows == ROWS_MAX {
                return Err(Error::Limit {
                    what: "example rows",
                    limit: ROWS_MAX,
                });
            }
            let row: Vec<Value> = serde_json::from_slice(bytes)
                .map_err(|e| format_error(line, format!("expected a JSON array of values: {e}")))?;
            if row.len() != self.schema.columns.len() {
                return Err(format_error(
                    line,
                    format!(
                        "expected {} values, found {}",
                        self.schema.columns.len(),
                        row.len()
                    ),
                ));
            }
            for (value, column) in row.iter().zip(&self.schema.columns) {
                if let Some(ty) = value.ty()
                    && ty != column.ty
                {
                    return Err(format_error(
                        line,
                        format!(
                            "column `{}` is a {} column but holds {value}",
                            column.name,
                            column.ty.name()
                        ),
                    ));
                }
                if let Value::Number(x) = value
                    && !x.is_finite()
                {
                    return Err(format_error(line, "numbers must be finite"));
                }
            }
            self.rows += 1;
            return Ok(Some((line, row)));
        }
    }

    /// Reads the remaining rows into memory.
    pub fn read_all(mut self) -> Result<Examples> {
        let mut rows = Vec::new();
        while let Some((_, row)) = self.next_row()? {
            rows.push(row);
        }
        Ok(Examples {
            schema: self.schema,
            rows,
        })
    }
}

/// A whole examples file in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Examples {
    /// The header.
    pub schema: Schema,
    /// The rows, one value per column each.
    pub rows: Vec<Vec<Value>>,
}

impl Examples {
    /// Reads a whole examples file.
    pub fn read(reader: impl BufRead) -> Result<Self> {
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

    /// Writes the examples file.
    pub fn write(&self, out: impl Write) -> Result<()> {
        let mut writer = ExampleWriter::new(out, &self.schema)?;
        for row in &self.rows {
            writer.row(row)?;
        }
        Ok(())
    }
}

fn format_error(line: u64, message: impl Into<String>) -> Error {
    Error::format(WHAT, line, message)
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
    fn examples_round_trip_through_the_exact_text_format() {
        let examples = Examples {
            schema: schema(),
            rows: vec![
                vec![Value::Text("a".into()), Value::Number(39.1)],
                vec![Value::Text("b \"q\"".into()), Value::Missing],
                vec![Value::Text("c".into()), Value::Number(181.0)],
            ],
        };
        let mut out = Vec::new();
        examples.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"schema":{"label":"y","columns":[{"name":"y","type":"string"},{"name":"x","type":"number"}]}}"#,
                "\n",
                r#"["a",39.1]"#,
                "\n",
                r#"["b \"q\"",null]"#,
                "\n",
                r#"["c",181.0]"#,
                "\n"
            )
        );
        assert_eq!(Examples::read(text.as_bytes()).unwrap(), examples);
    }

    #[test]
    fn integers_read_as_numbers() {
        let text = format!("{}\n[\"a\",3]\n", header_line());
        let examples = Examples::read(text.as_bytes()).unwrap();
        assert_eq!(examples.rows[0][1], Value::Number(3.0));
    }

    fn header_line() -> String {
        serde_json::to_string(&Header { schema: schema() }).unwrap()
    }

    #[test]
    fn row_of_wrong_length_names_the_line() {
        let text = format!("{}\n[\"a\",1]\n[\"b\"]\n", header_line());
        let err = Examples::read(text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "examples line 3: expected 2 values, found 1"
        );
    }

    #[test]
    fn value_of_wrong_type_names_line_and_column() {
        let text = format!("{}\n[\"a\",\"1\"]\n", header_line());
        let err = Examples::read(text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "examples line 2: column `x` is a number column but holds \"1\""
        );
    }

    #[test]
    fn schema_without_its_label_column_is_rejected() {
        let text = r#"{"schema":{"label":"z","columns":[{"name":"x","type":"number"}]}}"#;
        let err = Examples::read(text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "examples line 1: label column `z` is not among the columns"
        );
    }

    #[test]
    fn duplicate_columns_are_rejected() {
        let text = r#"{"schema":{"label":"x","columns":[{"name":"x","type":"number"},{"name":"x","type":"string"}]}}"#;
        let err = Examples::read(text.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "examples line 1: column `x` appears twice");
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
        assert_eq!(
            err.to_string(),
            "examples line 1: empty input: no schema line"
        );
    }
}
