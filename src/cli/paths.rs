//! Paths and patterns as a user means them, turned into what the broker reads:
//! repository-relative paths and patterns.
//!
//! - An absolute path inside the worktree is made relative to its root; one outside it is
//!   refused, naming the root. (A pattern that starts with `/` and does not name a place on
//!   disk, `/README.md`, is anchored at the repository's root, as in `.gitignore`.)
//! - A relative path is read from the current directory, as `git add` reads it: from
//!   `src/`, `foo.rs` is `src/foo.rs`, and a glob without a `/` (`*.rs`) is `src/**/*.rs`.
//! - Symlinks are resolved: a file is held where it is written.
//! - A path that may be a directory holds what is inside it: an existing directory is
//!   `dir/`, a path that does not exist yet both itself and `path/`, and a glob whose last
//!   segment has a wildcard (`lib/auth*`) also what is inside what it matches.
//! - Negation (`!pattern`) is refused, as the broker refuses it.

use std::path::{Component, Path, PathBuf};

use muster_client::protocol::glob::exact;

use super::git::Worktree;

/// Where a command runs: its directory and the worktree it is in (none: paths are taken
/// as repository-relative, as written).
pub(crate) struct Here {
    pub(crate) cwd: PathBuf,
    pub(crate) worktree: Option<Worktree>,
}

/// Whether `text` has a wildcard (or an escape) of a glob.
fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '[', '\\'])
}

impl Here {
    /// The current directory and its worktree.
    pub(crate) fn now() -> Result<Here, String> {
        let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
        Ok(Here::at(cwd))
    }

    /// `cwd` and its worktree.
    pub(crate) fn at(cwd: PathBuf) -> Here {
        let worktree = Worktree::find(&cwd);
        Here { cwd, worktree }
    }

    /// The worktree's root, resolved (git prints it so).
    fn root(&self) -> Option<&Path> {
        self.worktree.as_ref().map(|w| w.root.as_path())
    }

    /// The current directory relative to the root (`""` at the root, or outside a worktree).
    fn prefix(&self) -> String {
        let Some(root) = self.root() else { return String::new() };
        let cwd = resolve(&self.cwd);
        cwd.strip_prefix(root).ok().map(slashed).unwrap_or_default()
    }

    fn outside(&self, raw: &str) -> String {
        match self.root() {
            Some(root) => format!("{raw} is outside the repository at {}", root.display()),
            None => format!("{raw} is absolute, and {} is not in a git repository", self.cwd.display()),
        }
    }

    /// A file's path as the broker reads it: repository-relative, symlinks resolved.
    pub(crate) fn path(&self, raw: &str) -> Result<String, String> {
        if raw.is_empty() {
            return Err("a path must not be empty".to_owned());
        }
        let Some(root) = self.root() else {
            if Path::new(raw).is_absolute() {
                return Err(self.outside(raw));
            }
            return Ok(slashed(&lexical(Path::new(raw))));
        };
        let absolute = resolve(&lexical(&self.cwd.join(raw)));
        match absolute.strip_prefix(root) {
            Ok(rel) if rel.as_os_str().is_empty() => Err(format!("{raw} is the repository's root, not a file")),
            Ok(rel) => Ok(slashed(rel)),
            Err(_) => Err(self.outside(raw)),
        }
    }

    /// The patterns to reserve for what was typed (one, or two when a path may be a
    /// directory: see the module's documentation).
    pub(crate) fn patterns(&self, raw: &str) -> Result<Vec<String>, String> {
        let raw = raw.strip_prefix("./").unwrap_or(raw);
        if raw.is_empty() {
            return Err("a pattern must not be empty".to_owned());
        }
        if raw.starts_with('!') {
            return Err(format!("{raw:?}: negation (!) is not supported in reservations; reserve what you need"));
        }
        if is_glob(raw) {
            return self.glob(raw).map(with_contents);
        }
        let dir = raw.ends_with('/');
        let path = if raw.starts_with('/') && !self.names_a_place(raw) {
            // `/README.md`: from the repository's root, as in `.gitignore`.
            let root = Here { cwd: self.root().map(Path::to_path_buf).unwrap_or_default(), worktree: None };
            let root = Here { worktree: self.worktree.clone(), ..root };
            root.path(raw.trim_matches('/'))?
        } else {
            self.path(raw.trim_end_matches('/'))?
        };
        let on_disk = self.root().map(|root| root.join(&path));
        Ok(match on_disk {
            Some(p) if p.is_file() => vec![exact(&path)],
            Some(p) if p.is_dir() => vec![format!("{}/", exact(&path))],
            _ if dir => vec![format!("{}/", exact(&path))],
            _ => with_contents(exact(&path)),
        })
    }

