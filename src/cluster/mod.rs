//! The cluster (`muster serve --cluster nats://…`): several nodes share one history,
//! replicated by NATS JetStream, so that losing a node loses no acknowledged write.
//!
//! - **The log is a JetStream stream** (`<name>-log`, `num_replicas` copies), one message
//!   per batch ([`wire`]). Every node applies the stream to its own store, in order, and so
//!   holds the same log (`seq` for `seq`), the same views and the same idempotency records:
//!   resume by `seq`, SSE and long-poll work the same on any node.
//! - **One writer at a time, fenced** ([`log`]): the node that holds the lease (a key of
//!   the `<name>-leader` KV bucket whose `max_age` is the lease) runs the usual sequencer and
//!   publishes each batch with `Nats-Expected-Last-Sequence` set to the message it decided
//!   after. A write is acknowledged once JetStream acknowledged its batch. A deposed or
//!   paused leader's publish is refused and rolled back; it then follows like any node.
//! - **Followers** ([`node`]) apply the stream, forward writes to the leader over NATS
//!   request/reply (the caller already checked and bound here; sent again until answered,
//!   run once: [`forwards`]) and serve reads, sessions
//!   and the dashboard themselves; before a read they catch up to the leader's head, and
//!   before answering a forwarded write to its `seq`, so a client sees its writes whichever
//!   node it reads from.
//!
//! - **Snapshots** ([`snapshots`]): now and then a follower uploads its whole store to the
//!   `<name>-snapshots` Object Store bucket; the stream is trimmed below the older of the
//!   two kept (and below every running node), and a node on an empty data dir, or one the
//!   trimmed log left behind, starts from the newest.
//! - **Tokens are the cluster's** ([`tokens`]): one list in a KV bucket, mirrored into every
//!   node's `tokens.json`; `muster token add` on any node's host reaches every node.
//!
//! The embedded single node on sled stays the default: without `--cluster` none of this
//! runs.

mod follow;
mod forwards;
mod join;
mod lead;
mod life;
mod log;
mod nats;
mod node;
mod reads;
mod snapshots;
mod tokens;
mod trust;
mod wire;

pub(crate) use join::{JoinError, Joined, join};
pub(crate) use node::Cluster;
