//! A job's crossing of the store: input blobs verified before a worker sees
//! their paths, reported outputs re-hashed and ingested after it is done,
//! and its stderr log kept.
//!
//! Invariant: every input path handed out is of a blob that was just
//! verified; every output ingested is a regular file directly inside the
//! job's output directory (never through a symlink) whose contents hash to
//! the digest the worker reported, checked again on the copy into the
//! store. The first offending output fails the whole set, named.
//! Boundary: reads the job's output directory and reads/writes the store;
//! knows nothing of workers, pools or job states.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::artifact::OutputRef;
use crate::digest::Digest;
use crate::spec::is_kind_name;
use crate::store::{Store, StoreError};

use super::protocol;

/// Keeps a job's stderr log in the store; an empty log or a store error
/// (logged) leaves none.
pub(crate) fn put_log(store: &Store, bytes: &[u8]) -> Option<Digest> {
    if bytes.is_empty() {
        return None;
    }
    match store.put_bytes(bytes) {
        Ok((d, _)) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "cannot store a gpu job log");
            None
        }
    }
}

/// Verifies each input blob and returns (name, path, digest).
pub(crate) fn resolve_inputs(
    store: &Store,
    inputs: &[(String, Digest)],
) -> Result<Vec<(String, PathBuf, Digest)>, String> {
    // A blob still pending publication is only a temp file; a worker needs
    // the final path, so wait for the publisher then (and only then).
    if inputs.iter().any(|(_, d)| !store.path_of(d).is_file()) {
        store.sync().map_err(|e| e.to_string())?;
    }
    inputs
        .iter()
        .map(|(name, digest)| {
            store.verify(digest).map_err(|e| match e {
                StoreError::NotFound(d) => {
                    format!("input `{name}`: artifact {d} is not in the store")
                }
                other => format!("input `{name}`: {other}"),
            })?;
            Ok((name.clone(), store.path_of(digest), *digest))
        })
        .collect()
}

/// Media type of an output: what the worker said if printable and short.
fn media_type(reported: Option<&str>) -> Result<String, String> {
    match reported {
        None => Ok("application/octet-stream".to_string()),
        Some(m)
            if !m.is_empty()
                && m.len() <= sluice_host_api::MAX_METRIC_TEXT_BYTES
                && !m.contains(char::is_control) =>
        {
            Ok(m.to_string())
        }
        Some(m) => Err(format!(
            "media type {} is not 1-{} printable bytes",
            protocol::quote_line(m.as_bytes()),
            sluice_host_api::MAX_METRIC_TEXT_BYTES
        )),
    }
}

/// Re-hashes every reported output inside `out_dir` (regular files only,
/// never through a symlink) and ingests it into the store.
pub(crate) fn ingest_outputs(
    store: &Store,
    out_dir: &Path,
    outputs: &BTreeMap<String, protocol::ReportedOutput>,
) -> Result<BTreeMap<String, OutputRef>, String> {
    let mut ingested = BTreeMap::new();
    for (name, o) in outputs {
        if !is_kind_name(name) {
            return Err(format!(
                "output name {} is not 1-64 characters of [A-Za-z0-9_-]",
                protocol::quote_line(name.as_bytes())
            ));
        }
        let err = |m: String| format!("output `{name}`: {m}");
        if !protocol::is_plain_file_name(&o.file) {
            return Err(err(format!(
                "file {} is not a plain file name inside the job's output directory",
                protocol::quote_line(o.file.as_bytes())
            )));
        }
        let reported: Digest = o.digest.parse().map_err(|_| {
            err(format!(
                "reported digest {} is not sha256:<64 hex>",
                protocol::quote_line(o.digest.as_bytes())
            ))
        })?;
        let media_type = media_type(o.media_type.as_deref()).map_err(err)?;
        let path = out_dir.join(&o.file);
        let mut file = open_regular(&path)
            .map_err(|m| err(format!("{} {m}", protocol::quote_line(o.file.as_bytes()))))?;
        let found = crate::digest::hash_reader(&mut file)
            .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
        if found != reported {
            return Err(err(format!(
                "worker reported {reported} but the file hashes to {found}"
            )));
        }
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
        if let Some(claimed) = o.size
            && claimed != size
        {
            return Err(err(format!(
                "worker reported {claimed} bytes but the file has {size}"
            )));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
        let (stored, stored_size) = store
            .put_reader(&mut file)
            .map_err(|e| err(e.to_string()))?;
        if stored != reported {
            // The file changed between the check and the copy.
            return Err(err(format!(
                "worker reported {reported} but the file hashes to {stored}"
            )));
        }
        ingested.insert(
            name.clone(),
            OutputRef {
                digest: stored,
                size: stored_size,
                media_type,
            },
        );
    }
    Ok(ingested)
}

/// Opens `path` for reading only if it is a regular file, not through a
/// symlink.
fn open_regular(path: &Path) -> Result<File, String> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT => "does not exist in the output directory".to_string(),
        rustix::io::Errno::LOOP => "is a symlink, not a regular file".to_string(),
        e => format!("cannot be opened: {e}"),
    })?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_string());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_must_be_short_and_printable() {
        assert_eq!(media_type(None).unwrap(), "application/octet-stream");
        assert_eq!(
            media_type(Some("application/json")).unwrap(),
            "application/json"
        );
        assert!(
            media_type(Some("a\u{1b}b"))
                .unwrap_err()
                .contains("\"a\\u{1b}b\"")
        );
    }

    #[test]
    fn outputs_are_rehashed_and_symlinks_and_escapes_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("home")).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("m.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("secret"), b"s3cret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), out.join("link")).unwrap();
        let good = Digest::of(b"{}").to_string();
        let one = |file: &str, digest: &str| {
            BTreeMap::from([(
                "model".to_string(),
                protocol::ReportedOutput {
                    file: file.into(),
                    digest: digest.into(),
                    size: None,
                    media_type: Some("application/json".into()),
                },
            )])
        };
        let ok = ingest_outputs(&store, &out, &one("m.json", &good)).unwrap();
        assert_eq!(ok["model"].digest.to_string(), good);
        assert_eq!(ok["model"].size, 2);
        assert!(store.contains(&ok["model"].digest));
        let wrong = Digest::of(b"other").to_string();
        assert_eq!(
            ingest_outputs(&store, &out, &one("m.json", &wrong)).unwrap_err(),
            format!("output `model`: worker reported {wrong} but the file hashes to {good}")
        );
        let secret = Digest::of(b"s3cret").to_string();
        assert_eq!(
            ingest_outputs(&store, &out, &one("link", &secret)).unwrap_err(),
            "output `model`: \"link\" is a symlink, not a regular file"
        );
        assert_eq!(
            ingest_outputs(&store, &out, &one("../secret", &secret)).unwrap_err(),
            "output `model`: file \"../secret\" is not a plain file name inside the job's output directory"
        );
        assert_eq!(
            ingest_outputs(&store, &out, &one("gone.json", &good)).unwrap_err(),
            "output `model`: \"gone.json\" does not exist in the output directory"
        );
    }
}
