"""Input data for ``msat-lava run`` / ``verify``: ``.npz`` files → normalized float images + labels.

Accepted layouts (loaded with ``np.load(allow_pickle=False)``: nothing is ever unpickled):

* ``x`` [+ ``y``]: one array of inputs and, optionally, integer labels;
* ``x_train, y_train, x_test, y_test`` (the layout of ``shared/data/{mnist,cifar10}.npz``): the ``split``
  (default ``test``) is used; ``y_<split>`` is optional.

When a file has both, ``x``/``y`` wins. Inputs are converted to float32 ``(N, C, H, W)`` (or ``(N, F)``):

* ``(N, H, W)`` gets a channel axis; ``(N, H, W, C)`` (channels last, C ∈ {1, 3, 4}, H, W > 4) is transposed
  to ``(N, C, H, W)``; ``(N, C, H, W)`` and ``(N, F)`` are kept (the rule ``msat-lava convert`` uses).
  With ``input_shape`` (the network's per-sample input shape) the layout is decided by that shape instead:
  ``(H, W, C)`` data for a ``(C, H, W)`` network is transposed, ``(H, W)`` gets a channel axis, and an image
  for a vector input ``(F,)`` with ``F = H·W·C`` is flattened in (C, H, W) order; anything else is a
  :class:`DataError`.
* values are divided by ``input_scale`` (default 255 for uint8 data, else 1), then normalized per channel
  with ``(x − mean) / std`` (``mean``/``std``: one value or one per channel).

``samples`` selects a deterministic **strided** subset: indices ``floor(i · N / samples)``, i = 0..samples−1,
evenly spread over the whole split. The CIFAR-10 test split is class-sorted, so a prefix would be one class;
the strided subset takes the same number of images from every equally sized class block. The dataset indices
of the selected samples are returned (they key the spike-confidence gate, DESIGN §5).

Every problem raises :class:`DataError`, which names the file and the key.
"""
from __future__ import annotations

import os
import zipfile
from typing import NamedTuple, Sequence

import numpy as np

from netx_export.errors import located

__all__ = ["DataError", "LoadedData", "load_npz", "strided_indices", "to_nchw", "normalize", "parse_floats",
           "SPLITS"]

SPLITS = ("test", "train")


class DataError(ValueError):
    """An input data file or data option is unusable; ``path`` and ``key`` name what (either may be None)."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, key: str | None = None):
        super().__init__(located(message, file=path, key=key))
        self.path = None if path is None else str(path)
        self.key = key


class LoadedData(NamedTuple):
    """``x`` float32 (n, *shape); ``y`` int64 (n,) or None; ``indices`` int64 (n,) dataset indices."""

    x: np.ndarray
    y: np.ndarray | None
    indices: np.ndarray


def strided_indices(total: int, samples: int | None) -> np.ndarray:
    """Evenly spread indices ``floor(i · total / samples)`` for i < samples (all when None or ≥ total)."""
    if total < 0:
        raise DataError(f"total must be >= 0, got {total}")
    if samples is None or samples >= total:
        return np.arange(total, dtype=np.int64)
    if isinstance(samples, bool) or int(samples) != samples or samples < 1:
        raise DataError(f"samples must be a positive integer, got {samples!r}")
    return (np.arange(int(samples), dtype=np.int64) * total) // int(samples)


def parse_floats(text: str | Sequence[float] | None, what: str = "value") -> list[float] | None:
    """``"0.485,0.456,0.406"`` → [0.485, 0.456, 0.406]; a sequence is converted; None stays None."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        out = [float(v) for v in items if not (isinstance(v, str) and not v.strip())]
    except (TypeError, ValueError):
        raise DataError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not out or not all(np.isfinite(out)):
        raise DataError(f"{what} must be one or more finite numbers, got {text!r}")
    return out


