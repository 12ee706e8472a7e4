//! The spec model: what a validated pipeline declares — steps, their
//! components, inputs, limits, conditions, exit handlers and gpu grants —
//! and the bounds every spec is held to.
//!
//! Invariant: plain data; a [`Pipeline`] is only ever built by the
//! validator, so holding one means every check has passed.
//! Boundary: no IO and no parsing beyond `parse_cron`; depends on `expr`,
//! `limits` and `digest` only.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::limits::Limits;

/// Most steps a pipeline may declare.
pub const STEPS_MAX: usize = 10_000;
/// Most inputs or outputs one step may declare.
pub const PORTS_PER_STEP_MAX: usize = 256;
/// Most combinations a `[sweep]` may expand to.
pub const SWEEP_COMBINATIONS_MAX: usize = 1024;
/// Most dependency edges plus inputs of the pipeline after sweep expansion
/// and exit-handler wiring: with steps bounded by [`STEPS_MAX`], this keeps
/// the graph (a few words per edge) to tens of MB and the scheduler's work
/// linear in something small.
pub const EXPANDED_EDGES_MAX: usize = 1_000_000;
/// Most bytes one interpolated string (`${params.NAME}` resolved) may
/// have: `"${params.a}"` repeated under a large `a` multiplies the spec.
pub const INTERPOLATED_BYTES_MAX: usize = 1 << 20;
/// Most bytes of param values (interpolated, swept and per fanned-out copy)
/// one pipeline may hold after expansion: bounds memory before anything is
/// expanded.
pub const PARAM_BYTES_MAX: usize = 64 << 20;
/// Most times a step may be retried.
pub const RETRIES_MAX: u64 = 10;
/// Largest spec file accepted.
pub const SPEC_BYTES_MAX: u64 = 4 << 20;

/// One problem in a spec, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// The spec file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong, naming the offender.
    pub message: String,
    /// The `PathPolicy` refused a path (the service answers 403, not 422).
    pub denied: bool,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Where a step's component comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComponentSource {
    /// A compiled `.wasm` component.
    Wasm(PathBuf),
    /// A step crate directory, built for `wasm32-wasip2` on demand.
    Crate(PathBuf),
    /// A Python step directory (`pyproject.toml`), built with
    /// componentize-py on demand and memoized by its sources.
    Python(PathBuf),
    /// A JavaScript step directory (`package.json` with a `sluice` entry),
    /// built with ComponentizeJS on demand and memoized by its sources.
    JavaScript(PathBuf),
    /// A component already in the store (`component = "sha256:…"`), e.g.
    /// uploaded to the service.
    Stored(crate::digest::Digest),
}

/// Where an input comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputRef {
    /// Every fanned-out copy of a swept step's output (`STEP[*].OUTPUT`);
    /// replaced by one `NAME.<k>` input per combination when the sweep is
    /// expanded, so a validated pipeline never holds it.
    Collection {
        /// Producer index (before expansion).
        step: usize,
        /// Output name.
        output: String,
    },
    /// A file declared under `[sources]`.
    Source(String),
    /// An output of an earlier step (index into [`Pipeline::steps`]).
    Step {
        /// Producer index.
        step: usize,
        /// Output name.
        output: String,
    },
}

/// A validated step.
#[derive(Clone, Debug)]
pub struct Step {
    /// The step's name (`[steps.<name>]`).
    pub name: String,
    /// Its component.
    pub component: ComponentSource,
    /// Inputs by name.
    pub inputs: BTreeMap<String, InputRef>,
    /// Resolved params (interpolated, stringified).
    pub params: BTreeMap<String, String>,
    /// The params as written (before interpolation), for sweep expansion.
    pub param_templates: BTreeMap<String, String>,
    /// For a step fanned out by `[sweep]`: its combination of swept params.
    pub sweep: BTreeMap<String, String>,
    /// Declared outputs, in declaration order.
    pub outputs: Vec<String>,
    /// Limits, defaults applied.
    pub limits: Limits,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// Whether the step cache may be used.
    pub cache: bool,
    /// Indices of the steps this one waits for (inputs, `after`, steps its
    /// condition reads; every regular step for an exit handler), sorted.
    pub deps: Vec<usize>,
    /// `when = "..."`: the condition text and its parse.
    pub when: Option<(String, crate::expr::Expr)>,
    /// `on = "always" | "failure" | "success"`: an exit handler.
    pub finally: Option<Finally>,
    /// `gpu = { worker = "...", max_jobs = N, min_free_memory_mib = M }`:
    /// the step may submit gpu jobs to that worker kind.
    pub gpu: Option<Grant>,
    /// The grant's `worker` as written (before interpolation), for sweeps.
    pub gpu_worker_template: Option<String>,
    /// `executor = "..."`: where this step's attempts execute, overriding
    /// the run's choice.
    pub executor: Option<ExecutorKind>,
}

