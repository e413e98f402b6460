//! The transports: HTTP, the WebSocket, Server-Sent Events and the long-poll, all on one
//! axum router. They only translate requests into `api::Broker` operations and replies into
//! responses and frames; nothing below this folder knows axum.
//!
//! - `routes`: the route table (and the OpenAPI description generated from it);
//! - `http/`: the HTTP handlers, one file per resource;
//! - `ws`: the WebSocket connection; `sse`: the event stream;
//! - `guard`: Host and Origin checks before any handler; `extract`: typed request input
//!   and the `Caller` from `Authorization`; `response`: replies and errors as responses;
//! - `state`: what every handler can reach (`App`: the request's workspace's);
//! - `workspace`: `/w/{workspace}/…`, every route again for each workspace;
//! - `listen`: accepting connections (HTTP/1.1, header deadline); `conns`: the bounded
//!   pool of connections that are not (yet) a WebSocket or an event stream.

mod conns;
mod extract;
pub(crate) mod guard;
mod http;
pub(crate) mod listen;
mod response;
mod routes;
mod sse;
mod state;
mod workspace;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) use extract::parse_json;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::workspaces::Workspaces;

/// How long in-flight HTTP requests may take to finish once a stop was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves every workspace on `listener` until `shutdown` is cancelled; then stops accepting, lets
/// in-flight requests finish (for a bounded time) and waits for the WebSocket sessions to
/// close (axum does not wait for upgraded connections).
pub(crate) async fn serve(
    listener: TcpListener,
    workspaces: Arc<Workspaces>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (_, api) = routes::routes();
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let observers = Arc::new(tokio::sync::Semaphore::new(config.max_observers));
    metrics.count_places([
        ("agents", Arc::clone(&connections), config.max_connections),
        ("observers", Arc::clone(&observers), config.max_observers),
    ]);
    let state = state::AppState::new(state::Shared {
        broker: workspaces.default_broker(),
        workspaces,
        config,
        metrics,
        shutdown: shutdown.clone(),
        api: Arc::new(api),
        connections,
        observers,
        sessions: tokio_util::task::TaskTracker::new(),
    });
    let sessions = state.sessions.clone();
    let conns = conns::Conns::new(state.config.max_http_connections);
    let header_timeout = state.config.header_timeout;
    let app = workspace::Dispatch::new(routes::app(state.clone()), state);
    let serve = listen::serve(listener, app, conns, header_timeout, shutdown.clone());
    // In-flight requests get a bounded time to finish: a client that stopped reading an
    // event stream must not keep the broker from stopping.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = serve => {}
        () = deadline => tracing::warn!("requests still open after {SHUTDOWN_GRACE:?}; stopping without them"),
    }
    // The sessions see the shutdown token, close with 1001 and say goodbye; wait for them.
    sessions.close();
    sessions.wait().await;
    Ok(())
}
