//! Scores a model on an evaluation dataset, blesses it against an accuracy
//! threshold, and gates the push on that blessing.
//!
//! [`evaluate`] streams the dataset a batch at a time; what it keeps is the
//! confusion matrix, bounded by [`CLASSES_MAX`]², never by rows.
//!
//! Evaluation (`evaluation` output):
//!
//! ```json
//! {"rows": 67, "accuracy": 0.985, "macro_f1": 0.98,
//!  "classes": ["Adelie", "Chinstrap", "Gentoo"],
//!  "per_class": [{"class": "Adelie", "precision": 1.0, "recall": 0.97, "f1": 0.98, "support": 30}, …],
//!  "confusion_matrix": [[29, 1, 0], [0, 14, 0], [0, 0, 23]]}
//! ```
//!
//! `confusion_matrix[t][p]` counts rows of true class `classes[t]`
//! predicted as `classes[p]`. `classes` are the model's classes followed
//! by any evaluation labels the model has never seen (sorted); those can
//! only be mispredicted. A precision, recall or F1 whose denominator is 0
//! is 0. `macro_f1` averages F1 over the classes that occur as a true or
//! predicted label.
//!
//! Blessing (`blessing` output): `{"blessed": true, "accuracy": 0.985,
//! "threshold": 0.9}`, blessed when `accuracy >= threshold`.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::dataset::DatasetReader;
use crate::model::Classifier;
use crate::{CLASSES_MAX, Error, Result};

/// Largest blessing document read, in bytes; a real one is under 100.
pub const BLESSING_BYTES_MAX: u64 = 64 << 10;

/// Precision, recall and F1 of one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// The class.
    pub class: String,
    /// Correct predictions of the class / predictions of the class.
    pub precision: f64,
    /// Correct predictions of the class / rows of the class.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Rows of the class.
    pub support: u64,
}

/// A model's scores on an evaluation dataset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// Rows scored.
    pub rows: u64,
    /// Share of rows predicted correctly.
    pub accuracy: f64,
    /// Mean F1 over the classes that occur.
    pub macro_f1: f64,
    /// Class order of `per_class` and the confusion matrix.
    pub classes: Vec<String>,
    /// One per class.
    pub per_class: Vec<ClassMetrics>,
    /// `[true][predicted]` counts.
    pub confusion_matrix: Vec<Vec<u64>>,
}

/// Scores `model` (of any kind, see [`crate::model::AnyModel`]) on the
/// evaluation dataset stream `eval`, a batch at a time: memory holds one
/// batch and a confusion matrix, whatever the number of rows.
pub fn evaluate<M: Classifier + ?Sized>(model: &M, eval: impl Read) -> Result<Evaluation> {
    let mut reader = DatasetReader::new(eval)?;
    if reader.features() != model.features() {
        return Err(Error::invalid(format!(
            "evaluation features differ from the model's: {} vs {} features{}",
            reader.features().len(),
            model.features().len(),
            first_difference(reader.features(), model.features())
        )));
    }
    let mut tally = Tally::new(model.classes());
    let mut predicted = Vec::new();
    while let Some(batch) = reader.next_batch()? {
        model.predict_batch(&batch.x, batch.rows(), &mut predicted);
        for (label, &p) in batch.labels().zip(&predicted) {
            tally.add(label, p)?;
        }
    }
    if reader.rows() == 0 {
        return Err(Error::invalid("evaluation dataset has no rows"));
    }
    Ok(tally.finish(reader.rows()))
}

/// The confusion matrix as rows stream in: the model's classes first, then
/// labels the model has never seen (which it can only mispredict), at most
/// [`CLASSES_MAX`] in all.
struct Tally<'m> {
    classes: &'m [String],
    index: BTreeMap<&'m str, usize>,
    /// `[true][predicted]` over the model's classes.
    known: Vec<Vec<u64>>,
    /// Unseen label → counts per predicted class.
    unseen: BTreeMap<String, Vec<u64>>,
}

