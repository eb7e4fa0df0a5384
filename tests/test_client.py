"""rxws.WebSocketClient on real loopback servers: DemoExchange, dead ports, stuck handshakes."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import pydoc
import warnings
from typing import Any

import pytest
from support import dead_port

import rxws
from rxws import WebSocketClient
from rxws.backoff import Backoff
from rxws.errors import (
    ConnectionLost,
    HandshakeRejected,
    IdleTimeout,
    NotConnected,
    ParseError,
    ReconnectExhausted,
    StreamClosed,
    SubscriberError,
)
from rxws.events import Connected, Connecting, Disconnected, Failed, Retrying, Rotated
from rxws.testing import DemoExchange, Recorder, SilentServer

FAST = Backoff(initial=0.02, maximum=0.05, jitter=0.0, reset_after=30.0)
SUBSCRIBE = {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}
UNSUBSCRIBE = {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 2}
BTC = [{"s": "BTCUSDT"}]
SECRET_KEY = "listenKeySECRET123456"
SECRET_HEADER = "apikeyHEADERSECRET987"


def kinds(events: list[Any]) -> list[type]:
    return [type(e) for e in events]


def methods_on(exchange: DemoExchange, method: str) -> list[int]:
    """The connection ids on which the exchange received ``method``, in order."""
    return [
        conn
        for conn, msg in exchange.received
        if isinstance(msg, dict) and msg.get("method") == method
    ]


def trades(items: list[Any]) -> list[Any]:
    return [m for m in items if isinstance(m, dict) and m.get("e") == "trade"]


def seqs(items: list[Any]) -> list[int]:
    return [m["seq"] for m in trades(items)]


def seq_of(msg: Any) -> Any:
    return msg.get("seq") if isinstance(msg, dict) else None


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"send_timeout": 0}, ValueError, "send_timeout"),
        ({"idle_timeout": -1}, ValueError, "idle_timeout"),
        ({"serialize": "json"}, TypeError, "serialize"),
        ({"parse": 3}, TypeError, "parse"),
        ({"on_open": "hello"}, TypeError, "on_open"),
        ({"transport": "carrier-pigeon"}, ValueError, "transport"),
        ({"max_attempts": 0}, ValueError, "max_attempts"),
        ({"rotate_every": 0}, ValueError, "rotate every"),
    ],
)
def test_bad_arguments_say_what_is_wrong(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        WebSocketClient("ws://127.0.0.1:9/", **kwargs)


@pytest.mark.parametrize("url", ["http://example.com/", "example.com", 42])
def test_a_bad_url_is_rejected_at_construction(url: Any) -> None:
    with pytest.raises(ValueError, match="url"):
        WebSocketClient(url)


def test_an_unstarted_client_can_be_dropped_silently() -> None:
    client = WebSocketClient("ws://127.0.0.1:9/")
    assert "idle" in repr(client)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del client
        gc.collect()


# ---------------------------------------------------------------------------- lifecycle


async def test_async_with_streams_and_close_ends_everything(transport: str) -> None:
    async with DemoExchange() as exchange:
        status, messages = Recorder(), Recorder()
        async with WebSocketClient(exchange.url, transport=transport) as client:
            client.status.subscribe(status)
            client.messages.subscribe(messages)
            await messages.wait_for_count(5)
            assert "connected" in repr(client)
            assert client.present is not None and not client.closed
        assert client.closed and "closed" in repr(client)
        assert messages.completed and messages.error is None
        assert status.completed
        assert isinstance(status.items[-1], Disconnected)  # the close, seen before completion
        assert client.present is None
        await exchange.wait_for(lambda: exchange.open_connections == 0)
        with pytest.raises(StreamClosed):
            await client.send("too late")
        with pytest.raises(StreamClosed):
            await client.start()
        await client.close()  # again: nothing happens


async def test_start_twice_is_one_connection_and_close_twice_is_fine(transport: str) -> None:
    async with DemoExchange() as exchange:
        client = WebSocketClient(exchange.url, transport=transport)
        await client.start()
        await client.start()
        await client.wait_connected(timeout=5)
        assert exchange.accepted == 1
        # Two closers at once: both return once everything is closed.
        await asyncio.gather(client.close(), client.close())
        await client.close()
        assert exchange.accepted == 1


async def test_streams_subscribed_after_close_complete_at_once_without_connecting(
    transport: str,
) -> None:
    async with DemoExchange() as exchange:
        client = WebSocketClient(exchange.url, transport=transport)
        await client.start()
        await client.wait_connected(timeout=5)
        await client.close()
        late, multiplexed = Recorder(), Recorder()
        client.stream(BTC).subscribe(late)
        client.multiplex(SUBSCRIBE, UNSUBSCRIBE, BTC).subscribe(multiplexed)
        assert late.completed and multiplexed.completed
        assert exchange.handshakes == 1


async def test_close_while_the_handshake_hangs_ends_cleanly(transport: str) -> None:
    async with SilentServer() as server:
        status = Recorder()
        client = WebSocketClient(server.url, open_timeout=30, transport=transport)
        client.status.subscribe(status)
        await client.start()
        await status.wait_until(lambda: Connecting in kinds(status.items))
        await asyncio.wait_for(client.close(), 2)
        assert kinds(status.items) == [Connecting, Disconnected]
        assert status.items[-1].error is None  # closed by us, not failed
        assert status.completed


async def test_close_while_backing_off_ends_at_once(transport: str) -> None:
    status = Recorder()
    client = WebSocketClient(
        f"ws://127.0.0.1:{dead_port()}/",
        backoff=Backoff(initial=30.0, jitter=0.0),
        transport=transport,
    )
    client.status.subscribe(status)
    await client.start()
    await status.wait_until(lambda: Retrying in kinds(status.items))
    await asyncio.wait_for(client.close(), 1)
    assert kinds(status.items) == [Connecting, Disconnected, Retrying]


async def test_close_wakes_a_waiting_send_with_stream_closed(transport: str) -> None:
    client = WebSocketClient(f"ws://127.0.0.1:{dead_port()}/", backoff=FAST, transport=transport)
    await client.start()
    sending = asyncio.ensure_future(client.send("hello", timeout=30))
    await asyncio.sleep(0.05)
    assert not sending.done()
    await asyncio.wait_for(client.close(), 1)
    with pytest.raises(StreamClosed):
        await asyncio.wait_for(sending, 1)


async def test_a_started_client_dropped_unclosed_warns_and_lets_go(transport: str) -> None:
    async with DemoExchange() as exchange:
        status, messages = Recorder(), Recorder()
        client = WebSocketClient(exchange.url, transport=transport)
        client.status.subscribe(status)
        client.messages.subscribe(messages)
        await client.start()
        await messages.wait_for_count(3)
        with pytest.warns(ResourceWarning, match="never closed"):
            del client
            gc.collect()
        # The abandoned feed shuts down on its own: streams end, the socket closes.
        await messages.wait_done()
        await status.wait_done()
        assert messages.completed and messages.error is None
        await exchange.wait_for(lambda: exchange.open_connections == 0)


# ---------------------------------------------------------------------------- streams


async def test_each_stream_gets_only_its_matches_over_one_connection(transport: str) -> None:
    async with DemoExchange() as exchange:
        client = WebSocketClient(exchange.url, transport=transport)
        everything, btc, eth, btc_or_sol = Recorder(), Recorder(), Recorder(), Recorder()
        client.messages.subscribe(everything)
        client.stream(BTC).subscribe(btc)
        client.stream([{"s": "ETHUSDT", "e": "trade"}]).subscribe(eth)
        client.stream([{"s": "BTCUSDT"}, {"s": "SOLUSDT"}]).subscribe(btc_or_sol)
        async with client:
            await btc.wait_for_count(5)
            await eth.wait_for_count(5)
            got = list(everything.items)
        assert len(got) >= 10
        # Delivery is synchronous: each stream is exactly the matching part of the feed.
        n = len(got)
        assert btc.items[: len([m for m in got if m["s"] == "BTCUSDT"])] == [
            m for m in got if m["s"] == "BTCUSDT"
        ]
        assert all(m["s"] == "BTCUSDT" for m in btc.items)
        assert all(m["s"] == "ETHUSDT" for m in eth.items)
        assert {m["s"] for m in btc_or_sol.items} == {"BTCUSDT", "SOLUSDT"}
        assert seqs(everything.items[:n]) == list(range(got[0]["seq"], got[0]["seq"] + n))
        assert exchange.accepted == 1
        assert client.stats.messages == len(everything.items)


async def test_stats_messages_counts_every_message_before_it_is_delivered(
    transport: str,
) -> None:
    # Read inside a subscriber, the count already includes the message being delivered,
    # and the messages no stream matches (everything gets them all, and first).
    async with DemoExchange() as exchange:
        client = WebSocketClient(exchange.url, transport=transport)
        everything, btc, counts = Recorder(), Recorder(), []

        def check(msg: Any) -> None:
            counts.append((client.stats.messages, len(everything.items)))

        client.messages.subscribe(everything)
        client.stream(BTC).subscribe(btc)
        client.stream(BTC).subscribe(check)
        async with client:
            await btc.wait_for_count(5)
            assert len(everything.items) > len(btc.items)  # other symbols came too
            assert client.stats.messages == len(everything.items)
        assert len(counts) >= 5
        assert all(counted == delivered for counted, delivered in counts)


async def test_a_raising_subscriber_is_reported_and_the_others_go_on(transport: str) -> None:
    async with DemoExchange() as exchange:
        client = WebSocketClient(exchange.url, transport=transport)
        errors, calm = Recorder(), Recorder()
        client.errors.subscribe(errors)
        client.messages.subscribe(calm)
        faulty = Recorder()

        def explode(msg: Any) -> None:
            raise RuntimeError("boom")

        client.stream(BTC).subscribe(explode, faulty.on_error)
        async with client:
            await errors.wait_for_count(1)
            before = len(calm.items)
            await calm.wait_for_count(before + 10)
        assert isinstance(errors.items[0], SubscriberError)
        assert isinstance(errors.items[0].error, RuntimeError)
        assert isinstance(faulty.error, SubscriberError)
        assert len(errors.items) == 1  # it was unsubscribed after the first failure
        assert client.stats.parse_errors == 0


async def test_parse_errors_are_counted_reported_and_skipped(transport: str) -> None:
    async with DemoExchange(malformed_every=3) as exchange:
        client = WebSocketClient(exchange.url, transport=transport)
        errors, messages = Recorder(), Recorder()
        client.errors.subscribe(errors)
        client.messages.subscribe(messages)
        async with client:
            await errors.wait_for_count(3)
            await messages.wait_for_count(12)
        parse_errors = [e for e in errors.items if isinstance(e, ParseError)]
        assert len(parse_errors) == len(errors.items) == client.stats.parse_errors >= 3
        assert all(isinstance(m, dict) for m in messages.items)
        assert seqs(messages.items) == list(
            range(messages.items[0]["seq"], messages.items[0]["seq"] + len(messages.items))
        )
        assert exchange.accepted == 1  # not fatal: the same connection went on


async def test_a_raising_status_or_errors_subscriber_does_not_hurt_the_feed(
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    def explode(_: Any) -> None:
        raise RuntimeError("observer bug")

    async with DemoExchange(malformed_every=2) as exchange:
        client = WebSocketClient(exchange.url, backoff=FAST, transport=transport)
        client.status.subscribe(explode)
        client.errors.subscribe(explode)
        messages = Recorder()
        client.messages.subscribe(messages)
        async with client:
            await messages.wait_for_count(6)
            await exchange.drop_all(1011)
            await exchange.wait_for(lambda: exchange.accepted == 2)
            count = len(messages.items)
            await messages.wait_for_count(count + 6)
        assert client.stats.parse_errors >= 3
        assert "client.errors raised" in caplog.text
        assert "client.status raised" in caplog.text


# ---------------------------------------------------------------------------- multiplex


async def test_multiplex_subscribes_once_and_unsubscribes_when_the_last_leaves(
    transport: str,
) -> None:
    async with (
        DemoExchange() as exchange,
        WebSocketClient(exchange.ws_url, transport=transport) as client,
    ):
        await client.wait_connected(timeout=5)
        stream = client.multiplex(SUBSCRIBE, UNSUBSCRIBE, BTC)
        first, second = Recorder(), Recorder()
        sub1 = stream.subscribe(first)
        await exchange.wait_for(lambda: methods_on(exchange, "SUBSCRIBE") == [1])
        sub2 = stream.subscribe(second)
        await first.wait_for_count(3)
        await second.wait_for_count(3)
        sub1.dispose()
        count = len(second.items)
        await second.wait_for_count(count + 3)  # still subscribed on the server
        assert methods_on(exchange, "SUBSCRIBE") == [1]
        assert methods_on(exchange, "UNSUBSCRIBE") == []
        sub2.dispose()
        await exchange.wait_for(lambda: methods_on(exchange, "UNSUBSCRIBE") == [1])
        assert exchange.subscriptions() == [set()]
        assert all(m["s"] == "BTCUSDT" for m in first.items + second.items)
        # A new first subscriber subscribes again.
        again = Recorder()
        sub3 = stream.subscribe(again)
        await again.wait_for_count(2)
        assert methods_on(exchange, "SUBSCRIBE") == [1, 1]
        sub3.dispose()


async def test_multiplex_is_resubscribed_after_a_drop(transport: str) -> None:
    async with DemoExchange() as exchange:
        client = WebSocketClient(exchange.ws_url, backoff=FAST, transport=transport)
        status, btc = Recorder(), Recorder()
        client.status.subscribe(status)
        # Subscribed before start: the first connection subscribes in its on_open.
        sub = client.multiplex(SUBSCRIBE, UNSUBSCRIBE, BTC).subscribe(btc)
        async with client:
            await btc.wait_for_count(3)
            assert methods_on(exchange, "SUBSCRIBE") == [1]
            await exchange.drop_all(1011)
            await exchange.wait_for(lambda: methods_on(exchange, "SUBSCRIBE") == [1, 2])
            count = len(btc.items)
            await btc.wait_for_count(count + 3)  # the new connection delivers to the stream
            assert exchange.subscriptions() == [{"btcusdt@trade"}]
            sub.dispose()
            await exchange.wait_for(lambda: methods_on(exchange, "UNSUBSCRIBE") == [2])
        assert client.stats.reconnects == 1
        assert kinds(status.items).count(Connected) == 2


async def test_multiplex_is_sent_on_every_rotated_connection(transport: str) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        client = WebSocketClient(
            exchange.ws_url, rotate_every=0.15, dedupe=seq_of, transport=transport
        )
        btc = Recorder()
        sub = client.multiplex(SUBSCRIBE, UNSUBSCRIBE, BTC).subscribe(btc)
        async with client:
            await exchange.wait_for(lambda: len(methods_on(exchange, "SUBSCRIBE")) >= 3)
            await btc.wait_until(lambda: client.stats.rotations >= 2)
            count = len(btc.items)
            await btc.wait_for_count(count + 3)
            sub.dispose()
        subscribed = methods_on(exchange, "SUBSCRIBE")
        assert subscribed == sorted(set(subscribed))  # once per connection
        assert len(subscribed) >= 3
        got = seqs(btc.items)
        assert got == sorted(set(got))  # nothing repeated across the switches


async def test_multiplex_goes_out_after_on_open_and_only_if_still_wanted(transport: str) -> None:
    gate = asyncio.Event()

    async def on_open(conn: Any) -> None:
        await conn.send(json.dumps({"method": "AUTH", "id": 0}))
        await gate.wait()
        await conn.send(json.dumps({"method": "READY", "id": 0}))

    eth_subscribe = {"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 3}
    eth_unsubscribe = {"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": 4}
    async with DemoExchange() as exchange:
        client = WebSocketClient(exchange.ws_url, on_open=on_open, transport=transport)
        async with client:
            await exchange.wait_for(lambda: methods_on(exchange, "AUTH") == [1])
            btc, eth = Recorder(), Recorder()
            btc_sub = client.multiplex(SUBSCRIBE, UNSUBSCRIBE, BTC).subscribe(btc)
            # Wanted and unwanted again while the connection is still in on_open.
            client.multiplex(eth_subscribe, eth_unsubscribe, [{"s": "ETHUSDT"}]).subscribe(
                eth
            ).dispose()
            assert client.present is None  # not connected until on_open is done
            gate.set()
            await btc.wait_for_count(2)
            btc_sub.dispose()
            await exchange.wait_for(lambda: methods_on(exchange, "UNSUBSCRIBE") == [1])
        sent = [msg for _, msg in exchange.received]
        assert sent == [
            {"method": "AUTH", "id": 0},
            {"method": "READY", "id": 0},
            SUBSCRIBE,
            UNSUBSCRIBE,
        ]
        assert eth.items == []


async def test_unsubscribe_right_before_close_still_reaches_the_server(transport: str) -> None:
    async with DemoExchange() as exchange:
        client = WebSocketClient(exchange.ws_url, transport=transport)
        btc = Recorder()
        sub = client.multiplex(SUBSCRIBE, UNSUBSCRIBE, BTC).subscribe(btc)
        await client.start()
        await btc.wait_for_count(2)
        sub.dispose()
        await client.close()
        await exchange.wait_for(lambda: methods_on(exchange, "UNSUBSCRIBE") == [1])


def test_multiplex_serialises_its_messages_up_front() -> None:
    client = WebSocketClient("ws://127.0.0.1:9/")
    with pytest.raises(TypeError):
        client.multiplex({"method": object()}, UNSUBSCRIBE)
    with pytest.raises(TypeError, match="filters"):
        client.multiplex(SUBSCRIBE, UNSUBSCRIBE, "BTCUSDT")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- send


async def test_send_before_the_connection_is_up_waits_and_arrives(transport: str) -> None:
    async with DemoExchange() as exchange:
        client = WebSocketClient(exchange.ws_url, transport=transport)
        sending = asyncio.ensure_future(client.send({"method": "LIST_SUBSCRIPTIONS", "id": 7}))
        await asyncio.sleep(0.05)
        assert not sending.done() and exchange.handshakes == 0
        replies = Recorder()
        client.stream([{"id": 7}]).subscribe(replies)
        async with client:
            await asyncio.wait_for(sending, 5)
            await replies.wait_for_count(1)
        assert methods_on(exchange, "LIST_SUBSCRIPTIONS") == [1]
        assert replies.items == [{"result": [], "id": 7}]


async def test_send_serialises_what_is_not_str_or_bytes(transport: str) -> None:
    serialized: list[Any] = []

    def serialize(obj: Any) -> str:
        serialized.append(obj)
        return json.dumps(obj, sort_keys=True)

    async with DemoExchange() as exchange:
        async with WebSocketClient(
            exchange.ws_url, serialize=serialize, transport=transport
        ) as client:
            await client.send({"method": "LIST_SUBSCRIPTIONS", "id": 1})
            await client.send('{"method": "LIST_SUBSCRIPTIONS", "id": 2}')
            await client.send(b'{"method": "LIST_SUBSCRIPTIONS", "id": 3}')
            await client.send("not json")
            await exchange.wait_for(lambda: len(exchange.received) == 4)
        assert serialized == [{"method": "LIST_SUBSCRIPTIONS", "id": 1}]
        assert [msg for _, msg in exchange.received] == [
            {"method": "LIST_SUBSCRIPTIONS", "id": 1},
            {"method": "LIST_SUBSCRIPTIONS", "id": 2},
            {"method": "LIST_SUBSCRIPTIONS", "id": 3},
            "not json",
        ]


async def test_send_without_a_server_raises_not_connected_after_the_timeout(transport: str) -> None:
    client = WebSocketClient(
        f"ws://127.0.0.1:{dead_port()}/", backoff=FAST, send_timeout=0.2, transport=transport
    )
    loop = asyncio.get_running_loop()
    async with client:
        started = loop.time()
        with pytest.raises(NotConnected, match=r"0\.2 s"):
            await client.send("hello")
        assert loop.time() - started >= 0.19
        with pytest.raises(NotConnected):
            await client.send("hello", timeout=0.05)
        with pytest.raises(NotConnected):
            await client.wait_connected(timeout=0.05)
        for bad, error in ((-1, ValueError), (float("nan"), ValueError), ("1", TypeError)):
            with pytest.raises(error, match="timeout"):
                await client.send("hello", timeout=bad)  # type: ignore[arg-type]


async def test_send_after_the_feed_gave_up_fails_at_once(transport: str) -> None:
    async with DemoExchange() as exchange:
        exchange.refuse(401)
        status = Recorder()
        async with WebSocketClient(exchange.url, transport=transport) as client:
            client.status.subscribe(status)
            await status.wait_until(lambda: Failed in kinds(status.items))
            with pytest.raises(NotConnected) as caught:
                await asyncio.wait_for(client.send("hello", timeout=30), 1)
            assert isinstance(caught.value.__cause__, HandshakeRejected)


# ---------------------------------------------------------------------------- status


async def test_status_follows_a_drop_and_the_reconnect(transport: str) -> None:
    async with DemoExchange() as exchange:
        client = WebSocketClient(exchange.url, backoff=FAST, transport=transport)
        status, messages = Recorder(), Recorder()
        client.status.subscribe(status)
        client.messages.subscribe(messages)
        async with client:
            await messages.wait_for_count(3)
            first = client.present
            await exchange.drop_all(1011)
            await status.wait_until(lambda: kinds(status.items).count(Connected) == 2)
            assert client.present is not None and client.present is not first
            count = len(messages.items)
            await messages.wait_for_count(count + 3)
        events = status.items
        assert kinds(events)[:6] == [
            Connecting,
            Connected,
            Disconnected,
            Retrying,
            Connecting,
            Connected,
        ]
        dropped = events[2]
        assert isinstance(dropped.error, ConnectionLost) and dropped.error.code == 1011
        assert events[3] == Retrying(1, FAST.delay(1))
        assert client.stats.reconnects == 1
        assert client.stats.connections == 2


async def test_failed_after_max_attempts_on_a_dead_port(transport: str) -> None:
    status, stream = Recorder(), Recorder()
    client = WebSocketClient(
        f"ws://127.0.0.1:{dead_port()}/", backoff=FAST, max_attempts=3, transport=transport
    )
    client.status.subscribe(status)
    client.messages.subscribe(stream)
    await client.start()
    await status.wait_until(lambda: Failed in kinds(status.items))
    assert kinds(status.items) == [
        Connecting,
        Disconnected,
        Retrying,
        Connecting,
        Disconnected,
        Retrying,
        Connecting,
        Disconnected,
        Failed,
    ]
    failure = status.items[-1].error
    assert isinstance(failure, ReconnectExhausted) and failure.attempts == 3
    assert client.stats.reconnects == 2
    assert stream.error is failure  # streams end with the error
    assert "failed" in repr(client)
    late = Recorder()
    client.stream(BTC).subscribe(late)  # a gave-up feed is not restarted
    assert late.error is failure
    await client.close()
    assert status.completed


async def test_a_401_is_not_retried(transport: str) -> None:
    async with DemoExchange() as exchange:
        exchange.refuse(401)
        status = Recorder()
        client = WebSocketClient(exchange.url, backoff=FAST, transport=transport)
        client.status.subscribe(status)
        async with client:
            await status.wait_until(lambda: Failed in kinds(status.items))
        assert kinds(status.items) == [Connecting, Disconnected, Failed]
        failure = status.items[-1].error
        assert isinstance(failure, HandshakeRejected) and failure.status == 401
        assert exchange.handshakes == 1
        assert client.stats.reconnects == 0


# ---------------------------------------------------------------------------- rotation, idle


async def test_rotation_with_dedupe_keeps_the_sequence_whole(transport: str) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        client = WebSocketClient(exchange.url, rotate_every=0.1, dedupe=seq_of, transport=transport)
        status, messages = Recorder(), Recorder()
        client.status.subscribe(status)
        client.messages.subscribe(messages)
        async with client:
            await messages.wait_for_count(3)
            first = client.present
            await status.wait_until(lambda: client.stats.rotations >= 3)
            count = len(messages.items)
            await messages.wait_for_count(count + 5)
            present = client.present
            assert present is not None and present is not first
        got = seqs(messages.items)
        assert got == list(range(got[0], got[0] + len(got)))
        assert exchange.accepted >= 4
        assert kinds(status.items).count(Rotated) == client.stats.rotations >= 3
        assert client.stats.reconnects == 0


async def test_idle_timeout_replaces_a_stalled_connection(transport: str) -> None:
    async with DemoExchange() as exchange:
        client = WebSocketClient(exchange.url, idle_timeout=0.2, backoff=FAST, transport=transport)
        status, messages = Recorder(), Recorder()
        client.status.subscribe(status)
        client.messages.subscribe(messages)
        async with client:
            await messages.wait_for_count(3)
            exchange.stall()
            await status.wait_until(lambda: Retrying in kinds(status.items))
            exchange.stall(False)
            count = len(messages.items)
            await messages.wait_for_count(count + 5)
        events = status.items
        assert kinds(events)[:5] == [Connecting, Connected, Disconnected, Retrying, Connecting]
        assert isinstance(events[2].error, IdleTimeout)
        # The idle connection is reported once, not again when its socket closes.
        assert kinds(events[:4]).count(Disconnected) == 1
        assert exchange.accepted >= 2


# ---------------------------------------------------------------------------- secrets


async def test_no_secret_reaches_logs_reprs_events_or_errors(
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with DemoExchange(malformed_every=4) as exchange:
        url = f"{exchange.url}?listenKey={SECRET_KEY}&signature={SECRET_KEY}x"
        client = WebSocketClient(
            url,
            additional_headers={"X-MBX-APIKEY": SECRET_HEADER},
            backoff=FAST,
            transport=transport,
        )
        status, errors, messages = Recorder(), Recorder(), Recorder()
        client.status.subscribe(status)
        client.errors.subscribe(errors)
        client.messages.subscribe(messages)
        async with client:
            await messages.wait_for_count(5)
            await exchange.drop_all(1011, f"bye {SECRET_KEY}")
            await status.wait_until(lambda: kinds(status.items).count(Connected) == 2)
            texts = [repr(client)]
            exchange.refuse(401)
            await exchange.drop_all(1011)
            await status.wait_until(lambda: Failed in kinds(status.items))
            with pytest.raises(NotConnected) as caught:
                await client.send("x", timeout=0.01)
        assert exchange.request_paths[0].endswith(SECRET_KEY + "x")  # it was really sent
        # What the client logged (the test server logs its own side of the wire).
        formatter = logging.Formatter("%(name)s %(message)s")
        logged = "\n".join(
            formatter.format(r) for r in caplog.records if not r.name.startswith("rxws.testing")
        )
        assert "bye ***" in logged  # the close reason reached the client's logs, redacted
        texts += [
            logged,
            repr(client),
            repr(status.items),
            repr(errors.items),
            " ".join(str(e) for e in errors.items),
            " ".join(str(getattr(e, "error", "")) for e in status.items),
            str(caught.value),
            str(caught.value.__cause__),
        ]
        assert "listenKey=***" in logged
        if transport == "websockets":  # picows does not log request headers at DEBUG
            assert "X-MBX-APIKEY" in logged  # the header line was logged, redacted
        assert any(isinstance(e, ParseError) for e in errors.items)
        for text in texts:
            assert SECRET_KEY not in text
            assert SECRET_HEADER not in text


# ---------------------------------------------------------------------------- top level


def test_the_client_is_exported_from_the_top_level() -> None:
    assert rxws.WebSocketClient is WebSocketClient
    assert isinstance(WebSocketClient("ws://127.0.0.1:9/").stats, rxws.ClientStats)


async def test_aclose_is_close_and_both_are_idempotent(transport: str) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        client = rxws.WebSocketClient(exchange.url, transport=transport)
        await client.start()
        await client.wait_connected()
        closing = asyncio.ensure_future(client.aclose())
        await asyncio.sleep(0)  # the first call is under way
        await client.close()  # waits for it to finish
        assert closing.done() and client.closed
        await client.aclose()
        await exchange.wait_for(lambda: exchange.open_connections == 0)


def test_help_shows_the_clients_public_attributes() -> None:
    text = pydoc.render_doc(WebSocketClient, renderer=pydoc.plaintext)
    for name in ("messages", "stats", "status", "errors", "present"):
        assert f"|  {name}\n" in text, name
        doc = getattr(WebSocketClient, name).__doc__
        assert doc and doc.strip(), name
