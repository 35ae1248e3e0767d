"""Lava processes (interfaces only) for a converted MSAT network; behaviour lives in ``models.py``.

* :class:`ImageSource` — sends sample k's (quantized or analog) image at every step of its time window
  (samples concatenated in time, T steps each): ALGORITHMS §1.3 direct input.
* :class:`MsatGroup` — one or more consecutive stateful stages of a :class:`msat_lava.program.Program` (spiking
  neuron layers, LIPooling layers, the accumulating readout), each with its incoming synaptic terms fused in.
  Stages inside a group pass their payloads to each other in memory; only the group's boundary goes through
  Lava ports: up to ``MAX_INPUTS`` source ports ``in0..in3``, one per distinct source outside the group, shaped
  like that source, and up to ``MAX_OUTPUTS`` output ports ``out0..out3``, one per stage of the group that a
  later group reads. ``msat_lava.lava.build`` decides the grouping (one stage per process by default).

Timing is zero-delay (docs/DESIGN.md §3): every model receives, computes, then sends in the same step, which Lava
allows on an acyclic graph. All stateful stages reset at the start of each sample window,
``(time_step − 1) % steps == 0``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess

MAX_INPUTS = 4
MAX_OUTPUTS = 4


class ImageSource(AbstractProcess):
    """Emits ``images[k]`` during global steps k·steps+1 .. (k+1)·steps (Lava steps count from 1).

    images: (N, *shape) array — integers (fixed point, p_in of DESIGN.md §4) or float64 (raw units).
    """

    def __init__(self, *, images: np.ndarray, steps: int, name: str | None = None) -> None:
        images = np.asarray(images)
        shape = tuple(images.shape[1:])
        super().__init__(images=images, steps=int(steps), name=name)
        self.s_out = OutPort(shape=shape)


class MsatGroup(AbstractProcess):
    """Consecutive stages (neuron | lipool | readout) of a Program, with their fused input terms.

    Parameters: ``stages`` (msat_lava.program.Stage, in program order), ``sources`` (names of the stages /
    'input' outside the group feeding in0..), ``source_shapes``, ``outputs`` (names of the group's stages sent
    on out0.., for later groups), ``steps`` (T per sample), ``sample_ids`` (dataset index of each sample in
    time order, used by the spike-confidence gate), ``seed``, ``total_steps`` (N·T), ``record_paths`` (stage
    name → an ``.npy`` path the model writes that stage's per-step output to on the last step).
    """

    def __init__(self, *, stages: Sequence[Any], sources: Sequence[str], source_shapes: Sequence[tuple[int, ...]],
                 outputs: Sequence[str], steps: int, sample_ids: Sequence[int], seed: int, total_steps: int,
                 record_paths: Mapping[str, str] | None = None, name: str | None = None) -> None:
        stages = tuple(stages)
        if not stages:
            raise ValueError("a group needs at least one stage")
        label = stages[0].name if len(stages) == 1 else f"{stages[0].name}..{stages[-1].name}"
        if len(sources) > MAX_INPUTS:
            raise ValueError(f"stage(s) {label!r} have {len(sources)} distinct outside sources; at most {MAX_INPUTS}")
        if len(outputs) > MAX_OUTPUTS:
            raise ValueError(f"stage(s) {label!r} export {len(outputs)} outputs; at most {MAX_OUTPUTS}")
        by_name = {s.name: s for s in stages}
        unknown = [o for o in outputs if o not in by_name]
        if unknown:
            raise ValueError(f"outputs {unknown} are not stages of the group {label!r}")
        super().__init__(stages=stages, sources=tuple(sources), outputs=tuple(outputs), steps=int(steps),
                         sample_ids=np.asarray(sample_ids, dtype=np.int64), seed=int(seed),
                         total_steps=int(total_steps), record_paths=dict(record_paths or {}), name=name or label)
        shapes = list(source_shapes) + [(1,)] * (MAX_INPUTS - len(source_shapes))
        self.in0 = InPort(shape=tuple(shapes[0]))
        self.in1 = InPort(shape=tuple(shapes[1]))
        self.in2 = InPort(shape=tuple(shapes[2]))
        self.in3 = InPort(shape=tuple(shapes[3]))
        oshapes = [tuple(by_name[o].shape) for o in outputs] + [(1,)] * (MAX_OUTPUTS - len(outputs))
        self.out0 = OutPort(shape=oshapes[0])
        self.out1 = OutPort(shape=oshapes[1])
        self.out2 = OutPort(shape=oshapes[2])
        self.out3 = OutPort(shape=oshapes[3])

    def in_port(self, i: int) -> InPort:
        return (self.in0, self.in1, self.in2, self.in3)[i]

    def out_port(self, i: int) -> OutPort:
        return (self.out0, self.out1, self.out2, self.out3)[i]
