"""Topics, read and matched as the broker does (cases: protocol/examples/topics.json)."""

from __future__ import annotations

import re

from .errors import Invalid
from .models import Event

__all__ = ["event_topics", "parse_topic", "receives"]

_AGENT_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_])?$")
_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9._:,-]{1,132}$")
_TASK_NUMBER = re.compile(r"^(?:[Tt]-)?([1-9][0-9]*)$")
_MAX_TASK_NUMBER = 18446744073709551615


def parse_topic(topic: str) -> str:
    """The topic as the broker writes it (``task:12`` -> ``task:T-12``, ``inbox:LINK`` ->
    ``inbox:link``). Raises :class:`Invalid` (field ``topics``) for anything else."""
    bad = Invalid("invalid", f"topics: {topic!r} is not a topic", "topics")
    if topic in ("*", "tasks", "chat", "presence", "files"):
        return topic
    kind, colon, rest = topic.partition(":")
    if not colon:
        raise bad
    if kind == "task":
        match = _TASK_NUMBER.match(rest)
        if match is None or int(match.group(1)) > _MAX_TASK_NUMBER:
            raise bad
        return f"task:T-{match.group(1)}"
    if kind == "chat" and _CHANNEL_NAME.match(rest):
        return topic
    if kind == "inbox" and _AGENT_NAME.match(rest):
        return f"inbox:{rest.lower()}"
    raise bad


def event_topics(event: Event) -> list[str]:
    """The topics an event is published on (``*`` matches every event and is not listed)."""
    if event.type == "task.commented":
        # A comment is on its task's topics, and in its recipients' inboxes as a chat
        # message is.
        if event.message is None:
            return ["tasks"]
        message = event.message
        task = [f"task:{message.task}"] if message.task else []
        return ["tasks", *task, *(f"inbox:{name}" for name in message.recipients())]
    if event.type.startswith("task."):
        task_id = event.task.id if event.task else ""
        return ["tasks", f"task:{task_id}"]
    if event.type == "chat.message" and event.message is not None:
        message = event.message
        return ["chat", f"chat:{message.channel}", *(f"inbox:{name}" for name in message.recipients())]
    if event.type == "presence.changed":
        return ["presence"]
    if event.type == "inbox.acked":
        return [f"inbox:{event.agent}"]
    if event.type in ("files.reserved", "files.released"):
        return ["files"]
    return []


def receives(topic: str, event: Event) -> bool:
    """Whether a subscriber to ``topic`` receives ``event``."""
    normalized = parse_topic(topic)
    return normalized == "*" or normalized in event_topics(event)
