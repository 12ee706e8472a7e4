//! Linking: raw steps → steps with resolved inputs and dependencies, exit
//! handlers wired after every regular step, in topological order. Runs as
//! named phases: `resolve_inputs`, `check_condition`, `resolve_after`,
//! `wire_exit_handlers`, `order` and `assemble`.
//!
//! Invariant: the steps it returns are ordered so that every dependency
//! comes before its dependant (ties by declaration order), and a cycle is
//! reported once, naming its steps in order.
//! Boundary: pure; works on the validator's raw steps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use super::model::{EXPANDED_EDGES_MAX, InputRef, Step};
use super::step::RawStep;
use super::toml::Validator;

/// What the phases look steps up in: the raw steps in declaration order and
/// their indices by name.
struct Declared<'r, 'a, 'i> {
    raw: &'r [RawStep<'a, 'i>],
    index: HashMap<&'a str, usize>,
}

impl Validator {
    /// Resolves references between steps, checks for cycles and orders the
    /// steps topologically (ties broken by declaration order).
    pub(super) fn link(
        &mut self,
        raw: Vec<RawStep<'_, '_>>,
        sources: &BTreeMap<String, PathBuf>,
        params: &BTreeMap<String, String>,
    ) -> Option<Vec<Step>> {
        let declared = Declared {
            raw: &raw,
            index: raw.iter().enumerate().map(|(i, s)| (s.name, i)).collect(),
        };
        let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); raw.len()];
        let mut inputs: Vec<BTreeMap<String, InputRef>> = Vec::with_capacity(raw.len());
        for (i, step) in raw.iter().enumerate() {
            inputs.push(self.resolve_inputs(&declared, i, sources, &mut deps[i]));
            if let Some((_, expr, span)) = &step.when {
                self.check_condition(&declared, i, expr, span, params, &mut deps[i]);
            }
            self.resolve_after(&declared, i, &mut deps[i]);
        }
        self.wire_exit_handlers(&raw, &mut deps)?;
        let order = self.order(&raw, &deps);
        if !self.errors.is_empty() {
            return None;
        }
        assemble(raw, &deps, &inputs, &order)
    }

    /// Phase 1: a step's `inputs`, each `sources.NAME`, `STEP.OUTPUT` or
    /// `STEP[*].OUTPUT`; a producer becomes a dependency.
    fn resolve_inputs(
        &mut self,
        declared: &Declared<'_, '_, '_>,
        i: usize,
        sources: &BTreeMap<String, PathBuf>,
        deps: &mut BTreeSet<usize>,
    ) -> BTreeMap<String, InputRef> {
        let (raw, index) = (declared.raw, &declared.index);
        let step = &raw[i];
        let mut inputs = BTreeMap::new();
        for (input, span, reference) in &step.inputs {
            let Some((head, tail)) = reference.split_once('.') else {
                self.error(
                    span,
                    format!(
                        "step `{}` input `{input}`: reference {reference:?} must be `sources.NAME` or `STEP.OUTPUT`",
                        step.name
                    ),
                );
                continue;
            };
            if head == "sources" {
                if sources.contains_key(tail) {
                    inputs.insert(input.clone(), InputRef::Source(tail.to_string()));
                } else if !self
                    .errors
                    .iter()
                    .any(|e| e.message.starts_with(&format!("source `{tail}`")))
                {
                    self.error(
                        span,
                        format!(
                            "step `{}` input `{input}`: unknown source `{tail}`",
                            step.name
                        ),
                    );
                }
                continue;
            }
            let (head, collection) = match head.strip_suffix("[*]") {
                Some(h) => (h, true),
                None => (head, false),
            };
            let Some(&producer) = index.get(head) else {
                self.error(
                    span,
                    format!(
                        "step `{}` input `{input}`: unknown step `{head}` in {reference:?}",
                        step.name
                    ),
                );
                continue;
            };
            if producer == i {
                self.error(
                    span,
                    format!(
                        "step `{}` input `{input}` consumes its own output `{tail}`",
                        step.name
                    ),
                );
                continue;
            }
            if !raw[producer].outputs.iter().any(|o| o == tail) {
                self.error(
                    span,
                    format!(
                        "step `{}` input `{input}`: step `{head}` has no output `{tail}`; its outputs: {}",
                        step.name,
                        if raw[producer].outputs.is_empty() {
                            "none".to_string()
                        } else {
                            raw[producer].outputs.join(", ")
                        }
                    ),
                );
                continue;
            }
            deps.insert(producer);
            let r = if collection {
                InputRef::Collection {
                    step: producer,
                    output: tail.to_string(),
                }
            } else {
                InputRef::Step {
                    step: producer,
                    output: tail.to_string(),
                }
            };
            inputs.insert(input.clone(), r);
        }
        inputs
    }

    /// Phase 2: the params and steps a `when` condition reads; a step it
    /// reads becomes a dependency.
    fn check_condition(
        &mut self,
        declared: &Declared<'_, '_, '_>,
        i: usize,
        expr: &crate::expr::Expr,
        span: &std::ops::Range<usize>,
        params: &BTreeMap<String, String>,
        deps: &mut BTreeSet<usize>,
    ) {
        let (raw, index) = (declared.raw, &declared.index);
        let step = &raw[i];
        for r in expr.refs() {
            use crate::expr::Ref;
            match r {
                Ref::Param(p) if !params.contains_key(p) => self.error(
                    span,
                    format!("step `{}` when: unknown param `{p}`", step.name),
                ),
                Ref::Param(_) => {}
                Ref::Output {
                    step: other,
                    output,
                    ..
                } if index
                    .get(other.as_str())
                    .is_some_and(|&j| !raw[j].outputs.iter().any(|o| o == output)) =>
                {
                    self.error(
                        span,
                        format!(
                            "step `{}` when: step `{other}` has no output `{output}`",
                            step.name
                        ),
                    );
                }
                Ref::Metric { step: other, .. }
                | Ref::Status(other)
                | Ref::Output { step: other, .. } => match index.get(other.as_str()) {
                    Some(&j) if j == i => self.error(
                        span,
                        format!(
                            "step `{}` when: a condition cannot read its own step",
                            step.name
                        ),
                    ),
                    Some(&j) => {
                        deps.insert(j);
                    }
                    None => self.error(
                        span,
                        format!("step `{}` when: unknown step `{other}` in `{r}`", step.name),
                    ),
                },
            }
        }
    }

    /// Phase 3: `after = [...]`, each a dependency.
    fn resolve_after(
        &mut self,
        declared: &Declared<'_, '_, '_>,
        i: usize,
        deps: &mut BTreeSet<usize>,
    ) {
        let step = &declared.raw[i];
        for (after, span) in &step.after {
            match declared.index.get(after.as_str()) {
                Some(&j) if j == i => {
                    self.error(
                        span,
                        format!("step `{}` cannot run after itself", step.name),
                    );
                }
                Some(&j) => {
                    deps.insert(j);
                }
                None => self.error(
                    span,
                    format!("step `{}` after: unknown step `{after}`", step.name),
                ),
            }
        }
    }

    /// Phase 4: nothing may wait for an exit handler, and each exit handler
    /// waits for every regular step (the product bounded first).
    fn wire_exit_handlers(
        &mut self,
        raw: &[RawStep<'_, '_>],
        deps: &mut [BTreeSet<usize>],
    ) -> Option<()> {
        // Exit handlers wait for every regular step, and nothing may wait
        // for an exit handler.
        let handlers: Vec<bool> = raw.iter().map(|s| s.finally.is_some()).collect();
        for (i, step) in raw.iter().enumerate() {
            for &j in &deps[i] {
                if handlers[j] {
                    self.error(
                        &step.span,
                        format!(
                            "step `{}` depends on exit handler `{}`; exit handlers run last",
                            step.name, raw[j].name
                        ),
                    );
                }
            }
        }
        // Each exit handler waits for every regular step: bound the
        // product before building it.
        let handler_count = handlers.iter().filter(|h| **h).count();
        let handler_edges = handler_count.saturating_mul(raw.len() - handler_count);
        if handler_edges > EXPANDED_EDGES_MAX {
            let first = raw
                .iter()
                .find(|s| s.finally.is_some())
                .map(|s| s.span.clone());
            self.error(
                first.as_ref().unwrap_or(&(0..0)),
                format!(
                    "{handler_count} exit handlers each waiting for {} steps make {handler_edges} dependencies; the limit is {EXPANDED_EDGES_MAX}",
                    raw.len() - handler_count
                ),
            );
            return None;
        }
        for i in 0..raw.len() {
            if handlers[i] {
                deps[i].extend((0..raw.len()).filter(|&j| !handlers[j]));
            }
        }
        Some(())
    }

    /// Phase 5: Kahn's algorithm; a cycle is reported at its first step.
    /// Returns the declaration indices in topological order (shorter than
    /// the steps when there is a cycle).
    fn order(&mut self, raw: &[RawStep<'_, '_>], deps: &[BTreeSet<usize>]) -> Vec<usize> {
        // Kahn's algorithm, picking the lowest declaration index first so the
        // order is stable.
        let n = raw.len();
        let mut indegree: Vec<usize> = deps.iter().map(BTreeSet::len).collect();
        let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, d) in deps.iter().enumerate() {
            for &j in d {
                dependants[j].push(i);
            }
        }
        let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &k in &dependants[i] {
                indegree[k] -= 1;
                if indegree[k] == 0 {
                    ready.insert(k);
                }
            }
        }
        if order.len() < n {
            let cycle = find_cycle(deps, &indegree);
            let names: Vec<&str> = cycle.iter().map(|&i| raw[i].name).collect();
            let first = cycle[0];
            self.error(
                &raw[first].span,
                format!(
                    "dependency cycle: {} -> {}",
                    names.join(" -> "),
                    raw[first].name
                ),
            );
        }
        order
    }
}

