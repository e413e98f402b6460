//! The writer thread: it owns the [`Model`], takes every command that is waiting (up to
//! [`MAX_BATCH`]), decides each against the model as the previous ones left it, stamps
//! every event with the next `seq`, applies it, appends the batch to the log and writes the
//! views (not yet durable), and hands it to the syncer — then goes on with the next batch.
//! If a sync fails it rolls the unsynced batches back; if the store keeps failing, it
//! reopens it once there is space again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use muster_protocol::{Event, Seq, Timestamp, Topic};
use tokio::sync::{mpsc, watch};

use super::disk::{DiskFloor, essential, store_failed};
use super::handles::{Committed, Exported, Message, QUEUE, Reader, Snapshot, WriteError, Writer};
use super::idempotency::{Idempotency, fingerprint};
use super::syncer::{Answer, Shared, Syncer, ToSyncer, Written};
use crate::clock::Clock;
use crate::core::{Command, Model, Policy, apply, decide};
use crate::frame::Frame;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Archive, Carried, CommandEnd, Db, DiskLog, Log, Store, StoreError, Views};

/// Most commands decided together. Bounds the latency a single batch adds and the memory
/// it holds.
const MAX_BATCH: usize = 1024;
/// Batches written but not yet handed to a sync: two keep the writer busy while the syncer
/// waits on the disk; more would only add latency.
const PIPELINE: usize = 2;
/// How long an export waits for the batches before it to be durable.
const EXPORT_WAIT: Duration = Duration::from_secs(10);
/// How often a failing store is reopened.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// Free space needed before a failing store is reopened: with less, the fresh instance
/// would fail at once (whatever `--min-free-mb` says).
const REOPEN_MIN_FREE: u64 = 4 << 20;

/// The single writer. Build it with [`Sequencer::new`], run it with [`Sequencer::run`].
pub(crate) struct Sequencer {
    rx: mpsc::Receiver<Message>,
    model: Model,
    policy: Policy,
    clock: Clock,
    db: Arc<Db>,
    /// The log, through its seam.
    log: Arc<dyn Log>,
    /// The same log, for what only sled's does (reading its tail at load).
    disk_log: Arc<DiskLog>,
    views: Arc<Views>,
    /// Tasks as stored: those the model let go of are loaded back from here.
    archive: Archive,
    snapshot: watch::Sender<Arc<Snapshot>>,
    hub: Arc<Hub>,
    idempotency: Idempotency,
    last_now: Timestamp,
    metrics: Arc<Metrics>,
    /// Batches written but not known durable: what a rollback must undo.
    unsynced: VecDeque<Unsynced>,
    floor: DiskFloor,
    /// Since when the store has been failing (sled keeps an I/O error until it is
    /// reopened); `None` while it works.
    broken: Option<Instant>,
    /// A message taken from the queue that starts the next batch (a batch holds commands
    /// or applied batches, not both).
    next: Option<Message>,
}

/// Whether two queued messages may go in one batch: commands with commands, batches to
/// apply with batches to apply.
fn same_kind(a: &Message, b: &Message) -> bool {
    matches!(
        (a, b),
        (Message::Command { .. }, Message::Command { .. }) | (Message::Apply { .. }, Message::Apply { .. })
    )
}

/// What undoing a written batch needs.
struct Unsynced {
    head: Seq,
    before: Model,
    events: Vec<Event>,
    keys: Vec<String>,
}

impl Sequencer {
    /// Loads the model from `store` and returns the sequencer with its two handles. It
    /// appends through `log`: the store's own, or a cluster's replicated log.
    pub(crate) fn new(
        store: &Store,
        log: Arc<dyn Log>,
        policy: Policy,
        clock: Clock,
        min_free_bytes: u64,
        idempotency_keys: usize,
        metrics: Arc<Metrics>,
    ) -> Result<(Sequencer, Writer, Reader), StoreError> {
        let model = store.views.load(&store.log)?;
        let idempotency = Idempotency::load(store.views.idempotency_records()?, idempotency_keys);
        let (tx, rx) = mpsc::channel(QUEUE);
        let (snapshot, snapshot_rx) = watch::channel(Snapshot::new(model.clone()));
        let hub = Hub::new(model.head);
        let floor = DiskFloor { dir: store.db.dir().to_owned(), min_free: min_free_bytes };
        let sequencer = Sequencer {
            rx,
            model,
            policy,
            clock,
            db: Arc::clone(&store.db),
            log,
            disk_log: Arc::clone(&store.log),
            views: Arc::clone(&store.views),
            archive: Archive::new(Arc::clone(&store.db)),
            snapshot,
            hub: Arc::clone(&hub),
            idempotency,
            last_now: Timestamp::default(),
            metrics,
            unsynced: VecDeque::new(),
            floor,
            broken: None,
            next: None,
        };
        Ok((sequencer, Writer { tx }, Reader { snapshot: snapshot_rx, hub }))
    }

