//! Runs in the service: submission, the run queue, execution on blocking
//! threads, live state and events for the stream, restart recovery.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::index::{DagStep, NewRun, Request, RunError, Status};
use super::{ApiError, App, Code};
use crate::run::{self, Event, Observer, RunId, RunSummary, StepReport, StepStatus};
use crate::spec::{ComponentSource, Pipeline};

/// Most events kept per live run before `log` and `metric` events are
/// dropped (they are the bulk: a step may report 100 000 metrics). `run`,
/// `step` and `end` events are always kept — at most two per attempt plus
/// two — so a stream always shows every state change; the first drop adds
/// one `dropped` event saying so (the run's summary keeps every metric).
const EVENTS_MAX: usize = 20_000;
/// Log lines per step and stream sent as events.
const LOG_LINES_MAX: usize = 200;

/// One server-sent event.
#[derive(Clone, Debug)]
pub struct LiveEvent {
    /// Sequential id (for `Last-Event-ID`).
    pub id: u64,
    /// `run`, `step`, `log`, `metric`, `dropped` or `end`.
    pub kind: &'static str,
    /// JSON data.
    pub data: Value,
}

/// A step's state while its run is live.
#[derive(Clone, Debug)]
pub struct StepLive {
    /// `pending`, `running` or a final status.
    pub status: &'static str,
    /// Current or last attempt.
    pub attempt: u32,
    /// The final report.
    pub report: Option<StepReport>,
}

#[derive(Debug, Default)]
struct State {
    events: Vec<LiveEvent>,
    /// Whether `log`/`metric` events were dropped past [`EVENTS_MAX`].
    dropped: bool,
    steps: BTreeMap<String, StepLive>,
    end: Option<Status>,
}

/// A run the service is executing (or has queued).
#[derive(Debug)]
pub struct LiveRun {
    /// Run id.
    pub id: String,
    /// Owner.
    pub tenant: String,
    /// Set to cancel.
    pub cancel: Arc<AtomicBool>,
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

impl LiveRun {
    fn new(id: &str, tenant: &str, dag: &[DagStep]) -> LiveRun {
        let steps = dag
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    StepLive {
                        status: "pending",
                        attempt: 0,
                        report: None,
                    },
                )
            })
            .collect();
        LiveRun {
            id: id.to_string(),
            tenant: tenant.to_string(),
            cancel: Arc::new(AtomicBool::new(false)),
            state: Mutex::new(State {
                steps,
                ..State::default()
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, kind: &'static str, data: Value) {
        let mut s = self.state();
        if s.events.len() >= EVENTS_MAX && matches!(kind, "log" | "metric") {
            if !s.dropped {
                s.dropped = true;
                let id = s.events.len() as u64;
                s.events.push(LiveEvent {
                    id,
                    kind: "dropped",
                    data: json!({"message": format!(
                        "this run has over {EVENTS_MAX} events: further log and metric events are not streamed (the run's summary has every metric)"
                    )}),
                });
                drop(s);
                self.changed.notify_waiters();
            }
            return;
        }
        let id = s.events.len() as u64;
        s.events.push(LiveEvent { id, kind, data });
        drop(s);
        self.changed.notify_waiters();
    }

    /// Events from index `from` on, and whether the run has ended.
    pub fn events_from(&self, from: usize) -> (Vec<LiveEvent>, bool) {
        let s = self.state();
        let events = s.events.get(from..).map(<[_]>::to_vec).unwrap_or_default();
        (events, s.end.is_some())
    }

    /// Waits for the next change (register before checking, then await).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// The steps' live states.
    pub fn steps(&self) -> BTreeMap<String, StepLive> {
        self.state().steps.clone()
    }

    fn set_step(&self, name: &str, status: &'static str, attempt: u32, report: Option<StepReport>) {
        let mut s = self.state();
        if let Some(step) = s.steps.get_mut(name) {
            step.status = status;
            step.attempt = attempt;
            if report.is_some() {
                step.report = report;
            }
        }
    }

    fn end(&self, status: Status) {
        self.push("end", json!({"status": status}));
        self.state().end = Some(status);
        self.changed.notify_waiters();
    }
}

/// The status text of a final step report.
pub fn step_status(report: &StepReport) -> &'static str {
    match report.status {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Cached => "cached",
        StepStatus::Failed
            if report.error.as_ref().map(|e| e.message.as_str())
                == Some(crate::sandbox::CANCELLED_MESSAGE) =>
        {
            "cancelled"
        }
        StepStatus::Failed => "failed",
        StepStatus::Skipped if report.reason.as_deref() == Some(run::CANCELLED_REASON) => {
            "cancelled"
        }
        StepStatus::Skipped => "skipped",
    }
}

