//! `muster files guard`: Claude Code's `PreToolUse` and `PostToolUse` hooks, which keep an
//! agent from overwriting files another agent holds, and hold for it the files it writes.
//!
//! - Before an edit (Edit, Write, MultiEdit, NotebookEdit), the file written is reserved for
//!   the agent, exactly and exclusively, in one request (`auto`): for its claimed task, else
//!   for two hours from this edit. When another agent holds it, the edit is refused (exit 2:
//!   what Claude Code shows the model), naming the holder, the task and how to ask.
//! - Before a shell command (Bash), the files it visibly writes (redirections, `sed -i`,
//!   `mv`, `rm`, `git mv`... see `shell`) are reserved the same way, and what `git status`
//!   says of the worktree is kept.
//! - After the command, `git status` is compared with what was kept: a file the command
//!   changed that another agent holds is told at once (exit 2, which Claude Code feeds back
//!   to the model) with how to restore it; the free ones are reserved as an edit would
//!   reserve them. Nothing is ever undone here.
//!
//! The agent is the session's (`--as`/`MUSTER_AGENT`, else the agent of the worktree the
//! session runs in, else the token's), never the one of the worktree a file is in. When the
//! broker cannot be asked, the hooks warn and allow (`--strict`: refuse); when it refuses
//! for want of a token, they refuse, as the commit hook does.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use muster_client::protocol::glob::exact;
use muster_client::protocol::{ErrorCode, Reservation, ReserveFiles, names};
use muster_client::{Client, Error};
use serde::{Deserialize, Serialize};

use super::context::{Exit, Failure, Global, connect};
use super::files::{ASK_WITHIN, RepoArg, describe};
use super::git::{Settings, Worktree};
use super::paths::Here;
use super::shell;

/// The tools that write a file, and where their input names it.
const EDITS: [(&str, &str); 4] =
    [("Edit", "file_path"), ("Write", "file_path"), ("MultiEdit", "file_path"), ("NotebookEdit", "notebook_path")];

/// What is kept of a shell command's start for its end, in the worktree's git directory.
const CALLS: &str = "muster/calls";

/// A record of a command's start older than this was left by a call whose end never came
/// (refused by a permission prompt, interrupted): thrown away.
const STALE: Duration = Duration::from_secs(3600);

/// What the hook decided.
enum Verdict {
    Allow,
    /// Exit 2, the reason on stderr (before a call: it is refused; after it: the model is
    /// told).
    Refuse(String),
    /// It could not tell: allowed, or refused with `--strict`.
    Unsure(String),
}

/// `muster files guard`. Exit 0 allows, exit 2 refuses (or, after a call, tells the
/// model); every path out of here is one of those two.
pub(super) async fn guard(global: Global, strict: bool, repo: RepoArg) -> ExitCode {
    let mut input = Vec::new();
    // A Write carries the whole file; 64 MiB is far beyond any edit.
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
        Verdict::Refuse(reason) => {
            eprintln!("{reason}");
            ExitCode::from(2)
        }
        Verdict::Unsure(why) if strict => {
            eprintln!("muster: {why}; refusing (--strict)");
            ExitCode::from(2)
        }
        Verdict::Unsure(why) => {
            eprintln!("muster: {why}; allowing (--strict would refuse)");
            ExitCode::SUCCESS
        }
    }
}

/// The session a hook runs for.
struct Session<'a> {
    global: &'a Global,
    here: Here,
    /// `--repo`, for every file.
    repo: Option<String>,
    /// The agent: `--as`/`MUSTER_AGENT`, else the session worktree's; `None` with a token
    /// (the broker knows its agent) or when nobody said.
    me: Option<String>,
    settings: Settings,
}

