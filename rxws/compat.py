"""``AsyncWebsocketStreamInterface`` on rxws: existing subclasses run unchanged.

The class keeps the old abstract methods and public surface::

    class MyWs(AsyncWebsocketStreamInterface):
        async def _create_ws(self):            # an open websockets connection
            return await websockets.connect(url)
        async def _when2create_new_ws(self):   # returns when the connection must be replaced
            await asyncio.sleep(20 * 3600)
        async def _parse_raw_data(self, raw):  # frame -> message
            return json.loads(raw)

    ws = MyWs()                                # starts at once, in the running loop
    stream = ws.stream_filter([{"e": "trade"}])
    async for msg in stream: ...
    await stream.close()
    ws.add_handler(print)                      # sync or async callables
    await ws.send('{"method": "SUBSCRIBE", ...}')
    ws.present_ws                              # the live connection
    await ws.exit()

Underneath it is a :class:`rxws.WebSocketClient`: ``_create_ws`` supplies each
connection, ``_when2create_new_ws`` drives make-before-break rotation (it is called for
every new connection; its return replaces that connection), ``_parse_raw_data`` parses.

What behaves differently, on purpose:

- a stream is never closed because 20 messages queued up; it buffers up to
  :attr:`~AsyncWebsocketStreamInterface.stream_maxsize` messages and then raises
  :class:`rxws.StreamOverflow` from the iterator (nothing is dropped silently);
- a connection the server closes, cleanly or not, is reconnected with backoff, and a
  ``_create_ws`` that raises is tried again with backoff;
- on rotation the new connection is opened first, takes over with its first message
  (or after ``overlap_timeout`` on a quiet feed), and the replaced one is really closed;
- handler errors are logged (logger ``rxws.compat``), not swallowed, and the handler
  stays subscribed;
- handlers get the message itself, not a deep copy per handler: do not mutate it;
- async handlers run in order, one task per handler (not one task per message), each
  with its own bounded buffer;
- ``send`` waits for a connection for ``send_timeout`` seconds (10 by default), then
  raises :class:`rxws.NotConnected`; messages that are not ``str``/``bytes`` are sent
  as JSON;
- :meth:`~AsyncWebsocketStreamInterface.exit` ends every stream (``async for`` loops
  finish) and leaves no task behind; the instance cannot be used afterwards.

``_create_ws`` may also return a ``ws://``/``wss://`` URL: rxws then opens the
connection itself, with the URL's secrets (a listen key in the path) redacted from
websockets' own log lines too.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from abc import ABCMeta, abstractmethod
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, NoReturn

import reactivex
from reactivex import abc
from reactivex.disposable import Disposable

from ._redact import Redactor, redact_tokens
from .bridge import AsyncStream, Overflow, count_drops_in
from .client import WebSocketClient
from .errors import ConnectionFailed, ParseError, StreamClosed
from .filters import Filters
from .router import Router

__all__ = ["AsyncWebsocketStreamInterface", "FilterStream"]

log = logging.getLogger("rxws.compat")

Handler = Callable[[Any], Any]


def _redact_tokens(text: str) -> str:
    # Listen keys, tokens: long runs of URL-safe characters (Binance's keys are 60 long).
    return Redactor()(redact_tokens(text))


# ---------------------------------------------------------------------- streams


class _Done(Coroutine[Any, Any, None]):
    """A coroutine that is already finished: what :meth:`FilterStream.close` returns.

    ``await stream.close()``, ``asyncio.create_task(stream.close())`` (the old README's
    spelling) and a bare ``stream.close()`` all work, and the last one leaves no
    "never awaited" warning behind.
    """

    __slots__ = ()

    def send(self, value: Any) -> NoReturn:
        raise StopIteration

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> NoReturn:
        raise typ if val is None else val

    def close(self) -> None:
        return None

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that finishes at once

    def __repr__(self) -> str:
        return "<closed>"


_DONE = _Done()


class FilterStream(AsyncStream[Any]):
    """What :meth:`AsyncWebsocketStreamInterface.stream_filter` returns.

    An :class:`rxws.AsyncStream` whose :meth:`close` returns a finished coroutine, so
    the old ``asyncio.create_task(stream.close())`` works beside ``await stream.close()``.
    """

    def close(self) -> Coroutine[Any, Any, None]:
        """Close the stream now (idempotent); the result may be awaited or not.

        Returns:
            A coroutine that is already finished.
        """
        super().close()
        return _DONE


# ---------------------------------------------------------------------- parsing


class _Parsing:
    """One subscription of the parse stage: frames in, messages out, in order.

    Frames wait in a deque; one worker task per subscription (not per frame) runs
    ``_parse_raw_data`` on each in turn, awaits it, and passes the message on. The
    parser runs wholly inside that one task, as it ran inside the old class's reading
    task, so what it does with the current task (``asyncio.timeout``, ``wait_for``,
    context variables) behaves. A completion or error from upstream comes after the
    frames that arrived before it.
    """

    __slots__ = ("backlog", "ended", "failing", "observer", "owner", "waiter", "worker")

    def __init__(
        self, owner: AsyncWebsocketStreamInterface, observer: abc.ObserverBase[Any]
    ) -> None:
        self.owner = owner
        self.observer = observer
        self.backlog: deque[Any] = deque()
        self.ended: tuple[Exception | None] | None = None
        self.failing = False  # the last frame failed to parse (log once per burst)
        self.waiter: asyncio.Future[None] | None = None
        self.worker = owner._spawn(self.work())

    def on_next(self, raw: Any) -> None:
        self.backlog.append(raw)
        if self.waiter is not None:
            self.wake()

    def on_end(self, error: Exception | None = None) -> None:
        self.ended = (error,)  # passed on once the backlog is empty
        self.wake()

    def wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def work(self) -> None:
        backlog = self.backlog
        parse: Callable[[Any], Any] = self.owner._parse_raw_data
        on_next = self.observer.on_next
        loop = asyncio.get_running_loop()
        while True:
            while backlog:
                raw = backlog.popleft()
                try:
                    msg = parse(raw)
                    # A coroutine, or any other awaitable (a Future from run_in_executor)
                    # as the old class awaited it; a plain def's dict is neither.
                    if type(msg) is not dict and inspect.isawaitable(msg):
                        msg = await msg
                except Exception as exc:
                    self.failed(raw, exc)
                    continue
                self.failing = False
                on_next(msg)
            if self.ended is not None:
                error = self.ended[0]
                if error is None:
                    self.observer.on_completed()
                else:
                    self.observer.on_error(error)
                return
            self.waiter = loop.create_future()
            await self.waiter

    def failed(self, raw: Any, exc: Exception) -> None:
        error = ParseError(exc, len(raw) if isinstance(raw, (str, bytes)) else 0)
        if not self.failing:
            self.failing = True
            log.warning("_parse_raw_data failed: %s", error, exc_info=exc)
        self.owner._client.report(error)

    def dispose(self) -> None:
        self.backlog.clear()
        self.worker.cancel()


# ---------------------------------------------------------------------- rotation


class _WouldWait(Exception):
    """``_parse_raw_data`` waited for something: it cannot parse a frame synchronously."""


class _ParsedDedupe:
    """``client_options["dedupe"]`` as the client calls it: on frames, not messages.

    The client (parse=None) hands rotation raw frames; this parses each one with
    ``_parse_raw_data`` before asking the user's ``dedupe`` for its id. The client calls
    it synchronously, so the parser is driven to its end without the loop: fine for a
    parser that returns without waiting (``async def`` around ``json.loads``). One that
    really waits cannot be driven; its frames are then compared whole (identical frames
    are the same message), with a warning once.
    """

    __slots__ = ("dedupe", "owner", "warned")

    def __init__(self, owner: AsyncWebsocketStreamInterface, dedupe: Callable[[Any], Any]) -> None:
        self.owner = owner
        self.dedupe = dedupe
        self.warned = False

    def __call__(self, frame: Any) -> Any:
        try:
            msg = self.parse(frame)
        except _WouldWait:
            if not self.warned:
                self.warned = True
                log.warning(
                    "%s._parse_raw_data waits for something, so client_options['dedupe'] "
                    "cannot see parsed messages during a rotation: identical frames count as "
                    "the same message instead",
                    type(self.owner).__name__,
                )
            return frame
        except Exception:
            return None  # the parse stage reports the frame; it has no id
        try:
            return self.dedupe(msg)
        except Exception as exc:
            raise ValueError(
                f"{type(self.owner).__name__}.client_options['dedupe'] raised "
                f"{type(exc).__name__} ({exc}) on a message parsed by _parse_raw_data; it "
                "must return the message's id, or None for a message without one"
            ) from exc

    def parse(self, frame: Any) -> Any:
        result: Any = self.owner._parse_raw_data(frame)
        if inspect.iscoroutine(result):
            try:
                while True:
                    if result.send(None) is not None:  # a future: a real wait
                        raise _WouldWait
                    # None: a bare yield (asyncio.sleep(0)); going on changes nothing
            except StopIteration as finished:
                return finished.value
            finally:
                result.close()
        if type(result) is not dict and inspect.isawaitable(result):
            if isinstance(result, asyncio.Future) and result.done():
                return result.result()
            raise _WouldWait
        return result


class _Deferred:
    """An awaitable that calls ``make()`` for the coroutine only when awaited."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.make = make

    def __await__(self) -> Generator[Any, None, None]:
        return self.make().__await__()


