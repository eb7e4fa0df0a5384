"""rxws benchmarks: throughput, latency and memory against a local firehose server.

Starts ``benchmarks/firehose.py`` in its own process (so the client is the bottleneck),
then runs each client mode of ``benchmarks/clients.py`` in a fresh child process,
alternating the modes round by round (round 1: A B C ..., round 2: A B C ...), and
prints the median of each mode over the rounds:

- throughput: messages per second from the first message to the last, the ratio to
  the ``raw`` websockets loop (``json.loads``) and to ``raw-orjson`` (the same loop
  with the parser rxws uses) in the same run, and the child's peak RSS;
- latency: p50/p99/p99.9 delivery latency at a paced rate (server send time to the
  subscriber, on one shared monotonic clock);
- memory: RSS growth for many idle ``client.stream()`` subscriptions, and RSS along a
  long ``client-1000`` run (flat means no leak);
- the targets of the benchmark issue, each with its value and whether it holds.

Usage::

    python benchmarks/run.py                 # the full run (a few minutes)
    python benchmarks/run.py --quick         # fewer messages and rounds
    python benchmarks/run.py --modes raw,connect,client-1000 --rounds 3 --json out.json

Absolute numbers drift on shared machines; compare the ratios taken in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLIENTS = HERE / "clients.py"
SERVER = HERE / "firehose.py"

DEFAULT_STREAMS = (1, 100, 1000, 10_000)
DEFAULT_LATENCY_MODES = ("lat-raw", "lat-connect", "lat-client-1000", "lat-bridge")
SEED_MESSAGES_DIVISOR = 200  # the seed reads a few hundred messages a second
MIN_MESSAGES = 200


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def default_modes(streams: Sequence[int]) -> list[str]:
    modes = ["raw", "raw-orjson", "connect"]
    modes += [f"client-{k}" for k in streams]
    modes += [f"share-{k}" for k in streams]
    modes += ["bridge", "compat-1000"]
    if installed("AsyncWebsocketStreamInterface"):
        modes.append("seed-1000")
    if installed("picows"):
        modes += ["connect@picows", "client-1000@picows", "picows"]
    if not installed("orjson"):
        modes.remove("raw-orjson")
    return modes


def messages_for(mode: str, messages: int) -> int:
    """How many messages a mode reads: the slow modes get fewer, so each run is short.

    ``share-K`` pushes every message through ``K`` filters (about 2.5 million filter
    calls a second), so it reads ``messages * 10 / K``; the seed reads ``messages / 200``.
    Rates are per second either way.
    """
    if mode.startswith("share-") and mode[len("share-") :].isdigit():
        k = int(mode[len("share-") :])
        return max(MIN_MESSAGES, min(messages, messages * 10 // max(k, 1)))
    if mode.startswith("seed-"):
        return max(MIN_MESSAGES, messages // SEED_MESSAGES_DIVISOR)
    return messages


# ---------------------------------------------------------------------- processes


class Server:
    """The firehose server process (``script`` with ``args``: another server that says PORT)."""

    def __init__(self, script: Path = SERVER, *args: str) -> None:
        # The server stops when its stdin closes, so it cannot outlive this process.
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args, "--watch-stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise SystemExit(f"the firehose server did not start (it said {line!r})")
        self.url = f"ws://127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def run_child(
    mode: str, url: str, messages: int, timeout: float, rate: float | None = None
) -> dict[str, Any]:
    """Run one mode in a fresh interpreter; its ``RESULT`` line as a dict."""
    cmd = [sys.executable, str(CLIENTS), mode, "--url", url, "--messages", str(messages)]
    cmd += ["--timeout", str(timeout)]
    if rate is not None:
        cmd += ["--rate", str(rate)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "messages": messages, "ok": False, "error": "child timed out"}
    wall = time.perf_counter() - started
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            result["wall_seconds"] = wall
            if not result.get("ok"):
                result.setdefault("stderr", proc.stderr[-2000:])
            return result
    tail = (proc.stderr or proc.stdout)[-500:].strip()
    return {"mode": mode, "messages": messages, "ok": False, "error": f"no result: {tail}"}


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def exit_status(results: dict[str, list[dict[str, Any]]], also: Sequence[str] = ()) -> int:
    """Say which modes failed in every round (and which of ``also`` failed): 1 if any."""
    failed = [mode for mode, runs in results.items() if not any(r.get("ok") for r in runs)]
    failed += also
    if failed:
        progress(f"every round failed for: {', '.join(failed)}")
    return 1 if failed else 0


def rounds_of(
    modes: Sequence[str],
    rounds: int,
    run: Callable[[str], dict[str, Any]],
    describe: Callable[[dict[str, Any]], str],
) -> dict[str, list[dict[str, Any]]]:
    """Run every mode once per round, in the same order each round."""
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for r in range(1, rounds + 1):
        for mode in modes:
            result = run(mode)
            results[mode].append(result)
            shown = describe(result) if result.get("ok") else f"FAILED: {result.get('error')}"
            progress(f"  round {r}/{rounds}  {mode:<16} {shown}")
    return results


# ---------------------------------------------------------------------- summaries


def median_of(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if r.get("ok") and key in r]
    return statistics.median(values) if values else None


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    ratio = value / base
    if ratio >= 100:
        return f"{ratio:,.0f}"
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table, padded for the terminal."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def throughput_summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for mode, runs in results.items():
        rates = [r["rate"] for r in runs if r.get("ok")]
        summary[mode] = {
            "messages": runs[0]["messages"] if runs else 0,
            "rounds_ok": len(rates),
            "rounds": len(runs),
            "median_rate": statistics.median(rates) if rates else None,
            "min_rate": min(rates) if rates else None,
            "max_rate": max(rates) if rates else None,
            "peak_rss_mb": median_of(runs, "peak_rss_mb"),
            "errors": sorted({str(r.get("error")) for r in runs if not r.get("ok")}),
        }
    raw = summary.get("raw", {}).get("median_rate")
    like = summary.get("raw-orjson", {}).get("median_rate")
    for entry in summary.values():
        rate = entry["median_rate"]
        entry["x_raw"] = rate / raw if rate is not None and raw else None
        entry["x_raw_orjson"] = rate / like if rate is not None and like else None
    return summary


def throughput_table(summary: dict[str, dict[str, Any]]) -> str:
    raw = summary.get("raw", {}).get("median_rate")
    like = summary.get("raw-orjson", {}).get("median_rate")
    rows = []
    for mode, s in summary.items():
        spread = (
            f"{fmt_rate(s['min_rate'])}-{fmt_rate(s['max_rate'])}"
            if s["median_rate"] is not None
            else "FAILED"
        )
        rows.append(
            [
                mode,
                f"{s['messages']:,}",
                fmt_rate(s["median_rate"]),
                spread,
                fmt_ratio(s["median_rate"], raw),
                fmt_ratio(s["median_rate"], like),
                "-" if s["peak_rss_mb"] is None else f"{s['peak_rss_mb']:.0f}",
                f"{s['rounds_ok']}/{s['rounds']}",
            ]
        )
    header = ["mode", "messages", "msg/s (median)", "min-max", "x raw", "x raw-orjson"]
    return table([*header, "peak RSS MB", "ok"], rows)


def latency_summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {
        mode: {
            "p50_us": median_of(runs, "p50_us"),
            "p99_us": median_of(runs, "p99_us"),
            "p999_us": median_of(runs, "p999_us"),
            "best_p99_us": min((r["p99_us"] for r in runs if r.get("ok")), default=None),
            "rounds_ok": sum(1 for r in runs if r.get("ok")),
            "rounds": len(runs),
            "errors": sorted({str(r.get("error")) for r in runs if not r.get("ok")}),
        }
        for mode, runs in results.items()
    }


def latency_table(summary: dict[str, dict[str, Any]]) -> str:
    base = summary.get("lat-raw", {}).get("p99_us")

    def us(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}"

    best = summary.get("lat-raw", {}).get("best_p99_us")
    rows = [
        [
            mode,
            us(s["p50_us"]),
            us(s["p99_us"]),
            us(s["p999_us"]),
            fmt_ratio(s["p99_us"], base),
            us(s["best_p99_us"]),
            fmt_ratio(s["best_p99_us"], best),
            f"{s['rounds_ok']}/{s['rounds']}",
        ]
        for mode, s in summary.items()
    ]
    header = ["mode", "p50 us", "p99 us", "p99.9 us", "p99 x raw", "best p99 us", "best x raw"]
    return table([*header, "ok"], rows)


def check(value: float | None, limit: float, at_least: bool) -> str:
    if value is None:
        return "n/a"
    return "yes" if (value >= limit if at_least else value <= limit) else "NO"


def targets(
    tp: dict[str, dict[str, Any]],
    lat: dict[str, dict[str, Any]],
    memory: dict[str, Any],
) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it holds."""
    out: list[dict[str, Any]] = []

    def ratio_target(name: str, mode: str, limit: float) -> None:
        value = tp.get(mode, {}).get("x_raw")
        out.append(
            {
                "target": name,
                "limit": f">= {limit} x raw",
                "value": value,
                "holds": check(value, limit, True),
                "x_raw_orjson": tp.get(mode, {}).get("x_raw_orjson"),
            }
        )

    ratio_target("rxws.connect, one subscriber", "connect", 0.85)
    ratio_target("WebSocketClient, 1,000 streams", "client-1000", 0.6)
    ratio_target("WebSocketClient, 10,000 streams", "client-10000", 0.5)
    ratio_target("async for bridge", "bridge", 0.6)
    compat = tp.get("compat-1000", {}).get("median_rate")
    seed = tp.get("seed-1000", {}).get("median_rate")
    value = compat / seed if compat and seed else None
    out.append(
        {
            "target": "compat, 1,000 streams, vs the seed",
            "limit": ">= 100 x seed-1000",
            "value": value,
            "holds": check(value, 100, True),
        }
    )
    base = lat.get("lat-raw", {}).get("p99_us")
    for mode in lat:
        if mode == "lat-raw":
            continue
        p99 = lat[mode]["p99_us"]
        value = p99 / base if p99 is not None and base else None
        out.append(
            {
                "target": f"p99 latency, {mode[4:]}",
                "limit": "<= 1.5 x raw p99",
                "value": value,
                "holds": check(value, 1.5, False),
            }
        )
    idle = memory.get("idle")
    if idle:
        value = idle["growth_mb"] * 100_000 / idle["streams"] if idle.get("ok") else None
        name = "100,000 idle streams"
        if idle.get("ok") and idle["streams"] != 100_000:
            name += f" (scaled from {idle['streams']:,})"
        out.append(
            {
                "target": name,
                "limit": "<= 150 MB",
                "value": value,
                "holds": check(value, 150, False),
            }
        )
    return out


