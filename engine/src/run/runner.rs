//! The run's side of each step attempt: gates (cancel, condition, inputs,
//! slots), the cache, the record, and the attempt itself through
//! [`crate::attempt::run`].
//!
//! Invariant: every attempt is recorded (`step-started` with the
//! description its key is the digest of) before it runs, and every step
//! ends with exactly one report.
//! Boundary: called by the scheduler from its worker threads.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde_json::json;

use super::{
    CANCELLED_REASON, ConditionScope, Event, Observer, Options, Resolved, RunId, StepReport,
    StepStatus,
};
use crate::artifact::OutputRef;
use crate::cache::{Cache, Entry};
use crate::failure::{Failure, FailureClass};
use crate::record::Record;
use crate::sandbox::{Prepared, Sandbox};
use crate::scheduler::{self};
use crate::spec::ExecutorKind;
use crate::spec::{InputRef, Pipeline};
use crate::store::Store;

pub(crate) struct Runner<'a> {
    pub(super) pipeline: &'a Pipeline,
    pub(super) options: &'a Options,
    pub(super) run_id: &'a RunId,
    pub(super) store: Arc<Store>,
    pub(super) cache: Cache,
    pub(super) sources: BTreeMap<String, OutputRef>,
    pub(super) components: Vec<Result<Arc<Resolved>, String>>,
    pub(super) sandbox: OnceLock<Result<Sandbox, String>>,
    /// Where gpu jobs run (created on the first step with a grant).
    pub(super) gpu: OnceLock<Arc<crate::gpu::Backend>>,
    /// Numbers the run's gpu jobs `j1`, `j2`, ...
    pub(super) gpu_jobs: Arc<AtomicU64>,
    pub(super) record: Mutex<Record>,
    /// The first failed record append: the record is not written to again
    /// (a torn line can only be its last, which resume truncates), and the
    /// run ends with this error instead of a seal over a broken record.
    pub(super) record_failure: Mutex<Option<String>>,
    pub(super) reports: Mutex<Vec<Option<StepReport>>>,
    pub(super) observer: &'a dyn Observer,
}

