//! What a policy says about itself ([`Metadata`]), the rule its names follow, and the [`Digest`]
//! that identifies a version.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{LoadError, types};

/// The SHA-256 digest of a component's bytes: a version's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// The lowercase hex form, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Digest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex, &mut bytes).map_err(|_| format!("`{s}` is not a sha256 digest"))?;
        Ok(Digest(bytes))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a policy says about itself (the contract's `metadata`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Metadata {
    /// Policy name.
    pub name: String,
    /// Policy version.
    pub version: String,
    /// One sentence on what it does.
    pub description: String,
    /// Surfaces it is made for (`*` = any).
    pub surfaces: Vec<String>,
    /// Parameters it reads.
    pub params: Vec<ParamSpec>,
    /// Features it reads.
    pub features: Vec<FeatureSpec>,
}

/// A parameter a policy reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParamSpec {
    /// Key.
    pub name: String,
    /// Default value.
    pub default: String,
    /// Meaning.
    pub description: String,
}

/// A feature a policy reads.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FeatureSpec {
    /// Name or `prefix*`.
    pub name: String,
    /// `candidate` or `user`.
    pub scope: &'static str,
    /// Meaning.
    pub description: String,
}

/// Reads a feature back from its stored form (the registry's manifest). Written by hand because
/// `scope` is a `&'static str`, which derived code would borrow from the input.
impl<'de> Deserialize<'de> for FeatureSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Stored {
            name: String,
            scope: String,
            description: String,
        }
        let Stored { name, scope, description } = Stored::deserialize(deserializer)?;
        let scope = match scope.as_str() {
            "candidate" => "candidate",
            "user" => "user",
            other => return Err(serde::de::Error::custom(format!("unknown feature scope `{other}`"))),
        };
        Ok(FeatureSpec { name, scope, description })
    }
}

impl Metadata {
    pub(super) fn from_raw(raw: types::Metadata) -> Result<Self, LoadError> {
        let bad = |message: String| Err(LoadError::BadMetadata(message));
        if !is_identifier(&raw.name) {
            return bad(format!("name `{}` must be {IDENTIFIER_RULE}", raw.name));
        }
        if !is_identifier(&raw.version) {
            return bad(format!("version `{}` must be {IDENTIFIER_RULE}", raw.version));
        }
        if raw.surfaces.is_empty() {
            return bad("it lists no surfaces (use `*` for any surface)".to_owned());
        }
        for (i, param) in raw.params.iter().enumerate() {
            if raw.params[..i].iter().any(|p| p.name == param.name) {
                return bad(format!("parameter `{}` is declared twice", param.name));
            }
        }
        Ok(Metadata {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            surfaces: raw.surfaces,
            params: raw
                .params
                .into_iter()
                .map(|p| ParamSpec { name: p.name, default: p.default_value, description: p.description })
                .collect(),
            features: raw
                .features
                .into_iter()
                .map(|f| FeatureSpec {
                    name: f.name,
                    scope: match f.scope {
                        types::FeatureScope::Candidate => "candidate",
                        types::FeatureScope::User => "user",
                    },
                    description: f.description,
                })
                .collect(),
        })
    }

    /// Whether the policy says it is made for `surface`.
    pub fn supports(&self, surface: &str) -> bool {
        self.surfaces.iter().any(|s| s == "*" || s == surface)
    }
}

/// What [`is_identifier`] allows, worded for error messages.
pub const IDENTIFIER_RULE: &str = "1 to 64 characters of `a-z`, `A-Z`, `0-9`, `-`, `_` and `.`, not starting with `.` \
                                   and without `..`";

/// Whether `s` is a safe policy name, version or surface name (see [`IDENTIFIER_RULE`]).
///
/// Names travel in URL paths, log lines and file listings, so the set excludes path separators,
/// NUL, whitespace and `..` even where they would be harmless in the one place at hand.
pub fn is_identifier(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with('.')
        && !s.contains("..")
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
