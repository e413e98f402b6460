//! `muster mcp --as NAME`: an MCP server over stdio for one agent.
//!
//! It holds one WebSocket session to the broker as that agent, so the agent is present
//! (and its claims held) while the MCP process runs, and leaves when it exits. Every tool is
//! a broker operation; a refusal (a conflict, a stale token, bad input) is a tool error
//! carrying the broker's message, never a success.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use muster_client::protocol::ws::{ChatReadArgs, InboxReadArgs, ListArgs};
use muster_client::protocol::{
    ChatMessage, CreateTask, Cursor, Heartbeat, Inbox, MessageId, MessageList, PathHolders, PostMessage, Presence,
    Priority, ReleaseFiles, Reservation, ReserveFiles, Task, TaskAction, TaskId, TaskList, TaskStatus, Topic,
    UpdateTask,
};
use muster_client::{Client, Error, Options, Wait};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, JsonObject, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest a `wait_for` may block: MCP clients time tool calls out.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Runs the MCP server on stdin/stdout until the client closes it.
pub async fn serve(url: String, agent: String, token: Option<muster_client::protocol::ws::Secret>) -> ExitCode {
    // Names are case-insensitive; the broker writes them in lowercase, and so do we.
    let agent = muster_client::protocol::names::canonical(&agent);
    let mut options = Options::new(url.clone()).agent(agent.clone()).topics([format!("inbox:{agent}")]);
    options.token = token;
    // The session's events are not read here: `wait_for` listens to them itself.
    let (client, _) = match Client::connect(options.clone()).await {
        Ok(pair) => pair,
        Err(Error::Unreachable { reason, .. }) => {
            // An editor may start its MCP servers before the broker: serve anyway, connect
            // when the broker comes up; until then, tools say what is wrong.
            eprintln!("muster mcp: broker not running at {url} yet ({reason}); connecting as soon as it is up");
            Client::start(options)
        }
        Err(e) => {
            eprintln!("muster mcp: the broker at {url} refused the session: {e}");
            return ExitCode::from(10);
        }
    };
    let server = Muster { client, agent, tool_router: Muster::tool_router() };
    match server.serve(rmcp::transport::stdio()).await {
        Ok(running) => match running.waiting().await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("muster mcp: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("muster mcp: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The MCP server: one agent's session with the broker.
#[derive(Clone)]
pub struct Muster {
    client: Client,
    agent: String,
    #[allow(dead_code)] // read by the code `tool_handler` generates
    tool_router: ToolRouter<Muster>,
}

/// A result, as structured content (typed, for clients that read it; its tool's output
/// schema says what it holds) and as the same JSON in text (for those that do not).
fn ok<T: Serialize>(value: &T) -> Result<CallToolResult, ErrorData> {
    let value = serde_json::to_value(value).map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    Ok(CallToolResult::structured(value))
}

/// The output schema of a tool that answers a `T`: `T`'s schema as the OpenAPI document
/// states it (the same definitions), made self-contained with the types it refers to under
/// `$defs`.
fn output<T: utoipa::ToSchema>() -> Arc<JsonObject> {
    let mut defs = definitions::<T>();
    let mut root = defs.remove(T::name().as_ref()).and_then(|v| v.as_object().cloned()).unwrap_or_default();
    if !defs.is_empty() {
        root.insert("$defs".into(), serde_json::Value::Object(defs));
    }
    Arc::new(root)
}

/// How a wrapped result holds its `T`s.
enum Shape {
    /// `T` or `null`.
    Nullable,
    /// A list of `T`.
    List,
}

/// The output schema of a tool that answers `{field: …}` with `T`s (MCP's structured
/// content is an object).
fn output_field<T: utoipa::ToSchema>(field: &str, shape: Shape) -> Arc<JsonObject> {
    let item = serde_json::json!({ "$ref": format!("#/$defs/{}", T::name()) });
    let value = match shape {
        Shape::Nullable => serde_json::json!({ "anyOf": [item, { "type": "null" }] }),
        Shape::List => serde_json::json!({ "type": "array", "items": item }),
    };
    let schema = serde_json::json!({
        "type": "object",
        "properties": { field: value },
        "required": [field],
        "$defs": definitions::<T>(),
    });
    Arc::new(schema.as_object().cloned().unwrap_or_default())
}

/// `T` and every type its schema refers to, by name, with references into `$defs`.
fn definitions<T: utoipa::ToSchema>() -> JsonObject {
    let mut found = vec![(T::name().into_owned(), <T as utoipa::PartialSchema>::schema())];
    T::schemas(&mut found);
    let mut defs = JsonObject::new();
    for (name, schema) in found {
        let mut value = serde_json::to_value(schema).unwrap_or_default();
        to_defs(&mut value);
        defs.insert(name, value);
    }
    defs
}

/// Points OpenAPI's `#/components/schemas/X` references at `#/$defs/X`.
fn to_defs(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(r) if key == "$ref" => {
                        if let Some(name) = r.strip_prefix("#/components/schemas/") {
                            *r = format!("#/$defs/{name}");
                        }
                    }
                    other => to_defs(other),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(to_defs),
        _ => {}
    }
}

/// A refusal or failure, as the broker said it: a tool error, not a protocol error.
fn refused(e: Error) -> Result<CallToolResult, ErrorData> {
    let text = match &e {
        Error::Api(info) => format!("{} ({})", info.message, info.code.as_str()),
        Error::Disconnected => {
            "not connected to the Muster broker right now (is `muster serve` running?); the operation \
             may not have happened: check, then retry"
                .to_owned()
        }
        other => other.to_string(),
    };
    Ok(CallToolResult::error(vec![ContentBlock::text(text)]))
}

fn answer<T: Serialize>(result: Result<T, Error>) -> Result<CallToolResult, ErrorData> {
    match result {
        Ok(value) => ok(&value),
        Err(e) => refused(e),
    }
}

fn bad(message: impl Into<String>) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::error(vec![ContentBlock::text(message.into())]))
}

