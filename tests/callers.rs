//! Fail closed: with tokens on, every HTTP route and every WebSocket operation refuses a
//! caller without a valid token (401), refuses a caller acting as another agent (403), and
//! lets a caller act as itself. The routes are read from the broker's own OpenAPI document
//! (generated from the router) and the operations are matched exhaustively: a new route
//! without a row here fails this test, a new operation without one does not compile.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Server, Ws, split};
use muster_protocol::ws::{Op, Request};
use serde_json::{Value, json};

/// What a route needs.
enum Access {
    /// Anyone may call it, with tokens on too.
    Open,
    /// A valid token; the request names no agent, or reading about another is allowed.
    Read { path: &'static str },
    /// A valid token, acting as its own agent: `own` acts as the token's agent (or names
    /// nobody), `other` names another agent and must be refused.
    Write { own: (&'static str, Value), other: (&'static str, Value) },
    /// The broker's, not a workspace's: a person's token only (an agent's is refused).
    Person { path: &'static str, body: Value },
}

/// Every route, with what it needs. A path with `{id}` or `{agent}` is written as the
/// route table has it; the requests fill them in.
fn table() -> Vec<(&'static str, &'static str, Access)> {
    use Access::{Open, Read, Write};
    vec![
        ("GET", "/", Open),
        ("GET", "/dashboard", Open),
        ("GET", "/dashboard/app.js", Open),
        ("GET", "/dashboard/style.css", Open),
        ("GET", "/client.js", Open),
        ("GET", "/health", Open),
        // The WebSocket's token is in its hello (see the operations below).
        ("GET", "/ws", Open),
        ("GET", "/metrics", Read { path: "/metrics" }),
        ("GET", "/capabilities", Read { path: "/capabilities" }),
        ("GET", "/openapi.json", Read { path: "/openapi.json" }),
        ("GET", "/tasks", Read { path: "/tasks" }),
        ("GET", "/tasks/{id}", Read { path: "/tasks/T-1" }),
        ("GET", "/tasks/{id}/comments", Read { path: "/tasks/T-1/comments" }),
        ("GET", "/presence", Read { path: "/presence" }),
        ("GET", "/presence/{agent}", Read { path: "/presence/zelda" }),
        ("GET", "/chat/messages", Read { path: "/chat/messages" }),
        ("GET", "/chat/channels", Read { path: "/chat/channels" }),
        // An inbox is its owner's (or a person's): read like one's own write.
        ("GET", "/inbox/{agent}", Write { own: ("/inbox/link", Value::Null), other: ("/inbox/zelda", Value::Null) }),
        ("GET", "/events", Read { path: "/events?since=0" }),
        ("GET", "/events/stream", Read { path: "/events/stream" }),
        ("GET", "/files", Read { path: "/files?repo=app" }),
        ("GET", "/files/who", Read { path: "/files/who?repo=app&path=src/a.rs" }),
        (
            "POST",
            "/files/reserve",
            Write {
                own: ("/files/reserve", json!({"repo": "app", "patterns": ["src/**"]})),
                other: ("/files/reserve", json!({"repo": "app", "patterns": ["docs/**"], "agent": "zelda"})),
            },
        ),
        (
            "POST",
            "/files/release",
            Write {
                own: ("/files/release", json!({"repo": "app"})),
                other: ("/files/release", json!({"repo": "app", "agent": "zelda"})),
            },
        ),
        (
            "POST",
            "/tasks",
            Write {
                own: ("/tasks", json!({"title": "mine"})),
                other: ("/tasks", json!({"title": "x", "agent": "zelda"})),
            },
        ),
        (
            "GET",
            "/tasks/next",
            Write {
                own: ("/tasks/next?claim=true", Value::Null),
                other: ("/tasks/next?agent=zelda&claim=true", Value::Null),
            },
        ),
        (
            "POST",
            "/tasks/next",
            Write { own: ("/tasks/next", json!({})), other: ("/tasks/next", json!({"agent": "zelda"})) },
        ),
        (
            "PATCH",
            "/tasks/{id}",
            Write {
                own: ("/tasks/T-2", json!({"priority": "P1"})),
                other: ("/tasks/T-2", json!({"priority": "P0", "agent": "zelda"})),
            },
        ),
        (
            "POST",
            "/tasks/{id}/claim",
            Write { own: ("/tasks/T-3/claim", json!({})), other: ("/tasks/T-3/claim", json!({"agent": "zelda"})) },
        ),
        (
            "POST",
            "/tasks/{id}/release",
            Write { own: ("/tasks/T-3/release", json!({})), other: ("/tasks/T-3/release", json!({"agent": "zelda"})) },
        ),
        (
            "POST",
            "/tasks/{id}/complete",
            Write {
                own: ("/tasks/T-3/complete", json!({})),
                other: ("/tasks/T-3/complete", json!({"agent": "zelda"})),
            },
        ),
        (
            "POST",
            "/tasks/{id}/comments",
            Write {
                own: ("/tasks/T-1/comments", json!({"content": "looks good"})),
                other: ("/tasks/T-1/comments", json!({"from": "zelda", "content": "I am zelda"})),
            },
        ),
        (
            "POST",
            "/presence/{agent}",
            Write { own: ("/presence/link", json!({"status": "busy"})), other: ("/presence/zelda", json!({})) },
        ),
        (
            "POST",
            "/chat/messages",
            Write {
                own: ("/chat/messages", json!({"content": "hi"})),
                other: ("/chat/messages", json!({"from": "zelda", "content": "I am zelda"})),
            },
        ),
        (
            "POST",
            "/inbox/{agent}/ack",
            Write { own: ("/inbox/link/ack", json!({})), other: ("/inbox/zelda/ack", json!({})) },
        ),
    ]
}

/// The table, and every row of a workspace's route again under `/w/{workspace}` (called
/// in `default`), as the broker serves them; then the broker's own routes.
fn every_route() -> Vec<(String, String, Access)> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut rows = Vec::new();
    for (method, route, access) in table() {
        let prefixed = match &access {
            Access::Open => Access::Open,
            Access::Read { path } => Access::Read { path: leak(format!("/w/default{path}")) },
            Access::Write { own, other } => Access::Write {
                own: (leak(format!("/w/default{}", own.0)), own.1.clone()),
                other: (leak(format!("/w/default{}", other.0)), other.1.clone()),
            },
            Access::Person { .. } => unreachable!("the table holds a workspace's routes"),
        };
        rows.push((method.to_owned(), format!("/w/{{workspace}}{route}"), prefixed));
        rows.push((method.to_owned(), route.to_owned(), access));
    }
    rows.push(("GET".into(), "/workspaces".into(), Access::Read { path: "/workspaces" }));
    let add = Access::Person { path: "/workspaces", body: json!({"name": "web"}) };
    rows.push(("POST".into(), "/workspaces".into(), add));
    let remove = Access::Person { path: "/workspaces/web", body: Value::Null };
    rows.push(("DELETE".into(), "/workspaces/{workspace}".into(), remove));
    rows
}

async fn call(s: &Server, method: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = s.http.request(method.parse().unwrap(), s.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if !body.is_null() {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    if response.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream")) {
        // A stream that started: its status says enough.
        return (response.status().as_u16(), Value::Null);
    }
    split(response).await
}

/// A broker whose data dir issued tokens to link (an agent) and zelda.
async fn with_tokens() -> (Server, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let link = muster::auth::add(dir.path(), "link", false, &[]).unwrap();
    let zelda = muster::auth::add(dir.path(), "zelda", false, &[]).unwrap();
    let s = Server::start_in(dir, |_| {}).await;
    for title in ["one", "two", "three"] {
        assert_eq!(call(&s, "POST", "/tasks", Some(&zelda), &json!({"title": title})).await.0, 201);
    }
    (s, link, zelda)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_refuses_a_missing_token_and_an_impersonation_and_accepts_its_own_agent() {
    let (s, link, _zelda) = with_tokens().await;

    // The table covers every route the broker serves, and nothing else.
    let (_, api) = call(&s, "GET", "/openapi.json", Some(&link), &Value::Null).await;
    let mut served = BTreeSet::new();
    for (path, item) in api["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                served.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let table = every_route();
    let rows: BTreeSet<(String, String)> = table.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
    let missing: Vec<_> = served.difference(&rows).collect();
    assert!(missing.is_empty(), "routes without a row in the caller table: {missing:?}");
    let stale: Vec<_> = rows.difference(&served).collect();
    assert!(stale.is_empty(), "rows for routes that do not exist: {stale:?}");

    for (method, route, access) in &table {
        let (own_path, own_body, other) = match access {
            Access::Open => {
                let path = route.replace("{id}", "T-1").replace("{workspace}", "default");
                let status = if route.ends_with("/ws") {
                    // A plain GET is no upgrade; what matters is that it is not a 401.
                    call(&s, method, &path, None, &Value::Null).await.0
                } else {
                    let status = call(&s, method, &path, None, &Value::Null).await.0;
                    assert!((200..400).contains(&status), "{method} {route} is open but answered {status}");
                    status
                };
                assert_ne!(status, 401, "{method} {route} is open");
                continue;
            }
            Access::Read { path } => (*path, Value::Null, None),
            Access::Write { own, other } => (own.0, own.1.clone(), Some(other)),
            Access::Person { path, body } => {
                for token in [None, Some("mst_not_issued")] {
                    let (status, answer) = call(&s, method, path, token, body).await;
                    assert_eq!(status, 401, "{method} {route} without a valid token ({token:?}): {answer}");
                }
                let (status, answer) = call(&s, method, path, Some(&link), body).await;
                assert_eq!(status, 403, "{method} {route} with an agent's token: {answer}");
                continue;
            }
        };
        for token in [None, Some("mst_not_issued")] {
            let (status, body) = call(&s, method, own_path, token, &own_body).await;
            assert_eq!(status, 401, "{method} {route} without a valid token ({token:?}): {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {route}");
        }
        if let Some((path, body)) = other {
            let (status, answer) = call(&s, method, path, Some(&link), body).await;
            assert_eq!(status, 403, "{method} {route}: link's token acting as zelda: {answer}");
            assert!(answer["error"]["message"].as_str().unwrap().contains("link's"), "{method} {route}: {answer}");
        }
        let (status, answer) = call(&s, method, own_path, Some(&link), &own_body).await;
        assert!((200..300).contains(&status), "{method} {route}: link acting as itself got {status}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_tokens_the_x_agent_header_says_who_calls_and_a_body_naming_another_is_refused() {
    let s = Server::start().await;
    for title in ["one", "two", "three"] {
        assert_eq!(s.post("/tasks", json!({"title": title})).await.0, 201);
    }
    let declared = async |method: &str, path: &str, body: &Value| {
        let mut request = s.http.request(method.parse().unwrap(), s.url(path)).header("X-Agent", "Link");
        if !body.is_null() {
            request = request.body(body.to_string());
        }
        split(request.send().await.unwrap()).await
    };
    for (method, route, access) in table() {
        // An inbox is anyone's to read and acknowledge without tokens: no agent acts.
        let Access::Write { own, other } = access else { continue };
        if route.starts_with("/inbox/") {
            continue;
        }
        let (status, answer) = declared(method, other.0, &other.1).await;
        assert_eq!(status, 403, "{method} {route}: declared link, acting as zelda: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("X-Agent header says you are \"link\""), "{method} {route}: {answer}");
        let (status, answer) = declared(method, own.0, &own.1).await;
        assert!((200..300).contains(&status), "{method} {route}: declared link, acting as itself: {status} {answer}");
    }
    // What link did is recorded as link's.
    let (_, task) = s.get("/tasks/T-3").await;
    assert_eq!(task["task"]["status"], "done", "{task}");
    let (_, chat) = s.get("/chat/messages").await;
    assert_eq!(chat["messages"][0]["from"], "link", "{chat}");
}

/// What a WebSocket operation needs; `other` is the operation acting as another agent.
enum Needs {
    /// Handled by the connection: `hello` proves the caller, `subscribe` needs a session.
    Connection,
    /// A read: any caller with a valid token.
    Read,
    /// A write, acting as one's own agent.
    Write { own: Box<Op>, other: Box<Op> },
    /// The broker's, not a workspace's: a person's token only.
    Person,
}

/// Exhaustive: a new operation without a row does not compile.
fn needs(op: Op) -> Needs {
    let zelda = || Some("zelda".to_owned());
    match op {
        Op::Hello(_) | Op::Subscribe(_) | Op::Unsubscribe(_) => Needs::Connection,
        Op::TaskGet(_)
        | Op::TaskList(_)
        | Op::TaskComments(_)
        | Op::ChatRead(_)
        | Op::ChatChannels(_)
        | Op::PresenceList(_)
        | Op::FilesList(_)
        | Op::FilesWho(_)
        | Op::WorkspaceList(_) => Needs::Read,
        Op::WorkspaceAdd(_) | Op::WorkspaceRemove(_) => Needs::Person,
        Op::TaskCreate(mut a) => {
            a.agent = None;
            let other = Op::TaskCreate(muster_protocol::CreateTask { agent: zelda(), ..a.clone() });
            Needs::Write { own: Box::new(Op::TaskCreate(a)), other: Box::new(other) }
        }
        Op::TaskUpdate(mut a) => {
            a.update.agent = None;
            a.update.token = None;
            let mut b = a.clone();
            b.update.agent = zelda();
            Needs::Write { own: Box::new(Op::TaskUpdate(a)), other: Box::new(Op::TaskUpdate(b)) }
        }
        Op::TaskClaim(a) => action(a, Op::TaskClaim),
        Op::TaskRelease(a) => action(a, Op::TaskRelease),
        Op::TaskComplete(a) => action(a, Op::TaskComplete),
        Op::TaskNext(mut a) => {
            a.agent = None;
            a.claim = true;
            let other = Op::TaskNext(muster_protocol::NextArgs { agent: zelda(), claim: true });
            Needs::Write { own: Box::new(Op::TaskNext(a)), other: Box::new(other) }
        }
        Op::ChatPost(mut a) => {
            a.from = String::new();
            let other = Op::ChatPost(muster_protocol::PostMessage { from: "zelda".into(), ..a.clone() });
            Needs::Write { own: Box::new(Op::ChatPost(a)), other: Box::new(other) }
        }
        Op::TaskComment(mut a) => {
            a.comment.from = String::new();
            let mut b = a.clone();
            b.comment.from = "zelda".into();
            Needs::Write { own: Box::new(Op::TaskComment(a)), other: Box::new(Op::TaskComment(b)) }
        }
        // An inbox is its owner's (or a person's): read like one's own write.
        Op::InboxRead(mut a) => {
            a.agent = None;
            let mut b = a.clone();
            b.agent = zelda();
            Needs::Write { own: Box::new(Op::InboxRead(a)), other: Box::new(Op::InboxRead(b)) }
        }
        Op::InboxAck(mut a) => {
            a.agent = None;
            a.ack.seq = None;
            let mut b = a.clone();
            b.agent = zelda();
            Needs::Write { own: Box::new(Op::InboxAck(a)), other: Box::new(Op::InboxAck(b)) }
        }
        Op::PresenceSet(mut a) => {
            a.agent = None;
            let mut b = a.clone();
            b.agent = zelda();
            Needs::Write { own: Box::new(Op::PresenceSet(a)), other: Box::new(Op::PresenceSet(b)) }
        }
        Op::FilesReserve(mut a) => {
            a.agent = None;
            a.task = None;
            let mut b = a.clone();
            b.agent = zelda();
            Needs::Write { own: Box::new(Op::FilesReserve(a)), other: Box::new(Op::FilesReserve(b)) }
        }
        Op::FilesRelease(mut a) => {
            a.agent = None;
            let mut b = a.clone();
            b.agent = zelda();
            Needs::Write { own: Box::new(Op::FilesRelease(a)), other: Box::new(Op::FilesRelease(b)) }
        }
    }
}

fn action(mut a: muster_protocol::TaskActionArgs, make: fn(muster_protocol::TaskActionArgs) -> Op) -> Needs {
    a.action.agent = None;
    a.action.token = None;
    a.action.force = false;
    a.task = "T-1".parse().unwrap();
    let mut b = a.clone();
    b.action.agent = Some("zelda".into());
    Needs::Write { own: Box::new(make(a)), other: Box::new(make(b)) }
}

/// The golden example of every operation (`protocol/examples/client`), as an `Op`.
fn examples() -> Vec<(String, Op)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/examples/client");
    Op::NAMES
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(format!("{name}.json")))
                .unwrap_or_else(|e| panic!("operation {name} has no golden example: {e}"));
            ((*name).to_owned(), Request::parse(&text).unwrap().op)
        })
        .collect()
}

/// Done, or refused for what the request asks (a task that does not exist), never for who
/// asks.
fn allowed(name: &str, reply: &Value) {
    let code = reply["error"]["code"].as_str();
    assert!(reply["ok"] == true || !matches!(code, Some("unauthorized" | "forbidden")), "{name} as link: {reply}");
}

fn frame(op: &Op) -> Value {
    let mut frame =
        serde_json::to_value(Request { id: 0, idempotency_key: None, after: None, op: op.clone() }).unwrap();
    frame.as_object_mut().unwrap().remove("id");
    frame
}

#[tokio::test(flavor = "multi_thread")]
async fn every_websocket_operation_needs_a_token_and_acts_only_as_its_agent() {
    let (s, link, _zelda) = with_tokens().await;

    // Without a session nothing but hello is taken; hello without a token is refused.
    let mut anonymous = Ws::connect(s.addr()).await;
    for (name, op) in examples() {
        let reply = anonymous.request(frame(&op)).await;
        let code = reply["error"]["code"].as_str().unwrap_or_default().to_owned();
        if name == "hello" {
            assert_eq!(code, "unauthorized", "hello without a token: {reply}");
        } else {
            assert_eq!(
                (code.as_str(), reply["error"]["message"].as_str()),
                ("invalid", Some("op: send hello first")),
                "{name}"
            );
        }
    }
    let reply = anonymous.request(json!({"op": "hello", "agent": "link", "token": "mst_not_issued"})).await;
    assert_eq!(reply["error"]["code"], "unauthorized", "{reply}");
    let reply = anonymous.request(json!({"op": "hello", "agent": "zelda", "token": link})).await;
    assert_eq!(reply["error"]["code"], "forbidden", "hello as another agent: {reply}");

    let mut ws = Ws::connect(s.addr()).await;
    ws.hello(json!({"agent": "link", "token": link})).await;
    for (name, op) in examples() {
        match needs(op.clone()) {
            Needs::Connection if name == "hello" => {
                let reply = ws.request(frame(&op)).await;
                assert_eq!(reply["error"]["field"], "op", "a second hello: {reply}");
            }
            Needs::Connection | Needs::Read => allowed(&name, &ws.request(frame(&op)).await),
            Needs::Write { own, other } => {
                let reply = ws.request(frame(&other)).await;
                assert_eq!(reply["error"]["code"], "forbidden", "{name} acting as zelda: {reply}");
                allowed(&name, &ws.request(frame(&own)).await);
            }
            Needs::Person => {
                let reply = ws.request(frame(&op)).await;
                assert_eq!(reply["error"]["code"], "forbidden", "{name} with an agent's token: {reply}");
            }
        }
    }
}
