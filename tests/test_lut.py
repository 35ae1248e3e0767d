"""NeuronSpec / MsatCoefs validation and round trips; fixed-point threshold LUTs (netx_export.lut).

The threshold error is measured against a float64 formula written out here from ALGORITHMS §2.2 (raw units),
not against the library's float model.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from msat_lava.dynamics.neuron import fixed_msat_theta, float_msat_theta
from netx_export.errors import NetxExportError
from netx_export.lut import ThresholdLuts, make_luts
from netx_export.neuron import PRESETS, MsatCoefs, NeuronSpec, NeuronSpecError

F = 12
ONE = 1 << F


# ------------------------------------------------------------------------------------------ NeuronSpec

def test_presets_match_table2():
    assert PRESETS["vgg16"] == MsatCoefs(0.03, 1, 1.0, 5.0, 1, 1)
    assert PRESETS["resnet20"] == MsatCoefs(0.3, 1, 1.0, 5.0, 0.5, 0.5)
    assert PRESETS["resnet34"] == MsatCoefs(1.0, 1.0, 1.0, 5.0, 0.5, 0.5)


def test_spec_defaults_and_roundtrip():
    spec = NeuronSpec("msat", 2.5, coefs=PRESETS["vgg16"], sc_p=0.683)
    assert (spec.k_const, spec.gamma, spec.sc_early, spec.sc_gate, spec.frac_bits, spec.state_bits) == (
        1.0, 1, 16, "code", 12, 24)
    assert spec.one == 4096 and spec.v_max == (1 << 23) - 1
    d = spec.to_dict()
    assert d["coefs"] == {"alpha": 0.03, "k_a": 1.0, "k_i": 1.0, "C": 5.0, "tau_mp": 1.0, "tau_rd": 1.0}
    assert NeuronSpec.from_dict(d) == spec
    const = NeuronSpec("const", 1.0, k_const=0.5)
    assert NeuronSpec.from_dict(const.to_dict()) == const and const.coefs is None
    assert const.theta_const_fixed == 2048
    assert spec.units == "raw" and d["units"] == "raw" and spec.formula_lam == 2.5


def test_spec_units_roundtrip_and_old_dicts():
    spec = NeuronSpec("msat", 2.5, coefs=PRESETS["vgg16"], units="normalized")
    d = spec.to_dict()
    assert d["units"] == "normalized" and spec.formula_lam == 1.0
    assert NeuronSpec.from_dict(d) == spec and NeuronSpec.from_dict(d) != NeuronSpec("msat", 2.5,
                                                                                       coefs=PRESETS["vgg16"])
    del d["units"]  # a dict written before the field existed
    old = NeuronSpec.from_dict(d)
    assert old.units == "raw" and old == NeuronSpec("msat", 2.5, coefs=PRESETS["vgg16"])
    assert NeuronSpec.from_dict({"mode": "const", "lam": 1.0, "units": b"normalized"}).units == "normalized"


def test_spec_coerces_numpy_scalars_and_bytes():
    spec = NeuronSpec.from_dict({"mode": b"dtt", "lam": np.float32(2.0), "gamma": np.int64(2),
                                 "coefs": {k: np.float64(v) for k, v in PRESETS["resnet20"].to_dict().items()}})
    assert spec.mode == "dtt" and type(spec.lam) is float and type(spec.gamma) is int and spec.gamma == 2


@pytest.mark.parametrize("kwargs, field", [
    (dict(mode="lif", lam=1.0), "mode"),
    (dict(mode="const", lam=0.0), "lam"),
    (dict(mode="const", lam=float("nan")), "lam"),
    (dict(mode="msat", lam=1.0), "coefs"),
    (dict(mode="const", lam=1.0, k_const=1.5), "k_const"),
    (dict(mode="const", lam=1.0, gamma=0), "gamma"),
    (dict(mode="const", lam=1.0, gamma=True), "gamma"),
    (dict(mode="const", lam=1.0, sc_p=0.0), "sc_p"),
    (dict(mode="const", lam=1.0, sc_p=1.5), "sc_p"),
    (dict(mode="const", lam=1.0, sc_early=300), "sc_early"),
    (dict(mode="const", lam=1.0, sc_gate="other"), "sc_gate"),
    (dict(mode="const", lam=1.0, frac_bits=20), "frac_bits"),
    (dict(mode="const", lam=1.0, state_bits=13), "state_bits"),
    (dict(mode="const", lam=1.0, units="scaled"), "units"),
    (dict(mode="const", lam=1.0, units=1), "units"),
    (dict(mode="msat", lam=1.0, coefs={"alpha": 0.03, "k_a": 1, "k_i": 0.0, "C": 5, "tau_mp": 1, "tau_rd": 1}),
     "coefs.k_i"),
])
def test_spec_validation_names_field(kwargs, field):
    with pytest.raises(NeuronSpecError) as info:
        NeuronSpec(**kwargs)
    assert info.value.field == field
    assert isinstance(info.value, NetxExportError) and isinstance(info.value, ValueError)


def test_coefs_validation():
    with pytest.raises(NeuronSpecError) as info:
        MsatCoefs(-0.1, 1, 1, 5, 1, 1)
    assert info.value.field == "coefs.alpha"
    with pytest.raises(NeuronSpecError):
        MsatCoefs.from_dict({"alpha": 1.0})
    with pytest.raises(NeuronSpecError):
        NeuronSpec.from_dict({"mode": "const", "lam": 1.0, "bogus": 1})


# ------------------------------------------------------------------------------------------ LUTs

def _theta_ref(spec: NeuronSpec, d_raw: np.ndarray, x_raw: np.ndarray) -> np.ndarray:
    """θ/λ from ALGORITHMS §2.2 in float64 (raw units), with the 2^−F floor."""
    c, lam = spec.coefs, spec.lam
    z = np.zeros(np.broadcast(d_raw, x_raw).shape)
    if spec.mode in ("dtt", "msat"):
        y = d_raw / c.k_i
        softplus = np.where(y > 30, y, np.log1p(np.exp(np.minimum(y, 30.0))))
        z = z + c.tau_mp * (c.alpha * d_raw - lam + c.k_a * softplus)
    if spec.mode in ("det", "msat"):
        z = z + c.tau_rd * np.exp(np.minimum(-x_raw / c.C, 700.0))
    sig = 0.5 * (1.0 + np.tanh(0.5 * z))
    return np.maximum(sig, 2.0 ** -F)


def test_const_has_no_luts():
    assert make_luts(NeuronSpec("const", 3.0)) is None


@pytest.mark.parametrize("mode", ["dtt", "det", "msat"])
def test_luts_roundtrip_size_and_dtype(mode):
    luts = make_luts(NeuronSpec(mode, 1.7, coefs=PRESETS["resnet20"]))
    assert isinstance(luts, ThresholdLuts) and luts.mode == mode and luts.one == ONE
    assert luts.n_entries <= 16384
    for arr in (luts.sig_lut, luts.sp_lut, luts.det_lut):
        assert arr.dtype == np.int32 and arr.ndim == 1 and not arr.flags.writeable
    back = ThresholdLuts.from_dict(luts.to_dict())
    assert back == luts
    assert back != make_luts(NeuronSpec(mode, 1.8, coefs=PRESETS["resnet20"]))
    d = luts.to_dict()
    d["sig_lut"] = d["sig_lut"][:-1]
    with pytest.raises(NeuronSpecError):
        ThresholdLuts.from_dict(d)


def test_lut_entries_are_rounded_function_values():
    spec = NeuronSpec("msat", 2.0, coefs=PRESETS["vgg16"])
    luts = make_luts(spec)
    c = spec.coefs
    fz, g = luts.z_frac_bits, luts.sig_guard
    zmax = luts.z_max / 2 ** fz
    for k in (0, 1, 17, luts.sig_lut.size // 2, luts.sig_lut.size - 1):
        z = -zmax + k * 2.0 ** (luts.sig_shift - fz)
        assert luts.sig_lut[k] == math.floor(1.0 / (1.0 + math.exp(-z)) * 2 ** (F + g) + 0.5)
    # sigmoid range: below 1 LSB at -Z, rounds to ONE at +Z
    assert luts.sig_lut[0] < (1 << g) // 2 and (luts.sig_lut[-1] + (1 << g) // 2) >> g == ONE
    for k in (0, 5, luts.sp_lut.size - 1):
        y = spec.lam * k * 2 ** luts.sp_shift / (c.k_i * ONE)
        assert luts.sp_lut[k] == math.floor(c.tau_mp * c.k_a * math.log1p(math.exp(-y)) * 2 ** fz + 0.5)
    assert luts.sp_lut[-1] == 0
    for k in (0, 100, luts.det_lut.size - 1):
        xr = spec.lam * (luts.det_x0 + k * 2 ** luts.det_shift) / ONE
        assert luts.det_lut[k] == math.floor(c.tau_rd * math.exp(-xr / c.C) * 2 ** fz + 0.5)
    assert luts.det_lut[-1] == 0
    assert luts.dtt_offset == math.floor(-c.tau_mp * spec.lam * 2 ** fz + 0.5)


@pytest.mark.parametrize("mode", ["msat", "dtt", "det"])
@pytest.mark.parametrize("preset", ["vgg16", "resnet20", "resnet34"])
def test_fixed_threshold_error_sweep(mode, preset):
    """max |θ̂/2^F − θ_float/λ| over Δ ∈ [−64λ, 64λ], x ∈ [−100λ, 100λ] stays below 1 LSB (2.44e−4)."""
    rng = np.random.default_rng(7)
    worst = 0.0
    for lam in (0.05, 0.5, 1.0, 3.0, 12.0, 100.0):
        spec = NeuronSpec(mode, lam, coefs=PRESETS[preset])
        luts = make_luts(spec)
        assert luts.n_entries <= 16384
        d = np.concatenate([rng.integers(-8 * ONE, 8 * ONE, 300), rng.integers(-64 * ONE, 64 * ONE, 100),
                            [-64 * ONE, -1, 0, 1, 64 * ONE]]).astype(np.int64)
        x = np.concatenate([rng.integers(-8 * ONE, 8 * ONE, 200), rng.integers(-100 * ONE, 100 * ONE, 100),
                            [-100 * ONE, 0, 100 * ONE]]).astype(np.int64)
        dd, xx = np.meshgrid(d, x, indexing="ij")
        theta = fixed_msat_theta(luts, dd, xx)
        assert theta.dtype == np.int64 and theta.min() >= 1 and theta.max() <= ONE
        ref = _theta_ref(spec, dd * lam / ONE, xx * lam / ONE)
        worst = max(worst, float(np.abs(theta / ONE - ref).max()))
    assert worst < 1.0 / ONE, worst * ONE


# ------------------------------------------------------------------------------------------ units 'normalized'

@pytest.mark.parametrize("mode", ["msat", "dtt", "det"])
def test_normalized_luts_are_the_raw_luts_of_lambda_1(mode):
    """§9.3 with λ = 1 in the formula: the tables do not depend on the layer's λ (same normalized integers)."""
    ref = make_luts(NeuronSpec(mode, 1.0, coefs=PRESETS["resnet20"]))
    for lam in (0.05, 1.0, 4.0, 25.0, 1000.0):
        assert make_luts(NeuronSpec(mode, lam, coefs=PRESETS["resnet20"], units="normalized")) == ref
    assert make_luts(NeuronSpec(mode, 4.0, coefs=PRESETS["resnet20"])) != ref


