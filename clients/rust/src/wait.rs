//! Blocking until something happens: a message for an agent, a change to a task (or a task
//! reaching a status), a teammate stuck, any event on a topic. What `muster wait` and the
//! MCP tool `wait_for` do, written once.
//!
//! [`Client::wait_for`](crate::Client::wait_for) listens first, subscribes, then looks at the
//! current state (an unread message, the task's status, a stuck agent): an event that
//! happens between two of those steps is still seen, and one that happened before is found
//! in the state.

use muster_protocol::{ChatMessage, Entity, Event, EventKind, Presence, Task, TaskId, TaskStatus, Topic};
use serde::Serialize;

/// What to wait for; any one of the conditions ends the wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wait {
    /// A message that mentions this agent or is addressed to it (an unread one counts).
    pub mention: Option<String>,
    /// A change to this task, or a comment on it.
    pub task: Option<TaskId>,
    /// With `task`: only once it has this status (already having it counts).
    pub until: Option<TaskStatus>,
    /// An agent stuck: holding a `doing` task and silent past the broker's threshold (one
    /// stuck already counts).
    pub stuck: bool,
    /// Any event on these topics.
    pub topics: Vec<Topic>,
}

/// What ended a wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Waited {
    /// An unread message that was already in the inbox.
    Message(ChatMessage),
    /// The task already had the status waited for.
    Task(Task),
    /// An agent was already stuck.
    Agent(Presence),
    /// The event that happened.
    Event(Box<Event>),
}

impl Wait {
    /// Whether there is nothing to wait for.
    pub fn is_empty(&self) -> bool {
        self.mention.is_none() && self.task.is_none() && !self.stuck && self.topics.is_empty()
    }

    /// The topics the wait needs to receive.
    pub fn topics(&self) -> Vec<Topic> {
        let mut topics = self.topics.clone();
        if let Some(me) = &self.mention {
            topics.push(Topic::Inbox(me.clone()));
        }
        if let Some(id) = self.task {
            topics.push(Topic::Task(id));
        }
        if self.stuck {
            topics.push(Topic::Presence);
        }
        topics
    }

    /// Whether `event` is one this wait is for.
    pub fn wanted(&self, event: &Event) -> bool {
        let mention = self.mention.as_deref().is_some_and(
            |me| matches!(event.kind.entity(), Entity::Message(message) if message.recipients().contains(&me)),
        );
        let changed = match (self.task, event.kind.task()) {
            (Some(id), Some(t)) => t.id == id && self.until.is_none_or(|s| t.status == s),
            // A comment is news about the task, though not a change of status.
            (Some(id), None) => {
                self.until.is_none()
                    && matches!(&event.kind, EventKind::TaskCommented { message } if message.task == Some(id))
            }
            _ => false,
        };
        let stuck = self.stuck && matches!(&event.kind, EventKind::PresenceChanged { agent, .. } if agent.stuck);
        mention || changed || stuck || self.topics.iter().any(|t| t.matches(event))
    }
}

#[cfg(test)]
mod tests {
    use muster_protocol::{MessageId, Timestamp};

    use super::*;

    fn message(from: &str, to: Option<&str>, mentions: &[&str]) -> Event {
        let message = ChatMessage {
            id: MessageId(1),
            seq: 5,
            channel: "general".into(),
            from: from.into(),
            content: String::new(),
            mentions: mentions.iter().map(|m| (*m).to_owned()).collect(),
            to: to.map(str::to_owned),
            reply_to: None,
            at: Timestamp::default(),
            task: None,
        };
        Event { seq: 5, at: Timestamp::default(), kind: EventKind::ChatMessage { message } }
    }

    #[test]
    fn a_mention_or_a_direct_message_wakes_its_recipient_only() {
        let wait = Wait { mention: Some("link".into()), ..Wait::default() };
        assert!(wait.wanted(&message("kai", None, &["link"])));
        assert!(wait.wanted(&message("kai", Some("link"), &[])));
        assert!(!wait.wanted(&message("kai", None, &["zelda"])));
        assert!(!wait.wanted(&message("link", None, &["link"])), "not by its own message");
        assert_eq!(wait.topics(), [Topic::Inbox("link".into())]);
        let any_chat = Wait { topics: vec![Topic::Chat], ..Wait::default() };
        assert!(any_chat.wanted(&message("kai", None, &[])));
        assert!(Wait::default().is_empty());
    }

    #[test]
    fn a_comment_wakes_a_wait_on_its_task_and_the_agents_it_mentions() {
        let Event { seq, at, kind: EventKind::ChatMessage { mut message } } = message("kai", None, &["link"]) else {
            unreachable!()
        };
        message.task = Some(TaskId(3));
        message.channel = "#T-3".into();
        let comment = Event { seq, at, kind: EventKind::TaskCommented { message } };
        assert!(Wait { task: Some(TaskId(3)), ..Wait::default() }.wanted(&comment));
        assert!(!Wait { task: Some(TaskId(4)), ..Wait::default() }.wanted(&comment));
        let until_done = Wait { task: Some(TaskId(3)), until: Some(TaskStatus::Done), ..Wait::default() };
        assert!(!until_done.wanted(&comment), "a comment does not change the status waited for");
        assert!(Wait { mention: Some("link".into()), ..Wait::default() }.wanted(&comment));
        assert!(Wait { topics: vec![Topic::Task(TaskId(3))], ..Wait::default() }.wanted(&comment));
    }
}
