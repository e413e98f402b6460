//! The operations of the API as data in, data out: what the WebSocket transport runs for
//! each request. The `data` of a reply has the shape of the HTTP response body.

use chrono::Utc;
use muster_protocol::ws::Op;
use muster_protocol::{Cursor, ErrorCode, MaybeTaskEnvelope, MessageEnvelope, PresenceEnvelope, TaskEnvelope};
use serde_json::{Value, json};

use super::{ApiError, AppState, chat};
use crate::core::{Command, Reply, next_for, presence, validate_agent};

fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// The acting agent: the one named in the request, else the session's.
fn actor(named: Option<String>, session: Option<&str>) -> Option<String> {
    named.or_else(|| session.map(str::to_owned))
}

fn require(agent: Option<String>) -> Result<String, ApiError> {
    let agent = agent.ok_or_else(|| ApiError::invalid("agent", "is required: say hello as an agent, or name it"))?;
    validate_agent("agent", &agent)?;
    Ok(agent)
}

/// Submits a command; the reply as response data.
async fn submit(state: &AppState, cmd: Command) -> Result<Value, ApiError> {
    let committed = state.writer.submit(cmd, None).await?;
    match committed.reply {
        Reply::Task(task) => to_value(&TaskEnvelope { task }),
        Reply::MaybeTask(task) => to_value(&MaybeTaskEnvelope { task }),
        Reply::Message(message) => to_value(&MessageEnvelope { message }),
        Reply::Agent(agent) => {
            let snapshot = state.reader.snapshot();
            let view = presence(&snapshot.state, &state.config.policy(), &agent, Utc::now());
            to_value(&PresenceEnvelope { agent: view })
        }
        Reply::Cursor { agent, seq } => to_value(&Cursor { agent, cursor: seq }),
        Reply::Done => Ok(json!({})),
    }
}

/// Runs one operation for a session whose agent is `session` (if any).
pub async fn execute(state: &AppState, op: Op, session: Option<&str>) -> Result<Value, ApiError> {
    match op {
        Op::Hello(_) | Op::Subscribe(_) | Op::Unsubscribe(_) => {
            Err(ApiError::invalid("op", "handled by the connection, not here"))
        }
        Op::TaskCreate(mut create) => {
            create.agent = actor(create.agent, session);
            submit(state, Command::CreateTask(create)).await
        }
        Op::TaskUpdate(mut args) => {
            args.update.agent = actor(args.update.agent, session);
            submit(state, Command::UpdateTask { id: args.task, update: args.update }).await
        }
        Op::TaskClaim(mut args) => {
            args.action.agent = actor(args.action.agent, session);
            submit(state, Command::Claim { id: args.task, action: args.action }).await
        }
        Op::TaskRelease(mut args) => {
            args.action.agent = actor(args.action.agent, session);
            submit(state, Command::Release { id: args.task, action: args.action }).await
        }
        Op::TaskComplete(mut args) => {
            args.action.agent = actor(args.action.agent, session);
            submit(state, Command::Complete { id: args.task, action: args.action }).await
        }
        Op::TaskNext(args) => {
            let agent = actor(args.agent, session);
            if args.claim {
                return submit(state, Command::ClaimNext { agent }).await;
            }
            let agent = require(agent)?;
            let snapshot = state.reader.snapshot();
            to_value(&MaybeTaskEnvelope { task: next_for(&snapshot.state, &agent).cloned() })
        }
        Op::TaskGet(r) => {
            let snapshot = state.reader.snapshot();
            match snapshot.state.task(r.task) {
                Some(task) => to_value(&TaskEnvelope { task: muster_protocol::Task::clone(task) }),
                None => Err(ApiError::not_found(format!("task {} does not exist", r.task))),
            }
        }
        Op::TaskList(filter) => {
            let snapshot = state.reader.snapshot();
            to_value(&super::tasks::Tasks { tasks: super::tasks::filtered(&snapshot.state, &filter) })
        }
        Op::ChatPost(mut post) => {
            if post.from.is_empty() {
                post.from = session.map(str::to_owned).unwrap_or_default();
            }
            submit(state, Command::PostMessage(post)).await
        }
        Op::ChatRead(args) => {
            let body = chat::read(state, args.channel, args.since, args.before, args.limit).await?;
            serde_json::from_slice(&body).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
        }
        Op::ChatChannels(_) => to_value(&chat::channel_list(state)),
        Op::InboxRead(args) => {
            let agent = require(actor(args.agent, session))?;
            let body = chat::read_inbox(state, agent, args.all, args.limit).await?;
            serde_json::from_slice(&body).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
        }
        Op::InboxAck(args) => {
            let agent = require(actor(args.agent, session))?;
            submit(state, Command::AckInbox { agent, seq: args.ack.seq }).await
        }
        Op::PresenceList(_) => to_value(&super::presence::everyone(state)),
        Op::PresenceSet(args) => {
            let agent = require(actor(args.agent, session))?;
            submit(state, Command::Heartbeat { agent, heartbeat: args.heartbeat }).await
        }
    }
}
