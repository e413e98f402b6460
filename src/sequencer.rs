//! The single writer: batch → decide → store → flush → apply → publish → reply.
//!
//! One task owns the [`State`]. Commands arrive on a bounded channel; the sequencer takes
//! everything that is waiting (up to [`MAX_BATCH`]), decides each command against the state
//! as the previous ones left it, stamps every event with the next `seq`, writes the batch
//! to the store and waits for one flush + `fdatasync` (group commit). Only then does it
//! publish the new state to readers and answer the callers. If the store fails, the state
//! goes back to what it was before the batch and every caller gets `unavailable`.
//!
//! Readers never wait on the sequencer: they read the latest [`Snapshot`] from a `watch`
//! channel, which also wakes long-polls when the head moves.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use muster_protocol::{Event, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::core::{Command, DomainError, Policy, Reply, State, apply, decide};
use crate::metrics::Metrics;
use crate::store::{Stamped, Store};

/// Commands that may wait for the sequencer. When the queue is full, callers wait (up to
/// [`SUBMIT_TIMEOUT`]): backpressure, not loss. 4096 is a few batches' worth at full speed.
pub const QUEUE: usize = 4096;
/// Most commands decided and committed together. Bounds the latency a single batch adds
/// and the memory it holds; at ~1 µs per decision the flush dominates anyway.
pub const MAX_BATCH: usize = 1024;
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
        Arc::new(Snapshot {
            state,
            board: OnceLock::new(),
            board_gzip: OnceLock::new(),
        })
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

/// A caller's reply channel and what it will be told once the batch is durable.
type Answer = (
    oneshot::Sender<Result<Committed, WriteError>>,
    Result<Committed, WriteError>,
);

struct Request {
    cmd: Command,
    idempotency: Option<IdempotencyKey>,
    reply: oneshot::Sender<Result<Committed, WriteError>>,
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
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The handle transports use to submit commands.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
}

