//! A data schema inferred from training examples, and the anomalies other
//! examples show against it.
//!
//! Schema (`schema` output):
//!
//! ```json
//! {"label": "species", "rows": 275, "columns": [
//!   {"name": "island", "type": "string", "categories": ["Biscoe", "Dream", "Torgersen"], "missing_seen": false},
//!   {"name": "bill_length_mm", "type": "number", "range": [32.1, 59.6], "missing_seen": true}]}
//! ```
//!
//! `range` is `null` for a number column without values; `categories` is
//! `null` for a string column with more than [`CATEGORIES_MAX`](crate::CATEGORIES_MAX) distinct
//! values (free text, not checked).
//!
//! Both passes stream: the schema is read off a bounded [`Profile`] of the
//! training examples, and the anomaly check holds one batch, the schema
//! and its tallies (each at most [`ANOMALY_EXAMPLES_MAX`] values and rows),
//! whatever the number of rows.
//!
//! Anomalies (`anomalies` output), a JSON array, at most one entry per
//! column and kind, in schema column order then [`AnomalyKind`] order:
//!
//! ```json
//! [{"column": "sex", "kind": "missing", "count": 2,
//!   "detail": "2 missing values where training data has none",
//!   "examples": [], "rows": [4, 17]}]
//! ```
//!
//! `count` is the number of rows affected, `examples` up to
//! [`ANOMALY_EXAMPLES_MAX`] distinct offending values in order of first
//! appearance, `rows` up to as many 0-based row indices.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{Read, Write};

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef};
use serde::Serialize;

use crate::example::{ColumnType, ExampleReader, Value};
use crate::profile::Profile;
use crate::{Result, count_of};

/// How many offending values and row indices an anomaly lists.
pub const ANOMALY_EXAMPLES_MAX: usize = 5;

/// What training data says a column's values look like.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataSchema {
    /// The label column's name.
    pub label: String,
    /// Training rows the schema was inferred from.
    pub rows: u64,
    /// One per column, in order.
    pub columns: Vec<ColumnSchema>,
}

/// What training data says one column's values look like.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ColumnSchema {
    /// The column name.
    pub name: String,
    /// The type and its domain; serialises `type` and its field inline.
    #[serde(flatten)]
    pub domain: Domain,
    /// Whether training data has missing values in this column.
    pub missing_seen: bool,
}

/// The values a column may hold.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Domain {
    /// Numbers within `[min, max]`; `None` when training saw none.
    Number {
        /// `[min, max]` of the training values.
        range: Option<[f64; 2]>,
    },
    /// Strings from a set; `None` when the column is free text.
    String {
        /// The training values, sorted.
        categories: Option<Vec<String>>,
    },
}

impl Domain {
    fn ty(&self) -> ColumnType {
        match self {
            Domain::Number { .. } => ColumnType::Number,
            Domain::String { .. } => ColumnType::String,
        }
    }
}

impl DataSchema {
    /// Reads the schema off a profile of training examples.
    pub fn from_profile(profile: &Profile) -> Self {
        let columns = profile
            .columns
            .iter()
            .map(|c| ColumnSchema {
                name: c.name.clone(),
                domain: match c.ty {
                    ColumnType::Number => Domain::Number {
                        range: c.moments.min().zip(c.moments.max()).map(|(a, b)| [a, b]),
                    },
                    ColumnType::String => Domain::String {
                        categories: c
                            .categories
                            .exact()
                            .map(|counts| counts.keys().cloned().collect()),
                    },
                },
                missing_seen: c.missing > 0,
            })
            .collect();
        DataSchema {
            label: profile.schema.label.clone(),
            rows: profile.rows,
            columns,
        }
    }

    /// Infers the schema of an examples stream in one pass.
    pub fn read(train: impl Read) -> Result<Self> {
        Ok(Self::from_profile(&Profile::read(ExampleReader::new(
            train,
        )?)?))
    }

    /// Writes it as a JSON document.
    pub fn write(&self, out: impl Write) -> Result<()> {
        crate::write_json_document(out, self)
    }
}

/// The kinds of anomaly, in the order they are reported for a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// The column is absent.
    MissingColumn,
    /// The column's type differs from the schema's.
    TypeMismatch,
    /// Missing values where training had none.
    Missing,
    /// Numbers outside the training range.
    OutOfRange,
    /// Strings that are not training categories.
    UnseenCategory,
}

