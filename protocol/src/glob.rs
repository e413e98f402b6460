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
//! Whether two globs match a common path is decided exactly: both compile to finite
//! automata over the bytes of a path, and [`Glob::overlap`] searches their product
//! (together with a small automaton of valid paths: non-empty segments, none `.` or `..`)
//! for the shortest path both match, which it returns as the witness. No path is
//! enumerated and no overlap is guessed.

use std::collections::{HashMap, VecDeque};
use std::fmt;

/// Longest pattern, in bytes.
pub const MAX_PATTERN: usize = 256;
/// Most wildcards (`*`, `?`, `[...]`, `**`) in one pattern: bounds the work of deciding an
/// overlap (the product of two patterns' automata).
pub const MAX_WILDCARDS: usize = 16;
/// Longest path, in characters.
pub const MAX_PATH: usize = 4096;

/// A pattern that cannot be read, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError(pub String);

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GlobError {}

/// A compiled pattern.
#[derive(Clone)]
pub struct Glob {
    source: String,
    /// The bytes every matched path starts with (the literal text before the first
    /// wildcard of an anchored pattern): a quick test before the automaton.
    prefix: Vec<u8>,
    /// The bytes every matched path ends with (the literal text after the last wildcard).
    suffix: Vec<u8>,
    nfa: Nfa,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Glob").field(&self.source).finish()
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.source == other.source
    }
}

impl Eq for Glob {}

