//! The materialized views — tasks, agents, inbox cursors, channels, and every message by
//! channel and by recipient — and the idempotency records, written with each batch:
//!
//! - `tasks`, `agents`, `cursors`, `channels`, `files`: the current value of each entity
//!   (`files`: the file reservations held, by id);
//! - `unfinished`: every task not finished, by id (a second copy, so that start-up reads them
//!   together); `finished`: `updatedAt \0 id` of every finished one (done, cancelled): start-up
//!   reads only the tasks the model keeps;
//! - `chat-index`: by channel, the `seq` and position in the `chat/` segment files of each
//!   message; `inbox-index`: the same by recipient (see `chat_index`);
//! - `idempotency`: `Idempotency-Key` → the recorded outcome;
//! - `meta`: the data dir's `epoch`, the schema version, `views` (the `head` the views
//!   include, the last message, reservation and task numbers, and the tasks by status) and
//!   `agents` (the agents checkpoint).
//!
//! Startup loads the views, not the log, and replays only the log entries the views may be
//! missing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use muster_protocol::{
    Agent, ChatMessage, Entity, Event, Reservation, ReservationId, Seq, Task, TaskId, TaskStatus, Timestamp,
};

use super::chat_index::ChatIndex;
use super::db::{Db, Handles, SCHEMA, StoreError, be, from_json, to_json};
use super::log::DiskLog;
use super::segments::Pos;
use crate::core::{Channel, FINISHED_KEPT, Model, apply};

/// How often agents that only acted (their `lastSeenAt` moved) are written (see
/// `Checkpoint`). A second bounds the log replayed after a crash to a second of writes.
const AGENTS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The views, in sled's trees.
pub(crate) struct Views {
    db: Arc<Db>,
    /// Agents whose `lastSeenAt` moved since the last agents checkpoint.
    seen: Mutex<Checkpoint>,
}

/// Agents that acted since the last checkpoint of the agents view.
///
/// Every write names its actor, so rewriting the actor's record with each batch would cost
/// one more sled insert per write, only to move `lastSeenAt`. Instead those records are
/// written at most every [`AGENTS_EVERY`], and `meta/agents` records the `seq` they are
/// current at; after a crash, `load` re-applies the log from there (apply is idempotent),
/// which restores every `lastSeenAt` exactly. The log is never trimmed past that `seq`.
struct Checkpoint {
    names: BTreeSet<String>,
    at: Instant,
    /// `seq` up to which the agents view is complete.
    seq: Seq,
}

/// The entities a batch of events touched, each written once per batch.
#[derive(Default)]
struct Touched<'a> {
    /// Each task an event carries, as the last one carries it.
    tasks: BTreeMap<TaskId, &'a Task>,
    /// Agents whose record changed (`presence.changed`): written with the batch.
    agents: BTreeSet<&'a str>,
    /// Agents that only acted (their `lastSeenAt` moved): written at the next checkpoint.
    seen: BTreeSet<&'a str>,
    cursors: BTreeSet<&'a str>,
    channels: BTreeSet<&'a str>,
    messages: Vec<&'a ChatMessage>,
    files: BTreeSet<ReservationId>,
}

impl<'a> Touched<'a> {
    fn of(events: &'a [Event]) -> Touched<'a> {
        let mut t = Touched::default();
        for event in events {
            let kind = &event.kind;
            if let Some(task) = kind.task() {
                t.tasks.insert(task.id, task);
            }
            if let Some(actor) = kind.actor() {
                t.seen.insert(actor);
            }
            match kind.entity() {
                Entity::None => {}
                Entity::Message(message) => {
                    t.channels.insert(&message.channel);
                    t.messages.push(message);
                }
                Entity::Agent(agent) => {
                    t.agents.insert(&agent.name);
                }
                Entity::Cursor(agent) => {
                    t.cursors.insert(agent);
                }
                Entity::Reservations(reservations) => t.files.extend(reservations.iter().map(|r| r.id)),
            }
        }
        t.seen.retain(|a| !t.agents.contains(a));
        t
    }
}

/// Where a cluster node's data dir stands in the cluster's replicated log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ClusterPosition {
    /// The cluster's epoch (a data dir never joins another cluster).
    pub(crate) epoch: String,
    /// The stream sequence of the last message of the log this dir holds.
    pub(crate) stream: u64,
    /// `head` after that message.
    pub(crate) head: Seq,
}

