//! Topics: what a subscriber receives. Every event is published on a few topics
//! ([`EventKind::topics`](crate::EventKind::topics)); a subscriber to one of them (or to `*`) receives it.
//!
//! On the wire a topic is a string: `*`, `tasks`, `task:<id>`, `chat`, `chat:<channel>`,
//! `presence`, `inbox:<agent>`, `files`. Parsing normalizes it (`task:12` is `task:T-12`,
//! `inbox:LINK` is `inbox:link`), so two spellings of one topic are one subscription. The cases every client must agree on are in
//! `protocol/examples/topics.json`.

use std::fmt;
use std::str::FromStr;

use crate::{Event, TaskId, names};

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `*`: every event.
    All,
    /// `tasks`: every task event.
    Tasks,
    /// `task:<id>`: the events of one task.
    Task(TaskId),
    /// `chat`: every chat message.
    Chat,
    /// `chat:<channel>`: the messages of one channel.
    Channel(String),
    /// `presence`: agents appearing, leaving, changing their status.
    Presence,
    /// `inbox:<agent>`: messages that mention an agent or are addressed to it, and its acks.
    Inbox(String),
    /// `files`: file reservations made, renewed and ended.
    Files,
}

/// Why a string is not a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseTopicError(String);

impl fmt::Display for ParseTopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseTopicError {}

impl FromStr for Topic {
    type Err = ParseTopicError;

    fn from_str(s: &str) -> Result<Topic, ParseTopicError> {
        let topic = match s.split_once(':') {
            None => match s {
                "*" => Some(Topic::All),
                "tasks" => Some(Topic::Tasks),
                "chat" => Some(Topic::Chat),
                "presence" => Some(Topic::Presence),
                "files" => Some(Topic::Files),
                _ => None,
            },
            Some(("task", id)) => {
                return id.parse().map(Topic::Task).map_err(|e: crate::ParseIdError| ParseTopicError(e.to_string()));
            }
            Some(("chat", channel)) => {
                names::check_channel(channel).map_err(|e| ParseTopicError(format!("channel: {e}")))?;
                Some(Topic::Channel(channel.to_owned()))
            }
            Some(("inbox", agent)) => {
                names::check_agent(agent).map_err(|e| ParseTopicError(format!("agent: {e}")))?;
                Some(Topic::Inbox(names::canonical(agent)))
            }
            Some(_) => None,
        };
        topic.ok_or_else(|| {
            ParseTopicError(format!(
                "{:?} is not a topic (one of *, tasks, task:<id>, chat, chat:<channel>, presence, inbox:<agent>, files)",
                names::truncate(s, 80)
            ))
        })
    }
}

/// Reads topics as a request lists them: at most [`crate::grammar::MAX_TOPICS`], each with
/// spaces around it allowed.
pub fn parse_topics<S: AsRef<str>>(raw: &[S]) -> Result<Vec<Topic>, String> {
    let max = crate::grammar::MAX_TOPICS;
    if raw.len() > max {
        return Err(format!("at most {max} topics per request"));
    }
    raw.iter().map(|t| t.as_ref().trim_matches(' ').parse().map_err(|e: ParseTopicError| e.to_string())).collect()
}

/// The topics of a comma-separated list (`tasks,chat:general`); an empty list is `*`.
pub fn split_topics(list: &str) -> Vec<String> {
    if list.is_empty() { vec!["*".to_owned()] } else { list.split(',').map(str::to_owned).collect() }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::All => f.write_str("*"),
            Topic::Tasks => f.write_str("tasks"),
            Topic::Task(id) => write!(f, "task:{id}"),
            Topic::Chat => f.write_str("chat"),
            Topic::Channel(channel) => write!(f, "chat:{channel}"),
            Topic::Presence => f.write_str("presence"),
            Topic::Inbox(agent) => write!(f, "inbox:{agent}"),
            Topic::Files => f.write_str("files"),
        }
    }
}

impl Topic {
    /// Every form a topic takes, as `/capabilities` lists them (see [`Topic::form`]).
    pub const FORMS: [&'static str; 8] =
        ["*", "tasks", "task:<id>", "chat", "chat:<channel>", "presence", "inbox:<agent>", "files"];

    /// This topic's form in [`Topic::FORMS`] (`task:<id>` for `task:T-3`).
    pub fn form(&self) -> &'static str {
        match self {
            Topic::All => "*",
            Topic::Tasks => "tasks",
            Topic::Task(_) => "task:<id>",
            Topic::Chat => "chat",
            Topic::Channel(_) => "chat:<channel>",
            Topic::Presence => "presence",
            Topic::Inbox(_) => "inbox:<agent>",
            Topic::Files => "files",
        }
    }

    /// Whether a subscriber to this topic receives `event`.
    pub fn matches(&self, event: &Event) -> bool {
        *self == Topic::All || event.kind.topics().contains(self)
    }

    /// Whether a subscriber to this topic receives an event published on `topics` (the
    /// topics stored with the event, so that nothing has to be decoded to decide).
    pub fn covers(&self, topics: &[Topic]) -> bool {
        *self == Topic::All || topics.contains(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_normalize_and_print_back() {
        for (raw, printed) in
            [("*", "*"), ("task:12", "task:T-12"), ("task:t-3", "task:T-3"), ("inbox:link", "inbox:link")]
        {
            assert_eq!(raw.parse::<Topic>().unwrap().to_string(), printed);
        }
        for bad in ["", "task", "task:", "chat:has space", "inbox:-x", "bogus", "tasks:1"] {
            assert!(bad.parse::<Topic>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_form_is_listed_once_and_parses() {
        let examples = ["*", "tasks", "task:T-3", "chat", "chat:ops", "presence", "inbox:link", "files"];
        let forms: Vec<&str> = examples.iter().map(|t| t.parse::<Topic>().unwrap().form()).collect();
        assert_eq!(forms, Topic::FORMS);
    }
}
