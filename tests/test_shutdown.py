"""Shutting down at any moment leaves nothing behind.

Four moments: while the opening handshake hangs (``SilentServer``), while a rotation's
new connection is coming up, while reconnecting waits out its backoff, and while a
``send`` waits for a connection. At each, one of: ``client.close()``, compat's
``exit()``, disposing subscriptions, or cancelling the task that iterates an
``AsyncStream`` (or that awaits ``send``).

Then the moment after: a connection that was let go and is still closing (waiting
for the peer's answer to its close frame) when the program ends, as ``asyncio.run``
does when ``main()`` returns or is stopped: every task still running is cancelled
again.

Afterwards: no task and no socket left (the suite's conftest), no asyncio ERROR log
("Task was destroyed but it is pending!", "Task exception was never retrieved", ...),
no ERROR log of rxws, and every call returned promptly rather than after a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
import reactivex
import websockets
from support import until

import rxws
from rxws import ops
from rxws.compat import AsyncWebsocketStreamInterface
from rxws.events import Event, Retrying
from rxws.limits import Limits
from rxws.protocols import Binance
from rxws.source import connection_is_open
from rxws.testing import DemoExchange, FaultProxy, Recorder, SilentServer

STATES = ["connecting", "rotating", "backing_off", "send_waiting"]
PROMPT = 1.0  # seconds: every shutdown here must take less


@pytest.fixture(autouse=True)
async def clean_logs(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """Fail on any ERROR record, asyncio's complaints about lost tasks included."""
    caplog.set_level(logging.WARNING)
    yield
    gc.collect()  # a pending task dropped on the floor is reported when collected
    await asyncio.sleep(0)
    records = [r for when in ("setup", "call", "teardown") for r in caplog.get_records(when)]
    bad = [
        f"{r.name}: {r.getMessage()}"
        for r in records
        if r.levelno >= logging.ERROR or "was destroyed" in r.getMessage()
    ]
    assert not bad, "\n".join(bad)


async def promptly(awaitable: Awaitable[Any]) -> Any:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await asyncio.wait_for(awaitable, 5.0)
    took = loop.time() - started
    assert took < PROMPT, f"took {took:.2f} s"
    return result


