//! The command line's grammar: subcommands, flags and their defaults, as
//! clap parses them.
//!
//! Invariant: parsing does no IO; only `ExecArgs::options` reads the engine
//! config, when a command asks for run options.
//! Boundary: knows flags and their types, never how a command runs or what
//! it prints (`commands`, `render`).

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Parser, Subcommand};

use crate::policy::PathPolicy;
use crate::run;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Reproducible ML pipelines of sandboxed WebAssembly steps"
)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub(super) struct HomeArg {
    /// Engine home: store, cache, runs (default: $SLUICE_HOME or ./.sluice).
    #[arg(long, env = "SLUICE_HOME", default_value = ".sluice")]
    pub(super) home: PathBuf,
}

/// How steps execute: shared by every command that runs steps.
#[derive(clap::Args, Debug, Clone)]
pub(super) struct ExecArgs {
    /// Steps in flight at most (default: number of cores).
    #[arg(long)]
    pub(super) jobs: Option<usize>,
    /// Directory for compiled components, shareable between homes
    /// (default: HOME/components).
    #[arg(long, env = "SLUICE_COMPILE_CACHE")]
    pub(super) compile_cache: Option<PathBuf>,
    /// Engine config file: `[server]`, `[[tokens]]`, `[hooks.NAME]`,
    /// `[workers.KIND]`; unknown tables and keys are errors (default:
    /// HOME/config.toml when it exists).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Where steps execute: `local` (in this process), `process` (each
    /// attempt in a `sluice exec-step` child), `ray` (a Ray job) or
    /// `kubernetes` (a Job; needs `[kubernetes]` in the config and a
    /// shared `--store`); over the spec's `[executor]`, under a step's own
    /// `executor`.
    #[arg(long, value_parser = parse_executor)]
    pub(super) executor: Option<crate::spec::ExecutorKind>,
    /// Shared artifact store in front of which HOME's store is a verified
    /// cache: `s3://bucket/prefix` (endpoint and credentials from the
    /// `AWS_*` environment variables) or `file:///shared/dir` (default:
    /// the config's `[store] url`, else none).
    #[arg(long, env = "SLUICE_STORE")]
    pub(super) store: Option<String>,
    /// The Ray dashboard the `ray` executor submits jobs to (default
    /// http://127.0.0.1:8265).
    #[arg(long, env = "RAY_ADDRESS")]
    pub(super) ray_address: Option<String>,
}

fn parse_executor(s: &str) -> Result<crate::spec::ExecutorKind, String> {
    s.parse()
}

impl ExecArgs {
    /// Run options for `home`.
    /// Paths a spec run with these options may not name: the home, the
    /// config file and the compile cache's tag key.
    pub(super) fn policy(&self, home: &Path) -> PathPolicy {
        let policy = PathPolicy::local(home, self.config.as_deref());
        match &self.compile_cache {
            Some(cache) => policy.also_private(&crate::sandbox::compile_cache_key_path(cache)),
            None => policy,
        }
    }

    pub(super) fn options(
        self,
        home: PathBuf,
        no_cache: bool,
        max_parallel: Option<usize>,
    ) -> anyhow::Result<run::Options> {
        let config = crate::config::Config::load(self.config.as_deref(), &home)?;
        self.options_with(config, home, no_cache, max_parallel)
    }

    /// Like [`ExecArgs::options`], with the config file already loaded.
    pub(super) fn options_with(
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
            executor: self.executor,
            default_executor: config.executor,
            remote: crate::config::open_remote(self.store.as_deref().or(config.store.as_deref()))?,
            ray_address: self.ray_address,
            kubernetes: config.kubernetes,
            config: config.path,
            ..run::Options::new(home)
        })
    }
}

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// Runs a pipeline spec.
    Run(RunArgs),
    /// Runs a pipeline inside a CI job: like `run`, plus a JUnit XML report
    /// (one test case per step); exits 1 when the run failed.
    Ci(CiArgs),
    /// Serves the HTTP API, the dashboard and `/metrics`.
    Serve(ServeArgs),
    /// Checks a pipeline spec without running it.
    Validate(ValidateArgs),
    /// Shows a finished run.
    Show(ShowArgs),
    /// Continues a run that was interrupted (crash, kill): steps that
    /// finished come from the cache; the run is then sealed as usual.
    Resume(ResumeArgs),
    /// Re-executes a recorded run (ignoring the cache) and compares every
    /// output digest; exit 0 only when identical.
    Replay(ReplayArgs),
    /// Checks a run's record chain, signature, run id, summary and log
    /// inclusion (against signed tree heads); exit 0 if intact, 1 naming
    /// the first bad line and the reason otherwise.
    Verify(VerifyArgs),
    /// Prints a run's signed provenance (DSSE envelope of an in-toto
    /// statement), or verifies an envelope with only a public key.
    Provenance(ProvenanceArgs),
    /// Lists runs, newest first.
    Runs(RunsArgs),
    /// Prints a step's captured stdout (or stderr), control characters escaped.
    Logs(LogsArgs),
    /// Delivers a git push webhook (GitHub/Gitea style) to a configured
    /// hook: verifies the signature, de-duplicates the delivery id and runs
    /// the hook's pipeline with the pushed commit as a param. (The HTTP
    /// route of `sluice serve` uses the same path.)
    Hook(HookArgs),
    /// Artifacts in the store.
    Artifact(ArtifactArgs),
    /// An artifact's lineage from the sealed records of this home's runs:
    /// the steps that produced it, what they read (transitively, back to
    /// the runs' sources) and the steps that consumed it.
    Lineage(LineageArgs),
    /// Scaffolds new things.
    New(NewArgs),
    /// Serves the gpu worker protocol on stdin/stdout (the engine starts
    /// this itself for the built-in `cpu` worker kind).
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// Runs one step attempt from its request stored in the CAS (by
    /// digest) and files its result once; what the `process`, Ray and
    /// Kubernetes executors start. Exit 0 succeeded, 10 step failure,
    /// 11 limit, 12 engine failure, 13 no result could be filed.
    ExecStep(ExecStepArgs),
    /// Compiles the component on stdin to native code on stdout (the
    /// engine runs this itself, bounded in time and memory, because
    /// compiling untrusted bytes cannot be interrupted in-process).
    #[command(hide = true)]
    CompileComponent(CompileComponentArgs),
}

