//! Content-addressed blob store under `<home>/store/`.
//!
//! Invariant: a file at `store/sha256/<aa>/<rest>` holds exactly the bytes
//! whose sha256 is `aa<rest>`, or it is detected and quarantined on the next
//! read; a reader is never handed bytes that do not match their name. A
//! blob's bytes are fsynced before its rename makes it visible under its
//! name, so a crash never exposes a half-written blob; fsync and rename run
//! on a publisher thread, and [`Store::sync`] (the group commit, with the
//! run record) waits for them and makes the renames durable.
//! Boundary: knows files and digests, nothing of steps or runs.

use std::collections::{BTreeSet, HashMap};

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};

use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, hash_reader};
use crate::durable::sync_dir;

/// Store failures; each names the blob or path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No blob with that digest.
    #[error("artifact {0} is not in the store")]
    NotFound(Digest),
    /// The blob's bytes do not match its name; it has been quarantined.
    #[error(
        "artifact {digest} is corrupted in the store (its bytes hash to {found}); quarantined, never served"
    )]
    Corrupted {
        /// The name of the blob.
        digest: Digest,
        /// What its bytes hash to.
        found: Digest,
    },
    /// Filesystem failure.
    #[error("store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl From<crate::durable::DurableError> for StoreError {
    fn from(e: crate::durable::DurableError) -> Self {
        StoreError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The blob store rooted at `<home>/store`.
///
/// Committed blobs are published by a background thread: it fsyncs each
/// blob's bytes and only then renames it into place, so durability work
/// overlaps the next step's execution. Until then the blob is *pending* and
/// readers of this `Store` are served from its temp file (verified like any
/// other read). [`Store::sync`] waits for every pending blob and makes the
/// renames durable.
#[derive(Debug)]
pub struct Store {
    /// Names this store's temp files; its lock file proves it is alive.
    owner: String,
    owner_lock: File,
    owner_path: PathBuf,
    root: PathBuf,
    tmp: PathBuf,
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::Sender<Publish>>>,
    publisher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<PublishState>,
    idle: Condvar,
}

#[derive(Debug, Default)]
struct PublishState {
    /// Blobs committed but not yet renamed into place, by digest.
    pending: HashMap<Digest, PathBuf>,
    /// Directories with renames not yet fsynced.
    dirty: BTreeSet<PathBuf>,
    /// Publications that failed (fsync or rename), reported by `sync`.
    failures: Vec<String>,
}

#[derive(Debug)]
struct Publish {
    digest: Digest,
    file: File,
    temp: PathBuf,
    dest: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Most blobs the publisher takes in one batch.
const PUBLISH_BATCH_MAX: usize = 256;
/// Threads that fsync one batch together.
const PUBLISH_FSYNC_LANES: usize = 4;

impl Store {
    /// Opens (creating directories as needed) the store under `home`.
    pub fn open(home: &Path) -> Result<Store, StoreError> {
        let root = home.join("store");
        let tmp = root.join("tmp");
        fs::create_dir_all(root.join("sha256")).map_err(io_err(&root))?;
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        fs::create_dir_all(root.join("quarantine")).map_err(io_err(&root))?;
        sweep_orphans(&tmp);
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .to_le_bytes()
            .to_vec();
        seed.extend_from_slice(
            &OPENED
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_le_bytes(),
        );
        let owner = format!("{}-{}", std::process::id(), &Digest::of(&seed).hex()[..8]);
        // The owner file appears under its swept name only once locked: a
        // concurrent sweep (another store opening) must never find it
        // unlocked and take it for a dead store's.
        let owner_path = tmp.join(format!("{owner}.owner"));
        let staging = tmp.join(format!("{owner}.owner-new"));
        let owner_lock = File::create_new(&staging).map_err(io_err(&staging))?;
        owner_lock.try_lock().map_err(|e| StoreError::Io {
            path: staging.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        fs::rename(&staging, &owner_path).map_err(io_err(&owner_path))?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let worker_shared = shared.clone();
        let worker_root = root.join("sha256");
        let publisher = std::thread::Builder::new()
            .name("sluice-store-publish".into())
            .spawn(move || publish_loop(&rx, &worker_shared, &worker_root))
            .map_err(io_err(&root))?;
        Ok(Store {
            owner,
            owner_lock,
            owner_path,
            root,
            tmp,
            shared,
            queue: Mutex::new(Some(tx)),
            publisher: Mutex::new(Some(publisher)),
        })
    }

    /// Waits until every committed blob is published, then makes the renames
    /// durable (fsyncs the touched directories). Reports the first blob that
    /// could not be published. Called on the record's group-commit cadence
    /// and before a run is acknowledged.
    pub fn sync(&self) -> Result<(), StoreError> {
        let (dirs, failures) = {
            let mut state = lock(&self.shared.state);
            while !state.pending.is_empty() {
                state = self
                    .shared
                    .idle
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            (
                std::mem::take(&mut state.dirty),
                std::mem::take(&mut state.failures),
            )
        };
        sync_dirs(dirs.into_iter().collect())?;
        match failures.into_iter().next() {
            Some(f) => Err(StoreError::Io {
                path: self.root.clone(),
                source: io::Error::other(f),
            }),
            None => Ok(()),
        }
    }

    /// The path a blob lives at (whether or not it exists).
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("sha256").join(&hex[..2]).join(&hex[2..])
    }

    /// Whether the blob exists (not verified).
    pub fn contains(&self, digest: &Digest) -> bool {
        // Pending first: a blob leaves `pending` only after its rename, so
        // this order cannot miss one being published meanwhile.
        lock(&self.shared.state).pending.contains_key(digest) || self.path_of(digest).is_file()
    }

    /// Starts writing a new blob.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let queue = lock(&self.queue).clone().ok_or_else(|| StoreError::Io {
            path: self.root.clone(),
            source: io::Error::other("store is closing"),
        })?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{n}.part", self.owner));
        let file = File::create_new(&path).map_err(io_err(&path))?;
        Ok(BlobWriter {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
            root: self.root.clone(),
            shared: self.shared.clone(),
            queue,
        })
    }

    /// Copies everything from `reader` into a new blob.
    pub fn put_reader(&self, reader: &mut dyn Read) -> Result<(Digest, u64), StoreError> {
        let mut w = self.writer()?;
        let mut buf = vec![0u8; crate::digest::COPY_BUF_BYTES];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(&w.path)(e)),
            };
            let path = w.path.clone();
            w.write_all(&buf[..n]).map_err(io_err(&path))?;
        }
        w.commit()
    }

    /// Stores `bytes`.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64), StoreError> {
        self.put_reader(&mut &bytes[..])
    }

    /// Stores the file at `path`.
    pub fn put_file(&self, path: &Path) -> Result<(Digest, u64), StoreError> {
        let mut f = File::open(path).map_err(io_err(path))?;
        self.put_reader(&mut f)
    }

    /// Opens the blob's file, published or pending.
    fn open_raw(&self, digest: &Digest) -> Result<(File, bool), StoreError> {
        let path = self.path_of(digest);
        // Twice: a pending blob may be renamed between the two lookups.
        for _ in 0..2 {
            match File::open(&path) {
                Ok(f) => return Ok((f, true)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            let temp = lock(&self.shared.state).pending.get(digest).cloned();
            let Some(temp) = temp else {
                // Not pending: absent, or published (renamed, then dropped
                // from `pending`) since the first look. A published blob
                // stays, so one more look is the answer.
                return match File::open(&path) {
                    Ok(f) => Ok((f, true)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        Err(StoreError::NotFound(*digest))
                    }
                    Err(e) => Err(io_err(&path)(e)),
                };
            };
            match File::open(&temp) {
                Ok(f) => return Ok((f, false)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&temp)(e)),
            }
        }
        Err(StoreError::NotFound(*digest))
    }

    /// Opens a blob after verifying its bytes against `digest`. A mismatch
    /// quarantines the blob and is an error.
    pub fn open_verified(&self, digest: &Digest) -> Result<File, StoreError> {
        let (mut file, published) = self.open_raw(digest)?;
        let path = self.path_of(digest);
        let found = hash_reader(&mut file).map_err(io_err(&path))?;
        if found != *digest {
            if published {
                self.quarantine(digest);
            }
            return Err(StoreError::Corrupted {
                digest: *digest,
                found,
            });
        }
        file.rewind().map_err(io_err(&path))?;
        Ok(file)
    }

    /// Verifies a blob without keeping it open.
    pub fn verify(&self, digest: &Digest) -> Result<u64, StoreError> {
        let f = self.open_verified(digest)?;
        let path = self.path_of(digest);
        Ok(f.metadata().map_err(io_err(&path))?.len())
    }

    /// Reads a whole (verified) blob into memory.
    pub fn read_bytes(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut f = self.open_verified(digest)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)
            .map_err(io_err(&self.path_of(digest)))?;
        Ok(v)
    }

    /// Moves a bad blob aside so that it is never served and a rewrite of
    /// the same digest can recreate it. Best effort: if the move fails the
    /// blob is still refused by every verified read.
    fn quarantine(&self, digest: &Digest) {
        let from = self.path_of(digest);
        let to =
            self.root
                .join("quarantine")
                .join(format!("{}-{}", digest.hex(), std::process::id()));
        if let Err(e) = fs::rename(&from, &to) {
            tracing::warn!(%digest, error = %e, "could not quarantine corrupted blob");
        } else {
            tracing::warn!(%digest, to = %to.display(), "quarantined corrupted blob");
        }
    }
}

