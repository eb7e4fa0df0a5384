"""Pacing policy for servers that cap what one connection (or one address) may do.

Pure policy with no I/O and no event loop, like :mod:`rxws.backoff`: every method that
depends on time takes the present time as ``now`` (seconds on one monotonic clock, such
as ``loop.time()``), so the rules are tested, and reasoned about, without a loop.

- :class:`Limits`: what a server allows (streams per connection, incoming messages per
  second, connection attempts per window, connection lifetime). A protocol supplies its
  defaults; the user's ``Limits`` override them field by field (:meth:`Limits.merge`).
- :class:`TokenBucket`: paces frames on one connection (``rate`` a second, ``burst`` at
  once).
- :class:`RateBudget`: at most N attempts in any window of W seconds, exactly (it keeps
  the times of the last N attempts). :meth:`RateBudget.for_host` hands out one budget
  per host, shared by every client of the process, so reconnects and rotations of many
  clients together stay under the server's connection limit.
- :class:`Shards`: which connection carries which topic, filling each connection up to
  its cap and reusing capacity that unsubscribing freed.

The caller's loop is always the same: ask ``delay(now)``; if it is above zero, wait that
long and ask again; when it is zero, ``take(now)`` right away, with no ``await`` between
the last ``delay`` and the ``take``.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import ClassVar
from urllib.parse import urlsplit

__all__ = ["Limits", "RateBudget", "Shards", "TokenBucket"]

_DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}


def _count(owner: str, name: str, value: object, hint: str = "") -> int:
    """``value`` checked to be a positive ``int`` (``bool`` is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{owner} {name} must be a positive int{hint}, got {value!r} ({type(value).__name__})"
        )
    if value < 1:
        raise ValueError(f"{owner} {name} must be a positive int (1 or more), got {value!r}")
    return value


