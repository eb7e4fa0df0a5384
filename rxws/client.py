"""``WebSocketClient``: one long-lived, self-healing connection, any number of streams.

It composes the layers below into one hot feed::

    connect(url)                    one connection per subscription (rxws.source)
      .pipe(idle_timeout(t))        a silent link counts as dead          (optional)
      .pipe(rotate(every, when))    make-before-break replacement        (optional)
      .pipe(reconnect(backoff))     resubscribe after any drop
    -> Router                       indexed fan-out: stream(filters), messages

With ``subscriptions=`` there is one such pipeline per connection, and the topics are
spread over them (:mod:`rxws._shards`).

The hot path, one message, top to bottom (no task, no await, no copy)::

    Link.run -> on_frame              the transport pushes the frame  (rxws.transports)
      -> parse(frame)                 _Session._frame_handler         (rxws.source)
      -> rotate's on_next             one test while no rotation runs (rxws.ops._rotate)
      -> Router deliverer             stats.messages += 1, FilterIndex lookup,
                                      on_next per matching stream     (rxws.router)

Around it, what a long-running service needs: ``send`` to the present connection,
``multiplex`` subscriptions that are re-sent on every new connection, ``status``
events, non-fatal ``errors``, ``stats``, and an idempotent ``close``. The client's
state is in three parts: :class:`_Events` (status, errors, counters),
:class:`_Multiplex` (server-side subscriptions) and :class:`_Connections` (attempts,
the present connection, how the feed ends), composed by :class:`_Core`.

The pipeline refers only to ``_Core``, never to the :class:`WebSocketClient` object
itself, so a started client that its owner drops is garbage-collected: it warns with a
``ResourceWarning`` and shuts its feed down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.subject import Subject

from . import ops
from ._observers import direct_on_next
from ._redact import Redactor
from ._resource import AsyncResource, Tasks
from ._shards import ConnectionStats, Topics
from .backoff import Backoff
from .bridge import count_drops_in
from .codec import dump_json, parse_json
from .errors import ConnectionLost, IdleTimeout, NotConnected, ParseError, StreamClosed
from .events import Connected, Connecting, Disconnected, Event, Failed, Retrying, Rotated
from .filters import Filters
from .limits import Limits
from .ops._common import check_seconds
from .protocols import Subscriptions
from .router import Router
from .source import (
    OnOpen,
    UrlSource,
    check_connect,
    connect,
    connection_is_open,
    describe_url,
    send_on,
)
from .transports import Transport

__all__ = ["ClientStats", "ConnectionStats", "WebSocketClient"]

log = logging.getLogger("rxws.client")

_FRAME_TYPES = (str, bytes, bytearray, memoryview)
# How long close() lets multiplex messages already under way (UNSUBSCRIBE) go out.
_FLUSH_SECONDS = 1.0


@dataclass(slots=True)
class ClientStats:
    """Counters of a :class:`WebSocketClient`, all integers, only ever growing.

    Attributes:
        messages: Messages the feed delivered (parsed; a rotation's overlap counted
            once), over all connections.
        reconnects: Reconnect attempts scheduled after a drop or a failed attempt.
        rotations: Completed make-before-break rotations.
        parse_errors: Frames skipped because they failed to parse.
        dropped: Messages dropped by bounded buffers on the way to consumers.
        connections: Connections opened (``on_open`` completed).
        per_connection: With ``subscriptions=``, one :class:`ConnectionStats` per
            connection (topics, messages, reconnects, rotations, rejected topics).
    """

    messages: int = 0
    reconnects: int = 0
    rotations: int = 0
    parse_errors: int = 0
    dropped: int = 0
    connections: int = 0
    per_connection: list[ConnectionStats] = field(default_factory=list)


def _check_timeout(timeout: float | None, default: float) -> float:
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
    return float(timeout)


def _frame(msg: Any, serialize: Callable[[Any], str | bytes]) -> Any:
    return msg if isinstance(msg, _FRAME_TYPES) else serialize(msg)


class _Multiplexed:
    """One ``multiplex`` registration: its frames and how many subscribers it has."""

    __slots__ = ("count", "subscribe_frame", "unsubscribe_frame")

    def __init__(self, subscribe_frame: Any, unsubscribe_frame: Any) -> None:
        self.subscribe_frame = subscribe_frame
        self.unsubscribe_frame = unsubscribe_frame
        self.count = 0


class _Attempt:
    """One subscription of the source: one connection attempt and its connection."""

    __slots__ = ("conn", "ended", "on_end", "ready", "reported", "sent", "shard", "task")

    def __init__(self, shard: int | None = None) -> None:
        self.shard = shard  # which connection of a sharded client (None: not sharded)
        self.on_end: Callable[[], None] | None = None  # called once its connection ended
        self.task: asyncio.Task[Any] | None = None  # the connection's task, once it runs
        self.conn: Any = None
        self.ready = False  # open and past on_open and the multiplex subscriptions
        self.ended = False  # the connection is closed
        self.reported = False  # its Disconnected event was already emitted
        self.sent: set[_Multiplexed] = set()  # multiplex entries subscribed on it


class _Events:
    """What the client tells its user: status events, non-fatal errors, counters."""

    def __init__(self) -> None:
        self.stats = ClientStats()
        self.status: Subject[Event] = Subject()
        self.errors: Subject[Exception] = Subject()
        self.finished = False

    def emit(self, event: Event) -> None:
        """Count ``event`` and publish it on ``status``."""
        if isinstance(event, Retrying):
            self.stats.reconnects += 1
        elif isinstance(event, Rotated):
            self.stats.rotations += 1
        try:
            self.status.on_next(event)
        except Exception:
            log.exception("a subscriber of client.status raised; ignored")

    def report(self, error: Exception) -> None:
        """Count a non-fatal ``error`` and publish it on ``errors``."""
        if isinstance(error, ParseError):
            self.stats.parse_errors += 1
        try:
            self.errors.on_next(error)
        except Exception:
            log.exception("a subscriber of client.errors raised; ignored")

    def finish(self) -> None:
        """Complete ``status`` and ``errors`` (once)."""
        if self.finished:
            return
        self.finished = True
        for subject in (self.status, self.errors):
            try:
                subject.on_completed()
            except Exception:
                log.exception("a subscriber of the client raised on completion; ignored")


class _Multiplex:
    """``multiplex`` registrations, and the frames that subscribe them on connections."""

    def __init__(self) -> None:
        self.entries: dict[_Multiplexed, None] = {}  # an ordered set
        self.sends = Tasks()  # frames under way

    async def subscribe_on(self, attempt: _Attempt, conn: Any) -> None:
        """Send every registration's subscribe frame on a new connection."""
        sent = attempt.sent
        # Entries added while this awaits are picked up by the next pass.
        while True:
            todo = [entry for entry in self.entries if entry not in sent]
            if not todo:
                return
            for entry in todo:
                if entry in self.entries:  # else its last subscriber left meanwhile
                    sent.add(entry)
                    await conn.send(entry.subscribe_frame)

    def joined(self, entry: _Multiplexed, connections: _Connections) -> None:
        """A subscriber joined ``entry``: the first one subscribes it everywhere."""
        entry.count += 1
        if entry.count != 1:
            return
        self.entries[entry] = None
        if connections.closing:
            return
        for attempt in connections.attempts:
            # Connections still in on_open send it themselves once they are ready.
            if not attempt.shard and attempt.ready and connection_is_open(attempt.conn):
                attempt.sent.add(entry)
                self._send_soon(attempt.conn, entry.subscribe_frame)

    def left(self, entry: _Multiplexed, connections: _Connections) -> None:
        """A subscriber left ``entry``: the last one unsubscribes it everywhere."""
        entry.count -= 1
        if entry.count != 0:
            return
        del self.entries[entry]
        for attempt in connections.attempts:
            if entry in attempt.sent:
                attempt.sent.discard(entry)
                if not connections.closing and connection_is_open(attempt.conn):
                    self._send_soon(attempt.conn, entry.unsubscribe_frame)

    def _send_soon(self, conn: Any, frame: Any) -> None:
        # Tasks start in the order they are created and websockets writes a frame in
        # its first step, so frames for one connection go out in order.
        self.sends.spawn(_send_quietly(conn, frame))


