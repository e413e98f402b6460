//! The index of chat messages by channel and by recipient: for each name, the `seq` and
//! the record position of its messages, in chunks of up to [`CHUNK`] entries.
//!
//! A chunk is one sled value under `name \0 seq` (the `seq` of its first entry), holding
//! `seq` (8 bytes, big-endian) and the position (12 bytes) of each entry, in `seq` order.
//! Messages only ever arrive in `seq` order, so a name's last chunk is the only one that
//! grows. Why chunks: sled keeps memory for every page it has on disk, whether cached or
//! not, and a leaf page holds at most 16 keys: one key per message made its memory follow
//! the history (measured: 42 MiB more for a million messages). One key per chunk divides
//! that by [`CHUNK`].
//!
//! Schema 5 kept one key per message (value: the 12-byte position); [`ChatIndex::all`]
//! reads that form too, for the upgrade (see `upgrade`).

use muster_protocol::Seq;

use super::db::{StoreError, be, key_chat, prefix};
use super::segments::Pos;

/// Entries in a full chunk: a 640-byte value, rewritten with each message appended to it.
const CHUNK: usize = 32;

/// Bytes of one entry: `seq`, then the position.
const ENTRY: usize = 20;

/// One tree of chunks (`chat-index` or `inbox-index`).
#[derive(Clone, Copy)]
pub(super) struct ChatIndex<'a> {
    tree: &'a sled::Tree,
    /// The tree's name, for errors.
    name: &'static str,
}

