//! The HTTP API: one axum router for every route, built by [`app`] without binding.
//!
//! Handlers read from the latest snapshot (never waiting on the sequencer) and send writes
//! to the sequencer, answering only once they are durable. Routes are registered through
//! `utoipa-axum`, so `/openapi.json` and `/capabilities` are generated from the same table
//! that serves requests.

pub mod chat;
mod error;
mod events;
mod extract;
pub mod guard;
pub mod ops;
pub mod presence;
mod system;
pub mod tasks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Router, middleware};
use bytes::Bytes;
use muster_protocol::ErrorCode;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use extract::{Query, parse_json};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sequencer::{Reader, Writer};
use crate::store::Store;

/// Largest request body accepted: a task with a full 8 KiB description and its JSON
/// escaping fits several times over.
pub const MAX_BODY: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Submits writes.
    pub writer: Writer,
    /// Reads the latest durable state.
    pub reader: Reader,
    /// Reads the log, chat and inboxes.
    pub store: Arc<Store>,
    /// The effective configuration.
    pub config: Arc<Config>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the broker stops: long-polls return at once.
    pub shutdown: CancellationToken,
    /// The generated API description (`/openapi.json`, `/capabilities`).
    pub api: Arc<utoipa::openapi::OpenApi>,
    /// Permits for WebSocket and SSE connections (`max-connections`).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// Every WebSocket session, to wait for at shutdown (axum does not).
    pub sessions: tokio_util::task::TaskTracker,
    /// Issued tokens (none: tokens are off).
    pub tokens: Arc<crate::auth::Tokens>,
}

impl AppState {
    /// The state for [`app`], with the API description generated from [`routes()`].
    pub fn new(
        writer: Writer,
        reader: Reader,
        store: Arc<Store>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tokens: Arc<crate::auth::Tokens>,
    ) -> AppState {
        let (_, api) = routes();
        let connections = crate::ws::limit(config.max_connections);
        let sessions = tokio_util::task::TaskTracker::new();
        AppState { writer, reader, store, config, metrics, shutdown, api: Arc::new(api), connections, sessions, tokens }
    }
}

#[derive(OpenApi)]
#[openapi(info(
    title = "Muster",
    description = "Coordination broker for teams of AI coding agents: task board with claim mutex, presence, chat, events."
))]
struct ApiDoc;

/// The routes and their OpenAPI description, from one table.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tasks::create, tasks::list))
        .routes(routes!(tasks::next, tasks::claim_next))
        .routes(routes!(tasks::get, tasks::update))
        .routes(routes!(tasks::claim))
        .routes(routes!(tasks::release))
        .routes(routes!(tasks::complete))
        .routes(routes!(presence::list))
        .routes(routes!(presence::get, presence::heartbeat))
        .routes(routes!(chat::post, chat::list))
        .routes(routes!(chat::channels))
        .routes(routes!(chat::inbox))
        .routes(routes!(chat::ack))
        .routes(routes!(events::poll))
        .routes(routes!(crate::ws::upgrade))
        .routes(routes!(crate::sse::stream))
        .routes(routes!(system::health))
        .routes(routes!(system::metrics))
        .routes(routes!(system::capabilities))
        .routes(routes!(system::openapi))
        .routes(routes!(crate::dashboard::root))
        .routes(routes!(crate::dashboard::page))
        .routes(routes!(crate::dashboard::app))
        .routes(routes!(crate::dashboard::style))
        .routes(routes!(crate::dashboard::client))
        .split_for_parts()
}

/// The whole application, ready to serve.
pub fn app(state: AppState) -> Router {
    let (router, _) = routes();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(middleware::from_fn_with_state(state.clone(), count_responses))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}; GET /capabilities lists them", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}; GET /capabilities lists the routes", uri.path()),
    )
}

async fn count_responses(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let response = next.run(req).await;
    state.metrics.http_response(response.status().as_u16());
    response
}

/// A JSON response from a serializable value.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(status, Bytes::from(body)),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A JSON response from bytes already serialized.
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{"<key>": [raw, raw, ...]}` from JSON values already serialized (log entries,
/// stored messages): a copy, not a re-serialization.
pub fn json_list(key: &str, items: &[Bytes], extra: &[(&str, String)]) -> Bytes {
    let len: usize = items.iter().map(|i| i.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 64);
    out.push(b'{');
    for (k, v) in extra {
        out.extend_from_slice(format!("\"{k}\":{v},").as_bytes());
    }
    out.extend_from_slice(format!("\"{key}\":[").as_bytes());
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// Store reads running at once. They are short; beyond this, more threads only cost
/// memory: measured, 10 connections flooding reads grew tokio's blocking pool to its 512
/// threads and the broker to 270 MB of RSS. Waiting readers queue on the semaphore.
const READ_THREADS: usize = 16;
static READERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(READ_THREADS);

/// Runs a blocking store read off the async workers, at most 16 at once.
pub async fn read_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    // The semaphore is never closed.
    let _permit = READERS.acquire().await;
    tokio::task::spawn_blocking(f).await
}

/// Runs blocking store work off the async workers (see [`read_blocking`]).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match read_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(ErrorCode::Internal, format!("read failed: {e}"))),
    }
}
