//! [`Caller`]: who is asking. Every operation takes one, and it is checked where the
//! operation runs, not by a convention of the transport: a path that forgets the caller does
//! not compile, because the writer and the model are reachable only through methods that
//! take one (`broker.rs`).
//!
//! Transports can make only two kinds, through [`Broker::authenticate`](super::Broker::authenticate)
//! and [`session::open`](super::session::open): an anonymous caller (no token) and an agent
//! identity, proven by a token where tokens are on, or named by its WebSocket session where
//! they are off. The system caller, for the broker's own timers and start-up, can be made
//! only inside this module's parent.

use muster_protocol::names::canonical;
use muster_protocol::{ErrorCode, Seq};

use super::error::ApiError;

use crate::auth::Identity;
use crate::core::{Actor, Command, validate_agent};

/// Who is asking, the agent the request says it acts as ([`Caller::declaring`]), and for a
/// read the last event it has seen ([`Caller::after`]).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    who: Who,
    /// The agent the request declares itself as (HTTP's `X-Agent` header): it acts as that
    /// agent, and naming another in its body is refused, as with a token.
    declared: Option<String>,
    after: Option<Seq>,
}

#[derive(Debug, Clone)]
enum Who {
    /// The broker itself: start-up and timers.
    System,
    /// No token, and no session agent: every request names its agent (tokens off), or is
    /// refused (tokens on).
    Anonymous,
    /// Tokens off: a WebSocket session that said hello as this agent. Requests act as it
    /// unless they name another.
    Session(String),
    /// Tokens on: proven by a token. Requests act as this agent only.
    Token(Identity),
}

impl Caller {
    /// The broker itself.
    pub(super) fn system() -> Caller {
        Caller::of(Who::System)
    }

    pub(super) fn anonymous() -> Caller {
        Caller::of(Who::Anonymous)
    }

    pub(super) fn session(agent: String) -> Caller {
        Caller::of(Who::Session(agent))
    }

    pub(super) fn token(identity: Identity) -> Caller {
        Caller::of(Who::Token(identity))
    }

    fn of(who: Who) -> Caller {
        Caller { who, declared: None, after: None }
    }

    /// The same caller, having seen event `seq` (`Muster-After`, or a WebSocket request's
    /// `after`): a read waits until the node it reaches has applied it.
    pub(crate) fn having_seen(self, seq: Seq) -> Caller {
        Caller { after: Some(seq), ..self }
    }

    /// The same caller, declaring that it acts as `agent` (HTTP's `X-Agent` header): its
    /// requests act as that agent when they name none, and one naming another agent is
    /// refused (403). A declaration is not a proof: with tokens on, the token decides, and
    /// a declaration of another agent than the token's is refused too.
    pub(crate) fn declaring(self, agent: String) -> Caller {
        Caller { declared: Some(agent), ..self }
    }

    /// The last event this caller says it has seen, if it said.
    pub(crate) fn after(&self) -> Option<Seq> {
        self.after
    }

    /// Whether the request declares an agent ([`Caller::declaring`]) or proves one (a
    /// token): something a web page of another site cannot make a browser send.
    pub(crate) fn declares_an_agent(&self) -> bool {
        self.declared.is_some() || matches!(self.who, Who::Token(_))
    }

    /// The identity a token proved, if any.
    pub(super) fn identity(&self) -> Option<&Identity> {
        match &self.who {
            Who::Token(identity) => Some(identity),
            _ => None,
        }
    }

    /// Whether this is the broker itself.
    pub(super) fn is_system(&self) -> bool {
        matches!(self.who, Who::System)
    }

    /// The agent a request acts as when it names none: the token's, the session's, or the
    /// one it declares.
    pub(crate) fn agent(&self) -> Option<&str> {
        match &self.who {
            Who::Session(agent) => Some(agent),
            Who::Token(identity) => Some(&identity.agent),
            Who::Anonymous => self.declared.as_deref(),
            Who::System => None,
        }
    }

    /// The agent an operation on an agent's own data (its inbox, its presence) is about:
    /// the one named, else [`Caller::agent`]; checked.
    pub(super) fn named(&self, named: Option<String>) -> Result<String, ApiError> {
        let agent = named
            .map(|n| canonical(&n))
            .or_else(|| self.agent().map(str::to_owned))
            .ok_or_else(|| ApiError::invalid("agent", "is required: say hello as an agent, or name it"))?;
        validate_agent("agent", &agent)?;
        Ok(agent)
    }

    /// The agent a request acts as: the one it names, else the one it declares, else
    /// [`Caller::agent`]. Naming another agent than the declared one is refused, and with a
    /// token, acting as another agent than the token's.
    pub(super) fn act_as(&self, named: Option<String>) -> Result<Option<String>, ApiError> {
        let named = named.map(|n| canonical(&n));
        let declared = self.declared.as_deref().map(canonical);
        if let (Some(named), Some(declared)) = (&named, &declared)
            && named != declared
        {
            return Err(ApiError::forbidden(
                "agent",
                format!("the X-Agent header says you are {declared:?}: you may not act as {named:?}"),
            ));
        }
        match (named.or(declared), &self.who) {
            (Some(named), Who::Token(identity)) if named != identity.agent => {
                Err(impersonation(&identity.agent, &named))
            }
            (Some(named), _) => Ok(Some(named)),
            (None, _) => Ok(self.agent().map(str::to_owned)),
        }
    }

