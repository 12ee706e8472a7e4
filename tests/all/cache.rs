//! The step cache is exact (HOSTILE.md 18): the key covers everything a
//! guest can observe, so a hit is exactly what the step would have
//! produced. Driven through the engine as a library with the `observe`
//! component, which writes out everything it can see.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use proptest::prelude::*;
use proptest::test_runner::Config;
use sluice_engine::digest::Digest;
use sluice_engine::run::{self, Options, Quiet};
use sluice_engine::store::Store;

use crate::harness::{Sandbox, compile_cache, component, step, toml_path};

/// Source files: the same bytes under two extensions (equal digests,
/// different media types), and other bytes.
const SOURCES: &[(&str, &str)] = &[
    ("a.txt", "the same bytes\n"),
    ("a.csv", "the same bytes\n"),
    ("b.txt", "other bytes\n"),
];
const STEPS: &[&str] = &["alpha", "beta", "gamma_2"];
const PARAM_NAMES: &[&str] = &["lr", "mode"];
const PARAM_VALUES: &[&str] = &["1", "01", "x"];
const INPUT_NAMES: &[&str] = &["in", "data", "in2"];
const MEMORY_MIB: &[u64] = &[64, 512];
const FUEL: &[u64] = &[10_000_000_000, 100_000_000_000];
const LOG_KIB: &[u64] = &[1, 2, 1024];
const TIMEOUT_S: &[u64] = &[60, 600];

/// One spec of a single `observe` step.
#[derive(Clone, Debug)]
struct Variation {
    step: &'static str,
    params: BTreeMap<&'static str, &'static str>,
    /// Input name → index into [`SOURCES`].
    inputs: BTreeMap<&'static str, usize>,
    seed: u64,
    extra_output: bool,
    memory_mib: u64,
    fuel: u64,
    log_kib: u64,
    timeout_s: u64,
    /// 0: `observe`; 1: the same code with an extra custom section (same
    /// behaviour, other digest).
    component: usize,
}

/// One field of a [`Variation`] changed.
#[derive(Clone, Copy, Debug)]
enum Change {
    Step,
    Param,
    Input,
    Seed,
    Outputs,
    Memory,
    Fuel,
    LogCap,
    Timeout,
    Component,
}

impl Change {
    /// Whether the guest can see this change (so its output must change),
    /// and whether the key must change.
    fn observable_and_keyed(self) -> (bool, bool) {
        match self {
            Change::Step
            | Change::Param
            | Change::Input
            | Change::Seed
            | Change::Outputs
            | Change::LogCap => (true, true),
            // They decide success, not bytes; a new component digest is new code.
            Change::Memory | Change::Fuel | Change::Component => (false, true),
            // Without a gpu grant the timeout is invisible to the guest.
            Change::Timeout => (false, false),
        }
    }
}

fn other<T: Copy + PartialEq>(from: &[T], current: T, pick: usize) -> T {
    let rest: Vec<T> = from.iter().copied().filter(|v| *v != current).collect();
    rest[pick % rest.len()]
}

impl Variation {
    fn changed(&self, change: Change, pick: usize) -> Variation {
        let mut v = self.clone();
        match change {
            Change::Step => v.step = other(STEPS, v.step, pick),
            Change::Param => {
                let name = PARAM_NAMES[pick % PARAM_NAMES.len()];
                match v.params.get(name).copied() {
                    // Remove it, or change its value.
                    Some(_) if pick.is_multiple_of(3) => {
                        v.params.remove(name);
                    }
                    Some(value) => {
                        v.params.insert(name, other(PARAM_VALUES, value, pick));
                    }
                    None => {
                        v.params
                            .insert(name, PARAM_VALUES[pick % PARAM_VALUES.len()]);
                    }
                }
            }
            Change::Input => {
                let name = INPUT_NAMES[pick % INPUT_NAMES.len()];
                match v.inputs.get(name).copied() {
                    Some(_) if pick.is_multiple_of(3) => {
                        v.inputs.remove(name);
                    }
                    // Rewired to another source: other bytes, or the same
                    // bytes under another media type.
                    Some(source) => {
                        v.inputs.insert(name, other(&[0, 1, 2], source, pick));
                    }
                    None => {
                        v.inputs.insert(name, pick % SOURCES.len());
                    }
                }
            }
            Change::Seed => v.seed += 1,
            Change::Outputs => v.extra_output = !v.extra_output,
            Change::Memory => v.memory_mib = other(MEMORY_MIB, v.memory_mib, pick),
            Change::Fuel => v.fuel = other(FUEL, v.fuel, pick),
            Change::LogCap => v.log_kib = other(LOG_KIB, v.log_kib, pick),
            Change::Timeout => v.timeout_s = other(TIMEOUT_S, v.timeout_s, pick),
            Change::Component => v.component = 1 - v.component,
        }
        v
    }

