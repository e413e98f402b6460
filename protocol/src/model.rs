//! The resources the broker serves (tasks, messages, agents), its events and its errors.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{FileConflict, FilesReleaseReason, MessageId, Reservation, TaskId, Topic};

/// A point in time, UTC, RFC 3339 on the wire (millisecond precision).
pub type Timestamp = DateTime<Utc>;

/// How long ago `at` was, as seen at `now`, as presence's `lastSeen` says it: `2s ago`,
/// `5m ago`, `3h ago`, `2d ago` (`0s ago` for a time in the future).
pub fn last_seen_text(at: Timestamp, now: Timestamp) -> String {
    let s = (now - at).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// A position in the broker's global event log: gap-free, starts at 1, never reused.
pub type Seq = u64;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Open: waiting for an agent to claim it.
    Todo,
    /// Claimed and being worked on.
    Doing,
    /// Work finished by its owner, waiting for review.
    Review,
    /// Cannot progress (set by hand; dependencies are `blockedBy`).
    Blocked,
    /// Finished.
    Done,
    /// Abandoned.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in board order.
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Todo,
        TaskStatus::Doing,
        TaskStatus::Review,
        TaskStatus::Blocked,
        TaskStatus::Done,
        TaskStatus::Cancelled,
    ];

    /// The status as it is written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Todo => "todo",
            TaskStatus::Doing => "doing",
            TaskStatus::Review => "review",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Done => "done",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// `done` or `cancelled`: nothing more will happen to the task unless it is reopened.
    pub fn is_finished(self) -> bool {
        matches!(self, TaskStatus::Done | TaskStatus::Cancelled)
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = String;

    /// Parses `todo`, `doing`, ... in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("{s:?} is not a status (todo, doing, review, blocked, done, cancelled)"))
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Task priority, `P0` (most urgent) to `P3`. The default is `P2`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum Priority {
    /// Drop everything.
    P0,
    /// Urgent.
    P1,
    /// Normal.
    #[default]
    P2,
    /// Whenever.
    P3,
}

impl std::str::FromStr for Priority {
    type Err = String;

    /// Parses `P0`..`P3` (or `p0`..`p3`, or `0`..`3`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().trim_start_matches(['P', 'p']) {
            "0" => Ok(Priority::P0),
            "1" => Ok(Priority::P1),
            "2" => Ok(Priority::P2),
            "3" => Ok(Priority::P3),
            _ => Err(format!("{s:?} is not a priority (P0, P1, P2 or P3)")),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Who holds a task, since when, and with which fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Claim {
    /// The owner.
    pub agent: String,
    /// Fencing token: grows with every claim of this task. Updates may carry it; a stale
    /// one is refused.
    pub token: u64,
    /// When the claim was taken.
    pub at: DateTime<Utc>,
}

/// A unit of work on the board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Task {
    /// `T-1`, `T-2`, ...
    pub id: TaskId,
    /// One line.
    pub title: String,
    /// Free text, may be empty.
    pub description: String,
    /// Where it stands.
    pub status: TaskStatus,
    /// `P0`..`P3`.
    pub priority: Priority,
    /// The agent it is assigned to (reserved for, or worked on by), if any.
    pub assignee: Option<String>,
    /// Tasks that must be finished before this one can be claimed.
    pub blocked_by: Vec<TaskId>,
    /// Free labels.
    pub tags: Vec<String>,
    /// The agent that created it, if known.
    pub created_by: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
    /// The current claim, while someone holds the task.
    pub claim: Option<Claim>,
    /// The last fencing token issued for this task (0: never claimed).
    pub last_token: u64,
}

/// A chat message, in a channel, possibly addressed to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatMessage {
    /// `M-1`, `M-2`, ...
    pub id: MessageId,
    /// The event sequence number of the `chat.message` event that carried it.
    pub seq: Seq,
    /// Channel name; `general` by default, `dm:a,b` for direct messages without a channel,
    /// `#T-3` for a comment on task T-3.
    pub channel: String,
    /// Sender.
    pub from: String,
    /// Text.
    pub content: String,
    /// Agents named with `@name` in the content, in order, without duplicates.
    pub mentions: Vec<String>,
    /// The recipient of a direct message.
    pub to: Option<String>,
    /// The message this one answers.
    pub reply_to: Option<MessageId>,
    /// When it was posted.
    pub at: DateTime<Utc>,
    /// The task this message comments on (in its thread, `#T-3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
}

