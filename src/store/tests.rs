//! The store on a real sled in a temp dir: reopening, locking, trimming, a torn log.

use muster_protocol::{CreateTask, Event, Seq, Topic};

use super::log::encode_batch;
use super::*;
use crate::core::{Command, Model, Policy, apply, decide};
use crate::frame::Frame;

/// Commits `n` task creations, one event per batch, the way the sequencer does.
/// `with_agents`: the tasks are created by agents (an event more for each new agent).
fn create_tasks(store: &Store, model: &mut Model, n: usize, at: &str, with_agents: bool) {
    let now: muster_protocol::Timestamp = at.parse().unwrap();
    for i in 0..n {
        let cmd = Command::CreateTask(CreateTask {
            title: format!("t{i}"),
            agent: with_agents.then(|| format!("planner-{}", i % 3)),
            ..Default::default()
        });
        commit(store, model, cmd, now);
    }
}

fn seqs(store: &Store, since: Seq, up_to: Seq) -> Vec<Seq> {
    store.log.read(since, up_to, &[Topic::All], 100).unwrap().0.iter().map(|f| f.seq).collect()
}

/// Writes a batch into the log as it is on disk, bypassing the append's order check (as a
/// crash can leave it).
fn put_batch(store: &Store, frames: &[Frame]) -> segments::Pos {
    let pos = store.db.log_records.append(&encode_batch(frames)).unwrap();
    store.db.handles().unwrap().log.insert(frames[0].seq.to_be_bytes(), &pos.encode()).unwrap();
    pos
}

fn load(store: &Store) -> Model {
    store.views.load(&store.log).unwrap()
}

#[test]
fn a_reopened_store_has_the_same_model_and_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (epoch, model) = {
        let store = Store::open(dir.path(), 16).unwrap();
        let mut model = load(&store);
        create_tasks(&store, &mut model, 5, "2026-11-25T10:00:00Z", true);
        // Later contact by the same agents: only their lastSeenAt moves, which is not
        // written until the next agents checkpoint. Dropping the store without `close` is
        // a crash: load must restore it from the log.
        create_tasks(&store, &mut model, 3, "2026-11-25T10:02:00Z", true);
        assert!(store.views.checkpointed() < model.head, "the test needs a pending checkpoint");
        (store.db.epoch().to_owned(), model)
    };
    let store = Store::open(dir.path(), 16).unwrap();
    assert_eq!(store.db.epoch(), epoch);
    assert_eq!(load(&store), model);
}

#[test]
fn a_second_broker_on_the_same_dir_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), 16).unwrap();
    let err = Store::open(dir.path(), 16).err().unwrap();
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    assert!(err.to_string().contains("in use by another muster process"), "{err}");
}

#[test]
fn an_append_that_does_not_follow_the_head_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16).unwrap();
    let mut model = load(&store);
    create_tasks(&store, &mut model, 2, "2026-11-25T10:00:00Z", false);
    let now = "2026-11-25T10:00:01Z".parse().unwrap();
    let cmd = Command::CreateTask(CreateTask { title: "late".into(), ..Default::default() });
    let kind = decide(&model, &Policy::default(), &cmd, now).unwrap().events.remove(0);
    // A writer that believes the head is 1 (a deposed one) cannot append seq 2 again.
    let stale = Frame::of(&Event { seq: 2, at: now, kind: kind.clone() });
    let err = store.log.append(1, &[stale], Default::default()).unwrap_err();
    assert!(matches!(err, StoreError::OutOfOrder { expected: 3, got: 2 }), "{err}");
    // Nor skip one.
    let ahead = Frame::of(&Event { seq: 4, at: now, kind });
    assert!(store.log.append(3, &[ahead], Default::default()).is_err());
    assert_eq!(seqs(&store, 0, 10), [1, 2]);
}

#[test]
fn trimming_keeps_the_newest_events_and_never_passes_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16).unwrap();
    let mut model = load(&store);
    create_tasks(&store, &mut model, 6, "2026-11-01T10:00:00Z", false);
    create_tasks(&store, &mut model, 4, "2026-11-25T10:00:00Z", false);
    let recent: muster_protocol::Timestamp = "2026-11-20T00:00:00Z".parse().unwrap();
    // By count: keep the newest 8.
    assert_eq!(store.log.trim(10, 8, "2000-01-01T00:00:00Z".parse().unwrap()).unwrap(), 2);
    assert_eq!(store.log.first_retained(10).unwrap(), 3);
    // By age: the first six are older than the cut.
    assert_eq!(store.log.trim(10, 1000, recent).unwrap(), 4);
    assert_eq!(store.log.first_retained(10).unwrap(), 7);
    assert_eq!(seqs(&store, 0, 10), [7, 8, 9, 10]);
    // Never past the head, whatever the retention says.
    assert_eq!(store.log.trim(8, 0, "2100-01-01T00:00:00Z".parse().unwrap()).unwrap(), 2);
    assert_eq!(store.log.first_retained(10).unwrap(), 9);
    // The views do not depend on the log.
    drop(store);
    let store = Store::open(dir.path(), 16).unwrap();
    assert_eq!(load(&store), model);
}

