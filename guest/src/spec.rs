//! A policy's static description of itself, turned into the contract's `metadata` record.

use crate::bindings::relish::policy::types as raw;

/// What a policy says about itself. Declared once as a constant; the host reads it through the
/// exported `metadata` function, and [`crate::Request::param`] takes parameter defaults from it.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The policy's name, for example `discovery`.
    pub name: &'static str,
    /// The policy's semantic version; usually `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// One sentence on what the policy does.
    pub description: &'static str,
    /// The surfaces it is made for; `"*"` means any.
    pub surfaces: &'static [&'static str],
    /// Every parameter it reads from the host's configuration.
    pub params: &'static [Param],
    /// Every feature it reads.
    pub features: &'static [Feature],
}

/// A parameter a policy reads, with its default.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// The key in the host's configuration, for example `eta_weight`.
    pub name: &'static str,
    /// The value used when the configuration does not set the key.
    pub default: &'static str,
    /// What it does, its unit and its sensible range.
    pub description: &'static str,
}

/// Where a feature comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureScope {
    /// A candidate feature column.
    Candidate,
    /// A user feature; a name ending in `*` is a prefix.
    User,
}

/// A feature a policy reads.
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    /// The feature's name, or a prefix ending in `*`.
    pub name: &'static str,
    /// Candidate or user feature.
    pub scope: FeatureScope,
    /// What the policy uses it for.
    pub description: &'static str,
}

impl Feature {
    /// A candidate feature column.
    pub const fn candidate(name: &'static str, description: &'static str) -> Self {
        Feature { name, scope: FeatureScope::Candidate, description }
    }

    /// A user feature (or a prefix of user features, ending in `*`).
    pub const fn user(name: &'static str, description: &'static str) -> Self {
        Feature { name, scope: FeatureScope::User, description }
    }
}

/// Joins lists of parameters or features into one array at compile time, so that a policy declares
/// its own and appends those of a shared library without repeating them (and without missing one
/// the library adds later).
///
/// `N` is the total length, usually inferred from the constant's type; a wrong `N` fails the build.
///
/// ```
/// use relish_guest::{Param, concat};
///
/// const SHARED: [Param; 1] = [Param { name: "w_rating", default: "0.6", description: "Weight of the rating." }];
/// const OWN: [Param; 1] = [Param { name: "boost", default: "1", description: "A boost." }];
/// const PARAMS: [Param; 2] = concat(&[&OWN, &SHARED]);
/// assert_eq!(PARAMS[1].name, "w_rating");
/// ```
pub const fn concat<T: Copy, const N: usize>(parts: &[&[T]]) -> [T; N] {
    let mut total = 0;
    let mut p = 0;
    while p < parts.len() {
        total += parts[p].len();
        p += 1;
    }
    assert!(total == N, "concat: the parts' lengths do not add up to N");
    assert!(N > 0, "concat: nothing to join");
    // Any element fills the array before it is overwritten; the first part that has one.
    let mut first = 0;
    while parts[first].is_empty() {
        first += 1;
    }
    let mut out = [parts[first][0]; N];
    let (mut i, mut p) = (0, 0);
    while p < parts.len() {
        let mut j = 0;
        while j < parts[p].len() {
            out[i] = parts[p][j];
            i += 1;
            j += 1;
        }
        p += 1;
    }
    out
}

impl Spec {
    /// The parameter declared under `name`, if any.
    pub fn param(&self, name: &str) -> Option<&'static Param> {
        self.params.iter().find(|param| crate::columns::same(param.name, name))
    }

    /// The contract's `metadata` record for this spec.
    pub fn to_raw(&self) -> raw::Metadata {
        raw::Metadata {
            name: self.name.to_owned(),
            version: self.version.to_owned(),
            description: self.description.to_owned(),
            surfaces: self.surfaces.iter().map(|s| (*s).to_owned()).collect(),
            params: self
                .params
                .iter()
                .map(|param| raw::ParamSpec {
                    name: param.name.to_owned(),
                    default_value: param.default.to_owned(),
                    description: param.description.to_owned(),
                })
                .collect(),
            features: self
                .features
                .iter()
                .map(|feature| raw::FeatureSpec {
                    name: feature.name.to_owned(),
                    scope: match feature.scope {
                        FeatureScope::Candidate => raw::FeatureScope::Candidate,
                        FeatureScope::User => raw::FeatureScope::User,
                    },
                    description: feature.description.to_owned(),
                })
                .collect(),
        }
    }
}
