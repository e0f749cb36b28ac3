//! Surfaces and what answers them: the active policy version, then the fallback chain.
//!
//! The routing table is an immutable map from surface to [`Binding`], swapped atomically
//! ([`arc_swap`]) when an activation changes: a request loads the table once when it starts and
//! finishes on the versions it saw, the next request sees the new table. Nothing on the request
//! path takes a lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use super::config::ResolvedSurface;
use super::health::Health;
use super::metrics::{BindingMetrics, Metrics};
use crate::fallback::{self, INPUT_ORDER};
use crate::runtime::{Budget, CallError, Digest, PolicyPre, Ranker, Ranking, types};

/// A loaded policy version, with the names responses and metrics use.
#[derive(Clone)]
pub struct Bound {
    /// What ranks: the loaded version (or a native stand-in in the load benchmark's baseline).
    pub ranker: Arc<dyn Ranker>,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its digest.
    pub digest: Digest,
}

impl Bound {
    /// Binds a loaded version.
    pub fn new(policy: Arc<PolicyPre>) -> Self {
        let metadata = policy.metadata();
        Bound {
            name: metadata.name.clone(),
            version: metadata.version.clone(),
            digest: policy.digest(),
            ranker: policy,
        }
    }
}

/// Limits the calls in flight on one surface. Shared by every binding of the surface, so it
/// survives activations.
#[derive(Debug)]
pub struct Limiter {
    max: usize,
    inflight: AtomicUsize,
}

impl Limiter {
    /// A limiter allowing `max` calls at once.
    pub fn new(max: usize) -> Self {
        Limiter { max, inflight: AtomicUsize::new(0) }
    }

    /// The most calls allowed at once.
    pub fn max(&self) -> usize {
        self.max
    }

    fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut current = self.inflight.load(Ordering::Relaxed);
        loop {
            if current >= self.max {
                return None;
            }
            match self.inflight.compare_exchange_weak(current, current + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(Permit(self)),
                Err(actual) => current = actual,
            }
        }
    }
}

struct Permit<'a>(&'a Limiter);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Release);
    }
}

/// Everything needed to answer one surface.
pub struct Binding {
    /// The surface.
    pub surface: String,
    /// The active version; `None` when nothing is active (answered by the fallback chain).
    pub active: Option<Bound>,
    /// The active version's parameters.
    pub params: Vec<(String, String)>,
    /// The fallback policy.
    pub fallback: Option<Bound>,
    /// The call budget.
    pub budget: Budget,
    /// The most candidates per request.
    pub max_candidates: usize,
    /// The per-surface concurrency limit.
    pub limiter: Option<Arc<Limiter>>,
    /// Pre-resolved metrics.
    pub metrics: BindingMetrics,
    /// Health tracking of the active version (for automatic rollback).
    pub health: Option<Arc<Health>>,
}

/// Why an answer did not come from the active policy.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The reason code (`timeout`, `trap`, `memory`, `invalid-output`, `error`, `log-limit`,
    /// `capacity`, `overloaded`, `no-policy`).
    pub reason: &'static str,
    /// What answered instead: the fallback policy's name or `input-order`.
    pub answered_by: String,
    /// The failure in words.
    pub detail: String,
    /// When the fallback policy failed too (and the input order answered): its reason code and
    /// failure in words.
    pub fallback_failure: Option<(&'static str, String)>,
}

/// An answer and how it was reached.
pub struct Answer {
    /// The validated ranking.
    pub ranking: Ranking,
    /// Set when a fallback answered.
    pub failure: Option<Failure>,
    /// Time spent in policy calls.
    pub policy_us: u64,
}

impl Binding {
    /// Binds a surface.
    pub fn new(
        surface: &ResolvedSurface,
        active: Option<Bound>,
        params: Vec<(String, String)>,
        fallback: Option<Bound>,
        limiter: Option<Arc<Limiter>>,
        metrics: &Metrics,
        health: Option<Arc<Health>>,
    ) -> Self {
        let (policy, version) =
            active.as_ref().map_or(("none", "none"), |bound| (bound.name.as_str(), bound.version.as_str()));
        Binding {
            surface: surface.name.clone(),
            metrics: metrics.binding(&surface.name, policy, version),
            active,
            params,
            fallback,
            budget: surface.budget.clone(),
            max_candidates: surface.max_candidates,
            limiter,
            health,
        }
    }

