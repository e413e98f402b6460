//! `GET /ws`: the WebSocket transport.
//!
//! One fixed connection shape: a reader loop (this task) that `select!`s on the next frame,
//! the ping timer (which also ends a connection that sent no hello in time), token changes,
//! shutdown and the writer's end; a writer task that owns the sink and sends everything ready
//! in the connection's [`Outbox`] with one flush; one cleanup spot (`finish`). An idle
//! connection costs what these hold, so every step that is not the idle loop is boxed.
//!
//! `hello` opens the api session and its feed (`api::Broker::hello`); the writer sends the
//! welcome, then the feed: the events the client missed, then live ones. Every other
//! operation is one line of [`execute`], run as the session's caller.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use muster_protocol::ws::{
    CLOSE_GOING_AWAY, CLOSE_HELLO_TIMEOUT, CLOSE_INVALID_DATA, CLOSE_POLICY, CLOSE_REVOKED, CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_BIG, CLOSE_WORKSPACE_REMOVED, Hello, Op, Reply, Request, Welcome, reply,
};
use muster_protocol::{ErrorCode, ErrorInfo};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::conns::Conn;
use super::response::HttpError;
use super::state::{App, AppState};
use crate::api::feed::{Ended, Feed};
use crate::api::session::Opened;
use crate::api::{self, ApiError, Broker, IdempotencyKey};
use crate::hub::{Outbox, Subscription};

/// Read buffer per connection, allocated up front: tungstenite's default of 128 KiB would
/// make an idle connection cost over 130 KB. Requests are a few hundred bytes; a larger
/// frame is read in several steps.
const READ_BUFFER: usize = 512;
/// Bytes buffered before a write to the socket: a batch of a few dozen events goes out in
/// one syscall, and an idle connection holds no buffer.
const WRITE_BUFFER: usize = 16 * 1024;
/// Largest frame a client may send; larger closes the connection with 1009.
pub(crate) const MAX_FRAME: usize = 1 << 20;
/// Writes a connection may have in flight at once; further requests wait to be read.
const IN_FLIGHT: usize = 32;
/// Events read from the log per step of a replay.
const REPLAY_CHUNK: usize = 1000;
/// The refusal of an observer past `--max-observers`.
pub(crate) fn too_many_observers(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("too many observers (event streams, dashboards): at most {max} (--max-observers); retry later"),
    )
}
/// How long closing may wait on a peer that does not read.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the reader tells the writer.
enum Control {
    /// Send the welcome, then the feed (of that workspace's broker): the missed events,
    /// then live ones.
    Start(Box<(Bytes, Feed, Arc<Broker>)>),
    /// Send a ping.
    Ping,
    /// Send what is queued and a close frame, and stop.
    Close(u16, &'static str),
    /// Send what is queued and stop (the peer is gone or closed).
    Stop,
}

/// The reader's line to the writer: control messages beside the outbox, woken by the
/// outbox's signal. (A channel would allocate its slots up front for every connection,
/// and an idle connection must stay small.) The other way, the reader watches the writer's
/// task end (the socket failed, or it closed the connection) and stops too.
struct Link {
    outbox: Arc<Outbox>,
    control: std::sync::Mutex<VecDeque<Control>>,
}

impl Link {
    fn send(&self, control: Control) {
        // A poisoned lock only means the other side panicked; the queue is still valid.
        self.control.lock().unwrap_or_else(|p| p.into_inner()).push_back(control);
        self.outbox.wake();
    }

