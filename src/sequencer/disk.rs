//! The disk guard: writes are refused while the data dir's disk is nearly full, so that
//! sled never runs out of space mid-write (its I/O errors are sticky until it is reopened),
//! and what a caller is told when storing failed anyway.

use std::path::{Path, PathBuf};

use super::handles::WriteError;
use crate::core::Command;
use crate::store::StoreError;

/// Writes are refused while the data dir's disk has less than `min_free` bytes free.
/// Presence and lease bookkeeping still pass: they are small, and the margin is theirs.
pub(super) struct DiskFloor {
    pub(super) dir: PathBuf,
    pub(super) min_free: u64,
}

impl DiskFloor {
    /// `Some(refusal)` when free space is below the floor.
    pub(super) fn check(&self) -> Option<WriteError> {
        if self.min_free == 0 {
            return None;
        }
        // If the file system cannot say, do not refuse: sled's own errors still surface.
        let free = fs2::available_space(&self.dir).ok()?;
        (free < self.min_free).then(|| {
            WriteError::DiskFull(format!(
                "disk nearly full: {} MiB free where {} is, below the {} MiB floor (--min-free-mb); \
                 free space and retry (reads still work)",
                free >> 20,
                self.dir.display(),
                self.min_free >> 20
            ))
        })
    }
}

/// Commands that pass the disk floor: presence and leases, which must keep working.
pub(super) fn essential(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Tick
            | Command::ResetConnections
            | Command::ResetNode { .. }
            | Command::Connect { .. }
            | Command::Disconnect { .. }
            | Command::Heartbeat { .. }
    )
}

/// What a caller is told when a write was not stored.
pub(super) fn unavailable(error: &dyn std::fmt::Display) -> WriteError {
    WriteError::Unavailable(format!("write not stored: {error}; retry later"))
}

/// What a caller is told when storing its batch failed.
pub(super) fn store_failed(error: &StoreError, dir: &Path) -> WriteError {
    if let StoreError::Replication(replication) = error {
        // Already in the caller's terms, and not always "not stored".
        WriteError::Unavailable(replication.to_string())
    } else if error.is_disk_full() {
        WriteError::DiskFull(format!(
            "write not stored: the disk holding {} is full; free space there and retry (reads still work)",
            dir.display()
        ))
    } else {
        unavailable(error)
    }
}
