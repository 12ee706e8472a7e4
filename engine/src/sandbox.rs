//! The wasmtime sandbox: one engine per process, compiled-component cache,
//! and execution of one step attempt under hard limits.
//!
//! Invariant: a step attempt reaches nothing but its `StepHost` (artifacts by
//! logical name, params, metrics, gpu port) and virtualised WASI clocks and
//! random; no host files, network, env or inherited stdio. Every way an
//! attempt can end is a [`Failure`] with a class, never a panic or an engine
//! crash. This is the only module that configures `wasmtime`.
//! Boundary: takes prepared inputs and ports, returns outcomes; it does not
//! touch the store or records itself.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest as _, Sha256};
use sluice_host_api::{
    ArtifactPort, EngineFault, FinishError, GpuPort, HostBudget, HostOutcome, InputArtifact,
    LimitExceeded, LimitKind, StepHost, StepHostConfig, StepPre,
};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::digest::Digest;
use crate::failure::{Failure, FailureClass};
use crate::limits::{self, Limits};
use crate::quoting::{escape_controls, sanitize};

/// Largest component accepted: bounds compile time and memory on untrusted
/// bytes (wasmtime does not treat compile-time DoS as a vulnerability).
pub const COMPONENT_BYTES_MAX: u64 = 64 << 20;
/// Fuel a guest burns between two looks at its deadline and cancellation
/// flag (about a millisecond of guest code). The guest runs on a fiber and
/// yields to the sandbox when a slice is used up (wasmtime refills it from
/// the attempt's fuel; the total is unchanged); the flag is also looked at
/// on every transition between guest and host (a call hook: host calls,
/// WASI calls, libcalls). Bulk memory operations cost fuel per byte, so no
/// wasm instruction runs long on little fuel, and a guest cannot outrun its
/// deadline by more than a slice or one host call. Epoch interruption
/// would add a check to every loop of the guest's own code instead
/// (measured: 10–25% of a tabular step).
pub const FUEL_SLICE: u64 = 1_000_000;
/// How often the sandbox's coarse clock ticks: the granularity of
/// wall-clock timeouts.
pub const TICK: Duration = Duration::from_millis(10);
/// Native stack a host function has beside the guest's wasm stack on its
/// fiber.
const HOST_STACK_BYTES: usize = 8 << 20;
/// Where the virtual wall clock starts: 2020-01-01T00:00:00Z. A fixed
/// instant (not the run's start) keeps outputs that embed the time
/// bit-reproducible and cacheable.
pub const VIRTUAL_EPOCH_S: u64 = 1_577_836_800;
/// How far each read of a virtual clock advances it.
pub const VIRTUAL_CLOCK_STEP_NS: u64 = 1_000;

/// Store data of one attempt.
struct StepData {
    host: StepHost,
    limiter: Limiter,
    clock: Arc<VirtualMonotonicClock>,
}

impl WasiView for StepData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.host.wasi,
            table: &mut self.host.table,
        }
    }
}

/// Memory and table accounting: the step's limit, the peak it reached, and
/// whether the limit is what stopped it.
struct Limiter {
    memory_bytes_max: usize,
    memory_bytes: usize,
    memory_peak_bytes: usize,
    denied: Option<usize>,
}

/// Table elements per table: far above what a real step needs, far below
/// what would hurt the host. Part of every cache key.
pub const TABLE_ELEMENTS_MAX: usize = 1_000_000;

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory_bytes - current.min(self.memory_bytes) + desired;
        if total > self.memory_bytes_max {
            self.denied = Some(total);
            return Err(LimitExceeded {
                kind: LimitKind::Memory,
                detail: format!(
                    "linear memory would grow to {total} bytes; the step's limit is {} bytes",
                    self.memory_bytes_max
                ),
            }
            .into());
        }
        self.memory_bytes = total;
        self.memory_peak_bytes = self.memory_peak_bytes.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > TABLE_ELEMENTS_MAX {
            return Err(LimitExceeded {
                kind: LimitKind::Memory,
                detail: format!(
                    "a table would grow to {desired} elements; the limit is {TABLE_ELEMENTS_MAX}"
                ),
            }
            .into());
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

/// Virtual time an attempt has slept: every `subscribe-duration` or
/// `subscribe-instant` of the monotonic clock advances it instead of
/// blocking a host thread, and both virtual clocks include it. A guest's
/// sleeps are therefore instant, bounded by nothing but its own code (which
/// the deadline, fuel and cancellation interrupt), and as
/// reproducible as its clock reads.
#[derive(Default)]
struct VirtualSleep {
    slept_ns: AtomicU64,
}

impl VirtualSleep {
    fn advance(&self, ns: u64) {
        // Saturating: a guest asking to sleep until `u64::MAX` gets there at
        // once, it does not wrap time backwards.
        let _ = self
            .slept_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(ns))
            });
    }

    fn slept_ns(&self) -> u64 {
        self.slept_ns.load(Ordering::Relaxed)
    }
}

/// A virtual wall clock: starts at [`VIRTUAL_EPOCH_S`] and advances by a
/// fixed step per read and by the attempt's virtual sleeps, so a step that
/// reads it is reproducible.
struct VirtualWallClock {
    reads: AtomicU64,
    sleep: Arc<VirtualSleep>,
}

impl HostWallClock for VirtualWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(VIRTUAL_CLOCK_STEP_NS)
    }

    fn now(&self) -> Duration {
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        Duration::from_secs(VIRTUAL_EPOCH_S)
            .saturating_add(Duration::from_nanos(
                n.saturating_mul(VIRTUAL_CLOCK_STEP_NS),
            ))
            .saturating_add(Duration::from_nanos(self.sleep.slept_ns()))
    }
}

/// A virtual monotonic clock starting at zero, advancing per read and by
/// the attempt's virtual sleeps.
struct VirtualMonotonicClock {
    reads: AtomicU64,
    sleep: Arc<VirtualSleep>,
}

