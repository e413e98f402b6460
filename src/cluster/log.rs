//! [`ReplicatedLog`]: the [`Log`] seam on a JetStream stream. The leader's batches are
//! published to the stream, each with `Nats-Expected-Last-Sequence` set to the message it
//! was decided after, so that a deposed or paused leader can never append after another's
//! term marker: its publish is refused, its sync fails, and the writer rolls the batch back
//! as after a failed disk sync. Batches are pipelined, so one case slips past the number:
//! the second of two batches in flight expects the first at its place; if another leader's
//! marker took that place instead, the second lands, without the first. Every node skips
//! such a batch as it reads the stream (`follow`: its events do not follow the head, and
//! its term is not the marker's before it); its leader never acknowledged it (the writer
//! rolls back everything after a refused batch). Each message's id (`Nats-Msg-Id`) names
//! its node, its term and its place. (`Nats-Expected-Last-Msg-Id` would refuse it, but a
//! replicated stream checks it only as its servers apply the message, and a mismatch there
//! stops the stream taking any write until its servers restart: nats-server 2.15.1 logs
//! "critical write error: last msgid mismatch" on all three.)
//! `sync` returns once JetStream acknowledged every batch published so far (after its
//! replicas stored them) and this node's copy is on disk. Every node keeps the log on its
//! own disk too ([`DiskLog`]): reads and replays never go to NATS.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use muster_protocol::{Seq, Topic};

use super::nats::{CALL_TIMEOUT, JETSTREAM_TIMEOUT};
use super::wire;
use crate::frame::Frame;
use crate::store::{Carried, ClusterPosition, DiskLog, Log, Replication, StoreError, Views};

/// Bytes kept free under the server's maximum payload for the headers.
const HEADROOM: usize = 4096;

/// The replicated log of a cluster node.
pub(crate) struct ReplicatedLog {
    local: Arc<DiskLog>,
    views: Arc<Views>,
    js: jetstream::Context,
    runtime: tokio::runtime::Handle,
    subject: String,
    node: String,
    /// The largest message the NATS servers take.
    max_payload: usize,
    state: Mutex<State>,
}

struct State {
    /// Whether this node may append (it holds the lease and marked its term).
    leading: bool,
    /// The stream sequence the next message must follow.
    last: u64,
    /// This node's term (a random number drawn when it won the lease): in its messages' ids.
    term: u64,
    /// Published, not yet confirmed.
    pending: VecDeque<Pending>,
    /// The last message of the stream this node holds on its disk (durable with the next
    /// sync of its store).
    position: ClusterPosition,
    /// The messages of this term the stream confirmed (message, head after it), the newest
    /// last and at most [`CONFIRMED_KEPT`]: a sync may confirm a batch that the writer then
    /// rolls back with a later one that failed, and the position goes back with it.
    confirmed: VecDeque<(u64, Seq)>,
}

/// How many confirmed messages [`State::confirmed`] keeps: far more than the batches the
/// writer can have in flight between two syncs.
const CONFIRMED_KEPT: usize = 4096;

/// One message of the stream, to publish.
struct Message {
    first: Seq,
    count: Seq,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
}

struct Pending {
    stream: u64,
    /// `seq` of the message's first event, and the head after it.
    first: Seq,
    head: Seq,
    ack: PublishAckFuture,
}

