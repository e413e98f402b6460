//! `muster mcp --as NAME`: an MCP server over stdio for one agent.
//!
//! It holds one WebSocket session to the broker as that agent, so the agent is present
//! (and its claims held) while the MCP process runs, and leaves when it exits. Every tool is
//! a broker operation; a refusal (a conflict, a stale token, bad input) is a tool error
//! carrying the broker's message, never a success.

use std::process::ExitCode;
use std::time::Duration;

use muster_client::protocol::ws::{ChatReadArgs, InboxReadArgs, ListArgs};
use muster_client::protocol::{
    CreateTask, Heartbeat, MessageId, PostMessage, Priority, ReleaseFiles, ReserveFiles, TaskAction, TaskId,
    TaskStatus, Topic, UpdateTask,
};
use muster_client::{Client, Error, Options, Wait};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
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

fn ok<T: Serialize>(value: &T) -> Result<CallToolResult, ErrorData> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
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

/// A task, by id.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskArg {
    /// The task id, e.g. "T-12".
    pub task: String,
}

/// `list_tasks`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct ListTasksArgs {
    /// Only these statuses: todo, doing, review, blocked, done, cancelled.
    #[serde(default)]
    pub status: Vec<String>,
    /// Only tasks assigned to this agent.
    pub assignee: Option<String>,
    /// Only your own tasks.
    #[serde(default)]
    pub mine: bool,
    /// Every task, finished ones from the whole history included (without it and without
    /// status: open work and the last finished tasks).
    #[serde(default)]
    pub all: bool,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<usize>,
    /// The "next" of the previous page, to go on.
    pub cursor: Option<String>,
}

/// `create_task`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateTaskArgs {
    /// One line.
    pub title: String,
    /// Details.
    pub description: Option<String>,
    /// P0 (most urgent) to P3; default P2.
    pub priority: Option<String>,
    /// Reserve the task for this agent.
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
pub struct NextTaskArgs {
    /// Claim it too (atomically). Without, only shows it.
    #[serde(default)]
    pub claim: bool,
}

/// `update_task`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpdateTaskArgs {
    /// The task id, e.g. "T-12".
    pub task: String,
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New priority, P0..P3.
    pub priority: Option<String>,
    /// New status: doing claims, todo releases, review, blocked, done completes, cancelled.
    pub status: Option<String>,
    /// The fencing token of your claim; refused if the claim changed hands since.
    pub token: Option<u64>,
}

/// `complete_task`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CompleteTaskArgs {
    /// The task id, e.g. "T-12".
    pub task: String,
    /// The fencing token of your claim.
    pub token: Option<u64>,
}

/// `release_task`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReleaseTaskArgs {
    /// The task id, e.g. "T-12".
    pub task: String,
    /// Take it away from another owner.
    #[serde(default)]
    pub force: bool,
}

/// `post_message`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PostArgs {
    /// The text; @name mentions reach that agent's inbox.
    pub content: String,
    /// Channel, default "general".
    pub channel: Option<String>,
    /// A direct message to this agent.
    pub to: Option<String>,
    /// The message this answers, e.g. "M-40".
    pub reply_to: Option<String>,
}

/// `read_chat`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct ReadChatArgs {
    /// Channel, default "general".
    pub channel: Option<String>,
    /// Only messages after this seq.
    pub since: Option<u64>,
    /// At most this many (default 50).
    pub limit: Option<usize>,
    /// The "next" of the previous page, to go on (older messages, or newer after since).
    pub cursor: Option<String>,
}

/// `read_inbox`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct ReadInboxArgs {
    /// Include messages already read.
    #[serde(default)]
    pub all: bool,
    /// At most this many (default 50).
    pub limit: Option<usize>,
    /// The "next" of the previous page, to go on.
    pub cursor: Option<String>,
}

/// `ack_inbox`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct AckArgs {
    /// Mark read up to this seq (default: everything).
    pub seq: Option<u64>,
}

/// `set_status`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatusArgs {
    /// busy, reviewing, ... ("active" clears it).
    pub status: String,
    /// What you are doing, briefly.
    pub note: Option<String>,
}

/// `reserve_files`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReserveFilesArgs {
    /// Repository-relative paths or globs: "src/auth/**", "*.lock" (at any depth),
    /// "docs/api.md". A plain path is that path from the repository's root; a directory's
    /// contents: "src/auth/".
    pub patterns: Vec<String>,
    /// The task you hold these for, e.g. "T-12": they are released with your claim.
    pub task: Option<String>,
    /// Let other agents share them (they may read-share, nobody may hold them exclusively).
    #[serde(default)]
    pub shared: bool,
    /// Why, shown to whoever runs into them.
    pub reason: Option<String>,
    /// Release after this many seconds unless reserved again (default 7200 without a task).
    pub ttl_seconds: Option<u64>,
    /// The repository (default: the git remote of the directory this server runs in).
    pub repo: Option<String>,
}

