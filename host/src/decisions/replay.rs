//! `relish replay`: decisions of the log run again through the serving pipeline
//! ([`Binding::decide`], the same call, validation and budget as `relish serve`), with the
//! logged versions (every answer must come out the same, bit for bit) or with a candidate
//! (how far its answers agree with the logged ones and, given the rewards the logged answers
//! earned, what the candidate's would have earned: [`super::ope`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::ope::{self, Evaluation, Observation, Rewards, RewardsReport};
use super::record::Record;
use crate::metrics::Metrics;
use crate::runtime::{Budget, Digest, PolicyPre, Runtime, types};
use crate::serving::Binding;
use crate::serving::compare::{self, Agreement};

/// What to replay with.
pub struct ReplayOptions {
    /// Where the logged versions' components are: a data directory (`blobs/sha256/<hex>.wasm`,
    /// checked against the digest; read directly, so a running host's directory works).
    pub data_dir: PathBuf,
    /// A candidate to replay with instead of the logged versions.
    pub candidate: Option<Candidate>,
    /// Parameters set on every replayed request (over the logged ones).
    pub params: Vec<(String, String)>,
    /// Threads.
    pub jobs: usize,
    /// The deadline of each call (generous: replay judges answers, not speed).
    pub deadline: Duration,
    /// Called with (done, total) as decisions are replayed.
    pub progress: Option<Box<dyn Fn(usize, usize) + Sync>>,
    /// Rewards of the logged answers, for off-policy estimates of a candidate.
    pub rewards: Option<Rewards>,
    /// The slots (positions from the top) the estimates cover; default: every one.
    pub positions: Option<usize>,
    /// How many draws (seeds derived from the logged one) estimate a randomising candidate's
    /// probability of each item at each slot. A candidate that reports no propensities is
    /// deterministic and needs none.
    pub draws: usize,
}

/// What a candidate replay runs.
pub enum Candidate {
    /// A component's bytes (`--policy file.wasm`).
    Component(Vec<u8>),
    /// A version stored in the data directory (`--version name@version`).
    Stored {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
    },
}

/// A log file as read.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The file.
    pub file: PathBuf,
    /// Records read.
    pub records: usize,
    /// Lines that are not records, as `file:line: why`.
    pub bad: Vec<String>,
    /// Whether its last record was torn (skipped).
    pub torn: bool,
}

/// A decision whose replay differs from the log.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The decision's id.
    pub id: String,
    /// Its surface.
    pub surface: String,
    /// What differs.
    pub what: String,
}

/// A decision not replayed, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The decision's id.
    pub id: String,
    /// Why.
    pub reason: String,
}

/// Agreement of a candidate with the logged answers of one surface and arm (means).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupAgreement {
    /// The surface.
    pub surface: String,
    /// The logged arm.
    pub arm: String,
    /// Decisions compared.
    pub decisions: usize,
    /// Mean top-1 agreement.
    pub top1: f64,
    /// Mean overlap@k (k: the logged answer's length).
    pub overlap: f64,
    /// Mean rank-biased overlap.
    pub rbo: f64,
    /// Mean Kendall's tau-b.
    pub tau: f64,
}

/// One decision where the candidate disagrees most.
#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    /// The decision's id.
    pub id: String,
    /// Its surface.
    pub surface: String,
    /// Overlap with the logged answer.
    pub overlap: f64,
    /// Kendall's tau-b.
    pub tau: f64,
}

/// What a replay found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// `logged` or `candidate`.
    pub mode: &'static str,
    /// The files read.
    pub files: Vec<FileReport>,
    /// Decisions read.
    pub decisions: usize,
    /// Decisions replayed to exactly the logged answer (order, scores and reasons, bit for bit).
    pub reproduced: usize,
    /// Decisions replayed to another answer.
    pub differing: Vec<Difference>,
    /// Decisions not replayed.
    pub skipped: Vec<Skipped>,
    /// A candidate's agreement, by surface and arm.
    pub agreement: Vec<GroupAgreement>,
    /// The decisions where the candidate's answers differ most (lowest overlap, then tau).
    pub most_different: Vec<Disagreement>,
    /// What reading the rewards found, with `--rewards`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewards: Option<RewardsReport>,
    /// Off-policy estimates of the candidate's reward, by surface, with `--rewards`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evaluation: Vec<Evaluation>,
}

