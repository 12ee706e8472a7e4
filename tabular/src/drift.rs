//! Data drift: how far a *current* examples file has moved from a
//! *reference* one, feature by feature (every column but the label).
//!
//! Report (`report` output):
//!
//! ```json
//! {"bins": 10, "thresholds": {"psi": 0.2, "ks": 0.3, "js": 0.3},
//!  "reference_rows": 277, "current_rows": 277,
//!  "features": [
//!   {"name": "island", "type": "string", "psi": 0.03, "js": 0.08,
//!    "reference_count": 277, "current_count": 277,
//!    "reference_missing": 0, "current_missing": 0, "drifted": false},
//!   {"name": "body_mass_g", "type": "number", "psi": 2.1, "ks": 0.45,
//!    "bin_edges": [3300.0, 3550.0, …],
//!    "reference_count": 275, "current_count": 275,
//!    "reference_missing": 2, "current_missing": 2, "drifted": true}],
//!  "summary": {"features": 7, "drifted_features": ["body_mass_g"],
//!              "max_psi": 2.1, "max_ks": 0.45, "max_js": 0.08}}
//! ```
//!
//! # The statistics
//!
//! - **PSI**, the population stability index, for every feature:
//!   `Σ (cur% − ref%) · ln(cur% / ref%)` over bins. A number column is cut
//!   into [`DriftOptions::bins`] bins at the *reference* sample's quantiles
//!   ([`bin_edges`]); the edges are reported so the bins can be reproduced.
//!   A string column's bins are the union of both samples' categories.
//!   Each share is floored at [`EPSILON`], so a bin that is empty on one
//!   side adds a large but finite term instead of an infinite one.
//! - **KS**, the two-sample Kolmogorov–Smirnov statistic, for number
//!   columns: `D = sup |F_ref(x) − F_cur(x)|` over the empirical CDFs,
//!   exact ([`ks_statistic`]).
//! - **JS**, the Jensen–Shannon *distance*, for string columns: the square
//!   root of the JS divergence computed with base-2 logarithms, so it lies
//!   in `[0, 1]` (0: same frequencies; 1: no category in common)
//!   ([`js_distance`]).
//!
//! **Missing values** (`null`) are left out of a number column's
//! statistics (its `*_count` counts values, its `*_missing` the rest) and
//! are a category of their own, [`MISSING_CATEGORY`], in a string column's
//! (whose `*_count` counts every row); a real value spelt `<missing>` is
//! counted with them. A feature with values in one sample and none in the
//! other has KS or JS 1; with values in neither, 0.
//!
//! A feature has **drifted** when its PSI exceeds the PSI threshold, or
//! its KS (number) or JS (string) exceeds its own threshold.
//!
//! Columns are matched by name; every reference column must be in the
//! current examples, with the same type unless one side has no values in
//! it (ingest calls an all-missing column a number column). Current
//! columns the reference lacks are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};

use serde::Serialize;

use crate::example::{ColumnType, Examples, Value};
use crate::{Error, Result};

/// Bins per number column unless told otherwise; the usual choice for PSI.
pub const DEFAULT_BINS: usize = 10;

/// Most bins per number column: the edges are written into the report,
/// and with more bins than this each bin's share of a sample of ordinary
/// size is noise.
pub const BINS_MAX: usize = 1_000;

/// Smallest share of a sample a PSI bin is given, so that an empty bin
/// contributes a finite term.
pub const EPSILON: f64 = 1e-4;

/// The category missing values of a string column are counted as.
pub const MISSING_CATEGORY: &str = "<missing>";

/// When a feature counts as drifted: any statistic strictly above its
/// threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Thresholds {
    /// PSI threshold, for every feature; default `0.2` (the usual "major
    /// shift" line).
    pub psi: f64,
    /// KS threshold, for number features; default `0.3`.
    pub ks: f64,
    /// JS distance threshold, for string features; default `0.3`.
    pub js: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            psi: 0.2,
            ks: 0.3,
            js: 0.3,
        }
    }
}

/// What [`Drift::compare`] needs to know.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftOptions {
    /// When a feature counts as drifted.
    pub thresholds: Thresholds,
    /// Bins per number column, in `[2, BINS_MAX]`; fewer when reference
    /// quantiles coincide.
    pub bins: usize,
}