#[test]
fn log_entries_after_a_gap_are_dropped_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16).unwrap();
    let mut model = load(&store);
    create_tasks(&store, &mut model, 3, "2026-11-25T10:00:00Z", false);
    // As a crash could leave it: the views at 3, the log holding 4 (a batch that was
    // written but not acknowledged) and 6 (after a hole).
    let mut ahead = model.clone();
    let mut tail = Vec::new();
    for seq in [4, 6] {
        let cmd = Command::CreateTask(CreateTask { title: format!("t{seq}"), ..Default::default() });
        let now = "2026-11-25T10:00:01Z".parse().unwrap();
        let kind = decide(&ahead, &Policy::default(), &cmd, now).unwrap().events.remove(0);
        let event = Event { seq, at: now, kind };
        apply(&mut ahead, &event);
        tail.push(Frame::of(&event));
    }
    put_batch(&store, &tail[..1]);
    put_batch(&store, &tail[1..]);
    store.log.sync().unwrap();
    drop(store);

    let store = Store::open(dir.path(), 16).unwrap();
    let loaded = load(&store);
    assert_eq!(loaded.head, 4, "the contiguous entry is kept, the one after the gap is not");
    assert_eq!(loaded.tasks.len(), 4);
    assert_eq!(seqs(&store, 0, 10).len(), 4);
}

#[test]
fn a_version_1_dir_with_names_differing_in_case_is_migrated_to_one_agent_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16).unwrap();
    let mut model = load(&store);
    // As version 1 stored them: names as typed, two spellings of one agent.
    for (agent, at) in [("Planner", "2026-11-25T10:00:00Z"), ("planner", "2026-11-25T11:00:00Z")] {
        let now: muster_protocol::Timestamp = at.parse().unwrap();
        let cmd = Command::CreateTask(CreateTask {
            title: format!("by {agent}"),
            assignee: Some("LINK".into()),
            agent: Some(agent.into()),
            ..Default::default()
        });
        let head = model.head;
        let mut events = Vec::new();
        for kind in decide(&model, &Policy::default(), &cmd, now).unwrap().events {
            let event = Event { seq: model.head + 1, at: now, kind };
            apply(&mut model, &event);
            events.push(event);
        }
        let frames: Vec<Frame> = events.iter().map(Frame::of).collect();
        store.log.append(head, &frames, Default::default()).unwrap();
        store.views.write(&events, &model, &[], &[]).unwrap();
    }
    assert_eq!(model.agents.len(), 2);
    store.views.close(&model).unwrap();
    drop(store);
    to_version_4(dir.path(), |old| {
        let message = serde_json::json!({"id": "M-1", "seq": 9, "channel": "general", "from": "Kai",
            "content": "@Link hi", "mentions": ["Link"], "to": null, "replyTo": null, "at": "2026-11-25T10:00:00Z"});
        let mut key = b"Link\0".to_vec();
        key.extend_from_slice(&9u64.to_be_bytes());
        old.open_tree("inbox").unwrap().insert(key, serde_json::to_vec(&message).unwrap()).unwrap();
        old.open_tree("meta").unwrap().insert("schema", &1u64.to_be_bytes()).unwrap();
    });

    let store = Store::open(dir.path(), 16).unwrap();
    let model = load(&store);
    let names: Vec<&String> = model.agents.keys().collect();
    assert_eq!(names, ["planner"], "one agent, lowercase");
    let planner = model.agents.get("planner").unwrap();
    assert_eq!(planner.first_seen_at, "2026-11-25T10:00:00Z".parse::<muster_protocol::Timestamp>().unwrap());
    assert!(
        model
            .tasks
            .values()
            .all(|t| t.created_by.as_deref() == Some("planner") && t.assignee.as_deref() == Some("link"))
    );
    let inbox = store.history.inbox("link", None, None, 10).unwrap();
    assert_eq!(inbox.len(), 1, "the inbox moved to the lowercase name");
    let moved: serde_json::Value = serde_json::from_slice(&inbox[0].1).unwrap();
    assert_eq!((moved["from"].as_str(), moved["mentions"][0].as_str()), (Some("kai"), Some("link")));
    drop(store);
    // Migrated once: the next load finds nothing to do and the same model.
    let store = Store::open(dir.path(), 16).unwrap();
    assert_eq!(load(&store), model);
}

