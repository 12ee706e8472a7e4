//! Quoting of untrusted text (guest messages, logs, names) for terminals,
//! records and error messages.
//!
//! Invariant: the output holds no control character but newline and tab
//! (ANSI escapes arrive escaped) and is bounded in length.
//! Boundary: a leaf.

/// Makes guest-provided text safe to print in a message: control
/// characters (ANSI escapes included) are escaped, length is bounded.
pub fn sanitize(text: &str) -> String {
    escape_controls(text, 4096)
}

/// Escapes every control character but newline and tab, keeping at most
/// `max_chars` characters (then `…`). Used for messages and captured logs.
pub fn escape_controls(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars));
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
