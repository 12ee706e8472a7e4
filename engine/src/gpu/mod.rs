//! GPU jobs: the engine side of the WIT `gpu` interface.
//!
//! A step with a `gpu = { worker = "…" }` grant submits jobs through
//! [`AttemptGpu`] (the host-api `GpuPort`, in `port`); a long-lived
//! [`Dispatcher`] (`dispatch`, shared by every run of a process: a warm
//! pool) runs each job on a native worker process of that kind, speaking
//! the JSON-lines protocol of `workers/PROTOCOL.md` ([`protocol`]),
//! with workers kept in per-kind pools ([`pool`]) started from the engine
//! config ([`config`]) and watched by NVML ([`telemetry`]). A job is data
//! in `job` ([`JobSpecRecord`], [`JobReport`]); a submitted one is a
//! [`JobHandle`] (`handle`); its inputs and outputs cross the store in
//! `ingest`. Replays answer jobs from the record instead
//! ([`Backend::Recorded`]) and judge reruns with [`compare`].
//!
//! Invariant: inputs and outputs cross only as paths into the store — every
//! input blob is verified before a worker sees its path, every reported
//! output is re-hashed (no symlinks, no path outside the job's output
//! directory) before it is ingested, and a mismatch fails the job. Every
//! job ends in exactly one final state with a message naming the offender;
//! a crashed, hung or misbehaving worker is killed and its slot respawned
//! lazily, and never takes the engine or another job down. Dropping an
//! unfinished job cancels it.
//! Boundary: runs worker processes and reads/writes the store; knows
//! nothing of the sandbox, the scheduler or the record (the runner records
//! the [`JobReport`]s). This file only declares the modules and re-exports
//! the paths the rest of the engine uses (`crate::gpu::X`).

pub mod config;
pub mod pool;
pub mod protocol;
pub mod telemetry;

mod compare;
mod dispatch;
mod handle;
mod ingest;
mod job;
mod port;

pub use compare::{Comparison, LOSS_RELATIVE_TOLERANCE, compare};
pub use config::{ConfigError, WorkerConfig};
pub use dispatch::{CANCEL_GRACE, Dispatcher, JobRequest};
pub use handle::JobHandle;
pub use ingest::{InputError, OpenRefusal, OutputError, OutputProblem};
pub use job::{
    GPUS_PER_JOB_MAX, GpuReport, JOB_INPUTS_MAX, JobReport, JobSpecRecord, OP_BYTES_MAX,
    PARAMS_JSON_BYTES_MAX, State, fingerprint,
};
pub use pool::WorkerError;
pub use port::{AttemptGpu, Backend, Ledger, RecordedJobs};
pub use protocol::Hello;
pub use telemetry::{DeviceInfo, NvmlUnavailable, TelemetryUnavailable, Usage};
