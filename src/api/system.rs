//! The broker about itself: health (open to anyone) and metrics.

use muster_protocol::{Health, TaskStatus};

use super::broker::Broker;
use super::caller::Caller;
use super::error::ApiError;

impl Broker {
    /// Liveness, version, epoch and head. Open to anyone, with tokens on too.
    pub(crate) fn health(&self) -> Health {
        Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            epoch: self.epoch().into(),
            head: self.head(),
        }
    }

    /// Counters and gauges in the Prometheus text format.
    pub(crate) fn metrics(&self, caller: &Caller) -> Result<String, ApiError> {
        let snapshot = self.read(caller)?;
        let model = &snapshot.model;
        let mut by_status = String::new();
        for status in TaskStatus::ALL {
            let n = model.tasks.values().filter(|t| t.status == status).count();
            by_status.push_str(&format!("muster_tasks{{status=\"{status}\"}} {n}\n"));
        }
        let extra = [
            ("muster_head_seq", "Newest durable event sequence number.", format!("muster_head_seq {}", model.head)),
            ("muster_tasks", "Tasks on the board by status.", by_status.trim_end().to_owned()),
            ("muster_agents", "Agents seen.", format!("muster_agents {}", model.agents.len())),
            (
                "muster_subscribers",
                "Connections following events (WebSocket, SSE, long-poll).",
                format!("muster_subscribers {}", self.hub().subscribers()),
            ),
            (
                "muster_store_bytes",
                "Bytes the database occupies on disk.",
                format!("muster_store_bytes {}", self.store().size_on_disk()),
            ),
        ];
        Ok(self.metrics.render(&extra))
    }
}
