//! Positions in a text: byte offsets (TOML spans) → 1-based line and
//! column, for messages that point at the offending key.
//!
//! Invariant: total — every offset, even past the end or inside a
//! multi-byte character, maps to a line ≥ 1 and a column ≥ 1.
//! Boundary: pure; a leaf (no crate imports).

/// Where each line of a text starts.
#[derive(Clone, Debug)]
pub struct LineIndex {
    starts: Vec<usize>,
    text: String,
}

impl LineIndex {
    /// Indexes `text`.
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex {
            starts,
            text: text.to_string(),
        }
    }

    /// The 1-based line and column (in characters) of byte `offset`;
    /// offsets past the end count from the last line.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let end = offset.min(self.text.len());
        let column = self
            .text
            .get(start..end)
            .map_or(1, |s| s.chars().count() + 1);
        (line, column)
    }
}