    /// Answers a request: the active version, else the fallback policy, else the input order.
    /// Never fails; every fallback is counted and logged.
    pub fn answer(&self, request: &mut types::Request, metrics: &Metrics) -> Answer {
        let started = Instant::now();
        request.params.clone_from(&self.params);
        let failure = match self.call_active(request, metrics) {
            Ok(ranking) => {
                let elapsed = started.elapsed();
                self.metrics.policy_seconds.observe(elapsed.as_secs_f64());
                self.metrics.answered.inc();
                return Answer { ranking, failure: None, policy_us: elapsed.as_micros() as u64 };
            }
            Err(failure) => failure,
        };
        let (reason, detail) = failure;
        // The fallback runs with its own defaults, not the active policy's parameters.
        request.params.clear();
        let mut fallback_failure = None;
        let (ranking, answered_by) = match &self.fallback {
            Some(fallback) => match fallback.ranker.rank(request, &self.budget) {
                Ok(ranking) => (ranking, fallback.name.clone()),
                Err(error) => {
                    metrics.policy_error(&fallback.name, &fallback.version, error.reason());
                    tracing::error!(
                        surface = %self.surface,
                        fallback = %fallback.name,
                        reason = error.reason(),
                        "the fallback policy failed too: {error}; answering in input order"
                    );
                    fallback_failure = Some((error.reason(), error.to_string()));
                    (fallback::input_order(request), INPUT_ORDER.to_owned())
                }
            },
            None => (fallback::input_order(request), INPUT_ORDER.to_owned()),
        };
        let (policy, version) = self.active_names();
        metrics.fallback(&self.surface, policy, version, reason, &answered_by);
        tracing::warn!(surface = %self.surface, policy, version, reason, answered_by, "answered by fallback: {detail}");
        Answer {
            ranking,
            failure: Some(Failure { reason, answered_by, detail, fallback_failure }),
            policy_us: started.elapsed().as_micros() as u64,
        }
    }

    fn call_active(&self, request: &types::Request, metrics: &Metrics) -> Result<Ranking, (&'static str, String)> {
        let Some(active) = &self.active else {
            return Err(("no-policy", format!("no policy is active on surface `{}`", self.surface)));
        };
        let _permit = match &self.limiter {
            Some(limiter) => Some(limiter.try_acquire().ok_or_else(|| {
                ("overloaded", format!("surface `{}` has {} calls in flight, its limit", self.surface, limiter.max))
            })?),
            None => None,
        };
        let result = active.ranker.rank(request, &self.budget);
        if let Some(health) = &self.health {
            // A full instance pool is the host's problem, not the version's: it does not count.
            if !matches!(result, Err(CallError::Capacity(_))) {
                health.record(result.is_ok());
            }
        }
        result.map_err(|error: CallError| {
            metrics.policy_error(&active.name, &active.version, error.reason());
            (error.reason(), error.to_string())
        })
    }

    /// The active version's name and version, or `none`.
    pub fn active_names(&self) -> (&str, &str) {
        self.active.as_ref().map_or(("none", "none"), |bound| (bound.name.as_str(), bound.version.as_str()))
    }
}

/// The routing table.
pub struct Router {
    table: ArcSwap<HashMap<String, Arc<Binding>>>,
}

impl Default for Router {
    fn default() -> Self {
        Router { table: ArcSwap::from_pointee(HashMap::new()) }
    }
}

impl Router {
    /// The binding of a surface, as of now.
    pub fn get(&self, surface: &str) -> Option<Arc<Binding>> {
        self.table.load().get(surface).cloned()
    }

    /// Every binding, as of now.
    pub fn all(&self) -> Arc<HashMap<String, Arc<Binding>>> {
        self.table.load_full()
    }

    /// Replaces the whole table.
    pub fn replace(&self, bindings: Vec<Binding>) {
        self.table.store(Arc::new(bindings.into_iter().map(|b| (b.surface.clone(), Arc::new(b))).collect()));
    }

    /// Replaces one surface's binding; requests in flight keep the one they loaded.
    pub fn set(&self, binding: Binding) {
        let binding = Arc::new(binding);
        self.table.rcu(|table| {
            let mut next = HashMap::clone(table);
            next.insert(binding.surface.clone(), binding.clone());
            next
        });
    }
}