impl VirtualMonotonicClock {
    /// The current reading without counting it as a read.
    fn peek(&self) -> u64 {
        self.reads
            .load(Ordering::Relaxed)
            .saturating_mul(VIRTUAL_CLOCK_STEP_NS)
            .saturating_add(self.sleep.slept_ns())
    }
}

impl HostMonotonicClock for VirtualMonotonicClock {
    fn resolution(&self) -> u64 {
        VIRTUAL_CLOCK_STEP_NS
    }

    fn now(&self) -> u64 {
        self.reads
            .fetch_add(1, Ordering::Relaxed)
            .saturating_mul(VIRTUAL_CLOCK_STEP_NS)
            .saturating_add(self.sleep.slept_ns())
    }
}

/// The WASI context's handle on the attempt's one virtual monotonic clock.
struct SharedMonotonic(Arc<VirtualMonotonicClock>);

impl HostMonotonicClock for SharedMonotonic {
    fn resolution(&self) -> u64 {
        self.0.resolution()
    }

    fn now(&self) -> u64 {
        HostMonotonicClock::now(&*self.0)
    }
}

/// `wasi:clocks/monotonic-clock` over the virtual clock. It shadows
/// wasmtime-wasi's own implementation, whose `subscribe-*` arm a real tokio
/// timer: a guest's `std::thread::sleep` (subscribe + `pollable.block`)
/// would block the host thread where no deadline or cancellation can
/// reach it. Here a subscription advances virtual time and returns a
/// pollable that is already ready.
struct VirtualClockView<'a> {
    clock: &'a VirtualMonotonicClock,
    table: &'a mut ResourceTable,
}

struct VirtualClocks;

impl wasmtime::component::HasData for VirtualClocks {
    type Data<'a> = VirtualClockView<'a>;
}

/// A pollable that is always ready: what a virtual sleep returns.
struct Elapsed;

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Elapsed {
    async fn ready(&mut self) {}
}

impl VirtualClockView<'_> {
    fn elapsed(
        &mut self,
        ns: u64,
    ) -> wasmtime::Result<wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>> {
        self.clock.sleep.advance(ns);
        let elapsed = self.table.push(Elapsed)?;
        wasmtime_wasi::p2::subscribe(self.table, elapsed)
    }
}

impl wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host for VirtualClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(HostMonotonicClock::now(self.clock))
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(VIRTUAL_CLOCK_STEP_NS)
    }

    fn subscribe_instant(
        &mut self,
        when: u64,
    ) -> wasmtime::Result<wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>> {
        let now = self.clock.peek();
        self.elapsed(when.saturating_sub(now))
    }

    fn subscribe_duration(
        &mut self,
        duration: u64,
    ) -> wasmtime::Result<wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>> {
        self.elapsed(duration)
    }
}

/// 32 bytes of seed material for one purpose of one attempt.
///
/// The attempt number is deliberately not an input: a retry repeats the same
/// computation (retries exist for environmental failures such as timeouts),
/// so whichever attempt succeeds produces the cacheable, replayable bytes.
fn derive_seed(run_seed: u64, step: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sluice-seed-v1\0");
    h.update(run_seed.to_le_bytes());
    h.update(step.as_bytes());
    h.update([0]);
    h.update(purpose.as_bytes());
    h.finalize().into()
}

/// The seeds of one attempt's random sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seeds {
    /// `wasi:random/random`.
    pub secure: [u8; 32],
    /// `wasi:random/insecure`.
    pub insecure: [u8; 32],
    /// `wasi:random/insecure-seed`.
    pub hash: [u8; 16],
}

impl Seeds {
    /// The seeds of step `step` in a run seeded with `run_seed`.
    pub fn derive(run_seed: u64, step: &str) -> Seeds {
        let hash = derive_seed(run_seed, step, "insecure-seed");
        Seeds {
            secure: derive_seed(run_seed, step, "secure-random"),
            insecure: derive_seed(run_seed, step, "insecure-random"),
            hash: hash[..16].try_into().expect("16 bytes"),
        }
    }
}

/// How the sandbox answers a step's non-deterministic questions, as the
/// record and the attempt description keep them: the virtual clocks'
/// configuration and the random seeds (hex).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAnswers {
    /// The virtual wall clock's start, seconds since the Unix epoch.
    pub wall_clock_start_s: u64,
    /// The virtual monotonic clock's start.
    pub monotonic_clock_start_ns: u64,
    /// How far each clock read advances.
    pub clock_step_ns: u64,
    /// `virtual`: sleeps (monotonic-clock subscriptions) advance both clocks
    /// instantly instead of blocking.
    pub sleep: String,
    /// [`Seeds::secure`], hex.
    pub secure_random_seed: String,
    /// [`Seeds::insecure`], hex.
    pub insecure_random_seed: String,
    /// [`Seeds::hash`], hex.
    pub insecure_random_hash_seed: String,
}

/// Host answers this sandbox cannot give (another engine's clocks or sleep
/// semantics, or seeds that are not hex of the right length).
#[derive(Debug, thiserror::Error)]
#[error("host answers: {0}")]
pub struct BadAnswers(String);

impl HostAnswers {
    /// The answers for `seeds` under this sandbox's clocks.
    pub fn of(seeds: &Seeds) -> HostAnswers {
        HostAnswers {
            wall_clock_start_s: VIRTUAL_EPOCH_S,
            monotonic_clock_start_ns: 0,
            clock_step_ns: VIRTUAL_CLOCK_STEP_NS,
            sleep: "virtual".to_string(),
            secure_random_seed: hex::encode(seeds.secure),
            insecure_random_seed: hex::encode(seeds.insecure),
            insecure_random_hash_seed: hex::encode(seeds.hash),
        }
    }

