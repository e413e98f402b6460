//! The durable store: the event log ([`Log`]), the materialized views, chat history and
//! idempotency records, one [`Store`] opened together. What only grows (the log's batches,
//! chat messages) is in append-only segment files; everything else, and the positions of
//! those records, in sled.
//!
//! - `db`: opening (and reopening after an I/O error), the trees, checkpoints (the chat
//!   files, then sled's flush and `fdatasync` of its files; a commit syncs only the log's);
//! - `error`: [`StoreError`];
//! - `segments`: the append-only segment files, records read back by position;
//! - `upgrade`: moving an older dir to this layout, once, and the stub that keeps an older
//!   muster from opening it;
//! - `log`: the event log and the [`Log`] seam the sequencer appends through;
//! - `views`: tasks, agents, cursors, channels, messages by channel and recipient,
//!   idempotency records; loading them at startup;
//! - `chat_index`: the positions of chat messages by channel and by recipient, in chunks;
//! - `chat`: reading channels and inboxes back by page;
//! - `archive`: reading tasks back (those the model let go of), by id and by page;
//! - `snapshot`: the whole store as one stream of bytes, and a data dir made from one (a
//!   cluster's snapshots).
//!
//! Only after the log's `sync` returns may a write be acknowledged: its record holds
//! everything the batch changed, and what sled and the chat files lose in a crash is rebuilt
//! from the records after the last checkpoint (`DiskLog::recover`). All methods block;
//! async callers run them on the blocking pool.

mod archive;
mod chat;
mod chat_index;
mod db;
mod error;
mod log;
mod segments;
mod snapshot;
mod upgrade;
mod views;

use std::path::Path;
use std::sync::Arc;

pub(crate) use archive::Archive;
pub(crate) use chat::History;
pub(crate) use db::{Db, StoreError};
pub(crate) use error::Replication;
pub(crate) use log::{Carried, CommandEnd, DiskLog, Log, decode_batch, encode_batch};
pub(crate) use snapshot::{export, import};
pub(crate) use views::{ClusterPosition, Views};

/// Everything a data dir holds, opened together.
pub(crate) struct Store {
    /// The database itself.
    pub(crate) db: Arc<Db>,
    /// The event log.
    pub(crate) log: Arc<DiskLog>,
    /// The views and idempotency records.
    pub(crate) views: Arc<Views>,
    /// Chat history by channel and recipient.
    pub(crate) history: History,
    /// Every task, as stored.
    pub(crate) archive: Archive,
}

impl Store {
    /// Opens (or creates) the store in `dir`, with a page cache of `cache_mb` MiB. Load the
    /// model with `views.load(&log)`.
    pub(crate) fn open(dir: &Path, cache_mb: u64) -> Result<Store, StoreError> {
        crate::config::create_data_dir(dir)?;
        upgrade::finish_swap(dir)?;
        upgrade::out_of_root(dir, cache_mb << 20)?;
        let mut db = Db::open(dir, cache_mb << 20)?;
        if db.opened_at_schema == 5 {
            drop(db);
            upgrade::rechunk(dir, cache_mb << 20)?;
            db = Db::open(dir, cache_mb << 20)?;
        }
        let db = Arc::new(db);
        upgrade::stub_root(dir)?;
        Ok(Store {
            log: Arc::new(DiskLog::new(Arc::clone(&db))),
            views: Arc::new(Views::new(Arc::clone(&db))),
            history: History::new(Arc::clone(&db)),
            archive: Archive::new(Arc::clone(&db)),
            db,
        })
    }
}

/// Moves the data dir `dir` aside, to `<dir>.diverged-<unix time>`, and makes an empty one
/// in its place with the files named in `keep` (those that are not the store's, such as the
/// token file) copied over; returns where it went. A cluster node whose history diverged
/// from the cluster's starts afresh this way, keeping the old one for inspection.
pub(crate) fn set_aside(dir: &Path, keep: &[&str]) -> std::io::Result<std::path::PathBuf> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut aside = dir.as_os_str().to_owned();
    aside.push(format!(".diverged-{}", now.as_secs()));
    let aside = std::path::PathBuf::from(aside);
    std::fs::rename(dir, &aside)?;
    crate::config::create_data_dir(dir)?;
    for name in keep {
        let kept = aside.join(name);
        if kept.exists() {
            std::fs::copy(&kept, dir.join(name))?;
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests;
