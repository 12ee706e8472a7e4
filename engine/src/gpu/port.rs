//! The attempt's gpu port: the host-api [`GpuPort`] a step with a `gpu`
//! grant submits jobs through, answered live by a [`Dispatcher`] or, in a
//! replay, from the record ([`Backend::Recorded`]).
//!
//! Invariant: a job is handed to the backend only if it names the granted
//! worker kind, is within the grant's `max_jobs` for the attempt, passed
//! [`JobSpecRecord::from_wit`], and reads only the step's inputs or
//! outputs of the attempt's earlier jobs. No job outlives its attempt: a
//! guest's wait is released (its job cancelled) at the attempt's deadline
//! or cancellation, and dropped unfinished jobs are cancelled.
//! Boundary: implements `sluice_host_api::GpuPort`; knows nothing of
//! wasmtime, the scheduler or the record's format (the runner records the
//! [`Ledger`]'s reports).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_host_api::{GpuJob, GpuPort, JobResult, JobSpec, JobState, PortError, WitError};

use crate::digest::Digest;
use crate::spec::Grant;
use crate::store::Store;

use super::dispatch::{Dispatcher, JobRequest};
use super::handle::{JobHandle, JobShared, lock};
use super::job::{JobReport, JobSpecRecord, State};
use super::telemetry::{self, DeviceInfo};

/// Jobs a run recorded for one step, by spec digest, in submission order.
#[derive(Debug, Default)]
pub struct RecordedJobs {
    by_spec: BTreeMap<Digest, VecDeque<JobReport>>,
}

impl RecordedJobs {
    /// From the recorded reports of one attempt.
    pub fn new(reports: impl IntoIterator<Item = JobReport>) -> RecordedJobs {
        let mut by_spec: BTreeMap<Digest, VecDeque<JobReport>> = BTreeMap::new();
        for r in reports {
            by_spec.entry(r.spec_digest).or_default().push_back(r);
        }
        RecordedJobs { by_spec }
    }

    /// The next recorded job with this spec digest.
    pub fn take(&mut self, spec: &Digest) -> Option<JobReport> {
        self.by_spec.get_mut(spec).and_then(VecDeque::pop_front)
    }
}

/// Where an attempt's jobs are answered.
pub enum Backend {
    /// Executed on workers.
    Live(Arc<Dispatcher>),
    /// Answered from a run record (replay); no worker is started.
    Recorded(Mutex<RecordedJobs>),
}

/// Jobs submitted during one attempt, in order.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    jobs: Arc<Mutex<Vec<Arc<JobShared>>>>,
}

impl Ledger {
    /// The final reports of every job (waiting for any still running —
    /// none is after the attempt's handles were dropped).
    pub fn reports(&self) -> Vec<JobReport> {
        let jobs = lock(&self.jobs).clone();
        jobs.iter().map(|j| j.wait()).collect()
    }

    fn push(&self, job: Arc<JobShared>) {
        lock(&self.jobs).push(job);
    }

    /// Digests of the outputs of jobs that succeeded so far.
    fn outputs(&self) -> BTreeSet<Digest> {
        lock(&self.jobs)
            .iter()
            .filter_map(|j| j.report())
            .filter(|r| r.state == State::Succeeded)
            .flat_map(|r| r.outputs.into_values().map(|o| o.digest))
            .collect()
    }
}

/// The gpu port of one attempt of a step with a grant: checks the grant
/// and quota, then hands jobs to the backend.
pub struct AttemptGpu {
    /// Step name.
    pub step: String,
    /// Its grant.
    pub grant: Grant,
    /// The step's own timeout: a job's deadline never exceeds it.
    pub step_timeout: Duration,
    /// Digests of the step's inputs (the only blobs a job may read besides
    /// earlier jobs' outputs).
    pub inputs: BTreeSet<Digest>,
    /// Where jobs run.
    pub backend: Arc<Backend>,
    /// The store.
    pub store: Arc<Store>,
    /// Run-wide job counter, for ids.
    pub counter: Arc<AtomicU64>,
    /// Collects the attempt's jobs.
    pub ledger: Ledger,
    submitted: u32,
    /// The attempt's cancellation flag and deadline: a guest blocked in
    /// `job.wait` is released (its job cancelled) when either fires, so a
    /// wait never holds the attempt past its timeout, a cancel or shutdown.
    bound: AttemptBound,
}

/// When an attempt must stop waiting on its jobs.
#[derive(Clone, Debug)]
struct AttemptBound {
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    deadline: Option<Instant>,
}

