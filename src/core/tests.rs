//! Rules of the domain, checked without a runtime: examples first, then properties over
//! random interleavings of commands by several agents.

use std::collections::HashMap;
use std::time::Duration;

use muster_protocol::{
    CreateTask, Event, EventKind, Heartbeat, PostMessage, Priority, ReleaseReason, TaskAction, TaskId, TaskStatus,
    Timestamp, UpdateTask,
};
use proptest::prelude::*;

use super::*;

/// A broker without IO: decides, stamps and applies, keeping the log.
struct Sim {
    state: Model,
    policy: Policy,
    now: Timestamp,
    log: Vec<Event>,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            state: Model::default(),
            policy: Policy::default(),
            now: "2026-11-25T10:00:00Z".parse().unwrap(),
            log: Vec::new(),
        }
    }

    fn run(&mut self, cmd: Command) -> Result<Reply, DomainError> {
        let decision = decide(&self.state, &self.policy, &cmd, self.now)?;
        for kind in decision.events {
            let event = Event { seq: self.state.head + 1, at: self.now, kind };
            apply(&mut self.state, &event);
            self.log.push(event);
        }
        Ok(decision.reply)
    }

    fn later(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
    }

    fn create(&mut self, title: &str) -> TaskId {
        match self.run(Command::CreateTask(CreateTask { title: title.into(), ..Default::default() })) {
            Ok(Reply::Task(t)) => t.id,
            other => panic!("create failed: {other:?}"),
        }
    }

    fn act(agent: &str) -> TaskAction {
        TaskAction { agent: Some(agent.into()), ..Default::default() }
    }

    fn claim(&mut self, id: TaskId, agent: &str) -> Result<Reply, DomainError> {
        self.run(Command::Claim { id, action: Sim::act(agent) })
    }

    fn types(&self) -> Vec<&'static str> {
        self.log.iter().map(|e| e.kind.type_name()).collect()
    }
}

fn task(reply: Result<Reply, DomainError>) -> muster_protocol::Task {
    match reply {
        Ok(Reply::Task(t)) | Ok(Reply::MaybeTask(Some(t))) => t,
        other => panic!("expected a task, got {other:?}"),
    }
}

#[test]
fn ids_are_short_and_sequential_and_priority_defaults_to_p2() {
    let mut sim = Sim::new();
    assert_eq!(sim.create("a"), TaskId(1));
    assert_eq!(sim.create("b"), TaskId(2));
    assert_eq!(sim.state.task(TaskId(2)).unwrap().priority, Priority::P2);
}

#[test]
fn a_claim_is_a_mutex_and_the_loser_learns_the_owner() {
    let mut sim = Sim::new();
    let id = sim.create("fix auth redirect");
    let won = task(sim.claim(id, "link"));
    assert_eq!(won.status, TaskStatus::Doing);
    assert_eq!(won.claim.as_ref().unwrap().token, 1);
    let lost = sim.claim(id, "zelda").unwrap_err();
    assert_eq!(lost, DomainError::Conflict { message: "T-1 is claimed by link".into() });
    // Claiming again as the owner is a no-op that returns the same token.
    let events = sim.log.len();
    assert_eq!(task(sim.claim(id, "link")).claim.unwrap().token, 1);
    assert_eq!(sim.log.len(), events);
}

#[test]
fn a_reserved_task_can_only_be_claimed_by_its_assignee() {
    let mut sim = Sim::new();
    let reply = sim.run(Command::CreateTask(CreateTask {
        title: "Fix auth redirect".into(),
        assignee: Some("link".into()),
        priority: Some(Priority::P1),
        ..Default::default()
    }));
    let id = task(reply).id;
    let err = sim.claim(id, "zelda").unwrap_err();
    assert_eq!(err.to_string(), "T-1 is assigned to link");
    assert!(sim.claim(id, "link").is_ok());
}

