"""rxws.bridge: Observable -> AsyncStream (async for) and async iterable -> Observable."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest
import reactivex
from reactivex import operators as op
from reactivex.scheduler import NewThreadScheduler, TimeoutScheduler
from reactivex.subject import Subject
from support import CountingSource
from support import until as wait_until
from websockets.asyncio.server import ServerConnection, serve

import rxws
from rxws.bridge import AsyncStream, from_async_iterable, to_async_iterable
from rxws.events import Failed
from rxws.testing import DemoExchange, Recorder


async def collect(stream: AsyncIterator[Any], timeout: float = 5.0) -> list[Any]:
    async def run() -> list[Any]:
        return [item async for item in stream]

    return await asyncio.wait_for(run(), timeout)


def waiting(stream: AsyncStream[Any]) -> bool:
    """Whether a consumer is parked in the stream's ``__anext__``."""
    waiter = stream._sink.waiter
    return waiter is not None and not waiter.done()


# ---------------------------------------------------------------------- arguments


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, "10", True, None])
def test_bad_maxsize_is_a_clear_value_error(maxsize: Any) -> None:
    with pytest.raises(ValueError, match=r"maxsize must be an int >= 1.*got"):
        to_async_iterable(maxsize=maxsize)
    with pytest.raises(ValueError, match="maxsize"):
        AsyncStream(reactivex.empty(), maxsize=maxsize)


@pytest.mark.parametrize("overflow", ["drop", "ERROR", None, 1])
def test_bad_overflow_is_a_clear_value_error(overflow: Any) -> None:
    with pytest.raises(ValueError, match=r"overflow must be one of 'error', 'drop_oldest'"):
        to_async_iterable(overflow=overflow)


async def test_attributes_reflect_the_arguments() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable(maxsize=7, overflow="drop_newest"))
    try:
        assert isinstance(stream, AsyncStream)
        assert (stream.maxsize, stream.overflow, stream.dropped) == (7, "drop_newest", 0)
        open_before = stream.closed
        assert len(stream) == 0
        subject.on_next(1)
        subject.on_next(2)
        assert len(stream) == 2
        assert "maxsize=7" in repr(stream) and "open" in repr(stream)
    finally:
        stream.close()
    assert not open_before
    assert stream.closed
    assert "closed" in repr(stream)


def test_defaults_match_the_design() -> None:
    stream = reactivex.empty().pipe(to_async_iterable())
    assert (stream.maxsize, stream.overflow) == (10_000, "error")


@pytest.mark.skipif(
    not hasattr(rxws, "to_async_iterable"),
    reason="rxws/__init__.py does not export rxws.bridge yet",
)
def test_the_bridge_is_exported_at_the_top_level() -> None:
    assert rxws.to_async_iterable is to_async_iterable
    assert rxws.from_async_iterable is from_async_iterable
    assert rxws.AsyncStream is AsyncStream
    assert {"to_async_iterable", "from_async_iterable", "AsyncStream"} <= set(rxws.__all__)


# ---------------------------------------------------------------------- order and completeness


async def test_every_item_in_order_then_completion_ends_iteration() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable())
    for i in range(1000):
        subject.on_next(i)
    subject.on_completed()
    assert await collect(stream) == list(range(1000))
    assert stream.dropped == 0


async def test_consumer_waiting_on_an_empty_stream_wakes_for_each_item() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable(maxsize=1))
    consumer = asyncio.create_task(collect(stream))
    loop = asyncio.get_running_loop()
    total = 2000

    def push(i: int) -> None:
        if i == total:
            subject.on_completed()
            return
        subject.on_next(i)
        loop.call_soon(push, i + 1)

    await wait_until(lambda: waiting(stream))
    loop.call_soon(push, 0)
    # maxsize=1 with overflow="error": the consumer must keep pace item by item.
    assert await consumer == list(range(total))
    assert stream.dropped == 0


def test_created_outside_a_running_loop_with_a_synchronous_source() -> None:
    stream = reactivex.of(1, 2, 3).pipe(to_async_iterable())
    assert len(stream) == 3
    assert asyncio.run(collect(stream)) == [1, 2, 3]