async fn decide(global: &Global, input: &[u8], repo: RepoArg) -> Verdict {
    let payload: serde_json::Value = match serde_json::from_slice(input) {
        Ok(v) => v,
        Err(e) => return Verdict::Unsure(format!("the hook's input is not JSON ({e})")),
    };
    let cwd = match payload["cwd"].as_str() {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::current_dir() {
            Ok(dir) => dir,
            Err(e) => return Verdict::Unsure(format!("no cwd in the hook's input, and none here ({e})")),
        },
    };
    let here = Here::at(cwd);
    let settings = here.worktree.as_ref().map(Worktree::settings).unwrap_or_default();
    let me = global.agent.clone().or_else(|| settings.agent.clone()).map(|a| names::canonical(&a));
    let session = Session { global, here, repo: repo.repo, me, settings };
    let tool = payload["tool_name"].as_str().unwrap_or_default();
    let call = payload["tool_use_id"].as_str().or(payload["session_id"].as_str()).unwrap_or("call").to_owned();
    match (payload["hook_event_name"].as_str().unwrap_or("PreToolUse"), tool) {
        ("PostToolUse", "Bash") => after_command(&session, &call).await,
        ("PostToolUse", _) => Verdict::Allow,
        (_, "Bash") => {
            let Some(command) = payload["tool_input"]["command"].as_str() else {
                return Verdict::Unsure("Bash without tool_input.command".to_owned());
            };
            before_command(&session, command, &call).await
        }
        (_, tool) => {
            let Some((_, field)) = EDITS.iter().find(|(name, _)| *name == tool) else {
                return Verdict::Allow;
            };
            let Some(file) = payload["tool_input"][field].as_str() else {
                return Verdict::Unsure(format!("{tool} without tool_input.{field}"));
            };
            let file = session.here.cwd.join(file);
            verdict(&session, hold(&session, &[file]).await, Moment::Before, &[])
        }
    }
}

/// Before or after the tool call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Moment {
    Before,
    After,
}

/// A file's place: its worktree and its path there.
fn place(session: &Session, file: &Path) -> Option<(Worktree, String)> {
    if let Some(w) = &session.here.worktree
        && let Ok(path) = session.here.path(&file.to_string_lossy())
    {
        return Some((w.clone(), path));
    }
    // Another worktree (of this repository or another): its path there.
    let there = Here::at(file.parent()?.to_path_buf());
    let path = there.path(&file.to_string_lossy()).ok()?;
    Some((there.worktree?, path))
}

/// Files another agent holds, with the reservation in the way of each.
type Held = Vec<(String, Reservation)>;

/// Reserves `files` (absolute, or relative to the session's directory) for the session's
/// agent, or, with automatic reservations off, asks who holds them: the files another agent
/// holds (none: go ahead), or the verdict when the broker could not tell. Files outside any
/// git worktree are nobody's.
async fn hold(session: &Session<'_>, files: &[PathBuf]) -> Result<Held, Verdict> {
    // By repository: a session may write into another worktree (or repository).
    let mut by_repo: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
    for file in files {
        let Some((w, path)) = place(session, &session.here.cwd.join(file)) else { continue };
        let settings = match &session.here.worktree {
            Some(mine) if mine.root == w.root => session.settings.clone(),
            _ => w.settings(),
        };
        let repo = session.repo.clone().map_or_else(|| settings.repo_name(&w.root), Ok);
        let repo = repo.map_err(|e| Verdict::Unsure(e.0))?;
        let entry = by_repo.entry(repo).or_insert((settings.auto_reserve, Vec::new()));
        if !entry.1.contains(&path) {
            entry.1.push(path);
        }
    }
    let mut held = Held::new();
    for (repo, (auto, paths)) in by_repo {
        if auto && (session.me.is_some() || session.global.token.is_some()) {
            held.extend(reserve(session, &repo, paths).await?);
        } else {
            held.extend(who(session, &repo, paths).await?);
        }
    }
    Ok(held)
}

/// Asks the broker within [`ASK_WITHIN`].
async fn ask<T>(global: &Global, question: impl AsyncFnOnce(&Client) -> Result<T, Error>) -> Result<T, Verdict> {
    let answer = tokio::time::timeout(ASK_WITHIN, async {
        let (client, _) = connect(global, Vec::new(), None).await?;
        question(&client).await.map_err(Failure::from)
    })
    .await;
    match answer {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(f)) if f.exit == Exit::NotAllowed => Err(Verdict::Refuse(format!(
            "muster: the broker at {} refused: {}. Tokens are on there: give this session its token \
             (MUSTER_TOKEN or MUSTER_TOKEN_FILE in .claude/settings.local.json's env); `muster doctor` checks it",
            global.url, f.message
        ))),
        Ok(Err(f)) => Err(Verdict::Unsure(f.message)),
        Err(_) => Err(Verdict::Unsure(format!("the broker at {} did not answer within {ASK_WITHIN:?}", global.url))),
    }
}