/// Feeds engine events into a [`LiveRun`], the metrics and the grants.
struct LiveObserver {
    app: Arc<App>,
    live: Arc<LiveRun>,
}

impl Observer for LiveObserver {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::RunStarted { .. } => {
                self.live.push("run", json!({"status": "running"}));
            }
            Event::StepStarted { step, attempt } => {
                self.live.set_step(step, "running", attempt, None);
                self.live.push(
                    "step",
                    json!({"name": step, "status": "running", "attempt": attempt}),
                );
            }
            Event::StepRetrying {
                step,
                attempt,
                error,
            } => {
                self.live.push(
                    "log",
                    json!({"step": step, "stream": "engine", "line": format!("attempt {attempt} failed ({:?}): {}; retrying", error.class, error.message)}),
                );
            }
            Event::StepFinished(report) => self.step_finished(report),
        }
    }
}

impl LiveObserver {
    fn step_finished(&self, report: &StepReport) {
        let status = step_status(report);
        self.app.metrics.step_finished(report);
        let mut digests: Vec<String> = report
            .outputs
            .values()
            .map(|o| o.digest.to_string())
            .collect();
        digests.extend(
            report
                .stdout
                .iter()
                .chain(&report.stderr)
                .map(ToString::to_string),
        );
        if let Err(e) = self
            .app
            .index
            .grant(&self.live.tenant, "artifact", &digests)
        {
            tracing::error!(error = %e, "cannot record artifact grants");
        }
        // Logs: captured per attempt, sent as lines when the step ends.
        let store = &self.app.store;
        for (stream, digest) in [("stdout", &report.stdout), ("stderr", &report.stderr)] {
            let Some(d) = digest else { continue };
            let Ok(bytes) = store.read_bytes(d) else {
                continue;
            };
            let text = crate::quoting::escape_controls(&String::from_utf8_lossy(&bytes), 64 * 1024);
            for line in text.lines().take(LOG_LINES_MAX) {
                self.live.push(
                    "log",
                    json!({"step": report.name, "stream": stream, "line": line}),
                );
            }
        }
        for (name, value) in &report.metrics {
            self.live.push(
                "metric",
                json!({"step": report.name, "name": name, "value": value}),
            );
        }
        self.live
            .set_step(&report.name, status, report.attempts, Some(report.clone()));
        self.live.push(
            "step",
            json!({"name": report.name, "status": status, "attempt": report.attempts, "report": report}),
        );
    }
}

