//! Protection by default: the failures an outside tester found in the previous release,
//! one test each, as they were found. Paths are read as a user means them (absolute ones,
//! from the current directory, through symlinks, directories that do not exist yet), the
//! guard takes its identity from the session, the git hooks survive what git users do
//! (a tracked hooks directory, `git reset --hard`, merges and cherry-picks), `muster init`
//! is undone exactly, tokens are required by the hooks, the MCP server honours
//! `MUSTER_REPO`, and `muster doctor` names what is broken.
//!
//! Everything runs as real processes: `git`, the `muster` binary (the CLI, `files guard`
//! fed Claude Code's `PreToolUse` JSON, `mcp` spoken to over stdio, the git hooks `muster
//! init` installs) against a real broker on loopback, in temporary directories, each
//! process bounded in time.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Process, Server, binary};
use serde_json::{Value, json};

/// Longest any one process of these tests may run.
const BOUND: Duration = Duration::from_secs(60);

/// Removes what the environment of the test run could bring in: the agent, repository and
/// token of whoever runs the tests, and their git configuration (a global `core.hooksPath`
/// would change what `muster init` finds).
fn isolated(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("MUSTER_AGENT")
        .env_remove("MUSTER_REPO")
        .env_remove("MUSTER_TOKEN")
        .env_remove("MUSTER_TOKEN_FILE")
        .env_remove("MUSTER_URL")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
}

/// Runs `cmd` with `input` on its stdin (none: empty), killing it after [`BOUND`].
fn bounded(cmd: &mut Command, input: Option<&str>) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(BOUND) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            common::signal("KILL", pid);
            panic!("{what} did not finish within {BOUND:?}");
        }
    }
}

/// Runs `git` in `dir` with a fixed identity; panics unless it succeeds.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_output(dir, args, &[]);
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git_output(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("git");
    isolated(&mut cmd).current_dir(dir).args(args);
    cmd.env("GIT_AUTHOR_NAME", "t").env("GIT_AUTHOR_EMAIL", "t@example.com");
    cmd.env("GIT_COMMITTER_NAME", "t").env("GIT_COMMITTER_EMAIL", "t@example.com");
    cmd.envs(env.iter().copied());
    bounded(&mut cmd, None)
}

/// `git commit` in `dir`, its hooks asking the broker at `url`.
fn commit(dir: &Path, url: &str, message: &str) -> Output {
    git_output(dir, &["commit", "-qm", message], &[("MUSTER_URL", url)])
}

/// Runs `muster args` in `dir` against `url`; the outcome.
fn muster(dir: &Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    isolated(&mut cmd).current_dir(dir).args(args).env("MUSTER_URL", url).envs(env.iter().copied());
    bounded(&mut cmd, None)
}

/// What `muster files who PATH` says, run in `dir`.
fn who(dir: &Path, url: &str, path: &str) -> String {
    ok(&muster(dir, url, &["files", "who", path], &[]))
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout and stderr, together.
fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out))
}

fn make_executable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
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

/// Runs `muster files guard` with a Claude Code hook payload on stdin, as `agent`
/// (`None`: `MUSTER_AGENT` unset).
fn guard(dir: &Path, url: &str, payload: &str, agent: Option<&str>) -> Output {
    let mut cmd = Command::new(binary());
    isolated(&mut cmd).current_dir(dir).args(["files", "guard"]).env("MUSTER_URL", url);
    if let Some(agent) = agent {
        cmd.env("MUSTER_AGENT", agent);
    }
    bounded(&mut cmd, Some(payload))
}

/// What Claude Code sends a `PreToolUse` hook before a tool call.
fn payload(cwd: &Path, tool: &str, input: Value) -> String {
    json!({
        "session_id": "6f1c2d3e-0000-4000-8000-000000000001",
        "transcript_path": "/home/dev/.claude/projects/app/6f1c2d3e.jsonl",
        "cwd": cwd,
        "permission_mode": "default",
        "hook_event_name": "PreToolUse",
        "tool_name": tool,
        "tool_input": input,
        "tool_use_id": "toolu_01A2B3C4D5E6F7",
    })
    .to_string()
}

