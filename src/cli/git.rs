//! What the reservation commands ask git: where the repository is, what it is called, who
//! is working in this worktree, what is staged, where the hooks go. Each runs `git` itself,
//! so worktrees, `core.hooksPath` and remotes mean what they mean to git.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A git question that got no answer.
#[derive(Debug)]
pub(crate) struct GitError(pub(crate) String);

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `git args` in `dir`; its standard output, or why not.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| GitError(format!("cannot run git: {e}")))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(GitError(format!("git {}: {}", args.join(" "), err.trim())))
    }
}

fn git_line(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    Ok(String::from_utf8_lossy(&git(dir, args)?).trim_end_matches(['\n', '\r']).to_owned())
}

/// A worktree of a git repository.
#[derive(Debug, Clone)]
pub(crate) struct Worktree {
    /// Its root directory (absolute, symlinks resolved).
    pub(crate) root: PathBuf,
    /// Its git directory (`.git`, or `.git/worktrees/NAME` for a linked worktree).
    pub(crate) git_dir: PathBuf,
}

/// What git's configuration says of Muster in a worktree, read with one `git config`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// `muster.repo`: the repository's name, when set.
    pub(crate) repo: Option<String>,
    /// `muster.agent` of this worktree's own configuration, when it was set for this
    /// worktree (see [`Worktree::settings`]).
    pub(crate) agent: Option<String>,
    /// `muster.autoReserve` (default true): edits reserve the files they write.
    pub(crate) auto_reserve: bool,
    /// The remotes' URLs, by name, in the order configured.
    remotes: Vec<(String, String)>,
}

impl Worktree {
    /// The worktree `dir` is in (the nearest existing directory at or above `dir`), or
    /// `None` when it is in none.
    pub(crate) fn find(dir: &Path) -> Option<Worktree> {
        let existing = dir.ancestors().find(|d| d.is_dir())?;
        let out = git_line(existing, &["rev-parse", "--show-toplevel", "--absolute-git-dir"]).ok()?;
        let mut lines = out.lines();
        let (root, git_dir) = (lines.next()?, lines.next()?);
        (!root.is_empty()).then(|| Worktree { root: PathBuf::from(root), git_dir: PathBuf::from(git_dir) })
    }

    /// Muster's settings for this worktree. `muster.agent` counts only from this
    /// worktree's own configuration (`git config --worktree`), and only when
    /// `muster.agentWorktree` names this root: `git worktree add` copies the per-worktree
    /// configuration of the worktree it runs in, and a new worktree must not act as its
    /// parent's agent.
    pub(crate) fn settings(&self) -> Settings {
        let mut settings = Settings { auto_reserve: true, ..Settings::default() };
        let Ok(out) = git(&self.root, &["config", "--show-scope", "-z", "--get-regexp", r"^(muster|remote)\."]) else {
            return settings;
        };
        let (mut agent, mut agent_root) = (None, None);
        // `scope NUL key LF value NUL`, for each entry.
        let mut fields = out.split(|b| *b == 0).map(String::from_utf8_lossy);
        while let (Some(scope), Some(entry)) = (fields.next(), fields.next()) {
            let (key, value) = entry.split_once('\n').unwrap_or((&entry, ""));
            let key = key.to_ascii_lowercase();
            let value = value.to_owned();
            match key.as_str() {
                "muster.repo" if !value.is_empty() => settings.repo = Some(value),
                "muster.agent" if scope == "worktree" && !value.is_empty() => agent = Some(value),
                "muster.agentworktree" if scope == "worktree" => agent_root = Some(value),
                "muster.autoreserve" => settings.auto_reserve = !matches!(value.as_str(), "false" | "no" | "off" | "0"),
                _ => {
                    if let Some(name) = key.strip_prefix("remote.").and_then(|k| k.strip_suffix(".url")) {
                        settings.remotes.push((name.to_owned(), value));
                    }
                }
            }
        }
        settings.agent = agent.filter(|_| agent_root.is_none_or(|root| Path::new(&root) == self.root));
        settings
    }

