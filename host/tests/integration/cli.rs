//! The policy author's tools: `relish new`, then `relish build` on that crate outside this
//! repository (the README's first policy, its steps run as written), `relish inspect` and
//! `relish rank`; `--version`, `serve --check`, the binary alone serving every standard surface,
//! and the systemd unit.

use std::path::Path;
use std::process::Command;

use crate::util;

fn relish(args: &[&str], dir: &Path) -> (bool, i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_relish")).args(args).current_dir(dir).output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.success(), output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

/// The policy in the README's "Write your first policy", verbatim.
fn readme_policy() -> String {
    let readme = std::fs::read_to_string(relish_tests::root().join("README.md")).unwrap();
    let start = readme.find("// nearest/src/lib.rs").expect("the README shows a policy");
    let code = &readme[start..];
    code[..code.find("```").unwrap()].to_owned()
}

/// The README's first-policy steps: the lines of the `sh` block after its marker, comments off.
fn readme_steps() -> Vec<String> {
    let readme = std::fs::read_to_string(relish_tests::root().join("README.md")).unwrap();
    let marked = &readme[readme.find("<!-- first-policy-steps").expect("the README marks its steps")..];
    let block = &marked[marked.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    block.lines().map(|line| line.split(" #").next().unwrap().trim().to_owned()).filter(|l| !l.is_empty()).collect()
}

/// The README's "Write your first policy", run as a new author would: every line of its steps as
/// written, in an empty directory outside the repository, against a running host; then the
/// README's own policy in place of the generated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_first_policy_steps_work_as_written_outside_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let root = relish_tests::root();
    let host_dir = dir.path().join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    let bundled = util::bundled(&host_dir, &["popularity"], &[]);
    let toml = format!(
        "[server]\nbundled_dir = {:?}\n[surfaces.discovery]\npolicy = \"popularity\"\n",
        bundled.display().to_string()
    );
    std::fs::write(host_dir.join("relish.toml"), toml).unwrap();
    let (port, admin_port) = (util::free_port(), util::free_port());
    let server = util::TestServer::at(port, admin_port);
    let mut host = util::spawn(&host_dir, port, admin_port);
    util::ready(&server, &mut host).await;

    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut cwd = work.clone();
    for step in readme_steps() {
        let words: Vec<&str> = step.split_whitespace().collect();
        if let ["cd", to] = words.as_slice() {
            cwd = cwd.join(to);
            // Share compiled dependencies with the test guests' build: the crate's `target/` is
            // a link to it (the commands stay as written).
            std::os::unix::fs::symlink(root.join("tests/guests/target"), cwd.join("target")).unwrap();
            let _ = std::fs::remove_file(cwd.join("target/policies/nearest.wasm"));
            continue;
        }
        let program = match words[0] {
            "relish" => env!("CARGO_BIN_EXE_relish"),
            "cargo" => "cargo",
            other => panic!("a step the test does not know how to run: {other}"),
        };
        let output = Command::new(program)
            .args(&words[1..])
            .current_dir(&cwd)
            .env("RELISH_ADMIN_URL", &server.admin)
            .env("RELISH_ADMIN_TOKEN", util::ADMIN_TOKEN)
            .output()
            .unwrap();
        let said = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "`{step}` failed:\n{said}");
        if step.starts_with("relish rank") {
            let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(answer["policy"]["name"], "nearest", "{said}");
            assert_eq!(answer["items"][0]["id"], "venue-closed-star", "the highest rating first: {said}");
        }
    }
    // The host serves what was pushed and activated.
    let fixture = std::fs::read_to_string(cwd.join("requests/discovery.json")).unwrap();
    let answer = util::rank(&server, "discovery", &fixture).await.json();
    assert_eq!((&answer["policy"]["name"], &answer["policy"]["version"]), (&"nearest".into(), &"0.1.0".into()));
    host.kill();

    // The README's own policy in place of the generated one.
    std::fs::write(cwd.join("src/lib.rs"), readme_policy()).unwrap();
    let (ok, _, out, err) = relish(&["build"], &cwd);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("(nearest 0.1.0: discovery)"), "{out}");
    let component = cwd.join("target/policies/nearest.wasm").display().to_string();
    let (ok, _, out, _) = relish(&["inspect", &component], &cwd);
    assert!(ok && out.contains("policy:   nearest 0.1.0") && out.contains("max_eta"), "{out}");
    assert!(!out.contains("wasi:"), "no WASI imports: {out}");
    let request = "requests/discovery.json";
    let (ok, _, out, err) =
        relish(&["rank", "--policy", &component, "--request", request, "--param", "max_eta=30"], &cwd);
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["items"][0]["id"], "venue-burger-1", "the fastest delivery (15 min) comes first");
    let (ok, _, _, err) = relish(&["rank", "--policy", &component, "--request", request, "--param", "speed=9"], &cwd);
    assert!(!ok && err.contains("speed") && err.contains("max_eta"), "{err}");
}

#[test]
fn inspect_names_why_a_component_is_refused() {
    let wasi = relish_tests::guests()["wasi-import"].component.display().to_string();
    let (ok, code, out, _) = relish(&["inspect", &wasi], &relish_tests::root());
    assert!(!ok && code == 2, "{out}");
    assert!(out.contains("rejected:") && out.contains("wasi:"), "{out}");
}

