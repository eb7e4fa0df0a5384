"""rxws.compat: subclasses of the old AsyncWebsocketStreamInterface run on rxws.

The subclasses below are written the way the old README writes them; the servers are
real websockets servers (and a tiny HTTP endpoint) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any

import pytest
import websockets
from support import until as wait_until
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

import rxws
from rxws.compat import AsyncWebsocketStreamInterface

Script = Callable[[int, ServerConnection], Coroutine[Any, Any, None]]


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
        _ = stream.close()  # idempotent, and needs no await
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
                lambda: (
                    min(map(len, (sync_got, async_got, raising_sync_got, raising_async_got)))
                    >= count
                )
            )
        expected = [{"i": i} for i in range(count)]
        for got in (sync_got, async_got, raising_sync_got, raising_async_got):
            assert got == expected
        # No deep copy: every handler got the very same object.
        for a, b, c, d in zip(
            sync_got, async_got, raising_sync_got, raising_async_got, strict=True
        ):
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


async def test_a_stream_not_read_fails_with_stream_overflow_after_stream_maxsize_messages() -> None:
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
        # The overflow is raised at once, and what it dropped is counted: nothing is lost
        # without a trace.
        got = []
        with pytest.raises(rxws.StreamOverflow) as raised:
            async for msg in stream:
                got.append(msg["i"])
        assert got == []
        assert raised.value.maxsize == 5
        # The five buffered and the sixth; the stream let go of the feed right there.
        assert stream.dropped == ws.client.stats.dropped == 6
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


# ---------------------------------------------------------------------- rotation


class RotatingWs(ReadmeWs):
    """The README subclass, with a ``_when2create_new_ws`` the test can release."""

    def __init__(self, url: str) -> None:
        self.rotate_signals: list[asyncio.Event] = []
        super().__init__(url)

    async def _when2create_new_ws(self) -> None:
        signal = asyncio.Event()
        self.rotate_signals.append(signal)
        await signal.wait()


async def hello(index: int, ws: ServerConnection) -> None:
    await ws.send(json.dumps({"conn": index}))


def numbered(count: int) -> Script:
    """A script sending ``{"i": 0}`` to ``{"i": count - 1}`` on each connection."""

    async def script(index: int, ws: ServerConnection) -> None:
        for i in range(count):
            await ws.send(json.dumps({"i": i}))

    return script


async def test_the_connection_is_replaced_when_when2create_new_ws_returns() -> None:
    async with FrameServer(hello) as server:
        ws = RotatingWs(server.url())
        stream = ws.stream_filter()
        assert await take(stream, 1) == [{"conn": 0}]
        first = ws.present_ws
        assert len(ws.rotate_signals) == 1  # called for the first connection
        ws.rotate_signals[0].set()

        # A new connection opens and takes over; the old one is really closed.
        assert await take(stream, 1) == [{"conn": 1}]
        await wait_until(lambda: 0 in server.closed)
        assert server.closed[0] == 1000
        assert first.state is State.CLOSED
        assert ws.present_ws is not first
        assert ws.present_ws.state is State.OPEN
        assert ws.client.stats.rotations == 1
        assert len(server.connections) == 2 and 1 not in server.closed

        # Messages flow on the new connection, and the hook runs again for it.
        await server.send(1, {"after": True})
        assert await take(stream, 1) == [{"after": True}]
        await wait_until(lambda: len(ws.rotate_signals) == 2)
        await ws.exit()
        await wait_until(lambda: 1 in server.closed)


async def test_a_when2create_new_ws_that_raises_is_logged_and_rotates_without_a_storm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Failing(ReadmeWs):
        rotation_min_interval = 0.1

        async def _when2create_new_ws(self) -> None:
            raise RuntimeError("cannot tell")

    async with FrameServer(hello) as server:
        with caplog.at_level(logging.WARNING, logger="rxws.compat"):
            ws = Failing(server.url())
            stream = ws.stream_filter()
            assert await take(stream, 3) == [{"conn": 0}, {"conn": 1}, {"conn": 2}]
            await asyncio.sleep(0.3)
            await ws.exit()
        # Paced by rotation_min_interval: a handful of connections, not hundreds.
        assert 3 <= len(server.connections) <= 10
        failures = [r for r in compat_records(caplog) if "_when2create_new_ws raised" in r.message]
        assert failures and isinstance(failures[0].exc_info[1], RuntimeError)  # type: ignore[index]


# ---------------------------------------------------------------------- a user-data stream


class ListenKeyExchange:
    """A REST endpoint that hands out listen keys, and a websocket at /ws/<listenKey>.

    The HTTP side is a bare ``asyncio.start_server``: each request gets a fresh
    60-character key as ``{"listenKey": ...}``. The websocket side refuses unknown keys.
    """

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.ws = FrameServer(process_request=self._check_key)
        self._http: asyncio.Server | None = None

    async def __aenter__(self) -> ListenKeyExchange:
        self._http = await asyncio.start_server(self._serve_key, "127.0.0.1", 0)
        await self.ws.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.ws.__aexit__(None, None, None)
        assert self._http is not None
        self._http.close()
        await self._http.wait_closed()

    @property
    def rest_port(self) -> int:
        assert self._http is not None
        port: int = self._http.sockets[0].getsockname()[1]
        return port

    async def _serve_key(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"GET /fapi/v1/listenKey ")
            key = secrets.token_hex(30)
            self.keys.append(key)
            body = json.dumps({"listenKey": key}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    def _check_key(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.removeprefix("/ws/") not in self.keys:
            return connection.respond(404, "unknown listen key\n")
        return None

    async def expire(self, index: int) -> None:
        """Push Binance's listenKeyExpired event on connection ``index``."""
        key = self.ws.paths[index].removeprefix("/ws/")
        await self.ws.send(index, {"e": "listenKeyExpired", "E": 1, "listenKey": key})


