//! The command line: flags, progress display, tables, JSON output, exit
//! codes (0 ok, 1 run failed, 2 usage or spec error).
//!
//! Invariant: with `--json`, stdout carries exactly one JSON document.
//! Boundary: the only module that knows flags and terminal output.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::digest::Digest;
use crate::policy::PathPolicy;
use crate::run::{self, Event, Observer, RunId, RunStatus, RunSummary, StepReport, StepStatus};
use crate::spec;
use crate::store::Store;

/// Exit code of a run that failed.
pub const EXIT_RUN_FAILED: u8 = 1;
/// Exit code of a usage or spec error.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Reproducible ML pipelines of sandboxed WebAssembly steps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct HomeArg {
    /// Engine home: store, cache, runs (default: $SLUICE_HOME or ./.sluice).
    #[arg(long, env = "SLUICE_HOME", default_value = ".sluice")]
    home: PathBuf,
}

/// How steps execute: shared by every command that runs steps.
#[derive(clap::Args, Debug, Clone)]
struct ExecArgs {
    /// Steps in flight at most (default: number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Directory for compiled components, shareable between homes
    /// (default: HOME/components).
    #[arg(long, env = "SLUICE_COMPILE_CACHE")]
    compile_cache: Option<PathBuf>,
    /// Engine config file: `[workers.KIND]` gpu worker commands, `[hooks]`
    /// (default: HOME/config.toml when it exists).
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
}

impl ExecArgs {
    /// Run options for `home`.
    /// Paths a spec run with these options may not name: the home, the
    /// config file and the compile cache's tag key.
    fn policy(&self, home: &Path) -> PathPolicy {
        let policy = PathPolicy::local(home, self.config.as_deref());
        match &self.compile_cache {
            Some(cache) => policy.also_private(&crate::sandbox::compile_cache_key_path(cache)),
            None => policy,
        }
    }

    fn options(
        self,
        home: PathBuf,
        no_cache: bool,
        max_parallel: Option<usize>,
    ) -> anyhow::Result<run::Options> {
        let config = crate::config::Config::load(self.config.as_deref(), &home)?;
        self.options_with(config, home, no_cache, max_parallel)
    }

