//! The attempt seam (`sluice_engine::attempt`): a recorded description is
//! all it takes to run an attempt again — in a fresh sandbox, after a trip
//! through JSON, as another process would receive it — under the same key
//! and to the same output bytes; a description this engine cannot honour is
//! refused before anything runs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::Value;
use sluice_engine::attempt::{self, Description, Env, Outcome, Request};
use sluice_engine::failure::FailureClass;
use sluice_engine::store::Store;

use crate::harness::{Sandbox, compile_cache, component, step, toml_path};

/// Runs a two-step `append` chain (`a` → `b`) and returns the sandbox,
/// the run's summary and its `step-started` events.
pub(crate) fn recorded_chain() -> (Sandbox, Value, Vec<Value>) {
    let sb = Sandbox::new();
    sb.write("in.txt", "input\n");
    let append = toml_path(&component("append"));
    let spec = sb.write(
        "seam.toml",
        &format!(
            "name = \"seam\"\nseed = 11\n[sources]\nt = \"in.txt\"\n\
             [steps.a]\ncomponent = {append}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"a\" }}\noutputs = [\"out\"]\n\
             [steps.b]\ncomponent = {append}\ninputs = {{ in = \"a.out\" }}\nparams = {{ line = \"b\" }}\noutputs = [\"out\"]\n"
        ),
    );
    let (run, json) = sb.run_json(&spec, &[]);
    assert_eq!(run.code, 0, "{json:#}");
    let id = json["run_id"].as_str().unwrap();
    let record =
        std::fs::read_to_string(sb.home().join("runs").join(id).join("record.jsonl")).unwrap();
    let started = record
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "step-started")
        .collect();
    (sb, json, started)
}

/// Runs `request` through the seam in a fresh sandbox over `home`'s store.
fn run_in_fresh_sandbox(home: &Path, request: &Request, component: &Description) -> Outcome {
    let store = Arc::new(Store::open(home).unwrap());
    let sandbox = sluice_engine::sandbox::Sandbox::new(&compile_cache(), 1).unwrap();
    let prepared = attempt::prepare_from_store(
        &sandbox,
        &store,
        &component.component,
        Path::new("append.wasm"),
    )
    .unwrap();
    attempt::run(
        request,
        &Env {
            sandbox: &sandbox,
            component: &prepared,
            store: &store,
            gpu: &|| unreachable!("no step of this chain has a gpu grant"),
            gpu_jobs: &Arc::new(AtomicU64::new(0)),
            cancel: None,
        },
    )
}

#[test]
fn a_recorded_description_reruns_through_the_seam_to_the_same_key_and_bytes() {
    let (sb, summary, started) = recorded_chain();
    assert_eq!(started.len(), 2);
    for event in &started {
        let name = event["step"].as_str().unwrap();
        let description: Description =
            serde_json::from_value(event["attempt_description"].clone()).unwrap();
        assert_eq!(
            description.key().to_string(),
            event["cache_key"].as_str().unwrap()
        );
        // As another process would get it: bytes, not the run's structs.
        let wire = serde_json::to_vec(&Request {
            description: description.clone(),
            attempt: 1,
            timeout_s: 60,
        })
        .unwrap();
        let request: Request = serde_json::from_slice(&wire).unwrap();
        let outcome = run_in_fresh_sandbox(&sb.home(), &request, &description);
        assert_eq!(outcome.failure, None, "{name}");
        assert_eq!(
            outcome.outputs["out"].digest.to_string(),
            step(&summary, name)["outputs"]["out"]["digest"]
                .as_str()
                .unwrap(),
            "{name}: the seam reproduces the run's bytes"
        );
        assert!(outcome.fuel_used > 0);
        assert!(outcome.compiled.is_some());
        // The outcome travels back as bytes too.
        let back: Outcome = serde_json::from_slice(&serde_json::to_vec(&outcome).unwrap()).unwrap();
        assert_eq!(back, outcome);
    }
}

#[test]
fn a_description_for_another_engine_or_component_is_refused_before_anything_runs() {
    let (sb, _, started) = recorded_chain();
    let description: Description =
        serde_json::from_value(started[0]["attempt_description"].clone()).unwrap();
    let mut other_engine = description.clone();
    other_engine.engine.sluice = "0.0.0".into();
    let outcome = run_in_fresh_sandbox(
        &sb.home(),
        &Request {
            description: other_engine,
            attempt: 1,
            timeout_s: 60,
        },
        &description,
    );
    let failure = outcome.failure.unwrap();
    assert_eq!(failure.class, FailureClass::Engine);
    assert!(
        failure
            .message
            .starts_with("attempt description of step `a` is for another engine: "),
        "{}",
        failure.message
    );
    assert_eq!(outcome.fuel_used, 0, "nothing ran");
    assert!(outcome.outputs.is_empty());

    // A description naming other code than the prepared component.
    let mut other_code = description.clone();
    other_code.component = sluice_engine::digest::Digest::of(b"other code");
    let outcome = run_in_fresh_sandbox(
        &sb.home(),
        &Request {
            description: other_code,
            attempt: 1,
            timeout_s: 60,
        },
        &description,
    );
    let failure = outcome.failure.unwrap();
    assert_eq!(failure.class, FailureClass::Engine);
    assert!(
        failure.message.contains("the prepared component is")
            && failure.message.contains("the description names sha256:"),
        "{}",
        failure.message
    );
    assert_eq!(outcome.fuel_used, 0, "nothing ran");
}