impl ChatMessage {
    /// The agents whose inbox receives this message: the `to` recipient and every mention,
    /// except the sender, without duplicates.
    pub fn recipients(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for name in self.to.iter().chain(self.mentions.iter()) {
            if name != &self.from && !out.contains(&name.as_str()) {
                out.push(name);
            }
        }
        out
    }
}

/// What the broker remembers about an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Agent {
    /// The agent's name.
    pub name: String,
    /// A status the agent set itself (e.g. `busy`), if any.
    pub status: Option<String>,
    /// A short note the agent set itself.
    pub note: Option<String>,
    /// First contact.
    pub first_seen_at: DateTime<Utc>,
    /// Last contact: the last write the agent made (a claim, a message, a heartbeat...).
    pub last_seen_at: DateTime<Utc>,
    /// Open WebSocket sessions.
    #[serde(default)]
    pub connections: u32,
    /// Open sessions by cluster node (each node's instance: its name and when it started);
    /// empty on a single broker. When a node stops, its sessions close with it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub nodes: std::collections::BTreeMap<String, u32>,
    /// When its last session closed (it shows `offline` from then until its next contact).
    #[serde(default)]
    pub left_at: Option<DateTime<Utc>>,
    /// A person (a dashboard session said so), not an AI agent. Once set, it stays.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub human: bool,
    /// The status presence last announced for it (`active`, `idle`, `offline` or its own,
    /// as `GET /presence` shows it), so that a change by silence alone is pushed once, as a
    /// `presence.changed` event. Absent: not announced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub shown: Option<PresenceStatus>,
    /// Announced stuck: holding a `doing` task and silent past the threshold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stuck: bool,
}

impl Agent {
    /// An agent seen for the first time at `at`.
    pub fn new(name: &str, at: DateTime<Utc>) -> Agent {
        Agent {
            name: name.to_owned(),
            status: None,
            note: None,
            first_seen_at: at,
            last_seen_at: at,
            connections: 0,
            nodes: Default::default(),
            left_at: None,
            human: false,
            shown: None,
            stuck: false,
        }
    }
}

/// An agent as `GET /presence` shows it, computed at the moment of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Presence {
    /// The agent's name.
    pub name: String,
    /// `active`, `idle`, `offline`, or a status the agent set (e.g. `busy`).
    #[schema(value_type = String)]
    pub status: PresenceStatus,
    /// Time since the last contact, for humans: `2s ago`, `5m ago`.
    pub last_seen: String,
    /// Last contact.
    pub last_seen_at: DateTime<Utc>,
    /// Open connections (WebSocket sessions) of this agent.
    pub connections: u32,
    /// The task it holds (doing, review or blocked), if any.
    pub task: Option<TaskId>,
    /// A short note the agent set itself.
    pub note: Option<String>,
    /// Holds a `doing` task and has been silent longer than the stuck threshold.
    pub stuck: bool,
    /// While it holds claims: when they are released if it stays away (null while it has
    /// an open session).
    pub claims_expire_at: Option<DateTime<Utc>>,
    /// A person using the dashboard, not an AI agent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub human: bool,
}

/// Where an agent stands, as presence shows it: a string on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PresenceStatus {
    /// In contact recently (or holding a session), with no status of its own.
    Active,
    /// Silent for a while.
    Idle,
    /// Gone: its last session closed, or silent for long.
    Offline,
    /// A status the agent set itself (`busy`, `reviewing`).
    Custom(String),
}

impl PresenceStatus {
    /// The status as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            PresenceStatus::Active => "active",
            PresenceStatus::Idle => "idle",
            PresenceStatus::Offline => "offline",
            PresenceStatus::Custom(own) => own,
        }
    }

    /// Reads a status from the wire (or an agent's own).
    pub fn parse(s: &str) -> PresenceStatus {
        match s {
            "active" => PresenceStatus::Active,
            "idle" => PresenceStatus::Idle,
            "offline" => PresenceStatus::Offline,
            own => PresenceStatus::Custom(own.to_owned()),
        }
    }

    /// Whether the agent is away: idle or offline.
    pub fn is_away(&self) -> bool {
        matches!(self, PresenceStatus::Idle | PresenceStatus::Offline)
    }
}