async def test_messages_from_a_real_connection_arrive_whole_and_in_order() -> None:
    async with DemoExchange(batch=10) as exchange:
        stream = rxws.connect(exchange.url).pipe(op.take(200), to_async_iterable())
        messages = await collect(stream)
        assert len(messages) == 200
        seqs = [m["seq"] for m in messages]
        assert seqs == list(range(seqs[0], seqs[0] + 200))
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_closing_a_stream_over_a_connection_closes_the_socket() -> None:
    async with DemoExchange(batch=5) as exchange:
        async with rxws.connect(exchange.url).pipe(to_async_iterable()) as stream:
            seen = []
            async for message in stream:
                seen.append(message["seq"])
                if len(seen) == 20:
                    break
            assert exchange.open_connections == 1
        assert stream.closed
        assert len(stream) == 0
        assert seen == list(range(seen[0], seen[0] + 20))
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_a_burst_far_beyond_the_old_limit_reaches_the_consumer_whole() -> None:
    subject: Subject[dict[str, int]] = Subject()
    stream = subject.pipe(to_async_iterable())
    for i in range(5000):
        subject.on_next({"i": i})
    subject.on_completed()
    assert [m["i"] for m in await collect(stream)] == list(range(5000))


# ---------------------------------------------------------------------- overflow policies


def overflow_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "rxws.bridge" and r.levelno == logging.WARNING and "overflow" in r.message
    ]


async def test_overflow_error_fails_at_once_says_so_and_unsubscribes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = CountingSource()
    stream = source.observable.pipe(to_async_iterable(maxsize=3, overflow="error"))
    with caplog.at_level(logging.WARNING, logger="rxws.bridge"):
        for i in range(3):
            source.subject.on_next(i)
        assert overflow_warnings(caplog) == []
        source.subject.on_next(3)  # does not fit: the stream fails now
        [warning] = overflow_warnings(caplog)
    assert "buffer of 3 items" in warning and "3 buffered items are dropped" in warning
    source.subject.on_next(4)  # after unsubscribing: goes nowhere
    assert len(stream) == 0
    assert stream.dropped == 4  # the three buffered and the one that did not fit
    assert source.disposed == 1
    assert not source.subject.observers

    # The very next read raises: the consumer does not first read the stale buffer.
    with pytest.raises(rxws.StreamOverflow) as caught:
        await stream.__anext__()
    assert caught.value.maxsize == 3
    assert "buffer of 3 items" in str(caught.value) and "maxsize" in str(caught.value)
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_overflow_error_in_async_for() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable(maxsize=2))
    for i in range(3):
        subject.on_next(i)
    seen = []
    with pytest.raises(rxws.StreamOverflow):
        async for item in stream:
            seen.append(item)
    assert seen == []


async def test_overflow_error_on_a_real_connection_fails_at_once_and_closes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with DemoExchange(batch=50, interval=0.001) as exchange:
        with caplog.at_level(logging.WARNING, logger="rxws.bridge"):
            stream = rxws.connect(exchange.url).pipe(to_async_iterable(maxsize=20))
            # Nobody reads: the 21st message fails the stream and lets go of the socket.
            await wait_until(lambda: stream.dropped > 0, timeout=5.0)
            assert len(overflow_warnings(caplog)) == 1
        assert len(stream) == 0 and stream.dropped == 21
        started = asyncio.get_running_loop().time()
        with pytest.raises(rxws.StreamOverflow):
            await stream.__anext__()
        assert asyncio.get_running_loop().time() - started < 0.1
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_overflow_drop_oldest_keeps_the_newest_items() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable(maxsize=3, overflow="drop_oldest"))
    for i in range(10):
        subject.on_next(i)
    assert stream.dropped == 7
    assert subject.observers, "drop_oldest must stay subscribed"
    subject.on_completed()
    assert await collect(stream) == [7, 8, 9]


async def test_overflow_drop_newest_keeps_the_oldest_items() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable(maxsize=3, overflow="drop_newest"))
    for i in range(10):
        subject.on_next(i)
    assert stream.dropped == 7
    assert await stream.__anext__() == 0
    subject.on_next(10)  # room for one again
    subject.on_completed()
    assert await collect(stream) == [1, 2, 10]
    assert stream.dropped == 7