impl<'m> Tally<'m> {
    fn new(classes: &'m [String]) -> Self {
        let k = classes.len();
        Tally {
            classes,
            index: classes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str(), i))
                .collect(),
            known: vec![vec![0; k]; k],
            unseen: BTreeMap::new(),
        }
    }

    /// Counts a row of true class `label` predicted as class `predicted`
    /// (an index into the model's classes).
    fn add(&mut self, label: &str, predicted: usize) -> Result<()> {
        if let Some(&truth) = self.index.get(label) {
            self.known[truth][predicted] += 1;
            return Ok(());
        }
        if let Some(row) = self.unseen.get_mut(label) {
            row[predicted] += 1;
            return Ok(());
        }
        if self.classes.len() + self.unseen.len() >= CLASSES_MAX {
            return Err(Error::Limit {
                what: "classes in evaluation",
                limit: CLASSES_MAX,
            });
        }
        let mut row = vec![0; self.classes.len()];
        row[predicted] = 1;
        self.unseen.insert(label.to_owned(), row);
        Ok(())
    }

    fn finish(self, rows: u64) -> Evaluation {
        let mut classes = self.classes.to_vec();
        classes.extend(self.unseen.keys().cloned());
        let k = classes.len();
        let matrix: Vec<Vec<u64>> = self
            .known
            .into_iter()
            .chain(self.unseen.into_values())
            .map(|mut row| {
                row.resize(k, 0);
                row
            })
            .collect();
        metrics(rows, classes, matrix)
    }
}

/// The scores of a confusion matrix over `classes`.
fn metrics(rows: u64, classes: Vec<String>, matrix: Vec<Vec<u64>>) -> Evaluation {
    let k = classes.len();
    let correct: u64 = (0..k).map(|c| matrix[c][c]).sum();
    let ratio = |num: u64, den: u64| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let mut per_class = Vec::with_capacity(k);
    let mut f1_sum = 0.0;
    let mut f1_classes = 0usize;
    for (c, class) in classes.iter().enumerate() {
        let support: u64 = matrix[c].iter().sum();
        let predicted: u64 = matrix.iter().map(|row| row[c]).sum();
        let precision = ratio(matrix[c][c], predicted);
        let recall = ratio(matrix[c][c], support);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        if support + predicted > 0 {
            f1_sum += f1;
            f1_classes += 1;
        }
        per_class.push(ClassMetrics {
            class: class.clone(),
            precision,
            recall,
            f1,
            support,
        });
    }
    Evaluation {
        rows,
        accuracy: ratio(correct, rows),
        macro_f1: f1_sum / f1_classes as f64,
        classes,
        per_class,
        confusion_matrix: matrix,
    }
}

fn first_difference(a: &[String], b: &[String]) -> String {
    match a.iter().zip(b).position(|(a, b)| a != b) {
        Some(i) => format!(" (feature {i} is `{}` vs `{}`)", a[i], b[i]),
        None => String::new(),
    }
}

impl Evaluation {
    /// Writes the evaluation as a JSON document.
    pub fn write(&self, out: impl Write) -> Result<()> {
        crate::write_json_document(out, self)
    }
}

/// The verdict on a model: blessed when its accuracy reaches the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Blessing {
    /// Whether the model may be pushed.
    pub blessed: bool,
    /// The model's evaluation accuracy.
    pub accuracy: f64,
    /// The accuracy it needed.
    pub threshold: f64,
}

