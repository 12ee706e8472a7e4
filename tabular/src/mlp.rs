//! A multi-layer perceptron classifier: `hidden_layers` fully connected
//! ReLU layers of `width` units, then a linear layer to one logit per
//! class, softmax on top. Trained on a [`Dataset`] by mini-batch Adam on the
//! mean cross-entropy, in `f64`.
//!
//! This is the model of the worker op `train-mlp`
//! (`workers/PROTOCOL.md`): the CPU worker runs [`train`], the
//! PyTorch worker trains the same architecture and writes the same
//! document, and the `evaluate` step scores either (see
//! [`crate::model::AnyModel`]).
//!
//! Deterministic by construction: the weights start He-uniform
//! (`U(±√(6 / fan_in))`, biases 0) and each epoch visits the rows in a
//! Fisher–Yates shuffle, both drawn from one [`SplitMix64`] stream seeded by
//! the caller; arithmetic is sequential. The same seed, data and settings
//! give a bitwise-identical model on every platform, natively or in the
//! sandbox (`exp`/`ln` come from the `libm` crate, not the C library).
//!
//! The model (`model` output of `train-mlp`) is a JSON document:
//!
//! ```json
//! {"kind": "mlp", "features": ["bill_length_mm", …], "classes": ["Adelie", …],
//!  "activation": "relu",
//!  "layers": [{"weights": [[…one per input…], …one per unit…], "bias": […one per unit…]}, …],
//!  "hyper_params": {"hidden_layers": 2, "width": 32, "learning_rate": 0.01,
//!                   "epochs": 50, "batch_size": 32},
//!  "seed": 42, "train_rows": 277, "train_loss": 0.03, "train_accuracy": 0.99}
//! ```
//!
//! `layers[l].weights` is `outputs × inputs`, row-major; layer 0 reads the
//! features, the last layer writes the class logits, every other layer is
//! followed by `activation`. `train_loss` and `train_accuracy` are the
//! trained model's scores on the whole training set.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Classifier;
use crate::transform::Dataset;
use crate::{CLASSES_MAX, EPOCHS_MAX, Error, FEATURES_MAX, ROWS_MAX, Result};

/// The model kind recorded in the document.
pub const MLP_KIND: &str = "mlp";

/// The activation of every hidden layer.
pub const ACTIVATION: &str = "relu";

/// Most hidden layers: deeper plain ReLU stacks train poorly without
/// normalisation, which this model does not have.
pub const HIDDEN_LAYERS_MAX: u32 = 8;

/// Most units per hidden layer.
pub const WIDTH_MAX: u32 = 4096;

/// Largest mini-batch; one larger than the data is the whole data.
pub const BATCH_SIZE_MAX: u32 = ROWS_MAX as u32;

/// Most parameters (weights and biases): the document takes about 20 bytes
/// per parameter, and `evaluate` reads at most
/// [`crate::model::MODEL_BYTES_MAX`] of it.
pub const PARAMS_MAX: u64 = 10_000_000;

/// Adam's decay rates and denominator term, PyTorch's defaults.
const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPSILON: f64 = 1e-8;

/// Training settings: the `params` of the worker op `train-mlp`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpParams {
    /// Hidden layers, `0..=HIDDEN_LAYERS_MAX` (0 is softmax regression).
    pub hidden_layers: u32,
    /// Units per hidden layer, `1..=WIDTH_MAX`.
    pub width: u32,
    /// Adam's step size, finite and > 0.
    pub learning_rate: f64,
    /// Full passes over the data, `1..=EPOCHS_MAX`.
    pub epochs: u32,
    /// Rows per gradient step, `1..=BATCH_SIZE_MAX`.
    pub batch_size: u32,
}

impl Default for MlpParams {
    fn default() -> Self {
        MlpParams {
            hidden_layers: 2,
            width: 32,
            learning_rate: 0.01,
            epochs: 50,
            batch_size: 32,
        }
    }
}