async def _send_quietly(conn: Any, frame: Any) -> None:
    try:
        await conn.send(frame)
    except Exception as exc:  # the connection is going away; the next one resends
        log.debug("could not send a multiplex message: %s", type(exc).__name__)


class _Connections:
    """The connection attempts of the feed: which is present, and how the feed ends."""

    def __init__(
        self,
        shown: str,
        redactor: Redactor,
        user_on_open: OnOpen | None,
        events: _Events,
        multiplex: _Multiplex,
    ) -> None:
        self.shown = shown
        self.redactor = redactor
        self.user_on_open = user_on_open
        self.events = events
        self.multiplex = multiplex
        # Attempts whose connection task runs, oldest first (a dict as an ordered set).
        self.attempts: dict[_Attempt, None] = {}
        self.changed = asyncio.Event()  # set when a connection is ready, on failure, on close
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closing = False
        self.failed: Exception | None = None

    def present(self) -> Any:
        """The newest connection that is open and past ``on_open``, or ``None``."""
        for attempt in reversed(self.attempts):
            if attempt.ready and connection_is_open(attempt.conn):
                return attempt.conn
        return None

    async def wait_present(self, timeout: float) -> Any:
        """Wait up to ``timeout`` seconds for a present connection."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            conn = self.present()
            if conn is not None:
                return conn
            if self.closing:
                raise StreamClosed("this WebSocketClient")
            if self.failed is not None:
                raise NotConnected(loop.time() - start) from self.failed
            remaining = start + timeout - loop.time()
            if remaining <= 0:
                raise NotConnected(timeout)
            self.changed.clear()
            try:
                await asyncio.wait_for(
                    self.changed.wait(), None if remaining == float("inf") else remaining
                )
            except asyncio.TimeoutError:
                raise NotConnected(timeout) from None

    def source(
        self,
        make: Callable[[_Attempt], Observable[Any]],
        idle: float | None,
        shard: int | None = None,
    ) -> Observable[Any]:
        """Each subscription: one attempt with its own connection and idle timer."""

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            attempt = _Attempt(shard)
            feed = make(attempt)
            on_error: Callable[[Exception], None] = observer.on_error
            if idle is not None:
                feed = feed.pipe(ops.idle_timeout(idle))
                on_error = self._idle_reporter(attempt, on_error)
            return feed.subscribe(
                direct_on_next(observer), on_error, observer.on_completed, scheduler=scheduler
            )

        return reactivex.create(subscribe)

    def _idle_reporter(
        self, attempt: _Attempt, on_error: Callable[[Exception], None]
    ) -> Callable[[Exception], None]:
        """``on_error`` that first reports an idle timeout as the attempt's disconnection.

        The idle timer disposed the connection, whose own event would only say "closed
        by the subscriber", and later than the ``Retrying`` that follows at once.
        """

        def reported(error: Exception) -> None:
            if isinstance(error, IdleTimeout):
                attempt.ready = False
                if not attempt.reported and not attempt.ended:
                    attempt.reported = True
                    reason = self.redactor(str(error))
                    self.events.emit(Disconnected(reason, error, closed_by="client"))
            on_error(error)

        return reported

    async def on_open(self, attempt: _Attempt, conn: Any) -> None:
        """A new connection: the user's ``on_open``, then the multiplex subscriptions."""
        attempt.conn = conn
        if self.user_on_open is not None:
            await self.user_on_open(conn)
        if not attempt.shard:  # multiplex messages go on a sharded client's connection 0
            await self.multiplex.subscribe_on(attempt, conn)
        attempt.ready = True
        self.events.stats.connections += 1
        self.changed.set()

    def on_event(self, attempt: _Attempt, event: Event) -> None:
        """An event of one connection: track the attempt, then publish the event."""
        if isinstance(event, Connecting):
            task = asyncio.current_task()
            if task is not None and attempt.task is None:
                attempt.task = task
                self.attempts[attempt] = None
                task.add_done_callback(lambda _: self.attempts.pop(attempt, None))
        elif isinstance(event, Disconnected):
            attempt.ended = True
            attempt.ready = False
            attempt.sent.clear()
            on_end, attempt.on_end = attempt.on_end, None
            if on_end is not None:
                on_end()
            if attempt.reported:
                return
            attempt.reported = True
        elif isinstance(event, Connected):
            log.info("connected to %s", event.url or self.shown)
        self.events.emit(event)

    def on_fatal(self, error: Exception) -> None:
        """The feed gave up: record it, and make ``Failed`` the last event."""
        if self.failed is not None or self.closing:
            return
        self.failed = error
        log.error("%s gave up: %s", self.shown, error)
        # Connections the ending feed let go of are still closing: report them now.
        for attempt in self.attempts:
            attempt.ready = False
            if not attempt.reported and not attempt.ended:
                attempt.reported = True
                self.events.emit(Disconnected("closed by the subscriber", closed_by="client"))
        self.events.emit(Failed(error))
        self.changed.set()

    def guarded(self, feed: Observable[Any]) -> Observable[Any]:
        """``feed`` with its end recorded; a closed or failed client subscribes nothing.

        The feed ends in an error only when it gave up: that is recorded here (``Failed``,
        ``failed``) before the streams hear of it, whether or not :meth:`start` was called.
        Its messages are counted by the router it feeds (``Router._count_in``).
        """

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            if self.closing:
                observer.on_completed()
                return Disposable()
            if self.failed is not None:
                observer.on_error(self.failed)
                return Disposable()

            def gave_up(error: Exception) -> None:
                self.on_fatal(error)
                observer.on_error(error)

            return feed.subscribe(
                direct_on_next(observer), gave_up, observer.on_completed, scheduler=scheduler
            )

        return reactivex.create(subscribe)

    def stop(self, router: Router[Any]) -> None:
        """Complete the streams and cancel every connection (synchronous part of close)."""
        self.closing = True
        self.changed.set()
        router.complete()
        self.multiplex.sends.cancel()