enum Outcome {
    Reproduced,
    Differs(String),
    Skipped(String),
    Compared(Agreement, Option<Observation>),
    /// A candidate's call failed, with `--rewards`.
    Failed(String, Observation),
}

/// Replays the decisions of `logs`. Bad lines and torn tails are reported per file, decisions
/// that cannot be replayed are skipped with the reason; the rest is replayed.
pub fn replay(runtime: &Arc<Runtime>, logs: &[PathBuf], options: &ReplayOptions) -> anyhow::Result<ReplayReport> {
    let mut records = Vec::new();
    let mut files = Vec::new();
    for file in logs {
        let read = super::read(file, |r| records.push(r)).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        files.push(FileReport {
            file: file.clone(),
            records: read.records,
            bad: read.bad.iter().map(ToString::to_string).collect(),
            torn: read.torn,
        });
    }
    let mut report = replay_records(runtime, &records, options)?;
    report.files = files;
    Ok(report)
}

/// Replays `records` (see [`replay`]).
pub fn replay_records(
    runtime: &Arc<Runtime>,
    records: &[Record],
    options: &ReplayOptions,
) -> anyhow::Result<ReplayReport> {
    let mut report =
        ReplayReport { mode: if options.candidate.is_some() { "candidate" } else { "logged" }, ..Default::default() };
    report.decisions = records.len();
    if options.rewards.is_some() && options.candidate.is_none() {
        anyhow::bail!("--rewards estimates a candidate's reward: give one with --policy or --version");
    }
    let versions =
        Versions { runtime: runtime.clone(), dir: options.data_dir.clone(), loaded: Mutex::new(HashMap::new()) };
    let candidate = match &options.candidate {
        Some(Candidate::Component(bytes)) => {
            Some(Arc::new(runtime.load(bytes).map_err(|e| anyhow::anyhow!("the candidate does not load: {e}"))?))
        }
        Some(Candidate::Stored { policy, version }) => {
            let digest = versions.stored_digest(policy, version).map_err(|e| anyhow::anyhow!("--version: {e}"))?;
            Some(versions.load(policy, version, &digest).map_err(|e| anyhow::anyhow!("--version: {e}"))?)
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let outcomes: Vec<Mutex<Option<Outcome>>> = records.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(record) = records.get(index) else { break };
                    let policy = match &candidate {
                        Some(candidate) => Ok(candidate.clone()),
                        None => versions.get(record),
                    };
                    let outcome = match policy {
                        Ok(policy) => replay_one(record, policy, options, &metrics, candidate.is_some()),
                        Err(reason) => Outcome::Skipped(reason),
                    };
                    *outcomes[index].lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(progress) = &options.progress {
                        progress(finished, records.len());
                    }
                }
            });
        }
    });
    let mut groups: BTreeMap<(String, String), (usize, Agreement)> = BTreeMap::new();
    let mut observations = Vec::new();
    let mut compared = Vec::new();
    for (record, outcome) in records.iter().zip(outcomes) {
        match outcome.into_inner().unwrap_or_else(PoisonError::into_inner).expect("every record replayed") {
            Outcome::Reproduced => report.reproduced += 1,
            Outcome::Differs(what) => {
                report.differing.push(Difference { id: record.id.clone(), surface: record.surface.clone(), what })
            }
            Outcome::Skipped(reason) => report.skipped.push(Skipped { id: record.id.clone(), reason }),
            Outcome::Failed(what, observation) => {
                observations.push(observation);
                report.differing.push(Difference { id: record.id.clone(), surface: record.surface.clone(), what })
            }
            Outcome::Compared(agreement, observation) => {
                observations.extend(observation);
                let arm = record.arm.as_ref().map_or("none", |a| a.name.as_str()).to_owned();
                let (count, sum) = groups
                    .entry((record.surface.clone(), arm))
                    .or_insert((0, Agreement { top1: 0.0, overlap: 0.0, rbo: 0.0, tau: 0.0 }));
                *count += 1;
                sum.top1 += agreement.top1;
                sum.overlap += agreement.overlap;
                sum.rbo += agreement.rbo;
                sum.tau += agreement.tau;
                compared.push(Disagreement {
                    id: record.id.clone(),
                    surface: record.surface.clone(),
                    overlap: agreement.overlap,
                    tau: agreement.tau,
                });
            }
        }
    }
    report.agreement = groups
        .into_iter()
        .map(|((surface, arm), (n, sum))| {
            let mean = |v: f64| v / n as f64;
            GroupAgreement {
                surface,
                arm,
                decisions: n,
                top1: mean(sum.top1),
                overlap: mean(sum.overlap),
                rbo: mean(sum.rbo),
                tau: mean(sum.tau),
            }
        })
        .collect();
    compared.sort_by(|a, b| a.overlap.total_cmp(&b.overlap).then(a.tau.total_cmp(&b.tau)));
    compared.truncate(10);
    report.most_different = compared.into_iter().filter(|d| d.overlap < 1.0 || d.tau < 1.0).collect();
    if let Some(rewards) = &options.rewards {
        let answers: HashMap<&str, &[String]> =
            records.iter().map(|r| (r.id.as_str(), r.answer.ids.as_slice())).collect();
        report.rewards = Some(rewards.check(&answers));
        report.evaluation = ope::evaluate(&observations, rewards, options.positions);
    }
    Ok(report)
}