impl MlpParams {
    /// Reads settings from a JSON object (the protocol's `params`); absent
    /// keys keep their defaults. Unknown keys, wrong types and out-of-range
    /// values are errors naming the parameter.
    pub fn from_json(params: &Value) -> Result<Self> {
        let Value::Object(map) = params else {
            return Err(Error::invalid(format!(
                "params must be a JSON object, got {params}"
            )));
        };
        let mut out = MlpParams::default();
        for (name, value) in map {
            match name.as_str() {
                "hidden_layers" => out.hidden_layers = json_u32(name, value)?,
                "width" => out.width = json_u32(name, value)?,
                "epochs" => out.epochs = json_u32(name, value)?,
                "batch_size" => out.batch_size = json_u32(name, value)?,
                "learning_rate" => {
                    out.learning_rate = value.as_f64().ok_or_else(|| {
                        Error::invalid(format!("learning_rate must be a number, got {value}"))
                    })?;
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown param `{name}` (expected hidden_layers, width, learning_rate, epochs or batch_size)"
                    )));
                }
            }
        }
        out.check()?;
        Ok(out)
    }

    /// The settings as the compact JSON object [`MlpParams::from_json`] reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain numbers serialize")
    }

    /// Checks every setting is within its range; the error names the first
    /// one that is not.
    pub fn check(&self) -> Result<()> {
        let range = |name: &str, value: u32, min: u32, max: u32| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{name} must be within {min}..={max}, got {value}"
                )))
            }
        };
        range("hidden_layers", self.hidden_layers, 0, HIDDEN_LAYERS_MAX)?;
        range("width", self.width, 1, WIDTH_MAX)?;
        range("epochs", self.epochs, 1, EPOCHS_MAX)?;
        range("batch_size", self.batch_size, 1, BATCH_SIZE_MAX)?;
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(Error::invalid(format!(
                "learning_rate must be a positive finite number, got {}",
                self.learning_rate
            )));
        }
        Ok(())
    }

    /// Layer sizes from input to output: `features, width × hidden_layers,
    /// classes`.
    pub fn layer_sizes(&self, features: usize, classes: usize) -> Vec<usize> {
        let mut sizes = vec![features];
        sizes.extend((0..self.hidden_layers).map(|_| self.width as usize));
        sizes.push(classes);
        sizes
    }

    /// Weights and biases of the network for `features` inputs and
    /// `classes` outputs.
    pub fn param_count(&self, features: usize, classes: usize) -> u64 {
        param_count(&self.layer_sizes(features, classes))
    }
}

fn json_u32(name: &str, value: &Value) -> Result<u32> {
    value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| {
            Error::invalid(format!(
                "{name} must be a non-negative integer, got {value}"
            ))
        })
}

fn param_count(sizes: &[usize]) -> u64 {
    sizes
        .windows(2)
        .map(|w| (w[0] as u64 + 1) * w[1] as u64)
        .sum()
}

/// What [`train`] reports besides the model: the `metrics` of a `train-mlp`
/// result, minus the worker's timing. Also how the `train-gpu` step reads
/// a worker's metrics back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainMetrics {
    /// Mean training loss of each epoch, over its mini-batches.
    pub loss: Vec<f64>,
    /// The trained model's loss on the whole training set.
    pub final_loss: f64,
    /// The trained model's accuracy on the whole training set.
    pub train_accuracy: f64,
    /// Training rows processed per second of training wall time.
    pub samples_per_s: f64,
    /// Training FLOPs: 6 × parameters × rows × epochs.
    pub model_flops: f64,
    /// Weights and biases.
    pub params: u64,
}

impl TrainMetrics {
    /// Parses a worker's `metrics` JSON object.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::Document {
            what: "train-mlp metrics",
            message: e.to_string(),
        })
    }
}

/// Training FLOPs of a dense network: 6 per parameter per row (2 forward,
/// 4 backward), the usual estimate.
pub fn model_flops(params: u64, rows: u64, epochs: u32) -> f64 {
    6.0 * params as f64 * rows as f64 * f64::from(epochs)
}

/// One fully connected layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// `outputs × inputs`, row-major.
    pub weights: Vec<Vec<f64>>,
    /// One per output.
    pub bias: Vec<f64>,
}

