"""Benchmark clients: one mode per child process, reading from ``benchmarks/firehose.py``.

``python benchmarks/clients.py MODE --url ws://127.0.0.1:PORT --messages N`` runs one
mode against a running firehose server and prints one line ``RESULT {json}`` on
stdout. Every mode checks that it received all ``N`` messages (and, for the filtered
modes, that every stream got exactly its share), and measures messages per second
from the first message to the last one handled. "First" is the earlier of the first
message handled and the moment the connection was open: the server writes its first
frame right after the handshake, and in the modes whose consumers are tasks
(``compat``, ``seed``) the first message handled may come long after the first one
received.

Throughput modes (the server sends ``N`` messages as fast as the socket takes them):

- ``raw``: ``async for msg in ws: json.loads(msg)`` over ``websockets`` (the reference);
- ``raw-orjson``: the same loop with ``orjson.loads`` (rxws parses with orjson when it
  is installed, so this is the like-for-like reference);
- ``connect``: ``rxws.connect(url)`` with one subscriber;
- ``client-K``: ``rxws.WebSocketClient`` with ``K`` ``stream([{"s": sym}])``
  subscriptions over ``K`` distinct symbols (the server cycles over exactly those);
- ``share-K``: ``K`` chains ``connect(url).pipe(share(), stream_filter([{"s": sym}]))``,
  what one would write without the router's index;
- ``bridge``: one ``async for`` over ``connect(url).pipe(to_async_iterable())``;
- ``compat-K``: an ``rxws.compat.AsyncWebsocketStreamInterface`` subclass with ``K``
  ``stream_filter`` streams, each read by its own ``async for`` task;
- ``seed-K``: the same program on AsyncWebsocketStreamInterface 1.0.5 (if installed);
- ``picows``: a plain picows listener calling ``json.loads`` (if installed).

Latency modes (the server paces ``N`` messages at ``--rate`` a second, stamped with the
send time): ``lat-raw``, ``lat-connect``, ``lat-client-K``, ``lat-bridge``.

A mode of rxws's own (``connect``, ``client-K``, ``share-K``, ``bridge`` and their
latency and memory forms) takes a transport suffix: ``connect@picows`` runs
``rxws.connect(url, transport="picows")``.

``--profile PATH`` runs the mode under cProfile and writes the stats to ``PATH``
(rates measured that way are not comparable with the others).

Memory modes: ``mem-idle-K`` (RSS growth for ``K`` idle ``client.stream()``
subscriptions on an open connection) and ``mem-long-K`` (RSS sampled along an
``N``-message run of ``client-K``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

clock = time.perf_counter
clock_ns = time.perf_counter_ns

STALL_SECONDS = 15.0  # a run that receives nothing for this long has failed


class BenchFailure(Exception):
    """A run that did not receive what it should have."""


OPENED: list[float] = []  # when the (first) connection was open
TRANSPORT = ["websockets"]  # rxws's transport, from a mode's "@name" suffix


def mark_open(_: Any = None) -> None:
    """Remember when the connection opened (only the first call counts)."""
    if not OPENED:
        OPENED.append(clock())


def mark_connected(event: Any) -> None:
    """``on_event``/``status`` hook: :func:`mark_open` on ``Connected``."""
    from rxws.events import Connected

    if isinstance(event, Connected):
        mark_open()


# ---------------------------------------------------------------------- measuring


class Tally:
    """A subscriber that counts messages and remembers when the first and last came."""

    __slots__ = ("first", "last", "n")

    def __init__(self) -> None:
        self.n = 0
        self.first = 0.0
        self.last = 0.0

    def __call__(self, msg: Any) -> None:
        n = self.n = self.n + 1
        t = self.last = clock()
        if n == 1:
            self.first = t


def combine(tallies: list[Tally]) -> tuple[int, float, float]:
    """Total count, first and last time over several tallies."""
    used = [t for t in tallies if t.n]
    if not used:
        return 0, 0.0, 0.0
    return sum(t.n for t in used), min(t.first for t in used), max(t.last for t in used)


def rss_bytes() -> int:
    """This process's resident set size now (not the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """This process's peak resident set size (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def firehose_url(base: str, n: int, k: int = 1) -> str:
    return f"{base}/?n={n}&k={k}"


def check_shares(tallies: list[Tally], n: int) -> None:
    """Symbols cycle over the streams, so stream ``i`` gets ``n // k`` or one more."""
    k = len(tallies)
    for i, t in enumerate(tallies):
        expected = n // k + (1 if i < n % k else 0)
        if t.n != expected:
            raise BenchFailure(f"stream SYM{i} got {t.n} messages, expected {expected}")


async def wait_done(done: asyncio.Event, progress: Callable[[], int], timeout: float) -> None:
    """Wait for ``done``; fail when nothing arrives for a while or time runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen, since = -1, loop.time()
    while not done.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), 0.5)
        now = loop.time()
        count = progress()
        if count != seen:
            seen, since = count, now
        elif now - since > STALL_SECONDS:
            raise BenchFailure(f"stalled: nothing new for {STALL_SECONDS:.0f} s after {count}")
        if now > deadline:
            raise BenchFailure(f"timed out after {timeout:.0f} s with {count} received")


def throughput(n_expected: int, n: int, first: float, last: float) -> dict[str, Any]:
    if n != n_expected:
        raise BenchFailure(f"received {n} of {n_expected} messages")
    if OPENED:
        first = min(first, OPENED[0])
    seconds = last - first
    rate = (n - 1) / seconds if seconds > 0 else float("inf")
    return {"received": n, "seconds": seconds, "rate": rate}


def symbols(k: int) -> list[str]:
    return [f"SYM{i}" for i in range(k)]


# ---------------------------------------------------------------------- throughput modes


async def run_raw(base: str, n: int, loads: Callable[[Any], Any]) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    tally = Tally()
    async with connect(firehose_url(base, n)) as ws:
        mark_open()
        async for msg in ws:
            tally(loads(msg))
    return throughput(n, tally.n, tally.first, tally.last)


async def run_connect(base: str, n: int, timeout: float, url: str | None = None) -> dict[str, Any]:
    """``rxws.connect`` with one subscriber, on the firehose (or on ``url``, when given)."""
    import rxws

    tally = Tally()
    done = asyncio.Event()
    errors: list[Exception] = []

    def failed(exc: Exception) -> None:
        errors.append(exc)
        done.set()

    url = url or firehose_url(base, n)
    source = rxws.connect(url, on_event=mark_connected, transport=TRANSPORT[0])
    sub = source.subscribe(tally, failed, done.set)
    try:
        await wait_done(done, lambda: tally.n, timeout)
    finally:
        sub.dispose()
    if errors:
        raise BenchFailure(f"the stream failed: {errors[0]!r}")
    return throughput(n, tally.n, tally.first, tally.last)


def tally_streams(client: Any, k: int) -> tuple[list[Tally], list[Any]]:
    """One ``client.stream([{"s": sym}])`` per symbol, each counted by its own Tally."""
    tallies = [Tally() for _ in range(k)]
    subs = [
        client.stream([{"s": sym}]).subscribe(tally)
        for sym, tally in zip(symbols(k), tallies, strict=True)
    ]
    return tallies, subs


async def run_client(base: str, n: int, k: int, timeout: float) -> dict[str, Any]:
    import rxws
    from rxws.events import Disconnected

    client = rxws.WebSocketClient(firehose_url(base, n, k), transport=TRANSPORT[0])
    tallies, subs = tally_streams(client, k)
    done = asyncio.Event()
    snapshot: list[tuple[int, float, float]] = []

    def on_status(event: Any) -> None:
        mark_connected(event)
        # The server closes after the last message; count before any reconnection.
        if isinstance(event, Disconnected) and not snapshot:
            snapshot.append(combine(tallies))
            done.set()

    client.status.subscribe(on_status)
    try:
        await client.start()
        await wait_done(done, lambda: combine(tallies)[0], timeout)
    finally:
        for sub in subs:
            sub.dispose()
        await client.close()
    got, first, last = snapshot[0]
    result = throughput(n, got, first, last)
    check_shares(tallies, n)
    return result


async def run_share(base: str, n: int, k: int, timeout: float) -> dict[str, Any]:
    import reactivex.operators as rx_ops

    import rxws

    feed = rxws.connect(
        firehose_url(base, n, k), on_event=mark_connected, transport=TRANSPORT[0]
    ).pipe(rx_ops.share())
    tallies = [Tally() for _ in range(k)]
    done = asyncio.Event()
    errors: list[Exception] = []

    def failed(exc: Exception) -> None:
        errors.append(exc)
        done.set()

    subs = [
        feed.pipe(rxws.ops.stream_filter([{"s": sym}])).subscribe(tally, failed, done.set)
        for sym, tally in zip(symbols(k), tallies, strict=True)
    ]
    try:
        await wait_done(done, lambda: combine(tallies)[0], timeout)
    finally:
        for sub in subs:
            sub.dispose()
    if errors:
        raise BenchFailure(f"the stream failed: {errors[0]!r}")
    result = throughput(n, *combine(tallies))
    check_shares(tallies, n)
    return result


async def run_bridge(base: str, n: int, timeout: float) -> dict[str, Any]:
    import rxws

    tally = Tally()

    async def consume() -> None:
        source = rxws.connect(
            firehose_url(base, n), on_event=mark_connected, transport=TRANSPORT[0]
        )
        async with source.pipe(rxws.to_async_iterable()) as stream:
            async for msg in stream:
                tally(msg)

    await asyncio.wait_for(consume(), timeout)
    return throughput(n, tally.n, tally.first, tally.last)


class Consumers:
    """``k`` tasks, each reading one async iterator into its own tally."""

    def __init__(self, n: int, k: int) -> None:
        self.n = n
        self.total = 0
        self.tallies = [Tally() for _ in range(k)]
        self.done = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.errors: list[BaseException] = []
        self.stopping = False

    def start(self, streams: list[Any]) -> None:
        self.tasks = [
            asyncio.ensure_future(self._consume(stream, tally))
            for stream, tally in zip(streams, self.tallies, strict=True)
        ]

    async def _consume(self, stream: Any, tally: Tally) -> None:
        try:
            async for msg in stream:
                if self.stopping:
                    # The seed's iterator swallows cancellation and yields None instead.
                    return
                tally(msg)
                self.total += 1
                if self.total == self.n:
                    self.done.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.errors.append(exc)
            self.done.set()

    async def stop(self) -> None:
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def result(self) -> dict[str, Any]:
        if self.errors:
            raise BenchFailure(f"a consumer failed: {self.errors[0]!r}")
        result = throughput(self.n, *combine(self.tallies))
        check_shares(self.tallies, self.n)
        return result


async def run_stream_interface(
    base_class: Any, base: str, n: int, k: int, timeout: float
) -> dict[str, Any]:
    """K ``stream_filter`` streams of a subclass of ``base_class``, each read by a task."""
    import websockets

    url = firehose_url(base, n, k)

    class Feed(base_class):  # type: ignore[misc, valid-type]
        async def _create_ws(self) -> Any:
            ws = await websockets.connect(url)
            mark_open()
            return ws

        async def _when2create_new_ws(self) -> None:
            await asyncio.Event().wait()

        async def _parse_raw_data(self, raw_data: Any) -> Any:
            return json.loads(raw_data)

    feed = Feed()
    consumers = Consumers(n, k)
    consumers.start([feed.stream_filter([{"s": sym}]) for sym in symbols(k)])
    try:
        await wait_done(consumers.done, lambda: consumers.total, timeout)
        result = consumers.result()
    finally:
        await consumers.stop()
        await feed.exit()
    return result


async def run_compat(base: str, n: int, k: int, timeout: float) -> dict[str, Any]:
    from rxws.compat import AsyncWebsocketStreamInterface

    return await run_stream_interface(AsyncWebsocketStreamInterface, base, n, k, timeout)


async def run_seed(base: str, n: int, k: int, timeout: float) -> dict[str, Any]:
    from AsyncWebsocketStreamInterface import (  # type: ignore[import-untyped]
        AsyncWebsocketStreamInterface,
    )
    from loguru import logger

    # The seed logs every message at DEBUG to stderr by default; drop that sink so it
    # is measured at its best (it still formats each message eagerly).
    logger.remove()
    return await run_stream_interface(AsyncWebsocketStreamInterface, base, n, k, timeout)


async def run_picows(base: str, n: int, timeout: float) -> dict[str, Any]:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    tally = Tally()
    loads = json.loads

    class Listener(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                tally(loads(frame.get_payload_as_ascii_text()))
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    transport, _ = await ws_connect(Listener, firehose_url(base, n))
    mark_open()
    await asyncio.wait_for(transport.wait_disconnected(), timeout)
    return throughput(n, tally.n, tally.first, tally.last)


# ---------------------------------------------------------------------- latency modes


class Latencies:
    """A subscriber that records ``now - msg["ts"]`` in nanoseconds."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[int] = []

    def __call__(self, msg: Any) -> None:
        self.values.append(clock_ns() - msg["ts"])


def latency_summary(values: list[int], n: int) -> dict[str, Any]:
    if len(values) != n:
        raise BenchFailure(f"received {len(values)} of {n} messages")
    warm = values[len(values) // 10 :]  # the first tenth is warm-up
    ordered = sorted(warm)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1000

    return {
        "received": len(values),
        "p50_us": pct(50),
        "p99_us": pct(99),
        "p999_us": pct(99.9),
        "max_us": ordered[-1] / 1000,
        "mean_us": sum(ordered) / len(ordered) / 1000,
    }


def paced_url(base: str, n: int, k: int, rate: float) -> str:
    return f"{base}/?paced={rate}&n={n}&k={k}"


async def run_lat_raw(base: str, n: int, rate: float, timeout: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    lat = Latencies()
    loads = json.loads

    async def loop() -> None:
        async with connect(paced_url(base, n, 1, rate)) as ws:
            async for msg in ws:
                lat(loads(msg))

    await asyncio.wait_for(loop(), timeout)
    return latency_summary(lat.values, n)


async def run_lat_connect(base: str, n: int, rate: float, timeout: float) -> dict[str, Any]:
    import rxws

    lat = Latencies()
    done = asyncio.Event()
    sub = rxws.connect(paced_url(base, n, 1, rate), transport=TRANSPORT[0]).subscribe(
        lat, lambda e: done.set(), done.set
    )
    try:
        await wait_done(done, lambda: len(lat.values), timeout)
    finally:
        sub.dispose()
    return latency_summary(lat.values, n)


async def run_lat_client(base: str, n: int, k: int, rate: float, timeout: float) -> dict[str, Any]:
    import rxws
    from rxws.events import Disconnected

    client = rxws.WebSocketClient(paced_url(base, n, k, rate), transport=TRANSPORT[0])
    lat = Latencies()
    subs = [client.stream([{"s": sym}]).subscribe(lat) for sym in symbols(k)]
    done = asyncio.Event()
    got: list[int] = []

    def on_status(event: Any) -> None:
        if isinstance(event, Disconnected) and not got:
            got.append(len(lat.values))
            done.set()

    client.status.subscribe(on_status)
    try:
        await client.start()
        await wait_done(done, lambda: len(lat.values), timeout)
    finally:
        for sub in subs:
            sub.dispose()
        await client.close()
    return latency_summary(lat.values[: got[0]], n)


async def run_lat_bridge(base: str, n: int, rate: float, timeout: float) -> dict[str, Any]:
    import rxws

    lat = Latencies()

    async def consume() -> None:
        source = rxws.connect(paced_url(base, n, 1, rate), transport=TRANSPORT[0])
        async with source.pipe(rxws.to_async_iterable()) as stream:
            async for msg in stream:
                lat(msg)

    await asyncio.wait_for(consume(), timeout)
    return latency_summary(lat.values, n)


# ---------------------------------------------------------------------- memory modes


async def run_mem_idle(base: str, k: int, timeout: float) -> dict[str, Any]:
    import rxws

    async with rxws.WebSocketClient(f"{base}/?idle=1", transport=TRANSPORT[0]) as client:
        await asyncio.wait_for(client.wait_connected(), timeout)
        noop = Tally()
        gc.collect()
        before = rss_bytes()
        started = clock()
        subs = [client.stream([{"s": sym}]).subscribe(noop) for sym in symbols(k)]
        subscribed = clock() - started
        gc.collect()
        after = rss_bytes()
        started = clock()
        for sub in subs:
            sub.dispose()
        disposed = clock() - started
        del subs
        gc.collect()
        released = rss_bytes()
    return {
        "streams": k,
        "rss_before_mb": before / 1e6,
        "rss_after_mb": after / 1e6,
        "growth_mb": (after - before) / 1e6,
        "bytes_per_stream": (after - before) / k,
        "after_dispose_mb": released / 1e6,
        "subscribe_seconds": subscribed,
        "dispose_seconds": disposed,
    }


async def run_mem_long(base: str, n: int, k: int, timeout: float) -> dict[str, Any]:
    import rxws
    from rxws.events import Disconnected

    client = rxws.WebSocketClient(firehose_url(base, n, k), transport=TRANSPORT[0])
    tallies, subs = tally_streams(client, k)
    done = asyncio.Event()
    snapshot: list[tuple[int, float, float]] = []
    samples: list[tuple[int, int]] = []  # (messages so far, rss bytes)

    def on_status(event: Any) -> None:
        mark_connected(event)
        if isinstance(event, Disconnected) and not snapshot:
            snapshot.append(combine(tallies))
            samples.append((snapshot[0][0], rss_bytes()))
            done.set()

    async def sample() -> None:
        while True:
            samples.append((client.stats.messages, rss_bytes()))
            await asyncio.sleep(0.2)

    client.status.subscribe(on_status)
    sampler = asyncio.ensure_future(sample())
    try:
        await client.start()
        await wait_done(done, lambda: combine(tallies)[0], timeout)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        for sub in subs:
            sub.dispose()
        await client.close()
    result = throughput(n, *snapshot[0])
    # RSS once a tenth of the run is through (warm: buffers and caches sized) vs the end.
    warm = next((rss for count, rss in samples if count >= n // 10), samples[-1][1])
    end = samples[-1][1]
    result.update(
        {
            "rss_warm_mb": warm / 1e6,
            "rss_end_mb": end / 1e6,
            "growth_mb": (end - warm) / 1e6,
            "samples": [(count, round(rss / 1e6, 2)) for count, rss in samples],
        }
    )
    return result


# ---------------------------------------------------------------------- entry point


def _streams_of(mode: str, prefix: str) -> int:
    try:
        return int(mode[len(prefix) :])
    except ValueError:
        raise SystemExit(f"mode {mode!r}: expected {prefix}<number of streams>") from None


def dispatch(mode: str, args: argparse.Namespace) -> Coroutine[Any, Any, dict[str, Any]]:
    base, n, t = args.url.rstrip("/"), args.messages, args.timeout
    mode, _, transport = mode.partition("@")
    if transport:
        if mode in ("raw", "raw-orjson", "picows") or mode.startswith(("compat-", "seed-")):
            raise SystemExit(f"mode {mode!r} does not take a transport (@{transport})")
        TRANSPORT[0] = transport
    if mode == "raw":
        return run_raw(base, n, json.loads)
    if mode == "raw-orjson":
        import orjson

        return run_raw(base, n, orjson.loads)
    if mode == "connect":
        return run_connect(base, n, t)
    if mode == "bridge":
        return run_bridge(base, n, t)
    if mode == "picows":
        return run_picows(base, n, t)
    if mode == "lat-raw":
        return run_lat_raw(base, n, args.rate, t)
    if mode == "lat-connect":
        return run_lat_connect(base, n, args.rate, t)
    if mode == "lat-bridge":
        return run_lat_bridge(base, n, args.rate, t)
    for prefix, runner in (
        ("lat-client-", lambda k: run_lat_client(base, n, k, args.rate, t)),
        ("mem-idle-", lambda k: run_mem_idle(base, k, t)),
        ("mem-long-", lambda k: run_mem_long(base, n, k, t)),
        ("client-", lambda k: run_client(base, n, k, t)),
        ("share-", lambda k: run_share(base, n, k, t)),
        ("compat-", lambda k: run_compat(base, n, k, t)),
        ("seed-", lambda k: run_seed(base, n, k, t)),
    ):
        if mode.startswith(prefix):
            return runner(_streams_of(mode, prefix))  # type: ignore[no-untyped-call]
    raise SystemExit(f"unknown mode {mode!r}")


def measure(
    result: dict[str, Any], run: Coroutine[Any, Any, dict[str, Any]], profile: str | None
) -> None:
    """Run ``run`` (under cProfile, stats to ``profile``, if given); add its figures to ``result``.

    A failure is recorded in ``result`` (``ok``, ``error``), as is the peak RSS.
    """
    try:
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            try:
                result.update(profiler.runcall(asyncio.run, run))
            finally:
                profiler.dump_stats(profile)
        else:
            result.update(asyncio.run(run))
        result["ok"] = True
    except BenchFailure as exc:
        result.update(ok=False, error=str(exc))
    except Exception as exc:
        traceback.print_exc()
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    result["peak_rss_mb"] = peak_rss_bytes() / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one benchmark client mode.")
    parser.add_argument("mode")
    parser.add_argument("--url", required=True, help="the firehose server, ws://host:port")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=20_000.0, help="paced rate (latency)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--profile", metavar="PATH", help="write cProfile stats of the run here")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"mode": args.mode, "messages": args.messages}
    measure(result, dispatch(args.mode, args), args.profile)
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
