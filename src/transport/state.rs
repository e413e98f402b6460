//! [`AppState`]: what every handler can reach. The broker is the only way to the data;
//! the rest is what the transports themselves need.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Broker;
use crate::config::Config;
use crate::metrics::Metrics;

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
    /// The operations.
    pub(crate) broker: Arc<Broker>,
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
