"""rxws.compat: subclasses of the old AsyncWebsocketStreamInterface run on rxws.

The subclasses below are written the way the old README writes them; the servers are
real websockets servers (and a tiny HTTP endpoint) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

import rxws
from rxws.compat import AsyncWebsocketStreamInterface

Script = Callable[[int, ServerConnection], Awaitable[None]]


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Short polling wait with a deadline, for states no event announces."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.002)


async def take(stream: Any, count: int, timeout: float = 3.0) -> list[Any]:
    """The next ``count`` items of an async iterator."""

    async def run() -> list[Any]:
        got = []
        async for item in stream:
            got.append(item)
            if len(got) == count:
                break
        return got

    return await asyncio.wait_for(run(), timeout)


class FrameServer:
    """A websockets server on loopback that runs ``script(index, ws)`` per connection.

    It records every connection, what each one received, and when each one closed (the
    close code the client sent), so tests can check what the client really did.
    """

    def __init__(
        self,
        script: Script | None = None,
        process_request: Callable[[ServerConnection, Request], Response | None] | None = None,
    ) -> None:
        self.script = script
        self.process_request = process_request
        self.connections: list[ServerConnection] = []
        self.paths: list[str] = []
        self.received: list[tuple[int, str | bytes]] = []
        self.closed: dict[int, int | None] = {}  # index -> close code received
        self._server: Server | None = None

    async def __aenter__(self) -> FrameServer:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            compression=None,
            process_request=self.process_request,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def send(self, index: int, msg: Any) -> Awaitable[None]:
        """Send ``msg`` (JSON-encoded unless a str) on connection ``index``."""
        return self.connections[index].send(msg if isinstance(msg, str) else json.dumps(msg))

    async def _handle(self, ws: ServerConnection) -> None:
        index = len(self.connections)
        self.connections.append(ws)
        self.paths.append(ws.request.path if ws.request else "")
        script = asyncio.create_task(self.script(index, ws)) if self.script else None
        try:
            async for msg in ws:
                self.received.append((index, msg))
        except ConnectionClosed:
            pass
        finally:
            rcvd = ws.protocol.close_rcvd
            self.closed[index] = rcvd.code if rcvd is not None else None
            if script is not None:
                script.cancel()
                await asyncio.gather(script, return_exceptions=True)


# ---------------------------------------------------------------------- the README's subclass


class ReadmeWs(AsyncWebsocketStreamInterface):
    """A subclass written as the old README shows it."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__()

    async def _create_ws(self) -> Any:
        ws = await websockets.connect(self.url)
        return ws

    async def _when2create_new_ws(self) -> None:
        await asyncio.sleep(20 * 3600)

    async def _parse_raw_data(self, raw_data: Any) -> Any:
        msg = json.loads(raw_data)
        return msg


def compat_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rxws.compat"]


async def test_the_readme_filter_example_keeps_and_drops_the_readme_messages() -> None:
    frames = [
        {"a": 1, "c": 2},  # kept: {'a': 1}
        {"a": 2, "c": 2},  # dropped
        {"b": 2, "c": 3, "d": 4},  # kept: {'b': 2, 'c': 3}
        {"b": 2, "c": 4, "d": 4},  # dropped
    ]
    go = asyncio.Event()

    async def script(index: int, ws: ServerConnection) -> None:
        await go.wait()
        for frame in frames:
            await ws.send(json.dumps(frame))

    async with FrameServer(script) as server:
        ws = ReadmeWs(server.url())
        stream = ws.stream_filter([{"a": 1}, {"b": 2, "c": 3}])
        everything = ws.stream_filter()
        await ws.wait_enter_handing_ws()
        go.set()
        assert await take(everything, 4) == frames  # every frame arrived ...
        assert len(stream) == 2  # ... and the filtered stream holds exactly the two kept
        assert await take(stream, 2) == [{"a": 1, "c": 2}, {"b": 2, "c": 3, "d": 4}]
        closing = asyncio.create_task(stream.close())  # the README's way of closing
        await closing
        await everything.close()
        assert stream.closed and everything.closed
        stream.close()  # idempotent, and needs no await
        await ws.exit()


