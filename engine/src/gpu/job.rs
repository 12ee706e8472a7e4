//! A gpu job as data: the checked spec a step submitted ([`JobSpecRecord`]),
//! its state ([`State`]), everything known about it afterwards
//! ([`JobReport`]) and a step's `gpu` report ([`GpuReport`]).
//!
//! Invariant: a [`JobSpecRecord`] exists only for a spec that passed every
//! check of [`JobSpecRecord::from_wit`] (the bounds below), and its digest
//! is canonical (object keys sorted), so equal specs have equal digests.
//! Boundary: pure data and validation; no IO, no threads, no processes —
//! the dispatcher fills reports in, the runner records them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_host_api::{Artifact, GpuUsage, JobResult, JobSpec, JobState, WitError};

use crate::artifact::OutputRef;
use crate::digest::Digest;
use crate::spec::is_kind_name;

use super::protocol::Hello;
use super::telemetry::{self, Usage};

/// The most GPUs one job may ask for (one `CUDA_VISIBLE_DEVICES` UUID).
pub const GPUS_PER_JOB_MAX: u32 = 1;
/// Largest `params-json` of a job spec.
pub const PARAMS_JSON_BYTES_MAX: usize = 64 * 1024;
/// Most inputs of one job.
pub const JOB_INPUTS_MAX: usize = 64;
/// Longest op name.
pub const OP_BYTES_MAX: usize = 64;

/// A job's state (the WIT `job-state`, in reports and records).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waiting for a worker.
    Queued,
    /// On a worker.
    Running,
    /// Outputs verified and stored.
    Succeeded,
    /// The worker failed, crashed or misbehaved.
    Failed,
    /// Cancelled by the step.
    Cancelled,
    /// Past its deadline.
    TimedOut,
}

impl State {
    /// The WIT value.
    pub fn to_wit(self) -> JobState {
        match self {
            State::Queued => JobState::Queued,
            State::Running => JobState::Running,
            State::Succeeded => JobState::Succeeded,
            State::Failed => JobState::Failed,
            State::Cancelled => JobState::Cancelled,
            State::TimedOut => JobState::TimedOut,
        }
    }

    /// The report name: `succeeded`, `timed-out`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed-out",
        }
    }
}

/// A job spec as the guest sent it, parsed: what the spec digest covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpecRecord {
    /// Worker kind.
    pub worker: String,
    /// Operation.
    pub op: String,
    /// Parameters (a JSON object).
    pub params: Value,
    /// Inputs (name, digest), in the order given.
    pub inputs: Vec<(String, Digest)>,
    /// GPUs asked for.
    pub gpus: u32,
    /// Free framebuffer asked for, MiB.
    pub min_free_memory_mib: u64,
    /// Deadline asked for, ms.
    pub timeout_ms: Option<u64>,
    /// Seed.
    pub seed: u64,
    /// Deterministic kernels.
    pub deterministic: bool,
}

