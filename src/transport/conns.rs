//! The HTTP connections that are not (yet) a WebSocket or an event stream, bounded.
//!
//! Every accepted connection joins the pool; it leaves when it closes, or when it becomes a
//! WebSocket or an SSE stream (those have their own limit and pings). At the cap, a new
//! connection makes the oldest idle one (no request in progress for [`SETTLE`]) close.
//! Refusing the newcomer instead would let silent connections keep everyone else out; this
//! way they are the ones that go. A burst of new connections (none idle long enough yet) may
//! take the pool to twice its cap; beyond that the oldest connection goes whatever it does,
//! once its request is answered.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a connection has been idle before the pool may close it to make room: a client
/// that just connected has not had the time to send its request.
const SETTLE: Duration = Duration::from_secs(1);

/// The pool.
pub(crate) struct Conns {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    pool: HashMap<u64, Entry>,
}

struct Entry {
    /// Requests in progress.
    busy: u32,
    /// When it opened, or last finished a request.
    since: Instant,
    close: CancellationToken,
}

/// One connection's place in the pool. Cloned into each of its requests, so that a handler
/// can take it out of the pool ([`Conn::stream`]).
#[derive(Clone)]
pub(crate) struct Conn {
    id: u64,
    conns: Arc<Conns>,
    close: CancellationToken,
}

impl Conns {
    /// A pool of at most `cap` connections.
    pub(crate) fn new(cap: usize) -> Arc<Conns> {
        Arc::new(Conns { cap, inner: Mutex::new(Inner::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; the map is still valid.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections in the pool now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().pool.len()
    }

    /// Adds a new connection, making room first if the pool is full.
    pub(crate) fn open(self: &Arc<Self>) -> Conn {
        let mut inner = self.lock();
        let settled = Instant::now().checked_sub(SETTLE);
        while inner.pool.len() >= self.cap {
            // The oldest settled idle connection; past twice the cap, the oldest of all.
            let idle = inner
                .pool
                .iter()
                .filter(|(_, e)| e.busy == 0 && settled.is_some_and(|s| e.since <= s))
                .min_by_key(|(id, e)| (e.since, **id))
                .map(|(id, _)| *id);
            let victim = match idle {
                Some(id) => Some(id),
                None if inner.pool.len() >= 2 * self.cap => {
                    inner.pool.iter().min_by_key(|(id, e)| (e.busy > 0, e.since, **id)).map(|(id, _)| *id)
                }
                None => None,
            };
            let Some(victim) = victim else { break };
            if let Some(entry) = inner.pool.remove(&victim) {
                entry.close.cancel();
            }
        }
        let id = inner.next;
        inner.next += 1;
        let close = CancellationToken::new();
        inner.pool.insert(id, Entry { busy: 0, since: Instant::now(), close: close.clone() });
        Conn { id, conns: Arc::clone(self), close }
    }
}

impl Conn {
    /// A request began.
    pub(crate) fn begin(&self) {
        if let Some(entry) = self.conns.lock().pool.get_mut(&self.id) {
            entry.busy += 1;
        }
    }

    /// A request was answered.
    pub(crate) fn end(&self) {
        if let Some(entry) = self.conns.lock().pool.get_mut(&self.id) {
            entry.busy = entry.busy.saturating_sub(1);
            entry.since = Instant::now();
        }
    }

    /// The connection is a WebSocket or an event stream now: it leaves the pool.
    pub(crate) fn stream(&self) {
        self.conns.lock().pool.remove(&self.id);
    }

    /// Cancelled when the pool needs the room: the connection should close.
    pub(crate) fn closing(&self) -> &CancellationToken {
        &self.close
    }

    /// The connection closed: it leaves the pool.
    pub(crate) fn closed(&self) {
        self.stream();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_pool_closes_its_oldest_settled_idle_connections() {
        let conns = Conns::new(2);
        let busy = conns.open();
        busy.begin();
        let idle = conns.open();
        // Both just connected: a newcomer is let in beyond the cap, up to twice it.
        let third = conns.open();
        assert!(!idle.closing().is_cancelled(), "a connection that just opened is given its time");
        assert_eq!(conns.len(), 3);
        tokio::time::advance(SETTLE).await;
        let fourth = conns.open();
        assert!(idle.closing().is_cancelled() && third.closing().is_cancelled(), "the settled idle ones made room");
        assert!(!busy.closing().is_cancelled(), "the one answering a request stays");
        assert_eq!(conns.len(), 2);
        // Twice the cap and nothing settled: the oldest goes, an idle one before a busy one.
        let fifth = conns.open();
        let _sixth = conns.open();
        assert_eq!(conns.len(), 4);
        let _seventh = conns.open();
        assert!(fourth.closing().is_cancelled() && !busy.closing().is_cancelled());
        assert_eq!(conns.len(), 4);
        // A stream leaves the pool and is never asked to close by it.
        fifth.stream();
        assert_eq!(conns.len(), 3);
        let _eighth = conns.open();
        assert!(!fifth.closing().is_cancelled());
    }
}
