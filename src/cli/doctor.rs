//! `muster doctor`: checks that what `muster init` set up in this worktree would work —
//! the broker (reachable, its version), the token, the agent's name (set, and not shared
//! with another worktree), the git hooks (installed, executable, chaining the earlier
//! ones) and Claude Code's hooks and MCP server — and prints the fix for each problem.
//! Exit 0 only when everything would work.
//!
//! It looks with the environment Claude Code gives its hooks: the `env` of
//! `.claude/settings.local.json` over this shell's.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use muster_client::protocol::FilesQuery;
use serde_json::Value;

use super::context::{Exit, Failure, Global, connect};
use super::files::RepoArg;
use super::git::Worktree;
use super::paths::Here;

/// The checks' findings.
#[derive(Default)]
struct Report {
    problems: usize,
}

impl Report {
    fn ok(&self, what: &str) {
        say!("ok    {what}");
    }

    fn fail(&mut self, what: &str, fix: &str) {
        self.problems += 1;
        say!("FAIL  {what}");
        say!("      fix: {fix}");
    }
}

/// The `env` of a Claude Code settings file.
fn settings_env(file: &Path) -> serde_json::Map<String, Value> {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v.get("env").and_then(Value::as_object).cloned())
        .unwrap_or_default()
}

/// `GET /health` of the broker at `url` (`http://host:port`): its version.
fn health(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url} is not an http:// URL"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    write!(stream, "GET /health HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.take(1 << 20).read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let health: Value =
        serde_json::from_str(body).map_err(|_| format!("{url} answered, but not as a Muster broker"))?;
    Ok(health["version"].as_str().unwrap_or("unknown").to_owned())
}

/// The agent names of the other worktrees of this repository, with their roots.
fn other_agents(w: &Worktree) -> Vec<(String, PathBuf)> {
    let Ok(out) =
        std::process::Command::new("git").current_dir(&w.root).args(["worktree", "list", "--porcelain"]).output()
    else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let roots = text.lines().filter_map(|l| l.strip_prefix("worktree ")).map(PathBuf::from);
    let mut found = Vec::new();
    for root in roots.filter(|r| *r != w.root) {
        let env = settings_env(&root.join(".claude/settings.local.json"));
        let agent = env.get("MUSTER_AGENT").and_then(Value::as_str).map(str::to_owned);
        let agent = agent.or_else(|| Worktree::find(&root).and_then(|o| o.agent()));
        if let Some(agent) = agent {
            found.push((agent, root));
        }
    }
    found
}

/// `muster doctor`.
pub(super) async fn doctor(global: &Global, repo: RepoArg) -> Result<Exit, Failure> {
    let here = Here::now().map_err(|e| Failure::new(Exit::Failed, e))?;
    let Some(w) = here.worktree.as_ref() else {
        return Err(Failure::new(Exit::Invalid, format!("{} is not in a git repository", here.cwd.display())));
    };
    let mut report = Report::default();
    let settings_file = w.root.join(".claude/settings.local.json");
    let env = settings_env(&settings_file);
    let from_env = |key: &str| env.get(key).and_then(Value::as_str).map(str::to_owned);
    let mut global = global.clone();
    if let Some(url) = from_env("MUSTER_URL") {
        global.url = url;
    }
    if let Some(token) = from_env("MUSTER_TOKEN") {
        global.token = Some(muster_client::protocol::ws::Secret(token));
    } else if let Some(file) = from_env("MUSTER_TOKEN_FILE") {
        global.token_file = Some(PathBuf::from(file));
    }
    if let Err(e) = global.read_token_file() {
        report.fail(&format!("token: {e}"), "point MUSTER_TOKEN_FILE at the file `muster token add` printed into");
    }
    let agent = from_env("MUSTER_AGENT").or_else(|| global.agent.clone()).or_else(|| w.agent());

    // The broker.
    let mut reachable = false;
    match health(&global.url) {
        Ok(version) => {
            reachable = true;
            let mine = env!("CARGO_PKG_VERSION");
            if version == mine {
                report.ok(&format!("broker at {} answers (version {version})", global.url));
            } else {
                report.fail(
                    &format!("broker at {} is version {version}, this muster is {mine}", global.url),
                    "run the same version of muster for the broker and the agents",
                );
            }
        }
        Err(e) => report.fail(
            &format!("broker at {} cannot be reached: {e}", global.url),
            "start it (`muster serve`), or set MUSTER_URL (and run `muster init` again to record it)",
        ),
    }

    // The repository and the token.
    let repo = match repo.repo.or_else(|| from_env("MUSTER_REPO")).map_or_else(|| w.repo_name(), Ok) {
        Ok(repo) => {
            report.ok(&format!("repository: {repo}"));
            Some(repo)
        }
        Err(e) => {
            report.fail(&e.0, "git config muster.repo NAME (the same name in every worktree)");
            None
        }
    };
    if reachable {
        let asked = tokio::time::timeout(Duration::from_secs(3), async {
            let (client, _) = connect(&global, Vec::new(), None).await?;
            client.files(FilesQuery { repo: repo.clone(), ..FilesQuery::default() }).await.map_err(Failure::from)
        })
        .await;
        match asked {
            Ok(Ok(_)) => report.ok(if global.token.is_some() { "token accepted" } else { "no token needed" }),
            Ok(Err(f)) if f.exit == Exit::NotAllowed => report.fail(
                &format!("token: the broker refused: {}", f.message),
                "issue one (`muster token add NAME`) and give it to this worktree: MUSTER_TOKEN_FILE in the env \
                 of .claude/settings.local.json and of your shell",
            ),
            Ok(Err(f)) => report.fail(&format!("the broker refused a read: {}", f.message), "see the message"),
            Err(_) => report.fail("the broker did not answer a read within 3 s", "check that it is not overloaded"),
        }
    }

    // The agent's name.
    match &agent {
        None => report.fail("this worktree has no agent name", "muster init (or muster init --agent NAME)"),
        Some(agent) => {
            let shared: Vec<PathBuf> =
                other_agents(w).into_iter().filter(|(a, _)| a == agent).map(|(_, root)| root).collect();
            if shared.is_empty() {
                report.ok(&format!("agent: {agent}"));
            } else {
                let roots: Vec<String> = shared.iter().map(|r| r.display().to_string()).collect();
                report.fail(
                    &format!("agent {agent} is also the agent of {}", roots.join(", ")),
                    "give each worktree its own: muster init --agent OTHER-NAME in one of them",
                );
            }
        }
    }
    let tracked_env = settings_env(&w.root.join(".claude/settings.json"));
    if tracked_env.contains_key("MUSTER_AGENT") {
        report.fail(
            ".claude/settings.json (shared by every checkout) sets MUSTER_AGENT: every worktree gets that name",
            "remove it from .claude/settings.json; `muster init` names each worktree in .claude/settings.local.json",
        );
    }

    check_hooks(w, &mut report);
    check_claude(w, &settings_file, &mut report);

    say!("");
    if report.problems == 0 {
        say!("everything would work");
        Ok(Exit::Ok)
    } else {
        say!("{} problem(s)", report.problems);
        Ok(Exit::Failed)
    }
}