    /// The repository's name for the broker: `git config muster.repo`, else the normalized
    /// URL of its `origin` remote (or its first remote).
    pub(crate) fn repo_name(&self) -> Result<String, GitError> {
        self.settings().repo_name(&self.root)
    }

    /// The agent working in this worktree, as [`Worktree::settings`] reads it.
    pub(crate) fn agent(&self) -> Option<String> {
        self.settings().agent
    }

    /// Paths the staged change touches, repository-relative: added, modified, deleted,
    /// type-changed, and both sides of a rename.
    pub(crate) fn staged(&self) -> Result<Vec<String>, GitError> {
        let out = git(&self.root, &["diff", "--cached", "--name-status", "-z", "-M", "--no-ext-diff"])?;
        let mut fields = out.split(|b| *b == 0).filter(|f| !f.is_empty());
        let mut paths = Vec::new();
        while let Some(status) = fields.next() {
            // Renames and copies name two paths, the others one.
            let two = matches!(status.first(), Some(b'R' | b'C'));
            let first = fields.next();
            let second = if two { fields.next() } else { None };
            match (status.first(), first, second) {
                // A copy leaves its source as it was.
                (Some(b'C'), _, Some(to)) => paths.push(to),
                (_, Some(from), Some(to)) => paths.extend([from, to]),
                (_, Some(path), None) => paths.push(path),
                _ => return Err(GitError("git diff --cached printed an entry without a path".into())),
            }
        }
        Ok(paths.into_iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect())
    }
}

impl Settings {
    /// The repository's name: `muster.repo`, else the normalized URL of the `origin`
    /// remote (or the first one).
    pub(crate) fn repo_name(&self, root: &Path) -> Result<String, GitError> {
        if let Some(repo) = &self.repo {
            return Ok(repo.clone());
        }
        let url = self.remotes.iter().find(|(name, _)| name == "origin").or(self.remotes.first());
        match url {
            Some((_, url)) => Ok(normalize_remote(url)),
            None => Err(GitError(format!(
                "cannot tell which repository {} is: it has no remote. Name it with --repo NAME \
                 (or MUSTER_REPO, or `git config muster.repo NAME`), the same in every worktree",
                root.display()
            ))),
        }
    }
}

/// One name for a repository, whichever way its remote is written: `host/path`, lowercase,
/// without a scheme, user, port or `.git` (`git@git.example.com:Acme/App.git` and
/// `https://git.example.com/acme/app` are both `git.example.com/acme/app`); a local path
/// stays a path.
pub(crate) fn normalize_remote(url: &str) -> String {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest,
        None => url,
    };
    // scp-like `user@host:path`, or `host/path` after a scheme.
    let (host, path) = match (url.contains("://"), rest.split_once(':'), rest.split_once('/')) {
        (false, Some((host, path)), slash) if slash.is_none_or(|(before, _)| before.len() > host.len()) => (host, path),
        (_, _, Some((host, path))) => (host, path),
        _ => ("", rest),
    };
    let host = host.rsplit('@').next().unwrap_or(host);
    let host = host.split(':').next().unwrap_or(host);
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let name = if host.is_empty() { path.to_owned() } else { format!("{host}/{path}") };
    name.trim_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_written_any_way_have_one_name() {
        for url in [
            "git@git.example.com:Acme/App.git",
            "https://git.example.com/acme/app",
            "https://user:secret@git.example.com/acme/app.git/",
            "ssh://git@git.example.com:2222/acme/app.git",
            "git://git.example.com/acme/app",
        ] {
            assert_eq!(normalize_remote(url), "git.example.com/acme/app", "{url}");
        }
        assert_eq!(normalize_remote("/srv/git/app.git"), "srv/git/app");
        assert_eq!(normalize_remote("file:///srv/git/app.git"), "srv/git/app");
    }
}
