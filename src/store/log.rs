//! The event log, and [`Log`], the seam the sequencer appends through and readers replay
//! from. [`DiskLog`] implements it: one record per committed batch in the `log/` segment
//! files — for each event `u32 length, topics \n event-json` (the exact bytes sent on the
//! wire) — and in sled's `log-index` tree the `seq` of the batch's first event (big-endian)
//! → the record's position. One record and one small insert per batch keep the log's share
//! of the write path small, and the log's bytes out of sled's memory. After its events a
//! record carries the batch's idempotency records ([`encode_record`]): with them it holds
//! everything the batch changed, and a commit syncs only the log's file. A replicated log (the
//! cluster) is a second implementation of the seam.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use muster_protocol::{Seq, Timestamp, Topic};

use super::db::{Db, StoreError, be, from_json};
use super::segments::Pos;
use crate::frame::Frame;

/// Most log entries one `trim` removes: keeps a first trim of a long log from holding the
/// blocking pool for long; the next round continues.
pub(crate) const TRIM_BATCH: u64 = 100_000;

/// The ordered, durable event log.
///
/// `append` and `sync` are two calls, not one, so that the sequencer can decide and append
/// the next batch while the previous ones are being made durable (group commit): a write is
/// acknowledged only after a `sync` that followed its `append` returned.
pub(crate) trait Log: Send + Sync {
    /// Appends a batch that must follow `expected_head` without a gap (a writer whose head
    /// is not the log's is refused: fencing). Not yet durable. `idempotency` is what the
    /// batch recorded and forgot of idempotency keys: this node's views keep them, a
    /// replicated log carries them to the other nodes.
    fn append(&self, expected_head: Seq, batch: &[Frame], carried: Carried<'_>) -> Result<(), StoreError>;

    /// Makes everything appended so far durable; returns once it is.
    fn sync(&self) -> Result<(), StoreError>;

    /// Forgets what was appended from `first` on and never made durable (its sync
    /// failed), so that the next append follows `first - 1`.
    fn discard(&self, first: Seq) -> Result<(), StoreError>;

    /// Up to `limit` frames with `since < seq <= up_to` that match `topics`, oldest first,
    /// and the `seq` up to which the log was examined: `up_to`, or the last frame returned
    /// when `limit` was reached (the next page starts after it). `up_to` is the durable
    /// head: nothing beyond it is shown to anyone.
    fn read(&self, since: Seq, up_to: Seq, topics: &[Topic], limit: usize) -> Result<(Vec<Frame>, Seq), StoreError>;

    /// The oldest `seq` still in the log (`head + 1` when it is empty).
    fn first_retained(&self, head: Seq) -> Result<Seq, StoreError>;
}

/// What a batch carries besides its events: the idempotency records it made (key, record
/// as stored) and the keys it forgot, and where each command's part of it ends (a
/// replicated log that must split a batch splits it only there).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Carried<'a> {
    /// New records, in the order of the commands that made them.
    pub(crate) records: &'a [(String, Vec<u8>)],
    /// Keys forgotten (expired or evicted).
    pub(crate) expired: &'a [String],
    /// Each accepted command of the batch, in order.
    pub(crate) commands: &'a [CommandEnd],
}

/// Where one command's part of a batch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommandEnd {
    /// The `seq` of its last event (the one before, if it made none).
    pub(crate) last: Seq,
    /// How many of the batch's idempotency records were made by it and the commands before.
    pub(crate) records: usize,
}

/// The event log in the `log/` segment files, indexed in sled.
pub(crate) struct DiskLog {
    db: Arc<Db>,
    /// `seq` of the last event appended (durable or not): the next batch must follow it.
    appended: AtomicU64,
    /// A commit syncs sled too, not only the log's file (a cluster node's: see
    /// [`DiskLog::sync_sled_with_each_commit`]).
    whole: AtomicBool,
}

impl Log for DiskLog {
    fn append(&self, expected_head: Seq, batch: &[Frame], carried: Carried<'_>) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else { return Ok(()) };
        if first.seq != expected_head + 1 || self.appended.load(Ordering::Acquire) != expected_head {
            return Err(StoreError::OutOfOrder { expected: self.appended.load(Ordering::Acquire) + 1, got: first.seq });
        }
        let pos = self.db.log_records.append(&encode_record(batch, carried))?;
        self.db.handles()?.log.insert(first.seq.to_be_bytes(), &pos.encode())?;
        self.appended.store(last.seq, Ordering::Release);
        Ok(())
    }