/// A validated pipeline: steps in topological order.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// `name = ...`.
    pub name: String,
    /// `description = ...`.
    pub description: Option<String>,
    /// The spec file.
    pub path: PathBuf,
    /// The spec's exact bytes (for the record).
    pub text: String,
    /// Resolved pipeline params (defaults + overrides).
    pub params: BTreeMap<String, String>,
    /// Seed for the run's virtual random streams.
    pub seed: u64,
    /// Source files by name (absolute or spec-relative, resolved).
    pub sources: BTreeMap<String, PathBuf>,
    /// Steps, topologically sorted (sweeps expanded).
    pub steps: Vec<Step>,
    /// The sweep grid: every combination of swept params, in order.
    pub sweep: Vec<BTreeMap<String, String>>,
    /// `[schedule] cron = "..."`: when `sluice serve` starts the pipeline.
    pub schedule: Option<String>,
    /// `[executor] kind = "..."`: where steps execute unless the command
    /// line or the step says otherwise.
    pub executor: Option<ExecutorKind>,
}

impl Pipeline {
    /// Index of the step named `name`.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }
}

/// Parses a `[schedule] cron` expression: five fields (minute hour
/// day-of-month month day-of-week), or six with leading seconds; UTC.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expr)
}

/// A step's permission to submit gpu jobs (`gpu = { ... }` in the spec).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    /// The one worker kind the step may use.
    pub worker: String,
    /// Jobs per attempt.
    pub max_jobs: u32,
    /// A floor under every job's `min-free-memory-mib`.
    pub min_free_memory_mib: u64,
}

/// Where a step's attempts execute (`[executor] kind = "..."` for the
/// pipeline, `executor = "..."` on a step, `--executor` on the command
/// line). Never part of a cache key: every executor runs the same
/// attempt description through the same sandbox.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// In the coordinating process (the default).
    #[default]
    Local,
    /// In a `sluice exec-step` child process on this machine.
    Process,
    /// As a Ray job (`sluice exec-step`) on the Ray cluster at
    /// `--ray-address` / `RAY_ADDRESS`.
    Ray,
    /// As a Kubernetes `batch/v1` Job (`sluice exec-step`) in the cluster
    /// of the kubeconfig, configured by `[kubernetes]`.
    Kubernetes,
}

impl ExecutorKind {
    /// Every kind, as written in specs and flags.
    pub const ALL: &[ExecutorKind] = &[
        ExecutorKind::Local,
        ExecutorKind::Process,
        ExecutorKind::Ray,
        ExecutorKind::Kubernetes,
    ];

    /// The name as written in specs and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Process => "process",
            ExecutorKind::Ray => "ray",
            ExecutorKind::Kubernetes => "kubernetes",
        }
    }
}

impl std::fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ExecutorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<ExecutorKind, String> {
        ExecutorKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ExecutorKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown executor {s:?}; expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// When an exit handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finally {
    /// After the rest, whatever happened.
    Always,
    /// After the rest, if any step failed.
    OnFailure,
    /// After the rest, if no step failed.
    OnSuccess,
}

/// Keys accepted in a step's `gpu = { ... }` grant.
pub const GRANT_KEYS: &[&str] = &["worker", "max_jobs", "min_free_memory_mib"];
/// Jobs a grant allows per attempt when it does not say.
pub const JOBS_MAX_DEFAULT: u32 = 1;
/// The most jobs a grant may allow per attempt.
pub const JOBS_MAX_CEILING: u64 = 64;
/// The largest `min_free_memory_mib` a grant may ask for (16 TiB).
pub const MIN_FREE_MEMORY_MIB_CEILING: u64 = 1 << 24;

/// Whether `s` can name a worker kind, a job input or a job output:
/// 1-64 characters of `[A-Za-z0-9_-]`, starting with a letter or digit.
pub fn is_kind_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
