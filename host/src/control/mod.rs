//! The control plane: every change of what serves a surface, in one place.
//!
//! A change is a value ([`Change`]): setting a plan (the admin API's `PUT .../plan`, an
//! activation, which is a one-arm plan), seeding a surface from configuration at startup, a
//! rollback, an arm found failing by automatic rollback, deleting a version. [`Control::apply`]
//! takes one at a time (serialised by one lock): it validates the change against the registry
//! and the surface's settings, writes the registry (a new plan revision, compare-and-swap on the
//! surface's latest revision), rebinds the surface in the routing table, and returns the new
//! revision. No other code writes the registry's plans or the routing table, so the two never
//! disagree; the admin API, the configuration, automatic rollback (and a fleet, later) are its
//! callers.

pub mod plan;
pub mod probe;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::{Context as _, anyhow};
use serde::Deserialize;
use tokio::sync::mpsc::UnboundedSender;

use self::plan::{Arm, BUCKETS, MAX_ARMS, MAX_SHADOWS, Plan, Revision, Shadow};
use crate::features::Features;
use crate::metrics::Metrics;
use crate::registry::{self, NewRevision, PlanRevision, Registry, VersionInfo};
use crate::runtime::{Digest, PolicyPre, Ranker, is_identifier, mib};
use crate::server::config::{Config, PolicyRef, ResolvedSurface};
use crate::serving::enrich::StoreFeatures;
use crate::serving::health::{Alarm, Health};
use crate::serving::shadow::ShadowStats;
use crate::serving::{ArmBinding, Binding, Bound, Limiter, Router, ShadowBinding};

/// An arm of a plan as a change gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    /// The arm's name; `policy@version` if absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Policy name.
    pub policy: String,
    /// Version.
    pub version: String,
    /// Basis points (the arms add up to 10,000) or percent (they add up to 100).
    pub weight: f64,
    /// Parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// A shadow of a plan as a change gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    /// The shadow's name; `policy@version` if absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Policy name.
    pub policy: String,
    /// Version.
    pub version: String,
    /// The share of requests it runs on, `0 < sample <= 1`; 1 if absent.
    #[serde(default = "one")]
    pub sample: f64,
    /// Parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

fn one() -> f64 {
    1.0
}

/// A plan as a change gives it: the control plane checks it, and assigns the buckets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// The arms, in order; the first is the control arm.
    pub arms: Vec<ArmSpec>,
    /// The salt; the current plan's if absent.
    #[serde(default)]
    pub salt: Option<String>,
    /// The shadows.
    #[serde(default)]
    pub shadow: Vec<ShadowSpec>,
}

impl PlanSpec {
    /// A one-arm plan: what an activation is.
    pub fn single(policy: &str, version: &str, params: BTreeMap<String, String>) -> Self {
        let arm = ArmSpec {
            name: None,
            policy: policy.to_owned(),
            version: version.to_owned(),
            weight: f64::from(BUCKETS),
            params,
        };
        PlanSpec { arms: vec![arm], salt: None, shadow: Vec::new() }
    }
}

/// A change of what serves a surface.
#[derive(Debug, Clone)]
pub enum Change {
    /// Serve `surface` with a plan. With `expected_revision`, refused if the surface's latest
    /// revision is another (compare-and-swap).
    SetPlan {
        /// The surface.
        surface: String,
        /// The plan.
        plan: PlanSpec,
        /// The revision the caller read.
        expected_revision: Option<Revision>,
        /// Who.
        actor: String,
        /// Why.
        reason: Option<String>,
    },
    /// Serve `surface` with a plan only if it has none (configuration at startup).
    Seed {
        /// The surface.
        surface: String,
        /// The plan.
        plan: PlanSpec,
    },
    /// Return `surface` to the plan before its current one.
    Rollback {
        /// The surface.
        surface: String,
        /// Who.
        actor: String,
        /// Why.
        reason: String,
    },
    /// An arm of a revision keeps failing (automatic rollback): take it out of the plan, or roll
    /// a plan with no other arm back to the previous healthy revision. Ignored if the surface
    /// has moved on from `revision`.
    ArmFailed {
        /// The surface.
        surface: String,
        /// The revision the alarm is about.
        revision: Revision,
        /// The arm.
        arm: String,
        /// The failure rate, in words.
        reason: String,
    },
    /// A plan revision another host of the fleet decided (or this one, delivered back by the
    /// fleet): stored under its own revision number, after checking that its versions are stored
    /// with the digests it names and fit this host's settings. Already applied: nothing done.
    Replicate(Box<NewRevision>),
    /// Delete a stored version that no current plan calls and no surface falls back to.
    DeleteVersion {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
        /// Who.
        actor: String,
        /// Set for a token limited to some surfaces: it may delete only the versions it uploaded.
        own_only: bool,
    },
}

