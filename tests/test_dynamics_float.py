"""Float neuron model (msat_lava.dynamics.neuron.step_float).

Expectations are independent of the library: the tabulated reference traces of ALGORITHMS §2.6 and scalar
closed-form loops written here with the ``math`` module from §1.2 / §2.2 / §2.3.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from msat_lava.dynamics import prng
from msat_lava.dynamics.neuron import FloatState, init_float_state, step_float
from netx_export.neuron import PRESETS, MsatCoefs, NeuronSpec


def _run(spec, xs, like_shape=(1, 1)):
    st = init_float_state(like_shape)
    rows = []
    for x in xs:
        st, out = step_float(spec, st, np.full(like_shape, x, dtype=np.float64))
        rows.append((float(out.theta[0, 0]), int(out.spikes[0, 0]), float(st.v[0, 0]), float(out.payload[0, 0])))
    return rows, st


# ---------------------------------------------------------------------------- ALGORITHMS §2.6 traces

def test_reference_trace_vgg16_lambda1():
    table = [  # t: theta, s, v, o
        (1.00000, 0, 0.30000, 0.0),
        (0.65360, 0, 0.60000, 0.0),
        (0.67199, 1, 0.22801, 0.67199),
        (0.63627, 0, 0.52801, 0.0),
        (0.66751, 1, 0.16049, 0.66751),
        (0.63008, 0, 0.46049, 0.0),
    ]
    rows, st = _run(NeuronSpec("msat", 1.0, coefs=PRESETS["vgg16"]), [0.3] * 6)
    for (theta, s, v, o), (et, es, ev, eo) in zip(rows, table):
        assert s == es
        assert theta == pytest.approx(et, abs=1e-5)
        assert v == pytest.approx(ev, abs=1e-5)
        assert o == pytest.approx(eo, abs=1e-5)
    assert st.t == 6 and int(st.count[0, 0]) == 2


def test_reference_trace_vgg16_lambda4():
    rows, _ = _run(NeuronSpec("msat", 4.0, coefs=PRESETS["vgg16"]), [1.2] * 5)
    assert rows[0][0] == 4.0 and rows[0][1] == 0
    for (theta, s, v, o), et, ev in zip(rows[1:], [0.29781, 0.37936, 0.48374, 0.59952],
                                        [2.102, 2.923, 3.639, 4.240]):
        assert theta == pytest.approx(et, abs=1e-5)
        assert s == 1 and o == theta
        assert v == pytest.approx(ev, abs=5e-4)  # tabulated to 3 decimals


def test_reference_trace_resnet_values():
    rows, _ = _run(NeuronSpec("msat", 1.0, coefs=PRESETS["resnet20"]), [0.3, 0.3, -0.2, 0.5, 0.0, 0.3])
    for (theta, *_), et in zip(rows[1:], [0.57870, 0.57748, 0.55273, 0.60619, 0.59504]):
        assert theta == pytest.approx(et, abs=1e-5)
    assert [r[1] for r in rows] == [0, 1, 0, 0, 0, 1]


# ---------------------------------------------------------------------------- closed-form modes

def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _oracle(mode, lam, coefs, xs, gamma=1, k=1.0, frac_bits=12):
    """Scalar float64 loop of §2.3 for one neuron: returns rows (theta, s, v, o)."""
    v, vsum, rows = 0.0, 0.0, []
    for t, x in enumerate(xs):
        if mode == "const":
            theta = k * lam
        elif t == 0:
            theta = lam
        else:
            delta = v - vsum / t
            z = 0.0
            if mode in ("dtt", "msat"):
                a = coefs
                dtt = a.alpha * delta - lam + a.k_a * math.log1p(math.exp(delta / a.k_i))
                z += a.tau_mp * dtt
            if mode in ("det", "msat"):
                z += coefs.tau_rd * math.exp(-x / coefs.C)
            theta = max(lam * _sigmoid(z), lam * 2.0 ** -frac_bits)
        m = v + x
        s = (1 if m >= theta else 0) if gamma == 1 else min(gamma, max(0, math.floor(m / theta)))
        v = m - s * theta
        vsum += v
        rows.append((theta, s, v, s * theta))
    return rows


@pytest.mark.parametrize("mode, preset, lam, gamma, k", [
    ("dtt", "vgg16", 1.0, 1, 1.0),
    ("dtt", "resnet34", 3.5, 1, 1.0),
    ("det", "vgg16", 2.0, 1, 1.0),
    ("det", "resnet20", 0.4, 1, 1.0),
    ("msat", "resnet20", 2.5, 3, 1.0),
    ("const", None, 1.5, 1, 1.0),
    ("const", None, 0.8, 2, 0.4),
])
def test_modes_against_closed_form(mode, preset, lam, gamma, k):
    coefs = PRESETS[preset] if preset else None
    rng = np.random.default_rng(11)
    B, T = 6, 40
    xs = rng.uniform(-0.6 * lam, 1.6 * lam, size=(T, B))
    xs[:, 0] = 0.3 * lam  # one neuron with constant input
    spec = NeuronSpec(mode, lam, k_const=k, coefs=coefs, gamma=gamma)
    st = init_float_state((B,))
    got = []
    for t in range(T):
        st, out = step_float(spec, st, xs[t])
        got.append((out.theta.copy(), out.spikes.copy(), st.v.copy(), out.payload.copy()))
        assert np.all(out.suppressed == 0)
    for b in range(B):
        want = _oracle(mode, lam, coefs, xs[:, b], gamma=gamma, k=k)
        for t in range(T):
            theta, s, v, o = (g[b] for g in got[t])
            assert int(s) == want[t][1], (b, t)
            assert theta == pytest.approx(want[t][0], abs=1e-12, rel=1e-12)
            assert v == pytest.approx(want[t][2], abs=1e-12, rel=1e-12)
            assert o == pytest.approx(want[t][3], abs=1e-12, rel=1e-12)
    assert np.array_equal(st.count, np.array([[r[1] for r in _oracle(mode, lam, coefs, xs[:, b], gamma, k)]
                                              for b in range(B)]).sum(axis=1))


def test_threshold_floor_one_lsb():
    # very strong input: DET → 0, DTT at rest → σ(τ_mp(−λ + k_a ln 2)) with huge λ ⇒ tiny θ, clamped at λ·2^−F
    coefs = MsatCoefs(alpha=0.0, k_a=0.0, k_i=1.0, C=5.0, tau_mp=1.0, tau_rd=1.0)
    spec = NeuronSpec("msat", 200.0, coefs=coefs)
    st = init_float_state((1,))
    st, _ = step_float(spec, st, np.array([0.0]))
    st, out = step_float(spec, st, np.array([1000.0]))
    assert out.theta[0] == pytest.approx(200.0 * 2.0 ** -12, rel=1e-15)


# ---------------------------------------------------------------------------- units 'normalized' (BrainCog port)

def _trace(spec, xs):
    """Run step_float over xs (T, B); every output and state array, per step."""
    st = init_float_state(xs.shape[1:])
    rows = []
    for x in xs:
        st, out = step_float(spec, st, x)
        rows.append((out.theta, out.spikes, out.payload, st.v, st.vsum, st.count))
    return rows


@pytest.mark.parametrize("mode, preset, gamma", [("msat", "vgg16", 1), ("msat", "resnet20", 3), ("dtt", "resnet34", 1),
                                                 ("det", "resnet20", 2), ("const", None, 1)])
def test_normalized_units_with_lambda_1_equal_raw_exactly(mode, preset, gamma):
    coefs = PRESETS[preset] if preset else None
    xs = np.random.default_rng(21).uniform(-0.8, 1.8, size=(40, 64))
    raw = NeuronSpec(mode, 1.0, coefs=coefs, gamma=gamma)
    norm = NeuronSpec(mode, 1.0, coefs=coefs, gamma=gamma, units="normalized")
    assert raw.units == "raw" and norm.units == "normalized" and raw != norm
    for got, want in zip(_trace(norm, xs), _trace(raw, xs)):
        for a, b in zip(got, want):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("mode, preset", [("msat", "vgg16"), ("msat", "resnet20"), ("dtt", "resnet34"),
                                          ("det", "vgg16")])
def test_normalized_units_scale_with_lambda(mode, preset):
    """λ = 4 on inputs ×4 is the λ = 1 neuron scaled by 4 (exact: 4 is a power of two)."""
    xs = np.random.default_rng(22).uniform(-0.6, 1.6, size=(40, 64))
    one = _trace(NeuronSpec(mode, 1.0, coefs=PRESETS[preset], units="normalized"), xs)
    four = _trace(NeuronSpec(mode, 4.0, coefs=PRESETS[preset], units="normalized"), 4.0 * xs)
    for (t1, s1, o1, v1, *_), (t4, s4, o4, v4, *_) in zip(one, four):
        assert np.array_equal(t4, 4.0 * t1) and np.array_equal(s4, s1)
        assert np.array_equal(o4, 4.0 * o1) and np.array_equal(v4, 4.0 * v1)


def test_normalized_units_hand_computed_steps():
    """VGG16 values, λ = 4, x = 1.2 every step: Δ̂ = Δ/4, x̂ = 0.3 and V_T = −1 inside the formula."""
    rows, _ = _run(NeuronSpec("msat", 4.0, coefs=PRESETS["vgg16"], units="normalized"), [1.2] * 3)
    # t = 0: θ = λ = 4, m = 1.2 < 4, v = 1.2, S = 1.2
    assert rows[0][:2] == (4.0, 0) and rows[0][2] == pytest.approx(1.2, abs=1e-15)
    # t = 1: V̄ = 1.2, Δ = 0: z = 1·(0 − 1 + 1·ln 2) + 1·exp(−0.3/5)
    z1 = (math.log(2.0) - 1.0) + math.exp(-0.06)
    theta1 = 4.0 / (1.0 + math.exp(-z1))
    assert rows[1][0] == pytest.approx(theta1, rel=1e-14) and theta1 == pytest.approx(4 * 0.65360, abs=4e-5)
    assert rows[1][1] == 0  # m = 2.4 < θ ≈ 2.614
    # t = 2: v = 2.4, S = 3.6, V̄ = 1.8, Δ = 0.6 → Δ̂ = 0.15
    z2 = (0.03 * 0.15 - 1.0 + math.log1p(math.exp(0.15))) + math.exp(-0.06)
    theta2 = 4.0 / (1.0 + math.exp(-z2))
    assert rows[2][0] == pytest.approx(theta2, rel=1e-14) and theta2 == pytest.approx(4 * 0.67199, abs=4e-5)
    assert rows[2][1] == 1 and rows[2][2] == pytest.approx(3.6 - theta2, abs=1e-14)
    # a different model from raw units (raw λ = 4: θ(1) ≈ 0.29781, ALGORITHMS §2.6)
    raw, _ = _run(NeuronSpec("msat", 4.0, coefs=PRESETS["vgg16"]), [1.2] * 2)
    assert raw[1][0] == pytest.approx(0.29781, abs=1e-5)


# ---------------------------------------------------------------------------- spike confidence

@pytest.mark.parametrize("gate", ["code", "keep_charge"])
def test_gate_semantics_float(gate):
    lam, p, E = 1.0, 0.5, 16
    spec = NeuronSpec("msat", lam, coefs=PRESETS["vgg16"], sc_p=p, sc_early=E, sc_gate=gate)
    ungated = NeuronSpec("msat", lam, coefs=PRESETS["vgg16"])
    rng = np.random.default_rng(3)
    B, n, T = 3, 50, 30
    ids = np.array([7, 100, 4])
    xs = rng.uniform(0.2, 1.5, size=(T, B, n))
    st, st0 = init_float_state((B, n)), init_float_state((B, n))
    total = {"x": 0.0, "o": 0.0, "sup": 0.0}
    for t in range(T):
        # one step from the SAME state with and without gate: the gate only acts on what fired
        st_ref, out_ref = step_float(ungated, st, xs[t])
        st, out = step_float(spec, st, xs[t], ids, layer_id=2, seed=23)
        st0, _ = step_float(ungated, st0, xs[t])
        assert np.array_equal(out.theta, out_ref.theta)
        if t < E:
            keep = prng.keep_mask(ids, (n,), t, 2, 23, p, np.zeros(0))
            assert np.array_equal(out.spikes, np.where(keep, out_ref.spikes, 0))
            removed = (out_ref.spikes - out.spikes) * out.theta
            if gate == "code":
                assert np.array_equal(st.v, st_ref.v)
                assert np.allclose(out.suppressed, removed, rtol=0, atol=0)
            else:
                assert np.allclose(st.v, st_ref.v + removed, rtol=0, atol=1e-12)
                assert np.all(out.suppressed == 0)
        else:
            assert np.array_equal(out.spikes, out_ref.spikes) and np.all(out.suppressed == 0)
        total["x"] += xs[t].sum()
        total["o"] += out.payload.sum()
        total["sup"] += out.suppressed.sum()
    assert total["o"] + total["sup"] + st.v.sum() == pytest.approx(total["x"], rel=1e-12)
    assert isinstance(st, FloatState) and st.t == T


def test_gate_needs_sample_ids():
    spec = NeuronSpec("const", 1.0, sc_p=0.5)
    with pytest.raises(ValueError):
        step_float(spec, init_float_state((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError):
        step_float(spec, init_float_state((2, 3)), np.ones((2, 3)), sample_ids=np.array([1, 2, 3]))
    with pytest.raises(ValueError):
        step_float(spec, init_float_state((2, 3)), np.ones((2, 4)), sample_ids=np.array([1, 2]))
