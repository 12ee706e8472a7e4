//! Drift between `examples/data/penguins.csv` and its derived, shifted copy
//! `examples/data/penguins-shifted.csv`, with the settings of
//! `examples/pipelines/drift-retrain.toml`: both CSVs ingested alike, their
//! train splits compared, and a model retrained on the shifted data.

use sluice_tabular::drift::{Drift, DriftOptions, DriftReport, Measure};
use sluice_tabular::evaluation::{Blessing, evaluate};
use sluice_tabular::example::Examples;
use sluice_tabular::ingest::{IngestOptions, ingest};
use sluice_tabular::model::{HyperParams, train};
use sluice_tabular::transform::Transform;

const PENGUINS: &[u8] = include_bytes!("../../examples/data/penguins.csv");
const SHIFTED: &[u8] = include_bytes!("../../examples/data/penguins-shifted.csv");

/// The pipeline spec's settings.
const HYPER: HyperParams = HyperParams {
    learning_rate: 0.5,
    epochs: 10,
    l2: 0.0,
    batch_size: 32,
    shuffle_buffer: 8192,
    seed: 0,
};
const THRESHOLD: f64 = 0.9;

/// Train and eval examples of a CSV, split as the pipeline's ingest steps do.
fn ingested(csv: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    let options = IngestOptions::new("species");
    let report = ingest(|| Ok(csv), &options, &mut train, &mut eval).unwrap();
    assert_eq!(report.rows_train + report.rows_eval, 344);
    (train, eval)
}

fn drift(reference: &[u8], current: &[u8]) -> Drift {
    let (reference, _) = ingested(reference);
    let (current, _) = ingested(current);
    Drift::read(&reference[..], &current[..], &DriftOptions::default()).unwrap()
}

fn describe(feature: &DriftReport) -> String {
    let measure = match &feature.measure {
        Measure::Number { ks, .. } => format!("ks {ks:.4}"),
        Measure::String { js } => format!("js {js:.4}"),
    };
    format!(
        "{:<18} psi {:.4} {measure} drifted {}",
        feature.name, feature.psi, feature.drifted
    )
}

#[test]
fn shifted_penguins_drift_in_flipper_length_and_body_mass() {
    let drift = drift(PENGUINS, SHIFTED);
    for feature in &drift.features {
        println!("{}", describe(feature));
    }
    assert_eq!(drift.summary.features, 7);
    assert_eq!(
        drift.summary.drifted_features,
        ["flipper_length_mm", "body_mass_g"]
    );
    let feature = |name: &str| drift.features.iter().find(|f| f.name == name).unwrap();
    // Both shifts push PSI far past 0.2. At their widest gap the two CDFs
    // are 74 (flipper) and 88 (mass) of the 275 measured values apart, so
    // only body mass also crosses the KS threshold of 0.3.
    for (name, ks_values) in [("flipper_length_mm", 74.0), ("body_mass_g", 88.0)] {
        let f = feature(name);
        let Measure::Number { ks, bin_edges } = &f.measure else {
            panic!("{name} is a number column");
        };
        assert!(f.psi > 0.7, "{}", describe(f));
        assert!((ks - ks_values / 275.0).abs() < 1e-9, "{}", describe(f));
        assert_eq!(bin_edges.len(), 9, "{name}: 10 distinct decile bins");
        assert_eq!((f.reference_count, f.current_count), (275, 275));
        // The two rows without measurements are missing on both sides.
        assert_eq!((f.reference_missing, f.current_missing), (2, 2));
    }
    // The relabelled islands move the distribution, but not past the
    // thresholds; the untouched columns do not move at all.
    let island = feature("island");
    assert!(island.psi > 0.0 && !island.drifted, "{}", describe(island));
    for name in ["bill_length_mm", "bill_depth_mm", "sex", "year"] {
        let f = feature(name);
        assert_eq!(f.psi, 0.0, "{}", describe(f));
        assert!(!f.drifted);
    }
    assert_eq!(
        drift.summary.max_psi,
        feature("flipper_length_mm")
            .psi
            .max(feature("body_mass_g").psi)
    );
}

#[test]
fn penguins_against_themselves_do_not_drift() {
    let drift = drift(PENGUINS, PENGUINS);
    assert_eq!(drift.summary.features, 7);
    assert_eq!(drift.summary.drifted_features, Vec::<String>::new());
    assert_eq!(
        (
            drift.summary.max_psi,
            drift.summary.max_ks,
            drift.summary.max_js
        ),
        (0.0, 0.0, 0.0)
    );
}

#[test]
fn shifted_csv_is_the_documented_transformation_of_the_original() {
    // What examples/data/make_shifted.py does, checked field by field, so
    // the committed file cannot silently drift from its description.
    let lines = |csv: &'static [u8]| -> Vec<Vec<&'static str>> {
        std::str::from_utf8(csv)
            .unwrap()
            .lines()
            .map(|line| line.split(',').collect())
            .collect()
    };
    let (original, shifted) = (lines(PENGUINS), lines(SHIFTED));
    assert_eq!(original.len(), 345);
    assert_eq!(shifted.len(), original.len());
    assert_eq!(shifted[0], original[0]);
    let mut torgersen = 0;
    let mut relabelled = 0;
    for (i, (o, s)) in original.iter().zip(&shifted).enumerate().skip(1) {
        for unchanged in [0, 2, 3, 6, 7] {
            assert_eq!(s[unchanged], o[unchanged], "line {}", i + 1);
        }
        if o[1] == "Torgersen" {
            let expected = if torgersen % 3 == 0 {
                "Dream"
            } else {
                "Torgersen"
            };
            assert_eq!(s[1], expected, "line {}", i + 1);
            relabelled += usize::from(expected == "Dream");
            torgersen += 1;
        } else {
            assert_eq!(s[1], o[1], "line {}", i + 1);
        }
        if o[4] == "NA" {
            assert_eq!((s[4], s[5]), ("NA", "NA"), "line {}", i + 1);
            continue;
        }
        let flipper: u32 = o[4].parse().unwrap();
        assert_eq!(s[4], (flipper + 8).to_string(), "line {}", i + 1);
        let mass: u32 = o[5].parse().unwrap();
        // × 1.15 rounded half up, in integers.
        assert_eq!(
            s[5],
            ((mass * 115 + 50) / 100).to_string(),
            "line {}",
            i + 1
        );
    }
    assert_eq!((torgersen, relabelled), (52, 18));
}

#[test]
fn a_model_retrained_on_shifted_penguins_passes_the_gate() {
    let (train_examples, eval_examples) = ingested(SHIFTED);
    let train_set = Examples::read(&train_examples[..]).unwrap();
    let transform = Transform::fit(&train_set).unwrap();
    let (mut train_data, mut eval_data) = (Vec::new(), Vec::new());
    transform.apply(&train_set, &mut train_data).unwrap();
    transform
        .apply_stream(&eval_examples[..], &mut eval_data)
        .unwrap();
    let model = train(|| Ok(&train_data[..]), &HYPER, |_, _| {}).unwrap();
    let evaluation = evaluate(&model, &eval_data[..]).unwrap();
    println!(
        "retrained on shifted data: eval accuracy {} on {} rows",
        evaluation.accuracy, evaluation.rows
    );
    assert_eq!(evaluation.rows, 67);
    assert!(evaluation.accuracy >= THRESHOLD, "{}", evaluation.accuracy);
    let blessing = Blessing::new(&evaluation, THRESHOLD).unwrap();
    assert!(blessing.blessed);
    blessing.gate().unwrap();
}
