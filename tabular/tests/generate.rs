//! The generator binary end to end: the bytes it prints are the library's,
//! the example pipeline's reader accepts them, and bad arguments are refused.

use std::process::Command;

fn gen_bin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_penguins-gen"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_binary_prints_the_library_rows_for_a_seed() {
    let out = gen_bin(&["2000", "9"]);
    assert!(out.status.success());
    let mut expected = Vec::new();
    sluice_tabular::generate::write_penguins(&mut expected, 2000, 9).unwrap();
    assert_eq!(out.stdout, expected);
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 2001);
}

#[test]
fn the_example_reader_loads_generated_rows_like_the_real_data() {
    let out = gen_bin(&["1000"]);
    let real = std::fs::read("../examples/data/penguins.csv").unwrap();
    let header = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(header(&out.stdout), header(&real));
    let options = sluice_tabular::ingest::IngestOptions {
        label: "species".into(),
        eval_fraction: 0.2,
        split_seed: 0,
    };
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    let report =
        sluice_tabular::ingest::ingest(&out.stdout[..], &options, &mut train, &mut eval).unwrap();
    assert_eq!(report.rows_train + report.rows_eval, 1000);
    assert_eq!(report.rows_dropped, 0);
    let real_report =
        sluice_tabular::ingest::ingest(&real[..], &options, &mut Vec::new(), &mut Vec::new())
            .unwrap();
    assert_eq!(
        report.schema, real_report.schema,
        "same columns, same types"
    );
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    for args in [&[][..], &["many"], &["10", "-1"], &["10", "1", "2"]] {
        let out = gen_bin(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("usage: penguins-gen ROWS [SEED]")
        );
    }
}
