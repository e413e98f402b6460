//! Chat history: the messages of a channel and an agent's inbox, read back by page. Each
//! message is one record in the `chat/` segment files; the `chat-index` and `inbox-index`
//! trees hold its position by channel and by each recipient (see `chat_index`).

use std::sync::Arc;

use bytes::Bytes;
use muster_protocol::Seq;

use super::chat_index::ChatIndex;
use super::db::{Db, StoreError};

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
        self.range(ChatIndex::new(&h.chat, "chat-index"), channel, since, before, limit)
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
        self.range(ChatIndex::new(&h.inbox, "inbox-index"), agent, since, before, limit)
    }

    /// Number of inbox entries of an agent after `seq`.
    pub(crate) fn inbox_count_after(&self, agent: &str, seq: Seq) -> Result<u64, StoreError> {
        let h = self.db.handles()?;
        ChatIndex::new(&h.inbox, "inbox-index").count_after(agent, seq)
    }

    fn range(
        &self,
        index: ChatIndex<'_>,
        name: &str,
        since: Option<Seq>,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<(Seq, Bytes)>, StoreError> {
        let positions = index.page(name, since, before, limit)?;
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
