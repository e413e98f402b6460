//! The api layer: every operation of the broker once, for every transport.
//!
//! One function per operation, grouped by domain (`api::tasks::claim`, `api::chat::post`).
//! Each takes the [`Broker`], the [`Caller`] and a typed request from `muster-protocol`,
//! checks who may do what (tokens, acting as one's own agent), submits writes to the
//! sequencer or reads the latest snapshot or the store, and answers with a protocol shape
//! ([`Reply`]) or an [`ApiError`]. The transports (HTTP, WebSocket, SSE, long-poll) only
//! translate: they never see the writer, the model or the store.
//!
//! - `broker`: the `Broker`, the caller check before every read and the one way to the
//!   writer; `caller`: who is asking, and binding a command to its caller;
//! - `tasks`, `chat`, `presence`, `files`, `events`, `system`: the operations; `board`:
//!   the default page of `GET /tasks`, cached until a task changes;
//! - `feed`: subscribe → replay → live, for every transport that follows events;
//!   `session`: a WebSocket session's hello and goodbye;
//! - `timers`: the broker's own writes (start-up, ticks, retention);
//! - `json`, `error`, `page`: reply bodies, the one error type, and the pages of lists
//!   (`limit` and an opaque `cursor`); `matcher`: the low-priority threads that check file
//!   patterns.
//!
//! (Free functions, not `impl Broker` blocks in each file: a type's impls count as its
//! module's dependencies, and a Broker impl per domain file would make every one of them a
//! cycle with `broker`. `scripts/check-modules.sh` keeps the module graph acyclic.)

mod board;
mod broker;
mod caller;
pub(crate) mod chat;
mod error;
pub(crate) mod events;
pub(crate) mod feed;
pub(crate) mod files;
mod json;
mod matcher;
mod page;
pub(crate) mod presence;
pub(crate) mod session;
pub(crate) mod system;
pub(crate) mod tasks;
pub(crate) mod timers;

pub(crate) use crate::sequencer::IdempotencyKey;
pub(crate) use broker::{Broker, Common, Written};
pub(crate) use caller::Caller;
pub(crate) use error::ApiError;
pub(crate) use json::Reply;
pub(crate) use page::SIZES as PAGE_SIZES;
