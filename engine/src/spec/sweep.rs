//! `[sweep]`: the grid of param combinations and the fan-out of every
//! step a swept param reaches, one copy per combination (`STEP[k]`), with
//! `STEP[*].OUTPUT` collections wired to every copy.
//!
//! Invariant: the grid's size, and the expansion's steps, edges and param
//! bytes, are computed from counts and refused past [`SWEEP_COMBINATIONS_MAX`],
//! [`STEPS_MAX`], [`EXPANDED_EDGES_MAX`] and [`PARAM_BYTES_MAX`] before
//! anything is cloned.
//! Boundary: pure.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::model::{
    EXPANDED_EDGES_MAX, InputRef, PARAM_BYTES_MAX, STEPS_MAX, SWEEP_COMBINATIONS_MAX, Step,
};
use super::param::{param_refs, resolved_bytes_max, substitute_over};
use super::toml::Validator;

impl Validator {
    /// The sweep grid: every combination of the `[sweep]` axes (`(param,
    /// values, span)` as written) over declared params, in declaration
    /// order; empty without a `[sweep]`. Its size (combinations, then bytes)
    /// is computed from the axes' lengths before any combination is built.
    pub(super) fn grid(
        &mut self,
        raw_sweep: &[(String, Vec<String>, Range<usize>)],
        params: &BTreeMap<String, String>,
    ) -> Vec<BTreeMap<String, String>> {
        // The sweep grid, over declared params, in declaration order. Its
        // size (combinations, then bytes) is computed from the axes'
        // lengths before any combination is built.
        let mut axes: Vec<&(String, Vec<String>, Range<usize>)> = Vec::new();
        for axis in raw_sweep {
            let (key, _, span) = axis;
            if params.contains_key(key) {
                axes.push(axis);
            } else {
                self.error(
                    span,
                    format!("sweep `{key}`: the pipeline declares no param `{key}` to sweep"),
                );
            }
        }
        let combinations = axes
            .iter()
            .fold(1usize, |n, (_, values, _)| n.saturating_mul(values.len()));
        // Every combination holds one value per axis: an axis's values
        // are each repeated `combinations / len` times.
        let grid_bytes = axes.iter().fold(0usize, |total, (_, values, _)| {
            let bytes: usize = values.iter().map(|v| v.len()).sum();
            total.saturating_add((combinations / values.len()).saturating_mul(bytes))
        });
        let mut sweep: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
        let sweep_span = raw_sweep.first().map(|(_, _, span)| span.clone());
        if combinations > SWEEP_COMBINATIONS_MAX {
            let shape: Vec<String> = axes
                .iter()
                .map(|(key, values, _)| format!("`{key}` ({} values)", values.len()))
                .collect();
            self.error(
                sweep_span.as_ref().unwrap_or(&(0..0)),
                format!(
                    "the [sweep] {} has {combinations} combinations; the limit is {SWEEP_COMBINATIONS_MAX}",
                    shape.join(" x ")
                ),
            );
        } else if grid_bytes > PARAM_BYTES_MAX {
            self.error(
                sweep_span.as_ref().unwrap_or(&(0..0)),
                format!(
                    "the [sweep]'s {combinations} combinations hold {grid_bytes} bytes of values; the limit is {PARAM_BYTES_MAX}"
                ),
            );
        } else {
            for (key, values, _) in &axes {
                sweep = sweep
                    .iter()
                    .flat_map(|combo| {
                        values.iter().map(move |v| {
                            let mut c = combo.clone();
                            c.insert(key.clone(), v.clone());
                            c
                        })
                    })
                    .collect();
            }
        }
        if raw_sweep.is_empty() {
            sweep.clear();
        }
        sweep
    }
}

