//! Building Python steps: a step directory with a `pyproject.toml` becomes
//! a component through componentize-py (pinned, in a virtual environment
//! the engine manages), with the Python step SDK and `wit/step.wit` of
//! this engine.
//!
//! componentize-py's builds are not reproducible (the same sources give a
//! different component each time), which would defeat the step cache and
//! replay. So builds are memoized by a digest of everything that goes into
//! one — the staged sources, the SDK, the WIT, the componentize-py version
//! and the build flags — and the same sources map to the same component
//! bytes for as long as the memo (`<dir>/target/sluice-python/`) is kept.
//!
//! Invariant: what is hashed is exactly what is staged and built; the
//! build sees no host site-packages (a clean environment and an empty
//! `VIRTUAL_ENV`) and no files of the step directory but its `.py`
//! modules.
//! Boundary: runs `python3 -m venv`, pip and componentize-py; runs no step.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

/// The componentize-py release every Python step is built with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The Python step SDK, staged next to every step's sources.
const SDK: &str = include_str!("../../guest-sdk/python/sluice_step/__init__.py");
/// The step world the component targets.
const STEP_WIT: &str = include_str!("../../wit/step.wit");
/// Format of the memo key; bump when what is hashed or how changes.
const BUILD_FORMAT: &str = "sluice-python-build/1";
/// Most `.py` files of one step, and their bytes.
const SOURCES_MAX: usize = 2048;
const SOURCE_BYTES_MAX: u64 = 64 << 20;
/// Deepest package nesting staged.
const DEPTH_MAX: usize = 16;
/// Module names the build itself provides.
const RESERVED_MODULES: &[&str] = &["sluice_step", "wit_world", "componentize_py_types"];

/// Builds every Python step directory in `dirs`; a directory that fails
/// maps to its error (naming it), the others still build.
pub fn build_python_steps(dirs: &[PathBuf]) -> BTreeMap<PathBuf, Result<PathBuf, String>> {
    let mut tool: Option<Result<PathBuf, String>> = None;
    dirs.iter()
        .map(|dir| {
            let result = build_one(dir, &mut tool)
                .map_err(|reason| format!("cannot build Python step {}: {reason}", dir.display()));
            (dir.clone(), result)
        })
        .collect()
}

fn build_one(dir: &Path, tool: &mut Option<Result<PathBuf, String>>) -> Result<PathBuf, String> {
    let module = module_name(dir)?;
    let sources = collect_sources(dir)?;
    if !sources
        .iter()
        .any(|(rel, _)| *rel == format!("{module}.py"))
    {
        return Err(format!(
            "[tool.sluice] module = \"{module}\", but there is no {module}.py"
        ));
    }
    let key = memo_key(&module, &sources);
    let memo_dir = dir.join("target").join("sluice-python");
    let memo = memo_dir.join(format!("{key}.wasm"));
    let recorded = memo_dir.join(format!("{key}.digest"));
    if memo_intact(&memo, &recorded) {
        tracing::debug!(step = %dir.display(), "python step memoized");
        return Ok(memo);
    }
    let componentize = tool.get_or_insert_with(componentize_py).clone()?;
    fs::create_dir_all(&memo_dir).map_err(|e| format!("{}: {e}", memo_dir.display()))?;
    static STAGE: AtomicU64 = AtomicU64::new(0);
    let stage = memo_dir.join(format!(
        "stage-{}-{}",
        std::process::id(),
        STAGE.fetch_add(1, Ordering::Relaxed)
    ));
    let result = stage_and_build(&componentize, &stage, &module, &sources, &memo, &recorded);
    let _ = fs::remove_dir_all(&stage);
    result.map(|()| memo)
}

/// `[tool.sluice] module` of the step's `pyproject.toml`.
fn module_name(dir: &Path) -> Result<String, String> {
    let path = dir.join("pyproject.toml");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let module = doc
        .get("tool")
        .and_then(|t| t.get("sluice"))
        .and_then(|t| t.get("module"))
        .ok_or_else(|| {
            format!(
                "{}: no [tool.sluice] module = \"…\" naming the module with the @step function",
                path.display()
            )
        })?
        .as_str()
        .ok_or_else(|| format!("{}: [tool.sluice] module must be a string", path.display()))?;
    let valid = !module.is_empty()
        && !module.starts_with(|c: char| c.is_ascii_digit())
        && module
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{}: [tool.sluice] module = {module:?} is not a Python module name",
            path.display()
        ));
    }
    if RESERVED_MODULES.contains(&module) {
        return Err(format!(
            "{}: [tool.sluice] module = \"{module}\" is a name the build provides; pick another",
            path.display()
        ));
    }
    Ok(module.to_string())
}

