//! One pass over examples, per column, in memory bounded by the columns
//! and [`CATEGORIES_MAX`], never by the rows: counts, missing values,
//! moments and distinct counts of numbers, value counts of strings.
//! Statistics, the validation schema and the transform's fitted parameters
//! are all read off a [`Profile`].
//!
//! A string column keeps exact value counts ([`Categories::Exact`]) while
//! it has at most [`CATEGORIES_MAX`] distinct values. The first value past
//! that makes it free text ([`Categories::Overflowed`]): its counts become
//! a Misra-Gries heavy-hitters summary ([`TopValues`], at most
//! [`CATEGORIES_MAX`] counters) and its distinct count a [`HyperLogLog`].
//! A number column's distinct values are likewise kept exactly up to
//! [`CATEGORIES_MAX`], then sketched, and its values feed a KLL
//! [`QuantileSketch`] (exact for the first [`crate::quantile::DEFAULT_K`]
//! values, about 1% rank error after, about 10 KiB per column).
//!
//! Every part is *mergeable* ([`Profile::merge`]): profiles of two halves of
//! the rows merge into the profile of the whole: counts, minima, maxima
//! and exact value counts exactly; mean and variance up to rounding (Chan
//! et al.'s pairwise update); sketches within their error bounds.
//!
//! A profile is a pure function of the rows in order: no hash-map
//! iteration order, a fixed hash, a fixed order of float operations.

use std::collections::BTreeMap;
use std::io::Read;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, RecordBatch};

use crate::distinct::{HyperLogLog, mix64};
use crate::example::{ColumnType, ExampleReader, Schema, Value};
use crate::quantile::QuantileSketch;
use crate::{CATEGORIES_MAX, Error, Result};

/// Running count, mean, variance (Welford's method, stable in one pass),
/// minimum and maximum of numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Moments {
    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        if self.count == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Adds the values `other` saw (Chan et al.'s pairwise update: exact
    /// count, minimum and maximum; mean and variance up to rounding).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let (n_a, n_b) = (self.count as f64, other.count as f64);
        let n = n_a + n_b;
        let delta = other.mean - self.mean;
        self.mean += delta * (n_b / n);
        self.m2 += other.m2 + delta * delta * (n_a * n_b / n);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
    }

    /// How many values were added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean; `None` without values.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// The population standard deviation (divides by n, not n − 1); `None`
    /// without values.
    pub fn std(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.m2 / self.count as f64).sqrt())
    }

    /// The smallest value; `None` without values.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// The largest value; `None` without values.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }
}

/// A distinct count: exact, or a sketch's estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Distinct {
    /// How many distinct values (estimated when not `exact`).
    pub count: u64,
    /// Whether `count` is exact.
    pub exact: bool,
}

/// The most frequent values of a stream in at most `capacity` counters:
/// the Misra-Gries summary. A value seen more than
/// `n / (capacity + 1)` times in `n` values is always kept; a kept count
/// is at most [`TopValues::error_max`] below the true count, never above.
#[derive(Clone, Debug, PartialEq)]
pub struct TopValues {
    counts: BTreeMap<String, u64>,
    capacity: usize,
    error_max: u64,
}

impl TopValues {
    /// Starts from exact counts (at most `capacity` of them, else the
    /// smallest are pruned as by a merge).
    fn from_exact(counts: BTreeMap<String, u64>, capacity: usize) -> Self {
        let mut top = TopValues {
            counts,
            capacity,
            error_max: 0,
        };
        top.prune();
        top
    }

    /// Counts one value.
    pub fn add(&mut self, value: &str) {
        if let Some(n) = self.counts.get_mut(value) {
            *n += 1;
        } else if self.counts.len() < self.capacity {
            self.counts.insert(value.to_owned(), 1);
        } else {
            // No counter free: the new value and every counter lose one
            // (amortised O(1): each decrement undoes an earlier increment).
            self.counts.retain(|_, n| {
                *n -= 1;
                *n > 0
            });
            self.error_max += 1;
        }
    }

