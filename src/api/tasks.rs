//! The task board's operations: create, update, claim, release, complete, next, and reading
//! the board.

use std::sync::Arc;

use muster_protocol::{CreateTask, MaybeTaskEnvelope, Task, TaskEnvelope, TaskId, TaskList};
use muster_protocol::{ListArgs, NextArgs, Order, TaskActionArgs, TaskRef, TaskUpdateArgs};

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
const _: () = assert!(RECENTLY_FINISHED <= crate::core::FINISHED_KEPT, "the board reads only from memory");

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

/// Releases a claim (with `force`, another agent's: with tokens on, a person's token only).
pub(crate) async fn release(
    broker: &Broker,
    caller: &Caller,
    mut args: TaskActionArgs,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<TaskEnvelope>, ApiError> {
    if args.action.force && !caller.may_force() {
        let snapshot = broker.read_fresh(caller).await?;
        let owner = snapshot.model.task(args.task).and_then(|t| t.claim.as_ref()).map(|c| c.agent.clone());
        match owner {
            Some(owner) if Some(owner.as_str()) != caller.agent() => {
                let id = args.task;
                return Err(ApiError::forbidden(
                    "force",
                    format!(
                        "taking {owner}'s claim on {id} away takes a person's token (the dashboard's); ask {owner} in \
                         chat instead: muster chat post '@{owner} may I take {id}?'"
                    ),
                ));
            }
            // Its own claim (or none): a release needs no force, and without it a claim
            // taken by another meanwhile is refused, not taken away.
            _ => args.action.force = false,
        }
    }
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
    let snapshot = broker.read_fresh(caller).await?;
    let agent = caller.act_as(args.agent)?.ok_or_else(|| {
        ApiError::invalid("agent", "is required: ?agent=NAME, the X-Agent header, or hello as an agent")
    })?;
    validate_agent("agent", &agent)?;
    let task = next_for(&snapshot.model, &agent).cloned();
    Ok(Written { value: MaybeTaskEnvelope { task }, replayed: false })
}

/// One task: from the model, or from the store when the model let go of it.
pub(crate) async fn get(broker: &Broker, caller: &Caller, args: TaskRef) -> Result<TaskEnvelope, ApiError> {
    let snapshot = broker.read_fresh(caller).await?;
    let id = args.task;
    let missing = || ApiError::not_found(format!("task {id} does not exist"));
    if let Some(task) = snapshot.model.task(id) {
        return Ok(TaskEnvelope { task: Task::clone(task) });
    }
    if !snapshot.model.evicted(id) {
        return Err(missing());
    }
    let stored = broker.read_store(caller, move |store, _| store.archive.task(id)).await?;
    stored.map(|task| TaskEnvelope { task }).ok_or_else(missing)
}

/// A page of the tasks that pass a filter, by id. Without `status` or `all`, the board:
/// unfinished tasks and the last finished ones. Pages of finished tasks walk the store,
/// which keeps those the model let go of.
pub(crate) async fn list(broker: &Broker, caller: &Caller, filter: ListArgs) -> Result<Json<TaskList>, ApiError> {
    if filter == ListArgs::default() {
        return Ok(Json::from_bytes(board(broker, caller).await?.json()));
    }
    let snapshot = broker.read_fresh(caller).await?;
    let query = Query::of(&filter)?;
    if filter.status.is_empty() && !filter.all {
        return Ok(Json::of(&page(&snapshot.model, &query, board_ids(&snapshot.model).into_iter())));
    }
    if !filter.status.is_empty() && filter.status.iter().all(|s| !s.is_finished()) {
        let ids = snapshot.model.unfinished().iter().copied();
        return Ok(Json::of(&page(&snapshot.model, &query, ids)));
    }
    let page = broker
        .read_store(caller, move |store, _| {
            let model = &snapshot.model;
            let mut tasks: Vec<Task> = Vec::new();
            store.archive.walk(query.after, query.desc, |id, stored| {
                // Created after this snapshot: not on this page yet.
                if id.0 > model.last_task {
                    return Ok(true);
                }
                match model.task(id) {
                    Some(task) if query.matches(task) => tasks.push(Task::clone(task)),
                    Some(_) => {}
                    None => {
                        let task = stored()?;
                        if query.matches(&task) {
                            tasks.push(task);
                        }
                    }
                }
                Ok(tasks.len() <= query.limit)
            })?;
            let next = query.next(&mut tasks);
            Ok(TaskList { tasks, next })
        })
        .await?;
    Ok(Json::of(&page))
}

/// A task list's filter, page size and position, checked.
struct Query {
    filter: ListArgs,
    assignee: Option<String>,
    /// What the cursor is bound to (see [`fingerprint`]).
    key: String,
    limit: usize,
    after: Option<TaskId>,
    desc: bool,
}

impl Query {
    fn of(filter: &ListArgs) -> Result<Query, ApiError> {
        let limit = page::limit(filter.limit, page::TASKS.0, page::TASKS.1)?;
        if let Some(assignee) = &filter.assignee {
            muster_protocol::names::check_agent(assignee).map_err(|m| ApiError::invalid("assignee", m))?;
        }
        if let Some(tag) = &filter.tag {
            muster_protocol::grammar::check_tag(tag).map_err(|m| ApiError::invalid("tag", m))?;
        }
        let assignee = filter.assignee.as_deref().map(muster_protocol::names::canonical);
        let key = fingerprint(filter, assignee.as_deref());
        let after = match &filter.cursor {
            Some(cursor) => Some(TaskId(page::number(&page::decode(cursor, List::Tasks, &key)?)?)),
            None => None,
        };
        Ok(Query { filter: filter.clone(), assignee, key, limit, after, desc: filter.order == Order::Desc })
    }

    fn matches(&self, t: &Task) -> bool {
        let f = &self.filter;
        (f.status.is_empty() || f.status.contains(&t.status))
            && self.assignee.as_ref().is_none_or(|a| t.assignee.as_ref() == Some(a))
            && f.priority.is_none_or(|p| t.priority == p)
            && f.tag.as_ref().is_none_or(|tag| t.tags.contains(tag))
    }

    /// Whether `id` comes after the cursor, in the page's order.
    fn after(&self, id: TaskId) -> bool {
        self.after.is_none_or(|after| if self.desc { id < after } else { id > after })
    }

    /// Cuts `tasks` (up to `limit + 1` matches, in order) to a page; the next page's cursor
    /// if there is more.
    fn next<T: std::borrow::Borrow<Task>>(&self, tasks: &mut Vec<T>) -> Option<String> {
        (tasks.len() > self.limit).then(|| {
            tasks.truncate(self.limit);
            let last = tasks.last().map_or(0, |t| t.borrow().id.0);
            page::encode(List::Tasks, &self.key, &last.to_be_bytes())
        })
    }
}

/// The page of `query` among the tasks of `model` with these ids (ascending).
fn page<'a>(model: &'a Model, query: &Query, ids: impl DoubleEndedIterator<Item = TaskId>) -> Tasks<'a> {
    let ids: Box<dyn Iterator<Item = TaskId>> = if query.desc { Box::new(ids.rev()) } else { Box::new(ids) };
    let mut tasks = ids
        .filter(|id| query.after(*id))
        .filter_map(|id| model.task(id).map(|t| &**t))
        .filter(|t| query.matches(t))
        .take(query.limit + 1)
        .collect::<Vec<_>>();
    let next = query.next(&mut tasks);
    Tasks { tasks, next }
}

