//! Data drift: how far a *current* examples stream has moved from a
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
//! # Streaming
//!
//! [`Drift::compute`] reads the reference twice and the current once, a
//! batch at a time, column by column; its memory is bounded by the
//! columns, never by the rows: per number column two
//! [`QuantileSketch`]es (at most 3,484 values, 27 KiB, each; see
//! [`SKETCH_K`]) and at most
//! [`BINS_MAX`] + 1 bin counts, per string column at most
//! 2 · [`CATEGORIES_MAX`] + 1 category counts.
//!
//! 1. **Reference, first read:** a quantile sketch per number column (its
//!    quantiles become the PSI bin edges) and the frequent categories of
//!    each string column (below).
//! 2. **Current, one read:** exact bin counts over those edges, category
//!    counts, and a quantile sketch per number column (for KS).
//! 3. **Reference, second read:** exact bin counts and category counts.
//!    It must have the same schema and rows as in the first read.
//!
//! A sketch holds every value of a column with at most [`SKETCH_K`]
//! (1,024) values, and then every statistic below is exact. Beyond that
//! the bin edges and KS are approximate, within the sketches' rank error
//! (about 0.3% for `k` = 1,024, see [`crate::quantile`]); the PSI is
//! always computed from exact counts over the reported edges. The report's
//! format does not say which: a feature's counts tell.
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
//!   columns: `D = sup |F_ref(x) − F_cur(x)|`, evaluated from the two
//!   sketches at every value either retains ([`ks_statistic`]): exact
//!   while both sketches are, otherwise off by at most the sum of their
//!   rank errors.
//! - **JS**, the Jensen–Shannon *distance*, for string columns: the square
//!   root of the JS divergence computed with base-2 logarithms, so it lies
//!   in `[0, 1]` (0: same frequencies; 1: no category in common)
//!   ([`js_distance`]).
//!
//! **Categories** are bounded: a string column's categories are counted
//! exactly while the reference has at most [`CATEGORIES_MAX`] distinct
//! values in it. Beyond that the first read keeps at most
//! [`CATEGORIES_MAX`] candidates (Misra–Gries: every category holding more
//! than 1/1001 of the rows is among them), the second read counts those
//! exactly, and every other value, on both sides, is counted as one
//! category, [`OTHER_CATEGORY`]. Current values the reference lacks are
//! counted one by one for the first [`CATEGORIES_MAX`] such categories met
//! (then as [`OTHER_CATEGORY`]) when the reference was counted exactly.
//!
//! **Missing values** (`null`) are left out of a number column's
//! statistics (its `*_count` counts values, its `*_missing` the rest) and
//! are a category of their own, [`MISSING_CATEGORY`], in a string column's
//! (whose `*_count` counts every row); a real value spelt `<missing>` (or
//! `<other>`) is counted with them. A feature with values in one sample and
//! none in the other has KS or JS 1; with values in neither, 0.
//!
//! A feature has **drifted** when its PSI exceeds the PSI threshold, or
//! its KS (number) or JS (string) exceeds its own threshold.
//!
//! Columns are matched by name; every reference column must be in the
//! current examples, with the same type unless one side has no values in
//! it (ingest calls an all-missing column a number column). Current
//! columns the reference lacks are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use arrow_array::{Array, ArrayRef, Float64Array, StringArray};
use serde::Serialize;

use crate::example::{ColumnType, ExampleReader, Schema};
use crate::quantile::QuantileSketch;
use crate::{CATEGORIES_MAX, Error, Result};

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

/// What [`Drift::compute`] needs to know.
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

/// The quantile sketches' accuracy parameter: a column with at most this
/// many values is held whole, so small samples (a few hundred penguins)
/// get exact edges and KS; beyond, rank error is about 0.3%. Each sketch
/// holds at most 3,484 values (27 KiB).
pub const SKETCH_K: usize = 1_024;

/// Most values all sketches of one comparison may hold together (64 MiB):
/// with more than about 1,200 number columns, `k` is halved until they
/// fit, down to [`SKETCH_K_MIN`].
pub const SKETCH_VALUES_MAX: usize = 8 << 20;

/// The smallest `k` a sketch gets however many columns there are (rank
/// error about 4%).
pub const SKETCH_K_MIN: usize = 64;

/// The sketches' `k` for `number_columns` columns, two sketches each.
fn sketch_k(number_columns: usize) -> usize {
    let mut k = SKETCH_K;
    while k > SKETCH_K_MIN
        && 2 * number_columns * QuantileSketch::retained_max(k) > SKETCH_VALUES_MAX
    {
        k /= 2;
    }
    k
}

/// The category values of a string column are counted as beyond
/// [`CATEGORIES_MAX`] distinct ones (see the [module docs](self)).
pub const OTHER_CATEGORY: &str = "<other>";

