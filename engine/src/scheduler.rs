//! Runs a DAG of steps: concurrency bound, retries, skip propagation and
//! exit handlers.
//!
//! Invariant: a regular step starts only after all its dependencies
//! succeeded; at most `jobs` attempts run at once; a failed or skipped
//! step's transitive dependants are skipped, never started; independent
//! branches keep running. Exit handlers start only after every regular step
//! has settled, and then only if their `on` rule holds.
//! Boundary: does no IO and never reads the clock; what an attempt *is* is
//! the [`Executor`]'s business.

use std::collections::BTreeSet;
use std::sync::mpsc;

use crate::spec::Finally;

/// What one attempt reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran (or was answered from the cache) and succeeded.
    Succeeded,
    /// It failed (the scheduler retries while attempts remain).
    Failed,
    /// It decided not to run (a false condition): not a failure.
    Skipped,
}

/// The final state of a step in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Succeeded.
    Succeeded,
    /// Its last attempt failed.
    Failed,
    /// It did not run.
    Skipped,
}

/// Why a step was skipped without an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A dependency failed.
    UpstreamFailed(usize),
    /// A dependency was skipped.
    UpstreamSkipped(usize),
    /// An `on = "failure"` handler, and nothing failed.
    NothingFailed,
    /// An `on = "success"` handler, and something failed.
    SomethingFailed,
}

/// Executes attempts and hears about skips. Called from worker threads.
pub trait Executor: Sync {
    /// Runs attempt `attempt` (1-based) of step `step`. For a regular step
    /// all dependencies have succeeded; for an exit handler they have all
    /// settled.
    fn attempt(&self, step: usize, attempt: u32) -> Outcome;

    /// Step `step` will not run, because of `why`.
    fn skipped(&self, step: usize, why: Skip);
}

/// The shape of the DAG, by step index.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `deps[i]`: the steps `i` waits for.
    pub deps: Vec<Vec<usize>>,
    /// `retries[i]`: extra attempts allowed after a failure.
    pub retries: Vec<u32>,
    /// `finally[i]`: `Some` for exit handlers (which wait for every regular
    /// step, whatever its verdict).
    pub finally: Vec<Option<Finally>>,
    /// `bounded[i]`: the step counts against `bounded_max` (sweep members
    /// under `--max-parallel`).
    pub bounded: Vec<bool>,
    /// Most bounded steps in flight at once.
    pub bounded_max: usize,
}

impl Plan {
    /// A plan of regular, unbounded steps only.
    pub fn new(deps: Vec<Vec<usize>>, retries: Vec<u32>) -> Plan {
        let n = deps.len();
        Plan {
            deps,
            retries,
            finally: vec![None; n],
            bounded: vec![false; n],
            bounded_max: usize::MAX,
        }
    }
}

struct State<'a> {
    plan: &'a Plan,
    exec: &'a dyn Executor,
    dependants: Vec<Vec<usize>>,
    waiting: Vec<usize>,
    verdicts: Vec<Option<Verdict>>,
    ready: BTreeSet<(usize, u32)>,
}

