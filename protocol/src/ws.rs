//! The WebSocket protocol (`GET /ws`, JSON text frames).
//!
//! Client → server: a [`Request`], `{"id": 7, "op": "task.claim", ...args}`. The first one
//! must be `hello`. Every request is answered by a [`Reply`] carrying its `id` as `re`:
//! `{"re": 7, "ok": true, "data": {...}}` or `{"re": 7, "ok": false, "error": {...}}`.
//! Events arrive as [`Event`](crate::Event) frames, `{"seq", "type", "at", "data"}`, on the
//! topics the client subscribed to.
//!
//! The arguments of each operation are the HTTP request bodies (`task.create` takes a
//! [`CreateTask`], `task.claim` a [`TaskAction`](crate::TaskAction) plus `task`, ...); the reply `data` is the
//! HTTP response body. Unknown fields are refused, as over HTTP.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    AddWorkspace, ChatReadArgs, CreateTask, ErrorCode, ErrorInfo, FilesQuery, InboxAckArgs, InboxReadArgs, ListArgs,
    NextArgs, NoArgs, PageArgs, PostMessage, PresenceSetArgs, ReleaseFiles, RemoveWorkspace, ReserveFiles, Seq,
    TaskActionArgs, TaskCommentArgs, TaskCommentsArgs, TaskId, TaskRef, TaskUpdateArgs, WhoHasFiles,
};

