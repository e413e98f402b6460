//! File reservations: an agent holds paths of a repository (globs, see [`crate::glob`]),
//! exclusively or shared, so that no other agent edits or commits them meanwhile.
//!
//! A reservation made for a task lasts as long as the agent's claim on it; one without a
//! task lasts its TTL (default two hours, renewed by reserving the same pattern again).
//! Either ends sooner when the agent goes away as its claims would (presence grace and
//! lease), or when the agent releases it.

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use crate::grammar::{AgentName, GlobPattern, Note, Repo};
use crate::{ReservationId, TaskId};

/// TTL of a reservation without a task, unless the request gives one.
pub const DEFAULT_TTL_SECONDS: u64 = 2 * 60 * 60;
/// Longest TTL a request may ask for: a week.
pub const MAX_TTL_SECONDS: u64 = 7 * 24 * 60 * 60;
/// Most patterns in one request.
pub const MAX_PATTERNS: usize = 100;
/// Most paths in one `who` question.
pub const MAX_WHO_PATHS: usize = 100;
/// Most reservations one agent may hold at once.
pub const MAX_PER_AGENT: usize = 1_000;
/// Most work one request's patterns may take, in steps (one step: a word of a set joined
/// while compiling a pattern, or a move looked at while matching; about a nanosecond on the
/// 2-core VM of BENCHMARKS.md): compiling a reserve's new patterns and checking them for
/// overlaps, or a `who`'s matches. A request that needs more is refused, so that no
/// pattern, however made, holds the broker for more than a few milliseconds. Ordinary
/// requests take a few thousand; compiling the longest adversarial patterns about 1.2
/// million.
pub const MAX_MATCH_STEPS: u64 = 2_000_000;
/// Longest repository name, in bytes.
pub const MAX_REPO: usize = 200;

/// Paths of a repository held by an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reservation {
    /// `R-1`, `R-2`, ...
    pub id: ReservationId,
    /// The repository, as the holder named it (the CLI uses its normalized remote URL,
    /// e.g. `git.example.com/acme/app`).
    pub repo: String,
    /// What is held: a repository-relative path or glob.
    pub pattern: String,
    /// The holder.
    pub agent: String,
    /// Exclusive (no other agent may hold an overlapping pattern), or shared (others may
    /// share it; nobody may hold it exclusively).
    pub exclusive: bool,
    /// The task it is for: it ends when the holder's claim on the task does.
    pub task: Option<TaskId>,
    /// Why, for the humans and agents who run into it.
    pub reason: Option<String>,
    /// When it was made, or last renewed.
    pub at: DateTime<Utc>,
    /// When it ends unless renewed; `null` for a task's reservation without a TTL.
    pub expires_at: Option<DateTime<Utc>>,
    /// Made by an edit (see [`ReserveFiles::auto`]), not asked for: one file, renewed by
    /// each edit of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto: bool,
}

/// Reserve paths of a repository. All or nothing: when any pattern overlaps another
/// agent's reservation in a way that is not allowed, nothing is reserved and the error
/// lists every conflict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReserveFiles {
    /// The repository (required: a directory's name differs per worktree and collides
    /// across repositories).
    #[schema(value_type = Repo)]
    pub repo: String,
    /// Repository-relative paths or globs (`src/auth/**`, `*.lock`, `docs/api.md`).
    #[schema(value_type = Vec<GlobPattern>, min_items = 1, max_items = 100)]
    pub patterns: Vec<String>,
    /// Share the paths with other agents' shared reservations (default: exclusive).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// Tie the reservation to this task, whose claim the agent must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Note>)]
    pub reason: Option<String>,
    /// End after this many seconds unless renewed (default: two hours without a task,
    /// none with one); at most a week.
    #[serde(default, deserialize_with = "crate::grammar::int64", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub ttl_seconds: Option<u64>,
    /// The acting agent; the `X-Agent` header also works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AgentName>)]
    pub agent: Option<String>,
    /// An edit's reservation, made for the agent as it writes (the CLI's guard and hooks
    /// send it): `patterns` are then the repository-relative paths of the files written,
    /// not globs, each held exactly (and exclusively, unless `shared`) — for the task the
    /// agent claimed last (unless `task` names one), else for `ttlSeconds` (default two
    /// hours) from this edit. A file the agent already holds exclusively through another of
    /// its reservations is not reserved again: that reservation is in the answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto: bool,
}

/// Release reservations of the acting agent in a repository: those with these patterns,
/// or those of this task, or (neither given) all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseFiles {
    /// The repository.
    #[schema(value_type = Repo)]
    pub repo: String,
    /// The patterns, as reserved (any other string matches no reservation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 100)]
    pub patterns: Vec<String>,
    /// The reservations of this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
    /// The acting agent; the `X-Agent` header also works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AgentName>)]
    pub agent: Option<String>,
}

/// Which reservations to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesQuery {
    /// Only in this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Only this agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Only this task's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
}

/// Who holds these paths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhoHasFiles {
    /// The repository.
    pub repo: String,
    /// Repository-relative paths (of files).
    pub paths: Vec<String>,
}

/// `{"reservations": [...]}`, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReservationList {
    /// The reservations.
    pub reservations: Vec<Reservation>,
}

/// The reservations whose pattern matches a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PathHolders {
    /// The path, as asked.
    pub path: String,
    /// Reservations matching it, by id.
    pub reservations: Vec<Reservation>,
}

/// `{"paths": [...]}`: who holds each path asked about, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoHas {
    /// One entry per path.
    pub paths: Vec<PathHolders>,
}

/// Why a reservation was refused: a requested pattern overlaps one another agent holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConflict {
    /// The pattern asked for.
    pub pattern: String,
    /// The reservation in the way.
    pub holder: Reservation,
    /// A path both patterns match.
    pub witness: String,
}

/// Why reservations ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FilesReleaseReason {
    /// The holder released them.
    Released,
    /// Their task's claim ended: completed, cancelled, released (also by force).
    TaskEnded,
    /// Their TTL ran out.
    Expired,
    /// The holder went away longer than its claims' grace or lease.
    OwnerGone,
}

/// Checks a repository name: 1 to 200 visible ASCII characters.
pub fn check_repo(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("is required: the repository the paths are in (the CLI derives it from the git remote)".into());
    }
    if repo.len() > MAX_REPO || !repo.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{:?} is not a repository name (1-{MAX_REPO} visible ASCII characters, no spaces)",
            crate::names::truncate(repo, 80)
        ));
    }
    Ok(())
}
