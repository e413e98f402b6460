//! # muster-client — the Rust client of the Muster broker
//!
//! One WebSocket session to the broker: typed request/reply for every operation, a stream
//! of events, and automatic reconnection with backoff that resumes from the last `seq`
//! received — no gap, no duplicate — and says so when resuming was not possible.
//!
//! ```no_run
//! # async fn demo() -> Result<(), muster_client::Error> {
//! use muster_client::{Client, Notice, Options};
//! use muster_client::protocol::CreateTask;
//!
//! let (client, mut events) = Client::connect(Options::new("http://127.0.0.1:4445").agent("link").topics(["tasks"])).await?;
//! let task = client.create_task(CreateTask { title: "Fix auth redirect".into(), ..Default::default() }).await?;
//! client.claim(task.id, Default::default()).await?;
//! while let Some(Notice::Event(event)) = events.next().await {
//!     println!("{} {}", event.seq, event.kind.type_name());
//! }
//! # Ok(()) }
//! ```
//!
//! A session that names an `agent` makes it present while connected and holds its claims
//! (see the broker's lease rules); without an agent the session is an observer and each
//! operation names its agent.

mod wait;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
pub use muster_protocol as protocol;
use muster_protocol::ws::{Hello, Op, Reply, Request, ServerFrame, Topics, Welcome, reply};
use muster_protocol::{
    AckInbox, AddComment, AddWorkspace, ChannelInfo, ChatMessage, ChatReadArgs, CreateTask, Cursor, ErrorInfo, Event,
    FilesQuery, Heartbeat, Inbox, InboxAckArgs, InboxReadArgs, ListArgs, MessageList, NextArgs, NoArgs, PageArgs,
    PathHolders, PostMessage, Presence, PresenceSetArgs, ReleaseFiles, RemoveWorkspace, Reservation, ReserveFiles, Seq,
    Task, TaskAction, TaskActionArgs, TaskCommentArgs, TaskCommentsArgs, TaskId, TaskList, TaskRef, TaskUpdateArgs,
    UpdateTask, WhoHasFiles, WorkspaceInfo,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
pub use wait::{Wait, Waited};

/// Events waiting for the application. When it does not read them, the session stops
/// reading the socket, the broker closes it as a slow consumer, and the client resumes.
const EVENT_BUFFER: usize = 1024;
/// Notices kept for waiters ([`Client::wait_for`]) that are slow to look; one that falls
/// further behind re-checks the state (`Lagged` is never ignored).
const LISTEN_BUFFER: usize = 1024;
/// Requests waiting to be sent.
const CALL_BUFFER: usize = 64;
/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How to connect.
#[derive(Debug, Clone)]
pub struct Options {
    /// The broker: `http://127.0.0.1:4445` (or `ws://...`). For a cluster, its nodes'
    /// URLs separated by commas: they are tried in turn, at the start and after each lost
    /// connection, and the session resumes by `seq` on whichever answers.
    pub url: String,
    /// The workspace to work in (`None`: the broker's `default`, or the one a
    /// `…/w/{workspace}` URL names).
    pub workspace: Option<String>,
    /// The agent this session acts as; `None` for an observer.
    pub agent: Option<String>,
    /// The session is a person's, not an AI agent's (needs `agent`).
    pub human: bool,
    /// The token the broker issued (where tokens are on).
    pub token: Option<muster_protocol::ws::Secret>,
    /// Topics to receive from the start.
    pub topics: Vec<String>,
    /// Resume after this `seq` on the first connection (later ones resume from the last
    /// event received).
    pub since: Option<Seq>,
    /// The epoch `since` belongs to.
    pub epoch: Option<String>,
    /// Reconnect when the connection is lost (default: yes).
    pub reconnect: bool,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
}

impl Options {
    /// Options for the broker at `url`, as an observer, reconnecting.
    pub fn new(url: impl Into<String>) -> Options {
        Options {
            url: url.into(),
            workspace: None,
            agent: None,
            human: false,
            token: None,
            topics: Vec::new(),
            since: None,
            epoch: None,
            reconnect: true,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Works in `workspace`.
    pub fn workspace(mut self, workspace: impl Into<String>) -> Options {
        self.workspace = Some(workspace.into());
        self
    }

    /// Acts as `agent`.
    pub fn agent(mut self, agent: impl Into<String>) -> Options {
        self.agent = Some(agent.into());
        self
    }

    /// Receives `topics`.
    pub fn topics<I: IntoIterator<Item = S>, S: Into<String>>(mut self, topics: I) -> Options {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Resumes after `since` in `epoch`.
    pub fn resume(mut self, since: Seq, epoch: Option<String>) -> Options {
        self.since = Some(since);
        self.epoch = epoch;
        self
    }

    /// Does not reconnect: the event stream ends when the connection does.
    pub fn once(mut self) -> Options {
        self.reconnect = false;
        self
    }

    /// The WebSocket URLs, one per broker listed.
    fn ws_urls(&self) -> Vec<String> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(ws_url).collect()
    }
}

/// The WebSocket URL of a broker's URL.
fn ws_url(url: &str) -> String {
    let base = url.trim_end_matches('/');
    let base = base.strip_prefix("http://").map(|b| format!("ws://{b}")).unwrap_or_else(|| base.to_owned());
    let base = base.strip_prefix("https://").map(|b| format!("wss://{b}")).unwrap_or(base);
    if base.ends_with("/ws") { base } else { format!("{base}/ws") }
}

/// What can go wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No broker answers at the URL.
    #[error("broker not reachable at {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// The broker refused the operation (conflict, not found, invalid...).
    #[error("{}", .0.message)]
    Api(ErrorInfo),
    /// The connection was lost before the answer came: the operation may or may not have
    /// been applied.
    #[error("connection to the broker lost before it answered; the operation may or may not have happened")]
    Disconnected,
    /// The client was shut down.
    #[error("the client is closed")]
    Closed,
    /// The broker ended the session because its token was revoked (close code 4003). Final:
    /// the client does not reconnect; a new token is needed.
    #[error("the broker revoked this session's token: {0}")]
    Revoked(String),
    /// The broker answered something this client does not understand.
    #[error("unexpected answer from the broker: {0}")]
    Protocol(String),
}

/// What the event stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// An event, in `seq` order, each once.
    Event(Box<Event>),
    /// The session (re)connected and every event since the last one received was
    /// replayed: nothing was missed.
    Resumed {
        /// The broker's head when the session started.
        head: Seq,
    },
    /// The session (re)connected but could not replay what was missed (the broker's data
    /// was replaced, or the events are no longer retained): re-read the state you need.
    Resync {
        /// The broker's epoch now.
        epoch: String,
        /// Live events continue after this `seq`.
        head: Seq,
    },
}

/// The event stream of a client. Drop it if you do not read it: events the application does
/// not take make the session stop reading the socket.
pub struct Events {
    rx: mpsc::Receiver<Notice>,
}

impl Events {
    /// The next notice; `None` once the client is closed (or, with [`Options::once`], the
    /// connection is lost).
    pub async fn next(&mut self) -> Option<Notice> {
        self.rx.recv().await
    }
}

/// Where the session stands, shared with the handle.
#[derive(Debug, Default)]
struct Position {
    epoch: Option<String>,
    last_seq: Option<Seq>,
    /// The newest event this client has seen in any answer (a reply's `head`, an event):
    /// sent with every request as `after`, so that a read through another node of a cluster
    /// is never older than what this client has seen.
    seen: Option<Seq>,
    /// Why the session ended for good, if it did (what later calls are told).
    ended: Option<Error>,
}

struct Call {
    op: Op,
    reply: oneshot::Sender<Result<Value, Error>>,
}

/// A connection to the broker. Cheap to clone; the session ends when every clone is gone.
#[derive(Clone)]
pub struct Client {
    calls: mpsc::Sender<Call>,
    position: Arc<Mutex<Position>>,
    listeners: broadcast::Sender<Notice>,
}

impl Client {
    /// Connects and says hello. Fails with [`Error::Unreachable`] when the first connection
    /// cannot be made; later losses are repaired in the background.
    pub async fn connect(options: Options) -> Result<(Client, Events), Error> {
        let (first, first_rx) = oneshot::channel();
        let pair = Client::spawn(options, Some(first));
        match first_rx.await {
            Ok(Ok(())) => Ok(pair),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Starts the session without waiting for the broker: it connects, and reconnects, in
    /// the background; until it is up, calls fail with [`Error::Disconnected`]. For a
    /// process that must start before the broker (an MCP server launched by an editor).
    pub fn start(options: Options) -> (Client, Events) {
        Client::spawn(options, None)
    }

    fn spawn(options: Options, first: Option<oneshot::Sender<Result<(), Error>>>) -> (Client, Events) {
        let (calls, calls_rx) = mpsc::channel(CALL_BUFFER);
        let (events, events_rx) = mpsc::channel(EVENT_BUFFER);
        let position = Arc::new(Mutex::new(Position {
            epoch: options.epoch.clone(),
            last_seq: options.since,
            seen: None,
            ended: None,
        }));
        let topics = options.topics.iter().cloned().collect();
        let (listeners, _) = broadcast::channel(LISTEN_BUFFER);
        let session = Session {
            options,
            calls: calls_rx,
            events,
            listeners: listeners.clone(),
            position: Arc::clone(&position),
            topics,
            at: 0,
        };
        tokio::spawn(session.run(first));
        (Client { calls, position, listeners }, Events { rx: events_rx })
    }

    /// The broker's epoch, once connected.
    pub fn epoch(&self) -> Option<String> {
        self.lock().epoch.clone()
    }

    /// The `seq` of the last event received (or the head at connection).
    pub fn last_seq(&self) -> Option<Seq> {
        self.lock().last_seq
    }

    /// The newest event this client has seen in any reply or event: sent with every request
    /// as `after`, so that a read through another node of a cluster is never older.
    pub fn seen(&self) -> Option<Seq> {
        self.lock().seen
    }

    /// Why the session ended for good ([`Error::Revoked`]), if it did.
    pub fn ended(&self) -> Option<Error> {
        self.lock().ended.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Position> {
        // A poisoned lock only means the session task panicked; the value is still valid.
        self.position.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends any operation; returns the reply's `data`.
    pub async fn call(&self, op: Op) -> Result<Value, Error> {
        let (reply, rx) = oneshot::channel();
        if self.calls.send(Call { op, reply }).await.is_err() {
            return Err(self.lock().ended.clone().unwrap_or(Error::Closed));
        }
        rx.await.map_err(|_| Error::Disconnected)?
    }

    /// Sends `op` and reads its reply as `T`: each method names the reply the protocol
    /// declares for its operation (`reply::TaskClaim`).
    async fn call_as<T: DeserializeOwned>(&self, op: Op) -> Result<T, Error> {
        let data = self.call(op).await?;
        serde_json::from_value(data).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Creates a task.
    pub async fn create_task(&self, create: CreateTask) -> Result<Task, Error> {
        Ok(self.call_as::<reply::TaskCreate>(Op::TaskCreate(create)).await?.task)
    }

    /// Changes fields (and possibly the status) of a task.
    pub async fn update_task(&self, task: TaskId, update: UpdateTask) -> Result<Task, Error> {
        Ok(self.call_as::<reply::TaskUpdate>(Op::TaskUpdate(TaskUpdateArgs { task, update })).await?.task)
    }

    /// Claims a task (the session's agent unless `action.agent` names one).
    pub async fn claim(&self, task: TaskId, action: TaskAction) -> Result<Task, Error> {
        Ok(self.call_as::<reply::TaskClaim>(Op::TaskClaim(TaskActionArgs { task, action })).await?.task)
    }

    /// Releases a claim (`force` takes it from another owner).
    pub async fn release(&self, task: TaskId, action: TaskAction) -> Result<Task, Error> {
        Ok(self.call_as::<reply::TaskRelease>(Op::TaskRelease(TaskActionArgs { task, action })).await?.task)
    }

    /// Completes a task.
    pub async fn complete(&self, task: TaskId, action: TaskAction) -> Result<Task, Error> {
        Ok(self.call_as::<reply::TaskComplete>(Op::TaskComplete(TaskActionArgs { task, action })).await?.task)
    }

    /// The next task for `agent` (the session's by default); with `claim`, claimed.
    pub async fn next(&self, agent: Option<String>, claim: bool) -> Result<Option<Task>, Error> {
        Ok(self.call_as::<reply::TaskNext>(Op::TaskNext(NextArgs { agent, claim })).await?.task)
    }

    /// One task.
    pub async fn task(&self, task: TaskId) -> Result<Task, Error> {
        Ok(self.call_as::<reply::TaskGet>(Op::TaskGet(TaskRef { task })).await?.task)
    }

    /// One page of the board, filtered; its `next` is the `cursor` of the page after.
    pub async fn task_page(&self, filter: ListArgs) -> Result<TaskList, Error> {
        self.call_as::<reply::TaskList>(Op::TaskList(filter)).await
    }

    /// Every task that passes the filter, page after page (`filter.limit` tasks a page).
    /// Without `status` or `all`, the board: unfinished tasks and the last finished ones.
    pub async fn tasks(&self, mut filter: ListArgs) -> Result<Vec<Task>, Error> {
        let mut tasks = Vec::new();
        loop {
            let page = self.task_page(filter.clone()).await?;
            tasks.extend(page.tasks);
            match page.next {
                Some(next) => filter.cursor = Some(next),
                None => return Ok(tasks),
            }
        }
    }

    /// Posts a chat message (from the session's agent unless `from` is set).
    pub async fn post(&self, post: PostMessage) -> Result<ChatMessage, Error> {
        Ok(self.call_as::<reply::ChatPost>(Op::ChatPost(post)).await?.message)
    }

    /// Comments on a task (as the session's agent unless `comment.from` names another);
    /// returns the comment, a message in the task's thread.
    pub async fn comment(&self, task: TaskId, comment: AddComment) -> Result<ChatMessage, Error> {
        Ok(self.call_as::<reply::TaskComment>(Op::TaskComment(TaskCommentArgs { task, comment })).await?.message)
    }

    /// A page of a task's comments, oldest first; its `next` is the `cursor` of the page after.
    pub async fn comment_page(&self, args: TaskCommentsArgs) -> Result<MessageList, Error> {
        self.call_as::<reply::TaskComments>(Op::TaskComments(args)).await
    }

    /// A task's comments, oldest first (every page).
    pub async fn comments(&self, task: TaskId) -> Result<Vec<ChatMessage>, Error> {
        let mut args = TaskCommentsArgs { task, limit: None, cursor: None };
        let mut comments = Vec::new();
        loop {
            let page = self.comment_page(args.clone()).await?;
            comments.extend(page.messages);
            match page.next {
                Some(next) => args.cursor = Some(next),
                None => return Ok(comments),
            }
        }
    }

    /// Reads a channel.
    pub async fn messages(&self, args: ChatReadArgs) -> Result<MessageList, Error> {
        self.call_as::<reply::ChatRead>(Op::ChatRead(args)).await
    }

    /// The broker's workspaces, archived ones included.
    pub async fn workspaces(&self) -> Result<Vec<WorkspaceInfo>, Error> {
        Ok(self.call_as::<reply::WorkspaceList>(Op::WorkspaceList(NoArgs {})).await?.workspaces)
    }

    /// Adds the workspace `name` (with tokens on, a person's token only).
    pub async fn add_workspace(&self, name: &str) -> Result<WorkspaceInfo, Error> {
        self.call_as::<reply::WorkspaceAdd>(Op::WorkspaceAdd(AddWorkspace { name: name.to_owned() })).await
    }

    /// Removes the workspace `name`: archived, or deleted with `purge`.
    pub async fn remove_workspace(&self, name: &str, purge: bool) -> Result<WorkspaceInfo, Error> {
        let args = RemoveWorkspace { name: name.to_owned(), purge };
        self.call_as::<reply::WorkspaceRemove>(Op::WorkspaceRemove(args)).await
    }

    /// Channels with messages, by name (every page).
    pub async fn channels(&self) -> Result<Vec<ChannelInfo>, Error> {
        let mut page = PageArgs::default();
        let mut channels = Vec::new();
        loop {
            let list = self.call_as::<reply::ChatChannels>(Op::ChatChannels(page.clone())).await?;
            channels.extend(list.channels);
            match list.next {
                Some(next) => page.cursor = Some(next),
                None => return Ok(channels),
            }
        }
    }

    /// An inbox (the session's agent's by default).
    pub async fn inbox(&self, args: InboxReadArgs) -> Result<Inbox, Error> {
        self.call_as::<reply::InboxRead>(Op::InboxRead(args)).await
    }

    /// Marks an inbox read up to `seq` (default: everything).
    pub async fn ack(&self, agent: Option<String>, seq: Option<Seq>) -> Result<Cursor, Error> {
        self.call_as::<reply::InboxAck>(Op::InboxAck(InboxAckArgs { agent, ack: AckInbox { seq } })).await
    }

    /// Every agent seen, by name (every page).
    pub async fn presence(&self) -> Result<Vec<Presence>, Error> {
        let mut page = PageArgs::default();
        let mut agents = Vec::new();
        loop {
            let list = self.call_as::<reply::PresenceList>(Op::PresenceList(page.clone())).await?;
            agents.extend(list.agents);
            match list.next {
                Some(next) => page.cursor = Some(next),
                None => return Ok(agents),
            }
        }
    }

    /// A heartbeat for `agent` (the session's by default), with a status and note.
    pub async fn set_status(&self, agent: Option<String>, heartbeat: Heartbeat) -> Result<Presence, Error> {
        Ok(self.call_as::<reply::PresenceSet>(Op::PresenceSet(PresenceSetArgs { agent, heartbeat })).await?.agent)
    }

    /// Reserves paths of a repository, all or none (`files.reserve`). An overlap with another
    /// agent's reservation is an [`Error::Api`] with code `conflict`, whose `conflicts` name
    /// each holder, its pattern and a path both match.
    pub async fn reserve_files(&self, request: ReserveFiles) -> Result<Vec<Reservation>, Error> {
        Ok(self.call_as::<reply::FilesReserve>(Op::FilesReserve(request)).await?.reservations)
    }

    /// Releases reservations (`files.release`): by pattern, by task, or all in the repo.
    /// Returns what was released.
    pub async fn release_files(&self, request: ReleaseFiles) -> Result<Vec<Reservation>, Error> {
        Ok(self.call_as::<reply::FilesRelease>(Op::FilesRelease(request)).await?.reservations)
    }

    /// The reservations held now (`files.list`), by id.
    pub async fn files(&self, query: FilesQuery) -> Result<Vec<Reservation>, Error> {
        Ok(self.call_as::<reply::FilesList>(Op::FilesList(query)).await?.reservations)
    }

    /// Who holds each path (`files.who`), in the order asked.
    pub async fn who_has_files(&self, repo: String, paths: Vec<String>) -> Result<Vec<PathHolders>, Error> {
        Ok(self.call_as::<reply::FilesWho>(Op::FilesWho(WhoHasFiles { repo, paths })).await?.paths)
    }

    /// Receives more topics (kept across reconnections); returns every topic subscribed.
    pub async fn subscribe(&self, topics: Vec<String>) -> Result<Vec<String>, Error> {
        Ok(self.call_as::<reply::Subscribe>(Op::Subscribe(Topics { topics })).await?.topics)
    }

    /// Stops receiving topics; returns the topics still subscribed.
    pub async fn unsubscribe(&self, topics: Vec<String>) -> Result<Vec<String>, Error> {
        Ok(self.call_as::<reply::Unsubscribe>(Op::Unsubscribe(Topics { topics })).await?.topics)
    }

    /// Blocks until what `wait` describes happens, or `timeout` passes (`Ok(None)`).
    ///
    /// Listens, subscribes to the topics the wait needs (they stay subscribed), then looks
    /// at the current state: an unread message for `wait.mention`, the status of
    /// `wait.task` when `wait.until` is set. Whenever events may have been missed (this
    /// waiter fell behind, or the session resumed without a replay) it looks again.
    pub async fn wait_for(&self, wait: &Wait, timeout: Option<Duration>) -> Result<Option<Waited>, Error> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut notices = self.listeners.subscribe();
        let topics: Vec<String> = wait.topics().iter().map(ToString::to_string).collect();
        if !topics.is_empty() {
            self.subscribe(topics).await?;
        }
        loop {
            if let Some(me) = &wait.mention {
                let inbox = self
                    .inbox(InboxReadArgs { agent: Some(me.clone()), all: false, limit: Some(1), cursor: None })
                    .await?;
                if let Some(message) = inbox.messages.into_iter().next() {
                    return Ok(Some(Waited::Message(message)));
                }
            }
            if let (Some(id), Some(status)) = (wait.task, wait.until) {
                let task = self.task(id).await?;
                if task.status == status {
                    return Ok(Some(Waited::Task(task)));
                }
            }
            if wait.stuck
                && let Some(agent) = self.presence().await?.into_iter().find(|a| a.stuck)
            {
                return Ok(Some(Waited::Agent(agent)));
            }
            loop {
                let next = match deadline {
                    Some(deadline) => match tokio::time::timeout_at(deadline, notices.recv()).await {
                        Ok(next) => next,
                        Err(_) => return Ok(None),
                    },
                    None => notices.recv().await,
                };
                match next {
                    Ok(Notice::Event(event)) if wait.wanted(&event) => return Ok(Some(Waited::Event(event))),
                    Ok(Notice::Event(_) | Notice::Resumed { .. }) => {}
                    // Events may have been missed: look at the state again.
                    Ok(Notice::Resync { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return Err(self.ended().unwrap_or(Error::Closed)),
                }
            }
        }
    }
}

/// Why a connection attempt failed.
enum Failed {
    /// No broker, or the connection broke.
    Unreachable(String),
    /// The broker refused the hello.
    Refused(ErrorInfo),
}

/// Why a session ended.
enum End {
    /// Every handle is gone.
    Closed,
    /// The connection failed or was lost.
    Lost(String),
    /// The broker revoked the token (4003): no reconnection.
    Revoked(String),
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The background task: one connection at a time, reconnecting with backoff.
struct Session {
    options: Options,
    calls: mpsc::Receiver<Call>,
    events: mpsc::Sender<Notice>,
    /// Waiters ([`Client::wait_for`]); sending never blocks.
    listeners: broadcast::Sender<Notice>,
    position: Arc<Mutex<Position>>,
    /// Topics to subscribe to on every (re)connection.
    topics: BTreeSet<String>,
    /// Of the brokers listed, the one tried first on the next connection.
    at: usize,
}

impl Session {
    async fn run(mut self, mut first: Option<oneshot::Sender<Result<(), Error>>>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let reason = match self.connect().await {
                Ok(socket) => {
                    backoff = BACKOFF_MIN;
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(()));
                    }
                    match self.serve(socket).await {
                        End::Closed => return,
                        End::Revoked(reason) => {
                            tracing::warn!(%reason, "the broker revoked this session's token; not reconnecting");
                            self.position().ended = Some(Error::Revoked(reason));
                            return;
                        }
                        End::Lost(reason) => reason,
                    }
                }
                Err(Failed::Unreachable(reason)) => reason,
                Err(Failed::Refused(info)) => {
                    // A refused first hello (a missing token, a bad name) is the caller's to
                    // fix; retrying cannot help. Later, it counts as a lost connection.
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(Error::Api(info)));
                        return;
                    }
                    info.message
                }
            };
            if let Some(first) = first.take() {
                let _ = first.send(Err(Error::Unreachable { url: self.options.url.clone(), reason }));
                return;
            }
            if !self.options.reconnect {
                return;
            }
            tracing::debug!(%reason, ?backoff, "connection to the broker lost; reconnecting");
            // Requests made while disconnected fail at once rather than wait.
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    call = self.calls.recv() => match call {
                        Some(call) => {
                            let _ = call.reply.send(Err(Error::Disconnected));
                        }
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn position(&self) -> std::sync::MutexGuard<'_, Position> {
        self.position.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a notice to the waiters and to the application's event stream.
    async fn notify(&self, notice: Notice) {
        if self.listeners.receiver_count() > 0 {
            // A waiter that went away meanwhile is fine.
            let _ = self.listeners.send(notice.clone());
        }
        // The application may not listen to events at all (it dropped `Events`).
        let _ = self.events.send(notice).await;
    }

    /// Connects to the first broker (of those listed, from the one used last) that answers,
    /// and says hello, resuming from where the last session stopped.
    async fn connect(&mut self) -> Result<Socket, Failed> {
        let urls = self.options.ws_urls();
        let mut reasons = Vec::new();
        for _ in 0..urls.len() {
            let url = &urls[self.at % urls.len()];
            match self.connect_to(url).await {
                Err(Failed::Unreachable(reason)) => {
                    reasons.push(if urls.len() > 1 { format!("{url}: {reason}") } else { reason });
                    self.at = (self.at + 1) % urls.len();
                }
                answered => return answered,
            }
        }
        Err(Failed::Unreachable(if reasons.is_empty() { "no URL given".into() } else { reasons.join("; ") }))
    }

    /// Connects to `url` and says hello, resuming from where the last session stopped.
    async fn connect_to(&mut self, url: &str) -> Result<Socket, Failed> {
        let connecting = tokio_tungstenite::connect_async(url);
        let (mut socket, _) = match tokio::time::timeout(self.options.connect_timeout, connecting).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(Failed::Unreachable(e.to_string())),
            Err(_) => return Err(Failed::Unreachable("timed out".into())),
        };
        let (since, epoch) = {
            let p = self.position();
            (p.last_seq, p.epoch.clone())
        };
        let hello = Hello {
            agent: self.options.agent.clone(),
            token: self.options.token.clone(),
            topics: self.topics.iter().cloned().collect(),
            since,
            epoch,
            human: self.options.human,
            workspace: self.options.workspace.clone(),
        };
        let frame = serde_json::to_string(&Request { id: 0, idempotency_key: None, after: None, op: Op::Hello(hello) })
            .map_err(|e| Failed::Unreachable(e.to_string()))?;
        socket.send(Message::text(frame)).await.map_err(|e| Failed::Unreachable(e.to_string()))?;
        let welcome: Welcome = loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Reply>(text.as_str()) {
                    Ok(Reply { ok: true, data: Some(data), .. }) => {
                        break serde_json::from_value(data).map_err(|e| Failed::Unreachable(e.to_string()))?;
                    }
                    Ok(Reply { error: Some(error), .. }) => return Err(Failed::Refused(error)),
                    _ => return Err(Failed::Unreachable(format!("unexpected first frame: {}", text.as_str()))),
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Failed::Unreachable(e.to_string())),
                None => return Err(Failed::Unreachable("closed before the welcome".into())),
            }
        };
        let notice = {
            let mut p = self.position();
            // What was seen of another history says nothing about this one.
            if p.epoch.as_ref() != Some(&welcome.epoch) {
                p.seen = None;
            }
            p.seen = p.seen.max(Some(welcome.head));
            p.epoch = Some(welcome.epoch.clone());
            match (since, welcome.recovered) {
                (Some(_), true) => Notice::Resumed { head: welcome.head },
                (None, _) => {
                    p.last_seq = Some(welcome.head);
                    Notice::Resumed { head: welcome.head }
                }
                (Some(_), false) => {
                    p.last_seq = Some(welcome.head);
                    Notice::Resync { epoch: welcome.epoch.clone(), head: welcome.head }
                }
            }
        };
        self.notify(notice).await;
        Ok(socket)
    }

    /// Carries requests and events until the connection ends.
    async fn serve(&mut self, mut socket: Socket) -> End {
        // With each waiting request: whether its answer is the new set of topics (subscribe,
        // unsubscribe), which later hellos must repeat. Only an accepted change counts.
        let mut pending: HashMap<u64, (oneshot::Sender<Result<Value, Error>>, bool)> = HashMap::new();
        let mut next_id = 1u64;
        let end = loop {
            tokio::select! {
                call = self.calls.recv() => {
                    let Some(Call { op, reply }) = call else {
                        let _ = socket.close(None).await;
                        break End::Closed;
                    };
                    let sets_topics = matches!(op, Op::Subscribe(_) | Op::Unsubscribe(_));
                    let id = next_id;
                    next_id += 1;
                    let after = self.position().seen;
                    let frame = match serde_json::to_string(&Request { id, idempotency_key: None, after, op }) {
                        Ok(frame) => frame,
                        Err(e) => {
                            let _ = reply.send(Err(Error::Protocol(e.to_string())));
                            continue;
                        }
                    };
                    if let Err(e) = socket.send(Message::text(frame)).await {
                        let _ = reply.send(Err(Error::Disconnected));
                        break End::Lost(e.to_string());
                    }
                    pending.insert(id, (reply, sets_topics));
                }
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerFrame>(text.as_str()) {
                        Ok(ServerFrame::Reply(reply)) => {
                            if reply.head.is_some() {
                                let mut position = self.position();
                                position.seen = position.seen.max(reply.head);
                            }
                            let Some((waiting, sets_topics)) = reply.re.and_then(|re| pending.remove(&re)) else { continue };
                            let answer = match (reply.ok, reply.data, reply.error) {
                                (true, Some(data), _) => {
                                    if sets_topics && let Ok(now) = serde_json::from_value::<Topics>(data.clone()) {
                                        self.topics = now.topics.into_iter().collect();
                                    }
                                    Ok(data)
                                }
                                (false, _, Some(error)) => Err(Error::Api(error)),
                                _ => Err(Error::Protocol("a reply without data or error".into())),
                            };
                            let _ = waiting.send(answer);
                        }
                        Ok(ServerFrame::Event(event)) => {
                            {
                                let mut position = self.position();
                                // Each event once, even if a broker ever sent one again.
                                if position.last_seq.is_some_and(|last| event.seq <= last) {
                                    continue;
                                }
                                position.last_seq = Some(event.seq);
                                position.seen = position.seen.max(Some(event.seq));
                            }
                            self.notify(Notice::Event(event)).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "frame not understood"),
                    },
                    Some(Ok(Message::Close(frame))) => match frame {
                        Some(f) if u16::from(f.code) == muster_protocol::ws::CLOSE_REVOKED => {
                            break End::Revoked(f.reason.to_string());
                        }
                        Some(f) => break End::Lost(format!("closed {}: {}", u16::from(f.code), f.reason)),
                        None => break End::Lost("closed".to_owned()),
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break End::Lost(e.to_string()),
                    None => break End::Lost("connection closed".into()),
                },
            }
        };
        let error = match &end {
            End::Revoked(reason) => Error::Revoked(reason.clone()),
            End::Closed | End::Lost(_) => Error::Disconnected,
        };
        for (_, (waiting, _)) in pending {
            let _ = waiting.send(Err(error.clone()));
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_websocket_urls() {
        assert_eq!(Options::new("http://127.0.0.1:4445").ws_urls(), ["ws://127.0.0.1:4445/ws"]);
        assert_eq!(Options::new("http://localhost:4445/").ws_urls(), ["ws://localhost:4445/ws"]);
        assert_eq!(Options::new("ws://h:1/ws").ws_urls(), ["ws://h:1/ws"]);
        assert_eq!(Options::new("http://a:1, https://b:2/").ws_urls(), ["ws://a:1/ws", "wss://b:2/ws"]);
        assert_eq!(Options::new("https://h").ws_urls(), ["wss://h/ws"]);
    }
}
