//! `Idempotency-Key`s: the outcome of a keyed command is recorded with its batch, so that a
//! retry with the same key and the same command gets that outcome instead of a second
//! execution, for [`TTL`].

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use muster_protocol::Timestamp;
use serde::{Deserialize, Serialize};

use super::handles::{Committed, Outcome, WriteError};
use crate::core::{Command, DomainError, Reply};

/// How long an `Idempotency-Key` is remembered.
pub(crate) const TTL: Duration = Duration::from_secs(24 * 3600);

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
#[derive(Default)]
pub(super) struct Idempotency {
    recorded: HashMap<String, Recorded>,
    expiry: VecDeque<(Timestamp, String)>,
}

impl Idempotency {
    /// The records the store kept; unreadable ones are dropped with a warning.
    pub(super) fn load(records: Vec<(String, Vec<u8>)>) -> Idempotency {
        let mut table = Idempotency::default();
        let mut expiry = Vec::new();
        for (key, bytes) in records {
            match serde_json::from_slice::<Recorded>(&bytes) {
                Ok(r) => {
                    expiry.push((r.at, key.clone()));
                    table.recorded.insert(key, r);
                }
                Err(error) => tracing::warn!(%key, %error, "dropping an unreadable idempotency record"),
            }
        }
        expiry.sort();
        table.expiry = expiry.into();
        table
    }

    /// The answer to a retry of a command with this key and fingerprint, if the key was
    /// used: the recorded outcome, or a mismatch when it was used for another command.
    pub(super) fn replay(&self, key: &str, fingerprint: u64) -> Option<Outcome> {
        let recorded = self.recorded.get(key)?;
        Some(if recorded.fingerprint == fingerprint {
            recorded.outcome.clone().map(|reply| Committed { reply, replayed: true }).map_err(WriteError::from)
        } else {
            Err(WriteError::IdempotencyMismatch(key.to_owned()))
        })
    }

    /// Records an outcome; returns the record as the store keeps it.
    pub(super) fn record(
        &mut self,
        key: String,
        fingerprint: u64,
        at: Timestamp,
        outcome: Result<Reply, DomainError>,
    ) -> Vec<u8> {
        let record = Recorded { at, fingerprint, outcome };
        // Plain data; serializing cannot fail.
        let bytes = serde_json::to_vec(&record).expect("record serializes");
        self.expiry.push_back((at, key.clone()));
        self.recorded.insert(key, record);
        bytes
    }

    /// Forgets records that were never made durable.
    pub(super) fn forget(&mut self, keys: &[String]) {
        for key in keys {
            self.recorded.remove(key);
        }
        self.expiry.retain(|(_, k)| !keys.contains(k));
    }

    /// Drops records older than [`TTL`]; returns their keys.
    pub(super) fn expire(&mut self, now: Timestamp) -> Vec<String> {
        let mut expired = Vec::new();
        while let Some((at, _)) = self.expiry.front() {
            if (now - *at).to_std().unwrap_or_default() < TTL {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_front() {
                self.recorded.remove(&key);
                expired.push(key);
            }
        }
        expired
    }
}
