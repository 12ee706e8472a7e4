//! The step cache: `<home>/cache/<key>.json` → the outputs and metrics of a
//! successful execution.
//!
//! Invariant: the key is the digest of an [`AttemptDescription`], which
//! holds everything a guest can observe during an attempt and everything
//! that decides whether the attempt succeeds; so two attempts with equal
//! keys produce equal bytes, and a hit is used only if every output blob
//! verifies. Only the engine writes entries.
//! Boundary: reads and writes entry files; does not execute anything.
//!
//! # What is in the key, and why
//!
//! A guest reaches the world through `wit/step.wit` (via `StepHost`) and
//! WASI. Each field of [`AttemptDescription`] answers one thing it can see:
//!
//! | field | what the guest observes through it |
//! | --- | --- |
//! | `version` | [`CACHE_VERSION`]: bumped when the meaning of the key changes |
//! | `engine` | sluice and wasmtime versions, the WIT world and [`DETERMINISM`]: host behaviour (messages, WASI semantics, float canonicalisation) |
//! | `host` | host constants a guest can detect: read chunk size, metric text cap (media types longer are refused), and the caps that end an attempt (metric points, host calls, handles, stack, table elements) |
//! | `component` | the code itself |
//! | `step` | the step name: `argv[0]`, the seeds, and the text of every host error message |
//! | `args` | `std::env::args()` exactly as the sandbox passes them |
//! | `answers` | the virtual clocks' start and step and the derived random seeds (run seed + step name), as the record keeps them |
//! | `params` | `params.get`/`params.all` |
//! | `inputs` | `artifacts.inputs()`: name, digest, size and media type of each input (and so its bytes) |
//! | `outputs` | `artifacts.outputs()` and which `create` calls are refused |
//! | `limits` | memory, fuel and output bytes decide success (past them the attempt traps, so a hit must not report success where execution fails); the log cap is visible (a write past it fails and the guest can go on); the time limit is kept out (a success under it is the same bytes, and it depends on the machine) except for steps with a gpu grant, where it bounds each job's deadline and a guest sees a `timed-out` job |
//! | `gpu` | the grant: which worker, how many jobs (`quota` answers) |
//!
//! Not in the key, because a guest cannot observe it: the attempt number
//! (seeds deliberately exclude it), the run id, the wall-clock time, stdin
//! (always empty), the environment (always empty), the working directory
//! (none) and preopened directories (none). What a gpu worker answers and
//! `gpu.devices()` depend on the machine; a grant in the key is the
//! step's request to cache such results anyway (and the entry keeps the job
//! records so the run stays replayable).
//!
//! Anything that changes what a guest sees must land here: add a field to
//! [`AttemptDescription`] (which bumps every key) or bump [`CACHE_VERSION`].

use crate::artifact::OutputRef;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::limits;
use crate::sandbox::{self, AttemptSpec};
use crate::store::Store;

/// Bumped whenever the meaning of a key or entry changes. 2: the key became
/// the digest of an [`AttemptDescription`] (step name, args, seeds, input
/// sizes and media types, the log cap and host constants added).
pub const CACHE_VERSION: u32 = 2;

/// Names the determinism settings a cached result was produced under.
pub const DETERMINISM: &str = "nan-canonicalization,relaxed-simd-deterministic,no-threads,virtual-clocks-v1,chacha20-random-v1";

/// Everything one attempt of a step can observe, and everything that decides
/// whether it succeeds (see the module docs for why each field is here).
/// Its canonical JSON (fixed field order, maps sorted by key) is hashed into
/// the cache key; it is serialisable as is, so it can be recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttemptDescription<'a> {
    /// [`CACHE_VERSION`].
    pub version: u32,
    /// Versions and settings of the host.
    pub engine: EngineDescription,
    /// Host constants a guest can detect.
    pub host: HostConstants,
    /// Component digest.
    pub component: Digest,
    /// The step name.
    pub step: &'a str,
    /// The guest's `argv`.
    pub args: Vec<&'a str>,
    /// The virtual clocks and random seeds, as [`sandbox::host_answers`]
    /// gives them to the guest (and to the record).
    pub answers: serde_json::Value,
    /// Resolved params.
    pub params: &'a BTreeMap<String, String>,
    /// Inputs by name.
    pub inputs: BTreeMap<&'a str, InputDescription<'a>>,
    /// Declared outputs, sorted and deduplicated (as `outputs()` answers).
    pub outputs: Vec<&'a str>,
    /// The limits that decide success or that a guest can detect.
    pub limits: LimitsDescription,
    /// The step's gpu grant.
    pub gpu: Option<&'a crate::spec::Grant>,
}

