//! Builds step crates into `wasm32-wasip2` components on demand.
//!
//! Invariant: crates are built with cargo into `<workspace>/target/sluice-steps`
//! (never the host build's target dir, whose lock a running `cargo test`
//! holds), release profile tuned for size; a missing wasm target is
//! installed with `rustup target add` once, with a clear message if that
//! fails.
//! A crate whose inputs are unchanged since its last build is not handed to
//! cargo at all: its [`Fingerprint`] (the bytes of every local input file,
//! the toolchain's identity, target, profile and build environment) is
//! stored next to the component and compared first, because a no-op
//! `cargo build` costs ~100 ms, five times a whole cached 50-step rerun.
//! Anything the fingerprint cannot vouch for (no record, a changed or
//! deleted input or component, a local build script) goes to cargo.
//! Cargo runs under the build deadline (`SLUICE_BUILD_TIMEOUT_S`, default
//! an hour; see [`crate::tool`]): a build script or procedural macro that never ends
//! is stopped with the whole cargo process group.
//! Boundary: spawns `cargo`/`rustup`; knows nothing of steps or runs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// The component target.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// A crate that could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build step crate {path}: {reason}")]
pub struct BuildError {
    /// The crate directory.
    pub path: PathBuf,
    /// Why (cargo's own diagnostics, tail).
    pub reason: String,
}

/// Release settings for step components: optimised for speed (opt-level 3
/// runs data steps ~25% faster than "s"; components are ~35% larger), with
/// wasm SIMD (128-bit lanes; deterministic in the sandbox: NaN results are
/// canonicalised and relaxed SIMD is deterministic), so `memchr` and
/// vectorisable loops do in the guest what SSE2 does in a native build.
const PROFILE_OVERRIDES: &[&str] = &[
    "profile.release.opt-level=3",
    "profile.release.lto=true",
    "profile.release.codegen-units=1",
    "profile.release.debug=false",
    "profile.release.strip=true",
    "target.wasm32-wasip2.rustflags=[\"-Ctarget-feature=+simd128\"]",
];

/// Environment a parent cargo sets that must not leak into the nested build
/// (it would retarget it, or wrap rustc in clippy-driver).
const SCRUBBED_ENV: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "RUSTFLAGS",
    "__CARGO_FIX_PLZ",
];

/// Builds every crate in `crates` (directories with a Cargo.toml) and
/// returns the `.wasm` component of each. One cargo invocation per
/// workspace, none for crates whose fingerprint is unchanged. A crate that
/// fails maps to its error; others still build. Cargo is `$CARGO` or
/// `cargo` on the `PATH`.
pub fn build_crates(crates: &[PathBuf]) -> BTreeMap<PathBuf, Result<PathBuf, BuildError>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    build_crates_using(&cargo, crates)
}

/// [`build_crates`] with an explicit cargo program.
pub fn build_crates_using(
    cargo: &OsStr,
    crates: &[PathBuf],
) -> BTreeMap<PathBuf, Result<PathBuf, BuildError>> {
    let mut by_workspace: BTreeMap<PathBuf, Vec<(PathBuf, String)>> = BTreeMap::new();
    let mut results = BTreeMap::new();
    // Computed at most once per call: a few stats and small reads.
    let mut toolchain: Option<Vec<u8>> = None;
    for dir in crates {
        match package_name(dir) {
            Ok(name) => {
                let root = workspace_root(dir);
                let toolchain = toolchain.get_or_insert_with(|| toolchain_identity(&root));
                if let Some(wasm) = fresh_component(&root, dir, &name, toolchain) {
                    tracing::debug!(crate = %dir.display(), "step crate fresh by fingerprint");
                    results.insert(dir.clone(), Ok(wasm));
                    continue;
                }
                by_workspace
                    .entry(root)
                    .or_default()
                    .push((dir.clone(), name))
            }
            Err(reason) => {
                results.insert(
                    dir.clone(),
                    Err(BuildError {
                        path: dir.clone(),
                        reason,
                    }),
                );
            }
        }
    }
    for (root, members) in by_workspace {
        let toolchain = toolchain.get_or_insert_with(|| toolchain_identity(&root));
        // Inputs are hashed before cargo runs: a file edited during the
        // build then mismatches next time instead of being vouched for.
        let before: BTreeMap<PathBuf, Option<Inputs>> = members
            .iter()
            .map(|(dir, _)| (dir.clone(), Inputs::collect(&root, dir)))
            .collect();
        let built = build_workspace_members(cargo, &root, &members);
        if let Ok(map) = &built {
            for (dir, name) in &members {
                if let (Some(wasm), Some(Some(inputs))) = (map.get(dir), before.get(dir)) {
                    record_fingerprint(&root, name, wasm, inputs, toolchain);
                }
            }
        }
        for (dir, _) in &members {
            let r = match &built {
                Ok(map) => map.get(dir).cloned().ok_or_else(|| BuildError {
                    path: dir.clone(),
                    reason: "cargo produced no .wasm for it; is it a `cdylib` crate?".to_string(),
                }),
                Err(reason) => Err(BuildError {
                    path: dir.clone(),
                    reason: reason.clone(),
                }),
            };
            results.insert(dir.clone(), r);
        }
    }
    results
}

