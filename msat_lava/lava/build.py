"""Build and run a converted network as a Lava process graph (CPU simulator, float or fixed point).

One :class:`~msat_lava.lava.procs.process.ImageSource` plus :class:`~msat_lava.lava.procs.process.MsatGroup`
processes, each running up to ``stages_per_process`` consecutive stages of the
:class:`~msat_lava.program.Program` (:func:`partition`). The default, ``None``, puts the whole network in one
process (the CPU backend's fusion of zero-delay stages), and ``1`` gives one process per stage, the
layer-per-process layout of a netx network. A group has one input port per distinct source outside it and one
output port per stage a later group reads, so any grouping builds. The grouping changes nothing that is
computed (stages run in program order either way, zero-delay within a step), only how many processes Lava
synchronises every step: within a step the stages form a dependency chain, so per-stage processes run one after
another anyway and each extra process adds its synchronisation and port hand-off to every step (ResNet20,
2 cores: 21 processes ≈ 2× the per-step time of 2; ``benchmarks/lava_speed.py``).

Many samples run in ONE compiled run, concatenated in time (T steps each, every stage resets at the sample
boundary). **Recording**: each recorded stage (and always the readout) sends its per-step output on its
process's record port (``rec_i``); :func:`build_network` flags those ports as Lava external pipes (a
shared-memory channel to this process, as ``lava.proc.io.extractor`` does) and :class:`LavaNetwork` reads them
after each run call: no ``Var.get`` (≈ 13 µs per element, LAVA_NOTES §4) and no file. A message carries
``chunk`` steps (all N·T unless the recorded bytes per step exceed :data:`RECORD_BUFFER_BYTES`; then the run
proceeds in calls of at most ``chunk`` steps, each drained before the next), so one run call sends one message
per record port, not one per step (the model buffers the steps and sends at the end of the call). Vars (state,
constants) stay readable with ``.get()`` until :meth:`LavaNetwork.stop`.

:func:`run_lava` splits the run into a first ``RunSteps(1)`` (compile, process start, one step) and the
remaining N·T − 1 steps, so the result reports build, compile and per-step times separately.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from msat_lava.program import Program, Stage, check_run_inputs, input_payload_np

PRECISIONS = {"fixed": "fixed_pt", "float": "floating_pt"}

#: shared memory the record channels of one run may hold (sets the steps per chunk; Docker's /dev/shm is 64 MiB)
RECORD_BUFFER_BYTES = 32 << 20


@dataclass
class LavaRunResult:
    """predictions (T, N); readout (T, N, K) accumulated readout; traces: stage → (T, N, *shape) payloads.

    Times (seconds): ``wall_s`` everything from building the processes to reading the recorded outputs;
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
    """(sources outside the group in first-use order, the group's stages read by later groups)."""
    names = {s.name for s in group}
    sources: list[str] = []
    for s in group:
        for src in program.sources_of(s):
            if src not in names and src not in sources:
                sources.append(src)
    outputs = [s.name for s in group if consumers[s.name] - names]
    return sources, outputs


def partition(program: Program, stages_per_process: int | None = None) -> list[list[Stage]]:
    """Consecutive runs of ``stages_per_process`` stages (None or 0: all of them), one per Lava process, in
    program order. Any grouping builds: a process gets as many ports as it has outside sources and read outputs.
    """
    if stages_per_process is not None and int(stages_per_process) < 0:
        raise ValueError(f"stages_per_process must be >= 0 or None, got {stages_per_process}")
    stages = list(program.stages)
    limit = int(stages_per_process) if stages_per_process else len(stages)
    return [stages[i:i + limit] for i in range(0, len(stages), limit)]


