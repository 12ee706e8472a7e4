//! One `[steps.NAME]` table → a [`RawStep`]: component, inputs as
//! written, params interpolated, outputs, limits, retries, cache,
//! `after`, `when`, `on` and the gpu grant.
//!
//! Invariant: every key of the table is either read and checked or
//! reported as unknown; references between steps stay unresolved (names)
//! until `link`.
//! Boundary: stats the component path (after the policy admits it);
//! reads nothing else.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::DeValue;

use super::model::{
    ComponentSource, Finally, GRANT_KEYS, Grant, JOBS_MAX_CEILING, JOBS_MAX_DEFAULT,
    MIN_FREE_MEMORY_MIB_CEILING, PORTS_PER_STEP_MAX, RETRIES_MAX, is_kind_name,
};
use super::toml::{NAME_RULE, Table, Validator};
use crate::limits::{self, Limits};

pub(super) struct RawStep<'a, 'i> {
    pub(super) name: &'a str,
    pub(super) span: Range<usize>,
    pub(super) component: Option<ComponentSource>,
    pub(super) inputs: Vec<(String, Range<usize>, String)>,
    pub(super) params: BTreeMap<String, String>,
    pub(super) param_templates: BTreeMap<String, String>,
    pub(super) outputs: Vec<String>,
    pub(super) limits: Limits,
    pub(super) retries: u32,
    pub(super) cache: bool,
    pub(super) after: Vec<(String, Range<usize>)>,
    pub(super) when: Option<(String, crate::expr::Expr, Range<usize>)>,
    pub(super) finally: Option<Finally>,
    pub(super) gpu: Option<(Grant, String)>,
    pub(super) executor: Option<super::ExecutorKind>,
    pub(super) _table: &'a Table<'i>,
}

