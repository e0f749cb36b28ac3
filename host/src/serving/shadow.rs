//! Shadow evaluation: a version of the plan that runs on a sample of requests beside the arm
//! that answered, off the response path, and is compared with the answer sent.
//!
//! [`dispatch`] costs the request an `Arc` clone, a copy of the answer's order (at most `limit`
//! indices) and a push on a bounded queue (waking a shadow thread is deferred past the answer by
//! the data plane, [`deferring_wakes`]): the shadow's call (on the same request, or a copy
//! of it when the shadow has parameters of its own) runs on the host's shadow threads (one per
//! core, started on first use, under `SCHED_IDLE` on Linux so that they take only CPU the
//! response path leaves idle). A thread under `SCHED_IDLE` can be preempted anywhere for as long
//! as the cores are busy, so it must hold nothing the response path waits for: the queue is
//! lock-free, and shadow calls take their instances from an engine and instance pool of their
//! own (`PolicyPre::for_shadows`), not the serving pool's lock. Each surface has a shadow
//! concurrency limit; past it, or when the queue is full, the shadow call is skipped and counted
//! (`relish_shadow_skipped_total`), never queued without bound. A shadow's failure or timeout never changes an answer and never counts toward any
//! arm's health.
//!
//! Why threads of its own rather than tokio's blocking pool: that pool starts a thread whenever
//! none is idle, so a burst of shadow calls paid for thread starts and context switches; in the
//! plans benchmark a 100 % shadow of the same cost took 3.7× the host CPU of no shadow on the
//! blocking pool, where the call itself is only 2× (BENCHMARKS.md, "Plans").

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;

use serde::Serialize;

use super::Binding;
use super::compare::{self, Agreement};
use crate::metrics::Metrics;
use crate::runtime::{Ranking, types};

/// What one shadow did on one request, for the request's decision record.
#[derive(Debug, Clone)]
pub struct ShadowResult {
    /// The shadow's index in the plan.
    pub index: usize,
    /// The shadow's name (`policy@version`).
    pub name: String,
    /// Its answer and how far it agrees with the answer sent; the failure's reason; or
    /// `skipped` when it was not run (the surface's shadow limit, or the shadow queue, was full).
    pub outcome: Result<(Ranking, Agreement), &'static str>,
    /// How long its call took, in microseconds (0 when skipped).
    pub micros: u64,
}

type Then = Box<dyn FnOnce(Vec<ShadowResult>) + Send>;

/// The results of one request's shadows. The shadow jobs fill it in; whoever wants them (the
/// decision log) sets [`ShadowResults::then`], which runs with them, in plan order, once the
/// last shadow job and the request's [`super::Decision`] have let go of it: off the response
/// path, and without waiting for anything.
#[derive(Default)]
pub struct ShadowResults {
    results: Mutex<Vec<ShadowResult>>,
    then: Mutex<Option<Then>>,
}

impl ShadowResults {
    /// Runs `then` with the results once every shadow of the request is done.
    pub fn then(&self, then: impl FnOnce(Vec<ShadowResult>) + Send + 'static) {
        *self.then.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(then));
    }

    fn push(&self, result: ShadowResult) {
        self.results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(result);
    }
}

impl Drop for ShadowResults {
    fn drop(&mut self) {
        let then = self.then.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(then) = then {
            let mut results = std::mem::take(self.results.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner));
            results.sort_by_key(|r| r.index);
            then(results);
        }
    }
}

/// What one shadow did, by the arm whose answer it was compared with: what a surface's status
/// shows.
#[derive(Debug, Default)]
pub struct ShadowStats {
    by_arm: Mutex<BTreeMap<String, Totals>>,
    skipped: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct Totals {
    calls: u64,
    failures: BTreeMap<&'static str, u64>,
    compared: u64,
    sums: [f64; 4],
    micros: u64,
}

/// A shadow's figures against one arm, as the status shows them.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowFigures {
    /// The arm it was compared with.
    pub arm: String,
    /// Shadow calls made.
    pub calls: u64,
    /// Failed shadow calls, by reason.
    pub failures: BTreeMap<&'static str, u64>,
    /// Mean top-1 agreement over the compared calls.
    pub top1_agreement: Option<f64>,
    /// Mean overlap@k (k: the answer's length).
    pub overlap: Option<f64>,
    /// Mean rank-biased overlap.
    pub rbo: Option<f64>,
    /// Mean Kendall's tau over shared items.
    pub kendall_tau: Option<f64>,
    /// Mean shadow call time in milliseconds.
    pub mean_ms: Option<f64>,
}

