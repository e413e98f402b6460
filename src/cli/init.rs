//! `muster init`: wires a checkout for its agents in one command, safe to run twice, with
//! `--undo` reversing exactly what it did and `--dry-run` printing it; `muster doctor`, which
//! checks that everything it set up would work; and `muster hook install`, its git part.
//!
//! What `init` sets up in a worktree:
//! - the agent's name, per worktree (`git config --worktree muster.agent`): `--agent`, else
//!   a stable default made from the worktree's directory and path, never shared by two;
//! - git hooks that **chain** what was there: this worktree's `core.hooksPath` points to
//!   `<git dir>/muster/hooks`, where every hook runs the one of the directory git used
//!   before (husky's `.husky/_`, a tracked `hooks/`, `.git/hooks`), and `pre-commit`,
//!   `pre-merge-commit` and, for a cherry-pick or revert, `prepare-commit-msg` then refuse a
//!   commit that touches files another agent holds. Nothing tracked is modified, and
//!   `git reset --hard` leaves them (they live in the git directory);
//! - Claude Code: `.claude/settings.local.json` (untracked, per checkout) gets the agent's
//!   name, the broker's URL, the `PreToolUse` and `PostToolUse` hooks (`muster files guard`)
//!   and the MCP server (in an untracked `.mcp.json`); existing entries are kept;
//! - other coding agents found (Codex CLI, Gemini CLI, Cursor): their MCP configuration
//!   where it is per project and untracked, and what is enforced for them (commits only).
//!
//! What was done is recorded in `<git dir>/muster/init.json`, which `--undo` reads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use clap::{Args, Subcommand};
use muster_client::protocol::names;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::context::{Exit, Failure, Global};
use super::files::RepoArg;
use super::git::Worktree;
use super::paths::Here;

/// `muster init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The agent working in this worktree (default: one made from the worktree's name,
    /// printed).
    #[arg(long)]
    agent: Option<String>,
    /// Do not reserve the files an agent edits (for this repository: `git config
    /// muster.autoReserve false`); edits of files others hold are still refused.
    #[arg(long)]
    no_auto_reserve: bool,
    /// Refuse edits and commits when the broker cannot be asked (default: warn and allow).
    #[arg(long)]
    strict: bool,
    /// Reverse what `muster init` did in this worktree.
    #[arg(long, conflicts_with_all = ["agent", "no_auto_reserve", "strict"])]
    undo: bool,
    /// Print what it would do, and do nothing.
    #[arg(long)]
    dry_run: bool,
    /// The repository.
    #[command(flatten)]
    repo: RepoArg,
}

/// `muster hook ...`
#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Install the git hooks that refuse a commit touching files another agent reserved
    /// (the git part of `muster init`: chains the hooks already there).
    Install {
        /// The agent working in this worktree (`git config --worktree muster.agent`).
        #[arg(long)]
        agent: Option<String>,
        /// Refuse commits when the broker cannot be asked.
        #[arg(long)]
        strict: bool,
    },
}

/// Marks the files Muster writes, so that they are told apart from a user's.
pub(super) const MARKER: &str = "# muster hook";

/// The hooks git runs in a worktree: each gets a stub that runs the previous one. (Server
/// hooks and those whose mere presence changes what git does, `push-to-checkout`, are left
/// out unless the previous directory has them.)
const HOOKS: [&str; 16] = [
    "applypatch-msg",
    "pre-applypatch",
    "post-applypatch",
    "pre-commit",
    "pre-merge-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "pre-rebase",
    "post-checkout",
    "post-merge",
    "pre-push",
    "post-rewrite",
    "pre-auto-gc",
    "reference-transaction",
    "post-index-change",
];

/// The tools the `PreToolUse` hook looks at, and those after which `PostToolUse` does.
const PRE_TOOLS: &str = "Edit|Write|MultiEdit|NotebookEdit|Bash";
const POST_TOOLS: &str = "Bash";

