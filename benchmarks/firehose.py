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
- ``/?n=N&k=K&combined=1``: the firehose in Binance's combined-stream format, each
  message ``{"stream":"sym12@trade","data":{...trade...}}``, topics cycling over
  ``sym0@trade`` ... ``sym{K-1}@trade``.
- ``/stream?topics=T&per=P&run=ID`` (topics): a Binance-like combined-stream endpoint.
  The client sends ``{"method": "SUBSCRIBE", "params": [...], "id": n}`` (and
  ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``) and gets ``{"result": null, "id": n}`` back
  (``{"error": {"code": .., "msg": ..}, "id": n}`` for a request it cannot read); a
  SUBSCRIBE's reply also carries ``ts``, the ``time.perf_counter_ns()`` value at which
  the server read the request (one clock for every process, as in the paced mode). The
  connections naming the same ``run`` belong together: once they have ``T`` topics
  subscribed between them, every one of them gets ``P`` combined-stream messages for
  each of its topics (topics interleaved, ``seq`` counting 0 to ``P-1`` per topic) as
  fast as its socket takes them, and then stays open. No limit is enforced.

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
import json
import os
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["combined_payloads", "frame_text", "make_payloads", "prebuilt", "serve"]

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


def combined_payloads(topics: Sequence[str], per: int) -> list[bytes]:
    """``per`` Binance combined-stream trades for each of ``topics``, topics interleaved.

    Message ``i`` is for ``topics[i % len(topics)]`` and carries that topic's ``seq``
    (``i // len(topics)``); the trade's symbol is the topic's part before ``@``, in
    upper case.
    """
    template = b'{"stream":"%s","data":{"e":"trade","s":"%s","seq":%d,"p":"%d.%02d","q":"0.%03d"}}'
    names = [(t.encode(), t.partition("@")[0].upper().encode()) for t in topics]
    out: list[bytes] = []
    i = 0
    for seq in range(per):
        for stream, symbol in names:
            out.append(template % (stream, symbol, seq, 100 + i % 7, i % 100, 1 + i % 997))
            i += 1
    return out


def combined_topics(k: int) -> list[str]:
    """The ``k`` topics of the combined firehose: ``sym0@trade`` ... ``sym{k-1}@trade``."""
    return [f"sym{i}@trade" for i in range(k)]