impl AnomalyKind {
    fn name(self) -> &'static str {
        match self {
            AnomalyKind::MissingColumn => "missing_column",
            AnomalyKind::TypeMismatch => "type_mismatch",
            AnomalyKind::Missing => "missing",
            AnomalyKind::OutOfRange => "out_of_range",
            AnomalyKind::UnseenCategory => "unseen_category",
        }
    }
}

/// Values of one column that do not fit the schema.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Anomaly {
    /// The column.
    pub column: String,
    /// What is wrong.
    pub kind: AnomalyKind,
    /// Rows affected.
    pub count: u64,
    /// What is wrong, for people.
    pub detail: String,
    /// Up to [`ANOMALY_EXAMPLES_MAX`] distinct offending values.
    pub examples: Vec<Value>,
    /// Up to [`ANOMALY_EXAMPLES_MAX`] 0-based indices of affected rows.
    pub rows: Vec<u64>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "column `{}`: {}: {}",
            self.column,
            self.kind.name(),
            self.detail
        )
    }
}

/// Collects one anomaly's count, examples and rows.
struct Tally {
    count: u64,
    examples: Vec<Value>,
    rows: Vec<u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            count: 0,
            examples: Vec::new(),
            rows: Vec::new(),
        }
    }

    fn add(&mut self, row: u64, value: Option<Cell>) {
        self.count += 1;
        if self.rows.len() < ANOMALY_EXAMPLES_MAX {
            self.rows.push(row);
        }
        if let Some(value) = value
            && self.examples.len() < ANOMALY_EXAMPLES_MAX
            && !self.examples.iter().any(|v| value.is(v))
        {
            self.examples.push(value.to_value());
        }
    }
}

/// A value of the batch being checked, borrowed: an offending value is
/// copied only when it is kept as an example.
#[derive(Clone, Copy)]
enum Cell<'a> {
    Number(f64),
    Text(&'a str),
}

impl Cell<'_> {
    fn is(self, value: &Value) -> bool {
        match (self, value) {
            (Cell::Number(x), Value::Number(y)) => x == *y,
            (Cell::Text(t), Value::Text(u)) => t == u,
            _ => false,
        }
    }

    fn to_value(self) -> Value {
        match self {
            Cell::Number(x) => Value::Number(x),
            Cell::Text(t) => Value::Text(t.to_owned()),
        }
    }
}

/// Per schema column: where it is in the checked data and what is tallied.
struct ColumnCheck<'a> {
    schema: &'a ColumnSchema,
    categories: Option<BTreeSet<&'a str>>,
    index: Option<usize>,
    type_ok: bool,
    tallies: [Tally; 5],
}

impl ColumnCheck<'_> {
    /// Checks one batch's column; `first_row` is the 0-based index of its
    /// first row.
    fn batch(&mut self, array: &ArrayRef, first_row: u64) {
        // ExampleReader checked the batch against its schema: a column is
        // Float64 or Utf8.
        let numbers = array.as_primitive_opt::<Float64Type>();
        let strings = array.as_string_opt::<i32>();
        for i in 0..array.len() {
            let row = first_row + i as u64;
            let cell = if array.is_null(i) {
                None
            } else if let Some(numbers) = numbers {
                Some(Cell::Number(numbers.value(i)))
            } else {
                strings.map(|strings| Cell::Text(strings.value(i)))
            };
            let kind = match (cell, &self.schema.domain) {
                (None, _) if !self.schema.missing_seen => AnomalyKind::Missing,
                (None, _) => continue,
                _ if !self.type_ok => AnomalyKind::TypeMismatch,
                (Some(Cell::Number(x)), Domain::Number { range }) => match range {
                    Some([min, max]) if (*min..=*max).contains(&x) => continue,
                    _ => AnomalyKind::OutOfRange,
                },
                (Some(Cell::Text(t)), Domain::String { .. }) => match &self.categories {
                    Some(categories) if !categories.contains(t) => AnomalyKind::UnseenCategory,
                    _ => continue,
                },
                // A value of the wrong type under a matching column type
                // cannot come out of ExampleReader.
                _ => AnomalyKind::TypeMismatch,
            };
            self.tallies[kind as usize].add(row, cell);
        }
    }
}

