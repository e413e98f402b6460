//! Counters and histograms for `GET /metrics`, in the Prometheus text format.
//!
//! A handful of atomics, written on the hot path without locks; rendering reads them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;

/// Upper bounds, in seconds, of the latency histogram buckets: from a fast `fdatasync`
/// (a quarter millisecond) to a stalled disk (a second).
const BUCKETS: [f64; 12] = [0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything the broker counts.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Commands that came to this node (over any transport) and were accepted; on a
    /// cluster, the leader decides them all, but each is counted where it came in.
    pub(crate) commands_ok: AtomicU64,
    /// Commands refused by the domain (conflicts, invalid input).
    pub(crate) commands_refused: AtomicU64,
    /// Commands decided but not stored (storage failed); they were answered `unavailable`.
    pub(crate) commands_failed: AtomicU64,
    /// Requests answered from an idempotency record.
    pub(crate) idempotent_replays: AtomicU64,
    /// `Idempotency-Key`s remembered now.
    pub(crate) idempotency_keys: AtomicU64,
    /// Events appended.
    pub(crate) events: AtomicU64,
    /// Batches committed.
    pub(crate) batches: AtomicU64,
    /// Time to decide, apply and write one batch to sled (the writer thread).
    pub(crate) write_seconds: Histogram,
    /// Time to make the written batches durable: sled flush + `fdatasync` (the sync thread).
    pub(crate) commit_seconds: Histogram,
    /// Time to check one request's patterns off the writer: a reserve's overlaps with the
    /// held reservations, a `who`'s matches (bounded by `MAX_MATCH_STEPS`).
    pub(crate) match_seconds: Histogram,
    /// HTTP responses by status class (1xx..5xx).
    pub(crate) http_responses: [AtomicU64; 5],
    /// Streams open now, by [`Stream`] kind (see [`Metrics::open`]).
    streams: [AtomicU64; 2],
    /// Subscribers closed because they fell too far behind (WebSocket 4008, SSE).
    pub(crate) slow_consumer_closes: AtomicU64,
    /// WebSocket frames refused for the connection's rate limit.
    pub(crate) rate_limited_frames: AtomicU64,
    /// The transport's budgets of connections: a name, its semaphore and its size.
    places: OnceLock<[Places; 2]>,
}

type Places = (&'static str, Arc<Semaphore>, usize);

/// A kind of long-lived connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    /// A WebSocket session.
    WebSocket = 0,
    /// A Server-Sent Events stream.
    Sse = 1,
}

/// One open stream, counted while it is held.
pub(crate) struct Open {
    metrics: Arc<Metrics>,
    kind: Stream,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.streams[self.kind as usize].fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    /// Counts a stream open for as long as the returned guard lives.
    pub(crate) fn open(self: &Arc<Self>, kind: Stream) -> Open {
        self.streams[kind as usize].fetch_add(1, Relaxed);
        Open { metrics: Arc::clone(self), kind }
    }

    /// Shows the transport's budgets of connections (agents', observers').
    pub(crate) fn count_places(&self, places: [Places; 2]) {
        let _ = self.places.set(places);
    }

