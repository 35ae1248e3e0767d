"""Input data of every ``msat-lava`` command: ``.npz`` files → normalized float images (+ labels).

The one reader of ``.npz`` inputs: :func:`load_npz` for evaluation data (``run``, ``verify``, ``eval --data``,
``deploy --data``; inputs and labels of a split, strided subset) and :func:`load_calibration` for calibration
images (``convert --data``, and the rule of ``eval --calib-data``: ``x_train``, else ``x``; labels ignored; a seeded
random subset). Both accept the same layouts and normalization options and raise the same messages.

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

Reading is bounded and never unpickles: each member's ``.npy`` header is read first and checked (plain numeric or
bool dtype — object arrays are refused —, its declared shape must match the member's stored size, and a compressed
member may not expand more than :data:`MAX_EXPANSION` times); then only the selected samples are read, streamed row
by row from the member, so memory grows with ``samples``, not with the file. The normalized inputs must be finite
(an ``input_scale`` or ``std`` so small that the float32 division overflows is refused, naming the option).

Every problem raises :class:`DataError`, which names the file and the key.
"""
from __future__ import annotations

import math
import os
import zipfile
from typing import Any, NamedTuple, Sequence

import numpy as np

from netx_export.errors import located

__all__ = ["DataError", "LoadedData", "load_npz", "load_calibration", "calibration_key", "random_indices",
           "read_normalized", "strided_indices", "to_nchw", "normalize", "parse_floats",
           "SPLITS", "NpzMember", "npz_members", "member_header", "read_member", "check_labels", "MAX_EXPANSION", "MAX_MEMBER_BYTES"]

SPLITS = ("test", "train")
#: A compressed member may expand at most this many times (deflate cannot exceed ~1032×: more is a zip bomb).
MAX_EXPANSION = 1100
#: Largest member (declared bytes) read whole; larger ones only through a row selection.
MAX_MEMBER_BYTES = 16 << 30


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
        raise DataError(f"input scale (--input-scale) must be finite and > 0, got {input_scale!r}")
    if not np.isfinite(np.float32(scale)) or np.float32(scale) <= 0 or not np.isfinite(np.float32(1.0) / np.float32(scale)):
        raise DataError(f"input scale (--input-scale) {input_scale!r} is not representable in float32 (inputs "
                        "would become infinite or NaN)")
    with np.errstate(all="ignore"):
        raw = x.astype(np.float32)
        if not np.all(np.isfinite(raw)):
            raise DataError("inputs exceed the float32 range (|x| > 3.4e38) or are not finite")
        out = raw / np.float32(scale)
    if not np.all(np.isfinite(out)):
        raise DataError(f"input scale (--input-scale) {input_scale!r} makes the inputs overflow float32 (not "
                        "finite)")
    if mean is None and std is None:
        return out
    if out.ndim < 2:
        raise DataError("mean/std normalization (--norm-mean/--norm-std) needs per-sample arrays (N, C, ...)")
    c = out.shape[1] if out.ndim > 2 else 1
    m = np.asarray([0.0] if mean is None else list(mean), dtype=np.float32)
    s = np.asarray([1.0] if std is None else list(std), dtype=np.float32)
    for name, arr in (("mean (--norm-mean)", m), ("std (--norm-std)", s)):
        if arr.ndim != 1 or arr.size not in (1, c):
            raise DataError(f"normalization {name} has {arr.size} value(s) for {c} channel(s)")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise DataError(f"normalization std (--norm-std) values must be finite and > 0 in float32, got "
                        f"{s.tolist()}")
    if not np.all(np.isfinite(m)):
        raise DataError(f"normalization mean (--norm-mean) values must be finite in float32, got {m.tolist()}")
    bshape = (1, -1) + (1,) * (out.ndim - 2) if out.ndim > 2 else (1, 1)
    with np.errstate(all="ignore"):
        res = ((out - m.reshape(bshape)) / s.reshape(bshape)).astype(np.float32)
    if not np.all(np.isfinite(res)):
        raise DataError(f"normalization (--norm-std {s.tolist()}) makes the inputs overflow float32 (not "
                        "finite)")
    return res


