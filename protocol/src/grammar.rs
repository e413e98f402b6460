//! The grammar of every string the broker reads, stated once for `/openapi.json`.
//!
//! Each rule that a regular expression can state is a pattern here, and the validator that
//! enforces it is tested against the pattern: strings drawn from the pattern are accepted,
//! and strings drawn at random are accepted exactly when they match (the tests next to each
//! validator, and `grammar_matches_the_broker` in the broker's rules). A pattern is written
//! in the subset that JSON Schema (ECMA 262), Python and Rust read alike: classes, ranges,
//! groups and counted repetition, no look-around, no `\s` or `\d`.
//!
//! A glob's grammar is not regular (a range must not run backwards, at most 16 wildcards),
//! so its schema names it with `format: glob` and describes it.
//!
//! The types here are schemas only: the broker's fields stay `String`s and name the schema
//! with `#[schema(value_type = ...)]` or `#[param(value_type = ...)]`.

use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};

/// Longest task title, in characters: one line on a board card.
pub const MAX_TITLE: usize = 200;
/// Longest task description or chat message, in characters: a long comment, far below the
/// size where sled would move a value out of line into a blob file.
pub const MAX_TEXT: usize = 8 * 1024;
/// Longest note an agent can set (and a reservation's reason), in characters.
pub const MAX_NOTE: usize = 256;
/// Most tags on a task.
pub const MAX_TAGS: usize = 20;
/// Longest tag, in characters (tags are ASCII).
pub const MAX_TAG: usize = 32;
/// Most tasks in one `blockedBy` list.
pub const MAX_BLOCKERS: usize = 50;
/// Longest self-set status, in characters (statuses are ASCII).
pub const MAX_STATUS: usize = 32;

/// An agent name: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting and ending with a letter, a digit
/// or `_` ([`crate::names::check_agent`]).
pub const AGENT: &str = "^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_])?$";
/// A workspace name: 1 to 64 of `A-Z a-z 0-9 _ -`, starting with a letter or a digit
/// ([`crate::names::check_workspace`]).
pub const WORKSPACE: &str = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$";
/// A channel name: 1 to 132 of letters, digits and `. _ - : ,` ([`crate::names::check_channel`]).
pub const CHANNEL: &str = "^[A-Za-z0-9._:,-]{1,132}$";
/// A task title: one line (no control character) with something other than white space.
pub const TITLE: &str = concat!(
    "^[^\\x00-\\x1f\\x7f-\\x9f]*",
    "[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
    "[^\\x00-\\x1f\\x7f-\\x9f]*$"
);
/// Free text (a description): no control character but newline, tab and carriage return.
pub const TEXT: &str = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$";
/// A chat message: free text with something other than white space.
pub const CONTENT: &str = concat!(
    "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*",
    "[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
    "[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"
);
/// One line without control characters (a note, a reservation's reason).
pub const NOTE: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*$";
/// A tag: 1 to 32 of letters, digits and `. _ - : /`.
pub const TAG: &str = "^[A-Za-z0-9._:/-]{1,32}$";
/// A status an agent sets itself: 1 to 32 of lowercase letters, digits, `_` and `-`.
pub const STATUS: &str = "^[a-z0-9_-]{1,32}$";
/// A repository: 1 to 200 visible ASCII characters ([`crate::check_repo`]).
pub const REPO: &str = "^[!-~]{1,200}$";
/// A repository-relative path: segments separated by `/`, none empty, `.` or `..`, no NUL
/// ([`crate::glob::check_path`]).
pub const PATH: &str = concat!(
    "^(?:[^/\\x00.][^/\\x00]*|\\.[^/\\x00.][^/\\x00]*|\\.\\.[^/\\x00]+)",
    "(?:/(?:[^/\\x00.][^/\\x00]*|\\.[^/\\x00.][^/\\x00]*|\\.\\.[^/\\x00]+))*$"
);
/// A page cursor as the broker writes it: hex, 5 to 512 bytes; empty is the first page.
pub const CURSOR: &str = "^(?:(?:[0-9A-Fa-f]{2}){5,512})?$";
/// Task statuses, comma-separated, with spaces around each allowed (`todo,doing`).
pub const STATUS_LIST: &str = concat!(
    "^ *(?:todo|doing|review|blocked|done|cancelled) *",
    "(?:, *(?:todo|doing|review|blocked|done|cancelled) *)*$"
);
/// A task id (`T-12`, `t-12` or `12`): a number from 1 to 10^19 - 1, leading zeros allowed.
pub const TASK_ID: &str = "^(?:[Tt]-)?0*[1-9][0-9]{0,18}$";
/// A message id (`M-12`).
pub const MESSAGE_ID: &str = "^(?:[Mm]-)?0*[1-9][0-9]{0,18}$";
/// A reservation id (`R-12`).
pub const RESERVATION_ID: &str = "^(?:[Rr]-)?0*[1-9][0-9]{0,18}$";
/// One topic of a subscription ([`crate::Topic`]); `,` ends it in a list.
const TOPIC: &str = concat!(
    "(?:\\*|tasks|chat|presence|files",
    "|task:(?:[Tt]-)?0*[1-9][0-9]{0,18}",
    "|chat:[A-Za-z0-9._:-]{1,132}",
    "|inbox:[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_])?)"
);
/// How long a long-poll waits, at most a minute: seconds (`30`, `30s`), minutes (`1m`) or
/// milliseconds (`500ms`), without leading zeros.
pub const WAIT: &str = "^(?:(?:[0-9]|[1-5][0-9]|60)s?|[01]m|(?:[0-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|60000)ms)$";
/// An `Idempotency-Key`: 1 to 255 visible ASCII characters (spaces inside).
pub const IDEMPOTENCY_KEY: &str = "^[!-~](?:[ \\t!-~]{0,253}[!-~])?$";

