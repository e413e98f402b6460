//! Claude Code's hooks, end to end, as `muster init` installs them: the process starting,
//! git, one request to the broker. A real broker (a separate process), a real git
//! repository of 10,000 files in a temp dir, 1,000 reservations of other agents.
//!
//! ```text
//! cargo bench --bench guard                      # 10,000 files, 1,000 reservations, 100 runs
//! cargo bench --bench guard -- --files 2000 --reservations 200 --runs 20
//! cargo bench --bench guard -- --smoke           # small and quick: that it still works
//! ```
//!
//! Measures:
//! - `PreToolUse` of an Edit: the file is free, so it is reserved for the agent (auto);
//! - `PreToolUse` of a Bash `sed -i` (its target reserved, `git status` kept for after);
//! - `PostToolUse` of a Bash command that changed 20 files (`git status` compared with what
//!   was kept, the 20 reserved).
//!
//! Prints the median, p90, p99 and max wall time of each.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// File `i` of the worktree: 100 files in each directory.
fn file(i: usize) -> String {
    format!("src/mod{}/file{i}.rs", i / 100)
}

fn stats(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        times.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(*times.last().unwrap())
    );
}

/// Runs the guard as Claude Code runs a hook; its wall time.
fn hook(repo: &Path, url: &str, event: &str, tool: &str, input: serde_json::Value, call: &str) -> Duration {
    let payload = serde_json::json!({
        "session_id": "bench", "transcript_path": "/tmp/bench.jsonl", "cwd": repo,
        "hook_event_name": event, "tool_name": tool, "tool_input": input, "tool_use_id": call,
    });
    let t = Instant::now();
    let mut child = Command::new(common::binary())
        .current_dir(repo)
        .args(["files", "guard", "--repo", "app", "--as", "link", "--url", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(payload.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let took = t.elapsed();
    assert!(out.status.success(), "{event} {tool}: {}", String::from_utf8_lossy(&out.stderr));
    took
}

fn main() {
    let (mut files, mut reservations, mut runs) = (10_000usize, 1_000usize, 100usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--files" => files = args.next().unwrap().parse().unwrap(),
            "--reservations" => reservations = args.next().unwrap().parse().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--smoke" => (files, reservations, runs) = (400, 50, 3),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let changed = 20;
    assert!(files >= runs * (2 + changed), "--files must be at least 22 × --runs");
    let root = tempfile::tempdir().unwrap();
    let broker = common::Process::start(&root.path().join("data"), &[], &[]);
    let url = broker.url("");
    let repo = root.path().join("app");
    for i in 0..files {
        let path = repo.join(file(i));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("// file {i}\n")).unwrap();
    }
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "files"]);
    let repo = repo.canonicalize().unwrap();

    // Other agents' reservations, none of the files edited: seven in ten a directory, two
    // a file, one a glob that could be anywhere.
    let http = reqwest::blocking::Client::new();
    for k in 0..reservations {
        let pattern = match k % 10 {
            0..=6 => format!("lib/area{k}/**"),
            7 | 8 => format!("src/mod{}/other{k}.rs", k % 100),
            _ => format!("*/g{k}.gen"),
        };
        let body = serde_json::json!({ "repo": "app", "agent": format!("owner-{}", k % 100), "patterns": [pattern] });
        let r = http.post(format!("{url}/files/reserve")).body(body.to_string()).send().unwrap();
        assert_eq!(r.status(), 200);
    }

    // Each run edits files of its own, so that each reserves what it writes.
    let (mut edit, mut sed, mut post) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=runs {
        let base = run * (2 + changed) % files;
        let path = repo.join(file(base));
        let input = serde_json::json!({ "file_path": path, "old_string": "a", "new_string": "b" });
        let took = hook(&repo, &url, "PreToolUse", "Edit", input, &format!("e{run}"));
        let target = file(base + 1);
        let command = serde_json::json!({ "command": format!("sed -i 's/file/File/' {target}") });
        let sed_took = hook(&repo, &url, "PreToolUse", "Bash", command.clone(), &format!("s{run}"));
        for k in 0..changed {
            std::fs::write(repo.join(file(base + 2 + k)), format!("// changed by run {run}\n")).unwrap();
        }
        let post_took = hook(&repo, &url, "PostToolUse", "Bash", command, &format!("s{run}"));
        // The first run warms the page cache.
        if run > 0 {
            edit.push(took);
            sed.push(sed_took);
            post.push(post_took);
        }
        git(&repo, &["checkout", "-q", "--", "."]);
        // An agent holds at most 1,000 reservations: let go of this run's.
        let body = serde_json::json!({ "repo": "app", "agent": "link" });
        let r = http.post(format!("{url}/files/release")).body(body.to_string()).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    println!("{files} files in the worktree, {reservations} reservations of other agents, {changed} files changed");
    println!("| hook | runs | median ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    stats("PreToolUse, Edit (reserves the file)", edit);
    stats("PreToolUse, Bash `sed -i` (reserves, keeps `git status`)", sed);
    stats(&format!("PostToolUse, Bash that changed {changed} files"), post);
    broker.terminate();
}
