//! The whole tabular pipeline, natively, on the real Palmer Penguins CSV
//! (`examples/data/penguins.csv`) with the settings of
//! `examples/pipelines/tabular.toml`.

use sluice_tabular::evaluation::{Blessing, evaluate};
use sluice_tabular::example::{ColumnType, Examples, Value};
use sluice_tabular::ingest::{IngestOptions, ingest};
use sluice_tabular::mlp::{self, MlpParams};
use sluice_tabular::model::{AnyModel, HyperParams, Model, train};
use sluice_tabular::stats::{Statistics, Summary};
use sluice_tabular::transform::{Dataset, Transform};
use sluice_tabular::validation::{AnomalyKind, DataSchema, find_anomalies};

const PENGUINS: &[u8] = include_bytes!("../../examples/data/penguins.csv");

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

struct Run {
    train: Vec<u8>,
    eval: Vec<u8>,
    train_data: Vec<u8>,
    eval_data: Vec<u8>,
    model: Model,
    losses: Vec<f64>,
}

fn run() -> Run {
    let (mut train_examples, mut eval_examples) = (Vec::new(), Vec::new());
    let options = IngestOptions::new("species");
    let report = ingest(
        || Ok(PENGUINS),
        &options,
        &mut train_examples,
        &mut eval_examples,
    )
    .unwrap();
    assert_eq!(report.rows_dropped, 0);
    assert_eq!(report.rows_train + report.rows_eval, 344);

    let train_set = Examples::read(&train_examples[..]).unwrap();
    let transform = Transform::fit(&train_set).unwrap();
    let (mut train_data, mut eval_data) = (Vec::new(), Vec::new());
    transform.apply(&train_set, &mut train_data).unwrap();
    transform
        .apply_stream(&eval_examples[..], &mut eval_data)
        .unwrap();

    let mut losses = Vec::new();
    let model = train(
        || Ok(&train_data[..]),
        &HYPER,
        |epoch, loss| {
            assert_eq!(epoch as usize, losses.len());
            losses.push(loss);
        },
    )
    .unwrap();
    Run {
        train: train_examples,
        eval: eval_examples,
        train_data,
        eval_data,
        model,
        losses,
    }
}

#[test]
fn ingest_infers_the_penguin_schema_and_splits_about_a_fifth_to_eval() {
    let run = run();
    let train = Examples::read(&run.train[..]).unwrap();
    let eval = Examples::read(&run.eval[..]).unwrap();
    let columns: Vec<(&str, ColumnType)> = train
        .schema
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.ty))
        .collect();
    use ColumnType::{Number, String};
    assert_eq!(
        columns,
        [
            ("species", String),
            ("island", String),
            ("bill_length_mm", Number),
            ("bill_depth_mm", Number),
            ("flipper_length_mm", Number),
            ("body_mass_g", Number),
            ("sex", String),
            ("year", Number),
        ]
    );
    assert_eq!(train.schema, eval.schema);
    // Pinned by the split hash; 344 × 0.2 = 68.8 expected.
    assert_eq!((train.rows.len(), eval.rows.len()), (277, 67));
}

#[test]
fn statistics_count_the_two_rows_without_measurements() {
    let run = run();
    let train = Examples::read(&run.train[..]).unwrap();
    let eval = Examples::read(&run.eval[..]).unwrap();
    let train_stats = Statistics::read(&run.train[..]).unwrap();
    let eval_stats = Statistics::read(&run.eval[..]).unwrap();
    // penguins.csv has 2 rows without any measurement and 11 without sex.
    let bill = |s: &Statistics| s.columns[2].missing;
    let sex = |s: &Statistics| s.columns[6].missing;
    assert_eq!(bill(&train_stats) + bill(&eval_stats), 2);
    assert_eq!(sex(&train_stats) + sex(&eval_stats), 11);
    assert_eq!(train_stats.rows, train.rows.len() as u64);
    assert_eq!(eval_stats.rows, eval.rows.len() as u64);
    let Summary::String {
        top,
        top_exact,
        categories,
    } = &train_stats.columns[0].summary
    else {
        panic!("species is a string column");
    };
    assert!(*top_exact);
    assert_eq!(
        categories.as_deref(),
        Some(&["Adelie", "Chinstrap", "Gentoo"].map(String::from)[..])
    );
    assert_eq!(train_stats.columns[0].distinct, 3);
    let species: Vec<&str> = top.iter().map(|v| v.value.as_str()).collect();
    assert_eq!(species, ["Adelie", "Gentoo", "Chinstrap"]);
    let counted: u64 = top.iter().map(|v| v.count).sum();
    assert_eq!(counted, train_stats.rows);
}

