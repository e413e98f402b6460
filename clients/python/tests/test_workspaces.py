"""Workspaces against the real broker (MUSTER_BIN): one session, one workspace; a board,
chat, presence and events of its own, with its own ``seq``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

import muster
from conftest import Broker


async def next_event(stream: AsyncIterator[muster.Event], seconds: float = 10) -> muster.Event:
    return await asyncio.wait_for(stream.__anext__(), seconds)


async def until_title(stream: AsyncIterator[muster.Event], title: str) -> list[muster.Event]:
    """The events up to the ``task.created`` of ``title``, that one included."""
    got: list[muster.Event] = []
    while True:
        event = await next_event(stream)
        got.append(event)
        if event.type == "task.created" and event.task is not None and event.task.title == title:
            return got


def what(events: list[muster.Event]) -> list[str]:
    """Each event's task title or message content."""
    return [e.task.title if e.task else e.message.content if e.message else e.type for e in events]


async def test_two_workspaces_keep_boards_chat_and_events_apart(broker: Broker) -> None:
    async def scenario() -> None:
        async with muster.connect(broker.url, agent="admin") as admin:
            assert admin.workspace == "default" and admin.welcome is not None
            assert admin.welcome.workspace == "default"
            added = await admin.add_workspace("web")
            assert (added.name, added.archived, added.head) == ("web", False, 0)
            assert (await admin.add_workspace("API")).name == "api"  # names are lowercased

        topics = ["tasks", "chat"]
        # The same agent name in both workspaces: two agents that happen to share a name.
        async with muster.connect(broker.url, agent="link", workspace="web", topics=topics) as web, muster.connect(
            broker.url, agent="link", workspace="Api", topics=topics
        ) as api:
            assert web.workspace == "web" and api.workspace == "api"
            assert web.welcome is not None and web.welcome.workspace == "web"
            web_events, api_events = web.events(), api.events()

            web_task = await web.create_task("web-1")
            api_task = await api.create_task("api-1")
            # Each board numbers its own tasks, and each log its own events.
            assert web_task.id == api_task.id == "T-1"
            web_claim, api_claim = await web.claim("T-1"), await api.claim("T-1")
            assert web_claim.claim is not None and web_claim.claim.token == 1
            assert api_claim.claim is not None and api_claim.claim.token == 1
            assert [t.title for t in await web.tasks()] == ["web-1"]
            assert [t.title for t in await api.tasks()] == ["api-1"]

            await web.post("hello web", channel="general")
            assert [m.content for m in (await web.read_chat()).messages] == ["hello web"]
            assert (await api.read_chat()).messages == []
            assert [c.name for c in await api.channels()] == []

            # The last write in each workspace, to read its stream up to.
            await web.create_task("web-end")
            await api.create_task("api-end")
            seen_web = await until_title(web_events, "web-end")
            seen_api = await until_title(api_events, "api-end")
            assert what(seen_web) == ["web-1", "web-1", "hello web", "web-end"]
            assert what(seen_api) == ["api-1", "api-1", "api-end"]
            assert [e.seq for e in seen_api] == sorted(e.seq for e in seen_api)

            # Over HTTP, `/w/{workspace}/...` is that workspace; the unprefixed routes `default`.
            listed = broker.http("GET", "/tasks", workspace="web")
            assert [t["title"] for t in listed["tasks"]] == ["web-1", "web-end"]
            assert broker.http("GET", "/tasks")["tasks"] == []
            assert [a.name for a in await web.presence()] == ["link"]
            # A `/w/{workspace}` URL names the workspace too.
            async with muster.connect(f"{broker.url}/w/web") as by_url:
                assert by_url.workspace == "web"
                assert [t.title for t in await by_url.tasks()] == ["web-1", "web-end"]

            heads = {w.name: w.head for w in await api.workspaces()}
            assert sorted(heads) == ["api", "default", "web"]
            assert heads["web"] == web.last_seq and heads["api"] == api.last_seq

    await asyncio.wait_for(scenario(), 60)


