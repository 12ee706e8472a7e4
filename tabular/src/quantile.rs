//! A bounded, mergeable quantile sketch for `f64` streams: quantiles,
//! ranks and CDFs of data far larger than memory.
//!
//! # Why KLL
//!
//! [`QuantileSketch`] is a KLL sketch (Karnin, Lang and Liberty, *Optimal
//! Quantile Approximation in Streams*, 2016), in the compaction scheme of
//! Apache DataSketches' `KllDoublesSketch`. Against the alternatives:
//!
//! - **t-digest** is accurate in the tails but has no proven rank-error
//!   bound, and its result depends on floating-point centroid arithmetic
//!   (means of means), so merge order changes the numbers.
//! - **GK** (Greenwald–Khanna) is deterministic with a worst-case bound,
//!   but is not mergeable without losing its guarantee, and its space grows
//!   with `log(εn)`.
//! - **KLL** keeps *actual values* (so a sketch that never compacted is
//!   exact, and every reported quantile is a value of the stream or an
//!   interpolation between two), merges by concatenating levels, and has a
//!   rank-error bound independent of the stream length in constant space.
//!
//! # How it works
//!
//! Values live in *levels*; an item at level `h` stands for `2^h` values
//! of the stream. New values go to level 0. When the sketch holds more
//! items than its capacity, the lowest level at or over its own capacity is
//! *compacted*: sorted, and every other item (the odd or the even ones, by
//! a coin flip) moves up one level with twice the weight; with an odd
//! number of items one stays behind. Level capacities shrink by 2/3 per
//! level below the top (never below [`LEVEL_CAPACITY_MIN`]), so the total is
//! about `3k` whatever the stream length. Total weight always equals
//! [`QuantileSketch::count`].
//!
//! # Guarantees
//!
//! - **Memory:** at most [`QuantileSketch::retained_max`] items (1,200 for
//!   the default `k` = [`DEFAULT_K`] = 256: under 10 KiB), for any stream
//!   length, after every [`QuantileSketch::add`] and
//!   [`QuantileSketch::merge`].
//! - **Exactness:** until the first compaction (the first `k` values) the
//!   sketch holds every value and every answer is exact.
//! - **Rank error:** for any `x`, `|rank(x) − true rank(x)| ≤ ε` with
//!   probability 99%, where `ε ≈ 1.05%` for `k` = 256 (DataSketches'
//!   empirical bound `2.296 / k^0.9723` for single rank queries, which
//!   applies to this compaction scheme; the KLL paper proves
//!   `ε = O(√log(1/δ) / k)`). Typical errors are a third of that; the
//!   tests check deciles of 1 M values within 1%. Merged sketches have the
//!   same bound. The coin flips make the error a random variable, but:
//! - **Determinism:** the coins come from a fixed-seeded generator kept in
//!   the sketch (splitmix64), values are ordered by [`f64::total_cmp`], and
//!   there is no hashing: the same values added in the same order (and
//!   merged in the same order) give the same sketch, bit for bit, on every
//!   platform. Capacities are computed in integers.
//!
//! `NaN` is not a value: [`QuantileSketch::add`] ignores it.

/// The default accuracy parameter: about 1% rank error, about 10 KiB.
pub const DEFAULT_K: usize = 256;

/// The smallest capacity of a level; small levels compact too often to be
/// worth their bookkeeping.
pub const LEVEL_CAPACITY_MIN: usize = 8;

/// The smallest and largest `k` [`QuantileSketch::with_k`] accepts: below
/// 8 the rank error is tens of percent; above 65,536 the sketch stops
/// being small (half a MiB).
pub const K_RANGE: std::ops::RangeInclusive<usize> = 8..=65_536;

/// Most levels a sketch can have: an item at level `h` weighs `2^h`, and
/// the count is a `u64`; one more for the empty level a compaction of the
/// top level creates.
const LEVELS_MAX: usize = 65;

/// The generator's fixed seed (the first 64 bits of π's fraction), so two
/// sketches fed alike flip the same coins.
const SEED: u64 = 0x243F_6A88_85A3_08D3;

