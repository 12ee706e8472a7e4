//! The shared tier of the artifact store: blobs and once-written documents
//! in an object store — S3-compatible (`s3://bucket/prefix`), a directory
//! on a shared filesystem (`file:///path`), or memory (`memory://`, tests)
//! — through the `object_store` crate.
//!
//! Invariant: nothing is ever overwritten. A blob is written with
//! put-if-absent (`If-None-Match: *`) under `sha256/<aa>/<rest>`; a large
//! one is uploaded in parts to a temporary key and then copied into place
//! with a conditional copy, so a concurrent writer of the same digest is
//! success and no reader ever sees a torn blob under a digest's name (an
//! interrupted upload leaves at most a temporary key). Documents (attempt
//! results, cache entries) are created once the same way: the first writer
//! wins. SHA-256 checksums go with every S3 write, so the server refuses
//! bytes damaged in transit. Blobs are not verified here: the local store
//! in front of this tier hashes every blob it fetches and serves only bytes
//! that match their name. Documents are named by what they answer, not by
//! their bytes, so with a store key (`SLUICE_STORE_KEY`, 64 hex digits,
//! the same on every machine of a deployment) each carries an HMAC-SHA256
//! tag over its namespace, name and bytes, and one without a valid tag is
//! refused: whoever can write the bucket cannot plant a cache entry or a
//! result.
//! Boundary: object keys and bytes; knows nothing of steps or runs.

use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};

use crate::digest::Digest;

/// Blobs up to this size go up in one conditional put; larger ones in
/// parts, then a conditional copy.
const SINGLE_PUT_MAX: u64 = 16 << 20;
/// Size of each part of a multipart upload.
const PART_BYTES: usize = 16 << 20;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Chunks of a download buffered between the network and the local writer.
const DOWNLOAD_CHUNKS_BUFFERED: usize = 8;
/// The environment variable holding the store key.
pub const STORE_KEY_ENV: &str = "SLUICE_STORE_KEY";
/// What separates a document's bytes from its tag.
const TAG_SEPARATOR: &[u8] = b"\n#sluice-tag:";

/// A failure of the shared store, naming the store and the key.
#[derive(Debug, thiserror::Error)]
#[error("store {url}: {key}: {message}")]
pub struct RemoteError {
    /// The store's URL.
    pub url: String,
    /// The object key involved.
    pub key: String,
    /// What went wrong.
    pub message: String,
}

/// An object store holding blobs and documents under a prefix.
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    runtime: tokio::runtime::Runtime,
    /// Authenticates documents, when configured.
    key: Option<[u8; 32]>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

impl Remote {
    /// Opens the store named by `url`: `s3://bucket[/prefix]` (endpoint,
    /// region and credentials from the usual `AWS_*` environment
    /// variables, e.g. `AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`),
    /// `file:///absolute/dir` or `memory://`.
    pub fn open(url: &str) -> Result<Remote, RemoteError> {
        Remote::open_with(url, &[])
    }

    /// [`Remote::open`] with S3 settings given explicitly (`aws_endpoint`,
    /// `aws_access_key_id`, ...: the environment variables' names in lower
    /// case), over the environment's.
    pub fn open_with(url: &str, settings: &[(&str, &str)]) -> Result<Remote, RemoteError> {
        let err = |message: String| RemoteError {
            url: url.to_string(),
            key: String::new(),
            message,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err("not a store URL (s3://bucket/prefix, file:///dir)".into()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match scheme {
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(err("no bucket named".into()));
                }
                let mut builder = object_store::aws::AmazonS3Builder::from_env();
                for (key, value) in settings {
                    let key = key
                        .parse()
                        .map_err(|e| err(format!("setting `{key}`: {e}")))?;
                    builder = builder.with_config(key, *value);
                }
                let s3 = builder
                    .with_bucket_name(bucket)
                    .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
                    // CopyObject with `If-None-Match: *`: atomic where the
                    // multipart emulation is not.
                    .with_copy_if_not_exists(object_store::aws::S3CopyIfNotExists::Header(
                        "If-None-Match".into(),
                        "*".into(),
                    ))
                    .with_retry(object_store::RetryConfig {
                        max_retries: 5,
                        retry_timeout: Duration::from_secs(60),
                        ..Default::default()
                    })
                    .build()
                    .map_err(|e| err(e.to_string()))?;
                (Arc::new(s3), prefix.trim_matches('/').to_string())
            }
            "file" => {
                let dir = Path::new(rest);
                if !dir.is_absolute() {
                    return Err(err("a file:// store needs an absolute path".into()));
                }
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| err(e.to_string()))?;
                (Arc::new(fs), String::new())
            }
            "memory" => (
                Arc::new(object_store::memory::InMemory::new()),
                rest.trim_matches('/').to_string(),
            ),
            other => {
                return Err(err(format!(
                    "unknown scheme `{other}`; expected s3, file or memory"
                )));
            }
        };
        let key = match std::env::var(STORE_KEY_ENV) {
            Ok(text) => Some(
                hex::decode(text.trim())
                    .ok()
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                    .ok_or_else(|| err(format!("{STORE_KEY_ENV} must hold 64 hex digits")))?,
            ),
            Err(_) => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-store-io")
            .enable_all()
            .build()
            .map_err(|e| err(format!("cannot start the store's IO threads: {e}")))?;
        Ok(Remote {
            url: url.to_string(),
            store,
            prefix,
            runtime,
            key,
        })
    }

