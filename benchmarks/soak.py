"""A chaos soak: one WebSocketClient against a ticking exchange and real faults.

Set-up (all on loopback, one process, one event loop)::

    DemoExchange (100 symbols, one global ``seq``)
      <- FaultProxy (cut, blackhole)
        <- WebSocketClient(reconnect + rotation + dedupe on ``seq`` + idle_timeout)
             -> 100 ``multiplex`` streams (SUBSCRIBE sent on every new connection)
             -> one ``async for`` consumer (rxws.to_async_iterable)

A fault schedule drawn from a seeded RNG runs one fault at a time, in rounds that each
hold every kind once (in a random order), with a random quiet spell after each. A run
is a whole number of rounds: exactly ``rounds`` of them, or as many as start within
``seconds``. Everything random (the order, the quiet spells, the restart downtime, the
stall, the exchange's prices) comes from the seed; the reconnect backoff has no jitter.

==========  ==========================================================================
cut         ``proxy.cut()``: every TCP link reset, no close frame
blackhole   ``proxy.blackhole()`` until the client gives the link up (idle_timeout or
            keepalive), then ``blackhole(False)``
restart     ``exchange.restart(downtime)``: 1012 to everyone, refused meanwhile
refuse      ``exchange.refuse(503, 429)`` then a 1013 drop: two refused handshakes
malformed   a text frame of broken JSON (a ParseError on ``client.errors``)
binary      a binary frame that is not JSON (a ParseError)
oversize    a text frame over the client's ``max_size`` (close 1009)
bad_utf8    a text frame that is not UTF-8 (close 1007)
stall       the ``async for`` consumer sleeps; the bounded buffer holds the feed
==========  ==========================================================================

Measured:

- *recovery* of a fault: for faults that break the connection, the first trade
  delivered after a ``Connected`` event later than the fault's start (and after the
  fault was lifted); for in-band frames, the first trade after injection; for a
  stall, the moment the consumer has caught up with what was delivered while it slept.
- *fault window* of a fault that breaks the link (cut, blackhole, restart, refuse,
  oversize, bad_utf8): from the last ``seq`` the client had delivered when the fault
  began (``start_seq``) to the ``seq`` of the first trade after recovery
  (``end_seq``). Consecutive ``seq`` values ``a < b`` seen by the consumer with
  ``b > a + 1`` form a gap; a gap is allowed when some window has ``start_seq <= a``
  and ``b <= end_seq`` (the missing trades were in flight or produced while the link
  was down); any other gap is *loss*, including any gap around a bad frame, a
  stalled consumer or a rotation. A ``seq`` not above the previous one is a *repeat*.
- asyncio tasks and open sockets before the client starts and after it is closed
  (they must be equal), RSS after warm-up and at the end.

Usage::

    python benchmarks/soak.py --minutes 10 [--seed N] [--transport picows] [--json]
    python benchmarks/soak.py --rounds 2 --seed 8

It prints the report and exits 0 when the run passed, else 1. Passing is one thing,
:attr:`SoakReport.ok`, and the report lists what failed (:attr:`SoakReport.problems`):

- every kind of fault injected once per round, each recovered within
  ``--recovery-limit`` seconds with the error it must cause;
- no repeat, no loss outside fault windows; the ``async for`` consumer delivered as many
  trades as the client, and the 100 multiplex streams together exactly as many as the
  client delivered while they were subscribed (the shutdown disposes them first, and
  the client goes on delivering until ``close()`` has sent their ``UNSUBSCRIBE``);
- a rotation before the faults (warm-up) and one in the quiet spell after them;
- every server connection got all 100 SUBSCRIBE messages, except those that a fault or
  the shutdown broke while they were open (at most the connections open at that moment);
- no ERROR log record; tasks and sockets back to their start values; RSS growth under
  ``--rss-limit-mb``.

Each criterion is an outcome, not a quantity that depends on how fast the machine is.
Import :func:`run_soak` (or the coroutine :func:`soak`) to run it from a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from reactivex.abc import DisposableBase

import rxws
from rxws.events import Connected, Disconnected, Event, Failed
from rxws.testing import DemoExchange, FaultProxy

__all__ = ["FAULT_KINDS", "FaultRecord", "SoakReport", "classify_gaps", "run_soak", "soak"]

FAULT_KINDS = (
    "cut",
    "blackhole",
    "restart",
    "refuse",
    "malformed",
    "binary",
    "oversize",
    "bad_utf8",
    "stall",
)
# Faults after which the feed must come back on a new connection.
_BREAKING = frozenset({"cut", "blackhole", "restart", "refuse", "oversize", "bad_utf8"})
# Frames that the client must skip without losing the connection.
_IN_BAND = frozenset({"malformed", "binary"})
_STREAMS = 100
_MAX_SIZE = 64 * 1024
_RECOVERY_LIMIT = 10.0  # seconds before a fault counts as not recovered
_ROTATION_LIMIT = 10.0  # seconds to wait for a rotation (one is due every rotate_every)
_SETTLE_LIMIT = 10.0  # seconds for tasks and sockets to return to their start values


# ---------------------------------------------------------------------- records


@dataclass
class FaultRecord:
    """One injected fault and how the client came through it.

    Attributes:
        kind: One of :data:`FAULT_KINDS`.
        started: Loop time of the injection.
        start_seq: The last ``seq`` the client had delivered at that moment.
        recovered: Loop time of recovery, or ``None`` if it did not recover.
        end_seq: ``seq`` of the first trade after recovery.
        seen: Labels of the errors seen during the window (``ConnectionLost 1009``,
            ``HandshakeRejected 503``, ``ParseError``, ...).
        expected_seen: Whether the error this kind of fault must cause was seen.
        lifted: Whether the fault was fully applied (and, for a blackhole, lifted):
            only then can the feed recover.
        open_connections: Server connections open when it was injected (the most that
            a fault breaking the link may cut short while they subscribe).
    """

    kind: str
    started: float
    start_seq: int
    open_connections: int = 0
    recovered: float | None = None
    end_seq: int | None = None
    seen: list[str] = field(default_factory=list)
    expected_seen: bool = False
    lifted: bool = False

    @property
    def recovery_time(self) -> float | None:
        """Seconds from injection to recovery."""
        return None if self.recovered is None else self.recovered - self.started


@dataclass
class SoakReport:
    """What a soak run measured; :attr:`ok` says whether it passed.

    Attributes:
        seconds: How long faults were injected for.
        seed: The RNG seed of the fault schedule.
        transport: The client's transport.
        rounds: Rounds of the schedule run (each injects every kind once).
        recovery_limit: Seconds within which a fault must be recovered from.
        faults: Faults injected, by kind.
        recovered: Faults recovered from within ``recovery_limit``.
        unrecovered: Kinds of the faults that did not recover in time.
        unexpected: Faults that did not show the error they must cause (kind: seen).
        longest_recovery: Longest time to recover, in seconds.
        longest_recovery_kind: The kind of that fault.
        recovery_by_kind: Longest recovery per kind, in seconds.
        messages: Trades delivered to the ``async for`` consumer.
        tapped: Trades the client delivered (a synchronous subscriber).
        tapped_streamed: Trades the client delivered while the multiplex streams were
            subscribed (from before the start until the shutdown disposed them).
        stream_messages: Trades delivered over the 100 multiplex streams together.
        repeats: Trades delivered twice or out of order (must be 0).
        lost: Trades missing outside fault windows (must be 0).
        lost_in_windows: Trades missing inside fault windows (allowed).
        gaps_outside: The first gaps outside any window, as ``(a, b)``.
        consumer_error: What ended the consumer other than the client closing.
        reconnects: ``client.stats.reconnects``.
        rotations: ``client.stats.rotations``.
        connections: ``client.stats.connections``.
        parse_errors: ``client.stats.parse_errors``.
        errors: Non-fatal errors on ``client.errors``, by type.
        disconnects: Errors that ended connections, by label.
        warmed_up: Whether a trade and a rotation came before the faults.
        rotated_after: Whether a rotation completed in the quiet spell after them.
        handshakes: Handshakes the exchange saw.
        accepted: Websocket connections the exchange accepted.
        resubscribed: Server connections that received all 100 SUBSCRIBE messages.
        subscribe_allowance: How many connections faults (and the shutdown) may have
            broken while they were being subscribed: those open at that moment.
        error_logs: ERROR (and worse) log records of any logger, first lines.
        tasks_start: asyncio tasks before the client started.
        tasks_end: asyncio tasks after it was closed.
        sockets_start: Open sockets before the client started.
        sockets_end: Open sockets after it was closed.
        rss_start: Resident memory after warm-up, in bytes.
        rss_end: Resident memory at the end, in bytes.
        rss_limit: The largest RSS growth that passes, in bytes.
    """

    seconds: float
    seed: int
    transport: str
    rounds: int = 0
    recovery_limit: float = _RECOVERY_LIMIT
    faults: dict[str, int] = field(default_factory=dict)
    recovered: int = 0
    unrecovered: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    longest_recovery: float = 0.0
    longest_recovery_kind: str = ""
    recovery_by_kind: dict[str, float] = field(default_factory=dict)
    messages: int = 0
    tapped: int = 0
    tapped_streamed: int = 0
    stream_messages: int = 0
    repeats: int = 0
    lost: int = 0
    lost_in_windows: int = 0
    gaps_outside: list[tuple[int, int]] = field(default_factory=list)
    consumer_error: str | None = None
    reconnects: int = 0
    rotations: int = 0
    connections: int = 0
    parse_errors: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    disconnects: dict[str, int] = field(default_factory=dict)
    warmed_up: bool = False
    rotated_after: bool = False
    handshakes: int = 0
    accepted: int = 0
    resubscribed: int = 0
    subscribe_allowance: int = 0
    error_logs: list[str] = field(default_factory=list)
    tasks_start: int = 0
    tasks_end: int = 0
    sockets_start: int = 0
    sockets_end: int = 0
    rss_start: int = 0
    rss_end: int = 0
    rss_limit: int = 10 * 2**20

    @property
    def injected(self) -> int:
        """Faults injected in all."""
        return sum(self.faults.values())

    @property
    def rss_growth(self) -> int:
        """RSS at the end minus RSS after warm-up, in bytes."""
        return self.rss_end - self.rss_start

    @property
    def problems(self) -> list[str]:
        """Why the run failed (empty when it passed)."""
        found = []
        if self.injected == 0:
            found.append("no fault was injected")
        elif self.faults != dict.fromkeys(FAULT_KINDS, self.rounds):
            found.append(
                f"the schedule ran {self.rounds} round(s) but injected {self.faults}, not "
                "every kind once per round"
            )
        if not self.warmed_up:
            found.append("no trade and rotation during the warm-up")
        if not self.rotated_after:
            found.append("no rotation in the quiet spell after the faults")
        if self.messages == 0:
            found.append("no message was delivered")
        if self.repeats:
            found.append(f"{self.repeats} repeated message(s)")
        if self.lost:
            found.append(f"{self.lost} message(s) lost outside fault windows")
        if self.recovered != self.injected:
            found.append(
                f"{self.injected - self.recovered} fault(s) not recovered within "
                f"{self.recovery_limit:g} s: {self.unrecovered}"
            )
        if self.unexpected:
            found.append(f"faults without their expected error: {self.unexpected}")
        if self.consumer_error:
            found.append(f"the consumer failed: {self.consumer_error}")
        if self.messages != self.tapped:
            found.append(f"the consumer got {self.messages} trades, the client {self.tapped}")
        # Each trade names one of the 100 symbols and each symbol has one stream, so
        # while they are subscribed the router hands every trade the client delivers to
        # exactly one of them, in the same call.
        if self.stream_messages != self.tapped_streamed:
            found.append(
                f"the multiplex streams got {self.stream_messages} trades, the client "
                f"{self.tapped_streamed} while they were subscribed"
            )
        incomplete = self.accepted - self.resubscribed
        if incomplete > self.subscribe_allowance:
            found.append(
                f"{incomplete} server connection(s) did not get all {_STREAMS} SUBSCRIBE "
                f"messages; faults and the shutdown can explain {self.subscribe_allowance}"
            )
        if self.tasks_end != self.tasks_start:
            found.append(f"tasks: {self.tasks_start} at the start, {self.tasks_end} at the end")
        if self.sockets_end != self.sockets_start:
            found.append(
                f"sockets: {self.sockets_start} at the start, {self.sockets_end} at the end"
            )
        if self.rss_growth > self.rss_limit:
            found.append(f"RSS grew by {self.rss_growth / 2**20:.1f} MB")
        if self.error_logs:
            found.append(f"{len(self.error_logs)} ERROR log record(s)")
        return found

    @property
    def ok(self) -> bool:
        """Whether the run passed."""
        return not self.problems

    def format(self) -> str:
        """The report as lines of text."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items()))
        slowest = ", ".join(f"{k} {s:.2f}" for k, s in sorted(self.recovery_by_kind.items()))
        lines = [
            f"soak: {self.rounds} round(s) in {self.seconds:.1f} s, seed {self.seed}, "
            f"transport {self.transport}",
            f"faults injected       {self.injected} ({kinds})",
            f"recoveries            {self.recovered} within {self.recovery_limit:g} s"
            + (f" (not recovered: {self.unrecovered})" if self.unrecovered else ""),
            f"longest recovery      {self.longest_recovery:.2f} s ({self.longest_recovery_kind})",
            f"longest by kind (s)   {slowest}",
            f"messages delivered    {self.messages} (async for), {self.tapped} (client), "
            f"{self.stream_messages} (100 multiplex streams; the client "
            f"{self.tapped_streamed} before they were disposed)",
            f"repeats               {self.repeats}",
            f"lost outside windows  {self.lost}"
            + (f" gaps {self.gaps_outside}" if self.gaps_outside else ""),
            f"lost inside windows   {self.lost_in_windows} (allowed)",
            f"rotations             {self.rotations} (warm-up: {_yes(self.warmed_up)}, "
            f"after the faults: {_yes(self.rotated_after)})",
            f"reconnects            {self.reconnects}, connections {self.connections}, "
            f"handshakes {self.handshakes}",
            f"subscribed            {self.resubscribed} of {self.accepted} server connections "
            f"got all {_STREAMS} SUBSCRIBE messages (faults and shutdown may cut short "
            f"{self.subscribe_allowance})",
            f"parse errors          {self.parse_errors}; errors {self.errors}",
            f"disconnects           {self.disconnects}",
            f"tasks                 {self.tasks_start} at start, {self.tasks_end} at end",
            f"sockets               {self.sockets_start} at start, {self.sockets_end} at end",
            f"RSS                   {self.rss_start / 2**20:.1f} MB after warm-up, "
            f"{self.rss_end / 2**20:.1f} MB at end, growth {self.rss_growth / 2**20:+.2f} MB",
            f"ERROR logs            {len(self.error_logs)}",
        ]
        lines += [f"  {line}" for line in self.error_logs[:5]]
        if self.unexpected:
            lines.append(f"unexpected            {self.unexpected}")
        if self.consumer_error:
            lines.append(f"consumer error        {self.consumer_error}")
        lines.append("PASS" if self.ok else "FAIL: " + "; ".join(self.problems))
        return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


