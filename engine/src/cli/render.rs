//! Human-readable output: the resource table, sweep and runs tables, the
//! replay and verify reports, spec errors.
//!
//! Invariant: pure layout; every function writes to the writer it is given
//! and returns its IO error (a closed pipe included) instead of panicking.
//! Boundary: knows the shapes of the engine's reports, never flags, files
//! or the engine's behaviour; JSON output is not rendered here.

use std::io::{self, Write};
use std::path::Path;

use comfy_table::CellAlignment::{self, Left, Right};
use comfy_table::Table;

use crate::digest::Digest;
use crate::run::{self, RunId, RunStatus, RunSummary, StepStatus};
use crate::spec;

/// Spaces between two table columns.
const COLUMN_GAP: u16 = 2;

/// A borderless table with these column headers and alignments: columns
/// [`COLUMN_GAP`] spaces apart, each as wide as its widest cell (never
/// the terminal's width, so a pipe gets the same text).
fn table<H: ToString>(columns: &[(H, CellAlignment)]) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(columns.iter().map(|(h, _)| h.to_string()));
    for (column, (_, align)) in t.column_iter_mut().zip(columns) {
        column
            .set_padding((0, COLUMN_GAP))
            .set_cell_alignment(*align);
    }
    t
}

/// `t` line by line, each after `indent`, trailing spaces trimmed.
fn write_table(out: &mut dyn Write, t: &Table, indent: &str) -> io::Result<()> {
    for line in t.lines() {
        writeln!(out, "{indent}{}", line.trim_end())?;
    }
    Ok(())
}

/// `PATH: pipeline `NAME` is valid (N steps)`.
pub(super) fn valid(out: &mut dyn Write, path: &Path, p: &spec::Pipeline) -> io::Result<()> {
    writeln!(
        out,
        "{}: pipeline `{}` is valid ({} steps)",
        path.display(),
        p.name,
        p.steps.len()
    )
}

/// Each spec error on its own line, then the count.
pub(super) fn spec_errors(out: &mut dyn Write, errors: &[spec::SpecError]) -> io::Result<()> {
    for e in errors {
        writeln!(out, "error: {e}")?;
    }
    writeln!(
        out,
        "error: the spec has {} problem{}; nothing was run",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    )
}

/// A verify report: `intact (...)` or `TAMPERED: ...` naming the line.
pub(super) fn verify(
    out: &mut dyn Write,
    id: &RunId,
    report: &crate::verify::VerifyReport,
) -> io::Result<()> {
    if let Some(reason) = report.reason {
        let at = report
            .line
            .map_or(String::new(), |l| format!("record line {l}: "));
        writeln!(
            out,
            "run {id}: TAMPERED: {at}{}: {}",
            reason.as_str(),
            report.detail.as_deref().unwrap_or("")
        )
    } else {
        writeln!(
            out,
            "run {id}: intact ({} record lines, signed by {}, log index {} in a signed tree of {} leaves, consistent with the log's signed head of {})",
            report.lines,
            report.keyid.as_deref().unwrap_or("?"),
            report.log_index.unwrap_or(0),
            report.tree_size.unwrap_or(0),
            report.log_size.unwrap_or(0)
        )
    }
}

/// The runs table: one row per run as `sluice runs --json` lists it.
pub(super) fn runs(out: &mut dyn Write, rows: &[serde_json::Value]) -> io::Result<()> {
    let mut t = table(&[
        ("RUN", Left),
        ("PIPELINE", Left),
        ("STATUS", Left),
        ("STARTED", Left),
        ("WALL", Right),
    ]);
    for r in rows {
        t.add_row([
            r["run_id"].as_str().unwrap_or("").to_string(),
            r["pipeline"].as_str().unwrap_or("?").to_string(),
            r["status"].as_str().unwrap_or("?").to_string(),
            r["started_at"].as_str().unwrap_or("-").to_string(),
            r["wall_ms"]
                .as_u64()
                .map_or("-".to_string(), |ms| format!("{ms} ms")),
        ]);
    }
    write_table(out, &t, "")
}

