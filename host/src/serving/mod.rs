//! The serving pipeline: route → plan → arm → policy call → validate → fallback chain → shadow,
//! with no HTTP in it.
//!
//! A surface's [`Binding`] is one plan revision made ready to serve: each arm's loaded version,
//! parameters, pre-resolved metrics and health, the bucket → arm table, the shadows, the fallback
//! policy and the budget. [`Binding::decide`] answers one decoded request and returns a
//! [`Decision`]: the answer and everything that made it (plan revision, arm, bucket, version and
//! digest, fallback, timings). The HTTP handler, `relish rank` and the tools built on decisions
//! all use it; nothing else calls a policy on a request.
//!
//! The routing table ([`Router`]) is an immutable map from surface to binding, swapped
//! atomically ([`arc_swap`]) by the control plane ([`crate::control`]), its only writer: a
//! request loads the table once and finishes on the binding it saw. Nothing on the request path
//! takes a lock; shadows run off it (see [`shadow`]).

pub mod compare;
pub mod enrich;
pub mod health;
pub mod shadow;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use self::enrich::{FeatureReport, StoreFeatures};
use self::health::Health;
use self::shadow::ShadowStats;
use crate::control::plan::{self, Revision};
use crate::fallback::{self, INPUT_ORDER};
use crate::metrics::{BindingMetrics, Metrics};
use crate::runtime::{Budget, CallError, Contract, Digest, FeatureSpec, PolicyPre, Ranker, Ranking, types};
use crate::wire;

/// The reason of a call stopped at the caller's deadline (`grpc-timeout`) rather than its own.
pub const CALLER_DEADLINE: &str = "caller-deadline";

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
    /// The features it declares.
    pub features: Arc<[FeatureSpec]>,
    /// The contract version it was built against.
    pub contract: Contract,
}

impl Bound {
    /// Binds a loaded version.
    pub fn new(policy: Arc<PolicyPre>) -> Self {
        let metadata = policy.metadata();
        Bound {
            name: metadata.name.clone(),
            version: metadata.version.clone(),
            digest: policy.digest(),
            features: metadata.features.clone().into(),
            contract: policy.contract(),
            ranker: policy,
        }
    }
}

/// Limits the calls in flight on one surface (or its shadows). Shared by every binding of the
/// surface, so it survives plan changes.
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

    fn take(&self) -> bool {
        let mut current = self.inflight.load(Ordering::Relaxed);
        loop {
            if current >= self.max {
                return false;
            }
            match self.inflight.compare_exchange_weak(current, current + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    fn try_acquire(&self) -> Option<Permit<'_>> {
        self.take().then_some(Permit(self))
    }

    /// A permit that can move into another task.
    pub fn try_acquire_owned(self: &Arc<Self>) -> Option<OwnedPermit> {
        self.take().then(|| OwnedPermit(self.clone()))
    }
}

struct Permit<'a>(&'a Limiter);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Release);
    }
}

/// A [`Limiter`] slot held by a task of its own.
pub struct OwnedPermit(Arc<Limiter>);

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Release);
    }
}

/// One arm of the bound plan.
pub struct ArmBinding {
    /// The arm's name.
    pub name: String,
    /// Its version.
    pub bound: Bound,
    /// Its weight in basis points.
    pub weight: u16,
    /// The parameters its calls get, packed once when the plan is bound.
    pub params: types::Params,
    /// Pre-resolved metrics.
    pub metrics: BindingMetrics,
    /// Health tracking (for automatic rollback); `None` when it is off.
    pub health: Option<Arc<Health>>,
}

/// One shadow of the bound plan.
pub struct ShadowBinding {
    /// The shadow's name.
    pub name: String,
    /// Its version.
    pub bound: Bound,
    /// The parameters its calls get, packed once when the plan is bound.
    pub params: types::Params,
    /// Runs when the request's draw is below this (of 10,000).
    pub threshold: u32,
    /// What it did, by arm.
    pub stats: Arc<ShadowStats>,
}

