//! Chat operations: posting, reading channels and inboxes, acknowledging.

use bytes::Bytes;
use muster_protocol::{ChannelInfo, ChannelList, Cursor, Inbox, MessageEnvelope, MessageList, PostMessage, Seq};
use muster_protocol::{ChatReadArgs, InboxAckArgs, InboxReadArgs, PageArgs, TaskCommentArgs, TaskCommentsArgs};

use super::broker::{Broker, Written};
use super::caller::Caller;
use super::error::ApiError;
use super::json::{Json, json_list, quoted};
use super::page::{self, List};
use crate::core::{Command, Reply, validate_channel};
use crate::sequencer::IdempotencyKey;
use crate::store::StoreError;

/// Where a page of messages starts: after a `seq` (forward, oldest first, up to an optional
/// `before`), or before one (backward: the newest before it).
#[derive(Debug, Clone, Copy)]
enum From {
    After(Seq, Option<Seq>),
    Before(Option<Seq>),
}

impl From {
    /// From `since`/`before` (both: those between), or from a cursor (never with them).
    fn of(
        cursor: Option<&str>,
        list: List,
        key: &str,
        since: Option<Seq>,
        before: Option<Seq>,
    ) -> Result<From, ApiError> {
        let Some(cursor) = cursor else {
            return Ok(match since {
                Some(since) => From::After(since, before),
                None => From::Before(before),
            });
        };
        if since.is_some() || before.is_some() {
            return Err(ApiError::invalid(
                "cursor",
                "goes on where the previous page ended: give it without since or before",
            ));
        }
        let position = page::decode(cursor, list, key)?;
        let (way, rest) = position.split_first().ok_or_else(|| ApiError::invalid("cursor", "is empty"))?;
        match (way, rest.len()) {
            (b'>', 8) => Ok(From::After(page::number(rest)?, None)),
            (b'>', 16) => Ok(From::After(page::number(&rest[..8])?, Some(page::number(&rest[8..])?))),
            (b'<', 8) => Ok(From::Before(Some(page::number(rest)?))),
            _ => Err(ApiError::invalid("cursor", "is not a cursor this broker gave")),
        }
    }

    /// Reads `limit + 1` entries with `read(since, before, n)` and keeps a page of `limit`;
    /// the cursor of the next page that way, if there is more.
    fn page(
        self,
        list: List,
        key: &str,
        limit: usize,
        read: impl FnOnce(Option<Seq>, Option<Seq>, usize) -> Result<Vec<(Seq, Bytes)>, StoreError>,
    ) -> Result<(Vec<Bytes>, Option<String>), StoreError> {
        let (since, before) = match self {
            From::After(seq, bound) => (Some(seq), bound),
            From::Before(seq) => (None, seq),
        };
        let mut entries = read(since, before, limit + 1)?;
        let more = entries.len() > limit;
        let next = match self {
            From::After(_, bound) => {
                entries.truncate(limit);
                let last = entries.last().map(|(seq, _)| *seq);
                more.then(|| next_cursor(list, key, b'>', last, bound))
            }
            From::Before(_) => {
                if more {
                    entries.remove(0);
                }
                let first = entries.first().map(|(seq, _)| *seq);
                more.then(|| next_cursor(list, key, b'<', first, None))
            }
        };
        Ok((entries.into_iter().map(|(_, json)| json).collect(), next))
    }
}