def _theta_ref_normalized(spec: NeuronSpec, d_hat: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """θ/λ of the BrainCog-port variant (ALGORITHMS §2.2 note) in float64: Δ̂ = Δ/λ, x̂ = x/λ, V_T = −1."""
    c = spec.coefs
    z = np.zeros(np.broadcast(d_hat, x_hat).shape)
    if spec.mode in ("dtt", "msat"):
        y = d_hat / c.k_i
        softplus = np.where(y > 30, y, np.log1p(np.exp(np.minimum(y, 30.0))))
        z = z + c.tau_mp * (c.alpha * d_hat - 1.0 + c.k_a * softplus)
    if spec.mode in ("det", "msat"):
        z = z + c.tau_rd * np.exp(np.minimum(-x_hat / c.C, 700.0))
    return np.maximum(0.5 * (1.0 + np.tanh(0.5 * z)), 2.0 ** -F)


@pytest.mark.parametrize("mode", ["msat", "dtt", "det"])
@pytest.mark.parametrize("preset", ["vgg16", "resnet20", "resnet34"])
def test_fixed_threshold_error_sweep_normalized(mode, preset):
    """units 'normalized': max |θ̂/2^F − θ/λ| < 1 LSB over Δ ∈ [−64λ, 64λ], x ∈ [−100λ, 100λ], against the formula
    above and against the library's float model, for several λ."""
    rng = np.random.default_rng(8)
    d = np.concatenate([rng.integers(-8 * ONE, 8 * ONE, 300), rng.integers(-64 * ONE, 64 * ONE, 100),
                        [-64 * ONE, -1, 0, 1, 64 * ONE]]).astype(np.int64)
    x = np.concatenate([rng.integers(-8 * ONE, 8 * ONE, 200), rng.integers(-100 * ONE, 100 * ONE, 100),
                        [-100 * ONE, 0, 100 * ONE]]).astype(np.int64)
    dd, xx = np.meshgrid(d, x, indexing="ij")
    worst_ref = worst_float = 0.0
    for lam in (0.05, 1.0, 4.0, 12.0, 100.0):
        spec = NeuronSpec(mode, lam, coefs=PRESETS[preset], units="normalized")
        theta = fixed_msat_theta(make_luts(spec), dd, xx)
        assert theta.dtype == np.int64 and theta.min() >= 1 and theta.max() <= ONE
        worst_ref = max(worst_ref, float(np.abs(theta / ONE - _theta_ref_normalized(spec, dd / ONE, xx / ONE)).max()))
        flt = float_msat_theta(spec, dd * (lam / ONE), xx * (lam / ONE)) / lam
        worst_float = max(worst_float, float(np.abs(theta / ONE - flt).max()))
    assert worst_ref < 1.0 / ONE, worst_ref * ONE
    assert worst_float < 1.0 / ONE, worst_float * ONE


# ------------------------------------------------------------------------------------------ interpolation

@pytest.mark.parametrize("mode", ["msat", "dtt", "det"])
def test_interp_is_the_documented_integer_formula(mode):
    """Every table's interpolation, numpy and torch, equals the §9 formula evaluated element by element in Python
    integers: (L[i]·2^s + (L[min(i+1, n−1)] − L[i])·r + 2^(s+g−1)) >> (s+g), i = a >> s, r = a mod 2^s."""
    import torch

    from msat_lava.dynamics.neuron import _interp

    luts = make_luts(NeuronSpec(mode, 2.5, coefs=PRESETS["resnet20"]))
    rng = np.random.default_rng(11)
    tables = [(luts.sig_lut, luts.sig_shift, luts.sig_guard)]
    if mode != "det":
        tables.append((luts.sp_lut, luts.sp_shift, 0))
    if mode != "dtt":
        tables.append((luts.det_lut, luts.det_shift, 0))
    for lut, s, g in tables:
        n = int(lut.size)
        top = (n - 1) << s
        a = np.concatenate([rng.integers(0, top + 1, 500), [0, 1, top - 1, top, (n - 2) << s]]).astype(np.int64)
        a = np.clip(a, 0, top)
        want = []
        for ai in a.tolist():
            i, r = ai >> s, ai & ((1 << s) - 1)
            lo, hi = int(lut[i]), int(lut[min(i + 1, n - 1)])
            want.append(((lo << s) + (hi - lo) * r + ((1 << (s + g)) >> 1)) >> (s + g))
        assert _interp(lut, a.reshape(5, -1), s, g).reshape(-1).tolist() == want
        assert _interp(lut, torch.as_tensor(a).reshape(5, -1), s, g).reshape(-1).tolist() == want