/// Reads and validates the pipeline of `request`. Every request, the
/// operator's schedules and hooks included, goes through the server's one
/// [`PathPolicy`](crate::policy::PathPolicy): the spec, its sources and its
/// components must lie inside `allow_paths` and never in the engine home or
/// the config file. A refused path answers 403 whether or not it exists
/// (the policy is consulted before the path is stat'ed).
pub fn load_pipeline(app: &App, request: &Request) -> Result<Pipeline, ApiError> {
    let overrides = |params: &BTreeMap<String, String>| -> Vec<(String, String)> {
        params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let refused = |errors: Vec<crate::spec::SpecError>| {
        let denied = errors.iter().any(|e| e.denied);
        let shown: Vec<String> = errors
            .iter()
            // A refusal is reported alone: other errors about the same
            // spec could describe the refused file.
            .filter(|e| e.denied || !denied)
            .take(20)
            .map(|e| {
                let mut e = e.clone();
                e.file = PathBuf::from(app.shown(&e.file));
                // Messages name resolved paths: show them relative to the root.
                let root = format!("{}/", app.root.display());
                e.message = e.message.replace(&root, "");
                e.to_string()
            })
            .collect();
        let code = if denied {
            Code::PathNotAllowed
        } else {
            Code::Invalid
        };
        ApiError::new(code, shown.join("\n"))
    };
    let pipeline = match request {
        Request::Path { pipeline, params } => {
            let path = app.root.join(pipeline);
            if let Err(e) = app.policy.check(&path) {
                return Err(ApiError::new(
                    Code::PathNotAllowed,
                    format!("pipeline {pipeline:?} {e}"),
                ));
            }
            crate::spec::load_with(&path, &overrides(params), &app.policy).map_err(refused)?
        }
        Request::Inline { spec, params } => {
            // An inline spec's relative paths resolve against the root.
            crate::spec::parse_with(
                &app.root.join("inline.toml"),
                spec,
                &overrides(params),
                &app.policy,
            )
            .map_err(refused)?
        }
    };
    Ok(pipeline)
}

/// Components a submitted pipeline references by digest must belong to the
/// tenant (uploaded by it).
fn check_components(app: &App, pipeline: &Pipeline, tenant: &str) -> Result<(), ApiError> {
    for step in &pipeline.steps {
        if let ComponentSource::Stored(d) = &step.component {
            let ok = app
                .index
                .granted(tenant, &d.to_string(), Some("component"))
                .map_err(ApiError::internal)?;
            if !ok {
                return Err(ApiError::new(
                    Code::Invalid,
                    format!(
                        "step `{}`: no component {d} (upload it with PUT /v1/components)",
                        step.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn dag_of(pipeline: &Pipeline) -> Vec<DagStep> {
    pipeline
        .steps
        .iter()
        .map(|s| DagStep {
            name: s.name.clone(),
            deps: s
                .deps
                .iter()
                .map(|&d| pipeline.steps[d].name.clone())
                .collect(),
        })
        .collect()
}

/// Validates and acknowledges a run: durable in the index when this
/// returns, then queued.
pub fn submit(
    app: &Arc<App>,
    tenant: &str,
    request: Request,
    trigger: &str,
) -> Result<String, ApiError> {
    if app.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            Code::Unavailable,
            "the server is shutting down",
        ));
    }
    let pipeline = load_pipeline(app, &request)?;
    check_components(app, &pipeline, tenant)?;
    let id = RunId::generate().to_string();
    let dag = dag_of(&pipeline);
    app.index
        .insert(
            &NewRun {
                id: &id,
                tenant,
                pipeline: &pipeline.name,
                trigger,
                params: &pipeline.params,
                dag: &dag,
                request: &request,
            },
            &crate::record::rfc3339_now(),
        )
        .map_err(|e| ApiError::internal(format!("cannot record the run in the run index: {e}")))?;
    app.metrics.run_submitted();
    enqueue(app, &id, tenant, &dag, request, false);
    Ok(id)
}

/// Queues run `id` for execution (or resumption).
fn enqueue(
    app: &Arc<App>,
    id: &str,
    tenant: &str,
    dag: &[DagStep],
    request: Request,
    resume: bool,
) {
    let live = Arc::new(LiveRun::new(id, tenant, dag));
    app.live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_string(), live.clone());
    app.active.fetch_add(1, Ordering::SeqCst);
    app.queued.fetch_add(1, Ordering::SeqCst);
    let app = app.clone();
    tokio::spawn(async move {
        let permit = app.run_slots.clone().acquire_owned().await;
        app.queued.fetch_sub(1, Ordering::SeqCst);
        let app2 = app.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            execute(&app2, &live, &request, resume);
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "a run thread panicked");
        }
        if app.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            app.idle.notify_waiters();
        }
    });
}

fn execute(app: &Arc<App>, live: &Arc<LiveRun>, request: &Request, resume: bool) {
    let id = live.id.clone();
    let now = crate::record::rfc3339_now;
    let fail = |status: Status, code: &str, message: String| {
        let error = RunError {
            code: code.to_string(),
            message,
        };
        if let Err(e) = app.index.finished(&id, status, &now(), None, Some(&error)) {
            tracing::error!(error = %e, run_id = %id, "cannot update the index");
        }
        // Off the live map before `end` is sent: whoever reads the end
        // then finds the run ended everywhere.
        app.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        live.end(status);
    };
    if live.cancel.load(Ordering::SeqCst) {
        return fail(
            Status::Cancelled,
            "cancelled",
            "cancelled before it started".to_string(),
        );
    }
    if let Err(e) = app.index.started(&id, &now()) {
        tracing::error!(error = %e, run_id = %id, "cannot update the index");
    }
    let run_id: RunId = match id.parse() {
        Ok(r) => r,
        Err(e) => return fail(Status::Failed, "quarantined", format!("{e}")),
    };
    let options = run::Options {
        jobs: app
            .config
            .server
            .jobs_per_run
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        compile_cache: app.compile_cache.clone(),
        run_id: Some(run_id.clone()),
        cancel: Some(live.cancel.clone()),
        step_slots: Some(app.step_slots.clone()),
        gpu: Some(app.gpu.clone()),
        default_executor: app.config.executor,
        remote: app.store.remote().cloned(),
        ray_address: std::env::var("RAY_ADDRESS").ok(),
        kubernetes: app.config.kubernetes.clone(),
        config: app.config.path.clone(),
        ..run::Options::new(app.home.clone())
    };
    let observer = LiveObserver {
        app: app.clone(),
        live: live.clone(),
    };
    let result: Result<RunSummary, String> = if resume {
        let loader = |_: &std::path::Path, _: &[(String, String)]| {
            load_pipeline(app, request).map_err(|e| {
                vec![crate::spec::SpecError {
                    file: PathBuf::from("request"),
                    line: 1,
                    column: 1,
                    message: e.message,
                    denied: e.code == Code::PathNotAllowed,
                }]
            })
        };
        match run::resume_with(&run_id, &options, &observer, &loader) {
            Err(run::ResumeError::Finished(_)) => {
                run::load_summary(&app.home, &run_id).map_err(|e| e.to_string())
            }
            other => other.map_err(|e| format!("resuming after a restart: {e}")),
        }
    } else {
        match load_pipeline(app, request) {
            Ok(pipeline) => run::execute(&pipeline, &options, &observer).map_err(|e| e.to_string()),
            Err(e) => Err(e.message),
        }
    };
    match result {
        Ok(summary) => finish(app, live, &summary),
        Err(message) => fail(Status::Failed, "run_error", message),
    }
}

/// Files a finished run: grants, index row, end event.
fn finish(app: &App, live: &LiveRun, summary: &RunSummary) {
    let cancelled = summary.steps.iter().any(|s| step_status(s) == "cancelled");
    let status = if cancelled {
        Status::Cancelled
    } else if summary.status == run::RunStatus::Succeeded {
        Status::Succeeded
    } else {
        Status::Failed
    };
    let error = match status {
        Status::Cancelled => Some(RunError {
            code: "cancelled".into(),
            message: if app.shutting_down.load(Ordering::SeqCst) {
                "the server shut down; steps not yet started were skipped".into()
            } else {
                "cancelled; steps not yet started were skipped".into()
            },
        }),
        Status::Failed => summary.steps.iter().find_map(|s| {
            s.error.as_ref().map(|f| RunError {
                code: "step_failed".into(),
                message: format!("step `{}` failed: {}", s.name, f.message),
            })
        }),
        _ => None,
    };
    let mut digests = vec![summary.spec_digest.to_string()];
    for s in &summary.steps {
        digests.extend(s.outputs.values().map(|o| o.digest.to_string()));
        digests.extend(s.stdout.iter().chain(&s.stderr).map(ToString::to_string));
    }
    if let Err(e) = app.index.grant(&live.tenant, "artifact", &digests) {
        tracing::error!(error = %e, "cannot record artifact grants");
    }
    app.metrics.run_finished(status);
    if let Err(e) = app.index.finished(
        &live.id,
        status,
        &summary.finished_at,
        Some(summary.wall_ms),
        error.as_ref(),
    ) {
        tracing::error!(error = %e, run_id = %live.id, "cannot update the index");
    }
    // Off the live map before `end` is sent: whoever reads the end
    // then finds the run ended everywhere.
    app.live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&live.id);
    live.end(status);
}

