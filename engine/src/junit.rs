//! JUnit XML for `sluice ci`: one test suite per run, one test case per
//! step, so any CI system shows a pipeline like a test run.
//!
//! Invariant: the output is well-formed XML whatever the step names, error
//! messages or metrics contain (`quick-junit` escapes markup and drops ANSI
//! escapes and the control characters that XML 1.0 forbids).
//! Boundary: maps a [`RunSummary`] onto `quick-junit`'s report model;
//! writes nothing itself.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::failure::FailureClass;
use crate::run::{RunSummary, StepStatus};

/// The JUnit XML document for `summary`.
pub fn report(summary: &RunSummary) -> Result<String, quick_junit::SerializeError> {
    let wall = Duration::from_millis(summary.wall_ms);
    let mut suite = TestSuite::new(summary.pipeline.as_str());
    suite.set_time(wall);
    suite
        .extra
        .insert("id".into(), summary.run_id.as_str().into());
    if let Ok(started) = chrono::DateTime::parse_from_rfc3339(&summary.started_at) {
        suite.set_timestamp(started);
    }
    suite.add_property(Property::new("run_id", summary.run_id.as_str()));
    suite.add_property(Property::new(
        "spec_digest",
        summary.spec_digest.to_string(),
    ));
    for (k, v) in &summary.params {
        suite.add_property(Property::new(format!("param.{k}"), v.as_str()));
    }
    for step in &summary.steps {
        let status = match step.status {
            StepStatus::Failed => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let (class, message) = step.error.as_ref().map_or(("step", ""), |e| {
                    let class = match e.class {
                        FailureClass::Step => "step",
                        FailureClass::Limit => "limit",
                        FailureClass::Engine => "engine",
                    };
                    (class, e.message.as_str())
                });
                status
                    .set_type(class)
                    .set_message(message)
                    .set_description(message);
                status
            }
            StepStatus::Skipped => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(step.reason.as_deref().unwrap_or("skipped"));
                status
            }
            StepStatus::Succeeded | StepStatus::Cached => TestCaseStatus::success(),
        };
        let mut case = TestCase::new(step.name.as_str(), status);
        case.set_classname(summary.pipeline.as_str())
            .set_time(Duration::from_millis(step.wall_ms));
        let mut out = Vec::new();
        if step.cached {
            out.push("cached: yes".to_string());
        }
        if !step.metrics.is_empty() {
            let metrics: Vec<String> = step
                .metrics
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push(format!("metrics: {}", metrics.join(" ")));
        }
        for (k, o) in &step.outputs {
            out.push(format!("output {k}: {} ({} bytes)", o.digest, o.size));
        }
        if !out.is_empty() {
            case.set_system_out(out.join("\n"));
        }
        suite.add_test_case(case);
    }
    let mut report = Report::new("sluice");
    report.set_time(wall).add_test_suite(suite);
    report.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_and_messages_stay_well_formed_xml() {
        let hostile = "<a href=\"x\">&'\u{1b}[31m\u{7}\n";
        let step = |name: &str, status: &str| {
            serde_json::json!({
                "name": name, "status": status, "cached": false, "attempts": 1,
                "wall_ms": 1500, "fuel_used": 0, "memory_peak_bytes": 0,
                "bytes_in": 0, "bytes_out": 0, "outputs": {}, "metrics": {"m": 0.5},
                "error": if status == "failed" {
                    serde_json::json!({"class": "limit", "message": hostile})
                } else {
                    serde_json::Value::Null
                },
                "reason": if status == "skipped" { Some(hostile) } else { None },
            })
        };
        let summary: RunSummary = serde_json::from_value(serde_json::json!({
            "run_id": "20261202-155232-18e9b089", "status": "failed",
            "pipeline": hostile, "spec_path": "p.toml",
            "spec_digest": format!("sha256:{}", "0".repeat(64)),
            "params": {"k": hostile}, "seed": 1,
            "started_at": "2026-12-02T15:52:32.957Z",
            "finished_at": "2026-12-02T15:52:34.457Z", "wall_ms": 1500,
            "steps": [step(hostile, "failed"), step("after", "skipped"), step("ok", "succeeded")],
        }))
        .unwrap();
        let xml = report(&summary).unwrap();
        let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .unwrap();
        // ANSI escapes and BEL are dropped; the parser reads a newline in an
        // attribute as a space.
        assert_eq!(suite.attribute("name"), Some("<a href=\"x\">&' "));
        assert_eq!(suite.attribute("id"), Some("20261202-155232-18e9b089"));
        assert_eq!(suite.attribute("tests"), Some("3"));
        assert_eq!(suite.attribute("failures"), Some("1"));
        assert_eq!(suite.attribute("skipped"), Some("1"));
        assert_eq!(suite.attribute("time"), Some("1.500"));
        let failure = doc
            .descendants()
            .find(|n| n.has_tag_name("failure"))
            .unwrap();
        assert_eq!(failure.attribute("type"), Some("limit"));
        assert_eq!(failure.attribute("message"), Some("<a href=\"x\">&' "));
    }
}