    /// Runs the writer on this (blocking) thread and the syncer on a second one, until a
    /// [`Writer::stop`] (or every `Writer` is gone); answers what was queued before the
    /// stop, then flushes.
    pub(crate) fn run(mut self) {
        let shared = Arc::new(Shared {
            durable: AtomicU64::new(self.model.head),
            failed: AtomicBool::new(false),
            store_broken: AtomicBool::new(false),
        });
        let (to_syncer, from_writer) = std_mpsc::sync_channel(PIPELINE);
        let (to_checkpoints, heads) = std_mpsc::sync_channel(1);
        let db = Arc::clone(&self.db);
        let checkpoints = std::thread::Builder::new()
            .name("muster-checkpoint".into())
            .spawn(move || super::syncer::checkpoints(db, heads));
        let checkpoints = match checkpoints {
            Ok(handle) => handle,
            Err(error) => {
                tracing::error!(%error, "cannot start the checkpoint thread");
                return;
            }
        };
        let syncer = Syncer {
            checkpoints: to_checkpoints,
            rx: from_writer,
            log: Arc::clone(&self.log),
            dir: self.floor.dir.clone(),
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

        while let Some(first) = self.next.take().or_else(|| self.rx.blocking_recv()) {
            let (batch, stop) = self.take_batch(first);
            if shared.failed.load(Ordering::Acquire) {
                self.recover(&shared, &to_syncer);
            }
            self.unsynced.retain(|u| u.head > shared.durable.load(Ordering::Acquire));
            if self.broken.is_some_and(|since| since.elapsed() >= REOPEN_EVERY) && self.unsynced.is_empty() {
                self.reopen_store(&to_syncer);
            }
            if let [Message::Export { .. }] = &batch[..] {
                self.export(batch, &shared);
            } else if !batch.is_empty() {
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
        if checkpoints.join().is_err() {
            tracing::error!("the checkpoint thread panicked");
        }
        match self.views.close(&self.model) {
            Ok(()) => tracing::info!(head = self.model.head, "store closed"),
            Err(error) => tracing::error!(%error, "final flush failed"),
        }
    }

    /// The first message and everything else waiting of the same kind (commands, or
    /// batches to apply), up to [`MAX_BATCH`]; and whether a stop was asked for.
    fn take_batch(&mut self, first: Message) -> (Vec<Message>, bool) {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Stop => return (batch, true),
                message if batch.first().is_some_and(|f| !same_kind(f, &message)) => {
                    self.next = Some(message);
                    break;
                }
                // An export is a batch of its own.
                message @ Message::Export { .. } => {
                    batch.push(message);
                    break;
                }
                message => batch.push(message),
            }
            if batch.len() < MAX_BATCH {
                next = self.rx.try_recv().ok();
            }
        }
        (batch, false)
    }

    /// Writes a snapshot of the store, once every batch written so far is durable (a
    /// snapshot never holds a batch that may yet be rolled back).
    fn export(&mut self, batch: Vec<Message>, shared: &Shared) {
        let Some(Message::Export { to, reply }) = batch.into_iter().next() else { return };
        let started = Instant::now();
        while shared.durable.load(Ordering::Acquire) < self.model.head {
            if shared.failed.load(Ordering::Acquire) || started.elapsed() > EXPORT_WAIT {
                let _ = reply.send(Err(WriteError::Unavailable("the store's last writes are not durable".into())));
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let exported = self.views.cluster_position().and_then(|position| {
            let bytes = crate::store::export(&self.db, to)?;
            Ok(Exported { head: self.model.head, position, bytes })
        });
        match &exported {
            Ok(e) => tracing::info!(head = e.head, bytes = e.bytes, took = ?started.elapsed(), "snapshot written"),
            Err(error) => tracing::warn!(%error, "writing a snapshot failed"),
        }
        let _ = reply.send(exported.map_err(|e| WriteError::Unavailable(format!("writing a snapshot: {e}"))));
    }

    /// The clock's time, never earlier than the last event's.
    fn now(&mut self) -> Timestamp {
        self.last_now = self.last_now.max(self.clock.now());
        self.last_now
    }

    /// Decides (or, for batches decided elsewhere, checks), applies and writes one batch.
    fn process(&mut self, batch: Vec<Message>) -> Written {
        let started = Instant::now();
        let written = if matches!(batch.first(), Some(Message::Apply { .. })) {
            self.apply_and_write(batch)
        } else {
            self.decide_and_write(batch)
        };
        self.metrics.write_seconds.observe(started.elapsed());
        written
    }

    fn decide_and_write(&mut self, batch: Vec<Message>) -> Written {
        let now = self.now();
        let mut before = self.model.clone();
        let mut events: Vec<Event> = Vec::new();
        let mut frames: Vec<Frame> = Vec::new();
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        let mut commands: Vec<CommandEnd> = Vec::new();
        let mut answers: Vec<Answer> = Vec::new();
        let low_on_disk = self.floor.check();

        for message in batch {
            let Message::Command { cmd, idempotency, reply } = message else {
                continue;
            };
            let fp = idempotency.as_ref().map(|_| fingerprint(&cmd));
            if let (Some(key), Some(fp)) = (&idempotency, fp)
                && let Some(answer) = self.idempotency.replay(&key.0, fp)
            {
                if !matches!(answer, Err(WriteError::IdempotencyMismatch(_))) {
                    self.metrics.idempotent_replays.fetch_add(1, Ordering::Relaxed);
                }
                answers.push((reply, answer));
                continue;
            }
            if let Some(refusal) = low_on_disk.as_ref().filter(|_| !essential(&cmd)) {
                self.metrics.commands_failed.fetch_add(1, Ordering::Relaxed);
                answers.push((reply, Err(refusal.clone())));
                continue;
            }
            if let Err(error) = self.load_evicted(&cmd, &mut before) {
                tracing::error!(%error, "reading a task back failed");
                self.metrics.commands_failed.fetch_add(1, Ordering::Relaxed);
                answers.push((reply, Err(store_failed(&error, &self.floor.dir))));
                continue;
            }
            let outcome = decide(&self.model, &self.policy, &cmd, now).map(|decision| {
                for kind in decision.events {
                    let event = Event { seq: self.model.head + 1, at: now, kind };
                    apply(&mut self.model, &event);
                    frames.push(Frame::of(&event));
                    events.push(event);
                }
                decision.reply
            });
            // Only accepted writes are recorded: a refusal's retry is decided again.
            if let (Some(key), Some(fp), Ok(reply)) = (idempotency, fp, &outcome) {
                records.push((key.0.clone(), self.idempotency.record(key.0, fp, now, reply.clone())));
            }
            if outcome.is_ok() {
                commands.push(CommandEnd { last: self.model.head, records: records.len() });
            }
            let committed = outcome.map(|reply| Committed { reply, replayed: false, seq: 0 });
            answers.push((reply, committed.map_err(WriteError::from)));
        }

        let expired = self.idempotency.expire(now);
        self.metrics.idempotency_keys.store(self.idempotency.len() as u64, Ordering::Relaxed);
        let wrote = !events.is_empty() || !records.is_empty() || !expired.is_empty();
        if !wrote {
            return Written { model: self.model.clone(), frames: Arc::from(frames), answers, wrote, replaced: false };
        }
        let carried = Carried { records: &records, expired: &expired, commands: &commands };
        let stored = self
            .log
            .append(before.head, &frames, carried)
            .and_then(|()| self.views.write(&events, &self.model, &records, &expired));
        self.store_written(stored, before, events, frames, &records, answers)
    }

    /// Applies batches that another node decided and the replicated log holds (this node
    /// follows the cluster's leader): each must follow the model's head without a gap (one
    /// already here is skipped), its events move the model on as they moved the leader's,
    /// and it is written like a batch decided here, to this node's log and views.
    fn apply_and_write(&mut self, batch: Vec<Message>) -> Written {
        let before = self.model.clone();
        let mut events: Vec<Event> = Vec::new();
        let mut frames: Vec<Frame> = Vec::new();
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        let mut expired: Vec<String> = Vec::new();
        let mut answers: Vec<Answer> = Vec::new();
        for message in batch {
            let Message::Apply { batch: applied, reply } = message else {
                continue;
            };
            let done = Ok(Committed { reply: crate::core::Reply::Done, replayed: false, seq: 0 });
            let last = applied.first + applied.frames.len() as Seq;
            if !applied.frames.is_empty() && last <= self.model.head + 1 && applied.first <= self.model.head {
                answers.push((reply, done));
                continue;
            }
            if applied.first != self.model.head + 1 {
                let error = format!("the replicated log skips from {} to {}", self.model.head, applied.first);
                answers.push((reply, Err(WriteError::Unavailable(error))));
                continue;
            }
            let decoded: Result<Vec<Event>, _> =
                applied.frames.iter().map(|f| serde_json::from_slice::<Event>(&f.json)).collect();
            let decoded = match decoded {
                Ok(decoded) => decoded,
                Err(error) => {
                    let error = format!("an event of the replicated log is unreadable: {error}");
                    answers.push((reply, Err(WriteError::Unavailable(error))));
                    continue;
                }
            };
            for event in decoded {
                self.last_now = self.last_now.max(event.at);
                apply(&mut self.model, &event);
                events.push(event);
            }
            frames.extend(applied.frames);
            for (key, record) in &applied.records {
                self.idempotency.adopt(key.clone(), record);
            }
            self.idempotency.forget(&applied.expired);
            records.extend(applied.records);
            expired.extend(applied.expired);
            answers.push((reply, done));
        }
        self.metrics.idempotency_keys.store(self.idempotency.len() as u64, Ordering::Relaxed);
        let wrote = !events.is_empty() || !records.is_empty() || !expired.is_empty();
        if !wrote {
            return Written { model: self.model.clone(), frames: Arc::from(frames), answers, wrote, replaced: false };
        }
        let stored = self
            .disk_log
            .append(before.head, &frames, Carried { records: &records, expired: &expired, commands: &[] })
            .and_then(|()| self.views.write(&events, &self.model, &records, &expired));
        self.store_written(stored, before, events, frames, &records, answers)
    }

    /// After a batch was appended and its views written (`stored`): on success it waits for
    /// the syncer; on failure it is undone, in the store and in the model, and every caller
    /// is told.
    fn store_written(
        &mut self,
        stored: Result<(), StoreError>,
        before: Model,
        events: Vec<Event>,
        frames: Vec<Frame>,
        records: &[(String, Vec<u8>)],
        answers: Vec<Answer>,
    ) -> Written {
        let keys: Vec<String> = records.iter().map(|(k, _)| k.clone()).collect();
        if let Err(error) = stored {
            // Nothing of this batch is answered as done; the syncer will not be asked to
            // make it durable. Undo what may have reached sled, and the model.
            if let StoreError::Replication(replication) = &error {
                tracing::warn!(?replication, "the replicated log did not take a batch; it is rolled back");
            } else {
                tracing::error!(%error, "writing a batch failed; it is rolled back");
                self.broken.get_or_insert_with(Instant::now);
            }
            if let Err(e) = self.undo(&events, &before, &keys) {
                tracing::error!(error = %e, "rolling back the failed batch failed too");
            }
            self.idempotency.forget(&keys);
            self.model = before;
            let failed = store_failed(&error, &self.floor.dir);
            let answers = answers.into_iter().map(|(reply, _)| (reply, Err(failed.clone()))).collect();
            let frames = Arc::from(Vec::new());
            return Written { model: self.model.clone(), frames, answers, wrote: false, replaced: true };
        }
        self.unsynced.push_back(Unsynced { head: self.model.head, before, events, keys });
        Written { model: self.model.clone(), frames: Arc::from(frames), answers, wrote: true, replaced: false }
    }

    /// Loads back the tasks `cmd` names that the model let go of (finished long ago), and
    /// for a new list of blockers every task along their chains, so that the rules decide on
    /// them as on any other. Each goes into the model and into every model a rollback may
    /// return to (`before` and the unsynced batches'), where it is what the store had
    /// before them.
    fn load_evicted(&mut self, cmd: &Command, before: &mut Model) -> Result<(), StoreError> {
        let named = cmd.tasks();
        let mut load = |model: &mut Model, unsynced: &mut VecDeque<Unsynced>, id| -> Result<_, StoreError> {
            if !model.evicted(id) {
                return Ok(model.task(id).cloned());
            }
            let Some(task) = self.archive.task(id)?.map(Arc::new) else {
                return Ok(None);
            };
            for m in std::iter::once(&mut *before).chain(unsynced.iter_mut().map(|u| &mut u.before)) {
                m.restore(Arc::clone(&task));
            }
            model.restore(Arc::clone(&task));
            Ok(Some(task))
        };
        for id in named.tasks {
            load(&mut self.model, &mut self.unsynced, id)?;
        }
        let mut chain = named.chains;
        let mut seen = std::collections::HashSet::new();
        while let Some(id) = chain.pop() {
            if seen.insert(id)
                && let Some(task) = load(&mut self.model, &mut self.unsynced, id)?
            {
                chain.extend(task.blocked_by.iter().copied());
            }
        }
        Ok(())
    }

    /// A sync failed: every batch not known durable has been (or will be) answered
    /// `unavailable` by the syncer. Undo them in the store, go back to the last durable
    /// model, and tell the syncer that what follows is decided on that model.
    fn recover(&mut self, shared: &Shared, to_syncer: &std_mpsc::SyncSender<ToSyncer>) {
        let durable = shared.durable.load(Ordering::Acquire);
        self.unsynced.retain(|u| u.head > durable);
        if let Some(oldest) = self.unsynced.front() {
            let before = oldest.before.clone();
            let events: Vec<Event> = self.unsynced.iter().flat_map(|u| u.events.iter().cloned()).collect();
            let keys: Vec<String> = self.unsynced.iter().flat_map(|u| u.keys.iter().cloned()).collect();
            if let Err(error) = self.undo(&events, &before, &keys) {
                tracing::error!(%error, "rolling back unsynced batches failed");
            }
            self.idempotency.forget(&keys);
            tracing::warn!(events = events.len(), head = before.head, "rolled back to the last durable state");
            self.model = before;
        }
        self.unsynced.clear();
        if shared.store_broken.swap(false, Ordering::AcqRel) {
            self.broken.get_or_insert_with(Instant::now);
        }
        shared.failed.store(false, Ordering::Release);
        // If the syncer is gone, the next send of a batch reports it.
        let _ = to_syncer.send(ToSyncer::Recovered(Box::new(self.model.clone())));
    }

    /// Undoes written batches that will not be made durable: the log forgets them, the
    /// views go back to `before`.
    fn undo(&self, events: &[Event], before: &Model, keys: &[String]) -> Result<(), StoreError> {
        let discarded = events.first().map_or(Ok(()), |first| self.log.discard(first.seq));
        self.views.revert(events, before, keys).and(discarded)
    }

    /// The store has been failing: once there is space again, reopen it and reload the
    /// model from what is on disk, as after a crash. Events the failed batches left in the
    /// log (written, never acknowledged) are part of that model now, so they are published
    /// like any others: subscribers see no gap.
    fn reopen_store(&mut self, to_syncer: &std_mpsc::SyncSender<ToSyncer>) {
        self.broken = Some(Instant::now());
        let free = fs2::available_space(&self.floor.dir).unwrap_or(u64::MAX);
        if self.floor.check().is_some() || free < REOPEN_MIN_FREE {
            return;
        }
        let reloaded = self.db.reopen().and_then(|()| self.views.load(&self.disk_log)).and_then(|model| {
            let missing = if model.head > self.model.head {
                self.log.read(self.model.head, model.head, &[Topic::All], usize::MAX)?.0
            } else {
                Vec::new()
            };
            Ok((model, missing))
        });
        match reloaded {
            Ok((model, missing)) => {
                if model.head < self.model.head {
                    tracing::error!(
                        disk = model.head,
                        memory = self.model.head,
                        "the reopened store is behind; using it"
                    );
                }
                tracing::info!(head = model.head, unacknowledged = missing.len(), "storage works again");
                self.model = model.clone();
                self.broken = None;
                let (frames, answers) = (Arc::from(missing), Vec::new());
                let written = Written { model, frames, answers, wrote: false, replaced: true };
                let _ = to_syncer.send(ToSyncer::Batch(written));
            }
            Err(error) => tracing::warn!(%error, "storage still failing; retrying in a second"),
        }
    }
}
