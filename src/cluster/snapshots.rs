//! Snapshots and trimming: a node's whole store, uploaded now and then to the cluster's
//! Object Store bucket (`<name>-snapshots`), so that the log's stream can be trimmed below
//! them and a node whose data dir the trimmed log has left behind (an empty one, once the
//! log no longer starts at its first message) starts from a snapshot.
//!
//! - **Taking one** ([`Snapshots::due`], [`Snapshots::take`]): once the newest snapshot is [`Snapshots::every`]
//!   events old, a follower (`Cluster::snapshot_now_and_then`) asks its writer for an export (`Writer::export`: between two
//!   batches, everything before durable), writes it to a file in its data dir, uploads it
//!   and removes the file. A leader takes one only when none was taken for twice as long
//!   (a cluster of one node): an export pauses the writer, and the leader's writer is the
//!   cluster's.
//! - **Trimming** ([`Snapshots::prune`]): the newest [`KEEP`] snapshots are kept; the stream
//!   is purged below the older of them and below every running node's position (each
//!   node's heartbeat carries it), so that a snapshot to start from, and the messages after
//!   it, are always there, and no running node is left behind.
//! - **Restoring** ([`Restore::apply`]): the snapshot is downloaded (the Object Store checks
//!   its digest) and imported into `<data dir>.restore`, which then takes the data dir's
//!   place (set aside if it held a history). The node then joins as after a restart: what
//!   the snapshot holds beyond its recorded position is checked against the log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{kv, object_store::ObjectStore, stream};
use futures_util::StreamExt;
use muster_protocol::Seq;

use crate::sequencer::Writer;

/// Snapshots kept in the bucket; the stream is trimmed below the older.
pub(super) const KEEP: usize = 2;
/// How often a node looks whether a snapshot is due.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(5);
/// The file an export is written to in the data dir, before its upload.
const UPLOAD: &str = "snapshot.upload";

/// A snapshot in the bucket, as its name says: the last message of the log its store had
/// recorded, and the last event it holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Listed {
    pub(crate) stream: u64,
    pub(crate) head: Seq,
}

impl Listed {
    fn name(&self) -> String {
        format!("snapshot-{:020}-{:020}", self.stream, self.head)
    }

    fn parse(name: &str) -> Option<Listed> {
        let (stream, head) = name.strip_prefix("snapshot-")?.split_once('-')?;
        Some(Listed { stream: stream.parse().ok()?, head: head.parse().ok()? })
    }
}

/// The cluster's snapshots.
pub(crate) struct Snapshots {
    bucket: ObjectStore,
    /// Events between two snapshots (0: this node takes none).
    every: u64,
    /// The head of the newest snapshot this node knows of: until its head is `every` past
    /// it, no snapshot can be due, and the bucket is not listed (a listing is a consumer of
    /// the bucket's stream, which the servers make and replicate: every few seconds on
    /// every node, that load slowed their recovery from a fault).
    known: std::sync::atomic::AtomicU64,
}

impl Snapshots {
    pub(super) fn new(bucket: ObjectStore, every: u64) -> Snapshots {
        Snapshots { bucket, every, known: std::sync::atomic::AtomicU64::new(0) }
    }

