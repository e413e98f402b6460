//! `GET /ws`: the WebSocket transport.
//!
//! One fixed connection shape: a reader loop (this task) that `select!`s on the next frame,
//! the ping timer, the hello deadline and shutdown; a writer task that owns the sink and
//! sends everything ready in the connection's [`Outbox`] with one flush; one cleanup spot.
//!
//! `hello` subscribes the connection in the hub and learns the `seq` where live delivery
//! starts; the writer sends the welcome, replays the log from the client's `since` up to
//! that `seq`, and only then lets live events out: no gap, no duplicate at the seam.

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use muster_protocol::ws::{
    CLOSE_GOING_AWAY, CLOSE_HELLO_TIMEOUT, CLOSE_POLICY, CLOSE_SLOW_CONSUMER, CLOSE_TOO_BIG, Hello, Op, Reply, Request,
    Welcome,
};
use muster_protocol::{ErrorCode, ErrorInfo, Seq};
use serde_json::json;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::{Command, parse_topic, validate_agent};
use crate::http::{ApiError, AppState, ops};
use crate::hub::{Outbox, Subscription};

/// Read buffer per connection, allocated up front: tungstenite's default of 128 KiB would
/// make an idle connection cost over 130 KB. Requests are a few hundred bytes; a larger
/// frame is read in several steps.
const READ_BUFFER: usize = 1024;
/// Bytes buffered before a write to the socket: a batch of a few dozen events goes out in
/// one syscall, and an idle connection holds no buffer.
const WRITE_BUFFER: usize = 16 * 1024;
/// Largest frame a client may send; larger closes the connection with 1009.
pub const MAX_FRAME: usize = 1 << 20;
/// Writes a connection may have in flight at once; further requests wait to be read.
const IN_FLIGHT: usize = 32;
/// Events read from the log per step of a replay.
const REPLAY_CHUNK: usize = 1000;
/// How long closing may wait on a peer that does not read.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the reader tells the writer.
enum Control {
    /// Send the welcome, replay `since..=head` from the log (if `since`), then resume.
    Replay(Box<Replay>),
    /// Send a ping.
    Ping,
    /// Send what is queued and a close frame, and stop.
    Close(u16, &'static str),
    /// Send what is queued and stop (the peer is gone or closed).
    Stop,
}

/// The reader's line to the writer: control messages beside the outbox, woken by the
/// outbox's signal. (A channel would allocate its slots up front for every connection,
/// and an idle connection must stay small.)
struct Link {
    outbox: Arc<Outbox>,
    control: std::sync::Mutex<VecDeque<Control>>,
    /// Cancelled when the writer stops (the socket failed, or it closed the connection):
    /// the reader stops too.
    writer_done: CancellationToken,
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
        (status = 403, description = "A browser page from another origin (see http::guard)", body = muster_protocol::ErrorBody),
        (status = 503, description = "Too many connections", body = muster_protocol::ErrorBody),
    )
)]
pub async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let Ok(permit) = Arc::clone(&state.connections).try_acquire_owned() else {
        return ApiError::new(ErrorCode::Unavailable, "too many connections; retry later").into_response();
    };
    let tracker = state.sessions.clone();
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| tracker.track_future(session(socket, state, permit)))
}

/// The connection limit, shared by WebSocket and SSE.
pub fn limit(max: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max))
}

struct Replay {
    welcome: Utf8Bytes,
    since: Option<Seq>,
    head: Seq,
    topics: Vec<String>,
}

struct Session {
    state: AppState,
    outbox: Arc<Outbox>,
    link: Arc<Link>,
    agent: Option<String>,
    /// Set by `hello`.
    subscription: Option<Subscription>,
    in_flight: Arc<Semaphore>,
    bucket: Bucket,
    /// With tokens on: the agent this connection's token belongs to.
    identity: Option<String>,
}

