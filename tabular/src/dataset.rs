//! The *dataset* format: numeric features and a class label per row, as an
//! Arrow IPC stream, written by `transform` and read by `train`,
//! `evaluate` and the workers.
//!
//! One non-null `Float64` column per feature (named after it), then the
//! label: a non-null `Utf8` column, always last (its name, `y`, is not
//! looked at). The schema's one metadata entry, [`CLASSES_KEY`], holds the
//! training classes as a JSON array of strings, so a reader knows the
//! model's shape before the first row. Rows travel in batches of at most
//! [`BATCH_ROWS`]; [`DatasetReader`] hands them out a batch at a time,
//! row-major, so a pass over a dataset holds one batch.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::table::{BATCH_ROWS, BatchReader, BatchWriter};
use crate::{CLASSES_MAX, DATASET_VALUES_MAX, Error, FEATURES_MAX, ROWS_MAX, Result};

const WHAT: &str = "dataset";

/// The schema metadata key holding the classes (a JSON array).
pub const CLASSES_KEY: &str = "sluice.classes";

/// The name of the label column (the last one).
pub const LABEL_COLUMN: &str = "y";

fn arrow_schema(features: &[String], classes: &[String]) -> Result<Arc<Schema>> {
    let mut fields: Vec<Field> = features
        .iter()
        .map(|f| Field::new(f, DataType::Float64, false))
        .collect();
    fields.push(Field::new(LABEL_COLUMN, DataType::Utf8, false));
    let classes = serde_json::to_string(classes).map_err(Error::from_json_write)?;
    Ok(crate::table::schema_with(fields, CLASSES_KEY, classes))
}

/// Writes a dataset, [`BATCH_ROWS`] rows per batch; [`DatasetWriter::finish`]
/// ends the stream.
pub struct DatasetWriter<W: Write> {
    out: BatchWriter<W>,
    schema: Arc<Schema>,
    width: usize,
    x: Vec<f64>,
    y: Vec<String>,
}

impl<W: Write> DatasetWriter<W> {
    /// Writes the schema message.
    pub fn new(out: W, features: &[String], classes: &[String]) -> Result<Self> {
        let schema = arrow_schema(features, classes)?;
        Ok(DatasetWriter {
            out: BatchWriter::new(out, &schema)?,
            schema,
            width: features.len(),
            x: Vec::new(),
            y: Vec::new(),
        })
    }

    /// Adds one row; `x` has one finite value per feature.
    pub fn row(&mut self, x: &[f64], y: &str) -> Result<()> {
        if x.len() != self.width {
            return Err(Error::invalid(format!(
                "row has {} values for {} features",
                x.len(),
                self.width
            )));
        }
        if let Some(j) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "row {}: feature {} is {}; features must be finite",
                self.out.rows() + self.y.len() as u64 + 1,
                j,
                x[j]
            )));
        }
        self.x.extend_from_slice(x);
        self.y.push(y.to_owned());
        if self.y.len() == BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let n = self.y.len();
        if n == 0 {
            return Ok(());
        }
        let d = self.width;
        let mut columns: Vec<ArrayRef> = (0..d)
            .map(|j| {
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| self.x[i * d + j]),
                )) as ArrayRef
            })
            .collect();
        columns.push(Arc::new(StringArray::from_iter_values(self.y.iter())));
        self.x.clear();
        self.y.clear();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::invalid(format!("building a dataset batch: {e}")))?;
        self.out.write(&batch)
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.out.rows() + self.y.len() as u64
    }

    /// Writes the last batch and the end-of-stream marker.
    pub fn finish(mut self) -> Result<W> {
        self.flush()?;
        self.out.finish()
    }
}

/// One batch of a dataset: features row-major, labels as the stream's own
/// (non-null) string column, borrowed per row without copying.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetBatch {
    /// `rows × features` values, row-major.
    pub x: Vec<f64>,
    labels: StringArray,
}

impl DatasetBatch {
    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Row `i`'s label.
    pub fn label(&self, i: usize) -> &str {
        self.labels.value(i)
    }

    /// The labels in row order.
    pub fn labels(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.rows()).map(|i| self.labels.value(i))
    }
}

/// Reads a dataset stream a batch at a time.
pub struct DatasetReader<R: Read> {
    batches: BatchReader<R>,
    features: Vec<String>,
    classes: Vec<String>,
}