impl Writer {
    /// Submits a command and waits until it is durable (or refused).
    pub async fn submit(
        &self,
        cmd: Command,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Committed, WriteError> {
        let (reply, rx) = oneshot::channel();
        let request = Request {
            cmd,
            idempotency,
            reply,
        };
        match tokio::time::timeout(SUBMIT_TIMEOUT, self.tx.send(request)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(stopping()),
            Err(_) => {
                return Err(WriteError::Unavailable(
                    "broker overloaded: the write queue stayed full; retry".into(),
                ));
            }
        }
        rx.await.unwrap_or_else(|_| Err(stopping()))
    }
}

fn stopping() -> WriteError {
    WriteError::Unavailable("broker is shutting down; retry against the new instance".into())
}

/// The read side: the latest durable snapshot.
#[derive(Clone)]
pub struct Reader {
    snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl Reader {
    /// The state as of the last durable batch.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes whenever a new snapshot is published.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }
}

/// The single writer task.
pub struct Sequencer {
    rx: mpsc::Receiver<Request>,
    state: State,
    policy: Policy,
    store: Arc<Store>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    recorded: HashMap<String, Recorded>,
    expiry: VecDeque<(Timestamp, String)>,
    last_now: Timestamp,
    metrics: Arc<Metrics>,
}

impl Sequencer {
    /// Loads the state from `store` and returns the sequencer with its two handles. Run it
    /// with [`Sequencer::run`].
    pub fn new(
        store: Arc<Store>,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Result<(Sequencer, Writer, Reader), crate::store::StoreError> {
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
        let reader = Reader {
            snapshot: snapshot_rx,
        };
        let sequencer = Sequencer {
            rx,
            state,
            policy,
            store,
            snapshot,
            recorded,
            expiry: expiry.into(),
            last_now: Timestamp::default(),
            metrics,
        };
        Ok((sequencer, Writer { tx }, reader))
    }

    /// Runs until `shutdown` is cancelled, then answers what is still queued and flushes.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                request = self.rx.recv() => request,
                () = shutdown.cancelled() => None,
            };
            let Some(first) = first else { break };
            let batch = self.take_batch(first);
            self.process(batch).await;
        }
        self.rx.close();
        while let Ok(first) = self.rx.try_recv() {
            let batch = self.take_batch(first);
            self.process(batch).await;
        }
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || store.close()).await {
            Ok(Ok(())) => tracing::info!(head = self.state.head, "store closed"),
            Ok(Err(error)) => tracing::error!(%error, "final flush failed"),
            Err(error) => tracing::error!(%error, "final flush panicked"),
        }
    }

    fn take_batch(&mut self, first: Request) -> Vec<Request> {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        batch
    }

    /// Wall-clock time in milliseconds, never earlier than the last event's.
    fn now(&mut self) -> Timestamp {
        let now =
            Timestamp::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default();
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    async fn process(&mut self, batch: Vec<Request>) {
        let now = self.now();
        let before = self.state.clone();
        let mut stamped: Vec<Stamped> = Vec::new();
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        let mut answers: Vec<Answer> = Vec::new();

        for Request {
            cmd,
            idempotency,
            reply,
        } in batch
        {
            let fp = idempotency.as_ref().map(|_| fingerprint(&cmd));
            if let (Some(key), Some(fp)) = (&idempotency, fp) {
                if let Some(recorded) = self.recorded.get(&key.key) {
                    let answer = if recorded.fingerprint == fp {
                        self.metrics
                            .idempotent_replays
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        recorded
                            .outcome
                            .clone()
                            .map(|reply| Committed {
                                reply,
                                replayed: true,
                            })
                            .map_err(WriteError::from)
                    } else {
                        Err(WriteError::IdempotencyMismatch(key.key.clone()))
                    };
                    answers.push((reply, answer));
                    continue;
                }
            }
            let outcome = match decide(&self.state, &self.policy, &cmd, now) {
                Ok(decision) => {
                    for kind in decision.events {
                        let event = Event {
                            seq: self.state.head + 1,
                            at: now,
                            kind,
                        };
                        apply(&mut self.state, &event);
                        stamped.push(Stamped::new(event));
                    }
                    Ok(decision.reply)
                }
                Err(refused) => Err(refused),
            };
            if let (Some(key), Some(fingerprint)) = (idempotency, fp) {
                let record = Recorded {
                    at: now,
                    fingerprint,
                    outcome: outcome.clone(),
                };
                // Plain data; serializing cannot fail.
                records.push((
                    key.key.clone(),
                    serde_json::to_vec(&record).expect("record serializes"),
                ));
                self.expiry.push_back((now, key.key.clone()));
                self.recorded.insert(key.key, record);
            }
            let answer = outcome
                .map(|reply| Committed {
                    reply,
                    replayed: false,
                })
                .map_err(WriteError::from);
            answers.push((reply, answer));
        }

        let expired = self.expire_idempotency(now);
        if !stamped.is_empty() || !records.is_empty() || !expired.is_empty() {
            let started = Instant::now();
            let store = Arc::clone(&self.store);
            let state = self.state.clone();
            let (events, recs) = (Arc::<[Stamped]>::from(stamped), Arc::new(records));
            let (events2, recs2) = (Arc::clone(&events), Arc::clone(&recs));
            let result = tokio::task::spawn_blocking(move || {
                store.commit(&events2, &state, &recs2)?;
                store.forget_idempotency(&expired)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            self.metrics.commit_seconds.observe(started.elapsed());
            if let Err(error) = result {
                self.fail(&events, &recs, before, answers, &error).await;
                return;
            }
            self.metrics
                .batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.metrics
                .events
                .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if !events.is_empty() {
                self.snapshot
                    .send_replace(Snapshot::new(self.state.clone()));
            }
        }
        for (reply, answer) in answers {
            let counter = match &answer {
                Ok(_) => &self.metrics.commands_ok,
                Err(_) => &self.metrics.commands_refused,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The caller may have gone away (client disconnected); the write stands.
            let _ = reply.send(answer);
        }
    }

    /// The store failed: forget the batch, answer everyone `unavailable`.
    async fn fail(
        &mut self,
        events: &Arc<[Stamped]>,
        records: &Arc<Vec<(String, Vec<u8>)>>,
        before: State,
        answers: Vec<Answer>,
        error: &str,
    ) {
        tracing::error!(%error, events = events.len(), "commit failed; the batch is rolled back");
        for (key, _) in records.iter() {
            self.recorded.remove(key);
        }
        self.expiry
            .retain(|(_, k)| !records.iter().any(|(r, _)| r == k));
        let store = Arc::clone(&self.store);
        let (events, records, state) = (Arc::clone(events), Arc::clone(records), before.clone());
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || store.revert(&events, &state, &records)).await
        {
            tracing::error!(error = %e, "rolling back the failed batch in the store failed too");
        }
        self.state = before;
        for (reply, _) in answers {
            self.metrics
                .commands_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = reply.send(Err(WriteError::Unavailable(format!(
                "write not stored: {error}; retry later"
            ))));
        }
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
