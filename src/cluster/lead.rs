//! Leading: the node that holds the lease takes forwarded writes and answers its head,
//! and renews the lease every quarter of a lease, until it loses it, a batch of its is
//! fenced off, the lease could not be renewed for a whole lease, or the broker stops.

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::kv;
use async_nats::{Message, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::forwards::{self, Forwards, Joined};
use super::nats::{CALL_TIMEOUT, bounded};
use super::node::{Cluster, Held, LEASE_KEY};
use super::reads::unknown;
use super::wire::{self, Forwarded};
use crate::core::Command;
use crate::sequencer::{IdempotencyKey, Outcome, Reader, WriteError, Writer};

impl Cluster {
    /// Leads until the lease is lost, a batch is fenced off, or `shutdown`.
    pub(super) async fn lead(
        self: &Arc<Self>,
        held: Held,
        writer: &Writer,
        reader: &Reader,
        shutdown: &CancellationToken,
    ) {
        let subscribed = tokio::try_join!(
            bounded("taking forwarded writes", CALL_TIMEOUT, self.client.subscribe(self.subjects.writes.clone())),
            bounded("answering the head", CALL_TIMEOUT, self.client.subscribe(self.subjects.heads.clone())),
        );
        let (mut writes, mut heads): (Subscriber, Subscriber) = match subscribed {
            Ok(subscribed) => subscribed,
            Err(error) => {
                tracing::warn!(%error, "cannot take forwarded writes; stepping down");
                self.step_down();
                return;
            }
        };
        let mut renew = tokio::time::interval(self.lease / 4);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut revision, mut renewed) = (held.revision, held.sent);
        // Whether this node still holds the lease as it stops leading: then it gives it back,
        // so that another node takes over at once rather than after a whole lease.
        let mut holds = true;
        // This term's forwarded writes, and the term (its marker, set as it opened).
        let (mut forwards, term) = (Forwards::default(), *self.terms.borrow());
        loop {
            self.progress.mark();
            tokio::select! {
                Some(request) = writes.next() => self.take(request, writer, &mut forwards, term),
                Some(request) = heads.next() => {
                    // Only while the lease surely holds: a follower catching up to a stale
                    // head would serve a stale read.
                    if let Some(reply) = request.reply.filter(|_| self.lease_holds()) {
                        let head = reader.snapshot().model.head;
                        let client = self.client.clone();
                        // Never waited for here: a reply that cannot be sent times out at the
                        // follower.
                        tokio::spawn(async move { client.publish(reply, head.to_string().into()).await });
                    }
                }
                _ = renew.tick() => {
                    self.close_lapsed_sessions(writer, reader).await;
                    if !self.log.leading() {
                        tracing::warn!(node = %self.node, "a batch was fenced off; stepping down");
                        break;
                    }
                    let sent = Instant::now();
                    let update = self.leases.update(LEASE_KEY, Bytes::from(self.node.clone()), revision);
                    match tokio::time::timeout(CALL_TIMEOUT, update).await {
                        Ok(Ok(r)) => {
                            (revision, renewed) = (r, sent);
                            self.renewed(Some(sent));
                        }
                        Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                            tracing::warn!(node = %self.node, "the lease was taken over; stepping down");
                            holds = false;
                            break;
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "renewing the lease failed; retrying"),
                        Err(_) => tracing::warn!("renewing the lease: the NATS servers did not answer; retrying"),
                    }
                }
                // Not renewed for a whole lease: another node may hold it now.
                () = tokio::time::sleep_until((renewed + self.lease).into()) => {
                    tracing::warn!(node = %self.node, "the lease could not be renewed in time; stepping down");
                    break;
                }
                () = shutdown.cancelled() => {
                    self.stopping.store(true, std::sync::atomic::Ordering::Release);
                    break;
                }
            }
        }
        self.step_down();
        // What was forwarded and not yet taken is answered, not left to time out: refused,
        // unless it is a copy of a write taken (it gets that one's outcome).
        while let Ok(Some(request)) = tokio::time::timeout(std::time::Duration::ZERO, writes.next()).await {
            if wire::forwarded(&request).is_ok_and(|f| forwards.knows(&f.id)) {
                self.take(request, writer, &mut forwards, term);
            } else if let Some(reply) = request.reply {
                let refused: Outcome = Err(super::reads::not_leader());
                let _ = self.client.publish(reply, serde_json::to_vec(&refused).unwrap_or_default().into()).await;
            }
        }
        if holds {
            // Only if it is still the revision this node wrote: never another's.
            let delete = self.leases.delete_expect_revision(LEASE_KEY, Some(revision));
            if let Err(error) = bounded("giving the lease back", CALL_TIMEOUT, delete).await {
                tracing::warn!(%error, "the lease was not given back; another node takes it over after a lease");
            }
        }
    }

    /// This node no longer leads: it appends nothing more, serves no read from its state
    /// as the leader's, and knows no leader until it sees one.
    pub(super) fn step_down(&self) {
        self.log.follow();
        self.renewed(None);
        self.leader.send_if_modified(|l| {
            let changed = l.as_deref() == Some(self.node.as_str());
            if changed {
                *l = None;
            }
            changed
        });
    }

    /// Runs a forwarded write and answers it (on a task of its own: writes are decided in
    /// batches, never one by one here). A copy of a write already taken in this term gets
    /// that one's outcome; a copy of a write sent in an earlier term, which that term's
    /// leader may have run, is answered "outcome unknown".
    fn take(self: &Arc<Self>, request: Message, writer: &Writer, forwards: &mut Forwards, term: u64) {
        let Some(reply) = request.reply.clone() else { return };
        let taken = match wire::forwarded(&request) {
            Err(e) => Err(WriteError::Unavailable(format!("a forwarded write was refused: {e}"))),
            Ok(f) if f.resent && f.term != term && !forwards.knows(&f.id) => {
                Err(unknown("the cluster's leader changed while your write was in flight"))
            }
            Ok(f) => Ok((forwards.join(&f.id), f)),
        };
        let (cluster, writer) = (Arc::clone(self), writer.clone());
        tokio::spawn(async move {
            let answer = match taken {
                Err(refused) => encode(&Err(refused)),
                Ok((Joined::First(outcome), Forwarded { cmd, idempotency, .. })) => {
                    let decided = encode(&cluster.decide(&writer, cmd, idempotency.map(IdempotencyKey)).await);
                    outcome.send_replace(Some(decided.clone()));
                    decided
                }
                Ok((Joined::Copy(first), _)) => match forwards::outcome(first).await {
                    Some(decided) => decided,
                    // Its first copy was dropped undecided: the follower hears of the next term.
                    None => return,
                },
            };
            // A lost reply: the follower sends the write again.
            let _ = cluster.client.publish(reply, answer).await;
        });
    }

    /// Closes the sessions of every instance whose heartbeat lapsed (a node killed, or cut
    /// off for longer than a lease). Its agents' claims then wait out the usual grace,
    /// during which a client that reconnects through another node keeps them. At most
    /// [`CALL_TIMEOUT`] in all: the lease is renewed right after.
    async fn close_lapsed_sessions(&self, writer: &Writer, reader: &Reader) {
        let closing = async {
            let snapshot = reader.snapshot();
            let instances: std::collections::BTreeSet<&String> =
                snapshot.model.agents.values().flat_map(|a| a.nodes.keys()).filter(|i| **i != self.instance).collect();
            for instance in instances {
                // Only a heartbeat known gone closes sessions (not an unanswered request).
                if let Ok(None) = self.nodes.get(instance.as_str()).await {
                    tracing::info!(%instance, "a node's heartbeat lapsed; closing its sessions");
                    let cmd = Command::ResetNode { node: instance.clone() };
                    if let Err(error) = writer.submit(cmd, None).await {
                        tracing::warn!(%error, %instance, "closing a lapsed node's sessions failed");
                    }
                }
            }
        };
        if tokio::time::timeout(CALL_TIMEOUT, closing).await.is_err() {
            tracing::warn!("closing lapsed nodes' sessions did not finish in time; again at the next renewal");
        }
    }
}

/// An outcome as the follower reads it (plain data; serializing cannot fail).
fn encode(outcome: &Outcome) -> Bytes {
    Bytes::from(serde_json::to_vec(outcome).unwrap_or_default())
}
