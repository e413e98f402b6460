//! WebSocket sessions: `hello` opens one (the caller proven, the agent present, the
//! subscription made and the resume decided), and closing it lets the agent go.

use std::sync::Arc;

use muster_protocol::ErrorCode;
use muster_protocol::ws::Hello;

use super::broker::Broker;
use super::caller::Caller;
use super::error::ApiError;
use super::feed::{Begin, Feed, Start, parse_topics, subscribe};
use crate::core::{Command, validate_agent};
use crate::hub::{Outbox, Subscription};

/// An open WebSocket session: its agent is present (and its claims held) until
/// [`close`]. Only [`open`] makes one.
#[derive(Debug)]
pub(crate) struct Session {
    caller: Caller,
    agent: Option<String>,
}

impl Session {
    /// Who the session's requests come from.
    pub(crate) fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The session's agent (`None` for an observer).
    pub(crate) fn agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }
}

/// What `hello` opened.
pub(crate) struct Opened {
    /// The session (close it with [`close`]).
    pub(crate) session: Session,
    /// The connection's place in the hub (dropping it unsubscribes).
    pub(crate) subscription: Subscription,
    /// What to send: the missed events, then live ones.
    pub(crate) feed: Feed,
    /// How the feed started (the welcome's `epoch`, `head`, `recovered`, `topics`).
    pub(crate) start: Start,
}

/// `hello`: proves the caller by the token it carries (tokens on), opens a session as
/// its agent (an observer without one), subscribes `outbox` to its topics and decides
/// the resume. `chunk`: events read from the log per step of the replay.
pub(crate) async fn hello(
    broker: &Broker,
    hello: Hello,
    outbox: Arc<Outbox>,
    chunk: usize,
) -> Result<Opened, ApiError> {
    let caller = broker.authenticate(hello.token.as_ref().map(|t| t.expose()))?;
    parse_topics(&hello.topics)?;
    // An archived workspace has no sessions: nothing happens there any more.
    if broker.archived() {
        broker.check(&caller)?;
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("workspace {} is archived: it takes no session (its data are read over HTTP)", broker.workspace()),
        ));
    }
    let session = open(broker, caller, hello.agent, hello.human).await?;
    let begin = match hello.since {
        Some(since) => Begin::Resume { since, epoch: hello.epoch },
        None => Begin::Live,
    };
    match subscribe(broker, session.caller(), outbox, &hello.topics, begin, chunk).await {
        Ok((subscription, feed, start)) => Ok(Opened { session, subscription, feed, start }),
        Err(error) => {
            close(broker, session).await;
            Err(error)
        }
    }
}

/// Opens a WebSocket session for `caller`, as `agent` (an observer without one);
/// `human` marks a person's session. With tokens on, the caller must have one, and may
/// open a session only as its own agent; a person's token makes a named session a
/// person's.
pub(crate) async fn open(
    broker: &Broker,
    caller: Caller,
    agent: Option<String>,
    human: bool,
) -> Result<Session, ApiError> {
    broker.check(&caller)?;
    let agent = agent.map(|a| muster_protocol::names::canonical(&a));
    let mut human = human;
    if let Some(identity) = caller.identity() {
        if let Some(agent) = agent.as_ref().filter(|a| **a != identity.agent) {
            return Err(ApiError::forbidden(
                "agent",
                format!("your token is {}'s: you may not act as {agent}", identity.agent),
            ));
        }
        if human && !identity.human {
            return Err(ApiError::forbidden(
                "human",
                format!(
                    "{}'s token is an agent's: only a token issued with --human opens a person's session",
                    identity.agent
                ),
            ));
        }
        // A person's token makes a named session a person's; unnamed, it stays an observer.
        human |= identity.human && agent.is_some();
    }
    if human && agent.is_none() {
        return Err(ApiError::invalid("human", "a human session needs a name: set agent"));
    }
    let Some(agent) = agent else { return Ok(Session { caller, agent: None }) };
    validate_agent("agent", &agent)?;
    let node = broker.cluster().map(|c| c.instance().to_owned());
    broker.write(&caller, Command::Connect { agent: agent.clone(), human, node }, None).await?;
    let caller = if caller.identity().is_some() { caller } else { Caller::session(agent.clone()) };
    Ok(Session { caller, agent: Some(agent) })
}

/// Closes a session: if it was its agent's last, the agent shows offline and its claims
/// wait out the grace. (Failing here, when the broker is stopping, is covered by the
/// reset at the next start.)
pub(crate) async fn close(broker: &Broker, session: Session) {
    if let Some(agent) = session.agent {
        // The broker's own bookkeeping: even a revoked token's session is closed.
        let node = broker.cluster().map(|c| c.instance().to_owned());
        let _ = broker.write(&Caller::system(), Command::Disconnect { agent, node }, None).await;
    }
}