/// Everything needed to answer one surface: a plan revision made ready to serve.
pub struct Binding {
    /// The surface.
    pub surface: String,
    /// The plan revision; 0 when the surface has no plan (answered by the fallback chain).
    pub revision: Revision,
    /// The plan's salt.
    pub salt: String,
    /// Bucket → arm index ([`plan::Plan::table`]); empty without a plan.
    pub table: Box<[u8]>,
    /// The arms, in plan order.
    pub arms: Vec<ArmBinding>,
    /// The shadows.
    pub shadows: Vec<ShadowBinding>,
    /// The fallback policy.
    pub fallback: Option<Bound>,
    /// The call budget.
    pub budget: Budget,
    /// The most candidates per request.
    pub max_candidates: usize,
    /// The per-surface concurrency limit.
    pub limiter: Option<Arc<Limiter>>,
    /// The surface's shadow concurrency limit.
    pub shadow_limiter: Arc<Limiter>,
    /// Metrics of answers given without a plan (`metrics.binding(surface, "none", "none", "none")`).
    pub unplanned: BindingMetrics,
    /// Where features missing from the body come from; `None`: only the body.
    pub features: Option<Arc<StoreFeatures>>,
    /// The decision log's sampling and masking; `None`: not logged.
    pub log: Option<Arc<crate::decisions::LogSettings>>,
}

/// Which arm a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// The arm's index; `None` without a plan.
    pub arm: Option<usize>,
    /// The request's bucket, `0..10_000`.
    pub bucket: u16,
    /// Whether the bucket came from a key (`user.id` or `bucket_key`), so the same key gets the
    /// same arm on every request; `false` when it came from the request's seed.
    pub sticky: bool,
}

/// Why an answer did not come from the arm's policy.
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

/// One answered request and everything that made the answer.
pub struct Decision {
    /// The binding that answered: surface, plan revision, arms, fallback, budget.
    pub binding: Arc<Binding>,
    /// The arm and bucket.
    pub assignment: Assignment,
    /// The validated answer.
    pub ranking: Ranking,
    /// Set when a fallback answered.
    pub failure: Option<Failure>,
    /// Time spent in policy calls, in microseconds.
    pub policy_us: u64,
    /// The request as the policy saw it.
    pub request: Arc<types::Request>,
    /// How many shadow calls were started for it.
    pub shadows: usize,
    /// What its shadows did, once they are done (see [`shadow::ShadowResults`]); `None` when it
    /// was sampled for none.
    pub shadow_results: Option<Arc<shadow::ShadowResults>>,
    /// What the feature lookup before the call did, when the surface uses a store.
    pub features: Option<FeatureReport>,
}

impl Decision {
    /// The arm that was asked to answer.
    pub fn arm(&self) -> Option<&ArmBinding> {
        self.binding.arms.get(self.assignment.arm?)
    }

    /// The response to send, `took_us` after the request arrived.
    pub fn response(&self, took_us: u64) -> wire::Response<'_, FeatureReport> {
        let arm = self.arm();
        wire::Response {
            request_id: &self.request.request_id,
            items: self.ranking.items(&self.request.candidates.ids),
            policy: arm.map(|a| wire::PolicyRef {
                name: &a.bound.name,
                version: &a.bound.version,
                digest: &a.bound.digest.0,
            }),
            arm: arm.map(|a| wire::ArmRef {
                index: self.assignment.arm.unwrap_or_default(),
                name: &a.name,
                revision: self.binding.revision,
                bucket: self.assignment.bucket,
                sticky: self.assignment.sticky,
            }),
            fallback: self.failure.as_ref().map(|f| wire::Fallback {
                reason: f.reason,
                answered_by: &f.answered_by,
                detail: &f.detail,
                fallback_reason: f.fallback_failure.as_ref().map(|(reason, _)| *reason),
                fallback_detail: f.fallback_failure.as_ref().map(|(_, detail)| detail.as_str()),
            }),
            features: self.features.as_ref(),
            took_us,
        }
    }
}