/// What `meta/views` holds besides the entities.
struct ViewsMeta {
    head: Seq,
    last_message: u64,
    last_reservation: u64,
    /// `seq` of the last task event (`None` before it was kept).
    tasks_seq: Option<Seq>,
    /// The last task number and the tasks by status (`None` before schema 4).
    tasks: Option<(u64, [u64; 6])>,
}

/// `meta/views` for `model`: `head`, the last message and reservation numbers, the `seq` of
/// the last task event, the last task number, then the six counts by status.
fn encode_views_meta(model: &Model) -> [u8; 88] {
    let mut v = [0u8; 88];
    let numbers = [model.head, model.last_message, model.last_reservation, model.tasks_seq, model.last_task];
    for (i, n) in numbers.into_iter().chain(model.counts()).enumerate() {
        v[i * 8..(i + 1) * 8].copy_from_slice(&n.to_be_bytes());
    }
    v
}

/// Reads `meta/views`: 16 bytes before reservations (schema 2), 24 with them, 32 with the
/// last task event, 88 with the task numbers (schema 4).
fn decode_views_meta(v: Option<&[u8]>) -> ViewsMeta {
    let number = |i: usize| v.and_then(|v| v.get(i * 8..(i + 1) * 8)).and_then(be);
    let tasks = (0..6).map(|i| number(5 + i)).collect::<Option<Vec<u64>>>();
    ViewsMeta {
        head: number(0).unwrap_or(0),
        last_message: number(1).unwrap_or(0),
        last_reservation: number(2).unwrap_or(0),
        tasks_seq: number(3),
        tasks: number(4).zip(tasks.and_then(|t| <[u64; 6]>::try_from(t).ok())),
    }
}

/// What the task indexes need of a stored task.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Indexed {
    status: TaskStatus,
    updated_at: Timestamp,
}

/// A task's key in its index: `unfinished` by id, `finished` by `updatedAt \0 id`.
#[derive(PartialEq, Eq)]
enum IndexKey {
    Unfinished([u8; 8]),
    Finished([u8; 17]),
}

impl IndexKey {
    fn of(id: TaskId, status: TaskStatus, updated_at: Timestamp) -> IndexKey {
        if !status.is_finished() {
            return IndexKey::Unfinished(id.0.to_be_bytes());
        }
        // Nanoseconds since the epoch with the sign bit flipped: byte order is time order.
        let nanos = updated_at.timestamp_nanos_opt().unwrap_or(i64::MAX) as u64 ^ (1 << 63);
        let mut key = [0u8; 17];
        key[..8].copy_from_slice(&nanos.to_be_bytes());
        key[9..].copy_from_slice(&id.0.to_be_bytes());
        IndexKey::Finished(key)
    }

    /// Adds the entry: an unfinished task's holds its JSON (start-up reads them together,
    /// rather than one by one from all over `tasks`); a finished task's holds nothing.
    fn insert(&self, h: &Handles, json: &[u8]) -> sled::Result<()> {
        match self {
            IndexKey::Unfinished(k) => h.unfinished.insert(k, json).map(drop),
            IndexKey::Finished(k) => h.finished.insert(k, &[]).map(drop),
        }
    }

    fn remove(&self, h: &Handles) -> sled::Result<()> {
        match self {
            IndexKey::Unfinished(k) => h.unfinished.remove(k).map(drop),
            IndexKey::Finished(k) => h.finished.remove(k).map(drop),
        }
    }
}

