"""``msat-lava doctor``: check that this environment can run msat-lava networks in Lava.

:func:`run_doctor` collects package versions (via :mod:`importlib.metadata`, without
importing the packages), imports Lava's compiler to confirm the Python 3.11
``var_model`` fix, asks lava-nc whether the proprietary Loihi 2 extension (lava-loihi)
is installed, and runs a tiny fixed-point network on the CPU simulator::

    RingBuffer source -> lava.proc.dense.Dense -> lava.proc.lif.LIF -> RingBuffer sink

under ``Loihi2SimCfg(select_tag='fixed_pt')``. Its output spikes must equal an integer
reference of the non-leaky IF semantics (LAVA_NOTES §2.4 / §3.6), in stored-integer
units::

    v[t] = v[t-1] + W s[t-1] + b      # Dense adds one step of delay
    s[t] = v[t] > vth                 # strict '>'
    v[t] = 0 where s[t]               # reset to zero

This module never prints or exits; the CLI formats the :class:`DoctorReport`.
Loihi 2 hardware is only detected, never used: ``Loihi2HwCfg`` without lava-loihi
crashes (LAVA_NOTES §1.6).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import sys
import time

import numpy as np

from msat_lava._version import __version__
from msat_lava.lava import compat

__all__ = [
    "DoctorReport",
    "NetworkCheck",
    "PACKAGES",
    "format_report",
    "if_reference",
    "loihi2_available",
    "package_versions",
    "run_doctor",
    "run_tiny_network",
]

PACKAGES = ("torch", "numpy", "lava-nc", "lava-dl", "lava-loihi")

# The tiny network: 5 inputs -> 3 IF neurons, 12 steps. The values are chosen so that the
# strict '>', the bias and the odd weights each change the output (11 spikes expected).
# Lava's fixed-point Dense drops the weight LSB of 8-bit mixed-sign weights, so the
# weights are fed as 2*W with weight_exp=-1, which is exact (LAVA_NOTES §3.7).
_WEIGHTS = np.array(
    [
        [7, -3, 4, 0, 5],
        [-6, 9, 1, 3, -2],
        [2, 2, -5, 11, 0],
    ],
    dtype=np.int64,
)
_BIAS = np.array([1, 0, -1], dtype=np.int64)
_VTH = 6
_SPIKES_IN = np.array(
    [
        [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1],
        [0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1],
        [1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1],
        [1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0],
    ],
    dtype=np.int64,
)


@dataclasses.dataclass
class NetworkCheck:
    """Outcome of :func:`run_tiny_network`."""

    ok: bool
    steps: int
    spikes_expected: int
    spikes_got: int | None
    seconds: float
    reason: str = ""


@dataclasses.dataclass
class DoctorReport:
    """Everything ``msat-lava doctor`` reports. ``ok`` is the exit status; ``reason`` explains a failure."""

    msat_lava: str
    python: str
    python_executable: str
    platform: str
    packages: dict[str, str | None]
    var_model_fix_needed: bool
    var_model_fix_active: bool
    var_model_import_error: str | None
    loihi2_available: bool
    loihi2_detail: str
    network: NetworkCheck | None
    ok: bool
    reason: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """Installed distribution versions (None when absent), read from metadata only."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def loihi2_available() -> tuple[bool, str]:
    """Whether lava-loihi (Loihi 2 compiler/runtime) is installed, and a short explanation."""
    from msat_lava.lava import loihi2

    try:
        installed = loihi2.is_installed()
    except ImportError as exc:  # lava-nc missing or broken: no hardware path either
        return False, f"cannot ask lava-nc ({_one_line(exc)})"
    except Exception as exc:
        return False, f"lava.utils.loihi.is_installed() failed ({_one_line(exc)})"
    if installed:
        return True, "lava-loihi is installed (Loihi2HwCfg usable)"
    return False, "lava-loihi not installed: CPU simulation only (Loihi2SimCfg)"


def if_reference(spikes_in: np.ndarray, weights: np.ndarray, bias: np.ndarray, vth: int) -> np.ndarray:
    """Integer reference of Dense -> non-leaky LIF (du=4095, dv=0, bias_exp=6), shape (n_out, T)."""
    spikes_in = np.asarray(spikes_in, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.int64)
    n_out, steps = weights.shape[0], spikes_in.shape[1]
    v = np.zeros(n_out, dtype=np.int64)
    out = np.zeros((n_out, steps), dtype=np.int64)
    for t in range(steps):
        if t > 0:
            v += weights @ spikes_in[:, t - 1]
        v += bias
        fired = v > vth
        v[fired] = 0
        out[:, t] = fired
    return out


