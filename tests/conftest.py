"""Shared pytest configuration for msat-lava.

* ``import msat_lava`` first, so the Python 3.11 Lava fixes are installed before any test
  imports ``lava``.
* Tests marked ``@pytest.mark.lava`` get a 120 s timeout (unless they set their own
  ``@pytest.mark.timeout``) and must leave no Lava worker process behind: stop every
  network in ``finally`` (LAVA_NOTES §1.5: a network that is not stopped hangs the
  interpreter at exit).
* :func:`shared_data_dir` / the ``shared_data_dir`` fixture locate the shared datasets and
  models; a missing directory FAILS the test, it is never skipped.
"""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

import msat_lava  # noqa: F401  (installs msat_lava.lava.compat)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "MSAT_SHARED_DATA"
DEFAULT_SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
LAVA_TIMEOUT_S = 120


def shared_data_dir() -> Path:
    """The shared data directory: ``$MSAT_SHARED_DATA``, else ``<repo>/../shared/data``.

    Calls ``pytest.fail`` (never skip) when the directory does not exist.
    """
    raw = os.environ.get(SHARED_DATA_ENV)
    path = Path(raw).expanduser() if raw else DEFAULT_SHARED_DATA
    if not path.is_dir():
        source = f"${SHARED_DATA_ENV}" if raw else f"the default (${SHARED_DATA_ENV} is not set)"
        pytest.fail(
            f"shared data directory {path} from {source} does not exist; "
            f"point {SHARED_DATA_ENV} at the directory holding mnist.npz, cifar10.npz and models/",
            pytrace=False,
        )
    return path


@pytest.fixture(name="shared_data_dir", scope="session")
def _shared_data_dir_fixture() -> Path:
    return shared_data_dir()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("lava") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LAVA_TIMEOUT_S))


@pytest.fixture(autouse=True)
def _no_lava_workers_left(request):
    """Fail a ``lava`` test that leaves worker processes running, and end those workers."""
    yield
    if request.node.get_closest_marker("lava") is None:
        return
    leftover = multiprocessing.active_children()
    if not leftover:
        return
    for proc in leftover:
        proc.terminate()
    for proc in leftover:
        multiprocessing.Process.join(proc, 5)  # Lava's SystemProcess.join() takes no timeout
    pytest.fail(
        f"{len(leftover)} Lava worker process(es) still running after the test; "
        "call <process>.stop() in a finally block",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch intra-op threads = 1 for a module (tiny float64 convs are ~1000x slower with 2 OpenMP threads on a
    busy 2-core box); restored afterwards. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
