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
use std::io::{self, Read, Write};
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
    /// The shared store failed.
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
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
    /// The shared tier (`--store`), if any: blobs this store writes are
    /// uploaded by [`Store::sync`], blobs it lacks are fetched from it
    /// (and verified) on first read, documents live there.
    remote: Option<Arc<crate::remote::Remote>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<PublishState>,
    idle: Condvar,
    /// Full hashes done to verify reads (the index spares the rest).
    read_hashes: AtomicU64,
}

#[derive(Debug, Default)]
struct PublishState {
    /// Blobs committed but not yet renamed into place, by digest.
    pending: HashMap<Digest, PathBuf>,
    /// Directories with renames not yet fsynced.
    dirty: BTreeSet<PathBuf>,
    /// Publications that failed (fsync or rename), reported by `sync`.
    failures: Vec<String>,
    /// The verified-on-write index: blobs this store hashed (writing them,
    /// or verifying a read) and the identity their file had then.
    known: HashMap<Digest, Known>,
    /// Blobs written here and not yet uploaded to the shared tier.
    unsent: BTreeSet<Digest>,
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
/// Blobs uploaded to the shared tier at once.
const UPLOAD_LANES: usize = 4;

impl Store {
    /// Opens (creating directories as needed) the store under `home`.
    pub fn open(home: &Path) -> Result<Store, StoreError> {
        Store::open_with(home, None)
    }

