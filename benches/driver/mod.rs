//! The benches' HTTP driver: a minimal keep-alive HTTP/1.1 client (one request in flight
//! per connection), so that the generator spends as little CPU as possible next to the
//! broker on a small machine, and `drive`, which runs many connections for a while.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub(crate) async fn open(addr: std::net::SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream, buf: Vec::with_capacity(64 * 1024) }
    }

    /// Sends one request and reads the whole response; returns the status and body length.
    pub(crate) async fn send(&mut self, request: &[u8]) -> (u16, usize) {
        self.stream.write_all(request).await.unwrap();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).unwrap();
                let status: u16 = head[9..12].parse().unwrap();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                let total = end + 4 + len;
                while self.buf.len() < total {
                    self.fill().await;
                }
                self.buf.drain(..total);
                return (status, len);
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "broker closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

pub(crate) fn post(path: &str, body: &str) -> Vec<u8> {
    // With its content type, as agents send it (and as a peer may require: reflectt-node
    // answers 415 without it).
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What one scenario measured.
pub(crate) struct Outcome {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latencies_us: Vec<u32>,
    pub(crate) bytes: u64,
}

impl Outcome {
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// Runs `connections` loops for `seconds`; `make(c, i)` builds the i-th request of
/// connection c (None: this connection is done).
pub(crate) async fn drive(
    addr: std::net::SocketAddr,
    connections: usize,
    seconds: f64,
    make: impl Fn(usize, u64) -> Option<Vec<u8>> + Send + Sync + Clone + 'static,
) -> Outcome {
    drive_spread(&[addr], connections, seconds, make).await
}

/// [`drive`] with the connections spread over several brokers (a cluster's nodes):
/// connection c goes to `addrs[c % addrs.len()]`.
pub(crate) async fn drive_spread(
    addrs: &[std::net::SocketAddr],
    connections: usize,
    seconds: f64,
    make: impl Fn(usize, u64) -> Option<Vec<u8>> + Send + Sync + Clone + 'static,
) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..connections {
        let make = make.clone();
        let addr = addrs[c % addrs.len()];
        handles.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let (mut lat, mut errors, mut bytes) = (Vec::new(), 0u64, 0u64);
            let mut i = 0;
            while Instant::now() < deadline {
                let Some(request) = make(c, i) else { break };
                let t = Instant::now();
                let (status, len) = conn.send(&request).await;
                lat.push(t.elapsed().as_micros() as u32);
                bytes += len as u64;
                if !(200..300).contains(&status) && status != 304 {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors, bytes)
        }));
    }
    let mut out = Outcome { requests: 0, errors: 0, elapsed: Duration::ZERO, latencies_us: Vec::new(), bytes: 0 };
    for h in handles {
        let (lat, errors, bytes) = h.await.unwrap();
        out.requests += lat.len() as u64;
        out.errors += errors;
        out.bytes += bytes;
        out.latencies_us.extend(lat);
    }
    out.elapsed = started.elapsed();
    out.latencies_us.sort_unstable();
    out
}
