"""FaultProxy's latency: every byte held that long each way, in order, then forwarded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from rxws.testing import FaultProxy


async def _echo(ws: ServerConnection) -> None:
    async for msg in ws:
        await ws.send(msg)


async def test_latency_delays_each_way_and_keeps_the_order() -> None:
    async with serve(_echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with (
            FaultProxy("127.0.0.1", port, latency=0.1) as proxy,
            connect(proxy.url("/"), ping_interval=None) as ws,
        ):
            started = time.monotonic()
            for i in range(20):
                await ws.send(str(i))
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(20)]
            elapsed = time.monotonic() - started
            assert got == [str(i) for i in range(20)]
            assert elapsed >= 0.2  # 0.1 s there, 0.1 s back
            proxy.latency = 0.0  # what is held keeps its time; new bytes go at once
            await ws.send("after")
            assert await asyncio.wait_for(ws.recv(), 5) == "after"


@pytest.mark.parametrize("bad", [-0.5, "1", True])
def test_latency_must_be_a_number_of_seconds(bad: Any) -> None:
    with pytest.raises(ValueError, match="latency"):
        FaultProxy("127.0.0.1", 1, latency=bad)