/// A trained multi-layer perceptron.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mlp {
    /// Always [`MLP_KIND`].
    pub kind: String,
    /// Feature names, in input order.
    pub features: Vec<String>,
    /// Class names; class `c` is output `c` of the last layer.
    pub classes: Vec<String>,
    /// The hidden layers' activation, always [`ACTIVATION`].
    pub activation: String,
    /// Input to output.
    pub layers: Vec<Layer>,
    /// The settings it was trained with.
    pub hyper_params: MlpParams,
    /// The seed of its initialisation and shuffles.
    pub seed: u64,
    /// Training rows.
    pub train_rows: u64,
    /// Loss on the training data after training.
    pub train_loss: f64,
    /// Accuracy on the training data after training.
    pub train_accuracy: f64,
}

/// A small, fast, well-mixed 64-bit generator (Steele, Lea & Flood 2014),
/// written out so initialisation and shuffles are identical everywhere.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` for `n > 0` by multiply-shift (bias below
    /// `n / 2^64`, irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// The network as training sees it: every parameter in one vector (per
/// layer its `outputs × inputs` weights, then its biases), so Adam is one
/// loop.
struct Net {
    sizes: Vec<usize>,
    /// Offset of each layer's weights in `params`; its biases follow them.
    offsets: Vec<usize>,
    params: Vec<f64>,
}

/// Per-row working memory of forward and backward passes.
struct Scratch {
    /// `acts[0]` is the input, `acts[l + 1]` layer `l`'s output (after ReLU
    /// for hidden layers; the logits for the last).
    acts: Vec<Vec<f64>>,
    delta: Vec<f64>,
    delta_prev: Vec<f64>,
}

impl Net {
    fn new(sizes: Vec<usize>) -> Self {
        let mut offsets = Vec::with_capacity(sizes.len() - 1);
        let mut total = 0;
        for w in sizes.windows(2) {
            offsets.push(total);
            total += (w[0] + 1) * w[1];
        }
        Net {
            sizes,
            offsets,
            params: vec![0.0; total],
        }
    }

    fn layers(&self) -> usize {
        self.offsets.len()
    }

    /// Layer `l`'s (inputs, outputs, weights offset, biases offset).
    fn shape(&self, l: usize) -> (usize, usize, usize, usize) {
        let (n_in, n_out) = (self.sizes[l], self.sizes[l + 1]);
        let w = self.offsets[l];
        (n_in, n_out, w, w + n_in * n_out)
    }

    /// He-uniform weights, zero biases, in layer order.
    fn init(&mut self, rng: &mut SplitMix64) {
        for l in 0..self.layers() {
            let (n_in, n_out, w, _) = self.shape(l);
            let limit = (6.0 / n_in.max(1) as f64).sqrt();
            for p in &mut self.params[w..w + n_in * n_out] {
                *p = (2.0 * rng.next_f64() - 1.0) * limit;
            }
        }
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            acts: self.sizes.iter().map(|&n| vec![0.0; n]).collect(),
            delta: Vec::with_capacity(self.sizes.iter().copied().max().unwrap_or(0)),
            delta_prev: Vec::with_capacity(self.sizes.iter().copied().max().unwrap_or(0)),
        }
    }

    /// Fills `s.acts` for input `x`; the logits end up in the last one.
    fn forward(&self, x: &[f64], s: &mut Scratch) {
        s.acts[0].copy_from_slice(x);
        let last = self.layers() - 1;
        for l in 0..self.layers() {
            let (n_in, _, w, b) = self.shape(l);
            let (before, after) = s.acts.split_at_mut(l + 1);
            let input = &before[l];
            for (o, out) in after[0].iter_mut().enumerate() {
                let row = &self.params[w + o * n_in..w + (o + 1) * n_in];
                let z = self.params[b + o] + row.iter().zip(input).map(|(w, x)| w * x).sum::<f64>();
                *out = if l < last { z.max(0.0) } else { z };
            }
        }
    }

    /// Forward and backward for one row of class `label`: adds the
    /// cross-entropy's gradient to `grad` and returns (loss, predicted class).
    fn backward(&self, x: &[f64], label: usize, s: &mut Scratch, grad: &mut [f64]) -> (f64, usize) {
        self.forward(x, s);
        let logits = &s.acts[self.layers()];
        let (loss, best) = softmax_into(logits, label, &mut s.delta);
        // delta = softmax - onehot(label): the gradient at the logits.
        s.delta[label] -= 1.0;
        for l in (0..self.layers()).rev() {
            let (n_in, _, w, b) = self.shape(l);
            let input = &s.acts[l];
            for (o, d) in s.delta.iter().enumerate() {
                grad[b + o] += d;
                for (g, x) in grad[w + o * n_in..w + (o + 1) * n_in].iter_mut().zip(input) {
                    *g += d * x;
                }
            }
            if l > 0 {
                s.delta_prev.clear();
                s.delta_prev.resize(n_in, 0.0);
                for (o, d) in s.delta.iter().enumerate() {
                    let row = &self.params[w + o * n_in..w + (o + 1) * n_in];
                    for (dp, w) in s.delta_prev.iter_mut().zip(row) {
                        *dp += w * d;
                    }
                }
                // ReLU passes the gradient only where it was active.
                for (dp, a) in s.delta_prev.iter_mut().zip(input) {
                    if *a <= 0.0 {
                        *dp = 0.0;
                    }
                }
                std::mem::swap(&mut s.delta, &mut s.delta_prev);
            }
        }
        (loss, best)
    }

    fn into_layers(self) -> Vec<Layer> {
        (0..self.layers())
            .map(|l| {
                let (n_in, n_out, w, b) = self.shape(l);
                Layer {
                    weights: (0..n_out)
                        .map(|o| self.params[w + o * n_in..w + (o + 1) * n_in].to_vec())
                        .collect(),
                    bias: self.params[b..b + n_out].to_vec(),
                }
            })
            .collect()
    }
}

