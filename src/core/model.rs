//! The [`Model`]: what the domain decides against, folded from the event log by [`apply`].
//!
//! Persistent maps (`imbl`) make a clone O(1), so the sequencer can publish a consistent
//! snapshot to readers after every batch without copying the board.

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use muster_protocol::{Agent, Event, EventKind, Priority, Reservation, Seq, Task, TaskId, TaskStatus, Timestamp};
use serde::{Deserialize, Serialize};

use super::reservations::Reservations;

/// Finished tasks the model keeps, the ones that changed last: older ones are let go of
/// (the store keeps every task), so that memory does not grow with history. The rules only
/// need to know that such a task is finished; a command that names one gets it loaded back
/// first ([`Model::restore`]).
pub const FINISHED_KEPT: usize = 1_000;

/// What the broker knows about a chat channel (its messages live in the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// Channel name.
    pub name: String,
    /// Messages posted to it.
    pub messages: u64,
    /// `seq` of the newest message.
    pub last_seq: Seq,
    /// Time of the newest message.
    pub last_at: Timestamp,
}

/// Everything the rules need, folded from the event log. (Named `Model`, not `State`, so
/// that it is never confused with a web framework's shared state.)
///
/// Chat messages themselves are not here (they are only appended, never decided on); the
/// store keeps them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    /// `seq` of the last applied event.
    pub head: Seq,
    /// Every task, by id.
    pub tasks: OrdMap<TaskId, Arc<Task>>,
    /// Every agent seen, by name.
    pub agents: OrdMap<String, Arc<Agent>>,
    /// Inbox read cursors, by agent.
    pub cursors: OrdMap<String, Seq>,
    /// Channels with at least one message, by name.
    pub channels: OrdMap<String, Channel>,
    /// Number of the last message posted (`M-<n>`).
    pub last_message: u64,
    /// File reservations held now.
    pub files: Reservations,
    /// Number of the last reservation made (`R-<n>`).
    pub last_reservation: u64,
    /// `seq` of the last event that changed a task: the board's version, which chat traffic
    /// does not move. (0 in a model rebuilt from views alone: the store sets it.)
    pub tasks_seq: Seq,
    /// Number of the last task created (`T-<n>`): every id up to it exists, in `tasks` or,
    /// finished long ago, only in the store (see [`FINISHED_KEPT`]).
    pub last_task: u64,
    /// Tasks by status, those only in the store included, in [`TaskStatus::ALL`] order.
    counts: [u64; 6],
    /// Index: open (`todo`) tasks in the order `next` hands them out.
    open: OrdSet<(Priority, TaskId)>,
    /// Index: tasks not finished (todo, doing, review, blocked), by id.
    unfinished: OrdSet<TaskId>,
    /// Index: finished tasks (done, cancelled) by when they last changed, then id.
    finished: OrdSet<(Timestamp, TaskId)>,
    /// Index: task → tasks whose `blockedBy` names it.
    dependents: OrdMap<TaskId, OrdSet<TaskId>>,
    /// Index: agent → tasks it holds a claim on.
    held: OrdMap<String, OrdSet<TaskId>>,
}

impl Model {
    /// Rebuilds a model from its materialized views (as the store keeps them), deriving
    /// the indexes.
    pub fn from_views(
        head: Seq,
        last_message: u64,
        tasks: impl IntoIterator<Item = Task>,
        agents: impl IntoIterator<Item = Agent>,
        cursors: impl IntoIterator<Item = (String, Seq)>,
        channels: impl IntoIterator<Item = Channel>,
    ) -> Model {
        let mut model = Model { head, last_message, ..Model::default() };
        for task in tasks {
            model.load_task(task);
        }
        model.agents = agents.into_iter().map(|a| (a.name.clone(), Arc::new(a))).collect();
        model.cursors = cursors.into_iter().collect();
        model.channels = channels.into_iter().map(|c| (c.name.clone(), c)).collect();
        model
    }

    /// The same model with these reservations held (as the store keeps them) and this
    /// last reservation number.
    pub fn with_reservations(mut self, last: u64, reservations: impl IntoIterator<Item = Reservation>) -> Model {
        self.last_reservation = last;
        for r in reservations {
            self.last_reservation = self.last_reservation.max(r.id.0);
            let head = self.head;
            self.files.put(r, head);
        }
        self
    }

