//! The policy registry with real components: immutable versions, plan revisions and rollback
//! through the control plane, the crash-safe data directory, restart from cached artifacts.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use relish_host::control::plan::{Arm, Revision};
use relish_host::control::{Applied, ArmSpec, Change, ChangeError, Control, ControlParts, PlanSpec};
use relish_host::metrics::Metrics;
use relish_host::registry::{Ending, Error, NameKind, PlanRevision, Put, Registry, RegistryOptions};
use relish_host::runtime::{Budget, Digest, Runtime, RuntimeConfig};
use relish_host::server::config::Config;
use relish_host::serving::Router;
use relish_tests::{decode, fixture, guest_bytes, policy_bytes, runtime};
use tempfile::TempDir;

/// A runtime of the test's own, for counting its compiles: the shared one compiles for every
/// test running in parallel.
fn own_runtime() -> Arc<Runtime> {
    Runtime::new(RuntimeConfig { max_instances: 4, ..RuntimeConfig::default() }).expect("creating a runtime")
}

fn open_with(dir: &Path, runtime: Arc<Runtime>) -> Arc<Registry> {
    Arc::new(Registry::open(dir, runtime, RegistryOptions::default()).expect("opening the registry"))
}

fn open(dir: &Path) -> Arc<Registry> {
    open_with(dir, runtime())
}

/// The same component with a custom section appended: still valid, the same metadata, other bytes.
fn variant(bytes: &[u8]) -> Vec<u8> {
    let name = b"relish-test";
    let payload = [&[name.len() as u8][..], name, b"variant"].concat();
    [bytes, &[0, payload.len() as u8], &payload].concat()
}

/// A call budget that a loaded test machine does not run out of: these tests are about which
/// version answers, not how fast.
fn patient() -> Budget {
    Budget { deadline: Duration::from_secs(10), ..Budget::default() }
}

