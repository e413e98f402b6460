//! What an outside tester did to the broker (issue 10), each reproduced as the attack —
//! raw HTTP, raw TCP or a WebSocket, against the real `muster` binary — with what must
//! happen instead.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Process, Ws, binary, split};
use serde_json::{Value, json};

fn issue(data: &std::path::Path, name: &str, human: bool) -> String {
    let mut cmd = Command::new(binary());
    cmd.args(["token", "add", name, "--data-dir"]).arg(data);
    if human {
        cmd.arg("--human");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn revoke(data: &std::path::Path, name: &str) -> String {
    let out = Command::new(binary()).args(["token", "remove", name, "--data-dir"]).arg(data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn call(p: &Process, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method.parse().unwrap(), p.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    split(request.send().await.unwrap()).await
}

/// Polls until `done` (a token file change takes up to half a second to be seen).
async fn eventually(mut done: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..50 {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// 1. `GET /tasks/next?claim=%74rue` from a web page (an `<img src>`) claimed for anyone: the
/// guard matched the raw query text, the handler the decoded one.
#[tokio::test(flavor = "multi_thread")]
async fn a_web_page_cannot_claim_a_task_whatever_the_query_spelling() {
    let root = tempfile::tempdir().unwrap();
    let p = Process::start(&root.path().join("data"), &[], &[]);
    call(&p, "POST", "/tasks", &[], Some(json!({"title": "Fix auth redirect"}))).await;
    for query in ["claim=%74rue", "cl%61im=true", "claim=tru%65", "claim=true"] {
        let path = format!("/tasks/next?agent=victim&{query}");
        for headers in [vec![("sec-fetch-site", "cross-site")], vec![]] {
            // What a browser sends for an <img> (a modern one marks it cross-site; an old
            // one sends neither Origin nor Sec-Fetch-Site).
            let (status, body) = call(&p, "GET", &path, &headers, None).await;
            assert_eq!(status, 403, "{query} {headers:?}: {body}");
        }
        let (_, task) = call(&p, "GET", "/tasks/T-1", &[], None).await;
        assert!(task["task"]["claim"].is_null(), "{query} claimed the task: {task}");
    }
    // A client that is not a web page says who it is, and claims.
    let (status, body) = call(&p, "GET", "/tasks/next?claim=%74rue", &[("x-agent", "link")], None).await;
    assert_eq!((status, body["task"]["claim"]["agent"].as_str()), (200, Some("link")), "{body}");
    // Even with the header, a page of another site is refused.
    call(&p, "POST", "/tasks", &[], Some(json!({"title": "second"}))).await;
    let headers = [("x-agent", "kai"), ("origin", "http://evil.example")];
    assert_eq!(call(&p, "GET", "/tasks/next?claim=true", &headers, None).await.0, 403);
}

/// 2. A WebSocket opened with a token kept its rights after `muster token remove`.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_ends_its_open_sessions_at_once() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let zelda = issue(&data, "zelda", false);
    let _keep_tokens_on = issue(&data, "kai", false);
    let p = Process::start(&data, &[], &[]);
    let mut ws = Ws::connect(p.addr).await;
    ws.hello(json!({"agent": "zelda", "token": zelda})).await;
    ws.ok(json!({"op": "task.create", "title": "before"})).await;
    let sse = reqwest::Client::new().get(p.url("/events/stream")).bearer_auth(&zelda).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    let options = muster_client::Options::new(p.url("")).agent("zelda");
    let options = muster_client::Options { token: Some(muster_client::protocol::ws::Secret(zelda.clone())), ..options };
    let (client, _) = muster_client::Client::connect(options).await.unwrap();

    let revoked_at = Instant::now();
    revoke(&data, "zelda");
    let (code, reason) = ws.close_frame().await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (4003, "token revoked"));
    assert!(revoked_at.elapsed() < Duration::from_secs(3), "took {:?}", revoked_at.elapsed());
    // The stream ends too.
    let mut sse = sse;
    let ended =
        tokio::time::timeout(Duration::from_secs(5), async { while let Ok(Some(_)) = sse.chunk().await {} }).await;
    assert!(ended.is_ok(), "the event stream of a revoked token kept going");
    // The Rust client treats it as final: no reconnect loop, and says why.
    let error = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.tasks(Default::default()).await {
                Err(muster_client::Error::Revoked(reason)) => return reason,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the client did not see the revocation");
    assert!(error.contains("revoked"), "{error}");
    assert_eq!(call(&p, "GET", "/tasks", &[("authorization", &format!("Bearer {zelda}"))], None).await.0, 401);
}

/// 3. Silent, slow and idle HTTP connections were held forever; 3,100 of them locked
/// everyone out.
#[tokio::test(flavor = "multi_thread")]
async fn silent_slow_and_idle_connections_are_closed_and_never_lock_others_out() {
    let root = tempfile::tempdir().unwrap();
    let extra = ["--header-timeout", "1s", "--body-timeout", "1s", "--max-http-connections", "50"];
    let p = Process::start(&root.path().join("data"), &[], &extra);
    let closed = |mut tcp: std::net::TcpStream| {
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        // The broker closes: EOF (or a reset), not a read timeout.
        !matches!(tcp.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
    };
    // A connection that never sends a byte, and one that sends its headers a byte a
    // second, are closed once the header deadline passes.
    let silent = std::net::TcpStream::connect(p.addr).unwrap();
    let mut slow = std::net::TcpStream::connect(p.addr).unwrap();
    let started = Instant::now();
    for b in b"GET /health HTTP/1.1\r\nHo" {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert!(closed(silent), "a silent connection was kept");
    assert!(closed(slow), "a connection trickling its headers was kept");

    // An idle keep-alive connection closes after the same deadline.
    let mut idle = std::net::TcpStream::connect(p.addr).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = [0u8; 1024];
    assert!(idle.read(&mut answer).unwrap() > 0);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(closed(idle), "an idle keep-alive connection was kept");

    // A body trickled a byte at a time is refused with 408.
    let mut body = std::net::TcpStream::connect(p.addr).unwrap();
    body.write_all(b"POST /tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{").unwrap();
    body.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let _ = body.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request_timeout"), "{got}");

    // Four times the pool of silent connections: past twice the cap (a burst gets that much
    // room) the newest make the oldest go, and everyone else is still served at once.
    let flood: Vec<_> = (0..200).map(|_| std::net::TcpStream::connect(p.addr).unwrap()).collect();
    let started = Instant::now();
    let (status, _) = call(&p, "GET", "/health", &[], None).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(1), "health took {:?}", started.elapsed());
    let (status, _) = call(&p, "POST", "/tasks", &[], Some(json!({"title": "still writable"}))).await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still_open = flood.into_iter().filter(|tcp| !closed_now(tcp)).count();
    assert!(still_open <= 100, "{still_open} silent connections are still held, past twice the cap of 50");
}

/// Whether the broker closed `tcp` (a read does not block).
fn closed_now(tcp: &std::net::TcpStream) -> bool {
    tcp.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    match (&*tcp).read(&mut buf) {
        // EOF, or what the broker said before closing.
        Ok(0 | 1..) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// 4. Removing the last token (or the token file) opened the broker to anyone.
#[tokio::test(flavor = "multi_thread")]
async fn removing_every_token_does_not_open_the_broker() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let solo = issue(&data, "solo", false);
    let p = Process::start(&data, &[], &[]);
    let bearer = format!("Bearer {solo}");
    assert_eq!(call(&p, "POST", "/tasks", &[("authorization", &bearer)], Some(json!({"title": "ok"}))).await.0, 201);
    assert_eq!(call(&p, "POST", "/tasks", &[], Some(json!({"title": "anyone"}))).await.0, 401);
    let said = revoke(&data, "solo");
    assert!(said.contains("last token"), "the CLI warns: {said}");
    // The broker notices within a second, and stays closed: for anyone, with any token.
    assert!(eventually(async || call(&p, "GET", "/tasks", &[("authorization", &bearer)], None).await.0 == 401).await);
    let (status, body) = call(&p, "POST", "/tasks", &[], Some(json!({"title": "anyone"}))).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("restart"), "{body}");
    std::fs::remove_file(data.join("tokens.json")).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(call(&p, "POST", "/tasks", &[], Some(json!({"title": "anyone"}))).await.0, 401);
    let mut ws = Ws::connect(p.addr).await;
    let reply = ws.request(json!({"op": "hello", "agent": "mallory"})).await;
    assert_eq!(reply["error"]["code"], "unauthorized", "{reply}");
    // Health stays open.
    assert_eq!(call(&p, "GET", "/health", &[], None).await.0, 200);
}

/// 5. Any agent token could mark its session a person's.
#[tokio::test(flavor = "multi_thread")]
async fn only_a_person_token_opens_a_person_session() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let agent = issue(&data, "bot", false);
    let person = issue(&data, "alice", true);
    let p = Process::start(&data, &[], &[]);
    let mut ws = Ws::connect(p.addr).await;
    let reply = ws.request(json!({"op": "hello", "agent": "bot", "token": agent, "human": true})).await;
    assert_eq!((reply["error"]["code"].as_str(), reply["error"]["field"].as_str()), (Some("forbidden"), Some("human")));
    let mut ws = Ws::connect(p.addr).await;
    ws.hello(json!({"agent": "alice", "token": person, "human": true})).await;
    let (_, alice) = call(&p, "GET", "/presence/alice", &[("authorization", &format!("Bearer {person}"))], None).await;
    assert_eq!(alice["agent"]["human"], true, "{alice}");
}

/// 6. With a token, a write naming nobody was refused ("may not act as "); SECURITY.md says
/// it runs as the token's agent.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_naming_nobody_acts_as_the_token() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let link = issue(&data, "link", false);
    let p = Process::start(&data, &[], &[]);
    let bearer = format!("Bearer {link}");
    let (status, body) =
        call(&p, "POST", "/chat/messages", &[("authorization", &bearer)], Some(json!({"content": "hi"}))).await;
    assert_eq!((status, body["message"]["from"].as_str()), (201, Some("link")), "{body}");
    let out = Command::new(binary())
        .args(["chat", "post", "from the shell"])
        .env("MUSTER_URL", p.url(""))
        .env("MUSTER_TOKEN", &link)
        .env_remove("MUSTER_AGENT")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, page) = call(&p, "GET", "/chat/messages", &[("authorization", &bearer)], None).await;
    assert_eq!(page["messages"][1]["from"], "link", "{page}");
}

/// 7. A text frame that is not UTF-8 dropped the TCP connection without a close frame.
#[tokio::test(flavor = "multi_thread")]
async fn a_text_frame_that_is_not_utf8_is_closed_with_1007() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let root = tempfile::tempdir().unwrap();
    let p = Process::start(&root.path().join("data"), &[], &[]);
    let mut ws = Ws::connect(p.addr).await;
    ws.hello(json!({})).await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.stream.send(Message::Frame(bad)).await.unwrap();
    let (code, reason) = ws.close_frame().await.expect("a close frame, not a dropped connection");
    assert_eq!((code, reason.as_str()), (1007, "text frame is not UTF-8"));
}

/// 8. Each refused request with a new Idempotency-Key cost memory for a day.
#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_are_bounded_and_refusals_are_not_recorded() {
    let root = tempfile::tempdir().unwrap();
    let p = Process::start(&root.path().join("data"), &[], &["--idempotency-keys", "5"]);
    let keys = async || {
        let text = reqwest::get(p.url("/metrics")).await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix("muster_idempotency_keys ")).unwrap().parse::<u64>().unwrap()
    };
    for i in 0..30 {
        let key = format!("refused-{i}");
        let (status, _) = call(&p, "POST", "/tasks", &[("idempotency-key", &key)], Some(json!({"title": ""}))).await;
        assert_eq!(status, 400);
    }
    assert_eq!(keys().await, 0, "refused writes were recorded");
    for i in 0..8 {
        let key = format!("accepted-{i}");
        let (status, _) =
            call(&p, "POST", "/tasks", &[("idempotency-key", &key)], Some(json!({"title": format!("t{i}")}))).await;
        assert_eq!(status, 201);
    }
    assert_eq!(keys().await, 5, "only the newest five are kept");
    // The newest is still answered from its record; the oldest is forgotten (documented).
    let retry = reqwest::Client::new()
        .post(p.url("/tasks"))
        .header("idempotency-key", "accepted-7")
        .body(json!({"title": "t7"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(retry.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(split(retry).await.1["task"]["id"], "T-8");
    let (status, again) =
        call(&p, "POST", "/tasks", &[("idempotency-key", "accepted-0")], Some(json!({"title": "t0"}))).await;
    assert_eq!((status, again["task"]["id"].as_str()), (201, Some("T-9")), "an evicted key runs again");
}

/// 9. The data dir was created 0755: every local user could read every task and message.
#[test]
fn the_data_dir_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("served");
    let p = Process::start(&data, &[], &[]);
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    drop(p);
    let tokens = root.path().join("tokens-first");
    issue(&tokens, "link", false);
    assert_eq!(std::fs::metadata(&tokens).unwrap().permissions().mode() & 0o777, 0o700);
}

/// 10. `LINK` and `link` were two agents, and `@lіnk` (a Cyrillic і) mentioned `l`.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_is_one_agent_in_any_case_and_a_mention_is_a_whole_name() {
    let root = tempfile::tempdir().unwrap();
    let p = Process::start(&root.path().join("data"), &[], &[]);
    call(&p, "POST", "/tasks", &[], Some(json!({"title": "one"}))).await;
    let (status, claimed) = call(&p, "POST", "/tasks/T-1/claim", &[("x-agent", "LINK")], None).await;
    assert_eq!((status, claimed["task"]["claim"]["agent"].as_str()), (200, Some("link")), "{claimed}");
    let (status, released) = call(&p, "POST", "/tasks/T-1/release", &[], Some(json!({"agent": "Link"}))).await;
    assert_eq!((status, released["task"]["status"].as_str()), (200, Some("todo")), "{released}");
    let (_, everyone) = call(&p, "GET", "/presence", &[], None).await;
    let names: Vec<&str> = everyone["agents"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["link"]);
    assert_eq!(call(&p, "GET", "/presence/LINK", &[], None).await.1["agent"]["name"], "link");

    let (_, m) =
        call(&p, "POST", "/chat/messages", &[], Some(json!({"from": "Kai", "content": "@LINK please look"}))).await;
    assert_eq!((m["message"]["from"].as_str(), m["message"]["mentions"].clone()), (Some("kai"), json!(["link"])));
    let (_, m) =
        call(&p, "POST", "/chat/messages", &[], Some(json!({"from": "kai", "content": "@l\u{456}nk look"}))).await;
    assert_eq!(m["message"]["mentions"], json!([]), "a name with a Cyrillic letter mentions nobody: {m}");
    let (_, inbox) = call(&p, "GET", "/inbox/Link", &[], None).await;
    assert_eq!(inbox["unread"], 1, "{inbox}");
    let (_, l) = call(&p, "GET", "/inbox/l", &[], None).await;
    assert_eq!(l["unread"], 0, "{l}");
}

// Issue 25: what an attack run against 0631a6e found (real processes, loopback).

/// A pattern of the attack: `*[!b]` seven times (14 wildcards), a 200-byte literal (its
/// first four bytes `i`), and `*`: 236 bytes, whose automaton is several hundred states.
fn adversarial(i: usize) -> String {
    let letters: String = (0..196).map(|k| char::from(b'a' + ((k * 7 + k / 26) % 26) as u8)).collect();
    format!("{}{i:04}{letters}*", "*[!b]".repeat(7))
}

/// A client that gives up after five seconds: the attacks below held a request (and every
/// write behind it) for 17 to 68 seconds.
fn impatient() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

/// `mallory` holds 1,000 adversarial patterns (an agent's own never conflict), one per
/// request: compiling one takes most of a request's budget of steps.
async fn hold_adversarial(p: &Process) {
    let http = reqwest::Client::new();
    let requests = (0..1000).map(|i| {
        let body = json!({"repo": "app", "patterns": [adversarial(i)], "agent": "mallory"});
        http.post(p.url("/files/reserve")).body(body.to_string()).send()
    });
    for reply in futures_util::future::join_all(requests).await {
        assert_eq!(reply.unwrap().status(), 200);
    }
}

/// 1. Overlap checks ran in the writer thread, each adversarial pair 17–60 ms: a reserve
/// against 1,000 held took 17 s, and a chat post sent meanwhile 38.9 s.
#[tokio::test(flavor = "multi_thread")]
async fn adversarial_patterns_never_hold_the_writer() {
    let root = tempfile::tempdir().unwrap();
    let p = Process::start(&root.path().join("data"), &[], &[]);
    hold_adversarial(&p).await;
    let http = impatient();
    let reserve = |patterns: Vec<String>| {
        let body = json!({"repo": "app", "patterns": patterns, "agent": "eve"});
        http.post(p.url("/files/reserve")).body(body.to_string()).send()
    };
    let post = http.post(p.url("/chat/messages")).body(json!({"from": "bob", "content": "still here"}).to_string());
    // An attack pattern (it overlaps mallory's, and checking it takes most of a request's
    // budget: refused either way) while bob posts.
    let (refused, posted) = tokio::join!(reserve(vec![adversarial(1000)]), post.send());
    let (status, refused) = split(refused.expect("the reserve was answered")).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("conflict")));
    assert_eq!(posted.expect("the post was answered").status(), 201);
    // Two at once: compiling them alone takes more than a request's budget.
    let (status, refused) = split(reserve(vec![adversarial(1001), adversarial(1002)]).await.unwrap()).await;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert_eq!((status, refused["error"]["field"].as_str()), (409, Some("patterns[1]")), "{message}");

    // A pattern that shares no path with mallory's (one segment of at most 33 characters
    // cannot hold her 200-byte literal) but must be checked against each: the checks stop
    // at the request's limit of steps, and nothing is reserved.
    let short = format!("{}a", "[!z]".repeat(16));
    let (status, refused) = split(reserve(vec!["docs/api.md".into(), short]).await.unwrap()).await;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert_eq!((status, refused["error"]["field"].as_str()), (409, Some("patterns[1]")), "{message}");
    assert!(message.contains("2000000 matching steps"), "{message}");
    let (_, held) = call(&p, "GET", "/files?agent=eve", &[], None).await;
    assert_eq!(held["reservations"], json!([]), "all or nothing: {held}");

    // A pattern whose automaton would be too large is refused when read.
    let (status, refused) = split(reserve(vec![format!("*a{}b*", "?".repeat(8))]).await.unwrap()).await;
    assert_eq!((status, refused["error"]["field"].as_str()), (400, Some("patterns[0]")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("1000 states"), "{refused}");

    // Ordinary work goes on: eve reserves a file of her own.
    let (status, ok) = split(reserve(vec!["src/eve.rs".into()]).await.unwrap()).await;
    assert_eq!((status, ok["reservations"][0]["pattern"].as_str()), (200, Some("src/eve.rs")), "{ok}");
}

/// 2. `/files/who` matched on an async worker without a bound: 15 paths of 4,095 bytes
/// against 1,000 adversarial reservations took 46–51 s, `/health` waited 20 s, and an idle
/// agent's WebSocket was dropped for not answering pings.
#[tokio::test(flavor = "multi_thread")]
async fn who_holds_a_path_is_answered_within_its_budget() {
    let root = tempfile::tempdir().unwrap();
    let p = Process::start(&root.path().join("data"), &[], &["--ping-every", "1s"]);
    hold_adversarial(&p).await;
    let mut idle = Ws::connect(p.addr).await;
    idle.hello(json!({"agent": "idle"})).await;

    let long = format!("{}/{}", "d".repeat(2000), "f".repeat(2092));
    let query: String = (0..15).map(|i| format!("&path={long}{i}")).collect();
    let http = impatient();
    let who = http.get(p.url(&format!("/files/who?repo=app{query}"))).send();
    let health = http.get(p.url("/health")).send();
    let (who, health) = tokio::join!(who, health);
    let (status, refused) = split(who.expect("who was answered")).await;
    assert_eq!((status, refused["error"]["field"].as_str()), (400, Some("paths")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("2000000 steps"), "{refused}");
    assert_eq!(health.expect("health was answered").status(), 200);
    // The same question about ordinary paths is answered.
    let (status, found) = split(http.get(p.url("/files/who?repo=app&path=src/a.rs")).send().await.unwrap()).await;
    assert_eq!((status, found["paths"][0]["reservations"].clone()), (200, json!([])), "{found}");
    // The idle agent's session answered every ping meanwhile.
    let reply = idle.request(json!({"op": "presence.list"})).await;
    assert_eq!(reply["ok"], true, "{reply}");
}

/// 5. `\.\./secret` passed: the `.`/`..` check ran before unescaping.
#[tokio::test(flavor = "multi_thread")]
async fn escaped_dot_segments_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let p = Process::start(&root.path().join("data"), &[], &[]);
    for pattern in [r"\.\./secret", r"\./secret", r"src/\.\.", r"a/\./b"] {
        let body = json!({"repo": "app", "patterns": [pattern], "agent": "eve"});
        let (status, refused) = call(&p, "POST", "/files/reserve", &[], Some(body)).await;
        assert_eq!((status, refused["error"]["field"].as_str()), (400, Some("patterns[0]")), "{pattern}: {refused}");
    }
}

/// 3. Subscriptions were bounded in count, not size: 1,024 topics of 137 characters cost
/// about 855 KiB per WebSocket, 13 GiB at the connection cap.
#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_is_bounded_in_bytes_and_counted_in_the_connections_budget() {
    let root = tempfile::tempdir().unwrap();
    let p = Process::start(&root.path().join("data"), &[], &[]);
    let mut ws = Ws::connect(p.addr).await;
    ws.hello(json!({"agent": "watcher"})).await;
    let long: Vec<String> = (0..256).map(|i| format!("chat:{i:0>132}")).collect();
    let refused = ws.request(json!({"op": "subscribe", "topics": long})).await;
    assert_eq!(refused["error"]["field"], "topics", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("16384 bytes"), "{refused}");
    // The largest subscription allowed: 1,024 topics of 16 bytes.
    for chunk in 0..4 {
        let topics: Vec<String> = (chunk * 256..chunk * 256 + 256).map(|i| format!("chat:c{i:0>10}")).collect();
        let reply = ws.request(json!({"op": "subscribe", "topics": topics})).await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
    let one_more = ws.request(json!({"op": "subscribe", "topics": ["presence"]})).await;
    assert_eq!(one_more["error"]["field"], "topics", "{one_more}");
    // It still gets its events.
    call(&p, "POST", "/chat/messages", &[], Some(json!({"from": "kai", "content": "hi", "channel": "c0000000007"})))
        .await;
    assert_eq!(ws.event().await["data"]["message"]["channel"], "c0000000007");

    // What a subscription holds counts against the connection's budget: a small one leaves
    // room for few topics.
    let small = Process::start(&root.path().join("small"), &[], &["--outbox-bytes", "65536"]);
    let mut ws = Ws::connect(small.addr).await;
    ws.hello(json!({"agent": "watcher"})).await;
    let topics: Vec<String> = (1..=200).map(|i| format!("task:T-{i}")).collect();
    let refused = ws.request(json!({"op": "subscribe", "topics": topics})).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("budget of 65536"), "{refused}");
}