/// Close code: the client did not read fast enough and its outbox overflowed; reconnect
/// and resume from the last `seq` received.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code: no `hello` within the allowed time after connecting.
pub const CLOSE_HELLO_TIMEOUT: u16 = 4001;
/// Close code: the broker is shutting down (standard "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: a frame larger than the limit (standard "message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: the client kept sending frames past the rate limit (standard "policy
/// violation").
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: a text frame that is not UTF-8 (standard "invalid frame payload data", as
/// RFC 6455 asks).
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code: the token this session proved its agent with was revoked. Final: reconnecting
/// with the same token cannot succeed, and clients do not retry.
pub const CLOSE_REVOKED: u16 = 4003;
/// Close code: the session's workspace was removed (archived or purged). Final: clients do
/// not reconnect to it.
pub const CLOSE_WORKSPACE_REMOVED: u16 = 4004;

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Request {
    /// Chosen by the client; echoed as `re` in the reply.
    pub id: u64,
    /// Makes a retry of a write safe, as HTTP's `Idempotency-Key` header does: the same key
    /// and request get the first answer back; the same key with another request is refused
    /// (`idempotency_mismatch`). Writes only.
    #[serde(rename = "idempotencyKey", default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::grammar::IdempotencyKey>)]
    pub idempotency_key: Option<String>,
    /// The last `seq` the client has seen (an event's, or a reply's `head`): a read waits
    /// until the node has applied it (bounded, then `unavailable`), so that a client that
    /// moved to another node of a cluster never reads older than what it saw. HTTP's
    /// `Muster-After` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Seq>,
    /// The operation and its arguments (`op` on the wire).
    #[serde(flatten)]
    pub op: Op,
}

/// Declares the operations, each once: its variant, its arguments, its reply's body, its name
/// on the wire and whether it writes (`write`, `read`, or `(field)`: when that boolean
/// argument is set).
/// [`Op`], [`reply`], [`Op::NAMES`], [`Op::name`], [`Op::is_write`] and the parser's
/// dispatch ([`Request::parse`]) are made from it; `transport/ws.rs` and `tests/callers.rs` match
/// on `Op` without a wildcard, so a new operation does not compile until each handles it.
macro_rules! operations {
    ($($(#[$doc:meta])* $variant:ident($args:ty) -> $reply:ty = $name:tt, $write:tt;)*) => {
        /// The body of each operation's reply (its `data`; HTTP's response body), by
        /// operation: `reply::TaskClaim` is [`TaskEnvelope`](crate::TaskEnvelope). The
        /// broker's WebSocket dispatch and the Rust client name their replies through these,
        /// so the compiler holds both to this declaration.
        pub mod reply {
            use super::{Topics, Welcome};
            use crate::*;
            $($(#[$doc])* pub type $variant = $reply;)*
        }

        /// Every operation, tagged by `op`.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(tag = "op")]
        pub enum Op {
            $($(#[$doc])* #[serde(rename = $name)] $variant($args),)*
        }

        impl Op {
            /// Every operation name, as written on the wire.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// This operation's name on the wire.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Op::$variant(_) => $name,)*
                }
            }

            /// Whether this operation changes state (and so may carry an `idempotencyKey`).
            pub fn is_write(&self) -> bool {
                match self {
                    $(Op::$variant(_args) => writes!($write, _args),)*
                }
            }

            /// The operation named `name` with its arguments from `map`; `None` for an
            /// unknown name.
            fn from_frame(name: &str, id: u64, map: Map<String, Value>) -> Option<Result<Op, FrameError>> {
                Some(match name {
                    $($name => <$args as FromFrame>::from_frame(id, map).map(Op::$variant),)*
                    _ => return None,
                })
            }
        }
    };
}

/// Whether an operation writes, from its declaration in [`operations!`].
macro_rules! writes {
    (write, $args:ident) => {
        true
    };
    (read, $args:ident) => {
        false
    };
    (($field:ident), $args:ident) => {
        $args.$field
    };
}

operations! {
    /// First frame: who is connecting, what to receive, where to resume.
    Hello(Hello) -> Welcome = "hello", read;
    /// Receive more topics.
    Subscribe(Topics) -> Topics = "subscribe", read;
    /// Stop receiving topics.
    Unsubscribe(Topics) -> Topics = "unsubscribe", read;
    /// `POST /tasks`.
    TaskCreate(CreateTask) -> TaskEnvelope = "task.create", write;
    /// `PATCH /tasks/{id}`.
    TaskUpdate(TaskUpdateArgs) -> TaskEnvelope = "task.update", write;
    /// `POST /tasks/{id}/claim`.
    TaskClaim(TaskActionArgs) -> TaskEnvelope = "task.claim", write;
    /// `POST /tasks/{id}/release`.
    TaskRelease(TaskActionArgs) -> TaskEnvelope = "task.release", write;
    /// `POST /tasks/{id}/complete`.
    TaskComplete(TaskActionArgs) -> TaskEnvelope = "task.complete", write;
    /// `GET /tasks/next` (with `claim`, `POST /tasks/next`).
    TaskNext(NextArgs) -> MaybeTaskEnvelope = "task.next", (claim);
    /// `GET /tasks/{id}`.
    TaskGet(TaskRef) -> TaskEnvelope = "task.get", read;
    /// `GET /tasks`.
    TaskList(ListArgs) -> crate::TaskList = "task.list", read;
    /// `POST /tasks/{id}/comments`.
    TaskComment(TaskCommentArgs) -> MessageEnvelope = "task.comment", write;
    /// `GET /tasks/{id}/comments`.
    TaskComments(TaskCommentsArgs) -> MessageList = "task.comments", read;
    /// `POST /chat/messages`.
    ChatPost(PostMessage) -> MessageEnvelope = "chat.post", write;
    /// `GET /chat/messages`.
    ChatRead(ChatReadArgs) -> MessageList = "chat.read", read;
    /// `GET /chat/channels`.
    ChatChannels(PageArgs) -> ChannelList = "chat.channels", read;
    /// `GET /inbox/{agent}`.
    InboxRead(InboxReadArgs) -> Inbox = "inbox.read", read;
    /// `POST /inbox/{agent}/ack`.
    InboxAck(InboxAckArgs) -> Cursor = "inbox.ack", write;
    /// `GET /presence`.
    PresenceList(PageArgs) -> crate::PresenceList = "presence.list", read;
    /// `POST /presence/{agent}`: a heartbeat, with a status and note.
    PresenceSet(PresenceSetArgs) -> PresenceEnvelope = "presence.set", write;
    /// `POST /files/reserve`.
    FilesReserve(ReserveFiles) -> ReservationList = "files.reserve", write;
    /// `POST /files/release`.
    FilesRelease(ReleaseFiles) -> ReservationList = "files.release", write;
    /// `GET /files`.
    FilesList(FilesQuery) -> ReservationList = "files.list", read;
    /// `GET /files/who`.
    FilesWho(WhoHasFiles) -> WhoHas = "files.who", read;
    /// `GET /workspaces`: the broker's workspaces (whichever the session's is).
    WorkspaceList(NoArgs) -> crate::WorkspaceList = "workspace.list", read;
    /// `POST /workspaces`. Not kept for `idempotencyKey`: a retry of one that was added
    /// answers `conflict` (it exists).
    WorkspaceAdd(AddWorkspace) -> WorkspaceInfo = "workspace.add", write;
    /// `DELETE /workspaces/{workspace}`. Not kept for `idempotencyKey`.
    WorkspaceRemove(RemoveWorkspace) -> WorkspaceInfo = "workspace.remove", write;
}

/// How an operation's arguments are read from the fields a frame has besides `id`, `op`,
/// `idempotencyKey` and `after`: most are one request type as it is sent over HTTP; those
/// that HTTP splits into path and body take the path's part (`task`, `agent`) first.
trait FromFrame: Sized {
    fn from_frame(id: u64, map: Map<String, Value>) -> Result<Self, FrameError>;
}

/// [`FromFrame`] for argument types that are read whole.
macro_rules! whole {
    ($($args:ty),*) => {
        $(impl FromFrame for $args {
            fn from_frame(id: u64, map: Map<String, Value>) -> Result<Self, FrameError> {
                args(id, map)
            }
        })*
    };
}

whole!(
    Hello,
    Topics,
    CreateTask,
    NextArgs,
    TaskRef,
    ListArgs,
    TaskCommentsArgs,
    PostMessage,
    ChatReadArgs,
    PageArgs,
    InboxReadArgs,
    ReserveFiles,
    ReleaseFiles,
    FilesQuery,
    WhoHasFiles,
    NoArgs,
    AddWorkspace,
    RemoveWorkspace
);

impl FromFrame for TaskUpdateArgs {
    fn from_frame(id: u64, mut map: Map<String, Value>) -> Result<Self, FrameError> {
        Ok(TaskUpdateArgs { task: take_task(id, &mut map)?, update: args(id, map)? })
    }
}

impl FromFrame for TaskActionArgs {
    fn from_frame(id: u64, mut map: Map<String, Value>) -> Result<Self, FrameError> {
        Ok(TaskActionArgs { task: take_task(id, &mut map)?, action: args(id, map)? })
    }
}

impl FromFrame for TaskCommentArgs {
    fn from_frame(id: u64, mut map: Map<String, Value>) -> Result<Self, FrameError> {
        Ok(TaskCommentArgs { task: take_task(id, &mut map)?, comment: args(id, map)? })
    }
}

impl FromFrame for InboxAckArgs {
    fn from_frame(id: u64, mut map: Map<String, Value>) -> Result<Self, FrameError> {
        Ok(InboxAckArgs { agent: take_agent(id, &mut map)?, ack: args(id, map)? })
    }
}

impl FromFrame for PresenceSetArgs {
    fn from_frame(id: u64, mut map: Map<String, Value>) -> Result<Self, FrameError> {
        Ok(PresenceSetArgs { agent: take_agent(id, &mut map)?, heartbeat: args(id, map)? })
    }
}

/// No arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `hello`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hello {
    /// The agent this session acts as (absent for an observer, such as a dashboard). While
    /// the session is open the agent is present, and its claims are held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Credential for the agent, where the broker requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Topics to receive (default: none; subscribe later).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Resume: replay every matching event after this `seq` before going live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Seq>,
    /// The `epoch` the client last saw; a different one means a different history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The session is a person (the dashboard), not an AI agent. Needs `agent`; the broker
    /// records the name as a human's, and presence shows it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub human: bool,
    /// The workspace the session works in: by default the one the URL names
    /// (`/w/{workspace}/ws`), else `default`. One session, one workspace: on a
    /// `/w/{workspace}/ws` connection another name is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::grammar::WorkspaceName>)]
    pub workspace: Option<String>,
}

/// A credential (a token). Its `Debug` output hides it, so it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The credential itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// The answer to `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// The session's workspace.
    pub workspace: String,
    /// The workspace's epoch (its history's identity).
    pub epoch: String,
    /// The last `seq` before live events: events up to it were replayed (if resuming),
    /// every event after it arrives live.
    pub head: Seq,
    /// Whether every event after `since` is replayed: false when `since` was not given,
    /// the epoch differs, or `since` is older than the retained log — then re-read the
    /// state and continue from `head`.
    pub recovered: bool,
    /// The session's agent.
    pub agent: Option<String>,
    /// The topics subscribed.
    pub topics: Vec<String>,
}

/// `subscribe` / `unsubscribe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    /// `*`, `tasks`, `task:<id>`, `chat`, `chat:<channel>`, `presence`, `inbox:<agent>`,
    /// `files`.
    pub topics: Vec<String>,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The request's `id` (null when the request was too broken to have one).
    pub re: Option<u64>,
    /// Whether the operation succeeded.
    pub ok: bool,
    /// On success: the result, shaped like the HTTP response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// On failure: what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The last event the node had applied when it answered (so at least any write the
    /// reply reports): send it back as a request's `after` (HTTP: every response's
    /// `Muster-Seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Seq>,
}

impl Reply {
    /// A success.
    pub fn ok(re: u64, data: Value) -> Reply {
        Reply { re: Some(re), ok: true, data: Some(data), error: None, head: None }
    }

    /// A failure.
    pub fn error(re: Option<u64>, error: ErrorInfo) -> Reply {
        Reply { re, ok: false, data: None, error: Some(error), head: None }
    }
}

/// Anything the server sends: a reply or an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ServerFrame {
    /// An answer (has `re`).
    Reply(Reply),
    /// An event (has `seq`).
    Event(Box<crate::Event>),
}

/// A request that could not be parsed: answered with an `invalid` error, the connection
/// stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The request `id`, if it could be read.
    pub id: Option<u64>,
    /// The error to send back.
    pub error: ErrorInfo,
}

