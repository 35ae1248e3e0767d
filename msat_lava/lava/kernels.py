"""Per-sample synaptic terms for the Lava process models, compiled once per term (numpy, no Lava import).

:class:`TermKernel` evaluates one :class:`msat_lava.program.Term` on one sample and returns the same values as
:func:`msat_lava.program.apply_term_np` (fixed point: the same integers, bit for bit; float: the same sums up to
float64 rounding order). It only changes how the weighted op is computed; every other op, and the final
``round_shift`` of the fixed model, is :mod:`msat_lava.program`'s own numpy code.

conv (the cost of a ResNet stage, ~half of its step): ``program._conv_np`` builds a strided window view and
calls ``np.tensordot``, which copies the view through a transpose on every call. Here the padded input buffer and
the im2col matrix are allocated once, the im2col matrix is filled by kH·kW strided slice copies, and one GEMM per
group multiplies it with the pre-reshaped weights.

Fixed point additionally runs that GEMM in **float32 when it is provably exact**: with integer inputs x and
integer mantissas w, every product and every partial sum of output unit i is bounded by ‖w_i‖₁·max|x|; when
``max_i ‖w_i‖₁ · max|x| < 2^24`` all of them are integers that float32 represents exactly, whatever order the
BLAS sums in, so the float32 result equals the float64 one (and the exact integer sum). The bound is checked
on every call from the actual max|x| (payloads are ≤ Γ·2^F), and the kernel falls back to float64 otherwise.
The float model always uses float64.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from msat_lava.program import Op, Term, _round_shift_np, apply_op_np

__all__ = ["TermKernel", "ConvKernel", "F32_EXACT"]

#: float32 represents every integer of magnitude below 2^24 exactly.
F32_EXACT = float(1 << 24)


class ConvKernel:
    """One conv op (``Op.kind == 'conv'``) on one sample (C, H, W) → (Cout, Ho, Wo), float64 result."""

    def __init__(self, op: Op, fixed: bool) -> None:
        w = np.asarray(op.mant if fixed else op.weight, dtype=np.float64)
        self.cout, self.cin_g, self.kh, self.kw = (int(v) for v in w.shape)
        self.groups = int(op.params["groups"])
        self.stride = tuple(int(v) for v in op.params["stride"])
        self.padding = tuple(int(v) for v in op.params["padding"])
        cin, h, wd = (int(v) for v in op.in_shape)
        self.in_shape = (cin, h, wd)
        ph, pw = self.padding
        sh, sw = self.stride
        self.ho = (h + 2 * ph - self.kh) // sh + 1
        self.wo = (wd + 2 * pw - self.kw) // sw + 1
        if (self.cout, self.ho, self.wo) != tuple(int(v) for v in op.out_shape):
            raise ValueError(f"conv {op.node!r}: computed output {(self.cout, self.ho, self.wo)} does not match "
                             f"{tuple(op.out_shape)}")
        self.fixed = fixed
        self.w64 = np.ascontiguousarray(w.reshape(self.cout, -1))
        self.w32 = self.w64.astype(np.float32) if fixed else None
        # max over output units of sum |w| (the bound of the float32 exactness test)
        self.l1 = float(np.abs(self.w64).sum(axis=1).max()) if self.w64.size else 0.0
        self._bufs: dict[Any, tuple[np.ndarray, np.ndarray]] = {}

    def _buffers(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        hit = self._bufs.get(dtype)
        if hit is None:
            cin, h, w = self.in_shape
            ph, pw = self.padding
            pad = np.zeros((cin, h + 2 * ph, w + 2 * pw), dtype=dtype)
            cols = np.empty((cin, self.kh, self.kw, self.ho, self.wo), dtype=dtype)
            hit = self._bufs[dtype] = (pad, cols)
        return hit

    def _exact_in_f32(self, x: np.ndarray) -> bool:
        if not self.fixed or x.size == 0:
            return False
        amax = max(float(x.max()), -float(x.min()))
        return self.l1 * amax < F32_EXACT

    def __call__(self, x: np.ndarray) -> np.ndarray:
        f32 = self._exact_in_f32(x)
        dtype = np.float32 if f32 else np.float64
        w2 = self.w32 if f32 else self.w64
        pad, cols = self._buffers(dtype)
        cin, h, w = self.in_shape
        ph, pw = self.padding
        sh, sw = self.stride
        pad[:, ph:ph + h, pw:pw + w] = x
        hs, ws = (self.ho - 1) * sh + 1, (self.wo - 1) * sw + 1
        for dy in range(self.kh):
            for dx in range(self.kw):
                cols[:, dy, dx] = pad[:, dy:dy + hs:sh, dx:dx + ws:sw]
        flat = cols.reshape(cin * self.kh * self.kw, self.ho * self.wo)
        if self.groups == 1:
            out = w2 @ flat
        else:
            og, kg = self.cout // self.groups, self.cin_g * self.kh * self.kw
            out = np.concatenate([w2[g * og:(g + 1) * og] @ flat[g * kg:(g + 1) * kg]
                                  for g in range(self.groups)], axis=0)
        return out.reshape(self.cout, self.ho, self.wo).astype(np.float64, copy=False)


def _generic(op: Op, fixed: bool) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: apply_op_np(op, x, fixed)


class TermKernel:
    """``TermKernel(term, fixed)(payload)`` == ``apply_term_np(term, payload, fixed)`` for one sample."""

    def __init__(self, term: Term, fixed: bool) -> None:
        self.term = term
        self.fixed = fixed
        self.source = term.source
        self._ops = [ConvKernel(op, fixed) if op.kind == "conv" else _generic(op, fixed) for op in term.ops]
        self._first_conv = bool(term.ops) and term.ops[0].kind == "conv"

    def __call__(self, payload: np.ndarray) -> np.ndarray:
        # a leading conv reads the (integer) payload directly; anything else sees float64 as in apply_term_np
        x = payload if self._first_conv else np.asarray(payload, dtype=np.float64)
        for f in self._ops:
            x = f(x)
        if self.fixed:
            return _round_shift_np(x, self.term.exp)
        s = self.term.float_scale
        return x * s if s != 1.0 else x
