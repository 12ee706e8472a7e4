//! Building Python and JavaScript steps: a step directory with a
//! `pyproject.toml` (Python, componentize-py) or a `package.json` with a
//! `sluice` entry (JavaScript, ComponentizeJS) becomes a component with
//! the language's step SDK and `wit/step.wit` of this engine, built by a
//! pinned tool the engine installs once into a directory it manages.
//!
//! Neither tool's builds are reproducible (the same sources give a
//! different component each time), which would defeat the step cache and
//! replay. So builds are memoized by a *source digest* of everything that
//! goes into one — the staged sources, the SDK, the WIT, the tool's
//! version and the build flags — and the same sources map to the same
//! component bytes for as long as the memo (`<dir>/target/sluice-<lang>/`)
//! is kept. The source digest is recorded with the step (run record,
//! report, provenance), so an auditor can tie a component to its sources.
//!
//! Invariant: what is hashed is exactly what is staged and built; a build
//! sees a cleared environment and no files of the step directory but its
//! source files; a memoized component is used only while its bytes hash to
//! the digest recorded when it was built.
//! Boundary: runs python3/pip/componentize-py and node/npm; runs no step.

mod javascript;
mod python;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// The step world every script step targets.
const STEP_WIT: &str = include_str!("../../../wit/step.wit");
/// Most source files of one step, and their bytes.
const SOURCES_MAX: usize = 2048;
const SOURCE_BYTES_MAX: u64 = 64 << 20;
/// Deepest directory nesting staged.
const DEPTH_MAX: usize = 16;
/// A staging directory older than this was left by a build that died
/// (builds take seconds); the next build of the step removes it.
const STALE_STAGE: Duration = Duration::from_secs(3600);
/// Memoized builds kept per step directory (newest first).
const MEMOS_KEPT: usize = 4;

/// Which language a script step is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// `pyproject.toml` with `[tool.sluice] module`.
    Python,
    /// `package.json` with `"sluice": { "entry": … }`.
    #[serde(rename = "javascript")]
    JavaScript,
}

impl Language {
    /// The language of a step directory, by its marker file.
    pub fn of_dir(dir: &Path) -> Option<Language> {
        if dir.join("pyproject.toml").is_file() {
            Some(Language::Python)
        } else if dir.join("package.json").is_file() {
            Some(Language::JavaScript)
        } else {
            None
        }
    }

    /// `python` or `javascript`, as recorded.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Language::Python => "Python",
            Language::JavaScript => "JavaScript",
        }
    }

    fn toolchain(self) -> &'static dyn Toolchain {
        match self {
            Language::Python => &python::Python,
            Language::JavaScript => &javascript::JavaScript,
        }
    }
}

/// What a script step's component was built from: recorded with every
/// attempt of the step and in the run's provenance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceBuild {
    /// The step's language.
    pub language: Language,
    /// sha256 over the build format, the tool's version, the SDK, the WIT,
    /// the entry module and every staged source file (path and bytes): the
    /// memo key of the build.
    pub digest: Digest,
    /// The tool and version that built it (`componentize-py 0.25.1`).
    pub toolchain: String,
}

/// A built script step: the memoized component, its bytes (read and
/// checked against the digest recorded at build time) and what it was
/// built from.
#[derive(Clone, Debug)]
pub struct Built {
    /// The memoized component file.
    pub wasm: PathBuf,
    /// Its bytes.
    pub bytes: Arc<Vec<u8>>,
    /// Their digest.
    pub component: Digest,
    /// The sources it was built from.
    pub source: SourceBuild,
}

