"""The ``rxws`` command line.

Most tests run a command in-process, in the test's own event loop (``rxws.cli.run``,
which is what ``main`` runs), against real servers on loopback; a few run
``python -m rxws`` for real, for what only a separate process shows: exit codes seen
by a shell, Ctrl-C, a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from support import dead_port, until
from websockets.asyncio.server import ServerConnection, serve

from rxws import Limits, matches
from rxws.cli import build_parser, main, parse_args, parse_filter, run
from rxws.testing import DEFAULT_SYMBOLS, DemoExchange, NatsServer, SilentServer

CLI = [sys.executable, "-m", "rxws"]
DEADLINE = 15.0  # seconds; a passing run takes well under a second or two
ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


# ---------------------------------------------------------------------- running the CLI


@dataclass
class Result:
    code: int
    out: str
    err: str
    out_bytes: bytes


class Run:
    """One command running in this loop; ``stop()`` is Ctrl-C."""

    def __init__(self, *argv: str, live: bool = False) -> None:
        self.buffer = io.BytesIO()
        self.out = io.TextIOWrapper(self.buffer, encoding="utf-8", write_through=True)
        self.err = io.StringIO()
        self.stop_event = asyncio.Event()
        args = parse_args(list(argv))
        self.task = asyncio.ensure_future(
            run(args, self.out, self.err, live=live, stop=self.stop_event)
        )

    @property
    def stderr(self) -> str:
        return self.err.getvalue()

    async def wait_err(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
        """Wait until stderr matches ``pattern`` (polled: it is a plain StringIO)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (found := re.search(pattern, self.stderr)) is None:
            if self.task.done() or loop.time() > deadline:
                pytest.fail(f"stderr never matched {pattern!r}: {self.stderr!r}")
            await asyncio.sleep(0.01)
        return found

    def stop(self) -> None:
        self.stop_event.set()

    async def result(self, timeout: float = DEADLINE) -> Result:
        try:
            code = await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except asyncio.TimeoutError:
            self.stop()
            await self.task
            pytest.fail(f"the command did not end in time; stderr: {self.stderr!r}")
        raw = self.buffer.getvalue()
        return Result(code, raw.decode("utf-8", "replace"), self.stderr, raw)


async def cli(*argv: str, live: bool = False, timeout: float = DEADLINE) -> Result:
    """Run one command to its end, in-process."""
    return await Run(*argv, live=live).result(timeout)


def run_cli(*args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_clean_error_line(stderr: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    assert "error" in lines[0]


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def summary(stderr: str) -> dict[str, str]:
    """The demo's summary table (plain form) as {row: value}."""
    rows: dict[str, str] = {}
    lines = stderr.splitlines()
    start = lines.index("rxws: demo summary")
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        what, value = re.split(r"\s{2,}", line.strip())[:2]
        rows[what] = value
    return rows


# ---------------------------------------------------------------------- servers

Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def scripted_server(handler: Handler) -> AsyncIterator[str]:
    """A websockets server on loopback running ``handler`` per connection; yields its URL."""
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/feed"


FRAMES: list[Any] = [
    {"s": "S1", "e": "trade", "i": 1},  # first filter
    {"s": "S2", "e": "trade", "i": 2},  # second filter (i is the number 2)
    {"s": "S1", "e": "quote", "i": 3},
    {"s": "S2", "e": "quote", "i": "2"},  # the string "2" is not the number 2
    "not json at all",
    {"e": "trade", "i": 4},
    {"s": "S1", "e": "trade", "i": 5, "extra": [1, 2]},  # first filter
    [1, 2, 3],
    {"s": "S3", "e": "book", "i": 2},  # second filter
    {"s": "S1", "e": "trade", "i": 6},  # would be the fifth match
]


async def send_frames_then_wait(ws: ServerConnection) -> None:
    for frame in FRAMES:
        await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    await ws.wait_closed()


@dataclass
class Pki:
    ca: trustme.CA
    server: ssl.SSLContext  # a certificate for 127.0.0.1 issued by ca
    ca_file: Path  # ca's certificate, PEM


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path_factory.mktemp("pki") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield Pki(ca, server, ca_file)


# ---------------------------------------------------------------------- parse_filter


def test_parse_filter_reads_json_values_else_strings() -> None:
    assert parse_filter("s=S1,e=trade") == {"s": "S1", "e": "trade"}
    assert parse_filter("i=2") == {"i": 2}
    assert parse_filter("ok=true,none=null,x=1.5") == {"ok": True, "none": None, "x": 1.5}
    assert parse_filter('s="2"') == {"s": "2"}
    assert parse_filter('s=""') == {"s": ""}
    assert parse_filter(" s =BTC") == {"s": "BTC"}
    assert parse_filter("k==x") == {"k": "=x"}


def test_parse_filter_json_values_may_hold_commas() -> None:
    assert parse_filter("p=[1,2],s=S1") == {"p": [1, 2], "s": "S1"}
    assert parse_filter('n="a,b",m={"x":1,"y":2}') == {"n": "a,b", "m": {"x": 1, "y": 2}}
    # Not one JSON value: read up to the next comma as text.
    assert parse_filter("p=[1]x,s=S1") == {"p": "[1]x", "s": "S1"}
    assert parse_filter("p=[1") == {"p": "[1"}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("novalue", "'novalue' has no '='"),
        ("=x", "a key is empty"),
        ("a=1,b", "'b' has no '='"),
        ("a=1,", "ends with ','"),
        ("a=1,a=2", "given twice"),
        ("", "has no '='"),
        (",a=1", "has no '='"),
        ("s=", "'s' has an empty value"),  # an unset shell variable: not a match-all
        ("s=,e=trade", "'s' has an empty value"),
        ("s= ", "'s' has an empty value"),
    ],
)
def test_parse_filter_rejects_malformed_text(text: str, why: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="malformed filter") as info:
        parse_filter(text)
    assert why in str(info.value)


