"""The client against the protocol's golden frames (protocol/examples): what it sends for
each operation, and how it takes each kind of server frame. A fake broker on loopback
records the frames and answers them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

import muster
from muster.errors import error_from_wire

from conftest import EXAMPLES


def golden(side: str) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((EXAMPLES / side).glob("*.json"))}


SERVER = golden("server")
TASK = SERVER["reply.task.json"]["data"]["task"]
MESSAGE = SERVER["event.chat.message.json"]["data"]["message"]
COMMENT = SERVER["event.task.commented.json"]["data"]["message"]
RESERVATION = SERVER["event.files.reserved.json"]["data"]["reservations"][0]
PRESENCE = {
    "name": "link", "status": "busy", "lastSeen": "2s ago", "lastSeenAt": "2026-11-25T10:09:00Z",
    "connections": 1, "task": "T-12", "note": "on T-12", "stuck": False, "claimsExpireAt": None,
}
WORKSPACE = {"name": "web-app", "archived": False, "head": 0}

# What the fake broker answers to each op (shaped like the real replies).
ANSWERS: dict[str, Any] = {
    "task.create": {"task": TASK}, "task.get": {"task": TASK}, "task.update": {"task": TASK},
    "task.claim": {"task": TASK}, "task.release": {"task": TASK}, "task.complete": {"task": TASK},
    "task.next": {"task": TASK}, "task.list": {"tasks": [TASK]},
    "task.comment": {"message": COMMENT}, "task.comments": {"channel": "#T-12", "messages": [COMMENT]},
    "chat.post": {"message": MESSAGE}, "chat.read": {"channel": "general", "messages": [MESSAGE]},
    "chat.channels": {"channels": [{"name": "general", "messages": 1, "lastSeq": 134}]},
    "inbox.read": {"agent": "link", "cursor": 0, "unread": 1, "messages": [MESSAGE]},
    "inbox.ack": {"agent": "link", "cursor": 130},
    "presence.list": {"agents": [PRESENCE]}, "presence.set": {"agent": PRESENCE},
    "files.reserve": {"reservations": [RESERVATION]}, "files.release": {"reservations": [RESERVATION]},
    "files.list": {"reservations": [RESERVATION]},
    "files.who": {"paths": [{"path": "src/auth/session.rs", "reservations": [RESERVATION]}]},
    "workspace.list": {"workspaces": [WORKSPACE]},
    "workspace.add": WORKSPACE, "workspace.remove": {**WORKSPACE, "archived": True},
}


class FakeBroker:
    def __init__(self, events: list[dict[str, Any]] | None = None) -> None:
        self.frames: list[dict[str, Any]] = []
        self.events = events or []
        self.topics: list[str] = []
        self.head = 131

    async def handler(self, ws: ServerConnection) -> None:
        async for text in ws:
            frame = json.loads(text)
            self.frames.append(frame)
            op = frame["op"]
            if op == "hello":
                self.topics = list(frame.get("topics", []))
                data: Any = {"workspace": frame.get("workspace", "default"), "epoch": "0000000000000001",
                             "head": 131, "recovered": False, "agent": frame.get("agent"), "topics": self.topics}
                await ws.send(json.dumps({"re": frame["id"], "ok": True, "data": data}))
                for event in self.events + self.events:  # twice: a replay overlapping
                    await ws.send(json.dumps(event))
                continue
            if op == "subscribe":
                self.topics = sorted(set(self.topics) | set(frame["topics"]))
                data = {"topics": self.topics}
            elif op == "unsubscribe":
                self.topics = [t for t in self.topics if t not in frame["topics"]]
                data = {"topics": self.topics}
            else:
                data = ANSWERS[op]
            self.head += 1
            await ws.send(json.dumps({"re": frame["id"], "ok": True, "head": self.head, "data": data}))


def without_id(frame: dict[str, Any]) -> dict[str, Any]:
    """The frame without what varies from run to run: its ``id`` and ``after`` (checked by
    the callers)."""
    assert isinstance(frame["id"], int)
    return {k: v for k, v in frame.items() if k not in ("id", "after")}


Maker = Callable[[muster.Muster, dict[str, Any]], Awaitable[Any]]

# How to make each golden client frame with the client's typed API. `key` passes the golden
# frame's idempotencyKey (when it has one) to the write.
MAKERS: dict[str, Maker] = {
    "subscribe.json": lambda c, f: c.subscribe(["chat:ops", "presence"]),
    "unsubscribe.json": lambda c, f: c.unsubscribe(["presence"]),
    "task.create.json": lambda c, f: c.create_task(
        "Fix auth redirect", assignee="link", priority="P1", blocked_by=["T-3"], tags=["auth"],
        idempotency_key=f.get("idempotencyKey")),
    "task.claim.json": lambda c, f: c.claim("T-12", idempotency_key=f.get("idempotencyKey")),
    "task.update.json": lambda c, f: c.update_task(
        "T-12", status="review", token=3, idempotency_key=f.get("idempotencyKey")),
    "task.release.json": lambda c, f: c.release(
        "T-12", agent="kai", force=True, idempotency_key=f.get("idempotencyKey")),
    "task.complete.json": lambda c, f: c.complete("T-12", token=3, idempotency_key=f.get("idempotencyKey")),
    "task.next.json": lambda c, f: c.next_task(claim=True, idempotency_key=f.get("idempotencyKey")),
    "task.get.json": lambda c, f: c.get_task("T-12"),
    "task.list.json": lambda c, f: c.list_tasks(status=["todo", "doing"], assignee="link", order="desc", limit=50),
    "task.comment.json": lambda c, f: c.comment(
        "T-12", "@kai the flaky test was a race in the fixture; fixed in #530",
        idempotency_key=f.get("idempotencyKey")),
    "task.comments.json": lambda c, f: c.comments("T-12", limit=50),
    "chat.post.json": lambda c, f: c.post(
        "@link PR #522 is green, merge it", channel="general", idempotency_key=f.get("idempotencyKey")),
    "chat.read.json": lambda c, f: c.read_chat(channel="general", since=40, limit=20),
    "chat.channels.json": lambda c, f: c.channels(),
    "inbox.read.json": lambda c, f: c.inbox(all=True),
    "inbox.ack.json": lambda c, f: c.ack(seq=130, idempotency_key=f.get("idempotencyKey")),
    "presence.list.json": lambda c, f: c.presence(limit=100),
    "presence.set.json": lambda c, f: c.set_status(
        status="busy", note="on T-12", idempotency_key=f.get("idempotencyKey")),
    "files.reserve.json": lambda c, f: c.reserve_files(
        "git.example.com/acme/app", ["src/auth/**", "Cargo.lock"], task="T-12",
        reason="rewriting the session store", idempotency_key=f.get("idempotencyKey")),
    "files.release.json": lambda c, f: c.release_files(
        "git.example.com/acme/app", patterns=["Cargo.lock"], idempotency_key=f.get("idempotencyKey")),
    "files.list.json": lambda c, f: c.list_files(repo="git.example.com/acme/app"),
    "files.who.json": lambda c, f: c.who_has_files("git.example.com/acme/app", ["src/auth/session.rs", "README.md"]),
    "workspace.list.json": lambda c, f: c.workspaces(),
    "workspace.add.json": lambda c, f: c.add_workspace("web-app"),
    "workspace.remove.json": lambda c, f: c.remove_workspace("web-app", purge=True),
}


async def test_the_client_sends_exactly_the_golden_client_frames() -> None:
    frames = golden("client")
    missing = sorted(set(frames) - set(MAKERS) - {"hello.json"})
    assert not missing, f"golden client frames with no typed call: {missing}"
    await asyncio.wait_for(_send_all_golden_frames(frames), 20)


async def _send_all_golden_frames(frames: dict[str, dict[str, Any]]) -> None:
    fake = FakeBroker()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        hello = frames["hello.json"]
        # The client's own hello, from its options, is the golden hello.
        client = muster.connect(
            f"http://127.0.0.1:{port}", agent=hello["agent"], workspace=hello["workspace"],
            topics=hello["topics"], since=hello["since"], epoch=hello["epoch"],
        )
        async with client:
            assert without_id(fake.frames[0]) == without_id(hello)
            assert client.workspace == hello["workspace"]
            for name, frame in frames.items():
                if name == "hello.json":
                    continue
                fake.frames.clear()
                seen = client.seen
                await MAKERS[name](client, frame)
                assert len(fake.frames) == 1, name
                assert without_id(fake.frames[0]) == without_id(frame), name
                # Every request says the newest event the client has seen (the welcome's head,
                # then each reply's).
                assert fake.frames[0]["after"] == seen, name
                assert client.seen == fake.head, name


def test_every_golden_server_frame_parses_into_the_right_type() -> None:
    kinds: dict[str, type] = {}
    for name, raw in SERVER.items():
        frame = muster.parse_server_frame(raw)
        assert frame is not None, name
        kinds[name] = type(frame)
        if name.startswith("event."):
            assert isinstance(frame, muster.Event), name
            assert frame.type == raw["type"] and frame.seq == raw["seq"] and frame.at == raw["at"]
        else:
            assert isinstance(frame, muster.Reply), name
    welcome = SERVER["welcome.json"]
    w = muster.Welcome.from_json(muster.Reply.from_json(welcome).data)
    assert (w.epoch, w.head, w.recovered, w.agent, w.topics) == ("3f2a9c1d5e7b8a60", 131, True, "link", ["inbox:link", "tasks"])
    assert w.workspace == "web-app"
    # A broker from before workspaces has only the one.
    assert muster.Welcome.from_json({k: v for k, v in welcome["data"].items() if k != "workspace"}).workspace == "default"

    assert muster.Reply.from_json(SERVER["reply.task.json"]).head == 140
    assert muster.Reply.from_json(SERVER["reply.conflict.json"]).head is None
    task = muster.Task.from_json(SERVER["reply.task.json"]["data"]["task"])
    assert (task.id, task.status, task.priority, task.created_by, task.last_token) == ("T-12", "doing", "P1", "kai", 3)
    assert task.claim == muster.Claim(agent="link", token=3, at="2026-11-25T10:02:00Z")

    conflict = error_from_wire(SERVER["reply.conflict.json"]["error"])
    assert isinstance(conflict, muster.Conflict) and conflict.owner == "link" and conflict.code == "conflict"
    files = error_from_wire(SERVER["reply.files.conflict.json"]["error"])
    assert isinstance(files, muster.Conflict) and files.owner == "zelda"
    assert files.conflicts[0].holder.id == "R-2" and files.conflicts[0].witness == "src/auth/session.rs"
    invalid_reply = muster.Reply.from_json(SERVER["reply.invalid.json"])
    assert invalid_reply.re is None and not invalid_reply.ok
    invalid = error_from_wire(invalid_reply.error)
    assert isinstance(invalid, muster.Invalid) and invalid.field == "frame"

    def event(name: str) -> muster.Event:
        e = muster.parse_server_frame(SERVER[name])
        assert isinstance(e, muster.Event)
        return e

    claimed = event("event.task.claimed.json")
    assert claimed.task is not None and claimed.task.id == "T-12" and claimed.agent == "link"
    released = event("event.task.released.json")
    assert released.reason == "owner_gone" and released.by is None and released.task is not None
    chat = event("event.chat.message.json")
    assert chat.message is not None and chat.message.sender == "kai" and chat.message.recipients() == ["link"]
    assert chat.message.task is None
    commented = event("event.task.commented.json")
    assert commented.task is None and commented.message is not None
    comment = commented.message
    assert (comment.id, comment.task, comment.channel, comment.sender) == ("M-41", "T-12", "#T-12", "link")
    assert comment.recipients() == ["kai"]
    assert muster.event_topics(commented) == ["tasks", "task:T-12", "inbox:kai"]
    presence = event("event.presence.changed.json")
    assert presence.agent_record is not None and presence.agent_record.stuck and presence.agent_record.shown == "idle"
    assert presence.agent == "link"
    acked = event("event.inbox.acked.json")
    assert acked.agent == "link" and acked.acked_seq == 134
    reserved = event("event.files.reserved.json")
    assert [r.id for r in reserved.reservations] == ["R-4"] and reserved.reservations[0].exclusive
    freed = event("event.files.released.json")
    assert freed.reason == "task_ended" and freed.by == "link"
    # Unknown fields are tolerated and kept.
    extra = muster.Task.from_json({**TASK, "someday": 1})
    assert extra.raw["someday"] == 1 and extra.id == "T-12"


def test_topics_as_the_broker_reads_them() -> None:
    cases = json.loads((EXAMPLES / "topics.json").read_text())
    for case in cases["parse"]:
        if case.get("error"):
            with pytest.raises(muster.Invalid):
                muster.parse_topic(case["topic"])
        else:
            assert muster.parse_topic(case["topic"]) == case["normalized"], case
    for case in cases["match"]:
        e = muster.parse_server_frame(SERVER[case["event"]])
        assert isinstance(e, muster.Event)
        for topic in case["receive"]:
            assert muster.receives(topic, e), (case["event"], topic)
        for topic in case["skip"]:
            assert not muster.receives(topic, e), (case["event"], topic)


async def test_golden_events_arrive_once_in_order_even_when_replayed_twice() -> None:
    await asyncio.wait_for(_events_once(), 20)


async def _events_once() -> None:
    events = sorted((f for n, f in SERVER.items() if n.startswith("event.")), key=lambda f: f["seq"])
    fake = FakeBroker(events)
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        # since=130 in another epoch: the client is told it must resync, then gets the events.
        async with muster.connect(f"http://127.0.0.1:{port}", agent="link", since=130, epoch="other") as m:
            got: list[int] = []
            stream = m.events(resync="yield")
            first = await asyncio.wait_for(stream.__anext__(), 5)
            assert isinstance(first, muster.Resync) and first.head == 131
            while len(got) < len(events):
                item = await asyncio.wait_for(stream.__anext__(), 5)
                assert isinstance(item, muster.Event)
                got.append(item.seq)
            assert got == [e["seq"] for e in events]
            with pytest.raises(asyncio.TimeoutError):  # the replayed copies were dropped
                await asyncio.wait_for(stream.__anext__(), 0.3)
            assert m.last_seq == events[-1]["seq"]


async def test_idempotency_key_only_on_writes() -> None:
    await asyncio.wait_for(_keys(), 20)


async def _keys() -> None:
    fake = FakeBroker()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with muster.connect(f"http://127.0.0.1:{port}", agent="link") as m:
            fake.frames.clear()
            await m.claim(12, idempotency_key="k-1")
            assert without_id(fake.frames[-1]) == {"op": "task.claim", "task": "T-12", "idempotencyKey": "k-1"}
            await m.claim("T-12")
            assert "idempotencyKey" not in fake.frames[-1]
            with pytest.raises(muster.Invalid):  # a read takes no key
                await m.call("task.get", {"task": "T-12"}, idempotency_key="k-2")
            with pytest.raises(muster.Invalid):
                await m.next_task(idempotency_key="k-3")  # task.next without claim is a read
