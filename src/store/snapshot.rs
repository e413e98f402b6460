//! A snapshot of a data dir, as one stream of bytes: [`export`] writes every sled tree and
//! every segment file; [`import`] makes a new data dir of them. A cluster node uploads its
//! snapshots, so that the cluster's log can be trimmed below them and a new node starts
//! from one instead of from the first event.
//!
//! The export must run while the writer does not write (the sequencer's writer runs it,
//! between two batches): what it writes is then the store as a crash would leave it at that
//! moment, which opening a store already copes with (the views and the log's tail after
//! them are loaded as after any restart).
//!
//! The format: [`MAGIC`], the schema (`u64`), then sections, each a tag byte: `T` a tree
//! (its name, then `key, value` pairs, then [`END_OF_TREE`]), `F` a segment file (its set,
//! its number, its length, its bytes), `E` the end. Names and byte strings are a `u32`
//! length then the bytes; numbers are big-endian.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::db::{Db, SCHEMA, SLED_DIR, open_sled};
use super::error::StoreError;

/// The first bytes of a snapshot.
const MAGIC: &[u8] = b"muster snapshot 1\n";
/// The length that ends a tree's entries.
const END_OF_TREE: u32 = u32::MAX;
/// The segment sets, by their directory in the data dir.
const SETS: [&str; 2] = ["log", "chat"];
/// Entries inserted into a tree at once while importing.
const IMPORT_BATCH: usize = 4096;

/// Writes the whole store to `out`; returns the bytes written. Only the writer writes to
/// the store, and it must not meanwhile; the log's trimming (a timer) may: the segment
/// files are listed, and held open, before the trees are read, so that every position the
/// trees hold is in a file the snapshot carries (a file trimmed meanwhile is read through
/// the handle held).
pub(crate) fn export(db: &Db, out: impl Write) -> Result<u64, StoreError> {
    let mut out = Counting { inner: BufWriter::with_capacity(1 << 20, out), bytes: 0 };
    let files: Vec<_> = SETS
        .into_iter()
        .zip([&db.log_records, &db.chat_records])
        .flat_map(|(set, segments)| segments.files().into_iter().map(move |(n, f)| (set, n, f)))
        .collect();
    out.write_all(MAGIC)?;
    out.write_all(&SCHEMA.to_be_bytes())?;
    let h = db.handles()?;
    for name in h.db.tree_names() {
        let tree = h.db.open_tree(&name)?;
        out.write_all(b"T")?;
        bytes(&mut out, &name)?;
        for entry in tree.iter() {
            let (key, value) = entry?;
            bytes(&mut out, &key)?;
            bytes(&mut out, &value)?;
        }
        out.write_all(&END_OF_TREE.to_be_bytes())?;
    }
    for (set, number, file) in files {
        let len = file.metadata()?.len();
        out.write_all(b"F")?;
        bytes(&mut out, set.as_bytes())?;
        out.write_all(&number.to_be_bytes())?;
        out.write_all(&len.to_be_bytes())?;
        // Read by position: the handle is shared with readers.
        let mut at = 0;
        let mut buf = vec![0; 1 << 20];
        while at < len {
            let n = file.read_at(&mut buf[..(len - at).min(1 << 20) as usize], at)?;
            if n == 0 {
                return Err(corrupt(format!("segment {set}/{number:08x} shrank while it was read")));
            }
            out.write_all(&buf[..n])?;
            at += n as u64;
        }
    }
    out.write_all(b"E")?;
    out.inner.flush()?;
    Ok(out.bytes)
}

