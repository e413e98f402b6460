//! Chat rules: posting (channels, direct messages, mentions) and inbox read cursors.

use muster_protocol::{ChatMessage, EventKind, MessageId, PostMessage, Seq};

use super::decider::Decider;
use super::error::DomainError;
use super::rules::{parse_mentions, validate_agent, validate_channel, validate_text};

/// Why a comment (a post with `task`) is refused a `channel` or `to`.
const NOT_WITH_TASK: &str = "a comment goes to its task's thread: not with task";

impl Decider<'_> {
    /// Posts a message: to `task`'s thread (a comment), else to `channel`, else to the direct
    /// channel of `from` and `to`, else to `general`. Its mentions and `to` reach those
    /// agents' inboxes.
    pub(super) fn post(&mut self, p: &PostMessage) -> Result<ChatMessage, DomainError> {
        validate_agent("from", &p.from)?;
        if p.content.trim().is_empty() {
            return Err(DomainError::invalid("content", "must not be empty"));
        }
        validate_text("content", &p.content)?;
        if let Some(to) = &p.to {
            validate_agent("to", to)?;
        }
        let channel = match (p.task, &p.channel, &p.to) {
            (Some(task), None, None) => {
                if !self.model.has_task(task) {
                    return Err(DomainError::missing("task", format!("task {task} does not exist")));
                }
                format!("#{task}")
            }
            (Some(_), Some(_), _) => return Err(DomainError::invalid("channel", NOT_WITH_TASK)),
            (Some(_), None, Some(_)) => return Err(DomainError::invalid("to", NOT_WITH_TASK)),
            (None, Some(channel), _) => {
                validate_channel(channel)?;
                channel.clone()
            }
            (None, None, Some(to)) => {
                let (a, b) = if p.from <= *to { (&p.from, to) } else { (to, &p.from) };
                let channel = format!("dm:{a},{b}");
                validate_channel(&channel)?;
                channel
            }
            (None, None, None) => "general".to_owned(),
        };
        if let Some(reply_to) = p.reply_to
            && reply_to.0 > self.model.last_message
        {
            return Err(DomainError::missing("replyTo", format!("message {reply_to} does not exist")));
        }
        self.touch(&p.from);
        let message = ChatMessage {
            id: MessageId(self.model.last_message + 1),
            seq: self.model.head + self.events.len() as Seq + 1,
            channel,
            from: p.from.clone(),
            content: p.content.clone(),
            mentions: parse_mentions(&p.content),
            to: p.to.clone(),
            reply_to: p.reply_to,
            at: self.now,
            task: p.task,
        };
        self.events.push(match p.task {
            Some(_) => EventKind::TaskCommented { message: message.clone() },
            None => EventKind::ChatMessage { message: message.clone() },
        });
        Ok(message)
    }

    /// Moves `agent`'s inbox cursor forward to `seq` (default: the head); returns the cursor.
    pub(super) fn ack(&mut self, agent: &str, seq: Option<Seq>) -> Result<Seq, DomainError> {
        validate_agent("agent", agent)?;
        let seq = seq.unwrap_or(self.model.head);
        if seq > self.model.head {
            // Well-formed, but not an event of this broker (yet): a conflict with its state.
            return Err(DomainError::Conflict {
                field: Some("seq".to_owned()),
                message: format!("seq: {seq} is beyond the last event ({})", self.model.head),
            });
        }
        self.touch(agent);
        let cursor = self.model.cursor(agent);
        if seq > cursor {
            self.events.push(EventKind::InboxAcked { agent: agent.to_owned(), seq });
        }
        Ok(seq.max(cursor))
    }
}
