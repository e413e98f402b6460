//! # Muster — a coordination broker for teams of AI coding agents
//!
//! Agents claim tasks (a claim is a mutex with a fencing token), see each other's
//! presence, and talk in chat with @mentions and inboxes. Every change is an event in one
//! ordered, durable log; a write is acknowledged only after it is on disk.
//!
//! # Layout
//!
//! A request goes down this list and its answer (and its events) come back up:
//!
//! - [`transport`]: HTTP, WebSocket, SSE, long-poll — one axum router;
//!   they only translate;
//! - [`api`]: every operation once (`Broker`), with the caller checked, the
//!   reads, and the feed (subscribe → replay → live) every transport follows events with;
//! - [`sequencer`]: the single writer — batch → decide → apply → append
//!   → sync → publish → reply;
//! - [`core`]: the domain (tasks, claims, chat, presence) as pure `decide` and `apply`; no
//!   IO, no clock;
//! - [`store`]: sled — the event log behind the `Log` seam, the views, chat
//!   history;
//! - [`cluster`]: with `--cluster`, the log replicated on a NATS JetStream stream behind the
//!   same seam, the leader's lease, followers applying the stream and forwarding writes;
//! - [`hub`]: topics → subscribers, byte-bounded outboxes, the slow-consumer
//!   policy; [`frame`]: an event serialized once;
//! - [`auth`]: the token file; [`clock`]: the one source of "now"; [`config`]: the one
//!   `Config`; [`metrics`]: counters for `/metrics`;
//! - [`workspaces`]: every workspace a whole broker of its own (store, sequencer, hub,
//!   timers), found by its route (`/w/{workspace}/…`) or a session's `hello`;
//! - [`dashboard`]: `/dashboard` and `/client.js`, embedded;
//! - [`cli`], [`mcp`]: the client subcommands and the MCP server, built on `muster-client`.
//!
//! [`serve`] wires them together on a bound listener until the shutdown token is cancelled.
//! ARCHITECTURE.md has the picture.

// The crate's documentation is mostly for its developers (`cargo doc
// --document-private-items`): it links the modules the library does not export.
#![allow(rustdoc::private_intra_doc_links)]

mod api;
pub mod auth;
pub mod cli;
pub mod clock;
mod cluster;
pub mod config;
pub mod core;
mod dashboard;
mod frame;
mod hub;
pub mod mcp;
mod metrics;
mod sequencer;
mod store;
mod transport;
mod workspaces;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::Clock;
pub use config::Config;
/// The HTTP API's JSON body parser (what every handler decodes a body with): the error
/// names the field at fault. Public for the fuzz targets.
#[doc(hidden)]
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, muster_protocol::ErrorInfo> {
    transport::parse_json(bytes).map_err(|e| e.0)
}

use crate::api::Broker;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::workspaces::Workspaces;

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration contradicts itself, or exposes the broker without tokens.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store could not be opened or loaded.
    #[error("{0}")]
    Store(String),
    /// The cluster could not be joined (`--cluster`).
    #[error("{0}")]
    Cluster(String),
    /// The server failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the broker on `listener` with the system clock (see [`serve`]).
pub async fn run(listener: TcpListener, config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    serve(listener, config, Clock::system(), shutdown).await
}

