//! Durable file writes: atomic replacement (random `O_EXCL` temp name,
//! fsync, rename, fsync of the directory) and directory syncs.
//!
//! Invariant: a reader of `path` sees the old bytes or the new bytes, never
//! a mix; after a durable write returns, the new bytes survive a crash. A
//! planted file or symlink can neither be guessed nor followed.
//! Boundary: a leaf (only the fault-injection hook); knows paths and bytes.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A durable write that failed, naming the file or directory.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct DurableError {
    /// The file or directory.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DurableError + '_ {
    move |source| DurableError {
        path: path.to_path_buf(),
        source,
    }
}

/// fsyncs a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Random bytes in a temp file's name: 64 bits, so nobody who can write to
/// the directory can guess the name ahead of the writer.
const TEMP_NAME_RANDOM_BYTES: usize = 8;
/// Tries at a fresh random name before giving up; a collision means someone
/// is planting files at random names, which deserves an error.
const TEMP_NAME_ATTEMPTS: u32 = 16;
/// Mode of files written by [`write_atomic`] (before the umask).
pub const PUBLIC_FILE_MODE: u32 = 0o644;

/// Writes `bytes` to `path` atomically (temp file in the same directory,
/// rename), fsyncing when `durable`.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<(), DurableError> {
    write_atomic_mode(path, bytes, durable, PUBLIC_FILE_MODE)
}

/// [`write_atomic`] with the temp file created with `mode`, so a secret is
/// never readable by others, not even before the rename.
///
/// The temp name carries a random suffix and is created with `O_CREAT |
/// O_EXCL` (`create_new`), which never follows a symlink: a file or symlink
/// planted in a shared directory can neither be guessed in advance nor
/// redirect the write (a predictable name opened with `File::create` wrote
/// through a planted symlink, then renamed the symlink into place).
pub fn write_atomic_mode(
    path: &Path,
    bytes: &[u8],
    durable: bool,
    mode: u32,
) -> Result<(), DurableError> {
    stage(path, bytes, durable, mode)?.commit()
}

/// The first half of [`write_atomic_mode`]: the bytes in a temp file next
/// to `path` (fsynced when `durable`), not yet visible at `path`. A caller
/// with other durable work overlaps it with this fsync, then calls
/// [`Staged::commit`]. Dropped uncommitted, the temp file is removed.
#[derive(Debug)]
pub struct Staged {
    tmp: Option<PathBuf>,
    path: PathBuf,
    durable: bool,
}

/// Writes `bytes` into a fresh temp file beside `path`; see [`Staged`].
pub fn stage(path: &Path, bytes: &[u8], durable: bool, mode: u32) -> Result<Staged, DurableError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("file");
    let (mut f, tmp) = {
        let mut attempt = 0;
        loop {
            let mut random = [0u8; TEMP_NAME_RANDOM_BYTES];
            getrandom::fill(&mut random).map_err(|e| {
                io_err(path)(io::Error::other(format!("OS random source failed: {e}")))
            })?;
            let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(random)));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
            {
                Ok(f) => break (f, tmp),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    attempt += 1;
                    if attempt >= TEMP_NAME_ATTEMPTS {
                        return Err(io_err(&tmp)(e));
                    }
                }
                Err(e) => return Err(io_err(&tmp)(e)),
            }
        }
    };
    let staged = Staged {
        tmp: Some(tmp),
        path: path.to_path_buf(),
        durable,
    };
    let result = (|| {
        crate::fault::file(path)?;
        if mode != PUBLIC_FILE_MODE {
            // A secret's mode is exact whatever the umask.
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        Ok(())
    })();
    // On error `staged` drops here and removes the temp file.
    result.map_err(io_err(path))?;
    Ok(staged)
}

impl Staged {
    /// Renames the temp file into place and, when durable, fsyncs the
    /// directory so the new name survives a crash.
    pub fn commit(mut self) -> Result<(), DurableError> {
        let tmp = self.tmp.take().expect("a staged file is committed once");
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&self.path)(e));
        }
        if self.durable {
            sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(())
    }
}

impl Staged {
    /// Like [`Staged::commit`], but never replaces: the staged file is
    /// hard-linked to `path`, which fails if anything is there already.
    /// `Ok(true)` when this write created `path`; `Ok(false)` when another
    /// writer got there first (its bytes stay, these are dropped).
    pub fn commit_once(mut self) -> Result<bool, DurableError> {
        let tmp = self.tmp.take().expect("a staged file is committed once");
        let linked = fs::hard_link(&tmp, &self.path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err(&self.path)(e)),
        }
        if self.durable {
            sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(true)
    }
}

/// Writes `bytes` to `path` unless something is there already (first
/// writer wins, atomically, also across processes); fsynced when `durable`.
/// `Ok(true)` when this call created it.
pub fn create_once(path: &Path, bytes: &[u8], durable: bool) -> Result<bool, DurableError> {
    stage(path, bytes, durable, PUBLIC_FILE_MODE)?.commit_once()
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Reads the 32-byte secret key at `path` (64 hex digits), creating it (race-free: the first
/// creator's key wins) if absent. Refused unless it is a regular file (not a
/// symlink) owned by this user with no group or other permissions.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32], String> {
    use std::io::Write as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let shown = path.display();
    if std::fs::symlink_metadata(path).is_err() {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("{shown}: no randomness: {e}"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| format!("{shown}: no randomness: {e}"))?;
        let tmp = dir.join(format!(".secret-key.{}.tmp", hex::encode(suffix)));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                f.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
                f.sync_all()
            })
            // A hard link never replaces an existing file: if another
            // process created the key meanwhile, its key wins (read below).
            .and_then(|()| match std::fs::hard_link(&tmp, path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            });
        let _ = std::fs::remove_file(&tmp);
        written.map_err(|e| format!("{shown}: {e}"))?;
        sync_dir(dir).map_err(|e| format!("{shown}: {e}"))?;
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(format!("{shown} is not owned by this user"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{shown} is accessible to others (mode {:o}); it must be 0600",
            meta.mode() & 0o777
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read as _;
            f.take(256).read_to_string(&mut text)
        })
        .map_err(|e| format!("{shown}: {e}"))?;
    hex::decode(text.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| format!("{shown} does not hold 64 hex digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers racing for one name: exactly one creates it, the file holds
    /// that writer's bytes whole, and no temp file is left behind.
    #[test]
    fn create_once_has_exactly_one_winner_among_racing_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        let winners: Vec<(usize, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let path = path.clone();
                    s.spawn(move || {
                        let bytes = vec![b'a' + i as u8; 64 * 1024];
                        (i, create_once(&path, &bytes, true).unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<usize> = winners.iter().filter(|w| w.1).map(|w| w.0).collect();
        assert_eq!(won.len(), 1, "{winners:?}");
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes, vec![b'a' + won[0] as u8; 64 * 1024]);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert!(!create_once(&path, b"late", false).unwrap());
        assert_eq!(fs::read(&path).unwrap().len(), 64 * 1024);
    }
}