impl Drop for Store {
    /// Publishes everything still pending before the store goes away.
    fn drop(&mut self) {
        drop(lock(&self.queue).take());
        if let Some(t) = lock(&self.publisher).take() {
            let _ = t.join();
        }
        let state = lock(&self.shared.state);
        for dir in &state.dirty {
            let _ = sync_dir(dir);
        }
        let _ = self.owner_lock.unlock();
        let _ = fs::remove_file(&self.owner_path);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// fsyncs `dirs` (a run touches one shard directory per new blob, up to 256)
/// on [`PUBLISH_FSYNC_LANES`] threads at once: issued together they share
/// journal commits instead of paying one commit each, back to back.
/// Reports the first failure.
fn sync_dirs(dirs: Vec<PathBuf>) -> Result<(), StoreError> {
    if dirs.len() <= 1 {
        return dirs.iter().try_for_each(|d| Ok(sync_dir(d)?));
    }
    let lanes = PUBLISH_FSYNC_LANES.min(dirs.len());
    let results: Vec<Result<(), crate::durable::DurableError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                let dirs = &dirs;
                scope.spawn(move || {
                    (lane..dirs.len())
                        .step_by(lanes)
                        .map(|i| sync_dir(&dirs[i]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![Err(crate::durable::DurableError {
                        path: PathBuf::new(),
                        source: io::Error::other("directory fsync lane panicked"),
                    })]
                })
            })
            .collect()
    });
    results.into_iter().try_for_each(|r| Ok(r?))
}