    fn next(&self) -> Option<Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
}

/// Upgrades to a WebSocket, within the connection limit.
#[utoipa::path(
    get, path = "/ws", tag = "events",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol (see protocol/schema)"),
        (status = 403, description = "A browser page from another origin (see transport::guard)", body = muster_protocol::ErrorBody),
        (status = 503, description = "Too many connections (`--max-connections`)", body = muster_protocol::ErrorBody),
    )
)]
pub(crate) async fn upgrade(
    App(state): App,
    named: Option<Extension<AppState>>,
    Extension(conn): Extension<Conn>,
    ws: WebSocketUpgrade,
) -> Response {
    // `/w/{workspace}/ws`: the URL named the session's workspace.
    let named = named.is_some();
    // Until its hello says which it is, a connection takes an agent's place, or an
    // observer's when those are all taken.
    let place = Place::take(&state, true).or_else(|_| Place::take(&state, false));
    let Ok(place) = place else {
        let max = state.config.max_connections;
        let refused = format!("too many connections: at most {max} (--max-connections); retry later");
        return HttpError(ApiError::new(ErrorCode::Unavailable, refused)).into_response();
    };
    let tracker = state.sessions.clone();
    // A WebSocket has its own limit and pings: it leaves the pool of plain HTTP connections.
    conn.stream();
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| tracker.track_future(session(socket, state, named, place)))
}

/// A connection's place in one of the two budgets: agents' (`--max-connections`) or
/// observers' (`--max-observers`); given back when dropped.
struct Place {
    agent: bool,
    _permit: OwnedSemaphorePermit,
}

impl Place {
    fn take(state: &AppState, agent: bool) -> Result<Place, ApiError> {
        let (places, refused) = if agent {
            let max = state.config.max_connections;
            let refused = format!("too many agents' sessions: at most {max} (--max-connections); retry later");
            (&state.connections, ApiError::new(ErrorCode::Unavailable, refused))
        } else {
            (&state.observers, too_many_observers(state.config.max_observers))
        };
        let permit = Arc::clone(places).try_acquire_owned().map_err(|_| refused)?;
        Ok(Place { agent, _permit: permit })
    }
}

/// The connection, as the reader loop holds it.
struct Session {
    /// Its workspace's (until the hello, the URL's).
    state: AppState,
    /// The URL named the workspace (`/w/{workspace}/ws`): the hello may not name another.
    named: bool,
    outbox: Arc<Outbox>,
    link: Arc<Link>,
    /// Set by `hello`: the api session (whose caller every request runs as) and the
    /// connection's place in the hub.
    opened: Option<(Arc<api::session::Session>, Subscription)>,
    in_flight: Arc<Semaphore>,
    bucket: Bucket,
    /// Its place, of the kind its hello said (see [`Place`]).
    place: Place,
}

async fn session(socket: WebSocket, state: AppState, named: bool, place: Place) {
    let _open = state.metrics.open(crate::metrics::Stream::WebSocket);
    let (sink, mut stream) = socket.split();
    let outbox = Outbox::new(state.config.outbox_bytes);
    // Bounded by construction: the reader sends a handful of control messages at most.
    let link = Arc::new(Link { outbox: Arc::clone(&outbox), control: Default::default() });
    let mut writer = tokio::spawn(write_loop(sink, Arc::clone(&link), state.clone()));
    let frame_rate = state.config.max_frames_per_second;
    let mut s = Session {
        state,
        named,
        outbox,
        link,
        opened: None,
        in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
        bucket: Bucket::new(frame_rate),
        place,
    };
    let span = tracing::debug_span!("ws", agent = tracing::field::Empty);
    let close = s.read_loop(&mut stream, &span, &mut writer).await;
    // Boxed, like every step that is not the idle loop: a connection's task is as large as
    // the largest state it may hold, and each idle connection pays for it (BENCHMARKS.md,
    // sessions).
    Box::pin(finish(s, stream, writer, close, span)).await;
}

