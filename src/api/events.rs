//! The event log as a long-poll (`GET /events`): the curl fallback for push, on the same
//! feed as the WebSocket and SSE.

use std::time::Duration;

use bytes::Bytes;
use muster_protocol::{EventPage, Seq};
use tokio::time::Instant;

use super::broker::Broker;
use super::caller::Caller;
use super::error::ApiError;
use super::feed::{Begin, Ended, parse_topics, subscribe};
use super::json::{Json, json_list, quoted};
use super::page;
use crate::hub::Outbox;

/// Longest a long-poll may wait, in seconds: below common proxy and client idle timeouts.
pub(crate) const MAX_WAIT: u64 = 60;

/// What a poll asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Poll {
    /// Only events with a larger `seq` (default 0: from the start of the retained log).
    pub(crate) since: Option<Seq>,
    /// Comma-separated topics (default `*`).
    pub(crate) topics: Option<String>,
    /// How long to wait for a matching event when there is none yet (default 0).
    pub(crate) wait: Option<Duration>,
    /// At most this many events (default 100).
    pub(crate) limit: Option<usize>,
}

/// The `seq` of a serialized event (`{"seq":N,...}`, as every frame starts).
fn frame_seq(frame: &[u8]) -> Option<Seq> {
    let rest = frame.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Events after `since`, oldest first. Answers at once when there are some; otherwise
/// waits up to `wait` seconds for the next matching one.
pub(crate) async fn poll(broker: &Broker, caller: &Caller, poll: Poll) -> Result<Json<EventPage>, ApiError> {
    let topics = muster_protocol::split_topics(poll.topics.as_deref().unwrap_or_default());
    parse_topics(&topics)?;
    let wait = poll.wait.unwrap_or_default();
    if wait > Duration::from_secs(MAX_WAIT) {
        return Err(ApiError::invalid("wait", format!("must be at most {MAX_WAIT} seconds")));
    }
    let limit = page::limit(poll.limit, page::EVENTS.0, page::EVENTS.1)?;
    let since = poll.since.unwrap_or(0);
    let deadline = Instant::now() + wait;
    let outbox = Outbox::new(broker.limits.outbox_bytes);
    let (_subscription, mut feed, start) =
        subscribe(broker, caller, outbox, &topics, Begin::Since(since), limit).await?;
    let truncated = since < start.head && since + 1 < start.first;
    // A `since` past the head is from another history (a new data dir, or the client's own
    // mistake): waiting would never bring its events. Said at once, as SSE and the WebSocket
    // say it, so that a poll loop re-reads the state instead of spinning on a stale `since`.
    let ahead = since > start.head;
    let mut events: Vec<Bytes> = Vec::new();
    let mut head = start.head;
    let mut tokens = broker.token_changes();
    loop {
        // Read the head first: every matching event up to it is in the outbox (or the
        // replay) by the time it is taken below.
        let seen = broker.hub().head();
        match feed.take(broker, &mut events).await {
            Ok(()) => {}
            Err(Ended::Overflowed) => {
                feed.rewind(broker, head);
                continue;
            }
            Err(Ended::Failed(e)) => return Err(e),
            Err(Ended::Closed) => break,
        }
        if !feed.replaying() {
            head = head.max(seen);
        }
        if !events.is_empty() || ahead || Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            () = feed.ready() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = broker.shutdown.cancelled() => break,
            // A revoked token's poll ends now, refused.
            Ok(()) = tokens.changed() => broker.check(caller)?,
        }
    }
    events.truncate(limit);
    // The `since` of the next poll: the last event's, or the head when none came (a poll
    // after a trimmed gap, or from past the head, resumes at the head too).
    let next = match events.last() {
        Some(last) => frame_seq(last).unwrap_or(head),
        None => head,
    };
    let extra = [
        ("epoch", quoted(broker.epoch())),
        ("head", head.to_string()),
        ("truncated", truncated.to_string()),
        ("resync", (truncated || ahead).to_string()),
        ("next", next.to_string()),
    ];
    Ok(Json::from_bytes(json_list("events", &events, &extra)))
}
