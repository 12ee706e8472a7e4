//! Dependency direction (DESIGN.md "Workspace layout"), read from
//! `cargo metadata`.

use std::collections::BTreeMap;
use std::process::Command;

use crate::harness::repo;

fn dependencies() -> BTreeMap<String, Vec<String>> {
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
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_string())
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
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
