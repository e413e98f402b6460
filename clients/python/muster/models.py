"""Typed views of what the broker sends (camelCase JSON -> snake_case dataclasses).

Parsing is tolerant: a missing field gets a neutral default, an unknown one is ignored, and
every model keeps the JSON it came from in ``raw`` (not shown in ``repr``), so fields a newer
broker adds are still reachable. Timestamps stay RFC 3339 strings, as sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

__all__ = [
    "Agent",
    "ChannelInfo",
    "ChatMessage",
    "Claim",
    "Cursor",
    "Event",
    "FileConflict",
    "Inbox",
    "MessageList",
    "PathHolders",
    "Presence",
    "Priority",
    "Reply",
    "Reservation",
    "ServerFrame",
    "Task",
    "TaskPage",
    "TaskStatus",
    "Welcome",
    "WorkspaceInfo",
    "parse_server_frame",
]

TaskStatus = Literal["todo", "doing", "review", "blocked", "done", "cancelled"]
Priority = Literal["P0", "P1", "P2", "P3"]

JSON = dict[str, Any]


def _obj(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _str(d: JSON, key: str, default: str = "") -> str:
    value = d.get(key)
    return value if isinstance(value, str) else default


def _opt_str(d: JSON, key: str) -> str | None:
    value = d.get(key)
    return value if isinstance(value, str) else None


def _int(d: JSON, key: str) -> int:
    value = d.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _opt_int(d: JSON, key: str) -> int | None:
    value = d.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(d: JSON, key: str) -> bool:
    return d.get(key) is True


def _strs(d: JSON, key: str) -> list[str]:
    value = d.get(key)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _list(d: JSON, key: str) -> list[JSON]:
    value = d.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


@dataclass
class Claim:
    """Who holds a task; ``token`` is the fencing token (grows with every claim)."""

    agent: str
    token: int
    at: str
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Any) -> Claim:
        d = _obj(d)
        return cls(agent=_str(d, "agent"), token=_int(d, "token"), at=_str(d, "at"), raw=d)


@dataclass
class Task:
    """A unit of work on the board."""

    id: str
    title: str
    description: str
    status: str
    priority: str
    assignee: str | None
    blocked_by: list[str]
    tags: list[str]
    created_by: str | None
    created_at: str
    updated_at: str
    claim: Claim | None
    last_token: int
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Any) -> Task:
        d = _obj(d)
        claim = d.get("claim")
        return cls(
            id=_str(d, "id"),
            title=_str(d, "title"),
            description=_str(d, "description"),
            status=_str(d, "status"),
            priority=_str(d, "priority"),
            assignee=_opt_str(d, "assignee"),
            blocked_by=_strs(d, "blockedBy"),
            tags=_strs(d, "tags"),
            created_by=_opt_str(d, "createdBy"),
            created_at=_str(d, "createdAt"),
            updated_at=_str(d, "updatedAt"),
            claim=Claim.from_json(claim) if isinstance(claim, dict) else None,
            last_token=_int(d, "lastToken"),
            raw=d,
        )


@dataclass
class ChatMessage:
    """A chat message (``from`` is ``sender`` here: ``from`` is a Python keyword), or a
    comment on a task: then ``task`` names the task and ``channel`` is its thread
    (``#T-3``)."""

    id: str
    seq: int
    channel: str
    sender: str
    content: str
    mentions: list[str]
    to: str | None
    reply_to: str | None
    at: str
    task: str | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Any) -> ChatMessage:
        d = _obj(d)
        return cls(
            id=_str(d, "id"),
            seq=_int(d, "seq"),
            channel=_str(d, "channel"),
            sender=_str(d, "from"),
            content=_str(d, "content"),
            mentions=_strs(d, "mentions"),
            to=_opt_str(d, "to"),
            reply_to=_opt_str(d, "replyTo"),
            at=_str(d, "at"),
            task=_opt_str(d, "task"),
            raw=d,
        )

    def recipients(self) -> list[str]:
        """Whose inbox it lands in: ``to`` and the mentioned agents, not the sender."""
        out: list[str] = []
        for name in ([self.to] if self.to else []) + self.mentions:
            if name != self.sender and name not in out:
                out.append(name)
        return out


@dataclass
class Agent:
    """An agent record, as ``presence.changed`` events carry it (``shown``: the status
    presence shows now)."""

    name: str
    status: str | None
    note: str | None
    first_seen_at: str
    last_seen_at: str
    connections: int
    left_at: str | None
    human: bool
    shown: str | None
    stuck: bool
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Any) -> Agent:
        d = _obj(d)
        return cls(
            name=_str(d, "name"),
            status=_opt_str(d, "status"),
            note=_opt_str(d, "note"),
            first_seen_at=_str(d, "firstSeenAt"),
            last_seen_at=_str(d, "lastSeenAt"),
            connections=_int(d, "connections"),
            left_at=_opt_str(d, "leftAt"),
            human=_bool(d, "human"),
            shown=_opt_str(d, "shown"),
            stuck=_bool(d, "stuck"),
            raw=d,
        )


