"""dynamics.fmath: exp / softplus / σ of the float neuron model, the same bits on numpy, torch and in the fused
(numba) loops, and within a few ulps of the correctly rounded values (mpmath at 120 bits)."""
from __future__ import annotations

import math

import mpmath
import numba
import numpy as np
import pytest
import torch

from msat_lava.dynamics import fmath, fused  # noqa: F401  (fused registers fmath for numba)

mpmath.mp.prec = 120

EXACT = {
    "exp": mpmath.exp,
    "softplus": lambda v: mpmath.log1p(mpmath.exp(v)),
    "sigmoid": lambda v: 1 / (1 + mpmath.exp(-v)),
    "log1p01": mpmath.log1p,
}
# measured worst cases over the samples below (exp 0.86, softplus 3.5, sigmoid 2.4, log1p 2.x ulp), rounded up
MAX_ULPS = {"exp": 1.0, "softplus": 4.0, "sigmoid": 3.0, "log1p01": 3.0}


def _samples(name: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if name == "log1p01":
        return np.concatenate([rng.uniform(0, 1, 3000), 10.0 ** rng.uniform(-300, 0, 1000), [0.0, 1.0, 0.4142]])
    return np.concatenate([rng.uniform(-700, 700, 2000), rng.normal(0, 3, 2000), rng.normal(0, 40, 1000),
                           rng.uniform(-1, 1, 300) * 1e-9, [0.0, -0.0, 1.0, -1.0, 708.9, -707.9]])


@numba.njit
def _numba_apply(code, x):
    out = np.empty_like(x)
    for i in range(x.size):
        v = x[i]
        if code == 0:
            out[i] = fmath.exp(v)
        elif code == 1:
            out[i] = fmath.softplus(v)
        elif code == 2:
            out[i] = fmath.sigmoid(v)
        else:
            out[i] = fmath.log1p01(v)
    return out


CODES = {"exp": 0, "softplus": 1, "sigmoid": 2, "log1p01": 3}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_same_bits_numpy_torch_numba(name):
    x = _samples(name)
    f = getattr(fmath, name)
    a = f(x)
    b = f(torch.from_numpy(x)).numpy()
    c = _numba_apply(CODES[name], x)
    assert a.dtype == np.float64 and b.dtype == np.float64
    assert np.array_equal(a.view(np.int64), b.view(np.int64))
    assert np.array_equal(a.view(np.int64), c.view(np.int64))


@pytest.mark.parametrize("name", sorted(EXACT))
def test_accuracy_in_ulps(name):
    x = _samples(name)[::3]
    got = getattr(fmath, name)(x)
    worst = 0.0
    for g, v in zip(got, x):
        e = EXACT[name](mpmath.mpf(float(v)))
        ef = float(e)
        if ef == 0.0 or not math.isfinite(ef):
            continue
        worst = max(worst, float(abs(mpmath.mpf(float(g)) - e) / math.ulp(ef)))
    assert worst <= MAX_ULPS[name], worst


def test_exp_clamps_and_special_values():
    x = np.array([-1e4, -708.0, 0.0, -0.0, 709.0, 1e4])
    got = fmath.exp(x)
    assert got[2] == 1.0 and got[3] == 1.0
    assert got[0] == got[1] == fmath.exp(np.array([-708.0]))[0] > 0  # clamped, not subnormal / zero
    assert got[4] == got[5] and math.isfinite(got[5])
    assert abs(got[1] / math.exp(-708.0) - 1) < 1e-15


def test_sigmoid_symmetry_and_softplus_identity():
    z = np.random.default_rng(1).normal(0, 10, 4000)
    s = fmath.sigmoid(z)
    assert np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(s + fmath.sigmoid(-z), 1.0, rtol=0, atol=4e-16)
    # softplus(y) − softplus(−y) = y
    np.testing.assert_allclose(fmath.softplus(z) - fmath.softplus(-z), z, rtol=1e-15, atol=1e-14)