    /// One `fdatasync`: the record holds everything the batch changed. sled (the index,
    /// the views) and the chat files are made durable by the next checkpoint
    /// ([`super::Db::checkpoint`]), and rebuilt from the records after a crash
    /// ([`DiskLog::recover`]).
    fn sync(&self) -> Result<(), StoreError> {
        if self.whole.load(Ordering::Acquire) {
            return self.db.flush_and_sync();
        }
        self.db.log_records.sync()
    }

    fn discard(&self, first: Seq) -> Result<(), StoreError> {
        // First: the writer goes back to `first - 1` whether or not the entries can be
        // removed now (a failing disk); a later load drops what it finds after a gap.
        self.appended.store(first.saturating_sub(1), Ordering::Release);
        let h = self.db.handles()?;
        let keys: Vec<_> = h.log.range(first.to_be_bytes()..).keys().collect::<Result<_, _>>()?;
        for key in keys {
            h.log.remove(key)?;
        }
        Ok(())
    }

    fn read(&self, since: Seq, up_to: Seq, topics: &[Topic], limit: usize) -> Result<(Vec<Frame>, Seq), StoreError> {
        let h = self.db.handles()?;
        let mut out = Vec::new();
        if since >= up_to {
            return Ok((out, up_to.max(since)));
        }
        let start = self.containing(since + 1)?;
        for entry in h.log.range(start.to_be_bytes()..) {
            let (k, v) = entry?;
            let first = be(&k).unwrap_or(0);
            if first > up_to {
                break;
            }
            for frame in self.batch(first, &v)? {
                if frame.seq > up_to {
                    return Ok((out, up_to));
                }
                if frame.seq > since && frame.matches(topics) {
                    let seq = frame.seq;
                    out.push(frame);
                    if out.len() >= limit {
                        return Ok((out, seq));
                    }
                }
            }
        }
        Ok((out, up_to))
    }

    fn first_retained(&self, head: Seq) -> Result<Seq, StoreError> {
        let h = self.db.handles()?;
        Ok(h.log.first()?.and_then(|(k, _)| be(&k)).unwrap_or(head + 1))
    }
}

impl DiskLog {
    /// The log of `db`; [`DiskLog::tail`] learns where it ends.
    pub(crate) fn new(db: Arc<Db>) -> DiskLog {
        DiskLog { db, appended: AtomicU64::new(0), whole: AtomicBool::new(false) }
    }

    /// From now on a commit also syncs sled and the chat files, as before checkpoints: a
    /// cluster node's position in the stream is in sled, and what its log holds past that
    /// position is checked against the stream when it joins, so the position must be as
    /// durable as the log. (Its commits wait for the stream's confirmation anyway.)
    pub(crate) fn sync_sled_with_each_commit(&self) {
        self.whole.store(true, Ordering::Release);
    }

    /// The frames of the batch whose first event has `seq` = `first`, from the record at the
    /// position `at` (a `log-index` value).
    fn batch(&self, first: Seq, at: &[u8]) -> Result<Vec<Frame>, StoreError> {
        let pos = Pos::decode(at).ok_or_else(|| StoreError::Corrupt {
            tree: "log-index",
            error: format!("entry {first} is not a position"),
        })?;
        decode_batch(first, &self.db.log_records.read(pos)?)
    }

    /// The key of the log entry that holds `seq` (or would: `seq` itself).
    fn containing(&self, seq: Seq) -> Result<Seq, StoreError> {
        let h = self.db.handles()?;
        Ok(h.log.range(..=seq.to_be_bytes()).next_back().transpose()?.and_then(|(k, _)| be(&k)).unwrap_or(seq))
    }