class LavaNetwork:
    """A built Lava graph of a program (:func:`build_network`): run it in steps, read what was recorded, read
    any Var, stop it.

    ``source`` (the ImageSource), ``processes`` (the MsatGroups in program order), ``groups`` (their stages),
    ``run_cfg``; :meth:`process_of` (stage name → its MsatGroup), :meth:`stage_vars` (→ that stage's Vars by
    role). :meth:`run` advances ``num_steps`` steps (in chunks that fit the record channels, each drained into
    host memory); :meth:`recorded` gives stage → (steps so far, *shape) arrays; :meth:`stop` ends the workers
    (Vars cannot be read afterwards; a stopped graph cannot run again, LAVA_NOTES §4).
    """

    def __init__(self, program: Program, source: Any, processes: list[Any], groups: list[list[Stage]],
                 record: Sequence[str], total_steps: int, chunk: int, run_cfg: Any, input_clipped: int,
                 synapses: Sequence[Any] = ()) -> None:
        self.program, self.source, self.processes, self.groups = program, source, processes, groups
        self.record, self.total_steps, self.chunk, self.run_cfg = tuple(record), int(total_steps), int(chunk), run_cfg
        self.input_clipped = int(input_clipped)
        self.synapses = tuple(synapses)  # the MsatSynapse processes (synapses='separate')
        self._where = {s.name: p for p, g in zip(processes, groups) for s in g}
        self._ports = [(name, self._where[name].rec_port(name)) for name in self.record]
        self._rec: dict[str, np.ndarray] = {}
        self.steps_done = 0
        self.drain_s = 0.0
        self._stopped = False

    @property
    def num_processes(self) -> int:
        return 1 + len(self.processes) + len(self.synapses)

    def process_of(self, stage: str) -> Any:
        return self._where[stage]

    def stage_vars(self, stage: str) -> dict[str, Any]:
        return self._where[stage].stage_vars(stage)

    def run(self, num_steps: int) -> float:
        """Advance ``num_steps`` steps; returns the seconds spent in Lava's run calls (drains excluded)."""
        from lava.magma.core.run_conditions import RunSteps

        num_steps = int(num_steps)
        if num_steps < 1 or self.steps_done + num_steps > self.total_steps:
            raise ValueError(f"cannot run {num_steps} steps: {self.steps_done} of {self.total_steps} done")
        if self._stopped:
            raise RuntimeError("the network was stopped")
        lead = self.processes[-1]
        spent = 0.0
        left = num_steps
        while left:
            n = min(left, self.chunk)
            t0 = time.perf_counter()
            lead.run(condition=RunSteps(num_steps=n), run_cfg=self.run_cfg)
            t1 = time.perf_counter()
            self._drain(n)
            self.drain_s += time.perf_counter() - t1
            spent += t1 - t0
            left -= n
        return spent

    def _drain(self, n: int) -> None:
        lo = self.steps_done
        for name, port in self._ports:
            pipe = port.external_pipe_csp_recv_port
            rec = self._rec.get(name)
            if rec is None:
                rec = self._rec[name] = np.empty((self.total_steps,) + tuple(port.shape[1:]), dtype=pipe.d_type)
            for k in range(lo, lo + n, self.chunk):
                m = min(self.chunk, lo + n - k)
                rec[k:k + m] = pipe.recv()[:m]
        self.steps_done = lo + n

    def recorded(self) -> dict[str, np.ndarray]:
        """stage → its per-step outputs so far, (steps_done, *shape) (global time: samples concatenated)."""
        return {name: self._rec[name][:self.steps_done] for name in self.record if name in self._rec}

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.processes[-1].stop()


SYNAPSE_LAYOUTS = ("fused", "separate")


