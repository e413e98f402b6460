//! Why a command was refused.

use muster_protocol::{ErrorCode, ErrorInfo, FileConflict};
use serde::{Deserialize, Serialize};

/// A command the domain refuses, with a message meant for the agent that sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum DomainError {
    /// A field is missing or invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field, as named on the wire (`title`, `blockedBy[1]`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The task (or message) does not exist.
    #[error("{message}")]
    NotFound {
        /// The field that names it, when not the target itself (`blockedBy[0]`, `replyTo`).
        field: Option<String>,
        /// e.g. "task T-9 does not exist".
        message: String,
    },
    /// Another agent holds the task.
    #[error("{message}")]
    Conflict {
        /// The field that conflicts, when the request names it (`blockedBy[0]`, `seq`).
        field: Option<String>,
        /// Names the owner: "T-12 is claimed by link".
        message: String,
    },
    /// Paths overlap another agent's reservation.
    #[error("{message}")]
    FilesConflict {
        /// Names each holder, its pattern and a path both match.
        message: String,
        /// Every overlap.
        conflicts: Vec<FileConflict>,
    },
    /// Checking the request would take more than its budget of matching steps (or, on a
    /// first check with a small budget, more than that: the api then checks again with the
    /// full one).
    #[error("{message}")]
    TooCostly {
        /// The pattern (`patterns[2]`).
        field: String,
        /// Names the limit and what to do instead.
        message: String,
    },
    /// The fencing token is not the current claim's.
    #[error("{message}")]
    StaleClaim {
        /// Says which token is current.
        message: String,
    },
    /// The task waits on unfinished tasks.
    #[error("{message}")]
    Blocked {
        /// Names the blockers.
        message: String,
    },
    /// The status change is not allowed from the current status.
    #[error("{message}")]
    InvalidTransition {
        /// Names both statuses and what to do instead.
        message: String,
    },
}

impl DomainError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::Invalid { field: field.into(), message: message.into() }
    }

    /// A field that names something that does not exist (a task in `blockedBy`).
    pub fn missing(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::NotFound { field: Some(field.into()), message: message.into() }
    }

    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            DomainError::Invalid { .. } => ErrorCode::Invalid,
            DomainError::NotFound { .. } => ErrorCode::NotFound,
            DomainError::Conflict { .. } | DomainError::FilesConflict { .. } | DomainError::TooCostly { .. } => {
                ErrorCode::Conflict
            }
            DomainError::StaleClaim { .. } => ErrorCode::StaleClaim,
            DomainError::Blocked { .. } => ErrorCode::Blocked,
            DomainError::InvalidTransition { .. } => ErrorCode::InvalidTransition,
        }
    }

    /// The wire error.
    pub fn to_info(&self) -> ErrorInfo {
        ErrorInfo {
            code: self.code(),
            message: self.to_string(),
            field: match self {
                DomainError::Invalid { field, .. } | DomainError::TooCostly { field, .. } => Some(field.clone()),
                DomainError::NotFound { field, .. } | DomainError::Conflict { field, .. } => field.clone(),
                _ => None,
            },
            conflicts: match self {
                DomainError::FilesConflict { conflicts, .. } => conflicts.clone(),
                _ => Vec::new(),
            },
        }
    }
}