    /// Like [`ExecArgs::options`], with the config file already loaded.
    fn options_with(
        self,
        config: crate::config::Config,
        home: PathBuf,
        no_cache: bool,
        max_parallel: Option<usize>,
    ) -> anyhow::Result<run::Options> {
        let jobs = match self.jobs {
            Some(0) => bail!("--jobs must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        };
        let workers = config.workers;
        let gpu = crate::gpu::Dispatcher::new(workers, home.join("scratch").join("gpu"));
        Ok(run::Options {
            no_cache,
            jobs,
            max_parallel,
            compile_cache: self.compile_cache,
            gpu: Some(std::sync::Arc::new(gpu)),
            ..run::Options::new(home)
        })
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a pipeline spec.
    Run {
        /// The pipeline spec (TOML).
        pipeline: PathBuf,
        #[command(flatten)]
        home: HomeArg,
        /// Overrides a pipeline param (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Executes every step even when the cache has its result.
        #[arg(long)]
        no_cache: bool,
        #[command(flatten)]
        exec: ExecArgs,
        /// Prints one JSON document with the run's result.
        #[arg(long)]
        json: bool,
        /// Most fanned-out sweep steps running at once.
        #[arg(long)]
        max_parallel: Option<usize>,
        /// Sorts the sweep comparison table by this metric (`STEP.METRIC`
        /// or just `METRIC`), best (highest) first.
        #[arg(long)]
        sort: Option<String>,
    },
    /// Runs a pipeline inside a CI job: like `run`, plus a JUnit XML report
    /// (one test case per step); exits 1 when the run failed.
    Ci {
        /// The pipeline spec (TOML).
        pipeline: PathBuf,
        #[command(flatten)]
        home: HomeArg,
        /// Overrides a pipeline param (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Where to write the JUnit XML report.
        #[arg(long, default_value = "sluice-junit.xml")]
        junit: PathBuf,
        /// Executes every step even when the cache has its result.
        #[arg(long)]
        no_cache: bool,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Serves the HTTP API, the dashboard and `/metrics`.
    Serve {
        /// Listen address (default: `[server] listen`, else 127.0.0.1:7878).
        #[arg(long)]
        listen: Option<String>,
        #[command(flatten)]
        home: HomeArg,
        /// Config file: server settings, tokens, hooks, workers (default:
        /// HOME/config.toml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Directory for compiled components, shareable between homes.
        #[arg(long, env = "SLUICE_COMPILE_CACHE")]
        compile_cache: Option<PathBuf>,
    },
    /// Checks a pipeline spec without running it.
    Validate {
        /// The pipeline spec (TOML).
        pipeline: PathBuf,
        /// The home whose files the spec may not name (as `run` would).
        #[command(flatten)]
        home: HomeArg,
        /// Overrides a pipeline param (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Prints the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows a finished run.
    Show {
        /// The run id.
        run_id: String,
        #[command(flatten)]
        home: HomeArg,
        /// Prints the run's JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Continues a run that was interrupted (crash, kill): steps that
    /// finished come from the cache; the run is then sealed as usual.
    Resume {
        /// The run id.
        run_id: String,
        #[command(flatten)]
        home: HomeArg,
        /// Prints one JSON document with the run's result.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Re-executes a recorded run (ignoring the cache) and compares every
    /// output digest; exit 0 only when identical.
    Replay {
        /// The run id.
        run_id: String,
        #[command(flatten)]
        home: HomeArg,
        /// Prints the report as JSON.
        #[arg(long)]
        json: bool,
        /// Re-executes gpu jobs on workers and compares them with the
        /// record (bitwise on the same device/driver/library fingerprint,
        /// by metric tolerance otherwise) instead of answering them from it.
        #[arg(long)]
        rerun_gpu: bool,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Checks a run's record chain, signature, run id, summary and log
    /// inclusion (against signed tree heads); exit 0 if intact, 1 naming
    /// the first bad line and the reason otherwise.
    Verify {
        /// The run id.
        run_id: String,
        #[command(flatten)]
        home: HomeArg,
        /// Prints the report as JSON.
        #[arg(long)]
        json: bool,
        /// The trusted public key (default: the home's key named by
        /// `keys/active`; pass a copy kept outside the home to also guard
        /// against someone who can write to the home).
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Prints a run's signed provenance (DSSE envelope of an in-toto
    /// statement), or verifies an envelope with only a public key.
    Provenance {
        /// The run id (omit with --verify).
        run_id: Option<String>,
        #[command(flatten)]
        home: HomeArg,
        /// An envelope file to verify instead.
        #[arg(long, requires = "pubkey")]
        verify: Option<PathBuf>,
        /// The public key to verify with.
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Lists runs, newest first.
    Runs {
        #[command(flatten)]
        home: HomeArg,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prints a step's captured stdout (or stderr), control characters escaped.
    Logs {
        /// The run id.
        run_id: String,
        /// The step.
        step: String,
        #[command(flatten)]
        home: HomeArg,
        /// Shows stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
    /// Delivers a git push webhook (GitHub/Gitea style) to a configured
    /// hook: verifies the signature, de-duplicates the delivery id and runs
    /// the hook's pipeline with the pushed commit as a param. (The HTTP
    /// route of `sluice serve` uses the same path.)
    Hook {
        /// The hook's name (`[hooks.NAME]` in the config).
        name: String,
        #[command(flatten)]
        home: HomeArg,
        /// The raw request body.
        #[arg(long)]
        body: PathBuf,
        /// The `X-Hub-Signature-256` header.
        #[arg(long)]
        signature: Option<String>,
        /// The `X-GitHub-Delivery` / `X-Gitea-Delivery` header.
        #[arg(long)]
        delivery: String,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Artifacts in the store.
    Artifact {
        #[command(subcommand)]
        command: ArtifactCommand,
    },
    /// Scaffolds new things.
    New {
        #[command(subcommand)]
        command: NewCommand,
    },
    /// Serves the gpu worker protocol on stdin/stdout (the engine starts
    /// this itself for the built-in `cpu` worker kind).
    #[command(hide = true)]
    Worker {
        #[command(subcommand)]
        kind: WorkerKind,
    },
    /// Compiles the component on stdin to native code on stdout (the
    /// engine runs this itself, bounded in time and memory, because
    /// compiling untrusted bytes cannot be interrupted in-process).
    #[command(hide = true)]
    CompileComponent {
        /// The sandbox's attempt slots (its engine configuration).
        #[arg(long)]
        slots: u32,
    },
}

#[derive(Subcommand, Debug)]
enum WorkerKind {
    /// The reference CPU worker (`train-mlp`).
    Cpu,
}

#[derive(Subcommand, Debug)]
enum ArtifactCommand {
    /// Writes an artifact's bytes to stdout, after verifying them.
    Cat {
        /// `sha256:<hex>`.
        digest: String,
        #[command(flatten)]
        home: HomeArg,
    },
}

#[derive(Subcommand, Debug)]
enum NewCommand {
    /// A step crate on the guest SDK, with a pipeline that runs it.
    Step {
        /// Crate directory and step name.
        name: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, found {s:?}")),
    }
}

/// Parses the process arguments and runs the command; returns the exit code.
pub fn run() -> anyhow::Result<u8> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            e.print()?;
            return Ok(code);
        }
    };
    // Components are compiled in bounded child processes of this binary.
    if let Ok(exe) = std::env::current_exe() {
        crate::sandbox::use_compiler_process(exe);
    }
    match cli.command {
        Command::CompileComponent { slots } => {
            use std::io::{Read as _, Write as _};
            let mut wasm = Vec::new();
            std::io::stdin()
                .take(crate::sandbox::MAX_COMPONENT_BYTES + 1)
                .read_to_end(&mut wasm)
                .context("compile-component: reading stdin")?;
            if wasm.len() as u64 > crate::sandbox::MAX_COMPONENT_BYTES {
                eprintln!(
                    "{} bytes or more; the limit is {}",
                    wasm.len(),
                    crate::sandbox::MAX_COMPONENT_BYTES
                );
                return Ok(1);
            }
            match crate::sandbox::compile_standalone(&wasm, slots) {
                Ok(native) => {
                    std::io::stdout()
                        .lock()
                        .write_all(&native)
                        .context("compile-component: writing stdout")?;
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(1)
                }
            }
        }
        Command::Serve {
            listen,
            home,
            config,
            compile_cache,
        } => {
            crate::server::serve(crate::server::ServeArgs {
                listen,
                home: home.home,
                config,
                compile_cache,
            })?;
            Ok(0)
        }
        Command::Run {
            pipeline,
            home,
            params,
            no_cache,
            exec,
            json,
            sort,
            max_parallel,
        } => {
            let policy = exec.policy(&home.home);
            let options = exec.options(home.home, no_cache, max_parallel)?;
            cmd_run(&pipeline, &policy, &options, &params, json, sort.as_deref())
        }
        Command::Ci {
            pipeline,
            home,
            params,
            junit,
            no_cache,
            exec,
        } => {
            let policy = exec.policy(&home.home);
            let spec = match spec::load_with(&pipeline, &params, &policy) {
                Ok(p) => p,
                Err(errors) => return Ok(report_spec_errors(&errors, false)),
            };
            let options = exec.options(home.home, no_cache, None)?;
            let progress = Progress::new(false);
            let summary = run::execute(&spec, &options, &progress)?;
            let xml = crate::junit::report(&summary);
            crate::durable::write_atomic(&junit, xml.as_bytes(), true)?;
            print_summary(&summary);
            println!("junit report: {}", junit.display());
            Ok(exit_code(summary.status))
        }
        Command::Validate {
            pipeline,
            home,
            params,
            json,
        } => match spec::load_with(&pipeline, &params, &PathPolicy::local(&home.home, None)) {
            Ok(p) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"status": "valid", "pipeline": p.name, "steps": p.steps.iter().map(|s| &s.name).collect::<Vec<_>>()})
                    );
                } else {
                    println!(
                        "{}: pipeline `{}` is valid ({} steps)",
                        pipeline.display(),
                        p.name,
                        p.steps.len()
                    );
                }
                Ok(0)
            }
            Err(errors) => Ok(report_spec_errors(&errors, json)),
        },
        Command::Show { run_id, home, json } => {
            let id: RunId = run_id.parse()?;
            let summary = run::load_summary(&home.home, &id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print_summary(&summary);
            }
            Ok(0)
        }
        Command::Runs { home, json } => cmd_runs(&home.home, json),
        Command::Resume {
            run_id,
            home,
            json,
            exec,
        } => {
            let id: RunId = run_id.parse()?;
            let options = exec.options(home.home, false, None)?;
            run_and_report(json, None, |observer| {
                Ok(run::resume(&id, &options, observer)?)
            })
        }
        Command::Verify {
            run_id,
            home,
            json,
            pubkey,
        } => {
            let id: RunId = run_id.parse()?;
            let report = crate::verify::verify(&home.home, &id, pubkey.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if let Some(reason) = report.reason {
                let at = report
                    .line
                    .map_or(String::new(), |l| format!("record line {l}: "));
                println!(
                    "run {id}: TAMPERED: {at}{}: {}",
                    reason.as_str(),
                    report.detail.as_deref().unwrap_or("")
                );
            } else {
                println!(
                    "run {id}: intact ({} record lines, signed by {}, log index {} in a signed tree of {} leaves, consistent with the log's signed head of {})",
                    report.lines,
                    report.keyid.as_deref().unwrap_or("?"),
                    report.log_index.unwrap_or(0),
                    report.tree_size.unwrap_or(0),
                    report.log_size.unwrap_or(0)
                );
            }
            Ok(if report.reason.is_none() {
                0
            } else {
                EXIT_RUN_FAILED
            })
        }
        Command::Provenance {
            run_id,
            home,
            verify,
            pubkey,
        } => match (verify, run_id) {
            (Some(file), _) => {
                let key_path = pubkey.expect("clap requires --pubkey with --verify");
                let key = crate::seal::read_public_key(&key_path)?;
                let bytes = std::fs::read(&file).with_context(|| file.display().to_string())?;
                let envelope: crate::seal::Envelope = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not a DSSE envelope", file.display()))?;
                match crate::seal::verify(&envelope, &key) {
                    Ok(payload) => {
                        let statement = crate::seal::parse_statement(&payload)?;
                        let subjects = statement["subject"].as_array().map_or(0, Vec::len);
                        println!(
                            "{}: valid signature by {}; in-toto statement with {subjects} subjects",
                            file.display(),
                            key.keyid()
                        );
                        Ok(0)
                    }
                    Err(e) => {
                        println!("{}: INVALID: {e}", file.display());
                        Ok(EXIT_RUN_FAILED)
                    }
                }
            }
            (None, Some(run_id)) => {
                let id: RunId = run_id.parse()?;
                let path = home
                    .home
                    .join("runs")
                    .join(id.as_str())
                    .join(crate::run::PROVENANCE_FILE);
                let bytes = std::fs::read(&path).with_context(|| {
                    format!("run `{id}` has no provenance ({})", path.display())
                })?;
                std::io::stdout().write_all(&bytes)?;
                println!();
                Ok(0)
            }
            (None, None) => bail!("give a RUN_ID, or --verify FILE --pubkey FILE"),
        },
        Command::Replay {
            run_id,
            home,
            json,
            rerun_gpu,
            exec,
        } => {
            let id: RunId = run_id.parse()?;
            let options = exec.options(home.home, false, None)?;
            let gpu = match (&options.gpu, rerun_gpu) {
                (Some(d), true) => crate::replay::GpuReplay::Rerun(d.clone()),
                _ => crate::replay::GpuReplay::Recorded,
            };
            let report = crate::replay::replay(
                &options.home,
                &id,
                options.jobs,
                options.compile_cache,
                gpu,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_replay(&report);
            }
            Ok(if report.verdict == crate::replay::Verdict::Identical {
                0
            } else {
                EXIT_RUN_FAILED
            })
        }
        Command::Logs {
            run_id,
            step,
            home,
            stderr,
        } => {
            let id: RunId = run_id.parse()?;
            let summary = run::load_summary(&home.home, &id)?;
            let Some(report) = summary.steps.iter().find(|s| s.name == step) else {
                bail!("run `{id}` has no step `{step}`");
            };
            let digest = if stderr { report.stderr } else { report.stdout };
            if let Some(d) = digest {
                let store = Store::open(&home.home)?;
                let bytes = store.read_bytes(&d)?;
                // Logs are untrusted: escape control characters (ANSI included).
                print!(
                    "{}",
                    crate::quoting::escape_controls(&String::from_utf8_lossy(&bytes), usize::MAX)
                );
            }
            Ok(0)
        }
        Command::Hook {
            name,
            home,
            body,
            signature,
            delivery,
            exec,
        } => {
            let Some(config) = exec.config.clone() else {
                bail!("sluice hook needs --config FILE with [hooks.{name}]");
            };
            let loaded = crate::config::Config::load(Some(&config), &home.home)?;
            let Some(hook) = loaded.hooks.get(&name).cloned() else {
                bail!("{}: no [hooks.{name}]", config.display());
            };
            let bytes = std::fs::read(&body).with_context(|| body.display().to_string())?;
            let decision =
                crate::hook::handle(&home.home, &hook, &bytes, signature.as_deref(), &delivery)?;
            match decision {
                crate::hook::Decision::Duplicate { first_delivery } => {
                    println!(
                        "{}",
                        serde_json::json!({"status": "duplicate", "delivery": delivery, "first_delivery": first_delivery})
                    );
                    Ok(0)
                }
                crate::hook::Decision::Ignored(reason) => {
                    println!(
                        "{}",
                        serde_json::json!({"status": "ignored", "reason": reason})
                    );
                    Ok(0)
                }
                crate::hook::Decision::Run { push, param } => {
                    let policy = PathPolicy::local(&home.home, Some(&config));
                    let spec = match spec::load_with(&hook.pipeline, &[param], &policy) {
                        Ok(p) => p,
                        Err(errors) => return Ok(report_spec_errors(&errors, false)),
                    };
                    let options = exec.options_with(loaded, home.home, false, None)?;
                    let summary = run::execute(&spec, &options, &run::Quiet)?;
                    println!(
                        "{}",
                        serde_json::json!({
                            "status": "started",
                            "delivery": delivery,
                            "push": push,
                            "run_id": summary.run_id,
                            "run_status": summary.status,
                        })
                    );
                    Ok(exit_code(summary.status))
                }
            }
        }
        Command::Artifact {
            command: ArtifactCommand::Cat { digest, home },
        } => {
            let digest: Digest = digest.parse()?;
            let store = Store::open(&home.home)?;
            let mut file = store.open_verified(&digest)?;
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut file, &mut out).context("writing to stdout")?;
            out.flush()?;
            Ok(0)
        }
        Command::Worker {
            kind: WorkerKind::Cpu,
        } => {
            sluice_cpu_worker::serve(
                std::io::BufReader::new(std::io::stdin()),
                std::io::stdout().lock(),
            )
            .context("cpu worker: writing to stdout")?;
            Ok(0)
        }
        Command::New {
            command: NewCommand::Step { name, dir },
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            crate::scaffold::new_step(&name, &dir)?;
            println!("created step crate `{name}` in {}", dir.display());
            println!("run it: sluice run {}", dir.join("pipeline.toml").display());
            Ok(0)
        }
    }
}

fn report_spec_errors(errors: &[spec::SpecError], json: bool) -> u8 {
    for e in errors {
        eprintln!("error: {e}");
    }
    eprintln!(
        "error: the spec has {} problem{}; nothing was run",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    if json {
        let list: Vec<serde_json::Value> = errors
            .iter()
            .map(|e| {
                serde_json::json!({
                    "file": e.file.display().to_string(),
                    "line": e.line,
                    "column": e.column,
                    "message": e.message,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"status": "invalid", "errors": list})
        );
    }
    EXIT_USAGE
}

fn cmd_run(
    path: &Path,
    policy: &PathPolicy,
    options: &run::Options,
    params: &[(String, String)],
    json: bool,
    sort: Option<&str>,
) -> anyhow::Result<u8> {
    let pipeline = match spec::load_with(path, params, policy) {
        Ok(p) => p,
        Err(errors) => return Ok(report_spec_errors(&errors, json)),
    };
    run_and_report(json, sort, |observer| {
        Ok(run::execute(&pipeline, options, observer)?)
    })
}

/// Runs `go` with live progress (none with `--json`), prints the result as
/// one JSON document or as the resource table, and returns the exit code.
fn run_and_report(
    json: bool,
    sort: Option<&str>,
    go: impl FnOnce(&dyn Observer) -> anyhow::Result<RunSummary>,
) -> anyhow::Result<u8> {
    let summary = if json {
        go(&run::Quiet)?
    } else {
        let progress = Progress::new(std::io::stderr().is_terminal());
        let s = go(&progress)?;
        progress.done();
        s
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
        print_sweep(&summary, sort);
    }
    Ok(exit_code(summary.status))
}

/// 0 for a run that succeeded, 1 for one that failed.
fn exit_code(status: RunStatus) -> u8 {
    match status {
        RunStatus::Succeeded => 0,
        RunStatus::Failed => EXIT_RUN_FAILED,
    }
}

/// The sweep's combinations side by side, best first by `sort`.
fn print_sweep(summary: &RunSummary, sort: Option<&str>) {
    if summary.sweep.is_empty() {
        return;
    }
    let mut rows: Vec<&run::SweepRow> = summary.sweep.iter().collect();
    let metric_of = |r: &run::SweepRow, key: &str| -> Option<f64> {
        r.metrics.get(key).copied().or_else(|| {
            r.metrics
                .iter()
                .find(|(k, _)| k.rsplit('.').next() == Some(key))
                .map(|(_, v)| *v)
        })
    };
    if let Some(key) = sort {
        rows.sort_by(|a, b| {
            let (x, y) = (metric_of(a, key), metric_of(b, key));
            y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    let params: Vec<&String> = rows[0].params.keys().collect();
    let mut metrics: Vec<&String> = rows.iter().flat_map(|r| r.metrics.keys()).collect();
    metrics.sort();
    metrics.dedup();
    println!(
        "sweep: {} combinations{}",
        rows.len(),
        sort.map_or(String::new(), |k| format!(
            ", sorted by {k} (highest first)"
        ))
    );
    let mut header = vec!["#".to_string()];
    header.extend(params.iter().map(|p| p.to_string()));
    header.extend(metrics.iter().map(|m| m.to_string()));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![format!("[{}]", r.index)];
            cells.extend(params.iter().map(|p| r.params[*p].clone()));
            cells.extend(metrics.iter().map(|m| {
                r.metrics
                    .get(*m)
                    .map_or("-".to_string(), |v| format_metric(*v))
            }));
            cells
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            body.iter()
                .map(|row| row[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(1)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("  {}", line(&header));
    for cells in &body {
        println!("  {}", line(cells));
    }
}

fn cmd_runs(home: &Path, json: bool) -> anyhow::Result<u8> {
    let ids = run::list_runs(home)?;
    let mut rows = Vec::new();
    for id in ids {
        let row = match run::load_summary(home, &id) {
            Ok(s) => serde_json::json!({
                "run_id": s.run_id,
                "pipeline": s.pipeline,
                "status": s.status,
                "started_at": s.started_at,
                "wall_ms": s.wall_ms,
                "steps": s.steps.len(),
            }),
            // No summary: still running, or interrupted (`sluice resume`).
            Err(run::LoadError::Unfinished(_)) => serde_json::json!({
                "run_id": id,
                "status": "unfinished",
                "hint": format!("sluice resume {id}"),
            }),
            // An edited summary is flagged, never shown as the run's.
            Err(e @ run::LoadError::Mismatch { .. }) => {
                serde_json::json!({"run_id": id, "status": "tampered", "error": e.to_string()})
            }
            // A corrupt summary quarantines that run only.
            Err(e) => {
                serde_json::json!({"run_id": id, "status": "unreadable", "error": e.to_string()})
            }
        };
        rows.push(row);
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(0);
    }
    println!(
        "{:<26} {:<16} {:<10} {:<24} {:>9}",
        "RUN", "PIPELINE", "STATUS", "STARTED", "WALL"
    );
    for r in rows {
        println!(
            "{:<26} {:<16} {:<10} {:<24} {:>9}",
            r["run_id"].as_str().unwrap_or(""),
            r["pipeline"].as_str().unwrap_or("?"),
            r["status"].as_str().unwrap_or("?"),
            r["started_at"].as_str().unwrap_or("-"),
            r["wall_ms"]
                .as_u64()
                .map_or("-".to_string(), |ms| format!("{ms} ms")),
        );
    }
    Ok(0)
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Cached => "cached",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn fuel(n: u64) -> String {
    match n {
        0 => "-".to_string(),
        n if n >= 1_000_000_000 => format!("{:.2} G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn print_replay(r: &crate::replay::ReplayReport) {
    use crate::replay::Verdict;
    let word = |v: Verdict| match v {
        Verdict::Identical => "identical",
        Verdict::Diverged => "DIVERGED",
        Verdict::EnvironmentDrift => "environment-drift",
    };
    println!(
        "replay {} of run {}: {} ({} ms)",
        r.run_id,
        r.replay_of,
        word(r.verdict),
        r.wall_ms
    );
    for e in &r.environment {
        println!("  environment: {e}");
    }
    if r.gpu_mode == "rerun" {
        println!(
            "  gpu jobs re-executed ({} worker processes started)",
            r.workers_started
        );
    } else {
        println!("  gpu jobs answered from the record (no worker started)");
    }
    for s in &r.steps {
        let outputs: Vec<String> = s
            .found
            .iter()
            .map(|(k, d)| format!("{k}={}", &d.hex()[..12]))
            .collect();
        println!(
            "  {:<16} {:<10} {}",
            s.name,
            word(s.verdict),
            outputs.join(" ")
        );
        if let Some(d) = &s.drift {
            println!("    drift: {d}");
        }
        if let Some(e) = &s.error {
            println!("    error: {e}");
        }
        for g in &s.gpu {
            match &g.comparison {
                Some(c) => println!(
                    "    gpu job {} {}: {} comparison {}: {}",
                    g.job,
                    g.state.as_str(),
                    c.method,
                    if c.matched { "matched" } else { "FAILED" },
                    c.detail
                ),
                None => println!(
                    "    gpu job {} {}{}",
                    g.job,
                    g.state.as_str(),
                    if g.from_record {
                        " (from the record)"
                    } else {
                        ""
                    }
                ),
            }
        }
    }
    if let Some(d) = &r.first_divergence {
        let show = |x: &Option<Digest>| x.map_or("(none)".to_string(), |d| d.to_string());
        println!(
            "  first divergence: step `{}` output `{}`: expected {}, found {}",
            d.step,
            d.output,
            show(&d.expected),
            show(&d.found)
        );
    }
}

/// The per-step resource table and the run's verdict.
fn print_summary(s: &RunSummary) {
    println!(
        "run {}  pipeline {}  {}  {} ms",
        s.run_id,
        s.pipeline,
        match s.status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "FAILED",
        },
        s.wall_ms
    );
    // GPU columns only when a step had a gpu grant, so other tables keep
    // their shape.
    let gpu = s.steps.iter().any(|r| r.gpu.is_some());
    let gpu_header = if gpu {
        format!(
            " {:>11} {:>8} {:>10} {:>7}",
            "GPU UTIL", "MEM UTIL", "FB MAX", "SM ACT"
        )
    } else {
        String::new()
    };
    println!(
        "{:<16} {:<10} {:<6} {:>8} {:>9} {:>10} {:>10} {:>10} {:>10}{gpu_header}",
        "STEP", "STATUS", "CACHED", "ATTEMPTS", "WALL ms", "FUEL", "MEM PEAK", "IN", "OUT"
    );
    for r in &s.steps {
        let gpu_cells = if gpu {
            let [util, mem, fb, sm] = gpu_cells(r.gpu.as_ref());
            format!(" {util:>11} {mem:>8} {fb:>10} {sm:>7}")
        } else {
            String::new()
        };
        println!(
            "{:<16} {:<10} {:<6} {:>8} {:>9} {:>10} {:>10} {:>10} {:>10}{gpu_cells}",
            r.name,
            status_word(r.status),
            if r.cached { "yes" } else { "no" },
            r.attempts,
            r.wall_ms,
            fuel(r.fuel_used),
            if r.memory_peak_bytes == 0 {
                "-".to_string()
            } else {
                bytes(r.memory_peak_bytes)
            },
            bytes(r.bytes_in),
            bytes(r.outputs.values().map(|o| o.size).sum()),
        );
    }
    for r in &s.steps {
        if let Some(g) = &r.gpu {
            print_gpu_jobs(&r.name, g);
        }
    }
    for r in &s.steps {
        if !r.metrics.is_empty() {
            let m: Vec<String> = r
                .metrics
                .iter()
                .map(|(k, v)| format!("{k}={}", format_metric(*v)))
                .collect();
            println!("  {}: {}", r.name, m.join("  "));
        }
    }
    for r in &s.steps {
        if let Some(e) = &r.error {
            let class = match e.class {
                crate::failure::FailureClass::Step => "step",
                crate::failure::FailureClass::Limit => "limit",
                crate::failure::FailureClass::Engine => "engine",
            };
            println!("  {} failed ({class}): {}", r.name, e.message);
        } else if let Some(reason) = &r.reason {
            println!("  {} skipped: {reason}", r.name);
        }
    }
}

/// GPU utilisation, memory utilisation, peak framebuffer and SM activity
/// of a step's jobs: `unavailable` without telemetry, `-` when unknown.
fn gpu_cells(report: Option<&crate::gpu::GpuReport>) -> [String; 4] {
    let dash = || "-".to_string();
    let Some(g) = report else {
        return [dash(), dash(), dash(), dash()];
    };
    if !g.available {
        return ["unavailable".to_string(), dash(), dash(), dash()];
    }
    let usages: Vec<&crate::gpu::Usage> = g
        .jobs
        .iter()
        .filter_map(|j| j.usage.as_ref())
        .filter(|u| u.samples > 0)
        .collect();
    if usages.is_empty() {
        return [dash(), dash(), dash(), dash()];
    }
    let samples: f64 = usages.iter().map(|u| f64::from(u.samples)).sum();
    let weighted = |f: &dyn Fn(&crate::gpu::Usage) -> f32| {
        usages
            .iter()
            .map(|u| f64::from(f(u)) * f64::from(u.samples))
            .sum::<f64>()
            / samples
    };
    let sm: Vec<f32> = usages.iter().filter_map(|u| u.sm_active_mean).collect();
    [
        format!("{:.0}%", weighted(&|u| u.util_mean)),
        format!("{:.0}%", weighted(&|u| u.mem_util_mean)),
        bytes(
            usages
                .iter()
                .map(|u| u.fb_used_max_bytes)
                .max()
                .unwrap_or(0),
        ),
        if sm.is_empty() {
            dash()
        } else {
            format!("{:.0}%", sm.iter().sum::<f32>() / sm.len() as f32)
        },
    ]
}

/// GPU busy at least this often, percent …
const LAUNCH_BOUND_UTIL_MIN: f32 = 80.0;
/// … with SMs active less than this, percent: small kernels, launch-bound.
const LAUNCH_BOUND_SM_MAX: f32 = 30.0;
/// GPU busy less than this, percent: waiting on input or host work.
const INPUT_BOUND_UTIL_MAX: f32 = 50.0;
/// Fewest samples (at 10 Hz) before a job is judged.
const UNDER_USE_SAMPLES_MIN: u32 = 5;

/// One line per gpu job, and a flag for a job that likely under-used its GPU.
fn print_gpu_jobs(step: &str, g: &crate::gpu::GpuReport) {
    for j in &g.jobs {
        let mut line = format!(
            "  {step}: gpu job {} {} on {} {} in {} ms",
            j.id,
            j.op,
            j.device.as_deref().unwrap_or(&j.worker),
            j.state.as_str(),
            j.wall_ms
        );
        if let Some(us) = j.dispatch_us {
            line.push_str(&format!(
                " (dispatch {:.2} ms, {} worker)",
                us as f64 / 1000.0,
                if j.warm { "warm" } else { "new" }
            ));
        }
        if j.replayed {
            line.push_str(" (from the record)");
        }
        match j.mfu {
            Some(m) => line.push_str(&format!("  MFU {:.1}%", m * 100.0)),
            None => line.push_str("  MFU -"),
        }
        println!("{line}");
        if let Some(m) = &j.message
            && j.state != crate::gpu::State::Succeeded
        {
            println!("    {m}");
        }
        let Some(u) = j
            .usage
            .as_ref()
            .filter(|u| u.samples >= UNDER_USE_SAMPLES_MIN)
        else {
            continue;
        };
        match u.sm_active_mean {
            Some(sm) if u.util_mean >= LAUNCH_BOUND_UTIL_MIN && sm < LAUNCH_BOUND_SM_MAX => {
                println!(
                    "    ⚠ GPU busy {:.0}% of the time but SMs active only {sm:.0}%: likely launch-bound (small kernels; larger batches or CUDA graphs help)",
                    u.util_mean
                );
            }
            _ if u.util_mean < INPUT_BOUND_UTIL_MAX => println!(
                "    ⚠ GPU busy only {:.0}% of the time: likely input-bound (data loading or host work between kernels)",
                u.util_mean
            ),
            _ => {}
        }
    }
    if !g.available
        && let Some(reason) = &g.reason
    {
        println!("  {step}: {reason}");
    }
}

fn format_metric(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// Live progress on stderr: a spinner with running steps on a terminal,
/// one line per finished step otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    running: Mutex<Vec<String>>,
}

impl Progress {
    fn new(terminal: bool) -> Self {
        Progress {
            bar: terminal.then(ProgressBar::hidden),
            running: Mutex::new(Vec::new()),
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            bar.set_message(format!("running: {}", running.join(", ")));
        }
    }
}

impl Observer for Progress {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::RunStarted { run_id, steps } => {
                if let Some(bar) = &self.bar {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    bar.set_length(steps.len() as u64);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{pos}/{len}] {elapsed} {wide_msg}",
                        )
                        .expect("valid template"),
                    );
                    bar.enable_steady_tick(Duration::from_millis(100));
                }
                self.line(format!("run {run_id}: {} steps", steps.len()));
            }
            Event::StepStarted { step, attempt } => {
                self.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(if attempt > 1 {
                        format!("{step} (attempt {attempt})")
                    } else {
                        step.to_string()
                    });
                self.refresh();
            }
            Event::StepRetrying {
                step,
                attempt,
                error,
            } => {
                self.line(format!(
                    "  ↻ {step}: attempt {attempt} failed: {}; retrying",
                    error.message
                ));
                self.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|s| !s.starts_with(step));
                self.refresh();
            }
            Event::StepFinished(report) => {
                self.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|s| s != &report.name && !s.starts_with(&format!("{} (", report.name)));
                self.line(finished_line(report));
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
                self.refresh();
            }
        }
    }
}

fn finished_line(r: &StepReport) -> String {
    match r.status {
        StepStatus::Succeeded => format!("  ✓ {:<16} {:>6} ms", r.name, r.wall_ms),
        StepStatus::Cached => format!("  ◆ {:<16} cached", r.name),
        StepStatus::Failed => format!(
            "  ✗ {:<16} {}",
            r.name,
            r.error.as_ref().map_or("failed", |e| e.message.as_str())
        ),
        StepStatus::Skipped => format!(
            "  - {:<16} skipped ({})",
            r.name,
            r.reason.as_deref().unwrap_or("upstream failed")
        ),
    }
}