impl Binding {
    /// The arm a request goes to: by the bucket of its key, else of its seed.
    pub fn assign(&self, key: Option<&str>, seed: u64) -> Assignment {
        let (bucket, sticky) = match key {
            Some(key) => (plan::bucket(&self.salt, &self.surface, key), true),
            None => (plan::seed_bucket(seed), false),
        };
        let arm = self.table.get(usize::from(bucket)).map(|&index| usize::from(index)).filter(|&i| i < self.arms.len());
        Assignment { arm, bucket, sticky }
    }

    /// Answers a request: the arm its key is assigned to, else the fallback policy, else the
    /// input order; then starts the shadows it is sampled for. Never fails; every fallback is
    /// counted and logged.
    pub fn decide(self: &Arc<Self>, request: types::Request, key: Option<&str>, metrics: &Arc<Metrics>) -> Decision {
        self.decide_until(request, key, metrics, None)
    }

    /// [`Binding::decide`] for a caller that gives up at `until` (a gRPC call's `grpc-timeout`):
    /// each policy call gets the surface's deadline or what is left before `until`, whichever
    /// is shorter. A call stopped at the caller's deadline answers with the fallback (reason
    /// `caller-deadline`) and does not count toward automatic rollback: the policy may have been
    /// well within its own deadline. When nothing is left, no policy is called: input order.
    pub fn decide_until(
        self: &Arc<Self>,
        mut request: types::Request,
        key: Option<&str>,
        metrics: &Arc<Metrics>,
        until: Option<Instant>,
    ) -> Decision {
        let started = Instant::now();
        let assignment = self.assign(key, request.seed);
        let arm = assignment.arm.map(|index| &self.arms[index]);
        if let Some(arm) = arm {
            request.params.clone_from(&arm.params);
        }
        let result = match arm {
            Some(arm) => self.call(arm, &request, metrics, until),
            None => Err(("no-policy", format!("no plan serves surface `{}`", self.surface))),
        };
        let (ranking, failure) = match result {
            Ok(ranking) => {
                let elapsed = started.elapsed();
                let arm_metrics = arm.map_or(&self.unplanned, |a| &a.metrics);
                arm_metrics.policy_seconds.observe(elapsed.as_secs_f64());
                arm_metrics.answered.inc();
                (ranking, None)
            }
            Err((reason, detail)) => {
                let (ranking, failure) =
                    self.fall_back(&mut request, reason, detail, arm.map(|a| a.bound.digest), metrics, until);
                let (name, policy, version) = arm.map_or(("none", "none", "none"), |a| {
                    (a.name.as_str(), a.bound.name.as_str(), a.bound.version.as_str())
                });
                metrics.fallback(&self.surface, name, policy, version, reason, &failure.answered_by);
                tracing::warn!(
                    surface = %self.surface,
                    revision = self.revision,
                    arm = name,
                    reason,
                    answered_by = %failure.answered_by,
                    "answered by fallback: {}",
                    failure.detail
                );
                (ranking, Some(failure))
            }
        };
        let policy_us = started.elapsed().as_micros() as u64;
        // The fallback ran with its own defaults: the decision keeps the arm's parameters.
        if let Some(arm) = arm
            && failure.is_some()
        {
            request.params.clone_from(&arm.params);
        }
        let request = Arc::new(request);
        let mut shadows = 0;
        let mut shadow_results = None;
        if let Some(arm) = arm {
            for (index, shadow) in self.shadows.iter().enumerate() {
                if plan::sampled(request.seed, index, shadow.threshold) {
                    let results = shadow_results.get_or_insert_with(Default::default);
                    if shadow::dispatch(self, index, &arm.name, &request, ranking.order(), metrics, results) {
                        shadows += 1;
                    }
                }
            }
        }
        Decision {
            binding: self.clone(),
            assignment,
            ranking,
            failure,
            policy_us,
            request,
            shadows,
            shadow_results,
            features: None,
        }
    }

