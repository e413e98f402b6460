//! Rules of the domain, checked without a runtime: examples first, then properties over
//! random interleavings of commands by several agents.

use std::collections::HashMap;
use std::time::Duration;

use muster_protocol::{
    CreateTask, Event, EventKind, FilesReleaseReason, Heartbeat, PostMessage, Priority, ReleaseFiles, ReleaseReason,
    ReserveFiles, TaskAction, TaskId, TaskStatus, Timestamp, UpdateTask,
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
    assert_eq!(lost, DomainError::Conflict { field: None, message: "T-1 is claimed by link".into() });
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
    assert_eq!(
        err,
        DomainError::Conflict {
            field: Some("blockedBy[0]".to_owned()),
            message: "blockedBy[0]: T-2 already waits on T-1: that would be a cycle".to_owned(),
        }
    );
    let update = UpdateTask { blocked_by: Some(vec![TaskId(9)]), ..Default::default() };
    let err = sim.run(Command::UpdateTask { id: a, update }).unwrap_err();
    assert_eq!(err, DomainError::missing("blockedBy[0]", "task T-9 does not exist"));
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
    assert!(matches!(sim.run(ack(Some(head + 5))), Err(DomainError::Conflict { .. })));
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
    sim.run(Command::Connect { agent: "link".into(), human: false, node: None }).unwrap();
    sim.claim(id, "link").unwrap();
    let status = |sim: &Sim| sim.policy.status(sim.state.agents.get("link").unwrap(), sim.now);
    assert_eq!(status(&sim), "active");
    sim.later(3600);
    assert_eq!(status(&sim), "active", "a session keeps the agent present however quiet it is");
    sim.run(Command::Tick).unwrap();
    assert!(sim.state.task(id).unwrap().claim.is_some(), "a session holds the claim");

    sim.run(Command::Disconnect { agent: "link".into(), node: None }).unwrap();
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
    sim.run(Command::Connect { agent: "link".into(), human: false, node: None }).unwrap();
    sim.run(Command::Connect { agent: "link".into(), human: false, node: None }).unwrap();
    sim.claim(id, "link").unwrap();
    sim.run(Command::Disconnect { agent: "link".into(), node: None }).unwrap();
    assert_eq!(sim.state.agents.get("link").unwrap().connections, 1, "one session is still open");
    sim.run(Command::Disconnect { agent: "link".into(), node: None }).unwrap();
    sim.later(4 * 60);
    sim.run(Command::Connect { agent: "link".into(), human: false, node: None }).unwrap();
    sim.later(3600);
    sim.run(Command::Tick).unwrap();
    assert_eq!(sim.state.task(id).unwrap().claim.as_ref().unwrap().agent, "link");
}

#[test]
fn a_stopped_cluster_node_closes_only_its_own_sessions_and_claims_wait_out_the_grace() {
    let mut sim = Sim::new();
    let id = sim.create("t");
    let connect =
        |agent: &str, node: &str| Command::Connect { agent: agent.into(), human: false, node: Some(node.into()) };
    sim.run(connect("link", "a-1")).unwrap();
    sim.run(connect("link", "b-1")).unwrap();
    sim.run(connect("zelda", "a-1")).unwrap();
    sim.claim(id, "zelda").unwrap();
    sim.run(Command::ResetNode { node: "a-1".into() }).unwrap();
    let link = sim.state.agents.get("link").unwrap();
    assert_eq!((link.connections, link.nodes.len()), (1, 1), "link's session on b-1 stays open");
    let zelda = sim.state.agents.get("zelda").unwrap();
    assert_eq!((zelda.connections, zelda.left_at.is_some()), (0, true), "zelda left with her node");
    sim.run(Command::ResetNode { node: "a-1".into() }).unwrap();
    assert_eq!(sim.state.agents.get("link").unwrap().connections, 1, "a second reset changes nothing");
    // Back through another node within the grace: the claim stands.
    sim.later(60);
    sim.run(connect("zelda", "b-1")).unwrap();
    sim.later(3600);
    sim.run(Command::Tick).unwrap();
    assert_eq!(sim.state.task(id).unwrap().claim.as_ref().unwrap().agent, "zelda");
    // A disconnect names its node: the count of that node goes, the other stays.
    sim.run(Command::Disconnect { agent: "link".into(), node: Some("b-1".into()) }).unwrap();
    let link = sim.state.agents.get("link").unwrap();
    assert_eq!((link.connections, link.nodes.is_empty()), (0, true));
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
    sim.run(Command::Connect { agent: "link".into(), human: false, node: None }).unwrap();
    sim.run(Command::ResetConnections).unwrap();
    let link = sim.state.agents.get("link").unwrap();
    assert_eq!((link.connections, sim.policy.status(link, sim.now).as_str()), (0, "offline"));
}

