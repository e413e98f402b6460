//! `/tasks`: the board, claims, releases, completions, `next`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use muster_protocol::ws::ListArgs;
use muster_protocol::{
    CreateTask, ErrorBody, MaybeTaskEnvelope, NextTask, Priority, Task, TaskAction, TaskEnvelope, TaskList, TaskStatus,
    UpdateTask,
};
use serde::Deserialize;

use super::extract::{AgentHeader, Idempotency, JsonBody, OptionalJsonBody, Query, task_id};
use super::{ApiError, AppState, json_bytes, json_response};
use crate::core::{Command, Reply, next_for, validate_agent};
use crate::sequencer::{Committed, Snapshot};

/// `{"tasks": [...]}` over borrowed tasks (the wire shape of `TaskList`).
#[derive(serde::Serialize)]
pub struct Tasks<'a> {
    /// The tasks.
    pub tasks: Vec<&'a Task>,
}

/// `{"task": {...}}` over a borrowed task (the wire shape of `TaskEnvelope`).
#[derive(serde::Serialize)]
struct OneTask<'a> {
    task: &'a Task,
}

/// Submits a command and answers with the task it returns.
async fn submit(state: &AppState, cmd: Command, idem: Idempotency, status: StatusCode) -> Result<Response, ApiError> {
    let Committed { reply, replayed } = state.writer.submit(cmd, idem.0).await?;
    let mut response = match reply {
        Reply::Task(task) => {
            let mut r = json_response(status, &TaskEnvelope { task: task.clone() });
            if status == StatusCode::CREATED
                && let Ok(location) = HeaderValue::from_str(&format!("/tasks/{}", task.id))
            {
                r.headers_mut().insert(header::LOCATION, location);
            }
            r
        }
        Reply::MaybeTask(task) => json_response(StatusCode::OK, &MaybeTaskEnvelope { task }),
        other => {
            return Err(ApiError::new(muster_protocol::ErrorCode::Internal, format!("unexpected reply {other:?}")));
        }
    };
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Create a task.
#[utoipa::path(
    post, path = "/tasks", tag = "tasks",
    request_body = CreateTask,
    params(
        ("X-Agent" = Option<String>, Header, description = "The acting agent (recorded as createdBy)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key returns the first outcome"),
    ),
    responses(
        (status = 201, description = "Created", body = TaskEnvelope),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    agent: AgentHeader,
    idem: Idempotency,
    JsonBody(mut body): JsonBody<CreateTask>,
) -> Result<Response, ApiError> {
    body.agent = agent.resolve("agent", body.agent.take())?;
    submit(&state, Command::CreateTask(body), idem, StatusCode::CREATED).await
}

/// Filters for the board.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only these statuses, comma-separated (`todo,doing`).
    status: Option<String>,
    /// Only tasks assigned to this agent.
    assignee: Option<String>,
    /// Only this priority.
    priority: Option<Priority>,
    /// Only tasks with this tag.
    tag: Option<String>,
}

/// List the board, in id order.
#[utoipa::path(
    get, path = "/tasks", tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "The board; gzip-compressed with `Accept-Encoding: gzip`", body = TaskList),
        (status = 304, description = "Unchanged since the `ETag` given in `If-None-Match`"),
        (status = 400, body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let snapshot = state.reader.snapshot();
    let unfiltered = q.status.is_none() && q.assignee.is_none() && q.priority.is_none() && q.tag.is_none();
    if unfiltered {
        return Ok(board(&state, &snapshot, &headers));
    }
    let status = match &q.status {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|s| serde_json::from_value::<TaskStatus>(serde_json::Value::String(s.trim().to_owned())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                ApiError::invalid(
                    "status",
                    format!("{list:?} is not a list of todo, doing, review, blocked, done, cancelled"),
                )
            })?,
    };
    let filter = ListArgs { status, assignee: q.assignee, priority: q.priority, tag: q.tag };
    Ok(json_response(StatusCode::OK, &Tasks { tasks: filtered(&snapshot.state, &filter) }))
}