/// Stores `task` (or removes the task `id`) and its index entry.
fn store_task(h: &Handles, id: TaskId, task: Option<&Task>) -> Result<(), StoreError> {
    let key = id.0.to_be_bytes();
    let json = task.map(to_json);
    let old = match &json {
        Some(json) => h.tasks.insert(key, json.as_slice())?,
        None => h.tasks.remove(key)?,
    };
    let old =
        old.map(|v| from_json::<Indexed>("tasks", &v)).transpose()?.map(|o| IndexKey::of(id, o.status, o.updated_at));
    let new = task.map(|t| IndexKey::of(id, t.status, t.updated_at));
    if let Some(old) = old.as_ref().filter(|old| Some(*old) != new.as_ref()) {
        old.remove(h)?;
    }
    // An unfinished task's entry holds its value: written with every change.
    if let (Some(new), Some(json)) = (new, json)
        && (old.as_ref() != Some(&new) || matches!(new, IndexKey::Unfinished(_)))
    {
        new.insert(h, &json)?;
    }
    Ok(())
}

/// Indexes the tasks `ids` again from their stored values, after a crash. A task's value and
/// its index entry are two trees, and a crash can fall between them: the entry of the state
/// before (an `unfinished` one holding an older value, or a `finished` one under an older
/// time) would outlive the replay, which writes the value again but finds nothing to move.
/// Every entry of these tasks goes (the `finished` ones by a scan of its keys, which carry
/// the id after the time), and the one of each stored value is written.
fn reindex(h: &Handles, ids: &BTreeSet<TaskId>) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    for id in ids {
        h.unfinished.remove(id.0.to_be_bytes())?;
    }
    for key in h.finished.iter().keys() {
        let key = key?;
        if key.get(9..).and_then(be).is_some_and(|id| ids.contains(&TaskId(id))) {
            h.finished.remove(key)?;
        }
    }
    for id in ids {
        if let Some(value) = h.tasks.get(id.0.to_be_bytes())? {
            let task: Indexed = from_json("tasks", &value)?;
            IndexKey::of(*id, task.status, task.updated_at).insert(h, &value)?;
        }
    }
    Ok(())
}

impl Views {
    /// The views of `db`.
    pub(crate) fn new(db: Arc<Db>) -> Views {
        Views { db, seen: Mutex::new(Checkpoint { names: BTreeSet::new(), at: Instant::now(), seq: 0 }) }
    }

    fn lock_seen(&self) -> MutexGuard<'_, Checkpoint> {
        // A poisoned lock only means a writer panicked; the set is still valid.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `seq` up to which the agents view is complete and sled is checkpointed (durable once
    /// sled has flushed since: [`super::DiskLog::trim`] flushes first): the log after it is
    /// still needed to restore `lastSeenAt` and sled after a crash, so it is not trimmed.
    pub(crate) fn checkpointed(&self) -> Seq {
        self.lock_seen().seq.min(self.db.synced())
    }

    /// Where this data dir stands in a cluster's replicated log, if it is a cluster node's:
    /// the cluster's epoch, and the last message of the log it holds with the `head` after it.
    pub(crate) fn cluster_position(&self) -> Result<Option<ClusterPosition>, StoreError> {
        let h = self.db.handles()?;
        h.meta.get("cluster")?.map(|v| from_json("meta", &v)).transpose()
    }

    /// The `head` the views include (without the log's tail after it).
    pub(crate) fn stored_head(&self) -> Result<Seq, StoreError> {
        let h = self.db.handles()?;
        Ok(decode_views_meta(h.meta.get("views")?.as_deref()).head)
    }

    /// Records where this data dir stands in the cluster's log (durable with the next sync).
    pub(crate) fn set_cluster_position(&self, position: &ClusterPosition) -> Result<(), StoreError> {
        let h = self.db.handles()?;
        // Plain data; serializing cannot fail.
        h.meta.insert("cluster", serde_json::to_vec(position).unwrap_or_default())?;
        Ok(())
    }

