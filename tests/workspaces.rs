//! Workspaces: one broker, several projects, nothing crossing between them. Two workspaces
//! are driven the same way — the same agent names, channel, task titles and reservation
//! patterns — over HTTP, the WebSocket, SSE, the long-poll, the CLI and the MCP server, and
//! each sees only its own. Then their lifecycle: added, refused by typo, archived (read,
//! not written), kept across a restart, purged.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Server, Ws, binary, split};
use serde_json::{Value, json};

/// Does the same work in the workspace whose routes start with `prefix` (`""` for
/// `default`): tasks, a claim, a mention, a reservation, a heartbeat. `tag` tells their
/// contents apart, so that anything crossing shows.
async fn work(s: &Server, prefix: &str, tag: &str) {
    for title in ["Fix auth redirect", "Write the docs"] {
        let (status, body) =
            s.post(&format!("{prefix}/tasks"), json!({"title": title, "agent": "link", "tags": [tag]})).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = s.post(&format!("{prefix}/tasks/T-1/claim"), json!({"agent": "link"})).await;
    assert_eq!(status, 200, "{prefix}: a claim of T-1 is refused: {body}");
    let (status, body) = s
        .post(
            &format!("{prefix}/chat/messages"),
            json!({"from": "kai", "content": format!("@link {tag} is green"), "channel": "ops"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s
        .post(&format!("{prefix}/files/reserve"), json!({"agent": "link", "repo": "app", "patterns": ["src/**"]}))
        .await;
    assert_eq!(status, 200, "{prefix}: src/** is held elsewhere: {body}");
    let (status, body) = s.post(&format!("{prefix}/presence/kai"), json!({"status": "busy", "note": tag})).await;
    assert_eq!(status, 200, "{body}");
}

/// What the workspace at `prefix` shows over HTTP, checked to be its own (`tag`) and
/// nothing of the other's.
async fn sees_only_its_own(s: &Server, prefix: &str, tag: &str) {
    let (_, tasks) = s.get(&format!("{prefix}/tasks")).await;
    let tasks = tasks["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 2, "{prefix}: {tasks:?}");
    assert!(tasks.iter().all(|t| t["tags"] == json!([tag])), "{prefix}: {tasks:?}");
    let ids: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["T-1", "T-2"], "each workspace numbers its own tasks");
    // kai's next task is this workspace's T-2, not the other's.
    let (_, next) = s.get(&format!("{prefix}/tasks/next?agent=kai")).await;
    assert_eq!((next["task"]["id"].as_str(), &next["task"]["tags"]), (Some("T-2"), &json!([tag])), "{next}");

    let (_, inbox) = s.get(&format!("{prefix}/inbox/link")).await;
    assert_eq!(inbox["unread"], 1, "{prefix}: {inbox}");
    assert_eq!(inbox["messages"][0]["content"], format!("@link {tag} is green"));
    let (_, chat) = s.get(&format!("{prefix}/chat/messages?channel=ops")).await;
    assert_eq!(chat["messages"].as_array().unwrap().len(), 1, "{prefix}: {chat}");
    let (_, channels) = s.get(&format!("{prefix}/chat/channels")).await;
    let ops = channels["channels"].as_array().unwrap().iter().find(|c| c["name"] == "ops").cloned();
    assert_eq!(ops.unwrap()["messages"], 1, "{prefix}: {channels}");

    let (_, presence) = s.get(&format!("{prefix}/presence")).await;
    let kai = presence["agents"].as_array().unwrap().iter().find(|a| a["name"] == "kai").cloned().unwrap();
    assert_eq!(kai["note"], tag, "{prefix}: {presence}");
    let (_, files) = s.get(&format!("{prefix}/files?repo=app")).await;
    assert_eq!(files["reservations"].as_array().unwrap().len(), 1, "{prefix}: {files}");

    // The long-poll: every event is this workspace's, numbered from 1 without a gap.
    let (_, events) = s.get(&format!("{prefix}/events?since=0")).await;
    let events = events["events"].as_array().unwrap().clone();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{prefix}: {events:?}");
    let other = if tag == "A" { "B" } else { "A" };
    assert!(!Value::Array(events).to_string().contains(&format!("\"{other}\"")), "{prefix} holds {other}'s events");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workspaces_driven_alike_see_nothing_of_each_other() {
    let s = Server::start().await;
    let (status, added) = s.post("/workspaces", json!({"name": "B"})).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added, json!({"name": "b", "archived": false, "head": 0}));

    // Observers of every event of each: `/ws` naming its workspace in the hello, and
    // `/w/b/ws`.
    let mut in_default = Ws::connect(s.addr()).await;
    let welcome = in_default.hello(json!({"topics": ["*"]})).await;
    assert_eq!(welcome["workspace"], "default");
    let mut in_b = Ws::connect(s.addr()).await;
    let welcome_b = in_b.hello(json!({"topics": ["*"], "workspace": "b"})).await;
    assert_eq!(welcome_b["workspace"], "b");
    assert_ne!(welcome["epoch"], welcome_b["epoch"], "each workspace has its own history");
    let mut in_b_by_url = Ws::try_connect_to(s.addr(), "/w/b/ws").await.unwrap();
    assert_eq!(in_b_by_url.hello(json!({"topics": ["*"]})).await["workspace"], "b");

    work(&s, "", "A").await;
    work(&s, "/w/b", "B").await;
    sees_only_its_own(&s, "", "A").await;
    sees_only_its_own(&s, "/w/b", "B").await;

    // Each observer got its own workspace's events, and nothing else, in order.
    let (_, events) = s.get("/w/b/events?since=0").await;
    let expected = events["events"].as_array().unwrap().len();
    for (ws, tag) in [(&mut in_default, "A"), (&mut in_b, "B"), (&mut in_b_by_url, "B")] {
        let mut seen = Vec::new();
        while seen.len() < expected {
            seen.push(ws.event().await);
        }
        let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=expected as u64).collect::<Vec<_>>(), "{tag}");
        let other = if tag == "A" { "\"B\"" } else { "\"A\"" };
        assert!(!Value::Array(seen).to_string().contains(other), "{tag}'s observer saw the other's events");
        assert!(ws.frame_within(Duration::from_millis(300)).await.is_err(), "{tag}'s observer got more");
    }

    // SSE, resumed from the middle: the rest of b's events, and only those.
    let sse = s.http.get(s.url("/w/b/events/stream")).header("last-event-id", "3").send().await.unwrap();
    assert_eq!(sse.status(), 200);
    let ids = sse_ids(sse, expected - 3).await;
    assert_eq!(ids, (4..=expected as u64).collect::<Vec<_>>());

    // Resuming b's session with b's epoch replays b's events after the seq, and with
    // default's epoch (another history) does not.
    let mut resumed = Ws::connect(s.addr()).await;
    let hello = json!({"topics": ["tasks"], "workspace": "b", "since": 1, "epoch": welcome_b["epoch"]});
    assert_eq!(resumed.hello(hello).await["recovered"], true);
    let replayed = resumed.event().await;
    assert_eq!((replayed["seq"].as_u64(), replayed["data"]["task"]["tags"].clone()), (Some(2), json!(["B"])));
    let mut crossed = Ws::connect(s.addr()).await;
    let hello = json!({"topics": ["tasks"], "workspace": "b", "since": 1, "epoch": welcome["epoch"]});
    assert_eq!(crossed.hello(hello).await["recovered"], false, "default's epoch resumed in b");
}

/// The `id`s of the next `n` events of an SSE response.
async fn sse_ids(response: reqwest::Response, n: usize) -> Vec<u64> {
    use futures_util::StreamExt;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ids: Vec<u64> = text.lines().filter_map(|l| l.strip_prefix("id: ")?.trim().parse().ok()).collect();
            if ids.len() >= n {
                return ids;
            }
            let chunk = body.next().await.expect("the stream ended").unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    read.await.expect("SSE events in time")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_works_in_one_workspace() {
    let s = Server::start().await;
    assert_eq!(s.post("/workspaces", json!({"name": "b"})).await.0, 201);
    // `/w/b/ws` is b's: a hello naming another is refused, naming b is fine.
    let mut ws = Ws::try_connect_to(s.addr(), "/w/b/ws").await.unwrap();
    let refused = ws.request(json!({"op": "hello", "workspace": "default"})).await;
    assert_eq!(refused["error"]["field"], "workspace", "{refused}");
    assert_eq!(ws.hello(json!({"workspace": "B", "agent": "link"})).await["workspace"], "b");
    // A workspace that does not exist: a 404's code, naming it.
    let mut ws = Ws::connect(s.addr()).await;
    let refused = ws.request(json!({"op": "hello", "workspace": "nope"})).await;
    assert_eq!(refused["error"]["code"], "not_found", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("\"nope\""), "{refused}");
    let refused = ws.request(json!({"op": "hello", "workspace": "no way"})).await;
    assert_eq!(refused["error"]["code"], "not_found", "{refused}");
    // link is present in b only.
    let (_, presence) = s.get("/w/b/presence").await;
    assert_eq!(presence["agents"][0]["name"], "link", "{presence}");
    let (_, presence) = s.get("/presence").await;
    assert_eq!(presence["agents"], json!([]), "{presence}");
}

#[tokio::test(flavor = "multi_thread")]
async fn workspaces_are_added_by_name_archived_kept_across_a_restart_and_purged() {
    let s = Server::start().await;
    // Bad names and typos are refused, never made.
    let (status, body) = s.post("/workspaces", json!({"name": "../etc"})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("name")), "{body}");
    let (status, body) = s.post("/workspaces", json!({"name": "default"})).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = s.post("/w/typo/tasks", json!({"title": "lost?"})).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("\"typo\""), "{body}");
    assert_eq!(s.get("/workspaces").await.1["workspaces"].as_array().unwrap().len(), 1);

    assert_eq!(s.post("/workspaces", json!({"name": "web"})).await.0, 201);
    let (status, body) = s.post("/workspaces", json!({"name": "WEB"})).await;
    assert_eq!(status, 409, "names are case-insensitive: {body}");
    assert_eq!(s.post("/w/web/tasks", json!({"title": "kept"})).await.0, 201);
    let mut session = Ws::try_connect_to(s.addr(), "/w/web/ws").await.unwrap();
    session.hello(json!({"agent": "link"})).await;

    // Archived: its session closed, its data read, every write refused.
    let removed = s.http.delete(s.url("/workspaces/web")).send().await.unwrap();
    let (status, body) = split(removed).await;
    assert_eq!((status, &body["archived"]), (200, &json!(true)), "{body}");
    assert_eq!(session.close_frame().await.map(|(code, _)| code), Some(4004));
    let (status, body) = s.post("/w/web/tasks", json!({"title": "after"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("archived"), "{body}");
    let (_, tasks) = s.get("/w/web/tasks").await;
    assert_eq!(tasks["tasks"][0]["title"], "kept");
    let removed = s.http.delete(s.url("/workspaces/default")).send().await.unwrap();
    assert_eq!(removed.status(), 409, "default stays");

    // A restart keeps both, and keeps it archived.
    let dir = s.stop().await;
    let s = Server::start_in(dir, |_| {}).await;
    let (_, list) = s.get("/workspaces").await;
    let web = &list["workspaces"][1];
    assert_eq!((&web["name"], &web["archived"]), (&json!("web"), &json!(true)), "{list}");
    assert_eq!(s.get("/w/web/tasks").await.1["tasks"][0]["title"], "kept");
    assert_eq!(s.post("/w/web/tasks", json!({"title": "after"})).await.0, 409);

    // Purged: gone from the list and the disk; the name can be used again, empty.
    let purged = s.http.delete(s.url("/workspaces/web?purge=true")).send().await.unwrap();
    assert_eq!(purged.status(), 200);
    assert_eq!(s.get("/w/web/tasks").await.0, 404);
    let dir = s.dir.as_ref().unwrap().path().join("workspaces");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{dir:?} still holds the purged workspace");
    assert_eq!(s.post("/workspaces", json!({"name": "web"})).await.0, 201);
    assert_eq!(s.get("/w/web/tasks").await.1["tasks"], json!([]));
}

/// `muster ARGS` against `url`, with `env` set.
fn muster(url: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args).env("MUSTER_URL", url).env_remove("MUSTER_AGENT").env_remove("MUSTER_WORKSPACE");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "muster {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_and_the_mcp_server_work_in_the_workspace_they_are_given() {
    let s = Server::start().await;
    let url = s.url("");
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let added = muster(&url, &[], &["workspace", "add", "web"]);
            let listed = muster(&url, &[], &["workspace", "list"]);
            muster(&url, &[], &["--workspace", "web", "--as", "link", "task", "add", "Fix auth redirect"]);
            muster(&url, &[("MUSTER_WORKSPACE", "web")], &["--as", "kai", "chat", "post", "@link in web"]);
            muster(&url, &[], &["--as", "link", "task", "add", "In default"]);
            let web = muster(&url, &[("MUSTER_WORKSPACE", "web")], &["--json", "task", "list"]);
            let default = muster(&url, &[], &["--json", "task", "list"]);
            let inbox = muster(&url, &[("MUSTER_WORKSPACE", "web"), ("MUSTER_AGENT", "link")], &["inbox"]);
            [added, listed, web, default, inbox].map(|o| text(&o.stdout))
        }
    })
    .await
    .unwrap();
    let [added, listed, web, default, inbox] = out;
    assert!(added.contains("added workspace web"), "{added}");
    assert!(listed.contains("default") && listed.contains("web"), "{listed}");
    assert!(web.contains("Fix auth redirect") && !web.contains("In default"), "{web}");
    assert!(default.contains("In default") && !default.contains("Fix auth redirect"), "{default}");
    assert!(inbox.contains("@link in web"), "{inbox}");
    assert_eq!(s.get("/inbox/link").await.1["unread"], 0, "the mention stayed in web");

    // The MCP server of an agent of web: its tools see web's board.
    let mut mcp = Command::new(binary())
        .args(["mcp", "--as", "link"])
        .env("MUSTER_URL", &url)
        .env("MUSTER_WORKSPACE", "web")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let listed = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader, Write};
        let mut stdin = mcp.stdin.take().unwrap();
        let mut stdout = BufReader::new(mcp.stdout.take().unwrap());
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "list_tasks", "arguments": {}}});
        let mut line = String::new();
        writeln!(stdin, "{init}").unwrap();
        stdout.read_line(&mut line).unwrap();
        writeln!(stdin, "{initialized}\n{call}").unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        drop(stdin);
        let _ = mcp.wait();
        line
    })
    .await
    .unwrap();
    assert!(listed.contains("Fix auth redirect") && !listed.contains("In default"), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_works_only_in_its_workspaces() {
    let dir = tempfile::tempdir().unwrap();
    let boss = muster::auth::add(dir.path(), "boss", true, &["*".to_owned()]).unwrap();
    let link_a = muster::auth::add(dir.path(), "link", false, &["a".to_owned()]).unwrap();
    let link_default = muster::auth::add(dir.path(), "link", false, &[]).unwrap();
    let s = Server::start_in(dir, |_| {}).await;
    let call = |method: &str, path: &str, token: &str, body: Option<Value>| {
        let mut request = s.http.request(method.parse().unwrap(), s.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        async move { split(request.send().await.unwrap()).await }
    };

    // Only a person's token adds a workspace.
    let (status, body) = call("POST", "/workspaces", &link_a, Some(json!({"name": "a"}))).await;
    assert_eq!((status, body["error"]["field"].as_str()), (403, Some("workspace")), "{body}");
    for name in ["a", "b"] {
        assert_eq!(call("POST", "/workspaces", &boss, Some(json!({"name": name}))).await.0, 201);
    }
    // Each token lists the workspaces it works in.
    let names = |list: Value| -> Vec<String> {
        list["workspaces"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(call("GET", "/workspaces", &boss, None).await.1), ["a", "b", "default"]);
    assert_eq!(names(call("GET", "/workspaces", &link_a, None).await.1), ["a"]);

    // link's token of a works in a, and is refused in b and default, naming the rule.
    let task = Some(json!({"title": "Fix auth redirect"}));
    assert_eq!(call("POST", "/w/a/tasks", &link_a, task.clone()).await.0, 201);
    for path in ["/w/b/tasks", "/tasks"] {
        let (status, body) = call("POST", path, &link_a, task.clone()).await;
        assert_eq!((status, body["error"]["field"].as_str()), (403, Some("workspace")), "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("works in a only"), "{body}");
    }
    for path in ["/w/b/tasks", "/w/b/events?since=0", "/w/b/presence", "/w/b/events/stream"] {
        assert_eq!(call("GET", path, &link_a, None).await.0, 403, "{path}");
    }
    // link's other token works in default only; boss's everywhere.
    assert_eq!(call("GET", "/tasks", &link_default, None).await.0, 200);
    assert_eq!(call("GET", "/w/a/tasks", &link_default, None).await.0, 403);
    assert_eq!(call("GET", "/w/b/tasks", &boss, None).await.0, 200);
    // Without a valid token, an unknown workspace is a 401, not a 404 that would tell it.
    assert_eq!(s.get("/w/nope/tasks").await.0, 401);
    assert_eq!(call("GET", "/w/nope/tasks", &link_a, None).await.0, 404);

    // Over the WebSocket: the hello in b is refused; in a it is link's.
    let mut ws = Ws::connect(s.addr()).await;
    let refused = ws.request(json!({"op": "hello", "workspace": "b", "agent": "link", "token": link_a})).await;
    assert_eq!(refused["error"]["field"], "workspace", "{refused}");
    let welcome = ws.hello(json!({"workspace": "a", "agent": "link", "token": link_a, "topics": ["tasks"]})).await;
    assert_eq!(welcome["workspace"], "a");
}
