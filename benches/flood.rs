//! Hostile load: WebSocket clients that say `hello`, then send `chat.read` requests as fast
//! as they can and never read an answer — against a real `muster serve` (a separate
//! process). Samples the broker's RSS and thread count from `/proc` every 50 ms and counts
//! the flooders the broker closed (their writes fail).
//!
//! ```text
//! cargo bench --bench flood                              # 50 flooders, 10 s
//! cargo bench --bench flood -- --flooders 10 --seconds 5
//! cargo bench --bench flood -- --smoke                   # 2 flooders, 1 s (CI)
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// One flooder: hello, then requests until the broker closes the connection or `stop`.
/// Returns whether the broker closed it.
async fn flood(addr: std::net::SocketAddr, n: usize, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) -> bool {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    let hello = format!(r#"{{"id":0,"op":"hello","agent":"flooder-{n}","topics":[]}}"#);
    ws.send(Message::text(hello)).await.unwrap();
    let mut id = 1u64;
    while !stop.load(Ordering::Relaxed) {
        // 2,000 requests per turn of the loop, queued without flushing, then one flush.
        for _ in 0..2000 {
            let frame = format!(r#"{{"id":{id},"op":"chat.read","channel":"general","limit":50}}"#);
            if ws.feed(Message::text(frame)).await.is_err() {
                return true;
            }
            id += 1;
        }
        if ws.flush().await.is_err() {
            return true;
        }
        sent.fetch_add(2000, Ordering::Relaxed);
        tokio::task::yield_now().await;
    }
    false
}

fn main() {
    let (mut flooders, mut seconds) = (50usize, 10.0f64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--flooders" => flooders = args.next().unwrap().parse().unwrap(),
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            "--smoke" => (flooders, seconds) = (2, 1.0),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Process::start(&dir.path().join("data"), &[], &[]);
    let pid = broker.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (closed, peak, before, health) = rt.block_on(async {
        std::thread::sleep(Duration::from_millis(300));
        let before = (common::rss_kib(pid), common::proc_status(pid, "Threads"));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> =
            (0..flooders).map(|n| tokio::spawn(flood(broker.addr, n, Arc::clone(&stop), Arc::clone(&sent)))).collect();
        let mut peak = before;
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        while Instant::now() < end {
            let now = (common::rss_kib(pid), common::proc_status(pid, "Threads"));
            if now.0 > peak.0 {
                peak = now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Whether the broker still answers others, while the flooders are still at it.
        let health = reqwest::Client::new()
            .get(broker.url("/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        stop.store(true, Ordering::Relaxed);
        let mut closed = 0;
        for t in tasks {
            closed += usize::from(t.await.unwrap());
        }
        eprintln!("  {} requests sent", sent.load(Ordering::Relaxed));
        (closed, peak, before, health)
    });
    println!(
        "| flooders | before | peak RSS | threads at peak | flooders closed by the broker | /health during the flood |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {flooders} | {:.0} MiB | {:.0} MiB | {} | {closed} | {health} |",
        before.0 as f64 / 1024.0,
        peak.0 as f64 / 1024.0,
        peak.1
    );
    assert_eq!(health, 200, "the broker stopped answering during the flood");
    broker.terminate();
}