/// The one cleanup spot: close (or stop) the writer, wait for the requests still running,
/// end the api session.
async fn finish(
    mut s: Session,
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    mut writer: tokio::task::JoinHandle<()>,
    close: Option<Control>,
    span: tracing::Span,
) {
    let session = s.opened.take().map(|(session, subscription)| {
        drop(subscription);
        session
    });
    let closing = close.is_some();
    s.link.send(close.unwrap_or(Control::Stop));
    let deadline = Instant::now() + CLOSE_WAIT;
    if closing {
        // The broker closes (a flood, a timeout, a stop): read and drop what the peer still
        // sends until it answers the close. A socket closed with unread data is reset, and
        // the reset would destroy the close frame before the peer reads it.
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    // A writer stuck on a peer that reads nothing (a full TCP buffer, a half-open
    // connection) is given a moment, then dropped with the socket.
    if !writer.is_finished() && tokio::time::timeout_at(deadline, &mut writer).await.is_err() {
        writer.abort();
    }
    // Requests still running hold the session; wait for them (their replies go nowhere).
    let _ = s.in_flight.acquire_many(IN_FLIGHT as u32).await;
    if let Some(session) = session.and_then(Arc::into_inner) {
        // Presence goes offline now (if this was the agent's last session); its claims
        // wait out the grace.
        Box::pin(api::session::close(&s.state.broker, session)).await;
    }
    tracing::debug!(parent: &span, "connection closed");
}

impl Session {
    /// Reads frames until the connection ends; returns the close frame to send, if any.
    async fn read_loop(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
        span: &tracing::Span,
        writer: &mut tokio::task::JoinHandle<()>,
    ) -> Option<Control> {
        let every = self.state.config.ping_every;
        // One timer for the pings and the hello deadline (a timer is 112 bytes of every idle
        // connection): its first tick is at the deadline if that comes first, and a
        // connection without hello is closed at the first tick past the deadline.
        let hello_deadline = Instant::now() + self.state.config.hello_timeout;
        let mut ping = tokio::time::interval_at((Instant::now() + every).min(hello_deadline), every);
        let mut tokens = self.state.broker.token_changes();
        let mut watching = true;
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                frame = stream.next() => {
                    heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(_) | Message::Binary(_))) if !self.bucket.take() => {
                            if self.bucket.flooding() {
                                tracing::warn!(parent: span, "peer kept flooding past the frame rate; closing");
                                return Some(Control::Close(CLOSE_POLICY, "rate limit exceeded"));
                            }
                            self.state.metrics.rate_limited_frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let limit = self.state.config.max_frames_per_second;
                            let error = ErrorInfo {
                                code: ErrorCode::RateLimited,
                                message: format!("too many frames: at most {limit} per second; this one was dropped"),
                                field: None,
                                conflicts: Vec::new(),
                            };
                            self.reply(Reply::error(None, error));
                        }
                        // Boxed: see `finish`.
                        Some(Ok(Message::Text(text))) => Box::pin(self.handle(text.as_str(), span)).await,
                        Some(Ok(Message::Binary(_))) => {
                            self.reply(Reply::error(None, invalid("frame", "binary frames are not supported; send JSON text")));
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => return None,
                        Some(Err(error)) => {
                            return match error.into_inner().downcast_ref::<tungstenite::Error>() {
                                Some(tungstenite::Error::Capacity(_)) => {
                                    Some(Control::Close(CLOSE_TOO_BIG, "frame larger than 1 MiB"))
                                }
                                Some(tungstenite::Error::Utf8(_)) => {
                                    tracing::warn!(parent: span, "a text frame that is not UTF-8; closing with 1007");
                                    Some(Control::Close(CLOSE_INVALID_DATA, "text frame is not UTF-8"))
                                }
                                _ => None,
                            };
                        }
                    }
                }
                _ = ping.tick() => {
                    if self.opened.is_none() && Instant::now() >= hello_deadline {
                        return Some(Control::Close(CLOSE_HELLO_TIMEOUT, "no hello in time"));
                    }
                    if heard.elapsed() > every * 2 {
                        tracing::info!(parent: span, "peer stopped answering pings; dropping it");
                        return None;
                    }
                    self.link.send(Control::Ping);
                }
                changed = tokens.changed(), if self.opened.is_some() && watching => {
                    // The issued tokens changed: a session whose token was revoked ends.
                    watching = changed.is_ok();
                    if let Some((session, _)) = &self.opened
                        && let Err(refused) = self.state.broker.check(session.caller())
                    {
                        tracing::info!(parent: span, reason = %refused, "closing with 4003");
                        return Some(Control::Close(CLOSE_REVOKED, "token revoked"));
                    }
                }
                () = self.state.broker.stopping().cancelled() => {
                    if self.state.shutdown.is_cancelled() {
                        return Some(Control::Close(CLOSE_GOING_AWAY, "broker shutting down"));
                    }
                    return Some(Control::Close(CLOSE_WORKSPACE_REMOVED, "workspace removed"));
                }
                // (Not polled again once finished: `finish` checks `is_finished` first.)
                _ = &mut *writer => return None,
            }
        }
    }

    fn reply(&self, reply: Reply) {
        // If the outbox overflowed or closed, the connection is going away anyway.
        self.outbox.push(encode(&reply));
    }

    async fn handle(&mut self, text: &str, span: &tracing::Span) {
        let request = match Request::parse(text) {
            Ok(request) => request,
            Err(e) => {
                // Never the message: it may quote the refused value (a token sent by mistake
                // in `since`, say). The field and the frame's length are enough to look into.
                let field =
                    e.error.field.as_deref().filter(|f| {
                        f.len() <= 40 && f.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.[]".contains(&b))
                    });
                let field = field.unwrap_or("-");
                tracing::warn!(parent: span, code = e.error.code.as_str(), field, bytes = text.len(), "bad frame");
                return self.reply(Reply::error(e.id, e.error));
            }
        };
        let (id, after) = (request.id, request.after);
        let key = request.idempotency_key.map(IdempotencyKey);
        let broker = &self.state.broker;
        match (request.op, &self.opened) {
            (Op::Hello(hello), None) => {
                // Boxed: its state is large, and held inline it would make every idle
                // connection's task as large (BENCHMARKS.md, sessions).
                if let Err(ApiError(error)) = Box::pin(self.hello(id, hello, span)).await {
                    self.reply(Reply::error(Some(id), error));
                }
            }
            (Op::Hello(_), Some(_)) => {
                self.reply(Reply::error(Some(id), invalid("op", "hello was already sent on this connection")));
            }
            (_, None) => self.reply(Reply::error(Some(id), invalid("op", "send hello first"))),
            (Op::Subscribe(t), Some((session, subscription))) => {
                let topics = api::feed::add_topics(broker, session.caller(), subscription, &t.topics);
                push_reply(&self.outbox, id, topics.map(|all| topics_json(&all)), broker.head());
            }
            (Op::Unsubscribe(t), Some((session, subscription))) => {
                let topics = api::feed::remove_topics(broker, session.caller(), subscription, &t.topics);
                push_reply(&self.outbox, id, topics.map(|all| topics_json(&all)), broker.head());
            }
            (op, Some((session, _))) => {
                // Writes wait for the disk: run them beside the reader, a bounded number
                // at a time, so that one slow write does not stall the connection.
                let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else { return };
                let (state, outbox, session) = (self.state.clone(), Arc::clone(&self.outbox), Arc::clone(session));
                tokio::spawn(async move {
                    let result = execute(&state, &session, op, key, after).await;
                    // The session before the permit: once every permit is back, the
                    // reader holds the only reference and can close the session.
                    drop(session);
                    push_reply(&outbox, id, result, state.broker.head());
                    drop(permit);
                });
            }
        }
    }

    /// `hello`: become present as the agent, subscribe, and have the writer send the
    /// welcome and what the client missed.
    async fn hello(&mut self, id: u64, hello: Hello, span: &tracing::Span) -> Result<(), ApiError> {
        // One session, one workspace: the hello's, else the URL's (`default` for `/ws`).
        if let Some(name) = &hello.workspace {
            let Some(broker) = self.state.workspaces.get(name) else {
                // With tokens on, a caller without a valid token learns nothing of the
                // workspaces.
                let caller = self.state.broker.authenticate(hello.token.as_ref().map(|t| t.expose()))?;
                self.state.broker.check_token(&caller)?;
                return Err(crate::workspaces::unknown(name));
            };
            if !Arc::ptr_eq(&broker, &self.state.broker) {
                if self.named {
                    let url = self.state.broker.workspace();
                    return Err(ApiError::invalid(
                        "workspace",
                        format!("this connection is to workspace {url} (/w/{url}/ws): connect to /ws to name another"),
                    ));
                }
                self.state = self.state.with_broker(broker);
            }
        }
        // An agent's session takes an agent's place, an observer's (a dashboard, a person's,
        // one without an agent) an observer's: the connection swaps if it holds the other.
        let agent = hello.agent.is_some() && !hello.human;
        let place = (self.place.agent != agent).then(|| Place::take(&self.state, agent)).transpose()?;
        let opened = api::session::hello(&self.state.broker, hello, Arc::clone(&self.outbox), REPLAY_CHUNK).await?;
        if let Some(place) = place {
            self.place = place;
        }
        let Opened { session, subscription, feed, start } = opened;
        if let Some(agent) = session.agent() {
            span.record("agent", agent);
        }
        let welcome = Welcome {
            workspace: self.state.broker.workspace().to_owned(),
            epoch: start.epoch,
            head: start.head,
            recovered: start.recovered,
            agent: session.agent().map(str::to_owned),
            topics: start.topics,
        };
        let welcome = serde_json::to_vec(&welcome).map_err(|e| ApiError::internal(e.to_string()))?;
        self.opened = Some((Arc::new(session), subscription));
        let broker = Arc::clone(&self.state.broker);
        self.link.send(Control::Start(Box::new((ok_frame(id, &welcome, None), feed, broker))));
        Ok(())
    }
}

