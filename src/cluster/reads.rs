//! What the api layer asks of a cluster node: [`Cluster::forward`] a write to the leader,
//! answered only once this node has applied it, and [`Cluster::catch_up`] before a read, so
//! that no read goes back in time:
//!
//! - a read on a follower waits (bounded) until this node has applied the leader's head,
//!   so it sees every write acknowledged before it through any node; without a leader to
//!   ask, it waits for the last `seq` the client says it has seen (`Muster-After`);
//! - a read on the leader is served from its state only while its lease surely holds: a
//!   leader that was paused past its lease may have been replaced, and answers once it has
//!   renewed the lease or stepped down (then it reads as a follower);
//! - what cannot be made current in time is answered 503, never from a stale state.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use muster_protocol::Seq;

use super::forwards::RESEND_AFTER;
use super::node::Cluster;
use super::wire::Forwarded;
use crate::core::Command;
use crate::sequencer::{IdempotencyKey, Outcome, Reader, WriteError, Writer};

/// How long a follower waits for the leader to answer a forwarded write: longer than a
/// NATS stream's failover (5–7 s), during which the leader's publishes wait. (A leader
/// that dies meanwhile is noticed sooner: when another one takes over.)
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a follower waits before sending again a write nobody took.
const NO_RESPONDERS_PAUSE: Duration = Duration::from_millis(200);
/// How long a node waits to have applied what a read or a write's answer must see.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a follower waits for the leader's head before a read.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a read cannot be served from this node's state now. Retry: it is a moment's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// This node has not applied what the read must see.
    #[error(
        "this node has not yet applied the cluster's log up to event {seq} (it holds up to {applied}); retry in a \
         moment, or read through another node"
    )]
    Behind { seq: Seq, applied: Seq },
    /// This node leads, but may have lost its lease (it was paused or cut off): it does
    /// not know whether another node took over.
    #[error("this node may have lost the cluster's lease and does not know yet whether another leads; retry")]
    LeaseUncertain,
}

impl Cluster {
    /// Forwards a write (its caller checked and bound here) to the leader, sent again
    /// every [`RESEND_AFTER`] until answered (the leader runs it once: see `forwards`), and
    /// answers once this node has applied it, so that the caller's next read here sees it.
    pub(crate) async fn forward(&self, cmd: Command, idempotency: Option<IdempotencyKey>, reader: &Reader) -> Outcome {
        // A leader that dies (or steps down) with the write unanswered is replaced: the
        // caller hears so when the next term opens, not after the whole forward timeout.
        let mut terms = self.terms.subscribe();
        let term = *terms.borrow_and_update();
        let replaced = async move {
            // Before this node knows a term (it applied nothing since it started), only the
            // leader's answer tells.
            if term == 0 {
                std::future::pending::<()>().await;
            }
            let _ = terms.wait_for(|now| *now != term).await;
        };
        let id = format!("{}.{}", self.instance, self.forwarded.fetch_add(1, Ordering::Relaxed));
        let mut forwarded = Forwarded { id, term, resent: false, cmd, idempotency: idempotency.map(|k| k.0) };
        // Plain data; serializing cannot fail.
        let first = Bytes::from(serde_json::to_vec(&forwarded).unwrap_or_default());
        forwarded.resent = true;
        let again = Bytes::from(serde_json::to_vec(&forwarded).unwrap_or_default());
        let deadline = Instant::now() + FORWARD_TIMEOUT;
        let answered = async {
            let (mut payload, mut resent) = (first, false);
            loop {
                let wait = RESEND_AFTER.min(deadline.saturating_duration_since(Instant::now()));
                let request = async_nats::Request::new().payload(payload.clone()).timeout(Some(wait));
                let error = match self.client.send_request(self.subjects.writes.clone(), request).await {
                    Ok(reply) => return Ok(reply),
                    Err(error) => error,
                };
                match error.kind() {
                    // Nobody took it: nothing was stored.
                    async_nats::RequestErrorKind::NoResponders if !resent => return Err(not_leader()),
                    _ if Instant::now() >= deadline => {
                        return Err(unknown("the cluster's leader did not answer in time"));
                    }
                    async_nats::RequestErrorKind::TimedOut => {}
                    // The leader's subscription is back in a moment (after a reconnect), or
                    // another leader's term opens.
                    async_nats::RequestErrorKind::NoResponders => tokio::time::sleep(NO_RESPONDERS_PAUSE).await,
                    _ => return Err(unknown("the connection to the cluster's leader failed")),
                }
                (payload, resent) = (again.clone(), true);
            }
        };
        let reply = tokio::select! {
            reply = answered => reply?,
            () = replaced => return Err(unknown("the cluster's leader changed while your write was in flight")),
        };
        let outcome: Outcome = serde_json::from_slice(&reply.payload)
            .map_err(|_| unknown("the cluster's leader answered something this node cannot read"))?;
        if let Ok(committed) = &outcome
            && !applied(reader, committed.seq).await
        {
            return Err(WriteError::Unavailable(format!(
                "your write was stored (as event {}), but this node has not applied the cluster's log that far within \
                 {} s; retry with the same Idempotency-Key to get its answer",
                committed.seq,
                CATCH_UP_TIMEOUT.as_secs()
            )));
        }
        outcome
    }

