//! `/tasks`: the board, claims, releases, completions, `next`.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_protocol::grammar::{self, AgentName, IdempotencyKey, PageCursor, StatusList, Tag};
use muster_protocol::{
    AddComment, CreateTask, ErrorBody, MaybeTaskEnvelope, MessageEnvelope, MessageList, NextTask, Priority, TaskAction,
    TaskEnvelope, TaskId, TaskList, UpdateTask,
};
use muster_protocol::{
    ListArgs, NextArgs, Order, TaskActionArgs, TaskCommentArgs, TaskCommentsArgs, TaskRef, TaskUpdateArgs,
};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::tasks::Board;
use crate::api::{self, ApiError};
use crate::transport::extract::{Auth, Idempotency, JsonBody, OptionalJsonBody, Query, first_page_if_empty, task_id};
use crate::transport::guard;
use crate::transport::response::{HttpError, json, ok, written};
use crate::transport::state::{App, AppState};

/// This file's routes (one `routes!` per path, its methods together).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(next, claim_next))
        .routes(routes!(get, update))
        .routes(routes!(claim))
        .routes(routes!(release))
        .routes(routes!(complete))
        .routes(routes!(comment, comments))
}

/// Create a task.
#[utoipa::path(
    post, path = "/tasks", tag = "tasks",
    request_body = CreateTask,
    params(
        ("X-Agent" = Option<AgentName>, Header, description = "The acting agent (recorded as createdBy)"),
        ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe: the same key returns the first outcome"),
    ),
    responses(
        (status = 201, description = "Created", body = TaskEnvelope),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 404, description = "A task in `blockedBy` does not exist (`error.field` names it)", body = ErrorBody),
        (status = 409, description = "`blockedBy` names the task itself", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    App(app): App,
    Auth(caller): Auth,
    idem: Idempotency,
    JsonBody(body): JsonBody<CreateTask>,
) -> Result<Response, HttpError> {
    let created = api::tasks::create(&app.broker, &caller, body, idem.0).await?;
    let location = HeaderValue::from_str(&format!("/tasks/{}", created.value.task.id));
    let mut response = written(StatusCode::CREATED, created);
    if let Ok(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Filters for the board, and the page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only these statuses, comma-separated (`todo,doing`); finished ones from the whole
    /// history. Without `status` or `all`: every unfinished task and the 100 finished last.
    #[param(value_type = Option<StatusList>)]
    status: Option<String>,
    /// Every task, finished ones from the whole history included.
    #[serde(default)]
    all: bool,
    /// By id, `asc` (default) or `desc` (newest first).
    order: Option<Order>,
    /// Only tasks assigned to this agent.
    #[param(value_type = Option<AgentName>)]
    assignee: Option<String>,
    /// Only this priority.
    priority: Option<Priority>,
    /// Only tasks with this tag.
    #[param(value_type = Option<Tag>)]
    tag: Option<String>,
    /// At most this many (default 500, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next` of the previous page.
    #[serde(default, deserialize_with = "first_page_if_empty")]
    #[param(value_type = Option<PageCursor>)]
    cursor: Option<String>,
}

/// List the board, by id, a page at a time: the reply's `next` is the `cursor` of the next
/// page (`null` on the last).
#[utoipa::path(
    get, path = "/tasks", tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "The board; gzip-compressed with `Accept-Encoding: gzip`", body = TaskList),
        (status = 304, description = "Unchanged since the `ETag` given in `If-None-Match`"),
        (status = 400, body = ErrorBody),
    )
)]
pub(crate) async fn list(
    App(app): App,
    Auth(caller): Auth,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, HttpError> {
    let status = match &q.status {
        None => Vec::new(),
        Some(list) => grammar::parse_status_list(list).map_err(|m| ApiError::invalid("status", m))?,
    };
    let filter = ListArgs {
        status,
        all: q.all,
        order: q.order.unwrap_or_default(),
        assignee: q.assignee,
        priority: q.priority,
        tag: q.tag,
        limit: q.limit,
        cursor: q.cursor,
    };
    if filter == ListArgs::default() {
        return Ok(board(&*api::tasks::board(&app.broker, &caller).await?, &headers));
    }
    Ok(ok(api::tasks::list(&app.broker, &caller, filter).await?))
}

/// The whole board: serialized (and compressed) once per durable change, then shared by
/// every reader; `ETag` lets a poller skip the body when nothing changed.
fn board(board: &Board, headers: &HeaderMap) -> Response {
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == board.etag || t.trim() == "*"));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(headers) {
        let mut r = json(StatusCode::OK, board.gzip());
        r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        json(StatusCode::OK, board.json())
    };
    let h = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&board.etag) {
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

/// Show one task.
#[utoipa::path(
    get, path = "/tasks/{id}", tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id, e.g. T-12")),
    responses((status = 200, body = TaskEnvelope), (status = 404, body = ErrorBody))
)]
pub(crate) async fn get(App(app): App, Auth(caller): Auth, Path(id): Path<String>) -> Result<Response, HttpError> {
    Ok(ok(api::tasks::get(&app.broker, &caller, TaskRef { task: task_id(&id)? }).await?))
}