/// The publisher: fsync each blob's bytes, then rename it into place.
fn publish_loop(rx: &mpsc::Receiver<Publish>, shared: &Shared, sha_root: &Path) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(PUBLISH_BATCH_MAX - 1));
        // A backlog means fsync latency is the bottleneck: flush the batch
        // on a few threads at once so the device sees the writes together.
        let synced: Vec<io::Result<()>> = if batch.len() == 1 {
            vec![batch[0].file.sync_all()]
        } else {
            let lanes = PUBLISH_FSYNC_LANES.min(batch.len());
            let mut results: Vec<Option<io::Result<()>>> = (0..batch.len()).map(|_| None).collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..lanes)
                    .map(|lane| {
                        let batch = &batch;
                        scope.spawn(move || {
                            (lane..batch.len())
                                .step_by(lanes)
                                .map(|i| (i, batch[i].file.sync_all()))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                for h in handles {
                    for (i, r) in h.join().unwrap_or_default() {
                        results[i] = Some(r);
                    }
                }
            });
            results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(io::Error::other("fsync lane panicked"))))
                .collect()
        };
        for (job, synced) in batch.into_iter().zip(synced) {
            let dir = job.dest.parent().map(Path::to_path_buf).unwrap_or_default();
            let result = synced.and_then(|()| {
                let created = !dir.is_dir();
                if created {
                    fs::create_dir_all(&dir)?;
                }
                crate::fault::point("store.publish")?;
                fs::rename(&job.temp, &job.dest)?;
                Ok(created)
            });
            let mut state = lock(&shared.state);
            state.pending.remove(&job.digest);
            match result {
                Ok(created) => {
                    state.dirty.insert(dir);
                    if created {
                        state.dirty.insert(sha_root.to_path_buf());
                    }
                }
                Err(e) => {
                    let _ = fs::remove_file(&job.temp);
                    state
                        .failures
                        .push(format!("cannot publish blob {}: {e}", job.digest));
                }
            }
        }
        shared.idle.notify_all();
    }
}

/// Removes temp files left by stores that no longer exist (a crash between
/// write and publish). Every open store holds an exclusive lock on its
/// `<owner>.owner` file for its whole life; an owner file that can be locked
/// belongs to a dead store, so its `<owner>-*.part` files are garbage. A live
/// store's files are never touched, whatever pids are reused.
fn sweep_orphans(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    for owner in names.iter().filter_map(|n| n.strip_suffix(".owner")) {
        let path = tmp.join(format!("{owner}.owner"));
        let Ok(file) = File::options().write(true).open(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // alive
        }
        let prefix = format!("{owner}-");
        for part in names
            .iter()
            .filter(|n| n.starts_with(&prefix) && n.ends_with(".part"))
        {
            let _ = fs::remove_file(tmp.join(part));
        }
        let _ = fs::remove_file(&path);
        tracing::info!(owner, "swept temp files of a dead store");
    }
}