/// What `init` did, for `--undo`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    /// Git settings it set: key, scope (`worktree` or `local`) and the value before.
    config: Vec<(String, String, Option<String>)>,
    /// Files it created.
    created: Vec<PathBuf>,
    /// Directories it created.
    #[serde(default)]
    created_dirs: Vec<PathBuf>,
    /// JSON entries it added: file, path of keys, and the element added to the array there
    /// (`None`: the key itself was added).
    json: Vec<(PathBuf, Vec<String>, Option<Value>)>,
    /// Lines it added to the repository's `info/exclude`.
    excluded: Vec<String>,
    /// The hooks directory git used before.
    previous_hooks: Option<String>,
}

/// A run of `init`: prints each step, does it unless `dry`.
struct Run<'a> {
    w: &'a Worktree,
    dry: bool,
    record: Record,
}

impl Run<'_> {
    /// Creates `dir` and the directories above it that are missing, recording them.
    fn create_dir(&mut self, dir: &Path) -> Result<(), Failure> {
        let missing: Vec<PathBuf> = dir.ancestors().take_while(|d| !d.exists()).map(Path::to_path_buf).collect();
        std::fs::create_dir_all(dir).map_err(|e| failed(&format!("cannot create {}", dir.display()), e))?;
        for d in missing.into_iter().rev() {
            if !self.record.created_dirs.contains(&d) {
                self.record.created_dirs.push(d);
            }
        }
        Ok(())
    }

    fn say(&self, what: &str) {
        say!("{}{what}", if self.dry { "would: " } else { "" });
    }

    /// Sets a git setting, recording the value before.
    fn set_config(&mut self, key: &str, scope: &str, value: &str) -> Result<(), Failure> {
        let before = config_get(self.w, key, scope);
        if before.as_deref() == Some(value) {
            return Ok(());
        }
        self.say(&format!("git config --{scope} {key} {value}"));
        if !self.dry {
            // Git creates the worktree's own configuration file when it is first written.
            let own = self.w.git_dir.join("config.worktree");
            if scope == "worktree" && !own.exists() && !self.record.created.contains(&own) {
                self.record.created.push(own);
            }
            git(self.w, &["config", &format!("--{scope}"), key, value])?;
            if !self.record.config.iter().any(|(k, s, _)| k == key && s == scope) {
                self.record.config.push((key.to_owned(), scope.to_owned(), before));
            }
        }
        Ok(())
    }

    /// Writes a file it owns (created now, or created by an earlier run).
    fn write(&mut self, path: &Path, text: &str, mode: u32) -> Result<(), Failure> {
        let new = !path.exists();
        if !new && std::fs::read_to_string(path).is_ok_and(|t| t == text) {
            return Ok(());
        }
        if self.dry {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            self.create_dir(dir)?;
        }
        std::fs::write(path, text).map_err(|e| failed(&format!("cannot write {}", path.display()), e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| failed(&format!("cannot make {} executable", path.display()), e))?;
        }
        if new && !self.record.created.contains(&path.to_path_buf()) {
            self.record.created.push(path.to_path_buf());
        }
        Ok(())
    }

    /// Sets `keys` of the JSON file `file` (created if need be) to `value`, unless the key
    /// is there: a user's entry is kept as it is.
    fn set_json(&mut self, file: &Path, keys: &[&str], value: Value) -> Result<(), Failure> {
        self.merge_json(file, keys, value, None)
    }

    /// Adds `element` to the array at `keys` of the JSON file `file` (created if need be),
    /// unless `same` finds one like it there.
    fn add_json(
        &mut self,
        file: &Path,
        keys: &[&str],
        element: Value,
        same: &dyn Fn(&Value) -> bool,
    ) -> Result<(), Failure> {
        self.merge_json(file, keys, element, Some(same))
    }

    fn merge_json(
        &mut self,
        file: &Path,
        keys: &[&str],
        value: Value,
        element: Option<&dyn Fn(&Value) -> bool>,
    ) -> Result<(), Failure> {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mut doc: Value = if text.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&text).map_err(|e| {
                let file = file.display();
                Failure::new(Exit::Invalid, format!("{file} is not JSON ({e}): fix it, then run `muster init` again"))
            })?
        };
        let (last, parents) = keys.split_last().expect("a key");
        let mut at = &mut doc;
        for key in parents {
            let Some(object) = at.as_object_mut() else {
                return Err(Failure::new(Exit::Invalid, format!("{}: {key} is not in an object", file.display())));
            };
            at = object.entry(*key).or_insert_with(|| json!({}));
        }
        let Some(object) = at.as_object_mut() else {
            let what = parents.join(".");
            return Err(Failure::new(Exit::Invalid, format!("{}: {what} is not an object", file.display())));
        };
        let added = match (element, object.get_mut(*last)) {
            (Some(same), Some(Value::Array(items))) => {
                if items.iter().any(same) {
                    return Ok(());
                }
                items.push(value.clone());
                Some(value)
            }
            (Some(_), Some(other)) => {
                let what = keys.join(".");
                return Err(Failure::new(
                    Exit::Invalid,
                    format!("{}: {what} is not an array ({other})", file.display()),
                ));
            }
            (Some(_), None) => {
                object.insert((*last).to_owned(), json!([value.clone()]));
                Some(value)
            }
            (None, Some(existing)) => {
                if *existing != value {
                    say!("kept {} {} as it is ({existing})", file.display(), keys.join("."));
                }
                return Ok(());
            }
            (None, None) => {
                object.insert((*last).to_owned(), value);
                None
            }
        };
        self.say(&format!("add {} to {}", keys.join("."), file.display()));
        if self.dry {
            return Ok(());
        }
        let existed = file.exists();
        if let Some(dir) = file.parent() {
            self.create_dir(dir)?;
        }
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        std::fs::write(file, text).map_err(|e| failed(&format!("cannot write {}", file.display()), e))?;
        if !existed && !self.record.created.contains(&file.to_path_buf()) {
            self.record.created.push(file.to_path_buf());
        }
        let path = keys.iter().map(|k| (*k).to_owned()).collect();
        self.record.json.push((file.to_path_buf(), path, added));
        Ok(())
    }

    /// Keeps an untracked file Muster writes out of `git status` and `git add -A`.
    fn exclude(&mut self, relative: &str) -> Result<(), Failure> {
        let ignored = Process::new("git")
            .current_dir(&self.w.root)
            .args(["check-ignore", "-q", "--no-index", relative])
            .status()
            .is_ok_and(|s| s.success());
        if ignored {
            return Ok(());
        }
        let file = PathBuf::from(git_line(self.w, &["rev-parse", "--git-path", "info/exclude"])?);
        let file = if file.is_absolute() { file } else { self.w.root.join(file) };
        let line = format!("/{relative}");
        self.say(&format!("add {line} to {}", file.display()));
        if self.dry {
            return Ok(());
        }
        let mut text = std::fs::read_to_string(&file).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed("cannot create info/", e))?;
        }
        std::fs::write(&file, text).map_err(|e| failed(&format!("cannot write {}", file.display()), e))?;
        self.record.excluded.push(line);
        Ok(())
    }
}

