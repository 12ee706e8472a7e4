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
//! `null` for a string column with more than [`CATEGORIES_MAX`] distinct
//! values (free text, not checked).
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
use std::io::{BufRead, Write};

use serde::Serialize;

use crate::example::{ColumnType, ExampleReader, Value};
use crate::profile::Profile;
use crate::{CATEGORIES_MAX, Result, count_of};

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
                        categories: (c.categories.len() <= CATEGORIES_MAX)
                            .then(|| c.categories.keys().cloned().collect()),
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

    /// Infers the schema of an examples file.
    pub fn read(train: impl BufRead) -> Result<Self> {
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

    fn add(&mut self, row: u64, value: Option<&Value>) {
        self.count += 1;
        if self.rows.len() < ANOMALY_EXAMPLES_MAX {
            self.rows.push(row);
        }
        if let Some(value) = value
            && self.examples.len() < ANOMALY_EXAMPLES_MAX
            && !self.examples.contains(value)
        {
            self.examples.push(value.clone());
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

/// Checks every row of `examples` against `schema`.
pub fn find_anomalies(schema: &DataSchema, examples: impl BufRead) -> Result<Vec<Anomaly>> {
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

    let mut row_index = 0u64;
    while let Some((_, row)) = reader.next_row()? {
        for check in &mut checks {
            let Some(index) = check.index else {
                check.tallies[AnomalyKind::MissingColumn as usize].add(row_index, None);
                continue;
            };
            let value = &row[index];
            let kind = match (value, &check.schema.domain) {
                (Value::Missing, _) if !check.schema.missing_seen => AnomalyKind::Missing,
                (Value::Missing, _) => continue,
                _ if !check.type_ok => AnomalyKind::TypeMismatch,
                (Value::Number(x), Domain::Number { range }) => match range {
                    Some([min, max]) if (*min..=*max).contains(x) => continue,
                    _ => AnomalyKind::OutOfRange,
                },
                (Value::Text(t), Domain::String { .. }) => match &check.categories {
                    Some(categories) if !categories.contains(t.as_str()) => {
                        AnomalyKind::UnseenCategory
                    }
                    _ => continue,
                },
                // A value of the wrong type under a matching column type
                // cannot come out of ExampleReader.
                _ => AnomalyKind::TypeMismatch,
            };
            let value = (kind != AnomalyKind::Missing).then_some(value);
            check.tallies[kind as usize].add(row_index, value);
        }
        row_index += 1;
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
    use serde_json::json;

    const TRAIN: &str = concat!(
        r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"},{"name":"x","type":"number"},{"name":"c","type":"string"},{"name":"gone","type":"number"},{"name":"t","type":"number"}]}}"#,
        "\n",
        "[\"a\",1.0,\"red\",0.0,1.0]\n",
        "[\"b\",5.0,null,0.0,2.0]\n",
        "[\"a\",3.0,\"blue\",0.0,3.0]\n",
    );

    fn schema() -> DataSchema {
        DataSchema::read(TRAIN.as_bytes()).unwrap()
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
        assert_eq!(find_anomalies(&schema(), TRAIN.as_bytes()).unwrap(), vec![]);
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
        let anomalies = find_anomalies(&schema(), eval.as_bytes()).unwrap();
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
        let schema = DataSchema::read(train.as_bytes()).unwrap();
        assert_eq!(
            schema.columns[0].domain,
            Domain::String { categories: None }
        );
        let eval = r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"}]}}
["never seen"]"#;
        assert_eq!(find_anomalies(&schema, eval.as_bytes()).unwrap(), vec![]);
    }
}
