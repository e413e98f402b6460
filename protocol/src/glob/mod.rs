//! Path patterns of file reservations: gitignore-style globs over repository-relative
//! paths, read exactly.
//!
//! A [`Glob`] matches paths of files. The syntax:
//!
//! - `/` separates directories. A pattern with a `/` at its start or in its middle is
//!   anchored at the repository root (`docs/api.md`, `/Cargo.lock`); one without matches
//!   at any depth (`*.lock` is `**/*.lock`). A trailing `/` means everything inside
//!   (`src/auth/` is `src/auth/**`).
//! - `*` is any run of characters but `/`, `?` one character but `/`, `[abc]`, `[a-z]`,
//!   `[!a-z]` one (ASCII) character of a class; `\` escapes the next character.
//! - `**` as a whole segment is any number of directories: `**/x` (`x` at any depth),
//!   `a/**/b` (`a/b`, `a/x/b`, ...), `a/**` (everything inside `a`). Elsewhere `**` is `*`.
//! - Not supported, and refused with a reason: `!negation`, `.` and `..` segments, empty
//!   segments (`a//b`), control characters, non-ASCII characters inside `[...]`.
//!
//! Unlike `.gitignore`, a pattern that matches a directory's name does not match what is
//! inside it: a reservation names the files it holds, and with that rule `*.lock` and
//! `README.md` would overlap (on `a.lock/README.md`). `src/auth/` or `src/auth/**` holds a
//! directory; the CLI writes the `/` when the path it is given is a directory.
//!
//! Whether two globs match a common path is decided exactly: each compiles, when it is read,
//! to a deterministic automaton over the bytes of a valid path (non-empty segments, none
//! `.` or `..`), and [`Glob::overlap`] searches the product of two of them for the
//! shortest path both match, which it returns as the witness. No path is enumerated and no
//! overlap is guessed.
//!
//! What that costs is bounded by construction: a pattern whose automaton would have more
//! than [`MAX_STATES`] states is refused when it is read, so a match costs one step per
//! byte of the path and an overlap decision at most the product of two automata's states;
//! [`Glob::overlap_within`] and [`Glob::matches_within`] also stop at a [`Budget`], which
//! the broker sets per request. Patterns are compiled once: the last ones read are kept
//! (up to [`CACHE_BYTES`] of tables), so that the same pattern read again by a check, a
//! reservation and its replay costs a lookup.

mod dfa;
mod nfa;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

pub use dfa::{Budget, OverBudget};
use dfa::{Dfa, NotMade, product};
use nfa::{ByteSet, Nfa};

/// Longest pattern, in bytes.
pub const MAX_PATTERN: usize = 256;
/// Most wildcards (`*`, `?`, `[...]`, `**`) in one pattern.
pub const MAX_WILDCARDS: usize = 16;
/// Most states of a pattern's automaton: bounds the work of a match (a step per byte) and of
/// an overlap decision (at most the product of two patterns' states). An ordinary path of
/// 256 bytes takes about 260; patterns whose wildcards must be tracked in many ways at once
/// (`*a???????b*`: an `a` seven characters before a `b`, anywhere) grow quickly and are refused.
pub const MAX_STATES: usize = 1_000;
/// Most moves of a pattern's automaton (states × classes of bytes it tells apart): bounds
/// the memory a reservation holds, about 2 bytes a move (at most 128 KiB). A path of 256
/// bytes of 90 different characters takes about 23,000.
pub const MAX_MOVES: usize = 65_536;
/// Longest path, in characters.
pub const MAX_PATH: usize = 4096;
/// Bytes of compiled patterns kept for reuse; the cache is emptied when it would hold
/// more. The largest pattern's tables take about 0.5 MiB, a path of a few dozen bytes a
/// few KiB.
pub const CACHE_BYTES: usize = 32 << 20;

/// A pattern that cannot be read, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError(pub String);

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GlobError {}

/// A compiled pattern (cheap to clone: the automaton is shared).
#[derive(Clone)]
pub struct Glob(Arc<Compiled>);