    /// Whether an absolute `raw` names a place on this machine rather than the root of
    /// the repository: inside the worktree, or under a directory that exists at `/`.
    fn names_a_place(&self, raw: &str) -> bool {
        let path = Path::new(raw);
        if self.root().is_some_and(|root| path.starts_with(root) || resolve(path).starts_with(root)) {
            return true;
        }
        let first = path.components().nth(1);
        let in_repo = |c: &Component| self.root().is_some_and(|root| root.join(c).exists());
        first.is_some_and(|c| Path::new("/").join(c).exists() && !in_repo(&c))
    }

    /// A glob, read from the current directory.
    fn glob(&self, raw: &str) -> Result<String, String> {
        if raw.starts_with('/') {
            // An absolute path up to the first wildcard inside the worktree: the rest is
            // relative to its root.
            let cut = raw.find(['*', '?', '[', '\\']).unwrap_or(raw.len());
            let dir_end = raw[..cut].rfind('/').unwrap_or(0);
            if !self.names_a_place(&raw[..dir_end.max(1)]) {
                return Ok(raw.to_owned());
            }
            let dir = self.path(&raw[..dir_end])?;
            return Ok(format!("/{dir}{}", &raw[dir_end..]));
        }
        let prefix = self.prefix();
        let body = raw.trim_end_matches('/');
        if prefix.is_empty() {
            return Ok(raw.to_owned());
        }
        if !body.contains('/') {
            // `*.rs` from `src/` is what git would take: any depth below it.
            return Ok(format!("/{prefix}/**/{raw}"));
        }
        let mut parts: Vec<&str> = prefix.split('/').collect();
        for segment in raw.split('/') {
            match segment {
                "." => {}
                ".." if !parts.is_empty() => {
                    parts.pop();
                }
                ".." => return Err(self.outside(raw)),
                s => parts.push(s),
            }
        }
        Ok(format!("/{}", parts.join("/")))
    }
}

/// A pattern that may name a directory, with what is inside it: `x` and `x/`. One that
/// already holds only contents (`x/`, `x/**`) stays as it is.
fn with_contents(pattern: String) -> Vec<String> {
    if pattern.ends_with('/') || pattern.ends_with("**") {
        return vec![pattern];
    }
    let inside = format!("{pattern}/");
    vec![pattern, inside]
}

/// `path` with `/` between its parts.
fn slashed(path: &Path) -> String {
    let parts: Vec<String> = path.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    parts.join("/")
}

