//! Signing: the engine's Ed25519 key, DSSE envelopes and in-toto/SLSA
//! provenance statements for finished runs.
//!
//! Invariant: a key on disk is `<home>/keys/<keyid>.key` (hex of the 32-byte
//! secret seed, mode 0600) beside `<keyid>.pub` (hex of the public key), where
//! `keyid` is the first [`KEYID_HEX_CHARS`] hex digits of sha256 of the raw
//! public key; a `.key` file becomes visible only complete (temp file and
//! rename), and at most one key is ever created per home (creation runs under
//! an exclusive lock). `<home>/keys/active` pins the home's key id, written
//! once after the key; signing and the home's trust use only the pinned key,
//! so a key file planted later (say `0000….pub`, sorting first) changes
//! nothing. The pin guards against planted files, not against someone who
//! can rewrite the pin itself: an auditor who needs that passes a public key
//! kept elsewhere (`verify --pubkey`). [`verify`] hands back payload bytes only when a
//! signature over the DSSE pre-authentication encoding (PAE) verifies.
//! Boundary: knows keys, bytes and JSON shapes; not runs, records or the CLI.
//! The caller gathers the facts for [`ProvenanceInput`] and decides what a
//! verified statement means.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Value, json};

use crate::digest::Digest;
use crate::store::StoreError;

/// DSSE `payloadType` of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of SLSA provenance v1.
pub const SLSA_PROVENANCE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// `buildDefinition.buildType` of a Sluice pipeline run.
pub const BUILD_TYPE: &str = "https://sluice.invalid/pipeline-run/v1";
/// `runDetails.builder.id` of the Sluice engine.
pub const BUILDER_ID: &str = "https://sluice.invalid/engine";
/// Hex digits of sha256(public key) that name a key: 64 bits, plenty to
/// tell a handful of local keys apart (it is a hint, never trusted alone).
pub const KEYID_HEX_CHARS: usize = 16;

/// Directory under the Sluice home that holds keys.
const KEYS_DIR: &str = "keys";
/// Lock file serialising key creation between processes.
const KEYS_LOCK_FILE: &str = ".lock";
/// The pin: the id of the home's one trusted key, written once when the key
/// is created (or adopted), so a key file planted later is never used.
pub const ACTIVE_KEY_FILE: &str = "active";
/// DSSE `payloadType` of a signed transparency-log tree head.
pub const CHECKPOINT_PAYLOAD_TYPE: &str = "application/vnd.sluice.log-checkpoint+json";
/// `origin` of a checkpoint: which log it describes.
pub const CHECKPOINT_ORIGIN: &str = "sluice-local-log/v1";
/// Key files are 64 hex digits and a newline; anything much larger is not a
/// key, so reads stop here instead of loading an arbitrary file.
const KEY_FILE_BYTES_MAX: u64 = 1024;
/// Mode of a secret key file: owner read/write only.
const SECRET_KEY_MODE: u32 = 0o600;
/// Permission bits that must be clear on a secret key file (group, other).
const SECRET_KEY_FORBIDDEN_BITS: u32 = 0o077;
/// Length of a raw Ed25519 seed, public key and signature.
const SEED_BYTES: usize = 32;
const PUBLIC_KEY_BYTES: usize = 32;
const SIGNATURE_BYTES: usize = 64;

/// Signing and verification failures; each names the key, file or field.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Filesystem failure on a key file or directory.
    #[error("keys {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing a file through the store's atomic writer failed.
    #[error(transparent)]
    Write(#[from] StoreError),
    /// The operating system's random source failed.
    #[error("cannot generate a signing key: OS random source failed: {0}")]
    Random(String),
    /// A key file that does not hold what its name promises.
    #[error("key file {path}: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A signature with the key's id is present but does not verify.
    #[error("signature by key {keyid} does not verify: the envelope was altered or forged")]
    BadSignature {
        /// The key that was checked.
        keyid: String,
    },
    /// The envelope carries no signature with the key's id.
    #[error("envelope has no signature by key {keyid}")]
    NoSignatureForKey {
        /// The key that was looked for.
        keyid: String,
    },
    /// A field that is not valid base64/JSON, or a signature of the wrong size.
    #[error("bad encoding: {0}")]
    BadEncoding(String),
    /// A DSSE envelope whose payload type is not the one expected.
    #[error("envelope payload type is {found:?}, expected {expected:?}")]
    WrongPayloadType {
        /// The expected type.
        expected: &'static str,
        /// The type the envelope declares.
        found: String,
    },
    /// No pinned key and more than one key file: which one is the home's is
    /// not something to guess.
    #[error(
        "{dir}: no `{ACTIVE_KEY_FILE}` pin and {count} keys ({keyids}); write the trusted key id to {dir}/{ACTIVE_KEY_FILE}"
    )]
    Unpinned {
        /// The keys directory.
        dir: PathBuf,
        /// How many keys it holds.
        count: usize,
        /// Their ids, comma-separated.
        keyids: String,
    },
    /// A signed tree head that is not one.
    #[error("signed tree head: {0}")]
    BadCheckpoint(String),
    /// A statement whose shape is not an in-toto v1 SLSA provenance statement.
    #[error("statement field {field}: expected {expected}, found {found}")]
    UnexpectedStatement {
        /// The JSON field.
        field: &'static str,
        /// What it should hold.
        expected: &'static str,
        /// What it holds (truncated).
        found: String,
    },
}

