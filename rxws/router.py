"""``rxws.Router``: hot, indexed, reference-counted fan-out of one Observable.

::

    source ──a──b──c──|
    router.stream([{"s": "a"}])      ──a────────|
    router.stream([{"s": "c"}])      ────────c──|
    router.stream()                  ──a──b──c──|

The first stream that gets a subscriber subscribes the router to its source; when the
last one leaves, the router lets go of it (the next subscriber subscribes again). Each
source message costs one :meth:`rxws.FilterIndex.lookup` and one ``on_next`` per
matching subscriber, delivered synchronously inside the source's ``on_next``, in the
source's order, so the cost does not grow with the streams that do not match. Nothing
is scheduled: no scheduler, no task, no queue.

A subscriber that raises in ``on_next`` is unsubscribed, gets the error wrapped in
:class:`rxws.SubscriberError` on its ``on_error`` (and so does the router's
``on_subscriber_error`` callback), and the others receive the message as if nothing
happened. Streams may be subscribed and disposed from inside ``on_next``: a stream
subscribed during a delivery starts with the next message; a stream disposed during a
delivery gets nothing more, not even the rest of that delivery.

When the source completes or errors, every current stream completes or errors with it,
and the router starts afresh: the next subscriber subscribes the source again.

An idle stream costs one small object (the subscription itself, which is also what the
index delivers to) and one index entry: a few hundred bytes, so 100,000 idle streams
take tens of megabytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc
from reactivex.scheduler import CurrentThreadScheduler

from .errors import SubscriberError
from .filters import FilterIndex, Filters, compile_filters

__all__ = ["Router"]

log = logging.getLogger("rxws.router")

T = TypeVar("T")

_Compiled = tuple[tuple[tuple[Any, Any], ...], ...]


_MISSING: Any = object()


def _ignore(value: Any) -> None:
    """``on_next`` of a subscriber that has left: a delivery in progress may still hold it."""


def _noop(value: Any) -> None:
    """``on_next`` of a subscriber that gave none."""


def _log_source_failure(error: Exception) -> None:
    """``on_error`` of a :meth:`Router.connect` hold that gave none."""
    log.error("the router's source failed: %s", error)


class _Member(abc.DisposableBase):
    """One reference to the source: a stream subscription, or a :meth:`Router.connect` hold.

    It is at once the router's delivery target (filed in the index) and the disposable
    that :meth:`Router.stream`'s ``subscribe`` returns: one small object per idle
    stream, with no lock and no closure. ``handle`` is the index handle (-1 for a
    hold) while it is subscribed, None before and after; ``on_next`` is switched to
    :func:`_ignore` the moment it leaves, so a delivery in progress skips it.
    ``on_error`` and ``on_completed`` are None when the subscriber gave none.
    """

    __slots__ = ("_router", "handle", "on_completed", "on_error", "on_next")

    def __init__(
        self,
        router: Router[Any],
        on_next: Callable[[Any], None],
        on_error: Callable[[Exception], None] | None,
        on_completed: Callable[[], None] | None,
    ) -> None:
        self._router = router
        self.on_next = on_next
        self.on_error = on_error
        self.on_completed = on_completed
        self.handle: int | None = None

    def dispose(self) -> None:
        """Leave the router (idempotent); the last one to leave lets go of the source."""
        if self.handle is not None:
            self._router._leave(self)


class _Stream(Observable[T]):
    """What :meth:`Router.stream` returns: each subscription is one :class:`_Member`.

    ``subscribe`` takes what ``reactivex.Observable.subscribe`` takes (an observer, or
    ``on_next``/``on_error``/``on_completed`` callables, and ``scheduler=``, which
    synchronous delivery does not use) and gives what it gives, without the
    auto-detach observer and its disposables: the router already stops delivering to
    a subscriber the moment it is disposed or terminated, and terminates each at most
    once.
    """

    def __init__(self, router: Router[T], compiled: _Compiled) -> None:
        super().__init__()
        self._router = router
        self._compiled = compiled

    def subscribe(
        self,
        on_next: abc.ObserverBase[T] | abc.OnNext[T] | None = None,
        on_error: abc.OnError | None = None,
        on_completed: abc.OnCompleted | None = None,
        *,
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        """Subscribe an observer, or callbacks, as ``reactivex.Observable.subscribe`` does.

        Args:
            on_next: An observer (then the other callbacks are ignored), or the
                callable for each message.
            on_error: Called with the source's error, or with a
                :class:`rxws.SubscriberError` when ``on_next`` raised.
            on_completed: Called when the source completes.
            scheduler: Not used: delivery is synchronous.

        Returns:
            The subscription; ``dispose()`` leaves (idempotent).
        """
        if isinstance(on_next, abc.ObserverBase) or callable(getattr(on_next, "on_next", None)):
            observer: abc.ObserverBase[T] = on_next  # type: ignore[assignment]
            return self._router._subscribe(
                self._compiled, observer.on_next, observer.on_error, observer.on_completed
            )
        return self._router._subscribe(
            self._compiled,
            on_next or _noop,
            on_error,
            on_completed,
        )

    def _subscribe_core(
        self, observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        return self._router._subscribe(
            self._compiled, observer.on_next, observer.on_error, observer.on_completed
        )


class _Link:
    """One subscription of the router to its source."""

    __slots__ = ("disposable", "live")

    def __init__(self) -> None:
        self.live = True
        self.disposable: abc.DisposableBase | None = None


class Router(Generic[T]):
    """Hot, reference-counted fan-out of one Observable into filtered streams.

    Args:
        source: The Observable to share, usually a feed of parsed websocket messages
            (``rxws.connect(...)`` with reconnect). It is subscribed without a scheduler.
        on_subscriber_error: Called with each :class:`rxws.SubscriberError` (a
            subscriber raised in ``on_next`` and was unsubscribed); the client routes
            these to ``client.errors``.

    Raises:
        TypeError: ``source`` is not an Observable.

    Example:
        >>> from reactivex.subject import Subject
        >>> feed = Subject()
        >>> router = Router(feed)
        >>> got = []
        >>> sub = router.stream([{"s": "BTC"}]).subscribe(got.append)
        >>> feed.on_next({"s": "ETH", "p": 1}); feed.on_next({"s": "BTC", "p": 2})
        >>> got
        [{'s': 'BTC', 'p': 2}]
        >>> sub.dispose(); router.connected
        False
    """

    def __init__(
        self,
        source: Observable[T],
        *,
        on_subscriber_error: Callable[[SubscriberError], None] | None = None,
    ) -> None:
        if not isinstance(source, abc.ObservableBase):
            raise TypeError(
                "Router needs a reactivex Observable as its source (for example "
                f"rxws.connect(url)); got {type(source).__name__}"
            )
        if on_subscriber_error is not None and not callable(on_subscriber_error):
            raise TypeError(
                "on_subscriber_error must be a callable taking one SubscriberError; "
                f"got {type(on_subscriber_error).__name__}"
            )
        self._source = source
        self._on_subscriber_error = on_subscriber_error
        # Every stream subscriber, filed under its filter list (the index is the only
        # registry of them: one entry per idle stream).
        self._index: FilterIndex[_Member] = FilterIndex()
        self._holds: set[_Member] = set()
        self._filtered = False  # whether some stream subscriber has a non-empty filter list
        # Every stream subscriber, when none is filtered: delivered without a lookup.
        # None when stale (rebuilt on the next message) or when some stream is filtered.
        self._everyone: tuple[_Member, ...] | None = None
        self._link: _Link | None = None
        # What counts the source's messages (``.messages += 1`` for each, before any
        # delivery): the client's stats, or None (see :meth:`_count_in`).
        self._counter: Any = None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} subscribers={len(self._index)} "
            f"connected={self._link is not None}>"
        )

    @property
    def subscriber_count(self) -> int:
        """How many stream subscriptions are live (holds from :meth:`connect` not counted)."""
        return len(self._index)

    @property
    def connected(self) -> bool:
        """Whether the router holds a subscription to its source right now."""
        return self._link is not None

    # ------------------------------------------------------------------ public

    def stream(self, filters: Filters = None) -> Observable[T]:
        """The source's messages that :func:`rxws.matches` ``(filters)`` accepts.

        The filter list is checked and copied now; the Observable is hot: a subscriber
        gets the messages that arrive while it is subscribed. Delivery is synchronous,
        so a scheduler given at subscribe time is not used (put ``observe_on`` after
        the stream to move delivery elsewhere).

        Args:
            filters: A list of dicts (OR of ANDs of key/value pairs), or ``None``/``[]``
                for every message.

        Returns:
            An Observable; each subscription is one reference to the source.

        Raises:
            TypeError: ``filters`` is not a list of dicts.
        """
        return _Stream(self, compile_filters(filters))

    def connect(
        self,
        on_error: Callable[[Exception], None] | None = None,
        on_completed: Callable[[], None] | None = None,
    ) -> abc.DisposableBase:
        """Hold the source subscribed with or without streams, until disposed.

        A hold counts as one reference, like a stream subscriber that receives no
        messages. It ends, like the streams, when the source completes or errors.

        Args:
            on_error: Called with the source's error (logged when not given).
            on_completed: Called when the source completes.

        Returns:
            A disposable that releases the hold (idempotent).
        """
        member = _Member(self, _ignore, on_error or _log_source_failure, on_completed)
        member.handle = -1
        self._holds.add(member)
        if self._link is None:
            try:
                self._subscribe_source()
            except BaseException:
                self._leave(member)
                raise
        return member

    def complete(self) -> None:
        """Complete every stream and hold now and let go of the source.

        The router starts afresh: a later subscriber subscribes the source again.
        """
        link = self._link
        self._detach(link)
        try:
            if link is not None and link.disposable is not None:
                link.disposable.dispose()
        finally:
            self._terminate(None)

    def _count_in(self, counter: Any) -> None:
        """Add 1 to ``counter.messages`` for each message of the source, before delivering it.

        For :class:`rxws.WebSocketClient`'s ``stats``: counting in the delivery itself
        spares a call per message. Takes effect at the next subscription of the source.
        """
        self._counter = counter

    # ------------------------------------------------------------------ membership

    def _subscribe(
        self,
        compiled: _Compiled,
        on_next: Callable[[Any], None],
        on_error: Callable[[Exception], None] | None,
        on_completed: Callable[[], None] | None,
    ) -> _Member:
        """One stream subscription: file it, and subscribe the source if it is the first."""
        member = _Member(self, on_next, on_error, on_completed)
        member.handle = self._index.add_compiled(compiled, member)
        self._everyone = None
        if compiled:
            self._filtered = True
        if self._link is None:
            # As reactivex's subscribe does: run it on the current thread's trampoline,
            # so that what a synchronous source schedules there runs once it is set up.
            trampoline = CurrentThreadScheduler.singleton()
            if trampoline.schedule_required():
                trampoline.schedule(lambda _scheduler, _state: self._start(member))
            else:
                self._start(member)
        return member

    def _start(self, member: _Member) -> None:
        """Subscribe the source for ``member``; its failure goes to ``member``'s ``on_error``.

        Raised instead when ``member`` has no ``on_error`` or has already ended (as
        reactivex does when a subscribe function raises).
        """
        if self._link is not None or member.handle is None:
            return
        try:
            self._subscribe_source()
        except Exception as exc:
            if member.handle is None:
                raise
            self._leave(member)
            if member.on_error is None:
                raise
            member.on_error(exc)
        except BaseException:
            self._leave(member)
            raise

    def _leave(self, member: _Member) -> None:
        handle = member.handle
        if handle is None:
            return
        member.handle = None
        member.on_next = _ignore
        index = self._index
        if handle == -1:
            self._holds.discard(member)
        else:
            index.remove(handle)
            self._everyone = None
            self._filtered = not index.all_unfiltered
        if not index and not self._holds:
            self._unsubscribe_source()

    # ------------------------------------------------------------------ source

    def _subscribe_source(self) -> None:
        link = self._link = _Link()

        def on_error(error: Exception) -> None:
            if link.live:
                self._detach(link)
                self._terminate(error)

        def on_completed() -> None:
            if link.live:
                self._detach(link)
                self._terminate(None)

        try:
            disposable = self._source.subscribe(self._deliverer(link), on_error, on_completed)
        except BaseException:
            if link.live:
                self._detach(link)
            raise
        if link.live:
            link.disposable = disposable
        else:
            # Released or terminated while the source was still subscribing.
            disposable.dispose()

    def _unsubscribe_source(self) -> None:
        link = self._link
        if link is None:
            return
        self._detach(link)
        if link.disposable is not None:
            link.disposable.dispose()

    def _detach(self, link: _Link | None) -> None:
        if link is not None:
            link.live = False
        if self._link is link:
            self._link = None

    def _deliverer(self, link: _Link) -> Callable[[T], None]:
        """The source's ``on_next``: the hot path."""
        index = self._index
        route = index.route
        failed = self._subscriber_failed
        counter = self._counter

        def on_next(msg: T) -> None:
            if counter is not None:
                counter.messages += 1
            if not link.live:
                return
            targets: Sequence[_Member] | None = self._everyone
            if targets is None:
                if self._filtered:
                    # Every stream on one key: what route() gave for this value before.
                    table = index.route_table
                    if table is None or type(msg) is not dict:
                        targets = route(msg)
                    else:
                        value = msg.get(index.route_key, _MISSING)  # type: ignore[attr-defined]
                        try:
                            targets = table.get(value)
                        except (TypeError, ValueError):  # an unhashable value: route() sees to it
                            targets = None
                        if targets is None:
                            targets = route(msg)
                else:
                    targets = self._everyone = tuple(index.targets())
            for member in targets:
                # Read, then called: a slot read this way is specialised, a method call
                # on a slot (``member.on_next(msg)``) is not.
                deliver = member.on_next
                try:
                    deliver(msg)
                except Exception as exc:
                    failed(member, exc)

        return on_next

    # ------------------------------------------------------------------ failures

    def _subscriber_failed(self, member: _Member, exc: Exception) -> None:
        log.error(
            "a stream subscriber raised %s in on_next; it was unsubscribed and the "
            "other subscribers go on",
            type(exc).__name__,
            exc_info=exc,
        )
        live = member.handle is not None  # it may have left inside its own on_next
        self._leave(member)
        error = SubscriberError(exc)
        on_error = member.on_error
        if live and on_error is not None:
            try:
                on_error(error)
            except Exception as again:
                if again is not error:  # an observer without on_error raises it back
                    log.exception("a stream subscriber's on_error raised")
        if self._on_subscriber_error is not None:
            try:
                self._on_subscriber_error(error)
            except Exception:
                log.exception("the router's on_subscriber_error callback raised")

    def _terminate(self, error: Exception | None) -> None:
        """End every current member with ``error`` (or completion) and start afresh."""
        members = [*self._index.targets(), *self._holds]
        for member in members:
            member.handle = None
            member.on_next = _ignore
        self._index.clear()
        self._holds.clear()
        self._filtered = False
        self._everyone = None
        unhandled = 0
        for member in members:
            try:
                if error is None:
                    if member.on_completed is not None:
                        member.on_completed()
                elif member.on_error is None:
                    unhandled += 1
                else:
                    member.on_error(error)
            except Exception as again:
                if again is error:  # without on_error, reactivex raises the error back
                    unhandled += 1
                else:
                    log.exception("a stream subscriber raised while being terminated")
        if unhandled:
            log.warning(
                "the router's source failed and %d stream subscriber(s) had no on_error: %s",
                unhandled,
                error,
            )
