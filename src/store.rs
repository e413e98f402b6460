//! The durable store: the event log and the materialized views, in sled.
//!
//! Trees:
//! - `log`: one entry per committed batch: the `seq` of its first event (big-endian) →
//!   for each event `u32 length, topics \n event-json` (the exact bytes sent on the wire).
//!   One insert per batch keeps the log's share of the write path small;
//! - `tasks`, `agents`, `cursors`, `channels`: the current value of each entity (views);
//! - `chat`: `channel \0 seq` → message, `inbox`: `agent \0 seq` → message;
//! - `idempotency`: `Idempotency-Key` → the recorded outcome;
//! - `meta`: the data dir's `epoch`, the schema version, and `views`: the `head` the views
//!   include and the last message number.
//!
//! [`Store::commit`] writes one batch (log first, then views, then `head`), flushes sled
//! and then `fdatasync`s its files: sled 0.34's flush only calls `sync_file_range`, which
//! survives a process crash but not a power loss. Only after `commit` returns may a write be
//! acknowledged. Startup loads the views, not the log, and replays only the log entries the
//! views may be missing.
//!
//! All methods block; async callers run them on the blocking pool.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use muster_protocol::{Agent, ChatMessage, Event, EventKind, Seq, Task, TaskId};

use crate::core::{Channel, State, apply};

/// How often agents that only acted (their `lastSeenAt` moved) are written: see
/// [`Checkpoint`]. A second bounds the log replayed after a crash to a second of writes.
const AGENTS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Version of the layout of the trees. Bumped on incompatible change.
const SCHEMA: u64 = 1;
/// Most log entries one `trim` removes: keeps a first trim of a long log from holding the
/// blocking pool for long; the next round continues.
pub const TRIM_BATCH: u64 = 100_000;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data dir.
    #[error("data dir {0} is in use by another muster process (stop it, or pass --data-dir to use another directory)")]
    Locked(PathBuf),
    /// The data dir was written by a newer Muster.
    #[error("data dir {dir} has schema version {found}, newer than this muster understands ({SCHEMA}); upgrade muster")]
    Schema {
        /// The data dir.
        dir: PathBuf,
        /// The version found.
        found: u64,
    },
    /// sled failed.
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A file operation failed.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The database is being reopened after an I/O error (see [`Store::reopen`]).
    #[error("storage is being reopened after an I/O error; retry")]
    Reopening,
    /// A stored value does not decode: the data dir is damaged.
    #[error("corrupt value in tree {tree}: {error}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// The decode error.
        error: String,
    },
}

impl StoreError {
    /// Whether the disk is full (`ENOSPC`), rather than broken.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            StoreError::Sled(sled::Error::Io(e)) | StoreError::Io(e) => e,
            _ => return false,
        };
        io.kind() == std::io::ErrorKind::StorageFull
    }
}

/// An event as it goes to disk and to subscribers: serialized once.
#[derive(Debug, Clone)]
pub struct Stamped {
    /// The event.
    pub event: Event,
    /// The topics it is published on (`EventKind::topics`).
    pub topics: Vec<String>,
    /// The JSON text of the event.
    pub json: Bytes,
}

impl Stamped {
    /// Serializes an event once, for the log and every subscriber.
    pub fn new(event: Event) -> Stamped {
        let topics = event.kind.topics();
        // Serializing our own types to a Vec cannot fail: no maps with non-string keys,
        // no failing Serialize impls.
        let json = serde_json::to_vec(&event).expect("event serializes");
        Stamped { event, topics, json: Bytes::from(json) }
    }
}

/// A stored event, read back from the log.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// Its `seq`.
    pub seq: Seq,
    /// Its topics.
    pub topics: Vec<String>,
    /// Its JSON text, exactly as first sent.
    pub json: Bytes,
}

impl LoggedEvent {
    /// Whether a subscriber to `topics` receives this event (`*` receives everything).
    pub fn matches(&self, topics: &[String]) -> bool {
        topics.iter().any(|t| t == "*" || self.topics.contains(t))
    }
}

/// The entities a batch of events touched, each written once per batch.
#[derive(Default)]
struct Touched<'a> {
    tasks: BTreeSet<TaskId>,
    /// Agents whose record changed (`presence.changed`): written with the batch.
    agents: BTreeSet<&'a str>,
    /// Agents that only acted (their `lastSeenAt` moved): written at the next checkpoint.
    seen: BTreeSet<&'a str>,
    cursors: BTreeSet<&'a str>,
    channels: BTreeSet<&'a str>,
    messages: Vec<&'a ChatMessage>,
}