impl Glob {
    /// Reads a pattern.
    pub fn parse(pattern: &str) -> Result<Glob, GlobError> {
        let segments = parse(pattern)?;
        let mut prefix = Vec::new();
        let anchored = !matches!(segments.first(), Some(Segment::Any));
        if anchored {
            'segments: for (i, segment) in segments.iter().enumerate() {
                let Segment::Items(items) = segment else { break };
                for item in items {
                    let Item::Byte(b) = item else { break 'segments };
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
        Ok(Glob { source: pattern.to_owned(), prefix, suffix, nfa: Nfa::compile(&segments) })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches `path` (a repository-relative path, see [`check_path`]).
    pub fn matches(&self, path: &str) -> bool {
        let bytes = path.as_bytes();
        bytes.starts_with(&self.prefix) && bytes.ends_with(&self.suffix) && self.nfa.accepts(bytes)
    }

    /// The deepest directory every matched path is in (`src/auth/` for `src/auth/*.rs`),
    /// when the pattern fixes one: see [`Index`].
    fn fixed_dir(&self) -> Option<&[u8]> {
        let slash = self.prefix.iter().rposition(|b| *b == b'/')?;
        Some(&self.prefix[..=slash])
    }

    /// A path both patterns match (the shortest), or `None` when they have none in common.
    pub fn overlap(&self, other: &Glob) -> Option<String> {
        // Quick answers first: a common path starts with both prefixes and ends with both
        // suffixes, so one of each pair must extend the other.
        let n = self.prefix.len().min(other.prefix.len());
        let m = self.suffix.len().min(other.suffix.len());
        if self.prefix[..n] != other.prefix[..n]
            || self.suffix[self.suffix.len() - m..] != other.suffix[other.suffix.len() - m..]
        {
            return None;
        }
        let bytes = product(&self.nfa, &other.nfa)?;
        Some(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
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
        } else if !glob.suffix.is_empty() {
            let tail = glob.suffix[glob.suffix.len().saturating_sub(Self::TAIL)..].to_vec();
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

// ---------------------------------------------------------------------------------------
// Automata.

/// A set of bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ByteSet([u64; 4]);

impl fmt::Debug for ByteSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteSet({} bytes)", (0..=255u8).filter(|b| self.contains(*b)).count())
    }
}

impl ByteSet {
    const EMPTY: ByteSet = ByteSet([0; 4]);

    const fn range(from: u8, to: u8) -> ByteSet {
        let mut words = [0u64; 4];
        let mut b = from as usize;
        while b <= to as usize {
            words[b / 64] |= 1 << (b % 64);
            b += 1;
        }
        ByteSet(words)
    }

    const fn one(b: u8) -> ByteSet {
        ByteSet::range(b, b)
    }

    const fn without(self, b: u8) -> ByteSet {
        let mut words = self.0;
        words[(b / 64) as usize] &= !(1 << (b % 64));
        ByteSet(words)
    }

    fn insert(&mut self, b: u8) {
        self.0[usize::from(b / 64)] |= 1 << (b % 64);
    }

    fn remove(&mut self, b: u8) {
        self.0[usize::from(b / 64)] &= !(1 << (b % 64));
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b / 64)] & (1 << (b % 64)) != 0
    }

    fn and(&self, other: &ByteSet) -> ByteSet {
        ByteSet([0, 1, 2, 3].map(|i| self.0[i] & other.0[i]))
    }

    fn minus(&self, other: &ByteSet) -> ByteSet {
        ByteSet([0, 1, 2, 3].map(|i| self.0[i] & !other.0[i]))
    }

    fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// The byte a witness path uses from this set: a letter, a digit, then other visible
    /// ASCII, then anything.
    fn pick(&self) -> Option<u8> {
        const PREFERRED: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._-ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        PREFERRED.iter().copied().chain(0x21..=0x7e).chain(0x80..=0xff).chain(0x01..=0x20).find(|b| self.contains(*b))
    }
}

const SLASH: u8 = b'/';
/// Any byte of a path (NUL is none).
const ANY: ByteSet = ByteSet::range(1, 255);
const NOT_SLASH: ByteSet = ANY.without(SLASH);
const ASCII_NOT_SLASH: ByteSet = ByteSet::range(1, 0x7f).without(SLASH);
/// The bytes after the first of a multi-byte UTF-8 character.
const CONTINUATION: ByteSet = ByteSet::range(0x80, 0xbf);

/// A nondeterministic automaton with ε-moves; state 0 is the start.
#[derive(Clone, Debug)]
struct Nfa {
    edges: Vec<Vec<(ByteSet, u32)>>,
    /// Each state's ε-closure (itself included).
    closure: Vec<Vec<u32>>,
    accept: Vec<bool>,
}

/// Builds an [`Nfa`].
struct Builder {
    edges: Vec<Vec<(ByteSet, u32)>>,
    eps: Vec<Vec<u32>>,
}

impl Builder {
    fn state(&mut self) -> u32 {
        self.edges.push(Vec::new());
        self.eps.push(Vec::new());
        u32::try_from(self.edges.len() - 1).unwrap_or(u32::MAX)
    }

    fn edge(&mut self, from: u32, set: ByteSet, to: u32) {
        self.edges[from as usize].push((set, to));
    }

    fn eps(&mut self, from: u32, to: u32) {
        self.eps[from as usize].push(to);
    }

    /// One character: an ASCII byte of `ascii`, or any multi-byte UTF-8 character.
    fn one_char(&mut self, from: u32, ascii: ByteSet) -> u32 {
        let next = self.state();
        self.edge(from, ascii, next);
        let (c1, c2, c3) = (self.state(), self.state(), self.state());
        self.edge(c1, CONTINUATION, next);
        self.edge(c2, CONTINUATION, c1);
        self.edge(c3, CONTINUATION, c2);
        self.edge(from, ByteSet::range(0xc2, 0xdf), c1);
        self.edge(from, ByteSet::range(0xe0, 0xef), c2);
        self.edge(from, ByteSet::range(0xf0, 0xf4), c3);
        next
    }

    fn item(&mut self, from: u32, item: &Item) -> u32 {
        match item {
            Item::Byte(b) => {
                let next = self.state();
                self.edge(from, ByteSet::one(*b), next);
                next
            }
            Item::Star => {
                let s = self.state();
                self.eps(from, s);
                self.edge(s, NOT_SLASH, s);
                s
            }
            Item::Char => self.one_char(from, ASCII_NOT_SLASH),
            Item::Class { set, negated: false } => {
                let next = self.state();
                self.edge(from, *set, next);
                next
            }
            Item::Class { set, negated: true } => self.one_char(from, ASCII_NOT_SLASH.minus(set)),
        }
    }
}

impl Nfa {
    fn compile(segments: &[Segment]) -> Nfa {
        let mut b = Builder { edges: Vec::new(), eps: Vec::new() };
        let mut cur = b.state();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            match segment {
                // Zero or more directories, with the `/` that follows them.
                Segment::Any if !last => {
                    let (next, dirs) = (b.state(), b.state());
                    b.eps(cur, next);
                    b.edge(cur, ANY, dirs);
                    b.edge(dirs, ANY, dirs);
                    b.edge(dirs, ByteSet::one(SLASH), next);
                    cur = next;
                }
                // At the end: anything inside.
                Segment::Any => {
                    let rest = b.state();
                    b.edge(cur, ANY, rest);
                    b.edge(rest, ANY, rest);
                    cur = rest;
                }
                Segment::Items(items) => {
                    for item in items {
                        cur = b.item(cur, item);
                    }
                    if !last {
                        let next = b.state();
                        b.edge(cur, ByteSet::one(SLASH), next);
                        cur = next;
                    }
                }
            }
        }
        let mut accept = vec![false; b.edges.len()];
        accept[cur as usize] = true;
        let closure = (0..b.eps.len()).map(|s| closure_of(&b.eps, s)).collect();
        Nfa { edges: b.edges, closure, accept }
    }

    fn accepts(&self, input: &[u8]) -> bool {
        let n = self.edges.len();
        let mut current = vec![false; n];
        let mut next = vec![false; n];
        for &s in &self.closure[0] {
            current[s as usize] = true;
        }
        for &byte in input {
            next.iter_mut().for_each(|s| *s = false);
            let mut any = false;
            for (s, _) in current.iter().enumerate().filter(|(_, on)| **on) {
                for (set, to) in &self.edges[s] {
                    if set.contains(byte) {
                        for &t in &self.closure[*to as usize] {
                            next[t as usize] = true;
                            any = true;
                        }
                    }
                }
            }
            if !any {
                return false;
            }
            std::mem::swap(&mut current, &mut next);
        }
        current.iter().zip(&self.accept).any(|(on, accept)| *on && *accept)
    }

    fn accepting(&self, s: u32) -> bool {
        self.closure[s as usize].iter().any(|t| self.accept[*t as usize])
    }
}

fn closure_of(eps: &[Vec<u32>], start: usize) -> Vec<u32> {
    let mut seen = vec![false; eps.len()];
    let mut stack = vec![start];
    let mut out = Vec::new();
    while let Some(s) = stack.pop() {
        if std::mem::replace(&mut seen[s], true) {
            continue;
        }
        out.push(u32::try_from(s).unwrap_or(u32::MAX));
        stack.extend(eps[s].iter().map(|t| *t as usize));
    }
    out
}

/// Where a valid path stands: at the start of a segment, in a segment that is so far `.`
/// or `..`, or in a proper segment (the only accepting place). An empty segment, a `.` or
/// `..` segment and NUL lead nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PathState {
    SegmentStart,
    Dot,
    DotDot,
    Name,
}

impl PathState {
    /// The classes of bytes this automaton tells apart, and where each leads.
    fn moves(self) -> [(ByteSet, Option<PathState>); 3] {
        const SLASHES: ByteSet = ByteSet::one(SLASH);
        const DOTS: ByteSet = ByteSet::one(b'.');
        const OTHER: ByteSet = NOT_SLASH.without(b'.');
        use PathState::*;
        let (on_slash, on_dot) = match self {
            SegmentStart => (None, Some(Dot)),
            Dot => (None, Some(DotDot)),
            DotDot => (None, Some(Name)),
            Name => (Some(SegmentStart), Some(Name)),
        };
        [(SLASHES, on_slash), (DOTS, on_dot), (OTHER, Some(Name))]
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The shortest byte string both automata accept that is a valid path: a breadth-first
/// search of the product of `a`, `b` and the valid-path automaton.
fn product(a: &Nfa, b: &Nfa) -> Option<Vec<u8>> {
    type Node = (u32, u32, PathState);
    // Each node's place in `parent`, which holds how it was first reached:
    // `(previous node's place << 8) | byte`, START for the start, UNSEEN until then.
    const UNSEEN: u64 = u64::MAX;
    const START: u64 = u64::MAX - 1;
    let nb = b.edges.len();
    let place = |(sa, sb, path): Node| (sa as usize * nb + sb as usize) * 4 + path.index();
    let mut parent = vec![UNSEEN; a.edges.len() * nb * 4];
    let start: Node = (0, 0, PathState::SegmentStart);
    parent[place(start)] = START;
    let mut queue = VecDeque::from([start]);
    while let Some(node @ (sa, sb, path)) = queue.pop_front() {
        if path == PathState::Name && a.accepting(sa) && b.accepting(sb) {
            let mut bytes = Vec::new();
            let mut at = parent[place(node)];
            while at != START {
                bytes.push((at & 0xff) as u8);
                at = parent[(at >> 8) as usize];
            }
            bytes.reverse();
            return Some(bytes);
        }
        let here = place(node) as u64;
        for &xa in &a.closure[sa as usize] {
            for (set_a, ta) in &a.edges[xa as usize] {
                for &xb in &b.closure[sb as usize] {
                    for (set_b, tb) in &b.edges[xb as usize] {
                        let both = set_a.and(set_b);
                        if both.is_empty() {
                            continue;
                        }
                        for (class, to) in path.moves() {
                            let Some(to) = to else { continue };
                            let next = (*ta, *tb, to);
                            let slot = &mut parent[place(next)];
                            if *slot != UNSEEN {
                                continue;
                            }
                            let Some(byte) = both.and(&class).pick() else { continue };
                            *slot = (here << 8) | u64::from(byte);
                            queue.push_back(next);
                        }
                    }
                }
            }
        }
    }
    None
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
    fn paths_are_checked() {
        for good in ["a", "a/b.rs", ".github/x", "a/...", "é"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "./a", "a/../b", "a/.", "a\0b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }
}
