//! The admin API: upload versions, set plans, activate and roll back, on its own listener. Every
//! change of what serves a surface goes through the control plane ([`crate::control`]).
//!
//! Every call carries `Authorization: Bearer <secret>`. A token has a role (`read`: list, show,
//! status; `deploy`: also upload, activate, roll back, delete) and may be limited to some surfaces,
//! so one team cannot change another team's surfaces (nor delete versions it did not upload).
//! Secrets are compared in constant time.
//!
//! | Method | Path | Role |
//! | --- | --- | --- |
//! | `GET` | `/v1/policies` | read |
//! | `GET` | `/v1/policies/{name}/versions/{version}` | read |
//! | `PUT` | `/v1/policies/{name}/versions/{version}` (body: the component) | deploy |
//! | `DELETE` | `/v1/policies/{name}/versions/{version}` | deploy |
//! | `GET` | `/v1/surfaces` | read |
//! | `GET` | `/v1/surfaces/{surface}` | read |
//! | `PUT` | `/v1/surfaces/{surface}/plan` (`{"arms", "salt", "shadow", "expected_revision", "reason"}`) | deploy, surface |
//! | `PUT` | `/v1/surfaces/{surface}/activation` (`{"policy", "version", "params"}`: a one-arm plan) | deploy, surface |
//! | `POST` | `/v1/surfaces/{surface}/rollback` (`{"reason"}`, optional) | deploy, surface |
//! | `GET` | `/v1/fleet` (the fleet's hosts and how far behind each is; `404` on a host that stands alone) | read |
//! | `GET` | `/v1/whoami` (the token's name, role and surfaces) | read |
//! | `GET` | `/v1/ops/series?after=<unix ms>` (the ops page's live series, [`super::ops`]) | read |
//! | `GET` | `/`, `/ops.js`, `/ops.css`: the ops page, without a token (it does nothing without one) | none |
//!
//! On a fleet host every change is written to the fleet and applied by every host from there
//! ([`crate::fleet`]); while the fleet's NATS cannot be reached, changes are refused with `503`
//! (`fleet_unavailable`) and reads answer from this host's replica.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use super::State;
use super::config::{AdminConfig, Role};
use super::http::{HttpResponse, error, json};
use super::ops::{self, Series};
use crate::control::plan::Revision;
use crate::control::{Applied, Change, ChangeError, PlanSpec};
use crate::fleet::FleetError;
use crate::registry::{self, PlanRevision, Put, VersionInfo};
use crate::serving::health::HealthSnapshot;
use crate::serving::shadow::ShadowFigures;

/// A configured token with its secret resolved.
#[derive(Clone)]
pub struct Token {
    /// The token's name.
    pub name: String,
    secret: Vec<u8>,
    /// What it may do.
    pub role: Role,
    /// The surfaces it may change (all if `None`).
    pub surfaces: Option<Vec<String>>,
}

/// Every admin token.
#[derive(Clone, Default)]
pub struct Tokens(Vec<Token>);

/// The shortest secret accepted: shorter ones are guessable.
const MIN_SECRET: usize = 16;

impl Tokens {
    /// Resolves the configured tokens (reading `secret_env` variables through `env`), plus a
    /// deploy token for every surface from `RELISH_ADMIN_TOKEN` if that is set.
    pub fn from_config(config: &AdminConfig, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut tokens = Vec::new();
        for (i, token) in config.tokens.iter().enumerate() {
            let secret = match (&token.secret, &token.secret_env) {
                (Some(secret), _) => secret.clone(),
                (None, Some(var)) => env(var).ok_or_else(|| {
                    anyhow::anyhow!("admin.tokens[{i}].secret_env: the environment variable `{var}` is not set")
                })?,
                (None, None) => anyhow::bail!("admin.tokens[{i}]: set `secret` or `secret_env`"),
            };
            if secret.len() < MIN_SECRET {
                anyhow::bail!(
                    "admin.tokens[{i}] (`{}`): the secret must be at least {MIN_SECRET} characters",
                    token.name
                );
            }
            tokens.push(Token {
                name: token.name.clone(),
                secret: secret.into_bytes(),
                role: token.role,
                surfaces: token.surfaces.clone(),
            });
        }
        if let Some(secret) = env("RELISH_ADMIN_TOKEN") {
            if secret.len() < MIN_SECRET {
                anyhow::bail!("RELISH_ADMIN_TOKEN: the secret must be at least {MIN_SECRET} characters");
            }
            tokens.push(Token {
                name: "env".to_owned(),
                secret: secret.into_bytes(),
                role: Role::Deploy,
                surfaces: None,
            });
        }
        if tokens.is_empty() {
            tracing::warn!("no admin tokens are configured: every admin API call will be refused");
        }
        Ok(Tokens(tokens))
    }

