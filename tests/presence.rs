//! Presence from silence is pushed: an agent that goes quiet is announced idle, then stuck
//! (holding a `doing` task), then offline, each once, and active again on contact — as
//! `presence.changed` events over the WebSocket and SSE, on a manual clock.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Server;
use muster_client::{Client, Notice, Options};
use serde_json::{Value, json};

/// `(shown, stuck)` of link's presence events in `events`.
fn links(events: &[Value]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter(|e| e["type"] == "presence.changed" && e["data"]["agent"]["name"] == "link")
        .map(|e| {
            let agent = &e["data"]["agent"];
            (agent["shown"].as_str().unwrap_or("-").to_owned(), agent["stuck"].as_bool().unwrap_or(false))
        })
        .collect()
}

/// Reads an SSE stream until it has `n` events of link.
async fn sse(mut r: reqwest::Response, n: usize) -> Vec<Value> {
    let (mut buf, mut events) = (String::new(), Vec::new());
    while links(&events).len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk()).await.unwrap().unwrap().unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                events.push(serde_json::from_str(data).unwrap());
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn silence_is_pushed_idle_stuck_offline_once_each_and_contact_brings_active() {
    let s = Server::start_manual(|c| {
        c.idle_after = Duration::from_secs(60);
        c.stuck_after = Duration::from_secs(180);
        c.offline_after = Duration::from_secs(600);
        // The claim outlives the test: only presence changes.
        c.claim_lease = Duration::from_secs(3600);
    })
    .await;
    let (watcher, mut ws) = Client::connect(Options::new(s.url("")).topics(["presence"])).await.unwrap();
    let stream = s.http.get(s.url("/events/stream?topics=presence")).send().await.unwrap();
    let expected = [("active", false), ("idle", false), ("idle", true), ("offline", true), ("active", false)];
    let sse = tokio::spawn(sse(stream, expected.len()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // link claims a task over HTTP (no session: silence counts) and goes quiet.
    s.task("the long one").await;
    s.post("/tasks/T-1/claim", json!({"agent": "link"})).await;
    let in_log = |n: usize| move |v: &Value| links(v["events"].as_array().unwrap()).len() >= n;
    s.until("/events?topics=presence", in_log(1)).await;
    for (step, seen) in [(61, 2), (120, 3), (420, 4)] {
        s.advance(Duration::from_secs(step));
        s.until("/events?topics=presence", in_log(seen)).await;
    }
    // More silence changes nothing more: no event.
    s.advance(Duration::from_secs(600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.post("/presence/link", json!({})).await;

    let want: Vec<(String, bool)> = expected.iter().map(|(s, b)| ((*s).to_owned(), *b)).collect();
    let (_, log) = s.get("/events?topics=presence").await;
    assert_eq!(links(log["events"].as_array().unwrap()), want, "the log");
    let sse = sse.await.unwrap();
    assert_eq!(links(&sse), want, "SSE");
    let mut pushed = Vec::new();
    while links(&pushed).len() < want.len() {
        let notice = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap();
        if let Notice::Event(event) = notice {
            pushed.push(serde_json::to_value(&*event).unwrap());
        }
    }
    assert_eq!(links(&pushed), want, "WebSocket");
    // What GET /presence shows agrees with the last announcement.
    let (_, p) = s.get("/presence/link").await;
    assert_eq!((p["agent"]["status"].as_str(), p["agent"]["stuck"].as_bool()), (Some("active"), Some(false)));
    drop(watcher);
}