impl From<crate::durable::DurableError> for SealError {
    fn from(e: crate::durable::DurableError) -> Self {
        StoreError::from(e).into()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad_key_file(path: &Path, reason: impl Into<String>) -> SealError {
    SealError::BadKeyFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The key id of `key`: the first [`KEYID_HEX_CHARS`] hex digits of the
/// sha256 of its 32 raw bytes.
fn keyid_of(key: &VerifyingKey) -> String {
    let mut hex = Digest::of(key.as_bytes()).hex();
    hex.truncate(KEYID_HEX_CHARS);
    hex
}

/// A public key that verifies envelopes.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    keyid: String,
}

impl PublicKey {
    /// Wraps a verifying key.
    pub fn new(key: VerifyingKey) -> PublicKey {
        PublicKey {
            keyid: keyid_of(&key),
            key,
        }
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<PublicKey, SealError> {
        let mut raw = [0u8; PUBLIC_KEY_BYTES];
        hex::decode_to_slice(text.trim(), &mut raw).map_err(|e| {
            SealError::BadEncoding(format!(
                "public key: expected {} hex digits: {e}",
                PUBLIC_KEY_BYTES * 2
            ))
        })?;
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|e| SealError::BadEncoding(format!("public key: not an Ed25519 key: {e}")))?;
        Ok(PublicKey::new(key))
    }

    /// The key id (first [`KEYID_HEX_CHARS`] hex digits of sha256 of the key).
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// Lower-case hex of the 32 raw bytes, the `.pub` file's content.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// The underlying Ed25519 key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.keyid, self.to_hex())
    }
}

/// The engine's signing key. `Debug` never shows the secret.
pub struct Signer {
    key: SigningKey,
    public: PublicKey,
    path: PathBuf,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("keyid", &self.public.keyid)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Signer {
    fn from_seed(seed: &[u8; SEED_BYTES], path: PathBuf) -> Signer {
        let key = SigningKey::from_bytes(seed);
        let public = PublicKey::new(key.verifying_key());
        Signer { key, public, path }
    }

    /// The key id.
    pub fn keyid(&self) -> &str {
        self.public.keyid()
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The `.key` file this key was loaded from.
    pub fn key_path(&self) -> &Path {
        &self.path
    }

    /// The `.pub` file beside the `.key` file.
    pub fn public_key_path(&self) -> PathBuf {
        self.path.with_extension("pub")
    }

    /// Signs `payload` as a DSSE envelope with one signature over
    /// `pae(payload_type, payload)`.
    pub fn sign(&self, payload_type: &str, payload: &[u8]) -> Envelope {
        use ed25519_dalek::Signer as _;
        let sig = self.key.sign(&pae(payload_type, payload));
        Envelope {
            payload: STANDARD.encode(payload),
            payload_type: payload_type.to_owned(),
            signatures: vec![Signature {
                keyid: self.keyid().to_owned(),
                sig: STANDARD.encode(sig.to_bytes()),
            }],
        }
    }
}

/// Loads the home's signing key, creating one on first use.
///
/// The key is the one named by the pin `<home>/keys/active`; other key files
/// are ignored, so planting `keys/0000….key` changes nothing. A home without
/// a pin (made by an older engine) adopts its single key and pins it; with
/// several keys and no pin it is an error ([`SealError::Unpinned`]). Creation
/// and adoption hold an exclusive lock on `<home>/keys/.lock` and look again
/// under it, so concurrent first uses end with the same single key; the
/// `.pub` file is written before the `.key` file and the pin last, so a pin
/// always names a complete key.
pub fn load_or_create(home: &Path) -> Result<Signer, SealError> {
    let dir = home.join(KEYS_DIR);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    // Fast path: the pin is written once and never changed by the engine.
    if let Some(keyid) = read_pin(&dir)? {
        return load_secret_key(&dir.join(format!("{keyid}.key")));
    }
    let lock_path = dir.join(KEYS_LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    let result = (|| {
        if let Some(keyid) = read_pin(&dir)? {
            return load_secret_key(&dir.join(format!("{keyid}.key")));
        }
        let signer = match key_files(&dir, "key")?.as_slice() {
            [] => create_key(&dir)?,
            [only] => load_secret_key(only)?,
            several => return Err(unpinned(&dir, several)),
        };
        crate::durable::write_atomic(
            &dir.join(ACTIVE_KEY_FILE),
            format!("{}\n", signer.keyid()).as_bytes(),
            true,
        )?;
        Ok(signer)
    })();
    drop(lock); // releases the lock
    result
}

/// The home's trusted public key, for verifying: `keys/<pin>.pub`, whose
/// contents must hash to the pinned id. A home without a pin trusts its
/// single `<keyid>.pub`, and refuses to pick among several. Never creates
/// or writes anything.
pub fn trusted_public_key(home: &Path) -> Result<PublicKey, SealError> {
    let dir = home.join(KEYS_DIR);
    let path = match read_pin(&dir)? {
        Some(keyid) => dir.join(format!("{keyid}.pub")),
        None => match key_files(&dir, "pub")?.as_slice() {
            [only] => only.clone(),
            [] => {
                return Err(SealError::Io {
                    path: dir,
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        "no signing key; pass --pubkey",
                    ),
                });
            }
            several => return Err(unpinned(&dir, several)),
        },
    };
    let key = read_public_key(&path)?;
    let named = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if named != key.keyid() {
        return Err(bad_key_file(
            &path,
            format!("holds the key with id {}, not {named}", key.keyid()),
        ));
    }
    Ok(key)
}

fn unpinned(dir: &Path, files: &[PathBuf]) -> SealError {
    let ids: Vec<&str> = files
        .iter()
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()))
        .collect();
    SealError::Unpinned {
        dir: dir.to_path_buf(),
        count: ids.len(),
        keyids: ids.join(", "),
    }
}

/// The pinned key id, if the home has a pin.
fn read_pin(dir: &Path) -> Result<Option<String>, SealError> {
    let path = dir.join(ACTIVE_KEY_FILE);
    let text = match read_small(&path) {
        Ok(t) => t,
        Err(SealError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let keyid = text.trim();
    if !is_keyid(keyid) {
        return Err(bad_key_file(
            &path,
            format!(
                "expected a key id of {KEYID_HEX_CHARS} lower-case hex digits, found {keyid:?}"
            ),
        ));
    }
    Ok(Some(keyid.to_owned()))
}

/// The `<keyid>.<ext>` files in `dir`, sorted. Files whose stem is not
/// [`KEYID_HEX_CHARS`] lower-case hex digits (temp files, stray files) are
/// ignored.
fn key_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, SealError> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(stem) = name.strip_suffix(ext).and_then(|s| s.strip_suffix('.')) else {
            continue;
        };
        if is_keyid(stem) {
            found.push(dir.join(&name));
        }
    }
    found.sort();
    Ok(found)
}

fn is_keyid(s: &str) -> bool {
    s.len() == KEYID_HEX_CHARS && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn read_small(path: &Path) -> Result<String, SealError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut text = String::new();
    file.take(KEY_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad_key_file(path, format!("not readable as text: {e}")))?;
    if text.len() as u64 > KEY_FILE_BYTES_MAX {
        return Err(bad_key_file(
            path,
            format!("larger than {KEY_FILE_BYTES_MAX} bytes; not a key file"),
        ));
    }
    Ok(text)
}

fn load_secret_key(path: &Path) -> Result<Signer, SealError> {
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode();
    if mode & SECRET_KEY_FORBIDDEN_BITS != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "secret key file is readable by group or others"
        );
    }
    let text = read_small(path)?;
    let mut seed = [0u8; SEED_BYTES];
    hex::decode_to_slice(text.trim(), &mut seed)
        .map_err(|e| bad_key_file(path, format!("expected {} hex digits: {e}", SEED_BYTES * 2)))?;
    let signer = Signer::from_seed(&seed, path.to_path_buf());
    let named = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if named != signer.keyid() {
        return Err(bad_key_file(
            path,
            format!("holds the key with id {}, not {named}", signer.keyid()),
        ));
    }
    Ok(signer)
}