/// An `Edit` of `file` (absolute, or relative to `cwd`).
fn edit(cwd: &Path, file: impl serde::Serialize) -> String {
    payload(cwd, "Edit", json!({ "file_path": file, "old_string": "a", "new_string": "b" }))
}

/// Issues a token for `name` in the broker's data dir `data`.
fn issue(data: &Path, name: &str) -> String {
    let mut cmd = Command::new(binary());
    isolated(&mut cmd).args(["token", "add", name, "--data-dir"]).arg(data);
    ok(&bounded(&mut cmd, None)).trim().to_owned()
}

/// Every path under `dir`, relative to it, sorted (symlinks not followed).
fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One `muster mcp --as NAME` process, spoken to over its stdio as an MCP client would.
struct Mcp {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
}

impl Mcp {
    /// The server of an editor opened on `dir`, with `env` added to its environment.
    fn spawn_in(url: &str, agent: &str, dir: &Path, env: &[(&str, &str)]) -> Mcp {
        let mut cmd = Command::new(binary());
        isolated(&mut cmd).current_dir(dir).args(["mcp", "--as", agent]).env("MUSTER_URL", url);
        let mut child = cmd
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let message: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON-RPC: {line}: {e}"));
                if tx.send(message).is_err() {
                    break;
                }
            }
        });
        Mcp { stdin: child.stdin.take(), child, replies, next_id: 1 }
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    /// A request; returns its `result`, failing on a JSON-RPC error or after 20 s.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        let replies = std::mem::replace(&mut self.replies, mpsc::channel().1);
        let (reply, replies) = tokio::task::spawn_blocking(move || {
            loop {
                let message = replies.recv_timeout(Duration::from_secs(20)).expect("no answer from muster mcp");
                if message["id"] == id {
                    return (message, replies);
                }
            }
        })
        .await
        .unwrap();
        self.replies = replies;
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    async fn initialize(&mut self) {
        let params = json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "muster-test", "version": "0" }
        });
        self.request("initialize", params).await;
        self.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    }

    /// `tools/call`; returns (isError, the text content).
    async fn call(&mut self, tool: &str, arguments: Value) -> (bool, String) {
        let result = self.request("tools/call", json!({ "name": tool, "arguments": arguments })).await;
        let text = result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text: {result}")).to_owned();
        (result["isError"] == true, text)
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// 1. Absolute paths.

#[tokio::test(flavor = "multi_thread")]
async fn a_file_reserved_by_its_absolute_path_is_held_by_its_path_in_the_repository() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let (app, _) = repository(root.path());
    let absolute = app.join("src/abs.rs");

    // From the shell.
    ok(&muster(&app, &url, &["files", "reserve", absolute.to_str().unwrap(), "--as", "alice"], &[]));
    let says = who(&app, &url, "src/abs.rs");
    assert!(says.contains("alice holds"), "the CLI reserved nothing at src/abs.rs: {says}");

    ok(&muster(&app, &url, &["files", "release", "--as", "alice"], &[]));
    let says = who(&app, &url, "src/abs.rs");
    assert!(says.contains("free"), "released: {says}");

    // Through MCP, the server running in the worktree.
    let mut alice = Mcp::spawn_in(&url, "alice", &app, &[]);
    alice.initialize().await;
    let (error, text) = alice.call("reserve_files", json!({ "patterns": [absolute] })).await;
    assert!(!error, "{text}");
    let says = who(&app, &url, "src/abs.rs");
    assert!(says.contains("alice holds"), "MCP reserved nothing at src/abs.rs: {says} (it answered {text})");
}

// ---------------------------------------------------------------------------------------
// 2. The current directory.

