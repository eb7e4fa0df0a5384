"""Lifecycle events of a connection, as emitted on ``WebSocketClient.status``.

All events are frozen dataclasses, so they compare by value and are safe to keep.
URLs in them are redacted: query values and passwords appear as ``***``.

A connection that opens, drops and comes back emits, in order::

    Connecting(url) -> Connected(url) -> Disconnected(reason) -> Retrying(1, 0.42)
    -> Connecting(url) -> Connected(url)

A rotation adds ``Connecting`` / ``Connected`` for the new connection, then
``Rotated`` once the old one is dropped. ``Failed`` is the last event of a feed that
gave up (for example after ``ReconnectExhausted`` or a non-retryable rejection).

Every event has a ``connection`` field: the index of the connection it concerns in a
client that spreads topics over several connections (``subscriptions=``), else
``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ClosedBy",
    "Connected",
    "Connecting",
    "Disconnected",
    "Event",
    "Failed",
    "Retrying",
    "Rotated",
]


ClosedBy = Literal["server", "client", "network"]
"""Who ended a connection (:attr:`Disconnected.closed_by`)."""


@dataclass(frozen=True)
class Connecting:
    """A connection is being opened.

    Attributes:
        url: The redacted URL (empty when the URL comes from a callable not yet called).
        connection: Which of a sharded client's connections (``None``: the only one).
    """

    url: str = ""
    connection: int | None = None


@dataclass(frozen=True)
class Connected:
    """A connection is open and its ``on_open`` hook has run; messages flow from now on.

    Attributes:
        url: The redacted URL.
        connection: Which of a sharded client's connections (``None``: the only one).
    """

    url: str = ""
    connection: int | None = None


@dataclass(frozen=True)
class Disconnected:
    """A connection ended.

    Attributes:
        reason: Why, in words (redacted): a close code and reason, or the error.
        error: The exception that ended it, or ``None`` for a normal close or a disposal.
        connection: Which of a sharded client's connections (``None``: the only one).
        closed_by: Who ended it: ``"server"`` (a close frame from the server, normal or
            not), ``"client"`` (rxws or its user let go: a rotation, an idle timeout,
            ``close()``, a disposed subscription) or ``"network"`` (the link broke
            without a close frame, or no connection could be made).
    """

    reason: str
    error: BaseException | None = None
    connection: int | None = None
    closed_by: ClosedBy = "network"


@dataclass(frozen=True)
class Retrying:
    """The next connection attempt will start after ``delay`` seconds.

    Attributes:
        attempt: The number of the failed attempt in a row (1 for the first failure).
        delay: Seconds until the next attempt.
        connection: Which of a sharded client's connections (``None``: the only one).
    """

    attempt: int
    delay: float
    connection: int | None = None


@dataclass(frozen=True)
class Rotated:
    """A new connection replaced the old one, which is now closed.

    Attributes:
        connection: Which of a sharded client's connections (``None``: the only one).
    """

    connection: int | None = None


@dataclass(frozen=True)
class Failed:
    """The feed gave up: no further connection will be attempted.

    Attributes:
        error: The error that ended it.
        connection: Which of a sharded client's connections (``None``: the whole feed).
    """

    error: BaseException
    connection: int | None = None


Event = Connecting | Connected | Disconnected | Retrying | Rotated | Failed
"""Any of the lifecycle events."""