/// Most topics in one request.
pub const MAX_TOPICS: usize = 256;

/// Topics, comma-separated, at most [`MAX_TOPICS`], with spaces around each allowed; empty
/// means `*`.
pub fn topics_pattern() -> String {
    format!("^(?: *{TOPIC} *(?:, *{TOPIC} *){{0,{}}})?$", MAX_TOPICS - 1)
}

/// Whether `c` is white space (Unicode `White_Space`, as `str::trim` reads it).
fn blank(c: char) -> bool {
    c.is_whitespace()
}

/// Checks a task title: not blank, one line, at most [`MAX_TITLE`] characters.
pub fn check_title(title: &str) -> Result<(), String> {
    if title.chars().all(blank) {
        return Err("must not be empty".to_owned());
    }
    if title.chars().count() > MAX_TITLE {
        return Err(format!("is longer than {MAX_TITLE} characters"));
    }
    if title.chars().any(char::is_control) {
        return Err("must be one line without control characters".to_owned());
    }
    Ok(())
}

/// Checks free text (a description, a message): at most [`MAX_TEXT`] characters, no control
/// characters other than newline, tab and carriage return.
pub fn check_text(text: &str) -> Result<(), String> {
    if text.chars().count() > MAX_TEXT {
        return Err(format!("is longer than {MAX_TEXT} characters"));
    }
    if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) {
        return Err("contains control characters".to_owned());
    }
    Ok(())
}

/// Checks a chat message's text: free text, not blank.
pub fn check_content(content: &str) -> Result<(), String> {
    if content.chars().all(blank) {
        return Err("must not be empty".to_owned());
    }
    check_text(content)
}

/// Checks a note: one line, at most [`MAX_NOTE`] characters.
pub fn check_note(note: &str) -> Result<(), String> {
    if note.chars().count() > MAX_NOTE {
        return Err(format!("is longer than {MAX_NOTE} characters"));
    }
    if note.chars().any(char::is_control) {
        return Err("must be one line without control characters".to_owned());
    }
    Ok(())
}

/// Checks a tag: 1 to [`MAX_TAG`] of letters, digits and `. _ - : /`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG
        && tag.chars().all(|c| crate::names::is_name_char(c) || matches!(c, ':' | '/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a valid tag (1-{MAX_TAG} letters, digits, '.', '_', '-', ':' or '/')",
            crate::names::truncate(tag, 80)
        ))
    }
}

/// Checks a self-set status: 1 to [`MAX_STATUS`] of lowercase letters, digits, `_` and `-`.
pub fn check_status(status: &str) -> Result<(), String> {
    let ok = !status.is_empty()
        && status.len() <= MAX_STATUS
        && status.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a valid status (1-{MAX_STATUS} lowercase letters, digits, '_' or '-', e.g. busy)",
            crate::names::truncate(status, 80)
        ))
    }
}