/// Runs one operation for a session, in its workspace: every operation of the protocol but
/// the three the connection itself handles (`hello`, `subscribe`, `unsubscribe`), each one
/// line.
async fn execute(
    state: &AppState,
    session: &api::session::Session,
    op: Op,
    key: Option<IdempotencyKey>,
    after: Option<muster_protocol::Seq>,
) -> Result<Bytes, ApiError> {
    // Cloned only for a request that says what it has seen.
    let having_seen = after.map(|seq| session.caller().clone().having_seen(seq));
    let caller = having_seen.as_ref().unwrap_or(session.caller());
    let (broker, workspaces) = (&*state.broker, &state.workspaces);
    Ok(match op {
        Op::Hello(_) | Op::Subscribe(_) | Op::Unsubscribe(_) => {
            return Err(ApiError::invalid("op", "handled by the connection, not here"));
        }
        Op::TaskCreate(args) => body::<reply::TaskCreate>(api::tasks::create(broker, caller, args, key).await?),
        Op::TaskUpdate(args) => body::<reply::TaskUpdate>(api::tasks::update(broker, caller, args, key).await?),
        Op::TaskClaim(args) => body::<reply::TaskClaim>(api::tasks::claim(broker, caller, args, key).await?),
        Op::TaskRelease(args) => body::<reply::TaskRelease>(api::tasks::release(broker, caller, args, key).await?),
        Op::TaskComplete(args) => body::<reply::TaskComplete>(api::tasks::complete(broker, caller, args, key).await?),
        Op::TaskNext(args) => body::<reply::TaskNext>(api::tasks::next(broker, caller, args, key).await?),
        Op::TaskGet(args) => body::<reply::TaskGet>(api::tasks::get(broker, caller, args).await?),
        Op::TaskList(args) => body::<reply::TaskList>(api::tasks::list(broker, caller, args).await?),
        Op::TaskComment(args) => body::<reply::TaskComment>(api::chat::comment(broker, caller, args, key).await?),
        Op::TaskComments(args) => body::<reply::TaskComments>(api::chat::comments(broker, caller, args).await?),
        Op::ChatPost(args) => body::<reply::ChatPost>(api::chat::post(broker, caller, args, key).await?),
        Op::ChatRead(args) => body::<reply::ChatRead>(api::chat::read(broker, caller, args).await?),
        Op::ChatChannels(args) => body::<reply::ChatChannels>(api::chat::channels(broker, caller, args).await?),
        Op::InboxRead(args) => body::<reply::InboxRead>(api::chat::inbox(broker, caller, args).await?),
        Op::InboxAck(args) => body::<reply::InboxAck>(api::chat::ack(broker, caller, args, key).await?),
        Op::PresenceList(args) => body::<reply::PresenceList>(api::presence::list(broker, caller, args).await?),
        Op::PresenceSet(args) => body::<reply::PresenceSet>(api::presence::heartbeat(broker, caller, args, key).await?),
        Op::FilesReserve(args) => body::<reply::FilesReserve>(api::files::reserve(broker, caller, args, key).await?),
        Op::FilesRelease(args) => body::<reply::FilesRelease>(api::files::release(broker, caller, args, key).await?),
        Op::FilesList(args) => body::<reply::FilesList>(api::files::list(broker, caller, args).await?),
        Op::FilesWho(args) => body::<reply::FilesWho>(api::files::who(broker, caller, args).await?),
        Op::WorkspaceList(_) => body::<reply::WorkspaceList>(workspaces.list(caller)?),
        Op::WorkspaceAdd(args) => body::<reply::WorkspaceAdd>(workspaces.add(caller, &args.name).await?),
        Op::WorkspaceRemove(args) => {
            body::<reply::WorkspaceRemove>(workspaces.remove(caller, &args.name, args.purge).await?)
        }
    })
}