fn create_key(dir: &Path) -> Result<Signer, SealError> {
    let mut seed = [0u8; SEED_BYTES];
    getrandom::fill(&mut seed).map_err(|e| SealError::Random(e.to_string()))?;
    let keyid = keyid_of(&SigningKey::from_bytes(&seed).verifying_key());
    let key_path = dir.join(format!("{keyid}.key"));
    let signer = Signer::from_seed(&seed, key_path.clone());
    crate::durable::write_atomic(
        &signer.public_key_path(),
        format!("{}\n", signer.public.to_hex()).as_bytes(),
        true,
    )?;
    let secret = format!("{}\n", hex::encode(seed));
    write_secret_atomic(&key_path, secret.as_bytes())?;
    Ok(signer)
}

/// Like [`store::write_atomic`] (durable, random `O_EXCL` temp name), but
/// the temp file is created with mode 0600 so the secret is never readable
/// by others, not even briefly.
fn write_secret_atomic(path: &Path, bytes: &[u8]) -> Result<(), SealError> {
    crate::durable::write_atomic_mode(path, bytes, true, SECRET_KEY_MODE)?;
    Ok(())
}

/// Reads a `.pub` file: 64 hex digits of the raw Ed25519 public key. The
/// key id is computed from the key, not taken from the file name.
pub fn read_public_key(path: &Path) -> Result<PublicKey, SealError> {
    let text = read_small(path)?;
    PublicKey::from_hex(&text).map_err(|e| match e {
        SealError::BadEncoding(reason) => bad_key_file(path, reason),
        other => other,
    })
}

/// DSSE v1 pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope (JSON form).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    /// The payload, base64 (standard alphabet, padded).
    pub payload: String,
    /// What the payload is, e.g. [`IN_TOTO_PAYLOAD_TYPE`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// One or more signatures over the PAE of type and payload.
    pub signatures: Vec<Signature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signature {
    /// Which key made it (a hint; the signature is what counts).
    #[serde(default)]
    pub keyid: String,
    /// The 64-byte Ed25519 signature, base64.
    pub sig: String,
}

/// Decodes base64 in either alphabet, as DSSE asks verifiers to accept.
fn decode_base64(field: &str, text: &str) -> Result<Vec<u8>, SealError> {
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .map_err(|e| SealError::BadEncoding(format!("{field}: not base64: {e}")))
}