    /// At start, before the views are loaded: the records after the checkpoint `synced` are
    /// durable, but their index entries (and the views, the idempotency records, the chat
    /// files) only if sled and the chat files got there before the crash. Reads the records
    /// that follow the checkpoint in the files, in order, up to the first one a crash cut
    /// short; indexes each again (a later record that starts at an earlier `seq` replaces
    /// what it follows: a batch rolled back after a failed sync, written again), writes the
    /// idempotency records they carry, and drops index entries past the last. Once `tail`
    /// has the log's end, [`DiskLog::cut`] cuts the files there.
    pub(crate) fn recover(&self, synced: Seq) -> Result<(), StoreError> {
        if self.whole.load(Ordering::Acquire) {
            // A cluster node's sled is as durable as its log: the index is the log, and a
            // record it lacks was never confirmed by the stream (nor checked by `join`).
            return Ok(());
        }
        let h = self.db.handles()?;
        // The record that ends at the checkpoint (or, if the views got ahead of the log, the
        // last before it): the scan starts after it, at the first record after the checkpoint
        // (appends after views that got ahead go on from the views' head, not the log's).
        let (start, base) = match h.log.range(..=synced.to_be_bytes()).next_back().transpose()? {
            Some((k, v)) => {
                let first = be(&k).unwrap_or(0);
                match (self.batch(first, &v), Pos::decode(&v)) {
                    (Ok(frames), Some(pos)) => (pos.end(), (first + frames.len() as Seq - 1).max(synced)),
                    _ => {
                        tracing::error!(
                            first,
                            synced,
                            "the checkpoint's log record is not readable; not recovering past it"
                        );
                        return Ok(());
                    }
                }
            }
            None => (self.db.log_records.start(), synced),
        };
        let mut kept: Vec<(Seq, Pos, Seq)> = Vec::new();
        for (pos, payload) in self.db.log_records.scan(start)? {
            let Some((first, count)) = first_and_count(&payload) else { break };
            if first + count <= base + 1 {
                // Older than the checkpoint (the oldest file holds trimmed batches).
                continue;
            }
            // A batch rolled back and written again: the later record is the one.
            kept.retain(|(f, _, _)| *f < first);
            if kept.last().map_or(base, |(_, _, last)| *last) + 1 != first {
                break;
            }
            kept.push((first, pos, first + count - 1));
        }
        let last = kept.last().map_or(base, |(_, _, last)| *last);
        // Entries past the last record read: sled got there before the records did (never
        // acknowledged), unless a record after them reads fine, which is damage in the middle
        // of the log, not the end a crash cuts: then `tail` decides, as for any damage.
        let beyond: Vec<_> = h.log.range((last + 1).to_be_bytes()..).collect::<Result<_, _>>()?;
        let damaged = beyond.iter().any(|(k, v)| self.batch(be(k).unwrap_or(0), v).is_ok());
        if damaged {
            tracing::error!(after = last, "a log record after the checkpoint is damaged; later ones are not");
        } else {
            for (key, _) in beyond {
                h.log.remove(key)?;
            }
        }
        for (first, pos, _) in &kept {
            h.log.insert(first.to_be_bytes(), &pos.encode())?;
            let (records, expired) = decode_carried(&self.db.log_records.read(*pos)?).ok_or_else(|| {
                StoreError::Corrupt { tree: "log", error: format!("entry {first} carries unreadable records") }
            })?;
            for (key, record) in records {
                h.idempotency.insert(key.as_bytes(), record)?;
            }
            for key in expired {
                h.idempotency.remove(key.as_bytes())?;
            }
        }
        if !kept.is_empty() {
            tracing::info!(
                batches = kept.len(),
                synced,
                head = last,
                "recovered the log's records since the last checkpoint"
            );
        }
        Ok(())
    }

    /// At start, after `tail`: cuts the files just after the last record indexed, so that
    /// appends go on right after it, and no torn or unacknowledged record is left between
    /// the next checkpoint and the next records (a scan stops at the first it cannot read).
    pub(crate) fn cut(&self) -> Result<(), StoreError> {
        let end = match self.db.handles()?.log.last()? {
            Some((_, v)) => Pos::decode(&v).map(Pos::end),
            None => Some(self.db.log_records.start()),
        };
        end.map_or(Ok(()), |end| self.db.log_records.truncate(end))
    }

