"""The ``rxws`` command line, run for real as ``python -m rxws`` in a subprocess."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from rxws import matches
from rxws.cli import build_parser, parse_filter
from rxws.testing import DemoExchange

CLI = [sys.executable, "-m", "rxws"]
DEADLINE = 15.0  # seconds; a passing run takes well under a second or two


def run_cli(*args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, bytes, bytes]:
    """Wait for the process to exit on its own (kill it after the deadline)."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(f"the CLI did not exit in time; stderr: {err.decode()!r}")
    assert proc.returncode is not None
    return proc.returncode, out, err


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


# ---------------------------------------------------------------------- a scripted server

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


# ---------------------------------------------------------------------- parse_filter


def test_parse_filter_reads_json_values_else_strings() -> None:
    assert parse_filter("s=S1,e=trade") == {"s": "S1", "e": "trade"}
    assert parse_filter("i=2") == {"i": 2}
    assert parse_filter("ok=true,none=null,x=1.5") == {"ok": True, "none": None, "x": 1.5}
    assert parse_filter('s="2"') == {"s": "2"}
    assert parse_filter("s=") == {"s": ""}
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


def test_demo_count_prints_that_many_json_lines() -> None:
    result = run_cli("demo", "--count", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    trades = [json.loads(line) for line in lines]
    assert all(t["e"] == "trade" and t["s"] in ("BTCUSDT", "ETHUSDT") for t in trades)
    seqs = [t["seq"] for t in trades]
    assert seqs == sorted(set(seqs))
    assert "Traceback" not in result.stderr
    assert "connected to ws://127.0.0.1:" in result.stderr


def test_demo_filter_and_symbols() -> None:
    result = run_cli("demo", "--symbols", "solusdt", "--filter", "s=SOLUSDT", "--count", "3")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["s"] for line in result.stdout.splitlines()] == ["SOLUSDT"] * 3


async def test_demo_runs_until_ctrl_c_and_exits_cleanly() -> None:
    proc = await start_cli("demo")
    assert proc.stdout is not None
    try:
        for _ in range(5):
            line = await asyncio.wait_for(proc.stdout.readline(), DEADLINE)
            assert json.loads(line)["e"] == "trade"
    finally:
        proc.send_signal(signal.SIGINT)
    code, _, err = await finish(proc)
    stderr = err.decode()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "Task was destroyed" not in stderr
    assert "never closed" not in stderr


# ---------------------------------------------------------------------- listen


