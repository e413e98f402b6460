//! `ApiError`: every failure of the HTTP API as `{"error": {"code", "message", "field"?}}`
//! with the status that goes with its code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_protocol::{ErrorBody, ErrorCode, ErrorInfo};

use crate::core::DomainError;
use crate::sequencer::WriteError;
use crate::store::StoreError;

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError(pub ErrorInfo);

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(ErrorInfo { code, message: message.into(), field: None })
    }

    /// `400 invalid`, naming the field (or query parameter, or header) at fault.
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> ApiError {
        let field = field.into();
        ApiError(ErrorInfo { code: ErrorCode::Invalid, message: format!("{field}: {message}"), field: Some(field) })
    }

    /// `404 not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// The HTTP status of an error code.
    pub fn status(code: ErrorCode) -> StatusCode {
        match code {
            ErrorCode::Invalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict | ErrorCode::StaleClaim | ErrorCode::Blocked => StatusCode::CONFLICT,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidTransition | ErrorCode::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = ApiError::status(self.0.code);
        if status.is_server_error() {
            tracing::warn!(code = self.0.code.as_str(), message = %self.0.message, "request failed");
        }
        let mut response = super::json_response(status, &ErrorBody { error: self.0 });
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        ApiError(e.to_info())
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        match e {
            WriteError::Domain(e) => e.into(),
            WriteError::IdempotencyMismatch(_) => ApiError::new(ErrorCode::IdempotencyMismatch, e.to_string()),
            WriteError::Unavailable(message) => ApiError::new(ErrorCode::Unavailable, message),
            WriteError::DiskFull(message) => ApiError::new(ErrorCode::InsufficientStorage, message),
            WriteError::Forbidden(message) => ApiError::new(ErrorCode::Forbidden, message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, e.to_string())
    }
}