    /// The store's URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(rel)
        } else {
            Key::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn blob_key(&self, digest: &Digest) -> Key {
        let hex = digest.hex();
        self.key(&format!("sha256/{}/{}", &hex[..2], &hex[2..]))
    }

    fn doc_key(&self, ns: &str, name: &Digest) -> Key {
        self.key(&format!("docs/{ns}/{}.json", name.hex()))
    }

    fn error(&self, key: &Key, message: impl std::fmt::Display) -> RemoteError {
        RemoteError {
            url: self.url.clone(),
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    /// Runs `fut` on the store's own IO threads and waits for it: callable
    /// from any thread, also one inside another async runtime.
    fn block<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("the store's IO task answers")
    }

    /// Whether the blob is there (not verified).
    pub fn has_blob(&self, digest: &Digest) -> Result<bool, RemoteError> {
        let key = self.blob_key(digest);
        let store = self.store.clone();
        let k = key.clone();
        match self.block(async move { store.head(&k).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(&key, e)),
        }
    }

    /// Uploads the file holding blob `digest` (`size` bytes, already
    /// verified by the caller) unless the store has it.
    pub fn put_blob(&self, digest: &Digest, file: &Path, size: u64) -> Result<(), RemoteError> {
        let key = self.blob_key(digest);
        let store = self.store.clone();
        if size <= SINGLE_PUT_MAX {
            let bytes = std::fs::read(file).map_err(|e| self.error(&key, e))?;
            let k = key.clone();
            let put = self.block(async move {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                store.put_opts(&k, PutPayload::from(bytes), opts).await
            });
            return match put {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(self.error(&key, e)),
            };
        }
        if self.has_blob(digest)? {
            return Ok(());
        }
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| self.error(&key, e))?;
        let temp = self.key(&format!("tmp/{}-{}", digest.hex(), hex::encode(random)));
        let path = file.to_path_buf();
        let k = key.clone();
        let uploaded = self.block(async move {
            let generic = |e: std::io::Error| object_store::Error::Generic {
                store: "sluice",
                source: Box::new(e),
            };
            // Parts are read as they go (the dedicated IO threads may block
            // on the local disk): a large blob is never held whole.
            let mut reader = std::fs::File::open(&path).map_err(generic)?;
            let upload = store.put_multipart(&temp).await?;
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut buf = vec![0u8; PART_BYTES];
            loop {
                let n = match read_full(&mut reader, &mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(generic(e));
                    }
                };
                if n == 0 {
                    break;
                }
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = writer.abort().await;
                    return Err(e);
                }
                writer.write(&buf[..n]);
            }
            writer.finish().await?;
            // Into place only whole, and only if nobody got there first.
            let copied = store.copy_if_not_exists(&temp, &k).await;
            let _ = store.delete(&temp).await;
            match copied {
                Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        });
        uploaded.map_err(|e| self.error(&key, e))
    }

    /// Streams blob `digest` into `sink` (unverified: the caller hashes
    /// it); `Ok(false)` when the store does not have it.
    pub fn get_blob(&self, digest: &Digest, sink: &mut dyn Write) -> Result<bool, RemoteError> {
        let key = self.blob_key(digest);
        let store = self.store.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(DOWNLOAD_CHUNKS_BUFFERED);
        let k = key.clone();
        self.runtime.spawn(async move {
            let mut stream = match store.get(&k).await {
                Ok(got) => got.into_stream(),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).is_err() || failed {
                    return;
                }
            }
        });
        let mut first = true;
        for chunk in rx {
            match chunk {
                Ok(bytes) => sink.write_all(&bytes).map_err(|e| self.error(&key, e))?,
                Err(object_store::Error::NotFound { .. }) if first => return Ok(false),
                Err(e) => return Err(self.error(&key, e)),
            }
            first = false;
        }
        Ok(true)
    }

    /// Creates document `ns`/`name` unless it exists (first writer wins).
    /// `Ok(true)` when this call created it.
    pub fn put_doc_once(&self, ns: &str, name: &Digest, bytes: &[u8]) -> Result<bool, RemoteError> {
        let key = self.doc_key(ns, name);
        let store = self.store.clone();
        let mut sealed = bytes.to_vec();
        if let Some(tag) = self.tag(ns, name, bytes) {
            sealed.extend_from_slice(TAG_SEPARATOR);
            sealed.extend_from_slice(hex::encode(tag).as_bytes());
        }
        let (k, payload) = (key.clone(), PutPayload::from(sealed));
        let put = self.block(async move {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            store.put_opts(&k, payload, opts).await
        });
        match put {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.error(&key, e)),
        }
    }

    /// Document `ns`/`name`, if any; one larger than `max` bytes is an
    /// error.
    pub fn get_doc(
        &self,
        ns: &str,
        name: &Digest,
        max: u64,
    ) -> Result<Option<Vec<u8>>, RemoteError> {
        let key = self.doc_key(ns, name);
        let mut bytes = Vec::new();
        let mut sink = Bounded {
            inner: &mut bytes,
            left: max,
        };
        let store = self.store.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(DOWNLOAD_CHUNKS_BUFFERED);
        let k = key.clone();
        self.runtime.spawn(async move {
            match store.get(&k).await {
                Ok(got) => {
                    let mut stream = got.into_stream();
                    while let Some(chunk) = stream.next().await {
                        if tx.send(chunk).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        for chunk in rx {
            match chunk {
                Ok(b) => sink.write_all(&b).map_err(|e| self.error(&key, e))?,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.error(&key, e)),
            }
        }
        self.open_sealed(ns, name, bytes)
            .map(Some)
            .map_err(|message| self.error(&key, message))
    }

    /// The HMAC-SHA256 of document `ns`/`name` with `bytes`, keyed with
    /// the store key, when one is configured.
    fn mac(&self, ns: &str, name: &Digest, bytes: &[u8]) -> Option<hmac::Hmac<sha2::Sha256>> {
        use hmac::Mac as _;
        let key = self.key.as_ref()?;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
        // Length-prefixed, so no two (ns, name, bytes) share an input.
        for part in [ns.as_bytes(), name.hex().as_bytes()] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac.update(bytes);
        Some(mac)
    }

    /// The tag a document is stored with, when a store key is configured.
    fn tag(&self, ns: &str, name: &Digest, bytes: &[u8]) -> Option<[u8; 32]> {
        use hmac::Mac as _;
        Some(self.mac(ns, name, bytes)?.finalize().into_bytes().into())
    }

    /// A stored document's bytes: with a store key, only if its tag
    /// verifies (compared in constant time).
    fn open_sealed(&self, ns: &str, name: &Digest, mut stored: Vec<u8>) -> Result<Vec<u8>, String> {
        use hmac::Mac as _;
        let split = stored
            .windows(TAG_SEPARATOR.len())
            .rposition(|w| w == TAG_SEPARATOR);
        let body = split.map_or(&stored[..], |at| &stored[..at]);
        let Some(mac) = self.mac(ns, name, body) else {
            // No key: documents are taken as they are (a tag, if any, is
            // dropped unchecked).
            stored.truncate(split.unwrap_or(stored.len()));
            return Ok(stored);
        };
        let at = split.ok_or_else(|| {
            format!("the document carries no tag; {STORE_KEY_ENV} requires one (written without the key?)")
        })?;
        let tag = hex::decode(&stored[at + TAG_SEPARATOR.len()..]).unwrap_or_default();
        if mac.verify_slice(&tag).is_err() {
            return Err(format!(
                "the document's tag does not verify under {STORE_KEY_ENV} (altered, or written with another key)"
            ));
        }
        stored.truncate(at);
        Ok(stored)
    }
}

/// Reads until `buf` is full or the reader ends; returns how much it read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A writer that refuses to grow past its bound.
struct Bounded<'a> {
    inner: &'a mut Vec<u8>,
    left: u64,
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::other("larger than its bound"));
        }
        self.left -= buf.len() as u64;
        self.inner.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
