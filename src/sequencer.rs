//! The single writer: batch → decide → apply → write → sync → publish → reply.
//!
//! Two threads, one pipeline:
//!
//! - the **writer** owns the [`State`]. It takes every command that is waiting (up to
//!   [`MAX_BATCH`]), decides each against the state as the previous ones left it, stamps
//!   every event with the next `seq`, applies it, writes the batch to sled (not yet
//!   durable) and hands it to the syncer — then goes on with the next batch at once;
//! - the **syncer** takes every batch handed over so far, makes them durable with one
//!   flush + `fdatasync` (group commit), publishes the new state to readers, and only then
//!   answers the callers of those batches.
//!
//! So a batch is decided while the previous one is being synced, and no answer — not even
//! a refusal, which may depend on an earlier write of the same pipeline — leaves before
//! everything it depends on is on disk. If a sync fails, its batches and every batch
//! decided after them are answered `unavailable`, their writes are undone, and the writer
//! goes back to the last durable state before it takes another command.
//!
//! Readers never wait on the sequencer: they read the latest [`Snapshot`] from a `watch`
//! channel, which also wakes long-polls when the head moves.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use muster_protocol::{Event, Seq, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{Command, DomainError, Policy, Reply, State, apply, decide};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Stamped, Store, StoreError};

/// Commands that may wait for the writer. When the queue is full, callers wait (up to
/// [`SUBMIT_TIMEOUT`]): backpressure, not loss. 4096 is a few batches' worth at full speed.
pub const QUEUE: usize = 4096;
/// Most commands decided together. Bounds the latency a single batch adds and the memory
/// it holds.
pub const MAX_BATCH: usize = 1024;
/// Batches written but not yet handed to a sync: two keep the writer busy while the syncer
/// waits on the disk; more would only add latency.
const PIPELINE: usize = 2;
/// How long a caller waits for room in a full queue before it is told to retry.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// What readers see: the state as of the last durable batch.
pub struct Snapshot {
    /// The state; every event up to `state.head` is on disk.
    pub state: State,
    /// `GET /tasks` without filters, serialized once per snapshot on first request.
    pub board: OnceLock<Bytes>,
    /// The same, gzip-compressed, for clients that accept it.
    pub board_gzip: OnceLock<Bytes>,
}

impl Snapshot {
    fn new(state: State) -> Arc<Snapshot> {
        Arc::new(Snapshot { state, board: OnceLock::new(), board_gzip: OnceLock::new() })
    }
}

/// A write that could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The domain refused the command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The `Idempotency-Key` was already used for a different request.
    #[error("Idempotency-Key {0:?} was already used for a different request")]
    IdempotencyMismatch(String),
    /// Nothing was written: storage failed, the queue stayed full, or the broker is
    /// stopping. Safe to retry.
    #[error("{0}")]
    Unavailable(String),
    /// Nothing was written: the disk holding the data dir is (nearly) full. Safe to retry
    /// once space is freed.
    #[error("{0}")]
    DiskFull(String),
    /// The caller's token is another agent's.
    #[error("{0}")]
    Forbidden(String),
}

/// An accepted, durable command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The domain's reply.
    pub reply: Reply,
    /// Answered from an idempotency record, not executed again.
    pub replayed: bool,
}

/// An `Idempotency-Key` sent with a command: a retry with the same key and the same
/// command gets the recorded outcome instead of a second execution.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The key, as the client sent it.
    pub key: String,
}

/// A caller's reply channel and what it will be told once its batch is durable.
type Answer = (oneshot::Sender<Result<Committed, WriteError>>, Result<Committed, WriteError>);

// `Stop` is sent once; boxing the command instead would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Message {
    Command { cmd: Command, idempotency: Option<IdempotencyKey>, reply: oneshot::Sender<Result<Committed, WriteError>> },
    Stop,
}