/// The host's versions and settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EngineDescription {
    /// This engine's version.
    pub sluice: &'static str,
    /// The wasmtime version.
    pub wasmtime: &'static str,
    /// The WIT world.
    pub world: &'static str,
    /// [`DETERMINISM`].
    pub determinism: &'static str,
}

/// Host constants a guest can detect (by a read's chunk size, a refused
/// media type, a truncated tag, or a trap that ends a success).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostConstants {
    /// [`sluice_host_api::MAX_READ_CHUNK_BYTES`].
    pub read_chunk_bytes: u64,
    /// [`sluice_host_api::MAX_METRIC_TEXT_BYTES`].
    pub metric_text_bytes: usize,
    /// [`sluice_host_api::MAX_METRIC_POINTS`].
    pub metric_points: usize,
    /// [`limits::HOST_CALLS_MAX`].
    pub host_calls: u64,
    /// [`limits::HANDLES_MAX`].
    pub handles: usize,
    /// [`limits::STACK_BYTES_MAX`].
    pub stack_bytes: usize,
    /// [`sandbox::TABLE_ELEMENTS_MAX`].
    pub table_elements: usize,
}

/// One input as `artifacts.inputs()` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InputDescription<'a> {
    /// `sha256:<hex>`.
    pub digest: &'a str,
    /// Bytes.
    pub size: u64,
    /// Media type.
    pub media_type: &'a str,
}

/// The limits in a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitsDescription {
    /// Linear memory, MiB (decides success).
    pub memory_mib: u64,
    /// Fuel (decides success).
    pub fuel: u64,
    /// All outputs together, MiB (decides success).
    pub output_mib: u64,
    /// Captured stdout/stderr, KiB each (a write past it fails visibly).
    pub log_kib: u64,
    /// Seconds; only for a step with a gpu grant (a job's deadline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

impl<'a> AttemptDescription<'a> {
    /// Describes an attempt of `spec` running `component` under `gpu`.
    /// This is the one place that decides what a key covers.
    pub fn of(
        component: Digest,
        spec: &'a AttemptSpec,
        gpu: Option<&'a crate::spec::Grant>,
    ) -> Self {
        let mut outputs: Vec<&str> = spec.outputs.iter().map(String::as_str).collect();
        outputs.sort_unstable();
        outputs.dedup();
        AttemptDescription {
            version: CACHE_VERSION,
            engine: EngineDescription {
                sluice: env!("CARGO_PKG_VERSION"),
                wasmtime: sandbox::wasmtime_version(),
                world: sluice_host_api::WORLD,
                determinism: DETERMINISM,
            },
            host: HostConstants {
                read_chunk_bytes: sluice_host_api::MAX_READ_CHUNK_BYTES,
                metric_text_bytes: sluice_host_api::MAX_METRIC_TEXT_BYTES,
                metric_points: sluice_host_api::MAX_METRIC_POINTS,
                host_calls: limits::HOST_CALLS_MAX,
                handles: limits::HANDLES_MAX,
                stack_bytes: limits::STACK_BYTES_MAX,
                table_elements: sandbox::TABLE_ELEMENTS_MAX,
            },
            component,
            step: &spec.step,
            args: sandbox::guest_args(spec),
            answers: sandbox::host_answers(spec.run_seed, &spec.step),
            params: &spec.params,
            inputs: spec
                .inputs
                .iter()
                .map(|i| {
                    (
                        i.name.as_str(),
                        InputDescription {
                            digest: &i.digest,
                            size: i.size,
                            media_type: &i.media_type,
                        },
                    )
                })
                .collect(),
            outputs,
            limits: LimitsDescription {
                memory_mib: spec.limits.memory_mib,
                fuel: spec.limits.fuel,
                output_mib: spec.limits.output_mib,
                log_kib: spec.limits.log_kib,
                timeout_s: gpu.map(|_| spec.limits.timeout_s),
            },
            gpu,
        }
    }

