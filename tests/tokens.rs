//! Tokens: issued by `muster token add`, stored hashed, required on every request once
//! one exists, and binding the caller to its own agent (no impersonation), over HTTP, the
//! WebSocket and the CLI; never logged; and no network-facing broker without them.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Process, Ws, binary, split};
use serde_json::{Value, json};

fn issue(data: &std::path::Path, name: &str, human: bool) -> String {
    let mut cmd = Command::new(binary());
    cmd.args(["token", "add", name, "--data-dir"]).arg(data);
    if human {
        cmd.arg("--human");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn call(p: &Process, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method.parse().unwrap(), p.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    split(request.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn with_tokens_every_caller_is_one_agent_and_cannot_impersonate_another() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let link = issue(&data, "link", false);
    let zelda = issue(&data, "zelda", false);
    assert!(link.starts_with("mst_") && link != zelda);
    let stored = std::fs::read_to_string(data.join("tokens.json")).unwrap();
    assert!(!stored.contains(&link) && !stored.contains(&zelda), "tokens are stored hashed");

    let p = Process::start(&data, &[], &[]);
    // No token, a wrong one: 401. The health check and the dashboard stay open.
    let (status, body) = call(&p, "GET", "/tasks", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    assert_eq!(call(&p, "GET", "/tasks", Some("mst_00"), None).await.0, 401);
    assert_eq!(call(&p, "POST", "/tasks", None, Some(json!({"title": "x"}))).await.0, 401);
    assert_eq!(call(&p, "GET", "/health", None, None).await.0, 200);
    assert_eq!(call(&p, "GET", "/dashboard", None, None).await.0, 200);

    // With a token, a write naming nobody is done as the token's agent...
    let (status, body) = call(&p, "POST", "/tasks", Some(&link), Some(json!({"title": "Fix auth"}))).await;
    assert_eq!((status, body["task"]["createdBy"].as_str()), (201, Some("link")), "{body}");
    let (status, body) = call(&p, "POST", "/tasks/T-1/claim", Some(&link), Some(json!({}))).await;
    assert_eq!((status, body["task"]["claim"]["agent"].as_str()), (200, Some("link")), "{body}");
    // ...and one naming another agent is refused, in every way of naming it.
    for (path, body) in [
        ("/chat/messages", json!({"from": "zelda", "content": "I am zelda, trust me"})),
        ("/tasks/T-1/release", json!({"agent": "zelda"})),
        ("/presence/zelda", json!({"status": "busy"})),
        ("/inbox/zelda/ack", json!({})),
    ] {
        let (status, answer) = call(&p, "POST", path, Some(&link), Some(body)).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("link's"), "{path}: {answer}");
    }
    let r = reqwest::Client::new()
        .post(p.url("/tasks/T-1/release"))
        .bearer_auth(&zelda)
        .header("X-Agent", "link")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "zelda may not release as link through X-Agent");

    // The WebSocket: the token goes in hello.
    let mut ws = Ws::connect(p.addr).await;
    let reply = ws.request(json!({"op": "hello", "agent": "link"})).await;
    assert_eq!(reply["error"]["code"], "unauthorized", "{reply}");
    let reply = ws.request(json!({"op": "hello", "agent": "link", "token": zelda})).await;
    assert_eq!(reply["error"]["code"], "forbidden", "{reply}");
    ws.hello(json!({"agent": "zelda", "token": zelda})).await;
    let reply = ws.request(json!({"op": "chat.post", "from": "link", "content": "from link, honest"})).await;
    assert_eq!(reply["error"]["code"], "forbidden", "{reply}");
    let posted = ws.ok(json!({"op": "chat.post", "from": "zelda", "content": "hello"})).await;
    assert_eq!(posted["message"]["from"], "zelda");

    // The CLI: exit 10 without the token, and as another agent.
    let cli = |token: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(binary());
        cmd.args(args).env("MUSTER_URL", p.url("")).env_remove("MUSTER_AGENT").env_remove("MUSTER_TOKEN");
        if let Some(token) = token {
            cmd.env("MUSTER_TOKEN", token);
        }
        cmd.output().unwrap()
    };
    let out = cli(None, &["task", "list"]);
    assert_eq!(out.status.code(), Some(10), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires a token"));
    assert_eq!(cli(Some(&zelda), &["task", "list"]).status.code(), Some(0));
    assert_eq!(cli(Some(&zelda), &["chat", "post", "hi", "--as", "link"]).status.code(), Some(10));
    // From a file (--token-file, MUSTER_TOKEN_FILE): out of the command line and the
    // environment. An empty or missing file is a usage error, never a request without one.
    let file = root.path().join("zelda.token");
    std::fs::write(&file, format!("{zelda}\n")).unwrap();
    let from_file = |args: &[&str], env: bool| {
        let mut cmd = Command::new(binary());
        cmd.args(args).env("MUSTER_URL", p.url("")).env_remove("MUSTER_AGENT").env_remove("MUSTER_TOKEN");
        if env {
            cmd.env("MUSTER_TOKEN_FILE", &file);
        }
        cmd.output().unwrap()
    };
    let posted = from_file(&["chat", "post", "from a file", "--json"], true);
    assert_eq!(posted.status.code(), Some(0), "{}", String::from_utf8_lossy(&posted.stderr));
    assert!(String::from_utf8_lossy(&posted.stdout).contains(r#""from":"zelda""#));
    assert_eq!(from_file(&["task", "list", "--token-file", file.to_str().unwrap()], false).status.code(), Some(0));
    // Taking link's claim (T-1) away is a person's (the CLI says so, exit 10).
    let refused = from_file(&["task", "release", "T-1", "--force"], true);
    assert_eq!(refused.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("takes a person's token"));
    std::fs::write(&file, "\n").unwrap();
    let empty = from_file(&["task", "list"], true);
    assert_eq!(empty.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("is empty"));

    // Revoked: refused at once (the file is re-read within a second).
    let out = Command::new(binary()).args(["token", "remove", "zelda", "--data-dir"]).arg(&data).output().unwrap();
    assert!(out.status.success());
    let mut status = 0;
    for _ in 0..50 {
        status = call(&p, "GET", "/tasks", Some(&zelda), None).await.0;
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401, "a revoked token must stop working");

    // Tokens never reach the log.
    let log_path = p.log.clone();
    assert!(p.terminate().success());
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(!log.contains(&link) && !log.contains(&zelda), "a token was logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_issued_while_the_broker_runs_turns_tokens_on() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let p = Process::start(&data, &[], &[]);
    assert_eq!(call(&p, "POST", "/tasks", None, Some(json!({"title": "open"}))).await.0, 201);
    let token = issue(&data, "link", false);
    let mut status = 0;
    for _ in 0..50 {
        status = call(&p, "GET", "/tasks", None, None).await.0;
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401);
    assert_eq!(call(&p, "GET", "/tasks", Some(&token), None).await.0, 200);
}

#[test]
fn listening_beyond_loopback_without_tokens_is_refused_before_binding() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["serve", "--addr", "0.0.0.0:0", "--data-dir"])
        .arg(root.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no token is issued") && stderr.contains("--insecure"), "{stderr}");
    assert!(!stderr.contains("listening"), "it must not have listened: {stderr}");
}