struct Compiled {
    source: String,
    /// The bytes every matched path starts with (the literal text before the first
    /// wildcard of an anchored pattern): a quick test before the automaton.
    prefix: Vec<u8>,
    /// The bytes every matched path ends with (the literal text after the last wildcard).
    suffix: Vec<u8>,
    /// The pattern has no wildcard and is anchored: it matches one path, `prefix`.
    literal: bool,
    /// How many segments a matched path has: at least the first, at most the second
    /// (`None`: no limit, the pattern has a `**`).
    segments: (usize, Option<usize>),
    dfa: Dfa,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Glob").field(&self.0.source).finish()
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.0.source == other.0.source
    }
}

impl Eq for Glob {}

/// The patterns compiled last, by their text, and the bytes their tables take.
static COMPILED: LazyLock<Mutex<(HashMap<String, Glob>, usize)>> = LazyLock::new(Mutex::default);

impl Glob {
    /// Reads a pattern (from the cache of compiled patterns when it was read lately).
    pub fn parse(pattern: &str) -> Result<Glob, GlobError> {
        // With no limit, only a pattern that cannot be read fails.
        Glob::parse_within(pattern, &mut Budget::unlimited())
            .unwrap_or_else(|OverBudget| Err(GlobError(format!("{pattern:?} is too costly to compile"))))
    }

    /// [`Glob::parse`], compiling within `budget` (a step per class and per move of each
    /// state made): `Err` when compiling would take more, `Ok` with what [`Glob::parse`]
    /// would answer otherwise. A pattern from the cache costs nothing.
    pub fn parse_within(pattern: &str, budget: &mut Budget) -> Result<Result<Glob, GlobError>, OverBudget> {
        let cache = || COMPILED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(glob) = cache().0.get(pattern) {
            return Ok(Ok(glob.clone()));
        }
        let glob = match Glob::compile(pattern, budget)? {
            Ok(glob) => glob,
            Err(e) => return Ok(Err(e)),
        };
        let size = glob.0.dfa.size() + pattern.len();
        let mut cache = cache();
        if cache.1 + size > CACHE_BYTES {
            *cache = (HashMap::new(), 0);
        }
        cache.0.insert(pattern.to_owned(), glob.clone());
        cache.1 += size;
        Ok(Ok(glob))
    }

