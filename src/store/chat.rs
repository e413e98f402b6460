//! Chat history: the messages of a channel and an agent's inbox, read back by page.

use std::sync::Arc;

use bytes::Bytes;
use muster_protocol::Seq;

use super::db::{Db, StoreError, be, key_chat, prefix};

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
        Self::range(&h.chat, channel, since, before, limit)
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
        Self::range(&h.inbox, agent, since, before, limit)
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
        // The key ends with the message's `seq`, big-endian.
        let entry = |kv: sled::Result<(sled::IVec, sled::IVec)>| {
            kv.map(|(k, v)| {
                (k.len().checked_sub(8).and_then(|at| be(&k[at..])).unwrap_or(0), Bytes::copy_from_slice(&v))
            })
        };
        let iter = tree.range(start..end);
        let mut out: Vec<(Seq, Bytes)> = if since.is_some() {
            iter.take(limit).map(entry).collect::<Result<_, _>>()?
        } else {
            let mut newest = iter.rev().take(limit).map(entry).collect::<Result<Vec<_>, _>>()?;
            newest.reverse();
            newest
        };
        out.shrink_to_fit();
        Ok(out)
    }
}