/// What a change did.
#[derive(Debug, Clone)]
pub enum Applied {
    /// The surface's current plan revision; `changed` is false when the change asked for what
    /// already served (nothing was written).
    Plan {
        /// The revision.
        revision: PlanRevision,
        /// Whether a new revision was written.
        changed: bool,
    },
    /// The deleted version.
    Deleted(VersionInfo),
    /// An alarm about a revision that no longer serves: nothing done.
    Ignored,
}

/// What a change comes to, decided but not yet done: [`Control::apply`] does it; a fleet host
/// writes it to the fleet instead, and every host applies it when the fleet delivers it.
#[derive(Debug, Clone)]
pub enum Decided {
    /// A new plan revision.
    Plan(NewRevision),
    /// Delete a version.
    Delete {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
    },
    /// Nothing to do: what the change asked for holds already.
    Nothing(Applied),
}

/// Why a change was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// A field of the change is wrong: `422`, naming the field (`arms[1].weight`).
    #[error("{field}: {message}")]
    Invalid {
        /// The field path in the change's JSON form.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A version the change names is not stored: `404`, naming the field.
    #[error("{field}: {message}")]
    UnknownVersion {
        /// The field path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The actor may not make this change: `403`.
    #[error("{0}")]
    Forbidden(String),
    /// The change conflicts with what the host holds: `409`.
    #[error("{0}")]
    Conflict(String),
    /// The registry refused it (its own status).
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// The host's own trouble: `500`.
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl ChangeError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ChangeError::Invalid { .. } => 422,
            ChangeError::UnknownVersion { .. } => 404,
            ChangeError::Forbidden(_) => 403,
            ChangeError::Conflict(_) => 409,
            ChangeError::Registry(error) => error.status(),
            ChangeError::Internal(_) => 500,
        }
    }

    /// The field it names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ChangeError::Invalid { field, .. } | ChangeError::UnknownVersion { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The current revision, for a compare-and-swap conflict.
    pub fn current_revision(&self) -> Option<Revision> {
        match self {
            ChangeError::Registry(registry::Error::RevisionConflict { current, .. }) => Some(*current),
            _ => None,
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ChangeError {
    ChangeError::Invalid { field: field.into(), message: message.into() }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the control plane needs besides the registry: the configuration (surface settings and
/// fallbacks), the routing table it writes, the metrics it resolves, and where health alarms go.
pub struct ControlParts {
    /// The configuration.
    pub config: Config,
    /// The registry.
    pub registry: Arc<Registry>,
    /// The routing table.
    pub router: Arc<Router>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where arms' health alarms go.
    pub alarms: UnboundedSender<Alarm>,
    /// Native stand-ins by policy name: the load benchmark's baseline only.
    pub natives: HashMap<String, Arc<dyn Ranker>>,
    /// The feature stores, by name.
    pub stores: HashMap<String, Arc<Features>>,
}

/// The control plane of one host. See the [module documentation](self).
pub struct Control {
    config: Config,
    registry: Arc<Registry>,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    alarms: UnboundedSender<Alarm>,
    natives: HashMap<String, Arc<dyn Ranker>>,
    stores: HashMap<String, Arc<Features>>,
    /// Fallback policies by reference (`name` or `name@version`), resolved once and kept: an
    /// upload or a delete later never changes which version answers as a surface's fallback.
    fallbacks: Mutex<HashMap<String, Arc<PolicyPre>>>,
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
    shadow_limiters: Mutex<HashMap<String, Arc<Limiter>>>,
    shadow_stats: Mutex<HashMap<(String, String, Digest), Arc<ShadowStats>>>,
    /// Held across every change.
    changes: Mutex<()>,
}

impl Control {
    /// A control plane over `parts.registry`, writing `parts.router`. Binds nothing yet: see
    /// [`Control::bind_all`].
    pub fn new(parts: ControlParts) -> Self {
        Control {
            config: parts.config,
            registry: parts.registry,
            router: parts.router,
            metrics: parts.metrics,
            alarms: parts.alarms,
            natives: parts.natives,
            stores: parts.stores,
            fallbacks: Mutex::new(HashMap::new()),
            limiters: Mutex::new(HashMap::new()),
            shadow_limiters: Mutex::new(HashMap::new()),
            shadow_stats: Mutex::new(HashMap::new()),
            changes: Mutex::new(()),
        }
    }

    /// The registry (for reading).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The resolved settings of a surface: configured, or defaults for a surface that exists only
    /// in the registry.
    pub fn settings(&self, surface: &str) -> ResolvedSurface {
        self.config
            .surfaces()
            .into_iter()
            .find(|s| s.name == surface)
            .unwrap_or_else(|| self.config.resolve(surface, None))
    }

    /// Applies one change (see the [module documentation](self)). Blocks on file I/O and may load
    /// versions: call it from a blocking context.
    pub fn apply(&self, change: Change) -> Result<Applied, ChangeError> {
        let _serialised = lock(&self.changes);
        match self.decide_locked(change)? {
            Decided::Plan(new) => self.commit(new),
            Decided::Delete { policy, version } => {
                Ok(Applied::Deleted(self.registry.delete_version(&policy, &version)?))
            }
            Decided::Nothing(applied) => Ok(applied),
        }
    }

    /// Decides what a change comes to, changing nothing: validation, buckets, rollback targets,
    /// exactly as [`Control::apply`] would do them now.
    pub fn decide(&self, change: Change) -> Result<Decided, ChangeError> {
        let _serialised = lock(&self.changes);
        self.decide_locked(change)
    }

    fn decide_locked(&self, change: Change) -> Result<Decided, ChangeError> {
        match change {
            Change::SetPlan { surface, plan, expected_revision, actor, reason } => {
                self.set_plan(&surface, &plan, expected_revision, &actor, reason)
            }
            Change::Seed { surface, plan } => {
                if let Some(current) = self.current(&surface)? {
                    return Ok(Decided::Nothing(Applied::Plan { revision: current, changed: false }));
                }
                self.set_plan(&surface, &plan, None, "config", Some("configured".to_owned()))
            }
            Change::Rollback { surface, actor, reason } => self.rollback(&surface, &actor, reason, None),
            Change::ArmFailed { surface, revision, arm, reason } => self.arm_failed(&surface, revision, &arm, reason),
            Change::Replicate(new) => self.replicate(*new),
            Change::DeleteVersion { policy, version, actor, own_only } => {
                self.delete_version(&policy, &version, &actor, own_only)
            }
        }
    }

    fn current(&self, surface: &str) -> Result<Option<PlanRevision>, ChangeError> {
        if !is_identifier(surface) {
            return Err(
                registry::Error::InvalidName { kind: registry::NameKind::Surface, value: surface.to_owned() }.into()
            );
        }
        Ok(self.registry.surface(surface).ok().and_then(|s| s.current().cloned()))
    }

    /// The surface's latest plan revision (0 without a plan).
    pub fn latest(&self, surface: &str) -> Revision {
        self.registry.surface(surface).map_or(0, |s| s.revision())
    }

    fn set_plan(
        &self,
        surface: &str,
        spec: &PlanSpec,
        expected: Option<Revision>,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Decided, ChangeError> {
        let current = self.current(surface)?;
        let latest = self.latest(surface);
        if let Some(expected) = expected
            && expected != latest
        {
            return Err(
                registry::Error::RevisionConflict { surface: surface.to_owned(), expected, current: latest }.into()
            );
        }
        if let Some(reason) = &reason
            && reason.len() > 1024
        {
            return Err(invalid("reason", "is longer than 1024 bytes"));
        }
        let plan = self.build(surface, spec, current.as_ref().map(|c| &c.plan))?;
        if let Some(current) = current
            && current.plan == plan
        {
            return Ok(Decided::Nothing(Applied::Plan { revision: current, changed: false }));
        }
        Ok(Decided::Plan(NewRevision {
            surface: surface.to_owned(),
            expected: latest,
            plan,
            actor: actor.to_owned(),
            reason,
            restores: None,
            rolled_back: None,
            failed: None,
            revision: None,
            at: None,
        }))
    }

    fn commit(&self, new: NewRevision) -> Result<Applied, ChangeError> {
        let surface = new.surface.clone();
        let failed = new.failed.clone();
        let revision = self.registry.commit(new)?;
        self.rebind(&surface).map_err(ChangeError::Internal)?;
        let arms: Vec<String> = revision.plan.arms.iter().map(|a| format!("{}={}", a.name, a.weight)).collect();
        tracing::info!(surface, revision = revision.revision, actor = %revision.actor, arms = %arms.join(" "), "plan changed");
        if let Some((arm, reason)) = failed {
            self.metrics.auto_rollback(&surface);
            tracing::error!(surface, to = revision.revision, arm, "automatic rollback: {reason}");
        }
        Ok(Applied::Plan { revision, changed: true })
    }

    fn rollback(
        &self,
        surface: &str,
        actor: &str,
        reason: String,
        failed: Option<(String, String)>,
    ) -> Result<Decided, ChangeError> {
        let automatic = failed.is_some();
        let record = self.registry.surface(surface)?;
        let no_target = || registry::Error::NoRollbackTarget { surface: surface.to_owned(), automatic };
        record.current().ok_or_else(no_target)?;
        let eligible = |r: &PlanRevision| {
            self.registry.holds(&r.plan)
                && !(automatic && r.failed.is_some())
                && self.plan_misfit(surface, &r.plan).is_none()
        };
        let target = record.rollback_target(eligible).ok_or_else(no_target)?;
        let plan = record.get(target).expect("a target in the history").plan.clone();
        Ok(Decided::Plan(NewRevision {
            surface: surface.to_owned(),
            expected: record.revision(),
            plan,
            actor: actor.to_owned(),
            reason: Some(reason),
            restores: Some(target),
            rolled_back: Some((actor.to_owned(), automatic)),
            failed,
            revision: None,
            at: None,
        }))
    }

    fn arm_failed(&self, surface: &str, revision: Revision, arm: &str, reason: String) -> Result<Decided, ChangeError> {
        let Some(current) = self.current(surface)?.filter(|c| c.revision == revision) else {
            return Ok(Decided::Nothing(Applied::Ignored));
        };
        let Some(failing) = current.arm(arm).cloned() else { return Ok(Decided::Nothing(Applied::Ignored)) };
        let others = current.plan.arms.iter().filter(|a| a.name != arm && a.weight > 0).count();
        if others > 0 {
            // Take the arm out: its buckets go to the first remaining arm (the control arm).
            let mut plan = current.plan.clone();
            plan.arms.retain(|a| a.name != arm);
            plan.arms[0].weight += failing.weight;
            plan.allocate(Some(&current.plan));
            Ok(Decided::Plan(NewRevision {
                surface: surface.to_owned(),
                expected: self.latest(surface),
                plan,
                actor: "relish".to_owned(),
                reason: Some(format!("arm `{arm}` ({}) taken out automatically: {reason}", failing.version_ref())),
                restores: None,
                rolled_back: None,
                failed: Some((arm.to_owned(), reason)),
                revision: None,
                at: None,
            }))
        } else {
            let why = format!("arm `{arm}` ({}) keeps failing: {reason}", failing.version_ref());
            self.rollback(surface, "relish", why, Some((arm.to_owned(), reason)))
        }
    }

    fn replicate(&self, mut new: NewRevision) -> Result<Decided, ChangeError> {
        let surface = new.surface.clone();
        self.current(&surface)?;
        let latest = self.latest(&surface);
        let number = new.revision.unwrap_or(latest + 1);
        if number <= latest {
            let record = self.registry.surface(&surface)?;
            // Delivered again (a restart resumes its watch a little early), or this host's own
            // plan published to the fleet when it joined: nothing to do.
            let same = record
                .get(number)
                .filter(|r| r.plan == new.plan)
                .or_else(|| record.current().filter(|r| r.plan == new.plan));
            if let Some(applied) = same {
                let applied = applied.clone();
                return Ok(Decided::Nothing(Applied::Plan { revision: applied, changed: false }));
            }
            // This host's own history went further than the fleet's (it served on its own before
            // it joined): keep it, and store the fleet's plan after it.
            tracing::warn!(
                surface,
                fleet = number,
                local = latest,
                "this host's plan history diverged from the fleet's; the fleet's plan is stored as revision {}",
                latest + 1
            );
            new.revision = Some(latest + 1);
        }
        for (index, (policy, version, digest)) in new.plan.versions().enumerate() {
            match self.registry.version(policy, version) {
                Ok(info) if info.digest == digest => {}
                Ok(info) => {
                    return Err(ChangeError::Conflict(format!(
                        "the plan names {policy}@{version} with {digest}, but this host stores it with {}",
                        info.digest
                    )));
                }
                Err(_) => {
                    return Err(ChangeError::UnknownVersion {
                        field: format!("plan.versions[{index}]"),
                        message: format!("{policy}@{version} ({digest}) is not stored on this host"),
                    });
                }
            }
        }
        if let Some(misfit) = self.plan_misfit(&surface, &new.plan) {
            return Err(invalid("plan", misfit));
        }
        new.expected = latest;
        Ok(Decided::Plan(new))
    }

    fn delete_version(&self, policy: &str, version: &str, actor: &str, own_only: bool) -> Result<Decided, ChangeError> {
        let info = self.registry.version(policy, version)?;
        if own_only && info.uploaded_by != actor {
            return Err(ChangeError::Forbidden(format!(
                "token `{actor}` is limited to some surfaces and may delete only versions it uploaded; \
                 {policy}@{version} was uploaded by `{}`",
                info.uploaded_by
            )));
        }
        if self.is_fallback(policy, version) {
            return Err(ChangeError::Conflict(format!(
                "{policy}@{version} answers as a fallback policy on this host; it stays stored while the host runs \
                 (change `fallback` in the configuration and restart to release it)"
            )));
        }
        let surfaces = self.registry.active_on(policy, version);
        if !surfaces.is_empty() {
            return Err(registry::Error::VersionActive {
                policy: policy.to_owned(),
                version: version.to_owned(),
                surfaces,
            }
            .into());
        }
        Ok(Decided::Delete { policy: policy.to_owned(), version: version.to_owned() })
    }

    /// Whether `policy@version` answers as some surface's fallback (and must stay stored).
    pub fn is_fallback(&self, policy: &str, version: &str) -> bool {
        let pinned = lock(&self.fallbacks);
        pinned.values().any(|p| (p.metadata().name.as_str(), p.metadata().version.as_str()) == (policy, version))
    }

    /// Checks a plan as given against the registry and the surface, and assigns its buckets.
    fn build(&self, surface: &str, spec: &PlanSpec, previous: Option<&Plan>) -> Result<Plan, ChangeError> {
        if spec.arms.is_empty() || spec.arms.len() > MAX_ARMS {
            return Err(invalid("arms", format!("a plan has 1 to {MAX_ARMS} arms, this one has {}", spec.arms.len())));
        }
        if spec.shadow.len() > MAX_SHADOWS {
            return Err(invalid(
                "shadow",
                format!("a plan has at most {MAX_SHADOWS} shadows, this one has {}", spec.shadow.len()),
            ));
        }
        let weights: Vec<f64> = spec.arms.iter().map(|a| a.weight).collect();
        let weights = plan::basis_points(&weights).map_err(|message| invalid("arms[].weight", message))?;
        let salt = match &spec.salt {
            Some(salt) if salt.len() > 128 || salt.chars().any(char::is_control) => {
                return Err(invalid("salt", "must be at most 128 bytes without control characters"));
            }
            Some(salt) => salt.clone(),
            None => previous.map(|p| p.salt.clone()).unwrap_or_default(),
        };
        let mut arms: Vec<Arm> = Vec::with_capacity(spec.arms.len());
        for (index, (arm, weight)) in spec.arms.iter().zip(weights).enumerate() {
            let field = format!("arms[{index}]");
            let name = arm.name.clone().unwrap_or_else(|| format!("{}@{}", arm.policy, arm.version));
            check_arm_name(&format!("{field}.name"), &name)?;
            if let Some(first) = arms.iter().position(|a| a.name == name) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!(
                        "arm `{name}` is given twice (arms[{first}] and arms[{index}]): give arms of one version with \
                         different parameters each a `name`"
                    ),
                ));
            }
            let info = self.check_version(surface, &field, &arm.policy, &arm.version, &arm.params)?;
            arms.push(Arm {
                name,
                policy: arm.policy.clone(),
                version: arm.version.clone(),
                digest: info.digest,
                weight,
                params: arm.params.clone(),
                buckets: Vec::new(),
            });
        }
        let mut shadows: Vec<Shadow> = Vec::with_capacity(spec.shadow.len());
        for (index, shadow) in spec.shadow.iter().enumerate() {
            let field = format!("shadow[{index}]");
            if !(shadow.sample > 0.0 && shadow.sample <= 1.0) {
                return Err(invalid(
                    format!("{field}.sample"),
                    format!("{} is not a share of requests: use a number in (0, 1], for example 0.1", shadow.sample),
                ));
            }
            let name = shadow.name.clone().unwrap_or_else(|| format!("{}@{}", shadow.policy, shadow.version));
            check_arm_name(&format!("{field}.name"), &name)?;
            if shadows.iter().any(|s| s.name == name) {
                return Err(invalid(format!("{field}.name"), format!("shadow `{name}` is given twice")));
            }
            let info = self.check_version(surface, &field, &shadow.policy, &shadow.version, &shadow.params)?;
            shadows.push(Shadow {
                name,
                policy: shadow.policy.clone(),
                version: shadow.version.clone(),
                digest: info.digest,
                sample: shadow.sample,
                params: shadow.params.clone(),
            });
        }
        let mut plan = Plan { arms, salt, shadows };
        plan.allocate(previous);
        Ok(plan)
    }

    /// Checks that `policy@version` may serve `surface` with `params`: stored, made for the
    /// surface, declaring every parameter, fitting the surface's memory, and accepting the
    /// parameters in the parameter check call ([`probe`]).
    fn check_version(
        &self,
        surface: &str,
        field: &str,
        policy: &str,
        version: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<VersionInfo, ChangeError> {
        let info = match self.registry.version(policy, version) {
            Ok(info) => info,
            Err(error @ registry::Error::UnknownVersion { .. }) => {
                return Err(ChangeError::UnknownVersion {
                    field: format!("{field}.version"),
                    message: error.to_string(),
                });
            }
            Err(error) => return Err(invalid(format!("{field}.policy"), error.to_string())),
        };
        let metadata = &info.metadata;
        if !metadata.supports(surface) {
            let error = registry::Error::UnsupportedSurface {
                policy: policy.to_owned(),
                version: version.to_owned(),
                surface: surface.to_owned(),
                supported: metadata.surfaces.clone(),
            };
            return Err(invalid(format!("{field}.policy"), error.to_string()));
        }
        for (key, value) in params {
            if !metadata.params.iter().any(|p| &p.name == key) {
                let error = registry::Error::UnknownParam {
                    policy: policy.to_owned(),
                    version: version.to_owned(),
                    param: key.clone(),
                    known: metadata.params.iter().map(|p| p.name.clone()).collect(),
                };
                return Err(invalid(format!("{field}.params.{key}"), error.to_string()));
            }
            if value.len() > 1024 || value.chars().any(char::is_control) {
                return Err(invalid(
                    format!("{field}.params.{key}"),
                    "must be at most 1024 bytes without control characters",
                ));
            }
        }
        let loaded = self.registry.policy(policy, version)?;
        if let Some(misfit) = self.misfit(surface, &loaded) {
            return Err(invalid(field, misfit));
        }
        let budget = self.settings(surface).budget;
        probe::check_params(&loaded, surface, params, &budget).map_err(|message| {
            invalid(format!("{field}.params"), format!("{policy}@{version} refuses its parameters: {message}"))
        })?;
        Ok(info)
    }

    /// Why `policy` cannot serve `surface` within the surface's budget, if it cannot: a version
    /// whose memory starts larger than the surface's memory cap would fail every call.
    pub fn misfit(&self, surface: &str, policy: &PolicyPre) -> Option<String> {
        let cap = self.settings(surface).budget.memory_bytes;
        let metadata = policy.metadata();
        (policy.declared_memory() > cap as u64).then(|| {
            format!(
                "`{}@{}` declares {} of initial linear memory, more than surface `{surface}`'s memory cap of {} \
                 (memory_mb): every call would fail",
                metadata.name,
                metadata.version,
                mib(policy.declared_memory()),
                mib(cap as u64),
            )
        })
    }

    /// The first version of `plan` that does not fit `surface`, in words.
    fn plan_misfit(&self, surface: &str, plan: &Plan) -> Option<String> {
        plan.versions().find_map(|(policy, version, _)| match self.registry.policy(policy, version) {
            Ok(loaded) => self.misfit(surface, &loaded),
            Err(error) => Some(error.to_string()),
        })
    }

    /// Binds every surface (configured ones and those only the registry knows), checking that
    /// every current plan fits its surface. Startup calls it once, after seeding.
    pub fn bind_all(&self) -> anyhow::Result<()> {
        let _serialised = lock(&self.changes);
        let surfaces = self.config.surfaces();
        let mut names: Vec<String> = surfaces.iter().map(|s| s.name.clone()).collect();
        for stored in self.registry.surfaces() {
            if !names.contains(&stored.name) {
                names.push(stored.name);
            }
        }
        let mut bindings = Vec::with_capacity(names.len());
        for name in &names {
            if let Some(current) = self.current(name).map_err(|e| anyhow!("{e}"))?
                && let Some(misfit) = self.plan_misfit(name, &current.plan)
            {
                anyhow::bail!(
                    "surfaces.{name}: the stored plan (revision {}) does not fit the surface: {misfit}; raise memory_mb, \
                     or roll the surface back with a host whose settings fit",
                    current.revision
                );
            }
            bindings.push(self.binding(&self.settings(name))?);
        }
        self.router.replace(bindings);
        Ok(())
    }

    /// Rebuilds one surface's binding from the registry.
    fn rebind(&self, surface: &str) -> anyhow::Result<()> {
        let binding = self.binding(&self.settings(surface))?;
        self.router.set(binding);
        Ok(())
    }

    /// The fallback policy a reference names: resolved the first time, the same version after.
    fn fallback(&self, reference: &PolicyRef) -> anyhow::Result<Arc<PolicyPre>> {
        let key = format!("{}@{}", reference.name, reference.version.as_deref().unwrap_or(""));
        let mut pinned = lock(&self.fallbacks);
        if let Some(policy) = pinned.get(&key) {
            return Ok(policy.clone());
        }
        let version = match &reference.version {
            Some(version) => version.clone(),
            None => self
                .registry
                .versions()
                .into_iter()
                .filter(|v| v.policy == reference.name)
                .max_by_key(|v| v.uploaded_at)
                .map(|v| v.version)
                .ok_or_else(|| anyhow!("no version of `{}` is stored", reference.name))?,
        };
        let policy = self.registry.policy(&reference.name, &version)?;
        pinned.insert(key, policy.clone());
        Ok(policy)
    }

    /// The native stand-in for a bound version, if one was given for its policy name.
    fn native(&self, bound: Bound) -> Bound {
        match self.natives.get(&bound.name) {
            Some(native) => Bound { ranker: native.clone(), ..bound },
            None => bound,
        }
    }

    fn limiter(map: &Mutex<HashMap<String, Arc<Limiter>>>, surface: &str, max: usize) -> Arc<Limiter> {
        let mut limiters = lock(map);
        let limiter = limiters.entry(surface.to_owned()).or_insert_with(|| Arc::new(Limiter::new(max)));
        if limiter.max() != max {
            *limiter = Arc::new(Limiter::new(max));
        }
        limiter.clone()
    }

    fn binding(&self, settings: &ResolvedSurface) -> anyhow::Result<Binding> {
        let surface = settings.name.as_str();
        let current = self.registry.surface(surface).ok().and_then(|s| s.current().cloned());
        let fallback = match &settings.fallback {
            Some(fallback) => Some(
                self.native(Bound::new(
                    self.fallback(fallback)
                        .with_context(|| format!("surface `{surface}`: fallback policy `{}`", fallback.name))?,
                )),
            ),
            None => None,
        };
        let (revision, salt, table) = match &current {
            Some(c) => (c.revision, c.plan.salt.clone(), c.plan.table()),
            None => (0, String::new(), Box::default()),
        };
        let mut arms = Vec::new();
        let mut shadows = Vec::new();
        if let Some(current) = &current {
            for arm in &current.plan.arms {
                let bound = self.native(Bound::new(self.registry.policy(&arm.policy, &arm.version)?));
                let health = settings
                    .health
                    .filter(|_| arm.weight > 0)
                    .map(|policy| Arc::new(Health::new(policy, surface, revision, &arm.name, self.alarms.clone())));
                arms.push(ArmBinding {
                    metrics: self.metrics.binding(surface, &arm.name, &arm.policy, &arm.version),
                    name: arm.name.clone(),
                    bound,
                    weight: arm.weight,
                    params: arm.params.iter().collect(),
                    health,
                });
            }
            let mut stats = lock(&self.shadow_stats);
            stats.retain(|(s, name, digest), _| {
                s != surface || current.plan.shadows.iter().any(|x| &x.name == name && x.digest == *digest)
            });
            for shadow in &current.plan.shadows {
                // On the shadow engine: shadow calls take their instances from a pool of their own.
                let policy = self.registry.policy(&shadow.policy, &shadow.version)?;
                let bound = self.native(Bound::new(
                    policy.for_shadows().with_context(|| format!("shadow `{}` of `{surface}`", shadow.name))?,
                ));
                let key = (surface.to_owned(), shadow.name.clone(), shadow.digest);
                shadows.push(ShadowBinding {
                    name: shadow.name.clone(),
                    bound,
                    params: shadow.params.iter().collect(),
                    threshold: shadow.threshold(),
                    stats: stats.entry(key).or_default().clone(),
                });
            }
        }
        let arm_labels: Vec<(&str, &str, &str)> =
            arms.iter().map(|a| (a.name.as_str(), a.bound.name.as_str(), a.bound.version.as_str())).collect();
        let shadow_names: Vec<&str> = shadows.iter().map(|s| s.name.as_str()).collect();
        self.metrics.retain(surface, &arm_labels, &shadow_names);
        let digests: Vec<String> = arms.iter().map(|a| a.bound.digest.to_string()).collect();
        let weighted: Vec<(&str, &str, &str, &str, u16)> = arms
            .iter()
            .zip(&digests)
            .map(|(a, d)| (a.name.as_str(), a.bound.name.as_str(), a.bound.version.as_str(), d.as_str(), a.weight))
            .collect();
        self.metrics.set_arms(surface, &weighted);
        self.metrics.set_revision(surface, revision);
        // One lookup serves the arm, the fallback and every shadow: the union of what they declare.
        let features = match &settings.features {
            Some(features) => {
                let store = self
                    .stores
                    .get(&features.store)
                    .with_context(|| format!("surface `{surface}`: no feature store `{}`", features.store))?;
                let declared = arms
                    .iter()
                    .map(|a| &a.bound)
                    .chain(shadows.iter().map(|s| &s.bound))
                    .chain(fallback.iter())
                    .flat_map(|b| b.features.iter());
                Some(Arc::new(StoreFeatures::new(features, store.clone(), declared)))
            }
            None => None,
        };
        Ok(Binding {
            log: settings.log.clone(),
            features,
            unplanned: self.metrics.binding(surface, "none", "none", "none"),
            surface: surface.to_owned(),
            revision,
            salt,
            table,
            arms,
            shadows,
            fallback,
            budget: settings.budget.clone(),
            max_candidates: settings.max_candidates,
            limiter: settings.max_concurrency.map(|max| Self::limiter(&self.limiters, surface, max)),
            shadow_limiter: Self::limiter(&self.shadow_limiters, surface, settings.shadow_concurrency),
        })
    }
}

/// Checks an arm or shadow name: 1 to 128 characters of `a-z A-Z 0-9 - _ . @`.
fn check_arm_name(field: &str, name: &str) -> Result<(), ChangeError> {
    let ok = (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("{name:?} is not a name: use 1 to 128 of a-z A-Z 0-9 - _ . @")))
    }
}
