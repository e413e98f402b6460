//! Following: a node applies the log's stream, in order, from its position on, and tries
//! for the lease now and then; it returns to [`life`](super::life) once it holds the lease,
//! has applied the whole stream and marked its term (then it leads), or fails (then the
//! supervisor starts it again). Every step marks the node's progress, and every request to
//! the NATS servers is bounded: a loop that stops marking is a loop that is stuck.

use std::time::Instant;

use async_nats::jetstream::{consumer, kv, message::PublishMessage};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use muster_protocol::Seq;
use tokio_util::sync::CancellationToken;

use super::nats::{CALL_TIMEOUT, JETSTREAM_TIMEOUT, NatsError, bounded};
use super::node::{Cluster, FollowError, Held, LEASE_KEY, Seen, Turn};
use super::wire;
use crate::sequencer::Writer;

/// Batches applied but not yet durable here: the follower's pipeline.
const APPLYING: usize = 1024;

impl Cluster {
    /// Applies the stream from this node's position on, and tries for the lease; returns
    /// once this node holds it, has applied the whole stream and marked its term.
    pub(super) async fn follow(&self, writer: &Writer, shutdown: &CancellationToken) -> Result<Turn, FollowError> {
        self.progress.mark();
        let from = self.log.position().stream + 1;
        let first = bounded("the log's state", CALL_TIMEOUT, self.stream.get_info()).await?.state.first_sequence;
        if from < first {
            return Err(FollowError::LeftBehind { first, had: from - 1 });
        }
        let reading = format!("reading the log from message {from}");
        let consumer = bounded(
            &reading,
            CALL_TIMEOUT,
            self.stream.create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from },
                ..Default::default()
            }),
        )
        .await?;
        let mut messages = bounded(&reading, CALL_TIMEOUT, consumer.messages()).await?;
        let mut next = from;
        let mut applying = FuturesOrdered::new();
        let mut attempt = tokio::time::interval(self.lease / 4);
        attempt.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut held: Option<Held> = None;
        let mut seen: Option<Seen> = None;
        // The last message applied, and since when.
        let mut moved = (self.log.position().stream, Instant::now());
        let mut stuck: Option<(u64, Instant)> = None;
        // The head after the last message taken, and the term of the last marker (or, until
        // one arrives, of the first message).
        let mut after = self.log.position().head;
        let mut term_now: Option<u64> = None;
        loop {
            if let Some(lease) = held
                && applying.is_empty()
                && self.log.position().stream >= lease.target
            {
                match self.mark_term(lease).await {
                    Ok(()) => return Ok(Turn::Lead(lease)),
                    // Another node appended meanwhile (a deposed leader): apply it first.
                    Err(error) => {
                        tracing::warn!(%error, "marking the term failed; catching up again");
                        let target = self.stream_head().await.unwrap_or(lease.target);
                        held = Some(Held { target, ..lease });
                    }
                }
            }
            tokio::select! {
                message = messages.next(), if applying.len() < APPLYING => {
                    let message = message
                        .ok_or_else(|| FollowError::Apply("the log's consumer ended".into()))?
                        .map_err(|e| NatsError::Failed { what: "reading the log".into(), detail: e.to_string() })?;
                    let stream = message.info().map_err(|e| FollowError::Apply(e.to_string()))?.stream_sequence;
                    if stream > next {
                        return Err(FollowError::LeftBehind { first: stream, had: next - 1 });
                    }
                    next = next.max(stream + 1);
                    let batch = wire::decode(message.headers.as_ref(), &message.payload)
                        .map_err(|e| FollowError::Apply(format!("message {stream} of the log: {e}")))?;
                    let headers = message.headers.as_ref();
                    let by = headers.and_then(|h| h.get(wire::NODE)).map(|n| n.to_string()).unwrap_or_default();
                    let id = headers.and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID));
                    let term = id.and_then(|id| wire::term_of(id.as_str())).unwrap_or_default();
                    let marker = batch.frames.is_empty() && batch.records.is_empty() && batch.expired.is_empty();
                    let mut head = (batch.first + batch.frames.len() as Seq).saturating_sub(1);
                    let what = format!("message {stream} of the log (events {}..={head}, by {by})", batch.first);
                    // A deposed leader's batch that landed without the one before it (see
                    // `log`): its leader acknowledged none of it; every node skips it.
                    let stale = batch.first > after + 1 || (!marker && term_now.is_some_and(|t| t != term));
                    let done = if stale {
                        tracing::warn!(%what, after, "skipping a deposed leader's batch that the stream took without the one before it");
                        head = after;
                        None
                    } else {
                        if !by.is_empty() {
                            self.seen_leading(&by);
                        }
                        after = after.max(head);
                        if marker || term_now.is_none() {
                            term_now = Some(term);
                        }
                        // What was forwarded to an earlier term is answered by it, or never.
                        self.terms.send_if_modified(|t| std::mem::replace(t, term) != term);
                        Some(writer.apply(batch).await.map_err(|e| FollowError::Apply(e.to_string()))?)
                    };
                    applying.push_back(async move {
                        let outcome = match done {
                            Some(done) => done.await.map(|outcome| outcome.map(drop)),
                            None => Ok(Ok(())),
                        };
                        (stream, head, what, outcome)
                    });
                }
                Some((stream, head, what, outcome)) = applying.next() => {
                    match outcome {
                        Ok(Ok(_)) => self.log.applied(stream, head).map_err(|e| FollowError::Apply(e.to_string()))?,
                        Ok(Err(error)) => return Err(FollowError::Apply(format!("applying {what}: {error}"))),
                        Err(_) => return Ok(Turn::Stop),
                    }
                    self.progress.mark();
                }
                _ = attempt.tick() => {
                    let mut stream = None;
                    if !self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                        // The next message this node needs is gone (its consumer need not say
                        // so: one that lost its server-side half while the node was paused
                        // waits).
                        stream = self.stream_state().await;
                        if let Some((first, _)) = stream
                            && next < first
                        {
                            return Err(FollowError::LeftBehind { first, had: next - 1 });
                        }
                        let had = held.is_some();
                        held = self.attempt(held, &mut seen).await;
                        if held.is_some() && !had {
                            moved = (self.log.position().stream, Instant::now());
                        }
                    }
                    // Nothing arriving for a lease while the stream holds more, or while
                    // this node holds the lease to catch up (the others wait for it): its
                    // consumer may never deliver again (seen after a nats-server's pause:
                    // no error, no message). Give the lease back and follow afresh.
                    let at = self.log.position().stream;
                    if at != moved.0 {
                        moved = (at, Instant::now());
                    }
                    // Behind the stream, at the same message, since when.
                    stuck = match stream {
                        Some((_, last)) if last > at => stuck.filter(|(was, _)| *was == at).or(Some((at, Instant::now()))),
                        _ => None,
                    };
                    let stuck_for = stuck.map_or(std::time::Duration::ZERO, |(_, since)| since.elapsed());
                    if stuck_for >= self.lease || (held.is_some() && moved.1.elapsed() >= self.lease) {
                        let last = stream.map(|(_, last)| last);
                        let (received, applying) = (next - 1, applying.len());
                        tracing::warn!(at, ?last, received, applying, "nothing of the log applied for a lease; following afresh");
                        if let Some(lease) = held {
                            let delete = self.leases.delete_expect_revision(LEASE_KEY, Some(lease.revision));
                            let _ = bounded("giving the lease back", CALL_TIMEOUT, delete).await;
                        }
                        return Err(FollowError::Stalled(moved.1.elapsed().max(stuck_for)));
                    }
                    self.progress.mark();
                }
                () = shutdown.cancelled() => return Ok(Turn::Stop),
            }
        }
    }

    /// One try for the lease (`held`: what this node holds already, kept while it catches
    /// up). Returns the lease's revision and the stream's last message when this node won
    /// (or keeps) it.
    ///
    /// The lease is a key that its holder rewrites every quarter of a lease; it never
    /// expires by itself. A node takes it when it is absent, or when it has seen the same
    /// revision for a whole lease by its own clock (so at least a lease after the holder
    /// sent it: the holder has stepped down by then, see `lead`). Nothing here depends on
    /// the servers' expiry of old messages, which nats-server 2.9 was measured to stall on
    /// for tens of seconds after a server paused.
    async fn attempt(&self, held: Option<Held>, seen: &mut Option<Seen>) -> Option<Held> {
        let name = Bytes::from(self.node.clone());
        let sent = Instant::now();
        if let Some(lease) = held {
            // Catching up takes a while after a long absence: keep the lease.
            let update = self.leases.update(LEASE_KEY, name, lease.revision);
            return match bounded("keeping the lease", CALL_TIMEOUT, update).await {
                Ok(revision) => Some(Held { revision, sent, ..lease }),
                Err(_) => None,
            };
        }
        let entry = match bounded("reading the lease", CALL_TIMEOUT, self.leases.entry(LEASE_KEY)).await {
            Ok(entry) => entry.filter(|e| e.operation == kv::Operation::Put),
            Err(error) => {
                tracing::warn!(%error, "cannot read the lease");
                return None;
            }
        };
        let taken = match entry {
            None => bounded("taking the lease", CALL_TIMEOUT, self.leases.create(LEASE_KEY, name)).await,
            Some(entry) => {
                let holder = String::from_utf8_lossy(&entry.value).into_owned();
                match seen {
                    Some(s) if s.revision == entry.revision && s.since.elapsed() >= self.lease => {
                        tracing::info!(%holder, "the lease was not renewed for a whole lease; taking it over");
                        let update = self.leases.update(LEASE_KEY, name, entry.revision);
                        bounded("taking the lease over", CALL_TIMEOUT, update).await
                    }
                    Some(s) if s.revision == entry.revision => return None,
                    _ => {
                        // Renewed since last looked: its holder leads.
                        *seen = Some(Seen { revision: entry.revision, since: Instant::now() });
                        self.seen_leading(&holder);
                        return None;
                    }
                }
            }
        };
        let revision = match taken {
            Ok(revision) => revision,
            // Another node was quicker; its key is read at the next try.
            Err(error) => {
                tracing::debug!(%error, "the lease was not taken");
                return None;
            }
        };
        match self.stream_head().await {
            Some(target) => {
                tracing::info!(node = %self.node, target, "won the lease; catching up before leading");
                Some(Held { revision, sent, target })
            }
            // Without the log's head this node cannot know it caught up: let another (or a
            // later attempt) lead.
            None => {
                let delete = self.leases.delete_expect_revision(LEASE_KEY, Some(revision));
                let _ = bounded("giving the lease back", CALL_TIMEOUT, delete).await;
                None
            }
        }
    }

    /// Publishes the message that opens this node's term (no events), right after the
    /// stream's last message as this node holds it: from then on, a batch of the previous
    /// leader (deposed, or paused past its lease) is refused by the fence.
    async fn mark_term(&self, lease: Held) -> Result<(), NatsError> {
        let position = self.log.position();
        let (headers, payload) = wire::encode(&self.node, position.head + 1, &[], &[], &[]);
        let term = rand::random::<u64>().max(1);
        let id = wire::message_id(&self.node, term, position.stream + 1);
        let publish = PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(&id)
            .expected_last_sequence(position.stream);
        let what = "opening this node's term";
        let ack = bounded(what, CALL_TIMEOUT, self.js.send_publish(self.subjects.log.clone(), publish)).await?;
        let ack = bounded(what, JETSTREAM_TIMEOUT, ack.into_future()).await?;
        let opened = self.log.lead(term, ack.sequence);
        opened.map_err(|e| NatsError::Failed { what: what.into(), detail: e.to_string() })?;
        self.leader.send_replace(Some(self.node.clone()));
        self.terms.send_replace(term);
        self.renewed(Some(lease.sent));
        tracing::info!(node = %self.node, head = position.head, stream = ack.sequence, "leading the cluster");
        Ok(())
    }
}
