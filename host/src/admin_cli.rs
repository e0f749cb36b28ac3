//! `relish policy ...`, `relish surface ...` and `relish fleet ...`: the admin API from the command
//! line.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relish_host::runtime::{Runtime, RuntimeConfig};
use serde_json::Value;

/// Where the admin API is and how to authenticate.
#[derive(Args, Clone)]
pub struct Connection {
    /// The admin API's base URL.
    #[arg(long, env = "RELISH_ADMIN_URL", default_value = "http://127.0.0.1:8081", global = true)]
    admin: String,
    /// The bearer token.
    #[arg(long, env = "RELISH_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

/// `relish policy ...`
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Upload a component as a new version (name and version from its metadata unless given).
    Push {
        /// The component.
        file: std::path::PathBuf,
        /// `name@version` to upload as (must match the component's metadata).
        #[arg(long = "as")]
        as_: Option<String>,
    },
    /// List stored versions.
    List,
    /// Show one version: `name@version`.
    Show {
        /// `name@version`.
        version: String,
    },
    /// Delete a version that is not active: `name@version`.
    Delete {
        /// `name@version`.
        version: String,
    },
}

/// `relish surface ...`
#[derive(Subcommand)]
pub enum SurfaceCommand {
    /// Activate `name@version` on a surface.
    Activate {
        /// The surface.
        surface: String,
        /// `name@version`.
        version: String,
        /// A policy parameter, `key=value`; repeatable.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// Set a surface's plan: arms `name@version=WEIGHT` (percent, adding up to 100), optional
    /// shadows `name@version[:SAMPLE]`, for example
    /// `relish surface plan discovery discovery@0.1.0=95 discovery@0.2.0=5 --shadow discovery@0.3.0:0.1`.
    Plan {
        /// The surface.
        surface: String,
        /// The arms, in order (the first is the control arm): `name@version=WEIGHT`.
        #[arg(required = true, value_name = "NAME@VERSION=WEIGHT")]
        arms: Vec<String>,
        /// The experiment's salt (a new salt re-randomises who gets which arm); the current one if
        /// absent.
        #[arg(long)]
        salt: Option<String>,
        /// A shadow, `name@version` or `name@version:SAMPLE` (a share of requests, 0 to 1; 1 if
        /// absent); repeatable.
        #[arg(long = "shadow", value_name = "NAME@VERSION[:SAMPLE]")]
        shadows: Vec<String>,
        /// Refuse the change if the surface's plan is no longer at this revision.
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Return a surface to its previous plan.
    Rollback {
        /// The surface.
        surface: String,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show every surface, or one surface with its history.
    Status {
        /// The surface.
        surface: Option<String>,
    },
}

/// A plan in one line: `discovery@0.1.0 95 %, discovery@0.2.0 5 % (+1 shadow)`.
fn describe_plan(plan: &Value) -> String {
    let arms: Vec<String> = plan["arms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{} {} %", a["name"].as_str().unwrap_or("?"), a["weight"].as_f64().unwrap_or(0.0) / 100.0))
        .collect();
    let shadows = plan["shadows"].as_array().map_or(0, Vec::len);
    let shadows = match shadows {
        0 => String::new(),
        1 => " (+1 shadow)".to_owned(),
        n => format!(" (+{n} shadows)"),
    };
    format!("{}{shadows}", arms.join(", "))
}

fn split_version(text: &str) -> anyhow::Result<(&str, &str)> {
    text.split_once('@')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .with_context(|| format!("`{text}` is not `name@version` (for example `discovery@0.2.0`)"))
}

/// One admin API call; an error answer becomes an error naming the status and the server's
/// message.
fn call(
    connection: &Connection,
    method: Method,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
) -> anyhow::Result<Value> {
    let token = connection.token.as_deref().context("no admin token: pass --token or set RELISH_ADMIN_TOKEN")?;
    let url = format!("{}{path}", connection.admin.trim_end_matches('/'));
    let request = Request::builder()
        .method(method)
        .uri(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("`{url}` is not a valid URL"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, body) = runtime.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let response = client.request(request).await.with_context(|| format!("cannot reach the admin API at {url}"))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    })?;
    let value: Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    if !status.is_success() {
        let message = value["error"]["message"].as_str().map_or_else(|| value.to_string(), str::to_owned);
        bail!("{} {}: {message}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    }
    Ok(value)
}

/// `relish fleet ...`
#[derive(Subcommand)]
pub enum FleetCommand {
    /// List the hosts of the fleet with the revision each applied and how far behind it is.
    Status,
}

/// Runs `relish fleet ...`.
pub fn fleet(connection: &Connection, command: FleetCommand) -> anyhow::Result<()> {
    match command {
        FleetCommand::Status => {
            let answer = call(connection, Method::GET, "/v1/fleet", Vec::new(), "application/json")?;
            println!(
                "fleet: {} (revision {}), answered by {}",
                answer["nats"].as_str().unwrap_or(""),
                answer["head_revision"],
                answer["host"].as_str().unwrap_or("")
            );
            println!(
                "{:<24} {:<22} {:>9} {:>7} {:>9} {:>8}  STATE",
                "HOST", "ADDRESS", "APPLIED", "BEHIND", "LAG MS", "REFUSED"
            );
            for host in answer["hosts"].as_array().into_iter().flatten() {
                let state = match (host["stale"].as_bool(), host["caught_up"].as_bool()) {
                    (Some(true), _) => "stale (no recent report)",
                    (_, Some(false)) => "catching up",
                    _ if host["behind"].as_u64().unwrap_or(0) > 0 => "behind",
                    _ => "ok",
                };
                println!(
                    "{:<24} {:<22} {:>9} {:>7} {:>9} {:>8}  {state}",
                    host["host"].as_str().unwrap_or(""),
                    host["addr"].as_str().unwrap_or(""),
                    host["applied_revision"],
                    host["behind"],
                    host["lag_ms"].as_f64().map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}")),
                    host["refused"].as_array().map_or(0, Vec::len),
                );
            }
            Ok(())
        }
    }
}

/// Runs `relish policy ...`.
pub fn policy(connection: &Connection, command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Push { file, as_ } => push(connection, &file, as_.as_deref()),
        PolicyCommand::List => {
            let answer = call(connection, Method::GET, "/v1/policies", Vec::new(), "application/json")?;
            println!("{:<20} {:<10} {:<16} {:<20} BY", "POLICY", "VERSION", "DIGEST", "UPLOADED");
            for versions in answer["policies"].as_object().into_iter().flat_map(|p| p.values()) {
                for v in versions.as_array().into_iter().flatten() {
                    println!(
                        "{:<20} {:<10} {:<16} {:<20} {}",
                        v["policy"].as_str().unwrap_or(""),
                        v["version"].as_str().unwrap_or(""),
                        short_digest(&v["digest"]),
                        v["uploaded_at"].as_str().unwrap_or("").get(..19).unwrap_or(""),
                        v["uploaded_by"].as_str().unwrap_or(""),
                    );
                }
            }
            Ok(())
        }
        PolicyCommand::Show { version } => {
            let (name, version) = split_version(&version)?;
            let answer = call(
                connection,
                Method::GET,
                &format!("/v1/policies/{name}/versions/{version}"),
                Vec::new(),
                "application/json",
            )?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        PolicyCommand::Delete { version } => {
            let (name, version) = split_version(&version)?;
            call(
                connection,
                Method::DELETE,
                &format!("/v1/policies/{name}/versions/{version}"),
                Vec::new(),
                "application/json",
            )?;
            println!("deleted {name}@{version}");
            Ok(())
        }
    }
}

fn short_digest(digest: &Value) -> String {
    digest
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .map_or_else(String::new, |d| d.get(..12).unwrap_or(d).to_owned())
}

fn push(connection: &Connection, file: &Path, as_: Option<&str>) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (name, version) = match as_ {
        Some(text) => {
            let (name, version) = split_version(text)?;
            (name.to_owned(), version.to_owned())
        }
        None => {
            // Read the name and version from the component itself: the same check the server
            // makes, so a bad component fails here with the same message.
            let runtime = Runtime::new(RuntimeConfig { max_instances: 4, ..RuntimeConfig::default() })?;
            let loaded = runtime.load(&bytes).with_context(|| format!("{} is not a usable policy", file.display()))?;
            (loaded.metadata().name.clone(), loaded.metadata().version.clone())
        }
    };
    let answer =
        call(connection, Method::PUT, &format!("/v1/policies/{name}/versions/{version}"), bytes, "application/wasm")?;
    let verb = if answer["created"].as_bool() == Some(true) { "stored" } else { "unchanged (already stored)" };
    println!("{name}@{version} {verb}: {}", answer["version"]["digest"].as_str().unwrap_or(""));
    Ok(())
}

/// Runs `relish surface ...`.
pub fn surface(connection: &Connection, command: SurfaceCommand) -> anyhow::Result<()> {
    match command {
        SurfaceCommand::Activate { surface, version, params } => {
            let (name, version) = split_version(&version)?;
            let mut parsed = BTreeMap::new();
            for param in &params {
                let (key, value) =
                    param.split_once('=').with_context(|| format!("--param `{param}` is not KEY=VALUE"))?;
                parsed.insert(key.to_owned(), value.to_owned());
            }
            let body = serde_json::to_vec(&serde_json::json!({"policy": name, "version": version, "params": parsed}))?;
            let answer =
                call(connection, Method::PUT, &format!("/v1/surfaces/{surface}/activation"), body, "application/json")?;
            println!("{surface}: {name}@{version} is active (plan revision {})", answer["revision"]);
            Ok(())
        }
        SurfaceCommand::Plan { surface, arms, salt, shadows, expected_revision, reason } => {
            let mut arm_list = Vec::new();
            for arm in &arms {
                let (version, weight) = arm
                    .rsplit_once('=')
                    .with_context(|| format!("`{arm}` is not NAME@VERSION=WEIGHT (for example discovery@0.2.0=5)"))?;
                let (name, version) = split_version(version)?;
                let weight: f64 =
                    weight.parse().with_context(|| format!("`{arm}`: the weight `{weight}` is not a number"))?;
                arm_list.push(serde_json::json!({"policy": name, "version": version, "weight": weight}));
            }
            let mut shadow_list = Vec::new();
            for shadow in &shadows {
                let (version, sample) = match shadow.rsplit_once(':') {
                    Some((version, sample)) => (
                        version,
                        sample
                            .parse::<f64>()
                            .with_context(|| format!("`{shadow}`: the sample `{sample}` is not a number"))?,
                    ),
                    None => (shadow.as_str(), 1.0),
                };
                let (name, version) = split_version(version)?;
                shadow_list.push(serde_json::json!({"policy": name, "version": version, "sample": sample}));
            }
            let mut body = serde_json::json!({"arms": arm_list, "shadow": shadow_list});
            if let Some(salt) = salt {
                body["salt"] = salt.into();
            }
            if let Some(revision) = expected_revision {
                body["expected_revision"] = revision.into();
            }
            if let Some(reason) = reason {
                body["reason"] = reason.into();
            }
            let answer = call(
                connection,
                Method::PUT,
                &format!("/v1/surfaces/{surface}/plan"),
                serde_json::to_vec(&body)?,
                "application/json",
            )?;
            let changed = if answer["changed"].as_bool() == Some(false) { " (unchanged)" } else { "" };
            println!("{surface}: plan revision {}{changed}: {}", answer["revision"], describe_plan(&answer["plan"]));
            Ok(())
        }
        SurfaceCommand::Rollback { surface, reason } => {
            let body = serde_json::to_vec(&serde_json::json!({"reason": reason}))?;
            let answer =
                call(connection, Method::POST, &format!("/v1/surfaces/{surface}/rollback"), body, "application/json")?;
            println!("{surface}: rolled back to revision {}: {}", answer["revision"], describe_plan(&answer["plan"]));
            Ok(())
        }
        SurfaceCommand::Status { surface: None } => {
            let answer = call(connection, Method::GET, "/v1/surfaces", Vec::new(), "application/json")?;
            println!("{:<18} {:<28} {:<22} ACTIVATED BY", "SURFACE", "SERVING", "FALLBACK");
            for s in answer["surfaces"].as_array().into_iter().flatten() {
                println!(
                    "{:<18} {:<28} {:<22} {}",
                    s["surface"].as_str().unwrap_or(""),
                    s["serving"].as_str().unwrap_or("(nothing: fallback answers)"),
                    s["fallback"].as_str().unwrap_or("input order"),
                    s["current"]["actor"].as_str().unwrap_or(""),
                );
            }
            Ok(())
        }
        SurfaceCommand::Status { surface: Some(surface) } => {
            let s = call(connection, Method::GET, &format!("/v1/surfaces/{surface}"), Vec::new(), "application/json")?;
            println!("surface:  {surface}");
            println!("serving:  {}", s["serving"].as_str().unwrap_or("(nothing: fallback answers)"));
            println!("fallback: {}", s["fallback"].as_str().unwrap_or("input order"));
            let limits = &s["limits"];
            if limits.is_object() {
                let or_none = |v: &serde_json::Value| if v.is_null() { "none".to_owned() } else { v.to_string() };
                println!(
                    "limits:   deadline {} ms, memory {} MiB, fuel {}, {} log lines, {} candidates, concurrency {}",
                    limits["deadline_ms"].as_f64().unwrap_or(0.0),
                    limits["memory_mb"].as_f64().unwrap_or(0.0),
                    or_none(&limits["fuel"]),
                    limits["log_lines"],
                    limits["max_candidates"],
                    or_none(&limits["max_concurrency"]),
                );
            }
            println!("revision: {}  salt: {:?}", s["revision"], s["current"]["plan"]["salt"].as_str().unwrap_or(""));
            println!("arms:");
            for arm in s["arms"].as_array().into_iter().flatten() {
                let health = &arm["health"];
                let health = if health.is_object() {
                    format!(
                        "{} of the last {} calls failed; taken out at {} % after {} calls{}",
                        health["failures"],
                        health["calls"],
                        health["threshold"].as_f64().unwrap_or(0.0) * 100.0,
                        health["min_calls"],
                        if health["tripped"].as_bool() == Some(true) { " (tripped)" } else { "" },
                    )
                } else {
                    "automatic rollback off".to_owned()
                };
                println!(
                    "  [{}] {:<28} {:>6.2} %  {health}",
                    arm["index"],
                    arm["name"].as_str().unwrap_or(""),
                    arm["weight"].as_f64().unwrap_or(0.0) / 100.0,
                );
            }
            let shadows = s["shadows"].as_array().cloned().unwrap_or_default();
            if !shadows.is_empty() {
                println!("shadows:");
            }
            let mean = |v: &serde_json::Value| v.as_f64().map_or("-".to_owned(), |v| format!("{v:.3}"));
            for shadow in &shadows {
                println!(
                    "  {:<28} sample {}  skipped {}",
                    shadow["name"].as_str().unwrap_or(""),
                    shadow["sample"],
                    shadow["skipped"]
                );
                for against in shadow["against"].as_array().into_iter().flatten() {
                    println!(
                        "    vs {:<24} {} calls, {} failed; top-1 {}, overlap {}, rbo {}, tau {}, {} ms",
                        against["arm"].as_str().unwrap_or(""),
                        against["calls"],
                        against["failures"]
                            .as_object()
                            .map_or(0, |f| f.values().filter_map(|v| v.as_u64()).sum::<u64>()),
                        mean(&against["top1_agreement"]),
                        mean(&against["overlap"]),
                        mean(&against["rbo"]),
                        mean(&against["kendall_tau"]),
                        mean(&against["mean_ms"]),
                    );
                }
            }
            println!("history (newest last):");
            for a in s["history"].as_array().into_iter().flatten() {
                let ended = match a["ended"]["how"].as_str() {
                    None => "current".to_owned(),
                    Some("rolled-back") => format!(
                        "rolled back{} by {}: {}",
                        if a["ended"]["automatic"].as_bool() == Some(true) { " automatically" } else { "" },
                        a["ended"]["actor"].as_str().unwrap_or("?"),
                        a["ended"]["reason"].as_str().unwrap_or("")
                    ),
                    Some(how) => how.to_owned(),
                };
                let failed = a["failed"]["arm"].as_str().map(|arm| format!(", failed: {arm}")).unwrap_or_default();
                let reason = a["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
                println!(
                    "  r{:<4} {}  {}  by {}{reason}  ({ended}{failed})",
                    a["revision"],
                    a["at"].as_str().unwrap_or("").get(..19).unwrap_or(""),
                    describe_plan(&a["plan"]),
                    a["actor"].as_str().unwrap_or(""),
                );
            }
            Ok(())
        }
    }
}
