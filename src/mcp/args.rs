//! The tools' arguments: what each takes, parsed leniently where clients differ (numbers
//! and booleans as strings) and strictly where a mistake would go unnoticed (unknown
//! arguments), with the schemas clients are shown.

use muster_client::protocol::{Priority, TaskStatus};
use schemars::JsonSchema;
use serde::Deserialize;

/// A tool's arguments as the client sent them, or why they do not fit. A misspelled or
/// unknown argument, or a value of the wrong type, is a tool error naming it, which the model
/// sees and can correct, rather than a protocol error (or, for an unknown argument, silence:
/// `timeout` for `timeout_seconds` used to wait the default 60 s).
pub(super) struct Args<T>(pub(super) Result<T, String>);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Args<T> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(de)?;
        Ok(Args(serde_path_to_error::deserialize(value).map_err(|e| match e.path().to_string() {
            path if path == "." => e.into_inner().to_string(),
            path => format!("{path}: {}", e.into_inner()),
        })))
    }
}

impl<T: JsonSchema> JsonSchema for Args<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// A number, or a string holding one: some clients (the MCP Inspector's CLI) send every
/// argument as a string.
fn number<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    match serde_json::Value::deserialize(de)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => {
            n.as_u64().map(Some).ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number ≥ 0")))
        }
        serde_json::Value::String(s) => {
            s.trim().parse().map(Some).map_err(|_| serde::de::Error::custom(format!("{s:?} is not a whole number ≥ 0")))
        }
        other => Err(serde::de::Error::custom(format!("expected a whole number, got {other}"))),
    }
}

/// A boolean, or `"true"` / `"false"`.
fn boolean<'de, D: serde::Deserializer<'de>>(de: D) -> Result<bool, D::Error> {
    match serde_json::Value::deserialize(de)? {
        serde_json::Value::Bool(b) => Ok(b),
        serde_json::Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
        other => Err(serde::de::Error::custom(format!("expected true or false, got {other}"))),
    }
}

/// A value named by a string, through its `FromStr` (e.g. `"P1"`, `"done"`, `"T-12"`).
fn named<'de, D: serde::Deserializer<'de>, T: std::str::FromStr>(de: D) -> Result<Option<T>, D::Error>
where
    T::Err: std::fmt::Display,
{
    match Option::<String>::deserialize(de)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Statuses: a list, or one string with commas (`"todo,doing"`).
fn statuses<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<TaskStatus>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        One(String),
    }
    let raw = match Raw::deserialize(de)? {
        Raw::List(list) => list,
        Raw::One(one) => one.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
    };
    raw.iter().map(|s| s.parse().map_err(serde::de::Error::custom)).collect()
}

/// No arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NoArgs {}

/// A task, by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TaskArg {
    /// The task id, e.g. "T-12".
    pub(super) task: String,
}

/// `list_tasks`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListTasksArgs {
    /// Only these statuses: todo, doing, review, blocked, done, cancelled.
    #[serde(default, deserialize_with = "statuses")]
    #[schemars(schema_with = "super::schema::input_list::<TaskStatus>")]
    pub(super) status: Vec<TaskStatus>,
    /// Only tasks assigned to this agent.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) assignee: Option<String>,
    /// Only your own tasks.
    #[serde(default, deserialize_with = "boolean")]
    pub(super) mine: bool,
    /// Every task, finished ones from the whole history included (without it and without
    /// status: open work and the last finished tasks).
    #[serde(default, deserialize_with = "boolean")]
    pub(super) all: bool,
    /// At most this many (default 50, at most 1000).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub(super) limit: Option<u64>,
    /// The "next" of the previous page, to go on.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) cursor: Option<String>,
}

/// `create_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTaskArgs {
    /// One line.
    pub(super) title: String,
    /// Details.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) description: Option<String>,
    /// P0 (most urgent) to P3; default P2.
    #[serde(default, deserialize_with = "named")]
    #[schemars(schema_with = "super::schema::input::<Priority>", extend("default" = "P2"))]
    pub(super) priority: Option<Priority>,
    /// Reserve the task for this agent.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) assignee: Option<String>,
    /// Tasks that must be done first, e.g. ["T-3"].
    #[serde(default)]
    pub(super) blocked_by: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub(super) tags: Vec<String>,
}

/// `next_task`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NextTaskArgs {
    /// Claim it too (atomically). Without, only shows it.
    #[serde(default, deserialize_with = "boolean")]
    pub(super) claim: bool,
}

/// `update_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateTaskArgs {
    /// The task id, e.g. "T-12".
    pub(super) task: String,
    /// New title.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) title: Option<String>,
    /// New description.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) description: Option<String>,
    /// New priority, P0 (most urgent) to P3.
    #[serde(default, deserialize_with = "named")]
    #[schemars(schema_with = "super::schema::input::<Priority>")]
    pub(super) priority: Option<Priority>,
    /// New status: doing claims, todo releases, review, blocked, done completes, cancelled.
    #[serde(default, deserialize_with = "named")]
    #[schemars(schema_with = "super::schema::input::<TaskStatus>")]
    pub(super) status: Option<TaskStatus>,
    /// The fencing token of your claim; refused if the claim changed hands since.
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub(super) token: Option<u64>,
}

