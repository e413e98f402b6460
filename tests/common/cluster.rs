//! A cluster on loopback for the tests and the cluster benchmark: three nats-servers
//! (the `nats-server` on the PATH, from the configs in `tests/cluster/`, the ports and store dirs
//! moved by flags) and three `muster` nodes on them, as processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Process, check_log, split};

/// The nodes' lease: the default, longer than a NATS stream's own failover.
pub const LEASE: &str = "8s";
/// How long a claim waits for its owner's session to come back.
pub const GRACE: &str = "4s";

/// One nats-server of three.
pub struct Nats {
    pub index: usize,
    pub port: u16,
    pub route: u16,
    pub routes: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// The largest message it takes, if not its config's.
    pub max_payload: Option<String>,
    /// The public key of the nodes' NATS user.
    pub nkey: String,
}

/// The password of the config's `others` user (kept off Muster's subjects), which the
/// tests turn on.
pub const OTHERS_PASSWORD: &str = "others-password";

impl Nats {
    pub fn spawn(&mut self) {
        // A port found free may be taken by another test before the server binds it: then
        // the server exits, and is started again on other ports (the others reach it
        // through their own routes to it, or it through its routes to them).
        for _ in 0..5 {
            if self.try_spawn() {
                return;
            }
            (self.port, self.route) = (free_port(), free_port());
        }
        panic!("nats-server {} did not start on any of five pairs of ports", self.index);
    }

    /// Starts the server; whether it listens (`false`: it exited, its ports taken).
    fn try_spawn(&mut self) -> bool {
        // The repo's config as it is, with its example `others` user turned on.
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/cluster/nats-{}.conf", self.index));
        let mut text = std::fs::read_to_string(&repo).unwrap();
        assert!(text.contains("# { user: others,"), "{} no longer has the others user", repo.display());
        text = text.replace("# { user: others,", "{ user: others,");
        if let Some(max) = &self.max_payload {
            assert!(text.contains("max_payload: 8MB"), "{} no longer sets max_payload", repo.display());
            text = text.replace("max_payload: 8MB", &format!("max_payload: {max}"));
        }
        let conf = self.dir.join(format!("nats-{}.conf", self.index));
        std::fs::write(&conf, text).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("nats-{}.log", self.index))).unwrap();
        let mut child = Command::new("nats-server")
            .arg("-c")
            .arg(conf)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", self.route), "--routes", &self.routes])
            .arg("-sd")
            .arg(self.dir.join(format!("nats-{}", self.index)))
            .env("MUSTER_NKEY", &self.nkey)
            .env("OTHERS_PASSWORD", OTHERS_PASSWORD)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "nats-server {} did not listen", self.index);
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whoever answered, it was not this server if it exited meanwhile.
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        self.child = Some(child);
        true
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Three nats-servers and three Muster nodes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nats: Vec<Nats>,
    pub nodes: Vec<Option<Process>>,
    pub addrs: Vec<String>,
    /// Flags every node gets besides the usual ones.
    pub extra: Vec<String>,
}

impl Drop for Cluster {
    /// A test that failed leaves the logs (every node's and nats-server's) in a directory
    /// of their own, named on stderr, and shows each node's last lines.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let kept =
            std::env::temp_dir().join(format!("muster-cluster-failed-{}-{:08x}", std::process::id(), rand_u32()));
        let _ = std::fs::create_dir_all(&kept);
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let _ = std::fs::copy(&path, kept.join(entry.file_name()));
            }
        }
        for i in 0..self.addrs.len() {
            let log = std::fs::read_to_string(self.data_dir(i).with_extension("log")).unwrap_or_default();
            // The node's own story, not each refused request's.
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("request failed")).rev().take(30).collect();
            eprintln!("--- node-{i}, its last lines:");
            for line in tail.iter().rev() {
                eprintln!("{}", line.chars().take(300).collect::<String>());
            }
        }
        eprintln!("--- the cluster's logs are kept in {}", kept.display());
    }
}

