//! The route table: one axum router for every route, registered through `utoipa-axum` so
//! that `/openapi.json` and `/capabilities` are generated from the table that serves the
//! requests. [`app`] builds the whole application without binding.

use axum::extract::DefaultBodyLimit;
use axum::{Router, middleware};
use muster_protocol::{ErrorCode, grammar};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Auth, MAX_BODY};
use super::http::{chat, events, files, presence, system, tasks, workspaces};
use super::response::HttpError;
use super::state::AppState;
use super::{guard, sse, ws};
use crate::api::ApiError;
use crate::dashboard;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Muster",
        description = "Coordination broker for teams of AI coding agents: task board with claim mutex, presence, chat, events."
    ),
    // Referred to by parameters, which do not register the types they name.
    components(schemas(
        muster_protocol::Order,
        muster_protocol::TaskId,
        grammar::AgentName,
        grammar::ChannelName,
        grammar::Title,
        grammar::Text,
        grammar::Content,
        grammar::Note,
        grammar::Tag,
        grammar::SelfStatus,
        grammar::Repo,
        grammar::RepoPath,
        grammar::PageCursor,
        grammar::StatusList,
        grammar::Topics,
        grammar::Wait,
        grammar::IdempotencyKey,
        grammar::GlobPattern,
        grammar::WorkspaceName,
    ))
)]
struct ApiDoc;

/// The routes and their OpenAPI description, from one table.
pub(crate) fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        // Each file of `http/` lists its own routes, beside their handlers.
        .merge(tasks::routes())
        .merge(presence::routes())
        .merge(chat::routes())
        .merge(files::routes())
        .merge(workspaces::routes())
        .routes(routes!(events::poll))
        .routes(routes!(ws::upgrade))
        .routes(routes!(sse::stream))
        .routes(routes!(system::health))
        .routes(routes!(system::metrics))
        .routes(routes!(system::capabilities))
        .routes(routes!(system::openapi))
        .routes(routes!(dashboard::root))
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::app))
        .routes(routes!(dashboard::style))
        .routes(routes!(dashboard::client))
        .split_for_parts();
    common_errors(&mut api);
    prefixed(&mut api);
    (router, api)
}

/// Adds every path of a workspace's again under `/w/{workspace}` (see `super::workspace`),
/// with its `workspace` parameter. `/workspaces` is the broker's, not a workspace's.
fn prefixed(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{Ref, Required};
    let workspace = ParameterBuilder::new()
        .name("workspace")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The workspace (`default` is also the route without this prefix)"))
        .schema(Some(Ref::from_schema_name("WorkspaceName")))
        .build();
    let unknown = utoipa::openapi::ResponseBuilder::new()
        .description("No such workspace (or, for a route that reads one thing, no such thing)")
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
        )
        .build();
    let paths: Vec<(String, utoipa::openapi::PathItem)> = api
        .paths
        .paths
        .iter()
        .filter(|(path, _)| !path.starts_with("/workspaces"))
        .map(|(path, item)| {
            let mut item = item.clone();
            let ops = [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete];
            for op in ops.into_iter().flatten() {
                op.parameters.get_or_insert_with(Vec::new).insert(0, workspace.clone());
                op.responses.responses.entry("404".to_owned()).or_insert_with(|| unknown.clone().into());
                // Each operation's id is unique in the document.
                op.operation_id = op.operation_id.take().map(|id| format!("{id}_in_workspace"));
            }
            (format!("{}{{workspace}}{path}", super::workspace::PREFIX), item)
        })
        .collect();
    api.paths.paths.extend(paths);
}

