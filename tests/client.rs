//! The Rust client (`muster-client`) against the real broker binary: it reconnects by
//! itself after the broker is killed and restarted, resumes from the last event it saw with
//! no gap and no duplicate, and says so plainly when resuming is impossible.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Process, refusing_addr};
use muster_client::protocol::{CreateTask, Event, EventKind};
use muster_client::{Client, Error, Events, Notice, Options};
use serde_json::json;

async fn next(events: &mut Events) -> Notice {
    tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("no notice in time")
        .expect("the event stream ended")
}

async fn event(events: &mut Events) -> Box<Event> {
    match next(events).await {
        Notice::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn created_title(e: &Event) -> &str {
    match &e.kind {
        EventKind::TaskCreated { task } => &task.title,
        other => panic!("expected task.created, got {other:?}"),
    }
}

async fn create_over_http(url: &str, title: &str) {
    let response = reqwest::Client::new().post(format!("{url}/tasks")).json(&json!({ "title": title })).send().await;
    assert_eq!(response.unwrap().status(), 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_resumes_without_gap_or_duplicate_after_the_broker_is_killed_and_restarted() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let broker = Process::start(&data, &[], &[]);
    let addr = broker.addr.to_string();
    let url = format!("http://{addr}");

    let (client, mut events) = Client::connect(Options::new(&url).topics(["tasks"])).await.unwrap();
    assert_eq!(next(&mut events).await, Notice::Resumed { head: 0 });
    let epoch = client.epoch().unwrap();
    create_over_http(&broker.url(""), "before the crash").await;
    let first = event(&mut events).await;
    assert_eq!((first.seq, created_title(&first)), (1, "before the crash"));

    broker.kill9();
    // While the broker is down a request fails at once, saying the outcome is unknown.
    let refused = client.create_task(CreateTask { title: "lost?".into(), ..Default::default() }).await;
    assert_eq!(refused.unwrap_err(), Error::Disconnected);

    let broker = Process::start_at(&data, &addr, &[], &[]);
    // Written before the client is back: it must get these from the log, exactly once.
    create_over_http(&broker.url(""), "while away 1").await;
    create_over_http(&broker.url(""), "while away 2").await;
    let Notice::Resumed { head } = next(&mut events).await else { panic!("expected a resume") };
    assert!(head >= 1, "{head}");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let e = event(&mut events).await;
        seen.push((e.seq, created_title(&e).to_owned()));
    }
    assert_eq!(seen, vec![(2, "while away 1".to_owned()), (3, "while away 2".to_owned())]);
    assert_eq!(client.epoch().as_deref(), Some(epoch.as_str()), "same data dir, same epoch");

    // And the session is live again, for calls and events.
    let task = client.create_task(CreateTask { title: "after".into(), ..Default::default() }).await.unwrap();
    assert_eq!(task.id.to_string(), "T-4");
    let e = event(&mut events).await;
    assert_eq!((e.seq, created_title(&e)), (4, "after"));
    assert_eq!(client.last_seq(), Some(4));
    broker.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_says_resync_when_the_broker_lost_its_history() {
    let root = tempfile::tempdir().unwrap();
    let broker = Process::start(&root.path().join("one"), &[], &[]);
    let addr = broker.addr.to_string();
    let url = format!("http://{addr}");
    let (client, mut events) = Client::connect(Options::new(&url).topics(["tasks"])).await.unwrap();
    next(&mut events).await;
    let old_epoch = client.epoch().unwrap();
    create_over_http(&broker.url(""), "in the old data").await;
    event(&mut events).await;
    broker.terminate();

    // Another data dir behind the same address: the old events cannot be replayed.
    let broker = Process::start_at(&root.path().join("two"), &addr, &[], &[]);
    let Notice::Resync { epoch, head } = next(&mut events).await else { panic!("expected a resync") };
    assert_ne!(epoch, old_epoch);
    assert_eq!(head, 0);
    create_over_http(&broker.url(""), "in the new data").await;
    let e = event(&mut events).await;
    assert_eq!((e.seq, created_title(&e)), (1, "in the new data"));
    broker.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_cannot_reach_the_broker_is_told_so_at_once() {
    let (_held, addr) = refusing_addr();
    let url = format!("http://{addr}");
    match Client::connect(Options::new(&url)).await {
        Err(Error::Unreachable { url: tried, .. }) => assert_eq!(tried, url),
        Err(other) => panic!("expected Unreachable, got {other:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_subscribe_does_not_poison_later_reconnections() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let broker = Process::start(&data, &[], &[]);
    let addr = broker.addr.to_string();
    let url = format!("http://{addr}");
    let (client, mut events) = Client::connect(Options::new(&url)).await.unwrap();
    next(&mut events).await;
    match client.subscribe(vec!["no-such-topic".into()]).await {
        Err(Error::Api(info)) => assert!(info.message.contains("no-such-topic"), "{info:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(client.subscribe(vec!["tasks".into()]).await.unwrap(), vec!["tasks".to_owned()]);

    broker.kill9();
    let broker = Process::start_at(&data, &addr, &[], &[]);
    // The next hello repeats only the accepted topic, so the broker takes it.
    assert!(matches!(next(&mut events).await, Notice::Resumed { .. }));
    create_over_http(&broker.url(""), "after the restart").await;
    let e = event(&mut events).await;
    assert_eq!(created_title(&e), "after the restart");
    broker.kill9();
}
