//! The three requests of the seed article, typed by users exactly as printed there (only
//! the port differs), sent by the real `curl`.
#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use serde_json::Value;

/// Runs one of the article's commands through a shell, with `localhost:4445` pointed at
/// the test broker.
fn curl(server: &Server, command: &str) -> Value {
    let command = command.replace("localhost:4445", &format!("localhost:{}", server.addr.port()));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{command} -s -w '\\n%{{http_code}}'"))
        .output()
        .expect("run curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    assert!(status.starts_with('2'), "{command}\n=> {status} {body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{command}\n=> not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_three_requests_of_the_article_work_verbatim() {
    let server = Server::start().await;

    let created = curl(
        &server,
        r#"curl -X POST localhost:4445/tasks \
  -H "Content-Type: application/json" \
  -d '{"title": "Fix auth redirect", "assignee": "link", "priority": "P1"}'"#,
    );
    let task = &created["task"];
    assert_eq!(task["id"], "T-1");
    assert_eq!(task["title"], "Fix auth redirect");
    assert_eq!(task["assignee"], "link");
    assert_eq!(task["priority"], "P1");
    assert_eq!(task["status"], "todo");

    // Nobody has acted yet: the list is empty but has the article's shape.
    let presence = curl(&server, "curl localhost:4445/presence");
    assert_eq!(presence, serde_json::json!({ "agents": [] }));

    // Sent without a Content-Type header of JSON (curl -d says form-urlencoded).
    let posted = curl(
        &server,
        r#"curl -X POST localhost:4445/chat/messages \
  -d '{"from": "kai", "content": "@link PR #522 is green, merge it", "channel": "general"}'"#,
    );
    let message = &posted["message"];
    assert_eq!(message["from"], "kai");
    assert_eq!(message["channel"], "general");
    assert_eq!(message["mentions"], serde_json::json!(["link"]));

    // kai is now present, in the article's shape; link has the mention in its inbox.
    let presence = curl(&server, "curl localhost:4445/presence");
    let agents = presence["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["name"], "kai");
    assert_eq!(agents[0]["status"], "active");
    assert!(agents[0]["lastSeen"].as_str().unwrap().ends_with("s ago"), "{presence}");
    let (_, inbox) = server.get("/inbox/link").await;
    assert_eq!(inbox["unread"], 1);
    assert_eq!(inbox["messages"][0]["content"], "@link PR #522 is green, merge it");
}
