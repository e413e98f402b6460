"""Errors: the broker's (each carries its ``code``) and the client's own.

Every error is a :class:`MusterError`. The broker's codes map to subclasses
(``conflict`` -> :class:`Conflict`, ``not_found`` -> :class:`NotFound`, ...); a code this
client does not know is a plain :class:`MusterError` with that code.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import FileConflict

__all__ = [
    "Blocked",
    "Closed",
    "Conflict",
    "Disconnected",
    "Forbidden",
    "IdempotencyMismatch",
    "Invalid",
    "InvalidTransition",
    "MusterError",
    "NotFound",
    "Resync",
    "StaleClaim",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "error_from_wire",
]


class MusterError(Exception):
    """An error from the broker (its ``code``) or from the client (``disconnected``,
    ``unreachable``, ``closed``, ``resync``, ``protocol``)."""

    code: str
    message: str
    field: str | None

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        extra = f", field={self.field!r}" if self.field else ""
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}{extra})"


class Invalid(MusterError):
    """``invalid``: the request is malformed; ``field`` names the field at fault."""


class Unauthorized(MusterError):
    """``unauthorized``: the broker wants a token, or the token is unknown or revoked."""


class Forbidden(MusterError):
    """``forbidden``: acting as an agent the session (or token) does not belong to."""


class NotFound(MusterError):
    """``not_found``: no such task (or message, reservation, workspace)."""


_OWNER = re.compile(r"\bclaimed by ([A-Za-z0-9_][A-Za-z0-9._-]*[A-Za-z0-9_]|[A-Za-z0-9_])")


class Conflict(MusterError):
    """``conflict``: someone else holds the task (``owner``) or the files (``conflicts``,
    one per overlap; ``owner`` is then the first holder)."""

    owner: str | None
    conflicts: list[FileConflict]

    def __init__(
        self,
        code: str,
        message: str,
        field: str | None = None,
        conflicts: list[FileConflict] | None = None,
    ) -> None:
        super().__init__(code, message, field)
        self.conflicts = list(conflicts or [])
        match = _OWNER.search(message)
        if match:
            self.owner = match.group(1)
        elif self.conflicts:
            self.owner = self.conflicts[0].holder.agent
        else:
            self.owner = None


class StaleClaim(MusterError):
    """``stale_claim``: the fencing token is not the current claim's."""


class Blocked(MusterError):
    """``blocked``: the task waits on unfinished tasks (``blockedBy``)."""


class InvalidTransition(MusterError):
    """``invalid_transition``: that status change is not allowed from the current status."""


class IdempotencyMismatch(MusterError):
    """``idempotency_mismatch``: the idempotency key was used for a different request."""


class Unavailable(MusterError):
    """``unavailable`` (and ``insufficient_storage``): the broker cannot take writes now;
    retry later."""


class Disconnected(MusterError):
    """``disconnected``: not connected to the broker, or the connection was lost before the
    answer came (the write may or may not have happened: the client never replays it)."""


class Unreachable(Disconnected):
    """``unreachable``: the first connection to the broker failed."""


class Closed(Disconnected):
    """``closed``: the client was closed."""


class Resync(MusterError):
    """``resync``: events were missed and cannot be replayed (the broker's epoch changed —
    a different data dir —, its log was trimmed past the last ``seq`` seen, or the local
    event buffer overflowed). Re-read the state you care about; live events go on after
    ``head``."""

    epoch: str
    head: int

    def __init__(self, epoch: str, head: int, reason: str) -> None:
        super().__init__("resync", f"missed events cannot be replayed ({reason}); re-read the state")
        self.epoch = epoch
        self.head = head
        self.reason = reason


_BY_CODE: dict[str, type[MusterError]] = {
    "invalid": Invalid,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "stale_claim": StaleClaim,
    "blocked": Blocked,
    "invalid_transition": InvalidTransition,
    "idempotency_mismatch": IdempotencyMismatch,
    "unavailable": Unavailable,
    "insufficient_storage": Unavailable,
    "disconnected": Disconnected,
    "unreachable": Unreachable,
    "closed": Closed,
}


def error_from_wire(error: Any, prefix: str = "") -> MusterError:
    """The exception for a wire ``error`` object ``{code, message, field?, conflicts?}``."""
    from .models import FileConflict

    if not isinstance(error, dict):
        return MusterError("protocol", f"{prefix}a failed reply without an error")
    code = str(error.get("code", "protocol"))
    message = prefix + str(error.get("message", ""))
    field = error.get("field")
    field = field if isinstance(field, str) else None
    cls = _BY_CODE.get(code, MusterError)
    if cls is Conflict:
        raw = error.get("conflicts")
        conflicts = [FileConflict.from_json(c) for c in raw] if isinstance(raw, list) else []
        return Conflict(code, message, field, conflicts)
    return cls(code, message, field)