/// Checks every row of an examples stream against `schema`, a batch at a
/// time and column by column (each tally belongs to one column, so its
/// rows and examples still come in row order).
pub fn find_anomalies(schema: &DataSchema, examples: impl Read) -> Result<Vec<Anomaly>> {
    let mut reader = ExampleReader::new(examples)?;
    let data_schema = reader.schema().clone();
    let mut checks: Vec<ColumnCheck> = schema
        .columns
        .iter()
        .map(|c| {
            let index = data_schema.index_of(&c.name);
            ColumnCheck {
                schema: c,
                categories: match &c.domain {
                    Domain::String {
                        categories: Some(categories),
                    } => Some(categories.iter().map(String::as_str).collect()),
                    _ => None,
                },
                index,
                type_ok: index.is_some_and(|i| data_schema.columns[i].ty == c.domain.ty()),
                tallies: std::array::from_fn(|_| Tally::new()),
            }
        })
        .collect();

    let mut first_row = 0u64;
    while let Some(batch) = reader.next_batch()? {
        let rows = batch.num_rows();
        for check in &mut checks {
            match check.index {
                None => {
                    let tally = &mut check.tallies[AnomalyKind::MissingColumn as usize];
                    for i in 0..rows {
                        tally.add(first_row + i as u64, None);
                    }
                }
                Some(index) => check.batch(batch.column(index), first_row),
            }
        }
        first_row += rows as u64;
    }

    let mut anomalies = Vec::new();
    for check in checks {
        let [missing_column, type_mismatch, missing, out_of_range, unseen] = check.tallies;
        let kinds = [
            (AnomalyKind::MissingColumn, missing_column),
            (AnomalyKind::TypeMismatch, type_mismatch),
            (AnomalyKind::Missing, missing),
            (AnomalyKind::OutOfRange, out_of_range),
            (AnomalyKind::UnseenCategory, unseen),
        ];
        for (kind, tally) in kinds {
            if tally.count == 0 {
                continue;
            }
            let detail = describe(check.schema, kind, tally.count);
            anomalies.push(Anomaly {
                column: check.schema.name.clone(),
                kind,
                count: tally.count,
                detail,
                examples: tally.examples,
                rows: tally.rows,
            });
        }
    }
    Ok(anomalies)
}

fn describe(schema: &ColumnSchema, kind: AnomalyKind, count: u64) -> String {
    let values = count_of(count, "value", "values");
    match (kind, &schema.domain) {
        (AnomalyKind::MissingColumn, _) => "the column is absent".to_owned(),
        (AnomalyKind::TypeMismatch, domain) => {
            format!("{values} not of the training type {}", domain.ty().name())
        }
        (AnomalyKind::Missing, _) => format!(
            "{} where training data has none",
            count_of(count, "missing value", "missing values")
        ),
        (
            AnomalyKind::OutOfRange,
            Domain::Number {
                range: Some([min, max]),
            },
        ) => format!("{values} outside the training range [{min}, {max}]"),
        (AnomalyKind::OutOfRange, _) => format!("{values} where training data has none"),
        (AnomalyKind::UnseenCategory, Domain::String { categories }) => format!(
            "{values} not among the {} training categories",
            categories.as_ref().map_or(0, Vec::len)
        ),
        (AnomalyKind::UnseenCategory, _) => format!("{values} not seen in training"),
    }
}