/// Decides `cmd` at `at` and commits its events, the way the sequencer does.
fn commit(store: &Store, model: &mut Model, cmd: Command, at: muster_protocol::Timestamp) {
    commit_carrying_at(store, model, cmd, at, &[], &[]);
}

#[test]
fn loading_reads_the_kept_tasks_by_the_indexes_and_an_older_dir_gets_them_built() {
    use muster_protocol::{TaskId, TaskStatus, UpdateTask};
    let dir = tempfile::tempdir().unwrap();
    let total = crate::core::FINISHED_KEPT as u64 + 30;
    let model = {
        let store = Store::open(dir.path(), 16).unwrap();
        let mut model = load(&store);
        let mut at: muster_protocol::Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
        create_tasks(&store, &mut model, total as usize, "2026-11-25T10:00:00Z", false);
        // Cancelled in an order that is not the ids' (the oldest change is let go of first).
        for n in (1..=total - 5).rev() {
            at += std::time::Duration::from_millis(10);
            let update =
                UpdateTask { status: Some(TaskStatus::Cancelled), agent: Some("ann".into()), ..Default::default() };
            commit(&store, &mut model, Command::UpdateTask { id: TaskId(n), update }, at);
        }
        // An unfinished task that changes: its index entry follows.
        let retitle = UpdateTask { title: Some("renamed".into()), ..Default::default() };
        commit(&store, &mut model, Command::UpdateTask { id: TaskId(total), update: retitle }, at);
        store.views.close(&model).unwrap();
        model
    };
    assert_eq!(model.task(TaskId(total)).unwrap().title, "renamed");
    assert_eq!(model.tasks.len(), crate::core::FINISHED_KEPT + 5);
    assert!(model.evicted(TaskId(total - 5)) && !model.evicted(TaskId(1)));
    {
        let store = Store::open(dir.path(), 16).unwrap();
        assert_eq!(load(&store), model, "loaded by the indexes");
        // As a version-3 dir would be: no indexes, no task numbers.
        let h = store.db.handles().unwrap();
        h.unfinished.clear().unwrap();
        h.finished.clear().unwrap();
        let views = h.meta.get("views").unwrap().unwrap();
        h.meta.insert("views", &views[..32]).unwrap();
        h.meta.insert("schema", &3u64.to_be_bytes()).unwrap();
        store.db.flush_and_sync().unwrap();
    }
    let store = Store::open(dir.path(), 16).unwrap();
    let loaded = load(&store);
    let ids = |m: &Model| m.tasks.keys().map(|id| id.0).collect::<Vec<_>>();
    let (a, b) = (ids(&loaded), ids(&model));
    let only = |x: &[u64], y: &[u64]| x.iter().filter(|i| !y.contains(i)).copied().collect::<Vec<_>>();
    assert_eq!((only(&a, &b), only(&b, &a)), (vec![], vec![]));
    assert_eq!(
        (loaded.counts(), loaded.last_task, loaded.head, loaded.tasks_seq),
        (model.counts(), model.last_task, model.head, model.tasks_seq)
    );
    assert_eq!(loaded, model, "loaded by reading every task, and indexed");
    let h = store.db.handles().unwrap();
    assert_eq!((h.unfinished.len(), h.finished.len()), (5, total as usize - 5));
    drop(h);
    drop(store);
    let store = Store::open(dir.path(), 16).unwrap();
    assert_eq!(load(&store), model, "loaded by the indexes built");
}

/// Opens the sled database in `path` of a store just closed, once sled's background
/// threads have let go of its lock (as the store itself waits: `db::open_sled`).
fn reopen(path: &std::path::Path) -> sled::Db {
    db::open_sled(path, path, 16 << 20).unwrap()
}