/// Serves the broker on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets in-flight requests finish, commits what the sequencer still holds and flushes.
/// `clock` is the broker's only source of time (a manual one in tests).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    clock: Clock,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    // A cluster's node takes the cluster's tokens as it joins: checked after.
    let (store, joined) = open(&config).await?;
    let tokens = Arc::new(auth::Tokens::open(&config.data_dir)?);
    exposure(listener.local_addr()?, &config, &tokens)?;
    let log: Arc<dyn store::Log> = match &joined {
        Some(joined) => Arc::clone(&joined.log),
        None => store.log.clone(),
    };
    let metrics = Arc::new(Metrics::default());
    let common = Arc::new(api::Common::new(config.policy(), clock, tokens, Arc::clone(&metrics), config.limits()));
    let tracker = TaskTracker::new();
    let (writer, reader) =
        workspaces::start_sequencer(&store, log, &config, &common, &tracker).map_err(ServeError::Store)?;
    let snapshot = reader.snapshot();
    tracing::info!(
        head = snapshot.model.head,
        epoch = joined.as_ref().map_or_else(|| store.db.epoch(), |j| j.cluster.epoch()),
        tasks = snapshot.model.last_task,
        in_memory = snapshot.model.tasks.len(),
        "state loaded"
    );
    drop(snapshot);
    // A node stays in its cluster until its sessions said goodbye: their last writes go
    // through the leader (or are decided here, leading) and come back through the log.
    let leave = CancellationToken::new();
    let clustered = joined.is_some();
    let cluster = joined.map(|joined| {
        let run = Arc::clone(&joined.cluster).run(writer.clone(), reader.clone(), leave.clone(), shutdown.clone());
        tracker.spawn(run);
        tracker.spawn(joined.tokens.run(Arc::clone(&common.tokens), leave.clone()));
        joined.cluster
    });
    let stop = shutdown.child_token();
    let default = Arc::new(Broker::new(
        muster_protocol::names::DEFAULT_WORKSPACE,
        (writer, reader),
        store,
        &common,
        stop.clone(),
        cluster,
    ));
    workspaces::start_timers(&default, &config, &tracker)
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    let config = Arc::new(config);
    let workspaces = Workspaces::open(
        Arc::clone(&config),
        Arc::clone(&common),
        (Arc::clone(&default), stop),
        shutdown.clone(),
        tracker.clone(),
        clustered,
    )
    .await
    .map_err(ServeError::Store)?;

    // The line users (and tests) wait for: printed only once the broker can answer.
    let addr = listener.local_addr()?;
    tracing::info!("muster listening on http://{addr} (data dir {})", config.data_dir.display());
    if default.tokens_enabled() {
        tracing::info!("tokens are on: every request must carry one");
    }
    let served = transport::serve(listener, Arc::clone(&workspaces), config, metrics, shutdown).await;
    leave.cancel();
    workspaces.stop().await;
    tracker.close();
    tracker.wait().await;
    // A node the trimmed log left behind stopped itself: an error, so that a supervisor
    // starts it again (it is then made from the cluster's newest snapshot).
    if let Some(why) = default.cluster().and_then(|c| c.left_behind()) {
        return Err(ServeError::Cluster(why));
    }
    served.map_err(ServeError::from)
}

/// Opens the data dir's store and, with `--cluster`, joins the cluster. A node whose data
/// dir diverged from the cluster's log (it crashed while leading, holding batches the log
/// never took) has it set aside and starts afresh, filling from the cluster. A node whose
/// data dir the trimmed log left behind (an empty one too, once the log no longer starts at
/// its first message) has it made from the cluster's newest snapshot first.
async fn open(config: &Config) -> Result<(Arc<Store>, Option<cluster::Joined>), ServeError> {
    let mut set_aside = false;
    // A snapshot may be trimmed past while it is restored: then the next one is.
    let mut restores = 0;
    loop {
        let (dir, cache_mb) = (config.data_dir.clone(), config.cache_mb);
        let store = tokio::task::spawn_blocking(move || Store::open(&dir, cache_mb))
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
            .map_err(|e| ServeError::Store(e.to_string()))?;
        let store = Arc::new(store);
        if config.cluster.is_empty() {
            return Ok((store, None));
        }
        match cluster::join(config, &store).await {
            Ok(joined) => return Ok((store, Some(joined))),
            Err(error @ cluster::JoinError::Diverged { .. }) if !set_aside => {
                drop(store);
                let aside =
                    store::set_aside(&config.data_dir, &[auth::FILE]).map_err(|e| ServeError::Store(e.to_string()))?;
                tracing::warn!(
                    %error,
                    "the data dir was moved to {} and this node starts afresh from the cluster's log",
                    aside.display()
                );
                set_aside = true;
            }
            Err(cluster::JoinError::Behind(restore)) if restores < 3 => {
                drop(store);
                tracing::info!(
                    head = restore.snapshot().head,
                    "making the data dir from the cluster's newest snapshot"
                );
                let started = std::time::Instant::now();
                restores += 1;
                match restore.apply(&config.data_dir, config.cache_mb).await {
                    Ok(()) => tracing::info!(took = ?started.elapsed(), "the data dir was made from the snapshot"),
                    // Deleted meanwhile (two newer ones were taken), say: join again, and
                    // take the newest then.
                    Err(error) if restores < 3 => tracing::warn!(%error, "restoring the snapshot failed; trying again"),
                    Err(error) => return Err(ServeError::Cluster(error)),
                }
            }
            Err(error) => return Err(ServeError::Cluster(error.to_string())),
        }
    }
}

/// Binds the broker's address with a deep listen backlog (a burst of connects is queued,
/// not dropped) and `SO_REUSEADDR`. `muster serve` binds with it.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    transport::listen::bind(addr)
}

/// Refuses to listen beyond loopback without tokens, unless `--insecure`: anyone who can
/// reach the port could act as any agent. `muster serve` checks before it binds.
pub fn exposure(addr: std::net::SocketAddr, config: &Config, tokens: &auth::Tokens) -> Result<(), ServeError> {
    if addr.ip().is_loopback() || tokens.enabled() || config.insecure {
        return Ok(());
    }
    Err(ServeError::Config(format!(
        "{addr} is reachable from the network, and no token is issued: anyone could act as any agent. \
         Issue tokens first (muster token add NAME --data-dir {}), or pass --insecure if you really mean it",
        config.data_dir.display()
    )))
}