/// The nats-server's version (major, minor), or `None` without one.
pub fn nats_version() -> Option<(u32, u32)> {
    let out = Command::new("nats-server").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().rsplit('v').next()?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// Whether the nats-server is 2.10 or newer; says why a test does not run if not. Before
/// 2.10, a stream may elect a lagging replica to lead it after a server's pause (README,
/// "A cluster"), which no broker above it can make up for.
pub fn nats_is_current(test: &str) -> bool {
    let Some(version) = nats_version() else { return false };
    if version >= (2, 10) {
        return true;
    }
    let required = std::env::var("MUSTER_REQUIRE_NATS").is_ok_and(|v| v == "1");
    assert!(!required, "MUSTER_REQUIRE_NATS=1 but nats-server {version:?} is before 2.10, which {test} needs");
    eprintln!("SKIPPED: {test} needs nats-server 2.10 or newer (this one is {}.{})", version.0, version.1);
    false
}

/// Makes the nodes' NATS user with `muster nats-key`: its seed in `file`, its public key
/// returned.
pub fn new_nkey(file: &Path) -> String {
    let out = Command::new(super::binary()).arg("nats-key").arg(file).output().expect("muster nats-key");
    assert!(out.status.success(), "muster nats-key: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A random number, for a directory's name.
fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    nanos.subsec_nanos()
}

/// A port nothing listens on, never one this process handed out before: the kernel may give
/// a port just released to the next `bind(0)`, and two nodes (or a node and a nats-server)
/// given the same one made a cluster fail to start ("address already in use").
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return port;
        }
    }
}

impl Cluster {
    /// The whole cluster, once one node leads; `None` (and a visible skip) without
    /// nats-server.
    pub async fn start() -> Option<Cluster> {
        Cluster::start_with(&[]).await
    }

    /// [`Cluster::start`], every node with the flags `extra` too.
    pub async fn start_with(extra: &[&str]) -> Option<Cluster> {
        Cluster::start_on(None, extra).await
    }

    /// [`Cluster::start_with`], on nats-servers that take messages of at most `max_payload`
    /// (`32KB`) if given.
    pub async fn start_on(max_payload: Option<&str>, extra: &[&str]) -> Option<Cluster> {
        if Command::new("nats-server").arg("--version").output().is_err() {
            let required = std::env::var("MUSTER_REQUIRE_NATS").is_ok_and(|v| v == "1");
            assert!(!required, "MUSTER_REQUIRE_NATS=1 but nats-server is not installed");
            let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("SKIPPED: no nats-server\n"));
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let nkey = new_nkey(&dir.path().join("nodes.nk"));
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let list = routes.iter().map(|r| format!("nats://127.0.0.1:{r}")).collect::<Vec<_>>().join(",");
        let mut nats: Vec<Nats> = (0..3)
            .map(|i| Nats {
                index: i + 1,
                port: free_port(),
                route: routes[i],
                routes: list.clone(),
                dir: dir.path().to_owned(),
                child: None,
                max_payload: max_payload.map(str::to_owned),
                nkey: nkey.clone(),
            })
            .collect();
        for n in &mut nats {
            n.spawn();
        }
        let addrs = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut cluster = Cluster { dir, nats, nodes: Vec::new(), addrs, extra };
        for i in 0..3 {
            let node = cluster.spawn_node(i);
            cluster.nodes.push(Some(node));
        }
        cluster.leader().await;
        Some(cluster)
    }