/// One language's build: where its entry is named, which files are
/// sources, which SDK files are staged beside them, and how the pinned
/// tool is found and run.
trait Toolchain: Sync {
    /// The memo directory's name under `<dir>/target/`.
    fn memo_dir(&self) -> &'static str;
    /// Format of the source digest; bump when what is hashed or how changes.
    fn build_format(&self) -> &'static str;
    /// `<tool> <version>`.
    fn toolchain(&self) -> String;
    /// The entry the build starts from, read from the marker file and
    /// checked; the error names the file.
    fn entry(&self, dir: &Path) -> Result<String, String>;
    /// The staged file that must exist for `entry`.
    fn entry_file(&self, entry: &str) -> String;
    /// Whether a file is a source of the step.
    fn is_source(&self, name: &str) -> bool;
    /// Whether a directory is never searched for sources (besides hidden
    /// ones and the top-level `target`).
    fn skip_dir(&self, name: &str) -> bool;
    /// SDK files staged beside the sources: (path under `src`, contents).
    fn sdk(&self) -> &'static [(&'static str, &'static str)];
    /// The environment variable naming the tools directory (which also
    /// holds the key that authenticates memoized builds).
    fn tools_var(&self) -> &'static str;
    /// Finds or installs the tool: something `build` can run.
    fn install(&self) -> Result<PathBuf, String>;
    /// Builds `stage/src` (sources and SDK) against `wit` into `out`.
    fn build(
        &self,
        tool: &Path,
        stage: &Path,
        wit: &Path,
        entry: &str,
        out: &Path,
    ) -> Result<(), String>;
}

/// Builds every script step directory in `dirs` (each with the language
/// its marker file names); a directory that fails maps to its error
/// (naming it), the others still build. Each tool is installed at most once.
pub fn build_script_steps(dirs: &[PathBuf]) -> BTreeMap<PathBuf, Result<Built, String>> {
    let mut tools: BTreeMap<Language, Result<PathBuf, String>> = BTreeMap::new();
    dirs.iter()
        .map(|dir| {
            let result = match Language::of_dir(dir) {
                None => Err("no pyproject.toml or package.json".to_string()),
                Some(language) => build_one(language, dir, &mut tools).map_err(|reason| {
                    format!(
                        "cannot build {} step {}: {reason}",
                        language.name(),
                        dir.display()
                    )
                }),
            };
            (dir.clone(), result)
        })
        .collect()
}

fn build_one(
    language: Language,
    dir: &Path,
    tools: &mut BTreeMap<Language, Result<PathBuf, String>>,
) -> Result<Built, String> {
    let chain = language.toolchain();
    let entry = chain.entry(dir)?;
    let sources = collect_sources(chain, dir)?;
    let entry_file = chain.entry_file(&entry);
    if !sources.iter().any(|(rel, _)| *rel == entry_file) {
        return Err(format!("the entry {entry_file} does not exist"));
    }
    let digest = source_digest(chain, &entry, &sources);
    let source = SourceBuild {
        language,
        digest,
        toolchain: chain.toolchain(),
    };
    // Tools run in the stage directory: every path handed to them is absolute.
    let dir = std::path::absolute(dir).map_err(io_err(dir))?;
    let memo_dir = dir.join("target").join(chain.memo_dir());
    let key = digest.hex();
    let memo = memo_dir.join(format!("{key}.wasm"));
    let recorded = memo_dir.join(format!("{key}.digest"));
    let secret = MemoKey::load(chain)?;
    if let Some((bytes, component)) = memoized(&memo, &recorded, &secret, &digest) {
        tracing::debug!(step = %dir.display(), "script step memoized");
        return Ok(Built {
            wasm: memo,
            bytes,
            component,
            source,
        });
    }
    let tool = tools
        .entry(language)
        .or_insert_with(|| chain.install())
        .clone()?;
    fs::create_dir_all(&memo_dir).map_err(|e| format!("{}: {e}", memo_dir.display()))?;
    // One build per source digest at a time, across processes: builds are
    // not reproducible, so two racing builds would hand two runs of the
    // same sources two different components. The second waits, then takes
    // the first one's memo.
    let _building = lock_tools(&memo_dir, &key)?;
    if let Some((bytes, component)) = memoized(&memo, &recorded, &secret, &digest) {
        return Ok(Built {
            wasm: memo,
            bytes,
            component,
            source,
        });
    }
    sweep_stale_stages(&memo_dir);
    static STAGE: AtomicU64 = AtomicU64::new(0);
    let stage = memo_dir.join(format!(
        "stage-{}-{}",
        std::process::id(),
        STAGE.fetch_add(1, Ordering::Relaxed)
    ));
    let target = Memo {
        wasm: &memo,
        recorded: &recorded,
        secret: &secret,
        source: &digest,
    };
    let result = stage_and_build(chain, &tool, &stage, &entry, &sources, &target);
    let _ = fs::remove_dir_all(&stage);
    let (bytes, component) = result?;
    prune_memos(&memo_dir);
    Ok(Built {
        wasm: memo,
        bytes,
        component,
        source,
    })
}