/// Rewrites the closed store in `dir` as version 4 kept it — sled's files in the dir itself,
/// the log's batches and the messages as values of the trees `log`, `chat` and `inbox` —
/// then lets `edit` change it further.
fn to_version_4(dir: &std::path::Path, edit: impl FnOnce(&sled::Db)) {
    let new = reopen(&dir.join("sled"));
    let log_records = segments::Segments::open("log", &dir.join("log")).unwrap();
    let chat_records = segments::Segments::open("chat", &dir.join("chat")).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_str().is_some_and(upgrade::is_sled_file) {
            let path = entry.path();
            if path.is_dir() { std::fs::remove_dir_all(path).unwrap() } else { std::fs::remove_file(path).unwrap() }
        }
    }
    let old = reopen(dir);
    for name in new.tree_names() {
        let tree = new.open_tree(&name).unwrap();
        let (to, index) = match &name[..] {
            b"log-index" => (&b"log"[..], None),
            b"chat-index" => (&b"chat"[..], Some("chat-index")),
            b"inbox-index" => (&b"inbox"[..], Some("inbox-index")),
            other => (other, None),
        };
        let to = old.open_tree(to).unwrap();
        match index {
            Some(index) => {
                for entry in chat_index::ChatIndex::new(&tree, index).all() {
                    let (name, seq, pos) = entry.unwrap();
                    to.insert(db::key_chat(&name, seq), chat_records.read(pos).unwrap()).unwrap();
                }
            }
            None => {
                for entry in tree.iter() {
                    let (k, v) = entry.unwrap();
                    let v = match &name[..] {
                        b"log-index" => log_records.read(segments::Pos::decode(&v).unwrap()).unwrap().into(),
                        _ => v,
                    };
                    to.insert(k, v).unwrap();
                }
            }
        }
    }
    old.open_tree("meta").unwrap().insert("schema", &4u64.to_be_bytes()).unwrap();
    edit(&old);
    old.flush().unwrap();
    drop((old, new, log_records, chat_records));
    for moved in ["sled", "log", "chat"] {
        std::fs::remove_dir_all(dir.join(moved)).unwrap();
    }
}

/// The log's index entry for the batch that starts at `first`.
fn log_pos(store: &Store, first: Seq) -> segments::Pos {
    let h = store.db.handles().unwrap();
    segments::Pos::decode(&h.log.get(first.to_be_bytes()).unwrap().unwrap()).unwrap()
}

#[test]
fn a_log_record_that_never_reached_the_disk_is_dropped_or_starts_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16).unwrap();
    let mut model = load(&store);
    create_tasks(&store, &mut model, 3, "2026-11-25T10:00:00Z", false);
    // Two batches after the views' head, written but never acknowledged; the record of the
    // first of them lost (sled's index reached the disk, the record did not).
    let mut ahead = model.clone();
    let now = "2026-11-25T10:00:01Z".parse().unwrap();
    for seq in [4, 5] {
        let cmd = Command::CreateTask(CreateTask { title: format!("t{seq}"), ..Default::default() });
        let kind = decide(&ahead, &Policy::default(), &cmd, now).unwrap().events.remove(0);
        let event = Event { seq, at: now, kind };
        apply(&mut ahead, &event);
        put_batch(&store, &[Frame::of(&event)]);
    }
    store.db.log_records.damage(log_pos(&store, 4));
    // And the record of an event the views include: as if the agents checkpoint were
    // older, so that load reads it.
    store.db.log_records.damage(log_pos(&store, 2));
    store.db.handles().unwrap().meta.insert("agents", &0u64.to_be_bytes()).unwrap();
    store.log.sync().unwrap();
    drop(store);

    let store = Store::open(dir.path(), 16).unwrap();
    let loaded = load(&store);
    assert_eq!(loaded, model, "what the views hold stays; the unacknowledged tail goes");
    assert_eq!(store.log.first_retained(loaded.head).unwrap(), 3, "a resume from before 3 is told to resync");
    assert_eq!(seqs(&store, 0, 10), [3]);
    // The next append follows the head.
    create_tasks(&store, &mut model, 1, "2026-11-25T10:00:02Z", false);
    assert_eq!(seqs(&store, 0, 10), [3, 4]);
}

/// What a store's log, channels and an inbox read back.
type ReadBack = (Vec<Seq>, Vec<(Seq, bytes::Bytes)>, Vec<(Seq, bytes::Bytes)>, Vec<(Seq, bytes::Bytes)>);

fn read_back(store: &Store) -> ReadBack {
    let log = seqs(store, 0, 100);
    let general = store.history.messages("general", None, None, 100).unwrap();
    let review = store.history.messages("review", None, None, 100).unwrap();
    let inbox = store.history.inbox("bo", None, None, 100).unwrap();
    (log, general, review, inbox)
}

/// A closed store in `dir` with tasks and messages in two channels and an inbox; its model
/// and what it reads back.
fn with_chat(dir: &std::path::Path) -> (Model, ReadBack) {
    use muster_protocol::PostMessage;
    let post = |from: &str, content: &str, channel: Option<&str>| {
        Command::PostMessage(PostMessage {
            from: from.into(),
            content: content.into(),
            channel: channel.map(Into::into),
            ..Default::default()
        })
    };
    let store = Store::open(dir, 16).unwrap();
    let mut model = load(&store);
    let at: muster_protocol::Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
    create_tasks(&store, &mut model, 3, "2026-11-25T10:00:00Z", true);
    commit(&store, &mut model, post("ann", "@bo the tests pass", None), at);
    commit(&store, &mut model, post("bo", "thanks", Some("review")), at);
    commit(&store, &mut model, post("cy", "@bo @ann look", Some("review")), at);
    store.views.close(&model).unwrap();
    let before = read_back(&store);
    assert_eq!((before.1.len(), before.2.len(), before.3.len()), (1, 2, 2));
    (model, before)
}