fn package_name(dir: &Path) -> Result<String, String> {
    let manifest = dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{} has no [package] name", manifest.display()))
}

/// The nearest ancestor (or the dir itself) whose Cargo.toml has a
/// `[workspace]` table; the crate itself when there is none.
fn workspace_root(dir: &Path) -> PathBuf {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    for ancestor in dir.ancestors() {
        let manifest = ancestor.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest)
            && let Ok(table) = toml::from_str::<toml::Table>(&text)
            && table.contains_key("workspace")
        {
            return ancestor.to_path_buf();
        }
    }
    dir
}

/// How long one cargo build may take unless `SLUICE_BUILD_TIMEOUT_S` says
/// otherwise: a cold build of the example steps (arrow, parquet, opt-level
/// 3, LTO) takes 5–15 minutes on two busy cores.
const CARGO_TIMEOUT: Duration = Duration::from_secs(3600);

/// Said when a cargo build is stopped at the build deadline.
const STOPPED_WHY: &str =
    "(build scripts and procedural macros run at build time: does one loop or wait?)";

fn cargo(program: &OsStr) -> Command {
    let mut cmd = Command::new(program);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd
}

fn build_workspace_members(
    program: &OsStr,
    root: &Path,
    members: &[(PathBuf, String)],
) -> Result<BTreeMap<PathBuf, PathBuf>, String> {
    tracing::info!(workspace = %root.display(), crates = members.len(), "building step crates with cargo");
    let run = || {
        let mut cmd = cargo(program);
        cmd.arg("build")
            .arg("--release")
            .arg("--target")
            .arg(WASM_TARGET)
            .arg("--message-format=json-render-diagnostics")
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir(root));
        for o in PROFILE_OVERRIDES {
            cmd.arg("--config").arg(o);
        }
        for (_, name) in members {
            cmd.arg("-p").arg(name);
        }
        cmd.stdin(Stdio::null());
        crate::tool::run_within(
            cmd,
            "cargo build",
            crate::tool::build_timeout(CARGO_TIMEOUT),
            STOPPED_WHY,
        )
    };
    let mut output = run()?;
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    if !output.status.success() && target_missing(&stderr) {
        install_target()?;
        output = run()?;
    }
    if !output.status.success() {
        return Err(format!(
            "cargo build failed:\n{}",
            crate::tool::tail(&output.stderr, 30)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut built = BTreeMap::new();
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(manifest) = msg["manifest_path"].as_str() else {
            continue;
        };
        let manifest_dir = Path::new(manifest).parent().map(Path::to_path_buf);
        let wasm = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let (Some(manifest_dir), Some(wasm)) = (manifest_dir, wasm) {
            for (dir, _) in members {
                let same = dir
                    .canonicalize()
                    .map(|d| d == manifest_dir)
                    .unwrap_or(false);
                if same {
                    built.insert(dir.clone(), PathBuf::from(wasm));
                }
            }
        }
    }
    Ok(built)
}

fn target_missing(stderr: &str) -> bool {
    stderr.contains("target may not be installed")
        || stderr.contains("can't find crate for `core`")
        || stderr.contains("can't find crate for `std`")
}

fn install_target() -> Result<(), String> {
    tracing::info!("installing the {WASM_TARGET} target with rustup");
    eprintln!("sluice: installing the {WASM_TARGET} Rust target (rustup target add {WASM_TARGET})");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| {
            format!(
                "the {WASM_TARGET} target is missing and rustup could not be run ({e}); install it with `rustup target add {WASM_TARGET}`"
            )
        })?;
    if !status.success() {
        return Err(format!(
            "the {WASM_TARGET} target is missing and `rustup target add {WASM_TARGET}` failed ({status})"
        ));
    }
    Ok(())
}

/// Where step crates of the workspace at `root` are built.
fn target_dir(root: &Path) -> PathBuf {
    root.join("target").join("sluice-steps")
}

