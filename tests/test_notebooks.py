"""The tutorial notebooks in ``notebooks/`` execute without error, and are stored without outputs.

Each notebook runs in a fresh ``python3`` kernel of **this** interpreter: a kernelspec pointing at
``sys.executable`` is written to a temporary ``JUPYTER_PATH`` directory (searched before the environment's own
kernelspecs, whose ``python3`` runs whatever ``python`` is first on ``PATH``), with a temporary ``IPYTHONDIR`` so
no user profile or startup file leaks in. The working directory is a temporary directory. Any cell error fails
the test (nbclient raises ``CellExecutionError`` naming the cell); every cell has ``CELL_TIMEOUT_S``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "python3"
CELL_TIMEOUT_S = 300


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_stored_without_outputs(path):
    """Committed notebooks carry no outputs or execution counts (small diffs; outputs come from running them)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs; clear them before committing"


@pytest.fixture()
def kernel_env(tmp_path, monkeypatch):
    """A ``python3`` kernelspec for ``sys.executable`` first on ``JUPYTER_PATH``; a private ``IPYTHONDIR``."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python 3 ({sys.executable})", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    from jupyter_client.kernelspec import KernelSpecManager

    resolved = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    assert resolved.argv[0] == sys.executable, f"kernel {KERNEL_NAME!r} resolves to {resolved.argv}"
    workdir = tmp_path / "work"
    workdir.mkdir()
    return workdir


@pytest.mark.lava
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, kernel_env):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(kernel_env)}})
    t0 = time.perf_counter()
    client.execute()   # raises CellExecutionError on the first failing cell
    wall = time.perf_counter() - t0
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
    print(f"{path.name}: executed in {wall:.1f} s")
