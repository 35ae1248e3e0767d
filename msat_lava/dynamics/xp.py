"""Tiny array adapter: the same dynamics code runs on numpy arrays and torch tensors.

Every function dispatches on the type of its (first) array argument; torch is imported lazily, so numpy-only
users (the Lava process models) never import it. Integer arrays are int64 in both backends; the operators
``+ - * & | ^ >> <<`` and comparisons are used directly on arrays (same semantics in numpy and torch for int64:
``>>`` is an arithmetic shift, i.e. floor division by a power of two). Floats keep the dtype of the array they
come from (float64 unless the caller chose otherwise).
"""
from __future__ import annotations

import sys
import weakref
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "is_torch", "asarray", "as_int64", "as_float", "table", "zeros", "full", "zeros_like", "arange",
    "where", "minimum", "maximum", "clip", "floor_divide", "floor", "exp", "log1p", "abs", "max_last",
    "is_integer_dtype", "is_float_dtype", "float_dtype_of", "reshape", "any_true", "to_numpy", "lookup",
]


def _torch():
    return sys.modules.get("torch")


def is_torch(a: Any) -> bool:
    """True when ``a`` is a torch tensor (without importing torch)."""
    torch = _torch()
    return torch is not None and isinstance(a, torch.Tensor)


def is_integer_dtype(a: Any) -> bool:
    if is_torch(a):
        return not a.dtype.is_floating_point and not a.dtype.is_complex and a.dtype != _torch().bool
    return np.asarray(a).dtype.kind in "iu"


def is_float_dtype(a: Any) -> bool:
    if is_torch(a):
        return a.dtype.is_floating_point
    return np.asarray(a).dtype.kind == "f"


def float_dtype_of(like: Any):
    """The float dtype to compute in: ``like``'s own if floating, else float64 (of like's backend)."""
    if is_torch(like):
        return like.dtype if like.dtype.is_floating_point else _torch().float64
    dt = np.asarray(like).dtype
    return dt if dt.kind == "f" else np.dtype(np.float64)


def asarray(data: Any, like: Any, kind: str = "int") -> Any:
    """``data`` as an array of ``like``'s backend/device; kind 'int' (int64), 'float' (like's float), 'bool'."""
    if is_torch(like):
        torch = _torch()
        dtype = {"int": torch.int64, "bool": torch.bool}.get(kind) or float_dtype_of(like)
        if is_torch(data):
            return data.to(device=like.device, dtype=dtype)
        arr = np.asarray(data)
        if not arr.flags.writeable:
            arr = arr.copy()  # torch cannot wrap read-only memory
        return torch.as_tensor(arr, device=like.device).to(dtype)
    dtype = {"int": np.int64, "bool": np.bool_}.get(kind) or float_dtype_of(like)
    if is_torch(data):
        data = data.detach().cpu().numpy()
    return np.asarray(data).astype(dtype, copy=False)


def as_int64(a: Any) -> Any:
    if is_torch(a):
        return a.to(_torch().int64)
    return np.asarray(a).astype(np.int64, copy=False)


def as_float(a: Any, like: Any) -> Any:
    """``a`` cast to the float dtype of ``like`` (see :func:`float_dtype_of`)."""
    return asarray(a, like, "float")


_DERIVED: dict[tuple[int, Any], tuple[Any, Any]] = {}


def derived(arr: np.ndarray, key: Any, make: Callable[[], Any]) -> Any:
    """``make()``, computed once per (numpy array, ``key``) and kept while the array is alive (not cached when the
    array cannot be weak-referenced). For values derived from a read-only table: device copies, helper tables."""
    slot = (id(arr), key)
    hit = _DERIVED.get(slot)
    if hit is not None and hit[0]() is arr:
        return hit[1]
    value = make()
    for k in [k for k, (ref, _) in _DERIVED.items() if ref() is None]:
        del _DERIVED[k]
    try:
        _DERIVED[slot] = (weakref.ref(arr), value)
    except TypeError:  # not weak-referenceable: do not cache
        pass
    return value


def table(arr: np.ndarray, like: Any) -> Any:
    """A read-only numpy table (LUT, index map) as an int64 array of ``like``'s backend and device.

    For torch the converted tensor is cached per (numpy array, device) while the numpy array is alive, so a
    layer's tables move to the device once, not every step.
    """
    if not is_torch(like):
        return np.asarray(arr).astype(np.int64, copy=False)
    return derived(arr, ("table", str(like.device)),
                   lambda: _torch().as_tensor(np.asarray(arr).astype(np.int64), device=like.device))