/// Change fields of a task; a status change follows the claim rules.
#[utoipa::path(
    patch, path = "/tasks/{id}", tag = "tasks",
    request_body = UpdateTask,
    params(
        ("id" = TaskId, Path, description = "Task id, e.g. T-12"),
        ("X-Agent" = Option<AgentName>, Header, description = "The acting agent"),
        ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe"),
    ),
    responses(
        (status = 200, body = TaskEnvelope), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Held by another agent, a stale token, or `blockedBy` would make a cycle", body = ErrorBody),
        (status = 422, description = "Status change not allowed", body = ErrorBody),
    )
)]
pub(crate) async fn update(
    App(app): App,
    Auth(caller): Auth,
    Path(id): Path<String>,
    idem: Idempotency,
    JsonBody(update): JsonBody<UpdateTask>,
) -> Result<Response, HttpError> {
    let args = TaskUpdateArgs { task: task_id(&id)?, update };
    Ok(written(StatusCode::OK, api::tasks::update(&app.broker, &caller, args, idem.0).await?))
}

/// The task and the acting agent of a claim, release or completion.
fn action(id: &str, action: TaskAction) -> Result<TaskActionArgs, ApiError> {
    Ok(TaskActionArgs { task: task_id(id)?, action })
}

/// Claim a task: exactly one agent wins; the others get 409 naming the owner.
#[utoipa::path(
    post, path = "/tasks/{id}/claim", tag = "tasks",
    request_body = Option<TaskAction>,
    params(("id" = TaskId, Path, description = "Task id"), ("X-Agent" = Option<AgentName>, Header, description = "The claiming agent"), ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe")),
    responses(
        (status = 200, description = "Claimed (or already held by this agent); `task.claim.token` is the fencing token", body = TaskEnvelope),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "Claimed by / assigned to another agent, or blocked", body = ErrorBody),
        (status = 422, description = "Not open (done, cancelled, blocked)", body = ErrorBody),
    )
)]
pub(crate) async fn claim(
    App(app): App,
    Auth(caller): Auth,
    Path(id): Path<String>,
    idem: Idempotency,
    OptionalJsonBody(body): OptionalJsonBody<TaskAction>,
) -> Result<Response, HttpError> {
    let args = action(&id, body)?;
    Ok(written(StatusCode::OK, api::tasks::claim(&app.broker, &caller, args, idem.0).await?))
}

/// Release a claim; the task goes back to `todo`. `force` takes it from another owner.
#[utoipa::path(
    post, path = "/tasks/{id}/release", tag = "tasks",
    request_body = Option<TaskAction>,
    params(("id" = TaskId, Path, description = "Task id"), ("X-Agent" = Option<AgentName>, Header, description = "The acting agent"), ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe")),
    responses((status = 200, body = TaskEnvelope), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub(crate) async fn release(
    App(app): App,
    Auth(caller): Auth,
    Path(id): Path<String>,
    idem: Idempotency,
    OptionalJsonBody(body): OptionalJsonBody<TaskAction>,
) -> Result<Response, HttpError> {
    let args = action(&id, body)?;
    Ok(written(StatusCode::OK, api::tasks::release(&app.broker, &caller, args, idem.0).await?))
}

/// Complete a task (as its owner, or when nobody holds it).
#[utoipa::path(
    post, path = "/tasks/{id}/complete", tag = "tasks",
    request_body = Option<TaskAction>,
    params(("id" = TaskId, Path, description = "Task id"), ("X-Agent" = Option<AgentName>, Header, description = "The acting agent"), ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe")),
    responses(
        (status = 200, body = TaskEnvelope), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, description = "Not open (already done, cancelled)", body = ErrorBody),
    )
)]
pub(crate) async fn complete(
    App(app): App,
    Auth(caller): Auth,
    Path(id): Path<String>,
    idem: Idempotency,
    OptionalJsonBody(body): OptionalJsonBody<TaskAction>,
) -> Result<Response, HttpError> {
    let args = action(&id, body)?;
    Ok(written(StatusCode::OK, api::tasks::complete(&app.broker, &caller, args, idem.0).await?))
}