def test_filters_from_the_command_line_are_ored_dicts_as_in_stream_filter() -> None:
    args = build_parser().parse_args(
        ["listen", "ws://h/x", "--filter", "s=S1,e=trade", "--filter", "i=2"]
    )
    assert args.filter == [{"s": "S1", "e": "trade"}, {"i": 2}]
    keep = matches(args.filter)
    assert [f for f in FRAMES if keep(f)] == [FRAMES[0], FRAMES[1], FRAMES[6], FRAMES[8], FRAMES[9]]


# ---------------------------------------------------------------------- demo


@pytest.mark.timeout(60)
async def test_demo_with_its_defaults_shows_a_drop_a_rotation_and_nothing_lost() -> None:
    result = await cli("demo", timeout=45)
    assert result.code == 0, result.err
    rows = summary(result.err)
    assert int(rows["reconnects"]) >= 1
    assert int(rows["rotations"]) >= 1
    assert rows["gaps outside drops"] == "0"
    assert rows["repeats"] == "0"
    assert re.fullmatch(r"\d+\.\d / \d+\.\d ms", rows["latency p50 / p99"])
    trades = [json.loads(line) for line in result.out.splitlines()]
    assert int(rows["messages"]) == len(trades) > 100
    assert {t["s"] for t in trades} == set(DEFAULT_SYMBOLS)
    # Four symbols, at most two topics per connection: two connections, both shown.
    assert rows["connections"] == "2"
    assert rows["connection 0"] == rows["connection 1"] == "2 topics"
    assert rows["limit violations"] == "0"
    assert "| 2/2 connections open |" in result.err
    # Each symbol's id (t) only skips after a drop, and those skips are the ones the
    # summary calls the server's.
    skipped = 0
    for symbol in DEFAULT_SYMBOLS:
        ids = [t["t"] for t in trades if t["s"] == symbol]
        assert int(rows[f"{symbol}"]) == len(ids)
        assert ids == sorted(set(ids))
        skipped += ids[-1] - ids[0] + 1 - len(ids)
    assert skipped == int(rows["missed while disconnected"])
    assert "not rxws's" in result.err  # the server's gaps are called the server's
    assert "dropped: close code 1011 (demo fault) [connection 0]" in result.err
    assert "dropped: close code 1011 (demo fault) [connection 1]" in result.err
    assert "rotated: a new connection took over" in result.err
    assert " 1 rotations" not in result.err


async def test_demo_prints_every_symbol_it_subscribes_without_gaps() -> None:
    result = await cli(
        "demo",
        "--symbols",
        "solusdt",
        "xrpusdt",
        "--max-streams",
        "1",
        "--duration",
        "1",
        "--rate",
        "200",
        "--status-every",
        "0.2",
    )
    assert result.code == 0, result.err
    trades = [json.loads(line) for line in result.out.splitlines()]
    assert {t["s"] for t in trades} == {"SOLUSDT", "XRPUSDT"}
    # One symbol per connection: the exchange trades only what is subscribed, so seq
    # has no gap over the two connections (their order between them is not fixed).
    seqs = sorted(t["seq"] for t in trades)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no drop in 1 s: no skip
    for symbol in ("SOLUSDT", "XRPUSDT"):
        ids = [t["t"] for t in trades if t["s"] == symbol]
        assert ids == list(range(1, len(ids) + 1))
    rows = summary(result.err)
    assert rows["connections"] == "2"
    assert "| 2/2 connections open |" in result.err


async def test_demo_count_stops_early_with_that_many_json_lines() -> None:
    result = await cli("demo", "--count", "5")
    assert result.code == 0, result.err
    trades = [json.loads(line) for line in result.out.splitlines()]
    assert len(trades) == 5
    assert all(t["e"] == "trade" and t["s"] in DEFAULT_SYMBOLS for t in trades)
    assert "connected to ws://127.0.0.1:" in result.err
    assert int(summary(result.err)["messages"]) >= 5


async def test_demo_filter_and_symbols() -> None:
    result = await cli(
        "demo", "--symbols", "solusdt", "ethusdt", "--filter", "s=SOLUSDT", "--count", "3"
    )
    assert result.code == 0, result.err
    assert [json.loads(line)["s"] for line in result.out.splitlines()] == ["SOLUSDT"] * 3


