//! Generated data through the example pipeline's reader: the same columns
//! and types as the real Palmer Penguins file, every row kept.

#[test]
fn the_example_reader_loads_generated_rows_like_the_real_data() {
    let mut csv = Vec::new();
    sluice_tabular::generate::write_penguins(&mut csv, 1000, 0).unwrap();
    let real = std::fs::read("../examples/data/penguins.csv").unwrap();
    let header = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(header(&csv), header(&real));
    let options = sluice_tabular::ingest::IngestOptions::new("species");
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    let report =
        sluice_tabular::ingest::ingest(|| Ok(&csv[..]), &options, &mut train, &mut eval).unwrap();
    assert_eq!(report.rows_train + report.rows_eval, 1000);
    assert_eq!(report.rows_dropped, 0);
    let real_report = sluice_tabular::ingest::ingest(
        || Ok(&real[..]),
        &options,
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(
        report.schema, real_report.schema,
        "same columns, same types"
    );
}
