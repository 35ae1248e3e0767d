"""exp, softplus and the logistic function of the float neuron model, from + − × ÷ and floor alone.

Why not ``np.exp`` / ``torch.exp`` / the C library: their last bit depends on the machine (numpy dispatches AVX-512
kernels where the CPU has them, the C library and torch use others), so the float model's results would depend
on where it ran, and the compiled engine (:mod:`msat_lava.dynamics.fused`) could not equal the step function bit
for bit. These functions are written once, over a tiny set of primitives (:func:`_floor`, :func:`_select`,
:func:`_pow2`, :func:`_minimum`, :func:`_maximum`, :func:`_abs`), and evaluate the same IEEE-754 float64 operations in the
same order on numpy arrays, torch tensors (any device) and — compiled by numba from this very source, with the
primitives overloaded for scalars — inside the fused neuron loops, where they also vectorize. Same inputs, same
bits, everywhere.

Algorithms (float64; the accuracy is measured in ``tests/test_fmath.py`` against the correctly rounded values):

* exp(x): x clamped to [−708, 709]; k = ⌊x/ln 2 + ½⌋; r = (x − k·ln2_hi) − k·ln2_lo (Cody–Waite, ln2_hi has 21
  trailing zero bits, so k·ln2_hi is exact), |r| ≤ ½ ln 2 (+ rounding); exp(r) by its Taylor polynomial of degree
  13 in Horner form (truncation < 4·10⁻¹⁸ relative); times 2^k built from its bits. Below −708 the result is
  exp(−708) ≈ 3.3·10⁻³⁰⁸ instead of a subnormal or 0 (the neuron model floors θ far above that).
* log1p(u) for 0 ≤ u ≤ 1: w = 1 + u, c = (u − (w − 1))/w (the rounding of w, to first order); w = 2^j·f with
  j = [w > √2], f ∈ (1/√2, √2]; log f = 2·atanh(s), s = (f − 1)/(f + 1), |s| ≤ 0.172, by its odd series to s²³;
  log1p(u) = j·ln2_hi + (log f + (j·ln2_lo + c)). 1/w and 1/(f + 1) come from one division, r = 1/(w·(f + 1)).
* softplus(y) = max(y, 0) + log1p(exp(−|y|));  σ(z) = r for z ≥ 0 and e·r otherwise, e = exp(−|z|),
  r = 1/(1 + e).

Divisions are few on purpose: a vectorized float64 division costs about ten multiplications.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["exp", "log1p01", "softplus", "sigmoid", "EXP_LO", "EXP_HI"]

EXP_LO = -708.0
EXP_HI = 709.0
_INV_LN2 = 1.44269504088896338700e+00
_LN2_HI = 6.93147180369123816490e-01   # 0x3fe62e42fee00000: k·_LN2_HI is exact for |k| < 2^20
_LN2_LO = 1.90821492927058770002e-10   # ln 2 − _LN2_HI
_SQRT2 = 1.41421356237309514547e+00
# 1/n!, n = 13 … 2, for Horner's rule (then + r + 1)
_EXP_C = tuple(float(1.0 / np.prod(np.arange(1, n + 1, dtype=np.float64))) for n in range(13, 1, -1))
# 1/(2n+1), n = 11 … 1, for 2s·(1 + s²/3 + s⁴/5 + …)
_LOG_C = tuple(1.0 / (2 * n + 1) for n in range(11, 0, -1))


# ------------------------------------------------------------------------- primitives (overloaded for numba in fused.py)

def _is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def _floor(x: Any) -> Any:
    """⌊x⌋ as a float (elementwise)."""
    if _is_torch(x):
        import torch

        return torch.floor(x)
    return np.floor(x)


def _select(cond: Any, a: Any, b: Any) -> Any:
    """a where cond, else b (elementwise; a and b are both evaluated)."""
    if _is_torch(cond):
        import torch

        return torch.where(cond, a, b)
    return np.where(cond, a, b)


def _minimum(a: Any, b: float) -> Any:
    if _is_torch(a):
        import torch

        return torch.clamp(a, max=b)
    return np.minimum(a, b)


def _maximum(a: Any, b: float) -> Any:
    if _is_torch(a):
        import torch

        return torch.clamp(a, min=b)
    return np.maximum(a, b)


def _abs(a: Any) -> Any:
    if _is_torch(a):
        import torch

        return torch.abs(a)
    return np.abs(a)


def _pow2(k: Any) -> Any:
    """2^k for integer-valued float k in [−1022, 1023], built from its IEEE bits (exact)."""
    if _is_torch(k):
        import torch

        return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)
    return ((np.asarray(k).astype(np.int64) + 1023) << 52).view(np.float64)


# ------------------------------------------------------------------------------------------ the functions

def exp(x: Any) -> Any:
    """e^x (float64; see the module docstring for the algorithm and its range)."""
    x = _maximum(_minimum(x, EXP_HI), EXP_LO)
    k = _floor(x * _INV_LN2 + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = r * _EXP_C[0] + _EXP_C[1]
    p = p * r + _EXP_C[2]
    p = p * r + _EXP_C[3]
    p = p * r + _EXP_C[4]
    p = p * r + _EXP_C[5]
    p = p * r + _EXP_C[6]
    p = p * r + _EXP_C[7]
    p = p * r + _EXP_C[8]
    p = p * r + _EXP_C[9]
    p = p * r + _EXP_C[10]
    p = p * r + _EXP_C[11]
    p = (p * r + 1.0) * r + 1.0
    return p * _pow2(k)


def log1p01(u: Any) -> Any:
    """log(1 + u) for 0 ≤ u ≤ 1 (float64; module docstring)."""
    w = u + 1.0
    big = w > _SQRT2
    f = _select(big, w * 0.5, w)
    j = _select(big, w * 0.0 + 1.0, w * 0.0)  # 1.0 / 0.0 in w's type and shape
    f1 = f + 1.0
    r = 1.0 / (w * f1)  # one division for 1/w and 1/(f + 1)
    c = (u - (w - 1.0)) * (f1 * r)
    s = (f - 1.0) * (w * r)
    s2 = s * s
    q = s2 * _LOG_C[0] + _LOG_C[1]
    q = q * s2 + _LOG_C[2]
    q = q * s2 + _LOG_C[3]
    q = q * s2 + _LOG_C[4]
    q = q * s2 + _LOG_C[5]
    q = q * s2 + _LOG_C[6]
    q = q * s2 + _LOG_C[7]
    q = q * s2 + _LOG_C[8]
    q = q * s2 + _LOG_C[9]
    q = q * s2 + _LOG_C[10]
    logf = (s + s) * (q * s2 + 1.0)
    return j * _LN2_HI + (logf + (j * _LN2_LO + c))


def softplus(y: Any) -> Any:
    """log(1 + e^y) = max(y, 0) + log1p(e^−|y|) (float64)."""
    a = _maximum(y, 0.0)
    return a + log1p01(exp(-_abs(y)))


def sigmoid(z: Any) -> Any:
    """σ(z) = 1/(1 + e^−z), as 1/(1 + e) for z ≥ 0 and e/(1 + e) otherwise with e = e^−|z| (float64)."""
    e = exp(-_abs(z))
    r = 1.0 / (e + 1.0)
    return _select(z >= 0.0, r, e * r)
