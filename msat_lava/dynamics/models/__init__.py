"""Dynamics of the registered neuron models (:mod:`netx_export.neurons`): one float and one fixed rule per model.

A model here supplies only what differs between neuron models; the stage step of
:mod:`msat_lava.dynamics.neuron` (``step_float`` / ``step_fixed``) does the rest — integration, firing with Γ,
spike-confidence gating, soft reset, saturation of the fixed state, payload and the counters — for every model,
and the reference simulator, the Lava process models and the traces all call that step.

Per step t (layer-local, 0-based), with the shared state (v, S = Σv, n, t) of :mod:`msat_lava.dynamics.neuron`:

    integrate, fire = model.schedule(spec, t)          (default: True, True)
    m  = v + x                 if integrate, else v   (input gated off)
    θ  = model.threshold(spec, tables, state, x)       firing threshold of this step (raw units / θ̂ integers)
    r, q = model.quanta(spec, θ)                       reset amount r and payload per spike q (default θ, θ)
    s  = [m ≥ θ] (Γ = 1);  Γ > 1: ⌊m/θ⌋ if r is θ, else ⌊(m − θ)/r⌋ + 1;  clipped to [0, Γ];  0 if not fire
    v  = m − s·r  (fixed: saturated to ±(2^(state_bits−1) − 1));  payload = s_g·q  (s_g = gated s)

A model is a subclass of :class:`DynamicsModel` registered with :func:`register` in a module of this package
(every submodule is imported on first use); ``fused`` marks the models the fast engine (:mod:`msat_lava.engine`,
``fused.MODE_CODES``) has compiled kernels for — it runs the others with their step function above, after
computing their synaptic terms layer-major.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar

__all__ = ["DynamicsModel", "register", "get", "names", "has_fused"]


class DynamicsModel:
    """Float and fixed rule of one neuron model (``name`` = the :mod:`netx_export.neurons` model's name).

    ``float_threshold(spec, state, x)`` → θ(t) in raw units (float array shaped like x);
    ``fixed_threshold(spec, tables, state, x)`` → θ̂(t) int64 in [1, 2^F·...] (normalized domain);
    ``float_quanta`` / ``fixed_quanta(spec, theta)`` → (reset amount, payload per spike), default (θ, θ);
    ``schedule(spec, t)`` → (integrate, fire) booleans for step t, default (True, True);
    ``fixed_uniform_step(spec, tables, t)`` → (integrate, fire, θ̂) where θ̂ is one integer for the whole layer
    (None by default).
    """

    name: ClassVar[str] = ""
    fused: ClassVar[bool] = False

    def float_threshold(self, spec: Any, state: Any, x: Any) -> Any:
        raise NotImplementedError

    def fixed_threshold(self, spec: Any, tables: Any, state: Any, x: Any) -> Any:
        raise NotImplementedError

    def float_quanta(self, spec: Any, theta: Any) -> tuple[Any, Any]:
        return theta, theta

    def fixed_quanta(self, spec: Any, theta: Any) -> tuple[Any, Any]:
        return theta, theta

    def schedule(self, spec: Any, t: int) -> tuple[bool, bool]:
        return True, True

    def fixed_uniform_step(self, spec: Any, tables: Any, t: int) -> tuple[bool, bool, int] | None:
        """(integrate, fire, θ̂) of step t for a model whose fixed threshold at t is one integer for every neuron
        of the layer and whose quanta are the default (θ̂, θ̂); None (the default) for any other model. The fast
        engine runs a model that gives it with :func:`msat_lava.dynamics.fused.uniform_fixed_chunk`; such a
        model's ``schedule`` and ``fixed_threshold`` must be defined from it (one rule)."""
        return None

    def readout_bias_gate(self, specs: Any) -> Any:
        """None (the readout adds its bias every step), or a function t → bool of the layer-local step telling
        whether the readout adds its bias at t, for a network whose spiking layers have ``specs``."""
        return None


_REGISTRY: dict[str, DynamicsModel] = {}
_LOADED = False


def register(model: DynamicsModel | type) -> DynamicsModel | type:
    """Register a model (instance or subclass); usable as a class decorator."""
    inst = model() if isinstance(model, type) else model
    if not isinstance(inst, DynamicsModel) or not inst.name:
        raise TypeError(f"not a named DynamicsModel: {model!r}")
    _REGISTRY[inst.name] = inst
    return model


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def get(name: str) -> DynamicsModel:
    """The dynamics of mode ``name`` (ValueError when a registered neuron model has none)."""
    _load()
    model = _REGISTRY.get(name)
    if model is None:
        raise ValueError(f"no dynamics for neuron model {name!r} (msat_lava.dynamics.models has "
                         f"{sorted(_REGISTRY)})")
    return model


def names() -> tuple[str, ...]:
    _load()
    return tuple(sorted(_REGISTRY))


def has_fused(mode: str) -> bool:
    """True when the fast engine has a fused kernel for ``mode``."""
    return get(mode).fused
