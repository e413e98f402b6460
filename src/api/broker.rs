//! [`Broker`]: the broker's operations, one method each, whatever the transport. This file
//! holds what every operation goes through: the caller check before any read, and the one
//! way to the writer, which binds the command to its caller first. The operations
//! themselves are in `tasks`, `chat`, `presence`, `events`, `feed` and `system`.

use std::sync::Arc;

use muster_protocol::{ErrorCode, Timestamp};
use tokio_util::sync::CancellationToken;

use super::caller::Caller;
use super::error::ApiError;
use super::matcher::Matcher;
use crate::auth::Tokens;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::config::Limits;
use crate::core::{Command, Policy};
use crate::metrics::Metrics;
use crate::sequencer::{IdempotencyKey, Reader, Snapshot, WriteError, Writer};
use crate::store::{Log, Store, StoreError};

/// Store reads running at once. They are short; beyond this, more threads only cost
/// memory: measured, 10 connections flooding reads grew tokio's blocking pool to its 512
/// threads and the broker to 270 MB of RSS. Waiting readers queue on the semaphore.
const READ_THREADS: usize = 16;

/// What every workspace's broker shares: the rules, the clock, the tokens, the counters,
/// the limits and the matcher's threads (one pool, so that its share of the CPU holds for
/// the whole process).
pub(crate) struct Common {
    pub(crate) policy: Policy,
    pub(crate) clock: Clock,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limits: Limits,
    matcher: Arc<Matcher>,
}

impl Common {
    /// Starts the matcher's threads.
    pub(crate) fn new(
        policy: Policy,
        clock: Clock,
        tokens: Arc<Tokens>,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Common {
        let matcher = Arc::new(Matcher::start(Arc::clone(&metrics)));
        Common { policy, clock, tokens, metrics, limits, matcher }
    }
}

/// The broker of one workspace, as its transports see it.
pub(crate) struct Broker {
    /// The workspace it serves.
    workspace: String,
    /// Set when the workspace is archived: reads go on, every write is refused.
    archived: std::sync::atomic::AtomicBool,
    /// Private to this file: only [`Broker::write`] submits, after binding the caller.
    writer: Writer,
    /// Private to this file: only [`Broker::read`] hands out snapshots, after the caller
    /// check.
    reader: Reader,
    store: Arc<Store>,
    log: Arc<dyn Log>,
    readers: tokio::sync::Semaphore,
    matcher: Arc<Matcher>,
    pub(super) policy: Policy,
    pub(super) clock: Clock,
    pub(super) tokens: Arc<Tokens>,
    pub(super) metrics: Arc<Metrics>,
    /// Cancelled when the broker stops: long-polls and streams end.
    pub(super) shutdown: CancellationToken,
    /// Limits and retention.
    pub(super) limits: Limits,
    /// The board as `GET /tasks` last served it.
    pub(super) board: super::board::BoardCache,
    /// This node in its cluster (`--cluster`); `None` for a single broker.
    pub(super) cluster: Option<Arc<Cluster>>,
}

/// A write's answer: the value, and whether it was answered from an idempotency record
/// (the command was not executed again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written<T> {
    /// The reply.
    pub(crate) value: T,
    /// Replayed from the record of an earlier request with the same `Idempotency-Key`.
    pub(crate) replayed: bool,
}

impl Broker {
    /// The broker of `workspace`, over its sequencer's `writer` and `reader` and its
    /// `store`; `shutdown` ends its timers, long-polls and streams.
    pub(crate) fn new(
        workspace: &str,
        (writer, reader): (Writer, Reader),
        store: Arc<Store>,
        common: &Common,
        shutdown: CancellationToken,
        cluster: Option<Arc<Cluster>>,
    ) -> Broker {
        let log: Arc<dyn Log> = store.log.clone();
        Broker {
            workspace: workspace.to_owned(),
            archived: Default::default(),
            writer,
            reader,
            store,
            log,
            readers: tokio::sync::Semaphore::new(READ_THREADS),
            matcher: Arc::clone(&common.matcher),
            policy: common.policy.clone(),
            clock: common.clock.clone(),
            tokens: Arc::clone(&common.tokens),
            metrics: Arc::clone(&common.metrics),
            shutdown,
            limits: common.limits.clone(),
            board: Default::default(),
            cluster,
        }
    }

    /// The workspace this broker serves.
    pub(crate) fn workspace(&self) -> &str {
        &self.workspace
    }

