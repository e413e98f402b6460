//! [`Matcher`]: the threads that run the costly checks of file patterns (a reserve's
//! overlaps with the held reservations, a `who`'s matches), off the async workers and off
//! the writer, at a lower CPU priority than the rest of the broker, and within a share of
//! the machine.
//!
//! Each check is bounded (`MAX_MATCH_STEPS`, about 2 ms), but a client can send them in a
//! loop. Measured on two cores (BENCHMARKS.md, "Reservations under attack"): with the
//! checks on a thread of ordinary priority, or only niced, other agents' chat posts waited
//! for them (p99 2.5-3× its idle value): the scheduler lets a running thread finish its
//! slice (milliseconds) before a woken one runs. So the checks run on one thread per core
//! but one under Linux's `SCHED_IDLE` policy, which any other thread preempts at once, and
//! together take at most [`SHARE`] of a core's time per thread, past a burst of [`BURST`]:
//! an agent that floods the broker with costly reserves waits for its answers, and other
//! agents' chat and ordinary reserves keep their pace.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, oneshot};

use crate::metrics::Metrics;

/// The share of one core's time the checks may take, per matching thread, sustained: their
/// memory traffic still slows the other cores a little (measured: chat p99 1.4-1.8× idle
/// at 5 %, 1.3-3× with no limit).
const SHARE: f64 = 0.1;
/// How much checking may run at once before [`SHARE`] applies: ordinary reserves and
/// `who`s take microseconds each and never wait for it.
const BURST: Duration = Duration::from_millis(100);

type Job = Box<dyn FnOnce() + Send>;

/// The matching threads, and the requests waiting for one.
pub(crate) struct Matcher {
    /// Held by each request from before it is queued until its answer: at most one job
    /// per thread exists at a time, so the channel below never fills.
    permits: Semaphore,
    jobs: mpsc::SyncSender<Job>,
    metrics: Arc<Metrics>,
}

/// The matcher stopped (the broker is going away).
#[derive(Debug)]
pub(crate) struct Stopped;

/// The checking time the threads may still spend now: it grows by [`SHARE`] per thread of
/// the time passed, up to [`BURST`], and each check spends what it took.
struct Allowance {
    left: Duration,
    at: Instant,
    share: f64,
}

impl Allowance {
    /// Spends `used`; returns how long to wait before the next check.
    fn spend(&mut self, used: Duration) -> Duration {
        let now = Instant::now();
        let earned = now.duration_since(self.at).mul_f64(self.share);
        self.at = now;
        let left = (self.left + earned).min(BURST);
        match left.checked_sub(used) {
            Some(left) => {
                self.left = left;
                Duration::ZERO
            }
            None => {
                self.left = Duration::ZERO;
                (used - left).div_f64(self.share)
            }
        }
    }
}

impl Matcher {
    /// Starts one thread per core but one (at least one).
    pub(crate) fn start(metrics: Arc<Metrics>) -> Matcher {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1));
        let (jobs, queue) = mpsc::sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let share = SHARE * threads as f64;
        let allowance = Arc::new(Mutex::new(Allowance { left: BURST, at: Instant::now(), share }));
        for i in 0..threads {
            let (queue, allowance) = (Arc::clone(&queue), Arc::clone(&allowance));
            let spawned = std::thread::Builder::new().name(format!("muster-match-{i}")).spawn(move || {
                lower_priority();
                // A poisoned lock only means another matching thread panicked.
                while let Ok(job) = queue.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                    let started = Instant::now();
                    job();
                    let wait = allowance.lock().unwrap_or_else(|p| p.into_inner()).spend(started.elapsed());
                    std::thread::sleep(wait);
                }
            });
            if let Err(error) = spawned {
                tracing::error!(%error, "could not start a matching thread");
            }
        }
        Matcher { permits: Semaphore::new(threads), jobs, metrics }
    }

    /// Runs `f` on a matching thread, waiting for one to be free (in order of arrival).
    pub(crate) async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Stopped> {
        // The semaphore is never closed.
        let _permit = self.permits.acquire().await;
        let (answer, answered) = oneshot::channel();
        let metrics = Arc::clone(&self.metrics);
        let job: Job = Box::new(move || {
            let started = Instant::now();
            let out = f();
            metrics.match_seconds.observe(started.elapsed());
            let _ = answer.send(out);
        });
        self.jobs.try_send(job).map_err(|_| Stopped)?;
        answered.await.map_err(|_| Stopped)
    }
}

/// Puts the calling thread under `SCHED_IDLE`: it runs only when no other thread wants the
/// CPU, and any other is preempted for at once.
#[cfg(target_os = "linux")]
fn lower_priority() {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(error) = set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle) {
        tracing::warn!(?error, "could not put the matching thread under SCHED_IDLE; it keeps the broker's priority");
    }
}

/// Elsewhere the thread keeps the broker's priority ([`SHARE`] still applies).
#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_wait_only_once_they_used_their_burst() {
        let mut a = Allowance { left: BURST, at: Instant::now(), share: 0.1 };
        assert_eq!(a.spend(Duration::from_millis(60)), Duration::ZERO);
        assert_eq!(a.spend(Duration::from_millis(30)), Duration::ZERO);
        // 100 ms of burst, 90 spent: 10 ms left, so 20 ms more waits for the other 10 ms at a
        // tenth of real time (a little less: some was earned meanwhile).
        let wait = a.spend(Duration::from_millis(20));
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
    }
}
