//! The broker about itself: health (open to anyone) and metrics.

use muster_protocol::{Health, TaskStatus};

use super::broker::Broker;
use super::caller::Caller;
use super::error::ApiError;

/// Liveness, version, epoch and head. Open to anyone, with tokens on too.
pub(crate) fn health(broker: &Broker) -> Health {
    Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        epoch: broker.epoch().into(),
        head: broker.head(),
    }
}

/// Counters and gauges in the Prometheus text format.
pub(crate) fn metrics(broker: &Broker, caller: &Caller) -> Result<String, ApiError> {
    let snapshot = broker.read(caller)?;
    let model = &snapshot.model;
    let mut by_status = String::new();
    for status in TaskStatus::ALL {
        let n = model.count(status);
        by_status.push_str(&format!("muster_tasks{{status=\"{status}\"}} {n}\n"));
    }
    let now = broker.now();
    let mut statuses: std::collections::BTreeMap<String, u64> =
        ["active", "idle", "offline", "stuck"].map(|s| (s.to_owned(), 0)).into();
    for agent in model.agents.values() {
        let p = crate::core::presence(model, &broker.policy, agent, now);
        let status = if p.stuck { "stuck".to_owned() } else { p.status.to_string() };
        *statuses.entry(status).or_default() += 1;
    }
    let agents =
        statuses.iter().map(|(s, n)| format!("muster_agents{{status=\"{s}\"}} {n}")).collect::<Vec<_>>().join("\n");
    let extra = [
        ("muster_head_seq", "Newest durable event sequence number.", format!("muster_head_seq {}", model.head)),
        ("muster_tasks", "Tasks on the board by status.", by_status.trim_end().to_owned()),
        (
            "muster_tasks_in_memory",
            "Tasks kept in memory: the unfinished and the recently finished; older ones are read from disk.",
            format!("muster_tasks_in_memory {}", model.tasks.len()),
        ),
        ("muster_agents", "Agents by presence status, as of now (stuck ones counted once, as stuck).", agents),
        ("muster_agents_seen", "Agents ever seen.", format!("muster_agents_seen {}", model.agents.len())),
        (
            "muster_subscribers",
            "Connections following events (WebSocket, SSE, long-poll).",
            format!("muster_subscribers {}", broker.hub().subscribers()),
        ),
        (
            "muster_store_bytes",
            "Bytes the database occupies on disk.",
            format!("muster_store_bytes {}", broker.store().db.size_on_disk()),
        ),
    ];
    Ok(broker.metrics.render(&extra))
}
