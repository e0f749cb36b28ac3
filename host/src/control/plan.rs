//! A surface's serving plan: which versions answer (arms, with weights and sticky bucket ranges),
//! which run beside them on a sample of requests without answering (shadows), and the salt that
//! assigns users to arms.
//!
//! **Bucketing.** A request's bucket is
//!
//! ```text
//! bucket = xxh3_64(salt + "\n" + surface + "\n" + key) mod 10_000
//! ```
//!
//! (XXH3, 64 bits, seed 0, over the UTF-8 bytes; `key` is `user.id`, else the request's
//! `bucket_key`). Each arm owns a set of bucket ranges whose sizes add up to its weight in basis
//! points, so an analyst recomputes any user's arm offline from the plan's `buckets` (shown by the
//! admin API and kept in every revision). A request with neither key is assigned by its seed
//! (`seed mod 10_000`) and is not sticky.
//!
//! **Stickiness across weight changes.** A new plan with the same salt keeps every arm's buckets
//! as far as its weight allows: an arm that shrinks gives up the buckets it acquired last, an arm
//! that grows takes released buckets (lowest first), and an arm whose weight is unchanged keeps
//! exactly its buckets. So growing a canary from 5 % to 20 % moves exactly the users of the grown
//! range into it, never a user between two unchanged arms, and shrinking it back returns the
//! original assignment. A new salt re-randomises on purpose: arms get contiguous ranges in order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::runtime::Digest;

/// Buckets per surface: weights are in basis points of this.
pub const BUCKETS: u16 = 10_000;
/// The most arms a plan may have.
pub const MAX_ARMS: usize = 16;
/// The most shadows a plan may have.
pub const MAX_SHADOWS: usize = 4;

/// A plan revision number: per surface, starting at 1 and increasing by one with every change.
/// Revision 0 means "the surface has no plan yet".
pub type Revision = u64;

/// A half-open range of buckets `[start, end)`, written `[start, end]` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[u16; 2]", into = "[u16; 2]")]
pub struct BucketRange {
    /// The first bucket.
    pub start: u16,
    /// One past the last bucket.
    pub end: u16,
}

impl From<[u16; 2]> for BucketRange {
    fn from([start, end]: [u16; 2]) -> Self {
        BucketRange { start, end }
    }
}

impl From<BucketRange> for [u16; 2] {
    fn from(range: BucketRange) -> Self {
        [range.start, range.end]
    }
}

impl BucketRange {
    fn len(self) -> u32 {
        u32::from(self.end.saturating_sub(self.start))
    }
}

/// One version that answers a share of a surface's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    /// The arm's name, unique in the plan: `policy@version` unless the plan names it (two arms of
    /// one version with different parameters need names).
    pub name: String,
    /// Policy name.
    pub policy: String,
    /// Version.
    pub version: String,
    /// The version's digest when the plan was made, so that the revision keeps naming the same
    /// bytes.
    pub digest: Digest,
    /// The share of requests, in basis points (the weights of a plan add up to 10,000).
    pub weight: u16,
    /// The parameters the arm's calls get.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The buckets the arm owns, in the order it acquired them; their sizes add up to `weight`.
    #[serde(default)]
    pub buckets: Vec<BucketRange>,
}

impl Arm {
    /// `policy@version`.
    pub fn version_ref(&self) -> String {
        format!("{}@{}", self.policy, self.version)
    }
}

/// A version evaluated beside the arms on a sample of requests, whose answer is compared and
/// never sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    /// The shadow's name, unique among the plan's shadows: `policy@version` unless given.
    pub name: String,
    /// Policy name.
    pub policy: String,
    /// Version.
    pub version: String,
    /// The version's digest when the plan was made.
    pub digest: Digest,
    /// The share of requests it runs on, `0 < sample <= 1`.
    pub sample: f64,
    /// The parameters its calls get.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl Eq for Shadow {}

impl Shadow {
    /// `policy@version`.
    pub fn version_ref(&self) -> String {
        format!("{}@{}", self.policy, self.version)
    }

    /// The sample as a threshold on `0..10_000`.
    pub fn threshold(&self) -> u32 {
        (self.sample * f64::from(BUCKETS)).round() as u32
    }
}

