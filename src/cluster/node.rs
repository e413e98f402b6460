//! [`Cluster`]: this node in the cluster. [`join`] connects to NATS, makes sure the stream
//! and the buckets exist and that this data dir belongs to the cluster; [`Cluster::run`]
//! is the node's life: follow the stream until it holds the lease and the whole stream,
//! then lead until it loses the lease (or its batches are fenced off), then follow again.
//! [`Cluster::forward`] and [`Cluster::catch_up`] are what the api layer asks of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, message::PublishMessage, object_store::ObjectStore, stream};
use async_nats::{ServerAddr, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use muster_protocol::{Seq, Topic};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::log::ReplicatedLog;
use super::snapshots::{self, Restore, Snapshots};
use super::tokens::TokenSync;
use super::wire::{self, Forwarded};
use crate::config::Config;
use crate::core::Command;
use crate::sequencer::{IdempotencyKey, Outcome, Reader, WriteError, Writer};
use crate::store::{ClusterPosition, Log, Store};

/// How long a follower waits for the leader to answer a forwarded write: longer than a
/// NATS stream's failover (5–7 s), during which the leader's publishes wait. (A leader
/// that dies meanwhile is noticed sooner: when another one takes over.)
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node waits to have applied what a read or a write must see.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a follower waits for the leader's head before a read.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long JetStream has to confirm a batch (or answer any request).
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request that creates a stream waits: nodes started together ask for the same
/// stream at once, and nats-server 2.9 answers only one of them (the others retry, then
/// find it made).
pub(super) const CREATE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `join` keeps trying to reach the NATS servers.
const CONNECT_FOR: Duration = Duration::from_secs(30);
/// Batches applied but not yet durable here: the follower's pipeline.
const APPLYING: usize = 1024;

/// The key of the leader bucket that the lease is.
const LEASE_KEY: &str = "leader";

/// A cluster node that has joined: the node, and the log its sequencer appends through.
pub(crate) struct Joined {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) log: Arc<dyn Log>,
    /// Keeps this node's token file and the cluster's tokens the same, once run.
    pub(crate) tokens: TokenSync,
}

/// This node in the cluster.
pub(crate) struct Cluster {
    node: String,
    /// This run of the node (its name and a random suffix): the sessions it holds are
    /// counted under it, so that a restarted node's old sessions are told from its new ones.
    instance: String,
    /// Each running instance's heartbeat, kept for one lease: the leader closes the sessions
    /// of an instance whose heartbeat lapsed.
    nodes: kv::Store,
    epoch: String,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    leases: kv::Store,
    log: Arc<ReplicatedLog>,
    /// Subjects: where the leader takes forwarded writes, and answers its head.
    writes: String,
    heads: String,
    lease: Duration,
    /// The node that leads, as last seen (`None` while nobody is known to).
    leader: watch::Sender<Option<String>>,
    /// Set once the node stops: no new term starts.
    stopping: AtomicBool,
    /// Why this node stopped the broker (the trimmed log left it behind while it ran).
    left_behind: std::sync::Mutex<Option<String>>,
    snapshots: Snapshots,
    /// This node's data dir (a snapshot is written there before its upload).
    data_dir: std::path::PathBuf,
}

/// What a node's heartbeat says (the value of its key in the nodes bucket).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Heartbeat {
    pub(super) node: String,
    /// The last message of the log it applied: the log is never trimmed above it.
    pub(super) applied: u64,
}

