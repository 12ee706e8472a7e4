//! CSV → train / eval examples, streamed.
//!
//! Reads a CSV with a header row, treats empty (or all-whitespace) fields
//! and `NA` as missing, drops rows whose label is missing, and splits the
//! rest deterministically by hashing `(split_seed, row index)` — no global
//! shuffle, so a row's side never depends on any other row.
//!
//! Two passes over the input, each holding one batch per output:
//!
//! 1. **Inference** reads the first [`IngestOptions::infer_rows`] labelled
//!    rows: a column is a number column when every non-missing value there
//!    parses as a finite `f64`, else a string column; the label is always a
//!    string. A column with no value in those rows is a string column,
//!    unless those rows were the whole file (then nothing contradicts
//!    "number", as before streaming).
//! 2. **Conversion** parses every row into Arrow batches of at most
//!    [`BATCH_ROWS`] rows per output. A value that does not fit its column
//!    (text in a number column past the inference rows) or a row with the
//!    wrong number of fields is *malformed*: by default it fails the step
//!    with the line and column; with [`Malformed::Drop`] the row is dropped
//!    and counted in [`IngestReport::rows_malformed`].

use std::io::{BufReader, Read, Write};
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::Schema as ArrowSchema;

use crate::csv::{CsvReader, Record};
use crate::example::{Column, ColumnType, ExampleWriter, Schema};
use crate::table::BATCH_ROWS;
use crate::{Error, Result};

/// Default [`IngestOptions::infer_rows`].
pub const INFER_ROWS_DEFAULT: u64 = 10_000;

/// What to do with a malformed row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Fail, naming the line and column.
    Fail,
    /// Drop the row and count it.
    Drop,
}

impl std::str::FromStr for Malformed {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fail" => Ok(Malformed::Fail),
            "drop" => Ok(Malformed::Drop),
            other => Err(Error::invalid(format!(
                "malformed must be `fail` or `drop`, got `{other}`"
            ))),
        }
    }
}

/// What [`ingest`] needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestOptions {
    /// The label column's name.
    pub label: String,
    /// The share of rows that goes to eval, in `[0, 1]`.
    pub eval_fraction: f64,
    /// Seed of the split hash; a different seed gives a different split.
    pub split_seed: u64,
    /// Labelled rows read to infer column types (at least 1).
    pub infer_rows: u64,
    /// What a malformed row does.
    pub malformed: Malformed,
}

impl IngestOptions {
    /// Options with the defaults: 20% eval, seed 0, inference over
    /// [`INFER_ROWS_DEFAULT`] rows, malformed rows fail.
    pub fn new(label: impl Into<String>) -> Self {
        IngestOptions {
            label: label.into(),
            eval_fraction: 0.2,
            split_seed: 0,
            infer_rows: INFER_ROWS_DEFAULT,
            malformed: Malformed::Fail,
        }
    }
}

/// What [`ingest`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestReport {
    /// The schema written to both outputs.
    pub schema: Schema,
    /// Rows written to train.
    pub rows_train: u64,
    /// Rows written to eval.
    pub rows_eval: u64,
    /// Rows dropped because their label is missing.
    pub rows_dropped: u64,
    /// Malformed rows dropped ([`Malformed::Drop`] only).
    pub rows_malformed: u64,
}

/// Whether a CSV field counts as missing: empty, all whitespace, or `NA`.
pub fn is_missing(field: &str) -> bool {
    let field = trim(field);
    field.is_empty() || field == "NA"
}

/// The field as a number, if it is a finite one.
pub fn parse_number(field: &str) -> Option<f64> {
    let field = trim(field);
    parse_decimal(field.as_bytes())
        .or_else(|| field.parse::<f64>().ok())
        .filter(|x| x.is_finite())
}

/// [`str::trim`], without its Unicode scan when both ends are visible ASCII
/// (nearly every field).
fn trim(field: &str) -> &str {
    match field.as_bytes() {
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => field,
        [only] if only.is_ascii_graphic() => field,
        _ => field.trim(),
    }
}

