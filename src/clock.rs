//! The broker's clock: the one source of "now" for event times, presence, claim grace and
//! leases. The system clock in production; a manual one in tests, moved by hand, so that a
//! test of a five-minute grace takes no time and cannot be late on a loaded machine.
//!
//! The sequencer runs on std threads, where tokio's paused time does not reach: the clock is
//! passed to it, and to every timer, instead.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_protocol::Timestamp;
use tokio::sync::watch;

/// A clock. Cheap to clone; clones read the same time.
#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    System,
    Manual {
        now: Mutex<Timestamp>,
        /// Bumped on every move, so that timers run at once.
        moved: watch::Sender<u64>,
    },
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::System => f.write_str("Clock::system"),
            Source::Manual { .. } => write!(f, "Clock::manual({})", self.now()),
        }
    }
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Source::System))
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: Timestamp) -> Clock {
        let (moved, _) = watch::channel(0);
        Clock(Arc::new(Source::Manual { now: Mutex::new(millis(start)), moved }))
    }

    /// Now, to the millisecond (the precision of event times on the wire).
    pub fn now(&self) -> Timestamp {
        match &*self.0 {
            Source::System => millis(chrono::Utc::now()),
            // A poisoned lock only means a panic elsewhere; the time is still valid.
            Source::Manual { now, .. } => *now.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Moves a manual clock forward and runs the broker's timers at once; returns false
    /// (and does nothing) on the system clock.
    pub fn advance(&self, by: Duration) -> bool {
        let Source::Manual { now, moved } = &*self.0 else { return false };
        {
            let mut now = now.lock().unwrap_or_else(|p| p.into_inner());
            *now += by;
        }
        moved.send_modify(|n| *n += 1);
        true
    }

    /// Resolves when a manual clock was moved since the last call on this `Moves`; never
    /// on the system clock. Timers select on it beside their interval.
    pub(crate) fn moves(&self) -> Moves {
        match &*self.0 {
            Source::System => Moves(None),
            Source::Manual { moved, .. } => Moves(Some(moved.subscribe())),
        }
    }
}

/// The moves of a manual clock, for a timer to wake on.
pub(crate) struct Moves(Option<watch::Receiver<u64>>);

impl Moves {
    /// Waits for the next move (forever on the system clock).
    pub(crate) async fn next(&mut self) {
        let moved = match &mut self.0 {
            Some(rx) => rx.changed().await.is_ok(),
            None => false,
        };
        if !moved {
            std::future::pending::<()>().await;
        }
    }
}

fn millis(at: Timestamp) -> Timestamp {
    Timestamp::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_moves_only_by_hand_and_wakes_timers() {
        let start: Timestamp = "2026-12-01T10:00:00.123456Z".parse().unwrap_or_default();
        let clock = Clock::manual(start);
        assert_eq!(clock.now().to_rfc3339(), "2026-12-01T10:00:00.123+00:00");
        let mut moves = clock.moves();
        assert!(clock.advance(Duration::from_secs(300)));
        moves.next().await;
        assert_eq!(clock.now().to_rfc3339(), "2026-12-01T10:05:00.123+00:00");
        assert!(!Clock::system().advance(Duration::from_secs(1)));
    }
}
