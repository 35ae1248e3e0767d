"""Dynamics of DTIF-R (our reconstruction of DTIF, ALGORITHMS §5.3; parameters and tables:
:mod:`netx_export.neurons.dtif_r`, whose docstring states the equations, units and bit widths).

Float (raw units):  θ = λ·g(x/λ), g(u) = 1 for u ≤ 0, max(g_min, 1/(1 + β·u)) ('hyperbolic', IEEE + − × ÷ only)
or max(g_min, exp(−β·u)) ('exp', :func:`msat_lava.dynamics.fmath.exp`) for u > 0; reset/payload (λ, λ) for
variant a, (θ, θ) for b, (θ, λ) for c.
Fixed (normalized integers): θ̂ = 2^F for x̂ ≤ 0, else the interpolated table value clipped to [θ̂_min, 2^F]; reset/
payload 2^F or θ̂ likewise. The threshold uses only this step's input (no state), so DTIF-R needs no state beyond
the shared v̂ (Ŝ and n are kept by the generic step).
"""
from __future__ import annotations

from msat_lava.dynamics import fmath, xp
from msat_lava.dynamics.models import DynamicsModel, register
from msat_lava.dynamics.neuron import _interp


@register
class DtifR(DynamicsModel):
    name = "dtif-r"

    def float_threshold(self, spec, state, x):
        p, lam = spec.params, spec.lam
        u = xp.maximum(x * (1.0 / lam), 0.0)
        if p.shape == "hyperbolic":
            core = 1.0 / (1.0 + p.beta * u)
        else:
            core = fmath.exp(-p.beta * u)
        g = xp.where(x > 0, xp.maximum(core, p.g_min), xp.full(x.shape, 1.0, x, "float"))
        return lam * g

    def fixed_threshold(self, spec, tables, state, x):
        a = xp.clip(x, 0, tables.x_max) + tables.offset
        theta = _interp(tables.g_lut, a, tables.shift, tables.guard)
        theta = xp.clip(theta, tables.theta_min, tables.one)
        return xp.where(x > 0, theta, xp.full(x.shape, tables.one, x, "int"))

    def float_quanta(self, spec, theta):
        v = spec.params.variant
        lam = xp.full(theta.shape, spec.lam, theta, "float") if v != "b" else theta
        return (lam, lam) if v == "a" else ((theta, theta) if v == "b" else (theta, lam))

    def fixed_quanta(self, spec, theta):
        v = spec.params.variant
        one = xp.full(theta.shape, spec.one, theta, "int") if v != "b" else theta
        return (one, one) if v == "a" else ((theta, theta) if v == "b" else (theta, one))
