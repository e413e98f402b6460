//! One feed for every transport that follows events (the WebSocket, SSE, long-poll):
//! subscribe → replay → live, with no gap and no duplicate at the seam.
//!
//! [`subscribe`] subscribes an outbox in the hub and learns the `seq` where live
//! delivery starts (the hub's head at that moment); the outbox is held paused. The
//! [`Feed`] then hands out the logged events the subscriber missed, up to that `seq`, in
//! chunks read from the log, and only then lets the outbox's live events (and whatever else
//! the transport queued there, such as replies) out. Whether a resume is possible (same
//! epoch, `since` not beyond the head and still in the log) is decided here, once.

use std::sync::Arc;

use bytes::Bytes;
use muster_protocol::{Seq, Topic};

use super::broker::Broker;
use super::caller::Caller;
use super::error::ApiError;
use crate::hub::{Outbox, Size, Stopped, Subscription, topic_cost};

/// Most topics one connection may hold: each costs a hub entry, and a client following
/// more tasks than this should subscribe to `tasks`.
pub(crate) const MAX_TOPICS_PER_CONNECTION: usize = 1024;
/// Most bytes of topic text one connection may hold subscribed: with the count above, what
/// a subscription may cost stays a fraction of the connection's outbox budget (where it is
/// counted: `hub::topic_cost`), about 300 KiB at most.
pub(crate) const MAX_TOPIC_BYTES_PER_CONNECTION: usize = 16 * 1024;

/// Refuses an inbox's topic to a caller who may not follow it.
fn check_inboxes(caller: &Caller, topics: &[Topic]) -> Result<(), ApiError> {
    for topic in topics {
        if let Topic::Inbox(agent) = topic {
            caller.may_read_inbox(agent, "topics")?;
        }
    }
    Ok(())
}

/// Refuses a subscription grown by `topics` past the limits, or past half its connection's
/// budget (what is left is for the frames it is sent).
fn check_size(now: Size, topics: &[Topic]) -> Result<(), ApiError> {
    let count = now.topics + topics.len();
    let bytes = now.bytes + topics.iter().map(|t| t.to_string().len()).sum::<usize>();
    let cost = now.cost + topics.iter().map(topic_cost).sum::<usize>();
    if count > MAX_TOPICS_PER_CONNECTION || bytes > MAX_TOPIC_BYTES_PER_CONNECTION {
        return Err(ApiError::invalid(
            "topics",
            format!(
                "at most {MAX_TOPICS_PER_CONNECTION} topics and {MAX_TOPIC_BYTES_PER_CONNECTION} bytes of topic names \
                 per connection (this would be {count} topics, {bytes} bytes); subscribe to `tasks`, `chat` or `*` \
                 instead of many single ones"
            ),
        ));
    }
    if cost > now.budget / 2 {
        return Err(ApiError::invalid(
            "topics",
            format!(
                "these topics would take {cost} bytes of this connection's budget of {} (--outbox-bytes), more \
                 than half; subscribe to `tasks`, `chat` or `*` instead of many single ones",
                now.budget
            ),
        ));
    }
    Ok(())
}

/// Where a feed starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Begin {
    /// Live only.
    Live,
    /// A client resuming: everything after `since` if the log still has all of it and the
    /// epoch is the same (`None`: not said), else live only (the client must resync).
    Resume {
        /// The last `seq` the client has.
        since: Seq,
        /// The epoch that `seq` belongs to.
        epoch: Option<String>,
    },
    /// Everything after `since` that the log still has (a poll).
    Since(Seq),
}

/// How a feed started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Start {
    /// The data dir's epoch.
    pub(crate) epoch: String,
    /// The last `seq` before live events: later events arrive live.
    pub(crate) head: Seq,
    /// The oldest `seq` still in the log.
    pub(crate) first: Seq,
    /// A resume was asked for and every event after `since` is replayed.
    pub(crate) recovered: bool,
    /// A resume was asked for and is not possible: the client must re-read the state.
    pub(crate) resync: bool,
    /// The topics subscribed, as written.
    pub(crate) topics: Vec<String>,
}

/// Why a feed ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The subscriber did not read fast enough: its outbox overflowed.
    Overflowed,
    /// The outbox was closed (the connection is going away).
    Closed,
    /// The log could not be read, or the caller may no longer read it.
    Failed(ApiError),
}

/// A subscriber's events: replayed, then live (see the module docs).
pub(crate) struct Feed {
    caller: Caller,
    outbox: Arc<Outbox>,
    topics: Vec<Topic>,
    /// `(scanned, head)` while replaying: events after `scanned`, up to `head`, are still
    /// to be read from the log.
    replay: Option<(Seq, Seq)>,
    chunk: usize,
}

/// Checks and normalizes topics (`task:12` is `task:T-12`).
pub(crate) fn parse_topics<S: AsRef<str>>(raw: &[S]) -> Result<Vec<Topic>, ApiError> {
    muster_protocol::parse_topics(raw).map_err(|m| ApiError::invalid("topics", m))
}