// ---- properties ------------------------------------------------------------------------

fn reserve(
    sim: &mut Sim,
    agent: &str,
    patterns: &[&str],
    shared: bool,
    task: Option<TaskId>,
) -> Result<Vec<muster_protocol::Reservation>, DomainError> {
    let cmd = Command::ReserveFiles(
        ReserveFiles {
            repo: "app".into(),
            patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
            shared,
            task,
            agent: Some(agent.into()),
            ..Default::default()
        }
        .into(),
    );
    match sim.run(cmd)? {
        Reply::Reservations(r) => Ok(r),
        other => panic!("expected reservations, got {other:?}"),
    }
}

fn released(sim: &Sim) -> Vec<(String, FilesReleaseReason, Vec<String>)> {
    sim.log
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FilesReleased { agent, reason, reservations, .. } => {
                Some((agent.clone(), *reason, reservations.iter().map(|r| r.pattern.clone()).collect()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn an_overlapping_exclusive_reservation_is_refused_naming_the_holder_and_nothing_is_reserved() {
    let mut sim = Sim::new();
    let id = sim.create("auth");
    sim.claim(id, "zelda").unwrap();
    reserve(&mut sim, "zelda", &["src/auth/session.rs"], false, Some(id)).unwrap();
    let events = sim.log.len();
    let err = reserve(&mut sim, "link", &["docs/**", "src/auth/**"], false, None).unwrap_err();
    let DomainError::FilesConflict { message, conflicts } = &err else { panic!("{err:?}") };
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!(
        (c.pattern.as_str(), c.holder.agent.as_str(), c.holder.pattern.as_str()),
        ("src/auth/**", "zelda", "src/auth/session.rs")
    );
    assert_eq!((c.holder.task, c.witness.as_str()), (Some(id), "src/auth/session.rs"));
    assert!(message.contains("zelda's exclusive src/auth/session.rs (R-1, for T-1)"), "{message}");
    assert_eq!(err.code(), muster_protocol::ErrorCode::Conflict);
    assert_eq!(sim.log.len(), events, "all or nothing: docs/** was not reserved either");
    assert_eq!(sim.state.files.len(), 1);
    // Patterns that do not meet are granted.
    assert!(reserve(&mut sim, "link", &["docs/**", "src/api/*.rs"], false, None).is_ok());
}

#[test]
fn shared_reservations_share_and_an_exclusive_one_shares_with_nobody() {
    let mut sim = Sim::new();
    reserve(&mut sim, "link", &["Cargo.lock"], true, None).unwrap();
    reserve(&mut sim, "zelda", &["*.lock"], true, None).unwrap();
    assert!(matches!(reserve(&mut sim, "kai", &["Cargo.lock"], false, None), Err(DomainError::FilesConflict { .. })));
    reserve(&mut sim, "kai", &["src/main.rs"], false, None).unwrap();
    let err = reserve(&mut sim, "link", &["src/*.rs"], true, None).unwrap_err();
    assert!(err.to_string().contains("kai's exclusive src/main.rs"), "{err}");
    // An agent's own reservations never conflict with each other.
    reserve(&mut sim, "kai", &["src/*.rs"], false, None).unwrap();
}

#[test]
fn reserving_again_renews_the_same_reservation() {
    let mut sim = Sim::new();
    let first = reserve(&mut sim, "link", &["docs/**"], false, None).unwrap();
    assert_eq!(first[0].expires_at, Some(sim.now + Duration::from_secs(2 * 3600)));
    sim.later(3600);
    let again = reserve(&mut sim, "link", &["docs/**", "README.md"], false, None).unwrap();
    assert_eq!(again[0].id, first[0].id, "same pattern, same reservation");
    assert_eq!(again[0].expires_at, Some(sim.now + Duration::from_secs(2 * 3600)), "a fresh TTL");
    assert_ne!(again[1].id, first[0].id);
    assert_eq!(sim.state.files.len(), 2);
}

#[test]
fn a_task_reservation_needs_the_claim_and_ends_with_it() {
    let mut sim = Sim::new();
    let id = sim.create("t");
    let unclaimed = reserve(&mut sim, "link", &["src/**"], false, Some(id)).unwrap_err();
    assert!(matches!(unclaimed, DomainError::InvalidTransition { .. }), "{unclaimed:?}");
    sim.claim(id, "zelda").unwrap();
    let theirs = reserve(&mut sim, "link", &["src/**"], false, Some(id)).unwrap_err();
    assert!(theirs.to_string().contains("claimed by zelda"), "{theirs}");
    let held = reserve(&mut sim, "zelda", &["src/**"], false, Some(id)).unwrap();
    assert_eq!(held[0].expires_at, None, "a task's reservation lasts as long as the claim");

    // Completing the task ends it.
    sim.run(Command::Complete { id, action: Sim::act("zelda") }).unwrap();
    assert!(sim.state.files.is_empty());
    assert_eq!(released(&sim), vec![("zelda".into(), FilesReleaseReason::TaskEnded, vec!["src/**".into()])]);

    // So does a forced release, and a cancellation.
    let (a, b) = (sim.create("a"), sim.create("b"));
    sim.claim(a, "link").unwrap();
    sim.claim(b, "link").unwrap();
    reserve(&mut sim, "link", &["a/**"], false, Some(a)).unwrap();
    reserve(&mut sim, "link", &["b/**"], false, Some(b)).unwrap();
    sim.run(Command::Release { id: a, action: TaskAction { force: true, ..Sim::act("human") } }).unwrap();
    let cancel = UpdateTask { status: Some(TaskStatus::Cancelled), agent: Some("link".into()), ..Default::default() };
    sim.run(Command::UpdateTask { id: b, update: cancel }).unwrap();
    let ends = released(&sim);
    assert_eq!(ends[1], ("link".into(), FilesReleaseReason::TaskEnded, vec!["a/**".into()]));
    assert_eq!(ends[2], ("link".into(), FilesReleaseReason::TaskEnded, vec!["b/**".into()]));
    assert!(sim.state.files.is_empty());
}

#[test]
fn reservations_end_when_their_ttl_runs_out_or_their_holder_stays_away() {
    let mut sim = Sim::new();
    sim.run(Command::Connect { agent: "kai".into(), human: false, node: None }).unwrap();
    let id = sim.create("t");
    sim.claim(id, "link").unwrap();
    reserve(&mut sim, "link", &["src/**"], false, Some(id)).unwrap();
    let short = ReserveFiles {
        repo: "app".into(),
        patterns: vec!["/notes.md".into()],
        ttl_seconds: Some(60),
        agent: Some("kai".into()),
        ..Default::default()
    };
    sim.run(Command::ReserveFiles(short.into())).unwrap();
    reserve(&mut sim, "link", &["docs/**"], false, None).unwrap();

    sim.later(61);
    sim.run(Command::Tick).unwrap();
    assert_eq!(released(&sim), vec![("kai".into(), FilesReleaseReason::Expired, vec!["/notes.md".into()])]);

    // link has no session: after the lease, its claim and all its reservations go.
    sim.later(30 * 60);
    sim.run(Command::Tick).unwrap();
    let ends = released(&sim);
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert_eq!(ends[1].1, FilesReleaseReason::OwnerGone);
    assert_eq!(ends[1].2.len(), 2, "the task's and the other one, in one event");
    assert!(sim.state.files.is_empty());
    assert!(sim.state.task(id).unwrap().claim.is_none());
}

fn edit(sim: &mut Sim, agent: &str, paths: &[&str]) -> Result<Vec<muster_protocol::Reservation>, DomainError> {
    let cmd = Command::ReserveFiles(
        ReserveFiles {
            repo: "app".into(),
            patterns: paths.iter().map(|p| (*p).to_owned()).collect(),
            agent: Some(agent.into()),
            auto: true,
            ..Default::default()
        }
        .into(),
    );
    match sim.run(cmd)? {
        Reply::Reservations(r) => Ok(r),
        other => panic!("expected reservations, got {other:?}"),
    }
}

#[test]
fn an_edit_holds_its_exact_files_for_the_last_claimed_task_and_not_twice() {
    let mut sim = Sim::new();
    let (first, second) = (sim.create("one"), sim.create("two"));
    sim.claim(first, "link").unwrap();
    sim.later(1);
    sim.claim(second, "link").unwrap();
    // Exact paths (a `*` is a character), the same one given twice, for the task claimed last.
    let held = edit(&mut sim, "link", &["src/a*.rs", "src/b.rs", "src/a*.rs"]).unwrap();
    let patterns: Vec<&str> = held.iter().map(|r| r.pattern.as_str()).collect();
    assert_eq!(patterns, [r"/src/a\*.rs", "/src/b.rs"]);
    assert!(held.iter().all(|r| r.auto && r.exclusive && r.task == Some(second) && r.expires_at.is_none()));
    // Another agent's edit of one of them is refused; of another file named like the glob, not.
    assert!(matches!(edit(&mut sim, "zelda", &["src/b.rs"]), Err(DomainError::FilesConflict { .. })));
    edit(&mut sim, "zelda", &["src/ab.rs"]).unwrap();
    // A file the agent holds through a reservation of its own is not reserved again.
    reserve(&mut sim, "link", &["docs/**"], false, None).unwrap();
    let covered = edit(&mut sim, "link", &["docs/x.md", "src/b.rs"]).unwrap();
    let patterns: Vec<&str> = covered.iter().map(|r| r.pattern.as_str()).collect();
    assert_eq!(patterns, ["docs/**", "/src/b.rs"], "docs/** answers for docs/x.md; src/b.rs is renewed");
    // Without a task, an edit's reservation lasts the default TTL from the edit.
    let free = edit(&mut sim, "zelda", &["README.md"]).unwrap();
    assert!(free[0].task.is_none() && free[0].expires_at.is_some());
    // An edit names files, not patterns (`/x`, anchored, is the file `x`).
    assert_eq!(edit(&mut sim, "zelda", &["/top.rs"]).unwrap()[0].pattern, "/top.rs");
    let err = edit(&mut sim, "zelda", &["src/"]).unwrap_err();
    assert!(format!("{err:?}").contains("patterns[0]"), "{err:?}");
}

#[test]
fn bad_reservations_name_the_field() {
    let mut sim = Sim::new();
    for (patterns, repo, ttl, field) in [
        (vec![], "app", None, "patterns"),
        (vec!["a//b"], "app", None, "patterns[0]"),
        (vec!["ok", "!neg"], "app", None, "patterns[1]"),
        (vec!["ok"], "", None, "repo"),
        (vec!["ok"], "has space", None, "repo"),
        (vec!["ok"], "app", Some(0), "ttlSeconds"),
        (vec!["ok"], "app", Some(8 * 24 * 3600), "ttlSeconds"),
    ] {
        let cmd = Command::ReserveFiles(
            ReserveFiles {
                repo: repo.into(),
                patterns: patterns.iter().map(|p: &&str| (*p).to_owned()).collect(),
                ttl_seconds: ttl,
                agent: Some("link".into()),
                ..Default::default()
            }
            .into(),
        );
        match sim.run(cmd) {
            Err(DomainError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{patterns:?} {repo:?}: {other:?}"),
        }
    }
}

const AGENTS: [&str; 4] = ["link", "zelda", "kai", "ganon"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        blocked_by: Vec<u64>,
        assignee: Option<usize>,
    },
    Claim {
        task: u64,
        agent: usize,
    },
    Release {
        task: u64,
        agent: usize,
        force: bool,
    },
    Complete {
        task: u64,
        agent: usize,
        token: Option<u64>,
    },
    Status {
        task: u64,
        agent: usize,
        status: TaskStatus,
    },
    Next {
        agent: usize,
    },
    Post {
        agent: usize,
        to: Option<usize>,
    },
    Connect {
        agent: usize,
    },
    Disconnect {
        agent: usize,
    },
    Tick,
    Later {
        secs: u64,
    },
    /// `lag`: how many operations old the snapshot its precheck was made on is.
    Reserve {
        agent: usize,
        patterns: Vec<usize>,
        shared: bool,
        task: Option<u64>,
        lag: usize,
    },
    ReleaseFiles {
        agent: usize,
        pattern: Option<usize>,
    },
}

const PATTERNS: [&str; 10] = [
    "src/**",
    "src/a.rs",
    "*.md",
    "docs/x.md",
    "src/*.rs",
    "docs/",
    "src/auth/**",
    "s*/a.rs",
    "/README.md",
    "src/au*/",
];

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
        1 => agent.clone().prop_map(|agent| Op::Disconnect { agent }),
        1 => Just(Op::Tick),
        1 => (0..2000u64).prop_map(|secs| Op::Later { secs }),
        3 => (agent.clone(), proptest::collection::vec(0..PATTERNS.len(), 1..3), any::<bool>(), proptest::option::of(1..8u64), 0..4usize)
            .prop_map(|(agent, patterns, shared, task, lag)| Op::Reserve { agent, patterns, shared, task, lag }),
        1 => (agent, proptest::option::of(0..PATTERNS.len())).prop_map(|(agent, pattern)| Op::ReleaseFiles { agent, pattern }),
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
        Op::Connect { agent } => Command::Connect { agent: AGENTS[*agent].into(), human: false, node: None },
        Op::Disconnect { agent } => Command::Disconnect { agent: AGENTS[*agent].into(), node: None },
        Op::Tick => Command::Tick,
        Op::Later { .. } => return None,
        Op::Reserve { agent, patterns, shared, task, .. } => Command::ReserveFiles(
            ReserveFiles {
                repo: "app".into(),
                patterns: patterns.iter().map(|p| PATTERNS[*p].to_owned()).collect(),
                shared: *shared,
                task: task.map(TaskId),
                agent: Some(AGENTS[*agent].into()),
                ..Default::default()
            }
            .into(),
        ),
        Op::ReleaseFiles { agent, pattern } => Command::ReleaseFiles(ReleaseFiles {
            repo: "app".into(),
            patterns: pattern.iter().map(|p| PATTERNS[*p].to_owned()).collect(),
            agent: Some(AGENTS[*agent].into()),
            ..Default::default()
        }),
    })
}

/// No two agents' reservations share a path unless both are shared, and a task's
/// reservation belongs to the agent holding the task's claim.
fn reservations_hold(model: &Model) -> Result<(), TestCaseError> {
    let held: Vec<_> = model.files.all().collect();
    for (i, a) in held.iter().enumerate() {
        for b in &held[i + 1..] {
            let (ra, rb) = (&a.reservation, &b.reservation);
            if ra.agent == rb.agent || !(ra.exclusive || rb.exclusive) {
                continue;
            }
            let overlap = a.glob.as_ref().zip(b.glob.as_ref()).and_then(|(ga, gb)| ga.overlap(gb));
            prop_assert!(overlap.is_none(), "{:?} and {:?} overlap on {:?}", ra, rb, overlap);
        }
        if let Some(task) = a.reservation.task {
            let owner = model.task(task).and_then(|t| t.claim.as_ref()).map(|c| c.agent.as_str());
            prop_assert_eq!(owner, Some(a.reservation.agent.as_str()), "{:?} outlived its claim", a.reservation);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Never two owners, tokens only grow, reservations never overlap where they may not
    /// and last no longer than their task's claim, and the state is what the log says it is.
    /// Reserves are prechecked on a snapshot a few operations old, as the api does, and the
    /// writer checks only what came after it.
    #[test]
    fn claims_stay_exclusive_and_the_log_rebuilds_the_state(ops in proptest::collection::vec(op(), 1..80)) {
        let mut sim = Sim::new();
        let mut snapshots = vec![sim.state.clone()];
        for op in &ops {
            match command(op) {
                Some(mut cmd) => {
                    if let (Command::ReserveFiles(reserve), Op::Reserve { lag, .. }) = (&mut cmd, op) {
                        let snapshot = &snapshots[snapshots.len() - 1 - (*lag).min(snapshots.len() - 1)];
                        reserve.precheck = match decide(snapshot, &sim.policy, &Command::ReserveFiles(reserve.clone()), sim.now) {
                            Ok(_) => Precheck::Clear { at: snapshot.head },
                            Err(refusal) => Precheck::Refused(refusal),
                        };
                    }
                    let _ = sim.run(cmd);
                }
                None => if let Op::Later { secs } = op { sim.later(*secs) },
            }
            reservations_hold(&sim.state)?;
            snapshots.push(sim.state.clone());
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
        let mut loaded = Model::from_views(
            s.head,
            s.last_message,
            s.tasks.values().map(|t| muster_protocol::Task::clone(t)),
            s.agents.values().map(|a| muster_protocol::Agent::clone(a)),
            s.cursors.clone(),
            s.channels.values().cloned(),
        )
        .with_reservations(s.last_reservation, s.files.all().map(|h| h.reservation.clone()));
        // (The store keeps the board's version beside the views.)
        loaded.tasks_seq = s.tasks_seq;
        prop_assert_eq!(&loaded, &sim.state);
        // Applying the tail twice changes nothing (restart catch-up may overlap the views).
        let mut twice = sim.state.clone();
        for event in sim.log.iter().rev().take(5).rev() { apply(&mut twice, event); }
        prop_assert_eq!(&twice, &sim.state);
    }
}

#[test]
fn the_model_keeps_the_last_finished_tasks_and_counts_every_task() {
    let mut sim = Sim::new();
    let total = FINISHED_KEPT as u64 + 50;
    let cancel = UpdateTask { status: Some(TaskStatus::Cancelled), agent: Some("ann".into()), ..Default::default() };
    for i in 0..total {
        let id = sim.create(&format!("t{i}"));
        sim.later(1);
        task(sim.run(Command::UpdateTask { id, update: cancel.clone() }));
    }
    let open = sim.create("still open");
    assert_eq!(sim.state.tasks.len(), FINISHED_KEPT + 1);
    assert!(sim.state.evicted(TaskId(50)) && !sim.state.evicted(TaskId(51)) && !sim.state.evicted(open));
    assert!(!sim.state.evicted(TaskId(total + 2)), "a task that was never created is not evicted");
    assert_eq!(sim.state.count(TaskStatus::Cancelled), total);
    assert_eq!(sim.state.count(TaskStatus::Todo), 1);
    assert_eq!(sim.state.next_task_id(), TaskId(total + 2));

    // The log folded again, or the views (every task's last value) loaded one by one, give
    // the same model: the same tasks kept, the same counts.
    let mut folded = Model::default();
    let mut last = std::collections::BTreeMap::new();
    for event in &sim.log {
        apply(&mut folded, event);
        if let Some(t) = event.kind.task() {
            last.insert(t.id, t.clone());
        }
    }
    assert_eq!(folded, sim.state);
    let mut from_views = Model::from_views(sim.state.head, 0, last.into_values(), [], [], []);
    from_views.tasks_seq = sim.state.tasks_seq;
    let mut expected = sim.state.clone();
    expected.agents = Default::default();
    assert_eq!(from_views, expected);

    // An evicted task is unknown to the rules until it is restored; then it is decided on
    // like any other and counted once.
    let reopen = UpdateTask { status: Some(TaskStatus::Todo), agent: Some("ann".into()), ..Default::default() };
    let refused = sim.run(Command::UpdateTask { id: TaskId(1), update: reopen.clone() });
    assert!(matches!(refused, Err(DomainError::NotFound { .. })), "{refused:?}");
    let stored = sim.log.iter().rev().find_map(|e| e.kind.task().filter(|t| t.id == TaskId(1)).cloned()).unwrap();
    sim.state.restore(std::sync::Arc::new(stored));
    assert_eq!(task(sim.run(Command::UpdateTask { id: TaskId(1), update: reopen })).status, TaskStatus::Todo);
    assert_eq!(sim.state.count(TaskStatus::Cancelled), total - 1);
    assert_eq!(sim.state.count(TaskStatus::Todo), 2);
    assert_eq!(sim.state.tasks.len(), FINISHED_KEPT + 2);
    sim.later(1);
    task(sim.run(Command::UpdateTask { id: open, update: cancel }));
    assert!(sim.state.evicted(TaskId(51)), "the oldest finished task goes");
    assert_eq!(sim.state.tasks.len(), FINISHED_KEPT + 1);
}