#[test]
fn a_version_4_dir_gets_its_log_and_chat_moved_out_of_sled_once() {
    let dir = tempfile::tempdir().unwrap();
    let read_all = read_back;
    let (model, before) = with_chat(dir.path());
    to_version_4(dir.path(), |_| {});
    // As an upgrade that crashed part-way leaves it: a half-built copy, part of the records.
    std::fs::create_dir_all(dir.path().join("sled.new")).unwrap();
    std::fs::write(dir.path().join("sled.new/db"), b"half").unwrap();
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    std::fs::write(dir.path().join("log/00000000"), b"part of a record").unwrap();
    let store = Store::open(dir.path(), 16).unwrap();
    assert_eq!(load(&store), model);
    assert_eq!(read_all(&store), before, "the same log, channels and inbox");
    assert_eq!(store.db.handles().unwrap().meta.get("schema").unwrap().unwrap().as_ref(), db::SCHEMA.to_be_bytes());
    drop(store);
    // sled moved into its own dir; what stands where it was only refuses an older muster.
    let root = reopen(dir.path());
    let trees: Vec<_> = root.tree_names().into_iter().map(|n| String::from_utf8_lossy(&n).into_owned()).collect();
    assert_eq!(trees, ["__sled__default", "meta"]);
    assert_eq!(root.open_tree("meta").unwrap().get("schema").unwrap().unwrap().as_ref(), db::SCHEMA.to_be_bytes());
    drop(root);
    assert!(!dir.path().join("sled.new").exists());
    // As a crash right after the copy was renamed into place leaves it: the old database
    // still where it was. It goes at the next open.
    for name in ["db", "conf"] {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("snap.") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let root = reopen(dir.path());
    root.open_tree("tasks").unwrap().insert("old", "value").unwrap();
    root.flush().unwrap();
    drop(root);
    let store = Store::open(dir.path(), 16).unwrap();
    assert_eq!((load(&store), read_all(&store)), (model, before), "moved once");
    drop(store);
    let root = reopen(dir.path());
    assert!(
        root.open_tree("meta").unwrap().get("stub").unwrap().is_some(),
        "the old database was replaced by the stub"
    );
    assert!(root.open_tree("tasks").unwrap().is_empty());
}

/// Rewrites the closed store in `dir` as version 5 kept it: one key per message in the chat
/// indexes.
fn to_version_5(dir: &std::path::Path) {
    let db = reopen(&dir.join("sled"));
    for name in ["chat-index", "inbox-index"] {
        let tree = db.open_tree(name).unwrap();
        let entries: Vec<_> = chat_index::ChatIndex::new(&tree, name).all().map(Result::unwrap).collect();
        tree.clear().unwrap();
        for (name, seq, pos) in entries {
            tree.insert(db::key_chat(&name, seq), &pos.encode()).unwrap();
        }
    }
    db.open_tree("meta").unwrap().insert("schema", &5u64.to_be_bytes()).unwrap();
    db.flush().unwrap();
}

/// The values of a chat index tree: chunks, or one position per message (version 5).
fn chat_index_values(store: &Store) -> Vec<usize> {
    store.db.handles().unwrap().chat.iter().values().map(|v| v.unwrap().len()).collect()
}

#[test]
fn a_version_5_dir_gets_its_chat_indexes_in_chunks_once() {
    let dir = tempfile::tempdir().unwrap();
    let (model, before) = with_chat(dir.path());
    to_version_5(dir.path());
    let values = |db: &sled::Db| -> Vec<usize> {
        db.open_tree("chat-index").unwrap().iter().values().map(|v| v.unwrap().len()).collect()
    };
    assert_eq!(values(&reopen(&dir.path().join("sled"))), [12, 12, 12], "the layout this test starts from");
    // A half-built copy from an upgrade that crashed part-way is started over.
    std::fs::create_dir_all(dir.path().join("sled.new")).unwrap();
    std::fs::write(dir.path().join("sled.new/db"), b"half").unwrap();
    let store = Store::open(dir.path(), 16).unwrap();
    assert_eq!((load(&store), read_back(&store)), (model.clone(), before.clone()));
    assert_eq!(chat_index_values(&store), [20, 40], "one chunk per channel");
    assert_eq!(store.db.handles().unwrap().meta.get("schema").unwrap().unwrap().as_ref(), db::SCHEMA.to_be_bytes());
    assert!(!dir.path().join("sled.new").exists() && !dir.path().join("sled.old").exists());
    drop(store);

    // A crash between the two renames: the old database in `sled.old/`, the complete copy
    // still in `sled.new/`. The next open finishes the swap.
    to_version_5(dir.path());
    let (old, saved) = (dir.path().join("sled.old"), tempfile::tempdir().unwrap());
    for entry in std::fs::read_dir(dir.path().join("sled")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), saved.path().join(entry.file_name())).unwrap();
        }
    }
    upgrade::rechunk(dir.path(), 1 << 20).unwrap();
    std::fs::rename(dir.path().join("sled"), dir.path().join("sled.new")).unwrap();
    std::fs::rename(saved.path(), &old).unwrap();
    let store = Store::open(dir.path(), 16).unwrap();
    assert_eq!((load(&store), read_back(&store)), (model, before));
    assert_eq!(chat_index_values(&store), [20, 40]);
    assert!(!dir.path().join("sled.new").exists() && !old.exists());
}