# ---------------------------------------------------------------------- process figures


def open_sockets() -> int:
    """How many sockets this process holds open (Linux)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
    return count


def resident_bytes() -> int:
    """This process's resident set size in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def other_tasks() -> int:
    """asyncio tasks not done, other than the current one."""
    me = asyncio.current_task()
    return sum(1 for t in asyncio.all_tasks() if t is not me and not t.done())


def label(error: BaseException) -> str:
    """A short name for an error: its type and close code or HTTP status."""
    if isinstance(error, rxws.HandshakeRejected):
        return f"HandshakeRejected {error.status}"
    if isinstance(error, rxws.IdleTimeout):
        return "IdleTimeout"
    if isinstance(error, rxws.ConnectionLost):
        return f"ConnectionLost {error.code}"
    return type(error).__name__


def _expected(kind: str, seen: set[str]) -> bool:
    """Whether ``seen`` holds the error that a fault of ``kind`` must cause."""
    if kind == "cut":
        return "ConnectionLost None" in seen
    if kind == "blackhole":
        return bool(seen & {"IdleTimeout", "ConnectionLost None", "ConnectionLost 1011"})
    if kind == "restart":
        return "ConnectionLost 1012" in seen
    if kind == "refuse":
        return {"HandshakeRejected 503", "HandshakeRejected 429"} <= seen
    if kind in ("malformed", "binary"):
        return "ParseError" in seen
    if kind == "oversize":
        return "ConnectionLost 1009" in seen
    if kind == "bad_utf8":
        return "ConnectionLost 1007" in seen
    return True  # stall: nothing to see but a slow consumer


