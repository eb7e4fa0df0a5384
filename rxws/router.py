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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.observer import AutoDetachObserver

from .errors import SubscriberError
from .filters import FilterIndex, Filters, compile_filters

__all__ = ["Router"]

log = logging.getLogger("rxws.router")

T = TypeVar("T")


def _ignore(value: Any) -> None:
    """``on_next`` of a subscriber that has left: a delivery in progress may still hold it."""


def _direct_on_next(observer: abc.ObserverBase[Any]) -> Callable[[Any], None]:
    """The function that handles ``observer``'s items, without the auto-detach layer.

    ``Observable.subscribe`` wraps every observer in an ``AutoDetachObserver``, whose
    ``on_next`` only checks ``is_stopped`` before calling the real handler. The router
    keeps that check itself: a subscriber's ``on_next`` is switched to :func:`_ignore`
    the moment it is disposed (disposing the auto-detach observer disposes the
    router's subscription synchronously) or terminated by the router. Calling the
    handler directly saves one Python call per delivery.
    """
    if type(observer) is AutoDetachObserver:
        inner = getattr(observer, "_on_next", None)
        if callable(inner):
            return inner  # type: ignore[no-any-return]
    return observer.on_next


class _Member:
    """One reference to the source: a stream subscriber, or a :meth:`Router.connect` hold."""

    __slots__ = ("filtered", "handle", "observer", "on_next")

    def __init__(self, observer: abc.ObserverBase[Any], filtered: bool) -> None:
        self.observer = observer
        self.on_next: Callable[[Any], None] = _direct_on_next(observer)
        self.filtered = filtered
        self.handle: int | None = None  # the index handle; None once it has left


class _Link:
    """One subscription of the router to its source."""

    __slots__ = ("disposable", "live")

    def __init__(self) -> None:
        self.live = True
        self.disposable: abc.DisposableBase | None = None


class _Hold(abc.ObserverBase[Any]):
    """The observer of a :meth:`Router.connect` hold: it receives only termination."""

    def __init__(
        self,
        on_error: Callable[[Exception], None] | None,
        on_completed: Callable[[], None] | None,
    ) -> None:
        self._on_error = on_error
        self._on_completed = on_completed

    def on_next(self, value: Any) -> None:
        """Holds receive no messages."""

    def on_error(self, error: Exception) -> None:
        """Pass the source's error on, or log it when nobody asked for it."""
        if self._on_error is not None:
            self._on_error(error)
        else:
            log.error("the router's source failed: %s", error)

    def on_completed(self) -> None:
        """Pass the source's completion on."""
        if self._on_completed is not None:
            self._on_completed()


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
        self._index: FilterIndex[_Member] = FilterIndex()
        self._streams: dict[int, _Member] = {}  # index handle -> stream subscriber
        self._holds: set[_Member] = set()
        self._filtered = 0  # how many stream subscribers have a non-empty filter list
        # Every stream subscriber, when none is filtered: delivered without a lookup.
        # None when stale (rebuilt on the next message) or when some stream is filtered.
        self._everyone: tuple[_Member, ...] | None = None
        self._link: _Link | None = None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} subscribers={len(self._streams)} "
            f"connected={self._link is not None}>"
        )

    @property
    def subscriber_count(self) -> int:
        """How many stream subscriptions are live (holds from :meth:`connect` not counted)."""
        return len(self._streams)

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
        compiled = compile_filters(filters)
        snapshot = [dict(pairs) for pairs in compiled] or None

        def subscribe(
            observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            member = _Member(observer, snapshot is not None)
            self._join(member, snapshot)
            return Disposable(lambda: self._leave(member))

        return reactivex.create(subscribe)

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
        member = _Member(_Hold(on_error, on_completed), False)
        self._join(member, None)
        return Disposable(lambda: self._leave(member))

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

    # ------------------------------------------------------------------ membership

    def _join(self, member: _Member, filters: Filters) -> None:
        if isinstance(member.observer, _Hold):
            member.handle = -1
            self._holds.add(member)
        else:
            handle = self._index.add(filters, member)
            member.handle = handle
            self._streams[handle] = member
            if member.filtered:
                self._filtered += 1
            self._everyone = None
        if self._link is None:
            try:
                self._subscribe_source()
            except BaseException:
                self._leave(member)
                raise

    def _leave(self, member: _Member) -> None:
        handle = member.handle
        if handle is None:
            return
        member.handle = None
        member.on_next = _ignore
        if handle == -1:
            self._holds.discard(member)
        else:
            self._index.remove(handle)
            del self._streams[handle]
            if member.filtered:
                self._filtered -= 1
            self._everyone = None
        if not self._streams and not self._holds:
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
        lookup = self._index.lookup
        failed = self._subscriber_failed

        def on_next(msg: T) -> None:
            if not link.live:
                return
            targets: Sequence[_Member] | None = self._everyone
            if targets is None:
                if self._filtered:
                    targets = lookup(msg)
                else:
                    targets = self._everyone = tuple(self._streams.values())
            for member in targets:
                try:
                    member.on_next(msg)
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
        self._leave(member)
        error = SubscriberError(exc)
        try:
            member.observer.on_error(error)
        except Exception as again:
            if again is not error:  # without on_error, reactivex raises the error back
                log.exception("a stream subscriber's on_error raised")
        if self._on_subscriber_error is not None:
            try:
                self._on_subscriber_error(error)
            except Exception:
                log.exception("the router's on_subscriber_error callback raised")

    def _terminate(self, error: Exception | None) -> None:
        """End every current member with ``error`` (or completion) and start afresh."""
        members = [*self._streams.values(), *self._holds]
        for member in members:
            if member.handle is not None and member.handle != -1:
                self._index.remove(member.handle)
            member.handle = None
            member.on_next = _ignore
        self._streams.clear()
        self._holds.clear()
        self._filtered = 0
        self._everyone = None
        unhandled = 0
        for member in members:
            try:
                if error is None:
                    member.observer.on_completed()
                else:
                    member.observer.on_error(error)
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
