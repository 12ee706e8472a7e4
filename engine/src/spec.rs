//! Pipeline specs: TOML text → a validated DAG ([`Pipeline`]).
//!
//! Invariant: [`load`] either returns a pipeline whose every reference,
//! interpolation, limit and component path has been checked and whose steps
//! are in a topological order, or *all* problems found, each with file, line
//! and column. Nothing downstream re-validates.
//! Boundary: reads the spec file and stats the paths it names; builds and
//! runs nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::limits::{self, Limits};
use crate::policy::PathPolicy;

/// Most steps a pipeline may declare.
pub const MAX_STEPS: usize = 10_000;
/// Most inputs or outputs one step may declare.
pub const MAX_PORTS_PER_STEP: usize = 256;
/// Most combinations a `[sweep]` may expand to.
pub const MAX_SWEEP_COMBINATIONS: usize = 1024;
/// Most dependency edges plus inputs of the pipeline after sweep expansion
/// and exit-handler wiring: with steps bounded by [`MAX_STEPS`], this keeps
/// the graph (a few words per edge) to tens of MB and the scheduler's work
/// linear in something small.
pub const EXPANDED_EDGES_MAX: usize = 1_000_000;
/// Most bytes one interpolated string (`${params.NAME}` resolved) may
/// have: `"${params.a}"` repeated under a large `a` multiplies the spec.
pub const INTERPOLATED_BYTES_MAX: usize = 1 << 20;
/// Most bytes of param values (interpolated, swept and per fanned-out copy)
/// one pipeline may hold after expansion: bounds memory before anything is
/// expanded.
pub const PARAM_BYTES_MAX: usize = 64 << 20;
/// Most times a step may be retried.
pub const MAX_RETRIES: u64 = 10;
/// Largest spec file accepted.
pub const MAX_SPEC_BYTES: u64 = 4 << 20;

/// One problem in a spec, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// The spec file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong, naming the offender.
    pub message: String,
    /// The [`PathPolicy`] refused a path (the service answers 403, not 422).
    pub denied: bool,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Where a step's component comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComponentSource {
    /// A compiled `.wasm` component.
    Wasm(PathBuf),
    /// A step crate directory, built for `wasm32-wasip2` on demand.
    Crate(PathBuf),
    /// A component already in the store (`component = "sha256:…"`), e.g.
    /// uploaded to the service.
    Stored(crate::digest::Digest),
}

/// Where an input comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputRef {
    /// Every fanned-out copy of a swept step's output (`STEP[*].OUTPUT`);
    /// replaced by one `NAME.<k>` input per combination when the sweep is
    /// expanded, so a validated pipeline never holds it.
    Collection {
        /// Producer index (before expansion).
        step: usize,
        /// Output name.
        output: String,
    },
    /// A file declared under `[sources]`.
    Source(String),
    /// An output of an earlier step (index into [`Pipeline::steps`]).
    Step {
        /// Producer index.
        step: usize,
        /// Output name.
        output: String,
    },
}

/// A validated step.
#[derive(Clone, Debug)]
pub struct Step {
    /// The step's name (`[steps.<name>]`).
    pub name: String,
    /// Its component.
    pub component: ComponentSource,
    /// Inputs by name.
    pub inputs: BTreeMap<String, InputRef>,
    /// Resolved params (interpolated, stringified).
    pub params: BTreeMap<String, String>,
    /// The params as written (before interpolation), for sweep expansion.
    pub param_templates: BTreeMap<String, String>,
    /// For a step fanned out by `[sweep]`: its combination of swept params.
    pub sweep: BTreeMap<String, String>,
    /// Declared outputs, in declaration order.
    pub outputs: Vec<String>,
    /// Limits, defaults applied.
    pub limits: Limits,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// Whether the step cache may be used.
    pub cache: bool,
    /// Indices of the steps this one waits for (inputs, `after`, steps its
    /// condition reads; every regular step for an exit handler), sorted.
    pub deps: Vec<usize>,
    /// `when = "..."`: the condition text and its parse.
    pub when: Option<(String, crate::expr::Expr)>,
    /// `on = "always" | "failure" | "success"`: an exit handler.
    pub finally: Option<Finally>,
    /// `gpu = { worker = "...", max_jobs = N, min_free_memory_mib = M }`:
    /// the step may submit gpu jobs to that worker kind.
    pub gpu: Option<Grant>,
    /// The grant's `worker` as written (before interpolation), for sweeps.
    pub gpu_worker_template: Option<String>,
}

