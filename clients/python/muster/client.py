"""The asyncio client: one WebSocket session to the broker, kept alive across losses.

Mirrors the JavaScript client (clients/js/muster.js): a typed call per operation, events in
``seq`` order exactly once, reconnection with backoff that resumes from the last ``seq``
(``since`` + ``epoch`` in ``hello``), or says :class:`~muster.errors.Resync` when it cannot.
A session works in one workspace (``workspace`` in every ``hello``), whose ``seq`` and epoch
those are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Union, overload

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from .errors import (
    Closed,
    Conflict,
    Disconnected,
    Invalid,
    MusterError,
    NotFound,
    Resync,
    Unauthorized,
    Unreachable,
    error_from_wire,
)
from .models import (
    ChannelInfo,
    ChatMessage,
    Cursor,
    Event,
    Inbox,
    MessageList,
    PathHolders,
    Presence,
    Reply,
    Reservation,
    Task,
    TaskPage,
    Welcome,
    WorkspaceInfo,
    parse_server_frame,
)
from .topics import parse_topic, receives

__all__ = ["UNSET", "Muster", "Status", "Unset", "Waited", "connect"]

Status = Literal["connecting", "open", "reconnecting", "closed"]
Waited = Union[ChatMessage, Task, Presence, Event]
"""What ends a :meth:`Muster.wait_for`: an unread message already in the inbox, the task
already in the status waited for, an agent already stuck, or the event that happened."""


class Unset:
    """The type of :data:`UNSET`: a field left out of the request (``None`` clears it)."""

    _instance: Unset | None = None

    def __new__(cls) -> Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()

#: Close code: the session's token was revoked. Final: no reconnection.
CLOSE_REVOKED: Final = 4003
#: Close code: the session's workspace was removed (archived or purged). Final.
CLOSE_WORKSPACE_REMOVED: Final = 4004
#: First and longest wait between reconnection attempts, in seconds.
BACKOFF_MIN: Final = 0.1
BACKOFF_MAX: Final = 5.0
#: The hello always uses this id: no call can be pending before the welcome.
HELLO_ID: Final = 0
#: Operations that change state: the only ones that may carry an idempotency key
#: (``task.next`` only with ``claim``).
WRITES: Final = frozenset(
    {
        "task.create",
        "task.update",
        "task.claim",
        "task.release",
        "task.complete",
        "task.comment",
        "chat.post",
        "inbox.ack",
        "presence.set",
        "files.reserve",
        "files.release",
    }
)


def ws_url(url: str) -> str:
    """The WebSocket URL of a broker: ``http`` -> ``ws``, ``https`` -> ``wss``, path ``/ws``."""
    base = url.rstrip("/")
    if base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    elif base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif "://" not in base:
        base = "ws://" + base
    return base if base.endswith("/ws") else base + "/ws"


def task_id(task: str | int) -> str:
    """``12``, ``"12"`` and ``"t-12"`` are ``"T-12"``."""
    if isinstance(task, int):
        return f"T-{task}"
    if task.isdigit():
        return f"T-{task}"
    if task[:2] == "t-":
        return "T-" + task[2:]
    return task


def _args(**fields: Any) -> dict[str, Any]:
    """The fields given: ``None`` and :data:`UNSET` are left out (the broker refuses
    unknown fields, and ``null`` means "clear" for some); pass the field as a ``None``
    inside ``_nullable`` to send an explicit ``null``."""
    return {k: v for k, v in fields.items() if v is not None and v is not UNSET}


class _Null:
    """An explicit JSON ``null`` in a request (``assignee=None`` unassigns)."""


_NULL = _Null()


def _nullable(value: Any) -> Any:
    return _NULL if value is None else value


def _encode(frame: dict[str, Any]) -> str:
    return json.dumps({k: (None if v is _NULL else v) for k, v in frame.items()}, separators=(",", ":"))


_END = object()  # the stream is over (the client closed)
_StreamItem = Union[Event, Resync, MusterError, object]


class _Stream:
    """The events received since the client connected, for :meth:`Muster.events`."""

    def __init__(self, max_buffer: int) -> None:
        self.queue: asyncio.Queue[_StreamItem] = asyncio.Queue()
        self.max_buffer = max_buffer
        self.ended: _StreamItem | None = None

    def put(self, item: _StreamItem, epoch: str, head: int) -> None:
        if isinstance(item, Event) and self.queue.qsize() >= self.max_buffer:
            # Nobody reads fast enough: say so once instead of growing without bound.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(Resync(epoch, head, "the client's event buffer overflowed"))
            return
        self.queue.put_nowait(item)


class EventStream:
    """``async for event in m.events()``: each event once, in ``seq`` order.

    A :class:`~muster.errors.Resync` is raised where events were missed; the stream stays
    usable (iterate it again after re-reading the state). With ``resync="yield"``, the
    ``Resync`` is yielded instead. Ends when the client closes; raises
    :class:`~muster.errors.Unauthorized` when the broker revoked the token.
    """

    def __init__(self, stream: _Stream, yield_resync: bool) -> None:
        self._stream = stream
        self._yield_resync = yield_resync

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Any:
        stream = self._stream
        if stream.ended is not None and stream.queue.empty():
            item = stream.ended
        else:
            item = await stream.queue.get()
            if item is _END or (isinstance(item, MusterError) and not isinstance(item, Resync)):
                stream.ended = item
                stream.queue.put_nowait(item)  # other iterators end too
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, Resync):
            if self._yield_resync:
                return item
            raise item
        if isinstance(item, MusterError):
            raise item
        return item


class Muster:
    """One WebSocket session to the broker, kept alive across connection losses.

    Use :func:`connect`: ``async with muster.connect(url, agent="bot-1") as m: ...``.
    Requests are never queued or replayed: one made while disconnected raises
    :class:`~muster.errors.Disconnected` at once, and one in flight when the connection is
    lost raises it too (the write may or may not have happened; use an
    ``idempotency_key`` to retry it safely).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        agent: str | None = None,
        workspace: str | None = None,
        token: str | None = None,
        topics: Iterable[str] = (),
        since: int | None = None,
        epoch: str | None = None,
        human: bool = False,
        reconnect: bool = True,
        connect_timeout: float = 10.0,
        max_buffer: int = 100_000,
    ) -> None:
        # Several brokers of one cluster: each (re)connection tries the next, resuming by seq.
        self._urls: list[str] = [url] if isinstance(url, str) else list(url)
        if not self._urls:
            raise ValueError("connect needs at least one broker URL")
        self.url = self._urls[0]
        self.agent = agent.lower() if agent else None
        # Names are case-insensitive; the broker answers with the lowercase one.
        self._workspace = workspace.lower() if workspace else None
        self._token = token or None
        self._human = human
        self._reconnect = reconnect
        self._connect_timeout = connect_timeout
        self._max_buffer = max_buffer
        self._topics: list[str] = list(topics)
        self._last_seq: int | None = since
        self._epoch: str | None = epoch if since is not None else None
        # The newest event seen in any answer (a reply's head, an event's seq): sent with every
        # request as ``after``, so that a read through another node of a cluster is never older
        # than what this client has seen.
        self._seen: int | None = None
        self._status: Status = "connecting"
        self._ws: ClientConnection | None = None
        self._welcomed = False
        self._welcome: Welcome | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = HELLO_ID + 1
        self._listeners: set[asyncio.Queue[Event | Resync]] = set()
        self._wait_topics: Counter[str] = Counter()
        self._stream: _Stream | None = None
        self._runner: asyncio.Task[None] | None = None
        self._first: asyncio.Future[Welcome] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Welcome:
        """Connects and says hello; returns the first welcome. Raises
        :class:`~muster.errors.Unreachable` when the broker cannot be reached (the client
        is then closed), or the broker's error when it refuses the hello."""
        if self._runner is None:
            loop = asyncio.get_running_loop()
            self._stream = _Stream(self._max_buffer)
            self._first = loop.create_future()
            self._runner = loop.create_task(self._run(), name="muster-session")
        assert self._first is not None
        return await asyncio.shield(self._first)

    def __await__(self) -> Generator[Any, None, Muster]:
        async def started() -> Muster:
            await self.start()
            return self

        return started().__await__()

    async def __aenter__(self) -> Muster:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Ends the session: no reconnection; pending calls raise
        :class:`~muster.errors.Closed`; event streams end."""
        if self._status == "closed" and self._runner is None:
            return
        self._finish("closed", Closed("closed", "the client was closed before the broker answered"), _END)
        runner, self._runner = self._runner, None
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    @property
    def status(self) -> Status:
        """``connecting``, ``open``, ``reconnecting`` or ``closed``."""
        return self._status

    @property
    def last_seq(self) -> int | None:
        """The ``seq`` of the last event received (or the head at the last hello that could
        not resume)."""
        return self._last_seq

    @property
    def epoch(self) -> str | None:
        """The epoch of the session's workspace (its history's identity), once connected."""
        return self._epoch

    @property
    def workspace(self) -> str | None:
        """The session's workspace: the welcome's once connected, before that the one asked
        for (None: the broker's ``default``, or the one a ``.../w/{workspace}`` URL names)."""
        return self._welcome.workspace if self._welcome is not None else self._workspace

    @property
    def seen(self) -> int | None:
        """The newest event this client has seen in any reply or event (sent as ``after``
        with every request); None before the first welcome."""
        return self._seen

    def _see(self, seq: int | None) -> None:
        if seq is not None and (self._seen is None or seq > self._seen):
            self._seen = seq

    @property
    def welcome(self) -> Welcome | None:
        """The last welcome."""
        return self._welcome

    @property
    def topics(self) -> list[str]:
        """The topics sent in every hello (follows subscribe/unsubscribe)."""
        return list(self._topics)

    # -- the connection ----------------------------------------------------------------

    def _finish(self, status: Status, error: MusterError, end: _StreamItem) -> None:
        self._status = status
        self._welcomed = False
        self._fail_pending(error)
        if self._first is not None and not self._first.done():
            self._first.set_exception(error)
        if self._stream is not None and self._stream.ended is None:
            self._stream.queue.put_nowait(end)
        for listener in list(self._listeners):
            listener.put_nowait(Resync(self._epoch or "", self._last_seq or 0, "the client closed"))

    def _fail_pending(self, error: MusterError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    def _next_url(self) -> None:
        """Moves to the next broker URL (a no-op with one)."""
        self.url = self._urls[(self._urls.index(self.url) + 1) % len(self._urls)]

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        ever_connected = False
        # Before the first welcome each URL is tried once, at once; only when every one
        # failed is the broker unreachable.
        first_tries = len(self._urls)
        while True:
            reason: str
            try:
                ws = await ws_connect(
                    ws_url(self.url),
                    open_timeout=self._connect_timeout,
                    max_size=64 * 1024 * 1024,
                    close_timeout=1,
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure to connect is a loss
                reason = str(error) or type(error).__name__
                if not ever_connected:
                    first_tries -= 1
                    if first_tries > 0:
                        self._next_url()
                        continue
                    self._finish("closed", Unreachable("unreachable", f"broker not reachable at {self._where()}: {reason}"), _END)
                    return
            else:
                self._ws = ws
                try:
                    welcome = await asyncio.wait_for(self._hello(ws), self._connect_timeout)
                except MusterError as refused:
                    # A refused first hello is a mistake in the options, and a workspace that
                    # is gone (purged) stays gone: retrying cannot fix either.
                    if not ever_connected or isinstance(refused, NotFound):
                        await self._drop(ws)
                        # After a welcome, the events stream ends with the error (start() raised
                        # the first one).
                        self._finish("closed", refused, refused if ever_connected else _END)
                        return
                    reason = refused.message
                except (ConnectionClosed, WebSocketException, OSError, asyncio.TimeoutError) as error:
                    reason = str(error) or "timed out"
                    if not ever_connected:
                        await self._drop(ws)
                        first_tries -= 1
                        if first_tries > 0:
                            self._next_url()
                            continue
                        self._finish("closed", Unreachable("unreachable", f"broker not reachable at {self._where()}: {reason}"), _END)
                        return
                else:
                    ever_connected = True
                    backoff = BACKOFF_MIN
                    self._on_welcome(welcome)
                    reason = await self._serve(ws)
                    if ws.close_code == CLOSE_REVOKED:
                        await self._drop(ws)
                        revoked = Unauthorized("unauthorized", f"the broker revoked this session's token ({reason})")
                        self._finish("closed", revoked, revoked)
                        return
                    if ws.close_code == CLOSE_WORKSPACE_REMOVED:
                        await self._drop(ws)
                        removed = Conflict("conflict", f"the broker removed workspace {self.workspace} ({reason})")
                        self._finish("closed", removed, removed)
                        return
                await self._drop(ws)
            self._welcomed = False
            self._fail_pending(
                Disconnected(
                    "disconnected",
                    f"connection to the broker lost before it answered ({reason}); the operation may or may not have happened",
                )
            )
            if not self._reconnect:
                self._finish("closed", Closed("closed", "the connection was lost"), _END)
                return
            self._status = "reconnecting"
            self._next_url()
            # Jitter spreads the reconnections of many clients after a broker restart.
            await asyncio.sleep(min(backoff * (0.75 + random.random() / 2), BACKOFF_MAX))
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _where(self) -> str:
        return self.url if len(self._urls) == 1 else f"any of {', '.join(self._urls)}"

    async def _drop(self, ws: ClientConnection) -> None:
        if self._ws is ws:
            self._ws = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 1)

    async def _hello(self, ws: ClientConnection) -> Welcome:
        hello: dict[str, Any] = {"id": HELLO_ID, "op": "hello"}
        hello.update(
            _args(
                workspace=self._workspace,
                agent=self.agent,
                human=True if self._human else None,
                token=self._token,
                topics=self._topics or None,
                since=self._last_seq,
                epoch=self._epoch if self._last_seq is not None else None,
            )
        )
        await ws.send(_encode(hello))
        while True:
            frame = parse_server_frame(json.loads(await ws.recv()))
            if isinstance(frame, Reply) and frame.re == HELLO_ID:
                if not frame.ok:
                    raise error_from_wire(frame.error, "the broker refused hello: ")
                return Welcome.from_json(frame.data)

    def _on_welcome(self, welcome: Welcome) -> None:
        since = self._last_seq
        epoch_changed = self._epoch is not None and self._epoch != welcome.epoch
        resumed = since is not None and welcome.recovered and not epoch_changed
        welcome.resumed = resumed
        self._welcome = welcome
        if epoch_changed:
            self._seen = None  # what was seen of another history says nothing about this one
        self._see(welcome.head)
        self._epoch = welcome.epoch
        if welcome.topics:
            self._topics = list(welcome.topics)
        # Without a replay, live events continue after head: what came before is not coming.
        if not resumed:
            self._last_seq = welcome.head
        self._welcomed = True
        self._status = "open"
        if since is not None and not resumed:
            why = "the broker's epoch changed" if epoch_changed else f"events after seq {since} are not in the broker's log"
            resync = Resync(welcome.epoch, welcome.head, why)
            self._deliver(resync)
        if self._first is not None and not self._first.done():
            self._first.set_result(welcome)

    async def _serve(self, ws: ClientConnection) -> str:
        try:
            async for message in ws:
                try:
                    frame = parse_server_frame(json.loads(message))
                except ValueError:
                    continue
                if isinstance(frame, Reply):
                    self._on_reply(frame)
                elif isinstance(frame, Event):
                    # A replay after a reconnection may overlap what was already seen.
                    if self._last_seq is not None and frame.seq <= self._last_seq:
                        continue
                    self._last_seq = frame.seq
                    self._see(frame.seq)
                    self._deliver(frame)
        except ConnectionClosed as closed:
            return str(closed)
        except (WebSocketException, OSError) as error:
            return str(error) or type(error).__name__
        return f"closed {ws.close_code}: {ws.close_reason}" if ws.close_code else "closed"

    def _on_reply(self, reply: Reply) -> None:
        self._see(reply.head)
        if reply.re is None:
            return  # an answer to a frame too broken to have an id: nothing waits for it
        future = self._pending.pop(reply.re, None)
        if future is None or future.done():
            return
        if reply.ok:
            future.set_result(reply.data)
        else:
            future.set_exception(error_from_wire(reply.error))

    def _deliver(self, item: Event | Resync) -> None:
        if self._stream is not None:
            self._stream.put(item, self._epoch or "", self._last_seq or 0)
        for listener in list(self._listeners):
            listener.put_nowait(item)

    # -- requests ----------------------------------------------------------------------

    async def call(self, op: str, args: dict[str, Any] | None = None, *, idempotency_key: str | None = None) -> Any:
        """Sends any operation; returns the reply's ``data``. Raises the broker's error,
        :class:`~muster.errors.Disconnected` when the connection is down or lost before the
        answer (never queued nor replayed), or :class:`~muster.errors.Closed`.

        ``idempotency_key`` (writes only) is sent as the frame's top-level
        ``idempotencyKey`` field, the WebSocket form of HTTP's ``Idempotency-Key`` header: a
        retry with the same key and request gets the first answer back. A broker older
        than that field refuses it as ``invalid`` (field ``idempotencyKey``).
        """
        if self._status == "closed":
            raise Closed("closed", "the client is closed")
        if idempotency_key is not None and op not in WRITES and not (op == "task.next" and (args or {}).get("claim")):
            raise Invalid("invalid", "idempotencyKey: only a write takes one (a read is safe to repeat)", "idempotencyKey")
        ws = self._ws
        if ws is None or not self._welcomed:
            raise Disconnected("disconnected", "not connected to the broker; retry when the status is open")
        request_id = self._next_id
        self._next_id += 1
        frame: dict[str, Any] = {"id": request_id, "op": op, **(args or {})}
        frame["id"] = request_id
        frame["op"] = op
        if idempotency_key is not None:
            frame["idempotencyKey"] = idempotency_key
        if self._seen is not None:
            frame["after"] = self._seen
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await ws.send(_encode(frame))
        except Exception as error:  # noqa: BLE001
            self._pending.pop(request_id, None)
            raise Disconnected("disconnected", f"could not send: {error}") from error
        return await future

    # -- tasks -------------------------------------------------------------------------

    async def create_task(
        self,
        title: str,
        *,
        description: str | None = None,
        priority: str | None = None,
        assignee: str | None = None,
        blocked_by: Sequence[str | int] | None = None,
        tags: Sequence[str] | None = None,
        agent: str | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        """Creates a task (``task.create``)."""
        args = _args(
            title=title,
            description=description,
            priority=priority,
            assignee=assignee,
            blockedBy=[task_id(t) for t in blocked_by] if blocked_by else None,
            tags=list(tags) if tags else None,
            agent=agent,
        )
        return Task.from_json((await self.call("task.create", args, idempotency_key=idempotency_key))["task"])

    async def get_task(self, task: str | int) -> Task:
        """One task (``task.get``)."""
        return Task.from_json((await self.call("task.get", {"task": task_id(task)}))["task"])

    async def list_tasks(
        self,
        *,
        status: str | Sequence[str] | None = None,
        all: bool = False,
        order: Literal["asc", "desc"] | None = None,
        assignee: str | None = None,
        priority: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of tasks (``task.list``), by id; pass its ``next`` as ``cursor``.
        Without ``status`` or ``all``: the board (unfinished tasks and the last finished)."""
        statuses = [status] if isinstance(status, str) else (list(status) if status else None)
        args = _args(
            status=statuses,
            all=True if all else None,
            order=order,
            assignee=assignee,
            priority=priority,
            tag=tag,
            limit=limit,
            cursor=cursor,
        )
        return TaskPage.from_json(await self.call("task.list", args))

    async def tasks(
        self,
        *,
        status: str | Sequence[str] | None = None,
        all: bool = False,
        assignee: str | None = None,
        priority: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        """Every task that passes the filter, page after page."""
        out: list[Task] = []
        cursor: str | None = None
        while True:
            page = await self.list_tasks(
                status=status, all=all, assignee=assignee, priority=priority, tag=tag, limit=limit, cursor=cursor
            )
            out.extend(page.tasks)
            if not page.next:
                return out
            cursor = page.next

    async def update_task(
        self,
        task: str | int,
        *,
        title: str | None = None,
        description: str | None = None,
        priority: str | None = None,
        assignee: str | None | Unset = UNSET,
        status: str | None = None,
        blocked_by: Sequence[str | int] | None = None,
        tags: Sequence[str] | None = None,
        agent: str | None = None,
        token: int | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        """Changes fields of a task (``task.update``); ``assignee=None`` unassigns."""
        args = {"task": task_id(task)}
        args.update(
            _args(
                title=title,
                description=description,
                priority=priority,
                assignee=_nullable(assignee),
                status=status,
                blockedBy=[task_id(t) for t in blocked_by] if blocked_by is not None else None,
                tags=list(tags) if tags is not None else None,
                agent=agent,
                token=token,
            )
        )
        return Task.from_json((await self.call("task.update", args, idempotency_key=idempotency_key))["task"])

    async def claim(
        self, task: str | int, *, agent: str | None = None, token: int | None = None, idempotency_key: str | None = None
    ) -> Task:
        """Claims a task (``task.claim``) as the session's agent unless ``agent`` names one.
        Raises :class:`~muster.errors.Conflict` (``owner``) when someone else holds it."""
        args = {"task": task_id(task), **_args(agent=agent, token=token)}
        return Task.from_json((await self.call("task.claim", args, idempotency_key=idempotency_key))["task"])

    async def release(
        self,
        task: str | int,
        *,
        agent: str | None = None,
        force: bool = False,
        token: int | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        """Releases a claim (``task.release``); ``force`` takes it from another owner."""
        args = {"task": task_id(task), **_args(agent=agent, force=True if force else None, token=token)}
        return Task.from_json((await self.call("task.release", args, idempotency_key=idempotency_key))["task"])

    async def complete(
        self, task: str | int, *, agent: str | None = None, token: int | None = None, idempotency_key: str | None = None
    ) -> Task:
        """Completes a task (``task.complete``)."""
        args = {"task": task_id(task), **_args(agent=agent, token=token)}
        return Task.from_json((await self.call("task.complete", args, idempotency_key=idempotency_key))["task"])

    async def comment(
        self,
        task: str | int,
        content: str,
        *,
        reply_to: str | None = None,
        sender: str | None = None,
        idempotency_key: str | None = None,
    ) -> ChatMessage:
        """Comments on a task (``task.comment``) from the session's agent unless ``sender``
        (the wire's ``from``) is set: a message in the task's thread (``#T-3``), published
        as ``task.commented`` on ``tasks``, ``task:<id>`` and the inboxes of its ``@name``
        mentions."""
        args = {"task": task_id(task), **_args(content=content, replyTo=reply_to)}
        if sender is not None:
            args["from"] = sender
        return ChatMessage.from_json((await self.call("task.comment", args, idempotency_key=idempotency_key))["message"])

    async def comments(self, task: str | int, *, limit: int | None = None) -> list[ChatMessage]:
        """Every comment on a task (``task.comments``), oldest first: every page."""
        return [ChatMessage.from_json(m) for m in await self._all("task.comments", "messages", limit, task=task_id(task))]

    async def next_task(
        self, *, agent: str | None = None, claim: bool = False, idempotency_key: str | None = None
    ) -> Task | None:
        """The next task for an agent (``task.next``); with ``claim=True`` claimed
        atomically. None when there is nothing to do."""
        args = _args(agent=agent, claim=True if claim else None)
        data = await self.call("task.next", args, idempotency_key=idempotency_key)
        task = data.get("task") if isinstance(data, dict) else None
        return Task.from_json(task) if isinstance(task, dict) else None

    # -- chat and inbox ----------------------------------------------------------------

    async def post(
        self,
        content: str,
        *,
        channel: str | None = None,
        to: str | None = None,
        reply_to: str | None = None,
        sender: str | None = None,
        task: str | int | None = None,
        idempotency_key: str | None = None,
    ) -> ChatMessage:
        """Posts a message (``chat.post``) from the session's agent unless ``sender`` (the
        wire's ``from``) is set. ``@name`` mentions and ``to`` land in inboxes. With
        ``task`` (not with ``channel`` or ``to``) it is a comment on that task, as
        :meth:`comment` makes."""
        args = _args(
            content=content,
            channel=channel,
            to=to,
            replyTo=reply_to,
            task=task_id(task) if task is not None else None,
        )
        if sender is not None:
            args["from"] = sender
        return ChatMessage.from_json((await self.call("chat.post", args, idempotency_key=idempotency_key))["message"])

    async def read_chat(
        self,
        *,
        channel: str | None = None,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> MessageList:
        """Reads a channel (``chat.read``; ``general`` by default), oldest first."""
        args = _args(channel=channel, since=since, before=before, limit=limit, cursor=cursor)
        return MessageList.from_json(await self.call("chat.read", args))

    async def channels(self, *, limit: int | None = None) -> list[ChannelInfo]:
        """Channels with messages (``chat.channels``), by name: every page."""
        return [ChannelInfo.from_json(c) for c in await self._all("chat.channels", "channels", limit)]

    async def inbox(
        self, *, agent: str | None = None, all: bool = False, limit: int | None = None, cursor: str | None = None
    ) -> Inbox:
        """An agent's inbox (``inbox.read``; the session's agent by default): unread
        messages, or every one with ``all=True``."""
        args = _args(agent=agent, all=True if all else None, limit=limit, cursor=cursor)
        return Inbox.from_json(await self.call("inbox.read", args))

    async def ack(
        self, *, agent: str | None = None, seq: int | None = None, idempotency_key: str | None = None
    ) -> Cursor:
        """Marks an inbox read up to ``seq`` (``inbox.ack``; default: everything)."""
        args = _args(agent=agent, seq=seq)
        return Cursor.from_json(await self.call("inbox.ack", args, idempotency_key=idempotency_key))

    # -- presence ----------------------------------------------------------------------

    async def presence(self, *, limit: int | None = None) -> list[Presence]:
        """Every agent seen (``presence.list``), by name: every page."""
        return [Presence.from_json(a) for a in await self._all("presence.list", "agents", limit)]

    async def set_status(
        self,
        *,
        status: str | None = None,
        note: str | None | Unset = UNSET,
        agent: str | None = None,
        idempotency_key: str | None = None,
    ) -> Presence:
        """A heartbeat with a status and note (``presence.set``); ``note=None`` clears the
        note, ``status="active"`` clears the status."""
        args = _args(agent=agent, status=status, note=_nullable(note))
        return Presence.from_json((await self.call("presence.set", args, idempotency_key=idempotency_key))["agent"])

    # -- files -------------------------------------------------------------------------

    async def reserve_files(
        self,
        repo: str,
        patterns: Sequence[str],
        *,
        shared: bool = False,
        task: str | int | None = None,
        reason: str | None = None,
        ttl_seconds: int | None = None,
        agent: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[Reservation]:
        """Reserves paths of a repository (``files.reserve``), all or none. An overlap with
        another agent's reservation raises :class:`~muster.errors.Conflict` whose
        ``conflicts`` name each holder, its pattern and a path both match."""
        args = _args(
            repo=repo,
            patterns=list(patterns),
            shared=True if shared else None,
            task=task_id(task) if task is not None else None,
            reason=reason,
            ttlSeconds=ttl_seconds,
            agent=agent,
        )
        data = await self.call("files.reserve", args, idempotency_key=idempotency_key)
        return [Reservation.from_json(r) for r in data.get("reservations", [])]

    async def release_files(
        self,
        repo: str,
        *,
        patterns: Sequence[str] | None = None,
        task: str | int | None = None,
        agent: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[Reservation]:
        """Releases reservations in ``repo`` (``files.release``): those with ``patterns``,
        those of ``task``, or all. Returns what was released."""
        args = _args(
            repo=repo,
            patterns=list(patterns) if patterns else None,
            task=task_id(task) if task is not None else None,
            agent=agent,
        )
        data = await self.call("files.release", args, idempotency_key=idempotency_key)
        return [Reservation.from_json(r) for r in data.get("reservations", [])]

    async def list_files(
        self, *, repo: str | None = None, agent: str | None = None, task: str | int | None = None
    ) -> list[Reservation]:
        """The reservations held now (``files.list``)."""
        args = _args(repo=repo, agent=agent, task=task_id(task) if task is not None else None)
        data = await self.call("files.list", args)
        return [Reservation.from_json(r) for r in data.get("reservations", [])]

    async def who_has_files(self, repo: str, paths: Sequence[str]) -> list[PathHolders]:
        """Who holds each path (``files.who``)."""
        data = await self.call("files.who", {"repo": repo, "paths": list(paths)})
        return [PathHolders.from_json(p) for p in data.get("paths", [])]

    # -- workspaces --------------------------------------------------------------------

    async def workspaces(self) -> list[WorkspaceInfo]:
        """Every workspace of the broker (``workspace.list``), archived ones included, by
        name: whichever the session works in."""
        return [WorkspaceInfo.from_json(w) for w in (await self.call("workspace.list"))["workspaces"]]

    async def add_workspace(self, name: str) -> WorkspaceInfo:
        """Adds a workspace (``workspace.add``; with tokens on, a person's token only).
        Raises :class:`~muster.errors.Conflict` when it exists (archived ones too). Work in
        it with another session: ``connect(url, workspace=name)``."""
        return WorkspaceInfo.from_json(await self.call("workspace.add", {"name": name}))

    async def remove_workspace(self, name: str, *, purge: bool = False) -> WorkspaceInfo:
        """Removes a workspace (``workspace.remove``; with tokens on, a person's token only):
        archived — read-only, its data kept — or, with ``purge``, deleted. Its sessions are
        closed either way; ``default`` cannot be removed (:class:`~muster.errors.Conflict`)."""
        args = {"name": name, **_args(purge=True if purge else None)}
        return WorkspaceInfo.from_json(await self.call("workspace.remove", args))

    # -- topics ------------------------------------------------------------------------

    async def subscribe(self, topics: Sequence[str]) -> list[str]:
        """Receives more topics, now and after every reconnection; returns every topic
        subscribed now."""
        now = list((await self.call("subscribe", {"topics": list(topics)}))["topics"])
        # Only what the broker accepted is re-sent on reconnection.
        self._topics = now
        return now

    async def unsubscribe(self, topics: Sequence[str]) -> list[str]:
        """Stops receiving topics; returns the topics still subscribed."""
        now = list((await self.call("unsubscribe", {"topics": list(topics)}))["topics"])
        self._topics = now
        return now

    async def _all(self, op: str, key: str, limit: int | None, **fields: Any) -> list[Any]:
        items: list[Any] = []
        cursor: str | None = None
        while True:
            page = await self.call(op, _args(**fields, limit=limit, cursor=cursor))
            items.extend(page.get(key, []))
            cursor = page.get("next")
            if not cursor:
                return items

    # -- events ------------------------------------------------------------------------

    @overload
    def events(self, *, resync: Literal["raise"] = "raise") -> AsyncIterator[Event]: ...

    @overload
    def events(self, *, resync: Literal["yield"]) -> AsyncIterator[Event | Resync]: ...

    def events(self, *, resync: Literal["raise", "yield"] = "raise") -> AsyncIterator[Any]:
        """The events received on the subscribed topics, each once, in ``seq`` order, from
        the moment the client connected (they are buffered until read). Where events were
        missed (another epoch, a trimmed log), :class:`~muster.errors.Resync` is raised —
        the iterator stays usable — or yielded with ``resync="yield"``."""
        if self._stream is None:
            raise Closed("closed", "the client is not started: use `async with muster.connect(...)`")
        return EventStream(self._stream, resync == "yield")

    async def wait_for(
        self,
        *,
        mention: bool | str = False,
        task: str | int | None = None,
        until: str | None = None,
        topic: str | Sequence[str] | None = None,
        stuck: bool = False,
        timeout: float | None = None,
        ack: bool = False,
    ) -> Waited | None:
        """Blocks until one of these happens, and returns it; **None on timeout**.

        - ``mention``: a message (a chat message or a comment on a task, its ``chat.message``
          or ``task.commented`` event) that mentions the session's agent (``True``) or the
          agent named, or is addressed to it; an unread one already in the inbox counts
          (returned as a :class:`ChatMessage`; with ``ack=True`` the inbox is marked read up
          to it).
        - ``task``: a change to this task, or a comment on it; with ``until``, only once it
          has that status (already having it counts: returned as a :class:`Task`).
        - ``stuck``: an agent stuck (one already stuck counts: a :class:`Presence`).
        - ``topic``: any event on these topics.

        Like the JS and Rust clients it listens first, subscribes, then looks at the state:
        an event between two of those steps is still seen, one before is found in the state.
        After a resync the state is looked at again. Topics the wait subscribed to are
        unsubscribed when it ends.
        """
        me: str | None
        if mention is True:
            if not self.agent:
                raise Invalid("invalid", "mention: the session has no agent; name one", "mention")
            me = self.agent
        elif isinstance(mention, str) and mention:
            me = mention.lower()
        else:
            me = None
        wanted_task = task_id(task) if task is not None else None
        watched = [topic] if isinstance(topic, str) else list(topic or [])
        needed = [parse_topic(t) for t in watched]
        if me:
            needed.append(f"inbox:{me}")
        if wanted_task:
            needed.append(parse_topic(f"task:{wanted_task}"))
        if stuck:
            needed.append("presence")
        if not needed:
            raise Invalid("invalid", "wait_for: nothing to wait for (mention, task, stuck or topic)")
        needed = list(dict.fromkeys(needed))

        def wanted(event: Event) -> bool:
            if me and event.message is not None and me in event.message.recipients():
                return True
            if wanted_task and event.task is not None and event.task.id == wanted_task:
                if until is None or event.task.status == until:
                    return True
            # A comment is news about the task, though not a change of its status.
            if wanted_task and until is None and event.type == "task.commented" and event.message is not None:
                if event.message.task == wanted_task:
                    return True
            if stuck and event.agent_record is not None and event.agent_record.stuck:
                return True
            return any(receives(t, event) for t in watched)

        async def found(result: Waited) -> Waited:
            if ack and isinstance(result, ChatMessage) and me:
                await self.ack(agent=me, seq=result.seq)
            elif ack and isinstance(result, Event) and result.message is not None and me:
                if me in result.message.recipients():
                    await self.ack(agent=me, seq=result.seq)
            return result

        async def wait(queue: asyncio.Queue[Event | Resync]) -> Waited:
            added = [t for t in needed if t not in self._topics]
            for t in needed:
                self._wait_topics[t] += 1
            try:
                if added:
                    await self.subscribe(added)
                while True:
                    if me:
                        inbox = await self.inbox(agent=me, limit=1)
                        if inbox.messages:
                            return await found(inbox.messages[0])
                    if wanted_task and until is not None:
                        current = await self.get_task(wanted_task)
                        if current.status == until:
                            return current
                    if stuck:
                        for agent in await self.presence():
                            if agent.stuck:
                                return agent
                    while True:
                        item = await queue.get()
                        if isinstance(item, Resync):
                            if self._status == "closed":
                                raise Closed("closed", "the client was closed while waiting")
                            break  # events may have been missed: look at the state again
                        if wanted(item):
                            return await found(item)
            finally:
                for t in needed:
                    self._wait_topics[t] -= 1
                leave = [t for t in added if self._wait_topics[t] <= 0]
                if leave and self._status == "open":
                    with contextlib.suppress(MusterError):
                        await self.unsubscribe(leave)

        queue: asyncio.Queue[Event | Resync] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            if timeout is None:
                return await wait(queue)
            try:
                return await asyncio.wait_for(wait(queue), timeout)
            except asyncio.TimeoutError:
                return None
        finally:
            self._listeners.discard(queue)


def connect(
    url: str | Sequence[str],
    *,
    agent: str | None = None,
    workspace: str | None = None,
    token: str | None = None,
    topics: Iterable[str] = (),
    since: int | None = None,
    epoch: str | None = None,
    human: bool = False,
    reconnect: bool = True,
    connect_timeout: float = 10.0,
    max_buffer: int = 100_000,
) -> Muster:
    """A session to the broker at ``url`` (``http://127.0.0.1:4445`` or ``ws://...``), or to
    the first that answers of several (the nodes of a cluster; a lost connection moves on to
    the next and resumes by ``seq``):
    ``async with connect(url, agent="bot-1") as m:`` (or ``m = await connect(...)``, then
    ``await m.close()``).

    ``workspace``: the one the session works in, named in every ``hello`` (default: the
    broker's ``default``); an unknown one is refused with :class:`~muster.errors.NotFound`.
    ``topics`` are received from every (re)connection; ``since``/``epoch`` resume after
    that ``seq`` of that workspace on the first connection. ``max_buffer``: events kept for
    :meth:`Muster.events` until read (beyond, they are dropped for a ``Resync``).
    """
    return Muster(
        url,
        agent=agent,
        workspace=workspace,
        token=token,
        topics=topics,
        since=since,
        epoch=epoch,
        human=human,
        reconnect=reconnect,
        connect_timeout=connect_timeout,
        max_buffer=max_buffer,
    )