    /// Opens the store under `home` as the node-local, verified cache in
    /// front of `remote` (the shared tier), when one is given.
    pub fn open_with(
        home: &Path,
        remote: Option<Arc<crate::remote::Remote>>,
    ) -> Result<Store, StoreError> {
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
            remote,
        })
    }

    /// The shared tier, if this store has one.
    pub fn remote(&self) -> Option<&Arc<crate::remote::Remote>> {
        self.remote.as_ref()
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
        if let Some(f) = failures.into_iter().next() {
            return Err(StoreError::Io {
                path: self.root.clone(),
                source: io::Error::other(f),
            });
        }
        self.upload_unsent()
    }

    /// Uploads every blob written here since the last call to the shared
    /// tier (a few at once); a blob that fails stays queued for the next.
    fn upload_unsent(&self) -> Result<(), StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        // A blob another thread committed since `sync` drained `pending` is
        // not published yet (its file is not at its path): it stays queued
        // for that thread's own sync.
        let unsent: Vec<Digest> = {
            let mut state = lock(&self.shared.state);
            let queued = std::mem::take(&mut state.unsent);
            let (ready, later): (Vec<Digest>, Vec<Digest>) = queued
                .into_iter()
                .partition(|d| !state.pending.contains_key(d));
            state.unsent.extend(later);
            ready
        };
        if unsent.is_empty() {
            return Ok(());
        }
        let lanes = UPLOAD_LANES.min(unsent.len());
        let failed: Vec<(Digest, StoreError)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..lanes)
                .map(|lane| {
                    let unsent = &unsent;
                    scope.spawn(move || {
                        (lane..unsent.len())
                            .step_by(lanes)
                            .filter_map(|i| {
                                let digest = unsent[i];
                                let path = self.path_of(&digest);
                                let sent = fs::metadata(&path)
                                    .map_err(io_err(&path))
                                    .and_then(|m| Ok(remote.put_blob(&digest, &path, m.len())?));
                                sent.err().map(|e| (digest, e))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut failed = failed.into_iter();
        match failed.next() {
            None => Ok(()),
            Some((digest, e)) => {
                let mut state = lock(&self.shared.state);
                state.unsent.insert(digest);
                state.unsent.extend(failed.map(|(d, _)| d));
                Err(e)
            }
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
            hasher: BlobHasher::Inline(Sha256::new()),
            size: 0,
            root: self.root.clone(),
            shared: self.shared.clone(),
            queue,
            upload: self.remote.is_some(),
        })
    }

    /// Fetches blob `digest` from the shared tier into this store, hashing
    /// it on the way: bytes that do not match their name are dropped and
    /// reported, never stored or served.
    fn fetch(&self, digest: &Digest) -> Result<(), StoreError> {
        let Some(remote) = &self.remote else {
            return Err(StoreError::NotFound(*digest));
        };
        let mut w = self.writer()?;
        w.upload = false;
        if !remote.get_blob(digest, &mut w)? {
            return Err(StoreError::NotFound(*digest));
        }
        w.commit_as(Some(digest)).map(|_| ())
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

    /// Opens the blob's file, published or pending, without verifying it
    /// (see [`Store::check`]); the flag says whether it is published. A
    /// blob this node lacks is fetched from the shared tier first.
    fn open_raw(&self, digest: &Digest) -> Result<(File, bool), StoreError> {
        match self.open_local(digest) {
            Err(StoreError::NotFound(_)) if self.remote.is_some() => {
                self.fetch(digest)?;
                self.open_local(digest)
            }
            other => other,
        }
    }

    fn open_local(&self, digest: &Digest) -> Result<(File, bool), StoreError> {
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
    ///
    /// A blob this store hashed within [`KNOWN_TRUST`] (it wrote it, or
    /// verified it on an earlier read) whose file still has the identity it
    /// had then (device, inode, size, modification and change times) is not
    /// hashed again: the verified-on-write index of DESIGN.md. Any write to
    /// the file through the filesystem, a replaced file or a new process
    /// means a full hash.
    pub fn open_verified(&self, digest: &Digest) -> Result<File, StoreError> {
        let (file, published) = self.open_raw(digest)?;
        let id = FileId::of(&file);
        if id.is_some() && self.known_as(digest) == id {
            return Ok(file);
        }
        self.check(digest, &file, published)?;
        if id.is_some() && FileId::of(&file) == id {
            self.remember(*digest, id);
        }
        Ok(file)
    }

    /// How many reads this store verified by hashing the whole blob.
    pub fn read_hashes(&self) -> u64 {
        self.shared.read_hashes.load(Ordering::Relaxed)
    }

    /// The identity the index holds for `digest`, if it is still trusted.
    fn known_as(&self, digest: &Digest) -> Option<FileId> {
        let mut state = lock(&self.shared.state);
        match state.known.get(digest) {
            Some(k) if k.at.elapsed() < KNOWN_TRUST => Some(k.id),
            Some(_) => {
                state.known.remove(digest);
                None
            }
            None => None,
        }
    }

    fn remember(&self, digest: Digest, id: Option<FileId>) {
        lock(&self.shared.state).remember(digest, id);
    }

    /// Hashes an open blob (positional reads: its cursor does not move)
    /// against `digest`; a published blob that does not match is
    /// quarantined. `file` and `published` are what [`Store::open_raw`]
    /// returned.
    fn check(&self, digest: &Digest, file: &File, published: bool) -> Result<(), StoreError> {
        self.shared.read_hashes.fetch_add(1, Ordering::Relaxed);
        let path = self.path_of(digest);
        let found =
            hash_reader(&mut PositionalReader { file, offset: 0 }).map_err(io_err(&path))?;
        if found != *digest {
            lock(&self.shared.state).known.remove(digest);
            if published {
                self.quarantine(digest);
            }
            return Err(StoreError::Corrupted {
                digest: *digest,
                found,
            });
        }
        Ok(())
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

    /// Where a document of namespace `ns` named `name` lives.
    fn doc_path(&self, ns: &str, name: &Digest) -> PathBuf {
        self.root
            .join("docs")
            .join(ns)
            .join(format!("{}.json", name.hex()))
    }

    /// Files a small document (an attempt's result) under `ns`/`name`
    /// unless one is there already: first writer wins, atomically, across
    /// processes. `Ok(true)` when this call created it. Durable.
    pub fn put_doc_once(&self, ns: &str, name: &Digest, bytes: &[u8]) -> Result<bool, StoreError> {
        if let Some(remote) = &self.remote {
            return Ok(remote.put_doc_once(ns, name, bytes)?);
        }
        let path = self.doc_path(ns, name);
        Ok(crate::durable::create_once(&path, bytes, true)?)
    }

    /// The document under `ns`/`name`, if any; one larger than `max` bytes
    /// is an error.
    pub fn get_doc(
        &self,
        ns: &str,
        name: &Digest,
        max: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(remote) = &self.remote {
            return Ok(remote.get_doc(ns, name, max)?);
        }
        let path = self.doc_path(ns, name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        if bytes.len() as u64 > max {
            return Err(io_err(&path)(io::Error::other(format!(
                "larger than {max} bytes"
            ))));
        }
        Ok(Some(bytes))
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
            // The rename changed the file's change time: if nothing else
            // did (same inode, size and modification time), the index
            // follows it.
            if let (Ok(_), Some(now)) = (&result, FileId::of(&job.file))
                && let Some(k) = state.known.get_mut(&job.digest)
                && k.id.same_content_as(&now)
            {
                k.id = now;
            }
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

/// How long the verified-on-write index trusts a blob it hashed: past
/// this, the next open hashes it again (bit rot is not a change the file's
/// times record).
pub const KNOWN_TRUST: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Most blobs the index holds; past it, expired entries go, then all.
const KNOWN_MAX: usize = 1 << 16;

/// An entry of the verified-on-write index.
#[derive(Debug, Clone, Copy)]
struct Known {
    id: FileId,
    at: std::time::Instant,
}

impl PublishState {
    fn remember(&mut self, digest: Digest, id: Option<FileId>) {
        let Some(id) = id else { return };
        if self.known.len() >= KNOWN_MAX {
            self.known.retain(|_, k| k.at.elapsed() < KNOWN_TRUST);
            if self.known.len() >= KNOWN_MAX {
                self.known.clear();
            }
        }
        self.known.insert(
            digest,
            Known {
                id,
                at: std::time::Instant::now(),
            },
        );
    }
}

/// What identifies a file's bytes without reading them: any write through
/// the filesystem changes the change time (and on Linux ≥ 6.13 a write
/// after a `stat` gets a fine-grained one, so a write right after ours is
/// not hidden in the same clock tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    #[cfg(unix)]
    fn of(file: &File) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Elsewhere no identity is trusted: every open hashes.
    #[cfg(not(unix))]
    fn of(_file: &File) -> Option<FileId> {
        None
    }

    /// The same file with the same bytes, the change time aside.
    fn same_content_as(&self, other: &FileId) -> bool {
        (self.dev, self.ino, self.len, self.mtime) == (other.dev, other.ino, other.len, other.mtime)
    }
}

/// Reads a shared open file at its own offset (positional reads), so
/// several readers share one file without sharing a cursor.
#[derive(Debug)]
pub(crate) struct PositionalReader<F> {
    /// The file (`&File`, `Arc<File>`).
    pub(crate) file: F,
    /// Where the next read starts.
    pub(crate) offset: u64,
}

impl<F: std::ops::Deref<Target = File>> Read for PositionalReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, buf, self.offset)?;
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(&*self.file, buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl<F: std::ops::Deref<Target = File>> io::Seek for PositionalReader<F> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let target = match to {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::End(d) => self.file.metadata()?.len().checked_add_signed(d),
            io::SeekFrom::Current(d) => self.offset.checked_add_signed(d),
        };
        self.offset = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.offset)
    }
}

/// Bytes of a blob hashed inline before the rest goes to a hashing thread.
const INLINE_HASH_BYTES: u64 = 4 << 20;
/// Bytes handed to the hashing thread at a time.
const HASH_CHUNK_BYTES: usize = 1 << 20;
/// Chunks queued for the hashing thread at most (its memory bound, with
/// the one being filled and the spares it sends back).
const HASH_QUEUE_CHUNKS: usize = 4;

/// The SHA-256 of a blob being written. The first [`INLINE_HASH_BYTES`]
/// are hashed inline; a larger blob's further bytes are hashed by a thread
/// of its own, fed 1 MiB chunks through a short queue (emptied chunks come
/// back for reuse), so that on a second core hashing overlaps whatever
/// produces the bytes (a step's guest, a source copy).
enum BlobHasher {
    Inline(Sha256),
    Thread {
        filling: Vec<u8>,
        queue: mpsc::SyncSender<Vec<u8>>,
        spares: mpsc::Receiver<Vec<u8>>,
        thread: std::thread::JoinHandle<Sha256>,
    },
}

impl BlobHasher {
    /// Adds `bytes` (the blob's bytes from offset `at`).
    fn update(&mut self, bytes: &[u8], at: u64) -> io::Result<()> {
        if let BlobHasher::Inline(h) = self {
            if at + (bytes.len() as u64) <= INLINE_HASH_BYTES {
                h.update(bytes);
                return Ok(());
            }
            let mut h = std::mem::take(h);
            let (queue, chunks) = mpsc::sync_channel::<Vec<u8>>(HASH_QUEUE_CHUNKS);
            let (give_back, spares) = mpsc::channel::<Vec<u8>>();
            let thread = std::thread::Builder::new()
                .name("blob hasher".into())
                .spawn(move || {
                    for mut chunk in chunks {
                        h.update(&chunk);
                        chunk.clear();
                        let _ = give_back.send(chunk);
                    }
                    h
                })?;
            *self = BlobHasher::Thread {
                filling: Vec::with_capacity(HASH_CHUNK_BYTES),
                queue,
                spares,
                thread,
            };
        }
        let BlobHasher::Thread {
            filling,
            queue,
            spares,
            ..
        } = self
        else {
            unreachable!("switched to a thread above")
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = rest.len().min(HASH_CHUNK_BYTES - filling.len());
            filling.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if filling.len() == HASH_CHUNK_BYTES {
                let next = spares
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(HASH_CHUNK_BYTES));
                queue
                    .send(std::mem::replace(filling, next))
                    .map_err(|_| io::Error::other("the blob's hashing thread is gone"))?;
            }
        }
        Ok(())
    }

    /// The digest of everything added.
    fn finish(self) -> io::Result<Digest> {
        match self {
            BlobHasher::Inline(h) => Ok(Digest::from_hasher(h)),
            BlobHasher::Thread {
                filling,
                queue,
                thread,
                ..
            } => {
                let sent = filling.is_empty() || queue.send(filling).is_ok();
                drop(queue);
                match thread.join() {
                    Ok(h) if sent => Ok(Digest::from_hasher(h)),
                    _ => Err(io::Error::other("the blob's hashing thread failed")),
                }
            }
        }
    }
}

/// A blob being written: temp file in the store's own filesystem, hashed as
/// it goes. [`BlobWriter::commit`] hands it to the publisher; dropping it
/// uncommitted removes the temp file.
pub struct BlobWriter {
    file: Option<File>,
    path: PathBuf,
    hasher: BlobHasher,
    size: u64,
    root: PathBuf,
    shared: Arc<Shared>,
    queue: mpsc::Sender<Publish>,
    /// Queue the blob for the shared tier on commit (not for a blob
    /// fetched from it).
    upload: bool,
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
    pub fn commit(self) -> Result<(Digest, u64), StoreError> {
        self.commit_as(None)
    }

    /// [`BlobWriter::commit`], refusing (and dropping) the bytes unless
    /// they hash to `expected` when one is given.
    fn commit_as(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        let digest = std::mem::replace(&mut self.hasher, BlobHasher::Inline(Sha256::new()))
            .finish()
            .map_err(io_err(&self.path))?;
        if let Some(expected) = expected
            && *expected != digest
        {
            // Dropping `self` removes the temp file.
            return Err(StoreError::Corrupted {
                digest: *expected,
                found: digest,
            });
        }
        let file = self.file.take().expect("file present until commit");
        let hex = digest.hex();
        let dest = self.root.join("sha256").join(&hex[..2]).join(&hex[2..]);
        let mut state = lock(&self.shared.state);
        if self.upload {
            state.unsent.insert(digest);
        }
        if dest.is_file() || state.pending.contains_key(&digest) {
            drop(state);
            drop(file);
            let _ = fs::remove_file(&self.path);
            return Ok((digest, self.size));
        }
        state.pending.insert(digest, self.path.clone());
        state.remember(digest, FileId::of(&file));
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
        self.hasher.update(&buf[..n], self.size)?;
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
    fn sync_uploads_what_is_published_and_leaves_another_threads_unpublished_blob_queued() {
        let dir = tempfile::tempdir().unwrap();
        let remote = Arc::new(crate::remote::Remote::open("memory://").unwrap());
        let store = Store::open_with(dir.path(), Some(remote.clone())).unwrap();
        let (mine, _) = store.put_bytes(b"mine").unwrap();
        store.sync().unwrap();
        assert!(remote.has_blob(&mine).unwrap());
        // Queued again (as a second write of the same bytes would), and
        // another thread's blob, committed after this sync drained
        // `pending`: queued for upload, its file not at its path yet.
        let theirs = Digest::of(b"theirs");
        {
            let mut state = lock(&store.shared.state);
            state.unsent.insert(mine);
            state
                .pending
                .insert(theirs, dir.path().join("store/tmp/theirs.part"));
            state.unsent.insert(theirs);
        }
        // `sync` would wait for that blob; upload what it must here.
        store.upload_unsent().unwrap();
        assert!(!remote.has_blob(&theirs).unwrap());
        let state = lock(&store.shared.state);
        assert_eq!(state.unsent.iter().collect::<Vec<_>>(), [&theirs]);
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

    /// The verified-on-write index: a blob this store wrote (or verified)
    /// opens without a hash while its file is untouched; a write to it, a
    /// replaced file, or another store (process) means a full hash.
    #[test]
    fn the_index_spares_hashes_of_untouched_blobs_and_no_write_escapes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (d, _) = store.put_bytes(b"precious bytes").unwrap();
        store.open_verified(&d).unwrap(); // pending: its temp file
        store.sync().unwrap();
        store.open_verified(&d).unwrap(); // published: renamed
        assert_eq!(store.read_hashes(), 0);

        // Same size, in place, right after our own write and stat.
        let path = store.path_of(&d);
        fs::write(&path, b"Precious bytes").unwrap();
        assert!(matches!(
            store.open_verified(&d),
            Err(StoreError::Corrupted { .. })
        ));
        assert_eq!(store.read_hashes(), 1);
        store.put_bytes(b"precious bytes").unwrap();
        store.sync().unwrap();

        // A file put in its place with the right bytes: hashed, then known.
        let other = dir.path().join("other");
        fs::write(&other, b"precious bytes").unwrap();
        fs::rename(&other, &path).unwrap();
        assert_eq!(store.read_bytes(&d).unwrap(), b"precious bytes");
        assert_eq!(store.read_hashes(), 2);
        assert_eq!(store.read_bytes(&d).unwrap(), b"precious bytes");
        assert_eq!(store.read_hashes(), 2);

        // Another store of the same home knows nothing yet.
        drop(store);
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.read_bytes(&d).unwrap(), b"precious bytes");
        assert_eq!(again.read_hashes(), 1);
        assert_eq!(again.read_bytes(&d).unwrap(), b"precious bytes");
        assert_eq!(again.read_hashes(), 1);
    }

    /// Past [`INLINE_HASH_BYTES`] a blob is hashed on a thread: the digest
    /// is the same as of the bytes at once, whatever the write sizes and
    /// wherever they cross the switch.
    #[test]
    fn a_large_blob_hashed_beside_its_writer_has_the_digest_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let len = 2 * INLINE_HASH_BYTES as usize + 12_345;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        for chunk in [4093, 1 << 20, len] {
            let mut w = store.writer().unwrap();
            for part in bytes.chunks(chunk) {
                w.write_all(part).unwrap();
            }
            assert_eq!(
                w.commit().unwrap(),
                (Digest::of(&bytes), len as u64),
                "chunks of {chunk}"
            );
        }
        assert_eq!(store.read_bytes(&Digest::of(&bytes)).unwrap(), bytes);
        // Dropped uncommitted mid-thread: nothing left behind.
        let mut w = store.writer().unwrap();
        w.write_all(&bytes).unwrap();
        drop(w);
        store.sync().unwrap();
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
