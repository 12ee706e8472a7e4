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

/// Why an input blob cannot be handed to a worker.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Pending publications could not be waited for.
    #[error("{0}")]
    Sync(StoreError),
    /// The named input's blob is not in the store.
    #[error("input `{name}`: artifact {digest} is not in the store")]
    NotFound {
        /// Input name.
        name: String,
        /// Its digest.
        digest: Digest,
    },
    /// The named input's blob does not verify.
    #[error("input `{name}`: {error}")]
    Unusable {
        /// Input name.
        name: String,
        /// What the store said.
        error: StoreError,
    },
}

/// Why a worker's reported outputs were rejected: the first offender.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// An output name that is not a kind name (quoted).
    #[error("output name {0} is not 1-64 characters of [A-Za-z0-9_-]")]
    BadName(String),
    /// The named output is unusable.
    #[error("output `{name}`: {problem}")]
    Rejected {
        /// Output name.
        name: String,
        /// What is wrong with it.
        problem: OutputProblem,
    },
}

/// What is wrong with one reported output. Quoted values are escaped and
/// truncated ([`protocol::quote_line`]).
#[derive(Debug, thiserror::Error)]
pub enum OutputProblem {
    /// The file is not a bare name inside the output directory.
    #[error("file {0} is not a plain file name inside the job's output directory")]
    NotPlainFileName(String),
    /// The reported digest does not parse.
    #[error("reported digest {0} is not sha256:<64 hex>")]
    BadDigest(String),
    /// The reported media type is empty, too long or not printable.
    #[error("media type {0} is not 1-{max} printable bytes", max = sluice_host_api::METRIC_TEXT_BYTES_MAX)]
    BadMediaType(String),
    /// The file cannot be opened as a regular file.
    #[error("{file} {refusal}")]
    NotRegular {
        /// The file name, quoted.
        file: String,
        /// Why.
        refusal: OpenRefusal,
    },
    /// Reading the file failed.
    #[error("reading {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        error: std::io::Error,
    },
    /// The contents do not hash to the reported digest.
    #[error("worker reported {reported} but the file hashes to {found}")]
    DigestMismatch {
        /// What the worker said.
        reported: Digest,
        /// What the bytes hash to.
        found: Digest,
    },
    /// The size differs from the reported one.
    #[error("worker reported {claimed} bytes but the file has {size}")]
    SizeMismatch {
        /// What the worker said.
        claimed: u64,
        /// The file's size.
        size: u64,
    },
    /// The store could not take it.
    #[error("{0}")]
    Store(StoreError),
}

/// Why an output file was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenRefusal {
    /// No such file.
    #[error("does not exist in the output directory")]
    Missing,
    /// A symlink (never followed).
    #[error("is a symlink, not a regular file")]
    Symlink,
    /// Any other open error.
    #[error("cannot be opened: {0}")]
    Open(rustix::io::Errno),
    /// Its metadata could not be read.
    #[error("cannot be read: {0}")]
    Stat(std::io::Error),
    /// A directory, fifo, device, ...
    #[error("is not a regular file")]
    NotRegular,
}

/// Verifies each input blob and returns (name, path, digest).
pub(crate) fn resolve_inputs(
    store: &Store,
    inputs: &[(String, Digest)],
) -> Result<Vec<(String, PathBuf, Digest)>, InputError> {
    // Verified first (a blob only the shared store has is fetched now).
    let resolved = inputs
        .iter()
        .map(|(name, digest)| {
            store.verify(digest).map_err(|e| match e {
                StoreError::NotFound(d) => InputError::NotFound {
                    name: name.clone(),
                    digest: d,
                },
                error => InputError::Unusable {
                    name: name.clone(),
                    error,
                },
            })?;
            Ok((name.clone(), store.path_of(digest), *digest))
        })
        .collect::<Result<Vec<_>, InputError>>()?;
    // A blob still pending publication is only a temp file; a worker needs
    // the final path, so wait for the publisher then (and only then).
    if resolved.iter().any(|(_, path, _)| !path.is_file()) {
        store.sync().map_err(InputError::Sync)?;
    }
    Ok(resolved)
}

