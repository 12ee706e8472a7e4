//! `sluice new step NAME`: a step crate on the guest SDK plus a pipeline
//! and sample data that run it as is.
//!
//! Invariant: never overwrites an existing file.
//! Boundary: writes files; builds nothing.

use std::path::{Path, PathBuf};

/// Why scaffolding failed.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// Bad name.
    #[error(
        "invalid step name {0:?}: use lowercase letters, digits, `-` and `_`, starting with a letter"
    )]
    Name(String),
    /// The target exists.
    #[error("{0} already exists; choose another name or --dir")]
    Exists(PathBuf),
    /// The SDK could not be located.
    #[error("cannot find the sluice guest SDK at {0}; set SLUICE_GUEST_SDK to its directory")]
    Sdk(PathBuf),
    /// IO failure.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Where the guest SDK crate lives: `$SLUICE_GUEST_SDK`, or the copy this
/// binary was built from.
fn sdk_dir() -> PathBuf {
    std::env::var_os("SLUICE_GUEST_SDK")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"))
}

/// Creates the step crate `name` in `dir`.
pub fn new_step(name: &str, dir: &Path) -> Result<(), ScaffoldError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(ScaffoldError::Name(name.to_string()));
    }
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let sdk = sdk_dir();
    let sdk = sdk
        .canonicalize()
        .map_err(|_| ScaffoldError::Sdk(sdk.clone()))?;
    if !sdk.join("Cargo.toml").is_file() {
        return Err(ScaffoldError::Sdk(sdk));
    }
    let step_ident = name.replace('-', "_");
    let files: [(&str, String); 5] = [
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
sluice-guest = {{ path = {sdk:?} }}

# A workspace of its own; delete this table to add the crate to an
# enclosing workspace instead.
[workspace]
"#,
                sdk = sdk.display().to_string()
            ),
        ),
        (
            "src/lib.rs",
            format!(
                r#"//! `{name}`: a Sluice step. Reads input `text`, writes output `shouted`
//! (the text upper-cased, prefixed with the `greeting` param) and reports
//! the number of lines as a metric.

use std::io::{{BufRead, Write}};

use sluice_guest::{{Ctx, Result}};

fn run(ctx: &mut Ctx) -> Result<()> {{
    let greeting: String = ctx.param_or("greeting", "hello".to_string())?;
    let input = ctx.input("text")?;
    let mut out = ctx.output("shouted", "text/plain")?;
    writeln!(out, "{{greeting}}")?;
    let mut lines = 0u64;
    for line in input.lines() {{
        writeln!(out, "{{}}", line?.to_uppercase())?;
        lines += 1;
    }}
    out.finish()?;
    ctx.metric("lines", lines as f64);
    Ok(())
}}

sluice_guest::export_step!(run);
"#
            ),
        ),
        (
            "pipeline.toml",
            format!(
                r#"name = "{name}-demo"
description = "Runs the `{name}` step on sample.txt."

[params]
greeting = "hello from {name}"

[sources]
text = "sample.txt"

[steps.{step_ident}]
component = "."
inputs = {{ text = "sources.text" }}
params = {{ greeting = "${{params.greeting}}" }}
outputs = ["shouted"]
limits = {{ memory_mib = 64, timeout_s = 30 }}
"#
            ),
        ),
        (
            "sample.txt",
            "sluice steps are components\nthey run anywhere\n".to_string(),
        ),
        (".gitignore", "/target\n/.sluice\n".to_string()),
    ];
    for (rel, text) in files {
        let path = dir.join(rel);
        let io = |source| ScaffoldError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, text).map_err(|source| ScaffoldError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}
