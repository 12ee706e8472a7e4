//! How a step attempt ends when it does not succeed: a class and a message.
//!
//! Invariant: every failed attempt is exactly one [`FailureClass`]; the
//! class decides retries, exit codes and what the cache may keep.
//! Boundary: a leaf; vocabulary shared by the sandbox, the run, the gpu
//! jobs and the service.

use sluice_host_api::LimitKind;

/// Why an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureClass {
    /// The step returned `err`, trapped on its own, broke its contract, or is
    /// not a valid component.
    Step,
    /// A sandbox limit ended it.
    Limit,
    /// The engine failed (our IO or bug).
    Engine,
}

/// A failed attempt: class and a message naming the offender.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// The class.
    pub class: FailureClass,
    /// `limit: memory: ...`, the step's own message, ...
    pub message: String,
}

impl Failure {
    pub(crate) fn step(message: impl Into<String>) -> Self {
        Failure {
            class: FailureClass::Step,
            message: message.into(),
        }
    }

    pub(crate) fn engine(message: impl Into<String>) -> Self {
        Failure {
            class: FailureClass::Engine,
            message: message.into(),
        }
    }

    pub(crate) fn limit(kind: LimitKind, detail: impl std::fmt::Display) -> Self {
        Failure {
            class: FailureClass::Limit,
            message: format!("limit: {kind}: {detail}"),
        }
    }
}
