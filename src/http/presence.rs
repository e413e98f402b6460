//! `/presence`: who is here, idle, offline or stuck; heartbeats.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use chrono::Utc;
use muster_protocol::{ErrorBody, Heartbeat, Presence, PresenceEnvelope, PresenceList};

use super::extract::{Idempotency, OptionalJsonBody};
use super::{ApiError, AppState, json_response};
use crate::core::{Reply, State as Board, presence, validate_agent};

fn view(state: &AppState, board: &Board, name: &str) -> Option<Presence> {
    let agent = board.agents.get(name)?;
    Some(presence(board, &state.config.policy(), agent, Utc::now()))
}

/// Every agent seen, by name, with its status as of now.
#[utoipa::path(get, path = "/presence", tag = "presence", responses((status = 200, body = PresenceList)))]
pub async fn list(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &everyone(&state))
}

/// Every agent seen, by name, as of now.
pub fn everyone(state: &AppState) -> PresenceList {
    let snapshot = state.reader.snapshot();
    let (policy, now) = (state.config.policy(), Utc::now());
    PresenceList {
        agents: snapshot.state.agents.values().map(|a| presence(&snapshot.state, &policy, a, now)).collect(),
    }
}

/// One agent.
#[utoipa::path(
    get, path = "/presence/{agent}", tag = "presence",
    params(("agent" = String, Path, description = "Agent name")),
    responses((status = 200, body = PresenceEnvelope), (status = 404, body = ErrorBody))
)]
pub async fn get(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    validate_agent("agent", &name)?;
    let snapshot = state.reader.snapshot();
    match view(&state, &snapshot.state, &name) {
        Some(agent) => Ok(json_response(StatusCode::OK, &PresenceEnvelope { agent })),
        None => Err(ApiError::not_found(format!("agent {name} has not been seen"))),
    }
}

/// Heartbeat: the agent is here; optionally set its own status (`busy`; `active` clears
/// it) and a note.
#[utoipa::path(
    post, path = "/presence/{agent}", tag = "presence",
    request_body = Heartbeat,
    params(("agent" = String, Path, description = "Agent name"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = PresenceEnvelope), (status = 400, body = ErrorBody))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    Path(name): Path<String>,
    idem: Idempotency,
    OptionalJsonBody(heartbeat): OptionalJsonBody<Heartbeat>,
) -> Result<Response, ApiError> {
    let committed =
        state.writer.submit(crate::core::Command::Heartbeat { agent: name.clone(), heartbeat }, idem.0).await?;
    let Reply::Agent(agent) = committed.reply else {
        return Err(ApiError::new(muster_protocol::ErrorCode::Internal, "unexpected reply"));
    };
    let snapshot = state.reader.snapshot();
    let view = presence(&snapshot.state, &state.config.policy(), &agent, Utc::now());
    let mut response = json_response(StatusCode::OK, &PresenceEnvelope { agent: view });
    if committed.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}
