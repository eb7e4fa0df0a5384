"""Cost of rxws.Router per message, with 1, 1,000 and 10,000 non-matching streams.

Pushes dict messages through a ``reactivex`` Subject into a Router (no asyncio, no
socket: only the fan-out is measured). Each setup has N streams filtered on N distinct
symbols plus one stream on a common symbol:

- ``common``: every message carries the common symbol, so it matches one stream and the
  N others do not;
- ``rotating``: the messages cycle over the N distinct symbols, each matching one of
  them (a different one each time).

Both should cost the same with 1 or 10,000 streams. The ``router`` column is the
cost above the floor. Two reference rows: the Subject with
one subscriber and no Router (the floor), and a Router whose streams are all
unfiltered (the fast path without an index lookup).

Usage: ``python benchmarks/router_cost.py [--messages N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

from reactivex.subject import Subject

from rxws.router import Router

COMMON = "COMMON"


def make_messages(count: int, symbols: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "e": "trade",
            "E": 1_700_000_000_000 + i,
            "s": symbols[i % len(symbols)],
            "t": i,
            "p": "101.25",
            "q": "0.5",
            "seq": i,
        }
        for i in range(count)
    ]


def best_ns_per_message(run: Callable[[], None], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter_ns()
            run()
            elapsed = time.perf_counter_ns() - start
        finally:
            gc.enable()
        best = min(best, elapsed / count)
    return best


class Counter:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, msg: Any) -> None:
        self.n += 1


def bench_plain_subject(messages: list[dict[str, Any]], repeat: int) -> float:
    subject: Subject[Any] = Subject()
    counter = Counter()
    subject.subscribe(counter)
    push = subject.on_next

    def run() -> None:
        for msg in messages:
            push(msg)

    result = best_ns_per_message(run, len(messages), repeat)
    assert counter.n == len(messages) * repeat
    return result


def bench_router(
    messages: list[dict[str, Any]], streams: int, repeat: int, *, unfiltered: bool = False
) -> tuple[float, int]:
    subject: Subject[Any] = Subject()
    router: Router[Any] = Router(subject)
    counters = []
    subscriptions = []
    for i in range(streams):
        counter = Counter()
        counters.append(counter)
        filters = None if unfiltered else [{"s": f"SYM{i}"}]
        subscriptions.append(router.stream(filters).subscribe(counter))
    common = Counter()
    counters.append(common)
    subscriptions.append(router.stream(None if unfiltered else [{"s": COMMON}]).subscribe(common))
    push = subject.on_next

    def run() -> None:
        for msg in messages:
            push(msg)

    result = best_ns_per_message(run, len(messages), repeat)
    delivered = sum(c.n for c in counters) // repeat
    for subscription in subscriptions:
        subscription.dispose()
    assert not router.connected
    return result, delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    count, repeat = args.messages, args.repeat

    common = make_messages(count, [COMMON])
    print(f"rxws.Router: ns per message, best of {repeat} runs of {count:,} messages")
    print(f"{'setup':<44} {'ns/msg':>8} {'router':>8} {'delivered/msg':>14}")
    floor = bench_plain_subject(common, repeat)
    print(f"{'Subject, 1 subscriber, no Router':<44} {floor:8.0f} {0:8.0f} {1:14.2f}")
    ns, delivered = bench_router(common, 0, repeat, unfiltered=True)
    label = "Router, 1 unfiltered stream (fast path)"
    print(f"{label:<44} {ns:8.0f} {ns - floor:8.0f} {delivered / count:14.2f}")
    for streams in (1, 1_000, 10_000):
        ns, delivered = bench_router(common, streams, repeat)
        label = f"common:   {streams:,} + 1 filtered streams"
        print(f"{label:<44} {ns:8.0f} {ns - floor:8.0f} {delivered / count:14.2f}")
    for streams in (1, 1_000, 10_000):
        rotating = make_messages(count, [f"SYM{i}" for i in range(streams)])
        ns, delivered = bench_router(rotating, streams, repeat)
        label = f"rotating: {streams:,} + 1 filtered streams"
        print(f"{label:<44} {ns:8.0f} {ns - floor:8.0f} {delivered / count:14.2f}")
    # Control: the same 10,000 streams, but the messages rotate over only 1,000 of them.
    # If this costs what "rotating: 1,000" costs, any rise in "rotating: 10,000" comes
    # from touching more distinct (matching) streams, i.e. CPU caches, not from the
    # streams that do not match.
    rotating = make_messages(count, [f"SYM{i}" for i in range(1_000)])
    ns, delivered = bench_router(rotating, 10_000, repeat)
    label = "rotating over 1,000 of 10,000 + 1 streams"
    print(f"{label:<44} {ns:8.0f} {ns - floor:8.0f} {delivered / count:14.2f}")


if __name__ == "__main__":
    main()
