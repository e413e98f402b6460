//! Append-only segment files, for what only grows: the log's batches and chat messages.
//! sled keeps an entry in memory for every page it has on disk, so its memory follows the
//! bytes it stores (about 40 MiB per GiB, measured); records kept here cost no memory while
//! they are not read. sled holds only their positions ([`Pos`]), in its index trees.
//!
//! A directory of files named by number (`00000000`, `00000001`, ...), each up to
//! [`SEGMENT_BYTES`]; a record is `u32 length, u32 crc32, payload`, written with one
//! `pwrite` (it survives a crash of the process at once) and made durable by [`Segments::sync`],
//! which the store runs with sled's flush. A record is trusted only through a position
//! sled holds and is checked (length, crc) when read: bytes after the last one referenced
//! (a write that was never acknowledged) are ignored, and a position whose record is
//! missing or damaged reads as [`StoreError::Corrupt`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::error::StoreError;

/// A segment file is closed for appends once it holds this many bytes.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;

/// Bytes of a record's header: its length and its crc32.
const HEADER: usize = 8;

/// Where a record is: its segment, its offset there, and its payload's length. Stored in
/// sled as 12 big-endian bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pos {
    segment: u32,
    offset: u32,
    len: u32,
}

impl Pos {
    /// The 12 bytes sled stores.
    pub(super) fn encode(self) -> [u8; 12] {
        let mut out = [0; 12];
        out[..4].copy_from_slice(&self.segment.to_be_bytes());
        out[4..8].copy_from_slice(&self.offset.to_be_bytes());
        out[8..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// A position as [`Pos::encode`] wrote it; `None` for anything else.
    pub(super) fn decode(bytes: &[u8]) -> Option<Pos> {
        let bytes: &[u8; 12] = bytes.try_into().ok()?;
        let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        Some(Pos { segment: word(0), offset: word(4), len: word(8) })
    }

    /// The segment the record is in.
    pub(super) fn segment(self) -> u32 {
        self.segment
    }
}

/// A place in the files: a record starts there, or the files end there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cursor {
    segment: u32,
    offset: u64,
}

impl Pos {
    /// Just after the record.
    pub(super) fn end(self) -> Cursor {
        Cursor { segment: self.segment, offset: u64::from(self.offset) + (HEADER as u64) + u64::from(self.len) }
    }
}

/// One directory of segment files.
pub(super) struct Segments {
    /// Names this set in errors (`log`, `chat`).
    name: &'static str,
    dir: PathBuf,
    /// Every segment file, by number, for reads.
    files: RwLock<BTreeMap<u32, Arc<File>>>,
    tail: Mutex<Tail>,
    /// Held for a whole sync: a second sync that found nothing left to sync must not return
    /// before the first one's `fdatasync` has.
    syncing: Mutex<()>,
}

/// Where the next record goes, and what the next sync must cover.
struct Tail {
    /// The segment appended to, and its length (the next record's offset).
    segment: u32,
    len: u64,
    /// Files written since the last sync.
    unsynced: Vec<Arc<File>>,
    /// A file was created since the last sync: the directory must be synced too.
    created: bool,
}

impl Segments {
    /// Opens (or creates) the segment files in `dir`. Appends continue at the end of the
    /// newest file.
    pub(super) fn open(name: &'static str, dir: &Path) -> Result<Segments, StoreError> {
        std::fs::create_dir_all(dir)?;
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(number) = entry.file_name().to_str().and_then(|n| u32::from_str_radix(n, 16).ok()) else {
                continue;
            };
            files.insert(number, Arc::new(OpenOptions::new().read(true).write(true).open(entry.path())?));
        }
        let (segment, len) = match files.last_key_value() {
            Some((n, file)) => (*n, file.metadata()?.len()),
            None => (0, 0),
        };
        let mut created = false;
        if files.is_empty() {
            files.insert(0, Arc::new(create(dir, 0)?));
            created = true;
        }
        Ok(Segments {
            name,
            dir: dir.to_owned(),
            files: RwLock::new(files),
            tail: Mutex::new(Tail { segment, len, unsynced: Vec::new(), created }),
            syncing: Mutex::new(()),
        })
    }

    /// Appends a record; not durable before the next [`Segments::sync`].
    pub(super) fn append(&self, payload: &[u8]) -> Result<Pos, StoreError> {
        let positions = self.append_all(&[payload])?;
        positions.first().copied().ok_or_else(|| self.corrupt("a record was not appended".into()))
    }

