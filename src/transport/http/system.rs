//! `/health`, `/metrics`, `/capabilities`, `/openapi.json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_protocol::Health;
use serde_json::json;

use crate::api::{self, ApiError};
use crate::transport::extract::{Auth, MAX_BODY};
use crate::transport::response::{HttpError, ok};
use crate::transport::state::App;

/// Liveness, version, epoch and head: 503 (same body) while a cluster has had no leader
/// for longer than two leases.
#[utoipa::path(get, path = "/health", tag = "system", responses(
    (status = 200, body = Health),
    (status = 503, body = Health, description = "A cluster node whose cluster has had no leader for longer than two leases"),
))]
pub(crate) async fn health(App(app): App) -> Response {
    let health = api::system::health(&app.broker).await;
    let healthy = health.status == "ok";
    let mut response = ok(health);
    if !healthy {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
    }
    response
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(App(app): App, Auth(caller): Auth) -> Result<Response, HttpError> {
    let mut response = api::system::metrics(&app.broker, &caller).await?.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(response)
}

/// What this broker can do: every route (generated from the router), the topics, the limits.
#[utoipa::path(get, path = "/capabilities", tag = "system", responses((status = 200, description = "Routes, topics and limits")))]
pub(crate) async fn capabilities(App(app): App, Auth(caller): Auth) -> Result<Response, HttpError> {
    app.broker.check(&caller)?;
    let mut routes = Vec::new();
    for (path, item) in &app.api.paths.paths {
        let methods = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, op) in methods {
            if let Some(op) = op {
                routes.push(json!({
                    "method": method,
                    "path": path,
                    "summary": op.summary.clone().or_else(|| op.description.clone()).unwrap_or_default(),
                }));
            }
        }
    }
    let body = api::system::capabilities(routes, MAX_BODY);
    Ok(json_value(&body))
}

/// This API as OpenAPI 3.1.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI document")))]
pub(crate) async fn openapi(App(app): App, Auth(caller): Auth) -> Result<Response, HttpError> {
    app.broker.check(&caller)?;
    Ok(json_value(&*app.api))
}

fn json_value(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => crate::transport::response::json(StatusCode::OK, body.into()),
        Err(e) => HttpError(ApiError::internal(e.to_string())).into_response(),
    }
}
