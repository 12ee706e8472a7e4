//! Git push triggers (GitHub- and Gitea-style webhooks): verify the
//! `X-Hub-Signature-256` HMAC, de-duplicate deliveries, and turn a push into
//! a pipeline run with the pushed commit as a param.
//!
//! Invariant: nothing is claimed or run unless the signature verifies
//! (constant-time compare); a signed payload starts at most one run per hook
//! and home within [`CLAIM_WINDOW_SECS`], even across processes and whatever
//! delivery id accompanies it. Claims are keyed by what the HMAC covers — the
//! body's sha256 — because the delivery header is not signed: keying on it let
//! a captured body replay under a fresh id. Claims are files under
//! `<home>/hooks/claims/` created with `create_new`; claims older than the
//! window are pruned, and a payload carrying a signed push time
//! (`repository.pushed_at`, GitHub) older than the window is refused, so
//! pruning reopens nothing for such senders. A sender whose payloads carry
//! no push time can be replayed once the window has passed.
//! Boundary: parses payloads and its config section (`[hooks.*]`, read
//! once by `config`), claims payloads; running the
//! pipeline is the caller's (`sluice hook`, `sluice serve`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::section::{ConfigError, Source, Value};

/// Largest webhook body accepted: a git push payload is a few KiB (GitHub
/// caps deliveries at 25 MB but trims commit lists; 1 MiB leaves room for
/// large pushes while bounding what an unauthenticated sender can make the
/// service buffer before the signature is checked).
pub const BODY_BYTES_MAX: usize = 1 << 20;

/// How long a claimed payload is remembered (30 days): deliveries are
/// retried by senders within hours, so a month covers every honest repeat;
/// older claims are pruned so the claim directory stays bounded by the push
/// rate.
pub const CLAIM_WINDOW_SECS: u64 = 30 * 24 * 3600;

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Missing or wrong signature: answer 401, do nothing.
    #[error("hook `{hook}`: {reason}")]
    Unauthorized {
        /// The hook.
        hook: String,
        /// What was wrong with the signature.
        reason: String,
    },
    /// The payload is not a push event we understand: answer 400.
    #[error("hook `{hook}`: bad payload: {reason}")]
    BadPayload {
        /// The hook.
        hook: String,
        /// Why.
        reason: String,
    },
    /// The delivery could not be recorded.
    #[error("hook deliveries {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// One configured hook (`[hooks.NAME]` in the config file). Its `Debug`
