"""The benchmark harness runs end to end and reports numbers (speed is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"


def test_a_tiny_run_reports_every_mode(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--messages=2000",
            "--rounds=1",
            "--modes=raw,connect,client-10,share-10,bridge",
            "--latency-modes=lat-raw,lat-client-10",
            "--latency-rate=5000",
            "--latency-seconds=0.2",
            "--idle-streams=500",
            "--long-messages=3000",
            f"--json={out}",
        ],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())

    summary = report["throughput"]["summary"]
    assert list(summary) == ["raw", "connect", "client-10", "share-10", "bridge"]
    for mode, entry in summary.items():
        assert entry["rounds_ok"] == 1, (mode, entry["errors"])
        assert entry["median_rate"] > 0
        assert entry["peak_rss_mb"] > 0
        run = report["throughput"]["runs"][mode][0]
        assert run["received"] == run["messages"]
    assert summary["raw"]["x_raw"] == 1.0
    assert summary["client-10"]["x_raw"] > 0

    latency = report["latency"]["summary"]
    for mode in ("lat-raw", "lat-client-10"):
        assert latency[mode]["rounds_ok"] == 1, latency[mode]["errors"]
        assert 0 < latency[mode]["p50_us"] <= latency[mode]["p99_us"] <= latency[mode]["p999_us"]
        assert latency[mode]["best_p99_us"] == latency[mode]["p99_us"]  # one round

    idle = report["memory"]["idle"]
    assert idle["ok"], idle
    assert idle["streams"] == 500
    assert idle["rss_after_mb"] > 0
    long = report["memory"]["long"]
    assert long["ok"], long
    assert long["received"] == 3000

    names = {t["target"] for t in report["targets"]}
    assert "rxws.connect, one subscriber" in names
    # The printed report holds the command and the tables.
    assert "command: python benchmarks/run.py" in proc.stdout
    assert "| client-10 " in proc.stdout
    assert "| lat-client-10 " in proc.stdout


def test_a_mode_that_cannot_run_is_reported_as_failed(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--messages=100",
            "--rounds=1",
            "--modes=raw,no-such-mode",
            "--latency-modes=",
            "--idle-streams=0",
            "--long-messages=0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "every round failed for: no-such-mode" in proc.stderr
    assert "FAILED" in proc.stdout