    /// The same model with every agent name in its one spelling (lowercase), or `None`
    /// when it is already so. Agents whose names differed only in case become one: the
    /// earliest first contact, the latest last contact, their sessions added up, the status
    /// and note of the one seen last, a person if either was. (For data dirs written before
    /// names were case-insensitive.)
    pub fn canonical_names(&self) -> Option<Model> {
        let lower = |name: &str| name.bytes().any(|b| b.is_ascii_uppercase());
        let task_names = |t: &Task| {
            t.assignee.as_deref().is_some_and(lower)
                || t.created_by.as_deref().is_some_and(lower)
                || t.claim.as_ref().is_some_and(|c| lower(&c.agent))
        };
        let stale = self.agents.keys().any(|n| lower(n))
            || self.cursors.keys().any(|n| lower(n))
            || self.tasks.values().any(|t| task_names(t));
        if !stale {
            return None;
        }
        let canonical = |name: &str| name.to_ascii_lowercase();
        let tasks = self.tasks.values().map(|t| {
            let mut t = Task::clone(t);
            t.assignee = t.assignee.as_deref().map(canonical);
            t.created_by = t.created_by.as_deref().map(canonical);
            if let Some(claim) = &mut t.claim {
                claim.agent = canonical(&claim.agent);
            }
            t
        });
        let mut agents: std::collections::BTreeMap<String, Agent> = std::collections::BTreeMap::new();
        for agent in self.agents.values() {
            let name = canonical(&agent.name);
            let merged = match agents.remove(&name) {
                None => Agent { name: name.clone(), ..Agent::clone(agent) },
                Some(other) => {
                    let (older, newer) =
                        if other.last_seen_at <= agent.last_seen_at { (&other, &**agent) } else { (&**agent, &other) };
                    Agent {
                        name: name.clone(),
                        status: newer.status.clone(),
                        note: newer.note.clone(),
                        first_seen_at: older.first_seen_at.min(newer.first_seen_at),
                        last_seen_at: newer.last_seen_at,
                        connections: older.connections + newer.connections,
                        nodes: {
                            let mut nodes = older.nodes.clone();
                            for (node, n) in &newer.nodes {
                                *nodes.entry(node.clone()).or_default() += n;
                            }
                            nodes
                        },
                        left_at: older.left_at.max(newer.left_at),
                        human: older.human || newer.human,
                        shown: newer.shown.clone(),
                        stuck: newer.stuck,
                    }
                }
            };
            agents.insert(name, merged);
        }
        let mut cursors: std::collections::BTreeMap<String, Seq> = std::collections::BTreeMap::new();
        for (name, seq) in &self.cursors {
            let cursor = cursors.entry(canonical(name)).or_insert(0);
            *cursor = (*cursor).max(*seq);
        }
        let mut model = Model::from_views(
            self.head,
            self.last_message,
            tasks,
            agents.into_values(),
            cursors,
            self.channels.values().cloned(),
        )
        .with_reservations(self.last_reservation, self.files.all().map(|h| h.reservation.clone()));
        model.tasks_seq = self.tasks_seq;
        // Tasks the model let go of are counted too (renaming changes no status).
        model.last_task = self.last_task;
        model.counts = self.counts;
        Some(model)
    }

    /// The task with this id, if the model holds it (see [`Model::evicted`]).
    pub fn task(&self, id: TaskId) -> Option<&Arc<Task>> {
        self.tasks.get(&id)
    }

    /// Whether the task exists, held or let go of.
    pub fn has_task(&self, id: TaskId) -> bool {
        self.tasks.contains_key(&id) || self.evicted(id)
    }

    /// Whether the task exists but the model let go of it (finished long ago): read it
    /// from the store.
    pub fn evicted(&self, id: TaskId) -> bool {
        (1..=self.last_task).contains(&id.0) && !self.tasks.contains_key(&id)
    }

    /// Takes back a task the model let go of, as the store has it, so that a command can be
    /// decided on it. Nothing else changes (it is still counted); the next finished task
    /// may let it go again.
    pub fn restore(&mut self, task: Arc<Task>) {
        if self.evicted(task.id) {
            self.tasks.insert(task.id, Arc::clone(&task));
            self.index(&task);
        }
    }

    /// The id the next created task gets.
    pub fn next_task_id(&self) -> TaskId {
        TaskId(self.last_task + 1)
    }