/// A plain decimal (`-12.5`, `3550`, `.5`: an optional sign, at most 15
/// digits, at most one point) exactly as [`str::parse`] reads it, but
/// cheaper: the digits make an integer `m < 10^15` and the point a power
/// `10^k`, `k ≤ 15`; both are exact doubles, so `m / 10^k` (one correctly
/// rounded division) is the correctly rounded value of the decimal, the
/// same bits `str::parse` returns. `None` for anything else (exponents,
/// more digits, `inf`...), which `str::parse` then handles.
fn parse_decimal(text: &[u8]) -> Option<f64> {
    const POWERS: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    let (mut mantissa, mut count, mut point) = (0u64, 0usize, None);
    for (i, &b) in digits.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                count += 1;
            }
            b'.' if point.is_none() => point = Some(i),
            _ => return None,
        }
    }
    if count == 0 || count > 15 {
        return None;
    }
    let scale = point.map_or(0, |p| digits.len() - p - 1);
    let value = mantissa as f64 / POWERS[scale];
    Some(if negative { -value } else { value })
}

/// SplitMix64's output function: a fixed, well-mixed 64-bit hash step.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether data row `index` (0-based, counting every CSV data row, dropped
/// ones included, so dropping a row never moves another) goes to eval.
pub fn is_eval(split_seed: u64, index: u64, eval_fraction: f64) -> bool {
    let hash = splitmix64(splitmix64(split_seed) ^ index);
    // The top 53 bits as a uniform number in [0, 1).
    let unit = (hash >> 11) as f64 / (1u64 << 53) as f64;
    unit < eval_fraction
}

/// Reads the CSV (opened twice by `open`: inference, then conversion),
/// writes the train and eval examples streams, reports the counts.
pub fn ingest<R: Read, W: Write>(
    mut open: impl FnMut() -> std::io::Result<R>,
    options: &IngestOptions,
    train: W,
    eval: W,
) -> Result<IngestReport> {
    check_options(options)?;
    let schema = infer(open()?, options)?;
    let arrow = schema.to_arrow();
    let label = schema.label_index()?;
    let ragged = options.malformed == Malformed::Drop;
    let mut reader = CsvReader::new(BufReader::with_capacity(1 << 20, open()?));
    if ragged {
        reader = reader.allow_ragged();
    }
    reader.read_record()?; // the header, checked by `infer`
    let mut sides = [
        Side::new(&schema, &arrow, ExampleWriter::new(train, &schema)?),
        Side::new(&schema, &arrow, ExampleWriter::new(eval, &schema)?),
    ];
    let width = schema.columns.len();
    let mut numbers = vec![None; width];
    let (mut index, mut rows_dropped, mut rows_malformed) = (0u64, 0u64, 0u64);
    while let Some((line, record)) = reader.read_record()? {
        let this = index;
        index += 1;
        if record.len() != width {
            // Only reachable when dropping: the reader fails otherwise.
            rows_malformed += 1;
            continue;
        }
        if is_missing(record.get(label)) {
            rows_dropped += 1;
            continue;
        }
        match parse_numbers(&schema, record, line, &mut numbers) {
            Ok(()) => {}
            Err(_) if ragged => {
                rows_malformed += 1;
                continue;
            }
            Err(e) => return Err(e),
        }
        let side =
            &mut sides[usize::from(is_eval(options.split_seed, this, options.eval_fraction))];
        side.push(record, &numbers)?;
    }
    let [train, eval] = sides;
    let (rows_train, rows_eval) = (train.finish()?, eval.finish()?);
    Ok(IngestReport {
        schema,
        rows_train,
        rows_eval,
        rows_dropped,
        rows_malformed,
    })
}

/// Checks the options every source format shares.
pub(crate) fn check_options(options: &IngestOptions) -> Result<()> {
    if !(0.0..=1.0).contains(&options.eval_fraction) {
        return Err(Error::invalid(format!(
            "eval_fraction must be within [0, 1], got {}",
            options.eval_fraction
        )));
    }
    if options.infer_rows == 0 {
        return Err(Error::invalid("infer_rows must be at least 1"));
    }
    Ok(())
}

