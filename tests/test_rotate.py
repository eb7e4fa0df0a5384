"""rxws.ops.rotate: make-before-break in virtual time, then on a real ticking exchange."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable
from reactivex.subject import Subject
from reactivex.testing import TestScheduler

import rxws
from rxws.backoff import Backoff
from rxws.errors import ConnectionLost
from rxws.events import Event, Retrying, Rotated
from rxws.ops import idle_timeout, reconnect, rotate, stream_filter
from rxws.testing import DemoExchange, Recorder


def seq_of(msg: dict[str, Any]) -> Any:
    return msg.get("seq")


def seqs_of(rec: Recorder) -> list[int]:
    return [m["seq"] for m in rec.items]


class Feed:
    """A live feed in virtual time: trade ``n`` is published at time ``n``.

    Subscription ``k`` (0 for the first) receives the trades published from
    ``connect_delay`` after it subscribed, each ``lag(k)`` after publication
    (``lag(k) is None``: it never delivers). ``fail_at[k]`` makes it error at that
    absolute time, ``stall_at[k]`` makes it stop delivering from then on, and with
    ``ack`` each subscription first sends ``{"ack": k}`` (a message without an id).
    """

    def __init__(
        self,
        scheduler: TestScheduler,
        lag: Callable[[int], float | None],
        *,
        connect_delay: float = 2.0,
        fail_at: dict[int, float] | None = None,
        stall_at: dict[int, float] | None = None,
        ack: bool = False,
    ) -> None:
        self.scheduler = scheduler
        self.lag = lag
        self.connect_delay = connect_delay
        self.fail_at = fail_at or {}
        self.stall_at = stall_at or {}
        self.ack = ack
        self.spans: list[list[float | None]] = []  # [subscribed, disposed or None]

    def observable(self) -> Observable[dict[str, Any]]:
        def subscribe(
            observer: abc.ObserverBase[dict[str, Any]], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            sched = self.scheduler
            k = len(self.spans)
            start = sched.clock
            span: list[float | None] = [start, None]
            self.spans.append(span)
            lag = self.lag(k)
            stall = self.stall_at.get(k, math.inf)
            chain = SerialDisposable()
            others = CompositeDisposable()

            def emit(n: int) -> Callable[[Any, Any], None]:
                def action(_: Any, __: Any = None) -> None:
                    assert lag is not None
                    if n + lag >= stall:
                        return
                    observer.on_next({"e": "trade", "seq": n, "via": k})
                    chain.disposable = sched.schedule_absolute(float(n + 1 + lag), emit(n + 1))

                return action

            if self.ack:
                others.add(
                    sched.schedule_absolute(
                        start + self.connect_delay,
                        lambda *_: observer.on_next({"ack": k}),
                    )
                )
            if lag is not None:
                first = math.ceil(start + self.connect_delay + 0.25)
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


def run(
    feed: Feed,
    *,
    disposed: float = 1000,
    **rotate_kwargs: Any,
) -> tuple[list[tuple[float, Any]], list[tuple[float, Event]], Any]:
    """Run ``feed.pipe(rotate(**rotate_kwargs))`` from 200 to ``disposed``.

    ``overlap_timeout`` is 50 unless given: wide enough for every catch-up here.
    """
    scheduler = feed.scheduler
    events: list[tuple[float, Event]] = []

    def record(event: Event) -> None:
        events.append((scheduler.clock, event))

    rotate_kwargs.setdefault("overlap_timeout", 50.0)
    results = scheduler.start(
        lambda: feed.observable().pipe(rotate(on_event=record, **rotate_kwargs)),
        disposed=disposed,
    )
    items = [(m.time, m.value.value) for m in results.messages if m.value.kind == "N"]
    ends = [m for m in results.messages if m.value.kind != "N"]
    return items, events, ends


def assert_contiguous(seqs: list[int]) -> None:
    assert seqs, "nothing was delivered"
    expected = list(range(seqs[0], seqs[0] + len(seqs)))
    if seqs != expected:
        gaps = [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]
        raise AssertionError(f"not contiguous: jumps at {gaps[:10]}")


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
        ({"every": 1, "on_event": 1}, "on_event"),
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
    assert errors and "running asyncio loop" in str(errors[0])


# ---------------------------------------------------------------------------- virtual time


@pytest.mark.parametrize("case", sorted(LAGS))
def test_dedupe_keeps_the_sequence_whole_across_rotations(case: str) -> None:
    feed = Feed(TestScheduler(), LAGS[case])
    items, events, ends = run(feed, every=100.0, dedupe=seq_of, overlap_timeout=50.0)

    assert ends == []
    seqs = [msg["seq"] for _, msg in items]
    assert_contiguous(seqs)
    # Delivery went on to the end, from the last connection.
    assert seqs[-1] >= 990 - 20
    # Rotations happened, each one ended by catching up, not by the timeout.
    switches = len(events)
    assert switches >= 6
    assert [e for _, e in events] == [Rotated()] * switches
    assert items[-1][1]["via"] == switches
    # (A last candidate may have been mid-overlap when the pipeline was disposed.)
    assert len(feed.spans) in (switches + 1, switches + 2)
    for old, new in zip(feed.spans[:switches], feed.spans[1:], strict=False):
        assert old[1] is not None and new[0] is not None
        assert 0 < old[1] - new[0] < 50
    # Every old subscription was disposed at its switch.
    assert [end for _, end in feed.spans[:switches]].count(1000) == 0


def test_dedupe_is_only_consulted_during_overlaps() -> None:
    calls = 0

    def counting(msg: dict[str, Any]) -> Any:
        nonlocal calls
        calls += 1
        return msg["seq"]

    feed = Feed(TestScheduler(), LAGS["ahead"])
    items, _, _ = run(feed, every=100.0, dedupe=counting)
    assert len(items) > 700
    assert calls < len(items) / 4


def test_a_candidate_that_never_delivers_is_abandoned() -> None:
    feed = Feed(TestScheduler(), lambda k: None if k == 1 else 0.5)
    items, events, ends = run(feed, every=100.0, dedupe=seq_of, overlap_timeout=50.0)

    assert ends == []
    assert_contiguous([msg["seq"] for _, msg in items])
    # The silent candidate came at 300 and was let go at 350; the primary stayed.
    assert feed.spans[1] == [300, 350]
    assert feed.spans[0][1] is not None and feed.spans[0][1] > 450
    # The next rotation comes ``every`` after the abandoned one and succeeds.
    assert feed.spans[2][0] == 450
    assert [msg["via"] for t, msg in items if 350 < t < 450] == [0] * 100
    assert len(events) == len(feed.spans) - 2


def test_on_a_quiet_feed_the_silent_candidate_takes_over_after_overlap_timeout() -> None:
    # Nobody delivers anything after 290: a private stream with nothing to say.
    feed = Feed(TestScheduler(), lambda k: None if k >= 1 else 0.5, stall_at={0: 290.0})
    items, events, ends = run(feed, every=100.0, dedupe=seq_of, overlap_timeout=50.0)
    assert ends == []
    assert feed.spans[1][0] == 300
    assert feed.spans[0][1] == 350  # the old connection was let go at the timeout
    assert events[0] == (350, Rotated())
    assert_contiguous([msg["seq"] for _, msg in items])


def test_a_stalled_primary_is_dropped_after_overlap_timeout() -> None:
    feed = Feed(TestScheduler(), lambda k: 0.5, stall_at={0: 290.0})
    items, events, _ = run(feed, every=100.0, dedupe=seq_of, overlap_timeout=50.0)
    # The candidate delivered from 303 on, held back until the timeout at 350.
    assert feed.spans[0][1] == 350
    assert events[0] == (350, Rotated())
    flushed = [msg["seq"] for t, msg in items if t == 350]
    assert flushed == list(range(303, 350))
    after = [msg["seq"] for t, msg in items if t >= 350]
    assert_contiguous(after)


def test_a_failing_candidate_is_abandoned_and_the_primary_goes_on() -> None:
    feed = Feed(TestScheduler(), lambda k: 0.5 if k != 1 else 10.5, fail_at={1: 305.0})
    items, _, ends = run(feed, every=100.0, dedupe=seq_of)
    assert ends == []
    assert feed.spans[1] == [300, 305]
    assert_contiguous([msg["seq"] for _, msg in items])
    assert feed.spans[2][0] == 405


def test_a_primary_failing_during_the_overlap_hands_over_at_once() -> None:
    feed = Feed(TestScheduler(), lambda k: 0.5 if k != 1 else 10.5, fail_at={0: 305.0})
    items, events, ends = run(feed, every=100.0, dedupe=seq_of)
    assert ends == []
    assert events[0] == (305, Rotated())
    # The candidate is behind: what it repeats is skipped until it reaches 304.
    assert_contiguous([msg["seq"] for _, msg in items])
    assert [msg["via"] for t, msg in items if 305 < t < 400] == [1] * 85


def test_a_primary_failing_outside_an_overlap_passes_the_error_on() -> None:
    feed = Feed(TestScheduler(), lambda k: 0.5, fail_at={0: 250.0})
    _, events, ends = run(feed, every=100.0, dedupe=seq_of)
    [end] = ends
    assert end.time == 250
    assert isinstance(end.value.exception, ConnectionLost)
    assert events == []
    assert feed.spans == [[200, 250]]


def test_without_dedupe_the_first_candidate_message_switches() -> None:
    feed = Feed(TestScheduler(), lambda k: 5.5 if k == 0 else 0.5)
    items, events, ends = run(feed, every=100.0)
    assert ends == []
    # Candidate at 300 gets trade 303 at 303.5: delivered, and the primary let go.
    assert feed.spans[0] == [200, 303.5]
    assert events[0] == (303.5, Rotated())
    at_switch = [(msg["seq"], msg["via"]) for t, msg in items if t == 303.5]
    assert at_switch == [(303, 1)]
    assert all(msg["via"] == 0 for t, msg in items if t < 303.5)
    assert all(msg["via"] == 1 for t, msg in items if 303.5 <= t < 400)


def test_a_signal_observable_triggers_rotations() -> None:
    scheduler = TestScheduler()
    signal: Subject[None] = Subject()
    for t in (350.0, 351.0, 600.0):  # 351 falls inside the first overlap: ignored
        scheduler.schedule_absolute(t, lambda *_: signal.on_next(None))
    feed = Feed(scheduler, LAGS["mixed"])
    items, events, ends = run(feed, when=signal, dedupe=seq_of)
    assert ends == []
    assert [span[0] for span in feed.spans] == [200, 350, 600]
    assert len(events) == 2
    assert_contiguous([msg["seq"] for _, msg in items])


def test_an_abandoned_rotation_asked_for_by_when_is_tried_again() -> None:
    scheduler = TestScheduler()
    signal: Subject[None] = Subject()
    scheduler.schedule_absolute(350.0, lambda *_: signal.on_next(None))
    feed = Feed(scheduler, lambda k: None if k == 1 else 0.5)
    items, events, _ = run(feed, when=signal, dedupe=seq_of, disposed=700)
    # Silent candidate at 350, abandoned at 400, tried again overlap_timeout later.
    assert [span[0] for span in feed.spans] == [200, 350, 450]
    assert feed.spans[1][1] == 400
    assert len(events) == 1
    assert_contiguous([msg["seq"] for _, msg in items])


def test_a_signal_during_a_failed_overlap_is_not_lost() -> None:
    scheduler = TestScheduler()
    signal: Subject[None] = Subject()
    scheduler.schedule_absolute(320.0, lambda *_: signal.on_next(None))
    feed = Feed(scheduler, lambda k: None if k == 1 else 0.5)
    run(feed, every=100.0, when=signal, dedupe=seq_of, disposed=700)
    # every -> 300 (silent, abandoned at 350); the signal at 320 is retried at 400.
    assert [span[0] for span in feed.spans][:3] == [200, 300, 400]


def test_every_and_when_both_trigger() -> None:
    scheduler = TestScheduler()
    signal: Subject[None] = Subject()
    scheduler.schedule_absolute(250.0, lambda *_: signal.on_next(None))
    feed = Feed(scheduler, LAGS["level"])
    run(feed, every=300.0, when=signal, dedupe=seq_of, disposed=700)
    # The signal at 250, then ``every`` counted from that switch (at 253.5 + 300).
    assert [span[0] for span in feed.spans] == [200, 250, 553.5]


def test_an_erroring_signal_ends_the_stream() -> None:
    scheduler = TestScheduler()
    signal: Subject[None] = Subject()
    boom = RuntimeError("signal broke")
    scheduler.schedule_absolute(300.0, lambda *_: signal.on_error(boom))
    feed = Feed(scheduler, LAGS["level"])
    _, _, ends = run(feed, when=signal)
    assert [(e.time, e.value.exception) for e in ends] == [(300, boom)]
    assert feed.spans[0][1] == 300


def test_messages_without_an_id_are_never_taken_for_duplicates() -> None:
    feed = Feed(TestScheduler(), LAGS["ahead"], ack=True)
    items, _, _ = run(feed, every=100.0, dedupe=seq_of)
    acks = [msg["ack"] for _, msg in items if "ack" in msg]
    assert acks == list(range(len(feed.spans)))
    assert_contiguous([msg["seq"] for _, msg in items if "seq" in msg])


def test_a_raising_dedupe_ends_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    feed = Feed(TestScheduler(), LAGS["level"], ack=True)
    with caplog.at_level(logging.ERROR, logger="rxws.ops"):
        _, _, ends = run(feed, every=100.0, dedupe=lambda m: m["seq"])
    [end] = ends
    assert isinstance(end.value.exception, KeyError)
    assert "return None" in caplog.text
    assert all(span[1] is not None and span[1] <= end.time for span in feed.spans)


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
        assert_contiguous([m.value.value["seq"] for m in observer.messages])
    # Each subscription rotates on its own timer: 0, 50, then about every 100 + 3.5.
    starts = [span[0] for span in feed.spans]
    assert starts[:4] == [0, 50, 100, 150]
    assert len(starts) == 10


# ---------------------------------------------------------------------------- loopback


async def test_rotating_every_quarter_second_loses_and_repeats_nothing(transport: str) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        got = Recorder()
        feed = rxws.connect(exchange.url, transport=transport).pipe(
            rotate(every=0.25, dedupe=lambda m: m["seq"], on_event=got.on_event)
        )
        subscription = feed.subscribe(got.on_next, got.on_error)
        try:
            await got.wait_until(lambda: len(got.events) >= 7, timeout=10.0)
            await exchange.wait_for(lambda: exchange.open_connections == 1)
            assert exchange.accepted >= 6
        finally:
            subscription.dispose()
        await exchange.wait_for(lambda: exchange.open_connections == 0)
        assert got.error is None
        assert got.events == [Rotated()] * len(got.events)
        assert len(got.items) > 300
        assert_contiguous(seqs_of(got))


async def test_a_signal_rotates_without_loss(transport: str) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        got = Recorder()
        signal: Subject[None] = Subject()
        feed = rxws.connect(exchange.url, transport=transport).pipe(
            rotate(when=signal, dedupe=lambda m: m["seq"], on_event=got.on_event)
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
        assert_contiguous(seqs_of(got))


async def test_without_dedupe_the_new_connection_takes_over_with_its_first_message(
    transport: str,
) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        got = Recorder()
        signal: Subject[None] = Subject()
        marks: list[int] = []

        def on_event(event: Event) -> None:
            marks.append(len(got.items))
            got.on_event(event)

        feed = rxws.connect(exchange.url, transport=transport).pipe(
            rotate(when=signal, on_event=on_event)
        )
        subscription = feed.subscribe(got.on_next, got.on_error)
        try:
            await got.wait_until(lambda: len(got.items) >= 10)
            signal.on_next(None)
            await got.wait_until(lambda: len(got.events) == 1)
            await exchange.wait_for(lambda: exchange.open_connections == 1)
        finally:
            subscription.dispose()
        assert exchange.accepted == 2
        # Rotated came right after the new connection's first message was delivered.
        assert marks[0] >= 11


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
            rotate(when=due, dedupe=lambda m: m["seq"], on_event=got.on_event)
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
        assert_contiguous(seqs_of(got))


async def test_an_async_callable_that_raises_counts_as_a_trigger(
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        got = Recorder()
        calls = 0

        async def broken() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("listen key refresh failed")
            await asyncio.sleep(3600)

        feed = rxws.connect(exchange.url, transport=transport).pipe(
            rotate(when=broken, on_event=got.on_event)
        )
        with caplog.at_level(logging.WARNING, logger="rxws.ops"):
            subscription = feed.subscribe(got.on_next, got.on_error)
            try:
                await got.wait_until(lambda: len(got.events) == 1)
            finally:
                subscription.dispose()
        assert "listen key refresh failed" in caplog.text
        assert exchange.accepted == 2
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_a_callable_that_is_not_async_rotates_with_a_warning(
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        got = Recorder()
        feed = rxws.connect(exchange.url, transport=transport).pipe(
            rotate(when=lambda: None, dedupe=lambda m: m["seq"], on_event=got.on_event)
        )
        with caplog.at_level(logging.WARNING, logger="rxws.ops"):
            subscription = feed.subscribe(got.on_next, got.on_error)
            try:
                await got.wait_until(lambda: len(got.events) >= 2)
            finally:
                subscription.dispose()
        assert "must be an async callable" in caplog.text
        assert_contiguous(seqs_of(got))
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_the_documented_pipeline_composes(transport: str) -> None:
    """filter, idle timeout, rotation and reconnect together, across a server restart."""
    async with DemoExchange(interval=0.002) as exchange:
        got = Recorder()
        feed = rxws.connect(exchange.url, close_timeout=0.2, transport=transport).pipe(
            stream_filter([{"s": "BTCUSDT"}]),
            idle_timeout(1.0),
            rotate(every=0.2, dedupe=lambda m: m["seq"], on_event=got.on_event),
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
        # Within one connection's run the BTC trades are every 4th sequence number.
        seqs = seqs_of(got)
        assert seqs == sorted(set(seqs))
        await exchange.wait_for(lambda: exchange.open_connections == 0)
