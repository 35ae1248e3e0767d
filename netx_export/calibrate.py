"""Data-based threshold normalization: λ per spiking (``relu``) node (ALGORITHMS §1.5).

``calibrate(graph, data)`` evaluates ``graph`` as an ANN (:mod:`netx_export.ann`, float64) on the
calibration inputs and computes, for every ``relu`` node l, the scale λ^l of its **output** activations
(after the ReLU, as in the MSAT code):

* ``method='max'``: λ = the largest activation.
* ``method='percentile'``: sort the N activations ascending (N = all elements, or only the non-zero ones
  with ``nonzero_only=True``) and take the element at 0-based index ``max(⌊N·p/100⌋ − 1, 0)`` — the MSAT
  code's rule (§1.5 a), so ``percentile=100`` is the max. ``N·p/100`` is computed exactly (``p`` taken as the
  decimal it prints as). The result is **exact**: per layer (or channel) the calibrator keeps only the
  largest ``r = N − index`` values seen so far (a top-r buffer, merged batch by batch with ``torch.topk``),
  which is enough because everything below the r-th largest value is never needed. When the number of
  samples is known in advance (tensor, array, sized DataLoader/list, or ``max_samples``) the buffer size is
  fixed from it; for a stream of unknown length all values are kept up to ``UNSIZED_KEPT`` (2**20) per
  layer, beyond that twice the current need, and a final check proves that the kept values suffice, else
  :class:`CalibrationError` asks for ``max_samples``. A buffer may hold
  at most ``MAX_KEPT`` (2**24) values per layer; lower percentiles on large data raise
  :class:`CalibrationError` instead of exhausting memory.
* ``channelwise=True``: the same per channel (axis 1 of a (C, H, W) map, or each feature of a vector);
  λ is then a float64 array of length C. A channel whose λ comes out 0 (never active) gets the layer's
  largest channel λ and is listed in ``Calibration.dead_channels``.

The input scale λ^0 is ``max |x|`` over the calibration inputs. Inputs are converted to float32 first
(that is what gets hashed and evaluated); ``data_hash`` is the sha256 of those float32 bytes (C order),
all samples in order, so it does not depend on batching. Results are deterministic for the same data.

Errors (:class:`CalibrationError`): empty data, a sample shape that differs from the graph input, a
percentile outside (0, 100], an unknown method, a dead layer (λ = 0; the message names it), all-zero inputs.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch
from tqdm import tqdm

from netx_export import ir
from netx_export.ann import AnnRunner
from netx_export.errors import CalibrationError

__all__ = ["Calibration", "calibrate", "percentile_index", "MAX_KEPT", "METHODS"]

METHODS = ("max", "percentile")
MAX_KEPT = 2 ** 24  # most activation values a percentile buffer may hold per layer
UNSIZED_KEPT = 2 ** 20  # values per layer always kept for a stream of unknown length
# Samples per ANN batch. Small on purpose: torch's float64 CPU convolution (no oneDNN kernel for float64)
# allocates an im2col buffer for the whole batch on every call (1.2 MB per CIFAR sample in a 16-channel 32x32
# layer); past glibc's mmap threshold (32 MiB at most) each call page-faults a fresh mapping and runs ~5x
# slower per sample, and below it a smaller buffer still stays in cache: batches of 4 calibrate ResNet56
# ~30 % faster than 8 and ~4x faster than 256 on 2 cores. Every sample's convolution is its own GEMM and
# linear layers see whole 4-row blocks (_spans), so the values, and λ, do not depend on the batch size.
# Batches are evaluated in parallel (AnnRunner.map), one thread each.
DEFAULT_BATCH = 4


# ---------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------
def _freeze_lambda(name: str, value: Any, channelwise: bool) -> float | np.ndarray:
    if channelwise:
        arr = np.array(value, dtype=np.float64, copy=True).reshape(-1) if np.ndim(value) else None
        if arr is None or arr.size == 0:
            raise CalibrationError(f"layer {name!r}: a channel-wise λ must be a non-empty 1-D array")
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise CalibrationError(f"layer {name!r}: every channel λ must be finite and > 0")
        arr.setflags(write=False)
        return arr
    if np.ndim(value) != 0:
        raise CalibrationError(f"layer {name!r}: a layer-wise λ must be a scalar")
    lam = float(value)
    if not math.isfinite(lam) or lam <= 0:
        raise CalibrationError(f"layer {name!r}: λ must be finite and > 0, got {lam}")
    return lam


@dataclass(frozen=True, eq=False)
class Calibration:
    """λ per spiking node and how it was obtained.

    * ``lambdas``: relu node name → λ (float; float64 array of length C when ``channelwise``), in graph order.
    * ``input_scale``: λ^0 = max |x| over the calibration inputs.
    * ``method`` ('max' | 'percentile'), ``percentile`` (100.0 for 'max'), ``nonzero_only``, ``channelwise``.
    * ``n_samples``: number of calibration samples used; ``data_hash``: sha256 (hex) of their float32 bytes.
    * ``dead_channels``: relu name → indices of channels that were never active (channel-wise only).
    """

    lambdas: Mapping[str, float | np.ndarray]
    input_scale: float
    method: str = "max"
    percentile: float = 100.0
    nonzero_only: bool = False
    channelwise: bool = False
    n_samples: int = 0
    data_hash: str = ""
    dead_channels: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"method must be one of {METHODS}, got {self.method!r}")
        object.__setattr__(self, "percentile", _check_percentile(self.percentile))
        object.__setattr__(self, "nonzero_only", bool(self.nonzero_only))
        object.__setattr__(self, "channelwise", bool(self.channelwise))
        object.__setattr__(self, "n_samples", int(self.n_samples))
        object.__setattr__(self, "data_hash", str(self.data_hash))
        scale = float(self.input_scale)
        if not math.isfinite(scale) or scale <= 0:
            raise CalibrationError(f"input_scale must be finite and > 0, got {self.input_scale!r}")
        object.__setattr__(self, "input_scale", scale)
        lambdas = {str(k): _freeze_lambda(str(k), v, self.channelwise) for k, v in dict(self.lambdas).items()}
        object.__setattr__(self, "lambdas", MappingProxyType(lambdas))
        dead = {str(k): tuple(int(i) for i in v) for k, v in dict(self.dead_channels).items()}
        for k in dead:
            if k not in lambdas:
                raise CalibrationError(f"dead_channels names unknown layer {k!r}")
        object.__setattr__(self, "dead_channels", MappingProxyType(dead))

    def to_dict(self) -> dict[str, Any]:
        """Plain Python / numpy values; :meth:`from_dict` inverts it exactly."""
        return {
            "lambdas": {k: (np.array(v) if isinstance(v, np.ndarray) else float(v)) for k, v in self.lambdas.items()},
            "input_scale": self.input_scale,
            "method": self.method,
            "percentile": self.percentile,
            "nonzero_only": self.nonzero_only,
            "channelwise": self.channelwise,
            "n_samples": self.n_samples,
            "data_hash": self.data_hash,
            "dead_channels": {k: tuple(v) for k, v in self.dead_channels.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        """Inverse of :meth:`to_dict` (lists are accepted for arrays, e.g. from JSON)."""
        data = dict(data)
        allowed = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - allowed
        if unknown:
            raise CalibrationError(f"unknown calibration field(s) {sorted(unknown)}")
        for key in ("lambdas", "input_scale"):
            if key not in data:
                raise CalibrationError(f"calibration is missing field {key!r}")
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calibration):
            return NotImplemented
        a, b = self.to_dict(), other.to_dict()
        if a.pop("lambdas").keys() != other.lambdas.keys():
            return False
        b.pop("lambdas")
        return a == b and all(np.array_equal(np.asarray(v), np.asarray(other.lambdas[k])) and
                              isinstance(v, np.ndarray) == isinstance(other.lambdas[k], np.ndarray)
                              for k, v in self.lambdas.items())

    __hash__ = None  # type: ignore[assignment]


def _check_percentile(percentile: Any) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)):
        raise CalibrationError(f"percentile must be a number in (0, 100], got {percentile!r}")
    p = float(percentile)
    if not (0 < p <= 100):
        raise CalibrationError(f"percentile must be in (0, 100], got {percentile!r}")
    return p


def percentile_index(n: int, percentile: float) -> int:
    """0-based index into the ascending sort of ``n`` values: ``max(⌊n·percentile/100⌋ − 1, 0)`` (exact)."""
    p = Fraction(repr(float(percentile)))
    return max(math.floor(n * p / 100) - 1, 0)


def _rank_from_top(n: int, percentile: float) -> int:
    """1-based rank, counted from the largest, of the percentile element of ``n`` values."""
    return n - percentile_index(n, percentile)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def _as_batch(item: Any, shape: tuple[int, ...], where: str) -> torch.Tensor:
    if isinstance(item, (tuple, list)):
        if not item:
            raise CalibrationError(f"{where}: empty batch tuple")
        item = item[0]
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(np.asarray(item))
    if not isinstance(item, torch.Tensor):
        raise CalibrationError(f"{where}: expected a tensor, an array or an (x, y) tuple, got {type(item).__name__}")
    if item.dim() != len(shape) + 1 or tuple(item.shape[1:]) != shape:
        raise CalibrationError(f"{where}: expected a batch of shape (B, {', '.join(map(str, shape))}), got "
                               f"{tuple(item.shape)}")
    if item.is_complex() or item.dtype == torch.bool:
        raise CalibrationError(f"{where}: expected real-valued inputs, got dtype {item.dtype}")
    return item.detach().to("cpu", torch.float32).contiguous()


def _expected_count(data: Any) -> int | None:
    """Number of samples in ``data`` when it is known without consuming it."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return int(data.shape[0]) if data.ndim else None
    if isinstance(data, torch.utils.data.DataLoader):
        try:
            n = len(data.dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
        return None if data.drop_last else n
    if isinstance(data, (list, tuple)):
        total = 0
        for item in data:
            x = item[0] if isinstance(item, (tuple, list)) and item else item
            if not hasattr(x, "shape") or not len(x.shape):
                return None
            total += int(x.shape[0])
        return total
    return None


def _spans(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` chunks of ``n`` samples: ``size`` each, the last one taking the remainder (up to
    ``2·size − 1``). BLAS computes a short trailing block of rows with other kernels, so a linear layer's rows
    come out as in one call on all ``n`` (for sizes that are multiples of its row blocking, e.g. 4 or 8)."""
    starts = list(range(0, max(n - size, 0) + 1, size))
    yield from zip(starts, starts[1:] + [n])


def _batches(data: Any, shape: tuple[int, ...], batch_size: int, max_samples: int | None
             ) -> Iterator[torch.Tensor]:
    """float32 batches of ``batch_size`` samples (the last of each input batch takes the remainder,
    :func:`_spans`), stopping after ``max_samples``."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        whole = torch.from_numpy(np.asarray(data)) if isinstance(data, np.ndarray) else data
        if whole.dim() != len(shape) + 1 or tuple(whole.shape[1:]) != shape:
            raise CalibrationError(f"calibration data: expected shape (N, {', '.join(map(str, shape))}), "
                                   f"got {tuple(whole.shape)}")
        whole = whole[:max_samples]
        source: Iterable[Any] = (whole[lo:hi] for lo, hi in _spans(whole.shape[0], batch_size))
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        source = data
    else:
        raise CalibrationError(f"calibration data must be a tensor, an array, a DataLoader or an iterable of "
                               f"batches, got {type(data).__name__}")
    seen = 0
    for k, item in enumerate(source):
        batch = _as_batch(item, shape, f"calibration batch {k}")
        if max_samples is not None:
            batch = batch[:max_samples - seen]
        for lo, hi in _spans(batch.shape[0], batch_size):
            if hi > lo:
                seen += hi - lo
                yield batch[lo:hi]
        if max_samples is not None and seen >= max_samples:
            return


# ---------------------------------------------------------------------------------------------
# per-layer statistics
# ---------------------------------------------------------------------------------------------
class _Stat:
    """Streaming max or exact top-r percentile buffer for one relu node (rows = channels or 1)."""

    def __init__(self, name: str, rows: int, per_sample_row: int, method: str, percentile: float,
                 nonzero_only: bool, expected_samples: int | None) -> None:
        self.name, self.rows, self.per_sample_row = name, rows, per_sample_row
        self.method, self.percentile, self.nonzero_only = method, percentile, nonzero_only
        self.expected = None if expected_samples is None else expected_samples * per_sample_row
        self.count = 0  # elements per row seen so far
        self.nonzero = torch.zeros(rows, dtype=torch.int64)  # counted for nonzero_only (the only user)
        self.max = torch.zeros(rows, dtype=torch.float64)
        self.kept = torch.empty((rows, 0), dtype=torch.float64)  # descending per row
        self.discarded = torch.full((rows,), -math.inf, dtype=torch.float64)  # max value dropped

    def capacity(self) -> int:
        """Buffer size: the rank of the percentile element for the expected (else twice the current)
        number of values per row; raises when more than MAX_KEPT values would have to be kept."""
        if self.expected is not None and self.count <= self.expected:
            total = self.expected
            need = _rank_from_top(total, self.percentile)
        else:  # unsized stream: keep everything up to a small budget, then twice the current need
            total = self.count
            need = max(2 * _rank_from_top(total, self.percentile) + 64, UNSIZED_KEPT // self.rows)
        if self.method == "percentile" and min(need, total) * self.rows > MAX_KEPT:
            raise CalibrationError(
                f"layer {self.name!r}: the {self.percentile}th percentile of {total * self.rows} values needs "
                f"{min(need, total) * self.rows} of them kept (limit {MAX_KEPT}); use fewer samples "
                "(max_samples=) or a higher percentile")
        return need

    def update(self, act: torch.Tensor, channelwise: bool) -> None:
        b = act.shape[0]
        if channelwise:
            v = act.reshape(b, self.rows, -1).transpose(0, 1).reshape(self.rows, -1)
        else:
            v = act.reshape(1, -1)
        self.count += v.shape[1]
        if self.nonzero_only:
            self.nonzero += (v != 0).sum(dim=1)
        if v.shape[1]:
            self.max = torch.maximum(self.max, v.amax(dim=1))
        if self.method != "percentile":
            return
        if self.nonzero_only:
            v = torch.where(v > 0, v, torch.full_like(v, -math.inf))
        merged = torch.cat([self.kept, v], dim=1)
        cap = self.capacity()
        if merged.shape[1] > cap:
            top = torch.topk(merged, cap + 1, dim=1, largest=True, sorted=True).values
            self.discarded = torch.maximum(self.discarded, top[:, cap])
            self.kept = top[:, :cap].contiguous()
        else:
            self.kept = torch.sort(merged, dim=1, descending=True).values

    def result(self) -> np.ndarray:
        """λ per row (0 where a row never had a non-zero value)."""
        if self.method == "max":
            return self.max.numpy().copy()
        out = np.zeros(self.rows)
        for r in range(self.rows):
            n = int(self.nonzero[r]) if self.nonzero_only else self.count
            if n == 0:
                continue
            rank = _rank_from_top(n, self.percentile)
            if rank > self.kept.shape[1] or self.kept[r, rank - 1] < self.discarded[r]:
                raise CalibrationError(
                    f"layer {self.name!r}: the percentile could not be determined exactly in one pass over an "
                    "unsized stream; pass max_samples= or a sized dataset / DataLoader")
            out[r] = max(float(self.kept[r, rank - 1]), 0.0)
        return out


# ---------------------------------------------------------------------------------------------
# calibrate
# ---------------------------------------------------------------------------------------------
def calibrate(graph: ir.Graph, data: Any, *, method: str = "max", percentile: float = 99.99,
              nonzero_only: bool = False, channelwise: bool = False, max_samples: int | None = None,
              batch_size: int = DEFAULT_BATCH, progress: bool = True) -> Calibration:
    """λ per ``relu`` node of ``graph`` from calibration ``data`` (see the module docstring).

    ``data``: a tensor or array ``(N, *graph.input.shape)``, a DataLoader, or an iterable of batches
    (tensors/arrays, or tuples/lists whose first entry is the input batch, e.g. ``(x, y)``).
    ``max_samples`` uses only the first samples; ``batch_size``: samples per ANN batch, the last batch of
    each input batch taking the remainder (below ``2·batch_size``; the results do not depend on it for
    multiples of 4; batches are evaluated on ``torch.get_num_threads()`` threads, :meth:`AnnRunner.map`);
    ``progress`` shows a tqdm bar on stderr. ``percentile`` is used by ``method='percentile'`` only (it must
    be in (0, 100] either way). Returns a :class:`Calibration`.
    """
    if not isinstance(graph, ir.Graph):
        raise TypeError(f"graph must be a netx_export.ir.Graph, got {type(graph).__name__}")
    if method not in METHODS:
        raise CalibrationError(f"method must be one of {METHODS}, got {method!r}")
    percentile = _check_percentile(percentile)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CalibrationError(f"batch_size must be a positive int, got {batch_size!r}")
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                    or max_samples < 1):
        raise CalibrationError(f"max_samples must be a positive int or None, got {max_samples!r}")

    shape = graph.input.shape
    relus = [n.name for n in graph.nodes if isinstance(n, ir.Relu)]
    expected = _expected_count(data)
    if max_samples is not None:
        expected = max_samples if expected is None else min(expected, max_samples)
    if expected == 0:
        raise CalibrationError("calibration data is empty")
    stats: dict[str, _Stat] = {}
    for name in relus:
        s = graph.shape(name)
        rows = s[0] if channelwise else 1
        stats[name] = _Stat(name, rows, math.prod(s) // rows, method, percentile, nonzero_only, expected)
        stats[name].capacity()  # fail early when the data is known to be too large for the buffer

    digest = hashlib.sha256()
    n_samples = 0
    input_scale = 0.0

    def checked() -> Iterator[torch.Tensor]:  # the input batches, checked and hashed in order
        nonlocal n_samples, input_scale
        for x in _batches(data, shape, batch_size, max_samples):
            if not torch.isfinite(x).all():
                raise CalibrationError(f"calibration inputs contain NaN or infinity (batch starting at sample "
                                       f"{n_samples})")
            digest.update(x.numpy().tobytes())
            input_scale = max(input_scale, float(x.abs().max()))
            n_samples += x.shape[0]
            yield x

    runner = AnnRunner(graph, dtype=torch.float64)
    with tqdm(total=expected, desc="calibrate", unit="sample", disable=not progress) as bar:
        for out, acts in runner.map(checked(), record=relus):  # batches in order, evaluated in parallel
            for name in relus:
                stats[name].update(acts[name], channelwise)
            bar.update(out.shape[0])
    if n_samples == 0:
        raise CalibrationError("calibration data is empty")
    if input_scale <= 0:
        raise CalibrationError(f"all {n_samples} calibration inputs are zero: the input scale max|x| is 0")

    lambdas: dict[str, float | np.ndarray] = {}
    dead_channels: dict[str, tuple[int, ...]] = {}
    for name in relus:
        lam = stats[name].result()
        if not np.any(lam > 0):
            if float(stats[name].max.max()) <= 0:  # ReLU outputs are >= 0: max 0 means all zero
                why = f"its ReLU output is 0 for all {n_samples} calibration samples"
            else:
                why = (f"the {percentile}th percentile of its activations is 0 (too many zeros); use "
                       "nonzero_only=True or method='max'")
            raise CalibrationError(f"layer {name!r} is dead: {why} (λ = 0)")
        if channelwise:
            dead = np.flatnonzero(lam <= 0)
            if dead.size:
                lam = np.where(lam > 0, lam, lam.max())
                dead_channels[name] = tuple(int(i) for i in dead)
            lambdas[name] = lam
        else:
            lambdas[name] = float(lam[0])
    return Calibration(lambdas=lambdas, input_scale=input_scale, method=method,
                       percentile=percentile if method == "percentile" else 100.0, nonzero_only=nonzero_only,
                       channelwise=channelwise, n_samples=n_samples, data_hash=digest.hexdigest(),
                       dead_channels=dead_channels)