async def test_overflow_unbounded_keeps_everything() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable(maxsize=3, overflow="unbounded"))
    for i in range(100):
        subject.on_next(i)
    assert len(stream) == 100
    subject.on_completed()
    assert await collect(stream) == list(range(100))
    assert stream.dropped == 0


def test_overflow_during_a_synchronous_subscribe() -> None:
    # Outside a running loop, a synchronous source fills the stream while subscribing.
    stream = reactivex.from_iterable(range(10)).pipe(to_async_iterable(maxsize=4))
    assert len(stream) == 0 and stream.dropped == 5
    seen = []

    async def consume() -> None:
        async for item in stream:
            seen.append(item)

    with pytest.raises(rxws.StreamOverflow):
        asyncio.run(consume())
    assert seen == []


async def test_drops_of_a_clients_streams_count_in_its_stats() -> None:
    async with (
        DemoExchange(batch=20, interval=0.002) as exchange,
        rxws.WebSocketClient(exchange.ws_url) as client,
    ):
        subscribe = {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}
        unsubscribe = {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 2}
        streams = [
            client.messages.pipe(to_async_iterable(maxsize=3, overflow="drop_oldest")),
            client.stream([{"s": "BTCUSDT"}]).pipe(
                to_async_iterable(maxsize=2, overflow="drop_newest")
            ),
            client.multiplex(subscribe, unsubscribe, [{"s": "BTCUSDT"}]).pipe(
                to_async_iterable(maxsize=4, overflow="drop_oldest")
            ),
        ]
        try:
            await wait_until(lambda: all(s.dropped >= 10 for s in streams), timeout=5.0)
            # Counted together on the loop's thread: equal at any moment.
            assert client.stats.dropped == sum(s.dropped for s in streams)
        finally:
            for stream in streams:
                stream.close()
        # A plain Observable's stream counts only its own drops.
        dropped = client.stats.dropped
        plain = reactivex.from_iterable(range(10)).pipe(
            to_async_iterable(maxsize=1, overflow="drop_newest")
        )
        await wait_until(lambda: plain.dropped == 9)
        plain.close()
        assert client.stats.dropped == dropped


# ---------------------------------------------------------------------- a client never started


async def test_a_client_never_started_records_that_its_feed_gave_up(transport: str) -> None:
    # The client is used only through a stream: start() is never called.
    async with DemoExchange() as exchange:
        exchange.refuse(401)
        status = Recorder()
        client = rxws.WebSocketClient(exchange.url, transport=transport, send_timeout=5.0)
        client.status.subscribe(status)
        try:
            with pytest.raises(rxws.HandshakeRejected) as caught:
                await collect(client.stream([{"s": "BTCUSDT"}]).pipe(to_async_iterable()))
            failure = caught.value
            assert failure.status == 401
            assert isinstance(status.items[-1], Failed) and status.items[-1].error is failure
            assert "failed" in repr(client)

            # send() does not wait its timeout for a connection that will never come.
            with pytest.raises(rxws.NotConnected) as not_sent:
                await asyncio.wait_for(client.send("hello"), 1.0)
            assert not_sent.value.__cause__ is failure

            # Later streams get the error; nothing reconnects after a 401.
            late = Recorder()
            client.stream().subscribe(late)
            assert late.error is failure
            with pytest.raises(rxws.HandshakeRejected):
                await collect(client.messages.pipe(to_async_iterable()))
            assert exchange.handshakes == 1
            assert [type(e) for e in status.items].count(Failed) == 1
        finally:
            await client.close()


# ---------------------------------------------------------------------- schedulers and threads


async def test_interval_upstream_runs_on_the_loop_and_yields() -> None:
    # No scheduler given: the stream's AsyncIOScheduler runs the timer on the loop.
    threads: list[int] = []
    source = reactivex.interval(0.02).pipe(
        op.do_action(lambda _: threads.append(threading.get_ident())), op.take(3)
    )
    assert await collect(source.pipe(to_async_iterable()), timeout=2.0) == [0, 1, 2]
    assert set(threads) == {threading.get_ident()}


