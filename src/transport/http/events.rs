//! `GET /events`: the event log as a long-poll, the curl fallback for push.

use axum::extract::State;
use axum::response::Response;
use muster_protocol::{ErrorBody, EventPage, Seq};
use serde::Deserialize;

use crate::api;
use crate::api::events::Poll;
use crate::transport::extract::{Auth, Query};
use crate::transport::response::{HttpError, ok};
use crate::transport::state::AppState;

/// Which events, and how long to wait for them.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PollQuery {
    /// Only events with a larger `seq` (default 0: from the start of the retained log).
    since: Option<Seq>,
    /// Comma-separated topics: `*` (default), `tasks`, `task:<id>`, `chat`,
    /// `chat:<channel>`, `presence`, `inbox:<agent>`.
    topics: Option<String>,
    /// Seconds to wait for a matching event when there is none yet (0-60, default 0).
    wait: Option<u64>,
    /// At most this many events (default 100, at most 1000).
    limit: Option<usize>,
}

/// Events after `since`, oldest first. Returns at once when there are some; otherwise
/// waits up to `wait` seconds for the next matching one.
#[utoipa::path(
    get, path = "/events", tag = "events",
    params(PollQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody))
)]
pub(crate) async fn poll(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<PollQuery>,
) -> Result<Response, HttpError> {
    let poll = Poll { since: q.since, topics: q.topics, wait: q.wait, limit: q.limit };
    Ok(ok(api::events::poll(&app.broker, &caller, poll).await?))
}
