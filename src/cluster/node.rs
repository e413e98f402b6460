//! [`Cluster`]: this node in the cluster, what it holds and what it knows. Made by
//! [`join`](mod@super::join); its life (follow, lead, follow again, each supervised) is in
//! [`life`](super::life); what the api layer asks of it (forwarding writes, reads that wait
//! to be current) in [`reads`](super::reads).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};
use tokio::sync::watch;

use super::log::ReplicatedLog;
use super::nats::{NatsError, bounded};
use super::snapshots::Snapshots;

/// The key of the leader bucket that the lease is.
pub(super) const LEASE_KEY: &str = "leader";

/// This node in the cluster.
pub(crate) struct Cluster {
    pub(super) node: String,
    /// This run of the node (its name and a random suffix): the sessions it holds are
    /// counted under it, so that a restarted node's old sessions are told from its new ones.
    pub(super) instance: String,
    /// Each running instance's heartbeat, kept for one lease: the leader closes the sessions
    /// of an instance whose heartbeat lapsed.
    pub(super) nodes: kv::Store,
    pub(super) epoch: String,
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) stream: stream::Stream,
    pub(super) leases: kv::Store,
    pub(super) log: Arc<ReplicatedLog>,
    /// Subjects: the log, where the leader takes forwarded writes, and where it answers its
    /// head.
    pub(super) subjects: Subjects,
    pub(super) lease: Duration,
    /// The node that leads, as last seen (`None` while nobody is known to).
    pub(super) leader: watch::Sender<Option<String>>,
    /// The term of the last message this node applied, or its own (0 before either): a
    /// write forwarded in one term and unanswered when the next opens is answered "outcome
    /// unknown" then.
    pub(super) terms: watch::Sender<u64>,
    /// How many writes this node has forwarded (their ids: see `forwards`).
    pub(super) forwarded: AtomicU64,
    /// When a leader was last known to hold the lease (this node renewing it, or another
    /// node's key found in the bucket, or its batch or head received).
    pub(super) leader_seen: Stamp,
    /// While this node leads: until when its lease surely holds (the last renewal's request
    /// was sent before the servers restarted the key's age). A read on the leader is served
    /// from its state only before then: a leader paused past its lease may have been
    /// replaced.
    pub(super) lease_until: Mutex<Option<Instant>>,
    /// When the follow or lead loop last showed it was not stuck: the supervisor restarts a
    /// loop that falls silent (see `life`).
    pub(super) progress: Stamp,
    /// Set once the node stops: no new term starts.
    pub(super) stopping: AtomicBool,
    /// Why this node stopped the broker (the trimmed log left it behind while it ran).
    pub(super) left_behind: Mutex<Option<String>>,
    pub(super) snapshots: Snapshots,
    /// This node's data dir (a snapshot is written there before its upload).
    pub(super) data_dir: std::path::PathBuf,
}

/// The cluster's subjects.
pub(super) struct Subjects {
    /// The log's stream takes its messages here.
    pub(super) log: String,
    /// The leader takes forwarded writes here.
    pub(super) writes: String,
    /// The leader answers its head here.
    pub(super) heads: String,
}

impl Subjects {
    pub(super) fn new(cluster: &str) -> Subjects {
        Subjects { log: format!("{cluster}.log"), writes: format!("{cluster}.write"), heads: format!("{cluster}.head") }
    }
}

/// A moment, kept in an atomic so that any task may set or read it.
pub(super) struct Stamp {
    origin: Instant,
    /// Milliseconds from `origin`.
    at: AtomicU64,
}

impl Stamp {
    pub(super) fn now() -> Stamp {
        Stamp { origin: Instant::now(), at: AtomicU64::new(0) }
    }

    pub(super) fn mark(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at.fetch_max(ms, Ordering::AcqRel);
    }

    /// Time since the last mark (or since it was made).
    pub(super) fn elapsed(&self) -> Duration {
        let at = self.origin + Duration::from_millis(self.at.load(Ordering::Acquire));
        at.elapsed()
    }
}