/// Reads a long-poll's wait ([`WAIT`]): `30`, `30s`, `1m` or `500ms`, at most a minute.
pub fn parse_wait(raw: &str) -> Result<std::time::Duration, String> {
    let bad =
        || format!("{:?} is not a wait of at most a minute (30, 30s, 1m, 500ms)", crate::names::truncate(raw, 40));
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let leading_zero = digits.len() > 1 && digits.starts_with('0');
    if digits.is_empty() || digits.len() > 5 || leading_zero {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let millis = match unit {
        "" | "s" => n * 1000,
        "m" => n * 60_000,
        "ms" => n,
        _ => return Err(bad()),
    };
    if millis > 60_000 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_millis(millis))
}

/// Checks an `Idempotency-Key` ([`IDEMPOTENCY_KEY`]): 1 to 255 visible ASCII characters,
/// with spaces or tabs only inside (HTTP strips them at the ends).
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    let visible = |b: u8| b.is_ascii_graphic();
    let ok = !key.is_empty()
        && key.len() <= 255
        && key.bytes().all(|b| visible(b) || b == b' ' || b == b'\t')
        && key.bytes().next().is_some_and(visible)
        && key.bytes().last().is_some_and(visible);
    if ok { Ok(()) } else { Err("must be 1-255 visible ASCII characters".to_owned()) }
}

/// Deserializes an optional count or `seq` of a JSON body within what JSON Schema's `int64`
/// allows (0 to `i64::MAX`), as the schema says: a number with no fraction (`3` or `3.0`).
pub fn int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_option(Int64::<false>)
}

/// [`int64`] for a query parameter: digits.
pub fn query_int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_option(Int64::<true>)
}

/// Reads an `int64`; from text (a query) when `TEXT`, else from a JSON number.
struct Int64<const TEXT: bool>;

impl<const TEXT: bool> Int64<TEXT> {
    fn check<E: serde::de::Error>(n: u64) -> Result<Option<u64>, E> {
        if n > i64::MAX as u64 {
            return Err(E::custom(format!("{n} is larger than the largest value, {}", i64::MAX)));
        }
        Ok(Some(n))
    }
}

impl<'de, const TEXT: bool> serde::de::Visitor<'de> for Int64<TEXT> {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a whole number from 0 to {}", i64::MAX)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Self::check(n)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
        u64::try_from(n).map_err(|_| E::custom(format!("{n} is negative"))).and_then(Self::check)
    }

    fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<Self::Value, E> {
        // `x as u64` saturates; 2^63 and beyond are refused by `check`.
        if x.fract() != 0.0 || x < 0.0 || x.is_nan() {
            return Err(E::custom(format!("{x} is not a whole number from 0 to {}", i64::MAX)));
        }
        Self::check(x as u64)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        if !TEXT {
            return Err(E::invalid_type(serde::de::Unexpected::Str(s), &self));
        }
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let n = s.parse::<u64>().ok().filter(|_| digits);
        n.ok_or_else(|| E::custom(format!("{s:?} is not a whole number"))).and_then(Self::check)
    }
}

