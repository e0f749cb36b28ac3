//! `relish policy ...` and `relish surface ...`: the admin API from the command line.

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
    /// Return a surface to its previous activation.
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
            call(connection, Method::PUT, &format!("/v1/surfaces/{surface}/activation"), body, "application/json")?;
            println!("{surface}: {name}@{version} is active");
            Ok(())
        }
        SurfaceCommand::Rollback { surface, reason } => {
            let body = serde_json::to_vec(&serde_json::json!({"reason": reason}))?;
            let answer =
                call(connection, Method::POST, &format!("/v1/surfaces/{surface}/rollback"), body, "application/json")?;
            println!(
                "{surface}: rolled back to {}@{}",
                answer["policy"].as_str().unwrap_or("?"),
                answer["version"].as_str().unwrap_or("?")
            );
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
            let health = &s["health"];
            if health.is_object() {
                println!(
                    "health:   {} of the last {} calls failed; rolls back at {} % after {} calls{}",
                    health["failures"],
                    health["calls"],
                    health["threshold"].as_f64().unwrap_or(0.0) * 100.0,
                    health["min_calls"],
                    if health["tripped"].as_bool() == Some(true) { " (tripped)" } else { "" },
                );
            } else {
                println!("health:   automatic rollback off");
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
                println!(
                    "  {}  {}@{}  by {}  ({ended})",
                    a["activated_at"].as_str().unwrap_or("").get(..19).unwrap_or(""),
                    a["policy"].as_str().unwrap_or(""),
                    a["version"].as_str().unwrap_or(""),
                    a["actor"].as_str().unwrap_or(""),
                );
            }
            Ok(())
        }
    }
}