async def test_listen_prints_exactly_the_matching_messages_in_order(transport: str) -> None:
    async with scripted_server(send_frames_then_wait) as url:
        proc = await start_cli(
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
        code, out, err = await finish(proc)
    assert code == 0, err.decode()
    assert [json.loads(line) for line in out.decode().splitlines()] == [
        FRAMES[0],
        FRAMES[1],
        FRAMES[6],
        FRAMES[8],
    ]
    assert out.endswith(b"\n")
    assert "Traceback" not in err.decode()


async def test_listen_prints_text_frames_that_are_not_json_as_json_strings() -> None:
    async with scripted_server(send_frames_then_wait) as url:
        code, out, err = await finish(await start_cli("listen", url, "--count", "6"))
    assert code == 0, err.decode()
    assert [json.loads(line) for line in out.decode().splitlines()] == FRAMES[:6]


async def test_listen_raw_prints_frames_as_received() -> None:
    frames: list[str | bytes] = ['{"a":   1}', "plain text", b"\x00\x01binary", '{"b": 2}']

    async def handler(ws: ServerConnection) -> None:
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    async with scripted_server(handler) as url:
        code, out, err = await finish(await start_cli("listen", url, "--raw", "--count", "3"))
    assert code == 0, err.decode()
    assert out == b'{"a":   1}\nplain text\n\x00\x01binary\n'


async def test_listen_raw_with_filter_matches_parsed_frames_and_prints_them_raw() -> None:
    frames = ['{"s": "S1",  "i": 1}', '{"s": "S2", "i": 2}', "text", '{"i": 3,  "s": "S1"}']

    async def handler(ws: ServerConnection) -> None:
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    async with scripted_server(handler) as url:
        proc = await start_cli("listen", url, "--raw", "--filter", "s=S1", "--count", "2")
        code, out, err = await finish(proc)
    assert code == 0, err.decode()
    assert out.decode() == f"{frames[0]}\n{frames[3]}\n"


async def test_listen_sends_on_every_connection_and_reconnects_after_a_drop() -> None:
    received: list[list[str]] = []

    async def handler(ws: ServerConnection) -> None:
        got = [str(await ws.recv()), str(await ws.recv())]
        received.append(got)
        if len(received) == 1:
            await ws.close(1011, "test drop")  # after the first connection: reconnect
            return
        await ws.send(json.dumps({"n": len(received)}))
        await ws.wait_closed()

    sub = '{"method": "SUBSCRIBE", "params": ["s1@trade"], "id": 1}'
    async with scripted_server(handler) as url:
        proc = await start_cli("listen", url, "--send", sub, "--send", '"ping"', "--count", "1")
        code, out, err = await finish(proc)
    stderr = err.decode()
    assert code == 0, stderr
    assert received == [[sub, '"ping"'], [sub, '"ping"']]  # sent verbatim, in order
    assert json.loads(out) == {"n": 2}
    assert "dropped: close code 1011 (test drop)" in stderr
    assert "use rxws.ops.reconnect" not in stderr
    assert "retrying in" in stderr
    assert "Traceback" not in stderr


async def test_listen_reconnects_to_the_demo_exchange_after_it_drops() -> None:
    async with DemoExchange(interval=0.01) as exchange:
        proc = await start_cli("listen", exchange.url, "--filter", "e=trade", "--count", "30")
        await exchange.wait_for(lambda: exchange.accepted >= 1)
        await exchange.drop_all(1011, "maintenance")
        code, out, err = await finish(proc)
        stderr = err.decode()
        assert code == 0, stderr
        assert len(out.splitlines()) == 30
        assert exchange.accepted >= 2
        assert "dropped: close code 1011 (maintenance)" in stderr


async def test_listen_replaces_a_silent_connection_with_idle_timeout() -> None:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.send(json.dumps({"n": connections}))
        await ws.wait_closed()  # then silence

    async with scripted_server(handler) as url:
        proc = await start_cli("listen", url, "--idle-timeout", "0.3", "--count", "2")
        code, out, err = await finish(proc)
    stderr = err.decode()
    assert code == 0, stderr
    assert [json.loads(line) for line in out.splitlines()] == [{"n": 1}, {"n": 2}]
    assert "dropped: no message for 0.3 s (idle timeout)" in stderr


async def test_listen_rotate_every_replaces_the_connection() -> None:
    async with DemoExchange(interval=0.005) as exchange:
        proc = await start_cli("listen", exchange.url, "--rotate-every", "0.2", "--count", "100")
        code, out, err = await finish(proc)
        assert exchange.accepted >= 2
    stderr = err.decode()
    assert code == 0, stderr
    assert len(out.splitlines()) == 100
    assert "rotated: a new connection took over" in stderr
    assert "dropped" not in stderr and "disconnected" not in stderr


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
        code, out, err = await finish(await start_cli("listen", url, "--count", "2"))
    stderr = err.decode()
    assert code == 0, stderr
    assert [json.loads(line) for line in out.splitlines()] == [{"n": 1}, {"n": 2}]
    assert "disconnected: closed normally by the server" in stderr


@pytest.mark.parametrize("status", [503, 401])
async def test_listen_exits_when_the_first_handshake_is_refused(status: int) -> None:
    async with DemoExchange() as exchange:
        exchange.refuse(*[status] * 50)  # a retrying client would see them all
        code, out, err = await finish(await start_cli("listen", exchange.url + "?key=s3cret"))
        assert exchange.handshakes <= 2  # it gave up instead of retrying
    stderr = err.decode()
    assert code == 1
    assert out == b""
    assert_one_clean_error_line(stderr)
    assert f"HTTP {status}" in stderr
    assert "s3cret" not in stderr


async def test_listen_exits_when_the_host_cannot_be_reached() -> None:
    url = f"ws://127.0.0.1:{closed_port()}/"
    code, out, err = await finish(await start_cli("listen", url))
    assert code == 1
    assert out == b""
    assert_one_clean_error_line(err.decode())
    assert "could not connect to ws://127.0.0.1:" in err.decode()


# ---------------------------------------------------------------------- exchange


async def test_exchange_serves_listen() -> None:
    server = await start_cli("exchange", "--port", "0")
    assert server.stderr is not None
    try:
        line = (await asyncio.wait_for(server.stderr.readline(), DEADLINE)).decode()
        url = line.split(" on ", 1)[1].split()[0]
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/stream")
        code, out, err = await finish(await start_cli("listen", url, "--count", "3"))
        assert code == 0, err.decode()
        assert [json.loads(x)["e"] for x in out.splitlines()] == ["trade"] * 3
    finally:
        server.send_signal(signal.SIGINT)
        code, _, err = await finish(server)
    assert code == 0
    assert "Traceback" not in err.decode()


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args",
    [
        ["listen", "ws://127.0.0.1:9/", "--bogus"],
        ["listen", "ws://127.0.0.1:9/", "--filter", "novalue"],
        ["listen", "ws://127.0.0.1:9/", "--filter", "=x"],
        ["listen", "http://127.0.0.1:9/"],
        ["listen", "ws://127.0.0.1:9/", "--send", "{not json"],
        ["listen", "ws://127.0.0.1:9/", "--count", "0"],
        ["listen"],
        ["exchange", "--port", "70000"],
        ["nosuchcommand"],
        [],
    ],
    ids=lambda args: " ".join(args) or "no-args",
)
def test_bad_input_exits_2_with_one_line(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_clean_error_line(result.stderr)


def test_exchange_on_a_taken_port_exits_1_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        result = run_cli("exchange", "--port", str(s.getsockname()[1]))
    assert result.returncode == 1
    assert_one_clean_error_line(result.stderr)


def test_help_and_version() -> None:
    result = run_cli("listen", "--help")
    assert result.returncode == 0
    assert "--filter" in result.stdout and "--raw" in result.stdout
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("rxws ")
