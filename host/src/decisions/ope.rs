//! Off-policy evaluation: what a candidate policy's answers would have earned on logged traffic,
//! from the rewards the logged answers earned and the propensities the logged policy reported.
//!
//! The unit is a *slot*: position `k` of a decision's answer. A reward (a click, an order) belongs
//! to the item at a slot, and the estimators assume, as Open Bandit Pipeline's slate estimators
//! do ("independent IPS"), that a slot's reward depends on the item there and not on the rest of
//! the answer. For decision `i`, slot `k`, with the logged item `a`, its reward `r`, the logged
//! propensity `p = π₀(a at k)` and the candidate's probability `π(a at k)`, the weight is
//! `w = π(a at k) / p`, and the value of the candidate (expected reward per decision, summed over
//! the slots evaluated) is estimated three ways:
//!
//! - **IPS**: `Σ_k mean_i(w·r)`;
//! - **self-normalised IPS**: `Σ_k Σ_i w·r / Σ_i w`;
//! - **doubly robust**: `Σ_k mean_i(Σ_b π(b at k)·q(b, k) + w·(r − q(a, k)))`, where `q(b, k)` is
//!   the mean reward of item `b` at slot `k` in the log, shrunk towards the slot's mean by one
//!   pseudo-observation.
//!
//! Each comes with a 95 % percentile bootstrap interval (1,000 resamples of decisions, seeded, so a
//! report is reproducible), and each slot with Kish's effective sample size `(Σw)² / Σw²`. The
//! logged policy's own observed reward is beside them.
//!
//! An estimate needs the logged propensities, so a surface with decisions without them (made
//! through contract 0.1.0, or edited out of range) gets no estimate, nor does one where the
//! logged policy was certain (propensity 1) of an item the candidate would replace in some slot
//! evaluated (the log holds nothing about what the candidate's item earns there), nor one where
//! the candidate's call failed on some decision; each says why.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The rewards joined to logged decisions by the caller: `decision_id`, `item_id`, `reward`.
#[derive(Debug, Default)]
pub struct Rewards {
    by_decision: HashMap<String, Vec<(String, f64, usize)>>,
    /// What reading the file found.
    pub report: RewardsReport,
}

/// What reading a rewards file found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RewardsReport {
    /// The file.
    pub file: PathBuf,
    /// Rewards read.
    pub rewards: usize,
    /// Lines that are not rewards, as `file:line: why`; the rest is still read.
    pub bad: Vec<String>,
    /// Rewards for decisions the logs do not hold, as `file:line: ...`.
    pub unknown_decisions: Vec<String>,
    /// Rewards for items not in their decision's answer, as `file:line: ...`.
    pub unknown_items: Vec<String>,
}

#[derive(Deserialize)]
struct Line {
    decision_id: String,
    item_id: String,
    reward: f64,
}