/// Reads the header and the inference rows; returns the schema.
fn infer(csv: impl Read, options: &IngestOptions) -> Result<Schema> {
    let mut reader = CsvReader::new(BufReader::new(csv));
    if options.malformed == Malformed::Drop {
        reader = reader.allow_ragged();
    }
    let Some((_, header)) = reader.next_record()? else {
        return Err(Error::invalid("CSV is empty: no header row"));
    };
    for (i, name) in header.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(Error::invalid(format!(
                "CSV header: column {} has no name",
                i + 1
            )));
        }
        if header[..i].contains(name) {
            return Err(Error::invalid(format!(
                "CSV header: column `{name}` appears twice"
            )));
        }
    }
    let label = header
        .iter()
        .position(|name| *name == options.label)
        .ok_or_else(|| {
            Error::invalid(format!(
                "label column `{}` is not in the CSV header ({})",
                options.label,
                header.join(", ")
            ))
        })?;
    // Per column: every value seen parses as a number; some value was seen.
    let mut numeric = vec![true; header.len()];
    let mut seen = vec![false; header.len()];
    let mut sampled = 0u64;
    let mut whole_file = true;
    while let Some((_, record)) = reader.read_record()? {
        if record.len() != header.len() || is_missing(record.get(label)) {
            continue;
        }
        if sampled == options.infer_rows {
            whole_file = false;
            break;
        }
        sampled += 1;
        for (i, field) in record.iter().enumerate() {
            if !is_missing(field) {
                seen[i] = true;
                numeric[i] = numeric[i] && parse_number(field).is_some();
            }
        }
    }
    let columns = header
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let number = i != label && numeric[i] && (seen[i] || whole_file);
            Column {
                name: name.clone(),
                ty: if number {
                    ColumnType::Number
                } else {
                    ColumnType::String
                },
            }
        })
        .collect();
    let schema = Schema {
        label: options.label.clone(),
        columns,
    };
    schema.check()?;
    Ok(schema)
}

/// Parses the record's number columns into `numbers` (`None`: missing, or
/// a string column); fails on the first value that is not a number.
fn parse_numbers(
    schema: &Schema,
    record: &Record,
    line: u64,
    numbers: &mut [Option<f64>],
) -> Result<()> {
    for (i, column) in schema.columns.iter().enumerate() {
        numbers[i] = None;
        if column.ty != ColumnType::Number {
            continue;
        }
        let field = trim(record.get(i));
        if field.is_empty() || field == "NA" {
            continue;
        }
        numbers[i] = Some(parse_number(field).ok_or_else(|| {
            Error::format(
                "CSV",
                line,
                format!(
                    "column `{}` is a number column (inferred from the first rows) but holds {field:?}",
                    column.name
                ),
            )
        })?);
    }
    Ok(())
}

/// One output: column builders for the batch being filled, and its writer.
/// Shared with [`crate::parquet`], so both sources cut the same batches.
pub(crate) struct Side<W: Write> {
    arrow: Arc<ArrowSchema>,
    numbers: Vec<Option<Float64Builder>>,
    texts: Vec<Option<StringBuilder>>,
    pending: usize,
    writer: ExampleWriter<W>,
}

impl<W: Write> Side<W> {
    pub(crate) fn new(schema: &Schema, arrow: &Arc<ArrowSchema>, writer: ExampleWriter<W>) -> Self {
        let is = |ty| schema.columns.iter().map(move |c| c.ty == ty);
        Side {
            arrow: arrow.clone(),
            numbers: is(ColumnType::Number)
                .map(|n| n.then(|| Float64Builder::with_capacity(BATCH_ROWS)))
                .collect(),
            texts: is(ColumnType::String)
                .map(|t| t.then(StringBuilder::new))
                .collect(),
            pending: 0,
            writer,
        }
    }