impl State<'_> {
    /// Records `step`'s verdict and propagates it: dependants become ready,
    /// are skipped, or (exit handlers) count one more settled step.
    fn settle(&mut self, step: usize, verdict: Verdict) {
        let mut work = vec![(step, verdict)];
        while let Some((s, v)) = work.pop() {
            self.verdicts[s] = Some(v);
            for i in 0..self.dependants[s].len() {
                let d = self.dependants[s][i];
                if self.verdicts[d].is_some() {
                    continue;
                }
                if let Some(rule) = self.plan.finally[d] {
                    self.waiting[d] -= 1;
                    if self.waiting[d] == 0 {
                        let failed = self.verdicts.iter().enumerate().any(|(j, v)| {
                            self.plan.finally[j].is_none() && *v == Some(Verdict::Failed)
                        });
                        let skip = match rule {
                            Finally::Always => None,
                            Finally::OnFailure => (!failed).then_some(Skip::NothingFailed),
                            Finally::OnSuccess => failed.then_some(Skip::SomethingFailed),
                        };
                        match skip {
                            None => {
                                self.ready.insert((d, 1));
                            }
                            Some(why) => {
                                self.exec.skipped(d, why);
                                work.push((d, Verdict::Skipped));
                            }
                        }
                    }
                } else if v == Verdict::Succeeded {
                    self.waiting[d] -= 1;
                    if self.waiting[d] == 0 {
                        self.ready.insert((d, 1));
                    }
                } else {
                    let why = if v == Verdict::Failed {
                        Skip::UpstreamFailed(s)
                    } else {
                        Skip::UpstreamSkipped(s)
                    };
                    self.exec.skipped(d, why);
                    // Mark now so a second path to `d` does not skip it twice.
                    self.verdicts[d] = Some(Verdict::Skipped);
                    work.push((d, Verdict::Skipped));
                }
            }
        }
    }
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
    let waiting: Vec<usize> = plan.deps.iter().map(Vec::len).collect();
    let mut state = State {
        plan,
        exec,
        ready: (0..n)
            .filter(|&i| waiting[i] == 0)
            .map(|i| (i, 1))
            .collect(),
        dependants,
        waiting,
        verdicts: vec![None; n],
    };
    let mut in_flight = 0usize;
    let mut bounded_in_flight = 0usize;
    let (tx, rx) = mpsc::channel::<(usize, u32, Outcome)>();
    std::thread::scope(|scope| {
        loop {
            // A lone ready step with nothing in flight (a chain) runs on this
            // thread: no spawn, no hand-off, same semantics.
            if in_flight == 0 && state.ready.len() == 1 {
                let (step, attempt) = state.ready.pop_first().expect("one ready step");
                in_flight += 1;
                if plan.bounded[step] {
                    bounded_in_flight += 1;
                }
                let outcome = exec.attempt(step, attempt);
                let _ = tx.send((step, attempt, outcome));
            }
            while in_flight < jobs {
                // The lowest ready step that its bound admits.
                let Some(&(step, attempt)) = state
                    .ready
                    .iter()
                    .find(|(s, _)| !plan.bounded[*s] || bounded_in_flight < plan.bounded_max)
                else {
                    break;
                };
                state.ready.remove(&(step, attempt));
                in_flight += 1;
                if plan.bounded[step] {
                    bounded_in_flight += 1;
                }
                let tx = tx.clone();
                scope.spawn(move || {
                    let outcome = exec.attempt(step, attempt);
                    // The receiver outlives every worker (it is only dropped
                    // after the scope ends).
                    let _ = tx.send((step, attempt, outcome));
                });
            }
            if in_flight == 0 {
                break;
            }
            let Ok((step, attempt, outcome)) = rx.recv() else {
                break;
            };
            in_flight -= 1;
            if plan.bounded[step] {
                bounded_in_flight -= 1;
            }
            match outcome {
                Outcome::Succeeded => state.settle(step, Verdict::Succeeded),
                Outcome::Skipped => state.settle(step, Verdict::Skipped),
                Outcome::Failed if attempt <= plan.retries[step] => {
                    state.ready.insert((step, attempt + 1));
                }
                Outcome::Failed => state.settle(step, Verdict::Failed),
            }
        }
    });
    state
        .verdicts
        .into_iter()
        .map(|v| v.expect("every step reaches a verdict"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails the listed (step, attempt) pairs; records calls and concurrency.
    struct Script {
        fail: Vec<(usize, u32)>,
        skip_self: Vec<usize>,
        calls: Mutex<Vec<(usize, u32)>>,
        skips: Mutex<Vec<(usize, Skip)>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    impl Script {
        fn new(fail: Vec<(usize, u32)>) -> Self {
            Script {
                fail,
                skip_self: Vec::new(),
                calls: Mutex::new(Vec::new()),
                skips: Mutex::new(Vec::new()),
                running: AtomicUsize::new(0),
                max_running: AtomicUsize::new(0),
            }
        }
    }

    impl Executor for Script {
        fn attempt(&self, step: usize, attempt: u32) -> Outcome {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            self.calls.lock().unwrap().push((step, attempt));
            // Yield so concurrent workers overlap without sleeping.
            for _ in 0..1000 {
                std::thread::yield_now();
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.fail.contains(&(step, attempt)) {
                Outcome::Failed
            } else if self.skip_self.contains(&step) {
                Outcome::Skipped
            } else {
                Outcome::Succeeded
            }
        }

        fn skipped(&self, step: usize, why: Skip) {
            self.skips.lock().unwrap().push((step, why));
        }
    }

    fn diamond() -> Plan {
        // 0 -> {1, 2} -> 3 ; 4 independent
        Plan::new(
            vec![vec![], vec![0], vec![0], vec![1, 2], vec![]],
            vec![0, 0, 1, 0, 0],
        )
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
                Verdict::Skipped,
                Verdict::Succeeded
            ]
        );
        assert_eq!(*s.skips.lock().unwrap(), vec![(3, Skip::UpstreamFailed(1))]);
        assert!(!s.calls.lock().unwrap().iter().any(|c| c.0 == 3));
    }

    #[test]
    fn bounded_steps_respect_their_own_limit() {
        let mut plan = Plan::new(vec![vec![]; 12], vec![0; 12]);
        plan.bounded = (0..12).map(|i| i < 8).collect();
        plan.bounded_max = 2;
        let s = Script::new(vec![]);
        let v = run(&plan, 4, &s);
        assert_eq!(v, vec![Verdict::Succeeded; 12]);
        // Every step ran once, never more than 4 at a time.
        assert_eq!(s.calls.lock().unwrap().len(), 12);
        assert!(s.max_running.load(Ordering::SeqCst) <= 4);
        let mut one = Plan::new(vec![vec![]; 6], vec![0; 6]);
        one.bounded = vec![true; 6];
        one.bounded_max = 1;
        let s1 = Script::new(vec![]);
        run(&one, 4, &s1);
        assert_eq!(
            s1.max_running.load(Ordering::SeqCst),
            1,
            "--max-parallel 1 serialises a sweep"
        );
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
        let plan = Plan::new(vec![vec![]; 16], vec![0; 16]);
        let s = Script::new(vec![]);
        run(&plan, 3, &s);
        assert!(s.max_running.load(Ordering::SeqCst) <= 3);
        assert_eq!(s.calls.lock().unwrap().len(), 16);
        let s1 = Script::new(vec![]);
        run(&plan, 1, &s1);
        assert_eq!(s1.max_running.load(Ordering::SeqCst), 1);
    }

    /// 0 -> 1 -> 2, plus exit handlers 3 (always), 4 (failure), 5 (success).
    fn with_handlers() -> Plan {
        Plan {
            deps: vec![
                vec![],
                vec![0],
                vec![1],
                vec![0, 1, 2],
                vec![0, 1, 2],
                vec![0, 1, 2],
            ],
            retries: vec![0; 6],
            bounded: vec![false; 6],
            bounded_max: usize::MAX,
            finally: vec![
                None,
                None,
                None,
                Some(Finally::Always),
                Some(Finally::OnFailure),
                Some(Finally::OnSuccess),
            ],
        }
    }

    #[test]
    fn exit_handlers_follow_their_rule_after_everything_settles() {
        let ok = Script::new(vec![]);
        let v = run(&with_handlers(), 2, &ok);
        assert_eq!(
            v[3..],
            [Verdict::Succeeded, Verdict::Skipped, Verdict::Succeeded]
        );
        assert_eq!(*ok.skips.lock().unwrap(), vec![(4, Skip::NothingFailed)]);
        let calls = ok.calls.lock().unwrap().clone();
        let pos = |i| calls.iter().position(|c| c.0 == i).unwrap();
        assert!(pos(3) > pos(2) && pos(5) > pos(2));

        let bad = Script::new(vec![(1, 1)]);
        let v = run(&with_handlers(), 2, &bad);
        assert_eq!(
            v,
            [
                Verdict::Succeeded,
                Verdict::Failed,
                Verdict::Skipped,
                Verdict::Succeeded,
                Verdict::Succeeded,
                Verdict::Skipped
            ]
        );
        let skips = bad.skips.lock().unwrap().clone();
        assert!(skips.contains(&(2, Skip::UpstreamFailed(1))));
        assert!(skips.contains(&(5, Skip::SomethingFailed)));
    }

    #[test]
    fn a_self_skipped_step_skips_its_dependants_without_failing() {
        let mut s = Script::new(vec![]);
        s.skip_self = vec![1];
        let v = run(&diamond(), 2, &s);
        assert_eq!(
            v,
            [
                Verdict::Succeeded,
                Verdict::Skipped,
                Verdict::Succeeded,
                Verdict::Skipped,
                Verdict::Succeeded
            ]
        );
        assert_eq!(
            *s.skips.lock().unwrap(),
            vec![(3, Skip::UpstreamSkipped(1))]
        );
    }
}
