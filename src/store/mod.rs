//! The durable store, in sled: the event log ([`Log`]), the materialized views, chat
//! history and idempotency records.
//!
//! - `db`: opening (and reopening after an I/O error), the trees, making writes durable
//!   (sled flush, then `fdatasync` of its files);
//! - `log`: the event log and the [`Log`] seam the sequencer appends through;
//! - `views`: tasks, agents, cursors, channels, messages by channel and recipient,
//!   idempotency records; loading them at startup;
//! - `chat`: reading channels and inboxes back by page.
//!
//! Only after the log's `sync` returns may a write be acknowledged. All methods block;
//! async callers run them on the blocking pool.

mod chat;
mod db;
mod log;
mod views;

pub(crate) use db::{Store, StoreError};
pub(crate) use log::Log;

#[cfg(test)]
mod tests;
