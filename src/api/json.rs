//! Reply bodies: every operation answers with a protocol shape (`TaskEnvelope`,
//! `MessageList`, ...) that is the HTTP response body and the WebSocket reply's `data`.
//! Lists read from the store are assembled from the JSON already stored ([`Json`]): a
//! copy, not a re-serialization.

use std::marker::PhantomData;

use bytes::Bytes;
use serde::Serialize;

/// A reply body: a protocol shape, as JSON text.
pub(crate) trait Reply {
    /// The protocol shape it is (`muster_protocol::ws::reply` names each operation's).
    type Body;
    /// The JSON text.
    fn to_json(&self) -> Bytes;
}

/// A body already serialized, of the shape `T` (e.g. `Json<MessageList>`).
#[derive(Debug, Clone)]
pub(crate) struct Json<T> {
    bytes: Bytes,
    shape: PhantomData<fn() -> T>,
}

impl<T> Json<T> {
    pub(super) fn from_bytes(bytes: Bytes) -> Json<T> {
        Json { bytes, shape: PhantomData }
    }

    /// Serializes `value` (which has the wire shape of `T`, e.g. borrowed tasks for a
    /// `TaskList`).
    pub(super) fn of(value: &impl Serialize) -> Json<T> {
        Json::from_bytes(to_json(value))
    }

    /// The JSON text.
    pub(super) fn bytes(self) -> Bytes {
        self.bytes
    }
}

impl<T> Reply for Json<T> {
    type Body = T;
    fn to_json(&self) -> Bytes {
        self.bytes.clone()
    }
}

fn to_json(value: &impl Serialize) -> Bytes {
    // Our wire types serialize infallibly: no maps with non-string keys, no failing
    // Serialize impls.
    Bytes::from(serde_json::to_vec(value).expect("reply serializes"))
}

/// Every protocol shape (`TaskEnvelope`, `Health`, ...) is a reply body as it serializes.
impl<T: Serialize> Reply for T {
    type Body = T;
    fn to_json(&self) -> Bytes {
        to_json(self)
    }
}

/// `{"<key>": [raw, raw, ...]}` from JSON values already serialized (log entries, stored
/// messages), with `extra` fields first.
pub(super) fn json_list(key: &str, items: &[Bytes], extra: &[(&str, String)]) -> Bytes {
    let len: usize = items.iter().map(|i| i.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 64);
    out.push(b'{');
    for (k, v) in extra {
        out.extend_from_slice(format!("\"{k}\":{v},").as_bytes());
    }
    out.extend_from_slice(format!("\"{key}\":[").as_bytes());
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// A JSON string literal.
pub(super) fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}
