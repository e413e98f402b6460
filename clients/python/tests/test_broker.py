"""The client against the real broker binary (MUSTER_BIN), on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import muster
from conftest import Broker, free_port, token_add


async def next_event(stream: AsyncIterator[muster.Event], seconds: float = 10) -> muster.Event:
    return await asyncio.wait_for(stream.__anext__(), seconds)


async def titles_until(stream: AsyncIterator[muster.Event], want: list[str], seconds: float = 15) -> list[str]:
    """The titles of the task.created events, until ``want`` has arrived (or a timeout)."""
    seen: list[str] = []
    seqs: list[int] = []
    deadline = time.monotonic() + seconds
    while seen[-len(want):] != want:
        event = await next_event(stream, max(0.1, deadline - time.monotonic()))
        seqs.append(event.seq)
        if event.type == "task.created" and event.task is not None:
            seen.append(event.task.title)
    assert seqs == sorted(set(seqs)), f"events out of order or repeated: {seqs}"
    return seen


# 2 ----------------------------------------------------------------------------------------


async def test_two_clients_race_to_claim_one_task_exactly_one_wins(broker: Broker) -> None:
    async def race() -> None:
        async with muster.connect(broker.url, agent="link") as a, muster.connect(broker.url, agent="zelda") as b:
            task = await a.create_task("Fix auth redirect", priority="P1")
            results = await asyncio.gather(a.claim(task.id), b.claim(task.id), return_exceptions=True)
            wins = [r for r in results if isinstance(r, muster.Task)]
            losses = [r for r in results if isinstance(r, muster.Conflict)]
            assert len(wins) == 1 and len(losses) == 1, results
            winner = wins[0].claim
            assert winner is not None and winner.token == 1
            assert losses[0].owner == winner.agent
            assert losses[0].code == "conflict" and winner.agent in losses[0].message
            current = await b.get_task(task.id)
            assert current.claim is not None and current.claim.agent == winner.agent

    await asyncio.wait_for(race(), 30)


# 3 ----------------------------------------------------------------------------------------


async def test_resume_after_sigkill_delivers_missed_events_once_and_in_order(broker: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with muster.connect(broker.url, agent="watcher", topics=["tasks"]) as m:
            stream = m.events()
            for title in ("before-1", "before-2"):
                broker.http("POST", "/tasks", {"title": title}, agent="kai")
            assert await titles_until(stream, ["before-1", "before-2"]) == ["before-1", "before-2"]
            epoch = m.epoch

            broker.kill()  # SIGKILL: no close frame, no clean shutdown
            deadline = time.monotonic() + 10
            while m.status == "open" and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert m.status == "reconnecting"
            # A request while disconnected fails at once; nothing is queued for later.
            started = time.monotonic()
            with pytest.raises(muster.Disconnected):
                await m.create_task("never sent")
            assert time.monotonic() - started < 0.5

            # While the client is away, the same data dir takes writes on another port, so
            # the client cannot reconnect before they are in the log.
            aside = Broker(broker.data_dir)
            aside.start()
            for title in ("away-1", "away-2", "away-3"):
                aside.http("POST", "/tasks", {"title": title}, agent="kai")
            aside.kill()

            broker.start()  # same data dir, same port
            got = await titles_until(stream, ["away-1", "away-2", "away-3"])
            assert got == ["away-1", "away-2", "away-3"], "each missed event once, in order"
            assert m.welcome is not None and m.welcome.resumed and m.epoch == epoch
            assert [t.title for t in await m.tasks()].count("never sent") == 0

            # Live again after the replay, and nothing repeated.
            broker.http("POST", "/tasks", {"title": "after"}, agent="kai")
            assert await titles_until(stream, ["after"]) == ["after"]

            # A broker on a NEW data dir is another history: the client says resync.
            broker.kill()
            broker.start(data_dir=tmp_path / "other")
            with pytest.raises(muster.Resync) as resync:
                await next_event(stream, 15)
            assert resync.value.epoch != epoch and m.epoch == resync.value.epoch
            assert m.welcome is not None and not m.welcome.resumed
            # The stream goes on after a resync, with live events.
            await m.create_task("fresh")
            assert await titles_until(stream, ["fresh"]) == ["fresh"]

    await asyncio.wait_for(scenario(), 90)


# 4 ----------------------------------------------------------------------------------------


async def test_wait_for_a_mention_is_woken_by_a_post_from_another_client(broker: Broker) -> None:
    async def scenario() -> None:
        async with muster.connect(broker.url, agent="link") as link, muster.connect(broker.url, agent="kai") as kai:
            waiting = asyncio.create_task(link.wait_for(mention=True, timeout=10))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await kai.post("@link PR #522 is green, merge it")
            woke = await waiting
            assert isinstance(woke, muster.Event) and woke.message is not None
            assert woke.message.sender == "kai" and "link" in woke.message.mentions
            # Unread already: found in the state at once (and acked on request).
            found = await link.wait_for(mention=True, timeout=5, ack=True)
            assert isinstance(found, muster.ChatMessage) and found.content.startswith("@link")
            assert (await link.inbox()).unread == 0
            # The wait's own subscription is gone again.
            assert "inbox:link" not in link.topics

    await asyncio.wait_for(scenario(), 30)


async def test_wait_for_times_out_cleanly_with_none(broker: Broker) -> None:
    async def scenario() -> None:
        link = await muster.connect(broker.url, agent="link")  # the await form
        try:
            started = time.monotonic()
            assert await link.wait_for(mention=True, timeout=0.5) is None
            assert 0.4 < time.monotonic() - started < 3
            assert link.status == "open"
            assert await link.tasks() == []
        finally:
            await link.close()
        assert link.status == "closed"
        with pytest.raises(muster.Closed):
            await link.tasks()

    await asyncio.wait_for(scenario(), 30)


async def test_wait_for_a_task_until_done(broker: Broker) -> None:
    async def scenario() -> None:
        async with muster.connect(broker.url, agent="link") as link, muster.connect(broker.url, agent="kai") as kai:
            task = await kai.create_task("ship it")
            waiting = asyncio.create_task(link.wait_for(task=task.id, until="done", timeout=10))
            claimed = await kai.claim(task.id)
            await asyncio.sleep(0.2)
            assert not waiting.done(), "a claim is not done"
            assert claimed.claim is not None
            await kai.complete(task.id, token=claimed.claim.token)
            woke = await waiting
            assert isinstance(woke, muster.Event) and woke.task is not None and woke.task.status == "done"
            # Already done: found in the state.
            again = await link.wait_for(task=task.id, until="done", timeout=5)
            assert isinstance(again, muster.Task) and again.status == "done"

    await asyncio.wait_for(scenario(), 30)


async def test_comments_on_a_task_reach_its_topic_and_the_mentioned_inbox_and_read_back_in_order(
    broker: Broker,
) -> None:
    async def scenario() -> None:
        async with muster.connect(broker.url, agent="kai") as kai, muster.connect(
            broker.url, agent="link", topics=["task:T-1"]
        ) as link:
            stream = link.events()
            task = await kai.create_task("Flaky test")
            assert task.id == "T-1"
            # A mention in a comment wakes a wait for a mention, as one in chat does.
            waiting = asyncio.create_task(link.wait_for(mention=True, timeout=10))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            first = await kai.comment(task.id, "@link the flaky test was a race in the fixture")
            assert (first.task, first.channel, first.sender, first.mentions) == ("T-1", "#T-1", "kai", ["link"])
            event = await next_event(stream)
            while event.type != "task.commented":
                assert event.type == "task.created", event
                event = await next_event(stream)
            assert event.seq == first.seq and event.message == first and event.task is None
            assert muster.receives("task:T-1", event) and muster.receives("inbox:link", event)
            woke = await waiting
            assert isinstance(woke, muster.Event) and woke.message == first
            assert [m.id for m in (await link.inbox()).messages] == [first.id]

            # A comment wakes a wait on its task (not one for a status).
            on_task = asyncio.create_task(kai.wait_for(task=task.id, timeout=10))
            until_done = asyncio.create_task(kai.wait_for(task=task.id, until="done", timeout=1))
            await asyncio.sleep(0.3)
            second = await link.comment(1, "fixed in #530", reply_to=first.id)
            assert (second.task, second.sender, second.reply_to) == ("T-1", "link", first.id)
            woke = await on_task
            assert isinstance(woke, muster.Event) and woke.message == second, woke
            assert await until_done is None
            # Every comment, oldest first, page after page.
            comments = await kai.comments(task.id, limit=1)
            assert [(m.id, m.content) for m in comments] == [
                (first.id, "@link the flaky test was a race in the fixture"),
                (second.id, "fixed in #530"),
            ]
            assert await link.comments("T-1") == comments
            # chat.post with a task comments too; comments stay out of the chat channels.
            third = await kai.post("thanks", task="T-1")
            assert (third.task, third.channel) == ("T-1", "#T-1")
            assert [m.id for m in await kai.comments(task.id)] == [first.id, second.id, third.id]
            assert (await kai.read_chat()).messages == []
            with pytest.raises(muster.NotFound):
                await kai.comment("T-99", "nobody here")
            with pytest.raises(muster.NotFound):
                await kai.comments("T-99")

    await asyncio.wait_for(scenario(), 30)


# 5 ----------------------------------------------------------------------------------------


async def test_tokens_authenticate_in_hello_and_acting_as_another_is_forbidden(
    muster_bin: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    link_token = token_add("link", data)
    token_add("zelda", data)
    broker = Broker(data)
    broker.start()
    try:

        async def scenario() -> None:
            with pytest.raises(muster.Unauthorized):
                await muster.connect(broker.url, agent="link").start()
            with pytest.raises(muster.Unauthorized):
                await muster.connect(broker.url, agent="link", token="mst_wrong").start()
            async with muster.connect(broker.url, agent="link", token=link_token) as link:
                assert link.welcome is not None and link.welcome.agent == "link"
                task = await link.create_task("mine")
                with pytest.raises(muster.Forbidden):
                    await link.claim(task.id, agent="zelda")
                with pytest.raises(muster.Forbidden):
                    await link.post("hi", sender="zelda")
                assert (await link.claim(task.id)).claim is not None
            # A token is its agent's only: hello as another agent is refused.
            with pytest.raises((muster.Forbidden, muster.Unauthorized)):
                await muster.connect(broker.url, agent="zelda", token=link_token).start()

        await asyncio.wait_for(scenario(), 30)
    finally:
        broker.stop()


# the blocking facade and idempotency keys ----------------------------------------------


def test_the_sync_facade_runs_the_same_client(broker: Broker) -> None:
    with muster.Client(broker.url, agent="a", topics=["tasks"]) as a, muster.Client(broker.url, agent="b") as b:
        task = a.create_task("sync", priority="P0")
        assert a.claim(task.id).claim is not None
        with pytest.raises(muster.Conflict) as lost:
            b.claim(task.id)
        assert lost.value.owner == "a"
        nxt = a.next_task()
        assert nxt is not None and nxt.id == task.id
        events = a.events()
        first = next(events)
        assert first.type in ("task.created", "task.claimed")
        assert a.wait_for(mention=True, timeout=0.2) is None
        comment = b.comment(task.id, "@a all yours")
        assert [c.id for c in a.comments(task.id)] == [comment.id]
        found = a.wait_for(mention=True, timeout=5, ack=True)
        assert isinstance(found, muster.ChatMessage) and found.task == task.id
    assert a.status == "closed"


async def test_a_retried_write_with_an_idempotency_key_gets_the_first_answer(broker: Broker) -> None:
    async def scenario() -> None:
        async with muster.connect(broker.url, agent="link") as link:
            task = await link.create_task("once")
            first = await link.claim(task.id, idempotency_key="claim-once")
            again = await link.claim(task.id, idempotency_key="claim-once")
            assert again == first
            with pytest.raises(muster.IdempotencyMismatch):
                await link.complete(task.id, idempotency_key="claim-once")

    await asyncio.wait_for(scenario(), 30)


# Several URLs ------------------------------------------------------------------------------


async def test_several_urls_fail_over_to_the_broker_that_answers_and_resume(broker: Broker) -> None:
    async def scenario() -> None:
        # The first URL has nobody behind it: the client goes on to the next, at once.
        elsewhere = Broker(broker.data_dir)
        urls = [elsewhere.url, broker.url]
        async with muster.connect(urls, agent="watcher", topics=["tasks"]) as m:
            assert m.url == broker.url
            stream = m.events()
            broker.http("POST", "/tasks", {"title": "on-the-first"}, agent="kai")
            assert await titles_until(stream, ["on-the-first"]) == ["on-the-first"]
            # The broker moves to the other address (the same data, as a cluster's node
            # would share its log): the client follows and resumes without a gap.
            broker.kill()
            elsewhere.start()
            elsewhere.http("POST", "/tasks", {"title": "on-the-second"}, agent="kai")
            assert await titles_until(stream, ["on-the-second"]) == ["on-the-second"]
            assert m.url == elsewhere.url and m.welcome is not None and m.welcome.resumed
            elsewhere.kill()

    await asyncio.wait_for(scenario(), 60)
    with pytest.raises(muster.Unreachable, match="any of"):
        await muster.connect([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"], agent="x").start()