/// The outcome recorded under an `Idempotency-Key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Recorded {
    at: Timestamp,
    fingerprint: u64,
    outcome: Result<Reply, DomainError>,
}

/// FNV-1a: a fingerprint that stays the same across restarts and Rust versions.
fn fingerprint(cmd: &Command) -> u64 {
    // Commands are plain data; serializing them cannot fail.
    let bytes = serde_json::to_vec(cmd).expect("command serializes");
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The handle transports use to submit commands.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Message>,
}

impl Writer {
    /// Submits a command and waits until it is durable (or refused).
    pub async fn submit(&self, mut cmd: Command, idempotency: Option<IdempotencyKey>) -> Result<Committed, WriteError> {
        // With tokens on, a caller acts only as its own agent.
        crate::auth::bind(&mut cmd).map_err(WriteError::Forbidden)?;
        let (reply, rx) = oneshot::channel();
        let message = Message::Command { cmd, idempotency, reply };
        match tokio::time::timeout(SUBMIT_TIMEOUT, self.tx.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(stopping()),
            Err(_) => {
                return Err(WriteError::Unavailable("broker overloaded: the write queue stayed full; retry".into()));
            }
        }
        rx.await.unwrap_or_else(|_| Err(stopping()))
    }

    /// Asks the sequencer to finish what is queued and stop.
    pub async fn stop(&self) {
        // Already stopped is fine.
        let _ = self.tx.send(Message::Stop).await;
    }
}

fn stopping() -> WriteError {
    WriteError::Unavailable("broker is shutting down; retry against the new instance".into())
}

/// The read side: the latest durable snapshot, and the hub that pushes durable events.
#[derive(Clone)]
pub struct Reader {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    hub: Arc<Hub>,
}

impl Reader {
    /// The state as of the last durable batch.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The hub: subscribe to receive events as they become durable.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// A receiver that wakes whenever a new snapshot is published.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }
}

/// A decided, written batch on its way to the disk.
struct Written {
    /// The state after the batch.
    state: State,
    events: Arc<[Stamped]>,
    answers: Vec<Answer>,
    /// Whether the batch wrote anything (a batch of refusals only needs to wait for the
    /// batches before it).
    wrote: bool,
}

/// What the writer and the syncer share.
struct Shared {
    /// Highest `seq` known durable.
    durable: AtomicU64,
    /// A sync failed: the writer must roll back before deciding anything else.
    failed: AtomicBool,
}

// `Recovered` is rare; batches are the traffic.
#[allow(clippy::large_enum_variant)]
enum ToSyncer {
    Batch(Written),
    /// The writer rolled back after a failure; batches after this are decided on the
    /// durable state again.
    Recovered,
}

/// The single writer. Build it with [`Sequencer::new`], run it with [`Sequencer::run`].
pub struct Sequencer {
    rx: mpsc::Receiver<Message>,
    state: State,
    policy: Policy,
    store: Arc<Store>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    hub: Arc<Hub>,
    recorded: HashMap<String, Recorded>,
    expiry: VecDeque<(Timestamp, String)>,
    last_now: Timestamp,
    metrics: Arc<Metrics>,
    /// Batches written but not known durable: what a rollback must undo.
    unsynced: VecDeque<Unsynced>,
    floor: DiskFloor,
    /// Since when the store has been failing (sled keeps an I/O error until it is
    /// reopened); `None` while it works.
    broken: Option<Instant>,
}

/// How often a failing store is reopened.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// Free space needed before a failing store is reopened: with less, the fresh instance
/// would fail at once (whatever `--min-free-mb` says).
const REOPEN_MIN_FREE: u64 = 4 << 20;

/// What undoing a written batch needs.
struct Unsynced {
    head: Seq,
    before: State,
    events: Arc<[Stamped]>,
    keys: Vec<String>,
}

