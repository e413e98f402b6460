//! # muster-protocol — the wire types of Muster, defined once
//!
//! Every type a client sends or receives: tasks, chat messages, presence, events, request
//! bodies and error bodies. The broker, the Rust client and the CLI all use these types;
//! other languages are checked against the JSON they produce.
//!
//! Field names are camelCase on the wire (`blockedBy`, `lastSeenAt`), as in the seed article.

mod files;
pub mod glob;
pub mod grammar;
mod ids;
mod model;
pub mod names;
mod requests;
mod responses;
mod topic;
pub mod ws;

pub use files::*;
pub use ids::{MessageId, ParseIdError, ReservationId, TaskId};
pub use model::*;
pub use requests::*;
pub use responses::*;
pub use topic::{ParseTopicError, Topic, parse_topics, split_topics};
