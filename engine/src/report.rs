//! What a run reports: its id, statuses, step reports, the summary, the
//! progress events a display observes, and the names of the files a sealed
//! run leaves in its directory.
//!
//! Invariant: these types are the JSON of `sluice run --json`, `sluice show`
//! and the service; field names and order are a contract.
//! Boundary: data only (plus parsing of run ids).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::artifact::OutputRef;
use crate::digest::Digest;
use crate::failure::Failure;
use crate::record::{self};

/// Where a sealed run keeps its signed provenance (a DSSE envelope).
pub const PROVENANCE_FILE: &str = "provenance.json";
/// Where a sealed run keeps its transparency-log position.
pub const SEAL_FILE: &str = "seal.json";

/// A run id: `YYYYMMDD-HHMMSS-xxxxxxxx`, sortable by start time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    pub(crate) fn generate() -> RunId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let ms = record::now_ms();
        let stamp = record::rfc3339(ms);
        let mut seed = Vec::new();
        seed.extend_from_slice(
            &std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
                .to_le_bytes(),
        );
        seed.extend_from_slice(&std::process::id().to_le_bytes());
        seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let suffix = &Digest::of(&seed).hex()[..8];
        // 2026-11-26T15:36:31.000Z -> 20261126-153631
        let compact: String = stamp[..19].chars().filter(|c| c.is_ascii_digit()).collect();
        RunId(format!("{}-{}-{suffix}", &compact[..8], &compact[8..14]))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text that cannot be a run id (run ids name directories, so the charset
/// is strict).
#[derive(Debug, thiserror::Error)]
#[error("invalid run id {0:?}: expected letters, digits and `-` only")]
pub struct BadRunId(String);

impl FromStr for RunId {
    type Err = BadRunId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty()
            || s.len() > 64
            || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(BadRunId(s.chars().take(80).collect()));
        }
        Ok(RunId(s.to_string()))
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every step succeeded or was cached.
    Succeeded,
    /// At least one step failed.
    Failed,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Executed and succeeded.
    Succeeded,
    /// Answered from the step cache; nothing executed.
    Cached,
    /// Its last attempt failed.
    Failed,
    /// Not run because a dependency failed.
    Skipped,
}

/// The report of one step, as `sluice run --json` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// Final status.
    pub status: StepStatus,
    /// Answered from the cache.
    pub cached: bool,
    /// Attempts executed (0 when cached or skipped).
    pub attempts: u32,
    /// Wall time across attempts, ms.
    pub wall_ms: u64,
    /// Fuel consumed by the last attempt.
    pub fuel_used: u64,
    /// Peak linear memory of the last attempt, bytes.
    pub memory_peak_bytes: u64,
    /// Bytes read from inputs.
    pub bytes_in: u64,
    /// Bytes written to outputs.
    pub bytes_out: u64,
    /// Outputs by name.
    pub outputs: BTreeMap<String, OutputRef>,
    /// Final metric values (a series' last point when no final value was set).
    pub metrics: BTreeMap<String, f64>,
    /// Metric series.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub series: BTreeMap<String, Vec<(u64, f64)>>,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Why it failed.
    pub error: Option<Failure>,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The step's component digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<Digest>,
    /// For a Python or JavaScript step: the sources its component was
    /// built from (the build's memo key) and the tool that built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_from: Option<crate::scriptbuild::SourceBuild>,
    /// The step's cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<Digest>,
    /// Where its last attempt executed (`local`, `process`); none when it
    /// did not execute (cached, skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<crate::spec::ExecutorKind>,
    /// Captured stdout blob of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<Digest>,
    /// Captured stderr blob of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<Digest>,
    /// Instantiation time of the last attempt, µs.
    #[serde(default)]
    pub instantiate_us: u64,
    /// For a step fanned out by `[sweep]`: its combination's params.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sweep: BTreeMap<String, String>,
    /// For a step with a gpu grant that executed: telemetry availability
    /// and its last attempt's gpu jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<crate::gpu::GpuReport>,
}

impl StepReport {
    pub(crate) fn new(name: &str, status: StepStatus) -> Self {
        StepReport {
            name: name.to_string(),
            status,
            cached: status == StepStatus::Cached,
            attempts: 0,
            wall_ms: 0,
            fuel_used: 0,
            memory_peak_bytes: 0,
            bytes_in: 0,
            bytes_out: 0,
            outputs: BTreeMap::new(),
            metrics: BTreeMap::new(),
            series: BTreeMap::new(),
            tags: BTreeMap::new(),
            error: None,
            reason: None,
            component: None,
            built_from: None,
            cache_key: None,
            executor: None,
            stdout: None,
            stderr: None,
            instantiate_us: 0,
            sweep: BTreeMap::new(),
            gpu: None,
        }
    }
}

/// One combination of a sweep and what its fanned-out steps reported.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRow {
    /// Combination index (`STEP[index]`).
    pub index: usize,
    /// The swept params' values.
    pub params: BTreeMap<String, String>,
    /// `STEP.METRIC` → value, over this combination's steps.
    pub metrics: BTreeMap<String, f64>,
    /// Whether every step of this combination succeeded.
    pub succeeded: bool,
}

/// The summary of a run: what `sluice run --json` and `sluice show` print.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run id.
    pub run_id: RunId,
    /// Final status.
    pub status: RunStatus,
    /// Pipeline name.
    pub pipeline: String,
    /// Spec file as given.
    pub spec_path: String,
    /// Digest of the spec's bytes (the spec itself is in the store).
    pub spec_digest: Digest,
    /// Resolved pipeline params.
    pub params: BTreeMap<String, String>,
    /// The run seed.
    pub seed: u64,
    /// Start, RFC 3339.
    pub started_at: String,
    /// End, RFC 3339.
    pub finished_at: String,
    /// Wall time, ms.
    pub wall_ms: u64,
    /// Steps in topological order.
    pub steps: Vec<StepReport>,
    /// The sweep's combinations, when the pipeline has a `[sweep]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<SweepRow>,
}

/// Progress events for displays.
#[derive(Debug)]
pub enum Event<'a> {
    /// The run started with these steps.
    RunStarted {
        /// Run id.
        run_id: &'a RunId,
        /// Step names, topological order.
        steps: Vec<&'a str>,
    },
    /// An attempt started.
    StepStarted {
        /// Step.
        step: &'a str,
        /// 1-based attempt.
        attempt: u32,
    },
    /// An attempt failed and the step will be retried.
    StepRetrying {
        /// Step.
        step: &'a str,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: &'a Failure,
    },
    /// A step reached its final state.
    StepFinished(&'a StepReport),
}

/// Receives [`Event`]s from scheduler threads.
pub trait Observer: Sync {
    /// One event.
    fn event(&self, event: Event<'_>);
}

/// Ignores every event.
#[derive(Debug)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event<'_>) {}
}
