//! Pages: `limit` and an opaque `cursor` on every list that grows, walked while the board
//! changes; the board's default page (open work and the last finished tasks) and its ETag.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Server;
use serde_json::{Value, json};

/// Walks a list from `path` (which has a `?`), following `next` (without `since`, which a
/// cursor replaces); returns the ids (by `id_of`) in the order seen.
async fn walk(s: &Server, path: &str, key: &str, id_of: impl Fn(&Value) -> String) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let rest: String = path.split(['?', '&']).filter(|p| !p.starts_with("since=")).collect::<Vec<_>>().join("&");
    let rest = rest.replacen('&', "?", 1);
    for _ in 0..10_000 {
        let url = match &cursor {
            Some(c) => format!("{rest}&cursor={c}"),
            None => path.to_owned(),
        };
        let (status, page) = s.get(&url).await;
        assert_eq!(status, 200, "{url}: {page}");
        seen.extend(page[key].as_array().unwrap().iter().map(&id_of));
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(page["next"].is_null(), "{page}");
                return seen;
            }
        }
    }
    panic!("the walk of {path} never ended");
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_cursor_walk_over_a_changing_board_returns_each_task_once() {
    let s = Server::start().await;
    for i in 0..120 {
        s.post("/tasks", json!({"title": format!("task {i}"), "priority": format!("P{}", i % 4)})).await;
    }
    // Writers change the board while the walks go on: new tasks, claims (todo → doing),
    // priority changes.
    let writer = {
        let url = s.url("");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..60 {
                let post = |path: &str, body: Value| http.post(format!("{url}{path}")).json(&body).send();
                post("/tasks", json!({"title": format!("new {i}")})).await.unwrap();
                post(&format!("/tasks/T-{}/claim", 2 * i + 1), json!({"agent": "walker-rival"})).await.unwrap();
                let patch = http.patch(format!("{url}/tasks/T-{}", 2 * i + 2)).json(&json!({"priority": "P0"}));
                patch.send().await.unwrap();
            }
        })
    };
    let all = walk(&s, "/tasks?all=true&limit=7", "tasks", id).await;
    let desc = walk(&s, "/tasks?all=true&order=desc&limit=9", "tasks", id).await;
    let todo = walk(&s, "/tasks?status=todo&limit=5", "tasks", id).await;
    writer.await.unwrap();

    let number = |id: &String| id[2..].parse::<u64>().unwrap();
    for (name, walked) in [("all", &all), ("desc", &desc), ("todo", &todo)] {
        let unique: BTreeSet<&String> = walked.iter().collect();
        assert_eq!(unique.len(), walked.len(), "{name}: a task came twice: {walked:?}");
        let ids: Vec<u64> = walked.iter().map(number).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        if name == "desc" {
            sorted.reverse();
        }
        assert_eq!(ids, sorted, "{name}: not in id order");
    }
    // Every task that existed for the whole walk is there.
    for n in 1..=120 {
        let id = format!("T-{n}");
        assert!(all.contains(&id) && desc.contains(&id), "{id} missing from the walks");
    }
    // Even tasks were never claimed: todo throughout, so the todo walk has each of them.
    for n in (2..=120).step_by(2) {
        assert!(todo.contains(&format!("T-{n}")), "T-{n} (todo all along) missing from {todo:?}");
    }
}

