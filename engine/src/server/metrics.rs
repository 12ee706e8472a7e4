//! Prometheus exposition for `GET /metrics`, through `prometheus-client`
//! (the Prometheus project's Rust client) in the text format 0.0.4.
//!
//! Invariant: metric names, labels and types are fixed when the process
//! starts (`Metrics::default` registers every family); a scrape only sets
//! the gauges from the service's current state and encodes.
//! Boundary: counts what the service reports to it (`step_finished`,
//! `run_finished`, ...) and reads the app's state at scrape time; it never
//! changes that state and knows nothing of HTTP.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::App;
use super::index::Status;
use crate::run::{StepReport, StepStatus};

/// Upper bounds of the step duration histogram, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0,
];

/// The step statuses `sluice_steps_total` counts, each shown from the start.
const STEP_STATUSES: [&str; 4] = ["succeeded", "cached", "failed", "skipped"];

/// One label, `status` or the like.
type Labels = Vec<(&'static str, String)>;

fn status(value: &str) -> Labels {
    vec![("status", value.to_string())]
}

/// A gauge with a fractional value.
type RatioGauge = Gauge<f64, AtomicU64>;

/// Counters kept by the service process, and the gauges a scrape sets.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Gauge>,
    submitted: Counter,
    runs_finished: Family<Labels, Counter>,
    steps: Family<Labels, Counter>,
    executed: Family<Labels, Counter>,
    cache_hits: Counter,
    durations: Histogram,
    queue_depth: Gauge,
    steps_running: Gauge,
    steps_waiting: Gauge,
    uploads: Gauge,
    store_bytes: Gauge,
    gpu_available: Gauge,
    gpu_memory_total: Family<Labels, Gauge>,
    gpu_memory_used: Family<Labels, Gauge>,
    gpu_utilization: Family<Labels, RatioGauge>,
    rate_limited: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            runs: Family::default(),
            submitted: Counter::default(),
            runs_finished: Family::default(),
            steps: Family::default(),
            executed: Family::default(),
            cache_hits: Counter::default(),
            durations: Histogram::new(BUCKETS),
            queue_depth: Gauge::default(),
            steps_running: Gauge::default(),
            steps_waiting: Gauge::default(),
            uploads: Gauge::default(),
            store_bytes: Gauge::default(),
            gpu_available: Gauge::default(),
            gpu_memory_total: Family::default(),
            gpu_memory_used: Family::default(),
            gpu_utilization: Family::default(),
            rate_limited: Counter::default(),
        };
        // Every status shows from the first scrape, at 0 until it happens.
        for s in Status::ALL.iter().filter(|s| s.is_terminal()) {
            m.runs_finished.get_or_create(&status(s.as_str())).inc_by(0);
        }
        for s in STEP_STATUSES {
            m.steps.get_or_create(&status(s)).inc_by(0);
        }
        for e in crate::spec::ExecutorKind::ALL {
            m.executed
                .get_or_create(&vec![("executor", e.as_str().to_string())])
                .inc_by(0);
        }
        // Help texts without the final period: the registry adds it.
        let r = &mut m.registry;
        r.register("sluice_runs", "Runs in the index by status", m.runs.clone());
        r.register(
            "sluice_runs_submitted",
            "Runs acknowledged by this process",
            m.submitted.clone(),
        );
        r.register(
            "sluice_runs_finished",
            "Runs this process finished, by status",
            m.runs_finished.clone(),
        );
        r.register("sluice_steps", "Steps finished, by status", m.steps.clone());
        r.register(
            "sluice_steps_executed",
            "Steps whose last attempt executed, by where it ran",
            m.executed.clone(),
        );
        r.register(
            "sluice_step_cache_hits",
            "Steps answered from the step cache",
            m.cache_hits.clone(),
        );
        r.register(
            "sluice_step_duration_seconds",
            "Wall time of executed steps",
            m.durations.clone(),
        );
        r.register(
            "sluice_run_queue_depth",
            "Runs acknowledged and waiting for a run slot",
            m.queue_depth.clone(),
        );
        r.register(
            "sluice_steps_running",
            "Attempts executing now",
            m.steps_running.clone(),
        );
        r.register(
            "sluice_steps_waiting",
            "Attempts waiting for a step slot",
            m.steps_waiting.clone(),
        );
        r.register(
            "sluice_uploads_in_progress",
            "Component uploads being read or compiled now",
            m.uploads.clone(),
        );
        r.register(
            "sluice_store_bytes",
            "Bytes in the content-addressed store",
            m.store_bytes.clone(),
        );
        r.register(
            "sluice_gpu_telemetry_available",
            "1 when NVML telemetry works on this host",
            m.gpu_available.clone(),
        );
        r.register(
            "sluice_gpu_memory_total_bytes",
            "Framebuffer size",
            m.gpu_memory_total.clone(),
        );
        r.register(
            "sluice_gpu_memory_used_bytes",
            "Framebuffer in use",
            m.gpu_memory_used.clone(),
        );
        r.register(
            "sluice_gpu_utilization_ratio",
            "Fraction of the last sample period a kernel ran",
            m.gpu_utilization.clone(),
        );
        r.register(
            "sluice_http_rate_limited",
            "Requests refused by the per-token rate limit",
            m.rate_limited.clone(),
        );
        m
    }
}