impl ShadowStats {
    fn record(&self, arm: &str, micros: u64, outcome: Result<Agreement, &'static str>) {
        let mut by_arm = self.by_arm.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let totals = by_arm.entry(arm.to_owned()).or_default();
        totals.calls += 1;
        totals.micros += micros;
        match outcome {
            Ok(a) => {
                totals.compared += 1;
                for (sum, value) in totals.sums.iter_mut().zip([a.top1, a.overlap, a.rbo, a.tau]) {
                    *sum += value;
                }
            }
            Err(reason) => *totals.failures.entry(reason).or_default() += 1,
        }
    }

    /// Calls skipped because the surface's shadow calls were at their limit.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The figures by arm.
    pub fn figures(&self) -> Vec<ShadowFigures> {
        let by_arm = self.by_arm.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        by_arm
            .iter()
            .map(|(arm, t)| {
                let mean = |i: usize| (t.compared > 0).then(|| t.sums[i] / t.compared as f64);
                ShadowFigures {
                    arm: arm.clone(),
                    calls: t.calls,
                    failures: t.failures.clone(),
                    top1_agreement: mean(0),
                    overlap: mean(1),
                    rbo: mean(2),
                    kendall_tau: mean(3),
                    mean_ms: (t.calls > 0).then(|| t.micros as f64 / t.calls as f64 / 1000.0),
                }
            })
            .collect()
    }
}

/// Shadow calls waiting for a shadow thread, across the process; past it calls are skipped.
const QUEUE: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

/// The shadow threads' queue. Shadow threads run under `SCHED_IDLE`, so one can be preempted
/// anywhere for as long as the other threads keep the cores busy: the queue is lock-free (a
/// bounded array queue) so that the response path, which pushes, never waits on a lock a parked
/// shadow thread holds. Putting a job in is a few atomic operations; waking a parked shadow
/// thread is a `futex` call that, measured on a 2-vCPU VM, takes 13 µs at the median and 55 µs
/// at the 99th percentile (the other vCPU is woken from halt): the data plane defers it until
/// its answer is written ([`deferring_wakes`]).
struct Queue {
    jobs: ArrayQueue<Job>,
    threads: OnceLock<Vec<Thread>>,
}

impl Queue {
    /// Queues `job` unless the queue is full (the job is handed back).
    fn push(&self, job: Job) -> Result<(), Job> {
        self.jobs.push(job)
    }

    /// Wakes every parked shadow thread (a thread that is running costs an atomic swap, no
    /// system call).
    fn wake(&self) {
        for thread in self.threads.get().into_iter().flatten() {
            thread.unpark();
        }
    }
}

/// The shadow threads' queue, started on first use.
fn queue() -> &'static Queue {
    static SHADOW_QUEUE: OnceLock<&'static Queue> = OnceLock::new();
    SHADOW_QUEUE.get_or_init(|| {
        let queue: &'static Queue =
            Box::leak(Box::new(Queue { jobs: ArrayQueue::new(QUEUE), threads: OnceLock::new() }));
        let count = std::thread::available_parallelism().map_or(2, usize::from);
        let threads = (0..count)
            .map(|index| {
                std::thread::Builder::new()
                    .name(format!("relish-shadow-{index}"))
                    .spawn(move || work(queue))
                    .expect("starting a shadow thread")
                    .thread()
                    .clone()
            })
            .collect();
        let _ = queue.threads.set(threads);
        queue
    })
}

fn work(queue: &Queue) {
    lower_priority();
    loop {
        match queue.jobs.pop() {
            Some(job) => job(),
            // A job pushed after the `pop` above unparks this thread before or after it parks;
            // before, `park` returns at once (the token is kept), so no job waits unnoticed.
            None => std::thread::park(),
        }
    }
}

