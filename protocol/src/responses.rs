//! Response bodies: a single resource as `{"task": {...}}`, a list as `{"tasks": [...]}`.

use serde::{Deserialize, Serialize};

use crate::{ChatMessage, Event, Presence, Seq, Task};

/// `{"task": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskEnvelope {
    /// The task.
    pub task: Task,
}

/// `{"task": {...} | null}`: `next` found a task, or nothing to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MaybeTaskEnvelope {
    /// The task, or `null` when there is nothing to do.
    pub task: Option<Task>,
}

/// `{"tasks": [...]}`, in id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskList {
    /// The tasks.
    pub tasks: Vec<Task>,
    /// The cursor of the next page (`cursor=`); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `{"message": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageEnvelope {
    /// The message.
    pub message: ChatMessage,
}

/// `{"channel": "general", "messages": [...]}`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageList {
    /// The channel.
    pub channel: String,
    /// The messages.
    pub messages: Vec<ChatMessage>,
    /// The cursor of the next page the same way (`cursor=`); absent when there is no more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A channel with messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelInfo {
    /// Name.
    pub name: String,
    /// Messages posted.
    pub messages: u64,
    /// `seq` of the newest message.
    pub last_seq: Seq,
}

/// `{"channels": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelList {
    /// The channels, by name.
    pub channels: Vec<ChannelInfo>,
    /// The cursor of the next page (`cursor=`); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `{"agents": [...]}`, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PresenceList {
    /// The agents seen, by name.
    pub agents: Vec<Presence>,
    /// The cursor of the next page (`cursor=`); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `{"agent": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PresenceEnvelope {
    /// The agent.
    pub agent: Presence,
}

/// An agent's inbox: messages that mention it or are addressed to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Inbox {
    /// Whose inbox.
    pub agent: String,
    /// Read up to this `seq`.
    pub cursor: Seq,
    /// Messages after the cursor.
    pub unread: u64,
    /// The messages (unread ones, unless `all=true`), oldest first.
    pub messages: Vec<ChatMessage>,
    /// The cursor of the next page the same way (`cursor=`); absent when there is no more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// An inbox read cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cursor {
    /// Whose inbox.
    pub agent: String,
    /// Read up to this `seq`.
    pub cursor: Seq,
}

/// A page of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventPage {
    /// The data dir's epoch: if it changes, the history was replaced and `seq` restarted.
    pub epoch: String,
    /// The newest durable `seq`. Poll again with `since` = the last event's `seq` (or
    /// `head` when `events` is empty).
    pub head: Seq,
    /// Events after `since` were trimmed from the log (retention): re-read the state
    /// (`GET /tasks`, `/presence`, `/chat/messages`) and continue from `head`.
    pub truncated: bool,
    /// The events after `since` cannot all be given: some were trimmed (`truncated`), or
    /// `since` is past `head` (a history this broker does not have: another data dir). Re-read
    /// the state (`GET /tasks`, `/presence`, `/chat/messages`) and poll again from `next`.
    #[serde(default)]
    pub resync: bool,
    /// Matching events after `since`, oldest first.
    pub events: Vec<Event>,
    /// The `since` of the next poll: the last event's `seq`, or `head` when there was none.
    #[serde(default)]
    pub next: Seq,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`; on a cluster's node whose cluster has had no leader for longer than two leases,
    /// a sentence that says so (and the status is 503).
    pub status: String,
    /// Broker version.
    pub version: String,
    /// The epoch of the history (the data dir's; a cluster's nodes share the cluster's).
    pub epoch: String,
    /// The newest durable `seq` (on a cluster node: the newest it has applied).
    pub head: Seq,
    /// This node in its cluster; absent for a single broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
}

/// A cluster node's part of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealth {
    /// This node's name.
    pub node: String,
    /// `leader` or `follower`.
    pub role: String,
    /// The node that leads, as this node last saw it (`null` during an election).
    pub leader: Option<String>,
    /// The replicated log's newest message (`null` when the NATS servers did not answer).
    pub stream_head: Option<u64>,
    /// The oldest message the replicated log still holds: it is trimmed below the cluster's
    /// snapshots (`null` when the NATS servers did not answer).
    pub stream_first: Option<u64>,
    /// The log's newest message this node has applied.
    pub applied: u64,
    /// Messages of the log this node has yet to apply (`null` with `streamHead`).
    pub lag: Option<u64>,
}

/// A workspace: a board, chat, presence and reservations of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceInfo {
    /// Its name (`/w/{name}/…`; `default` is also the unprefixed routes).
    #[schema(value_type = crate::grammar::WorkspaceName)]
    pub name: String,
    /// Removed without `purge`: its data are kept and still read, and every write is refused.
    pub archived: bool,
    /// Its last event's `seq`.
    pub head: Seq,
}

/// `{"workspaces": [...]}`, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkspaceList {
    /// Every workspace, archived ones included.
    pub workspaces: Vec<WorkspaceInfo>,
}