impl JobSpecRecord {
    /// Checks a guest's spec; `Err` is the WIT error to answer.
    pub fn from_wit(spec: &JobSpec) -> Result<JobSpecRecord, WitError> {
        let invalid = |m: String| Err(WitError::Invalid(m));
        if !is_kind_name(&spec.worker) {
            return invalid(format!(
                "gpu job: worker {:?} is not a worker kind name",
                crate::quoting::escape_controls(&spec.worker, 64)
            ));
        }
        if spec.op.is_empty()
            || spec.op.len() > OP_BYTES_MAX
            || spec
                .op
                .contains(|c: char| c.is_control() || c.is_whitespace())
        {
            return invalid(format!(
                "gpu job: op {:?} must be 1-{OP_BYTES_MAX} printable bytes without spaces",
                crate::quoting::escape_controls(&spec.op, 64)
            ));
        }
        if spec.params_json.len() > PARAMS_JSON_BYTES_MAX {
            return invalid(format!(
                "gpu job `{}`: params-json is {} bytes; the limit is {PARAMS_JSON_BYTES_MAX}",
                spec.op,
                spec.params_json.len()
            ));
        }
        let params: Value = if spec.params_json.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            match serde_json::from_str(&spec.params_json) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return invalid(format!(
                        "gpu job `{}`: params-json must be a JSON object",
                        spec.op
                    ));
                }
                Err(e) => {
                    return invalid(format!(
                        "gpu job `{}`: params-json is not JSON: {e}",
                        spec.op
                    ));
                }
            }
        };
        if spec.inputs.len() > JOB_INPUTS_MAX {
            return invalid(format!(
                "gpu job `{}`: {} inputs; the limit is {JOB_INPUTS_MAX}",
                spec.op,
                spec.inputs.len()
            ));
        }
        let mut inputs = Vec::with_capacity(spec.inputs.len());
        let mut seen = BTreeSet::new();
        for (name, digest) in &spec.inputs {
            if !is_kind_name(name) || !seen.insert(name.as_str()) {
                return invalid(format!(
                    "gpu job `{}`: input name {:?} is invalid or repeated",
                    spec.op,
                    crate::quoting::escape_controls(name, 64)
                ));
            }
            let Ok(d) = digest.parse::<Digest>() else {
                return invalid(format!(
                    "gpu job `{}`: input `{name}`: {:?} is not a sha256:<64 hex> digest",
                    spec.op,
                    crate::quoting::escape_controls(digest, 80)
                ));
            };
            inputs.push((name.clone(), d));
        }
        if spec.gpus > GPUS_PER_JOB_MAX {
            return invalid(format!(
                "gpu job `{}`: asks for {} GPUs; a job gets at most {GPUS_PER_JOB_MAX}",
                spec.op, spec.gpus
            ));
        }
        if spec.timeout_ms == Some(0) {
            return invalid(format!(
                "gpu job `{}`: timeout-ms must be positive",
                spec.op
            ));
        }
        Ok(JobSpecRecord {
            worker: spec.worker.clone(),
            op: spec.op.clone(),
            params,
            inputs,
            gpus: spec.gpus,
            min_free_memory_mib: spec.min_free_memory_mib,
            timeout_ms: spec.timeout_ms,
            seed: spec.seed,
            deterministic: spec.deterministic,
        })
    }

    /// sha256 of the canonical JSON (object keys sorted).
    pub fn digest(&self) -> Digest {
        Digest::of(&serde_json::to_vec(self).expect("job specs serialize"))
    }
}

/// Everything known about one job: what the run record keeps and
/// `sluice run --json` prints under the step's `gpu.jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// Job id, unique within the run (`j1`, `j2`, ...).
    pub id: String,
    /// Worker kind.
    pub worker: String,
    /// Operation.
    pub op: String,
    /// Final state.
    pub state: State,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// sha256 of the canonical job spec.
    pub spec_digest: Digest,
    /// The job spec.
    pub spec: JobSpecRecord,
    /// From the `run` line to the `result`, ms.
    pub wall_ms: u64,
    /// From `submit` to the `run` line written to the worker, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_us: Option<u64>,
    /// Whether an idle (warm) worker took it.
    #[serde(default)]
    pub warm: bool,
    /// The worker process's spawn number in the engine process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_instance: Option<u64>,
    /// The worker's `hello` (versions, device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello: Option<Hello>,
    /// sha256 over the worker's device kind and name and its versions: equal
    /// fingerprints promise bitwise-equal deterministic results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Digest>,
    /// Where it ran, for people: `cpu: x86_64 (2 threads)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Verified outputs in the store, by name.
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputRef>,
    /// The worker's metrics (a JSON object).
    #[serde(default)]
    pub metrics: Value,
    /// `progress` lines received.
    #[serde(default)]
    pub progress_lines: u64,
    /// NVML telemetry of the job's GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Model FLOPs utilisation: `model_flops` / wall / device peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    /// The job's stderr log (capped) in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Digest>,
    /// Answered from a run record, not executed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl JobReport {
    pub(crate) fn new(id: &str, spec: &JobSpecRecord, spec_digest: Digest) -> JobReport {
        JobReport {
            id: id.to_string(),
            worker: spec.worker.clone(),
            op: spec.op.clone(),
            state: State::Queued,
            message: None,
            spec_digest,
            spec: spec.clone(),
            wall_ms: 0,
            dispatch_us: None,
            warm: false,
            worker_instance: None,
            hello: None,
            fingerprint: None,
            device: None,
            outputs: BTreeMap::new(),
            metrics: Value::Object(Default::default()),
            progress_lines: 0,
            usage: None,
            mfu: None,
            log: None,
            replayed: false,
        }
    }

    /// The record's copy: everything but the telemetry timeline.
    pub fn for_record(&self) -> JobReport {
        let mut r = self.clone();
        if let Some(u) = &mut r.usage {
            u.timeline.clear();
        }
        r
    }

    /// A scalar metric the worker reported.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).and_then(Value::as_f64)
    }

    /// The WIT result the guest gets.
    pub fn to_wit(&self) -> JobResult {
        JobResult {
            state: self.state.to_wit(),
            outputs: self
                .outputs
                .iter()
                .map(|(name, o)| Artifact {
                    name: name.clone(),
                    digest: o.digest.to_string(),
                    size: o.size,
                    media_type: o.media_type.clone(),
                })
                .collect(),
            metrics_json: if self.metrics.is_object() {
                self.metrics.to_string()
            } else {
                "{}".to_string()
            },
            usage: self.usage.as_ref().map(|u| GpuUsage {
                samples: u.samples,
                util_mean: u.util_mean,
                mem_util_mean: u.mem_util_mean,
                fb_used_max_bytes: u.fb_used_max_bytes,
                energy_mj: u.energy_mj,
                sm_active_mean: u.sm_active_mean,
            }),
            wall_ms: self.wall_ms,
            message: self.message.clone(),
        }
    }
}