/// Writes `softmax(logits)` into `probs` and returns the cross-entropy of
/// `label` and the most likely class (the first on ties).
fn softmax_into(logits: &[f64], label: usize, probs: &mut Vec<f64>) -> (f64, usize) {
    let best = argmax(logits);
    // Shifted by the largest logit so exp never overflows;
    // -ln p(label) = ln Σ exp(z - max) - (z_label - max).
    let max = logits[best];
    probs.clear();
    probs.extend(logits.iter().map(|z| libm::exp(z - max)));
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    (libm::log(sum) - (logits[label] - max), best)
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

/// Adam's moment estimates and step count.
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    /// `β₁ᵗ` and `β₂ᵗ`, kept as running products (exact and cheap).
    beta1_t: f64,
    beta2_t: f64,
}

impl Adam {
    fn new(params: usize) -> Self {
        Adam {
            m: vec![0.0; params],
            v: vec![0.0; params],
            beta1_t: 1.0,
            beta2_t: 1.0,
        }
    }

    /// One step on `params` with the mean gradient `grad` (PyTorch's
    /// arrangement of the bias corrections).
    fn step(&mut self, params: &mut [f64], grad: &[f64], learning_rate: f64) {
        self.beta1_t *= ADAM_BETA1;
        self.beta2_t *= ADAM_BETA2;
        let step_size = learning_rate / (1.0 - self.beta1_t);
        let correction2 = (1.0 - self.beta2_t).sqrt();
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grad)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = ADAM_BETA1 * *m + (1.0 - ADAM_BETA1) * g;
            *v = ADAM_BETA2 * *v + (1.0 - ADAM_BETA2) * g * g;
            *p -= step_size * *m / (v.sqrt() / correction2 + ADAM_EPSILON);
        }
    }
}