    fn push(&mut self, record: &Record, numbers: &[Option<f64>]) -> Result<()> {
        for (i, (number, text)) in self.numbers.iter_mut().zip(&mut self.texts).enumerate() {
            if let Some(b) = number {
                b.append_option(numbers[i]);
            } else if let Some(b) = text {
                let field = record.get(i);
                if is_missing(field) {
                    b.append_null();
                } else {
                    b.append_value(field);
                }
            }
        }
        self.pending += 1;
        if self.pending == BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Adds a row of typed values (a Parquet row): `numbers[i]` for number
    /// columns, `texts[i]` for string columns, `None` when missing.
    pub(crate) fn push_values(
        &mut self,
        numbers: &[Option<f64>],
        texts: &[Option<&str>],
    ) -> Result<()> {
        for (i, (number, text)) in self.numbers.iter_mut().zip(&mut self.texts).enumerate() {
            if let Some(b) = number {
                b.append_option(numbers[i]);
            } else if let Some(b) = text {
                b.append_option(texts[i]);
            }
        }
        self.pending += 1;
        if self.pending == BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        self.pending = 0;
        let columns: Vec<ArrayRef> = self
            .numbers
            .iter_mut()
            .zip(&mut self.texts)
            .map(|(number, text)| match (number, text) {
                (Some(b), _) => Arc::new(b.finish()) as ArrayRef,
                (None, Some(b)) => Arc::new(b.finish()) as ArrayRef,
                (None, None) => unreachable!("every column has one builder"),
            })
            .collect();
        let batch = RecordBatch::try_new(self.arrow.clone(), columns)
            .map_err(|e| Error::invalid(format!("building a batch of examples: {e}")))?;
        self.writer.batch(&batch)
    }

    /// Writes the last batch and ends the stream; returns the rows written.
    pub(crate) fn finish(mut self) -> Result<u64> {
        self.flush()?;
        let rows = self.writer.rows();
        self.writer.finish()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::{Examples, Value};

    #[test]
    fn the_decimal_fast_path_gives_the_bits_str_parse_gives() {
        let fixed = [
            "0",
            "-0",
            "+7",
            "1.",
            ".5",
            "-.25",
            "3550",
            "40.8",
            "0.1",
            "0.3",
            "9007199254740993",
            "123456789012345",
            "1234567890123456",
            "0.000000000000001",
            "99999999999999.9",
            "1e5",
            "1.5E-3",
            "inf",
            "NaN",
            ".",
            "-",
            "1.2.3",
            "12a",
            "",
        ];
        let mut state = 0x5EED_u64;
        let mut generated = Vec::new();
        for _ in 0..20_000 {
            state = splitmix64(state);
            let digits = 1 + (state % 17) as usize;
            let mut text = String::new();
            if state & (1 << 20) != 0 {
                text.push('-');
            }
            for _ in 0..digits {
                let digit = splitmix64(state ^ text.len() as u64) % 10;
                text.push(char::from(b'0' + digit as u8));
            }
            let point = (state >> 8) as usize % (digits + 2);
            if point <= digits {
                text.insert(text.len() - point, '.');
            }
            generated.push(text);
        }
        for text in fixed
            .iter()
            .copied()
            .chain(generated.iter().map(String::as_str))
        {
            let want = text.parse::<f64>().ok().filter(|x| x.is_finite());
            let got = parse_number(text);
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{text:?}");
            if let Some(fast) = parse_decimal(text.as_bytes()) {
                assert_eq!(Some(fast.to_bits()), want.map(f64::to_bits), "{text:?}");
            }
        }
    }

    fn run(csv: &str, options: &IngestOptions) -> Result<(IngestReport, Examples, Examples)> {
        let (mut train, mut eval) = (Vec::new(), Vec::new());
        let report = ingest(|| Ok(csv.as_bytes()), options, &mut train, &mut eval)?;
        Ok((
            report,
            Examples::read(&train[..]).unwrap(),
            Examples::read(&eval[..]).unwrap(),
        ))
    }

    fn options(label: &str, eval_fraction: f64) -> IngestOptions {
        IngestOptions {
            eval_fraction,
            ..IngestOptions::new(label)
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn types_are_inferred_and_missing_values_become_null() {
        let csv = "kind,size,code,note\n\
                   a,1.5,7,x\n\
                   b,NA,08,\n\
                   a,-2e3,NA,\"y, z\"\n\
                   c, ,x9,NA\n";
        let (report, train, eval) = run(csv, &options("kind", 0.0)).unwrap();
        assert_eq!(
            report.schema.columns,
            vec![
                Column {
                    name: "kind".into(),
                    ty: ColumnType::String
                },
                Column {
                    name: "size".into(),
                    ty: ColumnType::Number
                },
                Column {
                    name: "code".into(),
                    ty: ColumnType::String
                },
                Column {
                    name: "note".into(),
                    ty: ColumnType::String
                },
            ]
        );
        assert_eq!(
            (report.rows_train, report.rows_eval, report.rows_dropped),
            (4, 0, 0)
        );
        assert_eq!(eval.rows, Vec::<Vec<Value>>::new());
        assert_eq!(
            train.rows,
            vec![
                vec![text("a"), Value::Number(1.5), text("7"), text("x")],
                vec![text("b"), Value::Missing, text("08"), Value::Missing],
                vec![
                    text("a"),
                    Value::Number(-2000.0),
                    Value::Missing,
                    text("y, z")
                ],
                vec![text("c"), Value::Missing, text("x9"), Value::Missing],
            ]
        );
    }

    #[test]
    fn numeric_label_stays_a_string_and_non_finite_numbers_are_strings() {
        let csv = "y,v\n1,inf\n0,2\n";
        let (report, train, _) = run(csv, &options("y", 0.0)).unwrap();
        let types: Vec<_> = report.schema.columns.iter().map(|c| c.ty).collect();
        assert_eq!(types, vec![ColumnType::String, ColumnType::String]);
        assert_eq!(train.rows[0], vec![text("1"), text("inf")]);
    }

    #[test]
    fn rows_with_a_missing_label_are_dropped_and_do_not_shape_types() {
        let csv = "x,y\nnot-a-number,NA\n1,a\n2,\n3,b\n";
        let (report, train, _) = run(csv, &options("y", 0.0)).unwrap();
        assert_eq!(report.rows_dropped, 2);
        assert_eq!(report.rows_train, 2);
        assert_eq!(report.schema.columns[0].ty, ColumnType::Number);
        assert_eq!(
            train.rows,
            vec![
                vec![Value::Number(1.0), text("a")],
                vec![Value::Number(3.0), text("b")]
            ]
        );
    }

    #[test]
    fn all_or_nothing_fractions_send_everything_one_way() {
        let csv = "y\na\nb\nc\n";
        let (report, _, eval) = run(csv, &options("y", 1.0)).unwrap();
        assert_eq!((report.rows_train, report.rows_eval), (0, 3));
        assert_eq!(eval.rows.len(), 3);
    }

    #[test]
    fn split_is_deterministic_seeded_and_close_to_the_fraction() {
        let n = 20_000u64;
        let pick = |seed| -> Vec<bool> { (0..n).map(|i| is_eval(seed, i, 0.2)).collect() };
        let seed0 = pick(0);
        assert_eq!(seed0, pick(0));
        let evals = seed0.iter().filter(|e| **e).count();
        assert!((3_800..=4_200).contains(&evals), "{evals} of {n}");
        let seed1 = pick(1);
        let differ = seed0.iter().zip(&seed1).filter(|(a, b)| a != b).count();
        assert!(differ > 4_000, "seeds 0 and 1 differ on only {differ} rows");
    }

    #[test]
    fn split_hash_is_pinned() {
        // Pins the hash so a change to it (which changes every split and so
        // every downstream digest) is deliberate.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        let first: Vec<u64> = (0..20).filter(|i| is_eval(0, *i, 0.2)).collect();
        assert_eq!(first, [1, 4, 18]);
    }

    #[test]
    fn bad_parameters_and_headers_are_rejected() {
        let err = run("y\na\n", &options("y", 1.5)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "eval_fraction must be within [0, 1], got 1.5"
        );
        let err = run("a,b\n1,2\n", &options("y", 0.2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "label column `y` is not in the CSV header (a, b)"
        );
        let err = run("a,a\n1,2\n", &options("a", 0.2)).unwrap_err();
        assert_eq!(err.to_string(), "CSV header: column `a` appears twice");
        let err = run("a,\n1,2\n", &options("a", 0.2)).unwrap_err();
        assert_eq!(err.to_string(), "CSV header: column 2 has no name");
        let err = run("", &options("a", 0.2)).unwrap_err();
        assert_eq!(err.to_string(), "CSV is empty: no header row");
    }

    #[test]
    fn malformed_row_names_its_line() {
        let err = run("a,b\n1,2\n3\n", &options("a", 0.2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CSV line 3: expected 2 fields (as in the header), found 1"
        );
    }

    #[test]
    fn text_past_the_inference_rows_fails_naming_line_and_column() {
        let csv = "y,x\na,1\nb,2\nc,oops\n";
        let err = run(
            csv,
            &IngestOptions {
                infer_rows: 2,
                ..options("y", 0.2)
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CSV line 4: column `x` is a number column (inferred from the first rows) but holds \"oops\""
        );
        // Inferring over the whole file makes it a string column instead.
        let (report, ..) = run(csv, &options("y", 0.2)).unwrap();
        assert_eq!(report.schema.columns[1].ty, ColumnType::String);
    }

    #[test]
    fn dropping_counts_malformed_rows_and_keeps_the_rest() {
        let csv = "y,x\na,1\nb,2\nc,oops\nd\ne,5\n";
        let drop = IngestOptions {
            infer_rows: 2,
            malformed: Malformed::Drop,
            ..options("y", 0.0)
        };
        let (report, train, _) = run(csv, &drop).unwrap();
        assert_eq!((report.rows_train, report.rows_malformed), (3, 2));
        let xs: Vec<&Value> = train.rows.iter().map(|r| &r[1]).collect();
        assert_eq!(
            xs,
            [
                &Value::Number(1.0),
                &Value::Number(2.0),
                &Value::Number(5.0)
            ]
        );
        // Without dropping, the ragged row fails too.
        let err = run("y,x\na,1\nd\n", &options("y", 0.0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CSV line 3: expected 2 fields (as in the header), found 1"
        );
        assert_eq!(
            "keep".parse::<Malformed>().unwrap_err().to_string(),
            "malformed must be `fail` or `drop`, got `keep`"
        );
    }

    #[test]
    fn a_column_empty_in_the_inference_rows_is_a_string_column() {
        let csv = "y,x\na,\nb,NA\nc,3\n";
        let sample = IngestOptions {
            infer_rows: 2,
            ..options("y", 0.0)
        };
        let (report, train, _) = run(csv, &sample).unwrap();
        assert_eq!(report.schema.columns[1].ty, ColumnType::String);
        assert_eq!(train.rows[2][1], text("3"));
        let (report, ..) = run(csv, &options("y", 0.0)).unwrap();
        assert_eq!(report.schema.columns[1].ty, ColumnType::Number);
    }

    #[test]
    fn many_rows_stream_in_batches_and_split_by_row_index() {
        let rows = BATCH_ROWS as u64 * 3 + 17;
        let mut csv = String::from("y,x\n");
        for i in 0..rows {
            csv.push_str(&format!("{},{i}\n", ["a", "b"][(i % 2) as usize]));
        }
        let (report, train, eval) = run(&csv, &options("y", 0.25)).unwrap();
        assert_eq!(report.rows_train + report.rows_eval, rows);
        let expected_eval: Vec<f64> = (0..rows)
            .filter(|&i| is_eval(0, i, 0.25))
            .map(|i| i as f64)
            .collect();
        let got: Vec<f64> = eval
            .rows
            .iter()
            .map(|r| match r[1] {
                Value::Number(x) => x,
                _ => panic!("x is a number column"),
            })
            .collect();
        assert_eq!(got, expected_eval);
        assert_eq!(train.rows.len() as u64, report.rows_train);
    }
}
