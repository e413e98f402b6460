//! `GET /events/stream`: the event log as Server-Sent Events, for scripts and browsers.
//!
//! Each event is sent with `id: <seq>`, so a client that reconnects with `Last-Event-ID`
//! (browsers do this by themselves) gets every event after it, then live ones — the same
//! feed as the WebSocket resume (`api::Feed`). When the requested `seq` is no longer in the
//! log, a `resync` event says so first.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use muster_protocol::Seq;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::conns::Conn;
use super::extract::{Auth, Query};
use super::response::HttpError;
use super::state::{App, AppState};
use super::ws::too_many_observers;
use crate::api::feed::{Begin, Ended, Feed};
use crate::api::{self, ApiError};
use crate::hub::{Outbox, Subscription};

/// Events read from the log per step of a replay.
const REPLAY_CHUNK: usize = 500;

/// What to stream.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamQuery {
    /// Comma-separated topics (default `*`).
    #[param(value_type = Option<muster_protocol::grammar::Topics>)]
    topics: Option<String>,
    /// Replay events after this `seq` first (the `Last-Event-ID` header takes precedence).
    #[serde(default, deserialize_with = "muster_protocol::grammar::query_int64")]
    since: Option<Seq>,
}

/// Events as Server-Sent Events: replayed from `since` (or `Last-Event-ID`), then live.
#[utoipa::path(
    get, path = "/events/stream", tag = "events",
    params(StreamQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq")),
    responses(
        (status = 200, description = "text/event-stream: `id: <seq>`, `event: <type>`, `data: <event JSON>`", content_type = "text/event-stream"),
        (status = 400, body = muster_protocol::ErrorBody),
        (status = 503, description = "Too many observers (`--max-observers`)", body = muster_protocol::ErrorBody),
    )
)]
pub(crate) async fn stream(
    App(app): App,
    Extension(conn): Extension<Conn>,
    Auth(caller): Auth,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, HttpError> {
    let topics = muster_protocol::split_topics(q.topics.as_deref().unwrap_or_default());
    let since = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<Seq>().ok().filter(|n| i64::try_from(*n).is_ok()))
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be an event seq"))?,
        ),
        None => q.since,
    };
    let Ok(permit) = Arc::clone(&app.observers).try_acquire_owned() else {
        return Err(too_many_observers(app.config.max_observers).into());
    };
    let outbox = Outbox::new(app.config.outbox_bytes);
    let begin = match since {
        Some(since) => Begin::Resume { since, epoch: None },
        None => Begin::Live,
    };
    let (subscription, feed, start) =
        api::feed::subscribe(&app.broker, &caller, outbox, &topics, begin, REPLAY_CHUNK).await?;
    // An event stream has its own limit and keep-alives: it leaves the pool of plain HTTP
    // connections.
    conn.stream();
    let resync = start.resync.then(|| {
        let data = serde_json::json!({ "epoch": start.epoch, "head": start.head });
        // With the head as its id: a browser that reconnects resumes from there, not from
        // the stale `Last-Event-ID` that caused the resync.
        SseEvent::default().event("resync").id(start.head.to_string()).data(data.to_string())
    });
    let open = app.metrics.open(crate::metrics::Stream::Sse);
    let stream = Stream {
        tokens: app.broker.token_changes(),
        app,
        caller,
        feed,
        _subscription: subscription,
        _permit: permit,
        _open: open,
        pending: resync.into_iter().collect(),
    };
    let events =
        futures_util::stream::unfold(
            stream,
            |mut s| async move { s.next().await.map(|e| (Ok::<_, Infallible>(e), s)) },
        );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

struct Stream {
    app: AppState,
    caller: crate::api::Caller,
    /// Wakes when the issued tokens change: a stream whose token was revoked ends.
    tokens: tokio::sync::watch::Receiver<u64>,
    feed: Feed,
    _subscription: Subscription,
    _permit: OwnedSemaphorePermit,
    /// Counted in `/metrics` while open.
    _open: crate::metrics::Open,
    /// Events to send before reading more, last first.
    pending: Vec<SseEvent>,
}

/// `{"seq": .., "type": ..}` of an event, for the SSE `id` and `event` fields.
#[derive(Deserialize)]
struct Head<'a> {
    seq: Seq,
    #[serde(rename = "type", borrow)]
    kind: &'a str,
}

fn sse_event(json: &Bytes) -> Option<SseEvent> {
    let json = std::str::from_utf8(json).ok()?;
    let head: Head<'_> = serde_json::from_str(json).ok()?;
    Some(SseEvent::default().id(head.seq.to_string()).event(head.kind).data(json))
}

impl Stream {
    /// The next event to send; `None` ends the stream (an overflow: the client reconnects
    /// with `Last-Event-ID`; the broker stopping; the log unreadable; the token revoked).
    async fn next(&mut self) -> Option<SseEvent> {
        let mut frames = Vec::new();
        loop {
            if let Some(event) = self.pending.pop() {
                return Some(event);
            }
            match self.feed.take(&self.app.broker, &mut frames).await {
                Ok(()) => {}
                Err(Ended::Overflowed) => {
                    self.app.metrics.slow_consumer_closes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return None;
                }
                Err(_) => return None,
            }
            if frames.is_empty() {
                tokio::select! {
                    () = self.feed.ready() => {}
                    () = self.app.shutdown.cancelled() => return None,
                    Ok(()) = self.tokens.changed() => {
                        if self.app.broker.check(&self.caller).is_err() {
                            return None;
                        }
                    }
                }
                continue;
            }
            self.pending = frames.drain(..).rev().filter_map(|f| sse_event(&f)).collect();
        }
    }
}
