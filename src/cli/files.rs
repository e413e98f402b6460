//! `muster files ...`: file reservations from a shell, and the check the git hooks run
//! (`files check --staged`); `guard` (Claude Code's hooks) is in `guard`, the hooks' setup
//! in `init`.
//!
//! Paths and patterns are read as a user means them (see `paths`): from the current
//! directory, absolute ones inside the worktree made repository-relative, symlinks
//! resolved. The repository is named by `--repo` (or `MUSTER_REPO`, or `git config
//! muster.repo`), else by its normalized remote URL: the same in every worktree of it, and
//! different for two repositories whose directories share a name.
//!
//! When the broker cannot be asked, `check` warns and allows (a broker that is down must
//! not stop all work); with `--strict` it refuses instead.

use std::time::Duration;

use clap::{Args, Subcommand};
use muster_client::protocol::glob::{Glob, Index};
use muster_client::protocol::{FilesQuery, ReleaseFiles, Reservation, ReserveFiles, TaskId, names};
use muster_client::{Client, Error};

use super::context::{Exit, Failure, Global, Out, acting, connect, require_agent, task_id};
use super::git::Worktree;
use super::output;
use super::paths::Here;

/// How long `check`, `guard` and Claude Code's hooks wait for the broker before deciding it
/// cannot be asked.
pub(super) const ASK_WITHIN: Duration = Duration::from_secs(3);

/// Most blocked paths listed in text (all of them with `--json`).
const SHOWN: usize = 20;

/// `--repo`.
#[derive(Debug, Clone, Args)]
pub struct RepoArg {
    /// The repository's name for the broker (default: `git config muster.repo`, else the
    /// normalized URL of the git remote).
    #[arg(long, env = "MUSTER_REPO")]
    pub(crate) repo: Option<String>,
}

