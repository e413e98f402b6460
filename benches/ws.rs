//! WebSocket load generator: fan-out, single-subscriber throughput, idle-connection memory,
//! connect rate and connections held — against a real `muster serve` started as a
//! separate process (release build), and the same fan-out against `nats-server`.
//!
//! ```text
//! cargo bench --bench ws                                  # every scenario
//! cargo bench --bench ws -- --scenarios fanout,nats --subscribers 1000 --seconds 10
//! cargo bench --bench ws -- --scenarios fanout,nats --rates 250,1000   # fixed publish rates instead
//! cargo bench --bench ws -- --smoke           # every scenario, tiny: that it still works (CI)
//! ```
//!
//! Scenarios:
//! - `fanout`: S subscribers on `chat`; publishers post chat messages over HTTP as fast as
//!   they can (8 connections), then paced at half that rate. Reports delivered events/s and
//!   end-to-end latency (publish → receipt) p50/p99. Each message carries its send time.
//! - `nats`: the same workload against nats-server (WebSocket listener on loopback): the
//!   publisher sends `PUB` over TCP, the subscribers `SUB` over WebSocket.
//! - `single`: one subscriber replaying a log of 200,000 events (`--replay`) from `since=0`,
//!   then one subscriber receiving live posts at full publish speed.
//! - `idle`: 10,000 idle connections (`--idle`, each said `hello`): broker RSS per connection
//!   and the connect rate; then 15,000 held (half as many again), all receiving one event.
//! - `sessions`: what one idle session costs, for agents and for observers, each on a fresh
//!   broker whose page cache is already full (200,000 chat messages written first): agent
//!   sessions are of agents that already exist (a heartbeat made each record first), so the
//!   figure is the session's and not the agent's record. `--idle` sessions each.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The clock every message's send time is read from (publishers and subscribers share it).
fn now_us(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// Finds `t=<micros>` in a frame without parsing the JSON.
fn sent_at(text: &[u8]) -> Option<u64> {
    let pos = text.windows(2).position(|w| w == b"t=")?;
    let digits = &text[pos + 2..];
    let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Latencies and counts gathered by the subscribers.
#[derive(Default)]
struct Received {
    count: AtomicU64,
    latencies: std::sync::Mutex<Vec<u32>>,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    f64::from(sorted[((sorted.len() - 1) as f64 * p) as usize]) / 1000.0
}

/// A Muster subscriber: hello on `chat`, then count frames and their latency.
async fn muster_subscriber(addr: SocketAddr, start: Instant, received: Arc<Received>, ready: Arc<AtomicU64>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    ws.send(Message::text(r#"{"id":1,"op":"hello","topics":["chat"]}"#)).await.unwrap();
    let _welcome = ws.next().await;
    ready.fetch_add(1, Ordering::Relaxed);
    let mut lat = Vec::new();
    // No timer per message: the run ends with a message saying END.
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(text) = message {
            let bytes = text.as_bytes();
            if let Some(t) = sent_at(bytes) {
                lat.push((now_us(start).saturating_sub(t)) as u32);
            } else if bytes.windows(3).any(|w| w == b"END") {
                break;
            }
        }
    }
    received.count.fetch_add(lat.len() as u64, Ordering::Relaxed);
    received.latencies.lock().unwrap().extend(lat);
}

/// A NATS subscriber over WebSocket: `SUB chat`, then count `MSG`s.
async fn nats_subscriber(addr: SocketAddr, start: Instant, received: Arc<Received>, ready: Arc<AtomicU64>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}")).await.unwrap();
    let _info = ws.next().await;
    ws.send(Message::binary(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB chat 1\r\nPING\r\n".to_vec()))
        .await
        .unwrap();
    // Wait for the PONG: the subscription is registered.
    loop {
        match ws.next().await {
            Some(Ok(m)) if m.clone().into_data().windows(4).any(|w| w == b"PONG") => break,
            Some(Ok(_)) => {}
            _ => panic!("nats subscriber closed"),
        }
    }
    ready.fetch_add(1, Ordering::Relaxed);
    let mut lat = Vec::new();
    'read: while let Some(Ok(message)) = ws.next().await {
        let data = message.into_data();
        // One WebSocket frame may carry several protocol messages.
        let mut rest = &data[..];
        while let Some(pos) = rest.windows(4).position(|w| w == b"MSG ") {
            rest = &rest[pos + 4..];
            match sent_at(rest) {
                Some(t) => lat.push((now_us(start).saturating_sub(t)) as u32),
                None if rest.windows(3).take(200).any(|w| w == b"END") => break 'read,
                None => {}
            }
        }
        if data.windows(6).any(|w| w == b"PING\r\n") {
            ws.send(Message::binary(b"PONG\r\n".to_vec())).await.unwrap();
        }
    }
    received.count.fetch_add(lat.len() as u64, Ordering::Relaxed);
    received.latencies.lock().unwrap().extend(lat);
}

/// A chat message body of about the size of a Muster chat event, carrying its send time.
fn payload(start: Instant, n: u64) -> String {
    format!("t={} status update number {n} from the publisher, with some padding to look like real chat", now_us(start))
}

/// Publishes until `stop`, over `conns` keep-alive HTTP connections to Muster, at most
/// `rate` messages/s in total (0: as fast as possible). Returns the number sent.
async fn muster_publish(addr: SocketAddr, start: Instant, conns: usize, rate: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut tasks = Vec::new();
    for c in 0..conns {
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut sent = 0u64;
            let interval = if rate == 0 { Duration::ZERO } else { Duration::from_secs_f64(conns as f64 / rate as f64) };
            // Staggered, so that the publishers together send evenly spaced messages.
            let mut next = tokio::time::Instant::now() + interval.mul_f64(c as f64 / conns as f64);
            while !stop.load(Ordering::Relaxed) {
                if !interval.is_zero() {
                    tokio::time::sleep_until(next).await;
                    next += interval;
                }
                let body = format!(r#"{{"from":"pub-{c}","content":"{}","channel":"general"}}"#, payload(start, sent));
                let req = format!(
                    "POST /chat/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(req.as_bytes()).await.unwrap();
                // Read one response (headers + body; the body is small).
                let mut got = Vec::new();
                loop {
                    let n = stream.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    got.extend_from_slice(&buf[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = std::str::from_utf8(&got[..end]).unwrap().to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            assert!(head.starts_with("http/1.1 201"), "{head}");
                            break;
                        }
                    }
                }
                sent += 1;
            }
            sent
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

/// Publishes to NATS over its TCP port, paced like [`muster_publish`].
async fn nats_publish(addr: SocketAddr, start: Instant, conns: usize, rate: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut tasks = Vec::new();
    for c in 0..conns {
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = stream.read(&mut buf).await.unwrap(); // INFO
            stream.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n").await.unwrap();
            let mut sent = 0u64;
            let interval = if rate == 0 { Duration::ZERO } else { Duration::from_secs_f64(conns as f64 / rate as f64) };
            // Staggered, so that the publishers together send evenly spaced messages.
            let mut next = tokio::time::Instant::now() + interval.mul_f64(c as f64 / conns as f64);
            while !stop.load(Ordering::Relaxed) {
                if !interval.is_zero() {
                    tokio::time::sleep_until(next).await;
                    next += interval;
                }
                // Same shape and size as the event Muster delivers for a chat post.
                let body = format!(
                    r#"{{"seq":{sent},"at":"2026-11-25T10:00:00.000Z","type":"chat.message","data":{{"message":{{"id":"M-1","seq":1,"channel":"general","from":"pub","content":"{}","mentions":[],"to":null,"replyTo":null,"at":"2026-11-25T10:00:00.000Z"}}}}}}"#,
                    payload(start, sent)
                );
                // PING after each PUB: wait for the server like an acknowledged publish.
                let msg = format!("PUB chat {}\r\n{body}\r\nPING\r\n", body.len());
                stream.write_all(msg.as_bytes()).await.unwrap();
                loop {
                    let n = stream.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    if buf[..n].windows(4).any(|w| w == b"PONG") {
                        break;
                    }
                }
                sent += 1;
            }
            sent
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Muster,
    Nats,
}

/// One fan-out run; returns (published, delivered/s, p50 ms, p99 ms).
async fn fanout(
    target: Target,
    addr: SocketAddr,
    pub_addr: SocketAddr,
    subscribers: usize,
    seconds: f64,
    rate: u64,
) -> (u64, f64, f64, f64) {
    let start = Instant::now();
    let received = Arc::new(Received::default());
    let ready = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for i in 0..subscribers {
        // At most 100 handshakes at once: 10,000 started together overflow the listen
        // backlog, and connects fail part way.
        while i as u64 >= ready.load(Ordering::Relaxed) + 100 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (received, ready) = (Arc::clone(&received), Arc::clone(&ready));
        subs.push(tokio::spawn(async move {
            match target {
                Target::Muster => muster_subscriber(addr, start, received, ready).await,
                Target::Nats => nats_subscriber(addr, start, received, ready).await,
            }
        }));
    }
    while ready.load(Ordering::Relaxed) < subscribers as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop_pub = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = Arc::clone(&stop_pub);
        tokio::spawn(async move {
            match target {
                Target::Muster => muster_publish(pub_addr, start, 8, rate, stop).await,
                Target::Nats => nats_publish(pub_addr, start, 8, rate, stop).await,
            }
        })
    };
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop_pub.store(true, Ordering::Relaxed);
    let published = publisher.await.unwrap();
    let window = t0.elapsed().as_secs_f64();
    // The last message tells every subscriber to stop once it has read everything before.
    send_end(target, pub_addr).await;
    for s in subs {
        s.await.unwrap();
    }
    let mut lat = std::mem::take(&mut *received.latencies.lock().unwrap());
    lat.sort_unstable();
    let delivered = received.count.load(Ordering::Relaxed);
    let expected = published * subscribers as u64;
    if delivered < expected {
        eprintln!("  note: {delivered} delivered of {expected} expected");
    }
    (published, delivered as f64 / window, percentile(&lat, 0.5), percentile(&lat, 0.99))
}

/// Publishes the END message.
async fn send_end(target: Target, addr: SocketAddr) {
    match target {
        Target::Muster => {
            let r = reqwest::Client::new()
                .post(format!("http://{addr}/chat/messages"))
                .body(r#"{"from":"pub","content":"END","channel":"general"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        Target::Nats => {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = stream.read(&mut buf).await.unwrap();
            stream.write_all(b"CONNECT {\"verbose\":false}\r\nPUB chat 3\r\nEND\r\nPING\r\n").await.unwrap();
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 || buf[..n].windows(4).any(|w| w == b"PONG") {
                    break;
                }
            }
        }
    }
}

/// Opens `n` sessions that said hello (as agents `agent-<i>`, or as observers), `100` at a
/// time; returns them.
async fn open_sessions(
    addr: SocketAddr,
    kind: &str,
    n: usize,
) -> Vec<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>> {
    let mut conns = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(100) {
        let mut pending = Vec::new();
        for i in batch * 100..(batch * 100 + 100).min(n) {
            let hello = match kind {
                "agent" => format!(r#"{{"id":1,"op":"hello","agent":"agent-{i}","topics":["tasks"]}}"#),
                _ => r#"{"id":1,"op":"hello","topics":["tasks"]}"#.to_owned(),
            };
            pending.push(tokio::spawn(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
                ws.send(Message::text(hello)).await.unwrap();
                let welcome = ws.next().await.unwrap().unwrap();
                assert!(welcome.to_text().unwrap().contains("\"ok\":true"), "{welcome}");
                ws
            }));
        }
        for c in pending {
            conns.push(c.await.unwrap());
        }
    }
    conns
}

/// The broker's RSS growth per idle session of `kind`, in KiB (see the `sessions` scenario):
/// sessions of agents that already exist, or of observers.
async fn session_cost(addr: SocketAddr, pid: u32, kind: &str, n: usize, fill: u64) -> f64 {
    // A full page cache: chat history written first.
    let stop = Arc::new(AtomicBool::new(false));
    let filler = tokio::spawn(muster_publish(addr, Instant::now(), 32, 0, Arc::clone(&stop)));
    let health = || async {
        let h: serde_json::Value = reqwest::get(format!("http://{addr}/health")).await.unwrap().json().await.unwrap();
        h["head"].as_u64().unwrap()
    };
    while health().await < fill {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    filler.await.unwrap();
    if kind == "agent" {
        // Every agent exists before its session (a heartbeat over HTTP made its record), so
        // that the figure is the session's cost, not the record's.
        let http = reqwest::Client::new();
        let mut pending = futures_util::stream::iter(0..n)
            .map(|i| {
                let http = http.clone();
                async move {
                    let r = http.post(format!("http://{addr}/presence/agent-{i}")).body("{}").send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
            .buffer_unordered(32);
        while pending.next().await.is_some() {}
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = common::rss_kib(pid);
    let sessions = open_sessions(addr, kind, n).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = common::rss_kib(pid);
    drop(sessions);
    (after as f64 - before as f64) / n as f64
}

/// Starts nats-server with a WebSocket listener; returns (process, ws addr, tcp addr).
fn start_nats(dir: &std::path::Path) -> (std::process::Child, SocketAddr, SocketAddr) {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (ws, tcp) = (free(), free());
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{}\nmax_payload: 1MB\nwrite_deadline: \"10s\"\nwebsocket {{\n  listen: \"127.0.0.1:{}\"\n  no_tls: true\n}}\n",
            tcp.port(),
            ws.port()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new("nats-server")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server (apt-get install nats-server)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(ws).is_ok() && std::net::TcpStream::connect(tcp).is_ok() {
            return (child, ws, tcp);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("nats-server did not start");
}

fn main() {
    let mut seconds = 10.0;
    let mut subscribers = 1000;
    let mut replay: u64 = 200_000;
    let mut idle: usize = 10_000;
    let mut smoke = false;
    let mut scenarios: Vec<String> = ["fanout", "nats", "single", "idle", "sessions"].map(String::from).to_vec();
    let mut fill: u64 = 200_000;
    // Fixed publish rates (messages/s) to run instead of "max, then paced at half".
    let mut rates: Vec<u64> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            "--subscribers" => subscribers = args.next().unwrap().parse().unwrap(),
            "--scenarios" => scenarios = args.next().unwrap().split(',').map(str::to_owned).collect(),
            "--replay" => replay = args.next().unwrap().parse().unwrap(),
            "--idle" => idle = args.next().unwrap().parse().unwrap(),
            "--rates" => rates = args.next().unwrap().split(',').map(|r| r.parse().unwrap()).collect(),
            "--smoke" => (seconds, subscribers, replay, idle, fill, smoke) = (0.5, 4, 500, 100, 500, true),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut max_rates: Vec<(&str, f64)> = Vec::new();
    for scenario in &scenarios {
        let dir = tempfile::tempdir().unwrap();
        match scenario.as_str() {
            "fanout" | "nats" => {
                let (target, name) =
                    if scenario == "fanout" { (Target::Muster, "muster") } else { (Target::Nats, "nats") };
                let (mut nats, muster, addr, pub_addr);
                if target == Target::Muster {
                    // Room for every subscriber (observers are limited to 1,000 by default).
                    let places = ["--max-connections", "16000", "--max-observers", "16000"];
                    muster = Some(common::Process::start(&dir.path().join("data"), &[], &places));
                    addr = muster.as_ref().unwrap().addr;
                    pub_addr = addr;
                    nats = None;
                } else {
                    let (child, ws, tcp) = start_nats(dir.path());
                    nats = Some(child);
                    muster = None;
                    addr = ws;
                    pub_addr = tcp;
                }
                for &fixed in &rates {
                    let (published, rate, p50, p99) =
                        rt.block_on(fanout(target, addr, pub_addr, subscribers, seconds, fixed));
                    println!(
                        "| {name} fan-out, {fixed} msgs/s | {subscribers} | {:.0} published/s | {rate:.0} | {p50:.2} | {p99:.2} |",
                        published as f64 / seconds
                    );
                }
                if rates.is_empty() {
                    let (published, rate, p50, p99) =
                        rt.block_on(fanout(target, addr, pub_addr, subscribers, seconds, 0));
                    println!(
                        "| {name} fan-out, max | {subscribers} | {:.0} published/s | {rate:.0} | {p50:.2} | {p99:.2} |",
                        published as f64 / seconds
                    );
                    max_rates.push((name, rate));
                    let half = (published as f64 / seconds / 2.0) as u64;
                    let (published, rate, p50, p99) =
                        rt.block_on(fanout(target, addr, pub_addr, subscribers, seconds, half));
                    println!(
                        "| {name} fan-out, paced at half | {subscribers} | {:.0} published/s | {rate:.0} | {p50:.2} | {p99:.2} |",
                        published as f64 / seconds
                    );
                }
                if let Some(n) = nats.as_mut() {
                    let _ = n.kill();
                    let _ = n.wait();
                }
                if let Some(m) = muster {
                    m.terminate();
                }
            }
            "single" => {
                let p = common::Process::start(&dir.path().join("data"), &[], &[]);
                let addr = p.addr;
                rt.block_on(async {
                    // A log of `replay` chat events, written as fast as 64 connections go.
                    let stop = Arc::new(AtomicBool::new(false));
                    let start = Instant::now();
                    let filler = tokio::spawn(muster_publish(addr, start, 64, 0, Arc::clone(&stop)));
                    loop {
                        let h: serde_json::Value =
                            reqwest::get(format!("http://{addr}/health")).await.unwrap().json().await.unwrap();
                        if h["head"].as_u64().unwrap() >= replay {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    stop.store(true, Ordering::Relaxed);
                    filler.await.unwrap();
                    let h: serde_json::Value =
                        reqwest::get(format!("http://{addr}/health")).await.unwrap().json().await.unwrap();
                    let head = h["head"].as_u64().unwrap();
                    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
                    let t = Instant::now();
                    ws.send(Message::text(r#"{"id":1,"op":"hello","topics":["*"],"since":0}"#)).await.unwrap();
                    let mut n = 0u64;
                    while n < head {
                        if let Some(Ok(Message::Text(text))) = ws.next().await
                            && text.as_str().starts_with("{\"seq\"")
                        {
                            n += 1;
                        }
                    }
                    let secs = t.elapsed().as_secs_f64();
                    println!(
                        "| single subscriber, replay of {head} events from since=0 | 1 | — | {:.0} | — | — |",
                        n as f64 / secs
                    );
                });
                let (published, rate, p50, p99) = rt.block_on(fanout(Target::Muster, addr, addr, 1, seconds, 0));
                println!(
                    "| single subscriber, live at full publish speed | 1 | {:.0} published/s | {rate:.0} | {p50:.2} | {p99:.2} |",
                    published as f64 / seconds
                );
                p.terminate();
            }
            "idle" => {
                let p = common::Process::start(&dir.path().join("data"), &[], &["--max-connections", "16000"]);
                let addr = p.addr;
                let pid = p.child.id();
                rt.block_on(async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let before = common::rss_kib(pid);
                    let mut conns = Vec::new();
                    let t = Instant::now();
                    for batch in 0..idle.div_ceil(100) {
                        let mut pending = Vec::new();
                        for _ in 0..100.min(idle - batch * 100) {
                            pending.push(tokio::spawn(async move {
                                let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
                                ws.send(Message::text(r#"{"id":1,"op":"hello","topics":["tasks"]}"#)).await.unwrap();
                                let _ = ws.next().await;
                                ws
                            }));
                        }
                        for c in pending {
                            conns.push(c.await.unwrap());
                        }
                    }
                    let connect_secs = t.elapsed().as_secs_f64();
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let after = common::rss_kib(pid);
                    println!(
                        "| idle connections | {} | connect + hello: {:.0}/s | RSS {} → {} KiB | {:.2} KiB per connection | |",
                        conns.len(),
                        conns.len() as f64 / connect_secs,
                        before,
                        after,
                        (after - before) as f64 / conns.len() as f64
                    );
                    // Half as many again held: each receives one event.
                    for batch in 0..(idle / 2).div_ceil(100) {
                        let mut pending = Vec::new();
                        for _ in 0..100.min(idle / 2 - batch * 100) {
                            pending.push(tokio::spawn(async move {
                                let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
                                ws.send(Message::text(r#"{"id":1,"op":"hello","topics":["tasks"]}"#)).await.unwrap();
                                let _ = ws.next().await;
                                ws
                            }));
                        }
                        for c in pending {
                            conns.push(c.await.unwrap());
                        }
                    }
                    let http = reqwest::Client::new();
                    http.post(format!("http://{addr}/tasks")).body(r#"{"title":"to everyone"}"#).send().await.unwrap();
                    let mut got = 0;
                    let mut readers = Vec::new();
                    for mut ws in conns {
                        readers.push(tokio::spawn(async move {
                            let m = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
                            matches!(m, Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("to everyone"))
                        }));
                    }
                    let held = readers.len();
                    for r in readers {
                        if r.await.unwrap() {
                            got += 1;
                        }
                    }
                    println!("| connections held | {held} | {got} received the event | RSS {} KiB | | |", common::rss_kib(pid));
                    assert!(!smoke || got == held, "{got} of {held} connections received the event");
                });
                p.terminate();
            }
            "sessions" => {
                for kind in ["agent", "observer"] {
                    let p = common::Process::start(&dir.path().join(kind), &[], &["--max-connections", "16000"]);
                    let (addr, pid) = (p.addr, p.child.id());
                    let per = rt.block_on(session_cost(addr, pid, kind, idle, fill));
                    println!("| idle {kind} sessions | {idle} | | {per:.2} KiB per session | | |");
                    p.terminate();
                }
            }
            other => panic!("unknown scenario {other}"),
        }
    }
    if let (Some((_, m)), Some((_, n))) =
        (max_rates.iter().find(|(k, _)| *k == "muster"), max_rates.iter().find(|(k, _)| *k == "nats"))
    {
        println!("\nMuster/NATS delivered events/s at max rate: {:.2}", m / n);
    }
}
