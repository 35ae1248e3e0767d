"""Dynamics of BSNN-R (our reconstruction of BSNN, ALGORITHMS §6.4; parameters, schedule and the K-scaled state:
:mod:`netx_export.neurons.bsnn_r`, whose docstring states the equations and bit widths).

Step t (layer-local), c = ⌊t/K⌋, k = t mod K, stage depth d: INT (integrate, no firing) when c ≥ d−1 and c − d + 1
is even; FIRE (input gated off, phase threshold) when c ≥ d and c − d is even; IDLE otherwise.
Float: θ = λ·2^−(k+1); fixed: θ̂ = 2^F >> (k+1) (exact for K ≤ F); reset and payload θ (the default quanta).
The layer's bias and image terms arrive already divided by K (converter). The readout adds its bias (stored as
b/K) only on the FIRE steps of the deepest stage.
"""
from __future__ import annotations

from msat_lava.dynamics import xp
from msat_lava.dynamics.models import DynamicsModel, register


def state(t: int, depth: int, k: int) -> str:
    """'int' | 'fire' | 'idle' of a stage at ``depth`` in step ``t`` with ``k`` phases."""
    c = t // k
    if c >= depth - 1 and (c - depth + 1) % 2 == 0:
        return "int"
    if c >= depth and (c - depth) % 2 == 0:
        return "fire"
    return "idle"


@register
class BsnnR(DynamicsModel):
    name = "bsnn-r"

    def schedule(self, spec, t):
        s = state(t, spec.params.depth, spec.params.k)
        return s == "int", s == "fire"

    def float_threshold(self, spec, st, x):
        return xp.full(x.shape, spec.lam * 2.0 ** -(st.t % spec.params.k + 1), x, "float")

    def fixed_threshold(self, spec, tables, st, x):
        return xp.full(x.shape, self.fixed_uniform_step(spec, tables, st.t)[2], x, "int")

    def fixed_uniform_step(self, spec, tables, t):
        integrate, fire = self.schedule(spec, t)
        return integrate, fire, spec.one >> (t % spec.params.k + 1)

    def readout_bias_gate(self, specs):
        last = max(s.params.depth for s in specs)
        k = specs[0].params.k
        return lambda t: state(t, last, k) == "fire"