    /// Adds the values `other` counted (Agarwal et al.'s mergeable
    /// summaries: sum the counters, then subtract the
    /// `capacity + 1`-th largest so at most `capacity` stay positive).
    pub fn merge(&mut self, other: &TopValues) {
        for (value, n) in &other.counts {
            *self.counts.entry(value.clone()).or_insert(0) += n;
        }
        self.error_max += other.error_max;
        self.prune();
    }

    fn prune(&mut self) {
        if self.counts.len() <= self.capacity {
            return;
        }
        let mut sorted: Vec<u64> = self.counts.values().copied().collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let cut = sorted[self.capacity];
        self.counts.retain(|_, n| {
            *n -= cut.min(*n);
            *n > 0
        });
        self.error_max += cut;
    }

    /// How many counters are held (at most the capacity).
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The most a kept count may be below the true count.
    pub fn error_max(&self) -> u64 {
        self.error_max
    }

    /// The counters, sorted by value.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }
}

/// A string column's values.
#[derive(Clone, Debug, PartialEq)]
pub enum Categories {
    /// At most [`CATEGORIES_MAX`] distinct values, each with its exact
    /// count, sorted by value.
    Exact(BTreeMap<String, u64>),
    /// More: the column is free text.
    Overflowed {
        /// Approximate counts of the most frequent values.
        top: TopValues,
        /// The distinct values, sketched.
        distinct: HyperLogLog,
    },
}

impl Default for Categories {
    fn default() -> Self {
        Categories::Exact(BTreeMap::new())
    }
}

impl Categories {
    /// Counts one value.
    pub fn add(&mut self, value: &str) {
        match self {
            Categories::Exact(counts) => {
                if let Some(n) = counts.get_mut(value) {
                    *n += 1;
                } else if counts.len() < CATEGORIES_MAX {
                    counts.insert(value.to_owned(), 1);
                } else {
                    self.overflow();
                    self.add(value);
                }
            }
            Categories::Overflowed { top, distinct } => {
                top.add(value);
                distinct.add(value.as_bytes());
            }
        }
    }

    /// Turns exact counts into sketches.
    fn overflow(&mut self) {
        if let Categories::Exact(counts) = self {
            let counts = std::mem::take(counts);
            *self = Self::sketched(counts);
        }
    }

    fn sketched(counts: BTreeMap<String, u64>) -> Self {
        let mut distinct = HyperLogLog::new();
        for value in counts.keys() {
            distinct.add(value.as_bytes());
        }
        Categories::Overflowed {
            top: TopValues::from_exact(counts, CATEGORIES_MAX),
            distinct,
        }
    }

    /// Adds the values `other` counted.
    pub fn merge(&mut self, other: &Categories) {
        match (&mut *self, other) {
            (Categories::Exact(a), Categories::Exact(b)) => {
                for (value, n) in b {
                    *a.entry(value.clone()).or_insert(0) += n;
                }
                if a.len() > CATEGORIES_MAX {
                    self.overflow();
                }
            }
            (Categories::Exact(_), Categories::Overflowed { .. }) => {
                self.overflow();
                self.merge(other);
            }
            (Categories::Overflowed { .. }, Categories::Exact(b)) => {
                self.merge(&Self::sketched(b.clone()));
            }
            (
                Categories::Overflowed { top, distinct },
                Categories::Overflowed {
                    top: other_top,
                    distinct: other_distinct,
                },
            ) => {
                top.merge(other_top);
                distinct.merge(other_distinct);
            }
        }
    }

    /// The exact counts, sorted by value; `None` for free text.
    pub fn exact(&self) -> Option<&BTreeMap<String, u64>> {
        match self {
            Categories::Exact(counts) => Some(counts),
            Categories::Overflowed { .. } => None,
        }
    }

    /// How many distinct values.
    pub fn distinct(&self) -> Distinct {
        match self {
            Categories::Exact(counts) => Distinct {
                count: counts.len() as u64,
                exact: true,
            },
            // There were more than CATEGORIES_MAX, whatever the sketch says.
            Categories::Overflowed { distinct, .. } => Distinct {
                count: (distinct.estimate().round() as u64).max(CATEGORIES_MAX as u64 + 1),
                exact: false,
            },
        }
    }

