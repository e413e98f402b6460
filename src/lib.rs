//! # Muster — a coordination broker for teams of AI coding agents
//!
//! Agents claim tasks (a claim is a mutex with a fencing token), see each other's
//! presence, and talk in chat with @mentions and inboxes. Every change is an event in one
//! ordered, durable log; a write is acknowledged only after it is on disk.
//!
//! # Layout
//!
//! - [`core`]: the domain (tasks, claims, chat, presence) as pure `decide` and `apply`;
//!   no IO, no clock.
//! - [`sequencer`]: the single writer — batch → decide → store → flush → apply → reply.
//! - [`store`]: sled — the event log, the materialized views, group commit with `fdatasync`.
//! - [`hub`]: topics → subscribers, byte-bounded outboxes, the slow-consumer policy.
//! - [`http`]: the HTTP API, one axum router (`app()` builds it without binding).
//! - [`ws`]: the WebSocket transport (`/ws`): hello, subscriptions, resume, presence.
//! - [`sse`]: `/events/stream`, the same stream as Server-Sent Events.
//! - [`dashboard`]: `/dashboard` and `/client.js`, static files embedded in the binary.
//! - [`cli`]: the client subcommands (`muster task|chat|inbox|who|status|watch|wait`).
//! - [`mcp`]: `muster mcp`, an MCP server over stdio holding one agent's session.
//! - [`auth`]: optional tokens binding a caller to one agent identity.
//! - [`config`]: the one `Config`, from flags and `MUSTER_*` variables.
//! - [`metrics`]: counters for `/metrics`.
//!
//! [`run`] wires them together on a bound listener until the shutdown token is cancelled.

pub mod auth;
pub mod cli;
pub mod config;
pub mod core;
pub mod dashboard;
pub mod http;
pub mod hub;
pub mod mcp;
pub mod metrics;
pub mod sequencer;
pub mod sse;
pub mod store;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::core::Command;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::sequencer::{Reader, Sequencer, Writer};
use crate::store::{Store, StoreError};

/// How long in-flight HTTP requests may take to finish once a stop was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often the log is trimmed to its retention.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration contradicts itself.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store could not be opened or loaded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the broker on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets in-flight requests finish, commits what the sequencer still holds and flushes.
pub async fn run(listener: TcpListener, config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let tokens = Arc::new(auth::Tokens::open(&config.data_dir)?);
    exposure(listener.local_addr()?, &config, &tokens)?;
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
    let store = Arc::new(store);
    let metrics = Arc::new(Metrics::default());
    let (sequencer, writer, reader) =
        Sequencer::new(Arc::clone(&store), config.policy(), config.min_free_mb << 20, Arc::clone(&metrics))?;
    tracing::info!(
        head = reader.snapshot().state.head,
        epoch = store.epoch(),
        tasks = reader.snapshot().state.tasks.len(),
        "state loaded"
    );
    let tracker = TaskTracker::new();
    // The sequencer stops after the HTTP server and the sessions, so that in-flight writes
    // (and the sessions' goodbyes) are answered.
    tracker.spawn_blocking(move || sequencer.run());
    // No session survived the last stop: agents that had one are offline now.
    writer.submit(Command::ResetConnections, None).await.map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    let stop = writer.clone();
    tracker.spawn(retention(Arc::clone(&store), reader.clone(), config.clone(), shutdown.clone()));
    tracker.spawn(tick(writer.clone(), config.tick, shutdown.clone()));

    // The line users (and tests) wait for: printed only once the broker can answer.
    let addr = listener.local_addr()?;
    tracing::info!("muster listening on http://{addr} (data dir {})", config.data_dir.display());

    if tokens.enabled() {
        tracing::info!("tokens are on: every request must carry one");
    }
    let state = AppState::new(writer, reader, store, Arc::new(config), metrics, shutdown.clone(), tokens);
    let sessions = state.sessions.clone();
    // Small frames and replies go out at once: no Nagle delay waiting for the peer's ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    let serve = axum::serve(listener, http::app(state)).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // In-flight requests get a bounded time to finish: a client that stopped reading an
    // event stream must not keep the broker from stopping.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        served = serve.into_future() => served,
        () = deadline => {
            tracing::warn!("requests still open after {SHUTDOWN_GRACE:?}; stopping without them");
            Ok(())
        }
    };

    // axum does not wait for upgraded connections: the sessions see the shutdown token,
    // close with 1001 and say goodbye; wait for them.
    sessions.close();
    sessions.wait().await;
    stop.stop().await;
    tracker.close();
    tracker.wait().await;
    served.map_err(ServeError::from)
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

/// Drives time-based rules (claims of absent owners) by sending `Tick` every `every`.
async fn tick(writer: Writer, every: Duration, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(error) = writer.submit(Command::Tick, None).await {
            tracing::warn!(%error, "tick failed");
        }
    }
}

/// Trims the event log to its retention, once a minute.
async fn retention(store: Arc<Store>, reader: Reader, config: Config, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(RETENTION_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let head = reader.snapshot().state.head;
        let older_than = chrono::Utc::now() - config.retain_for;
        let store = Arc::clone(&store);
        let keep = config.retain_events;
        match tokio::task::spawn_blocking(move || store.trim(head, keep, older_than)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "trimmed the event log to its retention"),
            Ok(Err(error)) => tracing::warn!(%error, "trimming the event log failed"),
            Err(error) => tracing::warn!(%error, "trimming the event log panicked"),
        }
    }
}