#[tokio::test(flavor = "multi_thread")]
async fn a_path_typed_in_a_subdirectory_is_read_from_that_directory() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let (app, _) = repository(root.path());
    let src = app.join("src");

    ok(&muster(&src, &url, &["files", "reserve", "foo.rs", "--as", "alice"], &[]));
    let says = who(&app, &url, "src/foo.rs");
    assert!(says.contains("alice holds"), "foo.rs typed in src/ is src/foo.rs: {says}");
    let says = who(&app, &url, "foo.rs");
    assert!(says.contains("free") && !says.contains("alice"), "foo.rs at the root is another file: {says}");
    let says = who(&src, &url, "foo.rs");
    assert!(says.contains("alice holds"), "`files who foo.rs` from src/ asks of src/foo.rs: {says}");
}

// ---------------------------------------------------------------------------------------
// 3. The guard's identity.

#[tokio::test(flavor = "multi_thread")]
async fn the_guard_acts_as_the_sessions_agent_when_the_file_is_in_another_worktree() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let (alice, bob) = repository(root.path());
    ok(&muster(&alice, &url, &["hook", "install", "--agent", "alice"], &[]));
    ok(&muster(&bob, &url, &["hook", "install", "--agent", "bob"], &[]));
    ok(&muster(&bob, &url, &["files", "reserve", "src/auth/session.rs", "--as", "bob"], &[]));
    ok(&muster(&alice, &url, &["files", "reserve", "README.md", "--as", "alice"], &[]));

    // alice's session (MUSTER_AGENT unset: the agent of the worktree it runs in) editing
    // bob's file by its path inside bob's worktree: she is not taken for bob.
    let theirs = edit(&alice, bob.join("src/auth/session.rs"));
    let refused = guard(&alice, &url, &theirs, None);
    assert_eq!(refused.status.code(), Some(2), "alice edited bob's file: {}", stderr(&refused));
    assert!(stderr(&refused).contains("bob"), "the refusal names the holder: {}", stderr(&refused));

    // Her own file, by its path inside bob's worktree: hers.
    let mine = edit(&alice, bob.join("README.md"));
    let allowed = guard(&alice, &url, &mine, None);
    assert_eq!(allowed.status.code(), Some(0), "alice was refused her own file: {}", stderr(&allowed));
}

// ---------------------------------------------------------------------------------------
// 4. Symlinks.

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_file_reached_through_a_symlink_is_the_file_it_points_to() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let (app, _) = repository(root.path());
    std::fs::write(app.join("src/a.rs"), "fn a() {}\n").unwrap();
    std::os::unix::fs::symlink("src", app.join("alias")).unwrap();
    std::os::unix::fs::symlink("src/a.rs", app.join("lnk.rs")).unwrap();
    ok(&muster(&app, &url, &["files", "reserve", "src/a.rs", "--as", "bob"], &[]));

    for link in ["alias/a.rs", "lnk.rs"] {
        let refused = guard(&app, &url, &edit(&app, link), Some("alice"));
        assert_eq!(refused.status.code(), Some(2), "alice edited bob's src/a.rs as {link}: {}", stderr(&refused));
        assert!(stderr(&refused).contains("bob"), "{link}: {}", stderr(&refused));
    }

    let conflict = muster(&app, &url, &["files", "reserve", "lnk.rs", "--as", "carol"], &[]);
    assert_eq!(conflict.status.code(), Some(5), "lnk.rs is src/a.rs, which bob holds: {}", said(&conflict));
    assert!(stderr(&conflict).contains("bob"), "{}", stderr(&conflict));
}

