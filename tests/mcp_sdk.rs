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

use std::path::Path;
use std::process::Command;

use common::Server;

/// The SDK release the test is written against.
const MCP_SDK: (&str, &str) = ("mcp", "mcp==2.3.0");

#[tokio::test(flavor = "multi_thread")]
async fn the_official_mcp_python_sdk_drives_muster_mcp() {
    let python = match common::python_venv(&[MCP_SDK]) {
        Ok(python) => python,
        Err(why) => return common::skip_python(&why),
    };
    let s = Server::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_sdk/drive.py");
    let url = format!("http://{}", s.addr());
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
