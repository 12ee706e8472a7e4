//! Host side of the `sluice:step` WIT world.
//!
//! This crate turns the WIT contract in `wit/step.wit` into wasmtime host
//! functions. It owns the per-attempt state a step can reach ([`StepHost`]):
//! name checks, chunk bounds, output quotas, handle and call budgets,
//! collected metrics. It knows nothing of the engine: storage and GPU work go
//! through the port traits [`ArtifactPort`] and [`GpuPort`], which `engine`
//! implements.
//!
//! It is not the sandbox: engine configuration, limits on memory/fuel/time
//! and instantiation live in `engine::sandbox`. Start with [`StepHost::new`]
//! and [`add_to_linker`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::WasiCtx;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "step",
        imports: { default: trappable },
        // The sandbox runs the guest on a fiber that yields after every
        // slice of fuel (see `engine::sandbox::FUEL_SLICE`).
        exports: { default: async },
        with: {
            "sluice:step/artifacts.reader": crate::ReaderHandle,
            "sluice:step/artifacts.writer": crate::WriterHandle,
            "sluice:step/gpu.job": crate::JobHandle,
        },
    });
}

pub use bindings::sluice::step::gpu::{GpuUsage, JobResult, JobSpec, JobState};
pub use bindings::sluice::step::types::{Artifact, Error as WitError};
pub use bindings::{Step, StepPre};

use bindings::sluice::step::{artifacts, gpu, metrics, params, types};

/// The WIT package and world this host implements; part of every cache key.
pub const WORLD: &str = "sluice:step/step@0.1.0";

/// Largest chunk one `reader.read` returns, whatever the guest asks for, so
/// a `read(max = u64::MAX)` never sizes a host allocation.
pub const READ_CHUNK_BYTES_MAX: u64 = 1 << 20;

/// Most distinct metric names and series points a step may report; bounds
/// host memory spent on a guest's metrics.
pub const METRIC_POINTS_MAX: usize = 100_000;

/// Longest metric name, tag key or tag value, in bytes.
pub const METRIC_TEXT_BYTES_MAX: usize = 256;

/// Which limit ended an attempt. The sandbox reports these as
/// `limit: <kind>` failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// Linear memory or table growth past the step's memory limit.
    Memory,
    /// Fuel (deterministic CPU budget) exhausted.
    Fuel,
    /// Wall-clock timeout.
    Time,
    /// Output bytes, captured stdout/stderr or metrics past their caps.
    Output,
    /// Wasm stack exhausted.
    Stack,
    /// Too many host calls or live handles.
    HostCalls,
}

impl LimitKind {
    /// The stable lower-case name used in reports: `memory`, `fuel`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory",
            LimitKind::Fuel => "fuel",
            LimitKind::Time => "time",
            LimitKind::Output => "output",
            LimitKind::Stack => "stack",
            LimitKind::HostCalls => "host-calls",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trap raised by a host function because the guest went past a limit.
#[derive(Debug, thiserror::Error)]
#[error("limit: {kind}: {detail}")]
pub struct LimitExceeded {
    /// Which limit.
    pub kind: LimitKind,
    /// What was exceeded, with numbers.
    pub detail: String,
}

/// A trap raised because the engine itself failed (storage IO); the attempt
/// fails with class `engine`, not blamed on the step.
#[derive(Debug, thiserror::Error)]
#[error("engine: {0}")]
pub struct EngineFault(pub String);

/// An error from a port: a storage failure is an engine fault; the other
/// cases are answered to the guest as WIT errors.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The engine failed (IO, corruption); traps the attempt as `engine`.
    #[error("{0}")]
    Engine(String),
    /// Refused; answered to the guest as this WIT error.
    #[error("{0:?}")]
    Refused(WitError),
}

/// An input wired to the step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputArtifact {
    /// The input name in the spec.
    pub name: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Media type recorded when it was written.
    pub media_type: String,
}

/// A finished output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputArtifact {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Media type the step declared.
    pub media_type: String,
}

/// The bytes of an opened input: read sequentially, seekable for random
/// access (`reader.seek`). Implemented for every `Read + Seek + Send` type
/// (a `BufReader<File>`, a `Cursor` in tests).
pub trait InputBytes: Read + Seek + Send {}

impl<T: Read + Seek + Send> InputBytes for T {}

