//! `data-bench`: the example pipeline's step logic built natively, for
//! `bench/data.sh`'s wasm/native ratios. An example, not a binary, so the
//! workspace's only binary stays `sluice`.
//!
//! ```sh
//! data-bench steps CSV DIR [KEY=VALUE...]   # ingest → stats → validate → transform → train → evaluate → push → export
//! data-bench phases CSV DIR                 # where ingest and the readers spend their time
//! data-bench arrows BYTES OUT               # a penguins examples Arrow stream of about BYTES
//! data-bench hash FILE                      # SHA-256 of FILE, as the store hashes a blob
//! ```
//!
//! `steps` calls the same `sluice_tabular` functions with the same params
//! as each step in `examples/steps/*` (see there), in pipeline order, and
//! writes each output to `DIR/<step>.<output>`. Every input is opened
//! afresh for each pass, as a guest's inputs are, through a 64 KiB buffer
//! like the guest SDK's `Input`; outputs go through a 64 KiB buffer like
//! its `Output`. What the engine adds around a step (hashing inputs on
//! open and outputs on commit, the sandbox) is not here: that is what the
//! ratio measures. KEY=VALUE are the steps' params (`label`,
//! `eval_fraction`, `split_seed`, `infer_rows`, `malformed`,
//! `learning_rate`, `epochs`, `l2`, `batch_size`, `shuffle_buffer`, `seed`,
//! `threshold`), defaulting as the steps do. One JSON line per step:
//! `{"step", "ms", "bytes_in", "bytes_out"}`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use sluice_tabular::csv::CsvReader;
use sluice_tabular::evaluation::{Blessing, evaluate};
use sluice_tabular::example::{ExampleReader, ExampleWriter};
use sluice_tabular::ingest::{INFER_ROWS_DEFAULT, IngestOptions, ingest};
use sluice_tabular::model::{AnyModel, HyperParams, train};
use sluice_tabular::parquet::{ParquetOptions, ROW_GROUP_ROWS_DEFAULT, export};
use sluice_tabular::stats::Statistics;
use sluice_tabular::transform::Transform;
use sluice_tabular::validation::{DataSchema, find_anomalies, write_anomalies};

/// The guest SDK's buffer for inputs and outputs (`CHUNK_BYTES`).
const CHUNK_BYTES: usize = 64 * 1024;

/// Rows generated once for `arrows`, then repeated to reach the size.
const ARROWS_BASE_ROWS: u64 = 200_000;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: data-bench steps CSV DIR [KEY=VALUE...] | phases CSV DIR | arrows BYTES OUT | hash FILE";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["steps", csv, dir, ..] => steps(Path::new(csv), Path::new(dir), &args[3..]),
        ["phases", csv, dir] => phases(Path::new(csv), Path::new(dir)),
        ["arrows", bytes, out] => match bytes.parse() {
            Ok(bytes) => arrows(bytes, Path::new(out)),
            Err(_) => Err(USAGE.into()),
        },
        ["hash", file] => hash(Path::new(file)),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("data-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// The steps' params, as `--param` gives them to a guest.
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(args: &[String]) -> BoxResult<Self> {
        let mut map = BTreeMap::new();
        for arg in args {
            let (k, v) = arg
                .split_once('=')
                .ok_or_else(|| format!("param `{arg}` is not KEY=VALUE"))?;
            map.insert(k.to_owned(), v.to_owned());
        }
        Ok(Params(map))
    }

    fn or<T: std::str::FromStr>(&self, key: &str, default: T) -> BoxResult<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| format!("param {key} = `{v}`: {e}").into()),
        }
    }

    fn required(&self, key: &str) -> BoxResult<String> {
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| format!("param {key} is required").into())
    }
}

/// Opens an input as the guest SDK does: afresh per call, buffered.
fn input(path: &Path) -> io::Result<BufReader<File>> {
    File::open(path)
        .map(|f| BufReader::with_capacity(CHUNK_BYTES, f))
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
}

/// One step's timing and byte counts.
struct Step {
    name: &'static str,
    dir: PathBuf,
    start: Instant,
    inputs: Vec<PathBuf>,
    outputs: Vec<PathBuf>,
}