async def fetch_listen_key(rest_port: int, api_key: str) -> str:
    """A raw HTTP GET for a listen key, as a user-data client does before each connect."""
    reader, writer = await asyncio.open_connection("127.0.0.1", rest_port)
    try:
        writer.write(
            f"GET /fapi/v1/listenKey HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"X-MBX-APIKEY: {api_key}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status, _, rest = response.partition(b"\r\n")
    assert status == b"HTTP/1.1 200 OK", status
    key: str = json.loads(rest.partition(b"\r\n\r\n")[2])["listenKey"]
    return key


class UserDataWs(AsyncWebsocketStreamInterface):
    """In the style of the old README's BinanceFapiAsyncWs (listen key over HTTP)."""

    def __init__(self, ws_baseurl: str, rest_port: int, api_key: str) -> None:
        self.ws_baseurl = ws_baseurl
        self.rest_port = rest_port
        self.api_key = api_key
        super().__init__()

    async def _generate_listenkey(self) -> str:
        return await fetch_listen_key(self.rest_port, self.api_key)

    async def _create_ws(self) -> Any:
        ws = await websockets.connect(self.ws_baseurl + "/ws/" + await self._generate_listenkey())
        return ws

    async def _when2create_new_ws(self) -> None:
        listenKeyExpired_stream = self.stream_filter([{"e": "listenKeyExpired"}])

        async def read_listenKeyExpired_stream(listenKeyExpired_stream: Any) -> None:
            async for _news in listenKeyExpired_stream:
                try:
                    return
                finally:
                    asyncio.create_task(listenKeyExpired_stream.close())  # noqa: RUF006

        read_listenKeyExpired_stream_task = asyncio.create_task(
            read_listenKeyExpired_stream(listenKeyExpired_stream)
        )
        # Every 20 hours, or when the server says the listen key expired. (Python 3.11's
        # asyncio.wait takes tasks only, and the tasks must not outlive the hook.)
        sleep_task = asyncio.create_task(asyncio.sleep(20 * 3600))
        try:
            await asyncio.wait(
                [read_listenKeyExpired_stream_task, sleep_task], return_when="FIRST_COMPLETED"
            )
        finally:
            sleep_task.cancel()
            read_listenKeyExpired_stream_task.cancel()
            await listenKeyExpired_stream.close()
        logging.getLogger("test.userdata").debug("Time to update ws connection.")

    async def _parse_raw_data(self, raw_data: Any) -> Any:
        msg = json.loads(raw_data)
        return msg


class UserDataUrlWs(UserDataWs):
    """The same, with ``_create_ws`` returning the URL: rxws opens it (redacted logs)."""

    async def _create_ws(self) -> Any:
        return self.ws_baseurl + "/ws/" + await self._generate_listenkey()


def records_with(caplog: pytest.LogCaptureFixture, secrets_: list[str]) -> list[str]:
    """The captured lines (from any logger but the test server's) that show a secret."""
    found = []
    for record in caplog.records:
        if record.name.startswith("websockets.server"):
            continue  # the test server's own log
        text = record.getMessage() + (record.exc_text or "")
        if any(s in text for s in secrets_):
            found.append(f"{record.name}: {text}")
    return found


def connections_are(server: FrameServer, count: int) -> Callable[[], bool]:
    return lambda: len(server.connections) == count


def closed(server: FrameServer, index: int) -> Callable[[], bool]:
    return lambda: index in server.closed


@pytest.mark.parametrize("cls", [UserDataWs, UserDataUrlWs], ids=["connection", "url"])
async def test_a_user_data_stream_rotates_on_listen_key_expired_with_a_fresh_key(
    cls: type[UserDataWs], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with ListenKeyExchange() as exchange:
        server = exchange.ws
        ws = cls(server.url("").rstrip("/"), exchange.rest_port, "api-key-1234")
        orders = ws.stream_filter([{"e": "ORDER_TRADE_UPDATE"}])
        await wait_until(lambda: len(server.connections) == 1)
        assert server.paths == [f"/ws/{exchange.keys[0]}"]
        await server.send(0, {"e": "ACCOUNT_UPDATE", "n": 0})  # filtered out
        await server.send(0, {"e": "ORDER_TRADE_UPDATE", "n": 1})
        assert await take(orders, 1) == [{"e": "ORDER_TRADE_UPDATE", "n": 1}]
        first = ws.present_ws

        for index in (1, 2):  # two expiries, two rotations
            await exchange.expire(index - 1)
            await wait_until(connections_are(server, index + 1), timeout=5.0)
            assert len(exchange.keys) == index + 1
            assert exchange.keys[index] not in exchange.keys[:index]  # a fresh listen key
            assert server.paths[index] == f"/ws/{exchange.keys[index]}"
            await server.send(index, {"e": "ORDER_TRADE_UPDATE", "n": index + 1})
            assert await take(orders, 1) == [{"e": "ORDER_TRADE_UPDATE", "n": index + 1}]
            await wait_until(closed(server, index - 1))  # the old one is closed
            assert server.closed[index - 1] == 1000

        assert first.state is State.CLOSED
        assert ws.present_ws.state is State.OPEN
        await server.send(2, {"e": "ORDER_TRADE_UPDATE", "n": 4})
        assert await take(orders, 1) == [{"e": "ORDER_TRADE_UPDATE", "n": 4}]
        assert ws.client.stats.rotations == 2
        assert len(orders) == 0
        await ws.exit()

    keys = exchange.keys
    # rxws never logs the listen key, at any level.
    rxws_lines = [line for line in records_with(caplog, keys) if line.startswith("rxws")]
    assert rxws_lines == []
    if cls is UserDataUrlWs:
        # rxws opened the connections itself: websockets' own DEBUG lines (the request
        # line, the listenKeyExpired frame) went through its redacting logger too.
        assert records_with(caplog, keys) == []
        assert any("***" in r.getMessage() for r in caplog.records if r.name == "rxws.websockets")


# ---------------------------------------------------------------------- parsing


class AwaitingParseWs(ReadmeWs):
    """A ``_parse_raw_data`` that really waits on some frames and fails on others."""

    async def _parse_raw_data(self, raw_data: Any) -> Any:
        msg = json.loads(raw_data)
        i = msg["i"]
        if i % 3 == 1:
            await asyncio.sleep(0)  # a bare yield
        if i % 7 == 2:
            await asyncio.sleep(0.001)  # waits on a future
        if i % 11 == 5:
            await asyncio.sleep(0)
            raise ValueError("bad frame, after waiting")
        if i % 13 == 6:
            raise ValueError("bad frame, at once")
        return msg


def failing_frame(i: int) -> bool:
    return i % 11 == 5 or i % 13 == 6


async def test_an_async_parse_that_really_waits_delivers_every_message_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = 600
    go = asyncio.Event()

    async def script(index: int, ws: ServerConnection) -> None:
        await go.wait()
        for i in range(count):
            await ws.send(json.dumps({"i": i}))

    async with FrameServer(script) as server:
        with caplog.at_level(logging.WARNING, logger="rxws.compat"):
            ws = AwaitingParseWs(server.url())
            stream = ws.stream_filter()
            handled: list[int] = []
            ws.add_handler(lambda msg: handled.append(msg["i"]))
            await ws.wait_enter_handing_ws()
            go.set()
            expected = [i for i in range(count) if not failing_frame(i)]
            got = [msg["i"] for msg in await take(stream, len(expected), timeout=10.0)]
        assert got == expected
        assert handled == expected
        # The last frame fails after a wait, behind the last message taken.
        await wait_until(lambda: ws.client.stats.parse_errors == count - len(expected))
        warnings_ = [r for r in compat_records(caplog) if "_parse_raw_data failed" in r.message]
        assert warnings_ and all(isinstance(r.exc_info[1], ValueError) for r in warnings_)  # type: ignore[index]
        await ws.exit()


async def test_a_plain_def_parse_works_too() -> None:
    class SyncParse(ReadmeWs):
        def _parse_raw_data(self, raw_data: Any) -> Any:
            return {"parsed": json.loads(raw_data)}

    async with FrameServer(hello) as server:
        ws = SyncParse(server.url())
        async with ws.stream_filter() as stream:
            assert await take(stream, 1) == [{"parsed": {"conn": 0}}]
        await ws.exit()


async def test_exit_while_a_parse_is_waiting_cancels_it_and_leaves_no_task() -> None:
    finished: list[str] = []

    class Stuck(ReadmeWs):
        async def _parse_raw_data(self, raw_data: Any) -> Any:
            msg = json.loads(raw_data)
            if msg["i"] == 2:
                try:
                    await asyncio.Event().wait()  # never set
                finally:
                    finished.append("cancelled")
            return msg

    async with FrameServer(numbered(5)) as server:
        ws = Stuck(server.url())
        stream = ws.stream_filter()
        assert await take(stream, 2) == [{"i": 0}, {"i": 1}]
        await wait_until(lambda: ws.client.stats.messages == 5)  # 3 and 4 wait behind 2
        assert len(stream) == 0
        await ws.exit()
        assert finished == ["cancelled"]
        assert not ws._tasks
        assert [m async for m in stream] == []  # ended


# ---------------------------------------------------------------------- async handler buffer


async def test_a_too_slow_async_handler_drops_the_oldest_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Small(ReadmeWs):
        handler_maxsize = 3

    release = asyncio.Event()
    got: list[int] = []

    async def slow(msg: Any) -> None:
        got.append(msg["i"])
        await release.wait()

    go = asyncio.Event()

    async def script(index: int, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"i": 0}))
        await go.wait()  # the handler is busy with 0 now
        for i in range(1, 10):
            await ws.send(json.dumps({"i": i}))

    async with FrameServer(script) as server:
        with caplog.at_level(logging.WARNING, logger="rxws.compat"):
            ws = Small(server.url())
            ws.add_handler(slow)
            await wait_until(lambda: got == [0])
            go.set()
            await wait_until(lambda: ws.client.stats.messages == 10)
            release.set()
            await wait_until(lambda: len(got) == 4)
        assert got == [0, 7, 8, 9]
        assert ws.client.stats.dropped == 6
        assert any("6 messages dropped" in r.message for r in compat_records(caplog))
        await ws.exit()


