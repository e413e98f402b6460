//! `/openapi.json` checked from outside by schemathesis (`--checks all`, a fixed seed): every
//! request the spec allows is accepted (or refused for a reason of state: 401, 403, 404, 409,
//! 422), every request it forbids is refused, every answer's status and body are the ones the
//! spec gives, and no answer is a 5xx. `tests/schemathesis/` holds its configuration and the
//! hooks for what a schema cannot state (a glob's grammar, an opaque cursor).
//!
//! schemathesis is installed, pinned, in the virtual environment under `target/` the first
//! time. Without Python 3 and its `venv` module the test says so and passes, unless
//! `MUSTER_REQUIRE_PYTHON=1` (set by `.ci/run`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

/// The schemathesis release the spec is checked with.
const SCHEMATHESIS: (&str, &str) = ("schemathesis", "schemathesis==4.32.5");

/// Examples per operation and phase, and the most seconds the run may take: the whole run
/// stays within a few minutes on two cores.
const EXAMPLES: &str = "30";
const MAX_SECONDS: &str = "360";

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_difference_between_the_spec_and_the_server() {
    let python = match common::python_venv(&[SCHEMATHESIS]) {
        Ok(python) => python,
        Err(why) => return common::skip_python(&why),
    };
    let s = Server::start().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let cli = python.with_file_name("schemathesis");
    let url = format!("http://{}/openapi.json", s.addr());
    // schemathesis keeps a cache and hypothesis an example database in the working
    // directory: a fresh one each run, outside the repository.
    let scratch = tempfile::tempdir().unwrap();
    let cwd = scratch.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .current_dir(&cwd)
            .arg("600")
            .arg(&cli)
            .arg("--no-color")
            .arg("--config-file")
            .arg(dir.join("schemathesis.toml"))
            .args(["run", &url, "--checks", "all", "--seed", "1", "--max-examples", EXAMPLES])
            .args(["--max-time", MAX_SECONDS, "--exclude-path", "/ws", "--exclude-path", "/events/stream"])
            // A workspace's routes are the same operations under `/w/{workspace}` (walked for
            // `default` by tests/callers.rs and for others by tests/workspaces.rs): checked
            // once, unprefixed, so that the run keeps its time for them.
            .args(["--exclude-path-regex", "^/w/"])
            .env("SCHEMATHESIS_HOOKS", dir.join("hooks.py"))
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found differences:\n{stdout}\n{stderr}");
    // Operations were really exercised (a spec that failed to load would test nothing): every
    // selected one, and at least the 30 there were before task comments.
    let selected = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Selected: ")?.split('/').next()?.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no count of selected operations: {stdout}"));
    assert!(selected >= 32 && stdout.contains(&format!("Tested: {selected}")), "{stdout}");
}
