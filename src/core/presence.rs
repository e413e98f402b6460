//! Presence as users see it: derived from the last contact and the time of the question.

use std::time::Duration;

use muster_protocol::{Agent, Presence, TaskStatus, Timestamp};
use serde::{Deserialize, Serialize};

use super::State;

/// The thresholds that turn "last seen" into a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Policy {
    /// Silent this long: `idle`.
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// Silent this long: `offline`.
    #[serde(with = "humantime_serde")]
    pub offline_after: Duration,
    /// Holding a `doing` task and silent this long: `stuck`.
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            idle_after: Duration::from_secs(5 * 60),
            offline_after: Duration::from_secs(30 * 60),
            stuck_after: Duration::from_secs(20 * 60),
        }
    }
}

/// The time since `at`, as seen at `now`; zero if `at` is in the future.
fn silence(at: Timestamp, now: Timestamp) -> Duration {
    (now - at).to_std().unwrap_or_default()
}

/// `2s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn last_seen_text(at: Timestamp, now: Timestamp) -> String {
    let s = silence(at, now).as_secs();
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

impl Policy {
    /// The status an agent shows at `now`: its own status (or `active`) while it is in
    /// contact, then `idle`, then `offline` as the silence grows.
    pub fn status(&self, agent: &Agent, connections: u32, now: Timestamp) -> String {
        let silent = silence(agent.last_seen_at, now);
        if connections > 0 || silent < self.idle_after {
            agent.status.clone().unwrap_or_else(|| "active".to_owned())
        } else if silent < self.offline_after {
            "idle".to_owned()
        } else {
            "offline".to_owned()
        }
    }
}

/// The presence view of one agent at `now`.
pub fn presence(
    state: &State,
    policy: &Policy,
    agent: &Agent,
    connections: u32,
    now: Timestamp,
) -> Presence {
    let mut held: Vec<_> = state.held_by(&agent.name).collect();
    // The task an agent is on: a `doing` one first, then the oldest it holds.
    held.sort_by_key(|t| (t.status != TaskStatus::Doing, t.id));
    let task = held.first().map(|t| t.id);
    let doing = held.iter().any(|t| t.status == TaskStatus::Doing);
    Presence {
        name: agent.name.clone(),
        status: policy.status(agent, connections, now),
        last_seen: last_seen_text(agent.last_seen_at, now),
        last_seen_at: agent.last_seen_at,
        connections,
        task,
        note: agent.note.clone(),
        stuck: doing && silence(agent.last_seen_at, now) >= policy.stuck_after,
    }
}