impl Drift {
    /// Compares the current examples to the reference, feature by feature,
    /// streaming: `open_reference` is called twice and `open_current` once,
    /// each call a fresh reader from the start of the stream.
    pub fn compute<R: Read, C: Read>(
        mut open_reference: impl FnMut() -> Result<R>,
        mut open_current: impl FnMut() -> Result<C>,
        options: &DriftOptions,
    ) -> Result<Self> {
        options.check()?;
        let mut reference = ExampleReader::new(open_reference()?)?;
        let mut current = ExampleReader::new(open_current()?)?;
        let ref_schema = reference.schema().clone();
        let features = match_features(&ref_schema, current.schema())?;
        let k = sketch_k(
            features
                .iter()
                .filter(|f| [f.reference.1, f.current.1].contains(&ColumnType::Number))
                .count(),
        );

        // 1. Reference, first read: sketches and frequent categories.
        let mut first: Vec<Tally> = features
            .iter()
            .map(|f| Tally::new(f.reference, k, Vec::new(), Categories::candidates()))
            .collect();
        let reference_rows = scan(&mut reference, &features, Side::Reference, &mut first)?;
        drop(reference);
        if reference_rows == 0 {
            return Err(Error::invalid(
                "the reference examples have no rows: nothing to compare",
            ));
        }
        let edges: Vec<Vec<f64>> = first
            .iter()
            .map(|t| match t {
                Tally::Number(n) => bin_edges(&n.sketch, options.bins),
                Tally::Text(_) => Vec::new(),
            })
            .collect();
        let known: Vec<Option<Categories>> = first
            .iter()
            .map(|t| match t {
                Tally::Number(_) => None,
                Tally::Text(t) => Some(t.categories.chosen()),
            })
            .collect();
        let categories_for = |j: usize| {
            known[j].as_ref().map_or_else(
                || Categories::counting(BTreeSet::new(), false),
                Categories::clone,
            )
        };

        // 2. Current: bin counts, categories, sketches.
        let mut now: Vec<Tally> = features
            .iter()
            .enumerate()
            .map(|(j, f)| Tally::new(f.current, k, edges[j].clone(), categories_for(j)))
            .collect();
        let current_rows = scan(&mut current, &features, Side::Current, &mut now)?;
        drop(current);
        if current_rows == 0 {
            return Err(Error::invalid(
                "the current examples have no rows: nothing to compare",
            ));
        }

        // 3. Reference, second read: exact counts over the same bins.
        let mut reference = ExampleReader::new(open_reference()?)?;
        if reference.schema() != &ref_schema {
            return Err(changed("its schema differs"));
        }
        let mut then: Vec<Tally> = features
            .iter()
            .enumerate()
            .map(|(j, f)| Tally::new(f.reference, k, edges[j].clone(), categories_for(j)))
            .collect();
        for (t, f) in then.iter_mut().zip(first) {
            // The sketch is the first read's; this read only counts.
            if let (Tally::Number(t), Tally::Number(f)) = (t, f) {
                t.sketch = f.sketch;
                t.sketching = false;
            }
        }
        let rows_again = scan(&mut reference, &features, Side::Reference, &mut then)?;
        if rows_again != reference_rows {
            return Err(changed(format!(
                "{reference_rows} rows on the first read, {rows_again} on the second"
            )));
        }

        let features = features
            .iter()
            .zip(then)
            .zip(now)
            .zip(edges)
            .enumerate()
            .map(|(j, (((f, r), c), edges))| {
                let bins = Bins {
                    edges,
                    categories: categories_for(j),
                };
                feature_drift(f, (r, reference_rows), (c, current_rows), bins, options)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::summarise(
            options,
            reference_rows,
            current_rows,
            features,
        ))
    }

    /// Compares two examples streams held in memory (tests, small data).
    pub fn read(reference: &[u8], current: &[u8], options: &DriftOptions) -> Result<Self> {
        Self::compute(|| Ok(reference), || Ok(current), options)
    }

    /// Writes the report as a JSON document.
    pub fn write(&self, out: impl Write) -> Result<()> {
        crate::write_json_document(out, self)
    }

    fn summarise(
        options: &DriftOptions,
        reference_rows: u64,
        current_rows: u64,
        features: Vec<DriftReport>,
    ) -> Self {
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
        Drift {
            bins: options.bins,
            thresholds: options.thresholds,
            reference_rows,
            current_rows,
            features,
            summary,
        }
    }
}

fn changed(what: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "the reference examples changed between the two reads: {what}"
    ))
}

/// A feature: where it is, and its type, on each side.
struct Feature {
    name: String,
    reference: (usize, ColumnType),
    current: (usize, ColumnType),
}

