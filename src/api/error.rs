//! [`ApiError`]: every refusal and failure of an operation, whatever the transport: a wire
//! error (`code`, `message`, `field`). The HTTP transport turns the code into a status, the
//! WebSocket into an error reply.

use muster_protocol::{ErrorCode, ErrorInfo};

use crate::core::DomainError;
use crate::sequencer::WriteError;
use crate::store::StoreError;

/// An operation's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError(pub(crate) ErrorInfo);

impl ApiError {
    /// An error with a code and a message.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(ErrorInfo { code, message: message.into(), field: None, conflicts: Vec::new() })
    }

    /// `invalid`, naming the field (or query parameter, or header) at fault.
    pub(crate) fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> ApiError {
        let field = field.into();
        let message = format!("{field}: {message}");
        ApiError(ErrorInfo { code: ErrorCode::Invalid, message, field: Some(field), conflicts: Vec::new() })
    }

    /// `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// `unauthorized`, naming the field that should carry the token.
    pub(crate) fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError(ErrorInfo {
            code: ErrorCode::Unauthorized,
            message: message.into(),
            field: Some("token".into()),
            conflicts: Vec::new(),
        })
    }

    /// `forbidden`: acting as an agent the caller's token does not belong to.
    pub(crate) fn forbidden(field: &str, message: impl Into<String>) -> ApiError {
        ApiError(ErrorInfo {
            code: ErrorCode::Forbidden,
            message: message.into(),
            field: Some(field.to_owned()),
            conflicts: Vec::new(),
        })
    }

    /// `internal`: a bug.
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
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
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, e.to_string())
    }
}
