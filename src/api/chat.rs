//! Chat operations: posting, reading channels and inboxes, acknowledging.

use muster_protocol::ws::{ChatReadArgs, InboxAckArgs, InboxReadArgs};
use muster_protocol::{ChannelInfo, ChannelList, Cursor, Inbox, MessageEnvelope, MessageList, PostMessage};

use super::broker::{Broker, Written};
use super::caller::Caller;
use super::error::ApiError;
use super::json::{Json, json_list, quoted};
use crate::core::{Command, Reply, validate_channel};
use crate::sequencer::IdempotencyKey;

/// Default page of messages.
const PAGE: usize = 50;
/// Largest page of messages.
pub(crate) const MAX_PAGE: usize = 500;

fn page(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid("limit", format!("must be between 1 and {MAX_PAGE}"))),
    }
}

/// Posts a message; `@name` mentions and `to` land in those agents' inboxes.
pub(crate) async fn post(
    broker: &Broker,
    caller: &Caller,
    post: PostMessage,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<MessageEnvelope>, ApiError> {
    broker.write(caller, Command::PostMessage(post), idempotency).await?.map(|reply| match reply {
        Reply::Message(message) => Some(MessageEnvelope { message }),
        _ => None,
    })
}

/// A page of a channel, oldest first: after `since`, or the newest before `before`.
pub(crate) async fn read(broker: &Broker, caller: &Caller, args: ChatReadArgs) -> Result<Json<MessageList>, ApiError> {
    let limit = page(args.limit)?;
    let channel = args.channel.unwrap_or_else(|| "general".to_owned());
    validate_channel(&channel)?;
    let name = channel.clone();
    let (since, before) = (args.since, args.before);
    let messages =
        broker.read_store(caller, move |store, _| store.history.messages(&name, since, before, limit)).await?;
    Ok(Json::from_bytes(json_list("messages", &messages, &[("channel", quoted(&channel))])))
}

/// Channels with messages, by name.
pub(crate) fn channels(broker: &Broker, caller: &Caller) -> Result<ChannelList, ApiError> {
    let snapshot = broker.read(caller)?;
    let channels = snapshot.model.channels.values();
    Ok(ChannelList {
        channels: channels
            .map(|c| ChannelInfo { name: c.name.clone(), messages: c.messages, last_seq: c.last_seq })
            .collect(),
    })
}

/// An agent's inbox (the caller's own by default): unread mentions and direct
/// messages, oldest first; with `all`, the newest, read or not. Reading does not mark
/// them read.
pub(crate) async fn inbox(broker: &Broker, caller: &Caller, args: InboxReadArgs) -> Result<Json<Inbox>, ApiError> {
    let agent = caller.named(args.agent)?;
    let limit = page(args.limit)?;
    let cursor = broker.read(caller)?.model.cursor(&agent);
    let name = agent.clone();
    let all = args.all;
    let (messages, unread) = broker
        .read_store(caller, move |store, _| {
            let since = if all { None } else { Some(cursor) };
            Ok((store.history.inbox(&name, since, None, limit)?, store.history.inbox_count_after(&name, cursor)?))
        })
        .await?;
    let extra = [("agent", quoted(&agent)), ("cursor", cursor.to_string()), ("unread", unread.to_string())];
    Ok(Json::from_bytes(json_list("messages", &messages, &extra)))
}

/// Marks an inbox (the caller's own by default) read up to `seq` (default: everything).
pub(crate) async fn ack(
    broker: &Broker,
    caller: &Caller,
    args: InboxAckArgs,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<Cursor>, ApiError> {
    let agent = caller.named(args.agent)?;
    let cmd = Command::AckInbox { agent, seq: args.ack.seq };
    broker.write(caller, cmd, idempotency).await?.map(|reply| match reply {
        Reply::Cursor { agent, seq } => Some(Cursor { agent, cursor: seq }),
        _ => None,
    })
}