    /// Up to `n` most frequent values, most frequent first, ties by value:
    /// exact counts, or lower bounds at most [`Categories::top_error_max`]
    /// below the truth for free text.
    pub fn top(&self, n: usize) -> Vec<(&str, u64)> {
        let counts = match self {
            Categories::Exact(counts) => counts,
            Categories::Overflowed { top, .. } => &top.counts,
        };
        let mut top: Vec<(&str, u64)> = counts.iter().map(|(v, n)| (v.as_str(), *n)).collect();
        // Stable sort: equal counts keep the map's value order.
        top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        top.truncate(n);
        top
    }

    /// How far below the truth a [`Categories::top`] count may be.
    pub fn top_error_max(&self) -> u64 {
        match self {
            Categories::Exact(_) => 0,
            Categories::Overflowed { top, .. } => top.error_max,
        }
    }

    /// Counters held in memory (at most [`CATEGORIES_MAX`]).
    pub fn held(&self) -> usize {
        match self {
            Categories::Exact(counts) => counts.len(),
            Categories::Overflowed { top, .. } => top.len(),
        }
    }
}

/// A number column's distinct values: exact up to [`CATEGORIES_MAX`] (as
/// bit patterns, `-0.0` counted as `0.0`), then sketched.
#[derive(Clone, Debug, PartialEq)]
pub enum DistinctNumbers {
    /// The values seen, while at most [`CATEGORIES_MAX`].
    Exact(NumberSet),
    /// More: a sketch.
    Sketch(HyperLogLog),
}

/// A set of at most [`CATEGORIES_MAX`] numbers' bit patterns: open
/// addressing over a fixed table of twice as many slots, probed from
/// [`mix64`] of the key (a lookup per value is the hot path of profiling a
/// number column; a `BTreeSet` costs several times more).
#[derive(Clone, Debug, PartialEq)]
pub struct NumberSet {
    slots: Box<[u64]>,
    len: usize,
}

/// No finite number has these bits (they are a NaN), so they mark a free
/// slot.
const FREE: u64 = u64::MAX;

/// Slots of a [`NumberSet`]: a power of two at least twice
/// [`CATEGORIES_MAX`], so probes stay short.
const NUMBER_SLOTS: usize = (2 * CATEGORIES_MAX).next_power_of_two();

impl NumberSet {
    fn new() -> Self {
        NumberSet {
            slots: vec![FREE; NUMBER_SLOTS].into_boxed_slice(),
            len: 0,
        }
    }

