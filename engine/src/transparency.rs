//! A local append-only transparency log: a Merkle tree over everything the
//! engine seals, hashed as in RFC 6962 / RFC 9162, so a statement's presence
//! in the log can be proven with an inclusion proof against a tree root.
//!
//! Invariant: `<home>/log/leaves` is a sequence of whole 32-byte leaf hashes
//! (`SHA256(0x00 || entry)`), only ever appended to, leaf `i` at offset
//! `32 * i`; `<home>/log/entries.jsonl` holds one JSON line per leaf, line
//! `i` for leaf `i`. Appends run under an exclusive lock on `leaves` and
//! write (and fsync) the entry line before the leaf, so after a crash the
//! only damage is a torn leaf record or entry lines past the last leaf; both
//! are cut off on the next open or append, with a warning. The tree is never
//! stored: roots and proofs are recomputed from the leaf hashes, which are
//! read into memory (at most [`LEAVES_MAX`]). [`Log::append_signed`] stores
//! a signed tree head (size + root, signed by the caller's key) in
//! `<home>/log/head` under the append lock, so it always describes the
//! newest tree: proofs recomputed from local leaves prove something only
//! when checked against a signed head (a rewritten log no longer hashes to
//! it), and consistency proofs (RFC 6962 §2.1.2) show an older signed head
//! is a prefix of the newest.
//! Boundary: knows bytes, hashes and two files; not what an entry means
//! (the caller decides, e.g. a DSSE envelope's digest).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
/// A SHA-256 tree hash: a leaf hash, node hash or root.
pub type Hash = [u8; 32];

/// Bytes of one leaf record in the `leaves` file.
pub const HASH_BYTES: u64 = 32;
/// Most leaves a log may hold. Tree operations read every leaf hash into
/// memory; this keeps that under 320 MiB. A local log grows by one leaf per
/// sealed run, so reaching it means something is appending in a loop.
pub const LEAVES_MAX: u64 = 10_000_000;

