//! What every client command shares: the global options, the one connection to the broker,
//! the exit codes and failures, and how output is printed.

use std::process::ExitCode;

use clap::Args;
use muster_client::protocol::{ErrorCode, TaskId, Topic};
use muster_client::{Client, Error, Options};
use serde::Serialize;

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The broker.
    #[arg(long, env = "MUSTER_URL", default_value = "http://127.0.0.1:4445", global = true)]
    pub url: String,
    /// The workspace you work in (default: the broker's `default`).
    #[arg(long, env = "MUSTER_WORKSPACE", global = true, value_name = "WORKSPACE")]
    pub workspace: Option<String>,
    /// The agent you act as.
    #[arg(long = "as", env = "MUSTER_AGENT", global = true, value_name = "AGENT")]
    pub agent: Option<String>,
    /// Print JSON, one object per line, instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The token the broker issued to you (where tokens are on).
    #[arg(long, env = "MUSTER_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<muster_client::protocol::ws::Secret>,
    /// A file holding your token (its first line), read when no token is given: keeps the
    /// token out of the command line and the environment, where other local users and
    /// processes may see it.
    #[arg(long, env = "MUSTER_TOKEN_FILE", global = true, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
}

impl Global {
    /// The connection's options: the broker, the workspace and the token.
    pub fn options(&self) -> Options {
        let mut options = Options::new(self.url.clone());
        options.workspace = self.workspace.clone();
        options.token = self.token.clone();
        options
    }

    /// Reads the token from `--token-file` when no token was given.
    pub fn read_token_file(&mut self) -> Result<(), String> {
        let (None, Some(path)) = (&self.token, &self.token_file) else { return Ok(()) };
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!("cannot read the token file {} (--token-file, MUSTER_TOKEN_FILE): {e}", path.display())
        })?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            return Err(format!("the token file {} is empty", path.display()));
        }
        self.token = Some(muster_client::protocol::ws::Secret(token.to_owned()));
        Ok(())
    }
}

/// The client options (`--url`, `--as`, `--json`, `--token`) under a command that does not
/// use them: accepted and ignored as before, but kept out of its `--help`. They are global
/// options, and clap does not give a command the global option when it has its own of the
/// same id.
#[derive(Debug, Clone, Args)]
pub struct Unused {
    #[command(flatten)]
    connection: UnusedConnection,
    #[arg(long, hide = true)]
    workspace: Option<String>,
}

/// [`Unused`] but `--workspace`, for a command that has its own.
#[derive(Debug, Clone, Args)]
pub struct UnusedConnection {
    #[arg(long, hide = true)]
    url: Option<String>,
    #[arg(long = "as", hide = true)]
    agent: Option<String>,
    #[arg(long, hide = true)]
    json: bool,
    #[arg(long, hide = true)]
    token: Option<String>,
    #[arg(long, hide = true)]
    token_file: Option<String>,
}

/// Exit codes, for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// Something else went wrong.
    Failed = 1,
    /// (clap) bad usage.
    Usage = 2,
    /// No broker at the URL.
    Unreachable = 3,
    /// No such task (or message, or agent).
    NotFound = 4,
    /// Someone else holds the task, the token is stale, or it waits on other tasks.
    Conflict = 5,
    /// Invalid input, or a status change that is not allowed.
    Invalid = 6,
    /// `wait` timed out.
    Timeout = 7,
    /// The broker cannot take writes now (retry), or the connection was lost.
    Unavailable = 8,
    /// `task next` found nothing to do.
    NothingToDo = 9,
    /// A token is required, is wrong, or belongs to another agent.
    NotAllowed = 10,
}