    /// Number of tasks with this status, those only in the store included.
    pub fn count(&self, status: TaskStatus) -> u64 {
        self.counts[status_index(status)]
    }

    /// The number of tasks by status, in [`TaskStatus::ALL`] order (as the store keeps it).
    pub fn counts(&self) -> [u64; 6] {
        self.counts
    }

    /// Sets the last task number and the counts by status, as the store kept them: a model
    /// loaded from views holds only the tasks it keeps, but counts them all.
    pub fn set_counts(&mut self, last_task: u64, counts: [u64; 6]) {
        self.last_task = self.last_task.max(last_task);
        self.counts = counts;
    }

    /// Open tasks in hand-out order: highest priority first, then oldest.
    pub fn open_tasks(&self) -> impl Iterator<Item = &Arc<Task>> + '_ {
        self.open.iter().filter_map(|(_, id)| self.tasks.get(id))
    }

    /// Ids of the tasks not finished, ascending.
    pub fn unfinished(&self) -> &OrdSet<TaskId> {
        &self.unfinished
    }

    /// The `n` finished tasks that changed last, newest first.
    pub fn recently_finished(&self, n: usize) -> impl Iterator<Item = TaskId> + '_ {
        self.finished.iter().rev().take(n).map(|(_, id)| *id)
    }

    /// Tasks whose `blockedBy` names `id`.
    pub fn dependents(&self, id: TaskId) -> impl Iterator<Item = &Arc<Task>> + '_ {
        self.dependents.get(&id).into_iter().flatten().filter_map(|d| self.tasks.get(d))
    }

    /// Tasks `agent` holds a claim on, oldest first.
    pub fn held_by(&self, agent: &str) -> impl Iterator<Item = &Arc<Task>> + '_ {
        self.held.get(agent).into_iter().flatten().filter_map(|id| self.tasks.get(id))
    }

    /// The unfinished tasks among `task`'s blockers.
    pub fn unfinished_blockers(&self, task: &Task) -> Vec<&Task> {
        task.blocked_by
            .iter()
            .filter_map(|b| self.tasks.get(b))
            .filter(|b| !b.status.is_finished())
            .map(|b| &**b)
            .collect()
    }

    /// The read cursor of `agent`'s inbox (0: nothing read).
    pub fn cursor(&self, agent: &str) -> Seq {
        self.cursors.get(agent).copied().unwrap_or(0)
    }

    /// Stores a task (new, or a new version of one the model holds) and keeps the
    /// indexes and counts in step; then lets go of the oldest finished tasks beyond
    /// [`FINISHED_KEPT`]. (A task the model let go of is [`restore`](Model::restore)d
    /// before a new version of it is stored.)
    fn put_task(&mut self, task: Task) {
        let id = task.id;
        self.store_task(task);
        self.evict(Some(id));
    }

    /// Adds a task as the store has it, when loading: like [`Model::put_task`], but the
    /// task itself may be let go of at once if it is the oldest finished one, so that the
    /// order of loading does not matter.
    pub fn load_task(&mut self, task: Task) {
        self.store_task(task);
        self.evict(None);
    }

    fn store_task(&mut self, task: Task) {
        let id = task.id;
        let new = Arc::new(task);
        if let Some(old) = self.tasks.insert(id, Arc::clone(&new)) {
            let count = &mut self.counts[status_index(old.status)];
            *count = count.saturating_sub(1);
            self.unindex(&old);
        }
        self.counts[status_index(new.status)] += 1;
        self.last_task = self.last_task.max(id.0);
        self.index(&new);
    }

    /// Lets go of the oldest finished tasks (never `keep`, nor one with a claim) while
    /// there are more than [`FINISHED_KEPT`].
    fn evict(&mut self, keep: Option<TaskId>) {
        while self.finished.len() > FINISHED_KEPT {
            let oldest = self
                .finished
                .iter()
                .map(|(_, id)| *id)
                .find(|id| Some(*id) != keep && self.tasks.get(id).is_some_and(|t| t.claim.is_none()));
            let Some(old) = oldest.and_then(|id| self.tasks.remove(&id)) else {
                return;
            };
            self.unindex(&old);
        }
    }

    /// Adds `task` to the indexes.
    fn index(&mut self, task: &Task) {
        let id = task.id;
        if task.status == TaskStatus::Todo {
            self.open.insert((task.priority, id));
        }
        if task.status.is_finished() {
            self.finished.insert((task.updated_at, id));
        } else {
            self.unfinished.insert(id);
        }
        for b in &task.blocked_by {
            self.dependents.entry(*b).or_default().insert(id);
        }
        if let Some(claim) = &task.claim {
            self.held.entry(claim.agent.clone()).or_default().insert(id);
        }
    }

    /// Removes `task` from the indexes.
    fn unindex(&mut self, task: &Task) {
        let id = task.id;
        if task.status == TaskStatus::Todo {
            self.open.remove(&(task.priority, id));
        }
        if task.status.is_finished() {
            self.finished.remove(&(task.updated_at, id));
        } else {
            self.unfinished.remove(&id);
        }
        for b in &task.blocked_by {
            if let Some(set) = self.dependents.get_mut(b) {
                set.remove(&id);
                if set.is_empty() {
                    self.dependents.remove(b);
                }
            }
        }
        if let Some(claim) = &task.claim
            && let Some(set) = self.held.get_mut(&claim.agent)
        {
            set.remove(&id);
            if set.is_empty() {
                self.held.remove(&claim.agent);
            }
        }
    }

    /// Records contact with `name` at `at`, creating the agent on first contact.
    fn touch(&mut self, name: &str, at: Timestamp) {
        let agent = match self.agents.get(name) {
            Some(agent) if agent.last_seen_at >= at && agent.status.as_deref() != Some("offline") => {
                return;
            }
            Some(agent) => Agent {
                last_seen_at: agent.last_seen_at.max(at),
                // Any action after signing off means the agent is back.
                status: agent.status.clone().filter(|s| s != "offline"),
                ..Agent::clone(agent)
            },
            None => Agent::new(name, at),
        };
        self.agents.insert(name.to_owned(), Arc::new(agent));
    }
}

