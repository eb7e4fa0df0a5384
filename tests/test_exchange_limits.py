"""DemoExchange enforces Binance-like limits, and its many-topic combined mode.

Every test talks to the exchange with plain ``websockets`` client connections, so what
is proved here is the server's behaviour, not rxws's client.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rxws.limits import Limits
from rxws.testing import DemoExchange
from rxws.testing.exchange import Violation

WAIT = 5.0  # seconds a helper waits for what it expects: a missing frame fails, never hangs


def _connect(url: str) -> connect:
    # No keepalive pings: they would count against the message limit at random times.
    return connect(url, ping_interval=None, compression=None)


async def _request(ws: ClientConnection, method: str, params: Any, ident: int) -> dict[str, Any]:
    """Send one request and return its reply, skipping the data in between."""
    await ws.send(json.dumps({"method": method, "params": params, "id": ident}))

    async def reply() -> dict[str, Any]:
        while True:
            msg = json.loads(await ws.recv())
            if (
                isinstance(msg, dict)
                and msg.get("id") == ident
                and ("result" in msg or "error" in msg)
            ):
                return msg

    return await asyncio.wait_for(reply(), WAIT)


async def _closed_code(ws: ClientConnection) -> int | None:
    """Read until the server closes the connection; its close code."""

    async def drain() -> None:
        while True:
            await ws.recv()

    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(drain(), WAIT)
    return closed.value.rcvd.code if closed.value.rcvd else None


# ------------------------------------------------------------------ limits


async def test_limits_are_off_by_default() -> None:
    async with DemoExchange(combined=True) as exchange, _connect(exchange.url) as ws:
        topics = [f"t{i}@trade" for i in range(2000)]
        assert await _request(ws, "SUBSCRIBE", topics, 1) == {"result": None, "id": 1}
        for ident in range(2, 30):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": ident}))
        assert len((await _request(ws, "LIST_SUBSCRIPTIONS", [], 30))["result"]) == 2000
        assert exchange.violations == []
        assert exchange.limits == Limits()


async def test_subscribing_past_the_stream_cap_gets_an_error_reply_and_nothing_else() -> None:
    async with (
        DemoExchange(limits=Limits(streams_per_connection=3)) as exchange,
        _connect(exchange.ws_url) as ws,
        _connect(exchange.ws_url) as other,
    ):
        assert await _request(ws, "SUBSCRIBE", ["a@trade", "b@trade"], 1) == {
            "result": None,
            "id": 1,
        }
        refused = await _request(ws, "SUBSCRIBE", ["c@trade", "d@trade"], 2)
        assert refused["id"] == 2 and "result" not in refused
        assert refused["error"]["code"] == 2
        assert "limit of 3 per connection" in refused["error"]["msg"]
        # All or none: neither c nor d was subscribed.
        listed = await _request(ws, "LIST_SUBSCRIPTIONS", [], 3)
        assert listed["result"] == ["a@trade", "b@trade"]
        assert exchange.violations == [
            Violation("streams", 1, refused["error"]["msg"].removeprefix("Too many streams: "))
        ]
        # Up to the cap is fine, and a topic held already costs nothing.
        assert "result" in await _request(ws, "SUBSCRIBE", ["c@trade", "a@trade"], 4)
        # The cap is per connection.
        three = ["a@trade", "b@trade", "c@trade"]
        assert "result" in await _request(other, "SUBSCRIBE", three, 1)
        assert "error" in await _request(other, "SUBSCRIBE", ["z@trade"], 2)
        assert [v.connection for v in exchange.violations] == [1, 2]


async def test_more_messages_a_second_than_allowed_closes_with_1008() -> None:
    async with (
        DemoExchange(limits=Limits(messages_per_second=5)) as exchange,
        _connect(exchange.ws_url) as ws,
    ):
        for ident in range(1, 6):
            await _request(ws, "LIST_SUBSCRIPTIONS", [], ident)
        assert exchange.violations == []
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 6}))
        assert await _closed_code(ws) == 1008
        assert ws.close_reason == "Too many requests"
        (violation,) = exchange.violations
        assert violation.kind == "messages" and violation.connection == 1
        assert "6 incoming messages within 1 s; the limit is 5" in violation.detail
        # The message over the limit was not acted on.
        assert [m["id"] for _, m in exchange.received] == [1, 2, 3, 4, 5, 6]


async def test_pings_and_pongs_count_as_messages_like_binance() -> None:
    async with (
        DemoExchange(limits=Limits(messages_per_second=5)) as exchange,
        _connect(exchange.ws_url) as ws,
    ):
        await (await ws.ping())
        await (await ws.ping())
        await ws.pong()
        await ws.pong()
        await _request(ws, "LIST_SUBSCRIPTIONS", [], 1)
        assert exchange.violations == []
        await ws.ping()
        assert await _closed_code(ws) == 1008
        assert [v.kind for v in exchange.violations] == ["messages"]


async def test_the_message_limit_is_a_sliding_second() -> None:
    async with (
        DemoExchange(limits=Limits(messages_per_second=5)) as exchange,
        _connect(exchange.ws_url) as ws,
    ):
        start = time.monotonic()
        for ident in range(1, 6):
            await _request(ws, "LIST_SUBSCRIPTIONS", [], ident)
        # A second after the first five, five more fit (0.1 s of slack for scheduling).
        await asyncio.sleep(max(0.0, start + 1.1 - time.monotonic()))
        for ident in range(6, 11):
            await _request(ws, "LIST_SUBSCRIPTIONS", [], ident)
        assert exchange.violations == [] and exchange.open_connections == 1


async def _handshake(url: str) -> int:
    """Open and close one connection; the HTTP status of the handshake (101: accepted)."""
    try:
        async with _connect(url):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_connection_attempts_past_the_window_get_http_429() -> None:
    async with DemoExchange(limits=Limits(connections_per_window=(3, 60))) as exchange:
        assert [await _handshake(exchange.url) for _ in range(4)] == [101, 101, 101, 429]
        assert exchange.handshakes == 4 and exchange.accepted == 3
        (violation,) = exchange.violations
        assert violation == Violation(
            "connections", None, "4 connection attempts within 60 s; the limit is 3"
        )


async def test_the_connection_window_slides_and_counts_refused_attempts() -> None:
    async with DemoExchange(limits=Limits(connections_per_window=(2, 0.5))) as exchange:
        exchange.refuse(503)  # refused for another reason, but it counts
        assert [await _handshake(exchange.url) for _ in range(3)] == [503, 101, 429]
        await asyncio.sleep(0.6)  # the whole window passes
        assert await _handshake(exchange.url) == 101
        assert [v.kind for v in exchange.violations] == ["connections"]


async def test_the_server_closes_a_connection_at_its_lifetime() -> None:
    async with DemoExchange(limits=Limits(connection_lifetime=0.3)) as exchange:
        async with _connect(exchange.url):
            pass  # closed by the client in time: no violation
        start = time.monotonic()
        async with _connect(exchange.url) as ws:
            assert await _closed_code(ws) == 1001
        assert 0.3 <= time.monotonic() - start < 3
        assert ws.close_reason == "connection lifetime reached"
        (violation,) = exchange.violations
        assert violation.kind == "lifetime" and violation.connection == 2
        assert "0.3 s" in violation.detail


async def test_limits_can_be_set_after_start() -> None:
    async with DemoExchange() as exchange, _connect(exchange.ws_url) as ws:
        assert "result" in await _request(ws, "SUBSCRIBE", ["a@trade", "b@trade"], 1)
        exchange.limits = Limits(streams_per_connection=2)
        assert "error" in await _request(ws, "SUBSCRIBE", ["c@trade"], 2)


def test_limits_must_be_limits() -> None:
    with pytest.raises(TypeError, match=r"rxws\.Limits, got dict"):
        DemoExchange(limits={"streams_per_connection": 5})  # type: ignore[arg-type]


# ------------------------------------------------------------------ combined mode


async def _data(ws: ClientConnection, count: int) -> list[Any]:
    """The next ``count`` data messages (replies skipped)."""
    found: list[Any] = []

    async def read() -> None:
        while len(found) < count:
            msg = json.loads(await ws.recv())
            if not (isinstance(msg, dict) and "id" in msg):
                found.append(msg)

    await asyncio.wait_for(read(), WAIT)
    return found


async def test_combined_stream_wraps_trades_and_numbers_each_topic() -> None:
    async with (
        DemoExchange(combined=True, interval=0.002, batch=4) as exchange,
        _connect(exchange.url) as ws,
    ):
        topics = ["aaa@trade", "bbb@trade", "ccc@trade"]
        assert await _request(ws, "SUBSCRIBE", topics, 1) == {"result": None, "id": 1}
        messages = await _data(ws, 60)
        ids: dict[str, list[int]] = defaultdict(list)
        seqs = []
        for msg in messages:
            assert set(msg) == {"stream", "data"}
            stream, data = msg["stream"], msg["data"]
            assert data["e"] == "trade" and data["s"] == stream.partition("@")[0].upper()
            ids[stream].append(data["t"])
            seqs.append(data["seq"])
        assert sorted(ids) == topics
        for got in ids.values():
            assert got == list(range(1, len(got) + 1))  # no gap, no repeat
        assert seqs == sorted(set(seqs))  # the global sequence only grows
        counts = [len(got) for got in ids.values()]
        assert max(counts) - min(counts) <= 1  # the topics take turns
        assert exchange.topic_ids()["aaa@trade"] >= len(ids["aaa@trade"])


async def test_combined_mode_ws_path_sends_bare_trades() -> None:
    async with (
        DemoExchange(combined=True, interval=0.002) as exchange,
        _connect(exchange.ws_url) as ws,
    ):
        assert "result" in await _request(ws, "SUBSCRIBE", ["xyz@trade"], 1)
        trades = await _data(ws, 5)
        assert [t["t"] for t in trades] == [1, 2, 3, 4, 5]
        assert all(t["s"] == "XYZ" and "stream" not in t for t in trades)


async def test_combined_mode_takes_streams_in_the_url() -> None:
    async with (
        DemoExchange(combined=True, interval=0.002) as exchange,
        _connect(exchange.url + "?streams=one@trade/two@trade") as ws,
    ):
        streams = {m["stream"] for m in await _data(ws, 10)}
        assert streams == {"one@trade", "two@trade"}
        assert exchange.subscriptions() == [{"one@trade", "two@trade"}]


async def test_combined_mode_streams_in_the_url_respect_the_cap() -> None:
    async with DemoExchange(combined=True, limits=Limits(streams_per_connection=1)) as exchange:
        async with _connect(exchange.url + "?streams=one@trade/two@trade") as ws:
            assert await _closed_code(ws) == 1008
        assert [v.kind for v in exchange.violations] == ["streams"]


async def test_combined_mode_rejects_names_that_are_not_trade_streams() -> None:
    async with DemoExchange(combined=True) as exchange, _connect(exchange.url) as ws:
        reply = await _request(ws, "SUBSCRIBE", ["ok@trade", "btcusdt@depth"], 1)
        assert "'btcusdt@depth' is not a stream name" in reply["error"]["msg"]
        listed = await _request(ws, "LIST_SUBSCRIPTIONS", [], 2)
        assert listed["result"] == []  # all or none
        assert exchange.violations == []  # a bad name is not a limit violation


async def test_a_topic_nobody_holds_makes_no_trades_so_its_ids_carry_on() -> None:
    async with (
        DemoExchange(combined=True, interval=0.002, batch=2) as exchange,
        _connect(exchange.url) as ws,
    ):
        await _request(ws, "SUBSCRIBE", ["a@trade", "b@trade"], 1)
        first = await _data(ws, 10)
        await _request(ws, "UNSUBSCRIBE", ["a@trade"], 2)
        # After the reply, only b arrives.
        assert {m["stream"] for m in await _data(ws, 10)} == {"b@trade"}
        held = exchange.topic_ids()["a@trade"]
        await _request(ws, "SUBSCRIBE", ["a@trade"], 3)
        later = [m["data"]["t"] for m in await _data(ws, 20) if m["stream"] == "a@trade"]
        assert later[0] == held + 1 and later == list(range(held + 1, held + 1 + len(later)))
        assert max(m["data"]["t"] for m in first if m["stream"] == "a@trade") == held


async def test_five_thousand_topics_over_five_connections() -> None:
    limits = Limits(streams_per_connection=1024, messages_per_second=5)
    async with DemoExchange(combined=True, interval=0.005, batch=25, limits=limits) as exchange:
        topics = [f"sym{i:04d}@trade" for i in range(5000)]
        shards = [topics[i : i + 1000] for i in range(0, 5000, 1000)]

        async def one_connection(mine: list[str]) -> dict[str, list[int]]:
            ids: dict[str, list[int]] = defaultdict(list)
            async with _connect(exchange.url) as ws:
                # Five frames of 200: exactly the message limit, all at once.
                for n in range(5):
                    frame = {"method": "SUBSCRIBE", "params": mine[n * 200 : (n + 1) * 200]}
                    await ws.send(json.dumps({**frame, "id": n}))

                async def read() -> None:
                    while len(ids) < len(mine) or min(len(v) for v in ids.values()) < 2:
                        msg = json.loads(await ws.recv())
                        if "stream" in msg:
                            ids[msg["stream"]].append(msg["data"]["t"])

                await asyncio.wait_for(read(), 30)
            return ids

        results = await asyncio.gather(*(one_connection(mine) for mine in shards))
        assert exchange.violations == []
        for mine, ids in zip(shards, results, strict=True):
            assert sorted(ids) == sorted(mine)
            for got in ids.values():
                assert got == list(range(1, len(got) + 1))


async def test_request_delay_holds_each_request_that_long_in_turn() -> None:
    async with DemoExchange(combined=True, request_delay=0.2) as ex, _connect(ex.url) as ws:
        started = time.monotonic()
        for ident in (1, 2):
            await ws.send(
                json.dumps({"method": "SUBSCRIBE", "params": [f"t{ident}@trade"], "id": ident})
            )
        replies = []
        while len(replies) < 2:
            msg = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if "id" in msg:
                replies.append((msg["id"], time.monotonic() - started))
        assert [ident for ident, _ in replies] == [1, 2]
        assert replies[0][1] >= 0.2
        assert replies[1][1] >= 0.4  # one request at a time


@pytest.mark.parametrize("bad", [-1, "0.1", True])
def test_request_delay_must_be_a_number_of_seconds(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="request_delay"):
        DemoExchange(request_delay=bad)
