//! Artifact lineage: for a digest, which runs and steps produced it, from
//! which inputs (transitively, back to the runs' sources), and which runs
//! and steps consumed it — from a deployed model back to the data version
//! that trained it.
//!
//! Invariant: every fact comes from a run's record whose hash chain holds
//! and whose seal the home's trusted key signed
//! ([`verify::sealed_events`](crate::verify::sealed_events)); a run whose
//! record does not hold is reported as skipped, never used. Content
//! addressing makes the derivation a DAG (an output's digest cannot be an
//! input of its own production), and the walk visits each digest once.
//! Boundary: reads `runs/`; writes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use crate::artifact::OutputRef;
use crate::digest::Digest;
use crate::run::RunId;

/// What one finished run's sealed record says about artifacts.
#[derive(Clone, Debug, PartialEq)]
pub struct RunFacts {
    /// The run.
    pub run: RunId,
    /// Its pipeline's name.
    pub pipeline: String,
    /// When it started (RFC 3339, from its first record event): runs are
    /// ordered by it (run ids of one second do not say which came first).
    pub started_at: String,
    /// Its sources, by name.
    pub sources: BTreeMap<String, OutputRef>,
    /// Its steps, in record order.
    pub steps: Vec<StepFacts>,
}

/// One step of a run, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct StepFacts {
    /// The step.
    pub name: String,
    /// `succeeded`, `failed`, `skipped`, ...
    pub status: String,
    /// Whether its outputs came from the step cache.
    pub cached: bool,
    /// The component that ran.
    pub component: Option<Digest>,
    /// The inputs it read, by input name (its last attempt's).
    pub inputs: BTreeMap<String, Digest>,
    /// Its outputs, by name.
    pub outputs: BTreeMap<String, OutputRef>,
}

/// Reads run `run`'s facts from its sealed record.
pub fn run_facts(home: &Path, run: &RunId) -> Result<RunFacts, String> {
    let events = crate::verify::sealed_events(home, run).map_err(|e| e.to_string())?;
    let mut facts = RunFacts {
        run: run.clone(),
        pipeline: String::new(),
        started_at: events
            .first()
            .and_then(|e| e["at"].as_str())
            .unwrap_or_default()
            .to_string(),
        sources: BTreeMap::new(),
        steps: Vec::new(),
    };
    let mut inputs: HashMap<String, BTreeMap<String, Digest>> = HashMap::new();
    let refs = |v: &Value| -> Result<BTreeMap<String, OutputRef>, String> {
        if v.is_null() {
            return Ok(BTreeMap::new());
        }
        serde_json::from_value(v.clone()).map_err(|e| format!("record of run {run}: {e}"))
    };
    for e in &events {
        match e["type"].as_str() {
            Some("run-started") => {
                facts.pipeline = e["pipeline"].as_str().unwrap_or_default().to_string();
                facts.sources = refs(&e["sources"])?;
            }
            Some("step-started") => {
                let step = e["step"].as_str().unwrap_or_default().to_string();
                let read = refs(&e["inputs"])?
                    .into_iter()
                    .map(|(name, r)| (name, r.digest))
                    .collect();
                inputs.insert(step, read);
            }
            Some("step-finished") => {
                let name = e["step"].as_str().unwrap_or_default().to_string();
                facts.steps.push(StepFacts {
                    inputs: inputs.remove(&name).unwrap_or_default(),
                    status: e["status"].as_str().unwrap_or_default().to_string(),
                    cached: e["cached"].as_bool().unwrap_or(false),
                    component: e["component"].as_str().and_then(|d| d.parse().ok()),
                    outputs: refs(&e["outputs"])?,
                    name,
                });
            }
            _ => {}
        }
    }
    Ok(facts)
}

/// Finished runs' facts, read once each (a finished run's record never
/// changes; `verify` is the check of a record tampered with later).
#[derive(Default)]
pub struct FactsCache {
    runs: Mutex<HashMap<RunId, Arc<RunFacts>>>,
}