async def test_demo_with_frequent_faults_still_loses_and_repeats_nothing() -> None:
    result = await cli(
        "demo", "--duration", "4", "--drop-every", "0.7", "--rotate-every", "0.3", "--rate", "400"
    )
    assert result.code == 0, result.err
    rows = summary(result.err)
    assert int(rows["reconnects"]) >= 2 and int(rows["rotations"]) >= 2
    assert rows["gaps outside drops"] == rows["repeats"] == "0"


# ---------------------------------------------------------------------- the status line


async def test_plain_status_lines_when_stderr_is_not_a_terminal() -> None:
    async with DemoExchange(interval=0.02) as exchange:
        run_ = Run("listen", exchange.url, "--status-every", "0.1")
        await run_.wait_err(r"connected \| \d+ msg/s \| \d+ messages \| 0 reconnects")
        await exchange.drop_all(1011, "maintenance")
        await run_.wait_err(r"connected \| .* \| 1 reconnect \| 0 rotations \| last error")
        run_.stop()
        result = await run_.result()
    assert result.code == 0, result.err
    assert re.search(r"last error \d+ s ago: close code 1011 \(maintenance\)", result.err)
    assert "1 reconnects" not in result.err


async def test_status_line_tells_a_stuck_handshake() -> None:
    async with SilentServer() as server:
        run_ = Run("listen", server.url, "--status-every", "0.1")
        await run_.wait_err(r"connecting to ws://127\.0\.0\.1:\d+/ for 0\.[1-9] s")
        run_.stop()
        result = await run_.result()
    assert result.code == 0
    assert result.out == ""


async def test_live_status_line_is_redrawn_in_place() -> None:
    async with DemoExchange(interval=0.01) as exchange:
        run_ = Run("listen", exchange.url, "--count", "60", live=True)
        result = await run_.result()
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 60  # stdout is not the terminal: untouched
    assert "\x1b[" in result.err  # redrawn with cursor controls
    assert re.search(r"connected \| \d+ msg/s \| \d+ messages \| 0 reconnects", result.err)


async def test_a_failed_reconnect_attempt_is_not_called_a_drop() -> None:
    async with DemoExchange(interval=0.01) as exchange:
        run_ = Run("listen", exchange.url, "--status-every", "0")
        await run_.wait_err("connected to")
        exchange.refuse(503)
        await exchange.drop_all(1011, "maintenance")
        await run_.wait_err("reconnected to")
        run_.stop()
        result = await run_.result()
    err = result.err
    assert "dropped: close code 1011 (maintenance)" in err
    assert (
        "connection attempt failed: the server rejected the websocket handshake with HTTP 503"
        in err
    )
    assert err.count("dropped") == 1


async def test_rotations_are_counted_in_words() -> None:
    async with DemoExchange(interval=0.005) as exchange:
        result = await cli(
            "listen",
            exchange.url,
            "--rotate-every",
            "0.2",
            "--count",
            "100",
            "--status-every",
            "0.05",
        )
        assert exchange.accepted >= 2
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 100
    assert "rotated: a new connection took over" in result.err
    assert "dropped" not in result.err and "disconnected" not in result.err
    assert "1 rotations" not in result.err and "(1 so far)" in result.err


async def test_verbose_tells_a_connection_once() -> None:
    async with DemoExchange() as exchange:
        result = await cli("listen", exchange.url, "--count", "3", "-v")
    assert result.code == 0, result.err
    assert result.err.count("connected to") == 1, result.err


async def test_timestamps_start_every_line() -> None:
    async with DemoExchange() as exchange:
        result = await cli("listen", exchange.url, "--count", "3", "--timestamps")
    assert result.code == 0, result.err
    for line in result.out.splitlines():
        stamp, _, doc = line.partition(" ")
        assert re.fullmatch(ISO_TIME, stamp), line
        assert json.loads(doc)["e"] == "trade"
    assert re.search(rf"^rxws: {ISO_TIME} connected to", result.err, re.M)


# ---------------------------------------------------------------------- listen


async def test_listen_prints_exactly_the_matching_messages_in_order(transport: str) -> None:
    async with scripted_server(send_frames_then_wait) as url:
        result = await cli(
            "listen",
            url,
            "--filter",
            "s=S1,e=trade",
            "--filter",
            "i=2",
            "--count",
            "4",
            "--transport",
            transport,
        )
    assert result.code == 0, result.err
    assert [json.loads(line) for line in result.out.splitlines()] == [
        FRAMES[0],
        FRAMES[1],
        FRAMES[6],
        FRAMES[8],
    ]


async def test_listen_prints_text_frames_that_are_not_json_as_json_strings() -> None:
    async with scripted_server(send_frames_then_wait) as url:
        result = await cli("listen", url, "--count", "6")
    assert result.code == 0, result.err
    assert [json.loads(line) for line in result.out.splitlines()] == FRAMES[:6]


