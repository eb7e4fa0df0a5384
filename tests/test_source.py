"""rxws.connect against real loopback servers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from reactivex import operators as op
from support import dead_port, first_of_a_burst
from websockets.asyncio.client import connect as ws_connect

import rxws
from rxws.events import Connected, Connecting, Disconnected, Event
from rxws.testing import DemoExchange, FaultProxy, Recorder

SECRET_KEY = "listenKeySECRET123456"
SECRET_HEADER = "apikeyHEADERSECRET987"


async def test_each_subscription_opens_its_own_connection(transport: str) -> None:
    async with DemoExchange() as exchange:
        source = rxws.connect(exchange.url, transport=transport)
        first, second = Recorder(), Recorder()
        subs = [source.subscribe(first), source.subscribe(second)]
        await first.wait_for_count(3)
        await second.wait_for_count(3)
        assert exchange.accepted == 2
        assert exchange.open_connections == 2
        for sub in subs:
            sub.dispose()
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_dispose_closes_the_socket(transport: str) -> None:
    async with DemoExchange() as exchange:
        rec = Recorder()
        sub = rxws.connect(exchange.url, transport=transport).subscribe(rec)
        await rec.wait_for_count(2)
        assert exchange.open_connections == 1
        sub.dispose()
        await exchange.wait_for(lambda: exchange.open_connections == 0)
        count = len(rec.items)
        await asyncio.sleep(0.05)
        assert len(rec.items) == count, "items arrived after dispose"
        assert not rec.done


async def test_nothing_arrives_after_a_dispose_from_inside_on_next(transport: str) -> None:
    async with DemoExchange(interval=60.0) as exchange:
        source = rxws.connect(exchange.url, transport=transport)
        assert await first_of_a_burst(source, exchange) == [{"seq": 0}]


async def test_a_subscriber_that_raises_ends_the_connection_with_its_error(
    transport: str,
) -> None:
    async with DemoExchange() as exchange:
        rec = Recorder()

        def explode(msg: Any) -> None:
            rec.items.append(msg)
            raise ValueError("subscriber bug")

        rxws.connect(exchange.url, transport=transport).subscribe(explode, rec.on_error)
        await rec.wait_done()
        assert isinstance(rec.error, ValueError) and str(rec.error) == "subscriber bug"
        assert len(rec.items) == 1
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_dispose_while_connecting_leaves_nothing_behind(transport: str) -> None:
    async with DemoExchange() as exchange:
        sub = rxws.connect(exchange.url, transport=transport).subscribe(Recorder())
        sub.dispose()
        await asyncio.sleep(0)
        await exchange.wait_for(lambda: exchange.open_connections == 0)


@pytest.mark.parametrize("code", [1000, 1001])
async def test_normal_close_completes(code: int, transport: str) -> None:
    async with DemoExchange() as exchange:
        rec = Recorder()
        rxws.connect(exchange.url, transport=transport).subscribe(rec)
        await rec.wait_for_count(2)
        await exchange.drop_all(code)
        await rec.wait_done()
        assert rec.completed and rec.error is None


async def test_abnormal_close_errors_with_connection_lost(transport: str) -> None:
    async with DemoExchange() as exchange:
        rec = Recorder()
        rxws.connect(exchange.url, transport=transport).subscribe(rec)
        await rec.wait_for_count(2)
        await exchange.drop_all(1011, "internal error")
        await rec.wait_done()
        assert isinstance(rec.error, rxws.ConnectionLost)
        assert rec.error.code == 1011
        assert "1011" in str(rec.error)


async def test_broken_tcp_link_errors_with_connection_lost(transport: str) -> None:
    async with DemoExchange() as exchange:
        rec = Recorder()
        rxws.connect(exchange.url, transport=transport).subscribe(rec)
        await rec.wait_for_count(2)
        exchange.abort_all()
        await rec.wait_done()
        assert isinstance(rec.error, rxws.ConnectionLost)
        assert rec.error.code is None


@pytest.mark.parametrize("status", [401, 503])
async def test_refused_handshake_errors_with_its_status(status: int, transport: str) -> None:
    async with DemoExchange() as exchange:
        exchange.refuse(status)
        rec = Recorder()
        rxws.connect(exchange.url, transport=transport).subscribe(rec)
        await rec.wait_done()
        assert isinstance(rec.error, rxws.HandshakeRejected)
        assert rec.error.status == status
        assert str(status) in str(rec.error)
        assert rec.items == []


async def test_unreachable_port_errors_with_connection_failed(transport: str) -> None:
    rec = Recorder()
    rxws.connect(f"ws://127.0.0.1:{dead_port()}/", transport=transport).subscribe(rec)
    await rec.wait_done()
    assert type(rec.error) is rxws.ConnectionFailed
    assert "could not connect" in str(rec.error)


async def test_malformed_frame_is_skipped_and_the_stream_goes_on(transport: str) -> None:
    async with DemoExchange(malformed_every=3) as exchange:
        errors: list[Exception] = []
        rec = Recorder()
        sub = rxws.connect(exchange.url, on_error=errors.append, transport=transport).subscribe(rec)
        await rec.wait_for_count(10)
        sub.dispose()
        seqs = [m["seq"] for m in rec.items]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert errors and all(isinstance(e, rxws.ParseError) for e in errors)
        assert len(errors) >= 2
        assert rec.error is None


async def test_parse_none_passes_raw_frames(transport: str) -> None:
    async with DemoExchange() as exchange:
        rec = Recorder()
        sub = rxws.connect(exchange.url, parse=None, transport=transport).subscribe(rec)
        await rec.wait_for_count(2)
        sub.dispose()
        assert all(isinstance(m, str) and m.startswith("{") for m in rec.items)


async def test_on_open_runs_before_the_first_message(transport: str) -> None:
    async with DemoExchange() as exchange:
        order: list[str] = []
        rec = Recorder()

        async def on_open(conn: object) -> None:
            order.append("open")
            await conn.send('{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}')  # type: ignore[attr-defined]

        def on_next(msg: object) -> None:
            order.append("msg")
            rec.on_next(msg)

        sub = rxws.connect(exchange.ws_url, on_open=on_open, transport=transport).subscribe(on_next)
        await rec.wait_for_count(3)
        sub.dispose()
        assert order[0] == "open"
        assert rec.items[0] == {"result": None, "id": 1}
        assert all(m["s"] == "BTCUSDT" for m in rec.items[1:])


async def test_on_open_failure_is_a_failed_connection(transport: str) -> None:
    async with DemoExchange() as exchange:

        async def on_open(conn: object) -> None:
            raise RuntimeError("login refused")

        rec = Recorder()
        rxws.connect(exchange.url, on_open=on_open, transport=transport).subscribe(rec)
        await rec.wait_done()
        assert isinstance(rec.error, rxws.ConnectionFailed)
        assert "login refused" in str(rec.error)
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_url_callable_is_called_at_each_connect(transport: str) -> None:
    async with DemoExchange() as exchange:
        calls = 0

        async def fresh_url() -> str:
            nonlocal calls
            calls += 1
            return f"{exchange.url}?listenKey=key{calls}"

        source = rxws.connect(fresh_url, transport=transport)
        for _ in range(2):
            rec = Recorder()
            sub = source.subscribe(rec)
            await rec.wait_for_count(1)
            sub.dispose()
        assert calls == 2
        assert exchange.request_paths == ["/stream?listenKey=key1", "/stream?listenKey=key2"]
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_url_callable_may_return_an_open_connection(transport: str) -> None:
    async with DemoExchange() as exchange:

        async def open_it() -> object:
            return await ws_connect(exchange.url)

        rec = Recorder()
        sub = rxws.connect(open_it, transport=transport).pipe(op.take(3)).subscribe(rec)
        await rec.wait_done()
        sub.dispose()
        assert rec.completed and len(rec.items) == 3
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_url_callable_returning_nonsense_errors_clearly(transport: str) -> None:
    async def bad() -> object:
        return 42

    rec = Recorder()
    rxws.connect(bad, transport=transport).subscribe(rec)
    await rec.wait_done()
    assert isinstance(rec.error, ValueError)
    assert "returned int" in str(rec.error)


@pytest.mark.parametrize("url", ["http://x", "example.com", 42, "ws://", "ws:///path", None])
def test_bad_url_is_a_value_error_naming_it(url: object) -> None:
    with pytest.raises(ValueError, match="url must be") as info:
        rxws.connect(url)  # type: ignore[arg-type]
    assert repr(url) in str(info.value) or str(url) in str(info.value)


def test_bad_url_message_is_redacted() -> None:
    with pytest.raises(ValueError) as info:
        rxws.connect("http://example.com/?token=" + SECRET_KEY)
    assert SECRET_KEY not in str(info.value)


def test_subscribing_outside_a_loop_says_what_to_do() -> None:
    rec = Recorder()
    rxws.connect("ws://127.0.0.1:1/").subscribe(rec)
    assert isinstance(rec.error, rxws.NoRunningLoop) and isinstance(rec.error, RuntimeError)
    assert "none is running" in str(rec.error) and "asyncio.run" in str(rec.error)


def test_unknown_transport_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        rxws.connect("ws://127.0.0.1:1/", transport="carrier-pigeon")


async def test_events_follow_the_connection(transport: str) -> None:
    async with DemoExchange() as exchange:
        events: list[Event] = []
        rec = Recorder()
        rxws.connect(exchange.url, on_event=events.append, transport=transport).subscribe(rec)
        await rec.wait_for_count(1)
        await exchange.drop_all(1011)
        await rec.wait_done()
        assert [type(e) for e in events] == [Connecting, Connected, Disconnected]
        assert events[0].url == exchange.url
        last = events[-1]
        assert isinstance(last, Disconnected) and isinstance(last.error, rxws.ConnectionLost)


async def test_no_secret_reaches_logs_reprs_errors_or_events(
    caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with DemoExchange() as exchange:
        url = f"{exchange.url}?listenKey={SECRET_KEY}&signature={SECRET_KEY}x"
        headers = {"X-MBX-APIKEY": SECRET_HEADER}
        events: list[Event] = []
        rec = Recorder()
        source = rxws.connect(
            url, additional_headers=headers, on_event=events.append, transport=transport
        )
        sub = source.subscribe(rec)
        await rec.wait_for_count(3)
        await exchange.drop_all(1011)
        await rec.wait_done()
        sub.dispose()
        exchange.refuse(401)
        refused = Recorder()
        source.subscribe(refused)
        await refused.wait_done()
        texts = [caplog.text, repr(events), str(rec.error), str(refused.error), repr(source)]
        assert "X-MBX-APIKEY" in caplog.text  # the header line was logged, redacted
        assert "listenKey=***" in caplog.text
        for text in texts:
            assert SECRET_KEY not in text
            assert SECRET_HEADER not in text


async def test_disposing_a_dead_link_does_not_wait_for_the_close_timeout(transport: str) -> None:
    async with DemoExchange() as exchange, FaultProxy("127.0.0.1", exchange.port) as proxy:
        rec = Recorder()
        sub = rxws.connect(
            proxy.url("/stream"), on_event=rec.on_event, close_timeout=30, transport=transport
        ).subscribe(rec)
        await rec.wait_for_count(3)
        proxy.blackhole()
        loop = asyncio.get_running_loop()
        started = loop.time()
        sub.dispose()
        await rec.wait_until(lambda: isinstance(rec.events[-1], Disconnected), timeout=10)
        # Far below close_timeout=30: the peer is dead, so the link is dropped quickly.
        assert loop.time() - started < 5
        proxy.blackhole(False)


async def test_url_callable_raising_is_a_retryable_connection_failure(transport: str) -> None:
    async def broken() -> str:
        raise OSError("listen key service down")

    rec = Recorder()
    rxws.connect(broken, transport=transport).subscribe(rec)
    await rec.wait_done()
    assert isinstance(rec.error, rxws.ConnectionFailed)
    assert "listen key service down" in str(rec.error)
    assert rxws.is_retryable(rec.error)


@pytest.mark.parametrize(
    ("how", "closed_by"),
    [("dispose", "client"), ("close", "server"), ("abort", "network")],
)
async def test_disconnected_says_who_closed(how: str, closed_by: str, transport: str) -> None:
    async with DemoExchange(interval=0.002) as exchange:
        events: list[Event] = []
        got = Recorder()
        subscription = rxws.connect(
            exchange.url, on_event=events.append, transport=transport
        ).subscribe(got)
        await got.wait_until(lambda: len(got.items) >= 3)
        if how == "dispose":
            subscription.dispose()
        elif how == "close":
            await exchange.drop_all(1011)
        else:
            exchange.abort_all()
        for _ in range(200):
            if any(isinstance(e, Disconnected) for e in events):
                break
            await asyncio.sleep(0.02)
        subscription.dispose()
        [ended] = [e for e in events if isinstance(e, Disconnected)]
        assert ended.closed_by == closed_by
        await exchange.wait_for(lambda: exchange.open_connections == 0)