fn parse<T: std::str::FromStr>(raw: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    raw.parse().map_err(|e: T::Err| e.to_string())
}

/// A tool's arguments as the client sent them, or why they do not fit. A misspelled or
/// unknown argument, or a value of the wrong type, is a tool error naming it, which the model
/// sees and can correct, rather than a protocol error (or, for an unknown argument, silence:
/// `timeout` for `timeout_seconds` used to wait the default 60 s).
pub struct Args<T>(Result<T, String>);

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

/// The arguments of a tool call, or the tool error that says what is wrong with them.
macro_rules! args {
    ($args:expr) => {
        match $args.0 {
            Ok(args) => args,
            Err(e) => return bad(e),
        }
    };
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

/// A task's priority, as the schema publishes it.
#[derive(JsonSchema)]
#[schemars(inline)]
#[allow(dead_code)] // only its schema is used
enum PriorityName {
    P0,
    P1,
    P2,
    P3,
}

/// A task's status, as the schema publishes it.
#[derive(JsonSchema)]
#[schemars(inline)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // only its schema is used
enum StatusName {
    Todo,
    Doing,
    Review,
    Blocked,
    Done,
    Cancelled,
}

/// No arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// A task, by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskArg {
    /// The task id, e.g. "T-12".
    pub task: String,
}

/// `list_tasks`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTasksArgs {
    /// Only these statuses: todo, doing, review, blocked, done, cancelled.
    #[serde(default, deserialize_with = "statuses")]
    #[schemars(with = "Vec<StatusName>")]
    pub status: Vec<TaskStatus>,
    /// Only tasks assigned to this agent.
    #[serde(default)]
    #[schemars(with = "String")]
    pub assignee: Option<String>,
    /// Only your own tasks.
    #[serde(default, deserialize_with = "boolean")]
    pub mine: bool,
    /// Every task, finished ones from the whole history included (without it and without
    /// status: open work and the last finished tasks).
    #[serde(default, deserialize_with = "boolean")]
    pub all: bool,
    /// At most this many (default 50, at most 1000).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub limit: Option<u64>,
    /// The "next" of the previous page, to go on.
    #[serde(default)]
    #[schemars(with = "String")]
    pub cursor: Option<String>,
}

