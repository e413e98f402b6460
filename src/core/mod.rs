//! The domain: every rule of the task board, chat and presence, as pure functions.
//!
//! `decide(&State, &Policy, &Command, now)` checks a command against the state and returns
//! the events it causes (and the reply), or a [`DomainError`]; `apply(&mut State, &Event)`
//! folds one event into the state. Nothing here does IO, reads the clock or knows about
//! tokio, sockets or sled: the sequencer feeds commands in and the time is an argument.
//! Replaying the event log from an empty state with `apply` rebuilds the same state.

mod decide;
mod error;
mod presence;
pub mod rules;
mod state;

pub use decide::{Command, Decision, Reply, decide, next_for};
pub use error::DomainError;
pub use presence::{Policy, last_seen_text, presence};
pub use rules::{parse_mentions, parse_topic, validate_agent, validate_channel};
pub use state::{Channel, State, actor, apply};

#[cfg(test)]
mod tests;
