"""Lava processes (interfaces only) for a converted MSAT network; behaviour lives in ``models.py``.

* :class:`ImageSource` — sends sample k's (quantized or analog) image at every step of its time window
  (samples concatenated in time, T steps each): ALGORITHMS §1.3 direct input.
* :class:`MsatStage` — one stateful stage of a :class:`msat_lava.program.Program`: a spiking neuron layer, an
  LIPooling layer or the accumulating readout, with its incoming synaptic terms fused in (one OS process per
  stage keeps the process count, and so the per-step cost, low). Up to ``MAX_INPUTS`` source ports
  ``in0..in3``, one per distinct source, shaped like that source; ``s_out`` carries the stage's payload.

Timing is zero-delay (docs/DESIGN.md §3): every model receives, computes, then sends in the same step, which Lava
allows on an acyclic graph. All stateful processes reset at the start of each sample window,
``(time_step − 1) % steps == 0``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess

MAX_INPUTS = 4


class ImageSource(AbstractProcess):
    """Emits ``images[k]`` during global steps k·steps+1 .. (k+1)·steps (Lava steps count from 1).

    images: (N, *shape) array — int64 integers (fixed point, p_in of DESIGN.md §4) or float64 (raw units).
    """

    def __init__(self, *, images: np.ndarray, steps: int, name: str | None = None) -> None:
        images = np.asarray(images)
        shape = tuple(images.shape[1:])
        super().__init__(images=images, steps=int(steps), name=name)
        self.s_out = OutPort(shape=shape)


class MsatStage(AbstractProcess):
    """One stage (neuron | lipool | readout) of a Program, with its fused input terms.

    Parameters: ``stage`` (msat_lava.program.Stage), ``sources`` (names of the stages/'input' feeding in0..),
    ``source_shapes``, ``steps`` (T per sample), ``sample_ids`` (dataset index of each sample in time order,
    used by the spike-confidence gate), ``seed``, ``total_steps`` (N·T), ``record_path`` (an ``.npy`` path the
    model writes this stage's per-step output to on the last step, or None).
    """

    def __init__(self, *, stage: Any, sources: Sequence[str], source_shapes: Sequence[tuple[int, ...]],
                 steps: int, sample_ids: Sequence[int], seed: int, total_steps: int,
                 record_path: str | None = None, name: str | None = None) -> None:
        if len(sources) > MAX_INPUTS:
            raise ValueError(f"stage {stage.name!r} has {len(sources)} distinct sources; at most {MAX_INPUTS}")
        super().__init__(stage=stage, sources=tuple(sources), steps=int(steps),
                         sample_ids=np.asarray(sample_ids, dtype=np.int64), seed=int(seed),
                         total_steps=int(total_steps), record_path=record_path, name=name or stage.name)
        shapes = list(source_shapes) + [(1,)] * (MAX_INPUTS - len(source_shapes))
        self.in0 = InPort(shape=tuple(shapes[0]))
        self.in1 = InPort(shape=tuple(shapes[1]))
        self.in2 = InPort(shape=tuple(shapes[2]))
        self.in3 = InPort(shape=tuple(shapes[3]))
        self.s_out = OutPort(shape=tuple(stage.shape))

    def in_port(self, i: int) -> InPort:
        return (self.in0, self.in1, self.in2, self.in3)[i]
