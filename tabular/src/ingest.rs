//! CSV → train / eval examples.
//!
//! Reads a CSV with a header row, treats empty (or all-whitespace) fields
//! and `NA` as missing, infers each column's type (number when every
//! non-missing value parses as a finite `f64`, else string; the label is
//! always a string), drops rows whose label is missing, and splits the rest
//! deterministically by hashing `(split_seed, row index)`.

use std::io::{BufRead, Write};

use crate::csv::CsvReader;
use crate::example::{Column, ColumnType, ExampleWriter, Schema, Value};
use crate::{Error, ROWS_MAX, Result};

/// What [`ingest`] needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestOptions {
    /// The label column's name.
    pub label: String,
    /// The share of rows that goes to eval, in `[0, 1]`.
    pub eval_fraction: f64,
    /// Seed of the split hash; a different seed gives a different split.
    pub split_seed: u64,
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
}

/// Whether a CSV field counts as missing: empty, all whitespace, or `NA`.
pub fn is_missing(field: &str) -> bool {
    let field = field.trim();
    field.is_empty() || field == "NA"
}

/// The field as a number, if it is a finite one.
pub fn parse_number(field: &str) -> Option<f64> {
    field.trim().parse::<f64>().ok().filter(|x| x.is_finite())
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

/// Reads the CSV, writes the train and eval examples, reports the counts.
pub fn ingest(
    csv: impl BufRead,
    options: &IngestOptions,
    train: impl Write,
    eval: impl Write,
) -> Result<IngestReport> {
    if !(0.0..=1.0).contains(&options.eval_fraction) {
        return Err(Error::invalid(format!(
            "eval_fraction must be within [0, 1], got {}",
            options.eval_fraction
        )));
    }
    let mut reader = CsvReader::new(csv);
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

    // Rows kept, with their data-row index for the split.
    let mut rows: Vec<(u64, Vec<Option<String>>)> = Vec::new();
    let mut index = 0u64;
    let mut rows_dropped = 0u64;
    while let Some((_, fields)) = reader.next_record()? {
        if index as usize == ROWS_MAX {
            return Err(Error::Limit {
                what: "CSV rows",
                limit: ROWS_MAX,
            });
        }
        let cells: Vec<Option<String>> = fields
            .into_iter()
            .map(|f| (!is_missing(&f)).then_some(f))
            .collect();
        if cells[label].is_none() {
            rows_dropped += 1;
        } else {
            rows.push((index, cells));
        }
        index += 1;
    }

    let columns: Vec<Column> = header
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let numeric = i != label
                && rows
                    .iter()
                    .filter_map(|(_, cells)| cells[i].as_deref())
                    .all(|f| parse_number(f).is_some());
            Column {
                name: name.clone(),
                ty: if numeric {
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

    let mut train = ExampleWriter::new(train, &schema)?;
    let mut eval = ExampleWriter::new(eval, &schema)?;
    let mut values = Vec::with_capacity(schema.columns.len());
    for (index, cells) in rows {
        values.clear();
        for (cell, column) in cells.into_iter().zip(&schema.columns) {
            values.push(match (cell, column.ty) {
                (None, _) => Value::Missing,
                (Some(f), ColumnType::Number) => {
                    Value::Number(parse_number(&f).expect("type inference checked it parses"))
                }
                (Some(f), ColumnType::String) => Value::Text(f),
            });
        }
        if is_eval(options.split_seed, index, options.eval_fraction) {
            eval.row(&values)?;
        } else {
            train.row(&values)?;
        }
    }
    Ok(IngestReport {
        schema,
        rows_train: train.rows(),
        rows_eval: eval.rows(),
        rows_dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::Examples;

    fn run(csv: &str, options: &IngestOptions) -> Result<(IngestReport, Examples, Examples)> {
        let (mut train, mut eval) = (Vec::new(), Vec::new());
        let report = ingest(csv.as_bytes(), options, &mut train, &mut eval)?;
        Ok((
            report,
            Examples::read(&train[..]).unwrap(),
            Examples::read(&eval[..]).unwrap(),
        ))
    }

    fn options(label: &str, eval_fraction: f64) -> IngestOptions {
        IngestOptions {
            label: label.into(),
            eval_fraction,
            split_seed: 0,
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
}
