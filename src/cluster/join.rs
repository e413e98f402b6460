//! [`join`]: a node joins its cluster. It connects to the NATS servers, makes sure the
//! stream and the buckets exist, and that its data dir is the cluster's: empty, behind (to
//! be made from a snapshot first), or holding nothing the log does not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store::ObjectStore, stream};
use bytes::Bytes;
use muster_protocol::{Seq, Topic};
use tokio::sync::watch;

use super::log::ReplicatedLog;
use super::nats::{CALL_TIMEOUT, CREATE_TIMEOUT, JETSTREAM_TIMEOUT, bounded, retry};
use super::node::{Cluster, Stamp, Subjects};
use super::snapshots::{Restore, Snapshots};
use super::tokens::TokenSync;
use super::trust;
use super::wire;
use crate::config::Config;
use crate::store::{ClusterPosition, Log, Store};

/// A cluster node that has joined: the node, and the log its sequencer appends through.
pub(crate) struct Joined {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) log: Arc<dyn Log>,
    /// Keeps this node's token file and the cluster's tokens the same, once run.
    pub(crate) tokens: TokenSync,
}

/// Connects to the cluster's NATS servers, creates the stream and the buckets if this is
/// the first node, and checks that `store` is this cluster's (or empty).
pub(crate) async fn join(config: &Config, store: &Store) -> Result<Joined, JoinError> {
    let node = config.node_name()?;
    let name = &config.cluster_name;
    let client = trust::connect(config, &node).await?;
    trust::refuse_open_door(config, &client).await?;
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
    warn_of_old_servers(&client.server_info().version);
    let subjects = Subjects::new(name);
    let log = Arc::new(ReplicatedLog::new(
        Arc::clone(&store.log),
        Arc::clone(&store.views),
        js.clone(),
        subjects.log.clone(),
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
        subjects,
        lease: config.leader_lease,
        leader: watch::channel(None).0,
        terms: watch::channel(0).0,
        forwarded: AtomicU64::new(0),
        leader_seen: Stamp::now(),
        lease_until: std::sync::Mutex::new(None),
        progress: Stamp::now(),
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
        bounded("the log's state", CALL_TIMEOUT, stream.get_info()).await.map(|i| i.state.first_sequence)
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
        let message = match tokio::time::timeout(CALL_TIMEOUT, stream.direct_get(at)).await {
            Err(_) => return Err(JoinError::Failed(format!("cluster: reading message {at} of the log: timed out"))),
            Ok(message) => message,
        };
        let message = match message {
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
    // The lease never expires by itself (see `follow`): its holder rewrites it.
    bucket(&quick, &leader, Duration::ZERO, config.replicas).await?;
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

/// nats-server before 2.10 can elect a lagging replica to lead a stream after one of its
/// servers was paused (seen with Debian 12's 2.9.10 in `tests/cluster.rs`: the log went back
/// about 1,700 messages, and acknowledged writes with it). Said once, as the node joins.
fn warn_of_old_servers(version: &str) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    if (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (2, 10) {
        tracing::warn!(
            version,
            "the NATS server runs a version before 2.10, which can lose a stream's acknowledged messages when one of \
             its servers stalls and comes back; use nats-server 2.10 or newer"
        );
    }
}
