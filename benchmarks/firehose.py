"""A minimal websocket server for benchmarks: the client is meant to be the bottleneck.

It does the opening handshake by hand on a raw asyncio ``Protocol`` and then writes
pre-framed text frames straight to the transport, in large slices, as fast as the
socket takes them. It answers ping with pong and close with close, and after the last
message it closes with 1000 (normal closure).

What a connection gets is chosen by the request path's query string:

- ``/?n=N&k=K`` (firehose): ``N`` trade messages whose symbol cycles over ``K``
  distinct values (``SYM0`` ... ``SYM{K-1}``), then a 1000 close. The frames for each
  ``(N, K)`` are built once and reused by every later connection asking for the same.
- ``/?paced=R&n=N&k=K`` (paced): ``N`` messages at ``R`` messages a second, each stamped
  with ``ts``, the ``time.perf_counter_ns()`` value at the moment it is written (on
  Linux ``perf_counter`` reads ``CLOCK_MONOTONIC``, one clock for every process of the
  machine, so the client can subtract it from its own reading), then a 1000 close.
- ``/?idle=1``: no messages; the connection stays open until the client closes it.

A message looks like ``{"e":"trade","s":"SYM12","seq":7,"p":"101.25","q":"0.500"}``.

Run ``python benchmarks/firehose.py [--port P] [--watch-stdin]``: it prints
``PORT <number>`` on stdout once it listens, and serves until it is terminated (or,
with ``--watch-stdin``, until its stdin is closed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import signal
import sys
import time
from collections import OrderedDict
from urllib.parse import parse_qs, urlsplit

__all__ = ["frame_text", "make_payloads", "prebuilt", "serve"]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_1000 = b"\x88\x02\x03\xe8"
SLICE = 256 * 1024  # bytes handed to the transport per write
CACHE_SLOTS = 16  # (n, k) frame sets kept in memory


def frame_text(payload: bytes) -> bytes:
    """One unmasked, final text frame (server to client) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def make_payloads(n: int, k: int) -> list[bytes]:
    """The ``n`` trade messages of a firehose run, symbols cycling over ``k`` values."""
    template = b'{"e":"trade","s":"SYM%d","seq":%d,"p":"%d.%02d","q":"0.%03d"}'
    return [template % (i % k, i, 100 + i % 7, i % 100, 1 + i % 997) for i in range(n)]


def prebuilt(n: int, k: int) -> bytes:
    """All frames of a firehose run, back to back."""
    return b"".join([frame_text(p) for p in make_payloads(n, k)])


class _Frames:
    """A small LRU of prebuilt firehose frame blobs, keyed by ``(n, k)``."""

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    def get(self, n: int, k: int) -> bytes:
        key = (n, k)
        blob = self._cache.get(key)
        if blob is None:
            blob = prebuilt(n, k)
            self._cache[key] = blob
            while len(self._cache) > CACHE_SLOTS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return blob


FRAMES = _Frames()


def _accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


