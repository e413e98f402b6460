//! The pre-commit check on a large change: `muster files check --staged` with 10,000 staged
//! files against 1,000 reservations of other agents, end to end (the process starting, git
//! listing the staged paths, one question to the broker, matching every path), as the hook
//! runs it. A real broker (a separate process), a real git repository in a temp dir.
//!
//! ```text
//! cargo bench --bench hook                      # 10,000 files, 1,000 reservations, 20 runs
//! cargo bench --bench hook -- --files 2000 --reservations 200 --runs 5
//! cargo bench --bench hook -- --smoke           # small and quick: that it still works
//! ```
//!
//! Prints the median, p90 and max wall time of the check, and of `git diff --cached
//! --name-status` alone for comparison (the part of the check that is git's).
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
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

/// The path of file `i` of the change: 100 files in each of 100 directories.
fn file(i: usize) -> String {
    format!("src/mod{}/file{i}.rs", i / 100)
}

fn stats(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        times.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(*times.last().unwrap())
    );
}

fn main() {
    let (mut files, mut reservations, mut runs) = (10_000usize, 1_000usize, 20usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--files" => files = args.next().unwrap().parse().unwrap(),
            "--reservations" => reservations = args.next().unwrap().parse().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--smoke" => (files, reservations, runs) = (200, 50, 2),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let root = tempfile::tempdir().unwrap();
    let broker = common::Process::start(&root.path().join("data"), &[], &[]);
    let url = broker.url("");

    // A repository whose every file the change modifies.
    let repo = root.path().join("app");
    for i in 0..files {
        let path = repo.join(file(i));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("// file {i}\n")).unwrap();
    }
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "files"]);
    for i in 0..files {
        std::fs::write(repo.join(file(i)), format!("// file {i}, changed\n")).unwrap();
    }
    git(&repo, &["add", "."]);

    // Other agents' reservations: none of the changed files (so the check passes and every
    // path is matched against all of them), seven in ten a directory, two a file, one a
    // glob that could be anywhere.
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

    let check = || {
        let t = Instant::now();
        let out = Command::new(common::binary())
            .current_dir(&repo)
            .args(["files", "check", "--staged", "--repo", "app", "--as", "link", "--url", &url])
            .output()
            .unwrap();
        let took = t.elapsed();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        took
    };
    let diff = || {
        let t = Instant::now();
        git(&repo, &["diff", "--cached", "--name-status", "-z", "-M"]);
        t.elapsed()
    };
    check(); // warm the page cache
    println!("{files} staged files, {reservations} reservations of other agents");
    println!("| measure | runs | median ms | p90 ms | max ms |");
    println!("|---|---|---|---|---|");
    stats("`muster files check --staged` (end to end)", (0..runs).map(|_| check()).collect());
    stats("`git diff --cached --name-status` alone", (0..runs).map(|_| diff()).collect());
    broker.terminate();
}
