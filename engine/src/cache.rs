//! The step cache: `<home>/cache/<key>.json` → the outputs and metrics of a
//! successful execution.
//!
//! Invariant: the key covers everything that decides a step's bytes
//! (component digest, WIT world, resolved params, input digests by name,
//! declared outputs, the limits that decide success, the run seed and the
//! determinism settings); a hit is used only if every output blob verifies.
//! Only the engine writes entries.
//! Boundary: reads and writes entry files; does not execute anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::Limits;
use crate::store::{Digest, Store};

/// Bumped whenever the meaning of a key or entry changes.
pub const CACHE_VERSION: u32 = 1;

/// Names the determinism settings a cached result was produced under.
pub const DETERMINISM: &str = "nan-canonicalization,relaxed-simd-deterministic,no-threads,virtual-clocks-v1,chacha20-random-v1";

/// An output as recorded in caches and reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    /// `sha256:<hex>`.
    pub digest: Digest,
    /// Bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
}

/// Everything that goes into a key.
#[derive(Debug, Serialize)]
pub struct KeyParts<'a> {
    /// [`CACHE_VERSION`].
    pub version: u32,
    /// The WIT world.
    pub world: &'a str,
    /// Component digest.
    pub component: Digest,
    /// Resolved params.
    pub params: &'a BTreeMap<String, String>,
    /// Input digests by name.
    pub inputs: BTreeMap<&'a str, Digest>,
    /// Declared outputs, sorted.
    pub outputs: Vec<&'a str>,
    /// Memory, fuel and output limits.
    pub limits: [u64; 3],
    /// The run seed.
    pub seed: u64,
    /// [`DETERMINISM`].
    pub determinism: &'a str,
    /// The step's gpu grant (absent for steps without one, so their keys
    /// are unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<&'a crate::gpu::Grant>,
}

impl KeyParts<'_> {
    /// The key: sha256 of the canonical JSON of the parts.
    pub fn key(&self) -> Digest {
        Digest::of(&serde_json::to_vec(self).expect("key parts serialize"))
    }
}

/// Builds a key from a step's pieces.
pub fn key(
    component: Digest,
    params: &BTreeMap<String, String>,
    inputs: &BTreeMap<String, OutputRef>,
    outputs: &[String],
    limits: &Limits,
    seed: u64,
    gpu: Option<&crate::gpu::Grant>,
) -> Digest {
    let mut outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    outputs.sort_unstable();
    KeyParts {
        version: CACHE_VERSION,
        world: sluice_host_api::WORLD,
        component,
        params,
        inputs: inputs.iter().map(|(k, v)| (k.as_str(), v.digest)).collect(),
        outputs,
        limits: limits.cache_relevant(),
        seed,
        determinism: DETERMINISM,
        gpu,
    }
    .key()
}

/// A cached execution.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The key this entry answers.
    pub key: Digest,
    /// Which step produced it (informational).
    pub step: String,
    /// The run that produced it.
    pub run_id: String,
    /// Outputs by name.
    pub outputs: BTreeMap<String, OutputRef>,
    /// Final metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Metric series.
    #[serde(default)]
    pub series: BTreeMap<String, Vec<(u64, f64)>>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The gpu jobs of the execution (record copies), so a run answered
    /// from the cache still records them and can be replayed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_jobs: Vec<crate::gpu::JobReport>,
}

/// The cache under `<home>/cache`.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens the cache directory under `home`.
    pub fn open(home: &Path) -> std::io::Result<Cache> {
        let dir = home.join("cache");
        std::fs::create_dir_all(&dir)?;
        Ok(Cache { dir })
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// A usable hit: the entry parses, answers `key`, and every output blob
    /// is in the store and verifies. Anything else is a miss (and a corrupt
    /// blob is quarantined by the store so re-execution can rewrite it).
    pub fn lookup(&self, key: &Digest, store: &Store) -> Option<Entry> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let entry: Entry = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(%key, error = %e, "ignoring unreadable cache entry");
                return None;
            }
        };
        if entry.key != *key {
            tracing::warn!(%key, "ignoring cache entry filed under the wrong key");
            return None;
        }
        for (name, out) in &entry.outputs {
            match store.verify(&out.digest) {
                Ok(size) if size == out.size => {}
                Ok(_) | Err(_) => {
                    tracing::warn!(%key, output = %name, digest = %out.digest, "cached output unusable; re-executing");
                    return None;
                }
            }
        }
        Some(entry)
    }

    /// Files `entry` under its key. Entries are derived data: not fsynced
    /// (a lost entry costs a re-execution, never a wrong answer).
    pub fn insert(&self, entry: &Entry) -> Result<(), crate::store::StoreError> {
        let bytes = serde_json::to_vec_pretty(entry).expect("cache entries serialize");
        crate::store::write_atomic(&self.path(&entry.key), &bytes, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(d: &[u8]) -> OutputRef {
        OutputRef {
            digest: Digest::of(d),
            size: d.len() as u64,
            media_type: "text/plain".into(),
        }
    }

    #[test]
    fn key_changes_with_each_part_and_only_then() {
        let comp = Digest::of(b"component");
        let params = BTreeMap::from([("lr".to_string(), "0.1".to_string())]);
        let inputs = BTreeMap::from([("in".to_string(), out(b"data"))]);
        let outputs = vec!["out".to_string()];
        let limits = Limits::default();
        let base = key(comp, &params, &inputs, &outputs, &limits, 0, None);
        assert_eq!(
            base,
            key(comp, &params, &inputs, &outputs, &limits, 0, None)
        );
        let timeout_only = Limits {
            timeout_s: 1,
            ..limits
        };
        assert_eq!(
            base,
            key(comp, &params, &inputs, &outputs, &timeout_only, 0, None)
        );
        let p2 = BTreeMap::from([("lr".to_string(), "0.2".to_string())]);
        let i2 = BTreeMap::from([("in".to_string(), out(b"other"))]);
        let fuel = Limits { fuel: 5, ..limits };
        let grant = crate::gpu::Grant {
            worker: "cpu".into(),
            max_jobs: 1,
            min_free_memory_mib: 0,
        };
        let more_jobs = crate::gpu::Grant {
            max_jobs: 2,
            ..grant.clone()
        };
        let gpu_key = key(comp, &params, &inputs, &outputs, &limits, 0, Some(&grant));
        assert_ne!(
            gpu_key,
            key(
                comp,
                &params,
                &inputs,
                &outputs,
                &limits,
                0,
                Some(&more_jobs)
            )
        );
        for other in [
            gpu_key,
            key(
                Digest::of(b"c2"),
                &params,
                &inputs,
                &outputs,
                &limits,
                0,
                None,
            ),
            key(comp, &p2, &inputs, &outputs, &limits, 0, None),
            key(comp, &params, &i2, &outputs, &limits, 0, None),
            key(comp, &params, &inputs, &["x".to_string()], &limits, 0, None),
            key(comp, &params, &inputs, &outputs, &fuel, 0, None),
            key(comp, &params, &inputs, &outputs, &limits, 1, None),
        ] {
            assert_ne!(base, other);
        }
    }
}
