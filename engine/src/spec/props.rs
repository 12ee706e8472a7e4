//! Property tests: mutations of a valid spec with a sweep (characters
//! inserted and deleted, TOML fragments spliced in, random keys, values and
//! small sweep axes appended) never panic the validator, and either give a
//! pipeline whose invariants hold or errors that each carry a position
//! inside the text. Sweeps stay small (≤ 50 combinations) so the test does
//! not depend on the expansion bound. `PROPTEST_CASES=N` runs more cases.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

const BASE: &str = r#"name = "p"
seed = 3
[params]
lr = "0.1"
epochs = 2
[sweep]
lr = [0.1, 0.2]
epochs = [1, 2]
[sources]
data = "c.wasm"
[steps.prep]
component = "c.wasm"
inputs = { d = "sources.data" }
outputs = ["out"]
limits = { memory_mib = 64, fuel = 1000000 }
[steps.train]
component = "c.wasm"
inputs = { x = "prep.out" }
params = { lr = "${params.lr}", e = "${params.epochs}" }
outputs = ["model"]
retries = 1
when = "params.lr >= 0.1"
[steps.pick]
component = "c.wasm"
inputs = { models = "train[*].model" }
outputs = ["best"]
when = "prep.status == 'succeeded' and not (prep.metrics.loss > 1)"
"#;

/// Fragments that steer mutations toward the validator's corners.
const FRAGMENTS: &[&str] = &[
    "\n",
    "[",
    "]",
    "{",
    "}",
    "=",
    "\"",
    "'",
    ",",
    ".",
    "#",
    "'''",
    "\"\"\"",
    "[steps.x]\ncomponent = \"c.wasm\"\n",
    "[steps.train]\n",
    "[sweep]\n",
    "[params]\n",
    "inputs = { y = \"nope.out\" }\n",
    "after = [\"pick\"]\n",
    "when = \"(\"\n",
    "limits = { fuel = 0 }\n",
    "limits = { memory_mib = 99999999 }\n",
    "outputs = [\"out\", \"out\"]\n",
    "gpu = { worker = \"cpu\" }\n",
    "${params.nope}",
    "${",
    "train[*]",
    "train[7].model",
    "finally = \"always\"\n",
    "cache = false\n",
    "component = \"../../etc/passwd\"\n",
    "seed = -1\n",
    "\u{0}",
    "é",
    "\r\n",
    "\t",
    "retries = 1000\n",
    "[schedule]\ncron = \"* * *\"\n",
    "x = 1979-05-27T07:32:00Z\n",
];

#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Fragment(usize, &'static str),
    /// A `key = value` line appended under the last table.
    KeyValue(String, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), ".{1,4}").prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), 1usize..20).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), prop::sample::select(FRAGMENTS)).prop_map(|(at, f)| Edit::Fragment(at, f)),
        (
            "[a-z_]{1,8}",
            prop_oneof![
                Just("1".to_string()),
                Just("\"c.wasm\"".to_string()),
                Just("[1, \"a\"]".to_string()),
                Just("{ a = 1 }".to_string()),
                "\"[^\"\\\\]{0,10}\"".prop_map(|s| s),
            ]
        )
            .prop_map(|(k, v)| Edit::KeyValue(k, v)),
    ]
}

fn apply(text: &str, edits: &[Edit], axis: &Option<(String, Vec<i8>)>) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Insert(i, s) => {
                let p = at(*i, chars.len());
                chars.splice(p..p, s.chars());
            }
            Edit::Delete(i, n) => {
                let p = at(*i, chars.len());
                let end = (p + n).min(chars.len());
                chars.drain(p..end);
            }
            Edit::Fragment(i, f) => {
                let p = at(*i, chars.len());
                chars.splice(p..p, f.chars());
            }
            Edit::KeyValue(k, v) => chars.extend(format!("\n{k} = {v}\n").chars()),
        }
    }
    let mut out: String = chars.into_iter().collect();
    if let Some((name, values)) = axis {
        // One extra axis of ≤ 3 values (≤ 4 × 3 = 12 combinations, or
        // a few more when edits lengthen the lists), added to the
        // existing table when it is still there: a second `[sweep]`
        // header would only be a TOML error.
        let line: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        if let Some(p) = out.find("[sweep]\n") {
            out.insert_str(p + 8, &format!("{name} = [{}]\n", line.join(", ")));
        }
    }
    out
}

fn dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("a temp dir");
        std::fs::write(d.path().join("c.wasm"), b"\0asm").expect("write c.wasm");
        d
    })
    .path()
}

fn check(text: &str) -> Result<(), TestCaseError> {
    let path = dir().join("p.toml");
    let lines = text.split('\n').collect::<Vec<_>>();
    match parse(&path, text, &[]) {
        Ok(p) => {
            prop_assert!(
                p.sweep.len() <= SWEEP_COMBINATIONS_MAX,
                "{} combinations",
                p.sweep.len()
            );
            prop_assert!(p.steps.len() <= STEPS_MAX);
            let mut names = BTreeSet::new();
            for (i, s) in p.steps.iter().enumerate() {
                prop_assert!(names.insert(s.name.clone()), "duplicate step {}", s.name);
                prop_assert!(
                    s.deps.iter().all(|d| *d < i),
                    "{} not topologically sorted",
                    s.name
                );
            }
        }
        Err(errors) => {
            prop_assert!(!errors.is_empty());
            for e in &errors {
                prop_assert_eq!(&e.file, &path);
                prop_assert!(!e.message.is_empty());
                prop_assert!(e.line >= 1 && e.line <= lines.len(), "{e:?}\n{text}");
                let width = lines[e.line - 1].chars().count();
                prop_assert!(
                    e.column >= 1 && e.column <= width + 1,
                    "{e:?} (line width {width})\n{text}"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: 192, failure_persistence: None, ..Config::default() })]

    #[test]
    fn mutated_specs_validate_or_fail_with_positioned_errors(
        edits in prop::collection::vec(edit(), 0..5),
        axis in prop::option::of(("[a-z]{1,6}", prop::collection::vec(any::<i8>(), 1..=3))),
    ) {
        check(&apply(BASE, &edits, &axis))?;
    }

    #[test]
    fn arbitrary_text_never_panics_the_validator(text in ".{0,400}") {
        check(&text)?;
    }
}

#[test]
fn the_unmutated_spec_is_valid_with_four_combinations() {
    let p = parse(&dir().join("p.toml"), BASE, &[]).expect("valid");
    assert_eq!(p.sweep.len(), 4);
    assert_eq!(
        p.steps
            .iter()
            .filter(|s| s.name.starts_with("train["))
            .count(),
        4
    );
}
