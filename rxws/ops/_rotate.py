"""``rotate``: make-before-break replacement of the live subscription, exactly once.

One subscription of the source is the *primary*: its messages go downstream. On a
trigger (a timer, a signal Observable, or an async callable returning) the source is
subscribed again: the *candidate*. While both are up (the *overlap*) both deliver, and
each message goes downstream once, from whichever subscription has it first::

    trigger:    ------T--------------------------
    primary:    ^-1-2-3-4---5---6---7!              let go once it has caught up
    candidate:        ^---o-5-6-7-8---9-           o: open (past on_open)
    output:     --1-2-3-4---5-6-7-8---9-           5, 6, 7 from the candidate; the
                                                   primary's copies are dropped

The rules, in the order a newcomer needs them:

- **Identity.** A message's identity is ``dedupe(message)`` when ``dedupe`` is given,
  else the message itself (an equal message: an identical frame). ``dedupe`` may return
  ``None``: such a message (an acknowledgement) is always delivered.
- **Matching is count-based.** A message is dropped when the *other* subscription
  already delivered one with the same identity that nothing has matched yet; each
  delivery matches at most one later copy. A subscription's own repeated messages
  (heartbeats) are never dropped for each other, and the order in which the two
  subscriptions interleave their messages does not matter.
- **Strict make-before-break.** The primary is let go only once the candidate is open:
  a source that signals it (:func:`rxws.connect` does, once past ``on_open``) must have
  signalled; any other source must have delivered something.
- **When the primary is let go.** Once the two subscriptions are level: one of them
  delivered two copies in a row of what the other had delivered (copies of identities
  that do not repeat within a subscription: a heartbeat proves no position), and the
  primary has matched everything the candidate delivered up to the furthest such copy.
  Whatever the primary would still deliver, the candidate then delivers too. A
  primary silent since the trigger (a private stream whose new connection gets other
  messages, a stalled link) is let go as soon as the open candidate delivers.
  Identities the primary delivered that the candidate has not yet are remembered for
  ``overlap_timeout`` after the switch, so the candidate's late copies are dropped too.
- **Timeouts.** ``overlap_timeout`` after the trigger the overlap ends either way: a
  candidate that is not open, or that stayed silent while the primary spoke, is
  abandoned (the primary stays; :class:`rxws.RotationFailed` is reported and the
  rotation is tried again after a ``backoff`` delay); otherwise it takes over.

The mode of one subscription moves ``NORMAL -> OVERLAP -> SETTLING -> NORMAL`` (or back
from ``OVERLAP`` to ``NORMAL`` when a candidate is abandoned), and ends in ``DONE``.
``SETTLING`` is ``NORMAL`` while the memory of an old primary's deliveries is kept; a
rotation may start during it (the memory then filters both new legs).

Re-entrancy rule (the one rule every method here follows): anything that calls out
(``observer.on_next``, an ``on_event``/``on_error`` callback, ``dedupe``) may dispose
this subscription or start a rotation; after such a call, a method goes on only if the
mode is still the one it was working in.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections import deque
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

from .._signal import OpenSignal, listen_for_open
from ..backoff import Backoff
from ..errors import NoRunningLoop, RotationFailed
from ..events import Event, Rotated
from ._common import check_seconds, emit_event, resolve_scheduler

__all__ = ["Dedupe", "When", "rotate"]

_T = TypeVar("_T")

log = logging.getLogger("rxws.ops")

When = Observable[Any] | abc.ObservableBase[Any] | Callable[[], Any]
"""A rotation signal: an Observable (each item triggers one rotation), or an async
callable called for every new connection whose return means "rotate it now"."""

Dedupe = Callable[[Any], Hashable | None]
"""``message -> identity`` (``None``: the message has none and is always delivered)."""

_DEFAULT_BACKOFF = Backoff()

# Copies in a row (of identities that do not repeat) that show the two legs are level.
_EVIDENCE = 2


class _Mode(enum.Enum):
    NORMAL = "normal"  # one subscription, the primary, delivers
    OVERLAP = "overlap"  # a candidate is up beside the primary; both deliver, each once
    SETTLING = "settling"  # one leg, but old primaries' deliveries are still remembered
    DONE = "done"  # terminated or disposed


class _ReprKey:
    """The identity of an unhashable message (a parsed JSON object): its ``repr``."""

    __slots__ = ("hash", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.hash = hash(text)

    def __hash__(self) -> int:
        return self.hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ReprKey) and other.text == self.text


class _Leg:
    """One subscription of the source, and what it delivered during an overlap.

    ``pending`` maps an identity to the positions (in this leg's delivery order) of its
    deliveries that the other leg has not matched yet, oldest first. ``resolved`` marks
    each position matched by the other leg, or proving nothing (its identity repeats);
    ``head`` is the length of the all-resolved prefix. ``frontier`` is the furthest
    position the other leg matched with an identity that does not repeat: the other
    leg has caught up with this one when every delivery up to there is resolved.
    ``seen`` holds the identities this leg received during the overlap and ``streak``
    how many of its latest messages in a row were copies the other leg had delivered.
    """

    __slots__ = (
        "disposable",
        "frontier",
        "head",
        "pending",
        "ready",
        "resolved",
        "seen",
        "signals",
        "spoke",
        "streak",
    )

    def __init__(self) -> None:
        self.disposable = SingleAssignmentDisposable()
        self.ready = False  # open (signalled, or first item for a source that cannot)
        self.signals = False  # its source fires the open signal
        self.spoke = False  # delivered anything during the overlap
        self.forget()

    def forget(self) -> None:
        self.pending: dict[Hashable, deque[int]] = {}
        self.resolved: list[bool] = []
        self.head = 0
        self.frontier = -1
        self.seen: set[Hashable] = set()
        self.streak = 0

    def _advance(self) -> None:
        resolved, head = self.resolved, self.head
        while head < len(resolved) and resolved[head]:
            head += 1
        self.head = head

    def delivered(self, ident: Hashable, repeats: bool) -> None:
        """Record a delivery that the other leg has not made (yet)."""
        position = len(self.resolved)
        self.resolved.append(repeats)
        queue = self.pending.get(ident)
        if queue is None:
            self.pending[ident] = deque((position,))
        else:
            queue.append(position)
        self._advance()

    def take(self, ident: Hashable, evidence: bool) -> bool:
        """Match one unmatched delivery of ``ident``; ``False`` if there is none."""
        queue = self.pending.get(ident)
        if not queue:
            return False
        position = queue.popleft()
        if not queue:
            del self.pending[ident]
        self.resolved[position] = True
        if evidence and position > self.frontier:
            self.frontier = position
        self._advance()
        return True

    def blur(self, ident: Hashable) -> None:
        """``ident`` turned out to repeat: its deliveries prove no position."""
        for position in self.pending.get(ident, ()):
            self.resolved[position] = True
        self._advance()

    def caught_up(self) -> bool:
        """Whether the other leg matched everything up to its furthest evidence."""
        return self.head > self.frontier


class _Rotation(Generic[_T]):
    """The state of one subscription to a ``rotate`` Observable."""

    def __init__(
        self,
        source: Observable[_T],
        observer: abc.ObserverBase[_T],
        scheduler: abc.SchedulerBase | None,
        every: float | None,
        when: When | None,
        dedupe: Dedupe | bool | None,
        overlap_timeout: float,
        backoff: Backoff,
        on_event: Callable[[Event], None] | None,
        on_error: Callable[[Exception], None] | None,
    ) -> None:
        self.source = source
        self.observer = observer
        self.given_scheduler = scheduler
        self.scheduler = resolve_scheduler(scheduler).scheduler
        self.every = every
        self.track = dedupe is not False
        self.dedupe: Dedupe | None = None if isinstance(dedupe, bool) else dedupe
        self.overlap_timeout = overlap_timeout
        self.backoff = backoff
        self.on_event = on_event
        self.on_error = on_error
        self.when_callable: Callable[[], Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        if when is not None and not isinstance(when, abc.ObservableBase):
            self.when_callable = when
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                raise NoRunningLoop(
                    "rotate(when=<async callable>)",
                    "it runs the callable as an asyncio task: subscribe from inside the loop",
                ) from None

        self.mode = _Mode.NORMAL
        self.primary: _Leg | None = None
        self.candidate: _Leg | None = None
        self.ambiguous: set[Hashable] = set()  # identities a leg repeated this overlap
        # Old primaries whose deliveries are remembered for overlap_timeout after their
        # switch, each with the timer that forgets it.
        self.memories: dict[_Leg, abc.DisposableBase] = {}
        self.failures = 0  # rotations abandoned in a row (paces the retries)
        self.when_failures = 0  # calls of the when-callable that raised in a row
        self.dedupe_failed = False  # reported once per overlap

        self.legs = CompositeDisposable()
        self.next_timer = SerialDisposable()  # ``every``, or the retry of an abandoned one
        self.overlap_timer = SerialDisposable()  # ends an overlap
        self.when_subscription = SingleAssignmentDisposable()
        self.when_task: asyncio.Task[Any] | None = None
        self.when_retry = SerialDisposable()
        self.disposable = CompositeDisposable(
            Disposable(self._mark_done),
            self.legs,
            self.next_timer,
            self.overlap_timer,
            self.when_subscription,
            self.when_retry,
            Disposable(self._cancel_when_task),
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self, when: When | None) -> abc.DisposableBase:
        self.primary = self._subscribe_leg(signal=False)
        if self.mode is _Mode.DONE:
            return self.disposable
        if isinstance(when, abc.ObservableBase):
            self.when_subscription.disposable = when.subscribe(
                self._on_signal, self._on_signal_error, scheduler=self.given_scheduler
            )
        if self.mode is _Mode.NORMAL:
            self._established()
        return self.disposable

    def _mark_done(self) -> None:
        self.mode = _Mode.DONE
        for timer in self.memories.values():
            timer.dispose()
        self.memories = {}

    def _cancel_when_task(self) -> None:
        task, self.when_task = self.when_task, None
        if task is not None:
            task.cancel()

    def _finish(self, error: Exception | None) -> None:
        """Pass a termination on and let go of everything."""
        if self.mode is _Mode.DONE:
            return
        self.disposable.dispose()
        if error is None:
            self.observer.on_completed()
        else:
            self.observer.on_error(error)

    def _report(self, error: Exception) -> None:
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:
                log.exception("rotate's on_error callback raised; ignored")

    def _subscribe_leg(self, *, signal: bool) -> _Leg:
        """Subscribe the source once more; with ``signal``, listen for its opening."""
        leg = _Leg()
        self.legs.add(leg.disposable)
        observer = self.observer

        def on_next(msg: _T) -> None:
            if leg is self.primary and self.mode is _Mode.NORMAL:
                observer.on_next(msg)  # the hot path: one subscription, nothing to compare
            else:
                self._on_leg_next(leg, msg)

        def on_error(error: Exception) -> None:
            self._on_leg_end(leg, error)

        def on_completed() -> None:
            self._on_leg_end(leg, None)

        opened = OpenSignal(lambda: self._on_open(leg)) if signal else None
        with listen_for_open(opened):
            leg.disposable.disposable = self.source.subscribe(
                on_next, on_error, on_completed, scheduler=self.given_scheduler
            )
        # A source that did not claim the signal cannot tell: its first item will.
        leg.signals = opened is not None and opened.claimed
        leg.ready = not signal
        return leg

    def _drop_leg(self, leg: _Leg | None) -> None:
        if leg is not None:
            self.legs.remove(leg.disposable)

    def _established(self) -> None:
        """A primary took over (or the first one came up): wait for the next trigger."""
        if self.every is not None:
            self.next_timer.disposable = self.scheduler.schedule_relative(
                self.every, self._on_timer
            )
        if self.when_callable is not None:
            self.when_failures = 0
            self._start_when_task()

    # ------------------------------------------------------------------ triggers

    def _on_timer(self, _: abc.SchedulerBase, __: Any = None) -> None:
        self._trigger()

    def _on_signal(self, _: Any) -> None:
        self._trigger()

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
        if error is None:
            self._trigger()
            return
        self.when_failures += 1
        delay = self.backoff.delay(self.when_failures)
        log.warning(
            "rotate(when=...) raised %s: %s; asking it again in %.3g s",
            type(error).__name__,
            error,
            delay,
        )
        self._report(error if isinstance(error, Exception) else RuntimeError(str(error)))
        if self.mode is _Mode.DONE:
            return
        self.when_retry.disposable = self.scheduler.schedule_relative(
            delay, lambda *_: self._start_when_task()
        )

    def _trigger(self) -> None:
        mode = self.mode
        if mode is not _Mode.NORMAL and mode is not _Mode.SETTLING:
            log.debug("rotate: a trigger fired while a rotation is under way; covered by it")
            return
        log.debug("rotate: subscribing a new connection")
        self.next_timer.disposable = Disposable()
        self.mode = _Mode.OVERLAP
        self.ambiguous = set()
        self.dedupe_failed = False
        primary = self.primary
        assert primary is not None
        primary.spoke = False
        primary.forget()
        self.overlap_timer.disposable = self.scheduler.schedule_relative(
            self.overlap_timeout, self._on_overlap_timeout
        )
        self.candidate = self._subscribe_leg(signal=True)

    # ------------------------------------------------------------------ overlap

    def _identity(self, msg: _T) -> Hashable | None:
        dedupe = self.dedupe
        try:
            if dedupe is None:
                ident: Any = msg
            else:
                ident = dedupe(msg)
                if ident is None:
                    return None
            hash(ident)
            return ident  # type: ignore[no-any-return]
        except TypeError:
            if dedupe is None:
                return _ReprKey(repr(msg))
            error: Exception = TypeError(
                f"rotate(dedupe=...) returned an unhashable {type(ident).__name__}; "
                "return a hashable id (an int, a str, a tuple) or None"
            )
        except Exception as exc:
            error = exc
        if not self.dedupe_failed:
            self.dedupe_failed = True
            log.warning(
                "rotate(dedupe=...) raised %s on a message during a rotation; such messages "
                "are delivered as having no id (return None for messages without one)",
                type(error).__name__,
            )
            self._report(error)
        return None

    def _on_open(self, leg: _Leg) -> None:
        if leg is self.candidate and self.mode is _Mode.OVERLAP:
            leg.ready = True
            self._switch_if_caught_up()

    def _on_leg_next(self, leg: _Leg, msg: _T) -> None:
        mode = self.mode
        if mode is _Mode.OVERLAP and (leg is self.primary or leg is self.candidate):
            self._overlap_next(leg, msg)
        elif mode is _Mode.SETTLING and leg is self.primary:
            ident = self._identity(msg)
            if self.mode is _Mode.SETTLING and (ident is None or not self._remembered(ident)):
                self.observer.on_next(msg)
        # Anything else comes from a leg already let go of: ignore it.

    def _overlap_next(self, leg: _Leg, msg: _T) -> None:
        leg.spoke = True
        if not leg.ready and not leg.signals:
            leg.ready = True  # the first item of a source that cannot signal its opening
        if not self.track:
            self.observer.on_next(msg)
        else:
            ident = self._identity(msg)
            if self.mode is not _Mode.OVERLAP:
                return
            if ident is None:
                self.observer.on_next(msg)
            elif not (self.memories and self._remembered(ident)):
                self._match(leg, ident, msg)
        if self.mode is _Mode.OVERLAP:
            self._switch_if_caught_up()

    def _match(self, leg: _Leg, ident: Hashable, msg: _T) -> None:
        """Drop ``msg`` if the other leg delivered a copy not yet matched, else deliver it."""
        primary, candidate = self.primary, self.candidate
        assert primary is not None and candidate is not None
        ambiguous = self.ambiguous
        if ident not in leg.seen:
            leg.seen.add(ident)
        elif ident not in ambiguous:
            # A leg's own repeat (a heartbeat): matching it says nothing about position.
            ambiguous.add(ident)
            primary.blur(ident)
            candidate.blur(ident)
        repeats = ident in ambiguous
        other = candidate if leg is primary else primary
        if other.take(ident, evidence=not repeats):
            if not repeats:
                leg.streak += 1
            return
        if not repeats:
            leg.streak = 0
        leg.delivered(ident, repeats)
        self.observer.on_next(msg)

    def _switch_if_caught_up(self) -> None:
        candidate = self.candidate
        assert candidate is not None
        if not candidate.ready:
            return
        if not self.track:
            if candidate.spoke:
                self._switch("the new connection delivered")
            return
        primary = self.primary
        assert primary is not None
        if max(primary.streak, candidate.streak) >= _EVIDENCE and candidate.caught_up():
            self._switch("the old connection caught up")
        elif candidate.spoke and not primary.spoke:
            # The old one said nothing since the trigger, all through the new one's
            # handshake and first message: it has nothing in flight.
            self._switch("the old connection has been silent since the rotation began")

    def _remembered(self, ident: Hashable) -> bool:
        """Whether an old primary delivered ``ident`` (that copy is then used up)."""
        for old in self.memories:
            if old.take(ident, evidence=False):
                if not old.pending:
                    self._forget(old)
                return True
        return False

    def _forget(self, old: _Leg) -> None:
        timer = self.memories.pop(old, None)
        if timer is not None:
            timer.dispose()
        if not self.memories and self.mode is _Mode.SETTLING:
            self.mode = _Mode.NORMAL

    def _switch(self, why: str) -> None:
        """The candidate becomes the primary; the old primary is let go."""
        old, self.primary, self.candidate = self.primary, self.candidate, None
        assert old is not None and self.primary is not None
        self._drop_leg(old)
        self.failures = 0
        self.primary.forget()
        self.overlap_timer.disposable = Disposable()
        for ident in self.ambiguous:  # repeats (heartbeats) are not worth dropping later
            old.pending.pop(ident, None)
        if self.track and old.pending:
            self.memories[old] = self.scheduler.schedule_relative(
                self.overlap_timeout, lambda *_: self._forget(old)
            )
        self.mode = _Mode.SETTLING if self.memories else _Mode.NORMAL
        log.info("rotate: a new connection took over (%s); the old one is closed", why)
        emit_event(self.on_event, Rotated())
        if self.mode is _Mode.DONE:
            return
        self._established()

    def _abandon(self, why: str) -> None:
        """Let the candidate go, keep the primary, and try again after a backoff delay."""
        leg, self.candidate = self.candidate, None
        self._drop_leg(leg)
        if self.mode is _Mode.DONE:
            return
        self.mode = _Mode.SETTLING if self.memories else _Mode.NORMAL
        self.overlap_timer.disposable = Disposable()
        primary = self.primary
        assert primary is not None
        primary.forget()
        self.failures += 1
        delay = self.backoff.delay(self.failures)
        log.warning(
            "rotate: %s; keeping the current connection, trying again in %.3g s", why, delay
        )
        self.next_timer.disposable = self.scheduler.schedule_relative(delay, self._on_timer)
        self._report(RotationFailed(why, delay))

    def _on_overlap_timeout(self, _: abc.SchedulerBase, __: Any = None) -> None:
        if self.mode is not _Mode.OVERLAP:
            return
        candidate, primary = self.candidate, self.primary
        assert candidate is not None and primary is not None
        limit = f"{self.overlap_timeout:g} s"
        if not candidate.ready:
            self._abandon(f"the new connection did not open within {limit}")
        elif primary.spoke and not candidate.spoke:
            self._abandon(f"the new connection delivered nothing within {limit}")
        elif not primary.spoke:
            self._switch(f"nothing to compare within {limit}: a quiet feed or a stalled one")
        else:
            self._switch(f"the old connection did not catch up within {limit}")

    def _on_leg_end(self, leg: _Leg, error: Exception | None) -> None:
        if self.mode is _Mode.DONE:
            return
        how = "completed" if error is None else f"failed: {error}"
        if leg is self.candidate:
            self._abandon(f"the new connection {how} during the rotation")
        elif leg is self.primary:
            if self.mode is _Mode.OVERLAP and self.candidate is not None:
                self.candidate.ready = True  # the only connection left
                self._switch(f"the old connection {how}")
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
    dedupe: Dedupe | bool | None = None,
    overlap_timeout: float = 10.0,
    *,
    backoff: Backoff | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Replace the live subscription periodically or on a signal: make-before-break, exactly once.

    On each trigger the source is subscribed again (for :func:`rxws.connect`: a new
    connection opens) while the current subscription keeps delivering. During this
    overlap both deliver, and each message goes downstream once::

        trigger:    ------T--------------------------
        primary:    ^-1-2-3-4---5---6---7!              let go once it has caught up
        candidate:        ^---o-5-6-7-8---9-           o: open (past on_open)
        output:     --1-2-3-4---5-6-7-8---9-           each message once, first copy wins

    A message is dropped when the other subscription already delivered one with the
    same identity that no copy has matched yet (count-based: a subscription's own
    repeated messages are never dropped; ids may interleave differently on the two
    connections). The identity is ``dedupe(message)``, else the message itself.

    The old subscription is let go only once the new one is open (for
    :func:`rxws.connect`: past ``on_open``; for other sources: once it delivered
    something) and the old one has caught up with it. Identities are remembered
    only during the overlap and for ``overlap_timeout`` after it, so memory stays flat
    over days. ``overlap_timeout`` after a trigger the overlap ends: a new subscription
    that is not open, or that stayed silent while the old one spoke, is abandoned (the
    old one stays; :class:`rxws.RotationFailed` goes to ``on_error`` and the rotation
    is tried again after a ``backoff`` delay); otherwise the new one takes over.

    If the new subscription errors or completes during the overlap it is abandoned;
    if the old one does, the new one takes over at once. Outside an overlap, errors
    and completions pass on: put :func:`rxws.ops.reconnect` after ``rotate`` to
    survive them. Triggers that fire during a rotation are covered by it.

    Args:
        every: Rotate this many seconds after the last switch.
        when: An Observable whose every item triggers a rotation (its error ends the
            stream), or an async callable, called for every new connection, whose
            return means "rotate now" (run as an asyncio task and cancelled on
            dispose). If it raises, the error goes to ``on_error`` and it is called
            again after a ``backoff`` delay.
        dedupe: ``message -> id`` (a sequence number, a trade id; ``None`` for a
            message that has none, which is always delivered); ``None`` (the default)
            takes the message itself as its identity; ``False`` turns matching off:
            the new subscription takes over with its first message once open, and
            messages in flight on the old one may be lost or repeated. If it raises,
            the error goes to ``on_error`` and the message is delivered as having no id.
        overlap_timeout: The longest overlap, in seconds, and how long identities are
            remembered after it.
        backoff: Paces the retries of abandoned rotations and of a failing ``when``.
        on_event: Called with :class:`rxws.events.Rotated` after each switch.
        on_error: Called with each non-fatal error: :class:`rxws.RotationFailed`, an
            exception ``when`` raised, an exception ``dedupe`` raised.

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
    if dedupe is True or (
        dedupe is not None and not isinstance(dedupe, bool) and not callable(dedupe)
    ):
        raise ValueError(
            "rotate dedupe= must be a callable message -> id, None (the message itself) "
            f"or False (off), got {dedupe!r}"
        )
    if backoff is not None and not isinstance(backoff, Backoff):
        raise ValueError(f"rotate backoff= must be an rxws.Backoff, got {type(backoff).__name__}")
    for name, value in (("on_event", on_event), ("on_error", on_error)):
        if value is not None and not callable(value):
            raise ValueError(f"rotate {name}= must be callable, got {type(value).__name__}")
    pacing = backoff if backoff is not None else _DEFAULT_BACKOFF

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            state = _Rotation(
                source,
                observer,
                scheduler,
                every_s,
                when,
                dedupe,
                timeout_s,
                pacing,
                on_event,
                on_error,
            )
            return state.start(when)

        return reactivex.create(subscribe)

    return operator