/// Storage for one attempt: open verified inputs, create outputs.
pub trait ArtifactPort: Send {
    /// Opens the bytes of `input` for reading; the implementation verifies
    /// them against the digest.
    fn open(&mut self, input: &InputArtifact) -> Result<Box<dyn InputBytes>, PortError>;
    /// Starts a new output blob.
    fn create(&mut self, name: &str) -> Result<Box<dyn OutputSink>, PortError>;
}

/// One output being written.
pub trait OutputSink: Send {
    /// Appends bytes.
    fn write(&mut self, bytes: &[u8]) -> Result<(), PortError>;
    /// Seals the blob durably and returns its digest and size.
    fn finish(self: Box<Self>) -> Result<(String, u64), PortError>;
}

/// A submitted GPU job as the engine tracks it.
pub trait GpuJob: Send {
    /// The job id.
    fn id(&self) -> String;
    /// Current state, non-blocking.
    fn state(&mut self) -> JobState;
    /// Blocks until the job ends.
    fn wait(&mut self) -> Result<JobResult, PortError>;
    /// Requests cancellation.
    fn cancel(&mut self);
}

/// GPU dispatch for one attempt.
pub trait GpuPort: Send {
    /// Submits a job, or refuses (`denied`, `quota`, `invalid`).
    fn submit(&mut self, spec: JobSpec) -> Result<Box<dyn GpuJob>, PortError>;
    /// Visible devices, one line each.
    fn devices(&mut self) -> Vec<String>;
}

/// A GPU port for a step without a `gpu` grant: every submit is `denied`.
#[derive(Debug)]
pub struct NoGpuGrant {
    /// The step that asked.
    pub step: String,
}

impl GpuPort for NoGpuGrant {
    fn submit(&mut self, spec: JobSpec) -> Result<Box<dyn GpuJob>, PortError> {
        Err(PortError::Refused(WitError::Denied(format!(
            "step `{}` has no gpu grant; add `gpu = {{ worker = \"{}\" }}` to [steps.{}] to submit `{}` jobs",
            self.step, spec.worker, self.step, spec.op
        ))))
    }

    fn devices(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// Guest handle to an input being read.
pub struct ReaderHandle {
    name: String,
    /// The artifact's size, which bounds `seek`.
    size: u64,
    bytes: Box<dyn InputBytes>,
}

/// Guest handle to an output being written; the sink lives in
/// [`StepHost`] so unfinished outputs can be sealed when `run` returns.
pub struct WriterHandle {
    name: String,
}

/// Guest handle to a GPU job.
pub struct JobHandle {
    job: Box<dyn GpuJob>,
    done: bool,
}

/// Metrics a step reported. Values are always finite: a NaN or infinite
/// value is recorded as the tag `non-finite.<name>` instead.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepMetrics {
    /// Final scalar values by name.
    pub scalars: BTreeMap<String, f64>,
    /// Series points `(step, value)` by name, in report order.
    pub series: BTreeMap<String, Vec<(u64, f64)>>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    points: usize,
}

/// Budgets enforced by the host functions.
#[derive(Clone, Copy, Debug)]
pub struct HostBudget {
    /// Total bytes across all outputs.
    pub output_bytes_max: u64,
    /// Host calls per attempt.
    pub host_calls_max: u64,
}

/// What an attempt produced, collected from [`StepHost`] after `run`.
#[derive(Debug, Default)]
pub struct HostOutcome {
    /// Finished outputs by name.
    pub outputs: BTreeMap<String, OutputArtifact>,
    /// Reported metrics.
    pub metrics: StepMetrics,
    /// Bytes the step read from its inputs.
    pub bytes_in: u64,
    /// Bytes the step wrote to its outputs.
    pub bytes_out: u64,
    /// Host calls made.
    pub host_calls: u64,
}

struct OpenWriter {
    media_type: String,
    sink: Box<dyn OutputSink>,
}

/// Everything a step instance can reach: the WASI context (clocks, random,
/// captured stdio; no files, no network, no env), its resource table, and
/// the `sluice:step` state.
pub struct StepHost {
    /// WASI state, built by the sandbox.
    pub wasi: WasiCtx,
    /// Resources (WASI and ours), bounded by the sandbox.
    pub table: ResourceTable,
    step: String,
    inputs: BTreeMap<String, InputArtifact>,
    declared_outputs: BTreeSet<String>,
    params: BTreeMap<String, String>,
    artifacts: Box<dyn ArtifactPort>,
    gpu: Box<dyn GpuPort>,
    budget: HostBudget,
    writers: BTreeMap<String, OpenWriter>,
    finished: BTreeMap<String, OutputArtifact>,
    metrics: StepMetrics,
    bytes_in: u64,
    bytes_out: u64,
    host_calls: u64,
    /// A fault raised where it could not be returned (a writer's drop).
    deferred_fault: Option<EngineFault>,
    /// Outputs of this attempt's succeeded gpu jobs by digest: the only
    /// artifacts `publish` accepts.
    gpu_outputs: BTreeMap<String, Artifact>,
}

/// Construction parameters of a [`StepHost`].
pub struct StepHostConfig {
    /// The step name, for messages.
    pub step: String,
    /// Wired inputs.
    pub inputs: Vec<InputArtifact>,
    /// Declared output names.
    pub outputs: Vec<String>,
    /// Resolved params.
    pub params: BTreeMap<String, String>,
    /// Budgets.
    pub budget: HostBudget,
}

impl StepHost {
    /// An output may be created (or published) once, and only if declared.
    fn check_new_output(&self, name: &str, already: &str) -> Result<(), WitError> {
        if !self.declared_outputs.iter().any(|o| o == name) {
            return Err(WitError::Invalid(format!(
                "step `{}` declares no output named {name:?}; its outputs: {}",
                self.step,
                list_names(self.declared_outputs.iter())
            )));
        }
        if self.writers.contains_key(name) || self.finished.contains_key(name) {
            return Err(WitError::Invalid(format!(
                "output `{name}` of step `{}` was already {already}",
                self.step
            )));
        }
        Ok(())
    }

