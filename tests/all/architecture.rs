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
            (
                p["name"].as_str().unwrap().to_string(),
                Package {
                    manifest_path,
                    dependencies,
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
    assert_eq!(deps["sluice-guest"], vec!["wit-bindgen".to_string()]);
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
