//! The sequencer's two handles: the [`Writer`] that submits commands and waits until they
//! are durable, and the [`Reader`] that sees the latest durable [`Snapshot`] and the hub.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use muster_protocol::Seq;

use crate::core::{Command, DomainError, Model, Reply};
use crate::frame::Frame;
use crate::hub::Hub;

/// Commands that may wait for the writer. When the queue is full, callers wait (up to
/// [`SUBMIT_TIMEOUT`]): backpressure, not loss. 4096 is a few batches' worth at full speed.
pub(crate) const QUEUE: usize = 4096;
/// How long a caller waits for room in a full queue before it is told to retry.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What readers see: the model as of the last durable batch.
pub(crate) struct Snapshot {
    /// The model; every event up to `model.head` is on disk.
    pub(crate) model: Model,
}

impl Snapshot {
    pub(super) fn new(model: Model) -> Arc<Snapshot> {
        Arc::new(Snapshot { model })
    }
}

/// A write that could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub(crate) enum WriteError {
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
}

/// An accepted, durable command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Committed {
    /// The domain's reply.
    pub(crate) reply: Reply,
    /// Answered from an idempotency record, not executed again.
    pub(crate) replayed: bool,
    /// The head once the command's batch was durable: a reader that has seen this `seq`
    /// sees the write (a cluster node waits for it before answering a forwarded write).
    #[serde(default)]
    pub(crate) seq: Seq,
}

/// A batch another node decided, read from the replicated log, for this node to apply
/// (a cluster follower). Answered, like a command, once it is durable here.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    /// `seq` of its first event (the events follow without a gap).
    pub(crate) first: Seq,
    /// Its events, as logged.
    pub(crate) frames: Vec<Frame>,
    /// The idempotency records the batch made, as the store keeps them.
    pub(crate) records: Vec<(String, Vec<u8>)>,
    /// The idempotency keys the batch forgot.
    pub(crate) expired: Vec<String>,
}

/// An `Idempotency-Key` sent with a command: a retry with the same key and the same
/// command gets the recorded outcome instead of a second execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyKey(pub(crate) String);

/// What a caller is told once its batch is durable (or failed).
pub(crate) type Outcome = Result<Committed, WriteError>;

/// What the writer thread receives.
// `Stop` is sent once; boxing the command instead would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Message {
    Command { cmd: Command, idempotency: Option<IdempotencyKey>, reply: oneshot::Sender<Outcome> },
    Apply { batch: Applied, reply: oneshot::Sender<Outcome> },
    Export { to: std::fs::File, reply: oneshot::Sender<Result<Exported, WriteError>> },
    Stop,
}

/// A snapshot of the store that [`Writer::export`] wrote.
#[derive(Debug, Clone)]
pub(crate) struct Exported {
    /// The last event it holds.
    pub(crate) head: Seq,
    /// Where the store stood in its cluster's log, as recorded then (`None` for a single
    /// broker). The snapshot may hold a few batches more, applied but not yet recorded: a
    /// node made from it checks them against the log as after a restart.
    pub(crate) position: Option<crate::store::ClusterPosition>,
    /// Its size.
    pub(crate) bytes: u64,
}

/// The handle that submits commands. The sequencer knows no credentials: whoever holds a
/// `Writer` has checked the caller — the api layer, and a cluster's leader for the writes
/// its followers' api layers checked and forwarded (and its own bookkeeping).
#[derive(Clone)]
pub(crate) struct Writer {
    pub(super) tx: mpsc::Sender<Message>,
}

impl Writer {
    /// Submits a command and waits until it is durable (or refused).
    pub(crate) async fn submit(&self, cmd: Command, idempotency: Option<IdempotencyKey>) -> Outcome {
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

    /// Hands a batch decided elsewhere (read from the replicated log) to the writer; the
    /// returned receiver is answered once it is durable here. Waits while the queue is full.
    pub(crate) async fn apply(&self, batch: Applied) -> Result<oneshot::Receiver<Outcome>, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Message::Apply { batch, reply }).await.map_err(|_| stopping())?;
        Ok(rx)
    }

    /// Writes a snapshot of the store to `to` (see `store::export`), between two batches,
    /// once every batch written before is durable; no batch is written meanwhile.
    pub(crate) async fn export(&self, to: std::fs::File) -> Result<Exported, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Message::Export { to, reply }).await.map_err(|_| stopping())?;
        rx.await.unwrap_or_else(|_| Err(stopping()))
    }

    /// Asks the sequencer to finish what is queued and stop.
    pub(crate) async fn stop(&self) {
        // Already stopped is fine.
        let _ = self.tx.send(Message::Stop).await;
    }
}

fn stopping() -> WriteError {
    WriteError::Unavailable("broker is shutting down; retry against the new instance".into())
}

/// The read side: the latest durable snapshot, and the hub that pushes durable events.
#[derive(Clone)]
pub(crate) struct Reader {
    pub(super) snapshot: watch::Receiver<Arc<Snapshot>>,
    pub(super) hub: Arc<Hub>,
}

impl Reader {
    /// The model as of the last durable batch.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The snapshots as they come: wait on it for a `seq` to be readable.
    pub(crate) fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The hub: subscribe to receive events as they become durable.
    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}