class NpzMember(NamedTuple):
    """A member's ``.npy`` header: shape, dtype, Fortran order, data offset and the zip entry."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int
    info: zipfile.ZipInfo


def npz_members(path: str | os.PathLike) -> dict[str, zipfile.ZipInfo]:
    """The ``<key>.npy`` entries of an ``.npz`` by key (only the zip directory is read); DataError for a file
    that is not an ``.npz``. :func:`member_header` reads and checks one member's header."""
    spath = str(path)
    if not os.path.isfile(spath):
        raise DataError("no such file", path=spath)
    if not zipfile.is_zipfile(spath):
        raise DataError("not an .npz archive (a single .npy array, or not numpy at all?); save inputs with "
                        "np.savez(path, x=..., y=...)", path=spath)
    out: dict[str, zipfile.ZipInfo] = {}
    try:
        with zipfile.ZipFile(spath) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                out[key] = info
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise DataError(f"not a readable .npz file ({type(exc).__name__}: {exc})", path=spath) from None
    return out


def member_header(path: str | os.PathLike, info: zipfile.ZipInfo) -> NpzMember:
    """A member's ``.npy`` header, checked: a plain numeric/bool dtype (object arrays would need unpickling), a
    declared shape that matches the member's size, no zip-bomb expansion. Only the header is read."""
    path = str(path)
    key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    try:
        with zipfile.ZipFile(path) as zf:
            return _member_header(zf, info, key, path)
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise DataError(f"unreadable member ({type(exc).__name__}: {exc})", path=path, key=key) from None


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, path: str) -> NpzMember:
    if not info.filename.endswith(".npy"):
        raise DataError(f"member {info.filename!r} is not an .npy array", path=path, key=key)
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_EXPANSION * max(info.compress_size, 1) \
            + (1 << 20):
        raise DataError(f"member expands {info.file_size} bytes from {info.compress_size} (a zip bomb?): refused",
                        path=path, key=key)
    try:
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = fh.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError, SyntaxError) as exc:
        raise DataError(f"unreadable .npy header ({type(exc).__name__}: {exc})", path=path, key=key) from None
    if dtype.hasobject or dtype.kind not in "uifb" or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"dtype {dtype} refused: only plain numeric arrays are read (object arrays would need "
                        "unpickling)", path=path, key=key)
    count = math.prod(int(n) for n in shape)
    if offset + count * dtype.itemsize != info.file_size:
        raise DataError(f"the header declares shape {tuple(shape)} {dtype} ({count * dtype.itemsize} bytes) but the "
                        f"member holds {info.file_size - offset}", path=path, key=key)
    return NpzMember(key, tuple(int(n) for n in shape), dtype, bool(fortran), offset, info)


