"""Reaching past reactivex's ``AutoDetachObserver`` on rxws's own per-message path.

``Observable.subscribe`` wraps every subscriber in an ``AutoDetachObserver``, whose
``on_next`` checks ``is_stopped`` and then calls the subscriber's own handler: one
Python call per message and layer. rxws's hot path makes that check itself, inline,
and calls the handler directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import abc
from reactivex.observer import AutoDetachObserver

__all__ = ["NEVER_STOPPED", "direct_on_next", "unwrap"]


class _NeverStopped:
    """Stands in for the stop flag of an observer that checks it itself."""

    __slots__ = ()
    is_stopped = False


NEVER_STOPPED: Any = _NeverStopped()


def unwrap(observer: abc.ObserverBase[Any]) -> tuple[Callable[[Any], None], Any]:
    """``(on_next, guard)``: deliver with ``if not guard.is_stopped: on_next(msg)``.

    For an ``AutoDetachObserver``, its inner handler and the observer itself (whose
    ``is_stopped`` is set on ``on_error``, ``on_completed`` and dispose); for any other
    observer, its ``on_next`` and a guard that is never stopped. Either way a message
    reaches the subscriber exactly when ``observer.on_next`` would have delivered it.
    """
    if type(observer) is AutoDetachObserver:
        inner = getattr(observer, "_on_next", None)
        if callable(inner):
            return inner, observer
    return observer.on_next, NEVER_STOPPED


def direct_on_next(observer: abc.ObserverBase[Any]) -> Callable[[Any], None]:
    """``observer``'s own ``on_next`` handler, without the auto-detach check.

    Only for observers whose upstream stops delivering once they are disposed or
    terminated (an upstream that is itself guarded by an auto-detach observer, or by
    the router's ``link.live`` check): one call less per message.
    """
    on_next, _ = unwrap(observer)
    return on_next
