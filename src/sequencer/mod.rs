//! The single writer: batch → decide → apply → append → sync → publish → reply.
//!
//! Two threads, one pipeline:
//!
//! - the **writer** (`writer`) owns the model. It takes every command that is waiting,
//!   decides each against the model as the previous ones left it, stamps every event with
//!   the next `seq`, applies it, appends the batch to the log and writes the views (not yet
//!   durable) and hands it to the syncer — then goes on with the next batch at once;
//! - the **syncer** (`syncer`) takes every batch handed over so far, makes them durable
//!   with one sync (group commit), publishes the new snapshot to readers and the events to
//!   the hub, and only then answers the callers of those batches.
//!
//! On a cluster's follower the writer takes, instead of commands, batches another node
//! decided (`Message::Apply`, from the replicated log): it checks that each follows its
//! head, applies and writes it the same way, and the syncer makes it durable and publishes
//! it like any other.
//!
//! So a batch is decided while the previous one is being synced, and no answer — not even
//! a refusal, which may depend on an earlier write of the same pipeline — leaves before
//! everything it depends on is on disk. If a sync fails, its batches and every batch
//! decided after them are answered `unavailable`, their writes are undone, and the writer
//! goes back to the last durable model before it takes another command.
//!
//! The sequencer knows no credentials: the api layer checks the caller before it submits.
//! `idempotency` keeps the outcomes of keyed commands; `disk` refuses writes on a full disk.
//! Readers never wait on the sequencer: they read the latest [`Snapshot`].

mod disk;
mod handles;
mod idempotency;
mod syncer;
mod writer;

pub(crate) use handles::{Applied, IdempotencyKey, Outcome, Reader, Snapshot, WriteError, Writer};
pub(crate) use writer::Sequencer;
