//! `/presence`: who is here, idle, offline or stuck; heartbeats.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use muster_protocol::PresenceSetArgs;
use muster_protocol::grammar::{AgentName, IdempotencyKey};
use muster_protocol::{ErrorBody, Heartbeat, PresenceEnvelope, PresenceList};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api;
use crate::transport::extract::{Auth, Idempotency, OptionalJsonBody, Query};
use crate::transport::http::chat::PageQuery;
use crate::transport::response::{HttpError, ok, written};
use crate::transport::state::{App, AppState};

/// This file's routes (one `routes!` per path, its methods together).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(get, heartbeat))
}

/// The agents seen, by name, with their status as of now, a page at a time.
#[utoipa::path(
    get, path = "/presence", tag = "presence",
    params(PageQuery),
    responses((status = 200, body = PresenceList), (status = 400, body = ErrorBody))
)]
pub(crate) async fn list(App(app): App, Auth(caller): Auth, Query(q): Query<PageQuery>) -> Result<Response, HttpError> {
    Ok(ok(api::presence::list(&app.broker, &caller, q.into()).await?))
}

/// One agent.
#[utoipa::path(
    get, path = "/presence/{agent}", tag = "presence",
    params(("agent" = AgentName, Path, description = "Agent name")),
    responses((status = 200, body = PresenceEnvelope), (status = 404, body = ErrorBody))
)]
pub(crate) async fn get(App(app): App, Auth(caller): Auth, Path(name): Path<String>) -> Result<Response, HttpError> {
    Ok(ok(api::presence::get(&app.broker, &caller, &name).await?))
}

/// Heartbeat: the agent is here; optionally set its own status (`busy`; `active` clears
/// it) and a note.
#[utoipa::path(
    post, path = "/presence/{agent}", tag = "presence",
    request_body = Option<Heartbeat>,
    params(("agent" = AgentName, Path, description = "Agent name"), ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = PresenceEnvelope), (status = 400, body = ErrorBody))
)]
pub(crate) async fn heartbeat(
    App(app): App,
    Auth(caller): Auth,
    Path(name): Path<String>,
    idem: Idempotency,
    OptionalJsonBody(heartbeat): OptionalJsonBody<Heartbeat>,
) -> Result<Response, HttpError> {
    let args = PresenceSetArgs { agent: Some(name), heartbeat };
    Ok(written(StatusCode::OK, api::presence::heartbeat(&app.broker, &caller, args, idem.0).await?))
}
