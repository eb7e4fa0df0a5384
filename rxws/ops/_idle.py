"""``idle_timeout``: error when a stream has gone quiet for too long (a dead link)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable, SingleAssignmentDisposable
from reactivex.scheduler.eventloop import AsyncIOScheduler

from ..errors import IdleTimeout

__all__ = ["Clock", "check_seconds", "idle_timeout", "resolve_scheduler"]

_T = TypeVar("_T")


class Clock:
    """A scheduler plus a fast clock in seconds that agrees with its timers.

    Attributes:
        scheduler: Where timers run.
        time: Returns the current time in seconds (only differences are meaningful):
            the loop's monotonic clock for the default ``AsyncIOScheduler``, else the
            scheduler's ``now`` (virtual time under a ``TestScheduler``).
    """

    __slots__ = ("scheduler", "time")

    def __init__(self, scheduler: abc.SchedulerBase, time: Callable[[], float]) -> None:
        self.scheduler = scheduler
        self.time = time


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _seconds_of(scheduler: abc.SchedulerBase) -> Callable[[], float]:
    def seconds() -> float:
        now = scheduler.now
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        return (now - _EPOCH).total_seconds()

    return seconds


def resolve_scheduler(
    given: abc.SchedulerBase | None, *fallbacks: abc.SchedulerBase | None
) -> Clock:
    """The scheduler (and clock) a time-based operator runs on.

    Args:
        given: The operator's own ``scheduler`` argument, if any.
        *fallbacks: Further candidates in order (the scheduler given at subscribe time).

    Returns:
        The first scheduler that is not ``None``, else an ``AsyncIOScheduler`` for the
        running asyncio loop, with its clock.

    Raises:
        RuntimeError: No scheduler was given and no asyncio loop is running.
    """
    for candidate in (given, *fallbacks):
        if candidate is not None:
            return Clock(candidate, _seconds_of(candidate))
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "rxws.ops time-based operators run on the asyncio loop: subscribe from inside "
            "a running loop, or pass scheduler= (for example a reactivex TestScheduler)"
        ) from None
    return Clock(AsyncIOScheduler(loop), loop.time)


def check_seconds(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """Validate a duration argument: a finite number of seconds greater than 0.

    Args:
        name: The argument's name, for the message.
        value: What was given.
        allow_none: Whether ``None`` is accepted (and returned).

    Returns:
        The duration as a float, or ``None``.

    Raises:
        ValueError: ``value`` is not a positive finite number.
    """
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a number of seconds greater than 0, got {value!r}")
    return float(value)


def idle_timeout(
    seconds: float, *, scheduler: abc.SchedulerBase | None = None
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Error with :class:`rxws.IdleTimeout` when no item arrives for ``seconds``.

    The clock starts at subscription and restarts with every item. When it runs out,
    the source is disposed (closing its connection) and the subscriber gets
    ``IdleTimeout(seconds)``, which :func:`rxws.ops.reconnect` retries by default.

    Each item only records the time it arrived; one timer per subscription checks that
    time and re-arms itself for whatever is left, so busy streams pay almost nothing.

    Args:
        seconds: The longest quiet period allowed.
        scheduler: Where the timer runs; else the scheduler given at subscribe time,
            else an ``AsyncIOScheduler`` for the running loop.

    Returns:
        An operator for ``Observable.pipe``.

    Raises:
        ValueError: ``seconds`` is not a positive number.
    """
    limit = check_seconds("idle_timeout seconds", seconds)
    assert limit is not None

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            clock = resolve_scheduler(scheduler, scheduler_)
            sched, now = clock.scheduler, clock.time
            upstream = SingleAssignmentDisposable()
            timer = SerialDisposable()
            last = now()
            done = False

            def on_next(item: _T) -> None:
                nonlocal last
                last = now()
                observer.on_next(item)

            def on_error(error: Exception) -> None:
                nonlocal done
                done = True
                timer.dispose()
                observer.on_error(error)

            def on_completed() -> None:
                nonlocal done
                done = True
                timer.dispose()
                observer.on_completed()

            def check(_: abc.SchedulerBase, __: Any = None) -> None:
                nonlocal done
                if done:
                    return
                left = limit - (now() - last)
                if left > 0:
                    timer.disposable = sched.schedule_relative(min(left, limit), check)
                    return
                done = True
                upstream.dispose()
                observer.on_error(IdleTimeout(limit))

            timer.disposable = sched.schedule_relative(limit, check)
            upstream.disposable = source.subscribe(
                on_next, on_error, on_completed, scheduler=scheduler_
            )
            return CompositeDisposable(upstream, timer)

        return reactivex.create(subscribe)

    return operator
