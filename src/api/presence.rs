//! Presence operations: who is here (as of now, by the broker's clock), and heartbeats.

use muster_protocol::{Agent, Presence, PresenceEnvelope, PresenceList};
use muster_protocol::{PageArgs, PresenceSetArgs};

use super::broker::{Broker, Written};
use super::caller::Caller;
use super::error::ApiError;
use super::page::{self, List};
use crate::core::{Command, Reply, presence, validate_agent};
use crate::sequencer::IdempotencyKey;

/// A page of the agents seen, by name, with their status as of now.
pub(crate) async fn list(broker: &Broker, caller: &Caller, args: PageArgs) -> Result<PresenceList, ApiError> {
    let snapshot = broker.read_fresh(caller).await?;
    let (now, model) = (broker.now(), &snapshot.model);
    let (agents, next) = page::by_name(&model.agents, List::Agents, page::AGENTS, &args)?;
    let agents = agents.into_iter().map(|a| presence(model, &broker.policy, a, now)).collect();
    Ok(PresenceList { agents, next })
}

/// One agent, as of now.
pub(crate) async fn get(broker: &Broker, caller: &Caller, name: &str) -> Result<PresenceEnvelope, ApiError> {
    validate_agent("agent", name)?;
    let name = &muster_protocol::names::canonical(name);
    let snapshot = broker.read_fresh(caller).await?;
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