impl fmt::Display for PresenceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for PresenceStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for PresenceStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PresenceStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(PresenceStatus::parse(&s))
    }
}

/// Why a claim ended without the task being completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The owner let go.
    Released,
    /// The owner went away and its lease ran out.
    OwnerGone,
    /// Someone other than the owner took it away (a human, a supervisor).
    Forced,
}

/// One entry of the global event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Global sequence number.
    pub seq: Seq,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened (`type` and `data` on the wire).
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Declares the kinds of event, each once: its variant and data, its `type` on the wire,
/// and whether it carries the task it changed (`task: task`, or `task: none`). [`EventKind`],
/// [`EventKind::NAMES`], [`EventKind::type_name`] and [`EventKind::task`] are made from it:
/// a new kind does not compile until it says whether it changes a task, which the store's
/// task view follows (`store/views.rs`), and `protocol/tests/frames.rs` fails until it has
/// a golden example that agrees. Its topics, its actor and the other entity it changes are
/// below, in [`EventKind::topics`], [`EventKind::actor`] and [`EventKind::entity`] (each
/// exhaustive): a new kind is described in this file only.
macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident { $($fields:tt)* } = $name:tt, task: $task:tt;)*) => {
        /// The kinds of event, with their data.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(tag = "type", content = "data")]
        pub enum EventKind {
            $($(#[$doc])* #[serde(rename = $name)] $variant { $($fields)* },)*
        }

        impl EventKind {
            /// Every kind's `type`, as written on the wire.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The wire name of this kind, e.g. `task.claimed`.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(EventKind::$variant { .. } => $name,)*
                }
            }

            /// The task this event changed (as it is after the event), if it changed one.
            pub fn task(&self) -> Option<&Task> {
                match self {
                    $(task_of!($task, $variant, task) => task_of!($task, task),)*
                }
            }
        }
    };
}

/// The pattern and the value of [`EventKind::task`] for one kind.
macro_rules! task_of {
    (task, $variant:ident, $binding:ident) => {
        EventKind::$variant { task: $binding, .. }
    };
    (none, $variant:ident, $binding:ident) => {
        EventKind::$variant { .. }
    };
    (task, $binding:ident) => {
        Some($binding)
    };
    (none, $binding:ident) => {
        None
    };
}

event_kinds! {
    /// A task was added to the board.
    TaskCreated {
        /// The new task.
        task: Task,
    } = "task.created", task: task;
    /// Fields of a task changed (including status changes that are not claims,
    /// releases or completions, e.g. `review`, `cancelled`, reopening).
    TaskUpdated {
        /// The task after the change.
        task: Task,
        /// Who changed it.
        by: Option<String>,
        /// The names of the fields that changed.
        changes: Vec<String>,
    } = "task.updated", task: task;
    /// An agent took a task.
    TaskClaimed {
        /// The task after the claim (its `claim` holds the token).
        task: Task,
        /// The new owner.
        agent: String,
    } = "task.claimed", task: task;
    /// A claim ended and the task went back to `todo`.
    TaskReleased {
        /// The task after the release.
        task: Task,
        /// The previous owner.
        agent: String,
        /// Who released it (the owner, or someone forcing it).
        by: Option<String>,
        /// Why.
        reason: ReleaseReason,
    } = "task.released", task: task;
    /// A task was finished.
    TaskCompleted {
        /// The task after completion.
        task: Task,
        /// Who completed it.
        by: Option<String>,
    } = "task.completed", task: task;
    /// The last unfinished task blocking this one was finished: it can be claimed now.
    TaskReady {
        /// The task that became claimable.
        task: Task,
    } = "task.ready", task: task;
    /// A chat message was posted.
    ChatMessage {
        /// The message.
        message: ChatMessage,
    } = "chat.message", task: none;
    /// Someone commented on a task (published on the task's topics; the task itself did not
    /// change).
    TaskCommented {
        /// The comment: a message in the task's thread (its `task` names the task).
        message: ChatMessage,
    } = "task.commented", task: none;
    /// An agent appeared, came back, or changed its own status or note.
    PresenceChanged {
        /// The agent record after the change.
        agent: Agent,
        /// While it holds claims and has no session: when they are released if it stays
        /// away (as `GET /presence` says). Absent while it is here or holds nothing.
        #[serde(rename = "claimsExpireAt", default, skip_serializing_if = "Option::is_none")]
        claims_expire_at: Option<DateTime<Utc>>,
    } = "presence.changed", task: none;
    /// An agent marked its inbox read up to `seq`.
    InboxAcked {
        /// Whose inbox.
        agent: String,
        /// The new read cursor.
        seq: Seq,
    } = "inbox.acked", task: none;
    /// An agent reserved paths, or renewed reservations (same id, new TTL).
    FilesReserved {
        /// The holder.
        agent: String,
        /// The reservations as they are now.
        reservations: Vec<Reservation>,
    } = "files.reserved", task: none;
    /// Reservations ended.
    FilesReleased {
        /// The holder.
        agent: String,
        /// Who released them, when an agent did (`null` when the broker did).
        by: Option<String>,
        /// Why.
        reason: FilesReleaseReason,
        /// The reservations that ended.
        reservations: Vec<Reservation>,
    } = "files.released", task: none;
}

