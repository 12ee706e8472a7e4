//! Runs a DAG of steps: concurrency bound, retries, skip-on-failure.
//!
//! Invariant: a step starts only after all its dependencies succeeded; at
//! most `jobs` attempts run at once; a failed step's transitive dependants
//! are skipped, never started; independent branches keep running.
//! Boundary: does no IO and never reads the clock; what an attempt *is* is
//! the [`Executor`]'s business.

use std::collections::BTreeSet;
use std::sync::mpsc;

/// The final state of a step in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It ran (or was answered from the cache) and succeeded.
    Succeeded,
    /// Its last attempt failed.
    Failed,
    /// It did not run because the step at this index failed or was skipped.
    Skipped {
        /// The failed dependency that caused the skip.
        because: usize,
    },
}

/// Executes attempts and hears about skips. Called from worker threads.
pub trait Executor: Sync {
    /// Runs attempt `attempt` (1-based) of step `step`; `true` on success.
    /// All of the step's dependencies have succeeded.
    fn attempt(&self, step: usize, attempt: u32) -> bool;

    /// Step `step` will not run because `because` failed.
    fn skipped(&self, step: usize, because: usize);
}

/// The shape of the DAG: dependencies and retry budgets, by step index.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `deps[i]`: the steps `i` waits for.
    pub deps: Vec<Vec<usize>>,
    /// `retries[i]`: extra attempts allowed after a failure.
    pub retries: Vec<u32>,
}

/// Runs every step of `plan` with at most `jobs` attempts in flight and
/// returns each step's verdict. Ready steps start lowest index first.
pub fn run(plan: &Plan, jobs: usize, exec: &dyn Executor) -> Vec<Verdict> {
    let n = plan.deps.len();
    let jobs = jobs.max(1);
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, deps) in plan.deps.iter().enumerate() {
        for &d in deps {
            dependants[d].push(i);
        }
    }
    let mut waiting: Vec<usize> = plan.deps.iter().map(Vec::len).collect();
    let mut verdicts: Vec<Option<Verdict>> = vec![None; n];
    let mut ready: BTreeSet<(usize, u32)> = (0..n)
        .filter(|&i| waiting[i] == 0)
        .map(|i| (i, 1))
        .collect();
    let mut in_flight = 0usize;
    let (tx, rx) = mpsc::channel::<(usize, u32, bool)>();
    std::thread::scope(|scope| {
        loop {
            // A lone ready step with nothing in flight (a chain) runs on this
            // thread: no spawn, no hand-off, same semantics.
            if in_flight == 0 && ready.len() == 1 {
                let (step, attempt) = ready.pop_first().expect("one ready step");
                in_flight += 1;
                let ok = exec.attempt(step, attempt);
                let _ = tx.send((step, attempt, ok));
            }
            while in_flight < jobs {
                let Some((step, attempt)) = ready.pop_first() else {
                    break;
                };
                in_flight += 1;
                let tx = tx.clone();
                scope.spawn(move || {
                    let ok = exec.attempt(step, attempt);
                    // The receiver outlives every worker (it is only dropped
                    // after the scope ends).
                    let _ = tx.send((step, attempt, ok));
                });
            }
            if in_flight == 0 {
                break;
            }
            let Ok((step, attempt, ok)) = rx.recv() else {
                break;
            };
            in_flight -= 1;
            if ok {
                verdicts[step] = Some(Verdict::Succeeded);
                for &d in &dependants[step] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 && verdicts[d].is_none() {
                        ready.insert((d, 1));
                    }
                }
            } else if attempt <= plan.retries[step] {
                ready.insert((step, attempt + 1));
            } else {
                verdicts[step] = Some(Verdict::Failed);
                skip_dependants(step, &dependants, &mut verdicts, exec);
            }
        }
    });
    verdicts
        .into_iter()
        .map(|v| v.expect("every step reaches a verdict"))
        .collect()
}

