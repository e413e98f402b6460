//! Test harness: the real broker on 127.0.0.1:0 with a temp data dir, in-process or as a
//! child process of the real `muster` binary.
//!
//! With `MUSTER_TEST_CLUSTER` set to NATS URLs (`scripts/test-on-cluster.sh` starts three
//! nats-servers and sets it), each "broker" is a three-node cluster on those servers, and
//! the harness spreads requests and connections over its nodes: every test that uses
//! [`Server`] or [`Process`] then runs, unchanged in what it asserts, against a cluster.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub mod cluster;

use muster::{Clock, Config, ServeError};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The NATS servers of the cluster the tests run against (`MUSTER_TEST_CLUSTER`), if any.
pub fn cluster_under_test() -> Option<Vec<String>> {
    let urls = std::env::var("MUSTER_TEST_CLUSTER").ok().filter(|v| !v.trim().is_empty())?;
    Some(urls.split(',').map(|u| u.trim().to_owned()).collect())
}

/// The cluster a data dir belongs to: its name in JetStream (a fresh dir makes a fresh
/// cluster, as a fresh dir makes a fresh single node) and, for [`Process`], the addresses
/// of the nodes beside the first, so that a restart brings the same cluster back.
fn cluster_of(dir: &Path) -> (String, Vec<String>) {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let file = dir.join("cluster-under-test");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let mut words = text.split_whitespace().map(str::to_owned);
        let name = words.next().unwrap();
        return (name, words.collect());
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let name = format!("t{}-{}-{nanos}", std::process::id(), MADE.fetch_add(1, Ordering::Relaxed));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&file, &name).unwrap();
    (name, Vec::new())
}

/// Sets up `config` as node `i` of the cluster under test named `name`.
fn join_cluster(config: &mut Config, nats: &[String], name: &str, i: usize) {
    config.cluster = nats.to_vec();
    config.cluster_name = name.to_owned();
    config.node = Some(format!("node-{i}"));
    config.leader_lease = TEST_LEASE;
    // The nodes' NATS user, which `scripts/test-on-cluster.sh` made.
    config.nats_nkey = std::env::var_os("MUSTER_NATS_NKEY").map(PathBuf::from);
}

/// The lease of a cluster under test: short, as a cluster killed whole elects a leader
/// only once the dead one's lease ran out (here no node is cut off from the NATS servers,
/// so a short lease does not make a leader step down).
const TEST_LEASE: Duration = Duration::from_secs(3);

/// The node of the next request: each in turn.
fn next_of<T: Copy>(all: &[T], next: &AtomicUsize) -> T {
    all[next.fetch_add(1, Ordering::Relaxed) % all.len()]
}

