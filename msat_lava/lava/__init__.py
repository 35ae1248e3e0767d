"""Lava integration for msat-lava.

Submodules import ``lava`` lazily; importing this package itself does not. The
Python 3.11 fixes live in :mod:`msat_lava.lava.compat` and are installed by
``import msat_lava``.
"""
