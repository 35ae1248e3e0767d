"""The Lava layer shaped like Lava's own processes (issue 15, first part): Vars, per-source ports, declared widths.

* After N samples × T steps, every stage's state Vars read with ``Var.get()`` equal the reference's state of the
  last sample: v̂ (``membrane_at``), Ŝ = Σ v̂, the spike count (``spike_counts``), t = T, the LIPool window
  accumulators (LIPool stepped on the reference's own source trace) and the accumulated readout; the read-only
  Vars hold the program's mantissas, exponents, biases and tables.
* Recording goes through the record ports, also when the run proceeds in chunks that fit their channels, and
  a port's buffered steps (one message per run call) are all read back after every run call.
* A stage reading 6 sources and a group exporting 6 outputs build and run bit-exact (the old fixed
  ``in0..in3`` / ``out0..out3`` ports refused both).
* The declared precisions (process members and the specialised models' Lava types) follow the spec:
  v̂ = state_bits, payloads bits(Γ·2^F), p_in F_in + 8, with non-default state_bits, Γ and F_in.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import _nets
from msat_lava import reference
from msat_lava.dynamics import lipool as lip
from msat_lava.lava.build import build_network, run_lava

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IDS = [7, 3, 11]
STEPS = 8


def _run(net, steps):
    net.run(1)
    if net.total_steps > 1:
        net.run(net.total_steps - 1)


@pytest.mark.lava
@pytest.mark.parametrize("spp", [None, 3])
def test_state_vars_equal_reference_state(spp):
    conv = _nets.convert("resmix", "msat", sc=((1, 0.7), (-1, 0.6)), sc_early=6)
    prog = conv.program
    x = _nets.random_inputs(conv.model.input_shape, len(IDS), seed=99)
    names = tuple(s.name for s in prog.stages)
    ref = reference.simulate(prog, x, STEPS, precision="fixed", sample_ids=IDS, record=names, record_readout=True,
                             record_counts=True, membrane_at=range(1, STEPS + 1), progress=False)
    net = build_network(prog, x, STEPS, precision="fixed", sample_ids=IDS, stages_per_process=spp)
    assert net.chunk == net.total_steps  # the readout alone fits the record channel: one run call
    try:
        _run(net, STEPS)
        checked = set()
        for s in prog.stages:
            var = net.stage_vars(s.name)
            if s.kind == "neuron":
                one = s.spec.one
                v = ref.membrane[STEPS][s.name][-1] * one
                vsum = sum(ref.membrane[k][s.name][-1] for k in range(1, STEPS + 1)) * one
                assert np.array_equal(var["v"].get(), v), s.name
                assert np.array_equal(var["vsum"].get(), vsum), s.name
                assert np.array_equal(var["count"].get(), ref.spike_counts[s.name][-1]), s.name
                assert ref.spike_counts[s.name][-1].sum() > 0, s.name
                assert var["t"].get().tolist() == [STEPS]
                if s.luts is not None:
                    assert np.array_equal(var["sig_lut"].get(), s.luts.sig_lut), s.name
            elif s.kind == "lipool":
                src = ref.traces[s.source][:, -1:]                # (T, 1, C, H, W), the last sample
                geom = lip.lipool_geometry(src.shape[3:], s.kernel, s.stride, s.padding)
                st = lip.init_lipool_state(geom, 1, src.shape[2])
                for t in range(STEPS):
                    st, _ = lip.step_lipool(geom, st, src[t])
                assert np.array_equal(var["acc"].get(), st.acc[0]), s.name
                assert st.acc.any()
            else:
                assert np.array_equal(var["acc"].get(), ref.readout[-1, -1]), s.name
            if s.kind != "lipool":
                assert np.array_equal(var["bias"].get(), s.bias_fixed), s.name
                for k, term in enumerate(s.terms):
                    op = next(o for o in term.ops if o.kind in ("conv", "linear", "gain"))
                    assert np.array_equal(var[f"w{k}"].get().reshape(np.shape(op.mant)), op.mant), (s.name, k)
                    assert var[f"e{k}"].get().tolist() == [term.exp]
            checked.add(s.kind)
        assert checked == {"neuron", "lipool", "readout"}
        rec = net.recorded()
        assert list(rec) == [prog.readout.name]                     # nothing but the readout was recorded
        assert rec[prog.readout.name].shape == (net.total_steps,) + tuple(prog.readout.shape)
    finally:
        net.stop()


@pytest.mark.lava
def test_float_state_vars():
    conv = _nets.convert("poolmix", "msat")
    prog = conv.program
    x = _nets.random_inputs(conv.model.input_shape, 2, seed=4)
    ref = reference.simulate(prog, x, STEPS, precision="float", sample_ids=IDS[:2], record_readout=True,
                             membrane_at=[STEPS], progress=False)
    net = build_network(prog, x, STEPS, precision="float", sample_ids=IDS[:2])
    try:
        _run(net, STEPS)
        for s in prog.neuron_stages:
            got = net.stage_vars(s.name)["v"].get()
            np.testing.assert_allclose(got, ref.membrane[STEPS][s.name][-1] * s.spec.lam, rtol=0, atol=1e-6)
        np.testing.assert_allclose(net.stage_vars(prog.readout.name)["acc"].get(), ref.readout[-1, -1],
                                   rtol=0, atol=1e-5)
    finally:
        net.stop()


@pytest.mark.lava
def test_recording_in_chunks_is_bit_exact(monkeypatch):
    """Record channels smaller than the run (here 5 steps of every stage): the run proceeds in chunks, each
    drained before the next, and the traces are those of one long run."""
    from msat_lava.lava import build

    conv = _nets.convert("resmix", "msat", sc=((1, 0.7),), sc_early=4)
    prog = conv.program
    x = _nets.random_inputs(conv.model.input_shape, len(IDS), seed=5)
    names = tuple(s.name for s in prog.stages)
    per_step = sum(8 * int(np.prod(s.shape)) for s in prog.stages)
    monkeypatch.setattr(build, "RECORD_BUFFER_BYTES", 5 * per_step + 7)
    net = build.build_network(prog, x, STEPS, sample_ids=IDS, record=names)
    assert net.chunk == 5 and net.total_steps == len(IDS) * STEPS
    net.stop()   # never run
    ref = reference.simulate(prog, x, STEPS, precision="fixed", sample_ids=IDS, record=names, record_readout=True,
                             progress=False)
    lav = build.run_lava(prog, x, STEPS, precision="fixed", sample_ids=IDS, record=names)
    assert np.array_equal(lav.readout, ref.readout)
    for name in names:
        assert np.array_equal(lav.traces[name], ref.traces[name]), name


@pytest.mark.lava
def test_buffered_records_after_every_run_call(monkeypatch):
    """A record port carries ``chunk`` steps per message ((chunk, *shape)); the model sends a full buffer
    mid-run and the partly filled one in the host phase that ends each run call. Run calls of 1, 2, 7 (split
    5 + 2 by the network), 5, 4 and 5 steps: after each, ``recorded()`` holds exactly the steps so far, equal
    to the reference's traces in global time."""
    from msat_lava.lava import build

    conv = _nets.convert("resmix", "msat", sc=((1, 0.7),), sc_early=4)
    prog = conv.program
    x = _nets.random_inputs(conv.model.input_shape, len(IDS), seed=8)
    names = tuple(s.name for s in prog.stages)
    per_step = sum(8 * int(np.prod(s.shape)) for s in prog.stages)
    monkeypatch.setattr(build, "RECORD_BUFFER_BYTES", 5 * per_step)
    ref = reference.simulate(prog, x, STEPS, precision="fixed", sample_ids=IDS, record=names, record_readout=True,
                             progress=False)
    # the reference's (T, N, *shape) traces in Lava's global time (samples concatenated)
    flat = {n: np.swapaxes(ref.traces[n], 0, 1).reshape((len(IDS) * STEPS,) + ref.traces[n].shape[2:])
            for n in names}
    net = build.build_network(prog, x, STEPS, sample_ids=IDS, record=names)
    try:
        assert net.chunk == 5
        for n in names:
            assert tuple(net.process_of(n).rec_port(n).shape) == (5, *prog.stage(n).shape)
        done = 0
        for k in (1, 2, 7, 5, 4, 5):
            net.run(k)
            done += k
            rec = net.recorded()
            assert net.steps_done == done
            for n in names:
                assert rec[n].shape[0] == done and np.array_equal(rec[n], flat[n][:done]), (n, done)
        assert done == net.total_steps
    finally:
        net.stop()


