//! Which host paths a spec may name as its spec file, a source or a
//! component: the one [`PathPolicy`] every reader of specs consults (the
//! service's submissions, schedules and hooks; the CLI's `run`, `ci` and
//! `hook`).
//!
//! Invariant: the engine home, the config file and anything under them are
//! never allowed, whatever the allowed directories say; a path is judged by
//! where it really leads (symlinks and `..` resolved), and the answer for a
//! path that is not allowed is the same whether or not it exists, so a
//! refusal is no existence oracle.
//! Boundary: stats paths (to resolve them); reads no file content.

use std::path::{Component, Path, PathBuf};

/// Why a path may not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathDenied {
    /// It resolves outside every allowed directory.
    #[error("is not inside the server's allowed paths")]
    Outside,
    /// It resolves into the engine home or the config file: keys, store,
    /// index, tokens and hook secrets.
    #[error("is engine state (the engine home or its config file), never readable by a pipeline")]
    EngineState,
}

/// Where specs, sources and components may come from.
#[derive(Clone, Debug, Default)]
pub struct PathPolicy {
    /// Resolved directories a path must lie in; `None`: anywhere (the CLI,
    /// where every file is the user's own).
    allowed: Option<Vec<PathBuf>>,
    /// Resolved engine-private locations (home, config file).
    private: Vec<PathBuf>,
}

impl PathPolicy {
    /// No restriction at all: for library callers whose user owns every
    /// file and who have no home (e.g. `validate`).
    pub fn anywhere() -> PathPolicy {
        PathPolicy::default()
    }

    /// Anywhere except the engine `home` and the `config` file.
    pub fn local(home: &Path, config: Option<&Path>) -> PathPolicy {
        PathPolicy {
            allowed: None,
            private: std::iter::once(home)
                .chain(config)
                .map(|p| resolve(&absolute(p)))
                .collect(),
        }
    }

    /// Only inside `allowed`, and never in the home or the config file
    /// (even when an allowed directory contains them).
    pub fn confined(home: &Path, config: Option<&Path>, allowed: &[PathBuf]) -> PathPolicy {
        PathPolicy {
            allowed: Some(allowed.iter().map(|p| resolve(&absolute(p))).collect()),
            ..PathPolicy::local(home, config)
        }
    }

    /// Also never allows `path` (and anything under it): e.g. a compile
    /// cache's tag key kept outside the home.
    pub fn also_private(mut self, path: &Path) -> PathPolicy {
        self.private.push(resolve(&absolute(path)));
        self
    }

    /// Whether `path` may be read. Existence plays no part in the answer:
    /// the path's existing prefix is resolved (symlinks followed) and the
    /// rest is normalised lexically.
    pub fn check(&self, path: &Path) -> Result<(), PathDenied> {
        let real = resolve(&absolute(path));
        if self.private.iter().any(|p| real.starts_with(p)) {
            return Err(PathDenied::EngineState);
        }
        match &self.allowed {
            Some(dirs) if !dirs.iter().any(|d| real.starts_with(d)) => Err(PathDenied::Outside),
            _ => Ok(()),
        }
    }
}

/// `path` made absolute against the working directory (lexically).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Where `path` (absolute) really leads: the longest prefix that
/// canonicalizes (symlinks and `..` resolved by the OS), followed by the
/// remaining components with `.` dropped and `..` popping lexically —
/// they do not exist, so no symlink hides among them. Any error of
/// `canonicalize` (missing, permission, loop) just shortens the prefix:
/// the caller learns nothing from it.
fn resolve(path: &Path) -> PathBuf {
    let mut prefix = path;
    let mut rest: Vec<Component<'_>> = Vec::new();
    loop {
        if let Ok(real) = prefix.canonicalize() {
            let mut out = real;
            for c in rest.iter().rev() {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return out;
        }
        match (prefix.parent(), prefix.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                prefix = parent;
            }
            // Nothing resolves (not even `/`): judge it lexically.
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_is_refused_inside_an_allowed_dir_whether_or_not_the_path_exists() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join(".sluice/keys")).unwrap();
        std::fs::write(root.join(".sluice/keys/k.key"), "secret").unwrap();
        std::fs::write(root.join("config.toml"), "").unwrap();
        std::fs::write(root.join("data.csv"), "").unwrap();
        let policy = PathPolicy::confined(
            &root.join(".sluice"),
            Some(&root.join("config.toml")),
            std::slice::from_ref(&root),
        );
        assert_eq!(policy.check(&root.join("data.csv")), Ok(()));
        assert_eq!(policy.check(&root.join("missing.csv")), Ok(()));
        for denied in [
            ".sluice/keys/k.key",
            ".sluice/keys/absent.key",
            "config.toml",
            "x/../.sluice/keys/k.key",
            "absent/../.sluice/keys/k.key",
            "./.sluice/./keys/k.key",
        ] {
            assert_eq!(
                policy.check(&root.join(denied)),
                Err(PathDenied::EngineState),
                "{denied}"
            );
        }
        for outside in [
            "../elsewhere",
            "/etc/hostname",
            "/no/such/dir/x",
            "absent/../../x",
        ] {
            assert_eq!(
                policy.check(&root.join(outside)),
                Err(PathDenied::Outside),
                "{outside}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_into_the_home_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("home/keys")).unwrap();
        std::fs::write(root.join("home/keys/k.key"), "secret").unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::os::unix::fs::symlink(root.join("home"), root.join("data/link")).unwrap();
        std::os::unix::fs::symlink("../home/keys/k.key", root.join("data/k")).unwrap();
        let local = PathPolicy::local(&root.join("home"), None);
        for p in ["data/link/keys/k.key", "data/k", "data/link/absent"] {
            assert_eq!(
                local.check(&root.join(p)),
                Err(PathDenied::EngineState),
                "{p}"
            );
        }
        assert_eq!(local.check(&root.join("data/other")), Ok(()));
        assert_eq!(PathPolicy::anywhere().check(&root.join("data/k")), Ok(()));
    }

    #[test]
    fn a_compile_cache_key_outside_the_home_is_private_too() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let key = crate::sandbox::compile_cache_key_path(&root.join("cc"));
        std::fs::write(&key, "secret").unwrap();
        let policy = PathPolicy::confined(&root.join("home"), None, std::slice::from_ref(&root))
            .also_private(&key);
        assert_eq!(policy.check(&key), Err(PathDenied::EngineState));
        assert_eq!(policy.check(&root.join("cc/x.cwasm")), Ok(()));
    }
}