    fn spec(&self, components: &[PathBuf; 2]) -> String {
        let mut s = format!("name = \"observe\"\nseed = {}\n[sources]\n", self.seed);
        for (i, (file, _)) in SOURCES.iter().enumerate() {
            s.push_str(&format!("s{i} = {file:?}\n"));
        }
        s.push_str(&format!(
            "[steps.{}]\ncomponent = {}\n",
            self.step,
            toml_path(&components[self.component])
        ));
        let inputs: Vec<String> = self
            .inputs
            .iter()
            .map(|(name, source)| format!("{name} = \"sources.s{source}\""))
            .collect();
        s.push_str(&format!("inputs = {{ {} }}\n", inputs.join(", ")));
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}"))
            .collect();
        s.push_str(&format!("params = {{ {} }}\n", params.join(", ")));
        s.push_str(if self.extra_output {
            "outputs = [\"observed\", \"extra\"]\n"
        } else {
            "outputs = [\"observed\"]\n"
        });
        s.push_str(&format!(
            "limits = {{ memory_mib = {}, fuel = {}, log_kib = {}, timeout_s = {} }}\n",
            self.memory_mib, self.fuel, self.log_kib, self.timeout_s
        ));
        s
    }
}

fn variation() -> impl Strategy<Value = Variation> {
    (
        prop::sample::select(STEPS),
        prop::collection::btree_map(
            prop::sample::select(PARAM_NAMES),
            prop::sample::select(PARAM_VALUES),
            0..=2,
        ),
        prop::collection::btree_map(prop::sample::select(INPUT_NAMES), 0..SOURCES.len(), 0..=2),
        0..2u64,
        any::<bool>(),
        prop::sample::select(MEMORY_MIB),
        prop::sample::select(FUEL),
        prop::sample::select(LOG_KIB),
        prop::sample::select(TIMEOUT_S),
        0..2usize,
    )
        .prop_map(
            |(
                step,
                params,
                inputs,
                seed,
                extra_output,
                memory_mib,
                fuel,
                log_kib,
                timeout_s,
                component,
            )| {
                Variation {
                    step,
                    params,
                    inputs,
                    seed,
                    extra_output,
                    memory_mib,
                    fuel,
                    log_kib,
                    timeout_s,
                    component,
                }
            },
        )
}

fn change() -> impl Strategy<Value = Change> {
    prop::sample::select(vec![
        Change::Step,
        Change::Param,
        Change::Input,
        Change::Seed,
        Change::Outputs,
        Change::Memory,
        Change::Fuel,
        Change::LogCap,
        Change::Timeout,
        Change::Component,
    ])
}

/// What one execution of a variation gave.
#[derive(Debug)]
struct Observed {
    key: Digest,
    cached: bool,
    bytes: Vec<u8>,
}

/// A home shared by every case (so entries of earlier cases can answer
/// later ones), the two components, and every key seen with its bytes.
struct World {
    sb: Sandbox,
    components: [PathBuf; 2],
    seen: BTreeMap<Digest, Vec<u8>>,
    specs: usize,
}

impl World {
    fn new() -> World {
        let sb = Sandbox::new();
        for (file, text) in SOURCES {
            sb.write(file, text);
        }
        let observe = component("observe");
        // A custom section at the end of a component changes its digest,
        // not its behaviour.
        let mut wasm = std::fs::read(&observe).unwrap();
        wasm.extend_from_slice(&[0, 6, 5]);
        wasm.extend_from_slice(b"extra");
        let twin = sb.path().join("observe-twin.wasm");
        std::fs::write(&twin, wasm).unwrap();
        World {
            sb,
            components: [observe, twin],
            seen: BTreeMap::new(),
            specs: 0,
        }
    }

    fn execute(&mut self, v: &Variation, no_cache: bool) -> Observed {
        self.specs += 1;
        let spec = self.sb.write(
            &format!("spec{}.toml", self.specs),
            &v.spec(&self.components),
        );
        let pipeline = sluice_engine::spec::load(&spec, &[])
            .unwrap_or_else(|e| panic!("{e:?}\n{}", v.spec(&self.components)));
        let mut options = Options::new(self.sb.home());
        options.no_cache = no_cache;
        options.jobs = 1;
        options.compile_cache = Some(compile_cache());
        let summary = run::execute(&pipeline, &options, &Quiet).expect("the run executes");
        let report = &summary.steps[0];
        assert_eq!(report.error, None, "{v:?}");
        let digest = report.outputs["observed"].digest;
        Observed {
            key: report
                .cache_key
                .expect("an executed or cached step has a key"),
            cached: report.cached,
            bytes: Store::open(&self.sb.home())
                .unwrap()
                .read_bytes(&digest)
                .unwrap(),
        }
    }

    /// Runs `v` through the cache, then without it, and checks the cache
    /// answered exactly what execution produces; remembers key → bytes and
    /// checks no two executions with one key ever produced other bytes.
    fn check(&mut self, v: &Variation) -> Observed {
        let through_cache = self.execute(v, false);
        let executed = self.execute(v, true);
        assert!(!executed.cached);
        assert_eq!(through_cache.key, executed.key, "{v:?}");
        assert_eq!(
            String::from_utf8_lossy(&through_cache.bytes),
            String::from_utf8_lossy(&executed.bytes),
            "a cache hit must be what execution produces: {v:?}"
        );
        if let Some(earlier) = self.seen.get(&executed.key) {
            assert_eq!(
                String::from_utf8_lossy(earlier),
                String::from_utf8_lossy(&executed.bytes),
                "two executions with key {} observed different worlds: {v:?}",
                executed.key
            );
        }
        self.seen.insert(executed.key, executed.bytes.clone());
        executed
    }
}