# ---------------------------------------------------------------------------------------------------------
# any number of sources and outputs
# ---------------------------------------------------------------------------------------------------------
class Fan6(nn.Module):
    """Six ReLU branches of the input, summed into one hidden layer (6 sources), whose ReLU and the first branch
    feed the readout (2 sources)."""

    input_shape = (6,)

    def __init__(self) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Linear(6, 5) for _ in range(6))
        self.mid = nn.Linear(5, 4)
        self.fc = nn.Linear(4, 3)
        self.skip = nn.Linear(5, 3)

    def forward(self, x):
        h = [F.relu(b(x)) for b in self.branches]
        m = F.relu(self.mid(h[0] + h[1] + h[2] + h[3] + h[4] + h[5]))
        return self.fc(m) + self.skip(h[0])


@pytest.fixture(scope="module")
def fan_program():
    from msat_lava.program import from_converted
    from netx_export.api import convert

    with torch.random.fork_rng():
        torch.manual_seed(11)
        model = Fan6().eval()
    calib = _nets.random_inputs(Fan6.input_shape, 16, seed=12).astype(np.float32)
    return from_converted(convert(model, calib, method="msat", preset="resnet20", progress=False))


@pytest.mark.lava
@pytest.mark.parametrize("spp", [1, 6, None])
def test_many_sources_and_outputs_build_and_run_bit_exact(fan_program, spp):
    prog = fan_program
    wide = max(prog.stages, key=lambda s: len(prog.sources_of(s)))
    assert len(prog.sources_of(wide)) == 6 and wide.kind == "neuron"
    x = _nets.random_inputs(prog.input_shape, 2, seed=13)
    names = tuple(s.name for s in prog.stages)
    ref = reference.simulate(prog, x, STEPS, precision="fixed", sample_ids=IDS[:2], record=names,
                             record_readout=True, progress=False)
    lav = run_lava(prog, x, STEPS, precision="fixed", sample_ids=IDS[:2], record=names, stages_per_process=spp)
    assert np.array_equal(lav.readout, ref.readout)
    for name in names:
        assert np.count_nonzero(ref.traces[name]) > 0, name
        assert np.array_equal(lav.traces[name], ref.traces[name]), name

    net = build_network(prog, x, STEPS, sample_ids=IDS[:2], stages_per_process=spp)   # built, never run
    proc = net.process_of(wide.name)
    ins = [m for m in proc.members.values() if m.kind == "in"]
    if spp == 1:
        assert sorted(proc.in_ports_of) == sorted(prog.sources_of(wide))
        assert len(ins) == 6 and all(getattr(proc, m.name).shape == (5,) for m in ins)
    if spp == 6:   # the six branches in one process, all read by the next one
        first = net.processes[0]
        assert len(first.out_ports_of) == 6 and len(first.in_ports_of) == 1
    if spp is None:
        assert net.num_processes == 2 and ins == [proc.members["in_input"]]