/// Connects to the cluster's NATS servers, creates the stream and the buckets if this is
/// the first node, and checks that `store` is this cluster's (or empty).
pub(crate) async fn join(config: &Config, store: &Store) -> Result<Joined, JoinError> {
    let node = config.node_name()?;
    let name = &config.cluster_name;
    let client = connect(config, &node).await?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(JETSTREAM_TIMEOUT);

    let Made { stream, leases, nodes, epoch, tokens, snapshots } =
        retry("setting up the stream and buckets", || setup(&js, config)).await?;
    let snapshots = Snapshots::new(snapshots, config.snapshot_every);

    let local = |e: &dyn std::fmt::Display| format!("cluster: this node's data dir: {e}");
    let recorded = store.views.cluster_position().map_err(|e| local(&e))?;
    if let Some(restore) = behind(store, recorded.as_ref(), &stream, &snapshots).await? {
        return Err(JoinError::Behind(Box::new(restore)));
    }
    let position = match recorded {
        Some(position) if position.epoch != epoch => {
            return Err(JoinError::Failed(format!(
                "data dir {} belongs to another cluster (epoch {}, this cluster's is {epoch}); start this node on an \
                 empty --data-dir",
                store.db.dir().display(),
                position.epoch
            )));
        }
        Some(position) => position,
        None if store.views.stored_head().map_err(|e| local(&e))? > 0 => {
            return Err(JoinError::Failed(format!(
                "data dir {} holds a single broker's history; a cluster node starts on an empty --data-dir (it \
                 fills from the cluster)",
                store.db.dir().display()
            )));
        }
        None => {
            let position = ClusterPosition { epoch: epoch.clone(), stream: 0, head: 0 };
            store.views.set_cluster_position(&position).map_err(|e| local(&e))?;
            position
        }
    };
    let max_payload = client.server_info().max_payload;
    let log = Arc::new(ReplicatedLog::new(
        Arc::clone(&store.log),
        Arc::clone(&store.views),
        js.clone(),
        format!("{name}.log"),
        node.clone(),
        max_payload,
        position,
    ));
    verify(store, &stream, &log).await?;
    tracing::info!(%node, cluster = %name, %epoch, replicas = config.replicas, "joined the cluster");
    let instance = format!("{node}-{:08x}", rand::random::<u32>());
    let cluster = Arc::new(Cluster {
        node,
        instance,
        nodes,
        epoch,
        client,
        js,
        stream,
        leases,
        log: Arc::clone(&log),
        writes: format!("{name}.write"),
        heads: format!("{name}.head"),
        lease: config.leader_lease,
        leader: watch::channel(None).0,
        stopping: AtomicBool::new(false),
        left_behind: std::sync::Mutex::new(None),
        snapshots,
        data_dir: config.data_dir.clone(),
    });
    let tokens = retry("taking the cluster's tokens", || TokenSync::adopt(tokens.clone(), &config.data_dir)).await?;
    Ok(Joined { cluster, log, tokens })
}

/// Whether this data dir must be made from a snapshot first: the log was trimmed past it
/// (an empty one too, once the log no longer starts at its first message). Where the log
/// still holds what the node lacks, it replays it: quicker than a snapshot's download and
/// import (measured: BENCHMARKS.md).
async fn behind(
    store: &Store,
    recorded: Option<&ClusterPosition>,
    stream: &stream::Stream,
    snapshots: &Snapshots,
) -> Result<Option<Restore>, JoinError> {
    let local = |e: &dyn std::fmt::Display| format!("cluster: this node's data dir: {e}");
    if recorded.is_none() && store.views.stored_head().map_err(|e| local(&e))? > 0 {
        // A single broker's history: refused by `join`, never replaced.
        return Ok(None);
    }
    let applied = recorded.map_or(0, |p| p.stream);
    let first = retry("reading the log's state", || async {
        stream.get_info().await.map(|i| i.state.first_sequence).map_err(|e| e.to_string())
    })
    .await?;
    if applied + 1 >= first {
        return Ok(None);
    }
    match retry("listing the snapshots", || snapshots.restore(applied > 0)).await? {
        Some(restore) => Ok(Some(restore)),
        None => Err(JoinError::Failed(format!(
            "cluster: the log starts at message {first}, after this node's {applied}, and the cluster has no \
             snapshot to start from"
        ))),
    }
}