/// Adds the answers every operation of a kind can give, where its own description does not
/// already state them: a request with input can be invalid (400), unauthorized with tokens
/// on (401), or have a longer URI than the server reads (414, or 431 with the headers); a
/// write can also act as another agent or come from another site (403), be too large (413),
/// or reuse an `Idempotency-Key` for another request (422).
fn common_errors(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
            .build()
    };
    let reads = [
        ("400", "Invalid input: `error.field` names it"),
        ("401", "Tokens are on and none (or an unknown one) was sent"),
    ];
    let writes = [
        ("403", "Acting as another agent than the token's or the X-Agent header's, or a write from another site"),
        ("413", "Body larger than 64 KiB"),
        (
            "422",
            "The request cannot apply to the current state (see `error.code`), or its Idempotency-Key was used for another request",
        ),
    ];
    // Reads of the broker's state: every GET but the WebSocket, the pages and files, and
    // what says nothing about the state.
    let stateless = ["/health", "/capabilities", "/openapi.json"];
    for (path, item) in api.paths.paths.iter_mut() {
        let ops = [(&mut item.get, false), (&mut item.post, true), (&mut item.patch, true), (&mut item.delete, true)];
        for (op, write) in ops {
            let Some(op) = op else { continue };
            let page = op.tags.as_ref().is_some_and(|t| t.iter().any(|t| t == "dashboard"));
            if !write && !page && !stateless.contains(&path.as_str()) && !op.responses.responses.contains_key("101") {
                op.parameters.get_or_insert_with(Vec::new).push(after());
                let unavailable = "A cluster node could not make its state current in time for this read (it has not \
                                   applied `Muster-After`, or the leader's head, or it may have lost its lease); retry";
                op.responses.responses.entry("503".to_owned()).or_insert_with(|| error(unavailable).into());
            }
            let has_input = write || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            if !has_input || op.responses.responses.contains_key("101") {
                continue;
            }
            let extra = reads.iter().chain(if write { &writes[..] } else { &[] });
            for (status, description) in extra {
                op.responses.responses.entry((*status).to_owned()).or_insert_with(|| error(description).into());
            }
            // Answered by the HTTP parser itself, before any handler: no body.
            let too_long = ResponseBuilder::new().description("The URI is longer than the server reads (64 KiB)");
            op.responses.responses.entry("414".to_owned()).or_insert_with(|| too_long.build().into());
            let head = ResponseBuilder::new()
                .description("The URI and headers together are longer than the server reads (64 KiB)");
            op.responses.responses.entry("431".to_owned()).or_insert_with(|| head.build().into());
        }
    }
}

/// The `Muster-After` header of a read (see `extract::Auth`).
fn after() -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ParameterBuilder::new()
        .name("Muster-After")
        .parameter_in(ParameterIn::Header)
        .description(Some(
            "The last `seq` this client has seen (any response's `Muster-Seq`): on a cluster's node the read waits \
             until the node has applied it (bounded, then 503), so that it is never older than what the client saw.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64))),
        ))
        .build()
}

/// The whole application, ready to serve: the routes, with the state of `default` (a
/// request under `/w/{workspace}` brings its own: see [`super::workspace`]).
pub(crate) fn app(state: AppState) -> Router {
    let (router, _) = routes();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(middleware::from_fn_with_state(state.clone(), every_response))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn not_found(super::state::App(app): super::state::App, Auth(caller): Auth, uri: axum::http::Uri) -> HttpError {
    if let Err(refused) = app.broker.check(&caller) {
        return refused.into();
    }
    ApiError::not_found(format!("no route {}; GET /capabilities lists them", uri.path())).into()
}

async fn method_not_allowed(
    super::state::App(app): super::state::App,
    Auth(caller): Auth,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> HttpError {
    if let Err(refused) = app.broker.check(&caller) {
        return refused.into();
    }
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}; GET /capabilities lists the routes", uri.path()),
    )
    .into()
}

/// What every response gets: counted in `/metrics`, `X-Content-Type-Options: nosniff` (a
/// browser never reads a JSON error or a text body as a script or a page), and `Muster-Seq`:
/// the last event this node had applied when it answered (so at least any write the answer
/// reports), which a client sends back as `Muster-After` so that its next read, through
/// any node of a cluster, is not older than what it has seen.
async fn every_response(
    super::state::App(state): super::state::App,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(req).await;
    state.metrics.http_response(response.status().as_u16());
    let headers = response.headers_mut();
    headers.insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
    headers.insert(SEQ, axum::http::HeaderValue::from(state.broker.head()));
    response
}

/// Response header: see [`every_response`].
const SEQ: &str = "muster-seq";
