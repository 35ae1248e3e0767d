"""lava-dl's own ``netx.hdf5.Network`` on Lava's CPU simulator, every layer recorded: the Lava side of
``msat-lava verify`` for plain netx files (:mod:`msat_lava.netx_peer` is the other side).

:func:`run_netx_lava` builds ``netx.hdf5.Network(net_config=path, reset_interval=I, reset_offset=O)`` once per
sample (netx runs one sample at a time: Lava has no batch dimension, and the input is the input layer's
``bias_mant``, not a stream), sets ``in_layer.neuron.bias_mant``, runs ``steps`` steps under
``Loihi2SimCfg(select_tag='fixed_pt')`` (the bit-accurate models) and returns

* every layer's output spikes at every step: a :class:`SpikeRecorder` on each layer's ``out`` port keeps what it
  receives in memory and writes it to an ``.npy`` file on the last step (reading a ``RingBuffer`` back with
  ``Var.get`` costs ~13 µs per element, LAVA_NOTES §4: ~50 s for PilotNet's 24 steps);
* every layer's final ``u`` and ``v`` (``Var.get``), the states Lava exposes.

The recorder's model is handed to the compiler through ``exception_proc_model_map`` (so Lava's model discovery
never walks this package). Every network is stopped, also on errors. Arrays come back in Lava's order with the
batch first and time last, like :class:`msat_lava.netx_peer.Recording`. Importing this module imports Lava (the
Python 3.11 fixes are installed by ``import msat_lava`` first); only :mod:`msat_lava.lava` modules may.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

__all__ = ["LavaNetxRun", "SpikeRecorder", "run_netx_lava"]


@dataclass
class LavaNetxRun:
    """``spikes[k]`` int64 (B, *shape, T) as Lava sent them; ``u[k]`` / ``v[k]`` int64 (B, *shape): after the
    last step; ``wall_s``: build + run + read back, all samples; ``run_s``: the ``run`` calls alone."""

    spikes: dict[int, np.ndarray]
    u: dict[int, np.ndarray]
    v: dict[int, np.ndarray]
    steps: int
    wall_s: float
    run_s: float


class SpikeRecorder(AbstractProcess):
    """Receives one layer's output at every step; writes (*shape, steps) int64 to ``path`` on the last step."""

    def __init__(self, *, shape: tuple, steps: int, path: str) -> None:
        super().__init__(shape=tuple(shape), steps=int(steps), path=str(path))
        self.a_in = InPort(shape=tuple(shape))


@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeRecorderModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)  # as lava.proc.io.sink.RingBuffer (fixed_pt)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._steps = int(proc_params["steps"])
        self._path = proc_params["path"]
        self._rec = np.zeros(tuple(proc_params["shape"]) + (self._steps,), dtype=np.int64)

    def run_spk(self) -> None:
        data = self.a_in.recv()
        t = self.time_step
        if t <= self._steps:
            self._rec[..., t - 1] = data
        if t == self._steps:
            tmp = self._path + ".tmp.npy"
            np.save(tmp, self._rec)
            os.replace(tmp, self._path)


def run_netx_lava(path: str | os.PathLike, bias_mant: np.ndarray, steps: int, *, reset_interval: int | None = None,
                  reset_offset: int = 0) -> LavaNetxRun:
    """Run lava-dl's netx network ``path`` on each sample of ``bias_mant`` (B, W, H, C) ints (the input layer's
    bias mantissas, Lava's order) for ``steps`` steps; see the module docstring."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    bias = np.asarray(bias_mant)
    if bias.ndim != 4:
        raise ValueError(f"bias_mant must be (B, W, H, C), got shape {bias.shape}")
    steps = int(steps)
    spikes: dict[int, list] = {}
    us: dict[int, list] = {}
    vs: dict[int, list] = {}
    t_start = time.perf_counter()
    run_s = 0.0
    with tempfile.TemporaryDirectory(prefix="msat-lava-netx-") as work:
        for i in range(bias.shape[0]):
            lnet = netx.hdf5.Network(net_config=str(path), reset_interval=reset_interval, reset_offset=reset_offset)
            lnet.in_layer.neuron.bias_mant.init = bias[i].astype(np.int64)
            files = [os.path.join(work, f"s{i}_l{k}.npy") for k in range(len(lnet.layers))]
            recs = []
            for k, layer in enumerate(lnet.layers):
                rec = SpikeRecorder(shape=tuple(layer.out.shape), steps=steps, path=files[k])
                layer.out.connect(rec.a_in)
                recs.append(rec)
            # the compiler looks processes up by instance (process selection) and by class (RunConfig.select)
            mapping = {rec: PySpikeRecorderModel for rec in recs}
            mapping[SpikeRecorder] = PySpikeRecorderModel
            cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=mapping)
            try:
                t0 = time.perf_counter()
                lnet.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
                run_s += time.perf_counter() - t0
                for k, layer in enumerate(lnet.layers):
                    us.setdefault(k, []).append(np.asarray(layer.neuron.u.get()).astype(np.int64))
                    vs.setdefault(k, []).append(np.asarray(layer.neuron.v.get()).astype(np.int64))
            finally:
                lnet.stop()
            for k, f in enumerate(files):
                spikes.setdefault(k, []).append(np.load(f))
    return LavaNetxRun(spikes={k: np.stack(x) for k, x in spikes.items()}, u={k: np.stack(x) for k, x in us.items()},
                       v={k: np.stack(x) for k, x in vs.items()}, steps=steps, wall_s=time.perf_counter() - t_start,
                       run_s=run_s)
