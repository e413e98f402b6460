//! `Idempotency-Key`s: the reply to an accepted keyed command is recorded with its batch,
//! so that a retry with the same key and the same command gets that reply instead of a
//! second execution. Kept for [`TTL`] or the newest `--idempotency-keys` keys (and at most
//! [`MAX_BYTES`]), whichever is fewer. A refused command is not recorded: its retry is
//! decided again, which refuses it again unless the state changed — and a key per refused
//! request cannot grow the broker's memory.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use muster_protocol::Timestamp;
use serde::{Deserialize, Serialize};

use super::handles::{Committed, Outcome, WriteError};
use crate::core::{Command, DomainError, Reply};

/// How long an `Idempotency-Key` is remembered.
pub(crate) const TTL: Duration = Duration::from_secs(24 * 3600);
/// Most bytes of recorded replies: a reply is at most a task with an 8 KiB description, so
/// even at the default count the records stay a few MiB, in memory and on disk.
pub(crate) const MAX_BYTES: usize = 8 << 20;

/// The outcome recorded under an `Idempotency-Key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Recorded {
    at: Timestamp,
    fingerprint: u64,
    outcome: Result<Reply, DomainError>,
}

/// FNV-1a of the command: a fingerprint that stays the same across restarts and Rust
/// versions, so that a key reused for another request is told apart.
pub(super) fn fingerprint(cmd: &Command) -> u64 {
    // Commands are plain data; serializing them cannot fail.
    let bytes = serde_json::to_vec(cmd).expect("command serializes");
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The keys remembered, oldest first for expiry.
pub(super) struct Idempotency {
    recorded: HashMap<String, (Recorded, usize)>,
    expiry: VecDeque<(Timestamp, String)>,
    /// Most keys kept.
    max_keys: usize,
    /// Bytes of the records kept (their stored size).
    bytes: usize,
    /// Keys evicted to stay within the bounds, to remove from the store with the next batch.
    evicted: Vec<String>,
}

impl Idempotency {
    /// The records the store kept, within the bounds (older ones, refusals recorded by an
    /// earlier version, and unreadable ones are dropped).
    pub(super) fn load(records: Vec<(String, Vec<u8>)>, max_keys: usize) -> Idempotency {
        let mut table =
            Idempotency { recorded: HashMap::new(), expiry: VecDeque::new(), max_keys, bytes: 0, evicted: Vec::new() };
        let mut expiry = Vec::new();
        for (key, bytes) in records {
            match serde_json::from_slice::<Recorded>(&bytes) {
                Ok(r) if r.outcome.is_ok() => {
                    expiry.push((r.at, key.clone()));
                    table.bytes += bytes.len();
                    table.recorded.insert(key, (r, bytes.len()));
                }
                Ok(_) => table.evicted.push(key),
                Err(error) => {
                    tracing::warn!(%key, %error, "dropping an unreadable idempotency record");
                    table.evicted.push(key);
                }
            }
        }
        expiry.sort();
        table.expiry = expiry.into();
        table.bound();
        table
    }

    /// Keys remembered.
    pub(super) fn len(&self) -> usize {
        self.recorded.len()
    }

    /// Evicts the oldest records beyond the bounds.
    fn bound(&mut self) {
        while self.recorded.len() > self.max_keys || self.bytes > MAX_BYTES {
            let Some((_, key)) = self.expiry.pop_front() else { break };
            if let Some((_, size)) = self.recorded.remove(&key) {
                self.bytes -= size;
            }
            self.evicted.push(key);
        }
    }

    /// The answer to a retry of a command with this key and fingerprint, if the key was
    /// used: the recorded outcome, or a mismatch when it was used for another command.
    pub(super) fn replay(&self, key: &str, fingerprint: u64) -> Option<Outcome> {
        let (recorded, _) = self.recorded.get(key)?;
        Some(if recorded.fingerprint == fingerprint {
            recorded.outcome.clone().map(|reply| Committed { reply, replayed: true, seq: 0 }).map_err(WriteError::from)
        } else {
            Err(WriteError::IdempotencyMismatch(key.to_owned()))
        })
    }

    /// Records the reply to an accepted command; returns the record as the store keeps it.
    pub(super) fn record(&mut self, key: String, fingerprint: u64, at: Timestamp, reply: Reply) -> Vec<u8> {
        let record = Recorded { at, fingerprint, outcome: Ok(reply) };
        // Plain data; serializing cannot fail.
        let bytes = serde_json::to_vec(&record).expect("record serializes");
        self.expiry.push_back((at, key.clone()));
        self.bytes += bytes.len();
        self.recorded.insert(key, (record, bytes.len()));
        self.bound();
        bytes
    }

    /// Takes a record another node made (a cluster follower applying the leader's batch), as
    /// the store keeps it; an unreadable one is skipped.
    pub(super) fn adopt(&mut self, key: String, bytes: &[u8]) {
        match serde_json::from_slice::<Recorded>(bytes) {
            Ok(record) => {
                self.forget(std::slice::from_ref(&key));
                self.expiry.push_back((record.at, key.clone()));
                self.bytes += bytes.len();
                self.recorded.insert(key, (record, bytes.len()));
                self.bound();
            }
            Err(error) => tracing::warn!(%key, %error, "skipping an unreadable idempotency record"),
        }
    }

    /// Forgets records that were never made durable.
    pub(super) fn forget(&mut self, keys: &[String]) {
        for key in keys {
            if let Some((_, size)) = self.recorded.remove(key) {
                self.bytes -= size;
            }
        }
        self.expiry.retain(|(_, k)| !keys.contains(k));
    }

    /// Drops records older than [`TTL`]; returns their keys, and those evicted to stay
    /// within the bounds, for the store to remove.
    pub(super) fn expire(&mut self, now: Timestamp) -> Vec<String> {
        let mut expired = std::mem::take(&mut self.evicted);
        while let Some((at, _)) = self.expiry.front() {
            if (now - *at).to_std().unwrap_or_default() < TTL {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_front() {
                if let Some((_, size)) = self.recorded.remove(&key) {
                    self.bytes -= size;
                }
                expired.push(key);
            }
        }
        expired
    }
}
