"""``idle_timeout``: error when a stream has gone quiet for too long (a dead link)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable, SingleAssignmentDisposable

from ..errors import IdleTimeout
from ._common import check_seconds, resolve_scheduler

__all__ = ["idle_timeout"]

_T = TypeVar("_T")


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