impl Sequencer {
    /// Loads the state from `store` and returns the sequencer with its two handles.
    pub fn new(
        store: Arc<Store>,
        policy: Policy,
        min_free_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Result<(Sequencer, Writer, Reader), StoreError> {
        let state = store.load()?;
        let mut recorded = HashMap::new();
        let mut expiry = Vec::new();
        for (key, bytes) in store.idempotency_records()? {
            match serde_json::from_slice::<Recorded>(&bytes) {
                Ok(r) => {
                    expiry.push((r.at, key.clone()));
                    recorded.insert(key, r);
                }
                Err(error) => {
                    tracing::warn!(%key, %error, "dropping an unreadable idempotency record")
                }
            }
        }
        expiry.sort();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (snapshot, snapshot_rx) = watch::channel(Snapshot::new(state.clone()));
        let hub = Hub::new(state.head);
        let floor = DiskFloor { dir: store.dir().to_owned(), min_free: min_free_bytes };
        let sequencer = Sequencer {
            rx,
            state,
            policy,
            store,
            snapshot,
            hub: Arc::clone(&hub),
            recorded,
            expiry: expiry.into(),
            last_now: Timestamp::default(),
            metrics,
            unsynced: VecDeque::new(),
            floor,
            broken: None,
        };
        Ok((sequencer, Writer { tx }, Reader { snapshot: snapshot_rx, hub }))
    }

    /// Runs the writer on this (blocking) thread and the syncer on a second one, until a
    /// [`Writer::stop`] (or every `Writer` is gone); answers what was queued before the
    /// stop, then flushes.
    pub fn run(mut self) {
        let shared = Arc::new(Shared { durable: AtomicU64::new(self.state.head), failed: AtomicBool::new(false) });
        let (to_syncer, from_writer) = std_mpsc::sync_channel(PIPELINE);
        let syncer = Syncer {
            rx: from_writer,
            store: Arc::clone(&self.store),
            snapshot: self.snapshot.clone(),
            hub: Arc::clone(&self.hub),
            shared: Arc::clone(&shared),
            metrics: Arc::clone(&self.metrics),
        };
        let syncer = std::thread::Builder::new().name("muster-sync".into()).spawn(move || syncer.run());
        let syncer = match syncer {
            Ok(handle) => handle,
            Err(error) => {
                tracing::error!(%error, "cannot start the sync thread");
                return;
            }
        };

        while let Some(first) = self.rx.blocking_recv() {
            let (batch, stop) = self.take_batch(first);
            if shared.failed.load(Ordering::Acquire) {
                self.recover(&shared, &to_syncer);
            }
            self.unsynced.retain(|u| u.head > shared.durable.load(Ordering::Acquire));
            if self.broken.is_some_and(|since| since.elapsed() >= REOPEN_EVERY) && self.unsynced.is_empty() {
                self.reopen_store(&to_syncer);
            }
            if !batch.is_empty() {
                let written = self.process(batch);
                if to_syncer.send(ToSyncer::Batch(written)).is_err() {
                    tracing::error!("the sync thread is gone; stopping");
                    break;
                }
            }
            if stop {
                break;
            }
        }
        // Everything queued so far goes through; later submits get "shutting down".
        self.rx.close();
        drop(to_syncer);
        if syncer.join().is_err() {
            tracing::error!("the sync thread panicked");
        }
        match self.store.close(&self.state) {
            Ok(()) => tracing::info!(head = self.state.head, "store closed"),
            Err(error) => tracing::error!(%error, "final flush failed"),
        }
    }

    /// The first message and everything else waiting, up to [`MAX_BATCH`] commands; and
    /// whether a stop was asked for.
    fn take_batch(&mut self, first: Message) -> (Vec<Message>, bool) {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Stop => return (batch, true),
                command => batch.push(command),
            }
            if batch.len() < MAX_BATCH {
                next = self.rx.try_recv().ok();
            }
        }
        (batch, false)
    }

    /// Wall-clock time in milliseconds, never earlier than the last event's.
    fn now(&mut self) -> Timestamp {
        let now = Timestamp::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default();
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    /// Decides, applies and writes one batch.
    fn process(&mut self, batch: Vec<Message>) -> Written {
        let started = Instant::now();
        let written = self.decide_and_write(batch);
        self.metrics.write_seconds.observe(started.elapsed());
        written
    }

    fn decide_and_write(&mut self, batch: Vec<Message>) -> Written {
        let now = self.now();
        let before = self.state.clone();
        let mut stamped: Vec<Stamped> = Vec::new();
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        let mut answers: Vec<Answer> = Vec::new();
        let low_on_disk = self.floor.check();

        for message in batch {
            let Message::Command { cmd, idempotency, reply } = message else {
                continue;
            };
            let fp = idempotency.as_ref().map(|_| fingerprint(&cmd));
            if let (Some(key), Some(fp)) = (&idempotency, fp)
                && let Some(recorded) = self.recorded.get(&key.key)
            {
                let answer = if recorded.fingerprint == fp {
                    self.metrics.idempotent_replays.fetch_add(1, Ordering::Relaxed);
                    recorded.outcome.clone().map(|reply| Committed { reply, replayed: true }).map_err(WriteError::from)
                } else {
                    Err(WriteError::IdempotencyMismatch(key.key.clone()))
                };
                answers.push((reply, answer));
                continue;
            }
            if let Some(refusal) = low_on_disk.as_ref().filter(|_| !essential(&cmd)) {
                self.metrics.commands_failed.fetch_add(1, Ordering::Relaxed);
                answers.push((reply, Err(refusal.clone())));
                continue;
            }
            let internal = matches!(cmd, Command::Tick | Command::ResetConnections);
            let outcome = match decide(&self.state, &self.policy, &cmd, now) {
                Ok(decision) => {
                    for kind in decision.events {
                        let event = Event { seq: self.state.head + 1, at: now, kind };
                        apply(&mut self.state, &event);
                        stamped.push(Stamped::new(event));
                    }
                    Ok(decision.reply)
                }
                Err(refused) => Err(refused),
            };
            if let (Some(key), Some(fingerprint)) = (idempotency, fp) {
                let record = Recorded { at: now, fingerprint, outcome: outcome.clone() };
                // Plain data; serializing cannot fail.
                records.push((key.key.clone(), serde_json::to_vec(&record).expect("record serializes")));
                self.expiry.push_back((now, key.key.clone()));
                self.recorded.insert(key.key, record);
            }
            if !internal {
                let counter = if outcome.is_ok() { &self.metrics.commands_ok } else { &self.metrics.commands_refused };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            answers.push((reply, outcome.map(|reply| Committed { reply, replayed: false }).map_err(WriteError::from)));
        }

        let expired = self.expire_idempotency(now);
        let events: Arc<[Stamped]> = Arc::from(stamped);
        let wrote = !events.is_empty() || !records.is_empty() || !expired.is_empty();
        if wrote {
            let keys: Vec<String> = records.iter().map(|(k, _)| k.clone()).collect();
            if let Err(error) = self.store.write(&events, &self.state, &records, &expired) {
                // Nothing of this batch is answered as done; the syncer will not be asked
                // to make it durable. Undo what may have reached sled, and the state.
                tracing::error!(%error, "writing a batch failed; it is rolled back");
                self.broken.get_or_insert_with(Instant::now);
                if let Err(e) = self.store.revert(&events, &before, &keys) {
                    tracing::error!(error = %e, "rolling back the failed batch failed too");
                }
                self.forget(&keys);
                self.state = before;
                let failed = store_failed(&error, &self.floor.dir);
                let answers = answers.into_iter().map(|(reply, _)| (reply, Err(failed.clone()))).collect();
                return Written { state: self.state.clone(), events: Arc::from(Vec::new()), answers, wrote: false };
            }
            self.unsynced.push_back(Unsynced { head: self.state.head, before, events: Arc::clone(&events), keys });
        }
        Written { state: self.state.clone(), events, answers, wrote }
    }

    /// A sync failed: every batch not known durable has been (or will be) answered
    /// `unavailable` by the syncer. Undo them in the store, go back to the last durable
    /// state, and tell the syncer that what follows is decided on that state.
    fn recover(&mut self, shared: &Shared, to_syncer: &std_mpsc::SyncSender<ToSyncer>) {
        let durable = shared.durable.load(Ordering::Acquire);
        self.unsynced.retain(|u| u.head > durable);
        if let Some(oldest) = self.unsynced.front() {
            let before = oldest.before.clone();
            let events: Vec<Stamped> = self.unsynced.iter().flat_map(|u| u.events.iter().cloned()).collect();
            let keys: Vec<String> = self.unsynced.iter().flat_map(|u| u.keys.iter().cloned()).collect();
            if let Err(error) = self.store.revert(&events, &before, &keys) {
                tracing::error!(%error, "rolling back unsynced batches failed");
            }
            self.forget(&keys);
            tracing::warn!(events = events.len(), head = before.head, "rolled back to the last durable state");
            self.state = before;
        }
        self.unsynced.clear();
        self.broken.get_or_insert_with(Instant::now);
        shared.failed.store(false, Ordering::Release);
        // If the syncer is gone, the next send of a batch reports it.
        let _ = to_syncer.send(ToSyncer::Recovered);
    }

    /// The store has been failing: once there is space again, reopen it and reload the
    /// state from what is on disk, as after a crash. Events the failed batches left in the
    /// log (written, never acknowledged) are part of that state now, so they are published
    /// like any others: subscribers see no gap.
    fn reopen_store(&mut self, to_syncer: &std_mpsc::SyncSender<ToSyncer>) {
        self.broken = Some(Instant::now());
        let free = fs2::available_space(&self.floor.dir).unwrap_or(u64::MAX);
        if self.floor.check().is_some() || free < REOPEN_MIN_FREE {
            return;
        }
        let reloaded = self.store.reopen().and_then(|()| self.store.load()).and_then(|state| {
            let missing = if state.head > self.state.head {
                self.store.stamped(self.state.head, state.head)?
            } else {
                Vec::new()
            };
            Ok((state, missing))
        });
        match reloaded {
            Ok((state, missing)) => {
                if state.head < self.state.head {
                    tracing::error!(
                        disk = state.head,
                        memory = self.state.head,
                        "the reopened store is behind; using it"
                    );
                }
                tracing::info!(head = state.head, unacknowledged = missing.len(), "storage works again");
                self.state = state.clone();
                self.broken = None;
                if !missing.is_empty() {
                    let written = Written { state, events: Arc::from(missing), answers: Vec::new(), wrote: false };
                    let _ = to_syncer.send(ToSyncer::Batch(written));
                }
            }
            Err(error) => tracing::warn!(%error, "storage still failing; retrying in a second"),
        }
    }

    /// Forgets idempotency records that were never made durable.
    fn forget(&mut self, keys: &[String]) {
        for key in keys {
            self.recorded.remove(key);
        }
        self.expiry.retain(|(_, k)| !keys.contains(k));
    }

    /// Drops idempotency records older than [`IDEMPOTENCY_TTL`]; returns their keys.
    fn expire_idempotency(&mut self, now: Timestamp) -> Vec<String> {
        let mut expired = Vec::new();
        while let Some((at, _)) = self.expiry.front() {
            if (now - *at).to_std().unwrap_or_default() < IDEMPOTENCY_TTL {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_front() {
                self.recorded.remove(&key);
                expired.push(key);
            }
        }
        expired
    }
}

fn unavailable(error: &dyn std::fmt::Display) -> WriteError {
    WriteError::Unavailable(format!("write not stored: {error}; retry later"))
}

/// What a caller is told when storing its batch failed.
fn store_failed(error: &StoreError, dir: &Path) -> WriteError {
    if error.is_disk_full() {
        WriteError::DiskFull(format!(
            "write not stored: the disk holding {} is full; free space there and retry (reads still work)",
            dir.display()
        ))
    } else {
        unavailable(error)
    }
}

/// Writes are refused while the data dir's disk has less than `min_free` bytes free, so
/// that sled never runs out of space mid-write (its I/O errors are sticky until a restart).
/// Presence and lease bookkeeping still pass: they are small, and the margin is theirs.
struct DiskFloor {
    dir: PathBuf,
    min_free: u64,
}

impl DiskFloor {
    /// `Some(refusal)` when free space is below the floor.
    fn check(&self) -> Option<WriteError> {
        if self.min_free == 0 {
            return None;
        }
        // If the file system cannot say, do not refuse: sled's own errors still surface.
        let free = fs2::available_space(&self.dir).ok()?;
        (free < self.min_free).then(|| {
            WriteError::DiskFull(format!(
                "disk nearly full: {} MiB free where {} is, below the {} MiB floor (--min-free-mb); \
                 free space and retry (reads still work)",
                free >> 20,
                self.dir.display(),
                self.min_free >> 20
            ))
        })
    }
}

/// Commands that pass the disk floor: presence and leases, which must keep working.
fn essential(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Tick
            | Command::ResetConnections
            | Command::Connect { .. }
            | Command::Disconnect { .. }
            | Command::Heartbeat { .. }
    )
}

/// The second half of the pipeline: one sync for everything written so far.
struct Syncer {
    rx: std_mpsc::Receiver<ToSyncer>,
    store: Arc<Store>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    hub: Arc<Hub>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
}

impl Syncer {
    fn run(self) {
        // After a failed sync, batches are refused until the writer has rolled back.
        let mut failed = false;
        while let Ok(first) = self.rx.recv() {
            let mut batches = Vec::new();
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    ToSyncer::Recovered => failed = false,
                    ToSyncer::Batch(b) if failed => self.refuse(b, unavailable(&"an earlier write failed")),
                    ToSyncer::Batch(b) => batches.push(b),
                }
                next = self.rx.try_recv().ok();
            }
            if batches.is_empty() {
                continue;
            }
            let started = Instant::now();
            let result = if batches.iter().any(|b| b.wrote) { self.store.sync() } else { Ok(()) };
            self.metrics.commit_seconds.observe(started.elapsed());
            match result {
                Ok(()) => self.publish(batches),
                Err(error) => {
                    tracing::error!(%error, "sync failed; the unsynced batches are rolled back");
                    failed = true;
                    self.shared.failed.store(true, Ordering::Release);
                    for b in batches {
                        self.refuse(b, store_failed(&error, self.store.dir()));
                    }
                }
            }
        }
    }

    /// The batches are durable: show them to readers, then answer their callers.
    fn publish(&self, batches: Vec<Written>) {
        let Some(last) = batches.last() else { return };
        let head = last.state.head;
        let events: usize = batches.iter().map(|b| b.events.len()).sum();
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        self.metrics.events.fetch_add(events as u64, Ordering::Relaxed);
        self.shared.durable.store(head, Ordering::Release);
        if events > 0 {
            self.snapshot.send_replace(Snapshot::new(last.state.clone()));
            for b in &batches {
                self.hub.publish(&b.events);
            }
        }
        for b in batches {
            for (reply, answer) in b.answers {
                // The caller may have gone away (client disconnected); the write stands.
                let _ = reply.send(answer);
            }
        }
    }

    /// Answers every caller of a batch that will not be made durable.
    fn refuse(&self, batch: Written, error: WriteError) {
        for (reply, _) in batch.answers {
            self.metrics.commands_failed.fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(Err(error.clone()));
        }
    }
}
