//! One function per subcommand: loads what the command names, calls into
//! the engine, hands the result to `render` (or prints its JSON) and
//! returns the exit code.
//!
//! Invariant: with `--json`, a command writes exactly one JSON document to
//! stdout; every other line of output goes through `render` or `progress`.
//! Boundary: the only place in the CLI that calls into the engine (`run`,
//! `replay`, `verify`, `seal`, `hook`, `store`, `server`); it never parses
//! flags (`args`) or lays out text (`render`).

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, bail};

use super::args::{
    ArtifactArgs, ArtifactCommand, CiArgs, CompileComponentArgs, ExecStepArgs, HookArgs,
    LineageArgs, LogsArgs, NewArgs, NewCommand, ProvenanceArgs, ReplayArgs, ResumeArgs, RunArgs,
    RunsArgs, ServeArgs, ShowArgs, StepLang, ValidateArgs, VerifyArgs, WorkerArgs, WorkerKind,
};
use super::progress::Progress;
use super::{EXIT_RUN_FAILED, EXIT_USAGE, render};
use crate::digest::Digest;
use crate::policy::PathPolicy;
use crate::run::{self, Observer, RunId, RunStatus, RunSummary};
use crate::spec;
use crate::store::Store;

/// `sluice compile-component`: stdin's component to native code on stdout.
pub(super) fn compile_component(args: CompileComponentArgs) -> anyhow::Result<u8> {
    use std::io::Read as _;
    let mut wasm = Vec::new();
    std::io::stdin()
        .take(crate::sandbox::COMPONENT_BYTES_MAX + 1)
        .read_to_end(&mut wasm)
        .context("compile-component: reading stdin")?;
    if wasm.len() as u64 > crate::sandbox::COMPONENT_BYTES_MAX {
        eprintln!(
            "{} bytes or more; the limit is {}",
            wasm.len(),
            crate::sandbox::COMPONENT_BYTES_MAX
        );
        return Ok(1);
    }
    match crate::sandbox::compile_standalone(&wasm, args.slots) {
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

/// `sluice serve`.
pub(super) fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    crate::server::serve(crate::server::ServeArgs {
        listen: args.listen,
        home: args.home.home,
        config: args.config,
        compile_cache: args.compile_cache,
    })?;
    Ok(0)
}

/// `sluice run`.
pub(super) fn run(args: RunArgs) -> anyhow::Result<u8> {
    let RunArgs {
        pipeline,
        home,
        params,
        no_cache,
        exec,
        json,
        sort,
        max_parallel,
    } = args;
    let policy = exec.policy(&home.home);
    let options = exec.options(home.home, no_cache, max_parallel)?;
    let pipeline = match spec::load_with(&pipeline, &params, &policy) {
        Ok(p) => p,
        Err(errors) => return report_spec_errors(&errors, json),
    };
    run_and_report(json, sort.as_deref(), |observer| {
        Ok(run::execute(&pipeline, &options, observer)?)
    })
}

/// `sluice ci`: `run` plus a JUnit XML report.
pub(super) fn ci(args: CiArgs) -> anyhow::Result<u8> {
    let CiArgs {
        pipeline,
        home,
        params,
        junit,
        no_cache,
        exec,
    } = args;
    let policy = exec.policy(&home.home);
    let spec = match spec::load_with(&pipeline, &params, &policy) {
        Ok(p) => p,
        Err(errors) => return report_spec_errors(&errors, false),
    };
    let options = exec.options(home.home, no_cache, None)?;
    let progress = Progress::new(false);
    let summary = run::execute(&spec, &options, &progress)?;
    let xml = crate::junit::report(&summary)?;
    crate::durable::write_atomic(&junit, xml.as_bytes(), true)?;
    let out = &mut std::io::stdout();
    render::summary(out, &summary)?;
    writeln!(out, "junit report: {}", junit.display())?;
    Ok(exit_code(summary.status))
}

/// `sluice validate`.
pub(super) fn validate(args: ValidateArgs) -> anyhow::Result<u8> {
    let ValidateArgs {
        pipeline,
        home,
        params,
        json,
    } = args;
    match spec::load_with(&pipeline, &params, &PathPolicy::local(&home.home, None)) {
        Ok(p) => {
            let out = &mut std::io::stdout();
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"status": "valid", "pipeline": p.name, "steps": p.steps.iter().map(|s| &s.name).collect::<Vec<_>>()})
                )?;
            } else {
                render::valid(out, &pipeline, &p)?;
            }
            Ok(0)
        }
        Err(errors) => report_spec_errors(&errors, json),
    }
}

