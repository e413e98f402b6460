//! The thresholds that turn silence into a presence status, and absence into released
//! claims: pure functions of an agent's record and the time of the question.

use std::time::Duration;

use muster_protocol::{Agent, PresenceStatus, Timestamp};
use serde::{Deserialize, Serialize};

/// The thresholds that turn "last seen" into a status, and absence into released claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Policy {
    /// Silent this long (and no open session): `idle`.
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// Silent this long (and no open session): `offline`.
    #[serde(with = "humantime_serde")]
    pub offline_after: Duration,
    /// Holding a `doing` task and silent this long: `stuck`.
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
    /// After an agent's last WebSocket session closes, its claims are kept this long for
    /// it to come back, then released (`owner_gone`).
    #[serde(with = "humantime_serde")]
    pub claim_grace: Duration,
    /// An agent without a session keeps its claims while it is in contact (any write, or a
    /// heartbeat) at least this often; then they are released (`owner_gone`).
    #[serde(with = "humantime_serde")]
    pub claim_lease: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            idle_after: Duration::from_secs(5 * 60),
            offline_after: Duration::from_secs(30 * 60),
            stuck_after: Duration::from_secs(20 * 60),
            claim_grace: Duration::from_secs(5 * 60),
            claim_lease: Duration::from_secs(30 * 60),
        }
    }
}

/// The time since `at`, as seen at `now`; zero if `at` is in the future.
pub(super) fn silence(at: Timestamp, now: Timestamp) -> Duration {
    (now - at).to_std().unwrap_or_default()
}

/// Whether the agent closed its last session and has not been in contact since.
fn left(agent: &Agent) -> Option<Timestamp> {
    agent.left_at.filter(|l| agent.connections == 0 && *l >= agent.last_seen_at)
}

impl Policy {
    /// The status an agent shows at `now`: its own status (or `active`) while it has a
    /// session or was in contact recently; `offline` from the moment its last session
    /// closed; otherwise `idle`, then `offline`, as the silence grows.
    pub fn status(&self, agent: &Agent, now: Timestamp) -> PresenceStatus {
        let silent = silence(agent.last_seen_at, now);
        let own = || agent.status.as_deref().map_or(PresenceStatus::Active, PresenceStatus::parse);
        if agent.connections > 0 {
            own()
        } else if left(agent).is_some() || silent >= self.offline_after {
            PresenceStatus::Offline
        } else if silent < self.idle_after {
            own()
        } else {
            PresenceStatus::Idle
        }
    }

    /// When the claims of `agent` expire if nothing changes: never while it has a
    /// session; `claim_grace` after its last session closed; `claim_lease` after its last
    /// contact otherwise.
    pub fn claims_expire_at(&self, agent: &Agent) -> Option<Timestamp> {
        if agent.connections > 0 {
            return None;
        }
        Some(match left(agent) {
            Some(left_at) => left_at + self.claim_grace,
            None => agent.last_seen_at + self.claim_lease,
        })
    }
}
