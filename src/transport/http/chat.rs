//! `/chat` and `/inbox`: messages, channels, mentions and read cursors.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use muster_protocol::grammar::{self, AgentName, ChannelName, IdempotencyKey, PageCursor};
use muster_protocol::{
    AckInbox, ChannelList, Cursor, ErrorBody, Inbox, MessageEnvelope, MessageList, PostMessage, Seq,
};
use muster_protocol::{ChatReadArgs, InboxAckArgs, InboxReadArgs, PageArgs};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api;
use crate::transport::extract::{Auth, Idempotency, JsonBody, OptionalJsonBody, Query, first_page_if_empty};
use crate::transport::response::{HttpError, ok, written};
use crate::transport::state::{App, AppState};

/// This file's routes (one `routes!` per path, its methods together).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post, list))
        .routes(routes!(channels))
        .routes(routes!(inbox))
        .routes(routes!(ack))
}

/// Post a message. `@name` mentions and `to` land in those agents' inboxes.
#[utoipa::path(
    post, path = "/chat/messages", tag = "chat",
    request_body = PostMessage,
    params(
        ("X-Agent" = Option<AgentName>, Header, description = "The sender, when the body names none"),
        ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe"),
    ),
    responses(
        (status = 201, body = MessageEnvelope),
        (status = 400, body = ErrorBody),
        (status = 404, description = "`replyTo` names no message", body = ErrorBody),
    )
)]
pub(crate) async fn post(
    App(app): App,
    Auth(caller): Auth,
    idem: Idempotency,
    JsonBody(body): JsonBody<PostMessage>,
) -> Result<Response, HttpError> {
    Ok(written(StatusCode::CREATED, api::chat::post(&app.broker, &caller, body, idem.0).await?))
}

/// Which messages to read.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Channel (default `general`).
    #[param(value_type = Option<ChannelName>)]
    channel: Option<String>,
    /// Only messages with a larger `seq`, oldest first (with `before`: those between).
    #[serde(default, deserialize_with = "grammar::query_int64")]
    since: Option<Seq>,
    /// Only messages with a smaller `seq` (paging back).
    #[serde(default, deserialize_with = "grammar::query_int64")]
    before: Option<Seq>,
    /// At most this many (default 50, at most 500). Without `since`, the newest ones.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The `next` of the previous page: goes on the same way (forward after `since`,
    /// backward otherwise); not with `since` or `before`.
    #[serde(default, deserialize_with = "first_page_if_empty")]
    #[param(value_type = Option<PageCursor>)]
    cursor: Option<String>,
}

/// Read a channel, oldest first.
#[utoipa::path(
    get, path = "/chat/messages", tag = "chat",
    params(ListQuery),
    responses((status = 200, body = MessageList), (status = 400, body = ErrorBody))
)]
pub(crate) async fn list(App(app): App, Auth(caller): Auth, Query(q): Query<ListQuery>) -> Result<Response, HttpError> {
    let args = ChatReadArgs { channel: q.channel, since: q.since, before: q.before, limit: q.limit, cursor: q.cursor };
    Ok(ok(api::chat::read(&app.broker, &caller, args).await?))
}

/// A page of a list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// At most this many (default 500, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next` of the previous page.
    #[serde(default, deserialize_with = "first_page_if_empty")]
    #[param(value_type = Option<PageCursor>)]
    cursor: Option<String>,
}

impl From<PageQuery> for PageArgs {
    fn from(q: PageQuery) -> PageArgs {
        PageArgs { limit: q.limit, cursor: q.cursor }
    }
}

/// Channels with messages, by name, a page at a time.
#[utoipa::path(
    get, path = "/chat/channels", tag = "chat",
    params(PageQuery),
    responses((status = 200, body = ChannelList), (status = 400, body = ErrorBody))
)]
pub(crate) async fn channels(
    App(app): App,
    Auth(caller): Auth,
    Query(q): Query<PageQuery>,
) -> Result<Response, HttpError> {
    Ok(ok(api::chat::channels(&app.broker, &caller, q.into()).await?))
}

/// Which inbox entries to read.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct InboxQuery {
    /// Include messages already read (the newest `limit`).
    #[serde(default)]
    all: bool,
    /// At most this many (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The `next` of the previous page.
    #[serde(default, deserialize_with = "first_page_if_empty")]
    #[param(value_type = Option<PageCursor>)]
    cursor: Option<String>,
}

/// An agent's inbox: unread mentions and direct messages, oldest first. Reading does not
/// mark them read; `POST /inbox/{agent}/ack` does.
#[utoipa::path(
    get, path = "/inbox/{agent}", tag = "chat",
    params(("agent" = AgentName, Path, description = "Agent name"), InboxQuery),
    responses((status = 200, body = Inbox), (status = 400, body = ErrorBody))
)]
pub(crate) async fn inbox(
    App(app): App,
    Auth(caller): Auth,
    Path(agent): Path<String>,
    Query(q): Query<InboxQuery>,
) -> Result<Response, HttpError> {
    let args = InboxReadArgs { agent: Some(agent), all: q.all, limit: q.limit, cursor: q.cursor };
    Ok(ok(api::chat::inbox(&app.broker, &caller, args).await?))
}

/// Mark the inbox read up to `seq` (default: everything so far).
#[utoipa::path(
    post, path = "/inbox/{agent}/ack", tag = "chat",
    request_body = Option<AckInbox>,
    params(("agent" = AgentName, Path, description = "Agent name"), ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe")),
    responses(
        (status = 200, body = Cursor),
        (status = 409, description = "`seq` is beyond the last event", body = ErrorBody),
    )
)]
pub(crate) async fn ack(
    App(app): App,
    Auth(caller): Auth,
    Path(agent): Path<String>,
    idem: Idempotency,
    OptionalJsonBody(ack): OptionalJsonBody<AckInbox>,
) -> Result<Response, HttpError> {
    let args = InboxAckArgs { agent: Some(agent), ack };
    Ok(written(StatusCode::OK, api::chat::ack(&app.broker, &caller, args, idem.0).await?))
}
