//! Resolving a pipeline's components: crates built, bytes read, digested
//! and stored, each compiled at most once per run.
//!
//! Invariant: a component that cannot be resolved fails only the steps
//! that use it.
//! Boundary: reads component files and builds crates; runs nothing.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::build;
use crate::digest::Digest;
use crate::sandbox::{self, Prepared};
use crate::spec::{ComponentSource, Pipeline};
use crate::store::Store;

/// A component compiled at most once per run, shared by every step using it.
pub(crate) type PreparedSlot = Arc<OnceLock<Result<Arc<Prepared>, String>>>;

/// A resolved component: where its bytes are, and its digest.
pub(crate) struct Resolved {
    pub(super) path: PathBuf,
    pub(super) digest: Digest,
    pub(super) bytes: Arc<Vec<u8>>,
    pub(super) prepared: PreparedSlot,
}

/// Builds crates, reads component bytes and digests them. A component that
/// cannot be resolved fails only the steps that use it.
pub(crate) fn resolve_components(
    pipeline: &Pipeline,
    store: &Store,
) -> Vec<Result<Arc<Resolved>, String>> {
    let dirs = |python: bool| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = pipeline
            .steps
            .iter()
            .filter_map(|s| match &s.component {
                ComponentSource::Crate(dir) if !python => Some(dir.clone()),
                ComponentSource::Python(dir) if python => Some(dir.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let (crates, python) = (dirs(false), dirs(true));
    let mut built: BTreeMap<PathBuf, Result<PathBuf, String>> = if crates.is_empty() {
        BTreeMap::new()
    } else {
        build::build_crates(&crates)
            .into_iter()
            .map(|(dir, r)| (dir, r.map_err(|e| e.to_string())))
            .collect()
    };
    if !python.is_empty() {
        built.extend(crate::pybuild::build_python_steps(&python));
    }
    let mut by_path: HashMap<PathBuf, Result<Arc<Resolved>, String>> = HashMap::new();
    let mut by_digest: HashMap<Digest, PreparedSlot> = HashMap::new();
    pipeline
        .steps
        .iter()
        .map(|step| {
            let wasm = match &step.component {
                ComponentSource::Wasm(p) => Ok(p.clone()),
                ComponentSource::Stored(digest) => {
                    if !store.contains(digest) {
                        return Err(format!("component {digest} is not in the store"));
                    }
                    Ok(store.path_of(digest))
                }
                ComponentSource::Crate(dir) | ComponentSource::Python(dir) => {
                    match built.get(dir) {
                        Some(Ok(p)) => Ok(p.clone()),
                        Some(Err(e)) => Err(e.clone()),
                        None => Err(format!("step {} was not built", dir.display())),
                    }
                }
            }?;
            by_path
                .entry(wasm.clone())
                .or_insert_with(|| {
                    let meta = fs::metadata(&wasm)
                        .map_err(|e| format!("component {}: {e}", wasm.display()))?;
                    if meta.len() > sandbox::COMPONENT_BYTES_MAX {
                        return Err(format!(
                            "component {} is {} bytes; the limit is {}",
                            wasm.display(),
                            meta.len(),
                            sandbox::COMPONENT_BYTES_MAX
                        ));
                    }
                    let bytes = fs::read(&wasm)
                        .map_err(|e| format!("component {}: {e}", wasm.display()))?;
                    let digest = Digest::of(&bytes);
                    if let ComponentSource::Stored(want) = &step.component
                        && *want != digest
                    {
                        return Err(format!(
                            "component {want}: the stored bytes hash to {digest} (corrupt blob)"
                        ));
                    }
                    let prepared = by_digest.entry(digest).or_default().clone();
                    Ok(Arc::new(Resolved {
                        path: wasm.clone(),
                        digest,
                        bytes: Arc::new(bytes),
                        prepared,
                    }))
                })
                .clone()
        })
        .collect()
}
