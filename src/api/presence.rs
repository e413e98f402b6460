//! Presence operations: who is here (as of now, by the broker's clock), and heartbeats.

use muster_protocol::ws::PresenceSetArgs;
use muster_protocol::{Agent, Presence, PresenceEnvelope, PresenceList};

use super::broker::{Broker, Written};
use super::caller::Caller;
use super::error::ApiError;
use crate::core::{Command, Reply, presence, validate_agent};
use crate::sequencer::IdempotencyKey;

/// Every agent seen, by name, with its status as of now.
pub(crate) fn list(broker: &Broker, caller: &Caller) -> Result<PresenceList, ApiError> {
    let snapshot = broker.read(caller)?;
    let now = broker.now();
    let model = &snapshot.model;
    Ok(PresenceList { agents: model.agents.values().map(|a| presence(model, &broker.policy, a, now)).collect() })
}

/// One agent, as of now.
pub(crate) fn get(broker: &Broker, caller: &Caller, name: &str) -> Result<PresenceEnvelope, ApiError> {
    validate_agent("agent", name)?;
    let name = &muster_protocol::names::canonical(name);
    let snapshot = broker.read(caller)?;
    match snapshot.model.agents.get(name) {
        Some(agent) => Ok(PresenceEnvelope { agent: view(broker, caller, agent)? }),
        None => Err(ApiError::not_found(format!("agent {name} has not been seen"))),
    }
}

/// A heartbeat for an agent (the caller's own by default): it is here, with an optional
/// status (`busy`; `active` clears it) and note.
pub(crate) async fn heartbeat(
    broker: &Broker,
    caller: &Caller,
    args: PresenceSetArgs,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<PresenceEnvelope>, ApiError> {
    let agent = caller.named(args.agent)?;
    let written = broker.write(caller, Command::Heartbeat { agent, heartbeat: args.heartbeat }, idempotency).await?;
    let Written { value, replayed } = written.map(|reply| match reply {
        Reply::Agent(agent) => Some(agent),
        _ => None,
    })?;
    Ok(Written { value: PresenceEnvelope { agent: view(broker, caller, &value)? }, replayed })
}

fn view(broker: &Broker, caller: &Caller, agent: &Agent) -> Result<Presence, ApiError> {
    let snapshot = broker.read(caller)?;
    Ok(presence(&snapshot.model, &broker.policy, agent, broker.now()))
}
