"""Helpers for tests that run Lava networks: integer references, a netx HDF5 writer, a runner.

The references are written from the semantics in LAVA_NOTES §2.4 / §3.6, independently of
Lava and of msat_lava's own code, so a test comparing Lava against them checks both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def if_layer_reference(x: np.ndarray, weights: np.ndarray, bias, vth: int) -> np.ndarray:
    """One Dense -> CUBA layer with iDecay=4096, vDecay=0 (non-leaky IF), in stored-integer units.

    ``x`` is (n_in, T) binary spikes; returns (n_out, T) spikes::

        v[t] = v[t-1] + W x[t-1] + b      (x[-1] = 0: Dense sends last step's sum)
        s[t] = v[t] > vth ; v[t] = 0 where s[t]
    """
    x = np.asarray(x, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.int64)
    n_out, steps = weights.shape[0], x.shape[1]
    bias = np.zeros(n_out, np.int64) if bias is None else np.asarray(bias, dtype=np.int64)
    v = np.zeros(n_out, dtype=np.int64)
    out = np.zeros((n_out, steps), dtype=np.int64)
    for t in range(steps):
        drive = weights @ x[:, t - 1] if t > 0 else 0
        v = v + drive + bias
        fired = v > vth
        v[fired] = 0
        out[:, t] = fired
    return out


def if_chain_reference(x: np.ndarray, layers: Sequence[tuple]) -> np.ndarray:
    """Feed ``x`` through ``layers`` = [(weights, bias_or_None, vth), ...]; returns the last spikes."""
    for weights, bias, vth in layers:
        x = if_layer_reference(x, weights, bias, vth)
    return x


def write_netx_dense(path: Path, n_in: int, layers: Sequence[tuple]) -> Path:
    """Write ``input -> dense -> ... -> dense`` in the netx HDF5 layout (LAVA_NOTES §2.1, §2.8).

    ``layers`` = [(weights (out, in) ints, bias (out,) or None, vThMant), ...]; every dense
    layer gets a CUBA neuron with iDecay=4096, vDecay=0 (non-leaky IF).
    """
    import h5py

    with h5py.File(path, "w") as f:
        layer = f.create_group("layer")
        g = layer.create_group("0")
        g.create_dataset("type", (1,), "S10", [b"input"])
        g.create_dataset("shape", data=np.array([n_in, 1, 1]))
        for i, (weights, bias, vth) in enumerate(layers, start=1):
            n_out, fan_in = weights.shape
            g = layer.create_group(str(i))
            g.create_dataset("type", (1,), "S10", [b"dense"])
            g.create_dataset("shape", data=np.array([n_out, 1, 1]))
            g.create_dataset("inFeatures", data=fan_in)
            g.create_dataset("outFeatures", data=n_out)
            g.create_dataset("weight", data=np.asarray(weights, dtype=np.float32))
            if bias is not None:
                g.create_dataset("bias", data=np.asarray(bias, dtype=np.float32))
            neuron = g.create_group("neuron")
            neuron.create_dataset("type", data="CUBA")
            neuron.create_dataset("iDecay", data=4096)
            neuron.create_dataset("vDecay", data=0)
            neuron.create_dataset("vThMant", data=int(vth))
            neuron.create_dataset("refDelay", data=1)
            neuron.create_dataset("gradedSpike", data=False)
    return Path(path)


def run_fixed_pt(proc, sink, num_steps: int) -> np.ndarray:
    """Run the network containing ``proc`` for ``num_steps`` (CPU sim, fixed_pt), return ``sink`` data.

    The network is always stopped, also when the run raises.
    """
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    try:
        proc.run(condition=RunSteps(num_steps=num_steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        data = sink.data.get()
    finally:
        proc.stop()
    return np.rint(data).astype(np.int64)
