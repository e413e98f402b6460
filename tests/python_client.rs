//! The Python client (`clients/python`) against the real broker binary: installed into the
//! tests' virtual environment with pip, as a user would, then its pytest suite (golden frames,
//! the claim race, resume after `kill -9`, `wait_for`, tokens, idempotency keys) and
//! `mypy --strict` on the package.
//!
//! Without Python 3 and its `venv` module the test says so and passes, unless
//! `MUSTER_REQUIRE_PYTHON=1` (set by `.ci/run`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

/// What the client's tests need, pinned.
const TOOLS: [(&str, &str); 4] = [
    ("websockets", "websockets==17.4"),
    ("pytest", "pytest==9.2.0"),
    ("pytest_asyncio", "pytest-asyncio==1.5.0"),
    ("mypy", "mypy==2.4.1"),
];

#[test]
fn the_python_client_works_against_the_real_broker() {
    let python = match common::python_venv(&TOOLS) {
        Ok(python) => python,
        Err(why) => return common::skip_python(&why),
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let client = root.join("clients/python");
    let run = |args: &[&str]| {
        let output = Command::new("timeout")
            .arg("600")
            .arg(&python)
            .args(args)
            .current_dir(&client)
            .env("MUSTER_BIN", env!("CARGO_BIN_EXE_muster"))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{} failed:\n{text}", args.join(" "));
        text
    };
    // Installed as a user installs it (not imported from the source tree).
    run(&["-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", "."]);
    let tests = run(&["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]);
    assert!(tests.contains(" passed") && !tests.contains("skipped"), "{tests}");
    run(&["-m", "mypy", "--strict", "--no-incremental", "muster"]);
}
