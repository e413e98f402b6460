//! Tasks finished long ago: the broker keeps only the unfinished and the last
//! `FINISHED_KEPT` finished tasks in memory; older ones are read back from disk, listed by
//! page, and decided on again (reopened, refused, part of a dependency chain) exactly as if
//! they had stayed, before and after a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::Server;
use muster::core::FINISHED_KEPT;
use serde_json::{Value, json};

/// Finished tasks beyond what memory keeps.
const OLD: usize = 150;

/// Creates `n` tasks titled `prefix i` and cancels each, eight at a time; their ids.
async fn cancelled_tasks(s: &Server, prefix: &str, n: usize) -> Vec<String> {
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (url, prefix) = (s.url(""), prefix.to_owned());
        workers.spawn(async move {
            let http = reqwest::Client::new();
            let mut ids = Vec::new();
            for i in (w..n).step_by(8) {
                let created = http.post(format!("{url}/tasks")).json(&json!({"title": format!("{prefix} {i}")}));
                let body: Value = created.send().await.unwrap().json().await.unwrap();
                let id = body["task"]["id"].as_str().unwrap().to_owned();
                let cancel =
                    http.patch(format!("{url}/tasks/{id}")).json(&json!({"status": "cancelled", "agent": "ann"}));
                let response = cancel.send().await.unwrap();
                assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
                ids.push(id);
            }
            ids
        });
    }
    workers.join_all().await.concat()
}

/// A gauge or counter from `/metrics`.
async fn metric(s: &Server, line: &str) -> u64 {
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let value = text.lines().find_map(|l| l.strip_prefix(line)).unwrap_or_else(|| panic!("{line} in {text}"));
    value.trim().parse().unwrap()
}

/// Every page of `path` (with a `?`), following `next`; the ids in the order seen.
async fn walk(s: &Server, path: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut url = path.to_owned();
    loop {
        let (status, page) = s.get(&url).await;
        assert_eq!(status, 200, "{url}: {page}");
        ids.extend(page["tasks"].as_array().unwrap().iter().map(number));
        match page["next"].as_str() {
            Some(next) => url = format!("{path}&cursor={next}"),
            None => return ids,
        }
    }
}

fn number(task: &Value) -> u64 {
    task["id"].as_str().unwrap().trim_start_matches("T-").parse().unwrap()
}

