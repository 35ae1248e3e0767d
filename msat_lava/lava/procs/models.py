"""Process models of msat-lava's Lava processes: floating_pt and fixed_pt (bit-accurate) variants.

The fixed-point models are bit-exact with :mod:`msat_lava.reference` in fixed point: both call the same neuron
rule (:func:`msat_lava.dynamics.neuron.step_fixed`), the same LIPooling step and term arithmetic of
:mod:`msat_lava.program` (numpy here, torch there). Ports and state (int64 containers):

* payload ports: unsigned graded payload θ̂·s, ≤ Γ·2^F (13 bits for F = 12, Γ = 1); input port: p_in
  (F_in + 8 bits signed);
* neuron state v̂: 24-bit signed (saturating), Ŝ: 64-bit, spike counter: 64-bit; readout accumulator: 64-bit.

Float models carry float64 raw-unit values and call :func:`~msat_lava.dynamics.neuron.step_float`.
Absolute imports only (Lava executes this file as a top-level module during model discovery).
"""
from __future__ import annotations

import os

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from msat_lava.dynamics import lipool as lip
from msat_lava.dynamics import neuron as dyn
from msat_lava.lava.procs.process import ImageSource, MsatStage
from msat_lava.program import apply_term_np


class _ImageSourceBase(PyLoihiProcessModel):
    s_out = None

    def run_spk(self) -> None:
        k = (self.time_step - 1) // self.proc_params["steps"]
        images = self.proc_params["images"]
        self.s_out.send(images[min(k, images.shape[0] - 1)])


@implements(proc=ImageSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyImageSourceFloat(_ImageSourceBase):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)


@implements(proc=ImageSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyImageSourceFixed(_ImageSourceBase):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=16)


class _StageBase(PyLoihiProcessModel):
    """Shared stage logic; subclasses fix the precision (``FIXED``) and declare port types."""

    FIXED = True
    in0 = in1 = in2 = in3 = s_out = None

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._stage = proc_params["stage"]
        self._sources = proc_params["sources"]
        self._steps = proc_params["steps"]
        self._ids = proc_params["sample_ids"]
        self._seed = proc_params["seed"]
        self._total = proc_params["total_steps"]
        self._record_path = proc_params["record_path"]
        self._record = None
        self._state = None

    def in_ports(self):
        return (self.in0, self.in1, self.in2, self.in3)

    # -- one step ----------------------------------------------------------------------------
    def run_spk(self) -> None:
        ts = self.time_step
        first = (ts - 1) % self._steps == 0
        sample = self._ids[min((ts - 1) // self._steps, len(self._ids) - 1)]
        received = {name: self.in_ports()[i].recv() for i, name in enumerate(self._sources)}
        s = self._stage
        if first:
            self._reset(received)
        if s.kind == "lipool":
            geom, st = self._state
            x = received[s.source][None]
            x = x.astype(np.int64) if self.FIXED else x.astype(np.float64)
            st, y = lip.step_lipool(geom, st, x)
            self._state = (geom, st)
            out = y[0]
        else:
            bias = s.bias_fixed if self.FIXED else s.bias_float
            x = np.array(bias, dtype=np.float64, copy=True)
            for term in s.terms:
                x = x + apply_term_np(term, received[term.source], self.FIXED)
            if s.kind == "readout":
                self._state = self._state + x
                out = self._state
            else:
                ids = np.array([sample], dtype=np.int64)
                if self.FIXED:
                    self._state, o = dyn.step_fixed(s.spec, s.luts, self._state, x[None].astype(np.int64), ids,
                                                    s.index, self._seed)
                else:
                    self._state, o = dyn.step_float(s.spec, self._state, x[None], ids, s.index, self._seed)
                out = o.payload[0]
        self._store(ts, out)
        self.s_out.send(out)

    def _reset(self, received) -> None:
        """Initial state at a sample boundary (neuron: v = v(0), S, n, t = 0; lipool: accumulators; readout: Out)."""
        s = self._stage
        like = np.zeros(0, dtype=np.int64 if self.FIXED else np.float64)
        if s.kind == "neuron":
            shape = (1,) + tuple(s.shape)
            self._state = (dyn.init_fixed_state(shape, like, s.spec) if self.FIXED
                           else dyn.init_float_state(shape, like, s.spec))
        elif s.kind == "lipool":
            src_shape = received[s.source].shape
            geom = lip.lipool_geometry(src_shape[1:], s.kernel, s.stride, s.padding)
            self._state = (geom, lip.init_lipool_state(geom, 1, src_shape[0], like, integer=self.FIXED))
        else:
            self._state = np.zeros(tuple(s.shape), dtype=np.float64)

    def _store(self, ts: int, out: np.ndarray) -> None:
        if self._record_path is None:
            return
        if self._record is None:
            dtype = np.int64 if self.FIXED else np.float64
            self._record = np.zeros((self._total,) + tuple(out.shape), dtype=dtype)
        self._record[ts - 1] = out
        if ts == self._total:
            tmp = self._record_path + ".tmp.npy"
            np.save(tmp, self._record)
            os.replace(tmp, self._record_path)


@implements(proc=MsatStage, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyMsatStageFloat(_StageBase):
    FIXED = False
    in0: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in1: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in2: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in3: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)


@implements(proc=MsatStage, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyMsatStageFixed(_StageBase):
    FIXED = True
    in0: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    in1: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    in2: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    in3: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