async fn session(socket: WebSocket, state: AppState, _permit: OwnedSemaphorePermit) {
    let (sink, mut stream) = socket.split();
    let outbox = Outbox::new(state.config.outbox_bytes);
    // Bounded by construction: the reader sends a handful of control messages at most.
    let link = Arc::new(Link {
        outbox: Arc::clone(&outbox),
        control: Default::default(),
        writer_done: CancellationToken::new(),
    });
    let mut writer = tokio::spawn(write_loop(sink, Arc::clone(&link), state.clone()));
    let frame_rate = state.config.max_frames_per_second;
    let mut s = Session {
        state,
        outbox,
        link,
        agent: None,
        subscription: None,
        in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
        bucket: Bucket::new(frame_rate),
        identity: None,
    };
    let span = tracing::debug_span!("ws", agent = tracing::field::Empty);
    let close = s.read_loop(&mut stream, &span).await;
    // The one cleanup spot.
    drop(s.subscription.take());
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
    if tokio::time::timeout_at(deadline, &mut writer).await.is_err() {
        writer.abort();
    }
    if let Some(agent) = s.agent.take() {
        // Presence goes offline now (if this was the agent's last session); its claims
        // wait out the grace. Failing here (broker stopping) is covered by the reset at
        // the next start.
        let _ = s.state.writer.submit(Command::Disconnect { agent }, None).await;
    }
    tracing::debug!(parent: &span, "connection closed");
}

