//! Chat history: the messages of a channel and an agent's inbox, read back by page. Each
//! message is one record in the `chat/` segment files; the `chat-index` and `inbox-index`
//! trees hold its position under `channel \0 seq` and under `agent \0 seq` for each
//! recipient.

use std::sync::Arc;

use bytes::Bytes;
use muster_protocol::Seq;

use super::db::{Db, StoreError, be, key_chat, prefix};
use super::segments::Pos;

/// Messages by channel and by recipient, as the views keep them.
pub(crate) struct History {
    db: Arc<Db>,
}

impl History {
    /// The history of `db`.
    pub(crate) fn new(db: Arc<Db>) -> History {
        History { db }
    }

    /// Messages of a channel as JSON with their `seq`, oldest first: those after `since`
    /// (the first `limit`), or else the newest `limit` before `before` (or at all).
    pub(crate) fn messages(
        &self,
        channel: &str,
        since: Option<Seq>,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<(Seq, Bytes)>, StoreError> {
        let h = self.db.handles()?;
        self.range(&h.chat, channel, since, before, limit)
    }

    /// Inbox entries of an agent as JSON, oldest first, with the same paging as
    /// [`History::messages`].
    pub(crate) fn inbox(
        &self,
        agent: &str,
        since: Option<Seq>,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<(Seq, Bytes)>, StoreError> {
        let h = self.db.handles()?;
        self.range(&h.inbox, agent, since, before, limit)
    }

    /// Number of inbox entries of an agent after `seq`.
    pub(crate) fn inbox_count_after(&self, agent: &str, seq: Seq) -> Result<u64, StoreError> {
        let h = self.db.handles()?;
        let mut n = 0;
        for key in h.inbox.range(key_chat(agent, seq.saturating_add(1))..key_chat(agent, u64::MAX)).keys() {
            key?;
            n += 1;
        }
        Ok(n)
    }

    fn range(
        &self,
        tree: &sled::Tree,
        name: &str,
        since: Option<Seq>,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<(Seq, Bytes)>, StoreError> {
        let start = key_chat(name, since.map_or(0, |s| s.saturating_add(1)));
        let end = match before {
            Some(b) => key_chat(name, b),
            None => {
                let mut end = prefix(name);
                // Exclusive upper bound: every key with this prefix sorts below it.
                end.extend_from_slice(&[0xff; 9]);
                end
            }
        };
        // The key ends with the message's `seq`, big-endian; the value is its position.
        let entry = |kv: sled::Result<(sled::IVec, sled::IVec)>| -> Result<(Seq, Pos), StoreError> {
            let (k, v) = kv?;
            let seq = k.len().checked_sub(8).and_then(|at| be(&k[at..])).unwrap_or(0);
            let pos = Pos::decode(&v)
                .ok_or_else(|| StoreError::Corrupt { tree: "chat-index", error: format!("{seq} is not a position") })?;
            Ok((seq, pos))
        };
        let iter = tree.range(start..end);
        let positions: Vec<(Seq, Pos)> = if since.is_some() {
            iter.take(limit).map(entry).collect::<Result<_, _>>()?
        } else {
            let mut newest = iter.rev().take(limit).map(entry).collect::<Result<Vec<_>, _>>()?;
            newest.reverse();
            newest
        };
        let mut out = Vec::with_capacity(positions.len());
        for (seq, pos) in positions {
            match self.db.chat_records.read(pos) {
                Ok(json) => out.push((seq, Bytes::from(json))),
                // Indexed, but the record is not on disk: a message never acknowledged (sled's
                // index reached the disk before it, then the power went). Left out, loudly,
                // rather than making the whole channel unreadable.
                Err(StoreError::Corrupt { error, .. }) => tracing::error!(name, seq, %error, "chat message unreadable"),
                Err(other) => return Err(other),
            }
        }
        out.shrink_to_fit();
        Ok(out)
    }
}
