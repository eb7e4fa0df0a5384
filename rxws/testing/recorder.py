"""``Recorder``: an observer that keeps what it receives and lets a test await it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from reactivex import abc

from ..events import Event

__all__ = ["Recorder"]


class Recorder(abc.ObserverBase[Any]):
    """Records ``on_next`` items and the terminal notification of an Observable.

    Use it as the observer of a subscription, then await what the test needs::

        rec = Recorder()
        sub = rxws.connect(url).subscribe(rec)
        await rec.wait_for_count(5)
        sub.dispose()

    Pass :meth:`on_event` as an ``on_event=`` hook to record lifecycle events too.

    Attributes:
        items: Every item received, in order.
        error: The error received, if any.
        completed: Whether ``on_completed`` was received.
        events: Every event passed to :meth:`on_event`, in order.
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.error: Exception | None = None
        self.completed = False
        self.events: list[Event] = []
        self._changed: asyncio.Event | None = None

    def notify(self, *_: object) -> None:
        """Wake the waiters so they check their condition again.

        Call it when state the condition reads changed outside this recorder.
        """
        if self._changed is not None:
            self._changed.set()

    _notify = notify

    def on_event(self, event: Event) -> None:
        """Record one lifecycle event (use as an ``on_event=`` hook)."""
        self.events.append(event)
        self.notify()

    def on_next(self, value: Any) -> None:
        """Record one item."""
        self.items.append(value)
        self._notify()

    def on_error(self, error: Exception) -> None:
        """Record the error."""
        self.error = error
        self._notify()

    def on_completed(self) -> None:
        """Record completion."""
        self.completed = True
        self._notify()

    @property
    def done(self) -> bool:
        """Whether a terminal notification arrived."""
        return self.completed or self.error is not None

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds, checking after each notification.

        Args:
            predicate: The condition.
            timeout: Seconds before giving up.

        Raises:
            TimeoutError: The condition did not hold in time (the message shows the state).
        """
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed

        async def until() -> None:
            while not predicate():
                changed.clear()
                await changed.wait()

        try:
            await asyncio.wait_for(until(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"condition not met within {timeout} s: {len(self.items)} items, "
                f"error={self.error!r}, completed={self.completed}"
            ) from None

    async def wait_for_count(self, count: int, timeout: float = 5.0) -> list[Any]:
        """Wait until at least ``count`` items arrived (or the stream ended).

        Returns:
            The items received so far.
        """
        await self.wait_until(lambda: len(self.items) >= count or self.done, timeout)
        return self.items

    async def wait_done(self, timeout: float = 5.0) -> None:
        """Wait for completion or an error."""
        await self.wait_until(lambda: self.done, timeout)
