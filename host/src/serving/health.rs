//! Automatic rollback: the failure rate of one arm of a plan revision over a sliding window of
//! calls.
//!
//! Each arm of each bound plan revision gets a fresh [`Health`]. When the failures among the last
//! `window` calls reach `threshold` (with at least `min_calls` calls seen), it trips once and
//! sends an [`Alarm`], which the server turns into a change of the control plane: the arm is taken
//! out of the plan, or a one-arm plan is rolled back to the previous healthy revision, and the
//! revision is marked failed. Only the policy's own faults count
//! ([`CallError::is_policy_fault`](crate::runtime::CallError::is_policy_fault)): a full instance
//! pool, a surface over its concurrency limit, or a call whose thread was preempted past its
//! wall-clock grace is the host's problem, not the revision's.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc::UnboundedSender;

/// When to roll back automatically.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HealthPolicy {
    /// Calls remembered.
    pub window: usize,
    /// Calls needed before judging.
    pub min_calls: usize,
    /// The failure share that trips the rollback (0.05 = 5 %).
    pub threshold: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy { window: 200, min_calls: 100, threshold: 0.05 }
    }
}

/// An alarm: the surface, plan revision and arm that tripped, with the observed failure rate.
#[derive(Debug, Clone)]
pub struct Alarm {
    /// The surface.
    pub surface: String,
    /// The plan revision whose arm tripped.
    pub revision: u64,
    /// The arm's name.
    pub arm: String,
    /// Failures in the window.
    pub failures: usize,
    /// Calls in the window.
    pub calls: usize,
    /// The failure share that trips it.
    pub threshold: f64,
}

/// What [`Health::snapshot`] shows in a surface's status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthSnapshot {
    /// When it rolls back.
    #[serde(flatten)]
    pub policy: HealthPolicy,
    /// Calls in the window now.
    pub calls: usize,
    /// Failures among them.
    pub failures: usize,
    /// Whether it tripped (an automatic rollback was asked for).
    pub tripped: bool,
}

/// The health of one binding.
pub struct Health {
    policy: HealthPolicy,
    surface: String,
    revision: u64,
    arm: String,
    outcomes: Mutex<Window>,
    tripped: AtomicBool,
    alarms: UnboundedSender<Alarm>,
}

#[derive(Default)]
struct Window {
    outcomes: VecDeque<bool>,
    failures: usize,
}

impl Health {
    /// Tracks arm `arm` of `revision` on `surface`; trips send an [`Alarm`] on `alarms`.
    pub fn new(policy: HealthPolicy, surface: &str, revision: u64, arm: &str, alarms: UnboundedSender<Alarm>) -> Self {
        Health {
            policy,
            surface: surface.to_owned(),
            revision,
            arm: arm.to_owned(),
            outcomes: Mutex::new(Window::default()),
            tripped: AtomicBool::new(false),
            alarms,
        }
    }

    /// Records one call's outcome.
    pub fn record(&self, ok: bool) {
        if self.tripped.load(Ordering::Relaxed) {
            return;
        }
        let (failures, calls) = {
            let mut window = self.outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            window.outcomes.push_back(ok);
            window.failures += usize::from(!ok);
            if window.outcomes.len() > self.policy.window {
                let dropped = window.outcomes.pop_front().expect("the window is not empty");
                window.failures -= usize::from(!dropped);
            }
            (window.failures, window.outcomes.len())
        };
        if calls >= self.policy.min_calls
            && failures as f64 >= self.policy.threshold * calls as f64
            && failures > 0
            && !self.tripped.swap(true, Ordering::Relaxed)
        {
            let _ = self.alarms.send(Alarm {
                surface: self.surface.clone(),
                revision: self.revision,
                arm: self.arm.clone(),
                failures,
                calls,
                threshold: self.policy.threshold,
            });
        }
    }

    /// The window as of now.
    pub fn snapshot(&self) -> HealthSnapshot {
        let (calls, failures) = {
            let window = self.outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (window.outcomes.len(), window.failures)
        };
        HealthSnapshot { policy: self.policy, calls, failures, tripped: self.tripped.load(Ordering::Relaxed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(policy: HealthPolicy) -> (Health, tokio::sync::mpsc::UnboundedReceiver<Alarm>) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        (Health::new(policy, "banners", 3, "banners@0.2.0", sender), receiver)
    }

    #[test]
    fn trips_once_past_the_threshold_after_enough_calls() {
        let (health, mut alarms) = health(HealthPolicy { window: 100, min_calls: 50, threshold: 0.1 });
        for i in 0..49 {
            health.record(i % 2 == 0); // 50 % failures, but too few calls to judge
        }
        assert!(alarms.try_recv().is_err());
        health.record(false);
        let alarm = alarms.try_recv().expect("tripped at 50 calls");
        assert_eq!((alarm.surface.as_str(), alarm.revision, alarm.arm.as_str()), ("banners", 3, "banners@0.2.0"));
        assert_eq!(alarm.calls, 50);
        for _ in 0..100 {
            health.record(false);
        }
        assert!(alarms.try_recv().is_err(), "trips only once");
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let (health, mut alarms) = health(HealthPolicy { window: 100, min_calls: 100, threshold: 0.05 });
        for _ in 0..4 {
            health.record(false);
        }
        for _ in 0..200 {
            health.record(true);
        }
        for _ in 0..4 {
            health.record(false); // 4 % of the window: below 5 %
        }
        assert!(alarms.try_recv().is_err());
        health.record(false); // 5 %
        assert!(alarms.try_recv().is_ok());
    }

    #[test]
    fn a_healthy_version_never_trips() {
        let (health, mut alarms) = health(HealthPolicy::default());
        for _ in 0..10_000 {
            health.record(true);
        }
        assert!(alarms.try_recv().is_err());
    }
}