async def test_a_filter_that_is_not_a_list_of_dicts_is_refused() -> None:
    async with FrameServer() as server:
        ws = ReadmeWs(server.url())
        with pytest.raises(TypeError):
            ws.stream_filter({"a": 1})  # type: ignore[arg-type]
        await ws.exit()


async def test_sync_and_async_handlers_get_every_message_in_order_and_a_raising_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = 200
    go = asyncio.Event()

    async def script(index: int, ws: ServerConnection) -> None:
        await go.wait()
        for i in range(count):
            await ws.send(json.dumps({"i": i}))

    sync_got: list[Any] = []
    async_got: list[Any] = []
    raising_sync_got: list[Any] = []
    raising_async_got: list[Any] = []

    def on_msg(msg: Any) -> None:
        sync_got.append(msg)

    async def on_msg_async(msg: Any) -> None:
        await asyncio.sleep(0)
        async_got.append(msg)

    def raising(msg: Any) -> None:
        raising_sync_got.append(msg)
        if msg["i"] % 50 == 7:
            raise ValueError(f"sync handler failed on {msg['i']}")

    async def raising_async(msg: Any) -> None:
        raising_async_got.append(msg)
        await asyncio.sleep(0)
        if msg["i"] % 50 == 9:
            raise KeyError(f"async handler failed on {msg['i']}")

    async with FrameServer(script) as server:
        ws = ReadmeWs(server.url())
        with caplog.at_level(logging.ERROR, logger="rxws.compat"):
            for handler in (on_msg, on_msg_async, raising, raising_async):
                ws.add_handler(handler)
            ws.add_handler(on_msg)  # the same handler twice is one handler, as before
            await ws.wait_enter_handing_ws()
            go.set()
            await wait_until(
                lambda: min(map(len, (sync_got, async_got, raising_sync_got, raising_async_got)))
                >= count
            )
        expected = [{"i": i} for i in range(count)]
        for got in (sync_got, async_got, raising_sync_got, raising_async_got):
            assert got == expected
        # No deep copy: every handler got the very same object.
        for a, b, c, d in zip(sync_got, async_got, raising_sync_got, raising_async_got):
            assert a is b is c is d
        errors = [r for r in compat_records(caplog) if r.exc_info]
        sync_errors = [r for r in errors if isinstance(r.exc_info[1], ValueError)]  # type: ignore[index]
        async_errors = [r for r in errors if isinstance(r.exc_info[1], KeyError)]  # type: ignore[index]
        assert [str(r.exc_info[1]) for r in sync_errors] == [  # type: ignore[index]
            f"sync handler failed on {i}" for i in (7, 57, 107, 157)
        ]
        assert len(async_errors) == 4
        assert all("stays subscribed" in r.getMessage() for r in errors)

        ws.remove_handler(on_msg)
        await server.send(0, {"i": count})
        await wait_until(lambda: len(async_got) > count)
        assert len(sync_got) == count  # removed: it got nothing more
        await ws.exit()


async def test_send_reaches_the_server_and_present_ws_is_the_open_connection() -> None:
    async with FrameServer() as server:
        ws = ReadmeWs(server.url())
        await ws.send('{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}')
        present = ws.present_ws
        assert isinstance(present, ClientConnection)
        assert present.state is State.OPEN
        await ws.send({"method": "LIST_SUBSCRIPTIONS", "id": 2})  # serialised as JSON
        await present.send("direct")  # present_ws is usable as the connection itself
        await wait_until(lambda: len(server.received) == 3)
        assert server.received == [
            (0, '{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}'),
            (0, '{"method":"LIST_SUBSCRIPTIONS","id":2}'),
            (0, "direct"),
        ]
        await ws.exit()
        assert ws.present_ws is None
        with pytest.raises(rxws.StreamClosed):
            await ws.send("too late")


