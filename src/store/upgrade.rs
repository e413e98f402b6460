//! Moving an older data dir to this version's layout, once, when it is opened:
//!
//! - schema 4 or older ([`out_of_root`]): sled's files were the data dir itself, and the
//!   log's batches and chat messages were sled values (trees `log`, `chat`, `inbox`). Now
//!   sled lives in `sled/` and holds their positions, the records being in the segment files
//!   `log/` and `chat/`;
//! - schema 5 ([`rechunk`]): the chat indexes had one key per message; now they hold chunks
//!   (see `chat_index`).
//!
//! The old database is copied, not changed in place: sled never gives back the memory it
//! keeps for every page it ever had (measured: a dir moved in place still started at
//! 222 MiB), so the copy is a fresh, compact database.
//!
//! A crash part-way is safe: the copy is built in `sled.new/` and put in place only when it
//! is complete and durable, so until then the old database is untouched and the next open
//! starts the copy again. After it, what is left is finished by [`finish_swap`] (schema 5:
//! the second rename and removing `sled.old/`) and [`stub_root`] (schema 4: removing the old
//! files). The schema number itself is written by `Views::load`, which has its own steps for
//! older dirs.

use std::fs::File;
use std::path::Path;

use super::chat_index::{ChatIndex, split_key};
use super::db::{SCHEMA, SLED_DIR, StoreError, open_sled};
use super::segments::{Pos, Segments};

/// sled's file and directory names, as it writes them in the directory it is given.
pub(super) fn is_sled_file(name: &str) -> bool {
    matches!(name, "db" | "conf" | "blobs") || name.starts_with("snap.")
}

