//! The domain: every rule of the task board, chat and presence, as pure functions.
//!
//! `decide(&Model, &Policy, &Command, now)` checks a command against the model and returns
//! the events it causes (and the reply), or a [`DomainError`]; `apply(&mut Model, &Event)`
//! folds one event into the model. Nothing here does IO, reads the clock or knows about
//! tokio, sockets or sled: the sequencer feeds commands in and the time is an argument.
//! Replaying the event log from an empty model with `apply` rebuilds the same model.
//!
//! - `command`: the commands, their replies, and `decide`, which hands each to its rules;
//! - `tasks`, `chat`, `presence`, `files`: the rules of each domain (`impl Decider` blocks);
//! - `reservations`: the file reservations held, with their compiled patterns and indexes;
//!   `reserve`: a reserve as the writer decides it, with what its check on a snapshot found;
//! - `policy`: presence thresholds, grace and lease; `rules`: input limits and names;
//! - `model`: the model and `apply`; `decider`: one decision in progress.

mod chat;
mod command;
mod decider;
mod error;
mod files;
mod model;
mod policy;
mod presence;
mod reservations;
mod reserve;
pub mod rules;
mod tasks;

pub use command::{Actor, Command, Decision, Named, Reply, decide};
pub use error::DomainError;
pub use files::{holders, list as list_reservations};
pub use model::{Channel, FINISHED_KEPT, Model, apply};
pub use policy::Policy;
pub use presence::presence;
pub use reserve::{Precheck, Reserve};
pub use rules::{parse_mentions, validate_agent, validate_channel};
pub use tasks::next_for;

#[cfg(test)]
mod tests;