impl<'a> ChatIndex<'a> {
    /// The index in `tree`, called `name` in errors.
    pub(super) fn new(tree: &'a sled::Tree, name: &'static str) -> ChatIndex<'a> {
        ChatIndex { tree, name }
    }

    /// The tree's name.
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// Adds the message `seq` at `pos` to `name`'s entries. A `seq` not past the last one is
    /// already there (the log re-applied after a crash): nothing changes.
    pub(super) fn append(&self, name: &str, seq: Seq, pos: Pos) -> Result<(), StoreError> {
        let mut entry = [0; ENTRY];
        entry[..8].copy_from_slice(&seq.to_be_bytes());
        entry[8..].copy_from_slice(&pos.encode());
        if let Some(last) = self.tree.range(prefix(name)..=key_chat(name, Seq::MAX)).next_back() {
            let (key, chunk) = last?;
            let entries = self.entries(&chunk)?;
            if entries.last().is_some_and(|(last, _)| *last >= seq) {
                return Ok(());
            }
            if entries.len() < CHUNK {
                let mut grown = Vec::with_capacity(chunk.len() + ENTRY);
                grown.extend_from_slice(&chunk);
                grown.extend_from_slice(&entry);
                self.tree.insert(key, grown)?;
                return Ok(());
            }
        }
        self.tree.insert(key_chat(name, seq), &entry[..])?;
        Ok(())
    }

    /// Adds the messages `entries` (in `seq` order) to `name`'s entries, as
    /// [`ChatIndex::append`] adds each, with one insert per chunk they go to: a batch's
    /// messages to one channel cost about one insert, not one each.
    pub(super) fn extend(&self, name: &str, entries: &[(Seq, Pos)]) -> Result<(), StoreError> {
        let mut chunk: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut last = None;
        if let Some(found) = self.tree.range(prefix(name)..=key_chat(name, Seq::MAX)).next_back() {
            let (key, bytes) = found?;
            last = self.entries(&bytes)?.last().map(|(seq, _)| *seq);
            if bytes.len() < CHUNK * ENTRY {
                chunk = Some((key.to_vec(), bytes.to_vec()));
            }
        }
        let mut changed = false;
        for (seq, pos) in entries {
            // Already there (the log re-applied after a crash), or named twice.
            if last.is_some_and(|last| *seq <= last) {
                continue;
            }
            last = Some(*seq);
            if chunk.as_ref().is_none_or(|(_, bytes)| bytes.len() >= CHUNK * ENTRY) {
                if let Some((key, bytes)) = chunk.take().filter(|_| changed) {
                    self.tree.insert(key, bytes)?;
                }
                chunk = Some((key_chat(name, *seq), Vec::with_capacity(CHUNK * ENTRY)));
            }
            if let Some((_, bytes)) = chunk.as_mut() {
                bytes.extend_from_slice(&seq.to_be_bytes());
                bytes.extend_from_slice(&pos.encode());
                changed = true;
            }
        }
        if let Some((key, bytes)) = chunk.filter(|_| changed) {
            self.tree.insert(key, bytes)?;
        }
        Ok(())
    }

    /// The position of the message `seq` in `name`'s entries, if there.
    pub(super) fn find(&self, name: &str, seq: Seq) -> Result<Option<Pos>, StoreError> {
        let Some(found) = self.tree.range(prefix(name)..=key_chat(name, seq)).next_back() else {
            return Ok(None);
        };
        let (_, chunk) = found?;
        Ok(self.entries(&chunk)?.into_iter().find(|(s, _)| *s == seq).map(|(_, pos)| pos))
    }

    /// Points the message `seq` of `name` at `pos`: its entry if there is one (a message
    /// whose record a crash lost, written again), else a new one as [`ChatIndex::append`]
    /// adds it.
    pub(super) fn set(&self, name: &str, seq: Seq, pos: Pos) -> Result<(), StoreError> {
        if let Some(found) = self.tree.range(prefix(name)..=key_chat(name, seq)).next_back() {
            let (key, chunk) = found?;
            if let Some(at) = self.entries(&chunk)?.iter().position(|(s, _)| *s == seq) {
                let mut moved = chunk.to_vec();
                moved[at * ENTRY + 8..(at + 1) * ENTRY].copy_from_slice(&pos.encode());
                self.tree.insert(key, moved)?;
                return Ok(());
            }
        }
        self.append(name, seq, pos)
    }

    /// Removes the message `seq` from `name`'s entries, if there.
    pub(super) fn remove(&self, name: &str, seq: Seq) -> Result<(), StoreError> {
        let Some(found) = self.tree.range(prefix(name)..=key_chat(name, seq)).next_back() else {
            return Ok(());
        };
        let (key, chunk) = found?;
        let entries = self.entries(&chunk)?;
        let Some(at) = entries.iter().position(|(s, _)| *s == seq) else {
            return Ok(());
        };
        let mut kept = chunk.to_vec();
        kept.drain(at * ENTRY..(at + 1) * ENTRY);
        match (kept.is_empty(), at) {
            (true, _) => self.tree.remove(key)?,
            // The key names the first entry.
            (false, 0) => {
                self.tree.remove(key)?;
                self.tree.insert(key_chat(name, entries[1].0), kept)?
            }
            (false, _) => self.tree.insert(key, kept)?,
        };
        Ok(())
    }

    /// `name`'s entries, oldest first: those after `since` (the first `limit`), or else the
    /// newest `limit` before `before` (or at all). With both, those between.
    pub(super) fn page(
        &self,
        name: &str,
        since: Option<Seq>,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<(Seq, Pos)>, StoreError> {
        let end = before.unwrap_or(Seq::MAX);
        let mut out = Vec::with_capacity(limit.min(1024));
        match since {
            Some(since) => {
                for chunk in self.chunks_from(name, since.saturating_add(1), end)? {
                    let chunk = chunk?;
                    let fresh = self.entries(&chunk)?.into_iter().filter(|(s, _)| *s > since && *s < end);
                    out.extend(fresh.take(limit - out.len()));
                    if out.len() == limit {
                        break;
                    }
                }
            }
            None => {
                // Chunks whose first entry is before `end`: those that hold any entry before it.
                for chunk in self.tree.range(prefix(name)..key_chat(name, end)).values().rev() {
                    let chunk = chunk?;
                    let older = self.entries(&chunk)?.into_iter().rev().filter(|(s, _)| *s < end);
                    out.extend(older.take(limit - out.len()));
                    if out.len() == limit {
                        break;
                    }
                }
                out.reverse();
            }
        }
        Ok(out)
    }

    /// Number of `name`'s entries after `seq`.
    pub(super) fn count_after(&self, name: &str, seq: Seq) -> Result<u64, StoreError> {
        let mut n = 0;
        for chunk in self.chunks_from(name, seq.saturating_add(1), Seq::MAX)? {
            n += self.entries(&chunk?)?.iter().filter(|(s, _)| *s > seq).count() as u64;
        }
        Ok(n)
    }

    /// Every entry, as `(name, seq, position)`, in name then `seq` order; schema 5's one key
    /// per message is read too.
    pub(super) fn all(&self) -> impl Iterator<Item = Result<(String, Seq, Pos), StoreError>> + 'a {
        let index = *self;
        self.tree.iter().flat_map(move |kv| {
            let read = || -> Result<Vec<(String, Seq, Pos)>, StoreError> {
                let (key, value) = kv?;
                let (name, first) = split_key(index.name, &key)?;
                let entries = match Pos::decode(&value) {
                    Some(pos) => vec![(first, pos)],
                    None => index.entries(&value)?,
                };
                Ok(entries.into_iter().map(|(seq, pos)| (name.clone(), seq, pos)).collect())
            };
            match read() {
                Ok(entries) => entries.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
        })
    }

    /// Removes every entry.
    pub(super) fn clear(&self) -> Result<(), StoreError> {
        Ok(self.tree.clear()?)
    }

    /// The chunks that may hold `name`'s entries from `from` (inclusive) up to `end`
    /// (exclusive): the one `from` falls in, then those after it.
    fn chunks_from(
        &self,
        name: &str,
        from: Seq,
        end: Seq,
    ) -> Result<impl Iterator<Item = sled::Result<sled::IVec>> + use<>, StoreError> {
        let start = match self.tree.range(prefix(name)..=key_chat(name, from)).next_back() {
            Some(found) => found?.0.to_vec(),
            None => key_chat(name, from),
        };
        Ok(self.tree.range(start..key_chat(name, end)).values())
    }

    /// The entries of a chunk.
    fn entries(&self, chunk: &[u8]) -> Result<Vec<(Seq, Pos)>, StoreError> {
        if chunk.is_empty() || !chunk.len().is_multiple_of(ENTRY) {
            return Err(self.corrupt(format!("a chunk of {} bytes", chunk.len())));
        }
        let entry = |e: &[u8]| Some((be(&e[..8])?, Pos::decode(&e[8..])?));
        chunk.chunks(ENTRY).map(|e| entry(e).ok_or_else(|| self.corrupt("an unreadable entry".into()))).collect()
    }

    fn corrupt(&self, error: String) -> StoreError {
        StoreError::Corrupt { tree: self.name, error }
    }
}

