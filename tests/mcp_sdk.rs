//! `muster mcp` driven by a client nobody on this project wrote: the official MCP Python SDK
//! (`tests/mcp_sdk/drive.py`): initialize, the tool list and its schemas, a claim conflict and
//! bad arguments as tool errors, numbers sent as strings, `wait_for` woken by a mention. The
//! SDK checks each structured result against the tool's output schema.
//!
//! The SDK is installed, pinned, into a virtual environment under `target/` the first time
//! (Debian's Python refuses a system-wide `pip install`). Without Python 3 and its `venv`
//! module the test says so and passes, unless `MUSTER_REQUIRE_PYTHON=1` (set by `.ci/run`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;

/// The SDK release the test is written against.
const MCP_SDK: &str = "mcp==2.3.0";

fn skip(why: &str) {
    assert!(!std::env::var("MUSTER_REQUIRE_PYTHON").is_ok_and(|v| v == "1"), "MUSTER_REQUIRE_PYTHON=1 but {why}");
    // Straight to stderr, past the test harness's capture: a skip must show in the normal
    // output, not only with --nocapture.
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("SKIPPED: {why}\n"));
}

/// The virtual environment's Python with the SDK installed, made if missing.
fn python_with_sdk() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/python-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).output();
        match made {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "python3 -m venv failed (apt install python3-venv): {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            Err(e) => return Err(format!("python3 is not installed ({e})")),
        }
    }
    let has_sdk = Command::new(&python).args(["-c", "import mcp"]).output().is_ok_and(|o| o.status.success());
    if !has_sdk {
        let pip = Command::new(&python).args(["-m", "pip", "install", "--quiet", MCP_SDK]).status().unwrap();
        assert!(pip.success(), "pip install {MCP_SDK} failed");
    }
    Ok(python)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_mcp_python_sdk_drives_muster_mcp() {
    let python = match python_with_sdk() {
        Ok(python) => python,
        Err(why) => return skip(&why),
    };
    let s = Server::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_sdk/drive.py");
    let url = format!("http://{}", s.addr);
    // Bounded: `timeout` kills a run that hangs (a wait that never wakes).
    let output = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("120")
            .arg(&python)
            .arg(&script)
            .arg(env!("CARGO_BIN_EXE_muster"))
            .arg(&url)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the MCP SDK run failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