    /// Inserts `key`; `false` when the set is full and `key` is not in it.
    fn insert(&mut self, key: u64) -> bool {
        let mask = NUMBER_SLOTS - 1;
        let mut i = mix64(key) as usize & mask;
        loop {
            match self.slots[i] {
                k if k == key => return true,
                FREE if self.len < CATEGORIES_MAX => {
                    self.slots[i] = key;
                    self.len += 1;
                    return true;
                }
                FREE => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().copied().filter(|&k| k != FREE)
    }

    /// How many numbers are held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for DistinctNumbers {
    fn default() -> Self {
        DistinctNumbers::Exact(NumberSet::new())
    }
}

impl DistinctNumbers {
    fn key(x: f64) -> u64 {
        if x == 0.0 { 0 } else { x.to_bits() }
    }

    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        let key = Self::key(x);
        match self {
            DistinctNumbers::Exact(set) => {
                if !set.insert(key) {
                    self.overflow();
                    self.add(x);
                }
            }
            DistinctNumbers::Sketch(h) => h.add_hash(mix64(key)),
        }
    }

    fn overflow(&mut self) {
        if let DistinctNumbers::Exact(set) = self {
            let mut h = HyperLogLog::new();
            for key in set.keys() {
                h.add_hash(mix64(key));
            }
            *self = DistinctNumbers::Sketch(h);
        }
    }

    /// Adds the values `other` saw.
    pub fn merge(&mut self, other: &DistinctNumbers) {
        match (&mut *self, other) {
            (DistinctNumbers::Exact(a), DistinctNumbers::Exact(b)) => {
                let fits = b.keys().all(|key| a.insert(key));
                if !fits {
                    self.overflow();
                    self.merge(other);
                }
            }
            (DistinctNumbers::Exact(_), DistinctNumbers::Sketch(_)) => {
                self.overflow();
                self.merge(other);
            }
            (DistinctNumbers::Sketch(a), DistinctNumbers::Exact(b)) => {
                for key in b.keys() {
                    a.add_hash(mix64(key));
                }
            }
            (DistinctNumbers::Sketch(a), DistinctNumbers::Sketch(b)) => a.merge(b),
        }
    }

    /// How many distinct values.
    pub fn distinct(&self) -> Distinct {
        match self {
            DistinctNumbers::Exact(set) => Distinct {
                count: set.len() as u64,
                exact: true,
            },
            DistinctNumbers::Sketch(h) => Distinct {
                count: (h.estimate().round() as u64).max(CATEGORIES_MAX as u64 + 1),
                exact: false,
            },
        }
    }
}

/// What one pass saw of one column.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnProfile {
    /// The column name.
    pub name: String,
    /// The column type.
    pub ty: ColumnType,
    /// Rows with a value.
    pub count: u64,
    /// Rows without one.
    pub missing: u64,
    /// Moments of a number column's values.
    pub moments: Moments,
    /// A number column's distinct values.
    pub numbers: DistinctNumbers,
    /// A number column's values as a bounded, mergeable quantile sketch.
    pub quantiles: QuantileSketch,
    /// A string column's values.
    pub categories: Categories,
}

impl ColumnProfile {
    fn add_number(&mut self, x: f64) {
        self.moments.add(x);
        self.numbers.add(x);
        self.quantiles.add(x);
    }

    /// How many distinct values the column has.
    pub fn distinct(&self) -> Distinct {
        match self.ty {
            ColumnType::Number => self.numbers.distinct(),
            ColumnType::String => self.categories.distinct(),
        }
    }

    fn merge(&mut self, other: &ColumnProfile) {
        self.count += other.count;
        self.missing += other.missing;
        self.moments.merge(&other.moments);
        self.numbers.merge(&other.numbers);
        self.quantiles.merge(&other.quantiles);
        self.categories.merge(&other.categories);
    }
}

/// What one pass saw of every column.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// The schema of the profiled examples.
    pub schema: Schema,
    /// Rows seen.
    pub rows: u64,
    /// One per schema column, in order.
    pub columns: Vec<ColumnProfile>,
}

impl Profile {
    /// An empty profile of examples with `schema`.
    pub fn new(schema: &Schema) -> Self {
        Profile {
            schema: schema.clone(),
            rows: 0,
            columns: schema
                .columns
                .iter()
                .map(|c| ColumnProfile {
                    name: c.name.clone(),
                    ty: c.ty,
                    count: 0,
                    missing: 0,
                    moments: Moments::default(),
                    numbers: DistinctNumbers::default(),
                    quantiles: QuantileSketch::new(),
                    categories: Categories::default(),
                })
                .collect(),
        }
    }

    /// Adds one row, checked by [`ExampleReader`] to match the schema.
    pub fn add(&mut self, row: &[Value]) {
        self.rows += 1;
        for (column, value) in self.columns.iter_mut().zip(row) {
            match value {
                Value::Missing => column.missing += 1,
                Value::Number(x) => {
                    column.count += 1;
                    column.add_number(*x);
                }
                Value::Text(t) => {
                    column.count += 1;
                    column.categories.add(t);
                }
            }
        }
    }

