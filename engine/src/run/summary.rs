//! Reading finished runs back: summaries (checked against the sealed
//! record) and the list of runs in a home.
//!
//! Invariant: a summary that disagrees with its sealed record is never
//! returned as valid.
//! Boundary: reads `runs/`; writes nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{RunId, RunSummary};

/// Loads the summary of a finished run, after checking it against the
/// run's sealed record (`crate::verify::summary_agrees`).
pub fn load_summary(home: &Path, run_id: &RunId) -> Result<RunSummary, LoadError> {
    let path = home.join("runs").join(run_id.as_str()).join("summary.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(if path.parent().is_some_and(Path::is_dir) {
                LoadError::Unfinished(run_id.clone())
            } else {
                LoadError::NotFound(run_id.clone())
            });
        }
        Err(e) => return Err(LoadError::Io { path, source: e }),
    };
    let summary = serde_json::from_slice(&bytes).map_err(|e| LoadError::Corrupt {
        path,
        reason: e.to_string(),
    })?;
    // The summary is written after the seal, so nothing signed covers its
    // bytes: what it shows is checked against the sealed record instead.
    crate::verify::summary_agrees(home, run_id, &bytes).map_err(|detail| LoadError::Mismatch {
        run: run_id.clone(),
        detail,
    })?;
    Ok(summary)
}

/// Why a run summary could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No such run.
    #[error("no run `{0}` in this home")]
    NotFound(RunId),
    /// The run started but never finished (crashed or still running).
    #[error("run `{0}` has no summary: it is still running or was interrupted")]
    Unfinished(RunId),
    /// The summary says something its sealed record does not (or there is
    /// no intact sealed record to check it against).
    #[error("run `{run}`: summary.json does not match the sealed record: {detail}")]
    Mismatch {
        /// The run.
        run: RunId,
        /// The first difference.
        detail: crate::verify::Disagreement,
    },
    /// The summary does not parse.
    #[error("run summary {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// IO failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Run ids in `home`, newest first.
pub fn list_runs(home: &Path) -> io::Result<Vec<RunId>> {
    let dir = home.join("runs");
    let mut ids = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                if let Some(name) = e.file_name().to_str()
                    && let Ok(id) = name.parse::<RunId>()
                {
                    ids.push(id);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    ids.sort();
    ids.reverse();
    Ok(ids)
}