/// Where `status` is in [`TaskStatus::ALL`].
fn status_index(status: TaskStatus) -> usize {
    TaskStatus::ALL.iter().position(|s| *s == status).unwrap_or(0)
}

/// Folds one event into the model.
///
/// Idempotent: applying an event a second time changes nothing, so the store can replay
/// the tail of the log over views that may already contain part of it. A task event for a
/// task the model let go of ([`Model::evicted`]) must follow a [`Model::restore`] of it,
/// so that it is counted once.
pub fn apply(model: &mut Model, event: &Event) {
    model.head = model.head.max(event.seq);
    match &event.kind {
        EventKind::TaskCreated { task }
        | EventKind::TaskUpdated { task, .. }
        | EventKind::TaskClaimed { task, .. }
        | EventKind::TaskReleased { task, .. }
        | EventKind::TaskCompleted { task, .. } => {
            model.tasks_seq = model.tasks_seq.max(event.seq);
            model.put_task(task.clone());
        }
        // The task did not change; the event only announces that it can be claimed now.
        EventKind::TaskReady { .. } => {}
        EventKind::ChatMessage { message } => {
            model.last_message = model.last_message.max(message.id.0);
            let channel = model.channels.entry(message.channel.clone()).or_insert_with(|| Channel {
                name: message.channel.clone(),
                messages: 0,
                last_seq: 0,
                last_at: message.at,
            });
            if message.seq > channel.last_seq {
                channel.messages += 1;
                channel.last_seq = message.seq;
                channel.last_at = message.at;
            }
        }
        // A comment counts as a message, in no channel.
        EventKind::TaskCommented { message } => model.last_message = model.last_message.max(message.id.0),
        EventKind::PresenceChanged { agent, .. } => {
            model.agents.insert(agent.name.clone(), Arc::new(agent.clone()));
        }
        EventKind::InboxAcked { agent, seq } => {
            let cursor = model.cursors.entry(agent.clone()).or_insert(0);
            *cursor = (*cursor).max(*seq);
        }
        EventKind::FilesReserved { reservations, .. } => {
            for r in reservations {
                model.last_reservation = model.last_reservation.max(r.id.0);
                model.files.put(r.clone(), event.seq);
            }
        }
        EventKind::FilesReleased { reservations, .. } => {
            for r in reservations {
                model.files.remove(r.id);
            }
        }
    }
    if let Some(name) = event.kind.actor() {
        model.touch(name, event.at);
    }
}
