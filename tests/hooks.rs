//! Reservations enforced where agents write: the git pre-commit hook that `muster hook
//! install` writes, in a real repository with two worktrees, and `muster files guard` fed
//! the JSON that Claude Code gives a `PreToolUse` hook. The `muster` binary and `git`
//! run as processes; the broker is real.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Server, binary};
use serde_json::json;

/// Runs `git` in `dir` with a fixed identity; panics unless it succeeds.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_output(dir, args, &[]);
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git_output(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(args).env("GIT_AUTHOR_NAME", "t").env("GIT_AUTHOR_EMAIL", "t@example.com");
    cmd.env("GIT_COMMITTER_NAME", "t").env("GIT_COMMITTER_EMAIL", "t@example.com").env_remove("MUSTER_AGENT");
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

/// Runs `muster args` in `dir` against `url`; the outcome.
fn muster(dir: &Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary())
        .current_dir(dir)
        .args(args)
        .env("MUSTER_URL", url)
        .env_remove("MUSTER_AGENT")
        .env_remove("MUSTER_REPO")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A repository with a remote, a first commit, and a second worktree beside it.
fn repository(root: &Path) -> (PathBuf, PathBuf) {
    let main = root.join("app");
    std::fs::create_dir_all(main.join("src/auth")).unwrap();
    git(&main, &["init", "-q", "-b", "main"]);
    git(&main, &["remote", "add", "origin", "https://git.example.com/acme/app.git"]);
    for (path, text) in [("src/auth/session.rs", "fn a() {}\n"), ("README.md", "# app\n"), ("old.txt", "x\n")] {
        std::fs::write(main.join(path), text).unwrap();
    }
    git(&main, &["add", "."]);
    git(&main, &["commit", "-qm", "first"]);
    let second = root.join("app-zelda");
    git(&main, &["worktree", "add", "-q", second.to_str().unwrap()]);
    (main, second)
}

fn commit(dir: &Path, message: &str) -> Output {
    git_output(dir, &["commit", "-qm", message], &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pre_commit_hook_refuses_a_commit_touching_another_agents_files_in_two_worktrees() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let (link, zelda) = repository(root.path());

    // link's repository already has a pre-commit hook: it is kept, and still runs.
    let hooks = link.join(".git/hooks");
    let ran = root.path().join("own-hook-ran");
    std::fs::write(hooks.join("pre-commit"), format!("#!/bin/sh\necho ran >> '{}'\n", ran.display())).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(hooks.join("pre-commit"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let installed = ok(&muster(&link, &url, &["hook", "install", "--agent", "link"], &[]));
    assert!(installed.contains("running those of"), "the hook there is chained: {installed}");
    ok(&muster(&zelda, &url, &["hook", "install", "--agent", "zelda"], &[]));
    assert_eq!(git(&link, &["config", "--worktree", "muster.agent"]).trim(), "link");
    assert_eq!(git(&zelda, &["config", "--worktree", "muster.agent"]).trim(), "zelda");

    // zelda reserves the auth directory (the CLI reserves what is in it) and old.txt.
    let reserved = ok(&muster(&zelda, &url, &["files", "reserve", "src/auth", "old.txt", "--as", "zelda"], &[]));
    assert!(reserved.contains("src/auth/") && reserved.contains("git.example.com/acme/app"), "{reserved}");

    // link's commit touching src/auth/session.rs is refused, naming zelda and the path.
    std::fs::write(link.join("src/auth/session.rs"), "fn b() {}\n").unwrap();
    git(&link, &["add", "src/auth/session.rs"]);
    let refused = commit(&link, "rewrite auth");
    assert!(!refused.status.success(), "the commit went through: {}", stderr(&refused));
    let says = stderr(&refused);
    assert!(says.contains("zelda") && says.contains("src/auth/session.rs"), "{says}");
    assert!(std::fs::read_to_string(&ran).unwrap().contains("ran"), "the kept hook ran first");
    git(&link, &["reset", "-q"]);

    // A rename counts on both sides: moving zelda's old.txt away is refused too.
    git(&link, &["mv", "old.txt", "new.txt"]);
    let says = stderr(&commit(&link, "rename"));
    assert!(says.contains("old.txt") && says.contains("zelda"), "{says}");
    git(&link, &["mv", "new.txt", "old.txt"]);

    // A commit of free files goes through; so does zelda's own, in her worktree.
    std::fs::write(link.join("README.md"), "# app, by link\n").unwrap();
    git(&link, &["add", "README.md"]);
    assert!(commit(&link, "readme").status.success(), "{}", stderr(&commit(&link, "readme")));
    std::fs::write(zelda.join("src/auth/session.rs"), "fn z() {}\n").unwrap();
    git(&zelda, &["add", "src/auth/session.rs"]);
    let own = commit(&zelda, "zelda's auth");
    assert!(own.status.success(), "{}", stderr(&own));

    // Once zelda releases, link's commit goes through.
    ok(&muster(&zelda, &url, &["files", "release", "--as", "zelda"], &[]));
    std::fs::write(link.join("src/auth/session.rs"), "fn c() {}\n").unwrap();
    git(&link, &["add", "src/auth/session.rs"]);
    let after = commit(&link, "rewrite auth, now free");
    assert!(after.status.success(), "{}", stderr(&after));

    // A worktree that has not said who works in it cannot commit, and is told how.
    let third = root.path().join("app-third");
    git(&link, &["worktree", "add", "-q", third.to_str().unwrap()]);
    std::fs::write(third.join("README.md"), "third\n").unwrap();
    git(&third, &["add", "README.md"]);
    let nameless = commit(&third, "who am I");
    assert!(!nameless.status.success());
    assert!(stderr(&nameless).contains("MUSTER_AGENT"), "{}", stderr(&nameless));
    let named = git_output(&third, &["commit", "-qm", "named"], &[("MUSTER_AGENT", "kai")]);
    assert!(named.status.success(), "{}", stderr(&named));
}

#[tokio::test(flavor = "multi_thread")]
async fn hook_install_honours_core_hooks_path_and_the_check_warns_when_the_broker_is_down() {
    let root = tempfile::tempdir().unwrap();
    let (link, _) = repository(root.path());
    git(&link, &["config", "core.hooksPath", ".githooks"]);
    // No broker at this address.
    let (_socket, addr) = common::refusing_addr();
    let url = format!("http://{addr}");
    std::fs::create_dir_all(link.join(".githooks")).unwrap();
    ok(&muster(&link, &url, &["hook", "install", "--agent", "link"], &[]));
    // The directory core.hooksPath named (tracked, often) is left as it is: git runs
    // muster's hooks, which run those of .githooks.
    assert!(!link.join(".githooks/pre-commit").exists(), "a hooks directory of the worktree is never modified");
    assert!(link.join(".git/muster/hooks/pre-commit").exists());
    assert!(git(&link, &["rev-parse", "--git-path", "hooks"]).trim().ends_with(".git/muster/hooks"));

    std::fs::write(link.join("README.md"), "changed\n").unwrap();
    git(&link, &["add", "README.md"]);
    let allowed = git_output(&link, &["commit", "-qm", "broker down"], &[("MUSTER_URL", &url)]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert!(stderr(&allowed).contains("allowing"), "the hook says it could not check: {}", stderr(&allowed));

    ok(&muster(&link, &url, &["hook", "install", "--strict"], &[]));
    std::fs::write(link.join("README.md"), "changed again\n").unwrap();
    git(&link, &["add", "README.md"]);
    let refused = git_output(&link, &["commit", "-qm", "strict"], &[("MUSTER_URL", &url)]);
    assert!(!refused.status.success(), "--strict refuses when the broker cannot be asked");
}

/// Runs `muster files guard` with a Claude Code `PreToolUse` payload on stdin.
fn guard(dir: &Path, url: &str, payload: &str, args: &[&str], agent: Option<&str>) -> Output {
    let mut cmd = Command::new(binary());
    cmd.current_dir(dir).args(["files", "guard"]).args(args).env("MUSTER_URL", url).env_remove("MUSTER_REPO");
    match agent {
        Some(agent) => cmd.env("MUSTER_AGENT", agent),
        None => cmd.env_remove("MUSTER_AGENT"),
    };
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(payload.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// What Claude Code sends a `PreToolUse` hook before an edit.
fn payload(cwd: &Path, tool: &str, input: serde_json::Value) -> String {
    json!({
        "session_id": "6f1c2d3e-0000-4000-8000-000000000001",
        "transcript_path": "/home/dev/.claude/projects/app/6f1c2d3e.jsonl",
        "cwd": cwd,
        "permission_mode": "default",
        "hook_event_name": "PreToolUse",
        "tool_name": tool,
        "tool_input": input,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_claude_code_guard_blocks_an_edit_of_another_agents_file_and_allows_the_rest() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let (link, zelda) = repository(root.path());
    ok(&muster(
        &zelda,
        &url,
        &["files", "reserve", "src/auth/**", "--as", "zelda", "--reason", "session rewrite"],
        &[],
    ));
    ok(&muster(&link, &url, &["files", "reserve", "README.md", "--as", "link"], &[]));
    let session = link.join("src/auth/session.rs");

    // link editing zelda's file: blocked with exit 2 and one line naming zelda.
    let edit = payload(&link, "Edit", json!({ "file_path": session, "old_string": "a", "new_string": "b" }));
    let blocked = guard(&link, &url, &edit, &[], Some("link"));
    assert_eq!(blocked.status.code(), Some(2), "{}", stderr(&blocked));
    let reason = stderr(&blocked);
    assert!(reason.contains("zelda") && reason.contains("src/auth/session.rs") && reason.contains("session rewrite"));
    // Writing a new file inside the reserved directory, with a relative path, is blocked too.
    let write = payload(&link, "Write", json!({ "file_path": "src/auth/new.rs", "content": "x" }));
    assert_eq!(guard(&link, &url, &write, &[], Some("link")).status.code(), Some(2));
    let multi = payload(&link, "MultiEdit", json!({ "file_path": session, "edits": [] }));
    assert_eq!(guard(&link, &url, &multi, &[], Some("link")).status.code(), Some(2));

    // zelda's own file, link's own file, a free file and a read are allowed.
    let own = guard(
        &zelda,
        &url,
        &payload(&zelda, "Edit", json!({ "file_path": zelda.join("src/auth/session.rs") })),
        &[],
        Some("zelda"),
    );
    assert_eq!(own.status.code(), Some(0), "{}", stderr(&own));
    let mine = payload(&link, "Edit", json!({ "file_path": link.join("README.md") }));
    assert_eq!(guard(&link, &url, &mine, &[], Some("link")).status.code(), Some(0));
    let free = payload(&link, "Write", json!({ "file_path": link.join("docs/new.md"), "content": "x" }));
    assert_eq!(guard(&link, &url, &free, &[], Some("link")).status.code(), Some(0));
    let read = payload(&link, "Read", json!({ "file_path": session }));
    assert_eq!(guard(&link, &url, &read, &[], Some("link")).status.code(), Some(0));
    // Outside any repository there is nothing to guard.
    let elsewhere = payload(root.path(), "Write", json!({ "file_path": root.path().join("notes.txt") }));
    assert_eq!(guard(root.path(), &url, &elsewhere, &[], Some("link")).status.code(), Some(0));

    // Without knowing who it runs for, the guard blocks files anyone holds, and says how to fix it.
    let nameless = guard(&link, &url, &edit, &[], None);
    assert_eq!(nameless.status.code(), Some(2));
    assert!(stderr(&nameless).contains("MUSTER_AGENT"), "{}", stderr(&nameless));

    // Input it cannot read: allowed with a warning, blocked with --strict; never a crash.
    for bad in ["not json", "{\"tool_name\": \"Edit\", \"tool_input\": {}}"] {
        let out = guard(&link, &url, bad, &[], Some("link"));
        assert_eq!(out.status.code(), Some(0), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("allowing"), "{}", stderr(&out));
        assert_eq!(guard(&link, &url, bad, &["--strict"], Some("link")).status.code(), Some(2), "{bad}");
    }

    // The broker down: the edit is allowed with a warning, or blocked with --strict.
    drop(s);
    let down = guard(&link, &url, &edit, &[], Some("link"));
    assert_eq!(down.status.code(), Some(0), "{}", stderr(&down));
    assert!(stderr(&down).contains("broker") && stderr(&down).contains("allowing"), "{}", stderr(&down));
    let strict = guard(&link, &url, &edit, &["--strict"], Some("link"));
    assert_eq!(strict.status.code(), Some(2), "{}", stderr(&strict));
}
