//! The broker's configuration: one struct, defaults embedded, every field settable by a
//! `muster serve` flag or a `MUSTER_*` environment variable. `--print-config` shows it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::Policy;

/// Everything `muster serve` can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "MUSTER_ADDR", default_value = "127.0.0.1:4445")]
    pub addr: SocketAddr,

    /// Directory of the database (default: the platform data dir, e.g. ~/.local/share/muster).
    #[arg(long, env = "MUSTER_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,

    /// An agent silent this long shows as idle.
    #[arg(long, env = "MUSTER_IDLE_AFTER", default_value = "5m", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,

    /// An agent silent this long shows as offline.
    #[arg(long, env = "MUSTER_OFFLINE_AFTER", default_value = "30m", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub offline_after: Duration,

    /// An agent holding a `doing` task and silent this long is flagged stuck.
    #[arg(long, env = "MUSTER_STUCK_AFTER", default_value = "20m", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,

    /// After an agent's last WebSocket session closes, its claims wait this long for it to
    /// come back before they are released.
    #[arg(long, env = "MUSTER_CLAIM_GRACE", default_value = "5m", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub claim_grace: Duration,

    /// An agent without a WebSocket session keeps its claims while it writes or sends a
    /// heartbeat at least this often.
    #[arg(long, env = "MUSTER_CLAIM_LEASE", default_value = "30m", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub claim_lease: Duration,

    /// Most agents' WebSocket sessions at once, and WebSockets that have not said hello yet
    /// (the process may open 20,000 files).
    #[arg(long, env = "MUSTER_MAX_CONNECTIONS", default_value_t = 16_000)]
    pub max_connections: usize,

    /// Most observers at once: event streams (SSE) and WebSocket sessions that are not an
    /// agent's (dashboards, people, sessions without an agent). Kept apart from
    /// `--max-connections`, so that observers never take an agent's place.
    #[arg(long, env = "MUSTER_MAX_OBSERVERS", default_value_t = 1_000)]
    #[serde(default = "default_max_observers")]
    pub max_observers: usize,

    /// Bytes of events and replies a connection may have waiting to be sent; beyond, it is
    /// closed as a slow consumer (4008) and resumes from its last `seq`.
    #[arg(long, env = "MUSTER_OUTBOX_BYTES", default_value_t = 1 << 20)]
    pub outbox_bytes: usize,

    /// The broker pings every WebSocket this often; a peer silent for two intervals is
    /// dropped (and goes offline).
    #[arg(long, env = "MUSTER_PING_EVERY", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub ping_every: Duration,

    /// A WebSocket must send `hello` within this time (checked on the ping timer: when
    /// `--ping-every` is shorter, the connection is closed at the first ping past it).
    #[arg(long, env = "MUSTER_HELLO_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,

    /// How often leases are checked (claims of absent owners released).
    #[arg(long, env = "MUSTER_TICK", default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub tick: Duration,

    /// Keep at most this many events in the log; older ones are trimmed (the board, chat
    /// and presence are kept whole: only resuming from an older `seq` is lost).
    #[arg(long, env = "MUSTER_RETAIN_EVENTS", default_value_t = 1_000_000)]
    pub retain_events: u64,

    /// Keep events in the log at most this long.
    #[arg(long, env = "MUSTER_RETAIN_FOR", default_value = "7d", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub retain_for: Duration,

    /// Other names this broker is reached by (the `Host` header), besides localhost, its
    /// loopback addresses and the address it listens on. Any other `Host` is refused (403):
    /// that stops DNS rebinding.
    #[arg(long = "host-name", env = "MUSTER_HOST_NAMES", value_delimiter = ',')]
    #[serde(default)]
    pub host_names: Vec<String>,

    /// Web origins (e.g. `https://tools.example`) whose pages may make state-changing
    /// requests and open the WebSocket, besides the broker's own. Never `*`.
    #[arg(long = "allow-origin", env = "MUSTER_ALLOW_ORIGINS", value_delimiter = ',')]
    #[serde(default)]
    pub allow_origins: Vec<String>,

    /// Refuse writes (507) while the data dir's disk has less than this many MiB free, so
    /// the database never runs out of space mid-write; 0 turns the floor off.
    #[arg(long, env = "MUSTER_MIN_FREE_MB", default_value_t = 32)]
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,

    /// Frames one WebSocket may send per second (and at once); beyond, each gets a
    /// `rate_limited` error, and a connection that keeps flooding is closed (1008).
    #[arg(long, env = "MUSTER_MAX_FRAMES_PER_SECOND", default_value_t = 1000)]
    #[serde(default = "default_max_frames_per_second")]
    pub max_frames_per_second: u32,

    /// HTTP connections that are not (yet) a WebSocket or an event stream; at the limit, a
    /// new one closes the oldest idle one.
    #[arg(long, env = "MUSTER_MAX_HTTP_CONNECTIONS", default_value_t = 1024)]
    #[serde(default = "default_max_http_connections")]
    pub max_http_connections: usize,

    /// A request must send its headers within this time; an idle keep-alive connection
    /// closes after it too.
    #[arg(long, env = "MUSTER_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde", default = "default_header_timeout")]
    pub header_timeout: Duration,

    /// A request must send its body within this time (else 408).
    #[arg(long, env = "MUSTER_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde", default = "default_body_timeout")]
    pub body_timeout: Duration,

    /// `Idempotency-Key`s remembered (the newest; each for 24 hours at most): a retry with
    /// an older key runs again.
    #[arg(long, env = "MUSTER_IDEMPOTENCY_KEYS", default_value_t = 10_000)]
    #[serde(default = "default_idempotency_keys")]
    pub idempotency_keys: usize,

    /// MiB of the database's page cache (tasks, agents, and the positions of log and chat
    /// records). Memory does not grow with history beyond it (sled keeps some metadata on
    /// top); old tasks beyond it, and every log batch and chat message, are read from disk.
    #[arg(long, env = "MUSTER_CACHE_MB", default_value_t = 32)]
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,

    /// Allow listening on a non-loopback address without tokens (anyone who can reach it
    /// can act as any agent).
    #[arg(long)]
    #[serde(default)]
    pub insecure: bool,

    /// Run as a node of a cluster: the NATS servers (`nats://host:4222`, comma-separated)
    /// whose JetStream holds the cluster's log. Without it, this broker is a single node
    /// on its data dir.
    #[arg(long, env = "MUSTER_CLUSTER", value_delimiter = ',', help_heading = "Cluster")]
    #[serde(default)]
    pub cluster: Vec<String>,

    /// This node's name in the cluster (default: the host name).
    #[arg(long, env = "MUSTER_NODE", help_heading = "Cluster")]
    #[serde(default)]
    pub node: Option<String>,

    /// The cluster's name: its stream and buckets in JetStream are named after it, so one
    /// set of NATS servers can hold several clusters.
    #[arg(long, env = "MUSTER_CLUSTER_NAME", default_value = "muster", help_heading = "Cluster")]
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,

    /// Copies of the log JetStream keeps, on as many servers (3 in production; 1 for a
    /// single NATS server). Set when the stream is created.
    #[arg(long, env = "MUSTER_REPLICAS", default_value_t = 3, help_heading = "Cluster")]
    #[serde(default = "default_replicas")]
    pub replicas: usize,

    /// The leader's lease: a leader that stops renewing it is replaced after this long.
    /// Longer than a NATS stream's own failover (5–7 s), or a stalled stream deposes the
    /// leader for nothing.
    #[arg(long, env = "MUSTER_LEADER_LEASE", default_value = "8s", value_parser = humantime::parse_duration, help_heading = "Cluster")]
    #[serde(with = "humantime_serde", default = "default_leader_lease")]
    pub leader_lease: Duration,

    /// Events between two snapshots of the store, which a follower uploads to the cluster's
    /// Object Store; the log is trimmed below them, and a new node starts from the newest.
    /// 0: this node takes none.
    #[arg(long, env = "MUSTER_SNAPSHOT_EVERY", default_value_t = 100_000, help_heading = "Cluster")]
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,

    /// NATS credentials file (`.creds`, a user JWT and its NKey seed), for servers in
    /// operator mode.
    #[arg(long, env = "MUSTER_NATS_CREDS", help_heading = "Cluster", conflicts_with = "nats_nkey")]
    #[serde(default)]
    pub nats_creds: Option<PathBuf>,

    /// The nodes' NATS user: a file holding its NKey seed (`muster nats-key FILE` makes one
    /// and prints the public key the nats-servers' config names).
    #[arg(long, env = "MUSTER_NATS_NKEY", help_heading = "Cluster")]
    #[serde(default)]
    pub nats_nkey: Option<PathBuf>,

    /// Run on NATS servers that a client without credentials may publish to (anyone who
    /// can reach them could forge writes, mint tokens or delete the log). Without it, a
    /// node refuses to start on them.
    #[arg(long, help_heading = "Cluster")]
    #[serde(default)]
    pub insecure_nats: bool,

    /// A CA certificate (PEM) to verify the NATS servers with; connections then require TLS.
    #[arg(long, env = "MUSTER_NATS_CA", help_heading = "Cluster")]
    #[serde(default)]
    pub nats_ca: Option<PathBuf>,
}

