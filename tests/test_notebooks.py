"""The notebooks in notebooks/ run top to bottom, and the outputs committed with them are current.

They are committed with their outputs, plot included, so that they read well where
they are browsed. The committed outputs must come from the cells as they are now (the
notebook's metadata keeps a digest of its code cells), from one run top to bottom,
without an error; a fresh run must give the same kinds of output, cell by cell (the
numbers differ from run to run: they are live data). After changing a notebook,
refresh its outputs with::

    python tests/test_notebooks.py

Each runs against the embedded DemoExchange on loopback, in its own kernel process
(so the suite's leak check does not apply here; the tests are synchronous).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

# jupyter_core warns about its data paths unless told which scheme to use; the suite
# turns warnings into errors.
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = [
    "01-getting-started.ipynb",
    "02-resilience.ipynb",
    "03-migrating.ipynb",
    "04-fan-out-nats.ipynb",
]
CELL_TIMEOUT = 60  # seconds per cell; each notebook takes a few seconds in all
PLOT_SIZE = (900, 350)  # pixels: readable where notebooks are browsed


def digest(nb: Any) -> str:
    """A digest of the notebook's code cells, to tell outputs made from other code."""
    sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def cleared(nb: Any) -> Any:
    fresh = copy.deepcopy(nb)
    for cell in fresh.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return fresh


def execute(nb: Any) -> Any:
    """Run a notebook in a new python3 kernel; raises CellExecutionError if a cell fails."""
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return nb


def code_cells(nb: Any) -> list[Any]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def outputs(nb: Any) -> list[Any]:
    return [out for cell in code_cells(nb) for out in cell.outputs]


def shape(nb: Any) -> list[list[tuple[str, ...]]]:
    """Each code cell's outputs by kind (consecutive text on one stream counts once).

    stderr is left out: what rxws logs there (a WARNING after a run of failed
    attempts) depends on timing; check_outputs looks at it.
    """
    cells = []
    for cell in code_cells(nb):
        kinds: list[tuple[str, ...]] = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                continue
            if out.output_type == "stream":
                kind: tuple[str, ...] = ("stream", out.name)
            else:
                kind = (out.output_type, *sorted(out.get("data", {})))
            if not kinds or kinds[-1] != kind or kind[0] != "stream":
                kinds.append(kind)
        cells.append(kinds)
    return cells


def png_size(data: str) -> tuple[int, int]:
    raw = base64.b64decode(data)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


def text_of(nb: Any) -> str:
    return "".join(
        out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in outputs(nb)
    )


def check_outputs(name: str, nb: Any) -> None:
    """What every run of ``name`` must show: no error, and what it is there to show."""
    for out in outputs(nb):
        assert out.output_type != "error", out
        if out.output_type == "stream" and out.name == "stderr":
            # Nothing alarming on stderr: no traceback, no leaked task, no warning.
            for word in ("Traceback", "Task was destroyed", "Warning", "Error"):
                assert word not in out.text, out.text
    text = text_of(nb)
    if name == "02-resilience.ipynb":
        images = [out for out in outputs(nb) if "image/png" in out.get("data", {})]
        assert len(images) == 1, "the message-rate plot is missing"
        assert png_size(images[0].data["image/png"]) == PLOT_SIZE
        assert "0 missing, 0 repeated, in order: True" in text
    if name == "04-fan-out-nats.ipynb":
        images = [out for out in outputs(nb) if "image/png" in out.get("data", {})]
        assert len(images) == 1, "the per-seq count plot is missing"
        # Both relays stopped cleanly; every stream consumer saw every seq exactly once.
        assert text.count("exit code: 0") == 2 and "in order: True" in text
        for consumer in ("from now", "BTCUSDT only", "joined late (all)"):
            line = next(ln for ln in text.splitlines() if f"stream, {consumer}" in ln)
            assert line.endswith(": 0 seen twice, 0 missing"), line
        live = next(ln for ln in text.splitlines() if "live, core NATS" in ln)
        assert "0 seen twice" not in live and live.endswith(", 0 missing"), live
    if name == "03-migrating.ipynb":
        # Both halves show a real replacement of the connection.
        rotations = [int(n) for n in re.findall(r"rotations=(\d+)", text)]
        assert len(rotations) == 2, text
        assert all(n >= 1 for n in rotations), text


def test_every_notebook_is_tested() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_committed_outputs_are_current(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("rxws", {}).get("code_digest") == digest(nb), (
        f"{name}: a code cell changed since its outputs were made; run python "
        "tests/test_notebooks.py and commit the result"
    )
    counts = [cell.execution_count for cell in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), f"{name}: not one run top to bottom"
    check_outputs(name, nb)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_as_committed(name: str) -> None:
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    fresh = execute(cleared(committed))
    check_outputs(name, fresh)
    assert shape(fresh) == shape(committed), f"{name}: outputs differ; refresh them"


def refresh() -> None:
    """Run every notebook and save it with its outputs and the digest of its code."""
    for name in NAMES:
        path = NOTEBOOKS / name
        nb = execute(cleared(nbformat.read(path, as_version=4)))
        check_outputs(name, nb)
        nb.metadata["rxws"] = {"code_digest": digest(nb)}
        nbformat.write(nb, path)
        print(f"refreshed {path}")


if __name__ == "__main__":
    refresh()
    sys.exit(0)