    /// The seeds, if this sandbox gives exactly these answers.
    pub fn seeds(&self) -> Result<Seeds, BadAnswers> {
        fn decode<const N: usize>(name: &str, text: &str) -> Result<[u8; N], BadAnswers> {
            let mut out = [0u8; N];
            hex::decode_to_slice(text, &mut out)
                .map_err(|_| BadAnswers(format!("`{name}` is not {N} bytes of hex")))?;
            Ok(out)
        }
        let seeds = Seeds {
            secure: decode("secure_random_seed", &self.secure_random_seed)?,
            insecure: decode("insecure_random_seed", &self.insecure_random_seed)?,
            hash: decode("insecure_random_hash_seed", &self.insecure_random_hash_seed)?,
        };
        if *self != HostAnswers::of(&seeds) {
            return Err(BadAnswers(
                "clocks or sleep differ from this sandbox's (virtual clocks from 2020-01-01, 1 µs per read, virtual sleep)".into(),
            ));
        }
        Ok(seeds)
    }
}

/// The guest's `argv`: the step name alone. The cache key uses this same
/// function, so it covers exactly what the guest is given.
pub fn guest_args(step: &str) -> Vec<&str> {
    vec![step]
}

/// The sandbox's coarse clock: ticks since it started, advanced every
/// [`TICK`] by a thread until dropped. A deadline check is one atomic load.
struct Ticker {
    ticks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start() -> Self {
        let ticks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, flag) = (ticks.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("sluice-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .expect("spawn the sandbox's ticker thread");
        Ticker {
            ticks,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// When an attempt must stop: its deadline on the coarse clock and its
/// cancellation flag.
#[derive(Clone)]
struct Stop {
    ticks: Arc<AtomicU64>,
    deadline: u64,
    cancel: Option<Arc<AtomicBool>>,
}

impl Stop {
    /// `Err` (the trap to raise) once the attempt must stop.
    fn check(&self) -> wasmtime::Result<()> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(Cancelled.into());
        }
        if self.ticks.load(Ordering::Relaxed) >= self.deadline {
            return Err(Trap::Interrupt.into());
        }
        Ok(())
    }
}

/// A component ready to instantiate.
pub struct Prepared {
    pre: StepPre<StepData>,
    /// The component's (wasm) digest.
    pub digest: Digest,
    /// Time spent compiling or loading it.
    pub load_ms: u64,
    /// Where its native code came from.
    pub compiled_by: CompiledBy,
    /// sha256 of the native code (the serialized compiled component) that
    /// runs: the record names it, so an audit can tell which compiled
    /// artifact executed, not only which wasm.
    pub compiled: Digest,
}

/// Where a prepared component's native code came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompiledBy {
    /// An authenticated entry of the on-disk compile cache.
    CacheHit,
    /// Compiled now; the cache had no entry.
    Compiled,
    /// Compiled now because the cache entry failed authentication (or could
    /// not be loaded): the reason.
    Recompiled(String),
    /// Compiled now; the on-disk cache is unusable (its key): the reason.
    CacheDisabled(String),
}

impl CompiledBy {
    /// `cache-hit`, `compiled`, `recompiled: <reason>`, `cache-disabled: <reason>`.
    pub fn describe(&self) -> String {
        match self {
            CompiledBy::CacheHit => "cache-hit".to_string(),
            CompiledBy::Compiled => "compiled".to_string(),
            CompiledBy::Recompiled(r) => format!("recompiled: {r}"),
            CompiledBy::CacheDisabled(r) => format!("cache-disabled: {r}"),
        }
    }
}

/// Why a component could not be prepared; the step fails with class `step`.
#[derive(Debug, thiserror::Error)]
#[error("invalid component {path} ({digest}): {reason}")]
pub struct ComponentError {
    /// The component file.
    pub path: PathBuf,
    /// Its digest.
    pub digest: Digest,
    /// What is wrong.
    pub reason: String,
}

/// Engine construction failures.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the wasm sandbox: {0}")]
pub struct SandboxError(String);

/// What one attempt needs besides its component and ports.
#[derive(Clone, Debug)]
pub struct AttemptSpec {
    /// Step name.
    pub step: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Wired inputs.
    pub inputs: Vec<InputArtifact>,
    /// Declared outputs.
    pub outputs: Vec<String>,
    /// Resolved params.
    pub params: BTreeMap<String, String>,
    /// Limits.
    pub limits: Limits,
    /// The random sources' seeds.
    pub seeds: Seeds,
    /// Set to stop the attempt (its run was cancelled): checked after
    /// every [`FUEL_SLICE`] of guest code and at every transition between
    /// guest and host.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// The message of an attempt stopped because its run was cancelled.
pub const CANCELLED_MESSAGE: &str = "stopped: the run was cancelled";

/// The trap raised in a cancelled attempt.
#[derive(Debug)]
struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(CANCELLED_MESSAGE)
    }
}

impl std::error::Error for Cancelled {}

/// What an attempt did.
#[derive(Debug)]
pub struct AttemptResult {
    /// Outputs and metrics, or why it failed.
    pub outcome: Result<HostOutcome, Failure>,
    /// Metrics and byte counts also for failed attempts.
    pub partial: Option<HostOutcome>,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Peak linear memory, bytes.
    pub memory_peak_bytes: u64,
    /// Wall time of instantiate + run.
    pub wall_ms: u64,
    /// Instantiation time, microseconds.
    pub instantiate_us: u64,
    /// Captured stdout (capped).
    pub stdout: Vec<u8>,
    /// Captured stderr (capped).
    pub stderr: Vec<u8>,
    /// Virtual time the guest slept (instant on the host), nanoseconds.
    pub slept_ns: u64,
}

/// The process-wide wasm sandbox.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<StepData>,
    cache: Result<CompileCache, String>,
    slots: u32,
    compiler: Option<&'static Compiler>,
    ticker: Ticker,
}

