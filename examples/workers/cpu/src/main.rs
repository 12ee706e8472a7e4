//! `sluice-cpu-worker`: serves the worker protocol on stdin/stdout; see the
//! library's [`sluice_cpu_worker::serve`].

use std::io::{self, BufReader};
use std::process::ExitCode;

fn main() -> ExitCode {
    match sluice_cpu_worker::serve(BufReader::new(io::stdin()), io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