    fn compile(pattern: &str, budget: &mut Budget) -> Result<Result<Glob, GlobError>, OverBudget> {
        let segments = match parse(pattern) {
            Ok(segments) => segments,
            Err(e) => return Ok(Err(e)),
        };
        let mut prefix = Vec::new();
        let anchored = !matches!(segments.first(), Some(Segment::Any));
        let mut literal = anchored;
        if anchored {
            'segments: for (i, segment) in segments.iter().enumerate() {
                let Segment::Items(items) = segment else {
                    literal = false;
                    break;
                };
                for item in items {
                    let Item::Byte(b) = item else {
                        literal = false;
                        break 'segments;
                    };
                    prefix.push(*b);
                }
                if i + 1 < segments.len() {
                    prefix.push(b'/');
                }
            }
        }
        let suffix = match segments.last() {
            Some(Segment::Items(items)) => {
                let literal = items.iter().rev().map_while(|i| if let Item::Byte(b) = i { Some(*b) } else { None });
                let mut suffix: Vec<u8> = literal.collect();
                suffix.reverse();
                suffix
            }
            _ => Vec::new(),
        };
        let named = segments.iter().filter(|s| matches!(s, Segment::Items(_))).count();
        let bounds = match segments.last() {
            Some(Segment::Any) => (named + 1, None),
            _ if segments.contains(&Segment::Any) => (named, None),
            _ => (named, Some(named)),
        };
        let dfa = match Dfa::determinize(&Nfa::compile(&segments), MAX_STATES, MAX_MOVES, budget) {
            Ok(dfa) => dfa,
            Err(NotMade::OverBudget) => return Err(OverBudget),
            Err(NotMade::TooLarge) => {
                return Ok(Err(GlobError(format!(
                    "{pattern:?} is too complex to check quickly: its automaton would have more than {MAX_STATES} \
                     states or {MAX_MOVES} moves (use fewer wildcards, or name a directory: src/auth/)"
                ))));
            }
        };
        let source = pattern.to_owned();
        Ok(Ok(Glob(Arc::new(Compiled { source, prefix, suffix, literal, segments: bounds, dfa }))))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0.source
    }

    /// How many states its automaton has.
    pub fn states(&self) -> usize {
        self.0.dfa.states()
    }

    /// Whether the pattern matches `path` (a repository-relative path, see [`check_path`]).
    pub fn matches(&self, path: &str) -> bool {
        self.matches_within(path, &mut Budget::unlimited()).unwrap_or(false)
    }

    /// [`Glob::matches`], counting its steps (one per byte of the path read, and
    /// [`Budget::PER_PATTERN`] for looking at the pattern at all) against `budget`.
    pub fn matches_within(&self, path: &str, budget: &mut Budget) -> Result<bool, OverBudget> {
        let (g, bytes) = (&self.0, path.as_bytes());
        budget.spend(Budget::PER_PATTERN)?;
        if !(bytes.starts_with(&g.prefix) && bytes.ends_with(&g.suffix)) {
            return Ok(false);
        }
        g.dfa.run(bytes, budget)
    }

    /// The deepest directory every matched path is in (`src/auth/` for `src/auth/*.rs`),
    /// when the pattern fixes one: see [`Index`].
    pub fn fixed_dir(&self) -> Option<&[u8]> {
        let prefix = &self.0.prefix;
        let slash = prefix.iter().rposition(|b| *b == b'/')?;
        Some(&prefix[..=slash])
    }

    /// The bytes every matched path starts with.
    pub fn prefix(&self) -> &[u8] {
        &self.0.prefix
    }

    /// A path both patterns match (the shortest), or `None` when they have none in common.
    pub fn overlap(&self, other: &Glob) -> Option<String> {
        self.overlap_within(other, &mut Budget::unlimited()).unwrap_or(None)
    }

    /// [`Glob::overlap`], counting its steps against `budget` ([`Budget::PER_PATTERN`] for
    /// the pair, then a step per move of the product looked at).
    pub fn overlap_within(&self, other: &Glob, budget: &mut Budget) -> Result<Option<String>, OverBudget> {
        let (a, b) = (&self.0, &other.0);
        budget.spend(Budget::PER_PATTERN)?;
        // Quick answers first: a common path starts with both prefixes and ends with both
        // suffixes, so one of each pair must extend the other; and it has a number of
        // segments both allow.
        let n = a.prefix.len().min(b.prefix.len());
        let m = a.suffix.len().min(b.suffix.len());
        let fewer = |x: &Compiled, y: &Compiled| x.segments.1.is_some_and(|max| max < y.segments.0);
        if a.prefix[..n] != b.prefix[..n]
            || a.suffix[a.suffix.len() - m..] != b.suffix[b.suffix.len() - m..]
            || fewer(a, b)
            || fewer(b, a)
        {
            return Ok(None);
        }
        // A pattern without wildcards is one path: does the other match it?
        for (one, other) in [(self, other), (other, self)] {
            if one.0.literal {
                // The prefix of a pattern is whole characters.
                let path = String::from_utf8_lossy(&one.0.prefix);
                return Ok(other.matches_within(&path, budget)?.then(|| path.into_owned()));
            }
        }
        let bytes = product(&a.dfa, &b.dfa, budget)?;
        Ok(bytes.map(|b| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())))
    }
}

/// Many patterns, each with a value, to look up which match a path without trying them all:
/// a pattern that fixes a directory (`src/auth/**` fixes `src/auth/`, `docs/api.md` fixes
/// `docs/`) is tried only on paths below it; one that fixes how paths end (`*.lock`,
/// `*/g7.gen`) only on paths ending so (keyed by the last [`Index::TAIL`] bytes); the rest
/// (`src*/**`) on every path. A path costs one lookup per directory it is in and up to four
/// for its ending.
#[derive(Debug, Clone)]
pub struct Index<T> {
    by_dir: HashMap<Vec<u8>, Vec<(Glob, T)>>,
    by_tail: HashMap<Vec<u8>, Vec<(Glob, T)>>,
    anywhere: Vec<(Glob, T)>,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Index { by_dir: HashMap::new(), by_tail: HashMap::new(), anywhere: Vec::new() }
    }
}

impl<T> Index<T> {
    /// How many of the last bytes of a pattern's literal ending key it.
    pub const TAIL: usize = 4;

