//! Multinomial softmax regression, trained by full-batch gradient descent;
//! and [`AnyModel`], which reads a model document of any kind (this one or
//! [`crate::mlp`]) for scoring through the [`Classifier`] trait.
//!
//! Deterministic by construction: weights start at zero, rows are visited
//! in file order, and there is no randomness. The loss is the mean
//! cross-entropy plus `l2 / 2 · ‖W‖²` (the bias is not penalised).
//!
//! The model (`model` output) is a JSON document:
//!
//! ```json
//! {"kind": "softmax_regression", "classes": ["Adelie", …], "features": [...],
//!  "weights": [[…one per feature…], …one per class…], "bias": [...],
//!  "hyper_params": {"learning_rate": 0.5, "epochs": 300, "l2": 0.0},
//!  "train_rows": 275, "train_loss": 0.02, "train_accuracy": 0.99}
//! ```
//!
//! A document without `kind` is read as this kind: models written before
//! there was a second kind lack it.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::mlp::{MLP_KIND, Mlp};
use crate::transform::Dataset;
use crate::{CLASSES_MAX, EPOCHS_MAX, Error, FEATURES_MAX, Result};

/// This model's kind, recorded so a reader can tell it from an [`Mlp`].
pub const MODEL_KIND: &str = "softmax_regression";

/// Largest model document read, in bytes: the largest model the limits
/// allow is far smaller than the data it was trained on, and a document is
/// read whole.
pub const MODEL_BYTES_MAX: u64 = 256 << 20;

/// Training settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HyperParams {
    /// Gradient-descent step size, > 0.
    pub learning_rate: f64,
    /// Full passes over the data, at most [`EPOCHS_MAX`].
    pub epochs: u32,
    /// L2 penalty on the weights, ≥ 0.
    pub l2: f64,
}

impl Default for HyperParams {
    fn default() -> Self {
        HyperParams {
            learning_rate: 0.1,
            epochs: 200,
            l2: 0.0,
        }
    }
}

impl HyperParams {
    /// Checks the settings are usable.
    pub fn check(&self) -> Result<()> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(Error::invalid(format!(
                "learning_rate must be a positive number, got {}",
                self.learning_rate
            )));
        }
        if self.epochs > EPOCHS_MAX {
            return Err(Error::invalid(format!(
                "epochs must be at most {EPOCHS_MAX}, got {}",
                self.epochs
            )));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(Error::invalid(format!(
                "l2 must be a non-negative number, got {}",
                self.l2
            )));
        }
        Ok(())
    }
}

/// A trained softmax-regression classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Always [`MODEL_KIND`] (the default when a document lacks it).
    #[serde(default = "softmax_kind")]
    pub kind: String,
    /// Class names; class `c` is row `c` of `weights`.
    pub classes: Vec<String>,
    /// Feature names, in input order.
    pub features: Vec<String>,
    /// `classes × features` weights.
    pub weights: Vec<Vec<f64>>,
    /// One bias per class.
    pub bias: Vec<f64>,
    /// The settings it was trained with.
    pub hyper_params: HyperParams,
    /// Training rows.
    pub train_rows: u64,
    /// Loss on the training data after the last epoch.
    pub train_loss: f64,
    /// Accuracy on the training data after the last epoch.
    pub train_accuracy: f64,
}

fn softmax_kind() -> String {
    MODEL_KIND.to_owned()
}

/// Loss and accuracy of a model on a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Fit {
    loss: f64,
    accuracy: f64,
}

