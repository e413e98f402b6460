//! A full disk, for real: the data dir on a small tmpfs (mounting needs root; without it
//! the test says it is skipped, unless `MUSTER_REQUIRE_MOUNT=1`, which `.ci/run` sets where
//! it can mount). Writes fail with a clear error, reads and subscriptions keep working,
//! the broker does not crash, writes succeed again once space is freed, and nothing
//! acknowledged is lost.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Process, Ws, split};
use serde_json::{Value, json};

/// A tmpfs of `size`, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("fs");
        std::fs::create_dir(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|o| o.status.success());
        mounted.then_some(Tmpfs { dir, _parent: parent })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fills the file system until `leave` bytes are free.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let free = fs2::available_space(dir).unwrap();
    let filler = dir.join("filler");
    let file = std::fs::File::create(&filler).unwrap();
    file.set_len(0).unwrap();
    // A tmpfs allocates on write, not on set_len: write real bytes.
    let chunk = vec![7u8; 1 << 20];
    let mut left = free.saturating_sub(leave);
    let mut out = std::io::BufWriter::new(file);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if std::io::Write::write_all(&mut out, &chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = std::io::Write::flush(&mut out);
    filler
}

fn mount_or_skip(size: &str) -> Option<Tmpfs> {
    let fs = Tmpfs::mount(size);
    if fs.is_none() {
        let required = std::env::var("MUSTER_REQUIRE_MOUNT").is_ok_and(|v| v == "1");
        assert!(!required, "MUSTER_REQUIRE_MOUNT=1 but mounting a tmpfs failed");
        // Straight to stderr, past the test harness's capture: a skip must show in the normal
        // output, not only with --nocapture.
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("SKIPPED: cannot mount a tmpfs here (needs root)\n"),
        );
    }
    fs
}

async fn post(http: &reqwest::Client, p: &Process, path: &str, body: Value) -> (u16, Value) {
    split(http.post(p.url(path)).body(body.to_string()).send().await.unwrap()).await
}