async def test_a_create_ws_that_raises_is_tried_again_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Flaky(ReadmeWs):
        client_options = {"backoff": rxws.Backoff(initial=0.01, maximum=0.05)}
        attempts = 0

        async def _create_ws(self) -> Any:
            self.attempts += 1
            if self.attempts <= 2:
                token = "k" * 40
                raise OSError(f"network down for ws://x/ws/{token}")
            return await super()._create_ws()

    async with FrameServer(hello) as server:
        with caplog.at_level(logging.INFO):
            ws = Flaky(server.url())
            async with ws.stream_filter() as stream:
                assert await take(stream, 1) == [{"conn": 0}]
        assert ws.attempts == 3
        assert ws.client.stats.reconnects == 2
        warned = [
            r.getMessage() for r in compat_records(caplog) if "_create_ws raised" in r.message
        ]
        assert len(warned) == 2
        assert all("OSError: network down for ws://x/ws/***" in m for m in warned)
        assert "k" * 40 not in caplog.text
        await ws.exit()


async def test_a_fatal_end_comes_after_the_frames_still_being_parsed() -> None:
    release = asyncio.Event()

    class Waiting(ReadmeWs):
        client_options = {"max_attempts": 1}  # the first drop is fatal

        async def _parse_raw_data(self, raw_data: Any) -> Any:
            msg = json.loads(raw_data)
            if msg["i"] == 2:
                await release.wait()
            return msg

    async def script(index: int, ws: ServerConnection) -> None:
        for i in range(5):
            await ws.send(json.dumps({"i": i}))
        await ws.close(1011)

    async with FrameServer(script) as server:
        ws = Waiting(server.url())
        events: list[Any] = []
        ws.client.status.subscribe(events.append)
        stream = ws.stream_filter()
        await wait_until(lambda: any(isinstance(e, rxws.events.Failed) for e in events))
        assert [m["i"] for m in await take(stream, 2)] == [0, 1]
        release.set()  # 2 is parsed now; 3 and 4 waited behind it
        got = []
        with pytest.raises(rxws.ReconnectExhausted):
            async for msg in stream:
                got.append(msg["i"])
        assert got == [2, 3, 4]
        await ws.exit()


