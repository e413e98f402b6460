//! Crash safety with the real binary: concurrent acknowledged writes, `kill -9` at a random
//! moment, restart on the same data dir, and check that nothing acknowledged is missing,
//! no task ever had two owners, and `seq` continues without a gap. Several rounds.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Process, split};
use rand::Rng;
use serde_json::{Value, json};

const ROUNDS: usize = 6;
const WRITERS: usize = 16;
const AGENTS: [&str; 6] = ["link", "zelda", "kai", "ganon", "impa", "navi"];

/// Everything the broker acknowledged (2xx) so far.
#[derive(Default)]
struct Acked {
    tasks: HashMap<String, String>,
    /// (task, agent, token)
    claims: Vec<(String, String, u64)>,
    completed: HashSet<String>,
    /// seq → content
    messages: HashMap<u64, String>,
}

async fn writer(base: String, round: usize, w: usize, acked: Arc<Mutex<Acked>>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut mine: Vec<(String, String, u64)> = Vec::new();
    for n in 0.. {
        let op = rand::rng().random_range(0..10);
        let agent = AGENTS[rand::rng().random_range(0..AGENTS.len())];
        let result = match op {
            0..=2 => {
                let title = format!("r{round}-w{w}-{n}");
                let r = http.post(format!("{base}/tasks")).body(json!({"title": title}).to_string()).send().await;
                let Ok(r) = r else { return };
                let (status, body) = split(r).await;
                if status == 201 {
                    acked.lock().unwrap().tasks.insert(body["task"]["id"].as_str().unwrap().to_owned(), title);
                }
                status
            }
            3..=5 => {
                let id = {
                    let a = acked.lock().unwrap();
                    if a.tasks.is_empty() {
                        continue;
                    }
                    let k = rand::rng().random_range(0..a.tasks.len());
                    a.tasks.keys().nth(k).cloned().unwrap()
                };
                let r = http
                    .post(format!("{base}/tasks/{id}/claim"))
                    .body(json!({"agent": agent}).to_string())
                    .send()
                    .await;
                let Ok(r) = r else { return };
                let (status, body) = split(r).await;
                if status == 200 {
                    let token = body["task"]["claim"]["token"].as_u64().unwrap();
                    acked.lock().unwrap().claims.push((id.clone(), agent.to_owned(), token));
                    mine.push((id, agent.to_owned(), token));
                }
                status
            }
            6..=7 => {
                let Some((id, agent, token)) = mine.pop() else {
                    continue;
                };
                let path = if op == 6 { "complete" } else { "release" };
                let r = http
                    .post(format!("{base}/tasks/{id}/{path}"))
                    .body(json!({"agent": agent, "token": token}).to_string())
                    .send()
                    .await;
                let Ok(r) = r else { return };
                let status = r.status().as_u16();
                if status == 200 && op == 6 {
                    acked.lock().unwrap().completed.insert(id);
                }
                status
            }
            _ => {
                let content = format!("@{agent} r{round} w{w} n{n}");
                let r = http
                    .post(format!("{base}/chat/messages"))
                    .body(json!({"from": "kai", "content": content}).to_string())
                    .send()
                    .await;
                let Ok(r) = r else { return };
                let (status, body) = split(r).await;
                if status == 201 {
                    acked.lock().unwrap().messages.insert(body["message"]["seq"].as_u64().unwrap(), content);
                }
                status
            }
        };
        assert!(matches!(result, 200 | 201 | 409 | 422), "unexpected status {result}");
    }
}

