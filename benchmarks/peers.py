"""How rxws compares: rxws, the raw loops and the peers on one Binance-format firehose.

Every mode runs in a fresh child process against one server process, the modes
alternating round by round, and the table gives medians over the rounds: the rate,
its ratio to the raw websockets loop and to the picows + orjson ceiling loop doing
the same deliveries (each the median of the rounds' same-round ratios; each rxws row
runs right after its ceiling), and each child's peak RSS (``ru_maxrss``). The targets
of the issue "The fast path near the limit, and the peers side by side" follow.

The server is ``firehose.py``'s, with two additions made here: Binance's combined
aggTrade streams (``/n<N>/stream?streams=sym0usdt@aggTrade/...``: ``N`` messages
``{"stream":"sym3usdt@aggTrade","data":{"e":"aggTrade",...}}``, the symbols cycling
over the streams named, then a 1000 close) and a minimal ``/api/v3/exchangeInfo``
(plain HTTP), so that the peers can be pointed at it unchanged. Every mode reads the
same bytes.

Modes:

- ``raw``: ``async for m in ws: json.loads(m)`` over websockets (the reference);
  ``raw-orjson``: the same with ``orjson.loads``;
- ``ceiling``: a hand-written picows listener calling ``orjson.loads`` on each frame's
  bytes and one counting callback; ``ceiling-SxD``: the same, delivering each message
  by hand (``for cb in routes[msg["stream"]]: cb(msg)``) to ``D`` of ``S`` callbacks;
- ``connect``, ``client-SxD`` (``S`` ``client.stream()`` subscriptions, ``D`` on each
  of ``S / D`` symbols, so each message is delivered ``D`` times; ``client-10`` is
  ``client-10x1``): rxws as the default install has it (websockets, ``json``: orjson
  is hidden from the child); with ``@fast``, as the fast extras have it
  (``transport="picows"``, orjson);
- ``cryptofeed``: cryptofeed's ``Binance`` feed (TRADES on 10 symbols, one async
  callback), a subclass with the local addresses; cryptofeed refuses ``ws://``, so the
  benchmark's subclass of its connection class lets ``ws://`` through;
- ``python-binance``: ``BinanceSocketManager.multiplex_socket`` on 10 streams,
  read with ``await socket.recv()``, its stream URL set to the local one (it drops
  the last messages before a server's close and reports the close only about 15 s
  later, so its run ends after a second without a message; ``lost`` counts them);
- ``cryptofeed-SxD``, ``python-binance-SxD``: the peer, its callback handing each
  message by hand to ``D`` of ``S`` callbacks, as ``ceiling-SxD`` does.

Each symbol's first callback reads the clock (it times the run); the others only
count, in every mode alike.

The peers run when installed (``pip install cryptofeed python-binance``), as
installed (python-binance parses with orjson when it is there, cryptofeed with
yapic.json).

With ``--compare DIR`` every rxws mode ``M`` also runs as ``M~before`` with
``PYTHONPATH=DIR``: another copy of the ``rxws`` package (``git archive REV rxws | tar
-x -C DIR``), measured in the same rounds, for before/after figures of a change.

Usage::

    python benchmarks/peers.py                       # 200,000 messages, 5 rounds
    python benchmarks/peers.py --rounds 3 --json /tmp/peers.json
    python benchmarks/peers.py --format trade        # firehose.py's trade messages
    python benchmarks/peers.py --layers              # Python work per message, in-process
    python benchmarks/peers.py --serve               # the server alone (prints PORT n)
    python benchmarks/peers.py --child client-1000x10@fast --url ws://127.0.0.1:PORT \\
        --messages 200000 --profile /tmp/c.prof      # one mode by hand, profiled
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import clients
import firehose
from clients import (
    BenchFailure,
    Tally,
    combine,
    mark_connected,
    mark_open,
    measure,
    throughput,
    wait_done,
)
from run import Server, exit_status, fmt_rate, fmt_ratio, progress, rounds_of, table

SCRIPT = Path(__file__).resolve()

QUIET_SECONDS = 1.0  # python-binance: a pause this long after messages ends its run
PEER_SYMBOLS = 10  # the peers subscribe this many streams
INFO_SYMBOLS = 1000  # symbols listed in the served exchangeInfo
EXCHANGE_INFO = "/api/v3/exchangeInfo"
_AGG_PATH = re.compile(r"/n(\d+)/stream")
_AGG = (
    b'{"stream":"sym%dusdt@aggTrade","data":{"e":"aggTrade","E":%d,"s":"SYM%dUSDT",'
    b'"a":%d,"p":"%d.%02d","q":"0.%03d","f":%d,"l":%d,"T":%d,"m":%s,"M":true}}'
)
_T0 = 1_700_000_000_000  # event times, in ms
PEERS = {"cryptofeed": "cryptofeed", "python-binance": "binance"}  # mode -> module
_STACKS = {"default": "websockets + json", "fast": "picows + orjson"}


# ---------------------------------------------------------------------- the server


def agg_payloads(n: int, k: int) -> list[bytes]:
    """``n`` combined-stream aggTrade messages, symbols cycling over ``k``."""
    return [
        _AGG
        % (
            i % k,
            _T0 + i,
            i % k,
            i,
            100 + i % 7,
            i % 100,
            1 + i % 997,
            i,
            i,
            _T0 + i,
            b"true" if i % 2 else b"false",
        )
        for i in range(n)
    ]


def agg_streams(k: int) -> list[str]:
    """The ``k`` stream names of the aggTrade firehose, as Binance spells them."""
    return [f"sym{i}usdt@aggTrade" for i in range(k)]


def exchange_info(count: int = INFO_SYMBOLS) -> bytes:
    """A minimal ``exchangeInfo`` body: what cryptofeed reads of it, for ``count`` symbols."""
    symbols = [
        {
            "symbol": f"SYM{i}USDT",
            "status": "TRADING",
            "baseAsset": f"SYM{i}",
            "quoteAsset": "USDT",
            "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.01"}],
        }
        for i in range(count)
    ]
    return json.dumps({"timezone": "UTC", "symbols": symbols}).encode()


AGG_CHUNKS = firehose._Cache()  # (n, k) -> frame-aligned writes


class PeersProtocol(firehose.FirehoseProtocol):
    """The firehose's connection, plus aggTrade combined streams and exchangeInfo."""

    def _handshake(self, head: str) -> None:
        assert self.transport is not None
        request, _, rest = head.partition("\r\n")
        words = request.split(" ")
        target = urlsplit(words[1] if len(words) > 2 else "")
        if target.path == EXCHANGE_INFO:
            body = exchange_info()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()
            return
        match = _AGG_PATH.fullmatch(target.path)
        if match is not None:
            n = int(match[1])
            k = max(len(parse_qs(target.query).get("streams", [""])[-1].split("/")), 1)
            # Build the frames before answering, so the first follows the handshake at once.
            AGG_CHUNKS.get((n, k), lambda: firehose.framed_chunks(agg_payloads(n, k)))
            # "idle" keeps the firehose from building frames of its own; _serve sees "agg".
            head = f"{words[0]} /?idle=1&agg={n}&k={k} {words[-1]}\r\n{rest}"
        super()._handshake(head)

    async def _serve(self, query: dict[str, str]) -> None:
        if "agg" not in query:
            await super()._serve(query)
            return
        n, k = int(query["agg"]), int(query["k"])
        with contextlib.suppress(asyncio.CancelledError):
            await self._write_chunks(AGG_CHUNKS.get((n, k), lambda: []))
            await self._close_normally()