def to_nchw(x: np.ndarray, input_shape: Sequence[int] | None = None, *, path: str | None = None,
            key: str | None = None) -> np.ndarray:
    """Rearrange raw samples ``x`` (N, ...) to the network layout (module docstring); no value change."""
    if x.ndim < 2:
        raise DataError(f"expected an array (N, ...), got shape {x.shape}", path=path, key=key)
    sample = tuple(x.shape[1:])
    if input_shape is not None:
        want = tuple(int(s) for s in input_shape)
        if sample == want:
            return x
        if len(want) == 3 and len(sample) == 3 and sample == (want[1], want[2], want[0]):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if len(want) == 3 and want[0] == 1 and sample == want[1:]:
            return x[:, None]
        if len(want) == 1 and len(sample) in (2, 3) and int(np.prod(sample)) == want[0]:
            if len(sample) == 3 and sample[-1] in (1, 3, 4) and sample[0] not in (1, 3, 4):
                x = x.transpose(0, 3, 1, 2)
            return np.ascontiguousarray(x.reshape(x.shape[0], -1))
        raise DataError(f"samples of shape {sample} do not fit the network input {want} (accepted: the same "
                        "shape, channels-last (H, W, C), (H, W) for one channel, or flattened for a vector input)",
                        path=path, key=key)
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4) and min(x.shape[1:3]) > 4:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def normalize(x: np.ndarray, *, input_scale: float | None = None, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, raw_dtype: np.dtype | None = None) -> np.ndarray:
    """float32 ``(x / input_scale − mean) / std`` with per-channel mean/std on axis 1 (module docstring)."""
    dtype = np.dtype(raw_dtype if raw_dtype is not None else x.dtype)
    scale = (255.0 if dtype == np.uint8 else 1.0) if input_scale is None else float(input_scale)
    if not np.isfinite(scale) or scale <= 0:
        raise DataError(f"input scale must be finite and > 0, got {input_scale!r}")
    out = x.astype(np.float32) / np.float32(scale)
    if mean is None and std is None:
        return out
    if out.ndim < 2:
        raise DataError("mean/std normalization needs per-sample arrays (N, C, ...)")
    c = out.shape[1] if out.ndim > 2 else 1
    m = np.asarray([0.0] if mean is None else list(mean), dtype=np.float32)
    s = np.asarray([1.0] if std is None else list(std), dtype=np.float32)
    for name, arr in (("mean", m), ("std", s)):
        if arr.ndim != 1 or arr.size not in (1, c):
            raise DataError(f"normalization {name} has {arr.size} value(s) for {c} channel(s)")
    if np.any(s <= 0):
        raise DataError(f"normalization std values must be > 0, got {s.tolist()}")
    bshape = (1, -1) + (1,) * (out.ndim - 2) if out.ndim > 2 else (1, 1)
    return ((out - m.reshape(bshape)) / s.reshape(bshape)).astype(np.float32)


def _pick_keys(files: Sequence[str], split: str, path: str) -> tuple[str, str | None]:
    if "x" in files:
        return "x", ("y" if "y" in files else None)
    xk, yk = f"x_{split}", f"y_{split}"
    if xk in files:
        return xk, (yk if yk in files else None)
    raise DataError(f"no input array: expected key 'x' or {xk!r} (keys: {sorted(files)})", path=path,
                    key=xk)


def load_npz(path: str | os.PathLike, *, split: str = "test", samples: int | None = None,
             input_scale: float | None = None, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None, input_shape: Sequence[int] | None = None) -> LoadedData:
    """Load, select and normalize the inputs (and labels) of an ``.npz`` file (module docstring).

    ``split``: which ``x_<split>``/``y_<split>`` pair to use when the file has no ``x``; ``samples``: size of
    the strided subset (None: all); ``input_shape``: the network's per-sample input shape (layout hint and
    check). Returns :class:`LoadedData` ``(x, y, indices)``; raises :class:`DataError`.
    """
    spath = str(path)
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}", path=spath)
    if samples is not None and (isinstance(samples, bool) or int(samples) != samples or samples < 1):
        raise DataError(f"samples must be a positive integer, got {samples!r}", path=spath)
    if not os.path.isfile(spath):
        raise DataError("no such file", path=spath)
    try:
        archive = np.load(spath, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"not a readable .npz file ({type(exc).__name__}: {exc})", path=spath) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError("not an .npz archive (a single .npy array?); save inputs with np.savez(path, x=..., "
                        "y=...)", path=spath)
    with archive:
        xk, yk = _pick_keys(archive.files, split, spath)
        x = _read(archive, xk, spath)
        y = _read(archive, yk, spath) if yk is not None else None

    if x.dtype.kind not in "uif":
        raise DataError(f"inputs must be numeric, got dtype {x.dtype}", path=spath, key=xk)
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"inputs must be a non-empty array (N, ...), got shape {x.shape}", path=spath, key=xk)
    n = x.shape[0]
    if y is not None:
        if y.dtype.kind not in "ui" and not (y.dtype.kind == "f" and np.all(np.isfinite(y))
                                              and np.all(y == np.round(y))):
            raise DataError(f"labels must be integers, got dtype {y.dtype}", path=spath, key=yk)
        y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
        if y.shape != (n,):
            raise DataError(f"labels have shape {y.shape}, expected ({n},) to match {xk!r}", path=spath, key=yk)
        if np.any(y < 0):
            raise DataError("labels must be >= 0", path=spath, key=yk)

    idx = strided_indices(n, samples)
    raw = x[idx]
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise DataError("inputs contain NaN or infinity", path=spath, key=xk)
    arranged = to_nchw(raw, input_shape, path=spath, key=xk)
    try:
        xs = normalize(arranged, input_scale=input_scale, mean=mean, std=std, raw_dtype=x.dtype)
    except DataError as exc:
        raise DataError(str(exc), path=spath, key=xk) from None
    ys = None if y is None else y[idx].astype(np.int64)
    return LoadedData(np.ascontiguousarray(xs), ys, idx)


def _read(archive, key: str, path: str) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except ValueError as exc:  # object arrays need pickle: refused
        raise DataError(f"cannot read without unpickling ({exc}); store plain numeric arrays", path=path,
                        key=key) from None
    except Exception as exc:  # truncated / corrupt member
        raise DataError(f"unreadable array ({type(exc).__name__}: {exc})", path=path, key=key) from None