#[derive(Clone, Copy)]
enum Side {
    Reference,
    Current,
}

/// The features: every reference column but the label, each found by
/// name in the current schema.
fn match_features(reference: &Schema, current: &Schema) -> Result<Vec<Feature>> {
    if reference.label != current.label {
        return Err(Error::invalid(format!(
            "the reference label is `{}` but the current label is `{}`",
            reference.label, current.label
        )));
    }
    reference
        .columns
        .iter()
        .enumerate()
        .filter(|(_, column)| column.name != reference.label)
        .map(|(r, column)| {
            let c = current.index_of(&column.name).ok_or_else(|| {
                Error::invalid(format!(
                    "column `{}` of the reference examples is not in the current examples",
                    column.name
                ))
            })?;
            Ok(Feature {
                name: column.name.clone(),
                reference: (r, column.ty),
                current: (c, current.columns[c].ty),
            })
        })
        .collect()
}

/// What one read learns about one feature, by the column's type on that
/// side.
enum Tally {
    Number(NumberTally),
    Text(TextTally),
}

struct NumberTally {
    sketch: QuantileSketch,
    /// Whether this read adds to the sketch.
    sketching: bool,
    edges: Vec<f64>,
    bins: Vec<u64>,
    missing: u64,
}

struct TextTally {
    categories: Categories,
    missing: u64,
}

impl Tally {
    fn new(
        (_, ty): (usize, ColumnType),
        k: usize,
        edges: Vec<f64>,
        categories: Categories,
    ) -> Self {
        match ty {
            ColumnType::Number => Tally::Number(NumberTally {
                sketch: QuantileSketch::with_k(k),
                sketching: true,
                bins: vec![0; edges.len() + 1],
                edges,
                missing: 0,
            }),
            ColumnType::String => Tally::Text(TextTally {
                categories,
                missing: 0,
            }),
        }
    }

    fn add(&mut self, array: &ArrayRef, name: &str) -> Result<()> {
        let wrong = || {
            Error::invalid(format!(
                "column `{name}`: a batch's values are not of the column's type"
            ))
        };
        match self {
            Tally::Number(t) => {
                let values = array
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .ok_or_else(wrong)?;
                t.missing += values.null_count() as u64;
                for x in values.iter().flatten() {
                    if t.sketching {
                        t.sketch.add(x);
                    }
                    t.bins[bin_of(&t.edges, x)] += 1;
                }
            }
            Tally::Text(t) => {
                let values = array
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(wrong)?;
                t.missing += values.null_count() as u64;
                for value in values.iter() {
                    t.categories.add(value.unwrap_or(MISSING_CATEGORY), 1);
                }
            }
        }
        Ok(())
    }

    fn has_values(&self, rows: u64) -> bool {
        match self {
            Tally::Number(t) => !t.sketch.is_empty(),
            Tally::Text(t) => t.missing < rows,
        }
    }
}

/// Reads every batch, adding each feature's column to its tally; returns
/// the rows read.
fn scan<R: Read>(
    reader: &mut ExampleReader<R>,
    features: &[Feature],
    side: Side,
    tallies: &mut [Tally],
) -> Result<u64> {
    let mut rows = 0u64;
    while let Some(batch) = reader.next_batch()? {
        rows += batch.num_rows() as u64;
        for (feature, tally) in features.iter().zip(tallies.iter_mut()) {
            let (index, _) = match side {
                Side::Reference => feature.reference,
                Side::Current => feature.current,
            };
            tally.add(batch.column(index), &feature.name)?;
        }
    }
    Ok(rows)
}

/// A string column's category counts, bounded (see the [module
/// docs](self)).
#[derive(Clone, Debug)]
struct Categories {
    counts: BTreeMap<String, u64>,
    mode: Mode,
}

#[derive(Clone, Debug)]
enum Mode {
    /// The reference's first read: Misra–Gries candidates; `overflowed`
    /// once more than [`CATEGORIES_MAX`] distinct values were met.
    Candidates { overflowed: bool },
    /// Exact counts of `known`; other values are counted one by one while
    /// `new` has room and `lump` is off, else as [`OTHER_CATEGORY`].
    Counting {
        known: BTreeSet<String>,
        lump: bool,
        new: usize,
    },
}

impl Categories {
    fn candidates() -> Self {
        Categories {
            counts: BTreeMap::new(),
            mode: Mode::Candidates { overflowed: false },
        }
    }

    fn counting(known: BTreeSet<String>, lump: bool) -> Self {
        Categories {
            counts: BTreeMap::new(),
            mode: Mode::Counting {
                known,
                lump,
                new: 0,
            },
        }
    }