fn failed(what: &str, e: std::io::Error) -> Failure {
    Failure::new(Exit::Failed, format!("{what}: {e}"))
}

fn git_output(w: &Worktree, args: &[&str]) -> Result<std::process::Output, Failure> {
    Process::new("git")
        .current_dir(&w.root)
        .args(args)
        .output()
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot run git: {e}")))
}

fn git(w: &Worktree, args: &[&str]) -> Result<(), Failure> {
    let out = git_output(w, args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Failure::new(
            Exit::Failed,
            format!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()),
        ))
    }
}

fn git_line(w: &Worktree, args: &[&str]) -> Result<String, Failure> {
    let out = git_output(w, args)?;
    if !out.status.success() {
        return Err(Failure::new(
            Exit::Failed,
            format!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}

/// A git setting of one scope (`worktree`, `local`), or of all (`""`).
fn config_get(w: &Worktree, key: &str, scope: &str) -> Option<String> {
    let scope = if scope.is_empty() { String::new() } else { format!("--{scope}") };
    let args: Vec<&str> = ["config", scope.as_str(), "--get", key].into_iter().filter(|a| !a.is_empty()).collect();
    git_line(w, &args).ok()
}

fn record_path(w: &Worktree) -> PathBuf {
    w.git_dir.join("muster/init.json")
}

fn load_record(w: &Worktree) -> Record {
    std::fs::read(record_path(w)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn save_record(w: &Worktree, record: &Record) -> Result<(), Failure> {
    let path = record_path(w);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed("cannot create the git dir's muster/", e))?;
    }
    let text = serde_json::to_string_pretty(record).unwrap_or_default();
    std::fs::write(&path, text).map_err(|e| failed(&format!("cannot write {}", path.display()), e))
}

/// The agent name a worktree gets when none is given: its directory's name and a short
/// hash of its path, so that two worktrees never share one.
pub(crate) fn default_agent(root: &Path) -> String {
    let base = root.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let mut name: String = base.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    name = name.trim_matches('-').chars().take(40).collect::<String>().trim_end_matches('-').to_owned();
    if name.is_empty() {
        name = "agent".to_owned();
    }
    // FNV-1a of the path: stable across runs and machines' Rust versions.
    let hash = root
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{name}-{:04x}", hash & 0xffff)
}

/// This binary, as hooks and settings name it.
fn muster_binary() -> Result<PathBuf, Failure> {
    std::env::current_exe().map_err(|e| failed("cannot find the muster binary", e))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A hook stub: runs the hook of `previous` of the same name, then, for those that check
/// reservations, the check.
fn stub(name: &str, previous: &str, muster: &Path, env: &[(&str, String)], strict: bool) -> String {
    let mut text = format!(
        "#!/bin/sh\n{MARKER} (installed by `muster init`; `muster init --undo` removes it): runs the hook git\n\
         # ran here before, from {previous}, then for commits checks the files other agents hold.\n\
         previous={}\n\
         hook=$(basename \"$0\")\n\
         if [ -x \"$previous/$hook\" ]; then\n  \"$previous/$hook\" \"$@\" || exit $?\nfi\n",
        shell_quote(previous),
        // In a comment: one line, whatever the path holds.
        previous = previous.replace(['\n', '\r'], " "),
    );
    let check = match name {
        "pre-commit" | "pre-merge-commit" => Some(""),
        // A cherry-pick or a revert runs neither of those.
        "prepare-commit-msg" => Some(
            "gitdir=$(git rev-parse --git-dir)\n\
             [ -f \"$gitdir/CHERRY_PICK_HEAD\" ] || [ -f \"$gitdir/REVERT_HEAD\" ] || exit 0\n",
        ),
        _ => None,
    };
    if let Some(condition) = check {
        let strict = if strict { " --strict" } else { "" };
        text.push_str(condition);
        text.push_str(&format!(
            "muster={}\n[ -x \"$muster\" ] || muster=muster\n",
            shell_quote(&muster.display().to_string())
        ));
        for (key, value) in env {
            text.push_str(&format!("{key}=${{{key}:-{}}}\nexport {key}\n", shell_quote(value)));
        }
        text.push_str(&format!("exec \"$muster\" files check --staged{strict}\n"));
    }
    text
}

/// The directory of Muster's hooks in a worktree.
fn hooks_dir(w: &Worktree) -> PathBuf {
    w.git_dir.join("muster/hooks")
}

/// Names the agent of this worktree.
fn name_agent(run: &mut Run, agent: Option<&str>) -> Result<String, Failure> {
    let agent = match agent {
        Some(a) => {
            names::check_agent(a).map_err(|e| Failure::new(Exit::Invalid, format!("--agent: {e}")))?;
            names::canonical(a)
        }
        None => run.w.agent().unwrap_or_else(|| default_agent(&run.w.root)),
    };
    run.set_config("extensions.worktreeConfig", "local", "true")?;
    run.set_config("muster.agent", "worktree", &agent)?;
    let root = run.w.root.to_string_lossy().into_owned();
    run.set_config("muster.agentWorktree", "worktree", &root)?;
    Ok(agent)
}

/// Installs the chained git hooks.
fn install_hooks(run: &mut Run, env: &[(&str, String)], strict: bool) -> Result<(), Failure> {
    let ours = hooks_dir(run.w);
    let ours_text = ours.to_string_lossy().into_owned();
    let current = config_get(run.w, "core.hooksPath", "");
    let previous = match (&current, &run.record.previous_hooks) {
        (Some(dir), Some(previous)) if *dir == ours_text => previous.clone(),
        (Some(dir), _) if *dir != ours_text => dir.clone(),
        _ => {
            let common = PathBuf::from(git_line(run.w, &["rev-parse", "--git-common-dir"])?);
            let common = if common.is_absolute() { common } else { run.w.root.join(common) };
            common.join("hooks").to_string_lossy().into_owned()
        }
    };
    let previous_dir =
        if Path::new(&previous).is_absolute() { PathBuf::from(&previous) } else { run.w.root.join(&previous) };
    let mut names: BTreeSet<String> = HOOKS.iter().map(|h| (*h).to_owned()).collect();
    if let Ok(entries) = std::fs::read_dir(&previous_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.contains('.') && e.path().is_file() {
                names.insert(name);
            }
        }
    }
    run.say(&format!("install git hooks in {} (running those of {previous} first)", ours.display()));
    let muster = muster_binary()?;
    for name in &names {
        run.write(&ours.join(name), &stub(name, &previous, &muster, env, strict), 0o755)?;
    }
    run.record.previous_hooks = Some(previous);
    run.set_config("extensions.worktreeConfig", "local", "true")?;
    run.set_config("core.hooksPath", "worktree", &ours_text)
}

/// Whether a tracked file is at `relative` in the worktree.
fn tracked(w: &Worktree, relative: &str) -> bool {
    git_output(w, &["ls-files", "--error-unmatch", "--", relative]).is_ok_and(|o| o.status.success())
}

/// How the hooks and MCP servers reach the broker: `MUSTER_URL`, and `MUSTER_WORKSPACE`
/// when one was given (`--workspace`).
fn broker_env(global: &Global) -> Vec<(&'static str, String)> {
    let mut env = vec![("MUSTER_URL", global.url.clone())];
    env.extend(global.workspace.clone().map(|w| ("MUSTER_WORKSPACE", w)));
    env
}

/// ` FLAG KEY=VALUE` for each of `env`, for a command line to paste.
fn flags(env: &[(&str, String)], flag: &str) -> String {
    env.iter().map(|(key, value)| format!(" {flag} {key}={value}")).collect()
}

/// The MCP server entry every client takes.
fn mcp_entry(muster: &Path, agent: &str, broker: &[(&str, String)], repo: Option<&str>) -> Value {
    let mut env = json!({ "MUSTER_AGENT": agent });
    for (key, value) in broker {
        env[*key] = json!(value);
    }
    if let Some(repo) = repo {
        env["MUSTER_REPO"] = json!(repo);
    }
    json!({ "command": muster.display().to_string(), "args": ["mcp"], "env": env })
}

/// Claude Code: settings, hooks and the MCP server.
fn claude_code(
    run: &mut Run,
    agent: &str,
    env: &[(&str, String)],
    strict: bool,
    repo: Option<&str>,
) -> Result<Vec<String>, Failure> {
    let mut notes = Vec::new();
    let muster = muster_binary()?;
    let settings = run.w.root.join(".claude/settings.local.json");
    run.set_json(&settings, &["env", "MUSTER_AGENT"], json!(agent))?;
    for (key, value) in env {
        run.set_json(&settings, &["env", key], json!(value))?;
    }
    if let Some(repo) = repo {
        run.set_json(&settings, &["env", "MUSTER_REPO"], json!(repo))?;
    }
    let strict = if strict { " --strict" } else { "" };
    let command = format!("{} files guard{strict}", shell_quote(&muster.display().to_string()));
    let ours = |v: &Value| {
        v["hooks"]
            .as_array()
            .is_some_and(|hs| hs.iter().any(|h| h["command"].as_str().is_some_and(|c| c.contains(" files guard"))))
    };
    for (event, tools) in [("PreToolUse", PRE_TOOLS), ("PostToolUse", POST_TOOLS)] {
        let group = json!({ "matcher": tools, "hooks": [{ "type": "command", "command": command, "timeout": 15 }] });
        run.add_json(&settings, &["hooks", event], group, &ours)?;
    }
    run.exclude(".claude/settings.local.json")?;
    if tracked(run.w, ".mcp.json") {
        notes.push(format!(
            "Claude Code's MCP server: .mcp.json is tracked, so it was left alone; add the server for this checkout \
             with: claude mcp add --scope local muster -e MUSTER_AGENT={agent}{} -- {} mcp",
            flags(env, "-e"),
            muster.display()
        ));
    } else {
        let mcp = run.w.root.join(".mcp.json");
        run.set_json(&mcp, &["mcpServers", "muster"], mcp_entry(&muster, agent, env, repo))?;
        run.add_json(&settings, &["enabledMcpjsonServers"], json!("muster"), &|v| v == "muster")?;
        run.exclude(".mcp.json")?;
    }
    Ok(notes)
}

/// The other coding agents found here or on this machine: Codex CLI, Gemini CLI, Cursor.
fn other_agents(
    run: &mut Run,
    agent: &str,
    env: &[(&str, String)],
    repo: Option<&str>,
) -> Result<Vec<String>, Failure> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    let here = |dir: &str| run.w.root.join(dir).exists();
    let muster = muster_binary()?;
    let entry = mcp_entry(&muster, agent, env, repo);
    let mut notes = Vec::new();
    let commits_only = "enforced at commit time only (it has no edit hooks Muster uses): a commit touching files \
                        another agent holds is refused";
    if here(".cursor") || on_path("cursor") || on_path("cursor-agent") {
        if tracked(run.w, ".cursor/mcp.json") {
            notes.push(
                "Cursor: .cursor/mcp.json is tracked, so it was left alone: add the muster server there".to_owned(),
            );
        } else {
            let file = run.w.root.join(".cursor/mcp.json");
            run.set_json(&file, &["mcpServers", "muster"], entry.clone())?;
            run.exclude(".cursor/mcp.json")?;
        }
        notes.push(format!("Cursor: MCP server in .cursor/mcp.json; {commits_only}"));
    }
    if here(".gemini") || on_path("gemini") {
        if tracked(run.w, ".gemini/settings.json") {
            notes.push("Gemini CLI: .gemini/settings.json is tracked, so it was left alone".to_owned());
        } else {
            let file = run.w.root.join(".gemini/settings.json");
            run.set_json(&file, &["mcpServers", "muster"], entry.clone())?;
            run.exclude(".gemini/settings.json")?;
        }
        notes.push(format!("Gemini CLI: MCP server in .gemini/settings.json; {commits_only}"));
    }
    if here(".codex") || on_path("codex") {
        notes.push(format!(
            "Codex CLI: its MCP servers are configured per user; add this one with: codex mcp add muster --env \
             MUSTER_AGENT={agent}{} -- {} mcp; {commits_only}",
            flags(env, "--env"),
            muster.display()
        ));
    }
    if !notes.is_empty() {
        notes.push(format!(
            "For agents without hooks, add to their instructions (AGENTS.md, GEMINI.md, .cursor/rules): \"You are \
             {agent}. Before editing a file, reserve it with the muster MCP tool reserve_files; if another agent \
             holds it, work on something else or ask them in chat.\""
        ));
    }
    Ok(notes)
}

/// `muster init`.
pub(super) fn init(global: &Global, args: InitArgs) -> Result<Exit, Failure> {
    let here = Here::now().map_err(|e| Failure::new(Exit::Failed, e))?;
    let Some(w) = here.worktree.as_ref() else {
        return Err(Failure::new(Exit::Invalid, format!("{} is not in a git repository", here.cwd.display())));
    };
    if args.undo {
        return undo(w, args.dry_run);
    }
    let mut run = Run { w, dry: args.dry_run, record: load_record(w) };
    let agent = name_agent(&mut run, args.agent.as_deref())?;
    if args.no_auto_reserve {
        run.set_config("muster.autoReserve", "local", "false")?;
    } else if config_get(w, "muster.autoReserve", "local").as_deref() == Some("false") {
        say!("edits do not reserve files in this repository (git config muster.autoReserve false)");
    }
    let env = broker_env(global);
    install_hooks(&mut run, &env, args.strict)?;
    let repo = args.repo.repo.as_deref();
    let mut notes = claude_code(&mut run, &agent, &env, args.strict, repo)?;
    notes.extend(other_agents(&mut run, &agent, &env, repo)?);
    if !run.dry {
        save_record(w, &run.record)?;
    }
    say!("");
    say!("{} {} as agent {agent}.", if run.dry { "Would set up" } else { "Set up" }, w.root.display());
    say!(
        "  Claude Code: edits and shell writes of files other agents hold are refused; the files this agent edits are held for it{}.",
        if config_get(w, "muster.autoReserve", "local").as_deref() == Some("false") {
            " (off: --no-auto-reserve)"
        } else {
            ""
        }
    );
    say!(
        "  git: commits, merges and cherry-picks touching files other agents hold are refused; earlier hooks still run."
    );
    for note in notes {
        say!("  {note}");
    }
    say!("Check it with `muster doctor`; reverse it with `muster init --undo`.");
    Ok(Exit::Ok)
}

/// `muster init --undo`: reverses what the record says was done.
fn undo(w: &Worktree, dry: bool) -> Result<Exit, Failure> {
    let path = record_path(w);
    let Ok(bytes) = std::fs::read(&path) else {
        say!("nothing to undo: `muster init` has not run in {}", w.root.display());
        return Ok(Exit::Ok);
    };
    let record: Record = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::new(Exit::Failed, format!("{} is not readable ({e})", path.display())))?;
    let run = Run { w, dry, record: Record::default() };
    for (file, keys, element) in record.json.iter().rev() {
        run.say(&format!("remove {} from {}", keys.join("."), file.display()));
        if !dry {
            remove_json(file, keys, element.as_ref())?;
        }
    }
    for (key, scope, before) in record.config.iter().rev() {
        match before {
            Some(value) => {
                run.say(&format!("git config --{scope} {key} {value}"));
                if !dry {
                    git(w, &["config", &format!("--{scope}"), key, value])?;
                }
            }
            None => {
                run.say(&format!("git config --{scope} --unset {key}"));
                if !dry {
                    // Already unset is fine.
                    let _ = git(w, &["config", &format!("--{scope}"), "--unset", key]);
                }
            }
        }
    }
    for file in record.created.iter().rev() {
        let empty_json = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| is_empty(&v));
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let ours = text.contains(MARKER) || text.trim().is_empty();
        if empty_json || ours {
            run.say(&format!("remove {}", file.display()));
            if !dry {
                let _ = std::fs::remove_file(file);
            }
        } else if file.exists() {
            say!("kept {}: it has entries that are not muster's", file.display());
        }
    }
    if !record.excluded.is_empty() {
        let file = PathBuf::from(git_line(w, &["rev-parse", "--git-path", "info/exclude"])?);
        let file = if file.is_absolute() { file } else { w.root.join(file) };
        run.say(&format!("remove {} from {}", record.excluded.join(", "), file.display()));
        if !dry && let Ok(text) = std::fs::read_to_string(&file) {
            let mut left: Vec<&str> = Vec::new();
            let mut dropped = record.excluded.clone();
            for line in text.lines() {
                match dropped.iter().position(|l| l == line) {
                    Some(i) => {
                        dropped.remove(i);
                    }
                    None => left.push(line),
                }
            }
            let mut text = left.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            std::fs::write(&file, text).map_err(|e| failed(&format!("cannot write {}", file.display()), e))?;
        }
    }
    if !dry {
        let _ = std::fs::remove_file(&path);
        for dir in [hooks_dir(w), w.git_dir.join("muster/calls"), w.git_dir.join("muster")] {
            let _ = std::fs::remove_dir(dir);
        }
        // Only those left empty go.
        for dir in record.created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    say!("{} what `muster init` did in {}", if dry { "Would undo" } else { "Undid" }, w.root.display());
    Ok(Exit::Ok)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Removes what `merge_json` added, and the objects and arrays that leaves empty.
fn remove_json(file: &Path, keys: &[String], element: Option<&Value>) -> Result<(), Failure> {
    let Ok(text) = std::fs::read_to_string(file) else { return Ok(()) };
    let Ok(mut doc) = serde_json::from_str::<Value>(&text) else { return Ok(()) };
    fn remove(at: &mut Value, keys: &[String], element: Option<&Value>) {
        let Some((first, rest)) = keys.split_first() else { return };
        let Some(object) = at.as_object_mut() else { return };
        if rest.is_empty() {
            match (element, object.get_mut(first)) {
                (Some(element), Some(Value::Array(items))) => items.retain(|i| i != element),
                (None, Some(_)) => {
                    object.remove(first);
                }
                _ => {}
            }
        } else if let Some(inner) = object.get_mut(first) {
            remove(inner, rest, element);
        }
        if object.get(first).is_some_and(is_empty) {
            object.remove(first);
        }
    }
    remove(&mut doc, keys, element);
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    std::fs::write(file, text).map_err(|e| failed(&format!("cannot write {}", file.display()), e))
}

/// `muster hook install`: the git part of `init`.
pub(super) fn hook(global: &Global, command: HookCommand) -> Result<Exit, Failure> {
    let HookCommand::Install { agent, strict } = command;
    let here = Here::now().map_err(|e| Failure::new(Exit::Failed, e))?;
    let Some(w) = here.worktree.as_ref() else {
        return Err(Failure::new(Exit::Invalid, format!("{} is not in a git repository", here.cwd.display())));
    };
    let mut run = Run { w, dry: false, record: load_record(w) };
    if agent.is_some() {
        name_agent(&mut run, agent.as_deref())?;
    }
    install_hooks(&mut run, &broker_env(global), strict)?;
    save_record(w, &run.record)?;
    match w.agent() {
        Some(agent) => say!("this worktree commits as {agent}"),
        None => say!("name the agent of this worktree: `muster init` (or MUSTER_AGENT in its environment)"),
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid_and_differ_per_worktree() {
        let a = default_agent(Path::new("/home/u/app"));
        let b = default_agent(Path::new("/srv/u/app"));
        assert!(a.starts_with("app-") && b.starts_with("app-") && a != b, "{a} {b}");
        for root in ["/x/My Repo!", "/x/---", "/", "/x/é"] {
            let name = default_agent(Path::new(root));
            assert!(names::check_agent(&name).is_ok(), "{root}: {name}");
        }
        assert_eq!(default_agent(Path::new("/home/u/app")), a, "stable");
    }
}