/// The engine configuration every sandbox (and every compiler process)
/// uses: deterministic settings, fuel (which also paces the checks of the
/// wall-clock timeout, see [`FUEL_SLICE`]) and the pooling allocator sized
/// for `slots` simultaneous attempts.
fn engine_config(slots: u32) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(4 * slots + 4)
        .total_core_instances(32 * slots + 32)
        .total_memories(8 * slots + 8)
        .total_tables(16 * slots + 16)
        .total_stacks(4 * slots + 4)
        .max_memory_size((limits::MEMORY_MIB_CEILING << 20) as usize);
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .wasm_threads(false)
        .concurrency_support(false)
        .max_wasm_stack(limits::STACK_BYTES_MAX)
        .async_stack_size(limits::STACK_BYTES_MAX + HOST_STACK_BYTES)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Wall-clock bound on compiling one component in a compiler process
/// (`SLUICE_COMPILE_TIMEOUT_MS` overrides): cranelift cannot be interrupted,
/// so an untrusted component is compiled in a process that can be killed.
pub const COMPILE_TIMEOUT_MS_DEFAULT: u64 = 120_000;
/// Data-segment bound of a compiler process (`SLUICE_COMPILE_MEMORY_MIB`
/// overrides); the pooling allocator's reservations are not data.
pub const COMPILE_MEMORY_MIB_DEFAULT: u64 = 4096;
/// Most native-code bytes a compiler process may return.
const COMPILED_BYTES_MAX: usize = 16 * COMPONENT_BYTES_MAX as usize;

/// Compiles components in a separate, bounded process: this executable
/// run as `sluice compile-component`. Installed once by the binary
/// ([`use_compiler_process`]); library users compile in-process.
#[derive(Debug)]
pub struct Compiler {
    exe: PathBuf,
    timeout: Duration,
    memory_bytes: u64,
}

static COMPILER: std::sync::OnceLock<Compiler> = std::sync::OnceLock::new();

/// Makes every sandbox of this process compile components in bounded
/// `exe compile-component` processes (limits from the environment, see
/// [`COMPILE_TIMEOUT_MS_DEFAULT`] and [`COMPILE_MEMORY_MIB_DEFAULT`]).
pub fn use_compiler_process(exe: PathBuf) {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0)
            .unwrap_or(default)
    };
    let _ = COMPILER.set(Compiler {
        exe,
        timeout: Duration::from_millis(env(
            "SLUICE_COMPILE_TIMEOUT_MS",
            COMPILE_TIMEOUT_MS_DEFAULT,
        )),
        memory_bytes: env("SLUICE_COMPILE_MEMORY_MIB", COMPILE_MEMORY_MIB_DEFAULT) << 20,
    });
}

/// What `sluice compile-component --slots N` does: native code for `wasm`
/// from an engine configured exactly as a sandbox of `slots` slots.
pub fn compile_standalone(wasm: &[u8], slots: u32) -> Result<Vec<u8>, CompileError> {
    admit_imports(wasm).map_err(CompileError::Refused)?;
    let engine =
        Engine::new(&engine_config(slots)).map_err(|e| CompileError::Engine(format!("{e:#}")))?;
    engine
        .precompile_component(wasm)
        .map_err(|e| CompileError::Invalid(format!("{e:#}")))
}

/// Why [`compile_standalone`] produced no native code.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Refused by its imports before compilation.
    #[error("{0}")]
    Refused(String),
    /// The engine could not be configured.
    #[error("{0}")]
    Engine(String),
    /// Not a valid component (wasmtime's reason).
    #[error("{0}")]
    Invalid(String),
}

impl Compiler {
    fn compile(&self, wasm: &[u8], slots: u32) -> Result<Vec<u8>, String> {
        use std::io::{Read as _, Write as _};
        use std::process::{Command, Stdio};
        let mut child = Command::new(&self.exe)
            .args(["compile-component", "--slots", &slots.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the compiler {}: {e}", self.exe.display()))?;
        let pid = rustix::process::Pid::from_child(&child);
        let kill = || {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        };
        // The child reads its input before compiling, so the bounds are in
        // place before any untrusted byte is compiled.
        let cpu_s = self.timeout.as_secs().max(1);
        let bounded = rustix::process::prlimit(
            Some(pid),
            rustix::process::Resource::Data,
            rustix::process::Rlimit {
                current: Some(self.memory_bytes),
                maximum: Some(self.memory_bytes),
            },
        )
        .and_then(|_| {
            rustix::process::prlimit(
                Some(pid),
                rustix::process::Resource::Cpu,
                rustix::process::Rlimit {
                    current: Some(cpu_s),
                    maximum: Some(cpu_s + 1),
                },
            )
        });
        if let Err(e) = bounded {
            kill();
            let _ = child.wait();
            return Err(format!("cannot bound the compiler process: {e}"));
        }
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let input = wasm.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let read = (&mut stdout)
                .take(COMPILED_BYTES_MAX as u64 + 1)
                .read_to_end(&mut out);
            read.map(|_| out)
        });
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = (&mut stderr).take(64 << 10).read_to_string(&mut text);
            text
        });
        let (done, waited) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = done.send(());
            status
        });
        let timed_out = waited.recv_timeout(self.timeout).is_err();
        if timed_out {
            kill();
        }
        let status = waiter
            .join()
            .map_err(|_| "the compiler waiter panicked".to_string())?
            .map_err(|e| format!("waiting for the compiler: {e}"))?;
        let _ = writer.join();
        let out = reader.join().unwrap_or_else(|_| Ok(Vec::new()));
        let message = errors.join().unwrap_or_default();
        if timed_out {
            return Err(format!(
                "compiling took longer than {} ms; the compiler was killed",
                self.timeout.as_millis()
            ));
        }
        if !status.success() {
            let why = message.trim();
            let bounds = format!(
                "the compiler process ended with {status} (its bounds: {} MiB of data, {cpu_s} s of CPU)",
                self.memory_bytes >> 20
            );
            // Out of memory under its data bound, the compiler may still
            // exit on its own with the allocator's error: name the bound.
            let out_of_memory =
                why.contains("Cannot allocate memory") || why.contains("os error 12");
            return Err(match status.code() {
                Some(_) if !why.is_empty() && out_of_memory => {
                    format!("{bounds}: {}", escape_controls(why, 2048))
                }
                Some(_) if !why.is_empty() => escape_controls(why, 2048),
                _ => bounds,
            });
        }
        let out = out.map_err(|e| format!("reading the compiler's output: {e}"))?;
        if out.len() > COMPILED_BYTES_MAX {
            return Err(format!(
                "the compiled component is over {COMPILED_BYTES_MAX} bytes"
            ));
        }
        Ok(out)
    }
}

