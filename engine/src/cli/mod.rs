//! The command line: flags, progress display, tables, JSON output, exit
//! codes (0 ok, 1 run failed, 2 usage or spec error).
//!
//! Invariant: with `--json`, stdout carries exactly one JSON document.
//! Boundary: the only module that knows flags and terminal output. Inside:
//! `args` (the grammar), `commands` (one function per subcommand),
//! `render` (human-readable text), `progress` (live display on stderr).

mod args;
mod commands;
mod progress;
mod render;

use clap::Parser;

use args::{Cli, Command};

/// Exit code of a run that failed.
pub const EXIT_RUN_FAILED: u8 = 1;
/// Exit code of a usage or spec error.
pub const EXIT_USAGE: u8 = 2;

/// Parses the process arguments and runs the command; returns the exit code.
///
/// A reader that goes away early (`sluice runs --json | head -1`) is not an
/// error: like other Unix filters, the command stops quietly with status 0.
pub fn run() -> anyhow::Result<u8> {
    match dispatch() {
        Err(e) if is_broken_pipe(&e) => Ok(0),
        other => other,
    }
}

/// Whether `err` comes from writing to a pipe whose reader has closed it
/// (Rust ignores SIGPIPE, so such a write returns `EPIPE` instead).
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn dispatch() -> anyhow::Result<u8> {
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
        Command::CompileComponent(a) => commands::compile_component(a),
        Command::Serve(a) => commands::serve(a),
        Command::Run(a) => commands::run(a),
        Command::Ci(a) => commands::ci(a),
        Command::Validate(a) => commands::validate(a),
        Command::Show(a) => commands::show(a),
        Command::Runs(a) => commands::runs(a),
        Command::Resume(a) => commands::resume(a),
        Command::Verify(a) => commands::verify(a),
        Command::Lineage(a) => commands::lineage(a),
        Command::Provenance(a) => commands::provenance(a),
        Command::Replay(a) => commands::replay(a),
        Command::Logs(a) => commands::logs(a),
        Command::Hook(a) => commands::hook(a),
        Command::Artifact(a) => commands::artifact(a),
        Command::Worker(a) => commands::worker(a),
        Command::ExecStep(a) => commands::exec_step(a),
        Command::New(a) => commands::new(a),
    }
}
