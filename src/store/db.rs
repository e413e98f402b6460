//! [`Db`]: the sled database — opening it (and reopening it after an I/O error), its
//! trees, making writes durable — and the small encodings every tree shares.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use muster_protocol::Seq;

pub(crate) use super::error::StoreError;
use super::segments::Segments;

/// Version of the layout of the trees. Bumped on incompatible change.
///
/// - 1: the first layout;
/// - 2: agent names are case-insensitive, stored lowercase (a version-1 dir is migrated
///   when it is loaded: see `Views::load`);
/// - 3: file reservations (the `files` tree, `files.*` events in the log, the last
///   reservation number in `meta/views`). Nothing to migrate; the bump keeps an older
///   muster, which cannot read these events, from opening the dir.
/// - 4: the task indexes (`unfinished`, `finished`) and the task counts in `meta/views`, so
///   that loading reads only the tasks the model keeps (a version-3 dir gets them built when
///   it is loaded).
/// - 5: the log's batches and chat messages in segment files (`log/`, `chat/`), sled holding
///   their positions (`log-index`, `chat-index`, `inbox-index`), in its own directory
///   (`sled/`); see `upgrade` for how an older dir is moved.
/// - 6: `chat-index` and `inbox-index` hold chunks of entries, not one key per message (see
///   `chat_index`); a version-5 dir is copied into a fresh database (see `upgrade`).
/// - 7: a log record carries the idempotency records of its batch after its events, and a
///   commit syncs only the log's files: sled and the chat files are durable at checkpoints
///   (`meta/synced`), and rebuilt from the log's records after a crash. A version-6 dir
///   needs nothing (its last commit synced everything); an older muster must not append
///   records it cannot read, or trust a sled that is behind its log.
pub(super) const SCHEMA: u64 = 7;

/// The sled database, reopened whole after an I/O error (see [`Db::reopen`]).
pub(crate) struct Db {
    dir: PathBuf,
    /// Bytes of sled's page cache (see `Config::cache_mb`).
    cache_bytes: u64,
    /// `None` only while [`Db::reopen`] swaps the database.
    handles: RwLock<Option<Arc<Handles>>>,
    /// Largest blob file already synced (sled names blobs by log position).
    blobs_synced: Mutex<u64>,
    epoch: String,
    /// The schema the dir had when it was opened (this version's for a new dir).
    pub(super) opened_at_schema: u64,
    /// The log's batches (see `log`).
    pub(super) log_records: Segments,
    /// Chat messages, each once (see `chat`).
    pub(super) chat_records: Segments,
    /// The `head` of the last checkpoint (see [`Db::checkpoint`]).
    synced: std::sync::atomic::AtomicU64,
}

/// The open database: its trees, and a second handle on its data file, for `fdatasync`.
pub(super) struct Handles {
    pub(super) db: sled::Db,
    /// The log: the `seq` of a batch's first event → its record's position.
    pub(super) log: sled::Tree,
    pub(super) tasks: sled::Tree,
    pub(super) unfinished: sled::Tree,
    pub(super) finished: sled::Tree,
    pub(super) agents: sled::Tree,
    pub(super) cursors: sled::Tree,
    pub(super) channels: sled::Tree,
    /// The messages' positions by channel (see `chat_index`).
    pub(super) chat: sled::Tree,
    /// The positions of the messages each agent received.
    pub(super) inbox: sled::Tree,
    pub(super) idempotency: sled::Tree,
    pub(super) files: sled::Tree,
    pub(super) meta: sled::Tree,
    db_file: File,
}

/// How long opening waits for the lock of a data dir that another sled handle is letting go
/// of (see [`open_sled`]).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// sled's directory inside the data dir (since schema 5; before, sled's files were in the
/// data dir itself, where a stub now stands: see `upgrade`).
pub(super) const SLED_DIR: &str = "sled";