/// The on-disk cache of compiled components, authenticated.
///
/// `Component::deserialize` runs whatever native code it is given, so an
/// entry is used only if its HMAC-SHA256 tag verifies under a secret key
/// that lives *beside* the cache directory (`<cache>.key`, mode 0600, owned
/// by this user), never inside it: whoever can write entries into a shared
/// cache cannot forge a tag, and a forged or swapped entry is recompiled.
/// The tag binds the entry to the wasm digest and the engine's
/// compatibility directory, so valid entries cannot be swapped either.
struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
}

/// Domain separation for compile-cache tags.
const CWASM_TAG_CONTEXT: &[u8] = b"sluice-cwasm-v1\0";

impl CompileCache {
    fn tag(&self, digest: &Digest, cwasm: &[u8]) -> hmac::Hmac<Sha256> {
        use hmac::Mac as _;
        let mut mac =
            hmac::Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(CWASM_TAG_CONTEXT);
        mac.update(self.dir.file_name().unwrap_or_default().as_encoded_bytes());
        mac.update(b"\0");
        mac.update(digest.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(cwasm);
        mac
    }
}

/// The compile cache's key file for the cache directory `root`.
pub fn compile_cache_key_path(root: &Path) -> PathBuf {
    let mut name = root.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    root.with_file_name(name)
}

impl Sandbox {
    /// Creates the engine with deterministic settings, fuel and the
    /// pooling allocator sized for `concurrency` simultaneous attempts.
    /// Compiled components are cached under `compile_cache` (by default
    /// `<home>/components/`), in a directory named by the engine's
    /// compatibility hash.
    pub fn new(compile_cache: &Path, concurrency: usize) -> Result<Sandbox, SandboxError> {
        let slots = concurrency.clamp(1, 256) as u32;
        let config = engine_config(slots);
        let engine = Engine::new(&config).map_err(|e| SandboxError(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| SandboxError(format!("linking WASI: {e:#}")))?;
        // Sleeping must advance virtual time, never block a host thread.
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::clocks::monotonic_clock::add_to_linker::<_, VirtualClocks>(
            &mut linker,
            |d: &mut StepData| VirtualClockView {
                clock: &d.clock,
                table: &mut d.host.table,
            },
        )
        .map_err(|e| SandboxError(format!("linking the virtual clock: {e:#}")))?;
        linker.allow_shadowing(false);
        sluice_host_api::add_to_linker(&mut linker, |d: &mut StepData| &mut d.host)
            .map_err(|e| SandboxError(format!("linking sluice:step: {e:#}")))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let cache_dir = compile_cache.join(format!(
            "wasmtime-{}-{:016x}",
            wasmtime_version(),
            hasher.finish()
        ));
        std::fs::create_dir_all(&cache_dir)
            .map_err(|e| SandboxError(format!("{}: {e}", cache_dir.display())))?;
        let cache = crate::durable::load_or_create_secret(&compile_cache_key_path(compile_cache))
            .map(|key| CompileCache {
                dir: cache_dir,
                key,
            })
            .inspect_err(|reason| {
                tracing::warn!(%reason, "compiled components will not be cached on disk");
            });
        Ok(Sandbox {
            engine,
            linker,
            cache,
            slots,
            compiler: COMPILER.get(),
            ticker: Ticker::start(),
        })
    }

    /// Compiles (or loads from the on-disk cache) the component at `path`
    /// whose bytes are `wasm` and digest `digest`, and checks it against the
    /// `sluice:step` world.
    pub fn prepare(
        &self,
        path: &Path,
        wasm: &[u8],
        digest: &Digest,
    ) -> Result<Prepared, ComponentError> {
        let started = Instant::now();
        let err = |reason: String| ComponentError {
            path: path.to_path_buf(),
            digest: *digest,
            reason,
        };
        if wasm.len() as u64 > COMPONENT_BYTES_MAX {
            return Err(err(format!(
                "{} bytes; the limit is {COMPONENT_BYTES_MAX}",
                wasm.len()
            )));
        }
        // The digest names the code in the record, the cache key and the
        // compile cache: it must be these bytes' (a caller's mistake would
        // otherwise run one component under another's name).
        let actual = Digest::of(wasm);
        if actual != *digest {
            return Err(err(format!(
                "its bytes hash to {actual}, not to the digest given"
            )));
        }
        if !wasm.starts_with(b"\0asm") {
            return Err(err("not a WebAssembly binary".to_string()));
        }
        if wasmparser_is_core_module(wasm) {
            return Err(err(
                "a core wasm module, not a component; build the step for wasm32-wasip2".to_string(),
            ));
        }
        // Admission by imports comes before any compilation: a refused
        // component costs a parse, not seconds of compile time.
        admit_imports(wasm).map_err(err)?;
        let (component, compiled_by, compiled) = self.load_or_compile(wasm, digest).map_err(err)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| err(format!("does not fit the sluice:step world: {e:#}")))?;
        let pre = StepPre::new(pre)
            .map_err(|e| err(format!("does not export the sluice:step world: {e:#}")))?;
        Ok(Prepared {
            pre,
            digest: *digest,
            load_ms: started.elapsed().as_millis() as u64,
            compiled_by,
            compiled,
        })
    }

