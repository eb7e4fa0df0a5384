"""Observable <-> async iterator: ``async for`` over an Observable, and back.

::

    source ──a──b──c──d──|          source.pipe(to_async_iterable(maxsize=2))
              buffer [a b]          ``async for`` drains the buffer, in order;
    async for: a, b, c, d, (end)    completion ends the loop once the buffer is empty

    source ──a──b──c──X             an error is raised from ``__anext__``
    async for: a, b, c, raise X     after the buffered items were delivered

:func:`to_async_iterable` subscribes at once and buffers into a bounded deque; when the
buffer is full, the ``overflow`` policy decides what happens, and nothing is ever lost
without a trace: ``"error"`` fails the stream at once with :class:`rxws.StreamOverflow`
(logged as a warning), the drop policies count what they drop in
:attr:`AsyncStream.dropped` (and in the client's ``stats.dropped`` for a client's
stream).

Inside a running loop it subscribes with an ``AsyncIOScheduler`` for that loop, so
time-based operators upstream (``buffer_with_time``, ``interval``, ``debounce``) run on
the loop rather than on a timer thread. Items may still come from another thread (an
operator given a scheduler of its own): they are appended to the buffer where they
arrive (``deque.append`` is atomic and keeps their order), and what else must happen
(waking the consumer, a drop, an error, the completion) is handed to the loop with
``call_soon_threadsafe``. An item costs no thread check unless the buffer is full or
the consumer is waiting.

:func:`from_async_iterable` turns an async iterable into an Observable whose every
subscription iterates it in a task on the running loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import warnings
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Generator
from threading import get_ident
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

import reactivex
from reactivex import abc
from reactivex.disposable import Disposable
from reactivex.scheduler.eventloop import AsyncIOScheduler, AsyncIOThreadSafeScheduler

from .errors import StreamOverflow

__all__ = [
    "AsyncStream",
    "DropCounter",
    "Overflow",
    "count_drops_in",
    "from_async_iterable",
    "to_async_iterable",
]

log = logging.getLogger("rxws.bridge")

T = TypeVar("T")

Overflow = Literal["error", "drop_oldest", "drop_newest", "unbounded"]
"""What an :class:`AsyncStream` does with an item that arrives while its buffer is full."""

_OVERFLOWS: tuple[str, ...] = get_args(Overflow)

# Strong references to running iteration tasks, so none is garbage-collected mid-flight.
_TASKS: set[asyncio.Task[None]] = set()

# The attribute of an Observable that names who else counts its streams' drops.
_DROP_COUNTER = "_rxws_drop_counter"


class DropCounter(Protocol):
    """Anything with an integer ``dropped`` attribute, such as a client's ``stats``."""

    dropped: int


def count_drops_in(
    source: reactivex.Observable[T], counter: DropCounter
) -> reactivex.Observable[T]:
    """Mark ``source`` so that the streams made from it count their drops in ``counter`` too.

    An :class:`AsyncStream` made directly from ``source``
    (``source.pipe(to_async_iterable(...))``) then adds every item it drops to
    ``counter.dropped`` as well as to its own :attr:`~AsyncStream.dropped`.
    :class:`rxws.WebSocketClient` marks its streams this way, so that its
    ``stats.dropped`` covers the bounded buffers of its consumers. The mark is read
    once, when the stream is made: nothing is added to the per-item path.

    Args:
        source: The Observable to mark (an Observable that takes no attributes is
            left as it is: its streams count only their own drops).
        counter: Where drops are counted as well.

    Returns:
        ``source`` itself.
    """
    try:
        setattr(source, _DROP_COUNTER, counter)
    except AttributeError:
        log.debug("%s takes no attributes; its streams count only their own drops", source)
    return source


def _check_args(maxsize: object, overflow: object) -> None:
    if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
        raise ValueError(
            f"maxsize must be an int >= 1 (the most items buffered before the overflow "
            f'policy applies; overflow="unbounded" lifts the limit), got {maxsize!r}'
        )
    if overflow not in _OVERFLOWS:
        raise ValueError(
            f"overflow must be one of {', '.join(repr(o) for o in _OVERFLOWS)}, got {overflow!r}"
        )


