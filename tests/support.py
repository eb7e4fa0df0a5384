"""Helpers shared by several test modules.

``RXWS_TEST_TIMING`` (a number, default 1) stretches every deadline here, for slow or
busy machines: ``RXWS_TEST_TIMING=3 pytest`` gives each wait three times as long.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.subject import Subject

TIMING = float(os.environ.get("RXWS_TEST_TIMING", "1") or 1)
"""How much longer than nominal a deadline in the tests may be."""


def seconds(nominal: float) -> float:
    """A deadline of ``nominal`` seconds, stretched by ``RXWS_TEST_TIMING``."""
    return nominal * TIMING


async def until(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "", poll: float = 0.002
) -> None:
    """Poll ``predicate`` on the loop until it holds, for states no event announces.

    Raises:
        TimeoutError: It did not hold within ``timeout`` (stretched by the timing factor).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds(timeout)
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {seconds(timeout):g} s {what}".strip())
        await asyncio.sleep(poll)


def dead_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingSource:
    """A Subject behind ``reactivex.create`` that counts subscriptions and disposals."""

    def __init__(self) -> None:
        self.subject: Subject[Any] = Subject()
        self.subscribed = 0
        self.disposed = 0

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self.subscribed += 1
            inner = self.subject.subscribe(observer)

            def dispose() -> None:
                self.disposed += 1
                inner.dispose()

            return Disposable(dispose)

        self.observable: Observable[Any] = reactivex.create(subscribe)

    @property
    def active(self) -> int:
        """Subscriptions not yet disposed."""
        return self.subscribed - self.disposed

    def push(self, msg: Any) -> None:
        """Emit ``msg`` to the current subscribers."""
        self.subject.on_next(msg)


async def first_of_a_burst(source: Observable[Any], exchange: Any, count: int = 50) -> list[Any]:
    """What a subscriber of ``source`` that lets go inside its first ``on_next`` gets.

    Once ``exchange`` (a :class:`rxws.testing.DemoExchange` that does not tick) has
    the connection, it sends ``count`` frames ``{"seq": n}`` in one burst, so the link
    still holds more when the subscriber disposes; returns what reached the subscriber
    by the time the connection is closed.
    """
    got: list[Any] = []

    def first_only(msg: Any) -> None:
        got.append(msg)
        subscription.dispose()

    subscription = source.subscribe(first_only)
    await exchange.wait_for(lambda: exchange.open_connections == 1)
    for seq in range(count):
        exchange.send_raw(json.dumps({"seq": seq}))
    await exchange.wait_for(lambda: exchange.open_connections == 0)
    return got