/// Makes the data dir `dir` (which must not exist) from a snapshot that [`export`] wrote,
/// durably. A snapshot of another schema is refused; so is one cut short or damaged (the
/// caller removes what was made of it).
pub(crate) fn import(dir: &Path, input: impl Read, cache_bytes: u64) -> Result<(), StoreError> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut magic = vec![0; MAGIC.len()];
    input.read_exact(&mut magic).map_err(|_| corrupt("not a snapshot: too short".into()))?;
    if magic != MAGIC {
        return Err(corrupt("not a snapshot: it does not start as one".into()));
    }
    let schema = u64::from_be_bytes(array(&mut input)?);
    if schema != SCHEMA {
        return Err(corrupt(format!("a snapshot of schema {schema}, where this muster reads {SCHEMA}")));
    }
    crate::config::create_data_dir(dir)?;
    let db = open_sled(&dir.join(SLED_DIR), dir, cache_bytes)?;
    let mut files = Vec::new();
    loop {
        match array::<1>(&mut input)? {
            [b'T'] => {
                let name = read_bytes(&mut input)?.ok_or_else(|| corrupt("a tree without a name".into()))?;
                let tree = db.open_tree(name)?;
                let mut batch = sled::Batch::default();
                let mut pending = 0;
                while let Some(key) = read_bytes(&mut input)? {
                    let value = read_bytes(&mut input)?.ok_or_else(|| corrupt("a key without a value".into()))?;
                    batch.insert(key, value);
                    pending += 1;
                    if pending == IMPORT_BATCH {
                        tree.apply_batch(std::mem::take(&mut batch))?;
                        pending = 0;
                    }
                }
                tree.apply_batch(batch)?;
            }
            [b'F'] => {
                let set = read_bytes(&mut input)?.unwrap_or_default();
                let set = SETS
                    .into_iter()
                    .find(|s| s.as_bytes() == set)
                    .ok_or_else(|| corrupt(format!("an unknown segment set {:?}", String::from_utf8_lossy(&set))))?;
                let number = u32::from_be_bytes(array(&mut input)?);
                let len = u64::from_be_bytes(array(&mut input)?);
                let path = dir.join(set).join(format!("{number:08x}"));
                std::fs::create_dir_all(dir.join(set))?;
                let mut file = File::create(&path)?;
                if std::io::copy(&mut (&mut input).take(len), &mut file)? != len {
                    return Err(corrupt(format!("segment {set}/{number:08x} is cut short")));
                }
                files.push(file);
            }
            [b'E'] => break,
            [tag] => return Err(corrupt(format!("an unknown section {tag:#04x}"))),
        }
    }
    db.flush()?;
    File::open(dir.join(SLED_DIR).join("db"))?.sync_all()?;
    drop(db);
    for file in files {
        file.sync_all()?;
    }
    for sub in [SLED_DIR, "log", "chat"] {
        std::fs::create_dir_all(dir.join(sub))?;
        File::open(dir.join(sub))?.sync_all()?;
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// A writer that counts what went through it.
struct Counting<W: Write> {
    inner: BufWriter<W>,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn bytes(out: &mut impl Write, bytes: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(bytes.len()).ok().filter(|len| *len != END_OF_TREE);
    let len = len.ok_or_else(|| corrupt(format!("a key or value of {} bytes", bytes.len())))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)?;
    Ok(())
}

/// A byte string, or `None` at the end of a tree.
fn read_bytes(input: &mut impl Read) -> Result<Option<Vec<u8>>, StoreError> {
    let len = u32::from_be_bytes(array(input)?);
    if len == END_OF_TREE {
        return Ok(None);
    }
    let mut out = Vec::new();
    if input.take(u64::from(len)).read_to_end(&mut out)? != len as usize {
        return Err(corrupt("the snapshot is cut short".into()));
    }
    Ok(Some(out))
}

fn array<const N: usize>(input: &mut impl Read) -> Result<[u8; N], StoreError> {
    let mut out = [0; N];
    input.read_exact(&mut out).map_err(|_| corrupt("the snapshot is cut short".into()))?;
    Ok(out)
}

fn corrupt(error: String) -> StoreError {
    StoreError::Corrupt { tree: "snapshot", error }
}
