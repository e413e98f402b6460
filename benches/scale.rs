//! At scale: months of history on one node. Builds data dirs through the real write path
//! (HTTP, as agents would) — a large one (`--tasks` tasks, nine in ten finished, or all but
//! `--open` of them, and `--messages` chat messages, one in ten mentioning someone) and one a
//! tenth of its size (with the same `--open`, if given) —
//! then, back to back on the same machine, starts `muster serve` on each and on an empty
//! one and measures:
//!
//! - start-up: from spawning the process to "listening";
//! - RSS after start, and after `--load` seconds of mixed load (chat posts, heartbeats,
//!   board and channel reads: nothing that adds tasks);
//! - claim and chat p99 at 64 connections;
//! - `GET /tasks` (the default page) and `GET /chat/messages?limit=50` reads/s.
//!
//! ```text
//! cargo bench --bench scale                                   # 200,000 tasks, 1,000,000 messages
//! cargo bench --bench scale -- --tasks 20000 --messages 100000 --load 20
//! cargo bench --bench scale -- --smoke                        # tiny: that it still works (CI)
//! cargo bench --bench scale -- --dir /tmp/scale               # keep the dirs there (reused if present)
//! cargo bench --bench scale -- --open 2000                    # the same open tasks in both dirs: history alone
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod driver;

use std::path::Path;
use std::time::{Duration, Instant};