    /// The token whose secret is `presented`, comparing against every token in constant time.
    fn find(&self, presented: &[u8]) -> Option<&Token> {
        let mut found = None;
        for token in &self.0 {
            if bool::from(token.secret.as_slice().ct_eq(presented)) {
                found = Some(token);
            }
        }
        found
    }
}

/// The admin service's state.
pub struct Admin {
    state: Arc<State>,
    tokens: Tokens,
    series: Arc<Series>,
}

impl Admin {
    /// The admin API over the server's state, with the ops page's series.
    pub fn new(state: Arc<State>, tokens: Tokens, series: Arc<Series>) -> Self {
        Admin { state, tokens, series }
    }
}

fn fail(admin: &Admin, status: StatusCode, code: &str, message: &str) -> HttpResponse {
    error(&admin.state, status, code, message, None, None)
}

fn ok<T: Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    json(status, serde_json::to_vec_pretty(body).expect("admin answers serialise"))
}

fn registry_error(admin: &Admin, e: &registry::Error) -> HttpResponse {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = match status.as_u16() {
        404 => "not_found",
        409 => "conflict",
        413 => "payload_too_large",
        422 => "rejected",
        _ => "internal",
    };
    fail(admin, status, code, &e.to_string())
}

/// Routes one admin request.
pub async fn handle(admin: Arc<Admin>, request: Request<Incoming>) -> HttpResponse {
    if request.method() == Method::GET
        && let Some(page) = ops::asset(request.uri().path())
    {
        return page;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().as_bytes().to_vec());
    let Some(token) = presented.as_deref().and_then(|p| admin.tokens.find(p)).cloned() else {
        let mut response =
            fail(&admin, StatusCode::UNAUTHORIZED, "unauthorized", "send `Authorization: Bearer <admin token>`");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    let span =
        tracing::info_span!("admin", token = %token.name, method = %request.method(), path = %request.uri().path());
    dispatch(admin, request, token).instrument(span).await
}

async fn dispatch(admin: Arc<Admin>, request: Request<Incoming>, token: Token) -> HttpResponse {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "policies"]) => list_policies(&admin),
        (&Method::GET, ["v1", "policies", name, "versions", version]) => show_version(&admin, name, version),
        (&Method::PUT, ["v1", "policies", name, "versions", version]) => {
            if token.role < Role::Deploy {
                return forbidden(&admin, &token, "upload versions");
            }
            let (name, version) = (name.to_string(), version.to_string());
            upload(admin, request, name, version, token).await
        }
        (&Method::DELETE, ["v1", "policies", name, "versions", version]) => {
            if token.role < Role::Deploy {
                return forbidden(&admin, &token, "delete versions");
            }
            let (name, version) = (name.to_string(), version.to_string());
            let change = Change::DeleteVersion {
                policy: name,
                version,
                actor: token.name.clone(),
                own_only: token.surfaces.is_some(),
            };
            submit(admin, change).await
        }
        (&Method::GET, ["v1", "fleet"]) => fleet_status(&admin).await,
        (&Method::GET, ["v1", "whoami"]) => whoami(&token),
        (&Method::GET, ["v1", "ops", "series"]) => series(&admin, request.uri().query()),
        (&Method::GET, ["v1", "surfaces"]) => list_surfaces(&admin),
        (&Method::GET, ["v1", "surfaces", surface]) => show_surface(&admin, surface),
        (&Method::PUT, ["v1", "surfaces", surface, "plan"]) => {
            if let Some(denied) = may_change(&admin, &token, surface) {
                return denied;
            }
            let surface = surface.to_string();
            set_plan(admin, request, surface, token).await
        }
        (&Method::PUT, ["v1", "surfaces", surface, "activation"]) => {
            if let Some(denied) = may_change(&admin, &token, surface) {
                return denied;
            }
            let surface = surface.to_string();
            activate(admin, request, surface, token).await
        }
        (&Method::POST, ["v1", "surfaces", surface, "rollback"]) => {
            if let Some(denied) = may_change(&admin, &token, surface) {
                return denied;
            }
            let surface = surface.to_string();
            rollback(admin, request, surface, token).await
        }
        (
            _,
            ["v1", "policies"]
            | ["v1", "surfaces"]
            | ["v1", "surfaces", _]
            | ["v1", "fleet"]
            | ["v1", "whoami"]
            | ["v1", "ops", "series"],
        ) => method_not_allowed(&admin, "GET"),
        (_, ["v1", "policies", _, "versions", _]) => method_not_allowed(&admin, "GET, PUT, DELETE"),
        (_, ["v1", "surfaces", _, "activation"] | ["v1", "surfaces", _, "plan"]) => method_not_allowed(&admin, "PUT"),
        (_, ["v1", "surfaces", _, "rollback"]) => method_not_allowed(&admin, "POST"),
        _ => fail(&admin, StatusCode::NOT_FOUND, "not_found", &format!("no admin endpoint `{path}`")),
    }
}

