"""Suite-wide checks: every async test must leave no task pending and no socket open."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
from collections.abc import AsyncIterator

import pytest

# Behavioural tests run once per transport, so the transports cannot drift apart.
TRANSPORTS = ["websockets"] + (["picows"] if importlib.util.find_spec("picows") else [])

# How long a test's tasks and sockets may take to wind down (RXWS_TEST_TIMING stretches it).
SETTLE_SECONDS = 5.0 * float(os.environ.get("RXWS_TEST_TIMING", "1") or 1)


def open_sockets() -> int:
    """How many sockets this process holds open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        func = getattr(item, "function", None)
        if func is not None and inspect.iscoroutinefunction(func):
            item.fixturenames.append("no_leaks")  # type: ignore[attr-defined]


@pytest.fixture
async def no_leaks() -> AsyncIterator[None]:
    """Fail the test if it leaves a task pending or a socket open (after a short settle)."""
    before = open_sockets()
    yield
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    deadline = loop.time() + SETTLE_SECONDS
    while True:
        pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        sockets = open_sockets()
        if (not pending and sockets <= before) or loop.time() > deadline:
            break
        await asyncio.sleep(0.02)
    assert not pending, f"tasks left pending: {pending}"
    assert sockets <= before, f"{sockets - before} socket(s) left open"


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The name of each installed transport in turn."""
    return str(request.param)