async def test_listen_raw_prints_frames_as_received() -> None:
    frames: list[str | bytes] = ['{"a":   1}', "plain text", b"\x00\x01binary", '{"b": 2}']

    async def handler(ws: ServerConnection) -> None:
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    async with scripted_server(handler) as url:
        result = await cli("listen", url, "--raw", "--count", "3")
    assert result.code == 0, result.err
    assert result.out_bytes == b'{"a":   1}\nplain text\n\x00\x01binary\n'


async def test_listen_raw_with_filter_matches_parsed_frames_and_prints_them_raw() -> None:
    frames = ['{"s": "S1",  "i": 1}', '{"s": "S2", "i": 2}', "text", '{"i": 3,  "s": "S1"}']

    async def handler(ws: ServerConnection) -> None:
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    async with scripted_server(handler) as url:
        result = await cli("listen", url, "--raw", "--filter", "s=S1", "--count", "2")
    assert result.code == 0, result.err
    assert result.out == f"{frames[0]}\n{frames[3]}\n"


async def test_listen_sends_json_and_text_in_order_on_every_connection() -> None:
    received: list[list[str]] = []

    async def handler(ws: ServerConnection) -> None:
        got = [str(await ws.recv()) for _ in range(3)]
        received.append(got)
        if len(received) == 1:
            await ws.close(1011, "test drop")  # after the first connection: reconnect
            return
        await ws.send(json.dumps({"n": len(received)}))
        await ws.wait_closed()

    sub = '{"method": "SUBSCRIBE", "params": ["s1@trade"], "id": 1}'
    async with scripted_server(handler) as url:
        result = await cli(
            "listen", url, "--send", sub, "--send-text", "ping me", "--send", '"x"', "--count", "1"
        )
    assert result.code == 0, result.err
    assert received == [[sub, "ping me", '"x"'], [sub, "ping me", '"x"']]  # verbatim, in order
    assert json.loads(result.out) == {"n": 2}
    assert "dropped: close code 1011 (test drop)" in result.err
    assert "use rxws.ops.reconnect" not in result.err
    assert "retrying in" in result.err


async def test_count_counts_data_messages_not_replies_to_send() -> None:
    async with DemoExchange(interval=0.01) as exchange:
        subscribe = '{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 7}'
        result = await cli("listen", exchange.ws_url, "--send", subscribe, "--count", "3")
    assert result.code == 0, result.err
    trades = [json.loads(line) for line in result.out.splitlines()]
    assert [t["s"] for t in trades] == ["BTCUSDT"] * 3
    assert 'reply to --send: {"result":null,"id":7}' in result.err


async def test_listen_reconnects_to_the_demo_exchange_after_it_drops() -> None:
    async with DemoExchange(interval=0.01) as exchange:
        run_ = Run("listen", exchange.url, "--filter", "e=trade", "--count", "30")
        await exchange.wait_for(lambda: exchange.accepted >= 1)
        await exchange.drop_all(1011, "maintenance")
        result = await run_.result()
        assert exchange.accepted >= 2
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 30
    assert "dropped: close code 1011 (maintenance)" in result.err


async def test_listen_replaces_a_silent_connection_with_idle_timeout() -> None:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.send(json.dumps({"n": connections}))
        await ws.wait_closed()  # then silence

    async with scripted_server(handler) as url:
        result = await cli("listen", url, "--idle-timeout", "0.3", "--count", "2")
    assert result.code == 0, result.err
    assert [json.loads(line) for line in result.out.splitlines()] == [{"n": 1}, {"n": 2}]
    assert "dropped: no message for 0.3 s (idle timeout)" in result.err


async def test_listen_reconnects_after_a_normal_close() -> None:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.send(json.dumps({"n": connections}))
        if connections == 1:
            await ws.close(1000)
        else:
            await ws.wait_closed()

    async with scripted_server(handler) as url:
        result = await cli("listen", url, "--count", "2")
    assert result.code == 0, result.err
    assert [json.loads(line) for line in result.out.splitlines()] == [{"n": 1}, {"n": 2}]
    assert "disconnected: closed normally by the server" in result.err


@pytest.mark.parametrize("status", [503, 401])
async def test_listen_exits_when_the_first_handshake_is_refused(status: int) -> None:
    async with DemoExchange() as exchange:
        exchange.refuse(*[status] * 50)  # a retrying client would see them all
        result = await cli("listen", exchange.url + "?key=s3cret")
        assert exchange.handshakes <= 2  # it gave up instead of retrying
    assert result.code == 1
    assert result.out == ""
    assert_one_clean_error_line(result.err)
    assert f"HTTP {status}" in result.err
    assert "s3cret" not in result.err


async def test_listen_exits_when_the_host_cannot_be_reached() -> None:
    result = await cli("listen", f"ws://127.0.0.1:{closed_port()}/")
    assert result.code == 1
    assert result.out == ""
    assert_one_clean_error_line(result.err)
    assert "could not connect to ws://127.0.0.1:" in result.err


# ---------------------------------------------------------------------- TLS


async def test_wss_to_a_plain_server_names_the_reason_and_says_use_ws(transport: str) -> None:
    async with DemoExchange() as exchange:
        url = exchange.url.replace("ws://", "wss://")
        result = await cli("listen", url, "--transport", transport)
    assert result.code == 1
    assert_one_clean_error_line(result.err)
    line = result.err.strip()
    assert not re.search(r": ?;|: *$", line), line  # a reason after the colon
    assert "use ws:// instead of wss://" in line


