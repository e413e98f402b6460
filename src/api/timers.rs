//! The broker's own writes, made as the system caller (only this folder can make one): at
//! start, no session survived the last stop; every tick, claims of owners that stayed away
//! too long are released, expired reservations end and agents whose presence changed by
//! silence alone (idle, offline, stuck) are announced; once a minute, the log is trimmed to
//! its retention.

use std::sync::Arc;
use std::time::Duration;

use super::broker::Broker;
use super::caller::Caller;
use super::error::ApiError;
use crate::core::Command;

/// How often the log is trimmed to its retention.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// At start: agents that had sessions open when the broker stopped are offline now. Not on
/// a cluster's node: the other nodes' sessions are still open.
pub(crate) async fn reset_sessions(broker: &Broker) -> Result<(), ApiError> {
    if broker.cluster().is_some() {
        return Ok(());
    }
    broker.write(&Caller::system(), Command::ResetConnections, None).await.map(|_| ())
}

/// Runs the timers until the broker stops: a `Tick` every `every` (and whenever a
/// manual clock is moved), the log's retention once a minute, and a look at the token file
/// twice a second.
pub(crate) async fn run(broker: Arc<Broker>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    let mut tokens = tokio::time::interval(crate::auth::RELOAD_EVERY);
    let mut moves = broker.clock.moves();
    loop {
        tokio::select! {
            _ = ticks.tick() => tick(&broker).await,
            () = moves.next() => tick(&broker).await,
            _ = retention.tick() => trim(&broker).await,
            // Re-read the token file even when no request comes: sessions of a revoked
            // token are closed by the change.
            _ = tokens.tick() => broker.tokens.refresh(),
            () = broker.shutdown.cancelled() => return,
        }
    }
}

/// Releases the claims of owners that have been away longer than their grace or lease, ends
/// expired reservations and announces presence changes (the rules are in `core`).
async fn tick(broker: &Broker) {
    // In a cluster, the leader's sequencer decides for everyone.
    if broker.cluster().is_some_and(|c| !c.leading()) {
        return;
    }
    if let Err(error) = broker.write(&Caller::system(), Command::Tick, None).await {
        tracing::warn!(%error, "tick failed");
    }
}

/// Trims the event log to its retention (by count and by age).
async fn trim(broker: &Broker) {
    let head = broker.head();
    let older_than = broker.now() - broker.limits.retain_for;
    let keep = broker.limits.retain_events;
    let (log, views) = (Arc::clone(&broker.store().log), Arc::clone(&broker.store().views));
    // Never past the agents checkpoint: the log after it restores `lastSeenAt`.
    let trim = move || log.trim(head.min(views.checkpointed()), keep, older_than);
    match tokio::task::spawn_blocking(trim).await {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => tracing::info!(removed, "trimmed the event log to its retention"),
        Ok(Err(error)) => tracing::warn!(%error, "trimming the event log failed"),
        Err(error) => tracing::warn!(%error, "trimming the event log panicked"),
    }
}
