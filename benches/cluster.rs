//! The cluster against the single node, back to back on the same machine: a 3-node Muster
//! cluster on three nats-servers (R3, loopback, the configs in `tests/cluster/`) with the
//! load generator's connections spread over the nodes, then one `muster serve` alone.
//!
//! - durable writes/s and latency for `create`, `claim` (on distinct open tasks, made first)
//!   and `chat` (a post with a mention), each acknowledged only once stored — on a majority
//!   of the nats-servers for the cluster, after `fdatasync` for the single node;
//! - failover: the leader node is `kill -9`ed `--kills` times; the time from the kill to the
//!   first write acknowledged through another node (then the killed node is restarted and
//!   the cluster converges before the next kill);
//! - catch-up: a follower is stopped, `--missed` events are written, it is started again;
//!   the time until it has applied them all (including its start).
//!
//! ```text
//! cargo bench --bench cluster                      # 64 connections, 3 runs of 10 s, 10 kills, 100,000 missed
//! cargo bench --bench cluster -- --seconds 5 --runs 1 --kills 3 --missed 20000
//! cargo bench --bench cluster -- --smoke           # tiny: that it still works (CI)
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod driver;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use driver::{Outcome, drive_spread, post};

/// The request of connection `c`'s `i`-th turn in `scenario` (`n` open tasks for `claim`).
fn request(
    scenario: &str,
    conns: usize,
    n: u64,
) -> impl Fn(usize, u64) -> Option<Vec<u8>> + Send + Sync + Clone + 'static {
    let scenario = scenario.to_owned();
    move |c, i| match scenario.as_str() {
        "create" => Some(post("/tasks", &format!(r#"{{"title":"bench {c}-{i}","agent":"bench-{c}"}}"#))),
        "claim" => {
            let id = i * conns as u64 + c as u64 + 1;
            (id <= n).then(|| post(&format!("/tasks/T-{id}/claim"), &format!(r#"{{"agent":"bench-{c}"}}"#)))
        }
        "chat" => Some(post(
            "/chat/messages",
            &format!(
                r#"{{"from":"bench-{c}","content":"@bench-{} status update {i}","channel":"general"}}"#,
                (c + 1) % 64
            ),
        )),
        other => panic!("unknown scenario {other}"),
    }
}

/// Creates `n` tasks (not timed).
async fn fill(addrs: &[SocketAddr], n: u64) -> Outcome {
    let per = n.div_ceil(64);
    drive_spread(addrs, 64, 3600.0, move |c, i| {
        let k = c as u64 * per + i;
        (i < per && k < n).then(|| post("/tasks", &format!(r#"{{"title":"task {k}"}}"#)))
    })
    .await
}

/// One timed run of `scenario` through `addrs`.
async fn run(addrs: &[SocketAddr], scenario: &str, conns: usize, seconds: f64) -> Outcome {
    let n = if scenario == "claim" {
        let n = (seconds * 40_000.0) as u64;
        assert_eq!(fill(addrs, n).await.errors, 0);
        n
    } else {
        0
    };
    drive_spread(addrs, conns, seconds, request(scenario, conns, n)).await
}

fn rate(o: &Outcome) -> f64 {
    o.requests as f64 / o.elapsed.as_secs_f64()
}

/// The run with the median throughput, and every run's.
fn median(runs: &mut [Outcome]) -> (&Outcome, String) {
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let spread = runs.iter().map(|o| format!("{:.0}", rate(o))).collect::<Vec<_>>().join(" / ");
    (&runs[runs.len() / 2], spread)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

fn addrs(cluster: &Cluster) -> Vec<SocketAddr> {
    cluster.addrs.iter().map(|a| a.parse().unwrap()).collect()
}

fn main() {
    let (mut seconds, mut runs, mut conns, mut kills, mut missed, mut smoke) = (10.0, 3, 64, 10, 100_000u64, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--connections" => conns = args.next().unwrap().parse().unwrap(),
            "--kills" => kills = args.next().unwrap().parse().unwrap(),
            "--missed" => missed = args.next().unwrap().parse().unwrap(),
            "--smoke" => (seconds, runs, conns, kills, missed, smoke) = (0.3, 1, 3, 1, 200, true),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        println!("| scenario | conns | broker | writes/s (median run) | p50 ms | p99 ms | writes/s of each run | errors |");
        println!("|---|---|---|---|---|---|---|---|");
        for scenario in ["create", "claim", "chat"] {
            let mut rates = Vec::new();
            for broker in ["cluster R3", "single node"] {
                let mut outcomes = Vec::new();
                for _ in 0..runs {
                    // A fresh cluster (or node) for every run: the same start for both.
                    let outcome = if broker == "single node" {
                        let dir = tempfile::tempdir().unwrap();
                        let p = common::Process::start(&dir.path().join("data"), &[], &[]);
                        run(&[p.addr], scenario, conns, seconds).await
                    } else {
                        let Some(cluster) = Cluster::start().await else { return };
                        run(&addrs(&cluster), scenario, conns, seconds).await
                    };
                    if smoke {
                        assert!(outcome.requests > 0 && outcome.errors == 0, "{scenario} on the {broker}");
                    }
                    outcomes.push(outcome);
                }
                let errors: u64 = outcomes.iter().map(|o| o.errors).sum();
                let (m, spread) = median(&mut outcomes);
                rates.push(rate(m));
                println!(
                    "| {scenario} | {conns} | {broker} | {:.0} | {:.2} | {:.2} | {spread} | {errors} |",
                    rate(m),
                    m.percentile(0.5),
                    m.percentile(0.99)
                );
            }
            println!("| {scenario} | {conns} | cluster / single | {:.2} | | | | |", rates[0] / rates[1]);
        }

        let Some(mut cluster) = Cluster::start().await else { return };
        let mut times = Vec::new();
        for _ in 0..kills {
            let leader = cluster.leader().await;
            cluster.nodes[leader].take().unwrap().kill9();
            let killed = Instant::now();
            let other = (leader + 1) % 3;
            let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            loop {
                let r = http.post(cluster.url(other, "/tasks")).header("X-Agent", "probe").body(r#"{"title":"probe"}"#);
                if r.send().await.is_ok_and(|r| r.status() == 201) {
                    break;
                }
                assert!(killed.elapsed() < Duration::from_secs(60), "no write within 60 s of the kill");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            times.push(killed.elapsed().as_secs_f64());
            cluster.nodes[leader] = Some(cluster.spawn_node(leader));
            cluster.converged().await;
        }
        let all = times.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>().join(", ");
        println!(
            "\nfailover (kill -9 of the leader → first write acknowledged through another node), {} kills: p50 {:.1} s, max {:.1} s ({all})",
            times.len(),
            percentile(&mut times, 0.5),
            percentile(&mut times, 1.0)
        );

        let leader = cluster.leader().await;
        let follower = (leader + 1) % 3;
        let from = cluster.converged().await;
        cluster.nodes[follower].take().unwrap().terminate();
        let writers: Vec<SocketAddr> = [leader, (leader + 2) % 3].map(|i| cluster.addrs[i].parse().unwrap()).to_vec();
        assert_eq!(fill(&writers, missed).await.errors, 0);
        let head = cluster.converged().await;
        let started = Instant::now();
        cluster.nodes[follower] = Some(cluster.spawn_node(follower));
        assert_eq!(cluster.converged().await, head);
        let took = started.elapsed().as_secs_f64();
        println!(
            "catch-up: a follower restarted {} events behind had applied them all {took:.1} s later ({:.0} events/s, its start included)",
            head - from,
            (head - from) as f64 / took
        );
    });
}