/// The presented token: what the ops page shows and which actions it offers.
fn whoami(token: &Token) -> HttpResponse {
    let role = match token.role {
        Role::Read => "read",
        Role::Deploy => "deploy",
    };
    ok(StatusCode::OK, &serde_json::json!({ "name": token.name, "role": role, "surfaces": token.surfaces }))
}

/// The ops page's series, the points after `?after=<unix ms>` if given.
fn series(admin: &Admin, query: Option<&str>) -> HttpResponse {
    let mut after = None;
    for (key, value) in
        query.unwrap_or("").split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
    {
        match key {
            "after" => match value.parse::<i64>() {
                Ok(ms) => after = Some(ms),
                Err(_) => {
                    let message = format!("`after` is `{value}`, not a time in Unix milliseconds");
                    return fail(admin, StatusCode::BAD_REQUEST, "bad_query", &message);
                }
            },
            other => {
                let message = format!("unknown query parameter `{other}` (known: after)");
                return fail(admin, StatusCode::BAD_REQUEST, "bad_query", &message);
            }
        }
    }
    json(StatusCode::OK, admin.series.json(after))
}

fn method_not_allowed(admin: &Admin, allow: &'static str) -> HttpResponse {
    let mut response = fail(admin, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", &format!("use {allow}"));
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn forbidden(admin: &Admin, token: &Token, what: &str) -> HttpResponse {
    let message = format!("token `{}` has the `read` role and may not {what}", token.name);
    fail(admin, StatusCode::FORBIDDEN, "forbidden", &message)
}

fn may_change(admin: &Admin, token: &Token, surface: &str) -> Option<HttpResponse> {
    if token.role < Role::Deploy {
        return Some(forbidden(admin, token, "change surfaces"));
    }
    match &token.surfaces {
        Some(allowed) if !allowed.iter().any(|s| s == surface) => {
            let message = format!("token `{}` may change only: {}", token.name, allowed.join(", "));
            Some(fail(admin, StatusCode::FORBIDDEN, "forbidden", &message))
        }
        _ => None,
    }
}

/// Runs a registry call on the blocking pool (they do file I/O and may compile).
async fn blocking(
    admin: Arc<Admin>,
    work: impl FnOnce(&Admin) -> anyhow::Result<HttpResponse> + Send + 'static,
) -> HttpResponse {
    let worker = admin.clone();
    match tokio::task::spawn_blocking(move || work(&worker)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => fail(&admin, StatusCode::INTERNAL_SERVER_ERROR, "internal", &format!("{e:#}")),
        Err(e) => fail(&admin, StatusCode::INTERNAL_SERVER_ERROR, "internal", &format!("the admin task failed: {e}")),
    }
}

/// What an admin endpoint takes as its body.
#[derive(Clone, Copy)]
enum Media {
    /// A component: `application/wasm` or `application/octet-stream`.
    Component,
    /// A JSON document: `application/json`.
    Json,
}

impl Media {
    fn accepts(self) -> &'static [&'static str] {
        match self {
            Media::Component => &["application/wasm", "application/octet-stream"],
            Media::Json => &["application/json"],
        }
    }
}

/// Refuses a body whose `content-type` is not what the endpoint takes (`415`, naming both). A
/// body without one is taken as what the endpoint expects (RFC 9110, 8.3): `curl --data-binary`
/// sends `application/x-www-form-urlencoded`, which is refused, so the error says what to send.
fn check_media(admin: &Admin, headers: &hyper::HeaderMap, media: Media) -> Option<HttpResponse> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let given = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
    if media.accepts().iter().any(|accepted| given.eq_ignore_ascii_case(accepted)) {
        return None;
    }
    let message = format!(
        "this endpoint takes `content-type: {}`, not `{}`",
        media.accepts().join("` or `"),
        String::from_utf8_lossy(value.as_bytes())
    );
    Some(fail(admin, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", &message))
}

async fn read_body(
    admin: &Admin,
    request: Request<Incoming>,
    limit: usize,
    media: Media,
) -> Result<Bytes, HttpResponse> {
    if let Some(refused) = check_media(admin, request.headers(), media) {
        return Err(refused);
    }
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(fail(
            admin,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("the body is over {limit} bytes"),
        ));
    }
    let timeout = std::time::Duration::from_secs(admin.state.config.server.read_timeout_secs);
    match tokio::time::timeout(timeout, Limited::new(request.into_body(), limit).collect()).await {
        Err(_) => Err(fail(
            admin,
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            &format!("the body did not arrive within {timeout:?}"),
        )),
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(fail(
            admin,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("the body is over {limit} bytes"),
        )),
        Ok(Err(e)) => {
            Err(fail(admin, StatusCode::BAD_REQUEST, "unreadable_body", &format!("could not read the body: {e}")))
        }
    }
}

/// What an upload answers.
#[derive(Serialize)]
struct Uploaded<'a> {
    created: bool,
    version: &'a VersionInfo,
}

