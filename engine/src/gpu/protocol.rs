//! Worker protocol v1 (`workers/PROTOCOL.md`): the JSON-lines
//! messages between the engine and a worker, and the checks every line
//! from a worker goes through before the engine acts on it.
//!
//! Invariant: nothing a worker sends is trusted. A line is bounded
//! ([`LINE_BYTES_MAX`]), must parse as one JSON object of a known `type`,
//! and anything quoted back in a message is escaped and truncated
//! ([`quote_line`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this engine speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// Longest line either side may send (the protocol's limit).
pub const LINE_BYTES_MAX: usize = 1 << 20;

/// Most characters of an offending line quoted back in a message.
pub const QUOTE_CHARS_MAX: usize = 120;

/// Most outputs one job may report.
pub const OUTPUTS_MAX: usize = 64;

/// The device a worker runs on, as its `hello` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// `cpu` or `cuda`.
    #[serde(default)]
    pub kind: String,
    /// Human-readable device name.
    #[serde(default)]
    pub name: String,
    /// The GPU UUID (`GPU-…`), if any.
    #[serde(default)]
    pub uuid: Option<String>,
}

/// A worker's first line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the worker speaks.
    pub protocol: u64,
    /// The worker's own name for itself.
    #[serde(default)]
    pub worker: String,
    /// Operations it implements.
    #[serde(default)]
    pub ops: Vec<String>,
    /// Component versions (`torch`, `cuda`, `driver`, ...).
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// Where it computes.
    #[serde(default)]
    pub device: Device,
}

/// One output a `result` reports.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ReportedOutput {
    /// A plain file name inside the job's output directory.
    pub file: String,
    /// `sha256:<hex>` of the file's bytes, as the worker claims.
    pub digest: String,
    /// Size in bytes, as the worker claims.
    #[serde(default)]
    pub size: Option<u64>,
    /// Media type.
    #[serde(default)]
    pub media_type: Option<String>,
}

/// How a worker says a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    /// Outputs were written.
    Succeeded,
    /// The job failed; `message` says why.
    Failed,
    /// Stopped by a `cancel`.
    Cancelled,
}

/// A job's one `result` line.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JobOutcome {
    /// The job id.
    pub id: String,
    /// How it ended.
    pub status: ResultStatus,
    /// Outputs by name.
    #[serde(default)]
    pub outputs: BTreeMap<String, ReportedOutput>,
    /// Metrics (a JSON object).
    #[serde(default)]
    pub metrics: Value,
    /// Why it failed.
    #[serde(default)]
    pub message: Option<String>,
}

/// A parsed line from a worker.
#[derive(Clone, Debug, PartialEq)]
pub enum FromWorker {
    /// `hello`.
    Hello(Hello),
    /// `progress` of job `id`.
    Progress {
        /// The job id.
        id: String,
        /// Free text.
        message: Option<String>,
    },
    /// `result`.
    Result(JobOutcome),
}

/// Why a line from a worker was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {line}")]
pub struct Malformed {
    /// What is wrong with it.
    pub reason: String,
    /// The line, escaped and truncated ([`quote_line`]).
    pub line: String,
}