/// Trains on `data` with `params`, initialising and shuffling from `seed`.
///
/// Calls `on_epoch(epoch, loss)` after each epoch (0-based) with its mean
/// training loss, and `stop()` before every mini-batch: when it returns
/// true training ends with [`Error::Stopped`]. A non-finite epoch loss ends
/// it with an error suggesting a lower `learning_rate`.
pub fn train(
    data: &Dataset,
    params: &MlpParams,
    seed: u64,
    mut on_epoch: impl FnMut(u32, f64),
    stop: &dyn Fn() -> bool,
) -> Result<Mlp> {
    params.check()?;
    data.check()?;
    let n = data.rows();
    if n == 0 {
        return Err(Error::invalid("training dataset has no rows"));
    }
    let (d, k) = (data.features.len(), data.classes.len());
    if k == 0 {
        return Err(Error::invalid("training dataset has no classes"));
    }
    let sizes = params.layer_sizes(d, k);
    let count = param_count(&sizes);
    if count > PARAMS_MAX {
        return Err(Error::invalid(format!(
            "the network would have {count} parameters (limit {PARAMS_MAX}); lower width or hidden_layers"
        )));
    }
    let y = crate::model::class_indices(data)?;

    let mut rng = SplitMix64::new(seed);
    let mut net = Net::new(sizes);
    net.init(&mut rng);
    let mut adam = Adam::new(net.params.len());
    let mut grad = vec![0.0; net.params.len()];
    let mut scratch = net.scratch();
    let mut order: Vec<usize> = (0..n).collect();
    let batch_size = (params.batch_size as usize).min(n);

    for epoch in 0..params.epochs {
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut loss_sum = 0.0;
        for batch in order.chunks(batch_size) {
            if stop() {
                return Err(Error::Stopped {
                    epoch,
                    epochs: params.epochs,
                });
            }
            grad.fill(0.0);
            for &i in batch {
                loss_sum += net.backward(data.row(i), y[i], &mut scratch, &mut grad).0;
            }
            let scale = 1.0 / batch.len() as f64;
            grad.iter_mut().for_each(|g| *g *= scale);
            adam.step(&mut net.params, &grad, params.learning_rate);
        }
        let loss = loss_sum / n as f64;
        if !loss.is_finite() {
            return Err(Error::invalid(format!(
                "training diverged in epoch {epoch} (loss is not finite); lower learning_rate"
            )));
        }
        on_epoch(epoch, loss);
    }

    // The trained model's scores on the whole training set.
    let mut loss_sum = 0.0;
    let mut correct = 0usize;
    for (i, &label) in y.iter().enumerate() {
        net.forward(data.row(i), &mut scratch);
        let (loss, best) = softmax_into(&scratch.acts[net.layers()], label, &mut scratch.delta);
        loss_sum += loss;
        correct += usize::from(best == label);
    }
    let train_loss = loss_sum / n as f64;
    if !train_loss.is_finite() {
        return Err(Error::invalid(
            "training diverged (final loss is not finite); lower learning_rate",
        ));
    }
    Ok(Mlp {
        kind: MLP_KIND.to_owned(),
        features: data.features.clone(),
        classes: data.classes.clone(),
        activation: ACTIVATION.to_owned(),
        layers: net.into_layers(),
        hyper_params: *params,
        seed,
        train_rows: n as u64,
        train_loss,
        train_accuracy: correct as f64 / n as f64,
    })
}

impl Mlp {
    /// Reads a model document and checks its shape.
    pub fn read(reader: impl Read) -> Result<Self> {
        Self::from_slice(&crate::model::read_document(reader)?)
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self> {
        let model: Mlp = serde_json::from_slice(bytes)
            .map_err(|e| crate::model::document_error(e.to_string()))?;
        model.check()?;
        Ok(model)
    }

    fn check(&self) -> Result<()> {
        let fail = |message: String| Err(crate::model::document_error(message));
        if self.kind != MLP_KIND {
            return fail(format!("kind is `{}`, expected `{MLP_KIND}`", self.kind));
        }
        if self.activation != ACTIVATION {
            return fail(format!(
                "activation is `{}`, expected `{ACTIVATION}`",
                self.activation
            ));
        }
        let (k, d) = (self.classes.len(), self.features.len());
        if k == 0 || k > CLASSES_MAX || d > FEATURES_MAX {
            return fail(format!(
                "{k} classes and {d} features; expected 1..={CLASSES_MAX} and at most {FEATURES_MAX}"
            ));
        }
        if self.layers.is_empty() || self.layers.len() > HIDDEN_LAYERS_MAX as usize + 1 {
            return fail(format!(
                "{} layers; expected 1..={}",
                self.layers.len(),
                HIDDEN_LAYERS_MAX + 1
            ));
        }
        let mut inputs = d;
        for (l, layer) in self.layers.iter().enumerate() {
            let outputs = if l + 1 == self.layers.len() {
                k
            } else {
                layer.bias.len()
            };
            if outputs == 0
                || layer.weights.len() != outputs
                || layer.bias.len() != outputs
                || layer.weights.iter().any(|row| row.len() != inputs)
            {
                return fail(format!(
                    "layer {l} must have {outputs} × {inputs} weights and {outputs} biases, one per unit"
                ));
            }
            inputs = outputs;
        }
        Ok(())
    }

    /// Writes the model as a JSON document.
    pub fn write(&self, out: impl Write) -> Result<()> {
        crate::write_json_document(out, self)
    }

    /// Weights and biases.
    pub fn param_count(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| (l.weights.len() * (l.weights.first().map_or(0, Vec::len) + 1)) as u64)
            .sum()
    }