def read_member(path: str | os.PathLike, member: NpzMember, rows: np.ndarray | None = None) -> np.ndarray:
    """The member's array, or only ``rows`` (ascending indices along axis 0), streamed from the zip entry."""
    spath = str(path)
    shape, dtype = member.shape, member.dtype
    try:
        with zipfile.ZipFile(spath) as zf, zf.open(member.info) as fh:
            if rows is None or member.fortran or len(shape) == 0:
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes > MAX_MEMBER_BYTES:
                    raise DataError(f"{nbytes} bytes: too large to read whole", path=spath, key=member.key)
                fh.seek(member.offset)
                buf = fh.read(nbytes)
                if len(buf) != nbytes:
                    raise DataError("truncated member", path=spath, key=member.key)
                arr = np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if member.fortran else "C")
                return arr if rows is None else arr[rows]
            row = math.prod(shape[1:]) * dtype.itemsize
            out = np.empty((len(rows),) + shape[1:], dtype=dtype)
            flat = out.reshape(len(rows), -1).view(np.uint8) if row else None
            last = -1
            for k, i in enumerate(np.asarray(rows, dtype=np.int64)):
                if not last < i < shape[0]:
                    raise DataError(f"row {i} out of order or range", path=spath, key=member.key)
                last = int(i)
                if row:
                    fh.seek(member.offset + int(i) * row)
                    buf = fh.read(row)
                    if len(buf) != row:
                        raise DataError("truncated member", path=spath, key=member.key)
                    flat[k] = np.frombuffer(buf, dtype=np.uint8)
            return out
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise DataError(f"unreadable array ({type(exc).__name__}: {exc})", path=spath, key=member.key) from None


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
             std: Sequence[float] | None = None, input_shape: Sequence[int] | None = None,
             num_classes: int | None = None) -> LoadedData:
    """Load, select and normalize the inputs (and labels) of an ``.npz`` file (module docstring).

    ``split``: which ``x_<split>``/``y_<split>`` pair to use when the file has no ``x``; ``samples``: size of
    the strided subset (None: all); ``input_shape``: the network's per-sample input shape (layout hint and
    check); ``num_classes``: labels must be below it. Returns :class:`LoadedData` ``(x, y, indices)``; raises :class:`DataError`.
    """
    spath = str(path)
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}", path=spath)
    if samples is not None and (isinstance(samples, bool) or int(samples) != samples or samples < 1):
        raise DataError(f"samples must be a positive integer, got {samples!r}", path=spath)
    members = npz_members(spath)
    xk, yk = _pick_keys(list(members), split, spath)
    xm = member_header(spath, members[xk])
    if xm.dtype.kind not in "uif":
        raise DataError(f"inputs must be numeric, got dtype {xm.dtype}", path=spath, key=xk)
    if len(xm.shape) < 2 or xm.shape[0] == 0:
        raise DataError(f"inputs must be a non-empty array (N, ...), got shape {xm.shape}", path=spath, key=xk)
    n = xm.shape[0]
    if input_shape is not None and math.prod(xm.shape[1:]) != math.prod(int(v) for v in input_shape):
        to_nchw(np.empty((0,) + xm.shape[1:], dtype=xm.dtype), input_shape, path=spath, key=xk)  # the message
    idx = strided_indices(n, samples)
    y = None
    if yk is not None:
        ym = member_header(spath, members[yk])
        yshape = ym.shape[:1] if len(ym.shape) == 2 and 1 in ym.shape else ym.shape
        if len(ym.shape) == 2 and 1 in ym.shape and ym.shape[0] == 1:
            yshape = ym.shape[1:]
        if tuple(yshape) != (n,):
            raise DataError(f"labels have shape {ym.shape}, expected ({n},) to match {xk!r}", path=spath, key=yk)
        y = check_labels(read_member(spath, ym).reshape(-1), path=spath, key=yk, num_classes=num_classes)

    xs = read_normalized(spath, xm, xk, idx, input_shape=input_shape, input_scale=input_scale, mean=mean, std=std)
    ys = None if y is None else y[idx]
    return LoadedData(xs, ys, idx)


def calibration_key(keys: Sequence[str], *, explicit: bool = True) -> str | None:
    """The key of the calibration images among an ``.npz``'s ``keys``: ``x_train``; for a file given as
    calibration data (``explicit``: ``convert --data``, ``eval --calib-data``) also ``x`` when there is no
    ``x_train``. In an evaluation file (not ``explicit``) an ``x`` key means evaluation data, never calibration
    (so ``x_train`` counts only without ``x``). None when there is none."""
    keys = set(keys)
    if "x_train" in keys and (explicit or "x" not in keys):
        return "x_train"
    if explicit and "x" in keys:
        return "x"
    return None


def random_indices(total: int, samples: int | None, seed: int) -> np.ndarray:
    """The seeded random calibration subset: ``sort(default_rng(seed).choice(total, min(samples, total),
    replace=False))`` (all indices, in order, when ``samples`` is None or ≥ ``total``)."""
    if samples is not None and (isinstance(samples, bool) or int(samples) != samples or samples < 1):
        raise DataError(f"samples must be a positive integer, got {samples!r}")
    if samples is None or samples >= total:
        return np.arange(total, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(total, int(samples), replace=False)).astype(np.int64)


