"""BSNN-R (ALGORITHMS §6.4–6.6, our reconstruction of BSNN): the spec's traces (§6.8), the exact K-bit cycle code
Q(M), the INT/FIRE schedule, charge conservation, burst, synchronous neurons on shortcuts (§6.5) as exact delay
lines, the readout bias once per delivered cycle, the file, and Lava vs reference bit-exact on a residual and a
pooling network."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from msat_lava import reference
from msat_lava.dynamics import neuron as dyn
from msat_lava.dynamics.models.bsnn_r import state
from netx_export import hdf5, neurons
from netx_export.errors import FormatError
from netx_export.neuron import NeuronSpec, NeuronSpecError
from netx_export.neurons.bsnn_r import BsnnParams, insert_synchronous_neurons, stage_depths

from _nets import convert, random_inputs
from test_hdf5 import _replace, zoo_graph

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _spec(k=4, depth=1, lam=1.0, gamma=1):
    return NeuronSpec(mode="bsnn-r", lam=lam, gamma=gamma, params=BsnnParams(k=k, depth=depth))


def _run(spec, xs, fixed=False):
    """Per-step payloads (raw units) and the final state for a scalar input sequence x(t) (§6.4 units)."""
    if fixed:
        st = dyn.init_fixed_state((1, 1), np.zeros(0, dtype=np.int64), spec)
        tab = neurons.get("bsnn-r").make_tables(spec)
    else:
        st = dyn.init_float_state((1, 1), np.zeros(0), spec)
    out = []
    for x in xs:
        if fixed:
            st, o = dyn.step_fixed(spec, tab, st, np.array([[int(round(x * spec.one))]]))
            out.append(int(o.payload[0, 0]) / spec.one)
        else:
            st, o = dyn.step_float(spec, st, np.array([[float(x)]]))
            out.append(float(o.payload[0, 0]))
    return out, st


@pytest.mark.parametrize("fixed", [False, True])
def test_trace_a(fixed):
    """§6.8 trace A: d = 1, K = 4, λ = 1, cycle input 0.6 (0.15 per INT step in §6.4 units)."""
    k = 4
    out, st = _run(_spec(k=k), [0.15] * 32, fixed)
    cycles = [out[k * c:k * (c + 1)] for c in range(8)]
    assert all(sum(cycles[c]) == 0 for c in (0, 2, 4, 6))          # INT cycles never fire
    spikes = [[int(v > 0) for v in cycles[c]] for c in (1, 3, 5, 7)]
    assert spikes == [[1, 0, 0, 1], [1, 0, 1, 0], [1, 0, 0, 1], [1, 0, 1, 0]]
    np.testing.assert_allclose([sum(cycles[c]) for c in (1, 3, 5, 7)], [0.5625, 0.625, 0.5625, 0.625], atol=1e-12)
    v = float(st.v[0, 0]) / (st.v.dtype.kind == "i" and 4096 or 1)
    np.testing.assert_allclose(v, 0.025, atol=2e-3 if fixed else 1e-9)  # residual after cycle 7 (fixed: x̂ = 614 ≠ 614.4)


@pytest.mark.parametrize("fixed", [False, True])
def test_trace_b_no_sin(fixed):
    """§6.8 trace B: +0.5 at k = 0, −0.6 at k = 1 per cycle: the bistable neuron never fires (a plain
    phase-coded IF would emit the 0.5 SIN at t = 0); its charge ends each INT cycle at −0.1, −0.2, −0.3."""
    k = 4
    xs = [0.5, -0.6, 0.0, 0.0] * 6
    out, st = _run(_spec(k=k), xs, fixed)
    assert max(out) == 0
    scale = 4096 if fixed else 1
    np.testing.assert_allclose(float(st.v[0, 0]) / scale, -0.3, atol=1e-3)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_cycle_code_is_q_of_m_fixed_exact(k):
    """One INT cycle to charge M, the next FIRE cycle emits Q(M) = ⌊clip(M, 0, 1 − 2^−K)·2^K⌋/2^K (λ = 1) and
    leaves M − Q(M) — exactly, in fixed point, for 400 random M."""
    spec = _spec(k=k)
    tab = neurons.get("bsnn-r").make_tables(spec)
    rng = np.random.default_rng(k)
    m_int = rng.integers(-2 * 4096, 2 * 4096, size=(1, 400))  # M·2^F
    st = dyn.init_fixed_state(m_int.shape, m_int, spec)
    total = np.zeros_like(m_int)
    for t in range(2 * k):
        x = np.where(t == 0, m_int, 0)  # the whole cycle charge on the first INT step
        st, o = dyn.step_fixed(spec, tab, st, x)
        total += o.payload
    q = np.floor(np.clip(m_int / 4096.0, 0, 1 - 2.0 ** -k) * 2 ** k) * (4096 >> k)
    assert np.array_equal(total, q.astype(np.int64))
    assert np.array_equal(st.v, m_int - total)                       # charge conservation: Σo + v = Σx


def test_burst_extends_the_code_range():
    """Γ = 2 (+b2): up to two spikes per phase, so a charge of 1.5 λ passes (Γ = 1 saturates at 1 − 2^−K)."""
    k = 4
    out1, _ = _run(_spec(k=k), [1.5] + [0.0] * 7)
    out2, _ = _run(_spec(k=k, gamma=2), [1.5] + [0.0] * 7)
    assert sum(out1) == pytest.approx(1 - 2 ** -k) and sum(out2) == pytest.approx(1.5)


def test_schedule():
    """INT / FIRE / IDLE per cycle for depths 1..3 (§6.4 table), K = 2."""
    rows = {d: "".join(state(2 * c, d, 2)[0] for c in range(7)) for d in (1, 2, 3)}
    assert rows == {1: "ifififi", 2: "iififif", 3: "iiififi"}
    assert [state(t, 1, 2) for t in range(4)] == ["int", "int", "fire", "fire"]


def test_synchronous_neurons_inserted_on_short_branches():
    g = zoo_graph()
    assert stage_depths(g)["a1"] == 2 and stage_depths(g)["ss"] == 1  # option-A shortcut one stage short
    g2, aliases = insert_synchronous_neurons(g)
    assert aliases == {"r0.sn1": "r0"}
    assert g2["r0.sn1"].inputs == ("r0",) and g2["ss"].inputs == ("r0.sn1",)
    d = stage_depths(g2)
    assert d["ss"] == d["c2"] == 2 and d["r2"] == 3
    assert insert_synchronous_neurons(g2)[1] == {}                    # idempotent
    from netx_export import ann

    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8))
    np.testing.assert_allclose(ann.evaluate(g2, x)[0], ann.evaluate(g, x)[0], rtol=0, atol=1e-12)  # ANN identity


STEPS_K = 4


@pytest.fixture(scope="module")
def resmix():
    conv = convert("resmix", "bsnn-r", params={"k": STEPS_K})
    x = random_inputs(conv.model.input_shape, 3, seed=99)
    depth = max(s.spec.params.depth for s in conv.program.neuron_stages)
    return conv, x, (depth + 4) * STEPS_K


def test_sn_is_an_exact_delay_line(resmix):
    """An SN fed by a bistable stage re-emits its source's FIRE-cycle code K steps later, bit for bit (fixed
    point). (An SN after a LIPool is not: LIPool's output is not a K-bit code, §6.6 approximation.)"""
    conv, x, steps = resmix
    prog = conv.program
    neuron_names = {s.name for s in prog.neuron_stages}
    sns = [s for s in prog.neuron_stages if ".sn" in s.name and s.terms[0].source in neuron_names]
    assert sns
    src = {s.name: s.terms[0].source for s in sns}
    ref = reference.simulate(prog, x, steps, precision="fixed", record=tuple(src) + tuple(src.values()),
                             progress=False)
    for sn, source in src.items():
        a, b = ref.traces[sn][STEPS_K:], ref.traces[source][:-STEPS_K]
        fire = np.array([state(t, prog.stage(sn).spec.params.depth, STEPS_K) == "fire"
                         for t in range(STEPS_K, steps)])
        assert np.count_nonzero(a) > 0
        assert np.array_equal(a[fire], b[fire]) and not a[~fire].any(), sn


def test_readout_bias_once_per_delivered_cycle():
    """Readout = Σ over delivered cycles of (W·o + b): zero before the first delivery (depth·K steps), and
    n·bias after n deliveries when no stage fires (zero input, negative biases)."""
    conv = convert("poolmix", "bsnn-r", params={"k": STEPS_K})
    prog = conv.program
    depth = max(s.spec.params.depth for s in prog.neuron_stages)
    steps = (depth + 3) * STEPS_K
    x = random_inputs(conv.model.input_shape, 2, seed=3)
    ref = reference.simulate(prog, x, steps, precision="fixed", record_readout=True, progress=False)
    assert not ref.readout[:depth * STEPS_K].any() and ref.readout[-1].any()
    b = np.asarray(prog.readout.bias_fixed, dtype=np.float64).reshape(-1)
    delivered = [sum(state(t, depth, STEPS_K) == "fire" for t in range(n + 1)) for n in range(steps)]
    zero = reference.simulate(prog, np.zeros_like(x) - 50.0, steps, precision="fixed", record_readout=True,
                              progress=False)
    counts = [s.name for s in prog.neuron_stages]
    if not any(np.any(v) for v in reference.simulate(prog, np.zeros_like(x) - 50.0, steps, precision="fixed",
                                                     record_counts=True, progress=False).spike_counts.values()):
        np.testing.assert_array_equal(zero.readout[:, 0], np.outer(delivered, b))
    assert counts


def test_float_close_to_fixed_and_to_the_ann(resmix):
    conv, x, steps = resmix
    import torch

    fx = reference.simulate(conv.program, x, steps, precision="fixed", record_readout=True, progress=False)
    fl = reference.simulate(conv.program, x, steps, precision="float", record_readout=True, progress=False)
    np.testing.assert_allclose(fx.readout[-1] / 4096.0, fl.readout[-1], atol=0.05 * np.abs(fl.readout).max())


@pytest.mark.lava
@pytest.mark.parametrize("name", ["resmix", "poolmix"])
def test_lava_bit_exact_with_reference(name):
    from msat_lava.lava.build import run_lava

    conv = convert(name, "bsnn-r", params={"k": STEPS_K}, **({"gamma": 2} if name == "poolmix" else {}))
    prog = conv.program
    depth = max(s.spec.params.depth for s in prog.neuron_stages)
    steps = (depth + 3) * STEPS_K
    x = random_inputs(conv.model.input_shape, 3, seed=99)
    ids = [7, 3, 11]
    names = tuple(s.name for s in prog.stages)
    ref = reference.simulate(prog, x, steps, precision="fixed", sample_ids=ids, record=names, record_readout=True,
                             progress=False)
    lav = run_lava(prog, x, steps, precision="fixed", sample_ids=ids, record=names)
    for n in names:
        assert np.count_nonzero(ref.traces[n]) > 0, n
        assert np.array_equal(lav.traces[n], ref.traces[n]), n
    assert np.array_equal(lav.readout, ref.readout) and np.array_equal(lav.predictions, ref.predictions)
    flt = run_lava(prog, x, steps, precision="float", sample_ids=ids)
    fref = reference.simulate(prog, x, steps, precision="float", sample_ids=ids, record_readout=True,
                              progress=False)
    np.testing.assert_allclose(flt.readout, fref.readout, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# parameters and the file
# ---------------------------------------------------------------------------------------------------------

def test_params_validation():
    for kw, field in ((dict(k=0), "k"), (dict(k=17), "k"), (dict(depth=0), "depth"), (dict(k=2.5), "k")):
        with pytest.raises(NeuronSpecError) as info:
            BsnnParams(**kw)
        assert info.value.field == field
    with pytest.raises(NeuronSpecError) as info:
        NeuronSpec(mode="bsnn-r", lam=1.0, frac_bits=6, params=BsnnParams(k=8))
    assert info.value.field == "params/k"
    with pytest.raises(NeuronSpecError) as info:  # "+h" does not apply to the cycle code
        NeuronSpec(mode="bsnn-r", lam=1.0, v_init=0.5, params=BsnnParams())
    assert info.value.field == "v_init"


@pytest.fixture(scope="module")
def bsnn_file(tmp_path_factory, resmix):
    return hdf5.write(resmix[0].net, tmp_path_factory.mktemp("bsnn") / "bsnn.net")


@pytest.mark.parametrize("label, path, value, field", [
    ("depth", "msat/neurons/2/spec/params/depth", np.int64(5), "spec/params/depth"),
    ("k", "msat/neurons/0/spec/params/k", np.int64(6), "msat/"),  # K of the readout bias (b/K) differs
    ("k-range", "msat/neurons/0/spec/params/k", np.int64(40), "spec/params/k"),
])
def test_hostile_bsnn_fields_refused(tmp_path, bsnn_file, label, path, value, field):
    case = tmp_path / f"{label}.net"
    shutil.copyfile(bsnn_file, case)
    with h5py.File(case, "r+") as f:
        _replace(path, value)(f)
    with pytest.raises(FormatError) as info:
        hdf5.read(case)
    assert field in info.value.field and info.value.path == str(case)


def test_file_round_trip(bsnn_file, resmix):
    back = hdf5.read(bsnn_file)
    assert back == resmix[0].net
    assert {n: s.params.depth for n, s in back.neurons.items()} == \
        {n: d for n, d in stage_depths(back.graph).items() if n in back.neurons}
