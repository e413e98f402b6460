//! `decide`: a command checked against the state becomes events, or is refused.

use muster_protocol::{
    Agent, ChatMessage, Claim, CreateTask, EventKind, Heartbeat, MessageId, PostMessage, ReleaseReason, Seq, Task,
    TaskAction, TaskId, TaskStatus, Timestamp, UpdateTask,
};

use super::rules::{
    MAX_BLOCKERS, require_agent, validate_agent, validate_channel, validate_note, validate_status, validate_tags,
    validate_text, validate_title,
};
use super::{DomainError, Policy, State, parse_mentions};

/// Something an agent (or a human) asks the broker to change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
        /// The acting agent (validated).
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
    },
    /// A WebSocket session of the agent closed (cleanly or not).
    Disconnect {
        /// The agent.
        agent: String,
    },
    /// The broker (re)started: no session survived; every agent with open sessions left.
    ResetConnections,
    /// Time passed: release the claims of owners that have been away too long.
    Tick,
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

/// Checks `cmd` against `state` at time `now`.
///
/// The events of a decision get the sequence numbers `state.head + 1`, `+ 2`, ... in order
/// (a chat message records its own `seq`).
pub fn decide(state: &State, policy: &Policy, cmd: &Command, now: Timestamp) -> Result<Decision, DomainError> {
    let mut d = Decider { state, policy, now, events: Vec::new() };
    let reply = match cmd {
        Command::CreateTask(create) => d.create(create)?,
        Command::UpdateTask { id, update } => d.update(*id, update)?,
        Command::Claim { id, action } => {
            let agent = require_agent("agent", action.agent.as_deref())?;
            let task = d.task(*id)?;
            check_token(task, action.token)?;
            d.touch(agent);
            Reply::Task(d.claim(task, agent)?)
        }
        Command::Release { id, action } => {
            let agent = require_agent("agent", action.agent.as_deref())?;
            let task = d.task(*id)?;
            check_token(task, action.token)?;
            d.touch(agent);
            Reply::Task(d.release(task, agent, action.force)?)
        }
        Command::Complete { id, action } => {
            let agent = require_agent("agent", action.agent.as_deref())?;
            let task = d.task(*id)?;
            check_token(task, action.token)?;
            d.touch(agent);
            Reply::Task(d.complete(task, agent)?)
        }
        Command::ClaimNext { agent } => {
            let agent = require_agent("agent", agent.as_deref())?;
            d.touch(agent);
            match next_for(state, agent) {
                Some(task) => Reply::MaybeTask(Some(d.claim(task, agent)?)),
                None => Reply::MaybeTask(None),
            }
        }
        Command::PostMessage(post) => d.post(post)?,
        Command::Heartbeat { agent, heartbeat } => d.heartbeat(agent, heartbeat)?,
        Command::AckInbox { agent, seq } => {
            validate_agent("agent", agent)?;
            let seq = seq.unwrap_or(state.head);
            if seq > state.head {
                return Err(DomainError::invalid("seq", format!("{seq} is beyond the last event ({})", state.head)));
            }
            d.touch(agent);
            let cursor = state.cursor(agent);
            if seq > cursor {
                d.events.push(EventKind::InboxAcked { agent: agent.clone(), seq });
            }
            Reply::Cursor { agent: agent.clone(), seq: seq.max(cursor) }
        }
        Command::Connect { agent, human } => {
            validate_agent("agent", agent)?;
            let mut record = match state.agents.get(agent) {
                Some(a) => Agent::clone(a),
                None => Agent::new(agent, now),
            };
            record.connections += 1;
            record.human |= *human;
            record.last_seen_at = now;
            record.left_at = None;
            record.status = record.status.filter(|s| s != "offline");
            d.events.push(EventKind::PresenceChanged { agent: record.clone() });
            Reply::Agent(record)
        }
        Command::Disconnect { agent } => {
            if let Some(a) = state.agents.get(agent).filter(|a| a.connections > 0) {
                let mut record = Agent::clone(a);
                record.connections -= 1;
                if record.connections == 0 {
                    record.left_at = Some(now);
                }
                d.events.push(EventKind::PresenceChanged { agent: record });
            }
            Reply::Done
        }
        Command::ResetConnections => {
            for a in state.agents.values().filter(|a| a.connections > 0) {
                let record = Agent { connections: 0, left_at: Some(now), ..Agent::clone(a) };
                d.events.push(EventKind::PresenceChanged { agent: record });
            }
            Reply::Done
        }
        Command::Tick => {
            d.release_expired_claims();
            Reply::Done
        }
    };
    Ok(Decision { events: d.events, reply })
}

