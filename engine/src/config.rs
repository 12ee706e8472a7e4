//! The engine config file (`--config FILE`, default `<home>/config.toml`
//! when it exists): the service's settings and tokens. Hooks (`[hooks.*]`,
//! see [`crate::hook::load_config`]) live in the same file.
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
//! Invariant: a token is never logged or echoed; errors name the entry.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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

#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

/// The parsed config file.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[[tokens]]`.
    pub tokens: Vec<Token>,
    /// Risky but valid settings, each naming its entry (printed at startup).
    pub warnings: Vec<String>,
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {reason}")]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl Config {
    /// Reads `explicit`, or `<home>/config.toml` when it exists, or the
    /// defaults.
    pub fn load(explicit: Option<&Path>, home: &Path) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = home.join("config.toml");
                if !p.is_file() {
                    return Ok(Config::default());
                }
                p
            }
        };
        let bad = |reason: String| ConfigError {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        Config::parse(&path, &text)
    }

    /// Parses `text` as the file at `path`. Tables other than `[server]`
    /// and `[[tokens]]` belong to other modules and are ignored here.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let bad = |reason: String| ConfigError {
            path: path.to_path_buf(),
            reason,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut mine = toml::Table::new();
        for key in ["server", "tokens"] {
            if let Some(v) = table.remove(key) {
                mine.insert(key.to_string(), v);
            }
        }
        let raw: RawConfig = toml::Value::Table(mine)
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.message().to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut server = raw.server;
        server.root = server.root.map(|r| dir.join(r));
        for (field, value) in [
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
            if value == 0 {
                return Err(bad(format!("[server] {field} must be at least 1")));
            }
        }
        let mut tokens = Vec::new();
        let mut warnings = Vec::new();
        for (i, t) in raw.tokens.into_iter().enumerate() {
            let label = format!("tokens[{i}]");
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
                (None, Some(var)) => std::env::var(&var)
                    .map_err(|_| bad(format!("{label}: environment variable {var} is not set")))?,
                _ => {
                    return Err(bad(format!(
                        "{label}: set exactly one of `token` and `token_env`"
                    )));
                }
            };
            if secret.len() < 16 {
                return Err(bad(format!(
                    "{label}: a token must be at least 16 characters"
                )));
            }
            if t.tenant.is_empty()
                || !t
                    .tenant
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad(format!(
                    "{label}: tenant {:?} must be non-empty letters, digits, `-` or `_`",
                    t.tenant
                )));
            }
            if tokens.iter().any(|o: &Token| o.secret == secret) {
                return Err(bad(format!("{label}: the same token appears twice")));
            }
            tokens.push(Token {
                secret,
                tenant: t.tenant,
                role: t.role,
                label,
            });
        }
        Ok(Config {
            path: Some(path.to_path_buf()),
            server,
            tokens,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_a_file() {
        let c = Config::load(None, Path::new("/nonexistent-home")).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7878");
        assert!(c.tokens.is_empty());
    }

    #[test]
    fn tokens_and_server() {
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
            "#,
        )
        .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9000");
        assert_eq!(c.server.root, Some(PathBuf::from("/etc/sluice/proj")));
        assert_eq!(c.tokens[0].role, Role::Viewer);
        assert_eq!(c.tokens[0].tenant, "alice");
        assert!(!format!("{:?}", c.tokens[0]).contains("0123456789abcdef"));
        // A literal token is discouraged, by entry, without the token.
        assert_eq!(
            c.warnings,
            [
                "tokens[0] (tenant alice): the token is written in the config file; prefer `token_env`"
            ]
        );
    }

    #[test]
    fn errors_name_the_entry() {
        let err = |text: &str| {
            Config::parse(Path::new("c.toml"), text)
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("[server]\nlisten_on = 1").contains("unknown field `listen_on`"),
            "{}",
            err("[server]\nlisten_on = 1")
        );
        assert!(
            err("[[tokens]]\ntoken = \"short\"\ntenant = \"a\"\nrole = \"admin\"")
                .contains("tokens[0]: a token must be at least 16 characters")
        );
        assert!(
            err("[[tokens]]\ntoken = \"0123456789abcdef\"\ntenant = \"a\"\nrole = \"root\"")
                .contains("unknown variant `root`")
        );
        assert!(
            err("[[tokens]]\ntenant = \"a\"\nrole = \"admin\"")
                .contains("tokens[0]: set exactly one of `token` and `token_env`")
        );
        assert!(
            err("[server]\nmax_concurrent_runs = 0")
                .contains("max_concurrent_runs must be at least 1")
        );
    }
}
