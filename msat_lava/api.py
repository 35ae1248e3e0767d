"""The library surface of msat_lava: ``import msat_lava as ml``.

    net = ml.load("resnet20.net")                      # netx_export.load: read and validate a network file
    res = ml.simulate(net, x, 64, precision="fixed")   # reference simulator (RunResult: predictions (T, N), …)
    rep = ml.verify(net, x, 64)                        # Lava vs reference, every stage bit for bit (VerifyReport)
    out = ml.run_lava(net, x, 64)                      # Lava's CPU simulator (LavaRunResult)
    prog = ml.to_program(net)                          # the execution program both runtimes run
    rep = ml.preflight(net)                            # Loihi 2 pre-flight = `deploy --check` (DeployReport)

Each accepts a :class:`netx_export.network.ConvertedNetwork` or a :class:`msat_lava.program.Program`; the
keyword arguments are those of :func:`msat_lava.reference.simulate`, :func:`msat_lava.verify.verify` and
:func:`msat_lava.lava.build.run_lava`. Lava is imported only by :func:`run_lava` and :func:`verify`.
``ml.verify`` stays callable after ``import msat_lava.verify`` (which binds the submodule to the attribute):
that module is callable and calls the same function.
"""
from __future__ import annotations

from typing import Any

__all__ = ["load", "to_program", "simulate", "verify", "run_lava", "preflight"]


def load(path: Any):
    """Read and validate a network file (:func:`netx_export.hdf5.read`); FormatError names the file and field."""
    from netx_export.api import load as _load

    return _load(path)


def to_program(net_or_program: Any):
    """The :class:`~msat_lava.program.Program` of a converted network (a Program is returned unchanged)."""
    from msat_lava.verify import as_program

    return as_program(net_or_program)


def simulate(net_or_program: Any, x: Any, steps: int, **kwargs: Any):
    """:func:`msat_lava.reference.simulate` of a network or program."""
    from msat_lava.reference import simulate as _simulate

    return _simulate(to_program(net_or_program), x, steps, **kwargs)


def verify(net_or_program: Any, x: Any, steps: int, **kwargs: Any):
    """:func:`msat_lava.verify.verify`: Lava (fixed) against the reference, every stage, bit for bit."""
    from msat_lava.verify import verify as _verify

    return _verify(net_or_program, x, steps, **kwargs)


def run_lava(net_or_program: Any, x: Any, steps: int, **kwargs: Any):
    """:func:`msat_lava.lava.build.run_lava` of a network or program (Lava's CPU simulator)."""
    from msat_lava.lava.build import run_lava as _run_lava

    return _run_lava(to_program(net_or_program), x, steps, **kwargs)


def preflight(net: Any, constraints: Any = None, **kwargs: Any):
    """Loihi 2 pre-flight of a converted network, as ``msat-lava deploy NET --check``
    (:func:`msat_lava.deploy.preflight`; its program is derived from ``net``): a
    :class:`~msat_lava.deploy.DeployReport` with the per-layer plan, the width checks, every violation at once
    (``.violations``, ``.ok``) and ``.to_dict()`` (the ``--json`` form). ``constraints``: a
    :class:`~msat_lava.loihi2.constraints.Loihi2Constraints`, a mapping of overrides of its defaults
    (``{"chips": 8}``, the ``--set`` keys), or None for the defaults. Keyword arguments (``name``, ``x``,
    ``sample_ids``, ``steps``) are those of :func:`msat_lava.deploy.preflight`."""
    from collections.abc import Mapping

    from msat_lava.deploy import preflight as _preflight
    from msat_lava.loihi2.constraints import Loihi2Constraints

    if isinstance(constraints, Mapping):
        constraints = Loihi2Constraints(**dict(constraints))
    elif constraints is not None and not isinstance(constraints, Loihi2Constraints):
        raise TypeError(f"constraints must be a Loihi2Constraints, a mapping of overrides or None, got "
                        f"{type(constraints).__name__}")
    return _preflight(net, to_program(net), constraints, **kwargs)
