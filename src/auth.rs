//! Optional tokens that bind a caller to an agent identity.
//!
//! `muster token add NAME` issues a token for NAME and stores only its SHA-256 in
//! `tokens.json` in the data dir; the token itself is printed once and never stored or
//! logged. While the file holds at least one token, every request needs one
//! (`Authorization: Bearer …` over HTTP, `token` in the WebSocket `hello`), except the
//! health check and the dashboard's static files, and a caller can act only as its own
//! agent: a write naming another agent is refused (403), one naming nobody is done as the
//! token's agent. The broker re-reads the file when it changes, so tokens added or removed
//! while it runs take effect within a second, open sessions of a revoked token included.
//!
//! Tokens, once on, stay on: after the broker has seen a token, a file that is emptied,
//! deleted or unreadable does not open it up — every request is refused until the operator
//! restarts it with an explicit choice.
//!
//! This module only keeps the file and answers "whose token is this?"; what a caller may do
//! is decided by the api layer (`api::caller`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// The file, in the data dir.
pub const FILE: &str = "tokens.json";
/// How often the broker looks at the file for changes: a revoked token stops working (and
/// its sessions close) within about this long.
pub(crate) const RELOAD_EVERY: Duration = Duration::from_millis(500);

/// One issued token, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The agent the token acts as.
    pub agent: String,
    /// A person's token (the dashboard), not an AI agent's.
    #[serde(default)]
    pub human: bool,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// When it was issued.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The workspaces it works in (`*`: every one). None named (a token of a version
    /// before workspaces): `default` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<String>,
}

/// Every workspace, in a token's list.
pub const EVERY_WORKSPACE: &str = "*";

impl Stored {
    /// The workspaces the token works in, as it says them (`default` when none is named).
    pub fn workspaces(&self) -> Vec<String> {
        if self.workspaces.is_empty() {
            vec![muster_protocol::names::DEFAULT_WORKSPACE.to_owned()]
        } else {
            self.workspaces.clone()
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<Stored>,
}

/// Who a valid token belongs to.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The agent.
    pub(crate) agent: String,
    /// A person.
    pub(crate) human: bool,
    /// The SHA-256 of the token, to tell whether it is still issued.
    digest: String,
    /// The workspaces the token works in (see [`Stored::workspaces`]).
    workspaces: std::sync::Arc<[String]>,
}

impl Identity {
    /// An identity proven by no token (tests of the rules that use one).
    #[cfg(test)]
    pub(crate) fn new(agent: &str, human: bool) -> Identity {
        let workspaces = vec![EVERY_WORKSPACE.to_owned()].into();
        Identity { agent: agent.to_owned(), human, digest: String::new(), workspaces }
    }

    /// Whether the token works in `workspace`.
    pub(crate) fn works_in(&self, workspace: &str) -> bool {
        self.workspaces.iter().any(|w| w == workspace || w == EVERY_WORKSPACE)
    }

