"""msat-lava: convert PyTorch ANNs to multi-threshold spiking nets (MSAT) and run them in Intel Lava.

Importing this package installs the Python 3.11 compatibility fixes for lava-nc 0.10.0 /
lava-dl 0.6.0 (:mod:`msat_lava.lava.compat`) before anything else. That step is cheap: it
registers an import hook and never imports ``lava``, ``torch`` or touches the
multiprocessing start method (Lava sets ``fork`` itself when its runtime is imported).

The library surface is imported on first use: ``load``, ``to_program``, ``simulate``, ``verify``, ``run_lava``,
``preflight`` (:mod:`msat_lava.api`), ``evaluate``, ``EvalConfig``, ``EvalReport`` (:mod:`msat_lava.evaluate`), ``MethodSpec``
(:mod:`msat_lava.methods`) and ``Loihi2Constraints`` (:mod:`msat_lava.loihi2.constraints`).
"""
from msat_lava.lava import compat as _compat

_compat.install()

from msat_lava._version import __version__  # noqa: E402

#: the library surface (msat_lava.api), imported on first use so that ``import msat_lava`` stays cheap
_API = ("load", "to_program", "simulate", "verify", "run_lava", "preflight")
#: evaluation as a library (msat_lava.evaluate, msat_lava.methods), also imported on first use
_EVAL = {"evaluate": "msat_lava.evaluate", "EvalConfig": "msat_lava.evaluate", "EvalReport": "msat_lava.evaluate",
         "MethodSpec": "msat_lava.methods", "Loihi2Constraints": "msat_lava.loihi2.constraints"}
__all__ = ["__version__", *_API, *_EVAL]


def __getattr__(name: str):
    if name in _API:
        from msat_lava import api

        return getattr(api, name)
    if name in _EVAL:
        import importlib

        return getattr(importlib.import_module(_EVAL[name]), name)
    raise AttributeError(f"module 'msat_lava' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API) + list(_EVAL))
