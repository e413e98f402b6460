//! `muster files ...` and `muster hook install`: file reservations from a shell, and the two
//! places where they are enforced — a git pre-commit hook (`files check --staged`) and a
//! Claude Code `PreToolUse` hook (`files guard`), which stop an agent before it writes a
//! file another agent holds.
//!
//! Patterns are repository-relative; paths given to `check` and `who` are relative to the
//! current directory, as git takes them. The repository is named by `--repo` (or
//! `MUSTER_REPO`, or `git config muster.repo`), else by its normalized remote URL: the same in
//! every worktree of it, and different for two repositories whose directories share a name.
//!
//! When the broker cannot be asked, `check` and `guard` warn and allow (a broker that is
//! down must not stop all work); with `--strict` they refuse instead. Neither fails by
//! crashing: the guard's outcome is always one of allow (0) or block (2), on purpose.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use muster_client::protocol::glob::{Glob, Index};
use muster_client::protocol::{FilesQuery, ReleaseFiles, Reservation, ReserveFiles, TaskId, names};
use muster_client::{Client, Error};

use super::context::{Exit, Failure, Global, Out, acting, connect, require_agent, task_id};
use super::git::Worktree;
use super::output;

/// How long `check` and `guard` wait for the broker before deciding it cannot be asked.
const ASK_WITHIN: Duration = Duration::from_secs(3);

/// Most blocked paths listed in text (all of them with `--json`).
const SHOWN: usize = 20;

/// Marks a pre-commit hook as ours (to update it rather than chain to it).
const HOOK_MARKER: &str = "# muster pre-commit hook";
/// Where an existing pre-commit hook is kept when ours is installed; ours runs it first.
const CHAINED: &str = "pre-commit.before-muster";

/// `--repo`.
#[derive(Debug, Clone, Args)]
pub struct RepoArg {
    /// The repository's name for the broker (default: `git config muster.repo`, else the
    /// normalized URL of the git remote).
    #[arg(long, env = "MUSTER_REPO")]
    repo: Option<String>,
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
    /// A Claude Code PreToolUse hook: reads the hook's JSON on stdin and exits 2, with the
    /// reason on stderr, when the edit would touch a file another agent reserved.
    Guard {
        /// Block the edit when the broker cannot be asked (default: warn and allow).
        #[arg(long)]
        strict: bool,
        /// The repository.
        #[command(flatten)]
        repo: RepoArg,
    },
}

/// `muster hook ...`
#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Install a git pre-commit hook that refuses a commit touching files another agent
    /// reserved (honours core.hooksPath; an existing hook is kept and runs first).
    Install {
        /// The agent working in this worktree (`git config --worktree muster.agent`).
        #[arg(long)]
        agent: Option<String>,
        /// Refuse commits when the broker cannot be asked.
        #[arg(long)]
        strict: bool,
    },
}

fn cwd() -> Result<PathBuf, Failure> {
    std::env::current_dir().map_err(|e| Failure::new(Exit::Failed, format!("cannot read the current directory: {e}")))
}

