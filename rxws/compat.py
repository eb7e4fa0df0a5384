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
- a connection the server closes, cleanly or not, is reconnected with backoff;
- the replaced connection is really closed;
- handler errors are logged (logger ``rxws.compat``), not swallowed, and the handler
  stays subscribed;
- handlers get the message itself, not a deep copy per handler: do not mutate it;
- async handlers run in order, one task per handler (not one task per message), each
  with its own bounded buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from abc import ABCMeta, abstractmethod
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import reactivex
from reactivex import abc
from reactivex.disposable import CompositeDisposable, Disposable

from .bridge import AsyncStream, to_async_iterable
from .client import WebSocketClient
from .errors import ParseError
from .filters import Filters
from .router import Router

__all__ = ["AsyncWebsocketStreamInterface"]

log = logging.getLogger("rxws.compat")

Handler = Callable[[Any], Any]


def _drive(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` synchronously as far as it goes.

    Returns ``(True, result)`` when it finished without suspending, else
    ``(False, first_yield)`` with the coroutine suspended at its first await.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, yielded


async def _finish(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Finish, on the running loop, a coroutine that :func:`_drive` left suspended."""
    while True:
        if yielded is None:
            await asyncio.sleep(0)
        else:
            # The future the coroutine waits for; the coroutine reads its outcome itself.
            with contextlib.suppress(BaseException):
                await yielded
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value


def _parse_with(
    parse: Callable[[Any], Any], on_error: Callable[[Exception], None]
) -> Callable[[reactivex.Observable[Any]], reactivex.Observable[Any]]:
    """Apply a sync or async parser in order, with no task per frame.

    An async parser such as ``return json.loads(raw)`` finishes on its first step, so
    each frame is parsed inline. If it ever really suspends, that frame and the ones
    arriving meanwhile are parsed by one worker task, in order, until none are left.
    """

    def operator(source: reactivex.Observable[Any]) -> reactivex.Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            backlog: deque[Any] = deque()
            worker: list[asyncio.Task[None]] = []

            def failed(raw: Any, exc: Exception) -> None:
                size = len(raw) if isinstance(raw, (str, bytes)) else 0
                error = ParseError(exc, size)
                log.warning("%s", error)
                on_error(error)

            async def work(coro: Coroutine[Any, Any, Any], yielded: Any, raw: Any) -> None:
                try:
                    value = await _finish(coro, yielded)
                except Exception as exc:
                    failed(raw, exc)
                else:
                    observer.on_next(value)
                while backlog:
                    raw = backlog.popleft()
                    try:
                        value = parse(raw)
                        if inspect.iscoroutine(value):
                            value = await value
                    except Exception as exc:
                        failed(raw, exc)
                        continue
                    observer.on_next(value)

            def on_next(raw: Any) -> None:
                if worker and not worker[0].done():
                    backlog.append(raw)
                    return
                try:
                    value = parse(raw)
                    if inspect.iscoroutine(value):
                        coro = value
                        finished, value = _drive(coro)
                        if not finished:
                            worker[:] = [asyncio.ensure_future(work(coro, value, raw))]
                            return
                except Exception as exc:
                    failed(raw, exc)
                    return
                observer.on_next(value)

            sub = source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

            def cancel() -> None:
                backlog.clear()
                for task in worker:
                    task.cancel()

            return CompositeDisposable(sub, Disposable(cancel))

        return reactivex.create(subscribe)

    return operator


class AsyncWebsocketStreamInterface(metaclass=ABCMeta):
    """The old abstract websocket stream class, running on :class:`rxws.WebSocketClient`.

    Subclass it and implement :meth:`_create_ws`, :meth:`_when2create_new_ws` and
    :meth:`_parse_raw_data`. Construct it inside a running event loop: it connects at
    once.

    Attributes:
        stream_maxsize: Buffer size of each :meth:`stream_filter` stream.
        stream_overflow: What a full stream does (see :func:`rxws.to_async_iterable`).
        handler_maxsize: Buffer size of each async handler.
        client_options: Extra keyword arguments for the underlying
            :class:`rxws.WebSocketClient` (``backoff``, ``idle_timeout``, ...).
    """

    stream_maxsize: int = 10_000
    stream_overflow: str = "error"
    handler_maxsize: int = 10_000
    client_options: dict[str, Any] = {}

    def __init__(self) -> None:
        asyncio.get_running_loop()  # as before: must be created inside a running loop
        self._handlers: dict[Handler, abc.DisposableBase] = {}
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._streams: set[AsyncStream[Any]] = set()
        self._exited = False
        self._client = WebSocketClient(
            self._create_ws,
            parse=None,
            rotate_when=self._when2create_new_ws,
            **self.client_options,
        )
        # Parse once per message, then route through one index for every stream.
        self._router = Router(
            self._client.messages.pipe(_parse_with(self._parse_raw_data, self._client.report)),
            on_subscriber_error=self._client.report,
        )
        self._client.start_now()

    # ------------------------------------------------------------------ abstract

    @abstractmethod
    async def _create_ws(self) -> Any:
        """Open and return a new websockets connection."""

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
        """
        await self._client.send(msg)

    def stream_filter(self, _filters: Filters = None) -> AsyncStream[Any]:
        """An async iterator of the messages that ``_filters`` accepts.

        Args:
            _filters: A list of dicts: a message matches when all pairs of at least one
                dict are in it; ``None`` or ``[]`` for every message.

        Returns:
            An :class:`rxws.AsyncStream`; ``await stream.close()`` (or
            ``stream.close()``) when done with it.
        """
        stream: AsyncStream[Any] = self._router.stream(_filters).pipe(
            to_async_iterable(self.stream_maxsize, self.stream_overflow)  # type: ignore[arg-type]
        )
        self._streams.add(stream)
        return stream

    def add_handler(self, function_or_coroutine_function: Handler) -> None:
        """Call ``function_or_coroutine_function(msg)`` for every message.

        Sync handlers run inline; async handlers run in order in one task each. A
        handler that raises is logged and stays subscribed.

        Args:
            function_or_coroutine_function: ``def f(msg)`` or ``async def f(msg)``.
        """
        handler = function_or_coroutine_function
        if handler in self._handlers:
            return
        if inspect.iscoroutinefunction(handler):
            stream: AsyncStream[Any] = self._router.stream(None).pipe(
                to_async_iterable(self.handler_maxsize, "drop_oldest")
            )
            task = asyncio.ensure_future(self._run_async_handler(handler, stream))
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)

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
        """Stop calling a handler added with :meth:`add_handler`.

        Args:
            function_or_coroutine_function: The handler.
        """
        sub = self._handlers.pop(function_or_coroutine_function, None)
        if sub is not None:
            sub.dispose()

    async def _run_async_handler(self, handler: Handler, stream: AsyncStream[Any]) -> None:
        dropped = 0
        try:
            async for msg in stream:
                if stream.dropped != dropped:
                    self._client.stats.dropped += stream.dropped - dropped
                    log.warning(
                        "async handler %r is too slow: %d messages dropped so far",
                        handler,
                        stream.dropped,
                    )
                    dropped = stream.dropped
                try:
                    await handler(msg)
                except Exception:
                    log.exception("handler %r raised; it stays subscribed", handler)
        finally:
            await stream.aclose()

    async def wait_enter_handing_ws(self) -> None:
        """Wait until a connection is up and delivering."""
        await self._client.wait_connected()

    async def exit(self) -> None:
        """Close the connection, every stream and handler; leave no task behind."""
        if self._exited:
            return
        self._exited = True
        for sub in list(self._handlers.values()):
            sub.dispose()
        self._handlers.clear()
        tasks = list(self._handler_tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for stream in list(self._streams):
            await stream.aclose()
        self._streams.clear()
        await self._client.close()