fn next_cursor(list: List, key: &str, way: u8, seq: Option<Seq>, bound: Option<Seq>) -> String {
    let mut position = vec![way];
    position.extend_from_slice(&seq.unwrap_or(0).to_be_bytes());
    if let Some(bound) = bound {
        position.extend_from_slice(&bound.to_be_bytes());
    }
    page::encode(list, key, &position)
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

/// A page of a channel, oldest first: after `since` (and before `before` when both are
/// given), or the newest before `before` (or at all); `next` goes on the same way.
pub(crate) async fn read(broker: &Broker, caller: &Caller, args: ChatReadArgs) -> Result<Json<MessageList>, ApiError> {
    let limit = page::limit(args.limit, page::MESSAGES.0, page::MESSAGES.1)?;
    let channel = args.channel.unwrap_or_else(|| "general".to_owned());
    validate_channel(&channel)?;
    let from = From::of(args.cursor.as_deref(), List::Messages, &channel, args.since, args.before)?;
    messages(broker, caller, channel, from, limit).await
}

/// A page of the messages of a channel or thread.
async fn messages(
    broker: &Broker,
    caller: &Caller,
    channel: String,
    from: From,
    limit: usize,
) -> Result<Json<MessageList>, ApiError> {
    let name = channel.clone();
    let (messages, next) = broker
        .read_store(caller, move |store, _| {
            from.page(List::Messages, &name, limit, |since, before, n| store.history.messages(&name, since, before, n))
        })
        .await?;
    let mut extra = vec![("channel", quoted(&channel))];
    extra.extend(next.map(|next| ("next", quoted(&next))));
    Ok(Json::from_bytes(json_list("messages", &messages, &extra)))
}

/// Comments on a task: a message in the task's thread (`#T-3`), published as
/// `task.commented` on the task's topics; mentions land in inboxes as in chat.
pub(crate) async fn comment(
    broker: &Broker,
    caller: &Caller,
    args: TaskCommentArgs,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<MessageEnvelope>, ApiError> {
    let TaskCommentArgs { task, comment } = args;
    let comment = PostMessage {
        from: comment.from,
        content: comment.content,
        reply_to: comment.reply_to,
        task: Some(task),
        ..PostMessage::default()
    };
    post(broker, caller, comment, idempotency).await
}

/// A page of a task's comments, oldest first; `next` goes on.
pub(crate) async fn comments(
    broker: &Broker,
    caller: &Caller,
    args: TaskCommentsArgs,
) -> Result<Json<MessageList>, ApiError> {
    let limit = page::limit(args.limit, page::MESSAGES.0, page::MESSAGES.1)?;
    let model = &broker.read_fresh(caller).await?.model;
    if !model.has_task(args.task) {
        return Err(ApiError::not_found(format!("task {} does not exist", args.task)));
    }
    let thread = format!("#{}", args.task);
    let from = match args.cursor.as_deref() {
        None => From::After(0, None),
        Some(cursor) => From::of(Some(cursor), List::Messages, &thread, None, None)?,
    };
    messages(broker, caller, thread, from, limit).await
}

/// A page of the channels with messages, by name.
pub(crate) async fn channels(broker: &Broker, caller: &Caller, args: PageArgs) -> Result<ChannelList, ApiError> {
    let snapshot = broker.read_fresh(caller).await?;
    let (channels, next) = page::by_name(&snapshot.model.channels, List::Channels, page::CHANNELS, &args)?;
    let channels = channels
        .into_iter()
        .map(|c| ChannelInfo { name: c.name.clone(), messages: c.messages, last_seq: c.last_seq })
        .collect();
    Ok(ChannelList { channels, next })
}

/// An agent's inbox (the caller's own by default): unread mentions and direct
/// messages, oldest first; with `all`, the newest, read or not. Reading does not mark
/// them read.
pub(crate) async fn inbox(broker: &Broker, caller: &Caller, args: InboxReadArgs) -> Result<Json<Inbox>, ApiError> {
    let agent = caller.named(args.agent)?;
    caller.may_read_inbox(&agent, "agent")?;
    let limit = page::limit(args.limit, page::MESSAGES.0, page::MESSAGES.1)?;
    let cursor = broker.read_fresh(caller).await?.model.cursor(&agent);
    let key = format!("{agent}|{}", args.all);
    // Unread: forward from the read cursor; all: backward from the newest.
    let from = match (args.cursor.as_deref(), args.all) {
        (None, false) => From::After(cursor, None),
        (None, true) => From::Before(None),
        (Some(c), _) => From::of(Some(c), List::Inbox, &key, None, None)?,
    };
    let name = agent.clone();
    let ((messages, next), unread) = broker
        .read_store(caller, move |store, _| {
            let page =
                from.page(List::Inbox, &key, limit, |since, before, n| store.history.inbox(&name, since, before, n))?;
            Ok((page, store.history.inbox_count_after(&name, cursor)?))
        })
        .await?;
    let mut extra = vec![("agent", quoted(&agent)), ("cursor", cursor.to_string()), ("unread", unread.to_string())];
    extra.extend(next.map(|next| ("next", quoted(&next))));
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