#[test]
fn rank_answers_in_input_order_and_exits_2_when_the_policy_fails() {
    let panic = relish_tests::guests()["panic"].component.display().to_string();
    let fixture = relish_tests::root().join("tests/fixtures/discovery-evening.json").display().to_string();
    let (ok, code, out, err) = relish(&["rank", "--policy", &panic, "--request", &fixture], &relish_tests::root());
    assert!(!ok && code == 2, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["fallback"]["reason"], "trap");
    assert_eq!(answer["items"][0]["id"], "venue-pizza-1", "input order");
    assert!(err.contains("trap"), "{err}");

    let popularity = relish_tests::policies()["popularity"].component.display().to_string();
    let bad = relish_tests::root().join("tests/fixtures/discovery-evening.json.missing").display().to_string();
    let (ok, _, _, err) = relish(&["rank", "--policy", &popularity, "--request", &bad], &relish_tests::root());
    assert!(!ok && err.contains("discovery-evening.json.missing"), "{err}");
}

#[test]
fn serve_check_refuses_what_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let check = |token: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_relish"))
            .args(["serve", "--check"])
            .env("RELISH_ADMIN_TOKEN", token)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (ok, stderr) = check("short");
    assert!(!ok, "a token `serve` refuses fails the check");
    assert!(stderr.contains("RELISH_ADMIN_TOKEN") && stderr.contains("at least 16 characters"), "{stderr}");
    let (ok, stderr) = check("a-long-enough-admin-secret");
    assert!(ok, "{stderr}");
}

#[test]
fn version_names_the_contracts_served_and_the_log_formats_read() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--version", "-V"] {
        let (ok, _, stdout, stderr) = relish(&[flag], dir.path());
        assert!(ok, "{stderr}");
        assert!(stdout.starts_with(&format!("relish {}\n", env!("CARGO_PKG_VERSION"))), "{stdout}");
        for contract in relish_host::runtime::Contract::ALL {
            assert!(stdout.contains(contract.name()), "{flag} names {contract}: {stdout}");
        }
        assert!(stdout.contains("decision log formats: 1, 2"), "{stdout}");
    }
    // The arguments are still checked as before.
    let (ok, code, _, stderr) = relish(&["serve", "--no-such-flag"], dir.path());
    assert!(!ok && code == 2, "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

/// The binary is the whole product: copied alone into an empty directory and started with no
/// configuration, no repository and no environment but its two addresses, `relish serve` answers
/// every standard surface with the bundled policy of that surface (none by a fallback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_alone_serves_every_standard_surface_with_its_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("relish");
    std::fs::copy(env!("CARGO_BIN_EXE_relish"), &binary).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (port, admin_port) = (util::free_port(), util::free_port());
    let log = std::fs::File::create(dir.path().join("relish.log")).unwrap();
    let child = Command::new(&binary)
        .arg("serve")
        .current_dir(&work)
        .env_clear()
        .env("RELISH_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELISH_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut host = util::Host(child);
    let server = util::TestServer::at(port, admin_port);
    util::ready(&server, &mut host).await;
    let requests = [
        ("discovery", "discovery-evening.json"),
        ("category", "category-sushi.json"),
        ("venue-items", "venue-items-morning.json"),
        ("cart-cross-sell", "cart-cross-sell-burger.json"),
        ("banners", "banners-home.json"),
        ("brands", "brands-home.json"),
        ("food-categories", "food-categories-home.json"),
    ];
    assert_eq!(requests.map(|(surface, _)| surface), relish_host::server::config::STANDARD_SURFACES);
    for (surface, fixture) in requests {
        let answer = util::rank(&server, surface, &relish_tests::fixture(fixture)).await;
        assert_eq!(answer.status, hyper::StatusCode::OK, "{surface}: {:?}", answer.body);
        let answer = answer.json();
        assert_eq!(answer["fallback"], serde_json::Value::Null, "{surface}: {answer}");
        assert_eq!(answer["policy"]["name"], surface, "{surface} is served by its own policy: {answer}");
        assert!(!answer["items"].as_array().unwrap().is_empty(), "{surface}: {answer}");
    }
    // What it stored is in the directory it was started in, and nothing else was needed.
    assert!(work.join("relish-data").is_dir());
    let log = std::fs::read_to_string(dir.path().join("relish.log")).unwrap();
    // A clean start: the one warning is that, with no token given, the admin API refuses all.
    let complaints: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).collect();
    assert!(complaints.iter().all(|l| l.contains("no admin tokens are configured")), "{log}");
}

/// The systemd unit in `host/systemd/` is one systemd accepts, with the security options of a
/// network service that writes only its data directory (exposure at most 2.0 of 10 in
/// `systemd-analyze security`), and it checks the configuration before it starts.
#[test]
fn the_systemd_unit_verifies_and_is_locked_down() {
    let unit = std::fs::read_to_string(relish_tests::root().join("host/systemd/relish.service")).unwrap();
    assert!(unit.contains("\nExecStartPre=/usr/local/bin/relish serve --check\n"), "checks before it starts");
    for option in ["NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=relish", "User=relish"] {
        assert!(unit.contains(option), "{option}");
    }
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: the unit's text was checked, systemd's verdict was not");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relish.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/relish", env!("CARGO_BIN_EXE_relish"))).unwrap();
    let verify = Command::new("systemd-analyze").args(["verify"]).arg(&path).output().unwrap();
    let said = String::from_utf8_lossy(&verify.stderr).into_owned() + &String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "exposure over 2.0: {report}");
    assert!(report.contains("Overall exposure level for relish.service"), "{report}");
}
