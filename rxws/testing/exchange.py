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

Limits, enforced the way Binance enforces them when ``limits`` (an
:class:`rxws.Limits`) sets them, and off by default: ``streams_per_connection`` (a
SUBSCRIBE that would pass it gets an error reply and subscribes nothing),
``messages_per_second`` (incoming text, binary, ping and pong frames per connection in
any one second; more closes the connection with 1008), ``connections_per_window``
(handshakes, refused ones included; one more is answered with HTTP 429) and
``connection_lifetime`` (the server closes the connection with 1001 when it is up).
Each time a client breaks one, a :class:`Violation` is added to ``exchange.violations``,
so a test can prove that a client never does.

With ``combined=True`` the exchange is many-topic and Binance-like: any
``<name>@trade`` is a topic, both endpoints send only what was subscribed (``/stream``
also takes ``?streams=a@trade/b@trade``), ``/stream`` wraps each message as
``{"stream": "<name>@trade", "data": {...}}`` and ``/ws`` sends the bare trade. Trades
are made for the subscribed topics in turn, ``batch`` per tick (so the total rate is
``batch / interval`` however many topics there are); each carries the global ``seq``
and ``t``, the topic's own id, which counts 1, 2, 3, ... per topic, so a client can check
every topic for gaps and repeats. A topic's ids advance only while some connection is
subscribed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import ssl as _ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event, State

from .._redact import RedactingLogger, Redactor
from .._resource import AsyncResource
from ..limits import Limits

__all__ = ["DEFAULT_SYMBOLS", "DemoExchange", "Violation"]

_log = logging.getLogger("rxws.testing.exchange")

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")

# The frames Binance counts against its incoming-message limit.
_COUNTED = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG})
_TOPIC = re.compile(r"[^\s/@]+@trade")

ViolationKind = Literal["streams", "messages", "connections", "lifetime"]


@dataclass(frozen=True)
class Violation:
    """One time a client broke a limit the exchange enforces.

    Attributes:
        kind: ``"streams"`` (a SUBSCRIBE past ``streams_per_connection``: error reply),
            ``"messages"`` (more than ``messages_per_second`` frames in one second:
            closed with 1008), ``"connections"`` (a handshake past
            ``connections_per_window``: HTTP 429) or ``"lifetime"`` (the connection was
            still open at ``connection_lifetime``: closed with 1001).
        connection: The connection's number (its place among accepted connections), or
            ``None`` for a handshake that was refused.
        detail: What happened, in words.
    """

    kind: ViolationKind
    connection: int | None
    detail: str


class _Connection(ServerConnection):
    """A server connection that reports each incoming data, ping and pong frame."""

    on_frame: Callable[[], None] | None = None

    def process_event(self, event: Event) -> None:
        if self.on_frame is not None and isinstance(event, Frame) and event.opcode in _COUNTED:
            self.on_frame()
        super().process_event(event)


class _Client:
    __slots__ = (
        "combined",
        "expiry",
        "id",
        "incoming",
        "path",
        "sent",
        "subscriptions",
        "violated",
        "ws",
    )

    def __init__(self, ws: ServerConnection, ident: int, path: str, many_topics: bool) -> None:
        self.ws = ws
        self.id = ident
        self.path = path
        self.sent = 0
        stream_path = path.startswith("/stream")
        # Wrap messages as {"stream": ..., "data": ...}.
        self.combined = many_topics and stream_path
        # None: every stream (the /stream endpoint); a set: only those streams.
        self.subscriptions: set[str] | None = None if stream_path and not many_topics else set()
        self.incoming: deque[float] = deque()  # times of recent incoming frames
        self.expiry: asyncio.TimerHandle | None = None
        self.violated = False  # broke the message limit: being closed