fn replay_one(
    record: &Record,
    policy: Arc<PolicyPre>,
    options: &ReplayOptions,
    metrics: &Arc<Metrics>,
    candidate: bool,
) -> Outcome {
    if record.fallback.is_some() && !candidate {
        return Outcome::Skipped("a fallback answered when it was logged".to_owned());
    }
    let request = match record.request.to_request() {
        Ok(request) => request,
        Err(error) => return Outcome::Skipped(error),
    };
    let mut params = request.params.to_pairs();
    for (key, value) in &options.params {
        match params.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1.clone_from(value),
            None => params.push((key.clone(), value.clone())),
        }
    }
    let budget = Budget { deadline: options.deadline, ..Budget::default() };
    let binding = Arc::new(Binding::single(&record.surface, policy, params, budget, metrics));
    let key = record.request.user_id.clone();
    let decision = binding.decide(request, key.as_deref(), metrics);
    if let Some(failure) = &decision.failure {
        let what = format!("the replay failed ({}): {}", failure.reason, failure.detail);
        if candidate && options.rewards.is_some() {
            // Still an observation: leaving the decision out would bias the estimates towards
            // the requests the candidate can answer. Its surface is refused, saying why.
            let mut observation = observe(record, &binding, &decision, options, metrics);
            observation.target = Err(what.clone());
            return Outcome::Failed(what, observation);
        }
        return Outcome::Differs(what);
    }
    let ranking = &decision.ranking;
    if candidate {
        let agreement = compare::compare(&record.answer.order, ranking.order());
        let observation = options.rewards.is_some().then(|| observe(record, &binding, &decision, options, metrics));
        return Outcome::Compared(agreement, observation);
    }
    if ranking.order() != record.answer.order.as_slice() {
        return Outcome::Differs(format!("order {:?}, logged {:?}", ranking.order(), record.answer.order));
    }
    let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    if bits(ranking.scores()) != bits(&record.answer.scores) {
        return Outcome::Differs(format!("scores {:?}, logged {:?}", ranking.scores(), record.answer.scores));
    }
    let reasons: Vec<Option<String>> = (0..ranking.len()).map(|p| ranking.reason(p).map(str::to_owned)).collect();
    let logged =
        if record.answer.reasons.is_empty() { vec![None; ranking.len()] } else { record.answer.reasons.clone() };
    if reasons != logged {
        return Outcome::Differs(format!("reasons {reasons:?}, logged {logged:?}"));
    }
    Outcome::Reproduced
}

