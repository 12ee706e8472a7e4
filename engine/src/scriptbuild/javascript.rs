//! JavaScript steps: `package.json` with `"sluice": { "entry": "step.js" }`,
//! built by ComponentizeJS (pinned, with its whole dependency tree fixed by
//! the lockfile below) from a tools directory the engine installs once
//! with `npm ci`. The entry module imports the SDK as `./sluice_step.js`.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Toolchain, clean_command, io_err, lock_tools, read_marker, run_tool, tools_root};

/// The ComponentizeJS release every JavaScript step is built with.
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
/// The tools package, its lockfile and the build script, written into the
/// tools directory and installed with `npm ci`.
const TOOLS: &[(&str, &str)] = &[
    ("package.json", include_str!("../../js-tools/package.json")),
    (
        "package-lock.json",
        include_str!("../../js-tools/package-lock.json"),
    ),
    (
        "componentize.mjs",
        include_str!("../../js-tools/componentize.mjs"),
    ),
];
/// Written last by a successful install: the digest of [`TOOLS`].
const INSTALLED: &str = ".sluice-installed";

pub(super) struct JavaScript;

impl Toolchain for JavaScript {
    fn memo_dir(&self) -> &'static str {
        "sluice-js"
    }

    fn build_format(&self) -> &'static str {
        "sluice-js-build/1"
    }

    fn toolchain(&self) -> String {
        format!("componentize-js {COMPONENTIZE_JS_VERSION}")
    }

    /// `sluice.entry` of the step's `package.json`: a relative `.js` or
    /// `.mjs` path inside the step directory.
    fn entry(&self, dir: &Path) -> Result<String, String> {
        let path = dir.join("package.json");
        let text = read_marker(&path)?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let entry = doc
            .get("sluice")
            .and_then(|s| s.get("entry"))
            .ok_or_else(|| {
                format!(
                    "{}: no \"sluice\": {{ \"entry\": \"…\" }} naming the module that calls step()",
                    path.display()
                )
            })?
            .as_str()
            .ok_or_else(|| format!("{}: \"sluice\".\"entry\" must be a string", path.display()))?;
        let valid = (entry.ends_with(".js") || entry.ends_with(".mjs"))
            && !entry.starts_with('/')
            && entry
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
        if !valid {
            return Err(format!(
                "{}: \"sluice\".\"entry\" = {entry:?} is not a relative .js or .mjs path inside the step",
                path.display()
            ));
        }
        if entry == "sluice_step.js" {
            return Err(format!(
                "{}: \"sluice\".\"entry\" = \"sluice_step.js\" is the SDK the build provides; pick another",
                path.display()
            ));
        }
        Ok(entry.to_string())
    }

    fn entry_file(&self, entry: &str) -> String {
        entry.to_string()
    }

    fn is_source(&self, name: &str) -> bool {
        name.ends_with(".js") || name.ends_with(".mjs")
    }

    fn skip_dir(&self, name: &str) -> bool {
        name == "node_modules"
    }

    fn tools_var(&self) -> &'static str {
        "SLUICE_JS_TOOLS"
    }

    fn sdk(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "sluice_step.js",
            include_str!("../../../guest-sdk/js/sluice_step.js"),
        )]
    }

    /// The tools directory `$SLUICE_JS_TOOLS` or `~/.cache/sluice`
    /// `/componentize-js-<version>`, installed with `npm ci` from the
    /// embedded lockfile on first use (under a lock); reinstalled when
    /// what was installed is not exactly these files.
    fn install(&self) -> Result<PathBuf, String> {
        let root = tools_root("SLUICE_JS_TOOLS")?;
        let name = format!("componentize-js-{COMPONENTIZE_JS_VERSION}");
        let dir = root.join(&name);
        let _lock = lock_tools(&root, &name)?;
        let want = tools_digest();
        let marker = dir.join(INSTALLED);
        if fs::read_to_string(&marker).is_ok_and(|have| have.trim() == want) {
            return Ok(dir);
        }
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        for (file, text) in TOOLS {
            let path = dir.join(file);
            fs::write(&path, text).map_err(io_err(&path))?;
        }
        let npm = std::env::var_os("SLUICE_NPM").unwrap_or_else(|| "npm".into());
        let mut cmd = clean_command(Path::new(&npm));
        cmd.current_dir(&dir).args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]);
        run_tool(
            cmd,
            &format!(
                "{} ci (JavaScript steps need Node.js 20+ and npm to install componentize-js {COMPONENTIZE_JS_VERSION})",
                Path::new(&npm).display()
            ),
        )?;
        fs::write(&marker, &want).map_err(io_err(&marker))?;
        Ok(dir)
    }

    fn build(
        &self,
        tools: &Path,
        stage: &Path,
        wit: &Path,
        entry: &str,
        out: &Path,
    ) -> Result<(), String> {
        let src = stage.join("src");
        let node = std::env::var_os("SLUICE_NODE").unwrap_or_else(|| "node".into());
        let mut cmd = clean_command(Path::new(&node));
        cmd.current_dir(&src)
            .arg(tools.join("componentize.mjs"))
            .arg(src.join(entry))
            .arg(wit)
            .arg("step")
            .arg(out)
            // The root ComponentizeJS maps as `/`: relative imports
            // (`./sluice_step.js`, `../sluice_step.js` from a subdirectory)
            // resolve inside the staged sources and nowhere else.
            .arg(&src);
        run_tool(cmd, "componentize-js").map(drop)
    }
}

/// The digest of the embedded tools files, as the install marker.
fn tools_digest() -> String {
    let mut all = Vec::new();
    for (file, text) in TOOLS {
        all.extend_from_slice(file.as_bytes());
        all.push(0);
        all.extend_from_slice(text.as_bytes());
        all.push(0);
    }
    crate::digest::Digest::of(&all).to_string()
}

#[cfg(test)]
mod tests {
    use super::super::tests::step_dir;
    use super::*;

    #[test]
    fn the_entry_is_named_and_checked() {
        let ok = step_dir(&[("package.json", r#"{"sluice": {"entry": "src/report.mjs"}}"#)]);
        assert_eq!(JavaScript.entry(ok.path()).unwrap(), "src/report.mjs");
        for (text, fragment) in [
            (r#"{"name": "x"}"#, "no \"sluice\": { \"entry\""),
            (r#"{"sluice": {"entry": 3}}"#, "must be a string"),
            (
                r#"{"sluice": {"entry": "../x.js"}}"#,
                "is not a relative .js",
            ),
            (
                r#"{"sluice": {"entry": "/abs.js"}}"#,
                "is not a relative .js",
            ),
            (
                r#"{"sluice": {"entry": "step.ts"}}"#,
                "is not a relative .js",
            ),
            (
                r#"{"sluice": {"entry": "sluice_step.js"}}"#,
                "the SDK the build provides",
            ),
            ("{", "package.json"),
        ] {
            let dir = step_dir(&[("package.json", text)]);
            let err = JavaScript.entry(dir.path()).unwrap_err();
            assert!(err.contains(fragment), "{text:?}: {err}");
        }
    }
}