/// A KLL quantile sketch of `f64` values; see the [module docs](self).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantileSketch {
    k: usize,
    /// `levels[h]`: items of weight `2^h`; level 0 in arrival order, the
    /// others in no particular order (sorted when compacted or queried).
    levels: Vec<Vec<f64>>,
    /// Items in `levels`, and their total capacity: kept, not summed, as
    /// `add` checks them for every value.
    retained: usize,
    capacity: usize,
    count: u64,
    min: f64,
    max: f64,
    /// splitmix64 state: the compaction coins.
    rng: u64,
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl QuantileSketch {
    /// An empty sketch with `k` = [`DEFAULT_K`].
    pub fn new() -> Self {
        Self::with_k(DEFAULT_K)
    }

    /// An empty sketch with accuracy parameter `k`, clamped to
    /// [`K_RANGE`]: rank error about `2.3 / k`, memory about `3k` values.
    pub fn with_k(k: usize) -> Self {
        let k = k.clamp(*K_RANGE.start(), *K_RANGE.end());
        QuantileSketch {
            k,
            levels: vec![Vec::new()],
            retained: 0,
            capacity: level_capacity(k, 0),
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            rng: SEED,
        }
    }

    /// The accuracy parameter.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Values added (merged sketches' included); `NaN`s are not counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether no value was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The smallest value, exactly; `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (!self.is_empty()).then_some(self.min)
    }

    /// The largest value, exactly; `None` when empty.
    pub fn max(&self) -> Option<f64> {
        (!self.is_empty()).then_some(self.max)
    }

    /// Items held now (the memory the sketch uses, in values).
    pub fn retained(&self) -> usize {
        self.retained
    }

    /// Whether the sketch still holds every value it was given, so its
    /// answers are exact.
    pub fn is_exact(&self) -> bool {
        self.retained() as u64 == self.count
    }

    /// The most items a sketch with parameter `k` ever holds, whatever the
    /// stream: its capacity at `LEVELS_MAX` levels (1,200 for `k` = 256).
    pub fn retained_max(k: usize) -> usize {
        let k = k.clamp(*K_RANGE.start(), *K_RANGE.end());
        (0..LEVELS_MAX).map(|depth| level_capacity(k, depth)).sum()
    }

    /// Adds one value; `NaN` is ignored.
    pub fn add(&mut self, x: f64) {
        if x.is_nan() {
            return;
        }
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.levels[0].push(x);
        self.retained += 1;
        if self.retained > self.capacity {
            self.compress();
        }
    }

    /// Adds every value of `other`, as if its values had been added here
    /// (with the same error bound). The result depends on the order of
    /// merges, deterministically.
    pub fn merge(&mut self, other: &QuantileSketch) {
        if other.is_empty() {
            return;
        }
        while self.levels.len() < other.levels.len() {
            self.push_level();
        }
        for (level, items) in self.levels.iter_mut().zip(&other.levels) {
            level.extend_from_slice(items);
        }
        self.retained += other.retained;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        // Both coin sequences contribute, so merging a different sketch
        // flips different coins from here on.
        self.rng ^= splitmix64(&mut other.rng.clone());
        self.compress();
    }

    /// The `q`-quantile, `q` in `[0, 1]`: linear interpolation between
    /// order statistics (Hyndman and Fan's type 7, NumPy's default): with
    /// `n` values and `h = (n − 1)·q`, `x(⌊h⌋) + (h − ⌊h⌋)·(x(⌊h⌋+1) − x(⌊h⌋))`.
    /// Order statistics come from the sketch (exact while
    /// [`QuantileSketch::is_exact`]); `q` = 0 and 1 give the exact min and
    /// max. `None` when empty or `q` is outside `[0, 1]`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.sorted().quantile(q)
    }

    /// The fraction of values `≤ x` (the empirical CDF at `x`), within the
    /// rank error; exact below the min and at or above the max. `None`
    /// when empty.
    pub fn rank(&self, x: f64) -> Option<f64> {
        self.sorted().rank(x)
    }

    /// Same as [`QuantileSketch::rank`].
    pub fn cdf(&self, x: f64) -> Option<f64> {
        self.rank(x)
    }

    /// The retained items sorted with their weights, for many queries at
    /// the cost of one sort.
    pub fn sorted(&self) -> SortedView {
        let mut items: Vec<(f64, u64)> = self
            .levels
            .iter()
            .enumerate()
            .flat_map(|(h, level)| level.iter().map(move |&x| (x, 1u64 << h)))
            .collect();
        items.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut values = Vec::with_capacity(items.len());
        let mut cumulative = Vec::with_capacity(items.len());
        let mut total = 0u64;
        for (x, weight) in items {
            total += weight;
            values.push(x);
            cumulative.push(total);
        }
        SortedView {
            values,
            cumulative,
            count: self.count,
            min: self.min,
            max: self.max,
        }
    }

    fn push_level(&mut self) {
        self.levels.push(Vec::new());
        self.capacity = (0..self.levels.len())
            .map(|depth| level_capacity(self.k, depth))
            .sum();
    }

    /// Compacts until the sketch is within its capacity. Each compaction
    /// halves (about) one level, so this ends.
    fn compress(&mut self) {
        while self.retained > self.capacity {
            let top = self.levels.len() - 1;
            let Some(h) =
                (0..=top).find(|&h| self.levels[h].len() >= level_capacity(self.k, top - h))
            else {
                // Unreachable: the levels are over their total capacity,
                // so one is over its own. Stop rather than loop.
                return;
            };
            if h == top {
                if self.levels.len() == LEVELS_MAX {
                    // Unreachable for a u64 count; refuse to grow.
                    return;
                }
                self.push_level();
            }
            self.compact(h);
        }
    }

    fn compact(&mut self, h: usize) {
        let mut items = std::mem::take(&mut self.levels[h]);
        // An odd item out stays behind at its weight.
        let left = if items.len() % 2 == 1 {
            items.pop()
        } else {
            None
        };
        items.sort_by(f64::total_cmp);
        let offset = (splitmix64(&mut self.rng) >> 63) as usize;
        // Half of an even number of items moves up; the other half goes.
        let promoted = items.iter().skip(offset).step_by(2).copied();
        self.levels[h + 1].extend(promoted);
        self.retained -= items.len() / 2;
        items.clear();
        items.extend(left);
        self.levels[h] = items;
    }
}

