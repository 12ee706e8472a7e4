//! Dependency direction (DESIGN.md "Workspace layout"), read from
//! `cargo metadata`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::harness::repo;

/// A workspace package as `cargo metadata` describes it.
struct Package {
    /// Absolute path of its `Cargo.toml`.
    manifest_path: PathBuf,
    /// Names of the packages it depends on (normal, dev and build).
    dependencies: Vec<String>,
    /// Names of its binary targets.
    bins: Vec<String>,
}

fn packages() -> BTreeMap<String, Package> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let dependencies = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_string())
                .collect();
            let manifest_path = PathBuf::from(p["manifest_path"].as_str().unwrap());
            let bins = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect();
            (
                p["name"].as_str().unwrap().to_string(),
                Package {
                    manifest_path,
                    dependencies,
                    bins,
                },
            )
        })
        .collect()
}

fn dependencies() -> BTreeMap<String, Vec<String>> {
    packages()
        .into_iter()
        .map(|(name, p)| (name, p.dependencies))
        .collect()
}

#[test]
fn crates_depend_only_in_the_designed_direction() {
    let deps = dependencies();
    let sluice = |name: &str| -> Vec<String> {
        deps[name]
            .iter()
            .filter(|d| d.starts_with("sluice-"))
            .cloned()
            .collect()
    };
    assert!(
        sluice("sluice-host-api").is_empty(),
        "host-api must not know the engine"
    );
    assert!(!deps["sluice-host-api"].iter().any(|d| d == "sluice-engine"));
    // wit-bindgen, plus the Arrow crates of the optional `arrow` feature.
    assert_eq!(
        deps["sluice-guest"],
        [
            "arrow-array",
            "arrow-ipc",
            "arrow-schema",
            "arrow-select",
            "wit-bindgen"
        ]
    );
    for (name, d) in &deps {
        if name.starts_with("step-") || name == "hostile" || name == "gpu-abuse" {
            let host: Vec<&String> = d
                .iter()
                .filter(|x| {
                    matches!(
                        x.as_str(),
                        "sluice-engine" | "sluice-host-api" | "wasmtime" | "wasmtime-wasi"
                    )
                })
                .collect();
            assert!(
                host.is_empty(),
                "guest crate {name} depends on host crates {host:?}"
            );
            assert!(
                d.iter().any(|x| x == "sluice-guest"),
                "{name} must use the guest SDK"
            );
        }
    }
    assert!(deps.keys().filter(|k| k.starts_with("step-")).count() >= 8);
}

