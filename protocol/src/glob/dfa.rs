//! A pattern as a deterministic automaton over the bytes of a valid path, made once when the
//! pattern is read (subset construction of its [`Nfa`] together with [`PathState`]), and
//! the two questions asked of it: does it accept a path ([`Dfa::run`]), and which is the
//! shortest path two of them both accept ([`product`]). Both count their work against a
//! [`Budget`], so that no question costs more than its asker allows.
//!
//! Bytes that every move treats alike share a class, so a state has one move per class
//! (a pattern of letters and `*` has a handful) rather than 256.

use std::collections::{HashMap, VecDeque};

use super::nfa::{ByteSet, Nfa, PathState, SLASH};

/// A limit on the work of matching and overlap decisions, in steps: one step is one move
/// of an automaton looked at. A question that would take more is not answered
/// ([`OverBudget`]), so its cost is bounded by its budget, whatever the patterns.
#[derive(Debug, Clone)]
pub struct Budget {
    left: u64,
}

/// The work a question needed was more than its [`Budget`] allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

impl Budget {
    /// What looking at one more pattern costs before any move: reaching it and its quick
    /// tests took about as long as 16 moves, measured (BENCHMARKS.md).
    pub const PER_PATTERN: u64 = 16;

    /// A budget of `steps`.
    pub fn new(steps: u64) -> Budget {
        Budget { left: steps }
    }

    /// No limit (for patterns already known to be small, and for tests).
    pub fn unlimited() -> Budget {
        Budget::new(u64::MAX)
    }

    /// The steps not spent yet.
    pub fn left(&self) -> u64 {
        self.left
    }

    pub(super) fn spend(&mut self, steps: u64) -> Result<(), OverBudget> {
        self.left = self.left.checked_sub(steps).ok_or(OverBudget)?;
        Ok(())
    }
}

/// The dead state: never left, never accepting.
const DEAD: u16 = 0;
/// The start state.
const START: u16 = 1;

/// A deterministic automaton. States are numbered from 0 ([`DEAD`]); 1 is the start.
#[derive(Clone, Debug)]
pub(super) struct Dfa {
    /// Each byte's class.
    class: [u8; 256],
    /// How many classes there are.
    classes: usize,
    /// `next[state * classes + class]`.
    next: Vec<u16>,
    /// Whether each state accepts.
    accept: Vec<bool>,
}

/// Why an automaton was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotMade {
    /// It would have more states (or moves) than allowed.
    TooLarge,
    /// Making it would take more than the budget.
    OverBudget,
}