fn world() -> &'static Mutex<World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    WORLD.get_or_init(|| Mutex::new(World::new()))
}

proptest! {
    // Each case executes four runs of a real component; 24 cases keep the
    // test to seconds. PROPTEST_CASES raises it for a longer run.
    #![proptest_config(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    })]

    /// (a) equal keys give equal bytes, through the cache and by execution;
    /// (b) any change a guest can observe changes its output and its key.
    #[test]
    fn equal_keys_give_equal_bytes_and_every_observable_change_changes_the_key(
        v in variation(),
        change in change(),
        pick in 0..6usize,
    ) {
        let mut w = world().lock().unwrap_or_else(|p| p.into_inner());
        let base = w.check(&v);
        let text = String::from_utf8_lossy(&base.bytes).into_owned();
        prop_assert!(text.contains(&format!("args: [{:?}]", v.step)), "{text}");
        let changed = v.changed(change, pick);
        let after = w.check(&changed);
        let (observable, keyed) = change.observable_and_keyed();
        prop_assert_eq!(
            base.bytes != after.bytes,
            observable,
            "{:?} is {}observable:\n{}\n---\n{}",
            change,
            if observable { "" } else { "not " },
            text,
            String::from_utf8_lossy(&after.bytes)
        );
        prop_assert_eq!(base.key != after.key, keyed, "{:?}: {:?} → {:?}", change, v, changed);
    }
}

#[test]
fn two_steps_differing_only_in_name_are_not_each_others_cache_hits() {
    let sb = Sandbox::new();
    sb.write("data.txt", "same input\n");
    let observe = toml_path(&component("observe"));
    let spec = sb.write(
        "twins.toml",
        &format!(
            r#"name = "twins"
[sources]
data = "data.txt"
[steps.alpha]
component = {observe}
inputs = {{ in = "sources.data" }}
params = {{ p = "1" }}
outputs = ["observed"]
[steps.beta]
component = {observe}
inputs = {{ in = "sources.data" }}
params = {{ p = "1" }}
outputs = ["observed"]
"#
        ),
    );
    let (run, json) = sb.run_json(&spec, &["--jobs", "1"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let (alpha, beta) = (step(&json, "alpha"), step(&json, "beta"));
    assert_eq!(alpha["status"], "succeeded");
    assert_eq!(beta["status"], "succeeded", "beta is not alpha's cache hit");
    assert_ne!(alpha["cache_key"], beta["cache_key"]);
    let cat = |s: &serde_json::Value| {
        let out = sb.sluice(&[
            "artifact",
            "cat",
            s["outputs"]["observed"]["digest"].as_str().unwrap(),
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    };
    let (a, b) = (cat(alpha), cat(beta));
    assert!(a.contains("args: [\"alpha\"]"), "{a}");
    assert!(b.contains("args: [\"beta\"]"), "{b}");
    assert_ne!(a, b);
}

/// The same bytes under another media type are another input to a guest.
#[test]
fn an_input_under_another_media_type_is_not_a_cache_hit() {
    let sb = Sandbox::new();
    sb.write("data.txt", "a,b\n");
    sb.write("data.csv", "a,b\n");
    let observe = toml_path(&component("observe"));
    let spec = |file: &str| {
        sb.write(
            &format!("{file}.toml"),
            &format!(
                "name = \"media\"\n[sources]\nd = {file:?}\n[steps.s]\ncomponent = {observe}\ninputs = {{ in = \"sources.d\" }}\noutputs = [\"observed\"]\n"
            ),
        )
    };
    let (_, txt) = sb.run_json(&spec("data.txt"), &[]);
    let (run, csv) = sb.run_json(&spec("data.csv"), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(step(&txt, "s")["status"], "succeeded");
    assert_eq!(step(&csv, "s")["status"], "succeeded", "not a cache hit");
    assert_ne!(
        step(&txt, "s")["outputs"]["observed"]["digest"],
        step(&csv, "s")["outputs"]["observed"]["digest"]
    );
}

#[test]
fn every_recorded_cache_key_is_the_digest_of_the_recorded_attempt_description() {
    let (_sb, _, started) = crate::attempt::recorded_chain();
    let mut checked = Vec::new();
    for event in &started {
        // An auditor's recomputation: the recorded description, serialized
        // compactly, hashes to the recorded key.
        let description = serde_json::to_vec(&event["attempt_description"]).unwrap();
        assert_eq!(
            Digest::of(&description).to_string(),
            event["cache_key"].as_str().unwrap(),
            "{event}"
        );
        assert_eq!(event["attempt_description"]["step"], event["step"]);
        checked.push(event["step"].as_str().unwrap().to_string());
    }
    assert_eq!(checked, ["a", "b"]);
}