/// `release_files`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct ReleaseFilesArgs {
    /// The patterns to release, as reserved (default: all of yours in the repository).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Release the reservations of this task only, e.g. "T-12".
    pub task: Option<String>,
    /// The repository (default: the git remote of the directory this server runs in).
    pub repo: Option<String>,
}

/// `who_has_files`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WhoHasFilesArgs {
    /// Paths of files, repository-relative (or absolute, inside the repository).
    pub paths: Vec<String>,
    /// The repository (default: the git remote of the directory this server runs in).
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
pub struct WaitArgs {
    /// Wait for a message that mentions you or is addressed to you (an unread one counts).
    #[serde(default)]
    pub mention: bool,
    /// Wait for a change to this task, e.g. "T-12".
    pub task: Option<String>,
    /// With task: until it has this status (e.g. "done").
    pub until: Option<String>,
    /// Wait for a teammate to be stuck: holding a doing task and silent too long (one
    /// already stuck counts).
    #[serde(default)]
    pub stuck: bool,
    /// Wait for any event on this topic (tasks, task:T-12, chat, chat:NAME, presence, or *).
    pub topic: Option<String>,
    /// Give up after this many seconds (default 60, at most 600).
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
        description = "List tasks by id, a page at a time: open work and the last finished tasks, or filter by status, assignee, or only yours. Pass the reply's next as cursor for the next page."
    )]
    async fn list_tasks(&self, Parameters(a): Parameters<ListTasksArgs>) -> Result<CallToolResult, ErrorData> {
        let status = match a.status.iter().map(|s| parse::<TaskStatus>(s)).collect::<Result<Vec<_>, _>>() {
            Ok(s) => s,
            Err(e) => return bad(e),
        };
        let assignee = if a.mine { Some(self.agent.clone()) } else { a.assignee };
        let limit = Some(a.limit.unwrap_or(TASK_PAGE));
        let filter = ListArgs { status, all: a.all, assignee, limit, cursor: a.cursor, ..ListArgs::default() };
        answer(self.client.task_page(filter).await)
    }

    #[tool(description = "Create a task.")]
    async fn create_task(&self, Parameters(a): Parameters<CreateTaskArgs>) -> Result<CallToolResult, ErrorData> {
        let priority = match a.priority.as_deref().map(parse::<Priority>).transpose() {
            Ok(p) => p,
            Err(e) => return bad(e),
        };
        let blocked_by = match a.blocked_by.iter().map(|b| parse::<TaskId>(b)).collect::<Result<Vec<_>, _>>() {
            Ok(b) => b,
            Err(e) => return bad(e),
        };
        let create = CreateTask {
            title: a.title,
            description: a.description,
            priority,
            assignee: a.assignee,
            blocked_by,
            tags: a.tags,
            agent: Some(self.agent.clone()),
        };
        answer(self.client.create_task(create).await)
    }

    #[tool(description = "Show one task, with its claim and fencing token.")]
    async fn show_task(&self, Parameters(a): Parameters<TaskArg>) -> Result<CallToolResult, ErrorData> {
        match parse::<TaskId>(&a.task) {
            Ok(id) => answer(self.client.task(id).await),
            Err(e) => bad(e),
        }
    }

    #[tool(
        description = "Claim a task before working on it. Exactly one agent gets it; if another holds it, this fails and names the owner. The result's claim.token is your fencing token."
    )]
    async fn claim_task(&self, Parameters(a): Parameters<TaskArg>) -> Result<CallToolResult, ErrorData> {
        match parse::<TaskId>(&a.task) {
            Ok(id) => answer(self.client.claim(id, self.action()).await),
            Err(e) => bad(e),
        }
    }

    #[tool(
        description = "The task you should do next: one you already hold, else the most urgent open one. With claim=true it is claimed for you atomically. Returns null when there is nothing to do."
    )]
    async fn next_task(&self, Parameters(a): Parameters<NextTaskArgs>) -> Result<CallToolResult, ErrorData> {
        answer(
            self.client.next(Some(self.agent.clone()), a.claim).await.map(|task| serde_json::json!({ "task": task })),
        )
    }

    #[tool(
        description = "Change a task: title, description, priority, or status (doing claims, todo releases, done completes)."
    )]
    async fn update_task(&self, Parameters(a): Parameters<UpdateTaskArgs>) -> Result<CallToolResult, ErrorData> {
        let parsed = (|| {
            Ok::<_, String>((
                parse::<TaskId>(&a.task)?,
                a.priority.as_deref().map(parse::<Priority>).transpose()?,
                a.status.as_deref().map(parse::<TaskStatus>).transpose()?,
            ))
        })();
        let (id, priority, status) = match parsed {
            Ok(p) => p,
            Err(e) => return bad(e),
        };
        let update = UpdateTask {
            title: a.title,
            description: a.description,
            priority,
            status,
            agent: Some(self.agent.clone()),
            token: a.token,
            ..Default::default()
        };
        answer(self.client.update_task(id, update).await)
    }

    #[tool(description = "Mark a task done (you must hold it, or nobody must).")]
    async fn complete_task(&self, Parameters(a): Parameters<CompleteTaskArgs>) -> Result<CallToolResult, ErrorData> {
        match parse::<TaskId>(&a.task) {
            Ok(id) => answer(self.client.complete(id, TaskAction { token: a.token, ..self.action() }).await),
            Err(e) => bad(e),
        }
    }

    #[tool(description = "Give a task back to the board (force=true takes it from another owner).")]
    async fn release_task(&self, Parameters(a): Parameters<ReleaseTaskArgs>) -> Result<CallToolResult, ErrorData> {
        match parse::<TaskId>(&a.task) {
            Ok(id) => answer(self.client.release(id, TaskAction { force: a.force, ..self.action() }).await),
            Err(e) => bad(e),
        }
    }

    #[tool(description = "Post to team chat. @name mentions land in that agent's inbox; `to` sends a direct message.")]
    async fn post_message(&self, Parameters(a): Parameters<PostArgs>) -> Result<CallToolResult, ErrorData> {
        let reply_to = match a.reply_to.as_deref().map(parse::<MessageId>).transpose() {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let post = PostMessage { from: self.agent.clone(), content: a.content, channel: a.channel, to: a.to, reply_to };
        answer(self.client.post(post).await)
    }

    #[tool(description = "Read a chat channel (newest messages last).")]
    async fn read_chat(&self, Parameters(a): Parameters<ReadChatArgs>) -> Result<CallToolResult, ErrorData> {
        answer(
            self.client
                .messages(ChatReadArgs {
                    channel: a.channel,
                    since: a.since,
                    before: None,
                    limit: a.limit,
                    cursor: a.cursor,
                })
                .await,
        )
    }

    #[tool(description = "Your inbox: unread messages that mention you or are addressed to you.")]
    async fn read_inbox(&self, Parameters(a): Parameters<ReadInboxArgs>) -> Result<CallToolResult, ErrorData> {
        let args = InboxReadArgs { agent: Some(self.agent.clone()), all: a.all, limit: a.limit, cursor: a.cursor };
        answer(self.client.inbox(args).await)
    }

    #[tool(description = "Mark your inbox read (up to seq, default everything).")]
    async fn ack_inbox(&self, Parameters(a): Parameters<AckArgs>) -> Result<CallToolResult, ErrorData> {
        answer(self.client.ack(Some(self.agent.clone()), a.seq).await)
    }

    #[tool(
        description = "Reserve files before you edit them, so no other agent edits or commits them meanwhile. All or nothing: if another agent holds an overlapping pattern, nothing is reserved and the error names the holder, their pattern and task, and a path both match: work on other files or ask them. Give your task to have them released when you complete or release it."
    )]
    async fn reserve_files(&self, Parameters(a): Parameters<ReserveFilesArgs>) -> Result<CallToolResult, ErrorData> {
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
        description = "Release your file reservations: the patterns given, those of a task, or all of yours in the repository."
    )]
    async fn release_files(&self, Parameters(a): Parameters<ReleaseFilesArgs>) -> Result<CallToolResult, ErrorData> {
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

    #[tool(description = "Who holds these files: the reservations whose pattern matches each path.")]
    async fn who_has_files(&self, Parameters(a): Parameters<WhoHasFilesArgs>) -> Result<CallToolResult, ErrorData> {
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

    #[tool(description = "Who is here: every agent's status, last contact, current task, and whether it looks stuck.")]
    async fn who(&self) -> Result<CallToolResult, ErrorData> {
        answer(self.client.presence().await)
    }

    #[tool(description = "Set your status (busy, reviewing...; active clears it) and a short note.")]
    async fn set_status(&self, Parameters(a): Parameters<StatusArgs>) -> Result<CallToolResult, ErrorData> {
        let heartbeat = Heartbeat { status: Some(a.status), note: a.note.map(Some) };
        answer(self.client.set_status(Some(self.agent.clone()), heartbeat).await)
    }

    #[tool(
        description = "Block until something happens: a message for you (mention=true), a change to a task (task, optionally until a status), a stuck teammate (stuck=true), or any event on a topic. Returns the event, or an error on timeout."
    )]
    async fn wait_for(&self, Parameters(a): Parameters<WaitArgs>) -> Result<CallToolResult, ErrorData> {
        let task = match a.task.as_deref().map(parse::<TaskId>).transpose() {
            Ok(t) => t,
            Err(e) => return bad(e),
        };
        let until = match a.until.as_deref().map(parse::<TaskStatus>).transpose() {
            Ok(u) => u,
            Err(e) => return bad(e),
        };
        let topic = match a.topic.as_deref().map(str::parse::<Topic>).transpose() {
            Ok(t) => t,
            Err(e) => return bad(e.to_string()),
        };
        let mention = a.mention.then(|| self.agent.clone());
        let wait = Wait { mention, task, until, stuck: a.stuck, topics: topic.into_iter().collect() };
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