class _Closed:
    """The already-finished awaitable that :meth:`AsyncStream.close` returns."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # makes this a generator that finishes at once

    def __repr__(self) -> str:
        return "<closed>"


_CLOSED = _Closed()


class _Sink(Generic[T]):
    """The observer side of an :class:`AsyncStream`: the buffer and the consumer's waiter.

    Kept apart from the stream so that the upstream holds only the sink: a stream the
    user lets go of is collected (and its subscription disposed) even while its source
    is alive.
    """

    __slots__ = (
        "buffer",
        "counter",
        "done",
        "dropped",
        "error",
        "limit",
        "loop",
        "maxsize",
        "overflow",
        "subscription",
        "thread",
        "waiter",
    )

    def __init__(self, maxsize: int, overflow: Overflow, counter: DropCounter | None) -> None:
        self.buffer: deque[T] = deque()
        self.maxsize = maxsize
        self.overflow = overflow
        # Items are appended while len(buffer) < limit; -1 sends every item to _full.
        self.limit = sys.maxsize if overflow == "unbounded" else maxsize
        self.waiter: asyncio.Future[None] | None = None
        self.dropped = 0
        self.counter = counter  # a client's stats, which count the drops too
        self.done = False
        self.error: BaseException | None = None
        self.subscription: abc.DisposableBase | None = None
        # The consumer's loop and its thread. Another thread only ever appends to the
        # buffer (deque.append is atomic, and keeps the order); everything else it would
        # do (wake the consumer, drop, end) is handed over to the loop. No loop yet for a
        # stream made outside one: its consumer's first wait sets it.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = get_ident()

    def hand_over(self, call: Callable[..., None], *args: Any) -> bool:
        """Run ``call(*args)`` on the consumer's loop, when called from another thread.

        Returns:
            False on the loop's thread, or when no loop is known yet: the caller then
            runs it itself, where it is.
        """
        loop = self.loop
        if loop is None or get_ident() == self.thread:
            return False
        try:
            loop.call_soon_threadsafe(call, *args)
        except RuntimeError:  # the loop is closed: nobody can read the stream any more
            log.debug("an AsyncStream's loop is closed; a late call from a thread is ignored")
        return True

    # Hot path: called once per item, inside the upstream's on_next. Nothing here but
    # the append runs until the buffer is full or a consumer waits, on any thread.
    def on_next(self, item: T) -> None:
        buffer = self.buffer
        if len(buffer) < self.limit:
            buffer.append(item)
            waiter = self.waiter
            if waiter is not None:  # the consumer waits for this item: wake it
                if get_ident() == self.thread:
                    self.waiter = None
                    if not waiter.done():
                        waiter.set_result(None)
                elif not self.hand_over(self.wake):
                    self.wake()
        else:
            self._full(item)

    def _full(self, item: T) -> None:
        if self.done or self.limit < 0:
            return  # ended or closed: late items (during a synchronous subscribe) go nowhere
        if self.loop is not None and get_ident() != self.thread:
            self._full_elsewhere(item)
            return
        overflow = self.overflow
        if overflow == "error":
            self._overflowed()
            return
        self._count_dropped(1)
        if overflow == "drop_oldest":
            buffer = self.buffer
            buffer.popleft()
            buffer.append(item)
        # "drop_newest": the item is not kept; it was counted above.

    def _full_elsewhere(self, item: T) -> None:
        """:meth:`_full` on another thread than the loop's, which pops from the buffer."""
        overflow = self.overflow
        if overflow == "drop_oldest":
            self.buffer.append(item)  # in order; the loop trims the oldest
            self.hand_over(self._trim)
        elif overflow == "drop_newest":
            self.hand_over(self._count_dropped, 1)
        else:  # "error": no more items from now on; the loop fails the stream
            self.limit = -1
            self.hand_over(self._overflowed)

    def _trim(self) -> None:
        """``drop_oldest`` for items appended by another thread: back to ``maxsize``."""
        buffer = self.buffer
        excess = len(buffer) - self.maxsize
        if excess > 0 and self.limit >= 0:
            for _ in range(excess):
                buffer.popleft()
            self._count_dropped(excess)

    def _overflowed(self) -> None:
        """``overflow="error"``: fail now, not after the consumer has read the buffer."""
        if self.done:
            return
        buffered = len(self.buffer)
        self.limit = -1
        self.buffer.clear()
        self._count_dropped(buffered + 1)
        log.warning(
            "an AsyncStream's buffer of %d items was full when another one arrived "
            '(overflow="error"): the stream fails with StreamOverflow and its %d buffered '
            "items are dropped; read it faster, raise maxsize or choose another overflow "
            "policy",
            self.maxsize,
            buffered,
        )
        self._end(StreamOverflow(self.maxsize))
        self.unsubscribe()

    def _count_dropped(self, count: int) -> None:
        self.dropped += count
        counter = self.counter
        if counter is not None:
            counter.dropped += count

    def on_error(self, error: Exception) -> None:
        if not self.hand_over(self._end, error):
            self._end(error)

    def on_completed(self) -> None:
        if not self.hand_over(self._end, None):
            self._end(None)

    def _end(self, error: BaseException | None) -> None:
        if self.done:
            return
        self.error = error  # before done: a consumer that sees done finds the error
        self.done = True
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def unsubscribe(self) -> None:
        subscription, self.subscription = self.subscription, None
        if subscription is not None:
            subscription.dispose()


