//! A node's life ([`Cluster::run`]): follow the log until elected, lead until the lease is
//! lost, follow again, until the broker stops. Each loop is supervised: one that fails, or
//! shows no progress for [`stall_limit`](Cluster::stall_limit) (an await that never ends,
//! whatever the cause), is dropped and started again with a backoff, so that a node gets
//! back in line by itself while its process runs. Beside them, the node's heartbeat and its
//! snapshots.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::nats::{CALL_TIMEOUT, JETSTREAM_TIMEOUT, bounded};
use super::node::{Cluster, FollowError, Turn};
use super::snapshots;
use super::wire;
use crate::core::Command;
use crate::sequencer::{Reader, Writer};

/// The first pause before a failed loop is started again; it doubles up to [`RESTART_MAX`]
/// while the loop keeps failing at once.
const RESTART_FIRST: Duration = Duration::from_millis(500);
const RESTART_MAX: Duration = Duration::from_secs(5);

impl Cluster {
    /// The node's life, until `shutdown`: follow, lead when elected, follow again. If the
    /// trimmed log leaves it behind, it stops the broker (`stop`), saying why in
    /// [`Cluster::left_behind`].
    pub(crate) async fn run(
        self: Arc<Self>,
        writer: Writer,
        reader: Reader,
        shutdown: CancellationToken,
        stop: CancellationToken,
    ) {
        let heartbeat = tokio::spawn(Arc::clone(&self).heartbeat(shutdown.clone()));
        let snapshots = tokio::spawn(Arc::clone(&self).snapshot_now_and_then(writer.clone(), shutdown.clone()));
        let mut backoff = RESTART_FIRST;
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let followed = tokio::select! {
                turn = self.follow(&writer, &shutdown) => turn,
                stalled = self.stalled() => Err(FollowError::Stalled(stalled)),
            };
            match followed {
                Ok(Turn::Lead(held)) => {
                    backoff = RESTART_FIRST;
                    tokio::select! {
                        () = self.lead(held, &writer, &reader, &shutdown) => {}
                        stalled = self.stalled() => {
                            tracing::warn!(?stalled, "the lead loop showed no progress; stepping down");
                            self.step_down();
                        }
                    }
                    // Before reading the stream again, every batch decided as leader must be
                    // settled (confirmed, or refused and rolled back): a command queued behind
                    // them is answered only after they are (a tick; whatever it would write
                    // is refused, as this node no longer leads).
                    let settle = writer.submit(Command::Tick, None);
                    if tokio::time::timeout(2 * JETSTREAM_TIMEOUT, settle).await.is_err() {
                        tracing::warn!("the batches decided as leader were not settled in time; following anyway");
                    }
                }
                Ok(Turn::Stop) => break,
                Err(FollowError::LeftBehind { first, had }) => {
                    let error = FollowError::LeftBehind { first, had }.to_string();
                    tracing::error!(%error, "this node was left behind by the trimmed log; stopping");
                    *self.left_behind.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
                    stop.cancel();
                    break;
                }
                Err(error) => {
                    // A loop that ran a while was healthy: its failure starts the backoff over.
                    if started.elapsed() > 4 * self.lease {
                        backoff = RESTART_FIRST;
                    }
                    tracing::warn!(%error, ?backoff, "following the cluster's log failed; starting again");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(RESTART_MAX);
                }
            }
        }
        self.stopping.store(true, Ordering::Release);
        let _ = heartbeat.await;
        let _ = snapshots.await;
    }

    /// How long a loop may show no progress before it is dropped and started again: longer
    /// than its slowest step (a term's opening: a publish and its confirmation), and than
    /// two leases.
    pub(super) fn stall_limit(&self) -> Duration {
        (2 * self.lease).max(CALL_TIMEOUT + JETSTREAM_TIMEOUT + Duration::from_secs(1))
    }

    /// Returns once [`Cluster::progress`] has not been marked for [`Cluster::stall_limit`]:
    /// how long it was.
    async fn stalled(&self) -> Duration {
        let limit = self.stall_limit();
        loop {
            let since = self.progress.elapsed();
            if since >= limit {
                return since;
            }
            tokio::time::sleep(limit - since).await;
        }
    }

    /// Whether a snapshot is due (`false` when the servers do not answer in time).
    async fn snapshot_due(&self) -> bool {
        let due = self.snapshots.due(self.log.position().head, self.leading());
        tokio::time::timeout(CALL_TIMEOUT, due).await.unwrap_or(false)
    }

    /// Takes a snapshot whenever one is due (see [`Snapshots::due`](super::snapshots::Snapshots::due)), then trims the log,
    /// until `shutdown`.
    async fn snapshot_now_and_then(self: Arc<Self>, writer: Writer, shutdown: CancellationToken) {
        snapshots::forget_upload(&self.data_dir);
        let mut check = tokio::time::interval(snapshots::CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = check.tick() => {}
                () = shutdown.cancelled() => return,
            }
            if !self.snapshot_due().await {
                continue;
            }
            // The other followers may find it due too: each waits a moment at random, then
            // looks again.
            let pause = snapshots::CHECK_EVERY.mul_f64(rand::random::<f64>());
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return,
            }
            if !self.snapshot_due().await {
                continue;
            }
            match self.snapshots.take(&writer, &self.data_dir).await {
                Ok(listed) => tracing::info!(stream = listed.stream, head = listed.head, "snapshot uploaded"),
                Err(error) => {
                    tracing::warn!(%error, "taking a snapshot failed");
                    continue;
                }
            }
            let floor = tokio::time::timeout(CALL_TIMEOUT, snapshots::lowest_position(&self.nodes)).await;
            let trimmed = match floor {
                Ok(Some(floor)) => {
                    bounded("trimming the log", JETSTREAM_TIMEOUT, self.snapshots.prune(&self.stream, floor))
                        .await
                        .map_err(|e| e.to_string())
                }
                _ => Err("the running nodes' positions cannot be read".into()),
            };
            if let Err(error) = trimmed {
                tracing::warn!(%error, "trimming the log failed");
            }
        }
    }

    /// Says that this instance runs, every quarter of a lease, until `shutdown`; then that it
    /// stopped (its sessions are closed by then, or will be by the leader).
    async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.lease / 4);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let beat = wire::Heartbeat { node: self.node.clone(), applied: self.applied() };
                    // Plain data; serializing cannot fail.
                    let beat = Bytes::from(serde_json::to_vec(&beat).unwrap_or_default());
                    if let Err(error) = bounded("the node's heartbeat", CALL_TIMEOUT, self.nodes.put(&self.instance, beat)).await {
                        tracing::warn!(%error, "the node's heartbeat failed");
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
        let _ = bounded("the node's heartbeat", CALL_TIMEOUT, self.nodes.delete(&self.instance)).await;
    }
}