async def test_ws_to_a_tls_server_says_use_wss(pki: Pki, transport: str) -> None:
    async with DemoExchange(ssl=pki.server) as exchange:
        url = exchange.url.replace("wss://", "ws://")
        result = await cli("listen", url, "--transport", transport)
    assert result.code == 1
    assert_one_clean_error_line(result.err)
    assert "use wss:// instead of ws://" in result.err


async def test_cafile_trusts_the_servers_ca(pki: Pki) -> None:
    async with DemoExchange(ssl=pki.server) as exchange:
        untrusted = await cli("listen", exchange.url)
        trusted = await cli("listen", exchange.url, "--cafile", str(pki.ca_file), "--count", "2")
    assert untrusted.code == 1
    assert_one_clean_error_line(untrusted.err)
    assert "TLS certificate verification failed" in untrusted.err
    assert "--cafile" in untrusted.err
    assert trusted.code == 0, trusted.err
    assert len(trusted.out.splitlines()) == 2


async def test_insecure_connects_without_checking_and_warns(pki: Pki) -> None:
    async with DemoExchange(ssl=pki.server) as exchange:
        result = await cli("listen", exchange.url, "--insecure", "--count", "2")
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 2
    assert "warning: --insecure: the server's TLS certificate is not checked" in result.err


# ---------------------------------------------------------------------- topics


TOPICS = ["aaausdt@trade", "bbbusdt@trade", "cccusdt@trade", "dddusdt@trade", "eeeusdt@trade"]


async def test_listen_topics_over_several_connections_prints_every_topic() -> None:
    limits = Limits(streams_per_connection=2)
    async with DemoExchange(combined=True, interval=0.005, batch=5, limits=limits) as exchange:
        topics = [arg for topic in TOPICS for arg in ("--topic", topic)]
        run_ = Run("listen", exchange.url, *topics, "--max-streams", "2", "--status-every", "0.05")
        try:
            # Five topics at two per connection: three connections, all open.
            await run_.wait_err(r"connected \| 3/3 connections open \|")
            assert sorted(exchange.connections.values()) == [1, 2, 2]
            await until(lambda: exchange.seq >= 100, what="trading")
        finally:
            run_.stop()
            result = await run_.result()
        assert exchange.violations == []
    assert result.code == 0, result.err
    trades = [json.loads(line) for line in result.out.splitlines()]
    # The payloads (the "data" of each combined-stream frame), every topic's.
    assert all(t["e"] == "trade" for t in trades)
    by_symbol: dict[str, list[int]] = {}
    for trade in trades:
        by_symbol.setdefault(trade["s"], []).append(trade["t"])
    assert sorted(by_symbol) == sorted(t.partition("@")[0].upper() for t in TOPICS)
    for ids in by_symbol.values():
        assert ids == list(range(1, len(ids) + 1))
    for index in range(3):
        assert f"connected to {exchange.url} [connection {index}]" in result.err


async def test_listen_topics_filters_payloads_and_a_refused_topic_ends_only_itself() -> None:
    async with DemoExchange(combined=True, interval=0.005, batch=4) as exchange:
        result = await cli(
            "listen",
            exchange.url,
            *("--topic", "aaausdt@trade", "--topic", "no-such-stream", "--topic", "bbbusdt@trade"),
            *("--max-streams", "1", "--filter", "s=BBBUSDT", "--count", "10"),
        )
    assert result.code == 0, result.err
    trades = [json.loads(line) for line in result.out.splitlines()]
    assert [t["s"] for t in trades] == ["BBBUSDT"] * 10
    assert [t["t"] for t in trades] == list(range(1, 11))
    refused = re.findall(r"refused by the server: .*'no-such-stream'.*", result.err)
    assert len(refused) == 1, result.err
    assert "aaausdt" not in refused[0]


async def test_listen_topics_exits_1_when_every_topic_is_refused() -> None:
    async with DemoExchange(combined=True) as exchange:
        result = await cli("listen", exchange.url, "--topic", "nope", "--topic", "no-such")
    assert result.code == 1
    assert result.out == ""
    lines = result.err.splitlines()
    assert lines[-1] == (
        "rxws: error: the server refused every --topic; nothing is left to listen to"
    )
    assert sum("refused by the server" in line for line in lines) == 1  # one frame, one line


async def test_exchange_combined_enforces_max_streams_and_listen_max_streams_obeys_it() -> None:
    exchange = Run("exchange", "--port", "0", "--combined", "--max-streams", "1")
    try:
        found = await exchange.wait_err(r"any <name>@trade topic on (ws://127\.0\.0\.1:\d+/stream)")
        url = found.group(1)
        topics = ("--topic", "aaausdt@trade", "--topic", "bbbusdt@trade")
        # Two topics on one connection pass the exchange's limit: both refused.
        refused = await cli("listen", url, *topics)
        obeyed = await cli("listen", url, *topics, "--max-streams", "1", "--count", "40")
    finally:
        exchange.stop()
        assert (await exchange.result()).code == 0
    assert refused.code == 1
    assert "Too many streams" in refused.err
    assert obeyed.code == 0, obeyed.err
    assert {json.loads(line)["s"] for line in obeyed.out.splitlines()} == {"AAAUSDT", "BBBUSDT"}