class _LoopScheduler(AsyncIOThreadSafeScheduler):
    """The running loop's scheduler, which also takes work from other threads.

    Upstream operators schedule on the scheduler given at subscribe time. Most do so
    on the loop's thread, where this is a plain ``AsyncIOScheduler`` (``call_soon``);
    an operator fed by one of reactivex's timer threads (``reactivex.throw`` inside a
    ``flat_map`` over a ``TimeoutScheduler`` timer, say) schedules from that thread,
    where the work is handed to the loop with ``call_soon_threadsafe``, which also
    wakes the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._thread = get_ident()

    def schedule(
        self, action: abc.ScheduledAction[Any], state: Any | None = None
    ) -> abc.DisposableBase:
        """Schedule ``action`` on the loop, from any thread."""
        if get_ident() == self._thread:
            return AsyncIOScheduler.schedule(self, action, state)
        return super().schedule(action, state)


class AsyncStream(AsyncIterator[T]):
    """An Observable's items as an async iterator, through a bounded buffer.

    Usually made with ``observable.pipe(rxws.to_async_iterable(...))``. It subscribes to
    ``source`` at once and buffers what arrives until it is read with ``async for`` (or
    ``await stream.__anext__()``). One consumer at a time: a second task waiting on the
    same empty stream gets ``RuntimeError``.

    When an item arrives and ``maxsize`` items are already buffered, ``overflow`` decides:

    - ``"error"``: the stream fails at once: the upstream subscription is disposed, the
      buffered items and the new one are dropped (and counted), a WARNING is logged
      (logger ``rxws.bridge``), and the next ``__anext__`` raises
      :class:`rxws.StreamOverflow`. Nothing is lost silently.
    - ``"drop_oldest"``: the oldest buffered item makes room for the new one.
    - ``"drop_newest"``: the new item is dropped.
    - ``"unbounded"``: no limit (``maxsize`` is not enforced); memory grows as long as
      the consumer lags. An explicit opt-in.

    Dropped items are counted in :attr:`dropped`, and also in the client's
    ``stats.dropped`` when ``source`` is a :class:`rxws.WebSocketClient`'s stream (see
    :func:`count_drops_in`). When the source completes, iteration ends after the buffer
    is drained; when it errors, the error is raised from ``__anext__`` after the buffer
    is drained (once; the stream then ends).

    :meth:`close` (sync) and :meth:`aclose` (async) are idempotent: they dispose the
    upstream subscription, clear the buffer and end the iteration, also for a consumer
    that is waiting in ``__anext__`` at that moment (from another task). ``async with``
    closes on exit. A stream dropped while still subscribed and never closed emits a
    ``ResourceWarning`` and disposes its subscription when it is garbage-collected.

    Made inside a running loop, it subscribes with an ``AsyncIOScheduler`` for that
    loop: time-based operators upstream (``buffer_with_time``, ``interval``) run on the
    loop, not on a timer thread, unless given a scheduler of their own. Items, errors
    and completion may come from any thread: another thread's items are appended in
    order, and waking the consumer, drops, errors and completion are handed to the loop
    with ``call_soon_threadsafe``. The stream can also be made outside a running loop (a
    synchronous source fills it right away, with no scheduler); the loop is looked up
    when the consumer first has to wait, and only from then on is anything handed over.
    Close it from the loop's thread.

    Args:
        source: The Observable to subscribe to.
        maxsize: The most items buffered before ``overflow`` applies (an int >= 1).
        overflow: ``"error"``, ``"drop_oldest"``, ``"drop_newest"`` or ``"unbounded"``.

    Raises:
        ValueError: ``maxsize`` is not an int >= 1, or ``overflow`` is not one of the four.

    Example:
        >>> async def main(feed):
        ...     async with feed.pipe(to_async_iterable(maxsize=1000)) as stream:
        ...         async for message in stream:
        ...             print(message)
    """

    def __init__(
        self,
        source: reactivex.Observable[T],
        maxsize: int = 10_000,
        overflow: Overflow = "error",
    ) -> None:
        _check_args(maxsize, overflow)
        self._closed = False
        counter: DropCounter | None = getattr(source, _DROP_COUNTER, None)
        sink: _Sink[T] = _Sink(maxsize, overflow, counter)
        self._sink = sink
        self._buffer = sink.buffer  # the consumer's fast path reads it directly
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            subscription = source.subscribe(sink.on_next, sink.on_error, sink.on_completed)
        else:
            sink.loop = loop
            subscription = source.subscribe(
                sink.on_next, sink.on_error, sink.on_completed, scheduler=_LoopScheduler(loop)
            )
        sink.subscription = subscription
        if sink.done:  # ended while subscribing: let go at once
            sink.unsubscribe()

    # ------------------------------------------------------------------ state

    @property
    def maxsize(self) -> int:
        """The buffer size the stream was made with (not enforced when unbounded)."""
        return self._sink.maxsize

    @property
    def overflow(self) -> Overflow:
        """The overflow policy (see :class:`AsyncStream` for what each one does)."""
        return self._sink.overflow

    @property
    def dropped(self) -> int:
        """How many items were dropped because the buffer was full."""
        return self._sink.dropped

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`aclose` was called."""
        return self._closed

    def __len__(self) -> int:
        """How many items are buffered, waiting to be read."""
        return len(self._buffer)

    def __repr__(self) -> str:
        sink = self._sink
        if self._closed:
            state = "closed"
        elif not sink.done:
            state = "open"
        elif sink.error is None:
            state = "completed"
        else:
            state = f"ended with {type(sink.error).__name__}"
        return (
            f"<AsyncStream {state} buffered={len(self._buffer)} maxsize={sink.maxsize} "
            f"overflow={sink.overflow!r} dropped={sink.dropped}>"
        )

    # ------------------------------------------------------------------ iteration

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        buffer = self._buffer
        if buffer:
            return buffer.popleft()
        return await self._wait()

    async def _wait(self) -> T:
        sink = self._sink
        buffer = self._buffer
        while True:
            if self._closed:
                raise StopAsyncIteration
            if buffer:
                return buffer.popleft()
            if sink.done:
                error, sink.error = sink.error, None
                if error is None:
                    raise StopAsyncIteration
                raise error
            if sink.waiter is not None and not sink.waiter.done():
                raise RuntimeError(
                    "another task is already waiting on this AsyncStream; a stream has one "
                    "consumer (pipe the Observable into one stream per consumer)"
                )
            loop = asyncio.get_running_loop()
            if sink.loop is not loop:  # made outside a loop: from now on, this one
                sink.loop = loop
                sink.thread = get_ident()
            waiter: asyncio.Future[None] = loop.create_future()
            sink.waiter = waiter
            # Another thread may have appended after the check above and before it saw
            # the waiter: look again (the waiter set first, so one of the two sees it).
            if buffer or sink.done:
                sink.waiter = None
                continue
            try:
                await waiter
            finally:
                if sink.waiter is waiter:
                    sink.waiter = None

    # ------------------------------------------------------------------ closing

    def close(self) -> Awaitable[None]:
        """Dispose the upstream subscription, drop the buffer and end the iteration.

        Idempotent. A consumer waiting in ``__anext__`` wakes up and its iteration ends
        (``StopAsyncIteration``). Sync, so it can be called from anywhere on the loop;
        it returns an already-finished awaitable, so ``await stream.close()`` (the
        AsyncWebsocketStreamInterface spelling) works too.

        Returns:
            An awaitable that is already done.
        """
        if not self._closed:
            self._closed = True
            sink = self._sink
            sink.limit = -1
            self._buffer.clear()
            sink.error = None
            sink.unsubscribe()
            sink.wake()
        return _CLOSED

    async def aclose(self) -> None:
        """Like :meth:`close`, as a coroutine (idempotent)."""
        self.close()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        sink: _Sink[T] | None = getattr(self, "_sink", None)
        if sink is None or self._closed or sink.done or sink.subscription is None:
            return
        message = f"unclosed {self!r}: call close() or aclose(), or use 'async with'"
        # Let go first, so the source is released even where warnings are errors.
        try:
            sink.limit = -1
            sink.unsubscribe()
        except Exception:
            log.debug("disposing an unclosed AsyncStream's subscription failed", exc_info=True)
        warnings.warn(message, ResourceWarning, stacklevel=1, source=self)


