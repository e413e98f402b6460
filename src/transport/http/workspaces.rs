//! `/workspaces`: the broker's workspaces, added and removed. Each one's own routes are
//! every other route under `/w/{workspace}` (see `transport::workspace`).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use muster_protocol::{AddWorkspace, ErrorBody, WorkspaceInfo, WorkspaceList};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::transport::extract::{Auth, JsonBody, Query};
use crate::transport::response::{HttpError, ok};
use crate::transport::state::{App, AppState};

/// This file's routes (one `routes!` per path, its methods together).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, add)).routes(routes!(remove))
}

/// Every workspace, archived ones included, by name.
#[utoipa::path(
    get, path = "/workspaces", tag = "workspaces",
    responses((status = 200, body = WorkspaceList))
)]
pub(crate) async fn list(App(app): App, Auth(caller): Auth) -> Result<Response, HttpError> {
    Ok(ok(app.workspaces.list(&caller)?))
}

/// Add a workspace: its routes are `/w/{name}/…` from the answer on. With tokens on, a
/// person's token only.
#[utoipa::path(
    post, path = "/workspaces", tag = "workspaces",
    request_body = AddWorkspace,
    responses(
        (status = 201, body = WorkspaceInfo),
        (status = 403, description = "With tokens on, an agent's token", body = ErrorBody),
        (status = 409, description = "The name is taken (an archived workspace's too)", body = ErrorBody),
    )
)]
pub(crate) async fn add(
    App(app): App,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<AddWorkspace>,
) -> Result<Response, HttpError> {
    let added = app.workspaces.add(&caller, &body.name).await?;
    let mut response = ok(added);
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// How to remove a workspace.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RemoveQuery {
    /// Delete its data instead of archiving it.
    #[serde(default)]
    purge: bool,
}

/// Remove a workspace: archived (its data kept and read, every write refused), or deleted
/// with `purge=true`. Its sessions and streams end. `default` cannot be removed. With
/// tokens on, a person's token only.
#[utoipa::path(
    delete, path = "/workspaces/{workspace}", tag = "workspaces",
    params(("workspace" = muster_protocol::grammar::WorkspaceName, Path, description = "The workspace"), RemoveQuery),
    responses(
        (status = 200, body = WorkspaceInfo),
        (status = 403, description = "With tokens on, an agent's token", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "`default`", body = ErrorBody),
    )
)]
pub(crate) async fn remove(
    App(app): App,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, HttpError> {
    Ok(ok(app.workspaces.remove(&caller, &name, q.purge).await?))
}