def lookup(table_arr: Any, index: Any) -> Any:
    """``table_arr[index]`` for a 1-D table and an index array of any shape.

    torch's advanced indexing with a multi-dimensional index is ~100x slower on CPU than ``index_select`` on the
    flattened index, so torch goes through that; numpy uses ``take``. Same values in both backends.
    """
    if is_torch(index):
        return table_arr.index_select(0, index.reshape(-1)).reshape(index.shape)
    return np.take(table_arr, index)


def zeros(shape: Sequence[int], like: Any, kind: str = "int") -> Any:
    """Zeros of ``shape``: kind 'int' (int64), 'float' (like's float dtype), 'bool'."""
    shape = tuple(int(s) for s in shape)
    if is_torch(like):
        torch = _torch()
        dtype = {"int": torch.int64, "bool": torch.bool}.get(kind) or float_dtype_of(like)
        return torch.zeros(shape, dtype=dtype, device=like.device)
    dtype = {"int": np.int64, "bool": np.bool_}.get(kind) or float_dtype_of(like)
    return np.zeros(shape, dtype=dtype)


def full(shape: Sequence[int], value: Any, like: Any, kind: str = "int") -> Any:
    out = zeros(shape, like, kind)
    out[...] = value
    return out


def zeros_like(a: Any) -> Any:
    if is_torch(a):
        return _torch().zeros_like(a)
    return np.zeros_like(a)


def arange(n: int, like: Any) -> Any:
    """int64 0..n−1 in like's backend/device."""
    if is_torch(like):
        return _torch().arange(int(n), dtype=_torch().int64, device=like.device)
    return np.arange(int(n), dtype=np.int64)


def reshape(a: Any, shape: Sequence[int]) -> Any:
    return a.reshape(tuple(int(s) for s in shape))


def where(cond: Any, a: Any, b: Any) -> Any:
    if is_torch(cond) or is_torch(a) or is_torch(b):
        torch = _torch()
        if not is_torch(a) and not is_torch(b):
            a = torch.as_tensor(a, device=cond.device)
        return torch.where(cond, a, b)
    return np.where(cond, a, b)


def _elementwise(name: str, a: Any, b: Any) -> Any:
    """``name`` (minimum | maximum) of numpy or torch; a plain operand takes the other one's dtype/device."""
    if is_torch(a) or is_torch(b):
        torch = _torch()
        if not is_torch(b):
            b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
        if not is_torch(a):
            a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
        return getattr(torch, name)(a, b)
    return getattr(np, name)(a, b)


def minimum(a: Any, b: Any) -> Any:
    return _elementwise("minimum", a, b)


def maximum(a: Any, b: Any) -> Any:
    return _elementwise("maximum", a, b)


def clip(a: Any, lo: Any, hi: Any) -> Any:
    """Elementwise clamp to [lo, hi] (scalars or arrays of the same backend)."""
    if is_torch(a):
        return _torch().clamp(a, lo, hi)
    return np.clip(a, lo, hi)


def floor_divide(a: Any, b: Any) -> Any:
    """Integer division rounding toward −∞ (Python ``//``) for int64 arrays."""
    if is_torch(a) or is_torch(b):
        return _torch().div(a, b, rounding_mode="floor")
    return np.floor_divide(a, b)


def floor(a: Any) -> Any:
    return _torch().floor(a) if is_torch(a) else np.floor(a)


def exp(a: Any) -> Any:
    return _torch().exp(a) if is_torch(a) else np.exp(a)


def log1p(a: Any) -> Any:
    return _torch().log1p(a) if is_torch(a) else np.log1p(a)


def abs(a: Any) -> Any:  # noqa: A001 - mirrors numpy/torch naming
    return _torch().abs(a) if is_torch(a) else np.abs(a)


def max_last(a: Any) -> Any:
    """Maximum over the last axis."""
    if is_torch(a):
        return a.amax(dim=-1)
    return np.max(a, axis=-1)


def any_true(a: Any) -> bool:
    return bool(a.any())


def to_numpy(a: Any) -> np.ndarray:
    if is_torch(a):
        return a.detach().cpu().numpy()
    return np.asarray(a)