impl Default for DriftOptions {
    fn default() -> Self {
        DriftOptions {
            thresholds: Thresholds::default(),
            bins: DEFAULT_BINS,
        }
    }
}

impl DriftOptions {
    /// Checks the thresholds are non-negative numbers and `bins` in range.
    pub fn check(&self) -> Result<()> {
        let Thresholds { psi, ks, js } = self.thresholds;
        for (name, value) in [
            ("psi_threshold", psi),
            ("ks_threshold", ks),
            ("js_threshold", js),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::invalid(format!(
                    "{name} must be a non-negative number, got {value}"
                )));
            }
        }
        if !(2..=BINS_MAX).contains(&self.bins) {
            return Err(Error::invalid(format!(
                "bins must be within [2, {BINS_MAX}], got {}",
                self.bins
            )));
        }
        Ok(())
    }
}

/// The drift of one feature.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DriftReport {
    /// The column name.
    pub name: String,
    /// The column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Population stability index.
    pub psi: f64,
    /// The type-specific statistic, serialised inline.
    #[serde(flatten)]
    pub measure: Measure,
    /// Reference values the statistics used: non-missing values of a
    /// number column, every row of a string column.
    pub reference_count: u64,
    /// Current values the statistics used, counted the same way.
    pub current_count: u64,
    /// Reference rows where the column is missing.
    pub reference_missing: u64,
    /// Current rows where the column is missing.
    pub current_missing: u64,
    /// Whether any statistic exceeds its threshold.
    pub drifted: bool,
}

/// The type-specific part of a [`DriftReport`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Measure {
    /// A number column.
    Number {
        /// Kolmogorov–Smirnov statistic.
        ks: f64,
        /// The PSI bin edges, from the reference sample's quantiles. Bin
        /// `i` holds `bin_edges[i-1] < x <= bin_edges[i]`; the first and
        /// last bins are open-ended.
        bin_edges: Vec<f64>,
    },
    /// A string column.
    String {
        /// Jensen–Shannon distance (base 2).
        js: f64,
    },
}

/// The whole report: one [`DriftReport`] per feature and a summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Drift {
    /// Bins asked for per number column.
    pub bins: usize,
    /// The thresholds applied.
    pub thresholds: Thresholds,
    /// Rows in the reference examples.
    pub reference_rows: u64,
    /// Rows in the current examples.
    pub current_rows: u64,
    /// One per reference column but the label, in reference column order.
    pub features: Vec<DriftReport>,
    /// Counts and maxima over the features.
    pub summary: DriftSummary,
}

/// The summary of a [`Drift`] report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DriftSummary {
    /// Features compared.
    pub features: u64,
    /// Names of the drifted features, in feature order.
    pub drifted_features: Vec<String>,
    /// Largest PSI; `0` without features.
    pub max_psi: f64,
    /// Largest KS over number features; `0` without any.
    pub max_ks: f64,
    /// Largest JS distance over string features; `0` without any.
    pub max_js: f64,
}

impl Drift {
    /// Compares `current` to `reference`, feature by feature.
    pub fn compare(
        reference: &Examples,
        current: &Examples,
        options: &DriftOptions,
    ) -> Result<Self> {
        options.check()?;
        reference.check()?;
        current.check()?;
        if reference.schema.label != current.schema.label {
            return Err(Error::invalid(format!(
                "the reference label is `{}` but the current label is `{}`",
                reference.schema.label, current.schema.label
            )));
        }
        for (what, examples) in [("reference", reference), ("current", current)] {
            if examples.rows.is_empty() {
                return Err(Error::invalid(format!(
                    "the {what} examples have no rows: nothing to compare"
                )));
            }
        }

        let mut features = Vec::new();
        for (r, column) in reference.schema.columns.iter().enumerate() {
            if column.name == reference.schema.label {
                continue;
            }
            let c = current.schema.index_of(&column.name).ok_or_else(|| {
                Error::invalid(format!(
                    "column `{}` of the reference examples is not in the current examples",
                    column.name
                ))
            })?;
            let ref_values = column_values(reference, r);
            let cur_values = column_values(current, c);
            let has_values = |values: &[&Value]| values.iter().any(|v| !v.is_missing());
            let cur_ty = current.schema.columns[c].ty;
            let ty = if column.ty == cur_ty || !has_values(&cur_values) {
                column.ty
            } else if !has_values(&ref_values) {
                cur_ty
            } else {
                return Err(Error::invalid(format!(
                    "column `{}` is a {} column in the reference examples but a {} column in the current examples",
                    column.name,
                    column.ty.name(),
                    cur_ty.name()
                )));
            };
            features.push(feature_drift(
                &column.name,
                ty,
                &ref_values,
                &cur_values,
                options,
            ));
        }

        let max =
            |f: fn(&DriftReport) -> Option<f64>| features.iter().filter_map(f).fold(0.0, f64::max);
        let summary = DriftSummary {
            features: features.len() as u64,
            drifted_features: features
                .iter()
                .filter(|f| f.drifted)
                .map(|f| f.name.clone())
                .collect(),
            max_psi: max(|f| Some(f.psi)),
            max_ks: max(|f| match f.measure {
                Measure::Number { ks, .. } => Some(ks),
                Measure::String { .. } => None,
            }),
            max_js: max(|f| match f.measure {
                Measure::String { js } => Some(js),
                Measure::Number { .. } => None,
            }),
        };
        Ok(Drift {
            bins: options.bins,
            thresholds: options.thresholds,
            reference_rows: reference.rows.len() as u64,
            current_rows: current.rows.len() as u64,
            features,
            summary,
        })
    }

