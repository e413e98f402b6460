//! `decide`: a command checked against the model becomes events and a reply, or is refused.
//! This file lists the commands and hands each to its rules (`tasks`, `chat`, `presence`).

use muster_protocol::{
    Agent, ChatMessage, CreateTask, EventKind, Heartbeat, PostMessage, ReleaseFiles, Reservation, Seq, Task,
    TaskAction, TaskId, Timestamp, UpdateTask,
};

use muster_protocol::ReserveFiles;

use super::decider::Decider;
use super::error::DomainError;
use super::model::Model;
use super::policy::Policy;
use super::reserve::Reserve;
use super::rules::require_agent;

/// Something an agent (or a human, or the broker itself) asks to change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Add a task.
    CreateTask(CreateTask),
    /// Change fields (and possibly the status) of a task.
    UpdateTask {
        /// Which task.
        id: TaskId,
        /// What to change.
        update: UpdateTask,
    },
    /// Take a task.
    Claim {
        /// Which task.
        id: TaskId,
        /// Who, with which token.
        action: TaskAction,
    },
    /// Let go of a task (or, with `force`, take it away from its owner).
    Release {
        /// Which task.
        id: TaskId,
        /// Who, with which token.
        action: TaskAction,
    },
    /// Finish a task.
    Complete {
        /// Which task.
        id: TaskId,
        /// Who, with which token.
        action: TaskAction,
    },
    /// Pick the next open task for an agent and claim it; a task the agent already holds
    /// comes first.
    ClaimNext {
        /// The acting agent.
        agent: Option<String>,
    },
    /// Post a chat message.
    PostMessage(PostMessage),
    /// "I am here", with an optional status and note.
    Heartbeat {
        /// The agent.
        agent: String,
        /// Status and note.
        heartbeat: Heartbeat,
    },
    /// Mark an inbox read up to `seq` (default: the current head).
    AckInbox {
        /// Whose inbox.
        agent: String,
        /// The new cursor.
        seq: Option<Seq>,
    },
    /// A WebSocket session of the agent opened.
    Connect {
        /// The agent.
        agent: String,
        /// The session is a person's (see `Hello::human`).
        human: bool,
        /// The cluster node (its instance: name and start) that holds the session; `None`
        /// on a single broker.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// A WebSocket session of the agent closed (cleanly or not).
    Disconnect {
        /// The agent.
        agent: String,
        /// The cluster node that held it (see `Connect::node`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// A cluster node stopped (or restarted): the sessions it held closed with it.
    ResetNode {
        /// The node's instance, as in `Connect::node`.
        node: String,
    },
    /// Reserve paths of a repository.
    ReserveFiles(Reserve),
    /// Release reservations.
    ReleaseFiles(ReleaseFiles),
    /// The broker (re)started: no session survived; every agent with open sessions left.
    ResetConnections,
    /// Time passed: release the claims of owners that have been away too long, and
    /// reservations whose TTL ran out.
    Tick,
}

/// Who acts in a command, for the caller check (`api::Caller::bind`): where the acting
/// agent is, and what the caller must be to act.
#[derive(Debug)]
pub enum Actor<'a> {
    /// The acting agent: filled in from the caller when the command names none; naming
    /// another than the caller is refused.
    Agent(&'a mut Option<String>),
    /// A chat message's sender, likewise (empty when not named).
    Sender(&'a mut String),
    /// The agent the command is about (its presence, its session): must be the caller's.
    Named(&'a str),
    /// The owner of the inbox the command moves: the inbox's own caller, or a person's.
    Inbox(&'a str),
    /// The broker's own bookkeeping (timers, restarts): only the broker itself.
    System,
}

/// The tasks a command is decided on by id (see [`Command::tasks`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Named {
    /// Tasks it reads or changes.
    pub tasks: Vec<TaskId>,
    /// Blockers it sets on an existing task: the rule against cycles walks each one's
    /// blockers, and theirs.
    pub chains: Vec<TaskId>,
}

impl Command {
    /// The tasks the command names, so that the sequencer can load those the model let go
    /// of before it decides (the rules stay free of IO).
    pub fn tasks(&self) -> Named {
        match self {
            Command::CreateTask(c) => Named { tasks: c.blocked_by.clone(), chains: Vec::new() },
            Command::UpdateTask { id, update } => {
                Named { tasks: vec![*id], chains: update.blocked_by.clone().unwrap_or_default() }
            }
            Command::Claim { id, .. } | Command::Release { id, .. } | Command::Complete { id, .. } => {
                Named { tasks: vec![*id], chains: Vec::new() }
            }
            Command::ReserveFiles(r) => Named { tasks: r.files.task.into_iter().collect(), chains: Vec::new() },
            Command::ClaimNext { .. }
            | Command::PostMessage(_)
            | Command::Heartbeat { .. }
            | Command::AckInbox { .. }
            | Command::Connect { .. }
            | Command::Disconnect { .. }
            | Command::ReleaseFiles(_)
            | Command::ResetConnections
            | Command::ResetNode { .. }
            | Command::Tick => Named::default(),
        }
    }

    /// Who acts, and where the acting agent is written (see [`Actor`]).
    pub fn actor(&mut self) -> Actor<'_> {
        match self {
            Command::CreateTask(c) => Actor::Agent(&mut c.agent),
            Command::UpdateTask { update, .. } => Actor::Agent(&mut update.agent),
            Command::Claim { action, .. } | Command::Release { action, .. } | Command::Complete { action, .. } => {
                Actor::Agent(&mut action.agent)
            }
            Command::ClaimNext { agent } => Actor::Agent(agent),
            Command::ReserveFiles(r) => Actor::Agent(&mut r.files.agent),
            Command::ReleaseFiles(r) => Actor::Agent(&mut r.agent),
            Command::PostMessage(p) => Actor::Sender(&mut p.from),
            Command::AckInbox { agent, .. } => Actor::Inbox(agent),
            Command::Heartbeat { agent, .. } | Command::Connect { agent, .. } | Command::Disconnect { agent, .. } => {
                Actor::Named(agent)
            }
            Command::ResetConnections | Command::ResetNode { .. } | Command::Tick => Actor::System,
        }
    }

    /// Writes every agent name the command holds in its one spelling, lowercase: names
    /// are case-insensitive (`LINK` is `link`). Mentions are read in it by `decide`.
    pub fn canonicalize(&mut self) {
        fn one(name: &mut str) {
            name.make_ascii_lowercase();
        }
        fn maybe(name: &mut Option<String>) {
            if let Some(name) = name {
                one(name);
            }
        }
        match self {
            Command::CreateTask(c) => {
                maybe(&mut c.agent);
                maybe(&mut c.assignee);
            }
            Command::UpdateTask { update, .. } => {
                maybe(&mut update.agent);
                if let Some(assignee) = &mut update.assignee {
                    maybe(assignee);
                }
            }
            Command::Claim { action, .. } | Command::Release { action, .. } | Command::Complete { action, .. } => {
                maybe(&mut action.agent);
            }
            Command::ClaimNext { agent } => maybe(agent),
            Command::ReserveFiles(Reserve { files: ReserveFiles { agent, .. }, .. })
            | Command::ReleaseFiles(ReleaseFiles { agent, .. }) => maybe(agent),
            Command::PostMessage(p) => {
                one(&mut p.from);
                maybe(&mut p.to);
            }
            Command::Heartbeat { agent, .. }
            | Command::AckInbox { agent, .. }
            | Command::Connect { agent, .. }
            | Command::Disconnect { agent, .. } => one(agent),
            Command::ResetConnections | Command::ResetNode { .. } | Command::Tick => {}
        }
    }
}

/// What the caller gets back for an accepted command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reply {
    /// The task as it is now.
    Task(Task),
    /// A task, or none (`next` found nothing to do).
    MaybeTask(Option<Task>),
    /// The stored message.
    Message(ChatMessage),
    /// The agent record after a heartbeat.
    Agent(Agent),
    /// Reservations made, renewed or released.
    Reservations(Vec<Reservation>),
    /// Nothing to report (connection bookkeeping, ticks).
    Done,
    /// An inbox cursor.
    Cursor {
        /// Whose inbox.
        agent: String,
        /// The read cursor.
        seq: Seq,
    },
}

/// An accepted command: the events to append (in order) and the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Events, without `seq` and `at` yet: the sequencer stamps them.
    pub events: Vec<EventKind>,
    /// The answer to the caller.
    pub reply: Reply,
}

