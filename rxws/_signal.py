"""The *open signal*: how a source tells an operator that its connection is open.

:func:`rxws.ops.rotate` keeps make-before-break strict with it: it subscribes a
candidate inside :func:`listen_for_open`, and a source that knows when its connection is
ready (:func:`rxws.connect`, once past ``on_open``) claims the signal with
:func:`claim_open_signal` while it is being subscribed, then fires it once open. A
source that never claims it (any other Observable) is taken to be open at its first
item. Subscription in reactivex runs synchronously down the chain, so a ``connect``
wrapped in ``map``, ``filter`` or ``idle_timeout`` still sees the signal.

This module sits below :mod:`rxws.source` and :mod:`rxws.ops`, so both can use it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["OpenSignal", "claim_open_signal", "listen_for_open"]


class OpenSignal:
    """A one-shot "the connection is open" callback, claimed by at most one source.

    Attributes:
        claimed: Whether a source took it (and so will call :meth:`fire` once open).
    """

    __slots__ = ("_callback", "claimed")

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback: Callable[[], None] | None = callback
        self.claimed = False

    def fire(self) -> None:
        """Report the connection open; later calls do nothing."""
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


_OPEN_SIGNAL: contextvars.ContextVar[OpenSignal | None] = contextvars.ContextVar(
    "rxws_open_signal", default=None
)


@contextmanager
def listen_for_open(signal: OpenSignal | None) -> Iterator[None]:
    """Offer ``signal`` to the source subscribed inside this block (``None``: offer none)."""
    token = _OPEN_SIGNAL.set(signal)
    try:
        yield
    finally:
        _OPEN_SIGNAL.reset(token)


def claim_open_signal() -> OpenSignal | None:
    """Take the open signal offered to the source being subscribed now, if any.

    Called by a source inside its subscribe function. The signal is taken once: an
    inner source subscribed later in the same block gets ``None``.
    """
    signal = _OPEN_SIGNAL.get()
    if signal is None or signal.claimed:
        return None
    signal.claimed = True
    return signal
