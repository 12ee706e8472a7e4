//! The condition language of `when = "..."`: comparisons, `and`/`or`/`not`,
//! parentheses, numbers, strings, booleans, and references to upstream
//! metrics (`STEP.metrics.NAME`), step statuses (`STEP.status`), small
//! JSON outputs (`STEP.outputs.NAME` or a top-level field of one,
//! `STEP.outputs.NAME.FIELD`) and pipeline params (`params.NAME`).
//!
//! Invariant: parsing is total and bounded (length and nesting); a parsed
//! [`Expr`] evaluates without panicking, and every way it can fail names
//! the reference or operator involved.
//! Boundary: pure; knows nothing of steps beyond the names it is given.

use std::collections::BTreeMap;
use std::fmt;

/// Longest condition accepted, in bytes.
pub const EXPR_BYTES_MAX: usize = 1024;
/// Deepest nesting of parentheses and `not`.
pub const DEPTH_MAX: usize = 32;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Cmp {
    fn as_str(self) -> &'static str {
        match self {
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// What a reference names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ref {
    /// `params.NAME`
    Param(String),
    /// `STEP.metrics.NAME`
    Metric {
        /// Step.
        step: String,
        /// Metric.
        name: String,
    },
    /// `STEP.status`
    Status(String),
    /// `STEP.outputs.NAME` or `STEP.outputs.NAME.FIELD`
    Output {
        /// Step.
        step: String,
        /// Output name.
        output: String,
        /// A top-level field of the output's JSON object.
        field: Option<String>,
    },
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Param(p) => write!(f, "params.{p}"),
            Ref::Metric { step, name } => write!(f, "{step}.metrics.{name}"),
            Ref::Status(s) => write!(f, "{s}.status"),
            Ref::Output {
                step,
                output,
                field: None,
            } => write!(f, "{step}.outputs.{output}"),
            Ref::Output {
                step,
                output,
                field: Some(x),
            } => write!(f, "{step}.outputs.{output}.{x}"),
        }
    }
}

/// A parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A number literal.
    Num(f64),
    /// A string literal.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// A reference.
    Ref(Ref),
    /// `not e`
    Not(Box<Expr>),
    /// `a and b`
    And(Box<Expr>, Box<Expr>),
    /// `a or b`
    Or(Box<Expr>, Box<Expr>),
    /// `a OP b`
    Cmp(Cmp, Box<Expr>, Box<Expr>),
}