#[test]
fn a_snapshot_makes_a_data_dir_that_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (source, copy) = (dir.path().join("source"), dir.path().join("copy"));
    let (closed, before) = with_chat(&source);
    let store = Store::open(&source, 16).unwrap();
    let mut model = load(&store);
    assert_eq!(model, closed);
    // Writes after the last checkpoint are in the snapshot as in a crash: load finds them.
    create_tasks(&store, &mut model, 2, "2026-11-25T10:05:00Z", true);
    let mut bytes = Vec::new();
    let written = export(&store.db, &mut bytes).unwrap();
    assert_eq!(written, bytes.len() as u64);
    // A second export of the same store is the same (the segment files are read by position,
    // not through their shared cursor).
    let mut again = Vec::new();
    export(&store.db, &mut again).unwrap();
    assert!(again == bytes, "a second export differs from the first");
    let epoch = store.db.epoch().to_owned();
    drop(store);

    import(&copy, &bytes[..], 16 << 20).unwrap();
    let restored = Store::open(&copy, 16).unwrap();
    assert_eq!(restored.db.epoch(), epoch);
    assert_eq!(load(&restored), model);
    let (log, general, review, inbox) = read_back(&restored);
    assert_eq!(log, seqs(&Store::open(&source, 16).unwrap(), 0, 100));
    assert_eq!((general, review, inbox), (before.1, before.2, before.3));

    // A snapshot cut short, or of something else, is refused with what is wrong.
    for (broken, expected) in
        [(&bytes[..bytes.len() - 1], "cut short"), (&b"muster snapshot 9\n"[..], "not a snapshot")]
    {
        let err = import(&dir.path().join(format!("broken-{}", broken.len())), broken, 16 << 20).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
}

/// Commits `cmd` as [`commit`] does, with the idempotency records it made and the keys it
/// forgot.
fn commit_carrying(store: &Store, model: &mut Model, cmd: Command, records: &[(String, Vec<u8>)], expired: &[String]) {
    commit_carrying_at(store, model, cmd, "2026-11-25T10:00:00Z".parse().unwrap(), records, expired);
}