impl Metrics {
    /// Counts a run acknowledged.
    pub fn run_submitted(&self) {
        self.submitted.inc();
    }

    /// Counts a request refused by a rate limit.
    pub fn request_rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// Counts a finished step.
    pub fn step_finished(&self, report: &StepReport) {
        let word = match report.status {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Cached => "cached",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        };
        self.steps.get_or_create(&status(word)).inc();
        if report.cached {
            self.cache_hits.inc();
        }
        if let Some(e) = report.executor {
            self.executed
                .get_or_create(&vec![("executor", e.as_str().to_string())])
                .inc();
        }
        if report.attempts > 0 {
            self.durations.observe(report.wall_ms as f64 / 1000.0);
        }
    }

    /// Counts a finished run.
    pub fn run_finished(&self, s: Status) {
        self.runs_finished.get_or_create(&status(s.as_str())).inc();
    }
}

/// Bytes under `<home>/store`.
fn store_bytes(app: &App) -> u64 {
    fn walk(dir: &std::path::Path, depth: u32) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() && depth < 4 => walk(&e.path(), depth + 1),
                Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
                _ => 0,
            })
            .sum()
    }
    walk(&app.home.join("store"), 0)
}

/// A gauge's value from a count (saturating: a gauge holds an `i64`).
fn count(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Sets the gauges from the service's state and renders every metric.
pub fn render(app: &App) -> String {
    use std::sync::atomic::Ordering::SeqCst;
    let m = &app.metrics;
    let counts = app.index.counts().unwrap_or_default();
    for s in Status::ALL {
        let n = counts.get(s.as_str()).copied().unwrap_or(0);
        m.runs.get_or_create(&status(s.as_str())).set(count(n));
    }
    m.queue_depth.set(count(app.queued.load(SeqCst)));
    m.steps_running.set(count(app.step_slots.in_use()));
    m.steps_waiting.set(count(app.step_slots.waiting()));
    m.uploads.set(count(
        app.config.server.max_concurrent_uploads - app.uploads.available_permits(),
    ));
    m.store_bytes.set(count(store_bytes(app)));
    gpu_gauges(m);
    let mut out = String::new();
    // Writing into a `String` cannot fail.
    let _ = prometheus_text::encode(&mut out, &m.registry);
    out
}

/// GPU gauges from NVML (cheap calls only); just the availability gauge
/// when telemetry is unavailable.
fn gpu_gauges(m: &Metrics) {
    let nvml = crate::gpu::telemetry::nvml();
    m.gpu_available.set(i64::from(nvml.is_ok()));
    let Ok(nvml) = nvml else { return };
    for d in &crate::gpu::telemetry::devices() {
        let labels: Labels = vec![("gpu", d.uuid.clone()), ("name", d.name.clone())];
        m.gpu_memory_total
            .get_or_create(&labels)
            .set(count(d.memory_total_bytes));
        let used = d.memory_total_bytes.saturating_sub(d.memory_free_bytes);
        m.gpu_memory_used.get_or_create(&labels).set(count(used));
        if let Ok(u) = nvml
            .device_by_index(d.index)
            .and_then(|dev| dev.utilization_rates())
        {
            m.gpu_utilization
                .get_or_create(&labels)
                .set(f64::from(u.gpu) / 100.0);
        }
    }
}