    /// Adds a pattern.
    pub fn insert(&mut self, glob: Glob, value: T) {
        if let Some(dir) = glob.fixed_dir() {
            self.by_dir.entry(dir.to_vec()).or_default().push((glob, value));
        } else if !glob.0.suffix.is_empty() {
            let suffix = &glob.0.suffix;
            let tail = suffix[suffix.len().saturating_sub(Self::TAIL)..].to_vec();
            self.by_tail.entry(tail).or_default().push((glob, value));
        } else {
            self.anywhere.push((glob, value));
        }
    }

    /// The values of the patterns that match `path`: those of the directories it is in
    /// (outermost first), those of its ending (shortest first), then the rest, each group
    /// in the order added.
    pub fn matching<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a T> + 'a {
        let bytes = path.as_bytes();
        let dirs = bytes.iter().enumerate().filter(|(_, b)| **b == b'/').map(move |(i, _)| &bytes[..=i]);
        let in_dirs = dirs.filter_map(|d| self.by_dir.get(d)).flatten();
        let tails = (1..=Self::TAIL.min(bytes.len())).map(move |n| &bytes[bytes.len() - n..]);
        let by_tail = tails.filter_map(|t| self.by_tail.get(t)).flatten();
        in_dirs.chain(by_tail).chain(&self.anywhere).filter(move |(g, _)| g.matches(path)).map(|(_, v)| v)
    }
}

/// The pattern that matches `path` (a repository-relative path) and nothing else: anchored
/// at the root, its wildcard characters escaped.
pub fn exact(path: &str) -> String {
    let mut pattern = String::with_capacity(path.len() + 1);
    pattern.push('/');
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// Checks a repository-relative path: not empty, no leading or trailing `/`, no empty,
/// `.` or `..` segment, no NUL, at most [`MAX_PATH`] characters.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if path.chars().count() > MAX_PATH {
        return Err(format!("is longer than {MAX_PATH} characters"));
    }
    if path.contains('\0') {
        return Err("must not contain NUL".to_owned());
    }
    if path.starts_with('/') {
        return Err(format!("{path:?} is absolute: give it relative to the repository's root"));
    }
    if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(format!("{path:?} is not a normalized path (no empty, '.' or '..' segments, no trailing '/')"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reading a pattern.

/// One segment of a pattern (between `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`: any number of directories (at the end: one or more path segments).
    Any,
    /// Anything else: a sequence of items matched within one segment.
    Items(Vec<Item>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// One literal byte.
    Byte(u8),
    /// `*`.
    Star,
    /// `?`: one character.
    Char,
    /// `[...]`: one ASCII character of the set, or with `negated`, one character (of any
    /// script) not in it.
    Class { set: ByteSet, negated: bool },
}

fn parse(pattern: &str) -> Result<Vec<Segment>, GlobError> {
    let err = |m: String| Err(GlobError(m));
    if pattern.is_empty() {
        return err("must not be empty".to_owned());
    }
    if pattern.len() > MAX_PATTERN {
        return err(format!("is longer than {MAX_PATTERN} bytes"));
    }
    if pattern.chars().any(char::is_control) {
        return err("must not contain control characters".to_owned());
    }
    if pattern.starts_with('!') {
        return err(format!("{pattern:?}: negation (!) is not supported in reservations; reserve what you need"));
    }
    let (rooted, rest) = match pattern.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let (contents, rest) = match rest.strip_suffix('/') {
        Some(rest) if !rest.ends_with('\\') => (true, rest),
        _ => (false, rest),
    };
    if rest.is_empty() {
        return err(format!("{pattern:?} names the whole repository: say ** if you mean it"));
    }
    let mut segments = Vec::new();
    let mut wildcards = 0;
    for raw in split_segments(rest) {
        if raw.is_empty() || raw == "." || raw == ".." {
            return err(format!(
                "{pattern:?} has an empty, '.' or '..' segment: write a path from the repository's root"
            ));
        }
        if raw == "**" {
            wildcards += 1;
            segments.push(Segment::Any);
            continue;
        }
        let items = segment_items(raw).map_err(|m| GlobError(format!("{pattern:?}: {m}")))?;
        // `\.\.` is `..` once unescaped.
        if items.len() <= 2 && items.iter().all(|i| *i == Item::Byte(b'.')) {
            return err(format!(
                "{pattern:?} has a '.' or '..' segment (escaped or not): write a path from the repository's root"
            ));
        }
        wildcards += items.iter().filter(|i| !matches!(i, Item::Byte(_))).count();
        segments.push(Segment::Items(items));
    }
    if wildcards > MAX_WILDCARDS {
        return err(format!("{pattern:?} has more than {MAX_WILDCARDS} wildcards"));
    }
    let anchored = rooted || segments.len() > 1;
    if !anchored {
        segments.insert(0, Segment::Any);
    }
    if contents {
        segments.push(Segment::Any);
    }
    // `**/**` is `**`.
    segments.dedup_by(|a, b| *a == Segment::Any && *b == Segment::Any);
    Ok(segments)
}

/// Splits at `/` that are not escaped.
fn split_segments(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'/' => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn segment_items(segment: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut chars = segment.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('/') | None => return Err("a '\\' must escape a character other than '/'".to_owned()),
                Some(c) => push_char(&mut items, c),
            },
            // Consecutive stars are one star (a segment of only `**` was read before).
            '*' if items.last() == Some(&Item::Star) => {}
            '*' => items.push(Item::Star),
            '?' => items.push(Item::Char),
            '[' => items.push(class(&mut chars)?),
            c => push_char(&mut items, c),
        }
    }
    Ok(items)
}