/// The JSON of a reply whose shape is `B`: `execute` names each operation's declared reply
/// ([`reply`]), so an `api` function answering with another shape does not compile.
fn body<B>(reply: impl api::Reply<Body = B>) -> Bytes {
    reply.to_json()
}

fn topics_json(topics: &[String]) -> Bytes {
    Bytes::from(serde_json::json!({ "topics": topics }).to_string())
}

/// Frames a connection may send: `rate` per second, up to `rate` at once. A connection
/// that has half a second's worth of frames refused within one second (it keeps sending
/// at 1.5 times the rate or more, whatever the errors say) is flooding, and is closed.
struct Bucket {
    tokens: f64,
    rate: f64,
    last: Instant,
    /// Frames refused since `window` began; the window restarts a second later.
    refused: u32,
    window: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        let now = Instant::now();
        Bucket { tokens: f64::from(rate), rate: f64::from(rate), last: now, refused: 0, window: now }
    }

    /// Takes one frame's token; false when the connection is over its rate.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            if now.duration_since(self.window) > std::time::Duration::from_secs(1) {
                self.window = now;
                self.refused = 0;
            }
            self.refused += 1;
            false
        }
    }

    /// Half a second's worth of frames refused within a second: the peer is flooding.
    fn flooding(&self) -> bool {
        f64::from(self.refused) >= self.rate / 2.0
    }
}