/// Arguments of `sluice run`.
#[derive(clap::Args, Debug)]
pub(super) struct RunArgs {
    /// The pipeline spec (TOML).
    pub(super) pipeline: PathBuf,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Overrides a pipeline param (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub(super) params: Vec<(String, String)>,
    /// Executes every step even when the cache has its result.
    #[arg(long)]
    pub(super) no_cache: bool,
    #[command(flatten)]
    pub(super) exec: ExecArgs,
    /// Prints one JSON document with the run's result.
    #[arg(long)]
    pub(super) json: bool,
    /// Most fanned-out sweep steps running at once.
    #[arg(long)]
    pub(super) max_parallel: Option<usize>,
    /// Sorts the sweep comparison table by this metric (`STEP.METRIC`
    /// or just `METRIC`), best (highest) first.
    #[arg(long)]
    pub(super) sort: Option<String>,
}

/// Arguments of `sluice ci`.
#[derive(clap::Args, Debug)]
pub(super) struct CiArgs {
    /// The pipeline spec (TOML).
    pub(super) pipeline: PathBuf,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Overrides a pipeline param (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub(super) params: Vec<(String, String)>,
    /// Where to write the JUnit XML report.
    #[arg(long, default_value = "sluice-junit.xml")]
    pub(super) junit: PathBuf,
    /// Executes every step even when the cache has its result.
    #[arg(long)]
    pub(super) no_cache: bool,
    #[command(flatten)]
    pub(super) exec: ExecArgs,
}

/// Arguments of `sluice serve`.
#[derive(clap::Args, Debug)]
pub(super) struct ServeArgs {
    /// Listen address (default: `[server] listen`, else 127.0.0.1:7878).
    #[arg(long)]
    pub(super) listen: Option<String>,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Config file: server settings, tokens, hooks, workers (default:
    /// HOME/config.toml when it exists).
    #[arg(long)]
    pub(super) config: Option<PathBuf>,
    /// Directory for compiled components, shareable between homes.
    #[arg(long, env = "SLUICE_COMPILE_CACHE")]
    pub(super) compile_cache: Option<PathBuf>,
}

/// Arguments of `sluice validate`.
#[derive(clap::Args, Debug)]
pub(super) struct ValidateArgs {
    /// The pipeline spec (TOML).
    pub(super) pipeline: PathBuf,
    /// The home whose files the spec may not name (as `run` would).
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Overrides a pipeline param (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub(super) params: Vec<(String, String)>,
    /// Prints the result as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// Arguments of `sluice show`.
#[derive(clap::Args, Debug)]
pub(super) struct ShowArgs {
    /// The run id.
    pub(super) run_id: String,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Prints the run's JSON summary.
    #[arg(long)]
    pub(super) json: bool,
}

/// Arguments of `sluice resume`.
#[derive(clap::Args, Debug)]
pub(super) struct ResumeArgs {
    /// The run id.
    pub(super) run_id: String,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Prints one JSON document with the run's result.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) exec: ExecArgs,
}

/// Arguments of `sluice replay`.
#[derive(clap::Args, Debug)]
pub(super) struct ReplayArgs {
    /// The run id.
    pub(super) run_id: String,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Prints the report as JSON.
    #[arg(long)]
    pub(super) json: bool,
    /// Re-executes gpu jobs on workers and compares them with the
    /// record (bitwise on the same device/driver/library fingerprint,
    /// by metric tolerance otherwise) instead of answering them from it.
    #[arg(long)]
    pub(super) rerun_gpu: bool,
    #[command(flatten)]
    pub(super) exec: ExecArgs,
}

/// Arguments of `sluice verify`.
#[derive(clap::Args, Debug)]
pub(super) struct VerifyArgs {
    /// The run id.
    pub(super) run_id: String,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Prints the report as JSON.
    #[arg(long)]
    pub(super) json: bool,
    /// The trusted public key (default: the home's key named by
    /// `keys/active`; pass a copy kept outside the home to also guard
    /// against someone who can write to the home).
    #[arg(long)]
    pub(super) pubkey: Option<PathBuf>,
}

/// Arguments of `sluice lineage`.
#[derive(clap::Args, Debug)]
pub(super) struct LineageArgs {
    /// The artifact's digest (`sha256:<hex>`).
    pub(super) digest: String,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Prints the lineage as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// Arguments of `sluice provenance`.
#[derive(clap::Args, Debug)]
pub(super) struct ProvenanceArgs {
    /// The run id (omit with --verify).
    pub(super) run_id: Option<String>,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// An envelope file to verify instead.
    #[arg(long, requires = "pubkey")]
    pub(super) verify: Option<PathBuf>,
    /// The public key to verify with.
    #[arg(long)]
    pub(super) pubkey: Option<PathBuf>,
}

/// Arguments of `sluice runs`.
#[derive(clap::Args, Debug)]
pub(super) struct RunsArgs {
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Prints JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// Arguments of `sluice logs`.
#[derive(clap::Args, Debug)]
pub(super) struct LogsArgs {
    /// The run id.
    pub(super) run_id: String,
    /// The step.
    pub(super) step: String,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Shows stderr instead of stdout.
    #[arg(long)]
    pub(super) stderr: bool,
}

/// Arguments of `sluice hook`.
#[derive(clap::Args, Debug)]
pub(super) struct HookArgs {
    /// The hook's name (`[hooks.NAME]` in the config).
    pub(super) name: String,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// The raw request body.
    #[arg(long)]
    pub(super) body: PathBuf,
    /// The `X-Hub-Signature-256` header.
    #[arg(long)]
    pub(super) signature: Option<String>,
    /// The `X-GitHub-Delivery` / `X-Gitea-Delivery` header.
    #[arg(long)]
    pub(super) delivery: String,
    #[command(flatten)]
    pub(super) exec: ExecArgs,
}

/// Arguments of `sluice artifact`.
#[derive(clap::Args, Debug)]
pub(super) struct ArtifactArgs {
    #[command(subcommand)]
    pub(super) command: ArtifactCommand,
}

/// Arguments of `sluice new`.
#[derive(clap::Args, Debug)]
pub(super) struct NewArgs {
    #[command(subcommand)]
    pub(super) command: NewCommand,
}

/// Arguments of `sluice worker`.
#[derive(clap::Args, Debug)]
pub(super) struct WorkerArgs {
    #[command(subcommand)]
    pub(super) kind: WorkerKind,
}

/// Arguments of `sluice compile-component`.
#[derive(clap::Args, Debug)]
pub(super) struct CompileComponentArgs {
    /// The sandbox's attempt slots (its engine configuration).
    #[arg(long)]
    pub(super) slots: u32,
}

/// Arguments of `sluice exec-step`.
#[derive(clap::Args, Debug)]
pub(super) struct ExecStepArgs {
    /// The digest of the stored attempt request (`sha256:...`).
    pub(super) request: String,
    #[command(flatten)]
    pub(super) home: HomeArg,
    /// Directory for compiled components (default: HOME/components).
    #[arg(long, env = "SLUICE_COMPILE_CACHE")]
    pub(super) compile_cache: Option<PathBuf>,
    /// Engine config file (its `[workers.KIND]` run the step's gpu jobs).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// The shared artifact store (as for `sluice run`).
    #[arg(long, env = "SLUICE_STORE")]
    pub(super) store: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(super) enum WorkerKind {
    /// The reference CPU worker (`train-mlp`).
    Cpu,
}

#[derive(Subcommand, Debug)]
pub(super) enum ArtifactCommand {
    /// Writes an artifact's bytes to stdout, after verifying them.
    Cat {
        /// `sha256:<hex>`.
        digest: String,
        #[command(flatten)]
        home: HomeArg,
        /// The shared artifact store to fetch it from when HOME lacks it.
        #[arg(long, env = "SLUICE_STORE")]
        store: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum NewCommand {
    /// A step (Rust crate, Python or JavaScript), with a pipeline and
    /// sample data that run it.
    Step {
        /// Step directory and step name.
        name: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The language to write it in.
        #[arg(long, value_enum, default_value_t = StepLang::Rust)]
        lang: StepLang,
    },
}

/// `sluice new step --lang`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(super) enum StepLang {
    /// A crate on the Rust guest SDK.
    Rust,
    /// A Python step built with componentize-py.
    Python,
    /// A JavaScript step built with ComponentizeJS.
    Js,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, found {s:?}")),
    }
}