def _seconds(owner: str, name: str, value: object, hint: str = "") -> float:
    """``value`` checked to be a finite number above zero (``bool`` is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{owner} {name} must be a positive number{hint}, "
            f"got {value!r} ({type(value).__name__})"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{owner} {name} must be a finite number above 0, got {value!r}")
    return float(value)


def _wait(due: float, now: float) -> float:
    """Seconds from ``now`` until ``due``, rounded so that ``now + result >= due`` holds.

    ``now + (due - now)`` can land one unit in the last place short of ``due``; a caller
    that waits the returned delay and asks again must then find nothing left to wait.
    """
    if now >= due:
        return 0.0
    wait = due - now
    while now + wait < due:
        wait = math.nextafter(wait, math.inf)
    return wait


@dataclass(frozen=True)
class Limits:
    """What a server allows one client; ``None`` leaves a field to the protocol's default.

    Attributes:
        streams_per_connection: Topics one connection may carry at once.
        messages_per_second: Frames the client may send per connection per second
            (Binance counts pings and pongs too, so leave headroom for them).
        connections_per_window: ``(attempts, seconds)``: at most that many connection
            attempts, refused ones included, in any window of that many seconds.
        connection_lifetime: Seconds after which the server ends a connection; the
            client replaces each connection before then.

    Example:
        >>> binance = Limits(1024, 5, (300, 300.0), 86400.0)
        >>> binance.merge(Limits(messages_per_second=10)).messages_per_second
        10
    """

    streams_per_connection: int | None = None
    messages_per_second: float | None = None
    connections_per_window: tuple[int, float] | None = None
    connection_lifetime: float | None = None

    def __post_init__(self) -> None:
        default = " (or None for the protocol's default)"
        if self.streams_per_connection is not None:
            _count("Limits", "streams_per_connection", self.streams_per_connection, default)
        if self.messages_per_second is not None:
            _seconds("Limits", "messages_per_second", self.messages_per_second, default)
        if self.connection_lifetime is not None:
            _seconds("Limits", "connection_lifetime", self.connection_lifetime, default)
        pair = self.connections_per_window
        if pair is not None:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(
                    "Limits connections_per_window must be a pair (attempts, seconds), "
                    f"such as (300, 300.0) for 300 attempts in any 5 minutes; got {pair!r}"
                )
            attempts = _count("Limits", "connections_per_window attempts", pair[0])
            seconds = _seconds("Limits", "connections_per_window seconds", pair[1])
            object.__setattr__(self, "connections_per_window", (attempts, seconds))

    def merge(self, overrides: Limits | None) -> Limits:
        """These limits with every field that ``overrides`` sets put in their place.

        Args:
            overrides: The user's limits (``None`` changes nothing).

        Returns:
            A new :class:`Limits` (or ``self`` when there is nothing to change).

        Raises:
            TypeError: ``overrides`` is not a :class:`Limits`.
        """
        if overrides is None:
            return self
        if not isinstance(overrides, Limits):
            raise TypeError(
                f"limits must be an rxws.Limits, got {type(overrides).__name__}; "
                "write Limits(streams_per_connection=..., messages_per_second=...)"
            )
        changes = {
            f.name: getattr(overrides, f.name)
            for f in fields(overrides)
            if getattr(overrides, f.name) is not None
        }
        return replace(self, **changes) if changes else self


class TokenBucket:
    """Paces actions to ``rate`` a second on average, allowing ``burst`` at once.

    The bucket holds up to ``burst`` tokens, starts full and refills at ``rate`` tokens a
    second; each action takes one. Over any interval of ``t`` seconds it lets at most
    ``burst + rate * t`` actions through. For a server that allows at most N messages in
    any one second, ``TokenBucket(N, burst=1)`` never exceeds it (a larger burst lets up
    to ``burst + N - 1`` through within one second). Implemented as the generic cell rate
    algorithm: one number, the time the next token is due, so the state never drifts.

    Args:
        rate: Tokens per second, above zero.
        burst: Most tokens held at once (1 or more).

    Example:
        >>> bucket = TokenBucket(rate=5, burst=1)
        >>> bucket.take(0.0)
        >>> bucket.delay(0.0)
        0.2
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        self.rate = _seconds("TokenBucket", "rate", rate)
        self.burst = _count("TokenBucket", "burst", burst)
        self._interval = 1.0 / self.rate
        self._tolerance = (self.burst - 1) * self._interval
        # The "theoretical arrival time": when the bucket will have refilled what was
        # taken so far. None: never taken, so full.
        self._tat: float | None = None

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}, burst={self.burst})"

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until a token is available (0.0: one is there now)."""
        if self._tat is None:
            return 0.0
        return _wait(self._tat - self._tolerance, now)

    def take(self, now: float) -> None:
        """Take one token at ``now``.

        Raises:
            ValueError: No token is available at ``now``; wait :meth:`delay` first.
        """
        wait = self.delay(now)
        if wait > 0:
            raise ValueError(
                f"no token until {wait:.6g} s from now; wait TokenBucket.delay(now) first"
            )
        self._tat = (now if self._tat is None else max(self._tat, now)) + self._interval


class RateBudget:
    """At most ``attempts`` in any window of ``seconds``, exactly: a sliding window.

    It keeps the times of the last ``attempts`` takes; the next is allowed once the
    oldest of them is ``seconds`` old. So in every half-open interval ``[t, t + seconds)``
    there are at most ``attempts`` takes, and a take is never held back when the window
    has room. A budget can carry several windows (a server may limit both per second and
    per minute); a take must fit them all.

    One budget per host, shared by every client of the process, comes from
    :meth:`for_host` or :meth:`for_url`. It is meant for the clients of one event loop
    (``now`` from ``loop.time()``); it takes no lock. Servers see attempts a little
    later than they were made, and not always by the same amount: if a server counts
    strictly, give the budget a window slightly longer than the server's.

    Args:
        attempts: Takes allowed per window (1 or more).
        seconds: The window's length, above zero.

    Example:
        >>> budget = RateBudget(2, 10.0)
        >>> budget.take(0.0); budget.take(1.0)
        >>> budget.delay(3.0)
        7.0
    """

    _hosts: ClassVar[dict[str, RateBudget]] = {}

    def __init__(self, attempts: int, seconds: float) -> None:
        window = (
            _count("RateBudget", "attempts", attempts),
            _seconds("RateBudget", "seconds", seconds),
        )
        self._windows: list[tuple[int, float]] = [window]
        self._times: deque[float] = deque(maxlen=window[0])

    def __repr__(self) -> str:
        windows = ", ".join(f"{n} per {s:g} s" for n, s in self._windows)
        return f"RateBudget({windows})"

    @property
    def windows(self) -> tuple[tuple[int, float], ...]:
        """Every ``(attempts, seconds)`` window this budget enforces."""
        return tuple(self._windows)

    def add_window(self, attempts: int, seconds: float) -> None:
        """Also enforce at most ``attempts`` in any window of ``seconds``.

        A window added later counts the takes the budget still remembers (the last
        ``attempts`` of its largest window so far), not older ones.

        Args:
            attempts: Takes allowed per window (1 or more).
            seconds: The window's length, above zero.
        """
        window = (
            _count("RateBudget", "attempts", attempts),
            _seconds("RateBudget", "seconds", seconds),
        )
        if window in self._windows:
            return
        self._windows.append(window)
        if window[0] > (self._times.maxlen or 0):
            self._times = deque(self._times, maxlen=window[0])

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until a take fits every window (0.0: it fits now)."""
        times, longest = self._times, 0.0
        for attempts, seconds in self._windows:
            if len(times) >= attempts:
                longest = max(longest, _wait(times[-attempts] + seconds, now))
        return longest

    def take(self, now: float) -> None:
        """Record an attempt at ``now``.

        Raises:
            ValueError: The attempt does not fit (wait :meth:`delay` first), or ``now``
                is earlier than the last take (mixed clocks).
        """
        times = self._times
        if times and now < times[-1]:
            raise ValueError(
                f"time went backwards: take({now!r}) after take({times[-1]!r}); "
                "pass one monotonic clock (loop.time()) to every call"
            )
        wait = self.delay(now)
        if wait > 0:
            raise ValueError(
                f"the budget ({self!r}) has no room for {wait:.6g} s; "
                "wait RateBudget.delay(now) first"
            )
        times.append(now)

    @classmethod
    def for_host(cls, host: str, attempts: int, seconds: float) -> RateBudget:
        """The budget of ``host``, shared by every caller in this process.

        The first call creates it; a later call with another window adds that window,
        so the budget respects every limit any client declared for the host.

        Args:
            host: ``host`` or ``host:port``; compared without regard to case.
            attempts: Attempts allowed per window.
            seconds: The window's length.

        Returns:
            The shared budget.
        """
        if not isinstance(host, str) or not host:
            raise TypeError(f"RateBudget host must be a non-empty str, got {host!r}")
        key = host.lower()
        budget = cls._hosts.get(key)
        if budget is None:
            budget = cls._hosts[key] = cls(attempts, seconds)
        else:
            budget.add_window(attempts, seconds)
        return budget

    @classmethod
    def for_url(cls, url: str, attempts: int, seconds: float) -> RateBudget:
        """The shared budget of the host and port ``url`` connects to.

        Args:
            url: A ``ws://`` or ``wss://`` URL (its path, query and credentials are
                ignored and never stored).
            attempts: Attempts allowed per window.
            seconds: The window's length.

        Returns:
            The budget of ``host:port`` (the scheme's default port if none is given).
        """
        return cls.for_host(cls.host_of(url), attempts, seconds)

    @staticmethod
    def host_of(url: str) -> str:
        """``host:port`` of ``url``, the key :meth:`for_url` shares budgets by.

        Raises:
            ValueError: ``url`` names no host.
        """
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            raise ValueError("the URL names no host; pass a URL such as wss://example.com/ws")
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{port}" if port else host


