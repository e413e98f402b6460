//! The hub: topic → subscribers, and each subscriber's byte-bounded outbox.
//!
//! The sync thread publishes every durable batch here. An event is serialized once (by
//! the writer, as a [`Frame`]) and its bytes are shared by every subscriber that receives
//! it; the hub matches the topics stored with the frame, never the JSON. Publishing
//! never waits: an event goes into each matching outbox, and an outbox that would exceed
//! its byte limit is marked overflowed instead — its connection then closes with 4008
//! ("slow consumer") and the client resumes from its last `seq`. Other subscribers are
//! not slowed down.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use muster_protocol::{Seq, Topic};
use tokio::sync::{Notify, watch};

use crate::frame::Frame;

/// What an outbox holds: frames to send, and whether it can still take more.
#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    overflowed: bool,
    closed: bool,
    /// While paused (a resume is being replayed), `take` hands out nothing.
    paused: bool,
}

/// Why an outbox stopped taking frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// It would have held more than its limit: the reader is too slow.
    Overflowed,
    /// The connection is going away.
    Closed,
}

/// A connection's queue of frames to send (JSON text), bounded in bytes. Filled by the hub
/// (events) and by the connection itself (replies); emptied by the connection's writer
/// task, which sends everything that is ready and flushes once.
///
/// The limit is the connection's memory budget: what its subscription holds (see
/// [`topic_cost`]) counts against it too, so a connection with many topics has less
/// room for frames.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    limit: usize,
    /// Bytes of the budget its subscription takes.
    topics: AtomicUsize,
}

/// What one subscribed topic holds, in bytes, as counted against its connection's budget:
/// its text three times (the subscriber's set, the hub's index, the feed's list for
/// replays) and the entries around them (about 250 bytes, measured: BENCHMARKS.md).
pub(crate) fn topic_cost(topic: &Topic) -> usize {
    3 * topic.to_string().len() + 256
}

impl Outbox {
    /// An empty outbox holding at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            limit,
            topics: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned lock only means a pusher panicked; the queue is still consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its budget, in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Queues a frame. Returns false, and queues nothing, if the outbox is closed or
    /// overflowed — or overflows now, in which case it is marked so and its writer woken
    /// to close the connection.
    pub(crate) fn push(&self, frame: Bytes) -> bool {
        let mut q = self.lock();
        if q.overflowed || q.closed {
            return false;
        }
        if q.bytes + frame.len() + self.topics.load(Ordering::Relaxed) > self.limit {
            q.overflowed = true;
            q.frames.clear();
            q.bytes = 0;
        } else {
            q.bytes += frame.len();
            q.frames.push_back(frame);
        }
        let queued = !q.overflowed;
        drop(q);
        self.ready.notify_one();
        queued
    }

    /// Moves every queued frame into `into` (nothing while paused); `Err` once the outbox
    /// overflowed or was closed.
    pub(crate) fn take(&self, into: &mut Vec<Bytes>) -> Result<(), Stopped> {
        let mut q = self.lock();
        if q.overflowed {
            return Err(Stopped::Overflowed);
        }
        if q.closed {
            return Err(Stopped::Closed);
        }
        if !q.paused {
            into.extend(q.frames.drain(..));
            q.bytes = 0;
        }
        Ok(())
    }

    /// Whether the outbox overflowed (its connection must close as a slow consumer).
    pub(crate) fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Waits until something was pushed (or the state changed) since the last wait.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Wakes the writer without queueing anything (it has something else to do).
    pub(crate) fn wake(&self) {
        self.ready.notify_one();
    }

    /// Holds frames back (they keep counting against the limit) until [`Outbox::resume`].
    pub(crate) fn pause(&self) {
        self.lock().paused = true;
    }

    /// Lets frames out again.
    pub(crate) fn resume(&self) {
        self.lock().paused = false;
        self.ready.notify_one();
    }

    /// Drops every queued frame, clears an overflow, and pauses (see [`Hub::reseat`]).
    fn reset(&self) {
        let mut q = self.lock();
        q.frames.clear();
        q.bytes = 0;
        q.overflowed = false;
        q.paused = true;
    }