/// Capacity of the level `depth` levels below the top: `⌈k·(2/3)^depth⌉`,
/// at least [`LEVEL_CAPACITY_MIN`], in integers so every platform agrees.
fn level_capacity(k: usize, depth: usize) -> usize {
    let mut capacity = k;
    for _ in 0..depth {
        if capacity <= LEVEL_CAPACITY_MIN {
            break;
        }
        capacity = (capacity * 2).div_ceil(3);
    }
    capacity.max(LEVEL_CAPACITY_MIN)
}

/// One step of splitmix64 (Steele, Lea and Flood, 2014).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A sketch's retained items, sorted, with cumulative weights
/// ([`QuantileSketch::sorted`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SortedView {
    values: Vec<f64>,
    /// `cumulative[i]`: the weight of `values[..=i]`.
    cumulative: Vec<u64>,
    count: u64,
    min: f64,
    max: f64,
}

impl SortedView {
    /// The retained items, ascending (with repeats).
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// See [`QuantileSketch::rank`].
    pub fn rank(&self, x: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        if x < self.min {
            return Some(0.0);
        }
        if x >= self.max {
            return Some(1.0);
        }
        let i = self.values.partition_point(|&v| v <= x);
        let weight = if i == 0 { 0 } else { self.cumulative[i - 1] };
        Some(weight as f64 / self.count as f64)
    }