impl Session {
    /// Reads frames until the connection ends; returns the close frame to send, if any.
    async fn read_loop(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
        span: &tracing::Span,
    ) -> Option<Control> {
        let every = self.state.config.ping_every;
        let mut ping = tokio::time::interval_at(Instant::now() + every, every);
        let hello_deadline = tokio::time::sleep(self.state.config.hello_timeout);
        tokio::pin!(hello_deadline);
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
                            let limit = self.state.config.max_frames_per_second;
                            let error = ErrorInfo {
                                code: ErrorCode::RateLimited,
                                message: format!("too many frames: at most {limit} per second; this one was dropped"),
                                field: None,
                            };
                            self.reply(Reply::error(None, error));
                        }
                        Some(Ok(Message::Text(text))) => self.handle(text.as_str(), span).await,
                        Some(Ok(Message::Binary(_))) => {
                            self.reply(Reply::error(None, invalid("frame", "binary frames are not supported; send JSON text")));
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => return None,
                        Some(Err(error)) => {
                            let too_big = matches!(
                                error.into_inner().downcast_ref::<tungstenite::Error>(),
                                Some(tungstenite::Error::Capacity(_))
                            );
                            return too_big.then_some(Control::Close(CLOSE_TOO_BIG, "frame larger than 1 MiB"));
                        }
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() > every * 2 {
                        tracing::info!(parent: span, "peer stopped answering pings; dropping it");
                        return None;
                    }
                    self.link.send(Control::Ping);
                }
                () = &mut hello_deadline, if self.subscription.is_none() => {
                    return Some(Control::Close(CLOSE_HELLO_TIMEOUT, "no hello in time"));
                }
                () = self.state.shutdown.cancelled() => {
                    return Some(Control::Close(CLOSE_GOING_AWAY, "broker shutting down"));
                }
                () = self.link.writer_done.cancelled() => return None,
            }
        }
    }

    fn reply(&self, reply: Reply) {
        push_reply(&self.outbox, &reply);
    }

    async fn handle(&mut self, text: &str, span: &tracing::Span) {
        let request = match Request::parse(text) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(parent: span, message = %e.error.message, "bad frame");
                return self.reply(Reply::error(e.id, e.error));
            }
        };
        let id = request.id;
        match request.op {
            Op::Hello(hello) => {
                if let Err(error) = self.hello(id, hello, span).await {
                    self.reply(Reply::error(Some(id), error));
                }
            }
            _ if self.subscription.is_none() => {
                self.reply(Reply::error(Some(id), invalid("op", "send hello first")));
            }
            Op::Subscribe(t) | Op::Unsubscribe(t) if t.topics.is_empty() => {
                self.reply(Reply::error(Some(id), invalid("topics", "name at least one topic")));
            }
            Op::Subscribe(t) => match topics(&t.topics) {
                Ok(topics)
                    if self.subscription.as_ref().map_or(0, Subscription::len) + topics.len()
                        > MAX_TOPICS_PER_CONNECTION =>
                {
                    let error = invalid(
                        "topics",
                        format!(
                            "at most {MAX_TOPICS_PER_CONNECTION} topics per connection; subscribe to `tasks` or `*` instead of many single ones"
                        ),
                    );
                    self.reply(Reply::error(Some(id), error));
                }
                Ok(topics) => {
                    let all = self.subscription.as_ref().map(|s| s.add(&topics)).unwrap_or_default();
                    self.reply(Reply::ok(id, json!({ "topics": all })));
                }
                Err(error) => self.reply(Reply::error(Some(id), error)),
            },
            Op::Unsubscribe(t) => match topics(&t.topics) {
                Ok(topics) => {
                    let all = self.subscription.as_ref().map(|s| s.remove(&topics)).unwrap_or_default();
                    self.reply(Reply::ok(id, json!({ "topics": all })));
                }
                Err(error) => self.reply(Reply::error(Some(id), error)),
            },
            op => {
                // Writes wait for the disk: run them beside the reader, a bounded number
                // at a time, so that one slow write does not stall the connection.
                let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else { return };
                let (state, outbox, agent) = (self.state.clone(), Arc::clone(&self.outbox), self.agent.clone());
                let identity = self.identity.clone();
                tokio::spawn(async move {
                    let run = ops::execute(&state, op, agent.as_deref());
                    let result = match identity {
                        Some(me) => crate::auth::ACTOR.scope(me, run).await,
                        None => run.await,
                    };
                    let reply = match result {
                        Ok(data) => Reply::ok(id, data),
                        Err(ApiError(error)) => Reply::error(Some(id), error),
                    };
                    push_reply(&outbox, &reply);
                    drop(permit);
                });
            }
        }
    }

    /// `hello`: become present as the agent, subscribe, and have the writer replay what the
    /// client missed.
    async fn hello(&mut self, id: u64, mut hello: Hello, span: &tracing::Span) -> Result<(), ErrorInfo> {
        if self.subscription.is_some() {
            return Err(invalid("op", "hello was already sent on this connection"));
        }
        if self.state.tokens.enabled() {
            let Some(identity) = hello.token.as_ref().and_then(|t| self.state.tokens.verify(t.expose())) else {
                let message = if hello.token.is_some() {
                    "the token is not valid (revoked, or from another broker)"
                } else {
                    "this broker requires a token: send it in hello (token)"
                };
                return Err(ErrorInfo {
                    code: ErrorCode::Unauthorized,
                    message: message.into(),
                    field: Some("token".into()),
                });
            };
            if let Some(agent) = hello.agent.as_ref().filter(|a| **a != identity.agent) {
                return Err(ErrorInfo {
                    code: ErrorCode::Forbidden,
                    message: format!("your token is {}'s: you may not act as {agent}", identity.agent),
                    field: Some("agent".into()),
                });
            }
            // A person's token makes a named session a person's; unnamed, it stays an observer.
            hello.human |= identity.human && hello.agent.is_some();
            self.identity = Some(identity.agent);
        }
        let topics = topics(&hello.topics)?;
        if hello.human && hello.agent.is_none() {
            return Err(invalid("human", "a human session needs a name: set agent"));
        }
        if let Some(agent) = &hello.agent {
            validate_agent("agent", agent).map_err(|e| e.to_info())?;
            self.state
                .writer
                .submit(Command::Connect { agent: agent.clone(), human: hello.human }, None)
                .await
                .map_err(|e| ApiError::from(e).0)?;
            span.record("agent", agent.as_str());
        }
        self.agent = hello.agent.clone();
        // Nothing live goes out before the replay is done.
        self.outbox.pause();
        let (subscription, head) = self.state.reader.hub().subscribe(Arc::clone(&self.outbox), &topics);
        self.subscription = Some(subscription);
        let epoch = self.state.store.epoch().to_owned();
        let store = Arc::clone(&self.state.store);
        let first = crate::http::read_blocking(move || store.first_retained(head))
            .await
            .map_err(|e| ErrorInfo { code: ErrorCode::Internal, message: e.to_string(), field: None })?
            .map_err(|e| ApiError::from(e).0)?;
        let same_history = hello.epoch.as_deref().is_none_or(|e| e == epoch);
        let replay = hello.since.filter(|since| same_history && *since <= head && since + 1 >= first);
        let welcome =
            Welcome { epoch, head, recovered: replay.is_some(), agent: self.agent.clone(), topics: topics.clone() };
        let welcome = serde_json::to_value(&welcome).map_err(|e| invalid("frame", e))?;
        let frame = encode(&Reply::ok(id, welcome));
        let control = Control::Replay(Box::new(Replay { welcome: frame, since: replay, head, topics }));
        self.link.send(control);
        Ok(())
    }
}