/// Trains on `data`, calling `on_epoch(epoch, loss)` with the loss at the
/// start of each epoch (epoch 0's is `ln(classes)`, the zero model's).
pub fn train(
    data: &Dataset,
    hyper: &HyperParams,
    mut on_epoch: impl FnMut(u32, f64),
) -> Result<Model> {
    hyper.check()?;
    data.check()?;
    let n = data.rows();
    if n == 0 {
        return Err(Error::invalid("training dataset has no rows"));
    }
    let k = data.classes.len();
    let d = data.features.len();
    if k == 0 {
        return Err(Error::invalid("training dataset has no classes"));
    }
    let y = class_indices(data)?;

    let mut model = Model {
        kind: MODEL_KIND.to_owned(),
        classes: data.classes.clone(),
        features: data.features.clone(),
        weights: vec![vec![0.0; d]; k],
        bias: vec![0.0; k],
        hyper_params: *hyper,
        train_rows: n as u64,
        train_loss: 0.0,
        train_accuracy: 0.0,
    };
    let mut grad_w = vec![vec![0.0; d]; k];
    let mut grad_b = vec![0.0; k];
    let scale = 1.0 / n as f64;
    for epoch in 0..hyper.epochs {
        let fit = model.pass(data, &y, Some((&mut grad_w, &mut grad_b)));
        if !fit.loss.is_finite() {
            return Err(Error::invalid(format!(
                "training diverged at epoch {epoch} (loss is not finite); lower learning_rate"
            )));
        }
        on_epoch(epoch, fit.loss);
        for (weights, grad) in model.weights.iter_mut().zip(&grad_w) {
            for (w, g) in weights.iter_mut().zip(grad) {
                *w -= hyper.learning_rate * (g * scale + hyper.l2 * *w);
            }
        }
        for (b, g) in model.bias.iter_mut().zip(&grad_b) {
            *b -= hyper.learning_rate * g * scale;
        }
    }
    let fit = model.pass(data, &y, None);
    if !fit.loss.is_finite() {
        return Err(Error::invalid(
            "training diverged (final loss is not finite); lower learning_rate",
        ));
    }
    model.train_loss = fit.loss;
    model.train_accuracy = fit.accuracy;
    Ok(model)
}

/// Each row's label as an index into `data.classes`.
pub(crate) fn class_indices(data: &Dataset) -> Result<Vec<usize>> {
    let index: BTreeMap<&str, usize> = data
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    data.y
        .iter()
        .enumerate()
        .map(|(row, label)| {
            index.get(label.as_str()).copied().ok_or_else(|| {
                Error::invalid(format!(
                    "training row {row}: label `{label}` is not among the dataset's classes"
                ))
            })
        })
        .collect()
}

impl Model {
    /// Reads a model document and checks its shape.
    pub fn read(reader: impl Read) -> Result<Self> {
        Self::from_slice(&read_document(reader)?)
    }

    fn from_slice(bytes: &[u8]) -> Result<Self> {
        let model: Model =
            serde_json::from_slice(bytes).map_err(|e| document_error(e.to_string()))?;
        model.check()?;
        Ok(model)
    }

    fn check(&self) -> Result<()> {
        if self.kind != MODEL_KIND {
            return Err(document_error(format!(
                "kind is `{}`, expected `{MODEL_KIND}`",
                self.kind
            )));
        }
        let (k, d) = (self.classes.len(), self.features.len());
        if k == 0 || k > CLASSES_MAX || d > FEATURES_MAX {
            return Err(document_error(format!(
                "{k} classes and {d} features; expected 1..={CLASSES_MAX} and at most {FEATURES_MAX}"
            )));
        }
        if self.weights.len() != k
            || self.bias.len() != k
            || self.weights.iter().any(|w| w.len() != d)
        {
            return Err(document_error(format!(
                "weights must be {k} × {d} and bias {k} long"
            )));
        }
        Ok(())
    }

    /// Writes the model as a JSON document.
    pub fn write(&self, out: impl Write) -> Result<()> {
        crate::write_json_document(out, self)
    }

    /// The index of the most likely class for features `x` (the first
    /// class on ties).
    pub fn predict(&self, x: &[f64]) -> usize {
        let mut logits = vec![0.0; self.classes.len()];
        self.logits(x, &mut logits);
        argmax(&logits)
    }