/// `muster files ...`
#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Reserve paths or globs of this repository (exclusive unless --shared), all or none.
    Reserve {
        /// Repository-relative paths or globs: src/auth/**, *.lock, docs/api.md.
        #[arg(required = true)]
        patterns: Vec<String>,
        /// For this task (you must hold its claim): the reservation ends with the claim.
        #[arg(long)]
        task: Option<String>,
        /// Share with other agents' shared reservations.
        #[arg(long)]
        shared: bool,
        /// End after this long unless reserved again (default 2h without --task).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Why: shown to whoever runs into it.
        #[arg(long)]
        reason: Option<String>,
        /// The repository.
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Release your reservations: these patterns, those of --task, or all in this repository.
    Release {
        /// The patterns, as reserved.
        patterns: Vec<String>,
        /// The reservations of this task.
        #[arg(long)]
        task: Option<String>,
        /// The repository.
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Who holds these paths.
    Who {
        /// Paths, relative to the current directory.
        #[arg(required = true)]
        paths: Vec<String>,
        /// The repository.
        #[command(flatten)]
        repo: RepoArg,
    },
    /// The reservations held now, in this repository.
    List {
        /// Only yours.
        #[arg(long)]
        mine: bool,
        /// In every repository.
        #[arg(long)]
        all_repos: bool,
        /// The repository.
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Exit 5, naming the holder, if another agent reserved any of these paths (with
    /// --staged: any path the staged change adds, modifies, deletes or renames).
    Check {
        /// Paths, relative to the current directory.
        paths: Vec<String>,
        /// The paths of the staged change (what `git commit` would record).
        #[arg(long)]
        staged: bool,
        /// Refuse when the broker cannot be asked (default: warn and allow).
        #[arg(long)]
        strict: bool,
        /// The repository.
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Claude Code's PreToolUse and PostToolUse hook (`muster init` installs it): reads the
    /// hook's JSON on stdin; before an edit or a shell command, reserves the files it writes
    /// for you, or exits 2 (refused, the reason on stderr) when another agent holds one;
    /// after a shell command, exits 2 to tell you of a held file it changed.
    Guard {
        /// Refuse when the broker cannot be asked (default: warn and allow).
        #[arg(long)]
        strict: bool,
        /// The repository.
        #[command(flatten)]
        repo: RepoArg,
    },
}

fn here() -> Result<Here, Failure> {
    Here::now().map_err(|e| Failure::new(Exit::Failed, e))
}

fn worktree(here: &Here) -> Result<&Worktree, Failure> {
    here.worktree.as_ref().ok_or_else(|| {
        Failure::new(
            Exit::Invalid,
            format!("{} is not in a git repository (or git is not installed)", here.cwd.display()),
        )
    })
}

/// The repository's name: `--repo`, else what git says.
fn repo_name(arg: &RepoArg, worktree: Option<&Worktree>) -> Result<String, Failure> {
    if let Some(repo) = &arg.repo {
        return Ok(repo.clone());
    }
    match worktree {
        Some(w) => w.repo_name().map_err(|e| Failure::new(Exit::Invalid, e.0)),
        None => Err(Failure::new(Exit::Invalid, "not in a git repository: name the repository with --repo NAME")),
    }
}

/// The agent committing or editing here: `--as`/`MUSTER_AGENT`, else the worktree's.
pub(crate) fn agent_here(global: &Global, worktree: &Worktree) -> Option<String> {
    global.agent.clone().or_else(|| worktree.agent()).map(|a| names::canonical(&a))
}

/// The patterns to reserve for what was typed (see [`Here::patterns`]).
pub(crate) fn patterns_for(raw: &[String], here: &Here) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for p in raw {
        for pattern in here.patterns(p)? {
            if !out.contains(&pattern) {
                out.push(pattern);
            }
        }
    }
    Ok(out)
}

/// What to release for the patterns given: each as [`Here::patterns`] reads it, and as
/// written (a reservation made through the API keeps the spelling it was made with, and one
/// made by an earlier version the spelling it gave it).
pub(crate) fn release_patterns(raw: &[String], here: &Here) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in raw {
        let read = here.patterns(p).unwrap_or_default();
        let older = read.iter().filter(|r| !r.ends_with('/')).map(|r| format!("{r}/"));
        for candidate in read.clone().into_iter().chain(older).chain([p.clone()]) {
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

/// The repository-relative paths of what was typed (see [`Here::path`]).
fn paths_for(raw: &[String], here: &Here) -> Result<Vec<String>, Failure> {
    raw.iter().map(|p| here.path(p).map_err(|e| Failure::new(Exit::Invalid, e))).collect()
}

pub(crate) fn describe(r: &Reservation) -> String {
    let mode = if r.exclusive { "exclusive" } else { "shared" };
    let task = r.task.map(|t| format!(", for {t}")).unwrap_or_default();
    let until = r.expires_at.map(|at| format!(", until {}", at.format("%H:%M UTC"))).unwrap_or_default();
    let reason = r.reason.as_ref().map(|why| format!(": {why}")).unwrap_or_default();
    format!("{} ({}, {mode}{task}{until}{reason})", r.pattern, r.id)
}

fn reservations_table(list: &[Reservation]) -> String {
    if list.is_empty() {
        return "no reservations".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.agent.clone(),
                r.pattern.clone(),
                if r.exclusive { "exclusive" } else { "shared" }.to_owned(),
                r.task.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                r.expires_at.map_or_else(|| "with the task".to_owned(), |at| at.format("%H:%M UTC").to_string()),
                r.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(&["ID", "AGENT", "PATTERN", "MODE", "TASK", "UNTIL", "REASON"], &rows)
}

/// Runs `muster files ...` (but `guard`, which answers Claude Code: see `cli::guard`).
pub(super) async fn files(global: &Global, command: FilesCommand, out: &Out) -> Result<Exit, Failure> {
    let here = here()?;
    match command {
        FilesCommand::Reserve { patterns, task, shared, ttl, reason, repo } => {
            let repo = repo_name(&repo, here.worktree.as_ref())?;
            let patterns = patterns_for(&patterns, &here).map_err(|e| Failure::new(Exit::Invalid, e))?;
            let task = task.as_deref().map(task_id).transpose()?;
            let ttl_seconds = ttl.map(|t| t.as_secs().max(1));
            let request =
                ReserveFiles { repo, patterns, shared, task, reason, ttl_seconds, agent: acting(global)?, auto: false };
            let (client, _) = connect(global, Vec::new(), None).await?;
            let reserved = client.reserve_files(request).await?;
            if out.json {
                reserved.iter().for_each(|r| out.show(r, String::new));
            } else {
                let repo = reserved.first().map(|r| r.repo.as_str()).unwrap_or_default();
                say!("reserved in {repo}:");
                reserved.iter().for_each(|r| say!("  {}", describe(r)));
            }
        }
        FilesCommand::Release { patterns, task, repo } => {
            let repo = repo_name(&repo, here.worktree.as_ref())?;
            let task: Option<TaskId> = task.as_deref().map(task_id).transpose()?;
            let patterns = release_patterns(&patterns, &here);
            let (client, _) = connect(global, Vec::new(), None).await?;
            let agent = acting(global)?;
            let released = client.release_files(ReleaseFiles { repo: repo.clone(), patterns, task, agent }).await?;
            if out.json {
                released.iter().for_each(|r| out.show(r, String::new));
            } else if released.is_empty() {
                say!("nothing to release in {repo}");
            } else {
                say!("released in {repo}:");
                released.iter().for_each(|r| say!("  {}", describe(r)));
            }
        }
        FilesCommand::Who { paths, repo } => {
            let repo = repo_name(&repo, here.worktree.as_ref())?;
            let paths = paths_for(&paths, &here)?;
            let (client, _) = connect(global, Vec::new(), None).await?;
            let answer = client.who_has_files(repo, paths).await?;
            if out.json {
                answer.iter().for_each(|p| out.show(p, String::new));
            } else {
                for p in &answer {
                    match p.reservations.as_slice() {
                        [] => say!("{}: free", p.path),
                        held => {
                            let holders: Vec<String> =
                                held.iter().map(|r| format!("{} holds {}", r.agent, describe(r))).collect();
                            say!("{}: {}", p.path, holders.join("; "));
                        }
                    }
                }
            }
        }
        FilesCommand::List { mine, all_repos, repo } => {
            let repo = if all_repos { None } else { Some(repo_name(&repo, here.worktree.as_ref())?) };
            let agent = if mine { Some(require_agent(global)?) } else { None };
            let (client, _) = connect(global, Vec::new(), None).await?;
            let list = client.files(FilesQuery { repo, agent, task: None }).await?;
            if out.json {
                list.iter().for_each(|r| out.show(r, String::new));
            } else {
                say!("{}", reservations_table(&list));
            }
        }
        FilesCommand::Check { paths, staged, strict, repo } => {
            return check(global, paths, staged, strict, &repo, out).await;
        }
        FilesCommand::Guard { .. } => {}
    }
    Ok(Exit::Ok)
}

/// Whether `r` forbids `me` to write what it holds: another agent's exclusive reservation
/// (anyone's, when `me` is unknown). Shared reservations are information only.
fn forbids(r: &Reservation, me: Option<&str>) -> bool {
    r.exclusive && me.is_none_or(|me| r.agent != me)
}

/// What `me` may not write, indexed by pattern: checking 10,000 staged paths against 1,000
/// reservations must not try every pair.
fn forbidden(reservations: Vec<Reservation>, me: &str) -> Index<Reservation> {
    let mut index = Index::default();
    for r in reservations.into_iter().filter(|r| forbids(r, Some(me))) {
        if let Ok(glob) = Glob::parse(&r.pattern) {
            index.insert(glob, r);
        }
    }
    index
}

/// Asks the broker within [`ASK_WITHIN`]; `None` when it cannot be asked.
async fn ask<T>(
    global: &Global,
    question: impl AsyncFnOnce(&Client) -> Result<T, Error>,
) -> Result<Option<T>, Failure> {
    let answer = tokio::time::timeout(ASK_WITHIN, async {
        let (client, _) = connect(global, Vec::new(), None).await?;
        question(&client).await.map_err(Failure::from)
    })
    .await;
    match answer {
        Ok(Ok(value)) => Ok(Some(value)),
        Ok(Err(f)) if matches!(f.exit, Exit::Unreachable | Exit::Unavailable) => Ok(None),
        Ok(Err(f)) => Err(f),
        Err(_) => Ok(None),
    }
}

async fn check(
    global: &Global,
    paths: Vec<String>,
    staged: bool,
    strict: bool,
    repo: &RepoArg,
    out: &Out,
) -> Result<Exit, Failure> {
    let here = here()?;
    let w = worktree(&here)?;
    let mut targets = if staged { w.staged().map_err(|e| Failure::new(Exit::Failed, e.0))? } else { Vec::new() };
    targets.extend(paths_for(&paths, &here)?);
    if targets.is_empty() {
        if staged {
            return Ok(Exit::Ok);
        }
        return Err(Failure::new(Exit::Invalid, "check what? name paths, or --staged"));
    }
    let Some(me) = agent_here(global, w) else {
        return Err(Failure::new(
            Exit::Invalid,
            "who is committing? Set MUSTER_AGENT=NAME, or name this worktree's agent once with \
             `muster hook install --agent NAME` (a new worktree does not inherit the agent of the one it was \
             created from)",
        ));
    };
    let repo = repo_name(repo, Some(w))?;
    let query = FilesQuery { repo: Some(repo.clone()), agent: None, task: None };
    let Some(reservations) = ask(global, async |c: &Client| c.files(query).await).await? else {
        let why = format!("cannot ask the broker at {} whether these files are reserved", global.url);
        if strict {
            return Err(Failure::new(Exit::Unreachable, format!("{why}; refusing (--strict)")));
        }
        eprintln!("muster: {why}; allowing (--strict would refuse)");
        return Ok(Exit::Ok);
    };
    let forbidden = forbidden(reservations, &me);
    let blocked: Vec<(&String, &Reservation)> =
        targets.iter().filter_map(|p| forbidden.matching(p).next().map(|r| (p, r))).collect();
    if blocked.is_empty() {
        if !staged {
            out.show(&serde_json::json!({ "ok": true, "checked": targets.len() }), || {
                format!("ok: none of {} path(s) is reserved by another agent", targets.len())
            });
        }
        return Ok(Exit::Ok);
    }
    if out.json {
        for (path, r) in &blocked {
            out.show(&serde_json::json!({ "path": path, "holder": r }), String::new);
        }
    } else {
        let what = if staged { "commit refused" } else { "reserved" };
        eprintln!("muster: {what}: {} path(s) reserved by other agents in {repo}:", blocked.len());
        for (path, r) in blocked.iter().take(SHOWN) {
            eprintln!("  {path}: {} holds {}", r.agent, describe(r));
        }
        if blocked.len() > SHOWN {
            eprintln!("  and {} more (--json lists them all)", blocked.len() - SHOWN);
        }
        eprintln!(
            "Ask them in chat (muster chat post --to AGENT ...), wait for the release (muster wait --topic files), \
             or leave these paths out."
        );
    }
    Ok(Exit::Conflict)
}