/// A broker running inside the test process (a single node, or the three nodes of a cluster
/// under test).
pub struct Server {
    addrs: Vec<SocketAddr>,
    /// Every node's address, pinned or not.
    addrs_all: Vec<SocketAddr>,
    next: AtomicUsize,
    pub http: reqwest::Client,
    /// The broker's clock: manual with [`Server::start_manual`], so a test moves time.
    pub clock: Clock,
    /// Each node's own stop, and its task.
    nodes: Vec<(CancellationToken, JoinHandle<Result<(), ServeError>>)>,
    pub dir: Option<tempfile::TempDir>,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_in(dir, configure).await
    }

    pub async fn start_in(dir: tempfile::TempDir, configure: impl FnOnce(&mut Config)) -> Server {
        Server::start_clocked(dir, Clock::system(), configure).await
    }

    /// A broker whose clock stands still until the test moves it ([`Server::advance`]):
    /// grace, lease, idle and stuck are tested without waiting for them.
    pub async fn start_manual(configure: impl FnOnce(&mut Config)) -> Server {
        let clock = Clock::manual(chrono::Utc::now());
        Server::start_clocked(tempfile::tempdir().unwrap(), clock, configure).await
    }

    async fn start_clocked(dir: tempfile::TempDir, clock: Clock, configure: impl FnOnce(&mut Config)) -> Server {
        let mut configs = Vec::new();
        let mut listeners = Vec::new();
        let nats = cluster_under_test();
        let nodes = if nats.is_some() { 3 } else { 1 };
        for i in 0..nodes {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let data = if nats.is_some() { dir.path().join(format!("node-{i}")) } else { dir.path().to_owned() };
            configs.push(Config::new(listener.local_addr().unwrap(), data));
            listeners.push(listener);
        }
        // One configuration for every node.
        configure(&mut configs[0]);
        if let Some(nats) = &nats {
            let (name, _) = cluster_of(dir.path());
            let first = configs[0].clone();
            for (i, config) in configs.iter_mut().enumerate() {
                *config = Config { addr: config.addr, data_dir: config.data_dir.clone(), ..first.clone() };
                join_cluster(config, nats, &name, i);
            }
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let nodes = listeners
            .into_iter()
            .zip(configs)
            .map(|(listener, config)| {
                let stop = CancellationToken::new();
                (stop.clone(), tokio::spawn(muster::serve(listener, config, clock.clone(), stop)))
            })
            .collect();
        let mut server = Server {
            addrs_all: addrs.clone(),
            addrs,
            next: AtomicUsize::new(0),
            http: reqwest::Client::new(),
            clock,
            nodes,
            dir: Some(dir),
        };
        server.wait_ready().await;
        server
    }

    /// The address of a node: each call the next node of a cluster under test, so that a
    /// test's clients are spread over the nodes.
    pub fn addr(&self) -> SocketAddr {
        next_of(&self.addrs, &self.next)
    }

    /// From now on every request and connection goes to one node: for a test of what each
    /// node counts or limits on its own (metrics, its connection limit).
    pub fn pin_to_one_node(&mut self) {
        self.addrs.truncate(1);
    }

    /// Moves a manual clock forward; the broker's timers run at once.
    pub fn advance(&self, by: Duration) {
        assert!(self.clock.advance(by), "start the broker with Server::start_manual to move its clock");
    }

    /// Polls `path` until `done` says yes (a timer's effect lands asynchronously); panics
    /// after ten seconds.
    pub async fn until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..500 {
            let (_, body) = self.get(path).await;
            if done(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{path} never reached the expected state");
    }

    /// Waits for `/health` on every node (and, on a cluster, until every node knows one
    /// leader); a broker that stopped meanwhile fails the test with its error.
    async fn wait_ready(&mut self) {
        for _ in 0..1500 {
            let mut healths = Vec::new();
            for addr in &self.addrs_all {
                if let Ok(r) = self.http.get(format!("http://{addr}/health")).send().await
                    && r.status().is_success()
                {
                    healths.push(split(r).await.1);
                }
            }
            if healths.len() == self.addrs_all.len() && led(&healths) {
                return;
            }
            if let Some(i) = self.nodes.iter().position(|n| n.1.is_finished()) {
                let outcome = self.nodes.remove(i).1.await;
                panic!("the broker stopped before it was ready: {outcome:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("broker did not become ready within 30 s");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    /// Stops the broker gracefully and returns its data dir for a restart. A cluster stops
    /// as an operator would stop it: one node at a time, the leader last, so that each
    /// node's sessions say goodbye through a leader.
    pub async fn stop(mut self) -> tempfile::TempDir {
        let mut nodes = std::mem::take(&mut self.nodes);
        if nodes.len() > 1 {
            let mut roles = Vec::new();
            for i in 0..nodes.len() {
                let health = self.http.get(format!("http://{}/health", self.addrs_all[i])).send().await;
                let leads = match health {
                    Ok(r) => split(r).await.1["cluster"]["role"] == "leader",
                    Err(_) => false,
                };
                roles.push(leads);
            }
            let mut ordered: Vec<_> = nodes.into_iter().zip(roles).collect();
            ordered.sort_by_key(|(_, leads)| *leads);
            nodes = ordered.into_iter().map(|(n, _)| n).collect();
        }
        for (stop, handle) in nodes {
            stop.cancel();
            handle.await.unwrap().unwrap();
        }
        self.dir.take().unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        split(r).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(self.url(path)).body(body.to_string()).send().await.unwrap();
        split(r).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.patch(self.url(path)).body(body.to_string()).send().await.unwrap();
        split(r).await
    }

    /// Creates a task and returns its id.
    pub async fn task(&self, title: &str) -> String {
        let (status, body) = self.post("/tasks", serde_json::json!({ "title": title })).await;
        assert_eq!(status, 201, "{body}");
        body["task"]["id"].as_str().unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for (stop, _) in &self.nodes {
            stop.cancel();
        }
    }
}

/// Whether the nodes' `/health` say that the broker takes writes: a single node does; on a
/// cluster, one node leads and every node names it.
fn led(healths: &[Value]) -> bool {
    let leaders = healths.iter().filter(|h| h["cluster"]["role"] == "leader").count();
    healths.iter().all(|h| h["cluster"].is_null())
        || (leaders == 1
            && healths.iter().all(|h| {
                h["cluster"]["leader"].is_string() && h["cluster"]["leader"] == healths[0]["cluster"]["leader"]
            }))
}

pub async fn split(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Every task of the broker at `base` (`http://…`), walking the pages of `GET /tasks?all=true`.
pub async fn all_tasks(base: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    let mut url = format!("{base}/tasks?all=true&limit=1000");
    loop {
        let (status, page) = split(http.get(&url).send().await.unwrap()).await;
        assert_eq!(status, 200, "{page}");
        tasks.extend(page["tasks"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => url = format!("{base}/tasks?all=true&limit=1000&cursor={next}"),
            None => return tasks,
        }
    }
}

/// A number field of `/proc/<pid>/status` (`VmRSS` in KiB, `Threads`...).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let value = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).unwrap();
    value.trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
}

/// The real `muster` binary, started as a child process (on a cluster under test, three:
/// `child` and `addr` are the first node's, and the others share its fate).
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    siblings: Vec<Child>,
    addrs: Vec<SocketAddr>,
    next: AtomicUsize,
}

/// The `muster` binary built with the tests, or `$MUSTER_BIN` (the load benchmark compares
/// two builds that way).
pub fn binary() -> PathBuf {
    std::env::var_os("MUSTER_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_muster")), PathBuf::from)
}

impl Process {
    /// Starts `muster serve` on 127.0.0.1:0 in `dir`, wrapped by `wrapper` if given (e.g.
    /// strace), and reads the bound address from its startup line.
    pub fn start(dir: &Path, wrapper: &[&str], extra: &[&str]) -> Process {
        Process::start_at(dir, "127.0.0.1:0", wrapper, extra)
    }

    /// Starts `muster serve` on `addr`: a broker restarted on the address an earlier one
    /// got (from port 0) takes over the address its clients reconnect to.
    ///
    /// On a cluster under test, the three nodes start (again) together, each on the address
    /// it had, with data dirs under `dir`; this returns once one of them leads.
    pub fn start_at(dir: &Path, addr: &str, wrapper: &[&str], extra: &[&str]) -> Process {
        let Some(nats) = cluster_under_test() else {
            return Process::start_one(dir, addr, wrapper, extra);
        };
        let (name, mut others) = cluster_of(dir);
        others.resize(2, "127.0.0.1:0".to_owned());
        let mut nodes = Vec::new();
        for (i, at) in [addr.to_owned()].iter().chain(&others).enumerate() {
            let mut args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
            // The nodes of a cluster killed together restart at once, not a lease later.
            args.extend(
                ["--cluster", &nats.join(","), "--cluster-name", &name, "--leader-lease", "3s"].map(String::from),
            );
            args.extend(["--node".to_owned(), format!("node-{i}")]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(Process::spawn(&dir.join(format!("node-{i}")), at, wrapper, &args));
        }
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.1).collect();
        let remembered = format!("{name} {} {}", addrs[1], addrs[2]);
        std::fs::write(dir.join("cluster-under-test"), remembered).unwrap();
        wait_led(&addrs);
        let mut nodes = nodes.into_iter();
        let (child, addr, log) = nodes.next().unwrap();
        Process { child, addr, log, siblings: nodes.map(|n| n.0).collect(), addrs, next: AtomicUsize::new(0) }
    }

    /// One `muster serve`, whatever `MUSTER_TEST_CLUSTER` says (a node of a cluster the test
    /// makes itself, as in `tests/cluster.rs`).
    pub fn start_one(dir: &Path, addr: &str, wrapper: &[&str], extra: &[&str]) -> Process {
        let (child, addr, log) = Process::spawn(dir, addr, wrapper, extra);
        Process { child, addr, log, siblings: Vec::new(), addrs: vec![addr], next: AtomicUsize::new(0) }
    }

    /// Starts one `muster serve` and reads the address it listens on.
    fn spawn(dir: &Path, addr: &str, wrapper: &[&str], extra: &[&str]) -> (Child, SocketAddr, PathBuf) {
        let log = dir.with_extension("log");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.args(["serve", "--addr", addr, "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("MUSTER_LOG", "muster=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn muster");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else { panic!("muster exited before listening:\n{seen}") };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut out = std::fs::File::create(log_path).unwrap();
            let _ = std::io::Write::write_all(&mut out, seen.as_bytes());
            for line in lines.map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(out, "{line}");
            }
        });
        (child, addr, log)
    }

    /// A URL on the broker: each call on the next node of a cluster under test.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", next_of(&self.addrs, &self.next), path)
    }

    /// SIGKILL (every node of a cluster under test): no shutdown, no flush.
    pub fn kill9(mut self) {
        for child in self.siblings.iter_mut().chain([&mut self.child]) {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for a clean exit. A cluster under test stops one node at a time,
    /// the leader last (see [`Server::stop`]); the first node's status is returned.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let leads: Vec<bool> =
            self.addrs.iter().map(|a| blocking_health(a).is_some_and(|h| h["cluster"]["role"] == "leader")).collect();
        let mut order: Vec<usize> = (0..self.addrs.len()).collect();
        order.sort_by_key(|i| leads[*i]);
        let mut first = None;
        for i in order {
            let child = if i == 0 { &mut self.child } else { &mut self.siblings[i - 1] };
            signal("TERM", child.id());
            let status = child.wait().unwrap();
            if i == 0 {
                first = Some(status);
            } else {
                assert!(status.success(), "node-{i} of the cluster did not stop cleanly: {status}");
            }
        }
        first.unwrap()
    }

    /// SIGTERM to the processes this one started (the broker under a wrapper such as
    /// strace), then wait for the wrapper to exit.
    pub fn terminate_wrapped(mut self) -> std::process::ExitStatus {
        let id = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            signal("TERM", pid.parse().unwrap());
        }
        self.child.wait().unwrap()
    }
}

/// Reads the whole log through `base`, checking that it is gap-free, that claims never
/// overlap and that fencing tokens only grow; returns the head.
pub async fn check_log(http: &reqwest::Client, base: &str) -> u64 {
    let mut since = 0;
    let mut owner: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut last_token: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    loop {
        let r = http.get(format!("{base}/events?since={since}&limit=1000")).send().await.unwrap();
        let (_, page) = split(r).await;
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            assert_eq!(since, page["head"].as_u64().unwrap(), "the log ends at the head");
            return since;
        }
        for e in events {
            let seq = e["seq"].as_u64().unwrap();
            assert_eq!(seq, since + 1, "gap in the log after {since}");
            since = seq;
            let task = &e["data"]["task"];
            let Some(id) = task["id"].as_str() else {
                continue;
            };
            match e["type"].as_str().unwrap() {
                "task.claimed" => {
                    let agent = e["data"]["agent"].as_str().unwrap();
                    assert!(!owner.contains_key(id), "{id} claimed by {agent} while held by {}", owner[id]);
                    let token = task["claim"]["token"].as_u64().unwrap();
                    assert!(token > last_token.get(id).copied().unwrap_or(0), "{id}: token went back");
                    last_token.insert(id.to_owned(), token);
                    owner.insert(id.to_owned(), agent.to_owned());
                }
                _ if task["claim"].is_null() => {
                    owner.remove(id);
                }
                _ => {}
            }
        }
    }
}

