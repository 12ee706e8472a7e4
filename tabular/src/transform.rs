//! Examples → numeric *datasets*: a [`Transform`] fitted on training
//! examples only, then applied to training and evaluation examples alike.
//!
//! - A number column becomes one feature, standardised with the training
//!   mean and population standard deviation (a constant column divides by
//!   1); a missing value becomes the mean, i.e. `0`.
//! - A string column with at most [`CATEGORIES_MAX`] training values
//!   becomes one 0/1 feature per value, named `column=value`, in sorted
//!   value order; missing and unseen values are all zeros. A string column
//!   with more values is free text and is skipped.
//! - The label column becomes `y`; the classes are the sorted training
//!   labels. Rows whose label is missing are dropped.
//!
//! Columns are matched by name, so evaluation examples may order columns
//! differently or lack some (their features are then `0`).
//!
//! The dataset format (an Arrow IPC stream) is in [`crate::dataset`].
//!
//! Both fitting and applying stream: [`Transform::fit_stream`] reads the
//! labelled training rows into a bounded [`Profile`] (so a free-text column
//! is detected without holding its values), and
//! [`Transform::apply_stream`] turns one batch of examples at a time into
//! dataset rows. A step therefore reads its training examples twice.
//!
//! The fitted transform (`transform` output) is a JSON document:
//!
//! ```json
//! {"label": "species", "features": […], "classes": […],
//!  "columns": [{"column": "bill_length_mm", "kind": "standardize", "mean": 43.9, "std": 5.4},
//!              {"column": "island", "kind": "one_hot", "categories": ["Biscoe", "Dream"]}],
//!  "skipped": []}
//! ```

use std::io::{Read, Write};

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, BooleanArray, RecordBatch};
use serde::Serialize;

pub use crate::dataset::{Dataset, DatasetBatch, DatasetReader, DatasetWriter};
use crate::example::{ColumnType, ExampleReader, Examples, Schema, Value};
use crate::profile::Profile;
use crate::stats::{Statistics, Summary};
use crate::{CLASSES_MAX, Error, FEATURES_MAX, Result};

/// How one input column becomes features.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnTransform {
    /// One feature: `(x - mean) / std`.
    Standardize {
        /// The input column.
        column: String,
        /// The training mean.
        mean: f64,
        /// The training standard deviation (1 where that is 0).
        std: f64,
    },
    /// One 0/1 feature per category.
    OneHot {
        /// The input column.
        column: String,
        /// The training values, sorted.
        categories: Vec<String>,
    },
}

impl ColumnTransform {
    fn column(&self) -> &str {
        match self {
            ColumnTransform::Standardize { column, .. }
            | ColumnTransform::OneHot { column, .. } => column,
        }
    }

    fn width(&self) -> usize {
        match self {
            ColumnTransform::Standardize { .. } => 1,
            ColumnTransform::OneHot { categories, .. } => categories.len(),
        }
    }
}

/// The fitted transform.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Transform {
    /// The label column.
    pub label: String,
    /// The output feature names, in order.
    pub features: Vec<String>,
    /// The sorted training labels.
    pub classes: Vec<String>,
    /// How each used column becomes features, in feature order.
    pub columns: Vec<ColumnTransform>,
    /// Free-text columns left out.
    pub skipped: Vec<String>,
}

/// What fitting needs of one column, from a profile or from statistics.
struct FitColumn<'a> {
    name: &'a str,
    ty: ColumnType,
    mean: Option<f64>,
    std: Option<f64>,
    /// Every value, sorted, unless the column is free text.
    categories: Option<Vec<String>>,
    distinct: u64,
}

/// What applying a transform did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransformCounts {
    /// Rows written.
    pub rows: u64,
    /// Rows dropped because their label is missing.
    pub dropped: u64,
}

/// The rows of `batch` whose column `label` has a value.
fn labelled(batch: &RecordBatch, label: usize) -> Result<RecordBatch> {
    let labels = batch.column(label);
    let Some(valid) = labels.logical_nulls() else {
        return Ok(batch.clone());
    };
    let keep = BooleanArray::new(valid.into_inner(), None);
    arrow_select::filter::filter_record_batch(batch, &keep)
        .map_err(|e| Error::invalid(format!("selecting labelled rows: {e}")))
}

