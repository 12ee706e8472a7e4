//! Per-step sandbox limits: defaults and the operator's ceilings. Which of
//! them enter the step cache key, and why, is decided in `attempt`.
//!
//! Invariant: every limit is finite and at most its ceiling.

use serde::{Deserialize, Serialize};

/// Keys accepted in a step's `limits = { ... }` table.
pub const KEYS: &[&str] = &["memory_mib", "fuel", "timeout_s", "output_mib", "log_kib"];

/// Default linear-memory limit: enough for the example steps' datasets.
pub const MEMORY_MIB_DEFAULT: u64 = 512;
/// The largest memory limit a spec may ask for (wasm32 addresses 4 GiB).
pub const MEMORY_MIB_CEILING: u64 = 4096;
/// Default fuel: ~10^11 wasm operations, minutes of CPU, so the time limit
/// usually binds first for honest steps.
pub const FUEL_DEFAULT: u64 = 100_000_000_000;
/// The largest fuel budget a spec may ask for.
pub const FUEL_CEILING: u64 = 10_000_000_000_000;
/// Default wall-clock limit per attempt.
pub const TIMEOUT_S_DEFAULT: u64 = 600;
/// The largest wall-clock limit a spec may ask for: one day.
pub const TIMEOUT_S_CEILING: u64 = 86_400;
/// Default cap on all outputs of one attempt together.
pub const OUTPUT_MIB_DEFAULT: u64 = 1024;
/// The largest output cap a spec may ask for.
pub const OUTPUT_MIB_CEILING: u64 = 1 << 20;
/// Default cap on captured stdout and on captured stderr (each).
pub const LOG_KIB_DEFAULT: u64 = 1024;
/// The largest log cap a spec may ask for.
pub const LOG_KIB_CEILING: u64 = 64 * 1024;
/// Host calls per attempt; a step making more is stuck in a loop.
pub const HOST_CALLS_MAX: u64 = 50_000_000;
/// Live resource handles per attempt (WASI and ours together).
pub const HANDLES_MAX: usize = 10_000;
/// Wasm stack per attempt; deep recursion traps as `limit: stack`.
pub const STACK_BYTES_MAX: usize = 1 << 20;

/// The limits of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Linear memory, MiB.
    pub memory_mib: u64,
    /// Fuel units (deterministic CPU budget).
    pub fuel: u64,
    /// Wall-clock limit per attempt, seconds.
    pub timeout_s: u64,
    /// All outputs together, MiB.
    pub output_mib: u64,
    /// Captured stdout and stderr, KiB each.
    pub log_kib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: MEMORY_MIB_DEFAULT,
            fuel: FUEL_DEFAULT,
            timeout_s: TIMEOUT_S_DEFAULT,
            output_mib: OUTPUT_MIB_DEFAULT,
            log_kib: LOG_KIB_DEFAULT,
        }
    }
}

impl Limits {
    /// Memory limit in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }

    /// Output limit in bytes.
    pub fn output_bytes(&self) -> u64 {
        self.output_mib << 20
    }

    /// Log cap in bytes.
    pub fn log_bytes(&self) -> usize {
        (self.log_kib << 10) as usize
    }

    /// The first limit above its ceiling, as (key, value, ceiling); `None`
    /// when every limit is within bounds. The spec enforces the same
    /// bounds; the attempt seam checks them again for requests that did
    /// not come from a spec.
    pub fn out_of_bounds(&self) -> Option<(&'static str, u64, u64)> {
        [
            ("memory_mib", self.memory_mib, MEMORY_MIB_CEILING),
            ("fuel", self.fuel, FUEL_CEILING),
            ("timeout_s", self.timeout_s, TIMEOUT_S_CEILING),
            ("output_mib", self.output_mib, OUTPUT_MIB_CEILING),
            ("log_kib", self.log_kib, LOG_KIB_CEILING),
        ]
        .into_iter()
        .find(|(_, value, ceiling)| value > ceiling)
    }
}
