//! `GET /events`: the event log as a long-poll, the curl fallback for push.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use muster_protocol::{ErrorBody, EventPage, Seq};
use serde::Deserialize;
use tokio::time::Instant;

use super::extract::Query;
use super::{ApiError, AppState, blocking, json_bytes, json_list};
use crate::core::parse_topic;

/// Longest a long-poll may wait, in seconds: below common proxy and client idle timeouts.
pub const MAX_WAIT: u64 = 60;
/// Default and largest number of events in one answer.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Which events, and how long to wait for them.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PollQuery {
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
pub async fn poll(State(state): State<AppState>, Query(q): Query<PollQuery>) -> Result<Response, ApiError> {
    let since = q.since.unwrap_or(0);
    let topics: Vec<String> = match q.topics.as_deref() {
        None | Some("") => vec!["*".to_owned()],
        Some(list) => list.split(',').map(|t| parse_topic(t.trim())).collect::<Result<_, _>>()?,
    };
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT {
        return Err(ApiError::invalid("wait", format!("must be at most {MAX_WAIT} seconds")));
    }
    let limit = match q.limit {
        None => PAGE,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid("limit", format!("must be between 1 and {MAX_PAGE}")));
        }
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut watch = state.reader.watch();
    // Events up to `scanned` did not match: a wake-up only reads what is new.
    let mut scanned = since;
    loop {
        let head = watch.borrow_and_update().state.head;
        let store = state.store.clone();
        let filter = topics.clone();
        let (events, first) = blocking(move || {
            let events = if scanned < head { store.events(scanned, head, &filter, limit)? } else { Vec::new() };
            Ok((events, store.first_retained(head)?))
        })
        .await?;
        scanned = scanned.max(head);
        let truncated = since < head && since + 1 < first;
        let done = !events.is_empty() || truncated || since > head || Instant::now() >= deadline;
        if !done {
            tokio::select! {
                changed = watch.changed() => if changed.is_ok() { continue },
                () = tokio::time::sleep_until(deadline) => continue,
                () = state.shutdown.cancelled() => {}
            }
        }
        let json: Vec<Bytes> = events.into_iter().map(|e| e.json).collect();
        let extra = [
            ("epoch", serde_json::to_string(state.store.epoch()).unwrap_or_default()),
            ("head", head.to_string()),
            ("truncated", truncated.to_string()),
        ];
        return Ok(json_bytes(StatusCode::OK, json_list("events", &json, &extra)));
    }
}
