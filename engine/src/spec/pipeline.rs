//! The top-level table of a spec: name, description, seed, `[params]`
//! (with `--param` overrides), `[sources]`, `[schedule]`, `[sweep]` and
//! `[steps]`, then the steps through `step`, `link` and `sweep`.
//!
//! Invariant: returns a [`Pipeline`] only when no error was recorded along
//! the way; an override naming an undeclared param is an error, never
//! silently added.
//! Boundary: stats source paths (after the policy admits them).

use std::collections::BTreeMap;
use std::ops::Range;

use toml::de::DeValue;

use super::model::{Pipeline, STEPS_MAX, parse_cron};
use super::toml::{Table, Validator};

impl Validator {
    pub(super) fn pipeline(
        &mut self,
        root: &Table<'_>,
        root_span: &Range<usize>,
        text: &str,
        overrides: &[(String, String)],
    ) -> Option<Pipeline> {
        const TOP: &[&str] = &[
            "name",
            "description",
            "seed",
            "params",
            "sources",
            "sweep",
            "schedule",
            "executor",
            "steps",
        ];
        let mut name = None;
        let mut schedule = None;
        let mut executor = None;
        let mut description = None;
        let mut seed = 0;
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        let mut params_span = 0..0;
        let mut sources = BTreeMap::new();
        let mut raw_sources: Vec<(String, String, Range<usize>)> = Vec::new();
        let mut raw_sweep: Vec<(String, Vec<String>, Range<usize>)> = Vec::new();
        let mut steps_table = None;
        for (key, value) in root.iter() {
            match key.get_ref().as_ref() {
                "name" => {
                    if let Some(n) = self.string(value, "`name`")
                        && self.name(&value.span(), n, "pipeline")
                    {
                        name = Some(n.to_string());
                    }
                }
                "description" => {
                    description = self.string(value, "`description`").map(str::to_string);
                }
                "seed" => seed = self.integer(value, "`seed`", u64::MAX >> 1).unwrap_or(0),
                "params" => {
                    params_span = value.span();
                    if let Some(t) = self.table(value, "[params]") {
                        for (k, v) in t.iter() {
                            let what = format!("param `{}`", k.get_ref());
                            if let Some(s) = self.scalar(v, &what) {
                                params.insert(k.get_ref().to_string(), s);
                            }
                        }
                    }
                }
                "sources" => {
                    if let Some(t) = self.table(value, "[sources]") {
                        for (k, v) in t.iter() {
                            let key = k.get_ref().to_string();
                            if !self.name(&k.span(), &key, "source") {
                                continue;
                            }
                            if let Some(rel) = self.string(v, &format!("source `{key}`")) {
                                raw_sources.push((key, rel.to_string(), v.span()));
                            }
                        }
                    }
                }
                "steps" => steps_table = self.table(value, "[steps]").map(|t| (t, value.span())),
                "schedule" => {
                    if let Some(t) = self.table(value, "[schedule]") {
                        for (k, v) in t.iter() {
                            if k.get_ref().as_ref() != "cron" {
                                self.unknown_key(k, "[schedule]", &["cron"]);
                                continue;
                            }
                            let Some(expr) = self.string(v, "schedule `cron`") else {
                                continue;
                            };
                            match parse_cron(expr) {
                                Ok(_) => schedule = Some(expr.to_string()),
                                Err(e) => self.error(
                                    &v.span(),
                                    format!(
                                        "schedule `cron`: {expr:?} is not a cron expression: {e}"
                                    ),
                                ),
                            }
                        }
                    }
                }
                "executor" => {
                    if let Some(t) = self.table(value, "[executor]") {
                        for (k, v) in t.iter() {
                            if k.get_ref().as_ref() != "kind" {
                                self.unknown_key(k, "[executor]", &["kind"]);
                                continue;
                            }
                            executor = self.executor_kind(v, "[executor] kind");
                        }
                    }
                }
                "sweep" => {
                    if let Some(t) = self.table(value, "[sweep]") {
                        for (k, v) in t.iter() {
                            let key = k.get_ref().to_string();
                            let DeValue::Array(items) = v.get_ref() else {
                                self.error(
                                    &v.span(),
                                    format!("sweep `{key}` must be an array of values"),
                                );
                                continue;
                            };
                            let values: Vec<String> = items
                                .iter()
                                .filter_map(|item| {
                                    self.scalar(item, &format!("sweep `{key}` value"))
                                })
                                .collect();
                            if values.is_empty() {
                                self.error(&v.span(), format!("sweep `{key}` has no values"));
                                continue;
                            }
                            raw_sweep.push((key, values, k.span()));
                        }
                    }
                }
                _ => self.unknown_key(key, "the pipeline", TOP),
            }
        }
        if name.is_none() && !root.iter().any(|(k, _)| k.get_ref() == "name") {
            self.error(&(0..0), "missing required field `name`".to_string());
        }
        for (k, v) in overrides {
            if params.contains_key(k) {
                params.insert(k.clone(), v.clone());
            } else {
                let declared: Vec<&str> = params.keys().map(String::as_str).collect();
                self.error(
                    &params_span,
                    format!(
                        "--param {k}: the pipeline declares no param `{k}`; declared: {}",
                        if declared.is_empty() {
                            "none".to_string()
                        } else {
                            declared.join(", ")
                        }
                    ),
                );
            }
        }
        let sweep_span = raw_sweep.first().map(|(_, _, span)| span.clone());
        let sweep = self.grid(&raw_sweep, &params);
        // Sources after overrides: a path may interpolate `${params.NAME}`.
        for (key, rel, span) in raw_sources {
            let what = format!("source `{key}`");
            let Some(rel) = self.interpolate(&rel, &span, &what, &params) else {
                continue;
            };
            let path = self.dir.join(&rel);
            if !self.permitted(&path, &rel, &span, &format!("{what}:")) {
                continue;
            }
            if !path.is_file() {
                self.error(
                    &span,
                    format!("source `{key}`: file {} does not exist", path.display()),
                );
                continue;
            }
            sources.insert(key, path);
        }
        let Some((steps_table, steps_span)) = steps_table else {
            self.error(root_span, "the pipeline declares no [steps]".to_string());
            return None;
        };
        if steps_table.len() > STEPS_MAX {
            self.error(
                &steps_span,
                format!(
                    "{} steps declared; the limit is {STEPS_MAX}",
                    steps_table.len()
                ),
            );
            return None;
        }
        let mut raw = Vec::new();
        for (key, value) in steps_table.iter() {
            let step_name = key.get_ref().as_ref();
            if !self.name(&key.span(), step_name, "step") {
                continue;
            }
            let Some(t) = self.table(value, &format!("[steps.{step_name}]")) else {
                continue;
            };
            raw.push(self.step(step_name, key.span(), t, &params));
        }
        if raw.is_empty() && self.errors.is_empty() {
            self.error(&steps_span, "the pipeline declares no steps".to_string());
        }
        let steps = self.link(raw, &sources, &params).and_then(|steps| {
            let at = sweep_span.clone().unwrap_or(0..0);
            self.expand(steps, &sweep, &params, &steps_span, &at)
        });
        Some(Pipeline {
            name: name.unwrap_or_default(),
            description,
            path: self.file.clone(),
            text: text.to_string(),
            params,
            seed,
            sources,
            steps: steps?,
            sweep,
            schedule,
            executor,
        })
    }
}