    /// Loads the model: the views, then the log's entries after the `head` they include
    /// (see [`DiskLog::tail`]).
    pub(crate) fn load(&self, log: &DiskLog) -> Result<Model, StoreError> {
        let h = self.db.handles()?;
        let meta = decode_views_meta(h.meta.get("views")?.as_deref());
        let (head, last_message, last_reservation) = (meta.head, meta.last_message, meta.last_reservation);
        // A dir written before checkpoints synced everything with each commit.
        let synced = self.db.stored_checkpoint()?.unwrap_or(head).min(head);
        log.recover(synced)?;
        let schema = h.meta.get("schema")?.and_then(|v| be(&v)).unwrap_or(1);
        if schema < 2 {
            canonical_tasks(&h.tasks)?;
        }
        let agents = self.values::<Agent>("agents", &h.agents)?;
        let channels = self.values::<Channel>("channels", &h.channels)?;
        let mut cursors = Vec::new();
        for entry in h.cursors.iter() {
            let (k, v) = entry?;
            cursors.push((String::from_utf8_lossy(&k).into_owned(), be(&v).unwrap_or(0)));
        }
        let files = self.values::<Reservation>("files", &h.files)?;
        let mut model = Model::from_views(head, last_message, [], agents, cursors, channels)
            .with_reservations(last_reservation, files);
        match meta.tasks.filter(|_| schema >= 4) {
            // The unfinished tasks and the last finished ones, by the indexes.
            Some((last_task, counts)) => {
                for task in h.unfinished.iter().values() {
                    model.load_task(from_json("unfinished", &task?)?);
                }
                for key in h.finished.iter().keys().rev().take(FINISHED_KEPT) {
                    let id = key?.get(9..).and_then(be).unwrap_or(0);
                    let task = h.tasks.get(id.to_be_bytes())?.ok_or_else(|| StoreError::Corrupt {
                        tree: "finished",
                        error: format!("T-{id} is in the index but not in tasks"),
                    })?;
                    model.load_task(from_json("tasks", &task)?);
                }
                model.set_counts(last_task, counts);
            }
            // Written before the indexes: read every task once, and index it.
            None => {
                tracing::info!("indexing the tasks (once, for this version)");
                h.unfinished.clear()?;
                h.finished.clear()?;
                for value in h.tasks.iter().values() {
                    let value = value?;
                    let task: Task = from_json("tasks", &value)?;
                    IndexKey::of(task.id, task.status, task.updated_at).insert(&h, &value)?;
                    model.load_task(task);
                }
            }
        }
        // Written before the board kept it: the head, which is never older.
        model.tasks_seq = meta.tasks_seq.unwrap_or(head);

        // Re-apply from the agents checkpoint or the last checkpoint, whichever is older
        // (idempotent for what the views hold), to restore `lastSeenAt` and what sled and
        // the chat files lost, and apply what the views do not hold yet.
        let agents_seq = h.meta.get("agents")?.and_then(|v| be(&v)).unwrap_or(0).min(synced);
        let mut replayed = Vec::new();
        for frame in log.tail(agents_seq + 1, head)? {
            let event = frame.event().map_err(|e| StoreError::Corrupt { tree: "log", error: e.to_string() })?;
            if let Some(task) = event.kind.task().filter(|t| model.evicted(t.id)) {
                let stored = h.tasks.get(task.id.0.to_be_bytes())?;
                if let Some(stored) = stored {
                    model.restore(Arc::new(from_json("tasks", &stored)?));
                }
            }
            apply(&mut model, &event);
            replayed.push(event);
        }
        if !replayed.is_empty() {
            let new = replayed.iter().filter(|e| e.seq > head).count();
            tracing::info!(replayed = replayed.len(), new, "re-applied the log since the last checkpoint");
            self.write_views(&replayed, &model, true)?;
        }
        if h.meta.get("schema")?.and_then(|v| be(&v)).unwrap_or(1) < SCHEMA {
            if let Some(migrated) = model.canonical_names() {
                tracing::warn!("agent names are case-insensitive now: merging names that differ only in case");
                self.migrate_names(&migrated)?;
                model = migrated;
            }
            // With the task numbers the indexes need (schema 4).
            h.meta.insert("views", &encode_views_meta(&model)[..])?;
            h.meta.insert("schema", &SCHEMA.to_be_bytes())?;
        }
        log.cut()?;
        self.checkpoint_agents(&model, true)?;
        self.db.checkpoint(model.head)?;
        self.db.flush_and_sync()?;
        Ok(model)
    }