fn invalid(field: &str, message: impl std::fmt::Display) -> ErrorInfo {
    ApiError::invalid(field, message).0
}

/// `{"re": id, "ok": true, "head"?: head, "data": <data>}`, around data already serialized.
fn ok_frame(id: u64, data: &[u8], head: Option<muster_protocol::Seq>) -> Bytes {
    let mut frame = Vec::with_capacity(data.len() + 60);
    let head = head.map(|h| format!("\"head\":{h},")).unwrap_or_default();
    frame.extend_from_slice(format!("{{\"re\":{id},\"ok\":true,{head}\"data\":").as_bytes());
    frame.extend_from_slice(data);
    frame.push(b'}');
    Bytes::from(frame)
}

fn encode(reply: &Reply) -> Bytes {
    // A reply is plain data: serializing cannot fail.
    Bytes::from(serde_json::to_vec(reply).unwrap_or_default())
}

/// Queues an operation's reply, with the node's `head` when it answered.
fn push_reply(outbox: &Outbox, id: u64, result: Result<Bytes, ApiError>, head: muster_protocol::Seq) {
    let frame = match result {
        Ok(data) => ok_frame(id, &data, Some(head)),
        Err(ApiError(error)) => encode(&Reply { head: Some(head), ..Reply::error(Some(id), error) }),
    };
    // If the outbox overflowed or closed, the connection is going away anyway.
    outbox.push(frame);
}

