"""One stage of a Program stepped one sample at a time (numpy, no Lava import): what a Lava process model runs.

:class:`StageRunner` holds a stage's state across steps and computes its output at one Lava time step from its
sources' payloads. The fixed-point path is bit-exact with :mod:`msat_lava.reference` in fixed point: both call the
same neuron rule (:func:`msat_lava.dynamics.neuron.step_fixed`), the same LIPooling step and the same term
arithmetic (:class:`msat_lava.lava.kernels.TermKernel`, equal to :func:`msat_lava.program.apply_term_np`).
Float runners carry float64 raw-unit values and call :func:`~msat_lava.dynamics.neuron.step_float`.

Keeping this out of ``procs/models.py`` lets one Lava process run several stages (``procs.process.MsatGroup``)
and lets tests and profilers step a network without starting Lava.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from msat_lava.dynamics import lipool as lip
from msat_lava.dynamics import neuron as dyn
from msat_lava.lava.kernels import TermKernel

__all__ = ["StageRunner", "term_key"]


def term_key(stage: str, k: int) -> str:
    """The key of stage's term k among a step's received arrays when a separate synapse process computes it."""
    return f"{stage}#t{k}"


class StageRunner:
    """Steps one stage (neuron | lipool | readout) for one sample at a time.

    ``steps``: T per sample (every stage resets at ``(ts − 1) % steps == 0``); ``sample_ids``: the dataset index
    of each sample in time order (spike-confidence gate key); ``ts`` counts Lava steps from 1.
    """

    def __init__(self, stage: Any, *, fixed: bool, steps: int, sample_ids: Sequence[int], seed: int,
                 external_terms: bool = False) -> None:
        self.stage = stage
        self.name = stage.name
        self.kind = stage.kind
        self.fixed = bool(fixed)
        self.steps = int(steps)
        self.ids = np.asarray(sample_ids, dtype=np.int64)
        self.seed = int(seed)
        # external_terms: each term's contribution arrives computed (``received[term_key(name, k)]``, a separate
        # synapse process running the same TermKernel), instead of being computed here from the source payload
        self.external = bool(external_terms) and stage.kind != "lipool"
        self.kernels = () if self.external else tuple(TermKernel(t, self.fixed) for t in stage.terms)
        self.term_keys = tuple(term_key(stage.name, k) for k in range(len(stage.terms))) if self.external else ()
        if stage.kind != "lipool":
            bias = stage.bias_fixed if self.fixed else stage.bias_float
            self.bias = np.array(bias, dtype=np.float64, copy=True).reshape(tuple(stage.shape))
        self.state: Any = None
        self._ids_of: dict[int, np.ndarray] = {}

    def _sample_ids(self, k: int) -> np.ndarray:
        hit = self._ids_of.get(k)
        if hit is None:
            hit = self._ids_of[k] = np.array([self.ids[min(k, len(self.ids) - 1)]], dtype=np.int64)
        return hit

    def reset(self, received: Mapping[str, np.ndarray]) -> None:
        """Initial state at a sample boundary (neuron: v = v(0), S, n, t = 0; lipool: accumulators; readout: Out)."""
        s = self.stage
        like = np.zeros(0, dtype=np.int64 if self.fixed else np.float64)
        if s.kind == "neuron":
            shape = (1,) + tuple(s.shape)
            self.state = (dyn.init_fixed_state(shape, like, s.spec) if self.fixed
                          else dyn.init_float_state(shape, like, s.spec))
        elif s.kind == "lipool":
            src_shape = received[s.source].shape
            geom = lip.lipool_geometry(src_shape[1:], s.kernel, s.stride, s.padding)
            self.state = (geom, lip.init_lipool_state(geom, 1, src_shape[0], like, integer=self.fixed))
        else:
            self.state = np.zeros(tuple(s.shape), dtype=np.float64)

    def step(self, ts: int, received: Mapping[str, np.ndarray]) -> np.ndarray:
        """The stage's output at Lava step ``ts`` given its sources' outputs at that step (``received``)."""
        s = self.stage
        k, local = divmod(ts - 1, self.steps)
        if local == 0:
            self.reset(received)
        if s.kind == "lipool":
            geom, st = self.state
            x = received[s.source][None]
            x = x.astype(np.int64) if self.fixed else x.astype(np.float64)
            st, y = lip.step_lipool(geom, st, x)
            self.state = (geom, st)
            return y[0]
        x = self.bias
        if s.kind == "readout" and s.bias_gate is not None and not s.bias_gate(local):
            x = np.zeros_like(self.bias)  # the neuron model adds the readout bias only at some steps (BSNN-R)
        for kern in self.kernels:
            x = x + kern(received[kern.source])
        for key in self.term_keys:
            x = x + received[key]
        if s.kind == "readout":
            self.state = self.state + x
            return self.state
        ids = self._sample_ids(k)
        if self.fixed:
            self.state, o = dyn.step_fixed(s.spec, s.luts, self.state, x[None].astype(np.int64), ids, s.index,
                                           self.seed)
        else:
            self.state, o = dyn.step_float(s.spec, self.state, x[None], ids, s.index, self.seed)
        return o.payload[0]