impl FactsCache {
    /// The facts of each of `runs` in `home` (oldest first, by start
    /// time), and the runs that could not be used with why.
    pub fn facts(&self, home: &Path, runs: &[RunId]) -> (Vec<Arc<RunFacts>>, Vec<Skipped>) {
        let mut ordered: Vec<&RunId> = runs.iter().collect();
        ordered.sort();
        let mut facts = Vec::new();
        let mut skipped = Vec::new();
        for run in ordered {
            if let Some(f) = self.runs.lock().unwrap_or_else(|p| p.into_inner()).get(run) {
                facts.push(f.clone());
                continue;
            }
            // Unfinished runs have no seal yet: not facts, not skipped.
            if !home
                .join("runs")
                .join(run.as_str())
                .join("summary.json")
                .is_file()
            {
                continue;
            }
            match run_facts(home, run) {
                Ok(f) => {
                    let f = Arc::new(f);
                    self.runs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(run.clone(), f.clone());
                    facts.push(f);
                }
                Err(reason) => skipped.push(Skipped {
                    run: run.clone(),
                    reason,
                }),
            }
        }
        facts.sort_by(|a, b| (&a.started_at, &a.run).cmp(&(&b.started_at, &b.run)));
        (facts, skipped)
    }
}

/// A run left out of the lineage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Skipped {
    /// The run.
    pub run: RunId,
    /// Why its record cannot be trusted.
    pub reason: String,
}

/// Where an artifact was made.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Production {
    /// The run.
    pub run: RunId,
    /// Its pipeline.
    pub pipeline: String,
    /// The step.
    pub step: String,
    /// The output's name.
    pub output: String,
    /// Whether the step was a cache hit (it did not compute the bytes then).
    pub cached: bool,
    /// The component that made it.
    pub component: Option<Digest>,
}

/// Where an artifact was read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Consumption {
    /// The run.
    pub run: RunId,
    /// Its pipeline.
    pub pipeline: String,
    /// The step.
    pub step: String,
    /// The input's name.
    pub input: String,
}

/// An artifact that entered a run as a source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceUse {
    /// The run.
    pub run: RunId,
    /// Its pipeline.
    pub pipeline: String,
    /// The source's name in the spec.
    pub source: String,
}

/// How one artifact of the derivation came to be.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Computed by a step from `inputs` (its first execution: the oldest
    /// run where it was not a cache hit, else the oldest production).
    Step {
        /// Where.
        #[serde(flatten)]
        made: Production,
        /// What the step read, by input name.
        inputs: BTreeMap<String, Digest>,
    },
    /// A run's source (data from outside the engine).
    Source(SourceUse),
    /// No run in scope made or brought it.
    Unknown,
}

/// The lineage of one artifact.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lineage {
    /// The artifact.
    pub digest: Digest,
    /// Every production of it, oldest run first.
    pub produced_by: Vec<Production>,
    /// Every run that brought it in as a source.
    pub source_of: Vec<SourceUse>,
    /// Every step that read it.
    pub consumed_by: Vec<Consumption>,
    /// Its derivation: the artifact itself and everything it was made
    /// from, transitively, each with its origin.
    pub upstream: BTreeMap<Digest, Origin>,
    /// The sources the derivation reaches.
    pub roots: BTreeSet<Digest>,
    /// Runs in scope whose records could not be used.
    pub skipped: Vec<Skipped>,
}