impl<'a> Touched<'a> {
    fn of(events: &'a [Stamped]) -> Touched<'a> {
        let mut t = Touched::default();
        for s in events {
            let kind = &s.event.kind;
            if let Some(task) = kind.task() {
                t.tasks.insert(task.id);
            }
            if let Some(actor) = crate::core::actor(kind) {
                t.seen.insert(actor);
            }
            match kind {
                EventKind::PresenceChanged { agent } => {
                    t.agents.insert(&agent.name);
                }
                EventKind::ChatMessage { message } => {
                    t.channels.insert(&message.channel);
                    t.messages.push(message);
                }
                EventKind::InboxAcked { agent, .. } => {
                    t.cursors.insert(agent);
                }
                _ => {}
            }
        }
        t.seen.retain(|a| !t.agents.contains(a));
        t
    }
}

fn key_chat(channel: &str, seq: Seq) -> Vec<u8> {
    let mut k = Vec::with_capacity(channel.len() + 9);
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

fn be(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our view types serialize infallibly (see `Stamped::new`).
    serde_json::to_vec(value).expect("view serializes")
}

fn from_json<T: serde::de::DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { tree, error: e.to_string() })
}

/// Encodes a committed batch as one log value.
fn encode_batch(events: &[Stamped]) -> Vec<u8> {
    let len: usize = events.iter().map(|s| s.json.len() + 64).sum();
    let mut value = Vec::with_capacity(len);
    for s in events {
        let topics = s.topics.join(" ");
        let record = topics.len() + 1 + s.json.len();
        // An event is far below 4 GiB (bodies are limited to 64 KiB).
        value.extend_from_slice(&u32::try_from(record).unwrap_or(u32::MAX).to_be_bytes());
        value.extend_from_slice(topics.as_bytes());
        value.push(b'\n');
        value.extend_from_slice(&s.json);
    }
    value
}

/// Decodes a log value whose first event has `seq` = `first`.
fn decode_batch(first: Seq, value: &[u8]) -> Result<Vec<LoggedEvent>, StoreError> {
    let corrupt = |error: String| StoreError::Corrupt { tree: "log", error };
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let seq = first + out.len() as Seq;
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(|| corrupt(format!("entry {seq} is truncated")))?;
        let len = u32::from_be_bytes(*len) as usize;
        let record = tail.get(..len).ok_or_else(|| corrupt(format!("entry {seq} is truncated")))?;
        let newline =
            record.iter().position(|b| *b == b'\n').ok_or_else(|| corrupt(format!("entry {seq} has no topic line")))?;
        let topics = std::str::from_utf8(&record[..newline])
            .map_err(|e| corrupt(e.to_string()))?
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        out.push(LoggedEvent { seq, topics, json: Bytes::copy_from_slice(&record[newline + 1..]) });
        rest = &tail[len..];
    }
    Ok(out)
}

/// `head` and the last message number, as stored under `meta/views`.
fn encode_views_meta(head: Seq, last_message: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&head.to_be_bytes());
    v[8..].copy_from_slice(&last_message.to_be_bytes());
    v
}

/// The sled database, reopened whole after an I/O error (see [`Store::reopen`]).
pub struct Store {
    dir: PathBuf,
    /// `None` only while [`Store::reopen`] swaps the database.
    handles: RwLock<Option<Arc<Handles>>>,
    /// Largest blob file already synced (sled names blobs by log position).
    blobs_synced: Mutex<u64>,
    epoch: String,
    /// Agents whose `lastSeenAt` moved since the last agents checkpoint.
    seen: Mutex<Checkpoint>,
}

/// The open database: its trees, and a second handle on its data file, for `fdatasync`.
struct Handles {
    db: sled::Db,
    log: sled::Tree,
    tasks: sled::Tree,
    agents: sled::Tree,
    cursors: sled::Tree,
    channels: sled::Tree,
    chat: sled::Tree,
    inbox: sled::Tree,
    idempotency: sled::Tree,
    meta: sled::Tree,
    db_file: File,
}

