//! A call's deadline on the policy's own CPU time, not only the wall clock.
//!
//! Under saturation a call's thread is sometimes descheduled: the wall clock runs past the
//! deadline while the policy has used a fraction of it (measured on this kind of machine: 7
//! timeouts in 206,000 requests at full load, each call needing 0.15 ms of CPU against a 5 ms
//! deadline). Stopping such a call would blame a healthy version for the host's load and, through
//! automatic rollback, let a traffic spike roll it back. So when the epoch deadline fires, the
//! thread's CPU clock decides:
//!
//! - the call used its whole deadline of CPU time: the policy's fault, stopped as a timeout
//!   (counted toward rollback);
//! - it used less, so the thread was preempted: the call goes on, re-armed for the CPU time it
//!   has left, until the wall clock reaches the deadline plus the grace
//!   ([`Budget::preemption_grace`], by default the deadline again); stopped there with less
//!   than half its deadline of CPU used, it is
//!   [`CallError::Preempted`](super::CallError::Preempted), the host's fault, answered by the
//!   fallback and never counted toward rollback; with half or more, a timeout after all (a
//!   looping policy under load it makes itself gets a fraction of a core, and must still count:
//!   found by the hostile-guest suite on a busy machine, where a loop with a 250 ms deadline was
//!   stopped at 503 ms having used 248 ms of CPU).
//!
//! A looping policy on a free core is stopped exactly as before; what it costs per call is one
//! read of the thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`) when the call starts, and the
//! check runs only when a deadline is reached.

use std::time::{Duration, Instant};

use super::Budget;

/// Why the clock stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The policy used its whole deadline of CPU time.
    Deadline,
    /// The wall clock reached the deadline plus the grace while the policy had used less CPU.
    Preempted {
        /// CPU time the call had used.
        cpu: Duration,
        /// Wall-clock time since it started.
        wall: Duration,
    },
}

/// One call's clocks.
pub(super) struct Clock {
    cpu_start: Duration,
    wall_start: Instant,
    deadline: Duration,
    wall_limit: Duration,
    /// The engine's epoch tick (here rather than captured by the epoch callback, which then
    /// captures nothing and is boxed without an allocation, once per call).
    pub(super) tick: Duration,
    /// Why the call was stopped, once it was.
    pub(super) stopped: Option<Stop>,
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

impl Clock {
    /// A clock starting now, on this thread, for an engine ticking every `tick`.
    pub(super) fn start(budget: &Budget, tick: Duration) -> Self {
        Clock {
            tick,
            cpu_start: thread_cpu(),
            wall_start: Instant::now(),
            deadline: budget.deadline,
            wall_limit: budget.deadline + budget.preemption_grace.unwrap_or(budget.deadline),
            stopped: None,
        }
    }

    /// Starts the clocks again (a new call on the same instance).
    pub(super) fn restart(&mut self) {
        self.cpu_start = thread_cpu();
        self.wall_start = Instant::now();
        self.stopped = None;
    }

    /// At an epoch deadline: the ticks to go on for, or why the call stops.
    pub(super) fn check(&mut self) -> Result<u64, Stop> {
        let tick = self.tick;
        let cpu = thread_cpu().saturating_sub(self.cpu_start);
        let wall = self.wall_start.elapsed();
        let stop = if cpu >= self.deadline {
            Some(Stop::Deadline)
        } else if wall >= self.wall_limit {
            // Out of time on the wall clock. A call that has used half its deadline of CPU and is
            // not done is the policy's: a looping policy must not be excused by the load it makes
            // itself (several loops on a few cores each get a fraction of a core).
            Some(if cpu * 2 >= self.deadline { Stop::Deadline } else { Stop::Preempted { cpu, wall } })
        } else {
            None
        };
        if let Some(stop) = stop {
            self.stopped = Some(stop);
            return Err(stop);
        }
        // Preempted so far: go on for the CPU time left, checking again no later than the wall
        // limit.
        let left = (self.deadline - cpu).min(self.wall_limit - wall);
        Ok((left.as_nanos().div_ceil(tick.as_nanos().max(1)) as u64).max(1))
    }
}
