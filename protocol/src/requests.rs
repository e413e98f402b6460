//! Request bodies: what a client sends to change something. The same shapes are used by
//! the HTTP API and, as operation arguments, by the WebSocket protocol.
//!
//! Unknown fields are refused (a typo such as `asignee` must not be ignored silently).

use serde::{Deserialize, Deserializer, Serialize};

use crate::grammar::{AgentName, ChannelName, Content, Note, SelfStatus, Tag, Text, Title, int64};
use crate::{MessageId, Priority, Seq, TaskId, TaskStatus};

/// Create a task. Only `title` is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTask {
    /// One line.
    #[schema(value_type = Title)]
    pub title: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Text>)]
    pub description: Option<String>,
    /// `P0`..`P3`; default `P2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Reserve the task for this agent: only it may claim the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AgentName>)]
    pub assignee: Option<String>,
    /// Tasks that must be finished first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 50)]
    pub blocked_by: Vec<TaskId>,
    /// Free labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Tag>, max_items = 20)]
    pub tags: Vec<String>,
    /// The acting agent (recorded as `createdBy`); the `X-Agent` header also works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AgentName>)]
    pub agent: Option<String>,
}

/// Change fields of a task. Absent fields stay as they are; `"assignee": null` unassigns.
///
/// A status change follows the same rules as the dedicated operations: `doing` claims,
/// `todo` releases, `done` completes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTask {
    /// New title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Title>)]
    pub title: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Text>)]
    pub description: Option<String>,
    /// New priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// New assignee; `null` removes it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AgentName>)]
    pub assignee: Option<Option<String>>,
    /// New status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// New dependency list (replaces the old one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 50)]
    pub blocked_by: Option<Vec<TaskId>>,
    /// New tags (replace the old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Tag>>, max_items = 20)]
    pub tags: Option<Vec<String>>,
    /// The acting agent; the `X-Agent` header also works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AgentName>)]
    pub agent: Option<String>,
    /// The fencing token of the caller's claim; refused as `stale_claim` if it is not the
    /// current one.
    #[serde(default, deserialize_with = "int64", skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
}

/// Claim, release or complete a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskAction {
    /// The acting agent; the `X-Agent` header also works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AgentName>)]
    pub agent: Option<String>,
    /// The fencing token of the caller's claim, checked when given.
    #[serde(default, deserialize_with = "int64", skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// Release: take the task away from another owner (a human stepping in).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Pick the next open task for an agent and claim it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NextTask {
    /// The agent that will own the task; the `X-Agent` header also works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AgentName>)]
    pub agent: Option<String>,
}

/// Post a chat message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostMessage {
    /// Sender; when omitted, the `X-Agent` header's agent, the token's, or the WebSocket
    /// session's. Empty is refused (omit it instead).
    #[serde(default, deserialize_with = "sender", skip_serializing_if = "String::is_empty")]
    #[schema(value_type = AgentName)]
    pub from: String,
    /// Text; `@name` mentions land in that agent's inbox.
    #[schema(value_type = Content)]
    pub content: String,
    /// Channel; `general` by default (or the direct channel when `to` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ChannelName>)]
    pub channel: Option<String>,
    /// Recipient of a direct message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AgentName>)]
    pub to: Option<String>,
    /// The message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// Comment on this task instead, as `POST /tasks/{id}/comments` does: the message goes to
    /// the task's thread (`#T-3`) as a `task.commented` event. Not with `channel` or `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
}

/// A comment on a task: its text, and who writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddComment {
    /// Author; when omitted, the `X-Agent` header's agent, the token's, or the WebSocket
    /// session's. Empty is refused (omit it instead).
    #[serde(default, deserialize_with = "sender", skip_serializing_if = "String::is_empty")]
    #[schema(value_type = AgentName)]
    pub from: String,
    /// Text, with the limits of a description; `@name` mentions land in that agent's inbox.
    #[schema(value_type = Content)]
    pub content: String,
    /// The message (or comment) this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
}

/// A heartbeat: "I am here", optionally with a status and a note.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Heartbeat {
    /// A status of the agent's choosing (`busy`, `reviewing`); `active` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<SelfStatus>)]
    pub status: Option<String>,
    /// A short note; `null` clears it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Note>)]
    pub note: Option<Option<String>>,
}

/// Mark an inbox read up to `seq` (default: everything in it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AckInbox {
    /// The new read cursor.
    #[serde(default, deserialize_with = "int64", skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
}

// The arguments of operations that name their task or agent beside a request body, and
// those of reads: the same over HTTP (path and query) and the WebSocket (frame fields).

/// The task an operation is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRef {
    /// The task.
    pub task: TaskId,
}

