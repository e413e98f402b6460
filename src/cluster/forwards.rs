//! A forwarded write is sent again until answered, and run once. NATS request/reply is at
//! most once: a request or its reply sent while a nats-server dies is lost, and the follower
//! would wait out its whole deadline. So a follower sends the same write (one id) again every
//! [`RESEND_AFTER`] until answered, and the leader keeps, per id, the write's outcome (or
//! that it is being decided): a copy joins it, never runs the write a second time.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

/// How long a follower waits for an answer before it sends the write again.
pub(super) const RESEND_AFTER: Duration = Duration::from_secs(2);
/// How long the leader keeps a write's outcome: longer than a follower sends it again.
const KEPT: Duration = Duration::from_secs(40);
/// At most this many outcomes kept (the oldest go first): about 40 s of forwarded writes at
/// 2,500 a second, a few MiB.
const MOST: usize = 100_000;

/// On the leader, for one term: the writes forwarded to it, by id.
#[derive(Default)]
pub(super) struct Forwards {
    outcomes: HashMap<String, watch::Receiver<Option<Bytes>>>,
    /// Ids in the order they came, to forget them.
    came: VecDeque<(Instant, String)>,
}

/// What to do with a forwarded write.
pub(super) enum Joined {
    /// The first copy: run it, then send its outcome here.
    First(watch::Sender<Option<Bytes>>),
    /// A copy of a write already taken: its outcome comes here (at once if decided).
    Copy(watch::Receiver<Option<Bytes>>),
}

impl Forwards {
    /// Takes the write `id` (a copy joins the first).
    pub(super) fn join(&mut self, id: &str) -> Joined {
        if let Some(outcome) = self.outcomes.get(id) {
            return Joined::Copy(outcome.clone());
        }
        let now = Instant::now();
        while let Some((at, old)) = self.came.front()
            && (now.duration_since(*at) > KEPT || self.came.len() >= MOST)
        {
            self.outcomes.remove(old);
            self.came.pop_front();
        }
        let (sender, receiver) = watch::channel(None);
        self.outcomes.insert(id.to_owned(), receiver);
        self.came.push_back((now, id.to_owned()));
        Joined::First(sender)
    }

    /// Whether the write `id` was taken (in this term).
    pub(super) fn knows(&self, id: &str) -> bool {
        self.outcomes.contains_key(id)
    }
}

/// The outcome of a write taken as [`Joined::Copy`], once decided (`None` if its first
/// copy was dropped undecided: the leader stopped).
pub(super) async fn outcome(mut copy: watch::Receiver<Option<Bytes>>) -> Option<Bytes> {
    copy.wait_for(Option::is_some).await.ok().and_then(|o| o.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_copy_gets_the_first_ones_outcome_and_never_runs_again() {
        let mut forwards = Forwards::default();
        let Joined::First(first) = forwards.join("n2.1") else { panic!("the first copy runs") };
        let Joined::Copy(early) = forwards.join("n2.1") else { panic!("a copy joins") };
        assert!(matches!(forwards.join("n2.2"), Joined::First(_)), "another write runs");
        first.send_replace(Some(Bytes::from_static(b"{\"Ok\":1}")));
        assert_eq!(outcome(early).await.as_deref(), Some(&b"{\"Ok\":1}"[..]));
        let Joined::Copy(late) = forwards.join("n2.1") else { panic!("a late copy joins") };
        assert_eq!(outcome(late).await.as_deref(), Some(&b"{\"Ok\":1}"[..]));
        assert!(forwards.knows("n2.1") && !forwards.knows("n3.1"));
    }

    #[tokio::test]
    async fn a_copy_of_a_write_whose_leader_stopped_gets_nothing() {
        let mut forwards = Forwards::default();
        let Joined::First(first) = forwards.join("n2.1") else { panic!() };
        let Joined::Copy(copy) = forwards.join("n2.1") else { panic!() };
        drop(first);
        assert_eq!(outcome(copy).await, None);
    }

    #[test]
    fn at_most_so_many_outcomes_are_kept() {
        let mut forwards = Forwards::default();
        for i in 0..MOST + 10 {
            let _ = forwards.join(&i.to_string());
        }
        assert_eq!(forwards.outcomes.len(), MOST);
        assert!(!forwards.knows("9") && forwards.knows("10"));
    }
}
