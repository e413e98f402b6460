//! Workspaces: one broker process for every project on a machine.
//!
//! Each workspace is a whole broker of its own — its store (a data dir of its own), its
//! sequencer and hub, its timers, its `seq` and epoch — so nothing of one can reach another:
//! there is no state between them to cross through. They share only the process: the
//! listener and its connection limits, the token file, the matcher's threads, the clock,
//! the counters and the configuration. The transports find a request's workspace by its
//! route (`/w/{workspace}/…`, or the unprefixed routes for `default`) or a WebSocket's
//! `hello`, and hand the request to that workspace's [`Broker`].
//!
//! On disk, `default` is the data dir itself (so a data dir of an earlier version is the
//! `default` workspace, with nothing moved), and every other one is `workspaces/<name>/`
//! below it. A workspace removed without `purge` is archived: an `archived` file in its
//! dir, its data kept and still read, every write refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use muster_protocol::names::{self, DEFAULT_WORKSPACE};
use muster_protocol::{ErrorCode, WorkspaceInfo, WorkspaceList};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ApiError, Broker, Caller, Common};
use crate::config::Config;
use crate::sequencer::{Reader, Sequencer, Writer};
use crate::store::{Log, Store};

/// The folder of the data dir that holds every workspace but `default`.
const DIR: &str = "workspaces";
/// The file whose presence in a workspace's dir says it is archived.
const ARCHIVED: &str = "archived";
/// The prefix of a purged workspace's dir while it is deleted (a name cannot start with a
/// dot, so it is never opened as a workspace; one a crash left is deleted at start).
const PURGING: &str = ".purged-";

/// Every workspace of the broker, by name.
pub(crate) struct Workspaces {
    data_dir: PathBuf,
    config: Arc<Config>,
    common: Arc<Common>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Whether this broker is a cluster's node: only `default` is carried by a cluster.
    clustered: bool,
    open: RwLock<BTreeMap<String, Workspace>>,
    /// Held while a workspace is added or removed: one change at a time.
    changing: tokio::sync::Mutex<()>,
}

/// One open workspace.
struct Workspace {
    broker: Arc<Broker>,
    /// Ends its timers, long-polls, streams and sessions (a child of the broker's shutdown).
    stop: CancellationToken,
}