def classify_gaps(
    gaps: list[tuple[int, int]], windows: list[tuple[int, int]]
) -> tuple[int, int, list[tuple[int, int]]]:
    """Split gaps in ``seq`` into loss and what fault windows allow.

    Args:
        gaps: ``(a, b)`` for consecutive delivered ``seq`` values with ``b > a + 1``.
        windows: ``(start_seq, end_seq)`` of each fault that broke the link.

    Returns:
        Trades lost outside every window, trades missing inside a window, and the
        gaps outside every window.
    """
    lost = inside = 0
    outside = []
    for a, b in gaps:
        missing = b - a - 1
        if any(start <= a and b <= end for start, end in windows):
            inside += missing
        else:
            lost += missing
            outside.append((a, b))
    return lost, inside, outside


class _ErrorLogs(logging.Handler):
    """Keeps the first lines of ERROR records from every logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < 50:
            self.lines.append(f"{record.name}: {record.getMessage().splitlines()[0][:200]}")


# ---------------------------------------------------------------------- the run


class _Soak:
    """The state of one soak run."""

    def __init__(self, seed: int, transport: str, recovery_limit: float) -> None:
        self.rng = random.Random(seed)
        self.limit = recovery_limit
        self.report = SoakReport(
            seconds=0.0, seed=seed, transport=transport, recovery_limit=recovery_limit
        )
        self.loop = asyncio.get_running_loop()
        self.changed = asyncio.Event()
        # The client side, as a synchronous subscriber sees it.
        self.tap_last = 0
        self.tap_count = 0
        self.connected_at = -1.0
        self.pending: FaultRecord | None = None
        self.records: list[FaultRecord] = []
        self.disconnects: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.stream_counts = [0] * _STREAMS
        # tap_count when the multiplex streams were disposed (None while subscribed).
        self.tap_streamed: int | None = None
        # The consumer side.
        self.last_seq = 0
        self.consumed = 0
        self.gaps: list[tuple[int, int]] = []
        self.stall_request = 0.0
        self.stall_done: asyncio.Event = asyncio.Event()
        self.subscribes: Counter[int] = Counter()

    # ------------------------------------------------------------ observers

    def on_message(self, msg: Any) -> None:
        seq = msg.get("seq") if isinstance(msg, dict) else None
        if seq is None:
            return
        self.tap_last = seq
        self.tap_count += 1
        pending = self.pending
        if pending is not None and pending.lifted and self._recovers(pending):
            pending.recovered = self.loop.time()
            pending.end_seq = seq
            self.pending = None
            self.changed.set()

    def _recovers(self, pending: FaultRecord) -> bool:
        """Whether a trade delivered now means that ``pending`` has been recovered from."""
        kind = pending.kind
        if kind in _BREAKING:
            return self.connected_at >= pending.started  # on a connection opened since
        if kind in _IN_BAND:
            return "ParseError" in pending.seen  # a trade after the bad frame
        return False  # stall: decided by the consumer

    def on_status(self, event: Event) -> None:
        if isinstance(event, Connected):
            self.connected_at = self.loop.time()
        elif isinstance(event, Disconnected) and event.error is not None:
            self._seen(label(event.error))
            self.disconnects[label(event.error)] += 1
        elif isinstance(event, Failed):
            self._seen(f"Failed {label(event.error)}")
        self.changed.set()

    def on_error(self, error: Exception) -> None:
        self.errors[type(error).__name__] += 1
        self._seen(label(error))

    def _seen(self, what: str) -> None:
        pending = self.pending
        if pending is not None and what not in pending.seen:
            pending.seen.append(what)

    def watch(self, client: rxws.WebSocketClient, symbols: tuple[str, ...]) -> list[DisposableBase]:
        """Subscribe the observers to ``client``, and one multiplex stream per symbol."""
        client.status.subscribe(self.on_status)
        client.errors.subscribe(self.on_error)
        client.messages.subscribe(self.on_message)
        return [
            client.multiplex(
                {"method": "SUBSCRIBE", "params": [f"{s.lower()}@trade"], "id": i + 1},
                {"method": "UNSUBSCRIBE", "params": [f"{s.lower()}@trade"], "id": i + 1},
                [{"s": s}],
            ).subscribe(self.count_stream(i))
            for i, s in enumerate(symbols)
        ]

    def dispose_streams(self, streams: list[DisposableBase]) -> None:
        """Dispose the multiplex streams, noting how many trades the client had delivered.

        They go in one synchronous sweep, so no trade falls between two of them. The
        client goes on delivering trades (to :meth:`on_message` and the consumer) until
        ``close()`` completes its streams, which is after it has flushed the
        ``UNSUBSCRIBE`` messages that disposing sends: the streams cannot count those.
        """
        if self.tap_streamed is None:
            self.tap_streamed = self.tap_count
        for sub in streams:
            sub.dispose()

    def count_stream(self, index: int) -> Callable[[Any], None]:
        counts = self.stream_counts

        def on_next(_: Any) -> None:
            counts[index] += 1

        return on_next

    async def consume(self, client: rxws.WebSocketClient) -> None:
        """The ``async for`` consumer: checks order, counts, stalls when asked."""
        try:
            async with client.messages.pipe(rxws.to_async_iterable(maxsize=50_000)) as stream:
                async for msg in stream:
                    seq = msg.get("seq") if isinstance(msg, dict) else None
                    if seq is None:
                        continue
                    self.consumed += 1
                    last = self.last_seq
                    if seq <= last:
                        self.report.repeats += 1
                    else:
                        if last and seq > last + 1:
                            self.gaps.append((last, seq))
                        self.last_seq = seq
                    if self.stall_request:
                        pause, self.stall_request = self.stall_request, 0.0
                        await asyncio.sleep(pause)
                        self.stall_done.set()
        except Exception as exc:
            self.report.consumer_error = f"{type(exc).__name__}: {exc}"
            self.changed.set()

    # ------------------------------------------------------------ waiting

    async def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked on every change, and every 50 ms)."""
        deadline = self.loop.time() + timeout
        while not predicate():
            left = deadline - self.loop.time()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.05))
        return True

    def housekeeping(self, exchange: DemoExchange) -> None:
        """Fold what the exchange recorded into counters, so its lists stay short."""
        for conn_id, msg in exchange.received:
            if isinstance(msg, dict) and msg.get("method") == "SUBSCRIBE":
                self.subscribes[conn_id] += 1
        exchange.received.clear()
        exchange.request_headers.clear()
        exchange.request_paths.clear()

    # ------------------------------------------------------------ faults

    async def inject(self, kind: str, exchange: DemoExchange, proxy: FaultProxy) -> None:
        if kind not in ("cut", "blackhole", "restart", "refuse", "stall"):
            # A bad frame goes to every connection the server holds. Send it when that
            # is the client's one live connection, not during a rotation's overlap
            # (a candidate still in its handshake would miss it).
            await self.wait(lambda: exchange.open_connections == 1, 5.0)
        record = FaultRecord(kind, self.loop.time(), self.tap_last, exchange.open_connections)
        self.records.append(record)
        self.pending = record
        if kind == "cut":
            proxy.cut()
        elif kind == "blackhole":
            proxy.blackhole()
            await self.wait(lambda: bool(record.seen), self.limit)
            proxy.blackhole(False)
        elif kind == "restart":
            await exchange.restart(self.rng.uniform(0.1, 0.5))
        elif kind == "refuse":
            exchange.refuse(503, 429)
            await exchange.drop_all(1013, "try again later")
        elif kind == "malformed":
            exchange.send_raw('{"e": "trade", "seq": broken')
        elif kind == "binary":
            exchange.send_raw(b"\x00\xffnot json")
        elif kind == "oversize":
            exchange.send_raw('{"e": "junk", "x": "' + "x" * _MAX_SIZE + '"}')
        elif kind == "bad_utf8":
            exchange.send_raw_invalid_text()
        elif kind == "stall":
            self.stall_done.clear()
            self.stall_request = self.rng.uniform(0.2, 1.0)
        record.lifted = True
        if kind == "stall":
            stalled = await self.wait(self.stall_done.is_set, self.limit)
            target = self.tap_last
            if stalled and await self.wait(lambda: self.last_seq >= target, self.limit):
                record.recovered = self.loop.time()
                record.end_seq = self.last_seq
            self.pending = None
        else:
            await self.wait(lambda: record.recovered is not None, self.limit)
            if self.pending is record:
                self.pending = None
        record.expected_seen = _expected(kind, set(record.seen))
        self.housekeeping(exchange)

    def schedule(self) -> list[str]:
        """One round: every kind once, in a random order."""
        kinds = list(FAULT_KINDS)
        self.rng.shuffle(kinds)
        return kinds

    # ------------------------------------------------------------ the report

    def finish(self, client: rxws.WebSocketClient, exchange: DemoExchange) -> None:
        report = self.report
        records = self.records
        report.faults = dict(Counter(r.kind for r in records))
        in_time = [
            r for r in records if r.recovery_time is not None and r.recovery_time <= self.limit
        ]
        report.recovered = len(in_time)
        report.unrecovered = [r.kind for r in records if r not in in_time]
        report.unexpected = [f"{r.kind}: {r.seen}" for r in records if not r.expected_seen]
        for r in records:
            took = r.recovery_time
            if took is None:
                continue
            if took > report.recovery_by_kind.get(r.kind, -1.0):
                report.recovery_by_kind[r.kind] = round(took, 3)
            if took > report.longest_recovery:
                report.longest_recovery = took
                report.longest_recovery_kind = r.kind
        # Only faults that break the link may lose what was in flight; a bad frame or a
        # slow consumer must not cost a single message.
        windows = [
            (r.start_seq, r.end_seq)
            for r in records
            if r.end_seq is not None and r.kind in _BREAKING
        ]
        report.lost, report.lost_in_windows, outside = classify_gaps(self.gaps, windows)
        report.gaps_outside = outside[:10]
        report.messages = self.consumed
        report.tapped = self.tap_count
        report.stream_messages = sum(self.stream_counts)
        report.tapped_streamed = self.tap_count if self.tap_streamed is None else self.tap_streamed
        stats = client.stats
        report.reconnects = stats.reconnects
        report.rotations = stats.rotations
        report.connections = stats.connections
        report.parse_errors = stats.parse_errors
        report.errors = dict(self.errors)
        report.disconnects = dict(self.disconnects)
        report.handshakes = exchange.handshakes

    def count_subscriptions(self, exchange: DemoExchange, open_at_close: int, before: int) -> None:
        """Which server connections got every SUBSCRIBE, and how many faults may excuse.

        Called once every link has closed. A connection may miss some of its SUBSCRIBE
        messages only when its link broke while the client was sending them: by a fault
        that breaks the link (at most the connections open when it was injected), or by
        the shutdown (those open when it began, ``open_at_close``, and any accepted
        after, counted from ``before``).
        """
        self.housekeeping(exchange)
        report = self.report
        report.accepted = exchange.accepted
        report.resubscribed = sum(1 for n in self.subscribes.values() if n >= _STREAMS)
        by_faults = sum(r.open_connections for r in self.records if r.kind in _BREAKING)
        report.subscribe_allowance = by_faults + open_at_close + exchange.accepted - before