def prebuilt(n: int, k: int, combined: bool = False) -> bytes:
    """All frames of a firehose run, back to back."""
    if combined:
        payloads = combined_payloads(combined_topics(k), -(-n // k))[:n]
    else:
        payloads = make_payloads(n, k)
    return b"".join([frame_text(p) for p in payloads])


def framed_chunks(payloads: Sequence[bytes]) -> list[bytes]:
    """The frames of ``payloads`` joined into writes of about ``SLICE`` bytes.

    Each write ends on a frame boundary, so a reply written between two of them
    (from ``data_received``) never lands inside a frame.
    """
    chunks: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for payload in payloads:
        frame = frame_text(payload)
        pending.append(frame)
        size += len(frame)
        if size >= SLICE:
            chunks.append(b"".join(pending))
            pending, size = [], 0
    if pending:
        chunks.append(b"".join(pending))
    return chunks


class _Cache:
    """A small LRU of prebuilt frames, keyed by what they were built from."""

    def __init__(self, slots: int = CACHE_SLOTS) -> None:
        self._slots = slots
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = build()
            while len(self._cache) > self._slots:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return found


class _Frames(_Cache):
    """Prebuilt firehose frame blobs, keyed by ``(n, k, combined)``."""

    def blob(self, n: int, k: int, combined: bool = False) -> bytes:
        found: bytes = self.get((n, k, combined), lambda: prebuilt(n, k, combined))
        return found


FRAMES = _Frames()
TOPIC_FRAMES = _Cache()  # (topics of one connection, per) -> frame-aligned chunks


class _Run:
    """The connections of one client run in topics mode; they start together.

    Once the connections have ``total`` topics subscribed between them, each gets
    ``per`` messages for every topic it subscribed. The frames are all built before
    the first is written, so every connection starts at about the same moment.
    """

    def __init__(self, name: str, total: int, per: int) -> None:
        self.name = name
        self.total = total
        self.per = per
        self.connections: list[FirehoseProtocol] = []
        self.started = False

    def check(self) -> None:
        if self.started or sum(len(c.topics) for c in self.connections) < self.total:
            return
        self.started = True
        ready = [
            (conn, self._chunks(list(conn.topics))) for conn in self.connections if conn.topics
        ]
        for conn, chunks in ready:
            conn.start_topics(chunks)

    def _chunks(self, topics: list[str]) -> list[bytes]:
        found: list[bytes] = TOPIC_FRAMES.get(
            (tuple(topics), self.per),
            lambda: framed_chunks(combined_payloads(topics, self.per)),
        )
        return found


RUNS: dict[str, _Run] = {}


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
        # Topics mode: the run this connection belongs to, what it subscribed, and the
        # task writing its messages.
        self.run: _Run | None = None
        self.topics: dict[str, None] = {}
        self.writer: asyncio.Task[None] | None = None

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
        for task in (self.task, self.writer):
            if task is not None and not task.done():
                task.cancel()
        run, self.run = self.run, None
        if run is not None:
            run.connections.remove(self)
            if not run.connections and RUNS.get(run.name) is run:
                del RUNS[run.name]

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
        if "topics" in query:
            name = query.get("run", "")
            run = RUNS.get(name)
            if run is None or run.started:
                run = RUNS[name] = _Run(name, int(query["topics"]), int(query.get("per", "1")))
            run.connections.append(self)
            self.run = run
        elif "idle" not in query and "paced" not in query:
            # Build (or find) the frames before answering, so that the first frame
            # follows the handshake at once.
            FRAMES.blob(*_firehose_args(query))
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
        elif opcode == 0x1 and self.run is not None:
            self._on_request(payload)

    # ---------------------------------------------------------------- topics mode

    def _reply(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(frame_text(json.dumps(message, separators=(",", ":")).encode()))

    def _on_request(self, payload: bytes) -> None:
        """A Binance-style request: SUBSCRIBE, UNSUBSCRIBE or LIST_SUBSCRIPTIONS."""
        try:
            request = json.loads(payload)
            method, ident = request["method"], request["id"]
            params = request.get("params", [])
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise ValueError("params")
        except (ValueError, TypeError, KeyError):
            self._reply({"error": {"code": 2, "msg": "Invalid request"}, "id": None})
            return
        if method == "SUBSCRIBE":
            self.topics.update(dict.fromkeys(params))
            self._reply({"result": None, "id": ident, "ts": time.perf_counter_ns()})
            if self.run is not None:
                self.run.check()
        elif method == "UNSUBSCRIBE":
            for topic in params:
                self.topics.pop(topic, None)
            self._reply({"result": None, "id": ident})
        elif method == "LIST_SUBSCRIPTIONS":
            self._reply({"result": list(self.topics), "id": ident})
        else:
            self._reply({"error": {"code": 1, "msg": f"Unknown method {method!r}"}, "id": ident})

    def start_topics(self, chunks: list[bytes]) -> None:
        """Write ``chunks`` (this connection's messages) as fast as the socket takes them."""
        if self.writer is None and self.transport is not None:
            self.writer = asyncio.get_running_loop().create_task(self._write_chunks(chunks))

    async def _write_chunks(self, chunks: list[bytes]) -> None:
        transport = self.transport
        assert transport is not None
        try:
            for chunk in chunks:
                if transport.is_closing():
                    return
                transport.write(chunk)
                await self._drain()
        except asyncio.CancelledError:
            pass

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
            if "idle" in query or "topics" in query:
                await self.closed
            elif "paced" in query:
                await self._paced(
                    float(query["paced"]), int(query.get("n", "0")), int(query.get("k", "1"))
                )
            else:
                await self._firehose(*_firehose_args(query))
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a benchmark server: say what went wrong and drop the link
            print(f"firehose: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if self.transport is not None:
                self.transport.abort()

    async def _firehose(self, n: int, k: int, combined: bool) -> None:
        transport = self.transport
        assert transport is not None
        view = memoryview(FRAMES.blob(n, k, combined))
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


def _firehose_args(query: dict[str, str]) -> tuple[int, int, bool]:
    """``(n, k, combined)`` of a firehose request."""
    combined = query.get("combined", "0") not in ("", "0")
    return int(query.get("n", "0")), max(int(query.get("k", "1")), 1), combined


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
