"""``WebSocketClient``: one long-lived, self-healing connection, any number of streams.

It composes the layers below into one hot feed::

    connect(url)                    one connection per subscription (rxws.source)
      .pipe(idle_timeout(t))        a silent link counts as dead          (optional)
      .pipe(rotate(every, when))    make-before-break replacement        (optional)
      .pipe(reconnect(backoff))     resubscribe after any drop
    -> Router                       indexed fan-out: stream(filters), messages

and adds what a long-running service needs around it: ``send`` to the present
connection, ``multiplex`` subscriptions that are re-sent on every new connection,
``status`` events, non-fatal ``errors``, ``stats``, and an idempotent ``close``.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.subject import Subject

from . import ops
from ._transport import connection_is_open
from .backoff import Backoff
from .codec import dump_json, parse_json
from .errors import NotConnected, ParseError, StreamClosed
from .events import Connected, Connecting, Disconnected, Event, Failed, Retrying, Rotated
from .filters import Filters, compile_filters
from .router import Router
from .source import OnOpen, UrlSource, connect, describe_url

__all__ = ["ClientStats", "WebSocketClient"]

log = logging.getLogger("rxws.client")

_NOTHING: Any = object()


@dataclass
class ClientStats:
    """Counters of a :class:`WebSocketClient`, all integers, only ever growing.

    Attributes:
        messages: Messages received (after parsing), over all connections.
        reconnects: Reconnect attempts scheduled after a drop or a failed attempt.
        rotations: Completed make-before-break rotations.
        parse_errors: Frames skipped because they failed to parse.
        dropped: Messages dropped by bounded buffers on the way to consumers.
        connections: Connections opened (``on_open`` completed).
    """

    messages: int = 0
    reconnects: int = 0
    rotations: int = 0
    parse_errors: int = 0
    dropped: int = 0
    connections: int = 0


class _Multiplexed:
    """One ``multiplex`` registration: its messages and how many subscribers it has."""

    __slots__ = ("count", "subscribe_msg", "unsubscribe_msg")

    def __init__(self, subscribe_msg: Any, unsubscribe_msg: Any) -> None:
        self.subscribe_msg = subscribe_msg
        self.unsubscribe_msg = unsubscribe_msg
        self.count = 0


class WebSocketClient:
    """A hot, reconnecting, optionally rotating websocket feed with filtered streams.

    Args:
        url: A ``ws://``/``wss://`` URL, or an async callable returning one (or an open
            connection), called at every connect.
        parse: Applied to every frame (``None`` for raw frames).
        serialize: Turns what :meth:`send` gets into a frame when it is not
            ``str``/``bytes``.
        backoff: Delay policy between reconnect attempts.
        rotate_every: Replace the connection every this many seconds
            (make-before-break).
        rotate_when: Replace the connection each time this Observable emits, or each
            time this async callable (called once per connection) returns.
        dedupe: ``msg -> hashable id``; with rotation, nothing is lost or repeated
            across a switch.
        idle_timeout: Seconds without a message after which a connection is presumed
            dead and replaced.
        on_open: ``async (connection) -> None`` run on every new connection before
            messages flow (authenticate here); multiplex subscriptions are sent after it.
        max_attempts: Give up after this many failed connection attempts in a row
            (``None``: never).
        send_timeout: How long :meth:`send` waits for a connection by default.
        overlap_timeout: Longest overlap of two connections during a rotation.
        transport: Which transport carries the connections (``"websockets"``).
        **connect_kwargs: Passed to ``websockets.asyncio.client.connect``.

    Example:
        >>> async def main() -> None:  # doctest: +SKIP
        ...     async with WebSocketClient("wss://example.com/ws") as client:
        ...         client.stream([{"s": "BTCUSDT"}]).subscribe(print)
        ...         await asyncio.sleep(10)
    """

    def __init__(
        self,
        url: UrlSource,
        *,
        parse: Callable[[Any], Any] | None = parse_json,
        serialize: Callable[[Any], str | bytes] = dump_json,
        backoff: Backoff | None = None,
        rotate_every: float | None = None,
        rotate_when: Observable[Any] | Callable[[], Awaitable[Any]] | None = None,
        dedupe: Callable[[Any], Any] | None = None,
        idle_timeout: float | None = None,
        on_open: OnOpen | None = None,
        max_attempts: int | None = None,
        send_timeout: float = 10.0,
        overlap_timeout: float = 10.0,
        transport: str = "websockets",
        **connect_kwargs: Any,
    ) -> None:
        self._shown = describe_url(url)
        self._serialize = serialize
        self._user_on_open = on_open
        self._send_timeout = send_timeout
        self.stats = ClientStats()
        self._status: Subject[Event] = Subject()
        self._errors: Subject[Exception] = Subject()
        self._live: list[Any] = []  # open connections whose on_open completed, oldest first
        self._live_changed: asyncio.Event | None = None
        self._opening = 0  # sessions between Connecting and Disconnected
        self._multiplexed: dict[int, _Multiplexed] = {}
        self._sent_on: dict[int, set[int]] = {}  # id(connection) -> multiplex ids sent
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keepalive: abc.DisposableBase | None = None
        self._closed = False
        self._failed: BaseException | None = None

        feed = connect(
            url,
            parse=parse,
            on_open=self._on_open,
            on_event=self._on_connection_event,
            on_error=self._on_nonfatal,
            transport=transport,
            **connect_kwargs,
        )
        if idle_timeout is not None:
            feed = feed.pipe(ops.idle_timeout(idle_timeout))
        if rotate_every is not None or rotate_when is not None:
            feed = feed.pipe(
                ops.rotate(
                    every=rotate_every,
                    when=rotate_when,
                    dedupe=dedupe,
                    overlap_timeout=overlap_timeout,
                    on_event=self._emit,
                )
            )
        feed = feed.pipe(
            ops.reconnect(
                backoff if backoff is not None else Backoff(),
                max_attempts=max_attempts,
                on_complete="reconnect",
                on_event=self._emit,
            )
        )
        self._router = Router(self._counted(feed), on_subscriber_error=self._on_nonfatal)
        self.messages: Observable[Any] = self._router.stream(None)
        """Every message of the feed (hot)."""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> WebSocketClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect and keep the feed up until :meth:`close`, with or without subscribers.

        Returns at once; the connection opens in the background (watch :attr:`status`,
        or just :meth:`send`, which waits for it). Calling it again does nothing.

        Raises:
            StreamClosed: The client was closed.
        """
        self.start_now()

    def start_now(self) -> None:
        """Start from synchronous code running inside the event loop (see :meth:`start`).

        Raises:
            StreamClosed: The client was closed.
            RuntimeError: No event loop is running.
        """
        if self._closed:
            raise StreamClosed("this WebSocketClient")
        asyncio.get_running_loop()
        if self._keepalive is None:
            self._live_changed = asyncio.Event()
            self._keepalive = self._router.connect(on_error=self._on_fatal)

    async def close(self) -> None:
        """Close every connection and stop; safe to call more than once.

        Waits until the connections are closed and no task of the client is left.
        Streams of the client complete.
        """
        if self._closed:
            return
        self._closed = True
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None:
            keepalive.dispose()
        self._router.complete()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Disposal cancels the connection tasks; wait until each has closed its socket.
        for _ in range(1000):
            if self._opening <= 0:
                break
            await asyncio.sleep(0.01)
        self._live.clear()
        self._status.on_completed()
        self._errors.on_completed()

    def __del__(self) -> None:
        if getattr(self, "_keepalive", None) is not None and not self._closed:
            warnings.warn(
                f"{self!r} was started and never closed; use 'async with' or await close()",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._failed is not None:
            state = "failed"
        elif self.present is not None:
            state = "connected"
        elif self._keepalive is not None:
            state = "connecting"
        else:
            state = "idle"
        return (
            f"<WebSocketClient {self._shown} {state} messages={self.stats.messages} "
            f"reconnects={self.stats.reconnects} rotations={self.stats.rotations}>"
        )

    # ------------------------------------------------------------------ streams

    @property
    def status(self) -> Observable[Event]:
        """Lifecycle events (:mod:`rxws.events`); subscribe before :meth:`start` to see all."""
        return self._status

    @property
    def errors(self) -> Observable[Exception]:
        """Non-fatal errors: :class:`rxws.ParseError`, :class:`rxws.SubscriberError`."""
        return self._errors

    def stream(self, filters: Filters = None) -> Observable[Any]:
        """The messages that ``filters`` accepts, as in ``stream_filter`` (hot).

        Args:
            filters: A list of dicts (OR of ANDs); ``None`` or ``[]`` for everything.

        Returns:
            An Observable; its subscribers share the one connection.

        Raises:
            TypeError: ``filters`` is not a list of dicts.
        """
        return self._router.stream(filters)

    def multiplex(
        self, subscribe_msg: Any, unsubscribe_msg: Any, filters: Filters = None
    ) -> Observable[Any]:
        """A stream that subscribes on the server while it has subscribers.

        The first subscriber sends ``subscribe_msg``; the last one leaving sends
        ``unsubscribe_msg``; while it has subscribers, ``subscribe_msg`` is sent again
        on every new connection (after a reconnect or a rotation), right after
        ``on_open``.

        Args:
            subscribe_msg: What subscribes on the server (serialised if not str/bytes).
            unsubscribe_msg: What unsubscribes.
            filters: Which messages belong to this stream.

        Returns:
            A reference-counted Observable.
        """
        compile_filters(filters)
        entry = _Multiplexed(subscribe_msg, unsubscribe_msg)
        key = id(entry)
        stream = self._router.stream(filters)

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            entry.count += 1
            if entry.count == 1:
                self._multiplexed[key] = entry
                self._send_to_live(key, entry.subscribe_msg)
            inner = stream.subscribe(observer, scheduler=scheduler)

            def dispose() -> None:
                inner.dispose()
                entry.count -= 1
                if entry.count == 0:
                    del self._multiplexed[key]
                    for sent in self._sent_on.values():
                        sent.discard(key)
                    if not self._closed:
                        self._send_to_live(None, entry.unsubscribe_msg)

            return Disposable(dispose)

        return reactivex.create(subscribe)

    # ------------------------------------------------------------------ sending

    @property
    def present(self) -> Any:
        """The newest open connection (a websockets connection), or ``None``."""
        live = self._prune()
        return live[-1] if live else None

    async def send(self, msg: Any, *, timeout: float | None = None) -> None:
        """Send ``msg`` on the present connection, waiting for one if needed.

        Args:
            msg: ``str`` (text frame), ``bytes`` (binary frame), or anything
                ``serialize`` accepts.
            timeout: Seconds to wait for a connection (default: ``send_timeout``).

        Raises:
            NotConnected: No connection opened within the timeout.
            StreamClosed: The client is closed.
        """
        if self._closed:
            raise StreamClosed("this WebSocketClient")
        data = msg if isinstance(msg, (str, bytes)) else self._serialize(msg)
        conn = await self._wait_present(self._send_timeout if timeout is None else timeout)
        await conn.send(data)

    async def wait_connected(self, timeout: float | None = None) -> Any:
        """Wait until a connection is open and past ``on_open``; return it.

        Args:
            timeout: Seconds to wait (``None``: forever).

        Returns:
            The present connection.

        Raises:
            NotConnected: None opened within the timeout.
            StreamClosed: The client was closed meanwhile.
        """
        return await self._wait_present(float("inf") if timeout is None else timeout)

    async def _wait_present(self, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            conn = self.present
            if conn is not None:
                return conn
            if self._closed:
                raise StreamClosed("this WebSocketClient")
            if self._live_changed is None:
                self._live_changed = asyncio.Event()
            self._live_changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise NotConnected(timeout)
            if remaining == float("inf"):
                await self._live_changed.wait()
                continue
            try:
                await asyncio.wait_for(self._live_changed.wait(), remaining)
            except asyncio.TimeoutError:
                raise NotConnected(timeout) from None

    def _prune(self) -> list[Any]:
        live = self._live
        if live and not connection_is_open(live[-1]):
            live[:] = [c for c in live if connection_is_open(c)]
        return live

    def _send_to_live(self, key: int | None, msg: Any) -> None:
        data = msg if isinstance(msg, (str, bytes)) else self._serialize(msg)
        for conn in self._prune():
            if key is not None:
                self._sent_on.setdefault(id(conn), set()).add(key)
            self._spawn(self._send_quietly(conn, data))

    async def _send_quietly(self, conn: Any, data: str | bytes) -> None:
        try:
            await conn.send(data)
        except Exception as exc:  # the connection is going away; the next one resends
            log.debug("could not send a multiplex message: %s", type(exc).__name__)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ hooks

    async def _on_open(self, conn: Any) -> None:
        if self._user_on_open is not None:
            await self._user_on_open(conn)
        sent = self._sent_on.setdefault(id(conn), set())
        # Entries added while this loop awaits are picked up by the next pass.
        while True:
            todo = [(k, e) for k, e in self._multiplexed.items() if k not in sent]
            if not todo:
                break
            for key, entry in todo:
                sent.add(key)
                msg = entry.subscribe_msg
                await conn.send(msg if isinstance(msg, (str, bytes)) else self._serialize(msg))
        self._live.append(conn)
        self.stats.connections += 1
        if self._live_changed is not None:
            self._live_changed.set()

    def _on_connection_event(self, event: Event) -> None:
        if isinstance(event, Connecting):
            self._opening += 1
        elif isinstance(event, Disconnected):
            self._opening -= 1
            self._prune()
            live_ids = {id(c) for c in self._live}
            for key in [k for k in self._sent_on if k not in live_ids]:
                del self._sent_on[key]
        elif isinstance(event, Connected):
            log.info("connected to %s", self._shown)
        self._emit(event)

    def _emit(self, event: Event) -> None:
        if isinstance(event, Retrying):
            self.stats.reconnects += 1
        elif isinstance(event, Rotated):
            self.stats.rotations += 1
        if not self._closed:
            self._status.on_next(event)

    def report(self, error: Exception) -> None:
        """Count a non-fatal error and publish it on :attr:`errors`.

        Layers built on the client (such as :mod:`rxws.compat`) report their own
        parse and subscriber errors here.

        Args:
            error: The error.
        """
        self._on_nonfatal(error)

    def _on_nonfatal(self, error: Exception) -> None:
        if isinstance(error, ParseError):
            self.stats.parse_errors += 1
        if not self._closed:
            self._errors.on_next(error)

    def _on_fatal(self, error: Exception) -> None:
        self._failed = error
        log.error("%s gave up: %s", self._shown, error)
        self._emit(Failed(error))

    def _counted(self, source: Observable[Any]) -> Observable[Any]:
        stats = self.stats

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            on_next = observer.on_next

            def count(msg: Any) -> None:
                stats.messages += 1
                on_next(msg)

            return source.subscribe(
                count, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return reactivex.create(subscribe)