    /// The nats-server (its index in `nats`) that leads JetStream's copies of `stream`
    /// (`muster-log`, `KV_muster-leader`, ...), as the servers say; `None` while none does.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let asking = async {
            let client = self.nats_client().await.ok()?;
            let mut info = async_nats::jetstream::new(client).get_stream(stream).await.ok()?;
            let leader = info.info().await.ok()?.cluster.as_ref()?.leader.clone()?;
            let n: usize = leader.strip_prefix("nats-")?.parse().ok()?;
            Some(n - 1)
        };
        tokio::time::timeout(Duration::from_secs(3), asking).await.ok().flatten()
    }

    /// A NATS client as the nodes' user.
    pub async fn nats_client(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        let seed = std::fs::read_to_string(self.nkey_file()).unwrap();
        let urls: Vec<async_nats::ServerAddr> = self.urls().split(',').filter_map(|u| u.parse().ok()).collect();
        async_nats::ConnectOptions::with_nkey(seed.trim().to_owned()).connect(urls).await
    }

    /// The file with the seed of the nodes' NATS user (`--nats-nkey`).
    pub fn nkey_file(&self) -> PathBuf {
        self.dir.path().join("nodes.nk")
    }

    pub fn urls(&self) -> String {
        self.nats.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    pub fn spawn_node(&self, i: usize) -> Process {
        let data = self.data_dir(i);
        let (name, urls) = (format!("node-{i}"), self.urls());
        let nkey = self.nkey_file();
        let mut args = vec![
            "--cluster",
            &urls,
            "--nats-nkey",
            nkey.to_str().unwrap(),
            "--node",
            &name,
            "--leader-lease",
            LEASE,
            "--tick",
            "200ms",
            "--claim-grace",
            GRACE,
        ];
        args.extend(self.extra.iter().map(String::as_str));
        Process::start_one(&data, &self.addrs[i], &[], &args)
    }

    /// Node `i`'s data dir.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}"))
    }

    pub fn node(&self, i: usize) -> &Process {
        self.nodes[i].as_ref().unwrap()
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.addrs[i])
    }

    pub async fn health(&self, i: usize) -> Option<Value> {
        let r = reqwest::get(self.url(i, "/health")).await.ok()?;
        Some(split(r).await.1)
    }

    /// The node that leads, once one does and every running node knows it.
    pub async fn leader(&self) -> usize {
        let started = Instant::now();
        loop {
            let mut leaders = Vec::new();
            let mut named = Vec::new();
            for i in (0..3).filter(|i| self.nodes[*i].is_some()) {
                if let Some(h) = self.health(i).await {
                    if h["cluster"]["role"] == "leader" {
                        leaders.push(i);
                    }
                    named.push(h["cluster"]["leader"].as_str().map(str::to_owned));
                }
            }
            if let [leader] = leaders[..]
                && named.iter().all(|n| n.as_deref() == Some(format!("node-{leader}").as_str()))
            {
                return leader;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no leader after 60 s: {leaders:?} {named:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running node has applied the same head; returns it.
    pub async fn converged(&self) -> u64 {
        let started = Instant::now();
        loop {
            let mut heads = Vec::new();
            for i in (0..3).filter(|i| self.nodes[*i].is_some()) {
                heads.push(self.health(i).await.map(|h| h["head"].as_u64().unwrap()));
            }
            if heads.iter().all(|h| h.is_some() && *h == heads[0]) {
                return heads[0].unwrap();
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the nodes did not converge: {heads:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every running node's log, read whole: gap-free, claims never overlapping, tokens
    /// growing (`check_log`), and the same events, `seq` for `seq`, on each.
    pub async fn check_logs(&self) -> u64 {
        let http = reqwest::Client::new();
        let head = self.converged().await;
        let mut first: Option<Vec<Value>> = None;
        for i in (0..3).filter(|i| self.nodes[*i].is_some()) {
            assert_eq!(check_log(&http, &self.url(i, "")).await, head);
            let events = all_events(&http, &self.url(i, "")).await;
            match &first {
                None => first = Some(events),
                Some(expected) => assert!(&events == expected, "node-{i}'s log differs from the others'"),
            }
        }
        head
    }
}

pub async fn all_events(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let r = http.get(format!("{base}/events?since={}&limit=1000", out.len())).send().await.unwrap();
        let (_, page) = split(r).await;
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            return out;
        }
        out.extend(events.iter().cloned());
    }
}