/// The git hooks: installed, executable, and chaining the hooks of the directory before.
fn check_hooks(w: &Worktree, report: &mut Report) {
    let ours = w.git_dir.join("muster/hooks");
    let used = std::process::Command::new("git")
        .current_dir(&w.root)
        .args(["rev-parse", "--git-path", "hooks"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let used = if Path::new(&used).is_absolute() { PathBuf::from(&used) } else { w.root.join(&used) };
    if used != ours {
        report.fail(
            &format!("git runs the hooks of {}, not muster's", used.display()),
            "muster init (it chains the hooks there)",
        );
        return;
    }
    let mut fine = true;
    for name in ["pre-commit", "pre-merge-commit", "prepare-commit-msg"] {
        let hook = ours.join(name);
        let text = std::fs::read_to_string(&hook).unwrap_or_default();
        if !text.contains(super::init::MARKER) || !executable(&hook) {
            fine = false;
            report.fail(&format!("git hook {} is missing or not executable", hook.display()), "muster init");
        }
    }
    // The directory chained: each of its hooks must have a stub here.
    let text = std::fs::read_to_string(ours.join("pre-commit")).unwrap_or_default();
    let previous = text.lines().find_map(|l| l.strip_prefix("previous=")).map(|p| p.trim_matches('\'').to_owned());
    if let Some(previous) = &previous {
        let dir = if Path::new(previous).is_absolute() { PathBuf::from(previous) } else { w.root.join(previous) };
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.contains('.') && executable(&e.path()) && !ours.join(&name).exists() {
                fine = false;
                report.fail(
                    &format!("git hook {name} of {} is not chained: git would not run it", dir.display()),
                    "muster init (run again after adding hooks)",
                );
            }
        }
    }
    if fine {
        report.ok(&format!("git hooks in {} (chaining {})", ours.display(), previous.unwrap_or_default()));
    }
}

fn executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Claude Code's hooks and MCP server.
fn check_claude(w: &Worktree, settings_file: &Path, report: &mut Report) {
    let settings: Value =
        std::fs::read_to_string(settings_file).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    for event in ["PreToolUse", "PostToolUse"] {
        let commands: Vec<String> = settings["hooks"][event]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["hooks"].as_array().cloned().unwrap_or_default())
            .filter_map(|h| h["command"].as_str().map(str::to_owned))
            .filter(|c| c.contains(" files guard"))
            .collect();
        match commands.first() {
            None => report.fail(
                &format!("Claude Code has no {event} hook of muster in {}", settings_file.display()),
                "muster init",
            ),
            Some(command) => {
                let binary = command.split(" files guard").next().unwrap_or_default().trim_matches('\'');
                if Path::new(binary).is_absolute() && !executable(Path::new(binary)) {
                    report.fail(
                        &format!("Claude Code's {event} hook runs {binary}, which is not there"),
                        "muster init (with the muster you run now)",
                    );
                } else {
                    report.ok(&format!("Claude Code {event} hook"));
                }
            }
        }
    }
    let mcp: Value = std::fs::read_to_string(w.root.join(".mcp.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    if mcp["mcpServers"]["muster"].is_object() {
        report.ok("Claude Code MCP server (.mcp.json)");
    } else {
        report.fail(
            "no muster MCP server in .mcp.json",
            "muster init (or, where .mcp.json is tracked: claude mcp add --scope local muster -- muster mcp)",
        );
    }
}
