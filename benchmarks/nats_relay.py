"""Relay benchmark: websocket firehose -> relay -> NATS -> one consumer, rate and latency.

Every run has three processes besides nats-server: the firehose server
(``benchmarks/firehose.py``), one relay process (the mode under test) and one consumer
process (a core subscription on ``md.>`` that counts the messages: by default a bare
protocol reader, so that the consumer is not the bottleneck; ``--consumer nats-py`` for
a nats-py subscriber with a callback, which caps the rate near 45k msg/s). A relay
reads ``N`` trades from the firehose and, for each, does the same work: parse the
frame, build the subject ``md.<symbol>`` and the ``Nats-Msg-Id`` header from ``seq``,
publish the frame as it came.

Modes (alternated round by round, medians reported):

- ``raw``: a hand-written ``websockets`` -> nats-py loop (``async for`` frame, parse with
  the parser rxws uses, ``await nc.publish(...)``), core NATS: the like-for-like
  reference for every ratio;
- ``raw-json``: the same loop with ``json.loads`` (what ``run.py`` calls ``raw``), for
  the targets' second column;
- ``rxws``: ``rxws.connect(url, parse=rxws.nats.parse_framed)`` piped through
  ``rxws.nats.publish(nc, "md.{s}", msg_id="{seq}")``, core NATS;
- ``rxws@picows``: the same on the picows transport (if installed);
- ``raw-js``: the hand-written loop publishing to a JetStream stream with nats-py's
  ``publish_async`` (acks awaited at the end);
- ``rxws-js``: ``rxws.nats.publish(..., stream="BENCH")`` (acks tracked in a window);
- ``relay``, ``relay@picows``, ``relay-js``: the collector behind ``rxws relay``
  (``rxws._relay.Relay``: a ``WebSocketClient`` with reconnect and rotation, its router,
  ``parse_framed`` and ``rxws.nats.publish``, a status ticker), core NATS or JetStream.

End to end is ``(N - 1) / (last message at the consumer - relay's websocket open)``, on
one monotonic clock shared by the processes (Linux ``CLOCK_MONOTONIC``).

Latency (``--latency-modes``, after the throughput rounds, alternated the same way): the
firehose paces ``--latency-rate`` trades a second for ``--latency-seconds``, stamping
each with ``time.perf_counter_ns()`` as it writes it (``/?paced=R``); the consumer
subtracts that stamp from its own reading of the same clock when the read that brought
the message in returns. Each run's p50/p99/p99.9 skip its first tenth; the table gives
the median of each over the rounds, and the lowest p99.

The targets (issue 15) are ratios to the hand-written loop in the same run: rxws
>= 0.9 x ``raw`` on websockets, >= 1.3 x ``raw`` on picows with orjson; the p99 at
20,000 msg/s is reported as a ratio to the ``raw`` loop's.

Usage::

    python benchmarks/nats_relay.py                       # 100,000 messages, 3 rounds
    python benchmarks/nats_relay.py --messages 50000 --rounds 1 --modes raw,rxws
    python benchmarks/nats_relay.py --modes '' --latency-modes raw,rxws --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from clients import latency_summary  # noqa: E402
from run import Server, check, fmt_rate, fmt_ratio, progress, table  # noqa: E402

clock = time.perf_counter
clock_ns = time.perf_counter_ns
STREAM = "BENCH"
STALL_SECONDS = 10.0
SYMBOLS = 10


# ---------------------------------------------------------------------- children


async def connect_nats(url: str) -> Any:
    import nats

    async def quiet(_: Exception) -> None:
        pass

    return await nats.connect(url, error_cb=quiet)


def loads_like_rxws() -> Any:
    from rxws.codec import HAVE_ORJSON

    if HAVE_ORJSON:
        import orjson

        return orjson.loads
    return json.loads


async def relay_raw(
    ws_url: str, nats_url: str, jetstream: bool, loads: Any = None
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    nc = await connect_nats(nats_url)
    loads = loads or loads_like_rxws()
    sent = 0
    try:
        async with connect(ws_url) as ws:
            opened = clock()
            if jetstream:
                js = nc.jetstream()
                async for frame in ws:
                    message = loads(frame)
                    await js.publish_async(
                        f"md.{message['s']}",
                        frame.encode(),
                        headers={"Nats-Msg-Id": str(message["seq"])},
                    )
                    sent += 1
                await js.publish_async_completed()
            else:
                publish = nc.publish
                async for frame in ws:
                    message = loads(frame)
                    await publish(
                        f"md.{message['s']}",
                        frame.encode(),
                        headers={"Nats-Msg-Id": str(message["seq"])},
                    )
                    sent += 1
                await nc.flush()
        done = clock()
    finally:
        await nc.close()
    return {"sent": sent, "opened": opened, "done": done}


async def relay_rxws(ws_url: str, nats_url: str, jetstream: bool, transport: str) -> dict[str, Any]:
    import rxws
    from rxws import nats
    from rxws.events import Connected

    nc = await connect_nats(nats_url)
    opened: list[float] = []
    finished = asyncio.Event()
    failures: list[Exception] = []

    def on_event(event: Any) -> None:
        if isinstance(event, Connected) and not opened:
            opened.append(clock())

    def failed(exc: Exception) -> None:
        failures.append(exc)
        finished.set()

    publisher = nats.publish(
        nc, "md.{s}", msg_id="{seq}", stream=STREAM if jetstream else None, on_error=failed
    )
    try:
        source = rxws.connect(
            ws_url, parse=nats.parse_framed, on_event=on_event, transport=transport
        )
        source.pipe(publisher).subscribe(on_completed=finished.set, on_error=failed)
        await finished.wait()
        done = clock()
    finally:
        await nc.close()
    if failures:
        raise RuntimeError(f"the relay failed: {failures[0]}")
    return published(publisher.stats, opened[0], done)


def published(stats: Any, opened: float, done: float) -> dict[str, Any]:
    """A relay's result from its publisher's counters."""
    return {
        "sent": stats.published,
        "acked": stats.acked,
        "dropped": stats.dropped,
        "opened": opened,
        "done": done,
    }


async def relay_collector(
    ws_url: str, nats_url: str, jetstream: bool, transport: str, n: int
) -> dict[str, Any]:
    """The collector behind ``rxws relay``: a WebSocketClient (reconnect, rotation) to NATS."""
    from rxws import Backoff
    from rxws._relay import Relay
    from rxws.events import Connected

    stop = asyncio.Event()
    opened: list[float] = []
    collector = Relay(
        ws_url,
        nats_url=nats_url,
        subject="md.{s}",
        msg_id="{seq}",
        stream=STREAM if jetstream else None,
        transport=transport,
        stop=stop,
        handle_signals=False,
        status=lambda _: None,
        news=lambda _: None,
        # The firehose closes after its n messages: no reconnect during the run.
        backoff=Backoff(initial=60.0, maximum=60.0, jitter=0.0),
    )

    def on_event(event: Any) -> None:
        if isinstance(event, Connected) and not opened:
            opened.append(clock())

    collector.client.status.subscribe(on_event)
    running = asyncio.ensure_future(collector.run())

    def finished() -> bool:
        publisher = collector.publisher
        if publisher is None:
            return False
        return (publisher.stats.acked if jetstream else publisher.stats.published) >= n

    while not finished() and not running.done():
        await asyncio.sleep(0.002)
    done = clock()
    stop.set()
    await running
    assert collector.publisher is not None
    return published(collector.publisher.stats, opened[0], done)


async def consume_nats_py(nats_url: str, n: int, latency: bool) -> dict[str, Any]:
    """A nats-py subscriber with a callback (what a consumer would write)."""
    nc = await connect_nats(nats_url)
    count = 0
    first = last = 0.0
    everything = asyncio.Event()
    delays: list[int] = []
    loads = loads_like_rxws()

    async def on_msg(msg: Any) -> None:
        nonlocal count, first, last
        if latency:
            delays.append(clock_ns() - loads(msg.data)["ts"])
        count += 1
        last = clock()
        if count == 1:
            first = last
        if count >= n:
            everything.set()

    await nc.subscribe("md.>", cb=on_msg, pending_msgs_limit=4 * n)
    await nc.flush()
    print("READY", flush=True)
    seen = -1
    try:
        while not everything.is_set():
            try:
                await asyncio.wait_for(everything.wait(), STALL_SECONDS)
            except asyncio.TimeoutError:
                if count == seen:
                    break
                seen = count
    finally:
        await nc.close()
    return consumer_result(count, first, last, delays if latency else None, n)


def consumer_result(
    count: int, first: float, last: float, delays: list[int] | None, n: int
) -> dict[str, Any]:
    """A consumer's result; with ``delays`` (ns, in arrival order), their percentiles too."""
    result: dict[str, Any] = {"received": count, "first": first, "last": last}
    if delays is not None:
        result.update(latency_summary(delays, n))
    return result


