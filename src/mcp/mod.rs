//! `muster mcp --as NAME`: an MCP server over stdio for one agent.
//!
//! It holds one WebSocket session to the broker as that agent, so the agent is present
//! (and its claims held) while the MCP process runs, and leaves when it exits. Every tool is
//! a broker operation; a refusal (a conflict, a stale token, bad input) is a tool error
//! carrying the broker's message, never a success.
//!
//! - `args`: what each tool takes, and how it is read (a bad argument is a tool error);
//! - `schema`: the output schemas, from the same definitions as `/openapi.json`.

use std::process::ExitCode;
use std::time::Duration;

use muster_client::protocol::{
    AddComment, ChatMessage, CreateTask, Cursor, Heartbeat, Inbox, MessageId, MessageList, PathHolders, PostMessage,
    Presence, ReleaseFiles, Reservation, ReserveFiles, Task, TaskAction, TaskId, TaskList, Topic, UpdateTask,
};
use muster_client::protocol::{ChatReadArgs, InboxReadArgs, ListArgs, TaskCommentsArgs};
use muster_client::{Client, Error, Options, Wait};

use crate::cli::paths::Here;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde::Serialize;

mod args;
mod schema;

use args::{
    AckArgs, Args, CommentArgs, CompleteTaskArgs, CreateTaskArgs, ListTasksArgs, NextTaskArgs, NoArgs, PostArgs,
    ReadChatArgs, ReadCommentsArgs, ReadInboxArgs, ReleaseFilesArgs, ReleaseTaskArgs, ReserveFilesArgs, StatusArgs,
    TaskArg, UpdateTaskArgs, WaitArgs, WhoHasFilesArgs,
};
use schema::{Shape, output, output_field};

/// Longest a `wait_for` may block: MCP clients time tool calls out.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Runs the MCP server on stdin/stdout until the client closes it: a session of `agent`
/// through `options` (the broker, the workspace, the token).
pub async fn serve(options: Options, agent: String, repo: Option<String>) -> ExitCode {
    // Names are case-insensitive; the broker writes them in lowercase, and so do we.
    let agent = muster_client::protocol::names::canonical(&agent);
    let url = options.url.clone();
    let options = options.agent(agent.clone()).topics([format!("inbox:{agent}")]);
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
    let server = Muster { client, agent, repo, tool_router: Muster::tool_router() };
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
    /// The repository of the file tools when they name none (`--repo`, `MUSTER_REPO`).
    repo: Option<String>,
    #[allow(dead_code)] // read by the code `tool_handler` generates
    tool_router: ToolRouter<Muster>,
}

/// A result, as structured content (typed, for clients that read it; its tool's output
/// schema says what it holds) and as the same JSON in text (for those that do not).
fn ok<T: Serialize>(value: &T) -> Result<CallToolResult, ErrorData> {
    let value = serde_json::to_value(value).map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    Ok(CallToolResult::structured(value))
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

/// The arguments of a tool call, or the tool error that says what is wrong with them.
macro_rules! args {
    ($args:expr) => {
        match $args.0 {
            Ok(args) => args,
            Err(e) => return bad(e),
        }
    };
}

/// The repository named, or the one this server runs in.
fn repo(named: Option<String>, default: Option<&str>, here: &Here) -> Result<String, String> {
    if let Some(repo) = named.or_else(|| default.map(str::to_owned)) {
        return Ok(repo);
    }
    let worktree = here.worktree.as_ref().ok_or_else(|| {
        format!(
            "{} is not in a git repository: give repo (or start the server with --repo / MUSTER_REPO)",
            here.cwd.display()
        )
    })?;
    worktree.repo_name().map_err(|e| e.0)
}

/// Where the server runs: paths are read from its directory.
fn here() -> Here {
    Here::at(std::env::current_dir().unwrap_or_default())
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
        let post = PostMessage {
            from: self.agent.clone(),
            content: a.content,
            channel: a.channel,
            to: a.to,
            reply_to,
            task: None,
        };
        answer(self.client.post(post).await)
    }

    #[tool(
        description = "Comment on a task: everyone watching it sees the comment, and @name mentions land in that agent's inbox. Use it to hand over context, ask the owner a question, or record a decision.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = output::<ChatMessage>()
    )]
    async fn comment_task(&self, Parameters(a): Parameters<Args<CommentArgs>>) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        let (task, reply_to) =
            match (parse::<TaskId>(&a.task), a.reply_to.as_deref().map(parse::<MessageId>).transpose()) {
                (Ok(task), Ok(reply_to)) => (task, reply_to),
                (Err(e), _) | (_, Err(e)) => return bad(e),
            };
        let comment = AddComment { from: self.agent.clone(), content: a.content, reply_to };
        answer(self.client.comment(task, comment).await)
    }

    #[tool(
        description = "Read the comments on a task, oldest first (pass the reply's next as cursor for more).",
        annotations(read_only_hint = true, open_world_hint = false),
        output_schema = output::<MessageList>()
    )]
    async fn read_comments(
        &self,
        Parameters(a): Parameters<Args<ReadCommentsArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = args!(a);
        match parse::<TaskId>(&a.task) {
            Ok(task) => {
                let limit = a.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
                answer(self.client.comment_page(TaskCommentsArgs { task, limit, cursor: a.cursor }).await)
            }
            Err(e) => bad(e),
        }
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
        let here = here();
        let repo = match repo(a.repo, self.repo.as_deref(), &here) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let patterns = match crate::cli::files::patterns_for(&a.patterns, &here) {
            Ok(p) => p,
            Err(e) => return bad(e),
        };
        let request = ReserveFiles {
            repo,
            patterns,
            shared: a.shared,
            task,
            reason: a.reason,
            ttl_seconds: a.ttl_seconds,
            agent: Some(self.agent.clone()),
            auto: false,
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
        let here = here();
        let repo = match repo(a.repo, self.repo.as_deref(), &here) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let patterns = crate::cli::files::release_patterns(&a.patterns, &here);
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
        let here = here();
        let repo = match repo(a.repo, self.repo.as_deref(), &here) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let paths = match a.paths.iter().map(|p| here.path(p)).collect::<Result<Vec<_>, _>>() {
            Ok(paths) => paths,
            Err(e) => return bad(e),
        };
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