class _Core:
    """The state the connection pipeline works on; it never refers to the client.

    Attributes:
        events: Status events, errors and counters.
        multiplex: ``multiplex`` registrations.
        connections: The connection attempts and the feed's end.
    """

    def __init__(self, shown: str, redactor: Redactor, user_on_open: OnOpen | None) -> None:
        self.shown = shown
        self.redactor = redactor
        self.events = _Events()
        self.multiplex = _Multiplex()
        self.connections = _Connections(shown, redactor, user_on_open, self.events, self.multiplex)


def _pipeline(
    core: _Core,
    url: UrlSource,
    shard: tuple[Topics, int] | None,
    parse: Callable[[Any], Any] | None,
    transport: str | Transport,
    connect_kwargs: dict[str, Any],
    idle: float | None,
    backoff: Backoff | None,
    max_attempts: int | None,
    rotate_every: float | None,
    rotate_when: Observable[Any] | Callable[[], Awaitable[Any]] | None,
    dedupe: Callable[[Any], Any] | bool | None,
    overlap_timeout: float,
) -> Observable[Any]:
    """One connection's pipeline: connect, idle timeout, rotation, reconnect.

    With ``shard`` (a sharded client's topics and this connection's index), every new
    connection subscribes the shard's topics in its ``on_open``, events carry the
    index, and the connection is rotated before the server's lifetime ends.
    """
    index = None if shard is None else shard[1]

    def emit(event: Event) -> None:
        if shard is not None:
            event = replace(event, connection=shard[1])
            shard[0].count(shard[1], event)
        core.events.emit(event)

    def make(attempt: _Attempt) -> Observable[Any]:
        async def on_open_(conn: Any) -> None:
            await core.connections.on_open(attempt, conn)
            if shard is not None:
                attempt.on_end = await shard[0].on_open(shard[1], conn)

        def on_event(event: Event) -> None:
            if shard is not None:
                event = replace(event, connection=index)
                if isinstance(event, Disconnected):
                    shard[0].on_lost(shard[1], event.error)
            core.connections.on_event(attempt, event)

        return connect(
            url,
            parse=parse,
            on_open=on_open_,
            on_event=on_event,
            on_error=core.events.report,
            transport=transport,
            **connect_kwargs,
        )

    feed = core.connections.source(make, idle, index)
    every = rotate_every
    if shard is not None:
        lifetime = shard[0].lifetime_rotation(shard[1])
        if lifetime is not None:
            every = lifetime if every is None else min(every, lifetime)
        if dedupe is None:
            dedupe = shard[0].identity
    if every is not None or rotate_when is not None:
        feed = feed.pipe(
            ops.rotate(
                every=every,
                when=rotate_when,
                dedupe=dedupe,
                overlap_timeout=overlap_timeout,
                backoff=backoff,
                on_event=emit,
                on_error=core.events.report,
            )
        )
    return feed.pipe(
        ops.reconnect(
            backoff if backoff is not None else Backoff(),
            max_attempts=max_attempts,
            on_complete="reconnect",
            on_event=emit,
        )
    )