class Shards:
    """Which connection carries which topic: each filled up to ``capacity``, lowest first.

    A new topic goes to the lowest-numbered connection with room, so connections fill
    in order and a place freed by :meth:`remove` is used again before a new connection
    is opened. Topics never move between connections (moving one would cost an
    unsubscribe and a subscribe); a dropped connection keeps its index and its topics.
    Indices start at 0; the caller opens a connection for an index that gains its first
    topic and may close one whose :meth:`load` falls to 0.

    Args:
        capacity: Topics one connection may carry (1 or more).

    Example:
        >>> shards = Shards(2)
        >>> [shards.add(t) for t in ("a", "b", "c")]
        [0, 0, 1]
        >>> shards.remove("a"); shards.add("d")
        0
        0
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = _count("Shards", "capacity", capacity)
        self._where: dict[str, int] = {}
        self._topics: list[dict[str, None]] = []  # per index, in the order added
        self._room: list[int] = []  # heap: exactly the indices with load < capacity

    def __repr__(self) -> str:
        return f"Shards(capacity={self.capacity}, topics={len(self)}, connections={self.size})"

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, topic: object) -> bool:
        return topic in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    @property
    def size(self) -> int:
        """How many connection indices have been used (the highest index plus one)."""
        return len(self._topics)

    @property
    def indices(self) -> list[int]:
        """The indices that carry at least one topic, in order."""
        return [i for i, topics in enumerate(self._topics) if topics]

    def add(self, topic: str) -> int:
        """Place ``topic`` on the lowest-numbered connection with room.

        Returns:
            The connection index.

        Raises:
            TypeError: ``topic`` is not a string.
            ValueError: ``topic`` is placed already.
        """
        if not isinstance(topic, str):
            raise TypeError(f"topic names must be strings, got {topic!r} ({type(topic).__name__})")
        if topic in self._where:
            raise ValueError(f"topic {topic!r} is on connection {self._where[topic]} already")
        if self._room:
            index = self._room[0]
        else:
            index = len(self._topics)
            self._topics.append({})
            heapq.heappush(self._room, index)
        topics = self._topics[index]
        topics[topic] = None
        self._where[topic] = index
        if len(topics) == self.capacity:
            heapq.heappop(self._room)
        return index

    def add_all(self, topics: Iterable[str]) -> dict[int, list[str]]:
        """Place several topics; the result groups them by connection, for batching.

        Returns:
            ``{index: [topic, ...]}`` in the order placed.
        """
        placed: dict[int, list[str]] = {}
        for topic in topics:
            placed.setdefault(self.add(topic), []).append(topic)
        return placed

    def remove(self, topic: str) -> int:
        """Take ``topic`` off its connection, freeing its place.

        Returns:
            The index of the connection it was on.

        Raises:
            KeyError: ``topic`` is not placed.
        """
        index = self._where.pop(topic)
        topics = self._topics[index]
        if len(topics) == self.capacity:
            heapq.heappush(self._room, index)
        del topics[topic]
        return index

    def remove_all(self, topics: Iterable[str]) -> dict[int, list[str]]:
        """Take several topics off; the result groups them by connection, for batching.

        Returns:
            ``{index: [topic, ...]}``.

        Raises:
            KeyError: A topic is not placed (the ones before it were removed).
        """
        removed: dict[int, list[str]] = {}
        for topic in topics:
            removed.setdefault(self.remove(topic), []).append(topic)
        return removed

    def index_of(self, topic: str) -> int | None:
        """The connection ``topic`` is on, or ``None``."""
        return self._where.get(topic)

    def topics_of(self, index: int) -> list[str]:
        """The topics of connection ``index``, in the order they were added."""
        if not 0 <= index < len(self._topics):
            return []
        return list(self._topics[index])

    def load(self, index: int) -> int:
        """How many topics connection ``index`` carries."""
        if not 0 <= index < len(self._topics):
            return 0
        return len(self._topics[index])
