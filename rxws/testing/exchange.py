"""``DemoExchange``: a small market-data websocket server on loopback, with fault knobs.

It ticks trades for a few symbols, each trade carrying one global sequence number
(``seq``), so a client can check that nothing was lost or repeated. Two endpoints:

- ``exchange.url`` (path ``/stream``): every trade, from the moment of connecting;
- ``exchange.ws_url`` (path ``/ws``): nothing until the client subscribes, Binance style:
  ``{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}`` answered by
  ``{"result": null, "id": 1}``; ``UNSUBSCRIBE`` and ``LIST_SUBSCRIPTIONS`` likewise.

Fault knobs, settable at construction or any time later: ``drop_after`` (close each
connection after it was sent that many trades; 0 closes right after the handshake),
``drop_code``, ``malformed_every`` (a frame of broken JSON after every N trades),
:meth:`refuse` (answer the next handshakes with HTTP statuses), :meth:`stall` (stop
sending trades but keep answering pings), :meth:`drop_all`, :meth:`abort_all`,
:meth:`send_raw`, :meth:`send_raw_invalid_text` and :meth:`restart`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl as _ssl
import time
from collections import deque
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .._redact import RedactingLogger, Redactor

__all__ = ["DEFAULT_SYMBOLS", "DemoExchange"]

_log = logging.getLogger("rxws.testing.exchange")

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


class _Client:
    __slots__ = ("id", "path", "sent", "subscriptions", "ws")

    def __init__(self, ws: ServerConnection, ident: int, path: str) -> None:
        self.ws = ws
        self.id = ident
        self.path = path
        self.sent = 0
        # None: every stream (the /stream endpoint); a set: only those streams (/ws).
        self.subscriptions: set[str] | None = None if path.startswith("/stream") else set()


class DemoExchange:
    """A market-data feed on 127.0.0.1, started with ``async with``.

    Args:
        symbols: The traded symbols.
        interval: Seconds between ticks.
        batch: Trades per tick (round-robin over the symbols).
        host: Address to listen on (loopback by default).
        port: Port to listen on; 0 picks a free one.
        seed: Seed of the price random walk, for reproducible runs.
        drop_after: Close each connection after sending it that many trades.
        drop_code: The close code used by ``drop_after`` (1011 by default; 1000 is clean).
        malformed_every: After every N trades, send a frame of broken JSON.
        ssl: An ``ssl.SSLContext`` to serve ``wss://``.
        start_seq: The sequence number of the first trade minus one.

    Attributes:
        seq: The sequence number of the last trade sent.
        handshakes: Handshake attempts seen, refused ones included.
        accepted: Connections accepted.
        received: Every message clients sent, as ``(connection id, parsed JSON or raw)``.
        request_headers: The request headers of each handshake, in order.
        request_paths: The request path (with query) of each handshake, in order.
    """

    def __init__(
        self,
        *,
        symbols: tuple[str, ...] | list[str] = DEFAULT_SYMBOLS,
        interval: float = 0.005,
        batch: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        drop_after: int | None = None,
        drop_code: int = 1011,
        malformed_every: int | None = None,
        ssl: _ssl.SSLContext | None = None,
        start_seq: int = 0,
    ) -> None:
        if not symbols:
            raise ValueError("DemoExchange needs at least one symbol")
        self.symbols = tuple(symbols)
        self.interval = interval
        self.batch = batch
        self.host = host
        self.port = port
        self.drop_after = drop_after
        self.drop_code = drop_code
        self.malformed_every = malformed_every
        self.seq = start_seq
        self.handshakes = 0
        self.accepted = 0
        self.received: list[tuple[int, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.request_paths: list[str] = []
        self._ssl = ssl
        self._rng = random.Random(seed)
        self._prices = {s: 100.0 * (i + 1) for i, s in enumerate(self.symbols)}
        self._refusals: deque[int] = deque()
        self._stalled = False
        self._clients: dict[int, _Client] = {}
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._handlers: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> DemoExchange:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start listening and ticking."""
        await self._listen()
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="DemoExchange ticker")

    async def _listen(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            ssl=self._ssl,
            compression=None,
            logger=RedactingLogger(_log, Redactor()),
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self, code: int = 1001) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=False)
            for client in list(self._clients.values()):
                await client.ws.close(code)
            await server.wait_closed()

    async def aclose(self) -> None:
        """Stop: close every connection (1001, going away) and the listening socket."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await self._stop_listening()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def restart(self, downtime: float = 0.0) -> None:
        """Close every connection and the listening socket, wait, then listen again.

        Args:
            downtime: Seconds to stay down (connections are refused meanwhile).
        """
        await self._stop_listening(1012)
        await asyncio.sleep(downtime)
        await self._listen()

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        """URL of the endpoint that streams every trade (``/stream``)."""
        return f"{self._scheme}://{self.host}:{self.port}/stream"

    @property
    def ws_url(self) -> str:
        """URL of the endpoint that streams what was subscribed to (``/ws``)."""
        return f"{self._scheme}://{self.host}:{self.port}/ws"

    @property
    def _scheme(self) -> str:
        return "wss" if self._ssl is not None else "ws"

    @property
    def open_connections(self) -> int:
        """How many client connections are open now."""
        return len(self._clients)

    def subscriptions(self) -> list[set[str] | None]:
        """The stream subscriptions of each open connection (``None``: everything)."""
        return [
            None if c.subscriptions is None else set(c.subscriptions)
            for c in self._clients.values()
        ]

    # ------------------------------------------------------------------ faults

    def refuse(self, *statuses: int) -> None:
        """Answer the next ``len(statuses)`` handshakes with these HTTP statuses."""
        self._refusals.extend(statuses)

    def stall(self, stalled: bool = True) -> None:
        """Stop (or resume) sending trades; pings are still answered."""
        self._stalled = stalled

    async def drop_all(self, code: int = 1011, reason: str = "") -> None:
        """Close every open connection with ``code``."""
        for client in list(self._clients.values()):
            await client.ws.close(code, reason)

    def abort_all(self) -> None:
        """Break every open connection's TCP link without a close frame."""
        for client in list(self._clients.values()):
            transport = client.ws.transport
            if transport is not None:
                transport.abort()

    def send_raw(self, frame: str | bytes) -> None:
        """Send one raw frame (text or binary) to every open connection."""
        broadcast([c.ws for c in self._clients.values()], frame)

    def send_raw_invalid_text(self, payload: bytes = b"\xff\xfe not utf-8") -> None:
        """Send every open connection a text frame whose payload is not valid UTF-8.

        websockets will not send such a frame from a ``str``, so the frame is built by
        hand and written straight to each connection's transport, between two of the
        server's own frames. A conforming client fails the connection with close code
        1007.

        Args:
            payload: The frame's payload (under 126 bytes), which should not be UTF-8.

        Raises:
            ValueError: ``payload`` is 126 bytes or longer.
        """
        if len(payload) >= 126:
            raise ValueError(
                f"send_raw_invalid_text takes a payload under 126 bytes, got {len(payload)}"
            )
        frame = bytes((0x81, len(payload))) + payload  # FIN + text, unmasked
        for client in self._clients.values():
            transport = client.ws.transport
            if transport is not None and not transport.is_closing():
                transport.write(frame)

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true; it is checked on every change of state.

        Raises:
            TimeoutError: ``predicate()`` stayed false for ``timeout`` seconds.
        """

        async def until() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    def _notify(self) -> None:
        self._changed.set()

    # ------------------------------------------------------------------ serving

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        self.request_paths.append(request.path)
        self.request_headers.append(dict(request.headers.raw_items()))
        self._notify()
        if self._refusals:
            status = self._refusals.popleft()
            return connection.respond(status, f"refused by DemoExchange with {status}\n")
        if not (request.path.startswith("/stream") or request.path.startswith("/ws")):
            return connection.respond(404, "unknown path: use /stream or /ws\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.accepted += 1
        client = _Client(ws, self.accepted, ws.request.path if ws.request else "/stream")
        if self.drop_after == 0:
            await ws.close(self.drop_code)
            self._notify()
            return
        self._clients[client.id] = client
        self._notify()
        try:
            async for raw in ws:
                self._on_client_message(client, raw)
        except ConnectionClosed:
            pass
        finally:
            self._clients.pop(client.id, None)
            self._notify()

    def _on_client_message(self, client: _Client, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            self.received.append((client.id, raw))
            self._notify()
            return
        self.received.append((client.id, msg))
        self._notify()
        if not isinstance(msg, dict) or "method" not in msg:
            return
        method, params, ident = msg.get("method"), msg.get("params") or [], msg.get("id")
        subs = client.subscriptions
        if method == "SUBSCRIBE":
            if subs is not None:
                subs.update(str(p) for p in params)
            reply: dict[str, Any] = {"result": None, "id": ident}
        elif method == "UNSUBSCRIBE":
            if subs is not None:
                subs.difference_update(str(p) for p in params)
            reply = {"result": None, "id": ident}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": sorted(subs) if subs is not None else ["*"], "id": ident}
        else:
            reply = {"error": {"code": 2, "msg": f"unknown method {method!r}"}, "id": ident}
        broadcast([client.ws], json.dumps(reply))

    async def _tick(self) -> None:
        n_symbols = len(self.symbols)
        while True:
            await asyncio.sleep(self.interval)
            if self._stalled or not self._clients:
                continue
            for _ in range(self.batch):
                self.seq += 1
                symbol = self.symbols[self.seq % n_symbols]
                price = self._prices[symbol] * (1 + self._rng.uniform(-0.001, 0.001))
                self._prices[symbol] = price
                trade = {
                    "e": "trade",
                    "E": int(time.time() * 1000),
                    "s": symbol,
                    "seq": self.seq,
                    "p": round(price, 4),
                    "q": round(self._rng.uniform(0.001, 2.0), 4),
                }
                self._publish(f"{symbol.lower()}@trade", json.dumps(trade))

    def _publish(self, stream: str, text: str) -> None:
        targets = []
        broken = []
        for client in list(self._clients.values()):
            subs = client.subscriptions
            if subs is not None and stream not in subs:
                continue
            targets.append(client.ws)
            client.sent += 1
            if self.drop_after is not None and client.sent >= self.drop_after:
                self._clients.pop(client.id, None)
                self._spawn(client.ws.close(self.drop_code, "DemoExchange drop_after"))
            elif self.malformed_every and client.sent % self.malformed_every == 0:
                broken.append(client.ws)
        broadcast(targets, text)
        if broken:
            broadcast(broken, '{"e": "trade", broken')

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