/// Verifies `envelope` with `key` and returns the decoded payload.
///
/// Only signatures whose `keyid` equals `key.keyid()` are tried: with none,
/// [`SealError::NoSignatureForKey`]; if none of them verifies (strict Ed25519
/// over the PAE), [`SealError::BadSignature`]. A malformed payload or a
/// matching signature that is not 64 bytes of base64 is
/// [`SealError::BadEncoding`]. The payload type is covered by the signature
/// but not checked here; see [`verify_statement`].
pub fn verify(envelope: &Envelope, key: &PublicKey) -> Result<Vec<u8>, SealError> {
    let payload = decode_base64("payload", &envelope.payload)?;
    let message = pae(&envelope.payload_type, &payload);
    let mut tried = false;
    for s in envelope.signatures.iter().filter(|s| s.keyid == key.keyid) {
        tried = true;
        let raw = decode_base64("signature", &s.sig)?;
        let raw: [u8; SIGNATURE_BYTES] = raw.as_slice().try_into().map_err(|_| {
            SealError::BadEncoding(format!(
                "signature by key {}: {} bytes, expected {SIGNATURE_BYTES}",
                s.keyid,
                raw.len()
            ))
        })?;
        let sig = ed25519_dalek::Signature::from_bytes(&raw);
        if key.key.verify_strict(&message, &sig).is_ok() {
            return Ok(payload);
        }
    }
    let keyid = key.keyid.clone();
    if tried {
        Err(SealError::BadSignature { keyid })
    } else {
        Err(SealError::NoSignatureForKey { keyid })
    }
}

/// Verifies an in-toto envelope and parses its statement: [`verify`], then
/// the payload type must be [`IN_TOTO_PAYLOAD_TYPE`], then
/// [`parse_statement`].
pub fn verify_statement(envelope: &Envelope, key: &PublicKey) -> Result<Value, SealError> {
    let payload = verify(envelope, key)?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(SealError::WrongPayloadType {
            expected: IN_TOTO_PAYLOAD_TYPE,
            found: envelope.payload_type.clone(),
        });
    }
    parse_statement(&payload)
}

/// A transparency-log tree head: the log had `size` leaves whose Merkle
/// root was `root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Leaves in the tree.
    pub size: u64,
    /// Its RFC 6962 root.
    pub root: [u8; 32],
}

/// Signs a tree head as a DSSE envelope of [`CHECKPOINT_PAYLOAD_TYPE`]
/// over `{"origin", "size", "root"}`.
pub fn sign_checkpoint(signer: &Signer, checkpoint: Checkpoint) -> Envelope {
    let payload = json!({
        "origin": CHECKPOINT_ORIGIN,
        "size": checkpoint.size,
        "root": hex::encode(checkpoint.root),
    });
    // Serializing a `Value` cannot fail.
    signer.sign(
        CHECKPOINT_PAYLOAD_TYPE,
        &serde_json::to_vec(&payload).unwrap_or_default(),
    )
}

/// Verifies a signed tree head with `key` and returns it.
pub fn verify_checkpoint(envelope: &Envelope, key: &PublicKey) -> Result<Checkpoint, SealError> {
    let payload = verify(envelope, key)?;
    if envelope.payload_type != CHECKPOINT_PAYLOAD_TYPE {
        return Err(SealError::WrongPayloadType {
            expected: CHECKPOINT_PAYLOAD_TYPE,
            found: envelope.payload_type.clone(),
        });
    }
    let bad = |what: &str| SealError::BadCheckpoint(what.to_owned());
    let v: Value = serde_json::from_slice(&payload).map_err(|_| bad("payload is not JSON"))?;
    if v["origin"] != CHECKPOINT_ORIGIN {
        return Err(bad("origin is not this engine's log"));
    }
    let size = v["size"].as_u64().ok_or_else(|| bad("no integer `size`"))?;
    let mut root = [0u8; 32];
    hex::decode_to_slice(v["root"].as_str().unwrap_or(""), &mut root)
        .map_err(|_| bad("`root` is not 64 hex digits"))?;
    Ok(Checkpoint { size, root })
}

/// Facts about a finished run that its provenance statement records.
#[derive(Debug, Clone)]
pub struct ProvenanceInput<'a> {
    /// The run id (`invocationId`).
    pub run_id: &'a str,
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The spec file's path as given.
    pub spec_path: &'a str,
    /// The spec file's digest.
    pub spec_digest: Digest,
    /// Pipeline parameters.
    pub params: &'a BTreeMap<String, String>,
    /// The run's seed.
    pub seed: u64,
    /// The engine's version.
    pub engine_version: &'a str,
    /// The wasmtime version the engine embeds.
    pub wasmtime_version: &'a str,
    /// The determinism mode.
    pub determinism: &'a str,
    /// Outputs, named `step/output`.
    pub subjects: Vec<(String, Digest)>,
    /// Source inputs.
    pub inputs: Vec<(String, Digest)>,
    /// Step name → component digest.
    pub components: Vec<(String, Digest)>,
    /// Python and JavaScript steps: the sources each component was built from.
    pub built_from: Vec<StepSource>,
    /// RFC 3339 start time.
    pub started_at: &'a str,
    /// RFC 3339 finish time.
    pub finished_at: &'a str,
    /// Per-step byproduct records, passed through as given.
    pub steps: Value,
    /// sha256 of the run record's last line.
    pub record_digest: Digest,
    /// Lines in the run record.
    pub record_lines: u64,
}

/// The sources a script step's component was built from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StepSource {
    /// The step.
    pub step: String,
    /// The source digest (the build's memo key).
    pub digest: Digest,
    /// `python` or `javascript`.
    pub language: String,
    /// The tool and version that built it.
    pub toolchain: String,
}

fn sha256_map(d: &Digest) -> Value {
    json!({ "sha256": d.hex() })
}

fn sorted(pairs: &[(String, Digest)]) -> Vec<&(String, Digest)> {
    let mut v: Vec<_> = pairs.iter().collect();
    v.sort();
    v
}