    /// Reads both examples files and compares them.
    pub fn read(
        reference: impl BufRead,
        current: impl BufRead,
        options: &DriftOptions,
    ) -> Result<Self> {
        let reference = Examples::read(reference)?;
        let current = Examples::read(current)?;
        Self::compare(&reference, &current, options)
    }

    /// Writes the report as a JSON document.
    pub fn write(&self, out: impl Write) -> Result<()> {
        crate::write_json_document(out, self)
    }
}

fn column_values(examples: &Examples, index: usize) -> Vec<&Value> {
    examples.rows.iter().map(|row| &row[index]).collect()
}

fn feature_drift(
    name: &str,
    ty: ColumnType,
    reference: &[&Value],
    current: &[&Value],
    options: &DriftOptions,
) -> DriftReport {
    let missing = |values: &[&Value]| values.iter().filter(|v| v.is_missing()).count() as u64;
    let (reference_missing, current_missing) = (missing(reference), missing(current));
    let thresholds = options.thresholds;
    let (psi, measure, reference_count, current_count, drifted) = match ty {
        ColumnType::Number => {
            let numbers = |values: &[&Value]| -> Vec<f64> {
                values
                    .iter()
                    .filter_map(|v| match v {
                        Value::Number(x) => Some(*x),
                        _ => None,
                    })
                    .collect()
            };
            let (reference, current) = (numbers(reference), numbers(current));
            let NumericPsi { psi, edges } = numeric_psi(&reference, &current, options.bins);
            let ks = ks_statistic(&reference, &current);
            (
                psi,
                Measure::Number {
                    ks,
                    bin_edges: edges,
                },
                reference.len() as u64,
                current.len() as u64,
                psi > thresholds.psi || ks > thresholds.ks,
            )
        }
        ColumnType::String => {
            let reference_counts = category_counts(reference.iter().copied());
            let current_counts = category_counts(current.iter().copied());
            let psi = categorical_psi(&reference_counts, &current_counts);
            let js = js_distance(&reference_counts, &current_counts);
            (
                psi,
                Measure::String { js },
                reference.len() as u64,
                current.len() as u64,
                psi > thresholds.psi || js > thresholds.js,
            )
        }
    };
    DriftReport {
        name: name.to_owned(),
        ty,
        psi,
        measure,
        reference_count,
        current_count,
        reference_missing,
        current_missing,
        drifted,
    }
}

/// A number feature's PSI and the bin edges it was computed over.
#[derive(Clone, Debug, PartialEq)]
pub struct NumericPsi {
    /// Population stability index.
    pub psi: f64,
    /// The inner bin edges, from [`bin_edges`].
    pub edges: Vec<f64>,
}

/// PSI of `current` against `reference` (finite numbers, any order) over
/// `bins` quantile bins of the reference.
pub fn numeric_psi(reference: &[f64], current: &[f64], bins: usize) -> NumericPsi {
    let edges = bin_edges(reference, bins);
    let psi = psi(&bin_counts(reference, &edges), &bin_counts(current, &edges));
    NumericPsi { psi, edges }
}