/// `create_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskArgs {
    /// One line.
    pub title: String,
    /// Details.
    #[serde(default)]
    #[schemars(with = "String")]
    pub description: Option<String>,
    /// P0 (most urgent) to P3; default P2.
    #[serde(default, deserialize_with = "named")]
    #[schemars(with = "PriorityName", extend("default" = "P2"))]
    pub priority: Option<Priority>,
    /// Reserve the task for this agent.
    #[serde(default)]
    #[schemars(with = "String")]
    pub assignee: Option<String>,
    /// Tasks that must be done first, e.g. ["T-3"].
    #[serde(default)]
    pub blocked_by: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `next_task`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NextTaskArgs {
    /// Claim it too (atomically). Without, only shows it.
    #[serde(default, deserialize_with = "boolean")]
    pub claim: bool,
}

/// `update_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTaskArgs {
    /// The task id, e.g. "T-12".
    pub task: String,
    /// New title.
    #[serde(default)]
    #[schemars(with = "String")]
    pub title: Option<String>,
    /// New description.
    #[serde(default)]
    #[schemars(with = "String")]
    pub description: Option<String>,
    /// New priority, P0 (most urgent) to P3.
    #[serde(default, deserialize_with = "named")]
    #[schemars(with = "PriorityName")]
    pub priority: Option<Priority>,
    /// New status: doing claims, todo releases, review, blocked, done completes, cancelled.
    #[serde(default, deserialize_with = "named")]
    #[schemars(with = "StatusName")]
    pub status: Option<TaskStatus>,
    /// The fencing token of your claim; refused if the claim changed hands since.
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub token: Option<u64>,
}

/// `complete_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTaskArgs {
    /// The task id, e.g. "T-12".
    pub task: String,
    /// The fencing token of your claim.
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub token: Option<u64>,
}

/// `release_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseTaskArgs {
    /// The task id, e.g. "T-12".
    pub task: String,
    /// Take it away from another owner.
    #[serde(default, deserialize_with = "boolean")]
    pub force: bool,
}

/// `post_message`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostArgs {
    /// The text; @name mentions reach that agent's inbox.
    pub content: String,
    /// Channel, default "general".
    #[serde(default)]
    #[schemars(with = "String")]
    pub channel: Option<String>,
    /// A direct message to this agent.
    #[serde(default)]
    #[schemars(with = "String")]
    pub to: Option<String>,
    /// The message this answers, e.g. "M-40".
    #[serde(default)]
    #[schemars(with = "String")]
    pub reply_to: Option<String>,
}

/// `read_chat`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadChatArgs {
    /// Channel, default "general".
    #[serde(default)]
    #[schemars(with = "String")]
    pub channel: Option<String>,
    /// Only messages after this seq.
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub since: Option<u64>,
    /// At most this many (default 50).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub limit: Option<u64>,
    /// The "next" of the previous page, to go on (older messages, or newer after since).
    #[serde(default)]
    #[schemars(with = "String")]
    pub cursor: Option<String>,
}

/// `read_inbox`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadInboxArgs {
    /// Include messages already read.
    #[serde(default, deserialize_with = "boolean")]
    pub all: bool,
    /// At most this many (default 50).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub limit: Option<u64>,
    /// The "next" of the previous page, to go on.
    #[serde(default)]
    #[schemars(with = "String")]
    pub cursor: Option<String>,
}

/// `ack_inbox`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AckArgs {
    /// Mark read up to this seq (default: everything).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub seq: Option<u64>,
}

