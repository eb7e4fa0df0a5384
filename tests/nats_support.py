"""NATS helpers shared by the tests of rxws.nats and of the relay (real servers only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats as nats_py
from nats.aio.client import Client

from rxws import nats
from rxws.testing import NatsServer, Recorder


async def quiet(_: Exception) -> None:
    """nats-py's error callback: the tests look at rxws's counters, not its log."""


async def connect(url: str, **options: Any) -> Client:
    options.setdefault("reconnect_time_wait", 0.05)
    options.setdefault("max_reconnect_attempts", -1)
    options.setdefault("connect_timeout", 2)
    return await nats_py.connect(url, error_cb=quiet, **options)


@asynccontextmanager
async def nats_env(**options: Any) -> AsyncIterator[tuple[NatsServer, Client]]:
    async with NatsServer() as server:
        nc = await connect(server.url, **options)
        try:
            yield server, nc
        finally:
            await nc.close()


async def subscribed(nc: Client) -> None:
    """Let a just-made subscription reach the server (its SUB goes before our PING)."""
    for _ in range(3):
        await asyncio.sleep(0)
    await nc.flush()


async def stored(nc: Client, stream: str, count: int, subject: str = "md.>") -> list[Any]:
    """Every message of ``stream`` from its start, through an ordered consumer."""
    rec = Recorder()
    sub = nats.subscribe(nc, subject, stream=stream, deliver="all").subscribe(rec)
    try:
        await rec.wait_for_count(count, timeout=10)
        info = await nc.jsm().stream_info(stream)
        assert info.state.messages == count, f"the stream holds {info.state.messages}"
        return rec.items
    finally:
        sub.dispose()