    /// A host for one attempt.
    pub fn new(
        config: StepHostConfig,
        wasi: WasiCtx,
        table: ResourceTable,
        artifacts: Box<dyn ArtifactPort>,
        gpu: Box<dyn GpuPort>,
    ) -> Self {
        StepHost {
            wasi,
            table,
            step: config.step,
            inputs: config
                .inputs
                .into_iter()
                .map(|i| (i.name.clone(), i))
                .collect(),
            declared_outputs: config.outputs.into_iter().collect(),
            params: config.params,
            artifacts,
            gpu,
            budget: config.budget,
            writers: BTreeMap::new(),
            finished: BTreeMap::new(),
            metrics: StepMetrics::default(),
            bytes_in: 0,
            bytes_out: 0,
            host_calls: 0,
            deferred_fault: None,
            gpu_outputs: BTreeMap::new(),
        }
    }

    /// Seals outputs still open after a successful `run`, checks every
    /// declared output was written and returns what the attempt produced.
    /// `Err` carries the step's failure message (class `step`) or an
    /// engine fault.
    pub fn finish(mut self) -> Result<HostOutcome, FinishError> {
        if let Some(fault) = self.deferred_fault.take() {
            return Err(FinishError::Engine(fault.0));
        }
        let open: Vec<String> = self.writers.keys().cloned().collect();
        for name in open {
            self.seal(&name).map_err(|e| match e {
                PortError::Engine(m) => FinishError::Engine(m),
                PortError::Refused(e) => FinishError::Step(format!("{e:?}")),
            })?;
        }
        let missing: Vec<&String> = self
            .declared_outputs
            .iter()
            .filter(|n| !self.finished.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|n| format!("`{n}`")).collect();
            return Err(FinishError::Step(format!(
                "step `{}` returned ok without writing declared output {}",
                self.step,
                names.join(", ")
            )));
        }
        Ok(self.into_outcome())
    }

    /// What the attempt produced so far, without checks (for failed attempts).
    pub fn into_outcome(self) -> HostOutcome {
        HostOutcome {
            outputs: self.finished,
            metrics: self.metrics,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            host_calls: self.host_calls,
        }
    }

