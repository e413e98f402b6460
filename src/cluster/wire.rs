//! What the nodes send each other through NATS: a batch as one message of the replicated
//! log, a write forwarded from a follower to the leader with its outcome, and a node's
//! heartbeat.

use async_nats::HeaderMap;
use bytes::{BufMut, Bytes, BytesMut};
use muster_protocol::Seq;
use serde::{Deserialize, Serialize};

use crate::core::Command;
use crate::frame::Frame;
use crate::sequencer::Applied;
use crate::store::{decode_batch, encode_batch};

/// Header: `seq` of the message's first event.
pub(super) const FIRST: &str = "Muster-First";
/// Header: the node that published the message (a new leader's first message has no
/// events: it marks the term, so that a deposed leader's next append is fenced off).
pub(super) const NODE: &str = "Muster-Node";

/// The idempotency part of a batch message.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Keys {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    records: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    expired: Vec<String>,
}

/// One message of the replicated log: the headers and the payload — `u32` length of the
/// events (the log's own encoding, the bytes every node keeps), the events, then the
/// idempotency records the batch made and the keys it forgot, as JSON.
pub(super) fn encode(
    node: &str,
    first: Seq,
    frames: &[Frame],
    records: &[(String, Vec<u8>)],
    expired: &[String],
) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(FIRST, first.to_string().as_str());
    headers.insert(NODE, node);
    let events = encode_batch(frames);
    let keys = Keys {
        records: records.iter().map(|(k, r)| (k.clone(), String::from_utf8_lossy(r).into_owned())).collect(),
        expired: expired.to_vec(),
    };
    let mut payload = BytesMut::with_capacity(events.len() + 8);
    // An event is below 64 KiB and a batch at most 1,024 commands: far below 4 GiB.
    payload.put_u32(u32::try_from(events.len()).unwrap_or(u32::MAX));
    payload.put_slice(&events);
    if !keys.records.is_empty() || !keys.expired.is_empty() {
        // Plain strings; serializing cannot fail.
        payload.put_slice(&serde_json::to_vec(&keys).unwrap_or_default());
    }
    (headers, payload.freeze())
}

/// Reads a message of the replicated log back into the batch it carries.
pub(super) fn decode(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<Applied, String> {
    let first = headers
        .and_then(|h| h.get(FIRST))
        .and_then(|v| v.as_str().parse::<Seq>().ok())
        .ok_or_else(|| format!("a message without a {FIRST} header"))?;
    let (len, rest) = payload.split_first_chunk::<4>().ok_or("a message shorter than its length")?;
    let len = u32::from_be_bytes(*len) as usize;
    let events = rest.get(..len).ok_or("a message shorter than its events")?;
    let frames = decode_batch(first, events).map_err(|e| e.to_string())?;
    let keys: Keys = match &rest[len..] {
        [] => Keys::default(),
        json => serde_json::from_slice(json).map_err(|e| format!("unreadable idempotency records: {e}"))?,
    };
    let records = keys.records.into_iter().map(|(k, r)| (k, r.into_bytes())).collect();
    Ok(Applied { first, frames, records, expired: keys.expired })
}

/// The id (`Nats-Msg-Id`) of the message `node` publishes in its term `term` as message
/// `stream` of the log: a follower reads the term from it (see `follow`).
pub(super) fn message_id(node: &str, term: u64, stream: u64) -> String {
    format!("{node}.{term:016x}.{stream}")
}

/// The term of the message whose id is `id` (made by [`message_id`]).
pub(super) fn term_of(id: &str) -> Option<u64> {
    let mut parts = id.rsplitn(3, '.');
    let (_stream, term) = (parts.next()?, parts.next()?);
    parts.next()?;
    u64::from_str_radix(term, 16).ok()
}

/// What a node's heartbeat says (the value of its key in the nodes bucket).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Heartbeat {
    pub(super) node: String,
    /// The last message of the log it applied: the log is never trimmed above it.
    pub(super) applied: u64,
}

/// A write a follower forwards to the leader: the command, already bound to its caller,
/// sent again until answered (see `forwards`).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Forwarded {
    /// The write's id: its copies have the same (the follower's instance and a count).
    pub(super) id: String,
    /// The term the follower last saw lead when it first sent it (0: none yet).
    pub(super) term: u64,
    /// Whether this is a copy sent again.
    #[serde(default)]
    pub(super) resent: bool,
    pub(super) cmd: Command,
    #[serde(default)]
    pub(super) idempotency: Option<String>,
}

/// A forwarded write, read from its request.
pub(super) fn forwarded(request: &async_nats::Message) -> Result<Forwarded, String> {
    serde_json::from_slice(&request.payload).map_err(|e| format!("unreadable: {e}"))
}

#[cfg(test)]
mod tests {
    use muster_protocol::Topic;

    use super::*;

    #[test]
    fn a_batch_message_reads_back_as_written() {
        let frames: Vec<Frame> = (7..10)
            .map(|seq| Frame { seq, topics: vec![Topic::All], json: Bytes::from(format!("{{\"seq\":{seq}}}")) })
            .collect();
        let records = vec![("key-1".to_owned(), br#"{"at":1}"#.to_vec())];
        let expired = vec!["old".to_owned()];
        let (headers, payload) = encode("n1", 7, &frames, &records, &expired);
        let back = decode(Some(&headers), &payload).unwrap();
        assert_eq!(back.first, 7);
        assert_eq!(back.frames.iter().map(|f| f.seq).collect::<Vec<_>>(), [7, 8, 9]);
        assert_eq!(back.frames[2].json, frames[2].json);
        assert_eq!((back.records, back.expired), (records, expired));

        let (headers, payload) = encode("n1", 10, &[], &[], &[]);
        let marker = decode(Some(&headers), &payload).unwrap();
        assert!(marker.frames.is_empty() && marker.records.is_empty());
        assert!(decode(None, &payload).unwrap_err().contains(FIRST));
        assert!(decode(Some(&headers), &payload[..2]).is_err());
    }

    #[test]
    fn a_messages_id_names_its_term() {
        assert_eq!(term_of(&message_id("node.a-1", 0xfeed, 42)), Some(0xfeed));
        assert_eq!(term_of("n1.zz.42"), None);
        assert_eq!(term_of("feed.42"), None);
    }
}
