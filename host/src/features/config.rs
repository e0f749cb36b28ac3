//! A feature store's configuration, `[features.stores.<name>]` in the server's TOML.
//!
//! ```toml
//! [features.stores.main]
//! backend = "redis"                    # or "memory"
//! url = "redis://127.0.0.1:6379/0"     # redis: where (redis://[user:password@]host:port/db)
//! prefix = "relish"                    # redis: keys are {prefix}:{entity}:{id} (default "relish")
//! encoding = "decimal"                 # redis: values as decimal text (default) or "f32le"
//! timeout_ms = 1000                    # how long one store fetch may take in the background
//!
//! [features.stores.main.cache]
//! max_entries = 1000000                # entities kept (default 1 000 000)
//! max_bytes = 268435456                # and their estimated size (default 256 MiB)
//! ttl_secs = 60                        # how long an entry is fresh (default 60)
//! entity_ttl_secs = { user = 30 }      # ... per entity kind
//! negative_ttl_secs = 10               # how long "the store has no such id" is believed
//! shards = 16                          # cache shards, each behind its own lock
//!
//! [features.stores.local]
//! backend = "memory"
//! path = "features.jsonl"              # memory: a JSONL or CSV file, reloaded when it changes
//! poll_ms = 1000                       # memory: how often the file is checked for changes
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A configuration error: the field (relative to the store's table, for example `url` or
/// `cache.max_bytes`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The field, relative to `[features.stores.<name>]`.
    pub field: String,
    /// What is wrong, and what to do about it.
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}

/// Which backend a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Redis: the online store ([`super::redis`]).
    Redis,
    /// A file loaded into memory ([`super::memory`]).
    Memory,
}

impl Backend {
    /// `redis` or `memory`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Memory => "memory",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How values are written in a Redis store (see [`super::value`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Decimal text, `"4.5"`: what the loader writes, and what `redis-cli` shows.
    #[default]
    Decimal,
    /// Exactly 4 bytes, a little-endian `f32`.
    F32le,
}

/// `[features.stores.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `redis` or `memory`.
    pub backend: Backend,
    /// Redis: the server's URL, `redis://host:port/db`.
    #[serde(default)]
    pub url: Option<String>,
    /// Redis: the first part of every key, `{prefix}:{entity}:{id}` (default `relish`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Redis: how values are written (default `decimal`).
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// Memory: the JSONL (`.jsonl`, `.ndjson`) or CSV (`.csv`) file ([`super::file`]).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Memory: how often the file is checked for changes, in ms (default 1000).
    #[serde(default)]
    pub poll_ms: Option<u64>,
    /// How long one store fetch may take, in ms (default 1000). A lookup answers by its own,
    /// much shorter deadline; the fetch goes on in the background so that its answer fills the
    /// cache, and is abandoned after this. Also Redis' connect and response timeouts.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The in-process cache in front of the store.
    #[serde(default)]
    pub cache: CacheConfig,
}

fn default_timeout_ms() -> u64 {
    1000
}

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "relish";

impl StoreConfig {
    /// A Redis store at `url` with the default prefix, encoding and cache.
    pub fn redis(url: &str) -> Self {
        StoreConfig {
            backend: Backend::Redis,
            url: Some(url.to_owned()),
            prefix: None,
            encoding: None,
            path: None,
            poll_ms: None,
            timeout_ms: default_timeout_ms(),
            cache: CacheConfig::default(),
        }
    }

    /// A memory store loaded from `path`, with the default cache.
    pub fn memory(path: impl Into<PathBuf>) -> Self {
        StoreConfig { backend: Backend::Memory, url: None, path: Some(path.into()), ..StoreConfig::redis("") }
    }

    /// The backend's name, `redis` or `memory`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The key prefix (Redis).
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(DEFAULT_PREFIX)
    }

    /// The value encoding (Redis).
    pub fn encoding(&self) -> Encoding {
        self.encoding.unwrap_or_default()
    }

    /// How long one fetch may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// How often the memory backend checks its file.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms.unwrap_or(1000))
    }

    /// Checks what serde cannot: required and misplaced fields, ranges, the URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let backend = self.backend;
        let only = |field: &str, owner: Backend| {
            error(field, format!("is a setting of backend = \"{owner}\", not of backend = \"{backend}\""))
        };
        match backend {
            Backend::Redis => {
                let Some(url) = &self.url else {
                    return Err(error(
                        "url",
                        "is required with backend = \"redis\", for example \"redis://127.0.0.1:6379/0\"",
                    ));
                };
                ::redis::Client::open(url.as_str())
                    .map_err(|e| error("url", format!("is not a Redis URL (redis://host:port/db): {e}")))?;
                if let Some(prefix) = &self.prefix
                    && (prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()))
                {
                    return Err(error("prefix", "must be non-empty, without spaces"));
                }
                if self.path.is_some() {
                    return Err(only("path", Backend::Memory));
                }
                if self.poll_ms.is_some() {
                    return Err(only("poll_ms", Backend::Memory));
                }
            }
            Backend::Memory => {
                let Some(path) = &self.path else {
                    return Err(error("path", "is required with backend = \"memory\": a .jsonl or .csv feature file"));
                };
                super::file::Format::of(path).map_err(|e| error("path", e))?;
                if self.url.is_some() {
                    return Err(only("url", Backend::Redis));
                }
                if self.prefix.is_some() {
                    return Err(only("prefix", Backend::Redis));
                }
                if self.encoding.is_some() {
                    return Err(only("encoding", Backend::Redis));
                }
                if self.poll_ms.is_some_and(|ms| !(10..=3_600_000).contains(&ms)) {
                    return Err(error("poll_ms", "must be between 10 and 3600000"));
                }
            }
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err(error("timeout_ms", "must be between 1 and 60000"));
        }
        self.cache.validate().map_err(|e| error(format!("cache.{}", e.field), e.message))
    }
}