def _topics_for(
    subscriptions: Subscriptions,
    limits: Limits | None,
    serialize: Callable[[Any], str | bytes],
    core: _Core,
) -> Topics:
    if not isinstance(subscriptions, Subscriptions):
        raise TypeError(
            "subscriptions must be a protocol such as rxws.protocols.Binance() or "
            f"rxws.protocols.JsonSubscriptions(...), got {type(subscriptions).__name__}"
        )
    if limits is not None and not isinstance(limits, Limits):
        raise TypeError(f"limits must be an rxws.Limits, got {type(limits).__name__}")
    return Topics(
        subscriptions,
        subscriptions.limits.merge(limits),
        lambda frame: _frame(frame, serialize),
        core.events.report,
    )


def _budgeted(url: UrlSource, topics: Topics) -> Callable[[], Awaitable[Any]]:
    """``url`` as an async callable that waits for the host's connection budget."""
    protocol = topics.protocol

    async def url_() -> Any:
        got = url if isinstance(url, str) else await url()
        if not isinstance(got, str):
            return got  # an open connection: no attempt of ours to budget
        target = protocol.url(got)
        budget = topics.budget(target)
        if budget is not None:
            loop = asyncio.get_running_loop()
            delay = budget.delay(loop.time())
            while delay > 0:
                log.info("connection budget for this host spent; next attempt in %.3g s", delay)
                await asyncio.sleep(delay)
                delay = budget.delay(loop.time())
            budget.take(loop.time())
        return target

    return url_