    /// The workspaces it works in, for a refusal.
    pub(crate) fn workspaces(&self) -> String {
        self.workspaces.join(", ")
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("agent", &self.agent).field("human", &self.human).finish_non_exhaustive()
    }
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

fn read(data_dir: &Path) -> std::io::Result<TokenFile> {
    match std::fs::read(path(data_dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", FILE))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
        Err(e) => Err(e),
    }
}

/// Writes the file whole (temp file + rename), readable by its owner only.
fn write(data_dir: &Path, file: &TokenFile) -> std::io::Result<()> {
    crate::config::create_data_dir(data_dir)?;
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let json = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path(data_dir))
}

/// Issues a token for `agent` in `workspaces` (none: `default`; `*`: every one); returns
/// it (the only time it is seen).
pub fn add(data_dir: &Path, agent: &str, human: bool, workspaces: &[String]) -> Result<String, String> {
    crate::core::validate_agent("NAME", agent).map_err(|e| e.to_string())?;
    let mut scope = Vec::new();
    for workspace in workspaces {
        if workspace != EVERY_WORKSPACE {
            muster_protocol::names::check_workspace(workspace).map_err(|e| format!("--workspace: {e}"))?;
        }
        let workspace = muster_protocol::names::canonical(workspace);
        if !scope.contains(&workspace) {
            scope.push(workspace);
        }
    }
    // Names are case-insensitive: the token acts as the one spelling.
    let agent = &muster_protocol::names::canonical(agent);
    let mut bytes = [0u8; 24];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    let token = format!("mst_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let mut file = read(data_dir).map_err(|e| e.to_string())?;
    let created_at = chrono::Utc::now();
    file.tokens.push(Stored { agent: agent.to_owned(), human, sha256: digest(&token), created_at, workspaces: scope });
    write(data_dir, &file).map_err(|e| e.to_string())?;
    Ok(token)
}

/// Revokes every token of `agent`; returns how many there were.
pub fn remove(data_dir: &Path, agent: &str) -> Result<usize, String> {
    let mut file = read(data_dir).map_err(|e| e.to_string())?;
    let before = file.tokens.len();
    file.tokens.retain(|t| !t.agent.eq_ignore_ascii_case(agent));
    write(data_dir, &file).map_err(|e| e.to_string())?;
    Ok(before - file.tokens.len())
}

/// The issued tokens (their hashes, not the tokens).
pub fn list(data_dir: &Path) -> Result<Vec<Stored>, String> {
    read(data_dir).map(|f| f.tokens).map_err(|e| e.to_string())
}

/// Replaces the issued tokens with `tokens` (a cluster's node taking the cluster's).
pub(crate) fn replace(data_dir: &Path, tokens: Vec<Stored>) -> std::io::Result<()> {
    write(data_dir, &TokenFile { tokens })
}

fn modified(data_dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(path(data_dir)).and_then(|m| m.modified()).ok()
}

fn by_hash(file: TokenFile) -> HashMap<String, Identity> {
    file.tokens
        .into_iter()
        .map(|t| {
            let agent = muster_protocol::names::canonical(&t.agent);
            let workspaces = t.workspaces().into();
            (t.sha256.clone(), Identity { agent, human: t.human, digest: t.sha256, workspaces })
        })
        .collect()
}

/// The broker's view of the token file, re-read when it changes (or, on a cluster's node,
/// the cluster's list, given by the node: see [`Tokens::follow`]).
pub struct Tokens {
    data_dir: PathBuf,
    /// Given the issued tokens by [`Tokens::follow`] rather than reading the file.
    followed: std::sync::atomic::AtomicBool,
    loaded: Mutex<Loaded>,
    /// Bumped whenever the issued tokens change: open sessions check theirs again.
    changes: watch::Sender<u64>,
}

struct Loaded {
    modified: Option<SystemTime>,
    checked: Instant,
    by_hash: HashMap<String, Identity>,
    /// Tokens were on and the file was emptied, removed or became unreadable: everyone is
    /// refused until a restart.
    locked: bool,
}

impl Tokens {
    /// Reads the token file of `data_dir` (none is fine: tokens are off).
    pub fn open(data_dir: &Path) -> std::io::Result<Tokens> {
        let tokens = Tokens {
            data_dir: data_dir.to_owned(),
            followed: std::sync::atomic::AtomicBool::new(false),
            loaded: Mutex::new(Loaded {
                modified: None,
                checked: Instant::now(),
                by_hash: HashMap::new(),
                locked: false,
            }),
            changes: watch::channel(0).0,
        };
        let file = read(data_dir)?;
        tokens.lock().by_hash = by_hash(file);
        tokens.lock().modified = modified(data_dir);
        Ok(tokens)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        // The map is replaced whole; a panic elsewhere cannot leave it half-built.
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the file if it changed.
    fn reload(&self, loaded: &mut Loaded) {
        loaded.checked = Instant::now();
        if self.followed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let modified = modified(&self.data_dir);
        if modified == loaded.modified && modified.is_some() {
            return;
        }
        loaded.modified = modified;
        let now = match read(&self.data_dir) {
            Ok(file) => by_hash(file),
            Err(error) => {
                tracing::error!(%error, "cannot read the token file");
                HashMap::new()
            }
        };
        self.load(loaded, now);
    }

    /// From now on the issued tokens are `tokens` and whatever later calls give, not the
    /// file's: a cluster's node gives the cluster's list, which it mirrors into the file
    /// (an edit of the file reaches the broker through the cluster).
    pub(crate) fn follow(&self, tokens: Vec<Stored>) {
        self.followed.store(true, std::sync::atomic::Ordering::Release);
        let mut loaded = self.lock();
        self.load(&mut loaded, by_hash(TokenFile { tokens }));
    }

    /// Takes `now` as the issued tokens. Tokens that were on stay on: none at all (an
    /// empty, missing or unreadable file) locks the broker instead, until a restart. A
    /// cluster's node is locked while the cluster's list is empty, and no longer: the list
    /// is merged from every node's edits, so it may pass through empty (one node revoked
    /// the last token while another issued one) on its way to the list all nodes end on.
    fn load(&self, loaded: &mut Loaded, now: HashMap<String, Identity>) {
        let was_on = !loaded.by_hash.is_empty() || loaded.locked;
        let followed = self.followed.load(std::sync::atomic::Ordering::Acquire);
        if now.is_empty() && was_on {
            if !loaded.locked {
                if followed {
                    tracing::error!(
                        "the cluster's token list is empty, and tokens were on: every request is refused until a \
                         token is issued"
                    );
                } else {
                    tracing::error!(
                        "the token file is empty, missing or unreadable, and tokens were on: every request is \
                         refused until the broker is restarted"
                    );
                }
            }
            loaded.locked = true;
        } else if followed && loaded.locked && !now.is_empty() {
            tracing::warn!(tokens = now.len(), "the cluster issued tokens again: requests are checked against them");
            loaded.locked = false;
        }
        if now != loaded.by_hash {
            loaded.by_hash = now;
            self.changes.send_modify(|n| *n += 1);
        }
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, Loaded> {
        let mut loaded = self.lock();
        if loaded.checked.elapsed() >= RELOAD_EVERY {
            self.reload(&mut loaded);
        }
        loaded
    }

    /// Looks at the file now if it is time (the broker's timers call this, so that a
    /// revocation is noticed without a request).
    pub(crate) fn refresh(&self) {
        drop(self.fresh());
    }

    /// A receiver that wakes whenever the issued tokens change.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether tokens are required (at least one is issued, or tokens were on and the file
    /// went away).
    pub fn enabled(&self) -> bool {
        let loaded = self.fresh();
        !loaded.by_hash.is_empty() || loaded.locked
    }

    /// Whether tokens were on and the file was emptied, removed or became unreadable.
    pub(crate) fn locked(&self) -> bool {
        self.fresh().locked
    }

    /// Who `token` belongs to, if anyone.
    pub(crate) fn verify(&self, token: &str) -> Option<Identity> {
        self.fresh().by_hash.get(&digest(token)).cloned()
    }

    /// Whether the token that proved `identity` is still issued (not revoked).
    pub(crate) fn holds(&self, identity: &Identity) -> bool {
        self.fresh().by_hash.get(&identity.digest).is_some_and(|held| held.agent == identity.agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_verified() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = Tokens::open(dir.path()).expect("open");
        assert!(!tokens.enabled());
        let token = add(dir.path(), "link", false, &[]).expect("add");
        assert!(token.starts_with("mst_") && token.len() == 52, "{token}");
        let stored = std::fs::read_to_string(dir.path().join(FILE)).expect("file");
        assert!(!stored.contains(&token), "the token itself must not be stored");
        let tokens = Tokens::open(dir.path()).expect("open");
        assert!(tokens.enabled());
        let identity = tokens.verify(&token).expect("a valid token");
        assert_eq!((identity.agent.as_str(), identity.human), ("link", false));
        assert!(tokens.holds(&identity));
        assert_eq!(tokens.verify("mst_wrong"), None);
        assert_eq!(remove(dir.path(), "link"), Ok(1));
        let tokens = Tokens::open(dir.path()).expect("open");
        assert!(!tokens.enabled());
        assert!(!tokens.holds(&identity), "a revoked token no longer holds");
    }

    #[test]
    fn an_emptied_file_locks_until_a_restart_and_an_emptied_cluster_list_until_a_token_is_issued() {
        let stored = |n: u8| Stored {
            agent: format!("agent-{n}"),
            human: false,
            sha256: digest(&format!("mst_{n}")),
            created_at: chrono::Utc::now(),
            workspaces: Vec::new(),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        replace(dir.path(), vec![stored(1)]).expect("write");
        let single = Tokens::open(dir.path()).expect("open");
        replace(dir.path(), vec![]).expect("empty");
        single.lock().checked -= RELOAD_EVERY;
        assert!(single.locked(), "an emptied file locks a single broker");
        replace(dir.path(), vec![stored(2)]).expect("write");
        single.lock().checked -= RELOAD_EVERY;
        assert!(single.locked(), "until it is restarted, even with a token in the file again");

        let node = Tokens::open(tempfile::tempdir().expect("temp dir").path()).expect("open");
        node.follow(vec![stored(1)]);
        node.follow(vec![]);
        assert!(node.locked() && node.enabled(), "an emptied cluster list locks the node");
        node.follow(vec![stored(2)]);
        assert!(!node.locked(), "a token issued again unlocks it");
        assert_eq!(node.verify("mst_2").map(|i| i.agent), Some("agent-2".to_owned()));
        assert!(node.verify("mst_1").is_none());
    }
}