impl Transform {
    /// Fits the transform to an examples stream in one pass, profiling the
    /// rows that have a label (the rows the transform keeps).
    pub fn fit_stream(train: impl Read) -> Result<Self> {
        let mut reader = ExampleReader::new(train)?;
        let label = reader.schema().label_index()?;
        let mut profile = Profile::new(reader.schema());
        while let Some(batch) = reader.next_batch()? {
            profile.add_batch(&labelled(&batch, label)?)?;
        }
        Self::from_profile(&profile)
    }

    /// Fits the transform to training examples held in memory.
    pub fn fit(train: &Examples) -> Result<Self> {
        train.check()?;
        Self::fit_stream(&train.write(Vec::new())?[..])
    }

    /// Fits the transform to a profile of the labelled training rows.
    pub fn from_profile(profile: &Profile) -> Result<Self> {
        let columns = profile
            .columns
            .iter()
            .map(|column| FitColumn {
                name: &column.name,
                ty: column.ty,
                mean: column.moments.mean(),
                std: column.moments.std(),
                categories: column
                    .categories
                    .exact()
                    .map(|counts| counts.keys().cloned().collect()),
                distinct: column.distinct().count,
            })
            .collect();
        Self::build(
            &profile.schema.label,
            profile.schema.label_index()?,
            columns,
        )
    }

