"""Topics over as many connections as the server's limits require, against a server that says no."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import pytest
from support import until

import rxws
from rxws.backoff import Backoff
from rxws.errors import SubscriptionRejected
from rxws.events import Connected, Disconnected, Event, Rotated
from rxws.limits import Limits
from rxws.protocols import Binance, JsonSubscriptions, Request
from rxws.testing import DemoExchange, FaultProxy

FAST = Backoff(initial=0.05, maximum=0.2, jitter=0.0)


class TopicLog:
    """Every topic's payloads, by topic, plus the errors of topic subscriptions."""

    def __init__(self) -> None:
        self.ids: dict[str, list[int]] = collections.defaultdict(list)
        self.errors: dict[str, Exception] = {}
        self.changed = asyncio.Event()

    def observer(self, topic: str) -> tuple[Callable[[Any], None], Callable[[Exception], None]]:
        ids = self.ids[topic]

        def on_next(data: Any) -> None:
            ids.append(data["t"])

        def on_error(error: Exception) -> None:
            self.errors[topic] = error
            self.changed.set()

        return on_next, on_error

    def subscribe_all(self, client: rxws.WebSocketClient, topics: list[str]) -> list[Any]:
        return [client.topic(t).subscribe(*self.observer(t)) for t in topics]

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        await until(predicate, timeout, poll=0.05)

    def assert_whole(self) -> None:
        """Per topic: ids from 1 up, no repeat, no gap."""
        for topic, ids in self.ids.items():
            assert ids, f"{topic} delivered nothing"
            repeats = [i for i, n in collections.Counter(ids).items() if n > 1]
            assert not repeats, f"{topic}: repeated ids {repeats[:5]}"
            missing = sorted(set(range(1, max(ids) + 1)) - set(ids))
            assert not missing, f"{topic}: {len(missing)} ids missing, first {missing[:10]}"
            assert ids == sorted(ids), f"{topic}: out of order"


@pytest.mark.slow
async def test_five_thousand_topics_over_five_connections_through_a_drop_and_rotations() -> None:
    """Issue: 5 connections, every topic delivers, zero violations, zero repeats or gaps."""
    server_limits = Limits(
        streams_per_connection=1024,
        messages_per_second=5,
        connections_per_window=(10, 10.0),
        connection_lifetime=15.0,
    )
    topics = [f"sym{i:04d}@trade" for i in range(5000)]
    async with DemoExchange(combined=True, interval=0.005, batch=25, limits=server_limits) as ex:
        events: list[Event] = []
        log = TopicLog()
        client = rxws.WebSocketClient(
            ex.url, subscriptions=Binance(), limits=server_limits, backoff=FAST
        )
        client.status.subscribe(events.append)
        subscriptions = log.subscribe_all(client, topics)
        async with client:
            await log.until(lambda: all(log.ids[t] for t in topics), timeout=20)
            assert sorted(ex.connections.values()) == [904, 1024, 1024, 1024, 1024]
            # Every connection rotates once before the server's 15 s lifetime ends.
            await log.until(lambda: client.stats.rotations >= 5, timeout=20)
            rotated = {e.connection for e in events if isinstance(e, Rotated)}
            assert rotated == {0, 1, 2, 3, 4}
            # One connection is cut with 1,024 topics on it; it comes back. (First the
            # connections the rotations let go of finish closing.)
            await ex.wait_for(lambda: ex.open_connections == 5, timeout=10)
            busiest = max(ex.connections, key=lambda c: ex.connections[c])
            before = dict(ex.topic_ids())
            await ex.drop(busiest)
            await log.until(
                lambda: any(
                    isinstance(e, Disconnected) and e.closed_by == "server" for e in events
                ),
                timeout=10,
            )
            await log.until(lambda: all(ex.topic_ids()[t] > before[t] for t in topics), timeout=20)
            await asyncio.sleep(0.5)
        for subscription in subscriptions:
            subscription.dispose()
        assert ex.violations == []
        assert not log.errors
        log.assert_whole()
        assert {e.connection for e in events if isinstance(e, Connected)} == {0, 1, 2, 3, 4}
        per = client.stats.per_connection
        assert [s.index for s in per] == [0, 1, 2, 3, 4]
        assert sum(s.messages for s in per) >= client.stats.messages