impl<R: Read> DatasetReader<R> {
    /// Reads and checks the schema: `Float64` features, a `Utf8` label
    /// last, distinct classes, both within their limits.
    pub fn new(reader: R) -> Result<Self> {
        let batches = BatchReader::new(reader, WHAT)?;
        let schema = batches.schema();
        let bad = |message: String| Error::Stream {
            what: WHAT,
            offset: 0,
            message,
        };
        let classes = schema.metadata().get(CLASSES_KEY).ok_or_else(|| {
            bad(format!(
                "the Arrow schema has no `{CLASSES_KEY}` metadata; is it a dataset stream?"
            ))
        })?;
        let classes: Vec<String> = serde_json::from_str(classes).map_err(|e| {
            bad(format!(
                "`{CLASSES_KEY}` is not a JSON array of strings: {e}"
            ))
        })?;
        if classes.len() > CLASSES_MAX {
            return Err(Error::Limit {
                what: "classes",
                limit: CLASSES_MAX,
            });
        }
        if classes.iter().collect::<BTreeSet<_>>().len() != classes.len() {
            return Err(bad("classes are not distinct".into()));
        }
        let fields = schema.fields();
        let Some((label, features)) = fields.split_last() else {
            return Err(bad("a dataset has at least its label column".into()));
        };
        if label.data_type() != &DataType::Utf8 {
            return Err(bad(format!(
                "the last column, the label, has Arrow type {}; it must be Utf8",
                label.data_type()
            )));
        }
        if features.len() > FEATURES_MAX {
            return Err(Error::Limit {
                what: "features",
                limit: FEATURES_MAX,
            });
        }
        if let Some(f) = features
            .iter()
            .find(|f| f.data_type() != &DataType::Float64)
        {
            return Err(bad(format!(
                "feature `{}` has Arrow type {}; features are Float64",
                f.name(),
                f.data_type()
            )));
        }
        let features = features.iter().map(|f| f.name().clone()).collect();
        Ok(DatasetReader {
            batches,
            features,
            classes,
        })
    }

    /// Feature names.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// The training classes.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Rows read so far.
    pub fn rows(&self) -> u64 {
        self.batches.rows()
    }

    /// The next batch, checked: no nulls, finite features. Errors name the
    /// row (1-based over the whole stream) and feature.
    pub fn next_batch(&mut self) -> Result<Option<DatasetBatch>> {
        let before = self.batches.rows();
        let Some(batch) = self.batches.next_batch()? else {
            return Ok(None);
        };
        let n = batch.num_rows();
        let d = self.features.len();
        let row_error = |i: usize, message: String| Error::Row {
            what: WHAT,
            row: before + i as u64 + 1,
            message,
        };
        let mut x = vec![0.0; n * d];
        for (j, column) in batch.columns()[..d].iter().enumerate() {
            let column = column.as_primitive::<Float64Type>();
            // Null slots hold arbitrary values: with nulls, the first row
            // that is null or not finite is the error.
            let nulls = column.null_count() > 0;
            for (i, &v) in column.values().iter().enumerate() {
                if nulls && column.is_null(i) {
                    return Err(row_error(
                        i,
                        format!("feature `{}` is missing", self.features[j]),
                    ));
                }
                if !v.is_finite() {
                    return Err(row_error(
                        i,
                        format!(
                            "feature `{}` is {v}; features must be finite",
                            self.features[j]
                        ),
                    ));
                }
                x[i * d + j] = v;
            }
        }
        let labels = batch.columns()[d].as_string::<i32>();
        if let Some(i) = (0..n).find(|&i| labels.is_null(i)) {
            return Err(row_error(i, "the label is missing".into()));
        }
        Ok(Some(DatasetBatch {
            x,
            labels: labels.clone(),
        }))
    }
}

/// A dataset in memory: a row-major feature matrix and a label per row.
/// For the native workers and tests; the steps stream with
/// [`DatasetReader`].
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Feature names.
    pub features: Vec<String>,
    /// Class names from the header (the training classes).
    pub classes: Vec<String>,
    /// `rows × features` values, row-major.
    pub x: Vec<f64>,
    /// One label per row.
    pub y: Vec<String>,
}