def to_async_iterable(
    maxsize: int = 10_000, overflow: Overflow = "error"
) -> Callable[[reactivex.Observable[T]], AsyncStream[T]]:
    """Turn an Observable into an :class:`AsyncStream` for ``async for``.

    Pipeable: ``observable.pipe(rxws.to_async_iterable())``. Applying it subscribes at
    once and buffers up to ``maxsize`` items; see :class:`AsyncStream` for the
    ``overflow`` policies, completion, errors and closing.

    ::

        source ──a──b──c──|       async for x in source.pipe(to_async_iterable()):
        yields    a  b  c  (end)

    Args:
        maxsize: The most items buffered before ``overflow`` applies (an int >= 1).
        overflow: When the buffer is full: ``"error"`` (fail the stream at once: the
            next ``__anext__`` raises :class:`rxws.StreamOverflow`), ``"drop_oldest"``,
            ``"drop_newest"``, or ``"unbounded"`` (no limit).

    Returns:
        A function from an Observable to a subscribed :class:`AsyncStream`.

    Raises:
        ValueError: ``maxsize`` is not an int >= 1, or ``overflow`` is not one of the four.

    Example:
        >>> async def main():
        ...     async with rxws.connect(url).pipe(rxws.to_async_iterable()) as stream:
        ...         async for message in stream:
        ...             ...
    """
    _check_args(maxsize, overflow)

    def to_stream(source: reactivex.Observable[T]) -> AsyncStream[T]:
        return AsyncStream(source, maxsize, overflow)

    return to_stream