// ---------------------------------------------------------------------------------------
// 5. Directories that do not exist yet, and negation.

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_that_does_not_exist_yet_is_held_with_what_goes_in_it_and_negation_is_refused() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let (app, _) = repository(root.path());

    ok(&muster(&app, &url, &["files", "reserve", "src/newmod", "--as", "alice"], &[]));
    let says = who(&app, &url, "src/newmod/mod.rs");
    assert!(says.contains("alice holds"), "a file created in src/newmod is held: {says}");

    let reserved = ok(&muster(&app, &url, &["files", "reserve", "lib/auth*", "--as", "alice"], &[]));
    assert!(reserved.contains("lib/auth*/"), "what lib/auth* matches is held with its contents: {reserved}");
    let says = who(&app, &url, "lib/auth/s.rs");
    assert!(says.contains("alice holds"), "a file in a directory lib/auth* matches is held: {says}");

    let negation = muster(&app, &url, &["files", "reserve", "!foo", "--as", "alice"], &[]);
    assert_eq!(negation.status.code(), Some(6), "{}", said(&negation));
    assert!(stderr(&negation).contains("negation"), "{}", stderr(&negation));

    let mut alice = Mcp::spawn_in(&url, "alice", &app, &[]);
    alice.initialize().await;
    let (error, text) = alice.call("reserve_files", json!({ "patterns": ["!foo"] })).await;
    assert!(error, "MCP reserved a negation: {text}");
    assert!(text.contains("negation"), "{text}");
}

// ---------------------------------------------------------------------------------------
// 6. The git hooks.

#[tokio::test(flavor = "multi_thread")]
async fn the_git_hooks_keep_a_tracked_hooks_directory_survive_a_reset_and_refuse_merges_and_cherry_picks() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let (app, _) = repository(root.path());
    // A branch that changes src/auth/session.rs; main moves on meanwhile.
    git(&app, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(app.join("src/auth/session.rs"), "fn feature() {}\n").unwrap();
    git(&app, &["commit", "-qam", "feature: session"]);
    git(&app, &["checkout", "-q", "main"]);
    // The team's hooks, tracked in .githooks.
    let ran = root.path().join("githooks-ran");
    let hook = app.join(".githooks/pre-commit");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, format!("#!/bin/sh\necho ran >> '{}'\n", ran.display())).unwrap();
    make_executable(&hook);
    git(&app, &["add", ".githooks"]);
    git(&app, &["commit", "-qm", "team hooks"]);
    git(&app, &["config", "core.hooksPath", ".githooks"]);
    let tracked = std::fs::read(&hook).unwrap();

    // (a) init leaves the tracked hooks as they are, and they still run.
    ok(&muster(&app, &url, &["init", "--agent", "alice"], &[]));
    assert_eq!(std::fs::read(&hook).unwrap(), tracked, "(a) .githooks/pre-commit was modified");
    let status = git(&app, &["status", "--porcelain"]);
    let changed: Vec<&str> = status.lines().filter(|l| !l.starts_with("??")).collect();
    assert!(changed.is_empty(), "(a) init changed tracked files: {changed:?}");
    assert!(!ran.exists(), "the team's hook has not run yet");
    std::fs::write(app.join("README.md"), "# app, by alice\n").unwrap();
    git(&app, &["add", "README.md"]);
    let done = commit(&app, &url, "readme");
    assert!(done.status.success(), "(a) {}", stderr(&done));
    assert!(std::fs::read_to_string(&ran).is_ok_and(|t| t.contains("ran")), "(a) the .githooks hook did not run");

    // (b) after `git reset --hard`, git still runs muster's hooks.
    git(&app, &["reset", "-q", "--hard"]);
    let hooks = git(&app, &["rev-parse", "--git-path", "hooks"]);
    assert!(hooks.trim().ends_with(".git/muster/hooks"), "(b) git runs the hooks of {hooks}");
    ok(&muster(&app, &url, &["files", "reserve", "old.txt", "src/auth/session.rs", "--as", "bob"], &[]));
    std::fs::write(app.join("old.txt"), "alice's\n").unwrap();
    git(&app, &["add", "old.txt"]);
    let refused = commit(&app, &url, "old.txt");
    assert!(!refused.status.success(), "(b) alice committed bob's old.txt: {}", stderr(&refused));
    assert!(stderr(&refused).contains("bob"), "(b) {}", stderr(&refused));
    git(&app, &["reset", "-q", "--hard"]);

    // (c) a clean merge of a branch that changes bob's file is refused...
    let head = git(&app, &["rev-parse", "HEAD"]);
    let merge = git_output(&app, &["merge", "--no-ff", "-m", "merge feature", "feature"], &[("MUSTER_URL", &url)]);
    assert!(!merge.status.success(), "(c) the merge went through: {}", said(&merge));
    assert_eq!(git(&app, &["rev-parse", "HEAD"]), head, "(c) the merge completed");
    assert!(said(&merge).contains("bob"), "(c) {}", said(&merge));
    git(&app, &["merge", "--abort"]);
    // ...and so is a cherry-pick of its commit.
    let pick = git_output(&app, &["cherry-pick", "feature"], &[("MUSTER_URL", &url)]);
    assert!(!pick.status.success(), "(c) the cherry-pick went through: {}", said(&pick));
    assert_eq!(git(&app, &["rev-parse", "HEAD"]), head, "(c) the cherry-pick completed");
    assert!(said(&pick).contains("bob"), "(c) {}", said(&pick));
}