/// `[features.stores.<name>.cache]`: the in-process cache in front of a store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// The most entities kept (default 1 000 000).
    pub max_entries: usize,
    /// The most bytes kept, by estimate of each entry's size (default 256 MiB).
    pub max_bytes: usize,
    /// How long an entry is fresh, in seconds (default 60). An expired entry is kept until evicted
    /// and is used when the store fails to refresh it.
    pub ttl_secs: f64,
    /// Per entity kind, how long an entry is fresh, in seconds (default: `ttl_secs`).
    pub entity_ttl_secs: BTreeMap<String, f64>,
    /// How long an id the store does not have is believed absent, in seconds (default 10).
    pub negative_ttl_secs: f64,
    /// The number of shards, each an LRU behind its own lock (default 16; at most `max_entries`).
    pub shards: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 1_000_000,
            max_bytes: 256 << 20,
            ttl_secs: 60.0,
            entity_ttl_secs: BTreeMap::new(),
            negative_ttl_secs: 10.0,
            shards: 16,
        }
    }
}

impl CacheConfig {
    /// How long an entry of `entity` is fresh.
    pub fn ttl(&self, entity: &str) -> Duration {
        seconds(self.entity_ttl_secs.get(entity).copied().unwrap_or(self.ttl_secs))
    }

    /// How long an absent id is believed absent.
    pub fn negative_ttl(&self) -> Duration {
        seconds(self.negative_ttl_secs)
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries == 0 {
            return Err(error("max_entries", "must be at least 1"));
        }
        if self.max_bytes < 4096 {
            return Err(error("max_bytes", "must be at least 4096"));
        }
        if !(1..=1024).contains(&self.shards) {
            return Err(error("shards", "must be between 1 and 1024"));
        }
        let ttl = |field: String, secs: f64| {
            if secs.is_finite() && (0.0..=365.0 * 86400.0).contains(&secs) {
                Ok(())
            } else {
                Err(error(field, "must be a number of seconds between 0 and 31536000"))
            }
        };
        ttl("ttl_secs".into(), self.ttl_secs)?;
        ttl("negative_ttl_secs".into(), self.negative_ttl_secs)?;
        for (entity, &secs) in &self.entity_ttl_secs {
            ttl(format!("entity_ttl_secs.{entity}"), secs)?;
        }
        Ok(())
    }
}

fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoreConfig, ConfigError> {
        let config: StoreConfig = toml::from_str(text).map_err(|e| error("toml", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn a_redis_store_reads_with_defaults() {
        let config = parse("backend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"").unwrap();
        assert_eq!(config.backend_name(), "redis");
        assert_eq!(config.prefix(), "relish");
        assert_eq!(config.encoding(), Encoding::Decimal);
        assert_eq!(config.cache, CacheConfig::default());
        assert_eq!(config.cache.ttl("venue"), Duration::from_secs(60));
    }

    #[test]
    fn a_full_store_reads_and_ttls_are_per_entity() {
        let config = parse(
            r#"
            backend = "redis"
            url = "redis://127.0.0.1:6379/3"
            prefix = "app"
            encoding = "f32le"
            timeout_ms = 200
            [cache]
            max_entries = 1000
            max_bytes = 1048576
            ttl_secs = 120
            entity_ttl_secs = { user = 0.5 }
            negative_ttl_secs = 5
            shards = 4
            "#,
        )
        .unwrap();
        assert_eq!(config.encoding(), Encoding::F32le);
        assert_eq!(config.cache.ttl("user"), Duration::from_millis(500));
        assert_eq!(config.cache.ttl("venue"), Duration::from_secs(120));
        assert_eq!(config.cache.negative_ttl(), Duration::from_secs(5));
    }

    #[test]
    fn mistakes_name_the_field() {
        let field = |text: &str| parse(text).unwrap_err().field;
        assert_eq!(field("backend = \"redis\""), "url");
        assert_eq!(field("backend = \"redis\"\nurl = \"http://x\""), "url");
        assert_eq!(field("backend = \"redis\"\nurl = \"redis://h\"\npath = \"f.jsonl\""), "path");
        assert_eq!(field("backend = \"memory\""), "path");
        assert_eq!(field("backend = \"memory\"\npath = \"f.txt\""), "path");
        assert_eq!(field("backend = \"memory\"\npath = \"f.csv\"\nprefix = \"x\""), "prefix");
        assert_eq!(field("backend = \"redis\"\nurl = \"redis://h\"\ntimeout_ms = 0"), "timeout_ms");
        assert_eq!(field("backend = \"redis\"\nurl = \"redis://h\"\n[cache]\nmax_entries = 0"), "cache.max_entries");
        assert_eq!(field("backend = \"redis\"\nurl = \"redis://h\"\n[cache]\nttl_secs = -1"), "cache.ttl_secs");
        assert_eq!(
            field("backend = \"redis\"\nurl = \"redis://h\"\n[cache]\nentity_ttl_secs = { user = -2 }"),
            "cache.entity_ttl_secs.user"
        );
        // Unknown keys are errors, not silently ignored.
        assert!(
            parse("backend = \"redis\"\nurl = \"redis://h\"\nttl = 5").unwrap_err().message.contains("unknown field")
        );
        assert!(parse("backend = \"mongo\"").is_err());
    }
}