async def consume_counter(nats_url: str, n: int, latency: bool) -> dict[str, Any]:
    """A bare NATS protocol reader that only counts messages, so it is never the bottleneck.

    With ``latency``, it also reads each message's ``ts`` (the firehose's
    ``perf_counter_ns`` when it wrote the message) and records how long before the read
    that brought the message in it was written.
    """
    host, _, port = nats_url.removeprefix("nats://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
        b"SUB md.> 1\r\nPING\r\n"
    )
    buf = b""
    count = 0
    first = last = 0.0
    ready = False
    delays: list[int] = []
    try:
        while count < n:
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 20), STALL_SECONDS)
            except asyncio.TimeoutError:
                break
            arrived = clock_ns()
            if not chunk:
                break
            buf += chunk
            pos = 0
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                head = buf[pos : pos + 4]
                if head in (b"HMSG", b"MSG "):
                    end = eol + 2 + int(buf[buf.rfind(b" ", pos, eol) + 1 : eol]) + 2
                    if end > len(buf):
                        break
                    if latency:
                        ts = buf.find(b'"ts":', eol, end) + 5
                        delays.append(arrived - int(buf[ts : buf.find(b",", ts, end)]))
                    pos = end
                    count += 1
                    continue
                if head == b"PING":
                    writer.write(b"PONG\r\n")
                elif head == b"PONG" and not ready:
                    ready = True
                    print("READY", flush=True)
                pos = eol + 2
            buf = buf[pos:]
            now = clock()
            if count and not first:
                first = now
            last = now
    finally:
        writer.close()
    return consumer_result(count, first, last, delays if latency else None, n)


