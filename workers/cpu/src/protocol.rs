//! The wire format of protocol v1 (`workers/PROTOCOL.md`): the
//! messages this worker reads and writes, and bounded line reading.
//!
//! Invariant: a line is never buffered beyond [`LINE_BYTES_MAX`]; every
//! outgoing message is one `\n`-terminated JSON line, flushed.
//! Boundary: knows the shapes of messages, not what a job does.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version this worker speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line either side may send, in bytes (the protocol's limit).
pub const LINE_BYTES_MAX: usize = 1 << 20;

/// A message to the engine.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub(crate) enum Outgoing<'a> {
    Hello {
        protocol: u32,
        worker: &'a str,
        ops: &'a [&'a str],
        versions: BTreeMap<&'a str, &'a str>,
        device: Device,
    },
    Progress {
        id: &'a str,
        message: String,
        metrics: Value,
    },
    Result {
        id: &'a str,
        status: Status,
        outputs: BTreeMap<&'a str, OutputFile>,
        metrics: Value,
        message: Option<String>,
    },
}

/// The device a worker computes on.
#[derive(Debug, Serialize)]
pub(crate) struct Device {
    pub kind: &'static str,
    pub name: String,
    pub uuid: Option<String>,
}

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Succeeded,
    Failed,
    Cancelled,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// One output file of a job, inside its `output_dir`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct OutputFile {
    pub file: String,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// Writes `message` as one line and flushes it.
pub(crate) fn send(out: &mut impl Write, message: &Outgoing<'_>) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// A `run` message.
#[derive(Debug, Deserialize)]
pub(crate) struct RunRequest {
    pub id: String,
    pub op: String,
    #[serde(default = "empty_object")]
    pub params: Value,
    #[serde(default)]
    pub inputs: BTreeMap<String, InputRef>,
    pub output_dir: PathBuf,
    #[serde(default)]
    pub seed: u64,
    /// The budget from the moment the line was read; none when absent.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// An input file in the engine's store.
#[derive(Debug, Deserialize)]
pub(crate) struct InputRef {
    pub path: PathBuf,
    pub digest: String,
}

/// A line from the engine, parsed.
#[derive(Debug)]
pub(crate) enum Incoming {
    Run(Box<RunRequest>),
    Cancel(String),
    Shutdown,
    /// A `run` with an id that is otherwise unusable: answered with a
    /// failed result for that id.
    BadRun {
        id: String,
        message: String,
    },
    /// Anything else that cannot be acted on: logged, not answered.
    Unusable(String),
}

impl Incoming {
    pub(crate) fn parse(line: &[u8]) -> Incoming {
        let value: Value = match serde_json::from_slice(line) {
            Ok(value) => value,
            Err(e) => return Incoming::Unusable(format!("not a JSON line: {e}")),
        };
        let kind = value.get("type").and_then(Value::as_str);
        let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        match (kind, id) {
            (Some("run"), Some(id)) => match serde_json::from_value(value) {
                Ok(run) => Incoming::Run(Box::new(run)),
                Err(e) => Incoming::BadRun {
                    id,
                    message: format!("malformed run message: {e}"),
                },
            },
            (Some("run"), None) => Incoming::Unusable("run message without a string id".into()),
            (Some("cancel"), Some(id)) => Incoming::Cancel(id),
            (Some("cancel"), None) => {
                Incoming::Unusable("cancel message without a string id".into())
            }
            (Some("shutdown"), _) => Incoming::Shutdown,
            (Some(other), _) => Incoming::Unusable(format!("unknown message type `{other}`")),
            (None, _) => Incoming::Unusable("message without a string `type`".into()),
        }
    }
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line, without its terminator, in the caller's buffer.
    Complete,
    /// A line over [`LINE_BYTES_MAX`], skipped up to its end.
    TooLong,
    /// End of input.
    End,
}

/// Reads one line into `buf`, never holding more than [`LINE_BYTES_MAX`]
/// + 1 bytes of it.
pub(crate) fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Line> {
    use std::io::Read;
    buf.clear();
    let limit = LINE_BYTES_MAX as u64 + 1;
    let n = input.by_ref().take(limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::End);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Line::Complete);
    }
    if buf.len() <= LINE_BYTES_MAX {
        // The last line, without a terminator.
        return Ok(Line::Complete);
    }
    buf.clear();
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(Line::TooLong);
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(end) => {
                input.consume(end + 1);
                return Ok(Line::TooLong);
            }
            None => {
                let len = available.len();
                input.consume(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_bounded_and_overlong_ones_skipped() {
        let mut data = b"{\"a\":1}\r\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', LINE_BYTES_MAX + 10));
        data.extend(b"\nlast");
        let mut input = io::BufReader::with_capacity(4096, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), Line::Complete);
        assert_eq!(buf, b"{\"a\":1}");
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), Line::TooLong);
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), Line::Complete);
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), Line::End);
    }

    #[test]
    fn messages_parse_by_type_and_bad_runs_keep_their_id() {
        assert!(matches!(
            Incoming::parse(br#"{"type":"cancel","id":"j1","extra":true}"#),
            Incoming::Cancel(id) if id == "j1"
        ));
        assert!(matches!(
            Incoming::parse(br#"{"type":"shutdown"}"#),
            Incoming::Shutdown
        ));
        let Incoming::BadRun { id, message } =
            Incoming::parse(br#"{"type":"run","id":"j2","output_dir":"/tmp"}"#)
        else {
            panic!("expected a bad run");
        };
        assert_eq!(id, "j2");
        assert_eq!(message, "malformed run message: missing field `op`");
        let unusable = |line: &[u8]| match Incoming::parse(line) {
            Incoming::Unusable(message) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            unusable(br#"{"type":"dance"}"#),
            "unknown message type `dance`"
        );
        assert_eq!(
            unusable(br#"{"type":"run"}"#),
            "run message without a string id"
        );
        assert_eq!(unusable(b"[]"), "message without a string `type`");
        assert_eq!(
            unusable(b"{oops"),
            "not a JSON line: key must be a string at line 1 column 2"
        );
        let Incoming::Run(run) = Incoming::parse(
            br#"{"type":"run","id":"j3","op":"train-mlp","output_dir":"/o",
                "inputs":{"train":{"path":"/t","digest":"sha256:00"}},"deadline_ms":5}"#,
        ) else {
            panic!("expected a run");
        };
        assert_eq!((run.seed, run.deadline_ms), (0, Some(5)));
        assert_eq!(run.params, empty_object());
        assert_eq!(run.inputs["train"].path, PathBuf::from("/t"));
    }
}