/// What serves a surface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The arms, in their fixed order; the first is the control arm.
    pub arms: Vec<Arm>,
    /// The experiment's salt (see the [module documentation](self)).
    #[serde(default)]
    pub salt: String,
    /// Versions evaluated beside the arms, off the response path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<Shadow>,
}

impl Plan {
    /// The names of every version the plan calls (arms and shadows), with their digests.
    pub fn versions(&self) -> impl Iterator<Item = (&str, &str, Digest)> {
        let arms = self.arms.iter().map(|a| (a.policy.as_str(), a.version.as_str(), a.digest));
        arms.chain(self.shadows.iter().map(|s| (s.policy.as_str(), s.version.as_str(), s.digest)))
    }

    /// Whether the plan calls `policy@version` (as an arm or a shadow).
    pub fn uses(&self, policy: &str, version: &str) -> bool {
        self.versions().any(|(p, v, _)| (p, v) == (policy, version))
    }

    /// The bucket → arm table: `table[bucket]` is the index of the arm that owns it.
    pub fn table(&self) -> Box<[u8]> {
        let mut table = vec![0u8; usize::from(BUCKETS)].into_boxed_slice();
        for (index, arm) in self.arms.iter().enumerate() {
            for range in &arm.buckets {
                table[usize::from(range.start)..usize::from(range.end)].fill(index as u8);
            }
        }
        table
    }

    /// Checks that the buckets cover `0..10_000` exactly once and match the weights: a plan read
    /// from disk or the fleet is used only if it does.
    pub fn check_buckets(&self) -> Result<(), String> {
        let mut owner = vec![u8::MAX; usize::from(BUCKETS)];
        if self.arms.is_empty() || self.arms.len() > MAX_ARMS {
            return Err(format!("a plan has 1 to {MAX_ARMS} arms, this one has {}", self.arms.len()));
        }
        for (index, arm) in self.arms.iter().enumerate() {
            let mut owned = 0;
            for range in &arm.buckets {
                if range.start >= range.end || range.end > BUCKETS {
                    return Err(format!(
                        "arm `{}`: bucket range [{}, {}) is empty or past {BUCKETS}",
                        arm.name, range.start, range.end
                    ));
                }
                for slot in &mut owner[usize::from(range.start)..usize::from(range.end)] {
                    if *slot != u8::MAX {
                        return Err(format!("arm `{}`: a bucket is owned twice", arm.name));
                    }
                    *slot = index as u8;
                }
                owned += range.len();
            }
            if owned != u32::from(arm.weight) {
                return Err(format!("arm `{}` owns {owned} buckets but weighs {}", arm.name, arm.weight));
            }
        }
        if owner.contains(&u8::MAX) {
            return Err("the arms' buckets do not cover 0..10000".to_owned());
        }
        Ok(())
    }

    /// Assigns buckets to `self.arms` by their weights (which add up to 10,000), keeping what
    /// `previous` assigned where the salt is the same (see the [module documentation](self)).
    pub fn allocate(&mut self, previous: Option<&Plan>) {
        let previous = previous.filter(|p| p.salt == self.salt);
        let mut free: Vec<BucketRange> = Vec::new();
        match previous {
            None => {
                let mut start = 0;
                for arm in &mut self.arms {
                    let end = start + arm.weight;
                    arm.buckets = if arm.weight > 0 { vec![BucketRange { start, end }] } else { Vec::new() };
                    start = end;
                }
                return;
            }
            Some(previous) => {
                for old in &previous.arms {
                    if !self.arms.iter().any(|arm| arm.name == old.name) {
                        free.extend(&old.buckets);
                    }
                }
                for arm in &mut self.arms {
                    arm.buckets = previous
                        .arms
                        .iter()
                        .find(|old| old.name == arm.name)
                        .map(|old| old.buckets.clone())
                        .unwrap_or_default();
                    // Shrink: give up the buckets acquired last.
                    let mut excess = owned(&arm.buckets).saturating_sub(u32::from(arm.weight));
                    while excess > 0 {
                        let last = arm.buckets.last_mut().expect("an arm with excess has buckets");
                        let take = excess.min(last.len()) as u16;
                        free.push(BucketRange { start: last.end - take, end: last.end });
                        last.end -= take;
                        if last.start == last.end {
                            arm.buckets.pop();
                        }
                        excess -= u32::from(take);
                    }
                }
            }
        }
        // Grow: take released buckets, lowest first, arm by arm in order.
        free.sort_by_key(|range| range.start);
        let mut free = merge(free).into_iter();
        let mut pending: Option<BucketRange> = None;
        for arm in &mut self.arms {
            let mut missing = u32::from(arm.weight).saturating_sub(owned(&arm.buckets));
            while missing > 0 {
                let Some(range) = pending.take().or_else(|| free.next()) else { break };
                let take = missing.min(range.len()) as u16;
                push(&mut arm.buckets, BucketRange { start: range.start, end: range.start + take });
                if range.start + take < range.end {
                    pending = Some(BucketRange { start: range.start + take, end: range.end });
                }
                missing -= u32::from(take);
            }
        }
    }
}