/// Writes anomalies as a JSON array.
pub fn write_anomalies(anomalies: &[Anomaly], out: impl Write) -> Result<()> {
    crate::write_json_document(out, &anomalies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CATEGORIES_MAX;
    use crate::example::Examples;
    use serde_json::json;

    fn arrow(text: &str) -> Vec<u8> {
        Examples::arrow_from_json_lines(text).unwrap()
    }

    const TRAIN: &str = concat!(
        r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"},{"name":"x","type":"number"},{"name":"c","type":"string"},{"name":"gone","type":"number"},{"name":"t","type":"number"}]}}"#,
        "\n",
        "[\"a\",1.0,\"red\",0.0,1.0]\n",
        "[\"b\",5.0,null,0.0,2.0]\n",
        "[\"a\",3.0,\"blue\",0.0,3.0]\n",
    );

    fn schema() -> DataSchema {
        DataSchema::read(&arrow(TRAIN)[..]).unwrap()
    }

    #[test]
    fn schema_records_types_ranges_categories_and_missing() {
        let json = serde_json::to_value(schema()).unwrap();
        assert_eq!(
            json,
            json!({
                "label": "k",
                "rows": 3,
                "columns": [
                    {"name": "k", "type": "string", "categories": ["a", "b"], "missing_seen": false},
                    {"name": "x", "type": "number", "range": [1.0, 5.0], "missing_seen": false},
                    {"name": "c", "type": "string", "categories": ["blue", "red"], "missing_seen": true},
                    {"name": "gone", "type": "number", "range": [0.0, 0.0], "missing_seen": false},
                    {"name": "t", "type": "number", "range": [1.0, 3.0], "missing_seen": false},
                ]
            })
        );
    }

    #[test]
    fn training_data_has_no_anomalies_against_its_own_schema() {
        assert_eq!(
            find_anomalies(&schema(), &arrow(TRAIN)[..]).unwrap(),
            vec![]
        );
    }

    #[test]
    fn every_kind_of_anomaly_is_found_and_counted() {
        let eval = concat!(
            r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"},{"name":"x","type":"number"},{"name":"c","type":"string"},{"name":"t","type":"string"}]}}"#,
            "\n",
            "[\"a\",0.5,\"green\",\"one\"]\n",
            "[\"z\",null,\"red\",null]\n",
            "[\"a\",9.0,\"green\",\"two\"]\n",
            "[\"a\",5.0,null,\"one\"]\n",
        );
        let anomalies = find_anomalies(&schema(), &arrow(eval)[..]).unwrap();
        let json = serde_json::to_value(&anomalies).unwrap();
        assert_eq!(
            json,
            json!([
                {"column": "k", "kind": "unseen_category", "count": 1,
                 "detail": "1 value not among the 2 training categories",
                 "examples": ["z"], "rows": [1]},
                {"column": "x", "kind": "missing", "count": 1,
                 "detail": "1 missing value where training data has none",
                 "examples": [], "rows": [1]},
                {"column": "x", "kind": "out_of_range", "count": 2,
                 "detail": "2 values outside the training range [1, 5]",
                 "examples": [0.5, 9.0], "rows": [0, 2]},
                {"column": "c", "kind": "unseen_category", "count": 2,
                 "detail": "2 values not among the 2 training categories",
                 "examples": ["green"], "rows": [0, 2]},
                {"column": "gone", "kind": "missing_column", "count": 4,
                 "detail": "the column is absent",
                 "examples": [], "rows": [0, 1, 2, 3]},
                {"column": "t", "kind": "type_mismatch", "count": 3,
                 "detail": "3 values not of the training type number",
                 "examples": ["one", "two"], "rows": [0, 2, 3]},
                {"column": "t", "kind": "missing", "count": 1,
                 "detail": "1 missing value where training data has none",
                 "examples": [], "rows": [1]},
            ])
        );
        assert_eq!(
            anomalies[0].to_string(),
            "column `k`: unseen_category: 1 value not among the 2 training categories"
        );
    }

    #[test]
    fn free_text_columns_are_not_checked_for_categories() {
        let mut train =
            String::from(r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"}]}}"#);
        for i in 0..=CATEGORIES_MAX {
            train.push_str(&format!("\n[\"v{i}\"]"));
        }
        let schema = DataSchema::read(&arrow(&train)[..]).unwrap();
        assert_eq!(
            schema.columns[0].domain,
            Domain::String { categories: None }
        );
        let eval = r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"}]}}
["never seen"]"#;
        assert_eq!(find_anomalies(&schema, &arrow(eval)[..]).unwrap(), vec![]);
    }

    #[test]
    fn anomaly_rows_are_numbered_across_batches() {
        let n = crate::table::BATCH_ROWS + 3;
        let mut eval = String::from(
            r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"},{"name":"x","type":"number"}]}}"#,
        );
        for i in 0..n {
            let x = if i == n - 4 || i == n - 2 { 7.0 } else { 2.0 };
            eval.push_str(&format!("\n[\"a\",{x}]"));
        }
        let anomalies = find_anomalies(&schema(), &arrow(&eval)[..]).unwrap();
        let json = serde_json::to_value(&anomalies).unwrap();
        let (a, b) = (n as u64 - 4, n as u64 - 2);
        assert_eq!(
            json,
            json!([
                {"column": "x", "kind": "out_of_range", "count": 2,
                 "detail": "2 values outside the training range [1, 5]",
                 "examples": [7.0], "rows": [a, b]},
                {"column": "c", "kind": "missing_column", "count": n,
                 "detail": "the column is absent",
                 "examples": [], "rows": [0, 1, 2, 3, 4]},
                {"column": "gone", "kind": "missing_column", "count": n,
                 "detail": "the column is absent",
                 "examples": [], "rows": [0, 1, 2, 3, 4]},
                {"column": "t", "kind": "missing_column", "count": n,
                 "detail": "the column is absent",
                 "examples": [], "rows": [0, 1, 2, 3, 4]},
            ])
        );
    }
}
