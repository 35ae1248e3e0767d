"""Process models of msat-lava's Lava processes: floating_pt and fixed_pt (bit-accurate) variants.

The stage arithmetic lives in :class:`msat_lava.lava.stages.StageRunner` (bit-exact with
:mod:`msat_lava.reference` in fixed point); a :class:`MsatGroup` model steps its runners in program order,
handing payloads from stage to stage in memory, and sends only the group's exported outputs. Ports:

* fixed point (int64 containers): payload ports carry the unsigned graded payload θ̂·s ≤ Γ·2^F (13 bits for
  F = 12, Γ = 1), the input port p_in (F_in + 8 bits signed). Neuron state v̂: 24-bit signed (saturating), Ŝ
  and the spike counter 64-bit; readout accumulator 64-bit.
* float: float64 raw-unit values.

Recorded stages keep their per-step output in memory and write it to an ``.npy`` file on the last step
(``Var.get`` would cost ~13 µs per element, LAVA_NOTES §4).
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

from msat_lava.lava.procs.process import ImageSource, MsatGroup
from msat_lava.lava.stages import StageRunner


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


class _GroupBase(PyLoihiProcessModel):
    """Shared group logic; subclasses fix the precision (``FIXED``) and declare port types."""

    FIXED = True
    in0 = in1 = in2 = in3 = out0 = out1 = out2 = out3 = None

    def __init__(self, proc_params):
        super().__init__(proc_params)
        ids, steps, seed = proc_params["sample_ids"], proc_params["steps"], proc_params["seed"]
        self._runners = tuple(StageRunner(s, fixed=self.FIXED, steps=steps, sample_ids=ids, seed=seed)
                              for s in proc_params["stages"])
        self._sources = proc_params["sources"]
        self._outputs = proc_params["outputs"]
        self._total = proc_params["total_steps"]
        self._record_paths = proc_params["record_paths"]
        self._records: dict[str, np.ndarray] = {}

    def run_spk(self) -> None:
        ts = self.time_step
        ins = (self.in0, self.in1, self.in2, self.in3)
        received = {name: ins[i].recv() for i, name in enumerate(self._sources)}
        for r in self._runners:
            out = r.step(ts, received)
            received[r.name] = out
            if r.name in self._record_paths:
                self._store(r.name, ts, out)
        outs = (self.out0, self.out1, self.out2, self.out3)
        for i, name in enumerate(self._outputs):
            outs[i].send(received[name])

    def _store(self, name: str, ts: int, out: np.ndarray) -> None:
        rec = self._records.get(name)
        if rec is None:
            dtype = np.int64 if self.FIXED else np.float64
            rec = self._records[name] = np.zeros((self._total,) + tuple(out.shape), dtype=dtype)
        rec[ts - 1] = out
        if ts == self._total:
            path = self._record_paths[name]
            tmp = path + ".tmp.npy"
            np.save(tmp, rec)
            os.replace(tmp, path)


@implements(proc=MsatGroup, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyMsatGroupFloat(_GroupBase):
    FIXED = False
    in0: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in1: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in2: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in3: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out0: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    out1: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    out2: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    out3: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)


@implements(proc=MsatGroup, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyMsatGroupFixed(_GroupBase):
    FIXED = True
    in0: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    in1: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    in2: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    in3: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    out0: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    out1: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    out2: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    out3: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