/// Checks `cmd` against `model` at time `now`.
///
/// The events of a decision get the sequence numbers `model.head + 1`, `+ 2`, ... in order
/// (a chat message records its own `seq`).
pub fn decide(model: &Model, policy: &Policy, cmd: &Command, now: Timestamp) -> Result<Decision, DomainError> {
    let mut d = Decider::new(model, policy, now);
    let reply = match cmd {
        Command::CreateTask(create) => Reply::Task(d.create(create)?),
        Command::UpdateTask { id, update } => Reply::Task(d.update(*id, update)?),
        Command::Claim { id, action } => {
            let agent = require_agent("agent", action.agent.as_deref())?;
            let task = d.task(*id)?;
            d.check_token(task, action.token)?;
            d.touch(agent);
            Reply::Task(d.claim(task, agent)?)
        }
        Command::Release { id, action } => {
            let agent = require_agent("agent", action.agent.as_deref())?;
            let task = d.task(*id)?;
            d.check_token(task, action.token)?;
            d.touch(agent);
            Reply::Task(d.release(task, agent, action.force)?)
        }
        Command::Complete { id, action } => {
            let agent = require_agent("agent", action.agent.as_deref())?;
            let task = d.task(*id)?;
            d.check_token(task, action.token)?;
            d.touch(agent);
            Reply::Task(d.complete(task, agent)?)
        }
        Command::ClaimNext { agent } => Reply::MaybeTask(d.claim_next(agent.as_deref())?),
        Command::PostMessage(post) => Reply::Message(d.post(post)?),
        Command::AckInbox { agent, seq } => {
            let seq = d.ack(agent, *seq)?;
            Reply::Cursor { agent: agent.clone(), seq }
        }
        Command::Heartbeat { agent, heartbeat } => Reply::Agent(d.heartbeat(agent, heartbeat)?),
        Command::Connect { agent, human, node } => Reply::Agent(d.connect(agent, *human, node.as_deref())?),
        Command::Disconnect { agent, node } => {
            d.disconnect(agent, node.as_deref());
            Reply::Done
        }
        Command::ResetNode { node } => {
            d.reset_node(node);
            Reply::Done
        }
        Command::ResetConnections => {
            d.reset_connections();
            Reply::Done
        }
        Command::ReserveFiles(r) => Reply::Reservations(d.reserve(r)?),
        Command::ReleaseFiles(r) => Reply::Reservations(d.release_files(r)?),
        Command::Tick => {
            d.release_expired_claims();
            d.end_expired_reservations();
            d.announce_presence_changes();
            Reply::Done
        }
    };
    // Whatever ended a claim ends the reservations made for its task.
    d.end_reservations_of_ended_claims();
    Ok(Decision { events: d.events, reply })
}
