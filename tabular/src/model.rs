//! Multinomial softmax regression, trained by minibatch stochastic
//! gradient descent over a *streamed* dataset; and [`AnyModel`], which
//! reads a model document of any kind (this one or [`crate::mlp`]) for
//! scoring through the [`Classifier`] trait.
//!
//! [`train`] never holds the dataset: it opens it once per epoch (through
//! the opener it is given) and reads it a batch at a time. Rows go through
//! a bounded shuffle buffer, as in tf.data: the first
//! `shuffle_buffer` rows fill it, then each incoming row takes the place of
//! a uniformly chosen buffered row, which goes to training; at the end of
//! the stream the rest leave in random order. A buffer at least as large
//! as the dataset is a full shuffle; a buffer of 1 is file order. Every
//! `batch_size` rows leaving the buffer make one update; the last minibatch
//! of an epoch may be smaller. Memory is `shuffle_buffer × features` values
//! plus one read batch, whatever the number of rows.
//!
//! Deterministic by construction: weights start at zero, the shuffle of
//! epoch `e` draws from a [`SplitMix64`] seeded by `(seed, e)`, and every
//! sum runs in a fixed order, so the same data and settings give the same
//! model bytes. The loss of a row is its cross-entropy plus
//! `l2 / 2 · ‖W‖²` (the bias is not penalised).
//!
//! The model (`model` output) is a JSON document:
//!
//! ```json
//! {"kind": "softmax_regression", "classes": ["Adelie", …], "features": [...],
//!  "weights": [[…one per feature…], …one per class…], "bias": [...],
//!  "hyper_params": {"learning_rate": 0.5, "epochs": 10, "l2": 0.0,
//!                   "batch_size": 32, "shuffle_buffer": 8192, "seed": 0},
//!  "train_rows": 275, "train_loss": 0.02, "train_accuracy": 0.99}
//! ```
//!
//! A document without `kind` is read as this kind: models written before
//! there was a second kind lack it. A document without `batch_size`,
//! `shuffle_buffer` or `seed` (written before minibatch training) reads
//! them as their defaults.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::dataset::DatasetReader;
use crate::mlp::{MLP_KIND, Mlp, SplitMix64};
use crate::transform::Dataset;
use crate::{CLASSES_MAX, EPOCHS_MAX, Error, FEATURES_MAX, Result};

/// This model's kind, recorded so a reader can tell it from an [`Mlp`].
pub const MODEL_KIND: &str = "softmax_regression";

/// Largest model document read, in bytes: the largest model the limits
/// allow is far smaller than the data it was trained on, and a document is
/// read whole.
pub const MODEL_BYTES_MAX: u64 = 256 << 20;

/// Default shuffle buffer, in rows: one read batch
/// ([`crate::table::BATCH_ROWS`]), so the buffer at most doubles what
/// reading the dataset holds.
pub const SHUFFLE_BUFFER_DEFAULT: u32 = crate::table::BATCH_ROWS as u32;

/// Most feature values (`shuffle_buffer × features`) the shuffle buffer may
/// hold: 8 Mi `f64`s is 64 MiB, a quarter of the example pipeline's step
/// memory limit.
pub const SHUFFLE_VALUES_MAX: usize = 8 << 20;

/// What [`train`] reads the dataset as, in errors.
const WHAT: &str = "dataset";

/// Training settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HyperParams {
    /// Gradient-descent step size, > 0.
    pub learning_rate: f64,
    /// Full passes over the data, at most [`EPOCHS_MAX`].
    pub epochs: u32,
    /// L2 penalty on the weights, ≥ 0.
    pub l2: f64,
    /// Rows per update, ≥ 1.
    #[serde(default = "batch_size_default")]
    pub batch_size: u32,
    /// Rows the shuffle buffer holds, ≥ 1; `shuffle_buffer × features` is
    /// at most [`SHUFFLE_VALUES_MAX`].
    #[serde(default = "shuffle_buffer_default")]
    pub shuffle_buffer: u32,
    /// Seed of the shuffle.
    #[serde(default)]
    pub seed: u64,
}

fn batch_size_default() -> u32 {
    HyperParams::default().batch_size
}

fn shuffle_buffer_default() -> u32 {
    HyperParams::default().shuffle_buffer
}

impl Default for HyperParams {
    fn default() -> Self {
        HyperParams {
            learning_rate: 0.1,
            epochs: 30,
            l2: 0.0,
            batch_size: 32,
            shuffle_buffer: SHUFFLE_BUFFER_DEFAULT,
            seed: 0,
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
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size must be at least 1, got 0"));
        }
        if self.shuffle_buffer == 0 {
            return Err(Error::invalid(
                "shuffle_buffer must be at least 1 (1 keeps file order), got 0",
            ));
        }
        Ok(())
    }

