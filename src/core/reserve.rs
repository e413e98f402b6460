//! [`Reserve`]: a reserve as the writer decides it, with what a check of it on a snapshot
//! found before ([`Precheck`]). Its own module so that the rules (`files`), the command
//! list and the decider each depend on it without depending on one another.

use muster_protocol::{ReserveFiles, Seq};

use super::error::DomainError;

/// A reserve, as the writer decides it: the request, and what a check of it made on a
/// snapshot before (off the writer) found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Reserve {
    /// The request.
    pub files: ReserveFiles,
    /// Not sent on: a command forwarded to a cluster's leader is checked there in full.
    #[serde(skip)]
    pub precheck: Precheck,
    /// The steps its checks may take (compiling its patterns included); `None`:
    /// `MAX_MATCH_STEPS`. Not sent on either.
    #[serde(skip)]
    pub steps: Option<u64>,
}

/// What deciding a reserve on a snapshot found, so that the writer does only what the
/// snapshot could not: the overlap checks are the costly part of a reserve, and the writer
/// holds every other write while it decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Precheck {
    /// No check was made: the writer checks against every reservation.
    #[default]
    None,
    /// No overlap with any reservation held at `seq` `at`: the writer checks only those
    /// put after it.
    Clear {
        /// The snapshot's head.
        at: Seq,
    },
    /// Refused on the snapshot (an overlap, checks over their budget, anything else). The
    /// refusal goes through the writer only with an `Idempotency-Key`, so that a retry
    /// whose first attempt succeeded is answered with that success.
    Refused(DomainError),
}

impl From<ReserveFiles> for Reserve {
    fn from(files: ReserveFiles) -> Reserve {
        Reserve { files, precheck: Precheck::None, steps: None }
    }
}