impl Step {
    fn start(name: &'static str, dir: &Path) -> Self {
        Step {
            name,
            dir: dir.to_owned(),
            start: Instant::now(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// The path of an input, remembered for `bytes_in`.
    fn input(&mut self, path: PathBuf) -> PathBuf {
        self.inputs.push(path.clone());
        path
    }

    /// Creates the output `DIR/<step>.<name>`, buffered like the guest's.
    fn output(&mut self, name: &str) -> io::Result<BufWriter<File>> {
        let path = self.dir.join(format!("{}.{name}", self.name));
        self.outputs.push(path.clone());
        Ok(BufWriter::with_capacity(CHUNK_BYTES, File::create(path)?))
    }

    /// Prints the step's JSON line.
    fn done(self) -> BoxResult<()> {
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        let size = |paths: &[PathBuf]| -> io::Result<u64> {
            paths
                .iter()
                .map(|p| std::fs::metadata(p).map(|m| m.len()))
                .sum()
        };
        let line = serde_json::json!({
            "step": self.name,
            "ms": (ms * 1e3).round() / 1e3,
            "bytes_in": size(&self.inputs)?,
            "bytes_out": size(&self.outputs)?,
        });
        println!("{line}");
        Ok(())
    }
}

/// Flushes a buffered output and closes it, as `Output::finish` does.
fn finish(out: BufWriter<File>) -> io::Result<()> {
    out.into_inner().map_err(|e| e.into_error())?;
    Ok(())
}

fn steps(csv: &Path, dir: &Path, args: &[String]) -> BoxResult<()> {
    let params = Params::parse(args)?;
    std::fs::create_dir_all(dir)?;
    let at = |name: &str| dir.join(name);

    // examples/steps/ingest
    let mut s = Step::start("ingest", dir);
    let options = IngestOptions {
        label: params.required("label")?,
        eval_fraction: params.or("eval_fraction", 0.2)?,
        split_seed: params.or("split_seed", 0)?,
        infer_rows: params.or("infer_rows", INFER_ROWS_DEFAULT)?,
        malformed: params.or("malformed", "fail".to_owned())?.parse()?,
    };
    let csv = s.input(csv.to_owned());
    let (mut train_out, mut eval_out) = (s.output("train")?, s.output("eval")?);
    ingest(|| input(&csv), &options, &mut train_out, &mut eval_out)?;
    finish(train_out)?;
    finish(eval_out)?;
    s.done()?;

    // examples/steps/stats
    let mut s = Step::start("stats", dir);
    let statistics = Statistics::read(input(&s.input(at("ingest.train")))?)?;
    let mut out = s.output("statistics")?;
    statistics.write(&mut out)?;
    finish(out)?;
    s.done()?;

    // examples/steps/validate
    let mut s = Step::start("validate", dir);
    let schema = DataSchema::read(input(&s.input(at("ingest.train")))?)?;
    let anomalies = find_anomalies(&schema, input(&s.input(at("ingest.eval")))?)?;
    let mut out = s.output("schema")?;
    schema.write(&mut out)?;
    finish(out)?;
    let mut out = s.output("anomalies")?;
    write_anomalies(&anomalies, &mut out)?;
    finish(out)?;
    s.done()?;

    // examples/steps/transform
    let mut s = Step::start("transform", dir);
    let train_in = s.input(at("ingest.train"));
    let eval_in = s.input(at("ingest.eval"));
    let statistics_in = s.input(at("stats.statistics"));
    let mut out = s.output("train")?;
    let (transform, _) =
        Transform::fit_statistics_and_apply(input(&statistics_in)?, input(&train_in)?, &mut out)?;
    finish(out)?;
    let mut out = s.output("eval")?;
    transform.apply_stream(input(&eval_in)?, &mut out)?;
    finish(out)?;
    let mut out = s.output("transform")?;
    transform.write(&mut out)?;
    finish(out)?;
    s.done()?;

    // examples/steps/train
    let mut s = Step::start("train", dir);
    let defaults = HyperParams::default();
    let hyper = HyperParams {
        learning_rate: params.or("learning_rate", defaults.learning_rate)?,
        epochs: params.or("epochs", defaults.epochs)?,
        l2: params.or("l2", defaults.l2)?,
        batch_size: params.or("batch_size", defaults.batch_size)?,
        shuffle_buffer: params.or("shuffle_buffer", defaults.shuffle_buffer)?,
        seed: params.or("seed", defaults.seed)?,
    };
    let train_in = s.input(at("transform.train"));
    let model = train(|| Ok(input(&train_in)?), &hyper, |_, _| {})?;
    let mut out = s.output("model")?;
    model.write(&mut out)?;
    finish(out)?;
    s.done()?;

    // examples/steps/evaluate
    let mut s = Step::start("evaluate", dir);
    let threshold: f64 = params.or("threshold", 0.8)?;
    let model = AnyModel::read(input(&s.input(at("train.model")))?)?;
    let evaluation = evaluate(&model, input(&s.input(at("transform.eval")))?)?;
    let blessing = Blessing::new(&evaluation, threshold)?;
    let mut out = s.output("evaluation")?;
    evaluation.write(&mut out)?;
    finish(out)?;
    let mut out = s.output("blessing")?;
    blessing.write(&mut out)?;
    finish(out)?;
    s.done()?;

    // examples/steps/push
    let mut s = Step::start("push", dir);
    Blessing::read(input(&s.input(at("evaluate.blessing")))?)?.gate()?;
    let mut model = input(&s.input(at("train.model")))?;
    let mut out = s.output("model")?;
    io::copy(&mut model, &mut out)?;
    finish(out)?;
    s.done()?;

    // examples/steps/export
    let mut s = Step::start("export", dir);
    let options = ParquetOptions {
        compression: params.or("compression", "snappy".to_owned())?.parse()?,
        row_group_rows: params.or("row_group_rows", ROW_GROUP_ROWS_DEFAULT)?,
    };
    let mut out = s.output("parquet")?;
    export(
        input(&s.input(at("transform.train")))?,
        "table",
        &mut out,
        options,
    )?;
    finish(out)?;
    s.done()
}

/// Prints `{"phase", "ms", "bytes"}` for `f`.
fn phase(name: &str, bytes: u64, f: impl FnOnce() -> BoxResult<()>) -> BoxResult<()> {
    let start = Instant::now();
    f()?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let line = serde_json::json!({"phase": name, "ms": (ms * 1e3).round() / 1e3, "bytes": bytes});
    println!("{line}");
    Ok(())
}

/// Where the time of ingest and of every reader goes: reading the bytes,
/// splitting CSV records, decoding the Arrow stream (`DIR` holds the
/// outputs of `steps`).
fn phases(csv: &Path, dir: &Path) -> BoxResult<()> {
    let csv_bytes = std::fs::metadata(csv)?.len();
    phase("csv: read bytes", csv_bytes, || {
        io::copy(&mut input(csv)?, &mut io::sink())?;
        Ok(())
    })?;
    phase("csv: split records", csv_bytes, || {
        let mut reader = CsvReader::new(BufReader::with_capacity(1 << 20, input(csv)?));
        while reader.read_record()?.is_some() {}
        Ok(())
    })?;
    let train = dir.join("ingest.train");
    let train_bytes = std::fs::metadata(&train)?.len();
    phase("examples: read bytes", train_bytes, || {
        io::copy(&mut input(&train)?, &mut io::sink())?;
        Ok(())
    })?;
    phase("examples: decode batches", train_bytes, || {
        let mut reader = ExampleReader::new(input(&train)?)?;
        while reader.next_batch()?.is_some() {}
        Ok(())
    })?;
    phase("examples: decode rows", train_bytes, || {
        let mut reader = ExampleReader::new(input(&train)?)?;
        while reader.next_row()?.is_some() {}
        Ok(())
    })?;
    phase("sha256 (the store's hash)", train_bytes, || {
        sha256(&train)?;
        Ok(())
    })
}

/// Writes penguins examples (as `ingest` makes them from
/// `penguins-gen ROWS 7`, every row to one stream) until the stream holds
/// at least `bytes`; prints `{"rows", "bytes"}`.
fn arrows(bytes: u64, out: &Path) -> BoxResult<()> {
    let mut csv = Vec::new();
    sluice_tabular::generate::write_penguins(&mut csv, ARROWS_BASE_ROWS, 7)?;
    let (mut examples, mut unused) = (Vec::new(), Vec::new());
    let mut options = IngestOptions::new("species");
    options.eval_fraction = 0.0;
    ingest(|| Ok(&csv[..]), &options, &mut examples, &mut unused)?;
    let mut reader = ExampleReader::new(&examples[..])?;
    let mut batches = Vec::new();
    while let Some(batch) = reader.next_batch()? {
        batches.push(batch);
    }
    let written = Rc::new(Cell::new(0u64));
    let file = BufWriter::with_capacity(1 << 20, File::create(out)?);
    let counting = CountingWriter {
        inner: file,
        bytes: written.clone(),
    };
    let mut writer = ExampleWriter::new(counting, reader.schema())?;
    // Whole batches until the stream (less its end marker) holds `bytes`.
    'repeat: loop {
        for batch in &batches {
            writer.batch(batch)?;
            if written.get() >= bytes {
                break 'repeat;
            }
        }
    }
    let rows = writer.rows();
    let counting = writer.finish()?;
    counting.inner.into_inner().map_err(|e| e.into_error())?;
    println!(
        "{}",
        serde_json::json!({"rows": rows, "bytes": written.get()})
    );
    Ok(())
}

/// Counts the bytes written through it, for a caller that has handed the
/// writer over.
struct CountingWriter<W> {
    inner: W,
    bytes: Rc<Cell<u64>>,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes.set(self.bytes.get() + n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn sha256(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Prints `{"sha256", "bytes", "ms"}`: the cost of the store's hashing.
fn hash(path: &Path) -> BoxResult<()> {
    let start = Instant::now();
    let digest = sha256(path)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let bytes = std::fs::metadata(path)?.len();
    let line =
        serde_json::json!({"sha256": digest, "bytes": bytes, "ms": (ms * 1e3).round() / 1e3});
    println!("{line}");
    Ok(())
}
