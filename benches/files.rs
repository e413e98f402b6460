//! File reservations under attack (issue 25): what one reserve costs against 10,000 held
//! reservations, whatever its patterns, and what adversarial reserves cost everyone else.
//! Drives a real `muster serve` (a separate process, release build) over HTTP.
//!
//! ```text
//! cargo bench --bench files                       # both parts, 3 runs
//! cargo bench --bench files -- --parts reserve --held 10000 --runs 3
//! cargo bench --bench files -- --smoke            # tiny, checks the answers (CI)
//! ```
//!
//! - `reserve`: a fresh broker holds `--held` reservations, either **ordinary** (100 agents:
//!   seven in ten a directory, two a file, one a glob like `*/g7.gen`, as in the load
//!   bench) or **adversarial** (agents of 1,000 each, each agent's in a directory of its own:
//!   `zone3/` + `*[!b]`×7 + a 200-byte literal + `*`; held by several agents, unanchored
//!   ones would overlap). Then `eve` sends reserves of one pattern, one at a time, and each kind's latency
//!   is reported (p50, p99, max, and the answers), each sent alone (50 ms apart: a client
//!   sending costly reserves back to back gets a share of the CPU, measured by the second
//!   part, not their cost): the **attack** pattern (it overlaps: 409
//!   with 20 conflicts), a **disjoint** one that must be checked against every held pattern
//!   (`[!z]`×16 + `a`: refused at the step limit where the held are adversarial), a
//!   **generated** family (seeded random globs of up to 16 wildcards, 256 bytes), and an
//!   **ordinary** file of her own (reserved, then released).
//! - `interference`: 4 agents post chat at a fixed rate (50 posts/s each) for `--seconds`,
//!   first alone (idle), then while 8 connections send adversarial reserves in a loop
//!   (attack, disjoint and too-complex patterns in turn) against 1,000 held adversarial
//!   reservations; reports the chat p50/p99 of both and their ratio.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod driver;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use driver::{Conn, drive, post};

/// The attack's pattern: 236 bytes, 15 wildcards, several hundred states.
fn attack(i: usize) -> String {
    let letters: String = (0..196).map(|k| char::from(b'a' + ((k * 7 + k / 26) % 26) as u8)).collect();
    format!("{}{i:04}{letters}*", "*[!b]".repeat(7))
}

/// One segment of at most 33 characters: it shares no path with an attack pattern, whose
/// last segment holds 200 bytes, but must be checked against each.
fn disjoint() -> String {
    format!("{}a", "[!z]".repeat(16))
}

/// A pattern whose automaton is too large: refused when read.
fn too_complex() -> String {
    format!("*a{}b*", "?".repeat(8))
}

/// A small deterministic generator (xorshift), so that every run sends the same family.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Random globs of up to 16 wildcards and 256 bytes: runs of literals, `*`, `?`, negated and
/// plain classes, `**` segments; one in four anchored under a directory.
fn generated(count: usize) -> Vec<String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    while out.len() < count {
        let mut p = String::new();
        if rng.next(4) == 0 {
            p.push_str("src/");
        }
        let mut wildcards = 0;
        while p.len() < 40 + rng.next(200) && wildcards < 16 {
            match rng.next(8) {
                0 => p.push('*'),
                1 => p.push('?'),
                2 => p.push_str("[!b]"),
                3 => p.push_str("[a-f]"),
                4 if !p.is_empty() && !p.ends_with('/') => p.push_str("/**/"),
                _ => {
                    let n = 1 + rng.next(40);
                    p.extend((0..n).map(|_| char::from(b'a' + rng.next(26) as u8)));
                    continue;
                }
            }
            wildcards += 1;
        }
        let p = p.trim_end_matches('/').to_owned();
        if p.len() <= 256 && muster_protocol::glob::Glob::parse(&p).is_ok() {
            out.push(p);
        }
    }
    out
}

fn body(agent: &str, patterns: &[String]) -> String {
    serde_json::json!({"repo": "app", "agent": agent, "patterns": patterns}).to_string()
}

/// Makes the held reservations (not timed).
async fn hold(addr: SocketAddr, held: usize, adversarial: bool) {
    // One adversarial pattern per request: compiling one takes most of a request's budget.
    let requests: Vec<(String, Vec<String>)> = if adversarial {
        (0..held)
            .map(|k| (format!("mallory-{}", k / 1000), vec![format!("zone{}/{}", k / 1000, attack(k % 1000))]))
            .collect()
    } else {
        (0..held)
            .map(|k| {
                let pattern = match k % 10 {
                    0..=6 => format!("lib/area{k}/**"),
                    7 | 8 => format!("docs/d{k}.md"),
                    _ => format!("*/g{k}.gen"),
                };
                (format!("owner-{}", k % 100), vec![pattern])
            })
            .collect()
    };
    let requests = std::sync::Arc::new(requests);
    let n = requests.len() as u64;
    let o = drive(addr, 4, 3600.0, move |c, i| {
        let k = i * 4 + c as u64;
        (k < n).then(|| {
            let (agent, patterns) = &requests[k as usize];
            post("/files/reserve", &body(agent, patterns))
        })
    })
    .await;
    assert_eq!(o.errors, 0, "the held reservations could not all be made");
}

