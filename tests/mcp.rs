//! `muster mcp`: the real binary spoken to as an MCP client would, JSON-RPC over its stdio,
//! against a real broker.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Server, binary};
use serde_json::{Value, json};

/// One `muster mcp --as NAME` process and its JSON-RPC channel.
struct Mcp {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
}

impl Mcp {
    fn spawn(url: &str, agent: &str) -> Mcp {
        Mcp::spawn_in(url, agent, &std::env::temp_dir())
    }

    /// The server of an editor opened on `dir`.
    fn spawn_in(url: &str, agent: &str, dir: &std::path::Path) -> Mcp {
        let mut child = Command::new(binary())
            .current_dir(dir)
            .args(["mcp", "--as", agent])
            .env("MUSTER_URL", url)
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

    /// A request; returns its `result`, failing on a JSON-RPC error.
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

    async fn initialize(&mut self) -> Value {
        let result = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": { "name": "muster-test", "version": "0" }
                }),
            )
            .await;
        self.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
        result
    }

    /// `tools/call`; returns (isError, the text content).
    async fn call(&mut self, tool: &str, arguments: Value) -> (bool, String) {
        let result = self.request("tools/call", json!({ "name": tool, "arguments": arguments })).await;
        let text = result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text: {result}")).to_owned();
        (result["isError"] == true, text)
    }

    /// Closes stdin, as an MCP client does when the agent's session ends.
    async fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        tokio::task::spawn_blocking(move || self.child.wait().unwrap()).await.unwrap()
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The presence entry of `name`, as `GET /presence` shows it.
async fn presence(server: &Server, name: &str) -> Value {
    let (_, body) = server.get("/presence").await;
    body["agents"].as_array().unwrap().iter().find(|a| a["name"] == name).cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_mcp_agents_race_for_a_task_and_exactly_one_wins() {
    let server = Server::start().await;
    let url = server.url("");
    let mut link = Mcp::spawn(&url, "link");
    let mut zelda = Mcp::spawn(&url, "zelda");

    let init = link.initialize().await;
    assert_eq!(init["serverInfo"]["name"], "muster", "{init}");
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    assert!(init["instructions"].as_str().unwrap().contains("You are link"), "{init}");
    zelda.initialize().await;

    let tools = link.request("tools/list", json!({})).await;
    let names: Vec<&str> = tools["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for expected in [
        "list_tasks",
        "create_task",
        "show_task",
        "claim_task",
        "next_task",
        "update_task",
        "complete_task",
        "release_task",
        "post_message",
        "comment_task",
        "read_comments",
        "read_chat",
        "read_inbox",
        "ack_inbox",
        "who",
        "set_status",
        "wait_for",
        "reserve_files",
        "release_files",
        "who_has_files",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    let claim = tools["tools"].as_array().unwrap().iter().find(|t| t["name"] == "claim_task").unwrap();
    assert_eq!(claim["inputSchema"]["required"], json!(["task"]), "{claim}");

    // Both agents are present while their MCP servers run.
    for name in ["link", "zelda"] {
        let p = presence(&server, name).await;
        assert_eq!((p["status"].as_str(), p["connections"].as_u64()), (Some("active"), Some(1)), "{p}");
    }

    let (error, created) = link.call("create_task", json!({ "title": "Fix the flaky test", "priority": "P1" })).await;
    assert!(!error, "{created}");
    let id = serde_json::from_str::<Value>(&created).unwrap()["id"].as_str().unwrap().to_owned();

    let (link_refused, link_says) = link.call("claim_task", json!({ "task": id })).await;
    let (zelda_refused, zelda_says) = zelda.call("claim_task", json!({ "task": id })).await;
    assert!(!link_refused, "{link_says}");
    assert!(zelda_refused, "the second claim must be a tool error, not a success: {zelda_says}");
    assert!(zelda_says.contains("link"), "the error should name the owner: {zelda_says}");
    let (_, task) = server.get(&format!("/tasks/{id}")).await;
    assert_eq!(task["task"]["claim"]["agent"], "link", "{task}");

    // Bad arguments are tool errors that say what is wrong.
    let (error, says) = zelda.call("show_task", json!({ "task": "nonsense" })).await;
    assert!(error && says.contains("nonsense"), "{says}");
    let (error, says) = zelda.call("complete_task", json!({ "task": id })).await;
    assert!(error && says.contains("link"), "{says}");

    // When link's session ends, link goes offline; zelda is still here.
    let status = link.close().await;
    assert!(status.success(), "{status}");
    let mut gone = Value::Null;
    for _ in 0..100 {
        gone = presence(&server, "link").await;
        if gone["status"] == "offline" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gone["status"], "offline", "{gone}");
    assert_eq!(presence(&server, "zelda").await["status"], "active");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_agent_reserves_files_and_another_is_refused_naming_the_holder() {
    let server = Server::start().await;
    let url = server.url("");
    // zelda's editor is open on a clone of the repository: the server names it by its remote.
    let clone = tempfile::tempdir().unwrap();
    let git =
        |args: &[&str]| assert!(Command::new("git").current_dir(clone.path()).args(args).status().unwrap().success());
    git(&["init", "-q"]);
    git(&["remote", "add", "origin", "git@git.example.com:Acme/App.git"]);
    let mut link = Mcp::spawn(&url, "link");
    let mut zelda = Mcp::spawn_in(&url, "zelda", clone.path());
    link.initialize().await;
    let init = zelda.initialize().await;
    assert!(init["instructions"].as_str().unwrap().contains("reserve_files"), "{init}");

    let repo = "git.example.com/acme/app";
    let (error, says) = link.call("create_task", json!({ "title": "auth" })).await;
    assert!(!error, "{says}");
    let (error, says) = link.call("claim_task", json!({ "task": "T-1" })).await;
    assert!(!error, "{says}");
    let (error, says) = link
        .call(
            "reserve_files",
            json!({ "repo": repo, "patterns": ["src/auth/**"], "task": "T-1", "reason": "session rewrite" }),
        )
        .await;
    assert!(!error, "{says}");

    // zelda names no repo: its server derives it from the clone's remote, and is refused.
    let (error, says) = zelda.call("reserve_files", json!({ "patterns": ["src/auth/session.rs", "docs/**"] })).await;
    assert!(error, "an overlapping reservation must be a tool error: {says}");
    for part in ["link", "src/auth/**", "T-1", "src/auth/session.rs"] {
        assert!(says.contains(part), "the refusal should name {part}: {says}");
    }
    let (error, says) = zelda.call("who_has_files", json!({ "paths": ["src/auth/session.rs", "README.md"] })).await;
    assert!(!error, "{says}");
    let who: Value = serde_json::from_str(&says).unwrap();
    assert_eq!(who["paths"][0]["reservations"][0]["agent"], "link", "{who}");
    assert_eq!(who["paths"][1]["reservations"], json!([]), "{who}");

    // Completing the task releases its reservations; then zelda gets the files.
    let (error, says) = link.call("complete_task", json!({ "task": "T-1" })).await;
    assert!(!error, "{says}");
    let (error, says) = zelda.call("reserve_files", json!({ "patterns": ["src/auth/session.rs"] })).await;
    assert!(!error, "{says}");
    let (error, says) = zelda.call("release_files", json!({})).await;
    assert!(!error && says.contains("src/auth/session.rs"), "{says}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_returns_a_mention_posted_by_another_agent() {
    let server = Server::start().await;
    let url = server.url("");
    let mut link = Mcp::spawn(&url, "link");
    let mut zelda = Mcp::spawn(&url, "zelda");
    link.initialize().await;
    zelda.initialize().await;

    // Nothing for zelda yet: a short wait is a tool error saying so.
    let (error, says) = zelda.call("wait_for", json!({ "mention": true, "timeout_seconds": 1 })).await;
    assert!(error && says.contains("nothing happened"), "{says}");

    // zelda waits; link mentions it meanwhile.
    let waiting = tokio::spawn(async move {
        let answer = zelda.call("wait_for", json!({ "mention": true, "timeout_seconds": 30 })).await;
        (zelda, answer)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (error, says) = link.call("post_message", json!({ "content": "@zelda please review T-1" })).await;
    assert!(!error, "{says}");
    let (mut zelda, (error, says)) = waiting.await.unwrap();
    assert!(!error, "{says}");
    assert!(says.contains("@zelda please review T-1"), "{says}");

    // Once acknowledged, the inbox is empty.
    let (error, _) = zelda.call("ack_inbox", json!({})).await;
    assert!(!error);
    let (_, inbox) = zelda.call("read_inbox", json!({})).await;
    assert_eq!(serde_json::from_str::<Value>(&inbox).unwrap()["messages"], json!([]), "{inbox}");

    // A comment on a task reaches the one it mentions the same way.
    server.task("Review the fixture").await;
    let (error, says) = link.call("comment_task", json!({ "task": "T-1", "content": "@zelda over to you" })).await;
    assert!(!error, "{says}");
    let comment: Value = serde_json::from_str(&says).unwrap();
    assert_eq!((comment["task"].as_str(), comment["from"].as_str()), (Some("T-1"), Some("link")), "{comment}");
    let (error, says) = zelda.call("wait_for", json!({ "mention": true, "timeout_seconds": 10 })).await;
    assert!(!error && says.contains("@zelda over to you"), "{says}");
    let (error, says) = zelda.call("read_comments", json!({ "task": "T-1" })).await;
    assert!(!error, "{says}");
    let comments: Value = serde_json::from_str(&says).unwrap();
    assert_eq!(comments["messages"][0]["content"], "@zelda over to you", "{comments}");
    assert_eq!(comments["messages"].as_array().map(Vec::len), Some(1), "{comments}");
    let (error, says) = link.call("comment_task", json!({ "task": "T-9", "content": "x" })).await;
    assert!(error && says.contains("T-9"), "a comment on no task is a tool error: {says}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_server_started_before_the_broker_connects_when_it_comes_up() {
    let root = tempfile::tempdir().unwrap();
    // The address a broker got, with no broker behind it yet.
    let first = common::Process::start(&root.path().join("data"), &[], &[]);
    let addr = first.addr.to_string();
    assert!(first.terminate().success());
    let url = format!("http://{addr}");
    let mut link = Mcp::spawn(&url, "link");
    link.initialize().await;
    let (error, says) = link.call("list_tasks", json!({})).await;
    assert!(error && says.contains("muster serve"), "{says}");

    let broker = common::Process::start_at(&root.path().join("data"), &addr, &[], &[]);
    let mut answer = (true, String::new());
    for _ in 0..100 {
        answer = link.call("list_tasks", json!({})).await;
        if !answer.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!answer.0, "still not connected: {}", answer.1);
    let presence: Value = reqwest::get(broker.url("/presence/link")).await.unwrap().json().await.unwrap();
    assert_eq!(presence["agent"]["status"], "active", "{presence}");
}
