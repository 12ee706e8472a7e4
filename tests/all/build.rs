//! The step-crate builder's freshness check: an unchanged crate is served
//! from its stored fingerprint without running cargo; any change to what
//! the component is built from goes back to cargo.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use sluice_engine::build::build_crates_using;

use crate::harness::{Sandbox, repo, step, toml_path};

/// A cargo that does not exist: a build that needs cargo fails with
/// "cannot run cargo", one served by the fingerprint succeeds.
const NO_CARGO: &str = "/nonexistent/sluice-test/cargo";

fn real_cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A standalone `step` cdylib crate with a path dependency `dep`, in a
/// temp dir (its own lock file and target dir).
fn two_crates(dir: &Path) -> PathBuf {
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "step/Cargo.toml",
        "[package]\nname = \"fp-step\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nfp-dep = { path = \"../dep\" }\n",
    );
    write(
        "step/src/lib.rs",
        "#[unsafe(no_mangle)]\npub extern \"C\" fn answer() -> u32 {\n    fp_dep::VALUE + 1\n}\n",
    );
    write(
        "dep/Cargo.toml",
        "[package]\nname = \"fp-dep\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
    );
    write("dep/src/lib.rs", "pub const VALUE: u32 = 41;\n");
    dir.join("step")
}

fn build(cargo: &OsStr, dir: &Path) -> Result<PathBuf, String> {
    build_crates_using(cargo, &[dir.to_path_buf()])
        .remove(dir)
        .expect("a result for every crate")
        .map_err(|e| e.to_string())
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Builds with the real cargo, then checks that the fingerprint serves the
/// crate without cargo.
fn built_and_fresh(dir: &Path) -> (PathBuf, Vec<u8>) {
    let wasm = build(&real_cargo(), dir).expect("first build");
    let again = build(OsStr::new(NO_CARGO), dir).expect("unchanged crate needs no cargo");
    assert_eq!(again, wasm);
    (wasm.clone(), bytes(&wasm))
}

/// After a change: without cargo the build must fail (cargo was needed),
/// with cargo it yields a different component, fresh again afterwards.
fn needs_cargo_and_changes(dir: &Path, before: &[u8]) {
    let err = build(OsStr::new(NO_CARGO), dir).expect_err("a changed crate must go to cargo");
    assert!(err.contains("cannot run cargo"), "{err}");
    let wasm = build(&real_cargo(), dir).expect("rebuild");
    assert_ne!(bytes(&wasm), before, "the rebuilt component must differ");
    build(OsStr::new(NO_CARGO), dir).expect("fresh again after the rebuild");
}

#[test]
fn unchanged_step_crate_is_served_without_running_cargo() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = two_crates(tmp.path());
    let (wasm, before) = built_and_fresh(&dir);
    let again = build(OsStr::new(NO_CARGO), &dir).unwrap();
    assert_eq!(bytes(&again), before);
    assert!(wasm.ends_with("target/sluice-steps/wasm32-wasip2/release/fp_step.wasm"));
}

#[test]
fn editing_a_source_file_rebuilds_the_component() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = two_crates(tmp.path());
    let (_, before) = built_and_fresh(&dir);
    let lib = dir.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, text.replace("+ 1", "+ 2")).unwrap();
    needs_cargo_and_changes(&dir, &before);
}

#[test]
fn editing_a_path_dependency_rebuilds_the_component() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = two_crates(tmp.path());
    let (_, before) = built_and_fresh(&dir);
    std::fs::write(
        tmp.path().join("dep/src/lib.rs"),
        "pub const VALUE: u32 = 99;\n",
    )
    .unwrap();
    needs_cargo_and_changes(&dir, &before);
}

#[test]
fn editing_the_manifest_or_adding_a_source_file_goes_to_cargo() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = two_crates(tmp.path());
    built_and_fresh(&dir);
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{text}\n[features]\nextra = []\n")).unwrap();
    let err = build(OsStr::new(NO_CARGO), &dir).expect_err("manifest edit");
    assert!(err.contains("cannot run cargo"), "{err}");
    build(&real_cargo(), &dir).unwrap();
    build(OsStr::new(NO_CARGO), &dir).expect("fresh after the rebuild");

    std::fs::write(dir.join("src/unused.rs"), "// not a module yet\n").unwrap();
    let err = build(OsStr::new(NO_CARGO), &dir).expect_err("new file under src/");
    assert!(err.contains("cannot run cargo"), "{err}");
}