    /// The snapshots in the bucket, oldest first.
    pub(super) async fn list(&self) -> Result<Vec<Listed>, String> {
        let mut objects = self.bucket.list().await.map_err(|e| format!("listing the snapshots: {e}"))?;
        let mut out = Vec::new();
        while let Some(object) = objects.next().await {
            let object = object.map_err(|e| format!("listing the snapshots: {e}"))?;
            if let Some(listed) = Listed::parse(&object.name).filter(|_| !object.deleted) {
                out.push(listed);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The newest snapshot, if any.
    pub(super) async fn newest(&self) -> Result<Option<Listed>, String> {
        Ok(self.list().await?.pop())
    }

    /// Whether this node, having applied up to `head`, should take a snapshot now.
    pub(super) async fn due(&self, head: Seq, leading: bool) -> bool {
        if self.every == 0 {
            return false;
        }
        let every = if leading { self.every.saturating_mul(2) } else { self.every };
        let known = self.known.load(std::sync::atomic::Ordering::Relaxed);
        if head < known.saturating_add(every) {
            return false;
        }
        let newest = match self.newest().await {
            Ok(newest) => newest.map_or(0, |s| s.head),
            Err(error) => {
                tracing::warn!(%error, "cannot tell whether a snapshot is due");
                return false;
            }
        };
        self.known.fetch_max(newest, std::sync::atomic::Ordering::Relaxed);
        head >= newest.saturating_add(every)
    }

    /// Exports this node's store and uploads it.
    pub(super) async fn take(&self, writer: &Writer, dir: &Path) -> Result<Listed, String> {
        let path = dir.join(UPLOAD);
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let exported = writer.export(file).await;
        let uploaded = async {
            let exported = exported.map_err(|e| e.to_string())?;
            let position = exported.position.ok_or("the store has no position in the cluster's log")?;
            let listed = Listed { stream: position.stream, head: exported.head };
            let mut file = tokio::fs::File::open(&path).await.map_err(|e| format!("{}: {e}", path.display()))?;
            self.bucket.put(listed.name().as_str(), &mut file).await.map_err(|e| format!("uploading: {e}"))?;
            self.known.fetch_max(listed.head, std::sync::atomic::Ordering::Relaxed);
            Ok(listed)
        }
        .await;
        let _ = tokio::fs::remove_file(&path).await;
        uploaded
    }

    /// Deletes all but the newest [`KEEP`] snapshots, and purges the stream below the older
    /// one kept and below `floor` (the lowest position of the running nodes).
    pub(super) async fn prune(&self, stream: &stream::Stream, floor: u64) -> Result<(), String> {
        let mut listed = self.list().await?;
        let old = listed.len().saturating_sub(KEEP);
        for gone in listed.drain(..old) {
            self.bucket.delete(gone.name()).await.map_err(|e| format!("deleting {}: {e}", gone.name()))?;
        }
        let Some(oldest) = listed.first() else { return Ok(()) };
        let keep_from = oldest.stream.min(floor) + 1;
        let first = stream.get_info().await.map_err(|e| e.to_string())?.state.first_sequence;
        if keep_from > first {
            stream.purge().sequence(keep_from).await.map_err(|e| format!("trimming the log: {e}"))?;
            tracing::info!(below = keep_from, "the log was trimmed");
        }
        Ok(())
    }

    /// The restore of the newest snapshot, if there is one.
    pub(super) async fn restore(&self, had_history: bool) -> Result<Option<Restore>, String> {
        let newest = self.newest().await?;
        Ok(newest.map(|snapshot| Restore { bucket: self.bucket.clone(), snapshot, had_history }))
    }
}

/// Removes the file of an upload cut short (the node was killed meanwhile). What that upload
/// had sent stays in the bucket's stream, unnamed: the Object Store names an object only
/// once all of it is stored.
pub(super) fn forget_upload(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(UPLOAD));
}

/// The lowest position (last message applied) that the heartbeats in `nodes` carry; `None`
/// when one cannot be read (nothing may be trimmed then).
pub(super) async fn lowest_position(nodes: &kv::Store) -> Option<u64> {
    let mut keys = nodes.keys().await.ok()?;
    let mut lowest = u64::MAX;
    while let Some(key) = keys.next().await {
        let value = nodes.get(key.ok()?).await.ok()?;
        // Gone since the keys were listed: it is not running.
        let Some(value) = value else { continue };
        let beat: super::wire::Heartbeat = serde_json::from_slice(&value).ok()?;
        lowest = lowest.min(beat.applied);
    }
    Some(lowest)
}

/// A data dir to make from a snapshot, before the node joins.
pub(crate) struct Restore {
    bucket: ObjectStore,
    snapshot: Listed,
    /// The data dir holds a history (which is set aside, not removed).
    had_history: bool,
}

impl std::fmt::Debug for Restore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restore").field("snapshot", &self.snapshot).finish_non_exhaustive()
    }
}

impl Restore {
    /// The snapshot it restores.
    pub(crate) fn snapshot(&self) -> &Listed {
        &self.snapshot
    }

    /// Downloads the snapshot and makes the data dir `dir` of it. Crash-safe: until the
    /// restored dir takes `dir`'s place, `dir` is as it was (a crash after `dir` was set
    /// aside leaves none, and the next start makes an empty one and restores again).
    pub(crate) async fn apply(self, dir: &Path, cache_mb: u64) -> Result<(), String> {
        let staging = sibling(dir, ".restore");
        let download = sibling(dir, ".restore-download");
        let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
        }
        let name = self.snapshot.name();
        let mut object = self.bucket.get(&name).await.map_err(|e| format!("downloading {name}: {e}"))?;
        let mut file = tokio::fs::File::create(&download).await.map_err(|e| io(&download, e))?;
        // The Object Store checks the digest at the end: a damaged download is an error here.
        tokio::io::copy(&mut object, &mut file).await.map_err(|e| format!("downloading {name}: {e}"))?;
        drop(file);

        let (from, to) = (download.clone(), staging.clone());
        let imported = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&from)?;
            crate::store::import(&to, file, cache_mb << 20).map_err(std::io::Error::other)
        })
        .await
        .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&download);
        imported.map_err(|e| format!("restoring {name}: {e}"))?;
        let tokens = dir.join(crate::auth::FILE);
        if tokens.exists() {
            std::fs::copy(&tokens, staging.join(crate::auth::FILE)).map_err(|e| io(&tokens, e))?;
        }

        let aside = sibling(dir, &format!(".{}-{}", if self.had_history { "behind" } else { "replaced" }, now()));
        std::fs::rename(dir, &aside).map_err(|e| io(dir, e))?;
        std::fs::rename(&staging, dir).map_err(|e| io(dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent).and_then(|p| p.sync_all()).map_err(|e| io(parent, e))?;
        }
        if self.had_history {
            tracing::warn!("the data dir, left behind by the trimmed log, was moved to {}", aside.display());
        } else if let Err(error) = std::fs::remove_dir_all(&aside) {
            tracing::warn!(%error, "removing the empty data dir {} failed", aside.display());
        }
        Ok(())
    }
}

/// `dir` with `suffix` added to its name.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::Listed;

    #[test]
    fn a_snapshots_name_says_where_it_stands_and_sorts_by_it() {
        let listed = Listed { stream: 1234, head: 56789 };
        assert_eq!(Listed::parse(&listed.name()), Some(listed.clone()));
        assert!(Listed { stream: 99, head: 100 }.name() < listed.name());
        assert_eq!(Listed::parse("snapshot-x-1"), None);
        assert_eq!(Listed::parse("other"), None);
    }
}
