//! Descriptive statistics of an examples stream, per column, in one pass
//! and memory bounded by the columns (see [`crate::profile`]).
//!
//! ```json
//! {"rows": 275, "label": "species", "columns": [
//!   {"name": "species", "type": "string", "count": 275, "missing": 0,
//!    "distinct": 3, "distinct_exact": true,
//!    "top": [{"value": "Adelie", "count": 121}, …], "top_exact": true,
//!    "categories": ["Adelie", "Chinstrap", "Gentoo"]},
//!   {"name": "bill_length_mm", "type": "number", "count": 273, "missing": 2,
//!    "min": 32.1, "max": 59.6, "mean": 43.9, "std": 5.4,
//!    "quantiles": {"p01": 34.5, "p05": 36.2, "p25": 39.2, "p50": 44.5,
//!                  "p75": 48.5, "p95": 51.3, "p99": 55.0},
//!    "quantiles_exact": true,
//!    "distinct": 164, "distinct_exact": true}]}
//! ```
//!
//! `count`, `missing`, `min`, `max`, `mean` and `std` are exact (`std` is
//! the population standard deviation; the four are `null` for a column
//! without values). `distinct` is exact while a column has at most
//! [`CATEGORIES_MAX`](crate::CATEGORIES_MAX) distinct values, else a HyperLogLog estimate
//! (about 1.6 % standard error) and `distinct_exact` is `false`. `top`
//! holds the [`TOP_VALUES_MAX`] most frequent strings, ties broken by
//! value; past [`CATEGORIES_MAX`](crate::CATEGORIES_MAX) distinct values (`top_exact: false`) the
//! list and counts come from a heavy-hitters summary: each count is a lower
//! bound at most `rows / (CATEGORIES_MAX + 1)` below the truth, and every
//! value more frequent than that is listed. `categories` lists every value
//! of a string column, sorted, while there are at most `CATEGORIES_MAX`
//! (`null` past that: the column is free text) — what the `transform` step
//! one-hot encodes, so it can fit from these statistics without another
//! pass over the data ([`crate::transform::Transform::from_statistics`]).
//!
//! `quantiles` of a number column are the 1st, 5th, 25th, 50th (median),
//! 75th, 95th and 99th percentiles, interpolated as NumPy's default (see
//! [`QuantileSketch::quantile`]); they come from a KLL sketch that is exact
//! (`quantiles_exact: true`) while the column has at most
//! [`DEFAULT_K`](crate::quantile::DEFAULT_K) values and after that is
//! within about 1% of rank (so `p50` of a million values is a value whose
//! rank is within 10,000 of the middle). `null` for a column without
//! values.
//!
//! Further per-column summaries are further fields of a column object.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::example::{ColumnType, ExampleReader};
use crate::profile::{ColumnProfile, Profile};
use crate::quantile::QuantileSketch;
use crate::{Error, Result};

/// The largest statistics document [`Statistics::read_json`] reads.
pub const STATISTICS_BYTES_MAX: u64 = 64 << 20;

/// How many of a string column's most frequent values are listed.
pub const TOP_VALUES_MAX: usize = 10;

/// Statistics of a whole examples stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statistics {
    /// Rows seen.
    pub rows: u64,
    /// The label column's name.
    pub label: String,
    /// One per column, in schema order.
    pub columns: Vec<ColumnStatistics>,
}

/// Statistics of one column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// How many distinct values (estimated unless `distinct_exact`).
    pub distinct: u64,
    /// Whether `distinct` is exact.
    pub distinct_exact: bool,
}

/// The type-specific part of [`ColumnStatistics`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
        /// Percentiles; `None` without values.
        quantiles: Option<Quantiles>,
        /// Whether `quantiles` are exact (else within the sketch's rank error).
        quantiles_exact: bool,
    },
    /// A string column.
    String {
        /// The most frequent values, most frequent first.
        top: Vec<ValueCount>,
        /// Whether the `top` counts are exact (else lower bounds).
        top_exact: bool,
        /// Every value, sorted, while there are at most `CATEGORIES_MAX`;
        /// `None` for free text.
        categories: Option<Vec<String>>,
    },
}

/// Percentiles of a number column.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// The 1st percentile.
    pub p01: f64,
    /// The 5th percentile.
    pub p05: f64,
    /// The 25th percentile (first quartile).
    pub p25: f64,
    /// The median.
    pub p50: f64,
    /// The 75th percentile (third quartile).
    pub p75: f64,
    /// The 95th percentile.
    pub p95: f64,
    /// The 99th percentile.
    pub p99: f64,
}

impl Quantiles {
    /// The percentiles a sketch estimates; `None` when it is empty.
    pub fn of(sketch: &QuantileSketch) -> Option<Self> {
        let sorted = sketch.sorted();
        let q = |q| sorted.quantile(q);
        Some(Quantiles {
            p01: q(0.01)?,
            p05: q(0.05)?,
            p25: q(0.25)?,
            p50: q(0.5)?,
            p75: q(0.75)?,
            p95: q(0.95)?,
            p99: q(0.99)?,
        })
    }
}

