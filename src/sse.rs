//! `GET /events/stream`: the event log as Server-Sent Events, for scripts and browsers.
//!
//! Each event is sent with `id: <seq>`, so a client that reconnects with `Last-Event-ID`
//! (browsers do this by themselves) gets every event after it, replayed from the durable
//! log, then live ones — the same seam as the WebSocket resume. When the requested `seq` is
//! no longer in the log (or from another epoch), a `resync` event says so first.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use muster_protocol::{ErrorCode, Seq};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use crate::core::parse_topic;
use crate::http::{ApiError, AppState, Query};
use crate::hub::{Outbox, Subscription};

/// Events read from the log per step of a replay.
const REPLAY_CHUNK: usize = 500;

/// What to stream.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Comma-separated topics (default `*`).
    topics: Option<String>,
    /// Replay events after this `seq` first (the `Last-Event-ID` header takes precedence).
    since: Option<Seq>,
}

/// Events as Server-Sent Events: replayed from `since` (or `Last-Event-ID`), then live.
#[utoipa::path(
    get, path = "/events/stream", tag = "events",
    params(StreamQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq")),
    responses(
        (status = 200, description = "text/event-stream: `id: <seq>`, `event: <type>`, `data: <event JSON>`", content_type = "text/event-stream"),
        (status = 400, body = muster_protocol::ErrorBody),
        (status = 503, description = "Too many connections", body = muster_protocol::ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let topics: Vec<String> = match q.topics.as_deref() {
        None | Some("") => vec!["*".to_owned()],
        Some(list) => list.split(',').map(|t| parse_topic(t.trim())).collect::<Result<_, _>>()?,
    };
    let since = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<Seq>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be an event seq"))?,
        ),
        None => q.since,
    };
    let Ok(permit) = Arc::clone(&state.connections).try_acquire_owned() else {
        return Err(ApiError::new(ErrorCode::Unavailable, "too many connections; retry later"));
    };
    let outbox = Outbox::new(state.config.outbox_bytes);
    let (subscription, head) = state.reader.hub().subscribe(Arc::clone(&outbox), &topics);
    let store = Arc::clone(&state.store);
    let first = crate::http::blocking(move || store.first_retained(head)).await?;
    let resync = since.is_some_and(|s| s > head || s + 1 < first);
    let replay = since.filter(|_| !resync);
    let stream = Stream {
        state,
        topics,
        outbox,
        _subscription: subscription,
        _permit: permit,
        phase: if resync { Phase::Resync(head) } else { Phase::Replay(replay.unwrap_or(head), head) },
        pending: Vec::new(),
    };
    let events =
        futures_util::stream::unfold(
            stream,
            |mut s| async move { s.next().await.map(|e| (Ok::<_, Infallible>(e), s)) },
        );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

enum Phase {
    /// Tell the client its `Last-Event-ID` cannot be resumed; then live from the head.
    Resync(Seq),
    /// Replaying `(since, head]` from the log.
    Replay(Seq, Seq),
    /// Live from the hub.
    Live,
    /// The outbox overflowed or the broker is stopping: end the stream.
    Done,
}

struct Stream {
    state: AppState,
    topics: Vec<String>,
    outbox: Arc<Outbox>,
    _subscription: Subscription,
    _permit: OwnedSemaphorePermit,
    phase: Phase,
    pending: Vec<SseEvent>,
}

/// `{"seq": .., "type": ..}` of an event, for the SSE `id` and `event` fields.
#[derive(Deserialize)]
struct Head<'a> {
    seq: Seq,
    #[serde(rename = "type", borrow)]
    kind: &'a str,
}

fn sse_event(json: &str) -> Option<SseEvent> {
    let head: Head<'_> = serde_json::from_str(json).ok()?;
    Some(SseEvent::default().id(head.seq.to_string()).event(head.kind).data(json))
}

impl Stream {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop() {
                return Some(event);
            }
            match self.phase {
                Phase::Resync(head) => {
                    self.phase = Phase::Live;
                    let data = serde_json::json!({ "epoch": self.state.store.epoch(), "head": head });
                    return Some(SseEvent::default().event("resync").data(data.to_string()));
                }
                Phase::Replay(since, head) if since < head => {
                    let store = Arc::clone(&self.state.store);
                    let topics = self.topics.clone();
                    let chunk =
                        crate::http::read_blocking(move || store.events_scanned(since, head, &topics, REPLAY_CHUNK))
                            .await;
                    let Ok(Ok((events, scanned))) = chunk else {
                        self.phase = Phase::Done;
                        continue;
                    };
                    self.pending =
                        events.iter().rev().filter_map(|e| sse_event(std::str::from_utf8(&e.json).ok()?)).collect();
                    self.phase = Phase::Replay(scanned, head);
                }
                Phase::Replay(..) => self.phase = Phase::Live,
                Phase::Live => {
                    let mut frames = Vec::new();
                    if self.outbox.take(&mut frames).is_err() {
                        self.phase = Phase::Done;
                        continue;
                    }
                    if frames.is_empty() {
                        tokio::select! {
                            () = self.outbox.ready() => {}
                            () = self.state.shutdown.cancelled() => self.phase = Phase::Done,
                        }
                        continue;
                    }
                    self.pending = frames.iter().rev().filter_map(|f| sse_event(f.as_str())).collect();
                }
                Phase::Done => return None,
            }
        }
    }
}