/// The task `agent` should work on next: one it already holds (unfinished), else the open
/// task it may claim with the highest priority, oldest first, not waiting on blockers.
pub fn next_for<'s>(state: &'s State, agent: &str) -> Option<&'s Task> {
    if let Some(held) = state.held_by(agent).next() {
        return Some(held);
    }
    state
        .open_tasks()
        .find(|t| t.assignee.as_deref().is_none_or(|a| a == agent) && state.unfinished_blockers(t).is_empty())
        .map(|t| &**t)
}

/// Refuses a fencing token that is not the current claim's.
fn check_token(task: &Task, token: Option<u64>) -> Result<(), DomainError> {
    let Some(token) = token else { return Ok(()) };
    match &task.claim {
        Some(claim) if claim.token == token => Ok(()),
        Some(claim) => Err(DomainError::StaleClaim {
            message: format!(
                "token {token} is stale: {} is now claimed by {} with token {}",
                task.id, claim.agent, claim.token
            ),
        }),
        None => Err(DomainError::StaleClaim {
            message: format!("token {token} is stale: {} is no longer claimed", task.id),
        }),
    }
}

fn list(tasks: &[&Task]) -> String {
    tasks.iter().map(|t| format!("{} ({})", t.id, t.status)).collect::<Vec<_>>().join(", ")
}

/// One decision in progress: collects events, sees the state as it was before them.
struct Decider<'a> {
    state: &'a State,
    policy: &'a Policy,
    now: Timestamp,
    events: Vec<EventKind>,
}