    /// On the leader: runs a command (a client's, or one a follower forwarded). Only while
    /// its lease surely holds: a leader that was paused past its lease would decide from a
    /// state that may be stale. A batch it writes is fenced off by the stream anyway, but a
    /// refusal ("no such task") writes nothing; so a refusal is answered only if the lease
    /// still held once it was decided.
    pub(crate) async fn decide(&self, writer: &Writer, cmd: Command, idempotency: Option<IdempotencyKey>) -> Outcome {
        if !self.lease_current().await || !self.leading() {
            return Err(not_leader());
        }
        let outcome = writer.submit(cmd, idempotency).await;
        if matches!(outcome, Err(WriteError::Domain(_))) && !self.lease_holds() {
            return Err(unknown("this node's lease on the cluster lapsed while it decided your write"));
        }
        outcome
    }

    /// Before a read: waits (bounded) until this node's state holds every write
    /// acknowledged before it, through any node, and at least event `after` (the last the
    /// client has seen); see the module's documentation.
    pub(crate) async fn catch_up(&self, reader: &Reader, after: Option<Seq>) -> Result<(), ReadError> {
        if self.leading() && !self.lease_current().await {
            return Err(ReadError::LeaseUncertain);
        }
        let target = if self.leading() { None } else { self.leader_head().await };
        let Some(seq) = target.max(after) else { return Ok(()) };
        if applied(reader, seq).await {
            return Ok(());
        }
        Err(ReadError::Behind { seq, applied: reader.snapshot().model.head })
    }

    /// On the leader: whether its lease surely holds, waiting (bounded) for a renewal when
    /// it may have lapsed. `true` also once this node has stepped down meanwhile: it then
    /// reads as a follower.
    async fn lease_current(&self) -> bool {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            if self.lease_holds() || !self.leading() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The leader's head, if a leader answers in time.
    async fn leader_head(&self) -> Option<Seq> {
        let request = async_nats::Request::new().payload(Bytes::new()).timeout(Some(HEAD_TIMEOUT));
        let reply = self.client.send_request(self.subjects.heads.clone(), request).await.ok()?;
        std::str::from_utf8(&reply.payload).ok()?.parse().ok()
    }
}

/// Waits (at most [`CATCH_UP_TIMEOUT`]) until readers see `seq`: the snapshot includes it,
/// and so does the hub (a feed started now replays it); whether they do. The hub publishes
/// a batch a moment after the snapshot takes it: a feed started in between would begin
/// before the write it was sent after.
async fn applied(reader: &Reader, seq: Seq) -> bool {
    let mut snapshots = reader.watch();
    let caught_up = async {
        snapshots.wait_for(|s| s.model.head >= seq).await.is_ok() && {
            reader.hub().published(seq).await;
            true
        }
    };
    tokio::time::timeout(CATCH_UP_TIMEOUT, caught_up).await.unwrap_or(false)
}

/// A write that reached no leader: not stored.
pub(super) fn not_leader() -> WriteError {
    WriteError::Unavailable(
        "the cluster has no leader at the moment (an election is under way); your write was not stored; retry".into(),
    )
}

/// A write whose outcome this node cannot know.
pub(super) fn unknown(why: &str) -> WriteError {
    WriteError::Unavailable(format!(
        "outcome unknown: {why}; it may or may not have been stored: retry with the same Idempotency-Key"
    ))
}