/// A parse error at a byte offset of the condition text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {message}")]
pub struct ParseError {
    /// Byte offset in the condition.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Op(Cmp),
    LParen,
    RParen,
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let err = |offset, message: String| ParseError { offset, message };
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            b')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            b'=' | b'!' | b'<' | b'>' => {
                let two = bytes.get(i + 1) == Some(&b'=');
                let op = match (c, two) {
                    (b'=', true) => Cmp::Eq,
                    (b'!', true) => Cmp::Ne,
                    (b'<', true) => Cmp::Le,
                    (b'>', true) => Cmp::Ge,
                    (b'<', false) => Cmp::Lt,
                    (b'>', false) => Cmp::Gt,
                    _ => {
                        return Err(err(
                            start,
                            format!(
                                "unexpected `{}`; comparisons are == != < <= > >=",
                                c as char
                            ),
                        ));
                    }
                };
                i += if two { 2 } else { 1 };
                out.push((start, Tok::Op(op)));
            }
            b'"' | b'\'' => {
                let close = text[i + 1..]
                    .find(c as char)
                    .ok_or_else(|| err(start, "unterminated string".to_string()))?;
                out.push((start, Tok::Str(text[i + 1..i + 1 + close].to_string())));
                i += close + 2;
            }
            b'0'..=b'9' | b'-' | b'.' => {
                i += 1;
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'_')
                    || (i < bytes.len()
                        && matches!(bytes[i], b'-' | b'+')
                        && matches!(bytes[i - 1], b'e' | b'E'))
                {
                    i += 1;
                }
                let lit = &text[start..i];
                let n = lit
                    .replace('_', "")
                    .parse::<f64>()
                    .map_err(|_| err(start, format!("invalid number `{lit}`")))?;
                out.push((start, Tok::Num(n)));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'-' | b'.'))
                {
                    i += 1;
                }
                out.push((start, Tok::Ident(text[start..i].to_string())));
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(err(start, format!("unexpected character {ch:?}")));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |t| t.0)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            offset: self.offset(),
            message: message.into(),
        })
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.toks.get(self.pos), Some((_, Tok::Ident(w))) if w == word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.keyword("not") {
            self.depth += 1;
            if self.depth > DEPTH_MAX {
                return self.err(format!("nested deeper than {DEPTH_MAX}"));
            }
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let left = self.primary()?;
        if let Some((_, Tok::Op(op))) = self.toks.get(self.pos).cloned() {
            self.pos += 1;
            let right = self.primary()?;
            return Ok(Expr::Cmp(op, Box::new(left), Box::new(right)));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let Some((at, tok)) = self.toks.get(self.pos).cloned() else {
            return self.err("expected a value, found the end of the condition");
        };
        self.pos += 1;
        match tok {
            Tok::Num(n) => Ok(Expr::Num(n)),
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::LParen => {
                self.depth += 1;
                if self.depth > DEPTH_MAX {
                    return self.err(format!("nested deeper than {DEPTH_MAX}"));
                }
                let inner = self.or()?;
                self.depth -= 1;
                match self.toks.get(self.pos) {
                    Some((_, Tok::RParen)) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    _ => self.err("expected `)`"),
                }
            }
            Tok::Ident(word) => match word.as_str() {
                "true" => Ok(Expr::Bool(true)),
                "false" => Ok(Expr::Bool(false)),
                "and" | "or" | "not" => Err(ParseError {
                    offset: at,
                    message: format!("expected a value, found `{word}`"),
                }),
                _ => reference(&word).map(Expr::Ref).ok_or_else(|| ParseError {
                    offset: at,
                    message: format!(
                        "unknown reference `{word}`; use STEP.metrics.NAME, STEP.status, STEP.outputs.NAME[.FIELD] or params.NAME"
                    ),
                }),
            },
            Tok::RParen => Err(ParseError {
                offset: at,
                message: "unexpected `)`".to_string(),
            }),
            Tok::Op(op) => Err(ParseError {
                offset: at,
                message: format!("expected a value before `{}`", op.as_str()),
            }),
        }
    }
}

/// The reference `word` spells, if any.
fn reference(word: &str) -> Option<Ref> {
    let parts: Vec<&str> = word.split('.').collect();
    match parts.as_slice() {
        ["params", name] if !name.is_empty() => Some(Ref::Param(name.to_string())),
        [step, "metrics", name] if !step.is_empty() && !name.is_empty() => Some(Ref::Metric {
            step: step.to_string(),
            name: name.to_string(),
        }),
        [step, "status"] if !step.is_empty() => Some(Ref::Status(step.to_string())),
        [step, "outputs", output] if !step.is_empty() && !output.is_empty() => Some(Ref::Output {
            step: step.to_string(),
            output: output.to_string(),
            field: None,
        }),
        [step, "outputs", output, field]
            if !step.is_empty() && !output.is_empty() && !field.is_empty() =>
        {
            Some(Ref::Output {
                step: step.to_string(),
                output: output.to_string(),
                field: Some(field.to_string()),
            })
        }
        _ => None,
    }
}

/// Parses a condition.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    if text.len() > EXPR_BYTES_MAX {
        return Err(ParseError {
            offset: 0,
            message: format!(
                "condition is {} bytes; the limit is {EXPR_BYTES_MAX}",
                text.len()
            ),
        });
    }
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        pos: 0,
        end: text.len(),
        depth: 0,
    };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return p.err("expected `and`, `or` or the end of the condition");
    }
    Ok(e)
}

