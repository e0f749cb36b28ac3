//! The admin API and CLI: upload, activate, roll back, authentication, restart.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hyper::StatusCode;
use relish_host::server::config::{Role, TokenConfig};

use crate::util::{self, ADMIN_TOKEN, admin, admin_as, get, metric, rank};

const TWO: &str = r#"{"candidates": [{"id": "a"}, {"id": "b"}]}"#;

fn tagger(version: u8) -> Vec<u8> {
    relish_tests::guest_bytes(&format!("tagger-v{version}"))
}

async fn upload(server: &util::TestServer, version: u8) -> util::Answer {
    admin(server, "PUT", &format!("/v1/policies/tagger/versions/{version}.0.0"), tagger(version)).await
}

async fn activate(server: &util::TestServer, surface: &str, version: &str) -> util::Answer {
    let body = format!(r#"{{"policy": "tagger", "version": "{version}"}}"#);
    admin(server, "PUT", &format!("/v1/surfaces/{surface}/activation"), body).await
}

/// The version the response names, checked against the reason code every item carries (which
/// the version that computed the answer put there).
fn answered_version(answer: &serde_json::Value) -> String {
    let named = answer["policy"]["version"].as_str().unwrap().to_owned();
    let computed: BTreeSet<&str> =
        answer["items"].as_array().unwrap().iter().map(|i| i["reason"].as_str().unwrap()).collect();
    assert_eq!(computed.len(), 1, "one version computed the whole answer: {answer}");
    let computed = computed.into_iter().next().unwrap();
    assert_eq!(format!("v{}", &named[..1]), computed, "the response names the version that computed it");
    named
}

const SWAP: &str = "[surfaces.swap]\npolicy = \"tagger\"\n[surfaces.discovery]\npolicy = \"popularity\"\n";

#[tokio::test]
async fn upload_activate_and_roll_back_change_what_answers() {
    let server = util::start(&["popularity"], &["tagger=tagger-v1"], SWAP).await;
    assert_eq!(answered_version(&rank(&server, "swap", TWO).await.json()), "1.0.0");

    let uploaded = upload(&server, 2).await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&uploaded.body));
    assert_eq!(uploaded.json()["version"]["uploaded_by"], "test");
    assert_eq!(upload(&server, 2).await.status, StatusCode::OK, "the same bytes again change nothing");
    assert_eq!(answered_version(&rank(&server, "swap", TWO).await.json()), "1.0.0", "uploading does not activate");

    let activated = activate(&server, "swap", "2.0.0").await;
    assert_eq!(activated.status, StatusCode::OK, "{}", String::from_utf8_lossy(&activated.body));
    assert_eq!(answered_version(&rank(&server, "swap", TWO).await.json()), "2.0.0");

    let status = admin(&server, "GET", "/v1/surfaces/swap", "").await.json();
    assert_eq!(status["serving"], "tagger@2.0.0");
    assert_eq!(status["history"].as_array().unwrap().len(), 2);

    let rolled = admin(&server, "POST", "/v1/surfaces/swap/rollback", r#"{"reason": "v2 looks off"}"#).await;
    assert_eq!(rolled.status, StatusCode::OK, "{}", String::from_utf8_lossy(&rolled.body));
    assert_eq!(answered_version(&rank(&server, "swap", TWO).await.json()), "1.0.0");
    let history = admin(&server, "GET", "/v1/surfaces/swap", "").await.json()["history"].clone();
    assert_eq!(history[1]["ended"]["how"], "rolled-back");
    assert_eq!(history[1]["ended"]["reason"], "v2 looks off");

    let listed = admin(&server, "GET", "/v1/policies", "").await.json();
    assert_eq!(listed["policies"]["tagger"].as_array().unwrap().len(), 2);
    let shown = admin(&server, "GET", "/v1/policies/tagger/versions/1.0.0", "").await.json();
    assert_eq!(shown["active_on"], serde_json::json!(["swap"]));

    // A version that is active cannot be deleted; an inactive one can.
    assert_eq!(admin(&server, "DELETE", "/v1/policies/tagger/versions/1.0.0", "").await.status, StatusCode::CONFLICT);
    assert_eq!(admin(&server, "DELETE", "/v1/policies/tagger/versions/2.0.0", "").await.status, StatusCode::OK);
    assert_eq!(admin(&server, "GET", "/v1/policies/tagger/versions/2.0.0", "").await.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn every_refusal_has_its_status_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = util::bundled(dir.path(), &["popularity"], &["tagger=tagger-v1"]);
    let mut config = util::config(dir.path(), &bundled, SWAP);
    config.admin.max_upload_bytes = 200_000;
    config.admin.tokens.push(TokenConfig {
        name: "reader".into(),
        secret: Some("reader-token-0123456789".into()),
        secret_env: None,
        role: Role::Read,
        surfaces: None,
    });
    config.admin.tokens.push(TokenConfig {
        name: "team-banners".into(),
        secret: Some("banners-token-0123456789".into()),
        secret_env: None,
        role: Role::Deploy,
        surfaces: Some(vec!["banners".into()]),
    });
    let server = util::start_config(dir, config).await;

    // 401: no token, a wrong token.
    let none = admin_as(&server, None, "GET", "/v1/policies", "").await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = admin_as(&server, Some("not-the-token-0123456789"), "GET", "/v1/policies", "").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // The data plane never serves the admin API, and the admin API never serves ranking.
    assert_eq!(get(&server, "/v1/policies").await.status, StatusCode::NOT_FOUND);

    // 403: a read token may read but not deploy; a surface-limited token only its surfaces.
    let reader = Some("reader-token-0123456789");
    assert_eq!(admin_as(&server, reader, "GET", "/v1/surfaces", "").await.status, StatusCode::OK);
    let denied = admin_as(&server, reader, "PUT", "/v1/policies/tagger/versions/2.0.0", tagger(2)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(denied.json()["error"]["message"].as_str().unwrap().contains("read"));
    let team = Some("banners-token-0123456789");
    let body = r#"{"policy": "tagger", "version": "1.0.0"}"#;
    let other_team = admin_as(&server, team, "PUT", "/v1/surfaces/swap/activation", body).await;
    assert_eq!(other_team.status, StatusCode::FORBIDDEN);
    assert!(other_team.json()["error"]["message"].as_str().unwrap().contains("banners"));
    assert_eq!(admin_as(&server, team, "POST", "/v1/surfaces/swap/rollback", "").await.status, StatusCode::FORBIDDEN);
    // A team token may upload, and delete what it uploaded, but not another team's versions.
    assert_eq!(
        admin_as(&server, team, "PUT", "/v1/policies/tagger/versions/2.0.0", tagger(2)).await.status,
        StatusCode::CREATED
    );
    let foreign = admin_as(&server, team, "DELETE", "/v1/policies/popularity/versions/0.1.0", "").await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert!(foreign.json()["error"]["message"].as_str().unwrap().contains("uploaded by"));
    assert_eq!(
        admin_as(&server, team, "DELETE", "/v1/policies/tagger/versions/2.0.0", "").await.status,
        StatusCode::OK
    );

    // 409: other bytes (here: a custom section more) of a usable component under an existing
    // version. A component that declares another version is refused for that first (422, below).
    let mut other_bytes = tagger(1);
    other_bytes.extend_from_slice(&[0, 6, 4, b'n', b'o', b't', b'e', 1]);
    let conflict = admin(&server, "PUT", "/v1/policies/tagger/versions/1.0.0", other_bytes).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", String::from_utf8_lossy(&conflict.body));

    // 422, not 409: a truncated upload under an existing version is refused as what it is, and
    // counted as a rejected upload; the stored version is untouched.
    let rejected = |scrape: &str| metric(scrape, "relish_upload_rejections_total", &[]);
    let before = rejected(&get(&server, "/metrics").await.text());
    let whole = tagger(1);
    let truncated =
        admin(&server, "PUT", "/v1/policies/tagger/versions/1.0.0", whole[..whole.len() / 2].to_vec()).await;
    assert_eq!(truncated.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", String::from_utf8_lossy(&truncated.body));
    assert_eq!(truncated.json()["error"]["code"], "rejected");
    assert_eq!(rejected(&get(&server, "/metrics").await.text()), before + 1.0);
    let again = admin(&server, "PUT", "/v1/policies/tagger/versions/1.0.0", whole).await;
    assert_eq!((again.status, &again.json()["created"]), (StatusCode::OK, &serde_json::json!(false)));

    // 413: over the upload limit, with the data plane's code.
    let big = admin(&server, "PUT", "/v1/policies/tagger/versions/3.0.0", vec![0u8; 300_000]).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(big.json()["error"]["code"], "payload_too_large");

    // 415: an upload must be a component and a plan JSON; no content-type is taken as meant.
    let typed = |path: &str, content_type: &str, body: Vec<u8>| {
        let request = hyper::Request::put(format!("{}{path}", server.admin))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", content_type)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        util::send(request)
    };
    let json_upload = typed("/v1/policies/tagger/versions/3.0.0", "application/json", tagger(2)).await;
    assert_eq!(json_upload.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let message = json_upload.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("application/wasm") && message.contains("`application/json`"), "{message}");
    let form =
        typed("/v1/surfaces/swap/activation", "application/x-www-form-urlencoded", body.as_bytes().to_vec()).await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(form.json()["error"]["code"], "unsupported_media_type");
    let wasm = typed("/v1/policies/tagger/versions/1.0.0", "application/wasm", tagger(1)).await;
    assert_eq!(wasm.status, StatusCode::OK, "{}", String::from_utf8_lossy(&wasm.body));
    let json_plan =
        typed("/v1/surfaces/swap/activation", "application/json; charset=utf-8", body.as_bytes().to_vec()).await;
    assert_eq!(json_plan.status, StatusCode::OK, "{}", String::from_utf8_lossy(&json_plan.body));

    // 422: not a component, a component of another world, a name the metadata contradicts.
    let garbage = admin(&server, "PUT", "/v1/policies/tagger/versions/3.0.0", b"not wasm".to_vec()).await;
    assert_eq!(garbage.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(garbage.json()["error"]["message"].as_str().unwrap().contains("not a WebAssembly component"));
    let wasi =
        admin(&server, "PUT", "/v1/policies/wasi-import/versions/0.1.0", relish_tests::guest_bytes("wasi-import"))
            .await;
    assert_eq!(wasi.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wasi.json()["error"]["message"].as_str().unwrap().contains("wasi:"));
    let renamed = admin(&server, "PUT", "/v1/policies/other/versions/2.0.0", tagger(2)).await;
    assert_eq!(renamed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown_param = admin(
        &server,
        "PUT",
        "/v1/surfaces/swap/activation",
        r#"{"policy": "tagger", "version": "1.0.0", "params": {"speed": "11"}}"#,
    )
    .await;
    assert_eq!(unknown_param.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown_param.json()["error"]["message"].as_str().unwrap().contains("speed"));
    let bad_json = admin(&server, "PUT", "/v1/surfaces/swap/activation", r#"{"policy": "tagger"}"#).await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    assert!(bad_json.json()["error"]["message"].as_str().unwrap().contains("version"));
    assert_eq!(admin(&server, "POST", "/v1/surfaces/discovery/rollback", "").await.status, StatusCode::CONFLICT);

    // Unsafe names: `..`, an encoded slash, NUL.
    for name in ["..", "a%2Fb", "a%00b", ".hidden"] {
        let answer = admin(&server, "PUT", &format!("/v1/policies/{name}/versions/1.0.0"), tagger(1)).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    let listed = admin(&server, "GET", "/v1/policies", "").await.json();
    assert_eq!(
        listed["policies"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["popularity", "tagger"],
        "nothing refused was stored"
    );
    server.stop().await;
}

#[tokio::test]
async fn concurrent_uploads_of_one_version_store_it_once() {
    let server = Arc::new(util::start(&["popularity"], &[], "").await);
    let uploads: Vec<_> = (0..6)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { upload(&server, 2).await })
        })
        .collect();
    let mut created = 0;
    for upload in uploads {
        let answer = upload.await.unwrap();
        assert!(answer.status == StatusCode::CREATED || answer.status == StatusCode::OK, "{:?}", answer.status);
        created += usize::from(answer.status == StatusCode::CREATED);
    }
    assert_eq!(created, 1, "exactly one upload created the version");
    let listed = admin(&server, "GET", "/v1/policies", "").await.json();
    assert_eq!(listed["policies"]["tagger"].as_array().unwrap().len(), 1);
    Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test]
async fn a_restart_restores_versions_and_activations_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = util::bundled(dir.path(), &["popularity"], &["tagger=tagger-v1"]);
    let config = util::config(dir.path(), &bundled, SWAP);
    let first = relish_host::server::start(config.clone()).await.unwrap();
    let server = util::TestServer {
        base: format!("http://{}", first.addr),
        admin: format!("http://{}", first.admin_addr),
        handle: Some(first),
        dir,
    };
    assert_eq!(upload(&server, 2).await.status, StatusCode::CREATED);
    assert_eq!(activate(&server, "swap", "2.0.0").await.status, StatusCode::OK);
    let scrape = String::from_utf8(get(&server, "/metrics").await.body.to_vec()).unwrap();
    assert!(metric(&scrape, "relish_compiles_total", &[]) >= 1.0, "the first host compiled what it was given");
    let util::TestServer { handle, dir, .. } = server;
    handle.unwrap().shutdown().await;

    // A new engine, as after a process restart: its compile counter starts at zero.
    let second = relish_host::server::start(config).await.unwrap();
    let server = util::TestServer {
        base: format!("http://{}", second.addr),
        admin: format!("http://{}", second.admin_addr),
        handle: Some(second),
        dir,
    };
    assert_eq!(get(&server, "/readyz").await.status, StatusCode::OK);
    assert_eq!(answered_version(&rank(&server, "swap", TWO).await.json()), "2.0.0");
    let listed = admin(&server, "GET", "/v1/policies", "").await.json();
    assert_eq!(listed["policies"]["tagger"].as_array().unwrap().len(), 2);
    let scrape = String::from_utf8(get(&server, "/metrics").await.body.to_vec()).unwrap();
    assert_eq!(metric(&scrape, "relish_compiles_total", &[]), 0.0, "restored from artifacts, nothing compiled");
    server.stop().await;
}

/// Clients request continuously while versions are activated and rolled back 100 times: no request
/// fails, and every answer comes from exactly one version that was active during the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_swap_under_load_fails_no_request() {
    let server = Arc::new(util::start(&["popularity"], &["tagger=tagger-v1"], SWAP).await);
    assert_eq!(upload(&server, 2).await.status, StatusCode::CREATED);
    let epoch = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, done) = (server.clone(), done.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let start = epoch.elapsed();
                    let answer = rank(&server, "swap", TWO).await;
                    let end = epoch.elapsed();
                    assert_eq!(answer.status, StatusCode::OK);
                    let answer = answer.json();
                    assert_eq!(answer["fallback"], serde_json::Value::Null, "{answer}");
                    seen.push((start, end, answered_version(&answer)));
                }
                seen
            })
        })
        .collect();
    // Each switch happens somewhere inside its admin call: record the call's window.
    let mut switches = Vec::new();
    for i in 0..100 {
        let start = epoch.elapsed();
        let (answer, to) = if i % 2 == 0 {
            (activate(&server, "swap", "2.0.0").await, "2.0.0")
        } else {
            (admin(&server, "POST", "/v1/surfaces/swap/rollback", "").await, "1.0.0")
        };
        assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
        switches.push((start, epoch.elapsed(), to));
    }
    done.store(true, Ordering::Relaxed);
    let mut answers = 0;
    for client in clients {
        for (start, end, version) in client.await.unwrap() {
            answers += 1;
            assert!(possibly_active(&switches, &version, start, end), "{version} was not active in {start:?}..{end:?}");
        }
    }
    assert!(answers >= 100, "the clients kept requesting during the swaps ({answers} answers)");
    Arc::into_inner(server).unwrap().stop().await;
}