# ---------------------------------------------------------------------- NATS


async def test_relay_publishes_to_nats_and_listen_nats_reads_it_back() -> None:
    limits = Limits(streams_per_connection=2)
    async with (
        NatsServer() as server,
        DemoExchange(combined=True, interval=0.005, batch=4, limits=limits) as exchange,
    ):
        topics = [arg for topic in TOPICS[:4] for arg in ("--topic", topic)]
        relay = Run(
            "relay",
            exchange.url,
            "--nats",
            server.url,
            "--subject",
            "md.{s}",
            "--msg-id",
            "{seq}",
            "--stream",
            "MD",
            *topics,
            "--max-streams",
            "2",
        )
        # The status line: rates, NATS state, what is pending, what was dropped.
        await relay.wait_err(r"rxws: in [\d.,k]+/s, out [\d.,k]+/s; NATS connected")
        assert sorted(exchange.connections.values()) == [2, 2]
        reader = await cli(
            "listen",
            server.url,
            "--subject",
            "md.>",
            "--stream",
            "MD",
            "--deliver",
            "all",
            "--filter",
            "s=BBBUSDT",
            "--count",
            "20",
        )
        relay.stop()
        relayed = await relay.result()
        assert exchange.violations == []
    assert relayed.code == 0, relayed.err
    assert "Traceback" not in relayed.err
    assert reader.code == 0, reader.err
    trades = [json.loads(line) for line in reader.out.splitlines()]
    # From the start of the stream, in order, one topic's payloads as the relay got them.
    assert [t["t"] for t in trades] == list(range(1, 21))
    assert {t["s"] for t in trades} == {"BBBUSDT"}


