"""Where the memory of an idle stream goes: bytes per subscription, layer by layer.

Subscribes ``N`` streams, each filtered on its own symbol, at three depths (each in a
fresh process, so one does not leave memory behind for the next):

- ``index``: ``FilterIndex.add([{"s": sym}], target)`` alone;
- ``router``: ``Router(Subject()).stream([{"s": sym}]).subscribe(fn)``;
- ``router-traced``: the same (for a fifth of ``N``) under ``tracemalloc``, listing
  the source lines that allocate what stays alive, per subscription.

Each line also gives the objects per stream that the cyclic GC tracks (what makes
subscribing slow when there are many: every collection walks them).

Usage: ``python benchmarks/stream_memory.py [--streams N] [--top K]``
(the idle-stream figure of ``run.py`` measures a whole ``WebSocketClient``).
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time
import tracemalloc
from typing import Any


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def noop(msg: Any) -> None:
    pass


def child(depth: str, n: int, top: int) -> None:
    from reactivex.subject import Subject

    import rxws

    symbols = [f"SYM{i}" for i in range(n)]  # the filters' own strings are not counted
    filters = [[{"s": s}] for s in symbols]
    kept: list[Any] = [None] * n
    if depth == "index":
        index: rxws.FilterIndex[Any] = rxws.FilterIndex()
        gc.collect()
        tracked = len(gc.get_objects())
        before, started = rss(), time.perf_counter()
        for i, f in enumerate(filters):
            kept[i] = index.add(f, noop)
    else:
        router: rxws.Router[Any] = rxws.Router(Subject())
        router.stream([{"s": "warm"}]).subscribe(noop)
        if depth == "router-traced":
            tracemalloc.start(2)
            snapshot = tracemalloc.take_snapshot()
        gc.collect()
        tracked = len(gc.get_objects())
        before, started = rss(), time.perf_counter()
        for i, f in enumerate(filters):
            kept[i] = router.stream(f).subscribe(noop)
    took = time.perf_counter() - started
    gc.collect()
    grown = rss() - before
    objects = (len(gc.get_objects()) - tracked) / n
    if depth != "router-traced":
        print(
            f"{depth:14} {grown / n:7,.0f} bytes per stream (RSS), {took / n * 1e6:5.1f} us each, "
            f"{objects:.1f} GC-tracked objects"
        )
        return
    stats = tracemalloc.take_snapshot().compare_to(snapshot, "traceback")
    total = sum(s.size_diff for s in stats)
    print(
        f"{depth:14} {total / n:7,.0f} bytes per stream traced, {objects:.1f} GC-tracked "
        "objects; the biggest allocation sites:"
    )
    for stat in [s for s in stats if abs(s.size_diff) >= n][:top]:  # 1 byte per stream or more
        # Name the caller of threading.RLock, not threading.py itself.
        frames = [f for f in stat.traceback if not f.filename.endswith("threading.py")]
        frame = frames[-1] if frames else stat.traceback[0]
        where = frame.filename.split("site-packages/")[-1].split(os.sep + "rxws" + os.sep)[-1]
        lock = " (an RLock)" if len(frames) < len(stat.traceback) else ""
        print(
            f"{'':14} {stat.size_diff / n:7,.0f} B  {stat.count_diff / n:4.1f} objects  "
            f"{where}:{frame.lineno}{lock}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--depth", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.depth:
        child(args.depth, args.streams, args.top)
        return
    for depth in ("index", "router", "router-traced"):
        n = args.streams if depth != "router-traced" else max(1, args.streams // 5)
        cmd = [sys.executable, __file__, "--depth", depth, f"--streams={n}", f"--top={args.top}"]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