/// `complete_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CompleteTaskArgs {
    /// The task id, e.g. "T-12".
    pub(super) task: String,
    /// The fencing token of your claim.
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub(super) token: Option<u64>,
}

/// `release_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReleaseTaskArgs {
    /// The task id, e.g. "T-12".
    pub(super) task: String,
    /// Take it away from another owner.
    #[serde(default, deserialize_with = "boolean")]
    pub(super) force: bool,
}

/// `post_message`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PostArgs {
    /// The text; @name mentions reach that agent's inbox.
    pub(super) content: String,
    /// Channel, default "general".
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) channel: Option<String>,
    /// A direct message to this agent.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) to: Option<String>,
    /// The message this answers, e.g. "M-40".
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) reply_to: Option<String>,
}

/// `comment_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CommentArgs {
    /// The task id, e.g. "T-12".
    pub(super) task: String,
    /// The comment; @name mentions reach that agent's inbox.
    pub(super) content: String,
    /// The message or comment this answers, e.g. "M-40".
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) reply_to: Option<String>,
}

/// `read_comments`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadCommentsArgs {
    /// The task id, e.g. "T-12".
    pub(super) task: String,
    /// At most this many (default 50).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub(super) limit: Option<u64>,
    /// The "next" of the previous page, to go on.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) cursor: Option<String>,
}

/// `read_chat`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadChatArgs {
    /// Channel, default "general".
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) channel: Option<String>,
    /// Only messages after this seq.
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub(super) since: Option<u64>,
    /// At most this many (default 50).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub(super) limit: Option<u64>,
    /// The "next" of the previous page, to go on (older messages, or newer after since).
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) cursor: Option<String>,
}

/// `read_inbox`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadInboxArgs {
    /// Include messages already read.
    #[serde(default, deserialize_with = "boolean")]
    pub(super) all: bool,
    /// At most this many (default 50).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub(super) limit: Option<u64>,
    /// The "next" of the previous page, to go on.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) cursor: Option<String>,
}

/// `ack_inbox`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AckArgs {
    /// Mark read up to this seq (default: everything).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub(super) seq: Option<u64>,
}

/// `set_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusArgs {
    /// busy, reviewing, ... ("active" clears it).
    pub(super) status: String,
    /// What you are doing, briefly.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) note: Option<String>,
}

/// `reserve_files`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReserveFilesArgs {
    /// Paths or globs: "src/auth/**", "*.lock" (at any depth), "docs/api.md". A plain path
    /// is that path from the repository's root (an absolute path inside the repository
    /// works too; symlinks are resolved); a directory, existing or not yet, holds what is
    /// inside it: "src/auth", "src/newmod/". Negation ("!x") is refused.
    pub(super) patterns: Vec<String>,
    /// The task you hold these for, e.g. "T-12": they are released with your claim.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) task: Option<String>,
    /// Let other agents share them (they may read-share, nobody may hold them exclusively).
    #[serde(default, deserialize_with = "boolean")]
    pub(super) shared: bool,
    /// Why, shown to whoever runs into them.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) reason: Option<String>,
    /// Release after this many seconds unless reserved again (default 7200 without a task).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub(super) ttl_seconds: Option<u64>,
    /// The repository (default: the server's --repo / MUSTER_REPO, else the git remote of
    /// the directory it runs in).
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) repo: Option<String>,
}

/// `release_files`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReleaseFilesArgs {
    /// The patterns to release, as reserved (default: all of yours in the repository).
    #[serde(default)]
    pub(super) patterns: Vec<String>,
    /// Release the reservations of this task only, e.g. "T-12".
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) task: Option<String>,
    /// The repository (default: the server's --repo / MUSTER_REPO, else the git remote of
    /// the directory it runs in).
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) repo: Option<String>,
}

/// `who_has_files`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WhoHasFilesArgs {
    /// Paths of files, repository-relative (or absolute, inside the repository).
    pub(super) paths: Vec<String>,
    /// The repository (default: the server's --repo / MUSTER_REPO, else the git remote of
    /// the directory it runs in).
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) repo: Option<String>,
}

/// `wait_for`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitArgs {
    /// Wait for a message that mentions you or is addressed to you (an unread one counts).
    #[serde(default, deserialize_with = "boolean")]
    pub(super) mention: bool,
    /// Wait for a change to this task, e.g. "T-12".
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) task: Option<String>,
    /// With task: until it has this status (e.g. "done").
    #[serde(default, deserialize_with = "named")]
    #[schemars(schema_with = "super::schema::input::<TaskStatus>")]
    pub(super) until: Option<TaskStatus>,
    /// Wait for a teammate to be stuck: holding a doing task and silent too long (one
    /// already stuck counts).
    #[serde(default, deserialize_with = "boolean")]
    pub(super) stuck: bool,
    /// Wait for any event on this topic (tasks, task:T-12, chat, chat:NAME, presence, or *).
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) topic: Option<String>,
    /// Give up after this many seconds (default 60, at most 600).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64", extend("default" = 60, "maximum" = 600))]
    pub(super) timeout_seconds: Option<u64>,
}