/// A string value and how many rows hold it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Computes the statistics of an examples stream in one pass.
    pub fn read(examples: impl Read) -> Result<Self> {
        let profile = Profile::read(ExampleReader::new(examples)?)?;
        Ok(Self::from_profile(&profile))
    }

    /// Writes them as a JSON document.
    pub fn write(&self, out: impl Write) -> Result<()> {
        crate::write_json_document(out, self)
    }

    /// Parses a document [`Statistics::write`] wrote, reading at most
    /// [`STATISTICS_BYTES_MAX`] bytes.
    pub fn read_json(input: impl Read) -> Result<Self> {
        let mut bytes = Vec::new();
        input
            .take(STATISTICS_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::invalid(format!("reading statistics: {e}")))?;
        if bytes.len() as u64 > STATISTICS_BYTES_MAX {
            return Err(Error::invalid(format!(
                "statistics are larger than {STATISTICS_BYTES_MAX} bytes"
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("statistics are not a statistics document: {e}")))
    }
}

fn column_statistics(column: &ColumnProfile) -> ColumnStatistics {
    let summary = match column.ty {
        ColumnType::Number => Summary::Number {
            min: column.moments.min(),
            max: column.moments.max(),
            mean: column.moments.mean(),
            std: column.moments.std(),
            quantiles: Quantiles::of(&column.quantiles),
            quantiles_exact: column.quantiles.is_exact(),
        },
        ColumnType::String => Summary::String {
            top: column
                .categories
                .top(TOP_VALUES_MAX)
                .into_iter()
                .map(|(value, count)| ValueCount {
                    value: value.to_owned(),
                    count,
                })
                .collect(),
            top_exact: column.categories.exact().is_some(),
            categories: column
                .categories
                .exact()
                .map(|counts| counts.keys().cloned().collect()),
        },
    };
    let distinct = column.distinct();
    ColumnStatistics {
        name: column.name.clone(),
        ty: column.ty,
        count: column.count,
        missing: column.missing,
        summary,
        distinct: distinct.count,
        distinct_exact: distinct.exact,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CATEGORIES_MAX;
    use crate::example::Examples;
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

    fn statistics(text: &str) -> Statistics {
        Statistics::read(&Examples::arrow_from_json_lines(text).unwrap()[..]).unwrap()
    }

    #[test]
    fn statistics_have_exact_counts_moments_and_top_values() {
        let stats = statistics(EXAMPLES);
        let mut out = Vec::new();
        stats.write(&mut out).unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        // x holds 1, 3, 5, 3: quartiles interpolate between order statistics.
        let quantiles = json["columns"][1]["quantiles"].take();
        assert_eq!(
            (&quantiles["p25"], &quantiles["p50"], &quantiles["p75"]),
            (&json!(2.5), &json!(3.0), &json!(3.5))
        );
        assert!((quantiles["p05"].as_f64().unwrap() - 1.3).abs() < 1e-12);
        assert!((quantiles["p99"].as_f64().unwrap() - 4.94).abs() < 1e-12);
        let std = (8.0f64 / 4.0).sqrt();
        assert_eq!(
            json,
            json!({
                "rows": 5,
                "label": "k",
                "columns": [
                    {"name": "k", "type": "string", "count": 4, "missing": 1,
                     "distinct": 3, "distinct_exact": true,
                     "top": [{"value": "b", "count": 2}, {"value": "a", "count": 1},
                             {"value": "c", "count": 1}],
                     "top_exact": true, "categories": ["a", "b", "c"]},
                    {"name": "x", "type": "number", "count": 4, "missing": 1,
                     "min": 1.0, "max": 5.0, "mean": 3.0, "std": std,
                     "quantiles": null, "quantiles_exact": true,
                     "distinct": 3, "distinct_exact": true},
                    {"name": "e", "type": "number", "count": 0, "missing": 5,
                     "min": null, "max": null, "mean": null, "std": null,
                     "quantiles": null, "quantiles_exact": true,
                     "distinct": 0, "distinct_exact": true},
                ]
            })
        );
    }

    #[test]
    fn statistics_read_back_equal_what_was_written() {
        let stats = statistics(EXAMPLES);
        let mut out = Vec::new();
        stats.write(&mut out).unwrap();
        assert_eq!(Statistics::read_json(&out[..]).unwrap(), stats);
        let err = Statistics::read_json(&br#"{"rows": 1}"#[..]).unwrap_err();
        assert!(
            err.to_string()
                .contains("statistics are not a statistics document: missing field `label`"),
            "{err}"
        );
    }

    #[test]
    fn top_values_are_capped() {
        let mut text =
            String::from(r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"}]}}"#);
        for i in 0..(TOP_VALUES_MAX + 5) {
            text.push_str(&format!("\n[\"v{i:02}\"]"));
        }
        let stats = statistics(&text);
        let Summary::String { top, top_exact, .. } = &stats.columns[0].summary else {
            panic!("k is a string column");
        };
        assert_eq!(stats.columns[0].distinct, (TOP_VALUES_MAX + 5) as u64);
        assert_eq!(top.len(), TOP_VALUES_MAX);
        assert_eq!(top[0].value, "v00");
        assert!(*top_exact);
    }

    #[test]
    fn a_free_text_column_reports_estimates_and_flags_them() {
        // 3000 distinct ids, "x" 500 times more; rows span several batches.
        let mut text = String::from(
            r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"},{"name":"n","type":"number"}]}}"#,
        );
        for i in 0..3000 {
            text.push_str(&format!("\n[\"id{i}\",{i}]"));
            if i % 6 == 0 {
                text.push_str("\n[\"x\",0.5]");
            }
        }
        let stats = statistics(&text);
        assert_eq!(stats.rows, 3500);
        let k = &stats.columns[0];
        assert!(!k.distinct_exact);
        assert!(k.distinct.abs_diff(3001) < 100, "{}", k.distinct);
        let Summary::String {
            top,
            top_exact,
            categories,
        } = &k.summary
        else {
            panic!("k is a string column");
        };
        assert!(!top_exact);
        assert_eq!(categories, &None, "free text lists no categories");
        assert_eq!(top[0].value, "x");
        let bound = 3500 / (CATEGORIES_MAX as u64 + 1);
        assert!(
            top[0].count <= 500 && top[0].count + bound >= 500,
            "{top:?}"
        );
        let n = &stats.columns[1];
        assert!(!n.distinct_exact);
        let Summary::Number { min, max, mean, .. } = n.summary else {
            panic!("n is a number column");
        };
        assert_eq!((min, max), (Some(0.0), Some(2999.0)));
        let expected = (500.0 * 0.5 + 2999.0 * 3000.0 / 2.0) / 3500.0;
        assert!((mean.unwrap() - expected).abs() < 1e-9, "{mean:?}");
    }

    #[test]
    fn statistics_stream_over_many_batches_exactly() {
        let rows = crate::table::BATCH_ROWS * 2 + 7;
        let mut text =
            String::from(r#"{"schema":{"label":"k","columns":[{"name":"k","type":"number"}]}}"#);
        for i in 0..rows {
            text.push_str(&format!("\n[{}]", i % 4));
        }
        let stats = statistics(&text);
        let k = &stats.columns[0];
        assert_eq!(
            (stats.rows, k.count, k.distinct),
            (rows as u64, rows as u64, 4)
        );
        let Summary::Number { min, max, .. } = k.summary else {
            panic!("k is a number column");
        };
        assert_eq!((min, max), (Some(0.0), Some(3.0)));
    }

    #[test]
    fn quantiles_are_exact_for_few_values_and_within_rank_error_for_many() {
        // 0..=100 in a scrambled order: exact percentiles are the values.
        let mut text =
            String::from(r#"{"schema":{"label":"k","columns":[{"name":"k","type":"number"}]}}"#);
        for i in 0..=100 {
            text.push_str(&format!("\n[{}]", (i * 37) % 101));
        }
        let stats = statistics(&text);
        let Summary::Number {
            quantiles: Some(q),
            quantiles_exact,
            ..
        } = stats.columns[0].summary
        else {
            panic!("k is a number column with values");
        };
        assert!(quantiles_exact);
        let got = [q.p01, q.p05, q.p25, q.p50, q.p75, q.p95, q.p99];
        for (got, want) in got.iter().zip([1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0]) {
            assert!((got - want).abs() < 1e-9, "{got} != {want}");
        }

        // 200 000 values over several batches: a sketch, within 1% of rank.
        let n = 200_000u64;
        let mut text =
            String::from(r#"{"schema":{"label":"k","columns":[{"name":"k","type":"number"}]}}"#);
        for i in 0..n {
            text.push_str(&format!("\n[{}]", (i * 7919) % n));
        }
        let stats = statistics(&text);
        let Summary::Number {
            quantiles: Some(q),
            quantiles_exact,
            ..
        } = stats.columns[0].summary
        else {
            panic!("k is a number column with values");
        };
        assert!(!quantiles_exact);
        let got = [q.p01, q.p05, q.p25, q.p50, q.p75, q.p95, q.p99];
        for (got, p) in got.iter().zip([0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]) {
            let want = p * (n - 1) as f64;
            assert!(
                (got - want).abs() <= 0.01 * n as f64,
                "p{p}: {got} vs {want}"
            );
        }
        // The same rows give the same sketch, bit for bit.
        assert_eq!(statistics(&text), stats);
    }
}
