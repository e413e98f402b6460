//! A pattern as a nondeterministic automaton over the bytes of a path (Thompson's
//! construction from its segments), and the small automaton of valid paths. The
//! deterministic automaton of `dfa` is made from both.

use std::fmt;

use super::{Item, Segment};

/// A set of bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ByteSet([u64; 4]);

impl fmt::Debug for ByteSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteSet({} bytes)", (0..=255u8).filter(|b| self.contains(*b)).count())
    }
}

impl ByteSet {
    pub(super) const EMPTY: ByteSet = ByteSet([0; 4]);

    const fn range(from: u8, to: u8) -> ByteSet {
        let mut words = [0u64; 4];
        let mut b = from as usize;
        while b <= to as usize {
            words[b / 64] |= 1 << (b % 64);
            b += 1;
        }
        ByteSet(words)
    }

    pub(super) const fn one(b: u8) -> ByteSet {
        ByteSet::range(b, b)
    }

    const fn without(self, b: u8) -> ByteSet {
        let mut words = self.0;
        words[(b / 64) as usize] &= !(1 << (b % 64));
        ByteSet(words)
    }

    pub(super) fn insert(&mut self, b: u8) {
        self.0[usize::from(b / 64)] |= 1 << (b % 64);
    }

    pub(super) fn remove(&mut self, b: u8) {
        self.0[usize::from(b / 64)] &= !(1 << (b % 64));
    }

    pub(super) fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b / 64)] & (1 << (b % 64)) != 0
    }

    fn minus(&self, other: &ByteSet) -> ByteSet {
        ByteSet([0, 1, 2, 3].map(|i| self.0[i] & !other.0[i]))
    }
}

pub(super) const SLASH: u8 = b'/';
/// Any byte of a path (NUL is none).
const ANY: ByteSet = ByteSet::range(1, 255);
const NOT_SLASH: ByteSet = ANY.without(SLASH);
const ASCII_NOT_SLASH: ByteSet = ByteSet::range(1, 0x7f).without(SLASH);
/// The bytes after the first of a multi-byte UTF-8 character.
const CONTINUATION: ByteSet = ByteSet::range(0x80, 0xbf);

/// A nondeterministic automaton with ε-moves; state 0 is the start, [`Nfa::accept`] the
/// one accepting state.
#[derive(Clone, Debug)]
pub(super) struct Nfa {
    /// Each state's moves: a set of bytes and where they lead.
    pub(super) edges: Vec<Vec<(ByteSet, u32)>>,
    /// Each state's ε-closure (itself included).
    pub(super) closure: Vec<Vec<u32>>,
    /// The accepting state.
    pub(super) accept: u32,
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
    /// The automaton of a parsed pattern.
    pub(super) fn compile(segments: &[Segment]) -> Nfa {
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
        let closure = (0..b.eps.len()).map(|s| closure_of(&b.eps, s)).collect();
        Nfa { edges: b.edges, closure, accept: cur }
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
pub(super) enum PathState {
    SegmentStart,
    Dot,
    DotDot,
    Name,
}

impl PathState {
    /// Where `byte` leads; `None` where no valid path goes on.
    pub(super) fn step(self, byte: u8) -> Option<PathState> {
        use PathState::*;
        match (self, byte) {
            (_, 0) => None,
            (Name, SLASH) => Some(SegmentStart),
            (_, SLASH) => None,
            (SegmentStart, b'.') => Some(Dot),
            (Dot, b'.') => Some(DotDot),
            _ => Some(Name),
        }
    }
}
