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
//! The fitted transform (`transform` output) is a JSON document:
//!
//! ```json
//! {"label": "species", "features": […], "classes": […],
//!  "columns": [{"column": "bill_length_mm", "kind": "standardize", "mean": 43.9, "std": 5.4},
//!              {"column": "island", "kind": "one_hot", "categories": ["Biscoe", "Dream"]}],
//!  "skipped": []}
//! ```

use std::io::{BufRead, Write};

use serde::Serialize;

pub use crate::dataset::{Dataset, DatasetBatch, DatasetReader, DatasetWriter};
use crate::example::{ColumnType, ExampleReader, Examples, Schema, Value};
use crate::profile::Profile;
use crate::{
    CATEGORIES_MAX, CLASSES_MAX, Error, FEATURES_MAX, Result,
};

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

/// What applying a transform did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransformCounts {
    /// Rows written.
    pub rows: u64,
    /// Rows dropped because their label is missing.
    pub dropped: u64,
}

impl Transform {
    /// Fits the transform to training examples.
    pub fn fit(train: &Examples) -> Result<Self> {
        train.check()?;
        let label = train.schema.label_index()?;
        // Fit on the rows the transform keeps: those with a label.
        let mut profile = Profile::new(&train.schema);
        for row in train.rows.iter().filter(|row| !row[label].is_missing()) {
            profile.add(row);
        }
        let classes: Vec<String> = profile.columns[label].categories.keys().cloned().collect();
        if classes.is_empty() {
            return Err(Error::invalid(format!(
                "training examples have no labelled rows (label `{}`)",
                train.schema.label
            )));
        }
        if classes.len() > CLASSES_MAX {
            return Err(Error::invalid(format!(
                "label `{}` has {} distinct values (limit {CLASSES_MAX}); is it a class label?",
                train.schema.label,
                classes.len()
            )));
        }
        let mut features = Vec::new();
        let mut columns = Vec::new();
        let mut skipped = Vec::new();
        for (i, column) in profile.columns.iter().enumerate() {
            if i == label {
                continue;
            }
            match column.ty {
                ColumnType::Number => {
                    let std = column.moments.std().unwrap_or(0.0);
                    features.push(column.name.clone());
                    columns.push(ColumnTransform::Standardize {
                        column: column.name.clone(),
                        mean: column.moments.mean().unwrap_or(0.0),
                        std: if std > 0.0 && std.is_finite() {
                            std
                        } else {
                            1.0
                        },
                    });
                }
                ColumnType::String if column.categories.len() > CATEGORIES_MAX => {
                    skipped.push(column.name.clone());
                }
                ColumnType::String => {
                    let categories: Vec<String> = column.categories.keys().cloned().collect();
                    features.extend(categories.iter().map(|c| format!("{}={c}", column.name)));
                    columns.push(ColumnTransform::OneHot {
                        column: column.name.clone(),
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
            label: train.schema.label.clone(),
            features,
            classes,
            columns,
            skipped,
        })
    }

    /// Writes the fitted parameters as a JSON document.
    pub fn write(&self, out: impl Write) -> Result<()> {
        crate::write_json_document(out, self)
    }

    /// Transforms examples held in memory into a dataset.
    pub fn apply(&self, examples: &Examples, out: impl Write) -> Result<TransformCounts> {
        examples.check()?;
        let bound = self.bind(&examples.schema)?;
        let mut writer = DatasetWriter::new(out, &self.features, &self.classes)?;
        let mut counts = TransformCounts {
            rows: 0,
            dropped: 0,
        };
        let mut x = Vec::with_capacity(self.features.len());
        for row in &examples.rows {
            bound.row(self, row, &mut x, &mut counts, &mut writer)?;
        }
        Ok(counts)
    }

    /// Transforms an examples stream into a dataset.
    pub fn apply_stream(&self, examples: impl BufRead, out: impl Write) -> Result<TransformCounts> {
        let mut reader = ExampleReader::new(examples)?;
        let bound = self.bind(reader.schema())?;
        let mut writer = DatasetWriter::new(out, &self.features, &self.classes)?;
        let mut counts = TransformCounts {
            rows: 0,
            dropped: 0,
        };
        let mut x = Vec::with_capacity(self.features.len());
        while let Some((_, row)) = reader.next_row()? {
            bound.row(self, &row, &mut x, &mut counts, &mut writer)?;
        }
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
            .map(|c| {
                let name = match c {
                    ColumnTransform::Standardize { column, .. }
                    | ColumnTransform::OneHot { column, .. } => column,
                };
                schema.index_of(name)
            })
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
    fn row(
        &self,
        transform: &Transform,
        row: &[Value],
        x: &mut Vec<f64>,
        counts: &mut TransformCounts,
        writer: &mut DatasetWriter<impl Write>,
    ) -> Result<()> {
        let y = match &row[self.label] {
            Value::Missing => {
                counts.dropped += 1;
                return Ok(());
            }
            Value::Text(t) => t.clone(),
            number => number.to_string(),
        };
        x.clear();
        for (column, index) in transform.columns.iter().zip(&self.columns) {
            let value = index.map_or(&Value::Missing, |i| &row[i]);
            match column {
                ColumnTransform::Standardize { column, mean, std } => {
                    let scaled = match value {
                        Value::Number(v) => (v - mean) / std,
                        // A text value here means the examples' schema
                        // disagrees with training; validation reports it.
                        Value::Missing | Value::Text(_) => 0.0,
                    };
                    if !scaled.is_finite() {
                        return Err(Error::invalid(format!(
                            "column `{column}`: {value} overflows when standardised"
                        )));
                    }
                    x.push(scaled);
                }
                ColumnTransform::OneHot { categories, .. } => {
                    let hot = match value {
                        Value::Text(t) => categories.binary_search(t).ok(),
                        Value::Missing | Value::Number(_) => None,
                    };
                    x.extend((0..categories.len()).map(|i| if Some(i) == hot { 1.0 } else { 0.0 }));
                }
            }
        }
        writer.row(x, &y)?;
        counts.rows += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TRAIN: &str = concat!(
        r#"{"schema":{"label":"k","columns":[{"name":"n","type":"number"},{"name":"k","type":"string"},{"name":"c","type":"string"},{"name":"flat","type":"number"}]}}"#,
        "\n",
        "[1.0,\"b\",\"red\",7.0]\n",
        "[3.0,\"a\",\"blue\",7.0]\n",
        "[null,\"b\",null,7.0]\n",
        "[5.0,null,\"red\",7.0]\n",
    );

    fn fitted() -> (Transform, Examples) {
        let train = Examples::read(TRAIN.as_bytes()).unwrap();
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
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"features":["n","c=blue","c=red","flat"],"classes":["a","b"]}"#
        );
        assert_eq!(
            text.lines().nth(2).unwrap(),
            r#"{"x":[1.0,1.0,0.0,0.0],"y":"a"}"#
        );
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
        let counts = transform.apply_stream(eval.as_bytes(), &mut out).unwrap();
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
            .apply_stream(eval.as_bytes(), Vec::new())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "examples lack the label column `k` the transform was fitted with"
        );
    }

    #[test]
    fn training_without_labels_is_rejected() {
        let train = Examples::read(
            concat!(
                r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"}]}}"#,
                "\n[null]\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let err = Transform::fit(&train).unwrap_err();
        assert_eq!(
            err.to_string(),
            "training examples have no labelled rows (label `k`)"
        );
    }

    #[test]
    fn malformed_dataset_rows_name_their_line() {
        let text = "{\"features\":[\"a\"],\"classes\":[\"x\"]}\n{\"x\":[1.0],\"y\":\"x\"}\n{\"x\":[1.0,2.0],\"y\":\"x\"}\n";
        let err = Dataset::read(text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dataset line 3: expected 1 features, found 2"
        );
    }
}