@pytest.mark.parametrize(
    "argv",
    [
        ["relay", "ws://127.0.0.1:9/stream", "--subject", "md.{s}", "--nats"],
        ["listen", "--subject", "md.>"],
    ],
    ids=["relay", "listen"],
)
def test_unreachable_nats_exits_1_with_one_line_without_secrets(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    port = dead_port()
    url = f"nats://relayuser:hunter2secret@127.0.0.1:{port}"
    code = main([*argv, url] if argv[0] == "relay" else [argv[0], url, *argv[1:]])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_clean_error_line(captured.err)
    assert f"could not connect to NATS at nats://***@127.0.0.1:{port}" in captured.err
    assert "hunter2secret" not in captured.err and "relayuser" not in captured.err


# ---------------------------------------------------------------------- exchange


async def test_exchange_fault_options_reach_the_client() -> None:
    server = Run("exchange", "--port", "0", "--refuse", "503", "--drop-after", "5")
    url = (await server.wait_err(r"every trade on (ws://127\.0\.0\.1:\d+/stream)")).group(1)
    assert "refuses the next handshakes with HTTP 503" in server.stderr
    assert "drops each connection after 5 trades" in server.stderr
    refused = await cli("listen", url)
    dropped = await cli("listen", url, "--count", "12", "--status-every", "0")
    server.stop()
    assert (await server.result()).code == 0
    assert refused.code == 1 and "HTTP 503" in refused.err
    assert dropped.code == 0, dropped.err
    assert len(dropped.out.splitlines()) == 12
    assert dropped.err.count("dropped: close code 1011 (DemoExchange drop_after)") >= 2


async def test_exchange_drops_every_connection_on_schedule() -> None:
    server = Run("exchange", "--port", "0", "--drop-every", "0.3", "--drop-code", "1012")
    url = (await server.wait_err(r"every trade on (ws://127\.0\.0\.1:\d+/stream)")).group(1)
    listener = Run("listen", url, "--status-every", "0")
    await listener.wait_err(r"dropped: close code 1012 \(demo fault\)")
    await listener.wait_err("reconnected to")
    listener.stop()
    server.stop()
    assert (await listener.result()).code == 0
    assert (await server.result()).code == 0


def test_exchange_on_a_taken_port_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code = main(["exchange", "--port", str(s.getsockname()[1])])
    assert code == 1
    assert_one_clean_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["listen", "ws://127.0.0.1:9/", "--bogus"], "unrecognized arguments"),
        (["listen", "ws://127.0.0.1:9/", "--filter", "novalue"], "has no '='"),
        (["listen", "ws://127.0.0.1:9/", "--filter", "=x"], "a key is empty"),
        (["listen", "ws://127.0.0.1:9/", "--filter", "s="], "'s' has an empty value"),
        (["listen", "http://127.0.0.1:9/"], "is not a websocket URL"),
        (["listen", "ws://127.0.0.1:70000/"], "Port out of range"),
        (["listen", "ws://[::1"], "Invalid IPv6 URL"),
        (["listen", "ws://[::1]:x/"], "is not a valid URL"),
        (["listen", "ws://127.0.0.1:9/feed?key=s3cret#tok3n"], "#fragment"),
        (["listen", "ws://:9/"], "has no host"),
        (["listen", "ws://127.0.0.1:0/"], "port 0"),
        (["listen", "ws://127.0.0.1:9/", "--send", "{not json"], "use --send-text"),
        (["listen", "ws://127.0.0.1:9/", "--count", "0"], "whole number >= 1"),
        (["listen", "ws://127.0.0.1:9/", "--cafile", "/no/such/ca.pem"], "no such file"),
        (["listen", "wss://127.0.0.1:9/", "--cafile", __file__], "no CA certificate"),
        (["listen", "ws://127.0.0.1:9/", "--insecure"], "--insecure is for wss://"),
        (["listen", "wss://h:9/", "--insecure", "--cafile", __file__], "no CA certificate"),
        (["listen", "ws://127.0.0.1:9/", "--status-every", "-1"], "seconds >= 0"),
        (["listen"], "required: URL"),
        (["demo", "--symbols", "BTCUSDT", "--filter", "s=SOLUSDT"], "trades only BTCUSDT"),
        (["demo", "--filter", "x=1"], "have no key 'x'"),
        (["demo", "--filter", "e=depth"], "every demo message is a trade"),
        (["demo", "--symbols", "b@d"], "expected a symbol"),
        (["demo", "--duration", "soon"], "seconds >= 0"),
        (["demo", "--rate", "0"], "messages per second"),
        (["demo", "--max-streams", "0"], "whole number >= 1"),
        (["listen", "ws://h:9/stream", "--max-streams", "2"], "give --topic too"),
        (["listen", "ws://h:9/stream", "--topic", "a b"], "without spaces"),
        (["listen", "ws://h:9/stream", "--topic", "a@trade", "--max-rate", "0"], "per second"),
        (["listen", "ws://h:9/stream", "--topic", "a@trade", "--raw"], "--raw prints"),
        (["listen", "ws://h:9/stream", "--topic", "a@trade", "--protocol", "okx"], "choice"),
        (["listen", "ws://h:9/ws/btcusdt@trade", "--topic", "a@trade"], "--topic:"),
        (["listen", "nats://127.0.0.1:4222"], "needs --subject"),
        (["listen", "nats://h:4222", "--subject", "md.>", "--deliver", "all"], "give --stream"),
        (
            ["listen", "nats://h:4222", "--subject", "x", "--stream", "A", "--deliver", "0"],
            "sequence number",
        ),
        (["listen", "nats://h:4222", "--subject", "x", "--topic", "a@trade"], "--topic is for"),
        (["listen", "ws://h:9/", "--subject", "md.>"], "--subject is for nats://"),
        (["listen", "nats://", "--subject", "md.>"], "is not a NATS URL"),
        (["relay", "ws://h:9/stream", "--subject", "md.{s}"], "required: --nats"),
        (["relay", "ws://h:9/stream", "--nats", "nats://h:4222"], "required: --subject"),
        (["relay", "ws://h:9/", "--nats", "http://h:4222", "--subject", "md"], "not a NATS URL"),
        (["relay", "ws://h:9/", "--nats", "nats://h", "--subject", "md.{"], "not a valid template"),
        (["relay", "ws://h:9/", "--nats", "nats://h", "--subject", "md.{}"], "must name"),
        (["relay", "ws://h:9/", "--nats", "nats://h", "--subject", "x", "--stream", "a.b"], "name"),
        (["relay", "http://h:9/", "--nats", "nats://h", "--subject", "x"], "not a websocket URL"),
        (
            ["relay", "ws://h:9/", "--nats", "nats://h", "--subject", "x", "--max-streams", "2"],
            "--topic",
        ),
        (["exchange", "--port", "70000"], "port from 0 to 65535"),
        (["exchange", "--refuse", "99"], "HTTP status"),
        (["exchange", "--drop-code", "1005"], "close code"),
        (["exchange", "--drop-after", "-1"], "whole number"),
        (["nosuchcommand"], "invalid choice"),
        ([], "required: COMMAND"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_bad_input_exits_2_with_one_line_before_anything_starts(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_clean_error_line(captured.err)
    assert says in captured.err
    assert "s3cret" not in captured.err and "tok3n" not in captured.err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["listen", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--filter", "--raw", "--send-text", "--cafile", "--insecure", "--timestamps"):
        assert option in text
    for option in ("--topic", "--protocol", "--max-streams", "--max-rate", "--subject"):
        assert option in text
    assert main(["relay", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--nats", "--subject", "--msg-id", "--stream", "--topic", "--buffer"):
        assert option in text
    assert main(["exchange", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--drop-every", "--drop-after", "--malformed-every", "--refuse"):
        assert option in text
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("rxws ")


# ---------------------------------------------------------------------- a real process


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(f"the CLI did not exit in time; stderr: {err.decode()!r}")
    assert proc.returncode is not None
    return proc.returncode, (out or b"").decode(), (err or b"").decode()


def test_the_program_exits_2_on_bad_input_and_prints_json_lines() -> None:
    bad = run_cli("listen", "ws://[::1")
    assert bad.returncode == 2 and bad.stdout == ""
    assert_one_clean_error_line(bad.stderr)
    good = run_cli("demo", "--count", "3")
    assert good.returncode == 0, good.stderr
    assert [json.loads(line)["e"] for line in good.stdout.splitlines()] == ["trade"] * 3


# Ctrl-C at these many seconds after the command's code started running: while it
# parses, while asyncio starts, while the exchange starts, while streaming.
SIGINT_DELAYS = [0.0, 0.005, 0.02, 0.05, 0.1, 0.3]

# The program, saying "main" once main() runs (from its first step, parsing).
STARTED = """
import sys, rxws.cli
build_parser = rxws.cli.build_parser
def started():
    print("main", file=sys.stderr, flush=True)
    return build_parser()
rxws.cli.build_parser = started
sys.exit(rxws.cli.main())
"""


async def _interrupt_demo(program: str, mark: bytes, delay: float) -> None:
    """Run ``program demo``; Ctrl-C ``delay`` s after it says ``mark``: 0, quietly."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        program,
        "demo",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    assert await asyncio.wait_for(proc.stderr.readline(), DEADLINE) == mark
    await asyncio.sleep(delay)
    proc.send_signal(signal.SIGINT)
    code, _, err = await finish(proc)
    assert code == 0, err
    for word in ("Traceback", "KeyboardInterrupt", "Task was destroyed", "never closed"):
        assert word not in err, err


@pytest.mark.parametrize("delay", SIGINT_DELAYS)
async def test_ctrl_c_at_any_moment_exits_0_without_a_traceback(delay: float) -> None:
    await _interrupt_demo(STARTED, b"main\n", delay)


# The program as the ``rxws`` command runs it (``from rxws._launch import main``, which
# imports nothing else: next test), saying "start" when main() begins to import the
# command line.
LAUNCHED = """
import sys
from rxws._launch import main

class Announce:
    def find_spec(self, name, path=None, target=None):
        if name == "rxws.cli":
            print("start", file=sys.stderr, flush=True)
        return None

sys.meta_path.insert(0, Announce())
sys.exit(main())
"""


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.06, 0.1, 0.15])
async def test_ctrl_c_while_the_command_line_is_still_loading_exits_0_quietly(
    delay: float,
) -> None:
    """Ctrl-C in the first 0.2 s: while Python imports rxws, websockets and reactivex."""
    await _interrupt_demo(LAUNCHED, b"start\n", delay)


def test_importing_rxws_imports_none_of_its_layers() -> None:
    """The ``rxws`` command's first step imports nothing that takes long."""
    probe = (
        "import sys, rxws._launch; "
        "print(sorted(m for m in sys.modules "
        "if m.startswith(('rxws.', 'websockets', 'reactivex'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=DEADLINE, check=True
    ).stdout
    assert out.strip() == "['rxws._launch', 'rxws._version']"


async def test_exchange_serves_listen_across_processes() -> None:
    server = await asyncio.create_subprocess_exec(
        *CLI,
        "exchange",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert server.stderr is not None
    try:
        line = (await asyncio.wait_for(server.stderr.readline(), DEADLINE)).decode()
        url = line.split(" on ", 1)[1].split()[0]
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/stream")
        listener = await asyncio.create_subprocess_exec(
            *CLI,
            "listen",
            url,
            "--count",
            "3",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        code, out, err = await finish(listener)
        assert code == 0, err
        assert [json.loads(x)["e"] for x in out.splitlines()] == ["trade"] * 3
    finally:
        server.send_signal(signal.SIGINT)
        code, _, err = await finish(server)
    assert code == 0
    assert "Traceback" not in err


async def read_until(fd: int, needle: bytes, timeout: float = DEADLINE) -> bytes:
    """Read ``fd`` (non-blocking, through the loop) until ``needle`` shows or it ends."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    seen = b""
    deadline = loop.time() + timeout
    try:
        while needle not in seen and loop.time() < deadline:
            try:
                await asyncio.wait_for(ready.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
            ready.clear()
            try:
                seen += os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:  # EIO: the other end is closed
                break
    finally:
        loop.remove_reader(fd)
    return seen


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
async def test_listen_on_a_terminal_draws_the_status_line() -> None:
    """``rxws listen`` against ``rxws exchange``, its stderr a pseudo-terminal."""
    pytest.importorskip("rich")
    async with DemoExchange(interval=0.01) as exchange:
        primary, secondary = os.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                *CLI,
                "listen",
                exchange.url,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=secondary,
                env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"},
            )
            os.close(secondary)
            seen = await read_until(primary, b"msg/s")
            proc.send_signal(signal.SIGINT)
            code, _, _ = await finish(proc)
        finally:
            os.close(primary)
    text = seen.decode("utf-8", "replace")
    assert code == 0
    assert "connected to ws://127.0.0.1:" in text
    assert re.search(r"connected \| \d+ msg/s \| \d+ messages \| 0 reconnects \| 0 rotations", text)