@dataclass
class Presence:
    """An agent as presence shows it (``presence.list``, ``presence.set``)."""

    name: str
    status: str
    last_seen: str
    last_seen_at: str
    connections: int
    task: str | None
    note: str | None
    stuck: bool
    claims_expire_at: str | None
    human: bool
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Any) -> Presence:
        d = _obj(d)
        return cls(
            name=_str(d, "name"),
            status=_str(d, "status"),
            last_seen=_str(d, "lastSeen"),
            last_seen_at=_str(d, "lastSeenAt"),
            connections=_int(d, "connections"),
            task=_opt_str(d, "task"),
            note=_opt_str(d, "note"),
            stuck=_bool(d, "stuck"),
            claims_expire_at=_opt_str(d, "claimsExpireAt"),
            human=_bool(d, "human"),
            raw=d,
        )


@dataclass
class Reservation:
    """Paths of a repository an agent holds, exclusively or shared."""

    id: str
    repo: str
    pattern: str
    agent: str
    exclusive: bool
    task: str | None
    reason: str | None
    at: str
    expires_at: str | None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Any) -> Reservation:
        d = _obj(d)
        return cls(
            id=_str(d, "id"),
            repo=_str(d, "repo"),
            pattern=_str(d, "pattern"),
            agent=_str(d, "agent"),
            exclusive=_bool(d, "exclusive"),
            task=_opt_str(d, "task"),
            reason=_opt_str(d, "reason"),
            at=_str(d, "at"),
            expires_at=_opt_str(d, "expiresAt"),
            raw=d,
        )


@dataclass
class FileConflict:
    """A refused reservation's overlap: ``holder`` holds a pattern that shares ``witness``
    with the ``pattern`` asked for."""

    pattern: str
    holder: Reservation
    witness: str

    @classmethod
    def from_json(cls, d: Any) -> FileConflict:
        d = _obj(d)
        return cls(
            pattern=_str(d, "pattern"),
            holder=Reservation.from_json(d.get("holder")),
            witness=_str(d, "witness"),
        )


@dataclass
class PathHolders:
    """``files.who``: who holds one path."""

    path: str
    reservations: list[Reservation]

    @classmethod
    def from_json(cls, d: Any) -> PathHolders:
        d = _obj(d)
        return cls(path=_str(d, "path"), reservations=[Reservation.from_json(r) for r in _list(d, "reservations")])


@dataclass
class TaskPage:
    """One page of ``task.list``; pass ``next`` as ``cursor`` for the next page."""

    tasks: list[Task]
    next: str | None

    @classmethod
    def from_json(cls, d: Any) -> TaskPage:
        d = _obj(d)
        return cls(tasks=[Task.from_json(t) for t in _list(d, "tasks")], next=_opt_str(d, "next"))


@dataclass
class MessageList:
    """``chat.read``: messages of a channel, oldest first (``task.comments``: of a task's
    thread, ``#T-3``)."""

    channel: str
    messages: list[ChatMessage]
    next: str | None

    @classmethod
    def from_json(cls, d: Any) -> MessageList:
        d = _obj(d)
        return cls(
            channel=_str(d, "channel"),
            messages=[ChatMessage.from_json(m) for m in _list(d, "messages")],
            next=_opt_str(d, "next"),
        )


@dataclass
class ChannelInfo:
    """A channel with messages."""

    name: str
    messages: int
    last_seq: int

    @classmethod
    def from_json(cls, d: Any) -> ChannelInfo:
        d = _obj(d)
        return cls(name=_str(d, "name"), messages=_int(d, "messages"), last_seq=_int(d, "lastSeq"))


@dataclass
class Inbox:
    """An agent's inbox: messages that mention it or are addressed to it."""

    agent: str
    cursor: int
    unread: int
    messages: list[ChatMessage]
    next: str | None

    @classmethod
    def from_json(cls, d: Any) -> Inbox:
        d = _obj(d)
        return cls(
            agent=_str(d, "agent"),
            cursor=_int(d, "cursor"),
            unread=_int(d, "unread"),
            messages=[ChatMessage.from_json(m) for m in _list(d, "messages")],
            next=_opt_str(d, "next"),
        )


