"""Lateral-inhibition pooling (LIPooling, ALGORITHMS §1.9), one step, both precisions.

For every output window w (of a max-pool geometry: kernel, stride, padding, floor mode) and every input element
k ∈ w, an accumulator A_{w,k} is kept (overlapping windows hold their own copies, as the unfolded reference code):

    A_{w,k} ← A_{w,k} + x_k(t)               k ∈ w (padding elements never win the max)
    y_w(t)  = max_{k ∈ w, k not padding} A_{w,k}
    A_{w,k} ← A_{w,k} − y_w(t)

so Σ_{τ≤t} y_w(τ) = max_k Σ_{τ≤t} x_k(τ) and y ≥ 0 for inputs ≥ 0. The step is dtype-preserving: integer
inputs (payloads of the fixed model, int64) give exact integer outputs in the source's scale; float inputs give
float outputs. Arrays are batched (B, C, H, W) numpy arrays or torch tensors; the state is (B, C, Ho, Wo, kH·kW).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from msat_lava.dynamics import xp

__all__ = ["LIPoolGeometry", "LIPoolState", "lipool_geometry", "init_lipool_state", "step_lipool"]

_INT_NEG = -(1 << 62)


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    try:
        a, b = v
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}") from None
    if isinstance(a, bool) or isinstance(b, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(a), int(b)


@dataclass(frozen=True, eq=False)
class LIPoolGeometry:
    """Window geometry: input (H, W), output (Ho, Wo), and the unfold map.

    ``index`` (Ho·Wo·K,) int64 gives for each (window, element) the flat input index h·W + w, or H·W for a
    padding element (a zero column is appended); ``valid`` (Ho, Wo, K) is False on padding elements.
    """

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    index: np.ndarray
    valid: np.ndarray


def lipool_geometry(in_hw, kernel, stride=None, padding=0) -> LIPoolGeometry:
    """Geometry of a max-pool (PyTorch semantics, floor mode; stride defaults to kernel; padding ≤ kernel/2)."""
    H, W = _pair(in_hw, "in_hw")
    kh, kw = _pair(kernel, "kernel")
    sh, sw = _pair(kernel if stride is None else stride, "stride")
    ph, pw = _pair(padding, "padding")
    if min(H, W, kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError("sizes, kernel and stride must be >= 1 and padding >= 0")
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"padding {(ph, pw)} must be at most half the kernel {(kh, kw)}")
    ho = (H + 2 * ph - kh) // sh + 1
    wo = (W + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"kernel {(kh, kw)} larger than padded input {(H + 2 * ph, W + 2 * pw)}")
    oy = np.arange(ho)[:, None, None, None] * sh - ph + np.arange(kh)[None, None, :, None]
    ox = np.arange(wo)[None, :, None, None] * sw - pw + np.arange(kw)[None, None, None, :]
    oy, ox = np.broadcast_arrays(oy, ox)
    valid = (oy >= 0) & (oy < H) & (ox >= 0) & (ox < W)
    index = np.where(valid, oy * W + ox, H * W).reshape(ho, wo, kh * kw).astype(np.int64)
    valid = valid.reshape(ho, wo, kh * kw)
    index.setflags(write=False)
    valid.setflags(write=False)
    return LIPoolGeometry(in_hw=(H, W), out_hw=(ho, wo), kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw),
                          index=index.reshape(-1), valid=valid)


@dataclass(frozen=True, eq=False)
class LIPoolState:
    """Accumulators A, shape (B, C, Ho, Wo, kH·kW), dtype of the inputs (int64 or float)."""

    acc: Any


def init_lipool_state(geom: LIPoolGeometry, batch: int, channels: int, xp_like: Any = None,
                      integer: bool = True) -> LIPoolState:
    """Zero accumulators in ``xp_like``'s backend/device (None: numpy): int64 (``integer``) or its float dtype."""
    like = np.zeros(0) if xp_like is None else xp_like
    ho, wo = geom.out_hw
    shape = (int(batch), int(channels), ho, wo, geom.kernel[0] * geom.kernel[1])
    return LIPoolState(acc=xp.zeros(shape, like, "int" if integer else "float"))


def step_lipool(geom: LIPoolGeometry, state: LIPoolState, x: Any) -> tuple[LIPoolState, Any]:
    """One LIPooling step: x (B, C, H, W) → (new state, y (B, C, Ho, Wo))."""
    B, C = int(x.shape[0]), int(x.shape[1])
    H, W = geom.in_hw
    ho, wo = geom.out_hw
    k = geom.kernel[0] * geom.kernel[1]
    if tuple(x.shape) != (B, C, H, W):
        raise ValueError(f"input shape {tuple(x.shape)} does not match the geometry's (B, C, {H}, {W})")
    if tuple(state.acc.shape) != (B, C, ho, wo, k):
        raise ValueError(f"state shape {tuple(state.acc.shape)} does not match (B, C, {ho}, {wo}, {k})")
    integer = xp.is_integer_dtype(state.acc)
    x = xp.as_int64(x) if integer else xp.as_float(x, state.acc)
    flat = xp.reshape(x, (B, C, H * W))
    pad = xp.zeros((B, C, 1), state.acc, "int" if integer else "float")
    if xp.is_torch(flat):
        flat = xp._torch().cat([flat, pad], dim=-1)
    else:
        flat = np.concatenate([flat, pad], axis=-1)
    gathered = xp.reshape(flat[..., xp.table(geom.index, flat)], (B, C, ho, wo, k))
    valid = xp.asarray(geom.valid, state.acc, "bool")
    acc = state.acc + gathered
    neg = _INT_NEG if integer else float("-inf")
    y = xp.max_last(xp.where(valid, acc, neg))
    acc = xp.where(valid, acc - y[..., None], 0)
    return LIPoolState(acc=acc), y