impl Blessing {
    /// Blesses an evaluation whose accuracy is at least `threshold`, which
    /// must be within `[0, 1]`.
    pub fn new(evaluation: &Evaluation, threshold: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(Error::invalid(format!(
                "threshold must be within [0, 1], got {threshold}"
            )));
        }
        Ok(Blessing {
            blessed: evaluation.accuracy >= threshold,
            accuracy: evaluation.accuracy,
            threshold,
        })
    }

    /// Reads a blessing document.
    pub fn read(reader: impl Read) -> Result<Self> {
        let mut bytes = Vec::new();
        reader
            .take(BLESSING_BYTES_MAX + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > BLESSING_BYTES_MAX {
            return Err(Error::Document {
                what: "blessing",
                message: format!("larger than {BLESSING_BYTES_MAX} bytes"),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Document {
            what: "blessing",
            message: e.to_string(),
        })
    }

    /// Writes the blessing as a JSON document.
    pub fn write(&self, out: impl Write) -> Result<()> {
        crate::write_json_document(out, self)
    }

    /// The push gate: `Ok` when blessed, else [`Error::NotBlessed`].
    pub fn gate(&self) -> Result<()> {
        if self.blessed {
            Ok(())
        } else {
            Err(Error::NotBlessed {
                accuracy: self.accuracy,
                threshold: self.threshold,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HyperParams, MODEL_KIND, Model};
    use crate::table::BATCH_ROWS;
    use crate::transform::Dataset;
    use serde_json::json;

    /// A model that predicts class `argmax(x)`.
    fn identity_model(classes: &[&str]) -> Model {
        let k = classes.len();
        Model {
            kind: MODEL_KIND.into(),
            classes: classes.iter().map(|c| c.to_string()).collect(),
            features: (0..k).map(|j| format!("f{j}")).collect(),
            weights: (0..k)
                .map(|c| (0..k).map(|j| if c == j { 1.0 } else { 0.0 }).collect())
                .collect(),
            bias: vec![0.0; k],
            hyper_params: HyperParams::default(),
            train_rows: 0,
            train_loss: 0.0,
            train_accuracy: 0.0,
        }
    }

    /// One row per (true label, predicted class index) pair.
    fn dataset(model: &Model, rows: &[(&str, usize)]) -> Dataset {
        let k = model.features.len();
        Dataset {
            features: model.features.clone(),
            classes: model.classes.clone(),
            x: rows
                .iter()
                .flat_map(|(_, p)| (0..k).map(move |j| if j == *p { 1.0 } else { 0.0 }))
                .collect(),
            y: rows.iter().map(|(y, _)| y.to_string()).collect(),
        }
    }

    /// Scores `model` on `data`, streamed from its bytes.
    fn score(model: &Model, data: &Dataset) -> Result<Evaluation> {
        evaluate(model, &data.write(Vec::new()).unwrap()[..])
    }

    #[test]
    fn confusion_matrix_and_per_class_metrics_are_exact() {
        let model = identity_model(&["a", "b", "c"]);
        // a: 3 rows, 2 right, 1 → b; b: 2 rows, both right; c: 1 row → a.
        let data = dataset(
            &model,
            &[("a", 0), ("a", 0), ("a", 1), ("b", 1), ("b", 1), ("c", 0)],
        );
        let evaluation = score(&model, &data).unwrap();
        assert_eq!(
            evaluation.confusion_matrix,
            vec![vec![2, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]
        );
        assert_eq!(evaluation.accuracy, 4.0 / 6.0);
        let f1_a = 2.0 * (2.0 / 3.0) * (2.0 / 3.0) / (4.0 / 3.0);
        let f1_b = 2.0 * (2.0 / 3.0) * 1.0 / (2.0 / 3.0 + 1.0);
        assert_eq!(
            serde_json::to_value(&evaluation.per_class).unwrap(),
            json!([
                {"class": "a", "precision": 2.0 / 3.0, "recall": 2.0 / 3.0, "f1": f1_a, "support": 3},
                {"class": "b", "precision": 2.0 / 3.0, "recall": 1.0, "f1": f1_b, "support": 2},
                {"class": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
            ])
        );
        assert_eq!(evaluation.macro_f1, (f1_a + f1_b + 0.0) / 3.0);
    }

    #[test]
    fn unseen_labels_get_their_own_row_and_absent_classes_skip_macro_f1() {
        let model = identity_model(&["a", "b"]);
        let data = dataset(&model, &[("a", 0), ("a", 0), ("z", 0)]);
        let evaluation = score(&model, &data).unwrap();
        assert_eq!(evaluation.classes, ["a", "b", "z"]);
        assert_eq!(
            evaluation.confusion_matrix,
            vec![vec![2, 0, 0], vec![0, 0, 0], vec![1, 0, 0]]
        );
        // b never occurs, so macro F1 averages a (0.8) and z (0).
        let f1_a = 2.0 * (2.0 / 3.0) / (2.0 / 3.0 + 1.0);
        assert_eq!(evaluation.macro_f1, f1_a / 2.0);
    }

    #[test]
    fn feature_mismatch_and_empty_data_are_rejected() {
        let model = identity_model(&["a", "b"]);
        let mut data = dataset(&model, &[("a", 0)]);
        data.features[1] = "other".into();
        assert_eq!(
            score(&model, &data).unwrap_err().to_string(),
            "evaluation features differ from the model's: 2 vs 2 features (feature 1 is `other` vs `f1`)"
        );
        let empty = dataset(&model, &[]);
        assert_eq!(
            score(&model, &empty).unwrap_err().to_string(),
            "evaluation dataset has no rows"
        );
    }

    #[test]
    fn blessing_compares_accuracy_to_threshold_and_gates_push() {
        let model = identity_model(&["a", "b"]);
        let data = dataset(&model, &[("a", 0), ("a", 0), ("b", 0), ("b", 1)]);
        let evaluation = score(&model, &data).unwrap();
        let blessing = Blessing::new(&evaluation, 0.75).unwrap();
        assert_eq!(
            blessing,
            Blessing {
                blessed: true,
                accuracy: 0.75,
                threshold: 0.75
            }
        );
        assert!(blessing.gate().is_ok());

        let blessing = Blessing::new(&evaluation, 0.9).unwrap();
        let mut out = Vec::new();
        blessing.write(&mut out).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
            json!({"blessed": false, "accuracy": 0.75, "threshold": 0.9})
        );
        let read = Blessing::read(&out[..]).unwrap();
        assert_eq!(
            read.gate().unwrap_err().to_string(),
            "model not blessed: accuracy 0.75 < threshold 0.9"
        );
        assert_eq!(
            Blessing::new(&evaluation, 1.5).unwrap_err().to_string(),
            "threshold must be within [0, 1], got 1.5"
        );
    }

    #[test]
    fn evaluation_streams_many_batches_with_unseen_labels_anywhere() {
        let model = identity_model(&["a", "b"]);
        let rows: Vec<(&str, usize)> = (0..2 * BATCH_ROWS + 3)
            .map(|i| match i % 4 {
                0 => ("a", 0),
                1 => ("b", 1),
                2 => ("b", 0),
                _ if i > BATCH_ROWS => ("y", 1),
                _ => ("x", 0),
            })
            .collect();
        let evaluation = score(&model, &dataset(&model, &rows)).unwrap();
        // 16387 rows: 4097 each of a, b→b, b→a (i % 4 = 0, 1, 2), then
        // 2048 x (i % 4 = 3 up to BATCH_ROWS) and 2048 y.
        assert_eq!(evaluation.rows, 16_387);
        assert_eq!(evaluation.classes, ["a", "b", "x", "y"]);
        assert_eq!(
            evaluation.confusion_matrix,
            vec![
                vec![4097, 0, 0, 0],
                vec![4097, 4097, 0, 0],
                vec![2048, 0, 0, 0],
                vec![0, 2048, 0, 0],
            ]
        );
        assert_eq!(evaluation.accuracy, 8194.0 / 16_387.0);
    }

    #[test]
    fn a_truncated_evaluation_dataset_names_the_byte_offset() {
        let model = identity_model(&["a", "b"]);
        let bytes = dataset(&model, &[("a", 0), ("b", 1)])
            .write(Vec::new())
            .unwrap();
        let cut = bytes.len() - 8;
        assert_eq!(
            evaluate(&model, &bytes[..cut]).unwrap_err().to_string(),
            format!(
                "dataset at byte {cut}: the Arrow stream is truncated: it ends after 2 rows (batch 1) without its end-of-stream marker"
            )
        );
    }

    #[test]
    fn too_many_unseen_labels_hit_the_class_limit() {
        let model = identity_model(&["a", "b"]);
        let labels: Vec<String> = (0..CLASSES_MAX - 1).map(|i| format!("u{i}")).collect();
        let rows: Vec<(&str, usize)> = labels.iter().map(|l| (l.as_str(), 0)).collect();
        assert_eq!(
            score(&model, &dataset(&model, &rows))
                .unwrap_err()
                .to_string(),
            format!("too many classes in evaluation (limit {CLASSES_MAX})")
        );
        let evaluation = score(&model, &dataset(&model, &rows[..CLASSES_MAX - 2])).unwrap();
        assert_eq!(evaluation.classes.len(), CLASSES_MAX);
    }
}