# ---------------------------------------------------------------------------------------------------------
# declared precisions
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.lava
def test_declared_precisions_follow_the_spec():
    from lava.magma.core.model.py.ports import PyInPort, PyOutPort
    from lava.magma.core.model.py.type import LavaPyType

    from msat_lava.lava.procs.models import PyImageSourceFixed, PyMsatGroupFixed, PyMsatGroupFloat

    conv = _nets.convert("poolmix", "msat", state_bits=20, gamma=3, input_frac_bits=6)
    prog = conv.program
    x = _nets.random_inputs(conv.model.input_shape, 2, seed=4)
    steps = 40
    net = build_network(prog, x, steps, stages_per_process=1)
    payload = (3 << 12).bit_length()   # 14 bits
    for s in prog.stages:
        proc = net.process_of(s.name)
        m = proc.members
        i = s.index
        if s.kind == "neuron":
            assert s.spec.state_bits == 20 and s.spec.gamma == 3
            assert m[f"v_{i}"].bits == 20 and m[f"v_{i}"].signed
            assert m[f"vsum_{i}"].bits == 20 + 6                         # ⌈log2 40⌉ = 6
            assert m[f"count_{i}"].bits == (3 * steps).bit_length()
            assert m[f"t_{i}"].bits == steps.bit_length() and m[f"t_{i}"].scalar
            assert m[f"bias_{i}"].bits == 20
            assert m[f"sig_lut_{i}"].bits == 32 and m[f"sig_lut_{i}"].read_only
        if s.kind == "lipool":
            assert m[f"acc_{i}"].bits == (steps * (3 << 12)).bit_length() + 1
        for t in s.terms:
            assert m[f"w0_{i}"].bits == 8
        for src, pname in proc.in_ports_of.items():
            want = 6 + 8 if src == "input" else payload
            assert m[pname].bits == want and m[pname].signed == (src == "input"), (s.name, src)
        for pname in proc.out_ports_of.values():
            assert m[pname].bits == payload and not m[pname].signed
        if s.kind == "readout":
            assert m[proc.rec_ports_of[s.name]].bits == 64
        # the model Lava selects for this process carries the same widths as its Lava types
        model = PyMsatGroupFixed.for_process(proc)
        assert model is PyMsatGroupFixed.for_process(proc)                # cached by signature
        for name, mem in m.items():
            lt = getattr(model, name)
            assert isinstance(lt, LavaPyType) and lt.precision == mem.bits, name
            assert lt.cls is (PyInPort.VEC_DENSE if mem.kind == "in" else PyOutPort.VEC_DENSE if mem.kind == "out"
                              else int if mem.scalar else np.ndarray), name
            if not mem.scalar:
                assert lt.d_type is np.int64, name
    src_model = PyImageSourceFixed.for_process(net.source)
    assert src_model.s_out.precision == 6 + 8 and net.source.members["data"].read_only

    flt = build_network(prog, x, steps, precision="float")
    proc = flt.processes[0]
    model = PyMsatGroupFloat.for_process(proc)
    first = prog.neuron_stages[0].index
    assert getattr(model, f"v_{first}").precision is None and getattr(model, f"v_{first}").d_type is float
    assert getattr(model, f"w0_{first}").precision == 8 and getattr(model, f"w0_{first}").d_type is np.int64
    with pytest.raises(ValueError, match="precision"):
        build_network(prog, x, steps, precision="half")


