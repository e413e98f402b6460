//! [`AppState`]: what every handler can reach. The broker is the only way to the data;
//! the rest is what the transports themselves need.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Broker;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::workspaces::Workspaces;

/// What every handler can reach. axum clones the state for every request (and each
/// middleware): one shared allocation makes that one reference count, not one per field.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl AppState {
    pub(crate) fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub(crate) struct Shared {
    /// The operations, of this state's workspace.
    pub(crate) broker: Arc<Broker>,
    /// Every workspace's broker.
    pub(crate) workspaces: Arc<Workspaces>,
    /// The effective configuration.
    pub(crate) config: Arc<Config>,
    /// Counters for `/metrics` (HTTP responses by class).
    pub(crate) metrics: Arc<Metrics>,
    /// Cancelled when the broker stops.
    pub(crate) shutdown: CancellationToken,
    /// The generated API description (`/openapi.json`, `/capabilities`).
    pub(crate) api: Arc<utoipa::openapi::OpenApi>,
    /// Places for agents' WebSocket sessions and WebSockets before their hello
    /// (`--max-connections`).
    pub(crate) connections: Arc<Semaphore>,
    /// Places for observers: event streams, and WebSocket sessions without an agent or of a
    /// person (`--max-observers`).
    pub(crate) observers: Arc<Semaphore>,
    /// Every WebSocket session, to wait for at shutdown (axum does not).
    pub(crate) sessions: TaskTracker,
}

impl AppState {
    /// The same state for another workspace's broker.
    pub(crate) fn with_broker(&self, broker: Arc<Broker>) -> AppState {
        AppState::new(Shared {
            broker,
            workspaces: Arc::clone(&self.workspaces),
            config: Arc::clone(&self.config),
            metrics: Arc::clone(&self.metrics),
            shutdown: self.shutdown.clone(),
            api: Arc::clone(&self.api),
            connections: Arc::clone(&self.connections),
            observers: Arc::clone(&self.observers),
            sessions: self.sessions.clone(),
        })
    }
}

/// The state of the request's workspace: the one its `/w/{workspace}` prefix named (put
/// in the request's extensions by `workspace::route`), else the router's own, `default`'s.
/// Every handler takes its state through it.
pub(crate) struct App(pub(crate) AppState);

impl App {
    /// The state of `parts`' workspace.
    pub(crate) fn of(parts: &Parts, state: &AppState) -> AppState {
        parts.extensions.get::<AppState>().cloned().unwrap_or_else(|| state.clone())
    }
}

impl FromRequestParts<AppState> for App {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<App, Self::Rejection> {
        Ok(App(App::of(parts, state)))
    }
}
