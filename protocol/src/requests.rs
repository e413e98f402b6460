//! Request bodies: what a client sends to change something. The same shapes are used by
//! the HTTP API and, as operation arguments, by the WebSocket protocol.
//!
//! Unknown fields are refused (a typo such as `asignee` must not be ignored silently).

use serde::{Deserialize, Deserializer, Serialize};

use crate::{MessageId, Priority, Seq, TaskId, TaskStatus};

/// Create a task. Only `title` is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTask {
    /// One line.
    pub title: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `P0`..`P3`; default `P2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Reserve the task for this agent: only it may claim the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Tasks that must be finished first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<TaskId>,
    /// Free labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The acting agent (recorded as `createdBy`); the `X-Agent` header also works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub title: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// New assignee; `null` removes it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub assignee: Option<Option<String>>,
    /// New status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// New dependency list (replaces the old one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<Vec<TaskId>>,
    /// New tags (replace the old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The acting agent; the `X-Agent` header also works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The fencing token of the caller's claim; refused as `stale_claim` if it is not the
    /// current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
}

/// Claim, release or complete a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskAction {
    /// The acting agent; the `X-Agent` header also works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The fencing token of the caller's claim, checked when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub agent: Option<String>,
}

/// Post a chat message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostMessage {
    /// Sender (over a WebSocket, the session's agent when omitted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// Text; `@name` mentions land in that agent's inbox.
    pub content: String,
    /// Channel; `general` by default (or the direct channel when `to` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Recipient of a direct message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
}

/// A heartbeat: "I am here", optionally with a status and a note.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Heartbeat {
    /// A status of the agent's choosing (`busy`, `reviewing`); `active` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A short note; `null` clears it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub note: Option<Option<String>>,
}

/// Mark an inbox read up to `seq` (default: everything in it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AckInbox {
    /// The new read cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
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