def build_network(program: Program, x: Any, steps: int, *, precision: str = "fixed",
                  sample_ids: Sequence[int] | None = None, seed: int | None = None, record: Sequence[str] = (),
                  stages_per_process: int | None = None, synapses: str = "fused") -> LavaNetwork:
    """Create and connect the processes for N samples (x: (N, *input_shape)) of ``steps`` steps each; nothing is
    compiled until the first :meth:`LavaNetwork.run`. ``record``: stages whose per-step output is read back (the
    readout always is). ``synapses``: 'fused' (each group computes its stages' terms) or 'separate' (one
    :class:`~msat_lava.lava.procs.process.MsatSynapse` process per term feeding a one-stage group, netx's
    layout of a Dense/Conv process beside each neuron process; needs ``stages_per_process`` None or 1)."""
    from msat_lava.lava import compat

    compat.install()
    from msat_lava.lava.config import sim_config
    from msat_lava.lava.procs.process import ImageSource, MsatGroup, MsatSynapse

    if synapses not in SYNAPSE_LAYOUTS:
        raise ValueError(f"synapses must be one of {list(SYNAPSE_LAYOUTS)}, got {synapses!r}")
    separate = synapses == "separate"
    if separate:
        if stages_per_process not in (None, 1):
            raise ValueError(f"synapses='separate' runs one stage per process; stages_per_process must be None or "
                             f"1, got {stages_per_process}")
        stages_per_process = 1
    inputs = check_run_inputs(program, x, steps, sample_ids=sample_ids, seed=seed, record=record,
                              precisions=tuple(PRECISIONS), precision=precision)
    x, ids, seed = inputs.x, inputs.ids, inputs.seed
    total = x.shape[0] * steps
    groups = partition(program, stages_per_process)
    images, clipped = input_payload_np(program, x, precision == "fixed")
    out_name = program.readout.name
    wanted = tuple(dict.fromkeys((*record, out_name)))
    consumers = _consumers(program)
    per_step = sum(8 * int(np.prod(program.stage(n).shape)) for n in wanted)
    chunk = max(1, min(total, RECORD_BUFFER_BYTES // max(1, per_step)))

    src = ImageSource(images=images, steps=steps, precision=precision, input_frac_bits=program.input_frac_bits,
                      name="input")
    ports: dict[str, Any] = {"input": src.s_out}
    procs: list[Any] = []
    synapse_procs: list[Any] = []
    for group in groups:
        sources, outputs = _boundary(program, group, consumers)
        ext = separate and group[0].kind != "lipool"
        if ext:
            sources = []
        proc = MsatGroup(stages=group, sources=sources,
                         source_shapes=[program.source_shape(name) for name in sources], outputs=outputs,
                         steps=steps, sample_ids=ids, seed=seed, total_steps=total,
                         record=[s.name for s in group if s.name in wanted], record_steps=chunk,
                         precision=precision, context=program.stages, input_frac_bits=program.input_frac_bits,
                         term_inputs=ext)
        for name in sources:
            ports[name].connect(proc.in_port_of(name))
        if ext:
            stage = group[0]
            for k, term in enumerate(stage.terms):
                syn = MsatSynapse(stage=stage, k=k, source_shape=program.source_shape(term.source),
                                  precision=precision, context=program.stages,
                                  input_frac_bits=program.input_frac_bits)
                ports[term.source].connect(syn.a_in)
                syn.x_out.connect(proc.term_port(stage.name, k))
                synapse_procs.append(syn)
        for name in outputs:
            ports[name] = proc.out_port_of(name)
        procs.append(proc)
    where = {s.name: p for p, g in zip(procs, groups) for s in g}
    for name in wanted:
        where[name].rec_port(name).flag_external_pipe(buffer_size=1)
    return LavaNetwork(program, src, procs, groups, wanted, total, chunk, sim_config(precision), clipped,
                       synapse_procs)


def run_lava(program: Program, x: Any, steps: int, *, precision: str = "fixed",
             sample_ids: Sequence[int] | None = None, seed: int | None = None,
             record: Sequence[str] = (), stages_per_process: int | None = None,
             synapses: str = "fused") -> LavaRunResult:
    """Run N samples (x: (N, *input_shape)) for ``steps`` steps each in one compiled Lava run.

    ``stages_per_process``: consecutive stages per Lava process (:func:`partition`); ``synapses``: 'fused' or
    'separate' (:func:`build_network`); the results depend on neither.
    """
    t0 = time.perf_counter()
    net = build_network(program, x, steps, precision=precision, sample_ids=sample_ids, seed=seed, record=record,
                        stages_per_process=stages_per_process, synapses=synapses)
    total = net.total_steps
    n = total // steps
    t1 = time.perf_counter()
    compile_s = run_s = 0.0
    try:
        compile_s = net.run(1)
        if total > 1:
            run_s = net.run(total - 1)
    finally:
        net.stop()
    loaded = net.recorded()
    t4 = time.perf_counter()

    def by_sample(arr: np.ndarray) -> np.ndarray:
        arr = arr.reshape((n, steps) + arr.shape[1:])
        return np.swapaxes(arr, 0, 1)

    readout = by_sample(loaded[program.readout.name]).reshape(steps, n, -1).astype(np.float64)
    preds = np.argmax(readout, axis=2)
    traces = {name: by_sample(loaded[name]) for name in record}
    return LavaRunResult(precision=precision, steps=steps, predictions=preds, readout=readout,
                         traces=traces, wall_s=t4 - t0, num_processes=net.num_processes,
                         input_clipped=net.input_clipped, build_s=t1 - t0, compile_s=compile_s, run_s=run_s,
                         per_step_s=run_s / (total - 1) if total > 1 else 0.0,
                         collect_s=(t4 - t1) - compile_s - run_s,
                         groups=[[s.name for s in g] for g in net.groups])