    /// The class logits for features `x`.
    pub fn logits(&self, x: &[f64]) -> Vec<f64> {
        let last = self.layers.len().saturating_sub(1);
        let mut input = x.to_vec();
        for (l, layer) in self.layers.iter().enumerate() {
            input = layer
                .weights
                .iter()
                .zip(&layer.bias)
                .map(|(row, b)| {
                    let z = b + row.iter().zip(&input).map(|(w, x)| w * x).sum::<f64>();
                    if l < last { z.max(0.0) } else { z }
                })
                .collect();
        }
        input
    }

    /// The index of the most likely class for features `x` (the first
    /// class on ties).
    pub fn predict(&self, x: &[f64]) -> usize {
        argmax(&self.logits(x))
    }
}

impl Classifier for Mlp {
    fn features(&self) -> &[String] {
        &self.features
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn predict(&self, x: &[f64]) -> usize {
        Mlp::predict(self, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::dataset;
    use serde_json::json;

    /// Three separable classes in two features.
    fn blobs() -> Dataset {
        dataset(
            &[
                1.0, 0.0, 0.9, 0.1, 1.1, -0.1, 0.0, 1.0, 0.1, 0.9, -0.1, 1.1, -1.0, -1.0, -0.9,
                -1.1, -1.1, -0.9,
            ],
            &["a", "a", "a", "b", "b", "b", "c", "c", "c"],
            2,
        )
    }

    fn params(hidden_layers: u32, width: u32, epochs: u32) -> MlpParams {
        MlpParams {
            hidden_layers,
            width,
            learning_rate: 0.05,
            epochs,
            batch_size: 4,
        }
    }

    fn never() -> bool {
        false
    }

    fn bytes(model: &Mlp) -> Vec<u8> {
        let mut out = Vec::new();
        model.write(&mut out).unwrap();
        out
    }

    #[test]
    fn layer_shapes_and_parameter_count_are_exact() {
        let data = dataset(&[1.0, 2.0, 3.0, -1.0, -2.0, -3.0], &["a", "b"], 3);
        let p = params(2, 4, 1);
        assert_eq!(p.layer_sizes(3, 2), [3, 4, 4, 2]);
        // (3 + 1) · 4 + (4 + 1) · 4 + (4 + 1) · 2
        assert_eq!(p.param_count(3, 2), 46);
        let model = train(&data, &p, 7, |_, _| {}, &never).unwrap();
        let shapes: Vec<(usize, usize, usize)> = model
            .layers
            .iter()
            .map(|l| (l.weights.len(), l.weights[0].len(), l.bias.len()))
            .collect();
        assert_eq!(shapes, [(4, 3, 4), (4, 4, 4), (2, 4, 2)]);
        assert_eq!(model.param_count(), 46);
        assert_eq!(
            (model.kind.as_str(), model.activation.as_str()),
            ("mlp", "relu")
        );
        assert_eq!((model.seed, model.train_rows), (7, 2));
        assert_eq!(model.hyper_params, p);
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // The published SplitMix64 outputs for seed 1234567.
        let mut rng = SplitMix64::new(1234567);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn first_adam_step_moves_every_parameter_by_the_learning_rate() {
        // One row, one feature, no hidden layer: two logits w·x + b.
        let mut data = dataset(&[1.0], &["a"], 1);
        data.classes = vec!["a".into(), "b".into()];
        let p = MlpParams {
            hidden_layers: 0,
            width: 1,
            learning_rate: 0.1,
            epochs: 1,
            batch_size: 1,
        };
        let model = train(&data, &p, 99, |_, _| {}, &never).unwrap();
        let mut rng = SplitMix64::new(99);
        let limit = 6f64.sqrt();
        let w0 = (2.0 * rng.next_f64() - 1.0) * limit;
        let w1 = (2.0 * rng.next_f64() - 1.0) * limit;
        // Adam's first step is lr · g / (|g| + ε), lr to within ε / |g|:
        // the gradient pushes the true class's logit up and the other down.
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        let layer = &model.layers[0];
        assert!(close(layer.weights[0][0], w0 + 0.1), "{layer:?}");
        assert!(close(layer.weights[1][0], w1 - 0.1), "{layer:?}");
        assert!(
            close(layer.bias[0], 0.1) && close(layer.bias[1], -0.1),
            "{layer:?}"
        );
    }

    #[test]
    fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
        let data = blobs();
        let p = params(2, 8, 30);
        let mut losses = Vec::new();
        let a = train(&data, &p, 1, |e, l| losses.push((e, l)), &never).unwrap();
        let b = train(&data, &p, 1, |_, _| {}, &never).unwrap();
        let c = train(&data, &p, 2, |_, _| {}, &never).unwrap();
        assert_eq!(bytes(&a), bytes(&b));
        assert_ne!(bytes(&a), bytes(&c));
        assert_eq!(
            losses.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
            (0..30).collect::<Vec<_>>()
        );
        assert!(losses[29].1 < losses[0].1 / 2.0, "{losses:?}");
        assert_eq!(a.train_accuracy, 1.0);
        for (i, label) in data.y.iter().enumerate() {
            assert_eq!(&a.classes[a.predict(data.row(i))], label);
        }
    }

    #[test]
    fn model_round_trips_through_its_document() {
        let model = train(&blobs(), &params(1, 5, 3), 3, |_, _| {}, &never).unwrap();
        let out = bytes(&model);
        let read = Mlp::read(&out[..]).unwrap();
        assert_eq!(read, model);
        assert_eq!(bytes(&read), out);
        let value: Value = serde_json::from_slice(&out).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "activation",
                "classes",
                "features",
                "hyper_params",
                "kind",
                "layers",
                "seed",
                "train_accuracy",
                "train_loss",
                "train_rows"
            ]
        );
        assert_eq!(
            value["hyper_params"],
            json!({"hidden_layers": 1, "width": 5, "learning_rate": 0.05, "epochs": 3, "batch_size": 4})
        );
    }

    #[test]
    fn misshapen_documents_are_rejected_naming_the_part() {
        let model = train(&blobs(), &params(1, 5, 1), 3, |_, _| {}, &never).unwrap();
        let err = |edit: &dyn Fn(&mut Mlp)| {
            let mut bad = model.clone();
            edit(&mut bad);
            Mlp::read(&bytes(&bad)[..]).unwrap_err().to_string()
        };
        assert_eq!(
            err(&|m| m.layers[1].weights[0].push(0.0)),
            "model: layer 1 must have 3 × 5 weights and 3 biases, one per unit"
        );
        assert_eq!(
            err(&|m| {
                m.layers[0].bias.pop();
            }),
            "model: layer 0 must have 4 × 2 weights and 4 biases, one per unit"
        );
        assert_eq!(
            err(&|m| m.activation = "tanh".into()),
            "model: activation is `tanh`, expected `relu`"
        );
        assert_eq!(
            err(&|m| m.layers.clear()),
            "model: 0 layers; expected 1..=9"
        );
        assert_eq!(
            Mlp::read(&b"{\"kind\":\"mlp\"}"[..])
                .unwrap_err()
                .to_string(),
            "model: missing field `features` at line 1 column 14"
        );
    }

    #[test]
    fn params_are_read_from_json_and_errors_name_the_param() {
        assert_eq!(
            MlpParams::from_json(&json!({})).unwrap(),
            MlpParams::default()
        );
        let p = MlpParams::from_json(&json!({"hidden_layers": 0, "width": 4096,
            "learning_rate": 1, "epochs": 100000, "batch_size": 1}))
        .unwrap();
        assert_eq!(
            p,
            MlpParams {
                hidden_layers: 0,
                width: 4096,
                learning_rate: 1.0,
                epochs: 100_000,
                batch_size: 1
            }
        );
        assert_eq!(
            MlpParams::from_json(&serde_json::from_str(&p.to_json()).unwrap()).unwrap(),
            p
        );
        let err = |v: Value| MlpParams::from_json(&v).unwrap_err().to_string();
        assert_eq!(
            err(json!({"hidden_layers": 9})),
            "hidden_layers must be within 0..=8, got 9"
        );
        assert_eq!(
            err(json!({"width": 0})),
            "width must be within 1..=4096, got 0"
        );
        assert_eq!(
            err(json!({"width": 4097})),
            "width must be within 1..=4096, got 4097"
        );
        assert_eq!(
            err(json!({"epochs": 0})),
            "epochs must be within 1..=100000, got 0"
        );
        assert_eq!(
            err(json!({"epochs": 100001})),
            "epochs must be within 1..=100000, got 100001"
        );
        assert_eq!(
            err(json!({"batch_size": 0})),
            "batch_size must be within 1..=1000000, got 0"
        );
        assert_eq!(
            err(json!({"learning_rate": 0})),
            "learning_rate must be a positive finite number, got 0"
        );
        assert_eq!(
            err(json!({"learning_rate": -0.5})),
            "learning_rate must be a positive finite number, got -0.5"
        );
        assert_eq!(
            err(json!({"learning_rate": "fast"})),
            "learning_rate must be a number, got \"fast\""
        );
        assert_eq!(
            err(json!({"width": 2.5})),
            "width must be a non-negative integer, got 2.5"
        );
        assert_eq!(
            err(json!({"width": -1})),
            "width must be a non-negative integer, got -1"
        );
        assert_eq!(
            err(json!({"dropout": 0.1})),
            "unknown param `dropout` (expected hidden_layers, width, learning_rate, epochs or batch_size)"
        );
        assert_eq!(err(json!([1])), "params must be a JSON object, got [1]");
        let nan = MlpParams {
            learning_rate: f64::NAN,
            ..MlpParams::default()
        };
        assert_eq!(
            train(&blobs(), &nan, 0, |_, _| {}, &never)
                .unwrap_err()
                .to_string(),
            "learning_rate must be a positive finite number, got NaN"
        );
    }

    #[test]
    fn oversized_networks_and_empty_data_are_rejected() {
        let err = train(&blobs(), &params(8, 4096, 1), 0, |_, _| {}, &never).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the network would have 117493763 parameters (limit 10000000); lower width or hidden_layers"
        );
        let empty = dataset(&[], &[], 2);
        assert_eq!(
            train(&empty, &params(1, 2, 1), 0, |_, _| {}, &never)
                .unwrap_err()
                .to_string(),
            "training dataset has no rows"
        );
    }

