//! `[fleet]`: where the fleet's JetStream is and how to reach it.

use std::path::PathBuf;

use serde::Deserialize;

/// `[fleet]` in the configuration. Absent (and `RELISH_FLEET_NATS` unset): the host stands alone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The NATS server(s), comma-separated: `nats://127.0.0.1:4222` (`RELISH_FLEET_NATS`).
    pub nats: String,
    /// This host's name in the fleet (default: the machine's host name and the data-plane port).
    #[serde(default)]
    pub host: Option<String>,
    /// The KV bucket with version metadata and plans.
    #[serde(default = "default_state_bucket")]
    pub state_bucket: String,
    /// The object store bucket with component bytes, named by digest.
    #[serde(default = "default_components_bucket")]
    pub components_bucket: String,
    /// The KV bucket of host heartbeats (entries expire after `3 × heartbeat_secs`).
    #[serde(default = "default_hosts_bucket")]
    pub hosts_bucket: String,
    /// A NATS credentials file (`.creds`: JWT and nkey seed), as `nats` and `nsc` write it.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`), for servers that authenticate by nkey alone.
    #[serde(default)]
    pub nkey_seed: Option<PathBuf>,
    /// TLS: the CA certificates (PEM) the server's certificate is checked against.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// TLS: this host's client certificate (PEM), with `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the client certificate's private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Refuse to connect without TLS.
    #[serde(default)]
    pub tls_required: bool,
    /// Replicas of the buckets when this host creates them (1 for a single NATS server).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Plan revisions (and version entries) the state bucket keeps per key.
    #[serde(default = "default_history")]
    pub history: i64,
    /// How long an admin write may wait for JetStream, and for this host to apply it.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// How long startup waits to catch up with the fleet before serving its local state anyway
    /// (when NATS cannot be reached).
    #[serde(default = "default_startup_timeout_secs")]
    pub startup_timeout_secs: u64,
    /// How often the host checks that its watch still delivers and re-reads every plan.
    #[serde(default = "default_reconcile_secs")]
    pub reconcile_secs: u64,
    /// How often the host reports itself in the hosts bucket.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
}

fn default_state_bucket() -> String {
    "relish-state".to_owned()
}

fn default_components_bucket() -> String {
    "relish-components".to_owned()
}

fn default_hosts_bucket() -> String {
    "relish-hosts".to_owned()
}

fn default_replicas() -> usize {
    1
}

fn default_history() -> i64 {
    64
}

fn default_write_timeout_ms() -> u64 {
    5_000
}

fn default_startup_timeout_secs() -> u64 {
    30
}

fn default_reconcile_secs() -> u64 {
    10
}

fn default_heartbeat_secs() -> u64 {
    2
}

/// A field of `[fleet]` with a bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfigError {
    /// The field under `fleet.`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> FleetConfigError {
    FleetConfigError { field, message: message.into() }
}