/// Reserves `paths` for the session's agent (an edit's reservation), leaving out those
/// others hold shared: those another agent holds exclusively.
async fn reserve(session: &Session<'_>, repo: &str, mut paths: Vec<String>) -> Result<Held, Verdict> {
    // Each round leaves out what was shared; a refusal lists at most 20 conflicts.
    for _ in 0..4 {
        if paths.is_empty() {
            break;
        }
        let request = ReserveFiles {
            repo: repo.to_owned(),
            patterns: paths.clone(),
            agent: session.me.clone(),
            auto: true,
            ..ReserveFiles::default()
        };
        let answer = ask(session.global, async |c: &Client| match c.reserve_files(request).await {
            Ok(_) => Ok(Vec::new()),
            Err(Error::Api(info)) if info.code == ErrorCode::Conflict && !info.conflicts.is_empty() => {
                Ok(info.conflicts)
            }
            Err(e) => Err(e),
        })
        .await?;
        if answer.is_empty() {
            break;
        }
        let held: Held = answer
            .iter()
            .filter(|c| c.holder.exclusive)
            .filter_map(|c| paths.iter().find(|p| exact(p) == c.pattern).map(|p| (p.clone(), c.holder.clone())))
            .collect();
        if !held.is_empty() {
            return Ok(held);
        }
        paths.retain(|p| !answer.iter().any(|c| exact(p) == c.pattern));
    }
    Ok(Held::new())
}

/// Who holds `paths`: those another agent holds exclusively.
async fn who(session: &Session<'_>, repo: &str, paths: Vec<String>) -> Result<Held, Verdict> {
    let answer = ask(session.global, async |c: &Client| c.who_has_files(repo.to_owned(), paths).await).await?;
    let me = session.me.as_deref();
    Ok(answer
        .into_iter()
        .filter_map(|p| {
            let r = p.reservations.into_iter().find(|r| r.exclusive && me.is_none_or(|me| r.agent != me))?;
            Some((p.path, r))
        })
        .collect())
}

/// What the model is told: which files, who holds them, for which task, how to ask, and
/// after a command, how to restore each.
fn refusal(session: &Session, held: &Held, moment: Moment, restore: &[(String, String)]) -> String {
    let mut lines = Vec::new();
    for (path, r) in held {
        let who = &r.agent;
        lines.push(match moment {
            Moment::Before => format!("muster: {path} is held by {who}: {}.", describe(r)),
            Moment::After => format!("muster: this command changed {path}, which {who} holds: {}.", describe(r)),
        });
        if let Some((_, how)) = restore.iter().find(|(p, _)| p == path) {
            lines.push(format!("  Restore it: {how}"));
        }
    }
    if let Some((path, r)) = held.first() {
        let task = r.task.map(|t| format!(" ({t})")).unwrap_or_default();
        let ask = format!("muster chat post '@{} may I change {path}?{task}'", r.agent);
        lines.push(match moment {
            Moment::Before => {
                format!("Do not write it: work on other files, or ask: {ask} (then `muster wait --mention`).")
            }
            Moment::After => format!("Their work may be overwritten: restore, then ask: {ask}."),
        });
        if session.me.is_none() && session.global.token.is_none() {
            lines.push(format!(
                "(If you are {}, this session has no agent name: set MUSTER_AGENT, or run `muster init` in its \
                 worktree.)",
                r.agent
            ));
        }
    }
    lines.join("\n")
}

/// The verdict on what [`hold`] found.
fn verdict(session: &Session, found: Result<Held, Verdict>, moment: Moment, restore: &[(String, String)]) -> Verdict {
    match found {
        Ok(held) if held.is_empty() => Verdict::Allow,
        Ok(held) => Verdict::Refuse(refusal(session, &held, moment, restore)),
        Err(verdict) => verdict,
    }
}

// ---------------------------------------------------------------------------------------
// Shell commands.

/// A file's state in `git status`, as far as telling a change goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// `git status --porcelain`'s two letters (`??` untracked, ` M` modified...).
    status: String,
    /// Its size and modification time (nanoseconds), when it exists.
    stat: Option<(u64, u128)>,
}