/// `sluice show`.
pub(super) fn show(args: ShowArgs) -> anyhow::Result<u8> {
    let id: RunId = args.run_id.parse()?;
    let summary = run::load_summary(&args.home.home, &id)?;
    let out = &mut std::io::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        render::summary(out, &summary)?;
    }
    Ok(0)
}

/// `sluice resume`.
pub(super) fn resume(args: ResumeArgs) -> anyhow::Result<u8> {
    let id: RunId = args.run_id.parse()?;
    let options = args.exec.options(args.home.home, false, None)?;
    run_and_report(args.json, None, |observer| {
        Ok(run::resume(&id, &options, observer)?)
    })
}

/// `sluice verify`: exit 0 when intact, 1 otherwise.
pub(super) fn verify(args: VerifyArgs) -> anyhow::Result<u8> {
    let id: RunId = args.run_id.parse()?;
    let report = crate::verify::verify(&args.home.home, &id, args.pubkey.as_deref())?;
    let out = &mut std::io::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        render::verify(out, &id, &report)?;
    }
    Ok(if report.reason.is_none() {
        0
    } else {
        EXIT_RUN_FAILED
    })
}

/// `sluice lineage`: exit 0 when some run in the home made or brought in
/// the artifact, 1 when none did.
pub(super) fn lineage(args: LineageArgs) -> anyhow::Result<u8> {
    let digest: crate::digest::Digest = args
        .digest
        .parse()
        .map_err(|e| anyhow::anyhow!("{:?} is not an artifact digest: {e}", args.digest))?;
    let home = &args.home.home;
    let runs = crate::run::list_runs(home)
        .with_context(|| format!("cannot list the runs of {}", home.display()))?;
    let (facts, skipped) = crate::lineage::FactsCache::default().facts(home, &runs);
    let l = crate::lineage::lineage(&digest, &facts, skipped);
    let out = &mut std::io::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&l)?)?;
    } else {
        write!(out, "{}", crate::lineage::render(&l))?;
    }
    let known = !l.produced_by.is_empty() || !l.source_of.is_empty();
    Ok(if known { 0 } else { EXIT_RUN_FAILED })
}

/// `sluice provenance`: prints a run's envelope, or verifies one.
pub(super) fn provenance(args: ProvenanceArgs) -> anyhow::Result<u8> {
    let ProvenanceArgs {
        run_id,
        home,
        verify,
        pubkey,
    } = args;
    let out = &mut std::io::stdout();
    match (verify, run_id) {
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
                    writeln!(
                        out,
                        "{}: valid signature by {}; in-toto statement with {subjects} subjects",
                        file.display(),
                        key.keyid()
                    )?;
                    Ok(0)
                }
                Err(e) => {
                    writeln!(out, "{}: INVALID: {e}", file.display())?;
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
            let bytes = std::fs::read(&path)
                .with_context(|| format!("run `{id}` has no provenance ({})", path.display()))?;
            out.write_all(&bytes)?;
            writeln!(out)?;
            Ok(0)
        }
        (None, None) => bail!("give a RUN_ID, or --verify FILE --pubkey FILE"),
    }
}