    /// Whether the workspace is archived (read-only).
    pub(crate) fn archived(&self) -> bool {
        self.archived.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Cancelled when this workspace stops serving (the broker stops, or the workspace was
    /// removed): its sessions, long-polls and streams end.
    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Makes the workspace read-only: every write from now on is refused.
    pub(crate) fn archive(&self) {
        self.archived.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The caller a request's token makes. With tokens on: the token's agent; no token, or
    /// one that is not (or no longer) issued, is refused. With tokens off: an anonymous
    /// caller, whatever was sent.
    pub(crate) fn authenticate(&self, token: Option<&str>) -> Result<Caller, ApiError> {
        if !self.tokens.enabled() {
            return Ok(Caller::anonymous());
        }
        if self.tokens.locked() {
            return Err(locked());
        }
        match token.map(str::trim) {
            Some(token) => self
                .tokens
                .verify(token)
                .map(Caller::token)
                .ok_or_else(|| ApiError::unauthorized("the token is not valid (revoked, or from another broker)")),
            None => Err(unauthenticated()),
        }
    }

    /// Whether `caller` may use the broker at all: with tokens on, only with a token that
    /// is still issued. Every operation starts here (through `read` or `write`); resources
    /// outside the operations (the route list, the API description) call it themselves.
    pub(crate) fn check(&self, caller: &Caller) -> Result<(), ApiError> {
        self.check_token(caller)?;
        match caller.identity() {
            Some(identity) if !identity.works_in(&self.workspace) => Err(ApiError::forbidden(
                "workspace",
                format!(
                    "{}'s token works in {} only, not in workspace {} (issue one with muster token add {} \
                     --workspace {})",
                    identity.agent,
                    identity.workspaces(),
                    self.workspace,
                    identity.agent,
                    self.workspace
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Whether `caller`'s token is still issued (with tokens on), whichever workspaces it
    /// works in: for what is the broker's rather than a workspace's (the list of workspaces).
    pub(crate) fn check_token(&self, caller: &Caller) -> Result<(), ApiError> {
        if caller.is_system() || !self.tokens.enabled() {
            return Ok(());
        }
        match caller.identity() {
            Some(identity) if self.tokens.holds(identity) => Ok(()),
            Some(_) if self.tokens.locked() => Err(locked()),
            Some(_) => Err(ApiError::unauthorized("the token was revoked")),
            None => Err(unauthenticated()),
        }
    }

    /// A receiver that wakes whenever the issued tokens change: a session checks its caller
    /// again then (a revoked token's session is closed).
    pub(crate) fn token_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tokens.changes()
    }

    /// The model as of the last durable batch, for `caller`.
    pub(super) fn read(&self, caller: &Caller) -> Result<Arc<Snapshot>, ApiError> {
        self.check(caller)?;
        Ok(self.reader.snapshot())
    }

    /// The model for a read: on a cluster's follower, once this node has applied every
    /// write acknowledged before the read (through any node); see [`Cluster::catch_up`].
    pub(super) async fn read_fresh(&self, caller: &Caller) -> Result<Arc<Snapshot>, ApiError> {
        self.check(caller)?;
        self.catch_up(caller).await?;
        Ok(self.reader.snapshot())
    }

    /// On a cluster's node: waits (bounded) until this node's state may answer `caller`'s
    /// read (it holds every write acknowledged before it, and the last event the caller has
    /// seen), else 503. A single broker's state always may: it is the history.
    pub(super) async fn catch_up(&self, caller: &Caller) -> Result<(), ApiError> {
        match &self.cluster {
            Some(cluster) => cluster
                .catch_up(&self.reader, caller.after())
                .await
                .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string())),
            None => Ok(()),
        }
    }

    /// `cmd` as `caller` may send it: the caller checked, names in their one spelling, the
    /// acting agent filled in or checked. [`Broker::write`] does it too (again is harmless).
    pub(super) fn bind(&self, caller: &Caller, cmd: &mut Command) -> Result<(), ApiError> {
        self.check(caller)?;
        cmd.canonicalize();
        caller.bind(cmd)
    }

    /// The one way to the writer: `cmd` is bound to `caller` (the acting agent filled in or
    /// checked), submitted, and answered once durable.
    pub(super) async fn write(
        &self,
        caller: &Caller,
        mut cmd: Command,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Written<crate::core::Reply>, ApiError> {
        self.bind(caller, &mut cmd)?;
        if self.archived() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("workspace {} is archived: it is read-only (its data are kept)", self.workspace),
            ));
        }
        let internal = matches!(cmd, Command::Tick | Command::ResetConnections | Command::ResetNode { .. });
        let outcome = match &self.cluster {
            Some(cluster) if !cluster.leading() => cluster.forward(cmd, idempotency, &self.reader).await,
            Some(cluster) => cluster.decide(&self.writer, cmd, idempotency).await,
            None => self.writer.submit(cmd, idempotency).await,
        };
        // Counted on the node the command came to (a cluster's leader decides them all):
        // summed over the nodes, every client command once.
        let counter = match &outcome {
            Ok(committed) if !committed.replayed => Some(&self.metrics.commands_ok),
            Err(WriteError::Domain(_)) => Some(&self.metrics.commands_refused),
            _ => None,
        };
        if let Some(counter) = counter.filter(|_| !internal) {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let committed = outcome?;
        Ok(Written { value: committed.reply, replayed: committed.replayed })
    }

    /// Runs a blocking read of the store (or the log) off the async workers, at most
    /// [`READ_THREADS`] at once, for `caller`.
    pub(super) async fn read_store<T: Send + 'static>(
        &self,
        caller: &Caller,
        f: impl FnOnce(&Store, &dyn Log) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.check(caller)?;
        self.catch_up(caller).await?;
        self.read_caught_up(f).await
    }

    /// [`Broker::read_store`] without the catch-up, for a read bounded by a `seq` this
    /// node was caught up to already (a feed's replay, up to where it went live).
    pub(super) async fn read_caught_up<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store, &dyn Log) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        // The semaphore is never closed.
        let _permit = self.readers.acquire().await;
        let (store, log) = (Arc::clone(&self.store), Arc::clone(&self.log));
        match tokio::task::spawn_blocking(move || f(&store, &*log)).await {
            Ok(result) => result.map_err(ApiError::from),
            Err(e) => Err(ApiError::new(ErrorCode::Internal, format!("read failed: {e}"))),
        }
    }

    /// Runs pattern matching for `caller` on the [`Matcher`]'s threads, on the newest
    /// snapshot when its turn comes (at least as new as [`Broker::read_fresh`]'s: a request
    /// waiting in the queue holds no snapshot).
    pub(super) async fn matching<T: Send + 'static>(
        &self,
        caller: &Caller,
        f: impl FnOnce(&Snapshot) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        drop(self.read_fresh(caller).await?);
        let snapshots = self.reader.watch();
        let job = move || {
            let snapshot = Arc::clone(&snapshots.borrow());
            f(&snapshot)
        };
        self.matcher.run(job).await.map_err(|_| ApiError::new(ErrorCode::Unavailable, "the broker is stopping"))
    }