/// Checks this node's history against the stream: what it holds beyond its recorded
/// position (written as leader, or applied but not yet recorded when it stopped) must be
/// what the stream holds there. A node that crashed while leading may hold a batch the
/// stream never took (never acknowledged to anyone): then its data dir has diverged.
async fn verify(store: &Store, stream: &stream::Stream, log: &ReplicatedLog) -> Result<(), JoinError> {
    let position = log.position();
    let (ours, _) = store
        .log
        .read(position.head, Seq::MAX, &[Topic::All], usize::MAX)
        .map_err(|e| JoinError::Failed(format!("cluster: reading this node's log: {e}")))?;
    let Some(last) = ours.last().map(|f| f.seq) else { return Ok(()) };
    let diverged = || JoinError::Diverged { first: position.head + 1, last };
    let mut ours = ours.into_iter().peekable();
    let mut at = position.stream;
    while ours.peek().is_some() {
        at += 1;
        let message = match stream.direct_get(at).await {
            Ok(message) => message,
            // The stream ends before this dir's history does.
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Err(diverged()),
            // Not an answer about the log: never a reason to set a data dir aside.
            Err(e) => return Err(JoinError::Failed(format!("cluster: reading message {at} of the log: {e}"))),
        };
        let batch = wire::decode(Some(&message.headers), &message.payload)
            .map_err(|e| JoinError::Failed(format!("cluster: message {at} of the log: {e}")))?;
        for frame in &batch.frames {
            match ours.next() {
                Some(mine) if mine.seq == frame.seq && mine.json == frame.json => {}
                _ => return Err(diverged()),
            }
        }
        let head = (batch.first + batch.frames.len() as Seq).saturating_sub(1).max(position.head);
        log.applied(at, head).map_err(|e| JoinError::Failed(format!("cluster: {e}")))?;
    }
    tracing::info!(last, stream = at, "this node's unconfirmed tail is in the cluster's log");
    Ok(())
}

/// Why a node could not join.
#[derive(Debug)]
pub(crate) enum JoinError {
    /// NATS, the configuration or this data dir stand in the way.
    Failed(String),
    /// This data dir holds events `first..=last` that the cluster's log does not: the node
    /// stopped while leading, before they were confirmed (so nobody was told they were
    /// made). It must start afresh and fill from the cluster.
    Diverged {
        /// The first event the log does not hold.
        first: Seq,
        /// The last event this data dir holds.
        last: Seq,
    },
    /// The log was trimmed past this data dir (or it is empty and the log no longer starts
    /// at its first message): it is to be made from the cluster's newest snapshot.
    Behind(Box<Restore>),
}

impl From<String> for JoinError {
    fn from(error: String) -> JoinError {
        JoinError::Failed(error)
    }
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Failed(error) => f.write_str(error),
            JoinError::Diverged { first, last } => write!(
                f,
                "cluster: this data dir holds events {first}..={last}, which the cluster's log does not (this node \
                 stopped while leading, before they were confirmed)"
            ),
            JoinError::Behind(restore) => write!(
                f,
                "cluster: this data dir is to be made from the snapshot at event {} (message {} of the log)",
                restore.snapshot().head,
                restore.snapshot().stream
            ),
        }
    }
}

