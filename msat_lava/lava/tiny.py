"""The tiny Lava network of ``msat-lava doctor``: RingBuffer source → Dense → LIF → RingBuffer sink on Lava's CPU
simulator (fixed_pt), so that the doctor (:mod:`msat_lava.doctor`, which holds the integer reference it is compared
with) stays outside the only package that imports Lava.

The network: Dense weights ``2·W`` with weight_exp −1 (= W), a non-leaky LIF (du = 4095, dv = 0) with
``bias_mant = b``, bias_exp 6 and threshold ``vth``; the sink records the LIF's output spikes, shape (n_out, T).
"""
from __future__ import annotations

import numpy as np

__all__ = ["TinyRunError", "run_dense_lif"]


class TinyRunError(RuntimeError):
    """A failure of the tiny run; ``stage`` is 'import', 'build' or 'run' (the doctor's message per stage)."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.stage, self.cause = stage, cause


def run_dense_lif(spikes_in: np.ndarray, weights: np.ndarray, bias: np.ndarray, vth: int) -> np.ndarray:
    """Run the network for ``spikes_in.shape[1]`` steps; the recorded output spikes as int64 (n_out, T). The
    network is always stopped. Raises :class:`TinyRunError` naming the stage that failed."""
    try:
        from msat_lava.lava import compat

        compat.install()
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.dense.process import Dense
        from lava.proc.io.sink import RingBuffer as SinkBuffer
        from lava.proc.io.source import RingBuffer as SourceBuffer
        from lava.proc.lif.process import LIF
    except Exception as exc:
        raise TinyRunError("import", exc) from exc
    steps, n_out = spikes_in.shape[1], weights.shape[0]
    try:
        source = SourceBuffer(data=spikes_in)
        dense = Dense(weights=2 * weights, weight_exp=-1)
        lif = LIF(shape=(n_out,), du=4095, dv=0, vth=vth, bias_mant=bias, bias_exp=6)
        sink = SinkBuffer(shape=(n_out,), buffer=steps)
        source.s_out.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        lif.s_out.connect(sink.a_in)
    except Exception as exc:
        raise TinyRunError("build", exc) from exc
    try:
        try:
            lif.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
            return np.rint(sink.data.get()).astype(np.int64)
        finally:
            lif.stop()
    except Exception as exc:
        raise TinyRunError("run", exc) from exc
