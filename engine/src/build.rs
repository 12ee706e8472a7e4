//! Builds step crates into `wasm32-wasip2` components on demand.
//!
//! Invariant: crates are built with cargo into `<workspace>/target/sluice-steps`
//! (never the host build's target dir, whose lock a running `cargo test`
//! holds), release profile tuned for size; a missing wasm target is
//! installed with `rustup target add` once, with a clear message if that
//! fails.
//! Boundary: spawns `cargo`/`rustup`; knows nothing of steps or runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// Release settings for step components: small and fast to compile.
const PROFILE_OVERRIDES: &[&str] = &[
    "profile.release.opt-level=\"s\"",
    "profile.release.lto=true",
    "profile.release.codegen-units=1",
    "profile.release.debug=false",
    "profile.release.strip=true",
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
/// workspace. A crate that fails maps to its error; others still build.
pub fn build_crates(crates: &[PathBuf]) -> BTreeMap<PathBuf, Result<PathBuf, BuildError>> {
    let mut by_workspace: BTreeMap<PathBuf, Vec<(PathBuf, String)>> = BTreeMap::new();
    let mut results = BTreeMap::new();
    for dir in crates {
        match package_name(dir) {
            Ok(name) => by_workspace
                .entry(workspace_root(dir))
                .or_default()
                .push((dir.clone(), name)),
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
        let built = build_workspace_members(&root, &members);
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

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd
}

fn build_workspace_members(
    root: &Path,
    members: &[(PathBuf, String)],
) -> Result<BTreeMap<PathBuf, PathBuf>, String> {
    let run = || {
        let mut cmd = cargo();
        cmd.arg("build")
            .arg("--release")
            .arg("--target")
            .arg(WASM_TARGET)
            .arg("--message-format=json-render-diagnostics")
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(root.join("target").join("sluice-steps"));
        for o in PROFILE_OVERRIDES {
            cmd.arg("--config").arg(o);
        }
        for (_, name) in members {
            cmd.arg("-p").arg(name);
        }
        cmd.stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped());
        cmd.output()
    };
    let mut output = run().map_err(|e| format!("cannot run cargo: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    if !output.status.success() && target_missing(&stderr) {
        install_target()?;
        output = run().map_err(|e| format!("cannot run cargo: {e}"))?;
    }
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("cargo build failed:\n{}", tail.join("\n")));
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