def load_calibration(path: str | os.PathLike, *, samples: int | None = None, seed: int = 0,
                     input_scale: float | None = None, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None, input_shape: Sequence[int] | None = None,
                     explicit: bool = True) -> LoadedData:
    """Calibration images of an ``.npz`` (:func:`calibration_key`: ``x_train``, else ``x`` for an ``explicit``
    calibration file; labels are not read), a seeded random subset of ``samples`` (:func:`random_indices`),
    arranged and normalized as :func:`load_npz` does (module docstring). ``LoadedData(x, None, indices)``;
    every problem a :class:`DataError` naming the file and the key."""
    spath = str(path)
    members = npz_members(spath)
    key = calibration_key(list(members), explicit=explicit)
    if key is None:
        want = "'x_train' or 'x'" if explicit else "'x_train' (an 'x' key is evaluation data)"
        raise DataError(f"no calibration images: expected key {want} (keys: {sorted(members)})", path=spath,
                        key="x_train")
    member = member_header(spath, members[key])  # header only: bounded, never unpickles
    if member.dtype.kind not in "uif":
        raise DataError(f"inputs must be numeric, got dtype {member.dtype}", path=spath, key=key)
    if len(member.shape) < 2 or member.shape[0] == 0:
        raise DataError(f"inputs must be a non-empty array (N, ...), got shape {member.shape}", path=spath, key=key)
    try:
        idx = random_indices(member.shape[0], samples, seed)
    except DataError as exc:
        raise DataError(str(exc), path=spath) from None
    x = read_normalized(spath, member, key, idx, input_shape=input_shape, input_scale=input_scale, mean=mean,
                        std=std)
    return LoadedData(x, None, idx)


def read_normalized(path: str, member: Any, key: str, idx: np.ndarray, *, input_shape: Sequence[int] | None,
                    input_scale: float | None, mean: Sequence[float] | None, std: Sequence[float] | None
                    ) -> np.ndarray:
    """Rows ``idx`` of the array ``member`` (its checked header, :func:`member_header`) of ``path``: finite,
    arranged to the network layout (:func:`to_nchw`) and normalized (:func:`normalize`), contiguous float32;
    every problem a DataError naming the file and ``key``. Shared by :func:`load_npz` and the calibration
    reader of :mod:`msat_lava.evaluate`."""
    raw = read_member(path, member, idx)
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise DataError("inputs contain NaN or infinity", path=path, key=key)
    arranged = to_nchw(raw, input_shape, path=path, key=key)
    try:
        x = normalize(arranged, input_scale=input_scale, mean=mean, std=std, raw_dtype=member.dtype)
    except DataError as exc:
        raise DataError(str(exc), path=path, key=key) from None
    return np.ascontiguousarray(x)


def check_labels(y: np.ndarray, *, path: str | None = None, key: str | None = None,
                 num_classes: int | None = None) -> np.ndarray:
    """Integer labels as int64, refused (DataError) when not integers, negative, beyond int64 (uint64 values
    ≥ 2^63 would wrap negative) or, with ``num_classes``, not below it."""
    if y.dtype.kind == "b" or (y.dtype.kind not in "ui" and not (
            y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)))):
        raise DataError(f"labels must be integers, got dtype {y.dtype}" + (
            "" if y.dtype.kind != "f" else " with non-integer or non-finite values"), path=path, key=key)
    if y.size and y.dtype.kind == "f" and (y.min() < 0 or y.max() >= 2.0 ** 62):
        raise DataError(f"labels must be in [0, 2^62), got {float(y.min())}..{float(y.max())}", path=path, key=key)
    if y.size and y.dtype.kind == "u" and int(y.max()) > np.iinfo(np.int64).max:
        raise DataError(f"label {int(y.max())} does not fit int64 (it would wrap negative)", path=path, key=key)
    if y.size and y.dtype.kind == "i" and int(y.min()) < 0:
        raise DataError(f"labels must be >= 0, got {int(y.min())}", path=path, key=key)
    out = y.astype(np.int64)
    if num_classes is not None and out.size and int(out.max()) >= num_classes:
        bad = int(np.count_nonzero(out >= num_classes))
        raise DataError(f"{bad} label(s) are >= {num_classes}, the network's number of classes (largest "
                        f"{int(out.max())})", path=path, key=key)
    return out