impl Exit {
    /// The code `--json` errors carry when the broker did not answer with one.
    pub fn code(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Failed => "failed",
            Exit::Usage => "usage",
            Exit::Unreachable => "unreachable",
            Exit::NotFound => "not_found",
            Exit::Conflict => "conflict",
            Exit::Invalid => "invalid",
            Exit::Timeout => "timeout",
            Exit::Unavailable => "unavailable",
            Exit::NothingToDo => "nothing_to_do",
            Exit::NotAllowed => "not_allowed",
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A failed command: what to say and how to exit.
pub(super) struct Failure {
    pub(super) exit: Exit,
    pub(super) message: String,
    pub(super) code: Option<ErrorCode>,
}

impl Failure {
    pub(super) fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure { exit, message: message.into(), code: None }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        match e {
            Error::Unreachable { url, reason } => Failure::new(
                Exit::Unreachable,
                format!(
                    "broker not running at {url} (start it with `muster serve`, or set --url / MUSTER_URL): {reason}"
                ),
            ),
            Error::Api(info) => {
                let exit = match info.code {
                    ErrorCode::NotFound => Exit::NotFound,
                    ErrorCode::Conflict | ErrorCode::StaleClaim | ErrorCode::Blocked => Exit::Conflict,
                    ErrorCode::Invalid
                    | ErrorCode::InvalidTransition
                    | ErrorCode::IdempotencyMismatch
                    | ErrorCode::TooLarge
                    | ErrorCode::MethodNotAllowed => Exit::Invalid,
                    ErrorCode::Unavailable
                    | ErrorCode::InsufficientStorage
                    | ErrorCode::RateLimited
                    | ErrorCode::RequestTimeout => Exit::Unavailable,
                    ErrorCode::Internal => Exit::Failed,
                    ErrorCode::Unauthorized | ErrorCode::Forbidden => Exit::NotAllowed,
                };
                Failure { exit, message: info.message, code: Some(info.code) }
            }
            Error::Disconnected | Error::Closed => Failure::new(Exit::Unavailable, e.to_string()),
            Error::Revoked(_) => Failure::new(Exit::NotAllowed, e.to_string()),
            Error::Protocol(_) => Failure::new(Exit::Failed, e.to_string()),
        }
    }
}

/// What a command prints: text for humans, a value for `--json`.
pub(super) struct Out {
    pub(super) json: bool,
}

impl Out {
    pub(super) fn show<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string(value) {
                Ok(line) => say!("{line}"),
                Err(e) => eprintln!("muster: {e}"),
            }
        } else {
            say!("{}", text());
        }
    }
}

pub(super) fn task_id(raw: &str) -> Result<TaskId, Failure> {
    raw.parse().map_err(|e: muster_client::protocol::ParseIdError| Failure::new(Exit::Invalid, e.to_string()))
}

/// A topic, checked (`task:12` is `task:T-12`).
pub(super) fn topic(raw: &str) -> Result<Topic, Failure> {
    raw.parse().map_err(|e: muster_client::protocol::ParseTopicError| Failure::new(Exit::Invalid, e.to_string()))
}

pub(super) fn require_agent(global: &Global) -> Result<String, Failure> {
    global.agent.clone().ok_or_else(|| Failure::new(Exit::Invalid, "name yourself: --as NAME or MUSTER_AGENT=NAME"))
}

/// The agent a write acts as: `--as`, or, with a token and no `--as`, the token's agent
/// (the broker fills it in).
pub(super) fn acting(global: &Global) -> Result<Option<String>, Failure> {
    match (&global.agent, &global.token) {
        (Some(agent), _) => Ok(Some(agent.clone())),
        (None, Some(_)) => Ok(None),
        (None, None) => Err(Failure::new(
            Exit::Invalid,
            "name yourself: --as NAME or MUSTER_AGENT=NAME (or act as your token's agent with MUSTER_TOKEN)",
        )),
    }
}

pub(super) async fn connect(
    global: &Global,
    topics: Vec<String>,
    since: Option<u64>,
) -> Result<(Client, muster_client::Events), Failure> {
    let mut options = global.options().topics(topics).once();
    options.since = since;
    Ok(Client::connect(options).await?)
}
