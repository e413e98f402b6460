//! The HTTP API as a client sees it: real server on 127.0.0.1:0, real sled in a temp dir.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, split};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn a_task_goes_from_todo_to_done_and_every_step_is_an_event() {
    let s = Server::start().await;
    let id = s.task("write the parser").await;
    assert_eq!(id, "T-1");

    let (status, body) = s.patch("/tasks/T-1", json!({"priority": "P0", "tags": ["parser"], "agent": "kai"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["priority"], "P0");

    let (status, body) = s.post("/tasks/T-1/claim", json!({"agent": "link"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["status"], "doing");
    assert_eq!(body["task"]["claim"]["agent"], "link");
    let token = body["task"]["claim"]["token"].as_u64().unwrap();

    let (status, body) = s.patch("/tasks/T-1", json!({"status": "review", "agent": "link", "token": token})).await;
    assert_eq!((status, body["task"]["status"].as_str()), (200, Some("review")), "{body}");

    let (status, body) = s.post("/tasks/T-1/complete", json!({"agent": "link", "token": token})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["status"], "done");
    assert_eq!(body["task"]["claim"], Value::Null);

    let (_, page) = s.get("/events?topics=task:T-1").await;
    let types: Vec<&str> = page["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["task.created", "task.updated", "task.claimed", "task.updated", "task.completed"]);
    let seqs: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(page["head"].as_u64().unwrap() >= *seqs.last().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_say_who_holds_the_task_and_why() {
    let s = Server::start().await;
    s.task("a").await;
    s.post("/tasks/T-1/claim", json!({"agent": "link"})).await;

    let (status, body) = s.post("/tasks/T-1/claim", json!({"agent": "zelda"})).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(body["error"]["message"], "T-1 is claimed by link");

    // The claim is released and re-taken: link's old token is stale.
    s.post("/tasks/T-1/release", json!({"agent": "link"})).await;
    s.post("/tasks/T-1/claim", json!({"agent": "zelda"})).await;
    let (status, body) = s.post("/tasks/T-1/complete", json!({"agent": "link", "token": 1})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("stale_claim")), "{body}");

    let (status, body) = s.post("/tasks", json!({"title": "b", "blockedBy": ["T-1"]})).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s.post("/tasks/T-2/claim", json!({"agent": "kai"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("blocked")), "{body}");
    assert_eq!(body["error"]["message"], "T-2 is blocked by T-1 (doing)");

    s.post("/tasks/T-1/complete", json!({"agent": "zelda"})).await;
    let (status, body) = s.post("/tasks/T-1/claim", json!({"agent": "kai"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_transition")), "{body}");
    // T-2 became ready when its last blocker was done.
    let (_, page) = s.get("/events?topics=task:T-2").await;
    assert_eq!(page["events"].as_array().unwrap().last().unwrap()["type"], "task.ready");
    let (status, _) = s.post("/tasks/T-2/claim", json!({"agent": "kai"})).await;
    assert_eq!(status, 200);
}

/// Bad input gets a clear error naming the field; nothing stored is harmed; the broker
/// keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_and_harms_nothing() {
    let s = Server::start().await;
    s.task("keep me").await;
    s.post("/tasks/T-1/claim", json!({"agent": "link"})).await;
    let (_, before) = s.get("/tasks").await;
    let (_, health_before) = s.get("/health").await;

    let long = "x".repeat(201);
    let huge = "y".repeat(70 * 1024);
    // (method, path, body, status, code, field)
    type Case<'a> = (&'a str, &'a str, String, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("POST", "/tasks", "{bad json".into(), 400, "invalid", Some("body")),
        ("POST", "/tasks", "".into(), 400, "invalid", Some("body")),
        ("POST", "/tasks", "[\"title\"]".into(), 400, "invalid", Some("body")),
        ("POST", "/tasks", "{\"title\":\"x\"} trailing".into(), 400, "invalid", Some("body")),
        ("POST", "/tasks", json!({}).to_string(), 400, "invalid", Some("title")),
        ("POST", "/tasks", json!({"title": 5}).to_string(), 400, "invalid", Some("title")),
        ("POST", "/tasks", json!({"title": "  "}).to_string(), 400, "invalid", Some("title")),
        ("POST", "/tasks", json!({"title": long}).to_string(), 400, "invalid", Some("title")),
        ("POST", "/tasks", json!({"title": "a\nb"}).to_string(), 400, "invalid", Some("title")),
        ("POST", "/tasks", json!({"title": "t", "priority": "P7"}).to_string(), 400, "invalid", Some("priority")),
        ("POST", "/tasks", json!({"title": "t", "asignee": "link"}).to_string(), 400, "invalid", Some("asignee")),
        (
            "POST",
            "/tasks",
            json!({"title": "t", "assignee": "has space"}).to_string(),
            400,
            "invalid",
            Some("assignee"),
        ),
        (
            "POST",
            "/tasks",
            json!({"title": "t", "blockedBy": ["T-1", "nope"]}).to_string(),
            400,
            "invalid",
            Some("blockedBy[1]"),
        ),
        (
            "POST",
            "/tasks",
            json!({"title": "t", "blockedBy": ["T-99"]}).to_string(),
            404,
            "not_found",
            Some("blockedBy[0]"),
        ),
        (
            "POST",
            "/tasks",
            json!({"title": "t", "blockedBy": ["T-10000000000000000000"]}).to_string(),
            400,
            "invalid",
            Some("blockedBy[0]"),
        ),
        ("POST", "/tasks", json!({"title": "t", "tags": ["ok", ""]}).to_string(), 400, "invalid", Some("tags[1]")),
        ("POST", "/tasks", json!({"title": "t", "description": huge}).to_string(), 413, "too_large", None),
        (
            "POST",
            "/tasks",
            json!({"title": "t", "description": "d".repeat(9000)}).to_string(),
            400,
            "invalid",
            Some("description"),
        ),
        ("POST", "/tasks/T-1/claim", json!({"agent": ""}).to_string(), 400, "invalid", Some("agent")),
        ("POST", "/tasks/T-1/claim", "".into(), 400, "invalid", Some("agent")),
        ("POST", "/tasks/T-1/claim", json!({"agent": "x\u{7}"}).to_string(), 400, "invalid", Some("agent")),
        (
            "POST",
            "/tasks/T-1/claim",
            json!({"agent": "link", "token": "one"}).to_string(),
            400,
            "invalid",
            Some("token"),
        ),
        ("POST", "/tasks/T-9/claim", json!({"agent": "link"}).to_string(), 404, "not_found", None),
        ("POST", "/tasks/banana/claim", json!({"agent": "link"}).to_string(), 400, "invalid", Some("id")),
        ("GET", "/tasks/T-404", "".into(), 404, "not_found", None),
        ("PATCH", "/tasks/T-1", json!({"status": "paused"}).to_string(), 400, "invalid", Some("status")),
        ("PATCH", "/tasks/T-1", json!({"status": "done"}).to_string(), 400, "invalid", Some("agent")),
        ("GET", "/tasks?status=todo,paused", "".into(), 400, "invalid", Some("status")),
        ("GET", "/tasks?colour=red", "".into(), 400, "invalid", Some("colour")),
        ("GET", "/tasks/next", "".into(), 400, "invalid", Some("agent")),
        ("POST", "/chat/messages", json!({"from": "kai"}).to_string(), 400, "invalid", Some("content")),
        ("POST", "/chat/messages", json!({"from": "kai", "content": ""}).to_string(), 400, "invalid", Some("content")),
        ("POST", "/chat/messages", json!({"from": "", "content": "hi"}).to_string(), 400, "invalid", Some("from")),
        (
            "POST",
            "/chat/messages",
            json!({"from": "kai", "content": "hi", "channel": "no spaces"}).to_string(),
            400,
            "invalid",
            Some("channel"),
        ),
        (
            "POST",
            "/chat/messages",
            json!({"from": "kai", "content": "hi", "replyTo": "M-77"}).to_string(),
            404,
            "not_found",
            Some("replyTo"),
        ),
        ("GET", "/chat/messages?limit=0", "".into(), 400, "invalid", Some("limit")),
        ("POST", "/presence/kai", json!({"status": "Very Busy"}).to_string(), 400, "invalid", Some("status")),
        ("POST", "/presence/kai", json!({"note": "n".repeat(300)}).to_string(), 400, "invalid", Some("note")),
        ("POST", "/inbox/kai/ack", json!({"seq": 1_000_000}).to_string(), 409, "conflict", Some("seq")),
        ("POST", "/inbox/kai/ack", json!({"seq": 2.5}).to_string(), 400, "invalid", Some("seq")),
        ("GET", "/tasks?tag=", "".into(), 400, "invalid", Some("tag")),
        ("GET", "/events?since=9223372036854775808", "".into(), 400, "invalid", Some("since")),
        ("GET", "/events?wait=61", "".into(), 400, "invalid", Some("wait")),
        ("GET", "/events?wait=2m", "".into(), 400, "invalid", Some("wait")),
        ("GET", "/events?wait=soon", "".into(), 400, "invalid", Some("wait")),
        ("GET", "/events?since=-1", "".into(), 400, "invalid", Some("since")),
        ("GET", "/events?topics=tasks,bogus", "".into(), 400, "invalid", Some("topics")),
        ("DELETE", "/tasks/T-1", "".into(), 405, "method_not_allowed", None),
        ("GET", "/no/such/route", "".into(), 404, "not_found", None),
    ];
    for (method, path, body, status, code, field) in &cases {
        let r = s.http.request(method.parse().unwrap(), s.url(path)).body(body.clone()).send().await.unwrap();
        let (got, body) = split(r).await;
        let info = &body["error"];
        assert_eq!((got, info["code"].as_str()), (*status, Some(*code)), "{method} {path}: {body}");
        assert_eq!(info["field"].as_str(), *field, "{method} {path}: {body}");
        assert!(!info["message"].as_str().unwrap_or_default().is_empty(), "{method} {path}: {body}");
    }

    // X-Agent says who calls; a body naming another agent is refused, as with a token.
    let r = s
        .http
        .post(s.url("/tasks/T-1/release"))
        .header("X-Agent", "zelda")
        .body(r#"{"agent":"link"}"#)
        .send()
        .await
        .unwrap();
    let (status, body) = split(r).await;
    assert_eq!((status, body["error"]["field"].as_str()), (403, Some("agent")), "{body}");

    // Nothing stored changed, and the broker still serves.
    let (_, after) = s.get("/tasks").await;
    assert_eq!(before, after);
    let (_, health_after) = s.get("/health").await;
    assert_eq!(health_before["head"], health_after["head"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_makes_a_retry_safe_even_across_a_restart() {
    let s = Server::start().await;
    let send = |key: &'static str, title: &'static str| {
        let r = s.http.post(s.url("/tasks")).header("Idempotency-Key", key).body(json!({"title": title}).to_string());
        async move { r.send().await.unwrap() }
    };
    let first = send("create-login", "login page").await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (status, first) = split(first).await;
    assert_eq!(status, 201);
    let again = send("create-login", "login page").await;
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let (status, again) = split(again).await;
    assert_eq!((status, &again), (201, &first));
    let (status, body) = split(send("create-login", "another title").await).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("idempotency_mismatch")), "{body}");

    let dir = s.stop().await;
    let s = Server::start_in(dir, |_| {}).await;
    let r = s
        .http
        .post(s.url("/tasks"))
        .header("Idempotency-Key", "create-login")
        .body(json!({"title": "login page"}).to_string())
        .send()
        .await
        .unwrap();
    let (status, replayed) = split(r).await;
    assert_eq!((status, &replayed), (201, &first));
    let (_, list) = s.get("/tasks").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1, "the retry created nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn long_poll_returns_at_once_when_events_exist_and_wakes_on_a_new_one() {
    let s = Server::start().await;
    s.task("first").await;

    let started = Instant::now();
    let (_, page) = s.get("/events?since=0&wait=30").await;
    assert!(started.elapsed() < Duration::from_secs(10), "did not return at once");
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    let head = page["head"].as_u64().unwrap();

    // Nothing new: the poll waits until a matching event arrives.
    let poll = {
        let http = s.http.clone();
        let url = s.url(&format!("/events?since={head}&topics=chat&wait=30"));
        tokio::spawn(async move { split(http.get(url).send().await.unwrap()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "returned before any event");
    s.task("not chat: must not wake the chat poll with a result").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "a task event answered a chat poll");
    let started = Instant::now();
    s.post("/chat/messages", json!({"from": "kai", "content": "wake up"})).await;
    let (status, page) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["type"], "chat.message");
    assert_eq!(events[0]["data"]["message"]["content"], "wake up");

    // No event at all: an empty page when the wait is over.
    let head = page["head"].as_u64().unwrap();
    let (status, page) = s.get(&format!("/events?since={head}&wait=1")).await;
    assert_eq!((status, page["events"].as_array().unwrap().len()), (200, 0));
    assert_eq!((&page["resync"], &page["next"]), (&json!(false), &json!(head)));
    // `wait` as the CLI writes durations.
    let started = Instant::now();
    let (status, page) = s.get(&format!("/events?since={head}&wait=1s")).await;
    assert_eq!((status, page["events"].as_array().unwrap().len()), (200, 0));
    assert!(started.elapsed() >= Duration::from_millis(900), "1s was waited");

    // A `since` past the head (a seq from another history, as README's `since=12` on a fresh
    // broker): answered at once, telling the client to re-read the state and go on from the head.
    let started = Instant::now();
    let (status, page) = s.get(&format!("/events?since={}&wait=30s", head + 100)).await;
    assert!(started.elapsed() < Duration::from_secs(10), "did not wait for events that cannot come");
    assert_eq!(status, 200);
    assert_eq!((&page["resync"], &page["head"], &page["next"]), (&json!(true), &json!(head), &json!(head)), "{page}");
    assert_eq!(page["epoch"].as_str().map(str::len), Some(16));
}

#[tokio::test(flavor = "multi_thread")]
async fn next_peeks_with_get_and_claims_only_when_asked() {
    let s = Server::start().await;
    s.task("low").await;
    s.post("/tasks", json!({"title": "urgent", "priority": "P0"})).await;

    let (_, peek) = s.get("/tasks/next?agent=link").await;
    assert_eq!(peek["task"]["id"], "T-2");
    assert_eq!(peek["task"]["status"], "todo", "a GET without claim=true changes nothing");

    // The GET that claims needs an X-Agent header (no web page of another site can send one).
    let claim = |http: &reqwest::Client| http.get(s.url("/tasks/next?agent=link&claim=true")).header("X-Agent", "link");
    let (status, refused) = s.get("/tasks/next?agent=link&claim=true").await;
    assert_eq!((status, refused["error"]["field"].as_str()), (403, Some("X-Agent")), "{refused}");
    let (status, claimed) = split(claim(&s.http).send().await.unwrap()).await;
    assert_eq!((status, claimed["task"]["id"].as_str()), (200, Some("T-2")));
    assert_eq!(claimed["task"]["claim"]["agent"], "link");
    // A retry gets the same task back, not a second one.
    let (_, retry) = split(claim(&s.http).send().await.unwrap()).await;
    assert_eq!(retry["task"]["id"], "T-2");

    let r = s.http.post(s.url("/tasks/next")).header("X-Agent", "zelda").send().await.unwrap();
    let (_, other) = split(r).await;
    assert_eq!(other["task"]["id"], "T-1");
    let (_, none) = s.post("/tasks/next", json!({"agent": "kai"})).await;
    assert_eq!(none, json!({"task": null}));
}

#[tokio::test(flavor = "multi_thread")]
async fn get_requests_never_change_state() {
    let s = Server::start().await;
    s.task("a").await;
    s.post("/chat/messages", json!({"from": "kai", "content": "@link hi"})).await;
    let (_, before) = s.get("/health").await;
    for path in [
        "/tasks",
        "/tasks/T-1",
        "/tasks/next?agent=link",
        "/presence",
        "/presence/kai",
        "/chat/messages",
        "/chat/channels",
        "/inbox/link",
        "/inbox/link?all=true",
        "/events",
        "/events?since=1&wait=0",
        "/health",
        "/metrics",
        "/capabilities",
        "/openapi.json",
    ] {
        let (status, _) = s.get(path).await;
        assert_eq!(status, 200, "{path}");
    }
    let (_, after) = s.get("/health").await;
    assert_eq!(before["head"], after["head"]);
    let (_, inbox) = s.get("/inbox/link").await;
    assert_eq!(inbox["unread"], 1, "reading the inbox does not mark it read");
}

#[tokio::test(flavor = "multi_thread")]
async fn mentions_land_in_the_inbox_until_acknowledged() {
    let s = Server::start().await;
    s.post("/chat/messages", json!({"from": "kai", "content": "@link @zelda standup?"})).await;
    s.post("/chat/messages", json!({"from": "zelda", "content": "ping", "to": "link"})).await;
    s.post("/chat/messages", json!({"from": "kai", "content": "no mention here"})).await;

    let (_, inbox) = s.get("/inbox/link").await;
    assert_eq!(inbox["unread"], 2, "{inbox}");
    let contents: Vec<&str> =
        inbox["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["@link @zelda standup?", "ping"]);
    assert_eq!(inbox["messages"][1]["channel"], "dm:link,zelda");

    let first_seq = inbox["messages"][0]["seq"].as_u64().unwrap();
    let (status, cursor) = s.post("/inbox/link/ack", json!({"seq": first_seq})).await;
    assert_eq!((status, cursor["cursor"].as_u64()), (200, Some(first_seq)));
    let (_, inbox) = s.get("/inbox/link").await;
    assert_eq!(inbox["unread"], 1);
    let (_, cursor) = s.post("/inbox/link/ack", json!({})).await;
    let (_, inbox) = s.get("/inbox/link").await;
    assert_eq!((inbox["unread"].as_u64(), inbox["cursor"].clone()), (Some(0), cursor["cursor"].clone()));
    let (_, all) = s.get("/inbox/link?all=true").await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 2);

    let (_, general) = s.get("/chat/messages?channel=general").await;
    assert_eq!(general["messages"].as_array().unwrap().len(), 2, "the direct message is not in general");
    let (_, page) = s.get("/chat/messages?channel=general&limit=1").await;
    assert_eq!(page["messages"][0]["content"], "no mention here", "without since: the newest");
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_follows_heartbeats_and_silence() {
    // Defaults: idle after 5 min, stuck after 20, offline after 30, an HTTP owner's claims
    // released 30 min after its last contact. The broker's clock is moved by hand.
    let s = Server::start_manual(|_| {}).await;
    let (status, body) = s.post("/presence/link", json!({"status": "busy", "note": "on the parser"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agent"]["status"], "busy");
    assert_eq!(body["agent"]["note"], "on the parser");
    let (_, one) = s.get("/presence/link").await;
    assert_eq!(one["agent"]["lastSeen"], "0s ago");
    s.advance(Duration::from_secs(6 * 60));
    let (_, one) = s.get("/presence/link").await;
    assert_eq!((one["agent"]["status"].as_str(), one["agent"]["lastSeen"].as_str()), (Some("idle"), Some("6m ago")));
    // Any request that names the agent counts as contact.
    s.task("t").await;
    s.post("/tasks/T-1/claim", json!({"agent": "link"})).await;
    let (_, all) = s.get("/presence").await;
    assert_eq!(all["agents"][0]["status"], "busy");
    assert_eq!(all["agents"][0]["task"], "T-1");
    assert_eq!(all["agents"][0]["stuck"], false);
    // Silent while holding a doing task: stuck after 20 minutes, and the claim expires 30
    // minutes after the last contact.
    s.advance(Duration::from_secs(21 * 60));
    let (_, one) = s.get("/presence/link").await;
    assert_eq!((one["agent"]["status"].as_str(), one["agent"]["stuck"].as_bool()), (Some("idle"), Some(true)), "{one}");
    let expires: chrono::DateTime<chrono::Utc> = one["agent"]["claimsExpireAt"].as_str().unwrap().parse().unwrap();
    let seen: chrono::DateTime<chrono::Utc> = one["agent"]["lastSeenAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires - seen, chrono::Duration::minutes(30));
    assert_eq!(s.get("/tasks/T-1").await.1["task"]["claim"]["agent"], "link", "still within the lease");
    s.advance(Duration::from_secs(10 * 60));
    let released = s.until("/tasks/T-1", |t| t["task"]["status"] == "todo").await;
    assert!(released["task"]["claim"].is_null(), "{released}");
    let (_, one) = s.get("/presence/link").await;
    assert_eq!((one["agent"]["status"].as_str(), one["agent"]["stuck"].as_bool()), (Some("offline"), Some(false)));
    let (status, _) = s.get("/presence/ghost").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn state_and_sequence_survive_a_restart() {
    let s = Server::start().await;
    s.task("a").await;
    s.post("/tasks/T-1/claim", json!({"agent": "link"})).await;
    s.post("/chat/messages", json!({"from": "kai", "content": "@link hello"})).await;
    s.post("/inbox/link/ack", json!({})).await;
    let (_, before_tasks) = s.get("/tasks").await;
    let (_, health) = s.get("/health").await;
    let dir = s.stop().await;

    let s = Server::start_in(dir, |_| {}).await;
    let (_, after_health) = s.get("/health").await;
    assert_eq!(after_health["epoch"], health["epoch"]);
    assert_eq!(after_health["head"], health["head"]);
    let (_, after_tasks) = s.get("/tasks").await;
    assert_eq!(before_tasks, after_tasks);
    let (_, inbox) = s.get("/inbox/link").await;
    assert_eq!(inbox["unread"], 0);
    let (_, msgs) = s.get("/chat/messages").await;
    assert_eq!(msgs["messages"][0]["content"], "@link hello");
    // The sequence continues where it stopped.
    s.task("b").await;
    let head = health["head"].as_u64().unwrap();
    let (_, page) = s.get(&format!("/events?since={head}")).await;
    assert_eq!(page["events"][0]["seq"].as_u64(), Some(head + 1));
    let (_, all) = s.get("/events?limit=1000").await;
    let seqs: Vec<u64> = all["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=head + 1).collect::<Vec<_>>(), "gap-free");
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_and_openapi_describe_the_routes_that_exist() {
    let s = Server::start().await;
    let (_, caps) = s.get("/capabilities").await;
    let routes = caps["routes"].as_array().unwrap();
    assert!(routes.len() >= 20, "{caps}");
    for route in routes {
        let method = route["method"].as_str().unwrap();
        let path = route["path"].as_str().unwrap().replace("{id}", "T-1").replace("{agent}", "link");
        let r = s.http.request(method.parse().unwrap(), s.url(&path)).send().await.unwrap();
        if r.headers().get("content-type").is_some_and(|t| t == "text/event-stream") {
            assert_eq!(r.status(), 200, "{path}");
            continue; // a stream: it never ends
        }
        let (status, body) = split(r).await;
        let unrouted = status == 404 && body["error"]["message"].as_str().unwrap_or_default().starts_with("no route");
        assert!(!unrouted && status != 405, "{method} {path} is listed but not served: {status} {body}");
    }
    for listed in ["/tasks/{id}/claim", "/tasks/next", "/presence", "/chat/messages", "/events", "/files/reserve"] {
        assert!(routes.iter().any(|r| r["path"] == listed), "{listed} missing");
    }
    assert!(caps["topics"].as_array().unwrap().contains(&serde_json::json!("files")), "{caps}");
    assert_eq!(caps["limits"]["files"]["maxPatternsPerRequest"], 100, "{caps}");
    let (_, api) = s.get("/openapi.json").await;
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    assert!(api["paths"]["/tasks/{id}/claim"]["post"].is_object());
    assert!(api["components"]["schemas"]["Task"].is_object());
    assert!(api["components"]["schemas"]["ReserveFiles"].is_object(), "the reservation routes are described");
    // Each list's `limit` is stated with the bounds the broker enforces (1 to the largest page).
    let pages = &caps["limits"]["pages"];
    for (path, largest) in [
        ("/tasks", &pages["tasks"]["max"]),
        ("/chat/messages", &pages["messages"]["max"]),
        ("/tasks/{id}/comments", &pages["messages"]["max"]),
        ("/inbox/{agent}", &pages["inbox"]["max"]),
        ("/presence", &pages["agents"]["max"]),
        ("/chat/channels", &pages["channels"]["max"]),
        ("/events", &serde_json::json!(1000)),
    ] {
        let params = api["paths"][path]["get"]["parameters"].as_array().unwrap();
        let limit =
            &params.iter().find(|p| p["name"] == "limit").unwrap_or_else(|| panic!("{path}: no limit"))["schema"];
        assert_eq!((&limit["minimum"], &limit["maximum"]), (&serde_json::json!(1), largest), "{path}: {limit}");
    }
    // The counts written as numbers in the schemas are the broker's limits.
    let schemas = &api["components"]["schemas"];
    let (limits, files) = (&caps["limits"], &caps["limits"]["files"]);
    for (schema, field, key, limit) in [
        ("CreateTask", "blockedBy", "maxItems", &limits["maxBlockers"]),
        ("CreateTask", "tags", "maxItems", &limits["maxTags"]),
        ("ReserveFiles", "patterns", "maxItems", &files["maxPatternsPerRequest"]),
        ("ReleaseFiles", "patterns", "maxItems", &files["maxPatternsPerRequest"]),
        ("ReserveFiles", "ttlSeconds", "maximum", &files["maxTtlSeconds"]),
    ] {
        assert_eq!(&schemas[schema]["properties"][field][key], limit, "{schema}.{field}.{key}");
    }
    // Every reference resolves (schemathesis skipped what `order` refers to, once).
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match v {
                        Value::String(r) if key == "$ref" => out.push(r.clone()),
                        other => refs(other, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&api, &mut found);
    assert!(found.len() > 20, "{found:?}");
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}: not a schema reference"));
        assert!(api["components"]["schemas"][name].is_object(), "{r} does not resolve");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_happened() {
    let mut s = Server::start().await;
    // Each node counts what came to it (on a cluster under test: one node of three).
    s.pin_to_one_node();
    s.task("a").await;
    s.post("/tasks/T-1/claim", json!({"agent": "link"})).await;
    s.post("/tasks/T-1/claim", json!({"agent": "zelda"})).await;
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("muster_commands_total{result=\"ok\"} 2"), "{text}");
    assert!(text.contains("muster_commands_total{result=\"refused\"} 1"), "{text}");
    assert!(text.contains("muster_tasks{status=\"doing\"} 1"), "{text}");
    assert!(text.contains("muster_commit_seconds_count"), "{text}");
    // Agents by status, not every agent ever seen; the process as Prometheus clients name it.
    assert!(text.contains("muster_agents{status=\"active\"} 1"), "{text}");
    assert!(text.contains("muster_agents_seen 1"), "{text}");
    assert!(text.contains("muster_connections{kind=\"websocket\"} 0"), "{text}");
    for gauge in ["process_resident_memory_bytes ", "process_open_fds ", "process_cpu_seconds_total "] {
        let value = text.lines().find_map(|l| l.strip_prefix(gauge)).and_then(|v| v.parse::<f64>().ok());
        assert!(value.is_some_and(|v| v > 0.0), "{gauge}: {text}");
    }

    // Streams open now: one WebSocket session.
    let mut ws = common::Ws::connect(s.addr()).await;
    ws.hello(json!({"agent": "navi"})).await;
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("muster_connections{kind=\"websocket\"} 1"), "{text}");
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if text.contains("muster_connections{kind=\"websocket\"} 0") {
            break;
        }
        assert!(Instant::now() < deadline, "the closed session is still counted: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_answers_or_refuses_every_write_and_loses_none() {
    let s = Server::start().await;
    let mut writers = Vec::new();
    for i in 0..64 {
        let (http, url) = (s.http.clone(), s.url("/tasks"));
        writers.push(tokio::spawn(async move {
            let r = http.post(url).body(json!({"title": format!("t{i}")}).to_string()).send().await;
            match r {
                Ok(r) if r.status() == 201 => Some(split(r).await.1["task"]["title"].as_str().unwrap().to_owned()),
                _ => None,
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let dir = s.stop().await;
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let s = Server::start_in(dir, |_| {}).await;
    let (_, list) = s.get("/tasks").await;
    let stored: Vec<&str> = list["tasks"].as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap()).collect();
    for title in &acked {
        assert!(stored.contains(&title.as_str()), "acknowledged {title} is lost");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_board_is_served_compressed_and_revalidated_with_an_etag() {
    use std::io::Read;
    let s = Server::start().await;
    for i in 0..20 {
        s.task(&format!("task {i}")).await;
    }
    let plain = s.http.get(s.url("/tasks")).send().await.unwrap();
    let etag = plain.headers()["etag"].to_str().unwrap().to_owned();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();

    let zipped = s.http.get(s.url("/tasks")).header("Accept-Encoding", "br;q=1, gzip").send().await.unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let zipped = zipped.bytes().await.unwrap();
    assert!(zipped.len() < plain.len() / 3, "{} vs {}", zipped.len(), plain.len());
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..]).read_to_end(&mut unzipped).unwrap();
    assert_eq!(unzipped, plain);

    let refused = s.http.get(s.url("/tasks")).header("Accept-Encoding", "gzip;q=0").send().await.unwrap();
    assert!(refused.headers().get("content-encoding").is_none());

    let same = s.http.get(s.url("/tasks")).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(same.status(), 304);
    assert!(same.bytes().await.unwrap().is_empty());
    s.task("one more").await;
    let changed = s.http.get(s.url("/tasks")).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn the_dashboard_and_the_js_client_are_served_from_the_binary() {
    let s = Server::start().await;
    let page = s.http.get(s.url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/dashboard/app.js">"#), "{html}");
    assert!(!html.contains("<script>"), "no inline script: the CSP would block it");

    let client = s.http.get(s.url("/client.js")).send().await.unwrap();
    assert!(client.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let served = client.text().await.unwrap();
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js/muster.js")).unwrap();
    assert_eq!(served, source, "/client.js is clients/js/muster.js");
    let app = s.http.get(s.url("/dashboard/app.js")).send().await.unwrap().text().await.unwrap();
    assert!(app.contains("from '/client.js'"), "the dashboard uses the JS client");
    let css = s.http.get(s.url("/dashboard/style.css")).send().await.unwrap();
    assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));

    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let root = no_redirects.get(s.url("/")).send().await.unwrap();
    assert_eq!((root.status().as_u16(), root.headers()["location"].to_str().unwrap()), (303, "/dashboard"));
    // They are routes like the others.
    let (_, caps) = s.get("/capabilities").await;
    assert!(caps.to_string().contains("/dashboard"), "{caps}");
}

#[tokio::test(flavor = "multi_thread")]
async fn comments_on_a_task_are_its_thread_reach_mentioned_inboxes_and_survive_a_restart() {
    let s = Server::start().await;
    s.task("Fix the flaky test").await;
    s.task("Another").await;
    let comment = async |agent: &str, path: &str, body: Value| {
        let request = s.http.post(s.url(path)).header("X-Agent", agent).json(&body);
        split(request.send().await.unwrap()).await
    };

    let (status, first) =
        comment("link", "/tasks/T-1/comments", json!({"content": "@zelda a race in the fixture?"})).await;
    assert_eq!(status, 201, "{first}");
    let m = &first["message"];
    assert_eq!(
        (m["task"].as_str(), m["channel"].as_str(), m["from"].as_str(), m["mentions"].clone()),
        (Some("T-1"), Some("#T-1"), Some("link"), json!(["zelda"])),
        "{first}"
    );
    let (status, second) = comment("zelda", "/tasks/T-1/comments", json!({"content": "yes", "replyTo": m["id"]})).await;
    assert_eq!((status, second["message"]["replyTo"].clone()), (201, m["id"].clone()), "{second}");
    // `task` on a chat post is the same comment.
    let (status, third) =
        s.post("/chat/messages", json!({"from": "kai", "content": "fixed in #530", "task": "T-1"})).await;
    assert_eq!((status, third["message"]["channel"].as_str()), (201, Some("#T-1")), "{third}");
    comment("kai", "/tasks/T-2/comments", json!({"content": "not on T-1"})).await;

    // The thread, oldest first, a page at a time.
    let (status, page) = s.get("/tasks/T-1/comments?limit=2").await;
    assert_eq!(status, 200, "{page}");
    let contents = |page: &Value| -> Vec<String> {
        page["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(contents(&page), ["@zelda a race in the fixture?", "yes"]);
    let next = page["next"].as_str().expect("a next page");
    let (_, rest) = s.get(&format!("/tasks/T-1/comments?limit=2&cursor={next}")).await;
    assert_eq!((contents(&rest), rest.get("next")), (vec!["fixed in #530".to_owned()], None), "{rest}");
    let (_, other) = s.get("/tasks/T-2/comments").await;
    assert_eq!(contents(&other), ["not on T-1"]);
    // A cursor of one task's thread is not another's.
    let (status, wrong) = s.get(&format!("/tasks/T-2/comments?cursor={next}")).await;
    assert_eq!((status, wrong["error"]["field"].as_str()), (400, Some("cursor")), "{wrong}");

    // An event on the task's topics; the mention in zelda's inbox; no channel of its own.
    let (_, events) = s.get("/events?topics=task:T-1").await;
    let kinds: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["task.created", "task.commented", "task.commented", "task.commented"], "{events}");
    let (_, inbox) = s.get("/inbox/zelda").await;
    assert_eq!(contents(&inbox), ["@zelda a race in the fixture?"], "{inbox}");
    let (_, channels) = s.get("/chat/channels").await;
    assert_eq!(channels["channels"], json!([]), "comments are not chat channels: {channels}");
    let (_, task) = s.get("/tasks/T-1").await;
    assert_eq!(task["task"]["status"], "todo", "a comment does not change the task");

    // Refusals name the field.
    for (path, body, want, field) in [
        ("/tasks/T-99/comments", json!({"content": "x"}), 404, None),
        ("/tasks/T-1/comments", json!({"content": "  "}), 400, Some("content")),
        ("/tasks/T-1/comments", json!({"content": "x".repeat(8 * 1024 + 1)}), 400, Some("content")),
        ("/tasks/T-1/comments", json!({"content": "x", "channel": "general"}), 400, None),
        ("/tasks/T-1/comments", json!({"content": "x", "replyTo": "M-99"}), 404, Some("replyTo")),
        ("/tasks/banana/comments", json!({"content": "x"}), 400, Some("id")),
        ("/chat/messages", json!({"content": "x", "task": "T-1", "channel": "ops"}), 400, Some("channel")),
        ("/chat/messages", json!({"content": "x", "task": "T-1", "to": "zelda"}), 400, Some("to")),
        ("/chat/messages", json!({"content": "x", "task": "T-99"}), 404, Some("task")),
    ] {
        let (status, error) = comment("kai", path, body.clone()).await;
        assert_eq!(status, want, "{path} {body}: {error}");
        if let Some(field) = field {
            assert_eq!(error["error"]["field"], field, "{path} {body}: {error}");
        }
    }
    let (status, _) = s.get("/tasks/T-99/comments").await;
    assert_eq!(status, 404);
    let (status, error) = s.get("/tasks/T-1/comments?limit=501").await;
    assert_eq!((status, error["error"]["field"].as_str()), (400, Some("limit")), "{error}");
    let (_, after) = s.get("/tasks/T-1/comments").await;
    assert_eq!(contents(&after).len(), 3, "refusals stored nothing");

    let dir = s.stop().await;
    let s = Server::start_in(dir, |_| {}).await;
    let (_, again) = s.get("/tasks/T-1/comments").await;
    assert_eq!(again["messages"], after["messages"], "the thread survives a restart");
    let (status, fourth) = s.post("/tasks/T-1/comments", json!({"from": "kai", "content": "after the restart"})).await;
    assert_eq!(status, 201, "{fourth}");
    assert!(fourth["message"]["id"] != after["messages"][2]["id"], "message ids go on: {fourth}");
}
