//! Tokens as cluster state: one list of issued tokens (their hashes) for the whole cluster,
//! kept as one value of the `<name>-tokens` KV bucket, mirrored into every node's
//! `tokens.json`.
//!
//! The operator's tools stay the same: `muster token add NAME --data-dir DIR` on any node's
//! host edits that node's file; the node sees the change (as a single broker does, within
//! [`auth::RELOAD_EVERY`]) and publishes it, merged with the cluster's list (what it added
//! and removed since it last agreed with the cluster, applied to the cluster's newest
//! list, with the revision it read: two nodes edited at once both land); every other node
//! writes the new list into its own file and reloads it. A node that starts takes the
//! cluster's list, so a token revoked while it was down stays revoked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::nats::{CALL_TIMEOUT, CREATE_TIMEOUT, bounded};
use crate::auth::{self, Stored, Tokens};

/// The key of the bucket that holds the list.
const KEY: &str = "tokens";

/// The tokens bucket and the node's file, and the list both last agreed on.
pub(crate) struct TokenSync {
    kv: kv::Store,
    dir: PathBuf,
    /// The list this node last took from, or gave to, the cluster.
    base: Vec<Stored>,
}

impl TokenSync {
    /// At join: writes the cluster's list into this node's file (a node that kept tokens
    /// the cluster no longer has is told which it lost); a cluster that has none yet takes
    /// this node's. Its requests wait only [`CREATE_TIMEOUT`]: the bucket may have just
    /// been made by nodes started together, and join retries.
    pub(super) async fn adopt(kv: kv::Store, dir: &Path) -> Result<TokenSync, String> {
        let local = sorted(auth::list(dir).map_err(|e| format!("{}: {e}", auth::FILE))?);
        loop {
            let entry = match tokio::time::timeout(CREATE_TIMEOUT, kv.entry(KEY)).await {
                Err(_) => return Err("reading the cluster's tokens: timed out".into()),
                Ok(read) => read.map_err(|e| format!("reading the cluster's tokens: {e}"))?,
            };
            match entry {
                Some(entry) => {
                    let theirs = decode(&entry.value)?;
                    if theirs != local {
                        let lost: BTreeSet<&str> = local
                            .iter()
                            .filter(|t| !theirs.iter().any(|c| c.sha256 == t.sha256))
                            .map(|t| t.agent.as_str())
                            .collect();
                        if !lost.is_empty() {
                            tracing::warn!(
                                agents = ?lost,
                                "this node's token file held tokens the cluster does not (issued while it was down, \
                                 or revoked since): the cluster's list replaces it; issue tokens on a running node"
                            );
                        }
                        auth::replace(dir, theirs.clone()).map_err(|e| format!("{}: {e}", auth::FILE))?;
                    }
                    return Ok(TokenSync { kv, dir: dir.to_owned(), base: theirs });
                }
                None if local.is_empty() => return Ok(TokenSync { kv, dir: dir.to_owned(), base: local }),
                None => match tokio::time::timeout(CREATE_TIMEOUT, kv.create(KEY, encode(&local)))
                    .await
                    .map_err(|_| "publishing this node's tokens: timed out")?
                {
                    Ok(_) => return Ok(TokenSync { kv, dir: dir.to_owned(), base: local }),
                    // Another node gave its list first: take that one.
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                    Err(e) => return Err(format!("publishing this node's tokens: {e}")),
                },
            }
        }
    }