impl EventKind {
    /// The topics this event is published on. `*` matches every event and is not listed.
    ///
    /// - task events: `tasks`, `task:<id>`
    /// - chat messages: `chat`, `chat:<channel>`, and `inbox:<agent>` for each recipient
    /// - task comments: `tasks`, `task:<id>`, and `inbox:<agent>` for each recipient
    /// - presence: `presence`
    /// - inbox acks: `inbox:<agent>`
    /// - file reservations: `files`
    pub fn topics(&self) -> Vec<Topic> {
        match self {
            EventKind::TaskCreated { task }
            | EventKind::TaskUpdated { task, .. }
            | EventKind::TaskClaimed { task, .. }
            | EventKind::TaskReleased { task, .. }
            | EventKind::TaskCompleted { task, .. }
            | EventKind::TaskReady { task } => vec![Topic::Tasks, Topic::Task(task.id)],
            EventKind::ChatMessage { message } => {
                let mut topics = vec![Topic::Chat, Topic::Channel(message.channel.clone())];
                topics.extend(message.recipients().iter().map(|a| Topic::Inbox((*a).to_owned())));
                topics
            }
            EventKind::TaskCommented { message } => {
                let mut topics = vec![Topic::Tasks];
                topics.extend(message.task.map(Topic::Task));
                topics.extend(message.recipients().iter().map(|a| Topic::Inbox((*a).to_owned())));
                topics
            }
            EventKind::PresenceChanged { .. } => vec![Topic::Presence],
            EventKind::InboxAcked { agent, .. } => vec![Topic::Inbox(agent.clone())],
            EventKind::FilesReserved { .. } | EventKind::FilesReleased { .. } => vec![Topic::Files],
        }
    }

    /// The agent whose action this event records, if any: it counts as contact with that
    /// agent (its `lastSeenAt` moves).
    pub fn actor(&self) -> Option<&str> {
        match self {
            EventKind::TaskCreated { task } => task.created_by.as_deref(),
            EventKind::TaskUpdated { by, .. }
            | EventKind::TaskReleased { by, .. }
            | EventKind::TaskCompleted { by, .. }
            | EventKind::FilesReleased { by, .. } => by.as_deref(),
            EventKind::TaskClaimed { agent, .. }
            | EventKind::InboxAcked { agent, .. }
            | EventKind::FilesReserved { agent, .. } => Some(agent),
            EventKind::ChatMessage { message } | EventKind::TaskCommented { message } => Some(&message.from),
            EventKind::TaskReady { .. } | EventKind::PresenceChanged { .. } => None,
        }
    }