use driver::{Outcome, drive, post};

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// Writes `tasks` tasks (all but `open` of them then completed) and `messages` messages into
/// the broker at `addr`, over 64 connections; returns the writes per second.
async fn fill(addr: std::net::SocketAddr, tasks: u64, messages: u64, open: u64) -> f64 {
    let started = Instant::now();
    let conns = 64u64;
    let per = move |n: u64| n.div_ceil(conns);
    let creates = drive(addr, conns as usize, 1e9, move |c, i| {
        let k = c as u64 * per(tasks) + i;
        (i < per(tasks) && k < tasks).then(|| {
            let body = format!(r#"{{"title":"task {k}: a plausible piece of work","priority":"P{}"}}"#, k % 4);
            post("/tasks", &body)
        })
    })
    .await;
    assert_eq!(creates.errors, 0);
    // Every task but each `stride`-th (with 10: T-10, T-20, ...) is completed: the n-th of
    // them (from 0) is T-(n / (stride - 1) * stride + n % (stride - 1) + 1). (A connection
    // stops at its first `None`, so the skipped ones must not be among its requests.)
    let stride = (tasks / open.max(1)).max(2);
    let finished = tasks - tasks / stride;
    let done = drive(addr, conns as usize, 1e9, move |c, i| {
        let n = c as u64 * per(finished) + i;
        let k = n / (stride - 1) * stride + n % (stride - 1) + 1;
        (i < per(finished) && n < finished)
            .then(|| post(&format!("/tasks/T-{k}/complete"), &format!(r#"{{"agent":"worker-{}"}}"#, k % 50)))
    })
    .await;
    assert_eq!(done.requests, finished, "every task but each {stride}-th is completed");
    assert_eq!(done.errors, 0);
    let chat = drive(addr, conns as usize, 1e9, move |c, i| {
        let k = c as u64 * per(messages) + i;
        (i < per(messages) && k < messages).then(|| {
            let mention = if k.is_multiple_of(10) { format!("@worker-{} ", k % 50) } else { String::new() };
            let body = format!(
                r#"{{"from":"worker-{}","channel":"ch-{}","content":"{mention}progress on task {}: tests pass, moving to the next file"}}"#,
                k % 50,
                k % 20,
                k % tasks.max(1)
            );
            post("/chat/messages", &body)
        })
    })
    .await;
    assert_eq!(chat.errors, 0);
    (creates.requests + done.requests + chat.requests) as f64 / started.elapsed().as_secs_f64()
}

/// Requests/s and p99 (ms) of an outcome.
fn summary(o: &Outcome) -> (f64, f64) {
    (o.requests as f64 / o.elapsed.as_secs_f64(), o.percentile(0.99))
}

/// What one data dir measured.
struct Measured {
    start_ms: f64,
    rss_start: f64,
    rss_loaded: f64,
    claim: (f64, f64),
    chat: (f64, f64),
    board: (f64, f64),
    messages: (f64, f64),
}

/// Starts the broker on `dir` and measures it (see the module doc).
fn measure(rt: &tokio::runtime::Runtime, dir: &Path, load: f64, seconds: f64) -> Measured {
    let t = Instant::now();
    let p = common::Process::start(dir, &[], &[]);
    let start_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (addr, pid) = (p.addr, p.child.id());
    std::thread::sleep(Duration::from_secs(1));
    let rss_start = common::rss_kib(pid) as f64 / 1024.0;
    let m = rt.block_on(async {
        // Mixed load that does not add tasks (the dir's size is the variable): a quarter post
        // chat messages, a quarter send heartbeats, a quarter read the board, a quarter read
        // a channel's newest page.
        let mixed = drive(addr, 48, load, move |c, i| {
            Some(match c % 4 {
                0 => post("/chat/messages", &format!(r#"{{"from":"mixed-{c}","content":"mixed load {i}"}}"#)),
                1 => post(&format!("/presence/mixed-{c}"), r#"{"note":"working"}"#),
                2 => get("/tasks"),
                _ => get("/chat/messages?channel=ch-7&limit=50"),
            })
        })
        .await;
        assert_eq!(mixed.errors, 0);
        let rss_loaded = common::rss_kib(pid) as f64 / 1024.0;
        // Fresh open tasks to claim, enough for the run, on top of what the dir holds.
        let fresh = (seconds * 30_000.0) as u64;
        let per = fresh.div_ceil(64);
        let made = drive(addr, 64, 1e9, move |c, i| {
            (i < per).then(|| post("/tasks", &format!(r#"{{"title":"to claim {c}-{i}"}}"#)))
        })
        .await;
        assert_eq!(made.errors, 0);
        let (_, newest) =
            common::split(reqwest::get(format!("http://{addr}/tasks?all=true&order=desc&limit=1")).await.unwrap())
                .await;
        let last: u64 = newest["tasks"][0]["id"].as_str().unwrap()[2..].parse().unwrap();
        let first = last + 1 - made.requests;
        let claims = drive(addr, 64, seconds, move |c, i| {
            let id = first + c as u64 + 64 * i;
            (id <= last).then(|| post(&format!("/tasks/T-{id}/claim"), &format!(r#"{{"agent":"claimer-{c}"}}"#)))
        })
        .await;
        let chat = drive(addr, 64, seconds, |c, i| {
            Some(post(
                "/chat/messages",
                &format!(r#"{{"from":"poster-{c}","content":"@poster-{} update {i}"}}"#, (c + 1) % 64),
            ))
        })
        .await;
        let board = drive(addr, 64, seconds, |_, _| Some(get("/tasks"))).await;
        let messages = drive(addr, 64, seconds, |_, _| Some(get("/chat/messages?channel=ch-3&limit=50"))).await;
        for (name, o) in [("claims", &claims), ("chat", &chat), ("board", &board), ("messages", &messages)] {
            assert!(o.requests > 0 && o.errors == 0, "{name}: {} requests, {} errors", o.requests, o.errors);
        }
        Measured {
            start_ms,
            rss_start,
            rss_loaded,
            claim: summary(&claims),
            chat: summary(&chat),
            board: summary(&board),
            messages: summary(&messages),
        }
    });
    p.terminate();
    m
}

fn main() {
    let (mut tasks, mut messages, mut load, mut seconds) = (200_000u64, 1_000_000u64, 60.0, 5.0);
    let mut keep: Option<std::path::PathBuf> = None;
    let mut open: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tasks" => tasks = args.next().unwrap().parse().unwrap(),
            "--messages" => messages = args.next().unwrap().parse().unwrap(),
            "--load" => load = args.next().unwrap().parse().unwrap(),
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            "--dir" => keep = Some(args.next().unwrap().into()),
            "--open" => open = Some(args.next().unwrap().parse().unwrap()),
            "--smoke" => (tasks, messages, load, seconds) = (200, 1000, 0.5, 0.3),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let temp = tempfile::tempdir().unwrap();
    let root = keep.as_deref().unwrap_or(temp.path());
    let sizes = [("empty", 0, 0), ("a tenth", tasks / 10, messages / 10), ("large", tasks, messages)];
    // The empty dir is made fresh for each run; kept ones are reused (the measurements add
    // a few tasks and messages to them).
    let _ = std::fs::remove_dir_all(root.join("empty"));
    for (name, t, m) in sizes.iter().skip(1) {
        let dir = root.join(name);
        if keep.is_some() && dir.exists() {
            continue;
        }
        let p = common::Process::start(&dir, &[], &[]);
        let o = open.unwrap_or(t / 10).min(*t);
        let rate = rt.block_on(fill(p.addr, *t, *m, o));
        p.terminate();
        let bytes: u64 = walk(&dir);
        eprintln!(
            "{name}: {t} tasks ({o} open), {m} messages written at {rate:.0} writes/s; data dir {} MiB",
            bytes >> 20
        );
    }
    println!(
        "| data dir | tasks | messages | start-up ms | RSS after start MiB | RSS after {load:.0} s mixed load MiB | claim req/s, p99 ms (64 conns) | chat req/s, p99 ms | GET /tasks req/s | GET /chat/messages?limit=50 req/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, t, m) in sizes {
        let r = measure(&rt, &root.join(name), load, seconds);
        println!(
            "| {name} | {t} | {m} | {:.0} | {:.0} | {:.0} | {:.0}, {:.2} | {:.0}, {:.2} | {:.0} | {:.0} |",
            r.start_ms, r.rss_start, r.rss_loaded, r.claim.0, r.claim.1, r.chat.0, r.chat.1, r.board.0, r.messages.0
        );
        let _ = (r.board.1, r.messages.1);
    }
}

/// Bytes of the files under `dir`.
fn walk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
