//! Moving a data dir written before schema 5 — the log's batches and chat messages as sled
//! values, in the trees `log`, `chat` and `inbox` — into the segment files, once, when it
//! is opened. A crash part-way is safe: until the copy is complete and durable (`meta/segments`
//! says so) the old trees are untouched and the next open starts the copy again from an
//! empty index and empty files; after that, only the old trees' removal is left to finish.
//! The schema number itself is written by `Views::load`, which has its own steps for older dirs.

use super::db::{Db, StoreError, key_chat};

/// The trees schema 5 moved out of sled.
const OLD_TREES: [&str; 3] = ["log", "chat", "inbox"];

/// Moves the old trees' values into the segment files, if the dir has them.
pub(super) fn to_segments(db: &Db) -> Result<(), StoreError> {
    let h = db.handles()?;
    let names = h.db.tree_names();
    let present: Vec<&str> =
        OLD_TREES.into_iter().filter(|t| names.iter().any(|n| n.as_ref() == t.as_bytes())).collect();
    if present.is_empty() {
        return Ok(());
    }
    if h.meta.get("segments")?.is_none() {
        let started = std::time::Instant::now();
        tracing::info!("moving the log and chat history out of sled into segment files (once, for this version)");
        for tree in [&h.log, &h.chat, &h.inbox] {
            tree.clear()?;
        }
        db.log_records.clear()?;
        db.chat_records.clear()?;
        let (log, chat, inbox) = (h.db.open_tree("log")?, h.db.open_tree("chat")?, h.db.open_tree("inbox")?);
        for entry in log.iter() {
            let (first, batch) = entry?;
            h.log.insert(first, &db.log_records.append(&batch)?.encode())?;
        }
        for entry in chat.iter() {
            let (key, message) = entry?;
            h.chat.insert(key, &db.chat_records.append(&message)?.encode())?;
        }
        for entry in inbox.iter() {
            let (key, message) = entry?;
            h.inbox.insert(key, same_as_in_channel(db, &h.chat, &message)?)?;
        }
        h.meta.insert("segments", &[1])?;
        db.flush_and_sync()?;
        tracing::info!(
            batches = h.log.len(),
            messages = h.chat.len(),
            took = ?started.elapsed(),
            "the log and chat history are in segment files"
        );
    }
    for name in present {
        h.db.drop_tree(name)?;
    }
    db.flush_and_sync()
}

/// The position to store for an inbox entry holding `message`: the record of the same
/// message in its channel when it is the same bytes, or else a record of its own.
fn same_as_in_channel(db: &Db, chat: &sled::Tree, message: &[u8]) -> Result<Vec<u8>, StoreError> {
    #[derive(serde::Deserialize)]
    struct Located {
        channel: String,
        seq: u64,
    }
    if let Ok(at) = serde_json::from_slice::<Located>(message)
        && let Some(pos) = chat.get(key_chat(&at.channel, at.seq))?
        && let Some(decoded) = super::segments::Pos::decode(&pos)
        && db.chat_records.read(decoded)? == message
    {
        return Ok(pos.to_vec());
    }
    Ok(db.chat_records.append(message)?.encode().to_vec())
}
