"""Fixed-point neuron model (msat_lava.dynamics.neuron.step_fixed), backend parity, fixed-vs-float tracking.

Independent expectations: a scalar Python-int oracle of the §9.4 step written here from the formulas documented
in netx_export.lut (tables read from the ThresholdLuts), exact charge conservation (ALGORITHMS §1.2), and the
float model for the tracking figures.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from msat_lava.dynamics import prng
from msat_lava.dynamics.neuron import (FixedState, init_fixed_state, init_float_state, step_fixed,
                                       step_float)
from netx_export.lut import make_luts
from netx_export.neuron import PRESETS, NeuronSpec

MODES = ["const", "dtt", "det", "msat"]
ONE = 4096


def _spec(mode, lam=1.3, **kw):
    return NeuronSpec(mode, lam, coefs=None if mode == "const" else PRESETS["resnet20"], **kw)


UNITS = ["raw", "normalized"]


# ------------------------------------------------------------------------------ scalar Python-int oracle

def _interp(lut, shift, a, extra=0):
    i, r = a >> shift, a & ((1 << shift) - 1)
    lo, hi = int(lut[i]), int(lut[min(i + 1, len(lut) - 1)])
    total = shift + extra
    return (lo * 2**shift + (hi - lo) * r + ((1 << total) >> 1)) >> total


def _theta_oracle(spec, L, t, v, vsum, x):
    if spec.mode == "const":
        return int(np.floor(spec.k_const * ONE + 0.5))
    if t == 0:
        return ONE
    d = v - vsum // t  # Python // floors
    z = 0
    if spec.mode in ("dtt", "msat"):
        d = max(-(2**31), min(2**31, d))
        slope = L.dtt_slope_neg if d < 0 else L.dtt_slope_pos
        p = L.dtt_slope_shift
        lin = (d * slope + (1 << (p - 1))) >> p
        a = min(abs(d), (len(L.sp_lut) - 1) << L.sp_shift)
        z = L.dtt_offset + lin + _interp(L.sp_lut, L.sp_shift, a)
    if spec.mode in ("det", "msat"):
        xi = min(max(x - L.det_x0, 0), (len(L.det_lut) - 1) << L.det_shift)
        z += _interp(L.det_lut, L.det_shift, xi)
    zc = min(max(z, -L.z_max), L.z_max) + L.z_max
    return min(max(_interp(L.sig_lut, L.sig_shift, zc, L.sig_guard), 1), ONE)


def _oracle_run(spec, L, xs, keep=None):
    """xs: list of ints for one neuron; keep: list of bools (gate) or None. Returns per-step tuples."""
    v = vsum = 0
    vmax = (1 << (spec.state_bits - 1)) - 1
    rows = []
    for t, x in enumerate(xs):
        theta = _theta_oracle(spec, L, t, v, vsum, x)
        m = v + x
        s = (1 if m >= theta else 0) if spec.gamma == 1 else min(spec.gamma, max(0, m // theta))
        sg = s if keep is None or t >= spec.sc_early else (s if keep[t] else 0)
        s_eff = s if spec.sc_gate == "code" else sg
        v = min(max(m - s_eff * theta, -vmax), vmax)
        vsum += v
        rows.append((theta, sg, v, sg * theta, (s - sg) * theta if spec.sc_gate == "code" else 0))
    return rows


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("gamma, sc", [(1, None), (2, "code"), (1, "keep_charge")])
def test_step_fixed_matches_int_oracle(mode, gamma, sc):
    _check_int_oracle(mode, gamma, sc)


@pytest.mark.parametrize("mode", ["dtt", "det", "msat"])
def test_step_fixed_matches_int_oracle_normalized_units(mode):
    # step_fixed is unchanged for units 'normalized': the LUT constants carry the variant
    _check_int_oracle(mode, 2, "code", units="normalized")


def _check_int_oracle(mode, gamma, sc, units="raw"):
    kw = dict(gamma=gamma, units=units)
    if sc:
        kw.update(sc_p=0.6, sc_gate=sc, sc_early=10)
    spec = _spec(mode, lam=2.2, **kw)
    L = make_luts(spec)
    rng = np.random.default_rng([MODES.index(mode), gamma, [None, "code", "keep_charge"].index(sc)])
    B, n, T = 2, 12, 30
    xs = rng.integers(-3 * ONE, 5 * ONE, size=(T, B, n))
    xs[:, 0, 0] = 1234  # constant input neuron
    ids = np.array([11, 3])
    st = init_fixed_state((B, n))
    outs = []
    for t in range(T):
        st, out = step_fixed(spec, L, st, xs[t], ids, layer_id=4, seed=9)
        outs.append(out)
    for b in range(B):
        keeps = [prng.keep_mask(ids, (n,), t, 4, 9, spec.sc_p, np.zeros(0))[b] if sc and t < spec.sc_early else None
                 for t in range(T)]
        for j in range(n):
            keep = None if not sc else [k[j] if k is not None else True for k in keeps]
            want = _oracle_run(spec, L, [int(v) for v in xs[:, b, j]], keep)
            got = [(int(o.theta[b, j]), int(o.spikes[b, j]), None, int(o.payload[b, j]), int(o.suppressed[b, j]))
                   for o in outs]
            assert [(w[0], w[1], w[3], w[4]) for w in want] == [(g[0], g[1], g[3], g[4]) for g in got], (b, j)
            assert int(st.v[b, j]) == want[-1][2]


# ------------------------------------------------------------------------------ charge conservation

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("gate", ["code", "keep_charge"])
@pytest.mark.parametrize("gamma", [1, 3])
@pytest.mark.parametrize("units", UNITS)
def test_charge_conservation_exact(mode, gate, gamma, units):
    spec = _spec(mode, lam=0.9 if units == "raw" else 7.0, gamma=gamma, sc_p=0.45, sc_early=16, sc_gate=gate,
                 units=units)
    L = make_luts(spec)
    rng = np.random.default_rng(5)
    B, shape, T = 3, (4, 5), 48
    ids = np.array([0, 77, 12345])
    st = init_fixed_state((B,) + shape)
    sum_x = np.zeros((B,) + shape, dtype=np.int64)
    sum_o = np.zeros_like(sum_x)
    sum_sup = np.zeros_like(sum_x)
    n_sup = 0
    for t in range(T):
        x = rng.integers(-2 * ONE, 4 * ONE, size=(B,) + shape)
        st, out = step_fixed(spec, L, st, x, ids, layer_id=1, seed=23)
        assert out.payload.dtype == np.int64 and np.all(out.payload >= 0)
        assert np.all(out.theta >= 1) and np.all(out.theta <= ONE)
        assert np.all(out.spikes <= gamma)
        sum_x += x
        sum_o += out.payload
        sum_sup += out.suppressed
        n_sup += int((out.suppressed > 0).sum())
    assert np.abs(st.v).max() < spec.v_max  # no saturation
    assert np.array_equal(sum_o + sum_sup + st.v, sum_x)
    if gate == "code":
        assert n_sup > 0
    else:
        assert np.all(sum_sup == 0)


def test_t0_threshold_const_and_saturation():
    spec = _spec("msat", lam=1.0)
    L = make_luts(spec)
    st = init_fixed_state((1, 3))
    st, out = step_fixed(spec, L, st, np.array([[10, ONE, 5 * 2**23]]))
    assert out.theta.tolist() == [[ONE] * 3]
    assert out.spikes.tolist() == [[0, 1, 1]]
    assert st.v.tolist() == [[10, 0, 2**23 - 1]]  # saturated to the 24-bit state
    st, _ = step_fixed(spec, L, st, np.array([[0, 0, -(2**40)]]))
    assert int(st.v[0, 2]) == -(2**23 - 1)
    const = NeuronSpec("const", 1.0, k_const=0.3)
    st, out = step_fixed(const, None, init_fixed_state((2,)), np.array([0, 5000]))
    assert out.theta.tolist() == [1229, 1229] and out.payload.tolist() == [0, 1229]


def test_fixed_input_validation():
    spec = _spec("msat")
    L = make_luts(spec)
    with pytest.raises(TypeError):
        step_fixed(spec, L, init_fixed_state((2,)), np.zeros(2))
    with pytest.raises(ValueError):
        step_fixed(spec, None, init_fixed_state((2,)), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError):
        step_fixed(spec, make_luts(_spec("dtt")), init_fixed_state((2,)), np.zeros(2, dtype=np.int64))


# ------------------------------------------------------------------------------ numpy vs torch

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sc", [None, "code", "keep_charge"])
def test_numpy_torch_identical(mode, sc):
    kw = {} if sc is None else dict(sc_p=0.7, sc_gate=sc)
    spec = _spec(mode, lam=3.1, gamma=2 if sc == "code" else 1, **kw)
    L = make_luts(spec)
    rng = np.random.default_rng(17)
    B, shape, T = 4, (3, 4, 4), 24
    ids = np.array([9, 2, 500, 31])
    sn, stt = init_fixed_state((B,) + shape), init_fixed_state((B,) + shape, torch.zeros(0))
    fn, ft = init_float_state((B,) + shape), init_float_state((B,) + shape, torch.zeros(0, dtype=torch.float64))
    for t in range(T):
        x = rng.integers(-3 * ONE, 6 * ONE, size=(B,) + shape)
        sn, on = step_fixed(spec, L, sn, x, ids, 3, 23)
        stt, ot = step_fixed(spec, L, stt, torch.as_tensor(x, dtype=torch.int32), torch.as_tensor(ids), 3, 23)
        for a, b in [(on.payload, ot.payload), (on.spikes, ot.spikes), (on.suppressed, ot.suppressed),
                     (on.theta, ot.theta), (sn.v, stt.v), (sn.vsum, stt.vsum), (sn.count, stt.count)]:
            assert b.dtype == torch.int64 and np.array_equal(a, b.numpy())
        xf = x * (spec.lam / ONE)
        fn, ofn = step_float(spec, fn, xf, ids, 3, 23)
        ft, oft = step_float(spec, ft, torch.as_tensor(xf), torch.as_tensor(ids), 3, 23)
        assert np.array_equal(ofn.spikes, oft.spikes.numpy())
        for a, b in [(ofn.payload, oft.payload), (ofn.theta, oft.theta), (ofn.suppressed, oft.suppressed),
                     (fn.v, ft.v), (fn.vsum, ft.vsum)]:
            assert np.allclose(a, b.numpy(), rtol=0, atol=1e-12)
    assert isinstance(stt, FixedState) and stt.t == T


# ------------------------------------------------------------------------------ fixed vs float

@pytest.mark.parametrize("mode, preset, lam, units", [
    ("msat", "vgg16", 1.0, "raw"), ("msat", "vgg16", 4.0, "raw"), ("msat", "resnet20", 2.5, "raw"),
    ("msat", "resnet34", 0.7, "raw"), ("dtt", "resnet20", 2.5, "raw"), ("det", "vgg16", 1.0, "raw"),
    ("const", "vgg16", 0.7, "raw"), ("msat", "vgg16", 4.0, "normalized"), ("msat", "resnet20", 12.0, "normalized"),
])
def test_fixed_tracks_float_spike_counts(mode, preset, lam, units):
    """Constant inputs x ∈ U[−0.5λ, 1.5λ] (exactly representable), T = 256: spike counts agree within 1."""
    spec = NeuronSpec(mode, lam, coefs=PRESETS[preset], units=units)
    L = make_luts(spec)
    rng = np.random.default_rng(5)
    N, T = 1000, 256
    xq = np.round(rng.uniform(-0.5, 1.5, N) * ONE).astype(np.int64)[None]
    xf = xq * (lam / ONE)
    sq, sf = init_fixed_state((1, N)), init_float_state((1, N))
    sum_oq = np.zeros((1, N), dtype=np.int64)
    sum_of = np.zeros((1, N))
    for _ in range(T):
        sq, oq = step_fixed(spec, L, sq, xq)
        sf, of = step_float(spec, sf, xf)
        sum_oq += oq.payload
        sum_of += of.payload
    diff = sq.count - sf.count
    assert np.abs(diff).max() <= 1
    # (const mode differs only at exact ties m = θ, where float rounding of Σx decides)
    assert (diff == 0).mean() >= 0.97
    # transmitted value (normalized units) agrees to ~one payload per neuron
    assert np.abs(sum_oq / ONE - sum_of / lam).max() <= 1.01
