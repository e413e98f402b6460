//! The `muster` CLI end to end: the real binary against a real broker, asserting on what a
//! user (or an agent's shell) sees: stdout, stderr and the exit code.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Server, binary, refusing_addr};
use serde_json::{Value, json};

/// Exit codes documented in the README.
const CONFLICT: i32 = 5;
const NOT_FOUND: i32 = 4;
const INVALID: i32 = 6;
const UNREACHABLE: i32 = 3;
const TIMEOUT: i32 = 7;
const NOTHING_TO_DO: i32 = 9;

fn command(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args).env("MUSTER_URL", url).env_remove("MUSTER_AGENT").env("NO_COLOR", "1");
    cmd
}

/// Runs `muster ARGS` to the end.
async fn muster(url: &str, args: &[&str]) -> Output {
    let mut cmd = command(url, args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing what the command printed when it differs.
fn exits(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "stdout:\n{stdout}\nstderr:\n{stderr}");
    (stdout, stderr)
}

/// A long-running command (`watch`, `wait`) with its output read line by line.
struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    fn spawn(url: &str, args: &[&str]) -> Running {
        let mut child = command(url, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Running { child, stdout, stderr }
    }

    /// Waits for the stderr line saying the command is subscribed.
    async fn ready(&self, marker: &str) {
        let line = self.stderr.recv_timeout(Duration::from_secs(10)).expect("the command never said it was ready");
        assert!(line.contains(marker), "unexpected stderr line: {line}");
    }

    fn next_line(&self) -> String {
        self.stdout.recv_timeout(Duration::from_secs(10)).expect("no output in time")
    }

    /// Waits for the process to exit; returns its code and what it printed.
    async fn finish(mut self) -> (Option<i32>, String) {
        let (status, this) = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return (status, self);
                }
                assert!(std::time::Instant::now() < deadline, "the command did not exit");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        // The reader thread ends at EOF, after the last line.
        let mut printed = Vec::new();
        while let Ok(line) = this.stdout.recv_timeout(Duration::from_secs(5)) {
            printed.push(line);
        }
        (status.code(), printed.join("\n"))
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// link posts `content` to #general.
async fn say(server: &Server, content: &str) {
    let (status, body) = server.post("/chat/messages", json!({ "from": "link", "content": content })).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn task_commands_print_what_happened_and_exit_with_documented_codes() {
    let server = Server::start().await;
    let url = &server.url("");

    let (out, _) = exits(&muster(url, &["task", "add", "Fix the login redirect", "-p", "P1", "--as", "link"]).await, 0);
    assert_eq!(out.trim(), "added T-1: Fix the login redirect [P1]");
    exits(&muster(url, &["task", "add", "Write the release notes", "--after", "T-1"]).await, 0);

    let (list, _) = exits(&muster(url, &["task", "list"]).await, 0);
    let rows: Vec<&str> = list.lines().collect();
    assert_eq!(rows.len(), 3, "{list}");
    assert!(rows[0].starts_with("ID") && rows[0].contains("TITLE"), "{list}");
    assert!(rows[1].contains("T-1") && rows[1].contains("P1") && rows[1].contains("todo"), "{list}");
    assert!(rows[2].contains("Write the release notes [after T-1]"), "{list}");

    let (claimed, _) = exits(&muster(url, &["task", "claim", "T-1", "--as", "link"]).await, 0);
    assert!(claimed.starts_with("T-1 is yours (token 1)"), "{claimed}");

    // The mutex: a second agent is refused, and told who holds it.
    let (_, err) = exits(&muster(url, &["task", "claim", "T-1", "--as", "zelda"]).await, CONFLICT);
    assert!(err.contains("link"), "the refusal should name the owner: {err}");
    // A task waiting on an unfinished one cannot be claimed either.
    exits(&muster(url, &["task", "claim", "T-2", "--as", "zelda"]).await, CONFLICT);

    let (_, err) = exits(&muster(url, &["task", "claim", "T-1"]).await, INVALID);
    assert!(err.contains("--as"), "{err}");
    let (_, err) = exits(&muster(url, &["task", "show", "T-99"]).await, NOT_FOUND);
    assert!(err.contains("T-99"), "{err}");
    let (_, err) = exits(&muster(url, &["task", "show", "banana"]).await, INVALID);
    assert!(err.contains("banana"), "{err}");

    // Nothing free for zelda: T-1 is held and T-2 waits on it.
    let (out, _) = exits(&muster(url, &["task", "next", "--as", "zelda"]).await, NOTHING_TO_DO);
    assert_eq!(out.trim(), "nothing to do");
    // link's next task is the one it holds.
    let (out, _) = exits(&muster(url, &["task", "next", "--as", "link", "--json"]).await, 0);
    let next: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(next["id"], "T-1");

    exits(&muster(url, &["task", "done", "T-1", "--as", "link"]).await, 0);
    let (out, _) = exits(&muster(url, &["task", "show", "T-1", "--json"]).await, 0);
    let task: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((task["status"].as_str(), task["claim"].is_null()), (Some("done"), true), "{task}");
    let (_, err) = exits(&muster(url, &["task", "update", "T-1", "--status", "doing", "--as", "link"]).await, INVALID);
    assert!(err.contains("done"), "{err}");

    // Now T-2 is free: zelda claims it with `next --claim`, and the server agrees.
    let (out, _) = exits(&muster(url, &["task", "next", "--claim", "--as", "zelda"]).await, 0);
    assert!(out.starts_with("T-2"), "{out}");
    let (_, body) = server.get("/tasks/T-2").await;
    assert_eq!(body["task"]["claim"]["agent"], "zelda", "{body}");

    // --json errors are JSON too, on stderr: stdout holds only results.
    let (out, err) = exits(&muster(url, &["task", "claim", "T-2", "--as", "link", "--json"]).await, CONFLICT);
    assert_eq!(out, "");
    let error: Value = serde_json::from_str(&err).unwrap();
    assert_eq!(error["error"]["code"], "conflict", "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_inbox_presence_and_status_from_the_shell() {
    let server = Server::start().await;
    let url = &server.url("");

    let (out, _) = exits(&muster(url, &["chat", "post", "@zelda can you review T-1?", "--as", "link"]).await, 0);
    assert!(out.starts_with("posted M-") && out.contains("#general"), "{out}");
    exits(&muster(url, &["chat", "post", "deploy at 5", "--as", "link", "-c", "ops"]).await, 0);
    let (_, err) = exits(&muster(url, &["chat", "post", "who am I?"]).await, INVALID);
    assert!(err.contains("--as"), "{err}");

    let (read, _) = exits(&muster(url, &["chat", "read"]).await, 0);
    assert!(read.contains("#general link: @zelda can you review T-1?"), "{read}");
    assert!(!read.contains("deploy at 5"), "another channel leaked into #general: {read}");

    let (inbox, _) = exits(&muster(url, &["inbox", "--as", "zelda", "--json"]).await, 0);
    let inbox: Value = serde_json::from_str(&inbox).unwrap();
    assert_eq!(inbox["messages"].as_array().map(Vec::len), Some(1), "{inbox}");
    exits(&muster(url, &["inbox", "--as", "zelda", "--ack"]).await, 0);
    let (inbox, _) = exits(&muster(url, &["inbox", "--as", "zelda"]).await, 0);
    assert_eq!(inbox.trim(), "no unread messages for zelda");

    let (out, _) = exits(&muster(url, &["status", "set", "busy", "--note", "on T-1", "--as", "link"]).await, 0);
    assert_eq!(out.trim(), "link is busy");
    let (who, _) = exits(&muster(url, &["who"]).await, 0);
    let link = who.lines().find(|l| l.starts_with("link")).unwrap_or_else(|| panic!("link missing: {who}"));
    assert!(link.contains("busy") && link.contains("on T-1"), "{who}");
    let (who, _) = exits(&muster(url, &["who", "--json"]).await, 0);
    let names: Vec<String> =
        who.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["name"].as_str().unwrap().to_owned()).collect();
    assert!(names.contains(&"link".to_owned()) && names.contains(&"zelda".to_owned()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_is_one_clear_line_and_exit_3() {
    let (_held, addr) = refusing_addr();
    let url = format!("http://{addr}");
    let (_, err) = exits(&muster(&url, &["task", "list"]).await, UNREACHABLE);
    assert!(err.starts_with(&format!("muster: broker not running at {url} (start it with `muster serve`")), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Bad usage is clap's exit 2, before any connection.
    exits(&muster(&url, &["task", "add"]).await, 2);
    // With --json, the error is JSON on stderr, with a code a script can test.
    let (out, err) = exits(&muster(&url, &["task", "list", "--json"]).await, UNREACHABLE);
    assert_eq!(out, "");
    let error: Value = serde_json::from_str(&err).unwrap();
    assert_eq!(error["error"]["code"], "unreachable", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains(&url), "{error}");
}

/// Runs `muster ARGS` with its stdout a pipe whose reader is already gone (`| head` that
/// has exited); `then` runs once the command is going. The exit code and stderr.
async fn into_a_closed_pipe(url: &str, args: &[&str], then: impl AsyncFnOnce(&mut Child)) -> (Option<i32>, String) {
    let mut child = command(url, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    then(&mut child).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    (out.status.code(), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pipe_ends_a_command_quietly_with_141() {
    let server = Server::start().await;
    let url = server.url("");
    for i in 0..30 {
        server.post("/tasks", json!({"title": format!("task {i}")})).await;
    }
    server.post("/presence/link", json!({})).await;
    for args in [&["task", "list"][..], &["task", "list", "--json"], &["who"], &["who", "--json"]] {
        let (code, err) = into_a_closed_pipe(&url, args, async |_| {}).await;
        assert_eq!((code, err.as_str()), (Some(141), ""), "muster {args:?}");
    }
    // watch: the first event it prints ends it.
    let (code, err) = into_a_closed_pipe(&url, &["watch", "chat"], async |child| {
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let watching = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap()).await.unwrap();
        assert!(watching.starts_with("muster: watching chat"), "{watching}");
        say(&server, "one event is enough").await;
    })
    .await;
    assert_eq!((code, err.as_str()), (Some(141), ""), "muster watch");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prints_events_pushed_by_other_clients() {
    let server = Server::start().await;
    let watch = Running::spawn(&server.url(""), &["watch", "tasks", "chat", "--json"]);
    watch.ready("watching tasks chat").await;

    server.task("Pushed to the watcher").await;
    say(&server, "hello watchers").await;
    assert_eq!(server.post("/presence/link", json!({ "status": "busy" })).await.0, 200);
    server.task("Second task").await;

    let kinds: Vec<(String, String)> = (0..3)
        .map(|_| {
            let e: Value = serde_json::from_str(&watch.next_line()).unwrap();
            (e["type"].as_str().unwrap().to_owned(), e.to_string())
        })
        .collect();
    assert_eq!(kinds[0].0, "task.created");
    assert!(kinds[0].1.contains("Pushed to the watcher"), "{}", kinds[0].1);
    assert_eq!(kinds[1].0, "chat.message");
    // The presence event is not on the watched topics.
    assert_eq!(kinds[2].0, "task.created");
    assert!(kinds[2].1.contains("Second task"), "{}", kinds[2].1);
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_a_mention_returns_it_and_marks_it_read() {
    let server = Server::start().await;
    let url = server.url("");
    let wait = Running::spawn(&url, &["wait", "--mention", "--ack", "--as", "zelda", "--timeout", "30s"]);
    wait.ready("waiting on inbox:zelda").await;

    say(&server, "unrelated chatter").await;
    say(&server, "@zelda T-1 is ready for review").await;
    let (code, out) = wait.finish().await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("link: @zelda T-1 is ready for review"), "{out}");
    let (_, inbox) = server.get("/inbox/zelda").await;
    assert_eq!(inbox["messages"], json!([]), "--ack should have marked it read: {inbox}");

    // An unread mention from before the wait counts at once.
    say(&server, "@zelda one more thing").await;
    let out = muster(&url, &["wait", "--mention", "--as", "zelda", "--timeout", "10s"]).await;
    let (out, _) = exits(&out, 0);
    assert!(out.contains("one more thing"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_a_task_status_ignores_other_changes() {
    let server = Server::start().await;
    let url = server.url("");
    let id = server.task("Ship it").await;
    let mut wait = Running::spawn(&url, &["wait", "--task", &id, "--until", "done", "--timeout", "30s"]);
    wait.ready(&format!("waiting on task:{id}")).await;

    let (status, _) = server.post(&format!("/tasks/{id}/claim"), json!({ "agent": "link" })).await;
    assert_eq!(status, 200);
    // The claim is a change to the task but not the one waited for.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(wait.still_running(), "wait returned on a claim, not on done");
    let (status, _) = server.post(&format!("/tasks/{id}/complete"), json!({ "agent": "link" })).await;
    assert_eq!(status, 200);
    let (code, out) = wait.finish().await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("{id} done by link: Ship it")), "{out}");

    // Already done: nothing to wait for.
    let (out, _) = exits(&muster(&url, &["wait", "--task", &id, "--until", "done"]).await, 0);
    assert!(out.contains("is done"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_gives_up_with_exit_7() {
    let server = Server::start().await;
    let (_, err) = exits(&muster(&server.url(""), &["wait", "--topic", "chat", "--timeout", "300ms"]).await, TIMEOUT);
    assert!(err.contains("nothing happened within 300ms"), "{err}");
    let (_, err) = exits(&muster(&server.url(""), &["wait"]).await, INVALID);
    assert!(err.contains("--mention"), "{err}");
}

#[tokio::test]
async fn task_list_shows_open_work_first_then_the_last_finished_and_pages_on_request() {
    let s = Server::start().await;
    let url = s.url("");
    for i in 1..=16 {
        s.post("/tasks", json!({"title": format!("job {i}")})).await;
    }
    // T-1 … T-14 finished, oldest first; T-15 and T-16 open.
    for n in 1..=14 {
        s.patch(&format!("/tasks/T-{n}"), json!({"status": "done", "agent": "lead"})).await;
    }
    let (out, _) = exits(&muster(&url, &["task", "list"]).await, 0);
    let ids: Vec<&str> = out.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(&ids[..12], ["T-15", "T-16", "T-14", "T-13", "T-12", "T-11", "T-10", "T-9", "T-8", "T-7", "T-6", "T-5"]);
    assert!(out.lines().last().unwrap().contains("4 more finished lately"), "{out}");

    let (all, _) = exits(&muster(&url, &["task", "list", "--all", "--json"]).await, 0);
    assert_eq!(all.lines().count(), 16, "{all}");
    let (four, _) = exits(&muster(&url, &["task", "list", "--all", "--limit", "4", "--json"]).await, 0);
    let four: Vec<String> = four.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].to_string()).collect();
    assert_eq!(four, ["\"T-1\"", "\"T-2\"", "\"T-3\"", "\"T-4\""]);
    let (_, err) = exits(&muster(&url, &["task", "list", "--limit", "0"]).await, 2);
    assert!(err.contains("--limit"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_stuck_wakes_when_a_teammate_goes_silent_on_a_doing_task() {
    let s = Server::start_manual(|c| {
        c.stuck_after = Duration::from_secs(120);
        c.claim_lease = Duration::from_secs(3600);
    })
    .await;
    let url = s.url("");
    s.task("the long one").await;
    s.post("/tasks/T-1/claim", json!({"agent": "link"})).await;
    let mut wait = Running::spawn(&url, &["wait", "--stuck", "--timeout", "30s"]);
    wait.ready("waiting on presence").await;
    assert!(wait.still_running(), "nobody is stuck yet");
    // Two silent minutes later the broker announces link stuck; the wait prints it.
    s.advance(Duration::from_secs(121));
    let (code, printed) = wait.finish().await;
    assert_eq!(code, Some(0), "{printed}");
    // The event ("link idle, stuck"), or link as presence shows it if it was stuck before
    // the wait had subscribed.
    assert!(printed.contains("link") && printed.contains("stuck"), "{printed}");
    // One already stuck counts: the next wait returns at once, saying who.
    let (out, _) = exits(&muster(&url, &["wait", "--stuck", "--timeout", "5s"]).await, 0);
    assert!(out.contains("link is stuck on T-1"), "{out}");
}

#[tokio::test]
async fn help_shows_what_each_command_uses_and_completions_and_a_man_page_are_generated() {
    let url = "http://127.0.0.1:1";
    let (serve, _) = exits(&muster(url, &["serve", "--help"]).await, 0);
    assert!(serve.contains("--data-dir") && !serve.contains("--url") && !serve.contains("--as"), "{serve}");
    let (add, _) = exits(&muster(url, &["token", "add", "--help"]).await, 0);
    assert!(!add.contains("--url") && !add.contains("--json"), "{add}");
    let (mcp, _) = exits(&muster(url, &["mcp", "--help"]).await, 0);
    assert!(mcp.contains("--as") && mcp.contains("--url") && !mcp.contains("--json"), "{mcp}");
    let (list, _) = exits(&muster(url, &["task", "list", "--help"]).await, 0);
    assert!(list.contains("--as") && list.contains("--json") && list.contains("--url"), "{list}");
    // The client options still go before the subcommand or after it.
    let (_, err) = exits(&muster(url, &["--as", "link", "task", "list"]).await, 3);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    let (_, err) = exits(&muster(url, &["task", "list", "--as", "link"]).await, 3);
    assert!(err.contains("127.0.0.1:1"), "{err}");

    for shell in ["bash", "zsh", "fish"] {
        let (script, _) = exits(&muster(url, &["completions", shell]).await, 0);
        assert!(script.contains("muster") && script.contains("reserve"), "{shell}: {script}");
    }
    let (man, _) = exits(&muster(url, &["man"]).await, 0);
    assert!(man.contains(".TH muster") && man.contains("serve"), "{man}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_comment_from_the_shell_wakes_a_wait_on_the_task_and_shows_under_it() {
    let server = Server::start().await;
    let url = server.url("");
    let id = server.task("Fix the flaky test").await;
    let wait = Running::spawn(&url, &["wait", "--task", &id, "--timeout", "30s"]);
    wait.ready(&format!("waiting on task:{id}")).await;

    let (out, _) = exits(&muster(&url, &["task", "comment", &id, "@zelda the fixture races", "--as", "link"]).await, 0);
    assert!(out.starts_with(&format!("commented on {id} (M-")), "{out}");
    let (code, out) = wait.finish().await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("{id} comment by link: @zelda the fixture races")), "{out}");

    exits(&muster(&url, &["task", "comment", &id, "fixed in #530", "--as", "zelda"]).await, 0);
    let (shown, _) = exits(&muster(&url, &["task", "show", &id]).await, 0);
    let comments = shown.split_once("comments (2):").map(|(_, c)| c).unwrap_or_else(|| panic!("{shown}"));
    let lines: Vec<&str> = comments.trim().lines().collect();
    assert!(lines[0].contains("link: @zelda the fixture races"), "{shown}");
    assert!(lines[1].contains("zelda: fixed in #530"), "{shown}");
    let (json, _) = exits(&muster(&url, &["task", "show", &id, "--json"]).await, 0);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (json["status"].as_str(), json["comments"][1]["from"].as_str()),
        (Some("todo"), Some("zelda")),
        "{json}"
    );

    // The mention waits in zelda's inbox like a chat message.
    let (out, _) = exits(&muster(&url, &["wait", "--mention", "--as", "zelda", "--timeout", "10s"]).await, 0);
    assert!(out.contains("the fixture races"), "{out}");
    let (_, err) = exits(&muster(&url, &["task", "comment", &id, "who am I?"]).await, INVALID);
    assert!(err.contains("--as"), "{err}");
    let (_, err) = exits(&muster(&url, &["task", "comment", "T-99", "x", "--as", "link"]).await, NOT_FOUND);
    assert!(err.contains("T-99"), "{err}");
}