/// Latencies (ms) and the statuses of one kind of reserve.
#[derive(Default)]
struct Kind {
    ms: Vec<f64>,
    statuses: std::collections::BTreeMap<u16, usize>,
}

impl Kind {
    fn row(&mut self, part: &str, name: &str) {
        self.ms.sort_by(f64::total_cmp);
        let at = |p: f64| self.ms[((self.ms.len() - 1) as f64 * p).round() as usize];
        let statuses: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{n}×{s}")).collect();
        println!(
            "| {part} | {name} | {} | {:.2} | {:.2} | {:.2} | {} |",
            self.ms.len(),
            at(0.5),
            at(0.99),
            self.ms[self.ms.len() - 1],
            statuses.join(" ")
        );
    }
}

async fn timed(conn: &mut Conn, kind: &mut Kind, request: &[u8]) -> u16 {
    let t = Instant::now();
    let (status, _) = conn.send(request).await;
    kind.ms.push(t.elapsed().as_secs_f64() * 1000.0);
    *kind.statuses.entry(status).or_default() += 1;
    status
}

/// [`timed`], then a pause: the broker gives costly checks a tenth of a core past a burst
/// (`api/matcher.rs`), so a client sending them back to back measures that share, not
/// what one costs. 50 ms apart, a check of up to 5 ms never waits for it.
async fn timed_alone(conn: &mut Conn, kind: &mut Kind, request: &[u8]) -> u16 {
    let status = timed(conn, kind, request).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    status
}

fn reserve_part(rt: &tokio::runtime::Runtime, held: usize, adversarial: bool, rounds: usize, smoke: bool) {
    let dir = tempfile::tempdir().unwrap();
    let p = common::Process::start(&dir.path().join("data"), &[], &[]);
    let family = generated(rounds * 4);
    let label = if adversarial { "adversarial" } else { "ordinary" };
    rt.block_on(async {
        hold(p.addr, held, adversarial).await;
        let mut conn = Conn::open(p.addr).await;
        let before = match_histogram(p.addr).await;
        let mut kinds: Vec<(&str, Kind)> =
            ["attack", "disjoint", "generated, reserved", "generated, refused", "ordinary file"]
                .map(|k| (k, Kind::default()))
                .into();
        for round in 0..rounds {
            timed_alone(&mut conn, &mut kinds[0].1, &post("/files/reserve", &body("eve", &[attack(5000 + round)]))).await;
            timed_alone(&mut conn, &mut kinds[1].1, &post("/files/reserve", &body("eve", &[disjoint()]))).await;
            for pattern in &family[round * 4..round * 4 + 4] {
                let request = post("/files/reserve", &body("eve", std::slice::from_ref(pattern)));
                let mut kind = Kind::default();
                let status = timed_alone(&mut conn, &mut kind, &request).await;
                let into = if status == 200 { 2 } else { 3 };
                kinds[into].1.ms.extend(kind.ms);
                *kinds[into].1.statuses.entry(status).or_default() += 1;
                if status == 200 {
                    conn.send(&post("/files/release", &body("eve", std::slice::from_ref(pattern)))).await;
                }
            }
            let file = vec![format!("work/eve/f{round}.rs")];
            timed_alone(&mut conn, &mut kinds[4].1, &post("/files/reserve", &body("eve", &file))).await;
            conn.send(&post("/files/release", &body("eve", &file))).await;
        }
        let after = match_histogram(p.addr).await;
        kinds.retain(|(_, kind)| !kind.ms.is_empty());
        for (name, kind) in &mut kinds {
            if smoke {
                let unexpected: Vec<_> = kind.statuses.keys().filter(|s| ![200, 409].contains(*s)).collect();
                assert!(unexpected.is_empty(), "{name}: answered {unexpected:?}");
            }
            kind.row(&format!("{label}, {held} held"), name);
        }
        // The broker's own measure of the checks alone (no HTTP, no disk): every request
        // of the loop above, from its histogram (bucket bounds, so "at most").
        let counts: Vec<u64> = after.iter().zip(&before).map(|((_, a), (_, b))| a - b).collect();
        let total = counts.last().copied().unwrap_or(0);
        let bound = |share: f64| {
            let need = (total as f64 * share).ceil() as u64;
            after.iter().zip(&counts).find(|(_, n)| **n >= need).map_or("?".into(), |((le, _), _)| le.clone())
        };
        println!(
            "| {label}, {held} held | the checks alone (muster_match_seconds, {total}) | | ≤ {} s | ≤ {} s | ≤ {} s | |",
            bound(0.5),
            bound(0.99),
            bound(1.0)
        );
    });
    p.terminate();
}