async fn upload(
    admin: Arc<Admin>,
    request: Request<Incoming>,
    name: String,
    version: String,
    token: Token,
) -> HttpResponse {
    let limit = admin.state.config.admin.max_upload_bytes;
    let bytes = match read_body(&admin, request, limit, Media::Component).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    if let Some(fleet) = admin.state.fleet.clone() {
        let Ok(registry) = admin.state.registry().cloned() else {
            return fail(&admin, StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is starting");
        };
        return match fleet.upload(&registry, &name, &version, bytes, &token.name).await {
            Ok(put) => uploaded(&admin, &name, &version, Ok(put)),
            Err(FleetError::Registry(e)) => uploaded(&admin, &name, &version, Err(e)),
            Err(e) => fleet_error(&admin, &e),
        };
    }
    blocking(admin, move |admin| {
        let put = admin.state.registry()?.put_version(&name, &version, &bytes, &token.name);
        Ok(uploaded(admin, &name, &version, put))
    })
    .await
}

/// Answers an upload.
fn uploaded(admin: &Admin, name: &str, version: &str, put: Result<Put, registry::Error>) -> HttpResponse {
    match put {
        Ok(Put::Created(info)) => ok(StatusCode::CREATED, &Uploaded { created: true, version: &info }),
        Ok(Put::Unchanged(info)) => ok(StatusCode::OK, &Uploaded { created: false, version: &info }),
        Err(e) => {
            if let registry::Error::InvalidComponent { source, .. } = &e {
                admin.state.metrics.upload_rejected(source.code());
                tracing::warn!(policy = %name, version = %version, reason = source.code(), "upload refused: {source}");
            }
            registry_error(admin, &e)
        }
    }
}

/// The body of an activation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivationRequest {
    policy: String,
    version: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

/// The body of a rollback.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    #[serde(default)]
    reason: Option<String>,
}

