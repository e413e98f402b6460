//! Glob overlap against brute force: a second, independent matcher (recursive, on
//! characters and segments) decides which paths of a generated universe each pattern
//! matches. Both ways: every pair with a common path in the universe is reported as
//! overlapping, and every reported witness is a valid path both patterns match (so a checker
//! that always said "overlap" would fail, and so would one that missed an overlap). The
//! matcher and the index of patterns agree with the oracle on every path too.

use muster_protocol::glob::{Glob, Index, check_path};
use proptest::prelude::*;

static UNIVERSE: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(universe);

/// Every path of one to three segments, each segment one or two of `a b . é` (but not `.`
/// or `..`): 18 + 18² + 18³ = 6,174 paths.
fn universe() -> Vec<String> {
    let alphabet = ["a", "b", ".", "é"];
    let mut segments: Vec<String> = alphabet.iter().map(|c| (*c).to_owned()).collect();
    for x in alphabet {
        for y in alphabet {
            segments.push(format!("{x}{y}"));
        }
    }
    segments.retain(|s| s != "." && s != "..");
    let mut paths = segments.clone();
    let mut last = segments.clone();
    for _ in 1..3 {
        last = last.iter().flat_map(|p| segments.iter().map(move |s| format!("{p}/{s}"))).collect();
        paths.extend(last.iter().cloned());
    }
    paths
}

fn pattern() -> impl Strategy<Value = String> {
    let atom = prop::sample::select(vec!["a", "b", ".", "é", "*", "?", "[ab]", "[!a]"]);
    let segment = prop_oneof![
        1 => Just("**".to_owned()),
        6 => prop::collection::vec(atom, 1..=3).prop_map(|atoms| atoms.concat()),
    ];
    (any::<bool>(), prop::collection::vec(segment, 1..=3), any::<bool>()).prop_map(|(rooted, segments, dir)| {
        format!("{}{}{}", if rooted { "/" } else { "" }, segments.join("/"), if dir { "/" } else { "" })
    })
}

/// The oracle: gitignore-style matching, written directly from the rules.
fn oracle(pattern: &str, path: &str) -> bool {
    let (rooted, p) = match pattern.strip_prefix('/') {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let (dir, p) = match p.strip_suffix('/') {
        Some(p) => (true, p),
        None => (false, p),
    };
    let mut segments: Vec<&str> = p.split('/').collect();
    if !(rooted || segments.len() > 1) {
        segments.insert(0, "**");
    }
    if dir {
        segments.push("**");
    }
    let parts: Vec<&str> = path.split('/').collect();
    match_segments(&segments, &parts)
}

fn match_segments(p: &[&str], x: &[&str]) -> bool {
    match p.split_first() {
        None => x.is_empty(),
        Some((&"**", [])) => !x.is_empty(),
        Some((&"**", rest)) => (0..=x.len()).any(|i| match_segments(rest, &x[i..])),
        Some((segment, rest)) => {
            let (pc, xc): (Vec<char>, Vec<char>) =
                (segment.chars().collect(), x.first().map(|s| s.chars().collect()).unwrap_or_default());
            !x.is_empty() && fnmatch(&pc, &xc) && match_segments(rest, &x[1..])
        }
    }
}

fn fnmatch(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|i| fnmatch(&p[1..], &s[i..])),
        Some('?') => !s.is_empty() && fnmatch(&p[1..], &s[1..]),
        Some('[') => {
            let end = p.iter().position(|c| *c == ']').unwrap_or(p.len());
            let (negated, members) = match p[1..end].split_first() {
                Some(('!', rest)) => (true, rest),
                _ => (false, &p[1..end]),
            };
            !s.is_empty() && members.contains(&s[0]) != negated && fnmatch(&p[end + 1..], &s[1..])
        }
        Some(c) => s.first() == Some(c) && fnmatch(&p[1..], &s[1..]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn overlap_agrees_with_brute_force(a in pattern(), b in pattern()) {
        let (Ok(ga), Ok(gb)) = (Glob::parse(&a), Glob::parse(&b)) else {
            // `.`/`..` segments are refused; nothing to compare.
            return Ok(());
        };
        let mut index = Index::default();
        index.insert(ga.clone(), 'a');
        index.insert(gb.clone(), 'b');
        let mut common = None;
        for path in UNIVERSE.iter() {
            let (ma, mb) = (oracle(&a, path), oracle(&b, path));
            prop_assert_eq!(ga.matches(path), ma, "{} on {}", a, path);
            prop_assert_eq!(gb.matches(path), mb, "{} on {}", b, path);
            let mut found: Vec<char> = index.matching(path).copied().collect();
            found.sort_unstable();
            let expected: Vec<char> = [(ma, 'a'), (mb, 'b')].into_iter().filter(|(m, _)| *m).map(|(_, c)| c).collect();
            prop_assert_eq!(found, expected, "the index on {}", path);
            if ma && mb && common.is_none() {
                common = Some(path.clone());
            }
        }
        let witness = ga.overlap(&gb);
        prop_assert_eq!(witness.is_some(), gb.overlap(&ga).is_some(), "{} vs {}: not symmetric", a, b);
        if let Some(path) = common {
            prop_assert!(witness.is_some(), "{} and {} both match {}, but no overlap was reported", a, b, path);
        }
        if let Some(w) = witness {
            prop_assert!(check_path(&w).is_ok(), "{} vs {}: witness {:?} is not a valid path", a, b, w);
            prop_assert!(oracle(&a, &w) && oracle(&b, &w), "{} vs {}: witness {:?} is not matched by both", a, b, w);
        }
    }
}