    /// Checks the shuffle buffer fits [`SHUFFLE_VALUES_MAX`] for `features`.
    fn check_buffer(&self, features: usize) -> Result<()> {
        let values = self.shuffle_buffer as usize * features;
        if values > SHUFFLE_VALUES_MAX {
            return Err(Error::invalid(format!(
                "shuffle_buffer {} × {features} features is {values} values (limit {SHUFFLE_VALUES_MAX}); lower shuffle_buffer",
                self.shuffle_buffer
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
    /// Mean loss over the training data of the trained model.
    pub train_loss: f64,
    /// Accuracy on the training data of the trained model.
    pub train_accuracy: f64,
}

fn softmax_kind() -> String {
    MODEL_KIND.to_owned()
}

/// Trains on the dataset stream `open()` returns; `open` is called once
/// per epoch and once more for the final scoring pass, and must return the
/// same dataset each time.
///
/// Calls `on_epoch(epoch, loss)` after each epoch (0-based) with the
/// epoch's mean training loss: the mean over its rows of each row's loss
/// under the weights its minibatch's update started from (so epoch 0's
/// first minibatch scores the zero model, `ln(classes)`). `train_loss` and
/// `train_accuracy` come from a last pass, in file order, over the
/// trained model.
///
/// Fails naming the row for a label outside the dataset's classes, the
/// byte offset for a malformed or truncated stream, and suggests a lower
/// `learning_rate` when the loss stops being finite.
pub fn train<R: Read>(
    mut open: impl FnMut() -> Result<R>,
    hyper: &HyperParams,
    mut on_epoch: impl FnMut(u32, f64),
) -> Result<Model> {
    hyper.check()?;
    let mut reader = DatasetReader::new(open()?)?;
    let features = reader.features().to_vec();
    let classes = reader.classes().to_vec();
    let (k, d) = (classes.len(), features.len());
    if k == 0 {
        return Err(Error::invalid("training dataset has no classes"));
    }
    hyper.check_buffer(d)?;
    let index = class_index(&classes);

    let mut sgd = Sgd::new(k, d, hyper);
    let mut buffer = ShuffleBuffer::new(hyper.shuffle_buffer as usize, d);
    let mut rows = None;
    for epoch in 0..hyper.epochs {
        if epoch > 0 {
            reader = reopen(&mut open, &features, &classes)?;
        }
        buffer.start(epoch_rng(hyper.seed, epoch));
        sgd.epoch = epoch;
        let n = for_each_row(&mut reader, &index, |x, y| {
            buffer.insert(x, y, |x, y| sgd.row(x, y))
        })?;
        buffer.drain(|x, y| sgd.row(x, y))?;
        sgd.step()?;
        check_rows(&mut rows, n)?;
        on_epoch(epoch, sgd.take_epoch_loss(n));
    }

    if hyper.epochs > 0 {
        reader = reopen(&mut open, &features, &classes)?;
    }
    let (mut cross_entropy, mut correct) = (0.0, 0u64);
    let n = for_each_row(&mut reader, &index, |x, y| {
        let scored = sgd.score(x, y);
        cross_entropy += scored.cross_entropy;
        correct += u64::from(scored.best == y);
        Ok(())
    })?;
    check_rows(&mut rows, n)?;
    let loss = cross_entropy / n as f64 + sgd.penalty();
    if !loss.is_finite() {
        return Err(Error::invalid(
            "training diverged (final loss is not finite); lower learning_rate",
        ));
    }
    Ok(Model {
        kind: MODEL_KIND.to_owned(),
        weights: (0..k)
            .map(|c| sgd.weights[c * d..(c + 1) * d].to_vec())
            .collect(),
        bias: sgd.bias,
        classes,
        features,
        hyper_params: *hyper,
        train_rows: n,
        train_loss: loss,
        train_accuracy: correct as f64 / n as f64,
    })
}

/// Opens the dataset again and checks it is the one first opened.
fn reopen<R: Read>(
    open: &mut impl FnMut() -> Result<R>,
    features: &[String],
    classes: &[String],
) -> Result<DatasetReader<R>> {
    let reader = DatasetReader::new(open()?)?;
    if reader.features() != features || reader.classes() != classes {
        return Err(Error::invalid(
            "the training dataset changed between passes (its features or classes differ)",
        ));
    }
    Ok(reader)
}

/// Records the first pass's row count and checks later passes against it.
fn check_rows(rows: &mut Option<u64>, n: u64) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid("training dataset has no rows"));
    }
    match *rows {
        None => *rows = Some(n),
        Some(first) if first != n => {
            return Err(Error::invalid(format!(
                "the training dataset changed between passes: {first} rows, then {n}"
            )));
        }
        Some(_) => {}
    }
    Ok(())
}

/// The shuffle of epoch `epoch`: a generator seeded by `(seed, epoch)`, so
/// each epoch's order is fixed without replaying earlier ones.
fn epoch_rng(seed: u64, epoch: u32) -> SplitMix64 {
    let base = SplitMix64::new(seed).next_u64();
    SplitMix64::new(SplitMix64::new(base ^ u64::from(epoch)).next_u64())
}

fn class_index(classes: &[String]) -> BTreeMap<&str, usize> {
    classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect()
}

/// Calls `f(x, class)` for every row of the rest of the stream, in order;
/// returns the number of rows.
fn for_each_row<R: Read>(
    reader: &mut DatasetReader<R>,
    index: &BTreeMap<&str, usize>,
    mut f: impl FnMut(&[f64], usize) -> Result<()>,
) -> Result<u64> {
    let d = reader.features().len();
    while let Some(batch) = reader.next_batch()? {
        let first = reader.rows() - batch.rows() as u64;
        for (i, label) in batch.labels().enumerate() {
            let Some(&class) = index.get(label) else {
                return Err(Error::Row {
                    what: WHAT,
                    row: first + i as u64 + 1,
                    message: format!("label `{label}` is not among the dataset's classes"),
                });
            };
            f(&batch.x[i * d..(i + 1) * d], class)?;
        }
    }
    Ok(reader.rows())
}

/// Each row's label as an index into `data.classes` (for the in-memory
/// trainer of [`crate::mlp`]).
pub(crate) fn class_indices(data: &Dataset) -> Result<Vec<usize>> {
    let index = class_index(&data.classes);
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

/// A bounded, seeded shuffle buffer of `(features, class)` rows, as
/// tf.data's `shuffle`: it fills up to its capacity, then each row offered
/// takes the place of a uniformly drawn buffered row, which is handed on;
/// [`ShuffleBuffer::drain`] hands on the rest in random order. It never
/// holds more than `capacity` rows, and allocates only while filling.
struct ShuffleBuffer {
    capacity: usize,
    width: usize,
    /// `len × width` values, row-major.
    x: Vec<f64>,
    y: Vec<usize>,
    rng: SplitMix64,
}

impl ShuffleBuffer {
    fn new(capacity: usize, width: usize) -> Self {
        ShuffleBuffer {
            capacity,
            width,
            x: Vec::new(),
            y: Vec::new(),
            rng: SplitMix64::new(0),
        }
    }

    /// Empties the buffer and draws from `rng` from now on.
    fn start(&mut self, rng: SplitMix64) {
        self.x.clear();
        self.y.clear();
        self.rng = rng;
    }

    fn len(&self) -> usize {
        self.y.len()
    }

    /// Offers a row; when the buffer is full, first hands a drawn row to
    /// `emit`, then stores the new row in its place.
    fn insert(
        &mut self,
        x: &[f64],
        y: usize,
        mut emit: impl FnMut(&[f64], usize) -> Result<()>,
    ) -> Result<()> {
        let w = self.width;
        if self.len() < self.capacity {
            if self.x.len() + w > self.x.capacity() {
                // Grow by doubling, but never past the capacity.
                let target = (self.x.capacity() * 2).max(w * 64).min(self.capacity * w);
                self.x.reserve_exact(target - self.x.len());
                self.y.reserve_exact(target / w.max(1) - self.y.len());
            }
            self.x.extend_from_slice(x);
            self.y.push(y);
            return Ok(());
        }
        let j = self.rng.below(self.capacity);
        let slot = &mut self.x[j * w..(j + 1) * w];
        emit(slot, self.y[j])?;
        slot.copy_from_slice(x);
        self.y[j] = y;
        Ok(())
    }

    /// Hands every buffered row to `emit` in random order, emptying the
    /// buffer.
    fn drain(&mut self, mut emit: impl FnMut(&[f64], usize) -> Result<()>) -> Result<()> {
        let w = self.width;
        while !self.y.is_empty() {
            let len = self.len();
            let j = self.rng.below(len);
            emit(&self.x[j * w..(j + 1) * w], self.y[j])?;
            // Move the last row into the emptied slot.
            self.x.copy_within((len - 1) * w..len * w, j * w);
            self.x.truncate((len - 1) * w);
            self.y.swap_remove(j);
        }
        Ok(())
    }
}

/// The state of minibatch gradient descent: weights (flat,
/// `classes × features`), the current minibatch's summed gradients and
/// losses, and the epoch's loss.
struct Sgd {
    d: usize,
    learning_rate: f64,
    l2: f64,
    batch_size: usize,
    epoch: u32,
    weights: Vec<f64>,
    bias: Vec<f64>,
    grad_w: Vec<f64>,
    grad_b: Vec<f64>,
    /// Scratch: one logit (then its exponential) per class.
    probs: Vec<f64>,
    /// Rows and summed cross-entropy of the current minibatch.
    batch_rows: usize,
    batch_loss: f64,
    /// Summed row losses of the epoch so far.
    epoch_loss: f64,
}

impl Sgd {
    fn new(k: usize, d: usize, hyper: &HyperParams) -> Self {
        Sgd {
            d,
            learning_rate: hyper.learning_rate,
            l2: hyper.l2,
            batch_size: hyper.batch_size as usize,
            epoch: 0,
            weights: vec![0.0; k * d],
            bias: vec![0.0; k],
            grad_w: vec![0.0; k * d],
            grad_b: vec![0.0; k],
            probs: vec![0.0; k],
            batch_rows: 0,
            batch_loss: 0.0,
            epoch_loss: 0.0,
        }
    }

    /// Adds one row's cross-entropy and gradient to the minibatch; updates
    /// when the minibatch is full. Allocates nothing.
    fn row(&mut self, x: &[f64], label: usize) -> Result<()> {
        let scored = self.score(x, label);
        self.batch_loss += scored.cross_entropy;
        let d = self.d;
        for (c, p) in self.probs.iter().enumerate() {
            let g = p / scored.sum - if c == label { 1.0 } else { 0.0 };
            self.grad_b[c] += g;
            for (gw, x) in self.grad_w[c * d..(c + 1) * d].iter_mut().zip(x) {
                *gw += g * x;
            }
        }
        self.batch_rows += 1;
        if self.batch_rows == self.batch_size {
            self.step()?;
        }
        Ok(())
    }

    /// Scores row `x` of class `label` with the current weights, leaving
    /// `exp(z - max z)` of its logits `z` in `probs` (unnormalised).
    fn score(&mut self, x: &[f64], label: usize) -> Scored {
        let d = self.d;
        for (c, z) in self.probs.iter_mut().enumerate() {
            let w = &self.weights[c * d..(c + 1) * d];
            *z = self.bias[c] + w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>();
        }
        let best = argmax(&self.probs);
        // Shifted by the largest logit so exp never overflows;
        // -ln p(label) = ln Σ exp(z - max) - (z_label - max).
        let max = self.probs[best];
        let shifted_label = self.probs[label] - max;
        let mut sum = 0.0;
        for z in self.probs.iter_mut() {
            *z = libm::exp(*z - max);
            sum += *z;
        }
        Scored {
            best,
            cross_entropy: libm::log(sum) - shifted_label,
            sum,
        }
    }

    /// Applies the minibatch's mean gradient (no-op for an empty one).
    fn step(&mut self) -> Result<()> {
        if self.batch_rows == 0 {
            return Ok(());
        }
        let m = self.batch_rows as f64;
        let loss = self.batch_loss / m + self.penalty();
        if !loss.is_finite() {
            return Err(Error::invalid(format!(
                "training diverged in epoch {} (loss is not finite); lower learning_rate",
                self.epoch
            )));
        }
        self.epoch_loss += loss * m;
        let scale = 1.0 / m;
        let (rate, l2) = (self.learning_rate, self.l2);
        for (w, g) in self.weights.iter_mut().zip(&mut self.grad_w) {
            *w -= rate * (*g * scale + l2 * *w);
            *g = 0.0;
        }
        for (b, g) in self.bias.iter_mut().zip(&mut self.grad_b) {
            *b -= rate * *g * scale;
            *g = 0.0;
        }
        self.batch_rows = 0;
        self.batch_loss = 0.0;
        Ok(())
    }

    fn penalty(&self) -> f64 {
        if self.l2 == 0.0 {
            return 0.0;
        }
        self.weights.iter().map(|w| w * w).sum::<f64>() * self.l2 / 2.0
    }

    /// The epoch's mean row loss over `rows`; resets it.
    fn take_epoch_loss(&mut self, rows: u64) -> f64 {
        let loss = self.epoch_loss / rows as f64;
        self.epoch_loss = 0.0;
        loss
    }
}

/// One row scored: the predicted class, the cross-entropy of the true one
/// and the softmax denominator.
struct Scored {
    best: usize,
    cross_entropy: f64,
    sum: f64,
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

    /// The predicted class of each of the `rows` rows of `x` (row-major,
    /// one value per feature), into `out`; one scratch buffer for the
    /// whole batch.
    pub fn predict_batch(&self, x: &[f64], rows: usize, out: &mut Vec<usize>) {
        out.clear();
        let d = self.features.len();
        let mut logits = vec![0.0; self.classes.len()];
        for i in 0..rows {
            self.logits(&x[i * d..(i + 1) * d], &mut logits);
            out.push(argmax(&logits));
        }
    }

    fn logits(&self, x: &[f64], out: &mut [f64]) {
        for ((logit, w), b) in out.iter_mut().zip(&self.weights).zip(&self.bias) {
            *logit = b + w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>();
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
    /// The predicted class of each of the `rows` rows of `x` (row-major,
    /// one value per feature), into `out` (cleared first). The default
    /// predicts row by row; a kind may override it to reuse scratch space.
    fn predict_batch(&self, x: &[f64], rows: usize, out: &mut Vec<usize>) {
        out.clear();
        let d = self.features().len();
        out.extend((0..rows).map(|i| self.predict(&x[i * d..(i + 1) * d])));
    }
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

    fn predict_batch(&self, x: &[f64], rows: usize, out: &mut Vec<usize>) {
        Model::predict_batch(self, x, rows, out)
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

    fn predict_batch(&self, x: &[f64], rows: usize, out: &mut Vec<usize>) {
        self.inner().predict_batch(x, rows, out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::evaluation::evaluate;
    use crate::table::BATCH_ROWS;
    use crate::test_support::dataset;

    /// The dataset's stream bytes.
    pub(crate) fn bytes(data: &Dataset) -> Vec<u8> {
        data.write(Vec::new()).unwrap()
    }

    /// Trains on `data`, streamed from its bytes.
    fn fit(data: &Dataset, hyper: &HyperParams) -> Result<Model> {
        let bytes = bytes(data);
        train(|| Ok(&bytes[..]), hyper, |_, _| {})
    }

    fn json(model: &Model) -> Vec<u8> {
        let mut out = Vec::new();
        model.write(&mut out).unwrap();
        out
    }

    /// `rows` rows of 2 features in 3 well-separated blobs (`a`, `b`, `c`),
    /// in blocks of one class at a time, as a CSV sorted by label would be.
    fn blobs(rows: usize) -> Dataset {
        let centres = [(2.0, 0.0), (-1.0, 1.7), (-1.0, -1.7)];
        let mut x = Vec::with_capacity(rows * 2);
        let mut y = Vec::with_capacity(rows);
        for i in 0..rows {
            let c = i * 3 / rows;
            // A deterministic spread of ±0.5 around the centre.
            let (dx, dy) = ((i % 11) as f64 / 10.0 - 0.5, (i % 7) as f64 / 6.0 - 0.5);
            x.extend([centres[c].0 + dx, centres[c].1 + dy]);
            y.push(["a", "b", "c"][c]);
        }
        dataset(&x, &y, 2)
    }

    #[test]
    fn zero_model_loss_is_ln_k_and_first_step_matches_hand_gradient() {
        // Two rows, one feature, two classes, one minibatch of both.
        let data = dataset(&[1.0, -1.0], &["a", "b"], 1);
        let hyper = HyperParams {
            learning_rate: 1.0,
            epochs: 1,
            batch_size: 2,
            ..HyperParams::default()
        };
        let bytes = bytes(&data);
        let mut losses = Vec::new();
        let model = train(|| Ok(&bytes[..]), &hyper, |e, l| losses.push((e, l))).unwrap();
        assert_eq!(losses, vec![(0, 2f64.ln())]);
        // Gradient for class a: mean((p - 1{a}) x) = ((0.5-1)·1 + 0.5·(-1)) / 2 = -0.5.
        assert_eq!(model.weights, vec![vec![0.5], vec![-0.5]]);
        assert_eq!(model.bias, vec![0.0, 0.0]);
        assert_eq!(model.train_rows, 2);
        assert_eq!(model.train_accuracy, 1.0);
        // After the step the logits are ±0.5: loss = ln(1 + e^-1).
        assert!((model.train_loss - (1.0 + (-1.0f64).exp()).ln()).abs() < 1e-15);
    }

    #[test]
    fn full_batch_training_is_deterministic_and_its_loss_decreases() {
        let data = dataset(
            &[1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9, -1.0, -1.0],
            &["a", "a", "b", "b", "c"],
            2,
        );
        let hyper = HyperParams {
            learning_rate: 0.5,
            epochs: 500,
            l2: 0.001,
            batch_size: 5,
            ..HyperParams::default()
        };
        let bytes = bytes(&data);
        let mut losses = Vec::new();
        let model = train(
            || Ok(&bytes[..]),
            &hyper,
            |epoch, l| {
                assert_eq!(epoch as usize, losses.len());
                losses.push(l);
            },
        )
        .unwrap();
        assert_eq!(losses.len(), 500);
        assert!(losses.windows(2).all(|w| w[1] <= w[0]), "loss went up");
        assert!(model.train_loss < losses[499]);
        assert_eq!(model.train_accuracy, 1.0);
        for (i, label) in ["a", "a", "b", "b", "c"].iter().enumerate() {
            assert_eq!(model.classes[model.predict(data.row(i))], *label);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_model_bytes_and_another_seed_does_not() {
        let data = blobs(300);
        let hyper = HyperParams {
            epochs: 3,
            batch_size: 8,
            seed: 7,
            ..HyperParams::default()
        };
        let first = json(&fit(&data, &hyper).unwrap());
        assert_eq!(json(&fit(&data, &hyper).unwrap()), first);
        let other = json(&fit(&data, &HyperParams { seed: 8, ..hyper }).unwrap());
        assert_ne!(other, first);
        // The seed is recorded with the other settings.
        let model = Model::read(&first[..]).unwrap();
        assert_eq!(model.hyper_params, hyper);
    }

    #[test]
    fn the_shuffle_buffer_holds_at_most_its_capacity_and_emits_every_row_once() {
        let run = |capacity: usize, rows: usize, seed: u64| {
            let mut buffer = ShuffleBuffer::new(capacity, 2);
            buffer.start(epoch_rng(seed, 0));
            let mut order = Vec::new();
            for i in 0..rows {
                let x = [i as f64, -(i as f64)];
                buffer
                    .insert(&x, i, |x, y| {
                        assert_eq!(x, [y as f64, -(y as f64)]);
                        order.push(y);
                        Ok(())
                    })
                    .unwrap();
                assert!(buffer.len() <= capacity);
                assert!(
                    buffer.x.capacity() <= capacity * 2,
                    "{}",
                    buffer.x.capacity()
                );
                assert!(buffer.y.capacity() <= capacity, "{}", buffer.y.capacity());
            }
            assert_eq!(order.len(), rows.saturating_sub(capacity));
            buffer
                .drain(|_, y| {
                    order.push(y);
                    Ok(())
                })
                .unwrap();
            assert_eq!(buffer.len(), 0);
            order
        };
        let order = run(100, 1000, 0);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(order, sorted);
        // A row leaves at most `capacity` places before... it can only be
        // delayed, never moved ahead of rows read more than 100 later.
        assert!(order.iter().enumerate().all(|(at, &row)| row <= at + 100));
        assert_eq!(run(100, 1000, 0), order);
        assert_ne!(run(100, 1000, 1), order);
        // A buffer of one keeps file order; one larger than the data is a
        // full shuffle of it.
        assert_eq!(run(1, 50, 3), (0..50).collect::<Vec<_>>());
        let mut full = run(10_000, 50, 3);
        assert_ne!(full, (0..50).collect::<Vec<_>>());
        full.sort();
        assert_eq!(full, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn training_streams_more_than_one_read_batch_and_reopens_per_epoch() {
        let rows = 2 * BATCH_ROWS + 100;
        let data = blobs(rows);
        let bytes = bytes(&data);
        let hyper = HyperParams {
            epochs: 2,
            shuffle_buffer: 1000,
            ..HyperParams::default()
        };
        let mut opens = 0;
        let mut losses = Vec::new();
        let model = train(
            || {
                opens += 1;
                Ok(&bytes[..])
            },
            &hyper,
            |_, l| losses.push(l),
        )
        .unwrap();
        // One open per epoch and one for the final scores.
        assert_eq!(opens, 3);
        assert_eq!(model.train_rows, rows as u64);
        assert_eq!(model.train_accuracy, 1.0);
        assert_eq!(losses.len(), 2);
        assert!(losses[1] < losses[0], "{losses:?}");
    }

    #[test]
    fn a_truncated_dataset_fails_training_naming_the_byte_offset() {
        let bytes = bytes(&dataset(&[1.0, -1.0, 0.5], &["a", "b", "a"], 1));
        let cut = bytes.len() - 8;
        let err = train(|| Ok(&bytes[..cut]), &HyperParams::default(), |_, _| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "dataset at byte {cut}: the Arrow stream is truncated: it ends after 3 rows (batch 1) without its end-of-stream marker"
            )
        );
    }

    #[test]
    fn a_dataset_that_changes_between_epochs_is_refused() {
        let long = bytes(&dataset(&[1.0, -1.0, 0.5], &["a", "b", "a"], 1));
        let short = bytes(&dataset(&[1.0, -1.0], &["a", "b"], 1));
        let mut opens = 0;
        let err = train(
            || {
                opens += 1;
                Ok(if opens == 1 { &long[..] } else { &short[..] })
            },
            &HyperParams::default(),
            |_, _| {},
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the training dataset changed between passes: 3 rows, then 2"
        );
        let empty = bytes(&dataset(&[], &[], 1));
        let err = train(|| Ok(&empty[..]), &HyperParams::default(), |_, _| {}).unwrap_err();
        assert_eq!(err.to_string(), "training dataset has no classes");
        let mut no_rows = dataset(&[], &[], 1);
        no_rows.classes = vec!["a".into()];
        let err = fit(&no_rows, &HyperParams::default()).unwrap_err();
        assert_eq!(err.to_string(), "training dataset has no rows");
    }

    #[test]
    fn a_dataset_without_features_trains_the_class_prior() {
        let data = dataset(&[], &["a", "a", "a", "b"], 0);
        let model = fit(&data, &HyperParams::default()).unwrap();
        assert_eq!(model.weights, vec![Vec::<f64>::new(), Vec::new()]);
        assert!(model.bias[0] > model.bias[1], "{:?}", model.bias);
        assert_eq!(model.train_accuracy, 0.75);
        assert_eq!(Model::read(&json(&model)[..]).unwrap(), model);
    }

    #[test]
    fn model_round_trips_and_bad_shapes_are_rejected() {
        let data = dataset(&[1.0, -1.0], &["a", "b"], 1);
        let model = fit(&data, &HyperParams::default()).unwrap();
        let out = json(&model);
        assert_eq!(Model::read(&out[..]).unwrap(), model);

        let mut bad = model.clone();
        bad.weights.pop();
        let err = Model::read(&json(&bad)[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model: weights must be 2 × 1 and bias 2 long"
        );
    }

    #[test]
    fn a_model_written_before_minibatch_training_reads_with_the_default_settings() {
        let doc = br#"{"classes": ["a"], "features": [], "weights": [[]], "bias": [0.0],
            "hyper_params": {"learning_rate": 0.5, "epochs": 300, "l2": 0.0},
            "train_rows": 2, "train_loss": 0.0, "train_accuracy": 1.0}"#;
        let model = Model::read(&doc[..]).unwrap();
        assert_eq!(
            model.hyper_params,
            HyperParams {
                learning_rate: 0.5,
                epochs: 300,
                l2: 0.0,
                batch_size: 32,
                shuffle_buffer: 8192,
                seed: 0,
            }
        );
    }

    #[test]
    fn bad_hyper_params_and_divergence_are_reported() {
        let data = dataset(&[1.0, -1.0], &["a", "b"], 1);
        let bad = |hyper: HyperParams| fit(&data, &hyper).unwrap_err().to_string();
        let defaults = HyperParams::default();
        assert_eq!(
            bad(HyperParams {
                learning_rate: 0.0,
                ..defaults
            }),
            "learning_rate must be a positive number, got 0"
        );
        assert_eq!(
            bad(HyperParams {
                epochs: EPOCHS_MAX + 1,
                ..defaults
            }),
            format!(
                "epochs must be at most {EPOCHS_MAX}, got {}",
                EPOCHS_MAX + 1
            )
        );
        assert_eq!(
            bad(HyperParams {
                l2: -1.0,
                ..defaults
            }),
            "l2 must be a non-negative number, got -1"
        );
        assert_eq!(
            bad(HyperParams {
                batch_size: 0,
                ..defaults
            }),
            "batch_size must be at least 1, got 0"
        );
        assert_eq!(
            bad(HyperParams {
                shuffle_buffer: 0,
                ..defaults
            }),
            "shuffle_buffer must be at least 1 (1 keeps file order), got 0"
        );
        let wide = dataset(&vec![0.0; 1025], &["a"], 1025);
        assert_eq!(
            fit(&wide, &defaults).unwrap_err().to_string(),
            "shuffle_buffer 8192 × 1025 features is 8396800 values (limit 8388608); lower shuffle_buffer"
        );
        let huge = dataset(&[1e300, -1e300], &["a", "b"], 1);
        let err = fit(
            &huge,
            &HyperParams {
                learning_rate: 1e10,
                epochs: 5,
                batch_size: 1,
                ..defaults
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "training diverged in epoch 0 (loss is not finite); lower learning_rate"
        );
    }

    #[test]
    fn unknown_training_label_names_its_row() {
        let mut data = dataset(&[1.0, -1.0], &["a", "b"], 1);
        data.y[1] = "z".into();
        let err = fit(&data, &HyperParams::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dataset row 2: label `z` is not among the dataset's classes"
        );
    }

    #[test]
    fn any_model_reads_either_kind_and_scores_it() {
        use crate::mlp::{self, MlpParams};

        let data = dataset(&[1.0, -1.0], &["a", "b"], 1);
        let eval = bytes(&data);
        let softmax = fit(&data, &HyperParams::default()).unwrap();
        let doc = json(&softmax);
        let any = AnyModel::read(&doc[..]).unwrap();
        assert_eq!(any, AnyModel::Softmax(softmax.clone()));
        assert_eq!(any.kind(), "softmax_regression");
        assert_eq!(evaluate(&any, &eval[..]).unwrap().accuracy, 1.0);

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
        assert_eq!(evaluate(&any, &eval[..]).unwrap().accuracy, 1.0);
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
}

/// The example pipeline's data, `examples/data/penguins.csv`, made into
/// train and eval datasets the way `ingest` and `transform` do it (split by
/// the row-index hash with seed 0 and eval fraction 0.2; numbers
/// standardised with the training moments, missing → 0; strings one-hot in
/// sorted order, missing → all zeros), so the trainer's defaults can be
/// checked against the accuracy the pipeline needs without depending on
/// those modules.
#[cfg(test)]
pub(crate) mod penguins {
    use super::tests::bytes;
    use crate::evaluation::evaluate;
    use crate::mlp::SplitMix64;
    use crate::model::{HyperParams, train};
    use crate::transform::Dataset;

    const CSV: &str = include_str!("../../examples/data/penguins.csv");

    fn is_eval(split_seed: u64, index: u64) -> bool {
        let hash = SplitMix64::new(SplitMix64::new(split_seed).next_u64() ^ index).next_u64();
        ((hash >> 11) as f64 / (1u64 << 53) as f64) < 0.2
    }

    /// `(train, eval)` split with `split_seed` (the pipeline's is 0).
    pub(crate) fn datasets(split_seed: u64) -> (Dataset, Dataset) {
        let mut lines = CSV.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let rows: Vec<Vec<Option<&str>>> = lines
            .map(|l| {
                l.split(',')
                    .map(|f| Some(f.trim()).filter(|f| !f.is_empty() && *f != "NA"))
                    .collect()
            })
            .collect();
        let label = 0;
        let (mut train, mut eval) = (Vec::new(), Vec::new());
        for (i, row) in rows.iter().enumerate() {
            if row[label].is_some() {
                if is_eval(split_seed, i as u64) {
                    &mut eval
                } else {
                    &mut train
                }
                .push(row);
            }
        }
        let numeric: Vec<bool> = (0..header.len())
            .map(|c| {
                rows.iter()
                    .all(|r| r[c].is_none_or(|v| v.parse::<f64>().is_ok()))
            })
            .collect();
        // Per column: Ok((mean, std)) or Err(sorted categories).
        let mut features = Vec::new();
        let mut encoders = Vec::new();
        for c in (0..header.len()).filter(|&c| c != label) {
            if numeric[c] {
                let values: Vec<f64> = train
                    .iter()
                    .filter_map(|r| r[c].map(|v| v.parse::<f64>().unwrap()))
                    .collect();
                let n = values.len() as f64;
                let mean = values.iter().sum::<f64>() / n;
                let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let std = if var > 0.0 { var.sqrt() } else { 1.0 };
                features.push(header[c].to_owned());
                encoders.push((c, Ok((mean, std))));
            } else {
                let mut categories: Vec<&str> = train.iter().filter_map(|r| r[c]).collect();
                categories.sort();
                categories.dedup();
                features.extend(categories.iter().map(|v| format!("{}={v}", header[c])));
                encoders.push((c, Err(categories)));
            }
        }
        let mut classes: Vec<String> = train.iter().map(|r| r[label].unwrap().to_owned()).collect();
        classes.sort();
        classes.dedup();
        let encode = |rows: &[&Vec<Option<&str>>]| {
            let mut x = Vec::new();
            for row in rows {
                for (c, encoder) in &encoders {
                    match encoder {
                        Ok((mean, std)) => x.push(
                            row[*c].map_or(0.0, |v| (v.parse::<f64>().unwrap() - mean) / std),
                        ),
                        Err(categories) => x.extend(
                            categories
                                .iter()
                                .map(|k| if row[*c] == Some(k) { 1.0 } else { 0.0 }),
                        ),
                    }
                }
            }
            Dataset {
                features: features.clone(),
                classes: classes.clone(),
                x,
                y: rows.iter().map(|r| r[label].unwrap().to_owned()).collect(),
            }
        };
        (encode(&train), encode(&eval))
    }

    #[test]
    fn the_fixture_has_the_pipelines_shape() {
        let (train, eval) = datasets(0);
        assert_eq!((train.rows(), eval.rows()), (277, 67));
        assert_eq!(
            train.features,
            [
                "island=Biscoe",
                "island=Dream",
                "island=Torgersen",
                "bill_length_mm",
                "bill_depth_mm",
                "flipper_length_mm",
                "body_mass_g",
                "sex=female",
                "sex=male",
                "year"
            ]
        );
        assert_eq!(train.classes, ["Adelie", "Chinstrap", "Gentoo"]);
    }

    /// Eval accuracy of a model trained with `hyper` on split 0.
    fn eval_accuracy(hyper: &HyperParams) -> f64 {
        let (train_set, eval_set) = datasets(0);
        let (train_bytes, eval_bytes) = (bytes(&train_set), bytes(&eval_set));
        let model = train(|| Ok(&train_bytes[..]), hyper, |_, _| {}).unwrap();
        evaluate(&model, &eval_bytes[..]).unwrap().accuracy
    }

    #[test]
    fn the_defaults_and_the_recommended_pipeline_settings_classify_every_eval_penguin() {
        let defaults = HyperParams::default();
        assert_eq!(eval_accuracy(&defaults), 1.0);
        // The settings recommended for examples/pipelines/tabular.toml.
        let recommended = HyperParams {
            learning_rate: 0.5,
            epochs: 10,
            ..defaults
        };
        assert_eq!(eval_accuracy(&recommended), 1.0);
        // The pipeline's settings for full-batch descent still work.
        let before = HyperParams {
            learning_rate: 0.5,
            epochs: 300,
            ..defaults
        };
        assert_eq!(eval_accuracy(&before), 1.0);
    }
}