/// The name and `seq` of a `name \0 seq` key of the tree `tree`.
pub(super) fn split_key(tree: &'static str, key: &[u8]) -> Result<(String, Seq), StoreError> {
    let at = key.len().checked_sub(9).filter(|at| key[*at] == 0);
    match at.and_then(|at| Some((at, be(&key[at + 1..])?))) {
        Some((at, seq)) => Ok((String::from_utf8_lossy(&key[..at]).into_owned(), seq)),
        None => Err(StoreError::Corrupt { tree, error: format!("a key of {} bytes", key.len()) }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// A position that names its `seq`, to tell entries apart.
    fn pos(seq: Seq) -> Pos {
        let mut bytes = [0; 12];
        bytes[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        Pos::decode(&bytes).unwrap()
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A message to these names (indexes into `NAMES`), with the next `seq`.
        Post(Vec<usize>),
        /// Messages indexed together, as a batch's are (`extend`), each with the next `seq`.
        Batch(Vec<Vec<usize>>),
        /// The same message indexed again (the log re-applied).
        Replay,
        Remove {
            name: usize,
            nth: usize,
        },
        Page {
            name: usize,
            since: Option<Seq>,
            before: Option<Seq>,
            limit: usize,
        },
        Count {
            name: usize,
            after: Seq,
        },
    }

    /// Names where one is the start of another.
    const NAMES: [&str; 3] = ["a", "ab", "b"];

    fn op() -> impl Strategy<Value = Op> {
        let name = 0..NAMES.len();
        let seq = 0..300u64;
        prop_oneof![
            8 => proptest::collection::vec(0..NAMES.len(), 1..3).prop_map(Op::Post),
            3 => proptest::collection::vec(proptest::collection::vec(0..NAMES.len(), 1..3), 1..80).prop_map(Op::Batch),
            1 => Just(Op::Replay),
            1 => (name.clone(), 0..100usize).prop_map(|(name, nth)| Op::Remove { name, nth }),
            2 => (name.clone(), proptest::option::of(seq.clone()), proptest::option::of(seq.clone()), 1..70usize)
                .prop_map(|(name, since, before, limit)| Op::Page { name, since, before, limit }),
            1 => (name, seq).prop_map(|(name, after)| Op::Count { name, after }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever is appended (one by one or a batch at a time), removed and re-appended,
        /// pages and counts are what a plain sorted map of the entries gives.
        #[test]
        fn pages_and_counts_match_a_sorted_map(ops in proptest::collection::vec(op(), 1..300)) {
            let db = sled::Config::new().temporary(true).open().unwrap();
            let tree = db.open_tree("chat-index").unwrap();
            let index = ChatIndex::new(&tree, "chat-index");
            let mut model: BTreeMap<&str, BTreeMap<Seq, Pos>> = BTreeMap::new();
            let mut seq = 0;
            let mut last: Vec<usize> = Vec::new();
            for op in ops {
                match op {
                    Op::Post(names) => {
                        seq += 1;
                        last = names;
                        for &n in &last {
                            index.append(NAMES[n], seq, pos(seq)).unwrap();
                            model.entry(NAMES[n]).or_default().insert(seq, pos(seq));
                        }
                    }
                    Op::Batch(messages) => {
                        let mut by_name: BTreeMap<usize, Vec<(Seq, Pos)>> = BTreeMap::new();
                        for names in messages {
                            seq += 1;
                            for &n in &names {
                                by_name.entry(n).or_default().push((seq, pos(seq)));
                                model.entry(NAMES[n]).or_default().insert(seq, pos(seq));
                            }
                            last = names;
                        }
                        for (n, entries) in by_name {
                            index.extend(NAMES[n], &entries).unwrap();
                        }
                    }
                    Op::Replay => {
                        for &n in &last {
                            index.append(NAMES[n], seq, pos(seq)).unwrap();
                            // Not there only if removed meanwhile, and then the newest.
                            let entries = model.entry(NAMES[n]).or_default();
                            if entries.keys().next_back().is_none_or(|newest| *newest < seq) {
                                entries.insert(seq, pos(seq));
                            }
                        }
                    }
                    Op::Remove { name, nth } => {
                        let entries = model.entry(NAMES[name]).or_default();
                        if let Some(&s) = entries.keys().nth(nth % entries.len().max(1)) {
                            index.remove(NAMES[name], s).unwrap();
                            entries.remove(&s);
                        }
                    }
                    Op::Page { name, since, before, limit } => {
                        let entries = model.get(NAMES[name]).cloned().unwrap_or_default();
                        let end = before.unwrap_or(Seq::MAX);
                        let want: Vec<(Seq, Pos)> = match since {
                            Some(since) => entries.range(since + 1..).filter(|(s, _)| **s < end).take(limit).map(|(s, p)| (*s, *p)).collect(),
                            None => {
                                let mut newest: Vec<_> = entries.range(..end).rev().take(limit).map(|(s, p)| (*s, *p)).collect();
                                newest.reverse();
                                newest
                            }
                        };
                        prop_assert_eq!(index.page(NAMES[name], since, before, limit).unwrap(), want);
                    }
                    Op::Count { name, after } => {
                        let want = model.get(NAMES[name]).map_or(0, |e| e.range(after + 1..).count() as u64);
                        prop_assert_eq!(index.count_after(NAMES[name], after).unwrap(), want);
                    }
                }
            }
            let all: Vec<(String, Seq, Pos)> = index.all().map(Result::unwrap).collect();
            let want: Vec<(String, Seq, Pos)> = model
                .iter()
                .flat_map(|(name, entries)| entries.iter().map(|(s, p)| ((*name).to_owned(), *s, *p)))
                .collect();
            prop_assert_eq!(all, want);
        }
    }

    #[test]
    fn a_name_takes_one_key_per_chunk() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("chat-index").unwrap();
        let index = ChatIndex::new(&tree, "chat-index");
        for seq in 1..=1000 {
            index.append("general", seq, pos(seq)).unwrap();
        }
        assert_eq!(tree.len(), 1000usize.div_ceil(CHUNK));
        assert_eq!(index.page("general", Some(990), None, 50).unwrap().len(), 10);
    }
}