impl Handles {
    fn open(dir: &Path) -> Result<Handles, StoreError> {
        let db = sled::Config::new().path(dir).open().map_err(|e| match e {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                StoreError::Locked(dir.to_owned())
            }
            other => StoreError::Sled(other),
        })?;
        Ok(Handles {
            db_file: File::open(dir.join("db"))?,
            log: db.open_tree("log")?,
            tasks: db.open_tree("tasks")?,
            agents: db.open_tree("agents")?,
            cursors: db.open_tree("cursors")?,
            channels: db.open_tree("channels")?,
            chat: db.open_tree("chat")?,
            inbox: db.open_tree("inbox")?,
            idempotency: db.open_tree("idempotency")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }
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
    at: std::time::Instant,
    /// `seq` up to which the agents view is complete.
    seq: Seq,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let handles = Handles::open(dir)?;
        // The directory entries of sled's files must be durable too.
        File::open(dir)?.sync_all()?;
        let (db, meta, db_file) = (&handles.db, &handles.meta, &handles.db_file);
        if let Some(found) = meta.get("schema")?.and_then(|v| be(&v))
            && found > SCHEMA
        {
            return Err(StoreError::Schema { dir: dir.to_owned(), found });
        }
        let epoch = match meta.get("epoch")? {
            Some(epoch) => String::from_utf8_lossy(&epoch).into_owned(),
            None => {
                let epoch = format!("{:016x}", rand::random::<u64>());
                meta.insert("epoch", epoch.as_bytes())?;
                meta.insert("schema", &SCHEMA.to_be_bytes())?;
                db.flush()?;
                db_file.sync_data()?;
                epoch
            }
        };
        Ok(Store {
            dir: dir.to_owned(),
            handles: RwLock::new(Some(Arc::new(handles))),
            blobs_synced: Mutex::new(0),
            epoch,
            seen: Mutex::new(Checkpoint { names: BTreeSet::new(), at: std::time::Instant::now(), seq: 0 }),
        })
    }

    fn handles(&self) -> Result<Arc<Handles>, StoreError> {
        // A poisoned lock only means a panic elsewhere; the handles are still whole.
        let handles = self.handles.read().unwrap_or_else(|p| p.into_inner());
        handles.clone().ok_or(StoreError::Reopening)
    }