/// Format of a fingerprint record; bump when what is hashed changes.
const FINGERPRINT_FORMAT: &str = "sluice-step-fingerprint/1";
/// Most input bytes hashed for one crate; a crate with more (data files
/// under `src/`?) is left to cargo rather than slowing every run.
const FINGERPRINT_BYTES_MAX: u64 = 64 << 20;
/// Most input files of one crate (its own and its path dependencies').
const FINGERPRINT_FILES_MAX: usize = 4096;
/// Deepest directory nesting walked under a `src/`.
const WALK_DEPTH_MAX: usize = 32;
/// Most local (path) packages followed from one crate.
const LOCAL_PACKAGES_MAX: usize = 64;

/// What is stored next to a built component: the key over its inputs, the
/// component's own digest (a deleted or overwritten component is not
/// fresh) and the extra input files cargo's dep-info named (e.g. WIT files
/// a macro read), which the next check hashes too.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Fingerprint {
    format: String,
    key: String,
    wasm: PathBuf,
    wasm_sha256: String,
    dep_files: Vec<PathBuf>,
}

fn fingerprint_path(root: &Path, package: &str) -> PathBuf {
    target_dir(root)
        .join(WASM_TARGET)
        .join("release")
        .join(".sluice-fingerprint")
        .join(format!("{package}.json"))
}

/// The component of `dir` when its stored fingerprint matches its inputs
/// now; `None` means "ask cargo".
fn fresh_component(root: &Path, dir: &Path, package: &str, toolchain: &[u8]) -> Option<PathBuf> {
    let bytes = fs::read(fingerprint_path(root, package)).ok()?;
    let stored: Fingerprint = serde_json::from_slice(&bytes).ok()?;
    if stored.format != FINGERPRINT_FORMAT {
        return None;
    }
    let mut inputs = Inputs::collect(root, dir)?;
    inputs.add_files(&stored.dep_files)?;
    if inputs.key(toolchain) != stored.key {
        return None;
    }
    if sha256_file(&stored.wasm)? != stored.wasm_sha256 {
        return None;
    }
    Some(stored.wasm)
}

/// Stores the fingerprint of a crate cargo just built. `inputs` were hashed
/// before the build; files only cargo's dep-info names are hashed now.
/// Failing to store it only costs a cargo call next time.
fn record_fingerprint(root: &Path, package: &str, wasm: &Path, inputs: &Inputs, toolchain: &[u8]) {
    let record = (|| {
        let dep_files = dep_info_files(&wasm.with_extension("d"), root)?;
        let mut inputs = inputs.clone();
        // Files the build itself created (the lock file of a new crate)
        // were absent before it: hash what it left.
        let created: Vec<PathBuf> = inputs
            .files
            .iter()
            .filter(|(_, hash)| hash.is_none())
            .map(|(path, _)| path.clone())
            .collect();
        for path in &created {
            inputs.files.remove(path);
        }
        inputs.add_files(&created)?;
        inputs.add_files(&dep_files)?;
        Some(Fingerprint {
            format: FINGERPRINT_FORMAT.to_string(),
            key: inputs.key(toolchain),
            wasm: wasm.to_path_buf(),
            wasm_sha256: sha256_file(wasm)?,
            dep_files,
        })
    })();
    let path = fingerprint_path(root, package);
    match record {
        Some(record) => {
            let bytes = serde_json::to_vec_pretty(&record).expect("fingerprints serialize");
            // Not durable: a lost record costs one cargo call, and the
            // component's digest in it catches a component lost with it.
            if let Err(e) = crate::durable::write_atomic(&path, &bytes, false) {
                tracing::debug!("cannot store the build fingerprint {}: {e}", path.display());
            }
        }
        None => {
            let _ = fs::remove_file(&path);
        }
    }
}

/// The local input files of one crate and their contents' hashes (`None`:
/// absent, which is part of the key too).
#[derive(Debug, Clone, Default)]
struct Inputs {
    files: BTreeMap<PathBuf, Option<[u8; 32]>>,
    bytes: u64,
}