async def test_a_rotation_waits_until_the_server_has_answered_every_subscribe_frame() -> None:
    """A new connection takes over only once the server acted on all its SUBSCRIBEs.

    The exchange takes 0.25 s over each request and the link adds 0.1 s each way, so
    the new connection's three frames take effect 0.35, 0.6 and 0.85 s after they were
    sent. Taking over once the first topics flow on it (or once its frames are sent)
    would let the old connection go while the server still sends it the other topics'
    trades, for as long as its close takes to arrive: those would be lost.
    """
    topics = [f"t{i}@trade" for i in range(6)]
    rotations: list[Event] = []
    async with (
        DemoExchange(combined=True, interval=0.005, batch=6, request_delay=0.25) as ex,
        FaultProxy("127.0.0.1", ex.port, latency=0.1) as proxy,
    ):
        client = rxws.WebSocketClient(
            proxy.url("/stream"),
            subscriptions=Binance(topics_per_frame=2),
            backoff=FAST,
            rotate_every=2.0,
        )
        client.status.subscribe(lambda e: rotations.append(e) if isinstance(e, Rotated) else None)
        log = TopicLog()
        async with client:
            subscriptions = log.subscribe_all(client, topics)
            await log.until(lambda: len(rotations) >= 2, timeout=15)
            marks = {t: len(log.ids[t]) for t in topics}
            await log.until(lambda: all(len(log.ids[t]) > marks[t] + 5 for t in topics), 5)
            for subscription in subscriptions:
                subscription.dispose()
        assert ex.accepted >= 3
        assert not ex.violations
        assert not log.errors
        log.assert_whole()


async def test_one_server_subscription_per_topic_and_the_last_subscriber_unsubscribes() -> None:
    async with DemoExchange(combined=True, interval=0.005, batch=5) as ex:
        client = rxws.WebSocketClient(ex.url, subscriptions=Binance(), backoff=FAST)
        a: list[Any] = []
        b: list[Any] = []
        async with client:
            first = client.topic("btc@trade").subscribe(a.append)
            second = client.topic("btc@trade").subscribe(b.append)
            log = TopicLog()
            await log.until(lambda: len(a) >= 3 and len(b) >= 3, timeout=5)
            subscribes = [m for _, m in ex.received if m.get("method") == "SUBSCRIBE"]
            assert [m["params"] for m in subscribes] == [["btc@trade"]]
            first.dispose()
            await asyncio.sleep(0.3)
            assert not [m for _, m in ex.received if m.get("method") == "UNSUBSCRIBE"]
            second.dispose()
            await log.until(
                lambda: any(m.get("method") == "UNSUBSCRIBE" for _, m in ex.received), timeout=5
            )
            # Freed capacity is reused: a new topic goes on the same connection.
            c: list[Any] = []
            third = client.topic("eth@trade").subscribe(c.append)
            await log.until(lambda: len(c) >= 1, timeout=5)
            third.dispose()
            assert ex.accepted == 1


async def test_a_rejected_topic_errors_that_topic_only() -> None:
    # The server allows two streams a connection; the client was told three.
    async with DemoExchange(
        combined=True, interval=0.005, batch=6, limits=Limits(streams_per_connection=2)
    ) as ex:
        client = rxws.WebSocketClient(
            ex.url,
            subscriptions=Binance(topics_per_frame=1),
            limits=Limits(streams_per_connection=3),
            backoff=FAST,
        )
        log = TopicLog()
        async with client:
            subs = log.subscribe_all(client, ["a@trade", "b@trade", "c@trade"])
            await log.until(lambda: "c@trade" in log.errors, timeout=5)
            await log.until(lambda: len(log.ids["a@trade"]) >= 3, timeout=5)
            error = log.errors["c@trade"]
            assert isinstance(error, SubscriptionRejected)
            assert list(error.topics) == ["c@trade"]
            assert set(log.errors) == {"c@trade"}
            assert client.stats.per_connection[0].rejected == 1
            for sub in subs:
                sub.dispose()


