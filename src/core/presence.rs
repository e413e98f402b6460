//! Presence: sessions opening and closing, heartbeats, and the presence view (status, last
//! seen, current task, stuck) as a user sees it at a given moment.

use muster_protocol::{Agent, EventKind, Heartbeat, Presence, TaskStatus, Timestamp, last_seen_text};

use super::decider::Decider;
use super::error::DomainError;
use super::model::Model;
use super::policy::{Policy, silence};
use super::rules::{validate_agent, validate_note, validate_status};

/// The presence view of one agent at `now`.
pub fn presence(model: &Model, policy: &Policy, agent: &Agent, now: Timestamp) -> Presence {
    let mut held: Vec<_> = model.held_by(&agent.name).collect();
    // The task an agent is on: a `doing` one first, then the oldest it holds.
    held.sort_by_key(|t| (t.status != TaskStatus::Doing, t.id));
    let task = held.first().map(|t| t.id);
    Presence {
        name: agent.name.clone(),
        status: policy.status(agent, now),
        last_seen: last_seen_text(agent.last_seen_at, now),
        last_seen_at: agent.last_seen_at,
        connections: agent.connections,
        task,
        note: agent.note.clone(),
        stuck: stuck(model, policy, agent, now),
        claims_expire_at: if held.is_empty() { None } else { policy.claims_expire_at(agent) },
        human: agent.human,
    }
}

/// Whether `agent` is stuck at `now`: holding a `doing` task and silent past the threshold.
fn stuck(model: &Model, policy: &Policy, agent: &Agent, now: Timestamp) -> bool {
    silence(agent.last_seen_at, now) >= policy.stuck_after
        && model.held_by(&agent.name).any(|t| t.status == TaskStatus::Doing)
}

/// `record` with what presence shows of it at `now` (`shown`, `stuck`) written in.
pub(super) fn announced(model: &Model, policy: &Policy, mut record: Agent, now: Timestamp) -> Agent {
    record.shown = Some(policy.status(&record, now));
    record.stuck = stuck(model, policy, &record, now);
    record
}

impl Decider<'_> {
    /// A heartbeat: the agent is here, with its own status (`active` clears it) and note.
    pub(super) fn heartbeat(&mut self, name: &str, h: &Heartbeat) -> Result<Agent, DomainError> {
        validate_agent("agent", name)?;
        if let Some(status) = &h.status {
            validate_status(status)?;
        }
        if let Some(Some(note)) = &h.note {
            validate_note(note)?;
        }
        let mut agent = self.record(name);
        agent.last_seen_at = self.now;
        match h.status.as_deref() {
            Some("active") => agent.status = None,
            Some(status) => agent.status = Some(status.to_owned()),
            // A heartbeat without a status after signing off means the agent is back.
            None => agent.status = agent.status.filter(|s| s != "offline"),
        }
        if let Some(note) = &h.note {
            agent.note = note.clone().filter(|n| !n.is_empty());
        }
        let agent = self.announce(agent);
        Ok(agent)
    }

    /// A session of `name` opened (on cluster node `node`): it is present (and its claims
    /// held) until it closes.
    pub(super) fn connect(&mut self, name: &str, human: bool, node: Option<&str>) -> Result<Agent, DomainError> {
        validate_agent("agent", name)?;
        let mut record = self.record(name);
        record.connections += 1;
        if let Some(node) = node {
            *record.nodes.entry(node.to_owned()).or_default() += 1;
        }
        record.human |= human;
        record.last_seen_at = self.now;
        record.left_at = None;
        record.status = record.status.filter(|s| s != "offline");
        Ok(self.announce(record))
    }

    /// A session of `name` closed; after its last one, it shows offline and its claims wait
    /// out the grace.
    pub(super) fn disconnect(&mut self, name: &str, node: Option<&str>) {
        if let Some(a) = self.model.agents.get(name).filter(|a| a.connections > 0) {
            let mut record = Agent::clone(a);
            record.connections -= 1;
            if let Some(node) = node
                && let Some(n) = record.nodes.get_mut(node)
            {
                *n -= 1;
                if *n == 0 {
                    record.nodes.remove(node);
                }
            }
            if record.connections == 0 {
                record.left_at = Some(self.now);
            }
            self.announce(record);
        }
    }

    /// Cluster node `node` stopped: the sessions it held are closed; an agent left with none
    /// shows offline, and its claims wait out the grace.
    pub(super) fn reset_node(&mut self, node: &str) {
        let held: Vec<Agent> =
            self.model.agents.values().filter(|a| a.nodes.contains_key(node)).map(|a| Agent::clone(a)).collect();
        for mut record in held {
            let n = record.nodes.remove(node).unwrap_or(0);
            record.connections = record.connections.saturating_sub(n);
            if record.connections == 0 {
                record.left_at = Some(self.now);
            }
            self.announce(record);
        }
    }

    /// The broker (re)started: no session survived.
    pub(super) fn reset_connections(&mut self) {
        for a in self.model.agents.values().filter(|a| a.connections > 0) {
            let nodes = Default::default();
            self.announce(Agent { connections: 0, nodes, left_at: Some(self.now), ..Agent::clone(a) });
        }
    }

    /// A tick: every agent whose presence changed by silence alone since it was last
    /// announced (went idle, offline or stuck, or came back) is announced now, once.
    pub(super) fn announce_presence_changes(&mut self) {
        let changed: Vec<Agent> = self
            .model
            .agents
            .values()
            .filter(|a| {
                a.shown.as_ref() != Some(&self.policy.status(a, self.now))
                    || a.stuck != stuck(self.model, self.policy, a, self.now)
            })
            .map(|a| Agent::clone(a))
            .collect();
        for agent in changed {
            self.announce(agent);
        }
    }

    /// Records `record` as changed, with what presence shows of it now: a
    /// `presence.changed` event.
    pub(super) fn announce(&mut self, record: Agent) -> Agent {
        let record = announced(self.model, self.policy, record, self.now);
        let holds = self.model.held_by(&record.name).next().is_some();
        let claims_expire_at = if holds { self.policy.claims_expire_at(&record) } else { None };
        self.events.push(EventKind::PresenceChanged { agent: record.clone(), claims_expire_at });
        record
    }

    /// The agent's record, or a new one seen now.
    fn record(&self, name: &str) -> Agent {
        match self.model.agents.get(name) {
            Some(a) => Agent::clone(a),
            None => Agent::new(name, self.now),
        }
    }
}