impl Validator {
    /// Fans out every step that a swept param reaches (through its params,
    /// its condition, or an upstream fanned-out step) once per combination,
    /// named `STEP[k]`; steps the sweep does not reach run once. A
    /// `STEP[*].OUTPUT` input becomes one `NAME.<k>` input per combination.
    pub(super) fn expand(
        &mut self,
        steps: Vec<Step>,
        sweep: &[BTreeMap<String, String>],
        params: &BTreeMap<String, String>,
        span: &Range<usize>,
        sweep_span: &Range<usize>,
    ) -> Option<Vec<Step>> {
        let swept: BTreeSet<&str> = sweep
            .first()
            .map(|c| c.keys().map(String::as_str).collect())
            .unwrap_or_default();
        // Does a template change when a swept param does? Read from its
        // references, without resolving it (values may be large).
        let reads_swept = |step: &Step| {
            step.param_templates
                .values()
                .chain(&step.gpu_worker_template)
                .any(|t| param_refs(t).any(|p| swept.contains(p)))
                || step.when.as_ref().is_some_and(|(_, e)| {
                    e.refs().iter().any(
                        |r| matches!(r, crate::expr::Ref::Param(p) if swept.contains(p.as_str())),
                    )
                })
        };
        let mut affected = vec![false; steps.len()];
        for (i, step) in steps.iter().enumerate() {
            if step.finally.is_some() {
                continue;
            }
            let collected: BTreeSet<usize> = step
                .inputs
                .values()
                .filter_map(|r| match r {
                    InputRef::Collection { step, .. } => Some(*step),
                    _ => None,
                })
                .collect();
            affected[i] = reads_swept(step)
                || step
                    .deps
                    .iter()
                    .any(|d| affected[*d] && !collected.contains(d));
        }
        for (i, step) in steps.iter().enumerate() {
            for (name, r) in &step.inputs {
                if let InputRef::Collection { step: p, .. } = r
                    && !affected[*p]
                {
                    self.error(
                        span,
                        format!(
                            "step `{}` input `{name}`: `{}[*]` needs a step fanned out by [sweep], and `{}` is not",
                            step.name, steps[*p].name, steps[*p].name
                        ),
                    );
                }
                if affected[i] && matches!(r, InputRef::Collection { .. }) {
                    self.error(
                        span,
                        format!(
                            "step `{}` input `{name}`: a fanned-out step cannot collect `[*]`",
                            step.name
                        ),
                    );
                }
            }
        }
        if !self.errors.is_empty() {
            return None;
        }
        if sweep.is_empty() {
            return Some(steps);
        }
        // The expansion's size from counts alone, before anything is
        // cloned: steps, edges (inputs + dependencies) and param bytes.
        let copies = |i: usize| if affected[i] { sweep.len() } else { 1 };
        let total_steps = (0..steps.len()).fold(0usize, |n, i| n.saturating_add(copies(i)));
        let fanned = affected.iter().filter(|a| **a).count();
        if total_steps > STEPS_MAX {
            self.error(
                sweep_span,
                format!(
                    "the [sweep]'s {} combinations fan out {fanned} steps into {total_steps} steps; the limit is {STEPS_MAX}",
                    sweep.len()
                ),
            );
            return None;
        }
        let regular_copies = (0..steps.len())
            .filter(|&i| steps[i].finally.is_none())
            .fold(0usize, |n, i| n.saturating_add(copies(i)));
        let value_bytes_max = params
            .values()
            .chain(sweep.iter().flat_map(BTreeMap::values))
            .map(String::len)
            .max()
            .unwrap_or(0);
        let combo_bytes_max = sweep
            .iter()
            .map(|c| c.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>())
            .max()
            .unwrap_or(0);
        let mut edges = 0usize;
        let mut param_bytes = 0usize;
        for (i, step) in steps.iter().enumerate() {
            let inputs = step.inputs.values().fold(0usize, |n, r| match r {
                InputRef::Collection { step: j, .. } => n.saturating_add(copies(*j)),
                _ => n.saturating_add(1),
            });
            let deps = if step.finally.is_some() {
                regular_copies
            } else {
                step.deps
                    .iter()
                    .fold(0usize, |n, &d| n.saturating_add(copies(d)))
            };
            edges = edges.saturating_add(copies(i).saturating_mul(inputs.saturating_add(deps)));
            if affected[i] {
                // Each copy holds its templates, their resolutions and its
                // combination.
                let per_copy = step
                    .param_templates
                    .values()
                    .chain(&step.gpu_worker_template)
                    .fold(combo_bytes_max, |n, t| {
                        n.saturating_add(t.len())
                            .saturating_add(resolved_bytes_max(t, value_bytes_max))
                    });
                param_bytes = param_bytes.saturating_add(copies(i).saturating_mul(per_copy));
            }
        }
        if edges > EXPANDED_EDGES_MAX {
            self.error(
                sweep_span,
                format!(
                    "the [sweep]'s {} combinations expand the pipeline to {edges} inputs and dependencies; the limit is {EXPANDED_EDGES_MAX}",
                    sweep.len()
                ),
            );
            return None;
        }
        if self.param_bytes.saturating_add(param_bytes) > PARAM_BYTES_MAX {
            self.error(
                sweep_span,
                format!(
                    "the [sweep]'s {} combinations expand the params to more than {PARAM_BYTES_MAX} bytes",
                    sweep.len()
                ),
            );
            return None;
        }
        // New indices: one per unaffected step, one per combination otherwise.
        let mut map: Vec<Vec<usize>> = Vec::with_capacity(steps.len());
        let mut next = 0;
        for a in &affected {
            let n = if *a { sweep.len() } else { 1 };
            map.push((next..next + n).collect());
            next += n;
        }
        let handlers: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.finally.is_some())
            .flat_map(|(i, _)| map[i].clone())
            .collect();
        let mut out = Vec::with_capacity(next);
        for (i, step) in steps.iter().enumerate() {
            let copies: Vec<Option<usize>> = if affected[i] {
                (0..sweep.len()).map(Some).collect()
            } else {
                vec![None]
            };
            for k in copies {
                let pick = |j: usize| match k {
                    Some(k) if affected[j] => map[j][k],
                    _ => map[j][0],
                };
                let mut s = step.clone();
                let mut inputs = BTreeMap::new();
                for (name, r) in &step.inputs {
                    match r {
                        InputRef::Source(_) => {
                            inputs.insert(name.clone(), r.clone());
                        }
                        InputRef::Step { step: j, output } => {
                            inputs.insert(
                                name.clone(),
                                InputRef::Step {
                                    step: pick(*j),
                                    output: output.clone(),
                                },
                            );
                        }
                        InputRef::Collection { step: j, output } => {
                            for (c, target) in map[*j].iter().enumerate() {
                                inputs.insert(
                                    format!("{name}.{c}"),
                                    InputRef::Step {
                                        step: *target,
                                        output: output.clone(),
                                    },
                                );
                            }
                        }
                    }
                }
                s.inputs = inputs;
                let mut deps: BTreeSet<usize> = BTreeSet::new();
                for &d in &step.deps {
                    let collected = step
                        .inputs
                        .values()
                        .any(|r| matches!(r, InputRef::Collection { step, .. } if *step == d));
                    if collected {
                        deps.extend(map[d].iter().copied());
                    } else {
                        deps.insert(pick(d));
                    }
                }
                if step.finally.is_some() {
                    deps = (0..next).filter(|x| !handlers.contains(x)).collect();
                }
                s.deps = deps.into_iter().collect();
                if let Some(k) = k {
                    s.name = format!("{}[{k}]", step.name);
                    s.params = step
                        .param_templates
                        .iter()
                        .map(|(key, t)| (key.clone(), substitute_over(t, &sweep[k], params)))
                        .collect();
                    s.sweep = sweep[k].clone();
                    if let (Some(grant), Some(t)) = (&mut s.gpu, &step.gpu_worker_template) {
                        grant.worker = substitute_over(t, &sweep[k], params);
                    }
                    if let Some((_, e)) = &mut s.when {
                        let renamed = |name: &str| {
                            steps
                                .iter()
                                .position(|x| x.name == name)
                                .filter(|&j| affected[j])
                                .map(|_| format!("{name}[{k}]"))
                        };
                        e.rename_steps(&renamed);
                    }
                }
                out.push(s);
            }
        }
        Some(out)
    }
}