    /// The canonical bytes: compact JSON of the description as a
    /// `serde_json::Value`, so equal descriptions give equal bytes and the
    /// copy in a run's `step-started` event, re-serialized, gives these same
    /// bytes — an auditor can recompute every recorded cache key.
    pub fn canonical_json(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("attempt descriptions serialize");
        serde_json::to_vec(&value).expect("values serialize")
    }

    /// The cache key: sha256 of [`Self::canonical_json`].
    pub fn key(&self) -> Digest {
        Digest::of(&self.canonical_json())
    }
}

/// The cache key of an attempt of `spec` running `component` under `gpu`.
pub fn key(component: Digest, spec: &AttemptSpec, gpu: Option<&crate::spec::Grant>) -> Digest {
    AttemptDescription::of(component, spec, gpu).key()
}

/// A cached execution.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The key this entry answers.
    pub key: Digest,
    /// Which step produced it (informational).
    pub step: String,
    /// The run that produced it.
    pub run_id: String,
    /// Outputs by name.
    pub outputs: BTreeMap<String, OutputRef>,
    /// Final metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Metric series.
    #[serde(default)]
    pub series: BTreeMap<String, Vec<(u64, f64)>>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The gpu jobs of the execution (record copies), so a run answered
    /// from the cache still records them and can be replayed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_jobs: Vec<crate::gpu::JobReport>,
}