/// The inner edges of `bins` quantile bins of `reference` (finite numbers,
/// any order): its quantiles at `1/bins, 2/bins, …, (bins−1)/bins`,
/// sorted, with duplicates removed (so ties give fewer bins), none when
/// `reference` is empty. Quantiles interpolate linearly between order
/// statistics: with `x` sorted and `h = (n − 1)·q`, the `q`-quantile is
/// `x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋])` (Hyndman and Fan's type 7,
/// NumPy's default).
pub fn bin_edges(reference: &[f64], bins: usize) -> Vec<f64> {
    if reference.is_empty() {
        return Vec::new();
    }
    let sorted = sorted(reference);
    let last = sorted.len() - 1;
    let mut edges: Vec<f64> = (1..bins)
        .map(|k| {
            let h = last as f64 * (k as f64 / bins as f64);
            let lo = (h.floor() as usize).min(last);
            let hi = (lo + 1).min(last);
            sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
        })
        .collect();
    // Interpolation is monotone in exact arithmetic; sorting guards the
    // last ulp before ties are merged.
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    edges
}

/// How many `values` fall in each bin of `edges` (sorted): bin `i` holds
/// `edges[i-1] < x <= edges[i]`, the first and last bins open-ended, so
/// there are `edges.len() + 1` counts.
pub fn bin_counts(values: &[f64], edges: &[f64]) -> Vec<u64> {
    let mut counts = vec![0; edges.len() + 1];
    for x in values {
        counts[edges.partition_point(|e| e < x)] += 1;
    }
    counts
}

/// PSI between two histograms over the same bins:
/// `Σ (c − r) · ln(c / r)` where `r` and `c` are each bin's share of its
/// histogram, floored at [`EPSILON`]. An empty histogram has every share
/// at the floor. Bins beyond the shorter histogram are ignored.
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    let (ref_total, cur_total) = (total(reference), total(current));
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let r = share(r, ref_total).max(EPSILON);
            let c = share(c, cur_total).max(EPSILON);
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// A string column's values counted by category, missing values as
/// [`MISSING_CATEGORY`].
pub fn category_counts<'a>(values: impl IntoIterator<Item = &'a Value>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for value in values {
        let category = match value {
            Value::Missing => MISSING_CATEGORY.to_owned(),
            Value::Text(t) => t.clone(),
            // Only a column without values takes another type's place.
            Value::Number(_) => value.to_string(),
        };
        *counts.entry(category).or_insert(0) += 1;
    }
    counts
}

/// PSI between two category histograms, over the union of their
/// categories (see [`psi`]).
pub fn categorical_psi(reference: &BTreeMap<String, u64>, current: &BTreeMap<String, u64>) -> f64 {
    let (reference, current) = align(reference, current);
    psi(&reference, &current)
}

/// The Jensen–Shannon distance between two category histograms:
/// `sqrt(½ KL(P‖M) + ½ KL(Q‖M))` with `M = (P + Q) / 2` and base-2
/// logarithms, in `[0, 1]`. 1 when exactly one histogram is empty, 0 when
/// both are.
pub fn js_distance(reference: &BTreeMap<String, u64>, current: &BTreeMap<String, u64>) -> f64 {
    let (reference, current) = align(reference, current);
    let (ref_total, cur_total) = (total(&reference), total(&current));
    match (ref_total == 0, cur_total == 0) {
        (true, true) => return 0.0,
        (true, false) | (false, true) => return 1.0,
        (false, false) => {}
    }
    let mut divergence = 0.0;
    for (&r, &c) in reference.iter().zip(&current) {
        let (p, q) = (share(r, ref_total), share(c, cur_total));
        let m = (p + q) / 2.0;
        // 0 · log 0 = 0; m > 0 whenever p or q is.
        if p > 0.0 {
            divergence += p * (p / m).log2() / 2.0;
        }
        if q > 0.0 {
            divergence += q * (q / m).log2() / 2.0;
        }
    }
    // Rounding may leave the divergence a hair outside [0, 1].
    divergence.clamp(0.0, 1.0).sqrt()
}