/// What the estimators need of one decision: the logged answer with its propensities, and the
/// candidate's distribution over items at each slot (its answer when it reports no propensities,
/// else the share of `options.draws` answers on seeds derived from the logged one).
fn observe(
    record: &Record,
    binding: &Arc<Binding>,
    decision: &crate::serving::Decision,
    options: &ReplayOptions,
    metrics: &Arc<Metrics>,
) -> Observation {
    let logged = &record.answer.propensities;
    let propensities = if record.contract == crate::runtime::Contract::V0_1.name() {
        Err(format!("made through {}, which has no propensities", record.contract))
    } else if logged.is_empty() {
        Ok(vec![1.0; record.answer.ids.len()])
    } else if logged.len() != record.answer.ids.len() {
        Err(format!("{} propensities for {} items", logged.len(), record.answer.ids.len()))
    } else if let Some(bad) = logged.iter().find(|p| !(**p > 0.0 && **p <= 1.0)) {
        Err(format!("the propensity {bad} is not in (0, 1]"))
    } else {
        Ok(logged.iter().map(|&p| f64::from(p)).collect())
    };
    let request = &decision.request;
    let id = |index: u32| -> String {
        let offsets = &request.candidates.ids.offsets;
        request.candidates.ids.data[offsets[index as usize] as usize..offsets[index as usize + 1] as usize].to_owned()
    };
    let ranking = &decision.ranking;
    let target = Ok(if !ranking.has_propensities() {
        ranking.order().iter().map(|&i| vec![(id(i), 1.0)]).collect()
    } else {
        let mut counts: Vec<HashMap<String, usize>> = Vec::new();
        let draws = options.draws.max(1);
        for draw in 0..draws {
            let mut request = types::Request::clone(request);
            request.seed =
                xxhash_rust::xxh3::xxh3_64(&[record.request.seed.to_le_bytes(), (draw as u64).to_le_bytes()].concat());
            let key = record.request.user_id.clone();
            let drawn = binding.decide(request, key.as_deref(), metrics);
            for (k, &index) in drawn.ranking.order().iter().enumerate() {
                if counts.len() <= k {
                    counts.push(HashMap::new());
                }
                *counts[k].entry(id(index)).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .map(|slot| {
                let mut slot: Vec<(String, f64)> =
                    slot.into_iter().map(|(item, n)| (item, n as f64 / draws as f64)).collect();
                slot.sort_by(|a, b| a.0.cmp(&b.0));
                slot
            })
            .collect()
    });
    Observation {
        id: record.id.clone(),
        surface: record.surface.clone(),
        logged: record.answer.ids.clone(),
        propensities,
        target,
    }
}

/// The logged versions, loaded once per digest from the data directory's component files.
struct Versions {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    loaded: Mutex<HashMap<String, Result<Arc<PolicyPre>, String>>>,
}

impl Versions {
    fn get(&self, record: &Record) -> Result<Arc<PolicyPre>, String> {
        let Some(arm) = &record.arm else { return Err("no plan served it (no arm)".to_owned()) };
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        loaded.entry(arm.digest.clone()).or_insert_with(|| self.load(&arm.policy, &arm.version, &arm.digest)).clone()
    }

    /// The digest of a version the data directory's manifest names.
    fn stored_digest(&self, policy: &str, version: &str) -> Result<String, String> {
        #[derive(serde::Deserialize)]
        struct Manifest {
            versions: Vec<Stored>,
        }
        #[derive(serde::Deserialize)]
        struct Stored {
            policy: String,
            version: String,
            digest: String,
        }
        let path = self.dir.join("manifest.json");
        let text = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        manifest
            .versions
            .into_iter()
            .find(|v| v.policy == policy && v.version == version)
            .map(|v| v.digest)
            .ok_or_else(|| format!("{policy}@{version} is not stored in {}", self.dir.display()))
    }

    fn load(&self, policy: &str, version: &str, digest: &str) -> Result<Arc<PolicyPre>, String> {
        let hex = digest.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        let hex = hex.ok_or_else(|| format!("{policy}@{version}: `{digest}` is not a digest"))?;
        let path: PathBuf = Path::new(&self.dir).join("blobs/sha256").join(format!("{hex}.wasm"));
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("{policy}@{version} ({digest}) is not in {}: {e}", self.dir.display()))?;
        if Digest::of(&bytes).hex() != hex {
            return Err(format!("{} does not match its digest", path.display()));
        }
        self.runtime.load(&bytes).map(Arc::new).map_err(|e| format!("{policy}@{version} does not load: {e}"))
    }
}