fn skip_dependants(
    failed: usize,
    dependants: &[Vec<usize>],
    verdicts: &mut [Option<Verdict>],
    exec: &dyn Executor,
) {
    let mut stack = vec![failed];
    while let Some(s) = stack.pop() {
        for &d in &dependants[s] {
            if verdicts[d].is_none() {
                verdicts[d] = Some(Verdict::Skipped { because: failed });
                exec.skipped(d, failed);
                stack.push(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails the listed (step, attempt) pairs; records calls and concurrency.
    struct Script {
        fail: Vec<(usize, u32)>,
        calls: Mutex<Vec<(usize, u32)>>,
        skips: Mutex<Vec<(usize, usize)>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    impl Script {
        fn new(fail: Vec<(usize, u32)>) -> Self {
            Script {
                fail,
                calls: Mutex::new(Vec::new()),
                skips: Mutex::new(Vec::new()),
                running: AtomicUsize::new(0),
                max_running: AtomicUsize::new(0),
            }
        }
    }

    impl Executor for Script {
        fn attempt(&self, step: usize, attempt: u32) -> bool {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            self.calls.lock().unwrap().push((step, attempt));
            // Yield so concurrent workers overlap without sleeping.
            for _ in 0..1000 {
                std::thread::yield_now();
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            !self.fail.contains(&(step, attempt))
        }

        fn skipped(&self, step: usize, because: usize) {
            self.skips.lock().unwrap().push((step, because));
        }
    }

    fn diamond() -> Plan {
        // 0 -> {1, 2} -> 3 ; 4 independent
        Plan {
            deps: vec![vec![], vec![0], vec![0], vec![1, 2], vec![]],
            retries: vec![0, 0, 1, 0, 0],
        }
    }

    #[test]
    fn dependencies_run_first_and_all_succeed() {
        let s = Script::new(vec![]);
        let v = run(&diamond(), 4, &s);
        assert_eq!(v, vec![Verdict::Succeeded; 5]);
        let calls = s.calls.lock().unwrap().clone();
        let pos = |i| calls.iter().position(|c| c.0 == i).unwrap();
        assert!(pos(0) < pos(1) && pos(0) < pos(2) && pos(1) < pos(3) && pos(2) < pos(3));
    }

    #[test]
    fn retry_recovers_a_flaky_step() {
        let s = Script::new(vec![(2, 1)]);
        let v = run(&diamond(), 2, &s);
        assert_eq!(v, vec![Verdict::Succeeded; 5]);
        assert!(s.calls.lock().unwrap().contains(&(2, 2)));
    }

    #[test]
    fn failure_skips_transitive_dependants_only() {
        let s = Script::new(vec![(1, 1)]);
        let v = run(&diamond(), 2, &s);
        assert_eq!(
            v,
            vec![
                Verdict::Succeeded,
                Verdict::Failed,
                Verdict::Succeeded,
                Verdict::Skipped { because: 1 },
                Verdict::Succeeded
            ]
        );
        assert_eq!(*s.skips.lock().unwrap(), vec![(3, 1)]);
        assert!(!s.calls.lock().unwrap().iter().any(|c| c.0 == 3));
    }

    #[test]
    fn exhausted_retries_fail_the_step() {
        let s = Script::new(vec![(2, 1), (2, 2)]);
        let v = run(&diamond(), 2, &s);
        assert_eq!(v[2], Verdict::Failed);
        assert_eq!(
            s.calls.lock().unwrap().iter().filter(|c| c.0 == 2).count(),
            2
        );
    }

    #[test]
    fn concurrency_never_exceeds_jobs() {
        let plan = Plan {
            deps: vec![vec![]; 16],
            retries: vec![0; 16],
        };
        let s = Script::new(vec![]);
        run(&plan, 3, &s);
        assert!(s.max_running.load(Ordering::SeqCst) <= 3);
        assert_eq!(s.calls.lock().unwrap().len(), 16);
        let s1 = Script::new(vec![]);
        run(&plan, 1, &s1);
        assert_eq!(s1.max_running.load(Ordering::SeqCst), 1);
    }
}
