"""``reconnect``: resubscribe after a retryable error (or a completion), with backoff."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import SerialDisposable, SingleAssignmentDisposable

from .._observers import direct_on_next
from ..backoff import Backoff
from ..errors import ConnectionLost, ReconnectExhausted, is_retryable
from ..events import Event, Retrying
from ._common import emit_event, resolve_scheduler

__all__ = ["OnComplete", "reconnect"]

_T = TypeVar("_T")

log = logging.getLogger("rxws.ops")

OnComplete = Literal["reconnect", "complete"]
"""What :func:`reconnect` does when the source completes."""


_DEFAULT_BACKOFF = Backoff()


def _completed_error() -> ConnectionLost:
    return ConnectionLost(1000, "the server closed the connection normally")


# A run of failed attempts is worth a WARNING at the third, then every tenth.
_WARN_FIRST = 3
_WARN_EVERY = 10


def _warn_at(attempt: int) -> bool:
    return attempt == _WARN_FIRST or (attempt > _WARN_FIRST and attempt % _WARN_EVERY == 0)


def reconnect(
    backoff: Backoff = _DEFAULT_BACKOFF,
    retryable: Callable[[BaseException], bool] = is_retryable,
    max_attempts: int | None = None,
    on_complete: OnComplete = "reconnect",
    *,
    on_event: Callable[[Event], None] | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Resubscribe to the source after a retryable error, waiting per ``backoff``.

    Each subscription keeps its own count of failed attempts in a row. When the source
    errors with an error that ``retryable`` accepts (or completes, unless
    ``on_complete="complete"``), the count goes up by one, ``on_event`` gets
    ``Retrying(attempt, delay)`` with ``delay = backoff.delay(attempt)``, and the source
    is subscribed again after that delay. A completion counts as a failed attempt like
    an error, so a server that accepts and at once closes is not hammered.

    The count starts again from zero when a subscription stayed up for at least
    ``backoff.reset_after`` seconds, messages or not: a quiet feed (a user-data stream
    may say nothing for hours) is healthy too. The time is measured from subscribing,
    so it includes the opening handshake: keep ``reset_after`` above the handshake's
    ``open_timeout`` (the defaults, 30 s and 10 s, are).

    - An error that ``retryable`` refuses is passed on at once.
    - After ``max_attempts`` failed attempts in a row the subscriber gets
      :class:`rxws.ReconnectExhausted` carrying the count and the last error (a
      completion shows as ``ConnectionLost(1000, ...)``).
    - Disposing during a wait cancels the wait: nothing is subscribed again.

    Every retry is logged at INFO on the ``rxws.ops`` logger with the error's message
    (rxws errors carry redacted URLs only). A run of failures (a wrong port, a server
    that is down) is logged at WARNING at the third attempt in a row and every tenth
    after it, with the last error, which names the redacted URL when the connection
    could not be opened.

    Args:
        backoff: The delay policy.
        retryable: ``error -> bool``; by default :func:`rxws.ops.is_retryable`.
        max_attempts: Give up after this many failed attempts in a row; ``None`` never
            gives up.
        on_complete: ``"reconnect"`` resubscribes when the source completes,
            ``"complete"`` passes the completion on.
        on_event: Called with :class:`rxws.events.Retrying` before each wait.

    Returns:
        An operator for ``Observable.pipe``.

    Raises:
        ValueError: An argument is out of range.

    Example:
        >>> feed = rxws.connect(url).pipe(reconnect(Backoff(initial=1.0), max_attempts=10))
    """
    policy = backoff
    if not isinstance(policy, Backoff):
        raise TypeError(f"backoff must be an rxws.Backoff, got {type(policy).__name__}")
    if not callable(retryable):
        raise TypeError(
            f"retryable must be a callable error -> bool, got {type(retryable).__name__}"
        )
    if max_attempts is not None and (
        isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
    ):
        raise ValueError(
            f"max_attempts must be an int >= 1, or None to retry forever; got {max_attempts!r}"
        )
    if on_complete not in ("reconnect", "complete"):
        raise ValueError(f'on_complete must be "reconnect" or "complete", got {on_complete!r}')
    if on_event is not None and not callable(on_event):
        raise TypeError(f"on_event must be callable, got {type(on_event).__name__}")
    reset_after = policy.reset_after
    complete_passes = on_complete == "complete"

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            clock = resolve_scheduler(scheduler)
            sched, now = clock.scheduler, clock.time
            # Holds the live subscription, or the pending wait before the next one.
            current = SerialDisposable()
            deliver = direct_on_next(observer)
            attempt = 0
            started = 0.0

            def attempt_ended(error: BaseException) -> None:
                nonlocal attempt
                if now() - started >= reset_after:
                    attempt = 0
                attempt += 1
                if max_attempts is not None and attempt >= max_attempts:
                    log.info("giving up after %d failed attempt(s) in a row: %s", attempt, error)
                    observer.on_error(ReconnectExhausted(attempt, error))
                    return
                delay = policy.delay(attempt)
                log.info(
                    "attempt %d ended (%s); subscribing again in %.3g s", attempt, error, delay
                )
                if _warn_at(attempt):
                    log.warning(
                        "%d attempts in a row failed; still retrying (next in %.3g s); "
                        "last error: %s",
                        attempt,
                        delay,
                        error,
                    )
                emit_event(on_event, Retrying(attempt, delay))
                current.disposable = sched.schedule_relative(delay, resubscribe)

            def on_error(error: Exception) -> None:
                try:
                    retry = retryable(error)
                except Exception as exc:
                    log.exception("the retryable callable raised; passing the error on")
                    observer.on_error(exc)
                    return
                if not retry:
                    observer.on_error(error)
                    return
                attempt_ended(error)

            def on_completed() -> None:
                if complete_passes:
                    observer.on_completed()
                else:
                    attempt_ended(_completed_error())

            def resubscribe(_: abc.SchedulerBase | None = None, __: Any = None) -> None:
                nonlocal started
                if current.is_disposed:
                    return
                started = now()
                # Assigned before subscribing, so a source that terminates synchronously
                # (and schedules the next wait) is not undone by the late assignment.
                holder = SingleAssignmentDisposable()
                current.disposable = holder
                # Straight to the subscriber's handler: this subscription's own
                # auto-detach observer already stops delivering once ``current`` is
                # disposed (as the subscriber's disposal does) or the source ended.
                holder.disposable = source.subscribe(
                    deliver, on_error, on_completed, scheduler=scheduler
                )

            resubscribe()
            return current

        return reactivex.create(subscribe)

    return operator