#[test]
fn fencing_tokens_refuse_a_stale_owner() {
    let mut sim = Sim::new();
    let id = sim.create("t");
    sim.claim(id, "link").unwrap();
    sim.run(Command::Release { id, action: Sim::act("link") }).unwrap();
    sim.claim(id, "zelda").unwrap();
    // link comes back with the token of its old claim.
    let stale = sim.run(Command::Complete { id, action: TaskAction { token: Some(1), ..Sim::act("link") } });
    assert!(matches!(stale, Err(DomainError::StaleClaim { .. })), "{stale:?}");
    let update =
        UpdateTask { title: Some("x".into()), token: Some(1), agent: Some("link".into()), ..Default::default() };
    assert!(matches!(sim.run(Command::UpdateTask { id, update }), Err(DomainError::StaleClaim { .. })));
    let ok = sim.run(Command::Complete { id, action: TaskAction { token: Some(2), ..Sim::act("zelda") } });
    assert_eq!(task(ok).status, TaskStatus::Done);
}

#[test]
fn only_the_owner_releases_unless_forced() {
    let mut sim = Sim::new();
    let id = sim.create("t");
    sim.claim(id, "link").unwrap();
    let err = sim.run(Command::Release { id, action: Sim::act("zelda") }).unwrap_err();
    assert!(matches!(err, DomainError::Conflict { .. }));
    let forced = task(sim.run(Command::Release { id, action: TaskAction { force: true, ..Sim::act("human") } }));
    assert_eq!(forced.status, TaskStatus::Todo);
    assert_eq!(forced.claim, None);
    let released = sim.log.iter().rev().find_map(|e| match &e.kind {
        EventKind::TaskReleased { reason, agent, by, .. } => Some((*reason, agent.clone(), by.clone())),
        _ => None,
    });
    assert_eq!(released, Some((ReleaseReason::Forced, "link".into(), Some("human".into()))));
}

#[test]
fn a_blocked_task_waits_and_the_last_blocker_announces_it_ready() {
    let mut sim = Sim::new();
    let a = sim.create("schema");
    let b = sim.create("api");
    let reply =
        sim.run(Command::CreateTask(CreateTask { title: "ui".into(), blocked_by: vec![a, b], ..Default::default() }));
    let c = task(reply).id;
    assert_eq!(sim.claim(c, "link").unwrap_err().to_string(), "T-3 is blocked by T-1 (todo), T-2 (todo)");
    sim.claim(a, "link").unwrap();
    sim.run(Command::Complete { id: a, action: Sim::act("link") }).unwrap();
    assert!(!sim.types().contains(&"task.ready"), "T-2 is still open");
    sim.run(Command::Complete { id: b, action: Sim::act("zelda") }).unwrap();
    assert_eq!(sim.types().last(), Some(&"task.ready"));
    assert!(sim.claim(c, "link").is_ok());
}

#[test]
fn dependencies_cannot_form_a_cycle() {
    let mut sim = Sim::new();
    let a = sim.create("a");
    let reply =
        sim.run(Command::CreateTask(CreateTask { title: "b".into(), blocked_by: vec![a], ..Default::default() }));
    let b = task(reply).id;
    let update = UpdateTask { blocked_by: Some(vec![b]), ..Default::default() };
    let err = sim.run(Command::UpdateTask { id: a, update }).unwrap_err();
    assert_eq!(err, DomainError::invalid("blockedBy[0]", "T-2 already waits on T-1: that would be a cycle"));
    let update = UpdateTask { blocked_by: Some(vec![TaskId(9)]), ..Default::default() };
    let err = sim.run(Command::UpdateTask { id: a, update }).unwrap_err();
    assert_eq!(err, DomainError::invalid("blockedBy[0]", "task T-9 does not exist"));
}

