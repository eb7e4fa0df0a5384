"""Run the Autobahn|Testsuite fuzzing server against rxws, once per transport.

Usage (from the project's own venv)::

    python compliance/run.py                       # cases 1.* to 10.*, both transports
    python compliance/run.py --cases '5.*,7.1.*'   # some cases only
    python compliance/run.py --transport picows    # one transport

The first run builds ``compliance/.venv27``, a Python 2.7 virtualenv with
``autobahntestsuite`` and its pinned dependencies (``requirements-py27.txt``); later
runs reuse it. The fuzzing server runs on 127.0.0.1 at a free port. For every case,
an echo client written on rxws's public API (``rxws.connect(url, parse=None,
on_open=...)``, each message sent back with the connection's ``send``) connects with
each transport. At the end the script prints, per transport, how many cases came out
OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED and FAILED, and every case whose
outcome on picows differs from websockets'. The HTML and JSON reports are kept in
``compliance/reports/``.

Exit status: 0 when picows fails no case that websockets passes, 1 when it does, 2
when the test suite could not be installed or started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rxws

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv27"
REPORTS = HERE / "reports"
REQUIREMENTS = HERE / "requirements-py27.txt"
LAUNCHER = HERE / "fuzzingserver.py"
# The last virtualenv that is one module and runs on Python 2.7 without other packages.
VIRTUALENV = "virtualenv==16.7.12"
TRANSPORTS = ("websockets", "picows")
BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
DEFAULT_CASES = ",".join(f"{n}.*" for n in range(1, 11))  # 12.* and 13.*: compression
MAX_SIZE = 2**25  # case 9.1.6 sends a 16 MiB message


class SetupError(Exception):
    """The test suite could not be installed or started (the message says why)."""


# ------------------------------------------------------------------ the 2.7 virtualenv


def find_python27() -> str:
    """The Python 2.7 interpreter: $RXWS_PYTHON27, pyenv's 2.7, or ``python2.7`` on PATH."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [os.environ.get("RXWS_PYTHON27")]
    candidates += [str(p / "bin" / "python") for p in sorted((root / "versions").glob("2.7*"))]
    candidates.append(shutil.which("python2.7"))
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", "import sys; assert sys.version_info[:2] == (2, 7)"]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return candidate
    raise SetupError(
        "no working Python 2.7 found (Autobahn|Testsuite runs on 2.7 only): install one "
        "(pyenv install 2.7.18) or set RXWS_PYTHON27 to its interpreter"
    )


def _run(command: list[str], what: str, **kwargs: Any) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        detail = "\n".join(line for line in output if "is ignored" not in line)
        raise SetupError(f"{what} failed (exit {result.returncode}):\n{detail}")


def ensure_venv() -> Path:
    """Build compliance/.venv27 unless it holds exactly requirements-py27.txt already.

    Returns:
        The virtualenv's python.
    """
    python = VENV / "bin" / "python"
    stamp = VENV / "requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    python27 = find_python27()
    print(f"building {VENV.relative_to(HERE.parent)} with {python27} (once)", flush=True)
    shutil.rmtree(VENV, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="rxws-virtualenv-") as boot:
        _run(
            [python27, "-m", "pip", "install", "--quiet", "--target", boot, VIRTUALENV],
            f"installing {VIRTUALENV} for Python 2.7",
        )
        env = {**os.environ, "PYTHONPATH": boot}
        _run(
            [python27, "-m", "virtualenv", "--no-download", str(VENV)],
            "creating the Python 2.7 virtualenv",
            env=env,
        )
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
        "installing autobahntestsuite (pip install -r compliance/requirements-py27.txt)",
    )
    stamp.write_text(wanted + "\n")
    return python


