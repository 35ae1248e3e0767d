"""Build and run a converted network as a Lava process graph (CPU simulator, float or fixed point).

One :class:`~msat_lava.lava.procs.process.MsatStage` process per stateful stage of the
:class:`~msat_lava.program.Program` plus one :class:`ImageSource`; many samples run in ONE compiled run,
concatenated in time (T steps each, every stage resets at the sample boundary), and outputs are read once at the
end: each recorded stage writes its per-step output to an ``.npy`` file in a private work directory on the last
step (``Var.get`` would cost ~13 µs per element, LAVA_NOTES §4).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from msat_lava.program import Program, check_run_inputs, input_payload_np

PRECISIONS = {"fixed": "fixed_pt", "float": "floating_pt"}


@dataclass
class LavaRunResult:
    """predictions (T, N); readout (T, N, K) accumulated readout; traces: stage → (T, N, *shape) payloads."""

    precision: str
    steps: int
    predictions: np.ndarray
    readout: np.ndarray
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    wall_s: float = 0.0
    num_processes: int = 0
    input_clipped: int = 0

    def accuracy(self, labels: Sequence[int]) -> np.ndarray:
        return (self.predictions == np.asarray(labels).reshape(1, -1)).mean(axis=1)


def run_lava(program: Program, x: Any, steps: int, *, precision: str = "fixed",
             sample_ids: Sequence[int] | None = None, seed: int | None = None,
             record: Sequence[str] = ()) -> LavaRunResult:
    """Run N samples (x: (N, *input_shape)) for ``steps`` steps each in one compiled Lava run."""
    from msat_lava.lava import compat

    compat.install()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from msat_lava.lava.procs.process import ImageSource, MsatStage

    inputs = check_run_inputs(program, x, steps, sample_ids=sample_ids, seed=seed, record=record,
                              precisions=tuple(PRECISIONS), precision=precision)
    x, ids, seed, fixed = inputs.x, inputs.ids, inputs.seed, precision == "fixed"
    n = x.shape[0]
    images, clipped = input_payload_np(program, x, fixed)
    total = n * steps
    out_name = program.readout.name
    wanted = set(record) | {out_name}

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="msat-lava-run-") as work:
        paths = {s.name: os.path.join(work, f"stage{s.index:03d}.npy") for s in program.stages}
        src = ImageSource(images=images, steps=steps, name="input")
        procs: dict[str, Any] = {"input": src}
        for s in program.stages:
            sources = program.sources_of(s)
            proc = MsatStage(stage=s, sources=sources,
                             source_shapes=[program.source_shape(name) for name in sources],
                             steps=steps, sample_ids=ids, seed=seed, total_steps=total,
                             record_path=paths[s.name] if s.name in wanted else None)
            for i, name in enumerate(sources):
                procs[name].s_out.connect(proc.in_port(i))
            procs[s.name] = proc
        runner = procs[out_name]
        try:
            runner.run(condition=RunSteps(num_steps=total),
                       run_cfg=Loihi2SimCfg(select_tag=PRECISIONS[precision]))
        finally:
            runner.stop()
        loaded = {name: np.load(paths[name]) for name in wanted}
    wall = time.perf_counter() - t0

    def by_sample(arr: np.ndarray) -> np.ndarray:
        arr = arr.reshape((n, steps) + arr.shape[1:])
        return np.swapaxes(arr, 0, 1)

    readout = by_sample(loaded[out_name]).reshape(steps, n, -1).astype(np.float64)
    preds = np.argmax(readout, axis=2)
    traces = {name: by_sample(loaded[name]) for name in record}
    return LavaRunResult(precision=precision, steps=steps, predictions=preds, readout=readout,
                         traces=traces, wall_s=wall, num_processes=len(procs), input_clipped=clipped)
