//! Worker kinds: which command the engine starts for `worker = "KIND"`.
//!
//! Read from the `[workers.KIND]` tables of the engine config file (the
//! `workers` section of `crate::config::Config`, read once) over
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
//!
//! Invariant: every configured kind has a non-empty command, string args
//! and env, and a hello timeout within bounds; a problem is refused with
//! the file, line and column of the offending key or value.
//! Boundary: reads no file itself (the config file is read by `config`);
//! starts nothing (that is the pool's job).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::section::{Source, Value, integer};

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

// Config problems are the one config file's error type; `gpu` re-exports
// it under its old name.
pub use crate::section::ConfigError;

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

    /// The built-in kinds overlaid with the `[workers]` section of the
    /// config file (`value`, the table of kinds); relative command paths
    /// resolve against the file's directory.
    pub fn from_section(
        source: &Source,
        value: &Value<'_>,
        home: &Path,
    ) -> Result<WorkerConfig, ConfigError> {
        let mut config = WorkerConfig::builtin(home);
        let workers = value
            .get_ref()
            .as_table()
            .ok_or_else(|| source.type_error(value, "`workers`", "a table of [workers.KIND]"))?;
        for (key, value) in workers.iter() {
            let kind = key.get_ref().as_ref();
            if !crate::spec::is_kind_name(kind) {
                return Err(source.error(
                    &key.span(),
                    format!(
                        "[workers.{kind:?}]: a worker kind is 1-64 characters of [A-Za-z0-9_-]"
                    ),
                ));
            }
            let place = format!("[workers.{kind}]");
            let t = source.table(value, &place)?;
            source.check_keys(t, &place, KEYS)?;
            let command = match t.get("command") {
                Some(v) => match v.get_ref().as_str() {
                    Some(s) if !s.is_empty() => {
                        let p = PathBuf::from(s);
                        if p.components().count() > 1 && p.is_relative() {
                            source.dir().join(p)
                        } else {
                            p
                        }
                    }
                    _ => {
                        return Err(source.type_error(
                            v,
                            &format!("{place} command"),
                            "a non-empty string",
                        ));
                    }
                },
                None => {
                    return Err(source.error(&value.span(), format!("{place} has no `command`")));
                }
            };
            let args = match t.get("args") {
                None => Vec::new(),
                Some(v) => match v.get_ref().as_array() {
                    Some(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            source
                                .string(item, &format!("{place} args[{i}]"))
                                .map(str::to_string)
                        })
                        .collect::<Result<_, _>>()?,
                    None => {
                        return Err(source.type_error(
                            v,
                            &format!("{place} args"),
                            "an array of strings",
                        ));
                    }
                },
            };
            let env = match t.get("env") {
                None => BTreeMap::new(),
                Some(v) => match v.get_ref().as_table() {
                    Some(e) => e
                        .iter()
                        .map(|(k, v)| {
                            let name = k.get_ref().as_ref();
                            let value = source.string(v, &format!("{place} env `{name}`"))?;
                            if name.is_empty() || name.contains(['=', '\0']) {
                                return Err(source.error(
                                    &k.span(),
                                    format!("{place} env: invalid variable name {name:?}"),
                                ));
                            }
                            Ok((name.to_string(), value.to_string()))
                        })
                        .collect::<Result<_, _>>()?,
                    None => {
                        return Err(source.type_error(
                            v,
                            &format!("{place} env"),
                            "a table of strings",
                        ));
                    }
                },
            };
            let hello_timeout = match t.get("hello_timeout_s") {
                None => HELLO_TIMEOUT_DEFAULT,
                Some(v) => match integer(v) {
                    Some(n) if (1..=HELLO_TIMEOUT_S_CEILING as i64).contains(&n) => {
                        Duration::from_secs(n as u64)
                    }
                    _ => {
                        return Err(source.error(
                            &v.span(),
                            format!(
                                "{place} hello_timeout_s must be an integer between 1 and {HELLO_TIMEOUT_S_CEILING}, found {}",
                                v.get_ref().as_integer().map_or_else(
                                    || v.get_ref().type_str().to_string(),
                                    |i| i.as_str().to_string()
                                )
                            ),
                        ));
                    }
                },
            };
            config.kinds.insert(
                kind.to_string(),
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

    /// The `[workers]` section of `text`, read as the file `file`.
    fn workers(text: &str, file: &str) -> Result<WorkerConfig, ConfigError> {
        let root = toml::de::DeTable::parse(text).unwrap();
        let source = Source::new(Path::new(file), text);
        WorkerConfig::from_section(
            &source,
            root.get_ref().get("workers").unwrap(),
            Path::new("/h"),
        )
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
        let c = workers(
            r#"
                [workers.fake]
                command = "bin/fake.sh"
                args = ["--fast"]
                env = { A = "1" }
                hello_timeout_s = 5
                [workers.torch]
                command = "/opt/py"
                "#,
            "/etc/sluice/config.toml",
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
    fn bad_worker_tables_name_the_position_table_and_key() {
        let cases = [
            (
                "[workers.w]\ncomand = \"x\"",
                "2:1: unknown key `comand` in [workers.w]; expected one of: command, args, env, hello_timeout_s",
            ),
            (
                "[workers.w]\nargs = []",
                "1:1: [workers.w] has no `command`",
            ),
            (
                "[workers.w]\ncommand = 3",
                "2:11: [workers.w] command must be a non-empty string, found integer",
            ),
            (
                "[workers.w]\ncommand = \"x\"\nargs = [1]",
                "3:9: [workers.w] args[0] must be a string, found integer",
            ),
            (
                "[workers.w]\ncommand = \"x\"\nenv = { A = 1 }",
                "3:13: [workers.w] env `A` must be a string, found integer",
            ),
            (
                "[workers.w]\ncommand = \"x\"\nhello_timeout_s = 0",
                "3:19: [workers.w] hello_timeout_s must be an integer between 1 and 3600, found 0",
            ),
            (
                "workers = 3",
                "1:11: `workers` must be a table of [workers.KIND], found integer",
            ),
            (
                "[workers.\"a/b\"]\ncommand = \"x\"",
                "1:10: [workers.\"a/b\"]: a worker kind is 1-64 characters of [A-Za-z0-9_-]",
            ),
        ];
        for (text, expected) in cases {
            let e = workers(text, "c.toml").unwrap_err();
            assert_eq!(e.to_string(), format!("c.toml:{expected}"), "{text}");
        }
    }
}
