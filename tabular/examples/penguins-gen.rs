//! `penguins-gen ROWS [SEED]`: writes a penguins-shaped CSV of ROWS rows to
//! stdout, determined by SEED alone (default 0); see
//! `sluice_tabular::generate`. For tests and benchmarks at any scale
//! without committing large files. An example, not a binary, so the
//! workspace's `cargo run` still means `sluice`:
//!
//! ```sh
//! cargo run --release -p sluice-tabular --example penguins-gen -- 1000000 7 > penguins-1m.csv
//! ```

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use sluice_tabular::generate;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((rows, seed)) = generate::parse_args(&args) else {
        eprintln!("{}", generate::USAGE);
        return ExitCode::from(2);
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    match generate::write_penguins(&mut out, rows, seed).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("penguins-gen: {e}");
            ExitCode::FAILURE
        }
    }
}