impl ReplicatedLog {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        local: Arc<DiskLog>,
        views: Arc<Views>,
        js: jetstream::Context,
        subject: String,
        node: String,
        max_payload: usize,
        position: ClusterPosition,
    ) -> ReplicatedLog {
        // This node's position in the stream is in sled, and `join` checks what this node's
        // log holds past it against the stream: it must be as durable as the log.
        local.sync_sled_with_each_commit();
        ReplicatedLog {
            local,
            views,
            js,
            runtime: tokio::runtime::Handle::current(),
            subject,
            node,
            max_payload,
            state: Mutex::new(State {
                leading: false,
                last: position.stream,
                term: 0,
                pending: VecDeque::new(),
                position,
                confirmed: VecDeque::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain numbers; go on with them.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where this node stands in the stream.
    pub(super) fn position(&self) -> ClusterPosition {
        self.state().position.clone()
    }

    /// Whether this node may append.
    pub(super) fn leading(&self) -> bool {
        self.state().leading
    }

    /// A batch that came from the stream (message `stream`, leaving the head at `head`) is
    /// durable here.
    pub(super) fn applied(&self, stream: u64, head: Seq) -> Result<(), StoreError> {
        let mut state = self.state();
        if stream <= state.position.stream {
            return Ok(());
        }
        state.position.stream = stream;
        state.position.head = head;
        state.last = state.last.max(stream);
        self.views.set_cluster_position(&state.position)
    }

    /// This node won the lease and holds the whole stream (its position is the stream's
    /// last message): it appends from now on, in `term`, after `marker`, the message that
    /// marks its term (already confirmed).
    pub(super) fn lead(&self, term: u64, marker: u64) -> Result<(), StoreError> {
        let mut state = self.state();
        state.position.stream = marker;
        let head = state.position.head;
        state.confirmed = VecDeque::from([(marker, head)]);
        state.last = marker;
        state.term = term;
        state.leading = true;
        self.views.set_cluster_position(&state.position)
    }

    /// This node no longer appends. What it published and is not confirmed yet stays
    /// pending: the sync waiting for it learns from JetStream whether it was stored (never
    /// answered as done without that), and a refused one is rolled back.
    pub(super) fn follow(&self) {
        self.state().leading = false;
    }

    /// The messages a batch becomes: one, unless it is larger than the servers take; then
    /// it is split between commands (see [`parts`]), each part with its commands'
    /// idempotency records, the forgotten keys with the last.
    fn messages(&self, first: Seq, batch: &[Frame], carried: Carried<'_>) -> Vec<Message> {
        let limit = self.max_payload.saturating_sub(HEADROOM).max(1);
        // Bytes of each part as encoded (a record is a JSON string in JSON: its escapes at
        // most double it), plus a little for the lengths and quotes around it.
        let frames: Vec<usize> = batch.iter().map(|f| f.json.len() + 64).collect();
        let records: Vec<usize> = carried.records.iter().map(|(k, r)| k.len() + 2 * r.len() + 16).collect();
        let expired = carried.expired.iter().map(|k| k.len() + 4).sum();
        let ends: Vec<(usize, usize)> =
            carried.commands.iter().map(|c| ((c.last + 1).saturating_sub(first) as usize, c.records)).collect();
        let all = parts(&frames, &records, expired, &ends, limit);
        let last = all.len() - 1;
        let mut out = Vec::with_capacity(all.len());
        for (i, (frames, records)) in all.into_iter().enumerate() {
            let expired = if i == last { carried.expired } else { &[][..] };
            let seq = first + frames.start as Seq;
            let part = &batch[frames];
            let (headers, payload) = wire::encode(&self.node, seq, part, &carried.records[records], expired);
            out.push(Message { first: seq, count: part.len() as Seq, headers, payload });
        }
        out
    }
}

/// How a batch is cut into messages of at most `limit` bytes: `frames` and `records` are
/// the encoded sizes of its events and idempotency records, `expired` that of the keys it
/// forgot (which go with the last message). It is cut only where a command's part ends
/// (`ends`: frames and records through each command), so that a leader that dies between
/// two messages leaves whole commands in the stream, each with its idempotency record. A
/// command larger than `limit` alone is one message (the servers refuse it, and the batch
/// is rolled back). Returns the frames and the records of each message.
fn parts(
    frames: &[usize],
    records: &[usize],
    expired: usize,
    ends: &[(usize, usize)],
    limit: usize,
) -> Vec<(Range<usize>, Range<usize>)> {
    let mut out = Vec::new();
    // The current message starts at `start`; `cut` is the last command end within it.
    let mut start = (0, 0);
    let mut cut = start;
    let mut size = 0;
    let last = (frames.len(), records.len());
    for (i, &(f, r)) in ends.iter().chain([&last]).enumerate() {
        let (f, r) = (f.clamp(cut.0, frames.len()), r.clamp(cut.1, records.len()));
        let tail = if i == ends.len() { expired } else { 0 };
        let grown = frames[cut.0..f].iter().sum::<usize>() + records[cut.1..r].iter().sum::<usize>() + tail;
        if size + grown > limit && cut != start {
            out.push((start.0..cut.0, start.1..cut.1));
            (start, size) = (cut, 0);
        }
        size += grown;
        cut = (f, r);
    }
    out.push((start.0..frames.len(), start.1..records.len()));
    out
}

/// Not stored: `detail` says why, for the operator.
fn not_stored(detail: impl std::fmt::Display) -> StoreError {
    StoreError::Replication(Replication::NotStored { detail: detail.to_string() })
}

/// Perhaps stored: `detail` says why it is not known, for the operator.
fn unknown(detail: impl std::fmt::Display) -> StoreError {
    StoreError::Replication(Replication::Unknown { detail: detail.to_string() })
}

impl Log for ReplicatedLog {
    fn append(&self, expected_head: Seq, batch: &[Frame], carried: Carried<'_>) -> Result<(), StoreError> {
        let not_leader = || not_stored("this node does not lead the cluster (any more)");
        for Message { first, count, headers, payload } in self.messages(expected_head + 1, batch, carried) {
            // The lock is not held while the message is handed to the NATS client: that
            // waits on the runtime, whose workers may be waiting on the lock.
            let (after, id) = {
                let state = self.state();
                if !state.leading {
                    return Err(not_leader());
                }
                (state.last, wire::message_id(&self.node, state.term, state.last + 1))
            };
            let publish =
                PublishMessage::build().payload(payload).headers(headers).message_id(&id).expected_last_sequence(after);
            // The timer is made inside the runtime (this is the writer's thread).
            let sending =
                async { tokio::time::timeout(CALL_TIMEOUT, self.js.send_publish(self.subject.clone(), publish)).await };
            let sent = self.runtime.block_on(sending);
            let mut state = self.state();
            let ack = match sent {
                Ok(Ok(ack)) => ack,
                Ok(Err(error)) => {
                    state.leading = false;
                    return Err(unknown(format!("publishing a batch failed: {error}")));
                }
                Err(_) => {
                    state.leading = false;
                    return Err(unknown("publishing a batch: the NATS client did not take it in time"));
                }
            };
            // Stepped down meanwhile: what the stream took (if anything) is read back as a
            // follower.
            if !state.leading || state.last != after {
                return Err(not_leader());
            }
            state.last += 1;
            let stream = state.last;
            state.pending.push_back(Pending { stream, first, head: first + count - 1, ack });
        }
        self.local.append(expected_head, batch, carried)
    }

    fn sync(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.state().pending);
        let mut confirmed = Vec::new();
        for p in pending {
            let confirming =
                async { tokio::time::timeout(JETSTREAM_TIMEOUT + CALL_TIMEOUT, p.ack.into_future()).await };
            match self.runtime.block_on(confirming) {
                Ok(Ok(ack)) if ack.sequence == p.stream => confirmed.push((p.stream, p.head)),
                Ok(Ok(ack)) => {
                    self.state().leading = false;
                    return Err(unknown(format!(
                        "the stream stored a batch as message {} where {} was expected",
                        ack.sequence, p.stream
                    )));
                }
                // Fenced off (another leader appended), or no stream to take it: this node
                // rolls back to what it knows is in the stream and follows from there.
                Ok(Err(error))
                    if matches!(
                        error.kind(),
                        jetstream::context::PublishErrorKind::WrongLastSequence
                            | jetstream::context::PublishErrorKind::StreamNotFound
                    ) =>
                {
                    self.state().leading = false;
                    return Err(not_stored(format!("the stream refused a batch: {error}")));
                }
                // No answer in time (or another failure): the stream may hold it; this node
                // reads it back as a follower if it does.
                Ok(Err(error)) => {
                    self.state().leading = false;
                    return Err(unknown(format!("the stream did not confirm a batch: {error}")));
                }
                Err(_) => {
                    self.state().leading = false;
                    return Err(unknown("the stream did not confirm a batch in time"));
                }
            }
        }
        if let Some(&(stream, head)) = confirmed.last() {
            let mut state = self.state();
            state.position.stream = stream;
            state.position.head = head;
            state.confirmed.extend(confirmed);
            let over = state.confirmed.len().saturating_sub(CONFIRMED_KEPT);
            state.confirmed.drain(..over);
            self.views.set_cluster_position(&state.position)?;
        }
        self.local.sync()
    }

    fn discard(&self, first: Seq) -> Result<(), StoreError> {
        // The batches from `first` on are rolled back: their messages are not waited for (if
        // the stream took one, this node reads it back as a follower). Earlier ones still are.
        // A sync may have confirmed some of them already (the writer had published them
        // before that sync began, and rolls them back with a later batch that failed): the
        // position goes back to the last message before them (at worst the term's marker),
        // or this node would follow from after events it no longer holds.
        let rewound = {
            let mut state = self.state();
            state.leading = false;
            state.pending.retain(|p| p.first < first);
            if state.position.head >= first {
                state.confirmed.retain(|(_, head)| *head < first);
                match state.confirmed.back().copied() {
                    Some((stream, head)) => {
                        tracing::info!(
                            stream,
                            head,
                            "batches the stream confirmed are rolled back; following from before them"
                        );
                        state.position.stream = stream;
                        state.position.head = head;
                        self.views.set_cluster_position(&state.position)
                    }
                    None => Err(unknown(format!(
                        "rolling back from event {first}: no message of the stream before it is known"
                    ))),
                }
            } else {
                Ok(())
            }
        };
        let discarded = self.local.discard(first);
        rewound.and(discarded)
    }

    fn read(&self, since: Seq, up_to: Seq, topics: &[Topic], limit: usize) -> Result<(Vec<Frame>, Seq), StoreError> {
        self.local.read(since, up_to, topics, limit)
    }

    fn first_retained(&self, head: Seq) -> Result<Seq, StoreError> {
        self.local.first_retained(head)
    }
}

#[cfg(test)]
mod tests {
    use super::parts;

    #[test]
    fn a_batch_is_cut_only_between_commands() {
        // Five commands of 2, 1, 3, 1 and 2 frames of 10 bytes; the 2nd and 4th made a record
        // of 5 bytes.
        let frames = [10; 9];
        let records = [5; 2];
        let ends = [(2, 0), (3, 1), (6, 1), (7, 2), (9, 2)];
        // Everything fits: one message.
        assert_eq!(parts(&frames, &records, 0, &ends, 1000), vec![(0..9, 0..2)]);
        // 45 bytes at most: cut after the 2nd command (35), the 4th (45), then the rest.
        assert_eq!(parts(&frames, &records, 0, &ends, 45), vec![(0..3, 0..1), (3..7, 1..2), (7..9, 2..2)]);
        // The records count: at 40 bytes the 2nd command (35) goes alone after the first.
        assert_eq!(parts(&frames, &records, 0, &ends, 40), vec![(0..3, 0..1), (3..6, 1..1), (6..9, 1..2)],);
        // So do the forgotten keys, with the last message, or after it in one of their own.
        assert_eq!(
            parts(&frames, &records, 30, &ends, 45),
            vec![(0..3, 0..1), (3..7, 1..2), (7..9, 2..2), (9..9, 2..2)],
        );
        assert_eq!(parts(&frames, &records, 30, &ends, 1000), vec![(0..9, 0..2)]);
        // A command above the limit goes alone, whole.
        assert_eq!(
            parts(&frames, &records, 0, &ends, 25),
            vec![(0..2, 0..0), (2..3, 0..1), (3..6, 1..1), (6..7, 1..2), (7..9, 2..2)]
        );
        // No command's end known: the batch is one message.
        assert_eq!(parts(&frames, &[], 0, &[], 25), vec![(0..9, 0..0)]);
    }
}
