//! The client subcommands of `muster`: what an agent in a shell (or a human) types.
//!
//! Each command opens one session with [`muster_client`] as an observer and names the
//! acting agent (`--as`) in its operation, so a command counts as contact for that agent
//! without opening and closing a presence session every time. `watch` and `wait` keep the
//! session open and follow events. Output is for humans by default; `--json` prints one JSON
//! object per line. Exit codes are stable, for scripts (see [`Exit`]).
//!
//! - `context`: the global options, the connection, exit codes, failures, output;
//! - `files`: file reservations, the pre-commit check and the Claude Code guard, with `git`
//!   (what they ask git); `output`: tables and event lines; `token`: issuing tokens.

/// `println!` for what a command prints: a closed pipe ends the command quietly with 141
/// (see [`output::line`]).
macro_rules! say {
    ($($arg:tt)*) => { $crate::cli::output::line(format_args!($($arg)*)) };
}

mod context;
mod doctor;
pub mod files;
pub(crate) mod git;
mod guard;
pub mod init;
mod output;
pub(crate) mod paths;
mod shell;
pub mod token;

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use muster_client::protocol::{
    AddComment, CreateTask, EventKind, Heartbeat, MessageId, PostMessage, Priority, TaskAction, TaskStatus, UpdateTask,
};
use muster_client::protocol::{ChatReadArgs, InboxReadArgs, ListArgs};
use muster_client::{Client, Notice, Wait, Waited};

pub use context::{Exit, Global, Unused, UnusedConnection};
use context::{Failure, Out, acting, connect, require_agent, task_id, topic};

/// The client commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The task board: add, list, show, claim, next, release, done, update.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Team chat: post, read.
    #[command(subcommand)]
    Chat(ChatCommand),
    /// Your inbox: unread mentions and direct messages.
    Inbox {
        /// Include messages already read.
        #[arg(long)]
        all: bool,
        /// Mark them read.
        #[arg(long)]
        ack: bool,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Who is here: status, last seen, task, stuck.
    Who,
    /// The broker's workspaces (one board, chat and presence each): add, list, remove.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// File reservations: reserve, release, who, list; check and guard enforce them.
    #[command(subcommand)]
    Files(files::FilesCommand),
    /// Set up this checkout for its agents in one command: agent name, git hooks (chained),
    /// Claude Code hooks and MCP server, other agents' MCP configuration. Safe to run twice.
    Init(init::InitArgs),
    /// Check that what `muster init` set up would work, and print the fix for each problem.
    Doctor {
        /// The repository.
        #[command(flatten)]
        repo: files::RepoArg,
    },
    /// Git hooks: install the commit checks of file reservations (the git part of `init`).
    #[command(subcommand)]
    Hook(init::HookCommand),
    /// Your own status.
    #[command(subcommand)]
    Status(StatusCommand),
    /// Print events as they happen (default: every topic), until interrupted.
    Watch {
        /// Topics: tasks, task:T-3, chat, chat:ops, presence, inbox:NAME, * (default).
        topics: Vec<String>,
        /// Replay events after this seq first.
        #[arg(long)]
        since: Option<u64>,
    },
    /// Block until something relevant happens, print it and exit 0 (7 on timeout).
    Wait {
        /// A message that mentions you or is addressed to you (an unread one counts).
        #[arg(long)]
        mention: bool,
        /// A change to this task.
        #[arg(long, value_name = "ID")]
        task: Option<String>,
        /// With --task: until it has this status (todo, doing, review, blocked, done, cancelled).
        #[arg(long, requires = "task")]
        until: Option<TaskStatus>,
        /// An agent stuck: holding a `doing` task and silent too long (one already stuck
        /// counts).
        #[arg(long)]
        stuck: bool,
        /// Any event on this topic.
        #[arg(long)]
        topic: Vec<String>,
        /// Give up after this long (e.g. 30s, 10m).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// With --mention: mark the message read.
        #[arg(long, requires = "mention")]
        ack: bool,
    },
}

