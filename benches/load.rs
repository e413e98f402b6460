//! Load generator: drives a real `muster serve` (a separate process, release build) over
//! keep-alive HTTP/1.1 connections and reports throughput and latency percentiles.
//!
//! ```text
//! cargo bench --bench load                       # every scenario, 20 and 64 connections, 3 runs
//! cargo bench --bench load -- --seconds 5 --runs 5 --connections 64 --scenarios create,claim
//! cargo bench --bench load -- --smoke      # every scenario, tiny, no errors allowed (CI)
//! ```
//!
//! `--addr HOST:PORT` drives a broker that is already running instead of starting one.
//!
//! Each line reports the run with the median throughput (its p50/p99/p99.9), the median of
//! the runs' p99, and every run's throughput: these machines are shared and noisy.
//!
//! ```text
//! ```
//!
//! Scenarios (each on a fresh data dir unless noted):
//! - `create`: `POST /tasks` — durable task creations/s;
//! - `claim`: `POST /tasks/{id}/claim` on distinct open tasks (created first, not timed) —
//!   durable claims/s;
//! - `chat`: `POST /chat/messages` with a mention — durable posts/s;
//! - `board`: `GET /tasks` on a board of 1,000 tasks — reads/s; `board-gzip` with
//!   `Accept-Encoding: gzip`; `board-etag` as a poller that already has the current board
//!   (`If-None-Match`, answered 304);
//! - `reserve`: `POST /files/reserve` then `POST /files/release` of a file of its own, in
//!   turn, by each connection's agent, with 1,000 reservations of 100 other agents held in the
//!   same repository (created first, not timed: 700 directories, 200 files, 100 globs like
//!   `*/g7.gen`) — durable reservation writes/s, each checked for overlap against all of them.
//!
//! The client is a minimal HTTP/1.1 client (one request in flight per connection) so that
//! the generator spends as little CPU as possible next to the broker on a small machine.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod driver;

use driver::{Outcome, drive, post};

/// Prints the median run (by throughput) of a scenario, and the spread of the runs.
fn report(name: &str, connections: usize, runs: &mut [Outcome]) {
    let rate = |o: &Outcome| o.requests as f64 / o.elapsed.as_secs_f64();
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let median = &runs[runs.len() / 2];
    let spread = runs.iter().map(|o| format!("{:.0}", rate(o))).collect::<Vec<_>>().join(" / ");
    let mut p99s: Vec<f64> = runs.iter().map(|o| o.percentile(0.99)).collect();
    p99s.sort_by(f64::total_cmp);
    println!(
        "| {name} | {connections} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {spread} | {} | {} |",
        rate(median),
        median.percentile(0.50),
        median.percentile(0.99),
        p99s[p99s.len() / 2],
        median.percentile(0.999),
        runs.iter().map(|o| o.requests).sum::<u64>(),
        runs.iter().map(|o| o.errors).sum::<u64>(),
    );
}