/// 4. A refused value reached the log: a token sent by mistake in `since` was logged whole
/// in the WARN "bad frame" line, and in `op` its first 40 characters.
#[tokio::test(flavor = "multi_thread")]
async fn no_refused_value_reaches_the_log() {
    const SECRET: &str = "mst_0ddba11c0ffee5ecre7t0ken4a1b2c3d4e5f6";
    let root = tempfile::tempdir().unwrap();
    let p = Process::start(&root.path().join("data"), &[], &[]);
    let frames = [
        format!(r#"{{"id":"{SECRET}","op":"hello"}}"#),
        format!(r#"{{"id":1,"op":"{SECRET}"}}"#),
        format!(r#"{{"id":2,"op":"hello","since":"{SECRET}"}}"#),
        format!(r#"{{"id":3,"op":"hello","agent":"{SECRET}!"}}"#),
        format!(r#"{{"id":4,"op":"hello","topics":["{SECRET}"]}}"#),
        format!(r#"{{"id":5,"op":"hello","epoch":{{"{SECRET}":1}}}}"#),
        format!(r#"{{"id":6,"op":"hello","{SECRET}":1}}"#),
        SECRET.to_owned(),
    ];
    let mut ws = Ws::connect(p.addr).await;
    for frame in &frames {
        ws.send_raw(frame).await;
        assert_eq!(ws.frame().await.unwrap()["ok"], false, "{frame}");
    }
    ws.hello(json!({"agent": "link"})).await;
    for op in [
        json!({"op": "task.claim", "task": SECRET}),
        json!({"op": "chat.post", "content": "x", "channel": format!("{SECRET}!")}),
        json!({"op": "files.reserve", "repo": "app", "patterns": [format!("!{SECRET}")]}),
        json!({"op": "inbox.read", "agent": format!("{SECRET}!")}),
        json!({"op": "subscribe", "topics": [SECRET]}),
    ] {
        assert_eq!(ws.request(op.clone()).await["ok"], false, "{op}");
    }
    for path in [
        format!("/events?since={SECRET}"),
        format!("/events?topics={SECRET}"),
        format!("/tasks?status={SECRET}"),
        format!("/tasks/{SECRET}"),
        format!("/files/who?repo=app&path=/{SECRET}"),
        format!("/inbox/{SECRET}!"),
        format!("/events/stream?{SECRET}=1"),
    ] {
        let (status, _) = call(&p, "GET", &path, &[("x-agent", &format!("{SECRET}!"))], None).await;
        assert_eq!(status, 400, "{path}");
    }
    let (status, _) = call(&p, "GET", "/events/stream", &[("last-event-id", SECRET)], None).await;
    assert_eq!(status, 400);
    drop(ws);
    let log_path = p.log.clone();
    assert!(p.terminate().success());
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains("bad frame"), "the refusals were logged:\n{log}");
    assert!(!log.contains(&SECRET[..16]), "a refused value reached the log:\n{log}");
}

/// Opens an event stream and returns it once its headers came (it stays open while held).
async fn stream(p: &Process) -> reqwest::Response {
    reqwest::get(p.url("/events/stream?topics=tasks")).await.unwrap()
}

/// 6. Observers and agents shared `--max-connections`: 300 held event streams made agents'
/// WebSocket hello get 503.
#[tokio::test(flavor = "multi_thread")]
async fn observers_never_take_an_agents_place() {
    let root = tempfile::tempdir().unwrap();
    let p = Process::start(&root.path().join("data"), &[], &["--max-connections", "3", "--max-observers", "4"]);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let s = stream(&p).await;
        assert_eq!(s.status(), 200);
        streams.push(s);
    }
    // The observers' places are taken: a fifth stream is refused, naming its budget...
    let refused = stream(&p).await;
    assert_eq!(refused.status(), 503);
    assert!(split(refused).await.1["error"]["message"].as_str().unwrap().contains("--max-observers"));
    // Every agent still gets its place.
    let mut agents = Vec::new();
    for name in ["link", "zelda", "kai"] {
        let mut ws = Ws::connect(p.addr).await;
        ws.hello(json!({"agent": name})).await;
        agents.push(ws);
    }
    // A dashboard (a session without an agent) finds no place left.
    let refused = Ws::try_connect(p.addr).await.err().map(|e| e.to_string());
    assert!(refused.as_deref().is_some_and(|e| e.contains("503")), "{refused:?}");
    let text = reqwest::get(p.url("/metrics")).await.unwrap().text().await.unwrap();
    for line in [
        r#"muster_connection_places{budget="agents"} 3"#,
        r#"muster_connection_places_used{budget="agents"} 3"#,
        r#"muster_connection_places{budget="observers"} 4"#,
        r#"muster_connection_places_used{budget="observers"} 4"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in /metrics:\n{text}");
    }
    // A stream that ends gives its place back, to the observers: the dashboard gets it.
    streams.pop();
    let mut dashboard = None;
    for _ in 0..50 {
        dashboard = Ws::try_connect(p.addr).await.ok();
        if dashboard.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut dashboard = dashboard.expect("the dashboard never got the freed place");
    let welcome = dashboard.request(json!({"op": "hello", "topics": ["tasks"]})).await;
    assert_eq!(welcome["ok"], true, "{welcome}");
}

/// 7. With tokens on, any agent's token could take another agent's claim away (`force`,
/// ending its task's reservations) and read or follow another agent's inbox.
#[tokio::test(flavor = "multi_thread")]
async fn an_agents_token_takes_no_claim_away_and_reads_no_other_inbox() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let link = format!("Bearer {}", issue(&data, "link", false));
    let zelda = format!("Bearer {}", issue(&data, "zelda", false));
    let boss = format!("Bearer {}", issue(&data, "boss", true));
    let p = Process::start(&data, &[], &[]);
    let req = async |method: &str, path: &str, token: &String, body: Option<Value>| {
        let headers: Vec<(&str, &str)> = vec![("authorization", token.as_str())];
        call(&p, method, path, &headers, body).await
    };
    req("POST", "/tasks", &boss, Some(json!({"title": "session store"}))).await;
    req("POST", "/tasks/T-1/claim", &link, None).await;
    let (status, _) =
        req("POST", "/files/reserve", &link, Some(json!({"repo": "app", "patterns": ["src/auth/"], "task": "T-1"})))
            .await;
    assert_eq!(status, 200);

    // zelda cannot take it away: 403 naming the rule and the way to ask.
    let (status, refused) = req("POST", "/tasks/T-1/release", &zelda, Some(json!({"force": true}))).await;
    assert_eq!((status, refused["error"]["field"].as_str()), (403, Some("force")), "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("person's token") && message.contains("muster chat post '@link"), "{message}");
    let (_, task) = req("GET", "/tasks/T-1", &zelda, None).await;
    assert_eq!(task["task"]["claim"]["agent"], "link", "{task}");
    let (_, files) = req("GET", "/files?task=T-1", &zelda, None).await;
    assert_eq!(files["reservations"].as_array().map(Vec::len), Some(1), "the reservations are still held: {files}");
    // Over the WebSocket too.
    let mut ws = Ws::connect(p.addr).await;
    ws.hello(json!({"agent": "zelda", "token": zelda.trim_start_matches("Bearer ")})).await;
    let refused = ws.request(json!({"op": "task.release", "task": "T-1", "force": true})).await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");

    // Its owner releases it, force or not; a person takes a claim away.
    req("POST", "/tasks", &boss, Some(json!({"title": "second"}))).await;
    req("POST", "/tasks/T-2/claim", &link, None).await;
    let (status, _) = req("POST", "/tasks/T-2/release", &link, Some(json!({"force": true}))).await;
    assert_eq!(status, 200);
    let (status, released) = req("POST", "/tasks/T-1/release", &boss, Some(json!({"force": true}))).await;
    assert_eq!((status, released["task"]["claim"].clone()), (200, Value::Null), "{released}");

    // link's inbox: link's and a person's only.
    req("POST", "/chat/messages", &boss, Some(json!({"content": "@link the store is yours"}))).await;
    for (method, path) in [("GET", "/inbox/link"), ("POST", "/inbox/link/ack"), ("GET", "/events?topics=inbox:link")] {
        let (status, refused) = req(method, path, &zelda, None).await;
        assert_eq!(status, 403, "{method} {path}: {refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("link's inbox is link's"), "{refused}");
    }
    let stream = reqwest::Client::new()
        .get(p.url("/events/stream?topics=inbox:link"))
        .header("authorization", &zelda)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 403);
    let refused = ws.request(json!({"op": "subscribe", "topics": ["inbox:link"]})).await;
    assert_eq!(refused["error"]["field"], "topics", "{refused}");
    let refused = ws.request(json!({"op": "inbox.read", "agent": "link"})).await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    let mut other = Ws::connect(p.addr).await;
    let refused = other
        .request(json!({"op": "hello", "agent": "zelda", "token": zelda.trim_start_matches("Bearer "), "topics": ["inbox:link"]}))
        .await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    let (status, inbox) = req("GET", "/inbox/link", &link, None).await;
    assert_eq!((status, inbox["unread"].as_u64()), (200, Some(1)), "{inbox}");
    let (status, inbox) = req("GET", "/inbox/link", &boss, None).await;
    assert_eq!((status, inbox["unread"].as_u64()), (200, Some(1)), "{inbox}");
}

/// `X-Content-Type-Options: nosniff` on every response, whatever answered it: a route, an
/// error, the guard, the fallback, the dashboard.
#[tokio::test(flavor = "multi_thread")]
async fn every_response_says_nosniff() {
    let root = tempfile::tempdir().unwrap();
    let p = Process::start(&root.path().join("data"), &[], &[]);
    let http = reqwest::Client::new();
    let big = "x".repeat(100_000);
    let requests = [
        http.get(p.url("/health")),
        http.get(p.url("/tasks")),
        http.get(p.url("/tasks/T-404")),
        http.post(p.url("/tasks")).body("{"),
        http.post(p.url("/tasks")).body(big),
        http.delete(p.url("/tasks")),
        http.get(p.url("/no-such-route")),
        http.post(p.url("/tasks")).header("origin", "http://evil.example").body(r#"{"title":"x"}"#),
        http.get(p.url("/dashboard")),
        http.get(p.url("/metrics")),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        let (status, url) = (response.status(), response.url().clone());
        let nosniff = response.headers().get("x-content-type-options").and_then(|v| v.to_str().ok());
        assert_eq!(nosniff, Some("nosniff"), "{status} {url}");
    }
}