/// Media type of an output: what the worker said if printable and short.
fn media_type(reported: Option<&str>) -> Result<String, OutputProblem> {
    match reported {
        None => Ok("application/octet-stream".to_string()),
        Some(m)
            if !m.is_empty()
                && m.len() <= sluice_host_api::METRIC_TEXT_BYTES_MAX
                && !m.contains(char::is_control) =>
        {
            Ok(m.to_string())
        }
        Some(m) => Err(OutputProblem::BadMediaType(protocol::quote_line(
            m.as_bytes(),
        ))),
    }
}

/// Re-hashes every reported output inside `out_dir` (regular files only,
/// never through a symlink) and ingests it into the store.
pub(crate) fn ingest_outputs(
    store: &Store,
    out_dir: &Path,
    outputs: &BTreeMap<String, protocol::ReportedOutput>,
) -> Result<BTreeMap<String, OutputRef>, OutputError> {
    let mut ingested = BTreeMap::new();
    for (name, o) in outputs {
        if !is_kind_name(name) {
            return Err(OutputError::BadName(protocol::quote_line(name.as_bytes())));
        }
        let output = ingest_output(store, out_dir, o).map_err(|problem| OutputError::Rejected {
            name: name.clone(),
            problem,
        })?;
        ingested.insert(name.clone(), output);
    }
    Ok(ingested)
}

/// Verifies and stores one reported output.
fn ingest_output(
    store: &Store,
    out_dir: &Path,
    o: &protocol::ReportedOutput,
) -> Result<OutputRef, OutputProblem> {
    let quoted_file = || protocol::quote_line(o.file.as_bytes());
    if !protocol::is_plain_file_name(&o.file) {
        return Err(OutputProblem::NotPlainFileName(quoted_file()));
    }
    let reported: Digest = o
        .digest
        .parse()
        .map_err(|_| OutputProblem::BadDigest(protocol::quote_line(o.digest.as_bytes())))?;
    let media_type = media_type(o.media_type.as_deref())?;
    let path = out_dir.join(&o.file);
    let read = |error| OutputProblem::Read {
        path: path.clone(),
        error,
    };
    let mut file = open_regular(&path).map_err(|refusal| OutputProblem::NotRegular {
        file: quoted_file(),
        refusal,
    })?;
    let found = crate::digest::hash_reader(&mut file).map_err(read)?;
    if found != reported {
        return Err(OutputProblem::DigestMismatch { reported, found });
    }
    let size = file.seek(SeekFrom::End(0)).map_err(read)?;
    if let Some(claimed) = o.size
        && claimed != size
    {
        return Err(OutputProblem::SizeMismatch { claimed, size });
    }
    file.seek(SeekFrom::Start(0)).map_err(read)?;
    let (stored, stored_size) = store.put_reader(&mut file).map_err(OutputProblem::Store)?;
    if stored != reported {
        // The file changed between the check and the copy.
        return Err(OutputProblem::DigestMismatch {
            reported,
            found: stored,
        });
    }
    Ok(OutputRef {
        digest: stored,
        size: stored_size,
        media_type,
    })
}

/// Opens `path` for reading only if it is a regular file, not through a
/// symlink.
fn open_regular(path: &Path) -> Result<File, OpenRefusal> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT => OpenRefusal::Missing,
        rustix::io::Errno::LOOP => OpenRefusal::Symlink,
        e => OpenRefusal::Open(e),
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(OpenRefusal::Stat)?;
    if !meta.is_file() {
        return Err(OpenRefusal::NotRegular);
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
                .to_string()
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
            ingest_outputs(&store, &out, &one("m.json", &wrong))
                .unwrap_err()
                .to_string(),
            format!("output `model`: worker reported {wrong} but the file hashes to {good}")
        );
        let secret = Digest::of(b"s3cret").to_string();
        assert_eq!(
            ingest_outputs(&store, &out, &one("link", &secret))
                .unwrap_err()
                .to_string(),
            "output `model`: \"link\" is a symlink, not a regular file"
        );
        assert_eq!(
            ingest_outputs(&store, &out, &one("../secret", &secret))
                .unwrap_err()
                .to_string(),
            "output `model`: file \"../secret\" is not a plain file name inside the job's output directory"
        );
        assert_eq!(
            ingest_outputs(&store, &out, &one("gone.json", &good))
                .unwrap_err()
                .to_string(),
            "output `model`: \"gone.json\" does not exist in the output directory"
        );
    }
}