impl Validator {
    pub(super) fn step<'a, 'i>(
        &mut self,
        name: &'a str,
        span: Range<usize>,
        t: &'a Table<'i>,
        pipeline_params: &BTreeMap<String, String>,
    ) -> RawStep<'a, 'i> {
        const KEYS: &[&str] = &[
            "component",
            "description",
            "inputs",
            "params",
            "outputs",
            "limits",
            "retries",
            "cache",
            "after",
            "when",
            "on",
            "gpu",
            "executor",
        ];
        let mut step = RawStep {
            name,
            span: span.clone(),
            component: None,
            inputs: Vec::new(),
            params: BTreeMap::new(),
            param_templates: BTreeMap::new(),
            outputs: Vec::new(),
            limits: Limits::default(),
            retries: 0,
            cache: true,
            after: Vec::new(),
            when: None,
            finally: None,
            gpu: None,
            executor: None,
            _table: t,
        };
        let place = format!("[steps.{name}]");
        let mut has_component = false;
        for (key, value) in t.iter() {
            match key.get_ref().as_ref() {
                "component" => {
                    has_component = true;
                    if let Some(rel) = self.string(value, &format!("{place} component")) {
                        step.component = self.component(name, rel, &value.span());
                    }
                }
                "description" => {
                    self.string(value, &format!("{place} description"));
                }
                "inputs" => {
                    let Some(inputs) = self.table(value, &format!("{place} inputs")) else {
                        continue;
                    };
                    if inputs.len() > PORTS_PER_STEP_MAX {
                        self.error(
                            &value.span(),
                            format!("step `{name}` declares more than {PORTS_PER_STEP_MAX} inputs"),
                        );
                        continue;
                    }
                    for (k, v) in inputs.iter() {
                        let input = k.get_ref().to_string();
                        if !self.name(&k.span(), &input, "input") {
                            continue;
                        }
                        if let Some(r) = self.string(v, &format!("step `{name}` input `{input}`")) {
                            step.inputs.push((input, v.span(), r.to_string()));
                        }
                    }
                }
                "params" => {
                    let Some(p) = self.table(value, &format!("{place} params")) else {
                        continue;
                    };
                    for (k, v) in p.iter() {
                        let what = format!("step `{name}` param `{}`", k.get_ref());
                        let Some(raw) = self.scalar(v, &what) else {
                            continue;
                        };
                        if let Some(resolved) =
                            self.interpolate(&raw, &v.span(), &what, pipeline_params)
                        {
                            step.params.insert(k.get_ref().to_string(), resolved);
                        }
                        step.param_templates.insert(k.get_ref().to_string(), raw);
                    }
                }
                "outputs" => {
                    let DeValue::Array(items) = value.get_ref() else {
                        self.error(
                            &value.span(),
                            format!(
                                "{place} outputs must be an array of names, found {}",
                                value.get_ref().type_str()
                            ),
                        );
                        continue;
                    };
                    if items.len() > PORTS_PER_STEP_MAX {
                        self.error(
                            &value.span(),
                            format!(
                                "step `{name}` declares more than {PORTS_PER_STEP_MAX} outputs"
                            ),
                        );
                        continue;
                    }
                    for item in items.iter() {
                        let Some(out) = self.string(item, &format!("step `{name}` output")) else {
                            continue;
                        };
                        if !self.name(&item.span(), out, "output") {
                            continue;
                        }
                        if step.outputs.iter().any(|o| o == out) {
                            self.error(
                                &item.span(),
                                format!("step `{name}` declares output `{out}` twice"),
                            );
                            continue;
                        }
                        step.outputs.push(out.to_string());
                    }
                }
                "limits" => {
                    if let Some(l) = self.table(value, &format!("{place} limits")) {
                        step.limits = self.limits(name, l);
                    }
                }
                "retries" => {
                    step.retries = self
                        .integer(value, &format!("step `{name}` retries"), RETRIES_MAX)
                        .unwrap_or(0) as u32;
                }
                "cache" => {
                    step.cache = self
                        .boolean(value, &format!("step `{name}` cache"))
                        .unwrap_or(true);
                }
                "after" => {
                    let DeValue::Array(items) = value.get_ref() else {
                        self.error(
                            &value.span(),
                            format!("{place} after must be an array of step names"),
                        );
                        continue;
                    };
                    for item in items.iter() {
                        if let Some(s) = self.string(item, &format!("step `{name}` after")) {
                            step.after.push((s.to_string(), item.span()));
                        }
                    }
                }
                "when" => {
                    let Some(text) = self.string(value, &format!("step `{name}` when")) else {
                        continue;
                    };
                    match crate::expr::parse(text) {
                        Ok(e) => step.when = Some((text.to_string(), e, value.span())),
                        Err(e) => {
                            // +1 for the opening quote of a basic string.
                            let at = value.span().start + 1 + e.offset;
                            self.error(&(at..at), format!("step `{name}` when: {}", e.message));
                        }
                    }
                }
                "on" => {
                    match self.string(value, &format!("step `{name}` on")) {
                        Some("always") => step.finally = Some(Finally::Always),
                        Some("failure") => step.finally = Some(Finally::OnFailure),
                        Some("success") => step.finally = Some(Finally::OnSuccess),
                        Some(other) => self.error(
                            &value.span(),
                            format!(
                                "step `{name}` on: {other:?} is not one of \"always\", \"failure\", \"success\""
                            ),
                        ),
                        None => {}
                    }
                }
                "gpu" => step.gpu = self.gpu_grant(name, value, pipeline_params),
                "executor" => step.executor = self.executor_kind(value, &format!("{place} executor")),
                _ => self.unknown_key(key, &place, KEYS),
            }
        }
        if !has_component {
            self.error(&span, format!("step `{name}` has no `component`"));
        }
        step
    }