    /// Fits the transform to the [`Statistics`] of the training examples
    /// whose schema is `schema` (the `stats` step's output), without a pass
    /// over the rows: means and standard deviations, categories and
    /// classes are the statistics'. Statistics cover every row, labelled
    /// or not (as TFX Transform's analyzers do); applying still drops the
    /// rows without a label. Statistics of other examples (another label,
    /// other columns or types) are refused naming the difference.
    pub fn from_statistics(statistics: &Statistics, schema: &Schema) -> Result<Self> {
        let mismatch = |what: String| {
            Error::invalid(format!(
                "the statistics do not describe the training examples: {what}"
            ))
        };
        if statistics.label != schema.label {
            return Err(mismatch(format!(
                "their label is `{}`, the examples' is `{}`",
                statistics.label, schema.label
            )));
        }
        let theirs: Vec<(&str, ColumnType)> = statistics
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.ty))
            .collect();
        let ours: Vec<(&str, ColumnType)> = schema
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.ty))
            .collect();
        if theirs != ours {
            let show = |columns: &[(&str, ColumnType)]| {
                columns
                    .iter()
                    .map(|(name, ty)| format!("{name}: {}", ty.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(mismatch(format!(
                "their columns are [{}], the examples' are [{}]",
                show(&theirs),
                show(&ours)
            )));
        }
        let columns = statistics
            .columns
            .iter()
            .map(|column| {
                let (mean, std, categories) = match &column.summary {
                    Summary::Number { mean, std, .. } => (*mean, *std, None),
                    Summary::String { categories, .. } => (None, None, categories.clone()),
                };
                FitColumn {
                    name: &column.name,
                    ty: column.ty,
                    mean,
                    std,
                    categories,
                    distinct: column.distinct,
                }
            })
            .collect();
        Self::build(&schema.label, schema.label_index()?, columns)
    }

    /// [`Transform::from_statistics`] of a statistics document and the
    /// schema at the head of a training examples stream (only the schema
    /// is read).
    pub fn from_statistics_stream(statistics: impl Read, train: impl Read) -> Result<Self> {
        let statistics = Statistics::read_json(statistics)?;
        let reader = ExampleReader::new(train)?;
        Self::from_statistics(&statistics, reader.schema())
    }

    /// Fits from `statistics` and applies the transform to `train` in one
    /// pass over it (the `transform` step with a `statistics` input).
    pub fn fit_statistics_and_apply(
        statistics: impl Read,
        train: impl Read,
        out: impl Write,
    ) -> Result<(Self, TransformCounts)> {
        let statistics = Statistics::read_json(statistics)?;
        let reader = ExampleReader::new(train)?;
        let transform = Self::from_statistics(&statistics, reader.schema())?;
        let counts = transform.apply_reader(reader, out)?;
        Ok((transform, counts))
    }

    fn build(label_name: &str, label: usize, columns: Vec<FitColumn<'_>>) -> Result<Self> {
        let label_column = &columns[label];
        let Some(classes) = label_column
            .categories
            .clone()
            .filter(|_| label_column.ty == ColumnType::String)
        else {
            // Ingest writes labels as strings; a number or free-text label
            // column is not a class label.
            return Err(if label_column.ty == ColumnType::String {
                Error::invalid(format!(
                    "label `{label_name}` has about {} distinct values (limit {CLASSES_MAX}); is it a class label?",
                    label_column.distinct
                ))
            } else {
                Error::invalid(format!(
                    "label `{label_name}` is a number column; class labels are strings"
                ))
            });
        };
        if classes.is_empty() {
            return Err(Error::invalid(format!(
                "training examples have no labelled rows (label `{label_name}`)"
            )));
        }
        if classes.len() > CLASSES_MAX {
            return Err(Error::invalid(format!(
                "label `{label_name}` has {} distinct values (limit {CLASSES_MAX}); is it a class label?",
                classes.len()
            )));
        }
        let mut features = Vec::new();
        let mut transforms = Vec::new();
        let mut skipped = Vec::new();
        for (i, column) in columns.into_iter().enumerate() {
            if i == label {
                continue;
            }
            match (column.ty, column.categories) {
                (ColumnType::Number, _) => {
                    let std = column.std.unwrap_or(0.0);
                    features.push(column.name.to_owned());
                    transforms.push(ColumnTransform::Standardize {
                        column: column.name.to_owned(),
                        mean: column.mean.unwrap_or(0.0),
                        std: if std > 0.0 && std.is_finite() {
                            std
                        } else {
                            1.0
                        },
                    });
                }
                (ColumnType::String, None) => skipped.push(column.name.to_owned()),
                (ColumnType::String, Some(categories)) => {
                    features.extend(categories.iter().map(|c| format!("{}={c}", column.name)));
                    transforms.push(ColumnTransform::OneHot {
                        column: column.name.to_owned(),
                        categories,
                    });
                }
            }
            if features.len() > FEATURES_MAX {
                return Err(Error::Limit {
                    what: "features",
                    limit: FEATURES_MAX,
                });
            }
        }
        Ok(Transform {
            label: label_name.to_owned(),
            features,
            classes,
            columns: transforms,
            skipped,
        })
    }

    /// Writes the fitted parameters as a JSON document.
    pub fn write(&self, out: impl Write) -> Result<()> {
        crate::write_json_document(out, self)
    }

    /// Transforms examples held in memory into a dataset stream (finished).
    pub fn apply(&self, examples: &Examples, out: impl Write) -> Result<TransformCounts> {
        examples.check()?;
        self.apply_stream(&examples.write(Vec::new())?[..], out)
    }

    /// Transforms an examples stream into a dataset stream (finished), a
    /// batch at a time.
    pub fn apply_stream(&self, examples: impl Read, out: impl Write) -> Result<TransformCounts> {
        self.apply_reader(ExampleReader::new(examples)?, out)
    }

    /// [`Transform::apply_stream`] of a reader whose schema may already
    /// have been looked at (fitting from statistics needs the schema first;
    /// this keeps it to one pass over the examples).
    pub fn apply_reader<R: Read>(
        &self,
        mut reader: ExampleReader<R>,
        out: impl Write,
    ) -> Result<TransformCounts> {
        let bound = self.bind(reader.schema())?;
        let mut writer = DatasetWriter::new(out, &self.features, &self.classes)?;
        let mut counts = TransformCounts {
            rows: 0,
            dropped: 0,
        };
        let mut x = Vec::new();
        while let Some(batch) = reader.next_batch()? {
            bound.batch(self, &batch, &mut x, &mut counts, &mut writer)?;
        }
        writer.finish()?;
        Ok(counts)
    }

    fn bind(&self, schema: &Schema) -> Result<Bound> {
        let label = schema.index_of(&self.label).ok_or_else(|| {
            Error::invalid(format!(
                "examples lack the label column `{}` the transform was fitted with",
                self.label
            ))
        })?;
        let columns = self
            .columns
            .iter()
            .map(|c| schema.index_of(c.column()))
            .collect();
        Ok(Bound { label, columns })
    }
}

/// A transform's columns located in one examples schema.
struct Bound {
    label: usize,
    columns: Vec<Option<usize>>,
}

impl Bound {
    /// Transforms one batch column by column into `x` (row-major, reused
    /// across batches), then writes its labelled rows.
    fn batch(
        &self,
        transform: &Transform,
        batch: &RecordBatch,
        x: &mut Vec<f64>,
        counts: &mut TransformCounts,
        writer: &mut DatasetWriter<impl Write>,
    ) -> Result<()> {
        let rows = batch.num_rows();
        let d = transform.features.len();
        let labels = batch.column(self.label);
        let kept = |i: usize| labels.is_valid(i);
        x.clear();
        x.resize(rows * d, 0.0);
        let mut offset = 0;
        for (column, index) in transform.columns.iter().zip(&self.columns) {
            // An absent column, or one whose type disagrees with training
            // (validation reports it), leaves its features at 0.
            let Some(array) = index.map(|i| batch.column(i)) else {
                offset += column.width();
                continue;
            };
            match column {
                ColumnTransform::Standardize { column, mean, std } => {
                    if let Some(numbers) = array.as_primitive_opt::<Float64Type>() {
                        for i in (0..rows).filter(|&i| kept(i) && numbers.is_valid(i)) {
                            let v = numbers.value(i);
                            let scaled = (v - mean) / std;
                            if !scaled.is_finite() {
                                return Err(Error::invalid(format!(
                                    "column `{column}`: {} overflows when standardised",
                                    Value::Number(v)
                                )));
                            }
                            x[i * d + offset] = scaled;
                        }
                    }
                }
                ColumnTransform::OneHot { categories, .. } => {
                    if let Some(strings) = array.as_string_opt::<i32>() {
                        for i in (0..rows).filter(|&i| strings.is_valid(i)) {
                            let t = strings.value(i);
                            if let Ok(hot) = categories.binary_search_by(|c| c.as_str().cmp(t)) {
                                x[i * d + offset + hot] = 1.0;
                            }
                        }
                    }
                }
            }
            offset += column.width();
        }
        let numbers = labels.as_primitive_opt::<Float64Type>();
        let strings = labels.as_string_opt::<i32>();
        let mut number_label;
        for i in 0..rows {
            if !kept(i) {
                counts.dropped += 1;
                continue;
            }
            let y = match (strings, numbers) {
                (Some(strings), _) => strings.value(i),
                (None, Some(numbers)) => {
                    number_label = Value::Number(numbers.value(i)).to_string();
                    &number_label
                }
                (None, None) => {
                    return Err(Error::invalid(format!(
                        "label column `{}` is neither numbers nor strings",
                        transform.label
                    )));
                }
            };
            writer.row(&x[i * d..(i + 1) * d], y)?;
            counts.rows += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CATEGORIES_MAX;
    use crate::table::BATCH_ROWS;
    use serde_json::json;

    const TRAIN: &str = concat!(
        r#"{"schema":{"label":"k","columns":[{"name":"n","type":"number"},{"name":"k","type":"string"},{"name":"c","type":"string"},{"name":"flat","type":"number"}]}}"#,
        "\n",
        "[1.0,\"b\",\"red\",7.0]\n",
        "[3.0,\"a\",\"blue\",7.0]\n",
        "[null,\"b\",null,7.0]\n",
        "[5.0,null,\"red\",7.0]\n",
    );

    fn arrow(text: &str) -> Vec<u8> {
        Examples::arrow_from_json_lines(text).unwrap()
    }

    fn fitted() -> (Transform, Examples) {
        let train = Examples::from_json_lines(TRAIN).unwrap();
        (Transform::fit(&train).unwrap(), train)
    }

    #[test]
    fn fit_uses_training_moments_and_sorted_categories() {
        let (transform, _) = fitted();
        // n: labelled values 1 and 3 (the 5 is unlabelled) → mean 2, std 1.
        assert_eq!(
            serde_json::to_value(&transform).unwrap(),
            json!({
                "label": "k",
                "features": ["n", "c=blue", "c=red", "flat"],
                "classes": ["a", "b"],
                "columns": [
                    {"column": "n", "kind": "standardize", "mean": 2.0, "std": 1.0},
                    {"column": "c", "kind": "one_hot", "categories": ["blue", "red"]},
                    {"column": "flat", "kind": "standardize", "mean": 7.0, "std": 1.0},
                ],
                "skipped": [],
            })
        );
    }

    #[test]
    fn apply_standardises_one_hots_and_drops_unlabelled_rows() {
        let (transform, train) = fitted();
        let mut out = Vec::new();
        let counts = transform.apply(&train, &mut out).unwrap();
        assert_eq!(
            counts,
            TransformCounts {
                rows: 3,
                dropped: 1
            }
        );
        let dataset = Dataset::read(&out[..]).unwrap();
        assert_eq!(dataset.features, ["n", "c=blue", "c=red", "flat"]);
        assert_eq!(dataset.classes, ["a", "b"]);
        assert_eq!(dataset.y, ["b", "a", "b"]);
        assert_eq!(
            dataset.x,
            vec![
                -1.0, 0.0, 1.0, 0.0, //
                1.0, 1.0, 0.0, 0.0, //
                0.0, 0.0, 0.0, 0.0,
            ]
        );
        // Streaming the same rows writes the same bytes.
        let mut streamed = Vec::new();
        let again = transform
            .apply_stream(&arrow(TRAIN)[..], &mut streamed)
            .unwrap();
        assert_eq!((again, streamed), (counts, out));
    }

    #[test]
    fn eval_columns_are_matched_by_name_and_unseen_values_are_zero() {
        let (transform, _) = fitted();
        let eval = concat!(
            r#"{"schema":{"label":"k","columns":[{"name":"c","type":"string"},{"name":"k","type":"string"}]}}"#,
            "\n",
            "[\"green\",\"z\"]\n",
            "[\"blue\",\"a\"]\n",
        );
        let mut out = Vec::new();
        let counts = transform.apply_stream(&arrow(eval)[..], &mut out).unwrap();
        assert_eq!(
            counts,
            TransformCounts {
                rows: 2,
                dropped: 0
            }
        );
        let dataset = Dataset::read(&out[..]).unwrap();
        assert_eq!(dataset.y, ["z", "a"]);
        assert_eq!(dataset.x, vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn eval_without_the_label_column_is_rejected() {
        let (transform, _) = fitted();
        let eval = r#"{"schema":{"label":"n","columns":[{"name":"n","type":"number"}]}}"#;
        let err = transform
            .apply_stream(&arrow(eval)[..], Vec::new())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "examples lack the label column `k` the transform was fitted with"
        );
    }

    #[test]
    fn training_without_labels_is_rejected() {
        let train = Examples::from_json_lines(concat!(
            r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"}]}}"#,
            "\n[null]\n"
        ))
        .unwrap();
        let err = Transform::fit(&train).unwrap_err();
        assert_eq!(
            err.to_string(),
            "training examples have no labelled rows (label `k`)"
        );
    }

    #[test]
    fn a_truncated_examples_stream_fails_naming_its_offset() {
        let (transform, _) = fitted();
        let bytes = arrow(TRAIN);
        let cut = bytes.len() - 8;
        let err = transform
            .apply_stream(&bytes[..cut], Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "examples at byte {cut}: the Arrow stream is truncated"
            )),
            "{err}"
        );
        let err = Transform::fit_stream(&bytes[..cut])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("examples at byte {cut}:")),
            "{err}"
        );
    }

    #[test]
    fn free_text_columns_are_skipped_and_numeric_labels_rejected() {
        let mut text = String::from(
            r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"},{"name":"id","type":"string"}]}}"#,
        );
        for i in 0..=CATEGORIES_MAX {
            text.push_str(&format!("\n[\"a\",\"id{i}\"]"));
        }
        let transform = Transform::fit_stream(&arrow(&text)[..]).unwrap();
        assert_eq!(transform.skipped, ["id"]);
        assert!(transform.features.is_empty());
        let numeric = r#"{"schema":{"label":"k","columns":[{"name":"k","type":"number"}]}}
[1.0]"#;
        assert_eq!(
            Transform::fit_stream(&arrow(numeric)[..])
                .unwrap_err()
                .to_string(),
            "label `k` is a number column; class labels are strings"
        );
    }

    /// The statistics document of an examples stream, as `stats` writes it.
    fn statistics_of(examples: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Statistics::read(examples).unwrap().write(&mut out).unwrap();
        out
    }

    #[test]
    fn fitting_from_statistics_equals_fitting_from_the_rows_when_every_row_is_labelled() {
        let text = TRAIN.replace("[5.0,null,\"red\",7.0]\n", "[5.0,\"c\",\"red\",7.0]\n");
        let train = arrow(&text);
        let from_rows = Transform::fit_stream(&train[..]).unwrap();
        let from_stats =
            Transform::from_statistics_stream(&statistics_of(&train)[..], &train[..]).unwrap();
        assert_eq!(from_stats, from_rows);
        assert_eq!(from_stats.classes, ["a", "b", "c"]);
        // Unlabelled rows count in the statistics (as TFX's analyzers do).
        let train = arrow(TRAIN);
        let from_stats =
            Transform::from_statistics_stream(&statistics_of(&train)[..], &train[..]).unwrap();
        let ColumnTransform::Standardize { mean, .. } = &from_stats.columns[0] else {
            panic!("n is standardised");
        };
        assert_eq!(*mean, 3.0, "mean of 1, 3, 5 (the unlabelled 5 included)");
    }

    #[test]
    fn statistics_of_other_examples_are_refused_naming_the_difference() {
        let train = arrow(TRAIN);
        let other_label = arrow(&TRAIN.replace(r#""label":"k""#, r#""label":"c""#));
        let err = Transform::from_statistics_stream(&statistics_of(&other_label)[..], &train[..])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the statistics do not describe the training examples: their label is `c`, the examples' is `k`"
        );
        let other_type = arrow(
            &TRAIN
                .replace(
                    r#"{"name":"flat","type":"number"}"#,
                    r#"{"name":"flat","type":"string"}"#,
                )
                .replace(",7.0]", ",\"x\"]"),
        );
        let err = Transform::from_statistics_stream(&statistics_of(&other_type)[..], &train[..])
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "their columns are [n: number, k: string, c: string, flat: string], the examples' are [n: number, k: string, c: string, flat: number]"
            ),
            "{err}"
        );
        let err = Transform::from_statistics_stream(&b"[1, 2]"[..], &train[..]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("statistics are not a statistics document"),
            "{err}"
        );
    }

    #[test]
    fn many_batches_transform_as_row_by_row_would() {
        // Rows past one batch, with missing labels, missing and unseen
        // values spread over the batch boundary.
        let n = BATCH_ROWS + 1000;
        let row = |i: usize| -> (Option<f64>, Option<&str>, Option<&str>) {
            let x = (i % 7 != 3).then_some((i % 13) as f64 - 4.5);
            let k = match i % 11 {
                0 => None,
                1..=3 => Some("a"),
                _ => Some("b"),
            };
            let c = match i % 5 {
                0 => None,
                1 => Some("red"),
                2 => Some("blue"),
                _ => Some("green"),
            };
            (x, k, c)
        };
        let json = |v: Option<&str>| v.map_or("null".to_string(), |v| format!("\"{v}\""));
        let mut text = String::from(
            r#"{"schema":{"label":"k","columns":[{"name":"n","type":"number"},{"name":"k","type":"string"},{"name":"c","type":"string"}]}}"#,
        );
        for i in 0..n {
            let (x, k, c) = row(i);
            let x = x.map_or("null".to_string(), |x| x.to_string());
            text.push_str(&format!("\n[{x},{},{}]", json(k), json(c)));
        }
        let bytes = arrow(&text);
        let transform = Transform::fit_stream(&bytes[..]).unwrap();
        // The expected fit, row by row over the labelled rows.
        let mut moments = crate::profile::Moments::default();
        for i in 0..n {
            if let (Some(x), Some(_), _) = row(i) {
                moments.add(x);
            }
        }
        let (mean, std) = (moments.mean().unwrap(), moments.std().unwrap());
        assert_eq!(transform.features, ["n", "c=blue", "c=green", "c=red"]);
        assert_eq!(transform.classes, ["a", "b"]);
        assert_eq!(
            transform.columns[0],
            ColumnTransform::Standardize {
                column: "n".into(),
                mean,
                std
            }
        );
        let mut out = Vec::new();
        let counts = transform.apply_stream(&bytes[..], &mut out).unwrap();
        let dataset = Dataset::read(&out[..]).unwrap();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let (v, k, c) = row(i);
            let Some(k) = k else { continue };
            x.push(v.map_or(0.0, |v| (v - mean) / std));
            x.extend(["blue", "green", "red"].map(|name| f64::from(c == Some(name))));
            y.push(k.to_string());
        }
        assert_eq!(counts.rows as usize, y.len());
        assert_eq!(counts.dropped as usize, n - y.len());
        assert_eq!(dataset.y, y);
        assert_eq!(dataset.x, x);
    }
}
