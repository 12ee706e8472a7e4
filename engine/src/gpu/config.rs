//! Worker kinds: which command the engine starts for `worker = "KIND"`.
//!
//! Read from the `[workers.KIND]` tables of the engine config file
//! (`--config FILE`, default `<home>/config.toml` when it exists) over
//! built-in defaults for the reference workers: `cpu` (this binary, `sluice
//! worker cpu`) and `torch` (`python3 <home>/workers/torch/worker.py`, the
//! script embedded in the binary and written there when it differs).
//!
//! ```toml
//! [workers.torch]
//! command = "/opt/venv/bin/python"
//! args = ["/opt/sluice/worker.py"]
//! env = { PYTORCH_CUDA_ALLOC_CONF = "expandable_segments:True" }
//! hello_timeout_s = 120
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Keys accepted in a `[workers.KIND]` table.
pub const KEYS: &[&str] = &["command", "args", "env", "hello_timeout_s"];

/// How long a worker may take to say `hello` by default (importing PyTorch
/// and initialising CUDA takes seconds).
pub const HELLO_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// The longest `hello_timeout_s` accepted.
pub const HELLO_TIMEOUT_S_CEILING: u64 = 3600;

/// The reference PyTorch worker, embedded so a release binary is enough.
pub const TORCH_WORKER_PY: &str = include_str!("../../../workers/torch/worker.py");

/// A file the engine writes before starting a worker (only if its bytes
/// differ from what is there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Materialize {
    /// Where.
    pub path: PathBuf,
    /// What.
    pub contents: &'static str,
}

/// How to start one worker kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The program: a path (relative ones resolve against the config file's
    /// directory) or a name looked up on `PATH`.
    pub command: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables (the engine's own protocol variables win).
    pub env: BTreeMap<String, String>,
    /// Most time between start and `hello`.
    pub hello_timeout: Duration,
    /// A built-in script to write before starting.
    pub materialize: Option<Materialize>,
}

/// Every worker kind the engine can start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    kinds: BTreeMap<String, WorkerCommand>,
}

/// A problem in the `[workers]` part of a config file.
#[derive(Debug, thiserror::Error)]
#[error("config {}: {message}", file.display())]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// What is wrong, naming the table and key.
    pub message: String,
}