/// The step's source files (relative path with `/`, bytes), sorted;
/// `target`, hidden directories and the language's cache directories are
/// not searched.
fn collect_sources(chain: &dyn Toolchain, dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((path, rel, depth)) = stack.pop() {
        let entries = fs::read_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry
                .file_type()
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if kind.is_dir() {
                let skip = name.starts_with('.')
                    || chain.skip_dir(&name)
                    || (depth == 0 && name == "target");
                if !skip && depth < DEPTH_MAX {
                    stack.push((entry.path(), child, depth + 1));
                }
            } else if kind.is_symlink() && chain.is_source(&name) {
                // Never followed: a link could stage any file the engine can
                // read (a key, another tenant's data) into a component.
                return Err(format!(
                    "{} is a symbolic link; the sources of a step must be regular files in its directory",
                    entry.path().display()
                ));
            } else if kind.is_file() && chain.is_source(&name) {
                let bytes = fs::read(entry.path())
                    .map_err(|e| format!("{}: {e}", entry.path().display()))?;
                total += bytes.len() as u64;
                out.push((child, bytes));
                if out.len() > SOURCES_MAX || total > SOURCE_BYTES_MAX {
                    return Err(format!(
                        "{}: more than {SOURCES_MAX} source files or {} MiB of them",
                        dir.display(),
                        SOURCE_BYTES_MAX >> 20
                    ));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The digest of everything a build is made of.
fn source_digest(chain: &dyn Toolchain, entry: &str, sources: &[(String, Vec<u8>)]) -> Digest {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(chain.build_format().as_bytes());
    field(chain.toolchain().as_bytes());
    for (path, text) in chain.sdk() {
        field(path.as_bytes());
        field(text.as_bytes());
    }
    field(STEP_WIT.as_bytes());
    field(entry.as_bytes());
    for (rel, bytes) in sources {
        field(rel.as_bytes());
        field(bytes);
    }
    Digest::from_hasher(h)
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", p.display())
}

/// Where a build is memoized, and what authenticates it.
struct Memo<'a> {
    wasm: &'a Path,
    recorded: &'a Path,
    secret: &'a MemoKey,
    source: &'a Digest,
}

/// The secret that authenticates memoized builds: a memo's digest file
/// carries an HMAC-SHA256 tag binding the source digest to the component
/// digest under a key kept beside the build tools (`build-memo.key`, 0600,
/// owned by this user) — never in the step directory. Whoever can write
/// into a step directory (and so plant `target/sluice-*/<source>.wasm`)
/// cannot make the engine run other code as the build of those sources
/// and record the sources' digest for it; an unauthenticated memo is
/// rebuilt.
struct MemoKey([u8; 32]);

/// Domain separation for memo tags.
const MEMO_TAG_CONTEXT: &[u8] = b"sluice-build-memo-v1\0";

impl MemoKey {
    fn load(chain: &dyn Toolchain) -> Result<MemoKey, String> {
        let path = tools_root(chain.tools_var())?.join("build-memo.key");
        crate::durable::load_or_create_secret(&path).map(MemoKey)
    }

    fn tag(&self, source: &Digest, component: &Digest) -> hmac::Hmac<Sha256> {
        use hmac::Mac as _;
        let mut mac =
            hmac::Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(MEMO_TAG_CONTEXT);
        mac.update(source.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(component.to_string().as_bytes());
        mac
    }

    /// The digest file's text: the component's digest and its tag.
    fn record(&self, source: &Digest, component: &Digest) -> String {
        let tag = hmac::Mac::finalize(self.tag(source, component)).into_bytes();
        format!("{component}\n{}\n", hex::encode(tag))
    }

    /// Whether `text` (a digest file) vouches for `component` as the build
    /// of `source`.
    fn vouches(&self, text: &str, source: &Digest, component: &Digest) -> bool {
        let mut lines = text.lines();
        let (Some(recorded), Some(tag)) = (lines.next(), lines.next()) else {
            return false;
        };
        recorded == component.to_string()
            && hex::decode(tag.trim())
                .is_ok_and(|t| hmac::Mac::verify_slice(self.tag(source, component), &t).is_ok())
    }
}

fn stage_and_build(
    chain: &dyn Toolchain,
    tool: &Path,
    stage: &Path,
    entry: &str,
    sources: &[(String, Vec<u8>)],
    memo: &Memo<'_>,
) -> Result<(Arc<Vec<u8>>, Digest), String> {
    let src = stage.join("src");
    let staged = sources
        .iter()
        .map(|(rel, bytes)| (rel.as_str(), bytes.as_slice()))
        .chain(chain.sdk().iter().map(|(p, t)| (*p, t.as_bytes())));
    for (rel, bytes) in staged {
        let path = src.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::write(&path, bytes).map_err(io_err(&path))?;
    }
    let wit = stage.join("wit");
    fs::create_dir_all(&wit).map_err(io_err(&wit))?;
    fs::write(wit.join("step.wit"), STEP_WIT).map_err(io_err(&wit))?;
    let out = stage.join("step.wasm");
    chain.build(tool, stage, &wit, entry, &out)?;
    // The component's digest first, then the component, each by rename:
    // a concurrent build of the same key leaves one of two equally valid
    // components, and a mismatch (a crash between the renames, a
    // concurrent build, an overwritten file) only means a rebuild.
    let bytes = fs::read(&out).map_err(io_err(&out))?;
    let component = Digest::of(&bytes);
    let digest_tmp = stage.join("step.digest");
    fs::write(&digest_tmp, memo.secret.record(memo.source, &component))
        .map_err(io_err(&digest_tmp))?;
    fs::rename(&digest_tmp, memo.recorded).map_err(io_err(memo.recorded))?;
    fs::rename(&out, memo.wasm).map_err(io_err(memo.wasm))?;
    Ok((Arc::new(bytes), component))
}

/// A memoized component, if its bytes still hash to the digest recorded
/// when it was built and that record is authenticated for these sources
/// (a truncated, replaced or planted file is rebuilt, never run as the
/// build of these sources).
fn memoized(
    memo: &Path,
    recorded: &Path,
    secret: &MemoKey,
    source: &Digest,
) -> Option<(Arc<Vec<u8>>, Digest)> {
    let (Ok(bytes), Ok(text)) = (fs::read(memo), fs::read_to_string(recorded)) else {
        return None;
    };
    let component = Digest::of(&bytes);
    if !secret.vouches(&text, source, &component) {
        tracing::warn!(memo = %memo.display(), "memoized build is not the authenticated build of these sources; rebuilding");
        return None;
    }
    Some((Arc::new(bytes), component))
}

/// Keeps the [`MEMOS_KEPT`] newest memoized components of a step (and
/// their digests): each is ~10-20 MB, and edits would otherwise pile them up.
fn prune_memos(memo_dir: &Path) {
    let Ok(entries) = fs::read_dir(memo_dir) else {
        return;
    };
    let mut memos: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wasm"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    memos.sort_by(|a, b| b.cmp(a));
    for (_, wasm) in memos.into_iter().skip(MEMOS_KEPT) {
        let _ = fs::remove_file(wasm.with_extension("digest"));
        let _ = fs::remove_file(wasm.with_extension("lock"));
        let _ = fs::remove_file(&wasm);
    }
}

/// Removes `stage-*` directories left by builds that died (older than
/// [`STALE_STAGE`]); a live build's stage is seconds old.
fn sweep_stale_stages(memo_dir: &Path) {
    let Ok(entries) = fs::read_dir(memo_dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with("stage-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_STAGE);
        if stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A command with none of the host's environment but `PATH`, `HOME` and
/// `TMPDIR` (no `PYTHONPATH`, `NODE_OPTIONS`, pip or npm configuration ...).
fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().stdin(Stdio::null());
    for var in ["PATH", "HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd
}

/// The directory a tool is installed into: `$<var>` if set, else
/// `$XDG_CACHE_HOME/sluice` or `~/.cache/sluice`.
fn tools_root(var: &str) -> Result<PathBuf, String> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|c| c.join("sluice"))
        })
        .ok_or_else(|| {
            format!("script steps need a place for their build tools: set {var} or HOME")
        })
}

/// Largest marker file (`pyproject.toml`, `package.json`) read.
const MARKER_BYTES_MAX: u64 = 1 << 20;

/// A step's marker file as text, refused past [`MARKER_BYTES_MAX`].
fn read_marker(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let mut text = String::new();
    fs::File::open(path)
        .and_then(|f| f.take(MARKER_BYTES_MAX + 1).read_to_string(&mut text))
        .map_err(io_err(path))?;
    if text.len() as u64 > MARKER_BYTES_MAX {
        return Err(format!(
            "{} is larger than {} KiB",
            path.display(),
            MARKER_BYTES_MAX >> 10
        ));
    }
    Ok(text)
}

/// Holds `<root>/<name>.lock` exclusively (other processes installing the
/// same tool, or building the same sources, wait) until the returned file
/// is dropped.
fn lock_tools(root: &Path, name: &str) -> Result<fs::File, String> {
    fs::create_dir_all(root).map_err(io_err(root))?;
    let path = root.join(format!("{name}.lock"));
    let lock = fs::File::create(&path).map_err(io_err(&path))?;
    lock.lock()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(lock)
}

/// How long one build-tool run may take unless `SLUICE_BUILD_TIMEOUT_S`
/// says otherwise: builds take seconds, an install a minute.
const TOOL_TIMEOUT: Duration = Duration::from_secs(900);

/// Why a build tool may not end: said when one is stopped at the deadline.
const STOPPED_WHY: &str = "(a module's top level runs at build time: does it loop or wait?)";

/// Runs a build tool; a failure to start, a non-zero exit or running past
/// the build deadline (`SLUICE_BUILD_TIMEOUT_S`, default 900 s: see
/// [`crate::tool`]) is an error quoting the tool's last stderr lines.
fn run_tool(cmd: Command, what: &str) -> Result<std::process::Output, String> {
    let output = crate::tool::run_within(
        cmd,
        what,
        crate::tool::build_timeout(TOOL_TIMEOUT),
        STOPPED_WHY,
    )?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            crate::tool::tail(&output.stderr, 20)
        ));
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn step_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    /// A memoized component is trusted only while its bytes hash to the
    /// digest recorded at build time and that record carries a tag under
    /// the builder's key binding it to these sources: a planted memo (right
    /// digest, no or a forged tag), a memo of other sources moved under
    /// this source digest and a replaced component are all rebuilt.
    #[test]
    fn only_an_authenticated_memo_of_these_sources_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let (memo, recorded) = (dir.path().join("k.wasm"), dir.path().join("k.digest"));
        let secret = MemoKey([7; 32]);
        let (source, other) = (Digest::of(b"sources"), Digest::of(b"other sources"));
        let used = |s: &Digest| memoized(&memo, &recorded, &secret, s);
        assert!(used(&source).is_none(), "nothing built yet");
        fs::write(&memo, b"\0asm component").unwrap();
        assert!(used(&source).is_none(), "no digest recorded");
        let component = Digest::of(b"\0asm component");
        fs::write(&recorded, format!("{component}\n")).unwrap();
        assert!(used(&source).is_none(), "a planted memo: no tag");
        let forged = MemoKey([8; 32]).record(&source, &component);
        fs::write(&recorded, forged).unwrap();
        assert!(used(&source).is_none(), "a planted memo: another key's tag");
        fs::write(&recorded, secret.record(&source, &component)).unwrap();
        let (bytes, got) = used(&source).unwrap();
        assert_eq!(
            (bytes.as_slice(), got),
            (&b"\0asm component"[..], component)
        );
        assert!(used(&other).is_none(), "the build of other sources");
        fs::write(&memo, b"\0asm other code").unwrap();
        assert!(used(&source).is_none(), "replaced bytes");
    }

    /// The digest covers every staged source by path and bytes and nothing
    /// else: caches, hidden dirs, the memo itself and non-source files do
    /// not change it.
    #[test]
    fn the_source_digest_is_the_staged_sources_and_only_them() {
        let chain = &python::Python;
        let dir = step_dir(&[
            ("pyproject.toml", "[tool.sluice]\nmodule = \"app\"\n"),
            ("app.py", "x = 1\n"),
            ("lib/util.py", "y = 2\n"),
        ]);
        let key = |d: &Path| source_digest(chain, "app", &collect_sources(chain, d).unwrap());
        let first = key(dir.path());
        let sources = collect_sources(chain, dir.path()).unwrap();
        let names: Vec<&str> = sources.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names, ["app.py", "lib/util.py"]);
        for (rel, text) in [
            ("__pycache__/app.cpython-314.pyc", "junk"),
            (".venv/lib/site.py", "leak = 1\n"),
            ("target/sluice-python/x.wasm", "old"),
            ("README.md", "docs"),
        ] {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        assert_eq!(key(dir.path()), first);
        fs::write(dir.path().join("lib/util.py"), "y = 3\n").unwrap();
        let edited = key(dir.path());
        assert_ne!(edited, first);
        fs::rename(dir.path().join("lib"), dir.path().join("pkg")).unwrap();
        assert_ne!(key(dir.path()), edited, "a moved module is another build");
        assert_ne!(source_digest(chain, "other", &sources), first);
        let js = &javascript::JavaScript;
        assert_ne!(
            source_digest(js, "app", &sources),
            first,
            "another language's build of the same files"
        );
    }

    /// A source that is a symbolic link is refused, naming it: it is never
    /// followed out of the step directory. Links to directories are not
    /// searched.
    #[test]
    fn a_symlinked_source_is_refused_and_linked_dirs_are_not_searched() {
        let outside = step_dir(&[("secret.py", "KEY = 'host secret'\n")]);
        let dir = step_dir(&[("app.py", "x = 1\n")]);
        std::os::unix::fs::symlink(outside.path(), dir.path().join("lib")).unwrap();
        let sources = collect_sources(&python::Python, dir.path()).unwrap();
        assert_eq!(sources.len(), 1, "a linked directory is not searched");
        std::os::unix::fs::symlink(
            outside.path().join("secret.py"),
            dir.path().join("secret.py"),
        )
        .unwrap();
        let err = collect_sources(&python::Python, dir.path()).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{} is a symbolic link; the sources of a step must be regular files in its directory",
                dir.path().join("secret.py").display()
            )
        );
    }

    /// A stage left by a build that died is removed by the next build; a
    /// fresh one (a concurrent build's) is kept.
    #[test]
    fn stale_stages_are_swept_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (old, fresh) = (dir.path().join("stage-1-0"), dir.path().join("stage-2-0"));
        fs::create_dir_all(old.join("src")).unwrap();
        fs::create_dir_all(&fresh).unwrap();
        fs::write(dir.path().join("k.wasm"), b"memo").unwrap();
        let long_ago = SystemTime::now() - STALE_STAGE - Duration::from_secs(60);
        fs::File::open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        sweep_stale_stages(dir.path());
        assert!(!old.exists() && fresh.exists() && dir.path().join("k.wasm").exists());
    }

    /// Only the newest memos survive a build.
    #[test]
    fn old_memos_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let base = SystemTime::now() - Duration::from_secs(1000);
        for i in 0..6u64 {
            let wasm = dir.path().join(format!("k{i}.wasm"));
            fs::write(&wasm, b"memo").unwrap();
            fs::write(wasm.with_extension("digest"), b"d").unwrap();
            let at = base + Duration::from_secs(i * 10);
            fs::File::options()
                .write(true)
                .open(&wasm)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
        prune_memos(dir.path());
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "k2.digest",
                "k2.wasm",
                "k3.digest",
                "k3.wasm",
                "k4.digest",
                "k4.wasm",
                "k5.digest",
                "k5.wasm"
            ]
        );
    }

    /// A marker file past its size limit is refused before it is parsed.
    #[test]
    fn an_oversized_marker_is_refused() {
        let big = format!(
            "{{\"sluice\": {{\"entry\": \"a.js\"}}, \"x\": \"{}\"}}",
            "y".repeat(1 << 20)
        );
        let dir = step_dir(&[("package.json", &big)]);
        let err = javascript::JavaScript.entry(dir.path()).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{} is larger than 1024 KiB",
                dir.path().join("package.json").display()
            )
        );
    }

    /// Tool errors name the tool and quote its stderr's last lines.
    #[test]
    fn a_missing_or_failing_tool_is_named() {
        let err = run_tool(Command::new("/nonexistent/componentize"), "componentize").unwrap_err();
        assert!(err.starts_with("cannot run componentize: "), "{err}");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo first >&2; echo 'bad source' >&2; exit 3"]);
        let err = run_tool(cmd, "the build").unwrap_err();
        assert_eq!(err, "the build failed (exit status: 3): first\nbad source");
    }
}
