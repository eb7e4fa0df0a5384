"""What every rxws object that holds something open shares.

:class:`AsyncResource` gives ``async with`` (``start`` on entry, ``aclose`` on exit),
an idempotent :meth:`~AsyncResource.aclose` (a second call waits for the first to
finish), :attr:`~AsyncResource.closed`, and a ``ResourceWarning`` for an object that
was started and then dropped without being closed. Subclasses implement ``_start``
and ``_aclose`` only.

:class:`Tasks` spawns background tasks and keeps strong references to them until they
end, so none is garbage-collected mid-flight, and cancels or awaits them all at once.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["AsyncResource", "Tasks"]

_R = TypeVar("_R", bound="AsyncResource")
_T = TypeVar("_T")


class Tasks:
    """A set of background tasks with strong references, cancelled or awaited together."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, _T], name: str | None = None) -> asyncio.Task[_T]:
        """Run ``coro`` as a task on the running loop and keep it until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def snapshot(self) -> set[asyncio.Task[Any]]:
        """The tasks running now."""
        return set(self._tasks)

    def cancel(self) -> None:
        """Cancel every task (they end on a later turn of the loop)."""
        for task in list(self._tasks):
            task.cancel()

    async def wait(self, timeout: float | None = None) -> None:
        """Wait until every task running now has ended (at most ``timeout`` seconds)."""
        tasks = self.snapshot()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def aclose(self) -> None:
        """Cancel every task and wait until they have ended."""
        self.cancel()
        tasks = self.snapshot()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class AsyncResource:
    """Base of the objects that hold sockets, processes or tasks open."""

    _resource_started = False
    _resource_closing: asyncio.Future[None] | None = None

    async def _start(self) -> None:
        """Open what this object holds (subclasses override it)."""

    async def _aclose(self) -> None:
        """Close what this object holds; called once (subclasses override it)."""

    async def start(self) -> None:
        """Open what this object holds (``async with`` calls it).

        If opening fails, whatever was opened is closed again (the object is then
        closed) before the error is raised.
        """
        self._resource_started = True
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close what this object holds; safe to call more than once.

        A second call, also one made while the first is still closing, waits until
        the first has finished.
        """
        closing = self._resource_closing
        if closing is not None:
            await asyncio.shield(closing)
            return
        closing = self._resource_closing = asyncio.get_running_loop().create_future()
        try:
            await self._aclose()
        finally:
            closing.set_result(None)

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._resource_closing is not None

    async def __aenter__(self: _R) -> _R:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _unclosed(self) -> bool:
        """Whether this object was started and never closed (for ``__del__``)."""
        return self._resource_started and self._resource_closing is None

    def __del__(self) -> None:
        if self._unclosed():
            warnings.warn(
                f"{self!r} was started and never closed; use 'async with' or await aclose()",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )
