//! The policy author's tools: `relish build` on a crate outside this repository (the README's
//! first policy), `relish inspect` and `relish rank`.

use std::path::Path;
use std::process::Command;

fn relish(args: &[&str], dir: &Path) -> (bool, i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_relish")).args(args).current_dir(dir).output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.success(), output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

/// The policy in the README's "Write your first policy", verbatim.
fn readme_policy() -> String {
    let readme = std::fs::read_to_string(relish_tests::root().join("README.md")).unwrap();
    let start = readme.find("// my-policy/src/lib.rs").expect("the README shows a policy");
    let code = &readme[start..];
    code[..code.find("```").unwrap()].to_owned()
}

#[test]
fn an_authors_crate_outside_the_repository_builds_inspects_and_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let root = relish_tests::root();
    let krate = dir.path().join("my-policy");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::create_dir_all(krate.join(".cargo")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"relish-policy-nearest\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n[dependencies]\nrelish-guest = {{ path = {:?} }}\n\n\
             [workspace]\n",
            root.join("guest").display().to_string()
        ),
    )
    .unwrap();
    // Share compiled dependencies with the test guests' build instead of compiling them again.
    std::fs::write(
        krate.join(".cargo/config.toml"),
        format!("[build]\ntarget-dir = {:?}\n", root.join("tests/guests/target").display().to_string()),
    )
    .unwrap();
    std::fs::write(krate.join("src/lib.rs"), readme_policy()).unwrap();

    // Run from the crate's directory, as its author would (cargo reads `.cargo/config.toml` there).
    // The output directory is shared between runs: an earlier run's component must not count.
    let component = root.join("tests/guests/target/policies/nearest.wasm");
    let _ = std::fs::remove_file(&component);
    let (ok, _, out, err) = relish(&["build", "--manifest-path", "Cargo.toml"], &krate);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("nearest") && out.contains("(nearest 0.1.0: discovery)"), "{out}");
    assert!(component.exists());
    let component = component.display().to_string();

    let (ok, _, out, _) = relish(&["inspect", &component], dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("policy:   nearest 0.1.0") && out.contains("max_eta"), "{out}");
    assert!(!out.contains("wasi:"), "no WASI imports: {out}");

    let fixture = root.join("tests/fixtures/discovery-evening.json").display().to_string();
    let (ok, _, out, err) =
        relish(&["rank", "--policy", &component, "--request", &fixture, "--param", "max_eta=30"], dir.path());
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first = answer["items"][0]["id"].as_str().unwrap();
    assert_eq!(first, "venue-burger-1", "the fastest delivery (15 min) comes first");
    assert_eq!(answer["policy"]["name"], "nearest");

    let (ok, _, _, err) =
        relish(&["rank", "--policy", &component, "--request", &fixture, "--param", "speed=9"], dir.path());
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