async def test_the_migration_guides_rxws_equivalent_rotates_on_listen_key_expired() -> None:
    """The idiomatic rxws version of the user-data stream, as docs-migration shows it."""
    async with ListenKeyExchange() as exchange:
        server = exchange.ws
        base = server.url("").rstrip("/")

        async def user_data_url() -> str:
            return f"{base}/ws/{await fetch_listen_key(exchange.rest_port, 'api-key-1234')}"

        async def listen_key_expired() -> None:
            async with client.stream([{"e": "listenKeyExpired"}]).pipe(
                rxws.to_async_iterable()
            ) as expired:
                async for _ in expired:
                    return

        client = rxws.WebSocketClient(
            user_data_url, rotate_every=20 * 3600, rotate_when=listen_key_expired
        )
        seen: list[Any] = []
        async with client:
            client.messages.subscribe(seen.append)
            orders = client.stream([{"e": "ORDER_TRADE_UPDATE"}]).pipe(rxws.to_async_iterable())
            async with orders:
                await wait_until(connections_are(server, 1))
                await server.send(0, {"e": "ORDER_TRADE_UPDATE", "n": 1})
                assert await take(orders, 1) == [{"e": "ORDER_TRADE_UPDATE", "n": 1}]
                await exchange.expire(0)
                await wait_until(connections_are(server, 2), timeout=5.0)
                assert server.paths[1] == f"/ws/{exchange.keys[1]}" != server.paths[0]
                await server.send(1, {"e": "ORDER_TRADE_UPDATE", "n": 2})
                assert await take(orders, 1) == [{"e": "ORDER_TRADE_UPDATE", "n": 2}]
                await wait_until(closed(server, 0))
        assert [m.get("n") for m in seen if m["e"] == "ORDER_TRADE_UPDATE"] == [1, 2]


