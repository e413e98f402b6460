//! [`StoreError`]: what can go wrong in the store, from sled, the files, or the data.

use std::path::PathBuf;

use muster_protocol::Seq;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Another process holds the data dir.
    #[error("data dir {0} is in use by another muster process (stop it, or pass --data-dir to use another directory)")]
    Locked(PathBuf),
    /// The data dir was written by a newer Muster.
    #[error(
        "data dir {dir} has schema version {found}, newer than this muster understands ({understood}); upgrade muster"
    )]
    Schema {
        /// The data dir.
        dir: PathBuf,
        /// The version found.
        found: u64,
        /// The newest this build reads (`db::SCHEMA`).
        understood: u64,
    },
    /// sled failed.
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A file operation failed.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The database is being reopened after an I/O error (see [`super::Db::reopen`]).
    #[error("storage is being reopened after an I/O error; retry")]
    Reopening,
    /// A batch was appended out of order: the writer's head is not the log's.
    #[error("log append refused: the batch starts at {got}, the log expects {expected}")]
    OutOfOrder {
        /// The `seq` the log expected next.
        expected: Seq,
        /// The `seq` the batch starts at.
        got: Seq,
    },
    /// The replicated log (a cluster's) did not take or confirm a batch.
    #[error("{0}")]
    Replication(#[from] Replication),
    /// A stored value does not decode: the data dir is damaged.
    #[error("corrupt value in tree {tree}: {error}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// The decode error.
        error: String,
    },
}

impl StoreError {
    /// Whether the disk is full (`ENOSPC`), rather than broken.
    pub(crate) fn is_disk_full(&self) -> bool {
        let io = match self {
            StoreError::Sled(sled::Error::Io(e)) | StoreError::Io(e) => e,
            _ => return false,
        };
        io.kind() == std::io::ErrorKind::StorageFull
    }
}

/// Why a cluster's replicated log did not take a batch, told in the terms of the callers
/// whose writes it held (never a NATS code: that is the detail, for the log).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Replication {
    /// Not stored: this node does not lead (any more), or the stream refused the batch
    /// because another node appended since (it leads now).
    #[error(
        "the cluster's leader changed while your write was in flight; it was not stored; retry (with the same \
         Idempotency-Key if you sent one)"
    )]
    NotStored {
        /// What happened, for the operator.
        detail: String,
    },
    /// The stream did not confirm the batch in time: it may hold it.
    #[error(
        "outcome unknown: the cluster did not confirm your write in time, so it may or may not have been stored; \
         retry with the same Idempotency-Key"
    )]
    Unknown {
        /// What happened, for the operator.
        detail: String,
    },
}