    fn logits(&self, x: &[f64], out: &mut [f64]) {
        for ((logit, w), b) in out.iter_mut().zip(&self.weights).zip(&self.bias) {
            *logit = b + w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>();
        }
    }

    /// One pass over `data`: the loss and accuracy, and, when `grad` is
    /// given, the summed (not yet averaged) gradients of the cross-entropy.
    fn pass(
        &self,
        data: &Dataset,
        y: &[usize],
        grad: Option<(&mut [Vec<f64>], &mut [f64])>,
    ) -> Fit {
        let k = self.classes.len();
        let mut logits = vec![0.0; k];
        let mut cross_entropy = 0.0;
        let mut correct = 0usize;
        let mut grad = grad;
        if let Some((gw, gb)) = grad.as_mut() {
            gw.iter_mut().for_each(|row| row.fill(0.0));
            gb.fill(0.0);
        }
        for (i, &label) in y.iter().enumerate() {
            let x = data.row(i);
            self.logits(x, &mut logits);
            let best = argmax(&logits);
            if best == label {
                correct += 1;
            }
            // Softmax shifted by the largest logit so exp never overflows;
            // -ln p(label) = ln Σ exp(z - max) - (z_label - max).
            let max = logits[best];
            let shifted_label = logits[label] - max;
            let mut sum = 0.0;
            for logit in logits.iter_mut() {
                *logit = (*logit - max).exp();
                sum += *logit;
            }
            cross_entropy += sum.ln() - shifted_label;
            if let Some((gw, gb)) = grad.as_mut() {
                for (c, p) in logits.iter().enumerate() {
                    let g = p / sum - if c == label { 1.0 } else { 0.0 };
                    gb[c] += g;
                    for (gw, x) in gw[c].iter_mut().zip(x) {
                        *gw += g * x;
                    }
                }
            }
        }
        let n = y.len() as f64;
        let penalty: f64 =
            self.weights.iter().flatten().map(|w| w * w).sum::<f64>() * self.hyper_params.l2 / 2.0;
        Fit {
            loss: cross_entropy / n + penalty,
            accuracy: correct as f64 / n,
        }
    }
}

fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// A model document's bytes, at most [`MODEL_BYTES_MAX`].
pub(crate) fn read_document(reader: impl Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(MODEL_BYTES_MAX + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MODEL_BYTES_MAX {
        return Err(document_error(format!(
            "larger than {MODEL_BYTES_MAX} bytes"
        )));
    }
    Ok(bytes)
}

pub(crate) fn document_error(message: String) -> Error {
    Error::Document {
        what: "model",
        message,
    }
}

/// What scoring needs from a trained model: its input and output names and
/// a prediction per row.
pub trait Classifier {
    /// Feature names, in input order.
    fn features(&self) -> &[String];
    /// Class names; [`Classifier::predict`] returns an index into them.
    fn classes(&self) -> &[String];
    /// The index of the most likely class for features `x` (one value per
    /// feature).
    fn predict(&self, x: &[f64]) -> usize;
}

impl Classifier for Model {
    fn features(&self) -> &[String] {
        &self.features
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn predict(&self, x: &[f64]) -> usize {
        Model::predict(self, x)
    }
}

/// A model document of either kind, told apart by its `kind` field.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyModel {
    /// `"kind": "softmax_regression"`, or no `kind`.
    Softmax(Model),
    /// `"kind": "mlp"`.
    Mlp(Mlp),
}

impl AnyModel {
    /// Reads a model document of any known kind and checks its shape; an
    /// unknown kind is an error naming it.
    pub fn read(reader: impl Read) -> Result<Self> {
        /// Only the kind; serde skips every other field.
        #[derive(Deserialize)]
        struct Kind {
            #[serde(default)]
            kind: Option<String>,
        }
        let bytes = read_document(reader)?;
        // serde would read a struct from an array too, field by field.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(document_error("expected a JSON object".to_owned()));
        }
        let Kind { kind } =
            serde_json::from_slice(&bytes).map_err(|e| document_error(e.to_string()))?;
        match kind.as_deref() {
            None | Some(MODEL_KIND) => Ok(AnyModel::Softmax(Model::from_slice(&bytes)?)),
            Some(MLP_KIND) => Ok(AnyModel::Mlp(Mlp::from_slice(&bytes)?)),
            Some(other) => Err(document_error(format!(
                "unknown kind `{other}`; expected `{MODEL_KIND}` or `{MLP_KIND}`"
            ))),
        }
    }

    /// The model's kind.
    pub fn kind(&self) -> &str {
        match self {
            AnyModel::Softmax(_) => MODEL_KIND,
            AnyModel::Mlp(_) => MLP_KIND,
        }
    }

    fn inner(&self) -> &dyn Classifier {
        match self {
            AnyModel::Softmax(m) => m,
            AnyModel::Mlp(m) => m,
        }
    }
}