/// Directory under the Sluice home that holds the log.
const LOG_DIR: &str = "log";
/// The leaf hashes, 32 bytes each, back to back.
const LEAVES_FILE: &str = "leaves";
/// One JSON line per leaf, for people and tools.
const ENTRIES_FILE: &str = "entries.jsonl";
/// The newest signed tree head, as the appender's signer made it.
const HEAD_FILE: &str = "head";
/// A signed tree head is a small JSON document; reads stop here.
pub const HEAD_BYTES_MAX: u64 = 64 * 1024;
/// Longest `entries.jsonl` line read when scanning entries; a sealed
/// envelope is a few KiB, so a longer line is skipped, not loaded.
pub const ENTRY_LINE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Domain-separation prefix of a leaf hash (RFC 6962 §2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash (RFC 6962 §2.1).
const NODE_PREFIX: u8 = 0x01;
/// Bytes read per step when scanning `entries.jsonl` backwards for its last
/// line.
const TAIL_SCAN_CHUNK_BYTES: u64 = 4096;

/// Log failures; each names the file, index or size involved.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Filesystem failure.
    #[error("transparency log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The log already holds [`LEAVES_MAX`] leaves.
    #[error("transparency log {path} is full: it holds {LEAVES_MAX} leaves, the most allowed")]
    Full {
        /// The leaves file.
        path: PathBuf,
    },
    /// The leaves file holds more than [`LEAVES_MAX`] leaves.
    #[error("transparency log {path} holds {leaves} leaves, more than the {LEAVES_MAX} allowed")]
    TooLarge {
        /// The leaves file.
        path: PathBuf,
        /// How many it holds.
        leaves: u64,
    },
    /// A tree size larger than the log.
    #[error("tree size {size} is beyond the log's {log_size} leaves")]
    SizeBeyondLog {
        /// The size asked for.
        size: u64,
        /// The log's size.
        log_size: u64,
    },
    /// A leaf index outside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// fsyncs a directory so a file created in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The leaf hash of `entry`: `SHA256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: `SHA256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The Merkle tree hash of `leaves` (leaf hashes), RFC 6962 §2.1: SHA256 of
/// the empty string for no leaves, the leaf hash for one, otherwise the node
/// hash of the left subtree (the largest power of two smaller than n) and
/// the rest.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => Sha256::digest([]).into(),
        [one] => *one,
        _ => {
            let k = split_point(leaves.len());
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` in the tree over `leaves`, RFC 6962
/// §2.1.1, ordered from the leaf's sibling up to the root's child; `None` if
/// `index` is not a leaf.
pub fn inclusion_path(leaves: &[Hash], index: u64) -> Option<Vec<Hash>> {
    let mut m = usize::try_from(index).ok().filter(|m| *m < leaves.len())?;
    let mut path = Vec::new();
    let mut tree = leaves;
    // Walk down from the root, collecting siblings, then reverse so the path
    // starts at the leaf.
    while tree.len() > 1 {
        let k = split_point(tree.len());
        if m < k {
            path.push(root_of(&tree[k..]));
            tree = &tree[..k];
        } else {
            path.push(root_of(&tree[..k]));
            tree = &tree[k..];
            m -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// Whether `proof` shows leaf `leaf_hash` at `index` in the tree of `size`
/// leaves whose root is `root` (RFC 9162 §2.1.3.2). The proof's shape
/// alone does not pin `size` (leaf 0's path is the same shape in trees of 11
/// and 12 leaves); `root` must be the root of the claimed size.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// The consistency proof between the tree over the first `m` of `leaves`
/// and the tree over all of them, RFC 6962 §2.1.2 (`PROOF(m, D[n])`);
/// `None` unless `0 < m <= n`. Empty when `m == n`.
pub fn consistency_path(leaves: &[Hash], m: u64) -> Option<Vec<Hash>> {
    let m = usize::try_from(m)
        .ok()
        .filter(|m| *m > 0 && *m <= leaves.len())?;
    let mut path = Vec::new();
    subproof(m, leaves, true, &mut path);
    Some(path)
}

/// `SUBPROOF(m, D[n], b)` of RFC 6962 §2.1.2, pushed leaf-side first.
fn subproof(m: usize, leaves: &[Hash], complete: bool, path: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            path.push(root_of(leaves));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, path);
        path.push(root_of(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, path);
        path.push(root_of(&leaves[..k]));
    }
}

/// Whether `proof` shows that the tree of `first` leaves with root
/// `first_root` is a prefix of the tree of `second` leaves with root
/// `second_root` (RFC 9162 §2.1.4.2): nothing in the first tree was changed
/// or removed when the second was made. Sizes must satisfy
/// `0 < first <= second`.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> bool {
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((head, rest)) = path.split_first() else {
        return false;
    };
    let (mut f_n, mut s_n) = (first - 1, second - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && fr == *first_root && sr == *second_root
}

/// One line of `entries.jsonl`. An entry that is valid UTF-8 is stored as
/// `entry`; any other as `entry_base64` (standard alphabet).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryLine {
    /// The leaf index.
    pub index: u64,
    /// Lower-case hex of the leaf hash.
    pub leaf_hash: String,
    /// The entry, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The entry in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_base64: Option<String>,
}

/// The log under `<home>/log/`. Several `Log`s (in one process or many) may
/// be open on one directory: appends serialize on a file lock and readers
/// take a shared lock, so each sees whole leaves.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    leaves_path: PathBuf,
    entries_path: PathBuf,
    leaves: File,
    entries: File,
}

/// Holds a lock on a file until dropped.
struct Locked<'a>(&'a File);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn open_rw(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(path))
}

impl Log {
    /// Opens (creating as needed) the log under `home`, cutting off a torn
    /// trailing leaf record and entry lines past the last leaf.
    pub fn open(home: &Path) -> Result<Log, LogError> {
        let dir = home.join(LOG_DIR);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let leaves_path = dir.join(LEAVES_FILE);
        let entries_path = dir.join(ENTRIES_FILE);
        let created = !leaves_path.exists() || !entries_path.exists();
        let log = Log {
            leaves: open_rw(&leaves_path)?,
            entries: open_rw(&entries_path)?,
            dir,
            leaves_path,
            entries_path,
        };
        if created {
            sync_dir(&log.dir)?;
        }
        let leaves = {
            let _guard = log.lock_exclusive()?;
            log.repair()?
        };
        if leaves > LEAVES_MAX {
            return Err(LogError::TooLarge {
                path: log.leaves_path.clone(),
                leaves,
            });
        }
        Ok(log)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock_exclusive(&self) -> Result<Locked<'_>, LogError> {
        self.leaves.lock().map_err(io_err(&self.leaves_path))?;
        Ok(Locked(&self.leaves))
    }

    fn lock_shared(&self) -> Result<Locked<'_>, LogError> {
        self.leaves
            .lock_shared()
            .map_err(io_err(&self.leaves_path))?;
        Ok(Locked(&self.leaves))
    }

    /// Under the exclusive lock: truncates a torn leaf record and entry
    /// lines that have no leaf; returns the number of leaves.
    fn repair(&self) -> Result<u64, LogError> {
        let len = self.file_len(&self.leaves, &self.leaves_path)?;
        let whole = len - len % HASH_BYTES;
        if whole != len {
            tracing::warn!(
                path = %self.leaves_path.display(),
                torn_bytes = len - whole,
                "transparency log ends in a torn leaf record (crash mid-append); truncating it"
            );
            self.leaves
                .set_len(whole)
                .and_then(|()| self.leaves.sync_all())
                .map_err(io_err(&self.leaves_path))?;
        }
        let leaves = whole / HASH_BYTES;
        self.repair_entries_tail(leaves)?;
        Ok(leaves)
    }

    fn file_len(&self, file: &File, path: &Path) -> Result<u64, LogError> {
        Ok(file.metadata().map_err(io_err(path))?.len())
    }

    /// Cuts a torn last line, and complete lines whose index is not below
    /// `leaves`, off `entries.jsonl`. Each step shortens the file, so the
    /// loop ends; normally it reads one line and stops.
    fn repair_entries_tail(&self, leaves: u64) -> Result<(), LogError> {
        let path = &self.entries_path;
        let mut cut = false;
        loop {
            let len = self.file_len(&self.entries, path)?;
            if len == 0 {
                break;
            }
            let mut last = [0u8; 1];
            self.entries
                .read_exact_at(&mut last, len - 1)
                .map_err(io_err(path))?;
            let (start, orphan) = if last[0] != b'\n' {
                (self.line_start(len)?, true)
            } else {
                let start = self.line_start(len - 1)?;
                let mut line = vec![0u8; usize::try_from(len - start).unwrap_or(usize::MAX)];
                self.entries
                    .read_exact_at(&mut line, start)
                    .map_err(io_err(path))?;
                let orphan =
                    serde_json::from_slice::<EntryLine>(&line).is_ok_and(|e| e.index >= leaves);
                (start, orphan)
            };
            if !orphan {
                break;
            }
            tracing::warn!(
                path = %path.display(),
                bytes = len - start,
                "transparency log entries end in a torn line or a line without a leaf (crash mid-append); truncating it"
            );
            self.entries.set_len(start).map_err(io_err(path))?;
            cut = true;
        }
        if cut {
            self.entries.sync_all().map_err(io_err(path))?;
        }
        Ok(())
    }

    /// The offset just after the last `\n` before `end` in `entries.jsonl`
    /// (0 if none).
    fn line_start(&self, end: u64) -> Result<u64, LogError> {
        let mut buf = [0u8; TAIL_SCAN_CHUNK_BYTES as usize];
        let mut hi = end;
        while hi > 0 {
            let lo = hi.saturating_sub(TAIL_SCAN_CHUNK_BYTES);
            let chunk = &mut buf[..(hi - lo) as usize];
            self.entries
                .read_exact_at(chunk, lo)
                .map_err(io_err(&self.entries_path))?;
            if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
                return Ok(lo + i as u64 + 1);
            }
            hi = lo;
        }
        Ok(0)
    }

    /// Appends `entry` and returns its leaf index once both files are
    /// fsynced.
    pub fn append(&self, entry: &[u8]) -> Result<u64, LogError> {
        let _guard = self.lock_exclusive()?;
        self.append_locked(entry)
    }

    /// [`Log::append`] under the caller's exclusive lock.
    fn append_locked(&self, entry: &[u8]) -> Result<u64, LogError> {
        let (index, hash, line) = self.prepare_append(entry)?;
        self.write_entry_line(&line)?;
        self.write_leaf(index, &hash)?;
        Ok(index)
    }

    /// Under the exclusive lock: the new leaf's index and hash and its
    /// entry line, after repairing what a crashed appender left.
    fn prepare_append(&self, entry: &[u8]) -> Result<(u64, Hash, Vec<u8>), LogError> {
        let hash = leaf_hash(entry);
        // Another process may have crashed mid-append since we opened.
        let index = self.repair()?;
        if index >= LEAVES_MAX {
            return Err(LogError::Full {
                path: self.leaves_path.clone(),
            });
        }
        let (text, b64) = match std::str::from_utf8(entry) {
            Ok(s) => (Some(s.to_owned()), None),
            Err(_) => {
                use base64::Engine as _;
                (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(entry)),
                )
            }
        };
        let line = EntryLine {
            index,
            leaf_hash: hex::encode(hash),
            entry: text,
            entry_base64: b64,
        };
        // Serializing strings and integers cannot fail.
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Ok((index, hash, bytes))
    }

    /// The entry line first: a crash before the leaf lands leaves only an
    /// orphan line, which the next repair removes.
    fn write_entry_line(&self, line: &[u8]) -> Result<(), LogError> {
        let entries_len = self.file_len(&self.entries, &self.entries_path)?;
        self.entries
            .write_all_at(line, entries_len)
            .and_then(|()| self.entries.sync_data())
            .map_err(io_err(&self.entries_path))
    }

    /// The leaf, once its entry line is durable.
    fn write_leaf(&self, index: u64, hash: &Hash) -> Result<(), LogError> {
        crate::fault::point("log")
            .and_then(|()| self.leaves.write_all_at(hash, index * HASH_BYTES))
            .and_then(|()| self.leaves.sync_data())
            .map_err(io_err(&self.leaves_path))
    }

    /// The number of leaves.
    pub fn size(&self) -> Result<u64, LogError> {
        let _guard = self.lock_shared()?;
        Ok(self.file_len(&self.leaves, &self.leaves_path)? / HASH_BYTES)
    }

    /// The first `size` leaf hashes.
    pub fn leaf_hashes(&self, size: u64) -> Result<Vec<Hash>, LogError> {
        let _guard = self.lock_shared()?;
        self.leaf_hashes_locked(size)
    }

    /// [`Log::leaf_hashes`] for a caller that holds a lock (taking a second
    /// lock on the same file would convert, then release, the caller's).
    fn leaf_hashes_locked(&self, size: u64) -> Result<Vec<Hash>, LogError> {
        let log_size =
            (self.file_len(&self.leaves, &self.leaves_path)? / HASH_BYTES).min(LEAVES_MAX);
        if size > log_size {
            return Err(LogError::SizeBeyondLog { size, log_size });
        }
        // `size <= LEAVES_MAX`, so this fits in memory and in usize.
        let mut raw = vec![0u8; (size * HASH_BYTES) as usize];
        self.leaves
            .read_exact_at(&mut raw, 0)
            .map_err(io_err(&self.leaves_path))?;
        Ok(raw
            .chunks_exact(HASH_BYTES as usize)
            .map(|c| {
                let mut h = [0u8; HASH_BYTES as usize];
                h.copy_from_slice(c);
                h
            })
            .collect())
    }

    /// Appends `entry` like [`Log::append`], then, still under the append
    /// lock, asks `sign` for a signed tree head of the new size and root and
    /// stores it as the log's head (durably), so the head file always
    /// describes the newest tree. Returns the leaf index, the tree size and
    /// the signed head's bytes.
    pub fn append_signed(
        &self,
        entry: &[u8],
        sign: impl FnOnce(u64, &Hash) -> Vec<u8>,
    ) -> Result<(u64, u64, Vec<u8>), LogError> {
        let _guard = self.lock_exclusive()?;
        let (index, hash, line) = self.prepare_append(entry)?;
        let size = index + 1;
        let mut leaves = self.leaf_hashes_locked(index)?;
        leaves.push(hash);
        let root = root_of(&leaves);
        let head = sign(size, &root);
        let path = self.dir.join(HEAD_FILE);
        let head_err = |e: crate::durable::DurableError| LogError::Io {
            path: path.clone(),
            source: io::Error::other(e.to_string()),
        };
        // The new head is known before the leaf is written, so its temp
        // file's fsync overlaps the entry line's (one journal commit, not
        // two); it is renamed into place only once the leaf is durable, so
        // the head never describes a tree the log does not hold.
        let (staged, entry_written) = std::thread::scope(|s| {
            let staged = s.spawn(|| {
                crate::durable::stage(&path, &head, true, crate::durable::PUBLIC_FILE_MODE)
            });
            let entry_written = self.write_entry_line(&line);
            let staged = staged.join().unwrap_or_else(|_| {
                Err(crate::durable::DurableError {
                    path: path.clone(),
                    source: io::Error::other("staging the head panicked"),
                })
            });
            (staged, entry_written)
        });
        entry_written?;
        let staged = staged.map_err(head_err)?;
        self.write_leaf(index, &hash)?;
        staged.commit().map_err(head_err)?;
        Ok((index, size, head))
    }

    /// The newest signed tree head's bytes, if any head was ever signed.
    pub fn head(&self) -> Result<Option<Vec<u8>>, LogError> {
        use std::io::Read as _;
        let path = self.dir.join(HEAD_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(HEAD_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        if bytes.len() as u64 > HEAD_BYTES_MAX {
            return Err(io_err(&path)(io::Error::other(format!(
                "larger than {HEAD_BYTES_MAX} bytes; not a signed tree head"
            ))));
        }
        Ok(Some(bytes))
    }

    /// Calls `f(index, entry)` for every line of `entries.jsonl` whose
    /// entry hashes to leaf `index` of `leaves` (the caller's authenticated
    /// view of the log); lines that do not (torn, edited, too long, past
    /// `leaves`) are skipped, since nothing vouches for them.
    pub fn authentic_entries(
        &self,
        leaves: &[Hash],
        mut f: impl FnMut(u64, &[u8]),
    ) -> Result<(), LogError> {
        use std::io::{BufRead as _, Read as _};
        let _guard = self.lock_shared()?;
        let file = File::open(&self.entries_path).map_err(io_err(&self.entries_path))?;
        let mut reader = io::BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut reader)
                .take(ENTRY_LINE_BYTES_MAX + 1)
                .read_until(b'\n', &mut line)
                .map_err(io_err(&self.entries_path))?;
            if n == 0 {
                return Ok(());
            }
            if line.last() != Some(&b'\n') {
                // Too long (or torn): skip to the end of the line.
                while line.last() != Some(&b'\n') {
                    line.clear();
                    let k = (&mut reader)
                        .take(ENTRY_LINE_BYTES_MAX)
                        .read_until(b'\n', &mut line)
                        .map_err(io_err(&self.entries_path))?;
                    if k == 0 {
                        return Ok(());
                    }
                }
                continue;
            }
            let Ok(e) = serde_json::from_slice::<EntryLine>(&line) else {
                continue;
            };
            let bytes = match (e.entry, e.entry_base64) {
                (Some(text), _) => text.into_bytes(),
                (None, Some(b64)) => {
                    use base64::Engine as _;
                    match base64::engine::general_purpose::STANDARD.decode(b64) {
                        Ok(b) => b,
                        Err(_) => continue,
                    }
                }
                (None, None) => continue,
            };
            let authentic = usize::try_from(e.index)
                .ok()
                .and_then(|i| leaves.get(i))
                .is_some_and(|h| *h == leaf_hash(&bytes));
            if authentic {
                f(e.index, &bytes);
            }
        }
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Result<Hash, LogError> {
        let _guard = self.lock_shared()?;
        let size = self.file_len(&self.leaves, &self.leaves_path)? / HASH_BYTES;
        if index >= size {
            return Err(LogError::IndexOutOfRange { index, size });
        }
        let mut h = [0u8; HASH_BYTES as usize];
        self.leaves
            .read_exact_at(&mut h, index * HASH_BYTES)
            .map_err(io_err(&self.leaves_path))?;
        Ok(h)
    }

    /// The root of the tree over the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, LogError> {
        Ok(root_of(&self.leaf_hashes(size)?))
    }

    /// The inclusion proof (audit path) of leaf `index` in the tree over the
    /// first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        if index >= size {
            return Err(LogError::IndexOutOfRange { index, size });
        }
        let leaves = self.leaf_hashes(size)?;
        inclusion_path(&leaves, index).ok_or(LogError::IndexOutOfRange { index, size })
    }

    /// The index of the first leaf with hash `leaf_hash`, if any.
    pub fn find(&self, leaf_hash: &Hash) -> Result<Option<u64>, LogError> {
        let size = self.size()?;
        let leaves = self.leaf_hashes(size)?;
        Ok(leaves.iter().position(|h| h == leaf_hash).map(|i| i as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 §2.1 taken literally, for comparison.
    fn naive_root(leaves: &[Hash]) -> Hash {
        let n = leaves.len();
        if n == 0 {
            return Sha256::digest(b"").into();
        }
        if n == 1 {
            return leaves[0];
        }
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
    }

    fn unhex(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The leaf inputs of certificate-transparency-go's merkle tree tests.
    fn ct_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| leaf_hash(&hex::decode(h).unwrap()))
        .collect()
    }

    fn numbered_leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn roots_match_the_rfc6962_test_vectors() {
        let expected = [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let leaves = ct_leaves();
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(hex::encode(root_of(&leaves[..n])), *want, "size {n}");
        }
    }

    #[test]
    fn inclusion_paths_match_the_rfc6962_test_vectors() {
        let leaves = ct_leaves();
        assert_eq!(
            inclusion_path(&leaves, 0).unwrap(),
            [
                unhex("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                unhex("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                unhex("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ]
        );
        assert_eq!(
            inclusion_path(&leaves, 5).unwrap(),
            [
                unhex("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                unhex("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                unhex("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ]
        );
        assert_eq!(
            inclusion_path(&leaves[..3], 2).unwrap(),
            [unhex(
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
            )]
        );
        assert_eq!(inclusion_path(&leaves[..1], 0).unwrap(), Vec::<Hash>::new());
        assert_eq!(inclusion_path(&leaves, 8), None);
    }

    #[test]
    fn roots_match_a_naive_implementation() {
        for n in 0..=33 {
            let leaves = numbered_leaves(n);
            assert_eq!(root_of(&leaves), naive_root(&leaves), "size {n}");
        }
    }

    #[test]
    fn every_consistency_proof_up_to_size_17_verifies_and_any_change_breaks_it() {
        let all = numbered_leaves(17);
        for n in 1..=17usize {
            let second = &all[..n];
            let second_root = root_of(second);
            for m in 1..=n {
                let first_root = root_of(&all[..m]);
                let proof = consistency_path(second, m as u64).unwrap();
                let (m64, n64) = (m as u64, n as u64);
                assert!(
                    verify_consistency(m64, n64, &first_root, &second_root, &proof),
                    "m {m} n {n}"
                );
                // A first tree whose leaves were rewritten is not a prefix.
                let mut rewritten = all[..m].to_vec();
                rewritten[m - 1] = leaf_hash(b"forged");
                assert!(
                    !verify_consistency(m64, n64, &root_of(&rewritten), &second_root, &proof),
                    "m {m} n {n}: rewritten first tree"
                );
                // Every proof element matters.
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][0] ^= 1;
                    assert!(
                        !verify_consistency(m64, n64, &first_root, &second_root, &bad),
                        "m {m} n {n}: element {i}"
                    );
                }
                // The proof does not tie the first tree to another second root.
                if m < n {
                    assert!(!verify_consistency(
                        m64,
                        n64,
                        &first_root,
                        &first_root,
                        &proof
                    ));
                }
            }
        }
        assert_eq!(consistency_path(&all, 0), None);
        assert_eq!(consistency_path(&all, 18), None);
        assert!(!verify_consistency(0, 3, &all[0], &all[0], &[]));
        assert!(!verify_consistency(4, 3, &all[0], &all[0], &[]));
    }

    #[test]
    fn consistency_paths_match_the_rfc6962_test_vectors() {
        // certificate-transparency-go merkle tests: PROOF(1, D[8]), (6, 8), (2, 5).
        let leaves = ct_leaves();
        assert_eq!(
            consistency_path(&leaves, 1).unwrap(),
            [
                unhex("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                unhex("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                unhex("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ]
        );
        assert_eq!(
            consistency_path(&leaves, 6).unwrap(),
            [
                unhex("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                unhex("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                unhex("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ]
        );
        assert_eq!(
            consistency_path(&leaves[..5], 2).unwrap(),
            [
                unhex("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                unhex("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")
            ]
        );
    }

    #[test]
    fn append_signed_stores_a_head_of_the_new_tree_and_entries_are_checked_against_leaves() {
        let home = tempfile::tempdir().unwrap();
        let log = Log::open(home.path()).unwrap();
        assert_eq!(log.head().unwrap(), None);
        for i in 0..3u8 {
            let (index, size, head) = log
                .append_signed(&[0xff, i], |size, root| {
                    format!("{size} {}", hex::encode(root)).into_bytes()
                })
                .unwrap();
            assert_eq!((index, size), (u64::from(i), u64::from(i) + 1));
            assert_eq!(log.head().unwrap().unwrap(), head);
        }
        let leaves = log.leaf_hashes(3).unwrap();
        let head = format!("3 {}", hex::encode(root_of(&leaves)));
        assert_eq!(log.head().unwrap().unwrap(), head.as_bytes());
        // Entry lines that no longer hash to their leaf are not reported.
        let path = home.path().join("log").join(ENTRIES_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let edited = text.replacen("\"entry_base64\":\"/wE=\"", "\"entry_base64\":\"/wk=\"", 1);
        assert_ne!(edited, text);
        fs::write(&path, edited).unwrap();
        let mut seen = Vec::new();
        log.authentic_entries(&leaves, |i, e| seen.push((i, e.to_vec())))
            .unwrap();
        assert_eq!(seen, [(0, vec![0xff, 0]), (2, vec![0xff, 2])]);
    }

    #[test]
    fn every_inclusion_proof_up_to_size_17_verifies() {
        let all = numbered_leaves(17);
        for size in 1..=17u64 {
            let leaves = &all[..size as usize];
            let root = root_of(leaves);
            for index in 0..size {
                let proof = inclusion_path(leaves, index).unwrap();
                assert!(
                    verify_inclusion(&leaves[index as usize], index, size, &proof, &root),
                    "index {index} size {size}"
                );
            }
        }
    }

    #[test]
    fn inclusion_proofs_fail_for_wrong_leaf_index_root_or_path() {
        let leaves = numbered_leaves(11);
        let root = root_of(&leaves);
        let size = leaves.len() as u64;
        for index in 0..size {
            let i = index as usize;
            let proof = inclusion_path(&leaves, index).unwrap();
            let leaf = &leaves[i];
            let other_leaf = &leaves[(i + 1) % leaves.len()];
            assert!(
                !verify_inclusion(other_leaf, index, size, &proof, &root),
                "{index}"
            );
            for wrong in (0..size + 2).filter(|w| *w != index) {
                assert!(
                    !verify_inclusion(leaf, wrong, size, &proof, &root),
                    "{index} as {wrong}"
                );
            }
            assert!(!verify_inclusion(
                leaf,
                index,
                size,
                &proof,
                &root_of(&leaves[..10])
            ));
            let mut short = proof.clone();
            short.pop();
            assert!(
                !verify_inclusion(leaf, index, size, &short, &root),
                "{index}"
            );
            let mut long = proof.clone();
            long.push(root);
            assert!(
                !verify_inclusion(leaf, index, size, &long, &root),
                "{index}"
            );
            let mut flipped = proof.clone();
            flipped[0][0] ^= 1;
            assert!(
                !verify_inclusion(leaf, index, size, &flipped, &root),
                "{index}"
            );
        }
    }

    #[test]
    fn appends_persist_across_reopen_with_entry_lines() {
        let home = tempfile::tempdir().unwrap();
        let log = Log::open(home.path()).unwrap();
        assert_eq!(log.size().unwrap(), 0);
        assert_eq!(
            hex::encode(log.root(0).unwrap()),
            hex::encode(Sha256::digest(b""))
        );
        assert_eq!(log.append(b"first").unwrap(), 0);
        assert_eq!(log.append(b"second").unwrap(), 1);
        assert_eq!(log.append(&[0xff, 0x00]).unwrap(), 2);
        drop(log);

        let log = Log::open(home.path()).unwrap();
        assert_eq!(log.size().unwrap(), 3);
        assert_eq!(log.append(b"fourth").unwrap(), 3);
        let expected = [
            leaf_hash(b"first"),
            leaf_hash(b"second"),
            leaf_hash(&[0xff, 0x00]),
            leaf_hash(b"fourth"),
        ];
        assert_eq!(log.leaf_hashes(4).unwrap(), expected);
        assert_eq!(log.leaf(1).unwrap(), expected[1]);
        assert_eq!(log.root(4).unwrap(), root_of(&expected));
        assert_eq!(log.root(2).unwrap(), root_of(&expected[..2]));
        assert_eq!(log.find(&leaf_hash(b"second")).unwrap(), Some(1));
        assert_eq!(log.find(&leaf_hash(b"absent")).unwrap(), None);
        let proof = log.inclusion_proof(1, 4).unwrap();
        assert!(verify_inclusion(
            &expected[1],
            1,
            4,
            &proof,
            &log.root(4).unwrap()
        ));

        let text = fs::read_to_string(home.path().join("log/entries.jsonl")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                format!(
                    r#"{{"index":0,"leaf_hash":"{}","entry":"first"}}"#,
                    hex::encode(expected[0])
                ),
                format!(
                    r#"{{"index":1,"leaf_hash":"{}","entry":"second"}}"#,
                    hex::encode(expected[1])
                ),
                format!(
                    r#"{{"index":2,"leaf_hash":"{}","entry_base64":"/wA="}}"#,
                    hex::encode(expected[2])
                ),
                format!(
                    r#"{{"index":3,"leaf_hash":"{}","entry":"fourth"}}"#,
                    hex::encode(expected[3])
                ),
            ]
        );
        assert_eq!(
            fs::metadata(home.path().join("log/leaves")).unwrap().len(),
            4 * 32
        );
    }

    #[test]
    fn out_of_range_sizes_and_indices_are_errors() {
        let home = tempfile::tempdir().unwrap();
        let log = Log::open(home.path()).unwrap();
        log.append(b"a").unwrap();
        log.append(b"b").unwrap();
        let err = log.root(3).unwrap_err();
        assert_eq!(err.to_string(), "tree size 3 is beyond the log's 2 leaves");
        let err = log.inclusion_proof(2, 2).unwrap_err();
        assert_eq!(err.to_string(), "leaf index 2 is outside a tree of size 2");
        let err = log.inclusion_proof(0, 3).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::SizeBeyondLog {
                    size: 3,
                    log_size: 2
                }
            ),
            "{err:?}"
        );
        let err = log.leaf(2).unwrap_err();
        assert!(
            matches!(err, LogError::IndexOutOfRange { index: 2, size: 2 }),
            "{err:?}"
        );
    }

    #[test]
    fn torn_tail_and_orphan_entry_lines_are_cut_on_open() {
        let home = tempfile::tempdir().unwrap();
        let log = Log::open(home.path()).unwrap();
        for e in [b"a", b"b", b"c"] {
            log.append(e).unwrap();
        }
        drop(log);
        let leaves_path = home.path().join("log/leaves");
        let entries_path = home.path().join("log/entries.jsonl");
        let good_entries = fs::read_to_string(&entries_path).unwrap();
        // A crash while appending leaf 3: its entry line is complete, its
        // leaf record half written.
        let mut leaves = fs::read(&leaves_path).unwrap();
        leaves.extend_from_slice(&leaf_hash(b"d")[..5]);
        fs::write(&leaves_path, &leaves).unwrap();
        let orphan = format!(
            r#"{{"index":3,"leaf_hash":"{}","entry":"d"}}"#,
            hex::encode(leaf_hash(b"d"))
        );
        fs::write(&entries_path, format!("{good_entries}{orphan}\n")).unwrap();

        let log = Log::open(home.path()).unwrap();
        assert_eq!(fs::metadata(&leaves_path).unwrap().len(), 3 * 32);
        assert_eq!(fs::read_to_string(&entries_path).unwrap(), good_entries);
        assert_eq!(log.size().unwrap(), 3);
        assert_eq!(log.append(b"d").unwrap(), 3);
        assert_eq!(
            fs::read_to_string(&entries_path).unwrap(),
            format!("{good_entries}{orphan}\n")
        );
        drop(log);

        // A crash mid-way through an entry line: the torn line goes.
        let entries = fs::read_to_string(&entries_path).unwrap();
        fs::write(&entries_path, format!("{entries}{{\"index\":4,\"lea")).unwrap();
        let log = Log::open(home.path()).unwrap();
        assert_eq!(fs::read_to_string(&entries_path).unwrap(), entries);
        assert_eq!(log.size().unwrap(), 4);
    }

    #[test]
    fn torn_tail_left_by_another_process_is_cut_before_appending() {
        let home = tempfile::tempdir().unwrap();
        let log = Log::open(home.path()).unwrap();
        log.append(b"a").unwrap();
        let leaves_path = home.path().join("log/leaves");
        let mut leaves = fs::read(&leaves_path).unwrap();
        leaves.extend_from_slice(&[7u8; 31]);
        fs::write(&leaves_path, &leaves).unwrap();
        assert_eq!(log.append(b"b").unwrap(), 1);
        assert_eq!(
            log.leaf_hashes(2).unwrap(),
            [leaf_hash(b"a"), leaf_hash(b"b")]
        );
    }

    #[test]
    fn concurrent_appends_get_distinct_indices() {
        let home = tempfile::tempdir().unwrap();
        const THREADS: usize = 4;
        const PER_THREAD: usize = 10;
        let mut indices: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let home = home.path();
                    s.spawn(move || {
                        let log = Log::open(home).unwrap();
                        (0..PER_THREAD)
                            .map(|i| log.append(format!("{t}-{i}").as_bytes()).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        indices.sort_unstable();
        let n = (THREADS * PER_THREAD) as u64;
        assert_eq!(indices, (0..n).collect::<Vec<_>>());
        let log = Log::open(home.path()).unwrap();
        assert_eq!(log.size().unwrap(), n);
        let text = fs::read_to_string(log.dir().join(ENTRIES_FILE)).unwrap();
        for (i, line) in text.lines().enumerate() {
            let e: EntryLine = serde_json::from_str(line).unwrap();
            assert_eq!(e.index, i as u64);
            let leaf = log.leaf(e.index).unwrap();
            assert_eq!(e.leaf_hash, hex::encode(leaf));
            assert_eq!(leaf_hash(e.entry.unwrap().as_bytes()), leaf);
        }
    }

    #[test]
    fn a_full_log_refuses_appends_and_an_oversized_one_refuses_to_open() {
        let home = tempfile::tempdir().unwrap();
        let log = Log::open(home.path()).unwrap();
        let leaves_path = home.path().join("log/leaves");
        // Sparse: no disk is used for the zeros.
        File::options()
            .write(true)
            .open(&leaves_path)
            .unwrap()
            .set_len(LEAVES_MAX * HASH_BYTES)
            .unwrap();
        let err = log.append(b"one too many").unwrap_err();
        assert!(
            matches!(&err, LogError::Full { path } if *path == leaves_path),
            "{err:?}"
        );
        drop(log);
        File::options()
            .write(true)
            .open(&leaves_path)
            .unwrap()
            .set_len((LEAVES_MAX + 1) * HASH_BYTES)
            .unwrap();
        let err = Log::open(home.path()).unwrap_err();
        assert!(
            matches!(&err, LogError::TooLarge { leaves, .. } if *leaves == LEAVES_MAX + 1),
            "{err:?}"
        );
    }
}
