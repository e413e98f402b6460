//! The JavaScript side, run from `cargo test` so that one command runs every test: the JS
//! client's tests (`clients/js`, Node's test runner against the real broker) and the
//! dashboard in a real headless Chromium (`tests/dashboard`, Playwright).
//!
//! Each installs its npm packages first if they are missing (`npm ci`). Without Node (or,
//! for the dashboard, without Chromium at `/usr/bin/chromium` or `$CHROMIUM`) a test says
//! so and passes, unless `MUSTER_REQUIRE_JS=1` (set by `.ci/run`) makes it fail instead.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn required() -> bool {
    std::env::var("MUSTER_REQUIRE_JS").is_ok_and(|v| v == "1")
}

/// Whether `program --version` runs.
fn available(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn skip(why: &str) {
    assert!(!required(), "MUSTER_REQUIRE_JS=1 but {why}");
    // Straight to stderr, past the test harness's capture: a skip must show in the normal
    // output, not only with --nocapture.
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("SKIPPED: {why}\n"));
}

/// `npm ci` (if `node_modules` is missing), then `npm test`, in `dir`.
fn npm_test(dir: &Path, env: &[(&str, &str)]) {
    if !dir.join("node_modules").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let output = Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(dir)
        .env("MUSTER_BIN", env!("CARGO_BIN_EXE_muster"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "npm test failed in {}:\n{stdout}\n{stderr}", dir.display());
    // Node's runner ends with a summary ("# pass 7", "# fail 0"): show it.
    for line in stdout.lines().filter(|l| l.starts_with("# ")) {
        eprintln!("{line}");
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_javascript_client_works_against_the_real_broker() {
    if !available("node") || !available("npm") {
        return skip("node and npm are not installed");
    }
    npm_test(&root().join("clients/js"), &[]);
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    if !available("node") || !available("npm") {
        return skip("node and npm are not installed");
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return skip(&format!("no Chromium at {chromium} (apt install chromium)"));
    }
    let artifacts = root().join("target/artifacts");
    npm_test(
        &root().join("tests/dashboard"),
        &[("CHROMIUM", chromium.as_str()), ("MUSTER_ARTIFACTS", artifacts.to_str().unwrap())],
    );
    assert!(artifacts.join("dashboard.png").exists(), "the dashboard test saves a screenshot");
}
