//! The broker about itself: health (open to anyone), metrics, and what it can do
//! (`/capabilities`).

use muster_protocol::{ClusterHealth, Health, TaskStatus, Topic};
use serde_json::{Value, json};

use super::broker::Broker;
use super::caller::Caller;
use super::error::ApiError;
use super::events::MAX_WAIT;
use crate::cluster::Cluster;
use crate::core::rules;

/// Liveness, version, epoch and head, and on a cluster node where it stands. Open to
/// anyone, with tokens on too. Its `status` is `ok`, or on a cluster's node says that the
/// cluster has had no leader for longer than two leases (no write can be made: the
/// transports answer 503).
pub(crate) async fn health(broker: &Broker) -> Health {
    let cluster = match broker.cluster() {
        Some(cluster) => Some(cluster_health(cluster).await),
        None => None,
    };
    let leaderless = broker.cluster().and_then(|c| c.leaderless_for());
    let status = match leaderless {
        Some(for_) => format!("no leader: the cluster has had none for {} s", for_.as_secs()),
        None => "ok".into(),
    };
    Health {
        status,
        version: env!("CARGO_PKG_VERSION").into(),
        epoch: broker.epoch().into(),
        head: broker.head(),
        cluster,
    }
}

async fn cluster_health(cluster: &Cluster) -> ClusterHealth {
    let applied = cluster.applied();
    let state = cluster.stream_state().await;
    let stream_head = state.map(|(_, last)| last);
    ClusterHealth {
        node: cluster.node().to_owned(),
        role: if cluster.leading() { "leader" } else { "follower" }.into(),
        leader: cluster.leader(),
        stream_head,
        stream_first: state.map(|(first, _)| first),
        applied,
        lag: stream_head.map(|head| head.saturating_sub(applied)),
    }
}

/// Counters and gauges in the Prometheus text format.
pub(crate) async fn metrics(broker: &Broker, caller: &Caller) -> Result<String, ApiError> {
    let snapshot = broker.read_fresh(caller).await?;
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
            "muster_cluster_leader",
            "1 on the node that leads its cluster, 0 on a follower (absent for a single broker).",
            broker.cluster().map_or_else(String::new, |c| format!("muster_cluster_leader {}", u8::from(c.leading()))),
        ),
        (
            "muster_cluster_applied",
            "The replicated log's newest message this node has applied (absent for a single broker).",
            broker.cluster().map_or_else(String::new, |c| format!("muster_cluster_applied {}", c.applied())),
        ),
        (
            "muster_store_bytes",
            "Bytes the database occupies on disk.",
            format!("muster_store_bytes {}", broker.store().db.size_on_disk()),
        ),
    ];
    Ok(broker.metrics.render(&extra))
}

/// What this broker can do: the `routes` its transport serves (each `{method, path,
/// summary}`), the WebSocket operations, the topics, and every limit (`max_body`: the
/// largest request body the transport reads).
pub(crate) fn capabilities(routes: Vec<Value>, max_body: usize) -> Value {
    json!({
        "name": "muster",
        "version": env!("CARGO_PKG_VERSION"),
        "routes": routes,
        "operations": muster_protocol::ws::Op::NAMES,
        "topics": Topic::FORMS,
        "limits": {
            "maxBodyBytes": max_body,
            "maxTitleChars": rules::MAX_TITLE,
            "maxTextChars": rules::MAX_TEXT,
            "maxNameBytes": rules::MAX_NAME,
            "maxNoteChars": rules::MAX_NOTE,
            "maxTags": rules::MAX_TAGS,
            "maxTagBytes": rules::MAX_TAG,
            "maxBlockers": rules::MAX_BLOCKERS,
            "maxChannelBytes": rules::MAX_CHANNEL,
            "maxWaitSeconds": MAX_WAIT,
            "pages": super::PAGE_SIZES
                .iter()
                .map(|(list, (default, max))| (list.to_string(), json!({"default": default, "max": max})))
                .collect::<serde_json::Map<_, _>>(),
            "files": {
                "maxPatternsPerRequest": muster_protocol::MAX_PATTERNS,
                "maxPatternBytes": muster_protocol::glob::MAX_PATTERN,
                "maxWildcardsPerPattern": muster_protocol::glob::MAX_WILDCARDS,
                "maxAutomatonStates": muster_protocol::glob::MAX_STATES,
                "maxAutomatonMoves": muster_protocol::glob::MAX_MOVES,
                "maxMatchStepsPerRequest": muster_protocol::MAX_MATCH_STEPS,
                "maxPathChars": muster_protocol::glob::MAX_PATH,
                "maxPathsPerWho": muster_protocol::MAX_WHO_PATHS,
                "maxHeldPerAgent": muster_protocol::MAX_PER_AGENT,
                "defaultTtlSeconds": muster_protocol::DEFAULT_TTL_SECONDS,
                "maxTtlSeconds": muster_protocol::MAX_TTL_SECONDS,
                "maxRepoBytes": muster_protocol::MAX_REPO,
            },
        },
    })
}