async def test_buffer_with_time_over_a_quiet_client_stream_yields_without_traffic() -> None:
    # The server sends one burst and then nothing: no frame, no ping wakes the loop.
    async def burst(ws: ServerConnection) -> None:
        for i in range(5):
            await ws.send(json.dumps({"i": i}))
        await ws.wait_closed()

    async with serve(burst, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with rxws.WebSocketClient(f"ws://127.0.0.1:{port}", ping_interval=None) as client:
            threads: list[int] = []
            batches = client.stream([{"i": 3}, {"i": 4}, {"i": 0}]).pipe(
                op.buffer_with_time(0.1),
                op.do_action(lambda _: threads.append(threading.get_ident())),
                op.filter(bool),
                to_async_iterable(),
            )
            async with batches:
                got: list[Any] = []
                while len(got) < 3:
                    got += await asyncio.wait_for(batches.__anext__(), 2.0)
            assert got == [{"i": 0}, {"i": 3}, {"i": 4}]
            assert set(threads) == {threading.get_ident()}


async def test_items_errors_and_completion_from_other_threads_reach_the_loop() -> None:
    # A scheduler of reactivex's own that runs each timer on a thread of its own.
    timer_thread = TimeoutScheduler()
    loop_thread = threading.get_ident()
    delivered: list[int] = []
    items = reactivex.interval(0.01, scheduler=timer_thread).pipe(
        op.do_action(lambda _: delivered.append(threading.get_ident())), op.take(5)
    )
    assert await collect(items.pipe(to_async_iterable()), timeout=2.0) == [0, 1, 2, 3, 4]
    assert loop_thread not in delivered  # they really came from other threads

    failing = reactivex.timer(0.01, scheduler=timer_thread).pipe(
        op.flat_map(lambda _: reactivex.throw(ValueError("from a thread")))
    )
    with pytest.raises(ValueError, match="from a thread"):
        await collect(failing.pipe(to_async_iterable()), timeout=2.0)

    # Order holds across the hand-over, with a consumer slower than the producer.
    many = reactivex.interval(0.001, scheduler=timer_thread).pipe(op.take(200))
    async with many.pipe(to_async_iterable()) as stream:
        got = []
        async for item in stream:
            got.append(item)
            if item % 50 == 0:
                await asyncio.sleep(0.01)
    assert got == list(range(200))


@pytest.mark.parametrize(
    ("overflow", "kept"), [("drop_oldest", list(range(45, 50))), ("drop_newest", list(range(5)))]
)
async def test_drop_policies_hold_for_items_from_another_thread(
    overflow: Any, kept: list[int]
) -> None:
    # Fifty items pushed from a thread of reactivex's into a buffer of five, unread.
    source = reactivex.from_iterable(range(50), scheduler=NewThreadScheduler())
    stream = source.pipe(to_async_iterable(maxsize=5, overflow=overflow))
    await wait_until(lambda: stream._sink.done)
    assert stream.dropped == 45
    assert await collect(stream) == kept


async def test_overflow_error_from_another_thread_fails_at_once() -> None:
    source = reactivex.from_iterable(range(50), scheduler=NewThreadScheduler())
    stream = source.pipe(to_async_iterable(maxsize=5))
    await wait_until(lambda: stream._sink.done)
    assert len(stream) == 0 and stream.dropped == 6
    with pytest.raises(rxws.StreamOverflow):
        await stream.__anext__()


# ---------------------------------------------------------------------- errors and completion


async def test_an_upstream_error_is_raised_after_the_buffered_items() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable())
    subject.on_next(1)
    subject.on_next(2)
    subject.on_error(ValueError("boom"))
    seen = []
    with pytest.raises(ValueError, match="boom"):
        async for item in stream:
            seen.append(item)
    assert seen == [1, 2]
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_an_error_wakes_a_waiting_consumer() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable())
    consumer = asyncio.create_task(collect(stream))
    await wait_until(lambda: waiting(stream))
    subject.on_error(rxws.ConnectionLost(1011, "gone"))
    with pytest.raises(rxws.ConnectionLost):
        await consumer


async def test_completion_wakes_a_waiting_consumer() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable())
    consumer = asyncio.create_task(collect(stream))
    await wait_until(lambda: waiting(stream))
    subject.on_next(5)
    subject.on_completed()
    assert await consumer == [5]


