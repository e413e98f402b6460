//! File reservations over the real broker: a race of 32 agents, the ends that come by
//! themselves (with the task's claim, the TTL, the holder gone), a restart, and bad input.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Server, Ws, split};
use muster_protocol::glob::Glob;
use serde_json::{Value, json};

const AGENTS: usize = 32;

/// Globs that overlap each other in many ways.
const POOL: [&str; 16] = [
    "src/**",
    "src/auth/**",
    "src/auth/session.rs",
    "src/*.rs",
    "*.rs",
    "docs/**",
    "docs/api.md",
    "*.md",
    "Cargo.lock",
    "*.lock",
    "tests/**",
    "tests/auth.rs",
    "src/api/*.rs",
    "src/api/routes.rs",
    "README.md",
    "assets/**",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_racing_for_overlapping_globs_get_disjoint_reservations_and_refusals_naming_a_holder() {
    let s = Server::start().await;
    let mut racers = Vec::new();
    for a in 0..AGENTS {
        let (http, base) = (reqwest::Client::new(), s.url(""));
        racers.push(tokio::spawn(async move {
            let agent = format!("agent-{a}");
            let mut results = Vec::new();
            // Three requests of two or three patterns each, different for every agent.
            for round in 0..3 {
                let n = 2 + (a + round) % 2;
                let patterns: Vec<&str> = (0..n).map(|k| POOL[(a * 5 + round * 3 + k * 7) % POOL.len()]).collect();
                let body = json!({ "repo": "app", "patterns": patterns, "agent": agent });
                let r = http.post(format!("{base}/files/reserve")).body(body.to_string()).send().await.unwrap();
                let (status, body) = split(r).await;
                results.push((agent.clone(), patterns, status, body));
            }
            results
        }));
    }
    let mut granted: Vec<Value> = Vec::new();
    let mut refused = Vec::new();
    for racer in racers {
        for (agent, patterns, status, body) in racer.await.unwrap() {
            match status {
                200 => {
                    let got = body["reservations"].as_array().unwrap();
                    assert_eq!(got.len(), patterns.iter().collect::<HashSet<_>>().len(), "all of it: {body}");
                    granted.extend(got.iter().cloned());
                }
                409 => refused.push((agent, patterns, body)),
                other => panic!("{agent} {patterns:?}: unexpected {other} {body}"),
            }
        }
    }
    assert!(!granted.is_empty() && !refused.is_empty(), "the pool must produce both outcomes");

    // What was granted is what is held, and no two agents' reservations overlap.
    let (_, held) = s.get("/files?repo=app").await;
    let ids = |list: &[Value]| list.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect::<HashSet<_>>();
    assert_eq!(ids(held["reservations"].as_array().unwrap()), ids(&granted));
    let glob = |r: &Value| Glob::parse(r["pattern"].as_str().unwrap()).unwrap();
    for (i, a) in granted.iter().enumerate() {
        for b in &granted[i + 1..] {
            if a["agent"] != b["agent"] {
                let overlap = glob(a).overlap(&glob(b));
                assert!(overlap.is_none(), "{a} and {b} were both granted, and overlap on {overlap:?}");
            }
        }
    }

    // Every refusal names a granted holder whose pattern overlaps, with a path both match.
    let by_id: HashMap<&str, &Value> = granted.iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
    for (agent, patterns, body) in &refused {
        let error = &body["error"];
        assert_eq!(error["code"], "conflict", "{body}");
        let conflicts = error["conflicts"].as_array().unwrap();
        assert!(!conflicts.is_empty(), "{body}");
        for c in conflicts {
            let holder = &c["holder"];
            let id = holder["id"].as_str().unwrap();
            assert_eq!(by_id.get(id).copied(), Some(holder), "{agent} was refused by {holder}, which is not held");
            assert_ne!(holder["agent"], agent.as_str());
            let (pattern, witness) = (c["pattern"].as_str().unwrap(), c["witness"].as_str().unwrap());
            assert!(patterns.contains(&pattern), "{agent} asked for {patterns:?}, not {pattern}");
            assert!(Glob::parse(pattern).unwrap().matches(witness), "{pattern} does not match {witness}");
            assert!(glob(holder).matches(witness), "{holder} does not match {witness}");
            assert!(error["message"].as_str().unwrap().contains(holder["agent"].as_str().unwrap()), "{body}");
        }
    }
}

/// A WebSocket observer of the `files` topic.
async fn watcher(s: &Server) -> Ws {
    let mut ws = Ws::connect(s.addr()).await;
    ws.hello(json!({ "topics": ["files"] })).await;
    ws
}

/// The next `files.released` event: (holder, by, reason, patterns).
async fn next_release(ws: &mut Ws) -> (String, Value, String, Vec<String>) {
    let event = ws.until("files.released").await.pop().unwrap();
    let d = &event["data"];
    let patterns = d["reservations"].as_array().unwrap().iter().map(|r| r["pattern"].as_str().unwrap().to_owned());
    (
        d["agent"].as_str().unwrap().to_owned(),
        d["by"].clone(),
        d["reason"].as_str().unwrap().to_owned(),
        patterns.collect(),
    )
}

async fn reserve(s: &Server, agent: &str, patterns: &[&str], task: Option<&str>) -> (u16, Value) {
    s.post("/files/reserve", json!({ "repo": "app", "patterns": patterns, "task": task, "agent": agent })).await
}

#[tokio::test(flavor = "multi_thread")]
async fn reservations_end_with_their_task_their_ttl_and_their_holder() {
    let s = Server::start_manual(|_| {}).await;
    let mut ws = watcher(&s).await;

    // Completing the task releases its reservations.
    let t1 = s.task("auth").await;
    assert_eq!(s.post(&format!("/tasks/{t1}/claim"), json!({ "agent": "link" })).await.0, 200);
    let (status, body) = reserve(&s, "link", &["src/auth/**"], Some(&t1)).await;
    assert_eq!(status, 200, "{body}");
    let reserved = ws.until("files.reserved").await.pop().unwrap();
    assert_eq!(reserved["data"]["reservations"][0]["task"], t1.as_str(), "{reserved}");
    assert_eq!(s.post(&format!("/tasks/{t1}/complete"), json!({ "agent": "link" })).await.0, 200);
    assert_eq!(
        next_release(&mut ws).await,
        ("link".into(), json!("link"), "task_ended".into(), vec!["src/auth/**".into()])
    );

    // So does releasing the task.
    let t1b = s.task("auth again").await;
    assert_eq!(s.post(&format!("/tasks/{t1b}/claim"), json!({ "agent": "link" })).await.0, 200);
    assert_eq!(reserve(&s, "link", &["src/auth/**"], Some(&t1b)).await.0, 200);
    assert_eq!(s.post(&format!("/tasks/{t1b}/release"), json!({ "agent": "link" })).await.0, 200);
    assert_eq!(
        next_release(&mut ws).await,
        ("link".into(), json!("link"), "task_ended".into(), vec!["src/auth/**".into()])
    );

    // A release forced by a person releases them too.
    let t2 = s.task("api").await;
    s.post(&format!("/tasks/{t2}/claim"), json!({ "agent": "link" })).await;
    assert_eq!(reserve(&s, "link", &["src/api/**"], Some(&t2)).await.0, 200);
    let forced = s.post(&format!("/tasks/{t2}/release"), json!({ "agent": "ana", "force": true })).await;
    assert_eq!(forced.0, 200, "{}", forced.1);
    assert_eq!(
        next_release(&mut ws).await,
        ("link".into(), json!("ana"), "task_ended".into(), vec!["src/api/**".into()])
    );

    // An agent whose session closes keeps them for the grace, then loses them all.
    let mut kai = Ws::connect(s.addr()).await;
    kai.hello(json!({ "agent": "kai" })).await;
    let t3 = s.task("docs").await;
    kai.ok(json!({ "op": "task.claim", "task": t3 })).await;
    kai.ok(json!({ "op": "files.reserve", "repo": "app", "patterns": ["docs/**"], "task": t3 })).await;
    kai.ok(json!({ "op": "files.reserve", "repo": "app", "patterns": ["README.md"] })).await;
    drop(kai);
    s.until("/presence/kai", |p| p["agent"]["connections"] == 0).await;
    s.advance(Duration::from_secs(4 * 60));
    let (_, held) = s.get("/files?agent=kai").await;
    assert_eq!(held["reservations"].as_array().unwrap().len(), 2, "within the grace: {held}");
    s.advance(Duration::from_secs(61));
    let (who, by, reason, mut patterns) = next_release(&mut ws).await;
    patterns.sort();
    assert_eq!((who.as_str(), by, reason.as_str()), ("kai", Value::Null, "owner_gone"));
    assert_eq!(patterns, ["README.md", "docs/**"]);
    let (_, task) = s.get(&format!("/tasks/{t3}")).await;
    assert_eq!(task["task"]["claim"], Value::Null, "and its claim");

    // A reservation without a task ends with its TTL, unless renewed.
    let ttl = json!({ "repo": "app", "patterns": ["notes/**"], "agent": "zelda", "ttlSeconds": 600 });
    assert_eq!(s.post("/files/reserve", ttl.clone()).await.0, 200);
    s.advance(Duration::from_secs(500));
    s.post("/presence/zelda", json!({})).await; // in contact: the lease does not end it
    let (_, renewed) = s.post("/files/reserve", ttl).await;
    s.advance(Duration::from_secs(500));
    let (_, held) = s.get("/files?agent=zelda").await;
    assert_eq!(held["reservations"][0]["id"], renewed["reservations"][0]["id"], "renewed, not expired: {held}");
    s.advance(Duration::from_secs(101));
    assert_eq!(next_release(&mut ws).await, ("zelda".into(), Value::Null, "expired".into(), vec!["notes/**".into()]));
    let (_, held) = s.get("/files").await;
    assert_eq!(held["reservations"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn reservations_and_their_numbering_survive_a_restart() {
    let s = Server::start().await;
    assert_eq!(reserve(&s, "link", &["src/**", "Cargo.lock"], None).await.0, 200);
    let (_, released) =
        s.post("/files/release", json!({ "repo": "app", "agent": "link", "patterns": ["Cargo.lock"] })).await;
    assert_eq!(released["reservations"][0]["id"], "R-2", "{released}");
    let dir = s.stop().await;

    let s = Server::start_in(dir, |_| {}).await;
    let (_, held) = s.get("/files").await;
    assert_eq!(held["reservations"].as_array().unwrap().len(), 1, "{held}");
    assert_eq!(held["reservations"][0]["pattern"], "src/**");
    let (status, body) = reserve(&s, "zelda", &["src/main.rs"], None).await;
    assert_eq!(status, 409, "still held after the restart: {body}");
    let (_, next) = reserve(&s, "zelda", &["docs/**"], None).await;
    assert_eq!(next["reservations"][0]["id"], "R-3", "ids are never reused: {next}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_reservation_requests_are_refused_naming_the_field() {
    let s = Server::start().await;
    let cases = [
        (json!({ "patterns": ["a"], "agent": "link" }), "repo"),
        (json!({ "repo": "app", "agent": "link" }), "patterns"),
        (json!({ "repo": "app", "patterns": [], "agent": "link" }), "patterns"),
        (json!({ "repo": "app", "patterns": ["ok", "../up"], "agent": "link" }), "patterns[1]"),
        (json!({ "repo": "app", "patterns": ["[abc"], "agent": "link" }), "patterns[0]"),
        (json!({ "repo": "app", "patterns": ["a"], "agent": "link", "ttlSeconds": 0 }), "ttlSeconds"),
        (json!({ "repo": "app", "patterns": ["a"], "agent": "link", "shared": "yes" }), "shared"),
        (json!({ "repo": "app", "patterns": ["a"], "agent": "link", "task": "nope" }), "task"),
        (json!({ "repo": "app", "patterns": ["a"] }), "agent"),
        (json!({ "repo": "app", "patterns": ["a"], "agent": "link", "exclusive": true }), "exclusive"),
    ];
    for (body, field) in cases {
        let (status, answer) = s.post("/files/reserve", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let (status, answer) = reserve(&s, "link", &["a"], Some("T-9")).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")), "{answer}");

    for (query, field) in [
        ("repo=app", "paths"),
        ("path=a", "repo"),
        ("repo=app&path=/etc/passwd", "paths[0]"),
        ("repo=app&path=a&path=b/../c", "paths[1]"),
        ("repo=app&path=a&colour=red", "colour"),
    ] {
        let (status, answer) = s.get(&format!("/files/who?{query}")).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{query}: {answer}");
    }
    let (status, answer) = s.get("/files?task=T-x").await;
    assert_eq!((status, answer["error"]["field"].as_str()), (400, Some("task")), "{answer}");
    let (_, free) = s.get("/files/who?repo=app&path=src/a.rs&path=docs/b.md").await;
    assert_eq!(free["paths"][1], json!({ "path": "docs/b.md", "reservations": [] }));
    // Nothing of it was written.
    let (_, events) = s.get("/events?since=0&topics=files").await;
    assert_eq!(events["events"], json!([]), "{events}");
}