/// The two-sample Kolmogorov–Smirnov statistic of finite numbers in any
/// order: `sup |F_ref(x) − F_cur(x)|`, evaluated exactly at every value of
/// the merged sample (ties advance both CDFs together). 1 when exactly one
/// sample is empty, 0 when both are.
pub fn ks_statistic(reference: &[f64], current: &[f64]) -> f64 {
    match (reference.is_empty(), current.is_empty()) {
        (true, true) => return 0.0,
        (true, false) | (false, true) => return 1.0,
        (false, false) => {}
    }
    let (r, c) = (sorted(reference), sorted(current));
    let (n, m) = (r.len() as f64, c.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut d = 0.0f64;
    // Once one sample is used up its CDF is 1 and the gap only shrinks.
    while i < r.len() && j < c.len() {
        let x = r[i].min(c[j]);
        while i < r.len() && r[i] <= x {
            i += 1;
        }
        while j < c.len() && c[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

fn total(counts: &[u64]) -> u64 {
    counts.iter().sum()
}

fn share(count: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        count as f64 / total as f64
    }
}

/// Both histograms' counts over the sorted union of their categories.
fn align(
    reference: &BTreeMap<String, u64>,
    current: &BTreeMap<String, u64>,
) -> (Vec<u64>, Vec<u64>) {
    let categories: BTreeSet<&String> = reference.keys().chain(current.keys()).collect();
    let count = |map: &BTreeMap<String, u64>, k: &String| map.get(k).copied().unwrap_or(0);
    categories
        .into_iter()
        .map(|k| (count(reference, k), count(current, k)))
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOLERANCE: f64 = 1e-9;

    #[track_caller]
    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < TOLERANCE,
            "{actual} is not {expected}"
        );
    }

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    #[test]
    fn quantile_edges_interpolate_and_merge_ties() {
        // n = 4, q = 1/2: h = 3 · 0.5 = 1.5 → x[1] + 0.5 · (x[2] − x[1]) = 2.5.
        assert_eq!(bin_edges(&[4.0, 1.0, 3.0, 2.0], 2), [2.5]);
        // n = 5, q = 1/4, 2/4, 3/4: h = 1, 2, 3 → x[1], x[2], x[3] = 1, 1, 2;
        // the tie at 1 merges, leaving 3 bins.
        let edges = bin_edges(&[1.0, 1.0, 1.0, 2.0, 3.0], 4);
        assert_eq!(edges, [1.0, 2.0]);
        // Bins (−∞, 1], (1, 2], (2, ∞): upper edges are inclusive.
        assert_eq!(bin_counts(&[1.0, 1.0, 1.0, 2.0, 3.0], &edges), [3, 1, 1]);
        assert_eq!(bin_counts(&[-50.0, 1.5, 99.0], &edges), [1, 1, 1]);
        // q = 0.1 … 0.9 of 0..=10: h = 10q, exact order statistics 1 … 9.
        let deciles: Vec<f64> = (0..=10).map(f64::from).collect();
        assert_eq!(
            bin_edges(&deciles, 10),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        );
        assert_eq!(bin_edges(&[], 10), Vec::<f64>::new());
        assert_eq!(bin_edges(&[7.0], 10), [7.0]);
    }

    #[test]
    fn numeric_psi_matches_hand_computation() {
        // Edge 2.5 (above). Reference 1,2 | 3,4 → shares 0.5, 0.5.
        // Current 1 | 3,4,5 → 0.25, 0.75.
        // PSI = (0.25 − 0.5) ln(0.25/0.5) + (0.75 − 0.5) ln(0.75/0.5)
        //     = 0.25 ln 2 + 0.25 ln 1.5 = 0.25 ln 3 ≈ 0.274653.
        let result = numeric_psi(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 4.0, 5.0], 2);
        assert_eq!(result.edges, [2.5]);
        close(result.psi, 0.25 * 3f64.ln());
    }

    #[test]
    fn an_empty_bin_is_floored_at_epsilon() {
        // Current 3,4,5,6 leaves bin (−∞, 2.5] empty: share 0 → 1e-4.
        // PSI = (1e-4 − 0.5) ln(1e-4/0.5) + (1 − 0.5) ln(1/0.5)
        //     = −0.4999 · ln(2e-4) + 0.5 ln 2
        //     = 0.4999 · 8.517193191416238 + 0.346573590279973 ≈ 4.604318.
        let result = numeric_psi(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0], 2);
        close(result.psi, 0.4999 * 8.517_193_191_416_238 + 0.5 * 2f64.ln());
    }

    #[test]
    fn ks_matches_hand_computation_with_ties() {
        // Reference 1,2,2,3 (n = 4), current 2,3,3 (m = 3):
        //   x = 1: F_ref = 1/4, F_cur = 0   → 1/4
        //   x = 2: F_ref = 3/4, F_cur = 1/3 → 5/12
        //   x = 3: F_ref = 1,   F_cur = 1   → 0
        // D = 5/12. (Stepping through the tied 2s one at a time would
        // wrongly see F_ref = 1/2 against F_cur = 0.)
        close(
            ks_statistic(&[3.0, 2.0, 1.0, 2.0], &[2.0, 3.0, 3.0]),
            5.0 / 12.0,
        );
        // 1,2,3,4 against 1,3,4,5: gaps 0, 1/4, 1/4, 1/4, 0 → 1/4.
        close(
            ks_statistic(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 4.0, 5.0]),
            0.25,
        );
        // Disjoint samples: D = 1.
        assert_eq!(ks_statistic(&[1.0, 2.0], &[3.0]), 1.0);
        assert_eq!(ks_statistic(&[], &[3.0]), 1.0);
        assert_eq!(ks_statistic(&[], &[]), 0.0);
    }

    #[test]
    fn categorical_psi_matches_hand_computation() {
        // Reference a 2, b 2 → 0.5, 0.5, c 0 → 1e-4; current a 1, b 2, c 1 →
        // 0.25, 0.5, 0.25.
        // PSI = (0.25 − 0.5) ln(0.25/0.5) + 0 + (0.25 − 1e-4) ln(0.25/1e-4)
        //     = 0.25 ln 2 + 0.2499 ln 2500
        //     = 0.173286795139986 + 0.2499 · 7.824046010856292 ≈ 2.128516.
        let psi = categorical_psi(
            &counts(&[("a", 2), ("b", 2)]),
            &counts(&[("a", 1), ("b", 2), ("c", 1)]),
        );
        close(psi, 0.25 * 2f64.ln() + 0.2499 * 7.824_046_010_856_292);
    }

    #[test]
    fn js_distance_matches_hand_computation() {
        // P = (½, ½), Q = (1, 0), M = (¾, ¼):
        //   KL(P‖M) = ½ log2(⅔) + ½ log2(2) = 1 − ½ log2 3
        //   KL(Q‖M) = log2(4/3)            = 2 − log2 3
        //   JSD = ½ (1 − ½ log2 3) + ½ (2 − log2 3) = 1.5 − ¾ log2 3
        //       = 1.5 − 0.75 · 1.584962500721156 = 0.311278124459133
        // distance = √0.311278124459133 ≈ 0.557923.
        let js = js_distance(&counts(&[("a", 1), ("b", 1)]), &counts(&[("a", 4)]));
        close(js, 0.311_278_124_459_133f64.sqrt());
        // No category in common: the maximum, 1.
        close(js_distance(&counts(&[("a", 3)]), &counts(&[("b", 1)])), 1.0);
        // Same frequencies, different sizes: 0.
        close(
            js_distance(
                &counts(&[("a", 1), ("b", 3)]),
                &counts(&[("a", 2), ("b", 6)]),
            ),
            0.0,
        );
        assert_eq!(js_distance(&counts(&[]), &counts(&[("a", 1)])), 1.0);
    }

    #[test]
    fn missing_strings_are_a_category() {
        let values = [
            Value::Text("a".into()),
            Value::Missing,
            Value::Text("a".into()),
            Value::Missing,
        ];
        assert_eq!(
            category_counts(&values),
            counts(&[("a", 2), (MISSING_CATEGORY, 2)])
        );
    }

    const SCHEMA: &str = r#"{"schema":{"label":"y","columns":[{"name":"y","type":"string"},{"name":"x","type":"number"},{"name":"k","type":"string"}]}}"#;

    fn examples(rows: &[(f64, Option<&str>)]) -> Examples {
        let mut text = format!("{SCHEMA}\n");
        for (i, (x, k)) in rows.iter().enumerate() {
            let k = k.map_or("null".to_owned(), |k| format!("{k:?}"));
            text.push_str(&format!("[\"c{}\",{x},{k}]\n", i % 2));
        }
        Examples::read(text.as_bytes()).unwrap()
    }

    #[test]
    fn identical_samples_do_not_drift() {
        let rows: Vec<(f64, Option<&str>)> = (0..50)
            .map(|i| {
                (
                    f64::from(i % 17),
                    [Some("p"), Some("q"), None][i as usize % 3],
                )
            })
            .collect();
        let data = examples(&rows);
        let drift = Drift::compare(&data, &data, &DriftOptions::default()).unwrap();
        assert_eq!(drift.features.len(), 2);
        for feature in &drift.features {
            assert_eq!(feature.psi, 0.0, "{}", feature.name);
            assert!(!feature.drifted, "{}", feature.name);
        }
        let Measure::Number { ks, bin_edges } = &drift.features[0].measure else {
            panic!("x is a number column");
        };
        assert_eq!(*ks, 0.0);
        assert_eq!(bin_edges.len(), 9);
        assert_eq!(drift.features[1].measure, Measure::String { js: 0.0 });
        assert_eq!(
            drift.summary,
            DriftSummary {
                features: 2,
                drifted_features: vec![],
                max_psi: 0.0,
                max_ks: 0.0,
                max_js: 0.0,
            }
        );
    }

    #[test]
    fn a_shifted_sample_drifts() {
        // x: 0..100 against 50..150 — half the current mass lies above every
        // reference value, so KS = 1/2; k: p/q against mostly r.
        let reference: Vec<(f64, Option<&str>)> = (0..100)
            .map(|i| (f64::from(i), Some(if i % 2 == 0 { "p" } else { "q" })))
            .collect();
        let current: Vec<(f64, Option<&str>)> = (0..100)
            .map(|i| (f64::from(i + 50), Some(if i % 4 == 0 { "p" } else { "r" })))
            .collect();
        let drift = Drift::compare(
            &examples(&reference),
            &examples(&current),
            &DriftOptions::default(),
        )
        .unwrap();
        let x = &drift.features[0];
        assert!(x.drifted);
        assert!(x.psi > 0.2, "{}", x.psi);
        let Measure::Number { ks, .. } = x.measure else {
            panic!("x is a number column");
        };
        close(ks, 0.5);
        let k = &drift.features[1];
        assert!(k.drifted && k.psi > 0.2, "{k:?}");
        assert_eq!(drift.summary.drifted_features, ["x", "k"]);
        close(drift.summary.max_ks, 0.5);
    }

    #[test]
    fn thresholds_decide_what_drifted() {
        // 1,2,3,4 against 1,3,4,5: PSI 0.25 ln 3 ≈ 0.275, KS 0.25.
        let reference = examples(&[(1.0, None), (2.0, None), (3.0, None), (4.0, None)]);
        let current = examples(&[(1.0, None), (3.0, None), (4.0, None), (5.0, None)]);
        let with = |psi, ks| {
            let options = DriftOptions {
                thresholds: Thresholds { psi, ks, js: 0.3 },
                bins: 2,
            };
            let drift = Drift::compare(&reference, &current, &options).unwrap();
            drift.features[0].drifted
        };
        assert!(with(0.2, 0.3), "PSI above 0.2");
        assert!(!with(0.3, 0.3), "PSI and KS below");
        assert!(with(0.3, 0.2), "KS above 0.2");
    }

    #[test]
    fn report_has_the_documented_shape() {
        let reference = examples(&[(1.0, Some("a")), (2.0, None), (3.0, Some("a"))]);
        let current = examples(&[(1.0, Some("a")), (2.0, Some("a")), (3.0, Some("a"))]);
        let options = DriftOptions {
            bins: 2,
            ..DriftOptions::default()
        };
        let drift = Drift::compare(&reference, &current, &options).unwrap();
        let mut out = Vec::new();
        drift.write(&mut out).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let (psi_k, js_k) = (drift.features[1].psi, drift.summary.max_js);
        assert_eq!(
            json,
            json!({
                "bins": 2,
                "thresholds": {"psi": 0.2, "ks": 0.3, "js": 0.3},
                "reference_rows": 3,
                "current_rows": 3,
                "features": [
                    {"name": "x", "type": "number", "psi": 0.0, "ks": 0.0, "bin_edges": [2.0],
                     "reference_count": 3, "current_count": 3,
                     "reference_missing": 0, "current_missing": 0, "drifted": false},
                    {"name": "k", "type": "string", "psi": psi_k, "js": js_k,
                     "reference_count": 3, "current_count": 3,
                     "reference_missing": 1, "current_missing": 0, "drifted": true},
                ],
                "summary": {"features": 2, "drifted_features": ["k"],
                            "max_psi": psi_k, "max_ks": 0.0, "max_js": js_k},
            })
        );
        // k: reference a ⅔, <missing> ⅓; current a 1, <missing> 0 → 1e-4.
        // PSI = (1 − ⅔) ln(1/⅔) + (1e-4 − ⅓) ln(1e-4/⅓)
        //     = ⅓ ln 1.5 − 0.333233… · ln(3e-4) ≈ 0.135155 + 2.703098.
        close(
            psi_k,
            1.5f64.ln() / 3.0 + (1.0 / 3.0 - 1e-4) * -(3e-4f64.ln()),
        );
        // P = (⅔, ⅓), Q = (1, 0), M = (⅚, ⅙):
        // JSD = ½ [⅔ log2(4/5) + ⅓ log2 2] + ½ log2(6/5).
        let jsd = 0.5 * (2.0 / 3.0 * 0.8f64.log2() + 1.0 / 3.0) + 0.5 * 1.2f64.log2();
        close(js_k, jsd.sqrt());
    }

    #[test]
    fn an_all_missing_column_takes_the_other_sides_type() {
        let reference = examples(&[(1.0, Some("a")), (2.0, Some("b"))]);
        let text = concat!(
            r#"{"schema":{"label":"y","columns":[{"name":"y","type":"string"},{"name":"x","type":"number"},{"name":"k","type":"number"}]}}"#,
            "\n[\"c0\",1,null]\n"
        );
        let current = Examples::read(text.as_bytes()).unwrap();
        let drift = Drift::compare(&reference, &current, &DriftOptions::default()).unwrap();
        let k = &drift.features[1];
        assert_eq!(k.ty, ColumnType::String);
        // All current rows are <missing>, which the reference never has.
        assert_eq!(k.measure, Measure::String { js: 1.0 });
        assert!(k.drifted);
    }

    #[test]
    fn mismatched_inputs_and_bad_options_are_rejected() {
        let data = examples(&[(1.0, Some("a"))]);
        let err = |reference: &Examples, current: &Examples, options: DriftOptions| {
            Drift::compare(reference, current, &options)
                .unwrap_err()
                .to_string()
        };
        let defaults = DriftOptions::default();
        let other = |schema: &str, row: &str| {
            Examples::read(format!("{schema}\n{row}\n").as_bytes()).unwrap()
        };
        let without_k = other(
            r#"{"schema":{"label":"y","columns":[{"name":"y","type":"string"},{"name":"x","type":"number"}]}}"#,
            r#"["c0",1]"#,
        );
        assert_eq!(
            err(&data, &without_k, defaults),
            "column `k` of the reference examples is not in the current examples"
        );
        let x_string = other(
            r#"{"schema":{"label":"y","columns":[{"name":"y","type":"string"},{"name":"x","type":"string"},{"name":"k","type":"string"}]}}"#,
            r#"["c0","1","a"]"#,
        );
        assert_eq!(
            err(&data, &x_string, defaults),
            "column `x` is a number column in the reference examples but a string column in the current examples"
        );
        let labelled_x = other(
            r#"{"schema":{"label":"x","columns":[{"name":"y","type":"string"},{"name":"x","type":"number"},{"name":"k","type":"string"}]}}"#,
            r#"["c0",1,"a"]"#,
        );
        assert_eq!(
            err(&data, &labelled_x, defaults),
            "the reference label is `y` but the current label is `x`"
        );
        let empty = examples(&[]);
        assert_eq!(
            err(&data, &empty, defaults),
            "the current examples have no rows: nothing to compare"
        );
        let bins = |bins| DriftOptions {
            bins,
            ..DriftOptions::default()
        };
        assert_eq!(
            err(&data, &data, bins(1)),
            format!("bins must be within [2, {BINS_MAX}], got 1")
        );
        let psi = |psi| DriftOptions {
            thresholds: Thresholds {
                psi,
                ..Thresholds::default()
            },
            ..DriftOptions::default()
        };
        assert_eq!(
            err(&data, &data, psi(-0.5)),
            "psi_threshold must be a non-negative number, got -0.5"
        );
        assert_eq!(
            err(&data, &data, psi(f64::NAN)),
            "psi_threshold must be a non-negative number, got NaN"
        );
    }
}
