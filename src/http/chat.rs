//! `/chat` and `/inbox`: messages, channels, mentions and read cursors.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use muster_protocol::{
    AckInbox, ChannelInfo, ChannelList, Cursor, ErrorBody, Inbox, MessageEnvelope, MessageList, PostMessage, Seq,
};
use serde::Deserialize;

use super::extract::{Idempotency, JsonBody, OptionalJsonBody, Query};
use super::{ApiError, AppState, blocking, json_bytes, json_list, json_response};
use crate::core::{Command, Reply, validate_agent};

/// Default and largest page of messages.
const PAGE: usize = 50;
const MAX_PAGE: usize = 500;

fn page(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid("limit", format!("must be between 1 and {MAX_PAGE}"))),
    }
}

/// Post a message. `@name` mentions and `to` land in those agents' inboxes.
#[utoipa::path(
    post, path = "/chat/messages", tag = "chat",
    request_body = PostMessage,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = MessageEnvelope), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody))
)]
pub async fn post(
    State(state): State<AppState>,
    idem: Idempotency,
    JsonBody(body): JsonBody<PostMessage>,
) -> Result<Response, ApiError> {
    let committed = state.writer.submit(Command::PostMessage(body), idem.0).await?;
    let Reply::Message(message) = committed.reply else {
        return Err(ApiError::new(muster_protocol::ErrorCode::Internal, "unexpected reply"));
    };
    let mut response = json_response(StatusCode::CREATED, &MessageEnvelope { message });
    if committed.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Which messages to read.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Channel (default `general`).
    channel: Option<String>,
    /// Only messages with a larger `seq`, oldest first.
    since: Option<Seq>,
    /// Only messages with a smaller `seq` (paging back).
    before: Option<Seq>,
    /// At most this many (default 50, at most 500). Without `since`, the newest ones.
    limit: Option<usize>,
}

/// Read a channel, oldest first.
#[utoipa::path(
    get, path = "/chat/messages", tag = "chat",
    params(ListQuery),
    responses((status = 200, body = MessageList), (status = 400, body = ErrorBody))
)]
pub async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Result<Response, ApiError> {
    Ok(json_bytes(StatusCode::OK, read(&state, q.channel, q.since, q.before, q.limit).await?))
}

/// A page of a channel as a `MessageList` body.
pub async fn read(
    state: &AppState,
    channel: Option<String>,
    since: Option<Seq>,
    before: Option<Seq>,
    limit: Option<usize>,
) -> Result<bytes::Bytes, ApiError> {
    let limit = page(limit)?;
    let channel = channel.unwrap_or_else(|| "general".to_owned());
    crate::core::validate_channel(&channel)?;
    let store = state.store.clone();
    let name = channel.clone();
    let messages = blocking(move || store.messages(&name, since, before, limit)).await?;
    let channel_json = serde_json::to_string(&channel).unwrap_or_default();
    Ok(json_list("messages", &messages, &[("channel", channel_json)]))
}

/// Channels with messages.
#[utoipa::path(get, path = "/chat/channels", tag = "chat", responses((status = 200, body = ChannelList)))]
pub async fn channels(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &channel_list(&state))
}

/// Channels with messages, by name.
pub fn channel_list(state: &AppState) -> ChannelList {
    let snapshot = state.reader.snapshot();
    let channels = snapshot.state.channels.values();
    ChannelList {
        channels: channels
            .map(|c| ChannelInfo { name: c.name.clone(), messages: c.messages, last_seq: c.last_seq })
            .collect(),
    }
}

/// Which inbox entries to read.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// Include messages already read (the newest `limit`).
    #[serde(default)]
    all: bool,
    /// At most this many (default 50, at most 500).
    limit: Option<usize>,
}

/// An agent's inbox: unread mentions and direct messages, oldest first. Reading does not
/// mark them read; `POST /inbox/{agent}/ack` does.
#[utoipa::path(
    get, path = "/inbox/{agent}", tag = "chat",
    params(("agent" = String, Path, description = "Agent name"), InboxQuery),
    responses((status = 200, body = Inbox), (status = 400, body = ErrorBody))
)]
pub async fn inbox(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Query(q): Query<InboxQuery>,
) -> Result<Response, ApiError> {
    Ok(json_bytes(StatusCode::OK, read_inbox(&state, agent, q.all, q.limit).await?))
}

/// An agent's inbox as an `Inbox` body.
pub async fn read_inbox(
    state: &AppState,
    agent: String,
    all: bool,
    limit: Option<usize>,
) -> Result<bytes::Bytes, ApiError> {
    validate_agent("agent", &agent)?;
    let limit = page(limit)?;
    let cursor = state.reader.snapshot().state.cursor(&agent);
    let store = state.store.clone();
    let name = agent.clone();
    let (messages, unread) = blocking(move || {
        let since = if all { None } else { Some(cursor) };
        Ok((store.inbox(&name, since, None, limit)?, store.inbox_count_after(&name, cursor)?))
    })
    .await?;
    let extra = [
        ("agent", serde_json::to_string(&agent).unwrap_or_default()),
        ("cursor", cursor.to_string()),
        ("unread", unread.to_string()),
    ];
    Ok(json_list("messages", &messages, &extra))
}

/// Mark the inbox read up to `seq` (default: everything so far).
#[utoipa::path(
    post, path = "/inbox/{agent}/ack", tag = "chat",
    request_body = AckInbox,
    params(("agent" = String, Path, description = "Agent name"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = Cursor), (status = 400, body = ErrorBody))
)]
pub async fn ack(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    idem: Idempotency,
    OptionalJsonBody(body): OptionalJsonBody<AckInbox>,
) -> Result<Response, ApiError> {
    let committed = state.writer.submit(Command::AckInbox { agent, seq: body.seq }, idem.0).await?;
    let Reply::Cursor { agent, seq } = committed.reply else {
        return Err(ApiError::new(muster_protocol::ErrorCode::Internal, "unexpected reply"));
    };
    let mut response = json_response(StatusCode::OK, &Cursor { agent, cursor: seq });
    if committed.replayed {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("idempotent-replayed"), HeaderValue::from_static("true"));
    }
    Ok(response)
}
