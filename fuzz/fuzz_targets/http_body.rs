//! HTTP bodies: decoded as the handlers decode them (`parse_json`), then, when they decode,
//! decided by the domain against a board with a claimed task, a blocked one and a message,
//! so that the validation rules (lengths, names, mentions, transitions) see them too.
//! Nothing may panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use muster::core::{Command, Model, Policy, apply, decide};
use muster::parse_json;
use muster_protocol::{CreateTask, Event, Heartbeat, PostMessage, TaskAction, TaskId, Timestamp, UpdateTask};

fn now() -> Timestamp {
    Timestamp::from_timestamp_millis(1_795_000_000_000).unwrap_or_default()
}

fn board() -> &'static Model {
    static BOARD: OnceLock<Model> = OnceLock::new();
    BOARD.get_or_init(|| {
        let mut state = Model::default();
        let policy = Policy::default();
        let setup = [
            Command::CreateTask(CreateTask { title: "first".into(), ..Default::default() }),
            Command::CreateTask(CreateTask {
                title: "second".into(),
                blocked_by: vec!["T-1".parse().unwrap_or_else(|_| unreachable!())],
                ..Default::default()
            }),
            Command::Claim {
                id: "T-1".parse().unwrap_or_else(|_| unreachable!()),
                action: TaskAction { agent: Some("link".into()), ..Default::default() },
            },
            Command::PostMessage(PostMessage { from: "kai".into(), content: "@link hi".into(), ..Default::default() }),
        ];
        for cmd in setup {
            if let Ok(decision) = decide(&state, &policy, &cmd, now()) {
                for kind in decision.events {
                    let event = Event { seq: state.head + 1, at: now(), kind };
                    apply(&mut state, &event);
                }
            }
        }
        state
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let task: TaskId = if selector & 0x80 == 0 { "T-1" } else { "T-2" }.parse().unwrap_or_else(|_| unreachable!());
    let cmd = match selector % 6 {
        0 => parse_json::<CreateTask>(body).map(Command::CreateTask),
        1 => parse_json::<UpdateTask>(body).map(|update| Command::UpdateTask { id: task, update }),
        2 => parse_json::<TaskAction>(body).map(|action| Command::Claim { id: task, action }),
        3 => parse_json::<TaskAction>(body).map(|action| Command::Release { id: task, action }),
        4 => parse_json::<PostMessage>(body).map(Command::PostMessage),
        _ => parse_json::<Heartbeat>(body).map(|heartbeat| Command::Heartbeat { agent: "link".into(), heartbeat }),
    };
    if let Ok(cmd) = cmd {
        let _ = decide(board(), &Policy::default(), &cmd, now());
    }
});