/// What a task cursor is bound to: every filter, not the page size.
fn fingerprint(filter: &ListArgs, assignee: Option<&str>) -> String {
    format!(
        "{:?}|{}|{:?}|{:?}|{:?}|{:?}",
        filter.status, filter.all, filter.order, assignee, filter.priority, filter.tag
    )
}

/// The board (see [`Board`]), served from the cache while no task changed.
pub(crate) async fn board(broker: &Broker, caller: &Caller) -> Result<Arc<Board>, ApiError> {
    let snapshot = broker.read_fresh(caller).await?;
    let model = &snapshot.model;
    let etag = format!("\"{}-{}\"", broker.epoch(), model.tasks_seq);
    broker.board.get_or_make(etag, || {
        Ok(Json::<TaskList>::of(&page(model, &Query::of(&ListArgs::default())?, board_ids(model).into_iter())).bytes())
    })
}

/// The board's tasks, by id: every unfinished one and the last finished ones (which the
/// model always keeps: [`FINISHED_KEPT`](crate::core::FINISHED_KEPT) is larger).
fn board_ids(model: &Model) -> Vec<TaskId> {
    let mut ids: Vec<TaskId> = model.unfinished().iter().copied().collect();
    ids.extend(model.recently_finished(RECENTLY_FINISHED));
    ids.sort_unstable();
    ids
}