/// A blob being written: temp file in the store's own filesystem, hashed as
/// it goes. [`BlobWriter::commit`] hands it to the publisher; dropping it
/// uncommitted removes the temp file.
pub struct BlobWriter {
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    root: PathBuf,
    shared: Arc<Shared>,
    queue: mpsc::Sender<Publish>,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Seals the blob: its digest is final and it is readable through this
    /// store at once; the publisher fsyncs and renames it into place (see
    /// [`Store::sync`]). Idempotent: a digest already present is not
    /// written again.
    pub fn commit(mut self) -> Result<(Digest, u64), StoreError> {
        let digest = Digest::from_hasher(std::mem::take(&mut self.hasher));
        let file = self.file.take().expect("file present until commit");
        let hex = digest.hex();
        let dest = self.root.join("sha256").join(&hex[..2]).join(&hex[2..]);
        let mut state = lock(&self.shared.state);
        if dest.is_file() || state.pending.contains_key(&digest) {
            drop(state);
            drop(file);
            let _ = fs::remove_file(&self.path);
            return Ok((digest, self.size));
        }
        state.pending.insert(digest, self.path.clone());
        drop(state);
        let job = Publish {
            digest,
            file,
            temp: self.path.clone(),
            dest,
        };
        if let Err(mpsc::SendError(job)) = self.queue.send(job) {
            lock(&self.shared.state).pending.remove(&job.digest);
            let _ = fs::remove_file(&job.temp);
            return Err(StoreError::Io {
                path: job.temp,
                source: io::Error::other("the store's publisher thread is gone"),
            });
        }
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::fault::point("store.blob")?;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::write_atomic;

    /// Temp blob files in a home's store.
    fn parts(home: &Path) -> usize {
        fs::read_dir(home.join("store/tmp"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .ends_with(".part")
            })
            .count()
    }

    #[test]
    fn write_atomic_is_not_redirected_by_symlinks_planted_at_temp_names() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir_all(&shared).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"victim's bytes").unwrap();
        // Every name the old scheme (`.<name>.<pid>-<counter>.tmp`) could
        // pick in this process is a symlink to the victim.
        for n in 0..=TMP_COUNTER.load(Ordering::Relaxed) + 1000 {
            let planted = shared.join(format!(".summary.json.{}-{n}.tmp", std::process::id()));
            std::os::unix::fs::symlink(&victim, planted).unwrap();
        }
        let target = shared.join("summary.json");
        write_atomic(&target, b"the real summary", true).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"victim's bytes");
        assert!(!fs::symlink_metadata(&target).unwrap().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"the real summary");
        // No temp file is left behind.
        let temps = fs::read_dir(&shared)
            .unwrap()
            .filter(|e| !e.as_ref().unwrap().file_type().unwrap().is_symlink())
            .count();
        assert_eq!(temps, 1, "only summary.json itself");
    }

    #[test]
    fn digest_round_trips_and_rejects_bad_text() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        for bad in [
            "",
            "sha256:",
            "md5:abc",
            &d.to_string().to_uppercase(),
            &format!("{d}0"),
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert!(err.to_string().contains("invalid digest"), "{bad}: {err}");
        }
    }

    #[test]
    fn put_is_idempotent_and_reads_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (d1, n) = store.put_bytes(b"abc").unwrap();
        let (d2, _) = store.put_bytes(b"abc").unwrap();
        assert_eq!((d1, n), (d2, 3));
        // Readable at once, pending or published.
        assert_eq!(store.read_bytes(&d1).unwrap(), b"abc");
        store.sync().unwrap();
        assert!(store.path_of(&d1).is_file());
        assert_eq!(store.read_bytes(&d1).unwrap(), b"abc");
        assert_eq!(parts(dir.path()), 0);
    }

    #[test]
    fn flipped_bit_is_detected_quarantined_and_healed_by_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (d, _) = store.put_bytes(b"precious bytes").unwrap();
        store.sync().unwrap();
        let path = store.path_of(&d);
        let mut perms = fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(&path, perms).unwrap();
        fs::write(&path, b"precious bytez").unwrap();
        let err = store.read_bytes(&d).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupted { digest, .. } if digest == d),
            "{err}"
        );
        assert!(matches!(store.read_bytes(&d), Err(StoreError::NotFound(_))));
        store.put_bytes(b"precious bytes").unwrap();
        assert_eq!(store.read_bytes(&d).unwrap(), b"precious bytes");
    }

    /// Random corruption of a published blob (a bit pattern flipped at any
    /// offset, a truncation, bytes appended) is never served: the read is
    /// an error naming the digest, the blob leaves its name for
    /// `quarantine/`, and the next read says it is missing. Cases:
    /// `PROPTEST_CASES` (default 256).
    #[test]
    fn a_randomly_corrupted_blob_is_never_served_and_is_quarantined() {
        use proptest::prelude::*;
        #[derive(Debug, Clone)]
        enum Corruption {
            Flip(prop::sample::Index, u8),
            Truncate(prop::sample::Index),
            Append(Vec<u8>),
        }
        let corruption = prop_oneof![
            (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, x)| Corruption::Flip(i, x)),
            any::<prop::sample::Index>().prop_map(Corruption::Truncate),
            prop::collection::vec(any::<u8>(), 1..64).prop_map(Corruption::Append),
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let quarantine = dir.path().join("store/quarantine");
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::default());
        runner
            .run(
                &(prop::collection::vec(any::<u8>(), 1..2048), corruption),
                |(bytes, c)| {
                    let (d, _) = store.put_bytes(&bytes).unwrap();
                    store.sync().unwrap();
                    let path = store.path_of(&d);
                    let mut damaged = bytes.clone();
                    match &c {
                        Corruption::Flip(i, x) => {
                            let at = i.index(damaged.len());
                            damaged[at] ^= x;
                        }
                        Corruption::Truncate(i) => damaged.truncate(i.index(bytes.len())),
                        Corruption::Append(extra) => damaged.extend_from_slice(extra),
                    }
                    let mut perms = fs::metadata(&path).unwrap().permissions();
                    #[allow(clippy::permissions_set_readonly_false)]
                    perms.set_readonly(false);
                    fs::set_permissions(&path, perms).unwrap();
                    fs::write(&path, &damaged).unwrap();
                    let err = store.read_bytes(&d).unwrap_err();
                    prop_assert!(
                        matches!(err, StoreError::Corrupted { digest, .. } if digest == d),
                        "{c:?}: {err}"
                    );
                    let message = err.to_string();
                    prop_assert!(message.contains(&d.to_string()), "{message}");
                    prop_assert!(!path.exists(), "{c:?}: still under its name");
                    let quarantined =
                        quarantine.join(format!("{}-{}", d.hex(), std::process::id()));
                    prop_assert_eq!(fs::read(&quarantined).unwrap(), damaged);
                    prop_assert!(
                        matches!(store.read_bytes(&d), Err(StoreError::NotFound(x)) if x == d)
                    );
                    // Every other verified read path refuses it too.
                    prop_assert!(store.verify(&d).is_err() && store.open_verified(&d).is_err());
                    fs::remove_file(&quarantined).unwrap();
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn dropping_the_store_publishes_everything_pending() {
        let dir = tempfile::tempdir().unwrap();
        let digests: Vec<Digest> = {
            let store = Store::open(dir.path()).unwrap();
            (0..50u32)
                .map(|i| store.put_bytes(&i.to_le_bytes()).unwrap().0)
                .collect()
        };
        let store = Store::open(dir.path()).unwrap();
        for (i, d) in digests.iter().enumerate() {
            assert!(store.path_of(d).is_file(), "blob {i} not published");
            assert_eq!(store.read_bytes(d).unwrap(), (i as u32).to_le_bytes());
        }
    }

    #[test]
    fn temp_files_of_dead_stores_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("store/tmp");
        fs::create_dir_all(&tmp).unwrap();
        // A dead store: its owner file exists but nobody holds its lock.
        fs::write(tmp.join("77-deadbeef.owner"), b"").unwrap();
        fs::write(tmp.join("77-deadbeef-0.part"), b"half").unwrap();
        let live = Store::open(dir.path()).unwrap();
        assert!(!tmp.join("77-deadbeef-0.part").exists());
        assert!(!tmp.join("77-deadbeef.owner").exists());
        let mut w = live.writer().unwrap();
        w.write_all(b"in flight").unwrap();
        let _other = Store::open(dir.path()).unwrap();
        assert_eq!(
            fs::read_dir(&tmp)
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .ends_with(".part"))
                .count(),
            1,
            "a live store's temp file was removed"
        );
        drop(w);
    }

    #[test]
    fn uncommitted_writer_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let mut w = store.writer().unwrap();
            w.write_all(b"half").unwrap();
        }
        assert_eq!(parts(dir.path()), 0);
        assert!(!store.contains(&Digest::of(b"half")));
    }
}