/// The sweep's combinations side by side, best first by `sort`.
pub(super) fn sweep(
    out: &mut dyn Write,
    summary: &RunSummary,
    sort: Option<&str>,
) -> io::Result<()> {
    if summary.sweep.is_empty() {
        return Ok(());
    }
    let mut rows: Vec<&run::SweepRow> = summary.sweep.iter().collect();
    let metric_of = |r: &run::SweepRow, key: &str| -> Option<f64> {
        r.metrics.get(key).copied().or_else(|| {
            r.metrics
                .iter()
                .find(|(k, _)| k.rsplit('.').next() == Some(key))
                .map(|(_, v)| *v)
        })
    };
    if let Some(key) = sort {
        rows.sort_by(|a, b| {
            let (x, y) = (metric_of(a, key), metric_of(b, key));
            y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    let params: Vec<&String> = rows[0].params.keys().collect();
    let mut metrics: Vec<&String> = rows.iter().flat_map(|r| r.metrics.keys()).collect();
    metrics.sort();
    metrics.dedup();
    writeln!(
        out,
        "sweep: {} combinations{}",
        rows.len(),
        sort.map_or(String::new(), |k| format!(
            ", sorted by {k} (highest first)"
        ))
    )?;
    let mut header = vec![("#".to_string(), Right)];
    header.extend(params.iter().map(|p| (p.to_string(), Right)));
    header.extend(metrics.iter().map(|m| (m.to_string(), Right)));
    let mut t = table(&header);
    for r in &rows {
        let mut cells = vec![format!("[{}]", r.index)];
        cells.extend(params.iter().map(|p| r.params[*p].clone()));
        cells.extend(metrics.iter().map(|m| {
            r.metrics
                .get(*m)
                .map_or("-".to_string(), |v| format_metric(*v))
        }));
        t.add_row(cells);
    }
    write_table(out, &t, "  ")
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Cached => "cached",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn fuel(n: u64) -> String {
    match n {
        0 => "-".to_string(),
        n if n >= 1_000_000_000 => format!("{:.2} G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// A replay's verdict, per step and for the run.
pub(super) fn replay(out: &mut dyn Write, r: &crate::replay::ReplayReport) -> io::Result<()> {
    use crate::replay::Verdict;
    let word = |v: Verdict| match v {
        Verdict::Identical => "identical",
        Verdict::Diverged => "DIVERGED",
        Verdict::EnvironmentDrift => "environment-drift",
    };
    writeln!(
        out,
        "replay {} of run {}: {} ({} ms)",
        r.run_id,
        r.replay_of,
        word(r.verdict),
        r.wall_ms
    )?;
    for e in &r.environment {
        writeln!(out, "  environment: {e}")?;
    }
    if r.gpu_mode == "rerun" {
        writeln!(
            out,
            "  gpu jobs re-executed ({} worker processes started)",
            r.workers_started
        )?;
    } else {
        writeln!(
            out,
            "  gpu jobs answered from the record (no worker started)"
        )?;
    }
    for s in &r.steps {
        let outputs: Vec<String> = s
            .found
            .iter()
            .map(|(k, d)| format!("{k}={}", &d.hex()[..12]))
            .collect();
        writeln!(
            out,
            "  {:<16} {:<10} {}",
            s.name,
            word(s.verdict),
            outputs.join(" ")
        )?;
        if let Some(d) = &s.drift {
            writeln!(out, "    drift: {d}")?;
        }
        if let Some(e) = &s.error {
            writeln!(out, "    error: {e}")?;
        }
        for g in &s.gpu {
            match &g.comparison {
                Some(c) => writeln!(
                    out,
                    "    gpu job {} {}: {} comparison {}: {}",
                    g.job,
                    g.state.as_str(),
                    c.method,
                    if c.matched { "matched" } else { "FAILED" },
                    c.detail
                )?,
                None => writeln!(
                    out,
                    "    gpu job {} {}{}",
                    g.job,
                    g.state.as_str(),
                    if g.from_record {
                        " (from the record)"
                    } else {
                        ""
                    }
                )?,
            }
        }
    }
    if let Some(d) = &r.first_divergence {
        let show = |x: &Option<Digest>| x.map_or("(none)".to_string(), |d| d.to_string());
        writeln!(
            out,
            "  first divergence: step `{}` output `{}`: expected {}, found {}",
            d.step,
            d.output,
            show(&d.expected),
            show(&d.found)
        )?;
    }
    Ok(())
}

/// The per-step resource table and the run's verdict.
pub(super) fn summary(out: &mut dyn Write, s: &RunSummary) -> io::Result<()> {
    writeln!(
        out,
        "run {}  pipeline {}  {}  {} ms",
        s.run_id,
        s.pipeline,
        match s.status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "FAILED",
        },
        s.wall_ms
    )?;
    // GPU columns only when a step had a gpu grant, so other tables keep
    // their shape.
    let gpu = s.steps.iter().any(|r| r.gpu.is_some());
    let mut header = vec![
        ("STEP", Left),
        ("STATUS", Left),
        ("CACHED", Left),
        ("ATTEMPTS", Right),
        ("WALL ms", Right),
        ("FUEL", Right),
        ("MEM PEAK", Right),
        ("IN", Right),
        ("OUT", Right),
    ];
    if gpu {
        header.extend([
            ("GPU UTIL", Right),
            ("MEM UTIL", Right),
            ("FB MAX", Right),
            ("SM ACT", Right),
        ]);
    }
    let mut t = table(&header);
    for r in &s.steps {
        let mut cells = vec![
            r.name.to_string(),
            status_word(r.status).to_string(),
            if r.cached { "yes" } else { "no" }.to_string(),
            r.attempts.to_string(),
            r.wall_ms.to_string(),
            fuel(r.fuel_used),
            if r.memory_peak_bytes == 0 {
                "-".to_string()
            } else {
                bytes(r.memory_peak_bytes)
            },
            bytes(r.bytes_in),
            bytes(r.outputs.values().map(|o| o.size).sum()),
        ];
        if gpu {
            cells.extend(gpu_cells(r.gpu.as_ref()));
        }
        t.add_row(cells);
    }
    write_table(out, &t, "")?;
    for r in &s.steps {
        if let Some(g) = &r.gpu {
            gpu_jobs(out, &r.name, g)?;
        }
    }
    for r in &s.steps {
        if !r.metrics.is_empty() {
            let m: Vec<String> = r
                .metrics
                .iter()
                .map(|(k, v)| format!("{k}={}", format_metric(*v)))
                .collect();
            writeln!(out, "  {}: {}", r.name, m.join("  "))?;
        }
    }
    for r in &s.steps {
        if let Some(e) = &r.error {
            let class = match e.class {
                crate::failure::FailureClass::Step => "step",
                crate::failure::FailureClass::Limit => "limit",
                crate::failure::FailureClass::Engine => "engine",
            };
            writeln!(out, "  {} failed ({class}): {}", r.name, e.message)?;
        } else if let Some(reason) = &r.reason {
            writeln!(out, "  {} skipped: {reason}", r.name)?;
        }
    }
    Ok(())
}

/// GPU utilisation, memory utilisation, peak framebuffer and SM activity
/// of a step's jobs: `unavailable` without telemetry, `-` when unknown.
fn gpu_cells(report: Option<&crate::gpu::GpuReport>) -> [String; 4] {
    let dash = || "-".to_string();
    let Some(g) = report else {
        return [dash(), dash(), dash(), dash()];
    };
    if !g.available {
        return ["unavailable".to_string(), dash(), dash(), dash()];
    }
    let usages: Vec<&crate::gpu::Usage> = g
        .jobs
        .iter()
        .filter_map(|j| j.usage.as_ref())
        .filter(|u| u.samples > 0)
        .collect();
    if usages.is_empty() {
        return [dash(), dash(), dash(), dash()];
    }
    let samples: f64 = usages.iter().map(|u| f64::from(u.samples)).sum();
    let weighted = |f: &dyn Fn(&crate::gpu::Usage) -> f32| {
        usages
            .iter()
            .map(|u| f64::from(f(u)) * f64::from(u.samples))
            .sum::<f64>()
            / samples
    };
    let sm: Vec<f32> = usages.iter().filter_map(|u| u.sm_active_mean).collect();
    [
        format!("{:.0}%", weighted(&|u| u.util_mean)),
        format!("{:.0}%", weighted(&|u| u.mem_util_mean)),
        bytes(
            usages
                .iter()
                .map(|u| u.fb_used_max_bytes)
                .max()
                .unwrap_or(0),
        ),
        if sm.is_empty() {
            dash()
        } else {
            format!("{:.0}%", sm.iter().sum::<f32>() / sm.len() as f32)
        },
    ]
}

/// GPU busy at least this often, percent …
const LAUNCH_BOUND_UTIL_MIN: f32 = 80.0;
/// … with SMs active less than this, percent: small kernels, launch-bound.
const LAUNCH_BOUND_SM_MAX: f32 = 30.0;
/// GPU busy less than this, percent: waiting on input or host work.
const INPUT_BOUND_UTIL_MAX: f32 = 50.0;
/// Fewest samples (at 10 Hz) before a job is judged.
const UNDER_USE_SAMPLES_MIN: u32 = 5;

/// One line per gpu job, and a flag for a job that likely under-used its GPU.
fn gpu_jobs(out: &mut dyn Write, step: &str, g: &crate::gpu::GpuReport) -> io::Result<()> {
    for j in &g.jobs {
        let mut line = format!(
            "  {step}: gpu job {} {} on {} {} in {} ms",
            j.id,
            j.op,
            j.device.as_deref().unwrap_or(&j.worker),
            j.state.as_str(),
            j.wall_ms
        );
        if let Some(us) = j.dispatch_us {
            line.push_str(&format!(
                " (dispatch {:.2} ms, {} worker)",
                us as f64 / 1000.0,
                if j.warm { "warm" } else { "new" }
            ));
        }
        if j.replayed {
            line.push_str(" (from the record)");
        }
        match j.mfu {
            Some(m) => line.push_str(&format!("  MFU {:.1}%", m * 100.0)),
            None => line.push_str("  MFU -"),
        }
        writeln!(out, "{line}")?;
        if let Some(m) = &j.message
            && j.state != crate::gpu::State::Succeeded
        {
            writeln!(out, "    {m}")?;
        }
        let Some(u) = j
            .usage
            .as_ref()
            .filter(|u| u.samples >= UNDER_USE_SAMPLES_MIN)
        else {
            continue;
        };
        match u.sm_active_mean {
            Some(sm) if u.util_mean >= LAUNCH_BOUND_UTIL_MIN && sm < LAUNCH_BOUND_SM_MAX => {
                writeln!(
                    out,
                    "    ⚠ GPU busy {:.0}% of the time but SMs active only {sm:.0}%: likely launch-bound (small kernels; larger batches or CUDA graphs help)",
                    u.util_mean
                )?;
            }
            _ if u.util_mean < INPUT_BOUND_UTIL_MAX => writeln!(
                out,
                "    ⚠ GPU busy only {:.0}% of the time: likely input-bound (data loading or host work between kernels)",
                u.util_mean
            )?,
            _ => {}
        }
    }
    if !g.available
        && let Some(reason) = &g.reason
    {
        writeln!(out, "  {step}: {reason}")?;
    }
    Ok(())
}

fn format_metric(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn text(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_runs_table_fits_columns_to_their_widest_cell() {
        let rows = [
            serde_json::json!({"run_id": "20261202-155232-18e9b089", "pipeline": "tabular-sweep",
                "status": "succeeded", "started_at": "2026-12-02T15:52:32.957Z", "wall_ms": 93713}),
            serde_json::json!({"run_id": "20000101-000000-0000beef", "status": "unfinished"}),
        ];
        expect![[r#"
            RUN                       PIPELINE       STATUS      STARTED                       WALL
            20261202-155232-18e9b089  tabular-sweep  succeeded   2026-12-02T15:52:32.957Z  93713 ms
            20000101-000000-0000beef  ?              unfinished  -                                -
        "#]]
        .assert_eq(&text(|out| runs(out, &rows)));
    }
}