/// An address on 127.0.0.1 where nothing listens, for as long as the returned socket lives:
/// it is bound but never listening, so a connection is refused at once and no other test
/// can take the port meanwhile.
pub fn refusing_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// Sends a signal with the shell's `kill` (no extra package needed).
pub fn signal(name: &str, pid: u32) {
    Command::new("sh").arg("-c").arg(format!("kill -{name} {pid}")).status().unwrap();
}

impl Drop for Process {
    fn drop(&mut self) {
        for child in self.siblings.iter_mut().chain([&mut self.child]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `/health` of the broker at `addr`, asked without a runtime (on a thread of its own, as
/// the caller may be inside one); `None` if it did not answer.
fn blocking_health(addr: &SocketAddr) -> Option<Value> {
    let url = format!("http://{addr}/health");
    std::thread::spawn(move || {
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        http.get(url).send().ok()?.json().ok()
    })
    .join()
    .unwrap()
}

/// Waits (blocking, up to 60 s) until the nodes at `addrs` answer `/health` and one leads.
fn wait_led(addrs: &[SocketAddr]) {
    let started = std::time::Instant::now();
    loop {
        let healths: Vec<Value> = addrs.iter().filter_map(blocking_health).collect();
        if healths.len() == addrs.len() && led(&healths) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no leader after 60 s: {healths:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every frame the broker sends must fit the checked-in JSON Schema
/// (`protocol/schema/server-frame.schema.json`) that other clients are built against.
pub fn assert_fits_schema(frame: &Value) {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/schema/server-frame.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    });
    let errors: Vec<String> = validator.iter_errors(frame).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "the broker sent a frame outside the schema: {frame}\n{errors:?}");
}

/// A WebSocket client speaking Muster's protocol, for tests.
pub struct Ws {
    pub stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
    /// Events received while waiting for a reply.
    pub events: std::collections::VecDeque<Value>,
}

/// How long a test waits for a frame before failing.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

impl Ws {
    pub async fn connect(addr: SocketAddr) -> Ws {
        Ws::try_connect(addr).await.unwrap()
    }

    /// [`Ws::connect`], or the handshake's error (a 503 when the broker has no place).
    pub async fn try_connect(addr: SocketAddr) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        Ws::try_connect_to(addr, "/ws").await
    }

    /// Connects to `path` (`/w/{workspace}/ws`, say).
    pub async fn try_connect_to(addr: SocketAddr, path: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let (stream, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}")).await?;
        Ok(Ws { stream, next_id: 1, events: Default::default() })
    }

    pub async fn send_raw(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.stream.send(tokio_tungstenite::tungstenite::Message::text(text)).await.unwrap();
    }

    /// Sends `op` (an object without `id`) and returns the id it got.
    pub async fn send(&mut self, mut op: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        op["id"] = id.into();
        self.send_raw(&op.to_string()).await;
        id
    }

    /// The next text frame as JSON; `None` when the connection closed. Panics after
    /// [`FRAME_WAIT`].
    pub async fn frame(&mut self) -> Option<Value> {
        self.frame_within(FRAME_WAIT).await.expect("no frame in time")
    }

    /// The next text frame, or `Err` if none came within `wait`.
    pub async fn frame_within(&mut self, wait: Duration) -> Result<Option<Value>, tokio::time::error::Elapsed> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        tokio::time::timeout(wait, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let frame: Value = serde_json::from_str(t.as_str()).unwrap();
                        assert_fits_schema(&frame);
                        return Some(frame);
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
    }

    /// Reads until the close frame; returns its code and reason.
    pub async fn close_frame(&mut self) -> Option<(u16, String)> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        tokio::time::timeout(FRAME_WAIT, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Close(Some(f)))) => return Some((u16::from(f.code), f.reason.to_string())),
                    Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .expect("no close in time")
    }

    /// Sends `op` and waits for its reply, keeping events that arrive meanwhile.
    pub async fn request(&mut self, op: Value) -> Value {
        let id = self.send(op).await;
        loop {
            let frame = self.frame().await.expect("closed while waiting for a reply");
            if frame.get("re").is_some() {
                assert_eq!(frame["re"], id, "reply to another request: {frame}");
                return frame;
            }
            self.events.push_back(frame);
        }
    }

    /// The `data` of a successful reply.
    pub async fn ok(&mut self, op: Value) -> Value {
        let reply = self.request(op).await;
        assert_eq!(reply["ok"], true, "{reply}");
        reply["data"].clone()
    }

    /// `hello`; returns the welcome.
    pub async fn hello(&mut self, hello: Value) -> Value {
        let mut op = hello;
        op["op"] = "hello".into();
        self.ok(op).await
    }

    /// The next event.
    pub async fn event(&mut self) -> Value {
        if let Some(e) = self.events.pop_front() {
            return e;
        }
        let frame = self.frame().await.expect("closed while waiting for an event");
        assert!(frame.get("seq").is_some(), "expected an event, got {frame}");
        frame
    }

    /// Events until one of type `kind` (inclusive).
    pub async fn until(&mut self, kind: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let e = self.event().await;
            let done = e["type"] == kind;
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

/// Whether a test may skip for a missing Python (see [`python_venv`]).
pub fn skip_python(why: &str) {
    assert!(!std::env::var("MUSTER_REQUIRE_PYTHON").is_ok_and(|v| v == "1"), "MUSTER_REQUIRE_PYTHON=1 but {why}");
    // Straight to stderr, past the test harness's capture: a skip must show in the normal
    // output, not only with --nocapture.
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("SKIPPED: {why}\n"));
}

/// The Python of the virtual environment under `target/` that the tests' Python tools live
/// in (Debian's Python refuses a system-wide `pip install`), made if missing, with
/// `packages` (pinned requirements) installed if `import name` fails for one of them.
/// `Err` says why there is none: no Python 3, or no `venv` module.
pub fn python_venv(packages: &[(&str, &str)]) -> Result<PathBuf, String> {
    // Tests run in parallel: one makes the venv and installs at a time.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/python-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        match Command::new("python3").args(["-m", "venv"]).arg(&venv).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "python3 -m venv failed (apt install python3-venv): {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            Err(e) => return Err(format!("python3 is not installed ({e})")),
        }
    }
    for (module, requirement) in packages {
        let present = Command::new(&python).args(["-c", &format!("import {module}")]).output();
        if !present.is_ok_and(|o| o.status.success()) {
            let pip = Command::new(&python).args(["-m", "pip", "install", "--quiet", requirement]).status().unwrap();
            assert!(pip.success(), "pip install {requirement} failed");
        }
    }
    Ok(python)
}