async def test_an_unknown_workspace_is_refused(broker: Broker) -> None:
    client = muster.connect(broker.url, agent="link", workspace="nowhere")
    with pytest.raises(muster.NotFound, match="nowhere"):
        await asyncio.wait_for(client.start(), 10)
    assert client.status == "closed"


def test_the_sync_facade_takes_a_workspace(broker: Broker) -> None:
    with pytest.raises(muster.NotFound):
        muster.Client(broker.url, agent="link", workspace="nowhere")
    with muster.Client(broker.url, agent="admin") as admin:
        assert admin.add_workspace("ops").name == "ops"
    with muster.Client(broker.url, agent="link", workspace="ops") as ops:
        assert ops.workspace == "ops" and ops.first_welcome.workspace == "ops"
        assert ops.create_task("in ops").id == "T-1"
        assert [w.name for w in ops.workspaces()] == ["default", "ops"]
    assert broker.http("GET", "/tasks")["tasks"] == []


async def test_add_and_remove_workspaces(broker: Broker) -> None:
    async def scenario() -> None:
        async with muster.connect(broker.url, agent="admin") as admin:
            assert [(w.name, w.archived) for w in await admin.workspaces()] == [("default", False)]
            await admin.add_workspace("web")
            with pytest.raises(muster.Conflict):
                await admin.add_workspace("WEB")  # it exists
            with pytest.raises(muster.Invalid):
                await admin.add_workspace("no spaces")
            with pytest.raises(muster.Conflict):
                await admin.remove_workspace("default")
            with pytest.raises(muster.NotFound):
                await admin.remove_workspace("nowhere")

            # Removed without purge: archived, its data kept and read, writes refused.
            async with muster.connect(broker.url, workspace="web") as web:
                await web.create_task("kept")
            archived = await admin.remove_workspace("web")
            assert (archived.name, archived.archived) == ("web", True)
            assert [(w.name, w.archived) for w in await admin.workspaces()] == [("default", False), ("web", True)]
            assert [t["title"] for t in broker.http("GET", "/tasks", workspace="web")["tasks"]] == ["kept"]
            with pytest.raises(muster.Conflict, match="archived"):
                await muster.connect(broker.url, agent="link", workspace="web").start()

            # Purged: gone, and a session in it ends (closed with 4004) instead of reconnecting.
            await admin.add_workspace("tmp")
            async with muster.connect(broker.url, agent="link", workspace="tmp") as doomed:
                stream = doomed.events()
                purged = await admin.remove_workspace("tmp", purge=True)
                assert purged.name == "tmp"
                with pytest.raises(muster.Conflict, match="removed workspace tmp"):
                    await next_event(stream, 15)
                assert doomed.status == "closed"
            assert [w.name for w in await admin.workspaces()] == ["default", "web"]
            with pytest.raises(muster.NotFound):
                await muster.connect(broker.url, agent="link", workspace="tmp").start()

    await asyncio.wait_for(scenario(), 60)


async def test_a_reconnection_resumes_in_the_same_workspace(broker: Broker) -> None:
    async def scenario() -> None:
        async with muster.connect(broker.url) as admin:
            await admin.add_workspace("web")
        async with muster.connect(broker.url, agent="watcher", workspace="web", topics=["tasks"]) as m:
            stream = m.events()
            broker.http("POST", "/tasks", {"title": "before"}, agent="kai", workspace="web")
            assert what(await until_title(stream, "before")) == ["before"]
            epoch = m.epoch

            broker.kill()
            deadline = time.monotonic() + 10
            while m.status == "open" and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            broker.start()
            # Written to `default` and to `web`: only web's arrives, after the resume.
            broker.http("POST", "/tasks", {"title": "elsewhere"}, agent="kai")
            broker.http("POST", "/tasks", {"title": "after"}, agent="kai", workspace="web")
            assert what(await until_title(stream, "after")) == ["after"]
            assert m.welcome is not None and m.welcome.resumed and m.welcome.workspace == "web"
            assert m.epoch == epoch

    await asyncio.wait_for(scenario(), 60)