async def test_a_real_connection_error_is_raised_from_the_iterator() -> None:
    async with DemoExchange(batch=5, drop_after=10) as exchange:
        stream = rxws.connect(exchange.url).pipe(to_async_iterable())
        seen = []
        with pytest.raises(rxws.ConnectionLost) as caught:
            async for message in stream:
                seen.append(message)
        assert caught.value.code == 1011
        assert len(seen) == 10


# ---------------------------------------------------------------------- closing


async def test_close_from_another_task_ends_a_waiting_consumer() -> None:
    source = CountingSource()
    stream = source.observable.pipe(to_async_iterable())
    consumer = asyncio.create_task(collect(stream))
    source.subject.on_next("a")
    await wait_until(lambda: waiting(stream))
    stream.close()
    assert await consumer == ["a"]
    assert source.disposed == 1
    assert not source.subject.observers


async def test_aclose_from_another_task_ends_a_waiting_consumer() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable())
    consumer = asyncio.create_task(collect(stream))
    await wait_until(lambda: waiting(stream))
    await stream.aclose()
    assert await consumer == []


async def test_close_drops_the_buffer_and_disposes_the_upstream() -> None:
    source = CountingSource()
    stream = source.observable.pipe(to_async_iterable())
    assert source.subscribed == 1
    for i in range(5):
        source.subject.on_next(i)
    stream.close()
    assert len(stream) == 0
    assert source.disposed == 1
    assert not source.subject.observers
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    assert await collect(stream) == []


async def test_close_and_aclose_are_idempotent_and_close_is_awaitable() -> None:
    source = CountingSource()
    stream = source.observable.pipe(to_async_iterable())
    result = stream.close()
    stream.close()
    await stream.aclose()
    await stream.close()  # the AsyncWebsocketStreamInterface spelling
    await result
    await stream.aclose()
    assert stream.closed
    assert source.disposed == 1


async def test_close_after_an_error_hides_the_pending_error() -> None:
    subject: Subject[int] = Subject()
    stream = subject.pipe(to_async_iterable())
    subject.on_error(ValueError("boom"))
    stream.close()
    assert await collect(stream) == []


async def test_async_with_closes_on_exit_even_on_error() -> None:
    source = CountingSource()
    with pytest.raises(KeyError):
        async with source.observable.pipe(to_async_iterable()) as stream:
            source.subject.on_next(1)
            assert await stream.__anext__() == 1
            raise KeyError("consumer failed")
    assert stream.closed
    assert source.disposed == 1


async def test_a_never_closed_stream_warns_and_lets_go_of_its_source() -> None:
    source = CountingSource()
    stream = source.observable.pipe(to_async_iterable())
    source.subject.on_next(1)
    with pytest.warns(ResourceWarning, match="unclosed <AsyncStream"):
        del stream
        gc.collect()
    assert source.disposed == 1
    assert not source.subject.observers


async def test_a_forgotten_stream_over_a_connection_releases_the_socket() -> None:
    async with DemoExchange() as exchange:
        streams = [rxws.connect(exchange.url).pipe(to_async_iterable())]
        await wait_until(lambda: len(streams[0]) >= 2)
        with pytest.warns(ResourceWarning, match="unclosed"):
            streams.clear()
            gc.collect()
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_a_finished_or_closed_stream_does_not_warn() -> None:
    subject: Subject[int] = Subject()
    completed = subject.pipe(to_async_iterable())
    subject.on_completed()
    closed = reactivex.never().pipe(to_async_iterable())
    closed.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del completed, closed
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# ---------------------------------------------------------------------- consumers


async def test_a_second_concurrent_consumer_is_refused() -> None:
    subject: Subject[int] = Subject()
    async with subject.pipe(to_async_iterable()) as stream:
        first = asyncio.create_task(stream.__anext__())
        await wait_until(lambda: waiting(stream))
        with pytest.raises(RuntimeError, match="one consumer"):
            await stream.__anext__()
        subject.on_next(1)
        assert await first == 1