/// Whether `version` may have been active at some point of `start..end`, given switches whose
/// exact instant is only known to lie inside their admin call window. Version 1.0.0 is active
/// before the first switch.
fn possibly_active(
    switches: &[(std::time::Duration, std::time::Duration, &str)],
    version: &str,
    start: std::time::Duration,
    end: std::time::Duration,
) -> bool {
    let mut from = std::time::Duration::ZERO;
    let mut current = "1.0.0";
    for &(call_start, call_end, to) in switches {
        // `current` was active from `from` until at most `call_end`.
        if current == version && from <= end && start <= call_end {
            return true;
        }
        from = call_start;
        current = to;
    }
    current == version && from <= end
}

/// Runs the `relish` binary on the blocking pool; returns (success, stdout, stderr).
async fn cli(admin_url: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let (admin_url, token) = (admin_url.to_owned(), token.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_relish"))
            .args(&args)
            .env("RELISH_ADMIN_URL", admin_url)
            .env("RELISH_ADMIN_TOKEN", token)
            .output()
            .unwrap();
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        (output.status.success(), text(output.stdout), text(output.stderr))
    })
    .await
    .unwrap()
}

/// The CLI drives the same API, with readable output and errors.
#[tokio::test]
async fn the_cli_pushes_activates_rolls_back_and_reports_errors() {
    let server = util::start(&["popularity"], &["tagger=tagger-v1"], SWAP).await;
    let v2 = relish_tests::guests()["tagger-v2"].component.display().to_string();
    let relish = |args: &'static [&'static str]| cli(&server.admin, ADMIN_TOKEN, args);

    let (ok, out, err) = cli(&server.admin, ADMIN_TOKEN, &["policy", "push", &v2]).await;
    assert!(ok && out.contains("tagger@2.0.0 stored"), "{out}{err}");
    let (ok, out, _) = relish(&["policy", "list"]).await;
    assert!(ok && out.contains("tagger") && out.contains("2.0.0") && out.contains("popularity"), "{out}");
    let (ok, out, err) = relish(&["surface", "activate", "swap", "tagger@2.0.0"]).await;
    assert!(ok && out.contains("tagger@2.0.0 is active"), "{out}{err}");
    assert_eq!(answered_version(&rank(&server, "swap", TWO).await.json()), "2.0.0");
    let (ok, out, _) = relish(&["surface", "status", "swap"]).await;
    assert!(ok && out.contains("serving:  tagger@2.0.0"), "{out}");
    assert!(out.contains("limits:   deadline 5000 ms, memory 64 MiB"), "{out}");
    assert!(out.contains("[0] tagger@2.0.0"), "{out}");
    assert!(out.contains("0 of the last 1 calls failed; taken out at 5 % after 100 calls"), "{out}");
    let (ok, out, _) = relish(&["surface", "rollback", "swap", "--reason", "canary failed"]).await;
    assert!(ok && out.contains("rolled back to revision 3: tagger@1.0.0 100 %"), "{out}");
    let (ok, out, err) =
        relish(&["surface", "plan", "swap", "tagger@1.0.0=90", "tagger@2.0.0=10", "--shadow", "tagger@2.0.0:0.5"])
            .await;
    assert!(ok && out.contains("plan revision 4: tagger@1.0.0 90 %, tagger@2.0.0 10 % (+1 shadow)"), "{out}{err}");
    let (ok, out, _) = relish(&["surface", "status", "swap"]).await;
    assert!(ok && out.contains("[1] tagger@2.0.0") && out.contains("10.00 %") && out.contains("shadows:"), "{out}");
    let (ok, _, err) = relish(&["surface", "plan", "swap", "tagger@1.0.0=90", "tagger@2.0.0=5"]).await;
    assert!(!ok && err.contains("422") && err.contains("add up to 95"), "{err}");
    let (ok, _, _) = relish(&["surface", "rollback", "swap"]).await;
    assert!(ok);
    let (ok, out, _) = relish(&["surface", "status"]).await;
    assert!(ok && out.contains("swap") && out.contains("tagger@1.0.0"), "{out}");
    let (ok, out, _) = relish(&["policy", "show", "tagger@2.0.0"]).await;
    assert!(ok && out.contains("\"digest\""), "{out}");

    let (ok, _, err) = relish(&["surface", "activate", "swap", "tagger@9.9.9"]).await;
    assert!(!ok && err.contains("404") && err.contains("9.9.9"), "{err}");
    let (ok, _, err) = relish(&["surface", "activate", "swap", "tagger"]).await;
    assert!(!ok && err.contains("name@version"), "{err}");
    let (ok, _, err) = cli(&server.admin, "wrong-token-0123456789", &["policy", "list"]).await;
    assert!(!ok && err.contains("401"), "{err}");
    server.stop().await;
}