/// Parses one line (without its newline) from a worker.
pub fn parse_line(bytes: &[u8]) -> Result<FromWorker, Malformed> {
    let bad = |reason: String| Malformed {
        reason,
        line: quote_line(bytes),
    };
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a JSON line ({e})")))?;
    let Value::Object(map) = &value else {
        return Err(bad("not a JSON object".to_string()));
    };
    let Some(kind) = map.get("type").and_then(Value::as_str) else {
        return Err(bad("no string field \"type\"".to_string()));
    };
    match kind {
        "hello" => serde_json::from_value::<Hello>(value.clone())
            .map(FromWorker::Hello)
            .map_err(|e| bad(format!("bad hello ({e})"))),
        "progress" => {
            let id = map
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("progress without a string \"id\"".to_string()))?;
            Ok(FromWorker::Progress {
                id: id.to_string(),
                message: map
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        }
        "result" => {
            let outcome = serde_json::from_value::<JobOutcome>(value.clone())
                .map_err(|e| bad(format!("bad result ({e})")))?;
            if !(outcome.metrics.is_object() || outcome.metrics.is_null()) {
                return Err(bad("result metrics must be a JSON object".to_string()));
            }
            if outcome.outputs.len() > OUTPUTS_MAX {
                return Err(bad(format!(
                    "result reports {} outputs; the limit is {OUTPUTS_MAX}",
                    outcome.outputs.len()
                )));
            }
            Ok(FromWorker::Result(outcome))
        }
        other => Err(bad(format!(
            "unknown message type {:?}",
            crate::quoting::escape_controls(other, 40)
        ))),
    }
}

/// A line quoted back in a message: lossy UTF-8, control characters
/// escaped, at most [`QUOTE_CHARS_MAX`] characters, in quotes.
pub fn quote_line(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(QUOTE_CHARS_MAX * 4)];
    let text = String::from_utf8_lossy(head);
    let mut quoted = crate::quoting::escape_controls(&text, QUOTE_CHARS_MAX).replace('\n', "\\n");
    if bytes.len() > head.len() && !quoted.ends_with('…') {
        quoted.push('…');
    }
    format!("\"{quoted}\"")
}

/// An input of a `run` line: an absolute path in the store and its digest.
#[derive(Clone, Debug, Serialize)]
pub struct RunInput {
    /// Absolute path of the verified blob.
    pub path: String,
    /// Its digest.
    pub digest: String,
}

/// The `run` line.
#[derive(Clone, Debug, Serialize)]
pub struct Run<'a> {
    /// Always `run`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Job id.
    pub id: &'a str,
    /// Operation.
    pub op: &'a str,
    /// Operation parameters (a JSON object).
    pub params: &'a Value,
    /// Inputs by name.
    pub inputs: BTreeMap<&'a str, RunInput>,
    /// Fresh directory for the outputs.
    pub output_dir: String,
    /// Seed.
    pub seed: u64,
    /// Deterministic kernels requested.
    pub deterministic: bool,
    /// Budget from reading this line.
    pub deadline_ms: u64,
}

/// The `cancel` line for job `id`.
pub fn cancel_line(id: &str) -> String {
    serde_json::json!({"type": "cancel", "id": id}).to_string()
}

/// The `shutdown` line.
pub fn shutdown_line() -> String {
    serde_json::json!({"type": "shutdown"}).to_string()
}

