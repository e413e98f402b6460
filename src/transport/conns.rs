//! The HTTP connections that are not (yet) a WebSocket or an event stream, bounded.
//!
//! Every accepted connection joins the pool; it leaves when it closes, or when it becomes a
//! WebSocket or an SSE stream (those have their own limit and pings). At the cap, a new
//! connection makes the oldest idle one (no request in progress) close — or, when none is
//! idle, the oldest one, once its request is answered. Refusing the newcomer instead would
//! let silent connections keep everyone else out; this way they are the ones that go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
        while inner.pool.len() >= self.cap {
            // The oldest idle connection; else the oldest of all, after its request.
            let victim = inner.pool.iter().min_by_key(|(_, e)| (e.busy > 0, e.since)).map(|(id, _)| *id);
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
    async fn a_full_pool_closes_its_oldest_idle_connection_first() {
        let conns = Conns::new(2);
        let busy = conns.open();
        busy.begin();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let idle = conns.open();
        let third = conns.open();
        assert!(idle.closing().is_cancelled(), "the idle one made room");
        assert!(!busy.closing().is_cancelled(), "the older one is answering a request");
        assert_eq!(conns.len(), 2);
        // Nothing idle: the oldest goes, after its request.
        third.begin();
        let _fourth = conns.open();
        assert!(busy.closing().is_cancelled());
        // A stream leaves the pool and is never asked to close by it.
        third.stream();
        assert_eq!(conns.len(), 1);
        let _fifth = conns.open();
        assert!(!third.closing().is_cancelled());
    }
}