    fn call(
        &self,
        arm: &ArmBinding,
        request: &types::Request,
        metrics: &Metrics,
        until: Option<Instant>,
    ) -> Result<Ranking, (&'static str, String)> {
        let _permit = match &self.limiter {
            Some(limiter) => Some(limiter.try_acquire().ok_or_else(|| {
                ("overloaded", format!("surface `{}` has {} calls in flight, its limit", self.surface, limiter.max))
            })?),
            None => None,
        };
        let cut = self.cut(until)?;
        let result = arm.bound.ranker.rank(request, cut.as_ref().unwrap_or(&self.budget));
        let by_caller = result.as_ref().is_err_and(|error| self.by_caller(cut.as_ref(), error));
        if let Some(health) = &arm.health {
            // A full instance pool or a preempted thread is the host's problem, not the
            // revision's, and a call stopped at the caller's deadline was maybe well within its
            // own: neither counts.
            if !by_caller && result.as_ref().err().is_none_or(CallError::is_policy_fault) {
                health.record(result.is_ok());
            }
        }
        result.map_err(|error: CallError| {
            let (reason, detail) = self.failure(cut.as_ref(), &error);
            metrics.policy_error(&arm.bound.name, &arm.bound.version, reason);
            (reason, detail)
        })
    }

    /// The budget of a call for a caller that gives up at `until`, if that is before the
    /// surface's deadline and grace would end: the CPU deadline at most what is left, and the
    /// wall-clock limit at `until` (past it, an answer is of no use to the caller). An error when
    /// nothing is left.
    fn cut(&self, until: Option<Instant>) -> Result<Option<Budget>, (&'static str, String)> {
        let Some(until) = until else { return Ok(None) };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((CALLER_DEADLINE, "the caller's deadline (grpc-timeout) passed before the call".to_owned()));
        }
        let longest = self.budget.deadline + self.budget.preemption_grace.unwrap_or(self.budget.deadline);
        Ok((left < longest).then(|| Budget {
            deadline: left.min(self.budget.deadline),
            preemption_grace: Some(left.saturating_sub(self.budget.deadline)),
            ..self.budget.clone()
        }))
    }

    /// Whether a call of budget `cut` (from [`Binding::cut`]) that failed with `error` was
    /// stopped by the caller's deadline: when it cut the surface's own. A call that ran past
    /// the surface's deadline on its CPU clock is the policy's fault whatever the caller gave.
    fn by_caller(&self, cut: Option<&Budget>, error: &CallError) -> bool {
        cut.is_some_and(|cut| cut.deadline < self.budget.deadline) && error.is_deadline()
    }

    /// The reason and detail of a call of budget `cut` (from [`Binding::cut`]) that failed with
    /// `error`: `caller-deadline` when the caller's deadline stopped it, else the error's own.
    fn failure(&self, cut: Option<&Budget>, error: &CallError) -> (&'static str, String) {
        match cut {
            Some(cut) if self.by_caller(Some(cut), error) => {
                let detail = format!(
                    "stopped at the caller's deadline (grpc-timeout), {:?} into the call, before the surface's own \
                     deadline of {:?}: {error}",
                    cut.deadline + cut.preemption_grace.unwrap_or_default(),
                    self.budget.deadline
                );
                (CALLER_DEADLINE, detail)
            }
            _ => (error.reason(), error.to_string()),
        }
    }

    /// The fallback chain after the arm failed: the fallback policy, else the input order.
    fn fall_back(
        &self,
        request: &mut types::Request,
        reason: &'static str,
        detail: String,
        failed: Option<Digest>,
        metrics: &Metrics,
        until: Option<Instant>,
    ) -> (Ranking, Failure) {
        // The fallback runs with its own defaults, not the arm's parameters.
        request.params = types::Params::empty();
        let mut fallback_failure = None;
        // A version is no fallback for itself: it would fail the same way again.
        let fallback = self.fallback.as_ref().filter(|f| Some(f.digest) != failed);
        let ranked = fallback.map(|fallback| {
            let cut = self.cut(until)?;
            let result = fallback.ranker.rank(request, cut.as_ref().unwrap_or(&self.budget));
            result.map_err(|error| {
                let (reason, detail) = self.failure(cut.as_ref(), &error);
                metrics.policy_error(&fallback.name, &fallback.version, reason);
                (reason, detail)
            })
        });
        let (ranking, answered_by) = match (fallback, ranked) {
            (Some(fallback), Some(Ok(ranking))) => (ranking, fallback.name.clone()),
            (Some(fallback), Some(Err((reason, detail)))) => {
                if reason == CALLER_DEADLINE {
                    tracing::warn!(surface = %self.surface, fallback = %fallback.name, reason, "{detail}; answering in input order");
                } else {
                    tracing::error!(
                        surface = %self.surface,
                        fallback = %fallback.name,
                        reason,
                        "the fallback policy failed too: {detail}; answering in input order"
                    );
                }
                fallback_failure = Some((reason, detail));
                (fallback::input_order(request), INPUT_ORDER.to_owned())
            }
            _ => (fallback::input_order(request), INPUT_ORDER.to_owned()),
        };
        (ranking, Failure { reason, answered_by, detail, fallback_failure })
    }

    /// A binding of one loaded version as a one-arm plan, without fallback, health or shadows:
    /// what `relish rank` answers with.
    pub fn single(
        surface: &str,
        policy: Arc<PolicyPre>,
        params: Vec<(String, String)>,
        budget: Budget,
        metrics: &Metrics,
    ) -> Self {
        let bound = Bound::new(policy);
        let name = format!("{}@{}", bound.name, bound.version);
        let arm = ArmBinding {
            metrics: metrics.binding(surface, &name, &bound.name, &bound.version),
            name,
            bound,
            weight: plan::BUCKETS,
            params: params.iter().map(|(k, v)| (k, v)).collect(),
            health: None,
        };
        Binding {
            unplanned: metrics.binding(surface, "none", "none", "none"),
            surface: surface.to_owned(),
            revision: 0,
            salt: String::new(),
            table: vec![0; usize::from(plan::BUCKETS)].into_boxed_slice(),
            arms: vec![arm],
            shadows: Vec::new(),
            fallback: None,
            max_candidates: usize::MAX,
            limiter: None,
            shadow_limiter: Arc::new(Limiter::new(1)),
            budget,
            features: None,
            log: None,
        }
    }

    /// The longest a decision may hold its thread on the wall clock: the arm's call to its
    /// deadline plus the preemption grace, and as long again for the fallback policy's.
    pub fn longest_decision(&self) -> Duration {
        let call = self.budget.deadline + self.budget.preemption_grace.unwrap_or(self.budget.deadline);
        if self.fallback.is_some() { call * 2 } else { call }
    }

    /// `policy@version` of every arm, in plan order.
    pub fn arm_versions(&self) -> Vec<String> {
        self.arms.iter().map(|a| format!("{}@{}", a.bound.name, a.bound.version)).collect()
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

    /// Replaces the whole table. Only the control plane calls this.
    pub(crate) fn replace(&self, bindings: Vec<Binding>) {
        self.table.store(Arc::new(bindings.into_iter().map(|b| (b.surface.clone(), Arc::new(b))).collect()));
    }

    /// Replaces one surface's binding; requests in flight keep the one they loaded. Only the
    /// control plane calls this.
    pub(crate) fn set(&self, binding: Binding) {
        let binding = Arc::new(binding);
        self.table.rcu(|table| {
            let mut next = HashMap::clone(table);
            next.insert(binding.surface.clone(), binding.clone());
            next
        });
    }
}
