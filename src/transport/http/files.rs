//! `/files`: file reservations — reserve, release, list, and who holds a path.

use axum::http::{StatusCode, Uri};
use axum::response::Response;
use muster_protocol::grammar::{AgentName, IdempotencyKey, Repo, RepoPath};
use muster_protocol::{
    ErrorBody, FilesQuery, ReleaseFiles, ReservationList, ReserveFiles, TaskId, WhoHas, WhoHasFiles,
};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{self, ApiError};
use crate::transport::extract::{Auth, Idempotency, JsonBody, Query};
use crate::transport::response::{HttpError, ok, written};
use crate::transport::state::{App, AppState};

/// This file's routes (one `routes!` per path, its methods together).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(reserve)).routes(routes!(release)).routes(routes!(who))
}

/// Reserve paths of a repository, all or none.
#[utoipa::path(
    post, path = "/files/reserve", tag = "files",
    request_body = ReserveFiles,
    params(
        ("X-Agent" = Option<AgentName>, Header, description = "The acting agent"),
        ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe"),
    ),
    responses(
        (status = 200, description = "Reserved (or renewed): every reservation of the request", body = ReservationList),
        (status = 400, description = "Invalid field (a pattern, the repo, the TTL)", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "Overlaps another agent's reservation (`error.conflicts` lists each holder, its pattern and a path both match), the task is another agent's, or the overlap checks would take more than the request's limit of matching steps (`error.field` names the pattern); nothing was reserved", body = ErrorBody),
        (status = 422, description = "The task is not claimed", body = ErrorBody),
    )
)]
pub(crate) async fn reserve(
    App(app): App,
    Auth(caller): Auth,
    idem: Idempotency,
    JsonBody(body): JsonBody<ReserveFiles>,
) -> Result<Response, HttpError> {
    Ok(written(StatusCode::OK, api::files::reserve(&app.broker, &caller, body, idem.0).await?))
}

/// Release the acting agent's reservations in a repository: those with the given patterns,
/// those of the given task, or all of them.
#[utoipa::path(
    post, path = "/files/release", tag = "files",
    request_body = ReleaseFiles,
    params(
        ("X-Agent" = Option<AgentName>, Header, description = "The acting agent"),
        ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Makes a retry safe"),
    ),
    responses(
        (status = 200, description = "The reservations released (none when nothing matched)", body = ReservationList),
        (status = 400, body = ErrorBody),
    )
)]
pub(crate) async fn release(
    App(app): App,
    Auth(caller): Auth,
    idem: Idempotency,
    JsonBody(body): JsonBody<ReleaseFiles>,
) -> Result<Response, HttpError> {
    Ok(written(StatusCode::OK, api::files::release(&app.broker, &caller, body, idem.0).await?))
}

/// Filters for the reservations.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only in this repository.
    #[param(value_type = Option<Repo>)]
    repo: Option<String>,
    /// Only this agent's.
    #[param(value_type = Option<AgentName>)]
    agent: Option<String>,
    /// Only this task's.
    #[param(value_type = Option<TaskId>)]
    task: Option<TaskId>,
}

/// The reservations held now, by id.
#[utoipa::path(
    get, path = "/files", tag = "files",
    params(ListQuery),
    responses((status = 200, body = ReservationList), (status = 400, body = ErrorBody))
)]
pub(crate) async fn list(App(app): App, Auth(caller): Auth, Query(q): Query<ListQuery>) -> Result<Response, HttpError> {
    let query = FilesQuery { repo: q.repo, agent: q.agent, task: q.task };
    Ok(ok(api::files::list(&app.broker, &caller, query).await?))
}

/// The question of `GET /files/who` (documentation; the query is read by [`who_query`]).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct WhoQuery {
    /// The repository.
    #[param(value_type = Repo)]
    repo: String,
    /// A repository-relative path; repeat for several (at most 100).
    #[param(value_type = Vec<RepoPath>, min_items = 1, max_items = 100)]
    path: Vec<String>,
}

/// `repo=R&path=a&path=b`: one repo, repeated paths.
fn who_query(uri: &Uri) -> Result<WhoHasFiles, ApiError> {
    let mut args = WhoHasFiles::default();
    let mut repo = None;
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match &*key {
            "repo" if repo.is_none() => repo = Some(value.into_owned()),
            "repo" => return Err(ApiError::invalid("repo", "is given twice")),
            "path" => args.paths.push(value.into_owned()),
            other => {
                let other = muster_protocol::names::truncate(other, 40);
                return Err(ApiError::invalid(
                    other.clone(),
                    format!("unknown query parameter {other:?} (repo, path)"),
                ));
            }
        }
    }
    args.repo = repo.unwrap_or_default();
    Ok(args)
}

/// Who holds each path: the reservations whose pattern matches it.
#[utoipa::path(
    get, path = "/files/who", tag = "files",
    params(WhoQuery),
    responses(
        (status = 200, body = WhoHas),
        (status = 400, description = "An invalid repo or path, or matching the paths would take more than the request's limit of matching steps", body = ErrorBody),
    )
)]
pub(crate) async fn who(App(app): App, Auth(caller): Auth, uri: Uri) -> Result<Response, HttpError> {
    Ok(ok(api::files::who(&app.broker, &caller, who_query(&uri)?).await?))
}
