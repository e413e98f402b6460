//! The broker's own writes, made as the system caller (only this folder can make one): at
//! start, no session survived the last stop; every tick, claims of owners that stayed away
//! too long are released; once a minute, the log is trimmed to its retention.

use std::sync::Arc;
use std::time::Duration;

use super::broker::Broker;
use super::caller::Caller;
use super::error::ApiError;
use crate::core::Command;

/// How often the log is trimmed to its retention.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

impl Broker {
    /// At start: agents that had sessions open when the broker stopped are offline now.
    pub(crate) async fn reset_sessions(&self) -> Result<(), ApiError> {
        self.write(&Caller::system(), Command::ResetConnections, None).await.map(|_| ())
    }

    /// Runs the timers until the broker stops: a `Tick` every `every` (and whenever a
    /// manual clock is moved), and the log's retention once a minute.
    pub(crate) async fn run_timers(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retention = tokio::time::interval(RETENTION_EVERY);
        let mut moves = self.clock.moves();
        loop {
            tokio::select! {
                _ = tick.tick() => self.tick().await,
                () = moves.next() => self.tick().await,
                _ = retention.tick() => self.trim().await,
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Releases the claims of owners that have been away longer than their grace or lease.
    async fn tick(&self) {
        if let Err(error) = self.write(&Caller::system(), Command::Tick, None).await {
            tracing::warn!(%error, "tick failed");
        }
    }

    /// Trims the event log to its retention (by count and by age).
    async fn trim(&self) {
        let head = self.head();
        let older_than = self.now() - self.limits.retain_for;
        let keep = self.limits.retain_events;
        let store = Arc::clone(self.store());
        match tokio::task::spawn_blocking(move || store.trim(head, keep, older_than)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "trimmed the event log to its retention"),
            Ok(Err(error)) => tracing::warn!(%error, "trimming the event log failed"),
            Err(error) => tracing::warn!(%error, "trimming the event log panicked"),
        }
    }
}