    /// Counts one HTTP response.
    pub(crate) fn http_response(&self, status: u16) {
        if let Some(c) = self.http_responses.get(usize::from(status / 100).wrapping_sub(1)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The counters in the Prometheus text format; `extra` adds gauges read at scrape time.
    pub(crate) fn render(&self, extra: &[(&str, &str, String)]) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, labels: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name}{labels} {v}");
        };
        let _ = writeln!(
            out,
            "# HELP muster_commands_total Write commands that came to this node, by result.\n# TYPE muster_commands_total counter"
        );
        for (result, c) in
            [("ok", &self.commands_ok), ("refused", &self.commands_refused), ("failed", &self.commands_failed)]
        {
            let _ = writeln!(out, "muster_commands_total{{result=\"{result}\"}} {}", c.load(Relaxed));
        }
        counter(
            &mut out,
            "muster_idempotent_replays_total",
            "Requests answered from an idempotency record.",
            "",
            self.idempotent_replays.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP muster_idempotency_keys Idempotency-Keys remembered.\n# TYPE muster_idempotency_keys gauge\n\
             muster_idempotency_keys {}",
            self.idempotency_keys.load(Relaxed)
        );
        counter(&mut out, "muster_events_total", "Events appended to the log.", "", self.events.load(Relaxed));
        counter(
            &mut out,
            "muster_batches_total",
            "Group commits (one flush and sync each).",
            "",
            self.batches.load(Relaxed),
        );
        self.write_seconds.render(
            &mut out,
            "muster_write_seconds",
            "Time to decide, apply and write one batch to sled.",
        );
        self.commit_seconds.render(
            &mut out,
            "muster_commit_seconds",
            "Time to make written batches durable (flush + fdatasync).",
        );
        self.match_seconds.render(
            &mut out,
            "muster_match_seconds",
            "Time to check one request's file patterns (a reserve's overlaps, a who's matches), off the writer.",
        );
        let _ = writeln!(
            out,
            "# HELP muster_http_responses_total HTTP responses by status class.\n# TYPE muster_http_responses_total counter"
        );
        for (i, c) in self.http_responses.iter().enumerate() {
            let _ = writeln!(out, "muster_http_responses_total{{class=\"{}xx\"}} {}", i + 1, c.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP muster_connections Streams open now, by kind.\n# TYPE muster_connections gauge");
        for (kind, n) in ["websocket", "sse"].iter().zip(&self.streams) {
            let _ = writeln!(out, "muster_connections{{kind=\"{kind}\"}} {}", n.load(Relaxed));
        }
        if let Some(places) = self.places.get() {
            let _ = writeln!(
                out,
                "# HELP muster_connection_places Connections each budget allows (--max-connections: agents' \
                 WebSockets; --max-observers: event streams and dashboards).\n# TYPE muster_connection_places gauge"
            );
            for (budget, _, size) in places {
                let _ = writeln!(out, "muster_connection_places{{budget=\"{budget}\"}} {size}");
            }
            let _ = writeln!(
                out,
                "# HELP muster_connection_places_used Places taken now.\n# TYPE muster_connection_places_used gauge"
            );
            for (budget, places, size) in places {
                let used = size.saturating_sub(places.available_permits());
                let _ = writeln!(out, "muster_connection_places_used{{budget=\"{budget}\"}} {used}");
            }
        }
        counter(
            &mut out,
            "muster_slow_consumer_closes_total",
            "Subscribers closed for falling too far behind (WebSocket 4008, SSE).",
            "",
            self.slow_consumer_closes.load(Relaxed),
        );
        counter(
            &mut out,
            "muster_rate_limited_frames_total",
            "WebSocket frames refused for the connection's rate limit.",
            "",
            self.rate_limited_frames.load(Relaxed),
        );
        process(&mut out);
        for (name, help, lines) in extra.iter().filter(|(_, _, lines)| !lines.is_empty()) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{lines}");
        }
        out
    }
}

/// The process's resident memory, CPU time and open file descriptors, under the names
/// Prometheus's own clients use, read from `/proc/self` (absent where there is none).
fn process(out: &mut String) {
    let page = 4096.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // After the command name (in parentheses, which may hold spaces): fields 3 on.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        // utime and stime (fields 14, 15) in clock ticks (100 per second on Linux); rss
        // (field 24) in pages.
        if let (Some(user), Some(system), Some(rss)) = (field(14), field(15), field(24)) {
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total CPU time used, user and system.\n# TYPE process_cpu_seconds_total counter\n\
                 process_cpu_seconds_total {}",
                (user + system) / 100.0
            );
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\n\
                 process_resident_memory_bytes {}",
                rss * page
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            fds.count()
        );
    }
}