/// The lineage of `digest` among `runs` (oldest first). One pass indexes
/// every production and source use by digest, so the derivation costs
/// what the runs hold, not that times its length.
pub fn lineage(digest: &Digest, runs: &[Arc<RunFacts>], skipped: Vec<Skipped>) -> Lineage {
    // Per digest, in run order then record order: (run, step, output) of
    // each succeeded step that output it, (run, source) of each run that
    // brought it in.
    let mut made: HashMap<&Digest, Vec<(&RunFacts, &StepFacts, &String)>> = HashMap::new();
    let mut brought: HashMap<&Digest, Vec<(&RunFacts, &String)>> = HashMap::new();
    for r in runs {
        for s in r.steps.iter().filter(|s| s.status == "succeeded") {
            for (name, o) in &s.outputs {
                made.entry(&o.digest).or_default().push((r, s, name));
            }
        }
        for (name, s) in &r.sources {
            brought.entry(&s.digest).or_default().push((r, name));
        }
    }
    let productions = |d: &Digest| -> Vec<(Production, &StepFacts)> {
        made.get(d)
            .into_iter()
            .flatten()
            .map(|&(r, s, name)| {
                (
                    Production {
                        run: r.run.clone(),
                        pipeline: r.pipeline.clone(),
                        step: s.name.clone(),
                        output: name.clone(),
                        cached: s.cached,
                        component: s.component,
                    },
                    s,
                )
            })
            .collect()
    };
    let sources = |d: &Digest| -> Vec<SourceUse> {
        brought
            .get(d)
            .into_iter()
            .flatten()
            .map(|&(r, name)| SourceUse {
                run: r.run.clone(),
                pipeline: r.pipeline.clone(),
                source: name.clone(),
            })
            .collect()
    };
    let consumed_by = runs
        .iter()
        .flat_map(|r| {
            r.steps.iter().flat_map(move |s| {
                s.inputs
                    .iter()
                    .filter(move |(_, d)| *d == digest)
                    .map(move |(name, _)| Consumption {
                        run: r.run.clone(),
                        pipeline: r.pipeline.clone(),
                        step: s.name.clone(),
                        input: name.clone(),
                    })
            })
        })
        .collect();
    let mut upstream = BTreeMap::new();
    let mut roots = BTreeSet::new();
    let mut queue = VecDeque::from([*digest]);
    while let Some(d) = queue.pop_front() {
        if upstream.contains_key(&d) {
            continue;
        }
        let made = productions(&d);
        let first = made
            .iter()
            .find(|(p, _)| !p.cached)
            .or_else(|| made.first());
        let origin = match first {
            Some((p, step)) => {
                queue.extend(step.inputs.values().copied());
                Origin::Step {
                    made: p.clone(),
                    inputs: step.inputs.clone(),
                }
            }
            None => match sources(&d).into_iter().next() {
                Some(s) => {
                    roots.insert(d);
                    Origin::Source(s)
                }
                None => Origin::Unknown,
            },
        };
        upstream.insert(d, origin);
    }
    Lineage {
        digest: *digest,
        produced_by: productions(digest).into_iter().map(|(p, _)| p).collect(),
        source_of: sources(digest),
        consumed_by,
        upstream,
        roots,
        skipped,
    }
}

/// The derivation as an indented tree, the artifact first, each input
/// under what read it; a digest met again is marked, not repeated.
pub fn render(l: &Lineage) -> String {
    let mut out = format!("artifact {}\n", l.digest);
    let runs = |n: usize| if n == 1 { "run" } else { "runs" };
    let produced: BTreeSet<&RunId> = l.produced_by.iter().map(|p| &p.run).collect();
    if !l.produced_by.is_empty() {
        out += &format!(
            "  produced in {} {}; consumed by {} step(s); a source of {} {}\n",
            produced.len(),
            runs(produced.len()),
            l.consumed_by.len(),
            l.source_of.len(),
            runs(l.source_of.len())
        );
    }
    for c in &l.consumed_by {
        out += &format!(
            "  read by {}.{} in run {} ({})\n",
            c.step, c.input, c.run, c.pipeline
        );
    }
    out += "derivation:\n";
    let mut seen = BTreeSet::new();
    tree(l, &l.digest, None, 1, &mut seen, &mut out);
    for s in &l.skipped {
        out += &format!("skipped run {}: {}\n", s.run, s.reason);
    }
    out
}