/// omits the secret.
#[derive(Clone)]
pub struct Hook {
    /// Its name.
    pub name: String,
    /// The shared secret.
    pub secret: Vec<u8>,
    /// The pipeline it runs.
    pub pipeline: PathBuf,
    /// The param that receives the pushed commit id.
    pub commit_param: String,
    /// Only pushes to these branches run (all when empty).
    pub branches: Vec<String>,
    /// The service tenant its runs belong to (default `default`).
    pub tenant: String,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("name", &self.name)
            .field("pipeline", &self.pipeline)
            .field("commit_param", &self.commit_param)
            .field("branches", &self.branches)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Keys accepted in a `[hooks.NAME]` table.
pub const KEYS: &[&str] = &[
    "secret",
    "secret_env",
    "pipeline",
    "commit_param",
    "branches",
    "tenant",
];

/// Reads the `[hooks]` section of the config file (`value`, the table of
/// hooks), `secret_env` read now:
///
/// ```toml
/// [hooks.main]
/// secret_env = "SLUICE_HOOK_SECRET"   # or: secret = "..."
/// pipeline = "examples/pipelines/tabular.toml"   # relative to this file
/// commit_param = "commit"
/// branches = ["main"]
/// tenant = "default"                  # the service tenant of its runs
/// ```
pub fn from_section(
    source: &Source,
    value: &Value<'_>,
) -> Result<BTreeMap<String, Hook>, ConfigError> {
    let section = source.table(value, "`hooks`")?;
    let mut hooks = BTreeMap::new();
    for (key, value) in section.iter() {
        let name = key.get_ref().to_string();
        let place = format!("[hooks.{name}]");
        let t = source.table(value, &place)?;
        source.check_keys(t, &place, KEYS)?;
        let string = |key: &str| -> Result<Option<&str>, ConfigError> {
            t.get(key)
                .map(|v| source.string(v, &format!("{place} `{key}`")))
                .transpose()
        };
        let secret = match (string("secret")?, string("secret_env")?) {
            (Some(s), None) => s.as_bytes().to_vec(),
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| {
                    source.error(
                        &t["secret_env"].span(),
                        format!("{place}: environment variable `{var}` is not set"),
                    )
                })?
                .into_bytes(),
            _ => {
                return Err(source.error(
                    &key.span(),
                    format!("{place}: set exactly one of `secret`, `secret_env`"),
                ));
            }
        };
        if secret.is_empty() {
            return Err(source.error(&key.span(), format!("{place}: the secret is empty")));
        }
        let pipeline = string("pipeline")?
            .ok_or_else(|| source.error(&key.span(), format!("{place}: `pipeline` is required")))?;
        let branches = match t.get("branches") {
            None => Vec::new(),
            Some(v) => v
                .get_ref()
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|b| b.get_ref().as_str().map(str::to_string))
                        .collect()
                })
                .ok_or_else(|| {
                    source.error(
                        &v.span(),
                        format!("{place}: `branches` must be an array of strings"),
                    )
                })?,
        };
        hooks.insert(
            name.clone(),
            Hook {
                secret,
                pipeline: source.dir().join(pipeline),
                commit_param: string("commit_param")?.unwrap_or("commit").to_string(),
                branches,
                tenant: string("tenant")?.unwrap_or("default").to_string(),
                name,
            },
        );
    }
    Ok(hooks)
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` against the HMAC-SHA256 of the
/// raw body, in constant time.
pub fn verify_signature(hook: &Hook, body: &[u8], header: Option<&str>) -> Result<(), HookError> {
    let unauthorized = |reason: &str| HookError::Unauthorized {
        hook: hook.name.clone(),
        reason: reason.to_string(),
    };
    let header = header.ok_or_else(|| unauthorized("no X-Hub-Signature-256 header"))?;
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or_else(|| unauthorized("signature must be `sha256=<hex>`"))?;
    let sig = hex::decode(hex_sig).map_err(|_| unauthorized("signature is not hex"))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&hook.secret).expect("HMAC accepts any key length");
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| unauthorized("signature does not match the body"))
}

/// `sha256=<hex>` for `body` under `secret` (what a sender puts in the header).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a push event says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Push {
    /// The commit the branch now points at.
    pub commit: String,
    /// The branch (`main` for `refs/heads/main`).
    pub branch: String,
    /// `owner/name`.
    pub repository: String,
    /// When the push happened (unix seconds), if the payload says
    /// (`repository.pushed_at`, GitHub); signed like the rest of the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed_at: Option<u64>,
}

/// Parses a GitHub or Gitea push payload.
pub fn parse_push(hook: &Hook, body: &[u8]) -> Result<Push, HookError> {
    let bad = |reason: String| HookError::BadPayload {
        hook: hook.name.clone(),
        reason,
    };
    if body.len() > BODY_BYTES_MAX {
        return Err(bad(format!(
            "{} bytes; the limit is {BODY_BYTES_MAX}",
            body.len()
        )));
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let commit = v["after"]
        .as_str()
        .or_else(|| v["head_commit"]["id"].as_str())
        .ok_or_else(|| bad("no `after` commit id (is this a push event?)".to_string()))?;
    if commit.len() < 7 || commit.len() > 64 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("commit id {commit:?} is not a hex object id")));
    }
    let git_ref = v["ref"]
        .as_str()
        .ok_or_else(|| bad("no `ref`".to_string()))?;
    let branch = git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref);
    Ok(Push {
        commit: commit.to_string(),
        branch: branch.to_string(),
        repository: v["repository"]["full_name"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        pushed_at: v["repository"]["pushed_at"].as_u64(),
    })
}

/// Checks the shape of a delivery id (it names nothing on disk, but is
/// echoed in claims and answers).
pub fn check_delivery(hook: &Hook, delivery: &str) -> Result<(), HookError> {
    if delivery.is_empty()
        || delivery.len() > 128
        || !delivery
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(HookError::BadPayload {
            hook: hook.name.clone(),
            reason: format!("delivery id {delivery:?} must be 1-128 characters of [A-Za-z0-9_-]"),
        });
    }
    Ok(())
}

/// The outcome of claiming a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// First time this hook sees this payload (within the window).
    New,
    /// Claimed before by the delivery `first_delivery`.
    Seen {
        /// The delivery id that first carried the payload.
        first_delivery: String,
    },
}

/// Claims the signed `body` for `hook` in `home`: the claim is named by
/// sha256(hook name, body), so a repeat of the same payload under any
/// delivery id finds it. Prunes claims older than [`CLAIM_WINDOW_SECS`].
pub fn claim_payload(
    home: &Path,
    hook: &Hook,
    body: &[u8],
    delivery: &str,
) -> Result<Claim, HookError> {
    use sha2::Digest as _;
    check_delivery(hook, delivery)?;
    let dir = home.join("hooks").join("claims");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HookError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    prune_claims(&dir, std::time::SystemTime::now());
    // The name is hashed in with a separator so two hooks sharing a secret
    // still claim independently, and no hook name reaches the file system.
    let mut h = Sha256::new();
    h.update((hook.name.len() as u64).to_le_bytes());
    h.update(hook.name.as_bytes());
    h.update(body);
    let path = dir.join(hex::encode(h.finalize()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(delivery.as_bytes()).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
            crate::durable::sync_dir(&dir).map_err(|e| HookError::Io {
                path: dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            Ok(Claim::New)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // A claim being written right now may still be empty.
            let first = std::fs::read_to_string(&path).unwrap_or_default();
            Ok(Claim::Seen {
                first_delivery: if first.is_empty() {
                    "another delivery".to_string()
                } else {
                    first
                },
            })
        }
        Err(e) => Err(io(&path)(e)),
    }
}

/// Removes claims last modified more than [`CLAIM_WINDOW_SECS`] before
/// `now`. Best effort: a claim that cannot be read or removed stays (it only
/// keeps refusing its payload).
fn prune_claims(dir: &Path, now: std::time::SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let window = std::time::Duration::from_secs(CLAIM_WINDOW_SECS);
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > window);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// What to do with a verified delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run the hook's pipeline with this param override.
    Run {
        /// The push.
        push: Push,
        /// `(commit_param, commit)`.
        param: (String, String),
    },
    /// This signed payload was delivered before: do nothing.
    Duplicate {
        /// The delivery id that first carried it.
        first_delivery: String,
    },
    /// A push to a branch the hook does not watch.
    Ignored(String),
}

/// Verifies, parses and de-duplicates one delivery.
pub fn handle(
    home: &Path,
    hook: &Hook,
    body: &[u8],
    signature: Option<&str>,
    delivery: &str,
) -> Result<Decision, HookError> {
    verify_signature(hook, body, signature)?;
    check_delivery(hook, delivery)?;
    let push = parse_push(hook, body)?;
    if let Some(pushed_at) = push.pushed_at {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now.saturating_sub(pushed_at) > CLAIM_WINDOW_SECS {
            return Err(HookError::BadPayload {
                hook: hook.name.clone(),
                reason: format!(
                    "the push is from {pushed_at} (unix seconds), older than the {} day replay window",
                    CLAIM_WINDOW_SECS / 86_400
                ),
            });
        }
    }
    if !hook.branches.is_empty() && !hook.branches.contains(&push.branch) {
        return Ok(Decision::Ignored(format!(
            "push to `{}`; hook `{}` watches {}",
            push.branch,
            hook.name,
            hook.branches.join(", ")
        )));
    }
    if let Claim::Seen { first_delivery } = claim_payload(home, hook, body, delivery)? {
        return Ok(Decision::Duplicate { first_delivery });
    }
    let param = (hook.commit_param.clone(), push.commit.clone());
    Ok(Decision::Run { push, param })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(secret: &str) -> Hook {
        Hook {
            name: "h".into(),
            secret: secret.as_bytes().to_vec(),
            pipeline: PathBuf::from("p.toml"),
            commit_param: "commit".into(),
            branches: vec!["main".into()],
            tenant: "default".into(),
        }
    }

    fn section(text: &str) -> Result<BTreeMap<String, Hook>, ConfigError> {
        let root = toml::de::DeTable::parse(text).unwrap();
        let source = Source::new(Path::new("/etc/c.toml"), text);
        from_section(&source, root.get_ref().get("hooks").unwrap())
    }

    #[test]
    fn the_hooks_section_resolves_paths_and_refuses_with_positions() {
        let hooks =
            section("[hooks.main]\nsecret = \"s\"\npipeline = \"p.toml\"\nbranches = [\"main\"]\n")
                .unwrap();
        let main = &hooks["main"];
        assert_eq!(main.pipeline, PathBuf::from("/etc/p.toml"));
        assert_eq!(
            (main.commit_param.as_str(), main.tenant.as_str()),
            ("commit", "default")
        );
        let err = |text: &str| section(text).unwrap_err().to_string();
        assert_eq!(
            err("[hooks.main]\nsecret = \"s\"\npipline = \"p.toml\"\n"),
            "/etc/c.toml:3:1: unknown key `pipline` in [hooks.main]; expected one of: secret, secret_env, pipeline, commit_param, branches, tenant"
        );
        assert_eq!(
            err("[hooks.main]\nsecret = \"s\"\n"),
            "/etc/c.toml:1:8: [hooks.main]: `pipeline` is required"
        );
        assert_eq!(
            err("[hooks.main]\nsecret = \"s\"\npipeline = \"p\"\nbranches = \"main\"\n"),
            "/etc/c.toml:4:12: [hooks.main]: `branches` must be an array of strings"
        );
        assert_eq!(
            err("[hooks.main]\nsecret_env = \"SLUICE_TEST_UNSET_HOOK_SECRET\"\npipeline = \"p\"\n"),
            "/etc/c.toml:2:14: [hooks.main]: environment variable `SLUICE_TEST_UNSET_HOOK_SECRET` is not set"
        );
    }

    #[test]
    fn published_github_test_vector_verifies() {
        let h = hook("It's a Secret to Everybody");
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(&h.secret, b"Hello, World!"), sig);
        verify_signature(&h, b"Hello, World!", Some(sig)).unwrap();
        let err = verify_signature(&h, b"Hello, World?", Some(sig)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hook `h`: signature does not match the body"
        );
        let err = verify_signature(&h, b"Hello, World!", None).unwrap_err();
        assert_eq!(err.to_string(), "hook `h`: no X-Hub-Signature-256 header");
        let err = verify_signature(&h, b"Hello, World!", Some("sha1=abc")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hook `h`: signature must be `sha256=<hex>`"
        );
    }

    #[test]
    fn pushes_parse_and_filter_by_branch_and_deliveries_dedupe() {
        let dir = tempfile::tempdir().unwrap();
        let h = hook("s3cret");
        let body = br#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":{"full_name":"ml/penguins"}}"#;
        let sig = sign(&h.secret, body);
        let d = handle(dir.path(), &h, body, Some(&sig), "delivery-1").unwrap();
        assert_eq!(
            d,
            Decision::Run {
                push: Push {
                    commit: "0123456789abcdef0123456789abcdef01234567".into(),
                    branch: "main".into(),
                    repository: "ml/penguins".into(),
                    pushed_at: None,
                },
                param: (
                    "commit".into(),
                    "0123456789abcdef0123456789abcdef01234567".into()
                )
            }
        );
        assert_eq!(
            handle(dir.path(), &h, body, Some(&sig), "delivery-1").unwrap(),
            Decision::Duplicate {
                first_delivery: "delivery-1".into()
            }
        );
        let dev = br#"{"ref":"refs/heads/dev","after":"0123456789abcdef0123456789abcdef01234567"}"#;
        let d = handle(
            dir.path(),
            &h,
            dev,
            Some(&sign(&h.secret, dev)),
            "delivery-2",
        )
        .unwrap();
        assert_eq!(
            d,
            Decision::Ignored("push to `dev`; hook `h` watches main".into())
        );
        let err = handle(dir.path(), &h, b"{}", Some(&sign(&h.secret, b"{}")), "d3").unwrap_err();
        assert!(err.to_string().contains("no `after` commit id"), "{err}");
        let err = handle(dir.path(), &h, body, Some(&sig), "../escape").unwrap_err();
        assert!(err.to_string().contains("delivery id"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let h = hook("hunter2-very-secret");
        let shown = format!("{h:?}");
        assert!(!shown.contains("hunter2-very-secret"), "{shown}");
        // Nor its bytes, as `Vec<u8>`'s Debug would print them.
        assert!(!shown.contains("104, 117, 110"), "{shown}");
        assert!(shown.contains("name: \"h\""), "{shown}");
    }

    #[test]
    fn a_signed_body_replayed_under_a_new_delivery_id_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let h = hook("s3cret");
        let body =
            br#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}"#;
        let sig = sign(&h.secret, body);
        assert!(matches!(
            handle(dir.path(), &h, body, Some(&sig), "first").unwrap(),
            Decision::Run { .. }
        ));
        assert_eq!(
            handle(dir.path(), &h, body, Some(&sig), "fresh-id").unwrap(),
            Decision::Duplicate {
                first_delivery: "first".into()
            }
        );
        // Another hook with the same secret claims independently.
        let other = Hook {
            name: "other".into(),
            ..h.clone()
        };
        assert!(matches!(
            handle(dir.path(), &other, body, Some(&sig), "x").unwrap(),
            Decision::Run { .. }
        ));
        // A different body is a different push.
        let body2 =
            br#"{"ref":"refs/heads/main","after":"1123456789abcdef0123456789abcdef01234567"}"#;
        assert!(matches!(
            handle(dir.path(), &h, body2, Some(&sign(&h.secret, body2)), "y").unwrap(),
            Decision::Run { .. }
        ));
    }

    #[test]
    fn claims_older_than_the_window_are_pruned_and_stale_pushes_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = hook("s3cret");
        let body =
            br#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}"#;
        assert_eq!(
            claim_payload(dir.path(), &h, body, "a").unwrap(),
            Claim::New
        );
        let claims = dir.path().join("hooks").join("claims");
        let file = std::fs::read_dir(&claims).unwrap().next().unwrap().unwrap();
        let old =
            std::time::SystemTime::now() - std::time::Duration::from_secs(CLAIM_WINDOW_SECS + 3600);
        std::fs::File::options()
            .write(true)
            .open(file.path())
            .unwrap()
            .set_modified(old)
            .unwrap();
        // The expired claim is pruned by the next claim: the payload is new again.
        assert_eq!(
            claim_payload(dir.path(), &h, body, "b").unwrap(),
            Claim::New
        );
        assert_eq!(std::fs::read_dir(&claims).unwrap().count(), 1);
        // A push that says it is older than the window is refused outright.
        let stale = br#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":{"pushed_at":1000}}"#;
        let err = handle(dir.path(), &h, stale, Some(&sign(&h.secret, stale)), "c").unwrap_err();
        assert_eq!(
            err.to_string(),
            "hook `h`: bad payload: the push is from 1000 (unix seconds), older than the 30 day replay window"
        );
    }
}