fn default_cluster_name() -> String {
    "muster".into()
}

fn default_replicas() -> usize {
    3
}

fn default_snapshot_every() -> u64 {
    100_000
}

fn default_leader_lease() -> Duration {
    Duration::from_secs(8)
}

fn default_max_frames_per_second() -> u32 {
    1000
}

fn default_cache_mb() -> u64 {
    32
}

fn default_min_free_mb() -> u64 {
    32
}

fn default_idempotency_keys() -> usize {
    10_000
}

fn default_max_observers() -> usize {
    1_000
}

fn default_max_http_connections() -> usize {
    1024
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The settings operations need.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Bytes an outbox may hold (see `hub`).
    pub(crate) outbox_bytes: usize,
    /// Events the log keeps at most.
    pub(crate) retain_events: u64,
    /// How long the log keeps an event.
    pub(crate) retain_for: std::time::Duration,
}

/// Whether `s` is a web origin: `http(s)://host[:port]`, nothing after it.
pub(crate) fn is_origin(s: &str) -> bool {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '*', '?', '#', ' ']))
}

/// Creates the data dir readable by its owner only (0700; its parents as usual): it holds
/// every task and message, and the token hashes. An existing dir that other users can read
/// is left as it is, with a warning.
pub(crate) fn create_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        "data dir {} can be read by other users (mode {mode:o}); chmod 700 it",
                        dir.display()
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl Config {
    /// This node's name in the cluster: `--node`, else the host name (its characters
    /// outside `[A-Za-z0-9_-]` made `-`).
    pub(crate) fn node_name(&self) -> Result<String, String> {
        if let Some(node) = &self.node {
            return Ok(node.clone());
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .ok_or("cannot tell this host's name: pass --node NAME")?;
        Ok(host.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect())
    }
}

/// `~/.local/share/muster` on Linux, the equivalent elsewhere; `./muster-data` if the
/// platform has no data dir.
pub fn default_data_dir() -> PathBuf {
    dirs::data_local_dir().map_or_else(|| PathBuf::from("muster-data"), |d| d.join("muster"))
}

impl Config {
    /// The configuration with every default, listening on `addr` and storing in `data_dir`.
    pub fn new(addr: SocketAddr, data_dir: PathBuf) -> Config {
        Config {
            addr,
            data_dir,
            idle_after: Duration::from_secs(5 * 60),
            offline_after: Duration::from_secs(30 * 60),
            stuck_after: Duration::from_secs(20 * 60),
            claim_grace: Duration::from_secs(5 * 60),
            claim_lease: Duration::from_secs(30 * 60),
            max_connections: 16_000,
            max_observers: default_max_observers(),
            outbox_bytes: 1 << 20,
            ping_every: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            tick: Duration::from_secs(1),
            retain_events: 1_000_000,
            retain_for: Duration::from_secs(7 * 24 * 3600),
            host_names: Vec::new(),
            allow_origins: Vec::new(),
            min_free_mb: default_min_free_mb(),
            max_frames_per_second: default_max_frames_per_second(),
            idempotency_keys: default_idempotency_keys(),
            max_http_connections: default_max_http_connections(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            cache_mb: default_cache_mb(),
            insecure: false,
            cluster: Vec::new(),
            node: None,
            cluster_name: default_cluster_name(),
            replicas: default_replicas(),
            leader_lease: default_leader_lease(),
            snapshot_every: default_snapshot_every(),
            nats_creds: None,
            nats_nkey: None,
            insecure_nats: false,
            nats_ca: None,
        }
    }

    /// The presence thresholds.
    pub fn policy(&self) -> Policy {
        Policy {
            idle_after: self.idle_after,
            offline_after: self.offline_after,
            stuck_after: self.stuck_after,
            claim_grace: self.claim_grace,
            claim_lease: self.claim_lease,
        }
    }

    /// The limits and retention the operations apply.
    pub(crate) fn limits(&self) -> Limits {
        Limits { outbox_bytes: self.outbox_bytes, retain_events: self.retain_events, retain_for: self.retain_for }
    }

    /// Refuses settings that contradict each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.idle_after >= self.offline_after {
            return Err(format!(
                "--idle-after ({}) must be shorter than --offline-after ({})",
                humantime::format_duration(self.idle_after),
                humantime::format_duration(self.offline_after)
            ));
        }
        if self.ping_every.is_zero() || self.tick.is_zero() || self.hello_timeout.is_zero() {
            return Err("--ping-every, --tick and --hello-timeout must be more than zero".into());
        }
        if self.outbox_bytes < 64 * 1024 {
            return Err("--outbox-bytes must be at least 65536 (one large event must fit)".into());
        }
        if let Some(bad) = self.allow_origins.iter().find(|o| !is_origin(o)) {
            return Err(format!("--allow-origin {bad:?} is not an origin like https://tools.example (no path, no *)"));
        }
        if self.max_frames_per_second == 0 {
            return Err("--max-frames-per-second must be at least 1".into());
        }
        if self.retain_events == 0 {
            return Err("--retain-events must be at least 1".into());
        }
        if self.max_http_connections == 0 || self.header_timeout.is_zero() || self.body_timeout.is_zero() {
            return Err("--max-http-connections, --header-timeout and --body-timeout must be more than zero".into());
        }
        if self.idempotency_keys == 0 {
            return Err("--idempotency-keys must be at least 1".into());
        }
        if !(1..=1 << 20).contains(&self.cache_mb) {
            return Err("--cache-mb must be between 1 and 1048576".into());
        }
        if !self.cluster.is_empty() {
            if !(1..=5).contains(&self.replicas) {
                return Err("--replicas must be between 1 and 5 (JetStream's limit)".into());
            }
            if self.leader_lease < Duration::from_secs(1) {
                return Err("--leader-lease must be at least 1s".into());
            }
            let name_ok = |s: &str| {
                !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            if !name_ok(&self.cluster_name) {
                return Err(format!("--cluster-name {:?} must be 1 to 64 letters, digits, - or _", self.cluster_name));
            }
            if let Some(node) = self.node.as_deref().filter(|n| !name_ok(n)) {
                return Err(format!("--node {node:?} must be 1 to 64 letters, digits, - or _"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_authority_only() {
        assert!(is_origin("https://tools.example"));
        assert!(is_origin("http://127.0.0.1:8080"));
        assert!(!is_origin("*"));
        assert!(!is_origin("https://tools.example/app"));
        assert!(!is_origin("tools.example"));
        assert!(!is_origin("https://"));
    }
}