/// The `gpu` part of a step report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    /// Whether NVML telemetry was available.
    pub available: bool,
    /// Why not (`gpu telemetry unavailable: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The attempt's jobs, in submission order.
    pub jobs: Vec<JobReport>,
}

impl GpuReport {
    /// A report over `jobs` with the process's telemetry availability.
    pub fn new(jobs: Vec<JobReport>) -> GpuReport {
        let availability = telemetry::availability();
        GpuReport {
            available: availability.is_ok(),
            reason: availability.err().map(|e| e.to_string()),
            jobs,
        }
    }
}

/// The device/driver/library fingerprint of a worker (see
/// [`JobReport::fingerprint`]).
pub fn fingerprint(hello: &Hello) -> Digest {
    let canonical = serde_json::json!({
        "protocol": hello.protocol,
        "worker": hello.worker,
        "device_kind": hello.device.kind,
        "device_name": hello.device.name,
        "versions": hello.versions,
    });
    Digest::of(canonical.to_string().as_bytes())
}

pub(crate) fn describe_device(hello: &Hello) -> String {
    let d = &hello.device;
    let name = crate::quoting::escape_controls(&d.name, 120);
    match &d.uuid {
        Some(u) => format!(
            "{}: {name} ({})",
            crate::quoting::escape_controls(&d.kind, 16),
            crate::quoting::escape_controls(u, 64)
        ),
        None => format!("{}: {name}", crate::quoting::escape_controls(&d.kind, 16)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid spec for tests of this module and its neighbours.
    pub(crate) fn spec() -> JobSpec {
        JobSpec {
            worker: "cpu".into(),
            op: "train-mlp".into(),
            params_json: r#"{"epochs":3,"width":8}"#.into(),
            inputs: vec![("train".into(), format!("sha256:{}", "ab".repeat(32)))],
            gpus: 0,
            min_free_memory_mib: 0,
            timeout_ms: None,
            seed: 7,
            deterministic: true,
        }
    }

    #[test]
    fn spec_digest_is_canonical_over_param_key_order() {
        let a = JobSpecRecord::from_wit(&spec()).unwrap();
        let mut s = spec();
        s.params_json = r#"{ "width": 8, "epochs": 3 }"#.into();
        let b = JobSpecRecord::from_wit(&s).unwrap();
        assert_eq!(a.digest(), b.digest());
        s.seed = 8;
        assert_ne!(a.digest(), JobSpecRecord::from_wit(&s).unwrap().digest());
    }

    #[test]
    fn bad_job_specs_are_invalid_with_the_offender_named() {
        let check = |f: &dyn Fn(&mut JobSpec), expected: &str| {
            let mut s = spec();
            f(&mut s);
            match JobSpecRecord::from_wit(&s) {
                Err(WitError::Invalid(m)) => assert!(m.contains(expected), "{m}"),
                other => panic!("{other:?}"),
            }
        };
        check(
            &|s| s.params_json = "[1]".into(),
            "params-json must be a JSON object",
        );
        check(&|s| s.params_json = "{".into(), "params-json is not JSON");
        check(&|s| s.gpus = 2, "asks for 2 GPUs; a job gets at most 1");
        check(&|s| s.op = "a b".into(), "op \"a b\" must be");
        check(
            &|s| s.inputs[0].1 = "md5:x".into(),
            "input `train`: \"md5:x\" is not a sha256",
        );
        check(
            &|s| s.inputs.push(s.inputs[0].clone()),
            "input name \"train\" is invalid or repeated",
        );
        check(&|s| s.timeout_ms = Some(0), "timeout-ms must be positive");
        check(
            &|s| s.worker = "../x".into(),
            "worker \"../x\" is not a worker kind name",
        );
    }
}