async def _close_iterator(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.warning("closing the async iterator raised; ignored", exc_info=True)


def _task_done(task: asyncio.Task[None]) -> None:
    _TASKS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("an async-iterable task failed", exc_info=task.exception())


def from_async_iterable(aiter: AsyncIterable[T]) -> reactivex.Observable[T]:
    """An Observable of an async iterable's items.

    Each subscription calls ``aiter.__aiter__()`` and iterates it in a task on the
    running loop, pushing every item to the observer; the end of the iteration completes
    the Observable and an exception errors it. Disposing the subscription stops the
    iteration (cancelling the task if it is waiting for the next item) and calls the
    iterator's ``aclose()`` when it has one, so an async generator's ``finally`` runs.
    An observer that raises in ``on_next`` gets the exception in ``on_error``, and the
    iteration stops.

    An async generator object can be iterated only once; for an Observable that can be
    subscribed again, pass an object whose ``__aiter__`` starts afresh each time.

    ::

        async gen: yield a, yield b, return      from_async_iterable(gen)
                                                 ──a──b──|

    Args:
        aiter: An async iterable (anything with ``__aiter__``), such as an async
            generator or an :class:`AsyncStream`.

    Returns:
        An Observable that must be subscribed to inside a running asyncio loop.

    Raises:
        TypeError: ``aiter`` is not an async iterable.
    """
    if not callable(getattr(aiter, "__aiter__", None)):
        hint = (
            "; for a plain iterable use reactivex.from_iterable"
            if callable(getattr(aiter, "__iter__", None))
            else ""
        )
        raise TypeError(
            "from_async_iterable needs an async iterable (an object with __aiter__, such as "
            f"an async generator), got {type(aiter).__name__}{hint}"
        )

    def subscribe(
        observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "subscribe to rxws.from_async_iterable(...) from inside a running asyncio "
                "event loop (for example in an async def run by asyncio.run)"
            ) from None
        stopped = False

        async def pump() -> None:
            iterator = aiter.__aiter__()
            finished = False
            try:
                while not stopped:
                    try:
                        item = await iterator.__anext__()
                    except StopAsyncIteration:
                        finished = True
                        observer.on_completed()
                        return
                    except Exception as exc:
                        finished = True
                        observer.on_error(exc)
                        return
                    try:
                        observer.on_next(item)
                    except Exception as exc:
                        log.warning(
                            "an observer of from_async_iterable raised in on_next; "
                            "stopping the iteration",
                            exc_info=True,
                        )
                        observer.on_error(exc)
                        return
            finally:
                if not finished:
                    await _close_iterator(iterator)

        task = loop.create_task(pump(), name="rxws.from_async_iterable")
        _TASKS.add(task)
        task.add_done_callback(_task_done)

        def dispose() -> None:
            nonlocal stopped
            stopped = True
            # From inside the task (an on_next that disposes), the flag is enough: the
            # loop stops after this item and closes the iterator without a cancellation
            # interrupting its cleanup.
            if not task.done() and task is not asyncio.current_task(loop):
                task.cancel()

        return Disposable(dispose)

    return reactivex.create(subscribe)
