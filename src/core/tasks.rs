//! The task board's rules: create, claim (a mutex with a fencing token), release,
//! complete, update, dependencies, and claims released when their owner stays away.

use muster_protocol::{Claim, CreateTask, EventKind, ReleaseReason, Task, TaskId, TaskStatus, UpdateTask};

use super::decider::Decider;
use super::error::DomainError;
use super::model::Model;
use super::rules::{MAX_BLOCKERS, require_agent, validate_agent, validate_tags, validate_text, validate_title};

/// The task `agent` should work on next: one it already holds (unfinished), else the open
/// task it may claim with the highest priority, oldest first, not waiting on blockers.
pub fn next_for<'m>(model: &'m Model, agent: &str) -> Option<&'m Task> {
    if let Some(held) = model.held_by(agent).next() {
        return Some(held);
    }
    model
        .open_tasks()
        .find(|t| t.assignee.as_deref().is_none_or(|a| a == agent) && model.unfinished_blockers(t).is_empty())
        .map(|t| &**t)
}

fn list(tasks: &[&Task]) -> String {
    tasks.iter().map(|t| format!("{} ({})", t.id, t.status)).collect::<Vec<_>>().join(", ")
}

impl Decider<'_> {
    /// Refuses a fencing token that is not the current claim's.
    pub(super) fn check_token(&self, task: &Task, token: Option<u64>) -> Result<(), DomainError> {
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

    /// Claims the next task for `agent` (see [`next_for`]); `None` when there is nothing to do.
    pub(super) fn claim_next(&mut self, agent: Option<&str>) -> Result<Option<Task>, DomainError> {
        let agent = require_agent("agent", agent)?;
        self.touch(agent);
        match next_for(self.model, agent) {
            Some(task) => self.claim(task, agent).map(Some),
            None => Ok(None),
        }
    }

    fn check_blockers(&self, id: TaskId, blockers: &[TaskId]) -> Result<Vec<TaskId>, DomainError> {
        if blockers.len() > MAX_BLOCKERS {
            return Err(DomainError::invalid("blockedBy", format!("has more than {MAX_BLOCKERS} tasks")));
        }
        let mut out: Vec<TaskId> = Vec::new();
        for (i, b) in blockers.iter().enumerate() {
            // Well-formed, but the dependencies as they stand refuse it: a conflict (409).
            if *b == id {
                return Err(DomainError::Conflict {
                    field: Some(format!("blockedBy[{i}]")),
                    message: format!("blockedBy[{i}]: {id} cannot wait on itself"),
                });
            }
            if self.model.task(*b).is_none() {
                return Err(DomainError::missing(format!("blockedBy[{i}]"), format!("task {b} does not exist")));
            }
            if self.depends_on(*b, id) {
                return Err(DomainError::Conflict {
                    field: Some(format!("blockedBy[{i}]")),
                    message: format!("blockedBy[{i}]: {b} already waits on {id}: that would be a cycle"),
                });
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
                && let Some(t) = self.model.task(id)
            {
                stack.extend(t.blocked_by.iter().copied());
            }
        }
        false
    }

    pub(super) fn create(&mut self, c: &CreateTask) -> Result<Task, DomainError> {
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
        let id = self.model.next_task_id();
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
        Ok(task)
    }

    /// Claims `task` for `agent` (idempotent for its owner).
    pub(super) fn claim(&mut self, task: &Task, agent: &str) -> Result<Task, DomainError> {
        if let Some(claim) = &task.claim {
            if claim.agent == agent {
                return Ok(task.clone());
            }
            return Err(DomainError::Conflict {
                field: None,
                message: format!("{} is claimed by {}", task.id, claim.agent),
            });
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
            return Err(DomainError::Conflict {
                field: None,
                message: format!("{} is assigned to {assignee}", task.id),
            });
        }
        let blockers = self.model.unfinished_blockers(task);
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
    pub(super) fn release(&mut self, task: &Task, agent: &str, force: bool) -> Result<Task, DomainError> {
        let Some(claim) = &task.claim else {
            return Ok(task.clone());
        };
        let reason = if claim.agent == agent {
            ReleaseReason::Released
        } else if force {
            ReleaseReason::Forced
        } else {
            return Err(DomainError::Conflict {
                field: None,
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
    pub(super) fn complete(&mut self, task: &Task, agent: &str) -> Result<Task, DomainError> {
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
                return Err(DomainError::Conflict {
                    field: None,
                    message: format!("{} is claimed by {}", task.id, claim.agent),
                });
            }
            (None, Some(assignee)) if assignee != agent => {
                return Err(DomainError::Conflict {
                    field: None,
                    message: format!("{} is assigned to {assignee}", task.id),
                });
            }
            _ => {}
        }
        let blockers = self.model.unfinished_blockers(task);
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
    pub(super) fn release_expired_claims(&mut self) {
        for agent in self.model.agents.values() {
            let expired = self.policy.claims_expire_at(agent).is_some_and(|at| self.now >= at);
            if !expired {
                continue;
            }
            for task in self.model.held_by(&agent.name) {
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
        for dependent in self.model.dependents(finished) {
            if dependent.status.is_finished() {
                continue;
            }
            let waiting = dependent
                .blocked_by
                .iter()
                .any(|b| *b != finished && self.model.task(*b).is_some_and(|t| !t.status.is_finished()));
            if !waiting {
                self.events.push(EventKind::TaskReady { task: Task::clone(dependent) });
            }
        }
    }

    pub(super) fn update(&mut self, id: TaskId, u: &UpdateTask) -> Result<Task, DomainError> {
        let actor = match &u.agent {
            Some(agent) => Some(validate_agent("agent", agent).map(|()| agent.as_str())?),
            None => None,
        };
        let current = self.task(id)?;
        self.check_token(current, u.token)?;
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
                        field: None,
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
            return Ok(self.updated(task, actor, &changes));
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
                    return Err(DomainError::Conflict {
                        field: None,
                        message: format!("{id} is claimed by {}", claim.agent),
                    });
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
                        return Ok(cancelled);
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
        Ok(task)
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
}
