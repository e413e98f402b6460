//! [`Frame`]: one event as it is logged and sent. It is serialized once, when the sequencer
//! stamps it, and those bytes are what the log stores, what a replay reads back and what
//! every subscriber receives; the topics it is published on travel with it, so that a
//! subscriber's topics are matched without decoding the event.

use bytes::Bytes;
use muster_protocol::{Event, Seq, Topic};

/// An event, serialized, with the topics it is published on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Its `seq`.
    pub(crate) seq: Seq,
    /// The topics it is published on (`EventKind::topics`; `*` is implied).
    pub(crate) topics: Vec<Topic>,
    /// The JSON text of the event, exactly as sent on the wire.
    pub(crate) json: Bytes,
}

impl Frame {
    /// Serializes an event, once, for the log and every subscriber.
    pub(crate) fn of(event: &Event) -> Frame {
        // Serializing our own types to a Vec cannot fail: no maps with non-string keys, no
        // failing Serialize impls.
        let json = serde_json::to_vec(event).expect("event serializes");
        Frame { seq: event.seq, topics: event.kind.topics(), json: Bytes::from(json) }
    }

    /// Whether a subscriber to `topics` receives this frame.
    pub(crate) fn matches(&self, topics: &[Topic]) -> bool {
        topics.iter().any(|t| t.covers(&self.topics))
    }

    /// The event again (reading the log back at startup).
    pub(crate) fn event(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }
}
