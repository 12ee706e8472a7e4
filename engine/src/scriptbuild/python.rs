//! Python steps: `pyproject.toml` with `[tool.sluice] module = "…"`, built
//! by componentize-py (pinned) in a virtual environment the engine
//! creates once, with an empty `VIRTUAL_ENV` so no host site-packages
//! leak into the component.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{Toolchain, clean_command, io_err, lock_tools, read_marker, run_tool, tools_root};

/// The componentize-py release every Python step is built with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// Module names the build itself provides.
const RESERVED_MODULES: &[&str] = &["sluice_step", "wit_world", "componentize_py_types"];

pub(super) struct Python;

impl Toolchain for Python {
    fn memo_dir(&self) -> &'static str {
        "sluice-python"
    }

    fn build_format(&self) -> &'static str {
        "sluice-python-build/2"
    }

    fn toolchain(&self) -> String {
        format!("componentize-py {COMPONENTIZE_PY_VERSION}")
    }

    /// `[tool.sluice] module` of the step's `pyproject.toml`.
    fn entry(&self, dir: &Path) -> Result<String, String> {
        let path = dir.join("pyproject.toml");
        let text = read_marker(&path)?;
        let doc: toml::Table =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let module = doc
            .get("tool")
            .and_then(|t| t.get("sluice"))
            .and_then(|t| t.get("module"))
            .ok_or_else(|| {
                format!(
                    "{}: no [tool.sluice] module = \"…\" naming the module with the @step function",
                    path.display()
                )
            })?
            .as_str()
            .ok_or_else(|| format!("{}: [tool.sluice] module must be a string", path.display()))?;
        let valid = !module.is_empty()
            && !module.starts_with(|c: char| c.is_ascii_digit())
            && module
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "{}: [tool.sluice] module = {module:?} is not a Python module name",
                path.display()
            ));
        }
        if RESERVED_MODULES.contains(&module) {
            return Err(format!(
                "{}: [tool.sluice] module = \"{module}\" is a name the build provides; pick another",
                path.display()
            ));
        }
        Ok(module.to_string())
    }

    fn entry_file(&self, entry: &str) -> String {
        format!("{entry}.py")
    }

    fn is_source(&self, name: &str) -> bool {
        name.ends_with(".py")
    }

    fn skip_dir(&self, name: &str) -> bool {
        name == "__pycache__"
    }

    fn tools_var(&self) -> &'static str {
        "SLUICE_PYTHON_TOOLS"
    }

    fn sdk(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "sluice_step/__init__.py",
            include_str!("../../../guest-sdk/python/sluice_step/__init__.py"),
        )]
    }

    /// `$SLUICE_COMPONENTIZE_PY` if set, else the engine's own virtual
    /// environment (created on first use, under a lock, in
    /// `$SLUICE_PYTHON_TOOLS` or `~/.cache/sluice`); either is checked to
    /// be the pinned version.
    fn install(&self) -> Result<PathBuf, String> {
        if let Some(path) = std::env::var_os("SLUICE_COMPONENTIZE_PY") {
            let path = PathBuf::from(path);
            check_version(&path)?;
            return Ok(path);
        }
        let root = tools_root("SLUICE_PYTHON_TOOLS")?;
        let name = format!("componentize-py-{COMPONENTIZE_PY_VERSION}");
        let venv = root.join(&name);
        let exe = venv.join("bin").join("componentize-py");
        let lock = lock_tools(&root, &name)?;
        if check_version(&exe).is_ok() {
            return Ok(exe);
        }
        let _ = fs::remove_dir_all(&venv);
        let python = std::env::var_os("SLUICE_PYTHON").unwrap_or_else(|| "python3".into());
        let mut venv_cmd = python_command(Path::new(&python));
        venv_cmd.args(["-m", "venv"]).arg(&venv);
        run_tool(
            venv_cmd,
            &format!(
                "{} -m venv (Python steps need Python 3 with venv to install componentize-py)",
                Path::new(&python).display()
            ),
        )?;
        let mut pip = python_command(&venv.join("bin").join("pip"));
        pip.args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}"));
        run_tool(
            pip,
            &format!("pip install componentize-py=={COMPONENTIZE_PY_VERSION}"),
        )?;
        check_version(&exe)?;
        let _ = writeln!(&lock, "{COMPONENTIZE_PY_VERSION}");
        Ok(exe)
    }

    fn build(
        &self,
        tool: &Path,
        stage: &Path,
        wit: &Path,
        module: &str,
        out: &Path,
    ) -> Result<(), String> {
        let src = stage.join("src");
        let no_venv = stage.join("no-venv");
        fs::create_dir_all(&no_venv).map_err(io_err(&no_venv))?;
        let mut cmd = python_command(tool);
        cmd.current_dir(&src)
            .env("VIRTUAL_ENV", &no_venv)
            .arg("--quiet")
            .arg("-d")
            .arg(wit)
            .args(["-w", "step", "componentize", module, "-p"])
            .arg(&src)
            .arg("-o")
            .arg(out);
        run_tool(cmd, "componentize-py").map(drop).map_err(|e| {
            // A module named like one of the standard library's imports
            // that one instead, which has no `WitWorld`.
            if e.contains(&format!("module '{module}' has no attribute 'WitWorld'")) {
                format!(
                    "{e}\n(is `{module}` the name of a Python standard-library module? rename the module and [tool.sluice] module)"
                )
            } else {
                e
            }
        })
    }
}

/// A clean command for Python tools: no bytecode files, no user site.
fn python_command(program: &Path) -> std::process::Command {
    let mut cmd = clean_command(program);
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1");
    cmd
}

/// `componentize-py --version` names the pinned version.
fn check_version(exe: &Path) -> Result<(), String> {
    let mut cmd = python_command(exe);
    cmd.arg("--version");
    let out = run_tool(cmd, &exe.display().to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim() == format!("componentize-py {COMPONENTIZE_PY_VERSION}") {
        Ok(())
    } else {
        Err(format!(
            "{} is {:?}; Python steps are built with componentize-py {COMPONENTIZE_PY_VERSION}",
            exe.display(),
            text.trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::step_dir;
    use super::*;

    #[test]
    fn the_module_is_named_and_checked() {
        let ok = step_dir(&[("pyproject.toml", "[tool.sluice]\nmodule = \"report\"\n")]);
        assert_eq!(Python.entry(ok.path()).unwrap(), "report");
        for (text, fragment) in [
            ("[project]\nname = \"x\"\n", "no [tool.sluice] module"),
            ("[tool.sluice]\nmodule = 3\n", "must be a string"),
            (
                "[tool.sluice]\nmodule = \"a-b\"\n",
                "is not a Python module name",
            ),
            (
                "[tool.sluice]\nmodule = \"../x\"\n",
                "is not a Python module name",
            ),
            (
                "[tool.sluice]\nmodule = \"sluice_step\"\n",
                "a name the build provides",
            ),
            ("[tool.sluice\n", "pyproject.toml"),
        ] {
            let dir = step_dir(&[("pyproject.toml", text)]);
            let err = Python.entry(dir.path()).unwrap_err();
            assert!(err.contains(fragment), "{text:?}: {err}");
        }
    }
}