    /// After a first read: count the candidates exactly, and lump every
    /// other value if there were more than [`CATEGORIES_MAX`].
    fn chosen(&self) -> Self {
        let overflowed = matches!(self.mode, Mode::Candidates { overflowed: true });
        Categories::counting(self.counts.keys().cloned().collect(), overflowed)
    }

    fn add(&mut self, category: &str, n: u64) {
        if let Some(count) = self.counts.get_mut(category) {
            *count += n;
            return;
        }
        match &mut self.mode {
            Mode::Candidates { overflowed } => {
                if self.counts.len() < CATEGORIES_MAX {
                    self.counts.insert(category.to_owned(), n);
                } else {
                    // Misra–Gries (values come one at a time here): the
                    // newcomer and every candidate lose one; amortised
                    // O(1) per value, as each loss undoes an earlier gain.
                    *overflowed = true;
                    self.counts.retain(|_, count| {
                        *count -= 1;
                        *count > 0
                    });
                }
            }
            Mode::Counting { known, lump, new } => {
                let key = if known.contains(category) {
                    category
                } else if !*lump && *new < CATEGORIES_MAX {
                    *new += 1;
                    category
                } else {
                    OTHER_CATEGORY
                };
                *self.counts.entry(key.to_owned()).or_insert(0) += n;
            }
        }
    }
}

/// A feature's bins: the edges from the reference's first read, and the
/// categories a string side is counted with (its chosen candidates; none
/// when the reference column is a number column).
struct Bins {
    edges: Vec<f64>,
    categories: Categories,
}

fn feature_drift(
    feature: &Feature,
    (reference, reference_rows): (Tally, u64),
    (current, current_rows): (Tally, u64),
    Bins {
        edges: bin_edges,
        categories: template,
    }: Bins,
    options: &DriftOptions,
) -> Result<DriftReport> {
    let (ref_ty, cur_ty) = (feature.reference.1, feature.current.1);
    let ty = if ref_ty == cur_ty || !current.has_values(current_rows) {
        ref_ty
    } else if !reference.has_values(reference_rows) {
        cur_ty
    } else {
        return Err(Error::invalid(format!(
            "column `{}` is a {} column in the reference examples but a {} column in the current examples",
            feature.name,
            ref_ty.name(),
            cur_ty.name()
        )));
    };
    let thresholds = options.thresholds;
    let report = |psi, measure, counts: (u64, u64), missing: (u64, u64), drifted| DriftReport {
        name: feature.name.clone(),
        ty,
        psi,
        measure,
        reference_count: counts.0,
        current_count: counts.1,
        reference_missing: missing.0,
        current_missing: missing.1,
        drifted,
    };
    Ok(match ty {
        ColumnType::Number => {
            // A side of the other type has no values: every row missing.
            let side = |tally: Tally, rows: u64| match tally {
                Tally::Number(t) => t,
                Tally::Text(_) => NumberTally {
                    sketch: QuantileSketch::new(),
                    sketching: false,
                    edges: Vec::new(),
                    bins: vec![0; bin_edges.len() + 1],
                    missing: rows,
                },
            };
            let (r, c) = (side(reference, reference_rows), side(current, current_rows));
            let psi = psi(&r.bins, &c.bins);
            let ks = ks_statistic(&r.sketch, &c.sketch);
            report(
                psi,
                Measure::Number { ks, bin_edges },
                (r.sketch.count(), c.sketch.count()),
                (r.missing, c.missing),
                psi > thresholds.psi || ks > thresholds.ks,
            )
        }
        ColumnType::String => {
            let side = |tally: Tally, rows: u64| match tally {
                Tally::Text(t) => t,
                Tally::Number(_) => {
                    // Counted as the other side was, so <missing> lands in
                    // the same bin.
                    let mut categories = template.clone();
                    categories.add(MISSING_CATEGORY, rows);
                    TextTally {
                        categories,
                        missing: rows,
                    }
                }
            };
            let (r, c) = (side(reference, reference_rows), side(current, current_rows));
            let (rc, cc) = (&r.categories.counts, &c.categories.counts);
            let psi = categorical_psi(rc, cc);
            let js = js_distance(rc, cc);
            report(
                psi,
                Measure::String { js },
                (reference_rows, current_rows),
                (r.missing, c.missing),
                psi > thresholds.psi || js > thresholds.js,
            )
        }
    })
}

