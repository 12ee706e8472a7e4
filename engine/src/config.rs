//! The engine config file (`--config FILE`, default `<home>/config.toml`
//! when it exists), read once where a command starts: one [`Config`] with
//! one section per concern, each section's type owned and validated by its
//! module.
//!
//! | table          | type                                   | owner        |
//! |----------------|----------------------------------------|--------------|
//! | `[server]`     | [`ServerConfig`]                       | `config`     |
//! | `[[tokens]]`   | [`Token`]                              | `config`     |
//! | `[hooks.NAME]` | [`Hook`](crate::hook::Hook)            | `hook`       |
//! | `[workers.KIND]` | [`WorkerConfig`](crate::gpu::WorkerConfig) | `gpu::config` |
//! | `[executor]`   | [`ExecutorKind`](crate::spec::ExecutorKind) | `spec`   |
//! | `[store]`      | a URL ([`Remote`](crate::remote::Remote))   | `remote` |
//! | `[kubernetes]` | [`KubernetesSettings`](crate::executor::KubernetesSettings) | `executor` |
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:7878"
//! root = "."                      # request paths resolve against it
//! allow_paths = ["examples"]      # specs, sources and components must be under these
//!                                 # (never the home or this file, whatever is listed)
//! max_body_bytes = 16777216
//! max_concurrent_runs = 4         # more wait as `queued`
//! max_running_steps = 4           # attempts in flight across all runs
//! rate_limit_per_minute = 600     # per token
//! scheduled = ["examples/pipelines/nightly.toml"]   # specs with a [schedule]
//! header_read_timeout_ms = 10000  # slow clients are dropped
//! max_connections = 1024
//! max_connections_per_peer = 64   # per client IP, so one client cannot take them all
//! body_read_timeout_ms = 30000    # a whole request body must arrive within this
//! body_idle_timeout_ms = 10000    # ... with no gap between bytes longer than this
//! auth_failures_per_minute = 30   # failed authentications per client IP, then 429
//! max_concurrent_uploads = 2      # component uploads read and compiled at once
//!
//! [[tokens]]
//! token_env = "SLUICE_TOKEN_ALICE"   # or: token = "..." (warned about at startup)
//! tenant = "alice"
//! role = "runner"                    # viewer | runner | admin
//! ```
//!
//! Invariant: a loaded [`Config`] has every section validated; an unknown
//! table, an unknown key in any section, or a bad value is a
//! [`ConfigError`] naming the file, the line and column and the key. A
//! token is never logged or echoed; errors name the entry.
//! Boundary: reads the config file and the environment variables it names
//! (`token_env`, `secret_env`); starts nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::DeTable;

use crate::gpu::WorkerConfig;
use crate::hook::Hook;
use crate::section::{Source, Value};

pub use crate::section::ConfigError;

/// The top-level tables of the config file.
pub const SECTIONS: &[&str] = &[
    "executor",
    "hooks",
    "kubernetes",
    "server",
    "store",
    "tokens",
    "workers",
];

/// Keys accepted in `[server]` (the fields of [`ServerConfig`]).
pub const SERVER_KEYS: &[&str] = &[
    "listen",
    "root",
    "allow_paths",
    "max_body_bytes",
    "max_artifact_bytes",
    "max_concurrent_runs",
    "max_running_steps",
    "jobs_per_run",
    "rate_limit_per_minute",
    "scheduled",
    "header_read_timeout_ms",
    "max_connections",
    "max_connections_per_peer",
    "body_read_timeout_ms",
    "body_idle_timeout_ms",
    "auth_failures_per_minute",
    "max_concurrent_uploads",
];

/// Keys accepted in a `[[tokens]]` entry.
pub const TOKEN_KEYS: &[&str] = &["token", "token_env", "tenant", "role"];

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads runs, logs and artifacts of its tenant.
    Viewer,
    /// Also submits and cancels runs and uploads components.
    Runner,
    /// Also reads the server's configuration.
    Admin,
}

impl Role {
    /// The role's name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Runner => "runner",
            Role::Admin => "admin",
        }
    }
}