/// Whether `file` is a plain file name: no separators, not `.`/`..`, no
/// NUL, bounded.
pub fn is_plain_file_name(file: &str) -> bool {
    !file.is_empty()
        && file.len() <= 255
        && file != "."
        && file != ".."
        && !file.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_progress_and_result_parse() {
        let h = parse_line(br#"{"type":"hello","protocol":1,"worker":"cpu","ops":["train-mlp"],"versions":{"x":"1"},"device":{"kind":"cpu","name":"n","uuid":null},"extra":5}"#).unwrap();
        let FromWorker::Hello(h) = h else { panic!() };
        assert_eq!((h.protocol, h.device.kind.as_str()), (1, "cpu"));
        assert_eq!(h.ops, ["train-mlp"]);
        let p = parse_line(br#"{"type":"progress","id":"j1","message":"epoch 1"}"#).unwrap();
        assert_eq!(
            p,
            FromWorker::Progress {
                id: "j1".into(),
                message: Some("epoch 1".into())
            }
        );
        let r = parse_line(br#"{"type":"result","id":"j1","status":"succeeded","outputs":{"model":{"file":"m.json","digest":"sha256:00","size":3}},"metrics":{"loss":[1,2]}}"#).unwrap();
        let FromWorker::Result(r) = r else { panic!() };
        assert_eq!(r.status, ResultStatus::Succeeded);
        assert_eq!(r.outputs["model"].file, "m.json");
    }

    #[test]
    fn malformed_lines_are_named_escaped_and_truncated() {
        let e = parse_line(b"this is not json").unwrap_err();
        assert!(e.reason.starts_with("not a JSON line"), "{e}");
        assert_eq!(e.line, "\"this is not json\"");
        let e = parse_line(br#"{"type":"launch","id":"j1"}"#).unwrap_err();
        assert_eq!(e.reason, "unknown message type \"launch\"");
        let e = parse_line(b"[1,2]").unwrap_err();
        assert_eq!(e.reason, "not a JSON object");
        let e = parse_line(br#"{"type":"result","id":"j1","status":"won"}"#).unwrap_err();
        assert!(e.reason.starts_with("bad result"), "{e}");
        let e = parse_line(br#"{"type":"result","id":"j1","status":"failed","metrics":[1]}"#)
            .unwrap_err();
        assert_eq!(e.reason, "result metrics must be a JSON object");
        let long = format!("\x1b[31m{}", "x".repeat(10_000));
        let q = quote_line(long.as_bytes());
        assert!(q.starts_with("\"\\u{1b}[31mxxx"), "{q}");
        assert!(q.ends_with("…\""), "{q}");
        assert!(q.chars().count() < QUOTE_CHARS_MAX + 20, "{q}");
    }

    #[test]
    fn output_file_names_must_be_plain() {
        for bad in ["", ".", "..", "a/b", "../x", "/etc/passwd", "a\\b", "a\0b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
        assert!(is_plain_file_name("model.json"));
        assert!(is_plain_file_name("..hidden"));
    }
}

/// Property tests: no line a worker can send panics the parser; every
/// refusal names its reason from a known set and quotes the line bounded;
/// well-formed messages round-trip. `PROPTEST_CASES=N` runs more cases.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use serde_json::json;

    /// Every reason `parse_line` gives starts with one of these.
    const REASONS: &[&str] = &[
        "not a JSON line (",
        "not a JSON object",
        "no string field \"type\"",
        "bad hello (",
        "progress without a string \"id\"",
        "bad result (",
        "result metrics must be a JSON object",
        "result reports ",
        "unknown message type ",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            // Quarters round-trip through JSON text exactly.
            (-4000i32..4000).prop_map(|n| json!(f64::from(n) / 4.0)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An object with a known `type` and other fields of any type, so the
    /// typed decoding is reached with wrong types.
    fn typed_object() -> impl Strategy<Value = Vec<u8>> {
        let kind = prop::sample::select(vec!["hello", "progress", "result", "run", "HELLO", ""]);
        let keys = prop::sample::select(vec![
            "id", "protocol", "worker", "ops", "versions", "device", "status", "outputs",
            "metrics", "message", "file", "digest", "size",
        ]);
        (kind, prop::collection::btree_map(keys, json_value(), 0..6)).prop_map(|(kind, fields)| {
            let mut map: serde_json::Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            map.insert("type".into(), json!(kind));
            serde_json::to_vec(&Value::Object(map)).expect("serializes")
        })
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            json_value().prop_map(|v| serde_json::to_vec(&v).expect("serializes")),
            typed_object(),
            // Long lines, nearly all one byte, with a few arbitrary bytes in front.
            (
                prop::collection::vec(any::<u8>(), 0..8),
                0usize..(LINE_BYTES_MAX + 16),
                any::<u8>()
            )
                .prop_map(|(head, n, fill)| {
                    let mut v = head;
                    v.resize(v.len() + n, fill);
                    v
                }),
            // Deep nesting.
            (1usize..5000).prop_map(|n| {
                let mut v = b"[".repeat(n);
                v.extend(b"]".repeat(n));
                v
            }),
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        ".{0,10}"
    }

    fn hello() -> impl Strategy<Value = Hello> {
        (
            any::<u64>(),
            name(),
            prop::collection::vec(name(), 0..3),
            prop::collection::btree_map(name(), name(), 0..3),
            (name(), name(), prop::option::of(name())),
        )
            .prop_map(
                |(protocol, worker, ops, versions, (kind, dname, uuid))| Hello {
                    protocol,
                    worker,
                    ops,
                    versions,
                    device: Device {
                        kind,
                        name: dname,
                        uuid,
                    },
                },
            )
    }

    fn outcome() -> impl Strategy<Value = JobOutcome> {
        let output = (
            name(),
            name(),
            prop::option::of(any::<u64>()),
            prop::option::of(name()),
        )
            .prop_map(|(file, digest, size, media_type)| ReportedOutput {
                file,
                digest,
                size,
                media_type,
            });
        let metrics = prop_oneof![
            Just(Value::Null),
            prop::collection::btree_map(name(), json_value(), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ];
        (
            name(),
            prop::sample::select(vec![
                ResultStatus::Succeeded,
                ResultStatus::Failed,
                ResultStatus::Cancelled,
            ]),
            prop::collection::btree_map(name(), output, 0..4),
            metrics,
            prop::option::of(name()),
        )
            .prop_map(|(id, status, outputs, metrics, message)| JobOutcome {
                id,
                status,
                outputs,
                metrics,
                message,
            })
    }

    fn status_str(s: ResultStatus) -> &'static str {
        match s {
            ResultStatus::Succeeded => "succeeded",
            ResultStatus::Failed => "failed",
            ResultStatus::Cancelled => "cancelled",
        }
    }

    /// A worker's line for `m`, written the way PROTOCOL.md describes it.
    fn encode(m: &FromWorker) -> Vec<u8> {
        let v = match m {
            FromWorker::Hello(h) => {
                let mut v = serde_json::to_value(h).expect("serializes");
                v["type"] = json!("hello");
                v
            }
            FromWorker::Progress { id, message } => {
                json!({"type": "progress", "id": id, "message": message})
            }
            FromWorker::Result(r) => {
                let outputs: serde_json::Map<String, Value> = r
                    .outputs
                    .iter()
                    .map(|(k, o)| {
                        (
                            k.clone(),
                            json!({"file": o.file, "digest": o.digest, "size": o.size, "media_type": o.media_type}),
                        )
                    })
                    .collect();
                json!({"type": "result", "id": r.id, "status": status_str(r.status),
                       "outputs": outputs, "metrics": r.metrics, "message": r.message})
            }
        };
        serde_json::to_vec(&v).expect("serializes")
    }

    fn message() -> impl Strategy<Value = FromWorker> {
        prop_oneof![
            hello().prop_map(FromWorker::Hello),
            (name(), prop::option::of(name()))
                .prop_map(|(id, message)| FromWorker::Progress { id, message }),
            outcome().prop_map(FromWorker::Result),
        ]
    }

    proptest! {
        #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]

        #[test]
        fn no_line_panics_and_every_refusal_names_its_reason(bytes in line()) {
            if let Err(e) = parse_line(&bytes) {
                prop_assert!(
                    REASONS.iter().any(|r| e.reason.starts_with(r)),
                    "unnamed reason {:?}", e.reason
                );
                prop_assert_eq!(&e.line, &quote_line(&bytes));
                // Escapes may grow a character to `\u{10ffff}`; the quote stays bounded.
                prop_assert!(e.line.chars().count() <= QUOTE_CHARS_MAX * 10 + 3, "{}", e.line.len());
                prop_assert!(!e.line.contains('\n'));
            }
        }

        #[test]
        fn well_formed_messages_round_trip(m in message()) {
            let bytes = encode(&m);
            prop_assert_eq!(parse_line(&bytes).map_err(|e| e.to_string()), Ok(m));
        }
    }
}