    /// Counts a command refused before it reached the writer.
    pub(super) fn refused(&self) {
        self.metrics.commands_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The hub, for subscriptions (see `feed`).
    pub(super) fn hub(&self) -> &Arc<crate::hub::Hub> {
        self.reader.hub()
    }

    /// Whether tokens are on.
    pub(crate) fn tokens_enabled(&self) -> bool {
        self.tokens.enabled()
    }

    /// The epoch of this history: the data dir's, or the cluster's.
    pub(crate) fn epoch(&self) -> &str {
        self.cluster.as_ref().map_or_else(|| self.store.db.epoch(), |c| c.epoch())
    }

    /// This node in its cluster, if it is one's.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Now, by the broker's clock.
    pub(super) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The store, for the timers (retention) and the metrics.
    pub(super) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The newest durable `seq`, without a caller: for the broker's own bookkeeping.
    pub(crate) fn head(&self) -> muster_protocol::Seq {
        self.reader.snapshot().model.head
    }

    /// Asks the sequencer to finish what is queued and stop.
    pub(crate) async fn stop(&self) {
        self.writer.stop().await;
    }
}

fn locked() -> ApiError {
    ApiError::unauthorized(
        "tokens were on and the token file is now empty, missing or unreadable: every request is refused until \
         the broker is restarted (issue tokens with muster token add NAME, or remove tokens.json, then restart)",
    )
}

fn unauthenticated() -> ApiError {
    ApiError::unauthorized(
        "this broker requires a token: send Authorization: Bearer <token> over HTTP, or token in the WebSocket \
         hello (issued by muster token add NAME)",
    )
}

impl Written<crate::core::Reply> {
    /// The reply as the shape the operation answers with; another shape is a bug.
    pub(super) fn map<T>(self, shape: impl FnOnce(crate::core::Reply) -> Option<T>) -> Result<Written<T>, ApiError> {
        let Written { value, replayed } = self;
        let unexpected = format!("unexpected reply {value:?}");
        match shape(value) {
            Some(value) => Ok(Written { value, replayed }),
            None => Err(ApiError::internal(unexpected)),
        }
    }
}

impl<T: super::json::Reply> super::json::Reply for Written<T> {
    type Body = T::Body;
    fn to_json(&self) -> bytes::Bytes {
        self.value.to_json()
    }
}