/// The writer task: owns the sink; sends the welcome and the feed (the replay, then what
/// the outbox holds), flushing once per batch; closes with 4008 when the outbox overflowed.
async fn write_loop(mut sink: futures_util::stream::SplitSink<WebSocket, Message>, link: Arc<Link>, state: AppState) {
    let outbox = &link.outbox;
    let mut feed: Option<Feed> = None;
    let mut broker = Arc::clone(&state.broker);
    let mut frames = Vec::new();
    let result: Result<(), axum::Error> = async {
        loop {
            outbox.ready().await;
            while let Some(control) = link.next() {
                match control {
                    Control::Start(start) => {
                        let (welcome, started, of) = *start;
                        sink.send(Message::Text(text(welcome)?)).await?;
                        feed = Some(started);
                        broker = of;
                    }
                    Control::Ping => sink.send(Message::Ping(Default::default())).await?,
                    Control::Close(code, reason) => {
                        drain(&mut sink, &broker, None, outbox, &mut frames).await?;
                        return Box::pin(close(&mut sink, code, reason)).await;
                    }
                    Control::Stop => return drain(&mut sink, &broker, None, outbox, &mut frames).await,
                }
            }
            drain(&mut sink, &broker, feed.as_mut(), outbox, &mut frames).await?;
            if outbox.overflowed() {
                tracing::info!("slow consumer: outbox overflowed; closing with 4008");
                state.metrics.slow_consumer_closes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let reason = "slow consumer: outbox overflowed; resume from your last seq";
                return Box::pin(close(&mut sink, CLOSE_SLOW_CONSUMER, reason)).await;
            }
        }
    }
    .await;
    outbox.close();
    if let Err(error) = result {
        tracing::debug!(%error, "connection write failed");
    }
}

fn text(frame: Bytes) -> Result<Utf8Bytes, axum::Error> {
    Utf8Bytes::try_from(frame).map_err(axum::Error::new)
}

/// Sends everything ready — the whole replay while there is one, then the outbox — with one
/// flush per chunk.
async fn drain(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    broker: &Broker,
    mut feed: Option<&mut Feed>,
    outbox: &Outbox,
    frames: &mut Vec<Bytes>,
) -> Result<(), axum::Error> {
    loop {
        let taken = match feed.as_deref_mut() {
            Some(feed) => feed.take(broker, frames).await,
            None => outbox.take(frames).map_err(|_| Ended::Closed),
        };
        match taken {
            Ok(()) => {}
            // The caller closes an overflowed connection.
            Err(Ended::Overflowed | Ended::Closed) => return Ok(()),
            Err(Ended::Failed(error)) => return Err(axum::Error::new(error.to_string())),
        }
        if frames.is_empty() {
            return Ok(());
        }
        for frame in frames.drain(..) {
            sink.feed(Message::Text(text(frame)?)).await?;
        }
        sink.flush().await?;
        if !feed.as_deref().is_some_and(Feed::replaying) {
            return Ok(());
        }
    }
}

/// Sends a close frame, giving up after [`CLOSE_WAIT`] (a slow consumer may not read it).
/// Callers box it: it happens once, and inline it would make every writer larger.
async fn close(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    code: u16,
    reason: &'static str,
) -> Result<(), axum::Error> {
    let frame = Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }));
    match tokio::time::timeout(CLOSE_WAIT, async {
        sink.send(frame).await?;
        sink.close().await
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(axum::Error::new("the peer did not take the close frame in time")),
    }
}
