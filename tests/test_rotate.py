"""rxws.ops.rotate: exactly-once make-before-break, in virtual time, then on real servers."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable
from reactivex.subject import Subject
from reactivex.testing import TestScheduler
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

import rxws
from rxws._signal import claim_open_signal
from rxws.backoff import Backoff
from rxws.errors import ConnectionLost, RotationFailed
from rxws.events import Disconnected, Event, Failed, Retrying, Rotated
from rxws.ops import idle_timeout, reconnect, rotate, stream_filter
from rxws.testing import DemoExchange, Recorder

# Retries of abandoned rotations come exactly 10 time units later in virtual time.
STEADY = Backoff(initial=10.0, maximum=10.0, jitter=0.0)


def seq_of(msg: dict[str, Any]) -> Any:
    return msg.get("seq")


def seqs_of(rec: Recorder) -> list[int]:
    return [m["seq"] for m in rec.items if "seq" in m]


def assert_exactly_once(ids: list[Any], *, contiguous: bool = True) -> None:
    """Each id once; with ``contiguous``, every int between the first and last."""
    assert ids, "nothing was delivered"
    repeats = [i for i, n in collections.Counter(ids).items() if n > 1]
    assert not repeats, f"{len(repeats)} repeated, e.g. {sorted(repeats)[:10]}"
    if contiguous:
        missing = sorted(set(range(min(ids), max(ids) + 1)) - set(ids))
        assert not missing, f"{len(missing)} lost, e.g. {missing[:10]}"


class Feed:
    """A live feed in virtual time: batch ``n`` is published at time ``n``.

    Subscription ``k`` (0 for the first) opens ``connect_delay`` after it subscribed
    (it fires the open signal then, as ``rxws.connect`` does) and receives the batches
    published from then on, each ``lag(k)`` after publication (``lag(k) is None``: it
    never delivers). A batch is one trade ``{"seq": n}``, or with ``symbols`` one trade
    per symbol ``{"s": s, "id": n}`` in an order that differs per subscription.
    ``fail_at[k]`` makes it error at that absolute time, ``stall_at[k]`` makes it stop
    delivering from then on, ``never_open`` lists subscriptions that never open, and
    with ``ack`` each subscription first sends ``{"ack": k}`` (a message without id).
    Messages carry ``via: k`` only with ``tag``, else they are identical on every
    subscription (as frames broadcast by a server are).
    """

    def __init__(
        self,
        scheduler: TestScheduler,
        lag: Callable[[int], float | None],
        *,
        connect_delay: float = 2.0,
        fail_at: dict[int, float] | None = None,
        stall_at: dict[int, float] | None = None,
        never_open: tuple[int, ...] = (),
        ack: bool = False,
        tag: bool = True,
        symbols: int = 0,
    ) -> None:
        self.scheduler = scheduler
        self.lag = lag
        self.connect_delay = connect_delay
        self.fail_at = fail_at or {}
        self.stall_at = stall_at or {}
        self.never_open = never_open
        self.ack = ack
        self.tag = tag
        self.symbols = symbols
        self.spans: list[list[float | None]] = []  # [subscribed, disposed or None]

    def batch(self, n: int, k: int) -> list[dict[str, Any]]:
        extra = {"via": k} if self.tag else {}
        if not self.symbols:
            return [{"e": "trade", "seq": n, **extra}]
        order = [(i * (k + 1) + n) % self.symbols for i in range(self.symbols)]
        if len(set(order)) != self.symbols:  # not a permutation for this k: rotate it
            order = [(i + k + n) % self.symbols for i in range(self.symbols)]
        return [{"s": f"S{i}", "id": n, **extra} for i in order]

    def observable(self) -> Observable[dict[str, Any]]:
        def subscribe(
            observer: abc.ObserverBase[dict[str, Any]], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            sched = self.scheduler
            signal = claim_open_signal()
            k = len(self.spans)
            start = sched.clock
            span: list[float | None] = [start, None]
            self.spans.append(span)
            lag = None if k in self.never_open else self.lag(k)
            stall = self.stall_at.get(k, math.inf)
            chain = SerialDisposable()
            others = CompositeDisposable()

            def emit(n: int) -> Callable[[Any, Any], None]:
                def action(_: Any, __: Any = None) -> None:
                    assert lag is not None
                    if n + lag >= stall:
                        return
                    for msg in self.batch(n, k):
                        observer.on_next(msg)
                    chain.disposable = sched.schedule_absolute(float(n + 1 + lag), emit(n + 1))

                return action

            opened = start + self.connect_delay
            if k not in self.never_open:
                if signal is not None:
                    others.add(sched.schedule_absolute(opened, lambda *_: signal.fire()))
                if self.ack:
                    others.add(
                        sched.schedule_absolute(opened, lambda *_: observer.on_next({"ack": k}))
                    )
            if lag is not None:
                first = math.ceil(opened + 0.25)
                chain.disposable = sched.schedule_absolute(float(first + lag), emit(first))
            if k in self.fail_at:
                others.add(
                    sched.schedule_absolute(
                        self.fail_at[k], lambda *_: observer.on_error(ConnectionLost(1011))
                    )
                )

            def dispose() -> None:
                span[1] = sched.clock

            return CompositeDisposable(chain, others, Disposable(dispose))

        return reactivex.create(subscribe)


class Run:
    """What ``feed.pipe(rotate(...))`` did between 200 and ``disposed``."""

    def __init__(self, feed: Feed, disposed: float = 1000, **rotate_kwargs: Any) -> None:
        scheduler = feed.scheduler
        self.events: list[tuple[float, Event]] = []
        self.errors: list[tuple[float, Exception]] = []
        rotate_kwargs.setdefault("overlap_timeout", 50.0)
        rotate_kwargs.setdefault("backoff", STEADY)
        results = scheduler.start(
            lambda: feed.observable().pipe(
                rotate(
                    on_event=lambda e: self.events.append((scheduler.clock, e)),
                    on_error=lambda e: self.errors.append((scheduler.clock, e)),
                    **rotate_kwargs,
                )
            ),
            disposed=disposed,
        )
        self.items = [(m.time, m.value.value) for m in results.messages if m.value.kind == "N"]
        self.ends = [m for m in results.messages if m.value.kind != "N"]

    def ids(self, key: str = "seq") -> list[Any]:
        return [msg[key] for _, msg in self.items if key in msg]

    @property
    def switches(self) -> list[float]:
        return [t for t, e in self.events if e == Rotated()]


LAGS: dict[str, Callable[[int], float | None]] = {
    # Every new connection is fresher than the one it replaces.
    "ahead": lambda k: max(0.5, 20.5 - 5 * k),
    # Every new connection lags further behind the one it replaces.
    "behind": lambda k: 0.5 + 3 * k,
    # Both get each message at the same moment (the primary's copy first).
    "level": lambda k: 0.5,
    "mixed": lambda k: 0.5 if k % 2 == 0 else 7.5,
}


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "every=.* or when="),
        ({"every": 0}, "every"),
        ({"every": -5}, "every"),
        ({"every": "60"}, "every"),
        ({"every": 1, "overlap_timeout": 0}, "overlap_timeout"),
        ({"when": 5}, "when"),
        ({"every": 1, "dedupe": "seq"}, "dedupe"),
        ({"every": 1, "dedupe": True}, "dedupe"),
        ({"every": 1, "on_event": 1}, "on_event"),
        ({"every": 1, "on_error": "log"}, "on_error"),
        ({"every": 1, "backoff": 3}, "Backoff"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        rotate(**kwargs)


def test_when_async_callable_needs_a_running_loop() -> None:
    async def never() -> None:
        await asyncio.sleep(3600)

    errors: list[Exception] = []
    scheduler = TestScheduler()
    reactivex.never().pipe(rotate(when=never)).subscribe(
        on_error=errors.append, scheduler=scheduler
    )
    assert errors and isinstance(errors[0], rxws.NoRunningLoop)
    assert "subscribe from inside the loop" in str(errors[0])


# ---------------------------------------------------------------------------- virtual time


@pytest.mark.parametrize("identity", ["dedupe", "message"])
@pytest.mark.parametrize("case", sorted(LAGS))
def test_every_message_once_across_rotations(case: str, identity: str) -> None:
    feed = Feed(TestScheduler(), LAGS[case], tag=identity == "dedupe")
    run = Run(feed, every=100.0, dedupe=seq_of if identity == "dedupe" else None)

    assert run.ends == [] and run.errors == []
    seqs = run.ids()
    assert_exactly_once(seqs)
    assert seqs[-1] >= 990 - 20  # delivery went on to the end
    # Rotations happened, each ended by catching up (well before the timeout).
    assert len(run.switches) >= 6
    for old, new in zip(feed.spans, feed.spans[1:], strict=False):
        if old[1] is not None and new[1] is not None:
            assert new[0] is not None and 0 < old[1] - new[0] < 30
    # Strict make-before-break: the old one went only after the new one had opened.
    for old, new in zip(feed.spans, feed.spans[1:], strict=False):
        if old[1] is not None and new[0] is not None and old[1] < 1000:
            assert old[1] >= new[0] + feed.connect_delay


@pytest.mark.parametrize("identity", ["dedupe", "message"])
def test_ids_interleaved_differently_per_connection_are_each_delivered_once(
    identity: str,
) -> None:
    feed = Feed(TestScheduler(), LAGS["mixed"], tag=identity == "dedupe", symbols=5)
    dedupe = (lambda m: (m["s"], m["id"])) if identity == "dedupe" else None
    run = Run(feed, every=50.0, dedupe=dedupe)

    assert run.ends == [] and len(run.switches) >= 10
    by_symbol: dict[str, list[int]] = collections.defaultdict(list)
    for _, msg in run.items:
        by_symbol[msg["s"]].append(msg["id"])
    assert sorted(by_symbol) == [f"S{i}" for i in range(5)]
    for ids in by_symbol.values():
        assert_exactly_once(ids)


class Heartbeats(Feed):
    """Two identical heartbeats per tick, then the trade."""

    def batch(self, n: int, k: int) -> list[dict[str, Any]]:
        return [{"ping": 1}, {"ping": 1}, {"e": "trade", "seq": n}]


def test_a_connections_own_repeated_messages_are_never_dropped() -> None:
    feed = Heartbeats(TestScheduler(), LAGS["level"], tag=False)
    run = Run(feed, every=100.0)
    seqs = run.ids()
    assert_exactly_once(seqs)
    assert len(run.switches) >= 6
    pings = sum(1 for _, msg in run.items if "ping" in msg)
    assert pings == 2 * len(seqs)


@pytest.mark.parametrize("case", sorted(LAGS))
def test_heartbeats_do_not_pass_for_having_caught_up(case: str) -> None:
    """Matching a heartbeat says nothing about position: no trade is lost for it."""
    feed = Heartbeats(TestScheduler(), LAGS[case], tag=False)
    run = Run(feed, every=100.0)
    assert_exactly_once(run.ids())
    assert len(run.switches) >= 6


def test_ids_are_remembered_only_around_the_overlap() -> None:
    calls = 0

    def counting(msg: dict[str, Any]) -> Any:
        nonlocal calls
        calls += 1
        return msg["seq"]

    feed = Feed(TestScheduler(), LAGS["ahead"])
    run = Run(feed, every=100.0, dedupe=counting)
    assert len(run.items) > 700
    # Consulted for both copies during overlaps and settling only: not for most items.
    assert calls < len(run.items) * 0.7


def test_a_candidate_that_never_opens_is_abandoned_and_the_primary_stays() -> None:
    feed = Feed(TestScheduler(), lambda k: 0.5, never_open=(1,))
    run = Run(feed, every=100.0, dedupe=seq_of)

    assert run.ends == []
    assert_exactly_once(run.ids())
    # The candidate came at 300 and was let go at 350; the primary stayed throughout.
    assert feed.spans[1] == [300, 350]
    assert [msg["via"] for t, msg in run.items if 300 < t < 360] == [0] * 60
    [(when, error)] = [(t, e) for t, e in run.errors if isinstance(e, RotationFailed)]
    assert when == 350 and "did not open within 50 s" in str(error)
    assert error.retry_in == 10.0
    # The next try comes one backoff delay later, and succeeds.
    assert feed.spans[2][0] == 360
    assert run.switches and run.switches[0] > 360


def test_on_a_quiet_feed_an_open_candidate_takes_over_at_the_timeout() -> None:
    # Nobody delivers anything after 290: a private stream with nothing to say.
    feed = Feed(TestScheduler(), lambda k: None if k >= 1 else 0.5, stall_at={0: 290.0})
    run = Run(feed, every=100.0, dedupe=seq_of)
    assert run.ends == []
    assert feed.spans[1][0] == 300
    assert feed.spans[0][1] == 350
    assert run.switches[0] == 350
    assert_exactly_once(run.ids())


def test_on_a_quiet_feed_a_candidate_that_never_opens_does_not_take_over() -> None:
    feed = Feed(
        TestScheduler(), lambda k: None if k >= 1 else 0.5, stall_at={0: 290.0}, never_open=(1,)
    )
    run = Run(feed, every=100.0, dedupe=seq_of, disposed=400)
    assert run.switches == []
    assert feed.spans[0][1] == 400  # kept until the end
    assert feed.spans[1] == [300, 350]


def test_a_candidate_silent_while_the_primary_speaks_is_abandoned() -> None:
    feed = Feed(TestScheduler(), lambda k: None if k == 1 else 0.5)
    run = Run(feed, every=100.0, dedupe=seq_of)
    assert feed.spans[1] == [300, 350]
    assert "delivered nothing" in str(run.errors[0][1])
    assert_exactly_once(run.ids())


def test_a_stalled_primary_is_replaced_without_loss() -> None:
    feed = Feed(TestScheduler(), lambda k: 0.5, stall_at={0: 290.0})
    run = Run(feed, every=100.0, dedupe=seq_of)
    # Silent since before the trigger: let go at the candidate's first message.
    assert feed.spans[0][1] == 303.5
    assert run.switches[0] == 303.5
    assert [msg["seq"] for t, msg in run.items if 300 <= t < 305] == [303, 304]
    assert_exactly_once([s for s in run.ids() if s >= 303])


def test_a_failing_candidate_is_abandoned_and_the_primary_goes_on() -> None:
    feed = Feed(TestScheduler(), lambda k: 0.5 if k != 1 else 10.5, fail_at={1: 305.0})
    run = Run(feed, every=100.0, dedupe=seq_of)
    assert run.ends == []
    assert feed.spans[1] == [300, 305]
    assert_exactly_once(run.ids())
    assert feed.spans[2][0] == 315  # one backoff delay later
    assert "failed" in str(run.errors[0][1])


def test_a_primary_failing_during_the_overlap_hands_over_at_once() -> None:
    feed = Feed(TestScheduler(), lambda k: 0.5 if k != 1 else 10.5, fail_at={0: 305.0})
    run = Run(feed, every=100.0, dedupe=seq_of)
    assert run.ends == []
    assert run.switches[0] == 305
    # The candidate is behind: what it repeats is dropped.
    assert_exactly_once(run.ids())
    assert [msg["via"] for t, msg in run.items if 305 < t < 400] == [1] * 85


def test_a_primary_failing_outside_an_overlap_passes_the_error_on() -> None:
    feed = Feed(TestScheduler(), lambda k: 0.5, fail_at={0: 250.0})
    run = Run(feed, every=100.0, dedupe=seq_of)
    [end] = run.ends
    assert end.time == 250
    assert isinstance(end.value.exception, ConnectionLost)
    assert run.events == []
    assert feed.spans == [[200, 250]]


def test_with_dedupe_off_the_open_candidate_takes_over_with_its_first_message() -> None:
    feed = Feed(TestScheduler(), lambda k: 5.5 if k == 0 else 0.5)
    run = Run(feed, every=100.0, dedupe=False)
    # Opened at 302, first message (trade 303) at 303.5: nothing compared.
    assert run.switches[0] == 303.5
    assert feed.spans[0] == [200, 303.5]
    at_switch = [(msg["seq"], msg["via"]) for t, msg in run.items if t == 303.5]
    assert at_switch == [(303, 1)]


def test_a_signal_observable_triggers_rotations() -> None:
    scheduler = TestScheduler()
    signal: Subject[None] = Subject()
    for t in (350.0, 351.0, 600.0):  # 351 falls inside the first overlap: covered
        scheduler.schedule_absolute(t, lambda *_: signal.on_next(None))
    feed = Feed(scheduler, LAGS["mixed"])
    run = Run(feed, when=signal, dedupe=seq_of)
    assert run.ends == []
    assert [span[0] for span in feed.spans] == [200, 350, 600]
    assert len(run.switches) == 2
    assert_exactly_once(run.ids())


def test_an_abandoned_rotation_is_tried_again_after_a_backoff_delay() -> None:
    scheduler = TestScheduler()
    signal: Subject[None] = Subject()
    scheduler.schedule_absolute(350.0, lambda *_: signal.on_next(None))
    feed = Feed(scheduler, lambda k: None if k in (1, 2) else 0.5)
    run = Run(feed, when=signal, dedupe=seq_of, disposed=700, backoff=Backoff(10.0, jitter=0.0))
    # Silent at 350 (abandoned at 400), tried at 410 (silent, abandoned at 460), then
    # at 480 (the backoff doubled), which succeeds.
    assert [span[0] for span in feed.spans] == [200, 350, 410, 480]
    assert len(run.switches) == 1
    assert [e.retry_in for _, e in run.errors] == [10.0, 20.0]
    assert_exactly_once(run.ids())


def test_every_and_when_both_trigger() -> None:
    scheduler = TestScheduler()
    signal: Subject[None] = Subject()
    scheduler.schedule_absolute(250.0, lambda *_: signal.on_next(None))
    feed = Feed(scheduler, LAGS["level"])
    run = Run(feed, every=300.0, when=signal, dedupe=seq_of, disposed=700)
    # The signal at 250, then ``every`` counted from that switch.
    switched = run.switches[0]
    assert [span[0] for span in feed.spans] == [200, 250, switched + 300]


def test_an_erroring_signal_ends_the_stream() -> None:
    scheduler = TestScheduler()
    signal: Subject[None] = Subject()
    boom = RuntimeError("signal broke")
    scheduler.schedule_absolute(300.0, lambda *_: signal.on_error(boom))
    feed = Feed(scheduler, LAGS["level"])
    run = Run(feed, when=signal)
    assert [(e.time, e.value.exception) for e in run.ends] == [(300, boom)]
    assert feed.spans[0][1] == 300


def test_messages_without_an_id_are_never_taken_for_duplicates() -> None:
    feed = Feed(TestScheduler(), LAGS["ahead"], ack=True)
    run = Run(feed, every=100.0, dedupe=seq_of)
    assert run.ids("ack") == list(range(len(feed.spans)))
    assert_exactly_once(run.ids())


def test_a_raising_dedupe_is_reported_and_the_message_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = Feed(TestScheduler(), LAGS["level"], ack=True)
    with caplog.at_level(logging.WARNING, logger="rxws.ops"):
        run = Run(feed, every=100.0, dedupe=lambda m: m["seq"])
    assert run.ends == []
    assert run.ids("ack") == list(range(len(feed.spans)))
    assert all(isinstance(e, KeyError) for _, e in run.errors)
    assert len(run.errors) == len(run.switches)  # once per overlap
    assert "return None" in caplog.text
    assert_exactly_once(run.ids())


def test_an_unhashable_id_is_reported() -> None:
    feed = Feed(TestScheduler(), LAGS["level"])
    run = Run(feed, every=100.0, dedupe=lambda m: [m["seq"]], disposed=400)
    assert run.errors and "unhashable list" in str(run.errors[0][1])


def test_state_is_per_subscription() -> None:
    scheduler = TestScheduler()
    feed = Feed(scheduler, LAGS["level"])
    pipeline = feed.observable().pipe(rotate(every=100.0, dedupe=seq_of))
    first = scheduler.create_observer()
    second = scheduler.create_observer()
    d1 = pipeline.subscribe(first, scheduler=scheduler)
    scheduler.advance_to(50)
    d2 = pipeline.subscribe(second, scheduler=scheduler)
    scheduler.advance_to(500)
    d1.dispose()
    d2.dispose()
    for observer in (first, second):
        assert_exactly_once([m.value.value["seq"] for m in observer.messages])
    # Each subscription rotates on its own timer.
    starts = [span[0] for span in feed.spans]
    assert starts[:4] == [0, 50, 100, 150]


# ---------------------------------------------------------------------------- loopback


class ShuffledFeed:
    """A real websocket server broadcasting the same trades to every connection.

    Every ``interval`` it publishes one trade per symbol, each symbol with its own id
    sequence, and sends them to each connection in an order of that connection's own
    (so per-symbol ids interleave differently on two connections). Frames are
    byte-identical across connections; only their order differs.
    """

    def __init__(self, symbols: int = 6, interval: float = 0.004) -> None:
        self.symbols = symbols
        self.interval = interval
        self.connections: dict[ServerConnection, random.Random] = {}
        self.accepted = 0
        self.published: dict[str, int] = {}

    async def __aenter__(self) -> ShuffledFeed:
        self.server = await serve(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/"
        self.ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *_: object) -> None:
        self.ticker.cancel()
        await asyncio.gather(self.ticker, return_exceptions=True)
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self.accepted += 1
        self.connections[ws] = random.Random(self.accepted)
        try:
            await ws.wait_closed()
        finally:
            del self.connections[ws]

    async def _tick(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.interval)
            if not self.connections:
                continue
            n += 1
            frames = [json.dumps({"s": f"S{i}", "id": n}) for i in range(self.symbols)]
            for ws, rng in list(self.connections.items()):
                order = frames[:]
                rng.shuffle(order)
                try:
                    for frame in order:
                        await ws.send(frame)
                except ConnectionClosed:
                    pass  # a connection the client let go of meanwhile
            self.published = {f"S{i}": n for i in range(self.symbols)}


@pytest.mark.parametrize("identity", ["dedupe", "message"])
async def test_rotating_every_half_second_on_shuffled_identical_frames(
    transport: str, identity: str
) -> None:
    """Issue: zero repeats, zero losses, with and without dedupe, ids interleaved."""
    async with ShuffledFeed() as server:
        got = Recorder()
        dedupe = (lambda m: (m["s"], m["id"])) if identity == "dedupe" else None
        feed = rxws.connect(server.url, transport=transport).pipe(
            rotate(every=0.5, dedupe=dedupe, on_event=got.on_event, on_error=got.on_error)
        )
        subscription = feed.subscribe(got.on_next)
        try:
            await got.wait_until(lambda: len(got.events) >= 6, timeout=20.0)
        finally:
            subscription.dispose()
        assert got.error is None
        by_symbol: dict[str, list[int]] = collections.defaultdict(list)
        for msg in got.items:
            by_symbol[msg["s"]].append(msg["id"])
        assert len(by_symbol) == server.symbols
        for ids in by_symbol.values():
            assert_exactly_once(ids)
        assert server.accepted >= 7


@pytest.mark.parametrize("identity", ["dedupe", "message"])
async def test_rotating_every_quarter_second_loses_and_repeats_nothing(
    transport: str, identity: str
) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        got = Recorder()
        feed = rxws.connect(exchange.url, transport=transport).pipe(
            rotate(
                every=0.25,
                dedupe=seq_of if identity == "dedupe" else None,
                on_event=got.on_event,
                on_error=got.on_error,
            )
        )
        subscription = feed.subscribe(got.on_next)
        try:
            await got.wait_until(lambda: len(got.events) >= 7, timeout=10.0)
            await exchange.wait_for(lambda: exchange.open_connections == 1)
            assert exchange.accepted >= 7
        finally:
            subscription.dispose()
        await exchange.wait_for(lambda: exchange.open_connections == 0)
        assert got.error is None
        assert got.events == [Rotated()] * len(got.events)
        assert len(got.items) > 300
        assert_exactly_once(seqs_of(got))


async def test_a_signal_rotates_without_loss(transport: str) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        got = Recorder()
        signal: Subject[None] = Subject()
        feed = rxws.connect(exchange.url, transport=transport).pipe(
            rotate(when=signal, on_event=got.on_event)
        )
        subscription = feed.subscribe(got.on_next, got.on_error)
        try:
            await got.wait_until(lambda: len(got.items) >= 20)
            assert exchange.accepted == 1
            signal.on_next(None)
            await got.wait_until(lambda: len(got.events) == 1)
            await exchange.wait_for(lambda: exchange.open_connections == 1)
            count = len(got.items)
            await got.wait_until(lambda: len(got.items) >= count + 20)
        finally:
            subscription.dispose()
        await exchange.wait_for(lambda: exchange.open_connections == 0)
        assert exchange.accepted == 2
        assert_exactly_once(seqs_of(got))


async def test_on_a_quiet_feed_a_slow_new_connection_never_replaces_the_working_one(
    transport: str,
) -> None:
    """Issue: the old connection was closed for one that never opened; a send was lost."""
    gate = asyncio.Event()  # holds every connect after the first: a hanging listen-key fetch
    connects = 0
    async with DemoExchange(interval=0.002) as exchange:

        async def url() -> str:
            nonlocal connects
            connects += 1
            if connects > 1:
                await gate.wait()
            return exchange.ws_url  # quiet until something is subscribed

        got = Recorder()
        client = rxws.WebSocketClient(
            url,
            transport=transport,
            rotate_every=0.1,
            overlap_timeout=0.3,
            backoff=Backoff(initial=5.0, jitter=0.0),
        )
        client.errors.subscribe(got.on_error)
        client.messages.subscribe(got.on_next)
        async with client:
            first = await client.wait_connected()
            await got.wait_until(lambda: got.error is not None, timeout=5.0)
            assert isinstance(got.error, RotationFailed)
            assert "did not open" in str(got.error)
            # The working connection is still the present one, and a send on it arrives.
            assert client.present is first
            assert exchange.open_connections == 1
            await client.send({"method": "LIST_SUBSCRIPTIONS", "id": 7})
            await got.wait_until(lambda: any(m.get("id") == 7 for m in got.items))
            assert client.stats.rotations == 0


async def test_a_when_callable_that_raises_is_reported_and_paced(transport: str) -> None:
    """Issue: a raising when-callable opened 343 connections in 2 s."""
    async with DemoExchange(interval=0.002) as exchange:
        calls = 0

        async def broken() -> None:
            nonlocal calls
            calls += 1
            raise RuntimeError("listen key refresh failed")

        got = Recorder()
        client = rxws.WebSocketClient(
            exchange.url,
            transport=transport,
            rotate_when=broken,
            backoff=Backoff(initial=0.2, maximum=0.2, jitter=0.0),
        )
        client.errors.subscribe(got.on_error)
        async with client:
            await client.wait_connected()
            await asyncio.sleep(1.0)
            assert isinstance(got.error, RuntimeError)
            assert "listen key refresh failed" in str(got.error)
        # Asked about once per backoff delay; no new connection for an error.
        assert 3 <= calls <= 7
        assert exchange.accepted == 1
        assert client.stats.rotations == 0


async def test_an_async_callable_is_asked_once_per_connection(transport: str) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        got = Recorder()
        calls = 0

        async def due() -> None:
            nonlocal calls
            calls += 1
            if calls <= 2:
                await asyncio.sleep(0.1)
            else:
                await asyncio.sleep(3600)  # cancelled when the subscription is disposed

        feed = rxws.connect(exchange.url, transport=transport).pipe(
            rotate(when=due, dedupe=seq_of, on_event=got.on_event)
        )
        subscription = feed.subscribe(got.on_next, got.on_error)
        try:
            await got.wait_until(lambda: len(got.events) == 2)
            await got.wait_until(lambda: calls == 3)
            await exchange.wait_for(lambda: exchange.open_connections == 1)
        finally:
            subscription.dispose()
        assert exchange.accepted == 3
        assert calls == 3
        assert_exactly_once(seqs_of(got))


async def test_a_callable_that_is_not_async_rotates_with_a_warning(
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        got = Recorder()
        feed = rxws.connect(exchange.url, transport=transport).pipe(
            rotate(when=lambda: None, dedupe=seq_of, on_event=got.on_event)
        )
        with caplog.at_level(logging.WARNING, logger="rxws.ops"):
            subscription = feed.subscribe(got.on_next, got.on_error)
            try:
                await got.wait_until(lambda: len(got.events) >= 2)
            finally:
                subscription.dispose()
        assert "must be an async callable" in caplog.text
        assert_exactly_once(seqs_of(got))
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_failed_is_the_last_status_event_when_rotation_ends_the_feed(
    transport: str,
) -> None:
    """Issue: ``Disconnected`` arrived after ``Failed``."""
    async with DemoExchange(interval=0.002) as exchange:
        events: list[Event] = []
        signal: Subject[None] = Subject()
        client = rxws.WebSocketClient(exchange.url, transport=transport, rotate_when=signal)
        client.status.subscribe(events.append)
        async with client:
            await client.wait_connected()
            signal.on_error(ValueError("the rotation signal broke"))
            await asyncio.sleep(0.3)  # let the connection's own close come through
            assert isinstance(events[-1], Failed)
            assert isinstance(events[-2], Disconnected)
            assert sum(isinstance(e, Failed) for e in events) == 1


async def test_the_documented_pipeline_composes(transport: str) -> None:
    """filter, idle timeout, rotation and reconnect together, across a server restart."""
    async with DemoExchange(interval=0.002) as exchange:
        got = Recorder()
        feed = rxws.connect(exchange.url, close_timeout=0.2, transport=transport).pipe(
            stream_filter([{"s": "BTCUSDT"}]),
            idle_timeout(1.0),
            rotate(every=0.2, dedupe=seq_of, on_event=got.on_event),
            reconnect(Backoff(initial=0.02, jitter=0.0), on_event=got.on_event),
        )
        subscription = feed.subscribe(got.on_next, got.on_error)
        try:
            await got.wait_until(lambda: got.events.count(Rotated()) >= 2)
            await exchange.drop_all(1011)
            await got.wait_until(lambda: any(isinstance(e, Retrying) for e in got.events))
            count = len(got.items)
            await got.wait_until(lambda: len(got.items) >= count + 10)
        finally:
            subscription.dispose()
        assert got.error is None
        assert {m["s"] for m in got.items} == {"BTCUSDT"}
        seqs = seqs_of(got)
        assert len(seqs) == len(set(seqs))
        await exchange.wait_for(lambda: exchange.open_connections == 0)
