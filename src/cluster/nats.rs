//! Every request to the NATS servers, bounded. A server that is paused (SIGSTOP, or a
//! network that keeps the TCP connection up and carries nothing) answers nothing, and one
//! await without a limit holds a node's follow or lease loop for ever: the cluster then has
//! no leader while every process runs. Each call through [`bounded`] ends within its limit
//! with an error that says what was asked.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How long any one request to the NATS servers may take (a KV read or write, a stream's
/// info, a consumer's creation).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long JetStream has to confirm a batch: longer than a stream's own failover (5–7 s),
/// during which its publishes wait.
pub(super) const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request that creates a stream waits: nodes started together ask for the same
/// stream at once, and nats-server 2.9 answers only one of them (the others retry, then
/// find it made).
pub(super) const CREATE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `join` keeps trying to reach the NATS servers.
pub(super) const CONNECT_FOR: Duration = Duration::from_secs(30);

/// A request to the NATS servers that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NatsError {
    /// No answer within the limit.
    #[error("the NATS servers did not answer {what} within {} s", .within.as_secs_f32())]
    TimedOut {
        /// What was asked.
        what: String,
        /// The limit.
        within: Duration,
    },
    /// An answer that is an error.
    #[error("{what}: {detail}")]
    Failed {
        /// What was asked.
        what: String,
        /// What the servers (or the client library) said.
        detail: String,
    },
}

/// `call`, asked as `what`, given at most `within`.
pub(super) async fn bounded<T, E: Display>(
    what: &str,
    within: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, NatsError> {
    match tokio::time::timeout(within, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(NatsError::Failed { what: what.to_owned(), detail: e.to_string() }),
        Err(_) => Err(NatsError::TimedOut { what: what.to_owned(), within }),
    }
}

/// Runs `step` until it succeeds, for at most [`CONNECT_FOR`]: servers that just started
/// take a moment to elect the leaders of the streams they hold.
pub(super) async fn retry<T, E: Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut step: impl FnMut() -> F,
) -> Result<T, String> {
    let started = Instant::now();
    loop {
        match step().await {
            Ok(value) => return Ok(value),
            Err(error) if started.elapsed() < CONNECT_FOR => {
                tracing::warn!(%error, "cluster: {what} failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(format!("cluster: {what}: {error}")),
        }
    }
}
