"""msat-lava: convert PyTorch ANNs to multi-threshold spiking nets (MSAT) and run them in Intel Lava.

Importing this package installs the Python 3.11 compatibility fixes for lava-nc 0.10.0 /
lava-dl 0.6.0 (:mod:`msat_lava.lava.compat`) before anything else. That step is cheap: it
registers an import hook and never imports ``lava``, ``torch`` or touches the
multiprocessing start method (Lava sets ``fork`` itself when its runtime is imported).
"""
from msat_lava.lava import compat as _compat

_compat.install()

from msat_lava._version import __version__  # noqa: E402

__all__ = ["__version__"]
