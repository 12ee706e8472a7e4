//! Penguins-shaped data at any scale, for tests and benchmarks: the columns
//! of `examples/data/penguins.csv` (Palmer Penguins), with each species'
//! island, sex and year mix and the mean and spread of its four measures
//! taken from the real data, and the same kind of missing values (`NA`).
//!
//! Invariant: the bytes depend only on `(rows, seed)` — on every platform:
//! the generator uses integer arithmetic, additions of `f64`s and Rust's
//! exact decimal formatting, no transcendental function whose last bit
//! could differ between math libraries. Rows are streamed, so memory does
//! not depend on `rows`.
//! Boundary: writes CSV text to the writer it is given; nothing else.

use std::io::{self, Write};

/// The header, as in `examples/data/penguins.csv`.
pub const HEADER: &str =
    "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year";

/// One species as the real data shows it.
struct Species {
    name: &'static str,
    /// Relative frequency (its row count in the real data).
    weight: u64,
    /// Islands with their relative frequencies.
    islands: &'static [(&'static str, u64)],
    /// Rows with no measures and no sex, per 1000.
    missing_per_mille: u64,
    /// Rows with measures but no sex, per 1000.
    no_sex_per_mille: u64,
    /// (mean, standard deviation, min, max) of bill length, bill depth,
    /// flipper length and body mass.
    measures: [(f64, f64, f64, f64); 4],
}

const SPECIES: [Species; 3] = [
    Species {
        name: "Adelie",
        weight: 152,
        islands: &[("Dream", 56), ("Torgersen", 52), ("Biscoe", 44)],
        missing_per_mille: 7,
        no_sex_per_mille: 33,
        measures: [
            (38.79, 2.66, 32.1, 46.0),
            (18.35, 1.22, 15.5, 21.5),
            (189.95, 6.54, 172.0, 210.0),
            (3700.66, 458.57, 2850.0, 4775.0),
        ],
    },
    Species {
        name: "Gentoo",
        weight: 124,
        islands: &[("Biscoe", 124)],
        missing_per_mille: 8,
        no_sex_per_mille: 32,
        measures: [
            (47.5, 3.08, 40.9, 59.6),
            (14.98, 0.98, 13.1, 17.3),
            (217.19, 6.48, 203.0, 231.0),
            (5076.02, 504.12, 3950.0, 6300.0),
        ],
    },
    Species {
        name: "Chinstrap",
        weight: 68,
        islands: &[("Dream", 68)],
        missing_per_mille: 0,
        no_sex_per_mille: 0,
        measures: [
            (48.83, 3.34, 40.9, 58.0),
            (18.42, 1.14, 16.4, 20.8),
            (195.82, 7.13, 178.0, 212.0),
            (3733.09, 384.34, 2700.0, 4800.0),
        ],
    },
];

/// SplitMix64: a small, fast, well-distributed generator whose output is
/// fixed by its seed on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is below 2^-40 for the
    /// small `n` used here.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Approximately standard normal: the Irwin–Hall sum of 12 uniforms,
    /// minus 6 (mean 0, variance 1, tails cut at ±6). Additions only, so
    /// bit-identical everywhere.
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }

    /// An index into `weights`, chosen in proportion to them.
    fn weighted(&mut self, weights: impl Iterator<Item = u64> + Clone) -> usize {
        let total: u64 = weights.clone().sum();
        let mut pick = self.below(total);
        for (i, w) in weights.enumerate() {
            if pick < w {
                return i;
            }
            pick -= w;
        }
        unreachable!("pick < total")
    }
}

/// The usage line of the `penguins-gen` example.
pub const USAGE: &str = "usage: penguins-gen ROWS [SEED]  (non-negative integers)";

/// `(rows, seed)` from the arguments of `penguins-gen ROWS [SEED]` (seed 0
/// by default), or `None` for anything else.
pub fn parse_args(args: &[String]) -> Option<(u64, u64)> {
    match args {
        [rows] => Some((rows.parse().ok()?, 0)),
        [rows, seed] => Some((rows.parse().ok()?, seed.parse().ok()?)),
        _ => None,
    }
}