/// `.` and `..` resolved without touching the disk.
pub(crate) fn lexical(path: &Path) -> PathBuf {
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

/// `path` with its symlinks resolved: the deepest part that exists is resolved on disk,
/// the rest (what does not exist yet) appended.
pub(crate) fn resolve(path: &Path) -> PathBuf {
    for existing in path.ancestors() {
        if let Ok(real) = existing.canonicalize() {
            let rest = path.strip_prefix(existing).unwrap_or(Path::new(""));
            return if rest.as_os_str().is_empty() { real } else { real.join(rest) };
        }
    }
    path.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, Here) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("src/auth")).unwrap();
        std::fs::write(root.join("src/a.rs"), "").unwrap();
        std::fs::write(root.join("README.md"), "").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("src", root.join("alias")).unwrap();
            std::os::unix::fs::symlink("src/a.rs", root.join("lnk.rs")).unwrap();
        }
        let here = Here { cwd: root.clone(), worktree: Some(Worktree { git_dir: root.join(".git"), root }) };
        (dir, here)
    }

    fn from(here: &Here, sub: &str) -> Here {
        let root = here.root().unwrap().to_path_buf();
        Here { cwd: root.join(sub), worktree: Some(Worktree { git_dir: root.join(".git"), root }) }
    }

    #[test]
    fn paths_are_read_as_a_user_means_them() {
        let (_dir, here) = repo();
        let root = here.root().unwrap().display().to_string();
        let src = from(&here, "src");
        assert_eq!(here.path("src/a.rs").unwrap(), "src/a.rs");
        assert_eq!(here.path(&format!("{root}/src/a.rs")).unwrap(), "src/a.rs");
        assert_eq!(src.path("a.rs").unwrap(), "src/a.rs");
        assert_eq!(src.path("../README.md").unwrap(), "README.md");
        assert_eq!(src.path("new/mod.rs").unwrap(), "src/new/mod.rs");
        assert_eq!(here.path("alias/a.rs").unwrap(), "src/a.rs");
        assert_eq!(here.path("lnk.rs").unwrap(), "src/a.rs");
        assert!(here.path("/etc/passwd").unwrap_err().contains(&root));
        assert!(here.path("../x").unwrap_err().contains("outside the repository"));
    }

    #[test]
    fn patterns_are_read_as_a_user_means_them() {
        let (_dir, here) = repo();
        let root = here.root().unwrap().display().to_string();
        let src = from(&here, "src");
        let p = |h: &Here, raw: &str| h.patterns(raw).unwrap();
        assert_eq!(p(&here, "src/a.rs"), ["/src/a.rs"]);
        assert_eq!(p(&here, "README.md"), ["/README.md"]);
        assert_eq!(p(&here, &format!("{root}/src/a.rs")), ["/src/a.rs"]);
        assert_eq!(p(&src, "a.rs"), ["/src/a.rs"]);
        assert_eq!(p(&here, "src/auth"), ["/src/auth/"]);
        assert_eq!(p(&here, "src/newmod"), ["/src/newmod", "/src/newmod/"]);
        assert_eq!(p(&here, "src/newmod/"), ["/src/newmod/"]);
        assert_eq!(p(&here, "lib/auth*"), ["lib/auth*", "lib/auth*/"]);
        assert_eq!(p(&here, "*.lock"), ["*.lock", "*.lock/"]);
        assert_eq!(p(&here, "src/**"), ["src/**"]);
        assert_eq!(p(&src, "*.rs"), ["/src/**/*.rs", "/src/**/*.rs/"]);
        assert_eq!(p(&src, "auth/*.rs"), ["/src/auth/*.rs", "/src/auth/*.rs/"]);
        assert_eq!(p(&here, "lnk.rs"), ["/src/a.rs"]);
        assert_eq!(p(&here, "/Cargo.lock"), ["/Cargo.lock", "/Cargo.lock/"]);
        assert_eq!(p(&here, "/src/a.rs"), ["/src/a.rs"]);
        assert_eq!(p(&here, &format!("{root}/src/*.rs")), ["/src/*.rs", "/src/*.rs/"]);
        assert!(here.patterns("!src/a.rs").unwrap_err().contains("negation"));
        assert!(here.patterns("/etc/passwd").unwrap_err().contains(&root));
    }

    #[test]
    fn dot_dot_is_resolved_without_the_disk() {
        assert_eq!(lexical(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
    }

    #[test]
    fn without_a_worktree_paths_are_repository_relative() {
        let here = Here { cwd: PathBuf::from("/nowhere"), worktree: None };
        assert_eq!(here.path("src/a.rs").unwrap(), "src/a.rs");
        assert_eq!(here.patterns("src/a.rs").unwrap(), ["/src/a.rs", "/src/a.rs/"]);
        assert!(here.path("/abs/a.rs").is_err());
    }
}
