//! Crash safety with the real binary: concurrent acknowledged writes (tasks, claims,
//! completions, releases, chat, task comments, presence) in two workspaces, a WebSocket
//! subscriber of each, `kill -9` at a random moment, restart on the same data dir and address, and check that nothing acknowledged
//! is missing, no task ever had two owners, fencing tokens never went back, `seq` continues
//! without a gap, and the subscriber, resuming after every restart, saw every event exactly
//! once. Six rounds by default; `MUSTER_CRASH_ROUNDS=100` for the long run. The same under a
//! load of file reservations: every acknowledged one survives, and the log never granted two
//! overlapping ones where either was exclusive.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Process, split};
use muster_client::{Client, Notice, Options};
use rand::Rng;
use serde_json::{Value, json};

/// Kill rounds unless `MUSTER_CRASH_ROUNDS` says otherwise.
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
    /// task → (seq → content)
    comments: HashMap<String, HashMap<u64, String>>,
}

async fn writer(base: String, round: usize, w: usize, acked: Arc<Mutex<Acked>>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut mine: Vec<(String, String, u64)> = Vec::new();
    for n in 0.. {
        let op = rand::rng().random_range(0..11);
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
            10 => {
                let r = http
                    .post(format!("{base}/presence/{agent}"))
                    .body(json!({"status": "busy", "note": format!("r{round} n{n}")}).to_string())
                    .send()
                    .await;
                let Ok(r) = r else { return };
                r.status().as_u16()
            }
            9 => {
                let id = {
                    let a = acked.lock().unwrap();
                    if a.tasks.is_empty() {
                        continue;
                    }
                    let k = rand::rng().random_range(0..a.tasks.len());
                    a.tasks.keys().nth(k).cloned().unwrap()
                };
                let content = format!("@{agent} on {id}: r{round} w{w} n{n}");
                let r = http
                    .post(format!("{base}/tasks/{id}/comments"))
                    .body(json!({"from": "kai", "content": content}).to_string())
                    .send()
                    .await;
                let Ok(r) = r else { return };
                let (status, body) = split(r).await;
                if status == 201 {
                    let seq = body["message"]["seq"].as_u64().unwrap();
                    acked.lock().unwrap().comments.entry(id).or_default().insert(seq, content);
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

/// Checks what the workspace at `base` holds against what it acknowledged.
async fn verify(base: &str, acked: &Acked, last_head: u64) -> u64 {
    let http = reqwest::Client::new();
    let board = common::all_tasks(base).await;
    let tasks: HashMap<&str, &Value> = board.iter().map(|t| (t["id"].as_str().unwrap(), t)).collect();
    for (id, title) in &acked.tasks {
        let task = tasks.get(id.as_str()).unwrap_or_else(|| panic!("acknowledged task {id} is lost"));
        assert_eq!(task["title"], title.as_str());
    }
    for (id, agent, token) in &acked.claims {
        let last = tasks[id.as_str()]["lastToken"].as_u64().unwrap();
        assert!(last >= *token, "acknowledged claim of {id} by {agent} (token {token}) is lost: lastToken {last}");
    }
    for id in &acked.completed {
        if tasks[id.as_str()]["status"] != "done" {
            // Whether the log lost it or the views did: the task's events say.
            let r = http.get(format!("{base}/events?topics=task:{id}&limit=1000")).send().await.unwrap();
            let (_, events) = split(r).await;
            panic!(
                "acknowledged completion of {id} is lost: the board has {}; its events: {events}",
                tasks[id.as_str()]
            );
        }
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
    for (id, comments) in &acked.comments {
        let mut stored: HashMap<u64, String> = HashMap::new();
        let mut cursor = String::new();
        loop {
            let r = http.get(format!("{base}/tasks/{id}/comments?limit=500&cursor={cursor}")).send().await.unwrap();
            let (_, page) = split(r).await;
            for m in page["messages"].as_array().unwrap() {
                stored.insert(m["seq"].as_u64().unwrap(), m["content"].as_str().unwrap().to_owned());
            }
            match page["next"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => break,
            }
        }
        for (seq, content) in comments {
            assert_eq!(stored.get(seq), Some(content), "acknowledged comment {seq} on {id} is lost");
        }
    }
    let head = common::check_log(&http, base).await;
    assert!(head >= last_head, "head went back from {last_head} to {head}");
    head
}

/// A client subscribed to everything of `workspace` for the whole run, resuming after each
/// restart; keeps the `seq` of every event it receives.
async fn subscribe_all(url: String, workspace: &'static str, seen: Arc<Mutex<Vec<u64>>>) {
    let options = Options::new(url).workspace(workspace).topics(["*"]);
    let (_client, mut events) = Client::connect(options).await.unwrap();
    while let Some(notice) = events.next().await {
        match notice {
            Notice::Event(e) => seen.lock().unwrap().push(e.seq),
            Notice::Resumed { .. } => {}
            Notice::Resync { head, .. } => panic!("the subscriber could not resume (head {head})"),
        }
    }
}

/// The two workspaces the writers write to, and their routes' prefixes: each is checked
/// against what it acknowledged, on its own `seq`.
const WORKSPACES: [(&str, &str); 2] = [("default", ""), ("b", "/w/b")];

#[test]
fn acknowledged_writes_survive_kill_9() {
    let rounds = std::env::var("MUSTER_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(ROUNDS);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // One address for every restart (the one the first broker got), so that the subscribers
    // reconnect by themselves.
    let mut addr: Option<String> = None;
    let acked: [Arc<Mutex<Acked>>; 2] = Default::default();
    let seen: [Arc<Mutex<Vec<u64>>>; 2] = Default::default();
    let mut head = [0; 2];
    for round in 0..rounds {
        let p = match &addr {
            Some(addr) => Process::start_at(&data, addr, &[], &[]),
            None => Process::start(&data, &[], &[]),
        };
        addr.get_or_insert_with(|| p.addr.to_string());
        if round == 0 {
            rt.block_on(async {
                let r = reqwest::Client::new().post(p.url("/workspaces")).body(r#"{"name":"b"}"#).send().await;
                assert_eq!(r.unwrap().status(), 201);
            });
            for (i, (workspace, _)) in WORKSPACES.iter().enumerate() {
                rt.spawn(subscribe_all(p.url(""), workspace, Arc::clone(&seen[i])));
            }
        }
        let mut writers = Vec::new();
        for (i, (_, prefix)) in WORKSPACES.iter().enumerate() {
            head[i] = rt.block_on(verify(&p.url(prefix), &acked[i].lock().unwrap(), head[i]));
            for w in 0..WRITERS / 2 {
                writers.push(rt.spawn(writer(p.url(prefix), round, w, Arc::clone(&acked[i]))));
            }
        }
        let run_for = rand::rng().random_range(200..900);
        std::thread::sleep(Duration::from_millis(run_for));
        p.kill9();
        for w in writers {
            rt.block_on(w).unwrap();
        }
        for (i, (workspace, _)) in WORKSPACES.iter().enumerate() {
            let a = acked[i].lock().unwrap();
            eprintln!(
                "round {round}, {workspace}: killed after {run_for} ms; acknowledged so far: {} tasks, {} claims, {} \
                 completions, {} messages, {} comments",
                a.tasks.len(),
                a.claims.len(),
                a.completed.len(),
                a.messages.len(),
                a.comments.values().map(HashMap::len).sum::<usize>()
            );
        }
    }
    let p = match &addr {
        Some(addr) => Process::start_at(&data, addr, &[], &[]),
        None => Process::start(&data, &[], &[]),
    };
    for (i, (workspace, prefix)) in WORKSPACES.iter().enumerate() {
        let a = acked[i].lock().unwrap();
        let head = rt.block_on(verify(&p.url(prefix), &a, head[i]));
        // The subscriber caught up: every event of its workspace's log, once each, in order.
        for _ in 0..200 {
            if seen[i].lock().unwrap().last().copied().unwrap_or(0) >= head {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let seen = seen[i].lock().unwrap().clone();
        let expected: Vec<u64> = (1..=head).collect();
        assert!(seen.len() >= expected.len(), "{workspace}: the subscriber saw {} of {head} events", seen.len());
        assert_eq!(&seen[..expected.len()], &expected[..], "{workspace}: the subscriber missed or repeated events");
        eprintln!(
            "{workspace}: {rounds} kills survived; checked {} tasks, {} claims, {} completions, {} messages, {head} \
             events (the subscriber saw each once)",
            a.tasks.len(),
            a.claims.len(),
            a.completed.len(),
            a.messages.len()
        );
        assert!(a.tasks.len() > 25 && !a.messages.is_empty(), "{workspace}: too few writes to mean anything");
        // The sequence continues after the last restart.
        rt.block_on(async {
            let http = reqwest::Client::new();
            let created = http.post(p.url(&format!("{prefix}/tasks"))).body(r#"{"title":"after"}"#).send().await;
            assert_eq!(split(created.unwrap()).await.0, 201);
            let (_, page) =
                split(http.get(p.url(&format!("{prefix}/events?since={head}"))).send().await.unwrap()).await;
            assert_eq!(page["events"][0]["seq"].as_u64(), Some(head + 1));
        });
    }
}

/// What one reservation writer holds, as the broker acknowledged it: id → (agent, pattern).
type Held = HashMap<String, (String, String)>;

/// Patterns for the reservation load: some meet (`src/**` and `src/a{k}.rs`), most do not.
fn reservation_pattern(rng: &mut impl Rng) -> String {
    let k = rng.random_range(0..24);
    match rng.random_range(0..6) {
        0 => "src/**".to_owned(),
        1 => format!("src/a{k}.rs"),
        2 => format!("area{k}/**"),
        3 => format!("area{k}/*.rs"),
        4 => "*.lock".to_owned(),
        _ => format!("docs/d{k}.md"),
    }
}

/// One agent reserving and releasing until the broker dies; what it was acknowledged goes
/// into `held` (a release whose answer was lost makes its reservations uncertain: dropped).
async fn reservation_writer(base: String, w: usize, held: Arc<Mutex<Held>>, grants: Arc<AtomicUsize>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let agent = format!("agent-{w}");
    loop {
        let release = rand::rng().random_bool(0.35);
        let mine: Vec<(String, String)> = held
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (a, _))| *a == agent)
            .map(|(id, (_, p))| (id.clone(), p.clone()))
            .collect();
        if release && let Some((_, pattern)) = mine.first() {
            let body = json!({ "repo": "app", "agent": agent, "patterns": [pattern] });
            let sent = http.post(format!("{base}/files/release")).body(body.to_string()).send().await;
            let mut h = held.lock().unwrap();
            h.retain(|_, (a, p)| !(*a == agent && p == pattern));
            let Ok(r) = sent else { return };
            assert_eq!(r.status(), 200);
            continue;
        }
        let patterns: Vec<String> = {
            let mut rng = rand::rng();
            (0..rng.random_range(1..3)).map(|_| reservation_pattern(&mut rng)).collect()
        };
        let body = json!({ "repo": "app", "agent": agent, "patterns": patterns });
        let Ok(r) = http.post(format!("{base}/files/reserve")).body(body.to_string()).send().await else { return };
        let (status, body) = split(r).await;
        match status {
            200 => {
                grants.fetch_add(1, Ordering::Relaxed);
                let mut h = held.lock().unwrap();
                for r in body["reservations"].as_array().unwrap() {
                    let id = r["id"].as_str().unwrap().to_owned();
                    h.insert(id, (agent.clone(), r["pattern"].as_str().unwrap().to_owned()));
                }
            }
            409 => assert!(!body["error"]["conflicts"].as_array().unwrap().is_empty(), "{body}"),
            other => panic!("reserve: unexpected {other}: {body}"),
        }
    }
}

/// Every acknowledged reservation is held, and the log never granted two agents overlapping
/// reservations where one was exclusive.
async fn verify_reservations(p: &Process, held: &Held) -> usize {
    use muster_protocol::glob::Glob;
    let http = reqwest::Client::new();
    let (_, now) = split(http.get(p.url("/files")).send().await.unwrap()).await;
    let now: HashMap<&str, &Value> =
        now["reservations"].as_array().unwrap().iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
    for (id, (agent, pattern)) in held {
        let r = now
            .get(id.as_str())
            .unwrap_or_else(|| panic!("acknowledged reservation {id} ({agent}: {pattern}) is lost"));
        assert_eq!((r["agent"].as_str(), r["pattern"].as_str()), (Some(agent.as_str()), Some(pattern.as_str())));
    }
    let mut live: HashMap<String, Value> = HashMap::new();
    let mut since = 0;
    loop {
        let url = p.url(&format!("/events?since={since}&limit=1000&topics=files"));
        let (_, page) = split(http.get(url).send().await.unwrap()).await;
        let events = page["events"].as_array().unwrap();
        let Some(last) = events.last() else { break };
        since = last["seq"].as_u64().unwrap();
        for e in events {
            let rs = e["data"]["reservations"].as_array().unwrap();
            if e["type"] == "files.released" {
                rs.iter().for_each(|r| drop(live.remove(r["id"].as_str().unwrap())));
                continue;
            }
            for r in rs {
                let g = Glob::parse(r["pattern"].as_str().unwrap()).unwrap();
                for other in live.values().filter(|o| o["agent"] != r["agent"]) {
                    if r["exclusive"] == true || other["exclusive"] == true {
                        let overlap = g.overlap(&Glob::parse(other["pattern"].as_str().unwrap()).unwrap());
                        assert!(overlap.is_none(), "{r} was granted over {other}: both match {overlap:?}");
                    }
                }
                live.insert(r["id"].as_str().unwrap().to_owned(), r.clone());
            }
        }
    }
    assert_eq!(live.len(), now.len(), "the log and the reservations held agree");
    now.len()
}

#[test]
fn acknowledged_reservations_survive_kill_9_and_never_overlap() {
    let rounds = std::env::var("MUSTER_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(4);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let held = Arc::new(Mutex::new(Held::new()));
    let grants = Arc::new(AtomicUsize::new(0));
    for round in 0..=rounds {
        let p = Process::start(&data, &[], &[]);
        let live = rt.block_on(verify_reservations(&p, &held.lock().unwrap()));
        if round == rounds {
            let granted = grants.load(Ordering::Relaxed);
            eprintln!(
                "{rounds} kills survived under reservation load: {granted} reservations granted, {live} held at the \
                 end, every acknowledged one among them"
            );
            assert!(granted > 20, "the load granted too few reservations to mean anything ({granted})");
            break;
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| rt.spawn(reservation_writer(p.url(""), w, Arc::clone(&held), Arc::clone(&grants))))
            .collect();
        std::thread::sleep(Duration::from_millis(rand::rng().random_range(200..700)));
        p.kill9();
        for w in writers {
            rt.block_on(w).unwrap();
        }
    }
}