impl Classifier for AnyModel {
    fn features(&self) -> &[String] {
        self.inner().features()
    }

    fn classes(&self) -> &[String] {
        self.inner().classes()
    }

    fn predict(&self, x: &[f64]) -> usize {
        self.inner().predict(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::dataset;

    #[test]
    fn zero_model_loss_is_ln_k_and_first_step_matches_hand_gradient() {
        // Two rows, one feature, two classes.
        let data = dataset(&[1.0, -1.0], &["a", "b"], 1);
        let hyper = HyperParams {
            learning_rate: 1.0,
            epochs: 1,
            l2: 0.0,
        };
        let mut losses = Vec::new();
        let model = train(&data, &hyper, |e, l| losses.push((e, l))).unwrap();
        assert_eq!(losses, vec![(0, 2f64.ln())]);
        // Gradient for class a: mean((p - 1{a}) x) = ((0.5-1)·1 + 0.5·(-1)) / 2 = -0.5.
        assert_eq!(model.weights, vec![vec![0.5], vec![-0.5]]);
        assert_eq!(model.bias, vec![0.0, 0.0]);
        assert_eq!(model.train_accuracy, 1.0);
        // After the step the logits are ±0.5: loss = ln(1 + e^-1).
        assert!((model.train_loss - (1.0 + (-1.0f64).exp()).ln()).abs() < 1e-15);
    }

    #[test]
    fn training_is_deterministic_and_loss_decreases() {
        let data = dataset(
            &[1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9, -1.0, -1.0],
            &["a", "a", "b", "b", "c"],
            2,
        );
        let hyper = HyperParams {
            learning_rate: 0.5,
            epochs: 500,
            l2: 0.001,
        };
        let mut losses = Vec::new();
        let model = train(&data, &hyper, |_, l| losses.push(l)).unwrap();
        assert_eq!(losses.len(), 500);
        assert!(losses.windows(2).all(|w| w[1] <= w[0]), "loss went up");
        assert!(model.train_loss < losses[499]);
        assert_eq!(model.train_accuracy, 1.0);
        let again = train(&data, &hyper, |_, _| {}).unwrap();
        assert_eq!(model, again);
        for (i, label) in ["a", "a", "b", "b", "c"].iter().enumerate() {
            assert_eq!(model.classes[model.predict(data.row(i))], *label);
        }
    }

    #[test]
    fn model_round_trips_and_bad_shapes_are_rejected() {
        let data = dataset(&[1.0, -1.0], &["a", "b"], 1);
        let model = train(&data, &HyperParams::default(), |_, _| {}).unwrap();
        let mut out = Vec::new();
        model.write(&mut out).unwrap();
        assert_eq!(Model::read(&out[..]).unwrap(), model);

        let mut bad = model.clone();
        bad.weights.pop();
        let mut out = Vec::new();
        bad.write(&mut out).unwrap();
        let err = Model::read(&out[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model: weights must be 2 × 1 and bias 2 long"
        );
    }

    #[test]
    fn bad_hyper_params_and_divergence_are_reported() {
        let data = dataset(&[1.0, -1.0], &["a", "b"], 1);
        let bad = |learning_rate, epochs, l2| {
            train(
                &data,
                &HyperParams {
                    learning_rate,
                    epochs,
                    l2,
                },
                |_, _| {},
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            bad(0.0, 1, 0.0),
            "learning_rate must be a positive number, got 0"
        );
        assert_eq!(
            bad(0.1, EPOCHS_MAX + 1, 0.0),
            format!(
                "epochs must be at most {EPOCHS_MAX}, got {}",
                EPOCHS_MAX + 1
            )
        );
        assert_eq!(
            bad(0.1, 1, -1.0),
            "l2 must be a non-negative number, got -1"
        );
        let huge = dataset(&[1e300, -1e300], &["a", "b"], 1);
        let err = train(
            &huge,
            &HyperParams {
                learning_rate: 1e10,
                epochs: 5,
                l2: 0.0,
            },
            |_, _| {},
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("training diverged"), "{err}");
    }

    #[test]
    fn misshapen_dataset_is_rejected() {
        let mut data = dataset(&[1.0, -1.0], &["a", "b"], 1);
        data.x.pop();
        let err = train(&data, &HyperParams::default(), |_, _| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dataset has 1 values for 2 rows of 1 features"
        );
    }

    #[test]
    fn any_model_reads_either_kind_and_scores_it() {
        use crate::evaluation::evaluate;
        use crate::mlp::{self, MlpParams};

        let data = dataset(&[1.0, -1.0], &["a", "b"], 1);
        let softmax = train(&data, &HyperParams::default(), |_, _| {}).unwrap();
        let mut doc = Vec::new();
        softmax.write(&mut doc).unwrap();
        let any = AnyModel::read(&doc[..]).unwrap();
        assert_eq!(any, AnyModel::Softmax(softmax.clone()));
        assert_eq!(any.kind(), "softmax_regression");
        assert_eq!(evaluate(&any, &data).unwrap().accuracy, 1.0);

        // Written before models had a kind.
        let mut value: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        value.as_object_mut().unwrap().remove("kind");
        let old = serde_json::to_vec(&value).unwrap();
        assert_eq!(
            AnyModel::read(&old[..]).unwrap(),
            AnyModel::Softmax(softmax)
        );

        let params = MlpParams {
            hidden_layers: 1,
            width: 4,
            learning_rate: 0.05,
            epochs: 40,
            batch_size: 2,
        };
        let net = mlp::train(&data, &params, 5, |_, _| {}, &|| false).unwrap();
        let mut doc = Vec::new();
        net.write(&mut doc).unwrap();
        let any = AnyModel::read(&doc[..]).unwrap();
        assert_eq!(any.kind(), "mlp");
        assert_eq!(any.classes(), ["a", "b"]);
        assert_eq!(any.features(), ["f0"]);
        assert_eq!(any, AnyModel::Mlp(net));
        assert_eq!(evaluate(&any, &data).unwrap().accuracy, 1.0);
    }

    #[test]
    fn any_model_names_an_unknown_kind_and_checks_the_shape_of_known_ones() {
        let err = AnyModel::read(&br#"{"kind":"tree","depth":3}"#[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model: unknown kind `tree`; expected `softmax_regression` or `mlp`"
        );
        let err = AnyModel::read(&br#"{"kind":"mlp","features":[]}"#[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model: missing field `classes` at line 1 column 28"
        );
        let err = AnyModel::read(&b"[1]"[..]).unwrap_err();
        assert_eq!(err.to_string(), "model: expected a JSON object");
    }

    #[test]
    fn unknown_training_label_is_rejected() {
        let mut data = dataset(&[1.0, -1.0], &["a", "b"], 1);
        data.y[1] = "z".into();
        let err = train(&data, &HyperParams::default(), |_, _| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "training row 1: label `z` is not among the dataset's classes"
        );
    }
}