/// The in-toto Statement v1 with SLSA provenance v1 predicate for a run.
///
/// Subjects, inputs and components are sorted by name (then digest), and
/// JSON object keys serialize sorted, so equal inputs give byte-identical
/// `serde_json::to_vec` output. The engine appears among the resolved
/// dependencies as `sluice-engine@<version>` with a `pkg:cargo` URI (the
/// engine has no digest to cite); the step byproducts appear as a resource
/// named `steps` whose digest is sha256 of their compact JSON and whose
/// `annotations.steps` holds them; the record as a resource named `record`
/// with the last line's digest and `annotations.lines`.
pub fn statement(input: &ProvenanceInput) -> Value {
    let subject: Vec<Value> = sorted(&input.subjects)
        .into_iter()
        .map(|(name, d)| json!({ "name": name, "digest": sha256_map(d) }))
        .collect();
    let mut deps: Vec<Value> = sorted(&input.inputs)
        .into_iter()
        .map(|(name, d)| json!({ "name": name, "digest": sha256_map(d) }))
        .collect();
    deps.extend(
        sorted(&input.components).into_iter().map(
            |(step, d)| json!({ "name": format!("component:{step}"), "digest": sha256_map(d) }),
        ),
    );
    let mut built_from: Vec<&StepSource> = input.built_from.iter().collect();
    built_from.sort();
    deps.extend(built_from.into_iter().map(|s| {
        json!({
            "name": format!("source:{}", s.step),
            "digest": sha256_map(&s.digest),
            "annotations": { "language": s.language, "toolchain": s.toolchain },
        })
    }));
    deps.push(json!({
        "name": format!("sluice-engine@{}", input.engine_version),
        "uri": format!("pkg:cargo/sluice-engine@{}", input.engine_version),
        "annotations": { "wasmtime": input.wasmtime_version },
    }));
    // Serializing a `Value` cannot fail.
    let steps_bytes = serde_json::to_vec(&input.steps).unwrap_or_default();
    json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": SLSA_PROVENANCE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "pipeline": input.pipeline,
                    "spec": {
                        "path": input.spec_path,
                        "digest": sha256_map(&input.spec_digest),
                    },
                    "params": input.params,
                },
                "internalParameters": {
                    "engine_version": input.engine_version,
                    "wasmtime_version": input.wasmtime_version,
                    "determinism": input.determinism,
                    "seed": input.seed,
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {
                        "sluice-engine": input.engine_version,
                        "wasmtime": input.wasmtime_version,
                    },
                },
                "metadata": {
                    "invocationId": input.run_id,
                    "startedOn": input.started_at,
                    "finishedOn": input.finished_at,
                },
                "byproducts": [
                    {
                        "name": "steps",
                        "digest": sha256_map(&Digest::of(&steps_bytes)),
                        "annotations": { "steps": input.steps },
                    },
                    {
                        "name": "record",
                        "digest": sha256_map(&input.record_digest),
                        "annotations": { "lines": input.record_lines },
                    },
                ],
            },
        },
    })
}

/// Longest excerpt of a wrong value quoted in an error.
const FOUND_EXCERPT_CHARS: usize = 80;

fn excerpt(v: Option<&Value>) -> String {
    match v {
        None => "nothing".to_owned(),
        Some(v) => v.to_string().chars().take(FOUND_EXCERPT_CHARS).collect(),
    }
}

/// Parses a statement payload, checking that `_type` is [`STATEMENT_TYPE`],
/// `predicateType` is [`SLSA_PROVENANCE_TYPE`] and `subject` is an array.
pub fn parse_statement(payload: &[u8]) -> Result<Value, SealError> {
    let v: Value = serde_json::from_slice(payload)
        .map_err(|e| SealError::BadEncoding(format!("statement: not JSON: {e}")))?;
    if v.get("_type").and_then(Value::as_str) != Some(STATEMENT_TYPE) {
        return Err(SealError::UnexpectedStatement {
            field: "_type",
            expected: STATEMENT_TYPE,
            found: excerpt(v.get("_type")),
        });
    }
    if v.get("predicateType").and_then(Value::as_str) != Some(SLSA_PROVENANCE_TYPE) {
        return Err(SealError::UnexpectedStatement {
            field: "predicateType",
            expected: SLSA_PROVENANCE_TYPE,
            found: excerpt(v.get("predicateType")),
        });
    }
    if !v.get("subject").is_some_and(Value::is_array) {
        return Err(SealError::UnexpectedStatement {
            field: "subject",
            expected: "an array",
            found: excerpt(v.get("subject")),
        });
    }
    Ok(v)
}