/// The cache under `<home>/cache`.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens the cache directory under `home`.
    pub fn open(home: &Path) -> std::io::Result<Cache> {
        let dir = home.join("cache");
        std::fs::create_dir_all(&dir)?;
        Ok(Cache { dir })
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// A usable hit: the entry parses, answers `key`, and every output blob
    /// is in the store and verifies. Anything else is a miss (and a corrupt
    /// blob is quarantined by the store so re-execution can rewrite it).
    pub fn lookup(&self, key: &Digest, store: &Store) -> Option<Entry> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let entry: Entry = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(%key, error = %e, "ignoring unreadable cache entry");
                return None;
            }
        };
        if entry.key != *key {
            tracing::warn!(%key, "ignoring cache entry filed under the wrong key");
            return None;
        }
        for (name, out) in &entry.outputs {
            match store.verify(&out.digest) {
                Ok(size) if size == out.size => {}
                Ok(_) | Err(_) => {
                    tracing::warn!(%key, output = %name, digest = %out.digest, "cached output unusable; re-executing");
                    return None;
                }
            }
        }
        Some(entry)
    }

    /// Files `entry` under its key. Entries are derived data: not fsynced
    /// (a lost entry costs a re-execution, never a wrong answer).
    pub fn insert(&self, entry: &Entry) -> Result<(), crate::store::StoreError> {
        let bytes = serde_json::to_vec_pretty(entry).expect("cache entries serialize");
        let path = self.path(&entry.key);
        crate::fault::point("cache").map_err(|source| crate::store::StoreError::Io {
            path: path.clone(),
            source,
        })?;
        crate::durable::write_atomic(&path, &bytes, false).map_err(crate::store::StoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use sluice_host_api::InputArtifact;

    fn base() -> AttemptSpec {
        AttemptSpec {
            step: "alpha".into(),
            attempt: 1,
            inputs: vec![InputArtifact {
                name: "in".into(),
                digest: Digest::of(b"data").to_string(),
                size: 4,
                media_type: "text/plain".into(),
            }],
            outputs: vec!["out".into()],
            params: BTreeMap::from([("lr".to_string(), "0.1".to_string())]),
            limits: Limits::default(),
            run_seed: 0,
            cancel: None,
        }
    }

    #[test]
    fn key_changes_with_each_observable_part_and_only_then() {
        let comp = Digest::of(b"component");
        let spec = base();
        let k = |s: &AttemptSpec| key(comp, s, None);
        let base_key = k(&spec);
        // Not observable by the guest: attempt number, cancel flag, timeout
        // (without a gpu grant), the order outputs are declared in.
        let same = [
            AttemptSpec {
                attempt: 3,
                cancel: Some(Default::default()),
                limits: Limits {
                    timeout_s: 1,
                    ..spec.limits
                },
                ..spec.clone()
            },
            AttemptSpec {
                outputs: vec!["out".into(), "out".into()],
                ..spec.clone()
            },
        ];
        for s in &same {
            assert_eq!(base_key, k(s), "{s:?}");
        }
        let input = |f: &dyn Fn(&mut InputArtifact)| {
            let mut s = spec.clone();
            f(&mut s.inputs[0]);
            s
        };
        let limits = |l: Limits| AttemptSpec {
            limits: l,
            ..spec.clone()
        };
        let changed = [
            AttemptSpec {
                step: "beta".into(),
                ..spec.clone()
            },
            AttemptSpec {
                run_seed: 1,
                ..spec.clone()
            },
            AttemptSpec {
                params: BTreeMap::from([("lr".to_string(), "0.2".to_string())]),
                ..spec.clone()
            },
            AttemptSpec {
                params: BTreeMap::new(),
                ..spec.clone()
            },
            AttemptSpec {
                outputs: vec!["out".into(), "extra".into()],
                ..spec.clone()
            },
            AttemptSpec {
                inputs: Vec::new(),
                ..spec.clone()
            },
            input(&|i| i.name = "other".into()),
            input(&|i| i.digest = Digest::of(b"atad").to_string()),
            input(&|i| i.size = 5),
            input(&|i| i.media_type = "text/csv".into()),
            limits(Limits {
                memory_mib: 64,
                ..spec.limits
            }),
            limits(Limits {
                fuel: 5,
                ..spec.limits
            }),
            limits(Limits {
                output_mib: 1,
                ..spec.limits
            }),
            limits(Limits {
                log_kib: 1,
                ..spec.limits
            }),
        ];
        let mut keys = vec![base_key];
        for s in &changed {
            keys.push(k(s));
        }
        keys.push(key(Digest::of(b"c2"), &spec, None));
        let grant = crate::spec::Grant {
            worker: "cpu".into(),
            max_jobs: 1,
            min_free_memory_mib: 0,
        };
        let gpu_key = key(comp, &spec, Some(&grant));
        keys.push(gpu_key);
        keys.push(key(
            comp,
            &spec,
            Some(&crate::spec::Grant {
                max_jobs: 2,
                ..grant.clone()
            }),
        ));
        // With a grant the timeout bounds each job's deadline: observable.
        keys.push(key(
            comp,
            &AttemptSpec {
                limits: Limits {
                    timeout_s: 1,
                    ..spec.limits
                },
                ..spec.clone()
            },
            Some(&grant),
        ));
        let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "every change changes the key");
    }

    #[test]
    fn description_names_every_observable_in_its_canonical_json() {
        let spec = base();
        let d = AttemptDescription::of(Digest::of(b"component"), &spec, None);
        let json: serde_json::Value = serde_json::from_slice(&d.canonical_json()).unwrap();
        assert_eq!(json["version"], CACHE_VERSION);
        assert_eq!(json["step"], "alpha");
        assert_eq!(json["args"], serde_json::json!(["alpha"]));
        assert_eq!(json["inputs"]["in"]["media_type"], "text/plain");
        assert_eq!(json["inputs"]["in"]["size"], 4);
        assert_eq!(json["limits"]["log_kib"], spec.limits.log_kib);
        assert!(json["limits"].get("timeout_s").is_none());
        assert_eq!(
            json["answers"]["secure_random_seed"],
            sandbox::host_answers(0, "alpha")["secure_random_seed"]
        );
        assert_eq!(json["engine"]["world"], sluice_host_api::WORLD);
    }
}
