"""The one definition of each neuron rule per precision (float, fixed), shared by the torch reference simulator
and the numpy Lava process models (DESIGN §1, §3–5).

Modules:

* :mod:`~msat_lava.dynamics.xp` – tiny numpy/torch array adapter.
* :mod:`~msat_lava.dynamics.prng` – counter-based spike-confidence gate (SplitMix64, 24-bit draws).
* :mod:`~msat_lava.dynamics.neuron` – IF / MSAT step functions (float raw units; fixed normalized, 24-bit state).
* :mod:`~msat_lava.dynamics.lipool` – LIPooling step (integer-exact or float).

Parameters come from :mod:`netx_export.neuron` (``NeuronSpec``) and :mod:`netx_export.lut` (``ThresholdLuts``).
"""
from msat_lava.dynamics.lipool import (LIPoolGeometry, LIPoolState, init_lipool_state, lipool_geometry,
                                       step_lipool)
from msat_lava.dynamics.neuron import (FixedState, FloatState, StepOut, fixed_msat_theta, fixed_threshold,
                                       float_msat_theta, float_threshold, gate_mask, init_fixed_state,
                                       init_float_state, step_fixed, step_float)
from msat_lava.dynamics.prng import keep_mask, keep_threshold, seed_key, uniform24

__all__ = [
    "FloatState", "FixedState", "StepOut", "init_float_state", "init_fixed_state", "step_float", "step_fixed",
    "float_threshold", "fixed_threshold", "float_msat_theta", "fixed_msat_theta", "gate_mask",
    "LIPoolGeometry", "LIPoolState", "lipool_geometry", "init_lipool_state", "step_lipool",
    "keep_mask", "keep_threshold", "seed_key", "uniform24",
]