async fn get(http: &reqwest::Client, p: &Process, path: &str) -> (u16, Value) {
    split(http.get(p.url(path)).send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn below_the_free_space_floor_writes_wait_and_everything_else_works() {
    let Some(fs) = mount_or_skip("64m") else { return };
    let data = fs.dir.join("data");
    let p = Process::start(&data, &[], &["--min-free-mb", "24"]);
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &p, "/tasks", json!({"title": "before"})).await.0, 201);
    let mut watcher = Ws::connect(p.addr).await;
    watcher.hello(json!({"topics": ["*"]})).await;

    let filler = fill(&fs.dir, 16 << 20);
    let (status, body) = post(&http, &p, "/tasks", json!({"title": "refused"})).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage");
    assert!(body["error"]["message"].as_str().unwrap().contains("disk nearly full"), "{body}");
    // Over the WebSocket it is an error reply, and the connection stays.
    let reply = watcher.request(json!({"op": "chat.post", "from": "link", "content": "hi"})).await;
    assert_eq!(reply["error"]["code"], "insufficient_storage", "{reply}");
    // Reads, and an agent's session (presence is let through), keep working.
    assert_eq!(get(&http, &p, "/tasks").await.1["tasks"].as_array().unwrap().len(), 1);
    let mut agent = Ws::connect(p.addr).await;
    agent.hello(json!({"agent": "link"})).await;
    assert_eq!(watcher.until("presence.changed").await.last().unwrap()["data"]["agent"]["name"], "link");

    std::fs::remove_file(filler).unwrap();
    let (status, body) = post(&http, &p, "/tasks", json!({"title": "after"})).await;
    assert_eq!(status, 201, "writes resume once space is freed: {body}");
    assert_eq!(watcher.until("task.created").await.last().unwrap()["data"]["task"]["title"], "after");
    assert!(p.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_that_fills_up_loses_nothing_acknowledged() {
    let Some(fs) = mount_or_skip("24m") else { return };
    let data = fs.dir.join("data");
    // No floor: the database itself runs into ENOSPC.
    let p = Process::start(&data, &[], &["--min-free-mb", "0"]);
    let http = reqwest::Client::new();
    let mut watcher = Ws::connect(p.addr).await;
    watcher.hello(json!({"topics": ["*"]})).await;
    let filler = fill(&fs.dir, 2 << 20);
    let description = "x".repeat(8000);
    let mut acknowledged = Vec::new();
    let mut refusals = 0;
    for i in 0..600 {
        let (status, body) =
            post(&http, &p, "/tasks", json!({"title": format!("t{i}"), "description": description})).await;
        match status {
            201 => acknowledged.push(body["task"]["id"].as_str().unwrap().to_owned()),
            507 => {
                assert!(body["error"]["message"].as_str().unwrap().contains("is full"), "{body}");
                refusals += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refusals > 0, "the disk never filled ({} acknowledged)", acknowledged.len());
    // Still serving reads.
    let (status, board) = get(&http, &p, "/tasks").await;
    assert_eq!(status, 200);
    assert_eq!(board["tasks"].as_array().unwrap().len(), acknowledged.len());

    // Once space is freed the broker reopens its database by itself and writes work again,
    // without a restart.
    std::fs::remove_file(filler).unwrap();
    let mut status = 0;
    for _ in 0..100 {
        status = post(&http, &p, "/tasks", json!({"title": "after the disk was freed"})).await.0;
        if status == 201 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 201, "writes did not resume after space was freed");
    // The subscriber saw every event of the log once, in order: nothing a failed batch
    // left behind is missing from the live stream.
    let (_, health) = get(&http, &p, "/health").await;
    let head = health["head"].as_u64().unwrap();
    let mut seqs = Vec::new();
    while seqs.last().copied().unwrap_or(0) < head {
        seqs.push(watcher.event().await["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "the live stream has a gap or a repeat");

    // After a crash, every acknowledged task is there, and writes work.
    p.kill9();
    let p = Process::start(&data, &[], &["--min-free-mb", "0"]);
    for id in &acknowledged {
        let (status, body) = get(&http, &p, &format!("/tasks/{id}")).await;
        assert_eq!(status, 200, "{id} was acknowledged and is lost: {body}");
    }
    assert_eq!(post(&http, &p, "/tasks", json!({"title": "after"})).await.0, 201);
    eprintln!("{} writes acknowledged, {refusals} refused with 507, none lost", acknowledged.len());
    assert!(p.terminate().success());
}

async fn patch(http: &reqwest::Client, p: &Process, path: &str, body: Value) -> (u16, Value) {
    split(http.patch(p.url(path)).body(body.to_string()).send().await.unwrap()).await
}

/// Tasks finished long ago live only on disk; a write that reopens one and then fails must
/// leave it as it was, in memory and on disk.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_to_a_task_finished_long_ago_leaves_it_as_it_was() {
    let Some(fs) = mount_or_skip("32m") else { return };
    let data = fs.dir.join("data");
    let p = Process::start(&data, &[], &["--min-free-mb", "0"]);
    let http = reqwest::Client::new();
    let old = muster::core::FINISHED_KEPT + 300;
    for i in 0..old {
        let (status, body) = post(&http, &p, "/tasks", json!({"title": format!("t{i}")})).await;
        assert_eq!(status, 201, "{body}");
        let id = body["task"]["id"].as_str().unwrap().to_owned();
        let cancel = json!({"status": "cancelled", "agent": "ann"});
        assert_eq!(patch(&http, &p, &format!("/tasks/{id}"), cancel).await.0, 200);
    }
    let filler = fill(&fs.dir, 2 << 20);
    // Reopen the oldest tasks (evicted from memory), each with a large description, until
    // the disk refuses.
    let description = "x".repeat(8000);
    let (mut reopened, mut refused) = (Vec::new(), Vec::new());
    for n in 1..=300 {
        let id = format!("T-{n}");
        let reopen = json!({"status": "todo", "agent": "ann", "description": description});
        let (status, body) = patch(&http, &p, &format!("/tasks/{id}"), reopen).await;
        match status {
            200 => reopened.push(id),
            507 => refused.push(id),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!refused.is_empty(), "the disk never filled ({} reopened)", reopened.len());
    // While the broker runs, a refused write is not there: the rollback restored the task
    // in memory, even where the store could not be undone.
    for (ids, status) in [(&reopened, "todo"), (&refused, "cancelled")] {
        for id in ids {
            let (code, body) = get(&http, &p, &format!("/tasks/{id}")).await;
            assert_eq!((code, body["task"]["status"].as_str()), (200, Some(status)), "{id}: {body}");
        }
    }
    std::fs::remove_file(filler).unwrap();
    p.kill9();
    // After a crash every acknowledged write is there. (A refused one may be too, as any
    // write not acknowledged before a crash may be: sled may have stored part of a batch
    // whose sync failed.)
    let p = Process::start(&data, &[], &["--min-free-mb", "0"]);
    for id in &reopened {
        let (code, body) = get(&http, &p, &format!("/tasks/{id}")).await;
        assert_eq!((code, body["task"]["status"].as_str()), (200, Some("todo")), "{id} after a crash: {body}");
    }
    eprintln!("{} reopened, {} refused and left cancelled", reopened.len(), refused.len());
    assert!(p.terminate().success());
}