impl Workspaces {
    /// The workspaces of `config.data_dir`: `default` (already started, with `stop` its
    /// shutdown, a cluster's if `clustered`) and every other one found under `workspaces/`,
    /// started here (archived ones read-only, without timers).
    pub(crate) async fn open(
        config: Arc<Config>,
        common: Arc<Common>,
        (default, stop): (Arc<Broker>, CancellationToken),
        shutdown: CancellationToken,
        tracker: TaskTracker,
        clustered: bool,
    ) -> Result<Arc<Workspaces>, String> {
        let workspaces = Arc::new(Workspaces {
            data_dir: config.data_dir.clone(),
            config,
            common,
            shutdown,
            tracker,
            clustered,
            open: RwLock::new(BTreeMap::from([(DEFAULT_WORKSPACE.to_owned(), Workspace { broker: default, stop })])),
            changing: tokio::sync::Mutex::new(()),
        });
        for (name, archived) in found(&workspaces.data_dir.join(DIR))? {
            if clustered {
                return Err(format!(
                    "workspace {name} ({}): a cluster carries only the default workspace so far; serve it from a \
                     single broker",
                    workspaces.dir_of(&name).display()
                ));
            }
            let workspace = workspaces.start(&name, archived).await?;
            workspaces.write().insert(name, workspace);
        }
        Ok(workspaces)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Workspace>> {
        // The map is changed by whole inserts and removes: a panic cannot leave it half-made.
        self.open.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Workspace>> {
        self.open.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The broker of the workspace `name` (any case), if it exists.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Broker>> {
        let read = self.read();
        match read.get(name) {
            Some(workspace) => Some(Arc::clone(&workspace.broker)),
            None => read.get(&names::canonical(name)).map(|w| Arc::clone(&w.broker)),
        }
    }

    /// The `default` workspace's broker.
    pub(crate) fn default_broker(&self) -> Arc<Broker> {
        // Opened first and never removed.
        self.get(DEFAULT_WORKSPACE).expect("the default workspace is always open")
    }

    /// The workspaces `caller` works in (with tokens off, every one), by name.
    pub(crate) fn list(&self, caller: &Caller) -> Result<WorkspaceList, ApiError> {
        self.default_broker().check_token(caller)?;
        let read = self.read();
        let mine = read.iter().filter(|(name, _)| caller.works_in(name));
        Ok(WorkspaceList { workspaces: mine.map(|(name, w)| info(name, &w.broker)).collect() })
    }

    /// Adds the workspace `name` for `caller` (with tokens on, a person): its dir is made
    /// and its broker started. An existing name (archived ones too) is refused.
    pub(crate) async fn add(&self, caller: &Caller, name: &str) -> Result<WorkspaceInfo, ApiError> {
        self.default_broker().check_token(caller)?;
        names::check_workspace(name).map_err(|m| ApiError::invalid("name", m))?;
        let name = names::canonical(name);
        caller.may_change_workspace(&name)?;
        let _changing = self.changing.lock().await;
        if let Some(broker) = self.get(&name) {
            let archived = if broker.archived() { " (archived: purge it to use the name again)" } else { "" };
            return Err(ApiError::new(ErrorCode::Conflict, format!("workspace {name} exists{archived}")));
        }
        if self.clustered {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "a cluster carries only the default workspace so far: add workspaces on a single broker",
            ));
        }
        let workspace = self.start(&name, false).await.map_err(ApiError::internal)?;
        let added = info(&name, &workspace.broker);
        self.write().insert(name.clone(), workspace);
        tracing::info!(workspace = %name, "workspace added");
        Ok(added)
    }

    /// Removes the workspace `name` for `caller` (with tokens on, a person): archived
    /// (read-only, its data kept) or, with `purge`, deleted. Its sessions, streams and timers
    /// end either way; `default` stays.
    pub(crate) async fn remove(&self, caller: &Caller, name: &str, purge: bool) -> Result<WorkspaceInfo, ApiError> {
        self.default_broker().check_token(caller)?;
        let name = names::canonical(name);
        caller.may_change_workspace(&name)?;
        if name == DEFAULT_WORKSPACE {
            return Err(ApiError::new(ErrorCode::Conflict, "the default workspace cannot be removed"));
        }
        let _changing = self.changing.lock().await;
        let (broker, stop) = match self.read().get(&name) {
            Some(w) => (Arc::clone(&w.broker), w.stop.clone()),
            None => return Err(unknown(&name)),
        };
        let dir = self.dir_of(&name);
        if !broker.archived() {
            mark_archived(&dir).map_err(|e| ApiError::internal(format!("{}: {e}", dir.display())))?;
            broker.archive();
            stop.cancel();
        }
        if !purge {
            tracing::info!(workspace = %name, "workspace archived");
            return Ok(info(&name, &broker));
        }
        self.write().remove(&name);
        broker.stop().await;
        let removed = info(&name, &broker);
        drop(broker);
        // Renamed first: a crash in the middle of deleting leaves no half of a workspace.
        let doomed = self.data_dir.join(DIR).join(format!("{PURGING}{name}-{}", std::process::id()));
        let deleted = std::fs::rename(&dir, &doomed).and_then(|()| std::fs::remove_dir_all(&doomed));
        deleted.map_err(|e| ApiError::internal(format!("deleting {}: {e}", dir.display())))?;
        tracing::info!(workspace = %name, "workspace purged");
        Ok(removed)
    }

    /// Stops every workspace's sequencer (after the transports stopped): what it holds is
    /// committed.
    pub(crate) async fn stop(&self) {
        let brokers: Vec<Arc<Broker>> = self.read().values().map(|w| Arc::clone(&w.broker)).collect();
        for broker in brokers {
            broker.stop().await;
        }
    }

    fn dir_of(&self, name: &str) -> PathBuf {
        self.data_dir.join(DIR).join(name)
    }

    /// Opens the store of `name` (made if new) and starts its broker; an archived one
    /// without timers.
    async fn start(&self, name: &str, archived: bool) -> Result<Workspace, String> {
        let dir = self.dir_of(name);
        let cache_mb = self.config.cache_mb;
        let opened = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || Store::open(&dir, cache_mb)).await.map_err(|e| e.to_string())?
        };
        let store = Arc::new(opened.map_err(|e| format!("workspace {name} ({}): {e}", dir.display()))?);
        let log: Arc<dyn Log> = store.log.clone();
        let handles = start_sequencer(&store, log, &self.config, &self.common, &self.tracker)?;
        let stop = self.shutdown.child_token();
        let broker = Arc::new(Broker::new(name, handles, store, &self.common, stop.clone(), None));
        if archived {
            broker.archive();
            stop.cancel();
        } else {
            start_timers(&broker, &self.config, &self.tracker).await?;
        }
        Ok(Workspace { broker, stop })
    }
}