def _recorded(error: Exception) -> None:
    """``on_error`` of the :meth:`WebSocketClient.start` hold: ``_Core.guarded`` saw it."""


def _abandon(core: _Core, router: Router[Any]) -> None:
    """Shut down the feed of a client that was garbage-collected unclosed."""
    try:
        core.connections.stop(router)
    finally:
        core.events.finish()


class WebSocketClient(AsyncResource):
    """A hot, reconnecting, optionally rotating websocket feed with filtered streams.

    Args:
        url: A ``ws://``/``wss://`` URL, or an async callable returning one (or an open
            connection), called at every connect.
        parse: Applied to every frame (``None`` for raw frames).
        serialize: Turns what :meth:`send` and :meth:`multiplex` get into a frame when
            it is not ``str``/``bytes``.
        backoff: Delay policy between reconnect attempts.
        rotate_every: Replace the connection every this many seconds
            (make-before-break).
        rotate_when: Replace the connection each time this Observable emits, or each
            time this async callable (called once per connection) returns.
        dedupe: How a rotation tells copies apart (only used with ``rotate_every`` or
            ``rotate_when``): ``msg -> hashable id`` (``None`` for messages without
            one); ``None`` compares the messages themselves; ``False`` turns it off.
            Either way, with matching on, nothing is lost or repeated across a switch
            (see :func:`rxws.ops.rotate`).
        idle_timeout: Seconds without a message after which a connection is presumed
            dead and replaced.
        on_open: ``async (connection) -> None`` run on every new connection before
            messages flow (authenticate here); multiplex subscriptions are sent after it.
        max_attempts: Give up after this many failed connection attempts in a row
            (``None``: never); the client then emits ``Failed`` on :attr:`status`.
        send_timeout: How long :meth:`send` waits for a connection by default.
        overlap_timeout: Longest overlap of two connections during a rotation.
        subscriptions: A topic protocol (:class:`rxws.protocols.Binance`,
            :class:`rxws.protocols.JsonSubscriptions`, ...): the client then speaks in
            topics (:meth:`topic`) and spreads them over as many connections as the
            limits require, pacing frames and connection attempts and rotating each
            connection before the server's lifetime ends.
        limits: Overrides of the protocol's :class:`rxws.Limits`.
        transport: Which transport carries the connections (``"websockets"``).
        **connect_kwargs: Passed to ``websockets.asyncio.client.connect``.

    Raises:
        ValueError: ``url`` is not a ws/wss URL or a callable, or a number is out of
            range.
        TypeError: ``parse``, ``serialize`` or ``on_open`` is not callable.

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
        dedupe: Callable[[Any], Any] | bool | None = None,
        idle_timeout: float | None = None,
        on_open: OnOpen | None = None,
        max_attempts: int | None = None,
        send_timeout: float = 10.0,
        overlap_timeout: float = 10.0,
        subscriptions: Subscriptions | None = None,
        limits: Limits | None = None,
        transport: str | Transport = "websockets",
        **connect_kwargs: Any,
    ) -> None:
        for name, value in (("parse", parse), ("on_open", on_open)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
        if not callable(serialize):
            raise TypeError(
                f"serialize must be a callable msg -> str | bytes, got {type(serialize).__name__}"
            )
        timeout = check_seconds("send_timeout", send_timeout)
        assert timeout is not None
        idle = check_seconds("idle_timeout", idle_timeout, allow_none=True)
        # The URL, the transport and its options are checked now, not at the first connect.
        check_connect(url, transport, connect_kwargs)

        self._shown = describe_url(url)
        self._serialize = serialize
        self._send_timeout = timeout
        headers = connect_kwargs.get("additional_headers")
        redactor = Redactor(url if isinstance(url, str) else None, headers)
        core = self._core = _Core(self._shown, redactor, on_open)
        self._keepalive: abc.DisposableBase | None = None

        self._topics: Topics | None = None
        if subscriptions is None:
            if limits is not None:
                raise ValueError(
                    "limits= needs subscriptions= (a protocol such as rxws.protocols.Binance())"
                )
            feed = _pipeline(
                core, url, None, parse, transport, connect_kwargs, idle, backoff, max_attempts,
                rotate_every, rotate_when, dedupe, overlap_timeout,
            )  # fmt: skip
        else:
            topics = self._topics = _topics_for(subscriptions, limits, serialize, core)
            core.events.stats.per_connection = topics.stats

            def pipeline(index: int) -> Observable[Any]:
                return _pipeline(
                    core, _budgeted(url, topics), (topics, index), parse, transport,
                    connect_kwargs, idle, backoff, max_attempts, rotate_every, rotate_when,
                    dedupe, overlap_timeout,
                )  # fmt: skip

            feed = topics.observable(pipeline)
        self._router: Router[Any] = Router(
            core.connections.guarded(feed), on_subscriber_error=core.events.report
        )
        self._router._count_in(core.events.stats)
        self._messages: Observable[Any] = count_drops_in(
            self._router.stream(None), core.events.stats
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect and keep the feed up until :meth:`close`, with or without subscribers.

        Returns at once; the connection opens in the background (watch :attr:`status`,
        or just :meth:`send`, which waits for it). Calling it again does nothing, also
        after the feed gave up (``Failed`` on :attr:`status`): a client that gave up
        stays down; close it and create a new one.

        Raises:
            StreamClosed: The client was closed.
        """
        await super().start()

    async def _start(self) -> None:
        self.start_now()

    def start_now(self) -> None:
        """Start from synchronous code running inside the event loop (see :meth:`start`).

        Raises:
            StreamClosed: The client was closed.
            RuntimeError: No event loop is running.
        """
        core = self._core
        if core.connections.closing:
            raise StreamClosed("this WebSocketClient")
        loop = asyncio.get_running_loop()
        if self._keepalive is None:
            core.connections.loop = loop
            # The feed's end is recorded by connections.guarded, for streams and this hold.
            self._keepalive = self._router.connect(on_error=_recorded)

    async def close(self) -> None:
        """Close every connection and stop; safe to call more than once.

        Multiplex messages already under way (an ``UNSUBSCRIBE``) are sent first, for
        up to a second. Then every stream completes, a :meth:`send` that waits raises
        :class:`rxws.StreamClosed`, the connections are closed and their tasks have
        ended by the time this returns; :attr:`status` and :attr:`errors` complete.
        A second call waits for the first to finish. The same as :meth:`aclose`.
        """
        await self.aclose()

    async def _aclose(self) -> None:
        core = self._core
        connections, sends = core.connections, core.multiplex.sends
        try:
            await sends.wait(_FLUSH_SECONDS)
            self._keepalive = None
            connections.stop(self._router)
            running = {a.task for a in connections.attempts if a.task is not None}
            running |= sends.snapshot()
            if running:
                await asyncio.wait(running)
            # Connection tasks cancelled before their first step end on this turn.
            await asyncio.sleep(0)
        finally:
            core.events.finish()

    def __del__(self) -> None:
        core: _Core | None = getattr(self, "_core", None)
        if core is None or getattr(self, "_keepalive", None) is None or core.connections.closing:
            return
        warnings.warn(
            f"{self!r} was started and never closed; use 'async with' or await close()",
            ResourceWarning,
            stacklevel=2,
            source=self,
        )
        loop = core.connections.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon(_abandon, core, self._router)

    def __repr__(self) -> str:
        core = self._core
        if core.connections.closing:
            state = "closed"
        elif core.connections.failed is not None:
            state = "failed"
        elif core.connections.present() is not None:
            state = "connected"
        elif self._keepalive is not None or self._router.connected:
            state = "connecting"
        else:
            state = "idle"
        stats = core.events.stats
        return (
            f"<WebSocketClient {self._shown} {state} messages={stats.messages} "
            f"reconnects={stats.reconnects} rotations={stats.rotations}>"
        )

    # ------------------------------------------------------------------ streams

    @property
    def messages(self) -> Observable[Any]:
        """Every message of the feed (hot; its subscribers share the connections)."""
        return self._messages

    @property
    def stats(self) -> ClientStats:
        """The client's counters (one live object: read it any time)."""
        return self._core.events.stats

    @property
    def status(self) -> Observable[Event]:
        """Lifecycle events (:mod:`rxws.events`); subscribe before :meth:`start` to see all.

        Completes when the client is closed. A connection that drops and comes back
        shows ``Connecting``, ``Connected``, ``Disconnected``, ``Retrying``,
        ``Connecting``, ``Connected``; ``Failed`` is the last event of a feed that gave up.
        """
        return self._core.events.status

    @property
    def errors(self) -> Observable[Exception]:
        """Non-fatal errors: :class:`rxws.ParseError`, :class:`rxws.SubscriberError`."""
        return self._core.events.errors

    def stream(self, filters: Filters = None) -> Observable[Any]:
        """The messages that ``filters`` accepts, as in ``stream_filter`` (hot).

        A subscription opens the connection if :meth:`start` has not; after
        :meth:`close` it completes at once, and after the feed gave up it gets the
        error that ended it.

        Args:
            filters: A list of dicts (OR of ANDs); ``None`` or ``[]`` for everything.

        Returns:
            An Observable; its subscribers share the one connection. An
            :class:`rxws.AsyncStream` made from it counts its drops in :attr:`stats`.

        Raises:
            TypeError: ``filters`` is not a list of dicts.
        """
        return count_drops_in(self._router.stream(filters), self._core.events.stats)

    def multiplex(
        self, subscribe_msg: Any, unsubscribe_msg: Any, filters: Filters = None
    ) -> Observable[Any]:
        """A stream that subscribes on the server while it has subscribers.

        The first subscriber sends ``subscribe_msg``; the last one leaving sends
        ``unsubscribe_msg``; while it has subscribers, ``subscribe_msg`` is sent again
        on every new connection (after a reconnect or a rotation), right after
        ``on_open`` and before the connection counts as connected.

        Args:
            subscribe_msg: What subscribes on the server (serialised now if not
                str/bytes).
            unsubscribe_msg: What unsubscribes.
            filters: Which messages belong to this stream.

        Returns:
            A reference-counted Observable.

        Raises:
            TypeError: ``filters`` is not a list of dicts.
            Exception: Whatever ``serialize`` raises for a message it cannot handle.
        """
        entry = _Multiplexed(
            _frame(subscribe_msg, self._serialize), _frame(unsubscribe_msg, self._serialize)
        )
        core = self._core
        stream = self._router.stream(filters)

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            core.multiplex.joined(entry, core.connections)
            try:
                inner = stream.subscribe(observer, scheduler=scheduler)
            except BaseException:
                core.multiplex.left(entry, core.connections)
                raise

            def dispose() -> None:
                inner.dispose()
                core.multiplex.left(entry, core.connections)

            return Disposable(dispose)

        return count_drops_in(reactivex.create(subscribe), core.events.stats)

    def topic(self, name: str) -> Observable[Any]:
        """The messages of one topic, on a client given ``subscriptions=``.

        Reference counted across every caller: the first subscriber subscribes the
        topic on the server (on a connection with room for it, opening one when all
        are full), the last one leaving unsubscribes it; the same topic asked for
        twice is one server-side subscription. Subscribers get the protocol's
        ``payload`` of each message (for Binance: its ``data``). A topic the server
        refuses errors with :class:`rxws.SubscriptionRejected`; other topics go on.

        Args:
            name: The topic, as the protocol names it (``"btcusdt@trade"``).

        Returns:
            A hot, reference-counted Observable.

        Raises:
            TypeError: ``name`` is not a non-empty string.
            ValueError: The client was made without ``subscriptions=``.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a topic is a non-empty string, got {name!r}")
        topics = self._topics
        if topics is None:
            raise ValueError(
                "topic() needs a client made with subscriptions= (for example "
                "rxws.protocols.Binance()); use multiplex() or stream() otherwise"
            )
        core = self._core
        router = self._router

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            if core.connections.closing:
                observer.on_completed()
                return Disposable()
            if core.connections.failed is not None:
                observer.on_error(core.connections.failed)
                return Disposable()
            topics.acquire(name, observer)
            try:
                hold = router.connect(
                    on_error=observer.on_error, on_completed=observer.on_completed
                )
            except BaseException:
                topics.release(name, observer)
                raise

            def dispose() -> None:
                topics.release(name, observer)
                hold.dispose()

            return Disposable(dispose)

        return reactivex.create(subscribe)

    # ------------------------------------------------------------------ sending

    @property
    def present(self) -> Any:
        """The newest open connection (a websockets connection), or ``None``."""
        return self._core.connections.present()

    async def send(self, msg: Any, *, timeout: float | None = None) -> None:
        """Send ``msg`` on the present connection, waiting for one if needed.

        Args:
            msg: ``str`` (text frame), ``bytes`` (binary frame), or anything
                ``serialize`` accepts.
            timeout: Seconds to wait for a connection (default: ``send_timeout``).

        Raises:
            NotConnected: No connection opened within the timeout, or the feed gave up
                (its error is the ``__cause__``).
            StreamClosed: The client is closed, or was closed while waiting.
            ConnectionLost: The connection broke while sending.
        """
        core = self._core
        if core.connections.closing:
            raise StreamClosed("this WebSocketClient")
        frame = _frame(msg, self._serialize)
        conn = await core.connections.wait_present(_check_timeout(timeout, self._send_timeout))
        try:
            await send_on(conn, frame, core.redactor)
        except ConnectionLost:
            if core.connections.closing:
                raise StreamClosed("this WebSocketClient") from None
            raise

    async def wait_connected(self, timeout: float | None = None) -> Any:
        """Wait until a connection is open and past ``on_open``; return it.

        Args:
            timeout: Seconds to wait (``None``: forever).

        Returns:
            The present connection.

        Raises:
            NotConnected: None opened within the timeout, or the feed gave up.
            StreamClosed: The client was closed meanwhile.
        """
        return await self._core.connections.wait_present(_check_timeout(timeout, float("inf")))

    def report(self, error: Exception) -> None:
        """Count a non-fatal error and publish it on :attr:`errors`.

        Layers built on the client (such as :mod:`rxws.compat`) report their own
        parse and subscriber errors here.

        Args:
            error: The error.
        """
        self._core.events.report(error)