#[test]
fn status_changes_follow_the_claim_rules() {
    let mut sim = Sim::new();
    let id = sim.create("t");
    let set = |status, agent: &str| Command::UpdateTask {
        id,
        update: UpdateTask { status: Some(status), agent: Some(agent.into()), ..Default::default() },
    };
    // review without a claim is refused with a reason
    assert!(matches!(sim.run(set(TaskStatus::Review, "link")), Err(DomainError::InvalidTransition { .. })));
    // doing claims
    let t = task(sim.run(set(TaskStatus::Doing, "link")));
    assert_eq!(t.claim.unwrap().agent, "link");
    assert_eq!(sim.types().last(), Some(&"task.claimed"));
    // someone else cannot move it
    assert!(matches!(sim.run(set(TaskStatus::Review, "zelda")), Err(DomainError::Conflict { .. })));
    assert_eq!(task(sim.run(set(TaskStatus::Review, "link"))).status, TaskStatus::Review);
    // done completes; the claim ends
    let done = task(sim.run(set(TaskStatus::Done, "link")));
    assert_eq!((done.status, done.claim), (TaskStatus::Done, None));
    assert!(matches!(sim.claim(id, "zelda"), Err(DomainError::InvalidTransition { .. })));
    // reopening makes it claimable again by whoever it is assigned to, with a bigger token
    let reopened = task(sim.run(set(TaskStatus::Todo, "zelda")));
    assert_eq!((reopened.status, reopened.assignee.as_deref()), (TaskStatus::Todo, Some("link")));
    assert_eq!(sim.claim(id, "zelda").unwrap_err().to_string(), "T-1 is assigned to link");
    assert_eq!(task(sim.claim(id, "link")).claim.unwrap().token, 2);
}

#[test]
fn next_hands_out_by_priority_then_age_and_returns_a_held_task_first() {
    let mut sim = Sim::new();
    sim.create("old p2");
    let urgent = task(sim.run(Command::CreateTask(CreateTask {
        title: "p0".into(),
        priority: Some(Priority::P0),
        ..Default::default()
    })))
    .id;
    sim.create("new p2");
    let next = |sim: &mut Sim, agent: &str| task(sim.run(Command::ClaimNext { agent: Some(agent.into()) })).id;
    assert_eq!(next(&mut sim, "link"), urgent);
    // A retry after a lost response gets the same task, not a second one.
    assert_eq!(next(&mut sim, "link"), urgent);
    assert_eq!(next(&mut sim, "zelda"), TaskId(1));
    assert_eq!(next(&mut sim, "kai"), TaskId(3));
    assert_eq!(sim.run(Command::ClaimNext { agent: Some("ganon".into()) }), Ok(Reply::MaybeTask(None)));
}

#[test]
fn chat_mentions_and_direct_messages_name_their_recipients() {
    let mut sim = Sim::new();
    let post = PostMessage {
        from: "kai".into(),
        content: "@link PR #522 is green, merge it".into(),
        channel: Some("general".into()),
        ..Default::default()
    };
    let Ok(Reply::Message(m)) = sim.run(Command::PostMessage(post)) else { panic!() };
    assert_eq!((m.id.to_string(), m.mentions.clone()), ("M-1".into(), vec!["link".to_owned()]));
    assert_eq!(m.seq, sim.log.last().unwrap().seq, "a message records the seq of its event");
    let dm = PostMessage { from: "zelda".into(), content: "psst".into(), to: Some("kai".into()), ..Default::default() };
    let Ok(Reply::Message(m)) = sim.run(Command::PostMessage(dm)) else { panic!() };
    assert_eq!(m.channel, "dm:kai,zelda");
    assert_eq!(m.recipients(), vec!["kai"]);
    let empty = PostMessage { from: "kai".into(), content: "  ".into(), ..Default::default() };
    assert_eq!(sim.run(Command::PostMessage(empty)).unwrap_err(), DomainError::invalid("content", "must not be empty"));
}

#[test]
fn inbox_cursor_only_moves_forward_and_not_past_the_head() {
    let mut sim = Sim::new();
    sim.create("t");
    let head = sim.state.head;
    let ack = |seq| Command::AckInbox { agent: "link".into(), seq };
    assert!(matches!(sim.run(ack(Some(head + 5))), Err(DomainError::Invalid { .. })));
    assert_eq!(sim.run(ack(None)), Ok(Reply::Cursor { agent: "link".into(), seq: head }));
    assert_eq!(sim.run(ack(Some(0))), Ok(Reply::Cursor { agent: "link".into(), seq: head }));
    assert_eq!(sim.state.cursor("link"), head);
}

