//! Input rules: names, lengths, mentions. Every limit a client can hit is here (the grammar
//! of names is the protocol's, `muster_protocol::names`).

use muster_protocol::grammar;
use muster_protocol::names::{self, is_name_char};

use super::error::DomainError;

/// Longest agent name, in bytes (names are ASCII).
pub const MAX_NAME: usize = names::MAX_AGENT;
/// Longest channel name, in bytes (a direct channel holds two names).
pub const MAX_CHANNEL: usize = names::MAX_CHANNEL;
pub use muster_protocol::grammar::{MAX_BLOCKERS, MAX_NOTE, MAX_STATUS, MAX_TAG, MAX_TAGS, MAX_TEXT, MAX_TITLE};

/// Checks an agent name: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting and ending with a
/// letter, digit or `_` (so that `@link.` at the end of a sentence mentions `link`).
pub fn validate_agent(field: &str, name: &str) -> Result<(), DomainError> {
    names::check_agent(name).map_err(|message| DomainError::invalid(field, message))
}

/// Checks the acting agent of a command that needs one.
pub fn require_agent<'a>(field: &str, name: Option<&'a str>) -> Result<&'a str, DomainError> {
    match name {
        Some(name) => validate_agent(field, name).map(|()| name),
        None => {
            Err(DomainError::invalid(field, "is required: name the acting agent in the body or the X-Agent header"))
        }
    }
}

/// Checks a task title: not blank, one line, at most 200 characters.
pub fn validate_title(title: &str) -> Result<(), DomainError> {
    grammar::check_title(title).map_err(|m| DomainError::invalid("title", m))
}

/// Checks free text (description, message content): at most 8192 characters, no control
/// characters other than newline, tab and carriage return.
pub fn validate_text(field: &str, text: &str) -> Result<(), DomainError> {
    grammar::check_text(text).map_err(|m| DomainError::invalid(field, m))
}

/// Checks a tag list: at most 20 tags of 1 to 32 letters, digits or `. _ - : /`.
pub fn validate_tags(tags: &[String]) -> Result<(), DomainError> {
    if tags.len() > MAX_TAGS {
        return Err(DomainError::invalid("tags", format!("has more than {MAX_TAGS} tags")));
    }
    for (i, tag) in tags.iter().enumerate() {
        grammar::check_tag(tag).map_err(|m| DomainError::invalid(format!("tags[{i}]"), m))?;
    }
    Ok(())
}

/// Checks a channel name: 1 to 132 of letters, digits and `. _ - : ,`.
pub fn validate_channel(channel: &str) -> Result<(), DomainError> {
    names::check_channel(channel).map_err(|message| DomainError::invalid("channel", message))
}

/// Checks a self-set status: 1 to 32 of lowercase letters, digits, `_` and `-`.
pub fn validate_status(status: &str) -> Result<(), DomainError> {
    grammar::check_status(status).map_err(|m| DomainError::invalid("status", m))
}

/// Checks a note: one line, at most 256 characters.
pub fn validate_note(note: &str) -> Result<(), DomainError> {
    grammar::check_note(note).map_err(|m| DomainError::invalid("note", m))
}

/// The agents named with `@name` in a text, in order of first appearance, in their
/// canonical spelling (`@LINK` mentions `link`).
///
/// A mention starts at an `@` that does not follow a name character (so `kai@example.com`
/// mentions nobody) and runs to the first ASCII character that cannot be in a name; a
/// trailing `.` or `-` ends the sentence, not the name. What it spans must be a name:
/// `@lіnk` (with a Cyrillic `і`) mentions nobody, not `l`.
pub fn parse_mentions(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        if c == '@' && !prev.is_some_and(is_name_char) {
            let rest = &text[i + 1..];
            let end = rest.find(|c: char| c.is_ascii() && !is_name_char(c)).unwrap_or(rest.len());
            let name = rest[..end].trim_end_matches(['.', '-']);
            if names::is_agent(name) {
                let name = names::canonical(name);
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        prev = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_follow_what_people_write() {
        assert_eq!(parse_mentions("@link PR #522 is green, merge it"), vec!["link"]);
        assert_eq!(parse_mentions("thanks @zelda. @link, @zelda!"), vec!["zelda", "link"]);
        assert_eq!(parse_mentions("mail kai@example.com or @ nobody"), Vec::<String>::new());
        assert_eq!(parse_mentions("(@agent-7) and @claude_2-"), vec!["agent-7", "claude_2"]);
        assert_eq!(parse_mentions("@"), Vec::<String>::new());
    }

    #[test]
    fn a_mention_is_a_whole_name_in_any_case() {
        assert_eq!(parse_mentions("@LINK and @Link, @link"), vec!["link"]);
        assert_eq!(parse_mentions("@l\u{456}nk please"), Vec::<String>::new(), "a Cyrillic i is not in a name");
        assert_eq!(parse_mentions("@link\u{e9} @zelda"), vec!["zelda"]);
    }

    #[test]
    fn a_bad_agent_name_is_refused_naming_the_field() {
        let err = validate_agent("assignee", "has space").unwrap_err();
        assert!(matches!(err, DomainError::Invalid { ref field, .. } if field == "assignee"), "{err}");
    }
}