impl Runner<'_> {
    fn log(&self, kind: &str, fields: serde_json::Value) {
        let mut failure = self
            .record_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failure.is_some() {
            return;
        }
        let mut rec = self.record.lock().unwrap_or_else(|p| p.into_inner());
        match rec.append(kind, fields) {
            // Blob renames ride on the record's group commit.
            Ok(true) => {
                if let Err(e) = self.store.sync() {
                    tracing::error!(error = %e, "cannot sync the store");
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot append to the run record");
                *failure = Some(format!(
                    "cannot append a `{kind}` event to {}: {e}",
                    rec.path().display()
                ));
            }
        }
    }

    fn gpu_backend(&self) -> Arc<crate::gpu::Backend> {
        self.gpu
            .get_or_init(|| {
                let dispatcher = self.options.gpu.clone().unwrap_or_else(|| {
                    Arc::new(crate::gpu::Dispatcher::new(
                        crate::gpu::WorkerConfig::builtin(&self.options.home),
                        self.options.home.join("scratch").join("gpu"),
                    ))
                });
                Arc::new(crate::gpu::Backend::Live(dispatcher))
            })
            .clone()
    }

    /// Records an attempt's gpu jobs and returns the step's gpu report.
    fn gpu_report(
        &self,
        step: &crate::spec::Step,
        attempt: u32,
        jobs: &[crate::gpu::JobReport],
    ) -> Option<crate::gpu::GpuReport> {
        step.gpu.as_ref()?;
        for job in jobs {
            self.log(
                "gpu-job",
                json!({"step": step.name, "attempt": attempt, "job": job.for_record()}),
            );
        }
        Some(crate::gpu::GpuReport::new(jobs.to_vec()))
    }

    fn sandbox(&self) -> Result<&Sandbox, String> {
        self.sandbox
            .get_or_init(|| {
                let cache = self
                    .options
                    .compile_cache
                    .clone()
                    .unwrap_or_else(|| self.options.home.join("components"));
                Sandbox::new(&cache, self.options.jobs).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The step's inputs, or which one is unavailable (only exit handlers
    /// can run with a producer that did not succeed).
    fn inputs_of(&self, step: usize) -> Result<BTreeMap<String, OutputRef>, String> {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        self.pipeline.steps[step]
            .inputs
            .iter()
            .map(|(name, r)| {
                let o = match r {
                    InputRef::Source(s) => Some(self.sources[s].clone()),
                    InputRef::Step { step, output } => reports[*step]
                        .as_ref()
                        .and_then(|rep| rep.outputs.get(output))
                        .cloned(),
                    // Expanded into per-combination inputs by `spec`.
                    InputRef::Collection { .. } => None,
                };
                let producer = match r {
                    InputRef::Source(s) => format!("source `{s}`"),
                    InputRef::Step { step, .. } | InputRef::Collection { step, .. } => {
                        format!("step `{}`", self.pipeline.steps[*step].name)
                    }
                };
                o.map(|o| (name.clone(), o)).ok_or_else(|| {
                    format!("input `{name}` is unavailable: {producer} did not succeed")
                })
            })
            .collect()
    }

    /// Evaluates the step's `when`, if any: `Ok(None)` to run, `Ok(Some)`
    /// with the skip reason, `Err` when it cannot be evaluated.
    fn condition(&self, step: usize) -> Result<Option<String>, String> {
        let Some((text, expr)) = &self.pipeline.steps[step].when else {
            return Ok(None);
        };
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let scope = ConditionScope {
            pipeline: self.pipeline,
            store: &self.store,
            reports: &reports,
            sweep: &self.pipeline.steps[step].sweep,
        };
        match crate::expr::eval(expr, &scope) {
            Ok(true) => Ok(None),
            Ok(false) => {
                let values: Vec<String> = expr
                    .refs()
                    .iter()
                    .filter_map(|r| {
                        crate::expr::Scope::lookup(&scope, r)
                            .ok()
                            .map(|v| format!("{r} = {v}"))
                    })
                    .collect();
                Ok(Some(if values.is_empty() {
                    format!("condition `{text}` is false")
                } else {
                    format!("condition `{text}` is false ({})", values.join(", "))
                }))
            }
            Err(e) => Err(format!("condition `{text}`: {e}")),
        }
    }

    fn finish(&self, step: usize, mut report: StepReport) {
        report.sweep = self.pipeline.steps[step].sweep.clone();
        tracing::debug!(
            step = %report.name,
            status = ?report.status,
            wall_ms = report.wall_ms,
            fuel_used = report.fuel_used,
            "step finished"
        );
        self.log(
            "step-finished",
            json!({
                "step": report.name,
                "status": report.status,
                "cached": report.cached,
                "attempts": report.attempts,
                "cache_key": report.cache_key,
                "executor": report.executor,
                "component": report.component,
                "built_from": report.built_from,
                "outputs": report.outputs,
                "fuel_used": report.fuel_used,
                "memory_peak_bytes": report.memory_peak_bytes,
                "wall_ms": report.wall_ms,
                "stdout": report.stdout,
                "stderr": report.stderr,
                "error": report.error,
            }),
        );
        self.observer.event(Event::StepFinished(&report));
        self.reports.lock().unwrap_or_else(|p| p.into_inner())[step] = Some(report);
    }

    fn prepare(&self, resolved: &Resolved) -> Result<Arc<Prepared>, String> {
        resolved
            .prepared
            .get_or_init(|| {
                let sandbox = self.sandbox()?;
                sandbox
                    .prepare(&resolved.path, &resolved.bytes, &resolved.digest)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }
}

/// Whether an attempt may go ahead, and with what.
enum Gate {
    /// Run with these inputs.
    Go(BTreeMap<String, OutputRef>),
    /// Skip the step, for this reason.
    Skip(String),
    /// Fail the attempt.
    Fail(Failure),
}

impl scheduler::Executor for Runner<'_> {
    fn attempt(&self, index: usize, attempt: u32) -> scheduler::Outcome {
        let step = &self.pipeline.steps[index];
        let _span = tracing::info_span!(
            "attempt",
            run_id = %self.run_id,
            step = %step.name,
            attempt
        )
        .entered();
        let t0 = Instant::now();
        self.observer.event(Event::StepStarted {
            step: &step.name,
            attempt,
        });
        // A retry starts from the previous attempt's provisional report.
        let mut report = {
            let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
            reports[index]
                .clone()
                .unwrap_or_else(|| StepReport::new(&step.name, StepStatus::Failed))
        };
        let skip = |reason: String| {
            let mut r = StepReport::new(&step.name, StepStatus::Skipped);
            r.reason = Some(reason);
            self.finish(index, r);
            scheduler::Outcome::Skipped
        };
        let inputs = match self.gate(index) {
            Gate::Go(inputs) => inputs,
            Gate::Skip(reason) => return skip(reason),
            Gate::Fail(failure) => {
                report.attempts = attempt;
                return self.attempt_failed(index, attempt, report, failure);
            }
        };
        let _slot = match &self.options.step_slots {
            Some(slots) => match slots.acquire(&|| self.options.cancelled()) {
                Some(guard) => Some(guard),
                None => return skip(CANCELLED_REASON.to_string()),
            },
            None => None,
        };
        let resolved = match &self.components[index] {
            Ok(r) => r.clone(),
            Err(e) => {
                report.attempts = attempt;
                let failure = Failure {
                    class: FailureClass::Step,
                    message: e.clone(),
                };
                return self.attempt_failed(index, attempt, report, failure);
            }
        };
        let (request, key) = self.start(index, attempt, &resolved, inputs);
        report.component = Some(resolved.digest);
        report.built_from = resolved.source.clone();
        report.cache_key = Some(key);
        if attempt == 1
            && step.cache
            && !self.options.no_cache
            && let Some(hit) = self.cache.lookup(&key, &self.store)
        {
            self.answer_from_cache(index, attempt, &resolved, key, hit, t0);
            return scheduler::Outcome::Succeeded;
        }
        report.attempts = attempt;
        let executor = self.executor_of(step);
        report.executor = Some(executor);
        let outcome = self.execute(executor, &resolved, &request);
        self.file(index, attempt, key, report, outcome)
    }

    fn skipped(&self, index: usize, why: scheduler::Skip) {
        use scheduler::Skip;
        let name = |i: usize| &self.pipeline.steps[i].name;
        let mut r = StepReport::new(name(index), StepStatus::Skipped);
        r.reason = Some(match why {
            _ if self.options.cancelled() => CANCELLED_REASON.to_string(),
            Skip::UpstreamFailed(s) => format!("upstream step `{}` failed", name(s)),
            Skip::UpstreamSkipped(s) => format!("upstream step `{}` was skipped", name(s)),
            Skip::NothingFailed => "exit handler on failure: no step failed".to_string(),
            Skip::SomethingFailed => "exit handler on success: a step failed".to_string(),
        });
        self.finish(index, r);
    }
}

impl Runner<'_> {
    /// Cancel, the `when` condition and the inputs decide whether an
    /// attempt goes ahead.
    fn gate(&self, index: usize) -> Gate {
        if self.options.cancelled() {
            return Gate::Skip(CANCELLED_REASON.to_string());
        }
        match self.condition(index) {
            Ok(None) => {}
            Ok(Some(reason)) => return Gate::Skip(reason),
            Err(message) => {
                return Gate::Fail(Failure {
                    class: FailureClass::Step,
                    message,
                });
            }
        }
        match self.inputs_of(index) {
            Ok(inputs) => Gate::Go(inputs),
            Err(reason) => Gate::Skip(reason),
        }
    }

    /// The attempt's request and its key, recorded in `step-started` before
    /// anything runs. The key is the digest of the very description the attempt
    /// runs from, so it covers what the guest can observe and cannot drift
    /// from it.
    fn start(
        &self,
        index: usize,
        attempt: u32,
        resolved: &Resolved,
        inputs: BTreeMap<String, OutputRef>,
    ) -> (crate::attempt::Request, crate::digest::Digest) {
        let step = &self.pipeline.steps[index];
        let request = crate::attempt::Plan {
            component: resolved.digest,
            step: step.name.clone(),
            inputs,
            outputs: step.outputs.clone(),
            params: step.params.clone(),
            limits: step.limits,
            run_seed: self.pipeline.seed,
            gpu: step.gpu.clone(),
        }
        .request(attempt);
        let description = &request.description;
        let key = description.key();
        self.log(
            "step-started",
            json!({
                "step": step.name,
                "attempt": attempt,
                "component": resolved.digest,
                "component_path": resolved.path.display().to_string(),
                "built_from": resolved.source,
                "cache_key": key,
                "inputs": description.input_refs(),
                "params": step.params,
                "outputs": step.outputs,
                "limits": step.limits,
                "run_seed": self.pipeline.seed,
                "host_answers": description.answers,
                "gpu": step.gpu,
                // What the cache key is the sha256 of (re-serialized
                // compactly): everything the attempt can observe.
                "attempt_description": description,
            }),
        );
        (request, key)
    }

    /// Finishes the step from a cache hit.
    fn answer_from_cache(
        &self,
        index: usize,
        attempt: u32,
        resolved: &Resolved,
        key: crate::digest::Digest,
        hit: Entry,
        t0: Instant,
    ) {
        let step = &self.pipeline.steps[index];
        let mut r = StepReport::new(&step.name, StepStatus::Cached);
        r.component = Some(resolved.digest);
        r.built_from = resolved.source.clone();
        r.cache_key = Some(key);
        r.outputs = hit.outputs;
        r.metrics = hit.metrics;
        r.series = hit.series;
        r.tags = hit.tags;
        // Nothing executed, but the record keeps the jobs that made these
        // outputs, so a replay of this run can answer them.
        for job in &hit.gpu_jobs {
            self.log(
                "gpu-job",
                json!({"step": step.name, "attempt": attempt, "cached": true, "job": job}),
            );
        }
        r.wall_ms = t0.elapsed().as_millis() as u64;
        self.finish(index, r);
    }

    /// Where `step` executes: its own `executor`, else the command line's,
    /// else the spec's `[executor]`, else the engine config's, else here.
    fn executor_of(&self, step: &crate::spec::Step) -> ExecutorKind {
        step.executor
            .or(self.options.executor)
            .or(self.pipeline.executor)
            .or(self.options.default_executor)
            .unwrap_or_default()
    }

    /// The `sluice exec-step` command executors start for this run.
    fn exec_step_command(&self) -> crate::executor::ExecStepCommand {
        crate::executor::ExecStepCommand::current(
            &self.options.home,
            self.options.compile_cache.clone(),
            self.options.config.clone(),
            self.options.remote.as_ref().map(|r| r.url().to_string()),
        )
    }

    /// The executor of `kind` for this run; `None` for `local` (in this
    /// process), `Err` when it is not configured.
    fn executor_for(
        &self,
        kind: ExecutorKind,
    ) -> Option<Result<Box<dyn crate::executor::Executor>, String>> {
        use crate::executor::{Executor, KubernetesExecutor, ProcessExecutor, RayExecutor};
        let boxed = |e: Box<dyn Executor>| Some(Ok(e));
        match kind {
            ExecutorKind::Local => None,
            ExecutorKind::Process => boxed(Box::new(ProcessExecutor {
                command: self.exec_step_command(),
            })),
            ExecutorKind::Ray => boxed(Box::new(RayExecutor {
                address: self
                    .options
                    .ray_address
                    .clone()
                    .unwrap_or_else(|| super::options::RAY_ADDRESS_DEFAULT.to_string()),
                command: self.exec_step_command(),
            })),
            ExecutorKind::Kubernetes => Some(
                KubernetesExecutor::new(
                    self.options.kubernetes.as_ref(),
                    self.options.remote.as_ref().map(|r| r.url()),
                )
                .map(|k| Box::new(k) as Box<dyn Executor>),
            ),
        }
    }

    /// Runs the attempt through the seam, on `executor`.
    fn execute(
        &self,
        executor: ExecutorKind,
        resolved: &Resolved,
        request: &crate::attempt::Request,
    ) -> crate::attempt::Outcome {
        // Compiled here in every case: a child finds the native code in the
        // shared compile cache instead of compiling once per attempt.
        let prepared = match self.prepare(resolved) {
            Ok(p) => p,
            Err(e) => return crate::attempt::Outcome::failed(crate::attempt::prepare_failure(e)),
        };
        let sandbox = match self.sandbox() {
            Ok(s) => s,
            Err(e) => return crate::attempt::Outcome::failed(Failure::engine(e)),
        };
        let outcome = match self.executor_for(executor) {
            None => crate::attempt::run(
                request,
                &crate::attempt::Env {
                    sandbox,
                    component: &prepared,
                    store: &self.store,
                    gpu: &|| self.gpu_backend(),
                    gpu_jobs: &self.gpu_jobs,
                    cancel: self.options.cancel.clone(),
                },
            ),
            Some(Ok(elsewhere)) => elsewhere.execute(
                &self.run_id.to_string(),
                request,
                &self.store,
                self.options.cancel.as_ref(),
            ),
            Some(Err(e)) => crate::attempt::Outcome::failed(Failure::engine(format!(
                "step `{}`: {e}",
                crate::quoting::escape_controls(&request.description.step, 64)
            ))),
        };
        // Which native code ran (the compile cache is authenticated, and
        // the record says what it served) and how long the guest slept in
        // virtual time.
        self.log(
            "attempt-sandbox",
            json!({
                "step": request.description.step,
                "attempt": request.attempt,
                "executor": executor,
                "compiled": outcome.compiled,
                "compiled_by": outcome.compiled_by,
                "slept_ns": outcome.slept_ns,
            }),
        );
        outcome
    }

    /// Files an executed attempt's outcome: the report, the cache entry of
    /// a success, or a failure (retried if attempts remain).
    fn file(
        &self,
        index: usize,
        attempt: u32,
        key: crate::digest::Digest,
        mut report: StepReport,
        outcome: crate::attempt::Outcome,
    ) -> scheduler::Outcome {
        let step = &self.pipeline.steps[index];
        // An attempt that could not start has no sandbox figures to add.
        if outcome.compiled.is_some() {
            report.gpu = self.gpu_report(step, attempt, &outcome.gpu_jobs);
            report.wall_ms += outcome.wall_ms;
            report.fuel_used = outcome.fuel_used;
            report.memory_peak_bytes = outcome.memory_peak_bytes;
            report.instantiate_us = outcome.instantiate_us;
            report.stdout = outcome.stdout;
            report.stderr = outcome.stderr;
            report.bytes_in = outcome.bytes_in;
            report.bytes_out = outcome.bytes_out;
            report.metrics = outcome.metrics;
        }
        if let Some(failure) = outcome.failure {
            return self.attempt_failed(index, attempt, report, failure);
        }
        report.status = StepStatus::Succeeded;
        report.error = None;
        report.outputs = outcome.outputs;
        report.series = outcome.series;
        report.tags = outcome.tags;
        if step.cache {
            let entry = Entry {
                key,
                step: step.name.clone(),
                run_id: self.run_id.to_string(),
                outputs: report.outputs.clone(),
                metrics: report.metrics.clone(),
                series: report.series.clone(),
                tags: report.tags.clone(),
                gpu_jobs: report
                    .gpu
                    .iter()
                    .flat_map(|g| g.jobs.iter().map(crate::gpu::JobReport::for_record))
                    .collect(),
            };
            // Another node may act on a shared entry at once: its outputs
            // are in the shared store before it is.
            let shared = match self.store.remote() {
                Some(_) => self.store.sync(),
                None => Ok(()),
            };
            if let Err(e) = shared.and_then(|()| self.cache.insert(&entry, &self.store)) {
                tracing::warn!(step = %step.name, error = %e, "cannot write cache entry");
            }
        }
        self.finish(index, report);
        scheduler::Outcome::Succeeded
    }

    /// Files a failed attempt: final if no retries remain, otherwise kept
    /// as the step's provisional report.
    fn attempt_failed(
        &self,
        index: usize,
        attempt: u32,
        mut report: StepReport,
        failure: Failure,
    ) -> scheduler::Outcome {
        let step = &self.pipeline.steps[index];
        report.status = StepStatus::Failed;
        report.error = Some(failure.clone());
        let error = failure;
        if attempt <= step.retries {
            self.log(
                "attempt-failed",
                json!({"step": step.name, "attempt": attempt, "error": error}),
            );
            self.observer.event(Event::StepRetrying {
                step: &step.name,
                attempt,
                error: &error,
            });
            self.reports.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(report);
        } else {
            self.finish(index, report);
        }
        scheduler::Outcome::Failed
    }
}