#[test]
fn presence_goes_idle_offline_and_stuck_with_silence() {
    let mut sim = Sim::new();
    let id = sim.create("t");
    sim.claim(id, "link").unwrap();
    let view = |sim: &Sim| {
        let agent = sim.state.agents.get("link").unwrap();
        presence(&sim.state, &sim.policy, agent, sim.now)
    };
    assert_eq!((view(&sim).status.as_str(), view(&sim).last_seen.as_str()), ("active", "0s ago"));
    assert_eq!(view(&sim).task, Some(id));
    sim.later(6 * 60);
    assert_eq!((view(&sim).status.as_str(), view(&sim).stuck), ("idle", false));
    sim.later(15 * 60);
    assert_eq!(
        (view(&sim).status.as_str(), view(&sim).stuck, view(&sim).last_seen.as_str()),
        ("idle", true, "21m ago")
    );
    sim.later(10 * 60);
    assert_eq!(view(&sim).status, "offline");
    // Coming back is announced once, then contact is recorded silently.
    let before = sim.log.len();
    sim.run(Command::Heartbeat {
        agent: "link".into(),
        heartbeat: Heartbeat { status: Some("busy".into()), note: Some(Some("on T-1".into())) },
    })
    .unwrap();
    assert_eq!(sim.log.len(), before + 1);
    assert_eq!((view(&sim).status.as_str(), view(&sim).stuck), ("busy", false));
    assert_eq!(view(&sim).note.as_deref(), Some("on T-1"));
}

#[test]
fn a_closed_session_goes_offline_at_once_and_its_claims_wait_out_the_grace() {
    let mut sim = Sim::new();
    let id = sim.create("t");
    sim.run(Command::Connect { agent: "link".into(), human: false }).unwrap();
    sim.claim(id, "link").unwrap();
    let status = |sim: &Sim| sim.policy.status(sim.state.agents.get("link").unwrap(), sim.now);
    assert_eq!(status(&sim), "active");
    sim.later(3600);
    assert_eq!(status(&sim), "active", "a session keeps the agent present however quiet it is");
    sim.run(Command::Tick).unwrap();
    assert!(sim.state.task(id).unwrap().claim.is_some(), "a session holds the claim");

    sim.run(Command::Disconnect { agent: "link".into() }).unwrap();
    assert_eq!(status(&sim), "offline");
    sim.later(4 * 60);
    sim.run(Command::Tick).unwrap();
    assert!(sim.state.task(id).unwrap().claim.is_some(), "still within the grace");
    sim.later(61);
    sim.run(Command::Tick).unwrap();
    let task = sim.state.task(id).unwrap();
    assert_eq!((task.status, task.claim.is_none()), (TaskStatus::Todo, true));
    let last = &sim.log.last().unwrap().kind;
    assert!(matches!(last, EventKind::TaskReleased { reason: ReleaseReason::OwnerGone, by: None, .. }), "{last:?}");
}

#[test]
fn reconnecting_within_the_grace_keeps_the_claims() {
    let mut sim = Sim::new();
    let id = sim.create("t");
    sim.run(Command::Connect { agent: "link".into(), human: false }).unwrap();
    sim.run(Command::Connect { agent: "link".into(), human: false }).unwrap();
    sim.claim(id, "link").unwrap();
    sim.run(Command::Disconnect { agent: "link".into() }).unwrap();
    assert_eq!(sim.state.agents.get("link").unwrap().connections, 1, "one session is still open");
    sim.run(Command::Disconnect { agent: "link".into() }).unwrap();
    sim.later(4 * 60);
    sim.run(Command::Connect { agent: "link".into(), human: false }).unwrap();
    sim.later(3600);
    sim.run(Command::Tick).unwrap();
    assert_eq!(sim.state.task(id).unwrap().claim.as_ref().unwrap().agent, "link");
}

