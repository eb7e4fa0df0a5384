"""Dead-link detection: idle_timeout in virtual time, then a blackholed link for real."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import reactivex
from reactivex import abc, typing
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

import rxws
from rxws.backoff import Backoff
from rxws.errors import ConnectionLost, IdleTimeout, is_retryable
from rxws.events import Event, Retrying
from rxws.ops import idle_timeout, reconnect
from rxws.testing import DemoExchange, FaultProxy, Recorder

on_next = ReactiveTest.on_next
on_error = ReactiveTest.on_error
on_completed = ReactiveTest.on_completed


class CountingScheduler(TestScheduler):
    """A TestScheduler that counts the timers scheduled on it."""

    def __init__(self) -> None:
        super().__init__()
        self.relative = 0

    def schedule_relative(
        self,
        duetime: typing.RelativeTime,
        action: typing.ScheduledAction[Any],
        state: Any = None,
    ) -> abc.DisposableBase:
        self.relative += 1
        return super().schedule_relative(duetime, action, state)


def test_errors_after_a_quiet_period_and_disposes_the_source() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, "a"), on_next(230, "b"), on_next(400, "late")
    )
    results = scheduler.start(lambda: source.pipe(idle_timeout(50)))
    assert results.messages[:2] == [on_next(210, "a"), on_next(230, "b")]
    [*_, last] = results.messages
    assert last.time == 280
    error = last.value.exception
    assert isinstance(error, IdleTimeout)
    assert error.timeout == 50
    assert is_retryable(error)
    assert [(s.subscribe, s.unsubscribe) for s in source.subscriptions] == [(200, 280)]


def test_counts_from_subscription_when_nothing_ever_arrives() -> None:
    scheduler = TestScheduler()
    results = scheduler.start(lambda: reactivex.never().pipe(idle_timeout(30)))
    [message] = results.messages
    assert message.time == 230
    assert isinstance(message.value.exception, IdleTimeout)


def test_does_not_fire_while_items_keep_coming() -> None:
    scheduler = TestScheduler()
    times = list(range(240, 900, 40))
    source = scheduler.create_hot_observable(*[on_next(t, t) for t in times], on_completed(920))
    results = scheduler.start(lambda: source.pipe(idle_timeout(50)))
    assert results.messages == [*[on_next(t, t) for t in times], on_completed(920)]


def test_fires_exactly_seconds_after_the_last_item() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(on_next(245, 1), on_next(290, 2), on_next(333, 3))
    results = scheduler.start(lambda: source.pipe(idle_timeout(50)))
    assert results.messages[-1].time == 383
    assert isinstance(results.messages[-1].value.exception, IdleTimeout)


def test_one_timer_serves_many_items() -> None:
    """Items only record their time: the number of timers does not grow with them."""
    scheduler = CountingScheduler()
    source = scheduler.create_hot_observable(*[on_next(t, t) for t in range(201, 700)])
    results = scheduler.start(lambda: source.pipe(idle_timeout(100)))
    assert len([m for m in results.messages if m.value.kind == "N"]) == 499
    assert results.messages[-1].time == 799
    # The hot observable and start() schedule their own actions; idle_timeout adds one
    # timer per period of 100, not one per item.
    baseline = CountingScheduler()
    baseline_source = baseline.create_hot_observable(*[on_next(t, t) for t in range(201, 700)])
    baseline.start(lambda: baseline_source)
    assert scheduler.relative - baseline.relative <= 8


def test_source_errors_and_completions_pass_on_and_stop_the_timer() -> None:
    scheduler = TestScheduler()
    lost = ConnectionLost(1011)
    source = scheduler.create_cold_observable(on_next(10, "a"), on_error(20, lost))
    results = scheduler.start(lambda: source.pipe(idle_timeout(50)))
    assert results.messages == [on_next(210, "a"), on_error(220, lost)]

    scheduler = TestScheduler()
    done = scheduler.create_cold_observable(on_completed(20))
    results = scheduler.start(lambda: done.pipe(idle_timeout(50)))
    assert results.messages == [on_completed(220)]


def test_its_own_scheduler_wins_over_the_subscribers() -> None:
    own = TestScheduler()
    other = TestScheduler()
    errors: list[Exception] = []
    reactivex.never().pipe(idle_timeout(10, scheduler=own)).subscribe(
        on_error=errors.append, scheduler=other
    )
    other.advance_to(100)
    assert errors == []
    own.advance_to(10)
    assert len(errors) == 1 and isinstance(errors[0], IdleTimeout)


def test_reconnect_replaces_an_idle_source() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(10, "hello"))
    backoff = Backoff(initial=5.0, jitter=0.0)
    results = scheduler.start(
        lambda: source.pipe(idle_timeout(40), reconnect(backoff)), disposed=400
    )
    assert [(s.subscribe, s.unsubscribe) for s in source.subscriptions][:3] == [
        (200, 250),
        (255, 305),
        (310, 360),
    ]
    # Each subscription stayed up 50 > reset_after (30): every retry is a first one.
    assert [m.time for m in results.messages] == [210, 265, 320, 375]


@pytest.mark.parametrize(
    ("seconds", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("5", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_bad_seconds_are_rejected(seconds: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="seconds"):
        idle_timeout(seconds)


# ---------------------------------------------------------------------------- loopback


async def blackhole_replaced(detector: Callable[[str], reactivex.Observable[Any]]) -> None:
    """Blackhole the link; check the detector ends it and a new link carries messages."""
    async with (
        DemoExchange(interval=0.002) as exchange,
        FaultProxy("127.0.0.1", exchange.port) as proxy,
    ):
        got = Recorder()
        failures: list[Exception] = []
        events: list[Event] = []

        def on_event(event: Event) -> None:
            events.append(event)
            # The dead link was detected and replacing it waits for the backoff:
            # forward again so that the new link goes through.
            proxy.blackhole(False)
            got.notify()

        feed = detector(proxy.url()).pipe(
            ops.do_action(on_error=failures.append),
            reconnect(Backoff(initial=0.05, jitter=0.0), on_event=on_event),
        )
        subscription = feed.subscribe(got.on_next, got.on_error)
        try:
            await got.wait_until(lambda: len(got.items) >= 5)
            proxy.blackhole()
            loop = asyncio.get_running_loop()
            started = loop.time()
            await got.wait_until(lambda: bool(events) or got.error is not None)
            detected_after = loop.time() - started
            before = len(got.items)
            await got.wait_until(lambda: len(got.items) >= before + 5 or got.error is not None)
            assert exchange.accepted == 2
        finally:
            subscription.dispose()
        assert got.error is None
        assert events == [Retrying(1, 0.05)]
        assert len(failures) == 1
        assert detected_after < 2.0
        # Messages resumed on the new link, later in the global sequence.
        assert got.items[-1]["seq"] > got.items[before - 1]["seq"]
        await exchange.wait_for(lambda: exchange.open_connections == 0)
    return None


async def test_idle_timeout_replaces_a_blackholed_link(transport: str) -> None:
    failures: list[Exception] = []

    def detector(url: str) -> reactivex.Observable[Any]:
        # A short close_timeout: the closing handshake cannot cross the blackhole.
        return rxws.connect(url, close_timeout=0.2, transport=transport).pipe(
            idle_timeout(0.3), ops.do_action(on_error=failures.append)
        )

    await blackhole_replaced(detector)
    assert len(failures) == 1 and isinstance(failures[0], IdleTimeout)


async def test_keepalive_pings_end_a_blackholed_link(transport: str) -> None:
    failures: list[Exception] = []

    def detector(url: str) -> reactivex.Observable[Any]:
        return rxws.connect(
            url, ping_interval=0.2, ping_timeout=0.2, close_timeout=0.2, transport=transport
        ).pipe(ops.do_action(on_error=failures.append))

    await blackhole_replaced(detector)
    [failure] = failures
    assert isinstance(failure, ConnectionLost)
    assert not isinstance(failure, IdleTimeout)