/// Copies a schema-4 (or older) database from the data dir `dir` itself into `sled/` and
/// the segment files, if `dir` holds one and has no `sled/` yet.
pub(super) fn out_of_root(dir: &Path, cache_bytes: u64) -> Result<(), StoreError> {
    if dir.join(SLED_DIR).exists() || !dir.join("db").exists() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    tracing::info!("moving the data dir to this version's layout (once): the log and chat history into segment files");
    let building = dir.join("sled.new");
    for partial in [building.as_path(), &dir.join("log"), &dir.join("chat")] {
        match std::fs::remove_dir_all(partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    let old = open_sled(dir, dir, cache_bytes)?;
    let new = open_sled(&building, dir, cache_bytes)?;
    let log_records = Segments::open("log", &dir.join("log"))?;
    let chat_records = Segments::open("chat", &dir.join("chat"))?;
    for name in old.tree_names() {
        let (from, to) = match &name[..] {
            b"log" => (old.open_tree("log")?, new.open_tree("log-index")?),
            b"chat" => {
                let chat = new.open_tree("chat-index")?;
                let index = ChatIndex::new(&chat, "chat-index");
                for entry in old.open_tree("chat")?.iter() {
                    let (key, message) = entry?;
                    let (channel, seq) = split_key("chat", &key)?;
                    index.append(&channel, seq, chat_records.append(&message)?)?;
                }
                continue;
            }
            b"inbox" => continue,
            _ => {
                copy_tree(&old.open_tree(&name)?, &new.open_tree(&name)?)?;
                continue;
            }
        };
        for entry in from.iter() {
            let (k, v) = entry?;
            to.insert(k, &log_records.append(&v)?.encode())?;
        }
    }
    // After the channels: an inbox entry points to its message's record there.
    let (chat, inbox) = (new.open_tree("chat-index")?, new.open_tree("inbox-index")?);
    let (channels, inboxes) = (ChatIndex::new(&chat, "chat-index"), ChatIndex::new(&inbox, "inbox-index"));
    for entry in old.open_tree("inbox")?.iter() {
        let (key, message) = entry?;
        let (agent, seq) = split_key("inbox", &key)?;
        inboxes.append(&agent, seq, same_as_in_channel(&chat_records, channels, &message)?)?;
    }
    log_records.sync()?;
    chat_records.sync()?;
    new.flush()?;
    let batches = new.open_tree("log-index")?.len();
    drop((chat, inbox, new, old));
    sync_tree(&building)?;
    std::fs::rename(&building, dir.join(SLED_DIR))?;
    File::open(dir)?.sync_all()?;
    tracing::info!(batches, took = ?started.elapsed(), "the data dir is in this version's layout");
    Ok(())
}

/// Copies a schema-5 database (`sled/`, one chat index key per message) into a fresh one
/// with the chat indexes in chunks, and puts it in place of the old one.
pub(super) fn rechunk(dir: &Path, cache_bytes: u64) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    tracing::info!("rewriting the chat indexes in chunks (once, for this version)");
    let building = dir.join("sled.new");
    match std::fs::remove_dir_all(&building) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let old = open_sled(&dir.join(SLED_DIR), dir, cache_bytes)?;
    let new = open_sled(&building, dir, cache_bytes)?;
    for name in old.tree_names() {
        let (from, to) = (old.open_tree(&name)?, new.open_tree(&name)?);
        let index = match &name[..] {
            b"chat-index" => "chat-index",
            b"inbox-index" => "inbox-index",
            _ => {
                copy_tree(&from, &to)?;
                continue;
            }
        };
        let chunked = ChatIndex::new(&to, index);
        for entry in ChatIndex::new(&from, index).all() {
            let (name, seq, pos) = entry?;
            chunked.append(&name, seq, pos)?;
        }
    }
    new.flush()?;
    drop((new, old));
    sync_tree(&building)?;
    // `sled.old/` marks the swap as begun: `finish_swap` completes it after a crash.
    std::fs::rename(dir.join(SLED_DIR), dir.join("sled.old"))?;
    finish_swap(dir)?;
    tracing::info!(took = ?started.elapsed(), "the chat indexes are in chunks");
    Ok(())
}

/// Completes putting `sled.new/` in place of `sled/` once [`rechunk`] has moved the old one
/// to `sled.old/` (after a crash, at the next open): renames `sled.new/`, if `sled/` is not
/// there yet, and removes `sled.old/`.
pub(super) fn finish_swap(dir: &Path) -> Result<(), StoreError> {
    let old = dir.join("sled.old");
    if !old.exists() {
        return Ok(());
    }
    if !dir.join(SLED_DIR).exists() {
        std::fs::rename(dir.join("sled.new"), dir.join(SLED_DIR))?;
        File::open(dir)?.sync_all()?;
    }
    std::fs::remove_dir_all(old)?;
    Ok(())
}

fn copy_tree(from: &sled::Tree, to: &sled::Tree) -> Result<(), StoreError> {
    for entry in from.iter() {
        let (k, v) = entry?;
        to.insert(k, v)?;
    }
    Ok(())
}

/// Keeps, in the data dir itself where muster 0.1 with schema 4 or older opens its database,
/// a stub holding only the schema number, so that an older muster refuses the dir instead of
/// starting an empty board there. Removes first an old database that an upgrade copied but
/// did not get to remove.
pub(super) fn stub_root(dir: &Path) -> Result<(), StoreError> {
    let stubbed = dir.join("db").exists() && {
        let root = open_sled(dir, dir, 1 << 20)?;
        root.open_tree("meta")?.get("stub")?.is_some()
    };
    if stubbed {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(is_sled_file) {
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    let root = open_sled(dir, dir, 1 << 20)?;
    let meta = root.open_tree("meta")?;
    meta.insert("schema", &SCHEMA.to_be_bytes())?;
    meta.insert("stub", &[1])?;
    root.flush()?;
    File::open(dir.join("db"))?.sync_data()?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The position to store for an inbox entry holding `message`: the record of the same
/// message in its channel when it is the same bytes, or else a record of its own.
fn same_as_in_channel(records: &Segments, chat: ChatIndex<'_>, message: &[u8]) -> Result<Pos, StoreError> {
    #[derive(serde::Deserialize)]
    struct Located {
        channel: String,
        seq: u64,
    }
    if let Ok(at) = serde_json::from_slice::<Located>(message)
        && let Some(&(seq, pos)) = chat.page(&at.channel, at.seq.checked_sub(1), None, 1)?.first()
        && seq == at.seq
        && records.read(pos)? == message
    {
        return Ok(pos);
    }
    records.append(message)
}

/// `fdatasync`s every file under `dir`, and the directories.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            File::open(entry.path())?.sync_data()?;
        }
    }
    File::open(dir)?.sync_all()
}