/// Checks and normalizes topics.
fn topics(raw: &[String]) -> Result<Vec<String>, ErrorInfo> {
    if raw.len() > MAX_TOPICS {
        return Err(invalid("topics", format!("at most {MAX_TOPICS} topics per request")));
    }
    raw.iter().map(|t| parse_topic(t).map_err(|e| e.to_info())).collect()
}

/// Most topics in one `hello` or `subscribe`.
pub const MAX_TOPICS: usize = 256;
/// Most topics one connection may hold: each costs a hub entry, and a client following
/// more tasks than this should subscribe to `tasks`.
pub const MAX_TOPICS_PER_CONNECTION: usize = 1024;

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

fn encode(reply: &Reply) -> Utf8Bytes {
    // A reply is plain data: serializing cannot fail.
    Utf8Bytes::from(serde_json::to_string(reply).unwrap_or_default())
}

fn push_reply(outbox: &Outbox, reply: &Reply) {
    // If the outbox overflowed or closed, the connection is going away anyway.
    outbox.push(encode(reply));
}

/// The writer task: owns the sink; sends the welcome and replay, then everything the outbox
/// holds, flushing once per batch; closes with 4008 when the outbox overflowed.
async fn write_loop(mut sink: futures_util::stream::SplitSink<WebSocket, Message>, link: Arc<Link>, state: AppState) {
    let outbox = &link.outbox;
    let mut frames = Vec::new();
    let result: Result<(), axum::Error> = async {
        loop {
            outbox.ready().await;
            while let Some(control) = link.next() {
                match control {
                    Control::Replay(r) => {
                        let Replay { welcome, since, head, topics } = *r;
                        sink.feed(Message::Text(welcome)).await?;
                        if let Some(since) = since {
                            replay(&mut sink, &state, since, head, &topics).await?;
                        }
                        sink.flush().await?;
                        outbox.resume();
                    }
                    Control::Ping => sink.send(Message::Ping(Default::default())).await?,
                    Control::Close(code, reason) => {
                        drain(&mut sink, outbox, &mut frames).await?;
                        return close(&mut sink, code, reason).await;
                    }
                    Control::Stop => return drain(&mut sink, outbox, &mut frames).await,
                }
            }
            drain(&mut sink, outbox, &mut frames).await?;
            if outbox.overflowed() {
                tracing::info!("slow consumer: outbox overflowed; closing with 4008");
                return close(
                    &mut sink,
                    CLOSE_SLOW_CONSUMER,
                    "slow consumer: outbox overflowed; resume from your last seq",
                )
                .await;
            }
        }
    }
    .await;
    outbox.close();
    link.writer_done.cancel();
    if let Err(error) = result {
        tracing::debug!(%error, "connection write failed");
    }
}

/// Sends everything ready, then flushes once.
async fn drain(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    outbox: &Outbox,
    frames: &mut Vec<Utf8Bytes>,
) -> Result<(), axum::Error> {
    if outbox.take(frames).is_err() {
        return Ok(());
    }
    if frames.is_empty() {
        return Ok(());
    }
    for frame in frames.drain(..) {
        sink.feed(Message::Text(frame)).await?;
    }
    sink.flush().await
}

/// Sends a close frame, giving up after [`CLOSE_WAIT`] (a slow consumer may not read it).
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

/// Sends the logged events `since < seq <= head` that match `topics`, in chunks.
async fn replay(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    state: &AppState,
    mut since: Seq,
    head: Seq,
    topics: &[String],
) -> Result<(), axum::Error> {
    while since < head {
        let store = Arc::clone(&state.store);
        let filter = topics.to_vec();
        let chunk = crate::http::read_blocking(move || store.events_scanned(since, head, &filter, REPLAY_CHUNK)).await;
        let (events, scanned) = match chunk {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(error)) => return Err(axum::Error::new(error)),
            Err(error) => return Err(axum::Error::new(error)),
        };
        for event in events {
            if let Ok(frame) = Utf8Bytes::try_from(event.json) {
                sink.feed(Message::Text(frame)).await?;
            }
        }
        sink.flush().await?;
        since = scanned;
    }
    Ok(())
}
