"""Build and run a converted network as a Lava process graph (CPU simulator, float or fixed point).

One :class:`~msat_lava.lava.procs.process.ImageSource` plus :class:`~msat_lava.lava.procs.process.MsatGroup`
processes, each running up to ``stages_per_process`` consecutive stages of the
:class:`~msat_lava.program.Program` (:func:`partition`). The default, ``None``, puts as many stages in one
process as its port limits allow — the whole network for every network so far — and ``1`` gives one process per
stage, the layer-per-process layout of a netx network. The grouping changes nothing that is computed (stages
run in program order either way, zero-delay within a step), only how many processes Lava synchronises every
step: within a step the stages form a dependency chain, so per-stage processes run one after another anyway
and each extra process adds its synchronisation and port hand-off to every step (ResNet20, 2 cores: 21
processes ≈ 2× the per-step time of 2; ``benchmarks/lava_speed.py``).

Many samples run in ONE compiled run, concatenated in time (T steps each, every stage resets at the sample
boundary), and outputs are read once at the end: each recorded stage writes its per-step output to an ``.npy``
file in a private work directory on the last step (``Var.get`` would cost ~13 µs per element, LAVA_NOTES §4).
The run is split into a first ``RunSteps(1)`` (compile, process start, one step) and ``RunSteps(N·T − 1)``, so
the result reports build, compile and per-step times separately.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from msat_lava.program import Program, Stage, check_run_inputs, input_payload_np

PRECISIONS = {"fixed": "fixed_pt", "float": "floating_pt"}


@dataclass
class LavaRunResult:
    """predictions (T, N); readout (T, N, K) accumulated readout; traces: stage → (T, N, *shape) payloads.

    Times (seconds): ``wall_s`` everything from building the processes to loading the recorded outputs;
    ``build_s`` creating and connecting the processes; ``compile_s`` the first ``run`` call (compile, start the
    worker processes, one step); ``run_s`` the remaining N·T − 1 steps; ``per_step_s`` = run_s / (N·T − 1)
    (0 when N·T = 1); ``collect_s`` stop, reading the recordings.
    """

    precision: str
    steps: int
    predictions: np.ndarray
    readout: np.ndarray
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    wall_s: float = 0.0
    num_processes: int = 0
    input_clipped: int = 0
    build_s: float = 0.0
    compile_s: float = 0.0
    run_s: float = 0.0
    per_step_s: float = 0.0
    collect_s: float = 0.0
    groups: list[list[str]] = field(default_factory=list)

    def accuracy(self, labels: Sequence[int]) -> np.ndarray:
        return (self.predictions == np.asarray(labels).reshape(1, -1)).mean(axis=1)


def _consumers(program: Program) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {s.name: set() for s in program.stages}
    for s in program.stages:
        for src in program.sources_of(s):
            if src != "input":
                out[src].add(s.name)
    return out


def _boundary(program: Program, group: Sequence[Stage], consumers: dict[str, set[str]]):
    names = {s.name for s in group}
    sources: list[str] = []
    for s in group:
        for src in program.sources_of(s):
            if src not in names and src not in sources:
                sources.append(src)
    outputs = [s.name for s in group if consumers[s.name] - names]
    return sources, outputs


def partition(program: Program, stages_per_process: int | None = None) -> list[list[Stage]]:
    """Consecutive runs of stages, one per Lava process, in program order.

    Greedy: a stage joins the current group while the group has at most ``stages_per_process`` stages (None or
    0: no limit), at most ``MAX_INPUTS`` distinct sources outside itself and at most ``MAX_OUTPUTS`` stages read
    by later groups; otherwise it starts a new group. A single stage always fits (it has ≤ MAX_INPUTS sources,
    checked by :class:`~msat_lava.lava.procs.process.MsatGroup`, and exports at most itself).
    """
    from msat_lava.lava.procs.process import MAX_INPUTS, MAX_OUTPUTS

    if stages_per_process is not None and int(stages_per_process) < 0:
        raise ValueError(f"stages_per_process must be >= 0 or None, got {stages_per_process}")
    limit = int(stages_per_process) if stages_per_process else None
    consumers = _consumers(program)
    groups: list[list[Stage]] = []
    cur: list[Stage] = []
    for s in program.stages:
        cand = cur + [s]
        sources, outputs = _boundary(program, cand, consumers)
        fits = (limit is None or len(cand) <= limit) and len(sources) <= MAX_INPUTS and len(outputs) <= MAX_OUTPUTS
        if cur and not fits:
            groups.append(cur)
            cand = [s]
        cur = cand
    groups.append(cur)
    return groups


def run_lava(program: Program, x: Any, steps: int, *, precision: str = "fixed",
             sample_ids: Sequence[int] | None = None, seed: int | None = None,
             record: Sequence[str] = (), stages_per_process: int | None = None) -> LavaRunResult:
    """Run N samples (x: (N, *input_shape)) for ``steps`` steps each in one compiled Lava run.

    ``stages_per_process``: consecutive stages per Lava process (:func:`partition`); the results do not depend
    on it.
    """
    from msat_lava.lava import compat

    compat.install()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from msat_lava.lava.procs.process import ImageSource, MsatGroup

    inputs = check_run_inputs(program, x, steps, sample_ids=sample_ids, seed=seed, record=record,
                              precisions=tuple(PRECISIONS), precision=precision)
    x, ids, seed, fixed = inputs.x, inputs.ids, inputs.seed, precision == "fixed"
    n = x.shape[0]
    groups = partition(program, stages_per_process)
    images, clipped = input_payload_np(program, x, fixed)
    total = n * steps
    out_name = program.readout.name
    wanted = set(record) | {out_name}
    consumers = _consumers(program)
    cfg = Loihi2SimCfg(select_tag=PRECISIONS[precision])

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="msat-lava-run-") as work:
        paths = {s.name: os.path.join(work, f"stage{s.index:03d}.npy") for s in program.stages}
        src = ImageSource(images=images, steps=steps, name="input")
        ports: dict[str, Any] = {"input": src.s_out}
        procs: list[Any] = [src]
        for group in groups:
            sources, outputs = _boundary(program, group, consumers)
            proc = MsatGroup(stages=group, sources=sources,
                             source_shapes=[program.source_shape(name) for name in sources], outputs=outputs,
                             steps=steps, sample_ids=ids, seed=seed, total_steps=total,
                             record_paths={s.name: paths[s.name] for s in group if s.name in wanted})
            for i, name in enumerate(sources):
                ports[name].connect(proc.in_port(i))
            for i, name in enumerate(outputs):
                ports[name] = proc.out_port(i)
            procs.append(proc)
        runner = procs[-1]
        t1 = time.perf_counter()
        t2 = t3 = t1
        try:
            runner.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
            t2 = time.perf_counter()
            if total > 1:
                runner.run(condition=RunSteps(num_steps=total - 1), run_cfg=cfg)
            t3 = time.perf_counter()
        finally:
            runner.stop()
        loaded = {name: np.load(paths[name]) for name in wanted}
    t4 = time.perf_counter()

    def by_sample(arr: np.ndarray) -> np.ndarray:
        arr = arr.reshape((n, steps) + arr.shape[1:])
        return np.swapaxes(arr, 0, 1)

    readout = by_sample(loaded[out_name]).reshape(steps, n, -1).astype(np.float64)
    preds = np.argmax(readout, axis=2)
    traces = {name: by_sample(loaded[name]) for name in record}
    return LavaRunResult(precision=precision, steps=steps, predictions=preds, readout=readout,
                         traces=traces, wall_s=t4 - t0, num_processes=len(procs), input_clipped=clipped,
                         build_s=t1 - t0, compile_s=t2 - t1, run_s=t3 - t2,
                         per_step_s=(t3 - t2) / (total - 1) if total > 1 else 0.0, collect_s=t4 - t3,
                         groups=[[s.name for s in g] for g in groups])