async def test_all_connections_cut_at_once_come_back_within_the_budget() -> None:
    server = Limits(streams_per_connection=10, connections_per_window=(6, 3.0))
    topics = [f"t{i}@trade" for i in range(30)]
    async with DemoExchange(combined=True, interval=0.005, batch=10, limits=server) as ex:
        client = rxws.WebSocketClient(ex.url, subscriptions=Binance(), limits=server, backoff=FAST)
        log = TopicLog()
        subs = log.subscribe_all(client, topics)
        async with client:
            await log.until(lambda: all(log.ids[t] for t in topics), timeout=10)
            assert ex.open_connections == 3
            marks = {t: len(log.ids[t]) for t in topics}
            await ex.drop_all(1011)
            await log.until(lambda: all(len(log.ids[t]) > marks[t] for t in topics), timeout=15)
        for sub in subs:
            sub.dispose()
        # Three reconnects had to wait for the budget (6 in 3 s): none was refused.
        assert ex.violations == []
        log.assert_whole()


async def test_too_many_requests_on_connect_is_retried_with_backoff() -> None:
    async with DemoExchange(combined=True, interval=0.005, batch=5) as ex:
        ex.refuse(429, 429)
        client = rxws.WebSocketClient(ex.url, subscriptions=Binance(), backoff=FAST)
        log = TopicLog()
        async with client:
            sub = client.topic("x@trade").subscribe(*log.observer("x@trade"))
            await log.until(lambda: len(log.ids["x@trade"]) >= 2, timeout=5)
            sub.dispose()
        assert ex.handshakes == 3
        assert client.stats.reconnects == 2


async def test_a_server_with_a_lower_rate_than_configured_slows_the_client_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The server closes at more than 2 frames a second; the client was told 20.
    async with DemoExchange(
        combined=True, interval=0.005, batch=5, limits=Limits(messages_per_second=2)
    ) as ex:
        client = rxws.WebSocketClient(
            ex.url,
            subscriptions=Binance(topics_per_frame=1),
            limits=Limits(messages_per_second=20),
            backoff=FAST,
        )
        log = TopicLog()
        async with client:
            subs = log.subscribe_all(client, [f"s{i}@trade" for i in range(8)])
            await log.until(lambda: all(log.ids[f"s{i}@trade"] for i in range(8)), timeout=20)
            for sub in subs:
                sub.dispose()
        assert "sending too fast" in caplog.text
        # It was told once or twice, then kept under the server's rate.
        assert 1 <= sum(v.kind == "messages" for v in ex.violations) <= 3


def test_bad_input_fails_at_the_call() -> None:
    with pytest.raises(ValueError, match="needs subscriptions="):
        rxws.WebSocketClient("ws://127.0.0.1:9/", limits=Limits(streams_per_connection=2))
    with pytest.raises(TypeError, match="protocol such as"):
        rxws.WebSocketClient("ws://127.0.0.1:9/", subscriptions="binance")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"rxws\.Limits"):
        rxws.WebSocketClient("ws://127.0.0.1:9/", subscriptions=Binance(), limits=5)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        Limits(streams_per_connection=0)
    client = rxws.WebSocketClient("ws://127.0.0.1:9/", subscriptions=Binance())
    with pytest.raises(TypeError, match="non-empty string"):
        client.topic(5)  # type: ignore[arg-type]
    plain = rxws.WebSocketClient("ws://127.0.0.1:9/")
    with pytest.raises(ValueError, match="subscriptions="):
        plain.topic("btc@trade")


async def test_a_protocol_that_builds_no_frame_is_reported() -> None:
    class Broken(JsonSubscriptions):
        def subscribe_frames(self, topics: Any, request_id: int) -> list[Request]:
            return []

    protocol = Broken(
        subscribe={"method": "SUBSCRIBE", "params": "{topics}", "id": "{id}"},
        unsubscribe={"method": "UNSUBSCRIBE", "params": "{topics}", "id": "{id}"},
        topic="stream",
        payload="data",
    )
    async with DemoExchange(combined=True) as ex:
        client = rxws.WebSocketClient(ex.url, subscriptions=protocol, backoff=FAST)
        errors: list[Exception] = []
        client.errors.subscribe(errors.append)
        async with client:
            sub = client.topic("a@trade").subscribe(lambda _: None)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while not errors and loop.time() < deadline:
                await asyncio.sleep(0.02)
            sub.dispose()
        assert errors and "frame" in str(errors[0])