impl AttemptBound {
    fn reached(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// How often a guest's `job.wait` looks at its attempt's cancellation flag
/// and deadline: the order of magnitude of a fuel slice of guest code.
const WAIT_SLICE: Duration = Duration::from_millis(20);

impl AttemptGpu {
    /// A port for one attempt.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        step: &str,
        grant: Grant,
        step_timeout: Duration,
        inputs: BTreeSet<Digest>,
        backend: Arc<Backend>,
        store: Arc<Store>,
        counter: Arc<AtomicU64>,
        ledger: Ledger,
    ) -> AttemptGpu {
        AttemptGpu {
            step: step.to_string(),
            grant,
            step_timeout,
            inputs,
            backend,
            store,
            counter,
            ledger,
            submitted: 0,
            bound: AttemptBound {
                stop: None,
                deadline: None,
            },
        }
    }

    /// Releases the guest's job waits when `stop` is set or at `deadline`
    /// (the attempt's own timeout), cancelling the job waited on.
    pub fn bounded_by(
        mut self,
        stop: Option<Arc<std::sync::atomic::AtomicBool>>,
        deadline: Instant,
    ) -> AttemptGpu {
        self.bound = AttemptBound {
            stop,
            deadline: Some(deadline),
        };
        self
    }
}

/// A job handle as the host-api sees it.
struct PortJob {
    handle: JobHandle,
    done: bool,
    bound: AttemptBound,
}

impl GpuJob for PortJob {
    fn id(&self) -> String {
        self.handle.id().to_string()
    }

    fn state(&mut self) -> JobState {
        self.handle.state().to_wit()
    }

    fn wait(&mut self) -> Result<JobResult, PortError> {
        let r = loop {
            if let Some(r) = self.handle.shared().wait_for(WAIT_SLICE) {
                break r;
            }
            if self.bound.reached() {
                // The guest gets the cancelled job's report; the deadline
                // (or the cancellation) traps it at its next host call or
                // fuel slice.
                break self.handle.cancel();
            }
        };
        self.done = true;
        Ok(r.to_wit())
    }

    fn cancel(&mut self) {
        self.handle.cancel();
        self.done = true;
    }
}

impl Drop for PortJob {
    fn drop(&mut self) {
        // The guest's store is torn down without dropping each handle when an
        // attempt traps or returns holding jobs: unfinished jobs are
        // cancelled here so none outlives its attempt.
        if !self.done {
            self.handle.cancel();
        }
    }
}

impl GpuPort for AttemptGpu {
    fn submit(&mut self, spec: JobSpec) -> Result<Box<dyn GpuJob>, PortError> {
        let refuse = |e: WitError| Err(PortError::Refused(e));
        if spec.worker != self.grant.worker {
            return refuse(WitError::Denied(format!(
                "step `{}` is granted gpu worker `{}`, not `{}`",
                self.step,
                self.grant.worker,
                crate::quoting::escape_controls(&spec.worker, 64)
            )));
        }
        if self.submitted >= self.grant.max_jobs {
            return refuse(WitError::Quota(format!(
                "step `{}` already submitted {} gpu job{}; its grant allows max_jobs = {} per attempt",
                self.step,
                self.submitted,
                if self.submitted == 1 { "" } else { "s" },
                self.grant.max_jobs
            )));
        }
        let record = match JobSpecRecord::from_wit(&spec) {
            Ok(r) => r,
            Err(e) => return refuse(e),
        };
        let produced = self.ledger.outputs();
        for (name, digest) in &record.inputs {
            if !self.inputs.contains(digest) && !produced.contains(digest) {
                return refuse(WitError::Denied(format!(
                    "step `{}`: gpu job input `{name}` ({digest}) is neither an input of the step nor an output of one of its gpu jobs",
                    self.step
                )));
            }
        }
        self.submitted += 1;
        let spec_digest = record.digest();
        let handle = match &*self.backend {
            Backend::Live(dispatcher) => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
                let timeout = record
                    .timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(self.step_timeout)
                    .min(self.step_timeout);
                dispatcher.submit(JobRequest {
                    id: format!("j{n}"),
                    min_free_memory_mib: record
                        .min_free_memory_mib
                        .max(self.grant.min_free_memory_mib),
                    spec: record,
                    deadline: timeout,
                    store: self.store.clone(),
                })
            }
            Backend::Recorded(recorded) => {
                let Some(mut report) = lock(recorded).take(&spec_digest) else {
                    return refuse(WitError::Invalid(format!(
                        "replay: step `{}` submitted a gpu job (spec {spec_digest}) that the record does not have: the job spec diverged from the recorded run (replay with --rerun-gpu to execute it)",
                        self.step
                    )));
                };
                report.replayed = true;
                if report.state == State::Succeeded
                    && let Some((name, missing)) = report
                        .outputs
                        .iter()
                        .find(|(_, o)| self.store.verify(&o.digest).is_err())
                {
                    report.state = State::Failed;
                    report.message = Some(format!(
                        "replay: recorded output `{name}` ({}) of job {} is missing or corrupt in the store",
                        missing.digest, report.id
                    ));
                    report.outputs.clear();
                }
                JobHandle::answered(report)
            }
        };
        self.ledger.push(handle.shared().clone());
        Ok(Box::new(PortJob {
            handle,
            done: false,
            bound: self.bound.clone(),
        }))
    }

    fn devices(&mut self) -> Vec<String> {
        telemetry::devices().iter().map(DeviceInfo::line).collect()
    }
}