fn commit_carrying_at(
    store: &Store,
    model: &mut Model,
    cmd: Command,
    at: muster_protocol::Timestamp,
    records: &[(String, Vec<u8>)],
    expired: &[String],
) {
    let decision = decide(model, &Policy::default(), &cmd, at).unwrap();
    let head = model.head;
    let mut events = Vec::new();
    for kind in decision.events {
        let event = Event { seq: model.head + 1, at, kind };
        apply(model, &event);
        events.push(event);
    }
    let frames: Vec<Frame> = events.iter().map(Frame::of).collect();
    store.log.append(head, &frames, Carried { records, expired, commands: &[] }).unwrap();
    store.views.write(&events, model, records, expired).unwrap();
    store.log.sync().unwrap();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A commit syncs only the log's file; sled and the chat files are synced at checkpoints. A
/// power loss after acknowledged writes can leave sled, the chat files or both as they were
/// at the last checkpoint: everything acknowledged since comes back from the log's records
/// (tasks, messages by channel and inbox, idempotency records made and forgotten), and
/// appends go on after it.
#[test]
fn a_power_loss_after_the_checkpoint_loses_nothing_acknowledged() {
    use muster_protocol::PostMessage;
    let post = |from: &str, content: &str, channel: Option<&str>| {
        Command::PostMessage(PostMessage {
            from: from.into(),
            content: content.into(),
            channel: channel.map(Into::into),
            ..Default::default()
        })
    };
    let record = |key: &str| (key.to_owned(), format!("{{\"outcome\":\"{key}\"}}").into_bytes());
    for lost in [&["sled", "chat"][..], &["sled"], &["chat"]] {
        let dir = tempfile::tempdir().unwrap();
        let saved = tempfile::tempdir().unwrap();
        let (model, before) = {
            let store = Store::open(dir.path(), 16).unwrap();
            let mut model = load(&store);
            create_tasks(&store, &mut model, 2, "2026-11-25T10:00:00Z", true);
            commit_carrying(&store, &mut model, post("ann", "@bo before", None), &[record("k1"), record("k2")], &[]);
            store.db.checkpoint(model.head).unwrap();
            // sled's own flush, within 500 ms, makes the checkpoint durable.
            store.db.flush_and_sync().unwrap();
            for name in lost {
                copy_dir(&dir.path().join(name), &saved.path().join(name));
            }
            // Acknowledged after the checkpoint.
            commit_carrying(
                &store,
                &mut model,
                post("bo", "@ann after", Some("review")),
                &[record("k3")],
                &["k1".into()],
            );
            create_tasks(&store, &mut model, 2, "2026-11-25T10:00:01Z", true);
            commit_carrying(&store, &mut model, post("cy", "@bo @ann last", None), &[], &[]);
            (model, read_back(&store))
        };
        // The power goes: what was not synced is as it was at the checkpoint, and a record
        // being written when it went is torn.
        for name in lost {
            std::fs::remove_dir_all(dir.path().join(name)).unwrap();
            copy_dir(&saved.path().join(name), &dir.path().join(name));
        }
        let mut log = std::fs::OpenOptions::new().append(true).open(dir.path().join("log/00000000")).unwrap();
        std::io::Write::write_all(&mut log, &[0, 0, 1, 0, 7, 7, 7, 7, b'x']).unwrap();
        let store = Store::open(dir.path(), 16).unwrap();
        let loaded = load(&store);
        assert_eq!(loaded, model, "{lost:?} lost: the model");
        assert_eq!(read_back(&store), before, "{lost:?} lost: the log, the channels and the inbox");
        let keys: Vec<String> = store.views.idempotency_records().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["k2", "k3"], "{lost:?} lost: the idempotency records");
        // Appends go on after the recovered records, and survive the next loss too.
        let mut model = loaded;
        commit_carrying(&store, &mut model, post("ann", "again", None), &[], &[]);
        let after = read_back(&store);
        drop(store);
        let store = Store::open(dir.path(), 16).unwrap();
        assert_eq!(load(&store), model);
        assert_eq!(read_back(&store), after);
    }
}

/// A batch whose sync failed is rolled back, and the next one takes its `seq`s: both records
/// are in the log's file, and after a crash that lost sled the later one is the log.
#[test]
fn a_batch_written_again_after_a_rollback_replaces_it_in_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let model = {
        let store = Store::open(dir.path(), 16).unwrap();
        let mut model = load(&store);
        create_tasks(&store, &mut model, 2, "2026-11-25T10:00:00Z", false);
        store.db.checkpoint(model.head).unwrap();
        store.db.flush_and_sync().unwrap();
        copy_dir(&dir.path().join("sled"), &saved.path().join("sled"));
        // Written, then rolled back as after a failed sync.
        let mut rolled_back = model.clone();
        create_tasks(&store, &mut rolled_back, 3, "2026-11-25T10:00:01Z", false);
        store.log.discard(model.head + 1).unwrap();
        store.views.revert(&[], &model, &[]).unwrap();
        create_tasks(&store, &mut model, 1, "2026-11-25T10:00:02Z", false);
        model
    };
    std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
    copy_dir(&saved.path().join("sled"), &dir.path().join("sled"));
    let store = Store::open(dir.path(), 16).unwrap();
    let loaded = load(&store);
    assert_eq!(loaded, model);
    assert_eq!(seqs(&store, 0, 10), [1, 2, 3]);
}