/// The tasks that pass a filter, in id order.
pub fn filtered<'a>(state: &'a crate::core::State, f: &ListArgs) -> Vec<&'a Task> {
    state
        .tasks
        .values()
        .map(|t| &**t)
        .filter(|t| f.status.is_empty() || f.status.contains(&t.status))
        .filter(|t| f.assignee.as_ref().is_none_or(|a| t.assignee.as_ref() == Some(a)))
        .filter(|t| f.priority.is_none_or(|p| t.priority == p))
        .filter(|t| f.tag.as_ref().is_none_or(|tag| t.tags.contains(tag)))
        .collect()
}

/// The whole board: serialized (and compressed) once per durable change, then shared by
/// every reader; `ETag` lets a poller skip the body when nothing changed.
fn board(state: &AppState, snapshot: &Snapshot, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}-{}\"", state.store.epoch(), snapshot.state.head);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let json = snapshot.board.get_or_init(|| {
            let all: Vec<&Task> = snapshot.state.tasks.values().map(|t| &**t).collect();
            Bytes::from(serde_json::to_vec(&Tasks { tasks: all }).unwrap_or_default())
        });
        if accepts_gzip(headers) {
            let gzip = snapshot.board_gzip.get_or_init(|| gzip(json));
            let mut r = json_bytes(StatusCode::OK, gzip.clone());
            r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            json_bytes(StatusCode::OK, json.clone())
        }
    };
    let h = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Whether the client accepts a gzip body (`Accept-Encoding: gzip`, unless `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let codings = headers.get_all(header::ACCEPT_ENCODING).into_iter().filter_map(|v| v.to_str().ok());
    codings.flat_map(|v| v.split(',')).any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let gzip = parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip"));
        let q = parts.find_map(|p| p.strip_prefix("q=")).map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
        gzip && q > 0.0
    })
}

fn gzip(bytes: &[u8]) -> Bytes {
    use std::io::Write;
    // Fast level: a 1,000-task board shrinks about tenfold in a couple of milliseconds.
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 8), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// Show one task.
#[utoipa::path(
    get, path = "/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "Task id, e.g. T-12")),
    responses((status = 200, body = TaskEnvelope), (status = 404, body = ErrorBody))
)]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let snapshot = state.reader.snapshot();
    match snapshot.state.task(id) {
        Some(task) => Ok(json_response(StatusCode::OK, &OneTask { task })),
        None => Err(ApiError::not_found(format!("task {id} does not exist"))),
    }
}

/// Change fields of a task; a status change follows the claim rules.
#[utoipa::path(
    patch, path = "/tasks/{id}", tag = "tasks",
    request_body = UpdateTask,
    params(
        ("id" = String, Path, description = "Task id, e.g. T-12"),
        ("X-Agent" = Option<String>, Header, description = "The acting agent"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe"),
    ),
    responses(
        (status = 200, body = TaskEnvelope), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Held by another agent, or stale token", body = ErrorBody),
        (status = 422, description = "Status change not allowed", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    agent: AgentHeader,
    idem: Idempotency,
    JsonBody(mut body): JsonBody<UpdateTask>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    body.agent = agent.resolve("agent", body.agent.take())?;
    submit(&state, Command::UpdateTask { id, update: body }, idem, StatusCode::OK).await
}

async fn action(
    state: &AppState,
    id: &str,
    agent: AgentHeader,
    idem: Idempotency,
    mut body: TaskAction,
    make: fn(muster_protocol::TaskId, TaskAction) -> Command,
) -> Result<Response, ApiError> {
    let id = task_id(id)?;
    body.agent = agent.resolve("agent", body.agent.take())?;
    submit(state, make(id, body), idem, StatusCode::OK).await
}

/// Claim a task: exactly one agent wins; the others get 409 naming the owner.
#[utoipa::path(
    post, path = "/tasks/{id}/claim", tag = "tasks",
    request_body = TaskAction,
    params(("id" = String, Path, description = "Task id"), ("X-Agent" = Option<String>, Header, description = "The claiming agent"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses(
        (status = 200, description = "Claimed (or already held by this agent); `task.claim.token` is the fencing token", body = TaskEnvelope),
        (status = 409, description = "Claimed by / assigned to another agent, or blocked", body = ErrorBody),
        (status = 422, description = "Not open (done, cancelled, blocked)", body = ErrorBody),
    )
)]
pub async fn claim(
    State(state): State<AppState>,
    Path(id): Path<String>,
    agent: AgentHeader,
    idem: Idempotency,
    OptionalJsonBody(body): OptionalJsonBody<TaskAction>,
) -> Result<Response, ApiError> {
    action(&state, &id, agent, idem, body, |id, action| Command::Claim { id, action }).await
}

/// Release a claim; the task goes back to `todo`. `force` takes it from another owner.
#[utoipa::path(
    post, path = "/tasks/{id}/release", tag = "tasks",
    request_body = TaskAction,
    params(("id" = String, Path, description = "Task id"), ("X-Agent" = Option<String>, Header, description = "The acting agent"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = TaskEnvelope), (status = 409, body = ErrorBody))
)]
pub async fn release(
    State(state): State<AppState>,
    Path(id): Path<String>,
    agent: AgentHeader,
    idem: Idempotency,
    OptionalJsonBody(body): OptionalJsonBody<TaskAction>,
) -> Result<Response, ApiError> {
    action(&state, &id, agent, idem, body, |id, action| Command::Release { id, action }).await
}

/// Complete a task (as its owner, or when nobody holds it).
#[utoipa::path(
    post, path = "/tasks/{id}/complete", tag = "tasks",
    request_body = TaskAction,
    params(("id" = String, Path, description = "Task id"), ("X-Agent" = Option<String>, Header, description = "The acting agent"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = TaskEnvelope), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    agent: AgentHeader,
    idem: Idempotency,
    OptionalJsonBody(body): OptionalJsonBody<TaskAction>,
) -> Result<Response, ApiError> {
    action(&state, &id, agent, idem, body, |id, action| Command::Complete { id, action }).await
}

/// Who asks for the next task, and whether to claim it.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NextQuery {
    /// The agent (or the `X-Agent` header).
    agent: Option<String>,
    /// Claim the task atomically (the one GET that changes state, by explicit request).
    #[serde(default)]
    claim: bool,
}

/// The next task for an agent: one it holds, else the highest-priority, oldest open task
/// it may take. With `claim=true`, claims it atomically.
#[utoipa::path(
    get, path = "/tasks/next", tag = "tasks",
    params(NextQuery, ("X-Agent" = Option<String>, Header, description = "The agent")),
    responses((status = 200, description = "`task` is null when there is nothing to do", body = MaybeTaskEnvelope), (status = 400, body = ErrorBody))
)]
pub async fn next(
    State(state): State<AppState>,
    agent: AgentHeader,
    idem: Idempotency,
    Query(q): Query<NextQuery>,
) -> Result<Response, ApiError> {
    let name = agent.resolve("agent", q.agent)?;
    if q.claim {
        return submit(&state, Command::ClaimNext { agent: name }, idem, StatusCode::OK).await;
    }
    let name = name.ok_or_else(|| ApiError::invalid("agent", "is required: ?agent=NAME or the X-Agent header"))?;
    validate_agent("agent", &name)?;
    let snapshot = state.reader.snapshot();
    let task = next_for(&snapshot.state, &name).cloned();
    Ok(json_response(StatusCode::OK, &MaybeTaskEnvelope { task }))
}

/// Pick the next task for an agent and claim it atomically.
#[utoipa::path(
    post, path = "/tasks/next", tag = "tasks",
    request_body = NextTask,
    params(("X-Agent" = Option<String>, Header, description = "The agent"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 200, description = "`task` is null when there is nothing to do", body = MaybeTaskEnvelope), (status = 400, body = ErrorBody))
)]
pub async fn claim_next(
    State(state): State<AppState>,
    agent: AgentHeader,
    idem: Idempotency,
    OptionalJsonBody(body): OptionalJsonBody<NextTask>,
) -> Result<Response, ApiError> {
    let name = agent.resolve("agent", body.agent)?;
    submit(&state, Command::ClaimNext { agent: name }, idem, StatusCode::OK).await
}
