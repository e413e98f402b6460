//! One decision in progress: what every rule needs (the model, the policy, the time) and the
//! events decided so far. The rules themselves are `impl Decider` blocks in `tasks`, `chat`
//! and `presence`.

use muster_protocol::{Agent, EventKind, Task, TaskId, Timestamp};

use super::error::DomainError;
use super::model::Model;
use super::policy::Policy;

/// A decision in progress: collects events, sees the model as it was before them.
pub(super) struct Decider<'a> {
    pub(super) model: &'a Model,
    pub(super) policy: &'a Policy,
    pub(super) now: Timestamp,
    pub(super) events: Vec<EventKind>,
}

impl<'a> Decider<'a> {
    pub(super) fn new(model: &'a Model, policy: &'a Policy, now: Timestamp) -> Decider<'a> {
        Decider { model, policy, now, events: Vec::new() }
    }

    /// The task with this id, or `not_found`.
    pub(super) fn task(&self, id: TaskId) -> Result<&'a Task, DomainError> {
        self.model
            .task(id)
            .map(|t| &**t)
            .ok_or_else(|| DomainError::NotFound { field: None, message: format!("task {id} does not exist") })
    }

    /// Contact with `agent`: announce it when it is new or coming back (not `active` a
    /// moment ago); `apply` records the time for every event the agent causes.
    pub(super) fn touch(&mut self, agent: &str) {
        let back = match self.model.agents.get(agent) {
            None => true,
            Some(a) => self.policy.status(a, self.now).is_away(),
        };
        if back {
            let agent = match self.model.agents.get(agent) {
                Some(a) => Agent {
                    last_seen_at: self.now,
                    status: a.status.clone().filter(|s| s != "offline"),
                    ..Agent::clone(a)
                },
                None => Agent::new(agent, self.now),
            };
            self.announce(agent);
        }
    }
}