impl Dfa {
    /// The automaton accepting the valid paths `nfa` accepts, with at most `max_states`
    /// states (the dead one not counted) and `max_moves` moves (states × classes), made
    /// within `budget`: each state costs a step per word of the sets its members' moves
    /// join, and a few per class (about a nanosecond a step).
    pub(super) fn determinize(
        nfa: &Nfa,
        max_states: usize,
        max_moves: usize,
        budget: &mut Budget,
    ) -> Result<Dfa, NotMade> {
        let (class, classes) = byte_classes(nfa);
        let max_states = max_states.min(max_moves / classes);
        // One byte of each class stands for it: every move treats the class's bytes alike.
        let mut rep = vec![0u8; classes];
        for b in (0..=255u8).rev() {
            rep[usize::from(class[usize::from(b)])] = b;
        }
        let words = nfa.edges.len().div_ceil(64);
        let closure: Vec<Vec<u64>> = nfa
            .closure
            .iter()
            .map(|states| {
                let mut set = vec![0u64; words];
                for s in states {
                    set[*s as usize / 64] |= 1 << (s % 64);
                }
                set
            })
            .collect();

        type Key = (Vec<u64>, PathState);
        let mut ids: HashMap<Key, u16> = HashMap::new();
        let mut keys: Vec<Key> = vec![(vec![0; words], PathState::SegmentStart)];
        let mut next = vec![DEAD; classes];
        let mut accept = vec![false];
        let start = (closure[0].clone(), PathState::SegmentStart);
        ids.insert(start.clone(), START);
        keys.push(start);
        // For each move of the NFA, the classes it takes; and what following a state's moves
        // costs (a word of a set joined per class of each move).
        let on: Vec<Vec<Vec<usize>>> = nfa
            .edges
            .iter()
            .map(|edges| {
                edges.iter().map(|(set, _)| (0..classes).filter(|c| set.contains(rep[*c])).collect()).collect()
            })
            .collect();
        let work: Vec<u64> = on
            .iter()
            .map(|edges| edges.iter().map(|c: &Vec<usize>| (c.len() * words) as u64).sum::<u64>() + 1)
            .collect();
        let mut todo = VecDeque::from([START]);
        let mut to = vec![vec![0u64; words]; classes];
        while let Some(state) = todo.pop_front() {
            let (set, path) = keys[usize::from(state)].clone();
            // (And per class a set compared and perhaps kept: a few words' work each.)
            let cost: u64 = members(&set).map(|m| work[m]).sum::<u64>() + (classes * (words + 8)) as u64;
            budget.spend(cost).map_err(|OverBudget| NotMade::OverBudget)?;
            accept.push(path == PathState::Name && set[nfa.accept as usize / 64] & (1 << (nfa.accept % 64)) != 0);
            next.resize(next.len() + classes, DEAD);
            // Where each class leads from this state, every member's moves at once.
            to.iter_mut().for_each(|t| t.fill(0));
            for s in members(&set) {
                for ((_, target), classes) in nfa.edges[s].iter().zip(&on[s]) {
                    let reached = &closure[*target as usize];
                    for c in classes {
                        to[*c].iter_mut().zip(reached).for_each(|(t, r)| *t |= r);
                    }
                }
            }
            for (c, &byte) in rep.iter().enumerate() {
                let Some(path) = path.step(byte) else { continue };
                if to[c].iter().all(|w| *w == 0) {
                    continue;
                }
                let key = (to[c].clone(), path);
                let id = match ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        if keys.len() > max_states {
                            return Err(NotMade::TooLarge);
                        }
                        // At most `max_states + 1` states, which the caller keeps below u16::MAX.
                        let id = u16::try_from(keys.len()).map_err(|_| NotMade::TooLarge)?;
                        ids.insert(key.clone(), id);
                        keys.push(key);
                        todo.push_back(id);
                        id
                    }
                };
                next[usize::from(state) * classes + c] = id;
            }
        }
        Ok(Dfa { class, classes, next, accept })
    }

    /// How many states it has (the dead one included).
    pub(super) fn states(&self) -> usize {
        self.accept.len()
    }

    /// The bytes its tables take.
    pub(super) fn size(&self) -> usize {
        256 + self.next.len() * 2 + self.accept.len()
    }

    fn step(&self, state: u16, byte: u8) -> u16 {
        self.next[usize::from(state) * self.classes + usize::from(self.class[usize::from(byte)])]
    }

    /// Whether it accepts `bytes`: a step per byte, stopping at the dead state.
    pub(super) fn run(&self, bytes: &[u8], budget: &mut Budget) -> Result<bool, OverBudget> {
        let mut state = START;
        for (i, b) in bytes.iter().enumerate() {
            state = self.step(state, *b);
            if state == DEAD {
                budget.spend(i as u64 + 1)?;
                return Ok(false);
            }
        }
        budget.spend(bytes.len() as u64)?;
        Ok(self.accept[usize::from(state)])
    }
}

/// The states of a set, in order.
fn members(set: &[u64]) -> impl Iterator<Item = usize> + '_ {
    set.iter().enumerate().flat_map(|(w, bits)| {
        let mut bits = *bits;
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let s = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                s
            })
        })
    })
}

/// The classes of bytes `nfa` and the valid-path automaton tell apart: bytes in the same
/// class are in exactly the same sets of every move. Returns each byte's class and how
/// many classes there are.
fn byte_classes(nfa: &Nfa) -> ([u8; 256], usize) {
    let mut sets: Vec<ByteSet> = vec![ByteSet::one(SLASH), ByteSet::one(b'.'), ByteSet::one(0)];
    for (set, _) in nfa.edges.iter().flatten() {
        if !sets.contains(set) {
            sets.push(*set);
        }
    }
    // Refine the partition by each set in turn: a class splits into its bytes in the set
    // and those not.
    let mut class = [0u16; 256];
    let mut classes = 1;
    for set in &sets {
        let mut renumber = [u16::MAX; 512];
        let mut count = 0;
        for b in 0..=255u8 {
            let slot = &mut renumber[usize::from(class[usize::from(b)]) * 2 + usize::from(set.contains(b))];
            if *slot == u16::MAX {
                *slot = count;
                count += 1;
            }
            class[usize::from(b)] = *slot;
        }
        classes = usize::from(count);
    }
    // 256 bytes make at most 256 classes, numbered from 0.
    (class.map(|c| c as u8), classes)
}

