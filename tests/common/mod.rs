//! Test harness: the real broker on 127.0.0.1:0 with a temp data dir, in-process or as a
//! child process of the real `muster` binary.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use muster::{Config, ServeError};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A broker running inside the test process.
pub struct Server {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config::new(addr, dir.path().to_owned());
        configure(&mut config);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(muster::run(listener, config, shutdown.clone()));
        let server = Server { addr, http: reqwest::Client::new(), shutdown, handle: Some(handle), dir: Some(dir) };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(self.url("/health")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("broker did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the broker gracefully and returns its data dir for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
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
        self.shutdown.cancel();
    }
}

pub async fn split(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The real `muster` binary, started as a child process.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_muster"))
}

impl Process {
    /// Starts `muster serve` on 127.0.0.1:0 in `dir`, wrapped by `wrapper` if given (e.g.
    /// strace), and reads the bound address from its startup line.
    pub fn start(dir: &Path, wrapper: &[&str], extra: &[&str]) -> Process {
        let log = dir.with_extension("log");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
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
            for line in lines.map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(out, "{line}");
            }
        });
        Process { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        signal("TERM", self.child.id());
        self.child.wait().unwrap()
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

/// Sends a signal with the shell's `kill` (no extra package needed).
pub fn signal(name: &str, pid: u32) {
    Command::new("sh").arg("-c").arg(format!("kill -{name} {pid}")).status().unwrap();
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
