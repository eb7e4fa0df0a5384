"""The notebooks in notebooks/ run top to bottom in a fresh kernel, without errors.

Each runs against the embedded DemoExchange on loopback, in its own kernel process
(so the suite's leak check does not apply here; the tests are synchronous).
"""

from __future__ import annotations

import os
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
# Committed with their outputs, so that the plot shows where the notebook is read.
WITH_OUTPUTS = {"04-fan-out-nats.ipynb"}
CELL_TIMEOUT = 60  # seconds per cell; each notebook takes a few seconds in all


def execute(name: str) -> Any:
    """Run a notebook in a new python3 kernel; raises CellExecutionError if a cell fails."""
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return nb


def outputs(nb: Any) -> list[Any]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def test_every_notebook_is_tested_and_committed_without_outputs() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        if name in WITH_OUTPUTS:
            code = [cell for cell in nb.cells if cell.cell_type == "code"]
            assert all(cell.execution_count is not None for cell in code), f"{name}: run it"
            assert not [out for out in outputs(nb) if out.output_type == "error"], name
            continue
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{name}: clear the outputs before committing"
                assert cell.execution_count is None, name


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name: str) -> None:
    nb = execute(name)
    for out in outputs(nb):
        assert out.output_type != "error", out
        if out.output_type == "stream" and out.name == "stderr":
            # Nothing alarming on stderr: no traceback, no leaked task, no warning.
            for word in ("Traceback", "Task was destroyed", "Warning", "Error"):
                assert word not in out.text, out.text
    if name == "02-resilience.ipynb":
        images = [out for out in outputs(nb) if "image/png" in out.get("data", {})]
        assert len(images) == 1, "the message-rate plot is missing"
        assert len(images[0].data["image/png"]) > 1000
        text = "".join(out.get("text", "") for out in outputs(nb))
        assert "0 missing, 0 repeated, in order: True" in text
    if name == "04-fan-out-nats.ipynb":
        images = [out for out in outputs(nb) if "image/png" in out.get("data", {})]
        assert len(images) == 1, "the per-seq count plot is missing"
        text = "".join(out.get("text", "") for out in outputs(nb))
        # Both relays stopped cleanly; every stream consumer saw every seq exactly once.
        assert text.count("exit code: 0") == 2 and "in order: True" in text
        for consumer in ("from now", "BTCUSDT only", "joined late (all)"):
            line = next(ln for ln in text.splitlines() if f"stream, {consumer}" in ln)
            assert line.endswith(": 0 seen twice, 0 missing"), line
        live = next(ln for ln in text.splitlines() if "live, core NATS" in ln)
        assert "0 seen twice" not in live and live.endswith(", 0 missing"), live