/// Connects to the NATS servers of `config.cluster`, retrying for [`CONNECT_FOR`].
async fn connect(config: &Config, node: &str) -> Result<async_nats::Client, String> {
    let servers: Vec<ServerAddr> = config
        .cluster
        .iter()
        .map(|url| url.parse().map_err(|e| format!("--cluster {url:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    loop {
        let mut options = match &config.nats_creds {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| format!("--nats-creds {}: {e}", path.display()))?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(ca) = &config.nats_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        options = options
            .name(format!("muster {node}"))
            .request_timeout(Some(JETSTREAM_TIMEOUT))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None);
        match async_nats::connect_with_options(servers.clone(), options).await {
            Ok(client) => return Ok(client),
            Err(e) if started.elapsed() < CONNECT_FOR => {
                tracing::warn!(error = %e, "cannot reach the NATS servers yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("cluster: cannot reach the NATS servers {:?}: {e}", config.cluster)),
        }
    }
}

/// A KV bucket's stream (one value per key, kept `max_age`; zero for ever), created if it
/// does not exist; made here as a KV bucket's is made: async-nats's own `create_key_value`
/// first asks for the account's details, which nats-server 2.9 answers in a shape it does
/// not read.
async fn bucket(js: &jetstream::Context, name: &str, max_age: Duration, replicas: usize) -> Result<(), String> {
    if js.get_key_value(name).await.is_ok() {
        return Ok(());
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("the {name} bucket: {e}"))?;
    Ok(())
}

/// What a cluster is made of in JetStream.
struct Made {
    /// The log.
    stream: stream::Stream,
    /// The leader's lease.
    leases: kv::Store,
    /// Each running instance's heartbeat.
    nodes: kv::Store,
    /// The cluster's epoch (made by the first node, read by every other).
    epoch: String,
    /// The issued tokens.
    tokens: kv::Store,
    /// The snapshots' bucket.
    snapshots: ObjectStore,
}

/// The stream, the buckets and the epoch, created where missing.
///
/// Every request here waits only [`CREATE_TIMEOUT`]: nodes started together create the same
/// streams at once, and nats-server 2.9 leaves some of those requests unanswered for a
/// while; [`retry`] asks again. The handles returned use `js`'s usual timeout.
async fn setup(js: &jetstream::Context, config: &Config) -> Result<Made, String> {
    let name = &config.cluster_name;
    let quick = creating(js);
    let log = format!("{name}-log");
    quick
        .get_or_create_stream(stream::Config {
            name: log.clone(),
            subjects: vec![format!("{name}.log")],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            allow_direct: true,
            description: Some("Muster's replicated log: one message per batch".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("the log's stream: {e}"))?;
    let (leader, nodes, meta) = (format!("{name}-leader"), format!("{name}-nodes"), format!("{name}-meta"));
    let tokens = format!("{name}-tokens");
    bucket(&quick, &leader, config.leader_lease, config.replicas).await?;
    bucket(&quick, &nodes, config.leader_lease, config.replicas).await?;
    bucket(&quick, &meta, Duration::ZERO, config.replicas).await?;
    bucket(&quick, &tokens, Duration::ZERO, config.replicas).await?;
    let snapshots = format!("{name}-snapshots");
    quick
        .get_or_create_stream(stream::Config {
            name: format!("OBJ_{snapshots}"),
            subjects: vec![format!("$O.{snapshots}.C.>"), format!("$O.{snapshots}.M.>")],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            allow_direct: true,
            description: Some("Muster's snapshots: a node's store, to start from".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("the {snapshots} bucket: {e}"))?;
    let meta = quick.get_key_value(&meta).await.map_err(|e| format!("the {meta} bucket: {e}"))?;
    let candidate = format!("{:016x}", rand::random::<u64>());
    // A write's acknowledgement waits for the client's own timeout: bounded here too.
    let made = tokio::time::timeout(CREATE_TIMEOUT, meta.create("epoch", Bytes::from(candidate.clone())))
        .await
        .map_err(|_| "making the epoch: timed out")?;
    let epoch = match made {
        Ok(_) => candidate,
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => match meta.get("epoch").await {
            Ok(Some(epoch)) => String::from_utf8_lossy(&epoch).into_owned(),
            Ok(None) => return Err("the epoch key is empty".into()),
            Err(e) => return Err(format!("reading the epoch: {e}")),
        },
        Err(e) => return Err(format!("making the epoch: {e}")),
    };
    let stream = js.get_stream(&log).await.map_err(|e| format!("the log's stream: {e}"))?;
    let leases = js.get_key_value(&leader).await.map_err(|e| format!("the {leader} bucket: {e}"))?;
    let nodes = js.get_key_value(&nodes).await.map_err(|e| format!("the {nodes} bucket: {e}"))?;
    let tokens = js.get_key_value(&tokens).await.map_err(|e| format!("the {tokens} bucket: {e}"))?;
    let snapshots = js.get_object_store(&snapshots).await.map_err(|e| format!("the {snapshots} bucket: {e}"))?;
    Ok(Made { stream, leases, nodes, epoch, tokens, snapshots })
}

/// `js` with the short timeout of a request that creates a stream.
fn creating(js: &jetstream::Context) -> jetstream::Context {
    let mut js = js.clone();
    js.set_timeout(CREATE_TIMEOUT);
    js
}

/// Runs `step` until it succeeds, for at most [`CONNECT_FOR`]: servers that just started
/// take a moment to elect the leaders of the streams they hold.
async fn retry<T, F: Future<Output = Result<T, String>>>(what: &str, mut step: impl FnMut() -> F) -> Result<T, String> {
    let started = Instant::now();
    loop {
        match step().await {
            Ok(value) => return Ok(value),
            Err(error) if started.elapsed() < CONNECT_FOR => {
                tracing::warn!(%error, "cluster: {what} failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(format!("cluster: {what}: {error}")),
        }
    }
}

/// Why a node's following failed.
enum Followed {
    /// Try again.
    Failed(String),
    /// The log was trimmed past this node: it cannot go on.
    LeftBehind(String),
}

/// The log, now starting at message `first`, was trimmed past this node, which had
/// received up to message `had`.
fn left_behind(first: u64, had: u64) -> Followed {
    Followed::LeftBehind(format!(
        "the log now starts at message {first}, and this node had received up to {had}: it was trimmed past this \
         node (start it again: it is made from the cluster's newest snapshot)"
    ))
}

impl From<String> for Followed {
    fn from(error: String) -> Followed {
        Followed::Failed(error)
    }
}

impl From<&str> for Followed {
    fn from(error: &str) -> Followed {
        Followed::Failed(error.to_owned())
    }
}

/// What ended a node's following: it won the lease (and holds the whole stream), or the
/// broker stops.
enum Turn {
    Lead { revision: u64 },
    Stop,
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

    /// The last message of the stream this node holds.
    pub(crate) fn applied(&self) -> u64 {
        self.log.position().stream
    }

    /// The newest message of the stream (asks the servers; `None` if they do not answer
    /// within a second).
    pub(crate) async fn stream_head(&self) -> Option<u64> {
        self.stream_state().await.map(|(_, last)| last)
    }

    /// The oldest and the newest message the stream holds (`None` if the servers do not
    /// answer within a second).
    pub(crate) async fn stream_state(&self) -> Option<(u64, u64)> {
        let info = tokio::time::timeout(Duration::from_secs(1), self.stream.get_info()).await;
        info.ok()?.ok().map(|info| (info.state.first_sequence, info.state.last_sequence))
    }

    /// Why this node stopped the broker, if it did: the log was trimmed past it while it ran
    /// (it was paused, or cut off, for longer than a lease). Started again, it is made from
    /// the newest snapshot.
    pub(crate) fn left_behind(&self) -> Option<String> {
        self.left_behind.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

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
        loop {
            let turn = match self.follow(&writer, &shutdown).await {
                Ok(turn) => turn,
                Err(Followed::LeftBehind(error)) => {
                    tracing::error!(%error, "this node was left behind by the trimmed log; stopping");
                    *self.left_behind.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
                    stop.cancel();
                    break;
                }
                Err(Followed::Failed(error)) => {
                    tracing::warn!(%error, "following the cluster's log failed; starting again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            match turn {
                Turn::Lead { revision } => {
                    self.lead(revision, &writer, &reader, &shutdown).await;
                    self.log.follow();
                    // Before reading the stream again, every batch decided as leader must be
                    // settled (confirmed, or refused and rolled back): a command queued behind
                    // them is answered only after they are (a tick; whatever it would write
                    // is refused, as this node no longer leads).
                    let _ = writer.submit(Command::Tick, None).await;
                }
                Turn::Stop => break,
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        self.stopping.store(true, Ordering::Release);
        let _ = heartbeat.await;
        let _ = snapshots.await;
    }

    /// Takes a snapshot whenever one is due (see [`Snapshots::due`]), then trims the log,
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
            if !self.snapshots.due(self.log.position().head, self.leading()).await {
                continue;
            }
            // The other followers may find it due too: each waits a moment at random, then
            // looks again.
            let pause = snapshots::CHECK_EVERY.mul_f64(rand::random::<f64>());
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return,
            }
            if !self.snapshots.due(self.log.position().head, self.leading()).await {
                continue;
            }
            match self.snapshots.take(&writer, &self.data_dir).await {
                Ok(listed) => tracing::info!(stream = listed.stream, head = listed.head, "snapshot uploaded"),
                Err(error) => {
                    tracing::warn!(%error, "taking a snapshot failed");
                    continue;
                }
            }
            let trimmed = match snapshots::lowest_position(&self.nodes).await {
                Some(floor) => self.snapshots.prune(&self.stream, floor).await,
                None => Err("the running nodes' positions cannot be read".into()),
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
                    let beat = Heartbeat { node: self.node.clone(), applied: self.applied() };
                    // Plain data; serializing cannot fail.
                    let beat = Bytes::from(serde_json::to_vec(&beat).unwrap_or_default());
                    if let Err(error) = self.nodes.put(&self.instance, beat).await {
                        tracing::warn!(%error, "the node's heartbeat failed");
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
        let _ = self.nodes.delete(&self.instance).await;
    }

    /// On the leader: closes the sessions of every instance whose heartbeat lapsed (a node
    /// killed, or cut off for longer than a lease). Its agents' claims then wait out the
    /// usual grace, during which a client that reconnects through another node keeps them.
    async fn close_lapsed_sessions(&self, writer: &Writer, reader: &Reader) {
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
    }

    /// Applies the stream from this node's position on, and tries for the lease; returns
    /// once this node holds it, has applied the whole stream and marked its term.
    async fn follow(&self, writer: &Writer, shutdown: &CancellationToken) -> Result<Turn, Followed> {
        let from = self.log.position().stream + 1;
        let first = self.stream.get_info().await.map_err(|e| e.to_string())?.state.first_sequence;
        if from < first {
            return Err(left_behind(first, from - 1));
        }
        let consumer = self
            .stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from },
                ..Default::default()
            })
            .await
            .map_err(|e| format!("reading the log from message {from}: {e}"))?;
        let mut messages = consumer.messages().await.map_err(|e| format!("reading the log: {e}"))?;
        let mut next = from;
        let mut applying = FuturesOrdered::new();
        let mut attempt = tokio::time::interval(self.lease / 4);
        attempt.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The lease's revision once this node holds it, and the stream's last message then.
        let mut held: Option<(u64, u64)> = None;
        loop {
            if let Some((revision, target)) = held
                && applying.is_empty()
                && self.log.position().stream >= target
            {
                match self.mark_term().await {
                    Ok(()) => return Ok(Turn::Lead { revision }),
                    // Another node appended meanwhile (a deposed leader): apply it first.
                    Err(error) => {
                        tracing::warn!(%error, "marking the term failed; catching up again");
                        held = Some((revision, self.stream_head().await.unwrap_or(target)));
                    }
                }
            }
            tokio::select! {
                message = messages.next(), if applying.len() < APPLYING => {
                    let message = message.ok_or("the log's consumer ended")?.map_err(|e| e.to_string())?;
                    let stream = message.info().map_err(|e| e.to_string())?.stream_sequence;
                    if stream > next {
                        return Err(left_behind(stream, next - 1));
                    }
                    next = next.max(stream + 1);
                    let batch = wire::decode(message.headers.as_ref(), &message.payload)
                        .map_err(|e| format!("message {stream} of the log: {e}"))?;
                    if let Some(node) = message.headers.as_ref().and_then(|h| h.get(wire::NODE)) {
                        self.leader.send_if_modified(|l| replace(l, node.as_str()));
                    }
                    let head = (batch.first + batch.frames.len() as Seq).saturating_sub(1);
                    let done = writer.apply(batch).await.map_err(|e| e.to_string())?;
                    applying.push_back(async move { (stream, head, done.await) });
                }
                Some((stream, head, outcome)) = applying.next() => {
                    match outcome {
                        Ok(Ok(_)) => self.log.applied(stream, head).map_err(|e| e.to_string())?,
                        Ok(Err(error)) => return Err(format!("applying message {stream} of the log: {error}").into()),
                        Err(_) => return Ok(Turn::Stop),
                    }
                }
                _ = attempt.tick() => {
                    if self.stopping.load(Ordering::Acquire) {
                        continue;
                    }
                    // The next message this node needs is gone (its consumer need not say so:
                    // one that lost its server-side half while the node was paused waits).
                    if let Some((first, _)) = self.stream_state().await
                        && next < first
                    {
                        return Err(left_behind(first, next - 1));
                    }
                    held = match held {
                        None => match self.leases.create(LEASE_KEY, Bytes::from(self.node.clone())).await {
                            Ok(revision) => match self.stream_head().await {
                                Some(target) => {
                                    tracing::info!(node = %self.node, target, "won the lease; catching up before leading");
                                    Some((revision, target))
                                }
                                // Without the log's head this node cannot know it caught up:
                                // let another (or a later attempt) lead.
                                None => {
                                    let _ = self.leases.delete_expect_revision(LEASE_KEY, Some(revision)).await;
                                    None
                                }
                            },
                            Err(_) => {
                                if let Ok(Some(leader)) = self.leases.get(LEASE_KEY).await {
                                    self.leader.send_if_modified(|l| replace(l, &String::from_utf8_lossy(&leader)));
                                }
                                None
                            }
                        },
                        // Catching up takes a while after a long absence: keep the lease.
                        Some((revision, target)) => {
                            match self.leases.update(LEASE_KEY, Bytes::from(self.node.clone()), revision).await {
                                Ok(revision) => Some((revision, target)),
                                Err(_) => None,
                            }
                        }
                    };
                }
                () = shutdown.cancelled() => return Ok(Turn::Stop),
            }
        }
    }

    /// Publishes the message that opens this node's term (no events), right after the
    /// stream's last message as this node holds it: from then on, a batch of the previous
    /// leader (deposed, or paused past its lease) is refused by the fence.
    async fn mark_term(&self) -> Result<(), String> {
        let position = self.log.position();
        let (headers, payload) = wire::encode(&self.node, position.head + 1, &[], &[], &[]);
        let publish = PublishMessage::build().payload(payload).headers(headers).expected_last_sequence(position.stream);
        let ack = self.js.send_publish(self.log_subject(), publish).await.map_err(|e| e.to_string())?;
        let ack = ack.await.map_err(|e| e.to_string())?;
        self.log.lead(ack.sequence).map_err(|e| e.to_string())?;
        self.leader.send_replace(Some(self.node.clone()));
        tracing::info!(node = %self.node, head = position.head, stream = ack.sequence, "leading the cluster");
        Ok(())
    }

    fn log_subject(&self) -> String {
        self.writes.replace(".write", ".log")
    }

    /// Leads: takes forwarded writes and head requests, and renews the lease, until the
    /// lease is lost, a batch is fenced off, or `shutdown`.
    async fn lead(&self, mut revision: u64, writer: &Writer, reader: &Reader, shutdown: &CancellationToken) {
        let (writes, heads) =
            match (self.client.subscribe(self.writes.clone()).await, self.client.subscribe(self.heads.clone()).await) {
                (Ok(w), Ok(h)) => (w, h),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot take forwarded writes; stepping down");
                    return;
                }
            };
        let (mut writes, mut heads): (Subscriber, Subscriber) = (writes, heads);
        let mut renew = tokio::time::interval(self.lease / 4);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                Some(request) = writes.next() => {
                    let (client, writer, log) = (self.client.clone(), writer.clone(), Arc::clone(&self.log));
                    tokio::spawn(async move {
                        let Some(reply) = request.reply else { return };
                        let outcome = match serde_json::from_slice::<Forwarded>(&request.payload) {
                            Err(e) => Err(WriteError::Unavailable(format!("unreadable forwarded write: {e}"))),
                            Ok(_) if !log.leading() => Err(not_leader()),
                            Ok(f) => writer.submit(f.cmd, f.idempotency.map(IdempotencyKey)).await,
                        };
                        // The outcome is plain data; a lost reply times out at the follower.
                        let _ = client.publish(reply, serde_json::to_vec(&outcome).unwrap_or_default().into()).await;
                    });
                }
                Some(request) = heads.next() => {
                    if let Some(reply) = request.reply {
                        let head = reader.snapshot().model.head;
                        let _ = self.client.publish(reply, head.to_string().into()).await;
                    }
                }
                _ = renew.tick() => {
                    self.close_lapsed_sessions(writer, reader).await;
                    if !self.log.leading() {
                        tracing::warn!(node = %self.node, "a batch was fenced off; stepping down");
                        break;
                    }
                    match self.leases.update(LEASE_KEY, Bytes::from(self.node.clone()), revision).await {
                        Ok(r) => (revision, renewed) = (r, Instant::now()),
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                            tracing::warn!(node = %self.node, "the lease was taken over; stepping down");
                            break;
                        }
                        Err(e) if renewed.elapsed() >= self.lease => {
                            tracing::warn!(node = %self.node, error = %e, "the lease could not be renewed; stepping down");
                            break;
                        }
                        Err(e) => tracing::warn!(error = %e, "renewing the lease failed; retrying"),
                    }
                }
                () = shutdown.cancelled() => {
                    // Hand over at once rather than after the lease.
                    self.stopping.store(true, Ordering::Release);
                    let _ = self.leases.delete_expect_revision(LEASE_KEY, Some(revision)).await;
                    break;
                }
            }
        }
        self.log.follow();
        self.leader.send_if_modified(|l| {
            let changed = l.as_deref() == Some(self.node.as_str());
            if changed {
                *l = None;
            }
            changed
        });
    }

    /// Forwards a write (its caller checked and bound here) to the leader, and waits until
    /// this node has applied it, so that the caller's next read here sees it.
    pub(crate) async fn forward(&self, cmd: Command, idempotency: Option<IdempotencyKey>, reader: &Reader) -> Outcome {
        let forwarded = Forwarded { cmd, idempotency: idempotency.map(|k| k.0) };
        // Plain data; serializing cannot fail.
        let payload = serde_json::to_vec(&forwarded).unwrap_or_default();
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(FORWARD_TIMEOUT));
        // A leader that dies with the request unanswered is replaced after its lease: the
        // caller hears so then, not after the whole forward timeout.
        let asked = self.leader();
        let mut leaders = self.leader.subscribe();
        let replaced = leaders.wait_for(|now| asked.is_some() && now.is_some() && *now != asked);
        let sent = self.client.send_request(self.writes.clone(), request);
        let reply = tokio::select! {
            reply = sent => reply,
            Ok(_) = replaced => {
                return Err(WriteError::Unavailable(
                    "the cluster's leader changed while the write was in flight: it may or may not have been made; \
                     retry with the same Idempotency-Key"
                        .into(),
                ));
            }
        };
        let reply = reply.map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => not_leader(),
            async_nats::RequestErrorKind::TimedOut => WriteError::Unavailable(
                "the cluster's leader did not answer in time: the write may or may not have been made; retry with \
                 the same Idempotency-Key"
                    .into(),
            ),
            _ => WriteError::Unavailable(format!("cannot reach the cluster's leader: {e}; retry")),
        })?;
        let outcome: Outcome = serde_json::from_slice(&reply.payload)
            .map_err(|e| WriteError::Unavailable(format!("unreadable answer from the leader: {e}")))?;
        if let Ok(committed) = &outcome {
            wait_for(reader, committed.seq).await;
        }
        outcome
    }

    /// Before a read on a follower: asks the leader for its head and waits (bounded) until
    /// this node has applied it, so that a read sees every write acknowledged before it,
    /// through any node. Without a leader, the read is served from what this node has.
    pub(crate) async fn catch_up(&self, reader: &Reader) {
        if self.leading() {
            return;
        }
        let request = async_nats::Request::new().payload(Bytes::new()).timeout(Some(HEAD_TIMEOUT));
        let Ok(reply) = self.client.send_request(self.heads.clone(), request).await else { return };
        if let Some(head) = std::str::from_utf8(&reply.payload).ok().and_then(|s| s.parse::<Seq>().ok()) {
            wait_for(reader, head).await;
        }
    }
}

/// Waits (at most [`CATCH_UP_TIMEOUT`]) until the snapshot readers see includes `seq`.
async fn wait_for(reader: &Reader, seq: Seq) {
    let mut snapshots = reader.watch();
    let caught_up = snapshots.wait_for(|s| s.model.head >= seq);
    if tokio::time::timeout(CATCH_UP_TIMEOUT, caught_up).await.is_err() {
        tracing::warn!(seq, "this node has not applied the cluster's log that far yet");
    }
}

fn replace(current: &mut Option<String>, node: &str) -> bool {
    if current.as_deref() == Some(node) {
        return false;
    }
    *current = Some(node.to_owned());
    true
}

fn not_leader() -> WriteError {
    WriteError::Unavailable("the cluster has no leader at the moment (an election is under way); retry".into())
}
