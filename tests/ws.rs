//! The WebSocket broker as clients see it: real sockets against the real server.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Process, Server, Ws, split};
use serde_json::{Value, json};

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_made_over_http_is_pushed_to_a_subscriber() {
    let s = Server::start().await;
    let mut ws = Ws::connect(s.addr()).await;
    let welcome = ws.hello(json!({"topics": ["tasks"]})).await;
    assert_eq!(welcome["recovered"], false);
    assert_eq!(welcome["topics"], json!(["tasks"]));

    s.task("Fix auth redirect").await;
    s.post("/tasks/T-1/claim", json!({"agent": "link"})).await;
    let created = ws.event().await;
    assert_eq!((created["type"].as_str(), created["data"]["task"]["id"].as_str()), (Some("task.created"), Some("T-1")));
    let claimed = ws.event().await;
    assert_eq!(claimed["type"], "task.claimed");
    assert_eq!(claimed["data"]["agent"], "link");
    assert_eq!(claimed["data"]["task"]["claim"]["token"], 1);
    assert!(claimed["seq"].as_u64() > created["seq"].as_u64());
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_receive_only_their_topics() {
    let s = Server::start().await;
    let mut t2 = Ws::connect(s.addr()).await;
    t2.hello(json!({"topics": ["task:T-2"]})).await;
    let mut chat = Ws::connect(s.addr()).await;
    chat.hello(json!({"topics": ["chat:ops"]})).await;
    let mut inbox = Ws::connect(s.addr()).await;
    inbox.hello(json!({"topics": ["inbox:link"]})).await;

    s.task("one").await;
    s.task("two").await;
    s.post("/chat/messages", json!({"from": "kai", "content": "general chatter"})).await;
    s.post("/chat/messages", json!({"from": "kai", "content": "deploy done", "channel": "ops"})).await;
    s.post("/chat/messages", json!({"from": "kai", "content": "@link look", "channel": "general"})).await;
    // A marker on every topic, so each subscriber knows it has seen everything before it.
    s.patch("/tasks/T-2", json!({"title": "two (marker)"})).await;
    s.post("/chat/messages", json!({"from": "kai", "content": "@link marker", "channel": "ops"})).await;

    let got = t2.until("task.updated").await;
    assert_eq!(got.iter().map(|e| e["type"].as_str().unwrap()).collect::<Vec<_>>(), ["task.created", "task.updated"]);
    assert!(got.iter().all(|e| e["data"]["task"]["id"] == "T-2"));
    let got = chat.until("chat.message").await;
    assert_eq!(got[0]["data"]["message"]["content"], "deploy done");
    let second = chat.event().await;
    assert_eq!(second["data"]["message"]["content"], "@link marker");
    let got = inbox.event().await;
    assert_eq!(got["data"]["message"]["content"], "@link look");
    let got = inbox.event().await;
    assert_eq!(got["data"]["message"]["content"], "@link marker");

    // Subscribing later adds topics, unsubscribing removes them.
    let data = t2.ok(json!({"op": "subscribe", "topics": ["presence", "task:1"]})).await;
    assert_eq!(data["topics"], json!(["presence", "task:T-1", "task:T-2"]));
    let data = t2.ok(json!({"op": "unsubscribe", "topics": ["task:T-2"]})).await;
    assert_eq!(data["topics"], json!(["presence", "task:T-1"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_resumes_after_a_disconnect_without_gap_or_duplicate() {
    let s = Server::start().await;
    let mut first = Ws::connect(s.addr()).await;
    let welcome = first.hello(json!({"topics": ["*"]})).await;
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    s.task("a").await;
    s.task("b").await;
    let seen = [first.event().await, first.event().await];
    let last = seen[1]["seq"].as_u64().unwrap();
    drop(first);

    // Missed while away.
    for i in 0..5 {
        s.task(&format!("missed {i}")).await;
    }
    let mut again = Ws::connect(s.addr()).await;
    let welcome = again.hello(json!({"topics": ["*"], "since": last, "epoch": epoch})).await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let head = welcome["head"].as_u64().unwrap();
    // ...and live after the hello.
    for i in 0..3 {
        s.task(&format!("live {i}")).await;
    }
    let mut got = Vec::new();
    while got.len() < 8 {
        got.push(again.event().await);
    }
    let got = seqs(&got);
    assert_eq!(got, (last + 1..=last + 8).collect::<Vec<_>>(), "replayed then live, each once, in order");
    assert!(head >= last + 5);
    assert!(again.frame_within(Duration::from_millis(300)).await.is_err(), "nothing more, no duplicate");

    // Another epoch: not recovered, nothing replayed.
    let mut other = Ws::connect(s.addr()).await;
    let welcome = other.hello(json!({"topics": ["*"], "since": 1, "epoch": "0000000000000000"})).await;
    assert_eq!(welcome["recovered"], false);
    assert!(other.frame_within(Duration::from_millis(300)).await.is_err());
}

#[test]
fn a_client_resumes_across_a_broker_killed_with_sigkill() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = Process::start(&data, &[], &[]);
    let http = reqwest::Client::new();
    let (epoch, last) = rt.block_on(async {
        let mut ws = Ws::connect(p.addr).await;
        let welcome = ws.hello(json!({"topics": ["tasks"]})).await;
        for i in 0..3 {
            let r = http
                .post(p.url("/tasks"))
                .body(json!({"title": format!("before {i}")}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        let mut last = 0;
        for _ in 0..3 {
            last = ws.event().await["seq"].as_u64().unwrap();
        }
        (welcome["epoch"].as_str().unwrap().to_owned(), last)
    });
    // Written while the client is not looking, then the broker dies.
    rt.block_on(async {
        for i in 0..4 {
            http.post(p.url("/tasks")).body(json!({"title": format!("unseen {i}")}).to_string()).send().await.unwrap();
        }
    });
    p.kill9();

    let p = Process::start(&data, &[], &[]);
    rt.block_on(async {
        http.post(p.url("/tasks")).body(json!({"title": "after restart"}).to_string()).send().await.unwrap();
        let mut ws = Ws::connect(p.addr).await;
        let welcome = ws.hello(json!({"topics": ["tasks"], "since": last, "epoch": epoch})).await;
        assert_eq!(welcome["recovered"], true, "{welcome}");
        assert_eq!(welcome["epoch"], epoch.as_str());
        let mut titles = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..5 {
            let e = ws.event().await;
            seen.push(e["seq"].as_u64().unwrap());
            titles.push(e["data"]["task"]["title"].as_str().unwrap().to_owned());
        }
        assert_eq!(titles, ["unseen 0", "unseen 1", "unseen 2", "unseen 3", "after restart"]);
        assert!(seen.windows(2).all(|w| w[0] < w[1]) && seen[0] > last, "{seen:?} after {last}");
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_never_reads_is_closed_and_the_others_get_everything() {
    // A quarter of the default outbox: the smallest (64 KiB, ten of these posts) is less
    // than one burst of a cluster's follower, which applies the leader's batches back to
    // back, so even a reader that keeps up could be cut off there.
    let s = Server::start_with(|c| c.outbox_bytes = 256 * 1024).await;
    let mut slow = Ws::connect(s.addr()).await;
    slow.hello(json!({"topics": ["chat"]})).await;
    let mut fast = Ws::connect(s.addr()).await;
    fast.hello(json!({"topics": ["chat"]})).await;

    // Enough bytes to fill the kernel's socket buffers on both ends and the outbox: the
    // slow client does not read at all meanwhile.
    const POSTS: usize = 3000;
    let content = "x".repeat(6000);
    let fast_reader = tokio::spawn(async move {
        let mut n = 0;
        while n < POSTS {
            let e = match fast.frame_within(Duration::from_secs(10)).await {
                Ok(Some(e)) => e,
                other => panic!("fast subscriber got {n} of {POSTS}, then {other:?}"),
            };
            assert_eq!(e["type"], "chat.message");
            n += 1;
        }
        fast
    });
    let mut writers = Vec::new();
    for w in 0..8 {
        let (http, url, content) = (s.http.clone(), s.url("/chat/messages"), content.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..POSTS / 8 {
                let body = json!({"from": "kai", "content": format!("{w}-{i} {content}")});
                let r = http.post(&url).body(body.to_string()).send().await.unwrap();
                assert_eq!(r.status(), 201);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let fast = fast_reader.await.unwrap();
    drop(fast);
    // Now the slow one reads: what was buffered, then the close.
    let (code, reason) = slow.close_frame().await.expect("a close frame");
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_is_active_on_hello_and_offline_on_close() {
    let s = Server::start().await;
    let mut watcher = Ws::connect(s.addr()).await;
    watcher.hello(json!({"topics": ["presence"]})).await;

    let mut link = Ws::connect(s.addr()).await;
    let welcome = link.hello(json!({"agent": "link"})).await;
    assert_eq!(welcome["agent"], "link");
    let e = watcher.event().await;
    assert_eq!((e["type"].as_str(), e["data"]["agent"]["connections"].as_u64()), (Some("presence.changed"), Some(1)));
    let (_, p) = s.get("/presence/link").await;
    assert_eq!((p["agent"]["status"].as_str(), p["agent"]["connections"].as_u64()), (Some("active"), Some(1)));

    let mut second = Ws::connect(s.addr()).await;
    second.hello(json!({"agent": "link"})).await;
    watcher.event().await;
    drop(second);
    let e = watcher.event().await;
    assert_eq!(e["data"]["agent"]["connections"], 1, "one session left: still present");
    let (_, p) = s.get("/presence/link").await;
    assert_eq!(p["agent"]["status"], "active");

    link.stream.close(None).await.unwrap();
    let e = watcher.event().await;
    assert_eq!(e["data"]["agent"]["connections"], 0);
    let (_, p) = s.get("/presence/link").await;
    assert_eq!(p["agent"]["status"], "offline", "{p}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_human_session_is_recorded_as_a_human() {
    let s = Server::start().await;
    let mut nobody = Ws::connect(s.addr()).await;
    let reply = nobody.request(json!({"op": "hello", "human": true})).await;
    assert_eq!((reply["ok"].as_bool(), reply["error"]["field"].as_str()), (Some(false), Some("human")), "{reply}");

    let mut watcher = Ws::connect(s.addr()).await;
    watcher.hello(json!({"topics": ["presence"]})).await;
    let mut alice = Ws::connect(s.addr()).await;
    alice.hello(json!({"agent": "alice", "human": true})).await;
    let e = watcher.event().await;
    assert_eq!(
        (e["data"]["agent"]["name"].as_str(), e["data"]["agent"]["human"].as_bool()),
        (Some("alice"), Some(true))
    );
    let (_, p) = s.get("/presence/alice").await;
    assert_eq!(p["agent"]["human"], true, "{p}");
    // What alice does is by a human, in the durable record, after she has gone too.
    s.task("Triage").await;
    alice.ok(json!({"op": "task.claim", "task": "T-1", "agent": "alice"})).await;
    drop(alice);
    let restarted = Server::start_in(s.stop().await, |_| {}).await;
    let (_, p) = restarted.get("/presence/alice").await;
    assert_eq!(p["agent"]["human"], true, "{p}");
    // Agents are not.
    restarted.post("/presence/link", json!({})).await;
    let (_, p) = restarted.get("/presence/link").await;
    assert!(p["agent"].get("human").is_none(), "{p}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_stops_answering_pings_goes_offline() {
    let s = Server::start_with(|c| c.ping_every = Duration::from_millis(200)).await;
    let mut ghost = Ws::connect(s.addr()).await;
    ghost.hello(json!({"agent": "ghost"})).await;
    let (_, p) = s.get("/presence/ghost").await;
    assert_eq!(p["agent"]["status"], "active");
    // The client stops reading (so it never answers a ping) but keeps the TCP socket open.
    let mut status = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, p) = s.get("/presence/ghost").await;
        status = p["agent"]["status"].as_str().unwrap().to_owned();
        if status == "offline" {
            break;
        }
    }
    assert_eq!(status, "offline");
    drop(ghost);
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_are_released_after_the_grace_unless_the_owner_returns() {
    // Default grace: 5 minutes after an agent's last session closed. The clock is moved by
    // hand; the release happens at the tick that moving it runs.
    let s = Server::start_manual(|_| {}).await;
    s.task("leaves").await;
    s.task("returns").await;
    let mut watcher = Ws::connect(s.addr()).await;
    watcher.hello(json!({"topics": ["tasks"]})).await;

    let mut link = Ws::connect(s.addr()).await;
    link.hello(json!({"agent": "link"})).await;
    let data = link.ok(json!({"op": "task.claim", "task": "T-1"})).await;
    assert_eq!(data["task"]["claim"]["agent"], "link");
    let mut zelda = Ws::connect(s.addr()).await;
    zelda.hello(json!({"agent": "zelda"})).await;
    zelda.ok(json!({"op": "task.claim", "task": "T-2"})).await;
    drop(link);
    drop(zelda);
    for agent in ["link", "zelda"] {
        s.until(&format!("/presence/{agent}"), |p| p["agent"]["status"] == "offline").await;
    }
    // zelda comes back within the grace; link does not.
    s.advance(Duration::from_secs(4 * 60));
    let mut zelda = Ws::connect(s.addr()).await;
    zelda.hello(json!({"agent": "zelda"})).await;
    let (_, t1) = s.get("/tasks/T-1").await;
    assert_eq!(t1["task"]["claim"]["agent"], "link", "within the grace the claim is kept");
    s.advance(Duration::from_secs(2 * 60));

    let released = loop {
        let e = watcher.event().await;
        if e["type"] == "task.released" {
            break e;
        }
    };
    assert_eq!(released["data"]["task"]["id"], "T-1");
    assert_eq!(released["data"]["reason"], "owner_gone");
    assert_eq!(released["data"]["agent"], "link");
    // The same tick looked at zelda's claim: the returning owner kept it.
    let (_, t2) = s.get("/tasks/T-2").await;
    assert_eq!(t2["task"]["claim"]["agent"], "zelda", "the returning owner kept its claim");
    let (_, t1) = s.get("/tasks/T-1").await;
    assert_eq!(t1["task"]["status"], "todo");
    drop(zelda);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_get_errors_and_the_connection_stays_open() {
    let s = Server::start().await;
    let mut ws = Ws::connect(s.addr()).await;
    let reply = ws.request(json!({"op": "task.list"})).await;
    assert_eq!(
        (reply["ok"].as_bool(), reply["error"]["message"].as_str()),
        (Some(false), Some("op: send hello first"))
    );
    ws.hello(json!({"agent": "link"})).await;

    ws.send_raw("{not json").await;
    let reply = ws.frame().await.unwrap();
    assert_eq!((reply["re"].clone(), reply["error"]["code"].as_str()), (Value::Null, Some("invalid")), "{reply}");
    let reply = ws.request(json!({"op": "task.clam", "task": "T-1"})).await;
    assert_eq!(reply["error"]["field"], "op");
    assert!(reply["error"]["message"].as_str().unwrap().contains("unknown op \"task.clam\""));
    let reply = ws.request(json!({"op": "task.create", "title": "t", "prio": "P1"})).await;
    assert_eq!(reply["error"]["field"], "prio");
    let reply = ws.request(json!({"op": "subscribe", "topics": ["tasks", "nonsense"]})).await;
    assert_eq!(reply["error"]["field"], "topics");
    let reply = ws.request(json!({"op": "hello"})).await;
    assert!(reply["error"]["message"].as_str().unwrap().contains("already"));

    // Still open and working: operations do what their HTTP twins do.
    let data = ws.ok(json!({"op": "task.create", "title": "over the socket"})).await;
    assert_eq!(data["task"]["createdBy"], "link");
    let mut other = Ws::connect(s.addr()).await;
    other.hello(json!({"agent": "zelda"})).await;
    ws.ok(json!({"op": "task.claim", "task": "T-1"})).await;
    let reply = other.request(json!({"op": "task.claim", "task": "T-1"})).await;
    assert_eq!(reply["error"]["code"], "conflict");
    assert_eq!(reply["error"]["message"], "T-1 is claimed by link");
    let data = other.ok(json!({"op": "chat.post", "content": "@link nice"})).await;
    assert_eq!(data["message"]["from"], "zelda");
    let data = ws.ok(json!({"op": "inbox.read"})).await;
    assert_eq!(data["unread"], 1);
    let data = ws.ok(json!({"op": "task.list", "status": ["doing"]})).await;
    assert_eq!(data["tasks"][0]["id"], "T-1");
    let data = ws.ok(json!({"op": "presence.list"})).await;
    assert_eq!(data["agents"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_frame_closes_with_1009() {
    let s = Server::start().await;
    let mut ws = Ws::connect(s.addr()).await;
    ws.hello(json!({})).await;
    let huge = format!(r#"{{"id": 1, "op": "task.create", "title": "{}"}}"#, "x".repeat(1 << 20));
    ws.send_raw(&huge).await;
    let (code, _) = ws.close_frame().await.expect("close frame");
    assert_eq!(code, 1009);
    // The broker is fine.
    let (status, _) = s.get("/health").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_without_hello_is_closed_in_time() {
    let s = Server::start_with(|c| c.hello_timeout = Duration::from_millis(300)).await;
    let mut ws = Ws::connect(s.addr()).await;
    let (code, reason) = ws.close_frame().await.expect("close frame");
    assert_eq!((code, reason.as_str()), (4001, "no hello in time"));
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_are_refused() {
    let mut s = Server::start_with(|c| (c.max_connections, c.max_observers) = (2, 1)).await;
    // The limit is each node's (on a cluster under test: one node of three).
    s.pin_to_one_node();
    let mut a = Ws::connect(s.addr()).await;
    a.hello(json!({"agent": "a"})).await;
    let _b = Ws::connect(s.addr()).await;
    // Before its hello, a connection takes an observer's place when the agents' are taken.
    let mut c = Ws::connect(s.addr()).await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr())).await;
    let Err(err) = refused else { panic!("the fourth connection was accepted") };
    assert!(err.to_string().contains("503"), "{err}");
    // Saying hello as an agent, it needs an agent's place, and none is free.
    let refused = c.request(json!({"op": "hello", "agent": "c"})).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("--max-connections"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_sent_events_resume_from_last_event_id() {
    use futures_util::StreamExt;
    let s = Server::start().await;
    s.task("a").await;
    s.task("b").await;
    let read = |r: reqwest::Response, n: usize| async move {
        let mut body = r.bytes_stream();
        let mut text = String::new();
        let mut events = Vec::new();
        while events.len() < n {
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await.unwrap().unwrap().unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let id = block.lines().find_map(|l| l.strip_prefix("id:")).map(|v| v.trim().to_owned());
                let kind = block.lines().find_map(|l| l.strip_prefix("event:")).map(|v| v.trim().to_owned());
                if let (Some(id), Some(kind)) = (id, kind) {
                    events.push((id.parse::<u64>().unwrap(), kind));
                }
            }
        }
        events
    };
    let r = s.http.get(s.url("/events/stream?topics=tasks")).header("Last-Event-ID", "1").send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let pending = tokio::spawn(read(r, 2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.task("c").await;
    let events = pending.await.unwrap();
    assert_eq!(events, [(2, "task.created".to_owned()), (3, "task.created".to_owned())]);
    // A Last-Event-ID from another history: a `resync` event with the head as its id, so that
    // a browser reconnecting resumes from there instead of sending the stale id again.
    let r = s.http.get(s.url("/events/stream?topics=tasks")).header("Last-Event-ID", "999").send().await.unwrap();
    assert_eq!(read(r, 1).await, [(3, "resync".to_owned())]);

    let (status, body) =
        split(s.http.get(s.url("/events/stream")).header("Last-Event-ID", "soon").send().await.unwrap()).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("Last-Event-ID")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_broker_closes_sessions_with_going_away_and_waits_for_them() {
    let s = Server::start().await;
    let mut ws = Ws::connect(s.addr()).await;
    ws.hello(json!({"agent": "link"})).await;
    let reader = tokio::spawn(async move { ws.close_frame().await });
    let dir = tokio::time::timeout(Duration::from_secs(10), s.stop()).await.expect("the stop finished in time");
    let (code, reason) = reader.await.unwrap().expect("a close frame");
    assert_eq!((code, reason.as_str()), (1001, "broker shutting down"));
    let stopped_at = chrono::Utc::now();
    // The session said goodbye before the sequencer stopped (not only the reset at the next
    // start): link left before the stop returned.
    let s = Server::start_in(dir, |_| {}).await;
    let (_, p) = s.get("/presence/link").await;
    assert_eq!((p["agent"]["status"].as_str(), p["agent"]["connections"].as_u64()), (Some("offline"), Some(0)));
    let (_, events) = s.get("/events?topics=presence").await;
    let last = events["events"].as_array().unwrap().last().unwrap().clone();
    let left: chrono::DateTime<chrono::Utc> = last["data"]["agent"]["leftAt"].as_str().unwrap().parse().unwrap();
    assert!(left <= stopped_at, "left at {left}, stopped at {stopped_at}: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_reads_nothing_does_not_hold_up_a_stop() {
    let s = Server::start_with(|c| c.outbox_bytes = 64 * 1024).await;
    let mut stuck = Ws::connect(s.addr()).await;
    stuck.hello(json!({"topics": ["chat"]})).await;
    // Fill the socket buffers of the stuck client (it never reads again) and its outbox.
    let content = "y".repeat(7000);
    let mut writers = Vec::new();
    for w in 0..8 {
        let (http, url, content) = (s.http.clone(), s.url("/chat/messages"), content.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..300 {
                let body = json!({"from": "kai", "content": format!("{w}-{i} {content}")});
                http.post(&url).body(body.to_string()).send().await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(20), s.stop()).await.expect("the stop finished in time");
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_from_another_origin_cannot_open_the_websocket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = Server::start().await;
    // The node the page would be served by is the node it opens the WebSocket on.
    let addr = s.addr();
    let attempt = |origin: Option<String>| {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    for evil in ["http://evil.example", "null", "http://127.0.0.1:1", &format!("https://{addr}.evil.example")] {
        match attempt(Some(evil.to_owned())).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{evil}");
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["error"]["code"], "forbidden", "{body}");
                assert!(body["error"]["message"].as_str().unwrap().contains("cross-origin"), "{body}");
            }
            other => panic!("{evil}: expected 403, got {:?}", other.map(|(_, r)| r.status())),
        }
    }
    // The dashboard's own origin, and clients that are not browsers (no Origin), are welcome.
    for origin in [Some(format!("http://{addr}")), None] {
        let (mut stream, _) = attempt(origin).await.unwrap();
        use futures_util::SinkExt;
        stream.send(tokio_tungstenite::tungstenite::Message::text(r#"{"id":1,"op":"hello"}"#)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_makes_a_websocket_write_safe_to_retry() {
    let s = Server::start().await;
    let mut ws = Ws::connect(s.addr()).await;
    ws.hello(json!({"agent": "link"})).await;
    let create = json!({"op": "task.create", "title": "Retry me", "idempotencyKey": "create-retry-me"});
    let first = ws.ok(create.clone()).await;
    // The retry (as after a dropped connection) gets the first answer: no second task.
    let again = ws.ok(create).await;
    assert_eq!(first, again);
    let (_, list) = s.get("/tasks").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1, "{list}");
    // The same key with another request is refused, and changes nothing.
    let other = ws.request(json!({"op": "task.create", "title": "Else", "idempotencyKey": "create-retry-me"})).await;
    assert_eq!(other["error"]["code"], "idempotency_mismatch", "{other}");
    // A key shared with HTTP is the same key.
    let r = s
        .http
        .post(s.url("/tasks"))
        .header("Idempotency-Key", "create-retry-me")
        .header("X-Agent", "link")
        .body(r#"{"title": "Retry me"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    // A read takes no key: it is safe to repeat anyway.
    let read = ws.request(json!({"op": "task.get", "task": "T-1", "idempotencyKey": "k"})).await;
    assert_eq!(read["error"]["field"], "idempotencyKey", "{read}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_comment_made_over_the_socket_reaches_the_tasks_subscribers_and_reads_back() {
    let s = Server::start().await;
    s.task("Fix auth redirect").await;
    let mut watcher = Ws::connect(s.addr()).await;
    watcher.hello(json!({"topics": ["task:T-1", "inbox:zelda"]})).await;
    let mut link = Ws::connect(s.addr()).await;
    link.hello(json!({"agent": "link"})).await;

    let posted =
        link.ok(json!({"op": "task.comment", "task": "T-1", "content": "@zelda the cookie is the culprit"})).await;
    assert_eq!((posted["message"]["from"].as_str(), posted["message"]["task"].as_str()), (Some("link"), Some("T-1")));
    let event = watcher.event().await;
    assert_eq!((event["type"].as_str(), &event["data"]["message"]), (Some("task.commented"), &posted["message"]));
    // Published once, though the watcher has two of its topics.
    assert!(watcher.frame_within(Duration::from_millis(300)).await.is_err(), "one event per comment");

    let page = link.ok(json!({"op": "task.comments", "task": "T-1"})).await;
    assert_eq!(page["messages"], json!([posted["message"]]), "{page}");
    let refused = link.request(json!({"op": "task.comment", "task": "T-9", "content": "x"})).await;
    assert_eq!(refused["error"]["code"], "not_found", "{refused}");
    let refused = link.request(json!({"op": "task.comments", "task": "T-1", "limit": 0})).await;
    assert_eq!(refused["error"]["field"], "limit", "{refused}");
}