impl Inputs {
    /// The crate's and its path dependencies' manifests and `src/` trees,
    /// the workspace manifest and lock file. `None` when the crate cannot be
    /// fingerprinted (a local build script, too many files or bytes, an
    /// unreadable manifest): cargo decides then.
    fn collect(root: &Path, dir: &Path) -> Option<Inputs> {
        let mut inputs = Inputs::default();
        let root_manifest = root.join("Cargo.toml");
        let root_table: Option<toml::Table> = fs::read_to_string(&root_manifest)
            .ok()
            .and_then(|t| toml::from_str(&t).ok());
        inputs.add_file(&root_manifest)?;
        inputs.add_file(&root.join("Cargo.lock"))?;
        let mut packages: Vec<PathBuf> = vec![dir.canonicalize().ok()?];
        // `[patch]` entries with a path replace registry crates.
        if let Some(patch) = root_table.as_ref().and_then(|t| t.get("patch")) {
            for deps in patch.as_table().into_iter().flat_map(|t| t.values()) {
                for dep in deps.as_table().into_iter().flat_map(|t| t.values()) {
                    if let Some(p) = dep.get("path").and_then(|p| p.as_str()) {
                        packages.push(root.join(p));
                    }
                }
            }
        }
        let workspace_deps = root_table
            .as_ref()
            .and_then(|t| t.get("workspace"))
            .and_then(|w| w.get("dependencies"))
            .and_then(|d| d.as_table());
        let mut seen = BTreeSet::new();
        while let Some(pkg) = packages.pop() {
            let pkg = pkg.canonicalize().ok()?;
            if !seen.insert(pkg.clone()) {
                continue;
            }
            if seen.len() > LOCAL_PACKAGES_MAX {
                return None;
            }
            let manifest = pkg.join("Cargo.toml");
            let table: toml::Table = toml::from_str(&fs::read_to_string(&manifest).ok()?).ok()?;
            inputs.add_file(&manifest)?;
            // A build script may read anything (its rerun-if rules are
            // cargo's to judge), so such crates always go to cargo.
            let custom_build = table
                .get("package")
                .and_then(|p| p.get("build"))
                .is_some_and(|b| b.as_bool() != Some(false));
            if custom_build || pkg.join("build.rs").exists() {
                return None;
            }
            inputs.add_tree(&pkg.join("src"), 0)?;
            for deps in dependency_tables(&table) {
                for (name, dep) in deps {
                    if let Some(p) = dep.get("path").and_then(|p| p.as_str()) {
                        packages.push(pkg.join(p));
                    } else if dep.get("workspace").and_then(|w| w.as_bool()) == Some(true)
                        && let Some(p) = workspace_deps
                            .and_then(|w| w.get(name))
                            .and_then(|d| d.get("path"))
                            .and_then(|p| p.as_str())
                    {
                        packages.push(root.join(p));
                    }
                }
            }
        }
        Some(inputs)
    }

    fn add_tree(&mut self, dir: &Path, depth: usize) -> Option<()> {
        if depth > WALK_DEPTH_MAX {
            return None;
        }
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(()),
            Err(_) => return None,
        };
        // The listing is part of the key through the file set: a new or
        // deleted file under src/ changes it.
        for entry in entries {
            let path = entry.ok()?.path();
            if fs::metadata(&path).ok()?.is_dir() {
                self.add_tree(&path, depth + 1)?;
            } else {
                self.add_file(&path)?;
            }
        }
        Some(())
    }

    fn add_files(&mut self, files: &[PathBuf]) -> Option<()> {
        files.iter().try_for_each(|f| self.add_file(f))
    }

    fn add_file(&mut self, path: &Path) -> Option<()> {
        if self.files.contains_key(path) {
            return Some(());
        }
        if self.files.len() >= FINGERPRINT_FILES_MAX {
            return None;
        }
        let hash = match fs::File::open(path) {
            Ok(mut f) => {
                let mut h = Sha256::new();
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = f.read(&mut buf).ok()?;
                    if n == 0 {
                        break;
                    }
                    self.bytes += n as u64;
                    if self.bytes > FINGERPRINT_BYTES_MAX {
                        return None;
                    }
                    h.update(&buf[..n]);
                }
                Some(h.finalize().into())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => return None,
        };
        self.files.insert(path.to_path_buf(), hash);
        Some(())
    }

    /// The hex key over the build settings, the toolchain and every input.
    fn key(&self, toolchain: &[u8]) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(FINGERPRINT_FORMAT.as_bytes());
        field(WASM_TARGET.as_bytes());
        for o in PROFILE_OVERRIDES {
            field(o.as_bytes());
        }
        field(toolchain);
        for (path, hash) in &self.files {
            field(path.as_os_str().as_encoded_bytes());
            field(hash.as_ref().map_or(&b"absent"[..], |h| &h[..]));
        }
        hex::encode(h.finalize())
    }
}

/// The dependency tables of a manifest that affect a library build.
fn dependency_tables(table: &toml::Table) -> Vec<&toml::Table> {
    let mut out = Vec::new();
    for key in ["dependencies", "build-dependencies"] {
        out.extend(table.get(key).and_then(|d| d.as_table()));
    }
    for target in table
        .get("target")
        .and_then(|t| t.as_table())
        .into_iter()
        .flat_map(|t| t.values())
    {
        for key in ["dependencies", "build-dependencies"] {
            out.extend(target.get(key).and_then(|d| d.as_table()));
        }
    }
    out
}