/// One bearer token.
#[derive(Clone)]
pub struct Token {
    /// The secret.
    pub secret: String,
    /// The tenant its runs belong to.
    pub tenant: String,
    /// What it may do.
    pub role: Role,
    /// Its position in the file (`tokens[2]`), for messages.
    pub label: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("tenant", &self.tenant)
            .field("role", &self.role)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: String,
    /// Directory request paths resolve against (relative to the config
    /// file; default: the working directory).
    pub root: Option<PathBuf>,
    /// Directories (relative to `root`) that specs, sources and components
    /// of submitted, scheduled and hooked runs must be inside. The default
    /// `["."]` stays: the engine home and the config file are excluded by
    /// the path policy even when an allowed directory contains them.
    pub allow_paths: Vec<PathBuf>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest artifact served.
    pub max_artifact_bytes: u64,
    /// Runs executing at once; more wait as `queued`.
    pub max_concurrent_runs: usize,
    /// Attempts in flight across all runs.
    pub max_running_steps: usize,
    /// Steps in flight per run.
    pub jobs_per_run: Option<usize>,
    /// Requests per minute per token (or per client without auth).
    pub rate_limit_per_minute: u32,
    /// Specs whose `[schedule]` the service honours.
    pub scheduled: Vec<PathBuf>,
    /// A connection must send its request head within this (slow clients
    /// are dropped).
    pub header_read_timeout_ms: u64,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
    /// Open connections per client IP at most; one more is answered `429`
    /// and closed, so a single client cannot hold every connection.
    pub max_connections_per_peer: usize,
    /// A request body must be read completely within this (slow bodies are
    /// answered `408` and the connection closed).
    pub body_read_timeout_ms: u64,
    /// Longest gap between two pieces of a request body.
    pub body_idle_timeout_ms: u64,
    /// Failed authentications (`401`) per client IP and minute; past it the
    /// client gets `429` with `Retry-After` on every route.
    pub auth_failures_per_minute: u32,
    /// Component uploads read and compiled at once; more get `503 busy`.
    pub max_concurrent_uploads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7878".to_string(),
            root: None,
            allow_paths: vec![PathBuf::from(".")],
            max_body_bytes: 16 << 20,
            max_artifact_bytes: 1 << 30,
            max_concurrent_runs: 4,
            max_running_steps: std::thread::available_parallelism().map_or(2, |n| n.get()),
            jobs_per_run: None,
            rate_limit_per_minute: 6000,
            scheduled: Vec::new(),
            header_read_timeout_ms: 10_000,
            max_connections: 1024,
            // A browser opens ~6 connections plus one per event stream; 64
            // leaves room for a CI runner behind one address while 16
            // clients still cannot exhaust `max_connections`.
            max_connections_per_peer: 64,
            // A 16 MiB body at a slow 1 MiB/s fits; a client trickling a
            // byte now and then is cut off after at most 30 s.
            body_read_timeout_ms: 30_000,
            body_idle_timeout_ms: 10_000,
            // Tokens are at least 16 characters: 30 guesses a minute make
            // guessing hopeless while forgiving a misconfigured client.
            auth_failures_per_minute: 30,
            // Compiling a component is CPU- and memory-heavy; two at once
            // keep uploads from starving runs on a small machine.
            max_concurrent_uploads: 2,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    token: Option<String>,
    token_env: Option<String>,
    tenant: String,
    role: Role,
}

/// The config file, every section validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[[tokens]]`.
    pub tokens: Vec<Token>,
    /// `[hooks.NAME]`, by name.
    pub hooks: BTreeMap<String, Hook>,
    /// The built-in worker kinds overlaid with `[workers.KIND]`.
    pub workers: WorkerConfig,
    /// `[executor] kind`: where steps execute unless the command line or
    /// the spec says otherwise.
    pub executor: Option<crate::spec::ExecutorKind>,
    /// `[store] url`: the shared artifact store.
    pub store: Option<String>,
    /// `[kubernetes]`: how the `kubernetes` executor makes its Jobs.
    pub kubernetes: Option<crate::executor::KubernetesSettings>,
    /// Risky but valid settings, each naming its entry (printed at startup).
    pub warnings: Vec<String>,
}