    /// Adds a batch of rows with the profile's schema (as read by
    /// [`ExampleReader::next_batch`]), column by column.
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_columns() != self.columns.len() {
            return Err(Error::invalid(format!(
                "a batch of {} columns does not fit a profile of {}",
                batch.num_columns(),
                self.columns.len()
            )));
        }
        let rows = batch.num_rows() as u64;
        for (column, array) in self.columns.iter_mut().zip(batch.columns()) {
            let missing = array.null_count() as u64;
            column.missing += missing;
            column.count += rows - missing;
            let mismatch = || {
                Error::invalid(format!(
                    "column `{}` of a batch is {}, not the profile's {} column",
                    column.name,
                    array.data_type(),
                    column.ty.name()
                ))
            };
            match column.ty {
                ColumnType::Number => {
                    let numbers = array
                        .as_primitive_opt::<Float64Type>()
                        .ok_or_else(mismatch)?;
                    if missing == 0 {
                        for &x in numbers.values() {
                            column.add_number(x);
                        }
                    } else {
                        for x in numbers.iter().flatten() {
                            column.add_number(x);
                        }
                    }
                }
                ColumnType::String => {
                    let strings = array.as_string_opt::<i32>().ok_or_else(mismatch)?;
                    for value in strings.iter().flatten() {
                        column.categories.add(value);
                    }
                }
            }
        }
        self.rows += rows;
        Ok(())
    }

    /// Adds what `other`, a profile of other rows with the same schema,
    /// saw: the result is the profile of both sets of rows.
    pub fn merge(&mut self, other: &Profile) -> Result<()> {
        if self.schema != other.schema {
            return Err(Error::invalid(
                "profiles of examples with different schemas cannot be merged",
            ));
        }
        self.rows += other.rows;
        for (a, b) in self.columns.iter_mut().zip(&other.columns) {
            a.merge(b);
        }
        Ok(())
    }

    /// Profiles every remaining row of `reader`, a batch at a time.
    pub fn read(mut reader: ExampleReader<impl Read>) -> Result<Self> {
        let mut profile = Profile::new(reader.schema());
        while let Some(batch) = reader.next_batch()? {
            profile.add_batch(&batch)?;
        }
        Ok(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::Examples;

    #[test]
    fn moments_match_hand_computed_values() {
        let mut m = Moments::default();
        assert_eq!(
            (m.mean(), m.std(), m.min(), m.max()),
            (None, None, None, None)
        );
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            m.add(x);
        }
        assert_eq!(m.count(), 8);
        assert_eq!(m.mean(), Some(5.0));
        assert_eq!(m.std(), Some(2.0));
        assert_eq!((m.min(), m.max()), (Some(2.0), Some(9.0)));
    }

    #[test]
    fn moments_of_one_value_have_zero_spread() {
        let mut m = Moments::default();
        m.add(-3.5);
        assert_eq!((m.mean(), m.std()), (Some(-3.5), Some(0.0)));
        assert_eq!((m.min(), m.max()), (Some(-3.5), Some(-3.5)));
    }

    #[test]
    fn merged_moments_equal_one_pass_up_to_rounding() {
        let xs: Vec<f64> = (0..1001)
            .map(|i| ((i * 37) % 101) as f64 * 0.25 - 3.0)
            .collect();
        let mut whole = Moments::default();
        xs.iter().for_each(|&x| whole.add(x));
        let (mut a, mut b) = (Moments::default(), Moments::default());
        xs[..400].iter().for_each(|&x| a.add(x));
        xs[400..].iter().for_each(|&x| b.add(x));
        a.merge(&b);
        assert_eq!(a.count(), whole.count());
        assert_eq!((a.min(), a.max()), (whole.min(), whole.max()));
        let close = |p: Option<f64>, q: Option<f64>| (p.unwrap() - q.unwrap()).abs() < 1e-12;
        assert!(close(a.mean(), whole.mean()), "{a:?} {whole:?}");
        assert!(close(a.std(), whole.std()), "{a:?} {whole:?}");
        // Merging with nothing changes nothing, either way round.
        let mut empty = Moments::default();
        empty.merge(&whole);
        assert_eq!(empty, whole);
        whole.merge(&Moments::default());
        assert_eq!(empty, whole);
    }

    /// Examples of one string column `k` holding `values` in order.
    fn strings(values: impl IntoIterator<Item = String>) -> Vec<u8> {
        let mut text =
            String::from(r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"}]}}"#);
        for v in values {
            text.push_str(&format!("\n[\"{v}\"]"));
        }
        Examples::arrow_from_json_lines(&text).unwrap()
    }

    fn profile(bytes: &[u8]) -> Profile {
        Profile::read(ExampleReader::new(bytes).unwrap()).unwrap()
    }

    /// 5000 distinct values, skewed: `hot0` 20 000 times, `hot1` 10 000,
    /// `hot2` 5 000, then `cold0..cold4996` once each; interleaved so the
    /// hot values do not all come first.
    fn skewed() -> Vec<String> {
        let mut values = Vec::new();
        let mut hot = [20_000, 10_000, 5_000];
        let mut cold = 0;
        while hot.iter().any(|&n| n > 0) || cold < 4997 {
            for (i, n) in hot.iter_mut().enumerate() {
                if *n > 0 {
                    values.push(format!("hot{i}"));
                    *n -= 1;
                }
            }
            if cold < 4997 {
                values.push(format!("cold{cold}"));
                cold += 1;
            }
        }
        values
    }

    #[test]
    fn a_column_past_categories_max_overflows_into_bounded_sketches() {
        let values = skewed();
        let rows = values.len() as u64;
        assert_eq!(rows, 35_000 + 4997);
        let p = profile(&strings(values));
        let column = &p.columns[0];
        assert_eq!((column.count, column.missing), (rows, 0));
        assert!(column.categories.exact().is_none());
        // Memory is bounded: at most CATEGORIES_MAX counters are held.
        assert!(column.categories.held() <= CATEGORIES_MAX);
        let distinct = column.distinct();
        assert!(!distinct.exact);
        assert!(distinct.count.abs_diff(5000) < 150, "{distinct:?}");
        // The heavy hitters come out in order, each count a lower bound
        // within the summary's error bound, which is within n / (k + 1).
        let error = column.categories.top_error_max();
        assert!(error <= rows / (CATEGORIES_MAX as u64 + 1), "{error}");
        let top = column.categories.top(3);
        let names: Vec<&str> = top.iter().map(|(v, _)| *v).collect();
        assert_eq!(names, ["hot0", "hot1", "hot2"]);
        for ((_, n), truth) in top.iter().zip([20_000, 10_000, 5_000]) {
            assert!(
                *n <= truth && *n + error >= truth,
                "{n} vs {truth} ± {error}"
            );
        }
    }

    #[test]
    fn a_column_of_exactly_categories_max_values_stays_exact() {
        let p = profile(&strings((0..CATEGORIES_MAX).map(|i| format!("v{i}"))));
        let column = &p.columns[0];
        assert_eq!(column.categories.exact().unwrap().len(), CATEGORIES_MAX);
        assert_eq!(
            column.distinct(),
            Distinct {
                count: CATEGORIES_MAX as u64,
                exact: true
            }
        );
    }

    #[test]
    fn merging_profiles_of_two_halves_equals_one_pass() {
        let text = concat!(
            r#"{"schema":{"label":"k","columns":[{"name":"k","type":"string"},{"name":"x","type":"number"}]}}"#,
            "\n[\"b\",1.0]\n[\"a\",3.0]\n[null,null]\n[\"b\",5.0]\n[\"c\",3.0]\n"
        );
        let all = Examples::from_json_lines(text).unwrap();
        let whole = profile(&all.write(Vec::new()).unwrap());
        let mut first = Profile::new(&all.schema);
        let mut second = Profile::new(&all.schema);
        all.rows[..2].iter().for_each(|r| first.add(r));
        all.rows[2..].iter().for_each(|r| second.add(r));
        first.merge(&second).unwrap();
        // The quantile sketches hold the same values; only their coin
        // state records that one of them was merged.
        for (merged, one_pass) in first.columns.iter_mut().zip(&whole.columns) {
            let sorted = |q: &QuantileSketch| q.sorted().values().to_vec();
            assert_eq!(sorted(&merged.quantiles), sorted(&one_pass.quantiles));
            merged.quantiles = one_pass.quantiles.clone();
        }
        // Every value here is exact in binary, so the merged mean and
        // variance are bit-equal too.
        assert_eq!(first, whole);
        assert_eq!(whole.columns[1].distinct().count, 3);
        let mut other = Profile::new(&crate::example::Schema {
            label: "k".into(),
            columns: vec![all.schema.columns[0].clone()],
        });
        assert_eq!(
            other.merge(&whole).unwrap_err().to_string(),
            "profiles of examples with different schemas cannot be merged"
        );
    }

    #[test]
    fn merging_overflowed_halves_stays_within_the_sketch_bounds() {
        let values = skewed();
        let rows = values.len() as u64;
        let (left, right) = values.split_at(values.len() / 3);
        let mut a = profile(&strings(left.to_vec()));
        let b = profile(&strings(right.to_vec()));
        a.merge(&b).unwrap();
        let column = &a.columns[0];
        assert_eq!(a.rows, rows);
        assert!(column.categories.held() <= CATEGORIES_MAX);
        assert!(column.distinct().count.abs_diff(5000) < 150);
        let error = column.categories.top_error_max();
        assert!(error <= 2 * rows / (CATEGORIES_MAX as u64 + 1), "{error}");
        let top = column.categories.top(3);
        for ((v, n), (name, truth)) in
            top.iter()
                .zip([("hot0", 20_000), ("hot1", 10_000), ("hot2", 5_000)])
        {
            assert_eq!(*v, name);
            assert!(
                *n <= truth && *n + error >= truth,
                "{n} vs {truth} ± {error}"
            );
        }
        // An exact profile merged into an overflowed one, and the reverse,
        // agree on what is exact.
        let small = profile(&strings(["hot0".to_string()]));
        let mut x = small.clone();
        x.merge(&b).unwrap();
        let mut y = b.clone();
        y.merge(&small).unwrap();
        assert_eq!(x.rows, y.rows);
        assert_eq!(x.columns[0].distinct(), y.columns[0].distinct());
    }

    #[test]
    fn top_values_summary_never_overcounts_and_keeps_heavy_hitters() {
        let mut top = TopValues::from_exact(BTreeMap::new(), 2);
        for v in ["a", "b", "a", "c", "a", "d", "b", "a"] {
            top.add(v);
        }
        // Two values ("c", then "b") arrive with both counters taken, and
        // each costs every counter one: "a" is seen 4 times, counted 2.
        assert_eq!(
            top.counts().iter().collect::<Vec<_>>(),
            [(&"a".to_string(), &2)]
        );
        assert_eq!(top.error_max(), 2);
    }

    #[test]
    fn number_distinct_counts_are_exact_then_sketched() {
        let mut d = DistinctNumbers::default();
        for x in [0.0, -0.0, 1.5, 1.5] {
            d.add(x);
        }
        assert_eq!(
            d.distinct(),
            Distinct {
                count: 2,
                exact: true
            }
        );
        // Exactly CATEGORIES_MAX values, in two halves merged, stay exact.
        let (mut a, mut b) = (DistinctNumbers::default(), DistinctNumbers::default());
        (0..600).for_each(|i| a.add(i as f64));
        (400..CATEGORIES_MAX).for_each(|i| b.add(i as f64));
        a.merge(&b);
        let exact = |count| Distinct { count, exact: true };
        assert_eq!(a.distinct(), exact(CATEGORIES_MAX as u64));
        b.add(-1.0);
        b.add(-2.0);
        a.merge(&b);
        assert!(!a.distinct().exact);
        assert!(a.distinct().count.abs_diff(1002) < 30, "{:?}", a.distinct());
        for i in 0..10_000 {
            d.add(i as f64);
        }
        let distinct = d.distinct();
        assert!(!distinct.exact);
        // Within 3 standard errors (1.6 % each) of the truth.
        assert!(distinct.count.abs_diff(10_001) < 500, "{distinct:?}");
    }
}