fn owned(ranges: &[BucketRange]) -> u32 {
    ranges.iter().map(|r| r.len()).sum()
}

/// Appends `range`, joining it to the last range when they touch.
fn push(ranges: &mut Vec<BucketRange>, range: BucketRange) {
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

/// Joins touching ranges of a sorted list.
fn merge(sorted: Vec<BucketRange>) -> Vec<BucketRange> {
    let mut merged = Vec::with_capacity(sorted.len());
    for range in sorted {
        push(&mut merged, range);
    }
    merged
}

/// The bucket of a key on a surface under a salt (see the [module documentation](self)).
pub fn bucket(salt: &str, surface: &str, key: &str) -> u16 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(salt.as_bytes());
    hasher.update(b"\n");
    hasher.update(surface.as_bytes());
    hasher.update(b"\n");
    hasher.update(key.as_bytes());
    (hasher.digest() % u64::from(BUCKETS)) as u16
}

/// The bucket of a request that has no key: its seed, not sticky.
pub fn seed_bucket(seed: u64) -> u16 {
    (seed % u64::from(BUCKETS)) as u16
}

/// Whether a shadow runs on a request: a draw from the request's seed, mixed with the shadow's
/// position so that two shadows of one plan draw independently.
pub fn sampled(seed: u64, shadow: usize, threshold: u32) -> bool {
    let mixed = xxhash_rust::xxh3::xxh3_64_with_seed(&seed.to_le_bytes(), shadow as u64 + 1);
    ((mixed % u64::from(BUCKETS)) as u32) < threshold
}