impl Config {
    /// The defaults, as without a config file (`home` anchors the built-in
    /// workers).
    pub fn defaults(home: &Path) -> Config {
        Config {
            path: None,
            server: ServerConfig::default(),
            tokens: Vec::new(),
            hooks: BTreeMap::new(),
            workers: WorkerConfig::builtin(home),
            executor: None,
            store: None,
            kubernetes: None,
            warnings: Vec::new(),
        }
    }

    /// Reads `explicit`, or `<home>/config.toml` when it exists, or the
    /// defaults.
    pub fn load(explicit: Option<&Path>, home: &Path) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = home.join("config.toml");
                if !p.is_file() {
                    return Ok(Config::defaults(home));
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            path: path.clone(),
            at: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&path, &text, home)
    }

    /// Parses `text` as the file at `path` (relative paths in it resolve
    /// against its directory). Every top-level table goes to its owner;
    /// any other is refused.
    pub fn parse(path: &Path, text: &str, home: &Path) -> Result<Config, ConfigError> {
        let source = Source::new(path, text);
        let root = DeTable::parse(text).map_err(|e| match e.span() {
            Some(span) => source.error(&span, format!("invalid TOML: {}", e.message().trim())),
            None => source.file_error(format!("invalid TOML: {}", e.message().trim())),
        })?;
        let mut config = Config::defaults(home);
        config.path = Some(path.to_path_buf());
        for (key, value) in root.get_ref().iter() {
            match key.get_ref().as_ref() {
                "server" => config.server = server(&source, value)?,
                "tokens" => (config.tokens, config.warnings) = tokens(&source, value)?,
                "hooks" => config.hooks = crate::hook::from_section(&source, value)?,
                "workers" => {
                    config.workers = WorkerConfig::from_section(&source, value, home)?;
                }
                "executor" => config.executor = Some(executor(&source, value)?),
                "store" => config.store = Some(store(&source, value)?),
                "kubernetes" => config.kubernetes = Some(kubernetes(&source, value)?),
                other => {
                    let at = header_start(text, key.span().start);
                    let kind = if value.get_ref().is_table() {
                        "table"
                    } else {
                        "key"
                    };
                    return Err(source.error(
                        &(at..at),
                        format!(
                            "unknown {kind} `{other}`; expected one of: {}",
                            SECTIONS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(config)
    }
}

/// Where the table header holding the key at `key_start` opens (its
/// `[`), or the key itself outside a header: `[sever]` and `[sever.x]`
/// are reported at column 1.
fn header_start(text: &str, key_start: usize) -> usize {
    let before = text
        .get(..key_start)
        .unwrap_or("")
        .trim_end_matches([' ', '\t']);
    if before.ends_with('[') {
        before.trim_end_matches('[').len()
    } else {
        key_start
    }
}

/// A table of exactly one string key, `[section] key = "..."`: the value
/// and its span.
fn only_string(
    source: &Source,
    value: &Value<'_>,
    section: &str,
    key: &str,
) -> Result<(String, std::ops::Range<usize>), ConfigError> {
    let place = format!("[{section}]");
    let table = source.table(value, &place)?;
    source.check_keys(table, &place, &[key])?;
    let Some(v) = table.get(key) else {
        return Err(source.error(&value.span(), format!("{place}: `{key}` is missing")));
    };
    let text = v
        .get_ref()
        .as_str()
        .ok_or_else(|| source.type_error(v, &format!("{place} {key}"), "a string"))?;
    Ok((text.to_string(), v.span()))
}

/// `[store]`: `url = "s3://bucket/prefix" | "file:///dir"` (opened by
/// [`open_remote`] when used).
fn store(source: &Source, value: &Value<'_>) -> Result<String, ConfigError> {
    Ok(only_string(source, value, "store", "url")?.0)
}

/// Opens the shared store `url` names, if any.
pub fn open_remote(
    url: Option<&str>,
) -> anyhow::Result<Option<std::sync::Arc<crate::remote::Remote>>> {
    match url {
        None => Ok(None),
        Some(url) => Ok(Some(std::sync::Arc::new(crate::remote::Remote::open(url)?))),
    }
}

/// `[kubernetes]`: known keys, typed values (`image` required).
fn kubernetes(
    source: &Source,
    value: &Value<'_>,
) -> Result<crate::executor::KubernetesSettings, ConfigError> {
    let table = source.table(value, "[kubernetes]")?;
    source.check_keys(
        table,
        "[kubernetes]",
        crate::executor::kubernetes::SETTINGS_KEYS,
    )?;
    let settings: crate::executor::KubernetesSettings =
        source.deserialize(value, "[kubernetes]")?;
    for (field, v) in [
        (
            "ttl_seconds_after_finished",
            settings.ttl_seconds_after_finished,
        ),
        ("backoff_limit", settings.backoff_limit),
    ] {
        if v < 0 {
            let span = table.get(field).map_or(value.span(), |v| v.span());
            return Err(source.error(&span, format!("[kubernetes] {field} must not be negative")));
        }
    }
    if settings.image.trim().is_empty() {
        let span = table.get("image").map_or(value.span(), |v| v.span());
        return Err(source.error(&span, "[kubernetes] image must not be empty"));
    }
    Ok(settings)
}

/// `[executor]`: `kind = "local" | "process" | "ray" | "kubernetes"`.
fn executor(source: &Source, value: &Value<'_>) -> Result<crate::spec::ExecutorKind, ConfigError> {
    let (name, span) = only_string(source, value, "executor", "kind")?;
    name.parse()
        .map_err(|e: String| source.error(&span, format!("[executor] kind: {e}")))
}

/// `[server]`: known keys, typed values, limits at least 1; `root`
/// resolved against the config file's directory.
fn server(source: &Source, value: &Value<'_>) -> Result<ServerConfig, ConfigError> {
    let table = source.table(value, "[server]")?;
    source.check_keys(table, "[server]", SERVER_KEYS)?;
    let mut server: ServerConfig = source.deserialize(value, "[server]")?;
    server.root = server.root.map(|r| source.dir().join(r));
    for (field, v) in [
        ("max_concurrent_runs", server.max_concurrent_runs),
        ("max_running_steps", server.max_running_steps),
        ("max_body_bytes", server.max_body_bytes),
        ("max_connections", server.max_connections),
        ("max_connections_per_peer", server.max_connections_per_peer),
        ("max_concurrent_uploads", server.max_concurrent_uploads),
        ("body_read_timeout_ms", server.body_read_timeout_ms as usize),
        ("body_idle_timeout_ms", server.body_idle_timeout_ms as usize),
        (
            "auth_failures_per_minute",
            server.auth_failures_per_minute as usize,
        ),
        (
            "header_read_timeout_ms",
            server.header_read_timeout_ms as usize,
        ),
    ] {
        if v == 0 {
            // Defaults are at least 1, so a zero was written.
            let span = table.get(field).map_or(value.span(), |v| v.span());
            return Err(source.error(&span, format!("[server] {field} must be at least 1")));
        }
    }
    Ok(server)
}

/// `[[tokens]]`: each entry's secret resolved (`token_env` read now), its
/// tenant checked, no secret twice. Returns the tokens and the warnings.
fn tokens(source: &Source, value: &Value<'_>) -> Result<(Vec<Token>, Vec<String>), ConfigError> {
    let items = value
        .get_ref()
        .as_array()
        .ok_or_else(|| source.type_error(value, "`tokens`", "an array of [[tokens]] tables"))?;
    let mut tokens = Vec::new();
    let mut warnings = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let label = format!("tokens[{i}]");
        let table = source.table(item, &label)?;
        source.check_keys(table, &label, TOKEN_KEYS)?;
        let t: RawToken = source.deserialize(item, &label)?;
        let at = |key: &str| table.get(key).map_or(item.span(), |v| v.span());
        let secret = match (t.token, t.token_env) {
            (Some(s), None) => {
                // Whoever can read the file (a backup, a pipeline that
                // names it) holds the token; the environment is safer.
                warnings.push(format!(
                    "{label} (tenant {}): the token is written in the config file; prefer `token_env`",
                    t.tenant
                ));
                s
            }
            (None, Some(var)) => std::env::var(&var).map_err(|_| {
                source.error(
                    &at("token_env"),
                    format!("{label}: environment variable {var} is not set"),
                )
            })?,
            _ => {
                return Err(source.error(
                    &item.span(),
                    format!("{label}: set exactly one of `token` and `token_env`"),
                ));
            }
        };
        let secret_at = if table.contains_key("token") {
            at("token")
        } else {
            at("token_env")
        };
        if secret.len() < 16 {
            return Err(source.error(
                &secret_at,
                format!("{label}: a token must be at least 16 characters"),
            ));
        }
        if t.tenant.is_empty()
            || !t
                .tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(source.error(
                &at("tenant"),
                format!(
                    "{label}: tenant {:?} must be non-empty letters, digits, `-` or `_`",
                    t.tenant
                ),
            ));
        }
        if tokens.iter().any(|o: &Token| o.secret == secret) {
            return Err(source.error(&secret_at, format!("{label}: the same token appears twice")));
        }
        tokens.push(Token {
            secret,
            tenant: t.tenant,
            role: t.role,
            label,
        });
    }
    Ok((tokens, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("c.toml"), text, Path::new("/h"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::load(None, Path::new("/nonexistent-home")).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7878");
        assert!(c.tokens.is_empty());
        assert!(c.hooks.is_empty());
        assert_eq!(
            c.workers,
            WorkerConfig::builtin(Path::new("/nonexistent-home"))
        );
    }

    #[test]
    fn every_section_goes_to_its_owner() {
        let c = Config::parse(
            Path::new("/etc/sluice/config.toml"),
            r#"
            [server]
            listen = "0.0.0.0:9000"
            root = "proj"
            [[tokens]]
            token = "0123456789abcdef"
            tenant = "alice"
            role = "viewer"
            [hooks.main]
            secret = "x"
            pipeline = "p.toml"
            [workers.fake]
            command = "bin/fake"
            "#,
            Path::new("/h"),
        )
        .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9000");
        assert_eq!(c.server.root, Some(PathBuf::from("/etc/sluice/proj")));
        assert_eq!(c.tokens[0].role, Role::Viewer);
        assert_eq!(c.tokens[0].tenant, "alice");
        assert!(!format!("{:?}", c.tokens[0]).contains("0123456789abcdef"));
        assert_eq!(
            c.hooks["main"].pipeline,
            PathBuf::from("/etc/sluice/p.toml")
        );
        assert_eq!(
            c.workers.get("fake").unwrap().command,
            PathBuf::from("/etc/sluice/bin/fake")
        );
        // A literal token is discouraged, by entry, without the token.
        assert_eq!(
            c.warnings,
            [
                "tokens[0] (tenant alice): the token is written in the config file; prefer `token_env`"
            ]
        );
    }

    #[test]
    fn every_server_key_is_a_field() {
        let text: String = SERVER_KEYS
            .iter()
            .map(|k| match *k {
                "listen" | "root" => format!("{k} = \"x\"\n"),
                "allow_paths" | "scheduled" => format!("{k} = [\"x\"]\n"),
                _ => format!("{k} = 7\n"),
            })
            .collect();
        let c = parse(&format!("[server]\n{text}")).unwrap();
        assert_eq!(c.server.max_connections_per_peer, 7);
        assert_eq!(c.server.jobs_per_run, Some(7));
    }

    #[test]
    fn unknown_tables_and_keys_are_refused_where_they_are() {
        assert_eq!(
            err("[server]\nlisten = \"x\"\n\n[sever]\nlisten = \"y\"\n"),
            "c.toml:4:1: unknown table `sever`; expected one of: executor, hooks, kubernetes, server, store, tokens, workers"
        );
        assert_eq!(
            err("listen = \"x\"\n"),
            "c.toml:1:1: unknown key `listen`; expected one of: executor, hooks, kubernetes, server, store, tokens, workers"
        );
        assert!(
            err("[server]\nlisten_on = 1").starts_with(
                "c.toml:2:1: unknown key `listen_on` in [server]; expected one of: listen, root, "
            ),
            "{}",
            err("[server]\nlisten_on = 1")
        );
        assert_eq!(
            err(
                "[[tokens]]\ntoken = \"0123456789abcdef\"\ntenant = \"a\"\nrole = \"admin\"\nrol = 1\n"
            ),
            "c.toml:5:1: unknown key `rol` in tokens[0]; expected one of: token, token_env, tenant, role"
        );
    }

    #[test]
    fn errors_name_the_entry_and_its_position() {
        assert_eq!(
            err("[[tokens]]\ntoken = \"short\"\ntenant = \"a\"\nrole = \"admin\""),
            "c.toml:2:9: tokens[0]: a token must be at least 16 characters"
        );
        assert_eq!(
            err("[[tokens]]\ntoken = \"0123456789abcdef\"\ntenant = \"a\"\nrole = \"root\""),
            "c.toml:4:8: tokens[0]: unknown variant `root`, expected one of `viewer`, `runner`, `admin`"
        );
        assert!(
            err("[[tokens]]\ntenant = \"a\"\nrole = \"admin\"")
                .ends_with(": tokens[0]: set exactly one of `token` and `token_env`")
        );
        assert_eq!(
            err("[server]\nmax_concurrent_runs = 0"),
            "c.toml:2:23: [server] max_concurrent_runs must be at least 1"
        );
        assert_eq!(
            err("[server]\nmax_body_bytes = \"big\""),
            "c.toml:2:18: [server]: invalid type: string \"big\", expected usize"
        );
        assert_eq!(
            err("[server\n"),
            "c.toml:1:8: invalid TOML: unclosed table, expected `]`"
        );
    }

    #[test]
    fn the_kubernetes_section_is_typed_and_the_provided_config_parses() {
        let provided = include_str!("../../deploy/kubernetes/config.toml")
            .replace("@IMAGE@", "registry.example/sluice:1")
            .replace("@STORE@", "s3://artifacts/team");
        let c = parse(&provided).unwrap();
        assert_eq!(c.executor, Some(crate::spec::ExecutorKind::Kubernetes));
        assert_eq!(c.store.as_deref(), Some("s3://artifacts/team"));
        let k = c.kubernetes.unwrap();
        assert_eq!(k.image, "registry.example/sluice:1");
        assert_eq!(k.namespace.as_deref(), Some("sluice"));
        assert_eq!(k.secret.as_deref(), Some("sluice-store"));
        assert_eq!((k.ttl_seconds_after_finished, k.backoff_limit), (3600, 2));
        let defaults = parse("[kubernetes]\nimage = \"i\"")
            .unwrap()
            .kubernetes
            .unwrap();
        assert_eq!(
            (
                defaults.ttl_seconds_after_finished,
                defaults.backoff_limit,
                defaults.namespace
            ),
            (3600, 2, None)
        );
        assert_eq!(
            err("[kubernetes]\nimage = \"i\"\nnamespaces = \"x\""),
            "c.toml:3:1: unknown key `namespaces` in [kubernetes]; expected one of: image, namespace, service_account, secret, config, ttl_seconds_after_finished, backoff_limit"
        );
        assert_eq!(
            err("[kubernetes]\nimage = \"i\"\nbackoff_limit = -1"),
            "c.toml:3:17: [kubernetes] backoff_limit must not be negative"
        );
        assert_eq!(
            err("[kubernetes]\nimage = \" \""),
            "c.toml:2:9: [kubernetes] image must not be empty"
        );
        assert!(
            err("[kubernetes]\nnamespace = \"x\"").contains("missing field `image`"),
            "{}",
            err("[kubernetes]\nnamespace = \"x\"")
        );
    }
}