@dataclass(frozen=True)
class _Plan:
    """How long a run lasts and what it allows (see :func:`soak`)."""

    seconds: float
    rounds: int | None
    rotate_every: float
    recovery_limit: float
    rss_limit_mb: float


async def soak(
    seconds: float = 20.0,
    seed: int = 0,
    *,
    rounds: int | None = None,
    transport: str = "websockets",
    rotate_every: float = 0.5,
    recovery_limit: float = _RECOVERY_LIMIT,
    rss_limit_mb: float = 10.0,
    progress: Callable[[str], None] | None = None,
) -> SoakReport:
    """Run the soak on the running loop and return the report.

    Args:
        seconds: Start rounds of faults for this long (each round runs whole; the run
            adds a short warm-up and shutdown). Not used when ``rounds`` is given.
        seed: Seed of everything random in the run.
        rounds: Run exactly this many rounds (every kind of fault once each).
        transport: The client's transport.
        rotate_every: Seconds between make-before-break rotations.
        recovery_limit: Seconds within which each fault must be recovered from.
        rss_limit_mb: The largest RSS growth that passes.
        progress: Called with a line of text after each round of faults.

    Returns:
        The :class:`SoakReport`.

    Raises:
        ValueError: ``rounds`` is given and not an int >= 1.
    """
    if rounds is not None and (
        isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1
    ):
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    error_logs = _ErrorLogs()
    root = logging.getLogger()
    root.addHandler(error_logs)
    try:
        report = await _soak(
            _Plan(seconds, rounds, rotate_every, recovery_limit, rss_limit_mb),
            seed,
            transport,
            progress,
        )
    finally:
        root.removeHandler(error_logs)
    report.error_logs = error_logs.lines
    return report