class _ServerLogger(RedactingLogger):
    """The server's logger: a client that gives up during the handshake is no error.

    Fault tests cut and stall links on purpose; websockets before 17 logs the server
    side of that at ERROR, after 17 at a lower level. Here it is INFO on every version.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Log one record, "opening handshake failed" at INFO."""
        if level >= logging.ERROR and msg == "opening handshake failed":
            level = logging.INFO
        super().log(level, msg, *args, **kwargs)


class DemoExchange(AsyncResource):
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
        combined: Many-topic, Binance-like mode (see the module's description).
        limits: The limits to enforce (``None`` or unset fields: not enforced).
        request_delay: Seconds the exchange spends on each message a client sends
            before it acts on it and replies, one message at a time per connection (a
            busy server: a SUBSCRIBE takes effect that much after it arrived).

    Attributes:
        seq: The sequence number of the last trade sent.
        handshakes: Handshake attempts seen, refused ones included.
        accepted: Connections accepted.
        received: Every message clients sent, as ``(connection id, parsed JSON or raw)``.
        request_headers: The request headers of each handshake, in order.
        request_paths: The request path (with query) of each handshake, in order.
        violations: Every :class:`Violation` of ``limits`` by a client, in order.
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
        combined: bool = False,
        limits: Limits | None = None,
        request_delay: float = 0.0,
    ) -> None:
        if not symbols:
            raise ValueError("DemoExchange needs at least one symbol")
        if limits is not None and not isinstance(limits, Limits):
            raise TypeError(
                f"DemoExchange limits must be an rxws.Limits, got {type(limits).__name__}"
            )
        if isinstance(request_delay, bool) or not isinstance(request_delay, (int, float)):
            raise TypeError(f"request_delay must be a number, got {type(request_delay).__name__}")
        if not request_delay >= 0:
            raise ValueError(f"request_delay must be 0 or more seconds, got {request_delay}")
        self.request_delay = float(request_delay)
        self.combined = combined
        self.limits = limits if limits is not None else Limits()
        self.violations: list[Violation] = []
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
        self._attempts: deque[float] = deque()  # recent handshake times
        # combined mode: connections per topic, the topics' turn order, their last ids.
        self._topic_refs: dict[str, int] = {}
        self._turns: deque[str] = deque()
        self._in_turns: set[str] = set()
        self._topic_ids: dict[str, int] = {}
        self._topic_prices: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
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
            logger=_ServerLogger(_log, Redactor()),
            create_connection=_Connection,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self, code: int = 1001) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=False)
            for client in list(self._clients.values()):
                await client.ws.close(code)
            await server.wait_closed()

    async def _aclose(self) -> None:
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

    def topic_ids(self) -> dict[str, int]:
        """The id of the last trade of each topic so far (combined mode)."""
        return dict(self._topic_ids)

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

    async def drop(self, connection: int, code: int = 1011, reason: str = "") -> None:
        """Close one open connection (by its number, as in :attr:`connections`)."""
        client = self._clients.get(connection)
        if client is None:
            raise ValueError(
                f"no open connection number {connection}; open: {sorted(self._clients)}"
            )
        await client.ws.close(code, reason)

    @property
    def connections(self) -> dict[int, int]:
        """Each open connection's number and how many topics it has subscribed."""
        return {
            ident: len(client.subscriptions) if client.subscriptions is not None else -1
            for ident, client in self._clients.items()
        }

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

    def _violate(
        self,
        kind: ViolationKind,
        connection: int | None,
        detail: str,
    ) -> None:
        self.violations.append(Violation(kind, connection, detail))
        _log.info("limit violation (%s) on connection %s: %s", kind, connection, detail)
        self._notify()

    def _over_attempt_limit(self) -> bool:
        window = self.limits.connections_per_window
        if window is None:
            return False
        attempts, seconds = window
        now = time.monotonic()
        recent = self._attempts
        recent.append(now)
        while recent[0] <= now - seconds:
            recent.popleft()
        if len(recent) <= attempts:
            return False
        self._violate(
            "connections",
            None,
            f"{len(recent)} connection attempts within {seconds:g} s; the limit is {attempts}",
        )
        return True

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        self.request_paths.append(request.path)
        self.request_headers.append(dict(request.headers.raw_items()))
        self._notify()
        if self._over_attempt_limit():
            return connection.respond(429, "Too many connection attempts\n")
        if self._refusals:
            status = self._refusals.popleft()
            return connection.respond(status, f"refused by DemoExchange with {status}\n")
        if not (request.path.startswith("/stream") or request.path.startswith("/ws")):
            return connection.respond(404, "unknown path: use /stream or /ws\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.accepted += 1
        path = ws.request.path if ws.request else "/stream"
        client = _Client(ws, self.accepted, path, self.combined)
        if self.drop_after == 0:
            await ws.close(self.drop_code)
            self._notify()
            return
        self._clients[client.id] = client
        if isinstance(ws, _Connection):
            ws.on_frame = partial(self._on_frame, client)
        lifetime = self.limits.connection_lifetime
        if lifetime is not None:
            loop = asyncio.get_running_loop()
            client.expiry = loop.call_later(lifetime, self._expire, client, lifetime)
        self._notify()
        try:
            preset = self._preset_streams(client)
            if preset and (error := self._subscribe(client, preset)) is not None:
                await ws.close(1008, error[:120])
            async for raw in ws:
                if self.request_delay:
                    await asyncio.sleep(self.request_delay)
                self._on_client_message(client, raw)
        except ConnectionClosed:
            pass
        finally:
            if client.expiry is not None:
                client.expiry.cancel()
            self._clients.pop(client.id, None)
            if client.subscriptions:
                self._unsubscribe(client, list(client.subscriptions))
            self._notify()

    def _preset_streams(self, client: _Client) -> list[str]:
        """The streams named by ``?streams=a/b`` on a combined-mode ``/stream`` URL."""
        if not client.combined:
            return []
        query = parse_qs(urlsplit(client.path).query)
        return [s for value in query.get("streams", []) for s in value.split("/") if s]

    def _on_frame(self, client: _Client) -> None:
        limit = self.limits.messages_per_second
        if limit is None or client.violated:
            return
        now = time.monotonic()
        recent = client.incoming
        recent.append(now)
        while recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) > limit:
            client.violated = True
            self._violate(
                "messages",
                client.id,
                f"{len(recent)} incoming messages within 1 s; the limit is {limit:g}",
            )
            self._spawn(client.ws.close(1008, "Too many requests"))

    def _expire(self, client: _Client, lifetime: float) -> None:
        client.expiry = None
        if self._clients.get(client.id) is client:
            self._violate(
                "lifetime", client.id, f"still open at the connection lifetime of {lifetime:g} s"
            )
            self._spawn(client.ws.close(1001, "connection lifetime reached"))

    def _subscribe(self, client: _Client, names: list[str]) -> str | None:
        """Subscribe ``client`` to ``names``, all or none; the error message, or None."""
        subs = client.subscriptions
        if subs is None:
            return None
        if self.combined:
            bad = [name for name in names if not _TOPIC.fullmatch(name)]
            if bad:
                return (
                    f"Invalid request: {bad[0]!r} is not a stream name; "
                    "DemoExchange streams are <name>@trade"
                )
        new = [name for name in dict.fromkeys(names) if name not in subs]
        cap = self.limits.streams_per_connection
        if cap is not None and len(subs) + len(new) > cap:
            detail = (
                f"{len(new)} more streams on top of {len(subs)} would pass the limit of "
                f"{cap} per connection"
            )
            self._violate("streams", client.id, detail)
            return f"Too many streams: {detail}"
        subs.update(new)
        if self.combined:
            for name in new:
                self._topic_refs[name] = self._topic_refs.get(name, 0) + 1
                if name not in self._in_turns:
                    self._in_turns.add(name)
                    self._turns.append(name)
        return None

    def _unsubscribe(self, client: _Client, names: list[str]) -> None:
        subs = client.subscriptions
        if subs is None:
            return
        for name in names:
            if name in subs:
                subs.discard(name)
                if self.combined:
                    self._topic_refs[name] -= 1
                    if not self._topic_refs[name]:
                        del self._topic_refs[name]

    def _on_client_message(self, client: _Client, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            self.received.append((client.id, raw))
            self._notify()
            return
        self.received.append((client.id, msg))
        self._notify()
        if client.violated or not isinstance(msg, dict) or "method" not in msg:
            return
        method, params, ident = msg.get("method"), msg.get("params") or [], msg.get("id")
        subs = client.subscriptions
        if method == "SUBSCRIBE":
            error = self._subscribe(client, [str(p) for p in params])
            reply: dict[str, Any] = (
                {"result": None, "id": ident}
                if error is None
                else {"error": {"code": 2, "msg": error}, "id": ident}
            )
        elif method == "UNSUBSCRIBE":
            self._unsubscribe(client, [str(p) for p in params])
            reply = {"result": None, "id": ident}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": sorted(subs) if subs is not None else ["*"], "id": ident}
        else:
            reply = {"error": {"code": 2, "msg": f"unknown method {method!r}"}, "id": ident}
        broadcast([client.ws], json.dumps(reply))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._stalled or not self._clients:
                continue
            if self.combined:
                self._trade_topics()
            else:
                self._trade_symbols()

    def _trade_symbols(self) -> None:
        n_symbols = len(self.symbols)
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

    def _next_topic(self) -> str | None:
        """The subscribed topic whose turn it is; topics nobody holds leave the turns."""
        turns = self._turns
        while turns:
            topic = turns.popleft()
            if topic in self._topic_refs:
                turns.append(topic)
                return topic
            self._in_turns.discard(topic)
        return None

    def _heard(self, topic: str) -> bool:
        """Whether an open connection holds ``topic`` (one that is closing does not count)."""
        return any(
            client.ws.state is State.OPEN and client.subscriptions and topic in client.subscriptions
            for client in self._clients.values()
        )

    def _trade_topics(self) -> None:
        stamp = int(time.time() * 1000)
        for _ in range(self.batch):
            topic = self._next_topic()
            if topic is None:
                return
            if not self._heard(topic):
                continue  # only connections that are closing hold it: no trade, no gap
            self.seq += 1
            ident = self._topic_ids.get(topic, 0) + 1
            self._topic_ids[topic] = ident
            price = self._topic_prices.get(topic, 100.0) * (1 + self._rng.uniform(-0.001, 0.001))
            self._topic_prices[topic] = price
            trade = {
                "e": "trade",
                "E": stamp,
                "s": topic.partition("@")[0].upper(),
                "t": ident,
                "seq": self.seq,
                "p": round(price, 4),
                "q": round(self._rng.uniform(0.001, 2.0), 4),
            }
            self._publish(topic, json.dumps(trade))

    def _publish(self, stream: str, text: str) -> None:
        targets: list[ServerConnection] = []
        wrapped_targets: list[ServerConnection] = []
        broken = []
        for client in list(self._clients.values()):
            subs = client.subscriptions
            if subs is not None and stream not in subs:
                continue
            (wrapped_targets if client.combined else targets).append(client.ws)
            client.sent += 1
            if self.drop_after is not None and client.sent >= self.drop_after:
                self._clients.pop(client.id, None)
                self._spawn(client.ws.close(self.drop_code, "DemoExchange drop_after"))
            elif self.malformed_every and client.sent % self.malformed_every == 0:
                broken.append(client.ws)
        broadcast(targets, text)
        if wrapped_targets:
            broadcast(wrapped_targets, f'{{"stream":{json.dumps(stream)},"data":{text}}}')
        if broken:
            broadcast(broken, '{"e": "trade", broken')

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