/// `sluice replay`: exit 0 only when every output is identical.
pub(super) fn replay(args: ReplayArgs) -> anyhow::Result<u8> {
    let id: RunId = args.run_id.parse()?;
    let options = args.exec.options(args.home.home, false, None)?;
    let gpu = match (&options.gpu, args.rerun_gpu) {
        (Some(d), true) => crate::replay::GpuReplay::Rerun(d.clone()),
        _ => crate::replay::GpuReplay::Recorded,
    };
    let report = crate::replay::replay(
        &options.home,
        &id,
        options.jobs,
        options.compile_cache,
        gpu,
        options.remote,
    )?;
    let out = &mut std::io::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        render::replay(out, &report)?;
    }
    Ok(if report.verdict == crate::replay::Verdict::Identical {
        0
    } else {
        EXIT_RUN_FAILED
    })
}

/// `sluice logs`: a step's captured output, control characters escaped.
pub(super) fn logs(args: LogsArgs) -> anyhow::Result<u8> {
    let LogsArgs {
        run_id,
        step,
        home,
        stderr,
    } = args;
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
        write!(
            std::io::stdout(),
            "{}",
            crate::quoting::escape_controls(&String::from_utf8_lossy(&bytes), usize::MAX)
        )?;
    }
    Ok(0)
}

/// `sluice hook`: one webhook delivery, answered as one JSON line.
pub(super) fn hook(args: HookArgs) -> anyhow::Result<u8> {
    let HookArgs {
        name,
        home,
        body,
        signature,
        delivery,
        exec,
    } = args;
    let Some(config) = exec.config.clone() else {
        bail!("sluice hook needs --config FILE with [hooks.{name}]");
    };
    let loaded = crate::config::Config::load(Some(&config), &home.home)?;
    let Some(hook) = loaded.hooks.get(&name).cloned() else {
        bail!("{}: no [hooks.{name}]", config.display());
    };
    let bytes = std::fs::read(&body).with_context(|| body.display().to_string())?;
    let decision = crate::hook::handle(&home.home, &hook, &bytes, signature.as_deref(), &delivery)?;
    let out = &mut std::io::stdout();
    match decision {
        crate::hook::Decision::Duplicate { first_delivery } => {
            writeln!(
                out,
                "{}",
                serde_json::json!({"status": "duplicate", "delivery": delivery, "first_delivery": first_delivery})
            )?;
            Ok(0)
        }
        crate::hook::Decision::Ignored(reason) => {
            writeln!(
                out,
                "{}",
                serde_json::json!({"status": "ignored", "reason": reason})
            )?;
            Ok(0)
        }
        crate::hook::Decision::Run { push, param } => {
            let policy = PathPolicy::local(&home.home, Some(&config));
            let spec = match spec::load_with(&hook.pipeline, &[param], &policy) {
                Ok(p) => p,
                Err(errors) => return report_spec_errors(&errors, false),
            };
            let options = exec.options_with(loaded, home.home, false, None)?;
            let summary = run::execute(&spec, &options, &run::Quiet)?;
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "status": "started",
                    "delivery": delivery,
                    "push": push,
                    "run_id": summary.run_id,
                    "run_status": summary.status,
                })
            )?;
            Ok(exit_code(summary.status))
        }
    }
}

/// `sluice artifact cat`: an artifact's verified bytes on stdout.
pub(super) fn artifact(args: ArtifactArgs) -> anyhow::Result<u8> {
    let ArtifactCommand::Cat {
        digest,
        home,
        store,
    } = args.command;
    let digest: Digest = digest.parse()?;
    let store = Store::open_with(&home.home, crate::config::open_remote(store.as_deref())?)?;
    let mut file = store.open_verified(&digest)?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut file, &mut out).context("writing to stdout")?;
    out.flush()?;
    Ok(0)
}

/// `sluice worker cpu`: the gpu worker protocol on stdin/stdout.
pub(super) fn worker(args: WorkerArgs) -> anyhow::Result<u8> {
    let WorkerKind::Cpu = args.kind;
    sluice_cpu_worker::serve(
        std::io::BufReader::new(std::io::stdin()),
        std::io::stdout().lock(),
    )
    .context("cpu worker: writing to stdout")?;
    Ok(0)
}