async def _soak(
    plan: _Plan,
    seed: int,
    transport: str,
    progress: Callable[[str], None] | None,
) -> SoakReport:
    symbols = tuple(f"SYM{i:03d}" for i in range(_STREAMS))
    async with (
        DemoExchange(symbols=symbols, interval=0.005, batch=2, seed=seed) as exchange,
        FaultProxy("127.0.0.1", exchange.port) as proxy,
    ):
        run = _Soak(seed, transport, plan.recovery_limit)
        report = run.report
        report.rss_limit = int(plan.rss_limit_mb * 2**20)
        gc.collect()
        report.tasks_start = other_tasks()
        report.sockets_start = open_sockets()

        client = rxws.WebSocketClient(
            proxy.url("/stream"),
            transport=transport,
            # No jitter: the delays are the same on every run.
            backoff=rxws.Backoff(initial=0.05, maximum=0.4, jitter=0.0, reset_after=2.0),
            rotate_every=plan.rotate_every,
            dedupe=lambda m: m.get("seq") if isinstance(m, dict) else None,
            overlap_timeout=2.0,
            idle_timeout=0.5,
            max_size=_MAX_SIZE,
            open_timeout=1.0,
            close_timeout=0.3,
            ping_interval=1.0,
            ping_timeout=1.0,
        )
        streams = run.watch(client, symbols)
        consumer = asyncio.create_task(run.consume(client), name="soak consumer")
        try:
            await client.start()
            # Warm-up: messages flow and one rotation has happened.
            report.warmed_up = await run.wait(
                lambda: client.stats.rotations >= 1 and run.consumed > 0, _ROTATION_LIMIT
            )
            gc.collect()
            report.rss_start = resident_bytes()
            started = run.loop.time()
            deadline = started + plan.seconds
            while report.rounds < (plan.rounds or 1) or (
                plan.rounds is None and run.loop.time() < deadline
            ):
                for kind in run.schedule():
                    await run.inject(kind, exchange, proxy)
                    await asyncio.sleep(run.rng.uniform(0.1, 0.6))
                report.rounds += 1
                if progress is not None:
                    done = len(run.records)
                    progress(
                        f"round {report.rounds}: {done} faults, {run.consumed} messages, "
                        f"RSS {resident_bytes() / 2**20:.1f} MB"
                    )
            report.seconds = run.loop.time() - started
            # A quiet spell with a rotation in it, then the end state.
            rotations = client.stats.rotations
            report.rotated_after = await run.wait(
                lambda: client.stats.rotations > rotations, _ROTATION_LIMIT
            )
            run.housekeeping(exchange)
            gc.collect()
            report.rss_end = resident_bytes()
        finally:
            run.dispose_streams(streams)
            # Connections open now, or accepted from now on, may be closed while they
            # still subscribe.
            open_at_close, accepted_before_close = exchange.open_connections, exchange.accepted
            await client.close()
            await asyncio.wait_for(consumer, 10.0)
        run.finish(client, exchange)
        # Give the server and the proxy time to see every link close.
        loop = run.loop
        settle = loop.time() + _SETTLE_LIMIT
        while loop.time() < settle:
            if other_tasks() == report.tasks_start and open_sockets() == report.sockets_start:
                break
            await asyncio.sleep(0.02)
        gc.collect()
        report.tasks_end = other_tasks()
        report.sockets_end = open_sockets()
        run.count_subscriptions(exchange, open_at_close, accepted_before_close)
    return report