// ---------------------------------------------------------------------------------------
// 7. `muster init --undo` and `--dry-run`.

#[tokio::test(flavor = "multi_thread")]
async fn init_undo_reverses_exactly_what_init_did_and_dry_run_changes_nothing() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let app = root.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    git(&app, &["init", "-q", "-b", "main"]);
    git(&app, &["remote", "add", "origin", "https://git.example.com/acme/app.git"]);
    std::fs::write(app.join("README.md"), "# app\n").unwrap();
    git(&app, &["add", "."]);
    git(&app, &["commit", "-qm", "first"]);
    let settings = app.join(".claude/settings.local.json");
    let config = || git(&app, &["config", "--list", "--show-origin"]);
    let config_before = config();
    let listing_before = listing(&app);

    // --dry-run changes nothing.
    ok(&muster(&app, &url, &["init", "--dry-run", "--agent", "alice"], &[]));
    assert_eq!(config(), config_before, "--dry-run changed git's configuration");
    assert_eq!(listing(&app), listing_before, "--dry-run changed files");

    // Twice is once.
    ok(&muster(&app, &url, &["init", "--agent", "alice"], &[]));
    let once = read_json(&settings);
    ok(&muster(&app, &url, &["init", "--agent", "alice"], &[]));
    assert_eq!(read_json(&settings), once, "a second init changed settings.local.json");

    // --undo: the hooks path unset, the settings file init created gone.
    ok(&muster(&app, &url, &["init", "--undo"], &[]));
    let hooks_path = git_output(&app, &["config", "--worktree", "--get", "core.hooksPath"], &[]);
    assert!(!hooks_path.status.success(), "core.hooksPath is still {}", String::from_utf8_lossy(&hooks_path.stdout));
    assert!(!settings.exists(), "settings.local.json, which init created, is still there");
    assert_eq!(config(), config_before, "git's configuration differs from before init");
    assert_eq!(listing(&app), listing_before, "undo left files or directories behind");

    // A settings file of the user's own: kept, then given back as it was.
    let theirs = root.path().join("theirs");
    std::fs::create_dir_all(theirs.join(".claude")).unwrap();
    git(&theirs, &["init", "-q", "-b", "main"]);
    git(&theirs, &["remote", "add", "origin", "https://git.example.com/acme/theirs.git"]);
    let own = json!({ "permissions": { "allow": ["Bash(ls:*)"] } });
    let settings = theirs.join(".claude/settings.local.json");
    std::fs::write(&settings, serde_json::to_string_pretty(&own).unwrap()).unwrap();
    ok(&muster(&theirs, &url, &["init", "--agent", "alice"], &[]));
    let merged = read_json(&settings);
    assert_eq!(merged["permissions"], own["permissions"], "the user's entry was changed: {merged}");
    let guards = merged["hooks"]["PreToolUse"].as_array().into_iter().flatten().flat_map(|g| {
        g["hooks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|h| h["command"].as_str().map(str::to_owned))
    });
    assert!(guards.into_iter().any(|c| c.contains("files guard")), "no muster hook: {merged}");
    ok(&muster(&theirs, &url, &["init", "--undo"], &[]));
    assert_eq!(read_json(&settings), own, "undo did not give the user's settings back as they were");
}

