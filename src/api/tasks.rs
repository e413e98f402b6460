//! The task board's operations: create, update, claim, release, complete, next, and reading
//! the board.

use bytes::Bytes;
use muster_protocol::ws::{ListArgs, NextArgs, TaskActionArgs, TaskRef, TaskUpdateArgs};
use muster_protocol::{CreateTask, MaybeTaskEnvelope, Task, TaskEnvelope, TaskList};

use super::broker::{Broker, Written};
use super::caller::Caller;
use super::error::ApiError;
use super::json::Json;
use crate::core::{Command, Reply, next_for, validate_agent};
use crate::sequencer::IdempotencyKey;

/// `{"tasks": [...]}` over borrowed tasks (the wire shape of `TaskList`).
#[derive(serde::Serialize)]
struct Tasks<'a> {
    tasks: Vec<&'a Task>,
}

/// The whole board, as `GET /tasks` without filters serves it: serialized (and
/// compressed) once per durable change and shared by every reader.
pub(crate) struct Board {
    /// Changes whenever the board may have: `"<epoch>-<head>"`.
    pub(crate) etag: String,
    snapshot: std::sync::Arc<crate::sequencer::Snapshot>,
}

impl Board {
    /// The board as JSON (a `TaskList`).
    pub(crate) fn json(&self) -> Bytes {
        let snapshot = &self.snapshot;
        snapshot
            .board
            .get_or_init(|| {
                let all: Vec<&Task> = snapshot.model.tasks.values().map(|t| &**t).collect();
                Json::<TaskList>::of(&Tasks { tasks: all }).bytes()
            })
            .clone()
    }

    /// The same, gzip-compressed.
    pub(crate) fn gzip(&self) -> Bytes {
        self.snapshot.board_gzip.get_or_init(|| gzip(&self.json())).clone()
    }
}

fn gzip(bytes: &[u8]) -> Bytes {
    use std::io::Write;
    // Fast level: a 1,000-task board shrinks about tenfold in a couple of milliseconds.
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 8), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    Bytes::from(encoder.finish().unwrap_or_default())
}

fn task(reply: Reply) -> Option<TaskEnvelope> {
    match reply {
        Reply::Task(task) => Some(TaskEnvelope { task }),
        _ => None,
    }
}

/// Adds a task.
pub(crate) async fn create(
    broker: &Broker,
    caller: &Caller,
    create: CreateTask,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<TaskEnvelope>, ApiError> {
    broker.write(caller, Command::CreateTask(create), idempotency).await?.map(task)
}

/// Changes fields of a task; a status change follows the claim rules.
pub(crate) async fn update(
    broker: &Broker,
    caller: &Caller,
    args: TaskUpdateArgs,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<TaskEnvelope>, ApiError> {
    let cmd = Command::UpdateTask { id: args.task, update: args.update };
    broker.write(caller, cmd, idempotency).await?.map(task)
}

/// Claims a task: exactly one agent wins.
pub(crate) async fn claim(
    broker: &Broker,
    caller: &Caller,
    args: TaskActionArgs,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<TaskEnvelope>, ApiError> {
    let cmd = Command::Claim { id: args.task, action: args.action };
    broker.write(caller, cmd, idempotency).await?.map(task)
}

/// Releases a claim (with `force`, another agent's).
pub(crate) async fn release(
    broker: &Broker,
    caller: &Caller,
    args: TaskActionArgs,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<TaskEnvelope>, ApiError> {
    let cmd = Command::Release { id: args.task, action: args.action };
    broker.write(caller, cmd, idempotency).await?.map(task)
}

/// Completes a task.
pub(crate) async fn complete(
    broker: &Broker,
    caller: &Caller,
    args: TaskActionArgs,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<TaskEnvelope>, ApiError> {
    let cmd = Command::Complete { id: args.task, action: args.action };
    broker.write(caller, cmd, idempotency).await?.map(task)
}

/// The next task for an agent (one it holds, else the most urgent open one it may
/// take); with `claim`, claimed atomically. Without `claim` nothing changes.
pub(crate) async fn next(
    broker: &Broker,
    caller: &Caller,
    args: NextArgs,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<MaybeTaskEnvelope>, ApiError> {
    if args.claim {
        let cmd = Command::ClaimNext { agent: args.agent };
        return broker.write(caller, cmd, idempotency).await?.map(|reply| match reply {
            Reply::MaybeTask(task) => Some(MaybeTaskEnvelope { task }),
            _ => None,
        });
    }
    let snapshot = broker.read(caller)?;
    let agent = caller.act_as(args.agent)?.ok_or_else(|| {
        ApiError::invalid("agent", "is required: ?agent=NAME, the X-Agent header, or hello as an agent")
    })?;
    validate_agent("agent", &agent)?;
    let task = next_for(&snapshot.model, &agent).cloned();
    Ok(Written { value: MaybeTaskEnvelope { task }, replayed: false })
}

/// One task.
pub(crate) fn get(broker: &Broker, caller: &Caller, args: TaskRef) -> Result<TaskEnvelope, ApiError> {
    let snapshot = broker.read(caller)?;
    match snapshot.model.task(args.task) {
        Some(task) => Ok(TaskEnvelope { task: Task::clone(task) }),
        None => Err(ApiError::not_found(format!("task {} does not exist", args.task))),
    }
}

/// The tasks that pass a filter, in id order.
pub(crate) fn list(broker: &Broker, caller: &Caller, filter: &ListArgs) -> Result<Json<TaskList>, ApiError> {
    if *filter == ListArgs::default() {
        return Ok(Json::from_bytes(board(broker, caller)?.json()));
    }
    let assignee = filter.assignee.as_deref().map(muster_protocol::names::canonical);
    let snapshot = broker.read(caller)?;
    let tasks = snapshot
        .model
        .tasks
        .values()
        .map(|t| &**t)
        .filter(|t| filter.status.is_empty() || filter.status.contains(&t.status))
        .filter(|t| assignee.as_ref().is_none_or(|a| t.assignee.as_ref() == Some(a)))
        .filter(|t| filter.priority.is_none_or(|p| t.priority == p))
        .filter(|t| filter.tag.as_ref().is_none_or(|tag| t.tags.contains(tag)))
        .collect();
    Ok(Json::of(&Tasks { tasks }))
}

/// The whole board (see [`Board`]).
pub(crate) fn board(broker: &Broker, caller: &Caller) -> Result<Board, ApiError> {
    let snapshot = broker.read(caller)?;
    Ok(Board { etag: format!("\"{}-{}\"", broker.epoch(), snapshot.model.head), snapshot })
}
