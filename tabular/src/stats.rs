//! Descriptive statistics of an examples file, per column.
//!
//! ```json
//! {"rows": 275, "label": "species", "columns": [
//!   {"name": "species", "type": "string", "count": 275, "missing": 0,
//!    "distinct": 3, "top": [{"value": "Adelie", "count": 121}, …]},
//!   {"name": "bill_length_mm", "type": "number", "count": 273, "missing": 2,
//!    "min": 32.1, "max": 59.6, "mean": 43.9, "std": 5.4}]}
//! ```
//!
//! `std` is the population standard deviation; `min`/`max`/`mean`/`std`
//! are `null` for a column without values. `top` holds the
//! [`TOP_VALUES_MAX`] most frequent strings, ties broken by value.

use std::io::{BufRead, Write};

use serde::Serialize;

use crate::Result;
use crate::example::{ColumnType, ExampleReader};
use crate::profile::{ColumnProfile, Profile};

/// How many of a string column's most frequent values are listed.
pub const TOP_VALUES_MAX: usize = 10;

/// Statistics of a whole examples file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Statistics {
    /// Rows seen.
    pub rows: u64,
    /// The label column's name.
    pub label: String,
    /// One per column, in schema order.
    pub columns: Vec<ColumnStatistics>,
}

/// Statistics of one column.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ColumnStatistics {
    /// The column name.
    pub name: String,
    /// The column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Rows with a value.
    pub count: u64,
    /// Rows without one.
    pub missing: u64,
    /// Type-specific statistics, serialised inline.
    #[serde(flatten)]
    pub summary: Summary,
}

/// The type-specific part of [`ColumnStatistics`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Summary {
    /// A number column.
    Number {
        /// The smallest value.
        min: Option<f64>,
        /// The largest value.
        max: Option<f64>,
        /// The mean.
        mean: Option<f64>,
        /// The population standard deviation.
        std: Option<f64>,
    },
    /// A string column.
    String {
        /// How many distinct values.
        distinct: u64,
        /// The most frequent values, most frequent first.
        top: Vec<ValueCount>,
    },
}

/// A string value and how many rows hold it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ValueCount {
    /// The value.
    pub value: String,
    /// Its count.
    pub count: u64,
}

impl Statistics {
    /// Reads the statistics off a profile.
    pub fn from_profile(profile: &Profile) -> Self {
        Statistics {
            rows: profile.rows,
            label: profile.schema.label.clone(),
            columns: profile.columns.iter().map(column_statistics).collect(),
        }
    }

    /// Computes the statistics of an examples file.
    pub fn read(examples: impl BufRead) -> Result<Self> {
        let profile = Profile::read(ExampleReader::new(examples)?)?;
        Ok(Self::from_profile(&profile))
    }

    /// Writes them as a JSON document.
    pub fn write(&self, out: impl Write) -> Result<()> {
        crate::write_json_document(out, self)
    }
}

fn column_statistics(column: &ColumnProfile) -> ColumnStatistics {
    let summary = match column.ty {
        ColumnType::Number => Summary::Number {
            min: column.moments.min(),
            max: column.moments.max(),
            mean: column.moments.mean(),
            std: column.moments.std(),
        },
        ColumnType::String => {
            let mut top: Vec<ValueCount> = column
                .categories
                .iter()
                .map(|(value, count)| ValueCount {
                    value: value.clone(),
                    count: *count,
                })
                .collect();
            // Stable sort: equal counts keep the map's value order.
            top.sort_by_key(|v| std::cmp::Reverse(v.count));
            top.truncate(TOP_VALUES_MAX);
            Summary::String {
                distinct: column.categories.len() as u64,
                top,
            }
        }
    };
    ColumnStatistics {
        name: column.name.clone(),
        ty: column.ty,
        count: column.count,
        missing: column.missing,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLES: &str = concat!(
        r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"},{"name":"x","type":"number"},{"name":"e","type":"number"}]}}"#,
        "\n",
        "[\"b\",1.0,null]\n",
        "[\"a\",3.0,null]\n",
        "[\"b\",null,null]\n",
        "[\"c\",5.0,null]\n",
        "[null,3.0,null]\n",
    );

    #[test]
    fn statistics_have_exact_counts_moments_and_top_values() {
        let stats = Statistics::read(EXAMPLES.as_bytes()).unwrap();
        let mut out = Vec::new();
        stats.write(&mut out).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let std = (8.0f64 / 4.0).sqrt();
        assert_eq!(
            json,
            json!({
                "rows": 5,
                "label": "k",
                "columns": [
                    {"name": "k", "type": "string", "count": 4, "missing": 1, "distinct": 3,
                     "top": [{"value": "b", "count": 2}, {"value": "a", "count": 1},
                             {"value": "c", "count": 1}]},
                    {"name": "x", "type": "number", "count": 4, "missing": 1,
                     "min": 1.0, "max": 5.0, "mean": 3.0, "std": std},
                    {"name": "e", "type": "number", "count": 0, "missing": 5,
                     "min": null, "max": null, "mean": null, "std": null},
                ]
            })
        );
    }

    #[test]
    fn top_values_are_capped() {
        let mut text =
            String::from(r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"}]}}"#);
        for i in 0..(TOP_VALUES_MAX + 5) {
            text.push_str(&format!("\n[\"v{i:02}\"]"));
        }
        let stats = Statistics::read(text.as_bytes()).unwrap();
        let Summary::String { distinct, top } = &stats.columns[0].summary else {
            panic!("k is a string column");
        };
        assert_eq!(*distinct, (TOP_VALUES_MAX + 5) as u64);
        assert_eq!(top.len(), TOP_VALUES_MAX);
        assert_eq!(top[0].value, "v00");
    }
}