def run_soak(seconds: float = 20.0, seed: int = 0, **options: Any) -> SoakReport:
    """Run :func:`soak` in a new event loop (``asyncio.run``) and return its report.

    Args:
        seconds: How long to start rounds of faults for.
        seed: Seed of everything random in the run.
        **options: ``rounds``, ``transport``, ``rotate_every``, ``recovery_limit``,
            ``rss_limit_mb``, ``progress``.
    """
    return asyncio.run(soak(seconds, seed, **options))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="how long to run (default 1)")
    length.add_argument("--seconds", type=float, help="how long to run, in seconds")
    length.add_argument("--rounds", type=int, help="run exactly this many rounds of faults")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault schedule")
    parser.add_argument("--transport", default="websockets", help="websockets or picows")
    parser.add_argument("--rotate-every", type=float, default=0.5, help="seconds")
    parser.add_argument(
        "--recovery-limit",
        type=float,
        default=_RECOVERY_LIMIT,
        help="seconds within which each fault must be recovered from",
    )
    parser.add_argument("--rss-limit-mb", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else 60.0 * (args.minutes or 1.0)
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(message)s")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = run_soak(
        seconds,
        args.seed,
        rounds=args.rounds,
        transport=args.transport,
        rotate_every=args.rotate_every,
        recovery_limit=args.recovery_limit,
        rss_limit_mb=args.rss_limit_mb,
        progress=None if args.quiet else progress,
    )
    if args.json:
        out = asdict(report)
        out.update(ok=report.ok, problems=report.problems, rss_growth=report.rss_growth)
        print(json.dumps(out, indent=2))
    else:
        print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
