"""Lava processes (interfaces only) for a converted MSAT network; behaviour lives in ``models.py``.

* :class:`ImageSource` — sends sample k's (quantized or analog) image at every step of its time window
  (samples concatenated in time, T steps each): ALGORITHMS §1.3 direct input. Var ``data`` (read-only): the
  images; port ``s_out``.
* :class:`MsatGroup` — one or more consecutive stateful stages of a :class:`msat_lava.program.Program` (spiking
  neuron layers, LIPooling layers, the accumulating readout), each with its incoming synaptic terms fused in.
  Stages inside a group pass their payloads to each other in memory; only the group's boundary goes through
  Lava ports. ``msat_lava.lava.build`` decides the grouping (the whole network in one process by default).

Like Lava's own processes, a process is an interface: every port and Var is an attribute created in
``__init__`` (with ``setattr``: their number depends on the stages), with its shape, initial value and declared
precision taken from the spec by :mod:`msat_lava.lava.layout` (the table of names is there). ``members`` lists
them all (name → :class:`~msat_lava.lava.layout.Member`); ``stage_vars(stage)`` gives one stage's Vars by role
(``proc.stage_vars('relu_1')['v'].get()`` after a run is that stage's v̂). There is one input port per distinct
source outside the group and one output port per stage a later group reads: any number, nothing fails at build
time. Recording is an output port per recorded stage (``rec_port(stage)``, ``record_steps`` steps per message),
tapped by the builder, never a file.

The models are picked by tag (``fixed_pt`` / ``floating_pt``); because the members vary per instance, each
selected model class is specialised for its process with one Lava type per member (run with
:func:`msat_lava.lava.config.sim_config`, a ``Loihi2SimCfg`` that does this in ``select``).

Timing is zero-delay (docs/DESIGN.md §3): every model receives, computes, then sends in the same step, which Lava
allows on an acyclic graph. All stateful stages reset at the start of each sample window,
``(time_step − 1) % steps == 0`` (``reset_interval`` = steps, ``reset_offset`` = 1, LIFReset's convention).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

from msat_lava.lava import layout
from msat_lava.lava.layout import Member
from msat_lava.lava.stages import term_key

PRECISIONS = ("fixed", "float")


def _check_precision(precision: str) -> bool:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision == "fixed"


class _Declared(AbstractProcess):
    """Shared: create the ports and Vars of a list of :class:`Member`, remember them in ``members``."""

    def _declare(self, members: Sequence[Member]) -> None:
        self.members: dict[str, Member] = {}
        for m in members:
            if m.name in self.members or hasattr(self, m.name):
                raise ValueError(f"process {self.name!r}: member name {m.name!r} is used twice")
            if m.kind == "in":
                obj: Any = InPort(shape=m.shape)
            elif m.kind == "out":
                obj = OutPort(shape=m.shape)
            else:
                obj = Var(shape=m.shape, init=m.init)
            setattr(self, m.name, obj)
            self.members[m.name] = m


class ImageSource(_Declared):
    """Emits ``images[k]`` during global steps k·steps+1 .. (k+1)·steps (Lava steps count from 1).

    images: (N, *shape) array — integers (fixed point, p_in of DESIGN.md §4) or float64 (raw units);
    ``input_frac_bits``: F_in, for the declared width of ``s_out`` (signed F_in + 8 bits).
    """

    def __init__(self, *, images: np.ndarray, steps: int, precision: str = "fixed", input_frac_bits: int = 8,
                 name: str | None = None) -> None:
        fixed = _check_precision(precision)
        images = np.asarray(images)
        shape = tuple(int(v) for v in images.shape[1:])
        super().__init__(steps=int(steps), precision=precision, name=name)
        bits = layout.input_bits(input_frac_bits) if fixed else None
        self._declare([
            Member("data", "var", "input", "data", tuple(images.shape), bits, True, fixed, init=images,
                   read_only=True),
            Member("s_out", "out", "input", "payload", shape, bits, True, fixed),
        ])


class MsatGroup(_Declared):
    """Consecutive stages (neuron | lipool | readout) of a Program, with their fused input terms.

    Parameters: ``stages`` (msat_lava.program.Stage, in program order), ``sources`` (names of the stages /
    'input' outside the group, each gets an input port), ``source_shapes``, ``outputs`` (names of the group's
    stages read by later groups, each gets an output port), ``steps`` (T per sample), ``sample_ids`` (dataset
    index of each sample in time order, used by the spike-confidence gate), ``seed``, ``total_steps`` (N·T),
    ``record`` (stage names of the group whose per-step output goes out on a record port), ``record_steps``
    (K ≥ 1: a record port carries K steps per message, shape (K, *stage shape); the model sends a message when
    K steps are buffered and at the end of every run call, so a run of n ≤ K steps sends one), ``precision``
    ('fixed' or 'float': the number domain of the Vars; the run config's tag must match), ``context``
    (the program's stages, or at least the sources and what a LIPool source pools: their payload widths),
    ``input_frac_bits`` (F_in, the input's width), ``term_inputs`` (False: the group computes its stages'
    synaptic terms from its sources' payloads; True: a :class:`MsatSynapse` process per term sends the term's
    contribution, received on ``in_t<k>_<i>`` (:meth:`term_port`), and the group holds no weights; a LIPool
    stage still reads its source).
    """

    def __init__(self, *, stages: Sequence[Any], sources: Sequence[str], source_shapes: Sequence[tuple[int, ...]],
                 outputs: Sequence[str], steps: int, sample_ids: Sequence[int], seed: int, total_steps: int,
                 record: Sequence[str] = (), record_steps: int = 1, precision: str = "fixed",
                 context: Sequence[Any] = (), input_frac_bits: int = 8, term_inputs: bool = False,
                 name: str | None = None) -> None:
        fixed = _check_precision(precision)
        stages = tuple(stages)
        if not stages:
            raise ValueError("a group needs at least one stage")
        label = stages[0].name if len(stages) == 1 else f"{stages[0].name}..{stages[-1].name}"
        by_name = {s.name: s for s in (*context, *stages)}
        own = {s.name for s in stages}
        for what, names in (("outputs", outputs), ("record", record)):
            unknown = [o for o in names if o not in own]
            if unknown:
                raise ValueError(f"{what} {unknown} are not stages of the group {label!r}")
        missing = [s for s in sources if s != "input" and s not in by_name]
        if missing:
            raise ValueError(f"group {label!r}: context lacks the sources {missing}")
        record_steps = int(record_steps)
        if record_steps < 1:
            raise ValueError(f"group {label!r}: record_steps must be >= 1, got {record_steps}")
        if len(source_shapes) != len(sources):
            raise ValueError(f"group {label!r}: {len(sources)} sources but {len(source_shapes)} source shapes")
        super().__init__(stages=stages, steps=int(steps), sample_ids=np.asarray(sample_ids, dtype=np.int64),
                         seed=int(seed), total_steps=int(total_steps), precision=precision,
                         record_steps=record_steps, term_inputs=bool(term_inputs), reset_interval=int(steps),
                         reset_offset=1 % int(steps), name=name or label)
        shapes = dict(zip(sources, (tuple(int(v) for v in s) for s in source_shapes)))

        def width(stage_name: str | None) -> tuple[int | None, bool]:
            bits, signed = layout.payload_bits(None if stage_name in (None, "input") else by_name[stage_name],
                                               by_name, input_frac_bits)
            return (bits if fixed else None), signed

        def source_shape(name: str) -> tuple[int, ...]:
            return shapes[name] if name in shapes else tuple(by_name[name].shape)

        members: list[Member] = []
        self.in_ports_of: dict[str, str] = {}
        for src in sources:
            bits, signed = width(src)
            pname = layout.source_port_name(src, by_name)
            members.append(Member(pname, "in", src, "payload", shapes[src], bits, signed, fixed))
            self.in_ports_of[src] = pname
        self.out_ports_of: dict[str, str] = {}
        self.rec_ports_of: dict[str, str] = {}
        self.vars_of: dict[str, dict[str, str]] = {}
        for s in stages:
            pmax = None
            src_shape = None
            if s.kind == "lipool":
                src_shape = source_shape(s.source)
                pmax = layout.payload_max(by_name.get(s.source), by_name, input_frac_bits)
            decl = layout.stage_state(s, steps=steps, fixed=fixed, src_shape=src_shape, source_payload_max=pmax)
            decl += layout.stage_constants(s, terms=not term_inputs)
            members += decl
            self.vars_of[s.name] = {m.role: m.name for m in decl}
            if term_inputs and s.kind != "lipool":
                for k, term in enumerate(s.terms):
                    pname = f"in_t{k}_{s.index}"
                    tb = layout.term_bits(term, by_name, input_frac_bits) if fixed else None
                    members.append(Member(pname, "in", s.name, "term", tuple(s.shape), tb, True, fixed))
                    self.in_ports_of[term_key(s.name, k)] = pname
            bits, signed = width(s.name)
            if s.name in outputs:
                pname = f"out_{s.index}"
                members.append(Member(pname, "out", s.name, "payload", tuple(s.shape), bits, signed, fixed))
                self.out_ports_of[s.name] = pname
            if s.name in record:
                pname = f"rec_{s.index}"
                members.append(Member(pname, "out", s.name, "record", (record_steps, *s.shape), bits, signed,
                                      fixed))
                self.rec_ports_of[s.name] = pname
        self._declare(members)
        self.proc_params["inputs"] = tuple(self.in_ports_of.items())
        self.proc_params["outputs"] = tuple(self.out_ports_of.items())
        self.proc_params["records"] = tuple(self.rec_ports_of.items())
        self.proc_params["state_vars"] = tuple(
            (s.name, tuple((role, self.vars_of[s.name][role]) for role in layout.STATE_ROLES[s.kind]))
            for s in stages)

    def term_port(self, stage: str, k: int) -> InPort:
        """The input port of stage's term k (``term_inputs``: a :class:`MsatSynapse` sends its contribution)."""
        return getattr(self, self.in_ports_of[term_key(stage, k)])

    # ---- lookups by stage name ----
    def in_port_of(self, source: str) -> InPort:
        return getattr(self, self.in_ports_of[source])

    def out_port_of(self, stage: str) -> OutPort:
        return getattr(self, self.out_ports_of[stage])

    def rec_port(self, stage: str) -> OutPort:
        return getattr(self, self.rec_ports_of[stage])

    def stage_vars(self, stage: str) -> dict[str, Var]:
        """The stage's Vars by role (v, vsum, count, t | acc; w<k>, e<k>, bias, tables, lutc)."""
        return {role: getattr(self, name) for role, name in self.vars_of[stage].items()}


class MsatSynapse(_Declared):
    """One synaptic term of a stage as its own process (the ``separate`` synapse layout, like netx's Dense/Conv
    processes beside its neuron processes): receives the source's payload on ``a_in`` and sends the term's
    contribution to the target stage on ``x_out``:

        fixed: x̂_k = round_shift(W_k ⊛ p, e_k)   (integers; W_k the weighted op's mantissas ``w``, e_k ``e``)
        float: x_k = (W_k ⊛ p) · scale           (raw units, float64)

    where ⊛ is the term's op chain (conv / linear / gain, sum-pool, subsample, channel pad, flatten; the
    same arithmetic as :func:`msat_lava.program.apply_term_np`). Declared widths: ``a_in`` the source payload's,
    ``x_out`` the signed bound of :func:`msat_lava.lava.layout.term_bits`. Stateless (no reset).
    """

    def __init__(self, *, stage: Any, k: int, source_shape: Sequence[int], precision: str = "fixed",
                 context: Sequence[Any] = (), input_frac_bits: int = 8, name: str | None = None) -> None:
        fixed = _check_precision(precision)
        k = int(k)
        if not 0 <= k < len(stage.terms):
            raise ValueError(f"stage {stage.name!r} has no term {k}")
        term = stage.terms[k]
        by_name = {s.name: s for s in (*context, stage)}
        if term.source != "input" and term.source not in by_name:
            raise ValueError(f"synapse {stage.name!r}/{k}: context lacks the source {term.source!r}")
        src = None if term.source == "input" else by_name[term.source]
        super().__init__(stage=stage, k=k, precision=precision, name=name or f"{stage.name}.t{k}")
        pbits, psigned = layout.payload_bits(src, by_name, input_frac_bits)
        members = [Member("a_in", "in", term.source, "payload", tuple(int(v) for v in source_shape),
                          pbits if fixed else None, psigned, fixed),
                   Member("x_out", "out", stage.name, "term", tuple(stage.shape),
                          layout.term_bits(term, by_name, input_frac_bits) if fixed else None, True, fixed)]
        members += [Member(m.role[0], m.kind, m.stage, m.role, m.shape, m.bits, m.signed, m.integer,
                           m.scalar, m.init, m.read_only) for m in layout.term_constants(stage, index=k)]
        self._declare(members)
