"""The benchmark harness runs end to end and reports numbers (speed is not asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"
SHARDING = ROOT / "benchmarks" / "sharding.py"


def bench(
    script: Path, cwd: Path, *args: str, timeout: float = 50
) -> subprocess.CompletedProcess[str]:
    """Run a benchmark script with ``args`` in ``cwd``; its output as text."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def test_a_tiny_run_reports_every_mode(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = bench(
        RUN,
        tmp_path,
        "--messages=2000",
        "--rounds=1",
        "--modes=raw,connect,client-10,share-10,bridge",
        "--latency-modes=lat-raw,lat-client-10",
        "--latency-rate=5000",
        "--latency-seconds=0.2",
        "--idle-streams=500",
        "--long-messages=3000",
        f"--json={out}",
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
    proc = bench(
        RUN,
        tmp_path,
        "--messages=100",
        "--rounds=1",
        "--modes=raw,no-such-mode",
        "--latency-modes=",
        "--idle-streams=0",
        "--long-messages=0",
        timeout=30,
    )
    assert proc.returncode == 1
    assert "every round failed for: no-such-mode" in proc.stderr
    assert "FAILED" in proc.stdout


def test_the_sharding_benchmark_reports_throughput_and_subscribe_time(tmp_path: Path) -> None:
    out = tmp_path / "sharding.json"
    modes = ["raw", "raw-conns", "shard", "shard-json@picows"]
    proc = bench(
        SHARDING,
        tmp_path,
        "--topics=300",
        "--per-connection=100",
        "--messages=3000",
        "--rounds=1",
        "--rate=2.5",
        "--topics-per-frame=40",
        f"--modes={','.join(modes)}",
        f"--json={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())

    summary = report["summary"]
    assert list(summary) == modes
    for mode, entry in summary.items():
        assert entry["rounds_ok"] == 1, (mode, entry["errors"])
        assert entry["median_rate"] > 0
        assert report["runs"][mode][0]["received"] == 3000
    assert summary["raw"]["x_raw"] == 1.0
    assert summary["raw-conns"]["connections"] == 3
    assert summary["shard"]["x_raw_per_round"] == [pytest.approx(summary["shard"]["x_raw"])]

    # 300 topics at 100 a connection: 3 connections, 3 SUBSCRIBEs of at most 40 each.
    for mode in ("shard", "shard-json@picows"):
        run = report["runs"][mode][0]
        assert run["topics_per_connection"] == [100, 100, 100]
        assert run["frames"] == 9
        assert run["first_request_seconds"] <= run["subscribe_seconds"]
        assert run["subscribe_seconds"] <= run["every_topic_seconds"]
        # Paced at 2 frames (0.8 x 2.5) per 1.05 s: a connection's third frame left
        # 1.05 s after its first.
        assert run["last_request_seconds"] - run["first_request_seconds"] >= 1.05 * 0.99
    assert report["least_subscribe_seconds"] == pytest.approx(2 / 2.5)
    assert report["paced_subscribe_seconds"] == pytest.approx(1.05)

    names = [t["target"] for t in report["targets"]]
    assert names == [
        "shard: total msg/s",
        "shard@picows: total msg/s",
        "shard: time to subscribe every topic",
    ]
    assert "command: python benchmarks/sharding.py" in proc.stdout
    assert "| shard-json@picows " in proc.stdout
    assert "all acked s" in proc.stdout


PEERS = ROOT / "benchmarks" / "peers.py"


def test_the_peers_benchmark_runs_rxws_beside_the_raw_loops(tmp_path: Path) -> None:
    pytest.importorskip("picows")
    pytest.importorskip("orjson")
    before = tmp_path / "before"
    shutil.copytree(ROOT / "rxws", before / "rxws")
    out = tmp_path / "peers.json"
    modes = ["raw", "ceiling", "ceiling-20x2", "connect", "client-20x2@fast"]
    proc = bench(
        PEERS,
        tmp_path,
        "--messages=2000",
        "--rounds=1",
        f"--modes={','.join(modes)}",
        f"--compare={before}",
        f"--json={out}",
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    summary = report["summary"]
    # --compare runs each rxws mode again from the other copy, in the same round.
    assert list(summary) == [
        "raw",
        "ceiling",
        "ceiling-20x2",
        "connect",
        "connect~before",
        "client-20x2@fast",
        "client-20x2@fast~before",
    ]
    runs = {mode: entries[0] for mode, entries in report["runs"].items()}
    for mode, run in runs.items():
        assert run["ok"], (mode, run.get("error"))
        assert run["received"] == 2000
        assert run["peak_rss_mb"] > 0
        assert summary[mode]["median_rate"] > 0
    # 20 streams, 2 on each of 10 symbols: every message reaches two of them.
    assert runs["ceiling-20x2"]["deliveries"] == 4000
    assert runs["client-20x2@fast"]["deliveries"] == 4000
    assert summary["client-20x2@fast"]["ceiling"] == "ceiling-20x2"
    assert summary["raw"]["x_raw"] == 1.0
    # The default install parses with json (orjson hidden), the fast extras with orjson.
    assert runs["connect"]["orjson"] is False
    assert runs["client-20x2@fast"]["orjson"] is True
    assert Path(runs["connect"]["rxws_from"]) == ROOT
    assert Path(runs["connect~before"]["rxws_from"]) == before
    assert len(summary["connect"]["x_before_per_round"]) == 1
    assert "| client-20x2@fast~before " in proc.stdout
    assert "fast: connect" in proc.stdout


@pytest.mark.parametrize(
    ("mode", "module"), [("cryptofeed", "cryptofeed"), ("python-binance", "binance")]
)
def test_the_peers_benchmark_runs_a_peer_on_the_local_firehose(
    tmp_path: Path, mode: str, module: str
) -> None:
    pytest.importorskip(module, reason=f"{mode} is not installed (pip install {mode})")
    out = tmp_path / "peers.json"
    proc = bench(
        PEERS,
        tmp_path,
        "--messages=2000",
        "--rounds=1",
        f"--modes=raw,{mode},{mode}-20x2",
        f"--json={out}",
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for name in (mode, f"{mode}-20x2"):
        run = report["runs"][name][0]
        assert run["ok"], (name, run.get("error"))
        # python-binance drops the last messages before a server's close; it says how many.
        assert run["received"] + run.get("lost", 0) == 2000
        assert run["received"] > 0
        assert report["summary"][name]["peak_rss_mb"] > 0
    # Routed by hand: 20 subscribers, 2 on each of 10 symbols.
    routed = report["runs"][f"{mode}-20x2"][0]
    assert routed["deliveries"] == 2 * routed["received"]
    assert report["summary"][f"{mode}-20x2"]["ceiling"] == "ceiling-20x2"
    assert report["versions"][mode]
    assert report["targets"][-1]["target"] == "default: client, 10 streams"  # no rxws row ran


def test_the_peers_benchmark_breaks_the_fast_path_down_in_process(tmp_path: Path) -> None:
    pytest.importorskip("picows")
    pytest.importorskip("orjson")
    proc = bench(PEERS, tmp_path, "--layers", "--messages=300", "--rounds=1", timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| c")]
    assert [row.split("|")[1].strip() for row in rows] == ["connect", "client-10", "client-1000x10"]
    for row in rows:
        ceiling, mine = (float(cell.replace(",", "")) for cell in row.split("|")[2:4])
        assert ceiling > 0
        assert mine > 0