fn worktree(cwd: &Path) -> Result<Worktree, Failure> {
    Worktree::find(cwd).ok_or_else(|| {
        Failure::new(Exit::Invalid, format!("{} is not in a git repository (or git is not installed)", cwd.display()))
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
fn agent_here(global: &Global, worktree: &Worktree) -> Option<String> {
    global.agent.clone().or_else(|| worktree.agent()).map(|a| names::canonical(&a))
}

/// The pattern a person or an agent means: a glob as written (`*.lock` at any depth), but a
/// plain path is that path from the root (`README.md` is `/README.md`, not every README.md
/// below), and a directory of this worktree is what is in it (`src/auth` is `src/auth/`).
pub(crate) fn pattern_for(raw: &str, worktree: Option<&Worktree>) -> String {
    let raw = raw.strip_prefix("./").unwrap_or(raw);
    if raw.contains(['*', '?', '[', '\\']) {
        return raw.to_owned();
    }
    let dir = !raw.ends_with('/') && worktree.is_some_and(|w| w.root.join(raw.trim_start_matches('/')).is_dir());
    let anchored = if raw.trim_end_matches('/').contains('/') || raw.starts_with('/') { "" } else { "/" };
    format!("{anchored}{raw}{}", if dir { "/" } else { "" })
}

/// What to release for the patterns given: each as [`pattern_for`] reads it, and as written
/// (a reservation made through the API keeps the spelling it was made with).
pub(crate) fn release_patterns(raw: &[String], worktree: Option<&Worktree>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in raw {
        for candidate in [pattern_for(p, worktree), p.clone()] {
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

fn describe(r: &Reservation) -> String {
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

/// Runs `muster files ...` (but `guard`, which answers Claude Code, see [`guard`]).
pub(super) async fn files(global: &Global, command: FilesCommand, out: &Out) -> Result<Exit, Failure> {
    let cwd = cwd()?;
    let here = Worktree::find(&cwd);
    match command {
        FilesCommand::Reserve { patterns, task, shared, ttl, reason, repo } => {
            let repo = repo_name(&repo, here.as_ref())?;
            let patterns = patterns.iter().map(|p| pattern_for(p, here.as_ref())).collect();
            let task = task.as_deref().map(task_id).transpose()?;
            let ttl_seconds = ttl.map(|t| t.as_secs().max(1));
            let request = ReserveFiles { repo, patterns, shared, task, reason, ttl_seconds, agent: acting(global)? };
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
            let repo = repo_name(&repo, here.as_ref())?;
            let task: Option<TaskId> = task.as_deref().map(task_id).transpose()?;
            let patterns = release_patterns(&patterns, here.as_ref());
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
            let w = worktree(&cwd)?;
            let repo = repo_name(&repo, Some(&w))?;
            let paths = paths
                .iter()
                .map(|p| {
                    w.relative(&cwd, Path::new(p)).ok_or_else(|| {
                        Failure::new(Exit::Invalid, format!("{p} is outside the repository at {}", w.root.display()))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
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
            let repo = if all_repos { None } else { Some(repo_name(&repo, here.as_ref())?) };
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
    let cwd = cwd()?;
    let w = worktree(&cwd)?;
    let mut targets = if staged { w.staged().map_err(|e| Failure::new(Exit::Failed, e.0))? } else { Vec::new() };
    for p in &paths {
        match w.relative(&cwd, Path::new(p)) {
            Some(rel) => targets.push(rel),
            None => eprintln!("muster: {p} is outside the repository at {}; not checked", w.root.display()),
        }
    }
    if targets.is_empty() {
        if staged {
            return Ok(Exit::Ok);
        }
        return Err(Failure::new(Exit::Invalid, "check what? name paths, or --staged"));
    }
    let Some(me) = agent_here(global, &w) else {
        return Err(Failure::new(
            Exit::Invalid,
            "who is committing? Set MUSTER_AGENT=NAME, or name this worktree's agent once with \
             `muster hook install --agent NAME` (a new worktree does not inherit the agent of the one it was \
             created from)",
        ));
    };
    let repo = repo_name(repo, Some(&w))?;
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

/// What the guard decided.
enum Verdict {
    Allow,
    Block(String),
    /// It could not tell: allowed, or blocked with `--strict`.
    Unsure(String),
}

/// `muster files guard`: a Claude Code `PreToolUse` hook. Exit 0 allows the tool call, exit
/// 2 blocks it and shows stderr to the model. Every path out of here is one of those two.
pub async fn guard(global: Global, strict: bool, repo: RepoArg) -> ExitCode {
    let mut input = Vec::new();
    // The payload of a Write carries the whole file; 64 MiB is far beyond any edit.
    let read = std::io::stdin().take(64 << 20).read_to_end(&mut input);
    let verdict = match read {
        Err(e) => Verdict::Unsure(format!("could not read the hook's input: {e}")),
        // Run apart, so that even a panic ends as a deliberate verdict.
        Ok(_) => match tokio::spawn(async move { decide(&global, &input, repo).await }).await {
            Ok(verdict) => verdict,
            Err(e) => Verdict::Unsure(format!("the guard failed: {e}")),
        },
    };
    match verdict {
        Verdict::Allow => ExitCode::SUCCESS,
        Verdict::Block(reason) => {
            eprintln!("{reason}");
            ExitCode::from(2)
        }
        Verdict::Unsure(why) if strict => {
            eprintln!("muster: {why}; blocking the edit (--strict)");
            ExitCode::from(2)
        }
        Verdict::Unsure(why) => {
            eprintln!("muster: {why}; allowing the edit (--strict would block it)");
            ExitCode::SUCCESS
        }
    }
}

/// The tools that write a file, and where their payload names it.
const EDITS: [(&str, &str); 4] =
    [("Edit", "file_path"), ("Write", "file_path"), ("MultiEdit", "file_path"), ("NotebookEdit", "notebook_path")];

async fn decide(global: &Global, input: &[u8], repo: RepoArg) -> Verdict {
    let payload: serde_json::Value = match serde_json::from_slice(input) {
        Ok(v) => v,
        Err(e) => return Verdict::Unsure(format!("the hook's input is not JSON ({e})")),
    };
    let tool = payload["tool_name"].as_str().unwrap_or_default();
    let Some((_, field)) = EDITS.iter().find(|(name, _)| *name == tool) else {
        return Verdict::Allow;
    };
    let Some(file) = payload["tool_input"][field].as_str() else {
        return Verdict::Unsure(format!("{tool} without tool_input.{field}"));
    };
    let cwd = match payload["cwd"].as_str() {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::current_dir() {
            Ok(dir) => dir,
            Err(e) => return Verdict::Unsure(format!("no cwd in the hook's input, and none here ({e})")),
        },
    };
    let file = cwd.join(file);
    // Outside a git repository there is nothing reserved.
    let Some(w) = file.parent().and_then(Worktree::find) else { return Verdict::Allow };
    let Some(path) = w.relative(&cwd, &file) else { return Verdict::Allow };
    let repo = match repo_name(&repo, Some(&w)) {
        Ok(repo) => repo,
        Err(f) => return Verdict::Unsure(f.message),
    };
    let me = agent_here(global, &w);
    let asked = ask(global, async |c: &Client| c.who_has_files(repo, vec![path.clone()]).await).await;
    let holders = match asked {
        Ok(Some(mut answer)) => answer.pop().map(|p| p.reservations).unwrap_or_default(),
        Ok(None) => return Verdict::Unsure(format!("cannot ask the broker at {} who holds {path}", global.url)),
        Err(f) => return Verdict::Unsure(f.message),
    };
    let Some(r) = holders.into_iter().find(|r| forbids(r, me.as_deref())) else {
        return Verdict::Allow;
    };
    let not_me = match &me {
        Some(_) => String::new(),
        None => format!(" (if you are {}, set MUSTER_AGENT to your name)", r.agent),
    };
    let who = &r.agent;
    Verdict::Block(format!(
        "muster: {path} is reserved by {who}: {}. Do not edit it: work on other files, or ask {who} in chat \
         (muster chat post --to {who} ...){not_me}",
        describe(&r)
    ))
}

/// `muster hook install`.
pub(super) fn hook(global: &Global, command: HookCommand) -> Result<Exit, Failure> {
    let HookCommand::Install { agent, strict } = command;
    let w = worktree(&cwd()?)?;
    if let Some(agent) = &agent {
        names::check_agent(agent).map_err(|e| Failure::new(Exit::Invalid, format!("--agent: {e}")))?;
        w.set_agent(&names::canonical(agent)).map_err(|e| Failure::new(Exit::Failed, e.0))?;
    }
    let dir = w.hooks_dir().map_err(|e| Failure::new(Exit::Failed, e.0))?;
    let failed = |what: &str, e: std::io::Error| Failure::new(Exit::Failed, format!("{what}: {e}"));
    std::fs::create_dir_all(&dir).map_err(|e| failed(&format!("cannot create {}", dir.display()), e))?;
    let hook = dir.join("pre-commit");
    let chained = dir.join(CHAINED);
    if hook.exists() {
        let ours = std::fs::read_to_string(&hook).is_ok_and(|text| text.contains(HOOK_MARKER));
        if !ours {
            if chained.exists() {
                return Err(Failure::new(
                    Exit::Invalid,
                    format!(
                        "{} exists and is not muster's, and {} is taken: add `muster files check --staged` to your \
                         hook by hand",
                        hook.display(),
                        chained.display()
                    ),
                ));
            }
            std::fs::rename(&hook, &chained).map_err(|e| failed("cannot move the existing hook aside", e))?;
            say!("kept your pre-commit hook as {}; it runs first", chained.display());
        }
    }
    let muster = std::env::current_exe().map_err(|e| failed("cannot find the muster binary", e))?;
    std::fs::write(&hook, hook_script(&muster, &global.url, strict))
        .map_err(|e| failed(&format!("cannot write {}", hook.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| failed("cannot make the hook executable", e))?;
    }
    say!("installed {}: a commit touching files another agent reserved is refused", hook.display());
    match agent_here(global, &w) {
        Some(agent) => say!("this worktree commits as {agent}"),
        None => say!(
            "name the agent of each worktree: `muster hook install --agent NAME` there, or MUSTER_AGENT in its environment"
        ),
    }
    Ok(Exit::Ok)
}

/// The hook: runs the hook it replaced (if any), then the check, with the broker's URL of
/// the install unless `MUSTER_URL` says otherwise (git may run from a shell that has not
/// got it, as when the agent talks to the broker over MCP).
fn hook_script(muster: &Path, url: &str, strict: bool) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let quoted = quote(&muster.display().to_string());
    let url = quote(url);
    let strict = if strict { " --strict" } else { "" };
    format!(
        "#!/bin/sh\n\
         {HOOK_MARKER} (installed by `muster hook install`): refuses a commit that touches\n\
         # files another agent reserved. Remove this file to uninstall.\n\
         hooks=$(dirname \"$0\")\n\
         if [ -x \"$hooks/{CHAINED}\" ]; then\n  \"$hooks/{CHAINED}\" \"$@\" || exit $?\nfi\n\
         muster={quoted}\n\
         [ -x \"$muster\" ] || muster=muster\n\
         MUSTER_URL=${{MUSTER_URL:-{url}}}\n\
         export MUSTER_URL\n\
         exec \"$muster\" files check --staged{strict}\n"
    )
}