fn frame_error(id: Option<u64>, field: &str, message: impl Into<String>) -> FrameError {
    let message = message.into();
    FrameError {
        id,
        error: ErrorInfo {
            code: ErrorCode::Invalid,
            message: format!("{field}: {message}"),
            field: Some(field.to_owned()),
            conflicts: Vec::new(),
        },
    }
}

/// Decodes the arguments of an operation from what is left of the frame.
fn args<T: DeserializeOwned>(id: u64, map: Map<String, Value>) -> Result<T, FrameError> {
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let missing = message.strip_prefix("missing field `").and_then(|m| m.split('`').next());
        let field = match (missing, path.as_str()) {
            (Some(name), "." | "") => name.to_owned(),
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, "." | "") => "frame".to_owned(),
            (None, path) => path.to_owned(),
        };
        frame_error(Some(id), &field, message)
    })
}

/// Takes the optional `agent` field out of the frame.
fn take_agent(id: u64, map: &mut Map<String, Value>) -> Result<Option<String>, FrameError> {
    match map.remove("agent") {
        Some(Value::String(a)) => Ok(Some(a)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(frame_error(Some(id), "agent", "must be a string")),
    }
}

/// Takes the `task` field out of the frame.
fn take_task(id: u64, map: &mut Map<String, Value>) -> Result<TaskId, FrameError> {
    match map.remove("task") {
        Some(Value::String(s)) => {
            s.parse().map_err(|e: crate::ParseIdError| frame_error(Some(id), "task", e.to_string()))
        }
        Some(_) => Err(frame_error(Some(id), "task", "must be a task id such as \"T-12\"")),
        None => Err(frame_error(Some(id), "task", "is required")),
    }
}

impl Request {
    /// Parses a client frame strictly: a JSON object with a numeric `id`, a known `op`,
    /// and only the fields that operation takes. The error names the field at fault and
    /// carries the `id` when there was one.
    pub fn parse(text: &str) -> Result<Request, FrameError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| frame_error(None, "frame", format!("is not valid JSON: {e}")))?;
        let Value::Object(mut map) = value else {
            return Err(frame_error(None, "frame", "must be a JSON object"));
        };
        let id = match map.remove("id") {
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or_default(),
            Some(_) => return Err(frame_error(None, "id", "must be a non-negative integer")),
            None => return Err(frame_error(None, "id", "is required")),
        };
        let op = match map.remove("op") {
            Some(Value::String(op)) => op,
            Some(_) => return Err(frame_error(Some(id), "op", "must be a string")),
            None => return Err(frame_error(Some(id), "op", "is required")),
        };
        let idempotency_key = match map.remove("idempotencyKey") {
            None => None,
            Some(Value::String(key)) => {
                crate::grammar::check_idempotency_key(&key).map_err(|m| frame_error(Some(id), "idempotencyKey", m))?;
                Some(key)
            }
            Some(_) => return Err(frame_error(Some(id), "idempotencyKey", "must be a string")),
        };
        let after = match map.remove("after") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(_) => return Err(frame_error(Some(id), "after", "must be an event's seq (a non-negative integer)")),
        };
        let Some(op) = Op::from_frame(&op, id, map) else {
            let shown: String = op.chars().take(40).collect();
            let known = Op::NAMES.join(", ");
            return Err(frame_error(Some(id), "op", format!("unknown op {shown:?} (one of {known})")));
        };
        let op = op?;
        if idempotency_key.is_some() && !op.is_write() {
            return Err(frame_error(Some(id), "idempotencyKey", "only a write takes one (a read is safe to repeat)"));
        }
        Ok(Request { id, idempotency_key, after, op })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_frame_parses_and_round_trips() {
        let text = r#"{"id": 7, "op": "task.claim", "task": "T-12", "agent": "link"}"#;
        let request = Request::parse(text).unwrap();
        assert_eq!(request.id, 7);
        let Op::TaskClaim(args) = &request.op else { panic!("{request:?}") };
        assert_eq!(args.task, TaskId(12));
        assert_eq!(args.action.agent.as_deref(), Some("link"));
        let back = serde_json::to_value(&request).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());

        // What the client has seen travels with any request, and back.
        let text = r#"{"id": 8, "op": "task.get", "task": "T-12", "after": 140}"#;
        let request = Request::parse(text).unwrap();
        assert_eq!(request.after, Some(140));
        assert_eq!(serde_json::to_value(&request).unwrap(), serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn bad_frames_name_the_field_and_keep_the_id() {
        let cases = [
            ("nope", None, "frame"),
            ("[1]", None, "frame"),
            (r#"{"op": "hello"}"#, None, "id"),
            (r#"{"id": -1, "op": "hello"}"#, None, "id"),
            (r#"{"id": 3}"#, Some(3), "op"),
            (r#"{"id": 3, "op": "task.clam", "task": "T-1"}"#, Some(3), "op"),
            (r#"{"id": 4, "op": "task.claim"}"#, Some(4), "task"),
            (r#"{"id": 4, "op": "task.claim", "task": "X"}"#, Some(4), "task"),
            (r#"{"id": 5, "op": "task.claim", "task": "T-1", "agnet": "x"}"#, Some(5), "agnet"),
            (r#"{"id": 6, "op": "task.create"}"#, Some(6), "title"),
            (r#"{"id": 6, "op": "task.create", "title": "t", "priority": "P9"}"#, Some(6), "priority"),
            (r#"{"id": 8, "op": "hello", "since": "yesterday"}"#, Some(8), "since"),
            (r#"{"id": 9, "op": "task.get", "task": "T-1", "idempotencyKey": "k"}"#, Some(9), "idempotencyKey"),
            (r#"{"id": 9, "op": "task.claim", "task": "T-1", "idempotencyKey": 7}"#, Some(9), "idempotencyKey"),
            (r#"{"id": 9, "op": "task.claim", "task": "T-1", "idempotencyKey": ""}"#, Some(9), "idempotencyKey"),
            (r#"{"id": 10, "op": "task.get", "task": "T-1", "after": "yesterday"}"#, Some(10), "after"),
            (r#"{"id": 10, "op": "task.get", "task": "T-1", "after": -1}"#, Some(10), "after"),
        ];
        for (text, id, field) in cases {
            let err = Request::parse(text).unwrap_err();
            assert_eq!(err.id, id, "{text}");
            assert_eq!(err.error.field.as_deref(), Some(field), "{text}: {:?}", err.error);
            assert_eq!(err.error.code, ErrorCode::Invalid);
        }
    }
}