/// Creates `n` tasks quickly (not timed) over `connections` connections.
async fn fill_board(addr: std::net::SocketAddr, n: u64, connections: usize) {
    let per = n.div_ceil(connections as u64);
    let o = drive(addr, connections, 3600.0, move |c, i| {
        let k = c as u64 * per + i;
        (i < per && k < n).then(|| {
            post("/tasks", &format!(r#"{{"title":"task {k} of the benchmark board","priority":"P{}"}}"#, k % 4))
        })
    })
    .await;
    assert_eq!(o.errors, 0);
}

/// Makes `n` reservations of 100 agents in the repository `app` (not timed), none overlapping
/// another: seven in ten a directory, two a file, one a glob whose first directory is a
/// wildcard (checked against every path).
async fn hold_reservations(addr: std::net::SocketAddr, n: u64) {
    let per = n.div_ceil(10);
    let o = drive(addr, 10, 3600.0, move |c, i| {
        let k = c as u64 * per + i;
        let pattern = match k % 10 {
            0..=6 => format!("lib/area{k}/**"),
            7 | 8 => format!("docs/d{k}.md"),
            _ => format!("*/g{k}.gen"),
        };
        let body = format!(r#"{{"repo":"app","agent":"owner-{}","patterns":["{pattern}"]}}"#, k % 100);
        (i < per && k < n).then(|| post("/files/reserve", &body))
    })
    .await;
    assert_eq!(o.errors, 0);
}

fn main() {
    let mut seconds = 10.0;
    let mut connections = vec![20, 64];
    let mut runs = 3;
    let mut target = None;
    let mut smoke = false;
    let mut scenarios = vec!["create".to_owned(), "claim".to_owned(), "chat".to_owned(), "board".to_owned()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--addr" => target = Some(args.next().unwrap().parse().unwrap()),
            "--connections" => connections = args.next().unwrap().split(',').map(|c| c.parse().unwrap()).collect(),
            "--scenarios" => scenarios = args.next().unwrap().split(',').map(str::to_owned).collect(),
            "--smoke" => {
                (seconds, runs, connections, smoke) = (0.3, 1, vec![2], true);
                scenarios = ["create", "claim", "chat", "board", "board-gzip", "board-etag", "reserve"]
                    .map(String::from)
                    .to_vec();
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!(
        "| scenario | conns | req/s (median run) | p50 ms | p99 ms | median p99 of runs ms | p99.9 ms | req/s of each run | requests | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for scenario in &scenarios {
        for &conns in &connections {
            let mut outcomes = Vec::new();
            for _ in 0..runs {
                outcomes.push(run(&rt, scenario, conns, seconds, target));
            }
            if smoke {
                let o = &outcomes[0];
                assert!(o.requests > 0 && o.errors == 0, "{scenario}: {} requests, {} errors", o.requests, o.errors);
            }
            report(scenario, conns, &mut outcomes);
        }
    }
}

/// One run of a scenario against a fresh broker (or the one at `target`).
fn run(
    rt: &tokio::runtime::Runtime,
    scenario: &str,
    conns: usize,
    seconds: f64,
    target: Option<std::net::SocketAddr>,
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let p = target.is_none().then(|| common::Process::start(&dir.path().join("data"), &[], &[]));
    let addr = target.unwrap_or_else(|| p.as_ref().unwrap().addr);
    let outcome = rt.block_on(async {
        match scenario {
            "create" => {
                drive(addr, conns, seconds, |c, i| {
                    Some(post("/tasks", &format!(r#"{{"title":"bench {c}-{i}","agent":"bench-{c}"}}"#)))
                })
                .await
            }
            "claim" => {
                // Enough distinct open tasks for the run at a generous rate.
                let n = (seconds * 40_000.0) as u64;
                fill_board(addr, n, 64).await;
                drive(addr, conns, seconds, move |c, i| {
                    let id = i * conns as u64 + c as u64 + 1;
                    (id <= n).then(|| post(&format!("/tasks/T-{id}/claim"), &format!(r#"{{"agent":"bench-{c}"}}"#)))
                })
                .await
            }
            "chat" => {
                drive(addr, conns, seconds, |c, i| {
                    Some(post(
                        "/chat/messages",
                        &format!(
                            r#"{{"from":"bench-{c}","content":"@bench-{} status update {i}","channel":"general"}}"#,
                            (c + 1) % 64
                        ),
                    ))
                })
                .await
            }
            "board" | "board-gzip" | "board-etag" => {
                fill_board(addr, 1000, 64).await;
                let extra = match scenario {
                    "board-gzip" => "Accept-Encoding: gzip\r\n".to_owned(),
                    "board-etag" => {
                        let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
                        let health: serde_json::Value = health.json().await.unwrap();
                        format!("If-None-Match: \"{}-{}\"\r\n", health["epoch"].as_str().unwrap(), health["head"])
                    }
                    _ => String::new(),
                };
                let request = format!("GET /tasks HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n").into_bytes();
                drive(addr, conns, seconds, move |_, _| Some(request.clone())).await
            }
            "reserve" => {
                hold_reservations(addr, 1000).await;
                drive(addr, conns, seconds, move |c, i| {
                    let (action, file) = if i % 2 == 0 { ("reserve", i) } else { ("release", i - 1) };
                    let body = format!(r#"{{"repo":"app","agent":"bench-{c}","patterns":["work/c{c}/f{file}.rs"]}}"#);
                    Some(post(&format!("/files/{action}"), &body))
                })
                .await
            }
            other => panic!("unknown scenario {other}"),
        }
    });
    if scenario.starts_with("board") {
        eprintln!("  {scenario}: {} bytes per response", outcome.bytes / outcome.requests.max(1));
    }
    if let Some(p) = p {
        p.terminate();
    }
    outcome
}
