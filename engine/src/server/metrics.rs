//! Prometheus text exposition for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::App;
use super::index::Status;
use crate::run::{StepReport, StepStatus};

/// Upper bounds of the step duration histogram, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters kept by the service process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Runs acknowledged.
    pub submitted: AtomicU64,
    /// Requests refused by the rate limit.
    pub rate_limited: AtomicU64,
    cache_hits: AtomicU64,
    steps: Mutex<BTreeMap<&'static str, u64>>,
    runs_finished: Mutex<BTreeMap<&'static str, u64>>,
    durations: Mutex<Histogram>,
}

impl Metrics {
    /// Counts a finished step.
    pub fn step_finished(&self, report: &StepReport) {
        let status = match report.status {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Cached => "cached",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        };
        *self
            .steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status)
            .or_default() += 1;
        if report.cached {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        if report.attempts > 0 {
            let secs = report.wall_ms as f64 / 1000.0;
            let mut h = self.durations.lock().unwrap_or_else(|p| p.into_inner());
            for (i, le) in BUCKETS.iter().enumerate() {
                if secs <= *le {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// Counts a finished run.
    pub fn run_finished(&self, status: Status) {
        *self
            .runs_finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status.as_str())
            .or_default() += 1;
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
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

/// Renders every metric.
pub fn render(app: &App) -> String {
    use std::sync::atomic::Ordering::SeqCst;
    let m = &app.metrics;
    let mut out = String::new();
    header(
        &mut out,
        "sluice_runs",
        "gauge",
        "Runs in the index by status.",
    );
    let counts = app.index.counts().unwrap_or_default();
    for status in Status::ALL {
        let n = counts.get(status.as_str()).copied().unwrap_or(0);
        let _ = writeln!(out, "sluice_runs{{status=\"{}\"}} {n}", status.as_str());
    }
    header(
        &mut out,
        "sluice_runs_submitted_total",
        "counter",
        "Runs acknowledged by this process.",
    );
    let _ = writeln!(
        out,
        "sluice_runs_submitted_total {}",
        m.submitted.load(SeqCst)
    );
    header(
        &mut out,
        "sluice_runs_finished_total",
        "counter",
        "Runs this process finished, by status.",
    );
    let finished = m.runs_finished.lock().unwrap_or_else(|p| p.into_inner());
    for status in Status::ALL.iter().filter(|s| s.is_terminal()) {
        let n = finished.get(status.as_str()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "sluice_runs_finished_total{{status=\"{}\"}} {n}",
            status.as_str()
        );
    }
    drop(finished);
    header(
        &mut out,
        "sluice_steps_total",
        "counter",
        "Steps finished, by status.",
    );
    let steps = m.steps.lock().unwrap_or_else(|p| p.into_inner());
    for status in ["succeeded", "cached", "failed", "skipped"] {
        let n = steps.get(status).copied().unwrap_or(0);
        let _ = writeln!(out, "sluice_steps_total{{status=\"{status}\"}} {n}");
    }
    drop(steps);
    header(
        &mut out,
        "sluice_step_cache_hits_total",
        "counter",
        "Steps answered from the step cache.",
    );
    let _ = writeln!(
        out,
        "sluice_step_cache_hits_total {}",
        m.cache_hits.load(SeqCst)
    );
    header(
        &mut out,
        "sluice_step_duration_seconds",
        "histogram",
        "Wall time of executed steps.",
    );
    let h = m.durations.lock().unwrap_or_else(|p| p.into_inner());
    for (i, le) in BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "sluice_step_duration_seconds_bucket{{le=\"{le}\"}} {}",
            h.counts[i]
        );
    }
    let _ = writeln!(
        out,
        "sluice_step_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(out, "sluice_step_duration_seconds_sum {}", h.sum);
    let _ = writeln!(out, "sluice_step_duration_seconds_count {}", h.count);
    drop(h);
    header(
        &mut out,
        "sluice_run_queue_depth",
        "gauge",
        "Runs acknowledged and waiting for a run slot.",
    );
    let _ = writeln!(out, "sluice_run_queue_depth {}", app.queued.load(SeqCst));
    header(
        &mut out,
        "sluice_steps_running",
        "gauge",
        "Attempts executing now.",
    );
    let _ = writeln!(out, "sluice_steps_running {}", app.step_slots.in_use());
    header(
        &mut out,
        "sluice_steps_waiting",
        "gauge",
        "Attempts waiting for a step slot.",
    );
    let _ = writeln!(out, "sluice_steps_waiting {}", app.step_slots.waiting());
    header(
        &mut out,
        "sluice_uploads_in_progress",
        "gauge",
        "Component uploads being read or compiled now.",
    );
    let _ = writeln!(
        out,
        "sluice_uploads_in_progress {}",
        app.config.server.max_concurrent_uploads - app.uploads.available_permits()
    );
    header(
        &mut out,
        "sluice_store_bytes",
        "gauge",
        "Bytes in the content-addressed store.",
    );
    let _ = writeln!(out, "sluice_store_bytes {}", store_bytes(app));
    gpu_gauges(&mut out);
    header(
        &mut out,
        "sluice_http_rate_limited_total",
        "counter",
        "Requests refused by the per-token rate limit.",
    );
    let _ = writeln!(
        out,
        "sluice_http_rate_limited_total {}",
        m.rate_limited.load(SeqCst)
    );
    out
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// GPU gauges from NVML (cheap calls only); just the availability gauge
/// when telemetry is unavailable.
fn gpu_gauges(out: &mut String) {
    let nvml = crate::gpu::telemetry::nvml();
    header(
        out,
        "sluice_gpu_telemetry_available",
        "gauge",
        "1 when NVML telemetry works on this host.",
    );
    let _ = writeln!(
        out,
        "sluice_gpu_telemetry_available {}",
        u8::from(nvml.is_ok())
    );
    let Ok(nvml) = nvml else { return };
    let devices = crate::gpu::telemetry::devices();
    if devices.is_empty() {
        return;
    }
    let series = |d: &crate::gpu::telemetry::DeviceInfo| {
        format!("{{gpu=\"{}\",name=\"{}\"}}", label(&d.uuid), label(&d.name))
    };
    header(
        out,
        "sluice_gpu_memory_total_bytes",
        "gauge",
        "Framebuffer size.",
    );
    for d in &devices {
        let _ = writeln!(
            out,
            "sluice_gpu_memory_total_bytes{} {}",
            series(d),
            d.memory_total_bytes
        );
    }
    header(
        out,
        "sluice_gpu_memory_used_bytes",
        "gauge",
        "Framebuffer in use.",
    );
    for d in &devices {
        let used = d.memory_total_bytes.saturating_sub(d.memory_free_bytes);
        let _ = writeln!(out, "sluice_gpu_memory_used_bytes{} {used}", series(d));
    }
    header(
        out,
        "sluice_gpu_utilization_ratio",
        "gauge",
        "Fraction of the last sample period a kernel ran.",
    );
    for d in &devices {
        if let Ok(u) = nvml
            .device_by_index(d.index)
            .and_then(|dev| dev.utilization_rates())
        {
            let _ = writeln!(
                out,
                "sluice_gpu_utilization_ratio{} {}",
                series(d),
                f64::from(u.gpu) / 100.0
            );
        }
    }
}