@pytest.mark.lava
def test_a_model_refuses_a_process_of_the_other_precision():
    """A process built with fixed-point Vars under the 'floating_pt' models is refused when Lava compiles it (in
    this process, before any worker starts), and vice versa."""
    from msat_lava.lava.config import sim_config
    from msat_lava.lava.procs.models import PyMsatGroupFixed, PyMsatGroupFloat

    conv = _nets.convert("mlp", "const")
    x = _nets.random_inputs(conv.model.input_shape, 1, seed=1)
    fixed = build_network(conv.program, x, 2, precision="fixed")
    with pytest.raises(ValueError, match="runs float point but process .* was built for 'fixed'"):
        PyMsatGroupFloat.for_process(fixed.processes[0])
    flt = build_network(conv.program, x, 2, precision="float")
    with pytest.raises(ValueError, match="runs fixed point"):
        PyMsatGroupFixed.for_process(flt.processes[0])
    fixed.run_cfg = sim_config("float")
    try:
        with pytest.raises(ValueError, match="was built for 'fixed'"):
            fixed.run(1)
    finally:
        fixed.stop()


# ---------------------------------------------------------------------------------------------------------
# separate synapse processes (synapses='separate'): netx's layout of a Dense/Conv process beside each neuron
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.lava
@pytest.mark.parametrize("net_key, mode, precision", [("resmix", "msat", "fixed"), ("poolmix", "dtif-r", "fixed"),
                                                      ("resmix", "msat", "float")])