fn push_char(items: &mut Vec<Item>, c: char) {
    let mut buf = [0u8; 4];
    items.extend(c.encode_utf8(&mut buf).bytes().map(Item::Byte));
}

/// `[...]` after its `[`.
fn class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Item, String> {
    let negated = matches!(chars.peek(), Some('!' | '^'));
    if negated {
        chars.next();
    }
    let mut set = ByteSet::EMPTY;
    let mut first = true;
    loop {
        let c = match chars.next() {
            None => return Err("a '[' is not closed by ']' (escape it as \\[ to mean the character)".to_owned()),
            Some(']') if !first => break,
            Some('\\') => chars.next().ok_or("a class ends with '\\'")?,
            Some(c) => c,
        };
        first = false;
        let from = ascii_member(c)?;
        let to = if chars.peek() == Some(&'-') {
            let mut ahead = chars.clone();
            ahead.next();
            match ahead.next() {
                Some(']') | None => from,
                Some(end) => {
                    chars.next();
                    chars.next();
                    let end = ascii_member(end)?;
                    if end < from {
                        return Err(format!("the range {}-{} is backwards", from as char, end as char));
                    }
                    end
                }
            }
        } else {
            from
        };
        for b in from..=to {
            set.insert(b);
        }
    }
    set.remove(b'/');
    Ok(Item::Class { set, negated })
}

