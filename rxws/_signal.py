"""The *open signal*: how a source tells an operator that its connection is open.

:func:`rxws.ops.rotate` keeps make-before-break strict with it: it subscribes a
candidate inside :func:`listen_for_open`, and a source that knows when its connection is
ready (:func:`rxws.connect`, once past ``on_open``) claims the signal with
:func:`claim_open_signal` while it is being subscribed, then fires it once open. A
source that never claims it (any other Observable) is taken to be open at its first
item. Subscription in reactivex runs synchronously down the chain, so a ``connect``
wrapped in ``map``, ``filter`` or ``idle_timeout`` still sees the signal.

While a source runs its ``on_open``, whatever that callback does may *hold* the signal
(:func:`hold_open`) until something it started has finished, for example until the
server has acknowledged the subscriptions sent on the new connection; the source's
:meth:`OpenSignal.fire` then takes effect at the last release. Only a connection that
is being rotated in has a signal to hold; elsewhere :func:`hold_open` returns ``None``.

This module sits below :mod:`rxws.source` and :mod:`rxws.ops`, so both can use it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

__all__ = ["OpenSignal", "claim_open_signal", "hold_open", "listen_for_open", "opening"]


class OpenSignal:
    """A one-shot "the connection is open" callback, claimed by at most one source.

    Attributes:
        claimed: Whether a source took it (and so will call :meth:`fire` once open).
    """

    __slots__ = ("_callback", "_fired", "_holds", "claimed")

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback: Callable[[], None] | None = callback
        self._fired = False
        self._holds = 0
        self.claimed = False

    def fire(self) -> None:
        """Report the connection open, now or at the last release; later calls do nothing."""
        self._fired = True
        if self._holds == 0:
            callback, self._callback = self._callback, None
            if callback is not None:
                callback()

    def hold(self) -> Callable[[], None]:
        """Delay :meth:`fire` until the returned release is called (once; more is ignored)."""
        self._holds += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._holds -= 1
            if self._fired:
                self.fire()

        return release


_OPEN_SIGNAL: contextvars.ContextVar[OpenSignal | None] = contextvars.ContextVar(
    "rxws_open_signal", default=None
)


@contextmanager
def _offer(
    var: contextvars.ContextVar[OpenSignal | None], signal: OpenSignal | None
) -> Iterator[None]:
    token = var.set(signal)
    try:
        yield
    finally:
        var.reset(token)


def listen_for_open(signal: OpenSignal | None) -> AbstractContextManager[None]:
    """Offer ``signal`` to the source subscribed inside this block (``None``: offer none)."""
    return _offer(_OPEN_SIGNAL, signal)


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


_OPENING: contextvars.ContextVar[OpenSignal | None] = contextvars.ContextVar(
    "rxws_opening", default=None
)


def opening(signal: OpenSignal | None) -> AbstractContextManager[None]:
    """Let the ``on_open`` awaited inside this block hold ``signal`` (see :func:`hold_open`)."""
    return _offer(_OPENING, signal)


def hold_open() -> Callable[[], None] | None:
    """Hold the open signal of the connection whose ``on_open`` is running, if it has one.

    Returns:
        The release to call once the connection may count as open, or ``None`` when
        nobody waits for this connection's opening (then there is nothing to hold).
    """
    signal = _OPENING.get()
    return None if signal is None else signal.hold()