/// The files a `.d` dep-info file names, less those that cannot change
/// under a fixed lock file and toolchain (registry and git sources in the
/// cargo home, the toolchain's own sources) and build outputs.
fn dep_info_files(dep_info: &Path, root: &Path) -> Option<Vec<PathBuf>> {
    let text = fs::read_to_string(dep_info).ok()?;
    let (_, deps) = text.lines().next()?.split_once(": ")?;
    let immutable: Vec<PathBuf> = [
        cargo_home().map(|h| h.join("registry")),
        cargo_home().map(|h| h.join("git")),
        rustup_home(),
    ]
    .into_iter()
    .flatten()
    .chain([target_dir(root)])
    .collect();
    let mut files = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars().peekable();
    let mut push = |current: &mut String| {
        if !current.is_empty() {
            let path = PathBuf::from(std::mem::take(current));
            if !immutable.iter().any(|i| path.starts_with(i)) {
                files.push(path);
            }
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                current.push(' ');
                chars.next();
            }
            ' ' => push(&mut current),
            c => current.push(c),
        }
    }
    push(&mut current);
    Some(files)
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".cargo")))
}

fn rustup_home() -> Option<PathBuf> {
    std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".rustup")))
}

/// Whatever picks or configures the compiler cargo will run, without
/// running anything: the build environment, toolchain files and cargo
/// configs where cargo and rustup look for them, and the identity (inode,
/// size, mtime) of every installed rustc and wasm target, so installing or
/// updating any toolchain invalidates every fingerprint.
fn toolchain_identity(root: &Path) -> Vec<u8> {
    use std::os::unix::fs::MetadataExt;
    let mut id = Vec::new();
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            // `CARGO` itself only names the program; the toolchain it runs
            // is identified below.
            (k.starts_with("CARGO_")
                || k.starts_with("RUSTC")
                || k.starts_with("RUSTUP")
                || k.starts_with("RUSTDOC"))
                && !SCRUBBED_ENV.contains(&k.as_ref())
        })
        .collect();
    vars.sort();
    for (k, v) in vars {
        id.extend(k.as_encoded_bytes());
        id.push(b'=');
        id.extend(v.as_encoded_bytes());
        id.push(0);
    }
    let stat = |id: &mut Vec<u8>, path: &Path| {
        id.extend(path.as_os_str().as_encoded_bytes());
        match fs::metadata(path) {
            Ok(m) => id.extend(
                format!(
                    " {} {} {} {}\0",
                    m.ino(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                )
                .bytes(),
            ),
            Err(_) => id.extend(b" absent\0"),
        }
    };
    let mut places: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        places.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    places.extend(root.ancestors().map(Path::to_path_buf));
    places.sort();
    places.dedup();
    let mut files: Vec<PathBuf> = Vec::new();
    for place in &places {
        for name in [
            "rust-toolchain",
            "rust-toolchain.toml",
            ".cargo/config",
            ".cargo/config.toml",
        ] {
            files.push(place.join(name));
        }
    }
    if let Some(h) = cargo_home() {
        files.push(h.join("config"));
        files.push(h.join("config.toml"));
    }
    match rustup_home() {
        Some(rustup) if rustup.join("toolchains").is_dir() => {
            files.push(rustup.join("settings.toml"));
            let mut toolchains: Vec<PathBuf> = fs::read_dir(rustup.join("toolchains"))
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            toolchains.sort();
            for t in toolchains {
                stat(&mut id, &t.join("bin").join("rustc"));
                stat(&mut id, &t.join("lib").join("rustlib").join(WASM_TARGET));
            }
        }
        _ => {
            // No rustup: the rustc on the PATH (or `$RUSTC`) is the toolchain.
            let rustc = std::env::var_os("RUSTC").map(PathBuf::from).or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(|d| d.join("rustc"))
                    .find(|p| p.is_file())
            });
            match rustc {
                Some(r) => stat(&mut id, &r),
                None => id.extend(b"no rustc\0"),
            }
        }
    }
    // Only files that exist: the key then does not depend on where the
    // absent ones were looked for (the working directory).
    for f in files {
        if let Ok(bytes) = fs::read(&f) {
            id.extend(f.as_os_str().as_encoded_bytes());
            id.extend(b" =");
            id.extend(Sha256::digest(&bytes));
            id.push(0);
        }
    }
    id
}

fn sha256_file(path: &Path) -> Option<String> {
    let mut f = fs::File::open(path).ok()?;
    crate::digest::hash_reader(&mut f).ok().map(|d| d.hex())
}