/// The cumulative buckets of `muster_match_seconds`: (upper bound, count), `+Inf` last.
async fn match_histogram(addr: SocketAddr) -> Vec<(String, u64)> {
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("muster_match_seconds_bucket{le=\""))
        .map(|rest| {
            let (le, count) = rest.split_once("\"} ").unwrap();
            (le.to_owned(), count.parse().unwrap())
        })
        .collect()
}

/// Posts at `per_second` from each of `agents` connections for `seconds`; the latencies.
async fn paced_chat(addr: SocketAddr, agents: usize, per_second: f64, seconds: f64) -> Kind {
    let every = Duration::from_secs_f64(1.0 / per_second);
    let handles: Vec<_> = (0..agents)
        .map(|a| {
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await;
                let mut kind = Kind::default();
                let start = tokio::time::Instant::now();
                let mut i = 0u32;
                while start.elapsed().as_secs_f64() < seconds {
                    let request = post(
                        "/chat/messages",
                        &format!(r#"{{"from":"agent-{a}","content":"@agent-{} update {i}"}}"#, (a + 1) % agents),
                    );
                    timed(&mut conn, &mut kind, &request).await;
                    i += 1;
                    tokio::time::sleep_until(start + every * i).await;
                }
                kind
            })
        })
        .collect();
    let mut all = Kind::default();
    for h in handles {
        let kind = h.await.unwrap();
        all.ms.extend(kind.ms);
        for (s, n) in kind.statuses {
            *all.statuses.entry(s).or_default() += n;
        }
    }
    all
}

fn interference_part(rt: &tokio::runtime::Runtime, held: usize, seconds: f64, smoke: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let p = common::Process::start(&dir.path().join("data"), &[], &[]);
    let ratio = rt.block_on(async {
        hold(p.addr, held, true).await;
        let mut idle = paced_chat(p.addr, 4, 50.0, seconds).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The attackers run on a thread of their own, so that reading their answers never
        // delays the chat agents' measurements (the generator's thread).
        let (addr, flag) = (p.addr, stop.clone());
        let attackers = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let tasks: Vec<_> = (0..8)
                    .map(|c| {
                        let stop = flag.clone();
                        tokio::spawn(async move {
                            let mut conn = Conn::open(addr).await;
                            let mut kind = Kind::default();
                            let mut i = 0;
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                let pattern = match i % 3 {
                                    0 => attack(10_000 + c * 1000 + i),
                                    1 => disjoint(),
                                    _ => too_complex(),
                                };
                                let request = post("/files/reserve", &body(&format!("eve-{c}"), &[pattern]));
                                timed(&mut conn, &mut kind, &request).await;
                                i += 1;
                            }
                            kind
                        })
                    })
                    .collect();
                let mut all = Kind::default();
                for task in tasks {
                    let kind = task.await.unwrap();
                    all.ms.extend(kind.ms);
                    for (s, n) in kind.statuses {
                        *all.statuses.entry(s).or_default() += n;
                    }
                }
                all
            })
        });
        let mut attacked = paced_chat(p.addr, 4, 50.0, seconds).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut attacks = attackers.join().unwrap();
        if smoke {
            for kind in [&idle, &attacked] {
                assert_eq!(kind.statuses.keys().collect::<Vec<_>>(), [&201], "chat posts failed");
            }
        }
        idle.row("interference", "chat, idle");
        attacked.row("interference", "chat, under 8 attacking connections");
        attacks.row("interference", "the attackers' reserves");
        let p99 = |k: &Kind| k.ms[((k.ms.len() - 1) as f64 * 0.99).round() as usize];
        p99(&attacked) / p99(&idle)
    });
    p.terminate();
    ratio
}

fn main() {
    let (mut held, mut rounds, mut runs, mut seconds, mut smoke) = (10_000, 50, 3, 10.0, false);
    let mut parts = vec!["reserve".to_owned(), "interference".to_owned()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--held" => held = args.next().unwrap().parse().unwrap(),
            "--rounds" => rounds = args.next().unwrap().parse().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            "--parts" => parts = args.next().unwrap().split(',').map(str::to_owned).collect(),
            "--smoke" => (held, rounds, runs, seconds, smoke) = (200, 3, 1, 0.5, true),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    // One thread: the generator's connections wait on the broker, and a second thread would
    // take CPU from it on a small machine.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!("| part | reserve | count | p50 ms | p99 ms | max ms | answers |");
    println!("|---|---|---|---|---|---|---|");
    for _ in 0..runs {
        for part in &parts {
            match part.as_str() {
                "reserve" => {
                    reserve_part(&rt, held, false, rounds, smoke);
                    reserve_part(&rt, held, true, rounds, smoke);
                }
                "interference" => {
                    let ratio = interference_part(&rt, held.min(1000), seconds, smoke);
                    println!("| interference | chat p99 under attack / idle | | | {ratio:.2}× | | |");
                }
                other => panic!("unknown part {other}"),
            }
        }
    }
}
