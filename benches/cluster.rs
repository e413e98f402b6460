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
//!   the time until it has applied them all (including its start);
//! - snapshots: `--joined` events are written to a cluster that takes a snapshot every
//!   quarter of them, then to one that takes none; in each, a follower's data dir is
//!   emptied and the node started again: the time until it has applied the whole log (from
//!   the newest snapshot, or replaying the log from the first event), and the snapshot's
//!   size and the time its export paused the follower's writer;
//! - fan-out: `--subscribers` WebSocket subscribers to `tasks` (spread over the nodes, or
//!   all on the single node) while `--events` tasks are created: the time from the first
//!   write to the last subscriber's last event, and the deliveries/s that makes.
//!
//! ```text
//! cargo bench --bench cluster                      # 64 connections, 3 runs of 10 s, 10 kills, 100,000 missed and joined, 300 subscribers × 2,000 events
//! cargo bench --bench cluster -- --parts snapshots --joined 100000
//! cargo bench --bench cluster -- --seconds 5 --runs 1 --kills 3 --missed 20000
//! cargo bench --bench cluster -- --parts fanout --subscribers 300 --events 2000
//! cargo bench --bench cluster -- --smoke           # tiny: that it still works (CI)
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod driver;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

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

/// One timed run of `scenario` through `addrs`, and the CPU seconds each of `pids` spent
/// in it (the timed part only).
async fn run(addrs: &[SocketAddr], scenario: &str, conns: usize, seconds: f64, pids: &[u32]) -> (Outcome, Vec<f64>) {
    let n = if scenario == "claim" {
        let n = (seconds * 40_000.0) as u64;
        assert_eq!(fill(addrs, n).await.errors, 0);
        n
    } else {
        0
    };
    let before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let outcome = drive_spread(addrs, conns, seconds, request(scenario, conns, n)).await;
    let spent = pids.iter().zip(before).map(|(p, b)| cpu_seconds(*p) - b).collect();
    (outcome, spent)
}

/// The CPU seconds (user and system) process `pid` has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        let out = std::process::Command::new("getconf").arg("CLK_TCK").output();
        out.ok().and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok()).unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's name (in parentheses, may hold spaces): utime and stime are the
    // 12th and 13th fields.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()) / ticks
}

