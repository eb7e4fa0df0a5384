"""Many topics, many connections: rxws's sharded client against the firehose.

Two figures, both from child processes run in alternating rounds against one
``firehose.py`` server process (medians over the rounds, ratios to a baseline measured
in the same run):

- **Throughput**: ``T`` topics (5,000) at ``C`` per connection (1,024, so 5
  connections), each subscribed through ``client.topic(name)`` by one counting
  callback, reading ``N`` messages in Binance's combined-stream format in total
  (``N / T`` per topic) from the firehose's topics mode. The reference is the raw
  websockets loop ``async for m in ws: json.loads(m)`` reading the same ``N`` messages
  (same format, topics cycling over the same ``T``) on one connection (``raw``), and the
  same loop with ``orjson.loads`` (``raw-orjson``).
- **Subscribe time**: from the first ``topic()`` call until every SUBSCRIBE is
  acknowledged, and until every topic delivered its first message (the firehose starts
  a run's messages only once all its topics are subscribed), against the least time the
  limits allow: per connection, ``F = ceil(topics on it / topics_per_frame)`` frames,
  the first at once and one every ``1 / messages_per_second`` after it, connections in
  parallel, each starting when the connection budget lets it.

Modes: ``raw``, ``raw-orjson`` (when orjson is installed), ``raw-conns`` (the raw
loop on as many connections as the client opens, each reading its share: what several
connections cost without rxws), ``shard`` (the client as installed: it parses with
orjson when orjson is there), ``shard-json`` (the same with ``parse=json.loads``), and
either with ``@picows`` (``transport="picows"``).

Usage::

    python benchmarks/sharding.py                      # 5,000 topics, 3 rounds
    python benchmarks/sharding.py --rounds 5 --json /tmp/sharding.json
    python -m cProfile -o /tmp/shard.prof benchmarks/sharding.py --child shard \\
        --url ws://127.0.0.1:PORT                      # one mode by hand, profiled

The limits the client is given (``--rate``, ``--per-connection``, a connection budget
of 300 per 300 s) are not enforced by the firehose; the client respects them anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clients import (
    BenchFailure,
    Tally,
    mark_open,
    peak_rss_bytes,
    throughput,
    wait_done,
)
from run import (
    Server,
    progress,
    rounds_of,
    table,
    targets_table,
    throughput_summary,
    throughput_table,
)
from run import (
    median_of as median,
)

SCRIPT = Path(__file__).resolve()

clock = time.perf_counter

CONNECTION_BUDGET = (300, 300.0)  # Binance spot: 300 connection attempts per 5 minutes
# The client's pacing (rxws/_shards.py): at most this share of messages_per_second
# (rounded down, at least 1) frames in any window of PACING_WINDOW seconds.
PACING_SHARE = 0.8
PACING_WINDOW = 1.05
TARGETS = {"shard": 0.9, "shard@picows": 1.5}  # x raw, from the sharding issue
SUBSCRIBE_TARGET = 1.2  # x the least time the limits allow


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def default_modes() -> list[str]:
    modes = ["raw", "raw-orjson", "raw-conns", "shard", "shard-json"]
    modes += ["shard@picows", "shard-json@picows"]
    if not installed("orjson"):
        modes.remove("raw-orjson")
    if not installed("picows"):
        modes = [m for m in modes if not m.endswith("@picows")]
    return modes


def topic_names(count: int) -> list[str]:
    """The topics of a run; the firehose's combined mode cycles over the same names."""
    return [f"sym{i}@trade" for i in range(count)]


def plan(topics: int, per_connection: int) -> list[int]:
    """Topics on each connection when the client fills each one up to its cap."""
    return [min(per_connection, topics - start) for start in range(0, topics, per_connection)]


