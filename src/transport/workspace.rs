//! `/w/{workspace}/…`: every route again for each workspace. The prefix is taken off before
//! the routing and the workspace's state put in the request's extensions, where every
//! handler takes it from (`state::App`); a route without it is `default`'s, routed at once.

use axum::Router;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::{Request, Uri};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use super::extract::Auth;
use super::response::HttpError;
use super::state::AppState;
use crate::api::ApiError;
use crate::workspaces::unknown;

/// The prefix of a workspace's routes.
pub(crate) const PREFIX: &str = "/w/";

/// The application: the routes, and before them the workspace a request is in.
#[derive(Clone)]
pub(crate) struct Dispatch {
    routes: Router,
    /// `default`'s state.
    state: AppState,
}

impl Dispatch {
    pub(crate) fn new(routes: Router, state: AppState) -> Dispatch {
        Dispatch { routes, state }
    }

    /// Answers `req`: a route of `default`'s at once; a `/w/{workspace}/…` one in that
    /// workspace (see [`Dispatch::route`]).
    pub(crate) async fn serve<B>(self, req: Request<B>) -> Response
    where
        B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let req = match req.uri().path().starts_with(PREFIX) {
            true => match self.route(req).await {
                Ok(req) => req,
                Err(refused) => return refused,
            },
            false => req,
        };
        match self.routes.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// A `/w/{workspace}/…` request, made the rest of its path in that workspace: the prefix
    /// taken off and the workspace's state put in its extensions, where every handler takes
    /// it from. A workspace that does not exist is a 404 naming it, once the caller is known
    /// (with tokens on, a caller without a valid token learns nothing of the workspaces).
    async fn route<B>(&self, req: Request<B>) -> Result<Request<B>, Response> {
        let state = &self.state;
        let rest = &req.uri().path()[PREFIX.len()..];
        let (name, path) = rest.find('/').map_or((rest, "/"), |slash| rest.split_at(slash));
        let (name, path) = (name.to_owned(), path.to_owned());
        let (mut parts, body) = req.into_parts();
        let Some(broker) = state.workspaces.get(&name) else {
            let refused = match Auth::from_request_parts(&mut parts, state).await {
                Ok(Auth(caller)) => state.broker.check_token(&caller).err().unwrap_or_else(|| unknown(&name)),
                Err(refused) => return Err(refused.into_response()),
            };
            return Err(HttpError::from(refused).into_response());
        };
        // What was asked, for a handler that needs the whole path (axum keeps one it finds).
        parts.extensions.insert(OriginalUri(parts.uri.clone()));
        let uri = match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        match uri.parse::<Uri>() {
            Ok(uri) => parts.uri = uri,
            Err(e) => return Err(HttpError::from(ApiError::invalid("path", e.to_string())).into_response()),
        }
        parts.extensions.insert(state.with_broker(broker));
        Ok(Request::from_parts(parts, body))
    }
}