    /// See [`QuantileSketch::quantile`].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let last = self.count - 1;
        let h = last as f64 * q;
        let lo = (h.floor() as u64).min(last);
        let hi = (lo + 1).min(last);
        let (a, b) = (self.order_statistic(lo), self.order_statistic(hi));
        Some((a + (h - lo as f64) * (b - a)).clamp(self.min, self.max))
    }

    /// The estimated `i`-th smallest value (0-based): the first retained
    /// item whose cumulative weight exceeds `i`; the exact min and max at
    /// the ends.
    fn order_statistic(&self, i: u64) -> f64 {
        if i == 0 {
            return self.min;
        }
        if i + 1 >= self.count {
            return self.max;
        }
        let j = self.cumulative.partition_point(|&c| c <= i);
        self.values
            .get(j)
            .copied()
            .unwrap_or(self.max)
            .clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded test generator: uniform in `[0, 1)` from splitmix64.
    struct Uniform(u64);

    impl Uniform {
        fn next(&mut self) -> f64 {
            (splitmix64(&mut self.0) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    const N: usize = 1_000_000;

    fn exact_rank(sorted: &[f64], x: f64) -> f64 {
        sorted.partition_point(|&v| v <= x) as f64 / sorted.len() as f64
    }

    /// Every decile's rank error, and every rank query's at the true
    /// deciles, is within `bound`.
    #[track_caller]
    fn check_deciles(sketch: &QuantileSketch, sorted: &[f64], bound: f64) {
        assert_eq!(sketch.count(), sorted.len() as u64);
        for d in 1..10 {
            let q = d as f64 / 10.0;
            let estimate = sketch.quantile(q).unwrap();
            let error = (exact_rank(sorted, estimate) - q).abs();
            assert!(
                error <= bound,
                "decile {q}: {estimate} has rank error {error}"
            );
            let truth = sorted[((sorted.len() - 1) as f64 * q) as usize];
            let error = (sketch.rank(truth).unwrap() - exact_rank(sorted, truth)).abs();
            assert!(error <= bound, "rank({truth}) is off by {error}");
        }
    }

    fn streams() -> [(&'static str, Vec<f64>); 2] {
        let mut g = Uniform(1);
        let uniform: Vec<f64> = (0..N).map(|_| g.next()).collect();
        // Log-normal-like: exp of a sum of uniforms, heavily right-skewed,
        // with a run of ties (a tenth of the values are exactly 0).
        let skewed: Vec<f64> = (0..N)
            .map(|i| {
                if i % 10 == 3 {
                    0.0
                } else {
                    (6.0 * (g.next() + g.next() + g.next() - 1.5)).exp()
                }
            })
            .collect();
        [("uniform", uniform), ("skewed", skewed)]
    }

    fn sorted(values: &[f64]) -> Vec<f64> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    #[test]
    fn deciles_of_a_million_values_are_within_one_percent_in_bounded_memory() {
        let max = QuantileSketch::retained_max(DEFAULT_K);
        assert_eq!(max, 1_200);
        for (name, values) in streams() {
            let mut sketch = QuantileSketch::new();
            let mut most = 0;
            for &x in &values {
                sketch.add(x);
                most = most.max(sketch.retained());
            }
            assert!(most <= max, "{name}: held {most} > {max}");
            assert!(!sketch.is_exact());
            let sorted = sorted(&values);
            assert_eq!(sketch.min(), Some(sorted[0]), "{name}");
            assert_eq!(sketch.max(), Some(sorted[N - 1]), "{name}");
            check_deciles(&sketch, &sorted, 0.01);
        }
    }

    #[test]
    fn a_merge_of_two_halves_is_within_the_same_bound() {
        for (name, values) in streams() {
            let (mut left, mut right) = (QuantileSketch::new(), QuantileSketch::new());
            let (a, b) = values.split_at(N / 3);
            a.iter().for_each(|&x| left.add(x));
            b.iter().for_each(|&x| right.add(x));
            left.merge(&right);
            assert!(
                left.retained() <= QuantileSketch::retained_max(DEFAULT_K),
                "{name}: {}",
                left.retained()
            );
            check_deciles(&left, &sorted(&values), 0.01);
        }
    }

    #[test]
    fn a_sketch_that_never_compacted_is_exact() {
        let values = [4.0, 1.0, 3.0, 2.0, 2.0];
        let mut sketch = QuantileSketch::new();
        values.iter().for_each(|&x| sketch.add(x));
        assert!(sketch.is_exact());
        assert_eq!(sketch.retained(), 5);
        // Sorted 1, 2, 2, 3, 4; h = 4q.
        assert_eq!(sketch.quantile(0.0), Some(1.0));
        assert_eq!(sketch.quantile(0.5), Some(2.0));
        assert_eq!(sketch.quantile(0.625), Some(2.5));
        assert_eq!(sketch.quantile(0.875), Some(3.5));
        assert_eq!(sketch.quantile(1.0), Some(4.0));
        assert_eq!(sketch.rank(0.5), Some(0.0));
        assert_eq!(sketch.rank(2.0), Some(0.6));
        assert_eq!(sketch.cdf(2.5), Some(0.6));
        assert_eq!(sketch.rank(4.0), Some(1.0));
        assert_eq!((sketch.min(), sketch.max()), (Some(1.0), Some(4.0)));
        // Up to k values are held exactly.
        let mut full = QuantileSketch::new();
        (0..DEFAULT_K).for_each(|i| full.add(i as f64));
        assert!(full.is_exact());
        assert_eq!(full.quantile(0.5), Some(127.5));
        full.add(-1.0);
        assert!(!full.is_exact());
    }

    #[test]
    fn nan_is_ignored_and_bad_queries_are_none() {
        let mut sketch = QuantileSketch::new();
        assert_eq!(sketch.quantile(0.5), None);
        assert_eq!(sketch.rank(1.0), None);
        assert_eq!((sketch.min(), sketch.max()), (None, None));
        sketch.add(f64::NAN);
        assert_eq!(sketch.count(), 0);
        sketch.add(7.0);
        assert_eq!(sketch.quantile(1.5), None);
        assert_eq!(sketch.quantile(-0.1), None);
        assert_eq!(sketch.quantile(f64::NAN), None);
        assert_eq!(sketch.quantile(0.3), Some(7.0));
    }

    #[test]
    fn the_same_input_gives_the_same_sketch() {
        let build = || {
            let mut g = Uniform(9);
            let mut sketch = QuantileSketch::with_k(64);
            (0..100_000).for_each(|_| sketch.add(g.next()));
            sketch
        };
        let (a, b) = (build(), build());
        assert_eq!(a, b);
        let bits = |s: &QuantileSketch| -> Vec<u64> {
            s.sorted().values().iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits(&a), bits(&b));
        // The coins are the seeded generator's: pinned, so a change to the
        // compaction or the generator shows here.
        assert_eq!(a.retained(), 218);
        assert_eq!(
            a.quantile(0.5).unwrap().to_bits(),
            4_602_552_565_123_956_834
        );
    }

    #[test]
    fn capacities_shrink_by_two_thirds_to_a_floor() {
        let caps: Vec<usize> = (0..12).map(|d| level_capacity(256, d)).collect();
        assert_eq!(caps, [256, 171, 114, 76, 51, 34, 23, 16, 11, 8, 8, 8]);
        assert_eq!(QuantileSketch::with_k(1).k(), 8);
        assert_eq!(QuantileSketch::with_k(1 << 30).k(), 65_536);
    }

    #[test]
    fn merging_empty_and_small_sketches_is_exact() {
        let mut a = QuantileSketch::new();
        [3.0, 1.0].iter().for_each(|&x| a.add(x));
        let mut b = QuantileSketch::new();
        [2.0].iter().for_each(|&x| b.add(x));
        a.merge(&QuantileSketch::new());
        a.merge(&b);
        assert!(a.is_exact());
        assert_eq!(a.count(), 3);
        assert_eq!(a.quantile(0.5), Some(2.0));
        assert_eq!(a.rank(2.0), Some(2.0 / 3.0));
    }
}