def serve(watch_stdin: bool) -> None:
    """Serve the firehose with the additions above until terminated."""
    firehose.FirehoseProtocol = PeersProtocol  # type: ignore[misc]  # what serve() builds
    asyncio.run(firehose.serve(watch_stdin=watch_stdin))


# ---------------------------------------------------------------------- message formats


class Format:
    """Where a run's messages come from and how a stream picks one symbol's."""

    name = "agg"
    key = "stream"

    def url(self, base: str, n: int, k: int) -> str:
        return f"{base}/n{n}/stream?streams={'/'.join(agg_streams(k))}"

    def value(self, i: int) -> str:
        return f"sym{i}usdt@aggTrade"


class TradeFormat(Format):
    """``firehose.py``'s own trade messages (no peer reads these)."""

    name = "trade"
    key = "s"

    def url(self, base: str, n: int, k: int) -> str:
        return f"{base}/?n={n}&k={k}"

    def value(self, i: int) -> str:
        return f"SYM{i}"


FORMATS = {f.name: f for f in (Format(), TradeFormat())}


# ---------------------------------------------------------------------- modes


_SHAPED = re.compile(r"(client|ceiling|cryptofeed|python-binance)-(\d+)(?:x(\d+))?")


def shape(mode: str) -> tuple[int, int] | None:
    """``(streams, deliveries per message)`` of a ``client-SxD``-like mode (None: unshaped)."""
    found = _SHAPED.fullmatch(mode.split("~")[0].split("@")[0])
    if found is None:
        return None
    streams, per = int(found[2]), int(found[3] or 1)
    if streams < 1 or per < 1 or streams % per:
        raise SystemExit(f"mode {mode!r}: streams must be a positive multiple of deliveries")
    return streams, per


def is_rxws(mode: str) -> bool:
    return mode.split("@")[0].split("~")[0] == "connect" or mode.startswith("client-")


