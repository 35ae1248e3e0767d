"""Process models of msat-lava's Lava processes: ``floating_pt`` and ``fixed_pt`` (bit-accurate) CPU models.

The stage arithmetic lives in :class:`msat_lava.lava.stages.StageRunner` (bit-exact with
:mod:`msat_lava.reference` in fixed point); a :class:`MsatGroup` model steps its runners in program order,
handing payloads from stage to stage in memory, and sends only the group's exported and recorded outputs.

**Declared types.** A process's ports and Vars vary per instance (one input port per source, Vars per stage), so
these classes declare no Lava type themselves: :meth:`_Declaring.for_process` returns, for one process, a
subclass with one ``LavaPyType`` per member of ``proc.members`` (:mod:`msat_lava.lava.layout`: shape and
precision from the spec), cached by signature. :class:`msat_lava.lava.config.SpecializingRunCfg` calls it on the
model Lava's tag selection chose. Fixed point: int64 containers for every integer member, precision = the
member's declared width (v̂: state_bits, payloads: bits(Γ·2^F), p_in: F_in + 8, …); float: float64 state and
payloads without precision, int64 constants.

**State in Vars.** After each step the model points every state Var of a stage (``v_i``, ``vsum_i``,
``count_i``, ``t_i``, ``acc_i``) at the runner's current arrays (no copy; the arrays keep the batch axis of
length 1, which ``Var.get`` flattens away), so ``proc.v_3.get()`` between runs is the stage's state and
``Var.set`` writes into the arrays the next step reads (``t`` excepted: a Python int the runner owns).
Read-only Vars (mantissas, exponents, bias, tables) hold the constants the kernels were compiled from.

**Recording** goes out on the stage's ``rec_i`` port, ``record_steps`` = K steps per message: each step's
output is copied into row k of a (K, *shape) buffer, which is sent when full and, partly filled, in the host
phase that ends every run call (``_host``; the valid rows are the run's remaining steps, which the reader
knows). A run of n ≤ K steps thus sends one message per record port instead of n (:mod:`msat_lava.lava.build`
taps the ports and runs at most K steps per call).

**Adding a hardware model** (not here: it needs Intel's lava-loihi, docs/LOIHI2.md §5) is one more file,
``msat_lava/lava/procs/ncmodels.py`` (Lava's discovery executes every file beside ``process.py``)::

    # from lava.magma.core.model.nc.model import AbstractNcProcessModel       (lava-loihi)
    # from lava.magma.core.resources import Loihi2NeuroCore
    # @implements(proc=MsatGroup, protocol=LoihiProtocol)
    # @requires(Loihi2NeuroCore)
    # @tag("fixed_pt")
    # class NcMsatGroup(AbstractNcProcessModel):
    #     for_process(proc): one LavaNcType per proc.members entry (same names and precisions as here)
    #     allocate(net): per stage the neuron group (v_i, vsum_i, t_i words), the microcode of docs/LOIHI2.md §5
    #                    with the tables sig_lut_i / sp_lut_i / det_lut_i and lutc_i, one synapse block per
    #                    term (w<k>_i, raw sums shifted by e<k>_i), bias_i, the reset every reset_interval steps

run under ``class MsatHwCfg(SpecializingRunCfg, Loihi2HwCfg)``, which prefers Nc models. Absolute imports only
(Lava executes this file as a top-level module during model discovery).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from msat_lava.lava.kernels import TermKernel
from msat_lava.lava.procs.process import ImageSource, MsatGroup, MsatSynapse
from msat_lava.lava.stages import StageRunner

_SPECIALIZED: dict[tuple, type] = {}


class _Declaring:
    """Per-process Lava types (module docstring). ``FIXED``: fixed-point (int64) or float model."""

    FIXED = True

    @classmethod
    def lava_type(cls, m: Any) -> LavaPyType:
        dtype, bits = (np.int64 if m.integer else float), m.bits
        if m.kind == "in":
            return LavaPyType(PyInPort.VEC_DENSE, dtype, precision=bits)
        if m.kind == "out":
            return LavaPyType(PyOutPort.VEC_DENSE, dtype, precision=bits)
        if m.scalar:
            return LavaPyType(int, int, precision=bits)
        return LavaPyType(np.ndarray, dtype, precision=bits)

    @classmethod
    def for_process(cls, proc: Any) -> type:
        """This model specialised for ``proc``: one class attribute (Lava type) per ``proc.members`` entry.
        Raises ValueError (at compile time, in this process) when ``proc`` was built for the other precision."""
        want = "fixed" if cls.FIXED else "float"
        if proc.proc_params["precision"] != want:
            raise ValueError(f"{cls.__name__} runs {want} point but process {proc.name!r} was built for "
                             f"{proc.proc_params['precision']!r} (select the run config tag of its precision)")
        members = tuple(proc.members.values())
        key = (cls, tuple((m.name, m.kind, m.integer, m.scalar, m.bits) for m in members))
        hit = _SPECIALIZED.get(key)
        if hit is None:
            attrs: dict[str, Any] = {m.name: cls.lava_type(m) for m in members}
            attrs["__module__"] = cls.__module__
            attrs["__qualname__"] = cls.__qualname__
            attrs["__doc__"] = f"{cls.__name__} with the Lava types of one {type(proc).__name__}'s members."
            hit = _SPECIALIZED[key] = type(cls.__name__, (cls,), attrs)
        return hit


def _cpu_models(proc: type, base: type, name: str) -> tuple[type, type]:
    """The two CPU models of ``proc``, picked by tag: ``<name>Float`` (``floating_pt``) and ``<name>Fixed``
    (``fixed_pt``, ``bit_accurate_loihi``), i.e. ``base`` with ``FIXED`` False / True, declared as Lava's
    ``@implements(proc, LoihiProtocol) @requires(CPU) @tag(...)`` would (module-level names, so Lava's model
    discovery and pickling find them)."""
    out = []
    for fixed, tags in ((False, ("floating_pt",)), (True, ("fixed_pt", "bit_accurate_loihi"))):
        cname = f"{name}{'Fixed' if fixed else 'Float'}"
        cls = type(cname, (base,), {"FIXED": fixed, "__module__": __name__, "__qualname__": cname})
        out.append(implements(proc=proc, protocol=LoihiProtocol)(requires(CPU)(tag(*tags)(cls))))
    return out[0], out[1]


class _ImageSourceBase(_Declaring, PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._steps = int(proc_params["steps"])

    def run_spk(self) -> None:
        data = self.data
        k = (self.time_step - 1) // self._steps
        self.s_out.send(data[min(k, data.shape[0] - 1)])


PyImageSourceFloat, PyImageSourceFixed = _cpu_models(ImageSource, _ImageSourceBase, "PyImageSource")


def _publisher(runner: StageRunner, names: dict[str, str], d: dict) -> Callable[[], None]:
    """Points the stage's state Vars (attributes of the model, ``d`` = its ``__dict__``) at the runner's state."""
    if runner.kind == "neuron":
        v, s, c, t = names["v"], names["vsum"], names["count"], names["t"]

        def publish() -> None:
            st = runner.state
            d[v], d[s], d[c], d[t] = st.v, st.vsum, st.count, st.t
    elif runner.kind == "lipool":
        a = names["acc"]

        def publish() -> None:
            d[a] = runner.state[1].acc
    else:
        a = names["acc"]

        def publish() -> None:
            d[a] = runner.state
    return publish


class _RecordBuffer:
    """One record port's buffer: rows 0..k−1 of a (K, *shape) array hold the steps not yet sent."""

    def __init__(self, name: str, port: Any, dtype: Any) -> None:
        self.name, self.port = name, port
        self.buf = np.zeros(port.shape, dtype=dtype)
        self.k = 0

    def push(self, out: np.ndarray) -> None:
        self.buf[self.k] = out
        self.k += 1
        if self.k == self.buf.shape[0]:
            self.flush()

    def flush(self) -> None:
        if self.k:
            self.port.send(self.buf)
            self.k = 0


