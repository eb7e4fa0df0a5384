"""rxws.ops.reconnect: grammar in virtual time, then real refusals, dead ports and cuts."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler
from support import first_of_a_burst

import rxws
from rxws.backoff import Backoff
from rxws.errors import (
    CertificateError,
    ConnectionFailed,
    ConnectionLost,
    HandshakeRejected,
    IdleTimeout,
    ParseError,
    ReconnectExhausted,
)
from rxws.events import Connecting, Event, Retrying
from rxws.ops import is_retryable, reconnect
from rxws.testing import DemoExchange, FaultProxy, Recorder

on_next = ReactiveTest.on_next
on_error = ReactiveTest.on_error
on_completed = ReactiveTest.on_completed

LOST = ConnectionLost(1011, "server error")
NO_JITTER = Backoff(initial=5.0, factor=2.0, maximum=100.0, jitter=0.0, reset_after=1000.0)


def starts(source: Any) -> list[float]:
    return [s.subscribe for s in source.subscriptions]


# ---------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionFailed("ws://x/", "refused"), True),
        (ConnectionLost(1011, "boom"), True),
        (ConnectionLost(None), True),
        (IdleTimeout(5), True),
        (HandshakeRejected("ws://x/", 503), True),
        (HandshakeRejected("ws://x/", 500), True),
        (HandshakeRejected("ws://x/", 408), True),
        (HandshakeRejected("ws://x/", 429), True),
        (HandshakeRejected("ws://x/", 401), False),
        (HandshakeRejected("ws://x/", 403), False),
        (HandshakeRejected("ws://x/", 404), False),
        (CertificateError("wss://x/", "self-signed"), False),
        (ParseError(ValueError("x"), 3), False),
        (ValueError("a bug"), False),
        (KeyError("a bug"), False),
    ],
)
def test_is_retryable(error: BaseException, expected: bool) -> None:
    assert is_retryable(error) is expected


def test_is_retryable_is_exported_from_errors_and_ops() -> None:
    assert rxws.errors.is_retryable is is_retryable


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"on_complete": "stop"}, ValueError, "on_complete"),
        ({"max_attempts": 0}, ValueError, "max_attempts"),
        ({"max_attempts": 2.5}, ValueError, "max_attempts"),
        ({"max_attempts": True}, ValueError, "max_attempts"),
        ({"backoff": 5}, TypeError, "backoff"),
        ({"retryable": "yes"}, TypeError, "retryable"),
        ({"on_event": 3}, TypeError, "on_event"),
    ],
)
def test_bad_arguments_are_rejected(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        reconnect(**kwargs)


# ---------------------------------------------------------------------------- virtual time


def test_resubscribes_after_each_error_with_the_backoff_delays() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(10, "a"), on_error(20, LOST))
    events: list[tuple[float, Event]] = []

    def record(event: Event) -> None:
        events.append((scheduler.clock, event))

    results = scheduler.start(lambda: source.pipe(reconnect(NO_JITTER, on_event=record)))

    # Each subscription errors 20 after it starts; waits are 5, 10, 20, 40, 80, 100, 100...
    assert starts(source) == [200, 225, 255, 295, 355, 455, 575, 695, 815, 935]
    assert [m.time for m in results.messages] == [t + 10 for t in starts(source)]
    assert all(m.value.kind == "N" for m in results.messages)
    assert events[:4] == [
        (220, Retrying(1, 5.0)),
        (245, Retrying(2, 10.0)),
        (275, Retrying(3, 20.0)),
        (315, Retrying(4, 40.0)),
    ]
    # The wait pending at 1000 was cancelled with the pipeline.
    scheduler.advance_to(5000)
    assert len(source.subscriptions) == 10


def test_gives_up_after_max_attempts_with_reconnect_exhausted() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_error(20, LOST))
    results = scheduler.start(lambda: source.pipe(reconnect(NO_JITTER, max_attempts=3)))

    assert starts(source) == [200, 225, 255]
    [message] = results.messages
    assert message.time == 275
    error = message.value.exception
    assert isinstance(error, ReconnectExhausted)
    assert error.attempts == 3
    assert error.last_error is LOST
    assert error.__cause__ is LOST


def test_max_attempts_one_means_no_retry() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_error(20, LOST))
    results = scheduler.start(lambda: source.pipe(reconnect(NO_JITTER, max_attempts=1)))
    assert starts(source) == [200]
    assert isinstance(results.messages[0].value.exception, ReconnectExhausted)


def test_non_retryable_error_is_passed_on_at_once() -> None:
    scheduler = TestScheduler()
    rejected = HandshakeRejected("ws://x/", 401)
    source = scheduler.create_cold_observable(on_next(5, "a"), on_error(20, rejected))
    events: list[Event] = []
    results = scheduler.start(lambda: source.pipe(reconnect(NO_JITTER, on_event=events.append)))
    assert results.messages == [on_next(205, "a"), on_error(220, rejected)]
    assert starts(source) == [200]
    assert events == []


def test_a_custom_retryable_policy_is_used() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_error(20, ValueError("flaky")))
    results = scheduler.start(
        lambda: source.pipe(
            reconnect(NO_JITTER, retryable=lambda e: isinstance(e, ValueError), max_attempts=2)
        )
    )
    assert starts(source) == [200, 225]
    assert isinstance(results.messages[0].value.exception, ReconnectExhausted)


def test_attempts_reset_after_a_healthy_period() -> None:
    """A subscription that stayed up reset_after starts the count again."""
    scheduler = TestScheduler()
    # Up 50 ticks each time, with no message at all: still counts as healthy.
    source = scheduler.create_cold_observable(on_error(50, LOST))
    backoff = Backoff(initial=5.0, factor=2.0, maximum=100.0, jitter=0.0, reset_after=40.0)
    events: list[Event] = []
    results = scheduler.start(
        lambda: source.pipe(reconnect(backoff, max_attempts=2, on_event=events.append))
    )
    # Never exhausted: every attempt was the first of its run.
    assert results.messages == []
    assert events and all(e == Retrying(1, 5.0) for e in events)
    assert starts(source) == [200 + 55 * k for k in range(15)]


def test_attempts_keep_counting_when_subscriptions_are_short() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_error(50, LOST))
    backoff = Backoff(initial=5.0, factor=2.0, maximum=100.0, jitter=0.0, reset_after=60.0)
    events: list[Event] = []
    scheduler.start(lambda: source.pipe(reconnect(backoff, on_event=events.append)))
    assert [e.attempt for e in events if isinstance(e, Retrying)][:4] == [1, 2, 3, 4]


def test_completion_reconnects_by_default_and_counts_as_an_attempt() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(10, "a"), on_completed(20))
    results = scheduler.start(lambda: source.pipe(reconnect(NO_JITTER, max_attempts=3)))
    assert starts(source) == [200, 225, 255]
    assert [m.time for m in results.messages[:-1]] == [210, 235, 265]
    error = results.messages[-1].value.exception
    assert isinstance(error, ReconnectExhausted)
    assert isinstance(error.last_error, ConnectionLost)
    assert error.last_error.code == 1000


def test_completion_passes_on_with_on_complete_complete() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(10, "a"), on_completed(20))
    results = scheduler.start(lambda: source.pipe(reconnect(NO_JITTER, on_complete="complete")))
    assert results.messages == [on_next(210, "a"), on_completed(220)]
    assert starts(source) == [200]


def test_disposing_during_a_wait_cancels_it() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_error(20, LOST))
    slow = Backoff(initial=100.0, maximum=100.0, jitter=0.0)
    results = scheduler.start(lambda: source.pipe(reconnect(slow)), disposed=300)
    assert starts(source) == [200]
    assert results.messages == []
    scheduler.advance_to(2000)
    assert starts(source) == [200]


def test_state_is_per_subscription() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_error(20, LOST))
    pipeline = source.pipe(reconnect(NO_JITTER, max_attempts=2))
    first = scheduler.create_observer()
    second = scheduler.create_observer()
    pipeline.subscribe(first, scheduler=scheduler)
    scheduler.advance_to(100)
    pipeline.subscribe(second, scheduler=scheduler)
    scheduler.advance_to(1000)
    assert [m.time for m in first.messages] == [45]
    assert [m.time for m in second.messages] == [145]


def test_a_synchronous_source_does_not_recurse() -> None:
    scheduler = TestScheduler()
    subscriptions = 0

    def subscribe(observer: Any, _: Any = None) -> Any:
        nonlocal subscriptions
        subscriptions += 1
        observer.on_error(LOST)
        return reactivex.disposable.Disposable()

    source: reactivex.Observable[Any] = reactivex.create(subscribe)
    quick = Backoff(initial=0.0, jitter=0.0, reset_after=1000.0)
    results = scheduler.start(lambda: source.pipe(reconnect(quick, max_attempts=2000)))
    assert subscriptions == 2000
    assert isinstance(results.messages[0].value.exception, ReconnectExhausted)


def test_each_retry_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_error(20, LOST))
    with caplog.at_level(logging.INFO, logger="rxws.ops"):
        scheduler.start(lambda: source.pipe(reconnect(NO_JITTER, max_attempts=3)))
    lines = [r for r in caplog.records if r.name == "rxws.ops"]
    assert len(lines) == 3
    assert all(r.levelno == logging.INFO for r in lines)
    assert "close code 1011" in lines[0].getMessage()


def test_a_raising_on_event_callback_does_not_break_reconnect() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_error(20, LOST))

    def broken(event: Event) -> None:
        raise RuntimeError("callback bug")

    results = scheduler.start(
        lambda: source.pipe(reconnect(NO_JITTER, max_attempts=2, on_event=broken))
    )
    assert starts(source) == [200, 225]
    assert isinstance(results.messages[0].value.exception, ReconnectExhausted)


def test_subscribing_without_a_loop_or_scheduler_says_what_to_do() -> None:
    errors: list[Exception] = []
    reactivex.never().pipe(reconnect()).subscribe(on_error=errors.append)
    assert errors and "asyncio" in str(errors[0])


# ---------------------------------------------------------------------------- loopback


def record_events(sink: list[tuple[float, Event]], collector: Recorder) -> Callable[[Event], None]:
    loop = asyncio.get_running_loop()

    def record(event: Event) -> None:
        sink.append((loop.time(), event))
        collector.notify()

    return record


async def test_two_refused_handshakes_then_messages_flow(transport: str) -> None:
    backoff = Backoff(initial=0.05, factor=2.0, jitter=0.0)
    async with DemoExchange(interval=0.002) as exchange:
        exchange.refuse(503, 503)
        got = Recorder()
        retries: list[tuple[float, Event]] = []
        connects: list[tuple[float, Event]] = []
        feed = rxws.connect(
            exchange.url, on_event=record_events(connects, got), transport=transport
        ).pipe(reconnect(backoff, on_event=record_events(retries, got)))
        subscription = feed.subscribe(got.on_next, got.on_error, got.on_completed)
        try:
            await got.wait_until(lambda: len(got.items) >= 5 or got.done)
        finally:
            subscription.dispose()
        assert got.error is None
        assert [e for _, e in retries] == [Retrying(1, 0.05), Retrying(2, 0.1)]
        assert exchange.handshakes == 3
        assert exchange.accepted == 1
        starts = [t for t, e in connects if isinstance(e, Connecting)]
        assert len(starts) == 3
        gaps = [starts[1] - starts[0], starts[2] - starts[1]]
        # Each gap is the backoff delay plus one refused handshake on loopback.
        assert 0.05 * 0.9 <= gaps[0] < 0.05 + 0.5
        assert 0.1 * 0.9 <= gaps[1] < 0.1 + 0.5
        assert all(m["e"] == "trade" for m in got.items)


async def test_nothing_arrives_after_a_dispose_from_inside_on_next(transport: str) -> None:
    # reconnect hands messages straight to the subscriber's handler (its source's own
    # auto-detach observer is the guard): a subscriber that lets go inside on_next
    # gets nothing more of the burst the link holds.
    async with DemoExchange(interval=60.0) as exchange:
        feed = rxws.connect(exchange.url, transport=transport).pipe(reconnect())
        assert await first_of_a_burst(feed, exchange) == [{"seq": 0}]
        assert exchange.accepted == 1


async def test_401_is_not_retried(transport: str) -> None:
    async with DemoExchange() as exchange:
        exchange.refuse(401)
        got = Recorder()
        retries: list[tuple[float, Event]] = []
        feed = rxws.connect(exchange.url, transport=transport).pipe(
            reconnect(Backoff(initial=0.01), on_event=record_events(retries, got))
        )
        subscription = feed.subscribe(got.on_next, got.on_error, got.on_completed)
        try:
            await got.wait_until(lambda: got.done)
        finally:
            subscription.dispose()
        assert isinstance(got.error, HandshakeRejected)
        assert got.error.status == 401
        assert "401" in str(got.error)
        assert exchange.handshakes == 1
        assert retries == []


async def test_max_attempts_against_a_dead_port(transport: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    got = Recorder()
    connects: list[tuple[float, Event]] = []
    feed = rxws.connect(
        f"ws://127.0.0.1:{port}/", on_event=record_events(connects, got), transport=transport
    ).pipe(reconnect(Backoff(initial=0.01, jitter=0.0), max_attempts=3))
    subscription = feed.subscribe(got.on_next, got.on_error, got.on_completed)
    try:
        await got.wait_until(lambda: got.done)
    finally:
        subscription.dispose()
    assert isinstance(got.error, ReconnectExhausted)
    assert got.error.attempts == 3
    assert isinstance(got.error.last_error, ConnectionFailed)
    assert len([e for _, e in connects if isinstance(e, Connecting)]) == 3


async def test_a_run_of_failures_warns_with_the_redacted_url_and_the_last_error(
    caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = rxws.WebSocketClient(
        f"ws://127.0.0.1:{port}/feed?key=s3cret",
        backoff=Backoff(initial=0.005, maximum=0.005, jitter=0.0),
        transport=transport,
    )
    with caplog.at_level(logging.INFO, logger="rxws"):
        async with client:
            while client.stats.reconnects < 12:
                await asyncio.sleep(0.01)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The third failure in a row, then every tenth: not one line per attempt.
    assert [r.getMessage().split(" ")[0] for r in warnings][:2] == ["3", "10"]
    assert len(warnings) <= 1 + client.stats.reconnects // 10
    text = warnings[0].getMessage()
    assert "attempts in a row failed; still retrying" in text
    assert f"could not connect to ws://127.0.0.1:{port}/feed?key=***" in text
    assert "s3cret" not in caplog.text


async def test_a_cut_link_is_replaced_and_messages_resume(transport: str) -> None:
    async with (
        DemoExchange(interval=0.002) as exchange,
        FaultProxy("127.0.0.1", exchange.port) as proxy,
    ):
        got = Recorder()
        retries: list[tuple[float, Event]] = []
        errors: list[Exception] = []
        feed = rxws.connect(proxy.url(), transport=transport).pipe(
            ops.do_action(on_error=errors.append),
            reconnect(Backoff(initial=0.05, jitter=0.0), on_event=record_events(retries, got)),
        )
        subscription = feed.subscribe(got.on_next, got.on_error, got.on_completed)
        try:
            await got.wait_until(lambda: len(got.items) >= 10)
            loop = asyncio.get_running_loop()
            cut_at = loop.time()
            proxy.cut()
            await got.wait_until(lambda: bool(retries))
            before = len(got.items)
            await got.wait_until(lambda: len(got.items) >= before + 10 or got.done)
        finally:
            subscription.dispose()
        assert got.error is None
        assert len(errors) == 1 and isinstance(errors[0], ConnectionLost)
        assert [e for _, e in retries] == [Retrying(1, 0.05)]
        assert retries[0][0] - cut_at < 1.0
        assert exchange.accepted == 2
        assert proxy.accepted == 2
        seqs = [m["seq"] for m in got.items]
        assert seqs[-1] > seqs[before - 1]