#[test]
fn a_deleted_or_altered_component_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = two_crates(tmp.path());
    let (wasm, before) = built_and_fresh(&dir);
    std::fs::remove_file(&wasm).unwrap();
    let err = build(OsStr::new(NO_CARGO), &dir).expect_err("deleted component");
    assert!(err.contains("cannot run cargo"), "{err}");
    let rebuilt = build(&real_cargo(), &dir).unwrap();
    assert_eq!(bytes(&rebuilt), before, "same inputs, same component");

    std::fs::write(&wasm, b"\0asm tampered").unwrap();
    let err = build(OsStr::new(NO_CARGO), &dir).expect_err("altered component");
    assert!(err.contains("cannot run cargo"), "{err}");
}

#[test]
fn a_crate_with_a_build_script_always_goes_to_cargo() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = two_crates(tmp.path());
    std::fs::write(dir.join("build.rs"), "fn main() {}\n").unwrap();
    build(&real_cargo(), &dir).expect("build");
    let err = build(OsStr::new(NO_CARGO), &dir).expect_err("build scripts are cargo's to judge");
    assert!(err.contains("cannot run cargo"), "{err}");
}

/// The user-facing path: `sluice run` on a crate directory, the second
/// time with no cargo reachable at all.
#[test]
fn rerun_on_an_unchanged_crate_directory_runs_without_cargo() {
    let sb = Sandbox::new();
    sb.write("in.txt", "seed\n");
    let spec = sb.write(
        "p.toml",
        &format!(
            "name = \"fp\"\n[sources]\ntext = \"in.txt\"\n[steps.a]\ncomponent = {}\ninputs = {{ in = \"sources.text\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\n",
            toml_path(&repo().join("examples/steps/append"))
        ),
    );
    let home = sb.home();
    let args = [
        "run",
        spec.to_str().unwrap(),
        "--json",
        "--home",
        home.to_str().unwrap(),
    ];
    let first = sb.sluice_env(&args, &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let second = sb.sluice_env(&args, &[("CARGO", NO_CARGO), ("PATH", "/nonexistent")]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        step(&second.json(), "a")["status"],
        "cached",
        "{}",
        second.stdout
    );
}

/// A step crate whose build script never ends (and leaves a child holding
/// cargo's output open) is stopped at the build deadline with everything
/// cargo started, and the run fails naming the step and why.
#[test]
fn a_build_script_that_never_ends_is_stopped_at_the_build_deadline() {
    let sb = Sandbox::new();
    sb.write("in.txt", "seed\n");
    sb.write(
        "hang/Cargo.toml",
        "[package]\nname = \"hang-step\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n",
    );
    sb.write("hang/src/lib.rs", "");
    sb.write(
        "hang/build.rs",
        "fn main() {\n    let _child = std::process::Command::new(\"sleep\").arg(\"600\").spawn();\n    loop {\n        std::thread::park();\n    }\n}\n",
    );
    let spec = sb.write(
        "p.toml",
        "name = \"hang\"\n[sources]\ntext = \"in.txt\"\n[steps.a]\ncomponent = \"hang\"\ninputs = { in = \"sources.text\" }\noutputs = [\"out\"]\n",
    );
    let home = sb.home();
    let out = sb.sluice_env(
        &[
            "run",
            spec.to_str().unwrap(),
            "--json",
            "--home",
            home.to_str().unwrap(),
        ],
        &[("SLUICE_BUILD_TIMEOUT_S", "5")],
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let json = out.json();
    let a = step(&json, "a");
    assert_eq!(a["status"], "failed", "{}", out.stdout);
    assert_eq!(a["error"]["class"], "step");
    assert_eq!(
        a["error"]["message"],
        format!(
            "cannot build step crate {}: cargo build did not finish within 5 s and was stopped (build scripts and procedural macros run at build time: does one loop or wait?)",
            sb.path().join("hang").display()
        )
    );
}
