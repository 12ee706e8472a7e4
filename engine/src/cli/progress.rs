//! Live progress of a run on stderr: a spinner listing the running steps
//! on a terminal, one line per finished step otherwise.
//!
//! Invariant: writes only to stderr, never to stdout (which `--json` owns),
//! and never fails a run: a closed stderr loses progress lines, nothing else.
//! Boundary: an `Observer` of run events; knows nothing of flags or of
//! the final report (`render`).

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::run::{Event, Observer, StepReport, StepStatus};

/// Live progress on stderr: a spinner with running steps on a terminal,
/// one line per finished step otherwise.
pub(super) struct Progress {
    bar: Option<ProgressBar>,
    running: Mutex<Vec<String>>,
}

impl Progress {
    pub(super) fn new(terminal: bool) -> Self {
        Progress {
            bar: terminal.then(ProgressBar::hidden),
            running: Mutex::new(Vec::new()),
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            // A closed stderr must not end the run: the line is lost.
            None => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }

    pub(super) fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            bar.set_message(format!("running: {}", running.join(", ")));
        }
    }
}

impl Observer for Progress {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::RunStarted { run_id, steps } => {
                if let Some(bar) = &self.bar {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    bar.set_length(steps.len() as u64);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{pos}/{len}] {elapsed} {wide_msg}",
                        )
                        .expect("valid template"),
                    );
                    bar.enable_steady_tick(Duration::from_millis(100));
                }
                self.line(format!("run {run_id}: {} steps", steps.len()));
            }
            Event::StepStarted { step, attempt } => {
                self.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(if attempt > 1 {
                        format!("{step} (attempt {attempt})")
                    } else {
                        step.to_string()
                    });
                self.refresh();
            }
            Event::StepRetrying {
                step,
                attempt,
                error,
            } => {
                self.line(format!(
                    "  ↻ {step}: attempt {attempt} failed: {}; retrying",
                    error.message
                ));
                self.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|s| !s.starts_with(step));
                self.refresh();
            }
            Event::StepFinished(report) => {
                self.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|s| s != &report.name && !s.starts_with(&format!("{} (", report.name)));
                self.line(finished_line(report));
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
                self.refresh();
            }
        }
    }
}

fn finished_line(r: &StepReport) -> String {
    match r.status {
        StepStatus::Succeeded => format!("  ✓ {:<16} {:>6} ms", r.name, r.wall_ms),
        StepStatus::Cached => format!("  ◆ {:<16} cached", r.name),
        StepStatus::Failed => format!(
            "  ✗ {:<16} {}",
            r.name,
            r.error.as_ref().map_or("failed", |e| e.message.as_str())
        ),
        StepStatus::Skipped => format!(
            "  - {:<16} skipped ({})",
            r.name,
            r.reason.as_deref().unwrap_or("upstream failed")
        ),
    }
}