impl Expr {
    /// Every reference in the expression.
    pub fn refs(&self) -> Vec<&Ref> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    /// Renames the steps that references name, where `rename` says so (a
    /// sweep turns `train` into `train[3]` inside combination 3).
    pub fn rename_steps(&mut self, rename: &dyn Fn(&str) -> Option<String>) {
        match self {
            Expr::Ref(Ref::Metric { step, .. } | Ref::Status(step) | Ref::Output { step, .. }) => {
                if let Some(new) = rename(step) {
                    *step = new;
                }
            }
            Expr::Ref(Ref::Param(_)) | Expr::Num(_) | Expr::Str(_) | Expr::Bool(_) => {}
            Expr::Not(e) => e.rename_steps(rename),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
                a.rename_steps(rename);
                b.rename_steps(rename);
            }
        }
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Ref>) {
        match self {
            Expr::Ref(r) => out.push(r),
            Expr::Not(e) => e.collect(out),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
                a.collect(out);
                b.collect(out);
            }
            Expr::Num(_) | Expr::Str(_) | Expr::Bool(_) => {}
        }
    }
}

/// A value during evaluation.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Num(n) => write!(f, "{n}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// What a condition can see.
pub trait Scope {
    /// The value of a reference, or why there is none; [`eval`] wraps the
    /// reason in [`EvalError::Lookup`] with the reference.
    fn lookup(&self, r: &Ref) -> Result<Value, Unresolved>;
}

/// Why a [`Scope`] has no value for a reference; each names its offender.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    /// The pipeline has no such param.
    #[error("no param `{0}`")]
    NoParam(String),
    /// The step has not settled (or does not exist).
    #[error("step `{0}` has not run")]
    NotRun(String),
    /// The step reported no such metric.
    #[error("step `{step}` reported no metric `{name}`")]
    NoMetric {
        /// The step.
        step: String,
        /// The metric.
        name: String,
    },
    /// The step produced no such output.
    #[error("step `{step}` produced no output `{output}`")]
    NoOutput {
        /// The step.
        step: String,
        /// The output.
        output: String,
    },
    /// The output is larger than a condition may read.
    #[error("output `{step}.{output}` is {size} bytes; conditions read outputs of at most {max}")]
    OutputTooLarge {
        /// The step.
        step: String,
        /// The output.
        output: String,
        /// Its size.
        size: u64,
        /// The most a condition reads.
        max: u64,
    },
    /// The output's JSON has no such field.
    #[error("output `{step}.{output}` has no JSON field `{field}`")]
    NoField {
        /// The step.
        step: String,
        /// The output.
        output: String,
        /// The field.
        field: String,
    },
    /// The value is an array, object or null.
    #[error("`{reference}` is {value}, not a number, string or boolean")]
    NotScalar {
        /// The reference, as written.
        reference: String,
        /// The JSON value it had.
        value: String,
    },
    /// The output could not be read.
    #[error("{0}")]
    Unreadable(String),
    /// A fixed map has no value under the reference.
    #[error("`{0}` has no value")]
    NoValue(String),
}

/// A fixed map of values (tests, params-only conditions).
impl Scope for BTreeMap<String, Value> {
    fn lookup(&self, r: &Ref) -> Result<Value, Unresolved> {
        self.get(&r.to_string())
            .cloned()
            .ok_or_else(|| Unresolved::NoValue(r.to_string()))
    }
}

/// Why a condition could not be evaluated; each names its offender.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The [`Scope`] has no value for a reference.
    #[error("{reason}")]
    Lookup {
        /// The reference, as written.
        reference: String,
        /// The scope's reason (it names the reference).
        reason: Unresolved,
    },
    /// The whole condition (or a `not`/`and`/`or` operand) is not a boolean.
    #[error("the condition is {value}, not true or false")]
    NotBoolean {
        /// The value it had.
        value: Value,
    },
    /// `a OP b` over values that do not compare.
    #[error("cannot compare {left} {} {right}", .op.as_str())]
    Incomparable {
        /// The left value.
        left: Value,
        /// The operator.
        op: Cmp,
        /// The right value.
        right: Value,
    },
}

