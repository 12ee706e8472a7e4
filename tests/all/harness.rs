//! Shared harness: builds components once, runs the CLI in a temp home.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Step crates the tests use directly as `.wasm` components.
const CRATES: &[&str] = &[
    "examples/steps/append",
    "tests/components/hostile",
    "tests/components/gpu-abuse",
    "tests/components/observe",
    "tests/components/table-io",
];

/// Builds the test components once per test process (through the engine's
/// own builder, so `sluice run` on the crate directories is then a no-op).
pub fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let dirs: Vec<PathBuf> = CRATES.iter().map(|c| repo().join(c)).collect();
        let results = sluice_engine::build::build_crates(&dirs);
        results
            .into_iter()
            .map(|(dir, r)| {
                let wasm = r.unwrap_or_else(|e| panic!("building test components: {e}"));
                (dir.file_name().unwrap().to_str().unwrap().to_string(), wasm)
            })
            .collect()
    });
    built
        .get(name)
        .unwrap_or_else(|| panic!("no test component `{name}`"))
        .clone()
}

/// A compile cache shared by all tests (entries are keyed by component
/// digest and engine hash, so sharing is safe) to avoid recompiling the
/// same components in every temp home.
pub fn compile_cache() -> PathBuf {
    repo().join("target").join("sluice-test-compile-cache")
}

/// A temp working directory with its own home.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

/// The result of one CLI invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout parsed as the one JSON document `--json` promises.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// What a failed `--json` run says about itself, short enough to survive
    /// a CI log excerpt: each failed step's error, then stderr's tail.
    pub fn failure(&self) -> String {
        let mut out = format!("exit code {}\n", self.code);
        if let Ok(v) = serde_json::from_str::<Value>(&self.stdout) {
            for s in v["steps"].as_array().into_iter().flatten() {
                if !matches!(s["status"].as_str(), Some("succeeded" | "cached")) {
                    out += &format!(
                        "step {} {} (attempts {}, executor {}): {}\n",
                        s["name"], s["status"], s["attempts"], s["executor"], s["error"]
                    );
                }
            }
        } else {
            let head: String = self.stdout.chars().take(2000).collect();
            out += &format!("stdout: {head}\n");
        }
        let tail: String = {
            let chars: Vec<char> = self.stderr.chars().collect();
            chars[chars.len().saturating_sub(4000)..].iter().collect()
        };
        out + "stderr (tail): " + &tail
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> PathBuf {
        self.path().join("home")
    }

    /// Writes a file under the temp dir.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `sluice ARGS --home <home>` in the temp dir.
    pub fn sluice(&self, args: &[&str]) -> Run {
        let home = self.home();
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--home", home.to_str().unwrap()]);
        self.sluice_raw(&full)
    }

    /// `sluice ARGS` exactly as given.
    pub fn sluice_raw(&self, args: &[&str]) -> Run {
        self.sluice_env(args, &[])
    }

    /// `sluice ARGS` exactly as given, with extra environment variables.
    pub fn sluice_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out: Output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .current_dir(self.path())
            .env_remove("SLUICE_HOME")
            .env_remove("SLUICE_CONFIG")
            .env("SLUICE_COMPILE_CACHE", compile_cache())
            .envs(env.iter().copied())
            .output()
            .expect("run sluice");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `sluice run SPEC --json` plus extra args; returns the run and its JSON.
    pub fn run_json(&self, spec: &Path, extra: &[&str]) -> (Run, Value) {
        let mut args = vec!["run", spec.to_str().unwrap(), "--json"];
        args.extend(extra);
        let run = self.sluice(&args);
        let json = run.json();
        (run, json)
    }
}

/// The step named `name` in a run's JSON.
pub fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step `{name}` in {run:#}"))
}

/// TOML string literal for a path.
pub fn toml_path(p: &Path) -> String {
    format!("{:?}", p.to_str().unwrap())
}

/// A run with a step `spin` (an endless loop, `fuel = 50000000`) and a
/// step `hoard` (endless allocation, `memory_mib = 48`): each fails with
/// class `limit` and the exact message, and the hoard's peak stays under
/// its limit (the growth past it traps before the guest can see it).
pub fn assert_spin_and_hoard_limited(json: &Value) {
    let spin = step(json, "spin");
    assert_eq!(spin["error"]["class"], "limit", "{spin:#}");
    assert_eq!(
        spin["error"]["message"], "limit: fuel: step `spin` used all 50000000 units of fuel",
        "{spin:#}"
    );
    let hoard = step(json, "hoard");
    assert_eq!(hoard["error"]["class"], "limit", "{hoard:#}");
    let message = hoard["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("limit: memory: linear memory would grow to ")
            && message.ends_with(" bytes; the step's limit is 50331648 bytes"),
        "{message}"
    );
    let peak = hoard["memory_peak_bytes"].as_u64().unwrap();
    assert!(peak <= 48 << 20 && peak > 24 << 20, "peak {peak}");
}

/// A pinned PyPI tool in its own venv `target/<name>`, installed once (under
/// a lock) unless `bin/<binary>` is already there; returns the venv. The
/// same commands `.ci/run` uses, so a local `cargo test` needs nothing else.
pub fn pinned_venv(name: &str, requirement: &str, binary: &str) -> PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let venv = repo().join("target").join(name);
    if venv.join("bin").join(binary).is_file() {
        return venv;
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap()
        .success()
        && Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", requirement])
            .status()
            .unwrap()
            .success();
    assert!(
        ok && venv.join("bin").join(binary).is_file(),
        "installing {requirement} failed"
    );
    venv
}