    /// Puts a guest handle in the bounded resource table; a full table ends
    /// the attempt as `limit: host-calls`.
    fn push_handle<R: Send + 'static>(&mut self, r: R) -> wasmtime::Result<Resource<R>> {
        self.table.push(r).map_err(|e| {
            LimitExceeded {
                kind: LimitKind::HostCalls,
                detail: format!("step `{}`: too many open handles: {e}", self.step),
            }
            .into()
        })
    }

    fn count_call(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        if self.host_calls > self.budget.host_calls_max {
            return Err(LimitExceeded {
                kind: LimitKind::HostCalls,
                detail: format!(
                    "step `{}` made more than {} host calls",
                    self.step, self.budget.host_calls_max
                ),
            }
            .into());
        }
        Ok(())
    }

    fn seal(&mut self, name: &str) -> Result<OutputArtifact, PortError> {
        let Some(open) = self.writers.remove(name) else {
            return Err(PortError::Refused(WitError::Invalid(format!(
                "output `{name}` is already finished"
            ))));
        };
        let (digest, size) = open.sink.finish()?;
        let artifact = OutputArtifact {
            digest,
            size,
            media_type: open.media_type,
        };
        self.finished.insert(name.to_string(), artifact.clone());
        Ok(artifact)
    }

    fn record_point(&mut self, name: &str) -> wasmtime::Result<()> {
        self.metrics.points += 1;
        if self.metrics.points > METRIC_POINTS_MAX {
            return Err(LimitExceeded {
                kind: LimitKind::Output,
                detail: format!(
                    "step `{}` reported more than {METRIC_POINTS_MAX} metric points (last: `{}`)",
                    self.step,
                    truncate(name)
                ),
            }
            .into());
        }
        Ok(())
    }
}

/// Why [`StepHost::finish`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// The step broke its contract (missing output).
    #[error("{0}")]
    Step(String),
    /// Storage failed.
    #[error("engine: {0}")]
    Engine(String),
}

fn truncate(s: &str) -> String {
    if s.len() <= METRIC_TEXT_BYTES_MAX {
        return s.to_string();
    }
    let mut end = METRIC_TEXT_BYTES_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Maps a port result into the two-level result of a trappable import:
/// engine faults trap, refusals are answered.
fn answer<T>(r: Result<T, PortError>) -> wasmtime::Result<Result<T, WitError>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(PortError::Refused(e)) => Ok(Err(e)),
        Err(PortError::Engine(m)) => Err(EngineFault(m).into()),
    }
}

fn list_names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

impl types::Host for StepHost {}

impl artifacts::Host for StepHost {
    fn inputs(&mut self) -> wasmtime::Result<Vec<Artifact>> {
        self.count_call()?;
        Ok(self
            .inputs
            .values()
            .map(|i| Artifact {
                name: i.name.clone(),
                digest: i.digest.clone(),
                size: i.size,
                media_type: i.media_type.clone(),
            })
            .collect())
    }

    fn outputs(&mut self) -> wasmtime::Result<Vec<String>> {
        self.count_call()?;
        Ok(self.declared_outputs.iter().cloned().collect())
    }

    fn open(&mut self, name: String) -> wasmtime::Result<Result<Resource<ReaderHandle>, WitError>> {
        self.count_call()?;
        // Inputs are looked up by exact logical name; nothing is ever
        // interpreted as a path, so `..`, `/` or NUL cannot escape.
        let Some(input) = self.inputs.get(&name).cloned() else {
            return Ok(Err(WitError::NotFound(format!(
                "step `{}` has no input named {name:?}; its inputs: {}",
                self.step,
                list_names(self.inputs.keys())
            ))));
        };
        let bytes = match answer(self.artifacts.open(&input))? {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(self.push_handle(ReaderHandle {
            name,
            size: input.size,
            bytes,
        })?))
    }

