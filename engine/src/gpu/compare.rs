//! Replay comparison: how a job executed again (`--rerun-gpu`) compares
//! with the job the run recorded.
//!
//! Invariant: the method follows from the fingerprints alone — equal
//! device/driver/library fingerprints promise bitwise-equal outputs, so
//! they are compared by digest; different ones are compared by
//! `final_loss` within [`LOSS_RELATIVE_TOLERANCE`]. Every verdict carries
//! the numbers it was reached on.
//! Boundary: pure function over two [`JobReport`]s; no IO.

use serde::Serialize;

use super::job::{JobReport, State};

/// Relative tolerance of `final_loss` when a rerun's device/library
/// fingerprint differs from the recorded one.
pub const LOSS_RELATIVE_TOLERANCE: f64 = 1e-3;

/// How a rerun job compares with the recorded one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// Job id in the rerun.
    pub job: String,
    /// `bitwise` (same fingerprint) or `tolerance`.
    pub method: &'static str,
    /// Whether it matches by that method.
    pub matched: bool,
    /// What was compared, with numbers.
    pub detail: String,
}

/// Compares a rerun job with its recorded twin: bitwise output digests when
/// the device/driver/library fingerprints are equal, otherwise
/// `final_loss` within [`LOSS_RELATIVE_TOLERANCE`].
pub fn compare(recorded: &JobReport, rerun: &JobReport) -> Comparison {
    let same_fingerprint =
        recorded.fingerprint.is_some() && recorded.fingerprint == rerun.fingerprint;
    let method = if same_fingerprint {
        "bitwise"
    } else {
        "tolerance"
    };
    let comparison = |matched, detail: String| Comparison {
        job: rerun.id.clone(),
        method,
        matched,
        detail,
    };
    if recorded.state != State::Succeeded || rerun.state != State::Succeeded {
        return comparison(
            recorded.state == rerun.state,
            format!(
                "recorded job {} {}, rerun {}",
                recorded.id,
                recorded.state.as_str(),
                rerun.state.as_str()
            ),
        );
    }
    if same_fingerprint {
        let differing: Vec<String> = recorded
            .outputs
            .iter()
            .filter(|(k, o)| rerun.outputs.get(*k).map(|r| r.digest) != Some(o.digest))
            .map(|(k, o)| {
                format!(
                    "output `{k}`: recorded {}, rerun {}",
                    o.digest,
                    rerun
                        .outputs
                        .get(k)
                        .map_or("(none)".to_string(), |r| r.digest.to_string())
                )
            })
            .collect();
        return if differing.is_empty() && recorded.outputs.len() == rerun.outputs.len() {
            comparison(
                true,
                "outputs bitwise identical (same device/driver/library fingerprint)".to_string(),
            )
        } else {
            comparison(
                false,
                format!(
                    "same fingerprint but {}",
                    if differing.is_empty() {
                        "a different set of outputs".to_string()
                    } else {
                        differing.join("; ")
                    }
                ),
            )
        };
    }
    match (recorded.metric("final_loss"), rerun.metric("final_loss")) {
        (Some(a), Some(b)) => {
            let rel = (a - b).abs() / a.abs().max(f64::MIN_POSITIVE);
            let matched = rel <= LOSS_RELATIVE_TOLERANCE;
            comparison(
                matched,
                format!(
                    "fingerprint differs ({} vs {}); final_loss recorded {a} rerun {b}: relative difference {rel:.2e} {} {LOSS_RELATIVE_TOLERANCE:e}",
                    recorded.device.as_deref().unwrap_or("?"),
                    rerun.device.as_deref().unwrap_or("?"),
                    if matched { "≤" } else { ">" }
                ),
            )
        }
        _ => comparison(
            false,
            "fingerprint differs and the job reported no final_loss to compare".to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::artifact::OutputRef;
    use crate::gpu::job::tests::spec;
    use crate::gpu::job::{JobSpecRecord, describe_device, fingerprint};
    use crate::gpu::protocol::{self, Hello};

    fn report(outputs: &[(&str, &str)], loss: f64, device: &str) -> JobReport {
        let record = JobSpecRecord::from_wit(&spec()).unwrap();
        let mut r = JobReport::new("j1", &record, record.digest());
        r.state = State::Succeeded;
        r.metrics = serde_json::json!({"final_loss": loss});
        let hello = Hello {
            protocol: 1,
            worker: "torch".into(),
            ops: vec![],
            versions: BTreeMap::new(),
            device: protocol::Device {
                kind: "cuda".into(),
                name: device.into(),
                uuid: None,
            },
        };
        r.fingerprint = Some(fingerprint(&hello));
        r.device = Some(describe_device(&hello));
        for (k, hex) in outputs {
            r.outputs.insert(
                k.to_string(),
                OutputRef {
                    digest: format!("sha256:{}", hex.repeat(32)).parse().unwrap(),
                    size: 1,
                    media_type: "application/json".into(),
                },
            );
        }
        r
    }

    #[test]
    fn reruns_compare_bitwise_on_the_same_fingerprint_and_by_loss_otherwise() {
        let a = report(&[("model", "aa")], 0.30, "NVIDIA H100");
        let c = compare(&a, &report(&[("model", "aa")], 0.9, "NVIDIA H100"));
        assert_eq!((c.method, c.matched), ("bitwise", true));
        let c = compare(&a, &report(&[("model", "bb")], 0.30, "NVIDIA H100"));
        assert_eq!((c.method, c.matched), ("bitwise", false));
        assert!(
            c.detail.contains("output `model`: recorded sha256:aaaa"),
            "{}",
            c.detail
        );
        let c = compare(&a, &report(&[("model", "bb")], 0.30015, "NVIDIA A100"));
        assert_eq!((c.method, c.matched), ("tolerance", true), "{}", c.detail);
        assert!(
            c.detail.contains("relative difference 5.00e-4 ≤ 1e-3"),
            "{}",
            c.detail
        );
        let c = compare(&a, &report(&[("model", "bb")], 0.31, "NVIDIA A100"));
        assert_eq!((c.method, c.matched), ("tolerance", false));
    }
}
