"""``rotate``: make-before-break replacement of the live subscription.

One subscription of the source is the *primary*: its messages go downstream. On a
trigger (a timer, a signal Observable, or an async callable returning) the source is
subscribed again: the *candidate*. The primary keeps delivering while the candidate
comes up; then the candidate takes over and the primary is disposed (its connection
closed). With ``dedupe``, ids seen on either side are remembered during this overlap
only, so that nothing is lost or repeated across the switch.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import (
    CompositeDisposable,
    Disposable,
    SerialDisposable,
    SingleAssignmentDisposable,
)

from ..events import Event, Rotated
from ._idle import check_seconds, resolve_scheduler
from ._reconnect import emit_event

__all__ = ["When", "rotate"]

_T = TypeVar("_T")

log = logging.getLogger("rxws.ops")

When = Observable[Any] | abc.ObservableBase[Any] | Callable[[], Any]
"""A rotation signal: an Observable (each item triggers one rotation), or an async
callable called for every new connection whose return means "rotate it now"."""

# Modes of one rotate subscription.
_NORMAL = 0  # one subscription, the primary, delivers
_OVERLAP = 1  # a candidate is coming up; the primary still delivers
_SWITCHING = 2  # the candidate is taking over (flushing what it buffered)
_CATCHUP = 3  # the former candidate delivers, skipping ids the old primary delivered
_DONE = 4  # terminated or disposed

_NOTHING: Any = object()


class _Leg:
    """One subscription of the source."""

    __slots__ = ("disposable",)

    def __init__(self) -> None:
        self.disposable = SingleAssignmentDisposable()


class _Rotation(Generic[_T]):
    """The state of one subscription to a ``rotate`` Observable."""

    def __init__(
        self,
        source: Observable[_T],
        observer: abc.ObserverBase[_T],
        scheduler: abc.SchedulerBase | None,
        every: float | None,
        when: When | None,
        dedupe: Callable[[_T], Hashable | None] | None,
        overlap_timeout: float,
        on_event: Callable[[Event], None] | None,
    ) -> None:
        self.source = source
        self.observer = observer
        self.given_scheduler = scheduler
        self.scheduler = resolve_scheduler(scheduler).scheduler
        self.every = every
        self.dedupe = dedupe
        self.overlap_timeout = overlap_timeout
        self.on_event = on_event
        self.when_callable: Callable[[], Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        if when is not None and not isinstance(when, abc.ObservableBase):
            self.when_callable = when
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "rotate(when=<async callable>) runs the callable as an asyncio task: "
                    "subscribe from inside a running asyncio loop"
                ) from None

        self.mode = _NORMAL
        self.primary: _Leg | None = None
        self.candidate: _Leg | None = None
        # The primary is a connection the when-callable has not been asked about yet.
        self.fresh_primary = True
        # ``when`` asked for a rotation that has not happened yet: retried if the
        # rotation under way is abandoned.
        self.asked_by_when = False
        self.last_msg: Any = _NOTHING  # the primary's last message (dedupe only)
        # Overlap memory (dedupe only): ids the primary delivered, the last of them,
        # and what the candidate sent meanwhile, in order.
        self.primary_ids: set[Hashable] = set()
        self.primary_last: Any = _NOTHING
        self.buffered: list[tuple[Hashable | None, _T]] = []
        self.buffered_ids: set[Hashable] = set()
        # Whether the primary delivered anything during the overlap: a candidate that
        # stays silent while the primary talks is broken; on a quiet feed it is not.
        self.primary_spoke = False

        self.legs = CompositeDisposable()
        self.every_timer = SerialDisposable()
        self.retry_timer = SerialDisposable()
        self.overlap_timer = SerialDisposable()
        self.when_subscription = SingleAssignmentDisposable()
        self.when_task: asyncio.Task[Any] | None = None
        self.disposable = CompositeDisposable(
            Disposable(self._mark_done),
            self.legs,
            self.every_timer,
            self.retry_timer,
            self.overlap_timer,
            self.when_subscription,
            Disposable(self._cancel_when_task),
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self, when: When | None) -> abc.DisposableBase:
        self.primary = leg = _Leg()
        self._connect(leg)
        if self.mode == _DONE:
            return self.disposable
        if isinstance(when, abc.ObservableBase):
            self.when_subscription.disposable = when.subscribe(
                self._on_signal, self._on_signal_error, scheduler=self.given_scheduler
            )
        if self.mode == _NORMAL:
            self._enter_normal()
        return self.disposable

    def _mark_done(self) -> None:
        self.mode = _DONE
        self._forget()

    def _cancel_when_task(self) -> None:
        task, self.when_task = self.when_task, None
        if task is not None:
            task.cancel()

    def _finish(self, error: Exception | None) -> None:
        """Pass a termination on and let go of everything."""
        if self.mode == _DONE:
            return
        self.disposable.dispose()
        if error is None:
            self.observer.on_completed()
        else:
            self.observer.on_error(error)

    def _connect(self, leg: _Leg) -> None:
        """Subscribe ``leg`` (already the primary or the candidate) to the source."""
        self.legs.add(leg.disposable)
        observer = self.observer

        def on_next(msg: _T) -> None:
            if leg is self.primary and self.mode == _NORMAL:
                # The hot path: one subscription, nothing to compare.
                if self.dedupe is not None:
                    self.last_msg = msg
                observer.on_next(msg)
            else:
                self._on_leg_next(leg, msg)

        def on_error(error: Exception) -> None:
            self._on_leg_end(leg, error)

        def on_completed() -> None:
            self._on_leg_end(leg, None)

        leg.disposable.disposable = self.source.subscribe(
            on_next, on_error, on_completed, scheduler=self.given_scheduler
        )

    def _drop_leg(self, leg: _Leg | None) -> None:
        if leg is not None:
            self.legs.remove(leg.disposable)

    # ------------------------------------------------------------------ triggers

    def _enter_normal(self) -> None:
        """One subscription again: forget the overlap, wait for the next trigger."""
        self.mode = _NORMAL
        self.asked_by_when = False
        self._forget()
        self.overlap_timer.disposable = Disposable()
        if self.every is not None:
            self.every_timer.disposable = self.scheduler.schedule_relative(
                self.every, self._on_every
            )
        if self.fresh_primary:
            self.fresh_primary = False
            if self.when_callable is not None:
                self._start_when_task()

    def _on_every(self, _: abc.SchedulerBase, __: Any = None) -> None:
        self._trigger("every")

    def _on_retry(self, _: abc.SchedulerBase, __: Any = None) -> None:
        self._trigger("when")

    def _on_signal(self, _: Any) -> None:
        self._trigger("when")

    def _on_signal_error(self, error: Exception) -> None:
        log.error("the rotate(when=...) Observable failed; ending the stream: %s", error)
        self._finish(error)

    def _start_when_task(self) -> None:
        assert self.when_callable is not None and self.loop is not None
        self._cancel_when_task()
        # The callable is called inside the task, so a task cancelled before it runs
        # leaves no coroutine behind un-awaited.
        task = self.loop.create_task(_call_when(self.when_callable), name="rxws rotate(when=...)")
        self.when_task = task
        task.add_done_callback(self._on_when_done)

    def _on_when_done(self, task: asyncio.Task[Any]) -> None:
        if task is not self.when_task or task.cancelled():
            return
        self.when_task = None
        error = task.exception()
        if error is not None:
            log.warning("rotate(when=...) raised %s: %s; rotating now", type(error).__name__, error)
        self._trigger("when")

    def _trigger(self, what: str) -> None:
        if self.mode != _NORMAL:
            log.debug("rotate: %s fired while a rotation is under way", what)
            if what == "when" and self.mode == _OVERLAP:
                self.asked_by_when = True
            return
        log.debug("rotate: %s fired; subscribing a new connection", what)
        self.asked_by_when = what == "when"
        self.every_timer.disposable = Disposable()
        self.retry_timer.disposable = Disposable()
        self.mode = _OVERLAP
        self.primary_spoke = False
        if self.dedupe is not None and self.last_msg is not _NOTHING:
            # Count the primary's last message as delivered during the overlap, for a
            # server that repeats its latest message to a new connection.
            last = self._id_of(self.last_msg)
            if self.mode != _OVERLAP:
                return
            if last is not None:
                self.primary_ids.add(last)
                self.primary_last = last
        self.overlap_timer.disposable = self.scheduler.schedule_relative(
            self.overlap_timeout, self._on_overlap_timeout
        )
        self.candidate = leg = _Leg()
        self._connect(leg)

    # ------------------------------------------------------------------ overlap

    def _id_of(self, msg: _T) -> Hashable | None:
        assert self.dedupe is not None
        try:
            return self.dedupe(msg)
        except Exception as exc:
            log.error(
                "rotate(dedupe=...) raised %s on a message during a rotation; ending the "
                "stream (return None for messages that carry no id)",
                type(exc).__name__,
            )
            self._finish(exc)
            return None

    def _forget(self) -> None:
        self.primary_ids = set()
        self.primary_last = _NOTHING
        self.buffered = []
        self.buffered_ids = set()

    def _on_leg_next(self, leg: _Leg, msg: _T) -> None:
        mode = self.mode
        if leg is self.primary:
            if mode == _OVERLAP:
                self.primary_spoke = True
                if self.dedupe is None:
                    self.observer.on_next(msg)
                else:
                    self._primary_next_overlap(msg)
            elif mode == _CATCHUP:
                self._catchup_next(msg)
            elif mode == _SWITCHING:
                if self.dedupe is None:
                    self.observer.on_next(msg)
                else:
                    # Re-entered while flushing: queue behind the flush to keep order.
                    ident = self._id_of(msg)
                    if self.mode == _SWITCHING:
                        self.buffered.append((ident, msg))
        elif leg is self.candidate and mode == _OVERLAP:
            if self.dedupe is None:
                self._switch(first=msg)
            else:
                self._candidate_next_overlap(msg)
        # Anything else comes from a leg already let go of: ignore it.

    def _primary_next_overlap(self, msg: _T) -> None:
        ident = self._id_of(msg)
        if self.mode != _OVERLAP:
            return
        self.last_msg = msg
        if ident is not None:
            self.primary_ids.add(ident)
            self.primary_last = ident
        self.observer.on_next(msg)
        if ident is not None and ident in self.buffered_ids and self.mode == _OVERLAP:
            # The primary reached where the candidate started: the candidate has it all.
            self._switch()

    def _candidate_next_overlap(self, msg: _T) -> None:
        ident = self._id_of(msg)
        if self.mode != _OVERLAP:
            return
        if ident is not None and ident in self.primary_ids:
            # The candidate is level with or behind the primary: switch now, skipping
            # what the primary already delivered.
            self._switch(catch_up=ident != self.primary_last)
            return
        self.buffered.append((ident, msg))
        if ident is not None:
            self.buffered_ids.add(ident)

    def _catchup_next(self, msg: _T) -> None:
        ident = self._id_of(msg)
        if self.mode != _CATCHUP:
            return
        if ident is not None and ident in self.primary_ids:
            if ident == self.primary_last:
                log.debug("rotate: the new connection caught up")
                self._enter_normal()
            return
        self.last_msg = msg
        self.observer.on_next(msg)

    def _switch(self, first: Any = _NOTHING, catch_up: bool = False) -> None:
        """The candidate becomes the primary; the old primary is disposed."""
        old, self.primary, self.candidate = self.primary, self.candidate, None
        self.mode = _SWITCHING
        self.fresh_primary = True
        self._cancel_when_task()
        self._drop_leg(old)
        if first is not _NOTHING:
            self.observer.on_next(first)
        else:
            delivered = self.primary_ids
            for ident, msg in self.buffered:  # may grow while we deliver: see above
                if self.mode != _SWITCHING:
                    return
                if ident is None or ident not in delivered:
                    self.last_msg = msg
                    self.observer.on_next(msg)
        if self.mode != _SWITCHING:
            return
        log.info("rotate: a new connection took over; the old one is closed")
        emit_event(self.on_event, Rotated())
        if self.mode != _SWITCHING:
            return
        if catch_up and self.primary_ids:
            # Keep the old primary's ids until the new one has passed them, or for
            # overlap_timeout at most.
            self.mode = _CATCHUP
            self.buffered = []
            self.buffered_ids = set()
            self.overlap_timer.disposable = self.scheduler.schedule_relative(
                self.overlap_timeout, self._on_overlap_timeout
            )
        else:
            self._enter_normal()

    def _abandon(self, why: str) -> None:
        """Let the candidate go and keep the primary."""
        leg, self.candidate = self.candidate, None
        retry = self.asked_by_when
        self._drop_leg(leg)
        if self.mode == _DONE:
            return
        if retry:
            log.warning(
                "rotate: %s; keeping the current connection and trying again in %g s",
                why,
                self.overlap_timeout,
            )
        else:
            log.warning("rotate: %s; keeping the current connection", why)
        self._enter_normal()
        if retry:
            # ``when`` asked for a new connection and still wants one.
            self.every_timer.disposable = Disposable()
            self.retry_timer.disposable = self.scheduler.schedule_relative(
                self.overlap_timeout, self._on_retry
            )

    def _on_overlap_timeout(self, _: abc.SchedulerBase, __: Any = None) -> None:
        if self.mode == _CATCHUP:
            log.debug("rotate: overlap_timeout ended the catch-up")
            self._enter_normal()
        elif self.mode == _OVERLAP:
            if self.buffered:
                log.info(
                    "rotate: the old connection did not catch up within %g s; switching",
                    self.overlap_timeout,
                )
                self._switch()
            elif not self.primary_spoke:
                # A quiet feed (a user-data stream, say): neither side said anything,
                # so nothing can be compared; the new connection is as good as the old.
                log.info("rotate: quiet feed; switching after %g s", self.overlap_timeout)
                self._switch()
            else:
                self._abandon(
                    f"the new connection delivered nothing within {self.overlap_timeout:g} s"
                )

    def _on_leg_end(self, leg: _Leg, error: Exception | None) -> None:
        if self.mode == _DONE:
            return
        how = "completed" if error is None else f"failed: {error}"
        if leg is self.candidate:
            self._abandon(f"the new connection {how} during the rotation")
        elif leg is self.primary:
            if self.mode == _OVERLAP and self.candidate is not None:
                log.info("rotate: the old connection %s; switching to the new one now", how)
                self._switch(catch_up=True)
            else:
                self._finish(error)


async def _call_when(when: Callable[[], Any]) -> Any:
    """Call ``when`` and await what it returns; a plain value means "rotate now"."""
    result = when()
    if not inspect.isawaitable(result):
        log.warning(
            "rotate(when=...) must be an async callable, but it returned %s; rotating now",
            type(result).__name__,
        )
        return result
    return await result


def rotate(
    every: float | None = None,
    when: When | None = None,
    dedupe: Callable[[Any], Hashable | None] | None = None,
    overlap_timeout: float = 10.0,
    *,
    on_event: Callable[[Event], None] | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Replace the live subscription periodically or on a signal, make-before-break.

    On each trigger the source is subscribed again (for :func:`rxws.connect`: a new
    connection opens) while the current subscription keeps delivering. Then:

    - Without ``dedupe``, the new subscription takes over with its first message: that
      message is delivered and the old subscription disposed. Messages in flight on
      the old one are lost or repeated as the server's timing has it.
    - With ``dedupe`` (``message -> hashable id``, e.g. a sequence number or trade id)
      nothing is lost and nothing repeated, and order is kept. While both are up, the
      old subscription keeps delivering and the new one's messages are held back. When
      the old one delivers an id the new one already has, the new one's held-back
      messages after it are delivered and the old one is disposed. When the new one
      delivers an id the old one already delivered (it is behind), it takes over at
      once and its messages already delivered are skipped until it reaches the old
      one's last id. Ids are remembered only for the duration of an overlap, so memory
      stays flat over days. ``dedupe`` may return ``None`` for messages without an id
      (acknowledgements): those are never taken for duplicates. If it raises, the
      stream ends with that error.

    After ``overlap_timeout`` seconds the overlap ends either way: a new subscription
    that delivered nothing while the old one did is abandoned (the old one stays); on
    a quiet feed, where neither delivered anything, the new one takes over; otherwise
    it takes over and what it held back that was not delivered is flushed. If the new subscription
    errors or completes during the overlap it is abandoned; if the old one does, the
    new one takes over at once (and, with ``dedupe``, skips for up to
    ``overlap_timeout`` the ids the old one already delivered). Outside an overlap,
    errors and completions pass on: put :func:`rxws.ops.reconnect` after ``rotate``
    to survive them.

    Triggers that fire while a rotation is under way are covered by it. ``every``
    counts from the last switch (or abandoned attempt). A rotation that ``when`` asked
    for and that was abandoned is tried again ``overlap_timeout`` seconds later, until
    one succeeds; the async callable is called once for each connection that takes
    over (and for the first one).

    Args:
        every: Rotate this many seconds after the last switch.
        when: An Observable whose every item triggers a rotation (its error ends the
            stream), or an async callable, called for every new connection, whose
            return means "rotate now" (run as an asyncio task and cancelled on dispose;
            if it raises, the error is logged and counts as a trigger).
        dedupe: ``message -> id`` for lossless, duplicate-free switching.
        overlap_timeout: The longest overlap, in seconds.
        on_event: Called with :class:`rxws.events.Rotated` after each switch.

    Returns:
        An operator for ``Observable.pipe``.

    Raises:
        ValueError: Neither ``every`` nor ``when`` given, or an argument is invalid.

    Example:
        >>> feed = rxws.connect(url).pipe(rotate(every=3600, dedupe=lambda m: m["seq"]))
    """
    every_s = check_seconds("rotate every", every, allow_none=True)
    timeout_s = check_seconds("rotate overlap_timeout", overlap_timeout)
    assert timeout_s is not None
    if every is None and when is None:
        raise ValueError(
            "rotate needs every=<seconds> or when=<Observable or async callable> "
            "(or both) to know when to rotate"
        )
    if when is not None and not isinstance(when, abc.ObservableBase) and not callable(when):
        raise ValueError(
            f"rotate when= must be an Observable or an async callable, got {type(when).__name__}"
        )
    if dedupe is not None and not callable(dedupe):
        raise ValueError(
            f"rotate dedupe= must be a callable message -> id, got {type(dedupe).__name__}"
        )
    if on_event is not None and not callable(on_event):
        raise ValueError(f"rotate on_event= must be callable, got {type(on_event).__name__}")

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            state = _Rotation(
                source, observer, scheduler, every_s, when, dedupe, timeout_s, on_event
            )
            return state.start(when)

        return reactivex.create(subscribe)

    return operator
