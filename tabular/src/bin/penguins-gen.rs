//! `penguins-gen ROWS [SEED]`: writes a penguins-shaped CSV of ROWS rows to
//! stdout, determined by SEED alone (default 0); see
//! `sluice_tabular::generate`. For tests and benchmarks at any scale
//! without committing large files:
//!
//! ```sh
//! cargo run --release -p sluice-tabular --bin penguins-gen -- 1000000 7 > penguins-1m.csv
//! ```

use std::io::{BufWriter, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |i: usize, default: Option<u64>| match args.get(i) {
        Some(a) => a.parse::<u64>().ok(),
        None => default,
    };
    let (Some(rows), Some(seed)) = (parse(0, None), parse(1, Some(0))) else {
        eprintln!("usage: penguins-gen ROWS [SEED]  (non-negative integers)");
        return ExitCode::from(2);
    };
    if args.len() > 2 {
        eprintln!("usage: penguins-gen ROWS [SEED]  (non-negative integers)");
        return ExitCode::from(2);
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let written =
        sluice_tabular::generate::write_penguins(&mut out, rows, seed).and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("penguins-gen: {e}");
            ExitCode::FAILURE
        }
    }
}