def run_tiny_network() -> NetworkCheck:
    """Run the tiny Dense+LIF network in Lava's CPU simulator (fixed_pt) and compare it to the reference.

    Import or run errors are returned as a failed check, not raised: diagnosing them is
    the doctor's job. The network is always stopped.
    """
    steps = _SPIKES_IN.shape[1]
    expected = if_reference(_SPIKES_IN, _WEIGHTS, _BIAS, _VTH)
    t0 = time.perf_counter()

    def failed(reason: str, got: int | None = None) -> NetworkCheck:
        return NetworkCheck(False, steps, int(expected.sum()), got, time.perf_counter() - t0, reason)

    from msat_lava.lava.tiny import TinyRunError, run_dense_lif

    try:
        got = run_dense_lif(_SPIKES_IN, _WEIGHTS, _BIAS, _VTH)
    except TinyRunError as exc:
        what = {"import": "cannot import Lava processes", "build": "cannot build the Lava network",
                "run": "Lava run failed"}[exc.stage]
        return failed(f"{what} ({_one_line(exc.cause)})")

    if got.shape != expected.shape or not np.array_equal(got, expected):
        bad = int(np.sum(got != expected)) if got.shape == expected.shape else got.size
        return failed(
            f"Lava output differs from the integer reference in {bad} of {expected.size} entries",
            int(got.sum()),
        )
    return NetworkCheck(True, steps, int(expected.sum()), int(got.sum()), time.perf_counter() - t0)


def _check_var_model() -> str | None:
    """Import Lava's var_model (the module the 3.11 fix rewrites); return the error or None."""
    compat.install()
    try:
        import importlib

        importlib.import_module(compat.VAR_MODEL)
    except Exception as exc:
        return _one_line(exc)
    return None


def run_doctor() -> DoctorReport:
    """Collect the environment report and run the Lava check. Never raises for a broken Lava."""
    packages = package_versions()
    var_model_error = _check_var_model()
    loihi_ok, loihi_detail = loihi2_available()
    network = run_tiny_network() if var_model_error is None else None

    if var_model_error is not None:
        reason = f"lava.magma.compiler.var_model does not import: {var_model_error}"
    elif not network.ok:
        reason = network.reason
    else:
        reason = ""
    return DoctorReport(
        msat_lava=__version__,
        python=platform.python_version(),
        python_executable=sys.executable,
        platform=platform.platform(),
        packages=packages,
        var_model_fix_needed=sys.version_info >= (3, 11),
        var_model_fix_active=compat.var_model_fix_active(),
        var_model_import_error=var_model_error,
        loihi2_available=loihi_ok,
        loihi2_detail=loihi_detail,
        network=network,
        ok=not reason,
        reason=reason,
    )


def format_report(report: DoctorReport) -> str:
    """Human-readable report; the last line is ``OK`` or ``FAILED: <reason>``."""
    rows = [("msat-lava", report.msat_lava), ("python", f"{report.python} ({report.python_executable})")]
    rows += [(name, version or "not installed") for name, version in report.packages.items()]
    if report.var_model_fix_active:
        fix = "active (lava var_model patched in memory at import)"
    elif report.var_model_fix_needed:
        fix = "not applied (var_model needed no change)" if report.var_model_import_error is None else "FAILED"
    else:
        fix = "not needed on this Python"
    rows.append(("py3.11 var_model fix", fix))
    rows.append(("Loihi 2", report.loihi2_detail))
    net = report.network
    if net is None:
        rows.append(("lava network", "not run"))
    elif net.ok:
        rows.append(
            (
                "lava network",
                f"OK: Dense->LIF fixed_pt, {net.steps} steps, {net.spikes_got} spikes "
                f"match the integer reference ({net.seconds:.2f} s)",
            )
        )
    else:
        rows.append(("lava network", f"FAILED ({net.seconds:.2f} s)"))
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {value}" for key, value in rows]
    lines.append("OK" if report.ok else f"FAILED: {report.reason}")
    return "\n".join(lines)