class Scene:
    """A server, and a way to bring a feed on it into one of the :data:`STATES`."""

    def __init__(self, state: str, transport: str) -> None:
        self.state = state
        self.transport = transport
        self.stack = contextlib.AsyncExitStack()
        self.exchange: DemoExchange | None = None
        self.silent: SilentServer | None = None
        self.gate = asyncio.Event()  # never set: a rotation's on_open hangs on it
        self.opens = 0
        self.events: list[Event] = []

    async def __aenter__(self) -> Scene:
        if self.state in ("connecting", "send_waiting"):
            self.silent = await self.stack.enter_async_context(SilentServer())
        else:
            drop = 0 if self.state == "backing_off" else None
            self.exchange = await self.stack.enter_async_context(DemoExchange(drop_after=drop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()

    @property
    def url(self) -> str:
        if self.silent is not None:
            return self.silent.url
        assert self.exchange is not None
        return self.exchange.url

    async def on_open(self, connection: Any) -> None:
        self.opens += 1
        if self.opens > 1:
            await self.gate.wait()  # the rotation's new connection never comes up

    def options(self) -> dict[str, Any]:
        """Connect options that produce the state."""
        options: dict[str, Any] = {"transport": self.transport, "open_timeout": 30.0}
        if self.state == "rotating":
            options["on_open"] = self.on_open
        return options

    def backoff(self) -> rxws.Backoff:
        return rxws.Backoff(initial=30.0, jitter=0.0)

    def record(self, event: Event) -> None:
        self.events.append(event)

    async def reached(self) -> None:
        """Wait until the feed is in the state."""
        if self.silent is not None:
            silent = self.silent
            await until(lambda: silent.accepted >= 1)
        elif self.state == "rotating":
            await until(lambda: self.opens >= 2)
        else:
            await until(lambda: any(isinstance(e, Retrying) for e in self.events))
        await asyncio.sleep(0.02)

    async def released(self) -> None:
        """Wait (briefly) until the server sees every connection of the feed closed.

        The servers are still up: a client that left a socket behind, half-way through
        a handshake say, would show here, not only when the server goes away.
        """
        if self.silent is not None:
            silent = self.silent
            await promptly(until(lambda: silent.open_connections == 0))
        else:
            exchange = self.exchange
            assert exchange is not None
            await promptly(exchange.wait_for(lambda: exchange.open_connections == 0))

    def client(self) -> rxws.WebSocketClient:
        options = self.options()
        if self.state == "rotating":
            options.update(rotate_every=0.05, dedupe=lambda m: m.get("seq"))
        client = rxws.WebSocketClient(self.url, backoff=self.backoff(), **options)
        client.status.subscribe(self.record)
        return client

    def pipeline(self) -> reactivex.Observable[Any]:
        """The client's layers without the client: connect, rotate, reconnect."""
        options = self.options()
        feed = rxws.connect(self.url, on_event=self.record, **options)
        if self.state == "rotating":
            feed = feed.pipe(ops.rotate(every=0.05, dedupe=lambda m: m.get("seq")))
        return feed.pipe(ops.reconnect(self.backoff(), on_event=self.record))


async def consume(stream: rxws.AsyncStream[Any], got: list[Any]) -> None:
    async with stream:
        async for msg in stream:
            got.append(msg)


# ---------------------------------------------------------------------- WebSocketClient


@pytest.mark.parametrize("state", STATES)
async def test_client_close(state: str, transport: str) -> None:
    async with Scene(state, transport) as scene:
        client = scene.client()
        rec = Recorder()
        client.messages.subscribe(rec)
        await client.start()
        sending = asyncio.create_task(client.send("hello", timeout=30.0))
        if state != "send_waiting":
            sending.cancel()
        await scene.reached()
        await promptly(client.close())
        if state == "send_waiting":
            with pytest.raises(rxws.StreamClosed):
                await promptly(sending)
        else:
            with contextlib.suppress(asyncio.CancelledError):
                await sending
        assert rec.completed and rec.error is None
        assert client.closed and client.present is None
        await scene.released()
        await promptly(client.close())  # idempotent


@pytest.mark.parametrize("state", STATES)
async def test_client_cancel_the_iterating_task(state: str, transport: str) -> None:
    async with Scene(state, transport) as scene:
        client = scene.client()
        stream = client.stream([{"s": "BTCUSDT"}]).pipe(rxws.to_async_iterable())
        got: list[Any] = []
        consumer = asyncio.create_task(consume(stream, got))
        sending = asyncio.create_task(client.send("hello", timeout=30.0))
        await client.start()
        await scene.reached()
        tasks = [consumer] if sending.done() else [consumer, sending]  # connected: sent
        for task in tasks:
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await promptly(task)
        assert sending.cancelled() == (scene.state != "rotating")
        assert stream.closed  # 'async with' closed it: its subscription is gone
        await promptly(client.close())
        await scene.released()


@pytest.mark.parametrize("state", STATES)
async def test_client_dispose_streams_then_close(state: str, transport: str) -> None:
    async with Scene(state, transport) as scene:
        client = scene.client()
        subscribe = {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}
        unsubscribe = {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 2}
        subs = [
            client.multiplex(subscribe, unsubscribe, [{"s": "BTCUSDT"}]).subscribe(Recorder()),
            client.stream([{"s": "ETHUSDT"}]).subscribe(Recorder()),
            client.messages.subscribe(Recorder()),
        ]
        await client.start()
        await scene.reached()
        for sub in subs:
            sub.dispose()
        await asyncio.sleep(0.02)
        await promptly(client.close())
        await scene.released()


# ---------------------------------------------------------------------- the bare pipeline


@pytest.mark.parametrize("state", ["connecting", "rotating", "backing_off"])
async def test_pipeline_dispose(state: str, transport: str) -> None:
    async with Scene(state, transport) as scene:
        rec = Recorder()
        sub = scene.pipeline().subscribe(rec)
        await scene.reached()
        sub.dispose()
        await scene.released()
        assert not rec.done


@pytest.mark.parametrize("state", ["connecting", "rotating", "backing_off"])
async def test_pipeline_cancel_the_iterating_task(state: str, transport: str) -> None:
    async with Scene(state, transport) as scene:
        stream = scene.pipeline().pipe(rxws.to_async_iterable())
        got: list[Any] = []
        consumer = asyncio.create_task(consume(stream, got))
        await scene.reached()
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await promptly(consumer)
        assert stream.closed
        await scene.released()


async def test_stream_dropped_while_connecting_is_released(transport: str) -> None:
    """A cold connect's AsyncStream whose iterating task is cancelled, no 'async with'."""
    async with SilentServer() as server:
        stream = rxws.connect(server.url, transport=transport).pipe(rxws.to_async_iterable())

        async def bare() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(bare())
        await until(lambda: server.accepted >= 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not stream.closed  # nobody closed it: the connection attempt still runs
        await asyncio.sleep(0.05)
        assert server.open_connections == 1
        await stream.aclose()  # ... until it is closed
        await promptly(until(lambda: server.open_connections == 0))


# ---------------------------------------------------------------------- compat exit()


class Legacy(AsyncWebsocketStreamInterface):
    """An old-style subclass whose connections come from ``websockets.connect``."""

    client_options = {"backoff": rxws.Backoff(initial=30.0, jitter=0.0)}

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.created = 0
        super().__init__()

    async def _create_ws(self) -> Any:
        self.created += 1
        scene = self.scene
        if scene.state == "backing_off":
            raise ConnectionRefusedError("the exchange is down")
        if scene.state == "rotating" and self.created > 1:
            await scene.gate.wait()  # the replacement never comes up
        return await websockets.connect(scene.url, open_timeout=30.0)

    async def _when2create_new_ws(self) -> None:
        if self.scene.state != "rotating":
            await asyncio.Event().wait()

    async def _parse_raw_data(self, raw_data: Any) -> Any:
        return json.loads(raw_data)


@pytest.mark.parametrize("state", STATES)
async def test_compat_exit(state: str) -> None:
    async with Scene(state, "websockets") as scene:
        scene.state = "connecting" if state == "send_waiting" else state
        legacy = Legacy(scene)
        legacy.rotation_min_interval = 0.0
        legacy.client.status.subscribe(scene.record)
        got: list[Any] = []
        stream = legacy.stream_filter([{"s": "BTCUSDT"}])
        consumer = asyncio.create_task(consume(stream, got))
        handled: list[Any] = []

        async def handler(msg: Any) -> None:
            handled.append(msg)

        legacy.add_handler(handler)
        legacy.add_handler(handled.append)
        sending = asyncio.create_task(legacy.send({"method": "LIST_SUBSCRIPTIONS", "id": 9}))
        if state == "rotating":
            await until(lambda: legacy.created >= 2)
        elif state == "backing_off":
            await until(lambda: any(isinstance(e, Retrying) for e in scene.events))
        else:
            silent = scene.silent
            assert silent is not None
            await until(lambda: silent.accepted >= 1)
        await asyncio.sleep(0.02)
        await promptly(legacy.exit())
        await scene.released()
        await promptly(consumer)  # the async for loop ended
        if state == "rotating":
            await promptly(sending)  # it was connected: the message went out
        else:
            with pytest.raises(rxws.StreamClosed):
                await promptly(sending)
        await promptly(legacy.exit())  # idempotent


# ---------------------------------------------------------------------- cancelled while closing


class Opened:
    """``on_open`` that keeps each connection and the task it runs in."""

    def __init__(self) -> None:
        self.connections: list[Any] = []
        self.tasks: list[asyncio.Task[Any]] = []

    async def __call__(self, connection: Any) -> None:
        self.connections.append(connection)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)

    def closing(self) -> bool:
        """Whether every connection has sent its close frame (and waits for the peer)."""
        return all(not connection_is_open(c) for c in self.connections)


async def test_a_connection_cancelled_again_while_closing_drops_its_socket(
    transport: str,
) -> None:
    # README's "compose by hand" example: take(400) lets go of the feed, main() returns,
    # and asyncio.run cancels the connection's task again while it waits for the peer.
    async with DemoExchange() as exchange, FaultProxy("127.0.0.1", exchange.port) as proxy:
        opened = Opened()
        got = asyncio.Event()
        feed = rxws.connect(proxy.url(), on_open=opened, transport=transport)
        sub = feed.subscribe(lambda _: got.set())
        await asyncio.wait_for(got.wait(), 5.0)
        proxy.blackhole()  # the close frame gets no answer: closing waits for the peer
        sub.dispose()
        await until(opened.closing)
        (task,) = opened.tasks
        task.cancel()  # what asyncio.run does to every task left when main() returns
        await asyncio.wait([task])
        await promptly(until(lambda: proxy.links == 0))


async def test_a_sharded_client_stopped_while_closing_drops_every_socket(
    transport: str,
) -> None:
    # Ctrl-C while 'async with client' closes: asyncio.run cancels main() (and so the
    # close), then every task still running.
    async with (
        DemoExchange(combined=True) as exchange,
        FaultProxy("127.0.0.1", exchange.port) as proxy,
    ):
        opened = Opened()
        client = rxws.WebSocketClient(
            proxy.url(),
            subscriptions=Binance(),
            limits=Limits(streams_per_connection=2),
            on_open=opened,
            transport=transport,
        )
        await client.start()
        for i in range(6):
            client.topic(f"s{i}@trade").subscribe(lambda _: None)
        await until(lambda: client.stats.connections == 3)
        proxy.blackhole()
        closing = asyncio.create_task(client.aclose())
        await until(opened.closing)
        closing.cancel()
        for task in opened.tasks:
            task.cancel()
        await asyncio.wait([closing, *opened.tasks])
        assert closing.cancelled()
        await promptly(until(lambda: proxy.links == 0))
