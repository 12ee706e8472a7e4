//! A submitted job as its submitter sees it: the state one job's thread
//! writes and any number of [`JobHandle`]s read, wait on and cancel.
//!
//! Invariant: a job's report is set exactly once ([`JobShared::finish`]),
//! after which its state never changes; every waiter is woken then. A
//! cancel reaches the job's worker only through its pool inbox, keyed by
//! the job, so a late cancel never hits a later job of the same worker.
//! Boundary: threads and condition variables only; knows nothing of
//! processes, the store or the protocol.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::job::{JobReport, State};
use super::pool;

/// Locks `m`, taking the data of a poisoned lock: a panicking job thread
/// has its report written by the dispatcher's fallback, so the state stays
/// meaningful.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct JobStatus {
    state: State,
    cancel: bool,
    worker: Option<(Arc<pool::Inbox>, u64)>,
    report: Option<JobReport>,
}

/// One job's shared state: the job's thread writes it, handles read it.
#[derive(Debug)]
pub(crate) struct JobShared {
    id: String,
    status: Mutex<JobStatus>,
    done: Condvar,
}

impl JobShared {
    pub(crate) fn new(id: &str) -> JobShared {
        JobShared {
            id: id.to_string(),
            status: Mutex::new(JobStatus {
                state: State::Queued,
                cancel: false,
                worker: None,
                report: None,
            }),
            done: Condvar::new(),
        }
    }

    fn finished(report: JobReport) -> JobShared {
        let s = JobShared::new(&report.id);
        {
            let mut st = lock(&s.status);
            st.state = report.state;
            st.report = Some(report);
        }
        s
    }

    pub(crate) fn cancel_requested(&self) -> bool {
        lock(&self.status).cancel
    }

    /// Marks the job running on the worker behind `inbox` (its job `key`),
    /// unless a cancel came first: then `false` and nothing changes.
    pub(crate) fn start_on(&self, inbox: Arc<pool::Inbox>, key: u64) -> bool {
        let mut st = lock(&self.status);
        if st.cancel {
            return false;
        }
        st.worker = Some((inbox, key));
        st.state = State::Running;
        true
    }

    pub(crate) fn finish(&self, report: JobReport) {
        let mut st = lock(&self.status);
        st.state = report.state;
        st.worker = None;
        st.report = Some(report);
        drop(st);
        self.done.notify_all();
    }

    /// The final report, if the job ended.
    pub(crate) fn report(&self) -> Option<JobReport> {
        lock(&self.status).report.clone()
    }

    pub(crate) fn wait(&self) -> JobReport {
        let mut st = lock(&self.status);
        loop {
            if let Some(r) = &st.report {
                return r.clone();
            }
            st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The final report if the job ends within `within`.
    pub(crate) fn wait_for(&self, within: Duration) -> Option<JobReport> {
        let st = lock(&self.status);
        let (st, _) = self
            .done
            .wait_timeout_while(st, within, |st| st.report.is_none())
            .unwrap_or_else(|p| p.into_inner());
        st.report.clone()
    }
}

/// A submitted job.
#[derive(Debug)]
pub struct JobHandle {
    shared: Arc<JobShared>,
    /// The pool whose waiters a cancel wakes; none for an answered job.
    pool: Option<Arc<pool::Pool>>,
}

impl JobHandle {
    /// A handle on a job running on (or queued for) a worker of `pool`.
    pub(crate) fn new(shared: Arc<JobShared>, pool: Arc<pool::Pool>) -> JobHandle {
        JobHandle {
            shared,
            pool: Some(pool),
        }
    }

    /// A handle on a job that is already over (answered from a record).
    pub(crate) fn answered(report: JobReport) -> JobHandle {
        JobHandle {
            shared: Arc::new(JobShared::finished(report)),
            pool: None,
        }
    }

    /// The state behind the handle (what a ledger keeps).
    pub(crate) fn shared(&self) -> &Arc<JobShared> {
        &self.shared
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The current state, without blocking.
    pub fn state(&self) -> State {
        lock(&self.shared.status).state
    }

    /// Blocks until the job ends.
    pub fn wait(&self) -> JobReport {
        self.shared.wait()
    }

    /// The final report, if the job ended.
    pub fn report(&self) -> Option<JobReport> {
        self.shared.report()
    }

    /// Asks the job to stop and waits for it to end: a queued job ends
    /// without starting; a running one gets a `cancel` line and
    /// [`CANCEL_GRACE`](super::CANCEL_GRACE) to answer before its worker is
    /// killed.
    pub fn cancel(&self) -> JobReport {
        {
            let mut st = lock(&self.shared.status);
            if let Some(r) = &st.report {
                return r.clone();
            }
            st.cancel = true;
            if let Some((inbox, key)) = &st.worker {
                inbox.request_cancel(*key);
            }
        }
        if let Some(pool) = &self.pool {
            pool.wake();
        }
        self.shared.wait()
    }
}