impl Rewards {
    /// Reads a rewards file: CSV with the header `decision_id,item_id,reward` (a name ending in
    /// `.csv`), otherwise JSON lines `{"decision_id": ..., "item_id": ..., "reward": ...}`. A
    /// reward must be a finite number; several rewards for one item of one decision add up.
    pub fn read(path: &Path) -> anyhow::Result<Rewards> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let mut rewards =
            Rewards { report: RewardsReport { file: path.to_owned(), ..Default::default() }, ..Default::default() };
        let add = |number: usize, line: Result<Line, String>, rewards: &mut Rewards| match line {
            Ok(line) if line.reward.is_finite() => {
                rewards.report.rewards += 1;
                rewards.by_decision.entry(line.decision_id).or_default().push((line.item_id, line.reward, number));
            }
            Ok(line) => rewards.report.bad.push(format!(
                "{}:{number}: the reward {} is not a finite number",
                path.display(),
                line.reward
            )),
            Err(why) => rewards.report.bad.push(format!("{}:{number}: {why}", path.display())),
        };
        if path.extension().is_some_and(|e| e == "csv") {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let headers = reader.headers().map_err(|e| anyhow::anyhow!("{}:1: {e}", path.display()))?.clone();
            for wanted in ["decision_id", "item_id", "reward"] {
                if !headers.iter().any(|h| h == wanted) {
                    anyhow::bail!(
                        "{}:1: the header has no `{wanted}` column (it needs decision_id,item_id,reward; it has {})",
                        path.display(),
                        headers.iter().collect::<Vec<_>>().join(",")
                    );
                }
            }
            for row in reader.records() {
                match row {
                    Ok(row) => {
                        let line = row.position().map_or(0, |p| p.line() as usize);
                        add(line, row.deserialize::<Line>(Some(&headers)).map_err(|e| e.to_string()), &mut rewards);
                    }
                    Err(error) => {
                        let line = error.position().map_or(0, |p| p.line() as usize);
                        add(line, Err(error.to_string()), &mut rewards);
                    }
                }
            }
        } else {
            for (index, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                add(index + 1, serde_json::from_str(line).map_err(|e| format!("not a reward: {e}")), &mut rewards);
            }
        }
        Ok(rewards)
    }

    /// Rewards of the decision `id` by item id, each with the line it came from.
    fn of(&self, id: &str) -> &[(String, f64, usize)] {
        self.by_decision.get(id).map_or(&[], Vec::as_slice)
    }

    /// The report with every reward noted whose decision is not among `decisions` (id → the
    /// answer's item ids), or whose item is not in that decision's answer.
    pub fn check(&self, decisions: &HashMap<&str, &[String]>) -> RewardsReport {
        let file = self.report.file.display().to_string();
        let mut unknown_decisions = Vec::new();
        let mut unknown_items = Vec::new();
        for (id, rewards) in &self.by_decision {
            for (item, _, line) in rewards {
                match decisions.get(id.as_str()) {
                    None => unknown_decisions.push((*line, format!("{file}:{line}: no logged decision `{id}`"))),
                    Some(items) if !items.contains(item) => unknown_items
                        .push((*line, format!("{file}:{line}: item `{item}` is not in the answer of decision `{id}`"))),
                    Some(_) => {}
                }
            }
        }
        unknown_decisions.sort();
        unknown_items.sort();
        RewardsReport {
            unknown_decisions: unknown_decisions.into_iter().map(|(_, m)| m).collect(),
            unknown_items: unknown_items.into_iter().map(|(_, m)| m).collect(),
            ..self.report.clone()
        }
    }

    /// Whether any reward was read.
    pub fn is_empty(&self) -> bool {
        self.by_decision.is_empty()
    }
}

/// One logged decision as the estimators see it.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The decision's id.
    pub id: String,
    /// Its surface.
    pub surface: String,
    /// The logged answer's item ids, best first.
    pub logged: Vec<String>,
    /// The logged propensity of each, or why there are none.
    pub propensities: Result<Vec<f64>, String>,
    /// For each slot, the candidate's distribution over items (item id, probability), or why
    /// its call failed.
    pub target: Result<Vec<Vec<(String, f64)>>, String>,
}

/// An estimate with its interval.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Estimate {
    /// The estimate: expected reward per decision, summed over the slots evaluated.
    pub value: f64,
    /// The 95 % bootstrap interval's lower end.
    pub low: f64,
    /// Its upper end.
    pub high: f64,
}

/// A slot's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SlotReport {
    /// The position, from 0.
    pub position: usize,
    /// Decisions with an answer this long.
    pub decisions: usize,
    /// Kish's effective sample size of the slot's weights.
    pub ess: f64,
    /// The mean weight (1 in expectation when the propensities are right).
    pub mean_weight: f64,
    /// Why the slot cannot be estimated, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The off-policy estimates of one surface.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The surface.
    pub surface: String,
    /// Decisions evaluated.
    pub decisions: usize,
    /// Slots evaluated per decision.
    pub positions: usize,
    /// Rewards that matched an item of an evaluated decision.
    pub rewards: usize,
    /// The logged policy's observed reward per decision.
    pub logged: Estimate,
    /// Inverse propensity scoring; `None` when refused.
    pub ips: Option<Estimate>,
    /// Self-normalised IPS.
    pub snips: Option<Estimate>,
    /// Doubly robust.
    pub dr: Option<Estimate>,
    /// The smallest effective sample size over the slots.
    pub ess: f64,
    /// Per slot.
    pub slots: Vec<SlotReport>,
    /// Why there is no estimate, if there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The rows one decision contributes: per slot, (weight, reward, direct-method term, q of the