impl Dataset {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.y.len()
    }

    /// Row `i`'s features.
    pub fn row(&self, i: usize) -> &[f64] {
        let d = self.features.len();
        &self.x[i * d..(i + 1) * d]
    }

    /// Checks the matrix has one row of `features` values per label (a
    /// dataset built in code rather than read may not).
    pub fn check(&self) -> Result<()> {
        if self.x.len() != self.y.len() * self.features.len() {
            return Err(Error::invalid(format!(
                "dataset has {} values for {} rows of {} features",
                self.x.len(),
                self.y.len(),
                self.features.len()
            )));
        }
        Ok(())
    }

    /// Reads a whole dataset into memory, within [`ROWS_MAX`] rows and
    /// [`DATASET_VALUES_MAX`] values.
    pub fn read(reader: impl Read) -> Result<Self> {
        let mut reader = DatasetReader::new(reader)?;
        let mut dataset = Dataset {
            features: reader.features.clone(),
            classes: reader.classes.clone(),
            x: Vec::new(),
            y: Vec::new(),
        };
        while let Some(batch) = reader.next_batch()? {
            if dataset.y.len() + batch.rows() > ROWS_MAX {
                return Err(Error::Limit {
                    what: "dataset rows in memory",
                    limit: ROWS_MAX,
                });
            }
            if dataset.x.len() + batch.x.len() > DATASET_VALUES_MAX {
                return Err(Error::Limit {
                    what: "dataset values (rows × features) in memory",
                    limit: DATASET_VALUES_MAX,
                });
            }
            dataset.x.extend_from_slice(&batch.x);
            dataset.y.extend(batch.labels().map(str::to_owned));
        }
        Ok(dataset)
    }

    /// Writes the dataset stream.
    pub fn write<W: Write>(&self, out: W) -> Result<W> {
        self.check()?;
        let mut writer = DatasetWriter::new(out, &self.features, &self.classes)?;
        for i in 0..self.rows() {
            writer.row(self.row(i), &self.y[i])?;
        }
        writer.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::dataset;

    #[test]
    fn a_dataset_round_trips_across_batches() {
        let rows = BATCH_ROWS + 5;
        let x: Vec<f64> = (0..rows * 2).map(|v| v as f64 / 7.0).collect();
        let y: Vec<&str> = (0..rows).map(|i| ["a", "b", "c"][i % 3]).collect();
        let data = dataset(&x, &y, 2);
        let bytes = data.write(Vec::new()).unwrap();
        assert_eq!(Dataset::read(&bytes[..]).unwrap(), data);
        let mut reader = DatasetReader::new(&bytes[..]).unwrap();
        assert_eq!(reader.features(), ["f0", "f1"]);
        assert_eq!(reader.classes(), ["a", "b", "c"]);
        assert_eq!(reader.next_batch().unwrap().unwrap().rows(), BATCH_ROWS);
        assert_eq!(reader.next_batch().unwrap().unwrap().rows(), 5);
        assert!(reader.next_batch().unwrap().is_none());
        assert_eq!(data.write(Vec::new()).unwrap(), bytes);
    }

    #[test]
    fn a_null_feature_names_its_row_and_feature() {
        let schema = arrow_schema(&["f0".into()], &["a".into()]).unwrap();
        // Nullable on the wire despite the schema: build with a relaxed one.
        let relaxed = Arc::new(Schema::new_with_metadata(
            vec![
                Field::new("f0", DataType::Float64, true),
                Field::new(LABEL_COLUMN, DataType::Utf8, false),
            ],
            schema.metadata().clone(),
        ));
        let batch = RecordBatch::try_new(
            relaxed.clone(),
            vec![
                Arc::new(Float64Array::from(vec![Some(1.0), None])),
                Arc::new(StringArray::from(vec!["a", "a"])),
            ],
        )
        .unwrap();
        let mut w = BatchWriter::new(Vec::new(), &relaxed).unwrap();
        w.write(&batch).unwrap();
        let bytes = w.finish().unwrap();
        let err = Dataset::read(&bytes[..]).unwrap_err();
        assert_eq!(err.to_string(), "dataset row 2: feature `f0` is missing");
    }

    #[test]
    fn a_non_finite_feature_is_refused_when_written() {
        let mut w = DatasetWriter::new(Vec::new(), &["f0".into()], &["a".into()]).unwrap();
        w.row(&[1.0], "a").unwrap();
        let err = w.row(&[f64::INFINITY], "a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 2: feature 0 is inf; features must be finite"
        );
    }

    #[test]
    fn an_examples_stream_is_not_a_dataset() {
        let text = r#"{"schema":{"label":"y","columns":[{"name":"y","type":"string"}]}}"#;
        let bytes = crate::example::Examples::arrow_from_json_lines(text).unwrap();
        let err = Dataset::read(&bytes[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dataset at byte 0: the Arrow schema has no `sluice.classes` metadata; is it a dataset stream?"
        );
    }
}