/// `sluice exec-step`: one attempt from its stored request; the exit code
/// says how it ended (see [`crate::executor`]).
pub(super) fn exec_step(args: ExecStepArgs) -> anyhow::Result<u8> {
    use crate::executor;
    let code = |c: i32| c as u8;
    let request: crate::digest::Digest = match args.request.parse() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sluice exec-step: request {:?}: {e}", args.request);
            return Ok(super::EXIT_USAGE);
        }
    };
    let home = args.home.home;
    let config = crate::config::Config::load(args.config.as_deref(), &home)?;
    let remote = crate::config::open_remote(args.store.as_deref().or(config.store.as_deref()))?;
    let store = match crate::store::Store::open_with(&home, remote) {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => {
            eprintln!("sluice exec-step: {e}");
            return Ok(code(executor::EXIT_NO_RESULT));
        }
    };
    let cache = args
        .compile_cache
        .unwrap_or_else(|| home.join("components"));
    let sandbox = match crate::sandbox::Sandbox::new(&cache, 1) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice exec-step: {e}");
            return Ok(code(executor::EXIT_NO_RESULT));
        }
    };
    let gpu = std::sync::OnceLock::new();
    let workers = config.workers;
    let scratch = home.join("scratch").join("gpu");
    let backend = || {
        gpu.get_or_init(|| {
            std::sync::Arc::new(crate::gpu::Backend::Live(std::sync::Arc::new(
                crate::gpu::Dispatcher::new(workers.clone(), scratch.clone()),
            )))
        })
        .clone()
    };
    let env = executor::ExecStepEnv {
        store: &store,
        sandbox: &sandbox,
        gpu: &backend,
        cancel: None,
        executor: crate::spec::ExecutorKind::Process,
    };
    match executor::exec_step(&request, &env) {
        Ok(result) => {
            if let Some(f) = &result.outcome.failure {
                eprintln!("sluice exec-step: {request}: {:?}: {}", f.class, f.message);
            }
            Ok(code(executor::exit_code(&result.outcome)))
        }
        Err(e) => {
            eprintln!("sluice exec-step: {e}");
            Ok(code(executor::EXIT_NO_RESULT))
        }
    }
}

/// `sluice new step`.
pub(super) fn new(args: NewArgs) -> anyhow::Result<u8> {
    let NewCommand::Step { name, dir, lang } = args.command;
    let dir = dir.unwrap_or_else(|| std::path::PathBuf::from(&name));
    let (lang, what) = match lang {
        StepLang::Rust => (crate::scaffold::Lang::Rust, "step crate"),
        StepLang::Python => (crate::scaffold::Lang::Python, "Python step"),
        StepLang::Js => (crate::scaffold::Lang::Js, "JavaScript step"),
    };
    crate::scaffold::new_step(&name, &dir, lang)?;
    let out = &mut std::io::stdout();
    writeln!(out, "created {what} `{name}` in {}", dir.display())?;
    writeln!(
        out,
        "run it: sluice run {}",
        dir.join("pipeline.toml").display()
    )?;
    Ok(0)
}

/// `sluice runs`: every run in the home, newest first; a run whose
/// summary is missing, edited or corrupt is listed as such, never skipped.
pub(super) fn runs(args: RunsArgs) -> anyhow::Result<u8> {
    let home: &Path = &args.home.home;
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
    let out = &mut std::io::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
    } else {
        render::runs(out, &rows)?;
    }
    Ok(0)
}

/// Every spec error on stderr (and, with `--json`, as one document on
/// stdout); always the usage exit code.
fn report_spec_errors(errors: &[spec::SpecError], json: bool) -> anyhow::Result<u8> {
    render::spec_errors(&mut std::io::stderr(), errors)?;
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
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::json!({"status": "invalid", "errors": list})
        )?;
    }
    Ok(EXIT_USAGE)
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
    let out = &mut std::io::stdout();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        render::summary(out, &summary)?;
        render::sweep(out, &summary, sort)?;
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
