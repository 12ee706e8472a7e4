//! References to artifacts as runs, caches and gpu jobs record them.
//!
//! Invariant: an [`OutputRef`] names bytes by digest; its size and media
//! type are what was recorded when they were stored.
//! Boundary: a leaf (vocabulary only, no IO).

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// An output as recorded in caches and reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    /// `sha256:<hex>`.
    pub digest: Digest,
    /// Bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
}