/// A validated pipeline: steps in topological order.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// `name = ...`.
    pub name: String,
    /// `description = ...`.
    pub description: Option<String>,
    /// The spec file.
    pub path: PathBuf,
    /// The spec's exact bytes (for the record).
    pub text: String,
    /// Resolved pipeline params (defaults + overrides).
    pub params: BTreeMap<String, String>,
    /// Seed for the run's virtual random streams.
    pub seed: u64,
    /// Source files by name (absolute or spec-relative, resolved).
    pub sources: BTreeMap<String, PathBuf>,
    /// Steps, topologically sorted (sweeps expanded).
    pub steps: Vec<Step>,
    /// The sweep grid: every combination of swept params, in order.
    pub sweep: Vec<BTreeMap<String, String>>,
    /// `[schedule] cron = "..."`: when `sluice serve` starts the pipeline.
    pub schedule: Option<String>,
}

impl Pipeline {
    /// Index of the step named `name`.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }
}

/// Parses a `[schedule] cron` expression: five fields (minute hour
/// day-of-month month day-of-week), or six with leading seconds; UTC.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expr)
}

/// Reads and validates the spec at `path`, applying `--param` overrides,
/// with no path restriction (every file is the caller's own).
pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Pipeline, Vec<SpecError>> {
    load_with(path, overrides, &PathPolicy::anywhere())
}

/// Like [`load`], but the spec file, its sources and its components must
/// pass `policy` (checked before anything is read or stat'ed, so a refusal
/// says nothing about whether the path exists).
pub fn load_with(
    path: &Path,
    overrides: &[(String, String)],
    policy: &PathPolicy,
) -> Result<Pipeline, Vec<SpecError>> {
    let at_file = |message: String| {
        vec![SpecError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message,
            denied: false,
        }]
    };
    if let Err(e) = policy.check(path) {
        return Err(vec![SpecError {
            message: format!("spec {e}"),
            denied: true,
            ..at_file(String::new()).remove(0)
        }]);
    }
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_SPEC_BYTES => {
            return Err(at_file(format!(
                "spec is {} bytes; the limit is {MAX_SPEC_BYTES}",
                m.len()
            )));
        }
        Ok(_) => {}
        Err(e) => return Err(at_file(format!("cannot read spec: {e}"))),
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return Err(at_file(format!("cannot read spec: {e}"))),
    };
    parse_with(path, &text, overrides, policy)
}

/// Validates spec `text` as if read from `path` (paths resolve against its
/// directory), with no path restriction.
pub fn parse(
    path: &Path,
    text: &str,
    overrides: &[(String, String)],
) -> Result<Pipeline, Vec<SpecError>> {
    parse_with(path, text, overrides, &PathPolicy::anywhere())
}

/// Like [`parse`], but sources and components must pass `policy`.
pub fn parse_with(
    path: &Path,
    text: &str,
    overrides: &[(String, String)],
    policy: &PathPolicy,
) -> Result<Pipeline, Vec<SpecError>> {
    let mut v = Validator {
        policy: policy.clone(),
        param_bytes: 0,
        file: path.to_path_buf(),
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        lines: LineIndex::new(text),
        errors: Vec::new(),
    };
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            v.error(&span, format!("invalid TOML: {}", e.message().trim()));
            return Err(v.errors);
        }
    };
    let pipeline = v.pipeline(root.get_ref(), &root.span(), text, overrides);
    if v.errors.is_empty() {
        Ok(pipeline.expect("a pipeline when there are no errors"))
    } else {
        v.errors.sort_by_key(|e| (e.line, e.column));
        Err(v.errors)
    }
}

