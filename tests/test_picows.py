"""The picows transport's own parts: option translation, fragments, and its absence."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

import rxws
from rxws import _picows
from rxws._redact import Redactor
from rxws.testing import Recorder

needs_picows = pytest.mark.skipif(_picows._picows is None, reason="picows is not installed")


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


@needs_picows
def test_websockets_only_options_are_refused_when_connect_is_called() -> None:
    with pytest.raises(ValueError, match="compression, subprotocols") as info:
        rxws.connect(
            "ws://127.0.0.1:1/", transport="picows", compression="deflate", subprotocols=["x"]
        )
    assert "transport='websockets'" in str(info.value)


@needs_picows
def test_options_are_translated() -> None:
    out = _picows.picows_options(
        {
            "additional_headers": {"X-Key": "v"},
            "max_size": 1234,
            "ping_interval": 5,
            "ping_timeout": 2,
            "open_timeout": 3,
            "compression": None,
        },
        Redactor(),
    )
    assert out["extra_headers"] == {"X-Key": "v"}
    assert out["max_frame_size"] == 1234
    assert (out["enable_auto_ping"], out["auto_ping_idle_timeout"]) == (True, 5)
    assert out["auto_ping_reply_timeout"] == 2
    assert out["websocket_handshake_timeout"] == 3
    assert "enable_auto_ping" not in _picows.picows_options({"ping_interval": None}, Redactor())


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