#[test]
fn eval_has_one_penguin_lighter_than_any_in_train() {
    let run = run();
    let schema = DataSchema::read(&run.train[..]).unwrap();
    let anomalies = find_anomalies(&schema, &run.eval[..]).unwrap();
    // Same CSV, same types and categories, and both halves have rows
    // without sex: only a range can differ. The lightest penguin (2700 g,
    // a Chinstrap) landed in eval.
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    let anomaly = &anomalies[0];
    assert_eq!(
        (anomaly.column.as_str(), anomaly.kind, anomaly.count),
        ("body_mass_g", AnomalyKind::OutOfRange, 1)
    );
    assert_eq!(anomaly.examples, [Value::Number(2700.0)]);
    assert_eq!(
        anomaly.to_string(),
        "column `body_mass_g`: out_of_range: 1 value outside the training range [2850, 6300]"
    );
    assert_eq!(find_anomalies(&schema, &run.train[..]).unwrap(), vec![]);
}

#[test]
fn transform_yields_ten_standardised_and_one_hot_features() {
    let run = run();
    let train = Dataset::read(&run.train_data[..]).unwrap();
    assert_eq!(
        train.features,
        [
            "island=Biscoe",
            "island=Dream",
            "island=Torgersen",
            "bill_length_mm",
            "bill_depth_mm",
            "flipper_length_mm",
            "body_mass_g",
            "sex=female",
            "sex=male",
            "year",
        ]
    );
    assert_eq!(train.classes, ["Adelie", "Chinstrap", "Gentoo"]);
    // Standardised on train: every numeric feature has mean ~0, std ~1.
    let n = train.rows() as f64;
    for j in [3, 4, 5, 6, 9] {
        let values: Vec<f64> = (0..train.rows()).map(|i| train.row(i)[j]).collect();
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 1e-9, "feature {j} mean {mean}");
        // Missing values sit at 0 and shrink the spread slightly.
        assert!((0.99..=1.0 + 1e-9).contains(&var), "feature {j} var {var}");
    }
    // Exactly one island is hot in every row.
    for i in 0..train.rows() {
        assert_eq!(train.row(i)[0..3].iter().sum::<f64>(), 1.0);
    }
}

#[test]
fn softmax_regression_reaches_the_accuracy_gate_on_eval() {
    let run = run();
    // One loss per epoch: the mean row loss under each minibatch's
    // starting weights (SGD does not promise a monotone series, but on
    // this split it is).
    assert_eq!(run.losses.len(), 10);
    assert!(run.losses.windows(2).all(|w| w[1] <= w[0]), "loss rose");
    assert!(run.model.train_loss < 0.1, "{}", run.model.train_loss);
    assert!(
        run.model.train_accuracy >= 0.98,
        "{}",
        run.model.train_accuracy
    );

    let evaluation = evaluate(&run.model, &run.eval_data[..]).unwrap();
    println!(
        "eval accuracy {} macro F1 {} on {} rows; confusion {:?}",
        evaluation.accuracy, evaluation.macro_f1, evaluation.rows, evaluation.confusion_matrix
    );
    assert!(evaluation.accuracy >= 0.95, "{}", evaluation.accuracy);
    assert_eq!(evaluation.rows, 67);
    let support: Vec<u64> = evaluation.per_class.iter().map(|c| c.support).collect();
    assert_eq!(support, [33, 12, 22]);
    let total: u64 = evaluation.confusion_matrix.iter().flatten().sum();
    assert_eq!(total, 67);

    let blessing = Blessing::new(&evaluation, THRESHOLD).unwrap();
    assert!(blessing.blessed);
    blessing.gate().unwrap();
}

#[test]
fn the_pipeline_is_deterministic_byte_for_byte() {
    let (a, b) = (run(), run());
    assert_eq!(a.train, b.train);
    assert_eq!(a.eval, b.eval);
    assert_eq!(a.train_data, b.train_data);
    assert_eq!(a.eval_data, b.eval_data);
    let (mut ma, mut mb) = (Vec::new(), Vec::new());
    a.model.write(&mut ma).unwrap();
    b.model.write(&mut mb).unwrap();
    assert_eq!(ma, mb);
    assert_eq!(Model::read(&ma[..]).unwrap(), a.model);
}

#[test]
fn mlp_learns_the_penguins_and_evaluate_scores_it_through_the_dispatch() {
    let run = run();
    let train_data = Dataset::read(&run.train_data[..]).unwrap();
    let params = MlpParams::default();
    // 10 features → 32 → 32 → 3 classes.
    assert_eq!(params.param_count(10, 3), 11 * 32 + 33 * 32 + 33 * 3);
    let mut losses = Vec::new();
    let model = mlp::train(
        &train_data,
        &params,
        42,
        |_, loss| losses.push(loss),
        &|| false,
    )
    .unwrap();
    assert_eq!(losses.len(), 50);
    assert!(losses[49] < losses[0] / 4.0, "{losses:?}");
    assert!(model.train_accuracy >= 0.9, "{}", model.train_accuracy);

    let mut doc = Vec::new();
    model.write(&mut doc).unwrap();
    let any = AnyModel::read(&doc[..]).unwrap();
    assert_eq!(any.kind(), "mlp");
    let evaluation = evaluate(&any, &run.eval_data[..]).unwrap();
    assert_eq!(evaluation.rows, 67);
    assert!(evaluation.accuracy >= 0.9, "{}", evaluation.accuracy);
    assert!(Blessing::new(&evaluation, THRESHOLD).unwrap().blessed);
}
