"""Helpers shared by rxws's operators.

Schedulers and clocks, argument checks, and status events.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import datetime, timezone

from reactivex import abc
from reactivex.scheduler.eventloop import AsyncIOScheduler

from ..errors import NoRunningLoop
from ..events import Event

__all__ = [
    "Clock",
    "check_seconds",
    "emit_event",
    "resolve_scheduler",
]

log = logging.getLogger("rxws.ops")


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
        raise NoRunningLoop(
            "rxws.ops time-based operators",
            "subscribe from inside a running loop, or pass scheduler= (for example a "
            "reactivex TestScheduler)",
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


def emit_event(on_event: Callable[[Event], None] | None, event: Event) -> None:
    """Hand ``event`` to ``on_event``; a callback that raises is logged, never fatal."""
    if on_event is None:
        return
    try:
        on_event(event)
    except Exception:
        log.exception("an on_event callback raised on %r; ignored", event)