/// `set_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    /// busy, reviewing, ... ("active" clears it).
    pub status: String,
    /// What you are doing, briefly.
    #[serde(default)]
    #[schemars(with = "String")]
    pub note: Option<String>,
}

/// `reserve_files`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveFilesArgs {
    /// Repository-relative paths or globs: "src/auth/**", "*.lock" (at any depth),
    /// "docs/api.md". A plain path is that path from the repository's root; a directory's
    /// contents: "src/auth/".
    pub patterns: Vec<String>,
    /// The task you hold these for, e.g. "T-12": they are released with your claim.
    #[serde(default)]
    #[schemars(with = "String")]
    pub task: Option<String>,
    /// Let other agents share them (they may read-share, nobody may hold them exclusively).
    #[serde(default, deserialize_with = "boolean")]
    pub shared: bool,
    /// Why, shown to whoever runs into them.
    #[serde(default)]
    #[schemars(with = "String")]
    pub reason: Option<String>,
    /// Release after this many seconds unless reserved again (default 7200 without a task).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64")]
    pub ttl_seconds: Option<u64>,
    /// The repository (default: the git remote of the directory this server runs in).
    #[serde(default)]
    #[schemars(with = "String")]
    pub repo: Option<String>,
}

/// `release_files`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseFilesArgs {
    /// The patterns to release, as reserved (default: all of yours in the repository).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Release the reservations of this task only, e.g. "T-12".
    #[serde(default)]
    #[schemars(with = "String")]
    pub task: Option<String>,
    /// The repository (default: the git remote of the directory this server runs in).
    #[serde(default)]
    #[schemars(with = "String")]
    pub repo: Option<String>,
}

/// `who_has_files`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhoHasFilesArgs {
    /// Paths of files, repository-relative (or absolute, inside the repository).
    pub paths: Vec<String>,
    /// The repository (default: the git remote of the directory this server runs in).
    #[serde(default)]
    #[schemars(with = "String")]
    pub repo: Option<String>,
}

/// The repository named, or the one this server runs in.
fn repo(named: Option<String>) -> Result<String, String> {
    if let Some(repo) = named {
        return Ok(repo);
    }
    let cwd = std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?;
    let worktree = crate::cli::git::Worktree::find(&cwd)
        .ok_or_else(|| format!("{} is not in a git repository: give repo", cwd.display()))?;
    worktree.repo_name().map_err(|e| e.0)
}

/// `wait_for`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// Wait for a message that mentions you or is addressed to you (an unread one counts).
    #[serde(default, deserialize_with = "boolean")]
    pub mention: bool,
    /// Wait for a change to this task, e.g. "T-12".
    #[serde(default)]
    #[schemars(with = "String")]
    pub task: Option<String>,
    /// With task: until it has this status (e.g. "done").
    #[serde(default, deserialize_with = "named")]
    #[schemars(with = "StatusName")]
    pub until: Option<TaskStatus>,
    /// Wait for a teammate to be stuck: holding a doing task and silent too long (one
    /// already stuck counts).
    #[serde(default, deserialize_with = "boolean")]
    pub stuck: bool,
    /// Wait for any event on this topic (tasks, task:T-12, chat, chat:NAME, presence, or *).
    #[serde(default)]
    #[schemars(with = "String")]
    pub topic: Option<String>,
    /// Give up after this many seconds (default 60, at most 600).
    #[serde(default, deserialize_with = "number")]
    #[schemars(with = "u64", extend("default" = 60, "maximum" = 600))]
    pub timeout_seconds: Option<u64>,
}

/// Tasks in one `list_tasks` answer unless the tool is asked for more: a page that fits in
/// a model's context.
const TASK_PAGE: usize = 50;

#[tool_router]
impl Muster {
    /// The session's agent acting.
    fn action(&self) -> TaskAction {
        TaskAction { agent: Some(self.agent.clone()), ..Default::default() }
    }