    fn load_or_compile(
        &self,
        wasm: &[u8],
        digest: &Digest,
    ) -> Result<(Component, CompiledBy, Digest), String> {
        let cache = match &self.cache {
            Ok(cache) => cache,
            Err(reason) => {
                let (component, compiled, _) = self.compile_bytes(wasm)?;
                return Ok((
                    component,
                    CompiledBy::CacheDisabled(reason.clone()),
                    compiled,
                ));
            }
        };
        let cwasm = cache.dir.join(format!("{}.cwasm", digest.hex()));
        let tag_path = cache.dir.join(format!("{}.cwasm.tag", digest.hex()));
        let mut compiled_by = CompiledBy::Compiled;
        if let Ok(bytes) = std::fs::read(&cwasm) {
            let tag = std::fs::read_to_string(&tag_path).unwrap_or_default();
            let authentic = hex::decode(tag.trim())
                .is_ok_and(|t| hmac::Mac::verify_slice(cache.tag(digest, &bytes), &t).is_ok());
            if authentic {
                // SAFETY: the entry's tag verifies under the cache key, which
                // only this user can read and which is never inside the cache
                // directory: these bytes were written by `precompile_component`
                // of an engine with this compatibility hash (the tag covers the
                // directory name) for exactly this wasm digest.
                #[allow(unsafe_code)]
                let loaded = unsafe { Component::deserialize(&self.engine, &bytes) };
                match loaded {
                    Ok(c) => return Ok((c, CompiledBy::CacheHit, Digest::of(&bytes))),
                    Err(e) => {
                        tracing::warn!(path = %cwasm.display(), error = %e, "discarding unusable compiled component");
                        compiled_by =
                            CompiledBy::Recompiled(format!("the cached entry does not load: {e}"));
                    }
                }
            } else {
                tracing::warn!(path = %cwasm.display(), "compiled component fails authentication; recompiling");
                compiled_by = CompiledBy::Recompiled(format!(
                    "the cached entry {} fails authentication",
                    cwasm.display()
                ));
            }
        }
        let (component, compiled_digest, bytes) = self.compile_bytes(wasm)?;
        // A failed cache write only costs a recompile next time. The tag is
        // written after the entry, so a reader between the two writes sees
        // a mismatch and recompiles; it never trusts unauthenticated bytes.
        let tag = hex::encode(hmac::Mac::finalize(cache.tag(digest, &bytes)).into_bytes());
        let _ = crate::durable::write_atomic(&cwasm, &bytes, false)
            .and_then(|()| crate::durable::write_atomic(&tag_path, tag.as_bytes(), false));
        Ok((component, compiled_by, compiled_digest))
    }

    fn compile_bytes(&self, wasm: &[u8]) -> Result<(Component, Digest, Vec<u8>), String> {
        let compiled = match self.compiler {
            Some(compiler) => compiler.compile(wasm, self.slots),
            None => self
                .engine
                .precompile_component(wasm)
                .map_err(|e| format!("{e:#}")),
        }
        .map_err(|e| format!("does not compile: {e}"))?;
        // SAFETY: `compiled` was just produced by this engine, or by this
        // same executable's compiler process with the same configuration
        // (deserialize checks that configuration).
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|e| format!("does not load: {e:#}"))?;
        Ok((component, Digest::of(&compiled), compiled))
    }