fn ascii_member(c: char) -> Result<u8, String> {
    match c {
        '/' => Err("'/' cannot be in a character class".to_owned()),
        c if c.is_ascii() => Ok(c as u8),
        c => Err(format!("character classes take ASCII characters only ({c:?} is not); use ? or * instead")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Glob {
        Glob::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn patterns_match_what_gitignore_would() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("docs/api.md", &["docs/api.md"], &["docs/api.md/x", "docs/api.mdx", "x/docs/api.md", "docs"]),
            ("*.lock", &["Cargo.lock", "a/b/yarn.lock"], &["x.lock/y", "lock", "a.locks", "Cargo.lock.bak"]),
            ("src/auth/**", &["src/auth/a.rs", "src/auth/a/b.rs"], &["src/auth", "src/authz/a.rs"]),
            ("src/auth/", &["src/auth/a.rs"], &["src/auth", "x/src/auth/a.rs"]),
            ("src/auth", &["src/auth"], &["src/auth/session.rs", "src/authz", "a/src/auth"]),
            ("/Cargo.toml", &["Cargo.toml"], &["a/Cargo.toml"]),
            ("a/**/b", &["a/b", "a/x/b", "a/x/y/b"], &["a/b/c", "a/bb", "b", "x/a/b"]),
            ("**/test/*.rs", &["test/a.rs", "x/y/test/a.rs"], &["test/a/b.txt", "tests/a.rs"]),
            ("src/?.rs", &["src/a.rs", "src/é.rs"], &["src/ab.rs", "src/.rs"]),
            ("[a-c]x", &["ax", "d/bx"], &["dx", "Ax"]),
            ("[!a-c]x", &["dx", "éx"], &["ax", "x"]),
            ("\\*star", &["*star", "d/*star"], &["xstar"]),
            ("**", &["a", "a/b"], &[]),
            ("é/*", &["é/x"], &["e/x"]),
        ];
        for (pattern, yes, no) in cases {
            let g = glob(pattern);
            for path in *yes {
                assert!(g.matches(path), "{pattern} should match {path}");
            }
            for path in *no {
                assert!(!g.matches(path), "{pattern} should not match {path}");
            }
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (bad, says) in [
            ("", "empty"),
            ("!src", "negation"),
            ("a//b", "empty"),
            ("./a", "'.'"),
            ("a/../b", "'..'"),
            ("[abc", "not closed"),
            ("[é]", "ASCII"),
            ("[z-a]", "backwards"),
            ("a\\", "escape"),
            ("/", "whole repository"),
            ("tab\there", "control"),
            ("\\.\\./secret", "'..'"),
            ("\\./secret", "'.'"),
            ("a/\\.", "'.'"),
        ] {
            let err = Glob::parse(bad).expect_err(bad).0;
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        assert!(Glob::parse(&"a".repeat(MAX_PATTERN + 1)).is_err());
        assert!(Glob::parse(&"*a".repeat(MAX_WILDCARDS + 1)).is_err());
    }

    #[test]
    fn overlaps_are_found_with_a_witness_both_match() {
        let cases = [
            ("src/auth/**", "src/auth/session.rs", true),
            ("src/auth/", "**/*.rs", true),
            ("src/auth", "**/*.rs", false),
            ("*.lock", "Cargo.lock", true),
            ("*.lock", "docs/**", true),
            ("*.lock", "README.md", false),
            ("docs/api.md", "src/**", false),
            ("src/*.rs", "src/*.md", false),
            ("a/**/b", "a/*/c", false),
            ("a/**/b", "a/*/b", true),
            ("[ab]x", "[bc]x", true),
            ("[a]x", "[b]x", false),
            ("?", "é", true),
            ("[!a]", "a", false),
            ("[!a]", "?", true),
        ];
        for (a, b, overlap) in cases {
            let (ga, gb) = (glob(a), glob(b));
            let found = ga.overlap(&gb);
            assert_eq!(found.is_some(), overlap, "{a} vs {b}: {found:?}");
            assert_eq!(gb.overlap(&ga).is_some(), overlap, "{b} vs {a}");
            if let Some(w) = found {
                assert!(check_path(&w).is_ok() && ga.matches(&w) && gb.matches(&w), "{a} vs {b}: witness {w:?}");
            }
        }
        assert_eq!(glob("src/auth/**").overlap(&glob("src/auth/session.rs")).as_deref(), Some("src/auth/session.rs"));
    }

    #[test]
    fn an_index_finds_the_same_patterns_as_trying_them_all() {
        let patterns = [
            "src/auth/**",
            "src/*.rs",
            "*.lock",
            "/README.md",
            "docs/api.md",
            "s*/x",
            "**/test/*",
            "src/",
            "*k",
            "s*/**",
        ];
        let mut index = Index::default();
        for (i, p) in patterns.iter().enumerate() {
            index.insert(glob(p), i);
        }
        for path in [
            "src/auth/a.rs",
            "src/main.rs",
            "Cargo.lock",
            "a/b.lock",
            "README.md",
            "docs/api.md",
            "sx/x",
            "a/test/b",
            "src/x/y",
        ] {
            let mut found: Vec<usize> = index.matching(path).copied().collect();
            found.sort_unstable();
            let all: Vec<usize> = (0..patterns.len()).filter(|i| glob(patterns[*i]).matches(path)).collect();
            assert_eq!(found, all, "{path}");
        }
    }

    #[test]
    fn an_exact_pattern_matches_its_path_only() {
        for path in ["README.md", "src/a*b?.rs", "x/[ab]/\\y", "é/!z"] {
            let g = glob(&exact(path));
            assert!(g.matches(path), "{path}");
            assert!(!g.matches(&format!("{path}x")) && !g.matches(&format!("a/{path}")), "{path}");
        }
        assert!(!glob(&exact("src/a*b")).matches("src/aXb"));
    }

    #[test]
    fn paths_are_checked() {
        for good in ["a", "a/b.rs", ".github/x", "a/...", "é"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "./a", "a/../b", "a/.", "a\0b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }
}