    /// Keeps `tokens` (what the broker checks), the file and the cluster's list the same
    /// until `leave`. The broker follows the cluster's list, not the file: a node whose
    /// file loses its last token while the cluster keeps others is not locked.
    pub(crate) async fn run(mut self, tokens: std::sync::Arc<Tokens>, leave: CancellationToken) {
        tokens.follow(self.base.clone());
        let mut every = tokio::time::interval(auth::RELOAD_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The newest revision of the list taken, and the watch that brings the next ones:
        // made again whenever it fails or ends (a server paused, a consumer lost), and
        // backed by a read of the list every few ticks, so that a change is never missed
        // for good.
        let mut taken = 0;
        let mut watch: Option<kv::Watch> = None;
        for tick in 0u64.. {
            if watch.is_none() {
                watch = match bounded("watching the cluster's tokens", CALL_TIMEOUT, self.kv.watch(KEY)).await {
                    Ok(watch) => Some(watch),
                    Err(error) => {
                        tracing::warn!(%error, "cannot watch the cluster's tokens; trying again");
                        None
                    }
                };
            }
            tokio::select! {
                entry = next(&mut watch) => match entry {
                    Some(Ok(entry)) => self.follow_entry(entry, &tokens, &mut taken),
                    Some(Err(error)) => tracing::warn!(%error, "reading the cluster's tokens failed"),
                    None => {
                        tracing::warn!("the watch of the cluster's tokens ended; watching again");
                        watch = None;
                    }
                },
                _ = every.tick() => {
                    if let Err(error) = self.give(&tokens).await {
                        tracing::warn!(%error, "publishing this node's token changes failed; retrying");
                    }
                    if tick % 5 == 0
                        && let Ok(Some(entry)) = bounded("reading the cluster's tokens", CALL_TIMEOUT, self.kv.entry(KEY)).await
                    {
                        self.follow_entry(entry, &tokens, &mut taken);
                    }
                }
                () = leave.cancelled() => return,
            }
        }
    }

    /// The cluster's list as `entry` holds it, unless an as new one was taken already.
    fn follow_entry(&mut self, entry: kv::Entry, tokens: &Tokens, taken: &mut u64) {
        if entry.revision <= *taken {
            return;
        }
        match decode(&entry.value) {
            Ok(theirs) => {
                *taken = entry.revision;
                tokens.follow(theirs.clone());
                self.take(theirs);
            }
            Err(error) => tracing::warn!(%error, "reading the cluster's tokens failed"),
        }
    }

    /// The cluster's list changed: unless this node's file has changes of its own not yet
    /// published (then [`TokenSync::give`] merges them), the file becomes the list.
    fn take(&mut self, theirs: Vec<Stored>) {
        let local = match auth::list(&self.dir) {
            Ok(local) => sorted(local),
            Err(error) => return tracing::warn!(%error, "reading the token file failed"),
        };
        if local != self.base || theirs == self.base {
            return;
        }
        match auth::replace(&self.dir, theirs.clone()) {
            Ok(()) => self.base = theirs,
            Err(error) => tracing::error!(%error, "writing the cluster's tokens into the token file failed"),
        }
    }

    /// Publishes this node's file if it changed since it last agreed with the cluster.
    async fn give(&mut self, tokens: &Tokens) -> Result<(), String> {
        let local = sorted(auth::list(&self.dir)?);
        if local == self.base {
            return Ok(());
        }
        let latest = self.kv.entry(KEY).await.map_err(|e| e.to_string())?;
        let theirs = match &latest {
            Some(entry) => decode(&entry.value)?,
            None => Vec::new(),
        };
        let merged = merge(&self.base, &local, &theirs);
        let stored = match &latest {
            Some(entry) => {
                self.kv.update(KEY, encode(&merged), entry.revision).await.map(|_| ()).map_err(|e| e.to_string())
            }
            None => self.kv.create(KEY, encode(&merged)).await.map(|_| ()).map_err(|e| e.to_string()),
        };
        // Refused when another node published meanwhile: the next tick merges again.
        stored?;
        if merged != local {
            auth::replace(&self.dir, merged.clone()).map_err(|e| e.to_string())?;
        }
        tracing::info!(tokens = merged.len(), "this node's token changes were published to the cluster");
        tokens.follow(merged.clone());
        self.base = merged;
        Ok(())
    }
}

/// The watch's next entry; never, while there is no watch.
async fn next(watch: &mut Option<kv::Watch>) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// This node's changes since `base` (tokens added, tokens removed), applied to `theirs`.
fn merge(base: &[Stored], local: &[Stored], theirs: &[Stored]) -> Vec<Stored> {
    let has = |list: &[Stored], t: &Stored| list.iter().any(|o| o.sha256 == t.sha256);
    let mut merged: Vec<Stored> = theirs.iter().filter(|t| !has(base, t) || has(local, t)).cloned().collect();
    merged.extend(local.iter().filter(|t| !has(base, t) && !has(theirs, t)).cloned());
    sorted(merged)
}

/// In a fixed order, so that two lists with the same tokens compare equal.
fn sorted(mut tokens: Vec<Stored>) -> Vec<Stored> {
    tokens.sort_by(|a, b| (a.created_at, &a.sha256).cmp(&(b.created_at, &b.sha256)));
    tokens
}

fn encode(tokens: &[Stored]) -> Bytes {
    // Plain data; serializing cannot fail.
    Bytes::from(serde_json::to_vec(tokens).unwrap_or_default())
}

fn decode(bytes: &[u8]) -> Result<Vec<Stored>, String> {
    serde_json::from_slice(bytes).map(sorted).map_err(|e| format!("the cluster's tokens: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8) -> Stored {
        Stored {
            agent: format!("agent-{n}"),
            human: false,
            sha256: format!("{n:064x}"),
            created_at: chrono::DateTime::from_timestamp(i64::from(n), 0).unwrap_or_default(),
            workspaces: Vec::new(),
        }
    }

    #[test]
    fn a_merge_keeps_both_sides_changes() {
        let base = vec![token(1), token(2)];
        // This node added 3 and revoked 1; meanwhile another added 4 and revoked 2.
        let local = vec![token(2), token(3)];
        let theirs = vec![token(1), token(4)];
        assert_eq!(merge(&base, &local, &theirs), vec![token(3), token(4)]);
        // Nothing changed here: theirs as they are.
        assert_eq!(merge(&base, &base, &theirs), theirs);
        // A token revoked here that the other side revoked too stays gone.
        assert_eq!(merge(&base, &[token(2)], &[token(2)]), vec![token(2)]);
    }
}