    /// Runs one attempt of a step.
    pub fn run(
        &self,
        prepared: &Prepared,
        spec: &AttemptSpec,
        artifacts: Box<dyn ArtifactPort>,
        gpu: Box<dyn GpuPort>,
    ) -> AttemptResult {
        let started = Instant::now();
        let log_bytes = spec.limits.log_bytes();
        let stdout = MemoryOutputPipe::new(log_bytes);
        let stderr = MemoryOutputPipe::new(log_bytes);
        let sleep = Arc::new(VirtualSleep::default());
        let clock = Arc::new(VirtualMonotonicClock {
            reads: AtomicU64::new(0),
            sleep: sleep.clone(),
        });
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&guest_args(&spec.step))
            .wall_clock(VirtualWallClock {
                reads: AtomicU64::new(0),
                sleep: sleep.clone(),
            })
            .monotonic_clock(SharedMonotonic(clock.clone()))
            .secure_random(ChaCha20Rng::from_seed(spec.seeds.secure))
            .insecure_random(ChaCha20Rng::from_seed(spec.seeds.insecure))
            .insecure_random_seed(u128::from_le_bytes(spec.seeds.hash))
            .allow_blocking_current_thread(true)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits::HANDLES_MAX);
        let ticks = &self.ticker.ticks;
        let stop = Stop {
            ticks: ticks.clone(),
            deadline: ticks.load(Ordering::Relaxed)
                + (spec.limits.timeout_s * 1000).div_ceil(TICK.as_millis() as u64),
            cancel: spec.cancel.clone(),
        };
        let host = StepHost::new(
            StepHostConfig {
                step: spec.step.clone(),
                inputs: spec.inputs.clone(),
                outputs: spec.outputs.clone(),
                params: spec.params.clone(),
                budget: HostBudget {
                    output_bytes_max: spec.limits.output_bytes(),
                    host_calls_max: limits::HOST_CALLS_MAX,
                },
            },
            wasi.build(),
            table,
            artifacts,
            gpu,
        );
        let mut store = Store::new(
            &self.engine,
            StepData {
                host,
                limiter: Limiter {
                    memory_bytes_max: spec.limits.memory_bytes() as usize,
                    memory_bytes: 0,
                    memory_peak_bytes: 0,
                    denied: None,
                },
                clock,
            },
        );
        store.limiter(|d| &mut d.limiter);
        let hook = stop.clone();
        store.call_hook(move |_, _| hook.check());
        let fuel = spec.limits.fuel;
        let mut instantiate_us = 0;
        let call = store
            .set_fuel(fuel)
            .and_then(|()| store.fuel_async_yield_interval(Some(FUEL_SLICE)))
            .and_then(|()| {
                let pre = &prepared.pre;
                let store = &mut store;
                let instantiate_us = &mut instantiate_us;
                run_until_stopped(
                    async move {
                        let t = Instant::now();
                        let instance = pre.instantiate_async(&mut *store).await?;
                        *instantiate_us = t.elapsed().as_micros() as u64;
                        instance.call_run(&mut *store).await
                    },
                    &stop,
                )
            });
        let fuel_used = fuel - store.get_fuel().unwrap_or(0).min(fuel);
        let data = store.into_data();
        let memory_peak_bytes = data.limiter.memory_peak_bytes as u64;
        let memory_denied = data.limiter.denied;
        let (outcome, partial) = match call {
            Ok(Ok(())) => match data.host.finish() {
                Ok(out) => (Ok(out), None),
                Err(FinishError::Step(m)) => (Err(Failure::step(m)), None),
                Err(FinishError::Engine(m)) => (Err(Failure::engine(m)), None),
            },
            Ok(Err(message)) => (
                Err(Failure::step(sanitize(&message))),
                Some(data.host.into_outcome()),
            ),
            Err(trap) => (
                Err(classify_trap(
                    &trap,
                    spec,
                    memory_denied,
                    log_bytes,
                    stdout.contents().len() >= log_bytes || stderr.contents().len() >= log_bytes,
                )),
                Some(data.host.into_outcome()),
            ),
        };
        AttemptResult {
            outcome,
            partial,
            fuel_used,
            memory_peak_bytes,
            wall_ms: started.elapsed().as_millis() as u64,
            instantiate_us,
            stdout: stdout.contents().to_vec(),
            stderr: stderr.contents().to_vec(),
            slept_ns: sleep.slept_ns(),
        }
    }
}

/// Runs a guest call on this thread until it returns or `stop` says to
/// stop. The guest yields after every [`FUEL_SLICE`] of fuel (nothing else
/// suspends it: host functions are synchronous), and `stop` is looked at
/// then (as well as by the call hook); dropping the future unwinds the
/// guest's fiber.
fn run_until_stopped<T>(
    call: impl std::future::Future<Output = wasmtime::Result<T>>,
    stop: &Stop,
) -> wasmtime::Result<T> {
    let mut call = std::pin::pin!(call);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(result) = call.as_mut().poll(&mut cx) {
            return result;
        }
        stop.check()?;
    }
}

/// Names what ended an attempt that trapped.
fn classify_trap(
    err: &wasmtime::Error,
    spec: &AttemptSpec,
    memory_denied: Option<usize>,
    log_bytes: usize,
    logs_full: bool,
) -> Failure {
    if err.downcast_ref::<Cancelled>().is_some() {
        return Failure {
            class: FailureClass::Step,
            message: CANCELLED_MESSAGE.to_string(),
        };
    }
    if let Some(limit) = err.downcast_ref::<LimitExceeded>() {
        return Failure::limit(limit.kind, &limit.detail);
    }
    if let Some(fault) = err.downcast_ref::<EngineFault>() {
        return Failure::engine(format!("step `{}`: {}", spec.step, fault.0));
    }
    if let Some(bytes) = memory_denied {
        return Failure::limit(
            LimitKind::Memory,
            format!(
                "step `{}` tried to use {bytes} bytes of linear memory; its limit is {} MiB",
                spec.step, spec.limits.memory_mib
            ),
        );
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => {
            return Failure::limit(
                LimitKind::Fuel,
                format!(
                    "step `{}` used all {} units of fuel",
                    spec.step, spec.limits.fuel
                ),
            );
        }
        Some(Trap::Interrupt) => {
            return Failure::limit(
                LimitKind::Time,
                format!(
                    "step `{}` ran past its {} s timeout",
                    spec.step, spec.limits.timeout_s
                ),
            );
        }
        Some(Trap::StackOverflow) => {
            return Failure::limit(
                LimitKind::Stack,
                format!(
                    "step `{}` exhausted its {} byte wasm stack",
                    spec.step,
                    limits::STACK_BYTES_MAX
                ),
            );
        }
        _ => {}
    }
    // A full capture pipe reports itself closed to the guest, whose std
    // then panics; a guest that died with a full pipe hit the log cap.
    if logs_full {
        return Failure::limit(
            LimitKind::Output,
            format!(
                "step `{}` wrote more than {log_bytes} bytes to stdout or stderr",
                spec.step
            ),
        );
    }
    let root = err.root_cause().to_string();
    Failure::step(format!("step `{}` trapped: {}", spec.step, sanitize(&root)))
}

/// Interfaces a step may not import: steps have no network access, and a
/// component built around an HTTP client is refused before it is
/// compiled. `wasi:sockets` is admitted: Rust's `std::net` and
/// componentize-py's CPython import it whether or not a step uses it, and
/// every use fails at run time (no TCP, no UDP, no name lookup; see the
/// `WasiCtxBuilder` in `Sandbox::run`).
const FORBIDDEN_IMPORT_PREFIXES: &[&str] = &["wasi:http/"];