// ---------------------------------------------------------------------------------------
// 8. Tokens.

#[tokio::test(flavor = "multi_thread")]
async fn with_tokens_on_the_guard_and_the_commit_hook_refuse_without_a_token() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let alice_token = issue(&data, "alice");
    let bob_token = issue(&data, "bob");
    assert!(alice_token.starts_with("mst_") && bob_token.starts_with("mst_"));
    let p = Process::start(&data, &[], &[]);
    let url = p.url("");
    let (app, _) = repository(root.path());
    ok(&muster(&app, &url, &["hook", "install", "--agent", "alice"], &[]));
    let token = [("MUSTER_TOKEN", bob_token.as_str())];
    ok(&muster(&app, &url, &["files", "reserve", "src/auth/session.rs", "--as", "bob"], &token));

    // The guard without a token refuses, and says why.
    let refused = guard(&app, &url, &edit(&app, app.join("src/auth/session.rs")), Some("alice"));
    assert_eq!(refused.status.code(), Some(2), "the guard allowed an edit without a token: {}", stderr(&refused));
    assert!(stderr(&refused).to_lowercase().contains("token"), "{}", stderr(&refused));

    // So does the commit hook.
    std::fs::write(app.join("src/auth/session.rs"), "fn alice() {}\n").unwrap();
    git(&app, &["add", "src/auth/session.rs"]);
    let refused = commit(&app, &url, "without a token");
    assert!(!refused.status.success(), "the commit went through without a token: {}", stderr(&refused));
    assert!(stderr(&refused).to_lowercase().contains("token"), "{}", stderr(&refused));
}

// ---------------------------------------------------------------------------------------
// 9. MCP and MUSTER_REPO.

#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_server_reserves_in_the_repository_muster_repo_names_outside_a_git_checkout() {
    let s = Server::start().await;
    let url = s.url("");
    let nowhere = tempfile::tempdir().unwrap();
    let mut alice = Mcp::spawn_in(&url, "alice", nowhere.path(), &[("MUSTER_REPO", "acme/app")]);
    alice.initialize().await;
    let (error, text) = alice.call("reserve_files", json!({ "patterns": ["src/x.rs"] })).await;
    assert!(!error, "reserve_files failed outside a git checkout with MUSTER_REPO set: {text}");

    let list = ok(&muster(nowhere.path(), &url, &["files", "list", "--repo", "acme/app"], &[]));
    let held = list.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.contains(&"/src/x.rs") && words.contains(&"alice")
    });
    assert!(held, "acme/app has no /src/x.rs held by alice: {list}");
}

// ---------------------------------------------------------------------------------------
// 10. `muster doctor`.