# ------------------------------------------------------------------ the fuzzing server


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def fuzzing_server(python: Path, cases: list[str], workdir: Path) -> Iterator[str]:
    """Run the fuzzing server on 127.0.0.1 for ``cases``; yields its ws:// URL."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    spec = workdir / "fuzzingserver.json"
    spec.write_text(
        json.dumps(
            {
                "url": url,
                "outdir": str(REPORTS),
                "cases": cases,
                "exclude-cases": [],
                "exclude-agent-cases": {},
            }
        )
    )
    log_path = workdir / "fuzzingserver.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [str(python), str(LAUNCHER), str(spec)],
            cwd=workdir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise SetupError(f"the fuzzing server exited:\n{log_path.read_text()}")
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                if time.monotonic() > deadline:
                    raise SetupError(f"the fuzzing server did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ------------------------------------------------------------------ the echo client


async def collect(url: str, parse: Any = None) -> list[Any]:
    """Every message of one connection to ``url`` (the suite's control endpoints)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    items: list[Any] = []

    def finish(_: object = None) -> None:
        if not done.done():
            done.set_result(None)

    sub = rxws.connect(url, parse=parse).subscribe(items.append, finish, finish)
    try:
        await asyncio.wait_for(done, 120)
    finally:
        sub.dispose()
    return items


async def echo(url: str, transport: str, timeout: float) -> bool:
    """Connect with ``transport`` and send every message back until the case ends.

    Returns:
        Whether the case ended by itself within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    outbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
    connections: list[Any] = []

    async def on_open(connection: Any) -> None:
        connections.append(connection)

    def finish(_: object = None) -> None:
        if not done.done():
            done.set_result(None)

    async def send_back() -> None:
        while (message := await outbox.get()) is not None:
            try:
                await connections[-1].send(message)
            except Exception:  # the case closed the connection meanwhile
                return

    source = rxws.connect(url, parse=None, on_open=on_open, transport=transport, max_size=MAX_SIZE)
    sender = loop.create_task(send_back())
    sub = source.subscribe(outbox.put_nowait, finish, finish)
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
        ended = True
    except asyncio.TimeoutError:
        ended = False
    finally:
        sub.dispose()
        outbox.put_nowait(None)
        await sender
    return ended


async def run_cases(base: str, transport: str, timeout: float) -> None:
    """Every case of the server, then its report, for one transport."""
    agent = f"rxws-{transport}"
    [count] = await collect(f"{base}/getCaseCount", parse=json.loads)
    started = time.monotonic()
    live = sys.stdout.isatty()
    for case in range(1, int(count) + 1):
        [info] = await collect(f"{base}/getCaseInfo?case={case}", parse=json.loads)
        if live:
            print(f"\r{transport}: case {case}/{count} ({info['id']})    ", end="", flush=True)
        if not await echo(f"{base}/runCase?case={case}&agent={agent}", transport, timeout):
            print(f"\n{transport}: case {info['id']} did not end within {timeout} s")
    end = "\r" if live else ""
    print(f"{end}{transport}: {count} cases in {time.monotonic() - started:.0f} s        ")
    await collect(f"{base}/updateReports?agent={agent}")


# ------------------------------------------------------------------ the results


def case_key(case_id: str) -> tuple[int, ...]:
    """Sort key for Autobahn case ids ("9.10.2" after "9.2.1")."""
    return tuple(int(part) for part in case_id.split("."))


def outcome(result: dict[str, Any]) -> str:
    """A case's behaviour, with its closing behaviour when that one is not OK."""
    behavior = str(result["behavior"])
    close = str(result.get("behaviorClose"))
    if close not in ("OK", "INFORMATIONAL"):
        return f"{behavior} (close: {close})"
    return behavior


def report(results: dict[str, dict[str, Any]], transports: list[str]) -> str:
    """The table of counts per transport, the failures, and picows' differences."""
    lines = []
    width = max(len(t) for t in transports) + 2
    header = "transport".ljust(width) + "".join(f"{b:>15}" for b in BEHAVIORS) + "   total"
    lines += [header, "-" * len(header)]
    for transport in transports:
        mine = results[f"rxws-{transport}"]
        counts = [sum(r["behavior"] == b for r in mine.values()) for b in BEHAVIORS]
        row = transport.ljust(width) + "".join(f"{c:>15}" for c in counts)
        lines.append(f"{row}{len(mine):>8}")
    for transport in transports:
        mine = results[f"rxws-{transport}"]
        failed = sorted((c for c, r in mine.items() if r["behavior"] == "FAILED"), key=case_key)
        lines.append(f"\nFAILED on {transport}: {', '.join(failed) or 'none'}")
    if set(TRANSPORTS) <= set(transports):
        ref, fast = results["rxws-websockets"], results["rxws-picows"]
        differ = [c for c in sorted(ref, key=case_key) if outcome(ref[c]) != outcome(fast[c])]
        lines.append(f"\ncases where picows differs from websockets: {len(differ) or 'none'}")
        lines += [
            f"  {c:<10} websockets: {outcome(ref[c])}; picows: {outcome(fast[c])}" for c in differ
        ]
    return "\n".join(lines)


def regressions(results: dict[str, dict[str, Any]]) -> list[str]:
    """Cases picows fails that websockets does not fail."""
    ref, fast = results["rxws-websockets"], results["rxws-picows"]
    return [
        case
        for case in sorted(fast, key=case_key)
        if fast[case]["behavior"] == "FAILED" and ref.get(case, {}).get("behavior") != "FAILED"
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the suite; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        default=DEFAULT_CASES,
        help=f"comma-separated case patterns (default: {DEFAULT_CASES})",
    )
    parser.add_argument(
        "--transport",
        action="append",
        choices=TRANSPORTS,
        help="a transport to test (repeat for both; default: both)",
    )
    parser.add_argument(
        "--case-timeout",
        type=float,
        default=120.0,
        help="longest wait for one case, in seconds (default: 120)",
    )
    parser.add_argument("--verbose", action="store_true", help="show rxws's log lines")
    args = parser.parse_args(argv)
    transports = args.transport or list(TRANSPORTS)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL)
    try:
        python = ensure_venv()
        shutil.rmtree(REPORTS, ignore_errors=True)
        with (
            tempfile.TemporaryDirectory(prefix="rxws-autobahn-") as work,
            fuzzing_server(python, cases, Path(work)) as base,
        ):
            for transport in transports:
                asyncio.run(run_cases(base, transport, args.case_timeout))
    except SetupError as exc:
        print(f"compliance: {exc}", file=sys.stderr)
        return 2
    results = json.loads((REPORTS / "index.json").read_text())
    print()
    print(report(results, transports))
    print(f"\nreports: {REPORTS / 'index.html'}")
    if set(TRANSPORTS) <= set(transports) and (worse := regressions(results)):
        print(f"picows fails cases that websockets passes: {', '.join(worse)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