    /// With tokens on, only a person's token (the dashboard's) takes a claim away from
    /// another agent (`force`); an agent that needs a task another holds asks in chat.
    pub(super) fn may_force(&self) -> bool {
        !matches!(&self.who, Who::Token(identity) if !identity.human)
    }

    /// Whether the caller may work in `workspace`: with tokens on, one its token names.
    pub(crate) fn works_in(&self, workspace: &str) -> bool {
        self.identity().is_none_or(|identity| identity.works_in(workspace))
    }

    /// With tokens on, only a person's token that works in `workspace` (names it, or `*`)
    /// adds or removes it.
    pub(crate) fn may_change_workspace(&self, workspace: &str) -> Result<(), ApiError> {
        match &self.who {
            Who::Token(identity) if !identity.human => Err(ApiError::forbidden(
                "workspace",
                format!(
                    "only a person's token (muster token add NAME --human) adds or removes workspaces, and {}'s is \
                     an agent's",
                    identity.agent
                ),
            )),
            Who::Token(identity) if !identity.works_in(workspace) => Err(ApiError::forbidden(
                "workspace",
                format!(
                    "{}'s token works in {} only, not in workspace {workspace}",
                    identity.agent,
                    identity.workspaces()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// With tokens on, an inbox is read, acknowledged and followed by its owner's token or a
    /// person's only; `field` names the request's field in the refusal.
    pub(super) fn may_read_inbox(&self, agent: &str, field: &str) -> Result<(), ApiError> {
        match &self.who {
            Who::Token(identity) if identity.agent != agent && !identity.human => Err(ApiError::forbidden(
                field,
                format!(
                    "{agent}'s inbox is {agent}'s: only its own token or a person's (the dashboard's) reads, \
                     acknowledges or follows it, and yours is {}'s",
                    identity.agent
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Binds a command to this caller: fills in the acting agent where the command names
    /// none (see [`Command::actor`]); refuses one that names another agent than the caller
    /// declares or proves.
    pub(super) fn bind(&self, cmd: &mut Command) -> Result<(), ApiError> {
        match cmd.actor() {
            Actor::Agent(slot) => *slot = self.act_as(slot.take())?,
            Actor::Sender(from) => {
                let named = (!from.is_empty()).then(|| std::mem::take(from));
                *from = self.act_as(named).map_err(|e| field(e, "from"))?.unwrap_or_default();
            }
            Actor::Inbox(agent) => self.may_read_inbox(agent, "agent")?,
            Actor::Named(agent) => {
                self.act_as(Some(agent.to_owned()))?;
            }
            Actor::System if self.is_system() => {}
            Actor::System => return Err(ApiError::forbidden("op", "only the broker itself runs its timers")),
        }
        Ok(())
    }
}

fn impersonation(me: &str, named: &str) -> ApiError {
    ApiError::forbidden("agent", format!("your token is {me}'s: you may not act as {named}"))
}

fn field(mut e: ApiError, name: &str) -> ApiError {
    if e.0.code == ErrorCode::Forbidden {
        e.0.field = Some(name.to_owned());
    }
    e
}

#[cfg(test)]
mod tests {
    use muster_protocol::{PostMessage, TaskAction, TaskId};

    use super::*;

    fn link() -> Caller {
        Caller::token(Identity::new("link", false))
    }

    #[test]
    fn a_token_caller_acts_as_its_agent_and_never_as_another() {
        let id: TaskId = "T-1".parse().unwrap_or(TaskId(1));
        let mut claim = Command::Claim { id, action: TaskAction::default() };
        assert_eq!(link().bind(&mut claim), Ok(()));
        let Command::Claim { action, .. } = claim else { unreachable!() };
        assert_eq!(action.agent.as_deref(), Some("link"));

        let mut other = Command::Claim { id, action: TaskAction { agent: Some("zelda".into()), ..Default::default() } };
        let refused = link().bind(&mut other).err().map(|e| e.0);
        assert!(refused.is_some_and(|e| e.code == ErrorCode::Forbidden && e.message.contains("link's")));

        let mut unnamed = Command::PostMessage(PostMessage { content: "hi".into(), ..Default::default() });
        assert_eq!(link().bind(&mut unnamed), Ok(()));
        assert!(matches!(unnamed, Command::PostMessage(p) if p.from == "link"), "a post naming nobody is the token's");
        let mut forged = Command::PostMessage(PostMessage { from: "zelda".into(), ..Default::default() });
        assert!(link().bind(&mut forged).is_err());
        assert!(link().bind(&mut Command::Tick).is_err(), "only the system runs timers");
    }

    #[test]
    fn without_tokens_a_request_names_whom_it_likes_and_a_session_fills_in_its_own() {
        let mut post = Command::PostMessage(PostMessage { from: "zelda".into(), ..Default::default() });
        assert_eq!(Caller::anonymous().bind(&mut post), Ok(()));
        let mut unnamed = Command::ClaimNext { agent: None };
        assert_eq!(Caller::session("kai".into()).bind(&mut unnamed), Ok(()));
        assert_eq!(unnamed, Command::ClaimNext { agent: Some("kai".into()) });
        assert_eq!(Caller::system().bind(&mut Command::Tick), Ok(()));
    }
}