def targets_table(rows: list[dict[str, Any]]) -> str:
    def shown(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.2f}" if v < 100 else f"{v:,.0f}"

    return table(
        ["target", "limit", "measured", "holds", "(x raw-orjson)"],
        [
            [r["target"], r["limit"], shown(r["value"]), r["holds"], shown(r.get("x_raw_orjson"))]
            for r in rows
        ],
    )


def memory_text(memory: dict[str, Any]) -> str:
    lines = []
    idle = memory.get("idle")
    if idle:
        if idle.get("ok"):
            lines.append(
                f"- {idle['streams']:,} idle client.stream() subscriptions: RSS "
                f"{idle['rss_before_mb']:.1f} -> {idle['rss_after_mb']:.1f} MB "
                f"(+{idle['growth_mb']:.1f} MB, {idle['bytes_per_stream']:,.0f} bytes each); "
                f"subscribing took {idle['subscribe_seconds']:.2f} s, disposing "
                f"{idle['dispose_seconds']:.2f} s; {idle['after_dispose_mb']:.1f} MB after "
                "disposing them all"
            )
        else:
            lines.append(f"- idle streams: FAILED: {idle.get('error')}")
    long = memory.get("long")
    if long:
        if long.get("ok"):
            lines.append(
                f"- {long['messages']:,} messages through client-1000 at "
                f"{long['rate']:,.0f} msg/s: RSS {long['rss_warm_mb']:.1f} MB after the "
                f"first tenth, {long['rss_end_mb']:.1f} MB at the end "
                f"({long['growth_mb']:+.1f} MB)"
            )
        else:
            lines.append(f"- long run: FAILED: {long.get('error')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="rxws throughput, latency and memory benchmarks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--messages", type=int, help="messages per throughput run [200000]")
    parser.add_argument(
        "--streams",
        default=",".join(map(str, DEFAULT_STREAMS)),
        help="stream counts for the client-K and share-K modes",
    )
    parser.add_argument("--rounds", type=int, help="rounds of every mode [5]")
    parser.add_argument(
        "--modes", help="comma-separated throughput modes (default: all available; '' for none)"
    )
    parser.add_argument(
        "--latency-modes",
        default=",".join(DEFAULT_LATENCY_MODES),
        help="comma-separated latency modes ('' for none)",
    )
    parser.add_argument("--latency-rate", type=float, default=20_000.0, help="paced msg/s")
    parser.add_argument("--latency-seconds", type=float, help="length of a latency run [3]")
    parser.add_argument(
        "--idle-streams",
        type=int,
        default=100_000,
        help="idle client.stream() subscriptions for the memory figure (0: skip)",
    )
    parser.add_argument(
        "--long-messages", type=int, help="messages of the long memory run [1000000] (0: skip)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per child run, seconds")
    parser.add_argument("--json", metavar="PATH", help="write every result and summary here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="50,000 messages, 3 rounds, 1 s latency runs, a 200,000-message long run",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.messages is None:
        args.messages = 50_000 if quick else 200_000
    if args.rounds is None:
        args.rounds = 3 if quick else 5
    if args.latency_seconds is None:
        args.latency_seconds = 1.0 if quick else 3.0
    if args.long_messages is None:
        args.long_messages = 200_000 if quick else 1_000_000
    try:
        args.streams = [int(s) for s in args.streams.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--streams must be comma-separated integers, got {args.streams!r}")

    def split(text: str) -> list[str]:
        return [m.strip() for m in text.split(",") if m.strip()]

    args.modes = default_modes(args.streams) if args.modes is None else split(args.modes)
    args.latency_modes = split(args.latency_modes)
    if args.messages < 2 or args.rounds < 1:
        parser.error("--messages must be >= 2 and --rounds >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else list(argv))
    machine = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform}"
    server = Server()
    try:
        progress(f"firehose server at {server.url}; {machine}")
        tp_results: dict[str, list[dict[str, Any]]] = {}
        if args.modes:
            progress(f"throughput: {args.rounds} round(s) of {', '.join(args.modes)}")
            tp_results = rounds_of(
                args.modes,
                args.rounds,
                lambda m: run_child(m, server.url, messages_for(m, args.messages), args.timeout),
                lambda r: f"{r['rate']:>12,.0f} msg/s  ({r['received']:,} msgs)",
            )
        lat_results: dict[str, list[dict[str, Any]]] = {}
        if args.latency_modes:
            n = max(MIN_MESSAGES, int(args.latency_rate * args.latency_seconds))
            progress(f"latency: {args.rounds} round(s) at {args.latency_rate:,.0f} msg/s")
            lat_results = rounds_of(
                args.latency_modes,
                args.rounds,
                lambda m: run_child(m, server.url, n, args.timeout, args.latency_rate),
                lambda r: (
                    f"p50 {r['p50_us']:,.0f} us  p99 {r['p99_us']:,.0f} us  "
                    f"p99.9 {r['p999_us']:,.0f} us"
                ),
            )
        memory: dict[str, Any] = {}
        if args.idle_streams:
            progress(f"memory: {args.idle_streams:,} idle streams")
            memory["idle"] = run_child(f"mem-idle-{args.idle_streams}", server.url, 0, args.timeout)
        if args.long_messages:
            progress(f"memory: {args.long_messages:,} messages through client-1000")
            memory["long"] = run_child(
                "mem-long-1000", server.url, args.long_messages, args.timeout
            )
    finally:
        server.stop()

    tp = throughput_summary(tp_results)
    lat = latency_summary(lat_results)
    goals = targets(tp, lat, memory)
    elapsed = time.perf_counter() - started
    out = [f"command: {command.strip()}", f"machine: {machine}; took {elapsed:.0f} s", ""]
    if tp:
        out += [
            f"Throughput, median of {args.rounds} alternating round(s), "
            f"{args.messages:,} messages per run (fewer for share-K and seed):",
            "",
            throughput_table(tp),
            "",
        ]
    if lat:
        out += [
            f"Latency at {args.latency_rate:,.0f} msg/s, median over {args.rounds} round(s) "
            "of each run's percentiles, and the lowest p99 of the rounds (first tenth of "
            "each run skipped):",
            "",
            latency_table(lat),
            "",
        ]
    if memory:
        out += ["Memory:", "", memory_text(memory), ""]
    if goals:
        out += ["Targets:", "", targets_table(goals), ""]
    print("\n".join(out))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": command.strip(),
                    "machine": machine,
                    "seconds": elapsed,
                    "args": {k: v for k, v in vars(args).items() if k != "json"},
                    "throughput": {"summary": tp, "runs": tp_results},
                    "latency": {"summary": lat, "runs": lat_results},
                    "memory": memory,
                    "targets": goals,
                },
                indent=2,
            )
        )
    broken = [name for name, r in memory.items() if not r.get("ok")]
    return exit_status({**tp_results, **lat_results}, broken)


if __name__ == "__main__":
    sys.exit(main())