#[tokio::test(flavor = "multi_thread")]
async fn doctor_names_each_problem_of_a_broken_setup_and_passes_a_good_one() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let doctor = |dir: &Path, url: &str, env: &[(&str, &str)]| muster(dir, url, &["doctor"], env);

    // A good setup: everything would work.
    let (good, _) = repository(&root.path().join("good"));
    ok(&muster(&good, &url, &["init", "--agent", "alice"], &[]));
    let fine = doctor(&good, &url, &[]);
    assert_eq!(fine.status.code(), Some(0), "{}", said(&fine));
    assert!(said(&fine).contains("everything would work"), "{}", said(&fine));

    // (c) A hook missing.
    std::fs::remove_file(good.join(".git/muster/hooks/pre-commit")).unwrap();
    let missing = doctor(&good, &url, &[]);
    assert_ne!(missing.status.code(), Some(0), "{}", said(&missing));
    assert!(said(&missing).contains("pre-commit"), "(c) {}", said(&missing));

    // (d) Two worktrees with one agent name.
    let (one, other) = repository(&root.path().join("shared"));
    ok(&muster(&one, &url, &["init", "--agent", "same"], &[]));
    ok(&muster(&other, &url, &["init", "--agent", "same"], &[]));
    let shared = doctor(&one, &url, &[]);
    assert_ne!(shared.status.code(), Some(0), "{}", said(&shared));
    let says = said(&shared);
    assert!(says.contains("same") && says.contains("also the agent of") && says.contains("app-zelda"), "(d) {says}");

    // (a) No broker at MUSTER_URL.
    let (_socket, addr) = common::refusing_addr();
    let nobody = format!("http://{addr}");
    let (down, _) = repository(&root.path().join("down"));
    ok(&muster(&down, &nobody, &["init", "--agent", "alice"], &[]));
    let unreachable = doctor(&down, &nobody, &[]);
    assert_ne!(unreachable.status.code(), Some(0), "{}", said(&unreachable));
    assert!(said(&unreachable).contains("cannot be reached"), "(a) {}", said(&unreachable));

    // (b) A wrong token.
    let data = root.path().join("data");
    let token = issue(&data, "alice");
    let p = Process::start(&data, &[], &[]);
    let tokens_url = p.url("");
    let (guarded, _) = repository(&root.path().join("tokens"));
    ok(&muster(&guarded, &tokens_url, &["init", "--agent", "alice"], &[]));
    let wrong = doctor(&guarded, &tokens_url, &[("MUSTER_TOKEN", "mst_0000000000000000000000000000")]);
    assert_ne!(wrong.status.code(), Some(0), "{}", said(&wrong));
    let failures: Vec<String> =
        said(&wrong).lines().filter(|l| l.starts_with("FAIL")).map(str::to_owned).collect::<Vec<_>>();
    assert!(failures.iter().any(|l| l.contains("token")), "(b) {}", said(&wrong));
    let right = doctor(&guarded, &tokens_url, &[("MUSTER_TOKEN", &token)]);
    assert_eq!(right.status.code(), Some(0), "(b) with the right token: {}", said(&right));
}

// ---------------------------------------------------------------------------------------
// 11. Automatic reservations can be turned off for a repository.

#[tokio::test(flavor = "multi_thread")]
async fn with_no_auto_reserve_an_edit_holds_nothing_but_a_held_file_is_still_refused() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let (alice, bob) = repository(root.path());
    ok(&muster(&alice, &url, &["init", "--agent", "alice", "--no-auto-reserve"], &[]));
    ok(&muster(&bob, &url, &["init", "--agent", "bob"], &[]));
    ok(&muster(&bob, &url, &["files", "reserve", "old.txt", "--as", "bob"], &[]));

    // The setting is the repository's: alice's edit of a free file goes through and holds
    // nothing, in either worktree.
    let free = guard(&alice, &url, &edit(&alice, alice.join("README.md")), Some("alice"));
    assert_eq!(free.status.code(), Some(0), "{}", stderr(&free));
    assert!(who(&alice, &url, "README.md").contains("free"), "an edit held a file with --no-auto-reserve");
    // A file bob holds is still refused, naming him.
    let held = guard(&alice, &url, &edit(&alice, alice.join("old.txt")), Some("alice"));
    assert_eq!(held.status.code(), Some(2), "{}", stderr(&held));
    assert!(stderr(&held).contains("bob"), "{}", stderr(&held));
}