/// Loads `store`'s state and starts its sequencer (appending through `log`) on `tracker`.
pub(crate) fn start_sequencer(
    store: &Store,
    log: Arc<dyn Log>,
    config: &Config,
    common: &Common,
    tracker: &TaskTracker,
) -> Result<(Writer, Reader), String> {
    let (sequencer, writer, reader) = Sequencer::new(
        store,
        log,
        common.policy.clone(),
        common.clock.clone(),
        config.min_free_mb << 20,
        config.idempotency_keys,
        Arc::clone(&common.metrics),
    )
    .map_err(|e| e.to_string())?;
    // The sequencer stops after the HTTP server and the sessions, so that in-flight writes
    // (and the sessions' goodbyes) are answered.
    tracker.spawn_blocking(move || sequencer.run());
    Ok((writer, reader))
}

/// Closes the sessions an earlier run left open and starts `broker`'s timers.
pub(crate) async fn start_timers(broker: &Arc<Broker>, config: &Config, tracker: &TaskTracker) -> Result<(), String> {
    crate::api::timers::reset_sessions(broker).await.map_err(|e| e.to_string())?;
    tracker.spawn(crate::api::timers::run(Arc::clone(broker), config.tick));
    Ok(())
}

fn info(name: &str, broker: &Broker) -> WorkspaceInfo {
    WorkspaceInfo { name: name.to_owned(), archived: broker.archived(), head: broker.head() }
}

/// The refusal of a workspace that does not exist, naming it.
pub(crate) fn unknown(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no workspace {:?}: POST /workspaces {{\"name\": ...}} (or muster workspace add NAME) adds one",
        names::truncate(name, 80)
    ))
}

/// The workspaces under `dir` (none if it does not exist), each with whether it is
/// archived; a purge a crash interrupted is finished.
fn found(dir: &Path) -> Result<Vec<(String, bool)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(PURGING) {
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(%error, dir = %entry.path().display(), "could not finish deleting a purged workspace");
            }
            continue;
        }
        let valid = names::is_workspace(&name) && name == names::canonical(&name) && name != DEFAULT_WORKSPACE;
        if !entry.path().is_dir() || !valid {
            tracing::warn!(entry = %entry.path().display(), "not a workspace; left alone");
            continue;
        }
        found.push((name, entry.path().join(ARCHIVED).exists()));
    }
    found.sort();
    Ok(found)
}

/// Writes the `archived` mark of a workspace's dir, durably.
fn mark_archived(dir: &Path) -> std::io::Result<()> {
    let file = std::fs::File::create(dir.join(ARCHIVED))?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}