/// Subscribes `outbox` to `topics` for `caller` and returns the subscription (dropping
/// it unsubscribes), the feed that fills the outbox's connection, and how it started.
/// `chunk`: events read from the log per step of the replay.
pub(crate) async fn subscribe(
    broker: &Broker,
    caller: &Caller,
    outbox: Arc<Outbox>,
    topics: &[String],
    begin: Begin,
    chunk: usize,
) -> Result<(Subscription, Feed, Start), ApiError> {
    broker.check(caller)?;
    let topics = parse_topics(topics)?;
    check_inboxes(caller, &topics)?;
    check_size(Size { budget: outbox.limit(), ..Size::default() }, &topics)?;
    // On a cluster's node, first what the caller must see: the hub's head is where the
    // feed goes live, and a head taken before would start it before the caller's own
    // last write (through another node, or answered here a moment before the hub had it).
    broker.catch_up(caller).await?;
    // Nothing live goes out before the replay is done.
    outbox.pause();
    let (subscription, head) = broker.hub().subscribe(Arc::clone(&outbox), &topics);
    let first = broker.read_caught_up(move |_, log| log.first_retained(head)).await?;
    let epoch = broker.epoch().to_owned();
    let (replay, recovered, resync) = match begin {
        Begin::Live => (None, false, false),
        Begin::Since(since) => (Some(since.min(head)), false, false),
        Begin::Resume { since, epoch: theirs } => {
            let same = theirs.is_none_or(|e| e == epoch);
            let ok = same && since <= head && since + 1 >= first;
            (ok.then_some(since), ok, !ok)
        }
    };
    let mut names: Vec<String> = topics.iter().map(ToString::to_string).collect();
    names.sort();
    names.dedup();
    let start = Start { epoch, head, first, recovered, resync, topics: names };
    let feed = Feed { caller: caller.clone(), outbox, topics, replay: Some((replay.unwrap_or(head), head)), chunk };
    Ok((subscription, feed, start))
}

/// Adds topics to a subscription; returns every topic now subscribed.
pub(crate) fn add_topics(
    broker: &Broker,
    caller: &Caller,
    subscription: &Subscription,
    raw: &[String],
) -> Result<Vec<String>, ApiError> {
    broker.check(caller)?;
    let topics = nonempty(raw).and_then(parse_topics)?;
    check_inboxes(caller, &topics)?;
    check_size(subscription.size(), &topics)?;
    Ok(subscription.add(&topics))
}

/// Removes topics from a subscription; returns the topics still subscribed.
pub(crate) fn remove_topics(
    broker: &Broker,
    caller: &Caller,
    subscription: &Subscription,
    raw: &[String],
) -> Result<Vec<String>, ApiError> {
    broker.check(caller)?;
    let topics = nonempty(raw).and_then(parse_topics)?;
    Ok(subscription.remove(&topics))
}

fn nonempty(raw: &[String]) -> Result<&[String], ApiError> {
    if raw.is_empty() { Err(ApiError::invalid("topics", "name at least one topic")) } else { Ok(raw) }
}

impl Feed {
    /// Moves what is ready into `into`: while replaying, the next chunk of missed events
    /// read from the log; then every frame queued in the outbox. Moves nothing when nothing
    /// is ready: wait on [`Feed::ready`].
    pub(crate) async fn take(&mut self, broker: &Broker, into: &mut Vec<Bytes>) -> Result<(), Ended> {
        while let Some((scanned, head)) = self.replay {
            if scanned >= head {
                self.replay = None;
                self.outbox.resume();
                break;
            }
            // The caller may have lost the right to read meanwhile (a revoked token).
            broker.check(&self.caller).map_err(Ended::Failed)?;
            let (topics, chunk) = (self.topics.clone(), self.chunk);
            // Boxed: a replay is rare, and its state inline would make every connection's
            // writer larger (BENCHMARKS.md, sessions).
            let read = Box::pin(broker.read_caught_up(move |_, log| log.read(scanned, head, &topics, chunk)));
            let (frames, scanned) = read.await.map_err(Ended::Failed)?;
            self.replay = Some((scanned, head));
            if !frames.is_empty() {
                into.extend(frames.into_iter().map(|f| f.json));
                return Ok(());
            }
        }
        self.outbox.take(into).map_err(|stopped| match stopped {
            Stopped::Overflowed => Ended::Overflowed,
            Stopped::Closed => Ended::Closed,
        })
    }

    /// Whether the replay is still going on.
    pub(crate) fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// Waits until something may be ready (a push to the outbox, or a state change).
    pub(crate) async fn ready(&self) {
        self.outbox.ready().await;
    }

    /// Starts over from `since`, after an overflow: the outbox is emptied, and the events
    /// after `since` are read from the log up to the hub's head, then live again. Nothing is
    /// lost, nothing is repeated.
    pub(crate) fn rewind(&mut self, broker: &Broker, since: Seq) {
        let head = broker.hub().reseat(&self.outbox);
        self.replay = Some((since.min(head), head));
    }
}
