//! `GET /events`: the event log as a long-poll, the curl fallback for push.

use axum::response::Response;
use muster_protocol::grammar::{self, Topics, Wait};
use muster_protocol::{ErrorBody, EventPage, Seq};
use std::time::Duration;

use serde::Deserialize;

use crate::api;
use crate::api::events::Poll;
use crate::transport::extract::{Auth, Query};
use crate::transport::response::{HttpError, ok};
use crate::transport::state::App;

/// Which events, and how long to wait for them.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PollQuery {
    /// Only events with a larger `seq` (default 0: from the start of the retained log).
    #[serde(default, deserialize_with = "grammar::query_int64")]
    since: Option<Seq>,
    /// Comma-separated topics: `*` (default), `tasks`, `task:<id>`, `chat`,
    /// `chat:<channel>`, `presence`, `inbox:<agent>`, `files`.
    #[param(value_type = Option<Topics>)]
    topics: Option<String>,
    /// How long to wait for a matching event when there is none yet, at most a minute
    /// (default 0): seconds (`30`) or with a unit, as the CLI takes it (`30s`, `1m`, `500ms`).
    #[serde(default, deserialize_with = "duration")]
    #[param(value_type = Option<Wait>)]
    wait: Option<Duration>,
    /// At most this many events (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A wait as [`grammar::WAIT`] states it: `30`, `30s`, `1m`, `500ms`.
fn duration<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    let raw = String::deserialize(de)?;
    grammar::parse_wait(&raw).map(Some).map_err(serde::de::Error::custom)
}

/// Events after `since`, oldest first. Returns at once when there are some; otherwise
/// waits up to `wait` for the next matching one. With `since` past the head, or events after
/// it trimmed, `resync` is true: re-read the state and go on from `next`.
#[utoipa::path(
    get, path = "/events", tag = "events",
    params(PollQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody))
)]
pub(crate) async fn poll(App(app): App, Auth(caller): Auth, Query(q): Query<PollQuery>) -> Result<Response, HttpError> {
    let poll = Poll { since: q.since, topics: q.topics, wait: q.wait, limit: q.limit };
    Ok(ok(api::events::poll(&app.broker, &caller, poll).await?))
}