/// Writes a header and `rows` penguins-shaped rows to `out`, determined by
/// `seed` alone. Wrap `out` in a `BufWriter` for speed.
pub fn write_penguins(out: &mut impl Write, rows: u64, seed: u64) -> io::Result<()> {
    let mut rng = SplitMix64(seed);
    writeln!(out, "{HEADER}")?;
    for _ in 0..rows {
        let s = &SPECIES[rng.weighted(SPECIES.iter().map(|s| s.weight))];
        let island = s.islands[rng.weighted(s.islands.iter().map(|i| i.1))].0;
        let year = 2007 + rng.below(3);
        let roll = rng.below(1000);
        if roll < s.missing_per_mille {
            writeln!(out, "{},{island},NA,NA,NA,NA,NA,{year}", s.name)?;
            continue;
        }
        let sex = if roll < s.missing_per_mille + s.no_sex_per_mille {
            "NA"
        } else if rng.below(2) == 0 {
            "female"
        } else {
            "male"
        };
        let mut value = |i: usize| {
            let (mean, sd, min, max) = s.measures[i];
            (mean + sd * rng.normal()).clamp(min, max)
        };
        let bill_length = value(0);
        let bill_depth = value(1);
        let flipper = value(2).round();
        // Body mass is recorded in steps of 25 g.
        let mass = (value(3) / 25.0).round() * 25.0;
        writeln!(
            out,
            "{},{island},{bill_length:.1},{bill_depth:.1},{flipper:.0},{mass:.0},{sex},{year}",
            s.name
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(rows: u64, seed: u64) -> String {
        let mut out = Vec::new();
        write_penguins(&mut out, rows, seed).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn arguments_are_rows_and_an_optional_seed() {
        let args = |a: &[&str]| parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(args(&["10"]), Some((10, 0)));
        assert_eq!(args(&["10", "7"]), Some((10, 7)));
        for bad in [&[][..], &["many"], &["10", "-1"], &["10", "1", "2"]] {
            assert_eq!(args(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_bytes_depend_on_rows_and_seed_only() {
        assert_eq!(generate(500, 7), generate(500, 7));
        assert_ne!(generate(500, 7), generate(500, 8));
        // A longer file starts with the shorter one: rows are a stream.
        assert!(generate(600, 7).starts_with(&generate(500, 7)));
    }

    /// The first rows of seed 0 are pinned: a change to the generator
    /// changes every benchmark's data and must be deliberate.
    #[test]
    fn the_first_rows_of_seed_0_are_pinned() {
        let text = generate(3, 0);
        let expected = [HEADER, PINNED_ROWS[0], PINNED_ROWS[1], PINNED_ROWS[2]].join("\n") + "\n";
        assert_eq!(text, expected);
    }

    const PINNED_ROWS: [&str; 3] = [
        "Chinstrap,Dream,50.2,19.9,190,3375,male,2008",
        "Chinstrap,Dream,49.4,20.6,191,3500,female,2009",
        "Gentoo,Biscoe,50.9,15.2,219,4800,female,2009",
    ];

    #[test]
    fn rows_have_the_real_columns_mix_and_measures() {
        let text = generate(30_000, 1);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        let mut count = [0u64; 3];
        let mut sums = [[0f64; 4]; 3];
        let mut measured = [0u64; 3];
        let mut na = 0;
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 8, "{line}");
            let i = SPECIES.iter().position(|s| s.name == f[0]).unwrap();
            assert!(SPECIES[i].islands.iter().any(|x| x.0 == f[1]), "{line}");
            assert!(matches!(f[6], "male" | "female" | "NA"), "{line}");
            assert!(matches!(f[7], "2007" | "2008" | "2009"), "{line}");
            count[i] += 1;
            if f[2] == "NA" {
                na += 1;
                continue;
            }
            measured[i] += 1;
            for m in 0..4 {
                let v: f64 = f[2 + m].parse().unwrap();
                let (_, _, min, max) = SPECIES[i].measures[m];
                assert!((min..=max).contains(&v), "{line}");
                sums[i][m] += v;
            }
        }
        assert_eq!(count.iter().sum::<u64>(), 30_000);
        // Species shares within 2 points of the real 44% / 36% / 20%.
        for (i, s) in SPECIES.iter().enumerate() {
            let share = count[i] as f64 / 30_000.0;
            let real = s.weight as f64 / 344.0;
            assert!((share - real).abs() < 0.02, "{}: {share} vs {real}", s.name);
            for (m, (sum, (real_mean, ..))) in sums[i].iter().zip(s.measures).enumerate() {
                let mean = sum / measured[i] as f64;
                assert!(
                    (mean - real_mean).abs() < 0.01 * real_mean,
                    "{} measure {m}: {mean} vs {real_mean}",
                    s.name
                );
            }
        }
        assert!(na > 0 && na < 600, "{na} rows without measures");
    }
}