/// The inner edges of `bins` quantile bins of the reference sample
/// sketched in `reference`: its quantiles at `1/bins, 2/bins, …,
/// (bins−1)/bins`, sorted, with duplicates removed (so ties give fewer
/// bins), none when it is empty. Quantiles interpolate linearly between
/// order statistics: with `x` sorted and `h = (n − 1)·q`, the `q`-quantile
/// is `x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋])` (Hyndman and Fan's type 7,
/// NumPy's default) — exact while the sketch holds every value, else
/// from its estimated order statistics ([`QuantileSketch::quantile`]).
pub fn bin_edges(reference: &QuantileSketch, bins: usize) -> Vec<f64> {
    let view = reference.sorted();
    let mut edges: Vec<f64> = (1..bins)
        .filter_map(|k| view.quantile(k as f64 / bins as f64))
        .collect();
    // Interpolation is monotone in exact arithmetic; sorting guards the
    // last ulp before ties are merged.
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    edges
}

/// The bin of `x` among `edges` (sorted): bin `i` holds
/// `edges[i-1] < x <= edges[i]`, the first and last bins open-ended.
fn bin_of(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|&e| e < x)
}

/// How many `values` fall in each bin of `edges` (sorted): bin `i` holds
/// `edges[i-1] < x <= edges[i]`, the first and last bins open-ended, so
/// there are `edges.len() + 1` counts.
pub fn bin_counts(values: &[f64], edges: &[f64]) -> Vec<u64> {
    let mut counts = vec![0; edges.len() + 1];
    for &x in values {
        counts[bin_of(edges, x)] += 1;
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
            (c - r) * libm::log(c / r)
        })
        .sum()
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
            divergence += p * libm::log2(p / m) / 2.0;
        }
        if q > 0.0 {
            divergence += q * libm::log2(q / m) / 2.0;
        }
    }
    // Rounding may leave the divergence a hair outside [0, 1].
    divergence.clamp(0.0, 1.0).sqrt()
}