/// The `(name, digest)` pairs of a parsed statement's subjects, in order.
pub fn statement_subjects(statement: &Value) -> Result<Vec<(String, Digest)>, SealError> {
    let bad = |found: Option<&Value>| SealError::UnexpectedStatement {
        field: "subject",
        expected: "an array of {name, digest: {sha256: <64 hex>}}",
        found: excerpt(found),
    };
    let subjects = statement
        .get("subject")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(statement.get("subject")))?;
    subjects
        .iter()
        .map(|s| {
            let name = s.get("name").and_then(Value::as_str);
            let hex = s.pointer("/digest/sha256").and_then(Value::as_str);
            match (name, hex) {
                (Some(name), Some(hex)) => format!("sha256:{hex}")
                    .parse::<Digest>()
                    .map(|d| (name.to_owned(), d))
                    .map_err(|_| bad(Some(s))),
                _ => Err(bad(Some(s))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_signer(seed_byte: u8) -> Signer {
        Signer::from_seed(&[seed_byte; SEED_BYTES], PathBuf::from("test.key"))
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }

    #[test]
    fn keyid_is_the_sha256_prefix_of_the_raw_public_key() {
        // RFC 8032 §7.1 test 1.
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let signer = Signer::from_seed(&seed, PathBuf::from("x.key"));
        let public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        assert_eq!(signer.public_key().to_hex(), public);
        let expected = &Digest::of(&hex::decode(public).unwrap()).hex()[..KEYID_HEX_CHARS];
        assert_eq!(signer.keyid(), expected);
        assert_eq!(signer.keyid(), "21fe31dfa154a261");
    }

    #[test]
    fn signed_envelope_verifies_and_yields_the_payload() {
        let signer = test_signer(7);
        let env = signer.sign(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}");
        assert_eq!(env.payload_type, IN_TOTO_PAYLOAD_TYPE);
        assert_eq!(env.signatures.len(), 1);
        assert_eq!(env.signatures[0].keyid, signer.keyid());
        assert_eq!(verify(&env, signer.public_key()).unwrap(), b"{\"a\":1}");
        // Survives a JSON round trip with the DSSE field names.
        let text = serde_json::to_string(&env).unwrap();
        assert!(text.contains("\"payloadType\":"), "{text}");
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(verify(&back, signer.public_key()).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn flipping_any_payload_byte_breaks_the_signature() {
        let signer = test_signer(1);
        let payload = b"statement bytes";
        let env = signer.sign(IN_TOTO_PAYLOAD_TYPE, payload);
        for i in 0..payload.len() {
            let mut altered = payload.to_vec();
            altered[i] ^= 0x01;
            let tampered = Envelope {
                payload: STANDARD.encode(&altered),
                ..env.clone()
            };
            match verify(&tampered, signer.public_key()) {
                Err(SealError::BadSignature { keyid }) => assert_eq!(keyid, signer.keyid()),
                other => panic!("byte {i}: expected BadSignature, got {other:?}"),
            }
        }
    }

    #[test]
    fn changing_the_payload_type_breaks_the_signature() {
        let signer = test_signer(1);
        let mut env = signer.sign(IN_TOTO_PAYLOAD_TYPE, b"x");
        env.payload_type = "text/plain".into();
        let err = verify(&env, signer.public_key()).unwrap_err();
        assert!(matches!(err, SealError::BadSignature { .. }), "{err:?}");
    }

    #[test]
    fn another_key_finds_no_signature_and_a_forged_keyid_does_not_verify() {
        let signer = test_signer(1);
        let other = test_signer(2);
        let env = signer.sign(IN_TOTO_PAYLOAD_TYPE, b"x");
        let err = verify(&env, other.public_key()).unwrap_err();
        assert!(
            matches!(&err, SealError::NoSignatureForKey { keyid } if keyid == other.keyid()),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("envelope has no signature by key {}", other.keyid())
        );
        // Claiming to be signed by `other` does not help.
        let mut forged = env.clone();
        forged.signatures[0].keyid = other.keyid().to_owned();
        let err = verify(&forged, other.public_key()).unwrap_err();
        assert!(
            matches!(&err, SealError::BadSignature { keyid } if keyid == other.keyid()),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_envelopes_are_encoding_errors() {
        let signer = test_signer(3);
        let env = signer.sign(IN_TOTO_PAYLOAD_TYPE, b"x");
        let bad_payload = Envelope {
            payload: "not base64!".into(),
            ..env.clone()
        };
        let err = verify(&bad_payload, signer.public_key()).unwrap_err();
        assert!(
            matches!(&err, SealError::BadEncoding(m) if m.starts_with("payload: not base64")),
            "{err:?}"
        );
        let mut short_sig = env.clone();
        short_sig.signatures[0].sig = STANDARD.encode([0u8; 10]);
        let err = verify(&short_sig, signer.public_key()).unwrap_err();
        assert!(
            matches!(&err, SealError::BadEncoding(m) if m.contains("10 bytes, expected 64")),
            "{err:?}"
        );
        // URL-safe base64 is accepted too.
        let mut url_safe = env.clone();
        url_safe.payload = URL_SAFE.encode(b"x");
        url_safe.signatures[0].sig =
            URL_SAFE.encode(STANDARD.decode(&env.signatures[0].sig).unwrap());
        assert_eq!(verify(&url_safe, signer.public_key()).unwrap(), b"x");
    }

    #[test]
    fn key_is_created_once_and_persists_with_private_mode() {
        let home = tempfile::tempdir().unwrap();
        let first = load_or_create(home.path()).unwrap();
        let second = load_or_create(home.path()).unwrap();
        assert_eq!(first.keyid(), second.keyid());
        assert_eq!(first.public_key(), second.public_key());
        let key_path = home
            .path()
            .join("keys")
            .join(format!("{}.key", first.keyid()));
        assert_eq!(first.key_path(), key_path);
        let mode = fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let keys: Vec<String> = fs::read_dir(home.path().join("keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        let mut keys = keys;
        keys.sort();
        // Sorted on both sides: where `active` falls depends on the
        // (random) key id.
        let mut expected = [
            format!("{}.key", first.keyid()),
            format!("{}.pub", first.keyid()),
            ACTIVE_KEY_FILE.to_owned(),
        ];
        expected.sort();
        assert_eq!(keys, expected);
        assert_eq!(
            fs::read_to_string(home.path().join("keys").join(ACTIVE_KEY_FILE)).unwrap(),
            format!("{}\n", first.keyid())
        );
        // What one process signs, the `.pub` file verifies.
        let public = read_public_key(&first.public_key_path()).unwrap();
        assert_eq!(&public, first.public_key());
        let env = first.sign(IN_TOTO_PAYLOAD_TYPE, b"persisted");
        assert_eq!(verify(&env, &public).unwrap(), b"persisted");
    }

    #[test]
    fn concurrent_first_use_ends_with_one_key() {
        let home = tempfile::tempdir().unwrap();
        let ids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(home.path()).unwrap().keyid().to_owned()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        let key_files = fs::read_dir(home.path().join("keys"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .ends_with(".key")
            })
            .count();
        assert_eq!(key_files, 1);
    }

    #[test]
    fn a_planted_key_sorting_first_is_neither_used_nor_trusted() {
        let home = tempfile::tempdir().unwrap();
        let created = load_or_create(home.path()).unwrap();
        // An attacker drops a valid key pair under a name that sorts first.
        let seed = [9u8; SEED_BYTES];
        let other = Signer::from_seed(&seed, PathBuf::new());
        let dir = home.path().join("keys");
        fs::write(
            dir.join(format!("{}.key", other.keyid())),
            hex::encode(seed),
        )
        .unwrap();
        fs::write(
            dir.join(format!("{}.pub", other.keyid())),
            other.public_key().to_hex(),
        )
        .unwrap();
        fs::write(dir.join("0000.pub"), other.public_key().to_hex()).unwrap();
        assert_eq!(
            load_or_create(home.path()).unwrap().keyid(),
            created.keyid()
        );
        assert_eq!(
            trusted_public_key(home.path()).unwrap(),
            *created.public_key()
        );
    }

    #[test]
    fn an_unpinned_home_adopts_its_single_key_and_refuses_to_pick_among_several() {
        let home = tempfile::tempdir().unwrap();
        let created = load_or_create(home.path()).unwrap();
        let dir = home.path().join("keys");
        // A home from before pins: the same key, no `active`.
        fs::remove_file(dir.join(ACTIVE_KEY_FILE)).unwrap();
        assert_eq!(
            trusted_public_key(home.path()).unwrap(),
            *created.public_key()
        );
        assert_eq!(
            load_or_create(home.path()).unwrap().keyid(),
            created.keyid()
        );
        assert!(dir.join(ACTIVE_KEY_FILE).is_file(), "adopted and pinned");
        // Two keys and no pin: neither signing nor verifying guesses.
        fs::remove_file(dir.join(ACTIVE_KEY_FILE)).unwrap();
        let other = test_signer(9);
        fs::write(
            dir.join(format!("{}.key", other.keyid())),
            hex::encode([9u8; SEED_BYTES]),
        )
        .unwrap();
        fs::write(
            dir.join(format!("{}.pub", other.keyid())),
            other.public_key().to_hex(),
        )
        .unwrap();
        let mut ids = [created.keyid().to_owned(), other.keyid().to_owned()];
        ids.sort();
        let expected = format!(
            "{}: no `active` pin and 2 keys ({}, {}); write the trusted key id to {}/active",
            dir.display(),
            ids[0],
            ids[1],
            dir.display()
        );
        assert_eq!(
            load_or_create(home.path()).unwrap_err().to_string(),
            expected
        );
        assert_eq!(
            trusted_public_key(home.path()).unwrap_err().to_string(),
            expected
        );
        // A pin naming a `.pub` that holds another key is refused.
        fs::write(dir.join(ACTIVE_KEY_FILE), format!("{}\n", created.keyid())).unwrap();
        let pub_path = dir.join(format!("{}.pub", created.keyid()));
        fs::write(&pub_path, other.public_key().to_hex()).unwrap();
        assert_eq!(
            trusted_public_key(home.path()).unwrap_err().to_string(),
            format!(
                "key file {}: holds the key with id {}, not {}",
                pub_path.display(),
                other.keyid(),
                created.keyid()
            )
        );
    }

    #[test]
    fn checkpoints_round_trip_and_reject_other_keys_and_types() {
        let signer = test_signer(3);
        let cp = Checkpoint {
            size: 7,
            root: [0xab; 32],
        };
        let env = sign_checkpoint(&signer, cp);
        assert_eq!(verify_checkpoint(&env, signer.public_key()).unwrap(), cp);
        let err = verify_checkpoint(&env, test_signer(4).public_key()).unwrap_err();
        assert!(
            matches!(err, SealError::NoSignatureForKey { .. }),
            "{err:?}"
        );
        let statement = signer.sign(IN_TOTO_PAYLOAD_TYPE, b"{}");
        let err = verify_checkpoint(&statement, signer.public_key()).unwrap_err();
        assert!(matches!(err, SealError::WrongPayloadType { .. }), "{err:?}");
        let foreign = signer.sign(
            CHECKPOINT_PAYLOAD_TYPE,
            br#"{"origin":"x","size":1,"root":""}"#,
        );
        assert_eq!(
            verify_checkpoint(&foreign, signer.public_key())
                .unwrap_err()
                .to_string(),
            "signed tree head: origin is not this engine's log"
        );
    }

    #[test]
    fn key_file_holding_another_key_is_rejected() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("keys");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0000000000000000.key");
        fs::write(&path, hex::encode([5u8; SEED_BYTES])).unwrap();
        let err = load_or_create(home.path()).unwrap_err();
        let id = test_signer(5).keyid().to_owned();
        assert_eq!(
            err.to_string(),
            format!(
                "key file {}: holds the key with id {id}, not 0000000000000000",
                path.display()
            )
        );
    }

    #[test]
    fn public_key_file_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let signer = test_signer(4);
        let path = dir.path().join("k.pub");
        fs::write(&path, format!("{}\n", signer.public_key().to_hex())).unwrap();
        let key = read_public_key(&path).unwrap();
        assert_eq!(key.keyid(), signer.keyid());
        assert_eq!(key.to_hex(), signer.public_key().to_hex());

        fs::write(&path, "zz").unwrap();
        let err = read_public_key(&path).unwrap_err();
        assert!(
            matches!(&err, SealError::BadKeyFile { path: p, reason } if *p == path && reason.contains("expected 64 hex digits")),
            "{err:?}"
        );
        let missing = dir.path().join("missing.pub");
        let err = read_public_key(&missing).unwrap_err();
        assert!(
            matches!(&err, SealError::Io { path: p, .. } if *p == missing),
            "{err:?}"
        );
    }

    fn sample_statement() -> Value {
        let params = BTreeMap::from([("lr".to_owned(), "0.1".to_owned())]);
        let input = ProvenanceInput {
            run_id: "run-1",
            pipeline: "tabular",
            spec_path: "pipeline.toml",
            spec_digest: Digest::of(b"spec"),
            params: &params,
            seed: u64::MAX,
            engine_version: "0.1.0",
            wasmtime_version: "48.0.8",
            determinism: "strict",
            subjects: vec![
                ("train/model".into(), Digest::of(b"model")),
                ("clean/table".into(), Digest::of(b"table")),
            ],
            inputs: vec![("raw".into(), Digest::of(b"raw"))],
            components: vec![("train".into(), Digest::of(b"wasm"))],
            built_from: vec![],
            started_at: "2026-01-01T00:00:00Z",
            finished_at: "2026-01-01T00:00:01Z",
            steps: json!([{ "step": "train", "fuel_used": 10 }]),
            record_digest: Digest::of(b"last line"),
            record_lines: 12,
        };
        statement(&input)
    }

    #[test]
    fn statement_has_in_toto_shape_sorted_subjects_and_run_facts() {
        let st = sample_statement();
        assert_eq!(st["_type"], STATEMENT_TYPE);
        assert_eq!(st["predicateType"], SLSA_PROVENANCE_TYPE);
        assert_eq!(
            st["subject"],
            json!([
                { "name": "clean/table", "digest": { "sha256": Digest::of(b"table").hex() } },
                { "name": "train/model", "digest": { "sha256": Digest::of(b"model").hex() } },
            ])
        );
        let p = &st["predicate"];
        assert_eq!(p["buildDefinition"]["buildType"], BUILD_TYPE);
        assert_eq!(
            p["buildDefinition"]["externalParameters"]["spec"]["digest"]["sha256"],
            Digest::of(b"spec").hex()
        );
        assert_eq!(
            p["buildDefinition"]["externalParameters"]["params"]["lr"],
            "0.1"
        );
        assert_eq!(p["buildDefinition"]["internalParameters"]["seed"], u64::MAX);
        let deps = p["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = deps.iter().map(|d| d["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["raw", "component:train", "sluice-engine@0.1.0"]);
        assert_eq!(deps[1]["digest"]["sha256"], Digest::of(b"wasm").hex());
        assert_eq!(p["runDetails"]["metadata"]["invocationId"], "run-1");
        assert_eq!(p["runDetails"]["builder"]["id"], BUILDER_ID);
        let byproducts = p["runDetails"]["byproducts"].as_array().unwrap();
        assert_eq!(byproducts[0]["annotations"]["steps"][0]["fuel_used"], 10);
        assert_eq!(
            byproducts[1]["digest"]["sha256"],
            Digest::of(b"last line").hex()
        );
        assert_eq!(byproducts[1]["annotations"]["lines"], 12);
        // Deterministic bytes.
        assert_eq!(
            serde_json::to_vec(&st).unwrap(),
            serde_json::to_vec(&sample_statement()).unwrap()
        );
    }

    #[test]
    fn statement_round_trips_through_a_signed_envelope() {
        let signer = test_signer(6);
        let st = sample_statement();
        let env = signer.sign(IN_TOTO_PAYLOAD_TYPE, &serde_json::to_vec(&st).unwrap());
        let back = verify_statement(&env, signer.public_key()).unwrap();
        assert_eq!(back, st);
        assert_eq!(
            statement_subjects(&back).unwrap(),
            [
                ("clean/table".to_owned(), Digest::of(b"table")),
                ("train/model".to_owned(), Digest::of(b"model")),
            ]
        );
        let other_type = signer.sign("text/plain", &serde_json::to_vec(&st).unwrap());
        let err = verify_statement(&other_type, signer.public_key()).unwrap_err();
        assert!(
            matches!(&err, SealError::WrongPayloadType { found, .. } if found == "text/plain"),
            "{err:?}"
        );
    }

    #[test]
    fn parse_statement_rejects_other_types() {
        let err = parse_statement(b"[1").unwrap_err();
        assert!(matches!(&err, SealError::BadEncoding(m) if m.starts_with("statement: not JSON")));
        let err = parse_statement(br#"{"_type":"x"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("statement field _type: expected {STATEMENT_TYPE}, found \"x\"")
        );
        let mut st = sample_statement();
        st["predicateType"] = json!("https://slsa.dev/provenance/v0.2");
        let err = parse_statement(&serde_json::to_vec(&st).unwrap()).unwrap_err();
        assert!(
            matches!(
                &err,
                SealError::UnexpectedStatement {
                    field: "predicateType",
                    ..
                }
            ),
            "{err:?}"
        );
        st = sample_statement();
        st.as_object_mut().unwrap().remove("subject");
        let err = parse_statement(&serde_json::to_vec(&st).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "statement field subject: expected an array, found nothing"
        );
    }
}