/// Reads a comma-separated list of task statuses ([`STATUS_LIST`]).
pub fn parse_status_list(list: &str) -> Result<Vec<crate::TaskStatus>, String> {
    list.split(',')
        .map(|s| serde_json::from_value(serde_json::Value::String(s.trim_matches(' ').to_owned())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("{list:?} is not a list of todo, doing, review, blocked, done, cancelled"))
}

fn string(pattern: String, description: &str, example: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([example])
}

fn done(builder: ObjectBuilder) -> RefOr<Schema> {
    let object: Object = builder.build();
    RefOr::T(Schema::Object(object))
}

macro_rules! grammar {
    ($(#[doc = $doc:literal])* $name:ident => $schema:expr) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                done($schema)
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

grammar!(
    /// An agent name.
    AgentName => string(AGENT.into(),
        "An agent name: 1-64 of letters, digits, `.`, `_` and `-`, starting and ending with a letter, digit or `_`; case-insensitive.",
        "link")
);
grammar!(
    /// A workspace name.
    WorkspaceName => string(WORKSPACE.into(),
        "A workspace: 1-64 of letters, digits, `_` and `-`, starting with a letter or digit; case-insensitive.",
        "web-app")
);
grammar!(
    /// A channel name.
    ChannelName => string(CHANNEL.into(), "A channel: 1-132 of letters, digits, `.`, `_`, `-`, `:` and `,`.", "general")
);
grammar!(
    /// A task title.
    Title => string(TITLE.into(), "One line of at most 200 characters, not blank, without control characters.", "Fix auth redirect")
        .min_length(Some(1))
        .max_length(Some(MAX_TITLE))
);
grammar!(
    /// Free text.
    Text => string(TEXT.into(), "At most 8192 characters; no control characters but newline, tab and carriage return.", "Steps to reproduce: ...")
        .max_length(Some(MAX_TEXT))
);
grammar!(
    /// A chat message's text.
    Content => string(CONTENT.into(),
        "Not blank, at most 8192 characters; no control characters but newline, tab and carriage return. `@name` mentions land in that agent's inbox.",
        "@link PR #522 is green, merge it")
        .min_length(Some(1))
        .max_length(Some(MAX_TEXT))
);
grammar!(
    /// A one-line note.
    Note => string(NOTE.into(), "One line of at most 256 characters, without control characters.", "reviewing #522")
        .max_length(Some(MAX_NOTE))
);
grammar!(
    /// A tag.
    Tag => string(TAG.into(), "1-32 of letters, digits, `.`, `_`, `-`, `:` and `/`.", "area:auth")
);
grammar!(
    /// A status an agent sets itself.
    SelfStatus => string(STATUS.into(), "1-32 of lowercase letters, digits, `_` and `-` (`active` clears it).", "busy")
);
grammar!(
    /// A repository name.
    Repo => string(REPO.into(),
        "1-200 visible ASCII characters, no spaces (the CLI uses the normalized git remote, e.g. `git.example.com/acme/app`).",
        "git.example.com/acme/app")
);
grammar!(
    /// A repository-relative path.
    RepoPath => string(PATH.into(),
        "A repository-relative path of at most 4096 characters: no leading `/`, no empty, `.` or `..` segment, no NUL.",
        "src/auth/login.rs")
        .max_length(Some(crate::glob::MAX_PATH))
);
grammar!(
    /// A page cursor.
    PageCursor => ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(CURSOR))
        .description(Some(
            "The `next` of the previous page, as given: only a cursor the broker made for this list and these \
             filters is accepted. Empty is the first page.",
        ))
);
grammar!(
    /// Task statuses, comma-separated.
    StatusList => string(STATUS_LIST.into(), "Task statuses, comma-separated.", "todo,doing")
);
grammar!(
    /// Topics, comma-separated.
    Topics => string(topics_pattern(),
        "Topics, comma-separated, at most 256 (default `*`): `*`, `tasks`, `task:<id>`, `chat`, `chat:<channel>` (a channel without `,`), `presence`, `inbox:<agent>`, `files`.",
        "tasks,chat:general")
);
grammar!(
    /// A long-poll's wait.
    Wait => string(WAIT.into(), "At most a minute: seconds (`30`, `30s`), minutes (`1m`) or milliseconds (`500ms`).", "5s")
);
grammar!(
    /// An idempotency key.
    IdempotencyKey => string(IDEMPOTENCY_KEY.into(),
        "1-255 visible ASCII characters. The same key with the same request returns the first outcome; with a different request, 422 `idempotency_mismatch`.",
        "7f3e2c1a-create-fix-auth")
);
grammar!(
    /// A path glob of a file reservation.
    GlobPattern => ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("glob".into())))
        .description(Some(
            format!(
                "A repository-relative path or gitignore-style glob of at most {} bytes and {} wildcards: `*`, \
                 `?`, `[a-z]`, `[!a-z]` (ASCII), `**` as a whole segment, `\\` escapes; a trailing `/` holds a \
                 directory; no `!`, no empty, `.` or `..` segment (escaped or not), no control characters. Its \
                 automaton may have at most {} states and {} moves (a path of 256 bytes has about 260 states; \
                 patterns such as `*a???????b*` grow fast and are refused). The overlap checks of one request may \
                 take at most {} steps; a request that needs more is refused (409).",
                crate::glob::MAX_PATTERN,
                crate::glob::MAX_WILDCARDS,
                crate::glob::MAX_STATES,
                crate::glob::MAX_MOVES,
                crate::MAX_MATCH_STEPS,
            ),
        ))
        .examples(["src/auth/**"])
);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use regex::Regex;

    use super::*;
    use crate::{MessageId, ReservationId, TaskId, names};

    /// A rule: its pattern, the most characters it allows (JSON Schema's `maxLength`, where
    /// the pattern does not bound it), and the validator the broker runs.
    struct Rule {
        name: &'static str,
        pattern: String,
        regex: Regex,
        max_chars: Option<usize>,
        accepts: fn(&str) -> bool,
    }

    /// Every rule, its pattern compiled once.
    fn rules() -> &'static [Rule] {
        static RULES: std::sync::LazyLock<Vec<Rule>> = std::sync::LazyLock::new(all_rules);
        &RULES
    }

    fn all_rules() -> Vec<Rule> {
        let rule = |name, pattern: &str, max_chars, accepts| Rule {
            name,
            pattern: pattern.to_owned(),
            regex: Regex::new(pattern).unwrap(),
            max_chars,
            accepts,
        };
        vec![
            rule("agent", AGENT, None, names::is_agent),
            rule("channel", CHANNEL, None, |s| names::check_channel(s).is_ok()),
            rule("workspace", WORKSPACE, None, names::is_workspace),
            rule("title", TITLE, Some(MAX_TITLE), |s| check_title(s).is_ok()),
            rule("text", TEXT, Some(MAX_TEXT), |s| check_text(s).is_ok()),
            rule("content", CONTENT, Some(MAX_TEXT), |s| check_content(s).is_ok()),
            rule("note", NOTE, Some(MAX_NOTE), |s| check_note(s).is_ok()),
            rule("tag", TAG, None, |s| check_tag(s).is_ok()),
            rule("status", STATUS, None, |s| check_status(s).is_ok()),
            rule("repo", REPO, None, |s| crate::check_repo(s).is_ok()),
            rule("path", PATH, Some(crate::glob::MAX_PATH), |s| crate::glob::check_path(s).is_ok()),
            rule("status list", STATUS_LIST, None, |s| parse_status_list(s).is_ok()),
            rule("task id", TASK_ID, None, |s| s.parse::<TaskId>().is_ok()),
            rule("message id", MESSAGE_ID, None, |s| s.parse::<MessageId>().is_ok()),
            rule("reservation id", RESERVATION_ID, None, |s| s.parse::<ReservationId>().is_ok()),
            rule("topics", &topics_pattern(), None, |s| crate::parse_topics(&crate::split_topics(s)).is_ok()),
            rule("wait", WAIT, None, |s| parse_wait(s).is_ok()),
            rule("idempotency key", IDEMPOTENCY_KEY, None, |s| check_idempotency_key(s).is_ok()),
        ]
    }

    fn matches(rule: &Rule, s: &str) -> bool {
        rule.regex.is_match(s) && rule.max_chars.is_none_or(|max| s.chars().count() <= max)
    }

    /// Characters every rule cares about: name characters, separators, wildcards, spaces and
    /// white space of several kinds, control characters, non-ASCII letters.
    fn text() -> impl Strategy<Value = String> {
        let chars = vec![
            'a', 'z', 'A', 'T', 't', 'M', 'R', 'd', 'o', 'k', '0', '1', '9', '_', '.', '-', ':', ',', '/', '*', '?',
            '[', ']', '!', '\\', '@', '~', ' ', '\t', '\n', '\r', '\0', '\x1f', '\x7f', '\u{85}', '\u{9f}', '\u{a0}',
            '\u{2000}', '\u{3000}', '\u{feff}', 'é', 'і', 's', 'm',
        ];
        prop::collection::vec(prop::sample::select(chars), 0..10).prop_map(|v| v.into_iter().collect())
    }

    /// Words the grammars are made of, so that random strings often come close to valid ones.
    fn words() -> impl Strategy<Value = String> {
        let words = vec![
            "todo", "doing", "done", "tasks", "task:", "chat", "chat:", "inbox:", "presence", "files", "*", "T-", "t-",
            "M-", "R-", "00", "12", "60", "61", "1m", "2m", "ms", "s", "link", ".", "..", "/", ",", " ", "-", "_", "é",
        ];
        prop::collection::vec(prop::sample::select(words), 0..6).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A string the broker accepts is exactly one its pattern matches.
        #[test]
        fn a_validator_accepts_what_its_pattern_matches(s in prop_oneof![text(), words()]) {
            for rule in rules() {
                prop_assert_eq!((rule.accepts)(&s), matches(rule, &s), "{}: {:?}", rule.name, s);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Every string drawn from a pattern (within its length) is accepted.
        #[test]
        fn every_string_a_pattern_draws_is_accepted(seed in any::<u64>()) {
            use proptest::strategy::ValueTree;
            use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
            let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed.to_le_bytes(), [7; 8], [1; 8], [3; 8]].concat());
            let mut runner = TestRunner::new_with_rng(Config::default(), rng);
            for rule in rules() {
                let inner = &rule.pattern[1..rule.pattern.len() - 1];
                let strategy = proptest::string::string_regex(inner).unwrap();
                let s = strategy.new_tree(&mut runner).unwrap().current();
                if rule.max_chars.is_none_or(|max| s.chars().count() <= max) {
                    prop_assert!((rule.accepts)(&s), "{}: {:?} matches {} but is refused", rule.name, s, rule.pattern);
                }
            }
        }
    }

    #[test]
    fn bounds_are_the_same_on_both_sides() {
        let cases: Vec<(&str, String, bool)> = vec![
            ("title", "é".repeat(MAX_TITLE), true),
            ("title", "é".repeat(MAX_TITLE + 1), false),
            ("text", "é".repeat(MAX_TEXT), true),
            ("text", "é".repeat(MAX_TEXT + 1), false),
            ("note", "x".repeat(MAX_NOTE + 1), false),
            ("agent", "a".repeat(64), true),
            ("agent", "a".repeat(65), false),
            ("channel", "c".repeat(132), true),
            ("channel", "c".repeat(133), false),
            ("tag", "t".repeat(MAX_TAG + 1), false),
            ("repo", "r".repeat(200), true),
            ("repo", "r".repeat(201), false),
            ("path", "p".repeat(crate::glob::MAX_PATH), true),
            ("path", "p".repeat(crate::glob::MAX_PATH + 1), false),
            ("task id", "9".repeat(19), true),
            ("task id", "1".repeat(20), false),
            ("task id", format!("T-{}1", "0".repeat(30)), true),
            ("wait", "60000ms".to_owned(), true),
            ("wait", "60001ms".to_owned(), false),
            ("topics", vec!["tasks"; MAX_TOPICS].join(","), true),
            ("topics", vec!["tasks"; MAX_TOPICS + 1].join(","), false),
            ("idempotency key", "k".repeat(255), true),
            ("idempotency key", "k".repeat(256), false),
        ];
        for (name, s, valid) in cases {
            let rule = rules().iter().find(|r| r.name == name).unwrap();
            assert_eq!((rule.accepts)(&s), valid, "{name}: validator on {} chars", s.chars().count());
            assert_eq!(matches(rule, &s), valid, "{name}: pattern on {} chars", s.chars().count());
        }
    }

    #[test]
    fn a_wait_is_read_in_every_unit() {
        assert_eq!(parse_wait("30"), Ok(std::time::Duration::from_secs(30)));
        assert_eq!(parse_wait("30s"), Ok(std::time::Duration::from_secs(30)));
        assert_eq!(parse_wait("1m"), Ok(std::time::Duration::from_secs(60)));
        assert_eq!(parse_wait("500ms"), Ok(std::time::Duration::from_millis(500)));
        for bad in ["2m", "61", "soon", "", "030", "1h", "-1"] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn int64_takes_whole_numbers_up_to_the_largest_int64() {
        #[derive(serde::Deserialize)]
        struct N {
            #[serde(default, deserialize_with = "int64")]
            n: Option<u64>,
        }
        let read = |json: &str| serde_json::from_str::<N>(json).map(|n| n.n).map_err(|e| e.to_string());
        assert_eq!(read(r#"{"n": 3}"#), Ok(Some(3)));
        assert_eq!(read(r#"{"n": 3.0}"#), Ok(Some(3)));
        assert_eq!(read(r#"{"n": 1.929610464774551e15}"#), Ok(Some(1_929_610_464_774_551)));
        assert_eq!(read(r#"{"n": null}"#), Ok(None));
        assert_eq!(read("{}"), Ok(None));
        assert_eq!(read(r#"{"n": 9223372036854775807}"#), Ok(Some(i64::MAX as u64)));
        for bad in [r#"{"n": 9223372036854775808}"#, r#"{"n": 3.5}"#, r#"{"n": -1}"#, r#"{"n": "3"}"#] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
