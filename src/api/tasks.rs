//! The task board's operations: create, update, claim, release, complete, next, and reading
//! the board.

use std::sync::Arc;

use muster_protocol::ws::{ListArgs, NextArgs, Order, TaskActionArgs, TaskRef, TaskUpdateArgs};
use muster_protocol::{CreateTask, MaybeTaskEnvelope, Task, TaskEnvelope, TaskId, TaskList};

pub(crate) use super::board::Board;
use super::broker::{Broker, Written};
use super::caller::Caller;
use super::error::ApiError;
use super::json::Json;
use super::page::{self, List};
use crate::core::{Command, Model, Reply, next_for, validate_agent};
use crate::sequencer::IdempotencyKey;

/// `{"tasks": [...], "next": ...}` over borrowed tasks (the wire shape of `TaskList`).
#[derive(serde::Serialize)]
struct Tasks<'a> {
    tasks: Vec<&'a Task>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Finished tasks on the board: the ones that finished (or changed) last.
const RECENTLY_FINISHED: usize = 100;

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

/// A page of the tasks that pass a filter, by id. Without `status` or `all`, the board:
/// unfinished tasks and the last finished ones.
pub(crate) fn list(broker: &Broker, caller: &Caller, filter: &ListArgs) -> Result<Json<TaskList>, ApiError> {
    if *filter == ListArgs::default() {
        return Ok(Json::from_bytes(board(broker, caller)?.json()));
    }
    let snapshot = broker.read(caller)?;
    Ok(Json::of(&page(&snapshot.model, filter)?))
}

/// The page of `filter` in `model`.
fn page<'a>(model: &'a Model, filter: &ListArgs) -> Result<Tasks<'a>, ApiError> {
    let limit = page::limit(filter.limit, page::TASKS.0, page::TASKS.1)?;
    let assignee = filter.assignee.as_deref().map(muster_protocol::names::canonical);
    let key = fingerprint(filter, assignee.as_deref());
    let after = match &filter.cursor {
        Some(cursor) => Some(TaskId(page::number(&page::decode(cursor, List::Tasks, &key)?)?)),
        None => None,
    };
    let desc = filter.order == Order::Desc;
    // The ids to walk: the board's, the unfinished ones, or every task.
    let only_unfinished = !filter.status.is_empty() && filter.status.iter().all(|s| !s.is_finished());
    let ids: Box<dyn DoubleEndedIterator<Item = TaskId> + '_> = if filter.status.is_empty() && !filter.all {
        let mut board: Vec<TaskId> = model.unfinished().iter().copied().collect();
        board.extend(model.recently_finished(RECENTLY_FINISHED));
        board.sort_unstable();
        Box::new(board.into_iter())
    } else if only_unfinished {
        Box::new(model.unfinished().iter().copied())
    } else {
        Box::new(model.tasks.keys().copied())
    };
    let ids: Box<dyn Iterator<Item = TaskId>> = if desc { Box::new(ids.rev()) } else { ids };
    let mut tasks = ids
        .filter(|id| after.is_none_or(|after| if desc { *id < after } else { *id > after }))
        .filter_map(|id| model.task(id).map(|t| &**t))
        .filter(|t| filter.status.is_empty() || filter.status.contains(&t.status))
        .filter(|t| assignee.as_ref().is_none_or(|a| t.assignee.as_ref() == Some(a)))
        .filter(|t| filter.priority.is_none_or(|p| t.priority == p))
        .filter(|t| filter.tag.as_ref().is_none_or(|tag| t.tags.contains(tag)))
        .take(limit + 1)
        .collect::<Vec<_>>();
    let next = (tasks.len() > limit).then(|| {
        tasks.truncate(limit);
        let last = tasks.last().map_or(0, |t| t.id.0);
        page::encode(List::Tasks, &key, &last.to_be_bytes())
    });
    Ok(Tasks { tasks, next })
}

/// What a task cursor is bound to: every filter, not the page size.
fn fingerprint(filter: &ListArgs, assignee: Option<&str>) -> String {
    format!(
        "{:?}|{}|{:?}|{:?}|{:?}|{:?}",
        filter.status, filter.all, filter.order, assignee, filter.priority, filter.tag
    )
}

/// The board (see [`Board`]), served from the cache while no task changed.
pub(crate) fn board(broker: &Broker, caller: &Caller) -> Result<Arc<Board>, ApiError> {
    let snapshot = broker.read(caller)?;
    let model = &snapshot.model;
    let etag = format!("\"{}-{}\"", broker.epoch(), model.tasks_seq);
    broker.board.get_or_make(etag, || Ok(Json::<TaskList>::of(&page(model, &ListArgs::default())?).bytes()))
}