    /// Rewrites a version-1 data dir whose agent names differ only in case: the entities as
    /// in `migrated`, every stored message and inbox with lowercase names. The log keeps
    /// what it recorded; the agents checkpoint moves to the head, so that it is not
    /// replayed over the rewritten views. (Direct channels keep the names they were
    /// created with.)
    fn migrate_names(&self, migrated: &Model) -> Result<(), StoreError> {
        let h = self.db.handles()?;
        h.agents.clear()?;
        for agent in migrated.agents.values() {
            h.agents.insert(agent.name.as_bytes(), to_json(&**agent))?;
        }
        h.cursors.clear()?;
        for (name, seq) in &migrated.cursors {
            h.cursors.insert(name.as_bytes(), &seq.to_be_bytes())?;
        }
        let canonical = |message: &mut ChatMessage| {
            let before = (message.from.clone(), message.to.clone(), message.mentions.clone());
            message.from.make_ascii_lowercase();
            if let Some(to) = &mut message.to {
                to.make_ascii_lowercase();
            }
            let mut mentions: Vec<String> = Vec::new();
            for m in message.mentions.drain(..).map(|m| m.to_ascii_lowercase()) {
                if !mentions.contains(&m) {
                    mentions.push(m);
                }
            }
            message.mentions = mentions;
            before != (message.from.clone(), message.to.clone(), message.mentions.clone())
        };
        // A message that changes is written again, and its entries point to the new record;
        // inbox entries move to the lowercase name (merging inboxes that differ in case).
        let rewrite = |index: ChatIndex<'_>, lowercase: bool| -> Result<(), StoreError> {
            let mut entries = BTreeMap::new();
            for entry in index.all() {
                let (mut name, seq, pos) = entry?;
                let mut message: ChatMessage = from_json(index.name(), &self.db.chat_records.read(pos)?)?;
                let pos = if canonical(&mut message) { self.db.chat_records.append(&to_json(&message))? } else { pos };
                if lowercase {
                    name.make_ascii_lowercase();
                }
                entries.insert((name, seq), pos);
            }
            index.clear()?;
            for ((name, seq), pos) in entries {
                index.append(&name, seq, pos)?;
            }
            Ok(())
        };
        rewrite(ChatIndex::new(&h.chat, "chat-index"), false)?;
        rewrite(ChatIndex::new(&h.inbox, "inbox-index"), true)?;
        h.meta.insert("views", &encode_views_meta(migrated)[..])?;
        h.meta.insert("agents", &migrated.head.to_be_bytes())?;
        let mut seen = self.lock_seen();
        seen.names.clear();
        seen.seq = migrated.head;
        Ok(())
    }

    fn values<T: serde::de::DeserializeOwned>(
        &self,
        name: &'static str,
        tree: &sled::Tree,
    ) -> Result<Vec<T>, StoreError> {
        tree.iter().values().map(|v| from_json(name, &v?)).collect()
    }

    /// Updates the views to `state` (the model after `events`), records idempotency
    /// outcomes and forgets expired ones. Not yet durable: the log's `sync` makes
    /// everything written so far durable.
    pub(crate) fn write(
        &self,
        events: &[Event],
        state: &Model,
        idempotency: &[(String, Vec<u8>)],
        forget: &[String],
    ) -> Result<(), StoreError> {
        let h = self.db.handles()?;
        for (key, record) in idempotency {
            h.idempotency.insert(key.as_bytes(), record.as_slice())?;
        }
        for key in forget {
            h.idempotency.remove(key.as_bytes())?;
        }
        self.write_views(events, state, false)
    }

    /// Undoes view writes that were never made durable (their sync failed): removes their
    /// messages and idempotency records, and restores every entity they touched to its
    /// value in `before` (the model before the first of them). The log discards its own
    /// part ([`super::Log::discard`]). Best effort: it runs when the disk is already
    /// failing.
    pub(crate) fn revert(&self, events: &[Event], before: &Model, idempotency: &[String]) -> Result<(), StoreError> {
        let h = self.db.handles()?;
        for key in idempotency {
            h.idempotency.remove(key.as_bytes())?;
        }
        let touched = Touched::of(events);
        let (chat, inbox) = (ChatIndex::new(&h.chat, "chat-index"), ChatIndex::new(&h.inbox, "inbox-index"));
        for message in &touched.messages {
            chat.remove(&message.channel, message.seq)?;
            for agent in message.recipients() {
                inbox.remove(agent, message.seq)?;
            }
        }
        self.write_views(&[], before, false)?;
        self.write_entities(&touched, before, true)?;
        for name in &touched.seen {
            match before.agents.get(*name) {
                Some(agent) => h.agents.insert(name.as_bytes(), to_json(&**agent))?,
                None => h.agents.remove(name.as_bytes())?,
            };
        }
        let mut seen = self.lock_seen();
        if seen.seq > before.head {
            seen.seq = before.head;
            h.meta.insert("agents", &before.head.to_be_bytes())?;
        }
        Ok(())
    }

    /// Writes the views of `events` (`state` is the model after them). `replaying` the log
    /// after a crash, a message the index holds keeps its record if that reached the disk,
    /// and is written again if not.
    fn write_views(&self, events: &[Event], state: &Model, replaying: bool) -> Result<(), StoreError> {
        let h = self.db.handles()?;
        let touched = Touched::of(events);
        if replaying {
            self.index_again(&h, &touched.messages)?;
        } else {
            self.index(&h, &touched.messages)?;
        }
        self.write_entities(&touched, state, false)?;
        if replaying {
            reindex(&h, &touched.tasks.keys().copied().collect())?;
        }
        self.lock_seen().names.extend(touched.seen.iter().map(|a| (*a).to_owned()));
        self.checkpoint_agents(state, false)?;
        // Last: the head the views now include.
        h.meta.insert("views", &encode_views_meta(state)[..])?;
        Ok(())
    }

    /// Writes a batch's messages to the chat files with one write, and indexes them with one
    /// insert per chunk of each channel and inbox they go to.
    fn index(&self, h: &Handles, messages: &[&ChatMessage]) -> Result<(), StoreError> {
        let records: Vec<Vec<u8>> = messages.iter().map(to_json).collect();
        let positions = self.db.chat_records.append_all(&records.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        let mut channels: BTreeMap<&str, Vec<(Seq, Pos)>> = BTreeMap::new();
        let mut inboxes: BTreeMap<&str, Vec<(Seq, Pos)>> = BTreeMap::new();
        for (message, at) in messages.iter().zip(positions) {
            channels.entry(message.channel.as_str()).or_default().push((message.seq, at));
            for agent in message.recipients() {
                inboxes.entry(agent).or_default().push((message.seq, at));
            }
        }
        let (chat, inbox) = (ChatIndex::new(&h.chat, "chat-index"), ChatIndex::new(&h.inbox, "inbox-index"));
        for (name, entries) in &channels {
            chat.extend(name, entries)?;
        }
        for (name, entries) in &inboxes {
            inbox.extend(name, entries)?;
        }
        Ok(())
    }

    /// Indexes messages the log holds again after a crash: one whose record reached the
    /// disk keeps it, one whose record did not (the chat files are synced at checkpoints)
    /// is written again.
    fn index_again(&self, h: &Handles, messages: &[&ChatMessage]) -> Result<(), StoreError> {
        let (chat, inbox) = (ChatIndex::new(&h.chat, "chat-index"), ChatIndex::new(&h.inbox, "inbox-index"));
        for message in messages {
            let kept = chat.find(&message.channel, message.seq)?.filter(|at| self.db.chat_records.read(*at).is_ok());
            let at = match kept {
                Some(at) => at,
                None => self.db.chat_records.append(&to_json(message))?,
            };
            chat.set(&message.channel, message.seq, at)?;
            for agent in message.recipients() {
                inbox.set(agent, message.seq, at)?;
            }
        }
        Ok(())
    }

    /// Writes the agents that acted since the last checkpoint, if one is due (or `force`),
    /// and records that the agents view is complete up to `state.head`.
    pub(super) fn checkpoint_agents(&self, state: &Model, force: bool) -> Result<(), StoreError> {
        let h = self.db.handles()?;
        let mut seen = self.lock_seen();
        if !force && seen.at.elapsed() < AGENTS_EVERY {
            return Ok(());
        }
        for name in std::mem::take(&mut seen.names) {
            match state.agents.get(&name) {
                Some(agent) => h.agents.insert(name.as_bytes(), to_json(&**agent))?,
                None => h.agents.remove(name.as_bytes())?,
            };
        }
        h.meta.insert("agents", &state.head.to_be_bytes())?;
        seen.at = std::time::Instant::now();
        seen.seq = state.head;
        Ok(())
    }

    /// Writes the current value (or absence) in `state` of every touched entity. When
    /// `undo`ing, `state` is the model before the events, and a task it let go of keeps
    /// what is stored (the sequencer restores every task a batch touches into that model
    /// first, so this does not happen).
    fn write_entities(&self, touched: &Touched<'_>, state: &Model, undo: bool) -> Result<(), StoreError> {
        let h = self.db.handles()?;
        for (id, carried) in &touched.tasks {
            // The model may have let go of a task finished in this very batch: then the
            // event carries its value. A task the model never had did not exist then.
            let task = match state.task(*id) {
                Some(task) => Some(&**task),
                None if state.evicted(*id) && undo => continue,
                None if state.evicted(*id) => Some(*carried),
                None => None,
            };
            store_task(&h, *id, task)?;
        }
        for name in &touched.agents {
            match state.agents.get(*name) {
                Some(agent) => h.agents.insert(name.as_bytes(), to_json(&**agent))?,
                None => h.agents.remove(name.as_bytes())?,
            };
        }
        for name in &touched.cursors {
            match state.cursors.get(*name) {
                Some(seq) => h.cursors.insert(name.as_bytes(), &seq.to_be_bytes())?,
                None => h.cursors.remove(name.as_bytes())?,
            };
        }
        for name in &touched.channels {
            match state.channels.get(*name) {
                Some(channel) => h.channels.insert(name.as_bytes(), to_json(channel))?,
                None => h.channels.remove(name.as_bytes())?,
            };
        }
        for id in &touched.files {
            match state.files.get(*id) {
                Some(held) => h.files.insert(id.0.to_be_bytes(), to_json(&held.reservation))?,
                None => h.files.remove(id.0.to_be_bytes())?,
            };
        }
        Ok(())
    }

    /// Every recorded idempotency outcome.
    pub(crate) fn idempotency_records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let h = self.db.handles()?;
        h.idempotency
            .iter()
            .map(|e| e.map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v.to_vec())).map_err(StoreError::from))
            .collect()
    }

    /// Writes the agents checkpoint and a checkpoint, flushes and syncs everything (at
    /// shutdown).
    pub(crate) fn close(&self, state: &Model) -> Result<(), StoreError> {
        self.checkpoint_agents(state, true)?;
        self.db.checkpoint(state.head)?;
        self.db.flush_and_sync()
    }
}

/// Rewrites every stored task with its agent names in their one spelling (lowercase), for
/// data dirs written before names were case-insensitive.
fn canonical_tasks(tasks: &sled::Tree) -> Result<(), StoreError> {
    for entry in tasks.iter() {
        let (key, value) = entry?;
        let mut task: Task = from_json("tasks", &value)?;
        let before = task.clone();
        for name in [&mut task.assignee, &mut task.created_by].into_iter().flatten() {
            name.make_ascii_lowercase();
        }
        if let Some(claim) = &mut task.claim {
            claim.agent.make_ascii_lowercase();
        }
        if task != before {
            tasks.insert(key, to_json(&task))?;
        }
    }
    Ok(())
}