    /// At start: every logged frame from `from` on that follows without a gap, where the
    /// views include everything up to `head` (the entries before `head` may have been
    /// trimmed, and then the tail starts where the log does). A crash can leave entries
    /// that were written but never acknowledged: they are kept if they follow without a
    /// gap (a prefix of the last batch), and anything after a gap is removed, so `seq`
    /// stays gap-free. The next append must follow the last frame returned (or `head`).
    pub(crate) fn tail(&self, from: Seq, head: Seq) -> Result<Vec<Frame>, StoreError> {
        let h = self.db.handles()?;
        let mut expected = from;
        let mut tail = Vec::new();
        let start = self.containing(expected)?;
        for entry in h.log.range(start.to_be_bytes()..) {
            let (k, v) = entry?;
            let first = be(&k).unwrap_or(0);
            if first > expected && expected <= head && first <= head + 1 {
                // Trimmed before the checkpoint (retention): go on from what is left.
                expected = first;
            } else if first > expected {
                tracing::warn!(first, expected, "log has a gap after a crash; dropping the unacknowledged tail");
                h.log.remove(k)?;
                continue;
            }
            let frames = match self.batch(first, &v) {
                Ok(frames) => frames,
                // Indexed, but the record is not on disk: sled's index got there first, then
                // the power went. Never acknowledged (an acknowledgement waits for both).
                Err(StoreError::Corrupt { error, .. }) if first > head => {
                    tracing::warn!(first, %error, "log record missing after a crash; dropping the unacknowledged tail");
                    // Every entry after it now follows a gap, and goes too.
                    h.log.remove(k)?;
                    continue;
                }
                Err(StoreError::Corrupt { error, .. }) => {
                    // The views include it, but the log cannot replay it: the log now starts
                    // after it, as if trimmed there, so a client resuming from before it is
                    // told to resync rather than shown a gap.
                    tracing::error!(first, %error, "log record missing after a crash; the log now starts after it");
                    for key in h.log.range(..=k).keys() {
                        h.log.remove(key?)?;
                    }
                    expected = first + 1;
                    continue;
                }
                Err(other) => return Err(other),
            };
            let at = expected;
            for frame in frames.into_iter().filter(|f| f.seq >= at) {
                tail.push(frame);
                expected += 1;
            }
        }
        self.appended.store(head.max(expected - 1), Ordering::Release);
        Ok(tail)
    }

    /// Trims the log to its retention: removes the oldest entries (whole batches) whose
    /// events all have `seq <= up_to - keep` or are all older than `older_than`, at most
    /// [`TRIM_BATCH`] events per call, never past `up_to`. The views do not depend on the
    /// log, so no state is lost (the caller keeps what the agents checkpoint still needs).
    pub(crate) fn trim(&self, up_to: Seq, keep: u64, older_than: Timestamp) -> Result<u64, StoreError> {
        // `up_to` is a checkpoint written before this call (`Views::checkpointed`): durable
        // once sled has flushed, which checkpoints leave to sled's own flushes.
        self.db.flush_and_sync()?;
        let h = self.db.handles()?;
        #[derive(serde::Deserialize)]
        struct At {
            at: Timestamp,
        }
        let by_count = up_to.saturating_sub(keep);
        let mut removed = 0;
        let mut entries = h.log.iter().peekable();
        while let Some(entry) = entries.next() {
            let (k, v) = entry?;
            let first = be(&k).unwrap_or(0);
            // A batch ends before the next one starts: its record is read only when its time
            // decides (or it is the newest). Reading every record of a cold part of the log
            // (preads contending with the commits' fdatasyncs) made claims wait 170 ms (p99)
            // while a large dir was trimmed.
            let next = match entries.peek() {
                Some(Ok((next, _))) => be(next),
                _ => None,
            };
            let last = match next {
                Some(next) if next > first => next - 1,
                _ => match self.batch(first, &v)?.last() {
                    Some(last) => last.seq,
                    None => {
                        h.log.remove(k)?;
                        continue;
                    }
                },
            };
            if last > up_to || removed >= TRIM_BATCH {
                break;
            }
            if last > by_count {
                let batch = self.batch(first, &v)?;
                let Some(newest) = batch.last() else { break };
                let at: At = from_json("log", &newest.json)?;
                if at.at >= older_than {
                    break;
                }
            }
            h.log.remove(k)?;
            removed += last + 1 - first;
        }
        if removed > 0 {
            // The files of what went are deleted once the removal is durable: a crash must
            // not bring back positions in files that are gone.
            self.db.flush_and_sync()?;
            let oldest = match h.log.first()? {
                Some((_, v)) => Pos::decode(&v).map_or(0, Pos::segment),
                None => u32::MAX,
            };
            self.db.log_records.remove_below(oldest)?;
        }
        Ok(removed)
    }
}

/// Encodes a committed batch as one log value.
pub(crate) fn encode_batch(frames: &[Frame]) -> Vec<u8> {
    use std::io::Write;
    let len: usize = frames.iter().map(|f| f.json.len() + 64).sum();
    let mut value = Vec::with_capacity(len);
    for f in frames {
        let start = value.len();
        value.extend_from_slice(&[0; 4]);
        for (i, topic) in f.topics.iter().enumerate() {
            // Writing to a Vec cannot fail.
            let _ = write!(value, "{}{topic}", if i > 0 { " " } else { "" });
        }
        value.push(b'\n');
        value.extend_from_slice(&f.json);
        // An event is far below 4 GiB (bodies are limited to 64 KiB).
        let record = u32::try_from(value.len() - start - 4).unwrap_or(u32::MAX);
        value[start..start + 4].copy_from_slice(&record.to_be_bytes());
    }
    value
}