async def test_a_burst_of_5000_messages_reaches_an_async_for_consumer_whole() -> None:
    count = 5000
    go = asyncio.Event()

    async def script(index: int, ws: ServerConnection) -> None:
        await go.wait()
        for i in range(count):
            await ws.send(json.dumps({"e": "trade", "i": i}))

    async with FrameServer(script) as server:
        ws = ReadmeWs(server.url())
        stream = ws.stream_filter([{"e": "trade"}])
        seen: list[Any] = []
        ws.add_handler(seen.append)
        await ws.wait_enter_handing_ws()
        go.set()
        # Nobody reads the stream until the whole burst has arrived: far more than the
        # 20 queued messages after which the old class closed a stream silently.
        await wait_until(lambda: len(seen) == count)
        assert len(stream) == count
        got = [msg["i"] async for msg in _until(stream, count)]
        assert got == list(range(count))
        assert stream.dropped == 0
        await stream.close()
        await ws.exit()


async def _until(stream: Any, count: int) -> Any:
    n = 0
    async for item in stream:
        yield item
        n += 1
        if n == count:
            return


async def test_a_stream_not_read_raises_stream_overflow_after_stream_maxsize_messages() -> None:
    class SmallStreams(ReadmeWs):
        stream_maxsize = 5

    go = asyncio.Event()

    async def script(index: int, ws: ServerConnection) -> None:
        await go.wait()
        for i in range(12):
            await ws.send(json.dumps({"i": i}))

    async with FrameServer(script) as server:
        ws = SmallStreams(server.url())
        stream = ws.stream_filter()
        seen: list[Any] = []
        ws.add_handler(seen.append)
        await ws.wait_enter_handing_ws()
        go.set()
        await wait_until(lambda: len(seen) == 12)
        # What was buffered is delivered, then the overflow is raised: nothing is lost
        # without a trace.
        got = []
        with pytest.raises(rxws.StreamOverflow) as raised:
            async for msg in stream:
                got.append(msg["i"])
        assert got == [0, 1, 2, 3, 4]
        assert raised.value.maxsize == 5
        assert stream.dropped == 1  # the sixth; the stream let go of the feed right there
        # The other consumers were not affected.
        assert [m["i"] for m in seen] == list(range(12))
        await ws.exit()


async def test_a_clean_server_close_is_followed_by_a_reconnect() -> None:
    async def script(index: int, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"conn": index}))
        if index == 0:
            await ws.close(1000, "bye")

    async with FrameServer(script) as server:
        ws = ReadmeWs(server.url())
        stream = ws.stream_filter()
        assert await take(stream, 2, timeout=5.0) == [{"conn": 0}, {"conn": 1}]
        assert len(server.connections) == 2
        await wait_until(lambda: ws.present_ws is not None)
        assert ws.present_ws.state is State.OPEN
        assert ws.client.stats.reconnects >= 1
        await ws.exit()


async def test_exit_closes_the_connection_ends_streams_and_handlers_and_leaves_no_task() -> None:
    go = asyncio.Event()

    async def script(index: int, ws: ServerConnection) -> None:
        await go.wait()
        await ws.send(json.dumps({"x": 1}))

    handled: list[Any] = []

    async def slow_handler(msg: Any) -> None:
        handled.append(msg)
        await asyncio.sleep(3600)  # still busy when exit() comes

    async with FrameServer(script) as server:
        ws = ReadmeWs(server.url())
        stream = ws.stream_filter()
        ws.add_handler(slow_handler)
        ws.add_handler(print)
        consumer_got: list[Any] = []

        async def consume() -> str:
            async for msg in stream:
                consumer_got.append(msg)
            return "ended"

        consumer = asyncio.create_task(consume())
        await ws.wait_enter_handing_ws()
        connection = ws.present_ws
        go.set()
        await wait_until(lambda: bool(handled) and bool(consumer_got))

        await ws.exit()
        assert await asyncio.wait_for(consumer, 1.0) == "ended"  # async for finished
        assert connection.state is State.CLOSED
        await wait_until(lambda: 0 in server.closed)
        assert server.closed == {0: 1000}  # the server saw a clean close from the client
        assert ws.present_ws is None
        me = asyncio.current_task()
        left = [
            t
            for t in asyncio.all_tasks()
            if t is not me and not t.done() and "/rxws/" in t.get_coro().cr_code.co_filename  # type: ignore[union-attr]
        ]
        assert left == []
        assert not ws._tasks
        await ws.exit()  # idempotent
        with pytest.raises(rxws.StreamClosed):
            ws.stream_filter()
        with pytest.raises(rxws.StreamClosed):
            ws.add_handler(print)