/// The views got ahead of the log (a power loss took a record that sled's own flush had
/// already covered): load keeps the views' head, and the next batch follows it. That batch,
/// acknowledged, must come back after a crash that loses sled again, though the log has a
/// gap before it.
#[test]
fn a_batch_after_views_that_got_ahead_of_the_log_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 16).unwrap();
        let mut model = load(&store);
        create_tasks(&store, &mut model, 2, "2026-11-25T10:00:00Z", false);
        // Task 3's views, without its log record.
        let cmd = Command::CreateTask(CreateTask { title: "ahead".into(), ..Default::default() });
        let now = "2026-11-25T10:00:01Z".parse().unwrap();
        let kind = decide(&model, &Policy::default(), &cmd, now).unwrap().events.remove(0);
        let event = Event { seq: 3, at: now, kind };
        apply(&mut model, &event);
        store.views.write(&[event], &model, &[], &[]).unwrap();
        store.views.close(&model).unwrap();
    }
    let model = {
        let store = Store::open(dir.path(), 16).unwrap();
        let mut model = load(&store);
        assert_eq!(model.head, 3);
        copy_dir(&dir.path().join("sled"), &saved.path().join("sled"));
        create_tasks(&store, &mut model, 1, "2026-11-25T10:00:02Z", false);
        model
    };
    std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
    copy_dir(&saved.path().join("sled"), &dir.path().join("sled"));
    let store = Store::open(dir.path(), 16).unwrap();
    assert_eq!(load(&store), model, "the acknowledged batch after the gap is back");
}

/// A crash can fall between a task's value and its index entry (two sled trees): after a
/// completion the value said done while the `unfinished` index still held the task as it was
/// claimed, and after a reopening the `finished` index still named it. The replay after the
/// crash wrote the final value again but kept the stale entry, and the load after the next
/// checkpoint took the task back from it: an acknowledged completion undone (`tests/crash.rs`
/// caught it under load). Every task the replay touches is indexed again from its value.
#[test]
fn a_crash_between_a_task_and_its_index_entry_is_repaired_by_the_replay() {
    use muster_protocol::{TaskAction, TaskId, TaskStatus, UpdateTask};
    let id = TaskId(1);
    let key = id.0.to_be_bytes();
    let finished_keys = |h: &super::db::Handles| -> Vec<sled::IVec> {
        h.finished.iter().keys().map(Result::unwrap).filter(|k| k.get(9..) == Some(&key[..])).collect()
    };
    let at = |m: u32| -> muster_protocol::Timestamp { format!("2026-11-25T10:{m:02}:00Z").parse().unwrap() };
    let action = || TaskAction { agent: Some("link".into()), ..Default::default() };
    let reopen = || UpdateTask { status: Some(TaskStatus::Todo), agent: Some("link".into()), ..Default::default() };
    // (what the crash leaves, the status the task must load with)
    for case in ["completed", "reopened"] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 16).unwrap();
            let mut model = load(&store);
            create_tasks(&store, &mut model, 1, "2026-11-25T10:00:00Z", false);
            commit(&store, &mut model, Command::Claim { id, action: action() }, at(1));
            if case == "reopened" {
                commit(&store, &mut model, Command::Complete { id, action: action() }, at(2));
            }
            // The checkpoint before the change the crash cuts short.
            store.db.checkpoint(model.head).unwrap();
            store.db.flush_and_sync().unwrap();
            let h = store.db.handles().unwrap();
            let (unfinished, finished, views) =
                (h.unfinished.get(key).unwrap(), finished_keys(&h), h.meta.get("views").unwrap());
            match case {
                "completed" => commit(&store, &mut model, Command::Complete { id, action: action() }, at(3)),
                _ => commit(&store, &mut model, Command::UpdateTask { id, update: reopen() }, at(3)),
            }
            // sled as the crash left it: the task's new value, the old index entries, the
            // views' head before the change.
            if let Some(unfinished) = unfinished {
                h.unfinished.insert(key, unfinished).unwrap();
            } else {
                h.unfinished.remove(key).unwrap();
            }
            for k in finished_keys(&h) {
                h.finished.remove(k).unwrap();
            }
            for k in finished {
                h.finished.insert(k, &[]).unwrap();
            }
            h.meta.insert("views", views.unwrap()).unwrap();
            store.db.flush_and_sync().unwrap();
        }
        let expected = if case == "completed" { TaskStatus::Done } else { TaskStatus::Todo };
        // The replay after the crash, then a load from the checkpoint it made (no replay).
        for load_no in ["after the crash", "after the next checkpoint"] {
            let store = Store::open(dir.path(), 16).unwrap();
            let model = load(&store);
            assert_eq!(model.task(id).map(|t| t.status), Some(expected), "{case}, {load_no}");
            let h = store.db.handles().unwrap();
            let indexed = (h.unfinished.get(key).unwrap().is_some(), finished_keys(&h).len());
            let want = if expected == TaskStatus::Done { (false, 1) } else { (true, 0) };
            assert_eq!(indexed, want, "{case}, {load_no}: (in unfinished, keys in finished)");
            store.views.close(&model).unwrap();
        }
    }
}
