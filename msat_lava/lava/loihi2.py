"""The Loihi 2 hardware branch: detection of lava-loihi and the netx run of a constant-threshold export.

* :func:`is_installed` — ``lava.utils.loihi.is_installed()`` (LAVA_NOTES §3.4): True only where Intel's
  proprietary lava-loihi extension is importable (INRC systems).
* :func:`hw_run_config` — ``Loihi2HwCfg(select_sub_proc_model=True)``: netx's hierarchical blocks expand into
  Lava's own Dense / Conv / LIF processes, whose NeuroCore models lava-loihi provides (Nc models are preferred
  over C and Py models by ``Loihi2HwCfg``; a process with only a Py model would run on the host).
* :func:`run_netx` — builds lava-dl's ``netx.hdf5.Network`` from the network file's ``/layer`` view (the
  binary-spike, max-norm IF view of a constant-threshold export), feeds the graded input p_in = round(x/λ^0·2^F_in)
  (clipped to ±2^F_in, the view's input range) as a constant every step, runs T steps per sample (one compiled
  network per sample: the samples are independent) and reads the readout layer's membrane v after every step
  (predictions = argmax, lowest index on ties). ``run_cfg`` defaults to :func:`hw_run_config`; the CPU
  simulator (``Loihi2SimCfg(select_tag='fixed_pt')``) runs the same code here.

On hardware the source and the readout cross the chip boundary through lava-loihi's embedded-IO adapters
(``lava.proc.embedded_io``) when that module exists; without it (the CPU simulator) they connect directly.
Nothing here was run on a Loihi 2 (no access): the hardware path is exercised with the detection faked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["is_installed", "hw_run_config", "sim_run_config", "run_netx", "NetxRunResult"]


def is_installed() -> bool:
    """lava-loihi present (``lava.utils.loihi.is_installed()``)."""
    from msat_lava.lava import compat

    compat.install()
    from lava.utils import loihi

    return bool(loihi.is_installed())


def hw_run_config() -> Any:
    from msat_lava.lava import compat

    compat.install()
    from lava.magma.core.run_configs import Loihi2HwCfg

    return Loihi2HwCfg(select_sub_proc_model=True)


def sim_run_config() -> Any:
    from msat_lava.lava import compat

    compat.install()
    from lava.magma.core.run_configs import Loihi2SimCfg

    return Loihi2SimCfg(select_tag="fixed_pt")


@dataclass
class NetxRunResult:
    """predictions (T, N); readout (T, N, K): the netx readout layer's v after every step (netx units);
    ``run_config``: the class name of the run configuration used; ``input_clipped``: clipped input values."""

    predictions: np.ndarray
    readout: np.ndarray
    run_config: str
    wall_s: float = 0.0
    input_clipped: int = 0
    traces: dict = field(default_factory=dict)
    readout_units: str = "netx"   # the netx readout layer's v, not the reference's accumulated readout


def _execute(net: Any, source: Any, steps: int, run_cfg: Any) -> np.ndarray:
    """Run ``net`` for ``steps`` steps under ``run_cfg``; the readout v after every step, (steps, K)."""
    from lava.magma.core.run_conditions import RunSteps

    out = []
    try:
        for _ in range(steps):
            net.run(condition=RunSteps(num_steps=1), run_cfg=run_cfg)
            out.append(np.rint(np.asarray(net.layers[-1].neuron.v.get(), dtype=np.float64)).reshape(-1))
    finally:
        net.stop()
    return np.stack(out)


def _connect_input(source: Any, net: Any) -> None:
    try:  # lava-loihi only: spikes from the host enter the chip through an embedded-IO adapter
        from lava.proc.embedded_io.spike import PyToNxAdapter  # type: ignore
    except ImportError:
        source.s_out.connect(net.inp)
        return
    adapter = PyToNxAdapter(shape=source.s_out.shape, num_message_bits=net.input_message_bits)
    source.s_out.connect(adapter.inp)
    adapter.out.connect(net.inp)


def run_netx(path: str, p_in: np.ndarray, steps: int, *, input_message_bits: int, run_cfg: Any = None,
             frac_bits: int = 8) -> NetxRunResult:
    """Run the netx view of the network file ``path`` on inputs ``p_in`` (N, *input_shape) integers (module
    docstring). ``frac_bits``: F_in (the view's input clip is ±2^F_in)."""
    from msat_lava.lava import compat

    compat.install()
    from lava.lib.dl import netx
    from lava.proc.io.source import RingBuffer as Source

    run_cfg = hw_run_config() if run_cfg is None else run_cfg
    lim = 1 << int(frac_bits)
    p = np.asarray(p_in, dtype=np.int64)
    clipped = int(np.count_nonzero(np.abs(p) > lim))
    p = np.clip(p, -lim, lim)
    t0 = time.perf_counter()
    readouts = []
    for i in range(p.shape[0]):
        net = netx.hdf5.Network(net_config=str(path), input_message_bits=int(input_message_bits))
        sample = p[i]
        if sample.ndim == 3:
            sample = sample.transpose(2, 1, 0)  # netx wants (W, H, C)
        source = Source(data=np.repeat(sample[..., None], steps, axis=-1))
        _connect_input(source, net)
        readouts.append(_execute(net, source, steps, run_cfg))
    readout = np.stack(readouts, axis=1)                      # (T, N, K)
    predictions = np.argmax(readout, axis=2).astype(np.int64)
    return NetxRunResult(predictions, readout, type(run_cfg).__name__, time.perf_counter() - t0, clipped)