/// logged item).
struct Row {
    slots: Vec<Option<Slot>>,
}

#[derive(Clone, Copy)]
struct Slot {
    weight: f64,
    reward: f64,
    direct: f64,
    q_logged: f64,
}

/// Estimates the candidate's value on each surface's observations. `positions` limits the slots
/// evaluated (default: the longest logged answer).
pub fn evaluate(observations: &[Observation], rewards: &Rewards, positions: Option<usize>) -> Vec<Evaluation> {
    let mut surfaces: Vec<&str> = observations.iter().map(|o| o.surface.as_str()).collect();
    surfaces.sort_unstable();
    surfaces.dedup();
    surfaces
        .into_iter()
        .map(|surface| {
            let of_surface: Vec<&Observation> = observations.iter().filter(|o| o.surface == surface).collect();
            evaluate_surface(surface, &of_surface, rewards, positions)
        })
        .collect()
}

fn evaluate_surface(
    surface: &str,
    observations: &[&Observation],
    rewards: &Rewards,
    positions: Option<usize>,
) -> Evaluation {
    let longest = observations.iter().map(|o| o.logged.len()).max().unwrap_or(0);
    let positions = positions.map_or(longest, |p| p.min(longest));
    // Rewards by slot, from the logged items' ids.
    let mut matched = 0;
    let observed: Vec<Vec<f64>> = observations
        .iter()
        .map(|o| {
            let mut slot_rewards = vec![0.0; o.logged.len()];
            for (item, reward, _) in rewards.of(&o.id) {
                if let Some(k) = o.logged.iter().position(|logged| logged == item) {
                    slot_rewards[k] += reward;
                    if k < positions {
                        matched += 1;
                    }
                }
            }
            slot_rewards
        })
        .collect();
    let logged_totals: Vec<f64> = observed.iter().map(|r| r.iter().take(positions).sum()).collect();
    let [logged] = bootstrap(observations.len(), |sample| [mean(sample.iter().map(|&i| logged_totals[i]))]);
    let mut evaluation = Evaluation {
        surface: surface.to_owned(),
        decisions: observations.len(),
        positions,
        rewards: matched,
        logged,
        ips: None,
        snips: None,
        dr: None,
        ess: 0.0,
        slots: Vec::new(),
        refused: None,
    };
    let failed: Vec<&&Observation> = observations.iter().filter(|o| o.target.is_err()).collect();
    if let Some(first) = failed.first() {
        evaluation.refused = Some(format!(
            "the candidate failed on {} of {} decisions (for example {}: {}): an estimate without them would \
             describe only the requests it can answer",
            failed.len(),
            observations.len(),
            first.id,
            first.target.as_ref().err().map_or("", String::as_str)
        ));
        return evaluation;
    }
    let missing: Vec<&&Observation> = observations.iter().filter(|o| o.propensities.is_err()).collect();
    if let Some(first) = missing.first() {
        evaluation.refused = Some(format!(
            "{} of {} decisions have no propensities (for example {}: {}): no estimate without the logged \
             policy's probabilities",
            missing.len(),
            observations.len(),
            first.id,
            first.propensities.as_ref().err().map_or("", String::as_str)
        ));
        return evaluation;
    }
    // The reward model: each item's mean reward at each slot, shrunk towards the slot's mean.
    let mut slot_sum = vec![(0.0, 0usize); positions];
    let mut item_sum: HashMap<(&str, usize), (f64, usize)> = HashMap::new();
    for (o, r) in observations.iter().zip(&observed) {
        for k in 0..positions.min(o.logged.len()) {
            slot_sum[k].0 += r[k];
            slot_sum[k].1 += 1;
            let entry = item_sum.entry((o.logged[k].as_str(), k)).or_insert((0.0, 0));
            entry.0 += r[k];
            entry.1 += 1;
        }
    }
    let slot_mean: Vec<f64> = slot_sum.iter().map(|&(s, n)| if n == 0 { 0.0 } else { s / n as f64 }).collect();
    let q = |item: &str, k: usize| match item_sum.get(&(item, k)) {
        Some(&(sum, n)) => (sum + slot_mean[k]) / (n as f64 + 1.0),
        None => slot_mean[k],
    };
    let mut unsupported: Vec<(usize, &str)> = Vec::new();
    let rows: Vec<Row> = observations
        .iter()
        .zip(&observed)
        .map(|(o, r)| {
            let propensities = o.propensities.as_ref().expect("checked above");
            let slots = (0..positions)
                .map(|k| {
                    let item = o.logged.get(k)?;
                    let target = o.target.as_ref().ok().and_then(|t| t.get(k)).map_or(&[][..], Vec::as_slice);
                    let p = propensities.get(k).copied().unwrap_or(1.0);
                    let pi = target.iter().filter(|(b, _)| b == item).map(|(_, p)| p).sum::<f64>();
                    if p >= 1.0 && pi < 1.0 - 1e-9 {
                        unsupported.push((k, &o.id));
                    }
                    let direct = target.iter().map(|(b, p)| p * q(b, k)).sum();
                    Some(Slot { weight: pi / p, reward: r[k], direct, q_logged: q(item, k) })
                })
                .collect();
            Row { slots }
        })
        .collect();
    for k in 0..positions {
        let weights: Vec<f64> = rows.iter().filter_map(|row| row.slots[k].map(|s| s.weight)).collect();
        let (sum, squares) = weights.iter().fold((0.0, 0.0), |(s, q), w| (s + w, q + w * w));
        let refused = unsupported.iter().filter(|(slot, _)| *slot == k).collect::<Vec<_>>();
        evaluation.slots.push(SlotReport {
            position: k,
            decisions: weights.len(),
            ess: if squares > 0.0 { sum * sum / squares } else { 0.0 },
            mean_weight: if weights.is_empty() { 0.0 } else { sum / weights.len() as f64 },
            refused: refused.first().map(|(_, id)| {
                format!(
                    "in {} decisions (for example {id}) the logged policy placed its item here with probability \
                     1 and the candidate would place another: the log says nothing about what that would earn",
                    refused.len()
                )
            }),
        });
    }
    evaluation.ess = evaluation.slots.iter().map(|s| s.ess).fold(f64::INFINITY, f64::min);
    if !evaluation.ess.is_finite() {
        evaluation.ess = 0.0;
    }
    if let Some(slot) = evaluation.slots.iter().find(|s| s.refused.is_some()) {
        evaluation.refused = Some(format!(
            "position {}: {} (evaluate fewer positions with --positions, or log a policy that explores there)",
            slot.position + 1,
            slot.refused.as_deref().unwrap_or_default()
        ));
        return evaluation;
    }
    // Per decision: the IPS and DR terms summed over the slots, and per slot the self-normalised
    // estimator's numerator and denominator; one resampling serves all three.
    let ips: Vec<f64> = rows.iter().map(|row| row.slots.iter().flatten().map(|s| s.weight * s.reward).sum()).collect();
    let dr: Vec<f64> = rows
        .iter()
        .map(|row| row.slots.iter().flatten().map(|s| s.direct + s.weight * (s.reward - s.q_logged)).sum())
        .collect();
    // A slot only some answers have (answers differ in length) counts, as in IPS and DR, for the
    // share of decisions that have it.
    let snips = |sample: &[usize]| -> f64 {
        let mut sums = vec![(0.0, 0.0, 0usize); positions];
        for &i in sample {
            for (sum, slot) in sums.iter_mut().zip(&rows[i].slots) {
                if let Some(s) = slot {
                    sum.0 += s.weight * s.reward;
                    sum.1 += s.weight;
                    sum.2 += 1;
                }
            }
        }
        let n = sample.len().max(1) as f64;
        sums.iter().map(|&(num, den, with)| if den > 0.0 { num / den * with as f64 / n } else { 0.0 }).sum()
    };
    let [ips, snips, dr] = bootstrap(rows.len(), |sample| {
        [mean(sample.iter().map(|&i| ips[i])), snips(sample), mean(sample.iter().map(|&i| dr[i]))]
    });
    evaluation.ips = Some(ips);
    evaluation.snips = Some(snips);
    evaluation.dr = Some(dr);
    evaluation
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Resamples taken for an interval.
const RESAMPLES: usize = 1000;

/// `statistics` of `n` decisions, each with its 95 % percentile interval over resamples with
/// replacement drawn from a fixed seed (so a report is reproducible). `statistics` gets the
/// indices of one sample.
fn bootstrap<const N: usize>(n: usize, statistics: impl Fn(&[usize]) -> [f64; N]) -> [Estimate; N] {
    let all: Vec<usize> = (0..n).collect();
    let values = statistics(&all);
    if n == 0 {
        return values.map(|value| Estimate { value, low: value, high: value });
    }
    let mut random = <rand_xoshiro::SplitMix64 as rand_core::SeedableRng>::seed_from_u64(0x005e_ed0f_0be5);
    let mut next = || rand_core::Rng::next_u64(&mut random);
    let mut sample = vec![0; n];
    let mut resampled: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(RESAMPLES));
    for _ in 0..RESAMPLES {
        for slot in &mut sample {
            *slot = (next() % n as u64) as usize;
        }
        for (into, value) in resampled.iter_mut().zip(statistics(&sample)) {
            into.push(value);
        }
    }
    let mut index = 0;
    values.map(|value| {
        let sorted = &mut resampled[index];
        index += 1;
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
        Estimate { value, low: at(0.025), high: at(0.975) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(id: &str, logged: &[&str], propensities: &[f64], target: &[&str]) -> Observation {
        Observation {
            id: id.to_owned(),
            surface: "banners".to_owned(),
            logged: logged.iter().map(|s| (*s).to_owned()).collect(),
            propensities: Ok(propensities.to_vec()),
            target: Ok(target.iter().map(|item| vec![((*item).to_owned(), 1.0)]).collect()),
        }
    }

    fn rewards(lines: &[(&str, &str, f64)]) -> Rewards {
        let mut rewards = Rewards::default();
        for (number, (decision, item, reward)) in lines.iter().enumerate() {
            rewards.by_decision.entry((*decision).to_owned()).or_default().push((
                (*item).to_owned(),
                *reward,
                number + 1,
            ));
        }
        rewards
    }

    #[test]
    fn the_estimators_weigh_the_slots_where_the_candidate_agrees_by_their_propensities() {
        // Two decisions, one slot: the candidate agrees on the first (p = 0.5, clicked) and not on
        // the second (p = 0.25, clicked).
        let observations = [observation("a", &["x"], &[0.5], &["x"]), observation("b", &["y"], &[0.25], &["x"])];
        let clicks = rewards(&[("a", "x", 1.0), ("b", "y", 1.0)]);
        let evaluation = &evaluate(&observations, &clicks, None)[0];
        assert_eq!(evaluation.logged.value, 1.0);
        assert_eq!(evaluation.ips.unwrap().value, (2.0 * 1.0 + 0.0) / 2.0);
        assert_eq!(evaluation.snips.unwrap().value, 2.0 / 2.0);
        // ESS of weights (2, 0): 4 / 4.
        assert_eq!(evaluation.slots[0].ess, 1.0);
        // A slot only one of the two answers has counts for half the decisions in SNIPS too.
        let uneven =
            [observation("a", &["x", "y"], &[0.5, 0.5], &["x", "y"]), observation("b", &["x"], &[0.5], &["x"])];
        let uneven_rewards = rewards(&[("a", "y", 1.0)]);
        let evaluation = &evaluate(&uneven, &uneven_rewards, None)[0];
        assert_eq!(evaluation.snips.unwrap().value, 0.5, "slot 2: 1 earned of 1 weighted, in half the decisions");
        assert_eq!(evaluation.ips.unwrap().value, 1.0, "(2 × 1) / 2 decisions");
        let dr = evaluation.dr.unwrap().value;
        assert!(dr.is_finite() && evaluation.refused.is_none(), "{dr}");
    }

    #[test]
    fn decisions_without_propensities_or_support_are_refused_with_the_reason() {
        let mut old = observation("old", &["x"], &[], &["x"]);
        old.propensities = Err("made through relish:policy@0.1.0".to_owned());
        let evaluation = &evaluate(&[old, observation("new", &["x"], &[0.5], &["x"])], &Rewards::default(), None)[0];
        let refused = evaluation.refused.as_deref().unwrap();
        assert!(refused.contains("1 of 2 decisions have no propensities") && refused.contains("old"), "{refused}");
        assert!(evaluation.ips.is_none());

        let mut failed = observation("f", &["x"], &[0.5], &["x"]);
        failed.target = Err("the replay failed (timeout)".to_owned());
        let evaluation = &evaluate(&[failed, observation("ok", &["x"], &[0.5], &["x"])], &Rewards::default(), None)[0];
        let refused = evaluation.refused.as_deref().unwrap();
        assert!(
            refused.contains("the candidate failed on 1 of 2 decisions") && refused.contains("timeout"),
            "{refused}"
        );

        let certain = [observation("c", &["x", "y"], &[0.5, 1.0], &["x", "z"])];
        let evaluation = &evaluate(&certain, &Rewards::default(), None)[0];
        let refused = evaluation.refused.as_deref().unwrap();
        assert!(refused.starts_with("position 2:") && refused.contains("probability 1"), "{refused}");
        let evaluation = &evaluate(&certain, &Rewards::default(), Some(1))[0];
        assert!(evaluation.refused.is_none() && evaluation.ips.is_some(), "one position is estimable");
    }

    #[test]
    fn a_rewards_file_names_its_bad_lines_and_unknown_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rewards.csv");
        std::fs::write(&path, "decision_id,item_id,reward\na,x,1\nb,y,lots\nghost,x,1\na,x,inf\n").unwrap();
        let rewards = Rewards::read(&path).unwrap();
        let (a, b) = (vec!["x".to_owned()], vec!["z".to_owned()]);
        let report = rewards.check(&[("a", &a[..]), ("b", &b[..])].into_iter().collect());
        assert_eq!(report.rewards, 2);
        assert_eq!(report.bad.len(), 2, "{:?}", report.bad);
        assert!(report.bad[0].contains("rewards.csv:3:"), "{:?}", report.bad);
        assert!(report.bad[1].contains("rewards.csv:5:") && report.bad[1].contains("finite"));
        assert_eq!(report.unknown_decisions.len(), 1);
        assert!(report.unknown_decisions[0].contains("rewards.csv:4: no logged decision `ghost`"));
        assert!(report.unknown_items.is_empty(), "b's bad line was not read");
        std::fs::write(&path, "decision_id,item_id,reward\nb,y,1\n").unwrap();
        let report = Rewards::read(&path).unwrap().check(&[("b", &b[..])].into_iter().collect());
        assert_eq!(
            report.unknown_items,
            [format!("{}:2: item `y` is not in the answer of decision `b`", path.display())]
        );

        let bad_header = dir.path().join("bad.csv");
        std::fs::write(&bad_header, "decision,item,reward\n").unwrap();
        let error = Rewards::read(&bad_header).unwrap_err().to_string();
        assert!(error.contains("bad.csv:1:") && error.contains("`decision_id`"), "{error}");

        let jsonl = dir.path().join("rewards.jsonl");
        std::fs::write(&jsonl, "{\"decision_id\":\"a\",\"item_id\":\"x\",\"reward\":1}\nnot json\n").unwrap();
        let rewards = Rewards::read(&jsonl).unwrap();
        assert_eq!((rewards.report.rewards, rewards.report.bad.len()), (1, 1));
        assert!(rewards.report.bad[0].contains("rewards.jsonl:2: not a reward"));
    }
}
