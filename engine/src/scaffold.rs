//! `sluice new step NAME [--lang rust|python|js]`: a step (a crate on the
//! guest SDK, a Python step or a JavaScript step) plus a pipeline and
//! sample data that run it as is. The three write the same bytes for the
//! same sample.
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

/// The language a step is scaffolded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// A crate on the Rust guest SDK.
    Rust,
    /// A Python step (`pyproject.toml`, componentize-py).
    Python,
    /// A JavaScript step (`package.json`, ComponentizeJS).
    Js,
}

/// Creates the step `name` in `dir`, written in `lang`.
pub fn new_step(name: &str, dir: &Path, lang: Lang) -> Result<(), ScaffoldError> {
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
    let step_ident = name.replace('-', "_");
    let files = match lang {
        Lang::Rust => rust_files(name)?,
        Lang::Python => python_files(name, &step_ident),
        Lang::Js => js_files(name),
    };
    let pipeline = format!(
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
    );
    let ignore = match lang {
        Lang::Rust => "/target\n/.sluice\n",
        Lang::Python => "/target\n/.sluice\n__pycache__/\n",
        Lang::Js => "/target\n/.sluice\nnode_modules/\n",
    };
    let common = [
        ("pipeline.toml".to_string(), pipeline),
        (
            "sample.txt".to_string(),
            "sluice steps are components\nthey run anywhere\n".to_string(),
        ),
        (".gitignore".to_string(), ignore.to_string()),
    ];
    for (rel, text) in files.into_iter().chain(common) {
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

/// A step crate: `Cargo.toml` on the guest SDK and `src/lib.rs`.
fn rust_files(name: &str) -> Result<Vec<(String, String)>, ScaffoldError> {
    let sdk = sdk_dir();
    let sdk = sdk
        .canonicalize()
        .map_err(|_| ScaffoldError::Sdk(sdk.clone()))?;
    if !sdk.join("Cargo.toml").is_file() {
        return Err(ScaffoldError::Sdk(sdk));
    }
    Ok(vec![
        (
            "Cargo.toml".to_string(),
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
            "src/lib.rs".to_string(),
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
    ])
}

/// A Python step: `pyproject.toml` naming the module, and the module.
fn python_files(name: &str, ident: &str) -> Vec<(String, String)> {
    vec![
        (
            "pyproject.toml".to_string(),
            format!(
                r#"[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.12"

# Sluice builds this directory with componentize-py (pinned by the
# engine) together with its Python step SDK, `sluice_step`; `module`
# names the module whose @step function is the step.
[tool.sluice]
module = "{ident}"
"#
            ),
        ),
        (
            format!("{ident}.py"),
            format!(
                r#""""`{name}`: a Sluice step. Reads input `text`, writes output `shouted`
(the text upper-cased, prefixed with the `greeting` param) and reports
the number of lines as a metric."""

from sluice_step import Ctx, step


@step
def run(ctx: Ctx) -> None:
    greeting = ctx.param("greeting", default="hello")
    lines = 0
    with ctx.output("shouted", "text/plain") as out:
        out.write(f"{{greeting}}\n".encode())
        for line in ctx.text("text"):
            out.write(line.rstrip("\n").upper().encode() + b"\n")
            lines += 1
    ctx.metric("lines", lines)
"#
            ),
        ),
    ]
}

/// A JavaScript step: `package.json` naming the entry, and the entry.
fn js_files(name: &str) -> Vec<(String, String)> {
    vec![
        (
            "package.json".to_string(),
            format!(
                r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "sluice": {{
    "entry": "step.js"
  }}
}}
"#
            ),
        ),
        (
            "step.js".to_string(),
            format!(
                r#"/**
 * `{name}`: a Sluice step. Reads input `text`, writes output `shouted`
 * (the text upper-cased, prefixed with the `greeting` param) and reports
 * the number of lines as a metric.
 *
 * The engine stages its JavaScript step SDK beside this file as
 * `sluice_step.js` and builds both with ComponentizeJS.
 */

import {{ step }} from './sluice_step.js';

export const run = step((ctx) => {{
  const greeting = ctx.param('greeting', 'hello');
  const lines = ctx.input('text').text().split('\n');
  if (lines.at(-1) === '') lines.pop();
  const out = ctx.output('shouted', 'text/plain');
  out.write(`${{greeting}}\n`);
  for (const line of lines) {{
    out.write(`${{line.toUpperCase()}}\n`);
  }}
  out.finish();
  ctx.metric('lines', lines.length);
}});
"#
            ),
        ),
    ]
}