    #[test]
    fn stop_ends_training_in_the_epoch_it_fires() {
        // 9 rows in batches of 4: 3 batches an epoch; the 8th check is the
        // second batch of epoch 3 (1-based).
        let calls = std::cell::Cell::new(0);
        let stop = || {
            calls.set(calls.get() + 1);
            calls.get() == 8
        };
        let mut epochs = Vec::new();
        let err = train(&blobs(), &params(1, 4, 10), 0, |e, _| epochs.push(e), &stop).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Stopped {
                    epoch: 2,
                    epochs: 10
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "training stopped in epoch 3 of 10");
        assert_eq!(epochs, [0, 1]);
    }

    #[test]
    fn divergence_is_reported() {
        let huge = dataset(&[1e300, -1e300], &["a", "b"], 1);
        let p = MlpParams {
            learning_rate: 1e300,
            ..params(1, 4, 5)
        };
        let err = train(&huge, &p, 0, |_, _| {}, &never).unwrap_err();
        assert!(
            err.to_string().starts_with("training diverged in epoch "),
            "{err}"
        );
    }

    #[test]
    fn train_metrics_parse_a_worker_result() {
        let metrics = TrainMetrics::from_json(
            r#"{"loss":[0.9,0.5],"final_loss":0.4,"train_accuracy":0.75,"samples_per_s":1e3,
                "model_flops":1.2e9,"params":46,"extra":"ignored"}"#,
        )
        .unwrap();
        assert_eq!(metrics.loss, [0.9, 0.5]);
        assert_eq!((metrics.params, metrics.model_flops), (46, 1.2e9));
        assert_eq!(model_flops(46, 100, 3), 82_800.0);
        assert_eq!(
            TrainMetrics::from_json("{}").unwrap_err().to_string(),
            "train-mlp metrics: missing field `loss` at line 1 column 2"
        );
    }
}
