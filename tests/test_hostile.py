"""Hostile and broken input: each gives a clear error, the feed goes on where it can.

Every test here runs on each transport against a real loopback server; the suite's
conftest checks that no task and no socket is left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

import rxws
from rxws.events import Connected, Disconnected, Event, Retrying
from rxws.testing import DemoExchange, Recorder, SilentServer

FAST = rxws.Backoff(initial=0.01, maximum=0.05)


class Feed:
    """A WebSocketClient with everything it reports recorded."""

    def __init__(self, url: str, transport: str, **options: Any) -> None:
        options.setdefault("backoff", FAST)
        self.client = rxws.WebSocketClient(url, transport=transport, **options)
        self.events: list[Event] = []
        self.errors: list[Exception] = []
        self.rec = Recorder()
        self.client.status.subscribe(self.on_event)
        self.client.errors.subscribe(self.on_error)
        self.client.messages.subscribe(self.rec)

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        self.rec.notify()

    def on_error(self, error: Exception) -> None:
        self.errors.append(error)
        self.rec.notify()

    def seqs(self) -> list[int]:
        return [m["seq"] for m in self.rec.items if isinstance(m, dict) and "seq" in m]

    def lost(self) -> list[Exception]:
        return [e.error for e in self.events if isinstance(e, Disconnected) and e.error]

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        await self.rec.wait_until(predicate, timeout)

    async def more(self, count: int = 3) -> None:
        """Wait for ``count`` more trades than delivered so far."""
        target = len(self.seqs()) + count
        await self.until(lambda: len(self.seqs()) >= target)


# ---------------------------------------------------------------------- size limits


async def test_frame_over_max_size_closes_with_1009_then_reconnects(transport: str) -> None:
    async with DemoExchange() as exchange:
        feed = Feed(exchange.url, transport, max_size=1000)
        async with feed.client:
            await feed.more()
            exchange.send_raw("x" * 1001)
            await feed.until(lambda: bool(feed.lost()))
            await feed.until(lambda: exchange.accepted == 2)
            await feed.more()
        [lost] = feed.lost()
        assert type(lost) is rxws.ConnectionLost
        assert lost.code == 1009
        assert "1009" in str(lost)
        assert feed.rec.error is None
        assert feed.errors == []  # the big frame was not handed over (to fail parsing)
        assert feed.client.stats.reconnects == 1


async def test_frame_of_exactly_max_size_is_delivered(transport: str) -> None:
    async with DemoExchange(interval=0.05) as exchange:
        rec = Recorder()
        source = rxws.connect(exchange.url, parse=None, max_size=1000, transport=transport)
        sub = source.subscribe(rec)
        await rec.wait_for_count(1)
        exchange.send_raw("y" * 1000)
        await rec.wait_until(lambda: "y" * 1000 in rec.items)
        sub.dispose()
        assert rec.error is None


async def test_default_max_size_is_one_mebibyte(transport: str) -> None:
    async with DemoExchange(interval=0.05) as exchange:
        rec = Recorder()
        rxws.connect(exchange.url, parse=None, transport=transport).subscribe(rec)
        await rec.wait_for_count(1)
        exchange.send_raw("z" * 2**20)  # exactly the limit: delivered
        await rec.wait_until(lambda: any(len(m) == 2**20 for m in rec.items))
        exchange.send_raw("z" * (2**20 + 1))
        await rec.wait_done()
        assert isinstance(rec.error, rxws.ConnectionLost)
        assert rec.error.code == 1009
        assert max(len(m) for m in rec.items) == 2**20


# ---------------------------------------------------------------------- bad frames


async def test_invalid_utf8_closes_with_1007_then_reconnects(transport: str) -> None:
    async with DemoExchange() as exchange:
        feed = Feed(exchange.url, transport)
        async with feed.client:
            await feed.more()
            exchange.send_raw_invalid_text()
            await feed.until(lambda: bool(feed.lost()))
            await feed.until(lambda: exchange.accepted == 2)
            await feed.more()
        [lost] = feed.lost()
        assert type(lost) is rxws.ConnectionLost
        assert lost.code == 1007
        assert feed.rec.error is None


# Not UTF-8: a bad sequence; JSON around a bad byte; an encoded surrogate (orjson,
# which parses the fast path's frames as bytes, must not take either for a parse error).
@pytest.mark.parametrize("payload", [b"\xc3\x28", b'{"s": "\xff"}', b'"\xed\xa0\x80"'], ids=repr)
async def test_invalid_utf8_ends_a_bare_connection_with_1007(
    transport: str, payload: bytes
) -> None:
    async with DemoExchange() as exchange:
        rec = Recorder()
        rxws.connect(exchange.url, transport=transport).subscribe(rec)
        await rec.wait_for_count(2)
        exchange.send_raw_invalid_text(payload)
        await rec.wait_done()
        assert isinstance(rec.error, rxws.ConnectionLost)
        assert rec.error.code == 1007


@pytest.mark.parametrize(
    "frame",
    # Text with characters of several bytes is measured in characters; a byte order
    # mark is valid UTF-8 but not JSON.
    ['{"e": "trade", broken', b"\x00\xff binary junk", "", "[1, 2", '{"s": "é€", x', "\ufeff{}"],
    ids=repr,
)
async def test_unparsable_frames_are_reported_and_skipped(
    transport: str, frame: str | bytes
) -> None:
    async with DemoExchange() as exchange:
        feed = Feed(exchange.url, transport)
        async with feed.client:
            await feed.more()
            exchange.send_raw(frame)
            await feed.until(lambda: bool(feed.errors))
            await feed.more()
        [error] = feed.errors
        assert isinstance(error, rxws.ParseError)
        assert error.size == len(frame)
        assert "failed to parse" in str(error)
        assert feed.client.stats.parse_errors == 1
        assert exchange.accepted == 1  # the connection survived
        seqs = feed.seqs()
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing else lost


async def test_a_subscriber_raising_unicode_decode_error_gets_it_back(transport: str) -> None:
    # What a subscriber raises ends the connection with that error, even an error that
    # the transport itself would take for invalid UTF-8.
    async with DemoExchange() as exchange:
        rec = Recorder()
        failure = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "the subscriber's own")

        def on_next(msg: Any) -> None:
            rec.on_next(msg)
            raise failure

        rxws.connect(exchange.url, transport=transport).subscribe(on_next, rec.on_error)
        await rec.wait_done()
        assert rec.error is failure
        assert len(rec.items) == 1


async def test_a_raising_parser_is_reported_and_the_feed_goes_on(transport: str) -> None:
    def parse(frame: str | bytes) -> Any:
        msg = json.loads(frame)
        if msg.get("seq", 0) % 5 == 0:
            raise KeyError("no price in this one")
        return msg

    async with DemoExchange() as exchange:
        feed = Feed(exchange.url, transport, parse=parse)
        async with feed.client:
            await feed.until(lambda: len(feed.seqs()) >= 12)
        assert feed.errors and all(isinstance(e, rxws.ParseError) for e in feed.errors)
        first = feed.errors[0]
        assert isinstance(first.error, KeyError) and first.__cause__ is first.error
        assert "KeyError" in str(first) and "no price in this one" in str(first)
        seqs = feed.seqs()
        assert seqs[:8] == [1, 2, 3, 4, 6, 7, 8, 9]
        assert exchange.accepted == 1
        assert feed.client.stats.parse_errors == len(feed.errors)


# ---------------------------------------------------------------------- broken servers


async def test_silent_server_times_out_the_handshake(transport: str) -> None:
    async with SilentServer() as server:
        rec = Recorder()
        loop = asyncio.get_running_loop()
        started = loop.time()
        rxws.connect(server.url, open_timeout=0.2, transport=transport).subscribe(rec)
        await rec.wait_done()
        took = loop.time() - started
        assert type(rec.error) is rxws.ConnectionFailed
        assert "timed out" in str(rec.error)
        assert "0.2 s" in str(rec.error)
        assert rxws.is_retryable(rec.error)
        assert 0.15 < took < 2.0
        assert server.accepted == 1
        # The client closed its end at once (the server is still up and silent).
        for _ in range(100):
            if server.open_connections == 0:
                break
            await asyncio.sleep(0.01)
        assert server.open_connections == 0


async def test_client_keeps_retrying_a_silent_server(transport: str) -> None:
    async with SilentServer() as server:
        feed = Feed(server.url, transport, open_timeout=0.1)
        async with feed.client:
            await feed.until(lambda: server.accepted >= 3)
        failures = feed.lost()
        assert len(failures) >= 2
        assert all("timed out" in str(e) for e in failures)
        assert feed.rec.error is None


async def test_accept_then_close_at_once_still_backs_off(transport: str) -> None:
    backoff = rxws.Backoff(initial=0.1, maximum=0.4, jitter=0.0)
    async with DemoExchange(drop_after=0) as exchange:
        feed = Feed(exchange.url, transport, backoff=backoff)
        async with feed.client:
            await asyncio.sleep(1.5)
        # Delays 0.1, 0.2, 0.4, 0.4, ...: about 5 attempts in 1.5 s. A hot loop would
        # make hundreds.
        assert 3 <= exchange.handshakes <= 8, exchange.handshakes
        delays = [e.delay for e in feed.events if isinstance(e, Retrying)]
        assert delays[:3] == [0.1, 0.2, 0.4]
        assert all(isinstance(e, rxws.ConnectionLost) and e.code == 1011 for e in feed.lost())


async def test_accept_then_clean_close_is_not_a_hot_loop_either(transport: str) -> None:
    backoff = rxws.Backoff(initial=0.1, maximum=0.4, jitter=0.0)
    async with DemoExchange(drop_after=0, drop_code=1000) as exchange:
        feed = Feed(exchange.url, transport, backoff=backoff)
        async with feed.client:
            await asyncio.sleep(1.0)
        assert 2 <= exchange.handshakes <= 6, exchange.handshakes
        assert [e.attempt for e in feed.events if isinstance(e, Retrying)][:3] == [1, 2, 3]


async def test_on_open_raising_is_a_failed_connection_with_backoff(transport: str) -> None:
    calls = 0

    async def on_open(connection: Any) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError(f"authentication failed ({calls})")

    async with DemoExchange() as exchange:
        feed = Feed(exchange.url, transport, on_open=on_open)
        async with feed.client:
            await feed.more()
        failures = feed.lost()
        assert len(failures) == 2
        for n, failure in enumerate(failures, 1):
            assert type(failure) is rxws.ConnectionFailed
            assert f"on_open raised RuntimeError: authentication failed ({n})" in str(failure)
            assert isinstance(failure.__cause__, RuntimeError)
        assert [e.attempt for e in feed.events if isinstance(e, Retrying)] == [1, 2]
        assert sum(isinstance(e, Connected) for e in feed.events) == 1
        assert feed.rec.error is None


async def test_on_open_always_raising_is_paced_by_the_backoff(transport: str) -> None:
    async def on_open(connection: Any) -> None:
        raise PermissionError("bad key")

    backoff = rxws.Backoff(initial=0.1, maximum=0.2, jitter=0.0)
    async with DemoExchange() as exchange:
        feed = Feed(exchange.url, transport, on_open=on_open, backoff=backoff)
        async with feed.client:
            await asyncio.sleep(1.0)
        assert 3 <= exchange.accepted <= 7, exchange.accepted
        assert feed.rec.items == [] and feed.rec.error is None


async def test_a_raising_subscriber_is_cut_off_and_the_others_go_on(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with DemoExchange() as exchange:
        feed = Feed(exchange.url, transport)
        bad = Recorder()

        def explode(msg: Any) -> None:
            raise ValueError(f"cannot handle seq {msg['seq']}")

        async with feed.client:
            feed.client.stream([{"s": "ETHUSDT"}]).subscribe(explode, bad.on_error)
            await bad.wait_done()
            await feed.more(8)
        assert isinstance(bad.error, rxws.SubscriberError)
        assert isinstance(bad.error.error, ValueError)
        assert "cannot handle seq" in str(bad.error)
        [reported] = feed.errors
        assert reported is bad.error
        assert exchange.accepted == 1
        seqs = feed.seqs()
        assert seqs == list(range(1, len(seqs) + 1))
        assert any("subscriber raised ValueError" in r.getMessage() for r in caplog.records)


async def test_a_subscriber_without_on_error_does_not_break_the_feed(transport: str) -> None:
    async with DemoExchange() as exchange:
        feed = Feed(exchange.url, transport)
        async with feed.client:
            feed.client.messages.subscribe(lambda msg: 1 / 0)
            await feed.more(5)
            await feed.until(lambda: bool(feed.errors))
        assert isinstance(feed.errors[0], rxws.SubscriberError)
        assert isinstance(feed.errors[0].error, ZeroDivisionError)
        assert exchange.accepted == 1


async def test_hostile_server_burst_leaves_the_client_healthy(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every kind of bad input in a row; the feed ends up delivering, with no ERROR log."""
    caplog.set_level(logging.WARNING)
    async with DemoExchange() as exchange:
        feed = Feed(exchange.url, transport, max_size=4096)
        async with feed.client:
            await feed.more()
            exchange.send_raw('{"broken')
            exchange.send_raw(b"\x01\x02")
            await feed.more()
            exchange.send_raw("x" * 5000)
            await feed.until(lambda: exchange.accepted == 2)
            await feed.more()
            exchange.send_raw_invalid_text()
            await feed.until(lambda: exchange.accepted == 3)
            await feed.more()
        assert [getattr(e, "code", None) for e in feed.lost()] == [1009, 1007]
        assert len(feed.errors) == 2
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