thread_local! {
    /// On a thread inside [`deferring_wakes`]: whether a shadow thread is owed a wake-up.
    static DEFERRED: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Runs `decide` with the shadow threads' wake-ups held back: they are owed to the returned
/// [`Wakes`], which wakes them when it is dropped. The data plane drops it after its answer is
/// written, so that the wake-up's system call is not on the answer's path.
pub fn deferring_wakes<T>(decide: impl FnOnce() -> T) -> (T, Wakes) {
    let outer = DEFERRED.with(|deferred| deferred.replace(Some(false)));
    let decided = decide();
    let owed = DEFERRED.with(|deferred| deferred.replace(outer)) == Some(true);
    (decided, Wakes { owed })
}

/// Shadow wake-ups held back by [`deferring_wakes`]; dropping it wakes the shadow threads.
#[must_use = "dropping it wakes the shadow threads; keep it until the answer is sent"]
pub struct Wakes {
    owed: bool,
}

impl Wakes {
    /// Whether any shadow call is waiting for them.
    pub fn owed(&self) -> bool {
        self.owed
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        if self.owed {
            // One job or many: every shadow thread may have work.
            queue().wake();
        }
    }
}

/// Puts the calling shadow thread under `SCHED_IDLE` (Linux): it runs only on a core nothing else
/// wants, so a shadow call never delays an answer for the CPU it takes; under full load shadow
/// calls wait in the bounded queue, then are skipped and counted. Measured in the load
/// benchmark: with the shadow threads at normal priority, a 100 % shadow at 50 candidates raised
/// the answers' p50 by ~20 % even with a core to spare (BENCHMARKS.md, "Plans").
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(error) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
            tracing::warn!("shadow threads keep their normal priority: cannot set SCHED_IDLE: {error:?}");
        }
    }
}

/// Starts shadow `index` of `binding` on `request`, whose answer (from arm `arm`) was `sent`;
/// its result goes to `results`. Returns whether it started: `false` when the surface's shadow
/// calls are at their limit or the shadow threads' queue is full (counted as skipped).
pub fn dispatch(
    binding: &Arc<Binding>,
    index: usize,
    arm: &str,
    request: &Arc<types::Request>,
    sent: &[u32],
    metrics: &Arc<Metrics>,
    results: &Arc<ShadowResults>,
) -> bool {
    let shadow = &binding.shadows[index];
    let skip = || {
        shadow.stats.skipped.fetch_add(1, Ordering::Relaxed);
        metrics.shadow_skipped(&binding.surface, &shadow.name);
        results.push(ShadowResult { index, name: shadow.name.clone(), outcome: Err("skipped"), micros: 0 });
        false
    };
    let job_results = results.clone();
    let Some(permit) = binding.shadow_limiter.try_acquire_owned() else { return skip() };
    let (job_binding, request, job_metrics) = (binding.clone(), request.clone(), metrics.clone());
    let (sent, arm) = (sent.to_vec(), arm.to_owned());
    let job: Job = Box::new(move || {
        let _permit = permit;
        let (binding, metrics) = (job_binding, job_metrics);
        let shadow = &binding.shadows[index];
        // A shadow with the arm's own parameters (the usual case: a new version of the same
        // policy) ranks the request as it is; only different parameters need a copy of it.
        let own;
        let request = if shadow.params == request.params {
            &*request
        } else {
            let mut copy = types::Request::clone(&request);
            copy.params.clone_from(&shadow.params);
            own = copy;
            &own
        };
        let started = Instant::now();
        let result = shadow.bound.ranker.rank(request, &binding.budget);
        let elapsed = started.elapsed();
        if let Err(error) = &result {
            tracing::debug!(surface = %binding.surface, shadow = %shadow.name, "shadow call failed: {error}");
        }
        let outcome = match result {
            Ok(ranking) => {
                let agreement = compare::compare(&sent, ranking.order());
                Ok((ranking, agreement))
            }
            Err(error) => Err(error.reason()),
        };
        let (micros, figures) = (elapsed.as_micros() as u64, outcome.as_ref().map(|(_, a)| *a).map_err(|r| *r));
        shadow.stats.record(&arm, micros, figures);
        metrics.shadow_call(&binding.surface, &arm, &shadow.name, elapsed.as_secs_f64(), figures);
        job_results.push(ShadowResult { index, name: shadow.name.clone(), outcome, micros });
    });
    let queue = queue();
    match queue.push(job) {
        Ok(()) => {
            let deferred = DEFERRED.with(|deferred| match deferred.get() {
                Some(_) => {
                    deferred.set(Some(true));
                    true
                }
                None => false,
            });
            if !deferred {
                queue.wake();
            }
            true
        }
        // The job (and its permit) is dropped here.
        Err(_) => skip(),
    }
}