impl Cluster {
    /// The cluster's epoch (every node answers with it).
    pub(crate) fn epoch(&self) -> &str {
        &self.epoch
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// This run of the node, under which its sessions are counted.
    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether this node leads now.
    pub(crate) fn leading(&self) -> bool {
        self.log.leading()
    }

    /// The node that leads, as last seen.
    pub(crate) fn leader(&self) -> Option<String> {
        self.leader.borrow().clone()
    }

    /// How long no leader has been known to hold the lease, once that is longer than two
    /// leases (`None` before: an election takes up to a lease).
    pub(crate) fn leaderless_for(&self) -> Option<Duration> {
        let elapsed = self.leader_seen.elapsed();
        (elapsed > 2 * self.lease).then_some(elapsed)
    }

    /// The last message of the stream this node holds.
    pub(crate) fn applied(&self) -> u64 {
        self.log.position().stream
    }

    /// The newest message of the stream (`None` if the servers do not answer in time).
    pub(crate) async fn stream_head(&self) -> Option<u64> {
        self.stream_state().await.map(|(_, last)| last)
    }

    /// The oldest and the newest message the stream holds (`None` if the servers do not
    /// answer within a second).
    pub(crate) async fn stream_state(&self) -> Option<(u64, u64)> {
        let info = bounded("the log's state", Duration::from_secs(1), self.stream.get_info()).await.ok()?;
        Some((info.state.first_sequence, info.state.last_sequence))
    }

    /// Why this node stopped the broker, if it did: the log was trimmed past it while it ran
    /// (it was paused, or cut off, for longer than a lease). Started again, it is made from
    /// the newest snapshot.
    pub(crate) fn left_behind(&self) -> Option<String> {
        self.left_behind.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether this node leads and its lease surely still holds.
    pub(super) fn lease_holds(&self) -> bool {
        let until = *self.lease_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.leading() && until.is_some_and(|until| Instant::now() < until)
    }

    /// Records how long the lease holds after a renewal whose request was sent at `sent`.
    pub(super) fn renewed(&self, sent: Option<Instant>) {
        *self.lease_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = sent.map(|s| s + self.lease);
        if sent.is_some() {
            self.leader_seen.mark();
        }
    }

    /// Another node is seen leading.
    pub(super) fn seen_leading(&self, node: &str) {
        self.leader_seen.mark();
        self.leader.send_if_modified(|current| {
            if current.as_deref() == Some(node) {
                return false;
            }
            *current = Some(node.to_owned());
            true
        });
    }
}

/// What ended a node's following: it won the lease (and holds the whole stream), or the
/// broker stops.
pub(super) enum Turn {
    Lead(Held),
    Stop,
}

/// The lease, as this node holds it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    /// The lease key's revision.
    pub(super) revision: u64,
    /// When the request that made that revision was sent: the lease holds for a lease from
    /// then at least.
    pub(super) sent: std::time::Instant,
    /// The stream's last message when this node won the lease: it leads once it holds it.
    pub(super) target: u64,
}

/// The lease's revision as a follower last saw it change, and when.
pub(super) struct Seen {
    pub(super) revision: u64,
    pub(super) since: std::time::Instant,
}

/// Why a node's following failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum FollowError {
    /// The NATS servers did not answer, or answered with an error: try again.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// This node could not apply what the log holds: try again (from its position).
    #[error("{0}")]
    Apply(String),
    /// The loop showed no progress for too long (see `life`), or held the lease while
    /// nothing of the log arrived: started again.
    #[error("the follow loop showed no progress for {0:?}")]
    Stalled(std::time::Duration),
    /// The log was trimmed past this node: it cannot go on.
    #[error(
        "the log now starts at message {first}, and this node had received up to {had}: it was trimmed past this \
         node (start it again: it is made from the cluster's newest snapshot)"
    )]
    LeftBehind { first: u64, had: u64 },
}
