"""The collector (rxws._relay): a websocket feed published to NATS, on real servers only.

Every test runs a real nats-server (NatsServer) and a real websocket exchange
(DemoExchange); one relay runs in a subprocess so that it can be killed for real.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from nats.aio.client import Client
from nats_support import connect, stored
from support import dead_port, seconds, until

from rxws import ConnectionFailed, Limits, nats
from rxws._relay import (
    NatsUnreachable,
    Relay,
    listen_nats,
    parse_combined,
    relay,
    shown_nats_url,
    stream_subjects,
)
from rxws.backoff import Backoff
from rxws.testing import DemoExchange, FaultProxy, NatsServer, Recorder

pytestmark = pytest.mark.timeout(60)

FAST = Backoff(initial=0.05, maximum=0.2, jitter=0.0)
QUICK_NATS = {"reconnect_time_wait": 0.05}

# A relay in its own process, so that it can be killed: argv is the websocket URL and
# the NATS URL; it runs until SIGINT or SIGTERM.
RELAY_PROCESS = """
import asyncio, sys
from rxws._relay import relay
from rxws.backoff import Backoff

sys.exit(asyncio.run(relay(
    sys.argv[1], nats_url=sys.argv[2], subject="md.{s}", msg_id="{seq}", stream="MD",
    duplicate_window=60, backoff=Backoff(initial=0.05, maximum=0.2),
    nats_options={"reconnect_time_wait": 0.05},
)))
"""


class Lines:
    """What a relay said: its status lines (``None`` last) and its news."""

    def __init__(self) -> None:
        self.status: list[str | None] = []
        self.news: list[str] = []

    def with_(self, word: str) -> list[str]:
        return [line for line in self.news if word in line]


def make_relay(url: str, nats_url: str, lines: Lines, **options: Any) -> Relay:
    options.setdefault("subject", "md.{s}")
    options.setdefault("backoff", FAST)
    options.setdefault("nats_options", QUICK_NATS)
    options.setdefault("handle_signals", False)
    return Relay(
        url,
        nats_url=nats_url,
        stop=asyncio.Event(),
        status=lines.status.append,
        news=lines.news.append,
        **options,
    )


@asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[asyncio.Task[int]]:
    """Run ``relay`` as a task; stop it on the way out (if the test did not)."""
    task = asyncio.create_task(relay.run())
    try:
        await until(lambda: relay.publisher is not None or task.done(), what="NATS connected")
        yield task
    finally:
        assert relay._stop is not None
        relay._stop.set()
        await asyncio.gather(task, return_exceptions=True)


def acked(relay: Relay) -> int:
    return relay.publisher.stats.acked if relay.publisher is not None else 0


async def stream_count(nc: Client, stream: str) -> int:
    try:
        return int((await nc.jsm().stream_info(stream)).state.messages)
    except Exception:
        return 0


async def until_stored(nc: Client, stream: str, count: int, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds(timeout)
    while await stream_count(nc, stream) < count:
        if loop.time() > deadline:
            raise TimeoutError(f"the stream {stream} did not reach {count} messages")
        await asyncio.sleep(0.02)


async def everything(nc: Client, stream: str) -> list[Any]:
    """Every message the stream holds, through an ordered consumer from its start."""
    return await stored(nc, stream, await stream_count(nc, stream))


def assert_each_once(seqs: list[int]) -> None:
    repeats = [seq for seq, n in collections.Counter(seqs).items() if n > 1]
    assert not repeats, f"stored more than once: {repeats[:10]}"
    missing = sorted(set(range(min(seqs), max(seqs) + 1)) - set(seqs))
    assert not missing, f"missing from the stream: {missing[:10]} ({len(missing)} in all)"


@asynccontextmanager
async def relay_process(ws_url: str, nats_url: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A relay in its own process (its stderr piped); killed on the way out if it runs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RELAY_PROCESS,
        ws_url,
        nats_url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


# ---------------------------------------------------------------------- hot-hot


async def test_two_relays_hot_hot_one_killed_with_sigkill_store_every_seq_once() -> None:
    async with (
        NatsServer() as server,
        DemoExchange(interval=0.002) as exchange,
        FaultProxy("127.0.0.1", exchange.port) as proxy,
    ):
        nc = await connect(server.url)
        try:
            async with relay_process(exchange.url, server.url) as other:
                await hot_hot(server.url, proxy, nc, other)
        finally:
            await nc.close()


async def hot_hot(
    nats_url: str, proxy: FaultProxy, nc: Client, other: asyncio.subprocess.Process
) -> None:
    await until_stored(nc, "MD", 100)  # the other relay created the stream, publishes
    lines = Lines()
    mine = make_relay(proxy.url("/stream"), nats_url, lines, msg_id="{seq}", stream="MD")
    got: list[int] = []
    async with running(mine) as task:
        mine.client.messages.subscribe(lambda m: got.append(m["seq"]))
        await until(lambda: acked(mine) >= 100, what="my relay publishes")
        # My link breaks and stays down a while: the other relay covers the gap.
        proxy.refuse(True)
        proxy.cut()
        await until(lambda: mine.client.stats.reconnects >= 2, what="my relay retries")
        await until_stored(nc, "MD", await stream_count(nc, "MD") + 100)
        proxy.refuse(False)
        mark = acked(mine)
        await until(lambda: acked(mine) >= mark + 100, what="my relay is back")
        # The other relay dies mid-stream, with messages in flight.
        other.kill()
        assert await other.wait() == -signal.SIGKILL
        mark = acked(mine)
        await until(lambda: acked(mine) >= mark + 200, what="my relay goes on alone")
        mine._stop.set()  # type: ignore[union-attr]
        assert await task == 0
    seqs = [m["seq"] for m in await everything(nc, "MD")]
    assert_each_once(seqs)
    # My relay's gap is in the stream: the other relay filled it.
    mine_got = sorted(set(got))
    gap = max(range(len(mine_got) - 1), key=lambda i: mine_got[i + 1] - mine_got[i])
    hole = set(range(mine_got[gap] + 1, mine_got[gap + 1]))
    assert len(hole) >= 50 and hole <= set(seqs)
    # Both relays published the same messages; the stream kept one of each.
    assert mine.publisher is not None and mine.publisher.stats.duplicates > 0
    assert max(seqs) == max(got) and mine.publisher.stats.dropped == 0
    assert lines.with_("websocket: dropped") and lines.status[-1] is None


async def test_sigterm_stops_a_relay_process_cleanly_after_publishing_what_it_holds() -> None:
    async with NatsServer() as server, DemoExchange(interval=0.002) as exchange:
        nc = await connect(server.url)
        try:
            async with relay_process(exchange.url, server.url) as proc:
                await stopped_by_sigterm(nc, proc)
        finally:
            await nc.close()


async def stopped_by_sigterm(nc: Client, proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    said: list[bytes] = []
    while not said or b"/s, out " not in said[-1]:  # its first status line
        said.append(await asyncio.wait_for(proc.stderr.readline(), 10))
    await until_stored(nc, "MD", 200)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    text = b"".join(said).decode() + err.decode()
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    summary = [line for line in text.splitlines() if "stopped:" in line]
    assert len(summary) == 1, text
    counts = dict(
        (part.split()[1], int(part.split()[0].replace(",", "")))
        for part in summary[0].split("stopped: ", 1)[1].split(", ")
    )
    # Everything it received was published and acknowledged before it exited.
    assert counts["received"] == counts["published"] == counts["acknowledged"] > 200
    assert counts["dropped"] == 0
    assert await stream_count(nc, "MD") == counts["published"]
    assert "NATS connected; pending " in said[-1].decode()


# ---------------------------------------------------------------------- NATS faults


async def test_nats_restarted_under_a_running_relay_buffers_up_to_the_bound() -> None:
    async with NatsServer() as server, DemoExchange(interval=0.004) as exchange:
        lines = Lines()
        relay_ = make_relay(
            exchange.url,
            server.url,
            lines,
            msg_id="{seq}",
            stream="MD",
            buffer=100,
            status_every=0.2,
        )
        got: list[int] = []
        async with running(relay_) as task:
            relay_.client.messages.subscribe(lambda m: got.append(m["seq"]))
            publisher = relay_.publisher
            assert publisher is not None
            await until(lambda: publisher.stats.acked >= 100, what="publishing")
            await server.stop()
            # The outage: 100 messages are held, the rest counted as dropped.
            await until(lambda: publisher.stats.dropped >= 50, what="drops")
            assert publisher.stats.queued == 100
            await server.start()
            await until(lambda: publisher.stats.pending < 10, what="the held ones published")
            mark = publisher.stats.acked
            await until(lambda: publisher.stats.acked >= mark + 100, what="publishing again")
            relay_._stop.set()  # type: ignore[union-attr]
            assert await task == 0
        nc = await connect(server.url)
        try:
            seqs = [m["seq"] for m in await everything(nc, "MD")]
        finally:
            await nc.close()
        assert len(seqs) == len(set(seqs))
        window = set(range(min(got), max(got) + 1))
        missing = sorted(window - set(seqs))
        # Nothing silent: exactly the dropped ones are missing, in one run, after the
        # 100 that were held and published when NATS came back.
        assert len(missing) == publisher.stats.dropped >= 50
        assert missing == list(range(missing[0], missing[-1] + 1))
        assert set(range(missing[0] - 100, missing[0])) <= set(seqs)
        assert set(got) - set(missing) <= set(seqs)
        assert lines.with_("lost; holding up to 100 messages") and lines.with_("NATS: back after")
        assert lines.with_("dropping messages that cannot be published")
        ended = lines.with_(f"dropped {publisher.stats.dropped} message(s)")
        assert len(ended) == 1
        assert any(
            "NATS reconnecting" in (s or "") or "NATS away" in (s or "") for s in lines.status
        )


async def test_a_late_consumer_gets_it_all_in_order_and_a_slow_one_does_not_slow_the_relay() -> (
    None
):
    async with NatsServer() as server, DemoExchange(interval=0.002, batch=2) as exchange:
        lines = Lines()
        relay_ = make_relay(
            exchange.url, server.url, lines, msg_id="{seq}", stream="MD", status_every=0.2
        )
        got: list[int] = []
        nc = await connect(server.url)
        slow_nc = await connect(server.url)
        try:
            async with running(relay_) as task:
                relay_.client.messages.subscribe(lambda m: got.append(m["seq"]))
                await until(lambda: acked(relay_) >= 500, what="publishing")
                late = Recorder()
                sub = nats.subscribe(nc, "md.>", stream="MD", deliver="all").subscribe(late)
                await late.wait_for_count(500, timeout=10)
                sub.dispose()
                seqs = [m["seq"] for m in late.items]
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
                assert seqs[0] <= got[0]  # from the stream's very start

                # A consumer that takes 20 ms a message (50 msg/s) against ~1000 msg/s.
                slow_seen: list[Any] = []

                async def slow(msg: Any) -> None:
                    slow_seen.append(msg)
                    await asyncio.sleep(0.02)

                slow_sub = await slow_nc.jetstream().subscribe(
                    "md.>", stream="MD", ordered_consumer=True, cb=slow
                )
                await until(lambda: len(slow_seen) > 0, what="the slow consumer starts")
                publisher = relay_.publisher
                assert publisher is not None
                most_pending = 0

                def relayed_enough() -> bool:
                    nonlocal most_pending
                    most_pending = max(most_pending, publisher.stats.pending)
                    return publisher.stats.acked >= start + 1000

                start, received = publisher.stats.acked, relay_.client.stats.messages
                await until(relayed_enough, timeout=10, what="the relay keeps up")
                relayed = publisher.stats.acked - start
                arrived = relay_.client.stats.messages - received
                await slow_sub.unsubscribe()
                assert len(slow_seen) < relayed / 4  # far behind, and the relay was not
                assert relayed >= arrived - most_pending - 50
                assert most_pending < 500
                relay_._stop.set()  # type: ignore[union-attr]
                assert await task == 0
        finally:
            await slow_nc.close()
            await nc.close()
        status = [s for s in lines.status if s is not None]
        assert status and all("NATS connected" in s and "dropped 0" in s for s in status)
        assert all(" unacked)" in s and "reconnects 0 ws, 0 NATS" in s for s in status)
        assert lines.status[-1] is None


# ---------------------------------------------------------------------- bad input


async def test_a_template_naming_a_missing_field_is_reported_and_skipped_and_it_goes_on() -> None:
    async with NatsServer() as server, DemoExchange(interval=0.004) as exchange:
        lines = Lines()
        relay_ = make_relay(exchange.url, server.url, lines, msg_id="{seq}", stream="MD")
        async with running(relay_) as task:
            await until(lambda: acked(relay_) >= 20, what="publishing")
            for n in range(5):  # five messages without "s", in one burst
                exchange.send_raw(json.dumps({"e": "note", "seq": -n}))
            await until(lambda: relay_.errors >= 5, what="the errors reported")
            mark = acked(relay_)
            await until(lambda: acked(relay_) >= mark + 20, what="the relay goes on")
            relay_._stop.set()  # type: ignore[union-attr]
            assert await task == 0
        assert relay_.publisher is not None and relay_.publisher.stats.errors == 5
        said = lines.with_("error: ")
        # One line for the burst (at most one a second), naming the field and the message's.
        assert len(said) == 1, said
        assert "'s'" in said[0] and "lacks" in said[0] and "e, seq" in said[0]
        nc = await connect(server.url)
        try:
            messages = await everything(nc, "MD")
        finally:
            await nc.close()
        assert messages and all(m["e"] == "trade" for m in messages)


async def test_an_unreachable_nats_at_start_is_one_clear_error_without_secrets() -> None:
    port = dead_port()
    lines = Lines()
    with pytest.raises(NatsUnreachable) as caught:
        await relay(
            "ws://127.0.0.1:9/stream",
            nats_url=f"nats://relayuser:hunter2secret@127.0.0.1:{port}",
            subject="md.{s}",
            status=lines.status.append,
            news=lines.news.append,
            handle_signals=False,
        )
    text = str(caught.value)
    assert text == (
        f"could not connect to NATS at nats://***@127.0.0.1:{port}: connection refused; "
        "check the address and that nats-server is running there"
    )
    assert isinstance(caught.value, nats.NatsError) and caught.value.__cause__ is None
    assert lines.status == [None] and lines.news == []
    with pytest.raises(NatsUnreachable, match="connection refused"):
        await listen_nats(f"nats://127.0.0.1:{port}", subject="md.>", handle_signals=False)


async def test_a_stream_whose_subjects_overlap_another_fails_with_the_servers_error() -> None:
    async with NatsServer() as server:
        nc = await connect(server.url)
        try:
            await nats.ensure_stream(nc, "OTHER", ["md.>"])
            with pytest.raises(nats.StreamError) as caught:
                await relay(
                    "ws://127.0.0.1:9/stream",
                    nats_url=server.url,
                    subject="md.{s}",
                    stream="MD",
                    status=lambda _: None,
                    news=lambda _: None,
                    handle_signals=False,
                )
            text = str(caught.value)
            assert "'MD'" in text and "overlap" in text and "error code 10065" in text
            assert "another stream already captures" in text
            assert await stream_count(nc, "MD") == 0
        finally:
            await nc.close()


async def test_an_existing_stream_is_used_as_it_is() -> None:
    async with NatsServer() as server, DemoExchange(interval=0.004) as exchange:
        nc = await connect(server.url)
        try:
            await nats.ensure_stream(nc, "MD", ["md.>", "ref.>"], duplicate_window=7, max_age=600)
            lines = Lines()
            relay_ = make_relay(exchange.url, server.url, lines, stream="MD")
            async with running(relay_):
                await until(lambda: acked(relay_) >= 10)
            config = (await nc.jsm().stream_info("MD")).config
            assert config.subjects == ["md.>", "ref.>"] and config.max_age == 600
            assert lines.with_("publishing into the existing JetStream stream 'MD'")
        finally:
            await nc.close()


async def test_the_first_websocket_connection_failing_is_raised_after_a_clean_stop() -> None:
    async with NatsServer() as server:
        lines = Lines()
        with pytest.raises(ConnectionFailed) as caught:
            await make_relay(f"ws://127.0.0.1:{dead_port()}/stream", server.url, lines).run()
        assert "127.0.0.1" in str(caught.value)
        assert lines.status[-1] is None and lines.with_("stopped: 0 received")


def test_bad_arguments_are_refused_when_the_relay_is_made() -> None:
    def make(**options: Any) -> Relay:
        options.setdefault("nats_url", "nats://127.0.0.1:4222")
        options.setdefault("subject", "md.{s}")
        return Relay("ws://127.0.0.1:9/stream", **options)

    with pytest.raises(ValueError, match="positional field"):
        make(subject="md.{}")
    with pytest.raises(ValueError, match="msg_id must not be empty"):
        make(msg_id="")
    with pytest.raises(ValueError, match="is not a NATS URL"):
        make(nats_url="http://127.0.0.1:4222")
    with pytest.raises(ValueError, match="is not a NATS URL"):
        make(nats_url="nats://127.0.0.1:99999")
    with pytest.raises(TypeError, match="topic must be a non-empty string"):
        make(topics=["a@trade", ""])
    with pytest.raises(ValueError, match="protocol= needs topics="):
        make(protocol=rxws_binance())
    with pytest.raises(TypeError, match="wrap it in a list"):
        make(filters={"s": "BTCUSDT"})
    with pytest.raises(ValueError, match="flush_timeout"):
        make(flush_timeout=0)
    with pytest.raises(ValueError, match="ws:// or wss://"):
        Relay("http://x", nats_url="nats://127.0.0.1:4222", subject="md.{s}")
    shown = repr(make(nats_url="nats://tok3nsecret@127.0.0.1:4222"))
    assert "tok3nsecret" not in shown and "nats://***@127.0.0.1:4222" in shown


def rxws_binance() -> Any:
    from rxws.protocols import Binance

    return Binance()


def test_stream_subjects_cover_what_a_template_publishes() -> None:
    assert stream_subjects("md.{s}") == "md.>"
    assert stream_subjects("md.spot.{s}.trades") == "md.spot.>"
    assert stream_subjects("md.x{s}") == "md.>"
    assert stream_subjects("{s}.trades") == ">"
    assert stream_subjects("md.all") == "md.all"
    assert shown_nats_url("nats://u:p@h:1") == "nats://***@h:1"
    assert shown_nats_url("nats://h:1") == "nats://h:1"


# ---------------------------------------------------------------------- topics


def test_combined_frames_keep_the_raw_text_of_their_data() -> None:
    frame = '{"stream":"btcusdt@trade","data":{"s": "BTCUSDT",  "seq": 1}}'
    for given in (frame, frame.encode()):
        message = parse_combined(given)
        assert type(message) is dict and message["stream"] == "btcusdt@trade"
        data = message["data"]
        assert isinstance(data, nats.Framed) and data == {"s": "BTCUSDT", "seq": 1}
        expected = '{"s": "BTCUSDT",  "seq": 1}'
        assert data.frame == (expected if isinstance(given, str) else expected.encode())
    # Anything else keeps its whole frame; a data that is not the frame's tail is not cut.
    for other in (
        '{"data":{"a":1},"stream":"x"}',
        '{"stream":"x","data":{"a":1},"more":2}',
        '{"stream":"a\\"b","data":{"a":1}}',
        '{"result":null,"id":1}',
    ):
        message = parse_combined(other)
        assert isinstance(message, nats.Framed) and message.frame == other
        assert not isinstance(message.get("data"), nats.Framed)
    assert parse_combined("[1, 2]") == [1, 2]
    with pytest.raises(ValueError):
        parse_combined("{broken")


async def test_topics_sharded_over_several_connections_are_all_published_as_they_came() -> None:
    limits = Limits(streams_per_connection=3)
    topics = [f"sym{i}@trade" for i in range(8)]
    async with (
        NatsServer() as server,
        DemoExchange(combined=True, interval=0.004, batch=4, limits=limits) as exchange,
    ):
        lines = Lines()
        relay_ = make_relay(
            exchange.url,
            server.url,
            lines,
            msg_id="{seq}",
            stream="MD",
            topics=[*topics, topics[0]],  # a topic asked for twice is one subscription
            filters=[{"e": "trade"}],
            limits=limits,
        )
        async with running(relay_) as task:
            await until(lambda: acked(relay_) >= 400, what="publishing")
            relay_._stop.set()  # type: ignore[union-attr]
            assert await task == 0
        assert len(relay_.client.stats.per_connection) == 3
        assert not exchange.violations
        nc = await connect(server.url)
        try:
            count = await stream_count(nc, "MD")
            raw = Recorder()
            sub = nats.subscribe(nc, "md.>", parse=None, stream="MD", deliver="all").subscribe(raw)
            await raw.wait_for_count(count, timeout=10)
            sub.dispose()
        finally:
            await nc.close()
        # Each payload is the data of the frame as it came (json.dumps spacing), not the
        # wrapper and not re-serialised.
        assert all(payload.startswith(b'{"e": "trade", ') for payload in raw.items)
        by_symbol: dict[str, list[int]] = collections.defaultdict(list)
        for payload in raw.items:
            trade = json.loads(payload)
            by_symbol[trade["s"]].append(trade["t"])
        assert sorted(by_symbol) == sorted(t.partition("@")[0].upper() for t in topics)
        for ids in by_symbol.values():
            assert ids == list(range(1, len(ids) + 1))


# ---------------------------------------------------------------------- signals


async def test_sigint_stops_an_in_process_relay_and_its_handlers_are_removed() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    async with NatsServer() as server, DemoExchange(interval=0.004) as exchange:
        lines = Lines()
        relay_ = Relay(
            exchange.url,
            nats_url=server.url,
            subject="md.{s}",
            status=lines.status.append,
            news=lines.news.append,
        )
        task = asyncio.create_task(relay_.run())
        await until(lambda: relay_.publisher is not None and relay_.publisher.stats.published > 10)
        os.kill(os.getpid(), signal.SIGINT)
        assert await asyncio.wait_for(task, 10) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert lines.with_("stopped: ")


# ---------------------------------------------------------------------- listen nats://


async def test_listen_nats_prints_filtered_json_lines_from_a_stream_and_stops_at_count() -> None:
    async with NatsServer() as server, DemoExchange(interval=0.002) as exchange:
        lines = Lines()
        relay_ = make_relay(exchange.url, server.url, lines, msg_id="{seq}", stream="MD")
        async with running(relay_):
            await until(lambda: acked(relay_) >= 100)
        out = io.StringIO()
        status: list[str | None] = []
        code = await listen_nats(
            server.url,
            subject="md.>",
            stream="MD",
            deliver="all",
            filters=[{"s": "ETHUSDT"}, {"s": "SOLUSDT", "e": "trade"}],
            count=6,
            out=out,
            status=status.append,
            news=lambda _: None,
            handle_signals=False,
        )
        assert code == 0 and status[-1] is None
        printed = [json.loads(line) for line in out.getvalue().splitlines()]
        assert len(printed) == 6 and {m["s"] for m in printed} == {"ETHUSDT", "SOLUSDT"}
        seqs = [m["seq"] for m in printed]
        assert seqs == sorted(seqs)

        out = io.StringIO()
        await listen_nats(
            server.url,
            subject="md.BTCUSDT",
            stream="MD",
            deliver=1,
            count=2,
            raw=True,
            out=out,
            status=lambda _: None,
            news=lambda _: None,
            handle_signals=False,
        )
        frames = out.getvalue().splitlines()
        assert len(frames) == 2 and all(f.startswith('{"e": "trade"') for f in frames)


async def test_listen_nats_on_core_nats_prints_text_payloads_as_json_strings() -> None:
    async with NatsServer() as server:
        nc = await connect(server.url)
        stop = asyncio.Event()
        out = io.StringIO()

        async def publish_until_printed() -> None:
            while not stop.is_set() and out.getvalue().count("\n") < 4:
                await nc.publish("md.A", b'{"s": "A"}')
                await nc.publish("md.B", b"not json")
                await asyncio.sleep(0.01)
            stop.set()

        publishing = asyncio.create_task(publish_until_printed())
        try:
            code = await listen_nats(
                server.url,
                subject="md.*",
                out=out,
                stop=stop,
                status=lambda _: None,
                news=lambda _: None,
                handle_signals=False,
            )
            await publishing
        finally:
            await nc.close()
        assert code == 0
        printed = set(out.getvalue().splitlines())
        assert printed == {'{"s":"A"}', '"not json"'}


async def test_listen_nats_on_a_missing_stream_or_with_bad_arguments_says_so() -> None:
    async with NatsServer() as server:
        with pytest.raises(nats.SubscribeError, match="'NOPE' does not exist"):
            await listen_nats(
                server.url,
                subject="md.>",
                stream="NOPE",
                deliver="all",
                status=lambda _: None,
                news=lambda _: None,
                handle_signals=False,
            )
    with pytest.raises(ValueError, match="pass stream= as well"):
        await listen_nats("nats://127.0.0.1:4222", subject="md.>", deliver="all")
    with pytest.raises(ValueError, match="count"):
        await listen_nats("nats://127.0.0.1:4222", subject="md.>", count=0)


# ---------------------------------------------------------------------- the feed's side


async def test_sends_go_out_on_every_new_connection_and_filters_keep_what_is_published() -> None:
    subscribe = {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@trade"], "id": 1}
    async with NatsServer() as server, DemoExchange(interval=0.004) as exchange:
        lines = Lines()
        relay_ = make_relay(
            exchange.ws_url,
            server.url,
            lines,
            msg_id="{seq}",
            stream="MD",
            sends=[subscribe],
            filters=[{"e": "trade", "s": "BTCUSDT"}],
        )
        async with running(relay_):
            await until(lambda: acked(relay_) >= 20, what="publishing")
            await exchange.drop_all(1011, "maintenance")
            await until(lambda: relay_.client.stats.connections == 2, what="reconnected")
            mark = acked(relay_)
            await until(lambda: acked(relay_) >= mark + 20, what="publishing again")
        assert [msg for _, msg in exchange.received] == [subscribe, subscribe]
        # The replies ({"result": null, "id": 1}) and ETHUSDT were filtered out, not errors.
        assert relay_.errors == 0
        nc = await connect(server.url)
        try:
            assert {m["s"] for m in await everything(nc, "MD")} == {"BTCUSDT"}
        finally:
            await nc.close()


async def test_a_feed_that_gives_up_after_connecting_ends_the_relay_with_status_1() -> None:
    async with NatsServer() as server, DemoExchange(interval=0.004) as exchange:
        lines = Lines()
        relay_ = make_relay(exchange.url, server.url, lines, stream="MD")
        async with running(relay_) as task:
            await until(lambda: acked(relay_) >= 10, what="publishing")
            exchange.refuse(403)  # retrying cannot fix a 403: the client gives up
            await exchange.drop_all(1011, "maintenance")
            assert await asyncio.wait_for(task, 10) == 1
        said = lines.with_("error: the websocket feed gave up")
        assert len(said) == 1 and "403" in said[0]
        assert lines.with_("stopped: ") and lines.status[-1] is None


async def test_stopping_while_nats_is_away_flushes_within_the_bound_and_counts_the_rest() -> None:
    async with NatsServer() as server, DemoExchange(interval=0.004) as exchange:
        lines = Lines()
        relay_ = make_relay(
            exchange.url, server.url, lines, msg_id="{seq}", stream="MD", flush_timeout=0.5
        )
        async with running(relay_) as task:
            publisher = relay_.publisher
            assert publisher is not None
            await until(lambda: publisher.stats.acked >= 10, what="publishing")
            await server.stop()
            await until(lambda: publisher.stats.queued >= 20, what="messages held")
            loop = asyncio.get_running_loop()
            stopping = loop.time()
            relay_._stop.set()  # type: ignore[union-attr]
            assert await asyncio.wait_for(task, 10) == 0
            took = loop.time() - stopping
        assert 0.5 <= took < 4.0
        assert publisher.stats.dropped >= 20
        said = lines.with_("stopped: ")
        assert len(said) == 1 and f"{publisher.stats.dropped:,} dropped" in said[0]


class ClosedPipe(io.StringIO):
    """stdout whose reader went away after ``keep`` lines (``rxws listen ... | head``)."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep

    def write(self, text: str) -> int:
        if self.getvalue().count("\n") >= self.keep:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


async def test_listen_nats_stops_quietly_when_its_reader_goes_away() -> None:
    async with NatsServer() as server, DemoExchange(interval=0.002) as exchange:
        relay_ = make_relay(exchange.url, server.url, Lines(), stream="MD")
        async with running(relay_):
            await until(lambda: acked(relay_) >= 50)
        out = ClosedPipe(keep=3)
        broken: list[bool] = []
        code = await listen_nats(
            server.url,
            subject="md.>",
            stream="MD",
            deliver="all",
            out=out,
            status=lambda _: None,
            news=lambda _: None,
            handle_signals=False,
            on_broken_pipe=lambda: broken.append(True),
        )
        assert code == 0 and broken == [True]
        assert out.getvalue().count("\n") == 3