class _GroupBase(_Declaring, PyLoihiProcessModel):
    """Shared group logic; subclasses fix the precision (``FIXED``)."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        ids, steps, seed = proc_params["sample_ids"], proc_params["steps"], proc_params["seed"]
        ext = bool(proc_params["term_inputs"])
        self._runners = tuple(StageRunner(s, fixed=self.FIXED, steps=steps, sample_ids=ids, seed=seed,
                                          external_terms=ext) for s in proc_params["stages"])
        self._plan: Any = None
        self._recs: tuple = ()

    def _bind(self) -> Any:
        """Ports and publishers, once (the builder sets the ports after ``__init__``)."""
        pp = self.proc_params
        state = dict(pp["state_vars"])
        d = self.__dict__
        ins = tuple((src, getattr(self, port)) for src, port in pp["inputs"])
        steps = tuple((r, _publisher(r, dict(state[r.name]), d)) for r in self._runners)
        outs = tuple((name, getattr(self, port)) for name, port in pp["outputs"])
        dtype = np.int64 if self.FIXED else np.float64
        self._recs = tuple(_RecordBuffer(name, getattr(self, port), dtype) for name, port in pp["records"])
        self._plan = (ins, steps, outs)
        return self._plan

    def run_spk(self) -> None:
        ins, steps, outs = self._plan or self._bind()
        ts = self.time_step
        received = {name: port.recv() for name, port in ins}
        for r, publish in steps:
            received[r.name] = r.step(ts, received)
            publish()
        for name, port in outs:
            port.send(received[name])
        for rec in self._recs:
            rec.push(received[rec.name])

    def _host(self) -> None:
        """End of a run call (Lava's host phase): send the partly filled record buffers."""
        super()._host()
        for rec in self._recs:
            rec.flush()


PyMsatGroupFloat, PyMsatGroupFixed = _cpu_models(MsatGroup, _GroupBase, "PyMsatGroup")


class _SynapseBase(_Declaring, PyLoihiProcessModel):
    """x_out = the term's contribution of this step's a_in (MsatSynapse's docstring); same TermKernel as a
    group's fused terms, so both layouts compute the same values."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._kernel = TermKernel(proc_params["stage"].terms[int(proc_params["k"])], self.FIXED)
        self._dtype = np.int64 if self.FIXED else np.float64

    def run_spk(self) -> None:
        self.x_out.send(self._kernel(self.a_in.recv()).astype(self._dtype, copy=False))


PyMsatSynapseFloat, PyMsatSynapseFixed = _cpu_models(MsatSynapse, _SynapseBase, "PyMsatSynapse")
