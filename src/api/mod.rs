//! The api layer: every operation of the broker once, for every transport.
//!
//! [`Broker`] has one method per operation. It takes the [`Caller`] and a typed request from
//! `muster-protocol`, checks who may do what (tokens, acting as one's own agent), submits
//! writes to the sequencer and reads the latest snapshot or the store, and answers with a
//! protocol shape ([`Reply`]) or an [`ApiError`]. The transports (HTTP, WebSocket, SSE,
//! long-poll) only translate: they never see the writer, the model or the store.
//!
//! - `broker`: the `Broker`, the caller check before every read and the one way to the
//!   writer; `caller`: who is asking, and binding a command to its caller;
//! - `tasks`, `chat`, `presence`, `events`, `system`: the operations;
//! - `feed`: subscribe → replay → live, for every transport that follows events;
//! - `timers`: the broker's own writes (start-up, ticks, retention);
//! - `json`, `error`: reply bodies and the one error type.

mod broker;
mod caller;
mod chat;
mod error;
mod events;
mod feed;
mod json;
mod presence;
mod session;
mod system;
mod tasks;
mod timers;

pub(crate) use crate::sequencer::IdempotencyKey;
pub(crate) use broker::{Broker, Limits, Written};
pub(crate) use caller::Caller;
pub(crate) use error::ApiError;
pub(crate) use events::{MAX_WAIT, Poll};
pub(crate) use feed::{Begin, Ended, Feed};
pub(crate) use json::Reply;
pub(crate) use session::{Opened, Session};
pub(crate) use tasks::Board;