impl<'a> Decider<'a> {
    fn task(&self, id: TaskId) -> Result<&'a Task, DomainError> {
        self.state
            .task(id)
            .map(|t| &**t)
            .ok_or_else(|| DomainError::NotFound { message: format!("task {id} does not exist") })
    }

    /// Contact with `agent`: announce it when it is new or coming back (not `active` a
    /// moment ago); `apply` records the time for every event the agent causes.
    fn touch(&mut self, agent: &str) {
        let back = match self.state.agents.get(agent) {
            None => true,
            Some(a) => matches!(self.policy.status(a, self.now).as_str(), "idle" | "offline"),
        };
        if back {
            let agent = match self.state.agents.get(agent) {
                Some(a) => Agent {
                    last_seen_at: self.now,
                    status: a.status.clone().filter(|s| s != "offline"),
                    ..Agent::clone(a)
                },
                None => Agent::new(agent, self.now),
            };
            self.events.push(EventKind::PresenceChanged { agent });
        }
    }

    fn check_blockers(&self, id: TaskId, blockers: &[TaskId]) -> Result<Vec<TaskId>, DomainError> {
        if blockers.len() > MAX_BLOCKERS {
            return Err(DomainError::invalid("blockedBy", format!("has more than {MAX_BLOCKERS} tasks")));
        }
        let mut out: Vec<TaskId> = Vec::new();
        for (i, b) in blockers.iter().enumerate() {
            if *b == id {
                return Err(DomainError::invalid(format!("blockedBy[{i}]"), format!("{id} cannot wait on itself")));
            }
            if self.state.task(*b).is_none() {
                return Err(DomainError::invalid(format!("blockedBy[{i}]"), format!("task {b} does not exist")));
            }
            if self.depends_on(*b, id) {
                return Err(DomainError::invalid(
                    format!("blockedBy[{i}]"),
                    format!("{b} already waits on {id}: that would be a cycle"),
                ));
            }
            if !out.contains(b) {
                out.push(*b);
            }
        }
        Ok(out)
    }

    /// Whether `from` waits, directly or not, on `target`.
    fn depends_on(&self, from: TaskId, target: TaskId) -> bool {
        let mut stack = vec![from];
        let mut seen = std::collections::HashSet::new();
        while let Some(id) = stack.pop() {
            if id == target {
                return true;
            }
            if seen.insert(id)
                && let Some(t) = self.state.task(id)
            {
                stack.extend(t.blocked_by.iter().copied());
            }
        }
        false
    }

    fn create(&mut self, c: &CreateTask) -> Result<Reply, DomainError> {
        if let Some(agent) = &c.agent {
            validate_agent("agent", agent)?;
        }
        validate_title(&c.title)?;
        let description = c.description.clone().unwrap_or_default();
        validate_text("description", &description)?;
        if let Some(assignee) = &c.assignee {
            validate_agent("assignee", assignee)?;
        }
        validate_tags(&c.tags)?;
        let id = self.state.next_task_id();
        let blocked_by = self.check_blockers(id, &c.blocked_by)?;
        let task = Task {
            id,
            title: c.title.trim().to_owned(),
            description,
            status: TaskStatus::Todo,
            priority: c.priority.unwrap_or_default(),
            assignee: c.assignee.clone(),
            blocked_by,
            tags: c.tags.clone(),
            created_by: c.agent.clone(),
            created_at: self.now,
            updated_at: self.now,
            claim: None,
            last_token: 0,
        };
        if let Some(agent) = &c.agent {
            self.touch(agent);
        }
        self.events.push(EventKind::TaskCreated { task: task.clone() });
        Ok(Reply::Task(task))
    }

    /// Claims `task` for `agent` (idempotent for its owner).
    fn claim(&mut self, task: &Task, agent: &str) -> Result<Task, DomainError> {
        if let Some(claim) = &task.claim {
            if claim.agent == agent {
                return Ok(task.clone());
            }
            return Err(DomainError::Conflict { message: format!("{} is claimed by {}", task.id, claim.agent) });
        }
        match task.status {
            TaskStatus::Todo => {}
            TaskStatus::Blocked => {
                return Err(DomainError::InvalidTransition {
                    message: format!("{} is blocked: set its status to todo before claiming it", task.id),
                });
            }
            status => {
                return Err(DomainError::InvalidTransition {
                    message: format!("{} is {status}: only a todo task can be claimed", task.id),
                });
            }
        }
        if let Some(assignee) = task.assignee.as_deref().filter(|a| *a != agent) {
            return Err(DomainError::Conflict { message: format!("{} is assigned to {assignee}", task.id) });
        }
        let blockers = self.state.unfinished_blockers(task);
        if !blockers.is_empty() {
            return Err(DomainError::Blocked { message: format!("{} is blocked by {}", task.id, list(&blockers)) });
        }
        let token = task.last_token + 1;
        let task = Task {
            status: TaskStatus::Doing,
            assignee: Some(agent.to_owned()),
            claim: Some(Claim { agent: agent.to_owned(), token, at: self.now }),
            last_token: token,
            updated_at: self.now,
            ..task.clone()
        };
        self.events.push(EventKind::TaskClaimed { task: task.clone(), agent: agent.to_owned() });
        Ok(task)
    }

    /// Releases `agent`'s claim on `task` back to `todo`; with `force`, anyone's claim.
    /// Releasing a task nobody holds changes nothing.
    fn release(&mut self, task: &Task, agent: &str, force: bool) -> Result<Task, DomainError> {
        let Some(claim) = &task.claim else {
            return Ok(task.clone());
        };
        let reason = if claim.agent == agent {
            ReleaseReason::Released
        } else if force {
            ReleaseReason::Forced
        } else {
            return Err(DomainError::Conflict {
                message: format!(
                    "{} is claimed by {}, not {agent} (force the release to take it away)",
                    task.id, claim.agent
                ),
            });
        };
        let released =
            Task { status: TaskStatus::Todo, assignee: None, claim: None, updated_at: self.now, ..task.clone() };
        self.events.push(EventKind::TaskReleased {
            task: released.clone(),
            agent: claim.agent.clone(),
            by: Some(agent.to_owned()),
            reason,
        });
        Ok(released)
    }

    /// Finishes `task` as `agent`: allowed for its owner, or for anyone when nobody holds
    /// it and it is not reserved for someone else.
    fn complete(&mut self, task: &Task, agent: &str) -> Result<Task, DomainError> {
        match task.status {
            TaskStatus::Done => return Ok(task.clone()),
            TaskStatus::Cancelled => {
                return Err(DomainError::InvalidTransition {
                    message: format!("{} is cancelled: reopen it (status todo) before completing it", task.id),
                });
            }
            _ => {}
        }
        match (&task.claim, task.assignee.as_deref()) {
            (Some(claim), _) if claim.agent != agent => {
                return Err(DomainError::Conflict { message: format!("{} is claimed by {}", task.id, claim.agent) });
            }
            (None, Some(assignee)) if assignee != agent => {
                return Err(DomainError::Conflict { message: format!("{} is assigned to {assignee}", task.id) });
            }
            _ => {}
        }
        let blockers = self.state.unfinished_blockers(task);
        if !blockers.is_empty() {
            return Err(DomainError::Blocked { message: format!("{} is blocked by {}", task.id, list(&blockers)) });
        }
        let done = Task {
            status: TaskStatus::Done,
            assignee: Some(agent.to_owned()),
            claim: None,
            updated_at: self.now,
            ..task.clone()
        };
        self.events.push(EventKind::TaskCompleted { task: done.clone(), by: Some(agent.to_owned()) });
        self.announce_ready(task.id);
        Ok(done)
    }

    /// Releases (`owner_gone`) every claim whose owner has been away longer than its
    /// grace or lease.
    fn release_expired_claims(&mut self) {
        for agent in self.state.agents.values() {
            let expired = self.policy.claims_expire_at(agent).is_some_and(|at| self.now >= at);
            if !expired {
                continue;
            }
            for task in self.state.held_by(&agent.name) {
                let released = Task {
                    status: TaskStatus::Todo,
                    assignee: None,
                    claim: None,
                    updated_at: self.now,
                    ..Task::clone(task)
                };
                self.events.push(EventKind::TaskReleased {
                    task: released,
                    agent: agent.name.clone(),
                    by: None,
                    reason: ReleaseReason::OwnerGone,
                });
            }
        }
    }

    /// After `finished` was done or cancelled: `task.ready` for each dependent whose last
    /// unfinished blocker it was.
    fn announce_ready(&mut self, finished: TaskId) {
        for dependent in self.state.dependents(finished) {
            if dependent.status.is_finished() {
                continue;
            }
            let waiting = dependent
                .blocked_by
                .iter()
                .any(|b| *b != finished && self.state.task(*b).is_some_and(|t| !t.status.is_finished()));
            if !waiting {
                self.events.push(EventKind::TaskReady { task: Task::clone(dependent) });
            }
        }
    }

    fn update(&mut self, id: TaskId, u: &UpdateTask) -> Result<Reply, DomainError> {
        let actor = match &u.agent {
            Some(agent) => Some(validate_agent("agent", agent).map(|()| agent.as_str())?),
            None => None,
        };
        let current = self.task(id)?;
        check_token(current, u.token)?;
        let mut task = current.clone();
        let mut changes: Vec<&str> = Vec::new();
        if let Some(title) = &u.title {
            validate_title(title)?;
            if task.title != title.trim() {
                task.title = title.trim().to_owned();
                changes.push("title");
            }
        }
        if let Some(description) = &u.description {
            validate_text("description", description)?;
            if &task.description != description {
                task.description = description.clone();
                changes.push("description");
            }
        }
        if let Some(priority) = u.priority
            && task.priority != priority
        {
            task.priority = priority;
            changes.push("priority");
        }
        if let Some(tags) = &u.tags {
            validate_tags(tags)?;
            if &task.tags != tags {
                task.tags = tags.clone();
                changes.push("tags");
            }
        }
        if let Some(blockers) = &u.blocked_by {
            let blockers = self.check_blockers(id, blockers)?;
            if task.blocked_by != blockers {
                task.blocked_by = blockers;
                changes.push("blockedBy");
            }
        }
        if let Some(assignee) = &u.assignee {
            if let Some(a) = assignee {
                validate_agent("assignee", a)?;
            }
            if &task.assignee != assignee {
                if let Some(claim) = &task.claim {
                    return Err(DomainError::Conflict {
                        message: format!(
                            "{id} is claimed by {}: it must be released before it can be reassigned",
                            claim.agent
                        ),
                    });
                }
                task.assignee = assignee.clone();
                changes.push("assignee");
            }
        }
        if let Some(actor) = actor {
            self.touch(actor);
        }
        let status = u.status.filter(|s| *s != task.status);
        let Some(status) = status else {
            return Ok(Reply::Task(self.updated(task, actor, &changes)));
        };
        let need_actor = || {
            require_agent("agent", actor)
                .map_err(|_| DomainError::invalid("agent", format!("is required to change the status to {status}")))
        };
        // The status change goes through the same rules as claim, release and complete;
        // the other field changes are folded into the same event.
        let task = match status {
            TaskStatus::Doing if task.claim.is_none() => {
                let agent = need_actor()?;
                self.claim(&task, agent)?
            }
            TaskStatus::Todo if task.claim.is_some() => {
                let agent = need_actor()?;
                self.release(&task, agent, false)?
            }
            TaskStatus::Done => {
                let agent = need_actor()?;
                self.complete(&task, agent)?
            }
            TaskStatus::Doing | TaskStatus::Review | TaskStatus::Blocked | TaskStatus::Cancelled => {
                let agent = need_actor()?;
                if let Some(claim) = task.claim.as_ref().filter(|c| c.agent != agent) {
                    return Err(DomainError::Conflict { message: format!("{id} is claimed by {}", claim.agent) });
                }
                match (status, task.status, &task.claim) {
                    (TaskStatus::Review, _, None) => {
                        return Err(DomainError::InvalidTransition {
                            message: format!("{id} is {}: claim it before sending it to review", task.status),
                        });
                    }
                    (TaskStatus::Blocked, from, None) if from.is_finished() => {
                        return Err(DomainError::InvalidTransition {
                            message: format!("{id} is {from}: reopen it (status todo) first"),
                        });
                    }
                    (TaskStatus::Cancelled, _, _) => {
                        let mut cancelled = task;
                        cancelled.status = TaskStatus::Cancelled;
                        cancelled.claim = None;
                        changes.push("status");
                        let cancelled = self.updated(cancelled, Some(agent), &changes);
                        self.announce_ready(id);
                        return Ok(Reply::Task(cancelled));
                    }
                    _ => {}
                }
                let mut moved = task;
                moved.status = status;
                changes.push("status");
                self.updated(moved, Some(agent), &changes)
            }
            TaskStatus::Todo => {
                // Reopening: blocked, done or cancelled, nobody holds it.
                let mut reopened = task;
                reopened.status = TaskStatus::Todo;
                changes.push("status");
                self.updated(reopened, actor, &changes)
            }
        };
        Ok(Reply::Task(task))
    }

    /// Emits `task.updated` when something changed.
    fn updated(&mut self, mut task: Task, by: Option<&str>, changes: &[&str]) -> Task {
        if !changes.is_empty() {
            task.updated_at = self.now;
            self.events.push(EventKind::TaskUpdated {
                task: task.clone(),
                by: by.map(str::to_owned),
                changes: changes.iter().map(|c| (*c).to_owned()).collect(),
            });
        }
        task
    }

    fn post(&mut self, p: &PostMessage) -> Result<Reply, DomainError> {
        validate_agent("from", &p.from)?;
        if p.content.trim().is_empty() {
            return Err(DomainError::invalid("content", "must not be empty"));
        }
        validate_text("content", &p.content)?;
        if let Some(to) = &p.to {
            validate_agent("to", to)?;
        }
        let channel = match (&p.channel, &p.to) {
            (Some(channel), _) => channel.clone(),
            (None, Some(to)) => {
                let (a, b) = if p.from <= *to { (&p.from, to) } else { (to, &p.from) };
                format!("dm:{a},{b}")
            }
            (None, None) => "general".to_owned(),
        };
        validate_channel(&channel)?;
        if let Some(reply_to) = p.reply_to
            && reply_to.0 > self.state.last_message
        {
            return Err(DomainError::invalid("replyTo", format!("message {reply_to} does not exist")));
        }
        self.touch(&p.from);
        let message = ChatMessage {
            id: MessageId(self.state.last_message + 1),
            seq: self.state.head + self.events.len() as Seq + 1,
            channel,
            from: p.from.clone(),
            content: p.content.clone(),
            mentions: parse_mentions(&p.content),
            to: p.to.clone(),
            reply_to: p.reply_to,
            at: self.now,
        };
        self.events.push(EventKind::ChatMessage { message: message.clone() });
        Ok(Reply::Message(message))
    }

    fn heartbeat(&mut self, name: &str, h: &Heartbeat) -> Result<Reply, DomainError> {
        validate_agent("agent", name)?;
        if let Some(status) = &h.status {
            validate_status(status)?;
        }
        if let Some(Some(note)) = &h.note {
            validate_note(note)?;
        }
        let mut agent = match self.state.agents.get(name) {
            Some(a) => Agent::clone(a),
            None => Agent::new(name, self.now),
        };
        agent.last_seen_at = self.now;
        match h.status.as_deref() {
            Some("active") => agent.status = None,
            Some(status) => agent.status = Some(status.to_owned()),
            // A heartbeat without a status after signing off means the agent is back.
            None => agent.status = agent.status.filter(|s| s != "offline"),
        }
        if let Some(note) = &h.note {
            agent.note = note.clone().filter(|n| !n.is_empty());
        }
        self.events.push(EventKind::PresenceChanged { agent: agent.clone() });
        Ok(Reply::Agent(agent))
    }
}