async def test_a_parse_with_a_timeout_inside_times_out_itself_not_the_connection() -> None:
    class Enriching(ReadmeWs):
        async def _parse_raw_data(self, raw_data: Any) -> Any:
            msg = json.loads(raw_data)
            try:
                async with asyncio.timeout(0.01):  # type: ignore[attr-defined]
                    await asyncio.sleep(10)  # a lookup that hangs
            except TimeoutError:
                msg["enriched"] = False
            return msg

    if not hasattr(asyncio, "timeout"):
        pytest.skip("asyncio.timeout is new in Python 3.11")

    async with FrameServer(numbered(3)) as server:
        ws = Enriching(server.url())
        async with ws.stream_filter() as stream:
            got = await take(stream, 3)
        assert got == [{"i": i, "enriched": False} for i in range(3)]
        assert len(server.connections) == 1 and not server.closed  # the connection lived on
        await ws.exit()


# ---------------------------------------------------------------------- parsing and dedupe


async def test_a_parse_returning_a_future_is_awaited() -> None:
    # The old class awaited whatever _parse_raw_data returned, so this worked there.
    class ExecutorParse(ReadmeWs):
        def _parse_raw_data(self, raw_data: Any) -> Any:
            return asyncio.get_running_loop().run_in_executor(None, json.loads, raw_data)

    async with FrameServer(hello) as server:
        ws = ExecutorParse(server.url())
        async with ws.stream_filter([{"conn": 0}]) as stream:
            assert await take(stream, 1) == [{"conn": 0}]
        await ws.exit()