class FirehoseProtocol(asyncio.Protocol):
    """One server-side websocket connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.close_sent = False
        self.closed = asyncio.get_running_loop().create_future()
        self.writable: asyncio.Future[None] | None = None
        self.peer_closed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=4 * SLICE, low=SLICE)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.peer_closed.set()
        self._wake()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake()

    def _wake(self) -> None:
        waiter, self.writable = self.writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            self._handshake(head)
            if not self.upgraded:
                return
        self._read_frames()

    # ---------------------------------------------------------------- handshake

    def _handshake(self, head: str) -> None:
        assert self.transport is not None
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key")
        if len(parts) < 2 or key is None:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return
        query = {name: values[-1] for name, values in parse_qs(urlsplit(parts[1]).query).items()}
        if "idle" not in query and "paced" not in query:
            # Build (or find) the frames before answering, so that the first frame
            # follows the handshake at once.
            FRAMES.get(int(query.get("n", "0")), max(int(query.get("k", "1")), 1))
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + _accept(key.encode()) + b"\r\n\r\n"
        )
        self.upgraded = True
        self.task = asyncio.get_running_loop().create_task(self._serve(query))

    # ---------------------------------------------------------------- incoming frames

    def _read_frames(self) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            masked = buf[1] & 0x80
            size = buf[1] & 0x7F
            pos = 2
            if size == 126:
                if len(buf) < 4:
                    return
                size = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif size == 127:
                if len(buf) < 10:
                    return
                size = int.from_bytes(buf[2:10], "big")
                pos = 10
            mask = b""
            if masked:
                if len(buf) < pos + 4:
                    return
                mask = bytes(buf[pos : pos + 4])
                pos += 4
            if len(buf) < pos + size:
                return
            payload = bytes(buf[pos : pos + size])
            del buf[: pos + size]
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            self._on_frame(opcode, payload)

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if opcode == 0x9:  # ping -> pong with the same payload
            transport.write(bytes((0x8A, len(payload))) + payload)
        elif opcode == 0x8:  # close -> echo the code, then close the TCP connection
            if not self.close_sent:
                self.close_sent = True
                code = payload[:2] if len(payload) >= 2 else b"\x03\xe8"
                transport.write(b"\x88\x02" + code)
            self.peer_closed.set()
            transport.close()

    # ---------------------------------------------------------------- outgoing

    async def _drain(self) -> None:
        waiter = self.writable
        if waiter is not None:
            await waiter

    async def _close_normally(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self.close_sent:
            self.close_sent = True
            transport.write(CLOSE_1000)
        # The client answers with its own close frame; then the server closes TCP.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.peer_closed.wait(), 10.0)
        transport.close()

    async def _serve(self, query: dict[str, str]) -> None:
        try:
            if "idle" in query:
                await self.closed
            elif "paced" in query:
                await self._paced(
                    float(query["paced"]), int(query.get("n", "0")), int(query.get("k", "1"))
                )
            else:
                await self._firehose(int(query.get("n", "0")), int(query.get("k", "1")))
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a benchmark server: say what went wrong and drop the link
            print(f"firehose: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if self.transport is not None:
                self.transport.abort()

    async def _firehose(self, n: int, k: int) -> None:
        transport = self.transport
        assert transport is not None
        view = memoryview(FRAMES.get(n, max(k, 1)))
        for start in range(0, len(view), SLICE):
            if transport.is_closing():
                return
            transport.write(view[start : start + SLICE])
            await self._drain()
        await self._close_normally()

    async def _paced(self, rate: float, n: int, k: int) -> None:
        transport = self.transport
        assert transport is not None
        k = max(k, 1)
        period = int(1e9 / rate)
        clock = time.perf_counter_ns
        template = b'{"e":"trade","s":"SYM%d","seq":%d,"ts":%d,"p":"101.25","q":"0.500"}'
        due = clock()
        next_yield = due
        sent = 0
        while sent < n:
            now = clock()
            if due > now:
                # A blocking sleep keeps sub-millisecond pacing without spinning a core;
                # the loop gets a turn (pings, closes) at least once a millisecond below.
                time.sleep((due - now) / 1e9)
                now = clock()
            payload = template % (sent % k, sent, now)
            transport.write(bytes((0x81, len(payload))) + payload)
            sent += 1
            due += period
            if now >= next_yield:
                next_yield = now + 1_000_000
                await asyncio.sleep(0)
                if transport.is_closing():
                    return
                await self._drain()
        await self._close_normally()


async def serve(port: int = 0, host: str = "127.0.0.1", watch_stdin: bool = False) -> None:
    """Serve until terminated; print ``PORT <number>`` once listening.

    With ``watch_stdin``, also stop when stdin reaches end of file: a parent that holds
    the other end of a pipe takes the server down with it however it ends.
    """
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FirehoseProtocol, host, port)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if watch_stdin:
        fd = sys.stdin.fileno()

        def readable() -> None:
            if not os.read(fd, 4096):
                loop.remove_reader(fd)
                stop.set()

        loop.add_reader(fd, readable)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--watch-stdin", action="store_true", help="stop when stdin is closed (end of file)"
    )
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.host, args.watch_stdin))


if __name__ == "__main__":
    main()