/// Refuses a component by its top-level imports, from a parse of its
/// import sections only (no validation, no compilation): milliseconds even
/// for a large component.
fn admit_imports(wasm: &[u8]) -> Result<(), String> {
    use wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("malformed component: {e}"))?;
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports {
                    let import = import.map_err(|e| format!("malformed component: {e}"))?;
                    let name = import.name.name;
                    if FORBIDDEN_IMPORT_PREFIXES
                        .iter()
                        .any(|p| name.starts_with(p))
                    {
                        return Err(format!(
                            "imports `{}`; steps have no network access",
                            escape_controls(name, 128)
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A core module has version 1 and layer 0 in its header; a component has
/// layer 1.
fn wasmparser_is_core_module(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && wasm[4..8] == [1, 0, 0, 0]
}

/// The wasmtime version this engine is built with (recorded in every run;
/// a test keeps it equal to the version in Cargo.lock).
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_wasmtime_version_matches_the_lock_file() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        let needle = "name = \"wasmtime\"\nversion = \"";
        let at = lock.find(needle).expect("wasmtime in Cargo.lock") + needle.len();
        let locked = &lock[at..at + lock[at..].find('"').unwrap()];
        assert_eq!(wasmtime_version(), locked);
    }

    #[test]
    fn seeds_differ_by_run_seed_step_and_purpose_only() {
        let base = derive_seed(0, "train", "secure-random");
        assert_eq!(base, derive_seed(0, "train", "secure-random"));
        assert_ne!(base, derive_seed(1, "train", "secure-random"));
        assert_ne!(base, derive_seed(0, "eval", "secure-random"));
        assert_ne!(base, derive_seed(0, "train", "insecure-random"));
    }

    #[test]
    fn escape_controls_neutralises_terminal_escapes() {
        assert_eq!(
            escape_controls("a\u{1b}[31mred\r\nok\t", 100),
            "a\\u{1b}[31mred\\r\nok\t"
        );
        assert_eq!(escape_controls("abcdef", 3), "abc…");
    }

    #[test]
    fn core_modules_and_components_are_told_apart_by_header() {
        assert!(wasmparser_is_core_module(b"\0asm\x01\0\0\0"));
        assert!(!wasmparser_is_core_module(b"\0asm\x0d\0\x01\0"));
    }
}

#[cfg(test)]
mod admission_tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for sub in std::fs::read_dir(dir).unwrap() {
            let sub = sub.unwrap().path();
            if sub.is_dir() {
                for e in std::fs::read_dir(&sub).unwrap() {
                    out.push(e.unwrap().file_name().to_string_lossy().into_owned());
                }
            }
        }
        out
    }

    #[test]
    fn a_component_is_prepared_only_under_its_own_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cc");
        let sandbox = Sandbox::new(&cache, 1).unwrap();
        let wasm = wat::parse_str("(component)").unwrap();
        let other = Digest::of(b"other code");
        let err = sandbox
            .prepare(Path::new("c.wasm"), &wasm, &other)
            .err()
            .expect("refused");
        assert_eq!(
            err.reason,
            format!(
                "its bytes hash to {}, not to the digest given",
                Digest::of(&wasm)
            )
        );
        assert_eq!(entries(&cache), Vec::<String>::new());
    }

    #[test]
    fn a_component_importing_http_is_refused_before_it_is_compiled() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cc");
        let sandbox = Sandbox::new(&cache, 1).unwrap();
        let wasm = wat::parse_str(
            r#"(component
                 (import "wasi:sockets/tcp@0.2.6" (instance))
                 (import "wasi:http/outgoing-handler@0.2.6" (instance)))"#,
        )
        .unwrap();
        let err = sandbox
            .prepare(Path::new("net.wasm"), &wasm, &Digest::of(&wasm))
            .err()
            .expect("refused");
        assert_eq!(
            err.reason,
            "imports `wasi:http/outgoing-handler@0.2.6`; steps have no network access"
        );
        // Nothing was compiled: the compile cache holds no entry.
        assert_eq!(entries(&cache), Vec::<String>::new());
        // Sockets alone are admitted (denied at run time instead).
        let sockets =
            wat::parse_str(r#"(component (import "wasi:sockets/tcp@0.2.6" (instance)))"#).unwrap();
        assert_eq!(admit_imports(&sockets), Ok(()));
    }

    #[test]
    fn a_nested_components_imports_are_not_the_steps_imports() {
        // Only the outer component's imports are what the host must supply.
        let wasm = wat::parse_str(
            r#"(component
                 (component (import "wasi:http/outgoing-handler@0.2.6" (instance))))"#,
        )
        .unwrap();
        assert_eq!(admit_imports(&wasm), Ok(()));
    }

    #[test]
    fn malformed_bytes_are_refused_by_the_import_check_with_a_reason() {
        let mut wasm = wat::parse_str(r#"(component (import "a" (instance)))"#).unwrap();
        wasm.truncate(wasm.len() - 3);
        let err = admit_imports(&wasm).unwrap_err();
        assert!(err.starts_with("malformed component: "), "{err}");
    }

    #[test]
    fn the_compile_cache_key_is_private_and_created_once() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = compile_cache_key_path(&dir.path().join("cc"));
        assert_eq!(path, dir.path().join("cc.key"));
        let first = crate::durable::load_or_create_secret(&path).unwrap();
        assert_eq!(crate::durable::load_or_create_secret(&path).unwrap(), first);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A key others can read is not a secret: refused, naming the file.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = crate::durable::load_or_create_secret(&path).unwrap_err();
        assert!(err.contains("is accessible to others (mode 644)"), "{err}");
        // A symlink planted at the key's name is not followed.
        let other = dir.path().join("other.key");
        std::fs::write(&other, hex::encode([7u8; 32])).unwrap();
        let planted = dir.path().join("planted.key");
        std::os::unix::fs::symlink(&other, &planted).unwrap();
        let err = crate::durable::load_or_create_secret(&planted).unwrap_err();
        assert!(err.contains("is not a regular file"), "{err}");
    }
}