#[tokio::test]
async fn a_bad_or_foreign_cursor_and_a_limit_out_of_range_are_refused_naming_the_field() {
    let s = Server::start().await;
    for i in 0..6 {
        s.post("/tasks", json!({"title": format!("t{i}")})).await;
        s.post("/chat/messages", json!({"from": "link", "content": format!("m{i}")})).await;
    }
    let (_, todo) = s.get("/tasks?status=todo&limit=2").await;
    let tasks_cursor = todo["next"].as_str().unwrap().to_owned();
    let (_, chat) = s.get("/chat/messages?limit=2").await;
    let chat_cursor = chat["next"].as_str().unwrap().to_owned();
    for (path, field) in [
        ("/tasks?cursor=zzzz".to_owned(), "cursor"),
        ("/tasks?cursor=".to_owned() + &tasks_cursor[..tasks_cursor.len() - 2], "cursor"),
        (format!("/tasks?status=done&cursor={tasks_cursor}"), "cursor"),
        (format!("/chat/messages?cursor={tasks_cursor}"), "cursor"),
        (format!("/tasks?status=todo&cursor={chat_cursor}"), "cursor"),
        (format!("/chat/messages?channel=ops&cursor={chat_cursor}"), "cursor"),
        (format!("/chat/messages?since=1&cursor={chat_cursor}"), "cursor"),
        (format!("/inbox/link?cursor={chat_cursor}"), "cursor"),
        (format!("/presence?cursor={tasks_cursor}"), "cursor"),
        ("/tasks?limit=0".to_owned(), "limit"),
        ("/tasks?limit=1001".to_owned(), "limit"),
        ("/chat/messages?limit=501".to_owned(), "limit"),
        ("/chat/channels?limit=0".to_owned(), "limit"),
        ("/presence?limit=100000".to_owned(), "limit"),
        ("/events?limit=0".to_owned(), "limit"),
        ("/tasks?order=sideways".to_owned(), "order"),
    ] {
        let (status, body) = s.get(&path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(field), "{path}: {body}");
    }
    // /capabilities says the sizes, and the OpenAPI document names the parameters.
    let (_, caps) = s.get("/capabilities").await;
    let pages = &caps["limits"]["pages"];
    assert_eq!((pages["tasks"]["default"].as_u64(), pages["tasks"]["max"].as_u64()), (Some(500), Some(1000)));
    assert_eq!(pages["messages"]["max"], 500);
    let (_, api) = s.get("/openapi.json").await;
    for path in ["/tasks", "/chat/messages", "/inbox/{agent}", "/presence", "/chat/channels"] {
        let names: Vec<&str> = api["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"limit") && names.contains(&"cursor"), "{path}: {names:?}");
    }
    // The same cursors where they belong work.
    let (status, page) = s.get(&format!("/tasks?status=todo&limit=2&cursor={tasks_cursor}")).await;
    assert_eq!((status, page["tasks"][0]["id"].as_str()), (200, Some("T-3")));
}

#[tokio::test]
async fn the_default_board_is_open_work_and_the_last_hundred_finished_and_chat_does_not_change_its_etag() {
    let s = Server::start().await;
    for i in 0..130 {
        s.post("/tasks", json!({"title": format!("t{i}")})).await;
    }
    // 110 finished, oldest first: T-1 … T-110; T-111 … T-130 stay open.
    for n in 1..=110 {
        let done = if n % 10 == 0 { "cancelled" } else { "done" };
        s.patch(&format!("/tasks/T-{n}"), json!({"status": done, "agent": "lead"})).await;
    }
    let (status, board) = s.get("/tasks").await;
    assert_eq!(status, 200);
    assert!(board.get("next").is_none(), "no next on the last page");
    let ids: Vec<u64> = board["tasks"].as_array().unwrap().iter().map(|t| id(t)[2..].parse().unwrap()).collect();
    // The 100 finished last (T-11 … T-110) and the 20 open, in id order.
    assert_eq!(ids, (11..=130).collect::<Vec<_>>());
    // The rest is there by filter.
    let done = walk(&s, "/tasks?status=done,cancelled&limit=40", "tasks", id).await;
    assert_eq!(done.len(), 110);

    // The ETag follows the tasks, not the log: chat leaves it, a task event moves it.
    let etag = reqwest::get(s.url("/tasks")).await.unwrap().headers()["etag"].to_str().unwrap().to_owned();
    s.post("/chat/messages", json!({"from": "link", "content": "not a task change"})).await;
    let revalidate = || reqwest::Client::new().get(s.url("/tasks")).header("if-none-match", &etag).send();
    assert_eq!(revalidate().await.unwrap().status(), 304);
    s.post("/tasks/T-111/claim", json!({"agent": "link"})).await;
    let after = revalidate().await.unwrap();
    assert_eq!(after.status(), 200);
    assert_ne!(after.headers()["etag"].to_str().unwrap(), etag);

    // A task reopened from long ago comes back onto the board.
    s.patch("/tasks/T-1", json!({"status": "todo", "agent": "lead"})).await;
    let (_, board) = s.get("/tasks").await;
    assert_eq!(board["tasks"][0]["id"], "T-1");

    // The board pages like any list: 21 open and the 100 finished last, each once.
    let paged = walk(&s, "/tasks?limit=13", "tasks", id).await;
    assert_eq!((paged.len(), paged.iter().collect::<BTreeSet<_>>().len()), (121, 121));
}

#[tokio::test]
async fn chat_inbox_presence_channels_and_events_page_too() {
    let s = Server::start().await;
    for i in 1..=120 {
        let content = if i % 3 == 0 { format!("@zelda update {i}") } else { format!("update {i}") };
        s.post("/chat/messages", json!({"from": format!("agent-{:02}", i % 12), "content": content})).await;
        if i % 40 == 0 {
            s.post("/chat/messages", json!({"from": "link", "channel": format!("room-{i}"), "content": "hi"})).await;
        }
    }
    let content = |m: &Value| m["content"].as_str().unwrap().to_owned();
    // Backward from the newest: 50, 50, 20; together the whole channel, each once.
    let mut pages = Vec::new();
    let mut path = "/chat/messages?limit=50".to_owned();
    loop {
        let (_, page) = s.get(&path).await;
        pages.push(page["messages"].as_array().unwrap().len());
        let seqs: Vec<u64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first within a page");
        match page["next"].as_str() {
            Some(next) => path = format!("/chat/messages?limit=50&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(pages, [50, 50, 20]);
    // Forward from the start.
    let forward = walk(&s, "/chat/messages?since=0&limit=33", "messages", content).await;
    assert_eq!(
        forward,
        (1..=120)
            .map(|i| content(
                &json!({"content": if i % 3 == 0 { format!("@zelda update {i}") } else { format!("update {i}") }})
            ))
            .collect::<Vec<_>>()
    );

    // The inbox: 40 mentions, unread forward by pages; `all` backward.
    let unread = walk(&s, "/inbox/zelda?limit=15", "messages", content).await;
    assert_eq!(unread.len(), 40);
    assert_eq!(unread.iter().collect::<BTreeSet<_>>().len(), 40);
    let all = walk(&s, "/inbox/zelda?all=true&limit=15", "messages", content).await;
    assert_eq!(all.len(), 40);

    // Presence: 13 agents by name, pages of 5; channels: 4.
    let name = |a: &Value| a["name"].as_str().unwrap().to_owned();
    let agents = walk(&s, "/presence?limit=5", "agents", name).await;
    let mut sorted = agents.clone();
    sorted.sort();
    assert_eq!((agents.len(), &agents), (13, &sorted));
    let channels = walk(&s, "/chat/channels?limit=1", "channels", name).await;
    assert_eq!(channels, ["general", "room-120", "room-40", "room-80"]);

    // Events: `next` is the `since` of the next poll.
    let (_, first) = s.get("/events?since=0&limit=10").await;
    let last = first["events"][9]["seq"].as_u64().unwrap();
    assert_eq!(first["next"], last);
    let (_, rest) = s.get(&format!("/events?since={last}&limit=1000")).await;
    assert_eq!(rest["events"][0]["seq"], last + 1);
    let head = rest["head"].as_u64().unwrap();
    assert_eq!(rest["next"], head);
    let (_, none) = s.get(&format!("/events?since={head}")).await;
    assert_eq!((none["events"].as_array().unwrap().len(), none["next"].as_u64()), (0, Some(head)));
}

#[tokio::test]
async fn websocket_ops_page_the_same_way() {
    let s = Server::start().await;
    for i in 0..9 {
        s.post("/tasks", json!({"title": format!("t{i}")})).await;
    }
    let (client, _events) = muster_client::Client::connect(muster_client::Options::new(s.url(""))).await.unwrap();
    let mut filter = muster_protocol::ListArgs { limit: Some(4), ..Default::default() };
    let mut pages: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for n in 0.. {
        let page = client.task_page(filter.clone()).await.unwrap();
        pages.insert(n, page.tasks.iter().map(|t| t.id.to_string()).collect());
        match page.next {
            Some(next) => filter.cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages.values().map(Vec::len).collect::<Vec<_>>(), [4, 4, 1]);
    // The client's `tasks` follows every page.
    let every = client.tasks(muster_protocol::ListArgs { limit: Some(2), ..Default::default() }).await.unwrap();
    assert_eq!(every.len(), 9);
    let refused = client
        .task_page(muster_protocol::ListArgs { cursor: Some("nope".into()), ..Default::default() })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("cursor"), "{refused}");
}
