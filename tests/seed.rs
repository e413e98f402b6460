//! The three requests of the seed article, typed by users exactly as printed there (only
//! the port differs), sent by the real `curl`: to a single broker, and to a cluster, each
//! request to another node.
#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use common::cluster::Cluster;
use serde_json::Value;

/// Runs one of the article's commands through a shell, with `localhost:4445` pointed at
/// the broker on `port`.
fn curl(port: u16, command: &str) -> Value {
    let command = command.replace("localhost:4445", &format!("localhost:{port}"));
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
    article(&[server.addr().port()]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_three_requests_of_the_article_work_verbatim_on_a_cluster() {
    let Some(cluster) = Cluster::start().await else { return };
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.as_ref().unwrap().addr.port()).collect();
    article(&ports).await;
}

/// The article's requests and what they answer, the n-th request sent to `ports[n % len]`:
/// on a cluster, each is read through another node than the write before it.
async fn article(ports: &[u16]) {
    let mut turn = 0;
    let mut next = || {
        turn += 1;
        ports[(turn - 1) % ports.len()]
    };
    let created = curl(
        next(),
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
    let presence = curl(next(), "curl localhost:4445/presence");
    assert_eq!(presence, serde_json::json!({ "agents": [] }));

    // Sent without a Content-Type header of JSON (curl -d says form-urlencoded).
    let posted = curl(
        next(),
        r#"curl -X POST localhost:4445/chat/messages \
  -d '{"from": "kai", "content": "@link PR #522 is green, merge it", "channel": "general"}'"#,
    );
    let message = &posted["message"];
    assert_eq!(message["from"], "kai");
    assert_eq!(message["channel"], "general");
    assert_eq!(message["mentions"], serde_json::json!(["link"]));

    // kai is now present, in the article's shape; link has the mention in its inbox.
    let presence = curl(next(), "curl localhost:4445/presence");
    let agents = presence["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["name"], "kai");
    assert_eq!(agents[0]["status"], "active");
    assert!(agents[0]["lastSeen"].as_str().unwrap().ends_with("s ago"), "{presence}");
    let inbox = curl(next(), "curl localhost:4445/inbox/link");
    assert_eq!(inbox["unread"], 1);
    assert_eq!(inbox["messages"][0]["content"], "@link PR #522 is green, merge it");
}
