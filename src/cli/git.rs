//! What the reservation commands ask git: where the repository is, what it is called, who
//! is working in this worktree, what is staged, where the hooks go. Each runs `git` itself,
//! so worktrees, `core.hooksPath` and remotes mean what they mean to git.

use std::path::{Component, Path, PathBuf};
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
    /// Its root directory (absolute).
    pub(crate) root: PathBuf,
}

impl Worktree {
    /// The worktree `dir` is in (the nearest existing directory at or above `dir`), or
    /// `None` when it is in none.
    pub(crate) fn find(dir: &Path) -> Option<Worktree> {
        let existing = dir.ancestors().find(|d| d.is_dir())?;
        let root = git_line(existing, &["rev-parse", "--show-toplevel"]).ok()?;
        (!root.is_empty()).then(|| Worktree { root: PathBuf::from(root) })
    }

    /// The repository's name for the broker: `git config muster.repo`, else the normalized
    /// URL of its `origin` remote (or its only remote).
    pub(crate) fn repo_name(&self) -> Result<String, GitError> {
        if let Ok(name) = git_line(&self.root, &["config", "--get", "muster.repo"])
            && !name.is_empty()
        {
            return Ok(name);
        }
        let url = match git_line(&self.root, &["config", "--get", "remote.origin.url"]) {
            Ok(url) if !url.is_empty() => url,
            _ => {
                let remotes = git_line(&self.root, &["remote"]).unwrap_or_default();
                let first = remotes.lines().next().unwrap_or_default().to_owned();
                if first.is_empty() {
                    return Err(GitError(format!(
                        "cannot tell which repository {} is: it has no remote. Name it with --repo NAME \
                         (or MUSTER_REPO, or `git config muster.repo NAME`), the same in every worktree",
                        self.root.display()
                    )));
                }
                git_line(&self.root, &["config", "--get", &format!("remote.{first}.url")])?
            }
        };
        Ok(normalize_remote(&url))
    }

    /// The agent working in this worktree: `git config --worktree muster.agent`, if it was
    /// set for this worktree. (`git worktree add` copies the per-worktree config of the
    /// worktree it runs in, so a new worktree would otherwise commit as its parent's agent:
    /// `muster.agentWorktree` records the root the agent was named for.)
    pub(crate) fn agent(&self) -> Option<String> {
        let get = |key: &str| git_line(&self.root, &["config", "--worktree", "--get", key]).ok();
        let agent = get("muster.agent").filter(|a| !a.is_empty())?;
        match get("muster.agentWorktree") {
            Some(root) if Path::new(&root) != self.root => None,
            _ => Some(agent),
        }
    }

    /// Sets the agent of this worktree (`git config --worktree muster.agent NAME`), turning
    /// on per-worktree configuration first so that other worktrees keep their own.
    pub(crate) fn set_agent(&self, agent: &str) -> Result<(), GitError> {
        git(&self.root, &["config", "extensions.worktreeConfig", "true"])?;
        git(&self.root, &["config", "--worktree", "muster.agent", agent])?;
        let root = self.root.to_string_lossy();
        git(&self.root, &["config", "--worktree", "muster.agentWorktree", &root])?;
        Ok(())
    }

    /// The directory git runs this worktree's hooks from (`core.hooksPath` honoured).
    pub(crate) fn hooks_dir(&self) -> Result<PathBuf, GitError> {
        let dir = PathBuf::from(git_line(&self.root, &["rev-parse", "--git-path", "hooks"])?);
        Ok(if dir.is_absolute() { dir } else { self.root.join(dir) })
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

    /// `path` (absolute, or relative to `cwd`) relative to this worktree's root, or `None`
    /// when it is outside it.
    pub(crate) fn relative(&self, cwd: &Path, path: &Path) -> Option<String> {
        let absolute = lexical(&cwd.join(path));
        let rel = match absolute.strip_prefix(&self.root) {
            Ok(rel) => rel.to_path_buf(),
            // Through a symlink (git prints the root resolved): resolve the deepest
            // ancestor that exists, and try again.
            Err(_) => {
                let existing = absolute.ancestors().find(|d| d.exists())?;
                let rest = absolute.strip_prefix(existing).ok()?;
                existing.canonicalize().ok()?.join(rest).strip_prefix(&self.root).ok()?.to_path_buf()
            }
        };
        let text = rel.to_str()?.replace(std::path::MAIN_SEPARATOR, "/");
        (!text.is_empty()).then_some(text)
    }
}

/// `.` and `..` resolved without touching the disk.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
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

    #[test]
    fn dot_dot_is_resolved_without_the_disk() {
        assert_eq!(lexical(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
    }
}