/// `muster task ...`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Add a task.
    Add {
        /// One line.
        title: String,
        /// Free text.
        #[arg(long, short)]
        description: Option<String>,
        /// P0 (urgent) to P3; default P2.
        #[arg(long, short)]
        priority: Option<Priority>,
        /// Reserve it for this agent.
        #[arg(long)]
        assign: Option<String>,
        /// Tasks that must be done first (T-1,T-2).
        #[arg(long, value_delimiter = ',')]
        after: Vec<String>,
        /// Labels.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// List the board: open work first, then the tasks finished last.
    List {
        /// Only these statuses (todo,doing); finished ones from the whole history.
        #[arg(long, value_delimiter = ',')]
        status: Vec<TaskStatus>,
        /// Every task, finished ones from the whole history included.
        #[arg(long, conflicts_with = "status")]
        all: bool,
        /// At most this many tasks (one page, in id order).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: Option<u16>,
        /// Only tasks assigned to this agent.
        #[arg(long)]
        assignee: Option<String>,
        /// Only your tasks.
        #[arg(long, conflicts_with = "assignee")]
        mine: bool,
        /// Only this priority.
        #[arg(long)]
        priority: Option<Priority>,
        /// Only tasks with this tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Show one task.
    Show {
        /// T-3
        id: String,
    },
    /// Comment on a task: its subscribers see it, and `@name` mentions reach inboxes.
    Comment {
        /// T-3
        id: String,
        /// The comment.
        text: String,
    },
    /// Claim a task: exactly one agent gets it.
    Claim {
        /// T-3
        id: String,
    },
    /// The task to do next (one you hold, else the most urgent open one).
    Next {
        /// Claim it.
        #[arg(long)]
        claim: bool,
    },
    /// Give a task back (with --force, take it away from its owner).
    Release {
        /// T-3
        id: String,
        /// Release someone else's claim.
        #[arg(long)]
        force: bool,
    },
    /// Mark a task done.
    Done {
        /// T-3
        id: String,
        /// The fencing token of your claim (refused if the claim changed hands since).
        #[arg(long)]
        token: Option<u64>,
    },
    /// Change a task.
    Update {
        /// T-3
        id: String,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        /// New description.
        #[arg(long, short)]
        description: Option<String>,
        /// New priority.
        #[arg(long, short)]
        priority: Option<Priority>,
        /// New status (doing claims, todo releases, done completes).
        #[arg(long)]
        status: Option<TaskStatus>,
        /// Reserve it for this agent.
        #[arg(long, conflicts_with = "unassign")]
        assign: Option<String>,
        /// Remove the reservation.
        #[arg(long)]
        unassign: bool,
        /// Replace the tasks it waits for (T-1,T-2; empty for none).
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        after: Option<Vec<String>>,
        /// Replace the tags.
        #[arg(long = "tag")]
        tags: Option<Vec<String>>,
        /// The fencing token of your claim.
        #[arg(long)]
        token: Option<u64>,
    },
}

/// `muster chat ...`
#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Post a message; @name mentions reach that agent's inbox.
    Post {
        /// The text.
        content: String,
        /// Channel (default general).
        #[arg(long, short)]
        channel: Option<String>,
        /// A direct message to this agent.
        #[arg(long)]
        to: Option<String>,
        /// Answer to this message (M-12).
        #[arg(long)]
        reply_to: Option<String>,
    },
    /// Read a channel (newest messages last).
    Read {
        /// Channel (default general).
        #[arg(long, short)]
        channel: Option<String>,
        /// Only messages after this seq.
        #[arg(long)]
        since: Option<u64>,
        /// At most this many (default 50).
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// `muster workspace ...`
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Add a workspace; work in it with --workspace NAME (or MUSTER_WORKSPACE=NAME).
    Add {
        /// Its name: 1-64 of letters, digits, `_` and `-`.
        name: String,
    },
    /// Every workspace, archived ones included.
    List,
    /// Remove a workspace: archived (kept, read-only) unless --purge.
    Remove {
        /// The workspace.
        name: String,
        /// Delete its data instead of archiving it.
        #[arg(long)]
        purge: bool,
    },
}

/// `muster status ...`
#[derive(Debug, Subcommand)]
pub enum StatusCommand {
    /// Set your status (busy, reviewing...; active clears it) and an optional note.
    Set {
        /// The status.
        status: String,
        /// A short note (what you are doing).
        #[arg(long)]
        note: Option<String>,
    },
}

/// Runs a client command; returns the exit code.
pub async fn run(global: Global, command: Command) -> ExitCode {
    if let Command::Files(files::FilesCommand::Guard { strict, repo }) = command {
        return guard::guard(global, strict, repo).await;
    }
    let out = Out { json: global.json };
    match execute(&global, command, &out).await {
        Ok(exit) => exit.into(),
        // On stderr, so that stdout holds only results; with --json as JSON, with the
        // broker's code where it answered, and what went wrong where it did not.
        Err(failure) => {
            if global.json {
                let code = failure.code.map_or(serde_json::Value::from(failure.exit.code()), |c| serde_json::json!(c));
                eprintln!("{}", serde_json::json!({ "error": { "code": code, "message": failure.message } }));
            } else {
                eprintln!("muster: {}", failure.message);
            }
            failure.exit.into()
        }
    }
}

async fn execute(global: &Global, command: Command, out: &Out) -> Result<Exit, Failure> {
    match command {
        Command::Watch { topics, since } => return watch(global, topics, since, out).await,
        Command::Wait { mention, task, until, stuck, topic, timeout, ack } => {
            return wait(global, WaitArgs { mention, task, until, stuck, topics: topic, ack }, timeout, out).await;
        }
        Command::Files(command) => return files::files(global, command, out).await,
        Command::Hook(command) => return init::hook(global, command),
        Command::Init(args) => return init::init(global, args),
        Command::Doctor { repo } => return doctor::doctor(global, repo).await,
        _ => {}
    }
    let (client, _events) = connect(global, Vec::new(), None).await?;
    match command {
        Command::Task(task) => return task_command(&client, global, task, out).await,
        Command::Chat(ChatCommand::Post { content, channel, to, reply_to }) => {
            let from = acting(global)?.unwrap_or_default();
            let reply_to = match reply_to {
                Some(id) => Some(id.parse::<MessageId>().map_err(|e| Failure::new(Exit::Invalid, e.to_string()))?),
                None => None,
            };
            let message = client.post(PostMessage { from, content, channel, to, reply_to, task: None }).await?;
            out.show(&message, || format!("posted {} to #{}", message.id, message.channel));
        }
        Command::Chat(ChatCommand::Read { channel, since, limit }) => {
            let list = client.messages(ChatReadArgs { channel, since, before: None, limit, cursor: None }).await?;
            if out.json {
                list.messages.iter().for_each(|m| out.show(m, String::new));
            } else if list.messages.is_empty() {
                say!("no messages in #{}", list.channel);
            } else {
                list.messages.iter().for_each(|m| say!("{}", output::message(m)));
            }
        }
        Command::Inbox { all, ack, limit } => {
            let inbox = client.inbox(InboxReadArgs { agent: acting(global)?, all, limit, cursor: None }).await?;
            if out.json {
                out.show(&inbox, String::new);
            } else if inbox.messages.is_empty() {
                say!("no unread messages for {}", inbox.agent);
            } else {
                inbox.messages.iter().for_each(|m| say!("{}", output::message(m)));
            }
            if ack && let Some(last) = inbox.messages.last() {
                client.ack(Some(inbox.agent.clone()), Some(last.seq)).await?;
            }
        }
        Command::Who => {
            let agents = client.presence().await?;
            if out.json {
                agents.iter().for_each(|a| out.show(a, String::new));
            } else {
                say!("{}", output::who(&agents));
            }
        }
        Command::Workspace(WorkspaceCommand::Add { name }) => {
            let added = client.add_workspace(&name).await?;
            out.show(&added, || format!("added workspace {}: --workspace {} works in it", added.name, added.name));
        }
        Command::Workspace(WorkspaceCommand::List) => {
            let workspaces = client.workspaces().await?;
            if out.json {
                workspaces.iter().for_each(|w| out.show(w, String::new));
            } else {
                say!("{}", output::workspaces(&workspaces));
            }
        }
        Command::Workspace(WorkspaceCommand::Remove { name, purge }) => {
            let removed = client.remove_workspace(&name, purge).await?;
            let how = if purge { "deleted" } else { "archived (read-only; --purge deletes it)" };
            out.show(&removed, || format!("workspace {} {how}", removed.name));
        }
        Command::Status(StatusCommand::Set { status, note }) => {
            let heartbeat = Heartbeat { status: Some(status), note: note.map(Some) };
            let presence = client.set_status(acting(global)?, heartbeat).await?;
            out.show(&presence, || format!("{} is {}", presence.name, presence.status));
        }
        Command::Watch { .. }
        | Command::Wait { .. }
        | Command::Files(_)
        | Command::Hook(_)
        | Command::Init(_)
        | Command::Doctor { .. } => {}
    }
    Ok(Exit::Ok)
}

async fn task_command(client: &Client, global: &Global, command: TaskCommand, out: &Out) -> Result<Exit, Failure> {
    let me = global.agent.clone();
    let action = || TaskAction { agent: me.clone(), ..Default::default() };
    let task = match command {
        TaskCommand::Add { title, description, priority, assign, after, tags } => {
            let blocked_by = after.iter().map(|a| task_id(a)).collect::<Result<_, _>>()?;
            let create = CreateTask { title, description, priority, assignee: assign, blocked_by, tags, agent: me };
            let task = client.create_task(create).await?;
            out.show(&task, || format!("added {}: {} [{}]", task.id, task.title, task.priority));
            return Ok(Exit::Ok);
        }
        TaskCommand::List { status, all, limit, assignee, mine, priority, tag } => {
            let assignee = if mine { Some(require_agent(global)?) } else { assignee };
            let board = status.is_empty() && !all;
            let limit = limit.map(usize::from);
            let filter = ListArgs { status, all, assignee, priority, tag, limit, ..ListArgs::default() };
            let mut tasks = match limit {
                Some(_) => client.task_page(filter).await?.tasks,
                None => client.tasks(filter).await?,
            };
            if board && limit.is_none() {
                output::open_first(&mut tasks);
            }
            if out.json {
                tasks.iter().for_each(|t| out.show(t, String::new));
            } else if board && limit.is_none() {
                say!("{}", output::board(&tasks));
            } else {
                say!("{}", output::tasks(&tasks));
            }
            return Ok(Exit::Ok);
        }
        TaskCommand::Show { id } => {
            let id = task_id(&id)?;
            let (task, comments) = (client.task(id).await?, client.comments(id).await?);
            let shown = output::Shown { task: &task, comments: &comments };
            out.show(&shown, || shown.to_string());
            return Ok(Exit::Ok);
        }
        TaskCommand::Comment { id, text } => {
            let from = acting(global)?.unwrap_or_default();
            let comment = client.comment(task_id(&id)?, AddComment { from, content: text, reply_to: None }).await?;
            out.show(&comment, || format!("commented on {id} ({})", comment.id));
            return Ok(Exit::Ok);
        }
        TaskCommand::Claim { id } => {
            acting(global)?;
            let task = client.claim(task_id(&id)?, action()).await?;
            let token = task.claim.as_ref().map_or(0, |c| c.token);
            out.show(&task, || format!("{} is yours (token {token}): {}", task.id, task.title));
            return Ok(Exit::Ok);
        }
        TaskCommand::Next { claim } => match client.next(acting(global)?, claim).await? {
            Some(task) => task,
            None => {
                out.show(&serde_json::json!({ "task": null }), || "nothing to do".to_owned());
                return Ok(Exit::NothingToDo);
            }
        },
        TaskCommand::Release { id, force } => {
            acting(global)?;
            let task = client.release(task_id(&id)?, TaskAction { force, ..action() }).await?;
            out.show(&task, || format!("{} released: {}", task.id, task.title));
            return Ok(Exit::Ok);
        }
        TaskCommand::Done { id, token } => {
            acting(global)?;
            let task = client.complete(task_id(&id)?, TaskAction { token, ..action() }).await?;
            out.show(&task, || format!("{} done: {}", task.id, task.title));
            return Ok(Exit::Ok);
        }
        TaskCommand::Update { id, title, description, priority, status, assign, unassign, after, tags, token } => {
            let blocked_by = match after {
                Some(list) => {
                    Some(list.iter().filter(|a| !a.is_empty()).map(|a| task_id(a)).collect::<Result<_, _>>()?)
                }
                None => None,
            };
            let assignee = if unassign { Some(None) } else { assign.map(Some) };
            let update =
                UpdateTask { title, description, priority, assignee, status, blocked_by, tags, agent: me, token };
            client.update_task(task_id(&id)?, update).await?
        }
    };
    out.show(&task, || output::task(&task));
    Ok(Exit::Ok)
}

/// Prints events until interrupted (or the broker goes away for good).
async fn watch(global: &Global, topics: Vec<String>, since: Option<u64>, out: &Out) -> Result<Exit, Failure> {
    let topics: Vec<String> = if topics.is_empty() {
        vec!["*".to_owned()]
    } else {
        topics.iter().map(|t| topic(t).map(|t| t.to_string())).collect::<Result<_, _>>()?
    };
    let mut options = global.options().topics(topics.clone());
    options.since = since;
    let (client, mut events) = Client::connect(options).await?;
    // On stderr, so stdout stays one event per line; scripts and tests wait for it.
    eprintln!("muster: watching {} (Ctrl-C to stop)", topics.join(" "));
    while let Some(notice) = events.next().await {
        match notice {
            Notice::Event(event) => out.show(&*event, || output::event(&event)),
            Notice::Resync { head, .. } if !out.json => {
                eprintln!("muster: reconnected, but events before #{head} could not be replayed")
            }
            Notice::Resync { .. } | Notice::Resumed { .. } => {}
        }
    }
    if let Some(ended) = client.ended() {
        return Err(ended.into());
    }
    Ok(Exit::Ok)
}

/// What `wait` waits for, as typed.
struct WaitArgs {
    mention: bool,
    task: Option<String>,
    until: Option<TaskStatus>,
    stuck: bool,
    topics: Vec<String>,
    ack: bool,
}

async fn wait(global: &Global, w: WaitArgs, timeout: Option<Duration>, out: &Out) -> Result<Exit, Failure> {
    // Names are case-insensitive: messages name the recipient in lowercase.
    let me = if w.mention { Some(muster_client::protocol::names::canonical(&require_agent(global)?)) } else { None };
    let wait = Wait {
        mention: me.clone(),
        task: w.task.as_deref().map(task_id).transpose()?,
        until: w.until,
        stuck: w.stuck,
        topics: w.topics.iter().map(|t| topic(t)).collect::<Result<_, _>>()?,
    };
    if wait.is_empty() {
        return Err(Failure::new(Exit::Invalid, "wait for what? --mention, --task ID, --stuck or --topic TOPIC"));
    }
    let (client, _) = Client::connect(global.options()).await?;
    let topics: Vec<String> = wait.topics().iter().map(ToString::to_string).collect();
    eprintln!("muster: waiting on {}", topics.join(" "));
    let Some(waited) = client.wait_for(&wait, timeout).await? else {
        let t = timeout.unwrap_or_default();
        return Err(Failure::new(Exit::Timeout, format!("nothing happened within {}", humantime::format_duration(t))));
    };
    let read = match &waited {
        Waited::Message(message) => {
            out.show(message, || output::message(message));
            Some(message.seq)
        }
        Waited::Task(task) => {
            out.show(task, || format!("{} is {}: {}", task.id, task.status, task.title));
            None
        }
        Waited::Agent(agent) => {
            let on = agent.task.map(|t| format!(" on {t}")).unwrap_or_default();
            out.show(agent, || format!("{} is stuck{on}, last seen {}", agent.name, agent.last_seen));
            None
        }
        Waited::Event(event) => {
            out.show(&**event, || output::event(event));
            match &event.kind {
                EventKind::ChatMessage { message } | EventKind::TaskCommented { message } => Some(message.seq),
                _ => None,
            }
        }
    };
    if let (true, Some(me), Some(seq)) = (w.ack, me, read) {
        client.ack(Some(me), Some(seq)).await?;
    }
    Ok(Exit::Ok)
}
