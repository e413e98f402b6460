//! Connection set-up and what idle connections cost: drives a real `muster serve` (a separate
//! process; `MUSTER_BIN` picks another build) from this process.
//!
//! ```text
//! cargo bench --bench connect                          # every measure, default sizes
//! cargo bench --bench connect -- --connects 10000 --ws 5000 --idle 15000 --subscribed 300
//! cargo bench --bench connect -- --smoke               # tiny sizes, for CI
//! ```
//!
//! - `connects`: a burst of N TCP connects at once, each then sending `GET /health`: the time
//!   to connect and the time to the answer, p50/p99/max, and how many took a second or more
//!   (a SYN dropped by a full accept queue is retried after a second);
//! - `ws`: N WebSocket handshakes, each followed by `hello`, 256 at a time: the rate, and the
//!   time to the welcome, p50/p99/max;
//! - `idle`: N connections that never send a byte: the broker's RSS before, with them open,
//!   and ten seconds after they closed; and how many the broker still held;
//! - `subscribed`: N WebSocket sessions, first with no topic, then each holding the largest
//!   subscription allowed (1,024 topics, 16 KiB of names): the broker's RSS per session.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

fn summary(name: &str, mut samples: Vec<Duration>, elapsed: Duration) {
    samples.sort_unstable();
    let stalls = samples.iter().filter(|d| **d >= Duration::from_secs(1)).count();
    println!(
        "| {name} | {} | {:.0}/s | {:.2} | {:.2} | {:.2} | {stalls} |",
        samples.len(),
        samples.len() as f64 / elapsed.as_secs_f64(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
    );
}

async fn connects(addr: std::net::SocketAddr, n: usize) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let t = Instant::now();
                let mut tcp = TcpStream::connect(addr).await.ok()?;
                let connected = t.elapsed();
                tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.ok()?;
                let mut buf = [0u8; 12];
                tcp.read_exact(&mut buf).await.ok()?;
                Some((connected, t.elapsed(), tcp))
            })
        })
        .collect();
    let mut connected = Vec::new();
    let mut answered = Vec::new();
    let mut failed = 0;
    let mut held = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Some((c, a, tcp)) => {
                connected.push(c);
                answered.push(a);
                held.push(tcp);
            }
            None => failed += 1,
        }
    }
    let elapsed = started.elapsed();
    summary("TCP connect", connected, elapsed);
    summary("connect + GET /health answered", answered, elapsed);
    if failed > 0 {
        println!("({failed} of {n} failed)");
    }
}

async fn websockets(addr: std::net::SocketAddr, n: usize) {
    let gate = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let t = Instant::now();
                let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.ok()?;
                let hello = format!(r#"{{"id":0,"op":"hello","agent":"bench-{i}"}}"#);
                ws.send(tokio_tungstenite::tungstenite::Message::text(hello)).await.ok()?;
                ws.next().await?.ok()?;
                let took = t.elapsed();
                let _ = ws.close(None).await;
                Some(took)
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        if let Some(took) = task.await.unwrap() {
            samples.push(took);
        }
    }
    summary("WebSocket handshake + hello", samples, started.elapsed());
}

async fn idle(addr: std::net::SocketAddr, pid: u32, n: usize) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = common::rss_kib(pid);
    let mut open = Vec::new();
    for _ in 0..n {
        match TcpStream::connect(addr).await {
            Ok(tcp) => open.push(tcp),
            Err(error) => {
                println!("connect failed after {}: {error}", open.len());
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = common::rss_kib(pid);
    // How many the broker still holds: a non-blocking read says EOF for the closed ones.
    let mut held = 0;
    for tcp in &open {
        let mut buf = [0u8; 1];
        if matches!(tcp.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            held += 1;
        }
    }
    drop(open);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = common::rss_kib(pid);
    println!(
        "| {n} idle connections opened | {held} held | RSS {baseline} KiB → {loaded} KiB ({:.1} KiB per held connection) \
         → {after} KiB 10 s after closing ({:+.0} % of the baseline) |",
        (loaded.saturating_sub(baseline)) as f64 / held.max(1) as f64,
        (after as f64 / baseline as f64 - 1.0) * 100.0
    );
}

/// Opens `n` sessions, each subscribed to `topics` topics of 16 bytes (in requests of 256);
/// returns the broker's RSS growth per session, in KiB, with the sessions still open.
async fn sessions(addr: std::net::SocketAddr, pid: u32, n: usize, topics: usize) -> (f64, Vec<WsStream>) {
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = common::rss_kib(pid);
    let mut open = Vec::new();
    for i in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
        let hello = format!(r#"{{"id":0,"op":"hello","agent":"sub-{i}-{topics}"}}"#);
        ws.send(Message::text(hello)).await.unwrap();
        ws.next().await.unwrap().unwrap();
        for chunk in 0..topics.div_ceil(256) {
            let names: Vec<String> =
                (chunk * 256..(chunk * 256 + 256).min(topics)).map(|t| format!("\"chat:c{t:0>10}\"")).collect();
            let op = format!(r#"{{"id":{},"op":"subscribe","topics":[{}]}}"#, chunk + 1, names.join(","));
            ws.send(Message::text(op)).await.unwrap();
            let reply = ws.next().await.unwrap().unwrap().into_text().unwrap();
            assert!(reply.contains(r#""ok":true"#), "{reply}");
        }
        open.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = common::rss_kib(pid);
    (after.saturating_sub(before) as f64 / n as f64, open)
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn subscribed(addr: std::net::SocketAddr, pid: u32, n: usize) {
    let (plain, open) = sessions(addr, pid, n, 0).await;
    let (full, _more) = sessions(addr, pid, n, 1024).await;
    drop(open);
    println!(
        "| {n} sessions | RSS per session: {plain:.1} KiB with no topic, {full:.1} KiB holding 1,024 topics and \
         16 KiB of names (the largest subscription allowed) |"
    );
}

fn main() {
    let mut connects_n = 10_000;
    let mut ws_n = 5_000;
    let mut idle_n = 15_000;
    let mut sub_n = 300;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--connects" => connects_n = args.next().unwrap().parse().unwrap(),
            "--ws" => ws_n = args.next().unwrap().parse().unwrap(),
            "--idle" => idle_n = args.next().unwrap().parse().unwrap(),
            "--subscribed" => sub_n = args.next().unwrap().parse().unwrap(),
            "--smoke" => (connects_n, ws_n, idle_n, sub_n) = (200, 100, 200, 5),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("| measure | n | rate | p50 ms | p99 ms | max ms | ≥ 1 s |");
    println!("|---|---|---|---|---|---|---|");
    for measure in ["connects", "ws", "idle", "subscribed"] {
        let dir = tempfile::tempdir().unwrap();
        let p = common::Process::start(&dir.path().join("data"), &[], &[]);
        rt.block_on(async {
            match measure {
                "connects" => connects(p.addr, connects_n).await,
                "ws" => websockets(p.addr, ws_n).await,
                "idle" => idle(p.addr, p.child.id(), idle_n).await,
                _ => subscribed(p.addr, p.child.id(), sub_n).await,
            }
        });
        p.terminate();
    }
}