#[tokio::test]
async fn tasks_finished_long_ago_are_read_from_disk_and_decided_on_as_before() {
    let s = Server::start().await;
    // T-1 stays open; T-2 waits on it and is cancelled first, so it is the first one memory
    // lets go of.
    let open = s.task("still open").await;
    let (status, body) = s.post("/tasks", json!({"title": "waits on T-1", "blockedBy": [open]})).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = s.patch("/tasks/T-2", json!({"status": "cancelled", "agent": "ann"})).await;
    assert_eq!(status, 200);
    cancelled_tasks(&s, "old", FINISHED_KEPT + OLD).await;
    let total = (FINISHED_KEPT + OLD + 2) as u64;

    // Memory holds the open task and the last FINISHED_KEPT finished ones; the counts still
    // see every task.
    assert_eq!(metric(&s, "muster_tasks_in_memory ").await, FINISHED_KEPT as u64 + 1);
    assert_eq!(metric(&s, "muster_tasks{status=\"cancelled\"} ").await, total - 1);
    assert_eq!(metric(&s, "muster_tasks{status=\"todo\"} ").await, 1);

    // By id: an old task reads as it was stored.
    let (status, body) = s.get("/tasks/T-2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["status"], "cancelled");
    assert_eq!(body["task"]["blockedBy"], json!(["T-1"]));
    let (status, body) = s.get(&format!("/tasks/T-{}", total + 1)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");

    // By page: every cancelled task once, in id order, both ways; the board's default page
    // keeps its 100 recently finished.
    let cancelled = walk(&s, "/tasks?status=cancelled&limit=97").await;
    assert_eq!(cancelled, (2..=total).collect::<Vec<_>>());
    let all_desc = walk(&s, "/tasks?all=true&order=desc&limit=500").await;
    assert_eq!(all_desc, (1..=total).rev().collect::<Vec<_>>());
    let (_, board) = s.get("/tasks").await;
    let board: Vec<u64> = board["tasks"].as_array().unwrap().iter().map(number).collect();
    assert_eq!(board.len(), 101, "{board:?}");
    assert_eq!(board[0], 1);

    // Decided on again: an old cancelled task is refused a claim as a recent one is...
    let (old_status, old_refusal) = s.post("/tasks/T-3/claim", json!({"agent": "ann"})).await;
    let (new_status, new_refusal) = s.post(&format!("/tasks/T-{total}/claim"), json!({"agent": "ann"})).await;
    assert_eq!(old_status, new_status, "{old_refusal} vs {new_refusal}");
    assert_eq!(old_refusal["error"]["code"], new_refusal["error"]["code"]);
    assert!(old_refusal["error"]["message"].as_str().unwrap().contains("T-3"), "{old_refusal}");
    // ... a dependency cycle through an old task is refused (T-2 waits on T-1) ...
    let (status, body) = s.patch("/tasks/T-1", json!({"blockedBy": ["T-2"]})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["field"], "blockedBy[0]", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("cycle"), "{body}");
    // ... and one reopens, is claimed, and is done.
    let (status, body) = s.patch("/tasks/T-4", json!({"status": "todo", "agent": "ann"})).await;
    assert_eq!((status, body["task"]["status"].as_str()), (200, Some("todo")), "{body}");
    let (status, body) = s.post("/tasks/T-4/claim", json!({"agent": "ann"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.post("/tasks/T-4/complete", json!({"agent": "ann"})).await;
    assert_eq!((status, body["task"]["status"].as_str()), (200, Some("done")), "{body}");
    assert_eq!(metric(&s, "muster_tasks{status=\"done\"} ").await, 1);
    assert_eq!(metric(&s, "muster_tasks{status=\"cancelled\"} ").await, total - 2);

    // After a restart: the same tasks, the same counts, the same bound on memory.
    let dir = s.stop().await;
    let s = Server::start_in(dir, |_| {}).await;
    assert_eq!(metric(&s, "muster_tasks_in_memory ").await, FINISHED_KEPT as u64 + 1);
    assert_eq!(metric(&s, "muster_tasks{status=\"done\"} ").await, 1);
    assert_eq!(metric(&s, "muster_tasks{status=\"cancelled\"} ").await, total - 2);
    let (_, body) = s.get("/tasks/T-4").await;
    assert_eq!(body["task"]["status"], "done");
    let (_, body) = s.get("/tasks/T-5").await;
    assert_eq!(body["task"]["status"], "cancelled");
    assert_eq!(walk(&s, "/tasks?all=true&limit=500").await, (1..=total).collect::<Vec<_>>());
    let (status, body) = s.post("/tasks", json!({"title": "after the restart"})).await;
    assert_eq!((status, body["task"]["id"].as_str()), (201, Some(format!("T-{}", total + 1).as_str())), "{body}");
}

#[tokio::test]
async fn a_walk_of_every_task_while_old_ones_change_returns_each_once() {
    let s = Server::start().await;
    let before = cancelled_tasks(&s, "old", FINISHED_KEPT + OLD).await.len() as u64;
    // While the walk goes on: new tasks are created and cancelled (letting more old ones
    // go), and old ones are reopened (read back into memory).
    let writer = {
        let url = s.url("");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..80u64 {
                let created = http.post(format!("{url}/tasks")).json(&json!({"title": format!("new {i}")}));
                let body: Value = created.send().await.unwrap().json().await.unwrap();
                let id = body["task"]["id"].as_str().unwrap().to_owned();
                let cancel =
                    http.patch(format!("{url}/tasks/{id}")).json(&json!({"status": "cancelled", "agent": "ann"}));
                assert!(cancel.send().await.unwrap().status().is_success());
                let reopen =
                    http.patch(format!("{url}/tasks/T-{}", 1 + i * 7)).json(&json!({"status": "todo", "agent": "ann"}));
                assert!(reopen.send().await.unwrap().status().is_success());
            }
        })
    };
    let mut walks = Vec::new();
    while !writer.is_finished() || walks.is_empty() {
        walks.push(walk(&s, "/tasks?all=true&limit=37").await);
    }
    writer.await.unwrap();
    for ids in walks {
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "a task appeared twice");
        assert!((1..=before).all(|id| unique.contains(&id)), "a task that existed throughout was missed");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "not in id order");
    }
}