/// The two-sample Kolmogorov–Smirnov statistic `sup |F_ref(x) − F_cur(x)|`
/// of two sketched samples, evaluated at every value either sketch
/// retains and at both samples' min and max (the empirical CDFs only step
/// at values, so this is exact while both sketches hold every value;
/// otherwise within the sum of their rank errors). 1 when exactly one
/// sample is empty, 0 when both are.
pub fn ks_statistic(reference: &QuantileSketch, current: &QuantileSketch) -> f64 {
    match (reference.is_empty(), current.is_empty()) {
        (true, true) => return 0.0,
        (true, false) | (false, true) => return 1.0,
        (false, false) => {}
    }
    let (r, c) = (reference.sorted(), current.sorted());
    let ends = [
        reference.min(),
        reference.max(),
        current.min(),
        current.max(),
    ];
    let mut points: Vec<f64> = r
        .values()
        .iter()
        .chain(c.values())
        .copied()
        .chain(ends.into_iter().flatten())
        .collect();
    points.sort_by(f64::total_cmp);
    points.dedup();
    points
        .into_iter()
        .filter_map(|x| Some((r.rank(x)? - c.rank(x)?).abs()))
        .fold(0.0, f64::max)
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
    use crate::example::{Examples, Value};
    use crate::table::BATCH_ROWS;
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

    fn sketch(values: &[f64]) -> QuantileSketch {
        let mut sketch = QuantileSketch::new();
        values.iter().for_each(|&x| sketch.add(x));
        sketch
    }

    #[test]
    fn quantile_edges_interpolate_and_merge_ties() {
        // n = 4, q = 1/2: h = 3 · 0.5 = 1.5 → x[1] + 0.5 · (x[2] − x[1]) = 2.5.
        assert_eq!(bin_edges(&sketch(&[4.0, 1.0, 3.0, 2.0]), 2), [2.5]);
        // n = 5, q = 1/4, 2/4, 3/4: h = 1, 2, 3 → x[1], x[2], x[3] = 1, 1, 2;
        // the tie at 1 merges, leaving 3 bins.
        let edges = bin_edges(&sketch(&[1.0, 1.0, 1.0, 2.0, 3.0]), 4);
        assert_eq!(edges, [1.0, 2.0]);
        // Bins (−∞, 1], (1, 2], (2, ∞): upper edges are inclusive.
        assert_eq!(bin_counts(&[1.0, 1.0, 1.0, 2.0, 3.0], &edges), [3, 1, 1]);
        assert_eq!(bin_counts(&[-50.0, 1.5, 99.0], &edges), [1, 1, 1]);
        // q = 0.1 … 0.9 of 0..=10: h = 10q, exact order statistics 1 … 9.
        let deciles: Vec<f64> = (0..=10).map(f64::from).collect();
        assert_eq!(
            bin_edges(&sketch(&deciles), 10),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        );
        assert_eq!(bin_edges(&sketch(&[]), 10), Vec::<f64>::new());
        assert_eq!(bin_edges(&sketch(&[7.0]), 10), [7.0]);
    }

    #[test]
    fn numeric_psi_matches_hand_computation() {
        // Edge 2.5 (above). Reference 1,2 | 3,4 → shares 0.5, 0.5.
        // Current 1 | 3,4,5 → 0.25, 0.75.
        // PSI = (0.25 − 0.5) ln(0.25/0.5) + (0.75 − 0.5) ln(0.75/0.5)
        //     = 0.25 ln 2 + 0.25 ln 1.5 = 0.25 ln 3 ≈ 0.274653.
        let reference = [1.0, 2.0, 3.0, 4.0];
        let edges = bin_edges(&sketch(&reference), 2);
        assert_eq!(edges, [2.5]);
        let psi = psi(
            &bin_counts(&reference, &edges),
            &bin_counts(&[1.0, 3.0, 4.0, 5.0], &edges),
        );
        close(psi, 0.25 * 3f64.ln());
    }

    #[test]
    fn an_empty_bin_is_floored_at_epsilon() {
        // Current 3,4,5,6 leaves bin (−∞, 2.5] empty: share 0 → 1e-4.
        // PSI = (1e-4 − 0.5) ln(1e-4/0.5) + (1 − 0.5) ln(1/0.5)
        //     = −0.4999 · ln(2e-4) + 0.5 ln 2
        //     = 0.4999 · 8.517193191416238 + 0.346573590279973 ≈ 4.604318.
        let psi = psi(&[2, 2], &bin_counts(&[3.0, 4.0, 5.0, 6.0], &[2.5]));
        close(psi, 0.4999 * 8.517_193_191_416_238 + 0.5 * 2f64.ln());
    }

    #[test]
    fn ks_matches_hand_computation_with_ties() {
        let ks = |a: &[f64], b: &[f64]| ks_statistic(&sketch(a), &sketch(b));
        // Reference 1,2,2,3 (n = 4), current 2,3,3 (m = 3):
        //   x = 1: F_ref = 1/4, F_cur = 0   → 1/4
        //   x = 2: F_ref = 3/4, F_cur = 1/3 → 5/12
        //   x = 3: F_ref = 1,   F_cur = 1   → 0
        // D = 5/12. (Stepping through the tied 2s one at a time would
        // wrongly see F_ref = 1/2 against F_cur = 0.)
        close(ks(&[3.0, 2.0, 1.0, 2.0], &[2.0, 3.0, 3.0]), 5.0 / 12.0);
        // 1,2,3,4 against 1,3,4,5: gaps 0, 1/4, 1/4, 1/4, 0 → 1/4.
        close(ks(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 4.0, 5.0]), 0.25);
        // Disjoint samples: D = 1.
        assert_eq!(ks(&[1.0, 2.0], &[3.0]), 1.0);
        assert_eq!(ks(&[], &[3.0]), 1.0);
        assert_eq!(ks(&[], &[]), 0.0);
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

    const SCHEMA: &str = r#"{"schema":{"label":"y","columns":[{"name":"y","type":"string"},{"name":"x","type":"number"},{"name":"k","type":"string"}]}}"#;

    /// An Arrow examples stream of `(x, k)` rows, labels alternating.
    fn examples(rows: &[(f64, Option<&str>)]) -> Vec<u8> {
        let mut text = format!("{SCHEMA}\n");
        for (i, (x, k)) in rows.iter().enumerate() {
            let k = k.map_or("null".to_owned(), |k| format!("{k:?}"));
            text.push_str(&format!("[\"c{}\",{x},{k}]\n", i % 2));
        }
        Examples::arrow_from_json_lines(&text).unwrap()
    }

    fn compare(reference: &[u8], current: &[u8], options: &DriftOptions) -> Result<Drift> {
        Drift::read(reference, current, options)
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
        let drift = compare(&data, &data, &DriftOptions::default()).unwrap();
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
        // 50 rows, every third k missing: rows 3, 6, … 48.
        assert_eq!(drift.features[1].reference_missing, 16);
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
        let drift = compare(
            &examples(&reference),
            &examples(&current),
            &DriftOptions::default(),
        )
        .unwrap();
        let x = &drift.features[0];
        assert!(x.drifted);
        let Measure::Number { ks, bin_edges } = &x.measure else {
            panic!("x is a number column");
        };
        close(*ks, 0.5);
        // Deciles of 0..100: h = 99q → 9.9, 19.8, …, 89.1. The current's
        // 50..150 fills half of bin 5, all of bins 6..=9, and is half above.
        let expected: Vec<f64> = (1..10).map(|d| 99.0 * (d as f64 / 10.0)).collect();
        assert_eq!(*bin_edges, expected);
        let reference_values: Vec<f64> = (0..100).map(f64::from).collect();
        let current_values: Vec<f64> = (50..150).map(f64::from).collect();
        let expected_psi = psi(
            &bin_counts(&reference_values, bin_edges),
            &bin_counts(&current_values, bin_edges),
        );
        assert_eq!(x.psi, expected_psi);
        let k = &drift.features[1];
        // p 50, q 50 against p 25, r 75 (r is new: its own category).
        assert_eq!(
            k.psi,
            categorical_psi(
                &counts(&[("p", 50), ("q", 50)]),
                &counts(&[("p", 25), ("r", 75)])
            )
        );
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
            let drift = compare(&reference, &current, &options).unwrap();
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
        let drift = compare(&reference, &current, &options).unwrap();
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
        let current = Examples::arrow_from_json_lines(concat!(
            r#"{"schema":{"label":"y","columns":[{"name":"y","type":"string"},{"name":"x","type":"number"},{"name":"k","type":"number"}]}}"#,
            "\n[\"c0\",1,null]\n"
        ))
        .unwrap();
        let drift = compare(&reference, &current, &DriftOptions::default()).unwrap();
        let k = &drift.features[1];
        assert_eq!(k.ty, ColumnType::String);
        // All current rows are <missing>, which the reference never has.
        assert_eq!(k.measure, Measure::String { js: 1.0 });
        assert_eq!((k.current_count, k.current_missing), (1, 1));
        assert!(k.drifted);
        // And the other way round: a reference number column without
        // values against a current string column.
        let drift = compare(&current, &reference, &DriftOptions::default()).unwrap();
        let k = &drift.features[1];
        assert_eq!(k.ty, ColumnType::String);
        assert_eq!((k.reference_count, k.reference_missing), (1, 1));
        assert_eq!(k.measure, Measure::String { js: 1.0 });
    }

    #[test]
    fn mismatched_inputs_and_bad_options_are_rejected() {
        let data = examples(&[(1.0, Some("a"))]);
        let err = |reference: &[u8], current: &[u8], options: DriftOptions| {
            compare(reference, current, &options)
                .unwrap_err()
                .to_string()
        };
        let defaults = DriftOptions::default();
        let other = |schema: &str, row: &str| {
            Examples::arrow_from_json_lines(&format!("{schema}\n{row}\n")).unwrap()
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
        assert_eq!(
            err(&empty, &data, defaults),
            "the reference examples have no rows: nothing to compare"
        );
        assert!(
            err(&data[..data.len() - 8], &data, defaults).starts_with("examples at byte "),
            "a truncated stream names its offset"
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

    #[test]
    fn a_reference_that_changes_between_reads_is_refused() {
        let first = examples(&[(1.0, Some("a")), (2.0, Some("b"))]);
        let second = examples(&[(1.0, Some("a"))]);
        let mut reads = 0;
        let err = Drift::compute(
            || {
                reads += 1;
                Ok(if reads == 1 { &first[..] } else { &second[..] })
            },
            || Ok(&first[..]),
            &DriftOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the reference examples changed between the two reads: 2 rows on the first read, 1 on the second"
        );
    }

    /// Examples of `rows` built in code (too many for the text form).
    fn generated(rows: impl Iterator<Item = (f64, Option<String>)>) -> Vec<u8> {
        let schema = Examples::from_json_lines(SCHEMA).unwrap().schema;
        let rows = rows
            .enumerate()
            .map(|(i, (x, k))| {
                vec![
                    Value::Text(format!("c{}", i % 2)),
                    Value::Number(x),
                    k.map_or(Value::Missing, Value::Text),
                ]
            })
            .collect();
        Examples { schema, rows }.write(Vec::new()).unwrap()
    }

    #[test]
    fn streams_of_many_batches_count_exactly_over_sketched_edges() {
        let n = 2 * BATCH_ROWS + 1_234;
        // x: a permutation of 0..n (7919 is prime to n); k: 7 categories,
        // missing every 11th row. The current is x + n/2 and one more k.
        let x = |i: usize| ((i * 7919) % n) as f64;
        let category = |i: usize, m: usize| (!i.is_multiple_of(11)).then(|| format!("k{}", i % m));
        let reference = generated((0..n).map(|i| (x(i), category(i, 7))));
        let current = generated((0..n).map(|i| (x(i) + (n / 2) as f64, category(i, 8))));
        let drift = compare(&reference, &current, &DriftOptions::default()).unwrap();
        assert_eq!(
            (drift.reference_rows, drift.current_rows),
            (n as u64, n as u64)
        );

        let f = &drift.features[0];
        assert_eq!((f.reference_count, f.current_count), (n as u64, n as u64));
        let Measure::Number { ks, bin_edges } = &f.measure else {
            panic!("x is a number column");
        };
        // Edges from the sketch: each within 1% of rank of its decile.
        assert_eq!(bin_edges.len(), 9);
        for (d, edge) in bin_edges.iter().enumerate() {
            let rank = (edge.floor() + 1.0) / n as f64;
            let q = (d + 1) as f64 / 10.0;
            assert!((rank - q).abs() < 0.01, "edge {edge} for decile {q}");
        }
        // PSI from exact counts over those edges.
        let values = |shift: f64| -> Vec<f64> { (0..n).map(|i| x(i) + shift).collect() };
        let expected = psi(
            &bin_counts(&values(0.0), bin_edges),
            &bin_counts(&values((n / 2) as f64), bin_edges),
        );
        assert_eq!(f.psi, expected);
        // The true KS is ½ (half the current lies above the reference);
        // the sketches' estimate is within their rank error.
        assert!((ks - 0.5).abs() < 0.02, "ks {ks}");

        let k = &drift.features[1];
        let tally = |m: usize| {
            let mut counts = BTreeMap::new();
            for i in 0..n {
                let key = category(i, m).unwrap_or_else(|| MISSING_CATEGORY.to_owned());
                *counts.entry(key).or_insert(0) += 1;
            }
            counts
        };
        let (r, c) = (tally(7), tally(8));
        assert_eq!(k.reference_missing, r[MISSING_CATEGORY]);
        assert_eq!(k.psi, categorical_psi(&r, &c));
        assert_eq!(
            k.measure,
            Measure::String {
                js: js_distance(&r, &c)
            }
        );
    }

    #[test]
    fn beyond_categories_max_rare_values_are_lumped_as_other() {
        // Reference: 1000 distinct rare values (filling every candidate
        // slot), 1500 × "hot" (the first evicts them all), 500 more rare
        // values. Candidates: hot and r1000..r1499; the first 1000 rare
        // values are <other>. The current's "new" values are <other> too:
        // past the limit the reference's rare values are not remembered.
        let rare = |i: usize| Some(format!("r{i:04}"));
        let reference_k: Vec<Option<String>> = (0..1000)
            .map(rare)
            .chain((0..1500).map(|_| Some("hot".to_owned())))
            .chain((1000..1500).map(rare))
            .collect();
        let current_k: Vec<Option<String>> = (0..3000)
            .map(|i| Some(if i % 2 == 0 { "hot" } else { "new" }.to_owned()))
            .collect();
        let rows = |k: Vec<Option<String>>| generated(k.into_iter().map(|k| (1.0, k)));
        let drift = compare(
            &rows(reference_k),
            &rows(current_k),
            &DriftOptions::default(),
        )
        .unwrap();
        let k = &drift.features[1];
        let mut reference = counts(&[("hot", 1500), (OTHER_CATEGORY, 1000)]);
        reference.extend((1000..1500).map(|i| (format!("r{i:04}"), 1)));
        let current = counts(&[("hot", 1500), (OTHER_CATEGORY, 1500)]);
        assert_eq!(k.psi, categorical_psi(&reference, &current));
        assert_eq!(
            k.measure,
            Measure::String {
                js: js_distance(&reference, &current)
            }
        );
        assert_eq!((k.reference_count, k.current_count), (3000, 3000));
        // Against itself: the same bins on both sides, no drift.
        let same = rows((0..2500).map(|i| rare(i % 1200)).collect());
        let drift = compare(&same, &same, &DriftOptions::default()).unwrap();
        assert_eq!(drift.features[1].psi, 0.0);
        assert_eq!(drift.features[1].measure, Measure::String { js: 0.0 });
    }

    #[test]
    fn sketches_shrink_to_fit_many_columns() {
        assert_eq!(QuantileSketch::retained_max(SKETCH_K), 3_484);
        assert_eq!(sketch_k(7), 1_024);
        assert_eq!(sketch_k(1_200), 1_024);
        assert_eq!(sketch_k(1_300), 512);
        assert_eq!(sketch_k(crate::COLUMNS_MAX), SKETCH_K_MIN);
    }

    #[test]
    fn the_candidates_are_bounded_and_exact_below_the_limit() {
        let mut categories = Categories::candidates();
        for i in 0..CATEGORIES_MAX {
            categories.add(&format!("v{i}"), 1);
        }
        categories.add("v0", 1);
        let chosen = categories.chosen();
        assert!(matches!(chosen.mode, Mode::Counting { lump: false, .. }));
        assert_eq!(categories.counts["v0"], 2);
        categories.add("one too many", 1);
        assert!(matches!(
            categories.mode,
            Mode::Candidates { overflowed: true }
        ));
        // Everyone lost one: only v0 is left.
        assert_eq!(categories.counts, counts(&[("v0", 1)]));
    }
}