/// `task.update`: the task and the changes (fields of [`UpdateTask`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskUpdateArgs {
    /// The task.
    pub task: TaskId,
    /// The changes.
    #[serde(flatten)]
    pub update: UpdateTask,
}

/// `task.claim`, `task.release`, `task.complete`: the task and [`TaskAction`] fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskActionArgs {
    /// The task.
    pub task: TaskId,
    /// Agent (default: the session's), token, force.
    #[serde(flatten)]
    pub action: TaskAction,
}

/// `task.comment`: the task and the [`AddComment`] fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskCommentArgs {
    /// The task.
    pub task: TaskId,
    /// Author and text.
    #[serde(flatten)]
    pub comment: AddComment,
}

/// `task.comments`: a page of a task's comments, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskCommentsArgs {
    /// The task.
    pub task: TaskId,
    /// At most this many (default 50, at most 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Where to go on: the `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `task.next`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NextArgs {
    /// The agent (default: the session's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Claim the task atomically.
    #[serde(default)]
    pub claim: bool,
}

/// A page of a list: at most `limit` items, after the position `cursor` names (the `next`
/// of the page before; opaque).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PageArgs {
    /// At most this many (default and largest: see each list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Where to go on: the `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Which way a list of tasks walks by id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first (the default).
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

impl Order {
    /// Whether this is the default order (not written on the wire).
    pub fn is_asc(&self) -> bool {
        *self == Order::Asc
    }
}

/// `task.list`: filters and a page. Without `status` or `all`, the board: every unfinished
/// task and the most recently finished ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only these statuses (finished ones from the whole history).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<TaskStatus>,
    /// Every task, finished ones from the whole history included.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// By id, oldest first (`asc`, the default) or newest first (`desc`).
    #[serde(default, skip_serializing_if = "Order::is_asc")]
    pub order: Order,
    /// Only tasks assigned to this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Only this priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Only tasks with this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// At most this many (default 500, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Where to go on: the `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `chat.read`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatReadArgs {
    /// Channel (default `general`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Only messages after this `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Seq>,
    /// Only messages before this `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Seq>,
    /// At most this many (default 50, at most 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Where to go on: the `next` of the previous page (instead of `since`/`before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `inbox.read`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxReadArgs {
    /// Whose inbox (default: the session's agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Include messages already read.
    #[serde(default)]
    pub all: bool,
    /// At most this many (default 50, at most 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Where to go on: the `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `inbox.ack`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboxAckArgs {
    /// Whose inbox (default: the session's agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The new cursor (default: everything).
    #[serde(flatten)]
    pub ack: AckInbox,
}

/// `presence.set`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PresenceSetArgs {
    /// The agent (default: the session's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Status and note.
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
}

/// A sender named explicitly: an empty name is refused rather than read as "omitted".
fn sender<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if name.is_empty() {
        return Err(serde::de::Error::custom(
            "must not be empty: omit it to act as the X-Agent header's agent (or the session's)",
        ));
    }
    Ok(name)
}

/// Deserializes a field that is present (possibly `null`) as `Some(..)`, so that an
/// absent field (`None`, via `default`) can be told from an explicit `null`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_assignee_is_not_an_absent_assignee() {
        let absent: UpdateTask = serde_json::from_str("{}").unwrap();
        let null: UpdateTask = serde_json::from_str(r#"{"assignee": null}"#).unwrap();
        let set: UpdateTask = serde_json::from_str(r#"{"assignee": "link"}"#).unwrap();
        assert_eq!(absent.assignee, None);
        assert_eq!(null.assignee, Some(None));
        assert_eq!(set.assignee, Some(Some("link".into())));
    }

    #[test]
    fn the_seed_task_body_parses_and_typos_do_not() {
        let body = r#"{"title": "Fix auth redirect", "assignee": "link", "priority": "P1"}"#;
        let task: CreateTask = serde_json::from_str(body).unwrap();
        assert_eq!(task.priority, Some(Priority::P1));
        let typo = serde_json::from_str::<CreateTask>(r#"{"title": "x", "asignee": "link"}"#);
        assert!(typo.unwrap_err().to_string().contains("unknown field `asignee`"));
    }
}

/// Add a workspace (`POST /workspaces`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddWorkspace {
    /// Its name: the `{workspace}` of its routes, `/w/{workspace}/…`.
    #[schema(value_type = crate::grammar::WorkspaceName)]
    pub name: String,
}

/// Remove a workspace (`workspace.remove`; over HTTP, `DELETE /workspaces/{workspace}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveWorkspace {
    /// The workspace.
    #[schema(value_type = crate::grammar::WorkspaceName)]
    pub name: String,
    /// Delete its data instead of archiving it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub purge: bool,
}

/// An operation without arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}