@dataclass
class Cursor:
    """An inbox read cursor (``inbox.ack``)."""

    agent: str
    cursor: int

    @classmethod
    def from_json(cls, d: Any) -> Cursor:
        d = _obj(d)
        return cls(agent=_str(d, "agent"), cursor=_int(d, "cursor"))


@dataclass
class WorkspaceInfo:
    """A workspace (``workspace.list``, ``workspace.add``, ``workspace.remove``): a board,
    chat, presence and reservations of its own. ``archived``: removed without ``purge``,
    its data kept and read, every write refused. ``head``: its last event's ``seq``."""

    name: str
    archived: bool
    head: int
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Any) -> WorkspaceInfo:
        d = _obj(d)
        return cls(name=_str(d, "name"), archived=_bool(d, "archived"), head=_int(d, "head"), raw=d)


@dataclass
class Welcome:
    """The answer to ``hello``. ``workspace``: the session's (its ``seq``, ``epoch`` and
    ``head`` are that workspace's). ``resumed``: every event after the previous ``seq`` is
    replayed (nothing was missed); computed by the client."""

    epoch: str
    head: int
    recovered: bool
    agent: str | None
    topics: list[str]
    # A broker from before workspaces does not say: it has only the one, ``default``.
    workspace: str = "default"
    resumed: bool = False
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Any) -> Welcome:
        d = _obj(d)
        return cls(
            epoch=_str(d, "epoch"),
            head=_int(d, "head"),
            recovered=_bool(d, "recovered"),
            agent=_opt_str(d, "agent"),
            topics=_strs(d, "topics"),
            workspace=_str(d, "workspace", "default"),
            raw=d,
        )


@dataclass
class Event:
    """One entry of the broker's event log: ``{seq, type, at, data}``.

    ``data`` depends on ``type``; the common parts are parsed: ``task`` (``task.*`` but
    ``task.commented``), ``message`` (``chat.message``, and ``task.commented``: the comment,
    whose ``task`` names the task), ``agent`` (a name: the acting agent of ``task.claimed``,
    ``task.released``, ``inbox.acked``, ``files.*``; the agent's name for
    ``presence.changed``), ``agent_record`` (``presence.changed``), ``by``, ``reason``,
    ``changes``, ``reservations`` (``files.*``), ``acked_seq`` (``inbox.acked``).
    """

    seq: int
    type: str
    at: str
    data: JSON
    task: Task | None = None
    message: ChatMessage | None = None
    agent: str | None = None
    agent_record: Agent | None = None
    by: str | None = None
    reason: str | None = None
    changes: list[str] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    acked_seq: int | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Any) -> Event:
        d = _obj(d)
        data = _obj(d.get("data"))
        task = data.get("task")
        message = data.get("message")
        agent = data.get("agent")
        record = Agent.from_json(agent) if isinstance(agent, dict) else None
        seq = data.get("seq")
        return cls(
            seq=_int(d, "seq"),
            type=_str(d, "type"),
            at=_str(d, "at"),
            data=data,
            task=Task.from_json(task) if isinstance(task, dict) else None,
            message=ChatMessage.from_json(message) if isinstance(message, dict) else None,
            agent=record.name if record else (agent if isinstance(agent, str) else None),
            agent_record=record,
            by=_opt_str(data, "by"),
            reason=_opt_str(data, "reason"),
            changes=_strs(data, "changes"),
            reservations=[Reservation.from_json(r) for r in _list(data, "reservations")],
            acked_seq=seq if d.get("type") == "inbox.acked" and isinstance(seq, int) else None,
            raw=d,
        )


@dataclass
class Reply:
    """The answer to a request: ``re`` is the request's ``id`` (None for a frame too broken
    to have one); ``data`` on success, ``error`` on failure; ``head`` the last event the
    node had applied when it answered (sent back as a request's ``after``)."""

    re: int | None
    ok: bool
    data: Any
    error: JSON | None
    head: int | None = None

    @classmethod
    def from_json(cls, d: Any) -> Reply:
        d = _obj(d)
        re = d.get("re")
        error = d.get("error")
        return cls(
            re=re if isinstance(re, int) and not isinstance(re, bool) else None,
            ok=d.get("ok") is True,
            data=d.get("data"),
            error=error if isinstance(error, dict) else None,
            head=_opt_int(d, "head"),
        )


ServerFrame = Union[Reply, Event]


def parse_server_frame(frame: Any) -> ServerFrame | None:
    """A reply (has ``re``), an event (has a numeric ``seq``), or None for anything else."""
    if not isinstance(frame, dict):
        return None
    if "re" in frame:
        return Reply.from_json(frame)
    seq = frame.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool):
        return Event.from_json(frame)
    return None