/// Marks the end of a record's events: what the batch carries follows (see [`encode_record`]).
const CARRIED: u32 = u32::MAX;

/// A batch as its record in the log files: [`encode_batch`], then, if it carries any, the
/// marker [`CARRIED`] and the idempotency records made (`u32` count, then for each
/// `u32 length, key, u32 length, record`) and the keys forgotten (`u32` count, then for
/// each `u32 length, key`). With them the record holds everything the batch changed.
pub(crate) fn encode_record(frames: &[Frame], carried: Carried<'_>) -> Vec<u8> {
    let mut value = encode_batch(frames);
    if carried.records.is_empty() && carried.expired.is_empty() {
        return value;
    }
    // Keys and records are far below 4 GiB (bodies are limited to 64 KiB).
    let word = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    value.extend_from_slice(&CARRIED.to_be_bytes());
    value.extend_from_slice(&word(carried.records.len()));
    for (key, record) in carried.records {
        for bytes in [key.as_bytes(), record] {
            value.extend_from_slice(&word(bytes.len()));
            value.extend_from_slice(bytes);
        }
    }
    value.extend_from_slice(&word(carried.expired.len()));
    for key in carried.expired {
        value.extend_from_slice(&word(key.len()));
        value.extend_from_slice(key.as_bytes());
    }
    value
}

/// What a record carries, decoded: the idempotency records made, and the keys forgotten.
type Decoded = (Vec<(String, Vec<u8>)>, Vec<String>);

/// The idempotency records a record carries, and the keys it forgot; `None` if they are
/// unreadable.
fn decode_carried(value: &[u8]) -> Option<Decoded> {
    let mut rest = value;
    let word = |rest: &mut &[u8]| -> Option<u32> {
        let (w, tail) = rest.split_first_chunk::<4>()?;
        *rest = tail;
        Some(u32::from_be_bytes(*w))
    };
    loop {
        if rest.is_empty() {
            return Some((Vec::new(), Vec::new()));
        }
        let len = word(&mut rest)?;
        if len == CARRIED {
            break;
        }
        rest = rest.get(len as usize..)?;
    }
    let bytes = |rest: &mut &[u8]| -> Option<Vec<u8>> {
        let len = word(rest)? as usize;
        let (b, tail) = (rest.get(..len)?, rest.get(len..)?);
        *rest = tail;
        Some(b.to_vec())
    };
    let mut records = Vec::new();
    for _ in 0..word(&mut rest)? {
        let key = String::from_utf8(bytes(&mut rest)?).ok()?;
        records.push((key, bytes(&mut rest)?));
    }
    let mut expired = Vec::new();
    for _ in 0..word(&mut rest)? {
        expired.push(String::from_utf8(bytes(&mut rest)?).ok()?);
    }
    Some((records, expired))
}

/// The `seq` of a record's first event and the number of its events; `None` if it is
/// unreadable.
fn first_and_count(value: &[u8]) -> Option<(Seq, Seq)> {
    #[derive(serde::Deserialize)]
    struct First {
        seq: Seq,
    }
    let frames = decode_batch(0, value).ok()?;
    let first: First = serde_json::from_slice(&frames.first()?.json).ok()?;
    Some((first.seq, frames.len() as Seq))
}

/// Decodes the events of a log value whose first event has `seq` = `first`.
pub(crate) fn decode_batch(first: Seq, value: &[u8]) -> Result<Vec<Frame>, StoreError> {
    let corrupt = |error: String| StoreError::Corrupt { tree: "log", error };
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let seq = first + out.len() as Seq;
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(|| corrupt(format!("entry {seq} is truncated")))?;
        if u32::from_be_bytes(*len) == CARRIED {
            // What the batch carries (see `encode_record`).
            break;
        }
        let len = u32::from_be_bytes(*len) as usize;
        let record = tail.get(..len).ok_or_else(|| corrupt(format!("entry {seq} is truncated")))?;
        let newline =
            record.iter().position(|b| *b == b'\n').ok_or_else(|| corrupt(format!("entry {seq} has no topic line")))?;
        let topics = std::str::from_utf8(&record[..newline])
            .map_err(|e| corrupt(e.to_string()))?
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<Topic>().map_err(|e| corrupt(format!("entry {seq}: {e}"))))
            .collect::<Result<_, _>>()?;
        out.push(Frame { seq, topics, json: Bytes::copy_from_slice(&record[newline + 1..]) });
        rest = &tail[len..];
    }
    Ok(out)
}
