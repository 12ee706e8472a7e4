//! JUnit XML for `sluice ci`: one test suite per run, one test case per
//! step, so any CI system shows a pipeline like a test run.
//!
//! Invariant: the output is well-formed XML whatever the step names, error
//! messages or metrics contain (everything is escaped; control characters
//! that XML 1.0 forbids are replaced).
//! Boundary: formats a [`RunSummary`]; writes nothing itself.

use std::fmt::Write as _;

use crate::failure::FailureClass;
use crate::run::{RunSummary, StepStatus};

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn seconds(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// The JUnit XML document for `summary`.
pub fn report(summary: &RunSummary) -> String {
    let tests = summary.steps.len();
    let failures = summary
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .count();
    let skipped = summary
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Skipped)
        .count();
    let name = escape(&summary.pipeline);
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"sluice\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{}\">",
        seconds(summary.wall_ms)
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{name}\" id=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{}\" timestamp=\"{}\">",
        escape(summary.run_id.as_str()),
        seconds(summary.wall_ms),
        escape(&summary.started_at)
    );
    x.push_str("    <properties>\n");
    let _ = writeln!(
        x,
        "      <property name=\"run_id\" value=\"{}\"/>",
        escape(summary.run_id.as_str())
    );
    let _ = writeln!(
        x,
        "      <property name=\"spec_digest\" value=\"{}\"/>",
        summary.spec_digest
    );
    for (k, v) in &summary.params {
        let _ = writeln!(
            x,
            "      <property name=\"param.{}\" value=\"{}\"/>",
            escape(k),
            escape(v)
        );
    }
    x.push_str("    </properties>\n");
    for step in &summary.steps {
        let _ = write!(
            x,
            "    <testcase classname=\"{name}\" name=\"{}\" time=\"{}\"",
            escape(&step.name),
            seconds(step.wall_ms)
        );
        let metrics: Vec<String> = step
            .metrics
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut body = String::new();
        match step.status {
            StepStatus::Failed => {
                let (class, message) = step.error.as_ref().map_or(("step", String::new()), |e| {
                    let class = match e.class {
                        FailureClass::Step => "step",
                        FailureClass::Limit => "limit",
                        FailureClass::Engine => "engine",
                    };
                    (class, e.message.clone())
                });
                let _ = writeln!(
                    body,
                    "      <failure type=\"{class}\" message=\"{}\">{}</failure>",
                    escape(&message),
                    escape(&message)
                );
            }
            StepStatus::Skipped => {
                let _ = writeln!(
                    body,
                    "      <skipped message=\"{}\"/>",
                    escape(step.reason.as_deref().unwrap_or("skipped"))
                );
            }
            StepStatus::Succeeded | StepStatus::Cached => {}
        }
        let mut out = Vec::new();
        if step.cached {
            out.push("cached: yes".to_string());
        }
        if !metrics.is_empty() {
            out.push(format!("metrics: {}", metrics.join(" ")));
        }
        for (k, o) in &step.outputs {
            out.push(format!("output {k}: {} ({} bytes)", o.digest, o.size));
        }
        if !out.is_empty() {
            let _ = writeln!(
                body,
                "      <system-out>{}</system-out>",
                escape(&out.join("\n"))
            );
        }
        if body.is_empty() {
            x.push_str("/>\n");
        } else {
            x.push_str(">\n");
            x.push_str(&body);
            x.push_str("    </testcase>\n");
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_quotes_and_forbidden_controls() {
        assert_eq!(
            escape("<a href=\"x\">&'\u{1b}\n"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;\u{fffd}\n"
        );
    }
}