    pub(super) fn component(
        &mut self,
        step: &str,
        rel: &str,
        span: &Range<usize>,
    ) -> Option<ComponentSource> {
        if rel.starts_with("sha256:") {
            return match rel.parse() {
                Ok(digest) => Some(ComponentSource::Stored(digest)),
                Err(e) => {
                    self.error(span, format!("step `{step}`: component {e}"));
                    None
                }
            };
        }
        let path = self.dir.join(rel);
        if !self.permitted(&path, rel, span, &format!("step `{step}`: component")) {
            return None;
        }
        if path.is_file() {
            return Some(ComponentSource::Wasm(path));
        }
        if path.is_dir() {
            if path.join("Cargo.toml").is_file() {
                return Some(ComponentSource::Crate(path));
            }
            if path.join("pyproject.toml").is_file() {
                return Some(ComponentSource::Python(path));
            }
            if path.join("package.json").is_file() {
                return Some(ComponentSource::JavaScript(path));
            }
            self.error(
                span,
                format!(
                    "step `{step}`: component {} is a directory without Cargo.toml, pyproject.toml or package.json (expected a .wasm file, a step crate, a Python step or a JavaScript step)",
                    path.display()
                ),
            );
            return None;
        }
        self.error(
            span,
            format!("step `{step}`: component {} does not exist", path.display()),
        );
        None
    }

    /// `gpu = { worker = "...", max_jobs = N, min_free_memory_mib = M }`;
    /// returns the grant and the worker as written.
    pub(super) fn gpu_grant(
        &mut self,
        step: &str,
        value: &Spanned<DeValue<'_>>,
        params: &BTreeMap<String, String>,
    ) -> Option<(Grant, String)> {
        let place = format!("step `{step}` gpu");
        let t = self.table(value, &place)?;
        let mut worker = None;
        let mut worker_seen = false;
        let mut max_jobs = JOBS_MAX_DEFAULT;
        let mut min_free_memory_mib = 0;
        for (key, v) in t.iter() {
            let what = format!("{place} `{}`", key.get_ref());
            match key.get_ref().as_ref() {
                "worker" => {
                    worker_seen = true;
                    let Some(raw) = self.string(v, &what) else {
                        continue;
                    };
                    let raw = raw.to_string();
                    let Some(resolved) = self.interpolate(&raw, &v.span(), &what, params) else {
                        continue;
                    };
                    if is_kind_name(&resolved) {
                        worker = Some((resolved, raw));
                    } else {
                        self.error(
                            &v.span(),
                            format!("{what}: {resolved:?} is not a worker kind; use {NAME_RULE}"),
                        );
                    }
                }
                "max_jobs" => match self.integer(v, &what, JOBS_MAX_CEILING) {
                    Some(0) => self.error(&v.span(), format!("{what} must be at least 1")),
                    Some(n) => max_jobs = n as u32,
                    None => {}
                },
                "min_free_memory_mib" => {
                    if let Some(n) = self.integer(v, &what, MIN_FREE_MEMORY_MIB_CEILING) {
                        min_free_memory_mib = n;
                    }
                }
                _ => self.unknown_key(key, &place, GRANT_KEYS),
            }
        }
        if !worker_seen {
            self.error(
                &value.span(),
                format!("{place}: missing required field `worker`"),
            );
        }
        let (worker, raw) = worker?;
        Some((
            Grant {
                worker,
                max_jobs,
                min_free_memory_mib,
            },
            raw,
        ))
    }

    pub(super) fn limits(&mut self, step: &str, t: &Table<'_>) -> Limits {
        let mut l = Limits::default();
        for (key, value) in t.iter() {
            let what = format!("step `{step}` limit `{}`", key.get_ref());
            match key.get_ref().as_ref() {
                "memory_mib" => {
                    if let Some(v) = self.integer(value, &what, limits::MEMORY_MIB_CEILING) {
                        l.memory_mib = v.max(1);
                    }
                }
                "fuel" => {
                    if let Some(v) = self.integer(value, &what, limits::FUEL_CEILING) {
                        l.fuel = v;
                    }
                }
                "timeout_s" => {
                    if let Some(v) = self.integer(value, &what, limits::TIMEOUT_S_CEILING) {
                        l.timeout_s = v.max(1);
                    }
                }
                "output_mib" => {
                    if let Some(v) = self.integer(value, &what, limits::OUTPUT_MIB_CEILING) {
                        l.output_mib = v;
                    }
                }
                "log_kib" => {
                    if let Some(v) = self.integer(value, &what, limits::LOG_KIB_CEILING) {
                        l.log_kib = v;
                    }
                }
                _ => self.unknown_key(key, &format!("step `{step}` limits"), limits::KEYS),
            }
        }
        l
    }
}
