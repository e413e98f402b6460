//! The second half of the pipeline: one sync for everything written so far (group commit),
//! then the new snapshot for readers, the events for subscribers, and only then the
//! answers to the callers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use muster_protocol::Seq;

use tokio::sync::{oneshot, watch};

use super::disk::{store_failed, unavailable};
use super::handles::{Committed, Outcome, Snapshot, WriteError};
use crate::core::Model;
use crate::frame::Frame;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Db, Log};

/// How often sled and the chat files are made durable (a checkpoint, [`Db::checkpoint`]):
/// after a crash the log's records since the last one are read again. A commit waits for
/// one `fdatasync` (the log's file); a checkpoint takes that of sled's file (and of the chat
/// files) off the path of every write.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A caller's reply channel and what it will be told once its batch is durable.
pub(super) type Answer = (oneshot::Sender<Outcome>, Outcome);

/// A decided, written batch on its way to the disk.
pub(super) struct Written {
    /// The model after the batch.
    pub(super) model: Model,
    pub(super) frames: Arc<[Frame]>,
    pub(super) answers: Vec<Answer>,
    /// Whether the batch wrote anything (a batch of refusals only needs to wait for the
    /// batches before it).
    pub(super) wrote: bool,
    /// The model was replaced rather than moved on by events (a rolled back batch, a
    /// reloaded store): readers get it even if there are no events. Otherwise a task the
    /// rollback restored could be read from a store the rollback could not undo.
    pub(super) replaced: bool,
}

/// What the writer and the syncer share.
pub(super) struct Shared {
    /// Highest `seq` known durable.
    pub(super) durable: AtomicU64,
    /// A sync failed: the writer must roll back before deciding anything else.
    pub(super) failed: AtomicBool,
    /// The failed sync was the store's (not a replicated log refusing or not confirming a
    /// batch): the writer reopens the store once there is room again.
    pub(super) store_broken: AtomicBool,
}

// `Recovered` is rare; batches are the traffic.
#[allow(clippy::large_enum_variant)]
pub(super) enum ToSyncer {
    Batch(Written),
    /// The writer rolled back after a failure to this model (the durable one); batches
    /// after this are decided on it. Readers get it at once.
    Recovered(Box<Model>),
}

/// The sync thread.
pub(super) struct Syncer {
    pub(super) rx: std_mpsc::Receiver<ToSyncer>,
    pub(super) log: Arc<dyn Log>,
    pub(super) dir: std::path::PathBuf,
    pub(super) snapshot: watch::Sender<Arc<Snapshot>>,
    pub(super) hub: Arc<Hub>,
    pub(super) shared: Arc<Shared>,
    pub(super) metrics: Arc<Metrics>,
    /// To the checkpoint thread ([`checkpoints`]): the durable `head` to checkpoint at.
    pub(super) checkpoints: std_mpsc::SyncSender<Seq>,
}

/// The checkpoint thread: a checkpoint at each `head` it is sent, until the syncer is gone.
/// A checkpoint that fails is only a warning: the log holds every batch, and the next one
/// (or the final one at shutdown) covers it.
pub(super) fn checkpoints(db: Arc<Db>, heads: std_mpsc::Receiver<Seq>) {
    while let Ok(head) = heads.recv() {
        if let Err(error) = db.checkpoint(head) {
            tracing::warn!(%error, head, "a checkpoint failed; the log's records since the last one are kept");
        }
    }
}

impl Syncer {
    pub(super) fn run(self) {
        // After a failed sync, batches are refused until the writer has rolled back.
        let mut failed = false;
        let mut checkpointed = Instant::now();
        while let Ok(first) = self.rx.recv() {
            let mut batches = Vec::new();
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    ToSyncer::Recovered(model) => {
                        failed = false;
                        self.snapshot.send_replace(Snapshot::new(*model));
                    }
                    ToSyncer::Batch(b) if failed => self.refuse(b, unavailable(&"an earlier write failed")),
                    ToSyncer::Batch(b) => batches.push(b),
                }
                next = self.rx.try_recv().ok();
            }
            if batches.is_empty() {
                continue;
            }
            let started = Instant::now();
            let result = if batches.iter().any(|b| b.wrote) { self.log.sync() } else { Ok(()) };
            self.metrics.commit_seconds.observe(started.elapsed());
            match result {
                Ok(()) => {
                    self.publish(batches);
                    if checkpointed.elapsed() >= CHECKPOINT_EVERY {
                        // Busy: it is still at the last one, and takes the next head later.
                        if self.checkpoints.try_send(self.shared.durable.load(Ordering::Acquire)).is_ok() {
                            checkpointed = Instant::now();
                        }
                    }
                }
                Err(error) => {
                    let store = match &error {
                        crate::store::StoreError::Replication(replication) => {
                            tracing::warn!(
                                ?replication,
                                "the replicated log did not confirm; the batches are rolled back"
                            );
                            false
                        }
                        _ => {
                            tracing::error!(%error, "sync failed; the unsynced batches are rolled back");
                            true
                        }
                    };
                    failed = true;
                    self.shared.store_broken.store(store, Ordering::Release);
                    self.shared.failed.store(true, Ordering::Release);
                    for b in batches {
                        self.refuse(b, store_failed(&error, &self.dir));
                    }
                }
            }
        }
    }

    /// The batches are durable: show them to readers, then answer their callers.
    fn publish(&self, batches: Vec<Written>) {
        let Some(last) = batches.last() else { return };
        let head = last.model.head;
        let events: usize = batches.iter().map(|b| b.frames.len()).sum();
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        self.metrics.events.fetch_add(events as u64, Ordering::Relaxed);
        self.shared.durable.store(head, Ordering::Release);
        if events > 0 || batches.iter().any(|b| b.replaced) {
            self.snapshot.send_replace(Snapshot::new(last.model.clone()));
            for b in &batches {
                self.hub.publish(&b.frames);
            }
        }
        for b in batches {
            let seq = b.model.head;
            for (reply, answer) in b.answers {
                // The caller may have gone away (client disconnected); the write stands.
                let _ = reply.send(answer.map(|committed| Committed { seq, ..committed }));
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
