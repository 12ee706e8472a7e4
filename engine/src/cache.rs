//! The step cache: `<home>/cache/<key>.json` → the outputs and metrics of a
//! successful execution.
//!
//! Invariant: the key is the digest of an [`crate::attempt::Description`],
//! which holds everything a guest can observe during an attempt and
//! everything that decides whether the attempt succeeds (the table of what
//! is in it, and why, is in [`crate::attempt`]); so two attempts with equal
//! keys produce equal bytes, and a hit is used only if every output blob
//! verifies. Only the engine writes entries.
//! Boundary: reads and writes entry files; does not execute anything.

use crate::artifact::OutputRef;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::store::Store;

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

/// The namespace of cache entries in the shared store.
const CACHE_DOCS: &str = "cache";
/// Most bytes of a cache entry read from the shared store.
const ENTRY_BYTES_MAX: u64 = 64 << 20;

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
        let bytes = match std::fs::read(self.path(key)) {
            Ok(b) => b,
            // Another node's entry, through the shared store.
            Err(_) => match store.remote()?.get_doc(CACHE_DOCS, key, ENTRY_BYTES_MAX) {
                Ok(found) => found?,
                Err(e) => {
                    tracing::warn!(%key, error = %e, "cannot read the shared cache entry");
                    return None;
                }
            },
        };
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
    /// (a lost entry costs a re-execution, never a wrong answer). With a
    /// shared store the entry is also created there, once (first writer
    /// wins: equal keys have equal outputs), for the other nodes.
    pub fn insert(&self, entry: &Entry, store: &Store) -> Result<(), crate::store::StoreError> {
        let bytes = serde_json::to_vec_pretty(entry).expect("cache entries serialize");
        let path = self.path(&entry.key);
        crate::fault::point("cache").map_err(|source| crate::store::StoreError::Io {
            path: path.clone(),
            source,
        })?;
        crate::durable::write_atomic(&path, &bytes, false)
            .map_err(crate::store::StoreError::from)?;
        if let Some(remote) = store.remote() {
            remote.put_doc_once(CACHE_DOCS, &entry.key, &bytes)?;
        }
        Ok(())
    }
}