def test_separate_synapses_equal_reference(net_key, mode, precision):
    """One MsatSynapse process per term (weights w, shift e as its read-only Vars, contribution on x_out) and
    one one-stage MsatGroup per stage, holding no weights: every stage's trace and the readout equal the
    reference's (fixed: bit for bit; float: to 1e-9), and so equal the fused layout's."""
    from msat_lava.lava.procs.process import MsatSynapse

    opts = dict(sc=((1, 0.7),), sc_early=4) if net_key == "resmix" else {}
    conv = _nets.convert(net_key, mode, **opts)
    prog = conv.program
    x = _nets.random_inputs(conv.model.input_shape, len(IDS), seed=21)
    names = tuple(s.name for s in prog.stages)
    ref = reference.simulate(prog, x, STEPS, precision=precision, sample_ids=IDS, record=names,
                             record_readout=True, progress=False)
    net = build_network(prog, x, STEPS, precision=precision, sample_ids=IDS, record=names, synapses="separate")
    n_terms = sum(len(s.terms) for s in prog.stages if s.kind != "lipool")
    try:
        assert len(net.synapses) == n_terms and all(isinstance(p, MsatSynapse) for p in net.synapses)
        assert len(net.processes) == len(prog.stages) and net.num_processes == 1 + len(prog.stages) + n_terms
        for p in net.processes:             # the groups hold no weights; the synapse processes do
            assert not any(m.role.startswith("w") for m in p.members.values() if m.kind == "var")
        fixed = precision == "fixed"
        for syn in net.synapses:
            st = syn.proc_params["stage"]
            term = st.terms[syn.proc_params["k"]]
            if fixed and "w" in syn.members:
                op = next(o for o in term.ops if o.kind in ("conv", "linear", "gain"))
                assert np.array_equal(syn.w.get().reshape(np.shape(op.mant)), op.mant)
                assert int(syn.e.get()[0]) == term.exp
                # declared width: the signed bound of the contribution, the same at both ends of the connection
                assert syn.members["x_out"].bits >= 2
                k = syn.proc_params["k"]
                assert net.process_of(st.name).members[f"in_t{k}_{st.index}"].bits == syn.members["x_out"].bits
        _run(net, STEPS)
        rec = net.recorded()
    finally:
        net.stop()
    for n in names:
        got = np.swapaxes(rec[n].reshape((len(IDS), STEPS) + rec[n].shape[1:]), 0, 1)
        assert np.count_nonzero(ref.traces[n]) > 0, n
        if fixed:
            assert np.array_equal(got, ref.traces[n]), n
        else:
            np.testing.assert_allclose(got, ref.traces[n], rtol=0, atol=1e-9, err_msg=n)


def test_term_bound_holds_on_random_payloads():
    """layout.term_bound bounds |round_shift(W ⊛ p, e)| for every payload p in [0, pmax] (here: the all-pmax
    input, which attains Σ|w| on positive rows, and random ones), for every term of a residual network."""
    from msat_lava.lava import layout
    from msat_lava.program import apply_term_np

    conv = _nets.convert("resmix", "msat")
    prog = conv.program
    by_name = {s.name: s for s in prog.stages}
    rng = np.random.default_rng(4)
    checked = 0
    for s in prog.stages:
        if s.kind == "lipool":
            continue
        for term in s.terms:
            src = None if term.source == "input" else by_name[term.source]
            pmax = layout.payload_max(src, by_name, prog.input_frac_bits)
            bound = layout.term_bound(term, pmax)
            shape = prog.source_shape(term.source)
            lo = -pmax if src is None else 0
            for p in (np.full(shape, pmax), rng.integers(lo, pmax + 1, size=shape)):
                got = np.abs(apply_term_np(term, p.astype(np.float64), True)).max()
                assert got <= bound, (s.name, term.source, got, bound)
                checked += 1
    assert checked >= 8