/// Restart recovery: every run the index has as queued or running is
/// resumed (it has a record), started (it has none) or, if its entry is
/// corrupt, quarantined with the reason. Runs whose summary exists were
/// finished before the crash and are filed as such.
pub fn recover(app: &Arc<App>) {
    let rows = match app.index.unfinished() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the run index");
            return;
        }
    };
    for row in rows {
        let quarantine = |reason: String| {
            eprintln!("sluice: run {} quarantined: {reason}", row.id);
            let error = RunError {
                code: "quarantined".into(),
                message: format!("corrupt run entry: {reason}"),
            };
            if let Err(e) = app.index.finished(
                &row.id,
                Status::Failed,
                &crate::record::rfc3339_now(),
                None,
                Some(&error),
            ) {
                tracing::error!(error = %e, "cannot update the index");
            }
        };
        if let Some(reason) = &row.corrupt {
            quarantine(reason.clone());
            continue;
        }
        let Some(request) = row.request.clone() else {
            quarantine("no request".into());
            continue;
        };
        let run_dir = app.home.join("runs").join(&row.id);
        let resume = run_dir.join("record.jsonl").is_file();
        eprintln!(
            "sluice: run {} was {} when the server stopped: {}",
            row.id,
            row.status.as_str(),
            if resume { "resuming" } else { "starting" }
        );
        enqueue(app, &row.id, &row.tenant, &row.dag, request, resume);
    }
}