/// Opens the sled database in `path` with a page cache of `cache_bytes`, waiting up to
/// [`LOCK_WAIT`] for its lock: a broker that just stopped in this process lets go of it only
/// when sled's background threads have finished (seen in tests that restart a broker in
/// place). Another process holding it is still refused, two seconds later, naming `data_dir`.
pub(super) fn open_sled(path: &Path, data_dir: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        // sled's default cache is 1 GiB, and it fills as history grows: the cap is what keeps
        // the broker's memory independent of how long it has run. Its own flush (500 ms, its
        // default) is what makes a checkpoint durable (`Db::checkpoint`).
        match sled::Config::new().path(path).cache_capacity(cache_bytes).flush_every_ms(Some(500)).open() {
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(StoreError::Locked(data_dir.to_owned()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(other) => return Err(StoreError::Sled(other)),
            Ok(db) => {
                if started.elapsed() > std::time::Duration::from_millis(20) {
                    tracing::info!(waited = ?started.elapsed(), "the data dir's lock was released");
                }
                return Ok(db);
            }
        }
    }
}

impl Handles {
    /// Opens the trees of the data dir `dir`.
    fn open(dir: &Path, cache_bytes: u64) -> Result<Handles, StoreError> {
        let db = open_sled(&dir.join(SLED_DIR), dir, cache_bytes)?;
        Ok(Handles {
            db_file: File::open(dir.join(SLED_DIR).join("db"))?,
            log: db.open_tree("log-index")?,
            tasks: db.open_tree("tasks")?,
            unfinished: db.open_tree("unfinished")?,
            finished: db.open_tree("finished")?,
            agents: db.open_tree("agents")?,
            cursors: db.open_tree("cursors")?,
            channels: db.open_tree("channels")?,
            chat: db.open_tree("chat-index")?,
            inbox: db.open_tree("inbox-index")?,
            idempotency: db.open_tree("idempotency")?,
            files: db.open_tree("files")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }
}

impl Db {
    /// Opens (or creates) the database in `dir`, with a page cache of `cache_bytes`.
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Db, StoreError> {
        let handles = Handles::open(dir, cache_bytes)?;
        // The directory entries of sled's files must be durable too.
        File::open(dir)?.sync_all()?;
        File::open(dir.join(SLED_DIR))?.sync_all()?;
        let (db, meta, db_file) = (&handles.db, &handles.meta, &handles.db_file);
        let found = meta.get("schema")?.and_then(|v| be(&v));
        if let Some(found) = found
            && found > SCHEMA
        {
            return Err(StoreError::Schema { dir: dir.to_owned(), found, understood: SCHEMA });
        }
        let fresh = meta.get("epoch")?.is_none();
        let epoch = match meta.get("epoch")? {
            Some(epoch) => String::from_utf8_lossy(&epoch).into_owned(),
            None => {
                let epoch = format!("{:016x}", rand::random::<u64>());
                meta.insert("epoch", epoch.as_bytes())?;
                meta.insert("schema", &SCHEMA.to_be_bytes())?;
                db.flush()?;
                db_file.sync_data()?;
                epoch
            }
        };
        Ok(Db {
            dir: dir.to_owned(),
            cache_bytes,
            handles: RwLock::new(Some(Arc::new(handles))),
            blobs_synced: Mutex::new(0),
            epoch,
            // No schema and an epoch: the first layout's.
            opened_at_schema: found.unwrap_or(if fresh { SCHEMA } else { 1 }),
            log_records: Segments::open("log", &dir.join("log"))?,
            chat_records: Segments::open("chat", &dir.join("chat"))?,
            synced: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub(super) fn handles(&self) -> Result<Arc<Handles>, StoreError> {
        // A poisoned lock only means a panic elsewhere; the handles are still whole.
        let handles = self.handles.read().unwrap_or_else(|p| p.into_inner());
        handles.clone().ok_or(StoreError::Reopening)
    }

    /// Closes and reopens the database. sled keeps the first I/O error it meets (a full
    /// disk) and returns it for every later operation; a fresh instance reads what is on
    /// disk and works again. Readers hold the handles only for one call: this waits a
    /// moment for them to let go. Follow it with a load of the views.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.handles.write().unwrap_or_else(|p| p.into_inner());
        // (None: an earlier reopen closed the database but could not open it again.)
        if let Some(mut old) = slot.take() {
            let mut waited = 0;
            let handles = loop {
                match Arc::try_unwrap(old) {
                    Ok(handles) => break handles,
                    Err(still_shared) if waited < 100 => {
                        old = still_shared;
                        waited += 1;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(still_shared) => {
                        *slot = Some(still_shared);
                        return Err(StoreError::Reopening);
                    }
                }
            };
            // Dropping the last handle closes sled and releases its lock on the directory.
            drop(handles);
        }
        let fresh = Handles::open(&self.dir, self.cache_bytes)?;
        *slot = Some(Arc::new(fresh));
        *self.blobs_synced.lock().unwrap_or_else(|p| p.into_inner()) = 0;
        Ok(())
    }

    /// The data dir.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The random id this data dir got when it was created. A client that resumes with
    /// another epoch is talking to a different history.
    pub(crate) fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Makes everything written so far durable: `fdatasync` of the segment files written,
    /// and at the same time sled's flush and an `fdatasync` of its data file and any new blob
    /// files. (sled 0.34's flush only calls `sync_file_range`, which survives a process crash
    /// but not a power loss.) At the same time, not one after the other: an acknowledgement
    /// waits for both, and a position that reached the disk before its record (a power loss
    /// between the two; sled's background flush can run ahead anyway) is what load copes with
    /// (`DiskLog::tail`).
    pub(crate) fn flush_and_sync(&self) -> Result<(), StoreError> {
        std::thread::scope(|s| {
            let records = s.spawn(|| self.log_records.sync().and_then(|()| self.chat_records.sync()));
            let sled = self.sync_sled();
            let records = records.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            sled.and(records)
        })
    }

    /// A checkpoint at `head`, the last batch whose log record is durable and whose views are
    /// written: syncs the chat files, then records `head` in `meta/synced`. sled makes the
    /// key durable with its own next flush (every 500 ms), and with it every write before it
    /// (sled keeps its writes in order); after a crash, only the log's records after the
    /// `meta/synced` sled recovers are read again ([`super::DiskLog::recover`]). The chat files
    /// are synced before the key is written, so sled never holds a checkpoint whose messages
    /// are not on disk.
    ///
    /// It does not flush sled itself: a flush once a second here, concurrent with the writer's
    /// inserts, made the broker's memory saw-tooth by about 10 MB, which sled's own flushes
    /// alone do not (`tests/memory.rs` failed; BENCHMARKS.md, "Memory: a checkpoint no longer
    /// flushes sled"). Where a checkpoint must be durable now (at shutdown, before a trim), the
    /// caller flushes ([`Db::flush_and_sync`]).
    pub(crate) fn checkpoint(&self, head: Seq) -> Result<(), StoreError> {
        self.log_records.sync()?;
        self.chat_records.sync()?;
        self.handles()?.meta.insert("synced", &head.to_be_bytes())?;
        self.sync_blobs()?;
        self.synced.store(head, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The `head` of the last checkpoint written (durable once sled has flushed since): the
    /// log after it is needed to rebuild sled after a crash, so it is not trimmed.
    pub(crate) fn synced(&self) -> Seq {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The `head` of the last checkpoint as sled holds it; `None` in a data dir written
    /// before checkpoints, where every commit synced everything.
    pub(super) fn stored_checkpoint(&self) -> Result<Option<Seq>, StoreError> {
        Ok(self.handles()?.meta.get("synced")?.and_then(|v| be(&v)))
    }

    fn sync_sled(&self) -> Result<(), StoreError> {
        let h = self.handles()?;
        h.db.flush()?;
        h.db_file.sync_data()?;
        self.sync_blobs()
    }

    /// sled writes values too large for a log segment (about 128 KiB) to separate blob
    /// files and never syncs them. Our values are far smaller, but a full leaf node can
    /// grow past that size, so new blob files are synced too.
    fn sync_blobs(&self) -> Result<(), StoreError> {
        let dir = self.dir.join(SLED_DIR).join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // A poisoned lock only means another sync panicked; the number is still valid.
        let mut synced = self.blobs_synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut newest = *synced;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if lsn > *synced {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_data()?,
                    // sled may have collected it meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                newest = newest.max(lsn);
            }
        }
        if newest > *synced {
            File::open(&dir)?.sync_all()?;
            *synced = newest;
        }
        Ok(())
    }

    /// Bytes the store occupies on disk: sled and the segment files.
    pub(crate) fn size_on_disk(&self) -> u64 {
        let sled = self.handles().map_or(0, |h| h.db.size_on_disk().unwrap_or(0));
        sled + self.log_records.size() + self.chat_records.size()
    }
}

/// A big-endian `u64` key or value.
pub(super) fn be(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// `name \0 seq`: the key of a message in a channel or an inbox.
pub(super) fn key_chat(name: &str, seq: Seq) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 9);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `name \0`: the prefix of every key of a channel or an inbox.
pub(super) fn prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our view types serialize infallibly (see `Frame::of`).
    serde_json::to_vec(value).expect("view serializes")
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { tree, error: e.to_string() })
}