fn tree(
    l: &Lineage,
    d: &Digest,
    input: Option<&str>,
    depth: usize,
    seen: &mut BTreeSet<Digest>,
    out: &mut String,
) {
    let pad = "  ".repeat(depth);
    let label = input.map_or(String::new(), |i| format!("{i} = "));
    let again = !seen.insert(*d);
    let what = match l.upstream.get(d) {
        Some(Origin::Step { made, .. }) => format!(
            "output `{}` of step `{}` in run {} ({})",
            made.output, made.step, made.run, made.pipeline
        ),
        Some(Origin::Source(s)) => {
            format!("source `{}` of run {} ({})", s.source, s.run, s.pipeline)
        }
        Some(Origin::Unknown) | None => "made by no run in scope".to_string(),
    };
    if again {
        *out += &format!("{pad}{label}{d} (see above)\n");
        return;
    }
    *out += &format!("{pad}{label}{d}: {what}\n");
    if let Some(Origin::Step { inputs, .. }) = l.upstream.get(d) {
        for (name, input) in inputs {
            tree(l, input, Some(name), depth + 1, seen, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(s: &str) -> OutputRef {
        OutputRef {
            digest: Digest::of(s.as_bytes()),
            size: s.len() as u64,
            media_type: "text/plain".into(),
        }
    }

    fn step(
        name: &str,
        cached: bool,
        inputs: &[(&str, &str)],
        outputs: &[(&str, &str)],
    ) -> StepFacts {
        StepFacts {
            name: name.into(),
            status: "succeeded".into(),
            cached,
            component: Some(Digest::of(name.as_bytes())),
            inputs: inputs
                .iter()
                .map(|(n, b)| (n.to_string(), Digest::of(b.as_bytes())))
                .collect(),
            outputs: outputs
                .iter()
                .map(|(n, b)| (n.to_string(), out(b)))
                .collect(),
        }
    }

    fn run(id: &str, steps: Vec<StepFacts>) -> Arc<RunFacts> {
        Arc::new(RunFacts {
            run: id.parse().unwrap(),
            pipeline: "p".into(),
            started_at: String::new(),
            sources: [("raw".to_string(), out("csv"))].into(),
            steps,
        })
    }

    #[test]
    fn a_model_traces_back_to_its_source_through_every_step_and_to_its_first_computation() {
        let first = run(
            "20261201-100000-aaaaaaaa",
            vec![
                step("ingest", false, &[("raw", "csv")], &[("table", "table")]),
                step("train", false, &[("data", "table")], &[("model", "model")]),
                step(
                    "evaluate",
                    false,
                    &[("model", "model"), ("data", "table")],
                    &[("report", "report")],
                ),
            ],
        );
        // A later run: everything cached, one more consumer.
        let second = run(
            "20261202-100000-bbbbbbbb",
            vec![
                step("ingest", true, &[("raw", "csv")], &[("table", "table")]),
                step("train", true, &[("data", "table")], &[("model", "model")]),
                step(
                    "push",
                    false,
                    &[("model", "model")],
                    &[("receipt", "receipt")],
                ),
            ],
        );
        let model = Digest::of(b"model");
        let l = lineage(&model, &[first.clone(), second], Vec::new());
        assert_eq!(l.produced_by.len(), 2);
        assert_eq!(
            l.consumed_by
                .iter()
                .map(|c| c.step.as_str())
                .collect::<Vec<_>>(),
            ["evaluate", "push"]
        );
        let csv = Digest::of(b"csv");
        assert_eq!(l.roots, BTreeSet::from([csv]));
        assert_eq!(l.upstream.len(), 3);
        match &l.upstream[&model] {
            Origin::Step { made, inputs } => {
                // The run that computed it, not the one that found it cached.
                assert_eq!(made.run, first.run);
                assert!(!made.cached);
                assert_eq!(inputs["data"], Digest::of(b"table"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&l.upstream[&csv], Origin::Source(s) if s.source == "raw"));
        let text = render(&l);
        assert!(text.contains("derivation:\n  sha256:"), "{text}");
        assert!(text.contains("    data = sha256:"), "{text}");
        assert!(text.contains("      raw = sha256:"), "{text}");
        assert!(
            text.contains("source `raw` of run 20261201-100000-aaaaaaaa (p)"),
            "{text}"
        );
        // Something no run made.
        let nothing = lineage(&Digest::of(b"stranger"), &[first], Vec::new());
        assert!(nothing.produced_by.is_empty());
        assert_eq!(
            nothing.upstream.values().collect::<Vec<_>>(),
            [&Origin::Unknown]
        );
    }
}
