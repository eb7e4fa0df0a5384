"""The picows transport's own parts, and the protocol rules both transports must keep.

Most tests here run on each transport against :class:`RawServer`, a loopback websocket
server that writes hand-made frames (reserved bits, interleaved fragments, bad close
codes) and records every frame the client sends back, so each rule is checked on the
wire as well as in what the Observable delivers. websockets is the reference: picows
must give the same result.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets.asyncio.messages as websockets_messages
from websockets.asyncio.server import ServerConnection, serve

import rxws
from rxws._redact import Redactor
from rxws.testing import DemoExchange, Recorder
from rxws.transports import picows as _picows

needs_picows = pytest.mark.skipif(_picows._picows is None, reason="picows is not installed")

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """One unmasked (server to client) frame; ``rsv`` is the 3 reserved bits, 0-7."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([size])
    elif size < 2**16:
        head += bytes([126]) + size.to_bytes(2, "big")
    else:
        head += bytes([127]) + size.to_bytes(8, "big")
    return head + payload


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A close frame; ``code=None`` sends one without a status code."""
    return frame(CLOSE, b"" if code is None else code.to_bytes(2, "big") + reason.encode())


class RawServer:
    """A websocket server on 127.0.0.1 that sends ``script`` (raw bytes) after the handshake.

    The whole script goes out in one write, so its frames reach the client together.
    Every frame the client sends is recorded in :attr:`received`; a client's close
    frame is answered (unless ``echo_close`` is false) and the TCP connection closed.

    Args:
        script: The frames to send after the handshake.
        subprotocol: The ``Sec-WebSocket-Protocol`` value of the response, if any.
        echo_close: Whether to answer the client's close frame.
        pong_delay: Seconds to wait before answering a ping (None: never answer).
    """

    def __init__(
        self,
        script: Iterable[bytes] = (),
        *,
        subprotocol: str | None = None,
        echo_close: bool = True,
        pong_delay: float | None = 0.0,
    ) -> None:
        self.script = b"".join(script)
        self.subprotocol = subprotocol
        self.echo_close = echo_close
        self.pong_delay = pong_delay
        self.received: list[tuple[int, bytes]] = []
        self.requests: list[dict[str, str]] = []
        self.ended = 0
        self.seen = Recorder()  # notified at each change, for wait_until
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    def opcodes(self) -> list[int]:
        """The opcode of each frame the client sent."""
        return [opcode for opcode, _ in self.received]

    def close_codes(self) -> list[int | None]:
        """The code of each close frame the client sent (None: without a code)."""
        return [
            int.from_bytes(data[:2], "big") if data else None
            for opcode, data in self.received
            if opcode == CLOSE
        ]

    async def wait_until(self, predicate: Any, timeout: float = 5.0) -> None:
        await self.seen.wait_until(predicate, timeout)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._talk(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)
            self.ended += 1
            self.seen.notify()

    async def _talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readuntil(b"\r\n\r\n")).decode()
        headers = {}
        for line in request.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if value:
                headers[name.strip().lower()] = value.strip()
        self.requests.append(headers)
        key = headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        response = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
        )
        if self.subprotocol is not None:
            response += f"Sec-WebSocket-Protocol: {self.subprotocol}\r\n"
        writer.write(response.encode() + b"\r\n" + self.script)
        while True:
            head = await reader.readexactly(2)
            opcode, size = head[0] & 0x0F, head[1] & 0x7F
            if size == 126:
                size = int.from_bytes(await reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await reader.readexactly(8), "big")
            mask = await reader.readexactly(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(size)))
            self.received.append((opcode, data))
            self.seen.notify()
            if opcode == PING and self.pong_delay is not None:
                await asyncio.sleep(self.pong_delay)
                writer.write(frame(PONG, data))
            if opcode == CLOSE:
                if self.echo_close:
                    writer.write(frame(CLOSE, data))
                return


async def outcome(server: RawServer, transport: str, **options: Any) -> Recorder:
    """Connect with ``transport``, record what the Observable does until it ends."""
    rec = Recorder()
    sub = rxws.connect(server.url, parse=None, transport=transport, **options).subscribe(rec)
    try:
        await rec.wait_done()
        await server.wait_until(lambda: server.ended >= 1)
    finally:
        sub.dispose()
    return rec


def assert_failed_with(rec: Recorder, server: RawServer, code: int) -> None:
    """The connection ended with ``ConnectionLost(code)`` and a close frame with ``code``."""
    assert isinstance(rec.error, rxws.ConnectionLost), rec.error
    assert rec.error.code == code, rec.error
    assert server.close_codes() == [code]


# ---------------------------------------------------------------------- fragments


@asynccontextmanager
async def fragmenting_server() -> AsyncIterator[str]:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(['{"part": ', '1, "of": ', "3}"])  # one text message, 3 frames
        await ws.send([b"\x00\x01", b"\x02"])  # one binary message, 2 frames
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


async def test_fragmented_messages_arrive_whole(transport: str) -> None:
    async with fragmenting_server() as url:
        rec = Recorder()
        sub = rxws.connect(url, parse=None, transport=transport).subscribe(rec)
        await rec.wait_for_count(2)
        sub.dispose()
    assert rec.items == ['{"part": 1, "of": 3}', b"\x00\x01\x02"]


async def test_fragments_with_control_frames_between_them_arrive_whole(transport: str) -> None:
    script = [
        frame(TEXT, "é".encode()[:1], fin=False),  # a character split between frames
        frame(PING, b"p"),
        frame(CONT, "é".encode()[1:] + b"!", fin=False),
        frame(CONT, b"", fin=False),
        frame(CONT, b"?"),
        close_frame(1000),
    ]
    async with RawServer(script) as server:
        rec = await outcome(server, transport)
    assert rec.items == ["é!?"] and rec.completed
    assert server.opcodes() == [PONG, CLOSE]


@pytest.mark.parametrize(
    "script",
    [
        [frame(TEXT, b"a", fin=False), frame(TEXT, b"b")],
        [frame(TEXT, b"a", fin=False), frame(BINARY, b"b"), frame(CONT, b"c")],
        [frame(BINARY, b"a", fin=False), frame(TEXT, b"b", fin=False), frame(CONT, b"c")],
        [frame(CONT, b"x")],
    ],
    ids=["text-in-text", "binary-in-text", "text-in-binary", "continuation-first"],
)
async def test_a_new_message_inside_a_fragmented_one_fails_with_1002(
    transport: str, script: list[bytes]
) -> None:
    async with RawServer([frame(TEXT, b"before"), *script, frame(TEXT, b"after")]) as server:
        rec = await outcome(server, transport)
    assert rec.items == ["before"]  # nothing of the broken message, nothing after it
    assert_failed_with(rec, server, 1002)


async def test_fragments_over_max_size_fail_with_1009(transport: str) -> None:
    parts = [frame(TEXT, b"x" * 400, fin=False), frame(CONT, b"x" * 400, fin=False)]
    script = [*parts, frame(CONT, b"x" * 400), frame(TEXT, b"after")]
    async with RawServer(script) as server:
        rec = await outcome(server, transport, max_size=1000)
    assert rec.items == []
    assert_failed_with(rec, server, 1009)


def fragments(count: int, piece: bytes = b"") -> list[bytes]:
    """One text message in ``count`` frames of ``piece`` each."""
    return [frame(TEXT if n == 0 else CONT, piece, fin=n == count - 1) for n in range(count)]


async def test_a_message_in_too_many_fragments_fails_with_1009(transport: str) -> None:
    if transport == "websockets" and not hasattr(websockets_messages, "MAX_FRAGMENTS"):
        pytest.skip("websockets before 17 (the last for Python 3.10) limits no fragment count")
    # websockets' own limit (its default, or WEBSOCKETS_MAX_FRAGMENTS).
    limit = _picows.MAX_FRAGMENTS
    script = [*fragments(limit, b"a"), *fragments(limit + 1, b"b"), frame(TEXT, b"after")]
    async with RawServer(script) as server:
        rec = await outcome(server, transport)
    assert rec.items == ["a" * limit]
    assert_failed_with(rec, server, 1009)


@needs_picows
async def test_reassembly_takes_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    count = 100_000  # quadratic reassembly would take minutes
    monkeypatch.setattr(_picows, "MAX_FRAGMENTS", count, raising=False)
    async with RawServer([*fragments(count, b"z"), close_frame(1000)]) as server:
        started = time.monotonic()
        rec = await outcome(server, "picows")
        took = time.monotonic() - started
    assert rec.items == ["z" * count] and rec.completed
    assert took < 10, took


@needs_picows
def test_the_listener_keeps_its_state_in_slots() -> None:
    # An instance __dict__ on a subclass of picows's Cython listener makes every
    # attribute read on the per-frame path take the interpreter's slow, generic lookup.
    listener = _picows._Listener(None, 10.0, None, None)
    assert not hasattr(listener, "__dict__")
    with pytest.raises(AttributeError):
        listener.unknown = 1  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- reserved bits


@pytest.mark.parametrize(
    ("opcode", "rsv"),
    [(TEXT, 4), (BINARY, 2), (TEXT, 1), (PING, 6), (CLOSE, 7)],
    ids=["text-rsv1", "binary-rsv2", "text-rsv3", "ping", "close"],
)
async def test_reserved_bits_fail_the_connection_with_1002(
    transport: str, opcode: int, rsv: int
) -> None:
    payload = (1000).to_bytes(2, "big") if opcode == CLOSE else b"bad"
    script = [frame(TEXT, b"before"), frame(opcode, payload, rsv=rsv), frame(TEXT, b"after")]
    async with RawServer(script) as server:
        rec = await outcome(server, transport)
    assert rec.items == ["before"]
    assert PONG not in server.opcodes()  # the bad ping was not answered
    assert_failed_with(rec, server, 1002)


# ---------------------------------------------------------------------- close frames


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
async def test_invalid_close_codes_are_answered_with_1002(transport: str, code: int) -> None:
    script = [frame(TEXT, b"before"), close_frame(code, "bye"), frame(TEXT, b"after")]
    async with RawServer(script) as server:
        rec = await outcome(server, transport)
    assert rec.items == ["before"]  # and nothing after the bad close frame
    assert_failed_with(rec, server, 1002)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 1014, 3000, 4999])
async def test_valid_close_codes_are_echoed(transport: str, code: int) -> None:
    async with RawServer([close_frame(code, "see you")], echo_close=False) as server:
        rec = await outcome(server, transport)
    assert server.close_codes() == [code]
    if code in (1000, 1001):
        assert rec.completed and rec.error is None
    else:
        assert isinstance(rec.error, rxws.ConnectionLost)
        assert (rec.error.code, rec.error.reason) == (code, "see you")


async def test_a_close_frame_without_a_status_code_is_a_normal_close(transport: str) -> None:
    # tornado's and Node ws's close() send such a frame.
    async with RawServer([frame(TEXT, b"hi"), close_frame(None)], echo_close=False) as server:
        rec = await outcome(server, transport)
    assert rec.items == ["hi"]
    assert rec.completed and rec.error is None
    assert server.close_codes() in ([None], [1000])  # an echo, or a plain normal close


async def test_two_close_frames_are_one_normal_close(transport: str) -> None:
    script = [frame(TEXT, b"hi"), close_frame(1000), close_frame(None)]
    async with RawServer(script, echo_close=False) as server:
        rec = await outcome(server, transport)
    assert rec.items == ["hi"]
    assert rec.completed and rec.error is None


async def test_two_close_frames_get_one_normal_close_answer(transport: str) -> None:
    if transport == "picows":
        pytest.xfail(
            "picows parses the next frame before it hands over the current one and "
            "answers a second close frame with 1002 itself (Autobahn case 7.1.2)"
        )
    script = [close_frame(1000), close_frame(None)]
    async with RawServer(script, echo_close=False) as server:
        await outcome(server, transport)
    assert server.close_codes() == [1000]


# ---------------------------------------------------------------------- keepalive


@pytest.mark.parametrize(
    "keepalive",
    [
        {"ping_interval": 5},
        {"ping_interval": 10, "ping_timeout": 30},
        {"ping_timeout": None},
        {"ping_interval": None},
        {"ping_interval": 0.5, "ping_timeout": 0.5},
    ],
    ids=repr,
)
async def test_every_keepalive_setting_works(transport: str, keepalive: dict[str, Any]) -> None:
    async with DemoExchange(interval=0.02) as exchange:
        rec = Recorder()
        sub = rxws.connect(exchange.url, transport=transport, **keepalive).subscribe(rec)
        await rec.wait_for_count(3)
        sub.dispose()
    assert rec.error is None, rec.error
    assert len(rec.items) >= 3


async def test_a_pong_later_than_the_interval_but_within_the_timeout_is_fine(
    transport: str,
) -> None:
    # websockets waits ping_timeout for each pong, then sends the next ping.
    async with RawServer(pong_delay=0.15) as server:
        rec = Recorder()
        source = rxws.connect(server.url, transport=transport, ping_interval=0.05, ping_timeout=1)
        sub = source.subscribe(rec)
        await server.wait_until(lambda: server.opcodes().count(PING) >= 4)
        sub.dispose()
    assert not rec.done


async def test_an_unanswered_ping_fails_the_connection_with_1011(transport: str) -> None:
    async with RawServer(pong_delay=None) as server:
        rec = await outcome(
            server, transport, ping_interval=0.05, ping_timeout=0.2, close_timeout=1
        )
    assert isinstance(rec.error, rxws.ConnectionLost)
    assert rec.error.code == 1011 and "keepalive ping timeout" in str(rec.error)
    assert server.close_codes() == [1011]


async def test_without_a_ping_timeout_unanswered_pings_are_fine(transport: str) -> None:
    async with RawServer(pong_delay=None) as server:
        rec = Recorder()
        source = rxws.connect(
            server.url, transport=transport, ping_interval=0.05, ping_timeout=None
        )
        sub = source.subscribe(rec)
        await server.wait_until(lambda: server.opcodes().count(PING) >= 4)
        sub.dispose()
    assert not rec.done


# ---------------------------------------------------------------------- subprotocols


async def test_subprotocols_are_offered_and_the_choice_is_exposed(transport: str) -> None:
    chosen: list[str | None] = []

    async def on_open(connection: Any) -> None:
        chosen.append(connection.subprotocol)

    async with RawServer([close_frame(1000)], subprotocol="v2", echo_close=False) as server:
        rec = await outcome(server, transport, subprotocols=["v1", "v2"], on_open=on_open)
    assert rec.completed
    assert server.requests[0]["sec-websocket-protocol"] == "v1, v2"
    assert chosen == ["v2"]


async def test_a_server_that_picks_no_subprotocol_leaves_it_none(transport: str) -> None:
    chosen: list[str | None] = []

    async def on_open(connection: Any) -> None:
        chosen.append(connection.subprotocol)

    async with RawServer([close_frame(1000)], echo_close=False) as server:
        rec = await outcome(server, transport, subprotocols=["v1"], on_open=on_open)
    assert rec.completed and chosen == [None]


@pytest.mark.parametrize(
    ("offered", "answer", "complaint"),
    [
        (["v1", "v2"], "v3", "unsupported subprotocol: v3"),
        (["v1", "v2"], "v1, v2", "multiple values: v1, v2"),
        (None, "v1", "no subprotocols supported"),
    ],
    ids=["not-offered", "several", "none-offered"],
)
async def test_a_subprotocol_choice_that_does_not_fit_fails_the_handshake(
    transport: str, offered: list[str] | None, answer: str, complaint: str
) -> None:
    options: dict[str, Any] = {} if offered is None else {"subprotocols": offered}
    async with RawServer([frame(TEXT, b"no")], subprotocol=answer) as server:
        rec = await outcome(server, transport, **options)
    assert rec.items == []
    assert type(rec.error) is rxws.ConnectionFailed, rec.error
    assert complaint in str(rec.error)


@needs_picows
@pytest.mark.parametrize(
    ("value", "error"), [("v1", TypeError), (["bad name"], ValueError), ([1], ValueError)]
)
def test_bad_subprotocols_are_refused_when_connect_is_called(
    value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="subprotocol"):
        rxws.connect("ws://127.0.0.1:1/", transport="picows", subprotocols=value)


# ---------------------------------------------------------------------- options


@needs_picows
def test_websockets_only_options_are_refused_when_connect_is_called() -> None:
    with pytest.raises(ValueError, match="compression, origin") as info:
        rxws.connect("ws://127.0.0.1:1/", transport="picows", compression="deflate", origin="x")
    assert "transport='websockets'" in str(info.value)


@needs_picows
def test_options_are_translated() -> None:
    options = {
        "additional_headers": {"X-Key": "v"},
        "max_size": 1234,
        "ping_interval": 5,
        "ping_timeout": 30,
        "open_timeout": 3,
        "compression": None,
    }
    out = _picows.picows_options(options, Redactor())
    assert out["extra_headers"] == {"X-Key": "v"}
    assert out["max_frame_size"] == 1234
    assert out["websocket_handshake_timeout"] == 3
    # rxws answers pings (after checking them) and sends its own, as websockets does.
    assert out["enable_auto_pong"] is False
    assert "enable_auto_ping" not in out
    assert _picows._keepalive(options) == (5, 30)
    assert _picows._keepalive({}) == (20, 20)
    assert _picows._keepalive({"ping_timeout": None}) == (20, None)
    assert _picows._keepalive({"ping_interval": None}) is None


def test_without_picows_asking_for_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_picows, "_picows", None)
    with pytest.raises(rxws.TransportUnavailable, match=r"pip install 'rxws\[picows\]'"):
        rxws.connect("ws://127.0.0.1:1/", transport="picows")
    with pytest.raises(rxws.TransportUnavailable):
        rxws.WebSocketClient("ws://127.0.0.1:1/", transport="picows")
    rxws.connect("ws://127.0.0.1:1/")  # the default transport is unaffected


def test_the_cli_says_in_one_line_how_to_install_picows(tmp_path: Path) -> None:
    # A stand-in package that fails to import, as when picows is not installed.
    (tmp_path / "picows.py").write_text("raise ImportError('no picows here')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-m", "rxws", "listen", "ws://127.0.0.1:1/", "--transport", "picows"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert "pip install 'rxws[picows]'" in result.stderr
    assert "Traceback" not in result.stderr