    fn create(
        &mut self,
        name: String,
        media_type: String,
    ) -> wasmtime::Result<Result<Resource<WriterHandle>, WitError>> {
        self.count_call()?;
        if let Err(e) = self.check_new_output(&name, "created") {
            return Ok(Err(e));
        }
        if media_type.len() > METRIC_TEXT_BYTES_MAX || media_type.contains(char::is_control) {
            return Ok(Err(WitError::Invalid(format!(
                "output `{name}`: media type must be at most {METRIC_TEXT_BYTES_MAX} printable bytes"
            ))));
        }
        let sink = match answer(self.artifacts.create(&name))? {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let handle = self.push_handle(WriterHandle { name: name.clone() })?;
        self.writers.insert(name, OpenWriter { media_type, sink });
        Ok(Ok(handle))
    }

    fn publish(
        &mut self,
        name: String,
        artifact: Artifact,
    ) -> wasmtime::Result<Result<Artifact, WitError>> {
        self.count_call()?;
        if let Err(e) = self.check_new_output(&name, "written") {
            return Ok(Err(e));
        }
        // Only the host's own record of a succeeded job counts: the guest's
        // copy of the artifact is a claim, checked field by field.
        let Some(job_output) = self
            .gpu_outputs
            .get(&artifact.digest)
            .filter(|o| o.size == artifact.size)
            .cloned()
        else {
            return Ok(Err(WitError::Denied(format!(
                "step `{}` cannot publish {:?} ({}) as output `{name}`: it is not an output \
                 of a gpu job of this attempt that succeeded",
                self.step,
                truncate(&artifact.name),
                truncate(&artifact.digest)
            ))));
        };
        let total = self.bytes_out + job_output.size;
        if total > self.budget.output_bytes_max {
            return Err(LimitExceeded {
                kind: LimitKind::Output,
                detail: format!(
                    "step `{}` wrote more than {} output bytes (output `{name}`)",
                    self.step, self.budget.output_bytes_max
                ),
            }
            .into());
        }
        self.bytes_out = total;
        let published = OutputArtifact {
            digest: job_output.digest.clone(),
            size: job_output.size,
            media_type: job_output.media_type.clone(),
        };
        self.finished.insert(name.clone(), published);
        Ok(Ok(Artifact {
            name,
            digest: job_output.digest,
            size: job_output.size,
            media_type: job_output.media_type,
        }))
    }
}

impl artifacts::HostReader for StepHost {
    fn read(
        &mut self,
        reader: Resource<ReaderHandle>,
        max: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        self.count_call()?;
        let len = max.min(READ_CHUNK_BYTES_MAX) as usize;
        let handle = self.table.get_mut(&reader)?;
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        // Fill the chunk (short reads from the port are not end of input).
        while filled < len {
            match handle.bytes.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(EngineFault(format!("input `{}`: {e}", handle.name)).into());
                }
            }
        }
        buf.truncate(filled);
        self.bytes_in += filled as u64;
        Ok(Ok(buf))
    }

    fn seek(
        &mut self,
        reader: Resource<ReaderHandle>,
        offset: u64,
    ) -> wasmtime::Result<Result<(), WitError>> {
        self.count_call()?;
        let handle = self.table.get_mut(&reader)?;
        if offset > handle.size {
            return Ok(Err(WitError::Invalid(format!(
                "input `{}`: cannot seek to byte {offset}: the artifact has {} bytes",
                handle.name, handle.size
            ))));
        }
        handle
            .bytes
            .seek(SeekFrom::Start(offset))
            .map_err(|e| EngineFault(format!("input `{}`: seek: {e}", handle.name)))?;
        Ok(Ok(()))
    }

    fn drop(&mut self, reader: Resource<ReaderHandle>) -> wasmtime::Result<()> {
        self.table.delete(reader)?;
        Ok(())
    }
}

impl artifacts::HostWriter for StepHost {
    fn write(
        &mut self,
        writer: Resource<WriterHandle>,
        bytes: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        self.count_call()?;
        let name = self.table.get(&writer)?.name.clone();
        let total = self.bytes_out + bytes.len() as u64;
        if total > self.budget.output_bytes_max {
            return Err(LimitExceeded {
                kind: LimitKind::Output,
                detail: format!(
                    "step `{}` wrote more than {} output bytes (output `{name}`)",
                    self.step, self.budget.output_bytes_max
                ),
            }
            .into());
        }
        let Some(open) = self.writers.get_mut(&name) else {
            return Ok(Err(WitError::Invalid(format!(
                "output `{name}` is already finished"
            ))));
        };
        answer(open.sink.write(&bytes))?
            .map(|()| {
                self.bytes_out = total;
            })
            .map_or_else(|e| Ok(Err(e)), |()| Ok(Ok(())))
    }

    fn finish(
        &mut self,
        writer: Resource<WriterHandle>,
    ) -> wasmtime::Result<Result<Artifact, WitError>> {
        self.count_call()?;
        let name = self.table.get(&writer)?.name.clone();
        let sealed = answer(self.seal(&name))?;
        Ok(sealed.map(|a| Artifact {
            name,
            digest: a.digest,
            size: a.size,
            media_type: a.media_type,
        }))
    }