async def test_a_cancelled_consumer_leaves_the_stream_usable() -> None:
    subject: Subject[int] = Subject()
    async with subject.pipe(to_async_iterable()) as stream:
        first = asyncio.create_task(stream.__anext__())
        await wait_until(lambda: waiting(stream))
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        subject.on_next(1)  # the cancelled waiter must not break on_next
        subject.on_next(2)
        assert await stream.__anext__() == 1
        assert await stream.__anext__() == 2


# ---------------------------------------------------------------------- from_async_iterable


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i


async def test_from_async_iterable_round_trip() -> None:
    stream = from_async_iterable(numbers(50)).pipe(to_async_iterable())
    assert await collect(stream) == list(range(50))


async def test_from_async_iterable_completes() -> None:
    rec = Recorder()
    from_async_iterable(numbers(3)).subscribe(rec)
    await rec.wait_done()
    assert rec.items == [0, 1, 2]
    assert rec.completed and rec.error is None


async def test_from_async_iterable_is_cold_for_a_reiterable_source() -> None:
    class Countdown:
        def __aiter__(self) -> AsyncIterator[int]:
            return numbers(3)

    source = from_async_iterable(Countdown())
    assert await collect(source.pipe(to_async_iterable())) == [0, 1, 2]
    assert await collect(source.pipe(to_async_iterable())) == [0, 1, 2]


async def test_from_async_iterable_forwards_errors() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise OSError("feed broke")

    rec = Recorder()
    from_async_iterable(failing()).subscribe(rec)
    await rec.wait_done()
    assert rec.items == [1, 2]
    assert isinstance(rec.error, OSError) and str(rec.error) == "feed broke"
    assert not rec.completed


def infinite(started: asyncio.Event, cleaned: asyncio.Event) -> AsyncIterator[int]:
    async def gen() -> AsyncIterator[int]:
        started.set()
        try:
            i = 0
            while True:
                await asyncio.sleep(0.001)
                yield i
                i += 1
        finally:
            await asyncio.sleep(0)  # cleanup that awaits must be able to run
            cleaned.set()

    return gen()


async def test_dispose_cancels_an_infinite_generator_and_runs_its_finally() -> None:
    started, cleaned = asyncio.Event(), asyncio.Event()
    rec = Recorder()
    subscription = from_async_iterable(infinite(started, cleaned)).subscribe(rec)
    await rec.wait_for_count(5)
    subscription.dispose()
    await asyncio.wait_for(cleaned.wait(), 2)
    count = len(rec.items)
    assert not rec.done
    await asyncio.sleep(0.01)
    assert len(rec.items) == count, "items arrived after dispose"


async def test_dispose_from_inside_on_next_closes_the_generator() -> None:
    started, cleaned = asyncio.Event(), asyncio.Event()
    stream = from_async_iterable(infinite(started, cleaned)).pipe(op.take(3), to_async_iterable())
    assert await collect(stream) == [0, 1, 2]
    await asyncio.wait_for(cleaned.wait(), 2)


async def test_closing_a_bridged_stream_closes_the_inner_stream() -> None:
    subject: Subject[int] = Subject()
    inner = subject.pipe(to_async_iterable())
    rec = Recorder()
    subscription = from_async_iterable(inner).subscribe(rec)
    subject.on_next(1)
    await rec.wait_for_count(1)
    subscription.dispose()
    await wait_until(lambda: inner.closed)
    assert not subject.observers


async def test_an_observer_raising_in_on_next_gets_on_error_and_stops_the_iteration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started, cleaned = asyncio.Event(), asyncio.Event()
    errors: list[Exception] = []

    def on_next(item: int) -> None:
        raise ZeroDivisionError("subscriber bug")

    from_async_iterable(infinite(started, cleaned)).subscribe(on_next, errors.append)
    await asyncio.wait_for(cleaned.wait(), 2)
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)
    assert "raised in on_next" in caplog.text


def test_from_async_iterable_rejects_a_plain_iterable() -> None:
    with pytest.raises(TypeError, match=r"reactivex\.from_iterable"):
        from_async_iterable([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs an async iterable"):
        from_async_iterable(42)  # type: ignore[arg-type]


def test_from_async_iterable_outside_a_loop_errors_clearly() -> None:
    errors: list[Exception] = []
    from_async_iterable(numbers(1)).subscribe(on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "running asyncio event loop" in str(errors[0])
