"""Dynamics of the MSAT family ('const', 'dtt', 'det', 'msat'; ALGORITHMS §1.2, §2.2, §9.4): θ(t) only — the
threshold rules of :mod:`msat_lava.dynamics.neuron` (:func:`~msat_lava.dynamics.neuron.msat_float_threshold`,
:func:`~msat_lava.dynamics.neuron.msat_fixed_threshold`), kept there because the fast engine
(:mod:`msat_lava.engine`, ``fused.MODE_CODES``) shares their constants. Reset and payload are θ (graded soft
reset), every step integrates and may fire."""
from __future__ import annotations

from msat_lava.dynamics import neuron as _neuron
from msat_lava.dynamics.models import DynamicsModel, register


class _MsatFamily(DynamicsModel):
    fused = True

    def float_threshold(self, spec, state, x):
        return _neuron.msat_float_threshold(spec, state, x)

    def fixed_threshold(self, spec, tables, state, x):
        return _neuron.msat_fixed_threshold(spec, tables, state, x)


for _name in ("const", "dtt", "det", "msat"):
    register(type(f"Msat_{_name}", (_MsatFamily,), {"name": _name}))