/// The engine's module layers, lowest first (ARCHITECTURE.md "Layers"). A
/// module may use modules of lower layers only: never a module of its own
/// layer or above. Submodules (`run/runner.rs`) belong to their top-level
/// module. Test code (`#[cfg(test)] mod tests`) is exempt.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &["digest", "fault", "quoting", "limits", "expr", "position"],
    ),
    (
        "vocabulary over IO",
        &[
            "failure", "durable", "artifact", "policy", "section", "remote", "tool",
        ],
    ),
    ("model and storage", &["spec", "store"]),
    (
        "records and the sandbox",
        &[
            "record",
            "sandbox",
            "transparency",
            "seal",
            "scheduler",
            "build",
            "scriptbuild",
            "scaffold",
        ],
    ),
    ("gpu jobs", &["gpu"]),
    ("the attempt", &["attempt", "cache", "report"]),
    ("executors", &["executor"]),
    ("audit", &["verify"]),
    ("runs", &["run", "replay"]),
    ("front-end helpers", &["hook", "junit", "lineage"]),
    ("configuration", &["config"]),
    ("service", &["server"]),
    ("command line", &["cli"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// Every `crate::MODULE` a source file names outside its test module.
fn crate_edges(text: &str) -> Vec<(usize, String)> {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut edges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let name: String = rest[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            edges.push((n + 1, name));
            rest = &rest[at + 7..];
        }
    }
    edges
}

fn engine_sources() -> Vec<(String, String, String)> {
    let root = repo().join("engine/src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let module = rel
                    .split('/')
                    .next()
                    .unwrap()
                    .trim_end_matches(".rs")
                    .to_string();
                out.push((rel, module, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn engine_modules_use_only_lower_layers() {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (file, module, text) in engine_sources() {
        if module == "lib" || module == "main" {
            continue;
        }
        seen.insert(module.clone());
        let Some(from) = layer_of(&module) else {
            problems.push(format!(
                "engine/src/{file}: module `{module}` is in no layer"
            ));
            continue;
        };
        for (line, target) in crate_edges(&text) {
            if target == module {
                continue;
            }
            match layer_of(&target) {
                Some(to) if to < from => {}
                Some(to) => problems.push(format!(
                    "engine/src/{file}:{line}: `{module}` ({}) uses `{target}` ({}), which is not below it",
                    LAYERS[from].0, LAYERS[to].0
                )),
                None => problems.push(format!(
                    "engine/src/{file}:{line}: `{module}` uses `{target}`, which is in no layer"
                )),
            }
        }
    }
    for (_, modules) in LAYERS {
        for m in *modules {
            assert!(
                seen.contains(*m),
                "layer table names `{m}`, which does not exist"
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn only_the_sandbox_configures_wasmtime() {
    let offenders: Vec<String> = engine_sources()
        .into_iter()
        .filter(|(_, module, _)| module != "sandbox")
        .flat_map(|(file, _, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, l)| {
                    let code = l.split("//").next().unwrap_or("");
                    code.contains("wasmtime::") || code.contains("wasmtime_wasi")
                })
                .map(|(n, _)| format!("engine/src/{file}:{}", n + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "wasmtime used outside the sandbox: {offenders:?}"
    );
}

#[test]
fn the_layer_check_catches_an_upward_edge() {
    let edges = crate_edges(
        "use crate::run::RunId;\n// crate::cli in a comment\n#[cfg(test)]\nmod tests {\n use crate::cli;\n}\n",
    );
    assert_eq!(edges, vec![(1, "run".to_string())]);
    assert!(layer_of("run") > layer_of("store"));
}
#[test]
fn no_crate_outside_examples_depends_on_a_crate_under_examples() {
    let packages = packages();
    let root = repo().canonicalize().unwrap();
    let examples = root.join("examples");
    let is_example = |p: &Package| p.manifest_path.starts_with(&examples);
    let rel = |p: &Package| {
        p.manifest_path
            .strip_prefix(&root)
            .unwrap_or(&p.manifest_path)
            .display()
            .to_string()
    };
    assert!(
        packages.values().filter(|p| is_example(p)).count() >= 8,
        "no package found under {} (is the path comparison broken?)",
        examples.display()
    );
    let edges: Vec<String> = packages
        .iter()
        .filter(|(_, p)| !is_example(p))
        .flat_map(|(name, p)| {
            p.dependencies
                .iter()
                .filter_map(|d| packages.get(d).filter(|q| is_example(q)).map(|q| (d, q)))
                .map(move |(d, q)| format!("{name} ({}) -> {d} ({})", rel(p), rel(q)))
        })
        .collect();
    assert!(
        edges.is_empty(),
        "crates outside examples/ must not depend on crates under examples/ (the engine may use a worker crate, never an example): {}",
        edges.join("; ")
    );
}

/// The README's first command is `cargo run --release -- run ...` at the
/// workspace root: it works only while `sluice` is the one binary there
/// (a second one, even in a library crate, makes `cargo run` ask which).
#[test]
fn sluice_is_the_only_binary_so_cargo_run_means_sluice() {
    let bins: Vec<(String, String)> = packages()
        .into_iter()
        .flat_map(|(name, p)| p.bins.into_iter().map(move |b| (name.clone(), b)))
        .collect();
    assert_eq!(
        bins,
        vec![("sluice-engine".to_string(), "sluice".to_string())],
        "make other programs examples (`cargo run --example`)"
    );
}