    #[tool(
        description = "List tasks by id, a page at a time: open work and the last finished tasks, or filter by status, assignee, or only yours. Pass the reply's next as cursor for the next page.",
        annotations(read_only_hint = true, open_world_hint = false),
        output_schema = output::<TaskList>()
    )]
    async fn list_tasks(&self, Parameters(a): Parameters<Args<ListTasksArgs>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        let assignee = if a.mine { Some(self.agent.clone()) } else { a.assignee };
        let limit = Some(a.limit.map_or(TASK_PAGE, |n| usize::try_from(n).unwrap_or(usize::MAX)));
        let filter =
            ListArgs { status: a.status, all: a.all, assignee, limit, cursor: a.cursor, ..ListArgs::default() };
        answer(self.client.task_page(filter).await)
    }

    #[tool(
        description = "Create a task.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = output::<Task>()
    )]
    async fn create_task(&self, Parameters(a): Parameters<Args<CreateTaskArgs>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        let blocked_by = match a.blocked_by.iter().map(|b| parse::<TaskId>(b)).collect::<Result<Vec<_>, _>>() {
            Ok(b) => b,
            Err(e) => return bad(e),
        };
        let create = CreateTask {
            title: a.title,
            description: a.description,
            priority: a.priority,
            assignee: a.assignee,
            blocked_by,
            tags: a.tags,
            agent: Some(self.agent.clone()),
        };
        answer(self.client.create_task(create).await)
    }

    #[tool(
        description = "Show one task, with its claim and fencing token.",
        annotations(read_only_hint = true, open_world_hint = false),
        output_schema = output::<Task>()
    )]
    async fn show_task(&self, Parameters(a): Parameters<Args<TaskArg>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        match parse::<TaskId>(&a.task) {
            Ok(id) => answer(self.client.task(id).await),
            Err(e) => bad(e),
        }
    }

    #[tool(
        description = "Claim a task before working on it. Exactly one agent gets it; if another holds it, this fails and names the owner. The result's claim.token is your fencing token.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = output::<Task>()
    )]
    async fn claim_task(&self, Parameters(a): Parameters<Args<TaskArg>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        match parse::<TaskId>(&a.task) {
            Ok(id) => answer(self.client.claim(id, self.action()).await),
            Err(e) => bad(e),
        }
    }

    #[tool(
        description = "The task you should do next: one you already hold, else the most urgent open one. With claim=true it is claimed for you atomically. Returns null when there is nothing to do.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = output_field::<Task>("task", Shape::Nullable)
    )]
    async fn next_task(&self, Parameters(a): Parameters<Args<NextTaskArgs>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        answer(
            self.client.next(Some(self.agent.clone()), a.claim).await.map(|task| serde_json::json!({ "task": task })),
        )
    }

    #[tool(
        description = "Change a task: title, description, priority, or status (doing claims, todo releases, done completes).",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false),
        output_schema = output::<Task>()
    )]
    async fn update_task(&self, Parameters(a): Parameters<Args<UpdateTaskArgs>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        let id = match parse::<TaskId>(&a.task) {
            Ok(id) => id,
            Err(e) => return bad(e),
        };
        let update = UpdateTask {
            title: a.title,
            description: a.description,
            priority: a.priority,
            status: a.status,
            agent: Some(self.agent.clone()),
            token: a.token,
            ..Default::default()
        };
        answer(self.client.update_task(id, update).await)
    }

    #[tool(
        description = "Mark a task done (you must hold it, or nobody must).",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = output::<Task>()
    )]
    async fn complete_task(
        &self,
        Parameters(a): Parameters<Args<CompleteTaskArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        match parse::<TaskId>(&a.task) {
            Ok(id) => answer(self.client.complete(id, TaskAction { token: a.token, ..self.action() }).await),
            Err(e) => bad(e),
        }
    }

    #[tool(
        description = "Give a task back to the board (force=true takes it from another owner).",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false),
        output_schema = output::<Task>()
    )]
    async fn release_task(
        &self,
        Parameters(a): Parameters<Args<ReleaseTaskArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        match parse::<TaskId>(&a.task) {
            Ok(id) => answer(self.client.release(id, TaskAction { force: a.force, ..self.action() }).await),
            Err(e) => bad(e),
        }
    }

    #[tool(
        description = "Post to team chat. @name mentions land in that agent's inbox; `to` sends a direct message.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = output::<ChatMessage>()
    )]
    async fn post_message(&self, Parameters(a): Parameters<Args<PostArgs>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        let reply_to = match a.reply_to.as_deref().map(parse::<MessageId>).transpose() {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let post = PostMessage { from: self.agent.clone(), content: a.content, channel: a.channel, to: a.to, reply_to };
        answer(self.client.post(post).await)
    }

    #[tool(
        description = "Read a chat channel (newest messages last).",
        annotations(read_only_hint = true, open_world_hint = false),
        output_schema = output::<MessageList>()
    )]
    async fn read_chat(&self, Parameters(a): Parameters<Args<ReadChatArgs>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        answer(
            self.client
                .messages(ChatReadArgs {
                    channel: a.channel,
                    since: a.since,
                    before: None,
                    limit: a.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                    cursor: a.cursor,
                })
                .await,
        )
    }

    #[tool(
        description = "Your inbox: unread messages that mention you or are addressed to you.",
        annotations(read_only_hint = true, open_world_hint = false),
        output_schema = output::<Inbox>()
    )]
    async fn read_inbox(&self, Parameters(a): Parameters<Args<ReadInboxArgs>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        let args = InboxReadArgs {
            agent: Some(self.agent.clone()),
            all: a.all,
            limit: a.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            cursor: a.cursor,
        };
        answer(self.client.inbox(args).await)
    }

    #[tool(
        description = "Mark your inbox read (up to seq, default everything).",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = output::<Cursor>()
    )]
    async fn ack_inbox(&self, Parameters(a): Parameters<Args<AckArgs>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        answer(self.client.ack(Some(self.agent.clone()), a.seq).await)
    }

    #[tool(
        description = "Reserve files before you edit them, so no other agent edits or commits them meanwhile. All or nothing: if another agent holds an overlapping pattern, nothing is reserved and the error names the holder, their pattern and task, and a path both match: work on other files or ask them. Give your task to have them released when you complete or release it.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = output_field::<Reservation>("reservations", Shape::List)
    )]
    async fn reserve_files(
        &self,
        Parameters(a): Parameters<Args<ReserveFilesArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        let task = match a.task.as_deref().map(parse::<TaskId>).transpose() {
            Ok(t) => t,
            Err(e) => return bad(e),
        };
        let repo = match repo(a.repo) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let here = std::env::current_dir().ok().and_then(|cwd| crate::cli::git::Worktree::find(&cwd));
        let request = ReserveFiles {
            repo,
            patterns: a.patterns.iter().map(|p| crate::cli::files::pattern_for(p, here.as_ref())).collect(),
            shared: a.shared,
            task,
            reason: a.reason,
            ttl_seconds: a.ttl_seconds,
            agent: Some(self.agent.clone()),
        };
        answer(self.client.reserve_files(request).await.map(|r| serde_json::json!({ "reservations": r })))
    }

    #[tool(
        description = "Release your file reservations: the patterns given, those of a task, or all of yours in the repository.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false),
        output_schema = output_field::<Reservation>("released", Shape::List)
    )]
    async fn release_files(
        &self,
        Parameters(a): Parameters<Args<ReleaseFilesArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        let task = match a.task.as_deref().map(parse::<TaskId>).transpose() {
            Ok(t) => t,
            Err(e) => return bad(e),
        };
        let repo = match repo(a.repo) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let here = std::env::current_dir().ok().and_then(|cwd| crate::cli::git::Worktree::find(&cwd));
        let patterns = crate::cli::files::release_patterns(&a.patterns, here.as_ref());
        let request = ReleaseFiles { repo, patterns, task, agent: Some(self.agent.clone()) };
        answer(self.client.release_files(request).await.map(|r| serde_json::json!({ "released": r })))
    }

    #[tool(
        description = "Who holds these files: the reservations whose pattern matches each path.",
        annotations(read_only_hint = true, open_world_hint = false),
        output_schema = output_field::<PathHolders>("paths", Shape::List)
    )]
    async fn who_has_files(
        &self,
        Parameters(a): Parameters<Args<WhoHasFilesArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        let repo = match repo(a.repo) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let cwd = std::env::current_dir().unwrap_or_default();
        let worktree = crate::cli::git::Worktree::find(&cwd);
        let paths = a
            .paths
            .iter()
            .map(|p| {
                let absolute = std::path::Path::new(p).is_absolute();
                match &worktree {
                    Some(w) if absolute => w.relative(&cwd, std::path::Path::new(p)).unwrap_or_else(|| p.clone()),
                    _ => p.clone(),
                }
            })
            .collect();
        answer(self.client.who_has_files(repo, paths).await.map(|p| serde_json::json!({ "paths": p })))
    }

    #[tool(
        description = "Who is here: every agent's status, last contact, current task, and whether it looks stuck.",
        annotations(read_only_hint = true, open_world_hint = false),
        output_schema = output_field::<Presence>("agents", Shape::List)
    )]
    async fn who(&self, Parameters(a): Parameters<Args<NoArgs>>) -> Result<CallToolResult, ErrorData> {
        args!(a);
        answer(self.client.presence().await.map(|agents| serde_json::json!({ "agents": agents })))
    }

    #[tool(
        description = "Set your status (busy, reviewing...; active clears it) and a short note.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = output::<Presence>()
    )]
    async fn set_status(&self, Parameters(a): Parameters<Args<StatusArgs>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        let heartbeat = Heartbeat { status: Some(a.status), note: a.note.map(Some) };
        answer(self.client.set_status(Some(self.agent.clone()), heartbeat).await)
    }

    #[tool(
        description = "Block until something happens: a message for you (mention=true), a change to a task (task, optionally until a status), a stuck teammate (stuck=true), or any event on a topic. Returns the event, or an error on timeout.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn wait_for(&self, Parameters(a): Parameters<Args<WaitArgs>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        let task = match a.task.as_deref().map(parse::<TaskId>).transpose() {
            Ok(t) => t,
            Err(e) => return bad(e),
        };
        let topic = match a.topic.as_deref().map(str::parse::<Topic>).transpose() {
            Ok(t) => t,
            Err(e) => return bad(e.to_string()),
        };
        let mention = a.mention.then(|| self.agent.clone());
        let wait = Wait { mention, task, until: a.until, stuck: a.stuck, topics: topic.into_iter().collect() };
        if wait.is_empty() {
            return bad("wait for what? set mention, task, stuck or topic");
        }
        let timeout = Duration::from_secs(a.timeout_seconds.unwrap_or(60)).min(MAX_WAIT);
        match self.client.wait_for(&wait, Some(timeout)).await {
            Ok(Some(waited)) => ok(&waited),
            Ok(None) => bad(format!("nothing happened within {}s", timeout.as_secs())),
            Err(e) => refused(e),
        }
    }
}

#[tool_handler]
impl ServerHandler for Muster {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("muster", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "You are {agent} on a team of agents coordinated by Muster. Claim a task (claim_task or next_task \
                 with claim=true) before working on it; reserve the files you will edit with reserve_files (giving \
                 the task) before editing them, and if another agent holds them, work on something else or ask \
                 them; post progress with post_message; check read_inbox for messages to you; complete_task when \
                 done (its reservations are released with it); use wait_for to block until someone needs you.",
                agent = self.agent
            ))
    }
}