    /// Closes and reopens the database. sled keeps the first I/O error it meets (a full
    /// disk) and returns it for every later operation; a fresh instance reads what is on
    /// disk and works again. Readers hold the handles only for one call: this waits a
    /// moment for them to let go. Follow it with [`Store::load`].
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.handles.write().unwrap_or_else(|p| p.into_inner());
        // (None: an earlier reopen closed the database but could not open it again.)
        if let Some(mut old) = slot.take() {
            let mut waited = 0;
            let handles = loop {
                match Arc::try_unwrap(old) {
                    Ok(handles) => break handles,
                    Err(still_shared) if waited < 100 => {
                        old = still_shared;
                        waited += 1;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(still_shared) => {
                        *slot = Some(still_shared);
                        return Err(StoreError::Reopening);
                    }
                }
            };
            // Dropping the last handle closes sled and releases its lock on the directory.
            drop(handles);
        }
        match Handles::open(&self.dir) {
            Ok(fresh) => {
                *slot = Some(Arc::new(fresh));
                *self.blobs_synced.lock().unwrap_or_else(|p| p.into_inner()) = 0;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The random id this data dir got when it was created. A client that resumes with
    /// another epoch is talking to a different history.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Loads the state: the views, then the log entries after the `head` they include.
    ///
    /// A crash can leave log entries that were written but never acknowledged; they are
    /// kept if they follow the head without a gap (a prefix of the last batch), and
    /// anything after a gap is removed, so `seq` stays gap-free.
    pub fn load(&self) -> Result<State, StoreError> {
        let h = self.handles()?;
        let (head, last_message) = match h.meta.get("views")? {
            Some(v) if v.len() == 16 => (be(&v[..8]).unwrap_or(0), be(&v[8..]).unwrap_or(0)),
            _ => (0, 0),
        };
        let tasks = self.values::<Task>("tasks", &h.tasks)?;
        let agents = self.values::<Agent>("agents", &h.agents)?;
        let channels = self.values::<Channel>("channels", &h.channels)?;
        let mut cursors = Vec::new();
        for entry in h.cursors.iter() {
            let (k, v) = entry?;
            cursors.push((String::from_utf8_lossy(&k).into_owned(), be(&v).unwrap_or(0)));
        }
        let mut state = State::from_views(head, last_message, tasks, agents, cursors, channels);

        // Re-apply from the agents checkpoint (idempotent for what the views hold) to
        // restore `lastSeenAt`, and apply what the views do not hold yet.
        let agents_seq = h.meta.get("agents")?.and_then(|v| be(&v)).unwrap_or(0).min(head);
        let mut expected = agents_seq + 1;
        let mut replayed = Vec::new();
        let start = self.containing(expected)?;
        for entry in h.log.range(start.to_be_bytes()..) {
            let (k, v) = entry?;
            let first = be(&k).unwrap_or(0);
            if first > expected && expected <= head && first <= head + 1 {
                // Trimmed before the checkpoint (retention): restore from what is left.
                expected = first;
            } else if first > expected {
                tracing::warn!(first, expected, "log has a gap after a crash; dropping the unacknowledged tail");
                h.log.remove(k)?;
                continue;
            }
            let from = expected;
            for logged in decode_batch(first, &v)?.into_iter().filter(|l| l.seq >= from) {
                let event: Event = from_json("log", &logged.json)?;
                apply(&mut state, &event);
                replayed.push(Stamped { event, topics: logged.topics, json: logged.json });
                expected += 1;
            }
        }
        if !replayed.is_empty() {
            let new = replayed.iter().filter(|s| s.event.seq > head).count();
            tracing::info!(replayed = replayed.len(), new, "re-applied the log since the last checkpoint");
            self.write_views(&replayed, &state)?;
        }
        self.checkpoint_agents(&state, true)?;
        self.sync()?;
        Ok(state)
    }

    fn values<T: serde::de::DeserializeOwned>(
        &self,
        name: &'static str,
        tree: &sled::Tree,
    ) -> Result<Vec<T>, StoreError> {
        tree.iter().values().map(|v| from_json(name, &v?)).collect()
    }

    /// Appends a batch of events and updates the views to `state` (the state after the
    /// batch), records idempotency outcomes and forgets expired ones. Not yet durable:
    /// [`Store::sync`] makes everything written so far durable.
    pub fn write(
        &self,
        events: &[Stamped],
        state: &State,
        idempotency: &[(String, Vec<u8>)],
        forget: &[String],
    ) -> Result<(), StoreError> {
        let h = self.handles()?;
        if let Some(first) = events.first() {
            h.log.insert(first.event.seq.to_be_bytes(), encode_batch(events))?;
        }
        for (key, record) in idempotency {
            h.idempotency.insert(key.as_bytes(), record.as_slice())?;
        }
        for key in forget {
            h.idempotency.remove(key.as_bytes())?;
        }
        self.write_views(events, state)
    }

    /// [`Store::write`], then [`Store::sync`].
    pub fn commit(
        &self,
        events: &[Stamped],
        state: &State,
        idempotency: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        self.write(events, state, idempotency, &[])?;
        self.sync()
    }

    /// Undoes writes that were never made durable (their sync failed): removes their log
    /// entries, messages and idempotency records, and restores every entity they touched
    /// to its value in `before` (the state before the first of them). Best effort: it runs
    /// when the disk is already failing.
    pub fn revert(&self, events: &[Stamped], before: &State, idempotency: &[String]) -> Result<(), StoreError> {
        let h = self.handles()?;
        if let (Some(first), Some(last)) = (events.first(), events.last()) {
            let keys: Vec<_> = h
                .log
                .range(first.event.seq.to_be_bytes()..=last.event.seq.to_be_bytes())
                .keys()
                .collect::<Result<_, _>>()?;
            for key in keys {
                h.log.remove(key)?;
            }
        }
        for key in idempotency {
            h.idempotency.remove(key.as_bytes())?;
        }
        let touched = Touched::of(events);
        for message in &touched.messages {
            h.chat.remove(key_chat(&message.channel, message.seq))?;
            for agent in message.recipients() {
                h.inbox.remove(key_chat(agent, message.seq))?;
            }
        }
        self.write_views(&[], before)?;
        self.write_entities(&touched, before)?;
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

    fn write_views(&self, events: &[Stamped], state: &State) -> Result<(), StoreError> {
        let h = self.handles()?;
        let touched = Touched::of(events);
        for message in &touched.messages {
            let json = to_json(message);
            h.chat.insert(key_chat(&message.channel, message.seq), json.as_slice())?;
            for agent in message.recipients() {
                h.inbox.insert(key_chat(agent, message.seq), json.as_slice())?;
            }
        }
        self.write_entities(&touched, state)?;
        self.lock_seen().names.extend(touched.seen.iter().map(|a| (*a).to_owned()));
        self.checkpoint_agents(state, false)?;
        // Last: the head the views now include.
        h.meta.insert("views", &encode_views_meta(state.head, state.last_message))?;
        Ok(())
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, Checkpoint> {
        // A poisoned lock only means a writer panicked; the set is still valid.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the agents that acted since the last checkpoint, if one is due (or `force`),
    /// and records that the agents view is complete up to `state.head`.
    fn checkpoint_agents(&self, state: &State, force: bool) -> Result<(), StoreError> {
        let h = self.handles()?;
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

    /// Writes the current value (or absence) in `state` of every touched entity.
    fn write_entities(&self, touched: &Touched<'_>, state: &State) -> Result<(), StoreError> {
        let h = self.handles()?;
        for id in &touched.tasks {
            match state.task(*id) {
                Some(task) => h.tasks.insert(id.0.to_be_bytes(), to_json(&**task))?,
                None => h.tasks.remove(id.0.to_be_bytes())?,
            };
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
        Ok(())
    }

    /// Makes everything written so far durable: flushes sled, then `fdatasync`s its data
    /// file and any new blob files.
    pub fn sync(&self) -> Result<(), StoreError> {
        let h = self.handles()?;
        h.db.flush()?;
        h.db_file.sync_data()?;
        self.sync_blobs()
    }

    /// sled writes values too large for a log segment (about 128 KiB) to separate blob
    /// files and never syncs them. Our values are far smaller, but a full leaf node can
    /// grow past that size, so new blob files are synced too.
    fn sync_blobs(&self) -> Result<(), StoreError> {
        let dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // A poisoned lock only means another sync panicked; the number is still valid.
        let mut synced = self.blobs_synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut newest = *synced;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if lsn > *synced {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_data()?,
                    // sled may have collected it meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                newest = newest.max(lsn);
            }
        }
        if newest > *synced {
            File::open(&dir)?.sync_all()?;
            *synced = newest;
        }
        Ok(())
    }

    /// The key of the log entry that holds `seq` (or would: `seq` itself).
    fn containing(&self, seq: Seq) -> Result<Seq, StoreError> {
        let h = self.handles()?;
        Ok(h.log.range(..=seq.to_be_bytes()).next_back().transpose()?.and_then(|(k, _)| be(&k)).unwrap_or(seq))
    }

    /// Every logged event with `since < seq <= up_to`, ready to publish.
    pub fn stamped(&self, since: Seq, up_to: Seq) -> Result<Vec<Stamped>, StoreError> {
        let logged = self.events(since, up_to, &["*".to_owned()], usize::MAX)?;
        logged
            .into_iter()
            .map(|l| Ok(Stamped { event: from_json("log", &l.json)?, topics: l.topics, json: l.json }))
            .collect()
    }

    /// Up to `limit` events with `since < seq <= up_to` that match `topics`, oldest first.
    /// `up_to` is the durable head: nothing beyond it is shown to anyone.
    pub fn events(
        &self,
        since: Seq,
        up_to: Seq,
        topics: &[String],
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        self.events_scanned(since, up_to, topics, limit).map(|(events, _)| events)
    }

    /// [`Store::events`], and the `seq` up to which the log was examined: `up_to`, or the
    /// last event returned when `limit` was reached. The next page starts after it.
    pub fn events_scanned(
        &self,
        since: Seq,
        up_to: Seq,
        topics: &[String],
        limit: usize,
    ) -> Result<(Vec<LoggedEvent>, Seq), StoreError> {
        let h = self.handles()?;
        let mut out = Vec::new();
        if since >= up_to {
            return Ok((out, up_to.max(since)));
        }
        let start = self.containing(since + 1)?;
        for entry in h.log.range(start.to_be_bytes()..) {
            let (k, v) = entry?;
            let first = be(&k).unwrap_or(0);
            if first > up_to {
                break;
            }
            for logged in decode_batch(first, &v)? {
                if logged.seq > up_to {
                    return Ok((out, up_to));
                }
                if logged.seq > since && logged.matches(topics) {
                    let seq = logged.seq;
                    out.push(logged);
                    if out.len() >= limit {
                        return Ok((out, seq));
                    }
                }
            }
        }
        Ok((out, up_to))
    }

    /// The oldest `seq` still in the log (the head + 1 when the log is empty).
    pub fn first_retained(&self, head: Seq) -> Result<Seq, StoreError> {
        let h = self.handles()?;
        Ok(h.log.first()?.and_then(|(k, _)| be(&k)).unwrap_or(head + 1))
    }

    /// Trims the log to its retention: removes the oldest entries (whole batches) whose
    /// events all have `seq <= head - keep` or are all older than `older_than`, at most
    /// [`TRIM_BATCH`] events per call, never past `head`. The views do not depend on the
    /// log, so no state is lost.
    pub fn trim(&self, head: Seq, keep: u64, older_than: muster_protocol::Timestamp) -> Result<u64, StoreError> {
        let h = self.handles()?;
        #[derive(serde::Deserialize)]
        struct At {
            at: muster_protocol::Timestamp,
        }
        // The log after the agents checkpoint is needed to restore `lastSeenAt`.
        let head = head.min(self.lock_seen().seq);
        let by_count = head.saturating_sub(keep);
        let mut removed = 0;
        for entry in h.log.iter() {
            let (k, v) = entry?;
            let batch = decode_batch(be(&k).unwrap_or(0), &v)?;
            let Some(last) = batch.last() else {
                h.log.remove(k)?;
                continue;
            };
            if last.seq > head || removed >= TRIM_BATCH {
                break;
            }
            if last.seq > by_count {
                let at: At = from_json("log", &last.json)?;
                if at.at >= older_than {
                    break;
                }
            }
            h.log.remove(k)?;
            removed += batch.len() as u64;
        }
        Ok(removed)
    }

    /// Messages of a channel as JSON, oldest first: those after `since` (the first
    /// `limit`), or else the newest `limit` before `before` (or at all).
    pub fn messages(
        &self,
        channel: &str,
        since: Option<Seq>,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let h = self.handles()?;
        Self::range(&h.chat, channel, since, before, limit)
    }

    /// Inbox entries of an agent as JSON, oldest first, with the same paging as
    /// [`Store::messages`].
    pub fn inbox(
        &self,
        agent: &str,
        since: Option<Seq>,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let h = self.handles()?;
        Self::range(&h.inbox, agent, since, before, limit)
    }

    /// Number of inbox entries of an agent after `seq`.
    pub fn inbox_count_after(&self, agent: &str, seq: Seq) -> Result<u64, StoreError> {
        let h = self.handles()?;
        let mut n = 0;
        for key in h.inbox.range(key_chat(agent, seq.saturating_add(1))..key_chat(agent, u64::MAX)).keys() {
            key?;
            n += 1;
        }
        Ok(n)
    }

    fn range(
        tree: &sled::Tree,
        name: &str,
        since: Option<Seq>,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let start = key_chat(name, since.map_or(0, |s| s.saturating_add(1)));
        let end = match before {
            Some(b) => key_chat(name, b),
            None => {
                let mut end = prefix(name);
                // Exclusive upper bound: every key with this prefix sorts below it.
                end.extend_from_slice(&[0xff; 9]);
                end
            }
        };
        let iter = tree.range(start..end).values();
        let mut out: Vec<Bytes> = if since.is_some() {
            iter.take(limit).map(|v| v.map(|v| Bytes::copy_from_slice(&v))).collect::<Result<_, _>>()?
        } else {
            let mut newest =
                iter.rev().take(limit).map(|v| v.map(|v| Bytes::copy_from_slice(&v))).collect::<Result<Vec<_>, _>>()?;
            newest.reverse();
            newest
        };
        out.shrink_to_fit();
        Ok(out)
    }

    /// Every recorded idempotency outcome.
    pub fn idempotency_records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let h = self.handles()?;
        h.idempotency
            .iter()
            .map(|e| e.map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v.to_vec())).map_err(StoreError::from))
            .collect()
    }

    /// Writes the agents checkpoint, flushes and syncs everything (at shutdown).
    pub fn close(&self, state: &State) -> Result<(), StoreError> {
        self.checkpoint_agents(state, true)?;
        self.sync()
    }

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.handles().map_or(0, |h| h.db.size_on_disk().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use muster_protocol::{CreateTask, Event};

    use super::*;
    use crate::core::{Command, Policy, decide};

    /// Commits `n` task creations, one event per batch, the way the sequencer does.
    /// `with_agents`: the tasks are created by agents (an event more for each new agent).
    fn create_tasks(store: &Store, state: &mut State, n: usize, at: &str, with_agents: bool) {
        let now: muster_protocol::Timestamp = at.parse().unwrap();
        for i in 0..n {
            let cmd = Command::CreateTask(CreateTask {
                title: format!("t{i}"),
                agent: with_agents.then(|| format!("planner-{}", i % 3)),
                ..Default::default()
            });
            let decision = decide(state, &Policy::default(), &cmd, now).unwrap();
            let mut stamped = Vec::new();
            for kind in decision.events {
                let event = Event { seq: state.head + 1, at: now, kind };
                apply(state, &event);
                stamped.push(Stamped::new(event));
            }
            store.commit(&stamped, state, &[]).unwrap();
        }
    }

    #[test]
    fn a_reopened_store_has_the_same_state_and_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let (epoch, state) = {
            let store = Store::open(dir.path()).unwrap();
            let mut state = store.load().unwrap();
            create_tasks(&store, &mut state, 5, "2026-11-25T10:00:00Z", true);
            // Later contact by the same agents: only their lastSeenAt moves, which is not
            // written until the next agents checkpoint. Dropping the store without
            // `close` is a crash: load must restore it from the log.
            create_tasks(&store, &mut state, 3, "2026-11-25T10:02:00Z", true);
            assert!(!store.lock_seen().names.is_empty(), "the test needs a pending checkpoint");
            (store.epoch().to_owned(), state)
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.epoch(), epoch);
        assert_eq!(store.load().unwrap(), state);
    }

    #[test]
    fn a_second_broker_on_the_same_dir_gets_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        assert!(err.to_string().contains("in use by another muster process"), "{err}");
    }

    #[test]
    fn trimming_keeps_the_newest_events_and_never_passes_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut state = store.load().unwrap();
        create_tasks(&store, &mut state, 6, "2026-11-01T10:00:00Z", false);
        create_tasks(&store, &mut state, 4, "2026-11-25T10:00:00Z", false);
        let recent: muster_protocol::Timestamp = "2026-11-20T00:00:00Z".parse().unwrap();
        let all = vec!["*".to_owned()];
        // The log is never trimmed past the agents checkpoint; make it current.
        store.checkpoint_agents(&state, true).unwrap();

        // By count: keep the newest 8.
        assert_eq!(store.trim(10, 8, "2000-01-01T00:00:00Z".parse().unwrap()).unwrap(), 2);
        assert_eq!(store.first_retained(10).unwrap(), 3);
        // By age: the first six are older than the cut.
        assert_eq!(store.trim(10, 1000, recent).unwrap(), 4);
        assert_eq!(store.first_retained(10).unwrap(), 7);
        let left: Vec<Seq> = store.events(0, 10, &all, 100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(left, [7, 8, 9, 10]);
        // Never past the head, whatever the retention says.
        assert_eq!(store.trim(8, 0, "2100-01-01T00:00:00Z".parse().unwrap()).unwrap(), 2);
        assert_eq!(store.first_retained(10).unwrap(), 9);
        // The views do not depend on the log.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), state);
    }

    #[test]
    fn log_entries_after_a_gap_are_dropped_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut state = store.load().unwrap();
        create_tasks(&store, &mut state, 3, "2026-11-25T10:00:00Z", false);
        // As a crash could leave it: the views at 3, the log holding 4 (a batch that was
        // written but not acknowledged) and 6 (after a hole).
        let mut ahead = state.clone();
        let mut tail = Vec::new();
        for seq in [4, 5] {
            let cmd = Command::CreateTask(CreateTask { title: format!("t{seq}"), ..Default::default() });
            let now = "2026-11-25T10:00:01Z".parse().unwrap();
            let kind = decide(&ahead, &Policy::default(), &cmd, now).unwrap().events.remove(0);
            let event = Event { seq, at: now, kind };
            apply(&mut ahead, &event);
            tail.push(Stamped::new(event));
        }
        store.handles().unwrap().log.insert(4u64.to_be_bytes(), encode_batch(&tail[..1])).unwrap();
        let mut six = tail[1].clone();
        six.event.seq = 6;
        store.handles().unwrap().log.insert(6u64.to_be_bytes(), encode_batch(&[six])).unwrap();
        store.sync().unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.head, 4, "the contiguous entry is kept, the one after the gap is not");
        assert_eq!(loaded.tasks.len(), 4);
        assert_eq!(store.events(0, 10, &["*".to_owned()], 100).unwrap().len(), 4);
    }
}
