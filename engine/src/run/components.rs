//! Resolving a pipeline's components: crates built, bytes read, digested
//! and stored, each compiled at most once per run.
//!
//! Invariant: a component that cannot be resolved fails only the steps
//! that use it.
//! Boundary: reads component files and builds crates; runs nothing.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::build;
use crate::digest::Digest;
use crate::sandbox::{self, Prepared};
use crate::scriptbuild::{self, SourceBuild};
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
    /// For a Python or JavaScript step: the sources it was built from.
    pub(super) source: Option<SourceBuild>,
}

/// Builds crates, reads component bytes and digests them. A component that
/// cannot be resolved fails only the steps that use it.
pub(crate) fn resolve_components(
    pipeline: &Pipeline,
    store: &Store,
) -> Vec<Result<Arc<Resolved>, String>> {
    let mut crates: Vec<PathBuf> = Vec::new();
    let mut scripts: Vec<PathBuf> = Vec::new();
    for step in &pipeline.steps {
        match &step.component {
            ComponentSource::Crate(dir) => crates.push(dir.clone()),
            ComponentSource::Python(dir) | ComponentSource::JavaScript(dir) => {
                scripts.push(dir.clone())
            }
            ComponentSource::Wasm(_) | ComponentSource::Stored(_) => {}
        }
    }
    for dirs in [&mut crates, &mut scripts] {
        dirs.sort();
        dirs.dedup();
    }
    let mut built: BTreeMap<PathBuf, Result<PathBuf, String>> = if crates.is_empty() {
        BTreeMap::new()
    } else {
        build::build_crates(&crates)
            .into_iter()
            .map(|(dir, r)| (dir, r.map_err(|e| e.to_string())))
            .collect()
    };
    // Script builds come with their bytes (already checked against the
    // digest recorded at build time) and the sources they were built from.
    let mut scripted: HashMap<PathBuf, (Arc<Vec<u8>>, Digest, SourceBuild)> = HashMap::new();
    if !scripts.is_empty() {
        for (dir, result) in scriptbuild::build_script_steps(&scripts) {
            let wasm = result.map(|b| {
                scripted.insert(b.wasm.clone(), (b.bytes, b.component, b.source));
                b.wasm
            });
            built.insert(dir, wasm);
        }
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
                ComponentSource::Crate(dir)
                | ComponentSource::Python(dir)
                | ComponentSource::JavaScript(dir) => match built.get(dir) {
                    Some(Ok(p)) => Ok(p.clone()),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err(format!("step {} was not built", dir.display())),
                },
            }?;
            by_path
                .entry(wasm.clone())
                .or_insert_with(|| {
                    let (bytes, digest, source) = match scripted.get(&wasm) {
                        Some((bytes, digest, source)) => {
                            (bytes.clone(), *digest, Some(source.clone()))
                        }
                        None => {
                            let (bytes, digest) = read_component(&wasm)?;
                            (Arc::new(bytes), digest, None)
                        }
                    };
                    if bytes.len() as u64 > sandbox::COMPONENT_BYTES_MAX {
                        return Err(too_large(&wasm, bytes.len() as u64));
                    }
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
                        bytes,
                        prepared,
                        source,
                    }))
                })
                .clone()
        })
        .collect()
}

/// A component file's bytes and digest, refusing one over the size limit
/// before reading it.
fn read_component(wasm: &Path) -> Result<(Vec<u8>, Digest), String> {
    let meta = fs::metadata(wasm).map_err(|e| format!("component {}: {e}", wasm.display()))?;
    if meta.len() > sandbox::COMPONENT_BYTES_MAX {
        return Err(too_large(wasm, meta.len()));
    }
    let bytes = fs::read(wasm).map_err(|e| format!("component {}: {e}", wasm.display()))?;
    let digest = Digest::of(&bytes);
    Ok((bytes, digest))
}

fn too_large(wasm: &Path, len: u64) -> String {
    format!(
        "component {} is {len} bytes; the limit is {}",
        wasm.display(),
        sandbox::COMPONENT_BYTES_MAX
    )
}
