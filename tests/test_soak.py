"""The chaos soak (benchmarks/soak.py), briefly on each transport, and its bookkeeping."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SOAK_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def load_soak() -> ModuleType:
    name = "rxws_benchmarks_soak"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SOAK_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


soak = load_soak()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_soak(transport: str) -> None:
    # About 10 s of faults per transport: every kind comes up at least once.
    report = await soak.soak(seconds=10.0, seed=8, transport=transport)
    print(report.format())  # shown with -s, and on failure
    assert set(report.faults) == set(soak.FAULT_KINDS), report.format()
    assert report.recovered == report.injected, report.format()
    assert report.unrecovered == [] and report.unexpected == [], report.format()
    assert report.longest_recovery < 5.0, report.format()
    assert report.messages > 500, report.format()
    assert report.messages == report.tapped == report.stream_messages, report.format()
    assert report.repeats == 0, report.format()
    assert report.lost == 0, report.format()
    assert report.consumer_error is None, report.format()
    assert report.rotations >= 3, report.format()
    assert report.reconnects >= report.faults["cut"], report.format()
    assert report.resubscribed >= report.connections > 0, report.format()
    assert report.tasks_end == report.tasks_start, report.format()
    assert report.sockets_end == report.sockets_start, report.format()
    assert report.rss_growth < 10 * 2**20, report.format()
    assert report.error_logs == [], report.format()
    assert report.ok, report.format()


def test_gaps_outside_fault_windows_are_loss() -> None:
    windows = [(10, 20), (50, 60)]
    lost, inside, outside = soak.classify_gaps([(12, 19), (10, 20), (30, 33), (55, 61)], windows)
    assert inside == 6 + 9
    assert lost == 2 + 5
    assert outside == [(30, 33), (55, 61)]


def test_a_failed_report_says_why() -> None:
    report: Any = soak.SoakReport(seconds=1.0, seed=0, transport="websockets")
    assert not report.ok and "no fault was injected" in report.problems
    report.faults = {"cut": 1}
    report.recovered = 1
    report.messages = report.tapped = report.stream_messages = 10
    assert report.ok, report.problems
    report.repeats = 1
    report.lost = 3
    report.sockets_end = 1
    assert report.problems == [
        "1 repeated message(s)",
        "3 message(s) lost outside fault windows",
        "sockets: 0 at the start, 1 at the end",
    ]
    assert "FAIL" in report.format()