    fn drop(&mut self, writer: Resource<WriterHandle>) -> wasmtime::Result<()> {
        let handle = self.table.delete(writer)?;
        // Dropping an unfinished writer finishes it (see the WIT docs).
        if self.writers.contains_key(&handle.name)
            && let Err(e) = self.seal(&handle.name)
        {
            self.deferred_fault
                .get_or_insert(EngineFault(format!("output `{}`: {e}", handle.name)));
        }
        Ok(())
    }
}

impl params::Host for StepHost {
    fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        self.count_call()?;
        Ok(self.params.get(&name).cloned())
    }

    fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        self.count_call()?;
        Ok(self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl metrics::Host for StepHost {
    fn scalar(&mut self, name: String, value: f64, step: Option<u64>) -> wasmtime::Result<()> {
        self.count_call()?;
        self.record_point(&name)?;
        let name = truncate(&name);
        if !value.is_finite() {
            // JSON has no NaN or infinity: keep the fact visible as a tag
            // instead of a number every reader would choke on.
            let at = step.map_or(String::new(), |s| format!(" at step {s}"));
            self.metrics
                .tags
                .insert(format!("non-finite.{name}"), format!("{value}{at}"));
            return Ok(());
        }
        match step {
            None => {
                self.metrics.scalars.insert(name, value);
            }
            Some(at) => self
                .metrics
                .series
                .entry(name)
                .or_default()
                .push((at, value)),
        }
        Ok(())
    }

    fn tag(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        self.count_call()?;
        self.record_point(&key)?;
        self.metrics.tags.insert(truncate(&key), truncate(&value));
        Ok(())
    }
}

impl gpu::Host for StepHost {
    fn submit(&mut self, spec: JobSpec) -> wasmtime::Result<Result<Resource<JobHandle>, WitError>> {
        self.count_call()?;
        let job = match answer(self.gpu.submit(spec))? {
            Ok(j) => j,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(self.push_handle(JobHandle { job, done: false })?))
    }

    fn devices(&mut self) -> wasmtime::Result<Vec<String>> {
        self.count_call()?;
        Ok(self.gpu.devices())
    }
}

impl gpu::HostJob for StepHost {
    fn id(&mut self, job: Resource<JobHandle>) -> wasmtime::Result<String> {
        self.count_call()?;
        Ok(self.table.get(&job)?.job.id())
    }

    fn state(&mut self, job: Resource<JobHandle>) -> wasmtime::Result<JobState> {
        self.count_call()?;
        Ok(self.table.get_mut(&job)?.job.state())
    }

    fn wait(&mut self, job: Resource<JobHandle>) -> wasmtime::Result<JobResult> {
        self.count_call()?;
        let handle = self.table.get_mut(&job)?;
        let result = handle.job.wait().map_err(|e| EngineFault(e.to_string()))?;
        handle.done = true;
        if result.state == JobState::Succeeded {
            for out in &result.outputs {
                self.gpu_outputs.insert(out.digest.clone(), out.clone());
            }
        }
        Ok(result)
    }

    fn cancel(&mut self, job: Resource<JobHandle>) -> wasmtime::Result<()> {
        self.count_call()?;
        self.table.get_mut(&job)?.job.cancel();
        Ok(())
    }

    fn drop(&mut self, job: Resource<JobHandle>) -> wasmtime::Result<()> {
        let mut handle = self.table.delete(job)?;
        if !handle.done {
            handle.job.cancel();
        }
        Ok(())
    }
}

/// Marker for linking the `sluice:step` interfaces against a store whose
/// data contains a [`StepHost`].
struct HasStepHost;

impl HasData for HasStepHost {
    type Data<'a> = &'a mut StepHost;
}

/// Links the `sluice:step` imports (not WASI: the sandbox links that) for a
/// store whose data `T` exposes its [`StepHost`] through `get`.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut StepHost,
) -> wasmtime::Result<()> {
    types::add_to_linker::<T, HasStepHost>(linker, get)?;
    artifacts::add_to_linker::<T, HasStepHost>(linker, get)?;
    params::add_to_linker::<T, HasStepHost>(linker, get)?;
    metrics::add_to_linker::<T, HasStepHost>(linker, get)?;
    gpu::add_to_linker::<T, HasStepHost>(linker, get)?;
    Ok(())
}