class Ticker:
    """A server feed: one global counter ``i``, the same frames on every connection."""

    def __init__(self) -> None:
        self.connections: list[ServerConnection] = []
        self.task: asyncio.Task[None] | None = None

    async def script(self, index: int, ws: ServerConnection) -> None:
        self.connections.append(ws)
        if self.task is None:
            self.task = asyncio.create_task(self.tick())
        await asyncio.Future()  # cancelled when the connection closes

    async def tick(self) -> None:
        i = 0
        while True:
            i += 1
            frame = json.dumps({"e": "tick", "i": i})
            for ws in list(self.connections):
                if ws.state is State.OPEN:
                    await ws.send(frame)
            await asyncio.sleep(0.003)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class DedupeWs(RotatingWs):
    seen_by_dedupe: list[type]

    def __init__(self, url: str) -> None:
        self.seen_by_dedupe = []
        self.client_options = {
            "dedupe": lambda m: self.seen_by_dedupe.append(type(m)) or m.get("i"),
            "overlap_timeout": 2.0,
        }
        super().__init__(url)


async def rotate_once(make: Callable[[str], DedupeWs]) -> tuple[DedupeWs, list[int]]:
    """On a ticker: read a while, rotate, read a while more; the ``i`` values read."""
    ticker = Ticker()
    async with FrameServer(ticker.script) as server:
        ws = make(server.url())
        try:
            async with ws.stream_filter([{"e": "tick"}]) as stream:
                got = [m["i"] for m in await take(stream, 20)]
                ws.rotate_signals[0].set()
                await wait_until(lambda: ws.client.stats.rotations == 1)
                got += [m["i"] for m in await take(stream, 20)]
        finally:
            await ws.exit()
            await ticker.stop()
    return ws, got


async def test_client_options_dedupe_gets_parsed_messages_across_a_rotation() -> None:
    ws, got = await rotate_once(DedupeWs)
    assert ws.seen_by_dedupe, "the rotation never asked dedupe"
    assert set(ws.seen_by_dedupe) == {dict}  # parsed messages, not raw text frames
    assert got == list(range(got[0], got[0] + len(got)))  # nothing lost, nothing repeated


async def test_a_dedupe_that_raises_is_blamed_for_it() -> None:
    class Raising(RotatingWs):
        client_options = {"dedupe": lambda m: m["id"], "overlap_timeout": 2.0}

    ticker = Ticker()
    async with FrameServer(ticker.script) as server:
        ws = Raising(server.url())
        errors: list[Exception] = []
        ws.client.errors.subscribe(errors.append)
        try:
            async with ws.stream_filter() as stream:
                await take(stream, 5)
                ws.rotate_signals[0].set()
                # The rotation reports the error and goes on: nothing ends the feed.
                await wait_until(lambda: bool(errors))
                await take(stream, 20)
        finally:
            await ws.exit()
            await ticker.stop()
    message = str(errors[0])
    assert message.startswith("Raising.client_options['dedupe'] raised KeyError"), message
    assert "_create_ws" not in message
    assert isinstance(errors[0].__cause__, KeyError)


async def test_dedupe_with_a_parse_that_waits_compares_whole_frames(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class WaitingParse(DedupeWs):
        async def _parse_raw_data(self, raw_data: Any) -> Any:
            await asyncio.sleep(0.0005)  # a real wait: it cannot run without the loop
            return json.loads(raw_data)

    with caplog.at_level(logging.WARNING, logger="rxws.compat"):
        ws, got = await rotate_once(WaitingParse)
    assert ws.seen_by_dedupe == []  # never handed a frame
    warned = [r for r in compat_records(caplog) if "identical frames" in r.message]
    assert len(warned) == 1
    assert got == list(range(got[0], got[0] + len(got)))


async def test_drops_of_a_filter_stream_count_in_the_clients_stats() -> None:
    class Dropping(ReadmeWs):
        stream_maxsize = 2
        stream_overflow = "drop_oldest"

    async with FrameServer(numbered(10)) as server:
        ws = Dropping(server.url())
        async with ws.stream_filter() as stream:
            await wait_until(lambda: ws.client.stats.messages == 10)
            await wait_until(lambda: stream.dropped == 8)
            assert ws.client.stats.dropped == 8
            assert [m["i"] for m in await take(stream, 2)] == [8, 9]
        await ws.exit()