#[test]
fn an_owner_without_a_session_keeps_its_claims_by_staying_in_contact() {
    let mut sim = Sim::new();
    let id = sim.create("t");
    sim.claim(id, "link").unwrap();
    for _ in 0..3 {
        sim.later(20 * 60);
        sim.run(Command::Heartbeat { agent: "link".into(), heartbeat: Heartbeat::default() }).unwrap();
        sim.run(Command::Tick).unwrap();
    }
    assert!(sim.state.task(id).unwrap().claim.is_some(), "heartbeats within the lease keep it");
    sim.later(31 * 60);
    sim.run(Command::Tick).unwrap();
    assert!(sim.state.task(id).unwrap().claim.is_none(), "silence beyond the lease releases it");
}

#[test]
fn after_a_restart_no_session_is_left_open() {
    let mut sim = Sim::new();
    sim.run(Command::Connect { agent: "link".into(), human: false }).unwrap();
    sim.run(Command::ResetConnections).unwrap();
    let link = sim.state.agents.get("link").unwrap();
    assert_eq!((link.connections, sim.policy.status(link, sim.now).as_str()), (0, "offline"));
}

// ---- properties ------------------------------------------------------------------------

const AGENTS: [&str; 4] = ["link", "zelda", "kai", "ganon"];

#[derive(Debug, Clone)]
enum Op {
    Create { blocked_by: Vec<u64>, assignee: Option<usize> },
    Claim { task: u64, agent: usize },
    Release { task: u64, agent: usize, force: bool },
    Complete { task: u64, agent: usize, token: Option<u64> },
    Status { task: u64, agent: usize, status: TaskStatus },
    Next { agent: usize },
    Post { agent: usize, to: Option<usize> },
    Connect { agent: usize },
    Disconnect { agent: usize },
    Tick,
    Later { secs: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let agent = 0..AGENTS.len();
    let task = 1..8u64;
    let status = proptest::sample::select(TaskStatus::ALL.to_vec());
    prop_oneof![
        1 => (proptest::collection::vec(1..8u64, 0..3), proptest::option::of(agent.clone()))
            .prop_map(|(blocked_by, assignee)| Op::Create { blocked_by, assignee }),
        4 => (task.clone(), agent.clone()).prop_map(|(task, agent)| Op::Claim { task, agent }),
        2 => (task.clone(), agent.clone(), any::<bool>()).prop_map(|(task, agent, force)| Op::Release { task, agent, force }),
        2 => (task.clone(), agent.clone(), proptest::option::of(0..4u64)).prop_map(|(task, agent, token)| Op::Complete { task, agent, token }),
        2 => (task, agent.clone(), status).prop_map(|(task, agent, status)| Op::Status { task, agent, status }),
        2 => agent.clone().prop_map(|agent| Op::Next { agent }),
        1 => (agent.clone(), proptest::option::of(agent.clone())).prop_map(|(agent, to)| Op::Post { agent, to }),
        1 => agent.clone().prop_map(|agent| Op::Connect { agent }),
        1 => agent.prop_map(|agent| Op::Disconnect { agent }),
        1 => Just(Op::Tick),
        1 => (0..2000u64).prop_map(|secs| Op::Later { secs }),
    ]
}

fn command(op: &Op) -> Option<Command> {
    let act = |agent: usize| Sim::act(AGENTS[agent]);
    Some(match op {
        Op::Create { blocked_by, assignee } => Command::CreateTask(CreateTask {
            title: "t".into(),
            blocked_by: blocked_by.iter().map(|b| TaskId(*b)).collect(),
            assignee: assignee.map(|a| AGENTS[a].to_owned()),
            agent: Some("planner".into()),
            ..Default::default()
        }),
        Op::Claim { task, agent } => Command::Claim { id: TaskId(*task), action: act(*agent) },
        Op::Release { task, agent, force } => {
            Command::Release { id: TaskId(*task), action: TaskAction { force: *force, ..act(*agent) } }
        }
        Op::Complete { task, agent, token } => {
            Command::Complete { id: TaskId(*task), action: TaskAction { token: *token, ..act(*agent) } }
        }
        Op::Status { task, agent, status } => Command::UpdateTask {
            id: TaskId(*task),
            update: UpdateTask { status: Some(*status), agent: Some(AGENTS[*agent].into()), ..Default::default() },
        },
        Op::Next { agent } => Command::ClaimNext { agent: Some(AGENTS[*agent].into()) },
        Op::Post { agent, to } => Command::PostMessage(PostMessage {
            from: AGENTS[*agent].into(),
            content: "hello @link and @zelda".into(),
            to: to.map(|t| AGENTS[t].to_owned()),
            ..Default::default()
        }),
        Op::Connect { agent } => Command::Connect { agent: AGENTS[*agent].into(), human: false },
        Op::Disconnect { agent } => Command::Disconnect { agent: AGENTS[*agent].into() },
        Op::Tick => Command::Tick,
        Op::Later { .. } => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Never two owners, tokens only grow, and the state is what the log says it is.
    #[test]
    fn claims_stay_exclusive_and_the_log_rebuilds_the_state(ops in proptest::collection::vec(op(), 1..80)) {
        let mut sim = Sim::new();
        for op in &ops {
            match command(op) {
                Some(cmd) => { let _ = sim.run(cmd); }
                None => if let Op::Later { secs } = op { sim.later(*secs) },
            }
        }

        // Walk the log: who holds each task, and the last token handed out.
        let mut owner: HashMap<TaskId, String> = HashMap::new();
        let mut last_token: HashMap<TaskId, u64> = HashMap::new();
        for (i, event) in sim.log.iter().enumerate() {
            prop_assert_eq!(event.seq, i as u64 + 1, "seq is gap-free");
            match &event.kind {
                EventKind::TaskClaimed { task, agent } => {
                    prop_assert!(!owner.contains_key(&task.id), "{} claimed by {} while held by {:?}", task.id, agent, owner.get(&task.id));
                    let token = task.claim.as_ref().map(|c| c.token).unwrap_or(0);
                    prop_assert!(token > last_token.get(&task.id).copied().unwrap_or(0), "token must grow");
                    last_token.insert(task.id, token);
                    owner.insert(task.id, agent.clone());
                }
                EventKind::TaskReleased { task, .. } | EventKind::TaskCompleted { task, .. } | EventKind::TaskUpdated { task, .. } => {
                    match &task.claim {
                        Some(c) => prop_assert_eq!(owner.get(&task.id), Some(&c.agent)),
                        None => { owner.remove(&task.id); }
                    }
                }
                _ => {}
            }
        }

        // Every task's claim agrees with its status and assignee.
        for task in sim.state.tasks.values() {
            if let Some(claim) = &task.claim {
                prop_assert!(matches!(task.status, TaskStatus::Doing | TaskStatus::Review | TaskStatus::Blocked));
                prop_assert_eq!(task.assignee.as_deref(), Some(claim.agent.as_str()));
                prop_assert!(claim.token == task.last_token);
            } else {
                prop_assert!(!matches!(task.status, TaskStatus::Doing | TaskStatus::Review));
            }
        }

        // Replaying the log from empty rebuilds exactly the same state...
        let mut replayed = Model::default();
        for event in &sim.log { apply(&mut replayed, event); }
        prop_assert_eq!(&replayed, &sim.state);
        // ...and so does loading the materialized views, as a restart does.
        let s = &sim.state;
        let loaded = Model::from_views(
            s.head,
            s.last_message,
            s.tasks.values().map(|t| muster_protocol::Task::clone(t)),
            s.agents.values().map(|a| muster_protocol::Agent::clone(a)),
            s.cursors.clone(),
            s.channels.values().cloned(),
        );
        prop_assert_eq!(&loaded, &sim.state);
        // Applying the tail twice changes nothing (restart catch-up may overlap the views).
        let mut twice = sim.state.clone();
        for event in sim.log.iter().rev().take(5).rev() { apply(&mut twice, event); }
        prop_assert_eq!(&twice, &sim.state);
    }
}