def family(mode: str) -> str:
    """A mode's name without its shape, stack and copy: ``client-10@fast~before`` -> client."""
    name = mode.split("~")[0].split("@")[0]
    found = _SHAPED.fullmatch(name)
    return name if found is None else found[1]


def deliveries(mode: str) -> int:
    """How many subscribers each message reaches in ``mode``."""
    dims = shape(mode)
    return 1 if dims is None else dims[1]


def ceiling_of(mode: str) -> str:
    """The ceiling loop a mode is compared with: the same deliveries, by hand."""
    dims = shape(mode)
    if dims is None or family(mode) == "ceiling":
        return "ceiling"
    return f"ceiling-{dims[0]}x{dims[1]}" if dims[1] > 1 else f"ceiling-{dims[0]}"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def default_modes(fmt: Format) -> list[str]:
    """Every mode, each rxws row right after the ceiling it is compared with.

    A round takes about a minute; on a shared machine the load changes within that, so
    what is compared runs close together (and the peers last, they are the slowest).
    """
    modes = ["raw", "raw-orjson"]
    for shaped in ("", "-10", "-1000x10"):
        rxws = "connect" if not shaped else f"client{shaped}"
        modes += [f"ceiling{shaped}", f"{rxws}@fast", rxws]
    if fmt.name == "agg":
        for peer, module in PEERS.items():
            if installed(module):
                modes += [peer, f"{peer}-1000x10"]
    return modes


def version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------- child runs


class Count(Tally):
    """A subscriber that only counts: :class:`Tally` without the clock (``first``/``last`` 0)."""

    __slots__ = ()

    def __call__(self, msg: Any) -> None:
        self.n += 1


