//! Distinct counts in bounded memory: a HyperLogLog sketch.
//!
//! A [`HyperLogLog`] holds [`REGISTERS`] one-byte registers (4 KiB) whatever
//! the number of values added, estimates the number of distinct values
//! with a standard error of about `1.04 / sqrt(REGISTERS)` ≈ 1.6 %, and is
//! *mergeable*: the sketch of a union is the register-wise maximum of the
//! sketches of its parts, so partial sketches (per batch, per worker)
//! combine exactly as if one sketch had seen every value.
//!
//! The hash is [`hash64`], implemented here (FNV-1a, then the SplitMix64
//! finaliser to spread FNV's weak high bits), not the standard library's
//! randomly seeded hasher: a sketch, and so every estimate, is a pure
//! function of the values added, on every platform.

/// Bits of the hash that pick a register.
pub const PRECISION: u32 = 12;

/// Registers per sketch: `2^PRECISION`.
pub const REGISTERS: usize = 1 << PRECISION;

/// A deterministic 64-bit hash of `bytes`: FNV-1a, then the SplitMix64
/// finaliser.
pub fn hash64(bytes: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix64(h)
}

/// SplitMix64's finaliser: a bijection of `u64` in which every input bit
/// affects every output bit, which HyperLogLog needs of the top
/// [`PRECISION`] bits and the rest. Hashes a 64-bit key (a number's bits)
/// directly, without [`hash64`]'s byte loop.
pub fn mix64(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A HyperLogLog distinct-count sketch of [`REGISTERS`] registers.
#[derive(Clone, PartialEq, Eq)]
pub struct HyperLogLog {
    /// Per register, the largest rank (position of the first one bit, from
    /// 1) of the hashes routed to it; 0 when none was.
    registers: Box<[u8]>,
}

impl std::fmt::Debug for HyperLogLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperLogLog")
            .field("estimate", &self.estimate())
            .finish()
    }
}

impl Default for HyperLogLog {
    fn default() -> Self {
        Self::new()
    }
}

impl HyperLogLog {
    /// An empty sketch.
    pub fn new() -> Self {
        HyperLogLog {
            registers: vec![0; REGISTERS].into_boxed_slice(),
        }
    }

    /// Adds one value.
    pub fn add(&mut self, value: &[u8]) {
        self.add_hash(hash64(value));
    }

    /// Adds a value by its [`hash64`].
    pub fn add_hash(&mut self, hash: u64) {
        let index = (hash >> (64 - PRECISION)) as usize;
        let rest = hash << PRECISION;
        // The rank of the first one bit in the remaining 64 - PRECISION
        // bits; all zeros ranks one past them.
        let rank = (rest.leading_zeros().min(64 - PRECISION) + 1) as u8;
        let register = &mut self.registers[index];
        *register = (*register).max(rank);
    }

    /// Makes this the sketch of the union of both sketches' values.
    pub fn merge(&mut self, other: &HyperLogLog) {
        for (a, b) in self.registers.iter_mut().zip(other.registers.iter()) {
            *a = (*a).max(*b);
        }
    }

    /// The estimated number of distinct values added: HyperLogLog's
    /// harmonic-mean estimate, or linear counting while it is small (under
    /// 2.5 × [`REGISTERS`] with empty registers left). No large-range
    /// correction: with 64-bit hashes collisions are negligible.
    pub fn estimate(&self) -> f64 {
        let m = REGISTERS as f64;
        let mut sum = 0.0;
        let mut zeros = 0usize;
        for &r in self.registers.iter() {
            sum += f64::powi(2.0, -i32::from(r));
            if r == 0 {
                zeros += 1;
            }
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            m * libm::log(m / zeros as f64)
        } else {
            raw
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch(range: std::ops::Range<u64>) -> HyperLogLog {
        let mut h = HyperLogLog::new();
        for i in range {
            h.add(format!("value-{i}").as_bytes());
        }
        h
    }

    fn relative_error(estimate: f64, truth: f64) -> f64 {
        (estimate - truth).abs() / truth
    }

    #[test]
    fn the_hash_is_fixed_across_runs_and_platforms() {
        // Values computed independently (Python, the same constants).
        assert_eq!(hash64(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(hash64(b"Adelie"), 0x2844_b748_b4e4_541c);
    }

    #[test]
    fn an_empty_sketch_estimates_zero() {
        assert_eq!(HyperLogLog::new().estimate(), 0.0);
    }

    #[test]
    fn small_counts_are_nearly_exact() {
        let h = sketch(0..100);
        assert!(relative_error(h.estimate(), 100.0) < 0.02, "{h:?}");
        // Repeats change nothing.
        let mut again = h.clone();
        again.add(b"value-7");
        assert_eq!(again, h);
    }

    #[test]
    fn estimate_of_100k_distinct_values_is_within_3_percent() {
        let h = sketch(0..100_000);
        let e = h.estimate();
        assert!(relative_error(e, 100_000.0) < 0.03, "estimate {e}");
    }

    #[test]
    fn merging_sketches_equals_sketching_the_union() {
        let mut a = sketch(0..60_000);
        let b = sketch(40_000..100_000);
        a.merge(&b);
        assert_eq!(a, sketch(0..100_000));
        // Merging is idempotent.
        let before = a.clone();
        a.merge(&b);
        assert_eq!(a, before);
    }
}