impl WorkerConfig {
    /// The built-in kinds: `cpu` (this executable, `worker cpu`) and `torch`.
    pub fn builtin(home: &Path) -> WorkerConfig {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("sluice"));
        let script = home.join("workers").join("torch").join("worker.py");
        let mut kinds = BTreeMap::new();
        kinds.insert(
            "cpu".to_string(),
            WorkerCommand {
                command: exe,
                args: vec!["worker".into(), "cpu".into()],
                env: BTreeMap::new(),
                hello_timeout: HELLO_TIMEOUT_DEFAULT,
                materialize: None,
            },
        );
        kinds.insert(
            "torch".to_string(),
            WorkerCommand {
                command: PathBuf::from("python3"),
                args: vec![script.display().to_string()],
                env: BTreeMap::new(),
                hello_timeout: HELLO_TIMEOUT_DEFAULT,
                materialize: Some(Materialize {
                    path: script,
                    contents: TORCH_WORKER_PY,
                }),
            },
        );
        WorkerConfig { kinds }
    }

    /// The built-in kinds overlaid with the `[workers.KIND]` tables of
    /// `table` (other top-level keys belong to other modules and are left
    /// alone). `file` names the source in messages and anchors relative
    /// command paths.
    pub fn from_table(
        table: &toml::Table,
        file: &Path,
        home: &Path,
    ) -> Result<WorkerConfig, ConfigError> {
        let err = |message: String| ConfigError {
            file: file.to_path_buf(),
            message,
        };
        let mut config = WorkerConfig::builtin(home);
        let Some(workers) = table.get("workers") else {
            return Ok(config);
        };
        let toml::Value::Table(workers) = workers else {
            return Err(err(format!(
                "`workers` must be a table of [workers.KIND], found {}",
                workers.type_str()
            )));
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        for (kind, value) in workers {
            if !crate::spec::is_kind_name(kind) {
                return Err(err(format!(
                    "[workers.{kind:?}]: a worker kind is 1-64 characters of [A-Za-z0-9_-]"
                )));
            }
            let toml::Value::Table(t) = value else {
                return Err(err(format!(
                    "[workers.{kind}] must be a table, found {}",
                    value.type_str()
                )));
            };
            let place = format!("[workers.{kind}]");
            for key in t.keys() {
                if !KEYS.contains(&key.as_str()) {
                    return Err(err(format!(
                        "{place}: unknown key `{key}`; expected one of: {}",
                        KEYS.join(", ")
                    )));
                }
            }
            let command = match t.get("command") {
                Some(toml::Value::String(s)) if !s.is_empty() => {
                    let p = PathBuf::from(s);
                    if p.components().count() > 1 && p.is_relative() {
                        dir.join(p)
                    } else {
                        p
                    }
                }
                Some(other) => {
                    return Err(err(format!(
                        "{place} command must be a non-empty string, found {}",
                        other.type_str()
                    )));
                }
                None => return Err(err(format!("{place} has no `command`"))),
            };
            let args = match t.get("args") {
                None => Vec::new(),
                Some(toml::Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        toml::Value::String(s) => Ok(s.clone()),
                        other => Err(err(format!(
                            "{place} args[{i}] must be a string, found {}",
                            other.type_str()
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(err(format!(
                        "{place} args must be an array of strings, found {}",
                        other.type_str()
                    )));
                }
            };
            let env = match t.get("env") {
                None => BTreeMap::new(),
                Some(toml::Value::Table(e)) => e
                    .iter()
                    .map(|(k, v)| match v {
                        toml::Value::String(s) if !k.is_empty() && !k.contains(['=', '\0']) => {
                            Ok((k.clone(), s.clone()))
                        }
                        toml::Value::String(_) => {
                            Err(err(format!("{place} env: invalid variable name {k:?}")))
                        }
                        other => Err(err(format!(
                            "{place} env `{k}` must be a string, found {}",
                            other.type_str()
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(err(format!(
                        "{place} env must be a table of strings, found {}",
                        other.type_str()
                    )));
                }
            };
            let hello_timeout = match t.get("hello_timeout_s") {
                None => HELLO_TIMEOUT_DEFAULT,
                Some(toml::Value::Integer(n))
                    if (1..=HELLO_TIMEOUT_S_CEILING as i64).contains(n) =>
                {
                    Duration::from_secs(*n as u64)
                }
                Some(other) => {
                    return Err(err(format!(
                        "{place} hello_timeout_s must be an integer between 1 and {HELLO_TIMEOUT_S_CEILING}, found {other}"
                    )));
                }
            };
            config.kinds.insert(
                kind.clone(),
                WorkerCommand {
                    command,
                    args,
                    env,
                    hello_timeout,
                    materialize: None,
                },
            );
        }
        Ok(config)
    }

    /// Reads `file`, or `<home>/config.toml` when no file is given and it
    /// exists; the built-in kinds otherwise.
    pub fn load(file: Option<&Path>, home: &Path) -> Result<WorkerConfig, ConfigError> {
        let default = home.join("config.toml");
        let path = match file {
            Some(f) => f.to_path_buf(),
            None if default.is_file() => default,
            None => return Ok(WorkerConfig::builtin(home)),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            file: path.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError {
            file: path.clone(),
            message: format!("invalid TOML: {}", e.message().trim()),
        })?;
        WorkerConfig::from_table(&table, &path, home)
    }

    /// How to start `kind`.
    pub fn get(&self, kind: &str) -> Option<&WorkerCommand> {
        self.kinds.get(kind)
    }

    /// The configured kinds, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn builtins_start_this_binary_and_the_embedded_torch_script() {
        let c = WorkerConfig::builtin(Path::new("/h"));
        let cpu = c.get("cpu").unwrap();
        assert_eq!(cpu.args, ["worker", "cpu"]);
        assert_eq!(cpu.command, std::env::current_exe().unwrap());
        let torch = c.get("torch").unwrap();
        assert_eq!(torch.command, PathBuf::from("python3"));
        assert_eq!(torch.args, ["/h/workers/torch/worker.py"]);
        let m = torch.materialize.as_ref().unwrap();
        assert_eq!(m.path, PathBuf::from("/h/workers/torch/worker.py"));
        assert!(m.contents.contains("\"hello\""));
    }

    #[test]
    fn worker_tables_override_and_add_kinds() {
        let c = WorkerConfig::from_table(
            &table(
                r#"
                [hooks.x]
                pipeline = "p.toml"
                [workers.fake]
                command = "bin/fake.sh"
                args = ["--fast"]
                env = { A = "1" }
                hello_timeout_s = 5
                [workers.torch]
                command = "/opt/py"
                "#,
            ),
            Path::new("/etc/sluice/config.toml"),
            Path::new("/h"),
        )
        .unwrap();
        let fake = c.get("fake").unwrap();
        assert_eq!(fake.command, PathBuf::from("/etc/sluice/bin/fake.sh"));
        assert_eq!(fake.args, ["--fast"]);
        assert_eq!(fake.env["A"], "1");
        assert_eq!(fake.hello_timeout, Duration::from_secs(5));
        assert_eq!(c.get("torch").unwrap().command, PathBuf::from("/opt/py"));
        assert_eq!(c.get("torch").unwrap().materialize, None);
        assert!(c.get("cpu").is_some());
        assert_eq!(c.kinds().collect::<Vec<_>>(), ["cpu", "fake", "torch"]);
    }

    #[test]
    fn bad_worker_tables_name_the_table_and_key() {
        let cases = [
            (
                "[workers.w]\ncomand = \"x\"",
                "[workers.w]: unknown key `comand`; expected one of: command, args, env, hello_timeout_s",
            ),
            ("[workers.w]\nargs = []", "[workers.w] has no `command`"),
            (
                "[workers.w]\ncommand = 3",
                "[workers.w] command must be a non-empty string, found integer",
            ),
            (
                "[workers.w]\ncommand = \"x\"\nargs = [1]",
                "[workers.w] args[0] must be a string, found integer",
            ),
            (
                "[workers.w]\ncommand = \"x\"\nenv = { A = 1 }",
                "[workers.w] env `A` must be a string, found integer",
            ),
            (
                "[workers.w]\ncommand = \"x\"\nhello_timeout_s = 0",
                "[workers.w] hello_timeout_s must be an integer between 1 and 3600, found 0",
            ),
            (
                "workers = 3",
                "`workers` must be a table of [workers.KIND], found integer",
            ),
            (
                "[workers.\"a/b\"]\ncommand = \"x\"",
                "[workers.\"a/b\"]: a worker kind is 1-64 characters of [A-Za-z0-9_-]",
            ),
        ];
        for (text, expected) in cases {
            let e = WorkerConfig::from_table(&table(text), Path::new("c.toml"), Path::new("/h"))
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("config c.toml: {expected}"),
                "{text}"
            );
        }
    }

    #[test]
    fn load_reads_the_home_config_only_when_present() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            WorkerConfig::load(None, dir.path()).unwrap(),
            WorkerConfig::builtin(dir.path())
        );
        std::fs::write(
            dir.path().join("config.toml"),
            "[workers.w]\ncommand = \"/bin/true\"\n",
        )
        .unwrap();
        assert!(
            WorkerConfig::load(None, dir.path())
                .unwrap()
                .get("w")
                .is_some()
        );
        let e = WorkerConfig::load(Some(&dir.path().join("nope.toml")), dir.path()).unwrap_err();
        assert!(e.message.starts_with("cannot read: "), "{e}");
    }
}