/// Whether `name` is a JetStream bucket name: 1 to 64 of `a-z A-Z 0-9 - _`.
fn is_bucket_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl FleetConfig {
    /// A fleet on `nats` with every other setting at its default.
    pub fn new(nats: impl Into<String>) -> Self {
        FleetConfig {
            nats: nats.into(),
            host: None,
            state_bucket: default_state_bucket(),
            components_bucket: default_components_bucket(),
            hosts_bucket: default_hosts_bucket(),
            credentials: None,
            nkey_seed: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            replicas: default_replicas(),
            history: default_history(),
            write_timeout_ms: default_write_timeout_ms(),
            startup_timeout_secs: default_startup_timeout_secs(),
            reconcile_secs: default_reconcile_secs(),
            heartbeat_secs: default_heartbeat_secs(),
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), FleetConfigError> {
        let servers: Vec<&str> = self.nats.split(',').map(str::trim).collect();
        for server in &servers {
            let valid = server.parse::<async_nats::ServerAddr>().is_ok();
            if server.is_empty() || !valid {
                return Err(bad("nats", format!("`{server}` is not a NATS server address like nats://127.0.0.1:4222")));
            }
        }
        for (field, name) in [
            ("state_bucket", &self.state_bucket),
            ("components_bucket", &self.components_bucket),
            ("hosts_bucket", &self.hosts_bucket),
        ] {
            if !is_bucket_name(name) {
                return Err(bad(field, format!("`{name}` is not a bucket name: use 1 to 64 of a-z A-Z 0-9 - _")));
            }
        }
        if self.state_bucket == self.hosts_bucket {
            return Err(bad("hosts_bucket", "must differ from state_bucket"));
        }
        if let Some(host) = &self.host
            && !is_host_name(host)
        {
            return Err(bad("host", format!("`{host}` is not a host name: use 1 to 64 of a-z A-Z 0-9 - _")));
        }
        if self.credentials.is_some() && self.nkey_seed.is_some() {
            return Err(bad("nkey_seed", "give either `credentials` (which holds an nkey) or `nkey_seed`, not both"));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(bad("tls_key", "a client certificate needs both `tls_cert` and `tls_key`"));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(bad("replicas", "must be between 1 and 5"));
        }
        if !(2..=64).contains(&self.history) {
            return Err(bad("history", "must be between 2 and 64 (JetStream's limit per key)"));
        }
        if !(100..=120_000).contains(&self.write_timeout_ms) {
            return Err(bad("write_timeout_ms", "must be between 100 and 120000"));
        }
        if self.startup_timeout_secs > 3600 {
            return Err(bad("startup_timeout_secs", "must be at most 3600"));
        }
        if !(1..=3600).contains(&self.reconcile_secs) {
            return Err(bad("reconcile_secs", "must be between 1 and 3600"));
        }
        if !(1..=600).contains(&self.heartbeat_secs) {
            return Err(bad("heartbeat_secs", "must be between 1 and 600"));
        }
        Ok(())
    }

    /// The servers, as the client takes them.
    pub fn servers(&self) -> Vec<async_nats::ServerAddr> {
        self.nats.split(',').filter_map(|s| s.trim().parse().ok()).collect()
    }

    /// The servers without any user or password in them, for status pages and logs.
    pub fn redacted(&self) -> String {
        self.servers()
            .iter()
            .map(|s| format!("{}://{}:{}", s.scheme(), s.host(), s.port()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Whether `name` can name a host in the hosts bucket (a KV key token).
pub fn is_host_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// A host name made of the machine's name and the data-plane port, with every character a KV key
/// may not hold replaced by `-`.
pub fn default_host(port: u16) -> String {
    let machine = gethostname::gethostname().to_string_lossy().into_owned();
    let mut name: String =
        machine.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    name.truncate(56);
    if name.is_empty() {
        name.push_str("host");
    }
    format!("{name}-{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_field() {
        let config = FleetConfig::new("nats://127.0.0.1:4222");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.redacted(), "nats://127.0.0.1:4222");
        let cases: Vec<(FleetConfig, &str)> = vec![
            (FleetConfig::new("http://[::1"), "nats"),
            (FleetConfig::new(""), "nats"),
            (FleetConfig { state_bucket: "a.b".into(), ..config.clone() }, "state_bucket"),
            (FleetConfig { hosts_bucket: "relish-state".into(), ..config.clone() }, "hosts_bucket"),
            (FleetConfig { host: Some("a b".into()), ..config.clone() }, "host"),
            (FleetConfig { tls_cert: Some("c.pem".into()), ..config.clone() }, "tls_key"),
            (FleetConfig { history: 65, ..config.clone() }, "history"),
            (FleetConfig { heartbeat_secs: 0, ..config.clone() }, "heartbeat_secs"),
            (FleetConfig { credentials: Some("a".into()), nkey_seed: Some("b".into()), ..config.clone() }, "nkey_seed"),
        ];
        for (config, field) in cases {
            assert_eq!(config.validate().unwrap_err().field, field, "{config:?}");
        }
    }

    #[test]
    fn credentials_never_reach_the_status_page() {
        let config = FleetConfig::new("nats://alice:secret@10.0.0.1:4222, nats://10.0.0.2");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.redacted(), "nats://10.0.0.1:4222,nats://10.0.0.2:4222");
    }

    #[test]
    fn the_default_host_name_is_a_key_token() {
        let name = default_host(8080);
        assert!(is_host_name(&name), "{name}");
        assert!(name.ends_with("-8080"));
    }
}
