//! Many agents race for the same tasks over real HTTP connections: exactly one winner per
//! task, and every loser is told who won.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};

use common::{Server, split};
use serde_json::json;

const AGENTS: usize = 32;
const TASKS: usize = 50;

/// One client per agent, so the agents race over separate connections.
fn clients() -> Vec<reqwest::Client> {
    (0..AGENTS).map(|_| reqwest::Client::new()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_claims_have_exactly_one_winner_per_task() {
    let s = Server::start().await;
    for i in 0..TASKS {
        s.task(&format!("task {i}")).await;
    }
    let mut racers = Vec::new();
    for (a, http) in clients().into_iter().enumerate() {
        let base = s.url("");
        racers.push(tokio::spawn(async move {
            let agent = format!("agent-{a}");
            let mut results = Vec::new();
            // Each agent walks the tasks from a different starting point.
            for k in 0..TASKS {
                let t = (k + a * 7) % TASKS + 1;
                let r = http
                    .post(format!("{base}/tasks/T-{t}/claim"))
                    .body(json!({"agent": agent}).to_string())
                    .send()
                    .await
                    .unwrap();
                let (status, body) = split(r).await;
                results.push((t, agent.clone(), status, body));
            }
            results
        }));
    }
    let mut winners: HashMap<usize, Vec<String>> = HashMap::new();
    let mut losers = Vec::new();
    for racer in racers {
        for (t, agent, status, body) in racer.await.unwrap() {
            match status {
                200 => {
                    assert_eq!(body["task"]["claim"]["agent"], agent.as_str());
                    assert_eq!(body["task"]["claim"]["token"], 1, "the first claim of a task gets token 1");
                    winners.entry(t).or_default().push(agent);
                }
                409 => losers.push((t, agent, body)),
                other => panic!("T-{t} by {agent}: unexpected {other} {body}"),
            }
        }
    }
    assert_eq!(winners.len(), TASKS, "every task was won");
    for (t, w) in &winners {
        assert_eq!(w.len(), 1, "T-{t} has {} winners: {w:?}", w.len());
    }
    assert_eq!(losers.len(), TASKS * (AGENTS - 1));
    for (t, agent, body) in losers {
        let owner = &winners[&t][0];
        assert_eq!(body["error"]["code"], "conflict");
        assert_eq!(body["error"]["message"], format!("T-{t} is claimed by {owner}"), "{agent} lost T-{t}");
    }
    // The board agrees with what the winners were told.
    let (_, board) = s.get("/tasks").await;
    for task in board["tasks"].as_array().unwrap() {
        let t: usize = task["id"].as_str().unwrap()[2..].parse().unwrap();
        assert_eq!(task["claim"]["agent"], winners[&t][0].as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn next_with_claim_never_hands_one_task_to_two_agents() {
    let s = Server::start().await;
    for i in 0..TASKS {
        let priority = format!("P{}", i % 4);
        s.post("/tasks", json!({"title": format!("task {i}"), "priority": priority})).await;
    }
    let mut racers = Vec::new();
    for (a, http) in clients().into_iter().enumerate() {
        let base = s.url("");
        racers.push(tokio::spawn(async move {
            let agent = format!("agent-{a}");
            let mut got = Vec::new();
            loop {
                // Half the agents use GET ...&claim=true, half POST /tasks/next.
                let r = if a % 2 == 0 {
                    http.get(format!("{base}/tasks/next?agent={agent}&claim=true"))
                        .header("X-Agent", &agent)
                        .send()
                        .await
                        .unwrap()
                } else {
                    http.post(format!("{base}/tasks/next"))
                        .body(json!({"agent": agent}).to_string())
                        .send()
                        .await
                        .unwrap()
                };
                let (status, body) = split(r).await;
                assert_eq!(status, 200, "{body}");
                let Some(id) = body["task"]["id"].as_str().map(str::to_owned) else {
                    break;
                };
                assert_eq!(body["task"]["claim"]["agent"], agent.as_str());
                // Finish it, so that the next call hands out a new one.
                let r = http
                    .post(format!("{base}/tasks/{id}/complete"))
                    .body(json!({"agent": agent}).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                got.push(id);
            }
            got
        }));
    }
    let mut handed: Vec<String> = Vec::new();
    for racer in racers {
        handed.extend(racer.await.unwrap());
    }
    let unique: HashSet<&String> = handed.iter().collect();
    assert_eq!(unique.len(), handed.len(), "a task was handed out twice: {handed:?}");
    assert_eq!(handed.len(), TASKS, "every task was handed out");
    let (_, done) = s.get("/tasks?status=done").await;
    assert_eq!(done["tasks"].as_array().unwrap().len(), TASKS);
}
