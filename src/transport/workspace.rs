//! `/w/{workspace}/…`: every route again for each workspace. The prefix is taken off before
//! the routing and the workspace's state put in the request's extensions, where every
//! handler takes it from (`state::App`); a route without it is `default`'s.

use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::extract::Auth;
use super::response::HttpError;
use super::state::AppState;
use crate::api::ApiError;
use crate::workspaces::unknown;

/// The prefix of a workspace's routes.
pub(crate) const PREFIX: &str = "/w/";

/// Hands a `/w/{workspace}/…` request to that workspace: the rest of its path is routed as
/// `default`'s are, and checked there. A workspace that does not exist is a 404 naming it,
/// once the caller is known (with tokens on, a caller without a valid token learns nothing
/// of the workspaces).
pub(crate) async fn route(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(rest) = req.uri().path().strip_prefix(PREFIX) else {
        return next.run(req).await;
    };
    let (name, path) = rest.find('/').map_or((rest, "/"), |slash| rest.split_at(slash));
    let (name, path) = (name.to_owned(), path.to_owned());
    let (mut parts, body) = req.into_parts();
    let Some(broker) = state.workspaces.get(&name) else {
        let refused = match Auth::from_request_parts(&mut parts, &state).await {
            Ok(Auth(caller)) => state.broker.check_token(&caller).err().unwrap_or_else(|| unknown(&name)),
            Err(refused) => return refused.into_response(),
        };
        return HttpError::from(refused).into_response();
    };
    // What was asked, for a handler that needs the whole path (axum keeps one it finds).
    parts.extensions.insert(OriginalUri(parts.uri.clone()));
    let uri = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    match uri.parse::<Uri>() {
        Ok(uri) => parts.uri = uri,
        Err(e) => return HttpError::from(ApiError::invalid("path", e.to_string())).into_response(),
    }
    parts.extensions.insert(state.with_broker(broker));
    next.run(Request::from_parts(parts, body)).await
}
