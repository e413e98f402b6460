//! The durability contract, checked on the real binary with `strace`: an acknowledged
//! write was preceded by an `fdatasync` of the log's segment file, whose record holds
//! everything the write changed (sled and the chat files are synced at checkpoints and
//! rebuilt from the log's records after a crash: `src/store/tests.rs` loses them as a power
//! loss would, `tests/crash.rs` kills the process).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use common::Process;

fn strace_available() -> bool {
    let ok = Command::new("strace").args(["-f", "-o", "/dev/null", "true"]).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("MUSTER_REQUIRE_STRACE").is_none(),
            "strace is required (MUSTER_REQUIRE_STRACE is set) but does not run here"
        );
        // Straight to stderr, past the test harness's capture: a skip must show in the normal
        // output, not only with --nocapture.
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("SKIPPED: strace is not available (install it: apt-get install strace)\n"),
        );
    }
    ok
}

/// Sends one raw HTTP request and returns the response text.
fn request(addr: std::net::SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn an_acknowledged_write_was_fdatasynced_before_the_ack() {
    if !strace_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.txt");
    let trace_arg = trace.to_str().unwrap();
    let wrapper = [
        "strace",
        "-f",
        "-y",
        "-s",
        "48",
        "-o",
        trace_arg,
        "-e",
        "trace=fdatasync,fsync,read,recvfrom,recvmsg,write,writev,sendto,sendmsg",
    ];
    let p = Process::start(&dir.path().join("data"), &wrapper, &[]);
    let body = r#"{"title": "durable"}"#;
    let response = request(
        p.addr,
        &format!(
            "POST /tasks HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(p.terminate_wrapped().success());

    let trace = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    let request_read = lines.iter().position(|l| l.contains("POST /tasks")).expect("request read in the trace");
    let ack = lines.iter().position(|l| l.contains("HTTP/1.1 201")).expect("response write in the trace");
    assert!(request_read < ack);
    // A completed fdatasync of the log's segment file (the event) between reading the
    // request and writing the response.
    let between = &lines[request_read..ack];
    assert!(
        fdatasynced(between, "/log/00000000>"),
        "no completed fdatasync of the log's file between the request and the ack:\n{}",
        lines[request_read..=ack].join("\n")
    );
}

/// Whether `lines` hold a completed `fdatasync` of the file whose path ends as `file`. A
/// blocking call shows as `fdatasync(fd</path/db> <unfinished ...>` and, when it returns,
/// `<... fdatasync resumed>) = 0`, on the same thread.
fn fdatasynced(lines: &[&str], file: &str) -> bool {
    let mut pending: Vec<String> = Vec::new();
    for line in lines {
        let pid = line.split_whitespace().next().unwrap_or_default().to_owned();
        if line.contains("fdatasync(") && line.contains(file) {
            if line.contains("<unfinished") {
                pending.push(pid);
            } else if line.trim_end().ends_with("= 0") {
                return true;
            }
        } else if line.contains("<... fdatasync resumed>") && pending.contains(&pid) && line.trim_end().ends_with("= 0")
        {
            return true;
        }
    }
    false
}