/// What `git status` says of every file that differs from `HEAD` (or is untracked).
fn status(w: &Worktree) -> Result<BTreeMap<String, State>, String> {
    let out = std::process::Command::new("git")
        .current_dir(&w.root)
        .args(["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--ignore-submodules"])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!("git status: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let mut files = BTreeMap::new();
    for entry in out.stdout.split(|b| *b == 0).filter(|e| e.len() > 3) {
        let entry = String::from_utf8_lossy(entry);
        let (code, path) = entry.split_at(3);
        let stat = std::fs::symlink_metadata(w.root.join(path)).ok().map(|m| {
            let modified = m.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
            (m.len(), modified.map_or(0, |d| d.as_nanos()))
        });
        files.insert(path.to_owned(), State { status: code[..2].to_owned(), stat });
    }
    Ok(files)
}

/// Where the start of call `call` is kept.
fn record(w: &Worktree, call: &str) -> PathBuf {
    let name: String = call.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    w.git_dir.join(CALLS).join(format!("{name}.json"))
}

/// Before a shell command: what it visibly writes is held (or refused), and the worktree's
/// state kept for [`after_command`].
async fn before_command(session: &Session<'_>, command: &str, call: &str) -> Verdict {
    let writes = shell::writes(command);
    let cwd = &session.here.cwd;
    let mut files: Vec<PathBuf> = writes.paths.iter().map(|p| cwd.join(p)).collect();
    for (dest, source) in &writes.into {
        let dest = cwd.join(dest);
        if dest.is_dir()
            && let Some(name) = Path::new(source).file_name()
        {
            files.push(dest.join(name));
        }
    }
    let verdict = verdict(session, hold(session, &files).await, Moment::Before, &[]);
    if matches!(verdict, Verdict::Allow)
        && let Some(w) = &session.here.worktree
    {
        keep(w, call);
    }
    verdict
}

/// Keeps the worktree's state at the start of call `call` (and throws away what calls that
/// never ended left).
fn keep(w: &Worktree, call: &str) {
    let Ok(state) = status(w) else { return };
    let dir = w.git_dir.join(CALLS);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let now = SystemTime::now();
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Ok(json) = serde_json::to_vec(&state) {
        let _ = std::fs::write(record(w, call), json);
    }
}

/// After a shell command: the files it changed (by `git status`, against what was kept
/// before it) are held for the agent; one another agent holds is told, with how to restore
/// it.
async fn after_command(session: &Session<'_>, call: &str) -> Verdict {
    let Some(w) = &session.here.worktree else { return Verdict::Allow };
    let path = record(w, call);
    let Ok(before) = std::fs::read(&path) else {
        // The start was not seen (the hook was installed meanwhile, or the call refused).
        return Verdict::Allow;
    };
    let _ = std::fs::remove_file(&path);
    let Ok(before) = serde_json::from_slice::<BTreeMap<String, State>>(&before) else { return Verdict::Allow };
    let after = match status(w) {
        Ok(after) => after,
        Err(e) => return Verdict::Unsure(e),
    };
    let changed = changes(&before, &after);
    if changed.is_empty() {
        return Verdict::Allow;
    }
    let files: Vec<PathBuf> = changed.iter().map(|p| w.root.join(p)).collect();
    let restore: Vec<(String, String)> =
        changed.iter().map(|p| (p.clone(), how_to_restore(p, before.get(p), after.get(p)))).collect();
    verdict(session, hold(session, &files).await, Moment::After, &restore)
}

/// The files whose state changed between two `git status`.
fn changes(before: &BTreeMap<String, State>, after: &BTreeMap<String, State>) -> Vec<String> {
    let mut changed: Vec<String> =
        after.iter().filter(|(p, s)| before.get(*p) != Some(*s)).map(|(p, _)| p.clone()).collect();
    changed.extend(before.keys().filter(|p| !after.contains_key(*p)).cloned());
    changed.sort();
    changed
}

/// How to put back a file a command changed, from what `git status` said before and after.
fn how_to_restore(path: &str, before: Option<&State>, after: Option<&State>) -> String {
    let quoted = format!("'{}'", path.replace('\'', r"'\''"));
    match (before, after) {
        (None, Some(s)) if s.status == "??" => format!("rm {quoted} (it is new)"),
        (None, _) => format!("git restore --source=HEAD --staged --worktree -- {quoted}"),
        (Some(_), _) => format!(
            "it had changes before this command; undo what the command did to it (`git diff -- {quoted}` shows them)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, size: u64) -> State {
        State { status: status.to_owned(), stat: Some((size, 1)) }
    }

    #[test]
    fn changes_are_what_git_status_tells_apart() {
        let before: BTreeMap<String, State> = [
            ("a".to_owned(), state(" M", 1)),
            ("gone".to_owned(), state(" M", 1)),
            ("same".to_owned(), state("??", 3)),
        ]
        .into();
        let after: BTreeMap<String, State> =
            [("a".to_owned(), state(" M", 2)), ("new".to_owned(), state("??", 1)), ("same".to_owned(), state("??", 3))]
                .into();
        assert_eq!(changes(&before, &after), ["a", "gone", "new"]);
    }

    #[test]
    fn restoring_depends_on_what_was_there() {
        assert!(how_to_restore("n.rs", None, Some(&state("??", 1))).starts_with("rm 'n.rs'"));
        assert!(how_to_restore("a.rs", None, Some(&state(" M", 1))).starts_with("git restore"));
        assert!(how_to_restore("a.rs", Some(&state(" M", 1)), Some(&state(" M", 2))).contains("had changes"));
    }
}
