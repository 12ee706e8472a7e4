//! A step that writes everything it can observe to its output `observed`
//! (text, one `key: value` line each), so the step-cache tests can check
//! that two attempts with equal cache keys see the same world and that any
//! change a guest can see changes the key (HOSTILE.md group 18).
//!
//! Observed: `argv`, the environment, every param, every input (name,
//! digest, size, media type, and a hash of its bytes), the declared
//! outputs, the host's error messages (they name the step, its inputs and
//! outputs), the gpu devices, wall and monotonic clock readings, random
//! values (std's `RandomState` draws its keys from WASI random), and the
//! log cap (stderr writes until one is refused).
//!
//! Not observed: the memory, fuel and output limits. Going past any of them
//! traps the attempt (the memory limiter denies growth with a trap, not a
//! `-1`), so a successful attempt cannot tell them apart; they are in the
//! key because they decide success.
//!
//! Every other declared output gets its own name as content, so any set of
//! declared outputs succeeds.

use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::io::{Read, Write};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sluice_guest::{Ctx, Result};

/// Largest log cap probed: above the default (1 MiB) so a default cap is
/// told apart from a larger one, small enough to stay cheap.
const LOG_PROBE_BYTES_MAX: usize = (2 << 20) + 1024;

/// FNV-1a: enough to show the bytes were read; the digest is the host's.
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn run(ctx: &mut Ctx) -> Result<()> {
    let mut o = String::new();
    let line = |o: &mut String, key: &str, value: &dyn std::fmt::Debug| {
        let _ = writeln!(o, "{key}: {value:?}");
    };
    line(&mut o, "args", &std::env::args().collect::<Vec<_>>());
    line(&mut o, "env", &std::env::vars().collect::<Vec<_>>());
    line(&mut o, "cwd", &std::env::current_dir().ok());
    for (k, v) in ctx.params() {
        line(&mut o, &format!("param {k:?}"), &v);
    }
    for input in ctx.inputs() {
        let mut bytes = Vec::new();
        ctx.input(&input.name)?.read_to_end(&mut bytes)?;
        line(
            &mut o,
            &format!("input {:?}", input.name),
            &(
                &input.digest,
                input.size,
                &input.media_type,
                bytes.len(),
                fnv1a(&bytes, 0xcbf2_9ce4_8422_2325),
            ),
        );
    }
    let outputs = ctx.declared_outputs();
    line(&mut o, "outputs", &outputs);
    line(
        &mut o,
        "open unknown input",
        &ctx.input("no such input").err().map(|e| e.to_string()),
    );
    line(
        &mut o,
        "create undeclared output",
        &ctx.output("no such output", "text/plain")
            .err()
            .map(|e| e.to_string()),
    );
    line(&mut o, "gpu devices", &ctx.gpu().devices());
    let wall: Vec<u128> = (0..3)
        .map(|_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        })
        .collect();
    line(&mut o, "wall clock ns", &wall);
    let t0 = Instant::now();
    let mono: Vec<u128> = (0..3).map(|_| t0.elapsed().as_nanos()).collect();
    line(&mut o, "monotonic ns since first", &mono);
    let random: Vec<u64> = (0..3u64).map(|i| RandomState::new().hash_one(i)).collect();
    line(&mut o, "random", &random);
    line(&mut o, "log cap bytes", &probe_log_cap());
    let mut out = ctx.output("observed", "text/plain")?;
    out.write_all(o.as_bytes())?;
    out.finish()?;
    for name in outputs.iter().filter(|n| *n != "observed") {
        let mut extra = ctx.output(name, "text/plain")?;
        extra.write_all(name.as_bytes())?;
        extra.finish()?;
    }
    Ok(())
}

/// Writes 1 KiB chunks to stderr until one is refused: the bytes accepted,
/// or `None` when the cap is above [`LOG_PROBE_BYTES_MAX`].
fn probe_log_cap() -> Option<usize> {
    let chunk = [b'.'; 1024];
    let mut stderr = std::io::stderr();
    let mut written = 0;
    while written < LOG_PROBE_BYTES_MAX {
        match stderr.write(&chunk) {
            Ok(0) | Err(_) => return Some(written),
            Ok(n) => written += n,
        }
    }
    None
}

sluice_guest::export_step!(run);
