//! Workspaces: what one costs, and whether a busy one slows another. Against a real
//! `muster serve` (a separate process, release build):
//!
//! 1. the broker's RSS and threads before and after adding 100 empty workspaces (memory and
//!    threads per empty workspace), and how long adding one takes;
//! 2. 10 agents in each (a heartbeat each: 1,000 agents);
//! 3. a probe — one connection posting chat messages with a mention in workspace `w1`, one
//!    at a time — alone (idle), then while 32 connections flood `w0` with chat posts at full
//!    speed, then (for comparison) while they flood `w1` itself, the probe's own workspace.
//!
//! ```text
//! cargo bench --bench workspaces                        # 100 workspaces, 5 s per phase, 3 runs
//! cargo bench --bench workspaces -- --workspaces 20 --seconds 2 --runs 1
//! cargo bench --bench workspaces -- --smoke             # 5 workspaces, 0.5 s, 1 run (CI)
//! ```
//!
//! Prints the probe's p50/p99 per phase (median of the runs) and the ratio of its p99
//! under a flood of another workspace to its idle p99.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod driver;

use std::time::{Duration, Instant};

use driver::{Conn, Outcome, drive, post};

/// The probe's chat post in workspace `w`, and a flooder's.
fn chat(w: usize, from: &str) -> Vec<u8> {
    post(
        &format!("/w/w{w}/chat/messages"),
        &format!(r#"{{"from":"{from}","content":"@agent-1 build is green","channel":"general"}}"#),
    )
}

/// One phase: the probe in `w1` for `seconds`, with 32 flooders in `flooded` (if any).
async fn phase(addr: std::net::SocketAddr, seconds: f64, flooded: Option<usize>) -> (Outcome, Option<Outcome>) {
    let flood = flooded
        .map(|w| tokio::spawn(drive(addr, 32, seconds + 0.5, move |c, _| Some(chat(w, &format!("flooder-{c}"))))));
    // The flooders get going first.
    if flood.is_some() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let probe = drive(addr, 1, seconds, |_, _| Some(chat(1, "probe"))).await;
    let flood = match flood {
        Some(f) => Some(f.await.unwrap()),
        None => None,
    };
    (probe, flood)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let (mut workspaces, mut seconds, mut runs, mut smoke) = (100usize, 5.0f64, 3usize, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--workspaces" => workspaces = args.next().unwrap().parse().unwrap(),
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--smoke" => (workspaces, seconds, runs, smoke) = (5, 0.5, 1, true),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Process::start(&dir.path().join("data"), &[], &[]);
    let (addr, pid) = (broker.addr, broker.child.id());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = (common::rss_kib(pid), common::proc_status(pid, "Threads"));
        let mut conn = Conn::open(addr).await;
        let started = Instant::now();
        for w in 0..workspaces {
            let (status, _) = conn.send(&post("/workspaces", &format!(r#"{{"name":"w{w}"}}"#))).await;
            assert_eq!(status, 201, "adding workspace w{w}");
        }
        let adding = started.elapsed() / workspaces as u32;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = (common::rss_kib(pid), common::proc_status(pid, "Threads"));
        let per_kib = (after.0.saturating_sub(before.0)) as f64 / workspaces as f64;
        let per_threads = after.1.saturating_sub(before.1) as f64 / workspaces as f64;
        println!("| workspaces | RSS before | RSS after | per empty workspace | threads per workspace | adding one |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| {workspaces} | {:.1} MiB | {:.1} MiB | {:.0} KiB | {per_threads:.1} | {:.1} ms |",
            before.0 as f64 / 1024.0,
            after.0 as f64 / 1024.0,
            per_kib,
            adding.as_secs_f64() * 1000.0
        );
        for w in 0..workspaces {
            for a in 0..10 {
                let (status, _) = conn.send(&post(&format!("/w/w{w}/presence/agent-{a}"), "{}")).await;
                assert_eq!(status, 200);
            }
        }
        let mut p99 = [Vec::new(), Vec::new(), Vec::new()];
        let mut p50 = [Vec::new(), Vec::new(), Vec::new()];
        let mut flood_rate = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            for (i, flooded) in [None, Some(0), Some(1)].into_iter().enumerate() {
                let (probe, flood) = phase(addr, seconds, flooded).await;
                assert_eq!(probe.errors, 0, "the probe's posts failed");
                p50[i].push(probe.percentile(0.50));
                p99[i].push(probe.percentile(0.99));
                if let Some(flood) = flood {
                    assert_eq!(flood.errors, 0, "the flood's posts failed");
                    flood_rate[i - 1].push(flood.requests as f64 / flood.elapsed.as_secs_f64());
                }
            }
        }
        println!();
        println!("| probe in w1 | p50 ms | p99 ms | flood posts/s | p99 / idle p99 |");
        println!("|---|---|---|---|---|");
        let idle = median(p99[0].clone());
        for (i, name) in ["idle", "while w0 floods", "while w1 itself floods"].iter().enumerate() {
            let rate = if i == 0 { "-".to_owned() } else { format!("{:.0}", median(flood_rate[i - 1].clone())) };
            println!(
                "| {name} | {:.2} | {:.2} | {rate} | {:.2} |",
                median(p50[i].clone()),
                median(p99[i].clone()),
                median(p99[i].clone()) / idle
            );
        }
        if !smoke {
            eprintln!("  (each phase {seconds} s, {runs} runs; medians)");
        }
    });
    broker.terminate();
}