# ---------------------------------------------------------------------- the class


class AsyncWebsocketStreamInterface(metaclass=ABCMeta):
    """The old abstract websocket stream class, running on :class:`rxws.WebSocketClient`.

    Subclass it and implement :meth:`_create_ws`, :meth:`_when2create_new_ws` and
    :meth:`_parse_raw_data`. Construct it inside a running event loop: it connects at
    once.

    Attributes:
        stream_maxsize: Buffer size of each :meth:`stream_filter` stream.
        stream_overflow: What a full stream does (see :func:`rxws.to_async_iterable`):
            ``"error"`` raises :class:`rxws.StreamOverflow` from the iterator.
        handler_maxsize: Buffer size of each async handler.
        handler_overflow: What a full async handler buffer does; ``"drop_oldest"``
            drops (counted in ``client.stats.dropped`` and logged as a warning).
        rotation_min_interval: Seconds at least between the call of
            :meth:`_when2create_new_ws` for a connection and that connection's
            replacement, as before: a hook that returns at once does not make a storm
            of connections.
        client_options: Extra keyword arguments for the underlying
            :class:`rxws.WebSocketClient` (``backoff``, ``idle_timeout``,
            ``overlap_timeout``, ``send_timeout``, ``dedupe``, ...). ``dedupe`` gets
            messages parsed by :meth:`_parse_raw_data`, like the streams (during a
            rotation's overlap each frame is then parsed once more for it).
    """

    stream_maxsize: int = 10_000
    stream_overflow: Overflow = "error"
    handler_maxsize: int = 10_000
    handler_overflow: Overflow = "drop_oldest"
    rotation_min_interval: float = 1.0
    client_options: dict[str, Any] = {}

    def __init__(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"create {type(self).__name__} inside a running asyncio event loop (in an "
                "async def): it connects at once"
            ) from None
        self._handlers: dict[Handler, abc.DisposableBase] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._exited = False
        open_ws = self._open_ws

        async def create_ws() -> Any:
            return await open_ws()

        create_ws.__qualname__ = f"{type(self).__qualname__}._create_ws"  # for client logs
        options = dict(self.client_options)
        dedupe = options.pop("dedupe", None)
        if dedupe is not None:
            if not callable(dedupe):
                raise TypeError(
                    "client_options['dedupe'] must be a callable message -> id, got "
                    f"{type(dedupe).__name__}"
                )
            # The client parses nothing (parse=None): give dedupe parsed messages.
            options["dedupe"] = _ParsedDedupe(self, dedupe)
        self._client = WebSocketClient(
            create_ws,
            parse=None,
            rotate_when=self._rotation_signal,
            **options,
        )
        # Parse once per frame, then route through one index for every stream.
        self._router: Router[Any] = Router(
            self._client.messages.pipe(self._parse_stage),
            on_subscriber_error=self._client.report,
        )
        self._client.start_now()

    # ------------------------------------------------------------------ abstract

    @abstractmethod
    async def _create_ws(self) -> Any:
        """Open and return a new websockets connection (or return a ws:// URL)."""

    @abstractmethod
    async def _when2create_new_ws(self) -> None:
        """Return (or raise) when the present connection should be replaced."""

    @abstractmethod
    async def _parse_raw_data(self, raw_data: Any) -> Any:
        """Turn one frame into a message."""

    # ------------------------------------------------------------------ public

    @property
    def client(self) -> WebSocketClient:
        """The :class:`rxws.WebSocketClient` underneath (status, errors, stats, streams)."""
        return self._client

    @property
    def present_ws(self) -> Any:
        """The live websockets connection, or ``None`` while (re)connecting."""
        return self._client.present

    async def send(self, msg: Any) -> None:
        """Send ``msg`` on the present connection, waiting for one if needed.

        Args:
            msg: ``str``/``bytes``, or anything JSON can represent.

        Raises:
            NotConnected: No connection within ``client_options["send_timeout"]``
                (10 s by default).
            StreamClosed: :meth:`exit` was called.
        """
        await self._client.send(msg)

    def stream_filter(self, _filters: Filters = None) -> FilterStream:
        """An async iterator of the messages that ``_filters`` accepts.

        Args:
            _filters: A list of dicts: a message matches when all pairs of at least one
                dict are in it; ``None`` or ``[]`` for every message.

        Returns:
            A :class:`FilterStream` (an :class:`rxws.AsyncStream`);
            ``await stream.close()`` (or ``stream.close()``) when done with it. It raises
            :class:`rxws.StreamOverflow` when :attr:`stream_maxsize` messages are
            waiting to be read, and ends when :meth:`exit` is called.

        Raises:
            TypeError: ``_filters`` is not a list of dicts.
            StreamClosed: :meth:`exit` was called.
        """
        self._check_open()
        return FilterStream(self._stream(_filters), self.stream_maxsize, self.stream_overflow)

    def add_handler(self, function_or_coroutine_function: Handler) -> None:
        """Call ``function_or_coroutine_function(msg)`` for every message.

        Sync handlers run inline, in the order messages arrive; each async handler runs
        in one task of its own that awaits it for each message in order. A handler that
        raises is logged (logger ``rxws.compat``) and stays subscribed. Adding the same
        handler again does nothing.

        Args:
            function_or_coroutine_function: ``def f(msg)`` or ``async def f(msg)``.

        Raises:
            TypeError: The handler is not callable.
            StreamClosed: :meth:`exit` was called.
        """
        handler = function_or_coroutine_function
        if not callable(handler):
            raise TypeError(
                f"add_handler needs a function or coroutine function taking one message, "
                f"got {type(handler).__name__}"
            )
        self._check_open()
        if handler in self._handlers:
            return
        if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004  (an object with async __call__)
        ):
            stream: AsyncStream[Any] = AsyncStream(
                self._stream(None), self.handler_maxsize, self.handler_overflow
            )
            task = self._spawn(self._run_async_handler(handler, stream))

            def stop() -> None:
                stream.close()
                task.cancel()

            self._handlers[handler] = Disposable(stop)
        else:

            def call(msg: Any) -> None:
                try:
                    handler(msg)
                except Exception:
                    log.exception("handler %r raised; it stays subscribed", handler)

            self._handlers[handler] = self._router.stream(None).subscribe(call)

    def remove_handler(self, function_or_coroutine_function: Handler) -> None:
        """Stop calling a handler added with :meth:`add_handler` (no error if absent).

        Args:
            function_or_coroutine_function: The handler.
        """
        sub = self._handlers.pop(function_or_coroutine_function, None)
        if sub is not None:
            sub.dispose()

    async def wait_enter_handing_ws(self) -> None:
        """Wait until a connection is up and delivering."""
        await self._client.wait_connected()

    async def exit(self) -> None:
        """Close the connection and end every stream and handler; leave no task behind.

        ``async for`` loops over :meth:`stream_filter` streams finish after the messages
        already buffered. Safe to call more than once.
        """
        if self._exited:
            return
        self._exited = True
        # Closes the connections and cancels _when2create_new_ws; every stream completes.
        await self._client.close()
        self._router.complete()
        for sub in list(self._handlers.values()):
            sub.dispose()
        self._handlers.clear()
        me = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not me]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ internals

    def _stream(self, filters: Filters) -> reactivex.Observable[Any]:
        """A routed stream whose async iterators count their drops in the client's stats."""
        return count_drops_in(self._router.stream(filters), self._client.stats)

    def _check_open(self) -> None:
        if self._exited:
            raise StreamClosed(f"this {type(self).__name__} (exit() was called)")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _open_ws(self) -> Any:
        """The client's url callable: :meth:`_create_ws`, any failure made retryable.

        As before, a ``_create_ws`` that raises (network down, listen key request
        refused, ...) is tried again, now with backoff instead of every second.
        """
        try:
            return await self._create_ws()
        except Exception as exc:
            # The message may hold the URL the subclass built: blank token-like parts.
            reason = f"{type(exc).__name__}: {_redact_tokens(str(exc))}"
            log.warning("_create_ws raised %s; trying again", reason)
            raise ConnectionFailed(f"{type(self).__name__}._create_ws", reason) from exc

    def _parse_stage(self, source: reactivex.Observable[Any]) -> reactivex.Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            parsing = _Parsing(self, observer)
            sub = source.subscribe(parsing.on_next, parsing.on_end, parsing.on_end)

            def dispose() -> None:
                sub.dispose()
                parsing.dispose()

            return Disposable(dispose)

        return reactivex.create(subscribe)

    def _rotation_signal(self) -> _Deferred:
        """``rotate_when``: an awaitable that returns when the connection must go.

        The coroutine is made only once it is awaited, so a rotation task cancelled
        before it ever ran (an :meth:`exit` right after construction) leaves no
        never-awaited coroutine behind.
        """
        return _Deferred(self._rotation_due)

    async def _rotation_due(self) -> None:
        """Return when :meth:`_when2create_new_ws` says the connection must be replaced."""
        task = asyncio.current_task()
        if task is not None:  # cancelled by the client on exit; awaited there too
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        loop = asyncio.get_running_loop()
        earliest = loop.time() + self.rotation_min_interval
        try:
            await self._when2create_new_ws()
        except Exception:
            log.warning("_when2create_new_ws raised; replacing the connection", exc_info=True)
        delay = earliest - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        log.debug("_when2create_new_ws returned; replacing the connection")

    async def _run_async_handler(self, handler: Handler, stream: AsyncStream[Any]) -> None:
        dropped = 0
        try:
            async for msg in stream:
                if stream.dropped != dropped:  # counted in client.stats.dropped too
                    dropped = stream.dropped
                    log.warning(
                        "async handler %r is too slow: %d messages dropped so far",
                        handler,
                        dropped,
                    )
                try:
                    await handler(msg)
                except Exception:
                    log.exception("handler %r raised; it stays subscribed", handler)
        except Exception as exc:
            log.error("async handler %r stops: %s", handler, exc)
        finally:
            await stream.aclose()
