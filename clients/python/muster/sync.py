"""A blocking facade over the asyncio client, for scripts and synchronous agents.

``muster.Client(url, agent="a").claim("T-3")`` runs the very same :class:`~muster.Muster`
code on an event loop in a background thread: every method is the async one, called and
waited for. It is not a second implementation.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from .client import Muster, Status
from .errors import Resync
from .models import Event, Welcome

__all__ = ["Client"]

P = ParamSpec("P")
R = TypeVar("R")


def _blocking(method: Callable[Concatenate[Muster, P], Coroutine[Any, Any, R]]) -> Callable[Concatenate[Client, P], R]:
    """The blocking form of an async method of :class:`Muster`."""

    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(method(self._async, *args, **kwargs))

    call.__name__ = method.__name__
    call.__qualname__ = f"Client.{method.__name__}"
    call.__doc__ = method.__doc__
    return call


_DONE = object()


async def _next(stream: Any) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return _DONE


class Client:
    """A blocking session to the broker; connects in the constructor.

    ``with muster.Client(url, agent="bot-1") as m: m.claim("T-3")``. The methods are those
    of :class:`~muster.Muster` without ``await``; errors are the same exceptions.
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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="muster-client", daemon=True)
        self._thread.start()
        self._async = Muster(
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
        try:
            self.first_welcome: Welcome = self._run(self._async.start())
        except BaseException:
            self._stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, R]) -> R:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("muster.Client: called from its own event loop thread; use the async API there")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()

    def close(self) -> None:
        """Ends the session and stops the background thread."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._async.close())
        finally:
            self._stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def aio(self) -> Muster:
        """The async client underneath (use it only on its loop: :attr:`loop`)."""
        return self._async

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the background thread runs."""
        return self._loop

    @property
    def status(self) -> Status:
        return self._async.status

    @property
    def last_seq(self) -> int | None:
        return self._async.last_seq

    @property
    def epoch(self) -> str | None:
        return self._async.epoch

    @property
    def seen(self) -> int | None:
        return self._async.seen

    @property
    def workspace(self) -> str | None:
        return self._async.workspace

    @overload
    def events(self, *, resync: Literal["raise"] = "raise") -> Iterator[Event]: ...

    @overload
    def events(self, *, resync: Literal["yield"]) -> Iterator[Event | Resync]: ...

    def events(self, *, resync: Literal["raise", "yield"] = "raise") -> Iterator[Any]:
        """Blocking iterator over the events (see :meth:`Muster.events`). A ``Resync``
        raised ends this iterator; call ``events()`` again to go on after it."""
        stream = self._async.events(resync=resync)
        while True:
            item = self._run(_next(stream))
            if item is _DONE:
                return
            yield item

    call = _blocking(Muster.call)
    create_task = _blocking(Muster.create_task)
    get_task = _blocking(Muster.get_task)
    list_tasks = _blocking(Muster.list_tasks)
    tasks = _blocking(Muster.tasks)
    update_task = _blocking(Muster.update_task)
    claim = _blocking(Muster.claim)
    release = _blocking(Muster.release)
    complete = _blocking(Muster.complete)
    next_task = _blocking(Muster.next_task)
    comment = _blocking(Muster.comment)
    comments = _blocking(Muster.comments)
    post = _blocking(Muster.post)
    read_chat = _blocking(Muster.read_chat)
    channels = _blocking(Muster.channels)
    inbox = _blocking(Muster.inbox)
    ack = _blocking(Muster.ack)
    presence = _blocking(Muster.presence)
    set_status = _blocking(Muster.set_status)
    reserve_files = _blocking(Muster.reserve_files)
    release_files = _blocking(Muster.release_files)
    list_files = _blocking(Muster.list_files)
    who_has_files = _blocking(Muster.who_has_files)
    workspaces = _blocking(Muster.workspaces)
    add_workspace = _blocking(Muster.add_workspace)
    remove_workspace = _blocking(Muster.remove_workspace)
    subscribe = _blocking(Muster.subscribe)
    unsubscribe = _blocking(Muster.unsubscribe)
    wait_for = _blocking(Muster.wait_for)
