"""Python client of the Muster broker: async first (:func:`connect`), with a blocking
facade (:class:`Client`) on the same code.

>>> async with muster.connect("http://127.0.0.1:4445", agent="bot-1") as m:
...     task = await m.next_task(claim=True)
"""

from .client import UNSET, Muster, Status, Unset, Waited, connect
from .errors import (
    Blocked,
    Closed,
    Conflict,
    Disconnected,
    Forbidden,
    IdempotencyMismatch,
    Invalid,
    InvalidTransition,
    MusterError,
    NotFound,
    Resync,
    StaleClaim,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from .models import (
    Agent,
    ChannelInfo,
    ChatMessage,
    Claim,
    Cursor,
    Event,
    FileConflict,
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
from .sync import Client
from .topics import event_topics, parse_topic, receives

__version__ = "0.1.0"

__all__ = [
    "UNSET",
    "Agent",
    "Blocked",
    "ChannelInfo",
    "ChatMessage",
    "Claim",
    "Client",
    "Closed",
    "Conflict",
    "Cursor",
    "Disconnected",
    "Event",
    "FileConflict",
    "Forbidden",
    "IdempotencyMismatch",
    "Inbox",
    "Invalid",
    "InvalidTransition",
    "MessageList",
    "Muster",
    "MusterError",
    "NotFound",
    "PathHolders",
    "Presence",
    "Reply",
    "Reservation",
    "Resync",
    "StaleClaim",
    "Status",
    "Task",
    "TaskPage",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "Unset",
    "Waited",
    "Welcome",
    "WorkspaceInfo",
    "connect",
    "event_topics",
    "parse_server_frame",
    "parse_topic",
    "receives",
]