/// Phase 6: the validated steps in topological order, indices remapped.
fn assemble(
    raw: Vec<RawStep<'_, '_>>,
    deps: &[BTreeSet<usize>],
    inputs: &[BTreeMap<String, InputRef>],
    order: &[usize],
) -> Option<Vec<Step>> {
    let n = raw.len();
    let mut position = vec![0; n];
    for (pos, &i) in order.iter().enumerate() {
        position[i] = pos;
    }
    let mut steps: Vec<Option<Step>> = vec![None; n];
    for (i, step) in raw.into_iter().enumerate() {
        let remap = |r: &InputRef| match r {
            InputRef::Source(s) => InputRef::Source(s.clone()),
            InputRef::Step { step, output } => InputRef::Step {
                step: position[*step],
                output: output.clone(),
            },
            InputRef::Collection { step, output } => InputRef::Collection {
                step: position[*step],
                output: output.clone(),
            },
        };
        let mut step_deps: Vec<usize> = deps[i].iter().map(|&j| position[j]).collect();
        step_deps.sort_unstable();
        steps[position[i]] = Some(Step {
            name: step.name.to_string(),
            component: step.component?,
            inputs: inputs[i]
                .iter()
                .map(|(k, r)| (k.clone(), remap(r)))
                .collect(),
            params: step.params,
            param_templates: step.param_templates,
            sweep: BTreeMap::new(),
            outputs: step.outputs,
            limits: step.limits,
            retries: step.retries,
            cache: step.cache,
            deps: step_deps,
            when: step.when.map(|(text, e, _)| (text, e)),
            finally: step.finally,
            gpu_worker_template: step.gpu.as_ref().map(|(_, raw)| raw.clone()),
            gpu: step.gpu.map(|(grant, _)| grant),
            executor: step.executor,
        });
    }
    steps.into_iter().collect()
}

/// A cycle among the nodes Kahn's algorithm could not order.
pub(super) fn find_cycle(deps: &[BTreeSet<usize>], indegree: &[usize]) -> Vec<usize> {
    let stuck: BTreeSet<usize> = (0..deps.len()).filter(|&i| indegree[i] > 0).collect();
    let start = *stuck.first().expect("a stuck node when a cycle exists");
    // Walk dependencies inside the stuck set until a node repeats.
    let mut path = vec![start];
    let mut seen: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut node = start;
    loop {
        let next = *deps[node]
            .iter()
            .find(|d| stuck.contains(d))
            .expect("every stuck node waits on a stuck node");
        if let Some(&at) = seen.get(&next) {
            let mut cycle: Vec<usize> = path[at..].to_vec();
            cycle.reverse();
            // Rotate so the cycle starts at its lowest index (stable messages).
            let min_pos = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, n)| **n)
                .map(|(p, _)| p)
                .unwrap_or(0);
            cycle.rotate_left(min_pos);
            return cycle;
        }
        seen.insert(next, path.len());
        path.push(next);
        node = next;
    }
}