/// Reads the whole log, checking that it is gap-free and that claims never overlap.
async fn check_log(http: &reqwest::Client, base: &str) -> u64 {
    let mut since = 0;
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut last_token: HashMap<String, u64> = HashMap::new();
    loop {
        let r = http.get(format!("{base}/events?since={since}&limit=1000")).send().await.unwrap();
        let (_, page) = split(r).await;
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            assert_eq!(since, page["head"].as_u64().unwrap(), "the log ends at the head");
            return since;
        }
        for e in events {
            let seq = e["seq"].as_u64().unwrap();
            assert_eq!(seq, since + 1, "gap in the log after {since}");
            since = seq;
            let task = &e["data"]["task"];
            let Some(id) = task["id"].as_str() else {
                continue;
            };
            match e["type"].as_str().unwrap() {
                "task.claimed" => {
                    let agent = e["data"]["agent"].as_str().unwrap();
                    assert!(!owner.contains_key(id), "{id} claimed by {agent} while held by {}", owner[id]);
                    let token = task["claim"]["token"].as_u64().unwrap();
                    assert!(token > last_token.get(id).copied().unwrap_or(0), "{id}: token went back");
                    last_token.insert(id.to_owned(), token);
                    owner.insert(id.to_owned(), agent.to_owned());
                }
                _ if task["claim"].is_null() => {
                    owner.remove(id);
                }
                _ => {}
            }
        }
    }
}

async fn verify(p: &Process, acked: &Acked, last_head: u64) -> u64 {
    let http = reqwest::Client::new();
    let base = p.url("");
    let (_, board) = split(http.get(format!("{base}/tasks")).send().await.unwrap()).await;
    let tasks: HashMap<&str, &Value> =
        board["tasks"].as_array().unwrap().iter().map(|t| (t["id"].as_str().unwrap(), t)).collect();
    for (id, title) in &acked.tasks {
        let task = tasks.get(id.as_str()).unwrap_or_else(|| panic!("acknowledged task {id} is lost"));
        assert_eq!(task["title"], title.as_str());
    }
    for (id, agent, token) in &acked.claims {
        let last = tasks[id.as_str()]["lastToken"].as_u64().unwrap();
        assert!(last >= *token, "acknowledged claim of {id} by {agent} (token {token}) is lost: lastToken {last}");
    }
    for id in &acked.completed {
        assert_eq!(tasks[id.as_str()]["status"], "done", "acknowledged completion of {id} is lost");
    }
    let mut stored: HashMap<u64, String> = HashMap::new();
    let mut since = 0;
    loop {
        let r = http.get(format!("{base}/chat/messages?since={since}&limit=500")).send().await.unwrap();
        let (_, page) = split(r).await;
        let msgs = page["messages"].as_array().unwrap();
        let Some(last) = msgs.last() else { break };
        since = last["seq"].as_u64().unwrap();
        for m in msgs {
            stored.insert(m["seq"].as_u64().unwrap(), m["content"].as_str().unwrap().to_owned());
        }
    }
    for (seq, content) in &acked.messages {
        assert_eq!(stored.get(seq), Some(content), "acknowledged message {seq} is lost");
    }
    let head = check_log(&http, &base).await;
    assert!(head >= last_head, "head went back from {last_head} to {head}");
    head
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut head = 0;
    for round in 0..ROUNDS {
        let p = Process::start(&data, &[], &[]);
        head = rt.block_on(verify(&p, &acked.lock().unwrap(), head));
        let writers: Vec<_> = (0..WRITERS).map(|w| rt.spawn(writer(p.url(""), round, w, Arc::clone(&acked)))).collect();
        let run_for = rand::rng().random_range(200..900);
        std::thread::sleep(Duration::from_millis(run_for));
        p.kill9();
        for w in writers {
            rt.block_on(w).unwrap();
        }
        let a = acked.lock().unwrap();
        eprintln!(
            "round {round}: killed after {run_for} ms; acknowledged so far: {} tasks, {} claims, {} completions, {} messages",
            a.tasks.len(),
            a.claims.len(),
            a.completed.len(),
            a.messages.len()
        );
    }
    let p = Process::start(&data, &[], &[]);
    let a = acked.lock().unwrap();
    let head = rt.block_on(verify(&p, &a, head));
    assert!(a.tasks.len() > 50 && !a.messages.is_empty(), "the load generated too few writes to mean anything");
    // The sequence continues after the last restart.
    rt.block_on(async {
        let http = reqwest::Client::new();
        let (status, _) = split(http.post(p.url("/tasks")).body(r#"{"title":"after"}"#).send().await.unwrap()).await;
        assert_eq!(status, 201);
        let (_, page) = split(http.get(p.url(&format!("/events?since={head}"))).send().await.unwrap()).await;
        assert_eq!(page["events"][0]["seq"].as_u64(), Some(head + 1));
    });
}
