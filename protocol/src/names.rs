//! The grammar of names on the wire: agents, channels and workspaces. The broker refuses a name that does
//! not follow it, and a topic or a mention is read with the same rules.
//!
//! Agent names are case-insensitive: `LINK` and `link` are one agent, always written in
//! its [`canonical`] spelling, lowercase. Names are ASCII, so no two spellings of other
//! scripts can pass for one another (`lіnk` with a Cyrillic `і` is not a name at all).

/// Longest agent name, in bytes (names are ASCII).
pub const MAX_AGENT: usize = 64;
/// Longest channel name, in bytes (a direct channel holds two names).
pub const MAX_CHANNEL: usize = 2 * MAX_AGENT + 4;

/// Longest workspace name, in bytes (names are ASCII).
pub const MAX_WORKSPACE: usize = 64;
/// The workspace every broker has, and the one the unprefixed routes serve.
pub const DEFAULT_WORKSPACE: &str = "default";

/// A character that may appear in an agent name: `A-Z a-z 0-9 . _ -`.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// A character that may start or end an agent name: a letter, a digit or `_` (so that
/// `@link.` at the end of a sentence mentions `link`).
pub fn is_name_edge(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `name` is an agent name: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting and ending
/// with a letter, digit or `_`.
pub fn is_agent(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_AGENT
        && name.chars().all(is_name_char)
        && name.starts_with(is_name_edge)
        && name.ends_with(is_name_edge)
}

/// The one spelling of an agent name: ASCII lowercase (`LINK` is `link`).
pub fn canonical(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Checks an agent name; the error says what a name may be.
pub fn check_agent(name: &str) -> Result<(), String> {
    if is_agent(name) {
        Ok(())
    } else if name.is_empty() {
        Err("must not be empty: name the acting agent".to_owned())
    } else {
        Err(format!(
            "{:?} is not a valid agent name (1-{MAX_AGENT} letters, digits, '.', '_' or '-', \
             starting and ending with a letter, digit or '_')",
            truncate(name, 80)
        ))
    }
}

/// Whether `name` is a workspace name: 1 to 64 of `A-Z a-z 0-9 _ -`, starting with a letter
/// or a digit (it is a path segment of `/w/{workspace}/…` and a directory's name).
pub fn is_workspace(name: &str) -> bool {
    name.len() <= MAX_WORKSPACE
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Checks a workspace name; the error says what a name may be. Names are case-insensitive
/// ([`canonical`] spells them).
pub fn check_workspace(name: &str) -> Result<(), String> {
    if is_workspace(name) {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a valid workspace name (1-{MAX_WORKSPACE} letters, digits, '_' or '-', starting with a \
             letter or digit)",
            truncate(name, 80)
        ))
    }
}

/// Checks a channel name: 1 to 132 of letters, digits and `. _ - : ,`.
pub fn check_channel(channel: &str) -> Result<(), String> {
    let ok = !channel.is_empty()
        && channel.len() <= MAX_CHANNEL
        && channel.chars().all(|c| is_name_char(c) || matches!(c, ':' | ','));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a valid channel name (1-{MAX_CHANNEL} letters, digits, '.', '_', '-', ':' or ',')",
            truncate(channel, 80)
        ))
    }
}

/// The first `max` characters of `s`, for echoing bad input back without echoing a
/// megabyte of it.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_owned() } else { format!("{}…", s.chars().take(max).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_are_short_words() {
        for good in ["link", "claude-2", "a", "kai.dev", "_bot", "A9"] {
            assert!(check_agent(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "x.", "has space", "tab\t", "é", &"x".repeat(65)] {
            assert!(check_agent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workspace_names_are_path_segments() {
        for good in ["default", "web-app", "a", "API_2", &"x".repeat(64)] {
            assert!(check_workspace(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "_x", ".", "..", "a.b", "a/b", "has space", "é", &"x".repeat(65)] {
            assert!(check_workspace(bad).is_err(), "{bad}");
        }
    }
}