/// `subscribers` WebSocket subscribers to `tasks`, spread over `subscribe_at`, while
/// `events` tasks are created through `write_to` (16 connections): the time from the first
/// write to the last subscriber's last `task.created`.
async fn fanout(subscribe_at: &[SocketAddr], write_to: &[SocketAddr], subscribers: usize, events: u64) -> Duration {
    let (ready, mut welcomed) = tokio::sync::mpsc::channel::<()>(subscribers);
    let mut done = Vec::new();
    for s in 0..subscribers {
        let (addr, ready) = (subscribe_at[s % subscribe_at.len()], ready.clone());
        done.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
            ws.send(Message::text(r#"{"id":1,"op":"hello","topics":["tasks"]}"#)).await.unwrap();
            let _welcome = ws.next().await;
            ready.send(()).await.unwrap();
            let mut seen = 0;
            while seen < events {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) if text.as_str().contains(r#""type":"task.created""#) => seen += 1,
                    Some(Ok(_)) => {}
                    other => panic!("subscriber {s} lost its connection after {seen} events: {other:?}"),
                }
            }
            Instant::now()
        }));
    }
    for _ in 0..subscribers {
        welcomed.recv().await.unwrap();
    }
    let started = Instant::now();
    let per = events.div_ceil(16);
    let wrote = drive_spread(write_to, 16, 3600.0, move |c, i| {
        let k = c as u64 * per + i;
        (i < per && k < events).then(|| post("/tasks", &format!(r#"{{"title":"fan-out {k}"}}"#)))
    })
    .await;
    assert_eq!(wrote.errors, 0);
    let mut last = started;
    for d in done {
        last = last.max(d.await.unwrap());
    }
    last - started
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
    let (mut subscribers, mut events, mut joined) = (300, 2_000u64, 100_000u64);
    let mut parts = ["writes", "fanout", "failover", "catchup", "snapshots"].map(str::to_owned).to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--connections" => conns = args.next().unwrap().parse().unwrap(),
            "--kills" => kills = args.next().unwrap().parse().unwrap(),
            "--missed" => missed = args.next().unwrap().parse().unwrap(),
            "--subscribers" => subscribers = args.next().unwrap().parse().unwrap(),
            "--events" => events = args.next().unwrap().parse().unwrap(),
            "--joined" => joined = args.next().unwrap().parse().unwrap(),
            "--parts" => parts = args.next().unwrap().split(',').map(str::to_owned).collect(),
            "--smoke" => {
                (seconds, runs, conns, kills, missed, smoke) = (0.3, 1, 3, 1, 200, true);
                (subscribers, events, joined) = (6, 20, 400);
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let part = |name: &str| parts.iter().any(|p| p == name);
    rt.block_on(async {
        if part("writes") {
            writes(seconds, runs, conns, smoke).await;
        }
        if part("fanout") {
            fanouts(subscribers, events).await;
        }
        if part("failover") {
            failovers(kills).await;
        }
        if part("catchup") {
            catch_up(missed).await;
        }
        if part("snapshots") {
            joins(joined).await;
        }
    });
}

/// CPU seconds per 1,000 acknowledged writes, by process, summed over a scenario's runs.
#[derive(Default)]
struct Cost {
    writes: u64,
    /// (process, CPU seconds): the leader, the followers, each nats-server; or the single node.
    spent: Vec<(String, f64)>,
}

impl Cost {
    fn add(&mut self, writes: u64, spent: impl IntoIterator<Item = (String, f64)>) {
        self.writes += writes;
        for (name, seconds) in spent {
            match self.spent.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += seconds,
                None => self.spent.push((name, seconds)),
            }
        }
    }

    fn per_1000(&self, name: &str) -> f64 {
        let seconds = self.spent.iter().find(|(n, _)| n == name).map_or(0.0, |(_, s)| *s);
        seconds * 1000.0 / self.writes.max(1) as f64
    }
}

/// Durable writes/s of each scenario, on a fresh cluster and a fresh single node per run,
/// then the CPU each process spent per 1,000 of them.
async fn writes(seconds: f64, runs: usize, conns: usize, smoke: bool) {
    println!("| scenario | conns | broker | writes/s (median run) | p50 ms | p99 ms | writes/s of each run | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut costs = Vec::new();
    for scenario in ["create", "claim", "chat"] {
        let mut rates = Vec::new();
        let (mut cluster_cost, mut single_cost) = (Cost::default(), Cost::default());
        for broker in ["cluster R3", "single node"] {
            let mut outcomes = Vec::new();
            for _ in 0..runs {
                let outcome = if broker == "single node" {
                    let dir = tempfile::tempdir().unwrap();
                    let p = common::Process::start(&dir.path().join("data"), &[], &[]);
                    let (outcome, spent) = run(&[p.addr], scenario, conns, seconds, &[p.child.id()]).await;
                    single_cost.add(outcome.requests, [("single node".to_owned(), spent[0])]);
                    outcome
                } else {
                    let Some(cluster) = Cluster::start().await else { return };
                    let messages = async || cluster.health(0).await.unwrap()["cluster"]["streamHead"].as_u64().unwrap();
                    let before = messages().await;
                    let leader = cluster.leader().await;
                    // The leader first, then the followers, then nats-1..3.
                    let mut names = vec!["leader".to_owned()];
                    let mut pids = vec![cluster.node(leader).child.id()];
                    for (k, i) in (0..3).filter(|i| *i != leader).enumerate() {
                        names.push(format!("follower {}", k + 1));
                        pids.push(cluster.node(i).child.id());
                    }
                    for n in &cluster.nats {
                        names.push(format!("nats-{}", n.index));
                        pids.push(n.child.as_ref().unwrap().id());
                    }
                    let (outcome, spent) = run(&addrs(&cluster), scenario, conns, seconds, &pids).await;
                    cluster_cost.add(outcome.requests, names.into_iter().zip(spent));
                    // How well the leader batches: writes per message of the log (the
                    // claim scenario's count includes the tasks it creates first).
                    let sent = messages().await - before;
                    eprintln!("{scenario}: {} writes in {sent} messages of the log", outcome.requests);
                    outcome
                };
                if smoke {
                    assert!(outcome.requests > 0 && outcome.errors == 0, "{scenario} on the {broker}");
                }
                outcomes.push(outcome);
            }
            let errors: u64 = outcomes.iter().map(|o| o.errors).sum();
            let (m, spread) = median(&mut outcomes);
            rates.push(rate(m));
            let (p50, p99) = (m.percentile(0.5), m.percentile(0.99));
            println!(
                "| {scenario} | {conns} | {broker} | {:.0} | {p50:.2} | {p99:.2} | {spread} | {errors} |",
                rate(m)
            );
        }
        println!("| {scenario} | {conns} | cluster / single | {:.2} | | | | |", rates[0] / rates[1]);
        costs.push((scenario, cluster_cost, single_cost));
    }
    println!();
    println!("CPU seconds per 1,000 acknowledged writes, by process (user + system, from /proc; all runs):");
    println!();
    println!(
        "| scenario | single node | leader | follower 1 | follower 2 | nats-1 | nats-2 | nats-3 | leader / single | busiest nats / single |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (scenario, cluster, single) in costs {
        let one = single.per_1000("single node");
        let nats = ["nats-1", "nats-2", "nats-3"].map(|n| cluster.per_1000(n));
        let busiest = nats.iter().copied().fold(0.0, f64::max);
        println!(
            "| {scenario} | {one:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} |",
            cluster.per_1000("leader"),
            cluster.per_1000("follower 1"),
            cluster.per_1000("follower 2"),
            nats[0],
            nats[1],
            nats[2],
            cluster.per_1000("leader") / one,
            busiest / one
        );
    }
}

/// Fan-out with the subscribers spread over the cluster's nodes, then all on a single node.
async fn fanouts(subscribers: usize, events: u64) {
    let Some(cluster) = Cluster::start().await else { return };
    let spread = addrs(&cluster);
    let took = fanout(&spread, &spread, subscribers, events).await;
    drop(cluster);
    let dir = tempfile::tempdir().unwrap();
    let single = common::Process::start(&dir.path().join("data"), &[], &[]);
    let alone = fanout(&[single.addr], &[single.addr], subscribers, events).await;
    let deliveries = (subscribers as u64 * events) as f64;
    for (broker, took) in [("cluster R3, subscribers on every node", took), ("single node", alone)] {
        let secs = took.as_secs_f64();
        println!(
            "fan-out, {broker}: {subscribers} subscribers × {events} tasks: the last delivered {secs:.2} s after \
             the first write ({:.0} deliveries/s)",
            deliveries / secs
        );
    }
}

/// The leader node killed `kills` times: the time to the first write acknowledged through
/// another node.
async fn failovers(kills: usize) {
    let Some(mut cluster) = Cluster::start().await else { return };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut times = Vec::new();
    for _ in 0..kills {
        let leader = cluster.leader().await;
        cluster.nodes[leader].take().unwrap().kill9();
        let killed = Instant::now();
        let other = (leader + 1) % 3;
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
    let (p50, max) = (percentile(&mut times, 0.5), percentile(&mut times, 1.0));
    println!(
        "failover (kill -9 of the leader → first write acknowledged through another node), {kills} kills: p50 \
         {p50:.1} s, max {max:.1} s ({all})"
    );
}

/// A follower stopped while `missed` tasks are created: the time it takes, started again,
/// to have applied them all.
async fn catch_up(missed: u64) {
    let Some(mut cluster) = Cluster::start().await else { return };
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
        "catch-up: a follower restarted {} events behind had applied them all {took:.1} s later ({:.0} events/s, \
         its start included)",
        head - from,
        (head - from) as f64 / took
    );
}

/// The `key=value` fields of the last line of node `i`'s log that says `what`.
fn logged(cluster: &Cluster, i: usize, what: &str) -> Option<std::collections::HashMap<String, String>> {
    let log = std::fs::read_to_string(&cluster.node(i).log).ok()?;
    let line = log.lines().rfind(|l| l.contains(what))?;
    let fields = line.split_whitespace().filter_map(|w| w.split_once('=')).map(|(k, v)| (k.into(), v.into()));
    Some(fields.collect())
}

/// A node on an empty data dir joining a cluster that holds `events` events: with snapshots
/// (one every quarter of them), then without.
async fn joins(events: u64) {
    for every in [events / 4, 0] {
        let Some(mut cluster) = Cluster::start_with(&["--snapshot-every", &every.to_string()]).await else { return };
        let leader = cluster.leader().await;
        let follower = (leader + 1) % 3;
        let all = addrs(&cluster);
        assert_eq!(fill(&all, events).await.errors, 0);
        let head = cluster.converged().await;
        let mut taken = None;
        if every > 0 {
            // The snapshot the node will start from: one taken after the writes.
            let started = Instant::now();
            while taken.is_none() {
                assert!(started.elapsed() < Duration::from_secs(120), "no snapshot of the last writes");
                tokio::time::sleep(Duration::from_millis(500)).await;
                taken = (0..3)
                    .filter_map(|i| logged(&cluster, i, "snapshot written"))
                    .find(|f| f["head"].parse::<u64>().unwrap() + every > head);
            }
        }
        cluster.nodes[follower].take().unwrap().terminate();
        std::fs::remove_dir_all(cluster.data_dir(follower)).unwrap();
        let started = Instant::now();
        cluster.nodes[follower] = Some(cluster.spawn_node(follower));
        assert_eq!(cluster.converged().await, head);
        let took = started.elapsed().as_secs_f64();
        match taken {
            Some(t) => println!(
                "join from a snapshot: a node on an empty data dir had applied all {head} events {took:.1} s after it was \
                 started (a snapshot of {} events, {:.1} MB, exported in {}; then the log after it)",
                t["head"],
                t["bytes"].parse::<f64>().unwrap() / 1e6,
                t["took"],
            ),
            None => println!(
                "join by replay: a node on an empty data dir had applied all {head} events {took:.1} s after it was \
                 started ({:.0} events/s), with no snapshot",
                head as f64 / took
            ),
        }
    }
}