/// The step's `.py` files (relative path with `/`, bytes), sorted; `target`,
/// hidden directories and `__pycache__` are not sources.
fn collect_sources(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
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
                    || name == "__pycache__"
                    || (depth == 0 && name == "target");
                if !skip && depth < DEPTH_MAX {
                    stack.push((entry.path(), child, depth + 1));
                }
            } else if kind.is_file() && name.ends_with(".py") {
                let bytes = fs::read(entry.path())
                    .map_err(|e| format!("{}: {e}", entry.path().display()))?;
                total += bytes.len() as u64;
                out.push((child, bytes));
                if out.len() > SOURCES_MAX || total > SOURCE_BYTES_MAX {
                    return Err(format!(
                        "{}: more than {SOURCES_MAX} .py files or {} MiB of them",
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
fn memo_key(module: &str, sources: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for part in [BUILD_FORMAT, COMPONENTIZE_PY_VERSION, SDK, STEP_WIT, module] {
        field(part.as_bytes());
    }
    for (rel, bytes) in sources {
        field(rel.as_bytes());
        field(bytes);
    }
    hex::encode(h.finalize())
}

fn stage_and_build(
    componentize: &Path,
    stage: &Path,
    module: &str,
    sources: &[(String, Vec<u8>)],
    memo: &Path,
    recorded: &Path,
) -> Result<(), String> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| format!("{}: {e}", p.display())
    };
    let src = stage.join("src");
    for (rel, bytes) in sources {
        let path = src.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        fs::write(&path, bytes).map_err(io(&path))?;
    }
    let sdk = src.join("sluice_step");
    fs::create_dir_all(&sdk).map_err(io(&sdk))?;
    fs::write(sdk.join("__init__.py"), SDK).map_err(io(&sdk))?;
    let wit = stage.join("wit");
    fs::create_dir_all(&wit).map_err(io(&wit))?;
    fs::write(wit.join("step.wit"), STEP_WIT).map_err(io(&wit))?;
    let no_venv = stage.join("no-venv");
    fs::create_dir_all(&no_venv).map_err(io(&no_venv))?;
    let out = stage.join("step.wasm");
    let mut cmd = clean_command(componentize);
    cmd.current_dir(&src)
        .env("VIRTUAL_ENV", &no_venv)
        .arg("--quiet")
        .arg("-d")
        .arg(&wit)
        .args(["-w", "step", "componentize", module, "-p"])
        .arg(&src)
        .arg("-o")
        .arg(&out);
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", componentize.display()))?;
    if !output.status.success() {
        return Err(format!(
            "componentize-py failed ({}): {}",
            output.status,
            tail(&output.stderr)
        ));
    }
    // The component's digest first, then the component, each by rename:
    // a concurrent build of the same key leaves one of two equally valid
    // components, and a mismatch (a crash between the renames, a
    // concurrent build, an overwritten file) only means a rebuild.
    let bytes = fs::read(&out).map_err(io(&out))?;
    let digest_tmp = stage.join("step.digest");
    fs::write(&digest_tmp, crate::digest::Digest::of(&bytes).to_string())
        .map_err(io(&digest_tmp))?;
    fs::rename(&digest_tmp, recorded).map_err(io(recorded))?;
    fs::rename(&out, memo).map_err(io(memo))
}

/// A memoized component is used only if its bytes still hash to the
/// digest recorded when it was built (a truncated or replaced file is
/// rebuilt, never run as the build of these sources).
fn memo_intact(memo: &Path, recorded: &Path) -> bool {
    let (Ok(bytes), Ok(want)) = (fs::read(memo), fs::read_to_string(recorded)) else {
        return false;
    };
    let intact = crate::digest::Digest::of(&bytes).to_string() == want.trim();
    if !intact {
        tracing::warn!(memo = %memo.display(), "memoized python build does not match its digest; rebuilding");
    }
    intact
}

/// A command with none of the host's environment but `PATH` and `HOME`
/// (no `PYTHONPATH`, `PYTHONHOME`, `VIRTUAL_ENV`, pip configuration ...).
fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().stdin(Stdio::null());
    for var in ["PATH", "HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1");
    cmd
}

/// The componentize-py executable: `$SLUICE_COMPONENTIZE_PY` if set, else
/// the engine's own virtual environment (created on first use, under a
/// lock, in `$SLUICE_PYTHON_TOOLS` or `~/.cache/sluice`), checked to be
/// the pinned version.
fn componentize_py() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SLUICE_COMPONENTIZE_PY") {
        let path = PathBuf::from(path);
        check_version(&path)?;
        return Ok(path);
    }
    let root = std::env::var_os("SLUICE_PYTHON_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|c| c.join("sluice"))
        })
        .ok_or("Python steps need a place for componentize-py: set SLUICE_PYTHON_TOOLS or HOME")?;
    let venv = root.join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}"));
    let exe = venv.join("bin").join("componentize-py");
    fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let lock_path = root.join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}.lock"));
    let lock = fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if check_version(&exe).is_ok() {
        return Ok(exe);
    }
    let _ = fs::remove_dir_all(&venv);
    let python = std::env::var_os("SLUICE_PYTHON").unwrap_or_else(|| "python3".into());
    let made = clean_command(Path::new(&python))
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .map_err(|e| {
            format!(
                "Python steps need Python 3 with venv to install componentize-py: cannot run {}: {e}",
                Path::new(&python).display()
            )
        })?;
    if !made.status.success() {
        return Err(format!(
            "cannot create a virtual environment for componentize-py in {}: {}",
            venv.display(),
            tail(&made.stderr)
        ));
    }
    let pip = clean_command(&venv.join("bin").join("pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}"))
        .output()
        .map_err(|e| format!("cannot run pip in {}: {e}", venv.display()))?;
    if !pip.status.success() {
        return Err(format!(
            "pip could not install componentize-py {COMPONENTIZE_PY_VERSION}: {}",
            tail(&pip.stderr)
        ));
    }
    check_version(&exe)?;
    let _ = writeln!(&lock, "{COMPONENTIZE_PY_VERSION}");
    Ok(exe)
}