/// Comment on a task. `@name` mentions land in those agents' inboxes; subscribers of the
/// task's topics get `task.commented`.
#[utoipa::path(
    post, path = "/tasks/{id}/comments", tag = "tasks",
    request_body = AddComment,
    params(("id" = TaskId, Path, description = "Task id"), ("X-Agent" = Option<AgentName>, Header, description = "The author, when the body names none"), ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe")),
    responses(
        (status = 201, description = "The comment (a message in the task's thread, `#T-3`)", body = MessageEnvelope),
        (status = 400, body = ErrorBody),
        (status = 404, description = "No such task, or `replyTo` names no message", body = ErrorBody),
    )
)]
pub(crate) async fn comment(
    App(app): App,
    Auth(caller): Auth,
    Path(id): Path<String>,
    idem: Idempotency,
    JsonBody(comment): JsonBody<AddComment>,
) -> Result<Response, HttpError> {
    let args = TaskCommentArgs { task: task_id(&id)?, comment };
    Ok(written(StatusCode::CREATED, api::chat::comment(&app.broker, &caller, args, idem.0).await?))
}

/// A page of a task's comments.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CommentsQuery {
    /// At most this many (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The `next` of the previous page.
    #[serde(default, deserialize_with = "first_page_if_empty")]
    #[param(value_type = Option<PageCursor>)]
    cursor: Option<String>,
}

/// A task's comments, oldest first.
#[utoipa::path(
    get, path = "/tasks/{id}/comments", tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id"), CommentsQuery),
    responses((status = 200, body = MessageList), (status = 400, body = ErrorBody), (status = 404, description = "No such task", body = ErrorBody))
)]
pub(crate) async fn comments(
    App(app): App,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(q): Query<CommentsQuery>,
) -> Result<Response, HttpError> {
    let args = TaskCommentsArgs { task: task_id(&id)?, limit: q.limit, cursor: q.cursor };
    Ok(ok(api::chat::comments(&app.broker, &caller, args).await?))
}

/// Who asks for the next task, and whether to claim it.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct NextQuery {
    /// The agent (or the `X-Agent` header).
    #[param(value_type = Option<AgentName>)]
    agent: Option<String>,
    /// Claim the task atomically (the one GET that changes state, by explicit request).
    #[serde(default)]
    claim: bool,
}

/// The next task for an agent: one it holds, else the highest-priority, oldest open task
/// it may take. With `claim=true`, claims it atomically; that needs an `X-Agent` or
/// `Authorization` header (which no web page of another origin can send), as a guard
/// against a page claiming tasks through an `<img>`.
#[utoipa::path(
    get, path = "/tasks/next", tag = "tasks",
    params(NextQuery, ("X-Agent" = Option<AgentName>, Header, description = "The agent (required with claim=true unless Authorization is sent)")),
    responses(
        (status = 200, description = "`task` is null when there is nothing to do", body = MaybeTaskEnvelope),
        (status = 400, body = ErrorBody),
        (status = 403, description = "claim=true without an X-Agent or Authorization header, or from another site", body = ErrorBody),
    )
)]
pub(crate) async fn next(
    App(app): App,
    Auth(caller): Auth,
    headers: HeaderMap,
    idem: Idempotency,
    Query(q): Query<NextQuery>,
) -> Result<Response, HttpError> {
    if q.claim {
        // The one GET that writes, decided on the query as parsed.
        guard::may_write(&app, &headers)?;
        if !caller.declares_an_agent() && !headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::forbidden(
                "X-Agent",
                "GET /tasks/next?claim=true changes state: send the X-Agent header (or Authorization), which a web \
                 page of another site cannot send, or use POST /tasks/next",
            )
            .into());
        }
    }
    let args = NextArgs { agent: q.agent, claim: q.claim };
    Ok(written(StatusCode::OK, api::tasks::next(&app.broker, &caller, args, idem.0).await?))
}

/// Pick the next task for an agent and claim it atomically.
#[utoipa::path(
    post, path = "/tasks/next", tag = "tasks",
    request_body = Option<NextTask>,
    params(("X-Agent" = Option<AgentName>, Header, description = "The agent"), ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe")),
    responses((status = 200, description = "`task` is null when there is nothing to do", body = MaybeTaskEnvelope), (status = 400, body = ErrorBody))
)]
pub(crate) async fn claim_next(
    App(app): App,
    Auth(caller): Auth,
    idem: Idempotency,
    OptionalJsonBody(body): OptionalJsonBody<NextTask>,
) -> Result<Response, HttpError> {
    let args = NextArgs { agent: body.agent, claim: true };
    Ok(written(StatusCode::OK, api::tasks::next(&app.broker, &caller, args, idem.0).await?))
}