/// An empty registry in a new directory, on the shared runtime.
fn empty() -> (TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    (dir, registry)
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The control plane over `registry`, with the routing table it writes. No fallback policy: these
/// tests are about what the plans say, and a fallback would pin a version (and need one stored).
fn control_with_router(registry: &Arc<Registry>) -> (Control, Arc<Router>) {
    let router = Arc::new(Router::default());
    let config = Config::from_toml("[defaults]\nfallback = \"none\"").expect("the test configuration");
    let parts = ControlParts {
        config,
        registry: registry.clone(),
        router: router.clone(),
        metrics: Arc::new(Metrics::new()),
        alarms: tokio::sync::mpsc::unbounded_channel().0,
        natives: HashMap::new(),
        stores: HashMap::new(),
    };
    (Control::new(parts), router)
}

fn control(registry: &Arc<Registry>) -> Control {
    control_with_router(registry).0
}

/// The revision a plan change left current, and whether it wrote it.
fn applied(result: Result<Applied, ChangeError>) -> Result<(PlanRevision, bool), ChangeError> {
    match result? {
        Applied::Plan { revision, changed } => Ok((revision, changed)),
        other => panic!("a plan change, not {other:?}"),
    }
}

/// Activates `policy@version` on `surface` (a one-arm plan) as `actor`.
fn activate_as(
    control: &Control,
    actor: &str,
    surface: &str,
    policy: &str,
    version: &str,
    pairs: &[(&str, &str)],
) -> Result<(PlanRevision, bool), ChangeError> {
    applied(control.apply(Change::SetPlan {
        surface: surface.to_owned(),
        plan: PlanSpec::single(policy, version, params(pairs)),
        expected_revision: None,
        actor: actor.to_owned(),
        reason: None,
    }))
}

/// Activates `policy@version` on `surface` as `ops`.
fn activate(
    control: &Control,
    surface: &str,
    policy: &str,
    version: &str,
    pairs: &[(&str, &str)],
) -> Result<PlanRevision, ChangeError> {
    activate_as(control, "ops", surface, policy, version, pairs).map(|(revision, _)| revision)
}

/// Serves `surface` with arms of version 0.1.0 of each policy, weights in percent.
fn set_plan(control: &Control, surface: &str, arms: &[(&str, f64)]) -> Result<PlanRevision, ChangeError> {
    let arms = arms
        .iter()
        .map(|&(policy, weight)| ArmSpec {
            name: None,
            policy: policy.to_owned(),
            version: "0.1.0".to_owned(),
            weight,
            params: BTreeMap::new(),
        })
        .collect();
    let plan = PlanSpec { arms, salt: None, shadow: Vec::new() };
    let change = Change::SetPlan {
        surface: surface.to_owned(),
        plan,
        expected_revision: None,
        actor: "ops".to_owned(),
        reason: None,
    };
    applied(control.apply(change)).map(|(revision, _)| revision)
}

/// A manual rollback.
fn rollback(control: &Control, surface: &str, actor: &str, reason: &str) -> Result<PlanRevision, ChangeError> {
    let change = Change::Rollback { surface: surface.to_owned(), actor: actor.to_owned(), reason: reason.to_owned() };
    applied(control.apply(change)).map(|(revision, _)| revision)
}

/// What automatic rollback sends when `arm` of `revision` keeps failing.
fn arm_failed(
    control: &Control,
    surface: &str,
    revision: Revision,
    arm: &str,
    reason: &str,
) -> Result<PlanRevision, ChangeError> {
    let change =
        Change::ArmFailed { surface: surface.to_owned(), revision, arm: arm.to_owned(), reason: reason.to_owned() };
    applied(control.apply(change)).map(|(revision, _)| revision)
}

/// The one arm of `surface`'s current plan, if it has one.
fn serving(registry: &Registry, surface: &str) -> Option<Arm> {
    let surface = registry.surface(surface).ok()?;
    let current = surface.current()?;
    assert_eq!(current.plan.arms.len(), 1, "{}: a one-arm plan", surface.name);
    Some(current.plan.arms[0].clone())
}

/// The surfaces that have a current plan, by name.
fn active(registry: &Registry) -> Vec<String> {
    registry.surfaces().into_iter().filter(|s| s.current().is_some()).map(|s| s.name).collect()
}

/// Every file under `dir` (relative path) with its contents, to show a directory did not change.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                files.insert(path.strip_prefix(root).unwrap().to_path_buf(), fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

fn blob(dir: &Path, digest: Digest) -> PathBuf {
    dir.join("blobs/sha256").join(format!("{}.wasm", digest.hex()))
}

fn artifact(dir: &Path, runtime: &Runtime, digest: Digest) -> PathBuf {
    dir.join("artifacts").join(runtime.artifact_key()).join(format!("{}.cwasm", digest.hex()))
}

/// A data directory holding popularity and discovery, with popularity serving `home`.
fn populated(runtime: Arc<Runtime>) -> (TempDir, Digest, Digest) {
    let dir = tempfile::tempdir().unwrap();
    let registry = open_with(dir.path(), runtime);
    let control = control(&registry);
    let popularity = registry.put_version("popularity", "0.1.0", &policy_bytes("popularity"), "ci").unwrap();
    let discovery = registry.put_version("discovery", "0.1.0", &policy_bytes("discovery"), "ci").unwrap();
    activate(&control, "home", "popularity", "0.1.0", &[]).unwrap();
    (dir, popularity.version().digest, discovery.version().digest)
}

#[test]
fn an_upload_is_stored_once_and_the_same_bytes_again_change_nothing() {
    let (dir, registry) = empty();
    let bytes = policy_bytes("popularity");

    let Put::Created(info) = registry.put_version("popularity", "0.1.0", &bytes, "ci-token").unwrap() else {
        panic!("the first upload creates the version")
    };
    assert_eq!((info.digest, info.size, info.uploaded_by.as_str()), (Digest::of(&bytes), bytes.len(), "ci-token"));
    assert_eq!((info.metadata.name.as_str(), info.metadata.version.as_str()), ("popularity", "0.1.0"));
    assert_eq!(fs::read(blob(dir.path(), info.digest)).unwrap(), bytes);
    assert!(artifact(dir.path(), &runtime(), info.digest).exists(), "the artifact is stored with the upload");

    let again = registry.put_version("popularity", "0.1.0", &bytes, "someone-else").unwrap();
    assert_eq!(again, Put::Unchanged(info.clone()), "the first upload's record stays");
    assert_eq!(registry.versions(), std::slice::from_ref(&info));
    assert_eq!(registry.version("popularity", "0.1.0").unwrap(), info);
}

#[test]
fn other_bytes_under_an_existing_version_are_a_conflict() {
    let (_dir, registry) = empty();
    let stored = registry.put_version("popularity", "0.1.0", &policy_bytes("popularity"), "ci").unwrap();

    let error = registry.put_version("popularity", "0.1.0", &variant(&policy_bytes("popularity")), "ci").unwrap_err();
    assert!(matches!(error, Error::VersionConflict { .. }), "{error}");
    assert_eq!(error.status(), 409);
    assert!(error.to_string().contains("popularity@0.1.0") && error.to_string().contains("new version"), "{error}");
    assert_eq!(registry.versions(), [stored.version().clone()]);
}

#[test]
fn unsafe_names_are_refused_before_anything_is_stored() {
    let (dir, registry) = empty();
    let control = control(&registry);
    let before = snapshot(dir.path());
    let bytes = policy_bytes("popularity");
    let too_long = "a".repeat(65);
    for bad in ["../x", "a/b", "a\0b", "", too_long.as_str(), "..", ".hidden", "a..b", "a b", "a\\b", "é"] {
        let error = registry.put_version(bad, "0.1.0", &bytes, "ci").unwrap_err();
        assert!(matches!(error, Error::InvalidName { kind: NameKind::Policy, .. }), "{bad:?}: {error}");
        assert_eq!(error.status(), 422);
        assert!(error.to_string().contains("1 to 64 characters"), "{error}");
        let error = registry.put_version("popularity", bad, &bytes, "ci").unwrap_err();
        assert!(matches!(error, Error::InvalidName { kind: NameKind::Version, .. }), "{bad:?}: {error}");
        let error = activate(&control, bad, "popularity", "0.1.0", &[]).unwrap_err();
        assert!(
            matches!(error, ChangeError::Registry(Error::InvalidName { kind: NameKind::Surface, .. })),
            "{bad:?}: {error}"
        );
        assert_eq!(error.status(), 422);
        let error = rollback(&control, bad, "ops", "").unwrap_err();
        assert!(matches!(error, ChangeError::Registry(Error::InvalidName { .. })), "{bad:?}: {error}");
        assert!(matches!(registry.delete_version(bad, "0.1.0"), Err(Error::InvalidName { .. })));
    }
    // NUL is shown escaped, not written raw into a log line or response.
    let error = registry.put_version("a\0b", "0.1.0", &bytes, "ci").unwrap_err();
    assert!(error.to_string().contains(r#""a\0b""#), "{error}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_component_that_is_not_a_policy_is_refused_and_nothing_is_stored() {
    let (dir, registry) = empty();
    let before = snapshot(dir.path());
    let good = policy_bytes("popularity");
    for bytes in [Vec::new(), b"not wasm".to_vec(), good[..good.len() / 2].to_vec(), guest_bytes("wasi-import")] {
        let error = registry.put_version("popularity", "0.1.0", &bytes, "ci").unwrap_err();
        assert!(matches!(error, Error::InvalidComponent { .. }), "{error}");
        assert_eq!(error.status(), 422);
        assert!(error.to_string().contains("nothing was stored"), "{error}");
    }
    assert!(registry.versions().is_empty());
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn the_name_and_version_uploaded_must_be_the_ones_the_component_declares() {
    let (dir, registry) = empty();
    let before = snapshot(dir.path());
    let bytes = policy_bytes("popularity");

    let error = registry.put_version("discovery", "0.1.0", &bytes, "ci").unwrap_err();
    assert!(matches!(&error, Error::MetadataMismatch { field: "name", declared, .. } if declared == "popularity"));
    assert_eq!(error.status(), 422);
    assert!(error.to_string().contains("popularity@0.1.0"), "{error}");

    let error = registry.put_version("popularity", "0.2.0", &bytes, "ci").unwrap_err();
    assert!(matches!(&error, Error::MetadataMismatch { field: "version", declared, .. } if declared == "0.1.0"));
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn an_upload_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = RegistryOptions { max_component_bytes: 1000, ..RegistryOptions::default() };
    let registry = Registry::open(dir.path(), runtime(), options).unwrap();
    let error = registry.put_version("popularity", "0.1.0", &policy_bytes("popularity"), "ci").unwrap_err();
    assert!(matches!(error, Error::TooLarge { limit: 1000, .. }), "{error}");
    assert_eq!(error.status(), 413);
    assert!(registry.versions().is_empty());
}

#[test]
fn a_plan_checks_the_version_the_surface_and_the_params() {
    let (_dir, registry) = empty();
    let (control, router) = control_with_router(&registry);
    registry.put_version("discovery", "0.1.0", &policy_bytes("discovery"), "ci").unwrap();

    let error = activate(&control, "discovery", "discovery", "9.9.9", &[]).unwrap_err();
    assert!(matches!(&error, ChangeError::UnknownVersion { field, .. } if field == "arms[0].version"), "{error}");
    assert_eq!(error.status(), 404);

    let error = activate(&control, "banners", "discovery", "0.1.0", &[]).unwrap_err();
    assert!(matches!(&error, ChangeError::Invalid { field, .. } if field == "arms[0].policy"), "{error}");
    assert_eq!(error.status(), 422);
    assert!(error.to_string().contains("discovery, category"), "{error}");

    let error = activate(&control, "discovery", "discovery", "0.1.0", &[("diversityy", "1")]).unwrap_err();
    assert!(matches!(&error, ChangeError::Invalid { field, .. } if field == "arms[0].params.diversityy"), "{error}");
    assert_eq!(error.status(), 422);
    assert!(error.to_string().contains("`diversity`"), "the known params are listed: {error}");

    // The policy itself refuses a value it cannot use, in the parameter check call.
    for refused in ["banana", "-5"] {
        let error = activate(&control, "discovery", "discovery", "0.1.0", &[("diversity", refused)]).unwrap_err();
        assert!(
            matches!(&error, ChangeError::Invalid { field, .. } if field == "arms[0].params"),
            "{refused}: {error}"
        );
        assert_eq!(error.status(), 422);
    }

    assert!(registry.surfaces().is_empty() && router.get("discovery").is_none(), "nothing was activated");

    let revision = activate(&control, "discovery", "discovery", "0.1.0", &[("diversity", "0.5")]).unwrap();
    assert_eq!(registry.surface("discovery").unwrap().current(), Some(&revision));
    assert_eq!(revision.revision, 1);
    let arm = &revision.plan.arms[0];
    assert_eq!((arm.name.as_str(), arm.policy.as_str(), arm.weight), ("discovery@0.1.0", "discovery", 10_000));
    assert_eq!(arm.params, params(&[("diversity", "0.5")]));
    let binding = router.get("discovery").expect("the surface is bound");
    assert_eq!((binding.revision, binding.arm_versions()), (1, vec!["discovery@0.1.0".to_owned()]));
    assert_eq!(binding.arms[0].params.to_pairs(), [("diversity".to_owned(), "0.5".to_owned())]);
    let request = decode(&fixture("discovery-evening.json"));
    assert!(!binding.arms[0].bound.ranker.rank(&request, &patient()).unwrap().is_empty(), "the bound version ranks");
}

#[test]
fn activating_what_is_already_current_changes_nothing() {
    let (dir, registry) = empty();
    let control = control(&registry);
    registry.put_version("popularity", "0.1.0", &policy_bytes("popularity"), "ci").unwrap();
    let (first, changed) = activate_as(&control, "ops", "home", "popularity", "0.1.0", &[]).unwrap();
    assert!(changed);
    let manifest = fs::read(dir.path().join("manifest.json")).unwrap();
    let (again, changed) = activate_as(&control, "someone", "home", "popularity", "0.1.0", &[]).unwrap();
    assert!(!changed);
    assert_eq!(first, again);
    assert_eq!(registry.surface("home").unwrap().history.len(), 1);
    assert_eq!(fs::read(dir.path().join("manifest.json")).unwrap(), manifest, "nothing was written");
}

#[test]
fn rollback_walks_back_through_the_history_then_fails() {
    let (_dir, registry) = empty();
    let (control, router) = control_with_router(&registry);
    registry.put_version("popularity", "0.1.0", &policy_bytes("popularity"), "ci").unwrap();
    registry.put_version("discovery", "0.1.0", &policy_bytes("discovery"), "ci").unwrap();
    let current = |registry: &Registry| {
        let revision = registry.surface("discovery").unwrap().current().unwrap().revision;
        let arm = serving(registry, "discovery").unwrap();
        let binding = router.get("discovery").unwrap();
        assert_eq!(
            (binding.revision, binding.arm_versions()),
            (revision, vec![arm.version_ref()]),
            "the bound version is the current one"
        );
        (arm.policy, arm.params.get("diversity").cloned())
    };
    activate(&control, "discovery", "popularity", "0.1.0", &[]).unwrap();
    activate(&control, "discovery", "discovery", "0.1.0", &[]).unwrap();
    activate(&control, "discovery", "discovery", "0.1.0", &[("diversity", "0.9")]).unwrap();
    assert_eq!(current(&registry), ("discovery".to_owned(), Some("0.9".to_owned())));

    let back = rollback(&control, "discovery", "oncall", "too samey").unwrap();
    let policy = back.plan.arms[0].policy.as_str();
    assert_eq!((back.revision, policy, back.restores, back.actor.as_str()), (4, "discovery", Some(2), "oncall"));
    assert_eq!(current(&registry), ("discovery".to_owned(), None));
    rollback(&control, "discovery", "oncall", "still bad").unwrap();
    assert_eq!(current(&registry), ("popularity".to_owned(), None));

    let error = rollback(&control, "discovery", "oncall", "again").unwrap_err();
    assert!(matches!(error, ChangeError::Registry(Error::NoRollbackTarget { .. })), "{error}");
    assert_eq!(error.status(), 409);

    let history = registry.surface("discovery").unwrap().history;
    let endings: Vec<&str> = history
        .iter()
        .map(|a| match &a.ended {
            None => "current",
            Some(Ending::Superseded { .. }) => "superseded",
            Some(Ending::RolledBack { automatic: false, .. }) => "rolled back",
            Some(_) => "other",
        })
        .collect();
    assert_eq!(endings, ["superseded", "superseded", "rolled back", "rolled back", "current"]);
    assert!(
        matches!(&history[2].ended, Some(Ending::RolledBack { reason, actor, .. }) if reason == "too samey" && actor == "oncall")
    );
}

#[test]
fn rollback_needs_an_earlier_revision() {
    let (_dir, registry) = empty();
    let control = control(&registry);
    let error = rollback(&control, "home", "oncall", "").unwrap_err();
    assert!(matches!(error, ChangeError::Registry(Error::UnknownSurface { .. })), "{error}");
    assert_eq!(error.status(), 404);

    registry.put_version("popularity", "0.1.0", &policy_bytes("popularity"), "ci").unwrap();
    activate(&control, "home", "popularity", "0.1.0", &[]).unwrap();
    let error = rollback(&control, "home", "oncall", "").unwrap_err();
    assert!(matches!(error, ChangeError::Registry(Error::NoRollbackTarget { .. })), "{error}");
    assert_eq!(registry.surface("home").unwrap().history.len(), 1, "a failed rollback changes nothing");
}

#[test]
fn an_automatic_rollback_marks_the_revision_failed_and_never_returns_to_a_failed_one() {
    let (_dir, registry) = empty();
    let control = control(&registry);
    registry.put_version("popularity", "0.1.0", &policy_bytes("popularity"), "ci").unwrap();
    registry.put_version("discovery", "0.1.0", &policy_bytes("discovery"), "ci").unwrap();
    let history = || registry.surface("discovery").unwrap().history;
    activate(&control, "discovery", "popularity", "0.1.0", &[]).unwrap();
    let bad = activate(&control, "discovery", "discovery", "0.1.0", &[]).unwrap();

    // The one arm of revision 2 keeps failing: back to revision 1, and revision 2 is marked.
    let back = arm_failed(&control, "discovery", bad.revision, "discovery@0.1.0", "error rate 12%").unwrap();
    let policy = back.plan.arms[0].policy.as_str();
    assert_eq!((back.revision, policy, back.restores, back.actor.as_str()), (3, "popularity", Some(1), "relish"));
    let failed = history()[1].failed.clone().expect("revision 2 is marked failed");
    assert_eq!((failed.arm.as_str(), failed.reason.as_str()), ("discovery@0.1.0", "error rate 12%"));
    assert!(
        matches!(&history()[1].ended, Some(Ending::RolledBack { automatic: true, actor, .. }) if actor == "relish")
    );
    assert!(history()[0].failed.is_none() && history()[2].failed.is_none());
    // The failure belongs to the revision: neither version is marked.
    assert!(registry.version("discovery", "0.1.0").unwrap().auto_rollback.is_none());
    assert!(registry.version("popularity", "0.1.0").unwrap().auto_rollback.is_none());
    // Another alarm about revision 2, which no longer serves, does nothing.
    let change = Change::ArmFailed {
        surface: "discovery".to_owned(),
        revision: 2,
        arm: "discovery@0.1.0".to_owned(),
        reason: "late".to_owned(),
    };
    assert!(matches!(control.apply(change), Ok(Applied::Ignored)));
    assert_eq!(history().len(), 3);

    // An operator may still activate the version by hand: a new revision, not failed. Then a
    // canary beside popularity, whose failing arm is taken out, which marks revision 5.
    assert_eq!(activate(&control, "discovery", "discovery", "0.1.0", &[]).unwrap().revision, 4);
    assert_eq!(set_plan(&control, "discovery", &[("popularity", 95.0), ("discovery", 5.0)]).unwrap().revision, 5);
    let without = arm_failed(&control, "discovery", 5, "discovery@0.1.0", "error rate 30%").unwrap();
    assert_eq!((without.revision, without.restores, without.plan.arms.len()), (6, None, 1));
    assert_eq!(without.plan.arms[0].policy, "popularity");
    assert!(history()[4].failed.is_some() && history()[3].failed.is_none());

    // History: 1 popularity, 2 discovery (failed), 3 popularity (restores 1), 4 discovery,
    // 5 popularity with a discovery canary (failed), 6 popularity. A manual rollback would return
    // to 5; an automatic one skips it, to 4: the plan of the failed revision 2, but not it.
    assert_eq!(registry.surface("discovery").unwrap().rollback_target(|_| true), Some(5));
    let back = arm_failed(&control, "discovery", 6, "popularity@0.1.0", "latency").unwrap();
    assert_eq!((back.revision, back.restores), (7, Some(4)), "the failed revision 5 is skipped");
    assert_eq!(back.plan.arms[0].policy, "discovery");
    assert!(history()[5].failed.is_some());

    // From 7 (which restores 4) back to 3; from there nothing earlier is left.
    let back = arm_failed(&control, "discovery", 7, "discovery@0.1.0", "still").unwrap();
    assert_eq!((back.revision, back.restores), (8, Some(3)));
    let error = arm_failed(&control, "discovery", 8, "popularity@0.1.0", "still").unwrap_err();
    assert!(matches!(error, ChangeError::Registry(Error::NoRollbackTarget { automatic: true, .. })), "{error}");
}

#[test]
fn an_active_version_cannot_be_deleted_and_an_inactive_one_takes_its_files_along() {
    let runtime = own_runtime();
    let (dir, popularity, discovery) = populated(runtime.clone());
    let registry = open_with(dir.path(), runtime.clone());

    let error = registry.delete_version("popularity", "0.1.0").unwrap_err();
    assert!(matches!(&error, Error::VersionActive { surfaces, .. } if surfaces == &["home"]), "{error}");
    assert_eq!(error.status(), 409);
    assert!(error.to_string().contains("home"), "{error}");

    let deleted = registry.delete_version("discovery", "0.1.0").unwrap();
    assert_eq!(deleted.digest, discovery);
    assert!(!blob(dir.path(), discovery).exists() && !artifact(dir.path(), &runtime, discovery).exists());
    assert!(blob(dir.path(), popularity).exists());
    assert!(matches!(registry.version("discovery", "0.1.0"), Err(Error::UnknownVersion { .. })));
    let error = registry.delete_version("discovery", "0.1.0").unwrap_err();
    assert_eq!(error.status(), 404);

    drop(registry);
    let registry = open_with(dir.path(), runtime);
    assert_eq!(registry.versions().len(), 1, "the deletion is persisted");
}

#[test]
fn a_rollback_skips_a_version_deleted_since() {
    let (_dir, registry) = empty();
    let control = control(&registry);
    registry.put_version("popularity", "0.1.0", &policy_bytes("popularity"), "ci").unwrap();
    registry.put_version("discovery", "0.1.0", &policy_bytes("discovery"), "ci").unwrap();
    activate(&control, "discovery", "popularity", "0.1.0", &[]).unwrap();
    activate(&control, "discovery", "discovery", "0.1.0", &[]).unwrap();
    activate(&control, "discovery", "discovery", "0.1.0", &[("diversity", "1")]).unwrap();
    activate(&control, "category", "popularity", "0.1.0", &[]).unwrap();
    activate(&control, "discovery", "popularity", "0.1.0", &[]).unwrap();
    activate(&control, "category", "discovery", "0.1.0", &[]).unwrap();
    // popularity is in no current plan now, and can go; discovery serves `category`.
    activate(&control, "discovery", "discovery", "0.1.0", &[("diversity", "0.2")]).unwrap();
    let delete = Change::DeleteVersion {
        policy: "popularity".to_owned(),
        version: "0.1.0".to_owned(),
        actor: "ops".to_owned(),
        own_only: false,
    };
    assert!(matches!(control.apply(delete), Ok(Applied::Deleted(_))));

    // `discovery` history: popularity, discovery, discovery(1), popularity, discovery(0.2). Back
    // to discovery(1), revision 3, skipping the deleted popularity.
    let back = rollback(&control, "discovery", "oncall", "").unwrap();
    let arm = &back.plan.arms[0];
    assert_eq!((arm.policy.as_str(), arm.params.get("diversity").map(String::as_str)), ("discovery", Some("1")));
    assert_eq!(back.restores, Some(3));
}

#[test]
fn a_restart_restores_versions_and_plans_without_compiling() {
    let (dir, popularity, _) = populated(own_runtime());
    {
        let registry = open_with(dir.path(), own_runtime());
        let control = control(&registry);
        activate(&control, "discovery", "discovery", "0.1.0", &[("diversity", "0.4")]).unwrap();
        activate(&control, "discovery", "popularity", "0.1.0", &[]).unwrap();
        rollback(&control, "discovery", "oncall", "revert").unwrap();
    }
    let before = fs::read(dir.path().join("manifest.json")).unwrap();

    let runtime = own_runtime();
    let registry = open_with(dir.path(), runtime.clone());
    assert_eq!(runtime.compile_count(), 0, "active versions load from their artifacts");
    assert_eq!(registry.versions().len(), 2);
    assert_eq!(active(&registry), ["discovery", "home"]);
    assert_eq!(serving(&registry, "home").unwrap().digest, popularity);
    let discovery = serving(&registry, "discovery").unwrap();
    assert_eq!(discovery.policy, "discovery");
    assert_eq!(discovery.params, params(&[("diversity", "0.4")]));
    assert_eq!(registry.surface("discovery").unwrap().history.len(), 3);

    // The control plane binds the stored plans, with the versions the registry loaded.
    let (control, router) = control_with_router(&registry);
    control.bind_all().unwrap();
    let request = decode(&fixture("discovery-evening.json"));
    let bound = router.get("discovery").unwrap();
    assert_eq!(bound.arm_versions(), ["discovery@0.1.0"]);
    assert!(!bound.arms[0].bound.ranker.rank(&request, &patient()).unwrap().is_empty());

    let home = router.get("home").unwrap();
    assert_eq!(home.arms[0].bound.digest, popularity);
    let loaded = registry.policy("popularity", "0.1.0").unwrap();
    assert!(
        std::ptr::addr_eq(Arc::as_ptr(&loaded), Arc::as_ptr(&home.arms[0].bound.ranker)),
        "an active version is not loaded twice"
    );
    assert_eq!(runtime.compile_count(), 0);
    assert_eq!(fs::read(dir.path().join("manifest.json")).unwrap(), before, "a clean open rewrites nothing");
}

#[test]
fn inactive_versions_load_on_demand_from_their_artifacts_through_the_cache() {
    let runtime = own_runtime();
    let dir = tempfile::tempdir().unwrap();
    let options = RegistryOptions { cache_capacity: 1.try_into().unwrap(), ..RegistryOptions::default() };
    let registry = Registry::open(dir.path(), runtime.clone(), options.clone()).unwrap();
    registry.put_version("popularity", "0.1.0", &policy_bytes("popularity"), "ci").unwrap();
    registry.put_version("discovery", "0.1.0", &policy_bytes("discovery"), "ci").unwrap();
    let compiled = runtime.compile_count();

    // discovery, the last upload, is cached; popularity was evicted and loads from its artifact.
    let discovery = registry.policy("discovery", "0.1.0").unwrap();
    assert!(Arc::ptr_eq(&discovery, &registry.policy("discovery", "0.1.0").unwrap()));
    let popularity = registry.policy("popularity", "0.1.0").unwrap();
    assert!(Arc::ptr_eq(&popularity, &registry.policy("popularity", "0.1.0").unwrap()));
    assert!(!Arc::ptr_eq(&discovery, &registry.policy("discovery", "0.1.0").unwrap()), "evicted, reloaded");
    assert_eq!(runtime.compile_count(), compiled, "loads come from artifacts");

    let error = registry.policy("popularity", "9").unwrap_err();
    assert_eq!(error.status(), 404);
}

#[test]
fn a_corrupted_artifact_is_detected_by_its_digest_and_recompiled() {
    let runtime = own_runtime();
    let (dir, popularity, _) = populated(runtime.clone());
    let path = artifact(dir.path(), &runtime, popularity);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&path, &bytes).unwrap();

    let runtime = own_runtime();
    let registry = open_with(dir.path(), runtime.clone());
    assert_eq!(runtime.compile_count(), 1, "the corrupt artifact is not loaded but recompiled");
    assert_eq!(serving(&registry, "home").unwrap().digest, popularity);
    assert_eq!(registry.policy("popularity", "0.1.0").unwrap().digest(), popularity);
    assert_eq!(runtime.compile_count(), 1, "the recompiled version is the one loaded");
    drop(registry);

    let runtime = own_runtime();
    open_with(dir.path(), runtime.clone());
    assert_eq!(runtime.compile_count(), 0, "the recompiled artifact was stored");
}

#[test]
fn artifacts_of_another_engine_are_ignored_and_removed() {
    let runtime = own_runtime();
    let (dir, popularity, _) = populated(runtime.clone());
    let key = runtime.artifact_key();
    let stale = dir.path().join("artifacts/0123456789abcdef01234567");
    fs::rename(dir.path().join("artifacts").join(&key), &stale).unwrap();

    let runtime = own_runtime();
    let registry = open_with(dir.path(), runtime.clone());
    assert_eq!(runtime.compile_count(), 1, "the active version is compiled for this engine");
    assert!(!stale.exists());
    assert!(artifact(dir.path(), &runtime, popularity).exists());
    assert!(serving(&registry, "home").is_some());
}

#[test]
fn leftovers_of_interrupted_writes_are_removed_on_open() {
    let runtime = own_runtime();
    let (dir, popularity, _) = populated(runtime.clone());
    let manifest = fs::read(dir.path().join("manifest.json")).unwrap();

    // Crashed mid-upload after storing bytes and artifact, before the manifest: an orphan.
    let orphan_bytes = variant(&policy_bytes("popularity"));
    let orphan = Digest::of(&orphan_bytes);
    fs::write(blob(dir.path(), orphan), &orphan_bytes).unwrap();
    fs::write(artifact(dir.path(), &runtime, orphan), b"artifact").unwrap();
    // Crashed while writing files: temporaries, one of them a whole new manifest never renamed.
    let temporaries = [
        dir.path().join(".tmp-999-0-manifest.json"),
        dir.path().join("blobs/sha256/.tmp-999-1-abc.wasm"),
        artifact(dir.path(), &runtime, popularity).with_file_name(".tmp-999-2-x.cwasm"),
    ];
    fs::write(&temporaries[0], br#"{"format": 1, "versions": [], "surfaces": []}"#).unwrap();
    fs::write(&temporaries[1], &orphan_bytes[..100]).unwrap();
    fs::write(&temporaries[2], b"partial").unwrap();

    let runtime = own_runtime();
    let registry = open_with(dir.path(), runtime.clone());
    assert_eq!(registry.versions().len(), 2, "the manifest in place is the truth");
    assert!(serving(&registry, "home").is_some());
    assert!(!blob(dir.path(), orphan).exists() && !artifact(dir.path(), &runtime, orphan).exists());
    assert!(temporaries.iter().all(|t| !t.exists()), "temporaries are removed");
    assert_eq!(fs::read(dir.path().join("manifest.json")).unwrap(), manifest);
    assert_eq!(runtime.compile_count(), 0);
}

#[test]
fn a_version_whose_component_is_gone_is_dropped_and_its_surface_returns_to_the_previous_plan() {
    let runtime = own_runtime();
    let (dir, popularity, discovery) = populated(runtime.clone());
    {
        let registry = open_with(dir.path(), runtime.clone());
        let control = control(&registry);
        activate(&control, "discovery", "popularity", "0.1.0", &[]).unwrap();
        activate(&control, "discovery", "discovery", "0.1.0", &[]).unwrap();
        activate(&control, "category", "discovery", "0.1.0", &[]).unwrap();
    }
    // Disk damage: discovery's bytes are truncated. (The write order never does this.)
    let path = blob(dir.path(), discovery);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();

    let registry = open_with(dir.path(), runtime.clone());
    assert!(matches!(registry.version("discovery", "0.1.0"), Err(Error::UnknownVersion { .. })));
    let surface = registry.surface("discovery").unwrap();
    let current = surface.current().unwrap();
    let policy = current.plan.arms[0].policy.as_str();
    assert_eq!(
        (current.revision, policy, current.actor.as_str(), current.restores),
        (3, "popularity", "relish", Some(1))
    );
    assert!(matches!(&surface.history[1].ended, Some(Ending::Repaired { reason, .. }) if reason.contains("digest")));
    assert!(registry.surface("category").unwrap().current().is_none(), "no earlier plan to return to");
    assert_eq!(active(&registry), ["discovery", "home"]);
    assert_eq!(serving(&registry, "discovery").unwrap().digest, popularity);
    assert!(!path.exists(), "the damaged file is garbage now");
    drop(registry);

    // The repair was persisted: the next open finds nothing to do.
    let manifest = fs::read(dir.path().join("manifest.json")).unwrap();
    open_with(dir.path(), runtime);
    assert_eq!(fs::read(dir.path().join("manifest.json")).unwrap(), manifest);
}

#[test]
fn an_unreadable_manifest_stops_the_registry_from_opening() {
    let (dir, _, _) = populated(own_runtime());
    fs::write(dir.path().join("manifest.json"), b"{\"format\": 1, \"vers").unwrap();
    let before = snapshot(dir.path());
    let error = Registry::open(dir.path(), runtime(), RegistryOptions::default()).unwrap_err();
    assert!(matches!(error, Error::Manifest { .. }), "{error}");
    assert!(error.to_string().contains("manifest.json"), "{error}");
    assert_eq!(snapshot(dir.path()), before, "nothing is cleaned up on the strength of a broken manifest");

    fs::remove_file(dir.path().join("manifest.json")).unwrap();
    let error = Registry::open(dir.path(), runtime(), RegistryOptions::default()).unwrap_err();
    assert!(error.to_string().contains("missing"), "{error}");
}

#[test]
fn one_data_directory_is_open_in_one_registry_at_a_time() {
    let (dir, registry) = empty();
    let error = Registry::open(dir.path(), runtime(), RegistryOptions::default()).unwrap_err();
    assert!(matches!(error, Error::Locked { .. }), "{error}");
    drop(registry);
    open(dir.path());
}

#[test]
fn concurrent_uploads_of_one_version_end_in_one_stored_version() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let original = policy_bytes("popularity");
    let other = variant(&original);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (registry, barrier) = (registry.clone(), barrier.clone());
            let bytes = if i % 2 == 0 { original.clone() } else { other.clone() };
            std::thread::spawn(move || {
                barrier.wait();
                (Digest::of(&bytes), registry.put_version("popularity", "0.1.0", &bytes, &format!("uploader-{i}")))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let outcomes: Vec<String> = results
        .iter()
        .map(|(digest, result)| match result {
            Ok(Put::Created(_)) => format!("{digest}: created"),
            Ok(Put::Unchanged(_)) => format!("{digest}: unchanged"),
            Err(error) => format!("{digest}: {error}"),
        })
        .collect();
    let created: Vec<_> = results
        .iter()
        .filter_map(|(_, result)| match result {
            Ok(Put::Created(info)) => Some(info.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{outcomes:#?}");
    let winner = &created[0];
    for (digest, result) in &results {
        match result {
            Ok(Put::Created(_)) => {}
            Ok(Put::Unchanged(info)) => assert!(*digest == winner.digest && info == winner),
            Err(Error::VersionConflict { existing, .. }) => {
                assert!(*digest != winner.digest && *existing == winner.digest)
            }
            Err(error) => panic!("unexpected: {error}"),
        }
    }
    assert_eq!(registry.versions(), std::slice::from_ref(winner));
    let blobs: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256")).unwrap().collect();
    assert_eq!(blobs.len(), 1, "the losers' bytes were never stored");
}