/// The order in which a witness path takes its bytes from a set of possible ones: a
/// letter, a digit, `._-`, an upper-case letter, other visible ASCII, then anything.
fn preference() -> &'static [u8; 255] {
    static ORDER: std::sync::OnceLock<[u8; 255]> = std::sync::OnceLock::new();
    ORDER.get_or_init(|| {
        const PREFERRED: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._-ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut order = [0u8; 255];
        let mut seen = [false; 256];
        let all = PREFERRED.iter().copied().chain(0x21..=0x7e).chain(0x80..=0xff).chain(0x01..=0x20);
        let mut i = 0;
        for b in all {
            if !std::mem::replace(&mut seen[usize::from(b)], true) {
                order[i] = b;
                i += 1;
            }
        }
        order
    })
}

/// The shortest byte string both automata accept (a valid path, since both accept only
/// those), or `None`: a breadth-first search of their product, one step of the budget per
/// move looked at.
pub(super) fn product(a: &Dfa, b: &Dfa, budget: &mut Budget) -> Result<Option<Vec<u8>>, OverBudget> {
    thread_local! {
        /// The search's buffers, kept between searches: a reserve makes one per neighbour,
        /// and fresh ones each time made the allocator's work (and its traffic with the
        /// other cores) larger than the search's.
        static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
    }
    SCRATCH.with_borrow_mut(|scratch| scratch.search(a, b, budget))
}

/// The buffers of [`product`].
#[derive(Default)]
struct Scratch {
    /// Which pairs of classes have a move yet.
    seen: Vec<bool>,
    /// The moves of the product: a pair of classes, with the preferred byte of the pair.
    moves: Vec<(usize, usize, u8)>,
    /// Which pairs of states were reached, a bit each.
    visited: Vec<u64>,
    /// Each node reached: its states, the node it was reached from (its index) and the byte.
    nodes: Vec<(u16, u16, u32, u8)>,
}

impl Scratch {
    fn search(&mut self, a: &Dfa, b: &Dfa, budget: &mut Budget) -> Result<Option<Vec<u8>>, OverBudget> {
        // The product's classes: a look at each byte, three steps' time each (measured).
        budget.spend(3 * 255)?;
        self.seen.clear();
        self.seen.resize(a.classes * b.classes, false);
        self.moves.clear();
        for &byte in preference() {
            let (ca, cb) = (usize::from(a.class[usize::from(byte)]), usize::from(b.class[usize::from(byte)]));
            if !std::mem::replace(&mut self.seen[ca * b.classes + cb], true) {
                self.moves.push((ca, cb, byte));
            }
        }
        let nb = b.states();
        self.visited.clear();
        self.visited.resize((a.states() * nb).div_ceil(64), 0);
        let visited = &mut self.visited;
        let mut visit = |sa: u16, sb: u16| {
            let i = usize::from(sa) * nb + usize::from(sb);
            let fresh = visited[i / 64] & (1 << (i % 64)) == 0;
            visited[i / 64] |= 1 << (i % 64);
            fresh
        };
        let nodes = &mut self.nodes;
        nodes.clear();
        nodes.push((START, START, u32::MAX, 0));
        visit(START, START);
        let mut at = 0;
        while let Some(&(sa, sb, _, _)) = nodes.get(at) {
            if a.accept[usize::from(sa)] && b.accept[usize::from(sb)] {
                let mut bytes = Vec::new();
                let mut i = at;
                while let Some(&(_, _, from, byte)) = nodes.get(i).filter(|n| n.2 != u32::MAX) {
                    bytes.push(byte);
                    i = from as usize;
                }
                bytes.reverse();
                return Ok(Some(bytes));
            }
            budget.spend(self.moves.len() as u64)?;
            let (row_a, row_b) = (usize::from(sa) * a.classes, usize::from(sb) * b.classes);
            for &(ca, cb, byte) in &self.moves {
                let (ta, tb) = (a.next[row_a + ca], b.next[row_b + cb]);
                if ta != DEAD && tb != DEAD && visit(ta, tb) {
                    // Fewer than (u16::MAX)² nodes: the index fits in u32.
                    nodes.push((ta, tb, at as u32, byte));
                }
            }
            at += 1;
        }
        Ok(None)
    }
}