/// Cancels every live run (shutdown).
pub fn cancel_all(app: &App) {
    for live in app.live.lock().unwrap_or_else(|p| p.into_inner()).values() {
        live.cancel.store(true, Ordering::SeqCst);
    }
}

/// Waits until no run is queued or executing.
pub async fn wait_idle(app: &App) {
    loop {
        let idle = app.idle.notified();
        if app.active.load(Ordering::SeqCst) == 0 {
            return;
        }
        idle.await;
    }
}

/// The live run `id`, if it is executing or queued.
pub fn get(app: &App, id: &str) -> Option<Arc<LiveRun>> {
    app.live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .cloned()
}

/// The events a finished run's stream replays: each step's final state and
/// metrics, then `end`.
pub fn replayed_events(summary: &RunSummary, status: Status) -> Vec<LiveEvent> {
    let mut events = Vec::new();
    let mut push = |kind: &'static str, data: Value| {
        let id = events.len() as u64;
        events.push(LiveEvent { id, kind, data });
    };
    // The same bound as a live run's backlog: a request for a finished
    // run's stream must not build 100 000 events.
    let mut metrics_sent = 0;
    let mut dropped = false;
    for s in &summary.steps {
        for (name, value) in &s.metrics {
            if metrics_sent == EVENTS_MAX {
                if !dropped {
                    dropped = true;
                    push(
                        "dropped",
                        json!({"message": format!(
                            "this run has over {EVENTS_MAX} metric events: the rest are not streamed (the run's summary has every metric)"
                        )}),
                    );
                }
                break;
            }
            metrics_sent += 1;
            push(
                "metric",
                json!({"step": s.name, "name": name, "value": value}),
            );
        }
        push(
            "step",
            json!({"name": s.name, "status": step_status(s), "attempt": s.attempts, "report": s}),
        );
    }
    push("end", json!({"status": status}));
    events
}

#[cfg(test)]
mod backlog_tests {
    use super::*;

    #[test]
    fn metric_floods_are_bounded_and_state_changes_kept() {
        let live = LiveRun::new("r", "t", &[]);
        live.push("run", json!({"status": "running"}));
        for i in 0..EVENTS_MAX + 5_000 {
            live.push(
                "metric",
                json!({"step": "s", "name": format!("m{i}"), "value": 1}),
            );
        }
        live.push("step", json!({"name": "s", "status": "succeeded"}));
        live.end(Status::Succeeded);
        let (events, ended) = live.events_from(0);
        assert!(ended);
        // The backlog stops at the cap, plus the notice and the state changes.
        assert_eq!(events.len(), EVENTS_MAX + 3);
        let kinds: Vec<&str> = events[EVENTS_MAX - 1..].iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["metric", "dropped", "step", "end"]);
        assert_eq!(
            events.iter().filter(|e| e.kind == "dropped").count(),
            1,
            "one notice"
        );
        // Ids stay dense, so `Last-Event-ID` resumes exactly.
        assert!(events.iter().enumerate().all(|(i, e)| e.id == i as u64));
    }
}