    /// What this event changes besides its task ([`EventKind::task`]): each kind changes at
    /// most one other entity, and the store's views follow this to write it.
    pub fn entity(&self) -> Entity<'_> {
        match self {
            EventKind::ChatMessage { message } | EventKind::TaskCommented { message } => Entity::Message(message),
            EventKind::PresenceChanged { agent, .. } => Entity::Agent(agent),
            EventKind::InboxAcked { agent, .. } => Entity::Cursor(agent),
            EventKind::FilesReserved { reservations, .. } | EventKind::FilesReleased { reservations, .. } => {
                Entity::Reservations(reservations)
            }
            EventKind::TaskCreated { .. }
            | EventKind::TaskUpdated { .. }
            | EventKind::TaskClaimed { .. }
            | EventKind::TaskReleased { .. }
            | EventKind::TaskCompleted { .. }
            | EventKind::TaskReady { .. } => Entity::None,
        }
    }
}

/// The entity an event changes besides its task (see [`EventKind::entity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity<'a> {
    /// None besides the task.
    None,
    /// A message was stored (in its channel, and in its recipients' inboxes).
    Message(&'a ChatMessage),
    /// An agent's record changed.
    Agent(&'a Agent),
    /// The agent's inbox read cursor moved.
    Cursor(&'a str),
    /// File reservations began, were renewed or ended.
    Reservations(&'a [Reservation]),
}

/// Machine-readable error codes. Each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed or a field is invalid (`field` names it).
    Invalid,
    /// 401: this broker requires a token, and none (or an unknown one) was given.
    Unauthorized,
    /// 403: the request is not allowed: from another site's page, or acting as an agent
    /// the caller's token does not belong to.
    Forbidden,
    /// 404: no such task, route or resource.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: the task is held by another agent (the message names the owner), or paths
    /// are reserved by another agent (`conflicts` lists each holder, its pattern and a
    /// path both match).
    Conflict,
    /// 409: the fencing token is not the current claim's (the claim was released and
    /// taken again since).
    StaleClaim,
    /// 409: the task waits on unfinished tasks (`blockedBy`).
    Blocked,
    /// 408: the request's body did not arrive in time.
    RequestTimeout,
    /// 413: the body is larger than the limit.
    TooLarge,
    /// 422: the status change is not allowed from the current status.
    InvalidTransition,
    /// 422: the `Idempotency-Key` was already used for a different request.
    IdempotencyMismatch,
    /// 507: the disk holding the data dir is (nearly) full; writes resume once space is
    /// freed. Reads and subscriptions keep working.
    InsufficientStorage,
    /// 429: too many requests or frames from one connection; slow down.
    RateLimited,
    /// 503: the broker cannot accept writes right now (storage failure, shutting down,
    /// overloaded); retry later.
    Unavailable,
    /// 500: a bug in the broker.
    Internal,
}

impl ErrorCode {
    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "invalid",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::StaleClaim => "stale_claim",
            ErrorCode::Blocked => "blocked",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InvalidTransition => "invalid_transition",
            ErrorCode::IdempotencyMismatch => "idempotency_mismatch",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// The body of every error response: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorInfo,
}

/// One error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorInfo {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// For humans and agents: what went wrong and, where it helps, what to do.
    pub message: String,
    /// The request field at fault, for `invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a refused reservation: every overlap with another agent's reservation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<FileConflict>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_seq_type_at_data_on_the_wire() {
        let at: Timestamp = "2026-11-25T10:00:00.250Z".parse().unwrap();
        let event = Event { seq: 9, at, kind: EventKind::InboxAcked { agent: "link".into(), seq: 4 } };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seq": 9, "at": "2026-11-25T10:00:00.250Z",
                "type": "inbox.acked", "data": {"agent": "link", "seq": 4}})
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }

    #[test]
    fn recipients_skip_the_sender_and_duplicates() {
        let message = ChatMessage {
            id: MessageId(1),
            seq: 1,
            channel: "general".into(),
            from: "kai".into(),
            content: String::new(),
            mentions: vec!["link".into(), "kai".into(), "zelda".into()],
            to: Some("zelda".into()),
            reply_to: None,
            at: Timestamp::default(),
            task: None,
        };
        assert_eq!(message.recipients(), vec!["zelda", "link"]);
    }
}