struct LineIndex {
    starts: Vec<usize>,
    text: String,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex {
            starts,
            text: text.to_string(),
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
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

type Table<'i> = DeTable<'i>;

struct RawStep<'a, 'i> {
    name: &'a str,
    span: Range<usize>,
    component: Option<ComponentSource>,
    inputs: Vec<(String, Range<usize>, String)>,
    params: BTreeMap<String, String>,
    param_templates: BTreeMap<String, String>,
    outputs: Vec<String>,
    limits: Limits,
    retries: u32,
    cache: bool,
    after: Vec<(String, Range<usize>)>,
    when: Option<(String, crate::expr::Expr, Range<usize>)>,
    finally: Option<Finally>,
    gpu: Option<(Grant, String)>,
    _table: &'a Table<'i>,
}

struct Validator {
    policy: PathPolicy,
    /// Bytes of interpolated strings so far (bounded by [`PARAM_BYTES_MAX`]).
    param_bytes: usize,
    file: PathBuf,
    dir: PathBuf,
    lines: LineIndex,
    errors: Vec<SpecError>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const NAME_RULE: &str = "1-64 characters of [A-Za-z0-9_-], starting with a letter or digit";

impl Validator {
    fn error(&mut self, span: &Range<usize>, message: String) {
        let (line, column) = self.lines.position(span.start);
        self.errors.push(SpecError {
            file: self.file.clone(),
            line,
            column,
            message,
            denied: false,
        });
    }

    /// Checks `path` (`rel` as written) against the policy before it is
    /// stat'ed; a refusal is reported at `span` naming `what` and `rel`
    /// only (never the resolved path).
    fn permitted(&mut self, path: &Path, rel: &str, span: &Range<usize>, what: &str) -> bool {
        let Err(e) = self.policy.check(path) else {
            return true;
        };
        self.error(span, format!("{what} {rel:?} {e}"));
        if let Some(last) = self.errors.last_mut() {
            last.denied = true;
        }
        false
    }

    fn unknown_key(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        place: &str,
        allowed: &[&str],
    ) {
        self.error(
            &key.span(),
            format!(
                "unknown field `{}` in {place}; expected one of: {}",
                key.get_ref(),
                allowed.join(", ")
            ),
        );
    }

    fn string<'v>(&mut self, value: &'v Spanned<DeValue<'_>>, what: &str) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                self.error(
                    &value.span(),
                    format!("{what} must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn table<'v, 'i>(
        &mut self,
        value: &'v Spanned<DeValue<'i>>,
        what: &str,
    ) -> Option<&'v Table<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.error(
                    &value.span(),
                    format!("{what} must be a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn integer(&mut self, value: &Spanned<DeValue<'_>>, what: &str, max: u64) -> Option<u64> {
        let parsed = match value.get_ref() {
            DeValue::Integer(i) => {
                let digits = i.as_str().replace('_', "");
                let digits = digits
                    .strip_prefix("0x")
                    .or_else(|| digits.strip_prefix("0o"))
                    .or_else(|| digits.strip_prefix("0b"))
                    .unwrap_or(&digits)
                    .to_string();
                i64::from_str_radix(&digits, i.radix()).ok()
            }
            _ => None,
        };
        match parsed {
            Some(n) if n >= 0 && (n as u64) <= max => Some(n as u64),
            Some(n) => {
                self.error(
                    &value.span(),
                    format!("{what} must be between 0 and {max}, found {n}"),
                );
                None
            }
            None => {
                self.error(
                    &value.span(),
                    format!(
                        "{what} must be an integer, found {}",
                        value.get_ref().type_str()
                    ),
                );
                None
            }
        }
    }

    fn boolean(&mut self, value: &Spanned<DeValue<'_>>, what: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    &value.span(),
                    format!("{what} must be a boolean, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A param value: strings as is, numbers and booleans in their TOML text.
    fn scalar(&mut self, value: &Spanned<DeValue<'_>>, what: &str) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            DeValue::Integer(i) => Some(i.as_str().replace('_', "")),
            DeValue::Float(f) => Some(f.as_str().replace('_', "")),
            DeValue::Boolean(b) => Some(b.to_string()),
            other => {
                self.error(
                    &value.span(),
                    format!(
                        "{what} must be a string, number or boolean, found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    fn name(&mut self, span: &Range<usize>, name: &str, what: &str) -> bool {
        if is_name(name) {
            return true;
        }
        self.error(
            span,
            format!("invalid {what} name {name:?}: use {NAME_RULE}"),
        );
        false
    }

    fn pipeline(
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
            "steps",
        ];
        let mut name = None;
        let mut schedule = None;
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
        // The sweep grid, over declared params, in declaration order. Its
        // size (combinations, then bytes) is computed from the axes'
        // lengths before any combination is built.
        let mut axes: Vec<&(String, Vec<String>, Range<usize>)> = Vec::new();
        for axis in &raw_sweep {
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
        if combinations > MAX_SWEEP_COMBINATIONS {
            let shape: Vec<String> = axes
                .iter()
                .map(|(key, values, _)| format!("`{key}` ({} values)", values.len()))
                .collect();
            self.error(
                sweep_span.as_ref().unwrap_or(&(0..0)),
                format!(
                    "the [sweep] {} has {combinations} combinations; the limit is {MAX_SWEEP_COMBINATIONS}",
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
        if steps_table.len() > MAX_STEPS {
            self.error(
                &steps_span,
                format!(
                    "{} steps declared; the limit is {MAX_STEPS}",
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
        })
    }

    fn step<'a, 'i>(
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
                    if inputs.len() > MAX_PORTS_PER_STEP {
                        self.error(
                            &value.span(),
                            format!("step `{name}` declares more than {MAX_PORTS_PER_STEP} inputs"),
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
                    if items.len() > MAX_PORTS_PER_STEP {
                        self.error(
                            &value.span(),
                            format!(
                                "step `{name}` declares more than {MAX_PORTS_PER_STEP} outputs"
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
                        .integer(value, &format!("step `{name}` retries"), MAX_RETRIES)
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
                _ => self.unknown_key(key, &place, KEYS),
            }
        }
        if !has_component {
            self.error(&span, format!("step `{name}` has no `component`"));
        }
        step
    }

    fn component(&mut self, step: &str, rel: &str, span: &Range<usize>) -> Option<ComponentSource> {
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
            self.error(
                span,
                format!(
                    "step `{step}`: component {} is a directory without Cargo.toml (expected a .wasm file or a step crate)",
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
    fn gpu_grant(
        &mut self,
        step: &str,
        value: &Spanned<DeValue<'_>>,
        params: &BTreeMap<String, String>,
    ) -> Option<(Grant, String)> {
        let place = format!("step `{step}` gpu");
        let t = self.table(value, &place)?;
        let mut worker = None;
        let mut worker_seen = false;
        let mut max_jobs = MAX_JOBS_DEFAULT;
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
                "max_jobs" => match self.integer(v, &what, MAX_JOBS_CEILING) {
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

    fn limits(&mut self, step: &str, t: &Table<'_>) -> Limits {
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

    /// Resolves `${params.NAME}` in `raw`, reporting problems at `span`.
    fn interpolate(
        &mut self,
        raw: &str,
        span: &Range<usize>,
        what: &str,
        params: &BTreeMap<String, String>,
    ) -> Option<String> {
        match interpolate(raw, params) {
            Ok(s) => {
                let before = self.param_bytes;
                self.param_bytes = before.saturating_add(s.len());
                if self.param_bytes > PARAM_BYTES_MAX {
                    // Reported once, where the budget ran out.
                    if before <= PARAM_BYTES_MAX {
                        self.error(
                            span,
                            format!(
                                "{what}: the spec's interpolated values exceed {PARAM_BYTES_MAX} bytes in total"
                            ),
                        );
                    }
                    return None;
                }
                Some(s)
            }
            Err(errors) => {
                for e in errors {
                    self.error(span, format!("{what}: {e}"));
                }
                None
            }
        }
    }

    /// Resolves references between steps, checks for cycles and orders the
    /// steps topologically (ties broken by declaration order).
    fn link(
        &mut self,
        raw: Vec<RawStep<'_, '_>>,
        sources: &BTreeMap<String, PathBuf>,
        params: &BTreeMap<String, String>,
    ) -> Option<Vec<Step>> {
        let index: HashMap<&str, usize> =
            raw.iter().enumerate().map(|(i, s)| (s.name, i)).collect();
        let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); raw.len()];
        let mut inputs: Vec<BTreeMap<String, InputRef>> = vec![BTreeMap::new(); raw.len()];
        for (i, step) in raw.iter().enumerate() {
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
                        inputs[i].insert(input.clone(), InputRef::Source(tail.to_string()));
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
                deps[i].insert(producer);
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
                inputs[i].insert(input.clone(), r);
            }
            if let Some((_, expr, span)) = &step.when {
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
                                deps[i].insert(j);
                            }
                            None => self.error(
                                span,
                                format!(
                                    "step `{}` when: unknown step `{other}` in `{r}`",
                                    step.name
                                ),
                            ),
                        },
                    }
                }
            }
            for (after, span) in &step.after {
                match index.get(after.as_str()) {
                    Some(&j) if j == i => {
                        self.error(
                            span,
                            format!("step `{}` cannot run after itself", step.name),
                        );
                    }
                    Some(&j) => {
                        deps[i].insert(j);
                    }
                    None => self.error(
                        span,
                        format!("step `{}` after: unknown step `{after}`", step.name),
                    ),
                }
            }
        }
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
            let cycle = find_cycle(&deps, &indegree);
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
        if !self.errors.is_empty() {
            return None;
        }
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
            });
        }
        steps.into_iter().collect()
    }
}

impl Validator {
    /// Fans out every step that a swept param reaches (through its params,
    /// its condition, or an upstream fanned-out step) once per combination,
    /// named `STEP[k]`; steps the sweep does not reach run once. A
    /// `STEP[*].OUTPUT` input becomes one `NAME.<k>` input per combination.
    fn expand(
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
        if total_steps > MAX_STEPS {
            self.error(
                sweep_span,
                format!(
                    "the [sweep]'s {} combinations fan out {fanned} steps into {total_steps} steps; the limit is {MAX_STEPS}",
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

/// Resolves `${params.NAME}` in `raw`, or lists every problem. The
/// result is at most [`INTERPOLATED_BYTES_MAX`] bytes: it is refused before
/// it grows past that.
fn interpolate(raw: &str, params: &BTreeMap<String, String>) -> Result<String, Vec<String>> {
    interpolate_over(raw, &BTreeMap::new(), params)
}

/// [`interpolate`] where `overlay` (a sweep combination) shadows `params`,
/// so a fanned-out copy needs no merged copy of all params.
fn interpolate_over(
    raw: &str,
    overlay: &BTreeMap<String, String>,
    params: &BTreeMap<String, String>,
) -> Result<String, Vec<String>> {
    let mut out = String::new();
    let mut rest = raw;
    let mut errors = Vec::new();
    let too_long = || format!("expands to more than {INTERPOLATED_BYTES_MAX} bytes");
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            errors.push(format!("unterminated `${{` in {raw:?}"));
            return Err(errors);
        };
        let expr = after[..end].trim();
        let value = expr
            .strip_prefix("params.")
            .map(|p| (p, overlay.get(p).or_else(|| params.get(p))));
        match value {
            Some((_, Some(v))) => {
                if out.len().saturating_add(v.len()) > INTERPOLATED_BYTES_MAX {
                    errors.push(too_long());
                    return Err(errors);
                }
                out.push_str(v);
            }
            Some((p, None)) => {
                let declared: Vec<&str> = params.keys().map(String::as_str).collect();
                errors.push(format!(
                    "`${{{expr}}}` names unknown param `{p}`; declared: {}",
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    }
                ));
            }
            None => errors.push(format!(
                "unsupported interpolation `${{{expr}}}`; only `${{params.NAME}}` is allowed"
            )),
        }
        rest = &after[end + 1..];
    }
    if out.len().saturating_add(rest.len()) > INTERPOLATED_BYTES_MAX {
        errors.push(too_long());
        return Err(errors);
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// `${params.NAME}` substitution of a template already validated against
/// these params, with a sweep combination shadowing them.
fn substitute_over(
    template: &str,
    overlay: &BTreeMap<String, String>,
    params: &BTreeMap<String, String>,
) -> String {
    interpolate_over(template, overlay, params).unwrap_or_else(|_| template.to_string())
}

/// The param names a template references (`${params.NAME}`, trimmed).
fn param_refs(template: &str) -> impl Iterator<Item = &str> {
    template.split("${").skip(1).filter_map(|part| {
        part.split_once('}')
            .and_then(|(expr, _)| expr.trim().strip_prefix("params."))
    })
}

/// An upper bound of the bytes `template` resolves to when each reference
/// is replaced by a value of at most `value_bytes_max` bytes (computed
/// without resolving it).
fn resolved_bytes_max(template: &str, value_bytes_max: usize) -> usize {
    let refs = template.matches("${").count();
    template
        .len()
        .saturating_add(refs.saturating_mul(value_bytes_max))
        .min(INTERPOLATED_BYTES_MAX)
}

/// A cycle among the nodes Kahn's algorithm could not order.
fn find_cycle(deps: &[BTreeSet<usize>], indegree: &[usize]) -> Vec<usize> {
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

/// A step's permission to submit gpu jobs (`gpu = { ... }` in the spec).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    /// The one worker kind the step may use.
    pub worker: String,
    /// Jobs per attempt.
    pub max_jobs: u32,
    /// A floor under every job's `min-free-memory-mib`.
    pub min_free_memory_mib: u64,
}

/// When an exit handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finally {
    /// After the rest, whatever happened.
    Always,
    /// After the rest, if any step failed.
    OnFailure,
    /// After the rest, if no step failed.
    OnSuccess,
}

/// Keys accepted in a step's `gpu = { ... }` grant.
pub const GRANT_KEYS: &[&str] = &["worker", "max_jobs", "min_free_memory_mib"];
/// Jobs a grant allows per attempt when it does not say.
pub const MAX_JOBS_DEFAULT: u32 = 1;
/// The most jobs a grant may allow per attempt.
pub const MAX_JOBS_CEILING: u64 = 64;
/// The largest `min_free_memory_mib` a grant may ask for (16 TiB).
pub const MIN_FREE_MEMORY_MIB_CEILING: u64 = 1 << 24;

/// Whether `s` can name a worker kind, a job input or a job output:
/// 1-64 characters of `[A-Za-z0-9_-]`, starting with a letter or digit.
pub fn is_kind_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_component(
        text: &str,
        overrides: &[(String, String)],
    ) -> Result<Pipeline, Vec<SpecError>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.wasm"), b"\0asm").unwrap();
        parse(&dir.path().join("p.toml"), text, overrides)
    }

    #[test]
    fn steps_come_out_in_topological_order_with_interpolated_params() {
        let p = with_component(
            r#"name = "p"
seed = 7
[params]
lr = 0.5
epochs = 10
[steps.last]
component = "c.wasm"
inputs = { m = "first.out" }
params = { note = "lr=${params.lr} x${ params.epochs }", flag = true }
[steps.first]
component = "c.wasm"
outputs = ["out"]
"#,
            &[("epochs".to_string(), "20".to_string())],
        )
        .unwrap();
        let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["first", "last"]);
        assert_eq!(p.seed, 7);
        assert_eq!(p.steps[1].params["note"], "lr=0.5 x20");
        assert_eq!(p.steps[1].params["flag"], "true");
        assert_eq!(p.steps[1].deps, vec![0]);
        assert_eq!(
            p.steps[1].inputs["m"],
            InputRef::Step {
                step: 0,
                output: "out".into()
            }
        );
    }

    #[test]
    fn a_three_step_cycle_is_named_in_order() {
        let errors = with_component(
            r#"name = "p"
[steps.a]
component = "c.wasm"
inputs = { x = "c.out" }
outputs = ["out"]
[steps.b]
component = "c.wasm"
inputs = { x = "a.out" }
outputs = ["out"]
[steps.c]
component = "c.wasm"
inputs = { x = "b.out" }
outputs = ["out"]
"#,
            &[],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].message, "dependency cycle: a -> b -> c -> a");
        assert_eq!((errors[0].line, errors[0].column), (2, 8));
    }

    #[test]
    fn gpu_grants_interpolate_params_and_follow_sweeps() {
        let p = with_component(
            r#"name = "p"
[params]
worker = "cpu"
[sweep]
worker = ["cpu", "torch"]
[steps.train]
component = "c.wasm"
gpu = { worker = "${params.worker}", max_jobs = 3, min_free_memory_mib = 1024 }
[steps.plain]
component = "c.wasm"
"#,
            &[],
        )
        .unwrap();
        let grants: Vec<(&str, Option<Grant>)> = p
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.gpu.clone()))
            .collect();
        let grant = |worker: &str| {
            Some(Grant {
                worker: worker.into(),
                max_jobs: 3,
                min_free_memory_mib: 1024,
            })
        };
        assert_eq!(
            grants,
            [
                ("train[0]", grant("cpu")),
                ("train[1]", grant("torch")),
                ("plain", None)
            ]
        );
        let one = with_component(
            "name = \"p\"\n[steps.t]\ncomponent = \"c.wasm\"\ngpu = { worker = \"cpu\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(one.steps[0].gpu.as_ref().unwrap().max_jobs, 1);
    }

    #[test]
    fn names_must_be_plain_identifiers() {
        let errors = with_component(
            "name = \"p\"\n[steps.\"../x\"]\ncomponent = \"c.wasm\"\n",
            &[],
        )
        .unwrap_err();
        assert!(
            errors[0].message.starts_with("invalid step name \"../x\""),
            "{errors:?}"
        );
    }

    /// `[sweep] p = [0, ..., n-1]` over a declared `p`.
    fn sweep_of(n: usize) -> String {
        let values: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        format!("[sweep]\np = [{}]\n", values.join(", "))
    }

    fn messages(result: Result<Pipeline, Vec<SpecError>>) -> Vec<String> {
        result
            .unwrap_err()
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect()
    }

    #[test]
    fn fan_in_beyond_the_edge_budget_is_refused_before_expansion() {
        let mut text = format!("name = \"p\"\n[params]\np = \"0\"\n{}", sweep_of(1024));
        text.push_str("[steps.t]\ncomponent = \"c.wasm\"\nparams = { v = \"${params.p}\" }\noutputs = [\"o\"]\n");
        for i in 0..1000 {
            text.push_str(&format!(
                "[steps.c{i}]\ncomponent = \"c.wasm\"\ninputs = {{ all = \"t[*].o\" }}\n"
            ));
        }
        assert_eq!(
            messages(with_component(&text, &[])),
            [
                "5:1: the [sweep]'s 1024 combinations expand the pipeline to 2048000 inputs and dependencies; the limit is 1000000"
            ]
        );
    }

    #[test]
    fn interpolation_is_bounded_per_string_and_in_total() {
        let big = "x".repeat(100_000);
        let refs = "${params.a}".repeat(11);
        let text = format!(
            "name = \"p\"\n[params]\na = \"{big}\"\n[steps.s]\ncomponent = \"c.wasm\"\nparams = {{ v = \"{refs}\" }}\n"
        );
        assert_eq!(
            messages(with_component(&text, &[])),
            ["6:16: step `s` param `v`: expands to more than 1048576 bytes"]
        );
        // 1 MB each is fine; 700 of them are not.
        let refs = "${params.a}".repeat(10);
        let mut text = format!(
            "name = \"p\"\n[params]\na = \"{big}\"\n[steps.s]\ncomponent = \"c.wasm\"\n[steps.s.params]\n"
        );
        for i in 0..700 {
            text.push_str(&format!("v{i} = \"{refs}\"\n"));
        }
        let errors = messages(with_component(&text, &[]));
        assert_eq!(
            errors,
            [
                "74:7: step `s` param `v67`: the spec's interpolated values exceed 67108864 bytes in total"
            ]
        );
    }

    #[test]
    fn exit_handlers_times_steps_is_bounded() {
        let mut text = "name = \"p\"\n".to_string();
        for i in 0..1001 {
            text.push_str(&format!("[steps.s{i}]\ncomponent = \"c.wasm\"\n"));
        }
        for i in 0..1000 {
            text.push_str(&format!(
                "[steps.h{i}]\ncomponent = \"c.wasm\"\non = \"always\"\n"
            ));
        }
        let errors = messages(with_component(&text, &[]));
        assert_eq!(
            errors,
            [
                "2004:8: 1000 exit handlers each waiting for 1001 steps make 1001000 dependencies; the limit is 1000000"
            ]
        );
    }
}

/// Property tests: mutations of a valid spec with a sweep (characters
/// inserted and deleted, TOML fragments spliced in, random keys, values and
/// small sweep axes appended) never panic the validator, and either give a
/// pipeline whose invariants hold or errors that each carry a position
/// inside the text. Sweeps stay small (≤ 50 combinations) so the test does
/// not depend on the expansion bound. `PROPTEST_CASES=N` runs more cases.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;
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
            (any::<usize>(), prop::sample::select(FRAGMENTS))
                .prop_map(|(at, f)| Edit::Fragment(at, f)),
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
                    p.sweep.len() <= MAX_SWEEP_COMBINATIONS,
                    "{} combinations",
                    p.sweep.len()
                );
                prop_assert!(p.steps.len() <= MAX_STEPS);
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
}