/// Turns weights as given (basis points adding up to 10,000, or percentages adding up to 100)
/// into basis points. The error says what the weights add up to.
pub fn basis_points(weights: &[f64]) -> Result<Vec<u16>, String> {
    if let Some(bad) = weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
        return Err(format!("a weight is {bad}: weights are numbers from 0 up"));
    }
    let sum: f64 = weights.iter().sum();
    let integers = weights.iter().all(|w| w.fract() == 0.0);
    if integers && sum == f64::from(BUCKETS) {
        return Ok(weights.iter().map(|&w| w as u16).collect());
    }
    if (sum - 100.0).abs() < 1e-9 {
        let scaled: Vec<f64> = weights.iter().map(|w| w * 100.0).collect();
        if let Some(fine) = scaled.iter().find(|w| (*w - w.round()).abs() > 1e-6) {
            return Err(format!("a weight of {}% is finer than 0.01 %", fine / 100.0));
        }
        return Ok(scaled.iter().map(|w| w.round() as u16).collect());
    }
    Err(format!("the weights add up to {sum}: they must add up to 10000 (basis points) or 100 (percent)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(name: &str, weight: u16) -> Arm {
        Arm {
            name: name.to_owned(),
            policy: name.to_owned(),
            version: "1".to_owned(),
            digest: Digest::of(name.as_bytes()),
            weight,
            params: BTreeMap::new(),
            buckets: Vec::new(),
        }
    }

    fn plan(arms: &[(&str, u16)], previous: Option<&Plan>) -> Plan {
        let mut plan =
            Plan { arms: arms.iter().map(|(n, w)| arm(n, *w)).collect(), salt: "s".to_owned(), shadows: Vec::new() };
        plan.allocate(previous);
        plan.check_buckets().unwrap();
        plan
    }

    #[test]
    fn a_first_plan_gives_contiguous_ranges_in_order() {
        let p = plan(&[("a", 7000), ("b", 2000), ("c", 1000)], None);
        let ranges: Vec<Vec<BucketRange>> = p.arms.iter().map(|a| a.buckets.clone()).collect();
        assert_eq!(ranges, [vec![[0, 7000].into()], vec![[7000, 9000].into()], vec![[9000, 10000].into()]]);
    }

    #[test]
    fn growing_a_canary_moves_only_the_grown_range_and_shrinking_it_back_restores_the_assignment() {
        let before = plan(&[("control", 9500), ("canary", 500)], None);
        let after = plan(&[("control", 8000), ("canary", 2000)], Some(&before));
        let (t0, t1) = (before.table(), after.table());
        for bucket in 0..usize::from(BUCKETS) {
            if t0[bucket] == 1 {
                assert_eq!(t1[bucket], 1, "a canary user stays in the canary");
            }
        }
        let moved = (0..usize::from(BUCKETS)).filter(|&b| t0[b] != t1[b]).count();
        assert_eq!(moved, 1500, "exactly the grown range moves");
        let back = plan(&[("control", 9500), ("canary", 500)], Some(&after));
        assert_eq!(back.table(), before.table());
    }

    #[test]
    fn no_user_moves_between_two_unchanged_arms() {
        let before = plan(&[("a", 7000), ("b", 2000), ("c", 1000)], None);
        let after = plan(&[("a", 6000), ("b", 2000), ("c", 2000)], Some(&before));
        let (t0, t1) = (before.table(), after.table());
        for bucket in 0..usize::from(BUCKETS) {
            assert_eq!(t0[bucket] == 1, t1[bucket] == 1, "b keeps exactly its buckets");
            if t0[bucket] != t1[bucket] {
                assert_eq!((t0[bucket], t1[bucket]), (0, 2), "only a → c");
            }
        }
    }

    #[test]
    fn a_removed_arm_gives_its_buckets_to_the_arm_that_grows_and_a_new_salt_reshuffles() {
        let before = plan(&[("a", 9000), ("b", 1000)], None);
        let after = plan(&[("a", 10000)], Some(&before));
        assert_eq!(after.arms[0].buckets, vec![BucketRange { start: 0, end: 10000 }]);
        let with_new = plan(&[("a", 5000), ("n", 5000)], Some(&before));
        assert_eq!(owned(&with_new.arms[1].buckets), 5000);
        let mut salted = with_new.clone();
        salted.salt = "other".to_owned();
        salted.allocate(Some(&with_new));
        assert_eq!(salted.arms[1].buckets, vec![BucketRange { start: 5000, end: 10000 }]);
    }

    #[test]
    fn zero_weight_arms_own_nothing() {
        let p = plan(&[("a", 10000), ("b", 0)], None);
        assert!(p.arms[1].buckets.is_empty());
        let q = plan(&[("a", 5000), ("b", 5000)], Some(&p));
        assert_eq!(owned(&q.arms[1].buckets), 5000);
    }

    #[test]
    fn broken_buckets_are_found() {
        let mut p = plan(&[("a", 5000), ("b", 5000)], None);
        p.arms[1].buckets[0].start = 4000;
        assert!(p.check_buckets().is_err());
    }

    #[test]
    fn weights_in_basis_points_or_percent() {
        assert_eq!(basis_points(&[9500.0, 500.0]).unwrap(), [9500, 500]);
        assert_eq!(basis_points(&[95.0, 5.0]).unwrap(), [9500, 500]);
        assert_eq!(basis_points(&[33.33, 33.33, 33.34]).unwrap(), [3333, 3333, 3334]);
        assert!(basis_points(&[90.0, 5.0]).unwrap_err().contains("add up to 95"));
        assert!(basis_points(&[-5.0, 105.0]).is_err());
        assert!(basis_points(&[99.995, 0.005]).unwrap_err().contains("finer"));
    }

    #[test]
    fn the_bucket_hash_is_the_documented_one() {
        // xxh3_64 of "salt\ndiscovery\nu-1", computed independently.
        let expected = xxhash_rust::xxh3::xxh3_64(b"salt\ndiscovery\nu-1") % 10_000;
        assert_eq!(u64::from(bucket("salt", "discovery", "u-1")), expected);
        assert_ne!(bucket("salt", "discovery", "u-1"), bucket("salt2", "discovery", "u-1"));
    }
}
