//! Answers: an operation's reply as a JSON response, and an [`ApiError`] ([`HttpError`]) as
//! `{"error": {"code", "message", "field"?}}` with the status that goes with its code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use muster_protocol::{ErrorBody, ErrorCode};

use crate::api::{ApiError, Reply, Written};

/// The HTTP status of an error code.
pub(crate) fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Invalid => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Conflict | ErrorCode::StaleClaim | ErrorCode::Blocked => StatusCode::CONFLICT,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::InvalidTransition | ErrorCode::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An operation's error as an HTTP response.
#[derive(Debug)]
pub(crate) struct HttpError(pub(crate) ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let HttpError(ApiError(error)) = self;
        let status = status(error.code);
        if status.is_server_error() {
            tracing::warn!(code = error.code.as_str(), message = %error.message, "request failed");
        }
        let body = serde_json::to_vec(&ErrorBody { error }).unwrap_or_default();
        let mut response = json(status, Bytes::from(body));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        response
    }
}

/// A JSON response from bytes already serialized.
pub(crate) fn json(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A read's reply, `200 OK`.
pub(crate) fn ok(reply: impl Reply) -> Response {
    json(StatusCode::OK, reply.to_json())
}

/// A write's reply, with `Idempotent-Replayed: true` when it was answered from the record
/// of an earlier request with the same `Idempotency-Key`.
pub(crate) fn written<T: Reply>(status: StatusCode, written: Written<T>) -> Response {
    let mut response = json(status, written.value.to_json());
    if written.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