    /// Refuses further frames and wakes the writer.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

struct Subscriber {
    outbox: Arc<Outbox>,
    topics: HashSet<Topic>,
    /// Bytes of topic text subscribed.
    bytes: usize,
}

impl Subscriber {
    /// Records the topics' text and cost (on the outbox's budget) after a change.
    fn count(&mut self) {
        self.bytes = self.topics.iter().map(|t| t.to_string().len()).sum();
        self.outbox.topics.store(self.topics.iter().map(topic_cost).sum(), Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Inner {
    /// `seq` of the last event published.
    head: Seq,
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
    /// Topic → ids of the subscribers that receive it.
    by_topic: HashMap<Topic, HashSet<u64>>,
}

/// The hub. Shared by the sync thread (publisher) and every connection.
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    /// The head, for whoever waits for an event to have been published
    /// ([`Hub::published`]).
    published: watch::Sender<Seq>,
}

/// The size of a subscription (see [`Subscription::size`]).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Size {
    /// Topics subscribed.
    pub(crate) topics: usize,
    /// Bytes of their text.
    pub(crate) bytes: usize,
    /// Bytes of the outbox's budget they take ([`topic_cost`]).
    pub(crate) cost: usize,
    /// The outbox's budget.
    pub(crate) budget: usize,
}

/// A connection's place in the hub; leaving it (drop) unsubscribes.
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    id: u64,
}

impl Hub {
    /// A hub whose last published event is `head`.
    pub(crate) fn new(head: Seq) -> Arc<Hub> {
        Arc::new(Hub { inner: Mutex::new(Inner { head, ..Inner::default() }), published: watch::Sender::new(head) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a publisher panicked mid-way; the maps are valid.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `seq` of the last event published.
    pub(crate) fn head(&self) -> Seq {
        self.lock().head
    }

    /// Number of subscribers.
    pub(crate) fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// Subscribes `outbox` to `topics`. Returns the subscription and the `seq` of the last
    /// event published before it: every later event matching the topics will be pushed,
    /// every earlier one is in the durable log — the seam a resume needs.
    pub(crate) fn subscribe(self: &Arc<Self>, outbox: Arc<Outbox>, topics: &[Topic]) -> (Subscription, Seq) {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.subscribers.insert(id, Subscriber { outbox, topics: HashSet::new(), bytes: 0 });
        add(&mut inner, id, topics);
        (Subscription { hub: Arc::clone(self), id }, inner.head)
    }

    /// Publishes durable events to every subscriber of one of their topics (or of `*`),
    /// each event once per subscriber.
    pub(crate) fn publish(&self, frames: &[Frame]) {
        let mut targets: Vec<u64> = Vec::new();
        let mut inner = self.lock();
        for frame in frames {
            inner.head = inner.head.max(frame.seq);
            targets.clear();
            let mut lists = 0;
            for topic in frame.topics.iter().chain([&Topic::All]) {
                if let Some(ids) = inner.by_topic.get(topic) {
                    targets.extend(ids);
                    lists += 1;
                }
            }
            if lists > 1 {
                targets.sort_unstable();
                targets.dedup();
            }
            for id in &targets {
                if let Some(subscriber) = inner.subscribers.get(id) {
                    subscriber.outbox.push(frame.json.clone());
                }
            }
        }
        let head = inner.head;
        drop(inner);
        self.published.send_if_modified(|published| std::mem::replace(published, head) != head);
    }

    /// Waits until the event `seq` has been published: a feed that starts after this
    /// holds it (in its replay). The sync thread publishes a batch after the snapshot that
    /// holds it, so this is later than the snapshot's `head` reaching `seq`.
    pub(crate) async fn published(&self, seq: Seq) {
        let mut published = self.published.subscribe();
        // The sender lives as long as the hub, which `self` holds.
        let _ = published.wait_for(|head| *head >= seq).await;
    }

    /// Empties `outbox`, holds it paused, and returns the `seq` of the last event
    /// published: as at [`Hub::subscribe`], every later event will be pushed and every
    /// earlier one is in the log. Done under the hub's lock, so no publish falls between.
    pub(crate) fn reseat(&self, outbox: &Outbox) -> Seq {
        let inner = self.lock();
        outbox.reset();
        inner.head
    }
}

fn add(inner: &mut Inner, id: u64, topics: &[Topic]) {
    for topic in topics {
        if let Some(s) = inner.subscribers.get_mut(&id)
            && s.topics.insert(topic.clone())
        {
            inner.by_topic.entry(topic.clone()).or_default().insert(id);
        }
    }
    if let Some(s) = inner.subscribers.get_mut(&id) {
        s.count();
    }
}

impl Subscription {
    /// Adds topics; returns every topic now subscribed, sorted as written.
    pub(crate) fn add(&self, topics: &[Topic]) -> Vec<String> {
        let mut inner = self.hub.lock();
        add(&mut inner, self.id, topics);
        sorted(&inner, self.id)
    }

    /// What is subscribed: how many topics, the bytes of their text, and what they cost of
    /// the outbox's budget.
    pub(crate) fn size(&self) -> Size {
        let inner = self.hub.lock();
        inner.subscribers.get(&self.id).map_or_else(Size::default, |s| Size {
            topics: s.topics.len(),
            bytes: s.bytes,
            cost: s.outbox.topics.load(Ordering::Relaxed),
            budget: s.outbox.limit,
        })
    }

    /// Removes topics; returns every topic still subscribed, sorted as written.
    pub(crate) fn remove(&self, topics: &[Topic]) -> Vec<String> {
        let mut inner = self.hub.lock();
        for topic in topics {
            if let Some(s) = inner.subscribers.get_mut(&self.id) {
                s.topics.remove(topic);
            }
            if let Some(ids) = inner.by_topic.get_mut(topic) {
                ids.remove(&self.id);
                if ids.is_empty() {
                    inner.by_topic.remove(topic);
                }
            }
        }
        if let Some(s) = inner.subscribers.get_mut(&self.id) {
            s.count();
        }
        sorted(&inner, self.id)
    }
}

fn sorted(inner: &Inner, id: u64) -> Vec<String> {
    let mut topics: Vec<String> =
        inner.subscribers.get(&id).map(|s| s.topics.iter().map(ToString::to_string).collect()).unwrap_or_default();
    topics.sort();
    topics
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        if let Some(s) = inner.subscribers.remove(&self.id) {
            for topic in s.topics {
                if let Some(ids) = inner.by_topic.get_mut(&topic) {
                    ids.remove(&self.id);
                    if ids.is_empty() {
                        inner.by_topic.remove(&topic);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use muster_protocol::{Event, EventKind};

    use super::*;

    fn event(seq: Seq, agent: &str) -> Frame {
        Frame::of(&Event { seq, at: Default::default(), kind: EventKind::InboxAcked { agent: agent.into(), seq } })
    }

    fn topics(list: &[&str]) -> Vec<Topic> {
        list.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn taken(outbox: &Outbox) -> Vec<String> {
        let mut frames = Vec::new();
        outbox.take(&mut frames).unwrap();
        frames.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect()
    }

    #[test]
    fn events_reach_the_subscribers_of_their_topics_once() {
        let hub = Hub::new(0);
        let (both, all, other) = (Outbox::new(1 << 20), Outbox::new(1 << 20), Outbox::new(1 << 20));
        let (_a, head) = hub.subscribe(both.clone(), &topics(&["inbox:link", "*"]));
        let (_b, _) = hub.subscribe(all.clone(), &topics(&["*"]));
        let (_c, _) = hub.subscribe(other.clone(), &topics(&["inbox:zelda"]));
        assert_eq!(head, 0);
        hub.publish(&[event(1, "link"), event(2, "kai")]);
        assert_eq!(taken(&both).len(), 2, "subscribed twice, received once");
        assert_eq!(taken(&all).len(), 2);
        assert!(taken(&other).is_empty());
        assert_eq!(hub.head(), 2);
        let (_d, head) = hub.subscribe(Outbox::new(1 << 20), &[]);
        assert_eq!(head, 2, "a new subscriber learns where live delivery starts");
    }

    #[test]
    fn an_overflowing_outbox_is_marked_and_the_others_keep_receiving() {
        let hub = Hub::new(0);
        let one = event(1, "link");
        let slow = Outbox::new(one.json.len() * 3);
        let fast = Outbox::new(1 << 20);
        let (_s, _) = hub.subscribe(slow.clone(), &topics(&["*"]));
        let (_f, _) = hub.subscribe(fast.clone(), &topics(&["*"]));
        let events: Vec<Frame> = (1..=10).map(|s| event(s, "link")).collect();
        hub.publish(&events);
        assert_eq!(slow.take(&mut Vec::new()), Err(Stopped::Overflowed));
        assert_eq!(taken(&fast).len(), 10);
    }

    #[test]
    fn leaving_unsubscribes() {
        let hub = Hub::new(0);
        let outbox = Outbox::new(1 << 20);
        let (sub, _) = hub.subscribe(outbox.clone(), &topics(&["tasks"]));
        assert_eq!(sub.add(&topics(&["chat"])), ["chat", "tasks"]);
        assert_eq!(sub.remove(&topics(&["tasks"])), ["chat"]);
        drop(sub);
        assert_eq!(hub.subscribers(), 0);
        hub.publish(&[event(1, "x")]);
        assert!(taken(&outbox).is_empty());
    }
}