    /// Appends records in order, with one write per file they go to; not durable before the
    /// next [`Segments::sync`].
    pub(super) fn append_all(&self, payloads: &[&[u8]]) -> Result<Vec<Pos>, StoreError> {
        let mut tail = self.lock_tail();
        let mut positions = Vec::with_capacity(payloads.len());
        let mut records = Vec::with_capacity(payloads.iter().map(|p| HEADER + p.len()).sum());
        let mut start = tail.len;
        for payload in payloads {
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|len| (*len as u64) < SEGMENT_BYTES)
                .ok_or_else(|| self.corrupt(format!("a record of {} bytes is too large", payload.len())))?;
            let end = start + records.len() as u64;
            if end > 0 && end + (HEADER as u64) + u64::from(len) > SEGMENT_BYTES {
                self.write_at(&mut tail, start, &records)?;
                records.clear();
                let next = tail.segment + 1;
                let file = Arc::new(create(&self.dir, next)?);
                self.write_files().insert(next, file);
                (tail.segment, tail.len, tail.created) = (next, 0, true);
                start = 0;
            }
            // Offsets are below SEGMENT_BYTES.
            let offset = (start + records.len() as u64) as u32;
            positions.push(Pos { segment: tail.segment, offset, len });
            records.extend_from_slice(&len.to_be_bytes());
            records.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
            records.extend_from_slice(payload);
        }
        self.write_at(&mut tail, start, &records)?;
        Ok(positions)
    }

    /// Writes `records` at `offset` of the file appended to. A failed write leaves the end
    /// where it was: the next record goes over what it left.
    fn write_at(&self, tail: &mut Tail, offset: u64, records: &[u8]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let file = self.file(tail.segment)?;
        file.write_all_at(records, offset)?;
        tail.len = offset + records.len() as u64;
        if !tail.unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
            tail.unsynced.push(file);
        }
        Ok(())
    }

    /// Makes every record appended before this call durable (`fdatasync` of the files
    /// written, and of the directory when a file was created).
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        let _syncing = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let (files, created) = {
            let mut tail = self.lock_tail();
            (std::mem::take(&mut tail.unsynced), std::mem::take(&mut tail.created))
        };
        let synced = files
            .iter()
            .try_for_each(|f| f.sync_data())
            .and_then(|()| if created { File::open(&self.dir)?.sync_all() } else { Ok(()) });
        if let Err(e) = synced {
            // Whatever was not synced must be the next sync's.
            let mut tail = self.lock_tail();
            tail.unsynced.extend(files);
            tail.created |= created;
            return Err(e.into());
        }
        Ok(())
    }

    /// Every record from `start` on, in the order they were appended, up to the first that
    /// is missing, torn or damaged (what a crash can leave after the last one synced). A file
    /// read to its end goes on in the next one.
    pub(super) fn scan(&self, start: Cursor) -> Result<Vec<(Pos, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let Cursor { mut segment, mut offset } = start;
        let files = self.files();
        let mut at = files.iter().position(|(n, _)| *n == segment);
        while let Some(i) = at {
            let file = &files[i].1;
            let size = file.metadata()?.len();
            if offset == size {
                at = Some(i + 1).filter(|next| *next < files.len());
                if let Some(next) = at {
                    (segment, offset) = (files[next].0, 0);
                }
                continue;
            }
            let mut header = [0; HEADER];
            if offset + HEADER as u64 > size || file.read_exact_at(&mut header, offset).is_err() {
                break;
            }
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            let mut payload = vec![0; len as usize];
            let whole = offset + (HEADER as u64) + u64::from(len) <= size
                && file.read_exact_at(&mut payload, offset + HEADER as u64).is_ok()
                && crc == crc32fast::hash(&payload);
            if !whole {
                break;
            }
            // Offsets are below SEGMENT_BYTES (4 GiB would not fit a position).
            out.push((Pos { segment, offset: offset as u32, len }, payload));
            offset += (HEADER as u64) + u64::from(len);
        }
        Ok(out)
    }

    /// Where the first record of the oldest file is.
    pub(super) fn start(&self) -> Cursor {
        Cursor { segment: self.read_files().keys().next().copied().unwrap_or(0), offset: 0 }
    }

    /// Cuts the files back to `end`: what follows it (in its file and in later ones) goes, and
    /// the next record is appended there. Durable with the next [`Segments::sync`].
    pub(super) fn truncate(&self, end: Cursor) -> Result<(), StoreError> {
        let mut tail = self.lock_tail();
        let later: Vec<u32> = self.read_files().range(end.segment + 1..).map(|(n, _)| *n).collect();
        for n in later {
            self.write_files().remove(&n);
            std::fs::remove_file(self.dir.join(name(n)))?;
            tail.created = true;
        }
        let file = self.file(end.segment)?;
        if file.metadata()?.len() > end.offset {
            file.set_len(end.offset)?;
        }
        (tail.segment, tail.len) = (end.segment, end.offset);
        if !tail.unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
            tail.unsynced.push(file);
        }
        Ok(())
    }

    /// The payload of the record at `pos`, checked.
    pub(super) fn read(&self, pos: Pos) -> Result<Vec<u8>, StoreError> {
        let file = self.file(pos.segment)?;
        let mut record = vec![0; HEADER + pos.len as usize];
        file.read_exact_at(&mut record, u64::from(pos.offset))
            .map_err(|e| self.corrupt(format!("record at {pos:?} cannot be read: {e}")))?;
        let (header, payload) = record.split_at(HEADER);
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if len != pos.len || crc != crc32fast::hash(payload) {
            return Err(self.corrupt(format!("record at {pos:?} is damaged")));
        }
        record.drain(..HEADER);
        Ok(record)
    }

    /// Deletes the segment files numbered below `segment` (never the one appended to).
    /// Their records must no longer be referenced, durably.
    pub(super) fn remove_below(&self, segment: u32) -> Result<(), StoreError> {
        let current = self.lock_tail().segment;
        let old: Vec<u32> = self.read_files().range(..segment.min(current)).map(|(n, _)| *n).collect();
        for n in old {
            // A reader that holds the file keeps reading it; the name goes now.
            self.write_files().remove(&n);
            std::fs::remove_file(self.dir.join(name(n)))?;
        }
        Ok(())
    }

    /// Every segment file, by number (a snapshot copies them).
    pub(super) fn files(&self) -> Vec<(u32, Arc<File>)> {
        self.read_files().iter().map(|(n, f)| (*n, Arc::clone(f))).collect()
    }

    /// Bytes the segment files occupy.
    pub(super) fn size(&self) -> u64 {
        self.read_files().values().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum()
    }

    /// Flips a bit of the record at `pos` on disk, as a lost or torn write would leave it.
    #[cfg(test)]
    pub(super) fn damage(&self, pos: Pos) {
        let file = self.file(pos.segment).unwrap_or_else(|e| panic!("{e}"));
        let at = u64::from(pos.offset) + HEADER as u64;
        let mut byte = [0];
        file.read_exact_at(&mut byte, at)
            .and_then(|()| file.write_all_at(&[byte[0] ^ 1], at))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn file(&self, segment: u32) -> Result<Arc<File>, StoreError> {
        self.read_files().get(&segment).cloned().ok_or_else(|| self.corrupt(format!("segment {segment} is missing")))
    }

    fn corrupt(&self, error: String) -> StoreError {
        StoreError::Corrupt { tree: self.name, error }
    }

    fn lock_tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        // A poisoned lock only means a panic elsewhere; the offsets are still valid.
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_files(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, Arc<File>>> {
        self.files.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_files(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u32, Arc<File>>> {
        self.files.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The file name of segment `n`.
fn name(n: u32) -> String {
    format!("{n:08x}")
}

fn create(dir: &Path, n: u32) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).create_new(true).open(dir.join(name(n)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn records_read_back_across_segments_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; (SEGMENT_BYTES / 3) as usize];
        let positions = {
            let segments = Segments::open("test", dir.path()).unwrap();
            let positions: Vec<Pos> = (0..4u8)
                .map(|i| {
                    let mut payload = big.clone();
                    payload[0] = i;
                    segments.append(&payload).unwrap()
                })
                .collect();
            segments.sync().unwrap();
            positions
        };
        assert_eq!(positions.iter().map(|p| p.segment()).collect::<Vec<_>>(), [0, 0, 1, 1], "a full file rolls over");
        let segments = Segments::open("test", dir.path()).unwrap();
        for (i, pos) in positions.iter().enumerate() {
            let payload = segments.read(Pos::decode(&pos.encode()).unwrap()).unwrap();
            assert_eq!((payload[0], payload.len()), (i as u8, big.len()));
        }
        let next = segments.append(b"after the reopen").unwrap();
        assert_eq!((next.segment(), u64::from(next.offset)), (1, 2 * (big.len() + HEADER) as u64));
        segments.remove_below(1).unwrap();
        assert!(matches!(segments.read(positions[0]), Err(StoreError::Corrupt { .. })));
        assert_eq!(segments.read(next).unwrap(), b"after the reopen");
    }

    #[test]
    fn a_damaged_or_torn_record_is_an_error_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open("test", dir.path()).unwrap();
        let first = segments.append(b"first").unwrap();
        let second = segments.append(b"second").unwrap();
        drop(segments);
        let path = dir.path().join(name(0));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 1] ^= 1;
        // As a crash can leave it: the second record cut short.
        bytes.truncate(bytes.len() - 2);
        std::fs::write(&path, &bytes).unwrap();
        let segments = Segments::open("test", dir.path()).unwrap();
        assert!(matches!(segments.read(first), Err(StoreError::Corrupt { .. })), "a flipped bit is caught");
        assert!(matches!(segments.read(second), Err(StoreError::Corrupt { .. })), "a torn record is caught");
        let third = segments.append(b"third").unwrap();
        assert_eq!(segments.read(third).unwrap(), b"third");
    }
}