def least_subscribe_seconds(
    topics: int,
    per_connection: int,
    topics_per_frame: int,
    rate: float,
    budget: tuple[int, float] = CONNECTION_BUDGET,
    *,
    paced: bool = False,
) -> float:
    """The least time from the first connection attempt to the last SUBSCRIBE sent.

    Connection ``j`` may start at ``(j // attempts) * window`` (the connection budget),
    then sends its ``F`` frames, the first at once: at ``rate`` a second it is done
    ``(F - 1) / rate`` seconds after it opened. With ``paced``, at the client's own
    pacing instead: bursts of ``PACING_SHARE * rate`` frames, one per ``PACING_WINDOW``.
    Connections run in parallel.
    """
    attempts, window = budget
    burst = max(1, int(rate * PACING_SHARE))
    worst = 0.0
    for j, load in enumerate(plan(topics, per_connection)):
        frames = math.ceil(load / topics_per_frame)
        sending = ((frames - 1) // burst) * PACING_WINDOW if paced else (frames - 1) / rate
        worst = max(worst, (j // attempts) * window + sending)
    return worst


# ---------------------------------------------------------------------- child modes


class TopicTally:
    """One topic's counting callback; tells ``Finish`` when the topic got all it should."""

    __slots__ = ("finish", "first", "goal", "last", "n")

    def __init__(self, goal: int, finish: Finish) -> None:
        self.n = 0
        self.first = 0.0
        self.last = 0.0
        self.goal = goal
        self.finish = finish

    def __call__(self, msg: Any) -> None:
        n = self.n = self.n + 1
        t = self.last = clock()
        if n == 1:
            self.first = t
        if n == self.goal:
            self.finish.topic_done()


class Finish:
    """Counts the topics that got all their messages; ``done`` once every one has."""

    def __init__(self, topics: int) -> None:
        self.left = topics
        self.done = asyncio.Event()
        self.errors: list[BaseException] = []

    def topic_done(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()

    def failed(self, error: BaseException) -> None:
        self.errors.append(error)
        self.done.set()


async def run_raw(base: str, n: int, topics: int, loads: Callable[[Any], Any]) -> dict[str, Any]:
    """``async for m in ws: loads(m)`` over one connection reading all ``n`` messages."""
    from websockets.asyncio.client import connect

    tally = Tally()
    async with connect(f"{base}/?n={n}&k={topics}&combined=1") as ws:
        mark_open()
        async for msg in ws:
            tally(loads(msg))
    return throughput(n, tally.n, tally.first, tally.last)


async def run_raw_conns(args: argparse.Namespace, base: str) -> dict[str, Any]:
    """The raw loop on as many connections as the sharded client opens, one task each.

    Connection ``j`` reads the messages of the topics the client would put on it; this
    separates what several connections cost from what rxws adds.
    """
    from websockets.asyncio.client import connect

    tally = Tally()
    loads = json.loads
    per = args.messages // args.topics

    async def one(load: int) -> None:
        async with connect(f"{base}/?n={per * load}&k={load}&combined=1") as ws:
            mark_open()
            async for msg in ws:
                tally(loads(msg))

    loads_of = plan(args.topics, args.per_connection)
    await asyncio.gather(*(one(load) for load in loads_of))
    result = throughput(args.messages, tally.n, tally.first, tally.last)
    result["connections"] = len(loads_of)
    return result


async def run_shard(
    base: str, args: argparse.Namespace, parse_json: bool, transport: str
) -> dict[str, Any]:
    """``args.topics`` topics, each counted by its own callback, over a sharded client."""
    import rxws
    from rxws.protocols import Binance

    per = max(1, args.messages // args.topics)
    n = per * args.topics
    url = f"{base}/?topics={args.topics}&per={per}&run={uuid.uuid4().hex}"
    limits = rxws.Limits(
        streams_per_connection=args.per_connection,
        messages_per_second=args.rate,
        connections_per_window=CONNECTION_BUDGET,
    )
    extra: dict[str, Any] = {"parse": json.loads} if parse_json else {}
    client = rxws.WebSocketClient(
        url,
        subscriptions=Binance(topics_per_frame=args.topics_per_frame),
        limits=limits,
        transport=transport,
        **extra,
    )
    finish = Finish(args.topics)
    tallies = [TopicTally(per, finish) for _ in range(args.topics)]
    acks: list[float] = []  # when each SUBSCRIBE's reply was handled
    received: list[float] = []  # when the server read each SUBSCRIBE (its clock: the same)
    acked = asyncio.Event()
    expected_acks = [0]
    nonfatal: list[str] = []

    def on_message(msg: Any) -> None:
        # Until every SUBSCRIBE is acknowledged; disposed before the messages flow.
        if isinstance(msg, dict) and "result" in msg and "id" in msg:
            acks.append(clock())
            received.append(msg.get("ts", 0) / 1e9)
            if len(acks) == expected_acks[0]:
                acked.set()

    client.errors.subscribe(lambda e: nonfatal.append(repr(e)))
    ack_watch = client.messages.subscribe(on_message)
    try:
        started = clock()
        for name, tally in zip(topic_names(args.topics), tallies, strict=True):
            client.topic(name).subscribe(tally, finish.failed)
        called = clock()
        shards = [s.topics for s in client.stats.per_connection]
        expected_acks[0] = sum(math.ceil(t / args.topics_per_frame) for t in shards)
        try:
            await asyncio.wait_for(acked.wait(), args.timeout)
        except asyncio.TimeoutError:
            raise BenchFailure(
                f"{len(acks)} of {expected_acks[0]} SUBSCRIBEs acknowledged "
                f"after {args.timeout:.0f} s"
            ) from None
        ack_watch.dispose()
        await wait_done(finish.done, lambda: sum(t.n for t in tallies), args.timeout)
        ended = clock()
    finally:
        ack_watch.dispose()
        await client.close()
    if finish.errors:
        raise BenchFailure(f"a topic failed: {finish.errors[0]!r}")
    wrong = [(i, t.n) for i, t in enumerate(tallies) if t.n != per]
    if wrong:
        raise BenchFailure(f"{len(wrong)} topics got the wrong count, e.g. {wrong[:3]}")
    first = min(t.first for t in tallies)
    last = max(t.last for t in tallies)
    result = throughput(n, sum(t.n for t in tallies), first, last)
    result.update(
        {
            "connections": len(shards),
            "topics_per_connection": shards,
            "frames": expected_acks[0],
            "call_seconds": called - started,
            "first_request_seconds": min(received) - started,
            "last_request_seconds": max(received) - started,
            "subscribe_seconds": acks[-1] - started,
            "every_topic_seconds": max(t.first for t in tallies) - started,
            "run_seconds": ended - started,
            "nonfatal_errors": nonfatal[:5],
        }
    )
    return result


def child(args: argparse.Namespace) -> int:
    """Run one mode in this process and print its ``RESULT`` line."""
    base = args.url.rstrip("/")
    mode, _, transport = args.child.partition("@")
    result: dict[str, Any] = {"mode": args.child, "messages": args.messages}

    def job() -> Any:
        if transport and mode not in ("shard", "shard-json"):
            raise SystemExit(f"mode {mode!r} does not take a transport (@{transport})")
        if mode == "raw":
            return run_raw(base, args.messages, args.topics, json.loads)
        if mode == "raw-orjson":
            import orjson

            return run_raw(base, args.messages, args.topics, orjson.loads)
        if mode == "raw-conns":
            return run_raw_conns(args, base)
        if mode in ("shard", "shard-json"):
            return run_shard(base, args, mode == "shard-json", transport or "websockets")
        raise SystemExit(f"unknown mode {args.child!r}")

    try:
        result.update(asyncio.run(job()), ok=True)
    except BenchFailure as exc:
        result.update(ok=False, error=str(exc))
    except Exception as exc:
        traceback.print_exc()
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    print("RESULT " + json.dumps({**result, "peak_rss_mb": peak_rss_bytes() / 1e6}), flush=True)
    return 0 if result["ok"] else 1


# ---------------------------------------------------------------------- the parent


def child_command(mode: str, url: str, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "--child",
        mode,
        "--url",
        url,
        "--messages",
        str(args.messages),
        "--topics",
        str(args.topics),
        "--per-connection",
        str(args.per_connection),
        "--rate",
        str(args.rate),
        "--topics-per-frame",
        str(args.topics_per_frame),
        "--timeout",
        str(args.timeout),
    ]


def run_one(mode: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """One child run; its ``RESULT`` as a dict (``ok`` false when it gave none)."""
    try:
        proc = subprocess.run(
            child_command(mode, url, args),
            capture_output=True,
            text=True,
            timeout=args.timeout + 30,
        )
    except subprocess.TimeoutExpired:
        return {"mode": mode, "messages": args.messages, "ok": False, "error": "child timed out"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            if not result.get("ok"):
                result.setdefault("stderr", proc.stderr[-2000:])
            return result
    tail = (proc.stderr or proc.stdout)[-500:].strip()
    return {"mode": mode, "messages": args.messages, "ok": False, "error": f"no result: {tail}"}


def describe(result: dict[str, Any]) -> str:
    text = f"{result['rate']:>12,.0f} msg/s  ({result['received']:,} msgs)"
    if "subscribe_seconds" in result:
        text += (
            f"  subscribed in {result['subscribe_seconds']:.3f} s over "
            f"{result['connections']} connections"
        )
    return text


def summarise(
    results: dict[str, list[dict[str, Any]]], least: float, paced: float
) -> dict[str, dict[str, Any]]:
    """``run.py``'s throughput summary, with the subscribe figures of the sharded modes."""
    summary = throughput_summary(results)
    for mode, runs in results.items():
        entry = summary[mode]
        for key in (
            "connections",
            "frames",
            "call_seconds",
            "first_request_seconds",
            "last_request_seconds",
            "subscribe_seconds",
            "every_topic_seconds",
        ):
            value = median(runs, key)
            if value is not None:
                entry[key] = value
        if "subscribe_seconds" in entry:
            entry["x_least"] = entry["subscribe_seconds"] / least if least else None
            entry["x_paced"] = entry["subscribe_seconds"] / paced if paced else None
        # Each round's rate over the raw loop's in the same round: on a busy machine
        # neighbours in time share more of the load than the medians of whole columns.
        ratios = [
            r["rate"] / b["rate"]
            for r, b in zip(runs, results.get("raw", []), strict=False)
            if r.get("ok") and b.get("ok")
        ]
        entry["x_raw_per_round"] = ratios
    return summary


def per_round_table(summary: dict[str, dict[str, Any]]) -> str:
    rows = [
        [
            mode,
            f"{statistics.median(s['x_raw_per_round']):.2f}",
            f"{min(s['x_raw_per_round']):.2f}-{max(s['x_raw_per_round']):.2f}",
        ]
        for mode, s in summary.items()
        if s["x_raw_per_round"] and mode != "raw"
    ]
    return table(["mode", "x raw, same round (median)", "min-max"], rows)


def subscribe_table(summary: dict[str, dict[str, Any]]) -> str:
    def sec(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    rows = [
        [
            mode,
            f"{s['connections']:.0f}",
            f"{s['frames']:.0f}",
            sec(s.get("call_seconds")),
            sec(s.get("first_request_seconds")),
            sec(s.get("last_request_seconds")),
            sec(s.get("subscribe_seconds")),
            sec(s.get("every_topic_seconds")),
            ratio(s.get("x_least")),
            ratio(s.get("x_paced")),
        ]
        for mode, s in summary.items()
        if "subscribe_seconds" in s
    ]
    header = [
        "mode",
        "connections",
        "frames",
        "topic() calls s",
        "1st SUBSCRIBE s",
        "last SUBSCRIBE s",
    ]
    header += ["all acked s", "every topic s"]
    return table([*header, "x least", "x least paced"], rows)


def targets(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for mode, limit in TARGETS.items():
        value = summary.get(mode, {}).get("x_raw")
        out.append(
            {
                "target": f"{mode}: total msg/s",
                "limit": f">= {limit} x raw",
                "value": value,
                "holds": "n/a" if value is None else ("yes" if value >= limit else "NO"),
                "x_raw_orjson": summary.get(mode, {}).get("x_raw_orjson"),
            }
        )
    value = summary.get("shard", {}).get("x_least")
    out.append(
        {
            "target": "shard: time to subscribe every topic",
            "limit": f"<= {SUBSCRIBE_TARGET} x least",
            "value": value,
            "holds": "n/a" if value is None else ("yes" if value <= SUBSCRIBE_TARGET else "NO"),
        }
    )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="rxws's sharded client: many topics over many connections.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--topics", type=int, default=5000, help="topics subscribed")
    parser.add_argument(
        "--per-connection", type=int, default=1024, help="limits: streams_per_connection"
    )
    parser.add_argument(
        "--messages", type=int, default=200_000, help="messages per run (rounded to per topic)"
    )
    parser.add_argument("--rate", type=float, default=5.0, help="limits: messages_per_second")
    parser.add_argument(
        "--topics-per-frame", type=int, default=200, help="Binance(topics_per_frame=)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of every mode")
    parser.add_argument("--modes", help="comma-separated modes (default: all available)")
    parser.add_argument("--timeout", type=float, default=120.0, help="per child run, seconds")
    parser.add_argument("--json", metavar="PATH", help="write every run and summary here")
    parser.add_argument("--child", metavar="MODE", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("topics", "per_connection", "messages", "topics_per_frame", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be 1 or more")
    if args.rate <= 0:
        parser.error("--rate must be above 0")
    if args.child and not args.url:
        parser.error("--child needs --url ws://127.0.0.1:PORT (a running firehose.py)")
    args.messages = max(1, args.messages // args.topics) * args.topics
    args.modes = (
        default_modes()
        if args.modes is None
        else [m.strip() for m in args.modes.split(",") if m.strip()]
    )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    started = clock()
    command = "python benchmarks/sharding.py " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )
    least = least_subscribe_seconds(
        args.topics, args.per_connection, args.topics_per_frame, args.rate
    )
    paced = least_subscribe_seconds(
        args.topics, args.per_connection, args.topics_per_frame, args.rate, paced=True
    )
    naive = least + 1 / args.rate
    shards = plan(args.topics, args.per_connection)
    server = Server()
    try:
        progress(f"firehose server at {server.url}; {args.rounds} round(s) of {args.modes}")
        results = rounds_of(
            args.modes, args.rounds, lambda m: run_one(m, server.url, args), describe
        )
    finally:
        server.stop()
    summary = summarise(results, least, paced)
    goals = targets(summary)
    elapsed = clock() - started
    frames = [math.ceil(t / args.topics_per_frame) for t in shards]
    out = [
        f"command: {command.strip()}",
        f"took {elapsed:.0f} s",
        "",
        f"{args.topics:,} topics at {args.per_connection:,} per connection "
        f"({len(shards)} connections), {args.messages:,} messages in total "
        f"({args.messages // args.topics} per topic), median of {args.rounds} alternating "
        "round(s):",
        "",
        throughput_table(summary),
        "",
        "Each round's rate over the raw loop's in the same round:",
        "",
        per_round_table(summary),
        "",
        f"Subscribing, seconds from the first topic() call (medians); limits: "
        f"{args.rate:g} messages/s per connection, {args.topics_per_frame} topics per "
        f"frame, so {max(frames)} frames on the fullest connection; connection budget "
        f"{CONNECTION_BUDGET[0]} per {CONNECTION_BUDGET[1]:g} s. Least time the limits "
        f"allow: {least:.3f} s (frames evenly at {args.rate:g}/s, the first at once); at "
        f"the client's pacing ({PACING_SHARE} x that rate, in bursts, per {PACING_WINDOW} s): "
        f"{paced:.3f} s; counting "
        f"a full 1/rate per frame: {naive:.3f} s.",
        "",
        subscribe_table(summary),
        "",
        "Targets:",
        "",
        targets_table(goals),
        "",
    ]
    print("\n".join(out))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": command.strip(),
                    "seconds": elapsed,
                    "args": {k: v for k, v in vars(args).items() if k != "json"},
                    "least_subscribe_seconds": least,
                    "paced_subscribe_seconds": paced,
                    "summary": summary,
                    "runs": results,
                    "targets": goals,
                },
                indent=2,
            )
        )
    failed = [mode for mode, runs in results.items() if not any(r.get("ok") for r in runs)]
    if failed:
        progress(f"every round failed for: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
