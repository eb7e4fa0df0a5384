"""README.rst runs as written: every Python example, every ``rxws`` command it shows.

The examples read the demo exchange that ``rxws exchange`` serves on its default port,
8765, as the README tells a reader to start it, and those about many connections read
``rxws exchange --combined --port 8766``. Here both run with ``--port 0`` in processes
of their own (each example calls ``asyncio.run``, so it runs in this test's thread,
where no loop is running), and the only substitutions made are their ports for
``:8765`` and ``:8766``. The testing example defines an async test; it is run as
pytest-asyncio's auto mode would run it.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rxws.cli import parse_args

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.rst").read_text(encoding="utf-8")
DEADLINE = 15.0


def code_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """The ``.. code-block:: <language>`` directives: (line number, dedented body)."""
    blocks = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != f".. code-block:: {language}":
            continue
        body: list[str] = []
        for follow in lines[i + 1 :]:
            if follow.strip() and not follow.startswith("   "):
                break
            body.append(follow[3:])
        blocks.append((i + 1, "\n".join(body).strip("\n") + "\n"))
    return blocks


PYTHON = code_blocks(README, "python")
CONSOLE = [body for _, body in code_blocks(README, "console")]


@pytest.fixture(scope="module")
def exchange_port() -> Iterator[int]:
    """``rxws exchange --port 0`` in a process of its own."""
    yield from exchange_process()


@pytest.fixture(scope="module")
def combined_port() -> Iterator[int]:
    """``rxws exchange --combined --port 0`` (many topics, Binance-like)."""
    yield from exchange_process("--combined")


def exchange_process(*options: str) -> Iterator[int]:
    """``rxws exchange --port 0`` with ``options``, in a process of its own: its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rxws", "exchange", "--port", "0", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
        assert found, line
        yield int(found.group(1))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0


def test_the_readme_has_examples_to_run() -> None:
    assert len(PYTHON) >= 8
    assert all("asyncio.run(main())" in b or "async def test_" in b for _, b in PYTHON)


# A block that defines async tests (the testing section) has them run after it.
_RUN_TESTS = """

import asyncio as _asyncio

for _name, _test in list(globals().items()):
    if _name.startswith("test_") and callable(_test):
        _asyncio.run(_test())
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("block", [b for _, b in PYTHON], ids=[f"line{n}" for n, _ in PYTHON])
def test_python_example_runs_as_written(block: str, exchange_port: int, combined_port: int) -> None:
    # Each block runs as a reader would run it: a script of its own, in a new process,
    # where a socket or task left behind shows as a ResourceWarning on stderr.
    code = block.replace(":8765", f":{exchange_port}").replace(":8766", f":{combined_port}")
    proc = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", code + _RUN_TESTS],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ResourceWarning" not in proc.stderr, proc.stderr[-3000:]
    out = proc.stdout
    if "async def test_" not in block:
        assert out.strip(), "an example should show what it did"
        assert "Error" not in out and ": False" not in out, out


def test_the_testing_example_says_how_to_run_async_tests() -> None:
    section = README.split("Testing your own pipelines", 1)[1].split("\nMigrating", 1)[0]
    assert "pytest-asyncio" in section
    assert 'asyncio_mode = "auto"' in section
    assert "import rxws" in code_blocks(section, "python")[0][1]


def test_the_first_section_has_exactly_two_commands() -> None:
    first = README.split("\nWhat you get\n", 1)[0]
    commands = [body for _, body in code_blocks(first, "console")]
    assert len(commands) == 2
    assert all(len(c.strip().splitlines()) == 1 for c in commands)
    assert commands[0].strip().endswith(".venv/bin/rxws demo")
    assert commands[1].strip().endswith(".venv/bin/pytest")


def rxws_commands() -> list[list[str]]:
    """Every ``rxws ...`` command line of the console blocks (synopses excluded)."""
    commands = []
    for block in CONSOLE:
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part)
                if not words or not words[0].endswith("rxws") or "[" in part:
                    continue
                commands.append(words[1:])
    return commands


@pytest.mark.parametrize("argv", rxws_commands(), ids=" ".join)
def test_every_rxws_command_in_the_readme_is_valid(argv: list[str]) -> None:
    parse_args(argv)  # exits 2 on anything the command line does not accept


def test_the_readme_links_to_the_docs_and_every_notebook() -> None:
    assert "<docs/index.rst>`_" in README
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for name in notebooks:
        assert f"<notebooks/{name}>`_" in README
