//! The route table: one axum router for every route, registered through `utoipa-axum` so
//! that `/openapi.json` and `/capabilities` are generated from the table that serves the
//! requests. [`app`] builds the whole application without binding.

use axum::extract::DefaultBodyLimit;
use axum::{Router, middleware};
use muster_protocol::ErrorCode;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Auth, MAX_BODY};
use super::http::{chat, events, files, presence, system, tasks};
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
    // Referred to by a query parameter, which does not register the types it names.
    components(schemas(muster_protocol::ws::Order))
)]
struct ApiDoc;

/// The routes and their OpenAPI description, from one table.
pub(crate) fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tasks::create, tasks::list))
        .routes(routes!(tasks::next, tasks::claim_next))
        .routes(routes!(tasks::get, tasks::update))
        .routes(routes!(tasks::claim))
        .routes(routes!(tasks::release))
        .routes(routes!(tasks::complete))
        .routes(routes!(presence::list))
        .routes(routes!(presence::get, presence::heartbeat))
        .routes(routes!(chat::post, chat::list))
        .routes(routes!(chat::channels))
        .routes(routes!(chat::inbox))
        .routes(routes!(chat::ack))
        .routes(routes!(files::list))
        .routes(routes!(files::reserve))
        .routes(routes!(files::release))
        .routes(routes!(files::who))
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
        .split_for_parts()
}

/// The whole application, ready to serve.
pub(crate) fn app(state: AppState) -> Router {
    let (router, _) = routes();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(middleware::from_fn_with_state(state.clone(), count_responses))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn not_found(
    axum::extract::State(app): axum::extract::State<AppState>,
    Auth(caller): Auth,
    uri: axum::http::Uri,
) -> HttpError {
    if let Err(refused) = app.broker.check(&caller) {
        return refused.into();
    }
    ApiError::not_found(format!("no route {}; GET /capabilities lists them", uri.path())).into()
}

async fn method_not_allowed(
    axum::extract::State(app): axum::extract::State<AppState>,
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

async fn count_responses(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let response = next.run(req).await;
    state.metrics.http_response(response.status().as_u16());
    response
}
