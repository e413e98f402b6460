//! `/health`, `/metrics`, `/capabilities`, `/openapi.json`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_protocol::{Health, TaskStatus};
use serde_json::json;

use super::{AppState, json_response};
use crate::core::rules;

/// Liveness, version, epoch and head.
#[utoipa::path(get, path = "/health", tag = "system", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Response {
    let head = state.reader.snapshot().state.head;
    json_response(
        StatusCode::OK,
        &Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            epoch: state.store.epoch().into(),
            head,
        },
    )
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = state.reader.snapshot();
    let board = &snapshot.state;
    let mut by_status = String::new();
    for status in TaskStatus::ALL {
        let n = board.tasks.values().filter(|t| t.status == status).count();
        by_status.push_str(&format!("muster_tasks{{status=\"{status}\"}} {n}\n"));
    }
    let extra = [
        ("muster_head_seq", "Newest durable event sequence number.", format!("muster_head_seq {}", board.head)),
        ("muster_tasks", "Tasks on the board by status.", by_status.trim_end().to_owned()),
        ("muster_agents", "Agents seen.", format!("muster_agents {}", board.agents.len())),
    ];
    let mut response = state.metrics.render(&extra).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// What this broker can do: every route (generated from the router), the topics, the limits.
#[utoipa::path(get, path = "/capabilities", tag = "system", responses((status = 200, description = "Routes, topics and limits")))]
pub async fn capabilities(State(state): State<AppState>) -> Response {
    let mut routes = Vec::new();
    for (path, item) in &state.api.paths.paths {
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
    json_response(
        StatusCode::OK,
        &json!({
            "name": "muster",
            "version": env!("CARGO_PKG_VERSION"),
            "routes": routes,
            "topics": ["*", "tasks", "task:<id>", "chat", "chat:<channel>", "presence", "inbox:<agent>"],
            "limits": {
                "maxBodyBytes": super::MAX_BODY,
                "maxTitleChars": rules::MAX_TITLE,
                "maxTextBytes": rules::MAX_TEXT,
                "maxNameBytes": rules::MAX_NAME,
                "maxNoteChars": rules::MAX_NOTE,
                "maxTags": rules::MAX_TAGS,
                "maxTagBytes": rules::MAX_TAG,
                "maxBlockers": rules::MAX_BLOCKERS,
                "maxChannelBytes": rules::MAX_CHANNEL,
                "maxWaitSeconds": super::events::MAX_WAIT,
            },
        }),
    )
}

/// This API as OpenAPI 3.1.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI document")))]
pub async fn openapi(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &*state.api)
}
