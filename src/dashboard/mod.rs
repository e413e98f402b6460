//! The dashboard: static files embedded in the binary, so `cargo build` needs no Node step.
//!
//! `/dashboard` is the page, `/dashboard/app.js` and `/dashboard/style.css` its code and
//! looks, and `/client.js` Muster's JavaScript client (`clients/js/muster.js`), which the
//! page imports and any other page or Node script may too. The page talks to the broker only
//! through that client, over the WebSocket of its own origin, with the same operations as
//! every agent. The HTML is served with a Content-Security-Policy that allows nothing but
//! this origin's scripts, styles and connections.

use axum::extract::OriginalUri;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX: &str = include_str!("index.html");
const APP: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");
const CLIENT: &str = include_str!("../../clients/js/muster.js");

/// Scripts, styles and connections from this origin only; no inline script, no framing, no
/// plugins. `connect-src 'self'` covers the page's own `ws://` origin (CSP level 3).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Embedded in the binary: a new broker may bring new files, so browsers revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The dashboard page.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard", responses((status = 200, description = "The dashboard (HTML)", content_type = "text/html")))]
pub(crate) async fn page() -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The dashboard's code.
#[utoipa::path(get, path = "/dashboard/app.js", tag = "dashboard", responses((status = 200, description = "JavaScript module", content_type = "text/javascript")))]
pub(crate) async fn app() -> Response {
    asset("text/javascript; charset=utf-8", APP)
}

/// The dashboard's style sheet.
#[utoipa::path(get, path = "/dashboard/style.css", tag = "dashboard", responses((status = 200, description = "CSS", content_type = "text/css")))]
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// Muster's JavaScript client, an ES module (`clients/js/muster.js`).
#[utoipa::path(get, path = "/client.js", tag = "dashboard", responses((status = 200, description = "JavaScript module", content_type = "text/javascript")))]
pub(crate) async fn client() -> Response {
    asset("text/javascript; charset=utf-8", CLIENT)
}

/// `/` leads to the dashboard (`/w/{workspace}/` to that workspace's).
#[utoipa::path(get, path = "/", tag = "dashboard", responses((status = 303, description = "See /dashboard")))]
pub(crate) async fn root(OriginalUri(asked): OriginalUri) -> Redirect {
    Redirect::to(&format!("{}/dashboard", asked.path().trim_end_matches('/')))
}