def stream_tallies(
    value_of: Callable[[int], str], streams: int, per: int
) -> list[tuple[str, Tally]]:
    """``(symbol key value, subscriber)`` for each stream, ``per`` streams on each symbol.

    The first stream of each symbol is a :class:`Tally`, which times the run; the others
    only count, so that ten deliveries a message do not cost ten clock readings.
    """
    return [(value_of(j // per), Count() if j % per else Tally()) for j in range(streams)]


def timed(tallies: list[tuple[str, Tally]]) -> list[Tally]:
    return [t for _, t in tallies if not isinstance(t, Count)]


def routes_of(tallies: list[tuple[str, Tally]]) -> dict[str, list[Tally]]:
    """Symbol key value -> the subscribers of that symbol: what a hand-written loop uses."""
    routes: dict[str, list[Tally]] = {}
    for value, tally in tallies:
        routes.setdefault(value, []).append(tally)
    return routes


def check_deliveries(tallies: list[tuple[str, Tally]], per: int, n: int) -> None:
    """Each stream on symbol ``i`` of ``k`` got exactly the messages of that symbol."""
    k = len(tallies) // per
    for j, (value, tally) in enumerate(tallies):
        i = j // per
        expected = n // k + (1 if i < n % k else 0)
        if tally.n != expected:
            raise BenchFailure(f"a stream on {value} got {tally.n} messages, expected {expected}")


def delivered(tallies: list[tuple[str, Tally]], per: int, n: int) -> dict[str, Any]:
    """The rate of a run that delivered each message ``per`` times."""
    got, first, last = combine(timed(tallies))
    result = throughput(n, got, first, last)
    check_deliveries(tallies, per, n)
    result["deliveries"] = sum(t.n for _, t in tallies)
    return result


async def run_raw(url: str, n: int, loads: Callable[[Any], Any]) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    tally = Tally()
    async with connect(url) as ws:
        mark_open()
        async for msg in ws:
            tally(loads(msg))
    return throughput(n, tally.n, tally.first, tally.last)


def ceiling_listener(
    key: str, dims: tuple[int, int] | None, tallies: list[tuple[str, Tally]]
) -> type:
    """The ceiling: a picows listener calling orjson and the subscribers, nothing else.

    Without ``dims`` each message goes to the first tally; with them, to the subscribers
    of its ``key`` value, by hand (``for cb in routes[msg[key]]: cb(msg)``).
    """
    import orjson
    from picows import WSFrame, WSListener, WSMsgType, WSTransport

    loads = orjson.loads
    text, close = WSMsgType.TEXT, WSMsgType.CLOSE
    routes = routes_of(tallies)
    single = timed(tallies)[0]

    class Plain(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is text:
                single(loads(frame.get_payload_as_bytes()))
            elif frame.msg_type is close:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    class Routed(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is text:
                msg = loads(frame.get_payload_as_bytes())
                for deliver in routes[msg[key]]:
                    deliver(msg)
            elif frame.msg_type is close:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    return Plain if dims is None else Routed


async def run_ceiling(
    fmt: Format, base: str, n: int, dims: tuple[int, int] | None, timeout: float
) -> dict[str, Any]:
    """picows + orjson with nothing around it: the practical ceiling."""
    from picows import ws_connect

    streams, per = dims or (1, 1)
    tallies = stream_tallies(fmt.value, streams, per)
    single = timed(tallies)[0]
    url = fmt.url(base, n, streams // per if dims else PEER_SYMBOLS)
    transport, _ = await ws_connect(ceiling_listener(fmt.key, dims, tallies), url)
    mark_open()
    await asyncio.wait_for(transport.wait_disconnected(), timeout)
    if dims is None:
        return throughput(n, single.n, single.first, single.last)
    return delivered(tallies, per, n)


def rxws_options(fast: bool) -> dict[str, Any]:
    """How the child's rxws is set up: picows for the fast extras (orjson is there)."""
    return {"transport": "picows"} if fast else {}


async def run_connect(fmt: Format, base: str, n: int, fast: bool, timeout: float) -> dict[str, Any]:
    clients.TRANSPORT[0] = "picows" if fast else "websockets"
    return await clients.run_connect(base, n, timeout, url=fmt.url(base, n, PEER_SYMBOLS))


async def run_client(
    fmt: Format, base: str, n: int, dims: tuple[int, int], fast: bool, timeout: float
) -> dict[str, Any]:
    import rxws
    from rxws.events import Disconnected

    streams, per = dims
    tallies = stream_tallies(fmt.value, streams, per)
    client = rxws.WebSocketClient(fmt.url(base, n, streams // per), **rxws_options(fast))
    subs = [client.stream([{fmt.key: value}]).subscribe(tally) for value, tally in tallies]
    done = asyncio.Event()
    snapshot: list[int] = []

    def on_status(event: Any) -> None:
        mark_connected(event)
        # The server closes after the last message; count before any reconnection.
        if isinstance(event, Disconnected) and not snapshot:
            snapshot.append(sum(t.n for _, t in tallies))
            done.set()

    client.status.subscribe(on_status)
    try:
        await client.start()
        await wait_done(done, lambda: sum(t.n for _, t in tallies), timeout)
    finally:
        for sub in subs:
            sub.dispose()
        await client.close()
    if snapshot[0] != n * per:
        raise BenchFailure(f"delivered {snapshot[0]} of {n * per} before the close")
    return delivered(tallies, per, n)


async def run_cryptofeed(
    base: str, n: int, dims: tuple[int, int] | None, timeout: float
) -> dict[str, Any]:
    """cryptofeed's Binance feed, TRADES, one async callback (``dims``: routing by hand)."""
    import cryptofeed.feed
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint, WSAsyncConn
    from cryptofeed.defines import TRADES
    from cryptofeed.exchanges import Binance

    class LocalConn(WSAsyncConn):  # type: ignore[misc]
        """cryptofeed's websocket connection, allowed to open ``ws://`` (benchmark only)."""

        def __init__(self, address: str, conn_id: str, **kwargs: Any) -> None:
            super().__init__("wss://" + address.removeprefix("ws://"), conn_id, **kwargs)
            self.address = address

    cryptofeed.feed.WSAsyncConn = LocalConn  # what Feed.connect builds its connections with
    http = "http://" + base.removeprefix("ws://")

    class LocalBinance(Binance):  # type: ignore[misc]
        websocket_endpoints = [WebsocketEndpoint(f"{base}/n{n}")]
        rest_endpoints = [
            RestEndpoint(
                http,
                routes=Routes(
                    EXCHANGE_INFO,
                    l2book="/api/v3/depth?symbol={}&limit={}",
                    authentication="/api/v3/userDataStream",
                ),
            )
        ]

    streams, per = dims or (PEER_SYMBOLS, 1)
    tallies = stream_tallies(lambda i: f"SYM{i}-USDT", streams, per)
    routes = routes_of(tallies)
    tally = tallies[0][1]
    got = [0]
    done = asyncio.Event()

    async def trade(trade: Any, receipt_timestamp: float) -> None:
        tally(trade)
        got[0] += 1
        if got[0] >= n:
            done.set()

    async def routed(trade: Any, receipt_timestamp: float) -> None:
        for deliver in routes[trade.symbol]:
            deliver(trade)
        got[0] += 1
        if got[0] >= n:
            done.set()

    feed = LocalBinance(
        symbols=list(routes),
        channels=[TRADES],
        callbacks={TRADES: trade if dims is None else routed},
    )
    mark_open_on_connect(LocalConn)
    feed.start(asyncio.get_running_loop())
    try:
        await wait_done(done, lambda: got[0], timeout)
    finally:
        feed.stop()
        await feed.shutdown()
    if dims is None:
        return throughput(n, tally.n, tally.first, tally.last)
    return delivered(tallies, per, n)


def mark_open_on_connect(conn_class: Any) -> None:
    """Call :func:`mark_open` when a connection of ``conn_class`` has opened."""
    opened = conn_class._open

    async def _open(self: Any) -> None:
        await opened(self)
        mark_open()

    conn_class._open = _open


async def run_python_binance(
    base: str, n: int, dims: tuple[int, int] | None, timeout: float
) -> dict[str, Any]:
    """python-binance's ``BinanceSocketManager.multiplex_socket``, read with ``recv()``.

    With ``dims``, each message is handed by hand to the subscribers of its stream.
    """
    from binance import AsyncClient, BinanceSocketManager

    client = AsyncClient()
    manager = BinanceSocketManager(client)
    manager.STREAM_URL = f"{base}/n{n}/"
    streams, per = dims or (PEER_SYMBOLS, 1)
    tallies = stream_tallies(FORMATS["agg"].value, streams, per)
    routes = routes_of(tallies)
    got = [0]
    ended: list[Any] = []
    read_all = asyncio.Event()  # the close was reported, or all n messages came

    async def read() -> None:
        single = tallies[0][1]
        async with manager.multiplex_socket(list(routes)) as socket:
            mark_open()
            while got[0] < n:
                msg = await socket.recv()
                if msg.get("e") == "error":  # how it reports the close (then reconnects)
                    ended.append(msg)
                    break
                if dims is None:
                    single(msg)
                else:
                    for deliver in routes[msg["stream"]]:
                        deliver(msg)
                got[0] += 1
            read_all.set()

    reader = asyncio.ensure_future(read())
    try:
        # After the server's close, the socket goes quiet for about 15 s before it
        # reports anything (a 10 s receive timeout, then a reconnection): a second
        # without a message after the first one ends the run.
        loop = asyncio.get_running_loop()
        deadline, seen, since = loop.time() + timeout, -1, loop.time()
        while not read_all.is_set() and loop.time() < deadline:
            await asyncio.wait([reader], timeout=0.1)
            if got[0] != seen or not seen:
                seen, since = got[0], loop.time()
            elif loop.time() - since > QUIET_SECONDS:
                break
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await client.session.close()
    received, first, last = combine(timed(tallies))
    result = throughput(received, received, first, last)
    result["lost"] = n - received
    result["deliveries"] = sum(t.n for _, t in tallies)
    if ended:
        result["ended_with"] = f"{ended[0].get('type')}: {ended[0].get('m')}"
    return result


def dispatch(mode: str, args: argparse.Namespace) -> Coroutine[Any, Any, dict[str, Any]]:
    fmt = FORMATS[args.format]
    base, n, t = args.url.rstrip("/"), args.messages, args.timeout
    name, _, stack = mode.split("~")[0].partition("@")
    if stack not in ("", "fast"):
        raise SystemExit(f"mode {mode!r}: the only stack suffix is @fast")
    fast = stack == "fast"
    dims = shape(name)
    if name == "raw":
        return run_raw(fmt.url(base, n, PEER_SYMBOLS), n, json.loads)
    if name == "raw-orjson":
        import orjson

        return run_raw(fmt.url(base, n, PEER_SYMBOLS), n, orjson.loads)
    if name == "ceiling" or (name.startswith("ceiling-") and dims is not None):
        return run_ceiling(fmt, base, n, dims, t)
    if name == "connect":
        return run_connect(fmt, base, n, fast, t)
    if name.startswith("client-") and dims is not None:
        return run_client(fmt, base, n, dims, fast, t)
    peer = family(name)
    if peer in PEERS:
        if fmt.name != "agg":
            raise SystemExit(f"mode {mode!r}: the peers read only --format agg")
        run = run_cryptofeed if peer == "cryptofeed" else run_python_binance
        return run(base, n, dims, t)
    raise SystemExit(f"unknown mode {mode!r}")


def child(args: argparse.Namespace) -> int:
    """Run one mode in this process and print its ``RESULT`` line."""
    mode = args.child
    if is_rxws(mode) and "@fast" not in mode:
        # The default install has no orjson: hide it, so rxws parses with json.
        sys.modules["orjson"] = None  # type: ignore[assignment]
    result: dict[str, Any] = {"mode": mode, "messages": args.messages}
    measure(result, dispatch(mode, args), args.profile)
    if is_rxws(mode):
        from rxws import codec

        result["orjson"] = codec.HAVE_ORJSON
        result["rxws_from"] = str(Path(codec.__file__).parent.parent)
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


# ---------------------------------------------------------------------- --layers


class _CaptureLink:
    """A link that hands the frame handler rxws gives it to its transport, and waits."""

    connection = None
    is_open = True

    def __init__(self, transport: _Capture) -> None:
        self._transport = transport

    async def run(self, on_frame: Callable[[Any], None]) -> None:
        self._transport.on_frame = on_frame
        self._transport.ready.set()
        await asyncio.Event().wait()

    async def send(self, data: str | bytes) -> None:
        pass

    async def close(self, timeout: float | None = None) -> None:
        pass


class _Capture:
    """An rxws transport without a network: it only captures the pipeline's frame handler."""

    name = "capture"

    def __init__(self) -> None:
        self.on_frame: Callable[[Any], None] | None = None
        self.ready = asyncio.Event()

    def prepare(self, options: dict[str, Any], redactor: Any) -> dict[str, Any]:
        return options

    async def open(self, url: str, options: dict[str, Any], redactor: Any) -> _CaptureLink:
        return _CaptureLink(self)

    def wrap(self, connection: Any, redactor: Any) -> Any:
        raise TypeError("the capture transport opens its own links")


class _Transport:
    """What a listener reads of picows's transport on the message path."""

    is_close_frame_sent = False
    is_disconnected = False


def _ns_per_frame(on_ws_frame: Callable[[Any, Any], None], frames: list[Any]) -> float:
    transport = _Transport()
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter_ns()
        for frame in frames:
            on_ws_frame(transport, frame)
        return (time.perf_counter_ns() - started) / len(frames)
    finally:
        gc.enable()


async def layer_costs(count: int, rounds: int) -> list[dict[str, Any]]:
    """Nanoseconds of Python work per message above picows, rxws against the ceiling.

    The same frames (made by picows's test helper) go through the ceiling's listener
    and through rxws's picows listener into a real ``rxws.connect`` or
    ``WebSocketClient`` pipeline (its transport only captures the frame handler), in
    this process, alternating, best of ``rounds``. What picows and the loop do per
    message is the same for both and is not counted.
    """
    from picows import WSMsgType
    from picows.picows import _make_test_ws_frame

    import rxws
    from rxws.transports.picows import _Listener

    fmt = FORMATS["agg"]
    out = []
    for name, dims in (("connect", None), ("client-10", (10, 1)), ("client-1000x10", (1000, 10))):
        k = PEER_SYMBOLS if dims is None else dims[0] // dims[1]
        payloads = agg_payloads(count, k)
        frames = [_make_test_ws_frame(WSMsgType.TEXT, p, True, False) for p in payloads]
        capture = _Capture()
        streams, per = dims or (1, 1)
        tallies = stream_tallies(fmt.value, streams, per)
        client = None
        if dims is None:
            subs = [rxws.connect("ws://capture/", transport=capture).subscribe(tallies[0][1])]
        else:
            client = rxws.WebSocketClient("ws://capture/", transport=capture)
            subs = [client.stream([{fmt.key: v}]).subscribe(t) for v, t in tallies]
        await asyncio.wait_for(capture.ready.wait(), 10)
        assert capture.on_frame is not None
        listener = _Listener(None, 10.0, None, None)
        listener.start(capture.on_frame)
        ceiling = ceiling_listener(fmt.key, dims, stream_tallies(fmt.value, streams, per))()
        mine = top = float("inf")
        for _ in range(rounds):
            mine = min(mine, _ns_per_frame(listener.on_ws_frame, frames))
            top = min(top, _ns_per_frame(ceiling.on_ws_frame, frames))
        for sub in subs:
            sub.dispose()
        if client is not None:
            await client.close()
        out.append({"mode": name, "rxws_ns": mine, "ceiling_ns": top})
    return out


def layers_text(rows: list[dict[str, Any]]) -> str:
    return table(
        ["mode (picows + orjson)", "ceiling ns/msg", "rxws ns/msg", "rxws - ceiling", "ratio"],
        [
            [
                r["mode"],
                f"{r['ceiling_ns']:,.0f}",
                f"{r['rxws_ns']:,.0f}",
                f"{r['rxws_ns'] - r['ceiling_ns']:,.0f}",
                f"{r['ceiling_ns'] / r['rxws_ns']:.2f}",
            ]
            for r in rows
        ],
    )


# ---------------------------------------------------------------------- the driver


def run_one(mode: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``mode`` in a child process; its ``RESULT`` as a dict."""
    cmd = [sys.executable, str(SCRIPT), "--child", mode, "--url", url]
    cmd += ["--messages", str(args.messages), "--timeout", str(args.timeout)]
    cmd += ["--format", args.format]
    env = dict(os.environ)
    if mode.endswith("~before"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.compare, env.get("PYTHONPATH")]))
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.timeout + 30, env=env
        )
    except subprocess.TimeoutExpired:
        return {"mode": mode, "messages": args.messages, "ok": False, "error": "timed out"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            result["wall_seconds"] = time.perf_counter() - started
            if not result.get("ok"):
                result["stderr"] = proc.stderr[-2000:]
            return result
    tail = (proc.stderr or proc.stdout)[-500:].strip()
    return {"mode": mode, "messages": args.messages, "ok": False, "error": f"no result: {tail}"}


def describe(result: dict[str, Any]) -> str:
    lost = f", {result['lost']:,} lost" if result.get("lost") else ""
    return f"{result['rate']:>12,.0f} msg/s  ({result['received']:,} msgs{lost})"


def stack_of(mode: str) -> str:
    if mode.startswith(("ceiling", "raw-orjson")):
        return "picows + orjson" if mode.startswith("ceiling") else "websockets + orjson"
    if mode == "raw":
        return "websockets + json"
    if is_rxws(mode):
        return _STACKS["fast" if "@fast" in mode else "default"]
    return "as installed"


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for mode, runs in results.items():
        ok = [r for r in runs if r.get("ok")]
        rates = [r["rate"] for r in ok]
        summary[mode] = {
            "stack": stack_of(mode),
            "messages": runs[0]["messages"] if runs else 0,
            "rounds_ok": len(ok),
            "rounds": len(runs),
            "median_rate": statistics.median(rates) if rates else None,
            "min_rate": min(rates) if rates else None,
            "max_rate": max(rates) if rates else None,
            "peak_rss_mb": statistics.median([r["peak_rss_mb"] for r in ok]) if ok else None,
            "lost": max((r.get("lost", 0) for r in ok), default=0),
            "errors": sorted({str(r.get("error")) for r in runs if not r.get("ok")}),
            "ceiling": ceiling_of(mode),
        }
    raw = summary.get("raw", {}).get("median_rate")
    for mode, entry in summary.items():
        rate = entry["median_rate"]
        top = summary.get(entry["ceiling"], {}).get("median_rate")
        entry["x_raw"] = rate / raw if rate and raw else None
        entry["x_ceiling"] = rate / top if rate and top else None
        # Each round's rate over the raw loop's (and, for a --compare pair, over the
        # other copy's) in the same round.
        entry["x_raw_per_round"] = same_round(results[mode], results.get("raw", []))
        entry["x_ceiling_per_round"] = same_round(results[mode], results.get(entry["ceiling"], []))
        entry["x_before_per_round"] = same_round(results[mode], results.get(f"{mode}~before", []))
    return summary


def same_round(runs: list[dict[str, Any]], bases: list[dict[str, Any]]) -> list[float]:
    """Each round's rate of ``runs`` over the rate of ``bases`` in that round."""
    return [
        r["rate"] / b["rate"]
        for r, b in zip(runs, bases, strict=False)
        if r.get("ok") and b.get("ok")
    ]


def median_text(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def summary_table(summary: dict[str, dict[str, Any]]) -> str:
    rows = []
    for mode, s in summary.items():
        rate = s["median_rate"]
        spread = f"{fmt_rate(s['min_rate'])}-{fmt_rate(s['max_rate'])}" if rate else "FAILED"
        rows.append(
            [
                mode,
                s["stack"],
                fmt_rate(rate),
                spread,
                fmt_ratio(rate, summary.get("raw", {}).get("median_rate")),
                median_text(s["x_raw_per_round"]),
                median_text(s["x_ceiling_per_round"]),
                median_text(s["x_before_per_round"]),
                "-" if s["peak_rss_mb"] is None else f"{s['peak_rss_mb']:.0f}",
                f"{s['lost']:,}",
                f"{s['rounds_ok']}/{s['rounds']}",
            ]
        )
    header = ["mode", "stack", "msg/s (median)", "min-max", "x raw", "x raw (same round)"]
    header += ["x ceiling (same round)", "x ~before (same round)", "peak RSS MB", "lost", "ok"]
    return table(header, rows)


def targets(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 17's targets that these modes measure, each with its value and verdict."""
    out: list[dict[str, Any]] = []

    def add(name: str, limit: str, value: float | None, at_least: float) -> None:
        holds = "n/a" if value is None else ("yes" if value >= at_least else "NO")
        out.append({"target": name, "limit": limit, "value": value, "holds": holds})

    def get(mode: str, key: str) -> float | None:
        """The median over the rounds of ``mode``'s same-round ratio ``key``."""
        values = summary.get(mode, {}).get(f"{key}_per_round")
        return statistics.median(values) if values else None

    add("fast: connect", ">= 5 x raw", get("connect@fast", "x_raw"), 5)
    add("fast: connect", ">= 0.8 x ceiling", get("connect@fast", "x_ceiling"), 0.8)
    add("fast: client, 1,000 streams x10", ">= 2.5 x raw", get("client-1000x10@fast", "x_raw"), 2.5)
    add(
        "fast: client, 1,000 streams x10",
        ">= 0.8 x ceiling-1000x10",
        get("client-1000x10@fast", "x_ceiling"),
        0.8,
    )
    add("default: client, 10 streams", ">= 0.9 x raw", get("client-10", "x_raw"), 0.9)
    mine = [m for m in summary if is_rxws(m) and "~" not in m]
    peers = [m for m in summary if family(m) in PEERS]
    if not (mine and peers):
        return out
    # Rates as same-round multiples of the raw loop's, so that rounds on a busier
    # machine count as much as the others.
    rate = {m: get(m, "x_raw") or 0.0 for m in [*mine, *peers]}
    # Each rxws row against the fastest peer row delivering each message as often.
    alike = [
        rate[m] / max(rate[p] for p in same)
        for m in mine
        if (same := [p for p in peers if deliveries(p) == deliveries(m)])
    ]
    if alike:
        add("each rxws row over the fastest peer doing the same", "> 1 x", min(alike), 1.000001)
    add(
        "slowest rxws row over the fastest peer row",
        "> 1 x",
        min(rate[m] for m in mine) / max(rate[p] for p in peers),
        1.000001,
    )
    rss = [summary[m]["peak_rss_mb"] or 0.0 for m in mine]
    peer_rss = [summary[m]["peak_rss_mb"] or 0.0 for m in peers]
    add("least peer peak RSS over the most of rxws", "> 1 x", min(peer_rss) / max(rss), 1.000001)
    return out


def targets_text(rows: list[dict[str, Any]]) -> str:
    return table(
        ["target", "limit", "measured", "holds"],
        [
            [
                r["target"],
                r["limit"],
                "-" if r["value"] is None else f"{r['value']:.2f}",
                r["holds"],
            ]
            for r in rows
        ],
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="rxws, the raw loops and the peers on one Binance-format firehose.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=200_000, help="messages per run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every mode")
    parser.add_argument("--modes", help="comma-separated modes (default: all available)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="agg", help="messages")
    parser.add_argument("--compare", metavar="DIR", help="also run each rxws mode from DIR")
    parser.add_argument("--timeout", type=float, default=120.0, help="per child run, seconds")
    parser.add_argument("--json", metavar="PATH", help="write every result and summary here")
    parser.add_argument(
        "--layers", action="store_true", help="in-process cost per message above picows"
    )
    parser.add_argument("--serve", action="store_true", help="run the server only")
    parser.add_argument("--watch-stdin", action="store_true", help="(--serve) stop at stdin EOF")
    parser.add_argument("--child", metavar="MODE", help="run one mode in this process")
    parser.add_argument("--url", help="(--child) the server, ws://host:port")
    parser.add_argument("--profile", metavar="PATH", help="(--child) cProfile stats here")
    args = parser.parse_args(argv)
    if args.messages < 2 or args.rounds < 1:
        parser.error("--messages must be >= 2 and --rounds >= 1")
    if args.child and not args.url:
        parser.error("--child needs --url")
    if args.compare and not (Path(args.compare) / "rxws" / "__init__.py").is_file():
        parser.error(f"--compare {args.compare}: no rxws package there")
    modes = args.modes
    args.modes = (
        default_modes(FORMATS[args.format])
        if modes is None
        else [m.strip() for m in modes.split(",") if m.strip()]
    )
    if args.compare:
        args.modes = [
            twin for m in args.modes for twin in ([m, f"{m}~before"] if is_rxws(m) else [m])
        ]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.watch_stdin)
        return 0
    if args.child:
        return child(args)
    if args.layers:
        rows = asyncio.run(layer_costs(min(args.messages, 20_000), args.rounds))
        print(layers_text(rows))
        return 0
    started = time.perf_counter()
    command = "python benchmarks/peers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    machine = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform}"
    versions = {
        dist: version_of(dist)
        for dist in ("websockets", "picows", "orjson", "reactivex", "cryptofeed", "python-binance")
    }
    server = Server(SCRIPT, "--serve")
    try:
        progress(f"server at {server.url}; {machine}")
        progress(f"{args.rounds} round(s) of {', '.join(args.modes)}")
        results = rounds_of(
            args.modes, args.rounds, lambda m: run_one(m, server.url, args), describe
        )
    finally:
        server.stop()
    summary = summarise(results)
    goals = targets(summary)
    elapsed = time.perf_counter() - started
    shown = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    out = [
        f"command: {command.strip()}",
        f"machine: {machine}; {shown}; took {elapsed:.0f} s",
        "",
        f"{args.messages:,} {'aggTrade' if args.format == 'agg' else 'trade'} messages a run, "
        f"median of {args.rounds} alternating round(s):",
        "",
        summary_table(summary),
        "",
        "Targets:",
        "",
        targets_text(goals),
        "",
    ]
    print("\n".join(out))
    if args.json:
        report = {"command": command.strip(), "machine": machine, "versions": versions}
        report.update(seconds=elapsed, summary=summary, runs=results, targets=goals)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
