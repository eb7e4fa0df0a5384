"""rxws's resource base and task set, through the servers that use them."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import pytest

from rxws._resource import AsyncResource, Tasks
from rxws.testing import DemoExchange, SilentServer


async def test_a_server_that_fails_to_start_is_closed_and_does_not_warn() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exchange = DemoExchange(port=port)
        with pytest.raises(OSError):
            await exchange.start()
        assert exchange.closed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del exchange
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


async def test_aclose_is_idempotent_and_a_second_call_waits_for_the_first() -> None:
    order: list[str] = []

    class Slow(AsyncResource):
        async def _aclose(self) -> None:
            order.append("closing")
            await asyncio.sleep(0.05)
            order.append("closed")

    resource = Slow()
    async with resource:
        pass
    assert order == ["closing", "closed"] and resource.closed
    again = Slow()
    await again.start()
    first = asyncio.ensure_future(again.aclose())
    await asyncio.sleep(0)
    await again.aclose()
    assert first.done()
    assert order == ["closing", "closed", "closing", "closed"]


async def test_a_started_resource_dropped_unclosed_warns() -> None:
    server = SilentServer()
    await server.start()
    await server.aclose()
    leaked = AsyncResource()
    await leaked.start()
    with pytest.warns(ResourceWarning, match="never closed"):
        del leaked
        gc.collect()


async def test_tasks_keeps_cancels_and_awaits_its_tasks() -> None:
    tasks = Tasks()
    done = tasks.spawn(asyncio.sleep(0), name="quick")
    slow = tasks.spawn(asyncio.sleep(3600), name="slow")
    await tasks.wait(timeout=0.1)
    assert done.done() and not slow.done()
    assert len(tasks) == 1 and tasks
    await tasks.aclose()
    assert slow.cancelled() and not tasks