/// `componentize-py --version` names the pinned version.
fn check_version(exe: &Path) -> Result<(), String> {
    let out = clean_command(exe)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.trim() == format!("componentize-py {COMPONENTIZE_PY_VERSION}") {
        Ok(())
    } else {
        Err(format!(
            "{} is {:?}; Python steps are built with componentize-py {COMPONENTIZE_PY_VERSION}",
            exe.display(),
            text.trim()
        ))
    }
}

/// The last lines of a tool's stderr.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn the_module_is_named_and_checked() {
        let ok = step_dir(&[("pyproject.toml", "[tool.sluice]\nmodule = \"report\"\n")]);
        assert_eq!(module_name(ok.path()).unwrap(), "report");
        for (text, fragment) in [
            ("[project]\nname = \"x\"\n", "no [tool.sluice] module"),
            ("[tool.sluice]\nmodule = 3\n", "must be a string"),
            (
                "[tool.sluice]\nmodule = \"a-b\"\n",
                "is not a Python module name",
            ),
            (
                "[tool.sluice]\nmodule = \"../x\"\n",
                "is not a Python module name",
            ),
            (
                "[tool.sluice]\nmodule = \"sluice_step\"\n",
                "a name the build provides",
            ),
            ("[tool.sluice\n", "pyproject.toml"),
        ] {
            let dir = step_dir(&[("pyproject.toml", text)]);
            let err = module_name(dir.path()).unwrap_err();
            assert!(err.contains(fragment), "{text:?}: {err}");
        }
    }

    /// A memoized component is trusted only while its bytes hash to the
    /// digest recorded at build time.
    #[test]
    fn a_memo_that_no_longer_matches_its_digest_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let (memo, recorded) = (dir.path().join("k.wasm"), dir.path().join("k.digest"));
        assert!(!memo_intact(&memo, &recorded), "nothing built yet");
        fs::write(&memo, b"\0asm component").unwrap();
        assert!(!memo_intact(&memo, &recorded), "no digest recorded");
        let digest = crate::digest::Digest::of(b"\0asm component").to_string();
        fs::write(&recorded, &digest).unwrap();
        assert!(memo_intact(&memo, &recorded));
        fs::write(&memo, b"\0asm other code").unwrap();
        assert!(!memo_intact(&memo, &recorded), "replaced bytes");
    }

    /// The key covers every staged source by path and bytes and nothing
    /// else: caches, hidden dirs, the memo itself and non-Python files do
    /// not change it.
    #[test]
    fn the_memo_key_is_the_staged_sources_and_only_them() {
        let dir = step_dir(&[
            ("pyproject.toml", "[tool.sluice]\nmodule = \"app\"\n"),
            ("app.py", "x = 1\n"),
            ("lib/util.py", "y = 2\n"),
        ]);
        let key = |d: &Path| memo_key("app", &collect_sources(d).unwrap());
        let first = key(dir.path());
        let sources = collect_sources(dir.path()).unwrap();
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
        assert_ne!(memo_key("other", &sources), first);
    }
}