def child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["relay", "consume"])
    parser.add_argument("--consumer", default="counter")
    parser.add_argument("--mode", default="raw")
    parser.add_argument("--ws", default="")
    parser.add_argument("--nats", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--latency", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.role == "consume":
            consume = consume_counter if args.consumer == "counter" else consume_nats_py
            result = asyncio.run(consume(args.nats, args.messages, args.latency))
        else:
            base, _, transport = args.mode.partition("@")
            jetstream = base.endswith("-js")
            if base.startswith("raw"):
                loads = json.loads if base == "raw-json" else None
                result = asyncio.run(relay_raw(args.ws, args.nats, jetstream, loads))
            elif base.startswith("relay"):
                result = asyncio.run(
                    relay_collector(
                        args.ws, args.nats, jetstream, transport or "websockets", args.messages
                    )
                )
            else:
                result = asyncio.run(
                    relay_rxws(args.ws, args.nats, jetstream, transport or "websockets")
                )
        result["ok"] = True
    except Exception as exc:  # BenchFailure too: the run fails, the benchmark goes on
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------- orchestration


async def read_result(proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return {"ok": False, "error": "timed out"}
    for line in reversed(out.decode().splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    return {"ok": False, "error": f"no result (exit {proc.returncode})"}


async def fresh_stream(nc: Any) -> None:
    """A new ``BENCH`` stream: the message ids of the previous run are still in its window."""
    from rxws import nats

    with contextlib.suppress(Exception):
        await nc.jsm().delete_stream(STREAM)
    await nats.ensure_stream(nc, STREAM, ["md.>"], duplicate_window=30)


async def relay_through(
    mode: str, url: str, nats_url: str, n: int, consumer_kind: str, latency: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a consumer, wait until it is subscribed, relay ``url`` to it; both results."""
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--nats", nats_url, "--messages", str(n)]
    watch = ["--latency"] if latency else []
    consumer = await asyncio.create_subprocess_exec(
        *me,
        "consume",
        "--consumer",
        consumer_kind,
        *watch,
        *common,
        stdout=asyncio.subprocess.PIPE,
    )
    assert consumer.stdout is not None
    ready = await asyncio.wait_for(consumer.stdout.readline(), 30)
    if not ready.startswith(b"READY"):
        consumer.kill()
        await consumer.wait()
        return {"ok": False, "error": "the consumer did not start"}, {}
    relay = await asyncio.create_subprocess_exec(
        *me, "relay", "--mode", mode, "--ws", url, *common, stdout=asyncio.subprocess.PIPE
    )
    relayed = await read_result(relay, 300)
    received = await read_result(consumer, 300)
    return relayed, received


async def run_once(
    mode: str,
    ws: str,
    nats_url: str,
    nc: Any,
    n: int,
    consumer_kind: str,
    rate: float | None = None,
) -> dict[str, Any]:
    """One run: ``n`` trades as fast as they come, or paced at ``rate`` for the latency."""
    if is_jetstream(mode):
        await fresh_stream(nc)
    paced = rate is not None
    url = f"{ws}/?paced={rate}&n={n}&k={SYMBOLS}" if paced else f"{ws}/?n={n}&k={SYMBOLS}"
    relayed, received = await relay_through(mode, url, nats_url, n, consumer_kind, paced)
    if not relayed.get("ok"):
        return relayed
    if not received.get("ok") or received["received"] != n:
        got = received.get("error") or f"{received.get('received')} of {n}"
        return {"ok": False, "error": f"the consumer got {got}"}
    if paced:
        return {"ok": True, **{k: v for k, v in received.items() if k.endswith("_us")}}
    seconds = received["last"] - relayed["opened"]
    return {
        "ok": True,
        "e2e": (n - 1) / seconds,
        "relay": n / (relayed["done"] - relayed["opened"]),
        **{k: v for k, v in relayed.items() if k in ("acked", "dropped")},
    }


def is_jetstream(mode: str) -> bool:
    return mode.split("@")[0].endswith("-js")


def describe(result: dict[str, Any]) -> str:
    if not result.get("ok"):
        return f"FAILED: {result.get('error')}"
    if "p99_us" in result:
        return f"p50 {result['p50_us']:,.0f} us, p99 {result['p99_us']:,.0f} us"
    return f"e2e {fmt_rate(result['e2e'])} msg/s, relay {fmt_rate(result['relay'])} msg/s"


def throughput_medians(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    medians = {}
    for mode, runs in results.items():
        ok = [run for run in runs if run.get("ok")]
        if ok:
            medians[mode] = {
                "e2e": statistics.median(run["e2e"] for run in ok),
                "relay": statistics.median(run["relay"] for run in ok),
                "min_e2e": min(run["e2e"] for run in ok),
                "max_e2e": max(run["e2e"] for run in ok),
                "runs": len(ok),
            }
    for mode, m in medians.items():
        base = medians.get("raw-js" if is_jetstream(mode) else "raw")
        m["x_raw"] = m["e2e"] / base["e2e"] if base else None
    return medians


def throughput_table(medians: dict[str, dict[str, Any]], rounds: int) -> str:
    rows = [
        [
            mode,
            fmt_rate(m["e2e"]),
            f"{fmt_rate(m['min_e2e'])}-{fmt_rate(m['max_e2e'])}",
            "-" if m["x_raw"] is None else f"{m['x_raw']:.2f}",
            fmt_rate(m["relay"]),
            f"{m['runs']}/{rounds}",
        ]
        for mode, m in medians.items()
    ]
    header = ["mode", "end to end msg/s", "min-max", "x its raw loop", "relay msg/s", "ok"]
    return table(header, rows)


def latency_medians(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    medians = {}
    for mode, runs in results.items():
        ok = [run for run in runs if run.get("ok")]
        if ok:
            medians[mode] = {
                key: statistics.median(run[key] for run in ok)
                for key in ("p50_us", "p99_us", "p999_us", "max_us")
            }
            medians[mode]["best_p99_us"] = min(run["p99_us"] for run in ok)
            medians[mode]["runs"] = len(ok)
    for mode, m in medians.items():
        base = medians.get("raw-js" if is_jetstream(mode) else "raw")
        m["p99_x_raw"] = m["p99_us"] / base["p99_us"] if base else None
    return medians


def latency_table(medians: dict[str, dict[str, Any]], rounds: int) -> str:
    best = {mode: m["best_p99_us"] for mode, m in medians.items()}
    rows = [
        [
            mode,
            f"{m['p50_us']:,.0f}",
            f"{m['p99_us']:,.0f}",
            f"{m['p999_us']:,.0f}",
            "-" if m["p99_x_raw"] is None else f"{m['p99_x_raw']:.2f}",
            f"{m['best_p99_us']:,.0f}",
            fmt_ratio(m["best_p99_us"], best.get("raw-js" if is_jetstream(mode) else "raw")),
            f"{m['runs']}/{rounds}",
        ]
        for mode, m in medians.items()
    ]
    header = ["mode", "p50 us", "p99 us", "p99.9 us", "p99 x raw", "best p99 us", "best x raw"]
    return table([*header, "ok"], rows)


# (mode, what it is, the least ratio to the raw loop's end-to-end rate the issue asks for)
THROUGHPUT_TARGETS = (
    ("rxws", "rxws.nats.publish, websockets", 0.9),
    ("relay", "rxws relay collector, websockets", 0.9),
    ("rxws@picows", "rxws.nats.publish, picows + {parser}", 1.3),
    ("relay@picows", "rxws relay collector, picows + {parser}", 1.3),
)
LATENCY_TARGETS = (
    ("rxws", "rxws.nats.publish, websockets"),
    ("relay", "rxws relay collector, websockets"),
    ("rxws@picows", "rxws.nats.publish, picows"),
    ("relay@picows", "rxws relay collector, picows"),
)


def targets(
    tp: dict[str, dict[str, Any]], lat: dict[str, dict[str, Any]], parser: str, rate: float
) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and whether it holds."""
    rows: list[dict[str, Any]] = []
    json_loop = tp.get("raw-json", {}).get("e2e")
    for mode, what, limit in THROUGHPUT_TARGETS:
        if mode in tp:
            value = tp[mode]["x_raw"]
            rows.append(
                {
                    "target": f"end to end msg/s, {what.format(parser=parser)}",
                    "limit": f">= {limit} x raw",
                    "measured": value,
                    "holds": check(value, limit, at_least=True),
                    "x_raw_json": tp[mode]["e2e"] / json_loop if json_loop else None,
                }
            )
    for mode, what in LATENCY_TARGETS:
        if mode in lat:
            value = lat[mode]["p99_x_raw"]
            rows.append(
                {
                    "target": f"p99 at {rate:,.0f} msg/s, {what}",
                    "limit": "reported (x raw p99)",
                    "measured": value,
                    "holds": "-",
                    "x_raw_json": None,
                }
            )
    return rows


def targets_table(rows: list[dict[str, Any]]) -> str:
    cells = [
        [
            row["target"],
            row["limit"],
            "-" if row["measured"] is None else f"{row['measured']:.2f}",
            row["holds"],
            "-" if row["x_raw_json"] is None else f"{row['x_raw_json']:.2f}",
        ]
        for row in rows
    ]
    return table(["target", "limit", "measured", "holds", "(x raw-json)"], cells)


def available(modes: str) -> list[str]:
    chosen = [mode for mode in modes.split(",") if mode]
    if importlib.util.find_spec("picows") is None:
        chosen = [mode for mode in chosen if not mode.endswith("@picows")]
    return chosen


async def orchestrate(args: argparse.Namespace) -> int:
    import nats as nats_py

    from rxws.codec import HAVE_ORJSON
    from rxws.testing import NatsServer

    modes = available(args.modes)
    latency_modes = available(args.latency_modes)
    paced = max(200, int(args.latency_rate * args.latency_seconds))
    started = clock()
    server = Server()
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    latencies: dict[str, list[dict[str, Any]]] = {mode: [] for mode in latency_modes}
    try:
        async with NatsServer() as nats_server:
            nc = await nats_py.connect(nats_server.url)
            try:
                if modes:
                    progress(f"throughput: {args.rounds} round(s) of {args.messages:,} messages")
                for r in range(1, args.rounds + 1):
                    for mode in modes:
                        result = await run_once(
                            mode, server.url, nats_server.url, nc, args.messages, args.consumer
                        )
                        results[mode].append(result)
                        progress(f"  round {r}/{args.rounds}  {mode:<12} {describe(result)}")
                if latency_modes:
                    progress(
                        f"latency: {args.rounds} round(s) of {paced:,} messages "
                        f"at {args.latency_rate:,.0f} msg/s"
                    )
                for r in range(1, args.rounds + 1):
                    for mode in latency_modes:
                        result = await run_once(
                            mode,
                            server.url,
                            nats_server.url,
                            nc,
                            paced,
                            args.consumer,
                            args.latency_rate,
                        )
                        latencies[mode].append(result)
                        progress(f"  round {r}/{args.rounds}  {mode:<12} {describe(result)}")
            finally:
                await nc.close()
    finally:
        server.stop()
    medians = throughput_medians(results)
    lat = latency_medians(latencies)
    parser_name = "orjson" if HAVE_ORJSON else "json"
    goals = targets(medians, lat, parser_name, args.latency_rate)
    print(f"\nParser {parser_name}, consumer {args.consumer}, took {clock() - started:,.0f} s.\n")
    if medians:
        print(
            f"Throughput, median of {args.rounds} alternating round(s), "
            f"{args.messages:,} messages per run:\n"
        )
        print(throughput_table(medians, args.rounds) + "\n")
    if lat:
        print(
            f"Latency firehose -> consumer at {args.latency_rate:,.0f} msg/s, {paced:,} "
            f"messages per run, median over {args.rounds} round(s) of each run's "
            "percentiles (first tenth skipped), and the lowest p99 of the rounds:\n"
        )
        print(latency_table(lat, args.rounds) + "\n")
    if goals:
        print("Targets:\n")
        print(targets_table(goals))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "runs": results,
                    "medians": medians,
                    "latency": {"runs": latencies, "medians": lat},
                    "targets": goals,
                },
                indent=2,
            )
        )
    return 0 if len(medians) == len(modes) and len(lat) == len(latency_modes) else 1


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("relay", "consume"):
        child(sys.argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--modes",
        default="raw,raw-json,rxws,relay,rxws@picows,relay@picows,raw-js,rxws-js,relay-js",
        help="throughput modes, comma-separated ('' for none)",
    )
    parser.add_argument(
        "--latency-modes",
        default="raw,rxws,relay,rxws@picows,relay@picows",
        help="latency modes, comma-separated ('' for none)",
    )
    parser.add_argument("--latency-rate", type=float, default=20_000.0, help="paced msg/s")
    parser.add_argument(
        "--latency-seconds", type=float, default=3.0, help="length of a latency run"
    )
    parser.add_argument(
        "--consumer",
        choices=["counter", "nats-py"],
        default="counter",
        help="a bare protocol reader that only counts (default), or a nats-py subscriber",
    )
    parser.add_argument("--json", default="")
    return asyncio.run(orchestrate(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
