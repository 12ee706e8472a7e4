//! How a run is asked to execute: [`Options`] from the CLI or the service,
//! and the [`StepSlots`] that bound concurrent attempts across runs.
//!
//! Invariant: an attempt executes only while it holds a slot, and a
//! cancelled run never waits for one.
//! Boundary: settings and a semaphore; runs nothing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::RunId;

/// Run settings from the CLI or the service.
#[derive(Clone, Debug)]
pub struct Options {
    /// The home directory.
    pub home: PathBuf,
    /// Skip cache lookups (results are still cached).
    pub no_cache: bool,
    /// Attempts in flight at most.
    pub jobs: usize,
    /// Most fanned-out sweep steps in flight at once (`--max-parallel`).
    pub max_parallel: Option<usize>,
    /// Where compiled components are cached (default `<home>/components`);
    /// safe to share between homes, entries are keyed by digest.
    pub compile_cache: Option<PathBuf>,
    /// The id for a new run, when the caller acknowledged it before the run
    /// started (the service); generated otherwise.
    pub run_id: Option<RunId>,
    /// Set to stop the run: steps not yet started are skipped with the
    /// reason `run cancelled`; running attempts are stopped.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Attempts in flight across runs (the service's global step limit).
    pub step_slots: Option<Arc<StepSlots>>,
    /// Runs gpu jobs; shared between runs to keep workers warm. Without
    /// one, a run that needs it starts the built-in worker kinds.
    pub gpu: Option<Arc<crate::gpu::Dispatcher>>,
    /// `--executor`: where steps execute, over the spec's `[executor]`
    /// (a step's own `executor` still wins).
    pub executor: Option<crate::spec::ExecutorKind>,
    /// The engine config's `[executor]`: used when neither the command
    /// line nor the spec chooses.
    pub default_executor: Option<crate::spec::ExecutorKind>,
    /// The engine config file, handed to `exec-step` children.
    pub config: Option<PathBuf>,
    /// The shared tier of the artifact store (`--store`, `[store] url`):
    /// the home's store becomes a verified cache in front of it.
    pub remote: Option<Arc<crate::remote::Remote>>,
    /// The Ray dashboard the `ray` executor submits jobs to (default
    /// [`RAY_ADDRESS_DEFAULT`]).
    pub ray_address: Option<String>,
    /// The engine config's `[kubernetes]`, for the `kubernetes` executor.
    pub kubernetes: Option<crate::executor::KubernetesSettings>,
}

/// Where a Ray head's dashboard listens by default.
pub const RAY_ADDRESS_DEFAULT: &str = "http://127.0.0.1:8265";

impl Options {
    /// Options for `home` with defaults: cache on, one job per core.
    pub fn new(home: PathBuf) -> Options {
        Options {
            home,
            no_cache: false,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_parallel: None,
            compile_cache: None,
            run_id: None,
            cancel: None,
            step_slots: None,
            gpu: None,
            executor: None,
            default_executor: None,
            config: None,
            remote: None,
            ray_address: None,
            kubernetes: None,
        }
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    }
}

/// Reason given to steps skipped because their run was cancelled.
pub const CANCELLED_REASON: &str = "run cancelled";

/// A counting semaphore over attempts, shared by runs: an attempt holds one
/// slot while it executes.
#[derive(Debug)]
pub struct StepSlots {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
    waiting: AtomicUsize,
}

impl StepSlots {
    /// At most `max` (at least 1) attempts at once.
    pub fn new(max: usize) -> StepSlots {
        StepSlots {
            max: max.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Attempts executing now.
    pub fn in_use(&self) -> usize {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attempts waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Waits for a slot; `None` when `cancelled` became true while waiting.
    pub(crate) fn acquire(&self, cancelled: &dyn Fn() -> bool) -> Option<SlotGuard<'_>> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_add(1, Ordering::SeqCst);
        while *used >= self.max {
            if cancelled() {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
            // Woken by a release; the timeout only bounds how late a
            // cancellation is noticed.
            used = self
                .freed
                .wait_timeout(used, std::time::Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        *used += 1;
        Some(SlotGuard(self))
    }

    /// Holds one slot for work outside a run's scheduler (a replay over
    /// HTTP), waiting like an attempt; `None` when `cancelled` became true.
    pub fn hold(&self, cancelled: &dyn Fn() -> bool) -> Option<HeldStepSlot<'_>> {
        self.acquire(cancelled).map(HeldStepSlot)
    }
}

/// A step slot held by [`StepSlots::hold`]; dropping it frees the slot.
#[derive(Debug)]
pub struct HeldStepSlot<'a>(#[allow(dead_code)] SlotGuard<'a>);

#[derive(Debug)]
pub(crate) struct SlotGuard<'a>(&'a StepSlots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.used.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}