/// Parses a JSON body; the error is the `400` answer naming the field.
fn parse_json<T: for<'de> Deserialize<'de>>(admin: &Admin, body: &[u8]) -> Result<T, Box<HttpResponse>> {
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let message = format!("{}: {}", e.path(), e.inner());
        Box::new(fail(admin, StatusCode::BAD_REQUEST, "malformed_request", &message))
    })
}

/// The body of a plan change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanRequest {
    #[serde(flatten)]
    plan: PlanSpec,
    #[serde(default)]
    expected_revision: Option<Revision>,
    #[serde(default)]
    reason: Option<String>,
}

/// What a change of a surface's plan answers: the surface's current revision.
#[derive(Serialize)]
struct Changed<'a> {
    changed: bool,
    #[serde(flatten)]
    revision: &'a PlanRevision,
}

/// Applies a change and answers it: the revision, or the refusal naming the field. On a fleet
/// host the change goes through the fleet.
async fn submit(admin: Arc<Admin>, change: Change) -> HttpResponse {
    let Some(fleet) = admin.state.fleet.clone() else {
        return blocking(admin, move |admin| Ok(apply(admin, change))).await;
    };
    let Ok(control) = admin.state.control().cloned() else {
        return fail(&admin, StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is starting");
    };
    match fleet.submit(&control, change).await {
        Ok(applied) => answer(applied),
        Err(e) => fleet_error(&admin, &e),
    }
}

/// Applies a change on this host (one that stands alone).
fn apply(admin: &Admin, change: Change) -> HttpResponse {
    let control = match admin.state.control() {
        Ok(control) => control,
        Err(_) => return fail(admin, StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is starting"),
    };
    match control.apply(change) {
        Ok(applied) => answer(applied),
        Err(e) => change_error(admin, &e),
    }
}

fn answer(applied: Applied) -> HttpResponse {
    match applied {
        Applied::Plan { revision, changed } => ok(StatusCode::OK, &Changed { changed, revision: &revision }),
        Applied::Deleted(info) => ok(StatusCode::OK, &info),
        Applied::Ignored => ok(StatusCode::OK, &serde_json::json!({ "changed": false })),
    }
}

fn fleet_error(admin: &Admin, e: &FleetError) -> HttpResponse {
    match e {
        FleetError::Change(e) => change_error(admin, e),
        FleetError::Registry(e) => registry_error(admin, e),
        FleetError::Conflict { current, .. } => {
            let mut response = fail(admin, StatusCode::CONFLICT, "conflict", &e.to_string());
            if let Some(current) = current {
                response.headers_mut().insert("x-relish-plan-revision", HeaderValue::from(*current));
            }
            response
        }
        FleetError::Unavailable { .. } => {
            let mut response = fail(admin, StatusCode::SERVICE_UNAVAILABLE, "fleet_unavailable", &e.to_string());
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
        FleetError::Behind { .. } => {
            let mut response = fail(admin, StatusCode::SERVICE_UNAVAILABLE, "fleet_behind", &e.to_string());
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        FleetError::NotApplied { .. } => fail(admin, StatusCode::GATEWAY_TIMEOUT, "fleet_timeout", &e.to_string()),
        FleetError::Refused { .. } => fail(admin, StatusCode::INTERNAL_SERVER_ERROR, "fleet_refused", &e.to_string()),
    }
}

async fn fleet_status(admin: &Admin) -> HttpResponse {
    let Some(fleet) = &admin.state.fleet else {
        return fail(
            admin,
            StatusCode::NOT_FOUND,
            "no_fleet",
            "this host stands alone: configure [fleet] nats (or RELISH_FLEET_NATS) to join a fleet",
        );
    };
    match fleet.status().await {
        Ok(status) => ok(StatusCode::OK, &status),
        Err(e) => {
            // The fleet is out of reach: say so, with what this host knows of itself.
            let body = serde_json::json!({
                "error": { "status": 503, "code": "fleet_unavailable", "message": e.to_string() },
                "host": fleet.report(admin.state.control().ok()),
            });
            admin.state.metrics.rejected(503, "fleet_unavailable");
            json(StatusCode::SERVICE_UNAVAILABLE, serde_json::to_vec_pretty(&body).expect("serialises"))
        }
    }
}

fn change_error(admin: &Admin, e: &ChangeError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = match status.as_u16() {
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        413 => "payload_too_large",
        422 => "rejected",
        _ => "internal",
    };
    let mut response = error(&admin.state, status, code, &e.to_string(), e.field(), None);
    if let Some(current) = e.current_revision() {
        response.headers_mut().insert("x-relish-plan-revision", HeaderValue::from(current));
    }
    response
}

async fn set_plan(admin: Arc<Admin>, request: Request<Incoming>, surface: String, token: Token) -> HttpResponse {
    let body = match read_body(&admin, request, 64 << 10, Media::Json).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let wanted: PlanRequest = match parse_json(&admin, &body) {
        Ok(wanted) => wanted,
        Err(response) => return *response,
    };
    let change = Change::SetPlan {
        surface,
        plan: wanted.plan,
        expected_revision: wanted.expected_revision,
        actor: token.name,
        reason: wanted.reason,
    };
    submit(admin, change).await
}

async fn activate(admin: Arc<Admin>, request: Request<Incoming>, surface: String, token: Token) -> HttpResponse {
    let body = match read_body(&admin, request, 64 << 10, Media::Json).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let wanted: ActivationRequest = match parse_json(&admin, &body) {
        Ok(wanted) => wanted,
        Err(response) => return *response,
    };
    let plan = PlanSpec::single(&wanted.policy, &wanted.version, wanted.params);
    let change = Change::SetPlan { surface, plan, expected_revision: None, actor: token.name, reason: None };
    submit(admin, change).await
}

async fn rollback(admin: Arc<Admin>, request: Request<Incoming>, surface: String, token: Token) -> HttpResponse {
    let body = match read_body(&admin, request, 64 << 10, Media::Json).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let wanted: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        match parse_json(&admin, &body) {
            Ok(wanted) => wanted,
            Err(response) => return *response,
        }
    };
    let reason = wanted.reason.unwrap_or_else(|| "manual rollback".to_owned());
    let change = Change::Rollback { surface, actor: token.name, reason };
    submit(admin, change).await
}

fn list_policies(admin: &Admin) -> HttpResponse {
    let Ok(registry) = admin.state.registry() else {
        return fail(admin, StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is starting");
    };
    let mut policies: BTreeMap<String, Vec<VersionInfo>> = BTreeMap::new();
    for version in registry.versions() {
        policies.entry(version.policy.clone()).or_default().push(version);
    }
    ok(StatusCode::OK, &serde_json::json!({ "policies": policies }))
}

fn show_version(admin: &Admin, name: &str, version: &str) -> HttpResponse {
    let Ok(registry) = admin.state.registry() else {
        return fail(admin, StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is starting");
    };
    match registry.version(name, version) {
        Ok(info) => {
            let active_on = registry.active_on(name, version);
            ok(StatusCode::OK, &serde_json::json!({ "version": info, "active_on": active_on }))
        }
        Err(e) => registry_error(admin, &e),
    }
}

/// A surface's status: its plan now (arms with weights, shadows with their figures), within which
/// limits, how healthy each arm is, and its history (every plan revision; automatic rollbacks
/// are revisions by `relish` with a reason, and the revision they left is marked `failed`).
#[derive(Serialize)]
struct SurfaceStatus {
    surface: String,
    /// The current plan revision (absent without a plan).
    current: Option<PlanRevision>,
    /// The surface's latest revision number: what a compare-and-swap change names.
    revision: Revision,
    /// `policy@version` of each arm serving now, comma-separated; absent without a plan.
    serving: Option<String>,
    fallback: Option<String>,
    limits: Option<Limits>,
    arms: Vec<ArmStatus>,
    shadows: Vec<ShadowStatus>,
    history: Vec<PlanRevision>,
}

/// One arm as it serves now.
#[derive(Serialize)]
struct ArmStatus {
    index: usize,
    name: String,
    policy: String,
    version: String,
    weight: u16,
    /// Its failures in the automatic-rollback window; absent when automatic rollback is off.
    health: Option<HealthSnapshot>,
}

/// One shadow as it runs now.
#[derive(Serialize)]
struct ShadowStatus {
    name: String,
    policy: String,
    version: String,
    sample: f64,
    /// Calls skipped at the surface's shadow concurrency limit.
    skipped: u64,
    /// Its calls and agreement, by the arm it was compared with.
    against: Vec<ShadowFigures>,
}

/// The per-call budget and limits a surface's calls run under.
#[derive(Serialize)]
struct Limits {
    deadline_ms: f64,
    memory_mb: f64,
    fuel: Option<u64>,
    log_lines: u32,
    max_candidates: usize,
    max_concurrency: Option<usize>,
    shadow_concurrency: usize,
}

fn status(admin: &Admin, surface: &str) -> Option<SurfaceStatus> {
    let registry = admin.state.registry().ok()?;
    let binding = admin.state.router.get(surface);
    let stored = registry.surface(surface).ok();
    if binding.is_none() && stored.is_none() {
        return None;
    }
    let revision = stored.as_ref().map_or(0, registry::Surface::revision);
    let history = stored.map(|s| s.history).unwrap_or_default();
    let current = history.last().filter(|r| r.ended.is_none()).cloned();
    let shadows = binding
        .as_ref()
        .map(|b| {
            b.shadows
                .iter()
                .map(|s| ShadowStatus {
                    name: s.name.clone(),
                    policy: s.bound.name.clone(),
                    version: s.bound.version.clone(),
                    sample: f64::from(s.threshold) / 10_000.0,
                    skipped: s.stats.skipped(),
                    against: s.stats.figures(),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(SurfaceStatus {
        surface: surface.to_owned(),
        current,
        revision,
        serving: binding.as_ref().filter(|b| !b.arms.is_empty()).map(|b| b.arm_versions().join(", ")),
        fallback: binding.as_ref().and_then(|b| b.fallback.as_ref()).map(|f| format!("{}@{}", f.name, f.version)),
        limits: binding.as_ref().map(|b| Limits {
            deadline_ms: b.budget.deadline.as_secs_f64() * 1000.0,
            memory_mb: b.budget.memory_bytes as f64 / f64::from(1 << 20),
            fuel: b.budget.fuel,
            log_lines: b.budget.log_lines,
            max_candidates: b.max_candidates,
            max_concurrency: b.limiter.as_ref().map(|l| l.max()),
            shadow_concurrency: b.shadow_limiter.max(),
        }),
        arms: binding
            .as_ref()
            .map(|b| {
                b.arms
                    .iter()
                    .enumerate()
                    .map(|(index, a)| ArmStatus {
                        index,
                        name: a.name.clone(),
                        policy: a.bound.name.clone(),
                        version: a.bound.version.clone(),
                        weight: a.weight,
                        health: a.health.as_ref().map(|h| h.snapshot()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        shadows,
        history,
    })
}

fn list_surfaces(admin: &Admin) -> HttpResponse {
    let mut names: Vec<String> = admin.state.router.all().keys().cloned().collect();
    if let Ok(registry) = admin.state.registry() {
        names.extend(registry.surfaces().into_iter().map(|s| s.name));
    }
    names.sort();
    names.dedup();
    let surfaces: Vec<SurfaceStatus> = names.iter().filter_map(|name| status(admin, name)).collect();
    ok(StatusCode::OK, &serde_json::json!({ "surfaces": surfaces }))
}

fn show_surface(admin: &Admin, surface: &str) -> HttpResponse {
    match status(admin, surface) {
        Some(status) => ok(StatusCode::OK, &status),
        None => fail(admin, StatusCode::NOT_FOUND, "not_found", &format!("no surface `{surface}`")),
    }
}