/// Evaluates `e`; the result must be a boolean.
pub fn eval(e: &Expr, scope: &dyn Scope) -> Result<bool, EvalError> {
    match value(e, scope)? {
        Value::Bool(b) => Ok(b),
        value => Err(EvalError::NotBoolean { value }),
    }
}

/// Numbers compare with numeric-looking strings numerically (params are
/// strings).
fn as_num(v: &Value) -> Option<f64> {
    match v {
        Value::Num(n) => Some(*n),
        Value::Str(s) => s.trim().parse().ok(),
        Value::Bool(_) => None,
    }
}

fn value(e: &Expr, scope: &dyn Scope) -> Result<Value, EvalError> {
    Ok(match e {
        Expr::Num(n) => Value::Num(*n),
        Expr::Str(s) => Value::Str(s.clone()),
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Ref(r) => scope.lookup(r).map_err(|reason| EvalError::Lookup {
            reference: r.to_string(),
            reason,
        })?,
        Expr::Not(inner) => Value::Bool(!eval(inner, scope)?),
        Expr::And(a, b) => Value::Bool(eval(a, scope)? && eval(b, scope)?),
        Expr::Or(a, b) => Value::Bool(eval(a, scope)? || eval(b, scope)?),
        Expr::Cmp(op, a, b) => {
            let (l, r) = (value(a, scope)?, value(b, scope)?);
            let ordering = match (&l, &r) {
                (Value::Bool(x), Value::Bool(y)) => x.partial_cmp(y),
                (Value::Str(x), Value::Str(y)) if as_num(&l).is_none() || as_num(&r).is_none() => {
                    x.partial_cmp(y)
                }
                _ => match (as_num(&l), as_num(&r)) {
                    (Some(x), Some(y)) => x.partial_cmp(&y),
                    _ => {
                        return Err(EvalError::Incomparable {
                            left: l,
                            op: *op,
                            right: r,
                        });
                    }
                },
            };
            let Some(o) = ordering else {
                return Err(EvalError::Incomparable {
                    left: l,
                    op: *op,
                    right: r,
                });
            };
            use std::cmp::Ordering::*;
            Value::Bool(match op {
                Cmp::Eq => o == Equal,
                Cmp::Ne => o != Equal,
                Cmp::Lt => o == Less,
                Cmp::Le => o != Greater,
                Cmp::Gt => o == Greater,
                Cmp::Ge => o != Less,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("evaluate.metrics.accuracy".to_string(), Value::Num(0.93)),
            ("evaluate.metrics.blessed".to_string(), Value::Num(1.0)),
            ("params.min".to_string(), Value::Str("0.9".to_string())),
            ("params.mode".to_string(), Value::Str("fast".to_string())),
            (
                "train.status".to_string(),
                Value::Str("succeeded".to_string()),
            ),
        ])
    }

    fn check(text: &str) -> Result<bool, String> {
        eval(
            &parse(text).map_err(|e| format!("{}@{}", e.message, e.offset))?,
            &scope(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn evaluates_comparisons_logic_and_numeric_strings() {
        assert_eq!(check("evaluate.metrics.accuracy >= 0.9"), Ok(true));
        assert_eq!(check("evaluate.metrics.accuracy >= params.min"), Ok(true));
        assert_eq!(
            check("evaluate.metrics.blessed == 1 and not (params.mode == 'slow')"),
            Ok(true)
        );
        assert_eq!(
            check("evaluate.metrics.accuracy < 0.5 or train.status != \"succeeded\""),
            Ok(false)
        );
        assert_eq!(check("true and false or true"), Ok(true));
        assert_eq!(check("-1.5e1 < 0"), Ok(true));
    }

    #[test]
    fn evaluation_errors_name_the_culprit() {
        assert_eq!(
            check("evaluate.metrics.f1 > 0"),
            Err("`evaluate.metrics.f1` has no value".into())
        );
        assert_eq!(
            check("params.mode > 1"),
            Err("cannot compare \"fast\" > 1".into())
        );
        assert_eq!(
            check("evaluate.metrics.accuracy"),
            Err("the condition is 0.93, not true or false".into())
        );
    }

    #[test]
    fn parse_errors_carry_offsets() {
        let e = |t: &str| parse(t).unwrap_err();
        assert_eq!(e("a.metrics.x >").offset, 13);
        assert_eq!(
            e("a.metrics.x >").message,
            "expected a value, found the end of the condition"
        );
        assert_eq!(e("(a.status == 'x'").message, "expected `)`");
        assert_eq!(e("a.metrics.x = 1").offset, 12);
        assert_eq!(
            e("train.loss < 1").message,
            "unknown reference `train.loss`; use STEP.metrics.NAME, STEP.status, STEP.outputs.NAME[.FIELD] or params.NAME"
        );
        assert_eq!(e("1 < 2 3").offset, 6);
        assert_eq!(e("'open").message, "unterminated string");
        assert!(
            e(&"not ".repeat(40))
                .message
                .contains("nested deeper than 32")
        );
    }

    #[test]
    fn refs_are_collected() {
        let p = parse("a.metrics.x > params.y or b.status == 'failed'").unwrap();
        let refs: Vec<String> = p.refs().iter().map(|r| r.to_string()).collect();
        assert_eq!(refs, ["a.metrics.x", "params.y", "b.status"]);
    }
}

/// Property tests: arbitrary text never panics the parser or evaluator, the
/// length and nesting bounds hold, and generated conditions evaluate as a
/// reference evaluator (written here, independently) says.
/// `PROPTEST_CASES=N` runs more cases.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    /// Nesting of `not` and parentheses as the parser counts it is bounded
    /// by `DEPTH_MAX`; a parsed tree's `Not` chain can be no deeper.
    fn not_depth(e: &Expr) -> usize {
        match e {
            Expr::Not(x) => 1 + not_depth(x),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => not_depth(a).max(not_depth(b)),
            Expr::Num(_) | Expr::Str(_) | Expr::Bool(_) | Expr::Ref(_) => 0,
        }
    }

    fn tree_depth(e: &Expr) -> usize {
        match e {
            Expr::Not(x) => 1 + tree_depth(x),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
                1 + tree_depth(a).max(tree_depth(b))
            }
            Expr::Num(_) | Expr::Str(_) | Expr::Bool(_) | Expr::Ref(_) => 1,
        }
    }

    /// The reference language: literals, comparisons, `and`/`or`/`not`,
    /// and explicit parentheses.
    #[derive(Clone, Debug)]
    enum R {
        Num(i32),
        Str(String),
        Bool(bool),
        Param(&'static str),
        Paren(Box<R>),
        Not(Box<R>),
        And(Box<R>, Box<R>),
        Or(Box<R>, Box<R>),
        Cmp(Cmp, Box<R>, Box<R>),
    }

    #[derive(Clone, Debug, PartialEq)]
    enum RV {
        Num(f64),
        Str(String),
        Bool(bool),
    }

    /// Params the reference scope holds: a number-like string and a word.
    const PARAMS: &[(&str, &str)] = &[("n", "2"), ("w", "fast")];

    fn scope() -> BTreeMap<String, Value> {
        PARAMS
            .iter()
            .map(|(k, v)| (format!("params.{k}"), Value::Str(v.to_string())))
            .collect()
    }

    /// The semantics, restated: `and`/`or` short-circuit left to right and
    /// want booleans; numbers compare numerically with numeric strings;
    /// two strings that are not both numeric compare as text; booleans
    /// compare with booleans (false < true); anything else is an error.
    fn reference(r: &R) -> Result<RV, ()> {
        let boolean = |r: &R| match reference(r)? {
            RV::Bool(b) => Ok(b),
            _ => Err(()),
        };
        Ok(match r {
            R::Num(n) => RV::Num(f64::from(*n)),
            R::Str(s) => RV::Str(s.clone()),
            R::Bool(b) => RV::Bool(*b),
            R::Param(p) => RV::Str(
                PARAMS
                    .iter()
                    .find(|(k, _)| k == p)
                    .map(|(_, v)| v.to_string())
                    .ok_or(())?,
            ),
            R::Paren(x) => reference(x)?,
            R::Not(x) => RV::Bool(!boolean(x)?),
            R::And(a, b) => RV::Bool(boolean(a)? && boolean(b)?),
            R::Or(a, b) => RV::Bool(boolean(a)? || boolean(b)?),
            R::Cmp(op, a, b) => {
                let (l, r) = (reference(a)?, reference(b)?);
                let num = |v: &RV| match v {
                    RV::Num(n) => Some(*n),
                    RV::Str(s) => s.trim().parse::<f64>().ok(),
                    RV::Bool(_) => None,
                };
                let o = match (&l, &r) {
                    (RV::Bool(x), RV::Bool(y)) => x.cmp(y),
                    (RV::Str(x), RV::Str(y)) if num(&l).is_none() || num(&r).is_none() => x.cmp(y),
                    _ => match (num(&l), num(&r)) {
                        (Some(x), Some(y)) => x.partial_cmp(&y).ok_or(())?,
                        _ => return Err(()),
                    },
                };
                use std::cmp::Ordering::*;
                RV::Bool(match op {
                    Cmp::Eq => o == Equal,
                    Cmp::Ne => o != Equal,
                    Cmp::Lt => o == Less,
                    Cmp::Le => o != Greater,
                    Cmp::Gt => o == Greater,
                    Cmp::Ge => o != Less,
                })
            }
        })
    }

    /// Renders with the parentheses precedence requires (or < and < not <
    /// comparison < value; `and`/`or` are left-associative) plus the
    /// explicit ones.
    fn render(r: &R) -> String {
        let wrap = |x: &R, need: bool| {
            if need {
                format!("({})", render(x))
            } else {
                render(x)
            }
        };
        let is = |x: &R, or: bool, and: bool, not: bool, cmp: bool| match x {
            R::Or(..) => or,
            R::And(..) => and,
            R::Not(..) => not,
            R::Cmp(..) => cmp,
            _ => false,
        };
        match r {
            R::Num(n) => n.to_string(),
            R::Str(s) => format!("'{s}'"),
            R::Bool(b) => b.to_string(),
            R::Param(p) => format!("params.{p}"),
            R::Paren(x) => format!("({})", render(x)),
            R::Not(x) => format!("not {}", wrap(x, is(x, true, true, false, false))),
            R::And(a, b) => format!(
                "{} and {}",
                wrap(a, is(a, true, false, false, false)),
                wrap(b, is(b, true, true, false, false))
            ),
            R::Or(a, b) => format!(
                "{} or {}",
                render(a),
                wrap(b, is(b, true, false, false, false))
            ),
            R::Cmp(op, a, b) => format!(
                "{} {} {}",
                wrap(a, is(a, true, true, true, true)),
                op.as_str(),
                wrap(b, is(b, true, true, true, true))
            ),
        }
    }

    /// The parse tree the rendering must give (explicit parentheses vanish).
    fn expected(r: &R) -> Expr {
        let b = |x: &R| Box::new(expected(x));
        match r {
            R::Num(n) => Expr::Num(f64::from(*n)),
            R::Str(s) => Expr::Str(s.clone()),
            R::Bool(v) => Expr::Bool(*v),
            R::Param(p) => Expr::Ref(Ref::Param(p.to_string())),
            R::Paren(x) => expected(x),
            R::Not(x) => Expr::Not(b(x)),
            R::And(x, y) => Expr::And(b(x), b(y)),
            R::Or(x, y) => Expr::Or(b(x), b(y)),
            R::Cmp(op, x, y) => Expr::Cmp(*op, b(x), b(y)),
        }
    }

    fn cmp_op() -> impl Strategy<Value = Cmp> {
        prop::sample::select(vec![Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge])
    }

    fn arb_r() -> impl Strategy<Value = R> {
        let leaf = prop_oneof![
            (-3i32..4).prop_map(R::Num),
            "[a-z ]{0,4}".prop_map(R::Str),
            any::<bool>().prop_map(R::Bool),
            prop::sample::select(vec!["n", "w"]).prop_map(R::Param),
        ];
        leaf.prop_recursive(6, 48, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|x| R::Paren(Box::new(x))),
                inner.clone().prop_map(|x| R::Not(Box::new(x))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| R::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| R::Or(Box::new(a), Box::new(b))),
                (cmp_op(), inner.clone(), inner).prop_map(|(op, a, b)| R::Cmp(
                    op,
                    Box::new(a),
                    Box::new(b)
                )),
            ]
        })
    }

    /// Text built from the language's own pieces, so the parser gets deep
    /// inside before something goes wrong.
    fn tokenish() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "(",
            ")",
            "not ",
            " and ",
            " or ",
            "==",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "=",
            "!",
            "'",
            "\"",
            "1",
            "-2.5e3",
            "1e999",
            ".",
            "_",
            "true",
            "false",
            "params.x",
            "a.status",
            "a.metrics.m",
            "a.outputs.o.f",
            "a..b",
            "é",
            "\u{0}",
            " ",
        ]);
        prop::collection::vec(piece, 0..200).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]

        #[test]
        fn arbitrary_text_never_panics_and_bounds_hold(
            text in prop_oneof![any::<String>(), tokenish(), "[()notandor' 0-9a-z.=<>!]{0,1200}"],
        ) {
            match parse(&text) {
                Ok(e) => {
                    prop_assert!(text.len() <= EXPR_BYTES_MAX);
                    prop_assert!(not_depth(&e) <= DEPTH_MAX, "{text:?}");
                    prop_assert!(tree_depth(&e) <= EXPR_BYTES_MAX, "{text:?}");
                    // Evaluation never panics; a failure names something.
                    if let Err(m) = eval(&e, &scope()) {
                        prop_assert!(!m.to_string().is_empty());
                    }
                }
                Err(err) => {
                    prop_assert!(err.offset <= text.len(), "{err:?} in {text:?}");
                    prop_assert!(!err.message.is_empty());
                    if text.len() > EXPR_BYTES_MAX {
                        prop_assert!(err.message.contains("the limit is"), "{err:?}");
                    }
                }
            }
        }

        #[test]
        fn nesting_past_the_bound_is_refused_with_its_offset(depth in 0usize..80, parens in any::<bool>()) {
            let text = if parens {
                format!("{}true{}", "(".repeat(depth), ")".repeat(depth))
            } else {
                format!("{}true", "not ".repeat(depth))
            };
            match parse(&text) {
                Ok(_) => prop_assert!(depth <= DEPTH_MAX, "depth {depth} accepted"),
                Err(e) => {
                    prop_assert!(depth > DEPTH_MAX, "depth {depth} refused: {e:?}");
                    prop_assert_eq!(e.message, format!("nested deeper than {DEPTH_MAX}"));
                    let unit = if parens { 1 } else { 4 };
                    prop_assert_eq!(e.offset, (DEPTH_MAX + 1) * unit);
                }
            }
        }

        #[test]
        fn generated_conditions_parse_as_written_and_agree_with_the_reference(r in arb_r()) {
            let text = render(&r);
            prop_assume!(text.len() <= EXPR_BYTES_MAX);
            let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e:?}")))?;
            prop_assert_eq!(&parsed, &expected(&r), "{}", text);
            let want = match reference(&r) {
                Ok(RV::Bool(b)) => Ok(b),
                _ => Err(()),
            };
            let got = eval(&parsed, &scope()).map_err(|_| ());
            prop_assert_eq!(got, want, "{}", text);
        }
    }
}
